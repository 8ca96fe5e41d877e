//! The sink's DNS: every name resolves, to an address of its own from 198.18.0.0/15 (the
//! benchmarking range, never routed), so a later connection to that address is known to be
//! for that name. AAAA and every other type get an empty NOERROR answer, so clients fall
//! back to IPv4, which the sink captures.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Mutex;

use simple_dns::rdata::{RData, A};
use simple_dns::{Packet, ResourceRecord, CLASS, QTYPE, TYPE};

use super::record::{bounded, Observation, Protocol};

/// First address handed out: 198.18.0.1.
const BASE: u32 = 0xC612_0001;
/// Addresses in 198.18.0.0/15 after the first.
const SPAN: u32 = (1 << 17) - 2;
/// Answers' TTL: short, a run is short.
const TTL: u32 = 5;

/// Names handed out and their addresses, both ways.
#[derive(Debug, Default)]
pub struct Names {
    inner: Mutex<(HashMap<String, Ipv4Addr>, HashMap<Ipv4Addr, String>)>,
}

impl Names {
    /// The address for `name`, handing out a new one the first time. Past the range, every
    /// new name shares the last address (the report still has each name's query).
    pub fn address_of(&self, name: &str) -> Ipv4Addr {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = inner.0.get(name) {
            return *a;
        }
        let n = u32::try_from(inner.0.len()).unwrap_or(u32::MAX).min(SPAN);
        let addr = Ipv4Addr::from(BASE + n);
        if n < SPAN {
            inner.0.insert(name.to_string(), addr);
            inner.1.insert(addr, name.to_string());
        }
        addr
    }

    /// The name an address was handed out for.
    pub fn name_of(&self, addr: Ipv4Addr) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.1.get(&addr).cloned()
    }
}

/// One query's outcome: what to record and what to send back (if it parsed).
pub struct Answered {
    /// One observation per question (a query with none gets one with no host).
    pub observed: Vec<Observation>,
    /// The reply datagram.
    pub reply: Option<Vec<u8>>,
}

/// Answers a DNS query datagram. `None` when it is not DNS: the caller records it as UDP.
pub fn answer(query: &[u8], names: &Names) -> Option<Answered> {
    let packet = Packet::parse(query).ok()?;
    if packet.has_flags(simple_dns::PacketFlag::RESPONSE) {
        return None;
    }
    let mut observed = Vec::new();
    let mut reply = Packet::new_reply(packet.id());
    for q in &packet.questions {
        let name = q
            .qname
            .to_string()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        observed.push(Observation {
            host: Some(bounded(&name)),
            qtype: Some(qtype_name(q.qtype)),
            ..Observation::new(Protocol::Dns)
        });
        reply.questions.push(q.clone());
        if q.qtype == QTYPE::TYPE(TYPE::A) || q.qtype == QTYPE::ANY {
            let address = names.address_of(&name);
            reply.answers.push(ResourceRecord::new(
                q.qname.clone(),
                CLASS::IN,
                TTL,
                RData::A(A {
                    address: u32::from(address),
                }),
            ));
        }
    }
    if observed.is_empty() {
        observed.push(Observation::new(Protocol::Dns));
    }
    Some(Answered {
        observed,
        reply: reply.build_bytes_vec().ok(),
    })
}

fn qtype_name(q: QTYPE) -> String {
    match q {
        QTYPE::TYPE(t) => format!("{t:?}"),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::{Name, Question, QCLASS};

    fn query(name: &str, t: TYPE) -> Vec<u8> {
        let mut p = Packet::new_query(7);
        p.questions.push(Question::new(
            Name::new_unchecked(name),
            QTYPE::TYPE(t),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn every_name_gets_its_own_address_and_is_recorded() {
        let names = Names::default();
        let a = answer(&query("Evil.Example", TYPE::A), &names).unwrap();
        assert_eq!(a.observed[0].host.as_deref(), Some("evil.example"));
        assert_eq!(a.observed[0].qtype.as_deref(), Some("A"));
        let reply = Packet::parse(a.reply.as_ref().unwrap()).unwrap();
        assert_eq!(reply.id(), 7);
        let RData::A(rec) = &reply.answers[0].rdata else {
            panic!()
        };
        let addr = Ipv4Addr::from(rec.address);
        assert_eq!(addr, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(names.name_of(addr).as_deref(), Some("evil.example"));
        assert_eq!(
            names.address_of("other.example"),
            Ipv4Addr::new(198, 18, 0, 2)
        );
        assert_eq!(names.address_of("evil.example"), addr);
    }

    #[test]
    fn aaaa_is_answered_empty_and_garbage_is_not_dns() {
        let names = Names::default();
        let a = answer(&query("x.example", TYPE::AAAA), &names).unwrap();
        assert_eq!(a.observed[0].qtype.as_deref(), Some("AAAA"));
        assert!(Packet::parse(a.reply.as_ref().unwrap())
            .unwrap()
            .answers
            .is_empty());
        assert!(answer(b"\xff\xff garbage", &names).is_none());
        assert!(answer(&[], &names).is_none());
    }
}
