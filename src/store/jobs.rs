//! Jobs as the engine sees them: claims under a lease, lease renewal, and fenced saves.
//!
//! A worker claims due jobs with `SELECT ... FOR UPDATE SKIP LOCKED` and, in the same
//! transaction, writes itself as the lease owner and increments the job's `fence`. Every later
//! write of that job is a compare-and-set `WHERE id = ? AND fence = ?`: zero rows matched means
//! another worker claimed the job since (our lease expired), and the write is refused with
//! [`SaveError::LeaseLost`]. A claim of a job whose previous lease was never released (its
//! worker died in the middle of a step) increments `crashes`, which the engine caps.
//!
//! A save is the job row, one history row and, when the job ends, its completion event in the
//! outbox, all in one transaction. [`Committer`] gathers the saves of many jobs into one
//! transaction every few milliseconds (group commit): a commit costs a log flush, so batching is
//! what lets one worker reach hundreds of jobs per second.
//!
//! Times that compare across workers (due-ness, lease expiry) are the database's `NOW(6)`, so
//! clock skew between workers does not matter; saves carry a delay, not an absolute time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{MySql, QueryBuilder, Row};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::tenants::{TenantRow, TenantSave};
use super::{Op, Result, Store, StoreError};

/// Where a job is in its life. Final states are never left (replay is an operator's action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    InProgress,
    RollingBack,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::InProgress => "in_progress",
            JobState::RollingBack => "rolling_back",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        Some(match s {
            "queued" => JobState::Queued,
            "in_progress" => JobState::InProgress,
            "rolling_back" => JobState::RollingBack,
            "completed" => JobState::Completed,
            "failed" => JobState::Failed,
            "cancelled" => JobState::Cancelled,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, JobState::Completed | JobState::Failed | JobState::Cancelled)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A job row as claimed: everything the engine needs to run its current step.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: Uuid,
    pub order_id: String,
    pub project_id: String,
    pub kind: String,
    /// What billing asked for: `create`, `suspend`, ...
    pub action: String,
    /// The service the job acts on (the create order's id).
    pub target_order_id: Option<String>,
    pub order_body: String,
    pub state: JobState,
    pub step: String,
    pub step_attempts: u32,
    pub attempts: u32,
    pub deadline_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    /// The fence of our lease: every save must carry it.
    pub fence: u64,
    pub crashes: u32,
    pub intent: Option<String>,
    pub port_id: Option<String>,
    pub server_id: Option<String>,
    pub volume_id: Option<String>,
    pub data: Option<String>,
    pub error_class: Option<String>,
    pub error_step: Option<String>,
    pub error_message: Option<String>,
    pub cancel_requested: bool,
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The service an action acts on, read with the claim (None for a create: it makes it).
    pub service: Option<ServiceRow>,
    /// W3C trace context stored at intake: the parent of every span of the job.
    pub traceparent: Option<String>,
    /// The tenant a tenant job acts on, or that a create names (read with the claim).
    pub tenant: Option<TenantRow>,
}

/// A service as an action job sees it when claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub target_order_id: String,
    pub create_job_id: String,
    /// provisioning | active | suspended | resizing | terminating | terminated | failed
    pub state: String,
    /// What the service has in the cloud: the service's ids, or while it has none (its create
    /// did not complete) the ids its create job recorded.
    pub server_id: Option<String>,
    pub port_id: Option<String>,
    pub volume_id: Option<String>,
    pub flavor: Option<String>,
    pub flavor_id: Option<String>,
    /// The create order's body (the server's name and what was ordered).
    pub create_order_body: Option<String>,
    /// The volume the server boots from (an order's `server.boot_volume`; Nova made it).
    pub boot_volume_id: Option<String>,
}

const JOB_COLUMNS: &str = "j.id, j.order_id, j.project_id, j.kind, j.action, j.target_order_id, j.order_body, \
     j.state, j.step, j.step_attempts, j.attempts, j.deadline_at, j.lease_owner, j.fence, j.crashes, j.intent, \
     j.port_id, j.server_id, j.volume_id, j.data, j.error_class, j.error_step, j.error_message, \
     j.cancel_requested, j.cancel_reason, j.created_at, j.traceparent, \
     s.target_order_id AS s_target, s.create_job_id AS s_create_job_id, s.state AS s_state, \
     COALESCE(s.server_id, c.server_id) AS s_server_id, COALESCE(s.port_id, c.port_id) AS s_port_id, \
     COALESCE(s.volume_id, c.volume_id) AS s_volume_id, s.flavor AS s_flavor, s.flavor_id AS s_flavor_id, \
     c.order_body AS s_create_order_body, s.boot_volume_id AS s_boot_volume_id, \
     t.tenant_ref AS t_ref, t.project_id AS t_project_id, t.domain_id AS t_domain_id, t.user_id AS t_user_id, \
     t.state AS t_state, t.quotas AS t_quotas";

/// The jobs with their service (an action's), for [`JOB_COLUMNS`].
const JOB_FROM: &str = "FROM jobs j \
     LEFT JOIN services s ON j.action <> 'create' AND s.target_order_id = j.target_order_id \
     LEFT JOIN jobs c ON c.id = s.create_job_id \
     LEFT JOIN tenants t ON t.tenant_ref = j.tenant_ref";

/// The states a job never leaves (replay aside).
pub const FINAL_STATES_SQL: &str = "('completed', 'failed', 'cancelled')";

fn job_from_row(row: &sqlx::mysql::MySqlRow) -> Result<JobRow> {
    let id: String = row.try_get("id").op("read job")?;
    let state: String = row.try_get("state").op("read job")?;
    Ok(JobRow {
        id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(format!("job id {id:?}: {e}")))?,
        order_id: row.try_get("order_id").op("read job")?,
        project_id: row.try_get("project_id").op("read job")?,
        kind: row.try_get("kind").op("read job")?,
        action: row.try_get("action").op("read job")?,
        target_order_id: row.try_get("target_order_id").op("read job")?,
        order_body: row.try_get("order_body").op("read job")?,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("job {id}: unknown state {state:?}")))?,
        step: row.try_get("step").op("read job")?,
        step_attempts: row.try_get("step_attempts").op("read job")?,
        attempts: row.try_get("attempts").op("read job")?,
        deadline_at: row.try_get("deadline_at").op("read job")?,
        lease_owner: row.try_get("lease_owner").op("read job")?,
        fence: row.try_get("fence").op("read job")?,
        crashes: row.try_get("crashes").op("read job")?,
        intent: row.try_get("intent").op("read job")?,
        port_id: row.try_get("port_id").op("read job")?,
        server_id: row.try_get("server_id").op("read job")?,
        volume_id: row.try_get("volume_id").op("read job")?,
        data: row.try_get("data").op("read job")?,
        error_class: row.try_get("error_class").op("read job")?,
        error_step: row.try_get("error_step").op("read job")?,
        error_message: row.try_get("error_message").op("read job")?,
        cancel_requested: row.try_get::<i8, _>("cancel_requested").op("read job")? != 0,
        cancel_reason: row.try_get("cancel_reason").op("read job")?,
        created_at: row.try_get("created_at").op("read job")?,
        service: match row.try_get::<Option<String>, _>("s_target").op("read job")? {
            None => None,
            Some(target_order_id) => Some(ServiceRow {
                target_order_id,
                create_job_id: row.try_get("s_create_job_id").op("read job")?,
                state: row.try_get("s_state").op("read job")?,
                server_id: row.try_get("s_server_id").op("read job")?,
                port_id: row.try_get("s_port_id").op("read job")?,
                volume_id: row.try_get("s_volume_id").op("read job")?,
                flavor: row.try_get("s_flavor").op("read job")?,
                flavor_id: row.try_get("s_flavor_id").op("read job")?,
                create_order_body: row.try_get("s_create_order_body").op("read job")?,
                boot_volume_id: row.try_get("s_boot_volume_id").op("read job")?,
            }),
        },
        traceparent: row.try_get("traceparent").op("read job")?,
        tenant: match row.try_get::<Option<String>, _>("t_ref").op("read job")? {
            None => None,
            Some(tenant_ref) => Some(TenantRow {
                tenant_ref,
                project_id: row.try_get("t_project_id").op("read job")?,
                domain_id: row.try_get("t_domain_id").op("read job")?,
                user_id: row.try_get("t_user_id").op("read job")?,
                state: row.try_get("t_state").op("read job")?,
                quotas: row.try_get("t_quotas").op("read job")?,
            }),
        },
    })
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

/// The new state of a claimed job, written with a compare-and-set on its fence.
#[derive(Debug, Clone)]
pub struct JobSave {
    pub id: Uuid,
    /// The fence of the lease this save was made under.
    pub fence: u64,
    pub state: JobState,
    pub step: String,
    pub step_attempts: u32,
    pub attempts: u32,
    /// The job is due again this long after the commit (for a wait or a retry).
    pub run_after: Duration,
    pub deadline_at: Option<DateTime<Utc>>,
    pub crashes: u32,
    pub intent: Option<String>,
    pub port_id: Option<String>,
    pub server_id: Option<String>,
    pub volume_id: Option<String>,
    pub data: Option<String>,
    pub error_class: Option<String>,
    pub error_step: Option<String>,
    pub error_message: Option<String>,
    /// Give the lease up (a wait, a retry later, an end); otherwise the lease is extended by
    /// `lease` from the commit.
    pub release: bool,
    pub lease: Duration,
    pub history: History,
    /// The completion event, when the job ends.
    pub event: Option<OutboxEvent>,
    /// What the transition changes on the job's service, written with it.
    pub service: Option<ServiceSave>,
    /// What the transition changes on the job's tenant, written with it.
    pub tenant: Option<TenantSave>,
}

/// A change of a service, written in the same transaction as the job save that makes it (and
/// only if that save's fence held). `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSave {
    pub target_order_id: String,
    pub state: Option<String>,
    /// server, port, volume
    pub ids: Option<(Option<String>, Option<String>, Option<String>)>,
    /// Nova's name and id of the flavor.
    pub flavor: Option<(String, String)>,
    pub last_action_order_id: Option<String>,
    /// The boot volume (set with the create's ids; `None` leaves it).
    pub boot_volume_id: Option<String>,
}

/// One row of `job_history`: the transition a save makes.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub from_state: Option<JobState>,
    pub from_step: Option<String>,
    pub attempt: u32,
    pub duration_ms: Option<u64>,
    pub actor: Option<String>,
    pub detail: Option<String>,
}

/// A completion event to relay, written in the same transaction as the final state.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub event_id: Uuid,
    pub routing_key: String,
    pub body: String,
}

/// Why a save was not written.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// Another worker claimed the job since our claim: we must not write it any more.
    #[error("lease lost: another worker owns the job now")]
    LeaseLost,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The group transaction this save was part of failed (nothing of it was written).
    #[error("group commit failed: {0}")]
    Commit(String),
    /// The committer task is gone (the worker is shutting down).
    #[error("the committer has stopped")]
    Stopped,
}

impl Store {
    /// Claims up to `limit` due jobs for `owner` (see the module docs): in one transaction, the
    /// due rows are locked with `SKIP LOCKED`, leased, and their fence incremented; the rows are
    /// returned with the new fence.
    pub async fn claim_due(&self, owner: &str, lease: Duration, limit: usize) -> Result<Vec<JobRow>> {
        let mut tx = self.pool().begin().await.op("begin claim")?;
        // A job chained after another one of its service (`after_job_id`) waits until that one
        // is final: the jobs of one service run one at a time, in the order intake committed them.
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT j.id FROM jobs j \
             WHERE j.state IN ('queued', 'in_progress', 'rolling_back') AND j.next_run_at <= NOW(6) \
               AND (j.lease_expires_at IS NULL OR j.lease_expires_at < NOW(6)) \
               AND (j.after_job_id IS NULL OR EXISTS (SELECT 1 FROM jobs p WHERE p.id = j.after_job_id \
                    AND p.state IN ('completed', 'failed', 'cancelled'))) \
             ORDER BY j.next_run_at LIMIT ? FOR UPDATE SKIP LOCKED",
        )
        .bind(limit as u64)
        .fetch_all(&mut *tx)
        .await
        .op("select due jobs")?;
        if ids.is_empty() {
            tx.commit().await.op("commit claim")?;
            return Ok(Vec::new());
        }
        let mut update: QueryBuilder<MySql> = QueryBuilder::new(
            "UPDATE jobs SET crashes = crashes + IF(lease_owner IS NULL, 0, 1), fence = fence + 1, \
             lease_expires_at = NOW(6) + INTERVAL ",
        );
        update.push_bind(micros(lease)).push(" MICROSECOND, lease_owner = ").push_bind(owner);
        update.push(" WHERE id IN (");
        let mut list = update.separated(", ");
        for id in &ids {
            list.push_bind(id.as_str());
        }
        update.push(")");
        update.build().execute(&mut *tx).await.op("lease due jobs")?;
        let rows = select_jobs(&mut tx, &ids).await?;
        tx.commit().await.op("commit claim")?;
        Ok(rows)
    }

    /// Claims exactly these jobs, each only if its fence is still the one given and nobody holds
    /// a lease on it (the poller uses it to take up a job whose wait is over). Returns the jobs
    /// claimed, with their new fence; the others were taken by someone else.
    pub async fn claim_exact(
        &self,
        owner: &str,
        lease: Duration,
        jobs: &[(Uuid, u64)],
    ) -> Result<Vec<JobRow>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool().begin().await.op("begin claim")?;
        // Lock exactly the rows still claimable at the fence we knew, as `claim_due` does. The
        // ids come from this SELECT, not from the UPDATE's outcome: a job this same worker claimed
        // meanwhile by another path (its recheck came due) has the same owner and fence + 1, and
        // must not be driven a second time under that fence.
        let mut select: QueryBuilder<MySql> = QueryBuilder::new(
            "SELECT id FROM jobs WHERE state IN ('queued', 'in_progress', 'rolling_back') \
             AND (lease_expires_at IS NULL OR lease_expires_at < NOW(6)) AND (",
        );
        for (i, (id, fence)) in jobs.iter().enumerate() {
            if i > 0 {
                select.push(" OR ");
            }
            select.push("(id = ").push_bind(id.to_string()).push(" AND fence = ").push_bind(*fence).push(")");
        }
        select.push(") FOR UPDATE SKIP LOCKED");
        let ids: Vec<String> =
            select.build_query_scalar().fetch_all(&mut *tx).await.op("lock settled jobs")?;
        if ids.is_empty() {
            tx.commit().await.op("commit claim")?;
            return Ok(Vec::new());
        }
        let mut update: QueryBuilder<MySql> =
            QueryBuilder::new("UPDATE jobs SET fence = fence + 1, lease_expires_at = NOW(6) + INTERVAL ");
        update.push_bind(micros(lease)).push(" MICROSECOND, lease_owner = ").push_bind(owner);
        update.push(" WHERE id IN (");
        let mut list = update.separated(", ");
        for id in &ids {
            list.push_bind(id.as_str());
        }
        update.push(")");
        update.build().execute(&mut *tx).await.op("lease jobs")?;
        let rows = select_jobs(&mut tx, &ids).await?;
        tx.commit().await.op("commit claim")?;
        Ok(rows)
    }

    /// Extends the leases `owner` holds on these jobs (the lease keeper, for steps that run
    /// long). Returns how many leases were extended; a lease lost meanwhile shows at its next save.
    pub async fn renew_leases(&self, owner: &str, lease: Duration, jobs: &[(Uuid, u64)]) -> Result<u64> {
        if jobs.is_empty() {
            return Ok(0);
        }
        let mut update: QueryBuilder<MySql> =
            QueryBuilder::new("UPDATE jobs SET lease_expires_at = NOW(6) + INTERVAL ");
        update.push_bind(micros(lease)).push(" MICROSECOND WHERE lease_owner = ").push_bind(owner);
        update.push(" AND (");
        for (i, (id, fence)) in jobs.iter().enumerate() {
            if i > 0 {
                update.push(" OR ");
            }
            update.push("(id = ").push_bind(id.to_string()).push(" AND fence = ").push_bind(*fence).push(")");
        }
        update.push(")");
        let done = update.build().execute(self.pool()).await.op("renew leases")?;
        Ok(done.rows_affected())
    }

    /// Gives up the lease on a job without changing anything else (shutdown), fenced.
    pub async fn release_lease(&self, id: Uuid, fence: u64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND fence = ?",
        )
        .bind(id.to_string())
        .bind(fence)
        .execute(self.pool())
        .await
        .op("release lease")?;
        Ok(done.rows_affected() == 1)
    }

    /// Pushes back the jobs that are due but wait for an earlier job of their service, so the
    /// claim query does not scan them on every round; the final save of that earlier job makes
    /// them due at once (see [`Store::save_batch`]), this only bounds the scanning.
    pub async fn snooze_blocked(&self, by: Duration) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE jobs j JOIN jobs p ON p.id = j.after_job_id \
             SET j.next_run_at = NOW(6) + INTERVAL ? MICROSECOND \
             WHERE j.state = 'queued' AND j.next_run_at <= NOW(6) \
               AND p.state IN ('queued', 'in_progress', 'rolling_back')",
        )
        .bind(micros(by))
        .execute(self.pool())
        .await
        .op("snooze blocked jobs")?;
        Ok(done.rows_affected())
    }

    /// One job by id (tests and the engine's takeover path).
    pub async fn job(&self, id: Uuid) -> Result<Option<JobRow>> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {JOB_COLUMNS} {JOB_FROM} WHERE j.id = ?")))
            .bind(id.to_string())
            .fetch_optional(self.pool())
            .await
            .op("select job")?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Writes one save in its own transaction (the committer batches instead).
    pub async fn save_job(&self, save: &JobSave) -> Result<(), SaveError> {
        let results = self.save_batch(std::slice::from_ref(save)).await?;
        results.into_iter().next().unwrap_or(Err(SaveError::LeaseLost))
    }

    /// Writes many saves in one transaction: each job row with a compare-and-set on its fence;
    /// history and outbox rows only for the saves whose row was written. The outer error is a
    /// failure of the whole transaction (nothing written); the inner results are per save.
    pub async fn save_batch(&self, saves: &[JobSave]) -> Result<Vec<Result<(), SaveError>>> {
        let mut tx = self.pool().begin().await.op("begin save")?;
        let mut results = Vec::with_capacity(saves.len());
        for s in saves {
            let done = sqlx::query(
                "UPDATE jobs SET state = ?, step = ?, step_attempts = ?, attempts = ?, \
                 next_run_at = NOW(6) + INTERVAL ? MICROSECOND, deadline_at = ?, crashes = ?, intent = ?, \
                 port_id = ?, server_id = ?, volume_id = ?, data = ?, error_class = ?, error_step = ?, \
                 error_message = ?, \
                 lease_owner = IF(?, NULL, lease_owner), \
                 lease_expires_at = IF(?, NULL, NOW(6) + INTERVAL ? MICROSECOND), \
                 finished_at = IF(?, NOW(6), NULL), updated_at = NOW(6) \
                 WHERE id = ? AND fence = ?",
            )
            .bind(s.state.as_str())
            .bind(&s.step)
            .bind(s.step_attempts)
            .bind(s.attempts)
            .bind(micros(s.run_after))
            .bind(s.deadline_at)
            .bind(s.crashes)
            .bind(&s.intent)
            .bind(&s.port_id)
            .bind(&s.server_id)
            .bind(&s.volume_id)
            .bind(&s.data)
            .bind(&s.error_class)
            .bind(&s.error_step)
            .bind(&s.error_message)
            .bind(s.release)
            .bind(s.release)
            .bind(micros(s.lease))
            .bind(s.state.is_final())
            .bind(s.id.to_string())
            .bind(s.fence)
            .execute(&mut *tx)
            .await
            .op("save job")?;
            results.push(if done.rows_affected() == 1 { Ok(()) } else { Err(SaveError::LeaseLost) });
        }
        let written: Vec<&JobSave> =
            saves.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(s, _)| s).collect();
        if !written.is_empty() {
            let mut insert: QueryBuilder<MySql> = QueryBuilder::new(
                "INSERT INTO job_history \
                 (job_id, from_state, to_state, from_step, to_step, attempt, duration_ms, actor, detail) ",
            );
            insert.push_values(&written, |mut b, s| {
                let h = &s.history;
                b.push_bind(s.id.to_string())
                    .push_bind(h.from_state.map(JobState::as_str))
                    .push_bind(s.state.as_str())
                    .push_bind(h.from_step.clone())
                    .push_bind(s.step.clone())
                    .push_bind(h.attempt)
                    .push_bind(h.duration_ms)
                    .push_bind(h.actor.clone())
                    .push_bind(h.detail.clone());
            });
            insert.build().execute(&mut *tx).await.op("insert history")?;
            for save in &written {
                if let Some(service) = &save.service {
                    save_service(&mut tx, service).await?;
                }
                if let Some(tenant) = &save.tenant {
                    super::tenants::save_tenant(&mut tx, save.id, tenant).await?;
                }
            }
            // The next job of a service waits for this one to be final: make it due now.
            let ended: Vec<&JobSave> = written.iter().copied().filter(|s| s.state.is_final()).collect();
            if !ended.is_empty() {
                let mut wake: QueryBuilder<MySql> = QueryBuilder::new(
                    "UPDATE jobs SET next_run_at = LEAST(next_run_at, NOW(6)) WHERE state = 'queued' \
                     AND after_job_id IN (",
                );
                let mut list = wake.separated(", ");
                for s in &ended {
                    list.push_bind(s.id.to_string());
                }
                wake.push(")");
                wake.build().execute(&mut *tx).await.op("wake the next jobs")?;
            }
            let events: Vec<(&JobSave, &OutboxEvent)> =
                written.iter().filter_map(|s| s.event.as_ref().map(|e| (*s, e))).collect();
            if !events.is_empty() {
                let mut insert: QueryBuilder<MySql> =
                    // IGNORE: a save retried after a commit whose answer was lost carries the same event
                    // id; the event is already there, and one duplicate must not fail the group.
                    QueryBuilder::new("INSERT IGNORE INTO outbox (event_id, job_id, routing_key, body) ");
                insert.push_values(&events, |mut b, (s, e)| {
                    b.push_bind(e.event_id.to_string())
                        .push_bind(s.id.to_string())
                        .push_bind(e.routing_key.clone())
                        .push_bind(e.body.clone());
                });
                insert.build().execute(&mut *tx).await.op("insert outbox")?;
            }
        }
        tx.commit().await.op("commit save")?;
        Ok(results)
    }

    /// History of one job, oldest first: (from_state, to_state, from_step, to_step, attempt, detail).
    pub async fn history_of(&self, id: Uuid) -> Result<Vec<HistoryRow>> {
        let rows = sqlx::query(
            "SELECT from_state, to_state, from_step, to_step, attempt, duration_ms, actor, detail \
             FROM job_history WHERE job_id = ? ORDER BY id",
        )
        .bind(id.to_string())
        .fetch_all(self.pool())
        .await
        .op("select history")?;
        rows.iter()
            .map(|r| {
                Ok(HistoryRow {
                    from_state: r.try_get("from_state").op("read history")?,
                    to_state: r.try_get("to_state").op("read history")?,
                    from_step: r.try_get("from_step").op("read history")?,
                    to_step: r.try_get("to_step").op("read history")?,
                    attempt: r.try_get("attempt").op("read history")?,
                    duration_ms: r.try_get("duration_ms").op("read history")?,
                    actor: r.try_get("actor").op("read history")?,
                    detail: r.try_get("detail").op("read history")?,
                })
            })
            .collect()
    }

    /// Counts of jobs per state (tests, bench).
    pub async fn count_jobs_by_state(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(self.pool())
            .await
            .op("count jobs")?;
        rows.iter()
            .map(|r| Ok((r.try_get("state").op("read count")?, r.try_get("n").op("read count")?)))
            .collect()
    }
}

/// One row of a job's history, as read back.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub from_state: Option<String>,
    pub to_state: String,
    pub from_step: Option<String>,
    pub to_step: String,
    pub attempt: u32,
    pub duration_ms: Option<u64>,
    pub actor: Option<String>,
    pub detail: Option<String>,
}

/// Writes one service change (see [`ServiceSave`]).
async fn save_service(tx: &mut sqlx::Transaction<'_, MySql>, s: &ServiceSave) -> Result<()> {
    let mut q: QueryBuilder<MySql> = QueryBuilder::new("UPDATE services SET updated_at = NOW(6)");
    if let Some(state) = &s.state {
        q.push(", state = ").push_bind(state.clone());
    }
    if let Some((server, port, volume)) = &s.ids {
        q.push(", server_id = ").push_bind(server.clone());
        q.push(", port_id = ").push_bind(port.clone());
        q.push(", volume_id = ").push_bind(volume.clone());
    }
    if let Some(boot) = &s.boot_volume_id {
        q.push(", boot_volume_id = ").push_bind(boot.clone());
    }
    if let Some((name, id)) = &s.flavor {
        q.push(", flavor = ").push_bind(name.clone());
        q.push(", flavor_id = ").push_bind(id.clone());
    }
    if let Some(order) = &s.last_action_order_id {
        q.push(", last_action_order_id = ").push_bind(order.clone());
    }
    q.push(" WHERE target_order_id = ").push_bind(s.target_order_id.clone());
    q.build().execute(&mut **tx).await.op("save service")?;
    Ok(())
}

async fn select_jobs(tx: &mut sqlx::Transaction<'_, MySql>, ids: &[String]) -> Result<Vec<JobRow>> {
    let mut select: QueryBuilder<MySql> =
        QueryBuilder::new(format!("SELECT {JOB_COLUMNS} {JOB_FROM} WHERE j.id IN ("));
    let mut list = select.separated(", ");
    for id in ids {
        list.push_bind(id.as_str());
    }
    select.push(")");
    let rows = select.build().fetch_all(&mut **tx).await.op("select claimed jobs")?;
    rows.iter().map(job_from_row).collect()
}

/// Most saves gathered into one transaction.
const MAX_GROUP: usize = 512;

struct Pending {
    save: JobSave,
    reply: oneshot::Sender<Result<(), SaveError>>,
}

/// Group commit: saves sent from many job tasks are written together, one transaction per
/// round (whatever arrived while the previous round was committing). Cheap to clone.
#[derive(Clone, Debug)]
pub struct Committer {
    /// One channel per committer task; a job always goes to the same one (by its id), so its
    /// saves stay in order, while two transactions can be in flight at once (one waits for its
    /// log flush while the other is built).
    lanes: Vec<mpsc::UnboundedSender<Pending>>,
}

/// Committer tasks running side by side.
const LANES: usize = 2;

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending").field("job", &self.save.id).finish()
    }
}

impl Committer {
    /// Starts the committer task; it runs until every [`Committer`] clone is dropped. `on_event`
    /// is called after a commit that wrote at least one outbox row (it wakes the relay).
    pub fn start(store: Store, on_event: impl Fn() + Send + Sync + 'static) -> Committer {
        let on_event = std::sync::Arc::new(on_event);
        let lanes = (0..LANES)
            .map(|_| {
                let (tx, rx) = mpsc::unbounded_channel::<Pending>();
                let on_event = on_event.clone();
                tokio::spawn(Self::lane(store.clone(), rx, move || on_event()));
                tx
            })
            .collect();
        Committer { lanes }
    }

    async fn lane(store: Store, mut rx: mpsc::UnboundedReceiver<Pending>, on_event: impl Fn()) {
        let mut batch: Vec<Pending> = Vec::new();
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let saves: Vec<JobSave> = batch.iter().map(|p| p.save.clone()).collect();
            let had_event = saves.iter().any(|s| s.event.is_some());
            let mut outcome = store.save_batch(&saves).await;
            // A deadlock or a lost connection aborts the whole transaction; try again once,
            // then each save on its own, so that one bad save cannot fail the whole group.
            if outcome.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                outcome = store.save_batch(&saves).await;
            }
            if outcome.is_err() && saves.len() > 1 {
                let mut each = Vec::with_capacity(saves.len());
                for s in &saves {
                    each.push(match store.save_batch(std::slice::from_ref(s)).await {
                        Ok(mut r) => r.pop().unwrap_or(Err(SaveError::LeaseLost)),
                        Err(e) => Err(SaveError::Commit(e.to_string())),
                    });
                }
                outcome = Ok(each);
            }
            crate::metrics::inc(crate::metrics::ENGINE_COMMITS, &[]);
            match outcome {
                Ok(results) => {
                    let wrote_event =
                        had_event && results.iter().zip(&saves).any(|(r, s)| r.is_ok() && s.event.is_some());
                    for (p, r) in batch.drain(..).zip(results) {
                        let _ = p.reply.send(r);
                    }
                    if wrote_event {
                        on_event();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, saves = batch.len(), "group commit failed");
                    let msg = e.to_string();
                    for p in batch.drain(..) {
                        let _ = p.reply.send(Err(SaveError::Commit(msg.clone())));
                    }
                }
            }
        }
    }

    /// Writes `save` with the next group; resolves when it is committed (or refused).
    pub async fn save(&self, save: JobSave) -> Result<(), SaveError> {
        let (reply, answer) = oneshot::channel();
        let lane = &self.lanes[(save.id.as_u128() % self.lanes.len() as u128) as usize];
        lane.send(Pending { save, reply }).map_err(|_| SaveError::Stopped)?;
        answer.await.map_err(|_| SaveError::Stopped)?
    }
}
