//! The one address guard: which addresses are public unicast, the only kind a callback
//! (webhooks) or an allowlisted name (the network sink) may reach by default. No loopback,
//! private, link-local, shared (CGNAT), multicast, reserved, benchmarking (the sink's own
//! 198.18.0.0/15) or NAT64 address: no metadata endpoints, no host services.

use std::net::{IpAddr, Ipv4Addr};

/// Whether `ip` is a public unicast address (the only kind a callback may reach by default).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let seg0 = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || seg0 == 0x2001 && v6.segments()[1] == 0x0db8 // documentation
                || seg0 == 0x0064 && v6.segments()[1] == 0xff9b) // NAT64 (reaches IPv4 inside)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking 198.18/15
        || a >= 240) // reserved
}

/// Whether `ip` is in a documentation range (192.0.2/24, 198.51.100/24, 203.0.113/24,
/// 2001:db8::/32): never anyone's host or metadata service.
pub fn is_documentation(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_documentation(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_documentation(),
            None => v6.segments()[0] == 0x2001 && v6.segments()[1] == 0x0db8,
        },
    }
}
