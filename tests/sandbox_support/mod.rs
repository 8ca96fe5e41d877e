//! Shared harness for the sandbox tests that run against the real Docker engine.
//!
//! Each test gets its own daemon-instance label, so tests running in parallel (nextest runs
//! each in its own process) never see each other's containers, and each test ends by
//! checking that no container with its label remains.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use skill_verifier::package::{Runtime, TestPlan, TestSource};
use skill_verifier::sandbox::{
    spec_for, ContainerSpec, DockerRunner, Policy, RunOutcome, Runner, SandboxError,
    LABEL_INSTANCE, LABEL_JOB,
};
use tokio_util::sync::CancellationToken;

/// Connects to the engine. Outside CI a missing engine skips the test loudly; with `CI` set
/// it fails the test.
pub async fn runner() -> Option<DockerRunner> {
    let result = match DockerRunner::connect().await {
        Ok(r) => r.ping().await.map(|()| r),
        Err(e) => Err(e),
    };
    match result {
        Ok(r) => Some(r),
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI is set and the Docker engine is unreachable: {e}")
        }
        Err(e) => {
            eprintln!(
                "!!!!!!!! SKIPPING: Docker engine unreachable ({e}); set CI=1 to fail instead"
            );
            None
        }
    }
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

/// A test plan, built by hand.
pub fn plan(runtime: Runtime, command: &str, timeout_secs: Option<u64>) -> TestPlan {
    TestPlan {
        command: command.to_string(),
        runtime,
        timeout_secs,
        source: TestSource::Declared,
    }
}

/// A policy for tests: the defaults, with half a CPU so parallel tests share the machine.
pub fn policy() -> Policy {
    Policy {
        cpus: 0.5,
        ..Policy::default()
    }
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
    runner.run(&spec, tree, CancellationToken::new()).await
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
