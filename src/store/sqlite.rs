//! [`SqliteStore`]: jobs and attestation rows in one SQLite file, WAL mode.
//!
//! Two connections, each behind a `std::sync::Mutex` and used from `spawn_blocking`: one for
//! writes, one for reads. Every statement is a short indexed lookup or a one-row write, so a
//! single writer is not the bottleneck (the containers are); the separate reader lets WAL
//! serve `GET /verify/{id}` while a commit waits for its fsync. A sync mutex held only inside
//! the blocking task never straddles an `.await`. `synchronous=FULL` makes every committed job
//! transition durable before the API answers.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::{
    Collected, Deleted, Finish, JobPage, JobRecord, JobStatus, NewJob, Phase, Store, StoreError,
};
use crate::digest::Sha256Digest;
use crate::ids::JobId;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,
    status       TEXT NOT NULL,
    phase        TEXT,
    attempt      INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    package_json TEXT NOT NULL,
    archive      TEXT NOT NULL,
    cache_key    TEXT,
    result_json  TEXT,
    error_json   TEXT,
    attestation  TEXT,
    logs         TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, seq);
CREATE INDEX IF NOT EXISTS jobs_cache ON jobs (cache_key, seq);
CREATE TABLE IF NOT EXISTS attestations (
    job_id      TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    envelope    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
";

/// Columns added after the first release, with their definitions: added on open when missing.
const ADDED_COLUMNS: &[(&str, &str)] = &[("facts", "TEXT")];

const COLUMNS: &str = "seq, id, status, phase, attempt, created_at, started_at, finished_at, \
                       package_json, archive, cache_key, result_json, error_json, attestation, logs, \
                       facts";

/// The SQLite job store.
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Mutex<Connection>>,
    reader: Arc<Mutex<Connection>>,
}

fn q(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Query { operation, source }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn ts(t: OffsetDateTime) -> String {
    super::rfc3339(t)
}

/// Adds the [`ADDED_COLUMNS`] a database made by an earlier version lacks.
fn add_missing_columns(conn: &Connection) -> rusqlite::Result<()> {
    let existing: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('jobs')")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for (name, definition) in ADDED_COLUMNS {
        if !existing.iter().any(|c| c == name) {
            conn.execute_batch(&format!("ALTER TABLE jobs ADD COLUMN {name} {definition}"))?;
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating and migrating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let writer = Self::connect(path)?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        add_missing_columns(&writer).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let reader = Self::connect(path)?;
        // The database holds job metadata only, but keep it private like the blobs.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            reader: Arc::new(Mutex::new(reader)),
        })
    }

    fn connect(path: &Path) -> Result<Connection, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        Ok(conn)
    }

    /// Runs `f` on the writer connection.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::on(self.writer.clone(), f).await
    }

    /// Runs `f` on the reader connection.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        Self::on(self.reader.clone(), f).await
    }

    async fn on<T: Send + 'static>(
        conn: Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(move || {
            // A panic inside a previous holder poisons the mutex; the connection itself is
            // still consistent (SQLite rolled the transaction back), so keep going.
            let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn parse_time(id: &str, text: Option<String>) -> Result<Option<OffsetDateTime>, StoreError> {
    text.map(|t| {
        OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).map_err(|e| {
            StoreError::Corrupt {
                id: id.to_string(),
                what: format!("time {t:?}: {e}"),
            }
        })
    })
    .transpose()
}

fn parse_json<T: serde::de::DeserializeOwned>(
    id: &str,
    text: Option<String>,
) -> Result<Option<T>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
            id: id.to_string(),
            what: format!("json: {e}"),
        })
    })
    .transpose()
}

fn parse_digest(id: &str, text: Option<String>) -> Result<Option<Sha256Digest>, StoreError> {
    text.map(|t| {
        Sha256Digest::parse(&t).map_err(|e| StoreError::Corrupt {
            id: id.to_string(),
            what: e.to_string(),
        })
    })
    .transpose()
}

/// The raw columns of one row, read while the statement is borrowed (PostgreSQL rows are
/// read into the same shape and decoded by the same code).
pub(super) type RawRow = (
    i64,
    String,
    String,
    Option<String>,
    u32,
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn raw(row: &Row<'_>) -> rusqlite::Result<RawRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
        row.get(11)?,
        row.get(12)?,
        row.get(13)?,
        row.get(14)?,
        row.get(15)?,
    ))
}

pub(super) fn decode(r: RawRow) -> Result<JobRecord, StoreError> {
    let (
        seq,
        id_text,
        status,
        phase,
        attempt,
        created,
        started,
        finished,
        package,
        archive,
        cache_key,
        result,
        error,
        attestation,
        logs,
        facts,
    ) = r;
    let corrupt = |what: String| StoreError::Corrupt {
        id: id_text.clone(),
        what,
    };
    let id = JobId::parse(&id_text).map_err(|e| corrupt(e.to_string()))?;
    let status = JobStatus::parse(&status).ok_or_else(|| corrupt(format!("status {status:?}")))?;
    let phase = phase.as_deref().and_then(Phase::parse);
    let created_at = parse_time(&id_text, Some(created))?.expect("Some in, Some out");
    Ok(JobRecord {
        id,
        seq,
        status,
        phase,
        attempt,
        created_at,
        started_at: parse_time(&id_text, started)?,
        finished_at: parse_time(&id_text, finished)?,
        package: parse_json(&id_text, Some(package))?.expect("Some in, Some out"),
        tree_tar: parse_digest(&id_text, Some(archive))?.expect("Some in, Some out"),
        facts: parse_digest(&id_text, facts)?,
        cache_key,
        result: parse_json(&id_text, result)?,
        error: parse_json(&id_text, error)?,
        attestation: parse_digest(&id_text, attestation)?,
        logs: parse_digest(&id_text, logs)?,
    })
}

fn get(conn: &Connection, id: &str) -> Result<Option<JobRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1");
    let row = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_row([id], raw).optional())
        .map_err(q("get job"))?;
    row.map(decode).transpose()
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain data serializes")
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_job(&self, job: NewJob) -> Result<JobRecord, StoreError> {
        self.with(move |conn| {
            let id = job.id.to_string();
            conn.prepare_cached(
                "INSERT INTO jobs (id, status, attempt, created_at, package_json, archive, cache_key, facts) \
                 VALUES (?1, 'queued', 0, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![
                    id,
                    ts(now()),
                    to_json(&job.package),
                    job.tree_tar.to_hex(),
                    job.cache_key,
                    job.facts.to_hex()
                ])
            })
            .map_err(q("insert job"))?;
            get(conn, &id)?.ok_or_else(|| StoreError::Corrupt {
                id,
                what: "vanished after insert".into(),
            })
        })
        .await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.read(move |conn| get(conn, &id.to_string())).await
    }

    async fn list_jobs(
        &self,
        status: Option<JobStatus>,
        cursor: Option<i64>,
        limit: u32,
    ) -> Result<JobPage, StoreError> {
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM jobs WHERE (?1 IS NULL OR status = ?1) AND seq < ?2 \
                 ORDER BY seq DESC LIMIT ?3"
            );
            let mut st = conn.prepare_cached(&sql).map_err(q("list jobs"))?;
            let rows = st
                .query_map(
                    params![
                        status.map(|s| s.as_str()),
                        cursor.unwrap_or(i64::MAX),
                        i64::from(limit) + 1
                    ],
                    raw,
                )
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(q("list jobs"))?;
            let mut jobs = rows
                .into_iter()
                .map(decode)
                .collect::<Result<Vec<_>, _>>()?;
            let next_cursor = if jobs.len() > limit as usize {
                jobs.truncate(limit as usize);
                jobs.last().map(|j| j.seq)
            } else {
                None
            };
            Ok(JobPage { jobs, next_cursor })
        })
        .await
    }

    async fn claim_next(&self) -> Result<Option<JobRecord>, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction().map_err(q("claim job"))?;
            let id: Option<String> = tx
                .query_row(
                    "SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(q("claim job"))?;
            let Some(id) = id else { return Ok(None) };
            tx.execute(
                "UPDATE jobs SET status = 'running', phase = 'unpacking', attempt = attempt + 1, \
                 started_at = ?2, finished_at = NULL WHERE id = ?1 AND status = 'queued'",
                params![id, ts(now())],
            )
            .map_err(q("claim job"))?;
            let job = get(&tx, &id)?;
            tx.commit().map_err(q("claim job"))?;
            Ok(job)
        })
        .await
    }

    async fn finish(&self, id: JobId, attempt: u32, finish: Finish) -> Result<bool, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(q("finish job"))?;
            let id = id.to_string();
            let changed = tx
                .execute(
                    "UPDATE jobs SET status = ?3, phase = NULL, finished_at = ?4, result_json = ?5, \
                     error_json = ?6, attestation = ?7, logs = ?8 \
                     WHERE id = ?1 AND attempt = ?2 AND status = 'running'",
                    params![
                        id,
                        attempt,
                        finish.status.as_str(),
                        ts(now()),
                        finish.result.as_ref().map(to_json),
                        finish.error.as_ref().map(to_json),
                        finish.attestation.map(|d| d.to_hex()),
                        finish.logs.map(|d| d.to_hex()),
                    ],
                )
                .map_err(q("finish job"))?;
            if changed == 0 {
                return Ok(false);
            }
            if let Some(att) = finish.attestation {
                // The primary key (job_id, attempt) makes a second signed result for the same
                // attempt impossible, not merely unlikely.
                tx.execute(
                    "INSERT INTO attestations (job_id, attempt, envelope, created_at) \
                     VALUES (?1, ?2, ?3, ?4)",
                    params![id, attempt, att.to_hex(), ts(now())],
                )
                .map_err(q("record attestation"))?;
            }
            tx.commit().map_err(q("finish job"))?;
            Ok(true)
        })
        .await
    }

    async fn requeue(&self, id: JobId, attempt: u32) -> Result<bool, StoreError> {
        self.with(move |conn| {
            let n = conn
                .execute(
                    "UPDATE jobs SET status = 'queued', phase = NULL \
                     WHERE id = ?1 AND attempt = ?2 AND status = 'running'",
                    params![id.to_string(), attempt],
                )
                .map_err(q("requeue job"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn requeue_all_running(&self) -> Result<u64, StoreError> {
        self.with(|conn| {
            let n = conn
                .execute(
                    "UPDATE jobs SET status = 'queued', phase = NULL WHERE status = 'running'",
                    [],
                )
                .map_err(q("requeue running jobs"))?;
            Ok(n as u64)
        })
        .await
    }

    async fn delete_job(&self, id: JobId) -> Result<Deleted, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(q("delete job"))?;
            let id = id.to_string();
            let status: Option<String> = tx
                .query_row("SELECT status FROM jobs WHERE id = ?1", [&id], |r| r.get(0))
                .optional()
                .map_err(q("delete job"))?;
            let Some(status) = status.as_deref().and_then(JobStatus::parse) else {
                return Ok(Deleted::NotFound);
            };
            if status == JobStatus::Running {
                return Ok(Deleted::Running);
            }
            tx.execute("DELETE FROM attestations WHERE job_id = ?1", [&id])
                .map_err(q("delete job"))?;
            tx.execute("DELETE FROM jobs WHERE id = ?1", [&id])
                .map_err(q("delete job"))?;
            tx.commit().map_err(q("delete job"))?;
            Ok(Deleted::Removed(status))
        })
        .await
    }

    async fn count_queued(&self) -> Result<u64, StoreError> {
        self.read(|conn| {
            conn.prepare_cached("SELECT COUNT(*) FROM jobs WHERE status = 'queued'")
                .and_then(|mut st| st.query_row([], |r| r.get::<_, i64>(0)))
                .map(|n| n as u64)
                .map_err(q("count queued"))
        })
        .await
    }

    async fn count_by_status(&self) -> Result<Vec<(JobStatus, u64)>, StoreError> {
        self.read(|conn| {
            let mut st = conn
                .prepare_cached("SELECT status, COUNT(*) FROM jobs GROUP BY status")
                .map_err(q("count by status"))?;
            let rows = st
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(q("count by status"))?;
            Ok(JobStatus::ALL
                .iter()
                .map(|s| {
                    let n = rows
                        .iter()
                        .find(|(name, _)| name == s.as_str())
                        .map_or(0, |(_, n)| *n as u64);
                    (*s, n)
                })
                .collect())
        })
        .await
    }

    async fn collect(&self, cutoff: OffsetDateTime) -> Result<Collected, StoreError> {
        self.with(move |conn| {
            let tx = conn.transaction().map_err(q("collect old jobs"))?;
            // RFC 3339 UTC text compares in time order (to the second: a fraction sorts
            // before `Z`, which is harmless at retention's granularity of days).
            let cutoff = ts(cutoff);
            tx.execute(
                "DELETE FROM attestations WHERE job_id IN (SELECT id FROM jobs \
                 WHERE status IN ('passed', 'failed', 'error', 'cancelled') AND finished_at < ?1)",
                [&cutoff],
            )
            .map_err(q("collect old jobs"))?;
            let jobs = tx
                .execute(
                    "DELETE FROM jobs WHERE status IN ('passed', 'failed', 'error', 'cancelled') \
                     AND finished_at < ?1",
                    [&cutoff],
                )
                .map_err(q("collect old jobs"))?;
            tx.commit().map_err(q("collect old jobs"))?;
            Ok(Collected {
                jobs: jobs as u64,
                ..Collected::default()
            })
        })
        .await
    }

    async fn referenced_blobs(
        &self,
    ) -> Result<std::collections::HashSet<Sha256Digest>, StoreError> {
        self.read(|conn| {
            let mut st = conn
                .prepare(super::REFERENCED_BLOBS)
                .map_err(q("list referenced blobs"))?;
            let rows = st
                .query_map([], |r| r.get::<_, String>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(q("list referenced blobs"))?;
            rows.iter()
                .map(|hex| {
                    Sha256Digest::parse(hex).map_err(|e| StoreError::Corrupt {
                        id: hex.clone(),
                        what: e.to_string(),
                    })
                })
                .collect()
        })
        .await
    }

    async fn find_cached(&self, cache_key: &str) -> Result<Option<JobRecord>, StoreError> {
        let key = cache_key.to_string();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM jobs WHERE cache_key = ?1 AND status IN ('passed', 'failed') \
                 AND attestation IS NOT NULL ORDER BY seq DESC LIMIT 1"
            );
            let row = conn
                .prepare_cached(&sql)
                .and_then(|mut st| st.query_row([key], raw).optional())
                .map_err(q("find cached result"))?;
            row.map(decode).transpose()
        })
        .await
    }
}
