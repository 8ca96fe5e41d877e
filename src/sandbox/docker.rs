//! The bollard runner: the only file that speaks to the Docker engine.
//!
//! One run, step by step:
//! 1. walk the validated tree on the host (`package::tree_entries`), size the working-copy
//!    tmpfs as `work_bytes` + the tree's own footprint;
//! 2. create the container: read-only rootfs, tmpfs `/work` (owned by the test user, `exec`)
//!    and `/tmp`, every limit from the spec, labels (instance, job);
//! 3. attach (stdin, stdout, stderr) **before** start, so no output is lost;
//! 4. start, stream a tar of the tree into stdin (built on a blocking thread, handed over
//!    through a bounded channel, so memory stays flat for any tree size), close stdin; the
//!    image's `tar` unpacks it and `exec`s the test with `sh -c` in `/work`;
//! 5. read output, counting bytes as they arrive: keep up to `output_bytes` per stream, discard
//!    the rest, kill the container once `output_kill_bytes` arrived in total;
//! 6. the deadline is ours (`tokio::time`), not bollard's: on expiry SIGTERM, then SIGKILL
//!    after `kill_grace_secs`; cancellation sends SIGKILL at once;
//! 7. wait for the exit, inspect for the exit code, `OOMKilled` and the image ID;
//! 8. remove the container (force, with volumes), always; a drop guard removes it too if the
//!    future is dropped half-way.
//!
//! Why stdin and not `upload_to_container` or a bind mount: bind mounts tie the daemon to the
//! engine's host and make the host follow paths; an upload into a tmpfs path lands under the
//! mount and vanishes, and an upload into a read-only rootfs is refused by the engine. Streaming
//! through the attach connection works with a remote engine and needs nothing from the image but
//! `sh` and `tar`.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use async_trait::async_trait;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig, ResourcesUlimits};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, CreateContainerOptions, CreateImageOptionsBuilder,
    InspectContainerOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::digest::Sha256Digest;
use crate::package::{tree_entries, TreeEntry};

use super::spec::{UNPACK_FAILED_EXIT, UNPACK_FAILED_MARKER};
use super::{ContainerSpec, RunOutcome, Runner, SandboxError, LABEL_INSTANCE, LABEL_JOB};

/// Deadline for one ordinary API call (create, start, inspect, remove, ...).
const API_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline for a health probe: `/health` must answer promptly even when the engine hangs.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for connecting and negotiating the API version.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the container may take to go away after SIGKILL before we call the engine stuck.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
/// After the exit is known, how long to keep draining output the engine still has buffered.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for pulling one image.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);
/// bollard's own request timeout covers only the wait for response headers, and it is
/// shared by every call. Every call here has its own deadline (above, or the run's timeout),
/// so bollard's is set out of the way: a long test must never be cut by a client timeout.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Chunk size of the tar stream into the container.
const TAR_CHUNK: usize = 64 * 1024;
/// tmpfs charges whole pages.
const PAGE: u64 = 4096;

/// Runs container specs against a Docker engine. Cheap to clone; safe to share across tasks.
#[derive(Clone, Debug)]
pub struct DockerRunner {
    docker: Docker,
    /// When set, a finished container is removed in the background (tracked here) instead of
    /// before `run` returns: the daemon answers sooner, and `settle` waits for the removals.
    removals: Option<tokio_util::task::TaskTracker>,
    /// Containers created ahead of demand, when enabled.
    pool: Option<Arc<WarmPool>>,
}

/// Trees up to this size may use a warm container (its work tmpfs is sized for them).
const POOL_TREE_BYTES: u64 = 16 * 1024 * 1024;

/// Containers created (never started) ahead of demand, keyed by their job-independent spec.
/// Creating is ~10% of a trivial run here; taking a warm container skips it, and a background
/// task replaces what was taken. A created, never started container is as fresh as a new one.
#[derive(Debug)]
struct WarmPool {
    per_key: usize,
    idle: std::sync::Mutex<HashMap<String, Vec<String>>>,
    /// Runs between create/take and their outcome.
    in_flight: AtomicUsize,
}

/// Counts one run in flight for as long as it lives.
struct Busy(Arc<WarmPool>);

impl Busy {
    fn enter(pool: Arc<WarmPool>) -> Self {
        pool.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(pool)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl WarmPool {
    fn len(&self, key: &str) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .map_or(0, Vec::len)
    }

    fn take(&self, key: &str) -> Option<String> {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(key)
            .and_then(Vec::pop)
    }

    /// Keeps `id` if the key has room; gives it back otherwise.
    fn put(&self, key: &str, id: String) -> Option<String> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let slot = idle.entry(key.to_string()).or_default();
        if slot.len() < self.per_key {
            slot.push(id);
            None
        } else {
            Some(id)
        }
    }

    fn drain(&self) -> Vec<String> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.drain().flat_map(|(_, ids)| ids).collect()
    }
}

impl DockerRunner {
    /// Connects to the engine named by `DOCKER_HOST` (`unix://`, `tcp://`, `http://`), or the
    /// local socket `/var/run/docker.sock`, and negotiates the API version (the engine may be
    /// older than bollard, e.g. 20.10 speaks API 1.41).
    pub async fn connect() -> Result<Self, SandboxError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| SandboxError::Connect(e.to_string()))?
            .with_timeout(CLIENT_TIMEOUT);
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(SandboxError::Connect(e.to_string())),
            Err(_) => {
                return Err(SandboxError::Connect(format!(
                    "no answer within {} s",
                    CONNECT_TIMEOUT.as_secs()
                )))
            }
        };
        Ok(Self {
            docker,
            removals: None,
            pool: None,
        })
    }

    /// Keeps up to `per_key` containers created ahead of demand for each container shape
    /// (runtime image and policy); 0 disables. Needs background removal's tracker for the
    /// refills, so it enables that too.
    pub fn with_warm_pool(mut self, per_key: usize) -> Self {
        if per_key > 0 {
            self.pool = Some(Arc::new(WarmPool {
                per_key,
                idle: std::sync::Mutex::new(HashMap::new()),
                in_flight: AtomicUsize::new(0),
            }));
            if self.removals.is_none() {
                self.removals = Some(tokio_util::task::TaskTracker::new());
            }
        }
        self
    }

    /// Removes finished containers in the background instead of before `run` returns (the
    /// removal is off the job's critical path; [`Runner::settle`] waits for them, and the
    /// start-up reaper covers a crash in between).
    pub fn with_background_removal(mut self) -> Self {
        self.removals = Some(tokio_util::task::TaskTracker::new());
        self
    }

    /// Wraps an already connected (and version-negotiated) client.
    pub fn from_client(docker: Docker) -> Self {
        Self {
            docker,
            removals: None,
            pool: None,
        }
    }

    /// Whether `image` exists on the engine.
    pub async fn image_present(&self, image: &str) -> Result<bool, SandboxError> {
        match self.image_digest(image).await {
            Ok(_) => Ok(true),
            Err(SandboxError::ImageMissing { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Pulls `image` from its registry; `progress` gets one line per status change.
    pub async fn pull(
        &self,
        image: &str,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), SandboxError> {
        let (repo, tag) = split_reference(image);
        let options = CreateImageOptionsBuilder::new()
            .from_image(repo)
            .tag(tag)
            .build();
        let pull = async {
            let mut stream = self.docker.create_image(Some(options), None, None);
            let mut last = String::new();
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| SandboxError::Image {
                    image: image.to_string(),
                    message: format!("pull: {}", engine_message(&e)),
                })?;
                if let Some(status) = info.status {
                    if status != last {
                        progress(&status);
                        last = status;
                    }
                }
            }
            Ok(())
        };
        match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(r) => r,
            Err(_) => Err(SandboxError::Timeout {
                operation: "pull image",
                secs: PULL_TIMEOUT.as_secs(),
            }),
        }
    }

    /// Creates a container for `spec` with room for `tree_bytes` in its working copy.
    async fn create(&self, spec: &ContainerSpec, tree_bytes: u64) -> Result<String, SandboxError> {
        let body = create_body(spec, tree_bytes)?;
        match call(
            "create container",
            self.docker
                .create_container(None::<CreateContainerOptions>, body),
        )
        .await
        {
            Ok(c) => Ok(c.id),
            Err(SandboxError::Docker { message, .. }) if message.contains("No such image") => {
                Err(SandboxError::ImageMissing {
                    image: spec.image.clone(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Tops the pool up for `key` in the background (tracked, so `settle` waits).
    fn refill(&self, pool: Arc<WarmPool>, generic: ContainerSpec, key: String) {
        let Some(tracker) = &self.removals else {
            return;
        };
        let missing = pool.per_key.saturating_sub(pool.len(&key));
        let runner = self.clone();
        tracker.spawn(async move {
            for _ in 0..missing {
                match runner.create(&generic, POOL_TREE_BYTES).await {
                    Ok(id) => {
                        if let Some(extra) = pool.put(&key, id) {
                            let _ = runner.remove(&extra).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "warm container not created");
                        break;
                    }
                }
            }
        });
    }

    async fn kill(&self, id: &str, signal: &str) {
        let options = KillContainerOptionsBuilder::new().signal(signal).build();
        // A container that already exited answers 409: nothing to do then.
        if let Err(e) = call(
            "kill container",
            self.docker.kill_container(id, Some(options)),
        )
        .await
        {
            tracing::debug!(container = id, signal, error = %e, "kill");
        }
    }

    async fn remove(&self, id: &str) -> Result<(), SandboxError> {
        remove_container(&self.docker, id).await
    }

    /// Everything between create and remove; the caller removes the container whatever
    /// this returns.
    async fn drive(
        &self,
        id: &str,
        spec: &ContainerSpec,
        tree: &Path,
        entries: Vec<TreeEntry>,
        cancel: CancellationToken,
        command_line: Option<Vec<u8>>,
    ) -> Result<RunOutcome, SandboxError> {
        let options = AttachContainerOptionsBuilder::new()
            .stream(true)
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let AttachContainerResults { mut output, input } = call(
            "attach container",
            self.docker.attach_container(id, Some(options)),
        )
        .await?;

        call("start container", self.docker.start_container(id, None)).await?;
        let started = Instant::now();

        // The tar is built on a blocking thread (file reads) and handed over in chunks through
        // a small bounded channel: memory stays flat whatever the tree's size.
        let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
        if let Some(line) = command_line {
            // A warm container reads its command first (spec::READ_COMMAND_UNPACK_AND_RUN).
            let _ = tx.send(line).await;
        }
        let root = tree.to_path_buf();
        let producer = tokio::task::spawn_blocking(move || write_tar(&root, &entries, tx));
        // Aborted when this function returns, on every path: an early error must not leave
        // it writing into a connection nobody reads.
        let feeder = AbortOnDrop(tokio::spawn(feed(rx, input)));

        // Waiting for the exit runs alongside reading output: a test that closes its stdout
        // and keeps running must still meet the deadline.
        let wait_options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(id, Some(wait_options));

        let limits = &spec.limits;
        let mut stdout = Capture::new(limits.output_bytes);
        let mut stderr = Capture::new(limits.output_bytes);
        let mut phase = Phase::Running;
        let mut wake = started + Duration::from_secs(limits.timeout_secs);
        let mut timed_out = false;
        let mut cancelled = false;
        let mut output_done = false;
        let mut exited = false;

        while !(output_done && exited) {
            tokio::select! {
                // biased: under an output flood the stream is always ready; the deadline and
                // cancellation must still win.
                biased;
                _ = cancel.cancelled(), if !cancelled && !exited => {
                    cancelled = true;
                    self.kill(id, "SIGKILL").await;
                    phase = Phase::Killed;
                    wake = Instant::now() + EXIT_TIMEOUT;
                }
                _ = tokio::time::sleep_until(wake) => match phase {
                    Phase::Running => {
                        timed_out = true;
                        self.kill(id, "SIGTERM").await;
                        phase = Phase::Terminating;
                        wake = Instant::now() + Duration::from_secs(limits.kill_grace_secs);
                    }
                    Phase::Terminating => {
                        self.kill(id, "SIGKILL").await;
                        phase = Phase::Killed;
                        wake = Instant::now() + EXIT_TIMEOUT;
                    }
                    // Exited, and the engine still holds output after the drain window:
                    // stop reading; what we have is what the attestation gets.
                    Phase::Draining => break,
                    Phase::Killed => {
                        return Err(SandboxError::Timeout {
                            operation: "container exit after SIGKILL",
                            secs: EXIT_TIMEOUT.as_secs(),
                        })
                    }
                },
                status = wait.next(), if !exited => {
                    match status {
                        Some(Ok(_)) | None => {}
                        // A non-zero exit is an outcome; the code is read from inspect below.
                        Some(Err(BollardError::DockerContainerWaitError { .. })) => {}
                        Some(Err(e)) => return Err(docker_error("wait container", e)),
                    }
                    exited = true;
                    if !output_done {
                        phase = Phase::Draining;
                        wake = Instant::now() + DRAIN_TIMEOUT;
                    }
                }
                item = output.next(), if !output_done => match item {
                    None => output_done = true,
                    Some(Ok(LogOutput::StdOut { message })) => stdout.push(&message),
                    Some(Ok(LogOutput::StdErr { message })) => stderr.push(&message),
                    // Without a TTY the engine only sends stdout and stderr frames.
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(docker_error("read container output", e)),
                },
            }
            // Past the hard cap the run is stopped: a flood would otherwise keep the daemon
            // busy discarding bytes until the timeout.
            let total = stdout.seen.saturating_add(stderr.seen);
            if total > limits.output_kill_bytes
                && matches!(phase, Phase::Running | Phase::Terminating)
            {
                self.kill(id, "SIGKILL").await;
                phase = Phase::Killed;
                wake = Instant::now() + EXIT_TIMEOUT;
            }
        }
        let duration = started.elapsed();

        // Stop feeding (dropping the receiver ends the producer), then see whether the
        // producer failed on our side: an unreadable tree is our error, not the test's.
        drop(feeder);
        match producer.await {
            Ok(Ok(())) | Ok(Err(TarError::SinkClosed)) => {}
            Ok(Err(TarError::Tree(msg))) => return Err(SandboxError::Tree(msg)),
            Err(join) => return Err(SandboxError::Tree(format!("tar task failed: {join}"))),
        }

        let info = call(
            "inspect container",
            self.docker
                .inspect_container(id, None::<InspectContainerOptions>),
        )
        .await?;
        let state = info.state.unwrap_or_default();
        let exit_code = state.exit_code.unwrap_or(-1);
        let oom_killed = state.oom_killed.unwrap_or(false);

        if exit_code == UNPACK_FAILED_EXIT
            && !timed_out
            && !cancelled
            && stderr.buf.starts_with(UNPACK_FAILED_MARKER.as_bytes())
        {
            return Err(SandboxError::Unpack(
                String::from_utf8_lossy(&stderr.buf)
                    .chars()
                    .take(2000)
                    .collect(),
            ));
        }

        Ok(RunOutcome {
            exit_code,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            timed_out,
            oom_killed,
            output_truncated: stdout.truncated || stderr.truncated,
            cancelled,
            stdout_sha256: Sha256Digest::of(&stdout.buf),
            stderr_sha256: Sha256Digest::of(&stderr.buf),
            stdout: stdout.buf,
            stderr: stderr.buf,
            image: spec.image.clone(),
            image_digest: info.image.unwrap_or_default(),
            limits: spec.limits.clone(),
        })
    }
}

#[async_trait]
impl Runner for DockerRunner {
    #[tracing::instrument(skip_all, fields(
        image = %spec.image,
        job_id = spec.labels.get(LABEL_JOB).map(String::as_str).unwrap_or("-"),
    ))]
    async fn run(
        &self,
        spec: &ContainerSpec,
        tree: &Path,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let root = tree.to_path_buf();
        let entries = tokio::task::spawn_blocking(move || tree_entries(&root))
            .await
            .map_err(|e| SandboxError::Tree(format!("walking the tree: {e}")))?
            .map_err(|e| SandboxError::Tree(e.to_string()))?;
        let footprint = tree_footprint(&entries);
        let _busy = self.pool.as_ref().map(|p| Busy::enter(p.clone()));
        let pooled = match &self.pool {
            Some(pool) if footprint <= POOL_TREE_BYTES => {
                let generic = spec.pooled();
                let key = serde_json::to_string(&generic).unwrap_or_default();
                Some((pool.clone(), generic, key))
            }
            _ => None,
        };
        let (id, command_line) = match &pooled {
            Some((pool, generic, key)) => {
                let id = match pool.take(key) {
                    Some(id) => id,
                    None => self.create(generic, POOL_TREE_BYTES).await?,
                };
                let line = format!(
                    "{}\n",
                    base64::engine::general_purpose::STANDARD.encode(&spec.command)
                );
                (id, Some(line.into_bytes()))
            }
            None => (self.create(spec, footprint).await?, None),
        };
        let guard = ContainerGuard {
            docker: self.docker.clone(),
            id: Some(id.clone()),
        };

        let result = self
            .drive(&id, spec, tree, entries, cancel, command_line)
            .await;
        // Refill only when this was the last run in flight: creating containers during a
        // burst competes with the starts that matter (measured: bursts got ~25% slower).
        if let Some((pool, generic, key)) = pooled {
            if pool.in_flight.load(Ordering::SeqCst) == 1 {
                self.refill(pool, generic, key);
            }
        }
        if let (Some(tracker), Ok(_)) = (&self.removals, &result) {
            let runner = self.clone();
            let id = id.clone();
            tracker.spawn(async move {
                if let Err(e) = guard.disarm_and_remove(&runner).await {
                    tracing::warn!(container = %id, error = %e, "container not removed");
                }
            });
            return result;
        }
        let removed = guard.disarm_and_remove(self).await;
        let outcome = result?;
        if let Err(e) = removed {
            // The outcome is real and gets attested; a leftover container is the reaper's job.
            tracing::warn!(container = %id, error = %e, "container not removed");
        }
        Ok(outcome)
    }

    async fn settle(&self) {
        // Background work first (removals, refills that may still add to the pool), then
        // whatever the pool holds.
        if let Some(tracker) = &self.removals {
            tracker.close();
            tracker.wait().await;
            tracker.reopen();
        }
        if let Some(pool) = &self.pool {
            for id in pool.drain() {
                if let Err(e) = self.remove(&id).await {
                    tracing::warn!(container = %id, error = %e, "warm container not removed");
                }
            }
        }
    }

    async fn image_digest(&self, image: &str) -> Result<String, SandboxError> {
        match call("inspect image", self.docker.inspect_image(image)).await {
            Ok(info) => info.id.ok_or_else(|| SandboxError::Docker {
                operation: "inspect image",
                message: format!("{image}: the engine returned no image ID"),
            }),
            Err(SandboxError::Docker { message, .. })
                if message.contains("No such image") || message.contains("404") =>
            {
                Err(SandboxError::ImageMissing {
                    image: image.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn ping(&self) -> Result<(), SandboxError> {
        call_within("ping", PING_TIMEOUT, self.docker.ping())
            .await
            .map(|_| ())
    }

    async fn reap(&self, instance: &str) -> Result<usize, SandboxError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{LABEL_INSTANCE}={instance}")],
        )]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let found = call(
            "list containers",
            self.docker.list_containers(Some(options)),
        )
        .await?;
        let mut removed = 0;
        for c in found {
            let Some(id) = c.id else { continue };
            match self.remove(&id).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(container = %id, error = %e, "reap: not removed"),
            }
        }
        Ok(removed)
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Where the run is in its shutdown sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the deadline.
    Running,
    /// SIGTERM sent; SIGKILL at `wake`.
    Terminating,
    /// SIGKILL sent; the engine must report the exit by `wake`.
    Killed,
    /// Exited; reading what output is left until `wake`.
    Draining,
}

/// One output stream, captured up to a cap and counted beyond it.
struct Capture {
    buf: Vec<u8>,
    cap: usize,
    seen: u64,
    truncated: bool,
}

impl Capture {
    fn new(cap: u64) -> Self {
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        Self {
            buf: Vec::with_capacity(cap.min(64 * 1024)),
            cap,
            seen: 0,
            truncated: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.seen = self.seen.saturating_add(bytes.len() as u64);
        let room = self.cap.saturating_sub(self.buf.len());
        if bytes.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// Removes the container when dropped still armed: the backstop for a `run` future that is
/// dropped half-way (caller timeout, shutdown). The normal path removes explicitly.
struct ContainerGuard {
    docker: Docker,
    id: Option<String>,
}

impl ContainerGuard {
    async fn disarm_and_remove(mut self, runner: &DockerRunner) -> Result<(), SandboxError> {
        let Some(id) = self.id.clone() else {
            return Ok(());
        };
        // Disarmed only after the removal finished: if this future is dropped mid-way,
        // Drop still removes the container.
        let result = runner.remove(&id).await;
        self.id = None;
        result
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else { return };
        let docker = self.docker.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = remove_container(&docker, &id).await {
                        tracing::warn!(container = %id, error = %e, "drop guard: not removed");
                    }
                });
            }
            Err(_) => {
                tracing::warn!(container = %id, "drop guard outside a runtime: left for the reaper")
            }
        }
    }
}

async fn remove_container(docker: &Docker, id: &str) -> Result<(), SandboxError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match call(
        "remove container",
        docker.remove_container(id, Some(options)),
    )
    .await
    {
        Ok(()) => Ok(()),
        // Already gone, or another remover is at it: either way it will not remain.
        Err(SandboxError::Docker { message, .. })
            if message.contains("No such container") || message.contains("already in progress") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Runs one API call under [`API_TIMEOUT`], mapping bollard's error to ours.
async fn call<T>(
    operation: &'static str,
    fut: impl Future<Output = Result<T, BollardError>>,
) -> Result<T, SandboxError> {
    call_within(operation, API_TIMEOUT, fut).await
}

/// Runs one API call under `deadline`, mapping bollard's error to ours.
async fn call_within<T>(
    operation: &'static str,
    deadline: Duration,
    fut: impl Future<Output = Result<T, BollardError>>,
) -> Result<T, SandboxError> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(docker_error(operation, e)),
        Err(_) => Err(SandboxError::Timeout {
            operation,
            secs: deadline.as_secs(),
        }),
    }
}

fn docker_error(operation: &'static str, e: BollardError) -> SandboxError {
    SandboxError::Docker {
        operation,
        message: engine_message(&e),
    }
}

fn engine_message(e: &BollardError) -> String {
    match e {
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// `repo[:tag]` -> (repo, tag); a `:` inside a registry host:port is not a tag.
fn split_reference(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

/// Bytes the tree occupies on a tmpfs: whole pages per file, plus a page per entry for
/// directories and slack.
fn tree_footprint(entries: &[TreeEntry]) -> u64 {
    entries.iter().fold(0u64, |acc, e| {
        let pages = e.len.div_ceil(PAGE).saturating_add(1);
        acc.saturating_add(pages.saturating_mul(PAGE))
    })
}

/// Turns the spec into the engine's create request. `tree_bytes` is added to the working
/// copy's tmpfs so `work_bytes` stays what the test itself may write.
fn create_body(spec: &ContainerSpec, tree_bytes: u64) -> Result<ContainerCreateBody, SandboxError> {
    let l = &spec.limits;
    let (uid, gid) = spec
        .user
        .split_once(':')
        .unwrap_or((&spec.user, &spec.user));
    let to_i64 = |what: &str, v: u64| {
        i64::try_from(v).map_err(|_| SandboxError::Spec(format!("{what} is too large")))
    };
    let work_size = l.work_bytes.saturating_add(tree_bytes);
    let tmpfs = HashMap::from([
        (
            spec.workdir.clone(),
            // Owned by the test user so its tar can unpack there; exec so scripts run.
            format!("size={work_size},uid={uid},gid={gid},mode=0700,exec,nosuid,nodev"),
        ),
        (
            "/tmp".to_string(),
            format!("size={},mode=1777,exec,nosuid,nodev", l.tmp_bytes),
        ),
    ]);
    let ulimit = |name: &str, v: i64| ResourcesUlimits {
        name: Some(name.to_string()),
        soft: Some(v),
        hard: Some(v),
    };
    let host_config = HostConfig {
        memory: Some(to_i64("memory_bytes", l.memory_bytes)?),
        // Equal to memory: no swap, so the memory limit is the real limit.
        memory_swap: Some(to_i64("memory_bytes", l.memory_bytes)?),
        nano_cpus: Some((l.cpus * 1e9).round() as i64),
        pids_limit: Some(l.pids),
        ulimits: Some(vec![
            ulimit("nofile", to_i64("nofile", l.nofile)?),
            ulimit("fsize", to_i64("fsize_bytes", l.fsize_bytes)?),
            // No core dumps: they would land in the working copy and eat its space.
            ulimit("core", 0),
        ]),
        network_mode: Some(spec.network.clone()),
        cap_drop: Some(vec!["ALL".to_string()]),
        // The default seccomp profile applies because none is named here.
        security_opt: Some(vec!["no-new-privileges:true".to_string()]),
        readonly_rootfs: Some(l.read_only_rootfs),
        // tini as PID 1: reaps zombies and forwards SIGTERM to the test.
        init: Some(true),
        tmpfs: Some(tmpfs),
        shm_size: Some(to_i64("shm_bytes", l.shm_bytes)?),
        ipc_mode: Some("private".to_string()),
        log_config: Some(log_config(l)),
        runtime: spec.oci_runtime.clone(),
        auto_remove: Some(false),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        // The argv goes in as the entrypoint, so an image's own ENTRYPOINT and CMD never
        // wrap or replace it.
        entrypoint: Some(spec.cmd.clone()),
        cmd: None,
        env: Some(spec.env.clone()),
        user: Some(spec.user.clone()),
        working_dir: Some(spec.workdir.clone()),
        hostname: Some("sandbox".to_string()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        // Closing our side of stdin closes the container's: tar sees EOF.
        stdin_once: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// The engine-side log settings: `none` needs no options; file drivers get one capped file.
fn log_config(l: &super::RunLimits) -> HostConfigLogConfig {
    let config = match l.log_driver.as_str() {
        "json-file" | "local" => Some(HashMap::from([
            ("max-size".to_string(), l.log_bytes.to_string()),
            ("max-file".to_string(), "1".to_string()),
        ])),
        _ => None,
    };
    HostConfigLogConfig {
        typ: Some(l.log_driver.clone()),
        config,
    }
}

/// Why building the tar stopped.
#[derive(Debug)]
enum TarError {
    /// Reading the tree failed (our side).
    Tree(String),
    /// The container stopped reading (it exited or was killed): not an error in itself.
    SinkClosed,
}

/// Marker inside the `io::Error` the channel writer returns once the receiver is gone.
#[derive(Debug)]
struct SinkClosed;

impl std::fmt::Display for SinkClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the container stopped reading its stdin")
    }
}

impl std::error::Error for SinkClosed {}

/// A blocking `Write` that hands fixed-size chunks to an async receiver.
struct ChannelWriter {
    tx: mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(TAR_CHUNK));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::other(SinkClosed))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(TAR_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= TAR_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

fn classify(e: std::io::Error) -> TarError {
    if e.get_ref().is_some_and(|inner| inner.is::<SinkClosed>()) {
        TarError::SinkClosed
    } else {
        TarError::Tree(e.to_string())
    }
}

/// Writes the tree as a tar into `tx` (through the package stage's one tar writer).
fn write_tar(
    root: &Path,
    entries: &[TreeEntry],
    tx: mpsc::Sender<Vec<u8>>,
) -> Result<(), TarError> {
    let sink = ChannelWriter {
        tx,
        buf: Vec::with_capacity(TAR_CHUNK),
    };
    let mut writer = crate::package::tree::write_tar(root, entries, sink).map_err(classify)?;
    writer.flush().map_err(classify)
}

/// Copies the tar chunks into the container's stdin, then closes it.
async fn feed(
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut input: Pin<Box<dyn AsyncWrite + Send>>,
) -> std::io::Result<()> {
    while let Some(chunk) = rx.recv().await {
        input.write_all(&chunk).await?;
    }
    input.flush().await?;
    input.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::{Runtime, TestPlan, TestSource};
    use crate::sandbox::{spec_for, Policy};

    #[test]
    fn capture_keeps_the_cap_and_counts_the_rest() {
        let mut c = Capture::new(5);
        c.push(b"abc");
        c.push(b"defg");
        c.push(b"h");
        assert_eq!(c.buf, b"abcde");
        assert_eq!(c.seen, 8);
        assert!(c.truncated);
        let mut exact = Capture::new(3);
        exact.push(b"abc");
        assert!(!exact.truncated);
    }

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(split_reference("a/b:1"), ("a/b", "1"));
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(
            split_reference("host:5000/a/b"),
            ("host:5000/a/b", "latest")
        );
        assert_eq!(split_reference("host:5000/a/b:2"), ("host:5000/a/b", "2"));
    }

    #[test]
    fn the_create_request_carries_every_limit() {
        let plan = TestPlan {
            command: "true".into(),
            runtime: Runtime::Shell,
            timeout_secs: None,
            source: TestSource::Declared,
        };
        let spec = spec_for(&plan, &Policy::default(), Default::default()).unwrap();
        let body = create_body(&spec, 8192).unwrap();
        let hc = body.host_config.unwrap();
        assert_eq!(hc.memory, Some(512 * 1024 * 1024));
        assert_eq!(hc.memory_swap, hc.memory);
        assert_eq!(hc.nano_cpus, Some(1_000_000_000));
        assert_eq!(hc.pids_limit, Some(128));
        assert_eq!(hc.network_mode.as_deref(), Some("none"));
        assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(hc.readonly_rootfs, Some(true));
        assert_eq!(hc.init, Some(true));
        let tmpfs = hc.tmpfs.unwrap();
        assert_eq!(
            tmpfs["/work"],
            format!(
                "size={},uid=65534,gid=65534,mode=0700,exec,nosuid,nodev",
                128 * 1024 * 1024 + 8192
            )
        );
        assert!(tmpfs["/tmp"].starts_with("size=125829120,"));
        assert_eq!(body.user.as_deref(), Some("65534:65534"));
        assert_eq!(body.entrypoint, Some(spec.cmd.clone()));
    }
}
