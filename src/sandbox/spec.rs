//! [`ContainerSpec`] as plain data: a pure function of (test plan, policy). No Docker here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::package::{Runtime, TestPlan};

use super::{ImageMap, SandboxError};

/// Every limit applied to one run; recorded in the attestation's `environment.limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunLimits {
    /// Memory limit; swap is set equal, so no swap.
    pub memory_bytes: u64,
    /// CPU quota in CPUs.
    pub cpus: f64,
    /// Max processes/threads.
    pub pids: i64,
    /// Wall-clock timeout.
    pub timeout_secs: u64,
    /// Output captured per stream.
    pub output_bytes: u64,
}

/// The sandbox policy: defaults and caps on what a skill may ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Policy {
    /// Runtime -> image reference.
    pub images: ImageMap,
    /// Default timeout.
    pub timeout_secs: u64,
    /// Largest timeout a skill may ask for.
    pub max_timeout_secs: u64,
    /// Memory limit (and memory+swap).
    pub memory_bytes: u64,
    /// CPUs.
    pub cpus: f64,
    /// pids limit.
    pub pids: i64,
    /// Output cap per stream.
    pub output_bytes: u64,
}

impl Default for Policy {
    fn default() -> Self {
        let images = Runtime::ALL
            .iter()
            .map(|r| (*r, format!("skill-verifier/runner-{}:1", r.as_str())))
            .collect();
        Self {
            images,
            timeout_secs: 60,
            max_timeout_secs: 600,
            memory_bytes: 512 * 1024 * 1024,
            cpus: 1.0,
            pids: 128,
            output_bytes: 1024 * 1024,
        }
    }
}

/// Everything needed to create one container: plain data, golden-testable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// Image reference.
    pub image: String,
    /// The runtime the image serves.
    pub runtime: Runtime,
    /// The test command as declared (what the attestation records).
    pub command: String,
    /// The full container command (argv).
    pub cmd: Vec<String>,
    /// Environment, `KEY=VALUE`.
    pub env: Vec<String>,
    /// `uid:gid`.
    pub user: String,
    /// Working directory (the skill root inside the container).
    pub workdir: String,
    /// Network mode (`none`).
    pub network: String,
    /// Labels (instance, job).
    pub labels: BTreeMap<String, String>,
    /// Every limit.
    pub limits: RunLimits,
}

/// Derives the container spec for `plan` under `policy`.
pub fn spec_for(
    plan: &TestPlan,
    policy: &Policy,
    labels: BTreeMap<String, String>,
) -> Result<ContainerSpec, SandboxError> {
    let _ = (plan, policy, labels);
    todo!("issue 3")
}
