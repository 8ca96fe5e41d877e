//! The PostgreSQL store against a real server (`scripts/setup` starts one), each test in a
//! fresh database: leases, expiry and rescue, fencing of a late result, `SKIP LOCKED`
//! claiming from several handles at once, start-up recovery that leaves other daemons' jobs
//! alone, shared blobs, the key registry, and migrations applied once.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use skill_verifier::digest::Sha256Digest;
use skill_verifier::ids::JobId;
use skill_verifier::store::{
    Finish, JobStatus, KeyRecord, NewJob, PackageSummary, PgStore, PgStoreOptions, ResultSummary,
    Store, StoreKind,
};

fn new_job(name: &str) -> NewJob {
    NewJob {
        id: JobId::new(),
        package: PackageSummary {
            name: name.into(),
            tree_sha256: Sha256Digest::of(name.as_bytes()),
            archive_sha256: Sha256Digest::of(b"archive"),
            files: 2,
            bytes: 10,
            runtime: skill_verifier::package::Runtime::Shell,
            test_source: skill_verifier::package::TestSource::Declared,
        },
        tree_tar: Sha256Digest::of(b"tree tar"),
        facts: Sha256Digest::of(b"facts"),
        cache_key: Some(format!("key-{name}")),
    }
}

fn passed(att: &[u8]) -> Finish {
    Finish {
        status: JobStatus::Passed,
        result: Some(ResultSummary {
            status: skill_verifier::attest::statement::Status::Passed,
            exit_code: 0,
            duration_ms: 5,
            timed_out: false,
            oom_killed: false,
            output_truncated: false,
            verdict: None,
            findings: Default::default(),
            network: None,
        }),
        error: None,
        attestation: Some(Sha256Digest::of(att)),
        logs: None,
    }
}

async fn handle(url: &str, owner: &str, lease: Duration) -> PgStore {
    PgStore::connect(
        url,
        PgStoreOptions {
            owner: owner.into(),
            lease,
            pool_size: 4,
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn an_expired_lease_is_rescued_as_the_next_attempt_and_the_late_result_is_fenced() {
    let Some(url) = common::pg::fresh_database().await else {
        return;
    };
    let lease = Duration::from_millis(1500);
    let a = handle(&url, "daemon-a", lease).await;
    let b = handle(&url, "daemon-b", lease).await;
    assert_eq!(a.kind(), StoreKind::Postgres);
    let job = a.insert_job(new_job("fenced")).await.unwrap();

    let first = a.claim().await.unwrap().unwrap();
    assert_eq!(
        (first.job.id, first.job.attempt, first.rescued),
        (job.id, 1, false)
    );
    // While A's lease lives, B finds nothing to claim.
    assert!(b.claim().await.unwrap().is_none());

    // A stalls past its lease (no heartbeat); B takes the job over as attempt 2.
    tokio::time::sleep(lease + Duration::from_millis(500)).await;
    let second = b.claim().await.unwrap().unwrap();
    assert_eq!((second.job.id, second.job.attempt), (job.id, 2));
    assert!(second.rescued, "a claim of an expired lease is a rescue");

    // A wakes up: its heartbeat renews nothing, its result and its requeue are refused.
    assert_eq!(a.renew_leases().await.unwrap(), 0);
    assert!(!a.finish(job.id, 1, passed(b"late from a")).await.unwrap());
    assert!(!a.requeue(job.id, 1).await.unwrap());
    // Even claiming the current attempt number does not help A: the owner is checked too.
    assert!(!a.finish(job.id, 2, passed(b"forged by a")).await.unwrap());
    let still = b.get_job(job.id).await.unwrap().unwrap();
    assert_eq!((still.status, still.attempt), (JobStatus::Running, 2));

    // B's result is the job's; exactly one attestation row, for attempt 2.
    assert!(b.finish(job.id, 2, passed(b"from b")).await.unwrap());
    let done = a.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Passed);
    assert_eq!(done.attestation, Some(Sha256Digest::of(b"from b")));
    let rows = a.attestations_of(job.id).await.unwrap();
    assert_eq!(rows, vec![(2, Sha256Digest::of(b"from b").to_hex())]);
    // And a second result for the same attempt is impossible.
    assert!(!b.finish(job.id, 2, passed(b"again")).await.unwrap());
}

#[tokio::test]
async fn the_heartbeat_keeps_a_lease_past_its_duration() {
    let Some(url) = common::pg::fresh_database().await else {
        return;
    };
    let lease = Duration::from_millis(1200);
    let a = handle(&url, "daemon-a", lease).await;
    let b = handle(&url, "daemon-b", lease).await;
    let job = a.insert_job(new_job("kept")).await.unwrap();
    assert!(a.claim().await.unwrap().is_some());
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(a.renew_leases().await.unwrap(), 1);
        assert!(
            b.claim().await.unwrap().is_none(),
            "a renewed lease is not taken"
        );
    }
    assert!(a.finish(job.id, 1, passed(b"a")).await.unwrap());
}

#[tokio::test]
async fn concurrent_claims_from_several_daemons_take_each_job_once() {
    let Some(url) = common::pg::fresh_database().await else {
        return;
    };
    let lease = Duration::from_secs(60);
    let first = handle(&url, "daemon-0", lease).await;
    let mut ids = HashSet::new();
    for i in 0..40 {
        ids.insert(
            first
                .insert_job(new_job(&format!("j{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let mut tasks = tokio::task::JoinSet::new();
    for d in 0..4 {
        let store = handle(&url, &format!("daemon-{d}"), lease).await;
        tasks.spawn(async move {
            let mut mine = Vec::new();
            while let Some(c) = store.claim().await.unwrap() {
                assert_eq!(c.job.attempt, 1);
                assert!(store
                    .finish(c.job.id, 1, passed(c.job.id.to_string().as_bytes()))
                    .await
                    .unwrap());
                mine.push(c.job.id);
            }
            mine
        });
    }
    let mut claimed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        claimed.extend(r.unwrap());
    }
    assert_eq!(claimed.len(), 40, "every job claimed exactly once");
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), ids);
    let counts = first.count_by_status().await.unwrap();
    assert!(counts.contains(&(JobStatus::Passed, 40)), "{counts:?}");
}

#[tokio::test]
async fn start_up_recovery_requeues_only_this_daemons_jobs() {
    let Some(url) = common::pg::fresh_database().await else {
        return;
    };
    let lease = Duration::from_secs(60);
    let a = handle(&url, "daemon-a", lease).await;
    let b = handle(&url, "daemon-b", lease).await;
    let ja = a.insert_job(new_job("a")).await.unwrap();
    let jb = a.insert_job(new_job("b")).await.unwrap();
    assert_eq!(a.claim().await.unwrap().unwrap().job.id, ja.id);
    assert_eq!(b.claim().await.unwrap().unwrap().job.id, jb.id);

    // Daemon A restarts (same instance id): its own running job goes back to the queue at
    // once; B's job, under a live lease, stays B's.
    let a_again = handle(&url, "daemon-a", lease).await;
    assert_eq!(a_again.recover_interrupted().await.unwrap(), 1);
    assert_eq!(
        a_again.get_job(ja.id).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
    assert_eq!(
        a_again.get_job(jb.id).await.unwrap().unwrap().status,
        JobStatus::Running
    );
    let again = a_again.claim().await.unwrap().unwrap();
    assert_eq!(
        (again.job.id, again.job.attempt, again.rescued),
        (ja.id, 2, false)
    );
    assert!(b.finish(jb.id, 1, passed(b"b")).await.unwrap());
}

#[tokio::test]
async fn blobs_and_keys_are_shared_between_daemons() {
    let Some(url) = common::pg::fresh_database().await else {
        return;
    };
    let lease = Duration::from_secs(60);
    let a = handle(&url, "daemon-a", lease).await;
    let b = handle(&url, "daemon-b", lease).await;
    assert!(a.shares_blobs());
    let digest = Sha256Digest::of(b"an envelope");
    a.put_blob(digest, b"an envelope".to_vec()).await.unwrap();
    a.put_blob(digest, b"an envelope".to_vec()).await.unwrap(); // idempotent
    assert_eq!(b.get_blob(digest).await.unwrap().unwrap(), b"an envelope");
    assert!(b
        .get_blob(Sha256Digest::of(b"nothing"))
        .await
        .unwrap()
        .is_none());

    for (store, id) in [(&a, "key-a"), (&b, "key-b")] {
        let key = KeyRecord {
            key_id: id.into(),
            public_key_pem: format!("PEM of {id}"),
            instance: store.owner().into(),
            first_seen: time::OffsetDateTime::now_utc(),
            retired_at: None,
        };
        store.register_key(key.clone()).await.unwrap();
        store.register_key(key).await.unwrap(); // a restart re-announces
    }
    let keys = a.list_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.iter().all(|k| k.retired_at.is_none()));
    assert!(b.retire_key("key-a").await.unwrap());
    assert!(!b.retire_key("key-a").await.unwrap(), "already retired");
    assert!(!b.retire_key("no-such-key").await.unwrap());
    let keys = b.list_keys().await.unwrap();
    let retired = keys.iter().find(|k| k.key_id == "key-a").unwrap();
    assert!(
        retired.retired_at.is_some(),
        "a retired key stays published"
    );
    assert_eq!(retired.instance, "daemon-a");
}

#[tokio::test]
async fn migrations_apply_once_when_daemons_start_together() {
    let Some(url) = common::pg::fresh_database().await else {
        return;
    };
    let mut starts = tokio::task::JoinSet::new();
    for d in 0..4 {
        let url = url.clone();
        starts.spawn(async move { handle(&url, &format!("d{d}"), Duration::from_secs(30)).await });
    }
    while let Some(store) = starts.join_next().await {
        store.unwrap();
    }
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n: i64 = client
        .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .count();
    assert_eq!(
        n as usize, files,
        "each migration file applied exactly once"
    );
    // A migration edited after it was applied stops start-up instead of drifting.
    client
        .execute("UPDATE schema_migrations SET sha256 = 'edited'", &[])
        .await
        .unwrap();
    let err = PgStore::connect(
        &url,
        PgStoreOptions {
            owner: "late".into(),
            lease: Duration::from_secs(30),
            pool_size: 2,
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("append-only"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_naming_the_url_without_its_password() {
    let err = PgStore::connect(
        "postgres://someone:hunter2@127.0.0.1:1/nothing",
        PgStoreOptions {
            owner: "x".into(),
            lease: Duration::from_secs(30),
            pool_size: 2,
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("127.0.0.1:1"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}
