//! The dependency stage's cost: `skill-verifier verify examples/python-deps` (two pinned
//! wheels, idna and six) with an empty dependency cache (the first run: `pip download`
//! through the sink's allowlisted egress to the index, then the offline install) against the
//! same with the cache primed (no index at all: the files are re-hashed, staged with the
//! tree and installed), alternating, same run. Reports the medians and the ratio
//! cached / first.
//!
//! Run: `cargo bench --bench deps` (needs Docker, the prepared images, and the index: PyPI
//! by default, `SKILL_VERIFIER_DEPS__PYTHON_INDEX` to change it).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// `BENCH_SMOKE=1` (CI): every path once; the figures are not worth reading.
fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some()
}

fn verify(skill: &Path, keys: &Path, data: &Path, cache: &Path) -> f64 {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_skill-verifier"))
        .arg("verify")
        .arg(skill)
        .arg("--key-dir")
        .arg(keys)
        .arg("--out")
        .arg(keys.join("att.json"))
        .arg("--data-dir")
        .arg(data)
        .env("RUST_LOG", "warn")
        .env("SKILL_VERIFIER_DEPS__CACHE_DIR", cache)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let ms = t.elapsed().as_secs_f64() * 1e3;
    assert!(
        out.status.success(),
        "verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ms
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let skill = Path::new(root).join("examples/python-deps");
    let keys = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let primed = tempfile::tempdir().unwrap();
    // Warm: the rule cache, the images' layers, and the primed dependency cache.
    verify(&skill, keys.path(), data.path(), primed.path());
    let pairs = if smoke() { 1 } else { 7 };
    let (mut first, mut cached, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        let empty = tempfile::tempdir().unwrap();
        let (f, c) = if i % 2 == 0 {
            let f = verify(&skill, keys.path(), data.path(), empty.path());
            (f, verify(&skill, keys.path(), data.path(), primed.path()))
        } else {
            let c = verify(&skill, keys.path(), data.path(), primed.path());
            (verify(&skill, keys.path(), data.path(), empty.path()), c)
        };
        first.push(f);
        cached.push(c);
        ratios.push(c / f);
    }
    let (f, c) = (median(&mut first), median(&mut cached));
    println!(
        "verify examples/python-deps: first run (fetch + install) p50 {f:.0} ms; cached run (install only) p50 {c:.0} ms; median pair ratio cached/first {:.2}",
        median(&mut ratios)
    );
}
