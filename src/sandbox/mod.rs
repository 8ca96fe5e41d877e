//! The `sandbox` stage: a validated skill tree and its test plan in, a [`RunOutcome`] out,
//! produced by running the test in a fresh, locked-down Docker container.
//!
//! OWNER: issue 3. The public items below are the interface other stages rely on; add freely,
//! rename none without telling the integrator.
//!
//! - [`spec`]: [`ContainerSpec`] as plain data, a pure function of (test plan, policy).
//! - [`docker`]: the only file that speaks to Docker (bollard).
//! - [`images`]: runner images: present, else pull, else build locally.
//!
//! How one run goes (see [`docker`] for the details): the container is created from the
//! [`ContainerSpec`] with a read-only root filesystem and two tmpfs mounts (`/work`, owned by
//! the test user, and `/tmp`); the runner attaches to it before starting it, streams a tar of
//! the validated tree into its stdin, which the image's own `tar` unpacks into `/work`; then
//! the test runs with `sh -c` there. Output is counted and capped as it arrives, the
//! wall-clock deadline is the daemon's own, and the container is always removed.

pub mod docker;
pub mod images;
pub mod spec;

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::digest::Sha256Digest;
use crate::package::Runtime;

pub use docker::DockerRunner;
pub use spec::{spec_for, ContainerSpec, Policy, RunLimits};

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
    /// The limits applied.
    pub limits: RunLimits,
}

/// Why the sandbox could not do its job (never a test failure: that is a [`RunOutcome`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The Docker engine could not be reached.
    #[error("connecting to the Docker engine: {0}")]
    Connect(String),
    /// The runner image is not present locally.
    #[error("runner image {image} is missing: run `skill-verifier images prepare`")]
    ImageMissing {
        /// The image reference.
        image: String,
    },
    /// The test plan asks for something the policy does not allow.
    #[error("invalid container spec: {0}")]
    Spec(String),
    /// A Docker API call failed.
    #[error("{operation}: {message}")]
    Docker {
        /// Which operation failed (create container, start, wait, ...).
        operation: &'static str,
        /// The engine's message.
        message: String,
    },
    /// A Docker API call did not answer within its deadline.
    #[error("{operation}: no answer from the Docker engine within {secs} s")]
    Timeout {
        /// Which operation timed out.
        operation: &'static str,
        /// The deadline, in seconds.
        secs: u64,
    },
    /// Reading the skill's tree on the host failed (or it changed under us).
    #[error("reading the skill's tree: {0}")]
    Tree(String),
    /// The image's `tar` could not unpack the skill's tree inside the container.
    #[error("unpacking the skill's tree in the container failed: {0}")]
    Unpack(String),
    /// Building or pulling a runner image failed.
    #[error("preparing image {image}: {message}")]
    Image {
        /// The image reference.
        image: String,
        /// What went wrong.
        message: String,
    },
}

/// Runs container specs. The real one is [`DockerRunner`]; tests of callers may use a double.
#[async_trait]
pub trait Runner: Send + Sync {
    /// Runs `spec` with the tree under `tree` copied in as the working copy. Cancelling
    /// `cancel` kills the container and returns an outcome with `cancelled: true`.
    async fn run(
        &self,
        spec: &ContainerSpec,
        tree: &Path,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, SandboxError>;

    /// The content digest of an image reference (`sha256:...`), or `ImageMissing`.
    async fn image_digest(&self, image: &str) -> Result<String, SandboxError>;

    /// Whether the engine answers (for `/health`).
    async fn ping(&self) -> Result<(), SandboxError>;

    /// Waits until containers of finished runs are gone (runners that remove them in the
    /// background); the default has nothing to wait for.
    async fn settle(&self) {}

    /// Removes every container carrying `LABEL_INSTANCE = instance`; returns how many.
    async fn reap(&self, instance: &str) -> Result<usize, SandboxError>;
}

/// The runtime -> image map (the config's `[sandbox.images]`).
pub type ImageMap = BTreeMap<Runtime, String>;
