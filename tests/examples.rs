//! The example skills as CI fixtures: `verify` and `submit --wait` on each give the
//! documented exit code, and an attestation written by `verify` passes
//! `attestation verify --package` on the same example.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// (example, exit code of verify / submit --wait, result.status)
const EXAMPLES: &[(&str, i32, &str)] = &[
    ("hello-world", 0, "PASSED"),
    ("python-unittest", 0, "PASSED"),
    ("node-test", 0, "PASSED"),
    ("failing-test", 1, "FAILED"),
    ("no-tests", 0, "WARNED"),
    ("python-deps", 0, "PASSED"),
];

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_skill-verifier"));
    c.env("RUST_LOG", "warn");
    c
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn statement_of(envelope: &[u8]) -> Value {
    use base64::Engine;
    let env: Value = serde_json::from_slice(envelope).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_gives_the_documented_verdicts_and_attestations_verify_offline() {
    if common::docker().await.is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let keys = tmp.path().join("keys");
    let data = tmp.path().join("data");
    for (name, code, status) in EXAMPLES {
        let out_file = tmp.path().join(format!("{name}.json"));
        let out = bin()
            // The run must find its container already launched (`verify` launches it as
            // soon as the package is read); the runner says so at debug level.
            .env("RUST_LOG", "warn,skill_verifier::sandbox::docker=debug")
            .arg("verify")
            .arg(example(name))
            .arg("--key-dir")
            .arg(&keys)
            .arg("--out")
            .arg(&out_file)
            .arg("--data-dir")
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(*code),
            "verify {name}: {}",
            show(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(status), "verdict line for {name}: {stderr}");
        // Skills without dependencies run in the prelaunched container (with
        // dependencies the tree carries the distributions and may outgrow it).
        if *name != "python-deps" {
            assert!(
                stderr.contains("took the prelaunched container")
                    && !stderr.contains("unused prelaunched"),
                "{name} did not run in its prelaunched container: {stderr}"
            );
        }
        let statement = statement_of(&std::fs::read(&out_file).unwrap());
        assert_eq!(
            statement["predicate"]["result"]["status"], *status,
            "{name}"
        );
        if *status == "WARNED" {
            assert_eq!(statement["predicate"]["test"]["source"], "smoke");
        }

        let pubkey = std::fs::read_dir(&keys)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().contains("pub"))
            .expect("a public key file");
        let check = bin()
            .args(["attestation", "verify"])
            .arg(&out_file)
            .arg("--key")
            .arg(&pubkey)
            .arg("--package")
            .arg(example(name))
            .output()
            .unwrap();
        assert_eq!(
            check.status.code(),
            Some(0),
            "attestation verify {name}: {}",
            show(&check)
        );
        // The same attestation against another example's tree is refused.
        let other = if *name == "hello-world" {
            "failing-test"
        } else {
            "hello-world"
        };
        let wrong = bin()
            .args(["attestation", "verify"])
            .arg(&out_file)
            .arg("--key")
            .arg(&pubkey)
            .arg("--package")
            .arg(example(other))
            .output()
            .unwrap();
        assert_eq!(
            wrong.status.code(),
            Some(1),
            "wrong package {name}: {}",
            show(&wrong)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_gives_the_documented_exit_codes() {
    let Some(docker) = common::docker().await else {
        return;
    };
    let server = common::TestServer::start(docker, |_| {}).await;
    let url = server.url.clone();
    let tmp = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    for (name, code, status) in EXAMPLES {
        let out_file = tmp.path().join(format!("{name}.json"));
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_skill-verifier"));
        cmd.arg("submit")
            .arg(example(name))
            .args(["--wait", "--timeout", "120", "--server", &url, "--out"])
            .arg(&out_file)
            .env("RUST_LOG", "warn");
        children.push((name, code, status, out_file, cmd.output()));
    }
    for (name, code, status, out_file, child) in children {
        let out = child.await.unwrap();
        assert_eq!(
            out.status.code(),
            Some(*code),
            "submit {name}: {}",
            show(&out)
        );
        let statement = statement_of(&std::fs::read(&out_file).unwrap());
        assert_eq!(
            statement["predicate"]["result"]["status"], *status,
            "{name}"
        );
    }
    // An invalid package exits 2 without creating a job.
    let bad = tmp.path().join("bad.tgz");
    std::fs::write(&bad, b"not an archive").unwrap();
    let out = bin()
        .arg("submit")
        .arg(&bad)
        .args(["--wait", "--server", &url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    // An unreachable daemon exits 3.
    let out = bin()
        .arg("submit")
        .arg(example("hello-world"))
        .args(["--server", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    server.stop().await;
}
