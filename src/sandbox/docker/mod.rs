//! The bollard runner: the only module that speaks to the Docker engine.
//!
//! One run, step by step:
//! 1. take a warm container (created, attached and started ahead of demand, see [`pool`]),
//!    or launch one now: create it (read-only rootfs, tmpfs `/work` owned by the test user
//!    and sized `work_bytes` + the tree's footprint, tmpfs `/tmp`, every limit from the
//!    spec, labels), attach (stdin, stdout, stderr) **before** start so no output is lost,
//!    start;
//! 2. stream the job's normalised tar (a file on disk, [`TreeTar`]) into stdin, after the
//!    command line for a warm container ([`feed`]); the image's `tar` unpacks it and `exec`s
//!    the test with `sh -c` in `/work`;
//! 3. drain output, watch the deadline, signal from side tasks ([`run`]);
//! 4. inspect for the exit code, `OOMKilled`, the image ID and the OCI runtime that ran;
//! 5. remove the container (force, with volumes), always; a drop guard removes it too if the
//!    future is dropped half-way.
//!
//! The module is split by concern: [`engine`] (every engine call, with typed errors),
//! [`body`] (the create request), [`run`] (the loop from command to outcome), [`pool`] (the
//! warm pool), [`feed`] (stdin feeding), [`lease`] (reaping a dead CLI's containers).
//!
//! Why stdin and not `upload_to_container` or a bind mount: bind mounts tie the daemon to the
//! engine's host and make the host follow paths; an upload into a tmpfs path lands under the
//! mount and vanishes, and an upload into a read-only rootfs is refused by the engine. Streaming
//! through the attach connection works with a remote engine and needs nothing from the image but
//! `sh` and `tar`.

mod body;
mod engine;
mod feed;
pub mod lease;
mod pool;
mod run;
pub mod sink;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::container::AttachContainerResults;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::package::TreeTar;
use crate::sandbox::spec::command_lines;

use super::{
    ContainerSpec, EngineTarget, NetworkMode, RunOutcome, Runner, SandboxError, LABEL_INSTANCE,
    LABEL_JOB,
};
use pool::{Busy, WarmPool, POOL_TREE_BYTES};

/// Deadline for pulling one image.
const PULL_TIMEOUT: Duration = Duration::from_secs(300);

/// The engine's reply in one line, for error texts.
pub(crate) fn reply(e: &BollardError) -> String {
    engine::reply(e)
}

/// The engine's HTTP status, when the error is an answer from the engine (`None` for a
/// transport failure: refused, reset, timed out, TLS).
pub(crate) fn engine_status(e: &BollardError) -> Option<u16> {
    engine::status(e)
}

/// The image label that names the recipe an image was built from (`images/build.sh`).
pub const LABEL_RECIPE: &str = "dev.skill-verifier.recipe";
/// The image label with the digest of the image's package list (`images/build.sh`).
pub const LABEL_PACKAGES: &str = "dev.skill-verifier.packages";

/// Runs container specs against a Docker engine. Cheap to clone; safe to share across tasks.
#[derive(Clone, Debug)]
pub struct DockerRunner {
    docker: Docker,
    /// The engine this runner drives.
    target: Arc<EngineTarget>,
    /// When set, a finished container is removed in the background (tracked here) instead of
    /// before `run` returns: the daemon answers sooner, and `settle` waits for the removals.
    removals: Option<TaskTracker>,
    /// Containers started ahead of demand, when enabled.
    pool: Option<Arc<WarmPool>>,
    /// This process's lease label value (daemon-less runs), see [`lease`].
    lease: Option<String>,
    /// The container launched ahead of a daemon-less run's one job ([`Self::prelaunch`]).
    prelaunched: Arc<std::sync::Mutex<Option<Prelaunch>>>,
}

/// A launch started before its job was ready: the key of its shape and the task creating
/// and attaching to its container, which yields the container and its start (a task of its
/// own, so the job's stdin can be fed while the engine starts it).
struct Prelaunch {
    key: String,
    launch: tokio::task::JoinHandle<Result<(Launched, Starting), SandboxError>>,
}

/// A container's start, running in its own task.
type Starting = tokio::task::JoinHandle<Result<(), SandboxError>>;

impl std::fmt::Debug for Prelaunch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prelaunch").field("key", &self.key).finish()
    }
}

/// A created, attached and started container: its removal guard and its stdio, and its
/// network sink when the mode has one.
pub(super) struct Launched {
    guard: ContainerGuard,
    io: AttachContainerResults,
    sink: Option<sink::SinkRun>,
}

impl Launched {
    /// The test container's ID.
    fn id(&self) -> &str {
        self.guard.id.as_deref().unwrap_or_default()
    }

    /// Removes the test container, then its sink.
    async fn remove(self, docker: &Docker) -> Result<(), SandboxError> {
        let test = self.guard.disarm_and_remove(docker).await;
        let sink = match self.sink {
            Some(s) => s.guard.disarm_and_remove(docker).await,
            None => Ok(()),
        };
        test.and(sink)
    }
}

impl DockerRunner {
    /// Connects to the engine named by `DOCKER_HOST` (`unix://`, `tcp://`, `http://`), or the
    /// local socket `/var/run/docker.sock`, and checks that it answers (a ping; see
    /// `engine::connect` on why the API version is not negotiated).
    pub async fn connect() -> Result<Self, SandboxError> {
        Self::connect_to(EngineTarget::from_env(1)).await
    }

    /// Connects to `target` (see [`crate::sandbox::engines`]): a socket, plain TCP, or TCP
    /// with Docker's mutual TLS.
    pub async fn connect_to(target: EngineTarget) -> Result<Self, SandboxError> {
        Ok(Self {
            docker: engine::connect(&target).await?,
            target: Arc::new(target),
            removals: None,
            pool: None,
            lease: None,
            prelaunched: Arc::default(),
        })
    }

    /// The engine this runner drives.
    pub fn target(&self) -> &EngineTarget {
        &self.target
    }

    /// Keeps up to `per_key` containers started ahead of demand for each container shape
    /// (runtime image and policy); 0 disables. Needs background removal's tracker for the
    /// refills, so it enables that too.
    pub fn with_warm_pool(mut self, per_key: usize) -> Self {
        if per_key > 0 {
            self.pool = Some(Arc::new(WarmPool::new(per_key)));
            if self.removals.is_none() {
                self.removals = Some(TaskTracker::new());
            }
        }
        self
    }

    /// Removes finished containers in the background instead of before `run` returns (the
    /// removal is off the job's critical path; [`Runner::settle`] waits for them, and the
    /// start-up reaper covers a crash in between).
    pub fn with_background_removal(mut self) -> Self {
        self.removals = Some(TaskTracker::new());
        self
    }

    /// Labels every container with this process's lease ([`lease`]), so a later run can
    /// remove them if this process dies without cleaning up. For daemon-less runs, whose
    /// instance id is not stable across processes.
    pub fn with_lease(mut self) -> Self {
        self.lease = lease::current();
        self
    }

    /// Starts launching a container for `spec`'s shape now (create, attach, start, as for the
    /// warm pool), for the next `run` of that shape to take: a daemon-less run overlaps the
    /// engine's container start (most of a trivial run's cost) with what it does before the
    /// run (loading the rules and the key, the scan, the dependency check).
    ///
    /// One at a time: a second call replaces nothing. A `run` of another shape, or of a tree
    /// too big for a pooled container, launches its own; [`Runner::settle`] removes a
    /// prelaunched container nobody took.
    pub fn prelaunch(&self, spec: &ContainerSpec) {
        let mut slot = self.prelaunched.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return;
        }
        let (generic, key) = shape_of(spec);
        let runner = self.clone();
        let launch = tokio::spawn(async move {
            let launched = runner.create_attached(&generic, POOL_TREE_BYTES).await?;
            let (docker, id) = (runner.docker.clone(), launched.id().to_string());
            let starting = tokio::spawn(async move { engine::start(&docker, &id).await });
            Ok((launched, starting))
        });
        *slot = Some(Prelaunch { key, launch });
    }

    /// Whether a prelaunched container waits for its run.
    fn prelaunch_pending(&self) -> bool {
        self.prelaunched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// The prelaunched container, if it was launched for `key`, with its start, which may
    /// still be running (awaited up to the attach; `None` when that failed, so the run
    /// launches its own and reports its own error).
    async fn take_prelaunched(&self, key: &str) -> Option<(Launched, Starting)> {
        let launch = {
            let mut slot = self.prelaunched.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref() {
                Some(p) if p.key == key => slot.take().map(|p| p.launch),
                _ => None,
            }
        }?;
        match launch.await {
            Ok(Ok(launched)) => {
                tracing::debug!(container = %launched.0.id(), "took the prelaunched container");
                Some(launched)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "prelaunched container failed; launching again");
                None
            }
            Err(e) => {
                tracing::debug!(error = %e, "prelaunch task failed; launching again");
                None
            }
        }
    }

    /// Removes the containers of daemon-less runs that are gone (see [`lease`] for the
    /// rule); returns how many. Never touches a live run's containers.
    pub async fn reap_dead_leases(&self) -> Result<usize, SandboxError> {
        let found = engine::list_labelled(&self.docker, lease::LABEL_LEASE, None).await?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut removed = 0;
        for c in found {
            let (Some(id), Some(labels)) = (c.id, c.labels) else {
                continue;
            };
            let Some(value) = labels.get(lease::LABEL_LEASE) else {
                continue;
            };
            if Some(value) == self.lease.as_ref()
                || !lease::is_dead(value, c.created.unwrap_or(now), now)
            {
                continue;
            }
            match engine::remove(&self.docker, &id).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(container = %id, error = %e, "lease reaper: not removed"),
            }
        }
        Ok(removed)
    }

    /// The OCI runtimes the engine has registered (its `Runtimes`, e.g. `runc`, `runsc`).
    pub async fn oci_runtimes(&self) -> Result<Vec<String>, SandboxError> {
        engine::runtimes(&self.docker).await
    }

    /// Fails with [`SandboxError::RuntimeMissing`] unless the engine has `runtime`
    /// registered: a start-up check, so a gVisor configuration never silently runs on runc
    /// and never gets as far as a job.
    pub async fn require_runtime(&self, runtime: &str) -> Result<(), SandboxError> {
        let registered = self.oci_runtimes().await?;
        if registered.iter().any(|r| r == runtime) {
            Ok(())
        } else {
            Err(SandboxError::RuntimeMissing {
                runtime: runtime.to_string(),
                registered,
            })
        }
    }

    /// Whether `image` exists on the engine.
    pub async fn image_present(&self, image: &str) -> Result<bool, SandboxError> {
        match engine::image_id(&self.docker, image).await {
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
                let info = item.map_err(|source| SandboxError::PullImage {
                    image: image.to_string(),
                    source,
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

    /// Creates, attaches to and starts a container for `spec` with room for `tree_bytes` in
    /// its working copy. A failure after create removes the container before it returns.
    async fn launch(
        &self,
        spec: &ContainerSpec,
        tree_bytes: u64,
    ) -> Result<Launched, SandboxError> {
        let launched = self.create_attached(spec, tree_bytes).await?;
        match engine::start(&self.docker, launched.id()).await {
            Ok(()) => Ok(launched),
            Err(e) => {
                if let Err(removal) = launched.remove(&self.docker).await {
                    tracing::warn!(error = %removal, "container not removed after a failed start");
                }
                Err(e)
            }
        }
    }

    /// Creates a container for `spec` (and its sink, started) and attaches to it, **not**
    /// started: attached before start, so no output is lost. A failure after create
    /// removes what was made before it returns.
    async fn create_attached(
        &self,
        spec: &ContainerSpec,
        tree_bytes: u64,
    ) -> Result<Launched, SandboxError> {
        let sink = match spec.network_mode() {
            NetworkMode::None => None,
            _ => {
                let mut labelled = spec.clone();
                if let Some(lease) = &self.lease {
                    labelled
                        .labels
                        .insert(lease::LABEL_LEASE.to_string(), lease.clone());
                }
                Some(sink::launch(&self.docker, &labelled).await?)
            }
        };
        let sink_id = sink.as_ref().map(|s| s.id.clone());
        let test = async {
            let mut body = body::create_body(spec, tree_bytes, sink_id.as_deref())?;
            if let (Some(lease), Some(labels)) = (&self.lease, body.labels.as_mut()) {
                labels.insert(lease::LABEL_LEASE.to_string(), lease.clone());
            }
            let id = engine::create(&self.docker, &spec.image, body).await?;
            // From here a failure drops `guard`, whose drop removes the container.
            let guard = ContainerGuard {
                docker: self.docker.clone(),
                id: Some(id.clone()),
            };
            let io = engine::attach(&self.docker, &id).await?;
            Ok::<_, SandboxError>((guard, io))
        }
        .await;
        match test {
            Ok((guard, io)) => Ok(Launched { guard, io, sink }),
            Err(e) => {
                // The sink is removed before the error returns, not in the background: a
                // failed launch leaves nothing behind when it answers.
                if let Some(sink) = sink {
                    if let Err(removal) = sink.guard.disarm_and_remove(&self.docker).await {
                        tracing::warn!(error = %removal, "sink not removed");
                    }
                }
                Err(e)
            }
        }
    }

    /// Tops the pool up for `key` in the background, one container at a time, unless a
    /// refill of that key already runs (tracked, so `settle` waits).
    fn refill(&self, pool: &Arc<WarmPool>, generic: &ContainerSpec, key: &str) {
        let Some(tracker) = &self.removals else {
            return;
        };
        if pool.len(key) >= pool.target(key) {
            return;
        }
        let Some(claim) = pool.claim_refill(key) else {
            return;
        };
        let (runner, pool, generic, key) =
            (self.clone(), pool.clone(), generic.clone(), key.to_string());
        tracker.spawn(async move {
            let _claim = claim;
            while pool.len(&key) < pool.target(&key) && !pool.stopping() {
                match runner.launch(&generic, POOL_TREE_BYTES).await {
                    Ok(warm) => {
                        if let Some(extra) = pool.put(&key, warm) {
                            let _ = extra.remove(&runner.docker).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "warm container not started");
                        break;
                    }
                }
            }
        });
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
        tree: &TreeTar,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        let _busy = self.pool.as_ref().map(|p| Busy::enter(p.clone()));
        // A warm container (pooled or prelaunched) serves trees its work tmpfs has room for;
        // without a pool or a prelaunch there is none to look for.
        let shape = (tree.footprint_bytes <= POOL_TREE_BYTES
            && (self.pool.is_some() || self.prelaunch_pending()))
        .then(|| shape_of(spec));
        let (mut warm, mut starting) = (None, None);
        if let Some((generic, key)) = &shape {
            if let Some((launched, start)) = self.take_prelaunched(key).await {
                (warm, starting) = (Some(launched), Some(start));
            }
            if let Some(pool) = &self.pool {
                if warm.is_none() {
                    warm = pool.take(key);
                }
                // Top up behind this job (whether it found a warm container or not).
                self.refill(pool, generic, key);
            }
        }
        let (launched, line) = match (warm, &shape) {
            (Some(warm), _) => (warm, Some(command_lines(&spec.run_script()))),
            (None, Some((generic, _))) if self.pool.is_some() => (
                self.launch(generic, POOL_TREE_BYTES).await?,
                Some(command_lines(&spec.run_script())),
            ),
            _ => (self.launch(spec, tree.footprint_bytes).await?, None),
        };
        let Launched {
            guard,
            io,
            mut sink,
        } = launched;
        let id = guard.id.clone().unwrap_or_default();
        let result = async {
            if let Some(sink) = sink.as_mut() {
                sink.configure(&crate::sink::Config {
                    allow: spec.allow.clone(),
                    allow_private: spec.allow_private,
                })
                .await?;
            }
            let mut outcome =
                run::drive(&self.docker, &id, spec, io, tree, line, starting, cancel).await?;
            outcome.engine = Some(self.target.name.clone());
            if let Some(sink) = sink.as_mut() {
                outcome.network = Some(sink.report().await?);
            }
            Ok(outcome)
        }
        .await;
        let launched = Launched {
            guard,
            io: AttachContainerResults {
                output: Box::pin(futures_util::stream::empty()),
                input: Box::pin(tokio::io::sink()),
            },
            sink,
        };
        if let (Some(tracker), Ok(_)) = (&self.removals, &result) {
            let docker = self.docker.clone();
            tracker.spawn(async move {
                if let Err(e) = launched.remove(&docker).await {
                    tracing::warn!(container = %id, error = %e, "container not removed");
                }
            });
            return result;
        }
        let removed = launched.remove(&self.docker).await;
        let outcome = result?;
        if let Err(e) = removed {
            // The outcome is real and gets attested; a leftover container is the reaper's job.
            tracing::warn!(container = %id, error = %e, "container not removed");
        }
        Ok(outcome)
    }

    fn prewarm(&self, spec: &ContainerSpec) {
        if let Some(pool) = &self.pool {
            let (generic, key) = shape_of(spec);
            self.refill(pool, &generic, &key);
        }
    }

    async fn settle(&self) {
        // A prelaunched container nobody took: its launch finishes, then it is removed.
        let prelaunched = self
            .prelaunched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(p) = prelaunched {
            if let Ok(Ok((launched, starting))) = p.launch.await {
                tracing::debug!(container = %launched.id(), "removing the unused prelaunched container");
                // Removed once its start is over (a container mid-start may refuse).
                let _ = starting.await;
                if let Err(e) = launched.remove(&self.docker).await {
                    tracing::warn!(error = %e, "prelaunched container not removed");
                }
            }
        }
        // Refills stop after the container in hand; then background work (removals,
        // refills) finishes, then the pool is emptied, its members removed concurrently.
        if let Some(pool) = &self.pool {
            pool.set_stopping(true);
        }
        if let Some(tracker) = &self.removals {
            tracker.close();
            tracker.wait().await;
            tracker.reopen();
        }
        if let Some(pool) = &self.pool {
            let removals = pool.drain().into_iter().map(|warm| async {
                if let Err(e) = warm.remove(&self.docker).await {
                    tracing::warn!(error = %e, "warm container not removed");
                }
            });
            futures_util::future::join_all(removals).await;
            pool.set_stopping(false);
        }
    }

    async fn image_digest(&self, image: &str) -> Result<String, SandboxError> {
        engine::image_id(&self.docker, image).await
    }

    async fn image_identity(&self, image: &str) -> Result<String, SandboxError> {
        let (id, labels) = engine::image_labels(&self.docker, image).await?;
        Ok(
            match (labels.get(LABEL_RECIPE), labels.get(LABEL_PACKAGES)) {
                (Some(recipe), Some(packages)) if recipe != "unknown" => {
                    format!("recipe:{recipe};packages:{packages}")
                }
                _ => id,
            },
        )
    }

    async fn ping(&self) -> Result<(), SandboxError> {
        engine::ping(&self.docker).await
    }

    async fn engines(&self) -> Vec<super::EngineHealth> {
        let result = engine::ping(&self.docker).await;
        vec![super::EngineHealth::of(&self.target, result.err())]
    }

    async fn reap(&self, instance: &str) -> Result<usize, SandboxError> {
        let found = engine::list_labelled(&self.docker, LABEL_INSTANCE, Some(instance)).await?;
        let mut removed = 0;
        for c in found {
            let Some(id) = c.id else { continue };
            match engine::remove(&self.docker, &id).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(container = %id, error = %e, "reap: not removed"),
            }
        }
        Ok(removed)
    }
}

/// Removes the container when dropped still armed: the backstop for a `run` future that is
/// dropped half-way (caller timeout, shutdown) and for a pool dropped without `settle`. The
/// normal path removes explicitly.
struct ContainerGuard {
    docker: Docker,
    id: Option<String>,
}

impl ContainerGuard {
    async fn disarm_and_remove(mut self, docker: &Docker) -> Result<(), SandboxError> {
        let Some(id) = self.id.clone() else {
            return Ok(());
        };
        // Disarmed only after the removal finished: if this future is dropped mid-way,
        // Drop still removes the container.
        let result = engine::remove(docker, &id).await;
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
                    if let Err(e) = engine::remove(&docker, &id).await {
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

/// The job-independent form of `spec` a warm container is launched for, and its pool key.
fn shape_of(spec: &ContainerSpec) -> (ContainerSpec, String) {
    let generic = spec.pooled();
    let key = serde_json::to_string(&generic).unwrap_or_default();
    (generic, key)
}

/// `repo[:tag]` -> (repo, tag); a `:` inside a registry host:port is not a tag.
fn split_reference(image: &str) -> (&str, &str) {
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
