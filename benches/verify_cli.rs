//! `skill-verifier verify examples/hello-world` (whole process: load key, unpack, run in
//! Docker, sign) against `docker run --rm --network none` of the same image with the same
//! command, alternating, same run (issue 6). Target: median ratio <= 1.25.
//!
//! Run: `cargo bench --bench verify_cli` (needs Docker and the prepared runner images).

use std::process::{Command, Stdio};
use std::time::Instant;

const IMAGE: &str = "skill-verifier/runner-shell:1";

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
            .args(["-w", "/skill", IMAGE, "sh", "-c", &command])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "docker run failed");
    };
    verify();
    docker();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        let t = Instant::now();
        verify();
        ours.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        docker();
        theirs.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!(
        "verify hello-world: p50 {a:.0} ms; docker run --rm same image+command: p50 {b:.0} ms; ratio {:.2} (target <= 1.25)",
        a / b
    );
}
