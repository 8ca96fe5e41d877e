//! Crash safety with the real binary: SIGKILL the daemon while jobs run, restart it on the
//! same data dir, and every accepted job still ends with exactly one verifiable attestation;
//! no container is left behind. Also: SIGTERM drains gracefully.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skill_verifier::store::JobStatus;

/// A `serve` process on `data_dir` and its URL (a port of its own, see `spawn_serve`; a
/// restart on the same data dir gets a new one).
fn spawn_daemon(data_dir: &Path) -> (Child, String) {
    spawn_daemon_with(data_dir, &[])
}

fn spawn_daemon_with(data_dir: &Path, env: &[(&str, &str)]) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skill-verifier"));
    cmd.envs(env.iter().copied())
        .args(["serve", "--no-prepare", "--workers", "2"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    common::spawn_serve(cmd)
}

async fn wait_healthy(client: &reqwest::Client, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{url}/health")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("daemon at {url} never became healthy");
}

async fn job(client: &reqwest::Client, url: &str, id: &str) -> Value {
    client
        .get(format!("{url}/verify/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The instance's network sinks (the default network mode gives every test one).
fn labelled_sinks(instance: &str) -> usize {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=dev.skill-verifier.instance={instance}"))
        .args(["--filter", "label=dev.skill-verifier.role=sink"])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

fn labelled_containers(instance: &str) -> usize {
    let out = Command::new("docker")
        .args(["ps", "-aq", "--filter"])
        .arg(format!("label=dev.skill-verifier.instance={instance}"))
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_finishes_every_job_once() {
    if common::docker().await.is_none() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let (mut daemon, url) = spawn_daemon(data.path());
    wait_healthy(&client, &url).await;

    let mut ids = Vec::new();
    for i in 0..4 {
        let archive = common::shell_skill(&format!("crash-{i}"), "sleep 3; echo done");
        let resp = client
            .post(format!("{url}/verify"))
            .body(archive)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let v: Value = resp.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    // Wait until two are really running in containers, then kill -9.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut running = 0;
        for id in &ids {
            if job(&client, &url, id).await["phase"] == "running" {
                running += 1;
            }
        }
        if running >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "jobs never started running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    daemon.kill().unwrap(); // SIGKILL
    daemon.wait().unwrap();
    let instance = std::fs::read_to_string(data.path().join("instance-id")).unwrap();
    assert!(
        labelled_containers(instance.trim()) >= 1,
        "the killed daemon should have left its running containers behind"
    );
    assert!(
        labelled_sinks(instance.trim()) >= 1,
        "and their network sinks (or pooled ones)"
    );

    let (mut daemon, url) = spawn_daemon(data.path());
    wait_healthy(&client, &url).await;
    // Restart reaped the leftovers before running anything again.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut finished = Vec::new();
    for id in &ids {
        loop {
            let j = job(&client, &url, id).await;
            if status_of(&j).is_finished() {
                finished.push(j);
                break;
            }
            assert!(Instant::now() < deadline, "job {id} never finished: {j}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let keys: Value = client
        .get(format!("{url}/keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(
        keys["keys"][0]["public_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    let mut retried = 0;
    for j in &finished {
        assert_eq!(status_of(j), JobStatus::Passed, "{j}");
        let attempt = j["attempt"].as_u64().unwrap();
        if attempt > 1 {
            retried += 1;
        }
        let env = client
            .get(format!(
                "{url}/verify/{}/attestation",
                j["id"].as_str().unwrap()
            ))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let env: skill_verifier::attest::dsse::Envelope = serde_json::from_slice(&env).unwrap();
        let verified = skill_verifier::attest::verify::verify_envelope(&env, &key, None).unwrap();
        assert_eq!(verified.statement.predicate.job.attempt as u64, attempt);
    }
    assert!(retried >= 2, "the interrupted jobs ran again as attempt 2");

    // Stop gracefully (SIGTERM) and count signed results per job in the database.
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    let status = daemon.wait().unwrap();
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    let db = data.path().join("skill-verifier.db");
    for id in &ids {
        assert_eq!(common::attestation_rows(&db, id), 1, "job {id}");
    }
    assert_eq!(
        labelled_containers(instance.trim()),
        0,
        "no container remains"
    );
    assert_eq!(labelled_sinks(instance.trim()), 0, "no sink remains");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_past_the_grace_period_requeues_the_running_job_and_it_finishes_after_restart() {
    if common::docker().await.is_none() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let grace = [("SKILL_VERIFIER_SERVER__SHUTDOWN_GRACE_SECS", "1")];
    let (mut daemon, url) = spawn_daemon_with(data.path(), &grace);
    wait_healthy(&client, &url).await;
    let resp = client
        .post(format!("{url}/verify"))
        .body(common::shell_skill("outlives-grace", "sleep 20; echo done"))
        .send()
        .await
        .unwrap();
    let id = common::accepted_id(resp).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while job(&client, &url, &id).await["phase"] != "running" {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let clock = Instant::now();
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    assert!(daemon.wait().unwrap().success(), "SIGTERM exits cleanly");
    // Grace (1 s) + kill + re-queue + removing the warm pool, well before the test's own
    // 20 s would have ended.
    assert!(
        clock.elapsed() < Duration::from_secs(12),
        "took {:?}",
        clock.elapsed()
    );
    let instance = std::fs::read_to_string(data.path().join("instance-id")).unwrap();
    assert_eq!(
        labelled_containers(instance.trim()),
        0,
        "its container was removed"
    );
    {
        use skill_verifier::store::{JobStatus, Store};
        let store =
            skill_verifier::store::SqliteStore::open(&data.path().join("skill-verifier.db"))
                .unwrap();
        let jid = skill_verifier::ids::JobId::parse(&id).unwrap();
        let row = store.get_job(jid).await.unwrap().unwrap();
        assert_eq!(row.status, JobStatus::Queued, "re-queued, not failed");
        assert_eq!(row.attempt, 1);
        let db = data.path().join("skill-verifier.db");
        assert_eq!(common::attestation_rows(&db, &id), 0);
    }

    let (mut daemon, url) = spawn_daemon(data.path());
    wait_healthy(&client, &url).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let j = job(&client, &url, &id).await;
        if status_of(&j).is_finished() {
            break j;
        }
        assert!(Instant::now() < deadline, "never finished: {j}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status_of(&done), JobStatus::Passed, "{done}");
    assert_eq!(done["attempt"], 2);
    unsafe {
        libc::kill(daemon.id() as i32, libc::SIGTERM);
    }
    assert!(daemon.wait().unwrap().success());
    assert_eq!(labelled_containers(instance.trim()), 0);
}

/// A job's status, parsed into the API's enum.
fn status_of(job: &Value) -> JobStatus {
    serde_json::from_value(job["status"].clone()).expect("a known job status")
}
