//! Interop: our envelopes verify under an independent DSSE implementation, Python's
//! securesystemslib (`tests/interop/verify_dsse.py`), which also recomputes report_data from
//! the documented formula; hand-tampered envelopes do not verify.
//!
//! Needs `python3` with `pip install 'securesystemslib[crypto]'`. Outside CI a missing
//! setup skips loudly; with `CI` set it fails.

mod attest_support;

use std::path::Path;
use std::process::Command;

use attest_support::*;
use base64::Engine as _;
use skill_verifier::attest::keys::Signer;
use skill_verifier::attest::sign_statement;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/verify_dsse.py");

/// True when python3 and securesystemslib are usable; panics in CI when they are not.
fn python_ready() -> bool {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import securesystemslib.dsse, securesystemslib.signer, cryptography",
        ])
        .output();
    let ok = matches!(&probe, Ok(out) if out.status.success());
    if !ok {
        let why = match probe {
            Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
            Err(e) => e.to_string(),
        };
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but python3 + securesystemslib are unusable: {why}\n(install: pip install 'securesystemslib[crypto]')");
        }
        eprintln!(
            "SKIPPING interop test: python3 + securesystemslib unusable ({why}); pip install 'securesystemslib[crypto]'"
        );
    }
    ok
}

fn run_script(envelope: &Path, public: &Path) -> (i32, String) {
    let out = Command::new("python3")
        .arg(SCRIPT)
        .arg(envelope)
        .arg(public)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn securesystemslib_verifies_ours_and_refuses_tampered_ones() {
    if !python_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let signer = Signer::load_or_create(&tmp.path().join("keys")).unwrap();
    let public = tmp.path().join("keys/signing.pub");
    let env = sign_statement(sample_statement(tree()), &signer, &simulated())
        .await
        .unwrap();

    let good = tmp.path().join("good.json");
    std::fs::write(&good, serde_json::to_vec_pretty(&env).unwrap()).unwrap();
    let (code, text) = run_script(&good, &public);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("signature: ok"), "{text}");
    assert!(text.contains(&signer.key_id()), "{text}");
    assert!(
        text.contains("report_data: ok (quote provider simulated)"),
        "{text}"
    );

    // One payload byte changed by hand (PASSED -> QASSED), signature kept.
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut payload = b64.decode(&env.payload).unwrap();
    let at = payload.windows(6).position(|w| w == b"PASSED").unwrap();
    payload[at] = b'Q';
    let mut tampered = env.clone();
    tampered.payload = b64.encode(&payload);
    let bad = tmp.path().join("tampered.json");
    std::fs::write(&bad, serde_json::to_vec(&tampered).unwrap()).unwrap();
    let (code, text) = run_script(&bad, &public);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("signature: INVALID"), "{text}");

    // Another key's public half does not verify it either.
    Signer::load_or_create(&tmp.path().join("other")).unwrap();
    let (code, text) = run_script(&good, &tmp.path().join("other/signing.pub"));
    assert_eq!(code, 1, "{text}");
}

/// A statement re-signed with a tee that belongs to another statement passes the DSSE check
/// in Python too, but fails its independent report_data recomputation.
#[tokio::test]
async fn python_recomputes_report_data_independently() {
    if !python_ready() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let signer = Signer::load_or_create(&tmp.path().join("keys")).unwrap();
    let env = sign_statement(sample_statement(tree()), &signer, &simulated())
        .await
        .unwrap();
    let mut value = payload_value(&env);
    value["predicate"]["job"]["attempt"] = 7.into();
    let forged = resign(&value, &signer);
    let path = tmp.path().join("forged.json");
    std::fs::write(&path, serde_json::to_vec(&forged).unwrap()).unwrap();
    let (code, text) = run_script(&path, &tmp.path().join("keys/signing.pub"));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("signature: ok"), "{text}");
    assert!(text.contains("report_data: INVALID"), "{text}");
}
