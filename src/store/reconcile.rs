//! The reconciler's SQL: its lease, what the database says each project should hold, and the
//! findings (`reconcile_findings`) with the `service.drift` events they write.
//!
//! One worker at a time runs a pass: [`Store::take_reconcile_lease`] takes the one row of
//! `reconcile_lease` when it is free (or expired) and, for the periodic pass, only when the last
//! pass started at least an interval ago, so N workers still make one pass per interval. Every
//! take-over increments `fence`, and every write of a pass is refused ([`ReconcileError::LeaseLost`])
//! unless the lease still carries the fence the pass took it with: a worker that stalled past
//! its lease can no longer record or delete anything.
//!
//! A finding is open until the reconciler no longer sees what it found (`cleared_at`); the
//! unique key on `(kind, resource_type, resource_id, reason, is_open)` keeps one open finding per
//! resource and reason, so a second pass over the same cloud adds nothing. A drift finding's
//! event is written to the outbox in the same transaction as the finding: one event per finding.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{MySql, QueryBuilder, Row as _, Transaction};

use super::{JobState, Op as _, OutboxEvent, Result, Store, StoreError};

const LEASE: &str = "reconciler";

/// Why a write of a pass was not made.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Another worker took the reconciler lease since this pass took it.
    #[error("reconciler lease lost: another worker runs the reconciler now")]
    LeaseLost,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who holds the reconciler lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseTake {
    /// Ours, under this fence.
    Taken(u64),
    /// Another worker runs a pass (until its lease expires).
    Held { owner: String },
    /// Free, but the last pass started less than an interval ago.
    NotDue,
}

/// A service as drift detection needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceState {
    pub target_order_id: String,
    pub create_job_id: String,
    pub project_id: String,
    pub state: String,
    pub server_id: Option<String>,
    pub port_id: Option<String>,
    pub volume_id: Option<String>,
    /// A job of the service is not final yet (an action in flight changes the server on
    /// purpose): no drift is judged while it runs.
    pub busy: bool,
}

/// What the database says about one project.
#[derive(Debug, Clone, Default)]
pub struct ProjectRecord {
    /// Resource ids held by a service that is not terminated or failed, and the volumes of
    /// terminated services (a terminate with `lifecycle.delete_volumes = false` keeps the
    /// volume on purpose; one it deleted is no longer listed).
    pub owned: HashSet<String>,
    /// Services in `active` or `suspended`.
    pub services: Vec<ServiceState>,
}

/// A finding to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFinding {
    /// `orphan` | `drift`
    pub kind: &'static str,
    /// `server` | `port` | `volume`
    pub resource_type: &'static str,
    pub resource_id: String,
    pub project_id: String,
    pub job_id: Option<String>,
    pub target_order_id: Option<String>,
    pub reason: &'static str,
    pub expected: Option<String>,
    pub found: Option<String>,
}

/// One row of `reconcile_findings`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: u64,
    pub kind: String,
    pub resource_type: String,
    pub resource_id: String,
    pub project_id: String,
    pub job_id: Option<String>,
    pub target_order_id: Option<String>,
    pub reason: String,
    pub expected: Option<String>,
    pub found: Option<String>,
    /// `reported`, `deleting`, `deleted`, `delete_failed`, `event`.
    pub action: String,
    pub action_error: Option<String>,
    pub event_id: Option<String>,
    pub first_seen_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub action_at: Option<DateTime<Utc>>,
    pub cleared_at: Option<DateTime<Utc>>,
    pub open: bool,
}

/// What [`Store::record_finding`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub id: u64,
    /// First seen in this pass (an event was written with it, for a drift).
    pub new: bool,
    /// The finding's action so far.
    pub action: String,
}

/// What a findings list asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingFilter {
    /// Cleared findings too.
    pub all: bool,
    pub kind: Option<String>,
    pub project_id: Option<String>,
    pub limit: u32,
}

const COLUMNS: &str = "id, kind, resource_type, resource_id, project_id, job_id, target_order_id, reason, \
     expected, found, action, action_error, event_id, first_seen_at, last_seen_at, action_at, cleared_at, \
     is_open";

fn finding_from_row(row: &sqlx::mysql::MySqlRow) -> Result<Finding> {
    let get = |e: sqlx::Error| StoreError::Db { op: "decode finding", source: e };
    let open: Option<i8> = row.try_get("is_open").map_err(get)?;
    Ok(Finding {
        id: row.try_get("id").map_err(get)?,
        kind: row.try_get("kind").map_err(get)?,
        resource_type: row.try_get("resource_type").map_err(get)?,
        resource_id: row.try_get("resource_id").map_err(get)?,
        project_id: row.try_get("project_id").map_err(get)?,
        job_id: row.try_get("job_id").map_err(get)?,
        target_order_id: row.try_get("target_order_id").map_err(get)?,
        reason: row.try_get("reason").map_err(get)?,
        expected: row.try_get("expected").map_err(get)?,
        found: row.try_get("found").map_err(get)?,
        action: row.try_get("action").map_err(get)?,
        action_error: row.try_get("action_error").map_err(get)?,
        event_id: row.try_get("event_id").map_err(get)?,
        first_seen_at: row.try_get("first_seen_at").map_err(get)?,
        last_seen_at: row.try_get("last_seen_at").map_err(get)?,
        action_at: row.try_get("action_at").map_err(get)?,
        cleared_at: row.try_get("cleared_at").map_err(get)?,
        open: open == Some(1),
    })
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX / 2)
}

/// Checks, inside `tx`, that the lease still carries `fence` (and holds the row until commit).
async fn fenced(tx: &mut Transaction<'_, MySql>, fence: u64) -> Result<(), ReconcileError> {
    let current: Option<u64> =
        sqlx::query_scalar("SELECT fence FROM reconcile_lease WHERE name = ? FOR UPDATE")
            .bind(LEASE)
            .fetch_optional(&mut **tx)
            .await
            .op("check the reconciler lease")?;
    if current == Some(fence) { Ok(()) } else { Err(ReconcileError::LeaseLost) }
}

impl Store {
    /// Takes the reconciler lease for `owner` for `lease`. With `interval`, only if the last
    /// pass started at least that long ago (the periodic pass); without, whenever it is free
    /// (`reconcile --once`).
    pub async fn take_reconcile_lease(
        &self,
        owner: &str,
        lease: Duration,
        interval: Option<Duration>,
    ) -> Result<LeaseTake> {
        let mut tx = self.pool().begin().await.op("begin reconciler lease")?;
        let row = sqlx::query(
            "SELECT owner, expires_at >= NOW(6) AS live, \
             (last_started_at IS NULL OR last_started_at <= NOW(6) - INTERVAL ? MICROSECOND) AS due \
             FROM reconcile_lease WHERE name = ? FOR UPDATE",
        )
        .bind(micros(interval.unwrap_or_default()))
        .bind(LEASE)
        .fetch_optional(&mut *tx)
        .await
        .op("read the reconciler lease")?;
        let Some(row) = row else {
            return Err(StoreError::Corrupt("the reconcile_lease row is missing".into()));
        };
        let holder: Option<String> = row.try_get("owner").op("read the reconciler lease")?;
        let live: Option<i64> = row.try_get("live").op("read the reconciler lease")?;
        let due: i64 = row.try_get("due").op("read the reconciler lease")?;
        if let Some(holder) = holder.filter(|_| live == Some(1)) {
            return Ok(LeaseTake::Held { owner: holder });
        }
        if due == 0 {
            return Ok(LeaseTake::NotDue);
        }
        sqlx::query(
            "UPDATE reconcile_lease SET owner = ?, expires_at = NOW(6) + INTERVAL ? MICROSECOND, \
             fence = fence + 1, last_started_at = NOW(6) WHERE name = ?",
        )
        .bind(owner)
        .bind(micros(lease))
        .bind(LEASE)
        .execute(&mut *tx)
        .await
        .op("take the reconciler lease")?;
        let fence: u64 = sqlx::query_scalar("SELECT fence FROM reconcile_lease WHERE name = ?")
            .bind(LEASE)
            .fetch_one(&mut *tx)
            .await
            .op("read the reconciler fence")?;
        tx.commit().await.op("commit the reconciler lease")?;
        Ok(LeaseTake::Taken(fence))
    }

    /// Extends the lease; `false` if it is no longer ours.
    pub async fn renew_reconcile_lease(&self, owner: &str, fence: u64, lease: Duration) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE reconcile_lease SET expires_at = NOW(6) + INTERVAL ? MICROSECOND \
             WHERE name = ? AND owner = ? AND fence = ?",
        )
        .bind(micros(lease))
        .bind(LEASE)
        .bind(owner)
        .bind(fence)
        .execute(self.pool())
        .await
        .op("renew the reconciler lease")?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up at the end of a pass.
    pub async fn release_reconcile_lease(&self, owner: &str, fence: u64) -> Result<()> {
        sqlx::query(
            "UPDATE reconcile_lease SET owner = NULL, expires_at = NULL, last_finished_at = NOW(6) \
             WHERE name = ? AND owner = ? AND fence = ?",
        )
        .bind(LEASE)
        .bind(owner)
        .bind(fence)
        .execute(self.pool())
        .await
        .op("release the reconciler lease")?;
        Ok(())
    }

    /// Every project the provisioner has provisioned into (has a service in), with the regions
    /// of its services (`None`: the configured region).
    pub async fn reconcile_projects(&self) -> Result<Vec<(String, Vec<Option<String>>)>> {
        let rows: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT DISTINCT project_id, region FROM services ORDER BY project_id, region")
                .fetch_all(self.pool())
                .await
                .op("list provisioned projects")?;
        let mut out: Vec<(String, Vec<Option<String>>)> = Vec::new();
        for (project, region) in rows {
            match out.last_mut() {
                Some((p, regions)) if *p == project => regions.push(region),
                _ => out.push((project, vec![region])),
            }
        }
        Ok(out)
    }

    /// What the database says `project` holds.
    pub async fn project_record(&self, project: &str) -> Result<ProjectRecord> {
        let rows = sqlx::query(
            "SELECT s.target_order_id, s.create_job_id, s.project_id, s.state, s.server_id, s.port_id, \
             s.volume_id, (l.state IS NULL OR l.state NOT IN ('completed', 'failed', 'cancelled')) AS busy \
             FROM services s LEFT JOIN jobs l ON l.id = s.last_job_id \
             WHERE s.project_id = ? AND s.state <> 'failed'",
        )
        .bind(project)
        .fetch_all(self.pool())
        .await
        .op("read the project's services")?;
        let mut record = ProjectRecord::default();
        for row in rows {
            let s = ServiceState {
                target_order_id: row.try_get("target_order_id").op("read service")?,
                create_job_id: row.try_get("create_job_id").op("read service")?,
                project_id: row.try_get("project_id").op("read service")?,
                state: row.try_get("state").op("read service")?,
                server_id: row.try_get("server_id").op("read service")?,
                port_id: row.try_get("port_id").op("read service")?,
                volume_id: row.try_get("volume_id").op("read service")?,
                busy: row.try_get::<i64, _>("busy").op("read service")? != 0,
            };
            if s.state == "terminated" {
                record.owned.extend(s.volume_id.iter().cloned());
                continue;
            }
            record.owned.extend([&s.server_id, &s.port_id, &s.volume_id].into_iter().flatten().cloned());
            if s.state == "active" || s.state == "suspended" {
                record.services.push(s);
            }
        }
        Ok(record)
    }

    /// The state of each of these jobs that exists (ids that are not job ids are absent).
    pub async fn job_states(&self, ids: &[String]) -> Result<HashMap<String, JobState>> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(500) {
            let mut q: QueryBuilder<MySql> = QueryBuilder::new("SELECT id, state FROM jobs WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.as_str());
            }
            q.push(")");
            for row in q.build().fetch_all(self.pool()).await.op("read job states")? {
                let id: String = row.try_get("id").op("read job state")?;
                let state: String = row.try_get("state").op("read job state")?;
                let state = JobState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("job {id} has state {state:?}")))?;
                out.insert(id, state);
            }
        }
        Ok(out)
    }

    /// Records that the pass saw `f`: a new open finding (with `event` in the outbox, for a
    /// drift), or the open one seen again.
    pub async fn record_finding(
        &self,
        fence: u64,
        f: &NewFinding,
        event: Option<&OutboxEvent>,
    ) -> Result<Recorded, ReconcileError> {
        let mut tx = self.pool().begin().await.op("begin finding")?;
        fenced(&mut tx, fence).await?;
        let open = sqlx::query(
            "SELECT id, action FROM reconcile_findings WHERE kind = ? AND resource_type = ? \
             AND resource_id = ? AND reason = ? AND is_open = 1 FOR UPDATE",
        )
        .bind(f.kind)
        .bind(f.resource_type)
        .bind(&f.resource_id)
        .bind(f.reason)
        .fetch_optional(&mut *tx)
        .await
        .op("read open finding")?;
        let recorded = if let Some(row) = open {
            let id: u64 = row.try_get("id").op("read finding")?;
            let action: String = row.try_get("action").op("read finding")?;
            sqlx::query(
                "UPDATE reconcile_findings SET last_seen_at = NOW(6), expected = ?, found = ? WHERE id = ?",
            )
            .bind(&f.expected)
            .bind(&f.found)
            .bind(id)
            .execute(&mut *tx)
            .await
            .op("update finding")?;
            Recorded { id, new: false, action }
        } else {
            let action = if event.is_some() { "event" } else { "reported" };
            let done = sqlx::query(
                "INSERT INTO reconcile_findings (kind, resource_type, resource_id, project_id, job_id, \
                 target_order_id, reason, expected, found, action, event_id, action_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, IF(? IS NULL, NULL, NOW(6)))",
            )
            .bind(f.kind)
            .bind(f.resource_type)
            .bind(&f.resource_id)
            .bind(&f.project_id)
            .bind(&f.job_id)
            .bind(&f.target_order_id)
            .bind(f.reason)
            .bind(&f.expected)
            .bind(&f.found)
            .bind(action)
            .bind(event.map(|e| e.event_id.to_string()))
            .bind(event.map(|e| e.event_id.to_string()))
            .execute(&mut *tx)
            .await
            .op("insert finding")?;
            if let Some(e) = event {
                sqlx::query(
                    "INSERT IGNORE INTO outbox (event_id, job_id, routing_key, body) VALUES (?, ?, ?, ?)",
                )
                .bind(e.event_id.to_string())
                .bind(f.job_id.clone().unwrap_or_default())
                .bind(&e.routing_key)
                .bind(&e.body)
                .execute(&mut *tx)
                .await
                .op("insert drift event")?;
            }
            Recorded { id: done.last_insert_id(), new: true, action: action.to_string() }
        };
        tx.commit().await.op("commit finding")?;
        Ok(recorded)
    }

    /// Sets a finding's action (`deleting` before the delete call, `deleted` or `delete_failed`
    /// after it). A `deleted` finding stays open until the resource is no longer listed (a
    /// delete takes a while): seen again meanwhile, it is not deleted a second time.
    pub async fn set_finding_action(
        &self,
        fence: u64,
        id: u64,
        action: &str,
        error: Option<&str>,
    ) -> Result<(), ReconcileError> {
        let mut tx = self.pool().begin().await.op("begin finding action")?;
        fenced(&mut tx, fence).await?;
        sqlx::query(
            "UPDATE reconcile_findings SET action = ?, action_error = ?, action_at = NOW(6) WHERE id = ?",
        )
        .bind(action)
        .bind(error)
        .bind(id)
        .execute(&mut *tx)
        .await
        .op("set finding action")?;
        tx.commit().await.op("commit finding action")?;
        Ok(())
    }

    /// Clears the open findings of `project` that this pass did not see again (`seen`): what
    /// they found is gone. Drift findings of the services in `busy` (not judged this pass) are
    /// kept. Returns how many were cleared.
    pub async fn clear_findings(
        &self,
        fence: u64,
        project: &str,
        seen: &[u64],
        busy: &[String],
    ) -> Result<u64, ReconcileError> {
        let mut tx = self.pool().begin().await.op("begin clear findings")?;
        fenced(&mut tx, fence).await?;
        let mut q: QueryBuilder<MySql> = QueryBuilder::new(
            "UPDATE reconcile_findings SET is_open = NULL, cleared_at = NOW(6) WHERE is_open = 1 AND project_id = ",
        );
        q.push_bind(project);
        if !seen.is_empty() {
            q.push(" AND id NOT IN (");
            let mut list = q.separated(", ");
            for id in seen {
                list.push_bind(*id);
            }
            q.push(")");
        }
        if !busy.is_empty() {
            q.push(" AND (target_order_id IS NULL OR target_order_id NOT IN (");
            let mut list = q.separated(", ");
            for t in busy {
                list.push_bind(t.as_str());
            }
            q.push("))");
        }
        let done = q.build().execute(&mut *tx).await.op("clear findings")?;
        tx.commit().await.op("commit clear findings")?;
        Ok(done.rows_affected())
    }

    /// Findings, newest first: the open ones, or all with `filter.all`.
    pub async fn list_findings(&self, filter: &FindingFilter) -> Result<Vec<Finding>> {
        let mut q: QueryBuilder<MySql> =
            QueryBuilder::new(format!("SELECT {COLUMNS} FROM reconcile_findings WHERE 1=1"));
        if !filter.all {
            q.push(" AND is_open = 1");
        }
        if let Some(kind) = &filter.kind {
            q.push(" AND kind = ").push_bind(kind.clone());
        }
        if let Some(project) = &filter.project_id {
            q.push(" AND project_id = ").push_bind(project.clone());
        }
        q.push(" ORDER BY id DESC LIMIT ").push_bind(filter.limit.clamp(1, 1000));
        let rows = q.build().fetch_all(self.pool()).await.op("list findings")?;
        rows.iter().map(finding_from_row).collect()
    }

    /// Open findings by kind (metrics).
    pub async fn open_finding_counts(&self) -> Result<Vec<(String, u64)>> {
        let rows =
            sqlx::query("SELECT kind, COUNT(*) AS n FROM reconcile_findings WHERE is_open = 1 GROUP BY kind")
                .fetch_all(self.pool())
                .await
                .op("count findings")?;
        let mut out = vec![("drift".to_string(), 0), ("orphan".to_string(), 0)];
        for row in rows {
            let kind: String = row.try_get("kind").op("count findings")?;
            let n: i64 = row.try_get("n").op("count findings")?;
            match out.iter_mut().find(|(k, _)| *k == kind) {
                Some(e) => e.1 = n.max(0) as u64,
                None => out.push((kind, n.max(0) as u64)),
            }
        }
        Ok(out)
    }
}
