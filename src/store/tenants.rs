//! Tenants in the store: the `tenants` table, its intake (tenant orders, and creates that name
//! their project by `tenant_ref`), what tenant jobs write with their saves, and the reads behind
//! `tenant_status` (and behind `provisioner tenants list|show`, `GET /v1/tenants`).
//!
//! Intake, in the batch's transaction (see [`super::intake`]): the tenant rows of the batch are
//! locked (`FOR UPDATE`, in key order, as every intake does); a `tenant_create` of an unknown ref
//! makes the row (`provisioning`); every tenant job is chained after the newest job of its
//! tenant (`after_job_id`, the same chaining as a service's actions), so one tenant's orders run
//! one at a time in commit order. A `tenant_close` marks the row (`close_job_id`): an update or a
//! VM create naming the tenant committed after it is queued already cancelled, and queued updates
//! are cancelled. An update or close of an unknown tenant, and a create naming one, are returned
//! as unknown targets (held back, then dead-lettered, by the intake consumer).
//!
//! A create that names its tenant runs after the tenant's newest job at its commit (so after the
//! tenant's own create: it waits until the tenant is active) and gets the tenant's project id:
//! at intake when the tenant has one, else in the transaction that makes the tenant active
//! ([`TenantSave::project_id`] fills in every job and service of the tenant still without one).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{MySql, QueryBuilder, Row as _};
use uuid::Uuid;

use super::intake::{Chain, ChainedRow, InsertOutcome, NewJob, insert_chained};
use super::status::{
    JobStatus, MAX_LIMIT, STATUS_COLUMNS as JOB_COLUMNS, status_from_row as job_status_from_row,
};
use super::{Op, Result, Store, StoreError};

/// The states a tenant can be in (`tenants.state`, the `tenant_status` view).
pub const TENANT_STATES: &[&str] = &["provisioning", "active", "closing", "closed", "failed"];

/// The step a new tenant job is queued at (the engine starts it at its kind's first step).
pub const TENANT_FIRST_STEP: &str = "start";

/// A tenant as a job sees it when claimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    pub tenant_ref: String,
    pub project_id: Option<String>,
    pub domain_id: Option<String>,
    pub user_id: Option<String>,
    pub state: String,
    /// JSON of the limits last set.
    pub quotas: Option<String>,
}

/// A change of a tenant, written in the same transaction as the job save that makes it (and
/// only if that save's fence held). `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TenantSave {
    pub tenant_ref: String,
    pub state: Option<String>,
    /// Also given to every job and service of the tenant that has no project yet.
    pub project_id: Option<String>,
    pub domain_id: Option<String>,
    pub user_id: Option<String>,
    pub quotas: Option<String>,
    /// The saving job's stored order, rewritten (its sealed password dropped).
    pub order_body: Option<String>,
}

/// One row of the `tenant_status` view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantStatus {
    pub tenant_ref: String,
    pub project_id: Option<String>,
    pub domain_id: Option<String>,
    pub user_id: Option<String>,
    pub state: String,
    pub quotas: Option<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The tenant's first `tenant_create` job.
    pub create_job_id: String,
    /// The tenant's newest tenant job (the next tenant order runs after it).
    pub last_job_id: String,
}

/// A tenant for operators (`provisioner tenants list`, `GET /v1/tenants`): its status and its
/// newest tenant job. Nothing secret: no order body, no password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantView {
    #[serde(flatten)]
    pub status: TenantStatus,
    pub last_job: Option<JobStatus>,
}

/// One tenant with every job that named it (its tenant orders and the VM creates by its
/// `tenant_ref`), in commit order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantDetail {
    #[serde(flatten)]
    pub view: TenantView,
    pub jobs: Vec<JobStatus>,
}

/// How a create naming its tenant is queued.
#[derive(Debug, Clone, Default)]
pub(super) struct Binding {
    pub project_id: String,
    pub after: Option<String>,
    pub blocked: bool,
    pub cancel_reason: Option<String>,
}

struct Locked {
    project_id: Option<String>,
    last_job_id: String,
    close_job_id: Option<String>,
    new: bool,
    touched: bool,
}

/// Locks the tenant rows of `refs` (in key order) and says which of their newest jobs are final.
async fn lock_tenants(
    tx: &mut sqlx::Transaction<'_, MySql>,
    refs: &HashSet<&str>,
) -> Result<(HashMap<String, Locked>, HashSet<String>)> {
    let mut select: QueryBuilder<MySql> = QueryBuilder::new(
        "SELECT tenant_ref, project_id, last_job_id, close_job_id FROM tenants WHERE tenant_ref IN (",
    );
    let mut list = select.separated(", ");
    for r in refs {
        list.push_bind(r.to_string());
    }
    select.push(") ORDER BY tenant_ref FOR UPDATE");
    let rows = select.build().fetch_all(&mut **tx).await.op("lock tenants")?;
    let mut tenants = HashMap::new();
    for r in &rows {
        tenants.insert(
            r.try_get("tenant_ref").op("read tenant")?,
            Locked {
                project_id: r.try_get("project_id").op("read tenant")?,
                last_job_id: r.try_get("last_job_id").op("read tenant")?,
                close_job_id: r.try_get("close_job_id").op("read tenant")?,
                new: false,
                touched: false,
            },
        );
    }
    let mut done = HashSet::new();
    if !tenants.is_empty() {
        let mut select: QueryBuilder<MySql> = QueryBuilder::new(
            "SELECT id FROM jobs WHERE state IN ('completed', 'failed', 'cancelled') AND id IN (",
        );
        let mut list = select.separated(", ");
        for t in tenants.values() {
            list.push_bind(t.last_job_id.clone());
        }
        select.push(")");
        let ids: Vec<String> =
            select.build_query_scalar().fetch_all(&mut **tx).await.op("read predecessors")?;
        done.extend(ids);
    }
    Ok((tenants, done))
}

/// The tenant orders of a batch, in delivery order (see the module docs).
pub(super) async fn insert_tenant_jobs(
    tx: &mut sqlx::Transaction<'_, MySql>,
    jobs: &[&NewJob],
    outcome: &mut InsertOutcome,
) -> Result<()> {
    let mut select: QueryBuilder<MySql> =
        QueryBuilder::new("SELECT order_id, order_digest FROM jobs WHERE order_id IN (");
    let mut ids = select.separated(", ");
    for job in jobs {
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
    let fresh: Vec<&NewJob> = jobs.iter().copied().filter(|j| !existing.contains_key(&j.order_id)).collect();
    outcome.duplicates.extend(existing);
    if fresh.is_empty() {
        return Ok(());
    }
    let refs: HashSet<&str> = fresh.iter().filter_map(|j| j.tenant_ref.as_deref()).collect();
    let (mut tenants, done) = lock_tenants(tx, &refs).await?;

    let mut rows: Vec<ChainedRow> = Vec::with_capacity(fresh.len());
    let mut closes: Vec<(String, String)> = Vec::new();
    for job in fresh {
        let Some(tenant_ref) = job.tenant_ref.as_deref() else { continue };
        let id = job.id.to_string();
        let Some(t) = tenants.get_mut(tenant_ref) else {
            if job.action != "tenant_create" {
                outcome.unknown_targets.push(job.order_id.clone());
                continue;
            }
            tenants.insert(
                tenant_ref.to_string(),
                Locked {
                    project_id: None,
                    last_job_id: id.clone(),
                    close_job_id: None,
                    new: true,
                    touched: true,
                },
            );
            rows.push(ChainedRow {
                job,
                project_id: String::new(),
                after: None,
                blocked: false,
                cancel_reason: None,
            });
            continue;
        };
        let project_id = t.project_id.clone().unwrap_or_default();
        if let (Some(c), false) = (&t.close_job_id, job.action == "tenant_close") {
            outcome.superseded += 1;
            rows.push(ChainedRow {
                job,
                project_id,
                after: None,
                blocked: false,
                cancel_reason: Some(format!("superseded: tenant {tenant_ref} is closed (job {c})")),
            });
            continue;
        }
        let after = t.last_job_id.clone();
        let blocked = !done.contains(&after);
        if job.action == "tenant_close" && t.close_job_id.is_none() {
            t.close_job_id = Some(id.clone());
            closes.push((tenant_ref.to_string(), job.order_id.clone()));
            for r in rows.iter_mut().filter(|r| r.job.tenant_ref.as_deref() == Some(tenant_ref)) {
                if r.cancel_reason.is_none() && r.job.action == "tenant_update" {
                    r.cancel_reason = Some(format!("superseded by tenant_close {}", job.order_id));
                    outcome.superseded += 1;
                }
            }
        }
        t.last_job_id = id;
        t.touched = true;
        rows.push(ChainedRow { job, project_id, after: Some(after), blocked, cancel_reason: None });
    }

    for (tenant_ref, order) in &closes {
        sqlx::query(
            "UPDATE jobs SET cancel_requested = 1, cancel_reason = ?, next_run_at = LEAST(next_run_at, NOW(6)) \
             WHERE tenant_ref = ? AND action = 'tenant_update' AND state = 'queued' AND cancel_requested = 0",
        )
        .bind(format!("superseded by tenant_close {order}"))
        .bind(tenant_ref)
        .execute(&mut **tx)
        .await
        .op("supersede tenant jobs")?;
    }

    let new: Vec<(&String, &Locked)> = tenants.iter().filter(|(_, t)| t.new).collect();
    if !new.is_empty() {
        let mut insert: QueryBuilder<MySql> =
            QueryBuilder::new("INSERT INTO tenants (tenant_ref, create_job_id, state, last_job_id) ");
        insert.push_values(new.iter(), |mut b, (r, t)| {
            b.push_bind(r.to_string())
                .push_bind(t.last_job_id.clone())
                .push_bind("provisioning")
                .push_bind(t.last_job_id.clone());
        });
        insert.build().execute(&mut **tx).await.op("insert tenants")?;
    }
    // A tenant made in this batch chains its later orders of the same batch: its create job id
    // must stay its first job's; only last_job_id moves.
    for (tenant_ref, t) in tenants.iter().filter(|(_, t)| t.touched) {
        sqlx::query("UPDATE tenants SET last_job_id = ?, close_job_id = ? WHERE tenant_ref = ?")
            .bind(&t.last_job_id)
            .bind(&t.close_job_id)
            .bind(tenant_ref)
            .execute(&mut **tx)
            .await
            .op("chain tenant jobs")?;
    }

    outcome.inserted += insert_chained(tx, &rows, Chain::Tenant, TENANT_FIRST_STEP).await?;
    Ok(())
}

/// The creates of a batch that name their tenant: chained after the tenant's newest job, with
/// its project id when it has one; a closed tenant's are queued cancelled; an unknown tenant's
/// are taken out of `creates` and returned as unknown targets.
pub(super) async fn bind_creates(
    tx: &mut sqlx::Transaction<'_, MySql>,
    creates: &mut Vec<&NewJob>,
    outcome: &mut InsertOutcome,
) -> Result<HashMap<String, Binding>> {
    let refs: HashSet<&str> = creates.iter().filter_map(|j| j.tenant_ref.as_deref()).collect();
    let mut bindings = HashMap::new();
    if refs.is_empty() {
        return Ok(bindings);
    }
    let (tenants, done) = lock_tenants(tx, &refs).await?;
    creates.retain(|job| {
        let Some(tenant_ref) = job.tenant_ref.as_deref() else { return true };
        let Some(t) = tenants.get(tenant_ref) else {
            outcome.unknown_targets.push(job.order_id.clone());
            return false;
        };
        let mut b = Binding { project_id: t.project_id.clone().unwrap_or_default(), ..Binding::default() };
        match &t.close_job_id {
            Some(c) => b.cancel_reason = Some(format!("tenant {tenant_ref} is closed (job {c})")),
            None => {
                b.blocked = !done.contains(&t.last_job_id);
                b.after = Some(t.last_job_id.clone());
            }
        }
        bindings.insert(job.order_id.clone(), b);
        true
    });
    Ok(bindings)
}

/// Writes one tenant change (see [`TenantSave`]) for the job `job_id`.
pub(super) async fn save_tenant(
    tx: &mut sqlx::Transaction<'_, MySql>,
    job_id: Uuid,
    s: &TenantSave,
) -> Result<()> {
    let mut q: QueryBuilder<MySql> = QueryBuilder::new("UPDATE tenants SET updated_at = NOW(6)");
    for (col, v) in [
        ("state", &s.state),
        ("project_id", &s.project_id),
        ("domain_id", &s.domain_id),
        ("user_id", &s.user_id),
        ("quotas", &s.quotas),
    ] {
        if let Some(v) = v {
            q.push(format!(", {col} = ")).push_bind(v.clone());
        }
    }
    q.push(" WHERE tenant_ref = ").push_bind(s.tenant_ref.clone());
    q.build().execute(&mut **tx).await.op("save tenant")?;
    if let Some(project) = &s.project_id {
        for table in ["jobs", "services"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET project_id = ? WHERE tenant_ref = ? AND project_id = ''"
            )))
            .bind(project)
            .bind(&s.tenant_ref)
            .execute(&mut **tx)
            .await
            .op("give the tenant's jobs its project")?;
        }
    }
    if let Some(body) = &s.order_body {
        sqlx::query("UPDATE jobs SET order_body = ? WHERE id = ?")
            .bind(body)
            .bind(job_id.to_string())
            .execute(&mut **tx)
            .await
            .op("rewrite the stored order")?;
    }
    Ok(())
}

fn status_from_row(row: &sqlx::mysql::MySqlRow) -> Result<TenantStatus> {
    let get = |e: sqlx::Error| StoreError::Db { op: "decode tenant status", source: e };
    let quotas: Option<String> = row.try_get("quotas").map_err(get)?;
    Ok(TenantStatus {
        tenant_ref: row.try_get("tenant_ref").map_err(get)?,
        project_id: row.try_get("project_id").map_err(get)?,
        domain_id: row.try_get("domain_id").map_err(get)?,
        user_id: row.try_get("user_id").map_err(get)?,
        state: row.try_get("state").map_err(get)?,
        quotas: quotas.and_then(|q| serde_json::from_str(&q).ok()),
        updated_at: row.try_get("updated_at").map_err(get)?,
        created_at: row.try_get("created_at").map_err(get)?,
        create_job_id: row.try_get("create_job_id").map_err(get)?,
        last_job_id: row.try_get("last_job_id").map_err(get)?,
    })
}

const STATUS_COLUMNS: &str = "tenant_ref, project_id, domain_id, user_id, state, quotas, updated_at, created_at, create_job_id, last_job_id";

/// A service of a tenant, as a close sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantService {
    pub target_order_id: String,
    pub state: String,
}

/// A job's end, as a close waiting for its terminates sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    pub order_id: String,
    pub state: String,
    pub error: Option<String>,
}

impl Store {
    /// One tenant, from `tenant_status`.
    pub async fn tenant(&self, tenant_ref: &str) -> Result<Option<TenantStatus>> {
        let sql = format!("SELECT {STATUS_COLUMNS} FROM tenant_status WHERE tenant_ref = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant_ref)
            .fetch_optional(self.pool())
            .await
            .op("read tenant")?;
        row.as_ref().map(status_from_row).transpose()
    }

    /// Tenants (in `state`, if given), newest first, at most `limit` (up to [`MAX_LIMIT`]), each
    /// with its newest tenant job.
    pub async fn list_tenants(&self, state: Option<&str>, limit: u32) -> Result<Vec<TenantView>> {
        let mut q: QueryBuilder<MySql> =
            QueryBuilder::new(format!("SELECT {STATUS_COLUMNS} FROM tenant_status WHERE 1=1"));
        if let Some(state) = state {
            q.push(" AND state = ").push_bind(state.to_string());
        }
        q.push(" ORDER BY created_at DESC, tenant_ref DESC LIMIT ").push_bind(limit.clamp(1, MAX_LIMIT));
        let rows = q.build().fetch_all(self.pool()).await.op("list tenants")?;
        let tenants = rows.iter().map(status_from_row).collect::<Result<Vec<_>>>()?;
        let mut last = self.jobs_by_id(tenants.iter().map(|t| t.last_job_id.as_str())).await?;
        Ok(tenants
            .into_iter()
            .map(|status| TenantView { last_job: last.remove(&status.last_job_id), status })
            .collect())
    }

    /// One tenant with its newest tenant job and every job that named it.
    pub async fn tenant_detail(&self, tenant_ref: &str) -> Result<Option<TenantDetail>> {
        let Some(status) = self.tenant(tenant_ref).await? else { return Ok(None) };
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM job_status s JOIN jobs j ON j.id = s.job_id WHERE j.tenant_ref = ? \
             ORDER BY s.created_at, s.job_id LIMIT {MAX_LIMIT}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant_ref)
            .fetch_all(self.pool())
            .await
            .op("list tenant jobs")?;
        let jobs = rows.iter().map(job_status_from_row).collect::<Result<Vec<_>>>()?;
        let last_job = jobs.iter().find(|j| j.job_id == status.last_job_id).cloned();
        Ok(Some(TenantDetail { view: TenantView { status, last_job }, jobs }))
    }

    /// The `job_status` rows of these jobs, by job id.
    async fn jobs_by_id<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Result<HashMap<String, JobStatus>> {
        let ids: Vec<&str> = ids.collect();
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut q: QueryBuilder<MySql> =
            QueryBuilder::new(format!("SELECT {JOB_COLUMNS} FROM job_status s WHERE s.job_id IN ("));
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id.to_string());
        }
        q.push(")");
        let rows = q.build().fetch_all(self.pool()).await.op("read tenant jobs")?;
        rows.iter().map(|r| job_status_from_row(r).map(|j| (j.job_id.clone(), j))).collect()
    }

    /// The services of a tenant: those whose create named it, and those made in its project.
    pub async fn tenant_services(&self, tenant_ref: &str, project_id: &str) -> Result<Vec<TenantService>> {
        let rows = sqlx::query(
            "SELECT target_order_id, state FROM services \
             WHERE tenant_ref = ? OR (project_id = ? AND project_id <> '') ORDER BY target_order_id",
        )
        .bind(tenant_ref)
        .bind(project_id)
        .fetch_all(self.pool())
        .await
        .op("list tenant services")?;
        rows.iter()
            .map(|r| {
                Ok(TenantService {
                    target_order_id: r.try_get("target_order_id").op("read service")?,
                    state: r.try_get("state").op("read service")?,
                })
            })
            .collect()
    }

    /// How the jobs of these orders are (those that exist).
    pub async fn job_ends(&self, order_ids: &[String]) -> Result<Vec<JobEnd>> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut select: QueryBuilder<MySql> =
            QueryBuilder::new("SELECT order_id, state, error_message FROM jobs WHERE order_id IN (");
        let mut list = select.separated(", ");
        for id in order_ids {
            list.push_bind(id.clone());
        }
        select.push(")");
        let rows = select.build().fetch_all(self.pool()).await.op("read job ends")?;
        rows.iter()
            .map(|r| {
                Ok(JobEnd {
                    order_id: r.try_get("order_id").op("read job")?,
                    state: r.try_get("state").op("read job")?,
                    error: r.try_get("error_message").op("read job")?,
                })
            })
            .collect()
    }
}
