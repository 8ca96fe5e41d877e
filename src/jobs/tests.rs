//! Unit tests of the scheduler with a runner double whose runs block until released or
//! cancelled: the result cache, cancellation races and shutdown. The real runner is tested
//! against the engine in `tests/`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::attest::keys::Signer;
use crate::attest::quote::NoQuoteProvider;
use crate::sandbox::{ContainerSpec, Policy, RunOutcome, Runner, SandboxError};
use crate::store::SqliteStore;

/// Every run waits until a permit is released or the run is cancelled.
struct GateRunner {
    started: AtomicUsize,
    cancelled: AtomicUsize,
    started_signal: Notify,
    release: Semaphore,
}

#[async_trait]
impl Runner for GateRunner {
    async fn run(
        &self,
        spec: &ContainerSpec,
        _tree: &crate::package::TreeTar,
        cancel: CancellationToken,
    ) -> Result<RunOutcome, SandboxError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.started_signal.notify_waiters();
        let cancelled = tokio::select! {
            _ = cancel.cancelled() => true,
            permit = self.release.acquire() => {
                permit.expect("never closed").forget();
                false
            }
        };
        if cancelled {
            self.cancelled.fetch_add(1, Ordering::SeqCst);
        }
        Ok(RunOutcome {
            exit_code: if cancelled { 137 } else { 0 },
            duration_ms: 1,
            timed_out: false,
            oom_killed: false,
            output_truncated: false,
            cancelled,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_sha256: Sha256Digest::of(b""),
            stderr_sha256: Sha256Digest::of(b""),
            image: spec.image.clone(),
            image_digest: format!("sha256:{}", "0".repeat(64)),
            oci_runtime: "runc".into(),
            limits: spec.limits.clone(),
            network: None,
            install: None,
            engine: None,
        })
    }

    async fn image_digest(&self, _image: &str) -> Result<String, SandboxError> {
        Ok(format!("sha256:{}", "0".repeat(64)))
    }

    async fn ping(&self) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn reap(&self, _instance: &str) -> Result<usize, SandboxError> {
        Ok(0)
    }
}

impl Default for GateRunner {
    fn default() -> Self {
        Self {
            started: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            started_signal: Notify::new(),
            release: Semaphore::new(0),
        }
    }
}

impl GateRunner {
    async fn wait_started(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while self.started.load(Ordering::SeqCst) < n {
                let signal = self.started_signal.notified();
                if self.started.load(Ordering::SeqCst) >= n {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(50), signal).await;
            }
        })
        .await
        .expect("the run started");
    }
}

struct Fixture {
    scheduler: Scheduler,
    runner: Arc<GateRunner>,
    dir: tempfile::TempDir,
}

async fn fixture_with(policy: Policy, dir: Option<tempfile::TempDir>) -> Fixture {
    let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let runner = Arc::new(GateRunner::default());
    let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
    let blobs = Blobs::open(dir.path().join("blobs")).unwrap();
    let verifier = Verifier {
        runner: runner.clone(),
        signer: Arc::new(Signer::generate()),
        quotes: Arc::new(NoQuoteProvider),
        policy,
        instance: "scheduler-test".into(),
        scan: scan_stage(),
        deps: Arc::new(crate::deps::Deps::new(
            Default::default(),
            dir.path().join("deps"),
        )),
    };
    let scheduler = Scheduler::new(
        Arc::new(store),
        blobs,
        verifier,
        SchedulerConfig {
            limits: Limits::default(),
            queue_capacity: 100,
            quote_kind: "none".into(),
        },
        Arc::new(Metrics::new()),
    );
    scheduler.recover().await.unwrap();
    Fixture {
        scheduler,
        runner,
        dir,
    }
}

/// The built-in scan stage, compiled once per test process.
fn scan_stage() -> Arc<crate::scan::Stage> {
    static STAGE: std::sync::OnceLock<Arc<crate::scan::Stage>> = std::sync::OnceLock::new();
    STAGE
        .get_or_init(|| {
            Arc::new(crate::scan::Stage::builtin().expect("the built-in pack compiles"))
        })
        .clone()
}

async fn fixture() -> Fixture {
    fixture_with(Policy::default(), None).await
}

/// A one-file shell skill as a tar, with `marker` making its content (and digest) unique.
fn archive(marker: &str) -> Vec<u8> {
    let md = format!(
        "---\nname: sched-test\ndescription: scheduler test {marker}\nmetadata:\n  verify-test: \"true\"\n  verify-runtime: shell\n---\n"
    );
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(md.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "SKILL.md", md.as_bytes())
        .unwrap();
    tar.into_inner().unwrap()
}

async fn submit(s: &Scheduler, bytes: &[u8], fresh: bool) -> Submitted {
    let path = s.blobs().temp_path();
    std::fs::write(&path, bytes).unwrap();
    let upload = Upload {
        path,
        sha256: Sha256Digest::of(bytes),
        bytes: bytes.len() as u64,
    };
    s.submit(upload, fresh).await.unwrap()
}

fn accepted(s: Submitted) -> JobRecord {
    match s {
        Submitted::Accepted(job) => job,
        Submitted::Cached(job) => panic!("expected a new job, got the cached {}", job.id),
    }
}

async fn wait_status(s: &Scheduler, id: JobId, want: JobStatus) -> JobRecord {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(job) = s.store().get_job(id).await.unwrap() {
                if job.status == want {
                    return job;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("job {id} never became {want}"))
}

#[tokio::test]
async fn an_identical_package_under_an_identical_policy_is_answered_from_the_cache() {
    let f = fixture().await;
    let workers = f.scheduler.spawn_workers(1);
    f.runner.release.add_permits(10);
    let first = accepted(submit(&f.scheduler, &archive("a"), false).await);
    wait_status(&f.scheduler, first.id, JobStatus::Passed).await;

    match submit(&f.scheduler, &archive("a"), false).await {
        Submitted::Cached(hit) => assert_eq!(hit.id, first.id),
        Submitted::Accepted(job) => panic!("expected a cache hit, got new job {}", job.id),
    }
    let fresh = accepted(submit(&f.scheduler, &archive("a"), true).await);
    assert_ne!(fresh.id, first.id, "fresh=true forces a new run");
    let other = accepted(submit(&f.scheduler, &archive("b"), false).await);
    assert_ne!(other.id, first.id, "another tree is another key");
    f.scheduler.shutdown(workers, Duration::from_secs(5)).await;

    // The same store under another sandbox policy: the earlier result does not apply.
    let policy = Policy {
        memory_bytes: 256 * 1024 * 1024,
        ..Policy::default()
    };
    let g = fixture_with(policy, Some(f.dir)).await;
    let miss = accepted(submit(&g.scheduler, &archive("a"), false).await);
    assert_ne!(miss.id, first.id, "the policy is part of the key");
}

#[tokio::test]
async fn cancelling_a_queued_a_running_and_a_finished_job() {
    let f = fixture().await;
    let s = &f.scheduler;
    // Queued (no worker yet): the record is deleted.
    let queued = accepted(submit(s, &archive("q"), false).await);
    assert_eq!(
        s.cancel(queued.id).await.unwrap(),
        Cancelled::Deleted(JobStatus::Queued)
    );
    assert!(s.store().get_job(queued.id).await.unwrap().is_none());

    // Running: the run sees the cancellation and the job ends cancelled, unsigned.
    let workers = s.spawn_workers(1);
    let running = accepted(submit(s, &archive("r"), false).await);
    f.runner.wait_started(1).await;
    assert_eq!(s.cancel(running.id).await.unwrap(), Cancelled::Cancelling);
    let done = wait_status(s, running.id, JobStatus::Cancelled).await;
    assert!(done.attestation.is_none());
    assert_eq!(f.runner.cancelled.load(Ordering::SeqCst), 1);

    // Finished: the record is deleted; cancelling again finds nothing.
    f.runner.release.add_permits(1);
    let finished = accepted(submit(s, &archive("f"), false).await);
    wait_status(s, finished.id, JobStatus::Passed).await;
    assert_eq!(
        s.cancel(finished.id).await.unwrap(),
        Cancelled::Deleted(JobStatus::Passed)
    );
    assert_eq!(s.cancel(finished.id).await.unwrap(), Cancelled::NotFound);
    s.shutdown(workers, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_cancel_racing_the_claim_never_lets_the_job_pass() {
    let f = fixture().await;
    let s = &f.scheduler;
    let workers = s.spawn_workers(2);
    // Runs would pass at once if they got the chance.
    f.runner.release.add_permits(1000);
    for i in 0..20 {
        let job = accepted(submit(s, &archive(&format!("race-{i}")), true).await);
        match s.cancel(job.id).await.unwrap() {
            Cancelled::Deleted(JobStatus::Queued) => {
                assert!(s.store().get_job(job.id).await.unwrap().is_none());
            }
            Cancelled::Cancelling => {
                // Cancelled while running: it ends cancelled, or it had already passed the
                // point of no return and finished; it is never left running.
                let end = tokio::time::timeout(Duration::from_secs(10), async {
                    loop {
                        let j = s.store().get_job(job.id).await.unwrap().unwrap();
                        if j.status.is_finished() {
                            return j;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
                .await
                .unwrap();
                assert!(
                    matches!(end.status, JobStatus::Cancelled | JobStatus::Passed),
                    "{end:?}"
                );
            }
            Cancelled::Deleted(JobStatus::Passed) => {}
            other => panic!("job {i}: unexpected {other:?}"),
        }
    }
    s.shutdown(workers, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn shutdown_requeues_what_outlives_the_grace_and_leaves_the_queue_alone() {
    let f = fixture().await;
    let s = &f.scheduler;
    let workers = s.spawn_workers(1);
    let running = accepted(submit(s, &archive("long"), false).await);
    f.runner.wait_started(1).await;
    let waiting = accepted(submit(s, &archive("waiting"), false).await);

    let clock = std::time::Instant::now();
    s.shutdown(workers, Duration::from_millis(200)).await;
    assert!(
        clock.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        clock.elapsed()
    );
    let running = s.store().get_job(running.id).await.unwrap().unwrap();
    assert_eq!(
        running.status,
        JobStatus::Queued,
        "re-queued for the next start"
    );
    assert_eq!(running.attempt, 1);
    assert!(running.attestation.is_none());
    let waiting = s.store().get_job(waiting.id).await.unwrap().unwrap();
    assert_eq!(waiting.status, JobStatus::Queued);
    assert_eq!(waiting.attempt, 0, "never claimed");
    assert_eq!(f.runner.started.load(Ordering::SeqCst), 1);
}
