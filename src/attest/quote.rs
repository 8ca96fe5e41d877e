//! TEE quote providers: `simulated`, `dstack`, `none`, behind one [`QuoteProvider`] trait.
//!
//! A provider turns the 64-byte `report_data` (see [`crate::attest::report_data`]) into a
//! [`Tee`] record for `predicate.tee`.
//!
//! # `simulated` (the default)
//! A quote laid out like an Intel TDX quote v4, so tooling and tests exercise the real shape,
//! but signed by a **simulator key** instead of Intel's quoting enclave. It proves nothing
//! about hardware and says so everywhere: `tee.provider = "simulated"`, `tee.simulated = true`,
//! the quote header's QE vendor id reads `SV-SIMULATED-TDX`, and `attestation verify` prints
//! `quote: SIMULATED`. All integers little-endian:
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 2 | version | 4 |
//! | 2 | 2 | attestation key type | `0xED25` (not a TDX value: "simulator, Ed25519") |
//! | 4 | 4 | TEE type | `0x81` (TDX) |
//! | 8 | 2+2 | QE SVN, PCE SVN | 0 |
//! | 12 | 16 | QE vendor id | ASCII `SV-SIMULATED-TDX` |
//! | 28 | 20 | user data | ASCII `skill-verifier`, zero-padded |
//! | 48 | 584 | TD report body | as TDX 1.0, zeros except: |
//! | 184 | 48 | └ MRTD | SHA-384 of the verifier binary (`/proc/self/exe`) |
//! | 232 | 48 | └ MRCONFIGID | SHA-384 of the attest settings as JSON |
//! | 376 | 48 | └ RTMR0 | SHA-384 of `skill-verifier <version>` |
//! | 568 | 64 | └ REPORTDATA | the 64-byte report_data |
//! | 632 | 4 | signature data length | 96 |
//! | 636 | 64 | Ed25519 signature over bytes `0..632` | |
//! | 700 | 32 | simulator public key | |
//!
//! The simulator key is derived from a published seed, `SHA-256("skill-verifier simulated
//! TDX quoting key v1")` ([`simulator_verifying_key`]): anyone can recompute it, so a verifier
//! checks the quote was not altered after the simulator produced it, and that is all. The
//! trust in a simulated attestation rests on the DSSE signature alone.
//!
//! # `dstack`
//! A real TDX quote from a dstack guest agent: `POST /GetQuote` with
//! `{"report_data": "<hex>"}` over HTTP on a unix socket (or an HTTP URL). The endpoint is the
//! configured `attest.dstack_endpoint`, else `DSTACK_SIMULATOR_ENDPOINT`, else the first of
//! [`DSTACK_SOCKETS`] that exists. The answer carries `quote` (hex), `event_log` (a JSON
//! array as a string), `report_data` and `vm_config`; errors come as `{"error": "..."}`
//! with a 4xx/5xx status. Every request runs under one deadline.
//!
//! # `none`
//! No quote: `tee.quote` is empty; `report_data` is still recorded.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha384};

use super::statement::Tee;
use crate::config::{AttestSettings, QuoteProviderKind};

/// `tee.provider` of the simulated provider.
pub const PROVIDER_SIMULATED: &str = "simulated";
/// `tee.provider` of the dstack provider.
pub const PROVIDER_DSTACK: &str = "dstack";
/// `tee.provider` of the none provider.
pub const PROVIDER_NONE: &str = "none";

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

/// Seed of the published simulator key (see module docs).
const SIMULATOR_SEED_LABEL: &[u8] = b"skill-verifier simulated TDX quoting key v1";

/// Length of a simulated quote.
pub const SIMULATED_QUOTE_LEN: usize = 732;
const HEADER_LEN: usize = 48;
const SIGNED_LEN: usize = 632;
const TEE_TYPE_TDX: u32 = 0x81;
const SIM_ATT_KEY_TYPE: u16 = 0xED25;
const SIM_QE_VENDOR: &[u8; 16] = b"SV-SIMULATED-TDX";
const OFF_MRTD: usize = 184;
const OFF_MRCONFIGID: usize = 232;
const OFF_RTMR0: usize = 376;
const OFF_REPORT_DATA_V4: usize = 568;

/// Why a quote could not be produced or read.
#[derive(Debug, thiserror::Error)]
pub enum QuoteError {
    /// Reading the verifier binary for the simulated measurements failed.
    #[error("measuring the verifier binary {path}: {source}")]
    Measure {
        /// The binary.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No dstack endpoint configured and none of the well-known sockets exists.
    #[error("no dstack guest agent: no endpoint configured, ${DSTACK_SIMULATOR_ENV} unset, and none of {tried:?} exists")]
    NoDstackEndpoint {
        /// The sockets looked for.
        tried: Vec<String>,
    },
    /// Connecting to or talking HTTP with the guest agent failed.
    #[error("dstack guest agent at {endpoint}: {message}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// What failed.
        message: String,
    },
    /// The guest agent did not answer within the deadline.
    #[error("dstack guest agent at {endpoint}: no answer within {secs} s")]
    Timeout {
        /// The endpoint.
        endpoint: String,
        /// The deadline.
        secs: u64,
    },
    /// The guest agent answered with an error (`{"error": "..."}`, 4xx/5xx).
    #[error("dstack guest agent refused GetQuote (HTTP {status}): {message}")]
    Agent {
        /// The HTTP status.
        status: u16,
        /// The agent's `error` text (or the start of the body).
        message: String,
    },
    /// The guest agent's answer is not the documented shape.
    #[error("dstack guest agent answer unusable: {0}")]
    BadResponse(String),
    /// The quote's bytes are not a quote of the expected shape.
    #[error("malformed quote: {0}")]
    Malformed(String),
    /// The quote binds other report_data than the one requested/recorded.
    #[error("the quote's report_data is not the expected report_data")]
    ReportDataMismatch,
    /// The simulated quote's signature does not verify (it was altered).
    #[error("simulated quote signature invalid: {0}")]
    SignatureInvalid(&'static str),
}

/// Produces TEE quotes over a 64-byte `report_data`.
#[async_trait]
pub trait QuoteProvider: Send + Sync {
    /// `simulated` | `dstack` | `none` (the value of `tee.provider`).
    fn kind(&self) -> &'static str;
    /// A quote binding `report_data`, as the `predicate.tee` record.
    async fn quote(&self, report_data: &[u8; 64]) -> Result<Tee, QuoteError>;
}

/// Builds the configured provider.
pub fn from_settings(settings: &AttestSettings) -> Result<Arc<dyn QuoteProvider>, QuoteError> {
    Ok(match settings.quote_provider {
        QuoteProviderKind::Simulated => {
            Arc::new(SimulatedQuoteProvider::for_this_binary(settings)?)
        }
        QuoteProviderKind::Dstack => {
            let endpoint = DstackEndpoint::resolve(settings.dstack_endpoint.as_deref())?;
            Arc::new(DstackQuoteProvider::new(endpoint))
        }
        QuoteProviderKind::None => Arc::new(NoQuoteProvider),
    })
}

// ---------------------------------------------------------------------------------------
// none

/// No TEE: records report_data, no quote.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoQuoteProvider;

#[async_trait]
impl QuoteProvider for NoQuoteProvider {
    fn kind(&self) -> &'static str {
        PROVIDER_NONE
    }

    async fn quote(&self, report_data: &[u8; 64]) -> Result<Tee, QuoteError> {
        Ok(Tee {
            provider: PROVIDER_NONE.into(),
            quote: String::new(),
            report_data: hex::encode(report_data),
            extra: serde_json::Map::new(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// simulated

/// The measurements a simulated quote carries (48-byte SHA-384 values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedMeasurements {
    /// MRTD: SHA-384 of the verifier binary.
    pub mr_td: [u8; 48],
    /// MRCONFIGID: SHA-384 of the verifier's attest configuration.
    pub mr_config_id: [u8; 48],
    /// RTMR0: SHA-384 of `skill-verifier <version>`.
    pub rtmr0: [u8; 48],
}

impl SimulatedMeasurements {
    /// Measurements from the given binary bytes and configuration bytes.
    pub fn of(binary: &[u8], config: &[u8]) -> Self {
        SimulatedMeasurements {
            mr_td: Sha384::digest(binary).into(),
            mr_config_id: Sha384::digest(config).into(),
            rtmr0: version_measurement(),
        }
    }
}

fn version_measurement() -> [u8; 48] {
    Sha384::digest(format!("skill-verifier {}", crate::VERSION)).into()
}

/// The simulator's signing key, derived from the published seed (module docs).
fn simulator_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::from_bytes(&Sha256::digest(SIMULATOR_SEED_LABEL).into()))
}

/// The simulator's public key: every simulated quote must carry and verify under it.
pub fn simulator_verifying_key() -> VerifyingKey {
    simulator_key().verifying_key()
}

/// SHA-384 of this process's binary, hashed once per process (it does not change while we
/// run, and hashing a large binary on every quote would be waste).
fn binary_measurement() -> Result<[u8; 48], QuoteError> {
    static MR: OnceLock<[u8; 48]> = OnceLock::new();
    if let Some(mr) = MR.get() {
        return Ok(*mr);
    }
    let path = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let measure_err = |source| QuoteError::Measure {
        path: path.clone(),
        source,
    };
    let mut file = std::fs::File::open(&path).map_err(measure_err)?;
    let mut hasher = Sha384::new();
    std::io::copy(&mut file, &mut hasher).map_err(measure_err)?;
    Ok(*MR.get_or_init(|| hasher.finalize().into()))
}

/// A TDX-shaped quote signed by the published simulator key. Labelled simulated everywhere.
#[derive(Debug, Clone)]
pub struct SimulatedQuoteProvider {
    measurements: SimulatedMeasurements,
}

impl SimulatedQuoteProvider {
    /// A provider with explicit measurements (tests, benchmarks).
    pub fn new(measurements: SimulatedMeasurements) -> Self {
        SimulatedQuoteProvider { measurements }
    }

    /// Measures this process's binary and `settings` (module docs).
    pub fn for_this_binary(settings: &AttestSettings) -> Result<Self, QuoteError> {
        let config = serde_json::to_vec(settings).unwrap_or_default();
        Ok(SimulatedQuoteProvider {
            measurements: SimulatedMeasurements {
                mr_td: binary_measurement()?,
                mr_config_id: Sha384::digest(&config).into(),
                rtmr0: version_measurement(),
            },
        })
    }

    /// The measurements this provider puts into its quotes.
    pub fn measurements(&self) -> &SimulatedMeasurements {
        &self.measurements
    }

    /// Builds and signs the quote bytes (layout in the module docs).
    pub fn quote_bytes(&self, report_data: &[u8; 64]) -> Vec<u8> {
        let mut q = vec![0u8; SIMULATED_QUOTE_LEN];
        q[0..2].copy_from_slice(&4u16.to_le_bytes());
        q[2..4].copy_from_slice(&SIM_ATT_KEY_TYPE.to_le_bytes());
        q[4..8].copy_from_slice(&TEE_TYPE_TDX.to_le_bytes());
        q[12..28].copy_from_slice(SIM_QE_VENDOR);
        q[28..28 + 14].copy_from_slice(b"skill-verifier");
        q[OFF_MRTD..OFF_MRTD + 48].copy_from_slice(&self.measurements.mr_td);
        q[OFF_MRCONFIGID..OFF_MRCONFIGID + 48].copy_from_slice(&self.measurements.mr_config_id);
        q[OFF_RTMR0..OFF_RTMR0 + 48].copy_from_slice(&self.measurements.rtmr0);
        q[OFF_REPORT_DATA_V4..OFF_REPORT_DATA_V4 + 64].copy_from_slice(report_data);
        q[SIGNED_LEN..SIGNED_LEN + 4].copy_from_slice(&96u32.to_le_bytes());
        let sig = simulator_key().sign(&q[..SIGNED_LEN]);
        q[636..700].copy_from_slice(&sig.to_bytes());
        q[700..732].copy_from_slice(simulator_key().verifying_key().as_bytes());
        q
    }
}

#[async_trait]
impl QuoteProvider for SimulatedQuoteProvider {
    fn kind(&self) -> &'static str {
        PROVIDER_SIMULATED
    }

    async fn quote(&self, report_data: &[u8; 64]) -> Result<Tee, QuoteError> {
        let quote = self.quote_bytes(report_data);
        let mut extra = serde_json::Map::new();
        extra.insert("simulated".into(), true.into());
        extra.insert(
            "simulator_key".into(),
            hex::encode(simulator_verifying_key().as_bytes()).into(),
        );
        extra.insert(
            "note".into(),
            "SIMULATED quote: not produced by TEE hardware; it proves nothing about the host"
                .into(),
        );
        Ok(Tee {
            provider: PROVIDER_SIMULATED.into(),
            quote: hex::encode(quote),
            report_data: hex::encode(report_data),
            extra,
        })
    }
}

/// What a verified simulated quote says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedQuote {
    /// The measurements it carries.
    pub measurements: SimulatedMeasurements,
    /// Its report_data.
    pub report_data: [u8; 64],
}

/// Parses a simulated quote and checks its simulator signature (strict Ed25519 under the
/// published simulator key; a quote carrying any other key is refused).
pub fn verify_simulated_quote(quote: &[u8]) -> Result<SimulatedQuote, QuoteError> {
    if quote.len() != SIMULATED_QUOTE_LEN {
        return Err(QuoteError::Malformed(format!(
            "simulated quote is {} bytes, want {SIMULATED_QUOTE_LEN}",
            quote.len()
        )));
    }
    let u16_at = |o: usize| u16::from_le_bytes([quote[o], quote[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(quote[o..o + 4].try_into().expect("4 bytes"));
    if u16_at(0) != 4 || u32_at(4) != TEE_TYPE_TDX || u16_at(2) != SIM_ATT_KEY_TYPE {
        return Err(QuoteError::Malformed(
            "header is not a simulated TDX v4 header".into(),
        ));
    }
    if &quote[12..28] != SIM_QE_VENDOR || u32_at(SIGNED_LEN) != 96 {
        return Err(QuoteError::Malformed(
            "not labelled as a simulated quote".into(),
        ));
    }
    if quote[700..732] != *simulator_verifying_key().as_bytes() {
        return Err(QuoteError::SignatureInvalid(
            "carries a key other than the published simulator key",
        ));
    }
    let sig = Signature::from_slice(&quote[636..700])
        .map_err(|_| QuoteError::SignatureInvalid("signature bytes malformed"))?;
    simulator_verifying_key()
        .verify_strict(&quote[..SIGNED_LEN], &sig)
        .map_err(|_| QuoteError::SignatureInvalid("signature does not match the quote"))?;
    let arr48 = |o: usize| -> [u8; 48] { quote[o..o + 48].try_into().expect("48 bytes") };
    Ok(SimulatedQuote {
        measurements: SimulatedMeasurements {
            mr_td: arr48(OFF_MRTD),
            mr_config_id: arr48(OFF_MRCONFIGID),
            rtmr0: arr48(OFF_RTMR0),
        },
        report_data: quote[OFF_REPORT_DATA_V4..OFF_REPORT_DATA_V4 + 64]
            .try_into()
            .expect("64 bytes"),
    })
}

/// Reads the REPORTDATA field of a TDX quote (v4, or v5 with a TD report body). Checks the
/// shape only: the quote's signature chain (Intel PCS collateral) is not checked here.
pub fn tdx_report_data(quote: &[u8]) -> Result<[u8; 64], QuoteError> {
    if quote.len() < HEADER_LEN + 6 {
        return Err(QuoteError::Malformed(format!(
            "{} bytes is too short for a TDX quote",
            quote.len()
        )));
    }
    let version = u16::from_le_bytes([quote[0], quote[1]]);
    let tee_type = u32::from_le_bytes(quote[4..8].try_into().expect("4 bytes"));
    if tee_type != TEE_TYPE_TDX {
        return Err(QuoteError::Malformed(format!(
            "TEE type {tee_type:#x} is not TDX (0x81)"
        )));
    }
    // v4: the TD report body follows the 48-byte header. v5: a 2-byte body type and a
    // 4-byte body size come first; types 2 (TDX 1.0) and 3 (TDX 1.5) both start with the
    // TDX 1.0 layout, so REPORTDATA sits 520 bytes into the body either way.
    let body = match version {
        4 => HEADER_LEN,
        5 => {
            let body_type = u16::from_le_bytes([quote[48], quote[49]]);
            if body_type != 2 && body_type != 3 {
                return Err(QuoteError::Malformed(format!(
                    "v5 body type {body_type} is not a TD report"
                )));
            }
            HEADER_LEN + 6
        }
        v => return Err(QuoteError::Malformed(format!("quote version {v}"))),
    };
    let start = body + 520;
    quote
        .get(start..start + 64)
        .map(|s| s.try_into().expect("64 bytes"))
        .ok_or_else(|| QuoteError::Malformed("quote ends before REPORTDATA".into()))
}

// ---------------------------------------------------------------------------------------
// dstack

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
        }
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
        let conn = AbortOnDrop(tokio::spawn(conn));
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

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[async_trait]
impl QuoteProvider for DstackQuoteProvider {
    fn kind(&self) -> &'static str {
        PROVIDER_DSTACK
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
        Ok(Tee {
            provider: PROVIDER_DSTACK.into(),
            quote: hex::encode(&quote),
            report_data: hex::encode(report_data),
            extra,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> SimulatedQuoteProvider {
        SimulatedQuoteProvider::new(SimulatedMeasurements::of(b"binary", b"config"))
    }

    #[test]
    fn simulated_quote_has_the_documented_layout_and_verifies() {
        let rd = [7u8; 64];
        let q = provider().quote_bytes(&rd);
        assert_eq!(q.len(), SIMULATED_QUOTE_LEN);
        assert_eq!(&q[0..2], &[4, 0]);
        assert_eq!(&q[4..8], &[0x81, 0, 0, 0]);
        assert_eq!(&q[12..28], b"SV-SIMULATED-TDX");
        assert_eq!(&q[568..632], &rd);
        let mr: [u8; 48] = Sha384::digest(b"binary").into();
        assert_eq!(&q[184..232], &mr);
        let parsed = verify_simulated_quote(&q).unwrap();
        assert_eq!(parsed.report_data, rd);
        assert_eq!(parsed.measurements, *provider().measurements());
        // The generic TDX reader finds the same report_data.
        assert_eq!(tdx_report_data(&q).unwrap(), rd);
    }

    #[test]
    fn any_changed_byte_of_a_simulated_quote_is_detected() {
        let q = provider().quote_bytes(&[1u8; 64]);
        for i in [0usize, 30, 200, 570, 631, 640, 710] {
            let mut bad = q.clone();
            bad[i] ^= 0x01;
            assert!(verify_simulated_quote(&bad).is_err(), "byte {i} flipped");
        }
    }

    #[test]
    fn a_quote_re_signed_with_another_key_is_refused() {
        let mut q = provider().quote_bytes(&[1u8; 64]);
        let other = SigningKey::from_bytes(&[9u8; 32]);
        let sig = other.sign(&q[..SIGNED_LEN]);
        q[636..700].copy_from_slice(&sig.to_bytes());
        q[700..732].copy_from_slice(other.verifying_key().as_bytes());
        assert!(matches!(
            verify_simulated_quote(&q),
            Err(QuoteError::SignatureInvalid(_))
        ));
    }

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

    #[tokio::test]
    async fn none_provider_records_report_data_without_a_quote() {
        let tee = NoQuoteProvider.quote(&[3u8; 64]).await.unwrap();
        assert_eq!(tee.provider, "none");
        assert!(tee.quote.is_empty());
        assert_eq!(tee.report_data, hex::encode([3u8; 64]));
    }
}
