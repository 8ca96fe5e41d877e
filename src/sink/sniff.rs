//! What the first bytes of a TCP connection say: an HTTP request (httparse), a TLS
//! ClientHello (tls-parser, for its SNI), or neither. Parsers see at most the sink's peek
//! bound and never fail loudly: anything unrecognised is raw TCP.

/// The recognised start of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP request line (and headers, as far as they came).
    Http {
        /// Method.
        method: String,
        /// Path with its query string.
        path: String,
        /// The Host header, if sent.
        host: Option<String>,
    },
    /// A TLS ClientHello.
    Tls {
        /// The server name asked for, if any.
        sni: Option<String>,
    },
    /// Neither (or nothing sent).
    Raw,
}

/// Whether more bytes could change the answer: a request line whose headers have not
/// ended yet, or a TLS record not yet complete.
pub fn needs_more(buf: &[u8]) -> bool {
    if buf.is_empty() {
        return true;
    }
    if looks_like_tls(buf) {
        // Record header: type, version (2), length (2).
        return buf.len() < 5 || buf.len() < 5 + usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => true,
        Ok(httparse::Status::Complete(_)) => false,
        // Too many headers: what we have is enough to classify.
        Err(httparse::Error::TooManyHeaders) => false,
        Err(_) => false,
    }
}

fn looks_like_tls(buf: &[u8]) -> bool {
    // Handshake record, major version 3.
    buf[0] == 0x16 && (buf.len() < 2 || buf[1] == 3)
}

/// Classifies what was read.
pub fn sniff(buf: &[u8]) -> Sniffed {
    if buf.is_empty() {
        return Sniffed::Raw;
    }
    if looks_like_tls(buf) {
        return Sniffed::Tls { sni: sni(buf) };
    }
    if let Some(http) = http(buf) {
        return http;
    }
    Sniffed::Raw
}

fn http(buf: &[u8]) -> Option<Sniffed> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(_) | Err(httparse::Error::TooManyHeaders) => {}
        Err(_) => return None,
    }
    // A partial parse still fills what it has read; a request line is the minimum.
    let (method, path) = (req.method?, req.path?);
    let host = req
        .headers
        .iter()
        .take_while(|h| !h.name.is_empty())
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| String::from_utf8_lossy(h.value).trim().to_string());
    Some(Sniffed::Http {
        method: method.to_string(),
        path: path.to_string(),
        host,
    })
}

fn sni(buf: &[u8]) -> Option<String> {
    use tls_parser::{
        parse_tls_extensions, parse_tls_plaintext, TlsExtension, TlsMessage, TlsMessageHandshake,
    };
    let (_, record) = parse_tls_plaintext(buf).ok()?;
    for msg in record.msg {
        if let TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)) = msg {
            let (_, extensions) = parse_tls_extensions(hello.ext?).ok()?;
            for ext in extensions {
                if let TlsExtension::SNI(names) = ext {
                    return names
                        .first()
                        .map(|(_, name)| String::from_utf8_lossy(name).to_string());
                }
            }
        }
    }
    None
}

/// The host part of an HTTP Host header (`example.com:8080` -> `example.com`, `[::1]:80`
/// -> `::1`), lower-cased.
pub fn host_only(host: &str) -> String {
    let h = host.trim();
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        h.rsplit_once(':')
            .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            .map_or(h, |(name, _)| name)
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal TLS 1.2 ClientHello for `example.com`.
    pub fn client_hello(name: &str) -> Vec<u8> {
        let n = name.as_bytes();
        let mut sni = vec![0x00, 0x00]; // type server_name
        let list_len = n.len() + 3;
        let ext_len = list_len + 2;
        sni.extend_from_slice(&(ext_len as u16).to_be_bytes());
        sni.extend_from_slice(&(list_len as u16).to_be_bytes());
        sni.push(0); // host_name
        sni.extend_from_slice(&(n.len() as u16).to_be_bytes());
        sni.extend_from_slice(n);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0u8; 32]); // random
        body.push(0); // session id
        body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[0x01, 0x00]); // compression: null
        body.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        body.extend_from_slice(&sni);
        let mut hs = vec![0x01];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn an_http_request_gives_method_path_and_host() {
        let req = b"GET /x?q=1 HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n";
        assert!(!needs_more(req));
        let Sniffed::Http { method, path, host } = sniff(req) else {
            panic!()
        };
        assert_eq!((method.as_str(), path.as_str()), ("GET", "/x?q=1"));
        assert_eq!(host_only(&host.unwrap()), "example.com");
        assert!(needs_more(b"GET / HTTP/1.1\r\nHost: a"));
    }

    #[test]
    fn a_client_hello_gives_its_sni() {
        let hello = client_hello("evil.example");
        assert!(!needs_more(&hello));
        assert!(needs_more(&hello[..20]));
        assert_eq!(
            sniff(&hello),
            Sniffed::Tls {
                sni: Some("evil.example".into())
            }
        );
    }

    #[test]
    fn garbage_is_raw_and_truncated_tls_has_no_sni() {
        assert_eq!(sniff(b"\x00\x01hello"), Sniffed::Raw);
        assert_eq!(
            sniff(&client_hello("a.b")[..30]),
            Sniffed::Tls { sni: None }
        );
        assert_eq!(host_only("[::1]:80"), "::1");
        assert_eq!(host_only("a.example."), "a.example");
    }
}
