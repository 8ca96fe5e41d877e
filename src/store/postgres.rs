//! [`PgStore`]: the job store on PostgreSQL, shared by several daemons.
//!
//! - **Claims are leases.** `claim` takes the oldest job that is `queued`, or `running` under
//!   a lease that expired, with `FOR UPDATE SKIP LOCKED` (two daemons never wait on, or take,
//!   the same row), and sets `lease_owner` (this daemon's instance id), `lease_expires_at`
//!   (the database's `now()` + `lease_secs`: one clock decides) and `attempt + 1`. A
//!   heartbeat ([`Store::renew_leases`]) pushes the expiry of every job this daemon runs.
//! - **Fencing.** `finish` and `requeue` write only while the row is `running` with the
//!   same attempt *and* the same lease owner, in one statement. A daemon that stalled past
//!   its lease (SIGSTOP, a long GC, a partition) and wakes up after another daemon claimed
//!   the job as attempt + 1 writes nothing; its late attestation never becomes the job's.
//! - **One result per attempt.** The `attestations` row is keyed by (job, attempt) and
//!   inserted in the transaction that ends the attempt.
//! - **Shared blobs.** Package tars, facts, envelopes and logs are mirrored into the `blobs`
//!   table (bytea keyed by SHA-256); each daemon keeps its blob directory as a local cache.
//! - **Keys.** `signing_keys` holds every daemon's public key, so each daemon's `GET /keys`
//!   publishes all of them.
//!
//! Migrations are versioned SQL files under `migrations/postgres/`, compiled in, applied in
//! order under a transaction-scoped advisory lock (daemons starting together apply each once)
//! and recorded with their SHA-256 in `schema_migrations`; an applied file that changed
//! afterwards stops start-up instead of drifting.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use time::OffsetDateTime;
use tokio_postgres::{NoTls, Row};

use super::sqlite::{decode, RawRow};
use super::{
    Claimed, Collected, Deleted, Finish, JobPage, JobRecord, JobStatus, KeyRecord, NewJob, Store,
    StoreError, StoreKind,
};
use crate::digest::Sha256Digest;
use crate::ids::JobId;

/// The versioned migrations, in order: (version, name, SQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "jobs",
        include_str!("../../migrations/postgres/0001_jobs.sql"),
    ),
    (
        2,
        "webhooks",
        include_str!("../../migrations/postgres/0002_webhooks.sql"),
    ),
];

/// The advisory lock key that serializes migrations between daemons starting together.
const MIGRATION_LOCK: i64 = 0x736b_696c_6c76;

const COLUMNS: &str = "seq, id, status, phase, attempt, created_at, started_at, finished_at, \
                       package_json, archive, cache_key, result_json, error_json, attestation, logs, \
                       facts";

/// How a [`PgStore`] claims.
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    /// This daemon's instance id: the owner written on its leases.
    pub owner: String,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// Most pooled connections.
    pub pool_size: usize,
}

/// The PostgreSQL job store.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    owner: Arc<str>,
    lease_secs: f64,
    default_webhook: Option<Arc<str>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("owner", &self.owner)
            .field("lease_secs", &self.lease_secs)
            .finish()
    }
}

fn pg(operation: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { operation, source }
}

fn now() -> String {
    super::rfc3339(OffsetDateTime::now_utc())
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

fn raw(row: &Row) -> RawRow {
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
        row.get(5),
        row.get(6),
        row.get(7),
        row.get(8),
        row.get(9),
        row.get(10),
        row.get(11),
        row.get(12),
        row.get(13),
        row.get(14),
        row.get(15),
    )
}

fn time_of(epoch: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(epoch).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl PgStore {
    /// Connects to `url`, applies pending migrations and returns the store.
    pub async fn connect(url: &str, options: PgStoreOptions) -> Result<Self, StoreError> {
        let redacted = crate::config::redact_url(url);
        let connect_err = |reason: String| StoreError::Connect {
            url: redacted.clone(),
            reason,
        };
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| connect_err(e.to_string()))?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(2))
            .runtime(Runtime::Tokio1)
            // Every external wait has a deadline: a database that does not answer fails the
            // call (and `/health`) instead of hanging a worker.
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| connect_err(e.to_string()))?;
        let store = Self {
            pool,
            owner: options.owner.into(),
            lease_secs: options.lease.as_secs_f64(),
            default_webhook: None,
        };
        store
            .migrate()
            .await
            .map_err(|e| connect_err(e.to_string()))?;
        Ok(store)
    }

    /// Every job this handle finishes also gets a webhook to `url` (the configured
    /// `[webhooks] url`), queued in the transaction that ends the job.
    pub fn with_default_webhook(mut self, url: Option<String>) -> Self {
        self.default_webhook = url.map(Into::into);
        self
    }

    /// The lease owner this handle writes (the daemon's instance id).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    async fn client(
        &self,
        operation: &'static str,
    ) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool
            .get()
            .await
            .map_err(|source| StoreError::Pool { operation, source })
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client("migrate").await?;
        let tx = client.transaction().await.map_err(pg("migrate"))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg("migrate: lock"))?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    INTEGER PRIMARY KEY,
                 name       TEXT NOT NULL,
                 sha256     TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await
        .map_err(pg("migrate: bookkeeping"))?;
        let applied = tx
            .query("SELECT version, sha256 FROM schema_migrations", &[])
            .await
            .map_err(pg("migrate: applied"))?;
        for (version, name, sql) in MIGRATIONS {
            let digest = Sha256Digest::of(sql.as_bytes()).to_hex();
            match applied.iter().find(|r| r.get::<_, i32>(0) == *version) {
                Some(row) if row.get::<_, String>(1) == digest => continue,
                Some(_) => {
                    return Err(StoreError::Corrupt {
                        id: format!("migration {version}"),
                        what: format!(
                            "{name} changed after it was applied; migrations are append-only"
                        ),
                    })
                }
                None => {}
            }
            tx.batch_execute(sql).await.map_err(pg("migrate: apply"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                &[version, name, &digest],
            )
            .await
            .map_err(pg("migrate: record"))?;
            tracing::info!(version, name, "applied PostgreSQL migration");
        }
        tx.commit().await.map_err(pg("migrate: commit"))?;
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let client = self.client("get job").await?;
        let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = $1");
        let st = client.prepare_cached(&sql).await.map_err(pg("get job"))?;
        let row = client.query_opt(&st, &[&id]).await.map_err(pg("get job"))?;
        row.map(|r| decode(raw(&r))).transpose()
    }
}

#[async_trait]
impl Store for PgStore {
    async fn insert_job(&self, job: NewJob) -> Result<JobRecord, StoreError> {
        let client = self.client("insert job").await?;
        let sql = format!(
            "INSERT INTO jobs (id, status, attempt, created_at, package_json, archive, cache_key, facts) \
             VALUES ($1, 'queued', 0, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        );
        let row = client
            .query_one(
                &sql,
                &[
                    &job.id.to_string(),
                    &now(),
                    &to_json(&job.package),
                    &job.tree_tar.to_hex(),
                    &job.cache_key,
                    &job.facts.to_hex(),
                ],
            )
            .await
            .map_err(pg("insert job"))?;
        decode(raw(&row))
    }

    async fn get_job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.get(&id.to_string()).await
    }

    async fn list_jobs(
        &self,
        status: Option<JobStatus>,
        cursor: Option<i64>,
        limit: u32,
    ) -> Result<JobPage, StoreError> {
        let client = self.client("list jobs").await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE ($1::text IS NULL OR status = $1) AND seq < $2 \
             ORDER BY seq DESC LIMIT $3"
        );
        let rows = client
            .query(
                &sql,
                &[
                    &status.map(|s| s.as_str()),
                    &cursor.unwrap_or(i64::MAX),
                    &(i64::from(limit) + 1),
                ],
            )
            .await
            .map_err(pg("list jobs"))?;
        let mut jobs = rows
            .iter()
            .map(|r| decode(raw(r)))
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if jobs.len() > limit as usize {
            jobs.truncate(limit as usize);
            jobs.last().map(|j| j.seq)
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    async fn claim_next(&self) -> Result<Option<JobRecord>, StoreError> {
        Ok(self.claim().await?.map(|c| c.job))
    }

    async fn claim(&self) -> Result<Option<Claimed>, StoreError> {
        let client = self.client("claim job").await?;
        // One statement: pick (skipping rows another daemon is claiming right now) and take.
        // `was` is the row's status before the update: `running` means a rescue.
        let sql = format!(
            "WITH next AS ( \
                 SELECT seq, status AS was, lease_owner AS was_owner FROM jobs \
                 WHERE status = 'queued' OR (status = 'running' AND lease_expires_at < now()) \
                 ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED) \
             UPDATE jobs j SET status = 'running', phase = 'unpacking', attempt = j.attempt + 1, \
                 started_at = $1, finished_at = NULL, lease_owner = $2, \
                 lease_expires_at = now() + make_interval(secs => $3) \
             FROM next WHERE j.seq = next.seq \
             RETURNING {}, next.was, next.was_owner",
            COLUMNS
                .split(", ")
                .map(|c| format!("j.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let st = client.prepare_cached(&sql).await.map_err(pg("claim job"))?;
        let row = client
            .query_opt(&st, &[&now(), &&*self.owner, &self.lease_secs])
            .await
            .map_err(pg("claim job"))?;
        let Some(row) = row else { return Ok(None) };
        let was: String = row.get(16);
        let was_owner: Option<String> = row.get(17);
        let rescued = was == "running";
        Ok(Some(Claimed {
            job: decode(raw(&row))?,
            rescued,
            previous_owner: if rescued { was_owner } else { None },
        }))
    }

    async fn finish(&self, id: JobId, attempt: u32, finish: Finish) -> Result<bool, StoreError> {
        let mut client = self.client("finish job").await?;
        let tx = client.transaction().await.map_err(pg("finish job"))?;
        let id = id.to_string();
        let attempt = attempt as i32;
        // The fence: the attempt must still be running under this daemon's lease.
        let changed = tx
            .execute(
                "UPDATE jobs SET status = $4, phase = NULL, finished_at = $5, result_json = $6, \
                 error_json = $7, attestation = $8, logs = $9, lease_owner = NULL, \
                 lease_expires_at = NULL \
                 WHERE id = $1 AND attempt = $2 AND status = 'running' AND lease_owner = $3",
                &[
                    &id,
                    &attempt,
                    &&*self.owner,
                    &finish.status.as_str(),
                    &now(),
                    &finish.result.as_ref().map(to_json),
                    &finish.error.as_ref().map(to_json),
                    &finish.attestation.map(|d| d.to_hex()),
                    &finish.logs.map(|d| d.to_hex()),
                ],
            )
            .await
            .map_err(pg("finish job"))?;
        if changed == 0 {
            return Ok(false);
        }
        if let Some(att) = finish.attestation {
            tx.execute(
                "INSERT INTO attestations (job_id, attempt, envelope, created_at) \
                 VALUES ($1, $2, $3, $4)",
                &[&id, &attempt, &att.to_hex(), &now()],
            )
            .await
            .map_err(pg("record attestation"))?;
        }
        // The job's webhooks join the outbox in the same transaction: a finished job's
        // callbacks cannot be lost between the status and the delivery.
        tx.execute(
            "INSERT INTO webhook_outbox (id, job_id, url) \
             SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), $1, url FROM ( \
                 SELECT url FROM webhook_targets WHERE job_id = $1 \
                 UNION SELECT $2::text WHERE $2::text IS NOT NULL) t",
            &[&id, &self.default_webhook.as_deref()],
        )
        .await
        .map_err(pg("queue webhooks"))?;
        tx.commit().await.map_err(pg("finish job"))?;
        Ok(true)
    }

    async fn requeue(&self, id: JobId, attempt: u32) -> Result<bool, StoreError> {
        let client = self.client("requeue job").await?;
        let n = client
            .execute(
                "UPDATE jobs SET status = 'queued', phase = NULL, lease_owner = NULL, \
                 lease_expires_at = NULL \
                 WHERE id = $1 AND attempt = $2 AND status = 'running' AND lease_owner = $3",
                &[&id.to_string(), &(attempt as i32), &&*self.owner],
            )
            .await
            .map_err(pg("requeue job"))?;
        Ok(n == 1)
    }

    /// Every running job of every daemon back to queued. Only for a store known to have one
    /// daemon; start-up uses [`Store::recover_interrupted`], which keeps to its own jobs.
    async fn requeue_all_running(&self) -> Result<u64, StoreError> {
        let client = self.client("requeue running jobs").await?;
        client
            .execute(
                "UPDATE jobs SET status = 'queued', phase = NULL, lease_owner = NULL, \
                 lease_expires_at = NULL WHERE status = 'running'",
                &[],
            )
            .await
            .map_err(pg("requeue running jobs"))
    }

    async fn recover_interrupted(&self) -> Result<u64, StoreError> {
        // This daemon's own earlier life (same instance id: same data dir) cannot still be
        // running its jobs; other daemons' jobs are theirs until their leases expire.
        let client = self.client("requeue own running jobs").await?;
        client
            .execute(
                "UPDATE jobs SET status = 'queued', phase = NULL, lease_owner = NULL, \
                 lease_expires_at = NULL WHERE status = 'running' AND lease_owner = $1",
                &[&&*self.owner],
            )
            .await
            .map_err(pg("requeue own running jobs"))
    }

    async fn renew_leases(&self) -> Result<u64, StoreError> {
        let client = self.client("renew leases").await?;
        client
            .execute(
                "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $2) \
                 WHERE status = 'running' AND lease_owner = $1",
                &[&&*self.owner, &self.lease_secs],
            )
            .await
            .map_err(pg("renew leases"))
    }

    async fn delete_job(&self, id: JobId) -> Result<Deleted, StoreError> {
        let mut client = self.client("delete job").await?;
        let tx = client.transaction().await.map_err(pg("delete job"))?;
        let id = id.to_string();
        let row = tx
            .query_opt("SELECT status FROM jobs WHERE id = $1 FOR UPDATE", &[&id])
            .await
            .map_err(pg("delete job"))?;
        let Some(status) = row.and_then(|r| JobStatus::parse(r.get::<_, &str>(0))) else {
            return Ok(Deleted::NotFound);
        };
        if status == JobStatus::Running {
            return Ok(Deleted::Running);
        }
        tx.execute("DELETE FROM attestations WHERE job_id = $1", &[&id])
            .await
            .map_err(pg("delete job"))?;
        tx.execute("DELETE FROM jobs WHERE id = $1", &[&id])
            .await
            .map_err(pg("delete job"))?;
        tx.commit().await.map_err(pg("delete job"))?;
        Ok(Deleted::Removed(status))
    }

    async fn count_queued(&self) -> Result<u64, StoreError> {
        let client = self.client("count queued").await?;
        let row = client
            .query_one("SELECT COUNT(*) FROM jobs WHERE status = 'queued'", &[])
            .await
            .map_err(pg("count queued"))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        let client = self.client("count by status").await?;
        let rows = client
            .query("SELECT status, COUNT(*) FROM jobs GROUP BY status", &[])
            .await
            .map_err(pg("count by status"))?;
        Ok(JobStatus::ALL
            .iter()
            .map(|s| {
                let n = rows
                    .iter()
                    .find(|r| r.get::<_, &str>(0) == s.as_str())
                    .map_or(0, |r| r.get::<_, i64>(1) as u64);
                (*s, n)
            })
            .collect())
    }

    async fn find_cached(&self, cache_key: &str) -> Result<Option<JobRecord>, StoreError> {
        let client = self.client("find cached result").await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM jobs WHERE cache_key = $1 AND status IN ('passed', 'failed') \
             AND attestation IS NOT NULL ORDER BY seq DESC LIMIT 1"
        );
        let row = client
            .query_opt(&sql, &[&cache_key])
            .await
            .map_err(pg("find cached result"))?;
        row.map(|r| decode(raw(&r))).transpose()
    }

    fn kind(&self) -> StoreKind {
        StoreKind::Postgres
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client("ping").await?;
        client.simple_query("SELECT 1").await.map_err(pg("ping"))?;
        Ok(())
    }

    fn shares_blobs(&self) -> bool {
        true
    }

    async fn put_blob(&self, digest: Sha256Digest, bytes: Vec<u8>) -> Result<(), StoreError> {
        let client = self.client("store blob").await?;
        client
            .execute(
                // A blob stored again is touched, so retention never collects one that a row
                // is about to name.
                "INSERT INTO blobs (sha256, bytes) VALUES ($1, $2) \
                 ON CONFLICT (sha256) DO UPDATE SET created_at = now()",
                &[&digest.to_hex(), &bytes],
            )
            .await
            .map_err(pg("store blob"))?;
        Ok(())
    }

    async fn get_blob(&self, digest: Sha256Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client("read blob").await?;
        let row = client
            .query_opt(
                "SELECT bytes FROM blobs WHERE sha256 = $1",
                &[&digest.to_hex()],
            )
            .await
            .map_err(pg("read blob"))?;
        let Some(row) = row else { return Ok(None) };
        let bytes: Vec<u8> = row.get(0);
        // The row is named by its digest; a row whose bytes do not match it is not served.
        if Sha256Digest::of(&bytes) != digest {
            return Err(StoreError::Corrupt {
                id: digest.to_hex(),
                what: "blob bytes do not match their digest".into(),
            });
        }
        Ok(Some(bytes))
    }

    async fn register_key(&self, key: KeyRecord) -> Result<(), StoreError> {
        let client = self.client("register key").await?;
        client
            .execute(
                "INSERT INTO signing_keys (key_id, public_key_pem, instance) VALUES ($1, $2, $3) \
                 ON CONFLICT (key_id) DO NOTHING",
                &[&key.key_id, &key.public_key_pem, &key.instance],
            )
            .await
            .map_err(pg("register key"))?;
        Ok(())
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let client = self.client("list keys").await?;
        let rows = client
            .query(
                "SELECT key_id, public_key_pem, instance, \
                 extract(epoch FROM first_seen)::bigint, \
                 extract(epoch FROM retired_at)::bigint \
                 FROM signing_keys ORDER BY first_seen, key_id",
                &[],
            )
            .await
            .map_err(pg("list keys"))?;
        Ok(rows
            .iter()
            .map(|r| KeyRecord {
                key_id: r.get(0),
                public_key_pem: r.get(1),
                instance: r.get(2),
                first_seen: time_of(r.get(3)),
                retired_at: r.get::<_, Option<i64>>(4).map(time_of),
            })
            .collect())
    }

    async fn collect(&self, cutoff: OffsetDateTime) -> Result<Collected, StoreError> {
        let mut client = self.client("collect old jobs").await?;
        let tx = client.transaction().await.map_err(pg("collect old jobs"))?;
        let cutoff_text = super::rfc3339(cutoff);
        let cutoff_epoch = cutoff.unix_timestamp() as f64;
        let old = "SELECT id FROM jobs WHERE status IN ('passed', 'failed', 'error', 'cancelled') \
                   AND finished_at < $1";
        for table in ["attestations", "webhook_targets", "webhook_outbox"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE job_id IN ({old})"),
                &[&cutoff_text],
            )
            .await
            .map_err(pg("collect old jobs"))?;
        }
        let jobs = tx
            .execute(
                "DELETE FROM jobs WHERE status IN ('passed', 'failed', 'error', 'cancelled') \
                 AND finished_at < $1",
                &[&cutoff_text],
            )
            .await
            .map_err(pg("collect old jobs"))?;
        let store_blobs = tx
            .execute(
                &format!(
                    "DELETE FROM blobs WHERE created_at < to_timestamp($1) \
                     AND sha256 NOT IN ({})",
                    super::REFERENCED_BLOBS
                ),
                &[&cutoff_epoch],
            )
            .await
            .map_err(pg("collect old blobs"))?;
        tx.commit().await.map_err(pg("collect old jobs"))?;
        Ok(Collected {
            jobs,
            store_blobs,
            local_blobs: 0,
        })
    }

    async fn referenced_blobs(
        &self,
    ) -> Result<std::collections::HashSet<Sha256Digest>, StoreError> {
        let client = self.client("list referenced blobs").await?;
        let rows = client
            .query(super::REFERENCED_BLOBS, &[])
            .await
            .map_err(pg("list referenced blobs"))?;
        rows.iter()
            .map(|r| {
                let hex: &str = r.get(0);
                Sha256Digest::parse(hex).map_err(|e| StoreError::Corrupt {
                    id: hex.to_string(),
                    what: e.to_string(),
                })
            })
            .collect()
    }

    async fn insert_job_with_webhooks(
        &self,
        job: NewJob,
        webhooks: &[String],
    ) -> Result<JobRecord, StoreError> {
        let mut client = self.client("insert job").await?;
        let tx = client.transaction().await.map_err(pg("insert job"))?;
        let sql = format!(
            "INSERT INTO jobs (id, status, attempt, created_at, package_json, archive, cache_key, facts) \
             VALUES ($1, 'queued', 0, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
        );
        let id = job.id.to_string();
        let row = tx
            .query_one(
                &sql,
                &[
                    &id,
                    &now(),
                    &to_json(&job.package),
                    &job.tree_tar.to_hex(),
                    &job.cache_key,
                    &job.facts.to_hex(),
                ],
            )
            .await
            .map_err(pg("insert job"))?;
        for url in webhooks {
            tx.execute(
                "INSERT INTO webhook_targets (job_id, url) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id, url],
            )
            .await
            .map_err(pg("insert job: webhooks"))?;
        }
        tx.commit().await.map_err(pg("insert job"))?;
        decode(raw(&row))
    }

    async fn add_webhook(&self, job: JobId, url: &str) -> Result<(), StoreError> {
        let mut client = self.client("add webhook").await?;
        let tx = client.transaction().await.map_err(pg("add webhook"))?;
        let id = job.to_string();
        // Locking the job row orders this against `finish`: either finish sees the target,
        // or this sees the finished status and queues the delivery itself.
        let row = tx
            .query_opt("SELECT status FROM jobs WHERE id = $1 FOR UPDATE", &[&id])
            .await
            .map_err(pg("add webhook"))?;
        let Some(status) = row.and_then(|r| JobStatus::parse(r.get::<_, &str>(0))) else {
            return Ok(());
        };
        tx.execute(
            "INSERT INTO webhook_targets (job_id, url) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&id, &url],
        )
        .await
        .map_err(pg("add webhook"))?;
        if status.is_finished() {
            tx.execute(
                "INSERT INTO webhook_outbox (id, job_id, url) \
                 VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), $1, $2)",
                &[&id, &url],
            )
            .await
            .map_err(pg("add webhook"))?;
        }
        tx.commit().await.map_err(pg("add webhook"))?;
        Ok(())
    }

    async fn claim_webhooks(
        &self,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<super::WebhookDelivery>, StoreError> {
        let client = self.client("claim webhooks").await?;
        let rows = client
            .query(
                "UPDATE webhook_outbox o SET lease_owner = $1, \
                     lease_until = now() + make_interval(secs => $2) \
                 FROM (SELECT id FROM webhook_outbox \
                       WHERE delivered_at IS NULL AND failed_at IS NULL AND next_at <= now() \
                         AND (lease_until IS NULL OR lease_until < now()) \
                       ORDER BY next_at LIMIT $3 FOR UPDATE SKIP LOCKED) due \
                 WHERE o.id = due.id \
                 RETURNING o.id, o.job_id, o.url, o.attempts",
                &[&&*self.owner, &lease.as_secs_f64(), &i64::from(limit)],
            )
            .await
            .map_err(pg("claim webhooks"))?;
        rows.iter()
            .map(|r| {
                let job: &str = r.get(1);
                Ok(super::WebhookDelivery {
                    id: r.get(0),
                    job_id: JobId::parse(job).map_err(|e| StoreError::Corrupt {
                        id: job.to_string(),
                        what: e.to_string(),
                    })?,
                    url: r.get(2),
                    attempts: r.get::<_, i32>(3) as u32,
                })
            })
            .collect()
    }

    async fn webhook_outcome(
        &self,
        id: &str,
        outcome: Result<(), (String, Option<Duration>)>,
    ) -> Result<(), StoreError> {
        let client = self.client("record webhook outcome").await?;
        let done =
            match outcome {
                Ok(()) => client
                    .execute(
                        "UPDATE webhook_outbox SET delivered_at = now(), attempts = attempts + 1, \
                         last_error = NULL, lease_owner = NULL, lease_until = NULL WHERE id = $1",
                        &[&id],
                    )
                    .await,
                Err((error, Some(retry_in))) => {
                    client
                        .execute(
                            "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $2, \
                         next_at = now() + make_interval(secs => $3), lease_owner = NULL, \
                         lease_until = NULL WHERE id = $1",
                            &[&id, &error, &retry_in.min(WEBHOOK_RETRY_CAP).as_secs_f64()],
                        )
                        .await
                }
                Err((error, None)) => {
                    client
                        .execute(
                            "UPDATE webhook_outbox SET attempts = attempts + 1, last_error = $2, \
                         failed_at = now(), lease_owner = NULL, lease_until = NULL WHERE id = $1",
                            &[&id, &error],
                        )
                        .await
                }
            };
        done.map_err(pg("record webhook outcome"))?;
        Ok(())
    }

    async fn retire_key(&self, key_id: &str) -> Result<bool, StoreError> {
        let client = self.client("retire key").await?;
        let n = client
            .execute(
                "UPDATE signing_keys SET retired_at = now() \
                 WHERE key_id = $1 AND retired_at IS NULL",
                &[&key_id],
            )
            .await
            .map_err(pg("retire key"))?;
        Ok(n == 1)
    }
}

const WEBHOOK_RETRY_CAP: Duration = Duration::from_secs(600);

impl PgStore {
    /// Every signed attempt of a job: (attempt, envelope blob digest hex), by attempt.
    pub async fn attestations_of(&self, id: JobId) -> Result<Vec<(u32, String)>, StoreError> {
        let client = self.client("list attestations").await?;
        let rows = client
            .query(
                "SELECT attempt, envelope FROM attestations WHERE job_id = $1 ORDER BY attempt",
                &[&id.to_string()],
            )
            .await
            .map_err(pg("list attestations"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get::<_, i32>(0) as u32, r.get(1)))
            .collect())
    }
}
