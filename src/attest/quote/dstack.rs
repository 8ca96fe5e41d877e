//! The `dstack` quote provider: a client of the dstack guest agent.
//!
//! A real TDX quote from a dstack guest agent: `POST /GetQuote` with
//! `{"report_data": "<hex>"}` over HTTP on a unix socket (or an HTTP URL). The endpoint is the
//! configured `attest.dstack_endpoint`, else `DSTACK_SIMULATOR_ENDPOINT`, else the first of
//! [`DSTACK_SOCKETS`] that exists. The answer carries `quote` (hex), `event_log` (a JSON
//! array as a string), `report_data` and `vm_config`; errors come as `{"error": "..."}`
//! with a 4xx/5xx status. Every request runs under one deadline.
//!
//! The legacy Tappd agent (`/prpc/Tappd.TdxQuote`, dstack before 0.5, socket
//! `/var/run/tappd.sock`) is not supported: it hashes the given report_data into the quote
//! (SHA-512 with a prefix by default) instead of quoting it verbatim. An agent that answers
//! 404 to `/GetQuote` is refused with [`QuoteError::LegacyTappd`], naming the fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha384};

use super::tdx::{tdx_report_data, TcbPolicy};
use super::{QuoteError, QuoteProvider, PROVIDER_DSTACK};
use crate::attest::statement::Tee;

/// The dstack guest agent sockets tried in order when no endpoint is configured.
pub const DSTACK_SOCKETS: [&str; 4] = [
    "/var/run/dstack.sock",
    "/run/dstack.sock",
    "/var/run/dstack/dstack.sock",
    "/run/dstack/dstack.sock",
];

/// Environment variable naming a dstack simulator endpoint (socket path or URL).
pub const DSTACK_SIMULATOR_ENV: &str = "DSTACK_SIMULATOR_ENDPOINT";

/// Default deadline for one `GetQuote` call, connect to last byte. Real TDX quote
/// generation takes well under a second; 30 s allows a loaded host without hanging a job.
pub const DSTACK_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest guest-agent answer read (the event log dominates; a few hundred KiB in practice).
const MAX_AGENT_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Where the dstack guest agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DstackEndpoint {
    /// HTTP over a unix socket.
    Unix(PathBuf),
    /// Plain HTTP(S) base URL (a dstack simulator).
    Http(String),
}

impl std::fmt::Display for DstackEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DstackEndpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            DstackEndpoint::Http(u) => f.write_str(u),
        }
    }
}

impl DstackEndpoint {
    /// Parses `http(s)://...` as a URL, `unix:/path` or any other text as a socket path.
    pub fn parse(text: &str) -> DstackEndpoint {
        if text.starts_with("http://") || text.starts_with("https://") {
            DstackEndpoint::Http(text.trim_end_matches('/').to_string())
        } else {
            DstackEndpoint::Unix(PathBuf::from(text.strip_prefix("unix:").unwrap_or(text)))
        }
    }

    /// `configured`, else `$DSTACK_SIMULATOR_ENDPOINT`, else the first existing socket of
    /// [`DSTACK_SOCKETS`].
    pub fn resolve(configured: Option<&str>) -> Result<DstackEndpoint, QuoteError> {
        if let Some(text) = configured.filter(|t| !t.is_empty()) {
            return Ok(DstackEndpoint::parse(text));
        }
        if let Ok(text) = std::env::var(DSTACK_SIMULATOR_ENV) {
            if !text.is_empty() {
                return Ok(DstackEndpoint::parse(&text));
            }
        }
        DSTACK_SOCKETS
            .iter()
            .map(Path::new)
            .find(|p| p.exists())
            .map(|p| DstackEndpoint::Unix(p.to_path_buf()))
            .ok_or_else(|| QuoteError::NoDstackEndpoint {
                tried: DSTACK_SOCKETS.iter().map(|s| s.to_string()).collect(),
            })
    }
}

/// A real TDX quote from a dstack guest agent (module docs).
#[derive(Debug, Clone)]
pub struct DstackQuoteProvider {
    endpoint: DstackEndpoint,
    timeout: Duration,
    pccs_url: Option<String>,
    tcb_policy: TcbPolicy,
}

/// The guest agent's `GetQuote` answer.
#[derive(Debug, Deserialize)]
struct GetQuoteResponse {
    quote: String,
    #[serde(default)]
    event_log: String,
    #[serde(default)]
    report_data: String,
    #[serde(default)]
    vm_config: String,
}

#[derive(Debug, Deserialize)]
struct AgentError {
    error: String,
}

impl DstackQuoteProvider {
    /// A provider for `endpoint` with the default deadline ([`DSTACK_TIMEOUT`]).
    pub fn new(endpoint: DstackEndpoint) -> Self {
        DstackQuoteProvider {
            endpoint,
            timeout: DSTACK_TIMEOUT,
            pccs_url: None,
            tcb_policy: TcbPolicy::default(),
        }
    }

    /// Fetches collateral from the PCCS at `pccs_url` for every quote, verifies the quote
    /// against it under `policy` before signing (a quote that fails is not signed), and
    /// carries it in `tee.collateral`.
    pub fn with_collateral(mut self, pccs_url: Option<String>, policy: TcbPolicy) -> Self {
        self.pccs_url = pccs_url;
        self.tcb_policy = policy;
        self
    }

    /// Sets the deadline for one `GetQuote` call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The endpoint in use.
    pub fn endpoint(&self) -> &DstackEndpoint {
        &self.endpoint
    }

    fn transport(&self, message: impl std::fmt::Display) -> QuoteError {
        QuoteError::Transport {
            endpoint: self.endpoint.to_string(),
            message: message.to_string(),
        }
    }

    /// Sends `POST /GetQuote`; returns (status, body).
    async fn post_get_quote(&self, body: Vec<u8>) -> Result<(u16, Bytes), QuoteError> {
        match &self.endpoint {
            DstackEndpoint::Unix(path) => self.post_unix(path, body).await,
            DstackEndpoint::Http(base) => self.post_http(base, body).await,
        }
    }

    async fn post_unix(&self, path: &Path, body: Vec<u8>) -> Result<(u16, Bytes), QuoteError> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| self.transport(format!("connect: {e}")))?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| self.transport(format!("handshake: {e}")))?;
        // The connection future drives the socket; abort it when we are done (or dropped by
        // the deadline) so no task outlives the request.
        let conn = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(conn));
        let request = hyper::Request::post("/GetQuote")
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| self.transport(e))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.transport(format!("request: {e}")))?;
        let status = response.status().as_u16();
        let bytes = Limited::new(response.into_body(), MAX_AGENT_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| self.transport(format!("reading answer: {e}")))?
            .to_bytes();
        drop(conn);
        Ok((status, bytes))
    }

    async fn post_http(&self, base: &str, body: Vec<u8>) -> Result<(u16, Bytes), QuoteError> {
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| self.transport(e))?;
        let mut response = client
            .post(format!("{base}/GetQuote"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(format!("request: {e}")))?;
        let status = response.status().as_u16();
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport(format!("reading answer: {e}")))?
        {
            if bytes.len() + chunk.len() > MAX_AGENT_RESPONSE_BYTES {
                return Err(self.transport("answer too large"));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((status, Bytes::from(bytes)))
    }
}

#[async_trait]
impl QuoteProvider for DstackQuoteProvider {
    fn kind(&self) -> &'static str {
        PROVIDER_DSTACK
    }

    /// The TCB policy, and the PCCS when collateral is fetched: both known before the quote.
    fn bound_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = serde_json::Map::new();
        fields.insert("tcb_policy".into(), self.tcb_policy.allowed().into());
        if let Some(url) = &self.pccs_url {
            fields.insert("pccs_url".into(), url.clone().into());
        }
        fields
    }

    async fn quote(&self, report_data: &[u8; 64]) -> Result<Tee, QuoteError> {
        let request = serde_json::json!({ "report_data": hex::encode(report_data) });
        let body = serde_json::to_vec(&request).expect("a JSON object serializes");
        let (status, bytes) = tokio::time::timeout(self.timeout, self.post_get_quote(body))
            .await
            .map_err(|_| QuoteError::Timeout {
                endpoint: self.endpoint.to_string(),
                secs: self.timeout.as_secs(),
            })??;
        // A legacy Tappd agent (dstack < 0.5) serves `/prpc/Tappd.TdxQuote` only, and hashes
        // the report_data it is given instead of quoting it verbatim, so our binding could not
        // be checked against its quotes: refused with a clear message, not supported.
        if status == 404 {
            return Err(QuoteError::LegacyTappd {
                endpoint: self.endpoint.to_string(),
            });
        }
        if !(200..300).contains(&status) {
            let message = match serde_json::from_slice::<AgentError>(&bytes) {
                Ok(e) => e.error,
                Err(_) => String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned(),
            };
            return Err(QuoteError::Agent { status, message });
        }
        let answer: GetQuoteResponse = serde_json::from_slice(&bytes)
            .map_err(|e| QuoteError::BadResponse(format!("not a GetQuote answer: {e}")))?;
        let quote = hex::decode(answer.quote.trim_start_matches("0x"))
            .map_err(|_| QuoteError::BadResponse("quote is not hex".into()))?;
        // The agent must have quoted exactly our report_data; check before we sign it.
        if tdx_report_data(&quote)? != *report_data {
            return Err(QuoteError::ReportDataMismatch);
        }
        if !answer.report_data.is_empty()
            && !answer
                .report_data
                .trim_start_matches("0x")
                .eq_ignore_ascii_case(&hex::encode(report_data))
        {
            return Err(QuoteError::ReportDataMismatch);
        }
        let mut extra = serde_json::Map::new();
        // Kept verbatim as strings: the event log is replayed against RTMRs by DCAP tooling
        // and must stay byte-identical to what the agent produced.
        extra.insert("event_log".into(), answer.event_log.into());
        extra.insert("vm_config".into(), answer.vm_config.into());
        extra.extend(self.bound_fields());
        if let Some(pccs) = &self.pccs_url {
            let collateral = super::pccs::fetch_collateral(pccs, &quote).await?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let report = super::verify_dcap(&quote, &collateral, now, None)?;
            self.tcb_policy.check(&report)?;
            extra.insert(
                "collateral".into(),
                serde_json::to_value(&collateral)
                    .map_err(|e| QuoteError::Collateral(e.to_string()))?,
            );
        }
        Ok(Tee {
            provider: PROVIDER_DSTACK.into(),
            quote: hex::encode(&quote),
            report_data: hex::encode(report_data),
            extra,
        })
    }
}

// ---------------------------------------------------------------------------------------
// event log and RTMR replay

/// `event_type` of dstack's runtime events (app id, compose hash, instance id, key
/// provider, ...), the ones extended into RTMR3 by the guest.
pub const DSTACK_RUNTIME_EVENT_TYPE: u32 = 0x0800_0001;

/// Most event log entries read (the simulator's log has 33; a real boot a few hundred).
pub const MAX_EVENT_LOG_ENTRIES: usize = 10_000;

/// One entry of the event log dstack's guest agent returns (a JSON array, as a string).
#[derive(Debug, Clone, Deserialize)]
pub struct EventLogEntry {
    /// The measurement register, 0-based (3 = RTMR3).
    pub imr: u32,
    /// TCG event type; [`DSTACK_RUNTIME_EVENT_TYPE`] for dstack's runtime events.
    pub event_type: u32,
    /// The SHA-384 digest extended into the register, hex.
    pub digest: String,
    /// The event's name (runtime events).
    #[serde(default)]
    pub event: String,
    /// The event's payload, hex (runtime events).
    #[serde(default)]
    pub event_payload: String,
    /// dstack's runtime event format version (absent or 1: the digest formula below).
    #[serde(default)]
    pub version: Option<u32>,
}

/// What an RTMR replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The replayed register value.
    pub value: [u8; 48],
    /// Events extended into it.
    pub events: usize,
    /// Runtime events whose digest was recomputed from their name and payload.
    pub runtime_events_checked: usize,
}

/// Replays register `imr` from a dstack event log: start from 48 zero bytes, then
/// `mr = SHA-384(mr || digest)` for each entry of that register, in order (dstack's rule).
///
/// A runtime event (type [`DSTACK_RUNTIME_EVENT_TYPE`], format v1) must also carry the
/// digest of its own content, `SHA-384(event_type as 4 LE bytes || ":" || event || ":" ||
/// payload)`; one that does not is refused, so the names and payloads a reader sees are the
/// ones measured. Entries of other formats count by their digest alone.
pub fn replay_rtmr(event_log: &str, imr: u32) -> Result<Replay, QuoteError> {
    let entries: Vec<EventLogEntry> = serde_json::from_str(event_log)
        .map_err(|e| QuoteError::EventLog(format!("not a dstack event log: {e}")))?;
    if entries.len() > MAX_EVENT_LOG_ENTRIES {
        return Err(QuoteError::EventLog(format!(
            "{} entries, more than {MAX_EVENT_LOG_ENTRIES}",
            entries.len()
        )));
    }
    let mut mr = [0u8; 48];
    let mut events = 0;
    let mut runtime_events_checked = 0;
    for (i, entry) in entries.iter().enumerate().filter(|(_, e)| e.imr == imr) {
        let digest: [u8; 48] = hex::decode(&entry.digest)
            .ok()
            .and_then(|d| d.try_into().ok())
            .ok_or_else(|| {
                QuoteError::EventLog(format!("entry {i}: digest is not 48 bytes of hex"))
            })?;
        if entry.event_type == DSTACK_RUNTIME_EVENT_TYPE && entry.version.unwrap_or(1) == 1 {
            let payload = hex::decode(&entry.event_payload).map_err(|_| {
                QuoteError::EventLog(format!("entry {i}: event_payload is not hex"))
            })?;
            let mut h = Sha384::new();
            h.update(entry.event_type.to_le_bytes());
            h.update(b":");
            h.update(entry.event.as_bytes());
            h.update(b":");
            h.update(&payload);
            if h.finalize().as_slice() != digest {
                return Err(QuoteError::EventLog(format!(
                    "entry {i} ({:?}): digest does not match its name and payload",
                    entry.event
                )));
            }
            runtime_events_checked += 1;
        }
        let mut h = Sha384::new();
        h.update(mr);
        h.update(digest);
        mr = h.finalize().into();
        events += 1;
    }
    Ok(Replay {
        value: mr,
        events,
        runtime_events_checked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parsing() {
        assert_eq!(
            DstackEndpoint::parse("http://127.0.0.1:8090/"),
            DstackEndpoint::Http("http://127.0.0.1:8090".into())
        );
        assert_eq!(
            DstackEndpoint::parse("/tmp/dstack.sock"),
            DstackEndpoint::Unix("/tmp/dstack.sock".into())
        );
        assert_eq!(
            DstackEndpoint::parse("unix:/tmp/d.sock"),
            DstackEndpoint::Unix("/tmp/d.sock".into())
        );
        assert_eq!(
            DstackEndpoint::resolve(Some("/x.sock")).unwrap(),
            DstackEndpoint::Unix("/x.sock".into())
        );
    }
}
