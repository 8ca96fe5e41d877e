//! Shared harness for integration tests: the real server on port 0, real Docker, archives
//! built in code.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use skill_verifier::api::views::JobView;
use skill_verifier::api::Daemon;
use skill_verifier::config::Settings;
use skill_verifier::digest::Sha256Digest;
use skill_verifier::sandbox::{ContainerSpec, RunOutcome, Runner, SandboxError};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub mod dockerd;
pub mod engine;
pub mod pg;

/// The real Docker runner (the shared rule: skips loudly outside CI, fails under `CI`).
pub async fn docker() -> Option<Arc<dyn Runner>> {
    engine::connect()
        .await
        .map(|r| Arc::new(r) as Arc<dyn Runner>)
}

/// A runner double for tests of the HTTP layer's error paths: every run passes at once.
pub struct InstantRunner;

#[async_trait]
impl Runner for InstantRunner {
    async fn run(
        &self,
        spec: &ContainerSpec,
        _tree: &skill_verifier::package::TreeTar,
        _cancel: CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        Ok(RunOutcome {
            exit_code: 0,
            duration_ms: 1,
            timed_out: false,
            oom_killed: false,
            output_truncated: false,
            cancelled: false,
            stdout: b"ok\n".to_vec(),
            stderr: Vec::new(),
            stdout_sha256: Sha256Digest::of(b"ok\n"),
            stderr_sha256: Sha256Digest::of(b""),
            image: spec.image.clone(),
            image_digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
                .into(),
            oci_runtime: "runc".into(),
            limits: spec.limits.clone(),
            network: None,
            install: None,
            engine: None,
        })
    }
    async fn image_digest(&self, _image: &str) -> Result<String, SandboxError> {
        Ok("sha256:0000000000000000000000000000000000000000000000000000000000000000".into())
    }
    async fn ping(&self) -> Result<(), SandboxError> {
        Ok(())
    }
    async fn reap(&self, _instance: &str) -> Result<usize, SandboxError> {
        Ok(0)
    }
}

/// Starts a `serve` process (`cmd` holds the program and its other arguments) on
/// `127.0.0.1:0` and returns it with its URL, read from the "listening on http://…" line the
/// daemon prints once it has bound. No port is picked before the daemon binds it, so daemons
/// of tests running at the same time cannot take each other's. The child's stderr is passed
/// through to the test's own. Panics, with the child's exit status, when it exits or stays
/// silent for 60 s before binding.
pub fn spawn_serve(mut cmd: std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    cmd.arg("--listen")
        .arg("127.0.0.1:0")
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("starting the daemon");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            eprintln!("{line}");
            if let Some((_, url)) = line.split_once(" listening on ") {
                // Only the first is read; later sends go nowhere.
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(url) => (child, url),
        Err(e) => {
            let _ = child.kill();
            panic!(
                "the daemon never said where it listens ({e}); exit: {:?}",
                child.wait()
            );
        }
    }
}

/// A daemon serving on 127.0.0.1:0 until dropped or stopped.
pub struct TestServer {
    pub url: String,
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Starts a daemon with `configure` applied to default settings and a fresh data dir.
    pub async fn start(runner: Arc<dyn Runner>, configure: impl FnOnce(&mut Settings)) -> Self {
        Self::start_with_workers(runner, configure, 2).await
    }

    /// Starts a daemon that accepts jobs but runs none (they stay queued).
    pub async fn start_paused(
        runner: Arc<dyn Runner>,
        configure: impl FnOnce(&mut Settings),
    ) -> Self {
        Self::start_with_workers(runner, configure, 0).await
    }

    async fn start_with_workers(
        runner: Arc<dyn Runner>,
        configure: impl FnOnce(&mut Settings),
        workers: usize,
    ) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            data_dir: Some(data_dir.path().to_path_buf()),
            ..Settings::default()
        };
        settings.server.shutdown_grace_secs = 5;
        configure(&mut settings);
        let mut daemon = Daemon::open(settings, runner).await.unwrap();
        daemon.set_workers(workers);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            url: format!("http://{addr}"),
            addr,
            data_dir,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// POSTs a raw archive.
    pub async fn submit(&self, archive: Vec<u8>) -> reqwest::Response {
        self.client
            .post(format!("{}/verify", self.url))
            .header("content-type", "application/octet-stream")
            .body(archive)
            .send()
            .await
            .unwrap()
    }

    /// GETs `path` (e.g. `/jobs?limit=1`) and parses the JSON answer, whatever its status.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.client
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Asserts that no job exists and no partial upload lies in the blob directory: what a
    /// refused or cut-off upload must leave behind.
    pub async fn assert_nothing_accepted(&self) {
        let jobs = self.get_json("/jobs").await;
        assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");
        let leftovers: Vec<_> = std::fs::read_dir(self.data_dir.path().join("blobs"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "partial uploads left: {leftovers:?}");
    }

    /// GETs a job.
    pub async fn job(&self, id: &str) -> JobView {
        let resp = self
            .client
            .get(format!("{}/verify/{id}", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "GET /verify/{id}");
        resp.json().await.unwrap()
    }

    /// A finished job's statement, after verifying its envelope against `GET /keys`.
    pub async fn statement(&self, id: &str) -> serde_json::Value {
        let envelope = self
            .client
            .get(format!("{}/verify/{id}/attestation", self.url))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        verify_with_published_key(self, &envelope).await
    }

    /// Polls a job until it is finished (or panics after `secs`).
    pub async fn wait(&self, id: &str, secs: u64) -> JobView {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let job = self.job(id).await;
            if job.status.is_finished() {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} still {} after {secs}s",
                job.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A skill's files: (path, content, executable).
pub type Files<'a> = &'a [(&'a str, &'a str, bool)];

/// A SKILL.md with the given name and metadata lines (already indented YAML).
pub fn skill_md(name: &str, metadata: &[(&str, &str)]) -> String {
    let mut md = format!("---\nname: {name}\ndescription: Test skill {name} for skill-verifier.\n");
    if !metadata.is_empty() {
        md.push_str("metadata:\n");
        for (k, v) in metadata {
            md.push_str(&format!("  {k}: {v:?}\n"));
        }
    }
    md.push_str("---\n\n# Test skill\n");
    md
}

/// A tar.gz of the given files under an optional top folder.
pub fn tar_gz(top: Option<&str>, files: Files<'_>) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, content, exec) in files {
        let full = match top {
            Some(t) => format!("{t}/{path}"),
            None => path.to_string(),
        };
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(if *exec { 0o755 } else { 0o644 });
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, full, content.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// A zip of the given files.
pub fn zip(files: Files<'_>) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut buf);
        for (path, content, exec) in files {
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(if *exec {
                0o755
            } else {
                0o644
            });
            z.start_file(*path, opts).unwrap();
            z.write_all(content.as_bytes()).unwrap();
        }
        z.finish().unwrap();
    }
    buf.into_inner()
}

/// The job id of an accepted submission: asserts `202 Accepted` and reads `id`.
pub async fn accepted_id(resp: reqwest::Response) -> String {
    assert_eq!(resp.status(), 202);
    resp.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A shell skill whose declared test is `test`.
pub fn shell_skill(name: &str, test: &str) -> Vec<u8> {
    let md = skill_md(name, &[("verify-test", test), ("verify-runtime", "shell")]);
    tar_gz(None, &[("SKILL.md", &md, false)])
}

/// Verifies an envelope against the daemon's published key.
pub async fn verify_with_published_key(server: &TestServer, envelope: &[u8]) -> serde_json::Value {
    use ed25519_dalek::pkcs8::DecodePublicKey;
    let keys: serde_json::Value = server
        .client
        .get(format!("{}/keys", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pem = keys["keys"][0]["public_key_pem"].as_str().unwrap();
    let key = ed25519_dalek::VerifyingKey::from_public_key_pem(pem).unwrap();
    let envelope: skill_verifier::attest::dsse::Envelope =
        serde_json::from_slice(envelope).unwrap();
    let verified = skill_verifier::attest::verify::verify_envelope(&envelope, &key, None)
        .expect("the attestation verifies under the published key");
    serde_json::to_value(&verified.statement).unwrap()
}

/// How many signed results (attestation rows) the SQLite database at `db` holds for job
/// `id`: each finished attempt must have exactly one. Read straight from the file, as an
/// outside check of the store.
pub fn attestation_rows(db: &std::path::Path, id: &str) -> u64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM attestations WHERE job_id = ?1",
        [id],
        |row| row.get::<_, i64>(0),
    )
    .unwrap() as u64
}
