//! Retention on both stores: finished jobs older than the cutoff go with their attestation
//! rows; queued and running jobs stay whatever their age; blobs a remaining row names are
//! kept, blobs kept in PostgreSQL that nothing names are collected.

mod common;

use std::time::Duration;

use skill_verifier::digest::Sha256Digest;
use skill_verifier::ids::JobId;
use skill_verifier::store::{
    Finish, JobStatus, NewJob, PackageSummary, PgStore, PgStoreOptions, SqliteStore, Store,
};

fn new_job(name: &str) -> NewJob {
    NewJob {
        id: JobId::new(),
        package: PackageSummary {
            name: name.into(),
            tree_sha256: Sha256Digest::of(name.as_bytes()),
            archive_sha256: Sha256Digest::of(b"archive"),
            files: 1,
            bytes: 1,
            runtime: skill_verifier::package::Runtime::Shell,
            test_source: skill_verifier::package::TestSource::Declared,
        },
        tree_tar: Sha256Digest::of(format!("tar of {name}").as_bytes()),
        facts: Sha256Digest::of(format!("facts of {name}").as_bytes()),
        cache_key: Some(format!("cache-{name}")),
    }
}

fn failed_with(envelope: Sha256Digest) -> Finish {
    Finish {
        status: JobStatus::Failed,
        result: None,
        error: None,
        attestation: Some(envelope),
        logs: None,
    }
}

/// The same checks on any store; returns the old job's envelope digest.
async fn collects_old_finished_jobs_only(store: &dyn Store) -> Sha256Digest {
    let old = store.insert_job(new_job("old")).await.unwrap();
    let claimed = store.claim().await.unwrap().unwrap();
    assert_eq!(claimed.job.id, old.id);
    let envelope = Sha256Digest::of(b"old envelope");
    assert!(store
        .finish(old.id, 1, failed_with(envelope))
        .await
        .unwrap());
    let running = store.insert_job(new_job("running")).await.unwrap();
    assert_eq!(store.claim().await.unwrap().unwrap().job.id, running.id);
    let queued = store.insert_job(new_job("queued")).await.unwrap();

    // A cutoff before everything collects nothing.
    let past = time::OffsetDateTime::now_utc() - Duration::from_secs(3_600);
    assert_eq!(store.collect(past).await.unwrap().jobs, 0);
    assert!(store.get_job(old.id).await.unwrap().is_some());

    // A cutoff after everything: only the finished job goes (its cache entry with it).
    let future = time::OffsetDateTime::now_utc() + Duration::from_secs(5);
    assert_eq!(store.collect(future).await.unwrap().jobs, 1);
    assert!(store.get_job(old.id).await.unwrap().is_none());
    assert!(store.find_cached("cache-old").await.unwrap().is_none());
    for id in [running.id, queued.id] {
        assert!(store.get_job(id).await.unwrap().is_some());
    }
    let refs = store.referenced_blobs().await.unwrap();
    assert!(
        !refs.contains(&envelope),
        "the collected job's envelope is no longer named"
    );
    assert!(!refs.contains(&old.tree_tar));
    for job in [&running, &queued] {
        assert!(refs.contains(&job.tree_tar) && refs.contains(&job.facts.unwrap()));
    }
    assert_eq!(store.collect(future).await.unwrap().jobs, 0, "idempotent");
    envelope
}

#[tokio::test]
async fn sqlite_collects_old_finished_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
    collects_old_finished_jobs_only(&store).await;
}

#[tokio::test]
async fn postgres_collects_old_finished_jobs_and_unnamed_blobs() {
    let Some(url) = common::pg::fresh_database().await else {
        return;
    };
    let store = PgStore::connect(
        &url,
        PgStoreOptions {
            owner: "retention".into(),
            lease: Duration::from_secs(60),
            pool_size: 2,
        },
    )
    .await
    .unwrap();
    let named = Sha256Digest::of(b"tar of queued");
    let envelope = Sha256Digest::of(b"old envelope");
    store
        .put_blob(named, b"tar of queued".to_vec())
        .await
        .unwrap();
    store
        .put_blob(envelope, b"old envelope".to_vec())
        .await
        .unwrap();
    assert_eq!(collects_old_finished_jobs_only(&store).await, envelope);
    // The row-level collect above ran with a future cutoff, so the unnamed envelope went.
    assert!(store.get_blob(envelope).await.unwrap().is_none());
    assert!(
        store.get_blob(named).await.unwrap().is_some(),
        "a named blob stays"
    );
}
