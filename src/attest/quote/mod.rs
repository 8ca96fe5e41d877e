//! TEE quote providers: `simulated`, `dstack`, `none`, behind one [`QuoteProvider`] trait.
//!
//! A provider turns the 64-byte `report_data` (see [`crate::attest::report_data`]) into a
//! [`Tee`] record for `predicate.tee`. One file per concern:
//! - [`simulated`]: the `simulated` provider (the default) and its quote format;
//! - [`tdx`]: reading Intel TDX quotes;
//! - [`dstack`]: the dstack guest-agent client, and the replay of its event log;
//! - [`pccs`]: fetching a quote's collateral from a PCCS at signing time;
//! - `none`, in this file: no quote; `tee.quote` is empty and `report_data` is still recorded.

pub mod dstack;
pub mod pccs;
pub mod simulated;
pub mod tdx;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::statement::Tee;
use crate::config::{AttestSettings, QuoteProviderKind};

pub use dstack::{
    replay_rtmr, DstackEndpoint, DstackQuoteProvider, EventLogEntry, Replay,
    DSTACK_RUNTIME_EVENT_TYPE, DSTACK_SIMULATOR_ENV, DSTACK_SOCKETS, DSTACK_TIMEOUT,
};
pub use simulated::{
    simulator_verifying_key, verify_simulated_quote, SimulatedMeasurements, SimulatedQuote,
    SimulatedQuoteProvider, SIMULATED_QUOTE_LEN,
};
pub use tdx::{
    format_rfc3339, is_simulated, parse_collateral, parse_root_ca, tdx_measurements,
    tdx_report_data, verify_dcap, Collateral, DcapReport, TcbPolicy, TeeType, TCB_STATUSES,
};

/// `tee.provider` of the simulated provider.
pub const PROVIDER_SIMULATED: &str = "simulated";
/// `tee.provider` of the dstack provider.
pub const PROVIDER_DSTACK: &str = "dstack";
/// `tee.provider` of the none provider.
pub const PROVIDER_NONE: &str = "none";

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
    /// A simulated quote was given where an Intel-signed one is needed.
    #[error("SIMULATED quote: signed by the published simulator key, not by an Intel quoting enclave; it proves nothing about hardware")]
    NotIntelSigned,
    /// The collateral file is not dcap-qvl collateral JSON, or a date in it is unreadable.
    #[error("collateral unusable: {0}")]
    Collateral(String),
    /// A root CA certificate could not be read.
    #[error("root CA certificate unusable: {0}")]
    RootCa(String),
    /// The collateral had expired at the verification time.
    #[error(
        "collateral expired: the {item} was valid until {next_update}, verification time is {at}"
    )]
    CollateralExpired {
        /// `TCB info` or `QE identity`.
        item: &'static str,
        /// Its `nextUpdate`.
        next_update: String,
        /// The verification time.
        at: String,
    },
    /// The collateral was issued after the verification time.
    #[error("collateral not yet valid: the {item} was issued {issued}, verification time is {at}")]
    CollateralNotYetValid {
        /// `TCB info` or `QE identity`.
        item: &'static str,
        /// Its `issueDate`.
        issued: String,
        /// The verification time.
        at: String,
    },
    /// dcap-qvl refused the quote: a bad signature, a broken or revoked certificate chain, an
    /// expired CRL, a QE identity or TCB info that does not match, a debug TD.
    #[error("DCAP verification failed: {0} (the quote, its certificate chain or the collateral does not verify under the trusted root; a quote changed after signing, such as one whose report_data was patched in afterwards, fails here)")]
    ChainInvalid(String),
    /// The quote verified, but its TCB status is not one the policy accepts.
    #[error("TCB status {status} is not accepted by the TCB policy [{}] (advisories: {})", allowed.join(", "), if advisory_ids.is_empty() { "none".to_string() } else { advisory_ids.join(", ") })]
    TcbRefused {
        /// The quote's TCB status.
        status: String,
        /// Its advisory ids.
        advisory_ids: Vec<String>,
        /// What the policy accepts.
        allowed: Vec<String>,
    },
    /// The agent does not serve `/GetQuote` (a legacy Tappd agent, or not an agent at all).
    #[error("the agent at {endpoint} does not serve POST /GetQuote (404): a legacy Tappd agent (/prpc/Tappd.TdxQuote, dstack < 0.5) is not supported because it hashes report_data instead of quoting it; point attest.dstack_endpoint at a dstack >= 0.5 guest agent (/var/run/dstack.sock)")]
    LegacyTappd {
        /// The endpoint.
        endpoint: String,
    },
    /// Fetching collateral from the PCCS failed.
    #[error("fetching collateral from the PCCS: {0}")]
    Pccs(String),
    /// The event log is not a usable dstack event log.
    #[error("event log unusable: {0}")]
    EventLog(String),
    /// A TCB policy list is invalid.
    #[error("invalid TCB policy: {0}")]
    TcbPolicy(String),
}

/// Produces TEE quotes over a 64-byte `report_data`.
#[async_trait]
pub trait QuoteProvider: Send + Sync {
    /// `simulated` | `dstack` | `none` (the value of `tee.provider`).
    fn kind(&self) -> &'static str;
    /// The `predicate.tee` fields this provider knows before it quotes (labels, policy);
    /// they are bound into report_data (binding v2). A provider's [`Self::quote`] answer
    /// may repeat them with the same values, and add only the quote-side fields
    /// ([`crate::attest::TEE_UNBOUND_FIELDS`]).
    fn bound_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
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
            let policy = TcbPolicy::parse(&settings.tcb_policy)?;
            Arc::new(
                DstackQuoteProvider::new(endpoint)
                    .with_collateral(settings.pccs_url.clone(), policy),
            )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn none_provider_records_report_data_without_a_quote() {
        let tee = NoQuoteProvider.quote(&[3u8; 64]).await.unwrap();
        assert_eq!(tee.provider, "none");
        assert!(tee.quote.is_empty());
        assert_eq!(tee.report_data, hex::encode([3u8; 64]));
    }
}
