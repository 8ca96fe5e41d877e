//! DSSE envelopes (Dead Simple Signing Envelope v1): PAE, signing, verification.
//!
//! The bytes signed are exactly the DSSE v1 pre-authentication encoding:
//!
//! ```text
//! PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
//! ```
//!
//! where `LEN` is the byte length as ASCII decimal without leading zeros and `SP` is one
//! space (0x20). The signature is Ed25519 (RFC 8032) over those bytes. On the wire the
//! payload and the signature are standard base64 with padding.
//!
//! Verification ([`Envelope::verify`]) accepts standard and URL-safe base64 (padded or not),
//! treats each signature's `keyid` only as a hint of which key to try first, and returns the
//! payload bytes it verified: callers must parse the statement from those bytes and nothing
//! else (never from a second decode of the envelope).

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::keys::{self, Signer};

/// The in-toto payload type.
pub const PAYLOAD_TYPE_IN_TOTO: &str = "application/vnd.in-toto+json";

/// A DSSE envelope as it appears on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The payload's media type.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The payload, base64.
    pub payload: String,
    /// One or more signatures over `PAE(payloadType, payload)`.
    pub signatures: Vec<EnvelopeSignature>,
}

/// One signature of an envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// The signer's key id: a hint only, never trusted (DSSE spec: "unauthenticated").
    #[serde(default)]
    pub keyid: String,
    /// The signature, base64.
    pub sig: String,
}

/// Why an envelope does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsseError {
    /// The envelope carries no signature at all.
    #[error("envelope has no signatures")]
    NoSignatures,
    /// The payload is not base64 (standard or URL-safe).
    #[error("payload is not valid base64")]
    PayloadEncoding,
    /// A signature whose key id names the given key does not verify: the envelope was
    /// changed after signing (or the signature is corrupt).
    #[error("bad signature: the signature by key {keyid} does not match the payload")]
    BadSignature {
        /// The key id of the key given to verify with.
        keyid: String,
    },
    /// No signature verifies under the given key, and none claims to be by it: signed by
    /// another key.
    #[error("wrong key: signed by key id(s) [{signed_by}], not by the given key {expected}")]
    WrongKey {
        /// The key ids the envelope's signatures name.
        signed_by: String,
        /// The key id of the key given to verify with.
        expected: String,
    },
}

/// DSSE v1 pre-authentication encoding of `(payload_type, payload)`.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let type_len = payload_type.len().to_string();
    let body_len = payload.len().to_string();
    let mut out = Vec::with_capacity(
        "DSSEv1".len() + 4 + type_len.len() + payload_type.len() + body_len.len() + payload.len(),
    );
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(type_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

const STANDARD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes standard or URL-safe base64, padded or not (the DSSE spec allows either).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    STANDARD
        .decode(text)
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
}

impl Envelope {
    /// Signs `payload` as `payload_type` with `signer`: one signature, keyid = the signer's
    /// key id, standard base64.
    pub fn sign(payload_type: &str, payload: &[u8], signer: &Signer) -> Envelope {
        let sig = signer.sign(&pae(payload_type, payload));
        let b64 = base64::engine::general_purpose::STANDARD;
        Envelope {
            payload_type: payload_type.to_string(),
            payload: b64.encode(payload),
            signatures: vec![EnvelopeSignature {
                keyid: signer.key_id(),
                sig: b64.encode(sig.to_bytes()),
            }],
        }
    }

    /// Verifies that at least one signature is a valid Ed25519 signature by `key` over
    /// `PAE(payloadType, payload)` and returns the verified payload bytes.
    ///
    /// Signatures whose `keyid` equals `key`'s id are tried first, then all others: the
    /// key id is only a hint. Verification is `verify_strict` (no malleable or small-order
    /// signatures).
    pub fn verify(&self, key: &VerifyingKey) -> Result<Vec<u8>, DsseError> {
        if self.signatures.is_empty() {
            return Err(DsseError::NoSignatures);
        }
        let payload = decode_base64(&self.payload).ok_or(DsseError::PayloadEncoding)?;
        let message = pae(&self.payload_type, &payload);
        let expected = keys::key_id(key);
        let (hinted, others): (Vec<_>, Vec<_>) =
            self.signatures.iter().partition(|s| s.keyid == expected);
        for candidate in hinted.iter().chain(others.iter()) {
            let Some(bytes) = decode_base64(&candidate.sig) else {
                continue;
            };
            let Ok(sig) = Signature::from_slice(&bytes) else {
                continue;
            };
            if key.verify_strict(&message, &sig).is_ok() {
                return Ok(payload);
            }
        }
        // Nothing verified. Name the likelier cause for the reader; both mean "invalid".
        let named_ours = !hinted.is_empty() || self.signatures.iter().all(|s| s.keyid.is_empty());
        if named_ours {
            Err(DsseError::BadSignature { keyid: expected })
        } else {
            let signed_by = self
                .signatures
                .iter()
                .map(|s| s.keyid.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            Err(DsseError::WrongKey {
                signed_by,
                expected,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_vector() {
        let got = pae("http://example.com/HelloWorld", b"hello world");
        assert_eq!(
            got,
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn pae_counts_bytes_not_chars() {
        // "é" is two bytes in UTF-8.
        assert_eq!(pae("é", b""), b"DSSEv1 2 \xc3\xa9 0 ".to_vec());
    }

    #[test]
    fn sign_then_verify_round_trips_and_accepts_url_safe_unpadded() {
        let signer = Signer::generate();
        // Bytes chosen so standard and URL-safe base64 differ ('+' / '/').
        let payload: Vec<u8> = vec![0xfb, 0xff, 0xfe, 0x3e, 0x3f, 0x00, 0x01];
        let env = Envelope::sign(PAYLOAD_TYPE_IN_TOTO, &payload, &signer);
        assert_eq!(env.verify(&signer.verifying_key()).unwrap(), payload);

        let mut url = env.clone();
        let url_engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        url.payload = url_engine.encode(&payload);
        url.signatures[0].sig = url_engine.encode(decode_base64(&env.signatures[0].sig).unwrap());
        assert_ne!(url.payload, env.payload);
        assert_eq!(url.verify(&signer.verifying_key()).unwrap(), payload);
    }

    #[test]
    fn keyid_is_only_a_hint() {
        let signer = Signer::generate();
        let mut env = Envelope::sign(PAYLOAD_TYPE_IN_TOTO, b"x", &signer);
        env.signatures[0].keyid = "somebody-else".into();
        assert!(env.verify(&signer.verifying_key()).is_ok());
        env.signatures[0].keyid = String::new();
        assert!(env.verify(&signer.verifying_key()).is_ok());
        // A decoy signature first, claiming our key id, does not hide the good one.
        env.signatures.insert(
            0,
            EnvelopeSignature {
                keyid: signer.key_id(),
                sig: "AAAA".into(),
            },
        );
        assert!(env.verify(&signer.verifying_key()).is_ok());
    }

    #[test]
    fn refusals_name_the_reason() {
        let signer = Signer::generate();
        let other = Signer::generate();
        let env = Envelope::sign(PAYLOAD_TYPE_IN_TOTO, b"payload", &signer);

        assert!(matches!(
            env.verify(&other.verifying_key()),
            Err(DsseError::WrongKey { .. })
        ));

        let mut changed_type = env.clone();
        changed_type.payload_type = "text/plain".into();
        assert!(matches!(
            changed_type.verify(&signer.verifying_key()),
            Err(DsseError::BadSignature { .. })
        ));

        let mut none = env.clone();
        none.signatures.clear();
        assert_eq!(
            none.verify(&signer.verifying_key()),
            Err(DsseError::NoSignatures)
        );

        let mut garbage = env;
        garbage.payload = "!!!".into();
        assert_eq!(
            garbage.verify(&signer.verifying_key()),
            Err(DsseError::PayloadEncoding)
        );
    }
}
