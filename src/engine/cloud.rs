//! What the engine needs from a cloud, in the engine's own terms: the [`Cloud`] trait.
//!
//! The steps of a kind call only these methods; [`super::openstack_cloud`] implements them on
//! the OpenStack client (Glance, Neutron, Nova, Cinder through one Keystone session). Keeping
//! the seam here means a step reads as what it does (create a port, list servers that changed),
//! and the client's wire details stay in `openstack/`. Errors carry the client's class so that
//! the engine decides retry / fail in one place ([`super::retry`]).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use crate::messages::EventAddress;

/// What the engine does about a failed cloud call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Network trouble, a 5xx: retry with backoff.
    Transient,
    /// Slow down; retry after the cloud's `Retry-After` if it gave one.
    RateLimited(Option<Duration>),
    /// Busy resource; retry a bounded number of times.
    Conflict,
    /// A project quota is exhausted: never retried.
    Quota,
    NotFound,
    Auth,
    /// A bad request, an ambiguous name, an unexpected answer: not retried.
    Permanent,
}

/// A failed cloud call, with the service's own message.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CloudError {
    pub kind: ErrorKind,
    pub message: String,
}

impl CloudError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> CloudError {
        CloudError { kind, message: message.into() }
    }
}

pub type CloudResult<T> = Result<T, CloudError>;

/// The ids an order's names resolve to in its project.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Resolved {
    pub image_id: String,
    pub flavor_id: String,
    /// Nova's name of the flavor (the order may have named it by id).
    #[serde(default)]
    pub flavor_name: String,
    pub network_id: String,
    pub network_name: String,
}

#[derive(Debug, Clone)]
pub struct PortSpec {
    pub network_id: String,
    pub name: String,
    /// Marks: `job-<id>` and `provisioner`.
    pub tags: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub name: String,
    pub image_id: String,
    pub flavor_id: String,
    pub port_id: String,
    pub key_name: Option<String>,
    /// Base64; a secret, never logged.
    pub user_data: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct VolumeSpec {
    pub name: String,
    pub size_gb: u32,
    pub volume_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// A server as the engine needs it.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    pub id: String,
    pub name: String,
    pub status: String,
    /// Nova's fault message when the server is in `ERROR`.
    pub fault: Option<String>,
    pub addresses: Vec<EventAddress>,
    pub tags: Vec<String>,
    /// `OS-EXT-STS:task_state`: an action in progress (`powering-off`, `resize_prep`, ...).
    pub task_state: Option<String>,
    /// `OS-EXT-STS:vm_state`.
    pub vm_state: Option<String>,
    /// The flavor's id, when the answer gives it (below Nova 2.47).
    pub flavor_id: Option<String>,
    /// The flavor's name (2.47+: `original_name`).
    pub flavor_name: Option<String>,
}

/// A Nova server action (`POST /servers/{id}/action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAction {
    Stop,
    Start,
    Suspend,
    Resume,
    Shelve,
    Unshelve,
    Pause,
    Unpause,
    ConfirmResize,
    RevertResize,
}

/// A flavor, resolved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlavorInfo {
    pub id: String,
    pub name: String,
}

/// A volume as the engine needs it.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    pub id: String,
    pub status: String,
    /// (server id, device) of each attachment.
    pub attachments: Vec<(String, Option<String>)>,
    pub metadata: BTreeMap<String, String>,
}

/// The cloud, as the steps see it. All calls are scoped to the order's project.
pub trait Cloud: Send + Sync + 'static {
    /// Image, flavor and network by name or id (cached per project, single-flight).
    fn resolve<'a>(
        &'a self,
        project: &'a str,
        image: &'a str,
        flavor: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, CloudResult<Resolved>>;

    fn create_port<'a>(&'a self, project: &'a str, spec: &'a PortSpec) -> BoxFuture<'a, CloudResult<String>>;
    /// Ports carrying this tag.
    fn find_ports<'a>(&'a self, project: &'a str, tag: &'a str) -> BoxFuture<'a, CloudResult<Vec<String>>>;
    /// Deletes a port; a port already gone is success.
    fn delete_port<'a>(&'a self, project: &'a str, id: &'a str) -> BoxFuture<'a, CloudResult<()>>;

    fn create_server<'a>(
        &'a self,
        project: &'a str,
        spec: &'a ServerSpec,
    ) -> BoxFuture<'a, CloudResult<String>>;
    /// Servers carrying this tag.
    fn find_servers<'a>(
        &'a self,
        project: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<ServerInfo>>>;
    /// One server; `None` when it does not exist.
    fn get_server<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<ServerInfo>>>;
    /// Servers carrying `tag` that changed at or after `since` (one call for a whole project).
    fn servers_changed<'a>(
        &'a self,
        project: &'a str,
        tag: &'a str,
        since: DateTime<Utc>,
    ) -> BoxFuture<'a, CloudResult<Vec<ServerInfo>>>;
    /// Deletes a server; a server already gone is success.
    fn delete_server<'a>(&'a self, project: &'a str, id: &'a str) -> BoxFuture<'a, CloudResult<()>>;

    fn create_volume<'a>(
        &'a self,
        project: &'a str,
        spec: &'a VolumeSpec,
    ) -> BoxFuture<'a, CloudResult<String>>;
    /// Volumes whose metadata has `key = value`.
    fn find_volumes<'a>(
        &'a self,
        project: &'a str,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<VolumeInfo>>>;
    fn get_volume<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<VolumeInfo>>>;
    /// Volumes the provisioner created (its metadata mark) in this status (one call for a
    /// whole project).
    fn volumes_in_status<'a>(
        &'a self,
        project: &'a str,
        status: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<VolumeInfo>>>;
    /// Deletes a volume; a volume already gone is success.
    fn delete_volume<'a>(&'a self, project: &'a str, id: &'a str) -> BoxFuture<'a, CloudResult<()>>;

    /// Attaches a volume to a server; returns the device if the answer names it.
    fn attach_volume<'a>(
        &'a self,
        project: &'a str,
        server_id: &'a str,
        volume_id: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<String>>>;
    /// Detaches; an attachment already gone is success.
    fn detach_volume<'a>(
        &'a self,
        project: &'a str,
        server_id: &'a str,
        volume_id: &'a str,
    ) -> BoxFuture<'a, CloudResult<()>>;

    /// Sends a server action (202). A 409 (wrong state) comes back as `ErrorKind::Conflict`.
    fn server_action<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
        action: ServerAction,
    ) -> BoxFuture<'a, CloudResult<()>>;
    /// Starts a resize to `flavor_id`.
    fn resize_server<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
        flavor_id: &'a str,
    ) -> BoxFuture<'a, CloudResult<()>>;
    /// A flavor by name or id (cached like resolve): its id and name.
    fn find_flavor<'a>(&'a self, project: &'a str, flavor: &'a str)
    -> BoxFuture<'a, CloudResult<FlavorInfo>>;
    /// Why the last `action` (e.g. "resize") on the server failed, if Nova recorded an error.
    fn action_error<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
        action: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<String>>>;
}
