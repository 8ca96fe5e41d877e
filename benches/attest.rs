//! Benchmarks of the attest stage: sign + serialize one attestation, and verify one.
//! Targets: sign ≤ 50 µs, verify ≤ 100 µs. Baselines in the same run: one bare Ed25519 sign
//! and one strict verify over a payload of the same size.
//!
//! Also `quote verify`'s core: the DCAP check of dcap-qvl's sample TDX quote with its
//! collateral (parse the collateral JSON + verify_dcap), against the same run's Ed25519
//! verify baseline.
//!
//! Run: `cargo bench --bench attest`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use ed25519_dalek::Verifier as _;
use skill_verifier::attest::dsse::pae;
use skill_verifier::attest::keys::Signer;
use skill_verifier::attest::quote::{
    self, NoQuoteProvider, QuoteProvider, SimulatedMeasurements, SimulatedQuoteProvider,
};
use skill_verifier::attest::sign_statement;
use skill_verifier::attest::statement::*;
use skill_verifier::attest::verify::verify_envelope;
use skill_verifier::digest::Sha256Digest;

#[path = "../tests/attest_support/mod.rs"]
mod attest_support;

/// The attest tests' sample statement, with a realistic bounded excerpt (1 KiB of output).
fn statement() -> Statement {
    let mut st = attest_support::sample_statement(Sha256Digest::of(b"tree"));
    st.predicate.result.stdout_excerpt = "test_hello.py::test_greets PASSED\n".repeat(30);
    st
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let signer = Signer::generate();
    let key = signer.verifying_key();
    let simulated = SimulatedQuoteProvider::new(SimulatedMeasurements::of(b"bin", b"cfg"));
    let st = statement();

    let sign = |quotes: &dyn QuoteProvider| {
        let env = rt
            .block_on(sign_statement(st.clone(), &signer, quotes))
            .unwrap();
        serde_json::to_vec(&env).unwrap()
    };
    let env_sim = rt
        .block_on(sign_statement(st.clone(), &signer, &simulated))
        .unwrap();
    let env_none = rt
        .block_on(sign_statement(st.clone(), &signer, &NoQuoteProvider))
        .unwrap();
    let payload_len = skill_verifier::attest::dsse::decode_base64(&env_sim.payload)
        .unwrap()
        .len();
    eprintln!("payload: {payload_len} bytes");

    let mut g = c.benchmark_group("attest");
    g.bench_function("baseline: ed25519 sign (PAE of same size)", |b| {
        let msg = pae("application/vnd.in-toto+json", &vec![b'x'; payload_len]);
        b.iter(|| signer.sign(black_box(&msg)))
    });
    g.bench_function("baseline: ed25519 verify_strict (same size)", |b| {
        let msg = pae("application/vnd.in-toto+json", &vec![b'x'; payload_len]);
        let sig = signer.sign(&msg);
        b.iter(|| key.verify_strict(black_box(&msg), &sig).unwrap())
    });
    g.bench_function("baseline: ed25519 verify (non-strict)", |b| {
        let msg = pae("application/vnd.in-toto+json", &vec![b'x'; payload_len]);
        let sig = signer.sign(&msg);
        b.iter(|| key.verify(black_box(&msg), &sig).unwrap())
    });
    g.bench_function("sign+serialize, quote none", |b| {
        b.iter(|| sign(&NoQuoteProvider))
    });
    g.bench_function("sign+serialize, simulated quote included", |b| {
        b.iter(|| sign(&simulated))
    });
    g.bench_function("parse+verify, quote none", |b| {
        let bytes = serde_json::to_vec(&env_none).unwrap();
        b.iter(|| {
            let env = serde_json::from_slice(black_box(&bytes)).unwrap();
            verify_envelope(&env, &key, None).unwrap()
        })
    });
    g.bench_function("parse+verify, simulated quote included", |b| {
        let bytes = serde_json::to_vec(&env_sim).unwrap();
        b.iter(|| {
            let env = serde_json::from_slice(black_box(&bytes)).unwrap();
            verify_envelope(&env, &key, None).unwrap()
        })
    });
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dcap-qvl");
    let tdx_quote = std::fs::read(data.join("tdx_quote")).unwrap();
    let collateral_json = std::fs::read(data.join("tdx_quote_collateral.json")).unwrap();
    let at = time::OffsetDateTime::parse(
        "2025-06-19T11:16:03Z",
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    g.bench_function("quote verify: DCAP, sample TDX quote + collateral", |b| {
        b.iter(|| {
            let c = quote::parse_collateral(black_box(&collateral_json)).unwrap();
            quote::verify_dcap(black_box(&tdx_quote), &c, at, None).unwrap()
        })
    });
    g.finish();
}

criterion_group!(attest, benches);
criterion_main!(attest);
