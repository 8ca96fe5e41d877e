//! The `store` stage: durable job rows and content-addressed blobs, all under one data dir.
//!
//! - [`sqlite`]: [`SqliteStore`], jobs and attestation rows in SQLite (WAL mode,
//!   `synchronous=FULL`, so a job answered with 202 survives `kill -9` and power loss).
//! - [`blobs`]: [`Blobs`], uploaded archives, envelopes and logs as files named by their SHA-256
//!   (mode 0600), written to a temp file, fsynced and renamed into place.
//!
//! The queue *is* the `jobs` table: a worker claims the oldest `queued` row in one transaction,
//! which sets it `running` and increments `attempt`. A finished attempt writes its attestation
//! row and the job's final status in one transaction that only succeeds while the row is still
//! `running` with that attempt, so each attempt has at most one signed result. On start-up every
//! `running` row is put back to `queued` (the crash-recovery path).
//!
//! - [`postgres`]: [`PgStore`], the same trait on PostgreSQL for several daemons on one
//!   database: claims are leases (owner, expiry) taken with `FOR UPDATE SKIP LOCKED` and
//!   renewed by a heartbeat; a job whose lease expired is claimed again as attempt + 1, and a
//!   result is written only while its attempt still holds the lease (fencing). Blobs are
//!   mirrored into a `blobs` table so any daemon serves any job.
//!
//! SQLite is the embedded default: one daemon, so its claims need no lease, its blobs are the
//! directory, and start-up puts every `running` row back to `queued`.

pub mod blobs;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::attest::statement::Status;
use crate::digest::Sha256Digest;
use crate::ids::JobId;
use crate::package::{Runtime, TestSource};

pub use blobs::Blobs;
pub use postgres::{PgStore, PgStoreOptions};
pub use sqlite::SqliteStore;

/// A job's status (DESIGN.md, "The API").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted, waiting for a worker.
    Queued,
    /// A worker has it (see `phase`).
    Running,
    /// Tests passed (or no tests were declared and smoke checks passed: `result.status` WARNED).
    Passed,
    /// Tests failed, timed out or were OOM-killed.
    Failed,
    /// The verifier could not do its job (see `error`).
    Error,
    /// Cancelled by `DELETE /verify/{id}` while running.
    Cancelled,
}

impl JobStatus {
    /// Every status, in display order.
    pub const ALL: [JobStatus; 6] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Passed,
        JobStatus::Failed,
        JobStatus::Error,
        JobStatus::Cancelled,
    ];

    /// The lowercase name used in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Passed => "passed",
            JobStatus::Failed => "failed",
            JobStatus::Error => "error",
            JobStatus::Cancelled => "cancelled",
        }
    }

    /// Parses the lowercase name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the job has ended.
    pub fn is_finished(self) -> bool {
        !matches!(self, JobStatus::Queued | JobStatus::Running)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a running job is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Unpacking and validating the archive.
    Unpacking,
    /// Deriving the container spec, resolving the image.
    Preparing,
    /// The test runs in its container.
    Running,
    /// Building and signing the attestation.
    Signing,
}

impl Phase {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Unpacking => "unpacking",
            Phase::Preparing => "preparing",
            Phase::Running => "running",
            Phase::Signing => "signing",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Phase::Unpacking,
            Phase::Preparing,
            Phase::Running,
            Phase::Signing,
        ]
        .into_iter()
        .find(|p| p.as_str() == text)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Package facts recorded when the job is accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageSummary {
    /// Skill name.
    pub name: String,
    /// Canonical tree digest.
    pub tree_sha256: Sha256Digest,
    /// Archive digest.
    pub archive_sha256: Sha256Digest,
    /// Regular files.
    pub files: u64,
    /// Bytes of regular files.
    pub bytes: u64,
    /// The runtime the test needs.
    pub runtime: Runtime,
    /// `declared` | `detected` | `smoke`.
    pub test_source: TestSource,
}

/// Everything the worker needs of an accepted package, recorded when the job is accepted so
/// the archive is read exactly once: the worker streams the job's normalised tar and never
/// reads the archive again. Kept as a blob (the file list can be long), named by the row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackageFacts {
    /// The container format it arrived in.
    pub format: crate::package::Format,
    /// The validated manifest.
    pub manifest: crate::package::Manifest,
    /// The test plan.
    pub test: crate::package::TestPlan,
    /// The Python requirements (absent in facts recorded before they were read).
    #[serde(default)]
    pub requirements: Option<crate::package::requirements::Requirements>,
    /// Canonical tree digest.
    pub tree_sha256: Sha256Digest,
    /// Archive digest.
    pub archive_sha256: Option<Sha256Digest>,
    /// Regular files.
    pub files: u64,
    /// Bytes of regular files.
    pub bytes: u64,
    /// Per-file facts, canonical order, with offsets into the tar.
    pub file_facts: Vec<crate::package::tree::FileRecord>,
    /// Length of the normalised tar.
    pub tar_len: u64,
    /// Bytes the tree occupies unpacked on a tmpfs.
    pub footprint_bytes: u64,
}

impl PackageFacts {
    /// The facts of a package that was read.
    pub fn of(p: &crate::package::Package) -> Self {
        Self {
            format: p.format,
            manifest: p.manifest.clone(),
            test: p.test.clone(),
            requirements: p.requirements.clone(),
            tree_sha256: p.tree_sha256,
            archive_sha256: p.archive_sha256,
            files: p.files,
            bytes: p.bytes,
            file_facts: p.file_facts.clone(),
            tar_len: p.tar.len,
            footprint_bytes: p.tar.footprint_bytes,
        }
    }

    /// The package again, its tree being the normalised tar at `path` with digest `sha256`.
    pub fn into_package(
        self,
        path: std::path::PathBuf,
        sha256: Sha256Digest,
    ) -> crate::package::Package {
        crate::package::Package {
            format: self.format,
            manifest: self.manifest,
            test: self.test,
            requirements: self.requirements,
            tree_sha256: self.tree_sha256,
            archive_sha256: self.archive_sha256,
            files: self.files,
            bytes: self.bytes,
            file_facts: self.file_facts,
            tar: crate::package::TreeTar {
                path,
                sha256,
                len: self.tar_len,
                footprint_bytes: self.footprint_bytes,
            },
        }
    }
}

/// The result summary of a finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultSummary {
    /// PASSED | FAILED | WARNED.
    pub status: Status,
    /// Container exit code.
    pub exit_code: i64,
    /// Milliseconds the test ran.
    pub duration_ms: u64,
    /// Timeout fired.
    pub timed_out: bool,
    /// OOM killer fired.
    pub oom_killed: bool,
    /// Output was truncated.
    pub output_truncated: bool,
    /// The verdict (tests + policy); absent on jobs finished before verdicts existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<crate::scan::VerdictStatus>,
    /// Findings counted by severity.
    #[serde(default)]
    pub findings: crate::scan::SeverityCounts,
    /// The network mode and what the sink observed (absent for jobs finished before it
    /// was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSummary>,
}

/// The network side of a result: the mode and every attempt, as attested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NetworkSummary {
    /// `none`, `observe` or `allowlist`.
    pub mode: String,
    /// Every attempt, aggregated by destination (`predicate.observed.network`).
    #[serde(default)]
    pub observed: Vec<crate::sink::record::Observation>,
    /// Attempts past the sink's bound, counted only.
    #[serde(default)]
    pub dropped: u64,
}

/// Why a job ended in `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobErrorInfo {
    /// Stable machine-readable code.
    pub code: String,
    /// Human message.
    pub message: String,
}

/// One job row.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    /// The id.
    pub id: JobId,
    /// Insertion order; the pagination cursor.
    pub seq: i64,
    /// Status.
    pub status: JobStatus,
    /// Phase while running.
    pub phase: Option<Phase>,
    /// Attempts started so far (0 while first queued).
    pub attempt: u32,
    /// When accepted.
    pub created_at: OffsetDateTime,
    /// When the current/last attempt started.
    pub started_at: Option<OffsetDateTime>,
    /// When it finished.
    pub finished_at: Option<OffsetDateTime>,
    /// Package facts.
    pub package: PackageSummary,
    /// The job's blob: the normalised tar of the skill tree. (A job accepted by a verifier
    /// before 0.2, whose `facts` is `None`, names the uploaded archive here instead.)
    pub tree_tar: Sha256Digest,
    /// The blob of the package's [`PackageFacts`] (JSON).
    pub facts: Option<Sha256Digest>,
    /// Result cache key (tree, policy, image, verifier version).
    pub cache_key: Option<String>,
    /// Result summary once finished.
    pub result: Option<ResultSummary>,
    /// Error once failed with `error`.
    pub error: Option<JobErrorInfo>,
    /// The DSSE envelope's blob once signed.
    pub attestation: Option<Sha256Digest>,
    /// The captured logs' blob once finished.
    pub logs: Option<Sha256Digest>,
}

/// A job to insert (status `queued`).
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The id.
    pub id: JobId,
    /// Package facts.
    pub package: PackageSummary,
    /// The normalised tar's blob.
    pub tree_tar: Sha256Digest,
    /// The blob of the package's [`PackageFacts`].
    pub facts: Sha256Digest,
    /// Result cache key.
    pub cache_key: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct Finish {
    /// Passed, failed, error or cancelled.
    pub status: JobStatus,
    /// Result summary (absent for error/cancelled).
    pub result: Option<ResultSummary>,
    /// Error details (for error).
    pub error: Option<JobErrorInfo>,
    /// The signed envelope's blob (passed/failed).
    pub attestation: Option<Sha256Digest>,
    /// The logs' blob.
    pub logs: Option<Sha256Digest>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs.
    pub jobs: Vec<JobRecord>,
    /// Cursor for the next (older) page, if there is one.
    pub next_cursor: Option<i64>,
}

/// What `delete_job` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// No such job.
    NotFound,
    /// The job was queued or finished and its row is gone.
    Removed(JobStatus),
    /// The job is running: the caller must cancel it instead.
    Running,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Opening or migrating the database.
    #[error("opening the database {path}: {source}")]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// A query failed.
    #[error("{operation}: {source}")]
    Query {
        /// Which operation.
        operation: &'static str,
        /// The SQLite error.
        source: rusqlite::Error,
    },
    /// A stored row could not be decoded.
    #[error("corrupt row for job {id}: {what}")]
    Corrupt {
        /// The job id text.
        id: String,
        /// What was wrong.
        what: String,
    },
    /// Blob I/O.
    #[error("blob {what}: {source}")]
    Blob {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("store task failed: {0}")]
    Task(String),
    /// The operation needs a store this one is not (e.g. webhooks need PostgreSQL).
    #[error("{0} needs the PostgreSQL store (serve --store postgres://...)")]
    Unsupported(&'static str),
    /// Connecting to PostgreSQL or building the pool.
    #[error("connecting to PostgreSQL at {url}: {reason}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// What failed.
        reason: String,
    },
    /// A PostgreSQL query failed.
    #[error("{operation}: {source}")]
    Postgres {
        /// Which operation.
        operation: &'static str,
        /// The driver's error.
        source: tokio_postgres::Error,
    },
    /// No PostgreSQL connection could be had from the pool.
    #[error("{operation}: no database connection: {source}")]
    Pool {
        /// Which operation.
        operation: &'static str,
        /// The pool's error.
        source: deadpool_postgres::PoolError,
    },
}

/// Which kind of store a daemon runs on (`/health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// SQLite in the data dir.
    Sqlite,
    /// PostgreSQL, shared by every daemon on it.
    Postgres,
}

/// One signing key in the store's key registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The key id (derived from the public key).
    pub key_id: String,
    /// The public key, PEM (SPKI).
    pub public_key_pem: String,
    /// The daemon instance that registered it.
    pub instance: String,
    /// When the key was first registered.
    pub first_seen: OffsetDateTime,
    /// When it stopped signing; `None` while in use.
    pub retired_at: Option<OffsetDateTime>,
}

/// One webhook delivery taken from the outbox (leased to this daemon while it tries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The delivery's id: the `webhook-id` header, the same on every retry.
    pub id: String,
    /// The job it reports.
    pub job_id: JobId,
    /// Where it goes.
    pub url: String,
    /// Tries made before this one.
    pub attempts: u32,
}

/// Every blob digest a row names: the job's tar, facts, final envelope and logs, and every
/// attempt's envelope (same SQL on both stores; NULLs left out, so `NOT IN` over it works).
pub(crate) const REFERENCED_BLOBS: &str =
    "SELECT archive FROM jobs UNION SELECT facts FROM jobs WHERE facts IS NOT NULL \
     UNION SELECT attestation FROM jobs WHERE attestation IS NOT NULL \
     UNION SELECT logs FROM jobs WHERE logs IS NOT NULL \
     UNION SELECT envelope FROM attestations";

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Collected {
    /// Finished job rows (with their attestation rows).
    pub jobs: u64,
    /// Blobs kept in the store (PostgreSQL) that no remaining row names.
    pub store_blobs: u64,
    /// Files of the local blob directory that no remaining row names.
    pub local_blobs: u64,
}

/// What a claim took: the job, and whether it was rescued from a lost lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The job, now running as a new attempt held by this daemon.
    pub job: JobRecord,
    /// The job was running under another lease that expired (its daemon died or stalled).
    pub rescued: bool,
    /// For a rescue: the instance whose lease expired (its containers are orphans now).
    pub previous_owner: Option<String>,
}

/// The job store: the durable queue and its results.
#[async_trait]
pub trait Store: Send + Sync {
    /// Inserts a queued job.
    async fn insert_job(&self, job: NewJob) -> Result<JobRecord, StoreError>;
    /// One job.
    async fn get_job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError>;
    /// Jobs newest first, optionally by status, `limit` at most, older than `cursor`.
    async fn list_jobs(
        &self,
        status: Option<JobStatus>,
        cursor: Option<i64>,
        limit: u32,
    ) -> Result<JobPage, StoreError>;
    /// Claims the oldest queued job: sets it running, attempt + 1, started now.
    async fn claim_next(&self) -> Result<Option<JobRecord>, StoreError>;
    /// Ends a running attempt; false if the row was no longer running with that attempt
    /// (cancelled, deleted or re-queued meanwhile), in which case nothing was written.
    async fn finish(&self, id: JobId, attempt: u32, finish: Finish) -> Result<bool, StoreError>;
    /// Puts one running attempt back to queued (graceful shutdown); false if it was not running.
    async fn requeue(&self, id: JobId, attempt: u32) -> Result<bool, StoreError>;
    /// Puts every running job back to queued (start-up recovery); returns how many.
    async fn requeue_all_running(&self) -> Result<u64, StoreError>;
    /// Deletes a queued or finished job; a running one is left alone.
    async fn delete_job(&self, id: JobId) -> Result<Deleted, StoreError>;
    /// How many jobs are queued.
    async fn count_queued(&self) -> Result<u64, StoreError>;
    /// Counts by status (for metrics).
    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, StoreError>;
    /// The newest passed/failed job with this cache key.
    async fn find_cached(&self, cache_key: &str) -> Result<Option<JobRecord>, StoreError>;

    /// Retention: removes finished jobs that finished before `cutoff` (with their attestation
    /// rows and webhooks; the result cache is these rows, so its old entries go too) and
    /// blobs kept in the store, older than `cutoff`, that no remaining row names.
    async fn collect(&self, cutoff: OffsetDateTime) -> Result<Collected, StoreError>;
    /// Every blob a remaining job or attestation row names (what a blob sweep must keep).
    async fn referenced_blobs(&self)
        -> Result<std::collections::HashSet<Sha256Digest>, StoreError>;

    /// Which kind of store this is.
    fn kind(&self) -> StoreKind {
        StoreKind::Sqlite
    }
    /// Answers when the database does (`/health`).
    async fn ping(&self) -> Result<(), StoreError> {
        self.count_queued().await.map(|_| ())
    }
    /// Claims the next job, saying whether it was rescued from an expired lease. A store
    /// without leases claims only queued jobs.
    async fn claim(&self) -> Result<Option<Claimed>, StoreError> {
        Ok(self.claim_next().await?.map(|job| Claimed {
            job,
            rescued: false,
            previous_owner: None,
        }))
    }
    /// Renews the leases this daemon holds on its running jobs (the heartbeat); returns how
    /// many were renewed. A store without leases has nothing to renew.
    async fn renew_leases(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// Start-up recovery. A store of one daemon puts every running job back to queued; a
    /// shared store leaves other daemons' jobs alone (their leases say whether they live)
    /// and gives up only what this daemon held before it restarted.
    async fn recover_interrupted(&self) -> Result<u64, StoreError> {
        self.requeue_all_running().await
    }
    /// Whether blobs must be copied into the store for other daemons to read.
    fn shares_blobs(&self) -> bool {
        false
    }
    /// Keeps a blob where every daemon reads it (no-op when the blob directory is the only
    /// copy).
    async fn put_blob(&self, _digest: Sha256Digest, _bytes: Vec<u8>) -> Result<(), StoreError> {
        Ok(())
    }
    /// A blob another daemon kept with [`Store::put_blob`].
    async fn get_blob(&self, _digest: Sha256Digest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    /// Registers (or re-announces) a daemon's public key.
    async fn register_key(&self, _key: KeyRecord) -> Result<(), StoreError> {
        Ok(())
    }
    /// Every registered key, oldest first.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        Ok(Vec::new())
    }
    /// Marks a key retired now (it stays published); false if unknown or already retired.
    async fn retire_key(&self, _key_id: &str) -> Result<bool, StoreError> {
        Ok(false)
    }
    /// Inserts a queued job with webhook callbacks for its terminal status. The default
    /// inserts, then registers each callback (not atomic); a store with webhooks does both in
    /// one transaction.
    async fn insert_job_with_webhooks(
        &self,
        job: NewJob,
        webhooks: &[String],
    ) -> Result<JobRecord, StoreError> {
        if !webhooks.is_empty() {
            return Err(StoreError::Unsupported("webhooks"));
        }
        self.insert_job(job).await
    }
    /// Registers a callback for a job's terminal status. A job that already ended gets its
    /// delivery queued at once.
    async fn add_webhook(&self, _job: JobId, _url: &str) -> Result<(), StoreError> {
        Err(StoreError::Unsupported("webhooks"))
    }
    /// Takes up to `limit` due deliveries, leased to this daemon for `lease`.
    async fn claim_webhooks(
        &self,
        _limit: u32,
        _lease: std::time::Duration,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        Ok(Vec::new())
    }
    /// Records a delivery's outcome: delivered (`Ok`), or failed with a reason and when to
    /// retry (`None`: given up).
    async fn webhook_outcome(
        &self,
        _id: &str,
        _outcome: Result<(), (String, Option<std::time::Duration>)>,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// RFC 3339 text of a time (UTC, as stored and as shown).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}
