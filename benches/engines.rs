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

use std::time::{Duration, Instant};

use serde_json::Value;

mod support;
use support::{get_json, serve, skill, submit, wait_done, Daemon};

fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some()
}

async fn start_daemon(config: &str) -> Daemon {
    let daemon = serve(|cmd, dir| {
        let path = dir.join("config.toml");
        std::fs::write(&path, config).unwrap();
        cmd.arg("--config").arg(path);
    })
    .await;
    let health: Value = reqwest::get(format!("{}/health", daemon.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        health["engines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["reachable"] == true),
        "{health}"
    );
    // Let the warm pools fill before timing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon
}

async fn burst(daemon: &Daemon, jobs: usize, tag: &str) -> (Duration, Vec<String>) {
    let client = reqwest::Client::new();
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 0..jobs {
        ids.push(submit(&client, &daemon.url, skill(&format!("bench-{tag}-{i}"))).await);
    }
    for id in &ids {
        wait_done(&client, &daemon.url, id).await;
    }
    let elapsed = started.elapsed();
    // Which engine ran each job, from its attestation.
    let mut engines = Vec::new();
    for id in &ids {
        let env = get_json(&client, &format!("{}/verify/{id}/attestation", daemon.url)).await;
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
    remote.prepare_shell_image().await;

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
