//! What the sink records: one [`Observation`] per destination, aggregated and bounded.
//!
//! Every attempt becomes a key (protocol, host, address, port, method, path, qtype); the
//! first attempt of a key keeps its excerpt and the SHA-256 of its first bytes, later ones
//! only count. At most [`MAX_ENTRIES`] keys are kept; attempts past that are counted in
//! `dropped`, so a flood of distinct destinations costs bounded memory and a bounded report.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Distinct destinations kept per run.
pub const MAX_ENTRIES: usize = 1024;
/// Bytes of a first payload shown in an excerpt.
pub const EXCERPT_BYTES: usize = 128;
/// Characters kept of a host name or an HTTP path.
const MAX_TEXT: usize = 512;

/// The protocol an attempt was recognised as.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// A DNS query (any name, any type).
    Dns,
    /// A TCP connection that was neither HTTP nor TLS (or sent nothing).
    Tcp,
    /// A UDP datagram other than DNS.
    Udp,
    /// An HTTP request (method, Host, path).
    Http,
    /// A TLS ClientHello (its SNI).
    Tls,
}

impl Protocol {
    /// The contract name (`dns`, `tcp`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Dns => "dns",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Http => "http",
            Protocol::Tls => "tls",
        }
    }
}

/// One destination a test tried, with how often (`predicate.observed.network[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Observation {
    /// `dns`, `tcp`, `udp`, `http` or `tls`.
    pub protocol: Protocol,
    /// The name: the DNS question, the HTTP Host, the TLS SNI, or the name a sink address
    /// was handed out for.
    pub host: Option<String>,
    /// The destination address the test used (IPv4 text); none for DNS.
    pub address: Option<String>,
    /// The destination port; none for DNS.
    pub port: Option<u16>,
    /// HTTP method.
    pub method: Option<String>,
    /// HTTP path with its query string.
    pub path: Option<String>,
    /// DNS query type (`A`, `AAAA`, `TXT`, ...).
    pub qtype: Option<String>,
    /// How many attempts had this key.
    pub count: u64,
    /// Whether it was let through (allowlist mode, declared destination); never in observe.
    pub allowed: bool,
    /// SHA-256 of the first payload bytes read (up to the sink's peek bound), hex.
    pub first_bytes_sha256: Option<String>,
    /// The first [`EXCERPT_BYTES`] of that payload, non-printable bytes as `\xNN`.
    pub excerpt: Option<String>,
}

impl Observation {
    /// An attempt with nothing but its protocol.
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            host: None,
            address: None,
            port: None,
            method: None,
            path: None,
            qtype: None,
            count: 1,
            allowed: false,
            first_bytes_sha256: None,
            excerpt: None,
        }
    }

    /// Sets the first payload: its digest and a printable excerpt.
    pub fn with_payload(mut self, bytes: &[u8]) -> Self {
        if !bytes.is_empty() {
            self.first_bytes_sha256 = Some(hex::encode(Sha256::digest(bytes)));
            self.excerpt = Some(excerpt(bytes));
        }
        self
    }

    /// The destination in one short phrase, for messages: `http GET example.com:80/x`.
    pub fn describe(&self) -> String {
        let host = self
            .host
            .clone()
            .or_else(|| self.address.clone())
            .unwrap_or_else(|| "?".into());
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        match self.protocol {
            Protocol::Dns => format!("dns {} {host}", self.qtype.as_deref().unwrap_or("?")),
            Protocol::Http => format!(
                "http {} {host}{port}{}",
                self.method.as_deref().unwrap_or("?"),
                self.path.as_deref().unwrap_or("")
            ),
            p => format!("{} {host}{port}", p.as_str()),
        }
    }

    fn key(&self) -> Key {
        (
            self.protocol,
            self.host.clone(),
            self.address.clone(),
            self.port,
            self.method.clone(),
            self.path.clone(),
            self.qtype.clone(),
        )
    }
}

type Key = (
    Protocol,
    Option<String>,
    Option<String>,
    Option<u16>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// Printable ASCII as is, everything else as `\xNN`, from the first [`EXCERPT_BYTES`].
pub fn excerpt(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes.iter().take(EXCERPT_BYTES) {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Cuts text to a bounded length on a character boundary.
pub fn bounded(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

/// The sink's report: every destination, plus how many attempts did not fit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Aggregated attempts, in first-seen order.
    pub observed: Vec<Observation>,
    /// Attempts past [`MAX_ENTRIES`] distinct destinations, counted only.
    pub dropped: u64,
}

/// Aggregates attempts under a bound. Shared by the sink's tasks.
#[derive(Debug, Default)]
pub struct Recorder {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    index: HashMap<Key, usize>,
    list: Vec<Observation>,
    dropped: u64,
}

impl Recorder {
    /// Records an attempt (or `o.count` of them: reports merge by recording their entries).
    pub fn record(&self, o: Observation) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = o.key();
        if let Some(&i) = inner.index.get(&key) {
            let entry = &mut inner.list[i];
            entry.count = entry.count.saturating_add(o.count);
            entry.allowed |= o.allowed;
            return;
        }
        if inner.list.len() >= MAX_ENTRIES {
            inner.dropped = inner.dropped.saturating_add(1);
            return;
        }
        let i = inner.list.len();
        inner.list.push(o);
        inner.index.insert(key, i);
    }

    /// Everything so far.
    pub fn report(&self) -> Report {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Report {
            observed: inner.list.clone(),
            dropped: inner.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(port: u16) -> Observation {
        Observation {
            address: Some("198.18.0.1".into()),
            port: Some(port),
            ..Observation::new(Protocol::Tcp)
        }
    }

    #[test]
    fn attempts_aggregate_by_destination_and_keep_their_first_payload() {
        let r = Recorder::default();
        r.record(tcp(80).with_payload(b"first"));
        r.record(tcp(80).with_payload(b"second"));
        r.record(tcp(81));
        let report = r.report();
        assert_eq!(report.observed.len(), 2);
        assert_eq!(report.observed[0].count, 2);
        assert_eq!(report.observed[0].excerpt.as_deref(), Some("first"));
        assert_eq!(report.observed[1].port, Some(81));
        assert_eq!(report.dropped, 0);
    }

    #[test]
    fn distinct_destinations_past_the_bound_are_only_counted() {
        let r = Recorder::default();
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            r.record(Observation {
                host: Some(format!("h{i}.example")),
                ..Observation::new(Protocol::Dns)
            });
        }
        let report = r.report();
        assert_eq!(report.observed.len(), MAX_ENTRIES);
        assert_eq!(report.dropped, 10);
    }

    #[test]
    fn excerpts_escape_what_is_not_printable_and_stay_bounded() {
        assert_eq!(excerpt(b"GET /\r\n\\"), "GET /\\x0d\\x0a\\x5c");
        assert_eq!(excerpt(&[0u8; 1000]).len(), EXCERPT_BYTES * 4);
    }
}
