//! Claim latency of the job store: PostgreSQL (one `UPDATE … FROM (SELECT … FOR UPDATE SKIP
//! LOCKED)` writing a lease) against SQLite (a transaction on the single writer, no lease),
//! measured in the same run on the same machine. Each claim is followed by its `finish`
//! (timed apart), so the queue drains the way workers drain it.
//!
//! Also on PostgreSQL: three handles (three daemons' pools) claiming from one queue at once,
//! the per-claim latency under that contention.
//!
//! PostgreSQL is the cluster `scripts/setup` starts (`SKILL_VERIFIER_TEST_PG` overrides); the
//! bench fails under `CI` when it does not answer and reports SQLite alone otherwise. The
//! SQLite file lives in a temp dir (on this machine's disk, `synchronous=FULL`); the test
//! cluster runs with `fsync=off`, so the PostgreSQL figure is the protocol and locking cost,
//! not disk flushes: compare with that in mind.
//!
//! Run: `cargo bench --bench store` (no Docker needed).

use std::time::{Duration, Instant};

use skill_verifier::digest::Sha256Digest;
use skill_verifier::ids::JobId;
use skill_verifier::store::{
    Finish, JobStatus, NewJob, PackageSummary, PgStore, PgStoreOptions, SqliteStore, Store,
};

#[path = "../tests/common/pg.rs"]
mod pg;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn new_job(i: usize) -> NewJob {
    let name = format!("bench-{i}");
    NewJob {
        id: JobId::new(),
        package: PackageSummary {
            name: name.clone(),
            tree_sha256: Sha256Digest::of(name.as_bytes()),
            archive_sha256: Sha256Digest::of(b"archive"),
            files: 1,
            bytes: 10,
            runtime: skill_verifier::package::Runtime::Shell,
            test_source: skill_verifier::package::TestSource::Declared,
        },
        tree_tar: Sha256Digest::of(b"tar"),
        facts: Sha256Digest::of(b"facts"),
        cache_key: None,
    }
}

fn failed() -> Finish {
    Finish {
        status: JobStatus::Error,
        result: None,
        error: None,
        attestation: None,
        logs: None,
    }
}

/// Claims (and finishes) `n` queued jobs one at a time: (claim ms, finish ms) per job.
async fn drain(store: &dyn Store, n: usize) -> (Vec<f64>, Vec<f64>) {
    for i in 0..n {
        store.insert_job(new_job(i)).await.unwrap();
    }
    let (mut claim, mut finish) = (Vec::new(), Vec::new());
    loop {
        let t = Instant::now();
        let Some(c) = store.claim().await.unwrap() else {
            break;
        };
        claim.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        assert!(store
            .finish(c.job.id, c.job.attempt, failed())
            .await
            .unwrap());
        finish.push(t.elapsed().as_secs_f64() * 1e3);
    }
    assert_eq!(claim.len(), n);
    (claim, finish)
}

fn report(label: &str, claim: &mut [f64], finish: &mut [f64]) {
    println!(
        "{label}: claim p50 {:.3} ms, p99 {:.3} ms; finish p50 {:.3} ms  ({} jobs)",
        percentile(claim, 0.5),
        percentile(claim, 0.99),
        percentile(finish, 0.5),
        claim.len()
    );
}

async fn pg_store(url: &str, owner: &str) -> PgStore {
    PgStore::connect(
        url,
        PgStoreOptions {
            owner: owner.into(),
            lease: Duration::from_secs(60),
            pool_size: 4,
        },
    )
    .await
    .unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = if smoke() { 5 } else { 500 };
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(&tmp.path().join("bench.db")).unwrap();
        let (mut c, mut f) = drain(&sqlite, n).await;
        report("sqlite (baseline)", &mut c, &mut f);

        let Some(url) = pg::fresh_database().await else {
            println!("postgres: skipped (unreachable; run scripts/setup)");
            return;
        };
        let store = pg_store(&url, "bench-0").await;
        let (mut c, mut f) = drain(&store, n).await;
        report("postgres", &mut c, &mut f);

        // Three daemons on one queue.
        for i in 0..n {
            store.insert_job(new_job(i)).await.unwrap();
        }
        let mut tasks = tokio::task::JoinSet::new();
        for d in 0..3 {
            let store = pg_store(&url, &format!("bench-{d}")).await;
            tasks.spawn(async move {
                let mut claim = Vec::new();
                loop {
                    let t = Instant::now();
                    let Some(c) = store.claim().await.unwrap() else {
                        break;
                    };
                    claim.push(t.elapsed().as_secs_f64() * 1e3);
                    store.finish(c.job.id, c.job.attempt, failed()).await.unwrap();
                }
                claim
            });
        }
        let mut claim = Vec::new();
        let t = Instant::now();
        while let Some(r) = tasks.join_next().await {
            claim.extend(r.unwrap());
        }
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(claim.len(), n, "each job claimed once");
        println!(
            "postgres, 3 handles at once: claim p50 {:.3} ms, p99 {:.3} ms; {:.0} claims+finishes/s",
            percentile(&mut claim, 0.5),
            percentile(&mut claim, 0.99),
            n as f64 / secs
        );
    });
}

/// `BENCH_SMOKE=1` (CI): run every path once, at a small size, and report nothing worth
/// reading; the point is that the bench still builds and runs.
fn smoke() -> bool {
    std::env::var_os("BENCH_SMOKE").is_some()
}
