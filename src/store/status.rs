//! Job status for people: one job with its history, and filtered, paginated lists of jobs.
//!
//! Read-only queries behind `provisioner jobs show|list` and the HTTP status API. Lists read the
//! `job_status` view, the stable contract that teams reading the database also use, so the CLI,
//! the API and those teams see the same columns; a single job adds the engine's columns that the
//! view leaves out (the step's attempts, the lease, a pending cancel) and the job's history.
//!
//! Pagination is keyset on `(created_at, job_id)`, newest first: a cursor names the last row of
//! the previous page, so pages stay stable while new jobs arrive and each page is one index range
//! scan, however deep. Nothing here writes.

use std::collections::HashMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{MySql, QueryBuilder, Row as _};

use super::{Op as _, Result, Store, StoreError};

/// The states a job can be in (the `jobs.state` column).
pub const STATES: &[&str] = &["queued", "in_progress", "rolling_back", "completed", "failed", "cancelled"];

/// The states in which a job is still being worked on.
pub const ACTIVE_STATES: &[&str] = &["queued", "in_progress", "rolling_back"];

/// Largest page a list returns, whatever was asked.
pub const MAX_LIMIT: u32 = 1000;

/// One row of the `job_status` view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub job_id: String,
    pub order_id: String,
    pub project_id: String,
    pub state: String,
    pub step: String,
    pub attempts: u32,
    pub error_class: Option<String>,
    pub error_message: Option<String>,
    pub server_id: Option<String>,
    pub port_id: Option<String>,
    pub volume_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What billing asked for: `create`, `suspend`, `unsuspend`, `resize`, `terminate`.
    pub action: String,
    /// The service the job acts on: its create order's id.
    pub target_order_id: Option<String>,
}

/// One job in full: its status, what the engine keeps about it, and its history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub status: JobStatus,
    pub kind: String,
    /// Attempts of the current step.
    pub step_attempts: u32,
    /// The step that failed, with `error_class` and `error_message`.
    pub error_step: Option<String>,
    pub next_run_at: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// An operator asked to cancel and the engine has not finished rolling back yet.
    pub cancel_requested: bool,
    /// Oldest first. The first entry is the job's creation (from `created_at`, as intake writes
    /// no history row for it).
    pub history: Vec<HistoryEntry>,
    /// For a create: the later jobs of the service it made (suspend, resize, ...), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<JobStatus>,
}

/// One transition of a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    /// Milliseconds since the job was created.
    pub elapsed_ms: i64,
    pub from_state: Option<String>,
    pub to_state: String,
    pub from_step: Option<String>,
    pub to_step: String,
    /// The attempt of `from_step` that ended here.
    pub attempt: u32,
    /// Time spent in `from_step`, when the engine measured it.
    pub duration_ms: Option<u64>,
    /// A worker id, an operator (admin commands), or `intake`.
    pub actor: Option<String>,
    pub detail: Option<String>,
}

/// What a list asks for. Every filter is optional; `cursor` is the `next_cursor` of the previous
/// page.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    pub order_id: Option<String>,
    pub state: Option<String>,
    /// `create`, `suspend`, ...
    pub action: Option<String>,
    /// The jobs of one service.
    pub target_order_id: Option<String>,
    pub project_id: Option<String>,
    /// Jobs that failed (or were cancelled) with this error class.
    pub error_class: Option<String>,
    /// Jobs created at or after this time.
    pub since: Option<DateTime<Utc>>,
    pub limit: u32,
    pub cursor: Option<Cursor>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<JobStatus>,
    /// Pass it as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// The position after which the next page starts: the last row's `(created_at, job_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub job_id: String,
}

/// A cursor that was not produced by [`Cursor::encode`].
#[derive(Debug, thiserror::Error)]
#[error("invalid cursor")]
pub struct BadCursor;

impl Cursor {
    /// Opaque text: base64url of `<microseconds since epoch>:<job id>`.
    pub fn encode(&self) -> String {
        let raw = format!("{}:{}", self.created_at.timestamp_micros(), self.job_id);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn decode(text: &str) -> Result<Cursor, BadCursor> {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).map_err(|_| BadCursor)?;
        let raw = String::from_utf8(raw).map_err(|_| BadCursor)?;
        let (micros, job_id) = raw.split_once(':').ok_or(BadCursor)?;
        let micros: i64 = micros.parse().map_err(|_| BadCursor)?;
        let created_at = DateTime::<Utc>::from_timestamp_micros(micros).ok_or(BadCursor)?;
        if job_id.is_empty()
            || job_id.len() > 36
            || !job_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        {
            return Err(BadCursor);
        }
        Ok(Cursor { created_at, job_id: job_id.to_string() })
    }
}

pub(crate) const STATUS_COLUMNS: &str = "s.job_id, s.order_id, s.project_id, s.state, s.step, s.attempts, s.error_class, \
     s.error_message, s.server_id, s.port_id, s.volume_id, s.created_at, s.updated_at, s.finished_at, s.action, \
     s.target_order_id";

/// The actions billing can order (the `action` column).
pub const ACTIONS: &[&str] = &["create", "suspend", "unsuspend", "resize", "terminate"];

pub(crate) fn status_from_row(row: &sqlx::mysql::MySqlRow) -> Result<JobStatus> {
    let get = |e: sqlx::Error| StoreError::Db { op: "decode job status", source: e };
    Ok(JobStatus {
        job_id: row.try_get("job_id").map_err(get)?,
        order_id: row.try_get("order_id").map_err(get)?,
        project_id: row.try_get("project_id").map_err(get)?,
        state: row.try_get("state").map_err(get)?,
        step: row.try_get("step").map_err(get)?,
        attempts: row.try_get("attempts").map_err(get)?,
        error_class: row.try_get("error_class").map_err(get)?,
        error_message: row.try_get("error_message").map_err(get)?,
        server_id: row.try_get("server_id").map_err(get)?,
        port_id: row.try_get("port_id").map_err(get)?,
        volume_id: row.try_get("volume_id").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        updated_at: row.try_get("updated_at").map_err(get)?,
        finished_at: row.try_get("finished_at").map_err(get)?,
        action: row.try_get("action").map_err(get)?,
        target_order_id: row.try_get("target_order_id").map_err(get)?,
    })
}

impl Store {
    /// One job by its job id or, failing that, by its order id. `None` when neither matches.
    pub async fn job_detail(&self, id: &str) -> Result<Option<JobDetail>> {
        let sql = format!(
            "SELECT {STATUS_COLUMNS}, j.kind, j.step_attempts, j.error_step, j.next_run_at, j.lease_owner, \
             j.lease_expires_at, j.cancel_requested \
             FROM job_status s JOIN jobs j ON j.id = s.job_id WHERE j.id = ? OR j.order_id = ? \
             ORDER BY j.id = ? DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(id)
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .op("read job")?;
        let Some(row) = row else { return Ok(None) };
        let get = |e: sqlx::Error| StoreError::Db { op: "decode job", source: e };
        let status = status_from_row(&row)?;
        let cancel_requested: i8 = row.try_get("cancel_requested").map_err(get)?;
        let mut detail = JobDetail {
            kind: row.try_get("kind").map_err(get)?,
            step_attempts: row.try_get("step_attempts").map_err(get)?,
            error_step: row.try_get("error_step").map_err(get)?,
            next_run_at: row.try_get("next_run_at").map_err(get)?,
            lease_owner: row.try_get("lease_owner").map_err(get)?,
            lease_expires_at: row.try_get("lease_expires_at").map_err(get)?,
            cancel_requested: cancel_requested != 0,
            history: Vec::new(),
            actions: Vec::new(),
            status,
        };
        detail.history = self.job_history(&detail.status.job_id, detail.status.created_at).await?;
        if detail.status.action == "create" {
            detail.actions = self.service_jobs(&detail.status.order_id, Some(&detail.status.job_id)).await?;
        }
        Ok(Some(detail))
    }

    /// A job's transitions, oldest first, led by its creation.
    async fn job_history(&self, job_id: &str, created_at: DateTime<Utc>) -> Result<Vec<HistoryEntry>> {
        let rows = sqlx::query(
            "SELECT at, from_state, to_state, from_step, to_step, attempt, duration_ms, actor, detail \
             FROM job_history WHERE job_id = ? ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(self.pool())
        .await
        .op("read job history")?;
        let get = |e: sqlx::Error| StoreError::Db { op: "decode job history", source: e };
        let mut out = Vec::with_capacity(rows.len() + 1);
        for row in rows {
            let at: DateTime<Utc> = row.try_get("at").map_err(get)?;
            out.push(HistoryEntry {
                at,
                elapsed_ms: (at - created_at).num_milliseconds(),
                from_state: row.try_get("from_state").map_err(get)?,
                to_state: row.try_get("to_state").map_err(get)?,
                from_step: row.try_get("from_step").map_err(get)?,
                to_step: row.try_get("to_step").map_err(get)?,
                attempt: row.try_get("attempt").map_err(get)?,
                duration_ms: row.try_get("duration_ms").map_err(get)?,
                actor: row.try_get("actor").map_err(get)?,
                detail: row.try_get("detail").map_err(get)?,
            });
        }
        // Intake records the creation in `jobs.created_at` only; show it as the first line,
        // unless a creation row (no from_state) is already there.
        if out.first().is_none_or(|first| first.from_state.is_some()) {
            let first_step =
                out.first().and_then(|h| h.from_step.clone()).unwrap_or_else(|| "resolve".into());
            out.insert(
                0,
                HistoryEntry {
                    at: created_at,
                    elapsed_ms: 0,
                    from_state: None,
                    to_state: "queued".into(),
                    from_step: None,
                    to_step: first_step,
                    attempt: 0,
                    duration_ms: None,
                    actor: Some("intake".into()),
                    detail: Some("created from the order".into()),
                },
            );
        }
        Ok(out)
    }

    /// Jobs matching `filter`, newest first, one page of at most `filter.limit` (capped at
    /// [`MAX_LIMIT`]).
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<JobPage> {
        let limit = filter.limit.clamp(1, MAX_LIMIT);
        let mut q: QueryBuilder<MySql> =
            QueryBuilder::new(format!("SELECT {STATUS_COLUMNS} FROM job_status s WHERE 1=1"));
        if let Some(order_id) = &filter.order_id {
            q.push(" AND s.order_id = ").push_bind(order_id.clone());
        }
        if let Some(state) = &filter.state {
            q.push(" AND s.state = ").push_bind(state.clone());
        }
        if let Some(action) = &filter.action {
            q.push(" AND s.action = ").push_bind(action.clone());
        }
        if let Some(target) = &filter.target_order_id {
            q.push(" AND s.target_order_id = ").push_bind(target.clone());
        }
        if let Some(project) = &filter.project_id {
            q.push(" AND s.project_id = ").push_bind(project.clone());
        }
        if let Some(class) = &filter.error_class {
            q.push(" AND s.error_class = ").push_bind(class.clone());
        }
        if let Some(since) = filter.since {
            q.push(" AND s.created_at >= ").push_bind(since);
        }
        if let Some(cursor) = &filter.cursor {
            q.push(" AND (s.created_at < ")
                .push_bind(cursor.created_at)
                .push(" OR (s.created_at = ")
                .push_bind(cursor.created_at)
                .push(" AND s.job_id < ")
                .push_bind(cursor.job_id.clone())
                .push("))");
        }
        // One row more than asked tells whether another page follows.
        q.push(" ORDER BY s.created_at DESC, s.job_id DESC LIMIT ").push_bind(limit + 1);
        let rows = q.build().fetch_all(self.pool()).await.op("list jobs")?;
        let mut jobs = rows.iter().map(status_from_row).collect::<Result<Vec<_>>>()?;
        let next_cursor = if jobs.len() > limit as usize {
            jobs.truncate(limit as usize);
            jobs.last().map(|j| Cursor { created_at: j.created_at, job_id: j.job_id.clone() }.encode())
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    /// The jobs of one service in the order intake committed them (the `after_job_id` chain;
    /// jobs of one batch share a `created_at`), except `skip` (at most [`MAX_LIMIT`]).
    pub async fn service_jobs(&self, target_order_id: &str, skip: Option<&str>) -> Result<Vec<JobStatus>> {
        let sql = format!(
            "SELECT {STATUS_COLUMNS}, j.after_job_id AS after_job_id FROM job_status s \
             JOIN jobs j ON j.id = s.job_id WHERE s.target_order_id = ? \
             ORDER BY s.created_at, s.job_id LIMIT {MAX_LIMIT}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(target_order_id)
            .fetch_all(self.pool())
            .await
            .op("list service jobs")?;
        let mut jobs = Vec::with_capacity(rows.len());
        let mut after: HashMap<String, String> = HashMap::new();
        for row in &rows {
            let job = status_from_row(row)?;
            if let Some(prev) = row.try_get::<Option<String>, _>("after_job_id").op("read after_job_id")? {
                after.insert(job.job_id.clone(), prev);
            }
            jobs.push(job);
        }
        // Depth in the chain (the create, or the first action without a predecessor, is 0).
        let depth = |id: &str| {
            let (mut d, mut at) = (0usize, id.to_string());
            while let Some(p) = after.get(&at) {
                d += 1;
                at = p.clone();
                if d > jobs.len() {
                    break;
                }
            }
            d
        };
        let mut keyed: Vec<(usize, JobStatus)> = jobs.iter().map(|j| (depth(&j.job_id), j.clone())).collect();
        keyed.sort_by_key(|(depth, job)| (*depth, job.created_at));
        Ok(keyed.into_iter().map(|(_, j)| j).filter(|j| Some(j.job_id.as_str()) != skip).collect())
    }

    /// Jobs per active state (queued, in progress, rolling back): one index range, cheap enough
    /// for every metrics scrape. Finished jobs are counted by `provisioner_jobs_finished_total`.
    pub async fn active_job_counts(&self) -> Result<Vec<(String, u64)>> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM jobs WHERE state IN ('queued', 'in_progress', 'rolling_back') \
             GROUP BY state",
        )
        .fetch_all(self.pool())
        .await
        .op("count jobs by state")?;
        let get = |e: sqlx::Error| StoreError::Db { op: "decode job counts", source: e };
        let mut counts: Vec<(String, u64)> = ACTIVE_STATES.iter().map(|s| (s.to_string(), 0)).collect();
        for row in rows {
            let state: String = row.try_get("state").map_err(get)?;
            let n: i64 = row.try_get("n").map_err(get)?;
            if let Some(entry) = counts.iter_mut().find(|(s, _)| *s == state) {
                entry.1 = n.max(0) as u64;
            }
        }
        Ok(counts)
    }

    /// Events written to the outbox and not yet confirmed by the broker.
    pub async fn outbox_backlog(&self) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(self.pool())
            .await
            .op("count outbox backlog")?;
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor {
            created_at: DateTime::<Utc>::from_timestamp_micros(1_790_000_000_123_456).unwrap(),
            job_id: "9f2e7b3c-4d5e-4f6a-9b0c-1d2e3f4a5b6c".into(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("not base64!").is_err());
        let evil = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1:' OR 1=1 --");
        assert!(Cursor::decode(&evil).is_err());
        let no_id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("12:");
        assert!(Cursor::decode(&no_id).is_err());
    }
}
