//! The `jobs` stage: accepting uploads, the durable queue, the supervised worker pool,
//! cancellation, crash recovery and graceful shutdown.
//!
//! - [`pipeline`]: the typed stages of one verification (`Package` → `Ran` → `Attested`),
//!   shared with the daemon-less `skill-verifier verify`.
//! - [`metrics`]: the Prometheus metrics.
//!
//! The queue lives in the store (the `jobs` table), not in memory, so a job answered with 202
//! survives a crash. Workers claim the oldest queued row; a [`tokio::sync::Notify`] wakes them
//! on a new job, with a periodic poll as a backstop. The "bounded queue" is enforced at accept
//! time: at `queue_capacity` queued jobs, `submit` refuses with [`SubmitError::QueueFull`].
//!
//! Result cache: an upload whose cache key (tree digest, runtime image digest, sandbox policy,
//! verifier version, quote provider) matches a finished passed/failed job returns **that
//! earlier job** (no new record), unless the caller asks for a fresh run.

pub mod metrics;
pub mod pipeline;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::attest::statement::{Status, VerdictStatus};
use crate::digest::Sha256Digest;
use crate::ids::JobId;
use crate::package::{Limits, Package, PackageError};
use crate::store::{
    Blobs, Deleted, Finish, JobErrorInfo, JobRecord, JobStatus, NewJob, PackageFacts,
    PackageSummary, Phase, Store, StoreError,
};

pub use metrics::Metrics;
pub use pipeline::{Attempt, PipelineError, Verifier};

/// How long a resolved image identity is trusted before asking the engine again (cache keys
/// use it; `images prepare` replacing an image takes effect within this time).
const IMAGE_IDENTITY_TTL: Duration = Duration::from_secs(30);
/// How often idle workers look at the queue even without a wake-up.
const IDLE_POLL: Duration = Duration::from_secs(2);
/// Deadline for one store call from a worker.
const STORE_DEADLINE: Duration = Duration::from_secs(30);
/// Deadline for unpacking one package (the limits bound the work; this bounds the disk).
const UNPACK_DEADLINE: Duration = Duration::from_secs(120);
/// Deadline for signing (the dstack quote is a network call).
const ATTEST_DEADLINE: Duration = Duration::from_secs(60);

/// An upload already streamed to a private temp file in the blob directory.
#[derive(Debug)]
pub struct Upload {
    /// The temp file (from [`Blobs::temp_path`]).
    pub path: PathBuf,
    /// Its SHA-256, computed while writing.
    pub sha256: Sha256Digest,
    /// Its size.
    pub bytes: u64,
}

/// What `submit` did.
#[derive(Debug)]
pub enum Submitted {
    /// A new job was queued.
    Accepted(JobRecord),
    /// An identical package under an identical policy was verified before: that job.
    Cached(JobRecord),
}

/// Why an upload was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds `queue_capacity` jobs.
    #[error("the queue is full ({0} jobs waiting); retry later")]
    QueueFull(u64),
    /// The package is invalid (or could not be read).
    #[error(transparent)]
    Package(#[from] PackageError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `cancel` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// No such job.
    NotFound,
    /// A queued or finished job's record was deleted.
    Deleted(JobStatus),
    /// A running job was cancelled; its container is being killed.
    Cancelling,
    /// The job is running but not in this daemon's hands (it never registered within the
    /// wait), so there is nothing here to kill.
    NotHere,
}

struct RunningJob {
    cancel: CancellationToken,
    requeue: Arc<AtomicBool>,
    /// The phase, kept in memory: it changes several times per job and is not a status
    /// transition, so it costs no synchronous database commit (see `with_phase`).
    phase: Arc<Mutex<Phase>>,
}

struct Inner {
    store: Arc<dyn Store>,
    blobs: Blobs,
    verifier: Verifier,
    limits: Limits,
    queue_capacity: u64,
    quote_kind: String,
    notify: Notify,
    running: Mutex<HashMap<JobId, RunningJob>>,
    metrics: Arc<Metrics>,
    stopping: CancellationToken,
    image_identities: Mutex<HashMap<String, (String, Instant)>>,
}

/// The job scheduler: accepts uploads, runs workers, cancels, recovers, shuts down.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

/// Settings the scheduler needs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Package limits.
    pub limits: Limits,
    /// Most queued jobs.
    pub queue_capacity: u64,
    /// The quote provider's name (part of the cache key).
    pub quote_kind: String,
}

impl Scheduler {
    /// A scheduler over a store, a blob directory and a verifier.
    pub fn new(
        store: Arc<dyn Store>,
        blobs: Blobs,
        verifier: Verifier,
        config: SchedulerConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                blobs,
                verifier,
                limits: config.limits,
                queue_capacity: config.queue_capacity,
                quote_kind: config.quote_kind,
                notify: Notify::new(),
                running: Mutex::new(HashMap::new()),
                metrics,
                stopping: CancellationToken::new(),
                image_identities: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The blobs.
    pub fn blobs(&self) -> &Blobs {
        &self.inner.blobs
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    /// Reads a blob on the blocking pool (fetching it from a shared store first when
    /// another daemon wrote it).
    pub async fn read_blob(&self, digest: Sha256Digest) -> Result<Vec<u8>, StoreError> {
        self.local_blob(digest).await?;
        let blobs = self.inner.blobs.clone();
        blocking(move || blobs.read(&digest)).await
    }

    /// Copies blobs from the local directory into the store when other daemons read them
    /// there (PostgreSQL); nothing to do on SQLite, where the directory is the only copy.
    /// Called before the row that names them is written, so a row never names a blob another
    /// daemon cannot read. A blob is read whole into memory for the copy: package tars are
    /// bounded by the unpacked-size limit.
    async fn share_blobs(&self, digests: &[Sha256Digest]) -> Result<(), StoreError> {
        let store = &self.inner.store;
        if !store.shares_blobs() {
            return Ok(());
        }
        for digest in digests.iter().copied() {
            let blobs = self.inner.blobs.clone();
            let bytes = blocking(move || blobs.read(&digest)).await?;
            store.put_blob(digest, bytes).await?;
        }
        Ok(())
    }

    /// Makes sure a blob is in the local blob directory: on a shared store, a blob another
    /// daemon wrote is fetched once and kept locally (the directory is a cache there).
    async fn local_blob(&self, digest: Sha256Digest) -> Result<(), StoreError> {
        let store = &self.inner.store;
        if !store.shares_blobs() || self.inner.blobs.path(&digest).exists() {
            return Ok(());
        }
        if let Some(bytes) = store.get_blob(digest).await? {
            let blobs = self.inner.blobs.clone();
            blocking(move || blobs.put(&bytes)).await?;
        }
        Ok(())
    }

    /// Retention: removes finished jobs older than `max_age` (rows, attestation rows,
    /// webhooks, cache entries), then the blobs (in the store and in this daemon's blob
    /// directory) older than `max_age` that no remaining row names.
    pub async fn collect_garbage(
        &self,
        max_age: Duration,
    ) -> Result<crate::store::Collected, StoreError> {
        let cutoff = time::OffsetDateTime::now_utc() - max_age;
        let mut collected = self.inner.store.collect(cutoff).await?;
        let keep = self.inner.store.referenced_blobs().await?;
        let blobs = self.inner.blobs.clone();
        let older_than = std::time::SystemTime::now() - max_age;
        collected.local_blobs = blocking(move || Ok(blobs.sweep(&keep, older_than) as u64)).await?;
        // The dependency cache: sets not used within `max_age`, the files only they named,
        // stale scratch. A failure here is logged, never fatal.
        let deps = self.inner.verifier.deps.cache().clone();
        match tokio::task::spawn_blocking(move || deps.collect(max_age)).await {
            Ok(Ok(n)) if n > 0 => tracing::info!(files = n, "retention: dependency cache"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "retention: dependency cache"),
            Err(e) => tracing::warn!(error = %e, "retention: dependency cache"),
        }
        Ok(collected)
    }

    /// Renews this daemon's leases every `every` until the returned task is aborted (after
    /// the workers stopped). Runs on every store; one without leases renews none.
    pub fn spawn_heartbeat(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match tokio::time::timeout(every, inner.store.renew_leases()).await {
                    Ok(Ok(n)) => {
                        inner.metrics.lease_renewals.inc_by(n);
                    }
                    Ok(Err(e)) => {
                        inner.metrics.lease_renewal_failures.inc();
                        tracing::error!(error = %e, "renewing leases failed");
                    }
                    Err(_) => {
                        inner.metrics.lease_renewal_failures.inc();
                        tracing::error!("renewing leases timed out");
                    }
                }
            }
        })
    }

    /// Fills in the live phase of a job this daemon is running (the store keeps only the
    /// phase set at claim time).
    pub fn with_phase(&self, mut job: JobRecord) -> JobRecord {
        if job.status == JobStatus::Running {
            let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = running.get(&job.id) {
                job.phase = Some(*r.phase.lock().unwrap_or_else(|p| p.into_inner()));
            }
        }
        job
    }

    /// Start-up recovery: removes containers an earlier run of this instance left, clears
    /// leftover work folders, and puts interrupted jobs back in the queue (their next claim
    /// is attempt + 1). Returns (containers removed, jobs re-queued).
    pub async fn recover(&self) -> anyhow::Result<(usize, u64)> {
        use anyhow::Context;
        let inner = &self.inner;
        let reaped = match inner.verifier.runner.reap(&inner.verifier.instance).await {
            Ok(n) => n,
            Err(e) => {
                // Docker may be down right now; jobs will fail with a clear error and the
                // next start reaps. Never refuse to start over it.
                tracing::warn!(error = %e, "could not reap containers left by an earlier run");
                0
            }
        };
        prewarm(&inner.verifier);
        let temp = inner.blobs.clear_temp();
        if temp > 0 {
            tracing::info!(
                files = temp,
                "removed partial uploads left by an earlier run"
            );
        }
        let requeued = inner
            .store
            .recover_interrupted()
            .await
            .context("re-queueing interrupted jobs")?;
        if requeued > 0 || reaped > 0 {
            tracing::info!(requeued, reaped, "recovered from an earlier run");
        }
        Ok((reaped, requeued))
    }

    /// Starts `n` workers, supervised in the returned `JoinSet`.
    pub fn spawn_workers(&self, n: usize) -> JoinSet<()> {
        let mut set = JoinSet::new();
        for worker in 0..n {
            let me = self.clone();
            set.spawn(async move { me.worker_loop(worker).await });
        }
        set
    }

    /// Accepts an upload: validates it (refusing an invalid package with its specific
    /// error), answers from the result cache when it can, else queues a job.
    pub async fn submit(&self, upload: Upload, fresh: bool) -> Result<Submitted, SubmitError> {
        self.submit_with_webhooks(upload, fresh, &[]).await
    }

    /// [`Scheduler::submit`] with webhook callbacks for the job's terminal status, stored with
    /// the job in one transaction (a crash cannot keep the job and lose its callbacks); a
    /// cached answer is already terminal, so its callbacks are queued at once.
    pub async fn submit_with_webhooks(
        &self,
        upload: Upload,
        fresh: bool,
        webhooks: &[String],
    ) -> Result<Submitted, SubmitError> {
        let result = self.submit_inner(&upload, fresh, webhooks).await;
        // Whatever happened, the temp file is adopted or removed here.
        let _ = tokio::fs::remove_file(&upload.path).await;
        if let Err(e) = &result {
            let code = match e {
                SubmitError::QueueFull(_) => "queue_full",
                SubmitError::Package(p) => p.code(),
                _ => "internal",
            };
            self.inner
                .metrics
                .refused
                .get_or_create(&metrics::CodeLabel { code: code.into() })
                .inc();
        }
        result
    }

    async fn submit_inner(
        &self,
        upload: &Upload,
        fresh: bool,
        webhooks: &[String],
    ) -> Result<Submitted, SubmitError> {
        let inner = &self.inner;
        let queued = inner.store.count_queued().await?;
        if queued >= inner.queue_capacity {
            return Err(SubmitError::QueueFull(queued));
        }
        let clock = Instant::now();
        // The one read of the archive: validated facts out, and its normalised tar written
        // straight into the blob directory (same filesystem, so adopting it is a rename).
        let tar_tmp = inner.blobs.temp_path();
        let package =
            read_package(upload.path.clone(), tar_tmp.clone(), inner.limits.clone()).await;
        let package = match package {
            Ok(p) => p,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tar_tmp).await;
                return Err(e.into());
            }
        };
        inner
            .metrics
            .observe_stage("validate", clock.elapsed().as_secs_f64());

        let cache_key = self.cache_key(&package).await;
        if let (false, Some(key)) = (fresh, cache_key.as_deref()) {
            if let Some(hit) = inner.store.find_cached(key).await? {
                let _ = tokio::fs::remove_file(&tar_tmp).await;
                inner.metrics.cache_hits.inc();
                for url in webhooks {
                    inner.store.add_webhook(hit.id, url).await?;
                }
                return Ok(Submitted::Cached(hit));
            }
        }
        // The uploaded archive itself is not kept: its digest is recorded, and the tar is
        // what every later step reads. Blobs are durable before the row that names them.
        let facts = PackageFacts::of(&package);
        let facts_json = serde_json::to_vec(&facts).expect("plain data serializes");
        let (blobs, tar_sha256) = (inner.blobs.clone(), package.tar.sha256);
        let facts = blocking(move || {
            let adopted = blobs.adopt(&tar_tmp, &tar_sha256);
            if adopted.is_err() {
                let _ = std::fs::remove_file(&tar_tmp);
            }
            adopted?;
            blobs.put(&facts_json)
        })
        .await?;
        self.share_blobs(&[tar_sha256, facts]).await?;
        let archive = upload.sha256;
        let job = inner
            .store
            .insert_job_with_webhooks(
                NewJob {
                    id: JobId::new(),
                    package: PackageSummary {
                        name: package.manifest.name.clone(),
                        tree_sha256: package.tree_sha256,
                        archive_sha256: archive,
                        files: package.files,
                        bytes: package.bytes,
                        runtime: package.test.runtime,
                        test_source: package.test.source,
                    },
                    tree_tar: tar_sha256,
                    facts,
                    cache_key,
                },
                webhooks,
            )
            .await?;
        inner.metrics.accepted.inc();
        inner.notify.notify_one();
        tracing::info!(job_id = %job.id, skill = %job.package.name, "job queued");
        Ok(Submitted::Accepted(job))
    }

    /// The result-cache key, or `None` when the runtime's image cannot be resolved (then the
    /// job runs and fails with a clear image error instead of matching a stale result).
    ///
    /// A package with Python requirements that are not all exact pins has no key: the index
    /// may have moved since, so it is resolved again every time. With exact pins, the pins
    /// are in the tree digest and the index configuration goes into the key.
    async fn cache_key<T>(&self, package: &Package<T>) -> Option<String> {
        let inner = &self.inner;
        let policy = &inner.verifier.policy;
        let image = policy.images.get(&package.test.runtime)?.clone();
        let deps = match &package.requirements {
            Some(r) if package.test.runtime == crate::package::Runtime::Python => {
                if !r.all_pinned() {
                    return None;
                }
                inner.verifier.deps.settings.cache_identity()
            }
            _ => String::new(),
        };
        // What the image is made of, not one engine's ID for it: daemons with different
        // engines share the cache (see `Runner::image_identity`).
        let identity = self.image_identity(&image).await?;
        let mut h = Sha256::new();
        for part in [
            deps.as_str(),
            package.tree_sha256.to_hex().as_str(),
            &image,
            &identity,
            &serde_json::to_string(policy).ok()?,
            &inner.verifier.scan.policy.sha256().to_hex(),
            &inner.verifier.scan.scanner.rules_sha256().to_hex(),
            crate::VERSION,
            &inner.quote_kind,
        ] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part.as_bytes());
        }
        Some(Sha256Digest::finish(h).to_hex())
    }

    async fn image_identity(&self, image: &str) -> Option<String> {
        let inner = &self.inner;
        {
            let memo = inner
                .image_identities
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((digest, at)) = memo.get(image) {
                if at.elapsed() < IMAGE_IDENTITY_TTL {
                    return Some(digest.clone());
                }
            }
        }
        let digest = tokio::time::timeout(
            Duration::from_secs(10),
            inner.verifier.runner.image_identity(image),
        )
        .await
        .ok()?
        .ok()?;
        inner
            .image_identities
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(image.to_string(), (digest.clone(), Instant::now()));
        Some(digest)
    }

    /// Cancels a running job (kills its container) or deletes a queued/finished one.
    pub async fn cancel(&self, id: JobId) -> Result<Cancelled, StoreError> {
        // A job can move from queued to running between our look and our delete; retry a
        // few times until it is either deleted or registered as running.
        for _ in 0..50 {
            match self.inner.store.delete_job(id).await? {
                Deleted::NotFound => return Ok(Cancelled::NotFound),
                Deleted::Removed(status) => return Ok(Cancelled::Deleted(status)),
                Deleted::Running => {
                    let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(job) = running.get(&id) {
                        job.cancel.cancel();
                        return Ok(Cancelled::Cancelling);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Cancelled::NotHere)
    }

    /// Graceful shutdown: workers stop claiming; running jobs get `grace` to finish; the
    /// rest are killed and put back in the queue for the next start.
    pub async fn shutdown(&self, mut workers: JoinSet<()>, grace: Duration) {
        self.inner.stopping.cancel();
        self.inner.notify.notify_waiters();
        let drained = tokio::time::timeout(grace, join_all(&mut workers)).await;
        if drained.is_err() {
            let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
            tracing::warn!(
                jobs = running.len(),
                "grace period over: re-queueing running jobs"
            );
            for job in running.values() {
                job.requeue.store(true, Ordering::SeqCst);
                job.cancel.cancel();
            }
        }
        if tokio::time::timeout(Duration::from_secs(30), join_all(&mut workers))
            .await
            .is_err()
        {
            tracing::error!("workers did not stop; aborting them");
            workers.abort_all();
        }
        if tokio::time::timeout(Duration::from_secs(30), self.inner.verifier.runner.settle())
            .await
            .is_err()
        {
            tracing::warn!("some containers were not removed in time; the next start reaps them");
        }
    }

    async fn worker_loop(self, worker: usize) {
        let inner = &self.inner;
        loop {
            if inner.stopping.is_cancelled() {
                break;
            }
            let claimed = tokio::time::timeout(STORE_DEADLINE, inner.store.claim()).await;
            match claimed {
                Ok(Ok(Some(claimed))) => {
                    inner.metrics.claims.inc();
                    if claimed.rescued {
                        inner.metrics.rescues.inc();
                        tracing::warn!(job_id = %claimed.job.id, attempt = claimed.job.attempt,
                            "took over a job whose lease expired");
                        // Its daemon is gone (or lost its leases: its results are fenced
                        // anyway): the containers it left on the engine, running or pooled,
                        // are removed by the daemon taking its jobs over.
                        let verifier = &inner.verifier;
                        if let Some(dead) = claimed
                            .previous_owner
                            .as_deref()
                            .filter(|o| *o != verifier.instance)
                        {
                            match verifier.runner.reap(dead).await {
                                Ok(0) => {}
                                Ok(n) => tracing::warn!(
                                    instance = dead,
                                    removed = n,
                                    "removed the containers a lost daemon left"
                                ),
                                Err(e) => tracing::warn!(instance = dead, error = %e,
                                    "could not remove a lost daemon's containers"),
                            }
                        }
                    }
                    inner.metrics.leases_held.inc();
                    self.process(claimed.job).await;
                    inner.metrics.leases_held.dec();
                }
                Ok(Ok(None)) => {
                    tokio::select! {
                        _ = inner.notify.notified() => {}
                        _ = inner.stopping.cancelled() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
                Ok(Err(e)) => {
                    tracing::error!(worker, error = %e, "claiming a job failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(_) => {
                    tracing::error!(worker, "claiming a job timed out");
                }
            }
        }
        tracing::debug!(worker, "worker stopped");
    }

    #[tracing::instrument(skip_all, fields(job_id = %job.id, attempt = job.attempt))]
    async fn process(&self, job: JobRecord) {
        let inner = &self.inner;
        let cancel = CancellationToken::new();
        let requeue = Arc::new(AtomicBool::new(false));
        let phase = Arc::new(Mutex::new(Phase::Unpacking));
        inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                job.id,
                RunningJob {
                    cancel: cancel.clone(),
                    requeue: requeue.clone(),
                    phase: phase.clone(),
                },
            );
        let result = self.execute(&job, cancel, phase).await;
        inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&job.id);

        let finish = match result {
            Ok(finish) => finish,
            Err(PipelineError::Cancelled) if requeue.load(Ordering::SeqCst) => {
                match inner.store.requeue(job.id, job.attempt).await {
                    Ok(_) => tracing::info!("re-queued for the next start"),
                    Err(e) => tracing::error!(error = %e, "re-queueing failed"),
                }
                return;
            }
            Err(PipelineError::Cancelled) => Finish {
                status: JobStatus::Cancelled,
                result: None,
                error: None,
                attestation: None,
                logs: None,
            },
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "job failed");
                error_finish(e.code(), error_chain(&e))
            }
        };
        let status = finish.status;
        match inner.store.finish(job.id, job.attempt, finish).await {
            Ok(true) => {
                inner
                    .metrics
                    .finished
                    .get_or_create(&metrics::StatusLabel {
                        status: status.as_str().into(),
                    })
                    .inc();
                tracing::info!(status = status.as_str(), "job finished");
            }
            Ok(false) => {
                inner.metrics.fenced.inc();
                tracing::warn!("job was no longer running under this attempt; result discarded")
            }
            Err(e) => tracing::error!(error = %e, "recording the result failed"),
        }
    }

    async fn execute(
        &self,
        job: &JobRecord,
        cancel: CancellationToken,
        phase: Arc<Mutex<Phase>>,
    ) -> Result<Finish, PipelineError> {
        let inner = &self.inner;
        let attempt = Attempt {
            job: job.id,
            attempt: job.attempt,
        };
        let clock = Instant::now();
        let package = match self.package_of(job).await {
            Ok(p) => p,
            // Accepted packages were valid; this is a limit change or a damaged blob.
            Err(JobPackageError::Package(e)) => {
                return Ok(error_finish(
                    &format!("package_{}", e.code()),
                    e.to_string(),
                ))
            }
            Err(JobPackageError::Store(e)) => return Err(e.into()),
        };
        inner
            .metrics
            .observe_stage("unpack", clock.elapsed().as_secs_f64());
        if cancel.is_cancelled() {
            return Err(PipelineError::Cancelled);
        }

        set_phase(&phase, Phase::Preparing);
        // Derive the spec before the phase says "running", so a policy refusal shows up as
        // an error of the preparing phase.
        inner.verifier.spec(&package, attempt)?;
        set_phase(&phase, Phase::Running);
        let clock = Instant::now();
        let ran = inner.verifier.run(attempt, package, cancel.clone()).await?;
        inner
            .metrics
            .observe_stage("run", clock.elapsed().as_secs_f64());
        if cancel.is_cancelled() {
            return Err(PipelineError::Cancelled);
        }

        set_phase(&phase, Phase::Signing);
        let clock = Instant::now();
        let attested = tokio::time::timeout(ATTEST_DEADLINE, inner.verifier.attest(&ran))
            .await
            .map_err(|_| PipelineError::AttestTimeout {
                secs: ATTEST_DEADLINE.as_secs(),
            })??;
        let blobs = inner.blobs.clone();
        let (envelope_json, logs_json) = (attested.envelope_json, attested.logs_json);
        let (envelope, logs) = blocking(move || {
            Ok::<_, StoreError>((blobs.put(&envelope_json)?, blobs.put(&logs_json)?))
        })
        .await?;
        self.share_blobs(&[envelope, logs]).await?;
        inner
            .metrics
            .observe_stage("attest", clock.elapsed().as_secs_f64());
        Ok(Finish {
            // The verdict decides: a blocking finding fails the job even when the tests passed.
            status: match (attested.status, attested.verdict) {
                (Status::Failed, _) | (_, VerdictStatus::Failed) => JobStatus::Failed,
                (Status::Passed | Status::Warned, VerdictStatus::Passed) => JobStatus::Passed,
            },
            result: Some(attested.summary),
            error: None,
            attestation: Some(envelope),
            logs: Some(logs),
        })
    }
}

/// Why a job's package could not be brought back.
enum JobPackageError {
    /// The stored blob no longer passes as a package.
    Package(PackageError),
    /// The blobs could not be read.
    Store(StoreError),
}

impl Scheduler {
    /// The package of an accepted job: its recorded facts and its normalised tar blob. A job
    /// accepted before facts were recorded has the uploaded archive as its blob: that is
    /// read (once) into a tar blob here, through the same reader.
    async fn package_of(&self, job: &JobRecord) -> Result<Package, JobPackageError> {
        for digest in job.facts.into_iter().chain([job.tree_tar]) {
            self.local_blob(digest)
                .await
                .map_err(JobPackageError::Store)?;
        }
        let blobs = self.inner.blobs.clone();
        if let Some(facts) = job.facts {
            let (blobs2, tar) = (blobs.clone(), job.tree_tar);
            let facts: PackageFacts = blocking(move || blobs2.read(&facts))
                .await
                .and_then(|bytes| {
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        id: job.id.to_string(),
                        what: format!("package facts: {e}"),
                    })
                })
                .map_err(JobPackageError::Store)?;
            return Ok(facts.into_package(blobs.path(&tar), tar));
        }
        let tar_tmp = blobs.temp_path();
        let package = read_package(
            blobs.path(&job.tree_tar),
            tar_tmp.clone(),
            self.inner.limits.clone(),
        )
        .await
        .map_err(JobPackageError::Package)?;
        let sha = package.tar.sha256;
        let path = blocking(move || blobs.adopt(&tar_tmp, &sha))
            .await
            .map_err(JobPackageError::Store)?;
        Ok(Package {
            tar: crate::package::TreeTar {
                path,
                ..package.tar
            },
            ..package
        })
    }
}

fn set_phase(phase: &Mutex<Phase>, next: Phase) {
    *phase.lock().unwrap_or_else(|p| p.into_inner()) = next;
}

/// An error and its sources, `outer: inner: innermost`, for the job's `error.message`.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

fn error_finish(code: &str, message: String) -> Finish {
    Finish {
        status: JobStatus::Error,
        result: None,
        error: Some(JobErrorInfo {
            code: code.to_string(),
            message,
        }),
        attestation: None,
        logs: None,
    }
}

/// Runs blocking file I/O (fsyncs included) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

async fn join_all(set: &mut JoinSet<()>) {
    while let Some(res) = set.join_next().await {
        if let Err(e) = res {
            tracing::error!(error = %e, "worker task failed");
        }
    }
}

/// Reads a package once on the blocking pool, under a deadline, writing its normalised tar
/// to `tar` (nothing is left there on a refusal).
async fn read_package(
    archive: PathBuf,
    tar: PathBuf,
    limits: Limits,
) -> Result<Package, PackageError> {
    let task = tokio::task::spawn_blocking(move || crate::package::read(&archive, &tar, &limits));
    deadline(task).await
}

async fn deadline<T>(
    task: tokio::task::JoinHandle<Result<T, PackageError>>,
) -> Result<T, PackageError> {
    match tokio::time::timeout(UNPACK_DEADLINE, task).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(PackageError::Io {
            path: PathBuf::from("<unpack task>"),
            source: std::io::Error::other(join.to_string()),
        }),
        Err(_) => Err(PackageError::Io {
            path: PathBuf::from("<unpack task>"),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "unpacking timed out"),
        }),
    }
}
/// Fills the warm pool for every configured runtime (after the reaper, which would remove
/// it), so the first job of each finds a started container.
fn prewarm(verifier: &Verifier) {
    for runtime in verifier.policy.images.keys() {
        let plan = crate::package::TestPlan {
            command: "true".into(),
            runtime: *runtime,
            timeout_secs: None,
            source: crate::package::TestSource::Declared,
        };
        if let Ok(spec) =
            crate::sandbox::spec_for_instance(&plan, &verifier.policy, &verifier.instance)
        {
            verifier.runner.prewarm(&spec);
        }
    }
}
