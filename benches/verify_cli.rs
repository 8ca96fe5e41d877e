//! `skill-verifier verify examples/hello-world` (whole process: load key, unpack, run in
//! Docker, sign) against `docker run --rm --network none` of the same image with the same
//! command, alternating, same run. Target: median ratio <= 1.0. `ROUNDS` (default 3) repeats
//! the 15 pairs so the spread shows the machine's noise; `SKILL_VERIFIER_SANDBOX__ISOLATION`
//! passes through to `verify`.
//!
//! Run: `cargo bench --bench verify_cli` (needs Docker and the prepared runner images).

use std::process::{Command, Stdio};
use std::time::Instant;

/// The shell runner image (its tag is the recipe's digest).
fn shell_image() -> &'static str {
    static SHELL_IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHELL_IMAGE.get_or_init(|| {
        skill_verifier::sandbox::images::default_image(skill_verifier::package::Runtime::Shell)
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let skill = format!("{root}/examples/hello-world");
    let keys = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let out = keys.path().join("att.json");
    // The declared command, exactly as SKILL.md says.
    let md = std::fs::read_to_string(format!("{skill}/SKILL.md")).unwrap();
    let command = md
        .lines()
        .find_map(|l| l.trim().strip_prefix("verify-test:"))
        .map(|c| c.trim().trim_matches('"').to_string())
        .expect("hello-world declares verify-test");
    let verify = || {
        let ok = Command::new(env!("CARGO_BIN_EXE_skill-verifier"))
            .args(["verify", &skill, "--key-dir"])
            .arg(keys.path())
            .arg("--out")
            .arg(&out)
            .arg("--data-dir")
            .arg(data.path())
            .env("RUST_LOG", "warn")
            // The sandbox's own cost is measured with network none (BENCH_NETWORK=observe
            // measures the default mode; benches/network.rs isolates the sink's cost).
            .env(
                "SKILL_VERIFIER_SANDBOX__NETWORK",
                std::env::var("BENCH_NETWORK").unwrap_or_else(|_| "none".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "skill-verifier verify failed");
    };
    let docker = || {
        let ok = Command::new("docker")
            .args(["run", "--rm", "--network", "none", "-v"])
            .arg(format!("{skill}:/skill:ro"))
            .args(["-w", "/skill", shell_image(), "sh", "-c", &command])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "docker run failed");
    };
    verify();
    docker();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke() { 1 } else { 3 });
    let pairs = if smoke() { 1 } else { 15 };
    for round in 1..=rounds {
        let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..pairs {
            let time = |f: &dyn Fn()| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            };
            let (a, b) = if i % 2 == 0 {
                let a = time(&verify);
                (a, time(&docker))
            } else {
                let b = time(&docker);
                (time(&verify), b)
            };
            ours.push(a);
            theirs.push(b);
            ratios.push(a / b);
        }
        let (a, b) = (median(&mut ours), median(&mut theirs));
        println!(
            "round {round}: verify hello-world: p50 {a:.0} ms; docker run --rm same image+command: p50 {b:.0} ms; median pair ratio {:.2} (target <= 1.0)",
            median(&mut ratios)
        );
    }
}

/// `BENCH_SMOKE=1` (CI): run every path once, at a small size, and report nothing worth
/// reading; the point is that the bench still builds and runs.
fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some()
}
