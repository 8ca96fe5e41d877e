//! Signing and verifying attestations: round trips, determinism, and every tamper refused
//! with its own reason.

mod attest_support;

use attest_support::*;
use base64::Engine as _;
use serde_json::Value;
use skill_verifier::attest::dsse::Envelope;
use skill_verifier::attest::keys::Signer;
use skill_verifier::attest::quote::{NoQuoteProvider, QuoteProvider};
use skill_verifier::attest::verify::{verify_envelope, QuoteCheck, VerifyError};
use skill_verifier::attest::{canonical_json, dsse, report_data_bound, sign_statement, Binding};
use skill_verifier::digest::Sha256Digest;

async fn signed(signer: &Signer) -> Envelope {
    sign_statement(sample_statement(tree()), signer, &simulated())
        .await
        .unwrap()
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

#[tokio::test]
async fn a_signed_statement_verifies_and_says_simulated() {
    let signer = Signer::generate();
    let env = signed(&signer).await;
    assert_eq!(env.payload_type, "application/vnd.in-toto+json");
    assert_eq!(env.signatures.len(), 1);
    assert_eq!(env.signatures[0].keyid, signer.key_id());

    let v = verify_envelope(&env, &signer.verifying_key(), Some(&tree())).unwrap();
    assert_eq!(v.quote, QuoteCheck::Simulated);
    assert!(v.package_checked);
    let st = &v.statement;
    assert_eq!(st.predicate.verifier.id, signer.key_id());
    let tee = st.predicate.tee.as_ref().unwrap();
    assert_eq!(tee.provider, "simulated");
    assert_eq!(tee.extra.get("simulated"), Some(&Value::Bool(true)));
    // report_data is the documented v2 function of the statement with tee cut to its bound
    // fields, and the key.
    assert_eq!(tee.extra.get("binding"), Some(&Value::from("v2")));
    assert_eq!(
        tee.report_data,
        hex::encode(report_data_bound(
            &payload_value(&env),
            &signer.verifying_key(),
            Binding::V2
        ))
    );
    let text = v.summary.join("\n");
    assert!(text.contains("signature: ok"), "{text}");
    assert!(text.contains("report_data binding: ok"), "{text}");
    assert!(text.contains("quote: SIMULATED"), "{text}");
    assert!(text.contains("package digest: ok"), "{text}");

    // Everything but the tee and the verifier id is what the caller passed in.
    let mut back = st.clone();
    back.predicate.tee = None;
    back.predicate.verifier.id = String::new();
    assert_eq!(back, sample_statement(tree()));
}

#[tokio::test]
async fn signing_is_deterministic_and_the_payload_canonical() {
    let signer = Signer::generate();
    let a = signed(&signer).await;
    let b = signed(&signer).await;
    assert_eq!(a, b);
    let payload = dsse::decode_base64(&a.payload).unwrap();
    let value: Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(canonical_json(&value), payload);
    let text = String::from_utf8(payload).unwrap();
    assert!(text.starts_with(r#"{"_type":"https://in-toto.io/Statement/v1","predicate":{"#));
    assert!(!text.contains("\": ") && !text.contains("\", ") && !text.contains('\n'));
    // Subjects: the tree by name and the archive.
    assert_eq!(value["subject"][0]["name"], "hello-skill");
    assert_eq!(value["subject"][0]["digest"]["sha256"], tree().to_hex());
    assert_eq!(value["subject"][1]["name"], "hello-skill.archive");
    // Contract field names.
    for k in [
        "verifier",
        "job",
        "package",
        "environment",
        "test",
        "result",
        "findings",
        "tee",
    ] {
        assert!(value["predicate"].get(k).is_some(), "predicate.{k}");
    }
    assert_eq!(value["predicate"]["result"]["status"], "PASSED");
}

#[tokio::test]
async fn package_digest_is_not_checked_without_a_package() {
    let signer = Signer::generate();
    let v = verify_envelope(&signed(&signer).await, &signer.verifying_key(), None).unwrap();
    assert!(!v.package_checked);
    assert!(v.summary.join("\n").contains("package digest: not checked"));
}

#[tokio::test]
async fn none_provider_round_trips_and_says_none() {
    let signer = Signer::generate();
    let env = sign_statement(sample_statement(tree()), &signer, &NoQuoteProvider)
        .await
        .unwrap();
    let v = verify_envelope(&env, &signer.verifying_key(), None).unwrap();
    assert_eq!(v.quote, QuoteCheck::None);
    assert!(v.summary.join("\n").contains("quote: none"));
}

#[tokio::test]
async fn flipped_payload_byte_is_a_bad_signature() {
    let signer = Signer::generate();
    let mut env = signed(&signer).await;
    let mut payload = b64().decode(&env.payload).unwrap();
    // Flip a byte inside a value the attacker would like to change.
    let at = payload.windows(6).position(|w| w == b"PASSED").unwrap();
    payload[at] ^= 0x01;
    env.payload = b64().encode(&payload);
    assert!(matches!(
        verify_envelope(&env, &signer.verifying_key(), None),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[tokio::test]
async fn flipped_signature_byte_is_a_bad_signature() {
    let signer = Signer::generate();
    let mut env = signed(&signer).await;
    let mut sig = b64().decode(&env.signatures[0].sig).unwrap();
    sig[10] ^= 0x80;
    env.signatures[0].sig = b64().encode(&sig);
    assert!(matches!(
        verify_envelope(&env, &signer.verifying_key(), None),
        Err(VerifyError::BadSignature { .. })
    ));
}

#[tokio::test]
async fn another_key_is_the_wrong_key() {
    let signer = Signer::generate();
    let other = Signer::generate();
    let env = signed(&signer).await;
    match verify_envelope(&env, &other.verifying_key(), None) {
        Err(VerifyError::WrongKey {
            signed_by,
            expected,
        }) => {
            assert_eq!(signed_by, signer.key_id());
            assert_eq!(expected, other.key_id());
        }
        other => panic!("want WrongKey, got {other:?}"),
    }
}

#[tokio::test]
async fn another_package_is_a_digest_mismatch() {
    let signer = Signer::generate();
    let env = signed(&signer).await;
    let other = Sha256Digest::of(b"another tree");
    assert_eq!(
        verify_envelope(&env, &signer.verifying_key(), Some(&other)).unwrap_err(),
        VerifyError::PackageDigestMismatch {
            attested: tree().to_hex(),
            actual: other.to_hex(),
        }
    );
}

/// The tee of an attestation for another statement, pasted into this one and re-signed by
/// the same key: the report_data no longer matches.
#[tokio::test]
async fn a_quote_from_another_statement_is_a_report_data_mismatch() {
    let signer = Signer::generate();
    let env = signed(&signer).await;
    let mut other_stmt = sample_statement(tree());
    other_stmt.predicate.result.status = skill_verifier::attest::statement::Status::Failed;
    let other_env = sign_statement(other_stmt, &signer, &simulated())
        .await
        .unwrap();

    let mut value = payload_value(&env);
    value["predicate"]["tee"] = payload_value(&other_env)["predicate"]["tee"].clone();
    let forged = resign(&value, &signer);
    assert!(matches!(
        verify_envelope(&forged, &signer.verifying_key(), None),
        Err(VerifyError::ReportDataMismatch { .. })
    ));

    // Same, but the recorded report_data fixed up: the quote itself still binds the other
    // statement.
    let mut value = payload_value(&env);
    let own_rd = value["predicate"]["tee"]["report_data"].clone();
    value["predicate"]["tee"]["quote"] =
        payload_value(&other_env)["predicate"]["tee"]["quote"].clone();
    value["predicate"]["tee"]["report_data"] = own_rd;
    let forged = resign(&value, &signer);
    assert!(matches!(
        verify_envelope(&forged, &signer.verifying_key(), None),
        Err(VerifyError::QuoteReportDataMismatch { .. })
    ));
}

/// A quote whose report_data matches a statement signed by another key (report_data binds
/// the key too).
#[tokio::test]
async fn a_quote_bound_to_another_key_is_a_report_data_mismatch() {
    let signer = Signer::generate();
    let thief = Signer::generate();
    let env = signed(&signer).await;
    let mut value = payload_value(&env);
    value["predicate"]["verifier"]["id"] = thief.key_id().into();
    let forged = resign(&value, &thief);
    assert!(matches!(
        verify_envelope(&forged, &thief.verifying_key(), None),
        Err(VerifyError::ReportDataMismatch { .. })
    ));
}

#[tokio::test]
async fn an_altered_simulated_quote_has_an_invalid_signature() {
    let signer = Signer::generate();
    let env = signed(&signer).await;
    let mut value = payload_value(&env);
    let mut quote = hex::decode(value["predicate"]["tee"]["quote"].as_str().unwrap()).unwrap();
    quote[200] ^= 0x01; // inside MRTD
    value["predicate"]["tee"]["quote"] = hex::encode(quote).into();
    let forged = resign(&value, &signer);
    assert!(matches!(
        verify_envelope(&forged, &signer.verifying_key(), None),
        Err(VerifyError::QuoteSignatureInvalid(_))
    ));
}

#[tokio::test]
async fn wrong_types_are_refused_each_with_its_reason() {
    let signer = Signer::generate();
    let env = signed(&signer).await;
    let key = signer.verifying_key();

    let payload = dsse::decode_base64(&env.payload).unwrap();
    let wrong_payload_type = Envelope::sign("application/json", &payload, &signer);
    assert!(matches!(
        verify_envelope(&wrong_payload_type, &key, None),
        Err(VerifyError::WrongPayloadType { .. })
    ));

    let mut v = payload_value(&env);
    v["_type"] = "https://in-toto.io/Statement/v0.1".into();
    assert!(matches!(
        verify_envelope(&resign(&v, &signer), &key, None),
        Err(VerifyError::WrongStatementType { .. })
    ));

    let mut v = payload_value(&env);
    v["predicateType"] = "https://slsa.dev/provenance/v1".into();
    assert!(matches!(
        verify_envelope(&resign(&v, &signer), &key, None),
        Err(VerifyError::WrongPredicateType { .. })
    ));

    let mut v = payload_value(&env);
    v["predicate"]["result"] = "PASSED".into();
    assert!(matches!(
        verify_envelope(&resign(&v, &signer), &key, None),
        Err(VerifyError::MalformedStatement(_))
    ));

    let not_json = Envelope::sign("application/vnd.in-toto+json", b"{not json", &signer);
    assert!(matches!(
        verify_envelope(&not_json, &key, None),
        Err(VerifyError::PayloadNotJson(_))
    ));
}

#[tokio::test]
async fn inconsistent_statements_are_refused() {
    let signer = Signer::generate();
    let env = signed(&signer).await;
    let key = signer.verifying_key();

    let mut v = payload_value(&env);
    v["predicate"]["verifier"]["id"] = "someone".into();
    assert!(matches!(
        verify_envelope(&resign(&v, &signer), &key, None),
        Err(VerifyError::VerifierIdMismatch { .. })
    ));

    let mut v = payload_value(&env);
    v["subject"][0]["digest"]["sha256"] = Sha256Digest::of(b"x").to_hex().into();
    assert!(matches!(
        verify_envelope(&resign(&v, &signer), &key, None),
        Err(VerifyError::SubjectMismatch { .. })
    ));

    let mut v = payload_value(&env);
    v["predicate"].as_object_mut().unwrap().remove("tee");
    assert_eq!(
        verify_envelope(&resign(&v, &signer), &key, None).unwrap_err(),
        VerifyError::MissingTee
    );

    // The provider is bound: changing it breaks report_data; with report_data recomputed
    // for the new name, the provider itself is refused.
    let mut v = payload_value(&env);
    v["predicate"]["tee"]["provider"] = "sgx-magic".into();
    assert!(matches!(
        verify_envelope(&resign(&v, &signer), &key, None),
        Err(VerifyError::ReportDataMismatch { .. })
    ));
    v["predicate"]["tee"]["report_data"] =
        hex::encode(report_data_bound(&v, &key, Binding::V2)).into();
    assert!(matches!(
        verify_envelope(&resign(&v, &signer), &key, None),
        Err(VerifyError::UnknownQuoteProvider(_))
    ));

    // Claiming "none" while a quote is present (report_data fixed up for the new name).
    let mut v = payload_value(&env);
    v["predicate"]["tee"]["provider"] = "none".into();
    v["predicate"]["tee"]["report_data"] =
        hex::encode(report_data_bound(&v, &key, Binding::V2)).into();
    assert_eq!(
        verify_envelope(&resign(&v, &signer), &key, None).unwrap_err(),
        VerifyError::UnexpectedQuote
    );
}

/// Fields this version does not know are still covered by report_data (a newer verifier's
/// statement stays checkable) and changing them breaks the binding.
#[tokio::test]
async fn unknown_fields_are_bound_by_report_data() {
    let signer = Signer::generate();
    let env = signed(&signer).await;
    let mut v = payload_value(&env);
    v["predicate"]["result"]["extra_fact"] = 1.into();
    assert!(matches!(
        verify_envelope(&resign(&v, &signer), &signer.verifying_key(), None),
        Err(VerifyError::ReportDataMismatch { .. })
    ));
}

#[tokio::test]
async fn a_provider_that_quotes_other_report_data_is_refused_at_signing() {
    struct Liar;
    #[async_trait::async_trait]
    impl QuoteProvider for Liar {
        fn kind(&self) -> &'static str {
            "none"
        }
        async fn quote(
            &self,
            _: &[u8; 64],
        ) -> Result<skill_verifier::attest::statement::Tee, skill_verifier::attest::quote::QuoteError>
        {
            NoQuoteProvider.quote(&[0u8; 64]).await
        }
    }
    let err = sign_statement(sample_statement(tree()), &Signer::generate(), &Liar)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        skill_verifier::attest::AttestError::QuoteReportData
    ));
}

/// An attestation bound the way this verifier bound them before v2 (no `tee.binding`,
/// `predicate.tee` left out of report_data) still verifies, and says it is v1.
#[tokio::test]
async fn a_v1_binding_attestation_still_verifies() {
    let signer = Signer::generate();
    let key = signer.verifying_key();
    let env = signed(&signer).await;
    let mut v = payload_value(&env);
    v["predicate"]["tee"]
        .as_object_mut()
        .unwrap()
        .remove("binding");
    let rd = skill_verifier::attest::report_data_of_value(&v, &key);
    assert_eq!(rd, report_data_bound(&v, &key, Binding::V1));
    v["predicate"]["tee"]["report_data"] = hex::encode(rd).into();
    v["predicate"]["tee"]["quote"] = hex::encode(simulated().quote_bytes(&rd)).into();
    let verified = verify_envelope(&resign(&v, &signer), &key, None).unwrap();
    assert!(
        verified
            .summary
            .join("\n")
            .contains("report_data binding: ok (v1"),
        "{:?}",
        verified.summary
    );
    // Under v1 the tee fields are not bound: the same change that v2 refuses passes here,
    // which is why v2 exists.
    v["predicate"]["tee"]["note"] = "edited".into();
    assert!(verify_envelope(&resign(&v, &signer), &key, None).is_ok());
}
