//! Admin actions on a job: replay a failed job, cancel a queued or in-progress one.
//!
//! Called by the admin consumer ([`crate::amqp::admin`]) once the command's sender is known to be
//! an allowed operator. Each action is one transaction that locks the job row (`FOR UPDATE`),
//! decides from its current state, and writes the job and a `job_history` row naming the
//! operator (`actor`) and their reason, so every admin action, done or refused, is in the job's
//! history. What each does:
//!
//! - **replay**: only a `failed` job; it goes back to `queued` at the first step, from the start:
//!   the step's attempts, crash count, intent, resource ids and engine data are cleared (the
//!   rollback deleted what they named), the deadline restarts from now, the fence is bumped (a
//!   stale worker cannot write). The job keeps its id, its total attempts and its history; the
//!   old error is copied into the history row before it is cleared from the job.
//! - **cancel**: a `queued` job that no worker holds and that created nothing ends `cancelled`
//!   at once, with its `job.cancelled` event in the outbox in the same transaction. A job in
//!   progress gets `cancel_requested = 1` and is made due; the engine rolls back what it created
//!   and ends it `cancelled` with the event (see [`crate::engine`]). A finished job, one already
//!   rolling back, or one whose cancel is already requested is refused. A `tenant_create` ended
//!   here leaves its tenant `failed` (as one the engine cancels does), not `provisioning`: a new
//!   create order for the same `tenant_ref` then onboards it.

use chrono::Utc;
use sqlx::Row as _;
use uuid::Uuid;

use super::intake::{ACTION_FIRST_STEP, FIRST_STEP};

/// The step a replayed job starts at: its kind's first (for a kind the store does not know,
/// `start`, which the engine turns into the kind's first step).
fn replay_step(action: &str) -> &'static str {
    match action {
        "create" => FIRST_STEP,
        "suspend" | "unsuspend" | "resize" | "terminate" => ACTION_FIRST_STEP,
        _ => "start",
    }
}
use super::{Op as _, Result, Store, StoreError};
use crate::messages::{AdminTarget, ErrorClass, Event, EventError, EventType};

/// What an admin action did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOutcome {
    /// The failed job is queued again.
    Replayed { job_id: String },
    /// The queued job ended `cancelled`; its event is in the outbox.
    Cancelled { job_id: String },
    /// The engine will roll the job back and end it `cancelled`.
    CancelRequested { job_id: String },
    /// Nothing changed; the reason is recorded in the job's history.
    Refused { job_id: String, reason: String },
    /// No job has this id or order id: nothing to change, nothing to record it in.
    NotFound,
}

impl AdminOutcome {
    /// For metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            AdminOutcome::Replayed { .. } => "replayed",
            AdminOutcome::Cancelled { .. } => "cancelled",
            AdminOutcome::CancelRequested { .. } => "cancel_requested",
            AdminOutcome::Refused { .. } => "refused",
            AdminOutcome::NotFound => "not_found",
        }
    }
}

/// The locked job, as much of it as the admin actions need.
struct Locked {
    id: String,
    order_id: String,
    project_id: String,
    action: String,
    target_order_id: Option<String>,
    state: String,
    step: String,
    step_attempts: u32,
    attempts: u32,
    leased: bool,
    created_anything: bool,
    cancel_requested: bool,
    error_class: Option<String>,
    error_step: Option<String>,
    error_message: Option<String>,
    /// The job's trace context, for the event of a cancel applied here.
    traceparent: Option<String>,
}

async fn lock_job(tx: &mut sqlx::MySqlConnection, target: &AdminTarget) -> Result<Option<Locked>> {
    let (sql, key) = match target {
        AdminTarget::Job(id) => ("WHERE id = ?", id.to_string()),
        AdminTarget::Order(order) => ("WHERE order_id = ?", order.clone()),
    };
    let query = format!(
        "SELECT id, order_id, project_id, action, target_order_id, state, step, step_attempts, attempts, \
         (lease_owner IS NOT NULL AND lease_expires_at >= NOW(6)) AS leased, \
         (port_id IS NOT NULL OR server_id IS NOT NULL OR volume_id IS NOT NULL OR intent IS NOT NULL) AS created, \
         cancel_requested, error_class, error_step, error_message, traceparent FROM jobs {sql} FOR UPDATE"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(query))
        .bind(key)
        .fetch_optional(&mut *tx)
        .await
        .op("lock job for an admin action")?;
    let Some(row) = row else { return Ok(None) };
    let get = |e: sqlx::Error| StoreError::Db { op: "decode job for an admin action", source: e };
    let flag = |name: &str| -> Result<bool> {
        let v: Option<i64> = row.try_get(name).map_err(get)?;
        Ok(v.unwrap_or(0) != 0)
    };
    Ok(Some(Locked {
        id: row.try_get("id").map_err(get)?,
        order_id: row.try_get("order_id").map_err(get)?,
        project_id: row.try_get("project_id").map_err(get)?,
        action: row.try_get("action").map_err(get)?,
        target_order_id: row.try_get("target_order_id").map_err(get)?,
        state: row.try_get("state").map_err(get)?,
        step: row.try_get("step").map_err(get)?,
        step_attempts: row.try_get("step_attempts").map_err(get)?,
        attempts: row.try_get("attempts").map_err(get)?,
        leased: flag("leased")?,
        created_anything: flag("created")?,
        cancel_requested: row.try_get::<i8, _>("cancel_requested").map_err(get)? != 0,
        error_class: row.try_get("error_class").map_err(get)?,
        error_step: row.try_get("error_step").map_err(get)?,
        error_message: row.try_get("error_message").map_err(get)?,
        traceparent: row.try_get("traceparent").map_err(get)?,
    }))
}

/// One `job_history` row of an admin action.
struct AdminHistory<'a> {
    job_id: &'a str,
    from: (&'a str, &'a str),
    to: (&'a str, &'a str),
    attempt: u32,
    actor: &'a str,
    detail: String,
}

async fn record(tx: &mut sqlx::MySqlConnection, h: AdminHistory<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO job_history (job_id, from_state, to_state, from_step, to_step, attempt, actor, detail) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(h.job_id)
    .bind(h.from.0)
    .bind(h.to.0)
    .bind(h.from.1)
    .bind(h.to.1)
    .bind(h.attempt)
    .bind(h.actor)
    .bind(h.detail)
    .execute(&mut *tx)
    .await
    .op("record an admin action")?;
    Ok(())
}

/// `"<what> by <actor>"`, plus `": <reason>"` when one was given.
/// Records a refused admin action in the job's history (nothing else changes) and commits.
async fn refuse(
    mut tx: sqlx::Transaction<'_, sqlx::MySql>,
    job: Locked,
    action: &str,
    actor: &str,
    reason: Option<&str>,
    why: String,
) -> Result<AdminOutcome> {
    record(
        &mut tx,
        AdminHistory {
            job_id: &job.id,
            from: (&job.state, &job.step),
            to: (&job.state, &job.step),
            attempt: job.step_attempts,
            actor,
            detail: format!("{} refused: {why}", detail(action, actor, reason)),
        },
    )
    .await?;
    tx.commit().await.op("commit refused admin action")?;
    Ok(AdminOutcome::Refused { job_id: job.id, reason: why })
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn detail(what: &str, actor: &str, reason: Option<&str>) -> String {
    match reason.map(str::trim).filter(|r| !r.is_empty()) {
        Some(r) => format!("{what} by {actor}: {r}"),
        None => format!("{what} by {actor}"),
    }
}

impl Store {
    /// Replays a failed job from the start (see the module docs). `job_deadline` is the time the
    /// replayed job gets to finish, from now.
    pub async fn admin_replay(
        &self,
        target: &AdminTarget,
        actor: &str,
        reason: Option<&str>,
        job_deadline: std::time::Duration,
    ) -> Result<AdminOutcome> {
        let mut tx = self.pool().begin().await.op("begin replay")?;
        let Some(job) = lock_job(&mut tx, target).await? else {
            tx.rollback().await.op("rollback replay")?;
            return Ok(AdminOutcome::NotFound);
        };
        if job.state != "failed" {
            let why = format!("the job is {}, not failed", job.state);
            return refuse(tx, job, "replay", actor, reason, why).await;
        }
        let previous = format!(
            "previous error: {} at {}: {}",
            job.error_class.as_deref().unwrap_or("?"),
            job.error_step.as_deref().unwrap_or("?"),
            job.error_message.as_deref().unwrap_or("")
        );
        let deadline_micros = u64::try_from(job_deadline.as_micros()).unwrap_or(u64::MAX);
        sqlx::query(
            "UPDATE jobs SET state = 'queued', step = ?, step_attempts = 0, crashes = 0, intent = NULL, \
             port_id = NULL, server_id = NULL, volume_id = NULL, data = NULL, \
             error_class = NULL, error_step = NULL, error_message = NULL, cancel_requested = 0, cancel_reason = NULL, \
             lease_owner = NULL, lease_expires_at = NULL, fence = fence + 1, \
             next_run_at = NOW(6), deadline_at = NOW(6) + INTERVAL ? MICROSECOND, finished_at = NULL \
             WHERE id = ? AND state = 'failed'",
        )
        .bind(replay_step(&job.action))
        .bind(deadline_micros)
        .bind(&job.id)
        .execute(&mut *tx)
        .await
        .op("replay job")?;
        record(
            &mut tx,
            AdminHistory {
                job_id: &job.id,
                from: ("failed", &job.step),
                to: ("queued", replay_step(&job.action)),
                attempt: job.step_attempts,
                actor,
                detail: format!("{} ({previous})", detail("replay", actor, reason)),
            },
        )
        .await?;
        tx.commit().await.op("commit replay")?;
        Ok(AdminOutcome::Replayed { job_id: job.id })
    }

    /// Cancels a job (see the module docs).
    pub async fn admin_cancel(
        &self,
        target: &AdminTarget,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<AdminOutcome> {
        let mut tx = self.pool().begin().await.op("begin cancel")?;
        let Some(job) = lock_job(&mut tx, target).await? else {
            tx.rollback().await.op("rollback cancel")?;
            return Ok(AdminOutcome::NotFound);
        };
        let refusal = match job.state.as_str() {
            "completed" | "failed" | "cancelled" => Some(format!("the job is already {}", job.state)),
            "rolling_back" => Some("the job is already rolling back".to_string()),
            _ if job.cancel_requested => Some("a cancel is already requested".to_string()),
            _ => None,
        };
        if let Some(why) = refusal {
            return refuse(tx, job, "cancel", actor, reason, why).await;
        }

        let text = detail("cancelled", actor, reason);
        if job.state == "queued" && !job.leased && !job.created_anything {
            // Nothing was created and no worker holds it: end it here, with its event.
            let event = Event {
                event_id: Uuid::new_v4(),
                event_type: EventType::Cancelled,
                occurred_at: Utc::now(),
                job_id: Uuid::parse_str(&job.id)
                    .map_err(|e| StoreError::Corrupt(format!("job id {}: {e}", job.id)))?,
                order_id: job.order_id.clone(),
                project_id: job.project_id.clone(),
                attempts: job.attempts,
                action: Some(job.action.clone()),
                target_order_id: job.target_order_id.clone().or_else(|| Some(job.order_id.clone())),
                server: None,
                port_id: None,
                volume: None,
                error: Some(EventError {
                    class: ErrorClass::Cancelled,
                    step: job.step.clone(),
                    message: text.clone(),
                }),
                traceparent: job.traceparent.clone(),
                drift: None,
                tenant: None,
                region: None,
            };
            let body =
                serde_json::to_string(&event).map_err(|e| StoreError::Corrupt(format!("event: {e}")))?;
            sqlx::query(
                "UPDATE jobs SET state = 'cancelled', step = 'cancelled', cancel_requested = 1, cancel_reason = ?, \
                 error_class = 'cancelled', error_step = ?, error_message = ?, lease_owner = NULL, \
                 lease_expires_at = NULL, fence = fence + 1, finished_at = NOW(6) WHERE id = ? AND state = 'queued'",
            )
            .bind(truncate(&text, 512))
            .bind(&job.step)
            .bind(&text)
            .bind(&job.id)
            .execute(&mut *tx)
            .await
            .op("cancel job")?;
            // The next job of its service (chained after this one) may run now.
            sqlx::query(
                "UPDATE jobs SET next_run_at = LEAST(next_run_at, NOW(6)) WHERE after_job_id = ? AND state = 'queued'",
            )
            .bind(&job.id)
            .execute(&mut *tx)
            .await
            .op("wake the next job")?;
            if job.action == "tenant_create" {
                // The onboarding never ran: the tenant is `failed` (not `provisioning` for ever),
                // unless another create of it is still to run; a new create order proceeds.
                let tenant: Option<String> = sqlx::query_scalar("SELECT tenant_ref FROM jobs WHERE id = ?")
                    .bind(&job.id)
                    .fetch_one(&mut *tx)
                    .await
                    .op("read the job's tenant")?;
                sqlx::query(
                    "UPDATE tenants t SET t.state = 'failed', t.updated_at = NOW(6) \
                     WHERE t.tenant_ref = ? AND t.state = 'provisioning' AND NOT EXISTS ( \
                       SELECT 1 FROM jobs o WHERE o.tenant_ref = t.tenant_ref AND o.action = 'tenant_create' \
                       AND o.id <> ? AND o.state NOT IN ('completed', 'failed', 'cancelled'))",
                )
                .bind(tenant)
                .bind(&job.id)
                .execute(&mut *tx)
                .await
                .op("fail the cancelled tenant")?;
            }
            sqlx::query("INSERT INTO outbox (event_id, job_id, routing_key, body) VALUES (?, ?, ?, ?)")
                .bind(event.event_id.to_string())
                .bind(&job.id)
                .bind(EventType::Cancelled.routing_key())
                .bind(body)
                .execute(&mut *tx)
                .await
                .op("write the cancelled event")?;
            record(
                &mut tx,
                AdminHistory {
                    job_id: &job.id,
                    from: ("queued", &job.step),
                    to: ("cancelled", "cancelled"),
                    attempt: job.step_attempts,
                    actor,
                    detail: text,
                },
            )
            .await?;
            tx.commit().await.op("commit cancel")?;
            return Ok(AdminOutcome::Cancelled { job_id: job.id });
        }

        // In progress: the engine rolls back what the job created. Make it due now, so that a
        // job waiting (for a server to boot, or for a retry) is taken up at once; a worker that
        // holds the lease sees the flag at its next claim.
        sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, cancel_reason = ?, next_run_at = LEAST(next_run_at, NOW(6)) \
             WHERE id = ?",
        )
        .bind(truncate(&text, 512))
        .bind(&job.id)
        .execute(&mut *tx)
        .await
        .op("request cancel")?;
        record(
            &mut tx,
            AdminHistory {
                job_id: &job.id,
                from: (&job.state, &job.step),
                to: (&job.state, &job.step),
                attempt: job.step_attempts,
                actor,
                detail: format!("{} (requested; the engine rolls back)", detail("cancel", actor, reason)),
            },
        )
        .await?;
        tx.commit().await.op("commit cancel request")?;
        Ok(AdminOutcome::CancelRequested { job_id: job.id })
    }
}

impl Store {
    /// Drops the database named by `settings` if it exists (the demo recreates its own database
    /// each run). The name must be free of backticks.
    pub async fn drop_database(settings: &crate::config::DatabaseSettings) -> Result<()> {
        use sqlx::Connection as _;
        let url = settings.url.expose();
        let Some(name) = crate::config::database_name(url) else { return Ok(()) };
        if name.contains('`') {
            return Err(StoreError::Corrupt(format!("database name {name:?} contains a backtick")));
        }
        let (head, tail) = url.split_once("://").unwrap_or(("mysql", url));
        let (authority, path) = tail.split_once('/').unwrap_or((tail, ""));
        let query = path.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
        let server: sqlx::mysql::MySqlConnectOptions = format!("{head}://{authority}/{query}")
            .parse()
            .map_err(|source| StoreError::Db { op: "parse database URL", source })?;
        let mut conn =
            sqlx::MySqlConnection::connect_with(&server).await.op("connect to drop the database")?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
            .execute(&mut conn)
            .await
            .op("drop database")?;
        let _ = conn.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::detail;

    #[test]
    fn details_name_the_actor_and_the_reason() {
        assert_eq!(detail("replay", "ops-alice", Some("quota raised")), "replay by ops-alice: quota raised");
        assert_eq!(detail("cancel", "ops-bob", Some("  ")), "cancel by ops-bob");
        assert_eq!(detail("cancel", "ops-bob", None), "cancel by ops-bob");
    }
}
