//! The JSON shapes of the API (the contract in DESIGN.md, "The API"), separate from the
//! store's rows so storage can change without changing what clients see.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::attest::statement::Status;
use crate::package::{Runtime, TestSource};
use crate::store::{rfc3339, JobRecord, JobStatus, Phase};

/// A job, as `GET /verify/{id}` and `POST /verify` answer it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// The job id.
    #[schema(value_type = String, format = Uuid)]
    pub id: String,
    /// Where the job is.
    pub status: JobStatus,
    /// What a running job is doing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Attempts started (a crash-interrupted job runs again as attempt + 1).
    pub attempt: u32,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, when the current/last attempt started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Package facts.
    pub package: PackageView,
    /// Result summary once finished (passed/failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultView>,
    /// Why the job ended in `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<JobErrorView>,
    /// Findings counted by severity, once finished with a result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub findings: Option<crate::scan::SeverityCounts>,
    /// True when `POST /verify` answered from the result cache (this is the earlier job).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
    /// Related resources.
    pub links: Links,
}

/// `package` of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PackageView {
    /// Skill name.
    pub name: String,
    /// Canonical tree digest (hex).
    pub tree_sha256: String,
    /// Archive digest (hex).
    pub archive_sha256: String,
    /// Regular files.
    pub files: u64,
    /// Bytes of regular files.
    pub bytes: u64,
    /// The runtime the test needs.
    pub runtime: Runtime,
    /// Where the test came from.
    pub test_source: TestSource,
}

/// `result` of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultView {
    /// PASSED | FAILED | WARNED.
    pub status: Status,
    /// Container exit code.
    pub exit_code: i64,
    /// Milliseconds.
    pub duration_ms: u64,
    /// Timeout fired.
    pub timed_out: bool,
    /// OOM killer fired.
    pub oom_killed: bool,
    /// Output truncated.
    pub output_truncated: bool,
    /// PASSED | FAILED: tests and the verdict policy together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::scan::VerdictStatus>,
    /// The network mode and every attempt the sink observed, as attested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::store::NetworkSummary>,
}

/// `GET /verify/{id}/findings`: the attested findings, the verdict and the policy.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FindingsView {
    /// The job id.
    pub id: String,
    /// The attested verdict (absent for attestations made before verdicts existed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::scan::Verdict>,
    /// `{name, version, sha256, rules_sha256}` of the policy the verdict was judged under.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub policy: Option<serde_json::Value>,
    /// Counts by severity.
    pub counts: crate::scan::SeverityCounts,
    /// Every finding of `predicate.findings`.
    pub findings: Vec<crate::scan::Finding>,
}

/// `error` of a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobErrorView {
    /// Stable code.
    pub code: String,
    /// Human message.
    pub message: String,
}

/// Links from a job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Links {
    /// This job.
    #[serde(rename = "self")]
    pub self_: String,
    /// Its attestation.
    pub attestation: String,
    /// Its logs.
    pub logs: String,
}

/// `GET /jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    /// Newest first.
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next (older) page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `DELETE /verify/{id}` on a queued or finished job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// The job id.
    #[schema(value_type = String, format = Uuid)]
    pub id: String,
    /// Always true.
    pub deleted: bool,
    /// The status it had.
    pub status: JobStatus,
}

/// One public key in `GET /keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Key id (as in the envelope's `signatures[].keyid`).
    pub keyid: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// SubjectPublicKeyInfo PEM.
    pub public_key_pem: String,
    /// The daemon instance that signs with it (a shared store publishes every daemon's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// When the key was first registered in the store (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// When the key stopped signing (RFC 3339); absent while it is in use. An attestation
    /// signed by a retired key is still valid if it was signed before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
}

/// `GET /keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Keys {
    /// The signing keys.
    pub keys: Vec<KeyView>,
    /// The TEE quote provider bound into attestations (simulated | dstack | none).
    pub quote_provider: String,
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` while the daemon serves.
    pub status: String,
    /// The verifier version.
    pub version: String,
    /// Whether a Docker engine answers (any of them, when there are several).
    pub docker: DockerHealth,
    /// Each engine (`[[sandbox.engines]]`, else the one named `default`): whether it
    /// answers, its capacity and the jobs running on it.
    pub engines: Vec<crate::sandbox::EngineHealth>,
    /// Jobs waiting.
    pub queue_depth: u64,
    /// The job store and whether it answers.
    pub store: StoreHealth,
}

/// Store reachability.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StoreHealth {
    /// `sqlite` or `postgres`.
    pub kind: crate::store::StoreKind,
    /// The store answered a trivial query.
    pub reachable: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Docker reachability.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DockerHealth {
    /// The engine answered a ping.
    pub reachable: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl JobView {
    /// The view of a stored job.
    pub fn from_record(job: &JobRecord) -> Self {
        let id = job.id.to_string();
        Self {
            status: job.status,
            phase: job.phase,
            attempt: job.attempt,
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
            package: PackageView {
                name: job.package.name.clone(),
                tree_sha256: job.package.tree_sha256.to_hex(),
                archive_sha256: job.package.archive_sha256.to_hex(),
                files: job.package.files,
                bytes: job.package.bytes,
                runtime: job.package.runtime,
                test_source: job.package.test_source,
            },
            result: job.result.as_ref().map(|r| ResultView {
                status: r.status,
                exit_code: r.exit_code,
                duration_ms: r.duration_ms,
                timed_out: r.timed_out,
                oom_killed: r.oom_killed,
                output_truncated: r.output_truncated,
                verdict: r.verdict,
                network: r.network.clone(),
            }),
            findings: job.result.as_ref().map(|r| r.findings),
            error: job.error.as_ref().map(|e| JobErrorView {
                code: e.code.clone(),
                message: e.message.clone(),
            }),
            cached: false,
            links: Links {
                self_: format!("/verify/{id}"),
                attestation: format!("/verify/{id}/attestation"),
                logs: format!("/verify/{id}/logs"),
            },
            id,
        }
    }
}
