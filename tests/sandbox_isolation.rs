//! The isolation tier and the daemon-less CLI's containers, through the real binary against
//! the real engine:
//! - the attestation records the OCI runtime that actually ran, for each tier;
//! - `verify` and `serve` refuse to start (exit 3, the fix in the message) when the
//!   configured runtime is not registered with the engine;
//! - a later `verify` removes the containers of a `verify` that was killed, and leaves a
//!   live one's alone.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

fn bin(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skill-verifier"));
    cmd.env("RUST_LOG", "warn")
        .env("SKILL_VERIFIER_DATA_DIR", data)
        .env_remove("SKILL_VERIFIER_SANDBOX__ISOLATION")
        .env_remove("SKILL_VERIFIER_SANDBOX__OCI_RUNTIME");
    cmd
}

fn engine_present() -> bool {
    let ok = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok && std::env::var_os("CI").is_some() {
        panic!("CI is set and the Docker engine is unreachable");
    }
    ok
}

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// A skill whose test sleeps for `secs`.
fn sleeper(dir: &Path, secs: u32) -> std::path::PathBuf {
    let root = dir.join("sleeper");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("SKILL.md"),
        format!(
            "---\nname: sleeper\ndescription: sleeps\nmetadata:\n  verify-test: \"sleep {secs}\"\n  verify-runtime: shell\n  verify-timeout: \"{secs}\"\n---\nbody\n"
        ),
    )
    .unwrap();
    root
}

/// Runs `verify` on hello-world under `isolation`; returns the attested runtime.
fn attested_runtime(isolation: &str) -> String {
    let data = tempfile::tempdir().unwrap();
    let out = data.path().join("envelope.json");
    // gVisor runs with no network here (the settings refuse a sink under runsc).
    let network = if isolation == "gvisor" {
        "none"
    } else {
        "observe"
    };
    let run = bin(data.path())
        .env("SKILL_VERIFIER_SANDBOX__ISOLATION", isolation)
        .env("SKILL_VERIFIER_SANDBOX__NETWORK", network)
        .args(["verify".as_ref(), example("hello-world").as_os_str()])
        .args(["--out".as_ref(), out.as_os_str()])
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let envelope: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    let statement: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    statement["predicate"]["environment"]["isolation"]["runtime"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_attestation_records_runc_for_the_runc_tier() {
    if !engine_present() {
        return;
    }
    assert_eq!(attested_runtime("runc"), "runc");
}

#[test]
fn gvisor_with_a_network_is_refused_at_start_not_downgraded() {
    let data = tempfile::tempdir().unwrap();
    for network in ["observe", "allowlist"] {
        let run = bin(data.path())
            .env("SKILL_VERIFIER_SANDBOX__ISOLATION", "gvisor")
            .env("SKILL_VERIFIER_SANDBOX__NETWORK", network)
            .args(["verify".as_ref(), example("hello-world").as_os_str()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert_eq!(run.status.code(), Some(3), "{stderr}");
        assert!(
            stderr.contains("sandbox.network") && stderr.contains("gVisor"),
            "{stderr}"
        );
    }
}

#[test]
fn the_attestation_records_runsc_for_the_gvisor_tier() {
    if !engine_present() {
        return;
    }
    assert_eq!(attested_runtime("gvisor"), "runsc");
}

#[test]
fn verify_and_serve_refuse_a_runtime_the_engine_lacks() {
    if !engine_present() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let verify = bin(data.path())
        .env("SKILL_VERIFIER_SANDBOX__OCI_RUNTIME", "no-such-runtime")
        .args(["verify".as_ref(), example("hello-world").as_os_str()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert_eq!(verify.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("no-such-runtime") && stderr.contains("scripts/setup"),
        "{stderr}"
    );
    let serve = bin(data.path())
        .env("SKILL_VERIFIER_SANDBOX__OCI_RUNTIME", "no-such-runtime")
        .args(["serve", "--listen", "127.0.0.1:0", "--no-prepare"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert_eq!(serve.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("scripts/setup"), "{stderr}");
}

/// Containers carrying a lease whose pid is `pid`.
fn leased_by(pid: u32) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=dev.skill-verifier.lease",
            "--format",
            "{{.ID}} {{.Label \"dev.skill-verifier.lease\"}}",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (id, lease) = l.split_once(' ')?;
            (lease.split('/').nth(2)? == pid.to_string()).then(|| id.to_string())
        })
        .collect()
}

/// Starts `verify` on a sleeper and waits until its container exists. The caller waits on
/// the child (clippy cannot see through the return).
#[allow(clippy::zombie_processes)]
fn start_sleeping_verify(data: &Path, skill: &Path) -> (Child, Vec<String>) {
    let mut child = bin(data)
        .args(["verify".as_ref(), skill.as_os_str()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // With a network mode that has one, the sink comes first, then the test's container.
    let expected = match std::env::var("SKILL_VERIFIER_SANDBOX__NETWORK").as_deref() {
        Ok("none") => 1,
        _ => 2,
    };
    let begun = Instant::now();
    loop {
        let ids = leased_by(child.id());
        if ids.len() >= expected {
            return (child, ids);
        }
        if begun.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no container appeared");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_later_verify_removes_a_killed_clis_containers_and_not_a_live_ones() {
    if !engine_present() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let skill = sleeper(data.path(), 120);
    let (mut dead, dead_ids) = start_sleeping_verify(data.path(), &skill);
    dead.kill().unwrap(); // SIGKILL: no cleanup runs.
    dead.wait().unwrap();
    assert_eq!(
        leased_by(dead.id()),
        dead_ids,
        "the killed CLI's container stays"
    );

    let (mut live, live_ids) = start_sleeping_verify(data.path(), &skill);
    let quick = bin(data.path())
        .args(["verify".as_ref(), example("hello-world").as_os_str()])
        .output()
        .unwrap();
    assert_eq!(quick.status.code(), Some(0));
    assert!(
        leased_by(dead.id()).is_empty(),
        "the dead run's container was not reaped"
    );
    assert_eq!(
        leased_by(live.id()),
        live_ids,
        "the live run's container was touched"
    );

    // Ctrl-C: the live run cancels and removes its own container.
    // SAFETY: plain kill(2) on our own child.
    unsafe { libc::kill(live.id() as i32, libc::SIGINT) };
    let status = live.wait().unwrap();
    assert_eq!(status.code(), Some(3));
    assert!(
        leased_by(live.id()).is_empty(),
        "the interrupted run left its container"
    );
}
