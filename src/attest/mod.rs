//! The `attest` stage: the facts of a run in, a signed, quote-bound, independently verifiable
//! DSSE envelope out; and the offline checks of one.
//!
//! The public items below are the interface other stages rely on: add freely, rename none.
//!
//! - [`statement`]: the in-toto Statement v1 and the predicate (field names are a contract).
//! - [`dsse`]: the envelope, PAE, signing and verification.
//! - [`keys`]: the Ed25519 [`keys::Signer`], key ids, key files.
//! - [`quote`]: the [`quote::QuoteProvider`] trait and its `simulated`, `dstack`, `none`
//!   providers; DCAP verification of TDX/SGX quotes; the PCCS client; the RTMR3 replay.
//! - [`verify`]: the offline check of an envelope ([`verify::verify_envelope`]).
//!
//! # Canonical JSON
//! The DSSE payload is the statement as *canonical JSON* ([`canonical_json`]): UTF-8, no
//! whitespace, object keys sorted by their UTF-8 bytes, strings escaped as `serde_json`
//! escapes them (`"`, `\`, control characters; everything else literal), numbers as
//! `serde_json` prints them (integers in decimal, floats in the shortest form that reads back
//! exactly, e.g. `1.0`). The same statement always gives the same bytes.
//!
//! # report_data
//! The 64 bytes a TEE quote binds ([`report_data`]). Two binding versions exist; the
//! statement says which in `predicate.tee.binding` (absent: v1).
//!
//! ```text
//! v2 (what this version signs):
//! report_data = SHA-512( "skill-verifier report_data v2" || 0x00
//!                        || SHA-256(canonical_json(statement with predicate.tee cut to
//!                                                  its bound fields))
//!                        || Ed25519 public key (32 raw bytes) )
//! v1 (attestations made before v2; still verified):
//! report_data = SHA-512( "skill-verifier report_data v1" || 0x00
//!                        || SHA-256(canonical_json(statement without predicate.tee))
//!                        || Ed25519 public key (32 raw bytes) )
//! ```
//!
//! The *bound* tee fields are all of `predicate.tee` except those that come back with the
//! quote ([`TEE_UNBOUND_FIELDS`]: `quote`, `report_data`, `event_log`, `vm_config`,
//! `collateral`). So `provider`, `binding`, `tcb_policy`, the simulator's labels and any
//! field added later are bound the moment they exist; the quote-side fields are checked
//! instead (the quote by its signature and REPORTDATA, the event log by RTMR3 replay, the
//! collateral by the chain). "Without `predicate.tee`" means only the `tee` key is removed
//! from `predicate`; every other field, known or not, stays. So the quote commits to every
//! attested fact and to the key that signs them; a verifier recomputes it from the verified
//! payload and the key it trusts. The tag separates this hash from any other use of the same
//! inputs; the fields after it have fixed lengths, so no further framing is needed.

pub mod dsse;
pub mod keys;
pub mod quote;
pub mod statement;
pub mod verify;

use ed25519_dalek::VerifyingKey;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

use dsse::Envelope;
use keys::Signer;
use quote::{QuoteError, QuoteProvider};
use statement::{Predicate, Statement, Subject, PREDICATE_TYPE, STATEMENT_TYPE};

/// Domain-separation tag of the v1 binding (followed by one 0x00 byte).
pub const REPORT_DATA_TAG: &[u8] = b"skill-verifier report_data v1";
/// Domain-separation tag of the v2 binding (followed by one 0x00 byte).
pub const REPORT_DATA_TAG_V2: &[u8] = b"skill-verifier report_data v2";
/// `predicate.tee.binding` of the v2 binding.
pub const BINDING_V2: &str = "v2";
/// The `predicate.tee` fields that come back with the quote: checked, not bound (module docs).
pub const TEE_UNBOUND_FIELDS: [&str; 5] = [
    "quote",
    "report_data",
    "event_log",
    "vm_config",
    "collateral",
];

/// Which report_data formula binds a statement (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// `predicate.tee` left out entirely.
    V1,
    /// `predicate.tee` cut to its bound fields.
    V2,
}

impl Binding {
    /// The binding a statement value declares in `predicate.tee.binding` (absent: v1);
    /// `Err` with the unknown name.
    pub fn of_value(statement: &Value) -> Result<Binding, String> {
        match statement
            .get("predicate")
            .and_then(|p| p.get("tee"))
            .and_then(|t| t.get("binding"))
        {
            None => Ok(Binding::V1),
            Some(Value::String(s)) if s == BINDING_V2 => Ok(Binding::V2),
            Some(other) => Err(other.to_string()),
        }
    }
}

/// Why a statement could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The statement's `_type` or `predicateType` is not ours.
    #[error("refusing to sign: {field} is {found:?}, want {want:?}")]
    StatementType {
        /// `_type` or `predicateType`.
        field: &'static str,
        /// What it holds.
        found: String,
        /// What it must hold.
        want: &'static str,
    },
    /// Serializing the statement failed.
    #[error("serializing the statement: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The quote provider failed.
    #[error("getting a TEE quote: {0}")]
    Quote(#[from] QuoteError),
    /// The provider returned a record for other report_data than requested.
    #[error("the quote provider returned report_data for a different statement")]
    QuoteReportData,
    /// The provider returned a tee field that was not bound before the quote was requested.
    #[error("the quote provider returned tee field {0:?}, which report_data does not bind")]
    UnboundTeeField(String),
}

impl Statement {
    /// A statement for `predicate`: the fixed `_type` and `predicateType`, and the subjects
    /// derived from `predicate.package`: `{name, {"sha256": tree digest}}` and, for an
    /// archive, `{"<name>.archive", {"sha256": archive digest}}`.
    pub fn new(predicate: Predicate) -> Statement {
        let digest = |d: &crate::digest::Sha256Digest| {
            std::collections::BTreeMap::from([("sha256".to_string(), d.to_hex())])
        };
        let mut subject = vec![Subject {
            name: predicate.package.name.clone(),
            digest: digest(&predicate.package.tree_sha256),
        }];
        if let Some(archive) = &predicate.package.archive_sha256 {
            subject.push(Subject {
                name: format!("{}.archive", predicate.package.name),
                digest: digest(archive),
            });
        }
        Statement {
            type_: STATEMENT_TYPE.to_string(),
            subject,
            predicate_type: PREDICATE_TYPE.to_string(),
            predicate,
        }
    }
}

/// Canonical JSON bytes of `value` (see the module docs).
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    write_canonical(value, &mut out);
    out
}

/// Canonical JSON of a statement value with `predicate.tee` left out, written without
/// copying the value.
fn canonical_json_without_tee(statement: &Value) -> Vec<u8> {
    canonical_json_bound(statement, Binding::V1)
}

/// Canonical JSON of a statement value as `binding` hashes it: `predicate.tee` left out (v1)
/// or cut to its bound fields (v2).
fn canonical_json_bound(statement: &Value, binding: Binding) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    match statement {
        Value::Object(map) => write_object(map, &mut out, |key, value, out| {
            write_string(key, out);
            out.push(b':');
            match value {
                Value::Object(predicate) if key == "predicate" => {
                    write_object(predicate, out, |k, v, out| match (k, binding, v) {
                        ("tee", Binding::V1, _) => {}
                        ("tee", Binding::V2, Value::Object(tee)) => {
                            write_string(k, out);
                            out.push(b':');
                            write_object(tee, out, |tk, tv, out| {
                                if !TEE_UNBOUND_FIELDS.contains(&tk) {
                                    write_member(tk, tv, out);
                                }
                            });
                        }
                        _ => write_member(k, v, out),
                    })
                }
                other => write_canonical(other, out),
            }
        }),
        other => write_canonical(other, &mut out),
    }
    out
}

fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, out, write_member),
    }
}

/// Writes `{...}` with the members in sorted key order; `member` writes one member (or
/// nothing, to leave it out). Commas are fixed up afterwards so skipped members leave none.
fn write_object(
    map: &serde_json::Map<String, Value>,
    out: &mut Vec<u8>,
    mut member: impl FnMut(&str, &Value, &mut Vec<u8>),
) {
    // Sort explicitly: serde_json's map order depends on its `preserve_order` feature,
    // which any crate in the build could switch on.
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push(b'{');
    let mut first = true;
    for (k, v) in entries {
        let before = out.len();
        if !first {
            out.push(b',');
        }
        let after_comma = out.len();
        member(k, v, out);
        if out.len() == after_comma {
            out.truncate(before); // member skipped: drop its comma
        } else {
            first = false;
        }
    }
    out.push(b'}');
}

/// `"key":value`.
fn write_member(key: &str, value: &Value, out: &mut Vec<u8>) {
    write_string(key, out);
    out.push(b':');
    write_canonical(value, out);
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    serde_json::to_writer(&mut *out, s).expect("writing a string to a Vec cannot fail");
}

/// SHA-256 of the canonical JSON of a statement value with `predicate.tee` removed.
pub fn statement_digest_of_value(statement: &Value) -> [u8; 32] {
    Sha256::digest(canonical_json_without_tee(statement)).into()
}

/// The v1 report_data over a statement given as a JSON value (what a verifier has: the
/// parsed verified payload, unknown fields included).
pub fn report_data_of_value(statement: &Value, key: &VerifyingKey) -> [u8; 64] {
    report_data_bound(statement, key, Binding::V1)
}

/// report_data under `binding` over a statement given as a JSON value (module docs).
pub fn report_data_bound(statement: &Value, key: &VerifyingKey, binding: Binding) -> [u8; 64] {
    let (tag, digest) = match binding {
        Binding::V1 => (REPORT_DATA_TAG, statement_digest_of_value(statement)),
        Binding::V2 => (
            REPORT_DATA_TAG_V2,
            Sha256::digest(canonical_json_bound(statement, Binding::V2)).into(),
        ),
    };
    let mut h = Sha512::new();
    h.update(tag);
    h.update([0u8]);
    h.update(digest);
    h.update(key.as_bytes());
    h.finalize().into()
}

/// The v1 report_data for `statement` signed by `key` (module docs). `predicate.tee` does
/// not enter it.
pub fn report_data(statement: &Statement, key: &VerifyingKey) -> [u8; 64] {
    let value = serde_json::to_value(statement).expect("a Statement always serializes");
    report_data_of_value(&value, key)
}

/// Binds and signs a statement: sets `predicate.verifier.id` to the signer's key id, puts
/// the tee fields known before the quote (`provider`, `binding: "v2"` and the provider's
/// [`QuoteProvider::bound_fields`]) into `predicate.tee`, computes the v2 report_data,
/// asks `quotes` for a quote over it, completes `predicate.tee` with what comes back,
/// serializes the statement as canonical JSON and signs it as a DSSE envelope
/// (`application/vnd.in-toto+json`). A provider answer carrying a tee field that was not
/// bound, other than the quote-side fields, is refused.
pub async fn sign_statement(
    mut statement: Statement,
    signer: &Signer,
    quotes: &dyn QuoteProvider,
) -> Result<Envelope, AttestError> {
    if statement.type_ != STATEMENT_TYPE {
        return Err(AttestError::StatementType {
            field: "_type",
            found: statement.type_,
            want: STATEMENT_TYPE,
        });
    }
    if statement.predicate_type != PREDICATE_TYPE {
        return Err(AttestError::StatementType {
            field: "predicateType",
            found: statement.predicate_type,
            want: PREDICATE_TYPE,
        });
    }
    statement.predicate.verifier.id = signer.key_id();
    statement.predicate.tee = None;
    // One JSON value serves both the report_data hash and the payload.
    let mut value = serde_json::to_value(&statement)?;
    let mut bound = quotes.bound_fields();
    bound.insert("provider".into(), quotes.kind().into());
    bound.insert("binding".into(), BINDING_V2.into());
    let predicate = match value.get_mut("predicate").and_then(Value::as_object_mut) {
        Some(predicate) => predicate,
        None => unreachable!("a serialized Statement always has a predicate object"),
    };
    predicate.insert("tee".into(), Value::Object(bound.clone()));
    let rd = report_data_bound(&value, &signer.verifying_key(), Binding::V2);
    let tee = quotes.quote(&rd).await?;
    if !tee.report_data.eq_ignore_ascii_case(&hex::encode(rd)) {
        return Err(AttestError::QuoteReportData);
    }
    let mut tee = match serde_json::to_value(&tee)? {
        Value::Object(map) => map,
        _ => unreachable!("a Tee serializes to an object"),
    };
    for (k, v) in &bound {
        tee.insert(k.clone(), v.clone());
    }
    // What the provider returned beyond the quote-side fields must be exactly what was bound.
    if let Some(extra) = tee
        .iter()
        .find(|(k, v)| !TEE_UNBOUND_FIELDS.contains(&k.as_str()) && bound.get(*k) != Some(*v))
    {
        return Err(AttestError::UnboundTeeField(extra.0.clone()));
    }
    if let Some(predicate) = value.get_mut("predicate").and_then(Value::as_object_mut) {
        predicate.insert("tee".into(), Value::Object(tee));
    }
    let payload = canonical_json(&value);
    Ok(Envelope::sign(dsse::PAYLOAD_TYPE_IN_TOTO, &payload, signer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let v: Value = serde_json::from_str(
            r#"{ "b": [1, 2.5, {"z": null, "a": true}], "a": "x\"y\n", "é": 1.0 }"#,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":"x\"y\n","b":[1,2.5,{"a":true,"z":null}],"é":1.0}"#
        );
    }

    #[test]
    fn report_data_ignores_tee_but_covers_unknown_fields_and_the_key() {
        let k1 = Signer::generate().verifying_key();
        let k2 = Signer::generate().verifying_key();
        let base: Value = serde_json::json!({"predicate": {"a": 1}});
        let with_tee: Value = serde_json::json!({"predicate": {"a": 1, "tee": {"q": "x"}}});
        let other: Value = serde_json::json!({"predicate": {"a": 1, "new": 2}});
        assert_eq!(
            report_data_of_value(&base, &k1),
            report_data_of_value(&with_tee, &k1)
        );
        assert_ne!(
            report_data_of_value(&base, &k1),
            report_data_of_value(&other, &k1)
        );
        assert_ne!(
            report_data_of_value(&base, &k1),
            report_data_of_value(&base, &k2)
        );
    }

    #[test]
    fn leaving_out_tee_leaves_valid_canonical_json_wherever_tee_sorts() {
        for (with, without) in [
            (r#"{"predicate":{"tee":1}}"#, r#"{"predicate":{}}"#),
            (
                r#"{"predicate":{"a":1,"tee":2}}"#,
                r#"{"predicate":{"a":1}}"#,
            ),
            (
                r#"{"predicate":{"tee":2,"z":1}}"#,
                r#"{"predicate":{"z":1}}"#,
            ),
            (
                r#"{"a":{"tee":0},"predicate":{"a":1,"tee":2,"z":[3]},"z":null}"#,
                r#"{"a":{"tee":0},"predicate":{"a":1,"z":[3]},"z":null}"#,
            ),
        ] {
            let v: Value = serde_json::from_str(with).unwrap();
            assert_eq!(
                String::from_utf8(canonical_json_without_tee(&v)).unwrap(),
                without
            );
        }
    }

    #[test]
    fn report_data_follows_the_documented_formula() {
        let key = Signer::generate().verifying_key();
        let v: Value = serde_json::json!({"_type": "t", "predicate": {"x": [1], "tee": 5}});
        let digest = Sha256::digest(br#"{"_type":"t","predicate":{"x":[1]}}"#);
        let mut h = Sha512::new();
        h.update(b"skill-verifier report_data v1\0");
        h.update(digest);
        h.update(key.as_bytes());
        let want: [u8; 64] = h.finalize().into();
        assert_eq!(report_data_of_value(&v, &key), want);
    }
}
