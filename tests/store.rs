//! The SQLite store against real database files.

mod common;

use skill_verifier::digest::Sha256Digest;
use skill_verifier::ids::JobId;
use skill_verifier::store::{
    Deleted, Finish, JobStatus, NewJob, PackageSummary, Phase, ResultSummary, SqliteStore, Store,
};

fn new_job(name: &str, cache_key: Option<&str>) -> NewJob {
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
        cache_key: cache_key.map(str::to_string),
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

#[tokio::test]
async fn claims_oldest_first_and_finishes_each_attempt_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
    let a = store.insert_job(new_job("a", None)).await.unwrap();
    let b = store.insert_job(new_job("b", None)).await.unwrap();
    assert_eq!(a.status, JobStatus::Queued);
    assert_eq!(store.count_queued().await.unwrap(), 2);

    let claimed = store.claim_next().await.unwrap().unwrap();
    assert_eq!(claimed.id, a.id);
    assert_eq!(claimed.status, JobStatus::Running);
    assert_eq!(claimed.attempt, 1);
    assert_eq!(claimed.phase, Some(Phase::Unpacking));
    assert_eq!(
        store.get_job(a.id).await.unwrap().unwrap().phase,
        Some(Phase::Unpacking)
    );

    assert!(store.finish(a.id, 1, passed(b"env-1")).await.unwrap());
    // A second finish of the same attempt writes nothing.
    assert!(!store.finish(a.id, 1, passed(b"env-2")).await.unwrap());
    let done = store.get_job(a.id).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Passed);
    assert_eq!(done.attestation, Some(Sha256Digest::of(b"env-1")));
    assert!(done.finished_at.is_some());
    assert_eq!(
        common::attestation_rows(&dir.path().join("db.sqlite"), &a.id.to_string()),
        1
    );

    assert_eq!(store.claim_next().await.unwrap().unwrap().id, b.id);
    assert!(store.claim_next().await.unwrap().is_none());
}

#[tokio::test]
async fn running_jobs_survive_a_reopen_and_are_requeued_with_the_next_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let id = {
        let store = SqliteStore::open(&path).unwrap();
        let job = store.insert_job(new_job("a", None)).await.unwrap();
        store.claim_next().await.unwrap().unwrap();
        job.id
        // dropped without finishing: the "crash"
    };
    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.requeue_all_running().await.unwrap(), 1);
    let again = store.claim_next().await.unwrap().unwrap();
    assert_eq!(again.id, id);
    assert_eq!(again.attempt, 2);
    // The stale attempt cannot finish any more.
    assert!(!store.finish(id, 1, passed(b"stale")).await.unwrap());
    assert!(store.finish(id, 2, passed(b"fresh")).await.unwrap());
    assert_eq!(common::attestation_rows(&path, &id.to_string()), 1);
}

#[tokio::test]
async fn deletes_queued_and_finished_but_not_running_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
    let a = store.insert_job(new_job("a", None)).await.unwrap();
    let b = store.insert_job(new_job("b", None)).await.unwrap();
    store.claim_next().await.unwrap();
    assert_eq!(store.delete_job(a.id).await.unwrap(), Deleted::Running);
    assert_eq!(
        store.delete_job(b.id).await.unwrap(),
        Deleted::Removed(JobStatus::Queued)
    );
    assert!(store.finish(a.id, 1, passed(b"x")).await.unwrap());
    assert_eq!(
        store.delete_job(a.id).await.unwrap(),
        Deleted::Removed(JobStatus::Passed)
    );
    assert_eq!(store.delete_job(a.id).await.unwrap(), Deleted::NotFound);
    assert!(store.get_job(a.id).await.unwrap().is_none());
}

#[tokio::test]
async fn lists_newest_first_with_filter_and_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            store
                .insert_job(new_job(&format!("s{i}"), None))
                .await
                .unwrap()
                .id,
        );
    }
    let first = store.claim_next().await.unwrap().unwrap();
    let page = store.list_jobs(None, None, 2).await.unwrap();
    assert_eq!(
        page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    let next = store.list_jobs(None, page.next_cursor, 2).await.unwrap();
    assert_eq!(
        next.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let last = store.list_jobs(None, next.next_cursor, 2).await.unwrap();
    assert_eq!(last.jobs.len(), 1);
    assert!(last.next_cursor.is_none());
    let running = store
        .list_jobs(Some(JobStatus::Running), None, 10)
        .await
        .unwrap();
    assert_eq!(running.jobs.len(), 1);
    assert_eq!(running.jobs[0].id, first.id);
    let counts = store.count_by_status().await.unwrap();
    assert!(counts.contains(&(JobStatus::Queued, 4)));
    assert!(counts.contains(&(JobStatus::Running, 1)));
}

#[tokio::test]
async fn finds_only_signed_results_for_a_cache_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite")).unwrap();
    let a = store.insert_job(new_job("a", Some("k1"))).await.unwrap();
    assert!(store.find_cached("k1").await.unwrap().is_none());
    store.claim_next().await.unwrap();
    store.finish(a.id, 1, passed(b"env")).await.unwrap();
    assert_eq!(store.find_cached("k1").await.unwrap().unwrap().id, a.id);
    assert!(store.find_cached("k2").await.unwrap().is_none());
}
