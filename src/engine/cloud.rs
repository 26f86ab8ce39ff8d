//! What the engine needs from a cloud, in the engine's own terms: the [`Cloud`] trait (servers,
//! ports, volumes in a customer's project) and the [`Tenants`] trait (Keystone projects, users,
//! role assignments and the quotas of a tenant, as an administrator).
//!
//! The steps of a kind call only these methods; [`super::openstack_cloud`] implements them on
//! the OpenStack client (Keystone, Glance, Neutron, Nova, Cinder through one Keystone session).
//! Keeping the seam here means a step reads as what it does (create a port, list servers that
//! changed, create the tenant's project), and the client's wire details stay in `openstack/`.
//! Errors carry the client's class so that the engine decides retry / fail in one place
//! ([`super::retry`]).
//!
//! Two traits, not one: the creation kind needs nothing of Keystone's admin API, and a cloud
//! where the service user is not an admin can still run every VM order; `Tenants` calls are made
//! in the service user's own project (where it must hold `admin`), `Cloud` calls in the
//! customer's.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;

use crate::config::Secret;
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
    /// The order asks for what the cloud does not offer (a region its catalog does not list, an
    /// availability zone that is not available, a server group that does not exist or whose
    /// name is ambiguous): not retried, `invalid_order`.
    Invalid,
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
    /// Security group ids; `None`: the project's `default` group (Neutron's choice).
    pub security_groups: Option<Vec<String>>,
}

/// A floating IP to allocate.
#[derive(Debug, Clone)]
pub struct FloatingIpSpec {
    /// The external network.
    pub network_id: String,
    pub description: String,
    /// Marks: `job-<id>` and `provisioner`.
    pub tags: Vec<String>,
}

/// A floating IP as the engine needs it.
#[derive(Debug, Clone, Default)]
pub struct FloatingIpInfo {
    pub id: String,
    pub address: String,
    pub network_id: String,
    /// The port it is associated with.
    pub port_id: Option<String>,
    pub status: String,
    pub tags: Vec<String>,
    pub created: Option<DateTime<Utc>>,
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
    /// The order's `server.availability_zone`.
    pub availability_zone: Option<String>,
    /// The server group's id (resolved from the order's `server.server_group`).
    pub server_group: Option<String>,
    /// Boot from a Cinder volume Nova makes from `image_id` (`None`: the flavor's ephemeral
    /// disk).
    pub boot_volume: Option<BootVolumeSpec>,
}

/// The root disk as a volume made from the image at boot (Nova creates it, not us).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootVolumeSpec {
    pub size_gb: u32,
    /// Cinder type name or id; `None`: the cloud's default.
    pub volume_type: Option<String>,
    pub delete_on_termination: bool,
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
    /// What the fault means (`Quota`: the boot volume hit a Cinder quota), classified by the
    /// client where it read the fault.
    pub fault_kind: Option<ErrorKind>,
    /// The volumes attached (`os-extended-volumes:volumes_attached`), in Nova's order (the boot
    /// volume first).
    pub volumes: Vec<String>,
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
    /// `OS-EXT-AZ:availability_zone` (`None` while Nova has not placed it).
    pub availability_zone: Option<String>,
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

/// A Nova keypair of the service user (keypairs belong to the user, not to a project).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeypairInfo {
    pub name: String,
    pub fingerprint: String,
    pub public_key: String,
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

/// A server carrying the provisioner's mark (a `provisioner` / `job-<id>` tag, or only the
/// `provisioner_job` metadata: below Nova 2.52 a server is tagged after it was created).
#[derive(Debug, Clone, Default)]
pub struct MarkedServer {
    pub id: String,
    pub name: String,
    pub status: String,
    pub task_state: Option<String>,
    pub created: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

/// A port carrying the `provisioner` tag.
#[derive(Debug, Clone, Default)]
pub struct MarkedPort {
    pub id: String,
    pub tags: Vec<String>,
    /// The server using it, if any.
    pub device_id: Option<String>,
    pub created: Option<DateTime<Utc>>,
}

/// A floating IP carrying the `provisioner` tag.
#[derive(Debug, Clone, Default)]
pub struct MarkedFloatingIp {
    pub id: String,
    pub tags: Vec<String>,
    /// The port it is associated with, if any.
    pub port_id: Option<String>,
    pub created: Option<DateTime<Utc>>,
}

/// A volume carrying the provisioner's metadata mark.
#[derive(Debug, Clone)]
pub struct MarkedVolume {
    pub info: VolumeInfo,
    pub created: Option<DateTime<Utc>>,
}

/// Everything in a project that carries the provisioner's mark (the reconciler's view).
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub servers: Vec<MarkedServer>,
    pub ports: Vec<MarkedPort>,
    pub volumes: Vec<MarkedVolume>,
    pub floating_ips: Vec<MarkedFloatingIp>,
}

/// A flavor with its size (pre-flight's quota arithmetic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlavorSize {
    pub id: String,
    pub name: String,
    pub vcpus: u32,
    pub ram_mb: u64,
}

/// What pre-flight learns of an order's names: each resolved (to its id) or not, and why.
#[derive(Debug, Clone)]
pub struct NameLookup {
    pub image: CloudResult<String>,
    pub flavor: CloudResult<FlavorSize>,
    pub network: CloudResult<String>,
    /// When the order names one.
    pub volume_type: Option<CloudResult<String>>,
    pub keypair: Option<CloudResult<()>>,
    /// The image's `min_disk` (GiB) and size (bytes), when it resolved.
    pub image_disk: Option<(u64, Option<u64>)>,
}

/// One quota of a project: its limit (`-1`: unlimited) and what is in use.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QuotaLine {
    /// `instances`, `cores`, `ram` (MiB), `ports`, `floating_ips`, `volumes`, `gigabytes`.
    pub resource: &'static str,
    pub limit: i64,
    pub used: i64,
}

/// The regions of the cloud: those the token's catalog lists endpoints in, and the configured
/// one (`region_name`, the first of `regions:`, `OS_REGION_NAME`) that requests go to outside
/// any [`crate::openstack::region::scope`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Regions {
    pub configured: Option<String>,
    pub catalog: Vec<String>,
}

/// The cloud, as the steps see it. All calls are scoped to the order's project (and go to the
/// caller's region: [`crate::openstack::region::scope`]).
pub trait Cloud: Send + Sync + 'static {
    /// The regions the catalog of `project`'s token lists, and the configured one.
    fn regions<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<Regions>>;

    /// Image, flavor and network by name or id (cached per project, single-flight).
    fn resolve<'a>(
        &'a self,
        project: &'a str,
        image: &'a str,
        flavor: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, CloudResult<Resolved>>;

    /// Security groups of the project, each by id or exact name, in order: their ids. A name
    /// matching none is `NotFound`, one matching several `Permanent`; the message names it.
    fn find_security_groups<'a>(
        &'a self,
        project: &'a str,
        names: &'a [String],
    ) -> BoxFuture<'a, CloudResult<Vec<String>>>;

    /// A Nova server group of the project by id or exact name: its id. None, or a name that
    /// several share, is `Invalid` (the message names it).
    fn find_server_group<'a>(
        &'a self,
        project: &'a str,
        group: &'a str,
    ) -> BoxFuture<'a, CloudResult<String>>;
    /// Nova's availability zones as the project sees them (`GET /os-availability-zone`):
    /// (name, available).
    fn availability_zones<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<Vec<(String, bool)>>>;

    /// An external network (`router:external`) by id or exact name: (id, name). One that is
    /// not external is `Permanent` (no floating IP can come from it).
    fn find_external_network<'a>(
        &'a self,
        project: &'a str,
        network: &'a str,
    ) -> BoxFuture<'a, CloudResult<(String, String)>>;
    /// Allocates a floating IP, tagged.
    fn create_floating_ip<'a>(
        &'a self,
        project: &'a str,
        spec: &'a FloatingIpSpec,
    ) -> BoxFuture<'a, CloudResult<FloatingIpInfo>>;
    /// Floating IPs carrying this tag.
    fn find_floating_ips<'a>(
        &'a self,
        project: &'a str,
        tag: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<FloatingIpInfo>>>;
    /// One floating IP; `None` when it does not exist.
    fn get_floating_ip<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<FloatingIpInfo>>>;
    /// Associates the floating IP with the port (its first fixed IP).
    fn associate_floating_ip<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
        port_id: &'a str,
    ) -> BoxFuture<'a, CloudResult<FloatingIpInfo>>;
    /// Releases a floating IP; one already gone is success.
    fn delete_floating_ip<'a>(&'a self, project: &'a str, id: &'a str) -> BoxFuture<'a, CloudResult<()>>;

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
    /// Servers carrying `tag` that changed at or after `since`, and servers deleted since then
    /// (Nova drops a deleted server's tags), in one call for a whole project.
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

    /// Every server, port, floating IP and volume of the project carrying the provisioner's
    /// mark: one list call per resource kind (all pages), never a GET per resource. Nova cannot filter by metadata,
    /// so its list is the project's servers, kept when tagged or carrying the metadata mark.
    fn marked_resources<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<Inventory>>;
    /// Looks up an order's names afresh (no cache): image (one match by id or name; several of
    /// that name are refused), flavor with its size, network, and, when given, the volume type
    /// and the keypair (the service user's). Each answer stands alone.
    fn lookup_names<'a>(
        &'a self,
        project: &'a str,
        image: &'a str,
        flavor: &'a str,
        network: &'a str,
        volume_type: Option<&'a str>,
        key_name: Option<&'a str>,
    ) -> BoxFuture<'a, NameLookup>;
    /// A Cinder volume type of the project by id or exact name: its id (`NotFound` if none).
    fn find_volume_type<'a>(
        &'a self,
        project: &'a str,
        wanted: &'a str,
    ) -> BoxFuture<'a, CloudResult<String>>;
    /// The project's limits and usage of instances, cores, RAM (Nova `/limits`), ports (Neutron
    /// quota details), volumes and gigabytes (Cinder quota usage), in the project's own scope.
    fn quota_usage<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<Vec<QuotaLine>>>;
    /// Adds the tags a server lacks (a server found only by its metadata, below Nova 2.52).
    fn tag_server<'a>(
        &'a self,
        project: &'a str,
        id: &'a str,
        tags: &'a [String],
    ) -> BoxFuture<'a, CloudResult<()>>;

    /// Imports a public key as the service user's keypair `name`; a name already taken comes
    /// back as [`Created::Existing`] with the keypair found (the step decides whose it is).
    fn import_keypair<'a>(
        &'a self,
        project: &'a str,
        name: &'a str,
        public_key: &'a str,
    ) -> BoxFuture<'a, CloudResult<Created<KeypairInfo>>>;
    /// The service user's keypair `name`; `None` when there is none.
    fn get_keypair<'a>(
        &'a self,
        project: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<KeypairInfo>>>;
    /// Deletes the keypair; one already gone is success.
    fn delete_keypair<'a>(&'a self, project: &'a str, name: &'a str) -> BoxFuture<'a, CloudResult<()>>;

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

/// The Keystone tag that marks a project as a tenant's (the key later orders name it by).
///
/// Keystone tags are at most 255 characters and may not contain `/` or `,`; a tenant ref is 1-128
/// printable ASCII characters and may. So the ref is percent-encoded in exactly those three
/// characters (`%` → `%25`, `,` → `%2C`, `/` → `%2F`; injective, and every other character stays
/// readable): `tenant:CUST-000123`. If that would exceed 255 characters (a ref with more than 60
/// of them), the tag is `tenant-sha256:<hex of SHA-256 of the ref>` instead. Keystone's tag
/// filter is exact (case and spaces count), and the client checks the tags of what it lists
/// again, so one ref finds exactly its project.
pub fn tenant_tag(tenant_ref: &str) -> String {
    let mut tag = String::with_capacity(TENANT_TAG_PREFIX.len() + tenant_ref.len());
    tag.push_str(TENANT_TAG_PREFIX);
    for c in tenant_ref.chars() {
        match c {
            '%' => tag.push_str("%25"),
            ',' => tag.push_str("%2C"),
            '/' => tag.push_str("%2F"),
            c => tag.push(c),
        }
    }
    if tag.chars().count() <= 255 {
        return tag;
    }
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(tenant_ref.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("tenant-sha256:{hex}")
}

/// The prefix of [`tenant_tag`]'s readable form.
pub const TENANT_TAG_PREFIX: &str = "tenant:";

/// A Keystone project as tenant steps see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProjectInfo {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    /// Sorted.
    pub tags: Vec<String>,
}

/// A new project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectSpec {
    pub name: String,
    /// The domain's name or id (`Default`, `default`, a 32-hex id).
    pub domain: String,
    pub description: String,
    /// [`tenant_tag`] and the provisioner's mark; each valid as a Keystone tag.
    pub tags: Vec<String>,
}

/// A Keystone user as tenant steps see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserInfo {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    pub default_project_id: Option<String>,
    pub email: Option<String>,
}

/// A new user. `Debug` shows the password as `***` ([`Secret`]); nothing logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSpec {
    pub name: String,
    /// The domain's name or id.
    pub domain: String,
    pub default_project_id: String,
    pub email: Option<String>,
    /// `None`: a user that cannot log in with a password (until one is set).
    pub password: Option<Secret>,
}

/// What a create did: made it, or found one of that name already there (Keystone's 409, looked
/// up). The step decides whether the existing one is its own to adopt (its tag, its default
/// project) or someone else's (a failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created<T> {
    New(T),
    Existing(T),
}

impl<T> Created<T> {
    pub fn into_inner(self) -> T {
        match self {
            Created::New(t) | Created::Existing(t) => t,
        }
    }
}

/// A tenant's quotas on the three services, as billing's plan says; `None` leaves a limit as it
/// is, `-1` is unlimited. Nova: instances, cores, ram; Neutron: ports, networks, floating IPs;
/// Cinder: volumes, gigabytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct TenantQuotas {
    pub instances: Option<i64>,
    pub cores: Option<i64>,
    pub ram_mb: Option<i64>,
    pub volumes: Option<i64>,
    pub gigabytes: Option<i64>,
    pub ports: Option<i64>,
    pub networks: Option<i64>,
    pub floating_ips: Option<i64>,
}

/// Keystone and the quota APIs, as tenant steps see them. Every call is made as the service
/// user in its own project (where it must hold `admin`: a user without it gets `Auth`, not
/// retried). Lookups answer `None` for "not there"; deletes succeed on "already gone".
pub trait Tenants: Send + Sync + 'static {
    /// The service user's id (a new project needs it to hold a role there too, to provision).
    fn service_user_id(&self) -> BoxFuture<'_, CloudResult<String>>;
    /// A domain's id from its name or id (`NotFound` if none).
    fn resolve_domain<'a>(&'a self, name_or_id: &'a str) -> BoxFuture<'a, CloudResult<String>>;

    /// The one project carrying this tag exactly (more than one is `Permanent`).
    fn find_project_by_tag<'a>(&'a self, tag: &'a str) -> BoxFuture<'a, CloudResult<Option<ProjectInfo>>>;
    /// The project of this name in the domain (names compare case-insensitively, as Keystone's).
    fn find_project_by_name<'a>(
        &'a self,
        domain: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<ProjectInfo>>>;
    fn get_project<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<Option<ProjectInfo>>>;
    /// Creates the project, enabled; a taken name comes back as [`Created::Existing`].
    fn create_project<'a>(
        &'a self,
        spec: &'a ProjectSpec,
    ) -> BoxFuture<'a, CloudResult<Created<ProjectInfo>>>;
    fn set_project_enabled<'a>(&'a self, id: &'a str, enabled: bool) -> BoxFuture<'a, CloudResult<()>>;
    /// Deletes the project (Keystone drops its role assignments); gone is success.
    fn delete_project<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<()>>;

    /// The user of this name in the domain.
    fn find_user<'a>(
        &'a self,
        domain: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, CloudResult<Option<UserInfo>>>;
    fn get_user<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<Option<UserInfo>>>;
    /// Creates the user, enabled, with its default project; a taken name comes back as
    /// [`Created::Existing`].
    fn create_user<'a>(&'a self, spec: &'a UserSpec) -> BoxFuture<'a, CloudResult<Created<UserInfo>>>;
    fn set_user_enabled<'a>(&'a self, id: &'a str, enabled: bool) -> BoxFuture<'a, CloudResult<()>>;
    /// Deletes the user; gone is success.
    fn delete_user<'a>(&'a self, id: &'a str) -> BoxFuture<'a, CloudResult<()>>;

    /// A global role's id by name (`member`); `NotFound` if none.
    fn find_role<'a>(&'a self, name: &'a str) -> BoxFuture<'a, CloudResult<String>>;
    /// Gives the user the role on the project; idempotent.
    fn assign_role<'a>(
        &'a self,
        project: &'a str,
        user: &'a str,
        role_id: &'a str,
    ) -> BoxFuture<'a, CloudResult<()>>;
    /// The role ids the user holds directly on the project.
    fn role_assignments<'a>(
        &'a self,
        project: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, CloudResult<Vec<String>>>;

    /// Sets the given limits on Nova, Neutron and Cinder (a service none of whose limits is
    /// given is not called).
    fn set_quotas<'a>(&'a self, project: &'a str, quotas: &'a TenantQuotas)
    -> BoxFuture<'a, CloudResult<()>>;
    /// The project's limits on the three services (every field set).
    fn get_quotas<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<TenantQuotas>>;
    /// Back to the cloud's defaults on the three services (the services keep a deleted
    /// project's quota rows otherwise).
    fn clear_quotas<'a>(&'a self, project: &'a str) -> BoxFuture<'a, CloudResult<()>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_tags_are_valid_keystone_tags_for_any_printable_ref() {
        assert_eq!(tenant_tag("CUST-000123"), "tenant:CUST-000123");
        assert_eq!(tenant_tag("a/b,c%d e"), "tenant:a%2Fb%2Cc%25d e");
        // Injective where it matters: the escape character is escaped too.
        assert_ne!(tenant_tag("a%2Fb"), tenant_tag("a/b"));
        assert_ne!(tenant_tag("Acme"), tenant_tag("acme"));
        let printable: String = (0x20u8..=0x7e).map(char::from).collect();
        for r in [printable.clone(), "/".repeat(128), ",".repeat(61), "x".repeat(128), " ".to_string()] {
            let tag = tenant_tag(&r);
            assert!((1..=255).contains(&tag.chars().count()), "{} chars for {r:?}", tag.len());
            assert!(!tag.contains('/') && !tag.contains(','), "{tag}");
        }
        // Too long to stay readable: a hash, still one per ref.
        let long = tenant_tag(&"/".repeat(128));
        assert!(long.starts_with("tenant-sha256:") && long.len() == 14 + 64, "{long}");
        assert_ne!(long, tenant_tag(&"/".repeat(127)));
        assert!(tenant_tag(&",".repeat(60)).starts_with(TENANT_TAG_PREFIX), "60 escapes still fit");
    }

    #[test]
    fn a_user_spec_never_shows_its_password() {
        let spec = UserSpec {
            name: "alice".into(),
            domain: "Default".into(),
            default_project_id: "p".into(),
            email: None,
            password: Some(Secret::new("hunter2")),
        };
        assert!(!format!("{spec:?}").contains("hunter2"));
    }
}
