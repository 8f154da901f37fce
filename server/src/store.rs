//! The durable job store: one SQLite file (WAL) under the output root.
//!
//! A job moves queued → running → succeeded | failed | cancelled. Claiming a job is one
//! `UPDATE … WHERE state = 'queued'` inside a transaction, so two workers never run one job.
//! At start-up, jobs left `running` by a crash go back to `queued` (after [`MAX_ATTEMPTS`] such
//! crashes, to `failed`), to run with `attempts + 1`: their
//! staging directories are discarded by the engine's atomic publish, so a re-run starts clean
//! and nothing half-written ever sits under a final name.

mod ablations;

pub use ablations::AblationRow;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;

/// A job's state.
pub const STATES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

/// Runs of one job a crash of the service may interrupt before the job is failed instead of
/// queued again.
pub const MAX_ATTEMPTS: i64 = 3;

/// One job as stored.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Job {
    /// Id (`j-<n>`).
    pub id: String,
    /// queued, running, succeeded, failed or cancelled.
    pub state: String,
    /// The submission's idempotency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The pipeline as submitted (TOML).
    pub pipeline: String,
    /// The run directory.
    pub output: String,
    /// Which schedule made it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// Latest progress (phase and counts).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
    /// Times the job was started (more than 1 after a restart).
    pub attempts: i64,
    /// When it was submitted (RFC 3339, UTC).
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    pub created_at: i64,
    /// When it last started (RFC 3339, UTC).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt"
    )]
    #[schema(value_type = Option<String>)]
    pub started_at: Option<i64>,
    /// When it ended (RFC 3339, UTC).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt"
    )]
    #[schema(value_type = Option<String>)]
    pub finished_at: Option<i64>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether a cancel was requested while it ran.
    pub cancel_requested: bool,
}

/// The store.
pub struct Store {
    conn: Mutex<Connection>,
}

/// Unix seconds as RFC 3339 (UTC, whole seconds): what the API shows.
fn rfc3339<S: serde::Serializer>(secs: &i64, s: S) -> Result<S::Ok, S::Error> {
    match chrono::DateTime::from_timestamp(*secs, 0) {
        Some(t) => s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        None => s.serialize_i64(*secs),
    }
}

fn rfc3339_opt<S: serde::Serializer>(secs: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match secs {
        Some(v) => rfc3339(v, s),
        None => s.serialize_none(),
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

const JOB_COLUMNS: &str = "id, state, idempotency_key, pipeline, output, schedule, progress, \
    attempts, created_at, started_at, finished_at, error, cancel_requested";

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    let progress: Option<String> = r.get(6)?;
    Ok(Job {
        id: r.get(0)?,
        state: r.get(1)?,
        idempotency_key: r.get(2)?,
        pipeline: r.get(3)?,
        output: r.get(4)?,
        schedule: r.get(5)?,
        progress: progress.and_then(|p| serde_json::from_str(&p).ok()),
        attempts: r.get(7)?,
        created_at: r.get(8)?,
        started_at: r.get(9)?,
        finished_at: r.get(10)?,
        error: r.get(11)?,
        cancel_requested: r.get::<_, i64>(12)? != 0,
    })
}

/// The job whose `by` column (`id` or `idempotency_key`) is `value`.
fn find(c: &Connection, by: &str, value: &str) -> rusqlite::Result<Option<Job>> {
    c.query_row(
        &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE {by} = ?1"),
        params![value],
        job_from_row,
    )
    .optional()
}

/// A job just written in this transaction.
fn written(c: &Connection, id: &str) -> rusqlite::Result<Job> {
    find(c, "id", id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)
}

/// Outcome of a submission.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// A new job.
    New(Job),
    /// The idempotency key was seen: the earlier job.
    Existing(Job),
}

impl Store {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT UNIQUE NOT NULL,
                state TEXT NOT NULL,
                idempotency_key TEXT UNIQUE,
                pipeline TEXT NOT NULL,
                output TEXT NOT NULL,
                schedule TEXT,
                progress TEXT,
                attempts INTEGER NOT NULL DEFAULT 0,
                created_at INTEGER NOT NULL,
                started_at INTEGER,
                finished_at INTEGER,
                error TEXT,
                cancel_requested INTEGER NOT NULL DEFAULT 0,
                report TEXT
             );
             CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
             CREATE TABLE IF NOT EXISTS schedules (
                id TEXT PRIMARY KEY,
                cron TEXT NOT NULL,
                pipeline TEXT NOT NULL,
                input_prefix TEXT NOT NULL,
                created_at INTEGER NOT NULL,
                last_tick INTEGER,
                last_success INTEGER
             );
             CREATE TABLE IF NOT EXISTS schedule_files (
                schedule TEXT NOT NULL,
                path TEXT NOT NULL,
                size INTEGER NOT NULL,
                hash TEXT NOT NULL,
                job TEXT NOT NULL,
                done INTEGER NOT NULL DEFAULT 0,
                PRIMARY KEY (schedule, path, size, hash)
             );
             CREATE TABLE IF NOT EXISTS counters (
                name TEXT PRIMARY KEY,
                value INTEGER NOT NULL
             );",
        )?;
        conn.execute_batch(ablations::SCHEMA)?;
        // Stores made before back-off was kept: add its columns.
        let has_failures: i64 = conn.query_row(
            "SELECT COUNT(*) FROM pragma_table_info('schedules') WHERE name = 'failures'",
            [],
            |r| r.get(0),
        )?;
        if has_failures == 0 {
            conn.execute_batch(
                "ALTER TABLE schedules ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE schedules ADD COLUMN retry_at INTEGER;",
            )?;
        }
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let mut guard = self
            .conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Jobs (and ablations) that were running when the service stopped go back to the queue.
    /// Returns their ids.
    pub fn recover(&self) -> rusqlite::Result<Vec<String>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let ids: Vec<String> = {
                let mut st = tx.prepare("SELECT id FROM jobs WHERE state = 'running' ORDER BY seq")?;
                let rows = st.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            // A job that was running at each of MAX_ATTEMPTS deaths of the service is not run
            // again: it may well be what kills it.
            tx.execute(
                "UPDATE jobs SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled'
                                              WHEN attempts >= ?2 THEN 'failed' ELSE 'queued' END,
                        error = CASE WHEN cancel_requested = 0 AND attempts >= ?2 THEN ?3 ELSE error END,
                        progress = NULL,
                        finished_at = CASE WHEN cancel_requested = 1 OR attempts >= ?2 THEN ?1 ELSE NULL END
                 WHERE state = 'running'",
                params![
                    now(),
                    MAX_ATTEMPTS,
                    format!(
                        "the service stopped abruptly {MAX_ATTEMPTS} times while this job ran: it is not run again (submit it anew to retry)"
                    )
                ],
            )?;
            tx.commit()?;
            let mut ids = ids;
            ids.extend(ablations::recover(c)?);
            Ok(ids)
        })
    }

    /// Queued jobs (for the 429 limit).
    pub fn queued(&self) -> rusqlite::Result<i64> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )
        })
    }

    /// Add a job, or return the existing one with the same idempotency key. `output` gets the
    /// job id appended.
    pub fn submit(
        &self,
        pipeline: &str,
        output_root: &Path,
        key: Option<&str>,
        schedule: Option<&str>,
    ) -> rusqlite::Result<Submitted> {
        self.with(|c| {
            let tx = c.transaction()?;
            if let Some(k) = key {
                let found = find(&tx, "idempotency_key", k)?;
                if let Some(job) = found {
                    return Ok(Submitted::Existing(job));
                }
            }
            let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs", [], |r| {
                r.get(0)
            })?;
            let id = format!("j-{seq:06}");
            let output = output_root.join(&id).to_string_lossy().into_owned();
            tx.execute(
                "INSERT INTO jobs (id, state, idempotency_key, pipeline, output, schedule, created_at)
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6)",
                params![id, key, pipeline, output, schedule, now()],
            )?;
            let job = written(&tx, &id)?;
            tx.commit()?;
            Ok(Submitted::New(job))
        })
    }

    /// Claim the oldest queued job for running.
    pub fn claim(&self) -> rusqlite::Result<Option<Job>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let id: Option<String> = tx
                .query_row(
                    "SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            let n = tx.execute(
                "UPDATE jobs SET state = 'running', started_at = ?2, attempts = attempts + 1
                 WHERE id = ?1 AND state = 'queued'",
                params![id, now()],
            )?;
            if n != 1 {
                return Ok(None);
            }
            let job = written(&tx, &id)?;
            tx.commit()?;
            Ok(Some(job))
        })
    }

    /// Record progress of a running job.
    pub fn progress(&self, id: &str, progress: &serde_json::Value) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET progress = ?2 WHERE id = ?1 AND state = 'running'",
                params![id, progress.to_string()],
            )
            .map(|_| ())
        })
    }

    /// Finish a running job.
    pub fn finish(
        &self,
        id: &str,
        state: &str,
        error: Option<&str>,
        report: Option<&str>,
    ) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = ?2, error = ?3, report = ?4, finished_at = ?5
                 WHERE id = ?1 AND state = 'running'",
                params![id, state, error, report, now()],
            )
            .map(|_| ())
        })
    }

    /// Put a running job back in the queue (the service is stopping; it runs again later).
    pub fn requeue(&self, id: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = 'queued', progress = NULL WHERE id = ?1 AND state = 'running'",
                params![id],
            )
            .map(|_| ())
        })
    }

    /// Cancel: a queued job is cancelled at once; a running one is marked, and the worker
    /// cancels it at its next batch. Returns the job after the change.
    pub fn cancel(&self, id: &str) -> rusqlite::Result<Option<Job>> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?2
                 WHERE id = ?1 AND state = 'queued'",
                params![id, now()],
            )?;
            c.execute(
                "UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
                params![id],
            )?;
            find(c, "id", id)
        })
    }

    /// Whether a cancel was asked for.
    pub fn cancel_requested(&self, id: &str) -> bool {
        self.with(|c| {
            c.query_row(
                "SELECT cancel_requested FROM jobs WHERE id = ?1",
                params![id],
                |r| r.get::<_, i64>(0),
            )
        })
        .is_ok_and(|v| v != 0)
    }

    /// The job submitted with this idempotency key, if any.
    pub fn by_key(&self, key: &str) -> rusqlite::Result<Option<Job>> {
        self.with(|c| find(c, "idempotency_key", key))
    }

    /// One job.
    pub fn get(&self, id: &str) -> rusqlite::Result<Option<Job>> {
        self.with(|c| find(c, "id", id))
    }

    /// A job's report.json, once it has one.
    pub fn report(&self, id: &str) -> rusqlite::Result<Option<Option<String>>> {
        self.with(|c| {
            c.query_row("SELECT report FROM jobs WHERE id = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    /// Jobs, newest first, optionally in one state.
    pub fn list(&self, state: Option<&str>, limit: i64) -> rusqlite::Result<Vec<Job>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE (?1 IS NULL OR state = ?1)
                 ORDER BY seq DESC LIMIT ?2"
            ))?;
            let rows = st.query_map(params![state, limit], job_from_row)?;
            rows.collect()
        })
    }

    /// Counts per state (for /metrics).
    pub fn counts(&self) -> rusqlite::Result<Vec<(String, i64)>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state ORDER BY state")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }
}

/// One schedule as stored.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct Schedule {
    /// Id (`s-<n>`).
    pub id: String,
    /// Cron expression (6 fields with seconds, or 5 without).
    pub cron: String,
    /// The pipeline (TOML); its first input's paths are replaced by the new files.
    pub pipeline: String,
    /// Folder (inside a data root) whose new files each tick takes.
    pub input_prefix: String,
    /// When it was created (RFC 3339, UTC).
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    pub created_at: i64,
    /// The last tick (RFC 3339, UTC).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt"
    )]
    #[schema(value_type = Option<String>)]
    pub last_tick: Option<i64>,
    /// The last successful run (RFC 3339, UTC).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt"
    )]
    #[schema(value_type = Option<String>)]
    pub last_success: Option<i64>,
    /// Failed runs in a row (the back-off grows with them).
    pub failures: i64,
    /// After failures: no tick before this time (RFC 3339, UTC).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt"
    )]
    #[schema(value_type = Option<String>)]
    pub retry_at: Option<i64>,
}

fn schedule_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Schedule> {
    Ok(Schedule {
        id: r.get(0)?,
        cron: r.get(1)?,
        pipeline: r.get(2)?,
        input_prefix: r.get(3)?,
        created_at: r.get(4)?,
        last_tick: r.get(5)?,
        last_success: r.get(6)?,
        failures: r.get(7)?,
        retry_at: r.get(8)?,
    })
}

const SCHEDULE_COLUMNS: &str =
    "id, cron, pipeline, input_prefix, created_at, last_tick, last_success, failures, retry_at";

impl Store {
    /// Add a schedule.
    pub fn add_schedule(
        &self,
        cron: &str,
        pipeline: &str,
        prefix: &str,
    ) -> rusqlite::Result<Schedule> {
        self.with(|c| {
            let tx = c.transaction()?;
            // Ids are never reused: a counter that only grows (seeded from the largest id of
            // stores made before it was kept).
            let largest: i64 = tx.query_row(
                "SELECT COALESCE(MAX(CAST(SUBSTR(id, 3) AS INTEGER)), 0) FROM schedules",
                [],
                |r| r.get(0),
            )?;
            let counted: Option<i64> = tx
                .query_row(
                    "SELECT value FROM counters WHERE name = 'schedule'",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let seq = counted.unwrap_or(0).max(largest) + 1;
            tx.execute(
                "INSERT INTO counters (name, value) VALUES ('schedule', ?1)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![seq],
            )?;
            let id = format!("s-{seq:04}");
            tx.execute(
                "INSERT INTO schedules (id, cron, pipeline, input_prefix, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, cron, pipeline, prefix, now()],
            )?;
            let s = tx.query_row(
                &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?1"),
                params![id],
                schedule_from_row,
            )?;
            tx.commit()?;
            Ok(s)
        })
    }

    /// Every schedule.
    pub fn schedules(&self) -> rusqlite::Result<Vec<Schedule>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY id"
            ))?;
            let rows = st.query_map([], schedule_from_row)?;
            rows.collect()
        })
    }

    /// Remove a schedule (its jobs stay). Returns whether it existed.
    pub fn delete_schedule(&self, id: &str) -> rusqlite::Result<bool> {
        self.with(|c| {
            let n = c.execute("DELETE FROM schedules WHERE id = ?1", params![id])?;
            c.execute(
                "DELETE FROM schedule_files WHERE schedule = ?1",
                params![id],
            )?;
            Ok(n > 0)
        })
    }

    /// Record a tick: `files` (path, size, content hash) not yet taken by a successful run of
    /// this schedule are assigned to a new job with `pipeline_for(new files)`; returns the job,
    /// or None when nothing is new. One transaction: a crash never half-assigns files.
    pub fn tick(
        &self,
        schedule: &str,
        files: &[(String, i64, String)],
        output_root: &Path,
        pipeline_for: &dyn Fn(&[String]) -> Result<String, String>,
    ) -> rusqlite::Result<Result<Option<Job>, String>> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE schedules SET last_tick = ?2 WHERE id = ?1",
                params![schedule, now()],
            )?;
            // Files of a job still queued or running are taken; of a failed one, free again.
            let mut fresh = Vec::new();
            for (path, size, hash) in files {
                let taken: i64 = tx.query_row(
                    "SELECT COUNT(*) FROM schedule_files f JOIN jobs j ON j.id = f.job
                     WHERE f.schedule = ?1 AND f.path = ?2 AND f.size = ?3 AND f.hash = ?4
                       AND (f.done = 1 OR j.state IN ('queued', 'running'))",
                    params![schedule, path, size, hash],
                    |r| r.get(0),
                )?;
                if taken == 0 {
                    fresh.push((path.clone(), *size, hash.clone()));
                }
            }
            if fresh.is_empty() {
                tx.commit()?;
                return Ok(Ok(None));
            }
            let paths: Vec<String> = fresh.iter().map(|f| f.0.clone()).collect();
            let pipeline = match pipeline_for(&paths) {
                Ok(p) => p,
                Err(e) => {
                    tx.commit()?;
                    return Ok(Err(e));
                }
            };
            let seq: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs", [], |r| r.get(0))?;
            let id = format!("j-{seq:06}");
            let output = output_root.join(&id).to_string_lossy().into_owned();
            tx.execute(
                "INSERT INTO jobs (id, state, pipeline, output, schedule, created_at)
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5)",
                params![id, pipeline, output, schedule, now()],
            )?;
            for (path, size, hash) in &fresh {
                tx.execute(
                    "INSERT INTO schedule_files (schedule, path, size, hash, job, done) VALUES (?1, ?2, ?3, ?4, ?5, 0)
                     ON CONFLICT (schedule, path, size, hash) DO UPDATE SET job = excluded.job, done = 0",
                    params![schedule, path, size, hash, id],
                )?;
            }
            let job = written(&tx, &id)?;
            tx.commit()?;
            Ok(Ok(Some(job)))
        })
    }

    /// After a scheduled job succeeded: its files are done and the schedule's last success set.
    pub fn schedule_job_done(&self, schedule: &str, job: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE schedule_files SET done = 1 WHERE schedule = ?1 AND job = ?2",
                params![schedule, job],
            )?;
            tx.execute(
                "UPDATE schedules SET last_success = ?2, failures = 0, retry_at = NULL WHERE id = ?1",
                params![schedule, now()],
            )?;
            tx.commit()
        })
    }

    /// After a scheduled job failed: the schedule backs off exponentially, `base` seconds
    /// after the first failure, doubling with each one after it, at most a day.
    pub fn schedule_job_failed(&self, schedule: &str, base: u64) -> rusqlite::Result<()> {
        self.with(|c| {
            let failures: i64 = c
                .query_row(
                    "SELECT failures FROM schedules WHERE id = ?1",
                    params![schedule],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0);
            let delay = (base.max(1) as i64)
                .saturating_mul(1i64 << failures.clamp(0, 20))
                .min(86_400);
            c.execute(
                "UPDATE schedules SET failures = failures + 1, retry_at = ?2 WHERE id = ?1",
                params![schedule, now() + delay],
            )?;
            Ok(())
        })
    }

    /// Mark a tick that queued nothing (the queue was full): the next comes at the next
    /// cron time.
    pub fn skip_tick(&self, schedule: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE schedules SET last_tick = ?2 WHERE id = ?1",
                params![schedule, now()],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_claimed_once_and_recovered_after_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("jobs.db")).expect("open");
        let Submitted::New(a) = store
            .submit("x", dir.path(), Some("k1"), None)
            .expect("submit")
        else {
            panic!("new job expected")
        };
        let again = store
            .submit("y", dir.path(), Some("k1"), None)
            .expect("submit");
        assert_eq!(again, Submitted::Existing(a.clone()), "same key, same job");
        let claimed = store.claim().expect("claim").expect("a job");
        assert_eq!(claimed.id, a.id);
        assert_eq!(claimed.attempts, 1);
        assert!(
            store.claim().expect("claim").is_none(),
            "never claimed twice"
        );
        drop(store);
        // The process dies here; a new one recovers the running job into the queue.
        let store = Store::open(&dir.path().join("jobs.db")).expect("reopen");
        assert_eq!(store.recover().expect("recover"), vec![a.id.clone()]);
        let again = store.claim().expect("claim").expect("requeued");
        assert_eq!(again.attempts, 2);
        store
            .finish(&a.id, "succeeded", None, Some("{}"))
            .expect("finish");
        assert_eq!(
            store.get(&a.id).expect("get").map(|j| j.state),
            Some("succeeded".into())
        );
        assert_eq!(
            store.cancel(&a.id).expect("cancel").map(|j| j.state),
            Some("succeeded".into())
        );
    }

    #[test]
    fn a_job_running_at_each_of_three_crashes_is_failed_not_queued_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("jobs.db");
        let store = Store::open(&db).expect("open");
        let Submitted::New(a) = store.submit("x", dir.path(), None, None).expect("submit") else {
            panic!("new job expected")
        };
        for attempt in 1..=MAX_ATTEMPTS {
            let claimed = store.claim().expect("claim").expect("queued");
            assert_eq!(claimed.attempts, attempt);
            // The service dies while the job runs; the next one recovers it.
            let store = Store::open(&db).expect("reopen");
            assert_eq!(store.recover().expect("recover"), vec![a.id.clone()]);
        }
        assert!(
            store.claim().expect("claim").is_none(),
            "not run a fourth time"
        );
        let failed = store.get(&a.id).expect("get").expect("job");
        assert_eq!(failed.state, "failed");
        assert!(
            failed.error.as_deref().unwrap_or("").contains("3 times"),
            "{failed:?}"
        );
        assert!(failed.finished_at.is_some());
    }
}
