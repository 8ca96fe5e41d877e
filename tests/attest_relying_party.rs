//! What a registry gates on, through the real `attestation verify` binary: the verdict, the
//! policy digest, the isolation runtime, a hardware TEE, key sets, expected measurements.
//! The statements carry `predicate.verdict`, `predicate.policy` and
//! `predicate.environment.isolation` by their contract names (DESIGN.md), built as JSON and
//! re-bound with a fresh simulated quote, so each is a fully valid attestation.

mod attest_support;

use std::path::Path;
use std::process::Command;

use attest_support::*;
use serde_json::{json, Value};
use sha2::Digest as _;
use skill_verifier::attest::keys::{self, Signer};
use skill_verifier::attest::sign_statement;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skill-verifier"))
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A signed attestation whose predicate carries `extra` merged in (verdict, policy, ...).
async fn attestation(signer: &Signer, extra: Value) -> Value {
    let env = sign_statement(sample_statement(tree()), signer, &simulated())
        .await
        .unwrap();
    let mut v = payload_value(&env);
    merge(&mut v["predicate"], extra);
    v
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

struct Fixture {
    _tmp: tempfile::TempDir,
    file: std::path::PathBuf,
    key: std::path::PathBuf,
}

fn fixture(value: &Value, signer: &Signer) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("att.json");
    write_envelope(&file, &rebind_simulated(value, signer));
    let key = tmp.path().join("signing.pub");
    std::fs::write(&key, signer.public_key_pem()).unwrap();
    Fixture {
        _tmp: tmp,
        file,
        key,
    }
}

fn verify(f: &Fixture, flags: &[&str]) -> (i32, String, String) {
    let mut args = vec!["attestation", "verify", p(&f.file), "--key", p(&f.key)];
    args.extend_from_slice(flags);
    run(&args)
}

const POLICY_SHA: &str = "5f2b9f1c3d4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";

#[tokio::test]
async fn require_verdict_passes_passed_and_refuses_a_validly_signed_failed_one() {
    let signer = Signer::generate();
    let passed = fixture(
        &attestation(
            &signer,
            json!({"verdict": {"status": "PASSED", "reasons": []}}),
        )
        .await,
        &signer,
    );
    let (code, out, err) = verify(&passed, &["--require-verdict", "PASSED"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("verdict: ok (PASSED)"), "{out}");

    let failed = fixture(
        &attestation(
            &signer,
            json!({"verdict": {"status": "FAILED", "reasons": [
                {"code": "scan.download-exec", "message": "curl | sh in scripts/install.sh"}
            ]}}),
        )
        .await,
        &signer,
    );
    // Without the gate a FAILED verdict is still a valid attestation (of a failure) ...
    let (code, out, _) = verify(&failed, &[]);
    assert_eq!(code, 0, "{out}");
    // ... with it, exit 1 and the reason.
    let (code, out, _) = verify(&failed, &["--require-verdict", "PASSED"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("attestation: INVALID"), "{out}");
    assert!(out.contains("the verdict is FAILED"), "{out}");
    assert!(out.contains("scan.download-exec"), "{out}");

    // A statement from a verifier that records no verdict: refused, and it says why.
    let none = fixture(&attestation(&signer, json!({})).await, &signer);
    let (code, out, _) = verify(&none, &["--require-verdict", "PASSED"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("the statement has no predicate.verdict.status"),
        "{out}"
    );
}

#[tokio::test]
async fn expect_policy_and_require_isolation_read_the_contract_fields() {
    let signer = Signer::generate();
    let v = attestation(
        &signer,
        json!({
            "policy": {"name": "default", "sha256": POLICY_SHA, "rules_sha256": POLICY_SHA},
            "environment": {"isolation": {"runtime": "runsc"}},
        }),
    )
    .await;
    let f = fixture(&v, &signer);
    let (code, out, err) = verify(
        &f,
        &[
            "--expect-policy",
            &POLICY_SHA.to_uppercase(),
            "--require-isolation",
            "runsc",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("policy: ok"), "{out}");
    assert!(out.contains("isolation: ok (runsc)"), "{out}");

    let (code, out, _) = verify(&f, &["--expect-policy", &"0".repeat(64)]);
    assert_eq!(code, 1);
    assert!(out.contains("the policy sha256 is 5f2b"), "{out}");

    let runc = fixture(
        &attestation(
            &signer,
            json!({"environment": {"isolation": {"runtime": "runc"}}}),
        )
        .await,
        &signer,
    );
    let (code, out, _) = verify(&runc, &["--require-isolation", "runsc"]);
    assert_eq!(code, 1);
    assert!(out.contains("the isolation runtime is runc"), "{out}");

    // As made by a verifier that recorded neither the isolation nor the policy.
    let mut earlier = attestation(&signer, json!({})).await;
    earlier["predicate"]["environment"]
        .as_object_mut()
        .unwrap()
        .remove("isolation");
    earlier["predicate"]
        .as_object_mut()
        .unwrap()
        .remove("policy");
    let bare = fixture(&earlier, &signer);
    let (code, out, _) = verify(&bare, &["--require-isolation", "runsc"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("no predicate.environment.isolation.runtime"),
        "{out}"
    );
    let (code, out, _) = verify(&bare, &["--expect-policy", POLICY_SHA]);
    assert_eq!(code, 1);
    assert!(out.contains("no predicate.policy.sha256"), "{out}");
}

#[tokio::test]
async fn require_tee_refuses_simulated_and_none() {
    let signer = Signer::generate();
    let sim = fixture(&attestation(&signer, json!({})).await, &signer);
    let (code, out, _) = verify(&sim, &["--require-tee"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("SIMULATED"), "{out}");

    let env = sign_statement(
        sample_statement(tree()),
        &signer,
        &skill_verifier::attest::quote::NoQuoteProvider,
    )
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("none.json");
    write_envelope(&file, &env);
    let (code, out, _) = run(&[
        "attestation",
        "verify",
        p(&file),
        "--key",
        p(&sim.key),
        "--require-tee",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("there is no quote"), "{out}");
}

#[tokio::test]
async fn a_key_set_verifies_with_any_of_its_keys() {
    let signer = Signer::generate();
    let other = Signer::generate();
    let stranger = Signer::generate();
    let f = fixture(&attestation(&signer, json!({})).await, &signer);
    let dir = tempfile::tempdir().unwrap();

    // Several PEM keys in one file, ours second.
    let pems = dir.path().join("keys.pem");
    std::fs::write(
        &pems,
        format!("{}\n{}", other.public_key_pem(), signer.public_key_pem()),
    )
    .unwrap();
    let (code, out, err) = run(&["attestation", "verify", p(&f.file), "--key", p(&pems)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("one of 2 keys"), "{out}");

    // The JSON of GET /keys.
    let view = |s: &Signer| json!({"keyid": s.key_id(), "algorithm": "ed25519", "public_key_pem": s.public_key_pem()});
    let keys_json = dir.path().join("keys.json");
    std::fs::write(
        &keys_json,
        json!({"keys": [view(&other), view(&signer)], "quote_provider": "simulated"}).to_string(),
    )
    .unwrap();
    let (code, out, err) = run(&["attestation", "verify", p(&f.file), "--key", p(&keys_json)]);
    assert_eq!(code, 0, "{out}{err}");

    // A set without the signing key: invalid (exit 1), naming the signer's key id.
    std::fs::write(
        &keys_json,
        json!({"keys": [view(&other), view(&stranger)]}).to_string(),
    )
    .unwrap();
    let (code, out, _) = run(&["attestation", "verify", p(&f.file), "--key", p(&keys_json)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&signer.key_id()), "{out}");

    // A /keys answer whose keyid lies about its key: unreadable input (exit 2).
    let mut lying = view(&signer);
    lying["keyid"] = other.key_id().into();
    std::fs::write(&keys_json, json!({"keys": [lying]}).to_string()).unwrap();
    let (code, _, err) = run(&["attestation", "verify", p(&f.file), "--key", p(&keys_json)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not the key's id"), "{err}");

    // The library parser agrees on the forms.
    assert_eq!(
        keys::parse_key_set(&std::fs::read_to_string(&pems).unwrap())
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn expected_measurements_are_compared_with_the_quote() {
    let signer = Signer::generate();
    let f = fixture(&attestation(&signer, json!({})).await, &signer);
    // attest_support::simulated() measures b"verifier binary" as MRTD.
    let mrtd = hex::encode(sha2::Sha384::digest(b"verifier binary"));
    let rtmr0 = hex::encode(sha2::Sha384::digest(format!(
        "skill-verifier {}",
        skill_verifier::VERSION
    )));
    let (code, out, err) = verify(
        &f,
        &[
            "--expect-mrtd",
            &mrtd,
            "--expect-rtmr",
            &format!("0={rtmr0}"),
            "--expect-rtmr",
            &format!("3={}", "0".repeat(96)),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("MRTD: ok"), "{out}");
    assert!(out.contains("RTMR3: ok"), "{out}");

    let (code, out, _) = verify(&f, &["--expect-mrtd", &"ab".repeat(48)]);
    assert_eq!(code, 1);
    assert!(out.contains("MRTD mismatch"), "{out}");
    let (code, out, _) = verify(&f, &["--expect-rtmr", &format!("1={}", "cd".repeat(48))]);
    assert_eq!(code, 1);
    assert!(out.contains("RTMR1 mismatch"), "{out}");
    for bad in [
        vec!["--expect-mrtd", "abc"],
        vec!["--expect-rtmr", "4=00"],
        vec!["--expect-rtmr", "nonsense"],
    ] {
        let (code, _, err) = verify(&f, &bad);
        assert_eq!(code, 2, "{bad:?}: {err}");
    }
}
