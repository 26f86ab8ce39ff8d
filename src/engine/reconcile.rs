//! The reconciler: compares the cloud with the database, one worker at a time, every
//! `reconcile.interval_secs`, and records what disagrees in `reconcile_findings`.
//!
//! A pass takes the reconciler lease ([`crate::store::reconcile`]), then for every project the
//! provisioner has provisioned into lists what carries the provisioner's mark (one list call per
//! service, all pages: [`Cloud::marked_resources`]) in every region the project's services were
//! made in (the order's `region`; each region has its own services), and reads what the
//! database says the project holds. It finds:
//! - **orphans**: a server, port, floating IP or volume carrying our mark that no live service
//!   holds (a floating IP is held through the service's port it maps to), whose
//!   job is final or does not exist, and that is older than `reconcile.grace_secs`. A resource
//!   whose job still runs is that job's business (it adopts what it made after a crash). With
//!   `reconcile.orphans = delete` the orphan is deleted: the finding is marked `deleting` before
//!   the call and `deleted` after it, and stays open until the resource is no longer listed, so
//!   a later pass never deletes it twice. Only what the cloud's answer shows carrying our mark is
//!   ever touched (the marks are checked here again, not only trusted to the list's filter);
//!   servers go first, then ports and volumes, and a port or volume still used by a server that
//!   is not deleted with it is left (recorded as `delete_failed`, with why).
//! - **drift**: a service (`active` or `suspended`, no job of it running) whose server is gone,
//!   in ERROR, or not in the state recorded (SHUTOFF while `active`, ACTIVE while `suspended`),
//!   or whose volume is gone or detached. Each finding writes one `service.drift` event to the
//!   outbox, in the finding's transaction. No repair: the finding is cleared when the drift is.
//! - **the gap below Nova 2.52**: a server found only by its `provisioner_job` metadata (not yet
//!   tagged) that a service holds is adopted: its tags are set. One nobody holds is an orphan.
//!
//! A second pass over an unchanged cloud adds nothing (one open finding per resource and
//! reason); a finding not seen again is cleared. A project whose list calls fail is skipped for
//! this pass (nothing of it is cleared or deleted) and named in the report.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::cloud::{Cloud, Inventory};
use super::create::{TAG, VOLUME_MARK_KEY};
use crate::config::{OrphanPolicy, Settings, SuspendMode};
use crate::messages::{Event, EventDrift, EventServer, EventType, EventVolume};
use crate::metrics;
use crate::openstack::region;
use crate::store::reconcile::{Finding, FindingFilter, LeaseTake, NewFinding, ReconcileError, ServiceState};
use crate::store::{OutboxEvent, Store, StoreError};

/// The reconciler's settings.
#[derive(Debug, Clone)]
pub struct ReconcileConfig {
    /// This worker's name in the lease.
    pub owner: String,
    /// Between passes (across all workers); zero: no periodic pass.
    pub interval: Duration,
    pub grace: Duration,
    pub orphans: OrphanPolicy,
    /// The lease's length; renewed at a third of it while a pass runs.
    pub lease: Duration,
    /// What `suspended` looks like in Nova.
    pub suspend_mode: SuspendMode,
}

impl ReconcileConfig {
    pub fn from_settings(s: &Settings, owner: String) -> ReconcileConfig {
        ReconcileConfig {
            owner,
            interval: Duration::from_secs(s.reconcile.interval_secs),
            grace: Duration::from_secs(s.reconcile.grace_secs),
            orphans: s.reconcile.orphans,
            lease: Duration::from_secs(s.engine.lease_secs.max(30)),
            suspend_mode: s.lifecycle.suspend_mode,
        }
    }
}

/// Why a pass did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error("another worker ({0}) is running the reconciler; try again when its pass ends")]
    Busy(String),
    #[error("the last pass started less than an interval ago")]
    NotDue,
    #[error(transparent)]
    LeaseLost(ReconcileError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ReconcileError> for PassError {
    fn from(e: ReconcileError) -> Self {
        match e {
            ReconcileError::Store(e) => PassError::Store(e),
            lost => PassError::LeaseLost(lost),
        }
    }
}

/// A project the pass could not look at.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectError {
    pub project_id: String,
    pub error: String,
}

/// The region each listed resource was found in, by id (`None`: the configured region).
type Located = std::collections::HashMap<String, Option<String>>;

/// What one pass did, and the findings open after it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PassReport {
    pub projects: usize,
    /// Findings first seen in this pass.
    pub new_findings: usize,
    pub deleted: usize,
    pub adopted: usize,
    pub cleared: u64,
    pub errors: Vec<ProjectError>,
    pub findings: Vec<Finding>,
}

/// The reconciler of one worker. Cheap to clone.
#[derive(Clone)]
pub struct Reconciler {
    store: Store,
    cloud: Arc<dyn Cloud>,
    cfg: ReconcileConfig,
    /// Notified when a drift event was written (wakes the outbox relay).
    events: Arc<Notify>,
}

impl std::fmt::Debug for Reconciler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// Statuses a server passes through on its own: not judged.
const IN_MOTION: &[&str] = &[
    "BUILD",
    "REBOOT",
    "HARD_REBOOT",
    "RESIZE",
    "VERIFY_RESIZE",
    "REVERT_RESIZE",
    "MIGRATING",
    "REBUILD",
    "PASSWORD",
    "RESCUE",
];
/// Statuses of a server taken out of service.
const OUT_OF_SERVICE: &[&str] = &["SHUTOFF", "SUSPENDED", "PAUSED", "SHELVED", "SHELVED_OFFLOADED"];

/// The Nova status a suspended service's server has.
pub fn suspended_status(mode: SuspendMode) -> &'static str {
    match mode {
        SuspendMode::Stop => "SHUTOFF",
        SuspendMode::Suspend => "SUSPENDED",
        SuspendMode::Shelve => "SHELVED_OFFLOADED",
        SuspendMode::Pause => "PAUSED",
    }
}

/// The job id a resource's marks name: a `job-<id>` tag, else the `provisioner_job` metadata.
fn job_of(tags: &[String], metadata: Option<&std::collections::BTreeMap<String, String>>) -> Option<String> {
    tags.iter()
        .find_map(|t| t.strip_prefix("job-").map(str::to_string))
        .or_else(|| metadata.and_then(|m| m.get(VOLUME_MARK_KEY).cloned()))
        .filter(|id| !id.is_empty())
}

/// An orphan candidate.
struct Orphan {
    resource_type: &'static str,
    id: String,
    job: Option<String>,
    reason: &'static str,
    /// A server using it (ports, volumes).
    used_by: Vec<String>,
}

/// A drift found on a service.
struct Drift {
    resource_type: &'static str,
    id: String,
    reason: &'static str,
    expected: String,
    found: String,
}

impl Reconciler {
    pub fn new(store: Store, cloud: Arc<dyn Cloud>, cfg: ReconcileConfig, events: Arc<Notify>) -> Reconciler {
        Reconciler { store, cloud, cfg, events }
    }

    /// The periodic loop: every tick, a pass if one is due and no other worker runs one.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.cfg.interval.is_zero() {
            tracing::info!("reconciler off (PROVISIONER_RECONCILE_INTERVAL_SECS=0)");
            return shutdown.cancelled().await;
        }
        let tick = (self.cfg.interval / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            match self.pass_if_due(Some(self.cfg.interval), &shutdown).await {
                Ok(r) => tracing::info!(
                    projects = r.projects,
                    new_findings = r.new_findings,
                    deleted = r.deleted,
                    cleared = r.cleared,
                    errors = r.errors.len(),
                    open = r.findings.len(),
                    "reconcile pass done"
                ),
                Err(PassError::Busy(_) | PassError::NotDue) => {}
                Err(e) => tracing::warn!(error = %e, "reconcile pass failed"),
            }
        }
    }

    /// One pass now (`provisioner reconcile --once`), unless another worker runs one.
    pub async fn run_once(&self) -> Result<PassReport, PassError> {
        self.pass_if_due(None, &CancellationToken::new()).await
    }

    async fn pass_if_due(
        &self,
        interval: Option<Duration>,
        shutdown: &CancellationToken,
    ) -> Result<PassReport, PassError> {
        let owner = &self.cfg.owner;
        let fence = match self.store.take_reconcile_lease(owner, self.cfg.lease, interval).await? {
            LeaseTake::Taken(fence) => fence,
            LeaseTake::Held { owner } => return Err(PassError::Busy(owner)),
            LeaseTake::NotDue => return Err(PassError::NotDue),
        };
        let started = Instant::now();
        // The lease is renewed while the pass runs; the pass itself checks the fence on every write.
        let keeper = {
            let (store, owner, lease) = (self.store.clone(), owner.clone(), self.cfg.lease);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    match store.renew_reconcile_lease(&owner, fence, lease).await {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(e) => tracing::warn!(error = %e, "cannot renew the reconciler lease"),
                    }
                }
            })
        };
        let result = tokio::select! {
            r = self.pass(fence) => r,
            _ = shutdown.cancelled() => Err(PassError::NotDue),
        };
        keeper.abort();
        if let Err(e) = self.store.release_reconcile_lease(owner, fence).await {
            tracing::warn!(error = %e, "cannot release the reconciler lease (it expires)");
        }
        let outcome = match &result {
            Ok(r) if r.errors.is_empty() => "ok",
            Ok(_) => "partial",
            Err(PassError::LeaseLost(_)) => "lease_lost",
            Err(_) => "error",
        };
        metrics::inc(metrics::RECONCILE_PASSES, &[("outcome", outcome)]);
        metrics::observe(metrics::RECONCILE_DURATION, &[], started.elapsed().as_secs_f64());
        if let Ok(counts) = self.store.open_finding_counts().await {
            for (kind, n) in counts {
                metrics::set(metrics::RECONCILE_OPEN, &[("kind", &kind)], n as f64);
            }
        }
        result
    }

    async fn pass(&self, fence: u64) -> Result<PassReport, PassError> {
        let projects = self.store.reconcile_projects().await?;
        let mut report = PassReport { projects: projects.len(), ..PassReport::default() };
        for (project, regions) in &projects {
            let (inventory, located) = match self.inventory(project, regions).await {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(project_id = %project, error = %e, "reconcile: cannot list the project; skipped");
                    report.errors.push(ProjectError { project_id: project.clone(), error: e.to_string() });
                    continue;
                }
            };
            self.project(fence, project, inventory, &located, &mut report).await?;
        }
        report.findings =
            self.store.list_findings(&FindingFilter { limit: 1000, ..FindingFilter::default() }).await?;
        Ok(report)
    }

    /// What carries our mark in `project`, in every region its services were made in (each
    /// region has its own Nova, Neutron and Cinder), as one inventory, and the region each
    /// resource was listed in (ids are unique across regions; a region listed twice, once by
    /// name and once as the configured one, adds nothing twice).
    async fn inventory(
        &self,
        project: &str,
        regions: &[Option<String>],
    ) -> Result<(Inventory, Located), super::cloud::CloudError> {
        let mut all = Inventory::default();
        let mut located = Located::new();
        for r in regions {
            let inv = match region::scope(r.clone(), self.cloud.marked_resources(project)).await {
                Ok(inv) => inv,
                // A region the catalog does not list (a create that failed for naming it)
                // holds nothing of ours.
                Err(e) if matches!(e.kind, super::cloud::ErrorKind::Invalid) => continue,
                Err(e) => return Err(e),
            };
            let mut new = |id: &str| located.insert(id.to_string(), r.clone()).is_none();
            all.servers.extend(inv.servers.into_iter().filter(|s| new(&s.id)));
            all.ports.extend(inv.ports.into_iter().filter(|p| new(&p.id)));
            all.volumes.extend(inv.volumes.into_iter().filter(|v| new(&v.info.id)));
            all.floating_ips.extend(inv.floating_ips.into_iter().filter(|f| new(&f.id)));
        }
        Ok((all, located))
    }

    async fn project(
        &self,
        fence: u64,
        project: &str,
        inv: Inventory,
        located: &Located,
        report: &mut PassReport,
    ) -> Result<(), PassError> {
        // A call about a resource goes to the region it was listed in.
        let region_of = |id: &str| located.get(id).cloned().flatten();
        let record = self.store.project_record(project).await?;
        let mut jobs: Vec<String> = inv
            .servers
            .iter()
            .filter_map(|s| job_of(&s.tags, Some(&s.metadata)))
            .chain(inv.ports.iter().filter_map(|p| job_of(&p.tags, None)))
            .chain(inv.volumes.iter().filter_map(|v| job_of(&[], Some(&v.info.metadata))))
            .chain(inv.floating_ips.iter().filter_map(|f| job_of(&f.tags, None)))
            .collect();
        jobs.sort();
        jobs.dedup();
        let states = self.store.job_states(&jobs).await?;
        let now = Utc::now();
        let grace = chrono::Duration::from_std(self.cfg.grace).unwrap_or(chrono::Duration::MAX);
        let old = |created: Option<chrono::DateTime<Utc>>| created.is_some_and(|c| now - c >= grace);
        // Orphan or not: `None` if a live service holds it or its job still runs.
        let judge = |id: &str, job: &Option<String>| -> Option<&'static str> {
            if record.owned.contains(id) {
                return None;
            }
            match job.as_ref().and_then(|j| states.get(j)) {
                None => Some("job_missing"),
                Some(s) if s.is_final() => Some("job_final"),
                Some(_) => None,
            }
        };

        let mut orphans = Vec::new();
        for s in &inv.servers {
            let job = job_of(&s.tags, Some(&s.metadata));
            let marked = s.tags.iter().any(|t| t == TAG) || s.metadata.contains_key(VOLUME_MARK_KEY);
            if !marked {
                continue;
            }
            if record.owned.contains(&s.id) {
                // Held, but found only by its metadata: tag it (the gap below Nova 2.52).
                let tagged = s.tags.iter().any(|t| t == TAG);
                if let (false, Some(j)) = (tagged, &job) {
                    let tags = [format!("job-{j}"), TAG.to_string()];
                    match region::scope(region_of(&s.id), self.cloud.tag_server(project, &s.id, &tags)).await
                    {
                        Ok(()) => {
                            tracing::info!(server_id = %s.id, job_id = %j, "reconcile: tagged a server found by its metadata");
                            metrics::inc(metrics::RECONCILE_ADOPTED, &[]);
                            report.adopted += 1;
                        }
                        Err(e) => {
                            tracing::warn!(server_id = %s.id, error = %e, "reconcile: cannot tag the server")
                        }
                    }
                }
                continue;
            }
            if let Some(reason) = judge(&s.id, &job).filter(|_| old(s.created)) {
                orphans.push(Orphan {
                    resource_type: "server",
                    id: s.id.clone(),
                    job,
                    reason,
                    used_by: vec![],
                });
            }
        }
        for p in &inv.ports {
            if !p.tags.iter().any(|t| t == TAG) {
                continue;
            }
            let job = job_of(&p.tags, None);
            if let Some(reason) = judge(&p.id, &job).filter(|_| old(p.created)) {
                let used_by = p.device_id.iter().cloned().collect();
                orphans.push(Orphan { resource_type: "port", id: p.id.clone(), job, reason, used_by });
            }
        }
        for v in &inv.volumes {
            let marked =
                v.info.metadata.get(crate::engine::openstack_cloud::VOLUME_MARK.0).map(String::as_str)
                    == Some(crate::engine::openstack_cloud::VOLUME_MARK.1);
            if !marked {
                continue;
            }
            let job = job_of(&[], Some(&v.info.metadata));
            if let Some(reason) = judge(&v.info.id, &job).filter(|_| old(v.created)) {
                let used_by = v.info.attachments.iter().map(|(s, _)| s.clone()).collect();
                orphans.push(Orphan { resource_type: "volume", id: v.info.id.clone(), job, reason, used_by });
            }
        }

        for f in &inv.floating_ips {
            if !f.tags.iter().any(|t| t == TAG) {
                continue;
            }
            // A service holds it while it maps to the service's port (services record no
            // floating IP of their own).
            if f.port_id.as_ref().is_some_and(|p| record.owned.contains(p)) {
                continue;
            }
            let job = job_of(&f.tags, None);
            if let Some(reason) = judge(&f.id, &job).filter(|_| old(f.created)) {
                orphans.push(Orphan {
                    resource_type: "floating_ip",
                    id: f.id.clone(),
                    job,
                    reason,
                    used_by: vec![],
                });
            }
        }

        let mut seen = Vec::new();
        let mut deleted_servers: HashSet<String> = HashSet::new();
        for o in &orphans {
            let finding = NewFinding {
                kind: "orphan",
                resource_type: o.resource_type,
                resource_id: o.id.clone(),
                project_id: project.to_string(),
                job_id: o.job.clone(),
                target_order_id: None,
                reason: o.reason,
                expected: None,
                found: None,
            };
            let rec = self.store.record_finding(fence, &finding, None).await?;
            seen.push(rec.id);
            if rec.new {
                report.new_findings += 1;
                metrics::inc(
                    metrics::RECONCILE_FINDINGS,
                    &[("kind", "orphan"), ("resource", o.resource_type), ("reason", o.reason)],
                );
                tracing::warn!(
                    project_id = %project,
                    resource = o.resource_type,
                    resource_id = %o.id,
                    job_id = o.job.as_deref().unwrap_or("-"),
                    reason = o.reason,
                    policy = self.cfg.orphans.as_str(),
                    "reconcile: orphan found"
                );
            }
            if self.cfg.orphans != OrphanPolicy::Delete || rec.action == "deleted" {
                if rec.action == "deleted" && o.resource_type == "server" {
                    deleted_servers.insert(o.id.clone());
                }
                continue;
            }
            if let Some(server) = o.used_by.iter().find(|s| !deleted_servers.contains(*s)) {
                let why = format!("used by server {server}, which is not deleted with it");
                if rec.action != "delete_failed" {
                    self.store.set_finding_action(fence, rec.id, "delete_failed", Some(&why)).await?;
                }
                continue;
            }
            // Its job may have been replayed since the lists were read: ask again, just before.
            if let Some(j) = &o.job {
                let now = self.store.job_states(std::slice::from_ref(j)).await?;
                if now.get(j).is_some_and(|s| !s.is_final()) {
                    continue;
                }
            }
            self.store.set_finding_action(fence, rec.id, "deleting", None).await?;
            let delete = async {
                match o.resource_type {
                    "server" => self.cloud.delete_server(project, &o.id).await,
                    "port" => self.cloud.delete_port(project, &o.id).await,
                    "floating_ip" => self.cloud.delete_floating_ip(project, &o.id).await,
                    _ => self.cloud.delete_volume(project, &o.id).await,
                }
            };
            let done = region::scope(region_of(&o.id), delete).await;
            match done {
                Ok(()) => {
                    self.store.set_finding_action(fence, rec.id, "deleted", None).await?;
                    metrics::inc(
                        metrics::RECONCILE_DELETES,
                        &[("resource", o.resource_type), ("outcome", "deleted")],
                    );
                    tracing::warn!(project_id = %project, resource = o.resource_type, resource_id = %o.id, "reconcile: orphan deleted");
                    if o.resource_type == "server" {
                        deleted_servers.insert(o.id.clone());
                    }
                    report.deleted += 1;
                }
                Err(e) => {
                    self.store
                        .set_finding_action(fence, rec.id, "delete_failed", Some(&e.to_string()))
                        .await?;
                    metrics::inc(
                        metrics::RECONCILE_DELETES,
                        &[("resource", o.resource_type), ("outcome", "failed")],
                    );
                    tracing::warn!(project_id = %project, resource_id = %o.id, error = %e, "reconcile: cannot delete the orphan; next pass tries again");
                }
            }
        }

        let mut busy = Vec::new();
        for service in &record.services {
            if service.busy {
                busy.push(service.target_order_id.clone());
                continue;
            }
            for drift in self.drifts(service, &inv) {
                let event = self.drift_event(service, &drift, &inv);
                let finding = NewFinding {
                    kind: "drift",
                    resource_type: drift.resource_type,
                    resource_id: drift.id.clone(),
                    project_id: project.to_string(),
                    job_id: Some(service.create_job_id.clone()),
                    target_order_id: Some(service.target_order_id.clone()),
                    reason: drift.reason,
                    expected: Some(drift.expected.clone()),
                    found: Some(drift.found.clone()),
                };
                let rec = self.store.record_finding(fence, &finding, Some(&event)).await?;
                seen.push(rec.id);
                if rec.new {
                    report.new_findings += 1;
                    self.events.notify_one();
                    metrics::inc(
                        metrics::RECONCILE_FINDINGS,
                        &[("kind", "drift"), ("resource", drift.resource_type), ("reason", drift.reason)],
                    );
                    tracing::warn!(
                        project_id = %project,
                        target_order_id = %service.target_order_id,
                        resource_id = %drift.id,
                        kind = drift.reason,
                        expected = %drift.expected,
                        found = %drift.found,
                        "reconcile: service drift (service.drift event written)"
                    );
                }
            }
        }
        report.cleared += self.store.clear_findings(fence, project, &seen, &busy).await?;
        Ok(())
    }

    /// What differs between `service` as recorded and the cloud.
    fn drifts(&self, service: &ServiceState, inv: &Inventory) -> Vec<Drift> {
        let Some(server_id) = &service.server_id else { return Vec::new() };
        let expected =
            if service.state == "suspended" { suspended_status(self.cfg.suspend_mode) } else { "ACTIVE" };
        let drift = |resource_type, id: &str, reason, expected: &str, found: &str| Drift {
            resource_type,
            id: id.to_string(),
            reason,
            expected: expected.to_string(),
            found: found.to_string(),
        };
        let Some(server) = inv.servers.iter().find(|s| &s.id == server_id) else {
            return vec![drift("server", server_id, "server_missing", expected, "missing")];
        };
        let status = server.status.to_ascii_uppercase();
        if status == "ERROR" {
            return vec![drift("server", server_id, "server_error", expected, "ERROR")];
        }
        if server.task_state.is_some() || IN_MOTION.contains(&status.as_str()) {
            return Vec::new();
        }
        let mut out = Vec::new();
        let off = OUT_OF_SERVICE.contains(&status.as_str());
        if (service.state == "active" && off) || (service.state == "suspended" && status == "ACTIVE") {
            out.push(drift("server", server_id, "server_state", expected, &status));
        }
        if let Some(volume_id) = &service.volume_id {
            match inv.volumes.iter().find(|v| &v.info.id == volume_id) {
                None => out.push(drift("volume", volume_id, "volume_missing", "in-use", "missing")),
                Some(v) if !v.info.attachments.iter().any(|(s, _)| s == server_id) => {
                    let found = match v.info.attachments.first() {
                        Some((other, _)) => format!("{} (attached to {other})", v.info.status),
                        None => v.info.status.clone(),
                    };
                    out.push(drift("volume", volume_id, "volume_detached", "in-use", &found));
                }
                Some(_) => {}
            }
        }
        out
    }

    fn drift_event(&self, service: &ServiceState, drift: &Drift, inv: &Inventory) -> OutboxEvent {
        let server = service.server_id.as_ref().map(|id| {
            let seen = inv.servers.iter().find(|s| &s.id == id);
            EventServer {
                id: id.clone(),
                name: seen.map(|s| s.name.clone()).unwrap_or_default(),
                status: seen.map(|s| s.status.clone()).unwrap_or_else(|| "DELETED".into()),
                addresses: Vec::new(),
                public_ip: None,
                availability_zone: None,
                boot_volume: None,
            }
        });
        let event = Event {
            event_id: Uuid::new_v4(),
            event_type: EventType::Drift,
            occurred_at: Utc::now(),
            job_id: Uuid::parse_str(&service.create_job_id).unwrap_or_default(),
            order_id: service.target_order_id.clone(),
            project_id: service.project_id.clone(),
            attempts: 0,
            action: None,
            target_order_id: Some(service.target_order_id.clone()),
            server,
            port_id: service.port_id.clone(),
            volume: service.volume_id.as_ref().map(|id| EventVolume {
                id: id.clone(),
                device: None,
                kept: None,
            }),
            error: None,
            traceparent: None,
            tenant: None,
            drift: Some(EventDrift {
                kind: drift.reason.to_string(),
                expected: drift.expected.clone(),
                found: drift.found.clone(),
            }),
            region: None,
        };
        OutboxEvent {
            event_id: event.event_id,
            routing_key: EventType::Drift.routing_key().to_string(),
            body: serde_json::to_string(&event).unwrap_or_else(|_| "{}".into()),
        }
    }
}
