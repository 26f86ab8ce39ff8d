//! What the operator console (`http::ui`) reads and writes beyond the status queries: the
//! dashboard's counts, search by any id, a job's order and events, the failed jobs a bulk replay
//! selects, the console's sessions and its audit log.
//!
//! Every query here is one index range (see `migrations/20261206400000_console.sql`), so the
//! pages stay fast with millions of jobs: the dashboard counts the active jobs (few) and the jobs
//! finished in the last day (a range of `ix_jobs_finished`), never every job ever taken in. The
//! replays and cancels themselves go through [`crate::store::admin`], the same code as the admin
//! topic; this module only records who pressed the button.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::Row as _;

use super::status::JobStatus;
use super::{Op as _, Result, Store, StoreError};

/// Largest bulk replay the console does in one go.
pub const MAX_BULK: u32 = 5000;

/// The dashboard's numbers, as of `now`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Dashboard {
    pub now: DateTime<Utc>,
    /// queued, in_progress, rolling_back: exact.
    pub active: Vec<(String, u64)>,
    /// Jobs that ended in the last hour and the last day, by final state.
    pub finished_hour: Vec<(String, u64)>,
    pub finished_day: Vec<(String, u64)>,
    /// Failed jobs by error class: (class, last hour, last day), most in the day first.
    pub failures: Vec<(String, u64, u64)>,
    /// The last 60 minutes, oldest first: orders taken in and jobs finished per minute.
    pub orders_per_minute: Vec<u64>,
    pub finished_per_minute: Vec<u64>,
    pub outbox_backlog: u64,
    /// Oldest unsent event, if any.
    pub outbox_oldest: Option<DateTime<Utc>>,
    pub workers: Vec<WorkerSeen>,
}

/// A worker (or an operator) that holds leases now or wrote a transition in the last hour.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct WorkerSeen {
    pub name: String,
    /// Jobs whose lease it holds now.
    pub leases: u64,
    /// Transitions it wrote in the last hour.
    pub transitions_hour: u64,
    pub last_seen: Option<DateTime<Utc>>,
}

/// An event of a job, from the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct JobEvent {
    pub event_id: String,
    pub routing_key: String,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub publish_attempts: u32,
    pub last_error: Option<String>,
    pub body: String,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub operator: String,
    pub role: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
    pub remote: Option<String>,
}

/// What to write to the audit log.
#[derive(Debug, Clone, Default)]
pub struct NewAudit<'a> {
    pub operator: &'a str,
    pub role: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
    pub remote: Option<&'a str>,
}

/// A console session found by its token's hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiSession {
    pub operator: String,
    pub csrf: String,
}

/// Per-minute counts of the last 60 minutes before `now`, oldest first, from (minute, n) rows.
fn per_minute(rows: &[sqlx::mysql::MySqlRow], now: DateTime<Utc>) -> Result<Vec<u64>> {
    let get = |e: sqlx::Error| StoreError::Db { op: "decode per-minute counts", source: e };
    let this_minute = now.timestamp().div_euclid(60);
    let mut out = vec![0u64; 60];
    for r in rows {
        let m: i64 = r.try_get("m").map_err(get)?;
        let n: i64 = r.try_get("n").map_err(get)?;
        let age = this_minute - m;
        if (0..60).contains(&age) {
            out[59 - age as usize] += n.max(0) as u64;
        }
    }
    Ok(out)
}

impl Store {
    /// The dashboard: a handful of index ranges, none over every job.
    pub async fn dashboard(&self) -> Result<Dashboard> {
        let now = Utc::now();
        let hour = now - Duration::hours(1);
        let day = now - Duration::days(1);
        let window = now - Duration::minutes(59) - Duration::seconds(now.timestamp().rem_euclid(60));
        let active = self.active_job_counts().await?;

        // One range of ix_jobs_finished (covering) gives both the finished jobs by state and
        // the failures by class, for the hour and the day.
        let rows = sqlx::query(
            "SELECT state, error_class, CAST(SUM(finished_at >= ?) AS SIGNED) AS h, COUNT(*) AS n FROM jobs \
             WHERE finished_at >= ? GROUP BY state, error_class",
        )
        .bind(hour)
        .bind(day)
        .fetch_all(self.pool())
        .await
        .op("count finished jobs")?;
        let get = |e: sqlx::Error| StoreError::Db { op: "decode finished counts", source: e };
        let (mut finished_hour, mut finished_day, mut failures) =
            (Vec::<(String, u64)>::new(), Vec::<(String, u64)>::new(), Vec::<(String, u64, u64)>::new());
        fn add(list: &mut Vec<(String, u64)>, key: &str, n: u64) {
            match list.iter_mut().find(|(k, _)| k == key) {
                Some(e) => e.1 += n,
                None => list.push((key.to_string(), n)),
            }
        }
        for r in &rows {
            let state: String = r.try_get("state").map_err(get)?;
            let class: Option<String> = r.try_get("error_class").map_err(get)?;
            let h = r.try_get::<Option<i64>, _>("h").map_err(get)?.unwrap_or(0).max(0) as u64;
            let n = r.try_get::<i64, _>("n").map_err(get)?.max(0) as u64;
            add(&mut finished_hour, &state, h);
            add(&mut finished_day, &state, n);
            if state == "failed" {
                let class = class.unwrap_or_else(|| "unknown".into());
                match failures.iter_mut().find(|(k, _, _)| *k == class) {
                    Some(e) => (e.1, e.2) = (e.1 + h, e.2 + n),
                    None => failures.push((class, h, n)),
                }
            }
        }
        finished_hour.sort();
        finished_day.sort();
        failures.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));

        let finished = sqlx::query(
            "SELECT CAST(FLOOR(UNIX_TIMESTAMP(finished_at) / 60) AS SIGNED) AS m, COUNT(*) AS n FROM jobs \
             WHERE finished_at >= ? GROUP BY m",
        )
        .bind(window)
        .fetch_all(self.pool())
        .await
        .op("count finished per minute")?;
        let taken = sqlx::query(
            "SELECT CAST(FLOOR(UNIX_TIMESTAMP(created_at) / 60) AS SIGNED) AS m, COUNT(*) AS n FROM jobs \
             WHERE created_at >= ? GROUP BY m",
        )
        .bind(window)
        .fetch_all(self.pool())
        .await
        .op("count orders per minute")?;

        let outbox =
            sqlx::query("SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM outbox WHERE sent_at IS NULL")
                .fetch_one(self.pool())
                .await
                .op("count outbox backlog")?;
        let backlog: i64 = outbox.try_get("n").map_err(get)?;
        let outbox_oldest: Option<DateTime<Utc>> = outbox.try_get("oldest").map_err(get)?;

        let workers = self.workers_seen(hour).await?;
        Ok(Dashboard {
            now,
            active,
            finished_hour,
            finished_day,
            failures,
            orders_per_minute: per_minute(&taken, now)?,
            finished_per_minute: per_minute(&finished, now)?,
            outbox_backlog: backlog.max(0) as u64,
            outbox_oldest,
            workers,
        })
    }

    /// Lease holders now, and the actors of transitions since `since` (intake excluded).
    async fn workers_seen(&self, since: DateTime<Utc>) -> Result<Vec<WorkerSeen>> {
        let get = |e: sqlx::Error| StoreError::Db { op: "decode workers", source: e };
        let leases = sqlx::query(
            "SELECT lease_owner, COUNT(*) AS n FROM jobs \
             WHERE lease_owner IS NOT NULL AND lease_expires_at >= NOW(6) GROUP BY lease_owner",
        )
        .fetch_all(self.pool())
        .await
        .op("count leases")?;
        let seen = sqlx::query(
            "SELECT actor, COUNT(*) AS n, MAX(at) AS last FROM job_history \
             WHERE at >= ? AND actor IS NOT NULL AND actor <> 'intake' GROUP BY actor ORDER BY last DESC LIMIT 100",
        )
        .bind(since)
        .fetch_all(self.pool())
        .await
        .op("list workers seen")?;
        let mut out: Vec<WorkerSeen> = Vec::new();
        for r in &seen {
            let n: i64 = r.try_get("n").map_err(get)?;
            out.push(WorkerSeen {
                name: r.try_get("actor").map_err(get)?,
                leases: 0,
                transitions_hour: n.max(0) as u64,
                last_seen: r.try_get("last").map_err(get)?,
            });
        }
        for r in &leases {
            let name: String = r.try_get("lease_owner").map_err(get)?;
            let n: i64 = r.try_get("n").map_err(get)?;
            match out.iter_mut().find(|w| w.name == name) {
                Some(w) => w.leases = n.max(0) as u64,
                None => out.push(WorkerSeen { name, leases: n.max(0) as u64, ..WorkerSeen::default() }),
            }
        }
        Ok(out)
    }

    /// Jobs whose job id, order id, server id or service (target order id) is exactly `q`.
    pub async fn search_jobs(&self, q: &str) -> Result<Vec<JobStatus>> {
        // One UNION of four unique or indexed lookups (an OR across columns would scan).
        let cols = super::status::STATUS_COLUMNS;
        let sql = format!(
            "(SELECT {cols} FROM job_status s WHERE s.job_id = ?) \
             UNION (SELECT {cols} FROM job_status s WHERE s.order_id = ?) \
             UNION (SELECT {cols} FROM job_status s WHERE s.server_id = ?) \
             UNION (SELECT {cols} FROM job_status s WHERE s.target_order_id = ? ORDER BY s.created_at DESC LIMIT 200) \
             ORDER BY created_at DESC, job_id DESC LIMIT 200"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(q)
            .bind(q)
            .bind(q)
            .bind(q)
            .fetch_all(self.pool())
            .await
            .op("search jobs")?;
        rows.iter().map(super::status::status_from_row).collect()
    }

    /// The order a job was made from, as received (for the console, which redacts it).
    pub async fn job_order_body(&self, job_id: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT order_body FROM jobs WHERE id = ?")
            .bind(job_id)
            .fetch_optional(self.pool())
            .await
            .op("read order body")
    }

    /// The events a job wrote to the outbox, oldest first.
    pub async fn job_events(&self, job_id: &str) -> Result<Vec<JobEvent>> {
        let rows = sqlx::query(
            "SELECT event_id, routing_key, created_at, sent_at, publish_attempts, last_error, body \
             FROM outbox WHERE job_id = ? ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(self.pool())
        .await
        .op("read job events")?;
        let get = |e: sqlx::Error| StoreError::Db { op: "decode job events", source: e };
        rows.iter()
            .map(|r| {
                Ok(JobEvent {
                    event_id: r.try_get("event_id").map_err(get)?,
                    routing_key: r.try_get("routing_key").map_err(get)?,
                    created_at: r.try_get("created_at").map_err(get)?,
                    sent_at: r.try_get("sent_at").map_err(get)?,
                    publish_attempts: r.try_get("publish_attempts").map_err(get)?,
                    last_error: r.try_get("last_error").map_err(get)?,
                    body: r.try_get("body").map_err(get)?,
                })
            })
            .collect()
    }

    /// How many jobs failed with `class` since `since` (what a bulk replay would take).
    pub async fn count_failed(&self, class: &str, since: DateTime<Utc>) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE state = 'failed' AND error_class = ? AND finished_at >= ?",
        )
        .bind(class)
        .bind(since)
        .fetch_one(self.pool())
        .await
        .op("count failed jobs")?;
        Ok(n.max(0) as u64)
    }

    /// The ids of the jobs that failed with `class` since `since`, oldest failure first, at most
    /// `limit`.
    pub async fn failed_job_ids(&self, class: &str, since: DateTime<Utc>, limit: u32) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'failed' AND error_class = ? AND finished_at >= ? \
             ORDER BY finished_at, id LIMIT ?",
        )
        .bind(class)
        .bind(since)
        .bind(limit.min(MAX_BULK))
        .fetch_all(self.pool())
        .await
        .op("list failed jobs")
    }

    /// Writes one line of the audit log.
    pub async fn audit(&self, a: &NewAudit<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO ui_audit (operator, role, action, target, outcome, detail, remote) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.operator)
        .bind(a.role)
        .bind(a.action)
        .bind(a.target.map(|t| truncate(t, 255)))
        .bind(a.outcome)
        .bind(a.detail)
        .bind(a.remote.map(|t| truncate(t, 255)))
        .execute(self.pool())
        .await
        .op("write audit log")?;
        Ok(())
    }

    /// The newest lines of the audit log; of one target if given.
    pub async fn audit_log(&self, target: Option<&str>, limit: u32) -> Result<Vec<AuditEntry>> {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "SELECT at, operator, role, action, target, outcome, detail, remote FROM ui_audit",
        );
        if let Some(t) = target {
            q.push(" WHERE target = ").push_bind(t.to_string());
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(limit.min(1000));
        let rows = q.build().fetch_all(self.pool()).await.op("read audit log")?;
        let get = |e: sqlx::Error| StoreError::Db { op: "decode audit log", source: e };
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    at: r.try_get("at").map_err(get)?,
                    operator: r.try_get("operator").map_err(get)?,
                    role: r.try_get("role").map_err(get)?,
                    action: r.try_get("action").map_err(get)?,
                    target: r.try_get("target").map_err(get)?,
                    outcome: r.try_get("outcome").map_err(get)?,
                    detail: r.try_get("detail").map_err(get)?,
                    remote: r.try_get("remote").map_err(get)?,
                })
            })
            .collect()
    }

    /// Stores a new session (and drops a few expired ones).
    pub async fn create_ui_session(
        &self,
        token_sha256: &str,
        operator: &str,
        csrf: &str,
        ttl: std::time::Duration,
    ) -> Result<()> {
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at < NOW(6) LIMIT 100")
            .execute(self.pool())
            .await
            .op("purge expired sessions")?;
        sqlx::query(
            "INSERT INTO ui_sessions (token_sha256, operator, csrf, expires_at) \
             VALUES (?, ?, ?, NOW(6) + INTERVAL ? SECOND)",
        )
        .bind(token_sha256)
        .bind(operator)
        .bind(csrf)
        .bind(ttl.as_secs())
        .execute(self.pool())
        .await
        .op("create session")?;
        Ok(())
    }

    /// The live session with this token hash, if any.
    pub async fn ui_session(&self, token_sha256: &str) -> Result<Option<UiSession>> {
        let row = sqlx::query(
            "SELECT operator, csrf FROM ui_sessions WHERE token_sha256 = ? AND expires_at >= NOW(6)",
        )
        .bind(token_sha256)
        .fetch_optional(self.pool())
        .await
        .op("read session")?;
        let get = |e: sqlx::Error| StoreError::Db { op: "decode session", source: e };
        row.map(|r| {
            Ok(UiSession {
                operator: r.try_get("operator").map_err(get)?,
                csrf: r.try_get("csrf").map_err(get)?,
            })
        })
        .transpose()
    }

    /// Ends a session (logout).
    pub async fn delete_ui_session(&self, token_sha256: &str) -> Result<()> {
        sqlx::query("DELETE FROM ui_sessions WHERE token_sha256 = ?")
            .bind(token_sha256)
            .execute(self.pool())
            .await
            .op("delete session")?;
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
