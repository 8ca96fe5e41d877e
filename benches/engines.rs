//! Jobs per minute with one engine against two (issue 14), in the same run.
//!
//! The second engine is a `dockerd` on a loopback TCP port with mutual TLS
//! (`tests/common/dockerd.rs`: vfs storage, its own bridge), on the **same 2-core machine**:
//! both engines share the cores, so this measures what a second engine costs and whether the
//! routing spreads work, not what a second machine would add.
//!
//! Each round starts `skill-verifier serve` (the real binary, `network = "none"`, default warm
//! pool) from a config file:
//! - one engine: `[[sandbox.engines]]` local, capacity 4;
//! - two engines: local capacity 4 plus the TLS engine capacity 4.
//!
//! Workers are the sum of the capacities, the default with engines configured. It submits
//! `JOBS` (24) trivial skills at once and times them until all have passed. The two settings
//! alternate over `ROUNDS` (3) rounds.
//!
//! Run: `cargo bench --bench engines` (needs Docker, root for the second dockerd, and the
//! prepared runner images; the shell image is built on the TLS engine by the recipe).

#[path = "../tests/common/dockerd.rs"]
#[allow(dead_code)]
mod dockerd;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use skill_verifier::package::Runtime;
use skill_verifier::sandbox::images::{default_image, prepare, PrepareOptions};
use skill_verifier::sandbox::{DockerRunner, ImageMap};

fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some()
}

fn skill(name: &str) -> Vec<u8> {
    let md = format!(
        "---\nname: {name}\ndescription: Trivial benchmark skill.\nmetadata:\n  verify-test: \"true\"\n  verify-runtime: shell\n---\n"
    );
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(md.len() as u64);
    h.set_mode(0o644);
    tar.append_data(&mut h, "SKILL.md", md.as_bytes()).unwrap();
    tar.into_inner().unwrap().finish().unwrap()
}

struct Daemon {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

async fn start_daemon(config: &str) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(env!("CARGO_BIN_EXE_skill-verifier"))
        .arg("--config")
        .arg(&config_path)
        .args(["serve", "--no-prepare", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .env("SKILL_VERIFIER_SANDBOX__NETWORK", "none")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..500 {
        if let Ok(r) = client.get(format!("{url}/health")).send().await {
            let v: Value = r.json().await.unwrap();
            assert!(
                v["engines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|e| e["reachable"] == true),
                "{v}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the warm pools fill before timing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Daemon {
        child,
        url,
        _dir: dir,
    }
}

async fn burst(daemon: &Daemon, jobs: usize, tag: &str) -> (Duration, Vec<String>) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..jobs {
        let resp = client
            .post(format!("{}/verify?fresh=true", daemon.url))
            .body(skill(&format!("bench-{tag}-{i}")))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        let v: Value = resp.json().await.unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        loop {
            let v: Value = client
                .get(format!("{}/verify/{id}", daemon.url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            match v["status"].as_str().unwrap() {
                "passed" => break,
                "queued" | "running" => tokio::time::sleep(Duration::from_millis(10)).await,
                other => panic!("job {id} ended {other}: {v}"),
            }
        }
    }
    let elapsed = started.elapsed();
    // Which engine ran each job, from its attestation.
    let mut engines = Vec::new();
    for id in &ids {
        let env: Value = client
            .get(format!("{}/verify/{id}/attestation", daemon.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let payload = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            env["payload"].as_str().unwrap(),
        )
        .unwrap();
        let statement: Value = serde_json::from_slice(&payload).unwrap();
        engines.push(
            statement["predicate"]["environment"]["engine"]
                .as_str()
                .unwrap_or("?")
                .to_string(),
        );
    }
    (elapsed, engines)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let remote = dockerd::TlsDockerd::start().await;
    let tls = DockerRunner::connect_to(remote.target("remote", 4))
        .await
        .unwrap();
    let images: ImageMap = [(Runtime::Shell, default_image(Runtime::Shell))].into();
    let mut progress = |line: &str| eprintln!("images[remote]: {line}");
    prepare(
        &tls,
        &images,
        PrepareOptions {
            no_pull: true,
            force_build: false,
        },
        &mut progress,
    )
    .await
    .expect("the shell image builds on the TLS engine");

    let local = "[[sandbox.engines]]\nname = \"local\"\nhost = \"unix:///var/run/docker.sock\"\ncapacity = 4\n";
    let two = format!(
        "{local}\n[[sandbox.engines]]\nname = \"remote\"\nhost = \"{}\"\ntls_verify = true\ncert_path = \"{}\"\ncapacity = 4\n",
        remote.host,
        remote.client.display()
    );
    let (jobs, rounds) = if smoke() { (4, 1) } else { (24, 3) };
    println!("engines: {jobs} trivial jobs at once, network none, {rounds} round(s), alternating");
    let mut one_rates = Vec::new();
    let mut two_rates = Vec::new();
    for round in 0..rounds {
        for (label, config) in [("one", local.to_string()), ("two", two.clone())] {
            let daemon = start_daemon(&config).await;
            let (elapsed, engines) = burst(&daemon, jobs, &format!("{label}-{round}")).await;
            drop(daemon);
            let per_min = jobs as f64 / elapsed.as_secs_f64() * 60.0;
            let remote_share = engines.iter().filter(|e| *e == "remote").count();
            println!(
                "round {round} {label} engine(s): {jobs} jobs in {:.0} ms = {per_min:.0} jobs/min ({remote_share} on the TLS engine)",
                elapsed.as_secs_f64() * 1000.0
            );
            if label == "one" {
                assert_eq!(remote_share, 0);
                one_rates.push(per_min);
            } else {
                two_rates.push(per_min);
            }
        }
    }
    let ratios: Vec<String> = one_rates
        .iter()
        .zip(&two_rates)
        .map(|(one, two)| format!("{:.2}", two / one))
        .collect();
    println!(
        "jobs/min two engines / one engine, per round: {} (same 2 cores for both engines)",
        ratios.join(", ")
    );
}
