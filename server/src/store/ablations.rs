//! Ablations in the job store: one row each, queued → running → succeeded | failed |
//! cancelled like a job. Its points' progress and results live in its folder
//! (`<output_root>/ablations/<id>`), which a restart resumes from: a finished point is kept, an
//! interrupted training continues from its checkpoint.

use super::{now, rfc3339, rfc3339_opt, Store, MAX_ATTEMPTS};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

/// One ablation as stored.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct AblationRow {
    /// Id (`a-<n>`).
    pub id: String,
    /// queued, running, succeeded, failed or cancelled.
    pub state: String,
    /// The request as accepted (settings, pipeline and train texts).
    #[schema(value_type = Object)]
    pub request: serde_json::Value,
    /// Its folder.
    pub output: String,
    /// Latest progress (point, line).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
    /// Times it was started (more than 1 after a restart).
    pub attempts: i64,
    /// When it was submitted (RFC 3339, UTC).
    #[serde(serialize_with = "rfc3339")]
    #[schema(value_type = String)]
    pub created_at: i64,
    /// When it last started.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "rfc3339_opt"
    )]
    #[schema(value_type = Option<String>)]
    pub started_at: Option<i64>,
    /// When it ended.
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
    /// The points' results and the recommendation, once it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub results: Option<serde_json::Value>,
}

pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS ablations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,
    request TEXT NOT NULL,
    output TEXT NOT NULL,
    progress TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    results TEXT
 );
 CREATE INDEX IF NOT EXISTS ablations_state ON ablations(state, seq);";

const COLUMNS: &str = "id, state, request, output, progress, attempts, created_at, started_at, \
    finished_at, error, cancel_requested, results";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AblationRow> {
    let json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
        Ok(r.get::<_, Option<String>>(i)?
            .and_then(|p| serde_json::from_str(&p).ok()))
    };
    Ok(AblationRow {
        id: r.get(0)?,
        state: r.get(1)?,
        request: json(2)?.unwrap_or_default(),
        output: r.get(3)?,
        progress: json(4)?,
        attempts: r.get(5)?,
        created_at: r.get(6)?,
        started_at: r.get(7)?,
        finished_at: r.get(8)?,
        error: r.get(9)?,
        cancel_requested: r.get::<_, i64>(10)? != 0,
        results: json(11)?,
    })
}

fn find(c: &Connection, id: &str) -> rusqlite::Result<Option<AblationRow>> {
    c.query_row(
        &format!("SELECT {COLUMNS} FROM ablations WHERE id = ?1"),
        params![id],
        from_row,
    )
    .optional()
}

/// Ablations left running by a stop go back to the queue (after [`MAX_ATTEMPTS`] such stops,
/// to `failed`). Returns their ids.
pub(super) fn recover(c: &mut Connection) -> rusqlite::Result<Vec<String>> {
    let tx = c.transaction()?;
    let ids: Vec<String> = {
        let mut st = tx.prepare("SELECT id FROM ablations WHERE state = 'running' ORDER BY seq")?;
        let rows = st.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    tx.execute(
        "UPDATE ablations SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled'
                                           WHEN attempts >= ?2 THEN 'failed' ELSE 'queued' END,
                error = CASE WHEN cancel_requested = 0 AND attempts >= ?2 THEN ?3 ELSE error END,
                finished_at = CASE WHEN cancel_requested = 1 OR attempts >= ?2 THEN ?1 ELSE NULL END
         WHERE state = 'running'",
        params![
            now(),
            MAX_ATTEMPTS,
            format!(
                "the service stopped abruptly {MAX_ATTEMPTS} times while this ablation ran: it \
                 is not run again (submit it anew to retry)"
            )
        ],
    )?;
    tx.commit()?;
    Ok(ids)
}

impl Store {
    /// Queue an ablation; its folder is `<ablations_root>/<id>`.
    pub fn submit_ablation(
        &self,
        request: &serde_json::Value,
        ablations_root: &std::path::Path,
    ) -> rusqlite::Result<AblationRow> {
        self.with(|c| {
            let tx = c.transaction()?;
            let seq: i64 =
                tx.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM ablations", [], |r| {
                    r.get(0)
                })?;
            let id = format!("a-{seq:06}");
            let output = ablations_root.join(&id).to_string_lossy().into_owned();
            tx.execute(
                "INSERT INTO ablations (id, state, request, output, created_at)
                 VALUES (?1, 'queued', ?2, ?3, ?4)",
                params![id, request.to_string(), output, now()],
            )?;
            let row = find(&tx, &id)?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
            tx.commit()?;
            Ok(row)
        })
    }

    /// Queued ablations (for the 429 limit).
    pub fn queued_ablations(&self) -> rusqlite::Result<i64> {
        self.with(|c| {
            c.query_row(
                "SELECT COUNT(*) FROM ablations WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )
        })
    }

    /// Claim the oldest queued ablation.
    pub fn claim_ablation(&self) -> rusqlite::Result<Option<AblationRow>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let id: Option<String> = tx
                .query_row(
                    "SELECT id FROM ablations WHERE state = 'queued' ORDER BY seq LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(id) = id else { return Ok(None) };
            let n = tx.execute(
                "UPDATE ablations SET state = 'running', started_at = ?2, attempts = attempts + 1
                 WHERE id = ?1 AND state = 'queued'",
                params![id, now()],
            )?;
            if n != 1 {
                return Ok(None);
            }
            let row = find(&tx, &id)?;
            tx.commit()?;
            Ok(row)
        })
    }

    /// Record progress of a running ablation.
    pub fn ablation_progress(
        &self,
        id: &str,
        progress: &serde_json::Value,
    ) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE ablations SET progress = ?2 WHERE id = ?1 AND state = 'running'",
                params![id, progress.to_string()],
            )
            .map(|_| ())
        })
    }

    /// End a running ablation.
    pub fn finish_ablation(
        &self,
        id: &str,
        state: &str,
        error: Option<&str>,
        results: Option<&serde_json::Value>,
    ) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE ablations SET state = ?2, error = ?3, results = ?4, finished_at = ?5
                 WHERE id = ?1 AND state = 'running'",
                params![id, state, error, results.map(|r| r.to_string()), now()],
            )
            .map(|_| ())
        })
    }

    /// Put a running ablation back in the queue (the service is stopping).
    pub fn requeue_ablation(&self, id: &str) -> rusqlite::Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE ablations SET state = 'queued' WHERE id = ?1 AND state = 'running'",
                params![id],
            )
            .map(|_| ())
        })
    }

    /// Cancel: a queued ablation at once, a running one at its next batch or step.
    pub fn cancel_ablation(&self, id: &str) -> rusqlite::Result<Option<AblationRow>> {
        self.with(|c| {
            c.execute(
                "UPDATE ablations SET state = 'cancelled', finished_at = ?2
                 WHERE id = ?1 AND state = 'queued'",
                params![id, now()],
            )?;
            c.execute(
                "UPDATE ablations SET cancel_requested = 1 WHERE id = ?1 AND state = 'running'",
                params![id],
            )?;
            find(c, id)
        })
    }

    /// Whether a cancel was asked for.
    pub fn ablation_cancel_requested(&self, id: &str) -> bool {
        self.with(|c| {
            c.query_row(
                "SELECT cancel_requested FROM ablations WHERE id = ?1",
                params![id],
                |r| r.get::<_, i64>(0),
            )
        })
        .is_ok_and(|v| v != 0)
    }

    /// One ablation.
    pub fn ablation(&self, id: &str) -> rusqlite::Result<Option<AblationRow>> {
        self.with(|c| find(c, id))
    }

    /// Ablations, newest first.
    pub fn ablations(&self, limit: i64) -> rusqlite::Result<Vec<AblationRow>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM ablations ORDER BY seq DESC LIMIT ?1"
            ))?;
            let rows = st.query_map(params![limit], from_row)?;
            rows.collect()
        })
    }
}
