//! The tenant kinds: a billing customer's home in OpenStack, onboarded, changed and closed.
//!
//! ```text
//! tenant_create:  project → user → roles → quotas            undo: delete_user, delete_project
//! tenant_update:  check → quotas
//! tenant_close:   check → terminate_services → wait_services → sweep → disable
//! ```
//!
//! A job of these kinds acts on its **tenant** (the `tenants` row, read with the claim); the jobs
//! of one tenant run one at a time in commit order (the store chains them). What a step learns
//! (project, domain, user) travels in the job's data and is written to the tenant row in the
//! same transaction as the job's fenced save ([`Job::change_tenant`]).
//!
//! Exactly once across crashes: `project` and `user` are creating steps. The project carries
//! [`tenant_tag`] (and the provisioner's tag), so a create whose answer was lost finds it by tag
//! and adopts it; a user is found by name in the domain and adopted when its default project is
//! the tenant's. A name taken by someone else's project or user fails the job (`invalid_order`),
//! never adopts it. Role assignments and quota sets are idempotent. The undos delete only what
//! this job made (a second create of an active tenant adopts, and never deletes, its project).
//!
//! The password: the stored order holds it sealed ([`crate::secrets`]); `user` opens it only to
//! create the user, and the same save that records the user drops it from the stored order.
//!
//! Close goes through the lifecycle machinery: it enqueues one `terminate` job per live service
//! of the tenant (order ids derived from the close job's id, so a rerun enqueues nothing twice),
//! waits until they are final, then deletes what is left tagged `provisioner` in the project
//! (servers, then ports, then volumes; in every region of the catalog), then disables (or, with
//! `"delete": true`, deletes) the user and the project. The event lists what was removed.
//!
//! Regions: Keystone is one for all regions, Nova, Neutron and Cinder are one per region. The
//! quotas of a tenant create or update are set in every region the catalog lists (a billing
//! plan's limits hold in each region: a VM order may name any of them), and cleared in each
//! when the project is deleted.

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::cloud::{CloudError, Created, ErrorKind, ProjectSpec, TenantQuotas, UserSpec, tenant_tag};
use super::create::TAG;
use super::kind::{Job, Kind, Observation, Outcome, Step, StepCtx, fail};
use super::openstack_cloud::VOLUME_MARK;
use crate::messages::{ErrorClass, Quotas, TenantOrder};
use crate::openstack::region;
use crate::store::{JobState, TenantSave};

pub const PROJECT: &str = "project";
pub const USER: &str = "user";
pub const ROLES: &str = "roles";
pub const QUOTAS: &str = "quotas";
pub const CHECK: &str = "check";
pub const TERMINATE_SERVICES: &str = "terminate_services";
pub const WAIT_SERVICES: &str = "wait_services";
pub const SWEEP: &str = "sweep";
pub const DISABLE: &str = "disable";

/// Tenant states (`tenants.state`, the `tenant_status` view).
pub const PROVISIONING: &str = "provisioning";
pub const ACTIVE: &str = "active";
pub const CLOSING: &str = "closing";
pub const CLOSED: &str = "closed";
pub const FAILED: &str = "failed";

/// The role the service user gets on every tenant project, so that it can provision VMs there.
pub const SERVICE_ROLE: &str = "member";

/// What tenant steps learned, kept in the job's data (and shown in its event).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// This job made the project (or the user): its undo may delete it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub project_created: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_created: bool,
    /// Close: the terminate orders it enqueued.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub terminates: Vec<String>,
    /// Close: what it removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<crate::messages::event::EventRemoved>,
}

/// The three tenant kinds.
pub fn kinds() -> Vec<Kind> {
    vec![create(), update(), close()]
}

fn step(name: &'static str, run: super::kind::StepFn) -> Step {
    Step { name, creates: false, run, undo: None }
}

fn create() -> Kind {
    Kind {
        name: "tenant_create",
        steps: vec![
            Step {
                name: PROJECT,
                creates: true,
                run: project,
                undo: Some(("delete_project", delete_project)),
            },
            Step { name: USER, creates: true, run: user, undo: Some(("delete_user", delete_user)) },
            step(ROLES, roles),
            step(QUOTAS, quotas),
        ],
        running_state: None,
        on_end: |_, _| None,
    }
}

fn update() -> Kind {
    Kind {
        name: "tenant_update",
        steps: vec![step(CHECK, update_check), step(QUOTAS, quotas)],
        running_state: None,
        on_end: |_, _| None,
    }
}

fn close() -> Kind {
    Kind {
        name: "tenant_close",
        steps: vec![
            step(CHECK, close_check),
            step(TERMINATE_SERVICES, terminate_services),
            step(WAIT_SERVICES, wait_services),
            step(SWEEP, sweep),
            step(DISABLE, disable),
        ],
        running_state: None,
        on_end: |_, _| None,
    }
}

/// What a tenant job's end changes on its tenant (the engine writes it with the final save).
pub fn on_end(job: &Job, state: JobState) -> Option<TenantSave> {
    let tenant = job.tenant.as_ref()?;
    let mut s = TenantSave { tenant_ref: tenant.tenant_ref.clone(), ..TenantSave::default() };
    let completed = state == JobState::Completed;
    s.state = match job.kind.as_str() {
        "tenant_create" if completed => Some(ACTIVE.into()),
        // A failed re-onboarding of an active tenant leaves it active (nothing of it was undone).
        "tenant_create" if tenant.state != ACTIVE => Some(FAILED.into()),
        "tenant_close" if completed => Some(CLOSED.into()),
        "tenant_close" if job.data.started => Some(FAILED.into()),
        _ => None,
    };
    s.state.as_ref()?;
    Some(s)
}

fn store_error(e: crate::store::StoreError) -> CloudError {
    CloudError::new(ErrorKind::Transient, e.to_string())
}

fn order(job: &Job) -> Result<TenantOrder, Outcome> {
    job.tenant_order.clone().ok_or_else(|| fail(ErrorClass::Internal, "a tenant job without its order"))
}

fn tenant_ref(job: &Job) -> String {
    job.tenant.as_ref().map(|t| t.tenant_ref.clone()).unwrap_or_default()
}

fn data(job: &mut Job) -> &mut TenantData {
    job.data.tenant.get_or_insert_with(TenantData::default)
}

/// The engine's quotas from billing's.
pub fn cloud_quotas(q: Quotas) -> TenantQuotas {
    TenantQuotas {
        instances: q.instances,
        cores: q.cores,
        ram_mb: q.ram_mb,
        volumes: q.volumes,
        gigabytes: q.gigabytes,
        ports: q.ports,
        networks: q.networks,
        floating_ips: q.floating_ips,
    }
}

/// Copies the tenant row's ids into the job's data (what the event shows).
fn load_tenant(job: &mut Job) -> Result<crate::store::TenantRow, Outcome> {
    let Some(t) = job.tenant.clone() else {
        return Err(fail(ErrorClass::Internal, "the job's tenant is not in the store"));
    };
    let d = data(job);
    d.project_id = d.project_id.take().or(t.project_id.clone());
    d.domain_id = d.domain_id.take().or(t.domain_id.clone());
    d.user_id = d.user_id.take().or(t.user_id.clone());
    if let Some(p) = &t.project_id {
        job.project_id = p.clone();
    }
    Ok(t)
}

// ---- tenant_create ----

fn project<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let order = match order(job) {
            Ok(o) => o,
            Err(o) => return o,
        };
        let Some(spec) = order.project.clone() else {
            return fail(ErrorClass::InvalidOrder, "a tenant_create needs a project");
        };
        let known = job.tenant.as_ref().and_then(|t| t.project_id.clone());
        let tag = tenant_tag(&order.tenant_ref);
        let domain = cloud!(ctx.tenants.resolve_domain(spec.domain.as_deref().unwrap_or("Default")).await);
        let (project, created) = match cloud!(ctx.tenants.find_project_by_tag(&tag).await) {
            // Ours if a create of this job may have made it (a lost answer, a crash).
            Some(p) => {
                let created = known.as_deref() != Some(p.id.as_str())
                    && job.may_have_created(PROJECT)
                    && job.intent_on_entry;
                (p, created)
            }
            None => {
                let new = ProjectSpec {
                    name: spec.name.clone(),
                    domain: domain.clone(),
                    description: spec.description.clone().unwrap_or_default(),
                    tags: vec![tag.clone(), TAG.to_string()],
                };
                match cloud!(ctx.tenants.create_project(&new).await) {
                    Created::New(p) => (p, true),
                    Created::Existing(p) if p.tags.contains(&tag) => (p, false),
                    Created::Existing(p) => {
                        return fail(
                            ErrorClass::InvalidOrder,
                            format!(
                                "project name {:?} is taken in domain {domain} by project {}, which is not tenant {}'s",
                                spec.name, p.id, order.tenant_ref
                            ),
                        );
                    }
                }
            }
        };
        if !project.enabled {
            cloud!(ctx.tenants.set_project_enabled(&project.id, true).await);
        }
        tracing::info!(project_id = %project.id, created, "tenant project");
        job.project_id = project.id.clone();
        let d = data(job);
        d.project_id = Some(project.id.clone());
        d.domain_id = Some(project.domain_id.clone());
        d.project_created |= created;
        let (pid, did) = (project.id.clone(), project.domain_id.clone());
        job.change_tenant(|t| {
            t.state = Some(PROVISIONING.into());
            t.project_id = Some(pid);
            t.domain_id = Some(did);
        });
        Outcome::Next
    })
}

fn user<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let order = match order(job) {
            Ok(o) => o,
            Err(o) => return o,
        };
        let Some(spec) = order.user.clone() else {
            return fail(ErrorClass::InvalidOrder, "a tenant_create needs a user");
        };
        let d = data(job).clone();
        let (Some(project), Some(domain)) = (d.project_id, d.domain_id) else {
            return fail(ErrorClass::Internal, "user step without the tenant's project");
        };
        let ours = |u: &super::cloud::UserInfo| u.default_project_id.as_deref() == Some(project.as_str());
        let taken = |id: &str| {
            fail(
                ErrorClass::InvalidOrder,
                format!(
                    "user name {:?} is taken in domain {domain} by user {id}, whose default project is not tenant {}'s",
                    spec.name, order.tenant_ref
                ),
            )
        };
        let mut found = None;
        if job.intent_on_entry || job.tenant.as_ref().is_some_and(|t| t.user_id.is_some()) {
            found = cloud!(ctx.tenants.find_user(&domain, &spec.name).await);
        }
        let (user, created) = match found {
            Some(u) if ours(&u) => {
                let created = job.intent_on_entry
                    && job.tenant.as_ref().and_then(|t| t.user_id.as_deref()) != Some(u.id.as_str());
                (u, created)
            }
            Some(u) => return taken(&u.id),
            None => {
                let password = match spec.password.as_deref() {
                    None => None,
                    Some(sealed) => {
                        let Some(key) = &ctx.secrets else {
                            return fail(
                                ErrorClass::Internal,
                                "the order's password is sealed, but this worker has no PROVISIONER_SECRETS_KEY",
                            );
                        };
                        match key.open(sealed, &job.order_id) {
                            Ok(p) => Some(p),
                            Err(e) => {
                                return fail(ErrorClass::Internal, format!("the order's password: {e}"));
                            }
                        }
                    }
                };
                let new = UserSpec {
                    name: spec.name.clone(),
                    domain: domain.clone(),
                    default_project_id: project.clone(),
                    email: spec.email.clone(),
                    password,
                };
                match cloud!(ctx.tenants.create_user(&new).await) {
                    Created::New(u) => (u, true),
                    Created::Existing(u) if ours(&u) => (u, false),
                    Created::Existing(u) => return taken(&u.id),
                }
            }
        };
        tracing::info!(user_id = %user.id, created, "tenant user");
        let d = data(job);
        d.user_id = Some(user.id.clone());
        d.user_created |= created;
        // The user exists: the stored order loses its password, in the save that records it.
        let scrubbed = crate::messages::tenant::with_password(&job.order_body, None);
        if let Some(body) = &scrubbed {
            job.order_body = body.clone();
            if let Some(u) = job.tenant_order.as_mut().and_then(|o| o.user.as_mut()) {
                u.password = None;
            }
        }
        let uid = user.id.clone();
        job.change_tenant(|t| {
            t.user_id = Some(uid);
            t.order_body = scrubbed;
        });
        Outcome::Next
    })
}

fn roles<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let order = match order(job) {
            Ok(o) => o,
            Err(o) => return o,
        };
        let d = data(job).clone();
        let (Some(project), Some(user)) = (d.project_id, d.user_id) else {
            return fail(ErrorClass::Internal, "roles step without the tenant's project and user");
        };
        let names = if order.roles.is_empty() { vec![SERVICE_ROLE.to_string()] } else { order.roles.clone() };
        for name in &names {
            let role = cloud!(ctx.tenants.find_role(name).await);
            cloud!(ctx.tenants.assign_role(&project, &user, &role).await);
        }
        // The provisioner itself provisions the tenant's VMs in the project.
        let me = cloud!(ctx.tenants.service_user_id().await);
        let member = cloud!(ctx.tenants.find_role(SERVICE_ROLE).await);
        cloud!(ctx.tenants.assign_role(&project, &me, &member).await);
        Outcome::Next
    })
}

fn quotas<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let order = match order(job) {
            Ok(o) => o,
            Err(o) => return o,
        };
        let Some(q) = order.quotas else { return Outcome::Done };
        if job.project_id.is_empty() {
            return fail(ErrorClass::Internal, "quotas step without the tenant's project");
        }
        cloud!(ctx.tenants.set_quotas(&job.project_id, &cloud_quotas(q)).await);
        let before: Quotas = job
            .tenant
            .as_ref()
            .and_then(|t| t.quotas.as_deref())
            .and_then(|q| serde_json::from_str(q).ok())
            .unwrap_or_default();
        let all = serde_json::to_string(&before.merged(q)).ok();
        job.change_tenant(|t| t.quotas = all);
        Outcome::Done
    })
}

fn delete_user<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let d = data(job).clone();
        if let (true, Some(id)) = (d.user_created, d.user_id) {
            cloud!(ctx.tenants.delete_user(&id).await);
            data(job).user_created = false;
        }
        Outcome::Done
    })
}

fn delete_project<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let d = data(job).clone();
        if let (true, Some(id)) = (d.project_created, d.project_id) {
            cloud!(ctx.tenants.clear_quotas(&id).await);
            cloud!(ctx.tenants.delete_project(&id).await);
            data(job).project_created = false;
        }
        Outcome::Done
    })
}

// ---- tenant_update ----

fn update_check<'a>(_: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let t = match load_tenant(job) {
            Ok(t) => t,
            Err(o) => return o,
        };
        if t.state != ACTIVE || t.project_id.is_none() {
            return fail(
                ErrorClass::InvalidOrder,
                format!("tenant {} is {}: only an active tenant's quotas are changed", t.tenant_ref, t.state),
            );
        }
        Outcome::Next
    })
}

// ---- tenant_close ----

fn close_check<'a>(_: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let t = match load_tenant(job) {
            Ok(t) => t,
            Err(o) => return o,
        };
        if t.state == CLOSED {
            job.data.noop = Some(format!("tenant {} is closed already", t.tenant_ref));
            return Outcome::Done;
        }
        job.change_tenant(|s| s.state = Some(CLOSING.into()));
        if t.project_id.is_none() {
            job.data.noop =
                Some(format!("tenant {} has no project (its onboarding did not complete)", t.tenant_ref));
            return Outcome::Done;
        }
        Outcome::Next
    })
}

/// The order id of the terminate a close enqueues for a service (deterministic: a rerun of the
/// step finds the job it made).
pub fn terminate_order_id(close_job: uuid::Uuid, target: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(target.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("close-{close_job}-{hex}")
}

fn terminate_services<'a>(
    ctx: &'a StepCtx,
    job: &'a mut Job,
    _: Option<Observation>,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let tenant = tenant_ref(job);
        let services = cloud!(ctx.store.tenant_services(&tenant, &job.project_id).await.map_err(store_error));
        let live: Vec<_> =
            services.into_iter().filter(|s| s.state != "terminated" && s.state != "failed").collect();
        let reason = format!("tenant {tenant} closed by order {}", job.order_id);
        let mut jobs: Vec<crate::store::intake::NewJob> = live
            .iter()
            .map(|s| {
                let order_id = terminate_order_id(job.id, &s.target_order_id);
                let body = serde_json::json!({
                    "version": 1, "order_id": order_id, "action": "terminate",
                    "target_order_id": s.target_order_id, "reason": reason.chars().take(255).collect::<String>(),
                })
                .to_string();
                crate::store::intake::NewJob {
                    id: uuid::Uuid::new_v4(),
                    order_id,
                    project_id: String::new(),
                    action: "terminate".into(),
                    target_order_id: Some(s.target_order_id.clone()),
                    tenant_ref: None,
                    order_digest: crate::amqp::intake::sha256_hex(body.as_bytes()),
                    order_body: body,
                    traceparent: job.traceparent.clone(),
                }
            })
            .collect();
        if !jobs.is_empty() {
            cloud!(ctx.store.insert_jobs(&mut jobs).await.map_err(store_error));
        }
        let d = data(job);
        for (s, j) in live.iter().zip(&jobs) {
            if !d.terminates.contains(&j.order_id) {
                d.terminates.push(j.order_id.clone());
            }
            let removed = d.removed.get_or_insert_with(Default::default);
            if !removed.services.contains(&s.target_order_id) {
                removed.services.push(s.target_order_id.clone());
            }
        }
        tracing::info!(services = live.len(), "tenant close: terminates enqueued");
        Outcome::Next
    })
}

fn wait_services<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let orders = data(job).terminates.clone();
        let ends = cloud!(ctx.store.job_ends(&orders).await.map_err(store_error));
        if let Some(bad) = ends.iter().find(|e| e.state == "failed" || e.state == "cancelled") {
            return fail(
                ErrorClass::CloudError,
                format!(
                    "terminate {} ended {}: {}; the tenant stays as it is (replay the close once fixed)",
                    bad.order_id,
                    bad.state,
                    bad.error.clone().unwrap_or_default()
                ),
            );
        }
        let running = ends.iter().filter(|e| e.state != "completed").count();
        if running == 0 && ends.len() == orders.len() {
            return Outcome::Next;
        }
        let started = job.data.step_started_at.unwrap_or_else(chrono::Utc::now);
        let waited = (chrono::Utc::now() - started).to_std().unwrap_or_default();
        if waited > ctx.wait_timeout * 2 {
            return fail(
                ErrorClass::Timeout,
                format!("{running} service terminate(s) not done after {}s", waited.as_secs()),
            );
        }
        Outcome::Later(ctx.recheck)
    })
}

/// What a sweep of one region removed, and how much is still going away there.
#[derive(Default)]
struct Swept {
    left: usize,
    servers: Vec<String>,
    ports: Vec<String>,
    volumes: Vec<String>,
}

/// One region's sweep: servers first (their volumes detach and their ports free), then ports,
/// then volumes.
async fn sweep_region(ctx: &StepCtx, project: &str) -> Result<Swept, CloudError> {
    let mut out = Swept::default();
    let servers = ctx.cloud.find_servers(project, TAG).await?;
    for s in servers.iter().filter(|s| !s.status.eq_ignore_ascii_case("DELETED")) {
        out.left += 1;
        if s.task_state.as_deref() != Some("deleting") {
            ctx.cloud.delete_server(project, &s.id).await?;
        }
        out.servers.push(s.id.clone());
    }
    if out.left == 0 {
        for id in ctx.cloud.find_ports(project, TAG).await? {
            ctx.cloud.delete_port(project, &id).await?;
            out.ports.push(id);
        }
        for v in ctx.cloud.find_volumes(project, VOLUME_MARK.0, VOLUME_MARK.1).await? {
            out.left += 1;
            if v.status == "available" || v.status.starts_with("error") {
                ctx.cloud.delete_volume(project, &v.id).await?;
            }
            out.volumes.push(v.id.clone());
        }
    }
    Ok(out)
}

/// Deletes what is left tagged by the provisioner in the project, in every region of the
/// catalog (a VM order may have named any of them); runs again until nothing is left.
fn sweep<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let project = job.project_id.clone();
        let regions = cloud!(ctx.cloud.regions(&project).await);
        let regions: Vec<Option<String>> = if regions.catalog.is_empty() {
            vec![None]
        } else {
            regions.catalog.into_iter().map(Some).collect()
        };
        let mut left = 0usize;
        let (mut deleted_servers, mut deleted_ports, mut deleted_volumes) =
            (Vec::new(), Vec::new(), Vec::new());
        for r in regions {
            let swept = cloud!(region::scope(r, sweep_region(ctx, &project)).await);
            left += swept.left;
            deleted_servers.extend(swept.servers);
            deleted_ports.extend(swept.ports);
            deleted_volumes.extend(swept.volumes);
        }
        let removed = data(job).removed.get_or_insert_with(Default::default);
        for (list, ids) in [
            (&mut removed.servers, deleted_servers),
            (&mut removed.ports, deleted_ports),
            (&mut removed.volumes, deleted_volumes),
        ] {
            for id in ids {
                if !list.contains(&id) {
                    list.push(id);
                }
            }
        }
        if left == 0 {
            return Outcome::Next;
        }
        let started = job.data.step_started_at.unwrap_or_else(chrono::Utc::now);
        let waited = (chrono::Utc::now() - started).to_std().unwrap_or_default();
        if waited > ctx.wait_timeout {
            return fail(
                ErrorClass::Timeout,
                format!("{left} resource(s) still in the project after {}s", waited.as_secs()),
            );
        }
        Outcome::Later(ctx.recheck)
    })
}

fn disable<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let delete = job.tenant_order.as_ref().and_then(|o| o.delete).unwrap_or(false);
        let d = data(job).clone();
        let project = job.project_id.clone();
        if let Some(user) = &d.user_id {
            if delete {
                cloud!(ctx.tenants.delete_user(user).await);
            } else {
                cloud!(ctx.tenants.set_user_enabled(user, false).await);
            }
        }
        if delete {
            cloud!(ctx.tenants.clear_quotas(&project).await);
            cloud!(ctx.tenants.delete_project(&project).await);
        } else {
            cloud!(ctx.tenants.set_project_enabled(&project, false).await);
        }
        let how = if delete { "deleted" } else { "disabled" };
        let removed = data(job).removed.get_or_insert_with(Default::default);
        removed.project = Some(how.into());
        removed.user = d.user_id.as_ref().map(|_| how.into());
        Outcome::Done
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_kinds_and_their_undos() {
        let names: Vec<_> = kinds().iter().map(|k| k.name).collect();
        assert_eq!(names, ["tenant_create", "tenant_update", "tenant_close"]);
        let c = create();
        assert_eq!(c.first_undo(QUOTAS).map(|u| u.0), Some("delete_user"));
        assert_eq!(c.undo_after("delete_user").map(|u| u.0), Some("delete_project"));
        assert!(c.steps.iter().filter(|s| s.creates).map(|s| s.name).eq([PROJECT, USER]));
        assert!(close().steps.iter().all(|s| s.undo.is_none()), "a close is not undone");
    }

    #[test]
    fn terminate_order_ids_are_stable_short_and_distinct() {
        let id = uuid::Uuid::new_v4();
        let a = terminate_order_id(id, &"x".repeat(128));
        assert_eq!(a, terminate_order_id(id, &"x".repeat(128)));
        assert_ne!(a, terminate_order_id(id, "y"));
        assert!(a.len() <= 128, "{a}");
    }
}
