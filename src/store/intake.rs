//! Intake's side of the store: one multi-row, idempotent insert per batch of orders.
//!
//! The intake consumer (`amqp::intake`) hands over a batch of validated orders; this module
//! writes them in ONE statement and ONE transaction:
//! `INSERT INTO jobs (...) VALUES (...),(...) ON DUPLICATE KEY UPDATE resends = resends + 1`.
//! An order whose `order_id` already has a job makes no second job; it only bumps `resends`.
//!
//! How duplicates are found without a read per order: MySQL/MariaDB report 1 affected row per
//! inserted row and 2 per row updated by `ON DUPLICATE KEY UPDATE`. So when the affected rows
//! equal the batch length there was no duplicate (the fast path, one round trip). Otherwise,
//! still inside the transaction, `SELECT ... WHERE resends > 0 AND order_id IN (...)` returns
//! exactly the duplicates of this batch: the rows this statement inserted are locked by it and
//! have `resends = 0`, and every pre-existing row it touched was just incremented. Their stored
//! digests are returned so that the caller can warn when a resend differs from the original.
//!
//! Intake writes no `job_history` row: the job's creation time is `jobs.created_at`, and the
//! first history row is the engine's first transition. A history insert per order costs about a
//! fifth of intake throughput (measured), which misses the throughput target of issue 2.
//!
//! Rows are sorted by `order_id` before the insert so that two workers inserting overlapping
//! batches lock the unique index in the same order (no deadlock between them); a deadlock or any
//! other error rolls the whole batch back, and the caller retries it.
//!
//! Each create also makes its **service** row (the service is what the create order makes; later
//! orders name it by the create's `order_id`). Actions (suspend, unsuspend, resize, terminate)
//! come after the creates of the same batch, in delivery order: their service rows are locked
//! (`FOR UPDATE`, in key order), and each action is chained after the newest job of its service
//! (`after_job_id`; the claim query runs a chained job only once that one is final), which runs
//! one service's jobs one at a time in the order intake committed them, across workers. A
//! terminate asks every job of its service that is queued or running to cancel (a create in
//! progress rolls back), and an action committed after a terminate is queued already cancelled.
//! Actions are few next to creates, so they take a few statements more; creates keep the one
//! multi-row insert.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sqlx::{MySql, QueryBuilder, Row as _};

use super::{Op, Result, Store};

/// The state, kind and first step of a new create job.
pub const NEW_JOB_STATE: &str = "queued";
pub const NEW_JOB_KIND: &str = "create";
pub const FIRST_STEP: &str = "resolve";

/// How long after its commit a job chained behind a running one is first looked at (the final
/// save of the one before makes it due at once; this is only the safety net).
pub const BLOCKED_RECHECK: Duration = Duration::from_secs(5);

/// One validated order, ready to become a job.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: uuid::Uuid,
    pub order_id: String,
    /// The customer's project; empty for an action (it is the service's).
    pub project_id: String,
    /// `create`, or the action (`suspend`, `unsuspend`, `resize`, `terminate`); also the job's
    /// kind (its list of steps) and first step `check` for an action.
    pub action: String,
    /// The service an action acts on: the create order's id. `None` for a create.
    pub target_order_id: Option<String>,
    /// The tenant a tenant order acts on, or that a create names instead of its project.
    pub tenant_ref: Option<String>,
    /// The validated order body (UTF-8 JSON, as received).
    pub order_body: String,
    /// SHA-256 (lowercase hex) of the raw body.
    pub order_digest: String,
    /// W3C trace context of the job (see `telemetry::trace`), if the order came with one or
    /// traces are on.
    pub traceparent: Option<String>,
}

impl NewJob {
    /// A create order's `region` (read from the validated body: the service records it).
    pub fn region(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct Region {
            region: Option<String>,
        }
        serde_json::from_str::<Region>(&self.order_body).ok().and_then(|r| r.region)
    }

    pub fn is_create(&self) -> bool {
        self.action == NEW_JOB_KIND
    }

    /// A tenant order (`tenant_create`, `tenant_update`, `tenant_close`).
    pub fn is_tenant(&self) -> bool {
        self.action.starts_with("tenant_")
    }
}

/// What [`Store::insert_jobs`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct InsertOutcome {
    /// New jobs created.
    pub inserted: usize,
    /// Orders of the batch that already had a job, with the digest stored for it.
    pub duplicates: HashMap<String, String>,
    /// Actions whose target service does not exist, and tenant updates, closes and creates
    /// naming a tenant that does not exist (nothing was written for them).
    pub unknown_targets: Vec<String>,
    /// Actions that were queued already cancelled: their service is being terminated.
    pub superseded: usize,
}

/// The first step of an action job.
pub const ACTION_FIRST_STEP: &str = "check";

/// A service row, locked for the insert of its actions.
struct LockedService {
    project_id: String,
    last_job_id: String,
    terminate_job_id: Option<String>,
    touched: bool,
}

impl Store {
    /// Inserts a batch of new jobs, idempotent on `order_id`, in one transaction.
    ///
    /// Creates first (each with its service row), then the actions in the order given (the
    /// order the broker delivered them): each is chained after the newest job of its service,
    /// so one service's jobs run one at a time in commit order; a terminate asks every job of
    /// its service still running or queued to cancel, and actions after a terminate are
    /// queued already cancelled. An action whose service is unknown is not written; it is
    /// returned in `unknown_targets` for the caller to hold back or dead-letter.
    ///
    /// `jobs` must not repeat an `order_id` (the caller dedupes the batch first). On error
    /// nothing was written and the whole batch may be retried.
    pub async fn insert_jobs(&self, jobs: &mut [NewJob]) -> Result<InsertOutcome> {
        if jobs.is_empty() {
            return Ok(InsertOutcome::default());
        }
        let mut tx = self.pool.begin().await.op("begin intake batch")?;
        let mut outcome = InsertOutcome::default();
        // Tenant orders first: a create naming a tenant onboarded in the same batch finds it.
        let (tenant_jobs, jobs): (Vec<&NewJob>, Vec<&NewJob>) = jobs.iter().partition(|j| j.is_tenant());
        if !tenant_jobs.is_empty() {
            super::tenants::insert_tenant_jobs(&mut tx, &tenant_jobs, &mut outcome).await?;
        }
        let (mut creates, actions): (Vec<&NewJob>, Vec<&NewJob>) =
            jobs.into_iter().partition(|j| j.is_create());
        let bindings = super::tenants::bind_creates(&mut tx, &mut creates, &mut outcome).await?;
        if !creates.is_empty() {
            insert_creates(&mut tx, &mut creates, &bindings, &mut outcome).await?;
        }
        if !actions.is_empty() {
            insert_actions(&mut tx, &actions, &mut outcome).await?;
        }
        tx.commit().await.op("commit intake batch")?;
        Ok(outcome)
    }

    /// Jobs in the store (tests and benchmarks count with it).
    pub async fn count_jobs(&self) -> Result<i64> {
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs").fetch_one(&self.pool).await.op("count jobs")
    }
}

/// The creates of a batch: one multi-row insert, and a service row for each new one.
async fn insert_creates(
    tx: &mut sqlx::Transaction<'_, MySql>,
    creates: &mut [&NewJob],
    bindings: &HashMap<String, super::tenants::Binding>,
    outcome: &mut InsertOutcome,
) -> Result<()> {
    creates.sort_by(|a, b| a.order_id.cmp(&b.order_id));
    let blocked_micros = BLOCKED_RECHECK.as_micros() as i64;
    let project = |job: &NewJob| -> String {
        bindings.get(&job.order_id).map(|b| b.project_id.clone()).unwrap_or_else(|| job.project_id.clone())
    };
    let mut insert: QueryBuilder<MySql> = QueryBuilder::new(
        "INSERT INTO jobs (id, order_id, project_id, kind, action, target_order_id, tenant_ref, after_job_id, \
         order_body, order_digest, state, step, cancel_requested, cancel_reason, next_run_at, traceparent) ",
    );
    insert.push_values(creates.iter(), |mut row, job| {
        // A create naming its tenant runs after the tenant's jobs committed before it.
        let b = bindings.get(&job.order_id);
        row.push_bind(job.id.to_string())
            .push_bind(&job.order_id)
            .push_bind(project(job))
            .push_bind(NEW_JOB_KIND)
            .push_bind(NEW_JOB_KIND)
            .push_bind(&job.order_id)
            .push_bind(&job.tenant_ref)
            .push_bind(b.and_then(|b| b.after.clone()))
            .push_bind(&job.order_body)
            .push_bind(&job.order_digest)
            .push_bind(NEW_JOB_STATE)
            .push_bind(FIRST_STEP)
            .push_bind(b.is_some_and(|b| b.cancel_reason.is_some()))
            .push_bind(b.and_then(|b| b.cancel_reason.clone()))
            .push("UTC_TIMESTAMP(6) + INTERVAL ")
            .push_bind_unseparated(if b.is_some_and(|b| b.blocked) { blocked_micros } else { 0 })
            .push_unseparated(" MICROSECOND")
            .push_bind(&job.traceparent);
    });
    insert.push(" ON DUPLICATE KEY UPDATE resends = resends + 1");
    let affected = insert.build().execute(&mut **tx).await.op("insert intake batch")?.rows_affected();
    let mut duplicates = HashMap::new();
    if affected as usize != creates.len() {
        let mut select: QueryBuilder<MySql> =
            QueryBuilder::new("SELECT order_id, order_digest FROM jobs WHERE resends > 0 AND order_id IN (");
        let mut ids = select.separated(", ");
        for job in creates.iter() {
            ids.push_bind(&job.order_id);
        }
        select.push(")");
        let rows: Vec<(String, String)> =
            select.build_query_as().fetch_all(&mut **tx).await.op("find intake duplicates")?;
        duplicates = rows.into_iter().collect();
    }
    let new: Vec<&&NewJob> = creates.iter().filter(|j| !duplicates.contains_key(&j.order_id)).collect();
    if !new.is_empty() {
        // IGNORE: a service row may exist already (a create replayed by hand); the job's wins.
        let mut insert: QueryBuilder<MySql> = QueryBuilder::new(
            "INSERT IGNORE INTO services (target_order_id, create_job_id, project_id, tenant_ref, region, state, \
             last_job_id) ",
        );
        insert.push_values(new.iter(), |mut row, job| {
            row.push_bind(&job.order_id)
                .push_bind(job.id.to_string())
                .push_bind(project(job))
                .push_bind(&job.tenant_ref)
                .push_bind(job.region())
                .push_bind("provisioning")
                .push_bind(job.id.to_string());
        });
        insert.build().execute(&mut **tx).await.op("insert services")?;
    }
    outcome.inserted += new.len();
    outcome.duplicates.extend(duplicates);
    Ok(())
}

/// The actions of a batch, in delivery order (see [`Store::insert_jobs`]).
async fn insert_actions(
    tx: &mut sqlx::Transaction<'_, MySql>,
    actions: &[&NewJob],
    outcome: &mut InsertOutcome,
) -> Result<()> {
    // Resends of actions that have a job already.
    let mut select: QueryBuilder<MySql> =
        QueryBuilder::new("SELECT order_id, order_digest FROM jobs WHERE order_id IN (");
    let mut ids = select.separated(", ");
    for job in actions {
        ids.push_bind(&job.order_id);
    }
    select.push(")");
    let existing: Vec<(String, String)> =
        select.build_query_as().fetch_all(&mut **tx).await.op("find intake duplicates")?;
    let existing: HashMap<String, String> = existing.into_iter().collect();
    if !existing.is_empty() {
        let mut bump: QueryBuilder<MySql> =
            QueryBuilder::new("UPDATE jobs SET resends = resends + 1 WHERE order_id IN (");
        let mut ids = bump.separated(", ");
        for id in existing.keys() {
            ids.push_bind(id.clone());
        }
        bump.push(")");
        bump.build().execute(&mut **tx).await.op("count resends")?;
    }
    let fresh: Vec<&NewJob> =
        actions.iter().copied().filter(|j| !existing.contains_key(&j.order_id)).collect();
    outcome.duplicates.extend(existing);
    if fresh.is_empty() {
        return Ok(());
    }

    // Lock the services (in key order, as every intake does: no deadlock between workers).
    let targets: HashSet<&str> = fresh.iter().filter_map(|j| j.target_order_id.as_deref()).collect();
    let mut select: QueryBuilder<MySql> = QueryBuilder::new(
        "SELECT target_order_id, project_id, last_job_id, terminate_job_id FROM services \
         WHERE target_order_id IN (",
    );
    let mut list = select.separated(", ");
    for t in &targets {
        list.push_bind(t.to_string());
    }
    select.push(") ORDER BY target_order_id FOR UPDATE");
    let rows = select.build().fetch_all(&mut **tx).await.op("lock services")?;
    let mut services: HashMap<String, LockedService> = HashMap::new();
    for r in &rows {
        services.insert(
            r.try_get("target_order_id").op("read service")?,
            LockedService {
                project_id: r.try_get("project_id").op("read service")?,
                last_job_id: r.try_get("last_job_id").op("read service")?,
                terminate_job_id: r.try_get("terminate_job_id").op("read service")?,
                touched: false,
            },
        );
    }
    // Whether the newest job of each service is final: a job chained after a running one is
    // first looked at a little later (its predecessor's end makes it due at once).
    let mut done: HashSet<String> = HashSet::new();
    if !services.is_empty() {
        let mut select: QueryBuilder<MySql> = QueryBuilder::new(
            "SELECT id FROM jobs WHERE state IN ('completed', 'failed', 'cancelled') AND id IN (",
        );
        let mut list = select.separated(", ");
        for s in services.values() {
            list.push_bind(s.last_job_id.clone());
        }
        select.push(")");
        let ids: Vec<String> =
            select.build_query_scalar().fetch_all(&mut **tx).await.op("read predecessors")?;
        done.extend(ids);
    }

    let mut rows: Vec<ChainedRow> = Vec::with_capacity(fresh.len());
    // Services whose running and queued jobs a terminate of this batch cancels.
    let mut terminated: Vec<(String, String, String)> = Vec::new();
    for job in fresh {
        let Some(target) = job.target_order_id.as_deref() else { continue };
        let Some(service) = services.get_mut(target) else {
            outcome.unknown_targets.push(job.order_id.clone());
            continue;
        };
        let is_terminate = job.action == "terminate";
        if let (Some(t), false) = (&service.terminate_job_id, is_terminate) {
            // Nothing but another terminate runs after a terminate.
            outcome.superseded += 1;
            rows.push(ChainedRow {
                job,
                project_id: service.project_id.clone(),
                after: None,
                blocked: false,
                cancel_reason: Some(format!("superseded: the service is terminated (job {t})")),
            });
            continue;
        }
        let id = job.id.to_string();
        let after = service.last_job_id.clone();
        let blocked = !done.contains(&after);
        if is_terminate && service.terminate_job_id.is_none() {
            terminated.push((target.to_string(), id.clone(), job.order_id.clone()));
            service.terminate_job_id = Some(id.clone());
            // The actions of this batch queued before the terminate are superseded too.
            for row in rows.iter_mut().filter(|r| r.job.target_order_id.as_deref() == Some(target)) {
                if row.cancel_reason.is_none() {
                    row.cancel_reason = Some(format!("superseded by terminate {}", job.order_id));
                    outcome.superseded += 1;
                }
            }
        }
        service.last_job_id = id;
        service.touched = true;
        rows.push(ChainedRow {
            job,
            project_id: service.project_id.clone(),
            after: Some(after),
            blocked,
            cancel_reason: None,
        });
    }

    // A terminate supersedes what is queued or running on its service: those jobs end
    // `cancelled` (a create in progress rolls back what it made), and the terminate runs after.
    for (target, _, order) in &terminated {
        sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, cancel_reason = ?, next_run_at = LEAST(next_run_at, NOW(6)) \
             WHERE target_order_id = ? AND state IN ('queued', 'in_progress') AND cancel_requested = 0",
        )
        .bind(format!("superseded by terminate {order}"))
        .bind(target)
        .execute(&mut **tx)
        .await
        .op("supersede jobs")?;
    }

    outcome.inserted += insert_chained(tx, &rows, Chain::Service, ACTION_FIRST_STEP).await?;
    for (target, s) in services.iter().filter(|(_, s)| s.touched) {
        sqlx::query("UPDATE services SET last_job_id = ?, terminate_job_id = ? WHERE target_order_id = ?")
            .bind(&s.last_job_id)
            .bind(&s.terminate_job_id)
            .bind(target)
            .execute(&mut **tx)
            .await
            .op("chain service jobs")?;
    }
    Ok(())
}

/// A new job chained behind the newest job of its service or tenant.
pub(super) struct ChainedRow<'a> {
    pub job: &'a NewJob,
    pub project_id: String,
    pub after: Option<String>,
    /// Its predecessor is still running: first due after [`BLOCKED_RECHECK`].
    pub blocked: bool,
    pub cancel_reason: Option<String>,
}

/// What a chained job hangs on: the column that names it.
#[derive(Clone, Copy)]
pub(super) enum Chain {
    Service,
    Tenant,
}

/// Inserts chained jobs in one statement; returns how many.
pub(super) async fn insert_chained(
    tx: &mut sqlx::Transaction<'_, MySql>,
    rows: &[ChainedRow<'_>],
    chain: Chain,
    first_step: &str,
) -> Result<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let column = match chain {
        Chain::Service => "target_order_id",
        Chain::Tenant => "tenant_ref",
    };
    let blocked_micros = BLOCKED_RECHECK.as_micros() as i64;
    let mut insert: QueryBuilder<MySql> = QueryBuilder::new(format!(
        "INSERT INTO jobs (id, order_id, project_id, kind, action, {column}, after_job_id, order_body, \
         order_digest, state, step, cancel_requested, cancel_reason, next_run_at, traceparent) "
    ));
    insert.push_values(rows.iter(), |mut b, r| {
        let key = match chain {
            Chain::Service => &r.job.target_order_id,
            Chain::Tenant => &r.job.tenant_ref,
        };
        b.push_bind(r.job.id.to_string())
            .push_bind(&r.job.order_id)
            .push_bind(&r.project_id)
            .push_bind(&r.job.action)
            .push_bind(&r.job.action)
            .push_bind(key)
            .push_bind(r.after.clone())
            .push_bind(&r.job.order_body)
            .push_bind(&r.job.order_digest)
            .push_bind(NEW_JOB_STATE)
            .push_bind(first_step)
            .push_bind(r.cancel_reason.is_some())
            .push_bind(r.cancel_reason.clone())
            .push("UTC_TIMESTAMP(6) + INTERVAL ")
            .push_bind_unseparated(if r.blocked { blocked_micros } else { 0 })
            .push_unseparated(" MICROSECOND")
            .push_bind(&r.job.traceparent);
    });
    insert.build().execute(&mut **tx).await.op("insert chained jobs")?;
    Ok(rows.len())
}
