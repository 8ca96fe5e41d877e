//! The `attest` stage: the facts of a run in, a signed, quote-bound, independently verifiable
//! DSSE envelope out; and the offline checks of one.
//!
//! OWNER: issue 4. The public items below are the interface other stages rely on; add freely,
//! rename none without telling the integrator.
//!
//! - [`statement`]: the in-toto Statement v1 and the predicate (field names are a contract).
//! - [`dsse`]: the envelope, PAE, signing and verification.
//! - [`keys`]: the Ed25519 [`keys::Signer`], key ids, key files.
//! - [`quote`]: the [`quote::QuoteProvider`] trait and its `simulated`, `dstack`, `none` providers.
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
//! The 64 bytes a TEE quote binds ([`report_data`]):
//!
//! ```text
//! report_data = SHA-512( "skill-verifier report_data v1" || 0x00
//!                        || SHA-256(canonical_json(statement without predicate.tee))
//!                        || Ed25519 public key (32 raw bytes) )
//! ```
//!
//! "Without `predicate.tee`" means the `tee` key is removed from the `predicate` object
//! (every other field, known or not, stays). So the quote commits to every attested fact and
//! to the key that signs them; a verifier recomputes it from the verified payload and the key
//! it trusts. The tag separates this hash from any other use of the same inputs; the fields
//! after it have fixed lengths, so no further framing is needed.

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

/// Domain-separation tag of [`report_data`] (followed by one 0x00 byte).
pub const REPORT_DATA_TAG: &[u8] = b"skill-verifier report_data v1";

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
    let mut out = Vec::with_capacity(4096);
    match statement {
        Value::Object(map) => write_object(map, &mut out, |key, value, out| {
            write_string(key, out);
            out.push(b':');
            match value {
                Value::Object(predicate) if key == "predicate" => {
                    write_object(predicate, out, |k, v, out| {
                        if k != "tee" {
                            write_member(k, v, out);
                        }
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

/// [`report_data`] over a statement given as a JSON value (what a verifier has: the parsed
/// verified payload, unknown fields included).
pub fn report_data_of_value(statement: &Value, key: &VerifyingKey) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(REPORT_DATA_TAG);
    h.update([0u8]);
    h.update(statement_digest_of_value(statement));
    h.update(key.as_bytes());
    h.finalize().into()
}

/// The 64 bytes a TEE quote binds for `statement` signed by `key` (exact definition in the
/// module docs). `predicate.tee` does not enter it.
pub fn report_data(statement: &Statement, key: &VerifyingKey) -> [u8; 64] {
    let value = serde_json::to_value(statement).expect("a Statement always serializes");
    report_data_of_value(&value, key)
}

/// Binds and signs a statement: sets `predicate.verifier.id` to the signer's key id, computes
/// [`report_data`], asks `quotes` for a quote over it, stores the result in `predicate.tee`,
/// serializes the statement as canonical JSON and signs it as a DSSE envelope
/// (`application/vnd.in-toto+json`).
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
    let rd = report_data_of_value(&value, &signer.verifying_key());
    let tee = quotes.quote(&rd).await?;
    if !tee.report_data.eq_ignore_ascii_case(&hex::encode(rd)) {
        return Err(AttestError::QuoteReportData);
    }
    let tee = serde_json::to_value(&tee)?;
    match value.get_mut("predicate").and_then(Value::as_object_mut) {
        Some(predicate) => {
            predicate.insert("tee".into(), tee);
        }
        None => unreachable!("a serialized Statement always has a predicate object"),
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
