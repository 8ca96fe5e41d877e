//! Shared harness for the sandbox tests that run against the real Docker engine.
//!
//! Each test gets its own daemon-instance label, so tests running in parallel (nextest runs
//! each in its own process) never see each other's containers, and each test ends by
//! checking that no container with its label remains.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use skill_verifier::package::{Runtime, TestPlan, TestSource, TreeTar};
use skill_verifier::sandbox::{
    spec_for, ContainerSpec, DockerRunner, Isolation, Policy, RunOutcome, Runner, SandboxError,
    LABEL_INSTANCE, LABEL_JOB,
};
use tokio_util::sync::CancellationToken;

#[path = "../common/engine.rs"]
mod engine;

/// Connects to the engine (the shared rule: skips loudly outside CI, fails under `CI`).
pub async fn runner() -> Option<DockerRunner> {
    engine::connect().await
}

/// A fresh instance label for one test.
pub fn instance() -> String {
    format!("sv-test-{}", uuid::Uuid::new_v4())
}

/// Labels for one run.
pub fn labels(instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_INSTANCE.to_string(), instance.to_string()),
        (LABEL_JOB.to_string(), uuid::Uuid::new_v4().to_string()),
    ])
}

/// A skill tree on disk: `(path, content, executable)`.
pub fn tree(files: &[(&str, &str, bool)]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("SKILL.md"),
        "---\nname: t\ndescription: a test skill\n---\nbody\n",
    )
    .unwrap();
    for (path, content, exec) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        let mode = if *exec { 0o755 } else { 0o644 };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

/// The normalised tar of the tree under `root`, in a temporary directory that lives as long
/// as the returned guard (the package stage's blob, in production).
pub fn tar_of(root: &Path) -> (tempfile::TempDir, TreeTar) {
    let dir = tempfile::tempdir().unwrap();
    let tar = TreeTar::write_from_dir(root, &dir.path().join("tree.tar")).unwrap();
    (dir, tar)
}

/// A test plan, built by hand.
pub fn plan(runtime: Runtime, command: &str, timeout_secs: Option<u64>) -> TestPlan {
    TestPlan {
        command: command.to_string(),
        runtime,
        timeout_secs,
        source: TestSource::Declared,
    }
}

/// The isolation tier the sandbox tests run under: `SKILL_VERIFIER_SANDBOX__ISOLATION`
/// (`runc` by default, `gvisor` for the second pass in CI).
pub fn isolation() -> Isolation {
    match std::env::var("SKILL_VERIFIER_SANDBOX__ISOLATION").as_deref() {
        Ok("gvisor") => Isolation::Gvisor,
        Ok("runc") | Err(_) => Isolation::Runc,
        Ok(other) => panic!("SKILL_VERIFIER_SANDBOX__ISOLATION={other}: expected runc or gvisor"),
    }
}

/// A policy for tests: the defaults under [`isolation`], with half a CPU so parallel tests
/// share the machine.
pub fn policy() -> Policy {
    let isolation = isolation();
    Policy {
        cpus: 0.5,
        isolation,
        // gVisor runs with no network only (the settings refuse anything else with it).
        network: match isolation {
            Isolation::Gvisor => "none".into(),
            Isolation::Runc => Policy::default().network,
        },
        ..Policy::default()
    }
}

/// The bound every run must end within: timeout + kill grace + 3 s.
pub fn bound(timeout_secs: u64, policy: &Policy) -> std::time::Duration {
    std::time::Duration::from_secs(timeout_secs + policy.kill_grace_secs + 3)
}

/// The spec for `command` under `policy`.
pub fn spec(
    instance: &str,
    runtime: Runtime,
    command: &str,
    timeout: Option<u64>,
    policy: &Policy,
) -> ContainerSpec {
    spec_for(&plan(runtime, command, timeout), policy, labels(instance)).unwrap()
}

/// Runs `command` in `runtime` over `tree` and returns the outcome.
pub async fn run_in(
    runner: &DockerRunner,
    instance: &str,
    runtime: Runtime,
    command: &str,
    timeout: Option<u64>,
    policy: &Policy,
    tree: &Path,
) -> Result<RunOutcome, SandboxError> {
    let spec = spec(instance, runtime, command, timeout, policy);
    let (_dir, tar) = tar_of(tree);
    runner.run(&spec, &tar, CancellationToken::new()).await
}

/// Runs a shell command with the test policy over a minimal tree.
pub async fn sh(
    runner: &DockerRunner,
    instance: &str,
    command: &str,
    timeout: Option<u64>,
) -> RunOutcome {
    let t = tree(&[]);
    run_in(
        runner,
        instance,
        Runtime::Shell,
        command,
        timeout,
        &policy(),
        t.path(),
    )
    .await
    .unwrap()
}

/// Asserts that no container with this instance label remains.
pub async fn assert_no_leftovers(runner: &DockerRunner, instance: &str) {
    let left = runner.reap(instance).await.unwrap();
    assert_eq!(
        left, 0,
        "{left} container(s) with label {instance} were left behind"
    );
}

/// Text of a captured stream.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
