//! The `create` kind: one VM (a Neutron port with the ordered security groups, a Nova server on
//! it) and, if ordered, one Cinder volume attached to it.
//!
//! ```text
//! resolve → create_keypair → create_port → allocate_public_ip → associate_public_ip → create_server
//!         → wait_server ─(no volume)──────────────────────────────────────────────▶ done
//!                      └→ create_volume → wait_volume → attach_volume → wait_attached → done
//! undo, in reverse: detach_volume ← delete_volume ← delete_server ← release_public_ip
//!                   ← delete_port ← delete_keypair
//! ```
//!
//! The two public IP steps do something only for an order with `server.public_ip`: a floating IP
//! of the external network it names (resolved at `resolve`), tagged with the job's mark like the
//! port, associated with the port before the server boots (so Nova's first view of the server
//! already shows it, and a project short of floating IPs fails before a server was made).
//!
//! `server.availability_zone` and `server.server_group` add no step: both go into the one
//! `POST /servers` (`availability_zone`, and the scheduler hint `group` with the group's id,
//! resolved at `resolve` by id or exact name in the order's project). Nova refuses a zone that
//! is not available, or a group that is gone, with a 400 before any server exists (`Invalid`:
//! the job fails `invalid_order`); a server made is adopted by its tag as always, and is in its
//! zone and group whoever made it. Nothing is created for the group, so no undo deletes
//! anything: Nova drops a deleted server from its group's members. `wait_server` keeps the zone
//! Nova placed the server in for `job.completed` (`server.availability_zone`).
//!
//! With `server.boot_volume` the server boots from a Cinder volume that Nova makes from the
//! image inside the server create (block device mapping v2), so there is no step of its own:
//! adoption after a crash is the server's (by its tag), and `wait_server` records the volume
//! (Nova lists it first in `os-extended-volumes:volumes_attached`; Nova does not mark it with
//! the job) once the server is up. The rollback's `delete_server` reads a server's volumes
//! before deleting it and, once the server is gone, deletes the boot volume if Nova left it
//! (whatever `delete_on_termination` says: nothing was delivered). A duplicate server found at
//! adoption (or in the rollback) leaves its boot volume too when the order keeps boot volumes:
//! the step records it (`stray_volumes`), deletes the server, and deletes the volume once Nova
//! has let go of it, before it moves on. A Cinder quota hit while Nova builds the volume ends
//! the server in `ERROR` with a fault the client classifies as quota.
//!
//! `create_keypair` does something only for an order with `server.ssh_public_key`: it imports
//! the key as the Nova keypair `prov-<job id>` (the service user's: Nova keypairs belong to a
//! user, not to a project), which the server boots with. Its name is the job's mark, so a
//! keypair found under it (after a crash, or Nova's 409 on import) is adopted when it holds the
//! order's key, and refused when it holds another.
//!
//! Every resource carries the job's mark (`job-<id>`: a Nova server tag and a Neutron port tag,
//! plus `provisioner`; Cinder metadata `provisioner_job=<id>`). A creating step that finds its
//! intent set on entry (a crash, a timeout, a lost answer) lists by that mark first and adopts
//! what it finds (keeping one and deleting extras), so a job owns exactly one of each.

use std::collections::BTreeMap;

use chrono::Utc;
use futures_util::future::BoxFuture;

use super::cloud::{
    BootVolumeSpec, CloudError, Created, ErrorKind, FloatingIpSpec, PortSpec, Resolved, ServerSpec,
    VolumeInfo, VolumeSpec,
};
use super::kind::{Failure, Job, Kind, Observation, Outcome, Step, StepCtx, Watch};
use crate::messages::{ErrorClass, Order};
use crate::store::{JobState, ServiceSave};

/// Tag on every server and port the provisioner creates (the poller lists by it).
pub const TAG: &str = "provisioner";
/// Cinder metadata key that marks a volume with its job id.
pub const VOLUME_MARK_KEY: &str = "provisioner_job";

pub const RESOLVE: &str = "resolve";
pub const CREATE_KEYPAIR: &str = "create_keypair";
pub const CREATE_PORT: &str = "create_port";
pub const ALLOCATE_PUBLIC_IP: &str = "allocate_public_ip";
pub const ASSOCIATE_PUBLIC_IP: &str = "associate_public_ip";
pub const CREATE_SERVER: &str = "create_server";
pub const WAIT_SERVER: &str = "wait_server";
pub const CREATE_VOLUME: &str = "create_volume";
pub const WAIT_VOLUME: &str = "wait_volume";
pub const ATTACH_VOLUME: &str = "attach_volume";
pub const WAIT_ATTACHED: &str = "wait_attached";

/// The `create` kind.
pub fn kind() -> Kind {
    Kind {
        name: "create",
        // A replayed create provisions its service again.
        running_state: Some(super::lifecycle::PROVISIONING),
        on_end,
        steps: vec![
            Step { name: RESOLVE, creates: false, run: resolve, undo: None },
            Step {
                name: CREATE_KEYPAIR,
                creates: true,
                run: create_keypair,
                undo: Some(("delete_keypair", delete_keypair)),
            },
            Step {
                name: CREATE_PORT,
                creates: true,
                run: create_port,
                undo: Some(("delete_port", delete_port)),
            },
            Step {
                name: ALLOCATE_PUBLIC_IP,
                creates: true,
                run: allocate_public_ip,
                undo: Some(("release_public_ip", release_public_ip)),
            },
            Step { name: ASSOCIATE_PUBLIC_IP, creates: true, run: associate_public_ip, undo: None },
            Step {
                name: CREATE_SERVER,
                creates: true,
                run: create_server,
                undo: Some(("delete_server", delete_server)),
            },
            Step { name: WAIT_SERVER, creates: false, run: wait_server, undo: None },
            Step {
                name: CREATE_VOLUME,
                creates: true,
                run: create_volume,
                undo: Some(("delete_volume", delete_volume)),
            },
            Step { name: WAIT_VOLUME, creates: false, run: wait_volume, undo: None },
            Step {
                name: ATTACH_VOLUME,
                creates: true,
                run: attach_volume,
                undo: Some(("detach_volume", detach_volume)),
            },
            Step { name: WAIT_ATTACHED, creates: false, run: wait_attached, undo: None },
        ],
    }
}

/// The service a create made: `active` with its resources when it completed; `failed` when it
/// did not (the rollback deleted what it made).
fn on_end(job: &Job, state: JobState) -> Option<ServiceSave> {
    let mut s = ServiceSave { target_order_id: job.target_order_id.clone(), ..ServiceSave::default() };
    if state == JobState::Completed {
        s.state = Some(super::lifecycle::ACTIVE.into());
        s.ids = Some((job.server_id.clone(), job.port_id.clone(), job.volume_id.clone()));
        s.boot_volume_id = job.data.boot_volume.as_ref().and_then(|b| b.id.clone());
        s.flavor = job.data.resolved.as_ref().map(|r| (r.flavor_name.clone(), r.flavor_id.clone()));
        s.last_action_order_id = Some(job.order_id.clone());
    } else {
        s.state = Some(super::lifecycle::FAILED.into());
    }
    Some(s)
}

/// What a create job knows of its order's public IP (`jobs.data`): the external network, then
/// the floating IP allocated from it and whether it is associated with the port.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PublicIpData {
    pub network_id: String,
    /// The network's name (the event reports it).
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub associated: bool,
}

/// What a create job knows of its order's boot volume (`jobs.data`): the volume Nova made, once
/// the server showed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootVolumeData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

/// The boot volume among a server's attached volumes: the first that is not the data volume
/// (Nova lists them in block device order, the boot volume at index 0 first).
fn boot_volume_of(volumes: &[String], data_volume: Option<&String>) -> Option<String> {
    volumes.iter().find(|v| Some(*v) != data_volume).cloned()
}

/// Deletes the boot volumes of duplicate servers this job deleted ([`JobData::stray_volumes`]),
/// each once Nova has let go of it (detached, `available`); `true` when none is left. Nova made
/// them for a server carrying the job's mark, so they are the job's, whatever the order said
/// about keeping the one it delivers.
///
/// [`JobData::stray_volumes`]: super::kind::JobData::stray_volumes
async fn sweep_stray_volumes(ctx: &StepCtx, job: &mut Job) -> Result<bool, CloudError> {
    let mut gone = Vec::new();
    for id in job.data.stray_volumes.clone() {
        match ctx.cloud.get_volume(&job.project_id, &id).await? {
            None => gone.push(id),
            Some(v) if deletable(&v) => {
                tracing::warn!(volume_id = %id, "deleting the boot volume of a duplicate server of this job");
                ctx.cloud.delete_volume(&job.project_id, &id).await?;
            }
            // Detaching from its deleted server, or deleting: look again.
            Some(_) => {}
        }
    }
    job.data.stray_volumes.retain(|id| !gone.contains(id));
    Ok(job.data.stray_volumes.is_empty())
}

/// Records a duplicate server's boot volume for [`sweep_stray_volumes`] (once).
fn note_stray(job: &mut Job, volume: String) {
    if !job.data.stray_volumes.contains(&volume) {
        job.data.stray_volumes.push(volume);
    }
}

/// A volume no server holds any more, that Cinder will delete.
fn deletable(v: &VolumeInfo) -> bool {
    v.attachments.is_empty() && (v.status == "available" || v.status.starts_with("error"))
}

/// Resolves the order's external network once (`None`: no public IP ordered).
async fn public_network(ctx: &StepCtx, job: &mut Job) -> Result<(), CloudError> {
    if job.data.public_ip.is_some() {
        return Ok(());
    }
    let Some(wanted) = job.order.as_ref().and_then(|o| o.server.public_ip.clone()) else { return Ok(()) };
    let (network_id, network) = ctx.cloud.find_external_network(&job.project_id, &wanted.network).await?;
    job.data.public_ip = Some(PublicIpData { network_id, network, ..PublicIpData::default() });
    Ok(())
}

/// The create order of a create job.
fn order(job: &Job) -> Result<Order, Outcome> {
    job.order.clone().ok_or_else(|| internal("a create job without its order"))
}

fn internal(msg: impl Into<String>) -> Outcome {
    Outcome::Fail(Failure::new(ErrorClass::Internal, msg))
}

/// Fails with `timeout` when the current wait has lasted longer than allowed, else waits on.
fn wait_on(ctx: &StepCtx, job: &Job, step: &'static str, watch: Watch, what: &str) -> Outcome {
    let started = job.data.step_started_at.unwrap_or_else(Utc::now);
    let waited = (Utc::now() - started).to_std().unwrap_or_default();
    if waited > ctx.wait_timeout {
        return Outcome::Fail(Failure::new(
            ErrorClass::Timeout,
            format!("{what} not ready after {}s", waited.as_secs()),
        ));
    }
    Outcome::Wait { step, watch }
}

async fn resolved(ctx: &StepCtx, job: &mut Job) -> Result<Resolved, CloudError> {
    if let Some(r) = &job.data.resolved {
        return Ok(r.clone());
    }
    let Some(o) = job.order.as_ref() else {
        return Err(CloudError::new(super::cloud::ErrorKind::Permanent, "a create job without its order"));
    };
    let s = &o.server;
    let r = ctx.cloud.resolve(&job.project_id, &s.image, &s.flavor, &s.network).await?;
    job.data.resolved = Some(r.clone());
    Ok(r)
}

/// The ids of the order's security groups (`None`: the order names none, the project's default
/// applies), resolved once and kept with the job.
async fn security_groups(ctx: &StepCtx, job: &mut Job) -> Result<Option<Vec<String>>, CloudError> {
    if let Some(ids) = &job.data.security_groups {
        return Ok(Some(ids.clone()));
    }
    let names = job.order.as_ref().map(|o| o.server.security_groups.clone()).unwrap_or_default();
    if names.is_empty() {
        return Ok(None);
    }
    let ids = ctx.cloud.find_security_groups(&job.project_id, &names).await?;
    job.data.security_groups = Some(ids.clone());
    Ok(Some(ids))
}

/// The id of the order's server group (`None`: the order names none), resolved once and kept
/// with the job.
async fn server_group(ctx: &StepCtx, job: &mut Job) -> Result<Option<String>, CloudError> {
    if let Some(id) = &job.data.server_group {
        return Ok(Some(id.clone()));
    }
    let Some(wanted) = job.order.as_ref().and_then(|o| o.server.server_group.clone()) else {
        return Ok(None);
    };
    let id = ctx.cloud.find_server_group(&job.project_id, &wanted).await?;
    job.data.server_group = Some(id.clone());
    Ok(Some(id))
}

fn resolve<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        job.data.resolved = None;
        job.data.security_groups = None;
        job.data.public_ip = None;
        job.data.server_group = None;
        if job.project_id.is_empty() {
            // A create that named its tenant, whose onboarding did not complete.
            let tenant = job.tenant.as_ref();
            return Outcome::Fail(Failure::new(
                ErrorClass::InvalidOrder,
                format!(
                    "tenant {} has no project (it is {}): its onboarding did not complete",
                    tenant.map(|t| t.tenant_ref.as_str()).unwrap_or("?"),
                    tenant.map(|t| t.state.as_str()).unwrap_or("unknown")
                ),
            ));
        }
        if ctx.preflight
            && let Some(o) = job.order.as_ref()
        {
            // Fail fast on what cannot succeed; anything pre-flight cannot tell goes on as usual.
            // The job's project (a create by tenant_ref has it from its tenant, not its order).
            let o = crate::messages::Order { project_id: job.project_id.clone(), ..o.clone() };
            let report = super::preflight::check_order(ctx.cloud.as_ref(), &o).await;
            if let Some(c) = report.blocking() {
                let class = c.class.unwrap_or(ErrorClass::NotFound);
                return Outcome::Fail(Failure::new(class, format!("pre-flight: {}: {}", c.check, c.detail)));
            }
        }
        cloud!(resolved(ctx, job).await);
        cloud!(security_groups(ctx, job).await);
        cloud!(public_network(ctx, job).await);
        cloud!(server_group(ctx, job).await);
        Outcome::Next
    })
}

/// The Nova keypair a create job imports for its order's `ssh_public_key`.
pub fn keypair_name(job_id: &uuid::Uuid) -> String {
    format!("prov-{job_id}")
}

/// Whether two OpenSSH public key lines hold the same key (type and data; comments aside).
fn same_key(a: &str, b: &str) -> bool {
    a.split_ascii_whitespace().take(2).eq(b.split_ascii_whitespace().take(2))
}

fn create_keypair<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(key) = job.order.as_ref().and_then(|o| o.server.ssh_public_key.clone()) else {
            return Outcome::Next;
        };
        if job.data.keypair.is_some() {
            return Outcome::Next;
        }
        let name = keypair_name(&job.id);
        let found = if job.intent_on_entry && job.may_have_created(CREATE_KEYPAIR) {
            cloud!(ctx.cloud.get_keypair(&job.project_id, &name).await)
        } else {
            None
        };
        let existing = match found {
            Some(k) => k,
            None => match cloud!(ctx.cloud.import_keypair(&job.project_id, &name, &key).await) {
                Created::New(k) => {
                    job.data.keypair = Some(k.name);
                    return Outcome::Next;
                }
                Created::Existing(k) => k,
            },
        };
        if !same_key(&existing.public_key, &key) {
            return Outcome::Fail(Failure::new(
                ErrorClass::CloudError,
                format!(
                    "the keypair {name} exists with another public key (fingerprint {}): not this job's",
                    existing.fingerprint
                ),
            ));
        }
        tracing::info!(keypair = %name, "adopted the keypair imported before the interruption");
        job.data.keypair = Some(name);
        Outcome::Next
    })
}

fn create_port<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        if job.port_id.is_some() {
            return Outcome::Next;
        }
        let mark = job.mark();
        if job.intent_on_entry && job.may_have_created(CREATE_PORT) {
            let found = cloud!(ctx.cloud.find_ports(&job.project_id, &mark).await);
            if let Some((keep, extras)) = found.split_first() {
                for extra in extras {
                    tracing::warn!(port_id = %extra, "deleting a duplicate port of this job");
                    cloud!(ctx.cloud.delete_port(&job.project_id, extra).await);
                }
                tracing::info!(port_id = %keep, "adopted the port created before the interruption");
                job.port_id = Some(keep.clone());
                return Outcome::Next;
            }
        }
        let r = cloud!(resolved(ctx, job).await);
        let groups = cloud!(security_groups(ctx, job).await);
        let spec = PortSpec {
            network_id: r.network_id,
            name: format!("{}-port", job.server_name()),
            tags: vec![mark, TAG.to_string()],
            security_groups: groups,
        };
        let id = cloud!(ctx.cloud.create_port(&job.project_id, &spec).await);
        job.port_id = Some(id);
        Outcome::Next
    })
}

fn allocate_public_ip<'a>(
    ctx: &'a StepCtx,
    job: &'a mut Job,
    _: Option<Observation>,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        if job.order.as_ref().is_none_or(|o| o.server.public_ip.is_none()) {
            return Outcome::Next;
        }
        cloud!(public_network(ctx, job).await);
        if job.data.public_ip.as_ref().is_some_and(|p| p.id.is_some()) {
            return Outcome::Next;
        }
        let mark = job.mark();
        let found = if job.intent_on_entry && job.may_have_created(ALLOCATE_PUBLIC_IP) {
            cloud!(ctx.cloud.find_floating_ips(&job.project_id, &mark).await)
        } else {
            Vec::new()
        };
        let fip = match found.split_first() {
            Some((keep, extras)) => {
                for extra in extras {
                    tracing::warn!(floating_ip_id = %extra.id, "releasing a duplicate floating IP of this job");
                    cloud!(ctx.cloud.delete_floating_ip(&job.project_id, &extra.id).await);
                }
                tracing::info!(floating_ip_id = %keep.id, "adopted the floating IP allocated before the interruption");
                keep.clone()
            }
            None => {
                let Some(network_id) = job.data.public_ip.as_ref().map(|p| p.network_id.clone()) else {
                    return internal("allocate_public_ip without its network");
                };
                let spec = FloatingIpSpec {
                    network_id,
                    description: format!("{} ({mark})", job.server_name()),
                    tags: vec![mark, TAG.to_string()],
                };
                cloud!(ctx.cloud.create_floating_ip(&job.project_id, &spec).await)
            }
        };
        if let Some(p) = job.data.public_ip.as_mut() {
            p.id = Some(fip.id);
            p.ip = Some(fip.address);
        }
        Outcome::Next
    })
}

fn associate_public_ip<'a>(
    ctx: &'a StepCtx,
    job: &'a mut Job,
    _: Option<Observation>,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(p) = job.data.public_ip.clone() else { return Outcome::Next };
        if p.associated {
            return Outcome::Next;
        }
        let (Some(id), Some(port_id)) = (p.id.clone(), job.port_id.clone()) else {
            return internal("associate_public_ip without a floating IP or a port");
        };
        if job.intent_on_entry && job.may_have_created(ASSOCIATE_PUBLIC_IP) {
            match cloud!(ctx.cloud.get_floating_ip(&job.project_id, &id).await) {
                None => {
                    return Outcome::Fail(Failure::new(
                        ErrorClass::CloudError,
                        format!("floating IP {id} disappeared before it was associated"),
                    ));
                }
                Some(f) if f.port_id.as_deref() == Some(port_id.as_str()) => {
                    if let Some(p) = job.data.public_ip.as_mut() {
                        p.associated = true;
                    }
                    return Outcome::Next;
                }
                Some(_) => {}
            }
        }
        let f = cloud!(ctx.cloud.associate_floating_ip(&job.project_id, &id, &port_id).await);
        if let Some(p) = job.data.public_ip.as_mut() {
            p.associated = f.port_id.as_deref() == Some(port_id.as_str());
            p.ip = Some(f.address);
        }
        Outcome::Next
    })
}

fn create_server<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        if let Some(id) = job.server_id.clone() {
            // Adopted with duplicates whose boot volumes Nova keeps: those go first.
            if !cloud!(sweep_stray_volumes(ctx, job).await) {
                return Outcome::Later(ctx.recheck);
            }
            return Outcome::Wait { step: WAIT_SERVER, watch: Watch::Server(id) };
        }
        let Some(port_id) = job.port_id.clone() else { return internal("create_server without a port") };
        let mark = job.mark();
        if job.intent_on_entry && job.may_have_created(CREATE_SERVER) {
            let found = cloud!(ctx.cloud.find_servers(&job.project_id, &mark).await);
            if let Some((keep, extras)) = found.split_first() {
                let boots = job.order.as_ref().is_some_and(|o| o.server.boot_volume.is_some());
                for extra in extras {
                    if boots && let Some(boot) = boot_volume_of(&extra.volumes, None) {
                        note_stray(job, boot);
                    }
                    tracing::warn!(server_id = %extra.id, "deleting a duplicate server of this job");
                    cloud!(ctx.cloud.delete_server(&job.project_id, &extra.id).await);
                }
                tracing::info!(server_id = %keep.id, "adopted the server created before the interruption");
                job.server_id = Some(keep.id.clone());
                if !job.data.stray_volumes.is_empty() {
                    return Outcome::Later(ctx.recheck);
                }
                return Outcome::Wait { step: WAIT_SERVER, watch: Watch::Server(keep.id.clone()) };
            }
        }
        let r = cloud!(resolved(ctx, job).await);
        let group = cloud!(server_group(ctx, job).await);
        let o = match order(job) {
            Ok(o) => o,
            Err(out) => return out,
        };
        let s = &o.server;
        let mut metadata: BTreeMap<String, String> = s.metadata.clone();
        metadata.insert(VOLUME_MARK_KEY.into(), job.id.to_string());
        metadata.insert("order_id".into(), job.order_id.clone());
        let spec = ServerSpec {
            name: s.name.clone(),
            image_id: r.image_id,
            flavor_id: r.flavor_id,
            port_id,
            key_name: s.key_name.clone().or_else(|| job.data.keypair.clone()),
            user_data: s.user_data.clone(),
            metadata,
            tags: vec![mark, TAG.to_string()],
            availability_zone: s.availability_zone.clone(),
            server_group: group,
            boot_volume: s.boot_volume.as_ref().map(|b| BootVolumeSpec {
                size_gb: b.size_gb,
                volume_type: b.volume_type.clone(),
                delete_on_termination: b.deletes_with_server(),
            }),
        };
        let id = cloud!(ctx.cloud.create_server(&job.project_id, &spec).await);
        job.server_id = Some(id.clone());
        Outcome::Wait { step: WAIT_SERVER, watch: Watch::Server(id) }
    })
}

fn wait_server<'a>(ctx: &'a StepCtx, job: &'a mut Job, seen: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(id) = job.server_id.clone() else { return internal("wait_server without a server") };
        let server = match seen {
            Some(Observation::Server(s)) if s.id == id => s,
            _ => match cloud!(ctx.cloud.get_server(&job.project_id, &id).await) {
                Some(s) => s,
                None => {
                    return Outcome::Fail(Failure::new(
                        ErrorClass::CloudError,
                        format!("server {id} disappeared while it was building"),
                    ));
                }
            },
        };
        job.data.server_status = Some(server.status.clone());
        match server.status.to_ascii_uppercase().as_str() {
            "ACTIVE" => {
                if job.order.as_ref().is_some_and(|o| o.server.boot_volume.is_some())
                    && job.data.boot_volume.as_ref().is_none_or(|b| b.id.is_none())
                {
                    let Some(boot) = boot_volume_of(&server.volumes, job.volume_id.as_ref()) else {
                        return Outcome::Fail(Failure::new(
                            ErrorClass::CloudError,
                            format!("server {id} is ACTIVE but Nova lists no boot volume attached to it"),
                        ));
                    };
                    tracing::info!(boot_volume_id = %boot, "the server booted from its volume");
                    job.data.boot_volume = Some(BootVolumeData { id: Some(boot) });
                }
                job.data.addresses = server.addresses;
                job.data.availability_zone = server.availability_zone;
                if job.order.as_ref().is_some_and(|o| o.volume.is_some()) {
                    Outcome::Next
                } else {
                    Outcome::Done
                }
            }
            "ERROR" => Outcome::Fail(Failure::new(
                // A boot volume over a Cinder quota: classified by the client from the fault.
                if server.fault_kind == Some(ErrorKind::Quota) {
                    ErrorClass::QuotaExceeded
                } else {
                    ErrorClass::CloudError
                },
                server.fault.unwrap_or_else(|| format!("server {id} went to ERROR (Nova gave no fault)")),
            )),
            _ => wait_on(ctx, job, WAIT_SERVER, Watch::Server(id), "server"),
        }
    })
}

fn create_volume<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        if let Some(id) = &job.volume_id {
            return Outcome::Wait { step: WAIT_VOLUME, watch: Watch::VolumeCreated(id.clone()) };
        }
        let Some(v) = job.order.as_ref().and_then(|o| o.volume.clone()) else { return Outcome::Done };
        let job_id = job.id.to_string();
        if job.intent_on_entry && job.may_have_created(CREATE_VOLUME) {
            let found = cloud!(ctx.cloud.find_volumes(&job.project_id, VOLUME_MARK_KEY, &job_id).await);
            if let Some((keep, extras)) = found.split_first() {
                for extra in extras {
                    tracing::warn!(volume_id = %extra.id, "deleting a duplicate volume of this job");
                    cloud!(ctx.cloud.delete_volume(&job.project_id, &extra.id).await);
                }
                tracing::info!(volume_id = %keep.id, "adopted the volume created before the interruption");
                job.volume_id = Some(keep.id.clone());
                return Outcome::Wait { step: WAIT_VOLUME, watch: Watch::VolumeCreated(keep.id.clone()) };
            }
        }
        let mut metadata = BTreeMap::new();
        metadata.insert(VOLUME_MARK_KEY.to_string(), job_id);
        metadata.insert("order_id".to_string(), job.order_id.clone());
        let spec = VolumeSpec {
            name: format!("{}-data", job.server_name()),
            size_gb: v.size_gb,
            volume_type: v.volume_type,
            metadata,
        };
        let id = cloud!(ctx.cloud.create_volume(&job.project_id, &spec).await);
        job.volume_id = Some(id.clone());
        Outcome::Wait { step: WAIT_VOLUME, watch: Watch::VolumeCreated(id) }
    })
}

fn wait_volume<'a>(ctx: &'a StepCtx, job: &'a mut Job, seen: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(id) = job.volume_id.clone() else { return internal("wait_volume without a volume") };
        let volume = match seen {
            Some(Observation::Volume(v)) if v.id == id => v,
            _ => match cloud!(ctx.cloud.get_volume(&job.project_id, &id).await) {
                Some(v) => v,
                None => {
                    return Outcome::Fail(Failure::new(
                        ErrorClass::CloudError,
                        format!("volume {id} disappeared while it was being created"),
                    ));
                }
            },
        };
        match volume.status.as_str() {
            "available" => Outcome::Next,
            "creating" | "downloading" => wait_on(ctx, job, WAIT_VOLUME, Watch::VolumeCreated(id), "volume"),
            other => Outcome::Fail(Failure::new(ErrorClass::CloudError, format!("volume {id} is {other}"))),
        }
    })
}

fn attach_volume<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let (Some(server_id), Some(volume_id)) = (job.server_id.clone(), job.volume_id.clone()) else {
            return internal("attach_volume without a server or a volume");
        };
        if job.intent_on_entry && job.may_have_created(ATTACH_VOLUME) {
            let v = cloud!(ctx.cloud.get_volume(&job.project_id, &volume_id).await);
            if let Some(v) = v
                && let Some((_, device)) = v.attachments.iter().find(|(s, _)| *s == server_id)
            {
                job.data.device = device.clone();
                if v.status == "in-use" {
                    return Outcome::Done;
                }
                return Outcome::Wait { step: WAIT_ATTACHED, watch: Watch::VolumeAttached(volume_id) };
            }
        }
        let device = cloud!(ctx.cloud.attach_volume(&job.project_id, &server_id, &volume_id).await);
        job.data.device = device;
        Outcome::Wait { step: WAIT_ATTACHED, watch: Watch::VolumeAttached(volume_id) }
    })
}

fn wait_attached<'a>(
    ctx: &'a StepCtx,
    job: &'a mut Job,
    seen: Option<Observation>,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let (Some(server_id), Some(volume_id)) = (job.server_id.clone(), job.volume_id.clone()) else {
            return internal("wait_attached without a server or a volume");
        };
        let volume = match seen {
            Some(Observation::Volume(v)) if v.id == volume_id => v,
            _ => match cloud!(ctx.cloud.get_volume(&job.project_id, &volume_id).await) {
                Some(v) => v,
                None => {
                    return Outcome::Fail(Failure::new(
                        ErrorClass::CloudError,
                        format!("volume {volume_id} disappeared while it was being attached"),
                    ));
                }
            },
        };
        let attached = volume.attachments.iter().find(|(s, _)| *s == server_id);
        match volume.status.as_str() {
            "in-use" if attached.is_some() => {
                if let Some((_, Some(device))) = attached {
                    job.data.device = Some(device.clone());
                }
                Outcome::Done
            }
            s if s.starts_with("error") => Outcome::Fail(Failure::new(
                ErrorClass::CloudError,
                format!("volume {volume_id} could not be attached: {s}"),
            )),
            _ => wait_on(ctx, job, WAIT_ATTACHED, Watch::VolumeAttached(volume_id), "volume attachment"),
        }
    })
}

// ---- undo ----

fn detach_volume<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let (Some(server_id), Some(volume_id)) = (job.server_id.clone(), job.volume_id.clone()) else {
            return Outcome::Done;
        };
        let Some(v) = cloud!(ctx.cloud.get_volume(&job.project_id, &volume_id).await) else {
            return Outcome::Done;
        };
        if v.attachments.iter().any(|(s, _)| *s == server_id) {
            if v.status == "in-use" {
                cloud!(ctx.cloud.detach_volume(&job.project_id, &server_id, &volume_id).await);
            }
            return Outcome::Later(ctx.recheck);
        }
        if matches!(v.status.as_str(), "attaching" | "detaching" | "reserved") {
            return Outcome::Later(ctx.recheck);
        }
        Outcome::Done
    })
}

fn delete_volume<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let mut ids: Vec<String> = job.volume_id.iter().cloned().collect();
        if job.may_have_created(CREATE_VOLUME) {
            let found =
                cloud!(ctx.cloud.find_volumes(&job.project_id, VOLUME_MARK_KEY, &job.id.to_string()).await);
            ids.extend(found.into_iter().map(|v| v.id).filter(|id| Some(id) != job.volume_id.as_ref()));
        }
        let mut pending = false;
        for id in &ids {
            match cloud!(ctx.cloud.get_volume(&job.project_id, id).await) {
                None => {}
                Some(v) if v.status == "deleting" => pending = true,
                Some(v)
                    if matches!(v.status.as_str(), "creating" | "attaching" | "detaching" | "reserved") =>
                {
                    pending = true
                }
                Some(_) => {
                    cloud!(ctx.cloud.delete_volume(&job.project_id, id).await);
                    pending = true;
                }
            }
        }
        if pending { Outcome::Later(ctx.recheck) } else { Outcome::Done }
    })
}

fn delete_server<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let mut ids: Vec<String> = job.server_id.iter().cloned().collect();
        if job.may_have_created(CREATE_SERVER) {
            let found = cloud!(ctx.cloud.find_servers(&job.project_id, &job.mark()).await);
            ids.extend(found.into_iter().map(|s| s.id).filter(|id| Some(id) != job.server_id.as_ref()));
        }
        let boots = job.order.as_ref().is_some_and(|o| o.server.boot_volume.is_some());
        let mut pending = false;
        for id in &ids {
            if let Some(s) = cloud!(ctx.cloud.get_server(&job.project_id, id).await) {
                // Learn the boot volume before the server (Nova's only record of it) is gone: the
                // job's server's is its boot volume, a duplicate's a stray.
                if boots && let Some(boot) = boot_volume_of(&s.volumes, job.volume_id.as_ref()) {
                    let known = job.data.boot_volume.as_ref().and_then(|b| b.id.clone());
                    let own = Some(id) == job.server_id.as_ref() || job.server_id.is_none();
                    if known.is_none() && own {
                        job.data.boot_volume = Some(BootVolumeData { id: Some(boot) });
                    } else if known.as_ref() != Some(&boot) {
                        note_stray(job, boot);
                    }
                }
                if !s.status.eq_ignore_ascii_case("DELETED") {
                    cloud!(ctx.cloud.delete_server(&job.project_id, id).await);
                }
                pending = true;
            }
        }
        // Nova deletes asynchronously; the port is deleted once the server is gone.
        if pending {
            return Outcome::Later(ctx.recheck);
        }
        // Then the boot volumes, if Nova left them (delete_on_termination false, or a build that
        // failed after the volume was made): nothing was delivered, so they go whatever the order
        // said. A duplicate's first, then the job's own.
        if !cloud!(sweep_stray_volumes(ctx, job).await) {
            return Outcome::Later(ctx.recheck);
        }
        let Some(boot) = job.data.boot_volume.as_ref().and_then(|b| b.id.clone()) else {
            return Outcome::Done;
        };
        match cloud!(ctx.cloud.get_volume(&job.project_id, &boot).await) {
            None => {
                job.data.boot_volume = None;
                Outcome::Done
            }
            Some(v) if deletable(&v) => {
                cloud!(ctx.cloud.delete_volume(&job.project_id, &boot).await);
                Outcome::Later(ctx.recheck)
            }
            // Detaching from the deleted server, or deleting: look again.
            Some(_) => Outcome::Later(ctx.recheck),
        }
    })
}

/// Releases the job's floating IP: the one recorded, and any other carrying the job's mark when
/// the allocation may have happened unrecorded.
fn release_public_ip<'a>(
    ctx: &'a StepCtx,
    job: &'a mut Job,
    _: Option<Observation>,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let recorded = job.data.public_ip.as_ref().and_then(|p| p.id.clone());
        let mut ids: Vec<String> = recorded.iter().cloned().collect();
        if job.may_have_created(ALLOCATE_PUBLIC_IP) {
            let found = cloud!(ctx.cloud.find_floating_ips(&job.project_id, &job.mark()).await);
            ids.extend(found.into_iter().map(|f| f.id).filter(|id| Some(id) != recorded.as_ref()));
        }
        for id in &ids {
            cloud!(ctx.cloud.delete_floating_ip(&job.project_id, id).await);
        }
        if let Some(p) = job.data.public_ip.as_mut() {
            p.id = None;
            p.ip = None;
            p.associated = false;
        }
        Outcome::Done
    })
}

/// Deletes the job's keypair, if it holds the order's key (a keypair of that name with another
/// key is not the job's, whatever the intent says).
fn delete_keypair<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(key) = job.order.as_ref().and_then(|o| o.server.ssh_public_key.clone()) else {
            return Outcome::Done;
        };
        if job.data.keypair.is_none() && !job.may_have_created(CREATE_KEYPAIR) {
            return Outcome::Done;
        }
        let name = keypair_name(&job.id);
        if let Some(k) = cloud!(ctx.cloud.get_keypair(&job.project_id, &name).await)
            && same_key(&k.public_key, &key)
        {
            cloud!(ctx.cloud.delete_keypair(&job.project_id, &name).await);
        }
        job.data.keypair = None;
        Outcome::Done
    })
}

fn delete_port<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let mut ids: Vec<String> = job.port_id.iter().cloned().collect();
        if job.may_have_created(CREATE_PORT) {
            let found = cloud!(ctx.cloud.find_ports(&job.project_id, &job.mark()).await);
            ids.extend(found.into_iter().filter(|id| Some(id) != job.port_id.as_ref()));
        }
        for id in &ids {
            cloud!(ctx.cloud.delete_port(&job.project_id, id).await);
        }
        Outcome::Done
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_runs_the_undos_in_reverse_from_the_failed_step() {
        let k = kind();
        assert_eq!(k.first(), RESOLVE);
        assert!(k.first_undo(RESOLVE).is_none());
        assert_eq!(k.first_undo(WAIT_SERVER).map(|u| u.0), Some("delete_server"));
        assert_eq!(k.first_undo(WAIT_ATTACHED).map(|u| u.0), Some("detach_volume"));
        let mut order = vec![];
        let mut next = k.first_undo(WAIT_ATTACHED);
        while let Some((name, _)) = next {
            order.push(name);
            next = k.undo_after(name);
        }
        assert_eq!(
            order,
            [
                "detach_volume",
                "delete_volume",
                "delete_server",
                "release_public_ip",
                "delete_port",
                "delete_keypair"
            ]
        );
        assert_eq!(k.after(WAIT_SERVER).map(|s| s.name), Some(CREATE_VOLUME));
    }
}
