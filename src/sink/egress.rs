//! Allowlist mode: a connection whose TLS SNI or HTTP Host names an allowed destination is
//! forwarded to that name's real address; everything else stays in the sink.
//!
//! - The name checked is what the client asked for (SNI, Host), not the address it dialled:
//!   the sink connects to the name's own resolution, so a test can reach allowed names and
//!   nothing else, whatever address it used.
//! - A resolution to a loopback, private, link-local, shared (CGNAT), multicast, reserved
//!   or benchmarking (the sink's own 198.18.0.0/15) address is refused unless
//!   `allow_private` is set: no metadata endpoints, no host services. The documentation
//!   ranges are not refused: they are never anyone's host or metadata service, and a
//!   TLS-intercepting proxy may answer from one (this project's CI machine does).
//! - Raw TCP (no SNI, no Host) and UDP are never forwarded.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the upstream connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether `host` is on the allowlist: an exact name, or `*.domain` for its subdomains.
pub fn allowed(allow: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return false;
    }
    allow.iter().any(|entry| {
        let entry = entry.trim_end_matches('.').to_ascii_lowercase();
        match entry.strip_prefix("*.") {
            Some(domain) => host.len() > domain.len() + 1 && host.ends_with(&format!(".{domain}")),
            None => host == entry,
        }
    })
}

/// Whether an address may be reached by an allowed name: public unicast
/// ([`crate::netguard::is_public`]), or a documentation range, which is never anyone's host
/// or metadata service and which a TLS-intercepting proxy may answer from (this project's CI
/// machine's does).
pub fn is_global(ip: IpAddr) -> bool {
    crate::netguard::is_public(ip) || crate::netguard::is_documentation(ip)
}

/// Why a forward did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The name did not resolve in time or at all.
    #[error("{host} did not resolve: {reason}")]
    Resolve {
        /// The name.
        host: String,
        /// Why.
        reason: String,
    },
    /// Every address of the name is private (and private addresses are not allowed).
    #[error("{host} resolves only to non-global addresses ({addresses}); refused")]
    Private {
        /// The name.
        host: String,
        /// What it resolved to.
        addresses: String,
    },
    /// The upstream connection failed.
    #[error("connecting to {host} ({address}): {reason}")]
    Connect {
        /// The name.
        host: String,
        /// The address tried.
        address: SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Resolves `host` and picks the first address the guard allows.
pub async fn resolve(
    host: &str,
    port: u16,
    allow_private: bool,
) -> Result<SocketAddr, EgressError> {
    let found = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| EgressError::Resolve {
            host: host.into(),
            reason: "timed out".into(),
        })?
        .map_err(|e| EgressError::Resolve {
            host: host.into(),
            reason: e.to_string(),
        })?
        .collect::<Vec<_>>();
    found
        .iter()
        .find(|a| allow_private || is_global(a.ip()))
        .copied()
        .ok_or_else(|| EgressError::Private {
            host: host.into(),
            addresses: found
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Connects to `address` for `host`, replays what the client already sent, then splices
/// both ways until either side closes.
pub async fn forward(
    mut client: TcpStream,
    first: &[u8],
    host: &str,
    address: SocketAddr,
) -> Result<(), EgressError> {
    let connect_err = |reason: String| EgressError::Connect {
        host: host.into(),
        address,
        reason,
    };
    let mut upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    upstream
        .write_all(first)
        .await
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_or_by_wildcard_subdomain() {
        let allow = vec!["pypi.org".to_string(), "*.pythonhosted.org".to_string()];
        assert!(allowed(&allow, "PyPI.org."));
        assert!(allowed(&allow, "files.pythonhosted.org"));
        assert!(!allowed(&allow, "pythonhosted.org"));
        assert!(!allowed(&allow, "evilpypi.org"));
        assert!(!allowed(&allow, "pypi.org.evil.example"));
        assert!(!allowed(&allow, ""));
    }

    #[test]
    fn only_global_addresses_pass_the_guard() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.17.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "198.18.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_global(bad.parse().unwrap()), "{bad}");
        }
        for good in ["151.101.0.223", "8.8.8.8", "2a04:4e42::223", "203.0.113.80"] {
            assert!(is_global(good.parse().unwrap()), "{good}");
        }
    }
}
