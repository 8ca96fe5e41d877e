//! Shared helpers of the `attest_*` integration tests: a sample statement, re-signing of
//! hand-edited payloads, and the simulated provider with fixed measurements.

#![allow(dead_code)] // each test binary uses its own subset

use serde_json::Value;
use skill_verifier::attest::dsse::{Envelope, PAYLOAD_TYPE_IN_TOTO};
use skill_verifier::attest::keys::Signer;
use skill_verifier::attest::quote::{SimulatedMeasurements, SimulatedQuoteProvider};
use skill_verifier::attest::statement::*;
use skill_verifier::attest::{canonical_json, dsse};
use skill_verifier::digest::Sha256Digest;

/// A statement as the daemon would build it (verifier id and tee unset).
pub fn sample_statement(tree: Sha256Digest) -> Statement {
    // The limits the default policy really applies to a declared shell test.
    let plan = skill_verifier::package::TestPlan {
        command: "true".into(),
        runtime: skill_verifier::package::Runtime::Shell,
        timeout_secs: None,
        source: skill_verifier::package::TestSource::Declared,
    };
    let limits = skill_verifier::sandbox::spec_for(
        &plan,
        &skill_verifier::sandbox::Policy::default(),
        Default::default(),
    )
    .expect("the default policy yields a spec")
    .limits;
    Statement::new(Predicate {
        verifier: VerifierInfo {
            id: String::new(),
            version: skill_verifier::VERSION.into(),
        },
        job: JobInfo {
            id: "6f1c1f52-33c4-4d3c-9a40-0d6f5b0f4b11".into(),
            attempt: 1,
            started_at: "2026-11-23T12:00:00Z".into(),
            finished_at: "2026-11-23T12:00:03Z".into(),
        },
        package: PackageInfo {
            name: "hello-skill".into(),
            tree_sha256: tree,
            archive_sha256: Some(Sha256Digest::of(b"archive bytes")),
            files: 3,
            bytes: 1234,
        },
        environment: Environment {
            image: "skill-verifier/runner-python:1".into(),
            image_digest: format!("sha256:{}", Sha256Digest::of(b"image")),
            runtime: skill_verifier::package::Runtime::Python,
            network: "none".into(),
            declared_network: Vec::new(),
            isolation: Some(Isolation {
                runtime: "runc".into(),
            }),
            engine: Some("default".into()),
            limits,
        },
        test: TestInfo {
            command: "python -m pytest -q".into(),
            source: skill_verifier::package::TestSource::Declared,
        },
        result: ResultInfo {
            status: Status::Passed,
            exit_code: 0,
            duration_ms: 2950,
            timed_out: false,
            oom_killed: false,
            output_truncated: false,
            stdout_sha256: Sha256Digest::of(b"3 passed\n"),
            stderr_sha256: Sha256Digest::of(b""),
            stdout_excerpt: "3 passed\n".into(),
            stderr_excerpt: String::new(),
        },
        findings: vec![Finding {
            code: "note".into(),
            message: "ünïcode \"quoted\" text\n".into(),
            category: None,
            severity: None,
            path: None,
            line: None,
            excerpt: None,
        }],
        verdict: None,
        policy: None,
        observed: None,
        dry_run: None,
        dependencies: None,
        install: None,
        tee: None,
    })
}

/// The default tree digest of [`sample_statement`] users.
pub fn tree() -> Sha256Digest {
    Sha256Digest::of(b"tree")
}

/// A simulated provider with fixed measurements (hashing the test binary is slow in debug).
pub fn simulated() -> SimulatedQuoteProvider {
    SimulatedQuoteProvider::new(SimulatedMeasurements::of(b"verifier binary", b"config"))
}

/// The verified payload of `env` as a JSON value.
pub fn payload_value(env: &Envelope) -> Value {
    let bytes = dsse::decode_base64(&env.payload).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Signs a hand-edited statement value (canonical JSON) with `signer`.
pub fn resign(value: &Value, signer: &Signer) -> Envelope {
    Envelope::sign(PAYLOAD_TYPE_IN_TOTO, &canonical_json(value), signer)
}

/// Re-binds and re-signs a hand-edited statement value whose tee is a simulated one: the
/// v2 report_data is recomputed, a fresh simulated quote made over it, and the whole signed.
/// The result is a fully valid attestation of exactly `value`'s facts.
pub fn rebind_simulated(value: &Value, signer: &Signer) -> Envelope {
    let mut v = value.clone();
    let rd = skill_verifier::attest::report_data_bound(
        &v,
        &signer.verifying_key(),
        skill_verifier::attest::Binding::V2,
    );
    v["predicate"]["tee"]["report_data"] = hex::encode(rd).into();
    v["predicate"]["tee"]["quote"] = hex::encode(simulated().quote_bytes(&rd)).into();
    resign(&v, signer)
}

/// Writes `env` as JSON to `path`.
pub fn write_envelope(path: &std::path::Path, env: &Envelope) {
    std::fs::write(path, serde_json::to_vec_pretty(env).unwrap()).unwrap();
}
