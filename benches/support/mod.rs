//! What the daemon benches share: a trivial skill, the real `serve` binary on a free port
//! with a throwaway data dir, submitting and waiting for a job.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A skill whose declared test is `true`, in the shell runtime.
pub fn skill(name: &str) -> Vec<u8> {
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

/// A running `skill-verifier serve`; dropping it sends SIGTERM and waits.
pub struct Daemon {
    pub child: std::process::Child,
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// Starts `serve --no-prepare` on a free loopback port with a fresh data dir; `configure`
/// adds arguments after `serve` (it gets the temp dir, e.g. for a config file). The sandbox's own cost is
/// measured with network none (`BENCH_NETWORK=observe` measures the default mode). Returns
/// once `/health` answers.
pub async fn serve(configure: impl FnOnce(&mut Command, &Path)) -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_skill-verifier"));
    cmd.args(["serve", "--no-prepare"]);
    configure(&mut cmd, dir.path());
    let child = cmd
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "warn")
        .env(
            "SKILL_VERIFIER_SANDBOX__NETWORK",
            std::env::var("BENCH_NETWORK").unwrap_or_else(|_| "none".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..500 {
        if client.get(format!("{url}/health")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Daemon {
        child,
        url,
        _dir: dir,
    }
}

/// POSTs `body` with `?fresh=true` (no cache hit) and returns the job id.
pub async fn submit(client: &reqwest::Client, url: &str, body: Vec<u8>) -> String {
    let resp = client
        .post(format!("{url}/verify?fresh=true"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let v: Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().to_string()
}

/// GETs `url` and parses its JSON body; panics on any failure.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Polls a job every 5 ms until it passed; panics if it ends otherwise.
pub async fn wait_done(client: &reqwest::Client, url: &str, id: &str) {
    loop {
        let v = get_json(client, &format!("{url}/verify/{id}")).await;
        match v["status"].as_str().unwrap() {
            "passed" => return,
            "queued" | "running" => tokio::time::sleep(Duration::from_millis(5)).await,
            other => panic!("job {id} ended {other}: {v}"),
        }
    }
}
