//! The offline check of an attestation envelope ([`verify_envelope`], and
//! [`verify_envelope_with`] for a key set and a relying party's requirements).
//!
//! In order, each failing with its own [`VerifyError`]:
//! 1. a signature verifies under one of the given keys over `PAE(payloadType, payload)` (key
//!    ids are hints only: every key is tried against every signature);
//! 2. `payloadType` is `application/vnd.in-toto+json`;
//! 3. the verified payload bytes, and nothing else, parse as an in-toto Statement v1 with our
//!    `predicateType` and predicate;
//! 4. `predicate.verifier.id` is the key's id, and the skill's subject digest equals
//!    `predicate.package.tree_sha256`;
//! 5. `predicate.tee.report_data` equals the report_data recomputed from the verified payload
//!    and the key under the binding the statement declares (`tee.binding`: v2, or v1 when
//!    absent; see [`crate::attest`] for the formulas);
//! 6. the quote: `simulated`: its simulator signature verifies and it binds that
//!    report_data; `dstack`: it is a TDX quote binding that report_data, and with collateral
//!    (`tee.collateral`, or given by the relying party) Intel's chain, the CRLs and the TCB
//!    status under the TCB policy are checked by dcap-qvl at `job.finished_at` (or the given
//!    time); without collateral the chain is reported as not checked; `none`: there is no
//!    quote;
//! 7. expected measurements (MRTD, RTMRs) equal the quote's, and with an event log RTMR3 is
//!    replayed from it and equals the quote's RTMR3;
//! 8. with an expected tree digest: the subject digest equals it;
//! 9. the relying party's requirements ([`Requirements`]): verdict, policy digest, isolation
//!    runtime, a hardware TEE. Each is read from the verified statement by its contract name;
//!    an absent field fails the requirement with a reason saying so.

use ed25519_dalek::VerifyingKey;
use serde::Deserialize as _;
use serde_json::Value;

use super::dsse::{DsseError, Envelope, PAYLOAD_TYPE_IN_TOTO};
use super::keys;
use super::quote::{self, Collateral, DcapReport, QuoteError, TcbPolicy};
use super::statement::{Statement, PREDICATE_TYPE, STATEMENT_TYPE};
use super::Binding;
use crate::digest::Sha256Digest;

/// What the quote check established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuoteCheck {
    /// A simulated quote: simulator signature and report_data binding checked. Not hardware.
    Simulated,
    /// A dstack TDX quote: report_data binding checked, signature chain not checked (no
    /// collateral).
    Dstack,
    /// A dstack TDX quote: report_data binding, Intel's chain and the TCB status checked.
    DstackVerified,
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
    /// What DCAP verification of the quote found, when it ran.
    pub dcap: Option<DcapReport>,
    /// The verified statement as JSON (every field, known to this version or not).
    pub value: Value,
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
    /// `predicate.tee.binding` names a binding this verifier does not know.
    #[error("unknown report_data binding {0}")]
    UnknownBinding(String),
    /// The quote's DCAP verification failed (chain, CRLs, collateral validity, signature).
    #[error("quote not verified: {0}")]
    QuoteNotVerified(String),
    /// The quote verified but its TCB status is outside the TCB policy.
    #[error("quote refused: {0}")]
    TcbRefused(String),
    /// A measurement register differs from the expected value.
    #[error("{register} mismatch: expected {expected}, the quote has {actual}")]
    MeasurementMismatch {
        /// `MRTD` or `RTMRn`.
        register: String,
        /// What the relying party expects.
        expected: String,
        /// What the quote carries.
        actual: String,
    },
    /// The event log is unusable or does not replay to the quote's RTMR3.
    #[error("event log: {0}")]
    EventLog(String),
    /// The replayed RTMR3 is not the quote's RTMR3.
    #[error(
        "RTMR3 replay mismatch: the event log replays to {replayed}, the quote has {in_quote}"
    )]
    Rtmr3Mismatch {
        /// Replayed from `tee.event_log`.
        replayed: String,
        /// In the quote.
        in_quote: String,
    },
    /// A relying-party requirement is not met (`--require-verdict`, `--expect-policy`,
    /// `--require-isolation`, `--require-tee`).
    #[error("requirement {requirement} not met: {reason}")]
    RequirementNotMet {
        /// The requirement, as the flag and value.
        requirement: String,
        /// What the statement says instead (or that the field is absent).
        reason: String,
    },
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

/// What a relying party requires beyond a valid attestation (all optional; module docs).
#[derive(Debug, Clone, Default)]
pub struct Requirements {
    /// `predicate.verdict.status` must be this (e.g. `PASSED`).
    pub verdict: Option<String>,
    /// `predicate.policy.sha256` must be this (hex, case-insensitive).
    pub policy_sha256: Option<String>,
    /// `predicate.environment.isolation.runtime` must be this (e.g. `runsc`).
    pub isolation: Option<String>,
    /// The quote must come from TEE hardware: `simulated` and `none` are refused, and a
    /// dstack quote must have passed DCAP verification (collateral present).
    pub tee: bool,
}

/// Options of [`verify_envelope_with`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The skill's tree digest, recomputed from the package.
    pub expected_tree: Option<Sha256Digest>,
    /// The time (Unix seconds) the quote's chain is checked at; default the attestation's
    /// `job.finished_at`.
    pub at: Option<i64>,
    /// A root CA (DER) to trust instead of Intel's.
    pub root_ca_der: Option<Vec<u8>>,
    /// The TCB policy; default the attested `tee.tcb_policy`, else `UpToDate` only.
    pub tcb_policy: Option<TcbPolicy>,
    /// Collateral for a dstack quote whose attestation carries none.
    pub collateral: Option<Collateral>,
    /// Expected MRTD.
    pub expect_mrtd: Option<[u8; 48]>,
    /// Expected RTMRs, by index 0-3.
    pub expect_rtmr: Vec<(usize, [u8; 48])>,
    /// Relying-party requirements.
    pub require: Requirements,
}

/// Verifies `envelope` under `key` (steps in the module docs); with `expected_tree`, also
/// that the attested skill is that tree.
pub fn verify_envelope(
    envelope: &Envelope,
    key: &VerifyingKey,
    expected_tree: Option<&Sha256Digest>,
) -> Result<Verified, VerifyError> {
    verify_envelope_with(
        envelope,
        std::slice::from_ref(key),
        &VerifyOptions {
            expected_tree: expected_tree.copied(),
            ..VerifyOptions::default()
        },
    )
}

/// Finds the key of `keys` that verifies `envelope`; the error names the likelier cause.
fn verify_with_any<'k>(
    envelope: &Envelope,
    keys: &'k [VerifyingKey],
) -> Result<(Vec<u8>, &'k VerifyingKey), VerifyError> {
    let mut first_err = None;
    for key in keys {
        match envelope.verify(key) {
            Ok(payload) => return Ok((payload, key)),
            // A bad signature under a key the envelope names beats "wrong key".
            Err(e @ DsseError::BadSignature { .. }) => first_err = Some(e),
            Err(e) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
    }
    Err(first_err.unwrap_or(DsseError::NoSignatures).into())
}

fn parse_rfc3339(text: &str) -> Option<i64> {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Verifies `envelope` under any key of `keys` with a relying party's options (module docs).
pub fn verify_envelope_with(
    envelope: &Envelope,
    keys: &[VerifyingKey],
    opts: &VerifyOptions,
) -> Result<Verified, VerifyError> {
    let mut summary = Vec::new();

    // 1-2. Signature first: until it verifies, nothing in the envelope is trusted.
    let (payload, key) = verify_with_any(envelope, keys)?;
    let key_id = keys::key_id(key);
    if envelope.payload_type != PAYLOAD_TYPE_IN_TOTO {
        return Err(VerifyError::WrongPayloadType {
            found: envelope.payload_type.clone(),
        });
    }
    summary.push(if keys.len() > 1 {
        format!(
            "signature: ok (Ed25519, key id {key_id}, one of {} keys)",
            keys.len()
        )
    } else {
        format!("signature: ok (Ed25519, key id {key_id})")
    });

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
    let binding = Binding::of_value(&value).map_err(VerifyError::UnknownBinding)?;
    let expected_rd = super::report_data_bound(&value, key, binding);
    let expected_hex = hex::encode(expected_rd);
    if !tee.report_data.eq_ignore_ascii_case(&expected_hex) {
        return Err(VerifyError::ReportDataMismatch {
            recorded: tee.report_data.clone(),
            expected: expected_hex,
        });
    }
    summary.push(match binding {
        Binding::V1 => {
            "report_data binding: ok (v1: statement and key match tee.report_data; tee fields not bound)".into()
        }
        Binding::V2 => {
            "report_data binding: ok (v2: statement, key and every pre-quote tee field match tee.report_data)".into()
        }
    });

    // 6. The quote.
    let quote_bytes = || {
        hex::decode(&tee.quote).map_err(|_| VerifyError::QuoteMalformed("quote is not hex".into()))
    };
    let quote_rd_mismatch = |in_quote: [u8; 64]| VerifyError::QuoteReportDataMismatch {
        in_quote: hex::encode(in_quote),
        expected: hex::encode(expected_rd),
    };
    let mut dcap = None;
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
            let bytes = quote_bytes()?;
            let in_quote = quote::tdx_report_data(&bytes).map_err(quote_error)?;
            if in_quote != expected_rd {
                return Err(quote_rd_mismatch(in_quote));
            }
            let attested_collateral = match tee.extra.get("collateral") {
                None | Some(Value::Null) => None,
                Some(c) => Some(
                    Collateral::deserialize(c)
                        .map_err(|e| VerifyError::QuoteMalformed(format!("tee.collateral: {e}")))?,
                ),
            };
            match attested_collateral.as_ref().or(opts.collateral.as_ref()) {
                Some(collateral) => {
                    let (at, at_source) = match opts.at {
                        Some(at) => (at, "the given time"),
                        None => (
                            parse_rfc3339(&predicate.job.finished_at).ok_or_else(|| {
                                VerifyError::MalformedStatement(format!(
                                    "job.finished_at {:?} is not RFC 3339",
                                    predicate.job.finished_at
                                ))
                            })?,
                            "job.finished_at",
                        ),
                    };
                    let policy = match &opts.tcb_policy {
                        Some(p) => p.clone(),
                        None => match tee.extra.get("tcb_policy").and_then(Value::as_array) {
                            Some(list) => {
                                let names: Vec<&str> =
                                    list.iter().filter_map(Value::as_str).collect();
                                TcbPolicy::parse(&names).map_err(|e| {
                                    VerifyError::MalformedStatement(format!("tee.tcb_policy: {e}"))
                                })?
                            }
                            None => TcbPolicy::default(),
                        },
                    };
                    let report =
                        quote::verify_dcap(&bytes, collateral, at, opts.root_ca_der.as_deref())
                            .map_err(|e| VerifyError::QuoteNotVerified(e.to_string()))?;
                    policy
                        .check(&report)
                        .map_err(|e| VerifyError::TcbRefused(e.to_string()))?;
                    summary.push(format!(
                        "quote: dstack TDX, DCAP verified at {} ({at_source}) against {}; TCB {} accepted by [{}]; advisories: {}; binds report_data",
                        quote::format_rfc3339(at),
                        if opts.root_ca_der.is_some() { "a given root (NOT Intel's)" } else { "Intel's root" },
                        report.tcb_status,
                        policy.allowed().join(", "),
                        if report.advisory_ids.is_empty() { "none".to_string() } else { report.advisory_ids.join(", ") },
                    ));
                    if attested_collateral.is_none() {
                        summary.push(
                            "collateral: given by the relying party (the attestation carries none)"
                                .into(),
                        );
                    }
                    dcap = Some(report);
                    QuoteCheck::DstackVerified
                }
                None => {
                    summary.push(
                        "quote: dstack TDX (binds report_data; Intel signature chain NOT verified offline: the attestation carries no collateral; give --collateral)".into(),
                    );
                    QuoteCheck::Dstack
                }
            }
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

    // 7. Measurements and the event log.
    check_measurements(tee, &quote_bytes, quote, opts, &mut summary)?;

    // 8. The package.
    let package_checked = match &opts.expected_tree {
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

    // 9. The relying party's requirements.
    check_requirements(&value, quote, &opts.require, &mut summary)?;

    Ok(Verified {
        statement,
        key_id,
        quote,
        package_checked,
        dcap,
        value,
        summary,
    })
}

/// Step 7: expected MRTD/RTMRs, and the RTMR3 replay when an event log is present.
fn check_measurements(
    tee: &super::statement::Tee,
    quote_bytes: &dyn Fn() -> Result<Vec<u8>, VerifyError>,
    check: QuoteCheck,
    opts: &VerifyOptions,
    summary: &mut Vec<String>,
) -> Result<(), VerifyError> {
    let event_log = tee
        .extra
        .get("event_log")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty());
    let wants_measurements = opts.expect_mrtd.is_some() || !opts.expect_rtmr.is_empty();
    if check == QuoteCheck::None {
        if wants_measurements {
            return Err(VerifyError::QuoteMalformed(
                "expected measurements given, but the attestation has no quote".into(),
            ));
        }
        return Ok(());
    }
    if !wants_measurements && event_log.is_none() {
        return Ok(());
    }
    let (mr_td, rtmr) = quote::tdx_measurements(&quote_bytes()?).map_err(quote_error)?;
    let mismatch = |register: String, expected: &[u8; 48], actual: &[u8; 48]| {
        VerifyError::MeasurementMismatch {
            register,
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        }
    };
    if let Some(want) = &opts.expect_mrtd {
        if *want != mr_td {
            return Err(mismatch("MRTD".into(), want, &mr_td));
        }
        summary.push("MRTD: ok (the expected value)".into());
    }
    for (i, want) in &opts.expect_rtmr {
        let actual = rtmr
            .get(*i)
            .ok_or_else(|| VerifyError::QuoteMalformed(format!("RTMR{i} does not exist (0-3)")))?;
        if want != actual {
            return Err(mismatch(format!("RTMR{i}"), want, actual));
        }
        summary.push(format!("RTMR{i}: ok (the expected value)"));
    }
    if let Some(log) = event_log {
        let replay =
            quote::replay_rtmr(log, 3).map_err(|e| VerifyError::EventLog(e.to_string()))?;
        if replay.value != rtmr[3] {
            return Err(VerifyError::Rtmr3Mismatch {
                replayed: hex::encode(replay.value),
                in_quote: hex::encode(rtmr[3]),
            });
        }
        summary.push(format!(
            "event log: ok (RTMR3 replayed from {} events, {} runtime events checked against their content)",
            replay.events, replay.runtime_events_checked
        ));
    }
    Ok(())
}

/// Step 9: the relying party's requirements, read from the verified statement JSON.
fn check_requirements(
    value: &Value,
    quote: QuoteCheck,
    require: &Requirements,
    summary: &mut Vec<String>,
) -> Result<(), VerifyError> {
    let at = |path: &[&str]| -> Option<&Value> {
        path.iter()
            .try_fold(value.get("predicate")?, |v, k| v.get(*k))
    };
    let field = |path: &[&str]| -> Result<String, String> {
        match at(path) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(format!(
                "predicate.{} is {other}, not a string",
                path.join(".")
            )),
            None => Err(format!(
                "the statement has no predicate.{} (made by a verifier that does not record it)",
                path.join(".")
            )),
        }
    };
    let fail = |requirement: String, reason: String| VerifyError::RequirementNotMet {
        requirement,
        reason,
    };
    if let Some(want) = &require.verdict {
        let req = format!("--require-verdict {want}");
        let got = field(&["verdict", "status"]).map_err(|r| fail(req.clone(), r))?;
        if !got.eq_ignore_ascii_case(want) {
            let reasons = at(&["verdict", "reasons"])
                .and_then(Value::as_array)
                .map(|rs| {
                    rs.iter()
                        .filter_map(|r| r.get("code").and_then(Value::as_str))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .filter(|s| !s.is_empty())
                .map(|s| format!(" (reasons: {s})"))
                .unwrap_or_default();
            return Err(fail(req, format!("the verdict is {got}{reasons}")));
        }
        summary.push(format!("verdict: ok ({got})"));
    }
    if let Some(want) = &require.policy_sha256 {
        let req = format!("--expect-policy {want}");
        let got = field(&["policy", "sha256"]).map_err(|r| fail(req.clone(), r))?;
        if !got.eq_ignore_ascii_case(want) {
            return Err(fail(req, format!("the policy sha256 is {got}")));
        }
        summary.push(format!("policy: ok (sha256 {got})"));
    }
    if let Some(want) = &require.isolation {
        let req = format!("--require-isolation {want}");
        let got =
            field(&["environment", "isolation", "runtime"]).map_err(|r| fail(req.clone(), r))?;
        if got != *want {
            return Err(fail(req, format!("the isolation runtime is {got}")));
        }
        summary.push(format!("isolation: ok ({got})"));
    }
    if require.tee {
        let req = "--require-tee".to_string();
        match quote {
            QuoteCheck::DstackVerified => summary.push("tee: ok (DCAP-verified TDX quote)".into()),
            QuoteCheck::Simulated => {
                return Err(fail(req, "the quote is SIMULATED, not TEE hardware".into()))
            }
            QuoteCheck::None => return Err(fail(req, "there is no quote (provider none)".into())),
            QuoteCheck::Dstack => {
                return Err(fail(
                    req,
                    "the dstack quote's Intel chain was not verified (no collateral in the attestation; give --collateral)".into(),
                ))
            }
        }
    }
    Ok(())
}
