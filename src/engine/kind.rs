//! The generic step machinery: a kind of job is an ordered list of steps, each with an optional
//! undo, and the engine drives any kind the same way.
//!
//! A step is a function from the job (with the ids earlier steps recorded) to an [`Outcome`]:
//! go on to the next step, wait for a cloud resource, retry after an error, fail, or finish.
//! A step that creates something is marked `creates`: the engine persists the job's `intent`
//! (the step's name) before the step runs, and the step, when it finds the intent set on entry
//! ([`Job::intent_on_entry`]), first looks for a resource carrying the job's mark and adopts it.
//! Rollback runs the undos of the steps reached, in reverse; each undo is idempotent and may ask
//! to run again later (waiting for a deletion to finish). Billing's kinds (create, and the
//! lifecycle's suspend, unsuspend, resize, terminate in [`super::lifecycle`]) are lists of steps
//! driven by the one engine; a kind also says what its jobs change on their service
//! ([`Kind::running_state`], [`Kind::on_end`]), written in the same transaction as the job.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::cloud::{Cloud, CloudError, FlavorInfo, Resolved, ServerInfo, Tenants, VolumeInfo};
use super::tenant::TenantData;
use crate::config::LifecycleSettings;
use crate::messages::{Action, ActionOrder, ErrorClass, EventAddress, Order, TenantAction, TenantOrder};
use crate::store::{JobRow, JobState, ServiceRow, ServiceSave, Store, TenantRow, TenantSave};

/// A step's end with a failure of this class (the class decides retry or rollback).
pub fn fail(class: ErrorClass, msg: impl Into<String>) -> Outcome {
    Outcome::Fail(Failure::new(class, msg))
}

/// What a step (or an undo) decided.
#[derive(Debug)]
pub enum Outcome {
    /// Done with this step: go on to the next one in the list now (the lease is kept).
    Next,
    /// Jump to the named step now (a step that is not needed, like the volume steps of an order
    /// without a volume, is skipped this way).
    Goto(&'static str),
    /// The job moves to `step` and waits there for the cloud: it is released, and the poller
    /// brings it back when the resource changed (a wait step names itself).
    Wait { step: &'static str, watch: Watch },
    /// Run this step again after the delay, without counting an error (an undo waiting for a
    /// deletion, a resource still in transition).
    Later(std::time::Duration),
    /// A cloud call failed: the retry policy decides between another attempt and failure.
    Error(CloudError),
    /// Failed for good.
    Fail(Failure),
    /// The job is complete (for an undo: this undo is complete).
    Done,
}

/// A permanent failure: what billing will read in `job.failed`.
#[derive(Debug, Clone)]
pub struct Failure {
    pub class: ErrorClass,
    pub message: String,
}

impl Failure {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Failure {
        Failure { class, message: message.into() }
    }
}

/// What a waiting job waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Watch {
    /// The server leaves `BUILD`.
    Server(String),
    /// The server reaches one of these statuses with no task running (or `ERROR`): the end
    /// of a server action (stop, resize, confirm...).
    ServerState { id: String, until: &'static [&'static str] },
    /// The server is deleted.
    ServerGone(String),
    /// The volume leaves `creating`.
    VolumeCreated(String),
    /// The volume becomes `in-use` (or fails to).
    VolumeAttached(String),
    /// The volume leaves `detaching`.
    VolumeDetached(String),
}

impl Watch {
    /// The server this wait is about, if any.
    pub fn server_id(&self) -> Option<&str> {
        match self {
            Watch::Server(id) | Watch::ServerGone(id) | Watch::ServerState { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Whether a server seen by the poller settles this wait.
    pub fn settled_by_server(&self, s: &ServerInfo) -> bool {
        match self {
            Watch::Server(id) => *id == s.id && !s.status.eq_ignore_ascii_case("BUILD"),
            Watch::ServerState { id, until } => {
                *id == s.id
                    && (s.status.eq_ignore_ascii_case("ERROR")
                        || (s.task_state.is_none() && until.iter().any(|u| s.status.eq_ignore_ascii_case(u))))
            }
            Watch::ServerGone(id) => *id == s.id && s.status.eq_ignore_ascii_case("DELETED"),
            _ => false,
        }
    }
}

/// A resource as the poller saw it, handed to the wait step so it needs no GET of its own.
// A server's observation is ~300 bytes, a few per waiting job for a moment: not worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Observation {
    Server(ServerInfo),
    Volume(VolumeInfo),
    /// The poller saw the wait settle without seeing the resource (it left a status list).
    Settled,
}

/// Kind-specific data kept with the job (`jobs.data`, JSON).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<Resolved>,
    /// The ids of the order's `server.security_groups`, resolved in its project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
    /// The order's `server.public_ip`: its external network, then the floating IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<super::create::PublicIpData>,
    /// The id of the order's `server.server_group`, resolved in its project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_group: Option<String>,
    /// The zone Nova placed the server in (seen when it went ACTIVE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// The order's `server.boot_volume`: the volume Nova made from the image, once seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_volume: Option<super::create::BootVolumeData>,
    /// Boot volumes of duplicate servers this job deleted (adoption, rollback), deleted in turn
    /// once Nova has let go of them: with `delete_on_termination: false` Nova keeps them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stray_volumes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_status: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<EventAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// When the current step began (across releases: waits are timed from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<DateTime<Utc>>,
    /// Failed attempts of undos during this rollback (they do not hide the original error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
    /// Resize: the flavor ordered, resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<FlavorInfo>,
    /// Terminate: the volume was detached and kept (`lifecycle.delete_volumes = false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_kept: Option<bool>,
    /// Terminate: the boot volume was detached and kept (the order's `delete_on_termination:
    /// false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_volume_kept: Option<bool>,
    /// Create: the keypair imported for the order's `ssh_public_key` (`prov-<job id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keypair: Option<String>,
    /// The job's first step ran (a job cancelled before that changed nothing).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub started: bool,
    /// An action found nothing to do (already in the state asked for): why, for the history.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noop: Option<String>,
    /// Tenant kinds: what the job learned and removed (see [`super::tenant`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<TenantData>,
}

/// A claimed job in memory: the row, decoded.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub order_id: String,
    pub project_id: String,
    pub kind: String,
    /// What billing asked for: `create`, `suspend`, ...
    pub action: String,
    /// The service the job acts on: the create order's id (a create's own).
    pub target_order_id: String,
    /// The create order: the job's own for a create; for an action, the order that made its
    /// service (read with the claim).
    pub order: Option<Order>,
    /// The action order, for an action job.
    pub action_order: Option<ActionOrder>,
    /// The stored body, as received (for kinds that read it themselves).
    pub order_body: String,
    /// An action's service, as it was when the job was claimed.
    pub service: Option<ServiceRow>,
    pub state: JobState,
    pub step: String,
    pub step_attempts: u32,
    pub attempts: u32,
    pub fence: u64,
    pub crashes: u32,
    pub intent: Option<String>,
    /// The intent was found set when the job was claimed (not set by this run): a create may
    /// already have happened, so look for the marked resource before creating.
    pub intent_on_entry: bool,
    pub port_id: Option<String>,
    pub server_id: Option<String>,
    pub volume_id: Option<String>,
    pub data: JobData,
    pub error: Option<(ErrorClass, String, String)>,
    pub cancel_requested: bool,
    /// Why the cancel was asked for (an operator, a terminate that superseded the job).
    pub cancel_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub deadline_at: Option<DateTime<Utc>>,
    /// A change of the service to write with the next save.
    pub service_change: Option<ServiceSave>,
    /// W3C trace context stored at intake (see `telemetry::trace`).
    pub traceparent: Option<String>,
    /// The tenant order, for a tenant job (its password, if any, sealed).
    pub tenant_order: Option<TenantOrder>,
    /// The job's tenant as claimed: a tenant job's, or the one a create named.
    pub tenant: Option<TenantRow>,
    /// A change of the tenant to write with the next save.
    pub tenant_change: Option<TenantSave>,
}

impl Job {
    /// Decodes a claimed row; an order body that no longer parses is an `invalid_order`.
    pub fn from_row(row: JobRow) -> Result<Job, Box<(JobRow, String)>> {
        let (order, action_order) = if row.action == "create" {
            match serde_json::from_str::<Order>(&row.order_body) {
                Ok(o) => (Some(o), None),
                Err(e) => return Err(Box::new((row, format!("stored order does not parse: {e}")))),
            }
        } else if Action::parse(&row.action).is_some() {
            let action: ActionOrder = match serde_json::from_str(&row.order_body) {
                Ok(a) => a,
                Err(e) => return Err(Box::new((row, format!("stored action order does not parse: {e}")))),
            };
            let create = row
                .service
                .as_ref()
                .and_then(|s| s.create_order_body.as_deref())
                .and_then(|b| serde_json::from_str::<Order>(b).ok());
            (create, Some(action))
        } else {
            (None, None)
        };
        let tenant_order = if TenantAction::parse(&row.action).is_some() {
            match serde_json::from_str::<TenantOrder>(&row.order_body) {
                Ok(t) => Some(t),
                Err(e) => {
                    return Err(Box::new((
                        row,
                        format!(
                            "stored tenant order does not parse (line {}, column {})",
                            e.line(),
                            e.column()
                        ),
                    )));
                }
            }
        } else {
            None
        };
        // A create that named its tenant provisions into the tenant's project (filled in when
        // the tenant became active; read here too, in case the job was claimed in between).
        let mut row = row;
        if row.project_id.is_empty()
            && let Some(p) = row.tenant.as_ref().and_then(|t| t.project_id.clone())
        {
            row.project_id = p;
        }
        let data: JobData =
            row.data.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
        let error = match (&row.error_class, &row.error_step, &row.error_message) {
            (Some(c), step, msg) => Some((
                ErrorClass::parse(c).unwrap_or(ErrorClass::Internal),
                step.clone().unwrap_or_default(),
                msg.clone().unwrap_or_default(),
            )),
            _ => None,
        };
        let target_order_id = row.target_order_id.clone().unwrap_or_else(|| row.order_id.clone());
        Ok(Job {
            target_order_id,
            id: row.id,
            order_id: row.order_id,
            project_id: row.project_id,
            kind: row.kind,
            action: row.action,
            order,
            action_order,
            order_body: row.order_body,
            service: row.service,
            state: row.state,
            step: row.step,
            step_attempts: row.step_attempts,
            attempts: row.attempts,
            fence: row.fence,
            crashes: row.crashes,
            intent_on_entry: row.intent.is_some(),
            intent: row.intent,
            port_id: row.port_id,
            server_id: row.server_id,
            volume_id: row.volume_id,
            data,
            error,
            cancel_requested: row.cancel_requested,
            cancel_reason: row.cancel_reason,
            created_at: row.created_at,
            deadline_at: row.deadline_at,
            service_change: None,
            traceparent: row.traceparent,
            tenant_order,
            tenant: row.tenant,
            tenant_change: None,
        })
    }

    /// The tag (Nova, Neutron) and metadata value (Cinder) that marks what this job created.
    pub fn mark(&self) -> String {
        format!("job-{}", self.id)
    }

    /// Whether the create of `step` may have happened without its answer being recorded.
    pub fn may_have_created(&self, step: &str) -> bool {
        self.intent.as_deref() == Some(step)
    }

    /// The region the job's OpenStack requests go to: its create order's `region` (an action's
    /// is the one its service was made in); `None` is the configured region.
    pub fn region(&self) -> Option<String> {
        self.order.as_ref().and_then(|o| o.region.clone())
    }

    /// The server's name, as ordered (for events).
    pub fn server_name(&self) -> String {
        self.order.as_ref().map(|o| o.server.name.clone()).unwrap_or_default()
    }

    /// A change of this job's tenant, to write with the next save.
    pub fn change_tenant(&mut self, f: impl FnOnce(&mut TenantSave)) {
        let Some(tenant_ref) = self.tenant.as_ref().map(|t| t.tenant_ref.clone()) else { return };
        let change =
            self.tenant_change.get_or_insert_with(|| TenantSave { tenant_ref, ..TenantSave::default() });
        f(change);
    }

    /// A change of this job's service, to write with the next save.
    pub fn change_service(&mut self, f: impl FnOnce(&mut ServiceSave)) {
        let change = self.service_change.get_or_insert_with(|| ServiceSave {
            target_order_id: self.target_order_id.clone(),
            ..ServiceSave::default()
        });
        f(change);
    }
}

/// What steps get to use.
pub struct StepCtx {
    pub cloud: Arc<dyn Cloud>,
    /// How long a wait (server ACTIVE, volume available / in-use) may take.
    pub wait_timeout: std::time::Duration,
    /// Pause between checks of a deletion during rollback.
    pub recheck: std::time::Duration,
    /// What the lifecycle orders do (suspend mode, keep volumes).
    pub lifecycle: LifecycleSettings,
    /// Pre-flight before a create's first create call (`PROVISIONER_PREFLIGHT=on`).
    pub preflight: bool,
    /// Keystone and quotas as an administrator (the tenant kinds).
    pub tenants: Arc<dyn Tenants>,
    /// The job store: a tenant close enqueues its services' terminates through intake's path.
    pub store: Store,
    /// Opens a tenant order's sealed password (`PROVISIONER_SECRETS_KEY`).
    pub secrets: Option<Arc<crate::secrets::SecretsKey>>,
}

/// A step function: runs one step of a job (mutating the ids it records) and says what next.
pub type StepFn = for<'a> fn(&'a StepCtx, &'a mut Job, Option<Observation>) -> BoxFuture<'a, Outcome>;

/// One step of a kind.
#[derive(Clone, Copy)]
pub struct Step {
    pub name: &'static str,
    /// The step creates a cloud resource: its intent is persisted before it runs.
    pub creates: bool,
    pub run: StepFn,
    /// Undoes what the step created (idempotent); `Done` when nothing is left.
    pub undo: Option<(&'static str, StepFn)>,
}

/// A kind of job: its name and its steps, in order, and what its jobs do to their service.
pub struct Kind {
    pub name: &'static str,
    pub steps: Vec<Step>,
    /// The service's state while a job of this kind runs (`resizing`, `terminating`), written
    /// with the job's first step.
    pub running_state: Option<&'static str>,
    /// What a job of this kind changes on its service when it ends in the given state.
    pub on_end: fn(&Job, JobState) -> Option<ServiceSave>,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kind")
            .field("name", &self.name)
            .field("steps", &self.steps.iter().map(|s| s.name).collect::<Vec<_>>())
            .finish()
    }
}

impl Kind {
    pub fn first(&self) -> &'static str {
        self.steps.first().map(|s| s.name).unwrap_or("completed")
    }

    pub fn index(&self, step: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.name == step)
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The step after `step`, if any.
    pub fn after(&self, step: &str) -> Option<&Step> {
        self.index(step).and_then(|i| self.steps.get(i + 1))
    }

    /// The first undo to run when the job fails in `step`: the undo of `step` itself (its create
    /// may have happened) or of the closest earlier step that has one.
    pub fn first_undo(&self, step: &str) -> Option<(&'static str, StepFn)> {
        let i = self.index(step)?;
        self.steps[..=i].iter().rev().find_map(|s| s.undo)
    }

    /// The undo that follows `undo` in a rollback.
    pub fn undo_after(&self, undo: &str) -> Option<(&'static str, StepFn)> {
        let i = self.steps.iter().position(|s| s.undo.is_some_and(|(n, _)| n == undo))?;
        self.steps[..i].iter().rev().find_map(|s| s.undo)
    }

    /// The undo function named `undo`.
    pub fn undo_fn(&self, undo: &str) -> Option<StepFn> {
        self.steps.iter().find_map(|s| s.undo.filter(|(n, _)| *n == undo).map(|(_, f)| f))
    }
}
