//! The lifecycle kinds: what billing does to a service after its create order made it.
//!
//! ```text
//! suspend:    check → act → wait                   (stop | suspend | shelve | pause, by setting)
//! unsuspend:  check → act → wait                   (start | resume | unshelve | unpause, by what the server is)
//! resize:     check → resize → wait_resized → confirm → wait_active     undo: revert_resize
//! terminate:  check → detach_volume → wait_detached → delete_volume → delete_server
//!                   → wait_server_gone → release_public_ip → delete_port → delete_keypair → verify
//! ```
//!
//! A job of these kinds acts on its **service** (the `services` row its create made, read with
//! the claim: its state and its server, port and volume ids). The jobs of one service run one at
//! a time in the order intake committed them (the store chains them), so a step never races
//! another action of the same service.
//!
//! Every step is idempotent and crash-safe by looking before it acts: `check` reads the
//! server's real state (one GET) and decides whether there is anything to do; an action that
//! Nova refuses with 409 (already stopped, already active: a worker killed after Nova accepted
//! it) is followed by a fresh look, which either finds the work done or in progress (wait for
//! it) or retries. Waits go through the engine's poller (one list per project per tick, for all
//! the jobs waiting there). What needs no call is decided from the database: suspending a
//! suspended service, terminating a terminated one, or resizing to the flavor it has completes at
//! once, with nothing called.
//!
//! Terminate deletes in the order the contract fixes: detach (and delete, unless
//! `lifecycle.delete_volumes` is false) the volume, delete the server and wait until Nova says
//! it is gone, release the floating IP the create allocated (those tagged `job-<create job id>`,
//! for an order with `public_ip`), delete the port and the keypair the create imported
//! (`prov-<create job id>`, for an order with `ssh_public_key`), then check that the volume is gone (or detached and kept)
//! and so is the boot volume of an order with `boot_volume` (Nova deletes it with the server
//! when `delete_on_termination` is true; when false it is detached and kept, `kept` in the
//! event). Every
//! delete of something already gone is a success, so a server deleted outside the provisioner
//! terminates cleanly. Its call budget: detach, delete volume, delete server, delete port and
//! one GET of the volume, plus the shared polls.

use futures_util::future::BoxFuture;

use super::cloud::{CloudError, ErrorKind, ServerAction, ServerInfo};
use super::kind::{Job, Kind, Observation, Outcome, Step, StepCtx, Watch, fail};
use crate::config::SuspendMode;
use crate::messages::ErrorClass;
use crate::store::{JobState, ServiceSave};

pub const CHECK: &str = "check";
pub const ACT: &str = "act";
pub const WAIT: &str = "wait";
pub const RESIZE: &str = "resize";
pub const WAIT_RESIZED: &str = "wait_resized";
pub const CONFIRM: &str = "confirm";
pub const WAIT_ACTIVE: &str = "wait_active";
pub const DETACH_VOLUME: &str = "detach_volume";
pub const WAIT_DETACHED: &str = "wait_detached";
pub const DELETE_VOLUME: &str = "delete_volume";
pub const DELETE_SERVER: &str = "delete_server";
pub const WAIT_SERVER_GONE: &str = "wait_server_gone";
pub const RELEASE_PUBLIC_IP: &str = "release_public_ip";
pub const DELETE_PORT: &str = "delete_port";
pub const DELETE_KEYPAIR: &str = "delete_keypair";
pub const VERIFY: &str = "verify";

/// Service states (the `services.state` column and the `service_status` view).
pub const PROVISIONING: &str = "provisioning";
pub const ACTIVE: &str = "active";
pub const SUSPENDED: &str = "suspended";
pub const RESIZING: &str = "resizing";
pub const TERMINATING: &str = "terminating";
pub const TERMINATED: &str = "terminated";
pub const FAILED: &str = "failed";

/// Nova statuses of a server taken out of service, whatever the mode that did it.
const OUT_OF_SERVICE: &[&str] = &["SHUTOFF", "SUSPENDED", "PAUSED", "SHELVED", "SHELVED_OFFLOADED"];
const UNTIL_ACTIVE: &[&str] = &["ACTIVE"];
const UNTIL_RESIZED: &[&str] = &["VERIFY_RESIZE", "ACTIVE"];

/// The four lifecycle kinds.
pub fn kinds() -> Vec<Kind> {
    vec![suspend(), unsuspend(), resize(), terminate()]
}

fn step(name: &'static str, run: super::kind::StepFn) -> Step {
    Step { name, creates: false, run, undo: None }
}

fn suspend() -> Kind {
    Kind {
        name: "suspend",
        steps: vec![step(CHECK, suspend_check), step(ACT, suspend_act), step(WAIT, suspend_wait)],
        running_state: None,
        on_end: |job, state| ended(job, state, SUSPENDED, None),
    }
}

fn unsuspend() -> Kind {
    Kind {
        name: "unsuspend",
        steps: vec![step(CHECK, unsuspend_check), step(ACT, unsuspend_act), step(WAIT, unsuspend_wait)],
        running_state: None,
        on_end: |job, state| ended(job, state, ACTIVE, None),
    }
}

fn resize() -> Kind {
    Kind {
        name: "resize",
        steps: vec![
            step(CHECK, resize_check),
            Step {
                name: RESIZE,
                creates: false,
                run: resize_start,
                undo: Some(("revert_resize", revert_resize)),
            },
            step(WAIT_RESIZED, resize_wait),
            step(CONFIRM, resize_confirm),
            step(WAIT_ACTIVE, resize_wait_active),
        ],
        running_state: Some(RESIZING),
        // A resize that did not complete leaves the server on its old flavor, in service.
        on_end: |job, state| ended(job, state, ACTIVE, Some(ACTIVE)),
    }
}

fn terminate() -> Kind {
    Kind {
        name: "terminate",
        steps: vec![
            step(CHECK, terminate_check),
            step(DETACH_VOLUME, detach_volume),
            step(WAIT_DETACHED, wait_detached),
            step(DELETE_VOLUME, delete_volume),
            step(DELETE_SERVER, delete_server),
            step(WAIT_SERVER_GONE, wait_server_gone),
            step(RELEASE_PUBLIC_IP, release_public_ip),
            step(DELETE_PORT, delete_port),
            step(DELETE_KEYPAIR, delete_keypair),
            step(VERIFY, verify),
        ],
        running_state: Some(TERMINATING),
        on_end: |job, state| ended(job, state, TERMINATED, Some(FAILED)),
    }
}

/// What an action's end changes on its service: `done` when it completed, `otherwise` (if
/// any) when it failed or was cancelled having started; the last action's order id when it
/// ran (completed or failed).
fn ended(job: &Job, state: JobState, done: &str, otherwise: Option<&str>) -> Option<ServiceSave> {
    let mut s = ServiceSave { target_order_id: job.target_order_id.clone(), ..ServiceSave::default() };
    match state {
        JobState::Completed => {
            s.state = Some(done.to_string());
            s.last_action_order_id = Some(job.order_id.clone());
            if let Some(f) = &job.data.flavor {
                s.flavor = Some((f.name.clone(), f.id.clone()));
            }
        }
        JobState::Failed => {
            s.state = otherwise.map(str::to_string);
            s.last_action_order_id = Some(job.order_id.clone());
        }
        // Cancelled before it started (superseded by a terminate): nothing happened to the
        // service. Cancelled while running: it is back where the kind says.
        _ if !job.data.started => return None,
        _ => s.state = otherwise.map(str::to_string),
    }
    Some(s)
}

/// Times out a wait that lasted too long, else waits on.
fn wait_on(ctx: &StepCtx, job: &Job, step: &'static str, watch: Watch, what: &str) -> Outcome {
    let started = job.data.step_started_at.unwrap_or_else(chrono::Utc::now);
    let waited = (chrono::Utc::now() - started).to_std().unwrap_or_default();
    if waited > ctx.wait_timeout {
        return fail(ErrorClass::Timeout, format!("{what} not done after {}s", waited.as_secs()));
    }
    Outcome::Wait { step, watch }
}

/// The service an action acts on, with its resources copied into the job (so that they show in
/// `job_status` and the event); fails when the service cannot take actions.
fn load_service(job: &mut Job) -> Result<String, Outcome> {
    let Some(service) = job.service.clone() else {
        return Err(fail(ErrorClass::Internal, format!("service {} not found", job.target_order_id)));
    };
    job.server_id = service.server_id.clone();
    job.port_id = service.port_id.clone();
    job.volume_id = service.volume_id.clone();
    if let Some(id) = service.boot_volume_id.clone() {
        job.data.boot_volume = Some(super::create::BootVolumeData { id: Some(id) });
    }
    Ok(service.state)
}

/// A service that has a server to act on (suspend, unsuspend, resize): its server id.
fn actionable(job: &mut Job) -> Result<String, Outcome> {
    let state = load_service(job)?;
    let target = job.target_order_id.clone();
    match state.as_str() {
        TERMINATED | TERMINATING => {
            return Err(fail(ErrorClass::InvalidOrder, format!("service {target} is {state}")));
        }
        FAILED | PROVISIONING => {
            return Err(fail(
                ErrorClass::InvalidOrder,
                format!("service {target} has no server to {}: its create did not complete", job.action),
            ));
        }
        _ => {}
    }
    job.server_id.clone().ok_or_else(|| {
        fail(ErrorClass::InvalidOrder, format!("service {target} has no server to {}", job.action))
    })
}

/// The server now (or what the poller saw of it); a server that does not exist fails the job
/// with `not_found`, naming what is missing.
async fn look(
    ctx: &StepCtx,
    job: &mut Job,
    id: &str,
    seen: Option<Observation>,
) -> Result<ServerInfo, Outcome> {
    let server = match seen {
        Some(Observation::Server(s)) if s.id == id => s,
        _ => match ctx.cloud.get_server(&job.project_id, id).await {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(fail(
                    ErrorClass::NotFound,
                    format!(
                        "server {id} of service {} does not exist any more (deleted outside the provisioner?); \
                         nothing to {}",
                        job.target_order_id, job.action
                    ),
                ));
            }
            Err(e) => return Err(Outcome::Error(e)),
        },
    };
    job.data.server_status = Some(server.status.clone());
    if !server.addresses.is_empty() {
        job.data.addresses = server.addresses.clone();
    }
    Ok(server)
}

fn is(server: &ServerInfo, status: &str) -> bool {
    server.status.eq_ignore_ascii_case(status)
}

fn in_any(server: &ServerInfo, statuses: &[&str]) -> bool {
    statuses.iter().any(|s| is(server, s))
}

fn errored(server: &ServerInfo) -> Outcome {
    fail(
        ErrorClass::CloudError,
        server
            .fault
            .clone()
            .unwrap_or_else(|| format!("server {} is in ERROR (Nova gave no fault)", server.id)),
    )
}

fn noop(job: &mut Job, why: impl Into<String>) -> Outcome {
    let why = why.into();
    tracing::info!(action = %job.action, %why, "nothing to do");
    job.data.noop = Some(why);
    Outcome::Done
}

/// After Nova refused an action with 409: look again and decide from what the server is.
async fn after_conflict(
    ctx: &StepCtx,
    job: &mut Job,
    id: &str,
    e: CloudError,
    done: &[&str],
    wait_step: &'static str,
    until: &'static [&'static str],
) -> Outcome {
    let server = match look(ctx, job, id, None).await {
        Ok(s) => s,
        Err(o) => return o,
    };
    if is(&server, "ERROR") {
        return errored(&server);
    }
    if server.task_state.is_some() || in_any(&server, done) {
        tracing::info!(status = %server.status, task = ?server.task_state, "Nova refused the action: it is done or under way");
        return Outcome::Wait { step: wait_step, watch: Watch::ServerState { id: id.to_string(), until } };
    }
    Outcome::Error(e)
}

// ---- suspend ----

fn suspend_mode(ctx: &StepCtx) -> (ServerAction, &'static str) {
    match ctx.lifecycle.suspend_mode {
        SuspendMode::Stop => (ServerAction::Stop, "SHUTOFF"),
        SuspendMode::Suspend => (ServerAction::Suspend, "SUSPENDED"),
        SuspendMode::Shelve => (ServerAction::Shelve, "SHELVED_OFFLOADED"),
        SuspendMode::Pause => (ServerAction::Pause, "PAUSED"),
    }
}

fn suspend_check<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        if job.service.as_ref().is_some_and(|s| s.state == SUSPENDED) {
            let _ = load_service(job);
            return noop(job, "the service is suspended already");
        }
        let id = match actionable(job) {
            Ok(id) => id,
            Err(o) => return o,
        };
        let server = match look(ctx, job, &id, None).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        if is(&server, "ERROR") {
            return errored(&server);
        }
        if server.task_state.is_some() {
            return Outcome::Wait { step: WAIT, watch: Watch::ServerState { id, until: OUT_OF_SERVICE } };
        }
        if in_any(&server, OUT_OF_SERVICE) {
            return noop(job, format!("the server is {} already", server.status));
        }
        if !is(&server, "ACTIVE") {
            return fail(
                ErrorClass::CloudError,
                format!("server {id} is {}: it cannot be suspended", server.status),
            );
        }
        Outcome::Next
    })
}

fn suspend_act<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(id) = job.server_id.clone() else {
            return fail(ErrorClass::Internal, "suspend without a server");
        };
        let (action, _) = suspend_mode(ctx);
        match ctx.cloud.server_action(&job.project_id, &id, action).await {
            Ok(()) => Outcome::Wait { step: WAIT, watch: Watch::ServerState { id, until: OUT_OF_SERVICE } },
            Err(e) if e.kind == ErrorKind::Conflict => {
                after_conflict(ctx, job, &id, e, OUT_OF_SERVICE, WAIT, OUT_OF_SERVICE).await
            }
            Err(e) if e.kind == ErrorKind::NotFound => gone(job, &id),
            Err(e) => Outcome::Error(e),
        }
    })
}

fn suspend_wait<'a>(ctx: &'a StepCtx, job: &'a mut Job, seen: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(id) = job.server_id.clone() else {
            return fail(ErrorClass::Internal, "wait without a server");
        };
        let unacted = |s: &ServerInfo| s.task_state.is_none() && is(s, "ACTIVE");
        let server = match look_again_if(ctx, job, &id, seen, unacted).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        if is(&server, "ERROR") {
            return errored(&server);
        }
        if server.task_state.is_none() {
            if in_any(&server, OUT_OF_SERVICE) {
                return Outcome::Done;
            }
            if is(&server, "ACTIVE")
                && let Some(o) = action_failed(ctx, job, &id, "suspend").await
            {
                return o;
            }
        }
        wait_on(ctx, job, WAIT, Watch::ServerState { id, until: OUT_OF_SERVICE }, "suspend")
    })
}

fn gone(job: &Job, id: &str) -> Outcome {
    fail(
        ErrorClass::NotFound,
        format!(
            "server {id} of service {} does not exist any more (deleted outside the provisioner?); nothing to {}",
            job.target_order_id, job.action
        ),
    )
}

/// The server as a wait step judges it: from the poller's observation, but looked at again
/// (one GET) when the observation says the action did not happen (`unacted`): a list can be
/// older than the action it is handed to.
async fn look_again_if(
    ctx: &StepCtx,
    job: &mut Job,
    id: &str,
    seen: Option<Observation>,
    unacted: impl Fn(&ServerInfo) -> bool,
) -> Result<ServerInfo, Outcome> {
    let from_list = seen.is_some();
    let server = look(ctx, job, id, seen).await?;
    if from_list && unacted(&server) { look(ctx, job, id, None).await } else { Ok(server) }
}

/// The server is back where it was with no task: the action failed if Nova recorded an error
/// for it (fail with it: `Some`); otherwise Nova has not started it yet (`None`: keep waiting,
/// bounded by the wait timeout).
async fn action_failed(ctx: &StepCtx, job: &mut Job, id: &str, action: &str) -> Option<Outcome> {
    let why = match ctx.cloud.action_error(&job.project_id, id, action).await {
        Ok(why) => why?,
        Err(e) => return Some(Outcome::Error(e)),
    };
    let status = job.data.server_status.clone().unwrap_or_default();
    Some(fail(ErrorClass::CloudError, format!("Nova did not {action} server {id} (it is {status}): {why}")))
}

// ---- unsuspend ----

fn unsuspend_check<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let id = match actionable(job) {
            Ok(id) => id,
            Err(o) => return o,
        };
        let server = match look(ctx, job, &id, None).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        if is(&server, "ERROR") {
            return errored(&server);
        }
        if server.task_state.is_some() {
            return Outcome::Wait { step: WAIT, watch: Watch::ServerState { id, until: UNTIL_ACTIVE } };
        }
        if is(&server, "ACTIVE") {
            return noop(job, "the server is ACTIVE already");
        }
        if !in_any(&server, OUT_OF_SERVICE) {
            return fail(
                ErrorClass::CloudError,
                format!("server {id} is {}: it cannot be unsuspended", server.status),
            );
        }
        Outcome::Next
    })
}

/// The action that brings a server back, from how it was taken out of service.
fn resume_action(status: &str) -> Option<ServerAction> {
    Some(match status.to_ascii_uppercase().as_str() {
        "SHUTOFF" => ServerAction::Start,
        "SUSPENDED" => ServerAction::Resume,
        "PAUSED" => ServerAction::Unpause,
        "SHELVED" | "SHELVED_OFFLOADED" => ServerAction::Unshelve,
        _ => return None,
    })
}

fn unsuspend_act<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(id) = job.server_id.clone() else {
            return fail(ErrorClass::Internal, "unsuspend without a server");
        };
        // The status `check` saw; after a crash between the two, look again.
        let status = match job.data.server_status.clone() {
            Some(s) if resume_action(&s).is_some() => s,
            _ => match look(ctx, job, &id, None).await {
                Ok(s) if is(&s, "ACTIVE") && s.task_state.is_none() => return Outcome::Done,
                Ok(s) => s.status,
                Err(o) => return o,
            },
        };
        let Some(action) = resume_action(&status) else {
            return fail(
                ErrorClass::CloudError,
                format!("server {id} is {status}: it cannot be unsuspended"),
            );
        };
        match ctx.cloud.server_action(&job.project_id, &id, action).await {
            Ok(()) => Outcome::Wait { step: WAIT, watch: Watch::ServerState { id, until: UNTIL_ACTIVE } },
            Err(e) if e.kind == ErrorKind::Conflict => {
                after_conflict(ctx, job, &id, e, UNTIL_ACTIVE, WAIT, UNTIL_ACTIVE).await
            }
            Err(e) if e.kind == ErrorKind::NotFound => gone(job, &id),
            Err(e) => Outcome::Error(e),
        }
    })
}

fn unsuspend_wait<'a>(
    ctx: &'a StepCtx,
    job: &'a mut Job,
    seen: Option<Observation>,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(id) = job.server_id.clone() else {
            return fail(ErrorClass::Internal, "wait without a server");
        };
        let unacted = |s: &ServerInfo| s.task_state.is_none() && in_any(s, OUT_OF_SERVICE);
        let server = match look_again_if(ctx, job, &id, seen, unacted).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        if is(&server, "ERROR") {
            return errored(&server);
        }
        if server.task_state.is_none() {
            if is(&server, "ACTIVE") {
                return Outcome::Done;
            }
            if in_any(&server, OUT_OF_SERVICE)
                && let Some(o) = action_failed(ctx, job, &id, "unsuspend").await
            {
                return o;
            }
        }
        wait_on(ctx, job, WAIT, Watch::ServerState { id, until: UNTIL_ACTIVE }, "unsuspend")
    })
}

// ---- resize ----

fn on_flavor(server: &ServerInfo, flavor: &super::cloud::FlavorInfo) -> bool {
    server.flavor_id.as_deref() == Some(flavor.id.as_str())
        || (server.flavor_id.is_none() && server.flavor_name.as_deref() == Some(flavor.name.as_str()))
}

fn resize_check<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let wanted = job.action_order.as_ref().and_then(|a| a.flavor.clone()).unwrap_or_default();
        let service = job.service.clone();
        if service.as_ref().is_some_and(|s| s.state == SUSPENDED) {
            let _ = load_service(job);
            return fail(
                ErrorClass::InvalidOrder,
                format!("service {} is suspended: unsuspend it before resizing", job.target_order_id),
            );
        }
        let id = match actionable(job) {
            Ok(id) => id,
            Err(o) => return o,
        };
        if wanted.is_empty() {
            return fail(ErrorClass::InvalidOrder, "a resize order needs a flavor");
        }
        let current = service.as_ref().and_then(|s| s.flavor.clone().zip(s.flavor_id.clone()));
        if let Some((name, fid)) = &current
            && (wanted == *name || wanted == *fid)
        {
            return noop(job, format!("the service is on flavor {name} already"));
        }
        let flavor = match ctx.cloud.find_flavor(&job.project_id, &wanted).await {
            Ok(f) => f,
            Err(e) if e.kind == ErrorKind::NotFound => {
                return fail(ErrorClass::NotFound, format!("flavor {wanted}: {}", e.message));
            }
            Err(e) => return Outcome::Error(e),
        };
        job.data.flavor = Some(flavor.clone());
        if current.as_ref().is_some_and(|(_, fid)| *fid == flavor.id) {
            return noop(job, format!("the service is on flavor {} already", flavor.name));
        }
        let server = match look(ctx, job, &id, None).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        if is(&server, "ERROR") {
            return errored(&server);
        }
        if is(&server, "VERIFY_RESIZE") {
            // A resize this job started before a crash, waiting for its confirm.
            return Outcome::Goto(CONFIRM);
        }
        if server.task_state.is_some() {
            return Outcome::Wait {
                step: WAIT_RESIZED,
                watch: Watch::ServerState { id, until: UNTIL_RESIZED },
            };
        }
        if is(&server, "ACTIVE") && on_flavor(&server, &flavor) {
            return noop(job, format!("the server is on flavor {} already", flavor.name));
        }
        if !is(&server, "ACTIVE") {
            return fail(
                ErrorClass::InvalidOrder,
                format!("server {id} is {}: only an ACTIVE server is resized", server.status),
            );
        }
        Outcome::Next
    })
}

fn resize_start<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let (Some(id), Some(flavor)) = (job.server_id.clone(), job.data.flavor.clone()) else {
            return fail(ErrorClass::Internal, "resize without a server or a flavor");
        };
        match ctx.cloud.resize_server(&job.project_id, &id, &flavor.id).await {
            Ok(()) => {
                Outcome::Wait { step: WAIT_RESIZED, watch: Watch::ServerState { id, until: UNTIL_RESIZED } }
            }
            Err(e) if e.kind == ErrorKind::Conflict => {
                after_conflict(ctx, job, &id, e, &["VERIFY_RESIZE"], WAIT_RESIZED, UNTIL_RESIZED).await
            }
            Err(e) if e.kind == ErrorKind::NotFound => gone(job, &id),
            Err(e) => Outcome::Error(e),
        }
    })
}

fn resize_wait<'a>(ctx: &'a StepCtx, job: &'a mut Job, seen: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let (Some(id), Some(flavor)) = (job.server_id.clone(), job.data.flavor.clone()) else {
            return fail(ErrorClass::Internal, "resize without a server or a flavor");
        };
        let unacted = |s: &ServerInfo| s.task_state.is_none() && is(s, "ACTIVE") && !on_flavor(s, &flavor);
        let server = match look_again_if(ctx, job, &id, seen, unacted).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        if is(&server, "ERROR") {
            return errored(&server);
        }
        if server.task_state.is_none() {
            if is(&server, "VERIFY_RESIZE") {
                return Outcome::Next;
            }
            if is(&server, "ACTIVE") {
                if on_flavor(&server, &flavor) {
                    return Outcome::Done;
                }
                // Failed only if Nova says so (its record of the action); else still to come.
                match ctx.cloud.action_error(&job.project_id, &id, "resize").await {
                    Ok(Some(why)) => {
                        let was = server.flavor_name.clone().or(server.flavor_id.clone()).unwrap_or_default();
                        return fail(
                            ErrorClass::CloudError,
                            format!(
                                "resize of server {id} to {} failed: {why}; it stays on flavor {was}",
                                flavor.name
                            ),
                        );
                    }
                    Ok(None) => {}
                    Err(e) => return Outcome::Error(e),
                }
            }
        }
        wait_on(ctx, job, WAIT_RESIZED, Watch::ServerState { id, until: UNTIL_RESIZED }, "resize")
    })
}

fn resize_confirm<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(id) = job.server_id.clone() else {
            return fail(ErrorClass::Internal, "confirm without a server");
        };
        match ctx.cloud.server_action(&job.project_id, &id, ServerAction::ConfirmResize).await {
            Ok(()) => {
                Outcome::Wait { step: WAIT_ACTIVE, watch: Watch::ServerState { id, until: UNTIL_ACTIVE } }
            }
            Err(e) if e.kind == ErrorKind::Conflict => {
                after_conflict(ctx, job, &id, e, UNTIL_ACTIVE, WAIT_ACTIVE, UNTIL_ACTIVE).await
            }
            Err(e) if e.kind == ErrorKind::NotFound => gone(job, &id),
            Err(e) => Outcome::Error(e),
        }
    })
}

fn resize_wait_active<'a>(
    ctx: &'a StepCtx,
    job: &'a mut Job,
    seen: Option<Observation>,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(id) = job.server_id.clone() else {
            return fail(ErrorClass::Internal, "wait without a server");
        };
        let server = match look(ctx, job, &id, seen).await {
            Ok(s) => s,
            Err(o) => return o,
        };
        if is(&server, "ERROR") {
            return errored(&server);
        }
        if server.task_state.is_none() && is(&server, "ACTIVE") {
            return Outcome::Done;
        }
        if server.task_state.is_none() && is(&server, "VERIFY_RESIZE") {
            // The confirm was lost: send it again.
            return Outcome::Goto(CONFIRM);
        }
        wait_on(ctx, job, WAIT_ACTIVE, Watch::ServerState { id, until: UNTIL_ACTIVE }, "resize confirm")
    })
}

/// Undo of a resize that failed half-way: a server waiting in `VERIFY_RESIZE` goes back to its
/// old flavor; one still resizing is waited for.
fn revert_resize<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(id) = job.server_id.clone() else { return Outcome::Done };
        let Some(server) = cloud!(ctx.cloud.get_server(&job.project_id, &id).await) else {
            return Outcome::Done;
        };
        if server.task_state.is_some() || in_any(&server, &["RESIZE", "REVERT_RESIZE"]) {
            return Outcome::Later(ctx.recheck);
        }
        if is(&server, "VERIFY_RESIZE") {
            cloud!(ctx.cloud.server_action(&job.project_id, &id, ServerAction::RevertResize).await);
            return Outcome::Later(ctx.recheck);
        }
        Outcome::Done
    })
}

// ---- terminate ----

fn terminate_check<'a>(_: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let state = match load_service(job) {
            Ok(s) => s,
            Err(o) => return o,
        };
        if state == TERMINATED {
            return noop(job, "the service is terminated already");
        }
        if job.server_id.is_none()
            && job.port_id.is_none()
            && job.volume_id.is_none()
            && job.data.boot_volume.is_none()
        {
            return noop(job, "the service has nothing in the cloud");
        }
        Outcome::Next
    })
}

fn detach_volume<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(volume) = job.volume_id.clone() else { return Outcome::Goto(DELETE_SERVER) };
        if let Some(server) = job.server_id.clone() {
            // Gone already (the attachment, or the whole server) is success.
            cloud!(ctx.cloud.detach_volume(&job.project_id, &server, &volume).await);
        }
        Outcome::Wait { step: WAIT_DETACHED, watch: Watch::VolumeDetached(volume) }
    })
}

fn wait_detached<'a>(
    ctx: &'a StepCtx,
    job: &'a mut Job,
    seen: Option<Observation>,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(volume) = job.volume_id.clone() else { return Outcome::Next };
        if matches!(seen, Some(Observation::Settled)) {
            return Outcome::Next;
        }
        // Not from the poller (a recheck, a takeover): look once.
        match cloud!(ctx.cloud.get_volume(&job.project_id, &volume).await) {
            None => Outcome::Goto(DELETE_SERVER),
            Some(v) if matches!(v.status.as_str(), "detaching" | "reserved" | "attaching") => {
                wait_on(ctx, job, WAIT_DETACHED, Watch::VolumeDetached(volume), "volume detach")
            }
            Some(v) if v.status == "in-use" && job.server_id.is_some() => {
                // The detach did not take (lost, or refused after a crash): ask again.
                Outcome::Goto(DETACH_VOLUME)
            }
            Some(_) => Outcome::Next,
        }
    })
}

fn delete_volume<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(volume) = job.volume_id.clone() else { return Outcome::Next };
        if !ctx.lifecycle.delete_volumes {
            job.data.volume_kept = Some(true);
            return Outcome::Next;
        }
        // Still detaching answers 400 "Invalid volume"; the client classifies it as a conflict,
        // retried with backoff.
        cloud!(ctx.cloud.delete_volume(&job.project_id, &volume).await);
        Outcome::Next
    })
}

fn delete_server<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(id) = job.server_id.clone() else { return Outcome::Goto(RELEASE_PUBLIC_IP) };
        cloud!(ctx.cloud.delete_server(&job.project_id, &id).await);
        Outcome::Wait { step: WAIT_SERVER_GONE, watch: Watch::ServerGone(id) }
    })
}

fn wait_server_gone<'a>(
    ctx: &'a StepCtx,
    job: &'a mut Job,
    seen: Option<Observation>,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let Some(id) = job.server_id.clone() else { return Outcome::Next };
        let server = match seen {
            Some(Observation::Server(s)) if s.id == id => Some(s),
            _ => cloud!(ctx.cloud.get_server(&job.project_id, &id).await),
        };
        match server {
            None => Outcome::Next,
            Some(s) if is(&s, "DELETED") => Outcome::Next,
            Some(s) if s.task_state.is_none() => {
                // Nova is not deleting it (the delete was lost, or refused): ask again.
                cloud!(ctx.cloud.delete_server(&job.project_id, &id).await);
                wait_on(ctx, job, WAIT_SERVER_GONE, Watch::ServerGone(id), "server deletion")
            }
            Some(_) => wait_on(ctx, job, WAIT_SERVER_GONE, Watch::ServerGone(id), "server deletion"),
        }
    })
}

fn delete_port<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        if let Some(id) = job.port_id.clone() {
            cloud!(ctx.cloud.delete_port(&job.project_id, &id).await);
        }
        Outcome::Next
    })
}

/// The keypair the service's create imported (its name is the create job's mark); gone already
/// is success.
/// Releases the floating IPs the service's create allocated (its job's mark), before the port
/// they map to is deleted; one list call, only for an order that asked for a public IP.
fn release_public_ip<'a>(
    ctx: &'a StepCtx,
    job: &'a mut Job,
    _: Option<Observation>,
) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let ordered = job.order.as_ref().is_some_and(|o| o.server.public_ip.is_some());
        let Some(create_job) = job.service.as_ref().map(|s| s.create_job_id.clone()).filter(|_| ordered)
        else {
            return Outcome::Next;
        };
        let found = cloud!(ctx.cloud.find_floating_ips(&job.project_id, &format!("job-{create_job}")).await);
        for f in &found {
            cloud!(ctx.cloud.delete_floating_ip(&job.project_id, &f.id).await);
        }
        Outcome::Next
    })
}

fn delete_keypair<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        let imported = job.order.as_ref().is_some_and(|o| o.server.ssh_public_key.is_some());
        let Some(create_job) = job.service.as_ref().map(|s| s.create_job_id.clone()).filter(|_| imported)
        else {
            return Outcome::Next;
        };
        let Ok(create_job) = create_job.parse::<uuid::Uuid>() else { return Outcome::Next };
        let name = super::create::keypair_name(&create_job);
        cloud!(ctx.cloud.delete_keypair(&job.project_id, &name).await);
        Outcome::Next
    })
}

/// The service's boot volume once the server is gone: Nova deletes it with the server when the
/// order's `delete_on_termination` is true (wait until Cinder no longer has it; one Nova left
/// behind is deleted); when false it is detached and kept (`boot_volume_kept`, reported in the
/// event). `None`: settled; `Some(outcome)`: not yet, or failed.
async fn settle_boot_volume(ctx: &StepCtx, job: &mut Job) -> Option<Outcome> {
    let id = job.data.boot_volume.as_ref().and_then(|b| b.id.clone())?;
    let deletes = job
        .order
        .as_ref()
        .and_then(|o| o.server.boot_volume.as_ref())
        .is_none_or(|b| b.deletes_with_server());
    let found = match ctx.cloud.get_volume(&job.project_id, &id).await {
        Ok(v) => v,
        Err(e) => return Some(Outcome::Error(e)),
    };
    let started = job.data.step_started_at.unwrap_or_else(chrono::Utc::now);
    let waited = (chrono::Utc::now() - started).to_std().unwrap_or_default();
    let later = |what: &str| {
        if waited > ctx.wait_timeout {
            fail(ErrorClass::Timeout, format!("boot volume {id} still {what} after {}s", waited.as_secs()))
        } else {
            Outcome::Later(ctx.recheck)
        }
    };
    match found {
        None if deletes => None,
        None => Some(fail(ErrorClass::CloudError, format!("boot volume {id} was to be kept but is gone"))),
        Some(v) if v.status.starts_with("error") => Some(fail(
            ErrorClass::CloudError,
            format!("boot volume {id} is {} after the server's deletion", v.status),
        )),
        Some(v) if !v.attachments.is_empty() || v.status != "available" => Some(later(&v.status)),
        Some(_) if deletes => {
            // Nova did not delete it (a server deleted outside Nova's BDM clean-up): we do.
            if let Err(e) = ctx.cloud.delete_volume(&job.project_id, &id).await {
                return Some(Outcome::Error(e));
            }
            Some(later("available"))
        }
        Some(_) => {
            job.data.boot_volume_kept = Some(true);
            None
        }
    }
}

fn verify<'a>(ctx: &'a StepCtx, job: &'a mut Job, _: Option<Observation>) -> BoxFuture<'a, Outcome> {
    Box::pin(async move {
        if let Some(out) = settle_boot_volume(ctx, job).await {
            return out;
        }
        let Some(volume) = job.volume_id.clone() else { return Outcome::Done };
        let found = cloud!(ctx.cloud.get_volume(&job.project_id, &volume).await);
        let kept = job.data.volume_kept == Some(true);
        match found {
            None if kept => {
                fail(ErrorClass::CloudError, format!("volume {volume} was to be kept but is gone"))
            }
            None => Outcome::Done,
            Some(v) if kept && v.attachments.is_empty() && !v.status.starts_with("error") => Outcome::Done,
            Some(v) if v.status == "deleting" => Outcome::Later(ctx.recheck),
            Some(v) if v.status.starts_with("error") => {
                fail(ErrorClass::CloudError, format!("volume {volume} is {} after its deletion", v.status))
            }
            Some(v) if !kept && v.attachments.is_empty() => {
                // The delete did not take: ask again.
                cloud!(ctx.cloud.delete_volume(&job.project_id, &volume).await);
                Outcome::Later(ctx.recheck)
            }
            Some(v) => fail(
                ErrorClass::CloudError,
                format!("volume {volume} is still {} with {} attachment(s)", v.status, v.attachments.len()),
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_starts_at_check_and_only_resize_has_an_undo() {
        for k in kinds() {
            assert_eq!(k.first(), CHECK, "{}", k.name);
            let undos: Vec<_> = k.steps.iter().filter_map(|s| s.undo.map(|u| u.0)).collect();
            if k.name == "resize" {
                assert_eq!(undos, ["revert_resize"]);
            } else {
                assert!(undos.is_empty(), "{}", k.name);
            }
        }
        let t = terminate();
        let names: Vec<_> = t.steps.iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                CHECK,
                DETACH_VOLUME,
                WAIT_DETACHED,
                DELETE_VOLUME,
                DELETE_SERVER,
                WAIT_SERVER_GONE,
                RELEASE_PUBLIC_IP,
                DELETE_PORT,
                DELETE_KEYPAIR,
                VERIFY
            ]
        );
    }

    #[test]
    fn unsuspend_brings_back_each_suspend_mode() {
        assert_eq!(resume_action("SHUTOFF"), Some(ServerAction::Start));
        assert_eq!(resume_action("suspended"), Some(ServerAction::Resume));
        assert_eq!(resume_action("PAUSED"), Some(ServerAction::Unpause));
        assert_eq!(resume_action("SHELVED_OFFLOADED"), Some(ServerAction::Unshelve));
        assert_eq!(resume_action("ACTIVE"), None);
    }
}
