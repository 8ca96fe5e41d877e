//! The offline check of an attestation envelope ([`verify_envelope`]).
//!
//! In order, each failing with its own [`VerifyError`]:
//! 1. a signature verifies under the given key over `PAE(payloadType, payload)` (key ids are
//!    hints only);
//! 2. `payloadType` is `application/vnd.in-toto+json`;
//! 3. the verified payload bytes, and nothing else, parse as an in-toto Statement v1 with our
//!    `predicateType` and predicate;
//! 4. `predicate.verifier.id` is the key's id, and the skill's subject digest equals
//!    `predicate.package.tree_sha256`;
//! 5. `predicate.tee.report_data` equals the report_data recomputed from the verified payload
//!    and the given key (see [`crate::attest`] for the formula);
//! 6. the quote: `simulated`: its simulator signature verifies and it binds that
//!    report_data; `dstack`: it is a TDX quote binding that report_data (its Intel signature
//!    chain is **not** checked offline); `none`: there is no quote;
//! 7. with an expected tree digest: the subject digest equals it.

use ed25519_dalek::VerifyingKey;
use serde::Deserialize as _;
use serde_json::Value;

use super::dsse::{DsseError, Envelope, PAYLOAD_TYPE_IN_TOTO};
use super::keys;
use super::quote::{self, QuoteError};
use super::statement::{Statement, PREDICATE_TYPE, STATEMENT_TYPE};
use crate::digest::Sha256Digest;

/// What the quote check established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteCheck {
    /// A simulated quote: simulator signature and report_data binding checked. Not hardware.
    Simulated,
    /// A dstack TDX quote: report_data binding checked, signature chain not checked.
    Dstack,
    /// No quote.
    None,
}

/// A verified attestation.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The statement, parsed from the verified payload bytes.
    pub statement: Statement,
    /// The key id of the key that verified.
    pub key_id: String,
    /// What the quote check established.
    pub quote: QuoteCheck,
    /// Whether the package digest was compared with an expected one.
    pub package_checked: bool,
    /// Human summary, one line per check (what was verified and what was not).
    pub summary: Vec<String>,
}

/// Why an attestation is invalid. One variant per reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The envelope carries no signature.
    #[error("no signatures in the envelope")]
    NoSignatures,
    /// The payload is not base64.
    #[error("payload is not valid base64")]
    PayloadEncoding,
    /// The signature does not match the payload (changed after signing).
    #[error("bad signature: the envelope was modified after signing (key {keyid})")]
    BadSignature {
        /// The given key's id.
        keyid: String,
    },
    /// Signed by another key.
    #[error("wrong key: signed by key id(s) [{signed_by}], not by the given key {expected}")]
    WrongKey {
        /// The key ids the signatures name.
        signed_by: String,
        /// The given key's id.
        expected: String,
    },
    /// `payloadType` is not in-toto.
    #[error("wrong payload type {found:?}, want {PAYLOAD_TYPE_IN_TOTO:?}")]
    WrongPayloadType {
        /// What it is.
        found: String,
    },
    /// The verified payload is not JSON.
    #[error("payload is not JSON: {0}")]
    PayloadNotJson(String),
    /// `_type` is not in-toto Statement v1.
    #[error("wrong statement type {found:?}, want {STATEMENT_TYPE:?}")]
    WrongStatementType {
        /// What it is.
        found: String,
    },
    /// `predicateType` is not ours.
    #[error("wrong predicate type {found:?}, want {PREDICATE_TYPE:?}")]
    WrongPredicateType {
        /// What it is.
        found: String,
    },
    /// The statement does not have the predicate's shape.
    #[error("malformed statement: {0}")]
    MalformedStatement(String),
    /// `predicate.verifier.id` is not the signing key's id.
    #[error("verifier id {found:?} is not the signing key's id {expected}")]
    VerifierIdMismatch {
        /// What the statement says.
        found: String,
        /// The key's id.
        expected: String,
    },
    /// The subject's digest is not `predicate.package.tree_sha256` (or the subject is missing).
    #[error("subject {name:?} does not carry the package tree digest {tree}")]
    SubjectMismatch {
        /// The skill name.
        name: String,
        /// `predicate.package.tree_sha256`.
        tree: String,
    },
    /// No `predicate.tee`.
    #[error("statement has no predicate.tee (not bound to a quote)")]
    MissingTee,
    /// `tee.report_data` is not the report_data of this statement and key.
    #[error("report_data mismatch: the quote binds another statement or key (recorded {recorded}, recomputed {expected})")]
    ReportDataMismatch {
        /// `tee.report_data`.
        recorded: String,
        /// Recomputed.
        expected: String,
    },
    /// The quote's own REPORTDATA differs from the recorded/recomputed report_data.
    #[error("the quote binds report_data {in_quote}, not this statement's {expected}")]
    QuoteReportDataMismatch {
        /// REPORTDATA inside the quote.
        in_quote: String,
        /// Recomputed.
        expected: String,
    },
    /// The quote is not hex or not a quote of the expected shape.
    #[error("malformed quote: {0}")]
    QuoteMalformed(String),
    /// The simulated quote's simulator signature does not verify.
    #[error("quote signature invalid: {0}")]
    QuoteSignatureInvalid(String),
    /// A `tee.provider` this verifier does not know.
    #[error("unknown quote provider {0:?}")]
    UnknownQuoteProvider(String),
    /// `none` provider but a quote is present (or the reverse).
    #[error("tee.provider is \"none\" but a quote is present")]
    UnexpectedQuote,
    /// The package's tree digest differs from the attested one.
    #[error("package digest mismatch: attested {attested}, package has {actual}")]
    PackageDigestMismatch {
        /// The subject digest.
        attested: String,
        /// Recomputed from the package.
        actual: String,
    },
}

impl From<DsseError> for VerifyError {
    fn from(e: DsseError) -> Self {
        match e {
            DsseError::NoSignatures => VerifyError::NoSignatures,
            DsseError::PayloadEncoding => VerifyError::PayloadEncoding,
            DsseError::BadSignature { keyid } => VerifyError::BadSignature { keyid },
            DsseError::WrongKey {
                signed_by,
                expected,
            } => VerifyError::WrongKey {
                signed_by,
                expected,
            },
        }
    }
}

fn quote_error(e: QuoteError) -> VerifyError {
    match e {
        QuoteError::SignatureInvalid(why) => VerifyError::QuoteSignatureInvalid(why.into()),
        other => VerifyError::QuoteMalformed(other.to_string()),
    }
}

/// Verifies `envelope` under `key` (steps in the module docs); with `expected_tree`, also
/// that the attested skill is that tree.
pub fn verify_envelope(
    envelope: &Envelope,
    key: &VerifyingKey,
    expected_tree: Option<&Sha256Digest>,
) -> Result<Verified, VerifyError> {
    let key_id = keys::key_id(key);
    let mut summary = Vec::new();

    // 1-2. Signature first: until it verifies, nothing in the envelope is trusted.
    let payload = envelope.verify(key)?;
    if envelope.payload_type != PAYLOAD_TYPE_IN_TOTO {
        return Err(VerifyError::WrongPayloadType {
            found: envelope.payload_type.clone(),
        });
    }
    summary.push(format!("signature: ok (Ed25519, key id {key_id})"));

    // 3. From here on only the verified bytes are read.
    let value: Value =
        serde_json::from_slice(&payload).map_err(|e| VerifyError::PayloadNotJson(e.to_string()))?;
    let text_at = |k: &str| {
        value
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    if text_at("_type") != STATEMENT_TYPE {
        return Err(VerifyError::WrongStatementType {
            found: text_at("_type"),
        });
    }
    if text_at("predicateType") != PREDICATE_TYPE {
        return Err(VerifyError::WrongPredicateType {
            found: text_at("predicateType"),
        });
    }
    // Deserialize from a borrow: no copy of the payload tree.
    let statement = Statement::deserialize(&value)
        .map_err(|e| VerifyError::MalformedStatement(e.to_string()))?;
    summary.push("statement: ok (in-toto Statement v1, skill-verifier verification v1)".into());

    // 4. Internal consistency.
    let predicate = &statement.predicate;
    if predicate.verifier.id != key_id {
        return Err(VerifyError::VerifierIdMismatch {
            found: predicate.verifier.id.clone(),
            expected: key_id,
        });
    }
    let tree = predicate.package.tree_sha256;
    let subject_ok = statement.subject.iter().any(|s| {
        s.name == predicate.package.name
            && s.digest.get("sha256").map(|d| d.to_ascii_lowercase()) == Some(tree.to_hex())
    });
    if !subject_ok {
        return Err(VerifyError::SubjectMismatch {
            name: predicate.package.name.clone(),
            tree: tree.to_hex(),
        });
    }

    // 5. report_data binding.
    let tee = predicate.tee.as_ref().ok_or(VerifyError::MissingTee)?;
    let expected_rd = super::report_data_of_value(&value, key);
    let expected_hex = hex::encode(expected_rd);
    if !tee.report_data.eq_ignore_ascii_case(&expected_hex) {
        return Err(VerifyError::ReportDataMismatch {
            recorded: tee.report_data.clone(),
            expected: expected_hex,
        });
    }
    summary.push("report_data binding: ok (statement and key match tee.report_data)".into());

    // 6. The quote.
    let quote_bytes = || {
        hex::decode(&tee.quote).map_err(|_| VerifyError::QuoteMalformed("quote is not hex".into()))
    };
    let quote_rd_mismatch = |in_quote: [u8; 64]| VerifyError::QuoteReportDataMismatch {
        in_quote: hex::encode(in_quote),
        expected: hex::encode(expected_rd),
    };
    let quote = match tee.provider.as_str() {
        quote::PROVIDER_SIMULATED => {
            let sim = quote::verify_simulated_quote(&quote_bytes()?).map_err(quote_error)?;
            if sim.report_data != expected_rd {
                return Err(quote_rd_mismatch(sim.report_data));
            }
            summary.push(format!(
                "quote: SIMULATED (not TEE hardware; simulator signature ok, binds report_data; MRTD {}…)",
                &hex::encode(sim.measurements.mr_td)[..16]
            ));
            QuoteCheck::Simulated
        }
        quote::PROVIDER_DSTACK => {
            let in_quote = quote::tdx_report_data(&quote_bytes()?).map_err(quote_error)?;
            if in_quote != expected_rd {
                return Err(quote_rd_mismatch(in_quote));
            }
            summary.push(
                "quote: dstack TDX (binds report_data; Intel signature chain NOT verified offline, use a DCAP verifier such as dcap-qvl)".into(),
            );
            QuoteCheck::Dstack
        }
        quote::PROVIDER_NONE => {
            if !tee.quote.is_empty() {
                return Err(VerifyError::UnexpectedQuote);
            }
            summary.push("quote: none (no TEE evidence)".into());
            QuoteCheck::None
        }
        other => return Err(VerifyError::UnknownQuoteProvider(other.to_string())),
    };

    // 7. The package.
    let package_checked = match expected_tree {
        Some(actual) if *actual != tree => {
            return Err(VerifyError::PackageDigestMismatch {
                attested: tree.to_hex(),
                actual: actual.to_hex(),
            })
        }
        Some(_) => {
            summary.push(format!("package digest: ok (tree sha256 {tree})"));
            true
        }
        None => {
            summary.push("package digest: not checked (no package given)".into());
            false
        }
    };

    Ok(Verified {
        statement,
        key_id,
        quote,
        package_checked,
        summary,
    })
}
