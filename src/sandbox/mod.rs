//! The `sandbox` stage: a validated skill tree and its test plan in, a [`RunOutcome`] out,
//! produced by running the test in a fresh, locked-down Docker container.
//!
//! - [`spec`]: [`ContainerSpec`] as plain data, a pure function of (test plan, policy).
//! - [`docker`]: the only module that speaks to Docker (bollard), split by concern: engine
//!   calls with typed errors, the create body, the run loop, the warm pool, stdin feeding.
//! - [`images`]: runner images: present, else pull, else build locally.
//!
//! How one run goes (see [`docker`] for the details): the container is created from the
//! [`ContainerSpec`] with a read-only root filesystem and two tmpfs mounts (`/work`, owned by
//! the test user, and `/tmp`), attached and started (ahead of demand, when the warm pool
//! is on); the runner streams the job's normalised tar ([`TreeTar`]) into its stdin, which
//! the image's own `tar` unpacks into `/work`; then the test runs with `sh -c` there.
//! The isolation tier ([`Isolation`]: runc or gVisor's runsc) picks the OCI runtime, and
//! the runtime that actually ran is read back from the engine for the attestation. Output is counted and capped as it arrives, the
//! wall-clock deadline is the daemon's own, and the container is always removed.

pub mod docker;
pub mod engines;
pub mod images;
pub mod spec;

use std::collections::BTreeMap;

use async_trait::async_trait;
use bollard::errors::Error as BollardError;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::digest::Sha256Digest;
use crate::package::{Runtime, TreeTar};

pub use docker::lease::LABEL_LEASE;
pub use docker::DockerRunner;
pub use engines::{EngineSettings, EngineTarget, Engines};
pub use spec::{
    spec_for, spec_for_instance, ContainerSpec, InstallStep, Isolation, NetworkMode, Policy,
    RunLimits,
};

/// Label key every container carries: the daemon instance that created it.
pub const LABEL_INSTANCE: &str = "dev.skill-verifier.instance";
/// Label key every container carries: the job it runs.
pub const LABEL_JOB: &str = "dev.skill-verifier.job";

/// What happened when a test ran. Expected outcomes (a failing test, a timeout, an OOM kill)
/// are data here, not errors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    /// The container's exit code (137 after SIGKILL).
    pub exit_code: i64,
    /// Wall-clock time from start to exit, in milliseconds.
    pub duration_ms: u64,
    /// The wall-clock timeout fired.
    pub timed_out: bool,
    /// The kernel OOM killer ended the container.
    pub oom_killed: bool,
    /// Some output beyond the per-stream cap was dropped.
    pub output_truncated: bool,
    /// The run was cancelled by the caller (DELETE /verify/{id}).
    pub cancelled: bool,
    /// Captured stdout, at most `output_bytes`.
    #[serde(skip)]
    pub stdout: Vec<u8>,
    /// Captured stderr, at most `output_bytes`.
    #[serde(skip)]
    pub stderr: Vec<u8>,
    /// SHA-256 of the captured stdout bytes.
    pub stdout_sha256: Sha256Digest,
    /// SHA-256 of the captured stderr bytes.
    pub stderr_sha256: Sha256Digest,
    /// The image reference the container ran.
    pub image: String,
    /// The image's content digest (`sha256:...`, the image ID).
    pub image_digest: String,
    /// The OCI runtime that ran the container, read back from the engine (`runc`, `runsc`).
    #[serde(default)]
    pub oci_runtime: String,
    /// The limits applied.
    pub limits: RunLimits,
    /// What the sink saw of the test's network attempts (`observe`, `allowlist`); `None`
    /// when the run had no network (`none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::sink::record::Report>,
    /// The install before the test, when the spec had one ([`InstallStep`]); the fields
    /// above then describe the test alone (its duration starts after the install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<InstallOutcome>,
    /// The engine that ran the container (its configured name, see [`engines`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
}

impl RunOutcome {
    /// The outcome of a test that did not run under `spec` (its requirements could not be
    /// fetched, or it was cancelled before a container started): exit code -1, no output,
    /// no time.
    pub fn not_run(spec: &ContainerSpec, image_digest: &str) -> Self {
        Self {
            exit_code: -1,
            duration_ms: 0,
            timed_out: false,
            oom_killed: false,
            output_truncated: false,
            cancelled: false,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_sha256: Sha256Digest::of(b""),
            stderr_sha256: Sha256Digest::of(b""),
            image: spec.image.clone(),
            image_digest: image_digest.to_string(),
            oci_runtime: String::new(),
            limits: spec.limits.clone(),
            network: None,
            install: None,
            engine: None,
        }
    }
}

/// What the install step did ([`InstallStep`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallOutcome {
    /// From command delivery to the install's marker (or to the container's end).
    pub duration_ms: u64,
    /// The installer's exit code; `None` when it never finished (killed, timed out).
    pub exit_code: Option<i64>,
    /// The install's own deadline fired.
    pub timed_out: bool,
}

/// Why the sandbox could not do its job (never a test failure: that is a [`RunOutcome`]).
///
/// Engine failures have one variant per operation and keep bollard's error as their source;
/// the engine's answers that mean something to us (404 no such image/container, 409 conflict
/// or removal in progress, 304 not modified) are mapped once in `docker::engine`, by status
/// code, never by message text. Each variant's text names the operation and the engine's
/// reply, because a job's `error.message` is the one line its submitter sees.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The Docker engine could not be reached (connecting or negotiating the API version).
    #[error("connecting to the Docker engine: {}", causes(.0))]
    Connect(#[source] BollardError),
    /// The engine did not answer a ping.
    #[error("pinging the Docker engine: {}", docker::reply(.0))]
    Ping(#[source] BollardError),
    /// The engine's system info could not be read.
    #[error("reading the Docker engine's info: {}", docker::reply(.0))]
    EngineInfo(#[source] BollardError),
    /// The runner image is not present locally.
    #[error("runner image {image} is missing: run `skill-verifier images prepare`")]
    ImageMissing {
        /// The image reference.
        image: String,
    },
    /// Inspecting an image failed (other than "no such image").
    #[error("inspecting image {image}: {}", docker::reply(.source))]
    InspectImage {
        /// The image reference.
        image: String,
        /// bollard's error.
        source: BollardError,
    },
    /// Pulling an image failed.
    #[error("pulling image {image}: {}", docker::reply(.source))]
    PullImage {
        /// The image reference.
        image: String,
        /// bollard's error.
        source: BollardError,
    },
    /// Creating a container failed (other than a missing image).
    #[error("creating a container from {image}: {}", docker::reply(.source))]
    CreateContainer {
        /// The image reference.
        image: String,
        /// bollard's error.
        source: BollardError,
    },
    /// Attaching to a container's stdio failed.
    #[error("attaching to container {id}: {}", docker::reply(.source))]
    AttachContainer {
        /// The container ID.
        id: String,
        /// bollard's error.
        source: BollardError,
    },
    /// Starting a container failed.
    #[error("starting container {id}: {}", docker::reply(.source))]
    StartContainer {
        /// The container ID.
        id: String,
        /// bollard's error.
        source: BollardError,
    },
    /// Waiting for a container's exit failed.
    #[error("waiting for container {id}: {}", docker::reply(.source))]
    WaitContainer {
        /// The container ID.
        id: String,
        /// bollard's error.
        source: BollardError,
    },
    /// Reading a container's output stream failed.
    #[error("reading the output of container {id}: {}", docker::reply(.source))]
    ReadOutput {
        /// The container ID.
        id: String,
        /// bollard's error.
        source: BollardError,
    },
    /// Sending a signal to a container failed (other than "not running" or "gone").
    #[error("killing container {id}: {}", docker::reply(.source))]
    KillContainer {
        /// The container ID.
        id: String,
        /// bollard's error.
        source: BollardError,
    },
    /// Inspecting a container failed.
    #[error("inspecting container {id}: {}", docker::reply(.source))]
    InspectContainer {
        /// The container ID.
        id: String,
        /// bollard's error.
        source: BollardError,
    },
    /// Removing a container failed (other than "gone" or "removal already in progress").
    #[error("removing container {id}: {}", docker::reply(.source))]
    RemoveContainer {
        /// The container ID.
        id: String,
        /// bollard's error.
        source: BollardError,
    },
    /// Listing containers failed.
    #[error("listing containers: {}", docker::reply(.0))]
    ListContainers(#[source] BollardError),
    /// An engine call did not answer within its deadline.
    #[error("{operation}: no answer from the Docker engine within {secs} s")]
    Timeout {
        /// Which operation timed out.
        operation: &'static str,
        /// The deadline, in seconds.
        secs: u64,
    },
    /// The test plan asks for something the policy does not allow.
    #[error("invalid container spec: {0}")]
    Spec(String),
    /// The network sink did not come up, or did not report.
    #[error("network sink {id}: {message}")]
    Sink {
        /// The sink container's ID.
        id: String,
        /// What went wrong (with the sink's own stderr when it said something).
        message: String,
    },
    /// Reading the job's tar (its blob) on the host failed.
    #[error("reading the skill's tar {}: {source}", path.display())]
    ReadTree {
        /// The tar file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configured OCI runtime is not registered with the engine.
    #[error(
        "the Docker engine has no OCI runtime {runtime:?} (it has: {}); for gVisor run \
         `scripts/setup` (installs runsc and registers it in /etc/docker/daemon.json), or set \
         [sandbox] isolation = \"runc\"",
        registered.join(", ")
    )]
    RuntimeMissing {
        /// The runtime asked for.
        runtime: String,
        /// The runtimes the engine has.
        registered: Vec<String>,
    },
    /// The image's `tar` could not unpack the skill's tree inside the container.
    #[error("engine {engine}: {message}")]
    EngineTls { engine: String, message: String },
    #[error("unpacking the skill's tree in the container failed: {0}")]
    Unpack(String),
    /// Building a runner image failed.
    #[error("preparing image {image}: {message}")]
    Image {
        /// The image reference.
        image: String,
        /// What went wrong.
        message: String,
    },
}

/// Runs container specs. The real one is [`DockerRunner`]; tests of callers may use a double.
/// An error and its causes in one line (`a: b: c`): a refused TLS handshake is only named
/// at the bottom of bollard's chain.
fn causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        next = cause.source();
    }
    text
}

#[async_trait]
pub trait Runner: Send + Sync {
    /// Runs `spec` with the normalised tar `tree` unpacked as the working copy. Cancelling
    /// `cancel` kills the container and returns an outcome with `cancelled: true`.
    async fn run(
        &self,
        spec: &ContainerSpec,
        tree: &TreeTar,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, SandboxError>;

    /// The content digest of an image reference (`sha256:...`), or `ImageMissing`.
    async fn image_digest(&self, image: &str) -> Result<String, SandboxError>;

    /// What the image is, the same on every engine: the result cache's key. An image
    /// built locally gets a different ID on each engine, so where the image carries our
    /// build's labels (`dev.skill-verifier.recipe` and `dev.skill-verifier.packages`, see
    /// `images/build.sh`) they are its identity; otherwise its ID (which a pulled image
    /// keeps everywhere: it is the digest of its config). Defaults to [`image_digest`].
    ///
    /// [`image_digest`]: Runner::image_digest
    async fn image_identity(&self, image: &str) -> Result<String, SandboxError> {
        self.image_digest(image).await
    }

    /// Whether the engine answers (for `/health`).
    async fn ping(&self) -> Result<(), SandboxError>;

    /// Each engine and whether it answers (for `/health`); one entry, `default`, unless the
    /// runner drives several.
    async fn engines(&self) -> Vec<EngineHealth> {
        let result = self.ping().await;
        vec![EngineHealth {
            name: engines::DEFAULT_ENGINE.into(),
            transport: "unix".into(),
            reachable: result.is_ok(),
            error: result.err().map(|e| e.to_string()),
            capacity: 0,
            running: 0,
        }]
    }

    /// Starts filling the warm pool for `spec`'s shape in the background, so even the
    /// first job of that shape finds a started container; runners without a pool ignore it.
    fn prewarm(&self, _spec: &ContainerSpec) {}

    /// Waits until containers of finished runs are gone (runners that remove them in the
    /// background); the default has nothing to wait for.
    async fn settle(&self) {}

    /// Removes every container carrying `LABEL_INSTANCE = instance`; returns how many.
    async fn reap(&self, instance: &str) -> Result<usize, SandboxError>;
}

/// One engine in `/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EngineHealth {
    /// Its configured name (`default` for the implicit engine).
    pub name: String,
    /// `unix`, `plain` (TCP without TLS) or `tls`.
    pub transport: String,
    /// The engine answered a ping.
    pub reachable: bool,
    /// Why not, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Most jobs at once on it.
    pub capacity: usize,
    /// Jobs running on it now.
    pub running: usize,
}

impl EngineHealth {
    /// `target`'s entry after a ping that failed with `error` (or answered).
    pub fn of(target: &EngineTarget, error: Option<SandboxError>) -> Self {
        Self {
            name: target.name.clone(),
            transport: target.transport().into(),
            reachable: error.is_none(),
            error: error.map(|e| e.to_string()),
            capacity: target.capacity,
            running: 0,
        }
    }
}

/// The runtime -> image map (the config's `[sandbox.images]`).
pub type ImageMap = BTreeMap<Runtime, String>;
