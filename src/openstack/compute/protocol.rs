//! Nova v2.1 wire types: version document, flavors, server create request (with its scheduler
//! hints) and server body, volume attachments (shapes before and after microversion 2.89),
//! availability zones, server groups (before and after 2.64), limits, quota sets and the
//! error bodies (`{"forbidden": {"code": 403, "message": ...}}` and friends).
//!
//! Shared by the client and the simulator. Fields that appear only from some microversion are
//! `Option` and skipped when absent, so one type serves every microversion.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::openstack::protocol_time;

/// The header that carries the compute microversion (also sent as `OpenStack-API-Version:
/// compute X.Y`).
pub const MICROVERSION_HEADER: &str = "X-OpenStack-Nova-API-Version";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub rel: String,
    pub href: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// One API version (`GET /compute/` lists them, `GET /compute/v2.1/` shows one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub id: String,
    pub status: String,
    /// The maximum microversion (`""` for v2.0).
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub min_version: String,
    pub updated: String,
    pub links: Vec<Link>,
    #[serde(rename = "media-types", default, skip_serializing_if = "Vec::is_empty")]
    pub media_types: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionList {
    pub versions: Vec<Version>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionBody {
    pub version: Version,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flavor {
    pub id: String,
    pub name: String,
    pub ram: u64,
    pub vcpus: u32,
    pub disk: u64,
    #[serde(rename = "OS-FLV-EXT-DATA:ephemeral", default)]
    pub ephemeral: u64,
    /// `""` before microversion 2.75 when there is no swap, a number from 2.75.
    #[serde(default, deserialize_with = "swap_de")]
    pub swap: u64,
    #[serde(rename = "os-flavor-access:is_public", default = "yes")]
    pub is_public: bool,
    #[serde(rename = "OS-FLV-DISABLED:disabled", default)]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxtx_factor: Option<f64>,
    /// From 2.55.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// From 2.61.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_specs: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub links: Vec<Link>,
}

fn yes() -> bool {
    true
}

fn swap_de<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => Ok(n.as_u64().unwrap_or(0)),
        serde_json::Value::String(s) if s.is_empty() => Ok(0),
        serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        _ => Ok(0),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlavorBody {
    pub flavor: Flavor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlavorList {
    pub flavors: Vec<Flavor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavors_links: Option<Vec<Link>>,
}

/// `POST /servers` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerCreateRequest {
    pub server: ServerCreate,
    /// Beside `server`, not in it: `{"group": "<server group id>"}` and the other filters'
    /// hints. Nova reads either key (the api-ref's `os:scheduler_hints`, or the SDK's
    /// `OS-SCH-HNT:scheduler_hints`).
    #[serde(
        rename = "os:scheduler_hints",
        alias = "OS-SCH-HNT:scheduler_hints",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub scheduler_hints: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerCreate {
    pub name: String,
    /// Image id (`""` when booting from volume).
    #[serde(rename = "imageRef", default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    #[serde(rename = "flavorRef")]
    pub flavor_ref: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks: Option<Networks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// Base64 of the user data. A secret: never log it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// From 2.52.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<NamedRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_drive: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_device_mapping_v2: Option<Vec<serde_json::Value>>,
}

/// One entry of `block_device_mapping_v2` (kept as JSON in [`ServerCreate`], so that an entry
/// of a shape we do not model still reaches Nova or the simulator as sent). Nova accepts
/// `boot_index`, `volume_size` and `delete_on_termination` as numbers or booleans and as strings
/// (`"0"`, `"10"`, `"true"`: the older clients send those), so they are read leniently.
/// `volume_type` is from 2.67.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockDeviceMapping {
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_i64")]
    pub boot_index: Option<i64>,
    /// `image`, `volume`, `snapshot`, `blank`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_type: Option<String>,
    /// `volume` or `local`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_type: Option<String>,
    /// The image (source `image`), volume or snapshot id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// GiB.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_i64")]
    pub volume_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_bool")]
    pub delete_on_termination: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
}

fn lenient_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => {
            n.as_i64().map(Some).ok_or_else(|| serde::de::Error::custom("not an integer"))
        }
        serde_json::Value::String(s) => s.trim().parse().map(Some).map_err(serde::de::Error::custom),
        other => Err(serde::de::Error::custom(format!("not an integer: {other}"))),
    }
}

fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Bool(b) => Ok(Some(b)),
        serde_json::Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "t" | "y" => Ok(Some(true)),
            "false" | "0" | "no" | "off" | "f" | "n" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!("not a boolean: {s}"))),
        },
        other => Err(serde::de::Error::custom(format!("not a boolean: {other}"))),
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedRef {
    pub name: String,
}

/// `networks`: a list of NICs, or (from 2.37) the string `"auto"` or `"none"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Networks {
    List(Vec<NetworkRequest>),
    Keyword(String),
}

/// One NIC: an existing port, or a network (Nova then creates the port).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// The 202 answer to `POST /servers` (with a `Location` header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerCreated {
    pub server: CreatedServer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreatedServer {
    pub id: String,
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(rename = "OS-DCF:diskConfig", default, skip_serializing_if = "Option::is_none")]
    pub disk_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<NamedRef>>,
    #[serde(rename = "adminPass", default, skip_serializing_if = "Option::is_none")]
    pub admin_pass: Option<String>,
}

/// One address of a server on a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Address {
    pub addr: String,
    pub version: u8,
    #[serde(rename = "OS-EXT-IPS:type", default, skip_serializing_if = "Option::is_none")]
    pub ip_type: Option<String>,
    #[serde(rename = "OS-EXT-IPS-MAC:mac_addr", default, skip_serializing_if = "Option::is_none")]
    pub mac_addr: Option<String>,
}

/// Why a server is in `ERROR`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub code: u16,
    pub message: String,
    #[serde(with = "protocol_time::seconds_z")]
    pub created: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

/// `image` is `{"id", "links"}`, or `""` for a server booted from a volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServerImage {
    Ref {
        id: String,
        #[serde(default)]
        links: Vec<Link>,
    },
    None(String),
}

/// `flavor`: `{"id", "links"}` before 2.47, the flavor's copy
/// (`original_name`, `vcpus`, `ram`, ...) from 2.47.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerFlavor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links: Option<Vec<Link>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpus: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_specs: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttachedVolume {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
}

/// A server as `GET /servers/{id}` and `GET /servers/detail` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub id: String,
    pub name: String,
    /// `BUILD`, `ACTIVE`, `ERROR`, `SHUTOFF`, `DELETED`, ...
    pub status: String,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(rename = "hostId", default)]
    pub host_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ServerImage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<ServerFlavor>,
    #[serde(with = "protocol_time::seconds_z")]
    pub created: DateTime<Utc>,
    /// Changes whenever the server does (status included): what `changes-since` compares.
    #[serde(with = "protocol_time::seconds_z")]
    pub updated: DateTime<Utc>,
    #[serde(default)]
    pub addresses: BTreeMap<String, Vec<Address>>,
    #[serde(rename = "accessIPv4", default)]
    pub access_ipv4: String,
    #[serde(rename = "accessIPv6", default)]
    pub access_ipv6: String,
    #[serde(default)]
    pub links: Vec<Link>,
    #[serde(rename = "OS-DCF:diskConfig", default, skip_serializing_if = "Option::is_none")]
    pub disk_config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u32>,
    #[serde(rename = "OS-EXT-AZ:availability_zone", default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_drive: Option<String>,
    #[serde(default)]
    pub key_name: Option<String>,
    #[serde(rename = "OS-SRV-USG:launched_at", default, with = "protocol_time::micros_naive::option")]
    pub launched_at: Option<DateTime<Utc>>,
    #[serde(rename = "OS-SRV-USG:terminated_at", default, with = "protocol_time::micros_naive::option")]
    pub terminated_at: Option<DateTime<Utc>>,
    #[serde(rename = "OS-EXT-STS:task_state", default)]
    pub task_state: Option<String>,
    #[serde(rename = "OS-EXT-STS:vm_state", default, skip_serializing_if = "Option::is_none")]
    pub vm_state: Option<String>,
    #[serde(rename = "OS-EXT-STS:power_state", default, skip_serializing_if = "Option::is_none")]
    pub power_state: Option<u8>,
    #[serde(rename = "os-extended-volumes:volumes_attached", default)]
    pub volumes_attached: Vec<AttachedVolume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<NamedRef>>,
    /// Present when the server is in `ERROR` (and after some failed actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// From 2.26.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    /// From 2.19.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// From 2.9.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
    /// From 2.73.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_reason: Option<String>,
    /// From 2.71.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_groups: Option<Vec<String>>,
    /// From 2.63.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_image_certificates: Option<Vec<String>>,
    /// From 2.96.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_availability_zone: Option<String>,
    /// From 2.100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_hints: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerBody {
    pub server: Server,
}

/// `GET /servers/detail`; `servers_links` carries the `next` link while more pages follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerList {
    pub servers: Vec<Server>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers_links: Option<Vec<Link>>,
}

/// `GET /servers` (not detail): id, name and links only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSummary {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerSummaryList {
    pub servers: Vec<ServerSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub servers_links: Option<Vec<Link>>,
}

/// `POST /servers/{id}/os-volume_attachments` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeAttachmentRequest {
    #[serde(rename = "volumeAttachment")]
    pub volume_attachment: VolumeAttachmentCreate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeAttachmentCreate {
    #[serde(rename = "volumeId")]
    pub volume_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// From 2.49.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// From 2.79.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
}

/// A volume attachment. Up to 2.88 it has `id` (= the volume id); from 2.89 `id` is gone and
/// `attachment_id` (Cinder's) and `bdm_uuid` are there. `tag` from 2.70,
/// `delete_on_termination` from 2.79.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeAttachment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(rename = "serverId")]
    pub server_id: String,
    #[serde(rename = "volumeId")]
    pub volume_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bdm_uuid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeAttachmentBody {
    #[serde(rename = "volumeAttachment")]
    pub volume_attachment: VolumeAttachment,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeAttachmentList {
    #[serde(rename = "volumeAttachments")]
    pub volume_attachments: Vec<VolumeAttachment>,
}

/// One entry of `GET /servers/{id}/os-instance-actions` (newest first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceAction {
    pub action: String,
    pub request_id: String,
    /// `"Error"` when the action failed.
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub start_time: Option<String>,
    /// The events (only in `GET .../os-instance-actions/{request_id}`).
    #[serde(default)]
    pub events: Vec<InstanceActionEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceActionEvent {
    pub event: String,
    #[serde(default)]
    pub result: Option<String>,
    /// The error, for everyone (2.84+).
    #[serde(default)]
    pub details: Option<String>,
    /// The error with its stack, for admins (policy).
    #[serde(default)]
    pub traceback: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceActionList {
    #[serde(rename = "instanceActions")]
    pub instance_actions: Vec<InstanceAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceActionBody {
    #[serde(rename = "instanceAction")]
    pub instance_action: InstanceAction,
}

/// `POST /os-keypairs` body. With `public_key` it imports the key (required from 2.92, where
/// Nova no longer generates keys).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeypairCreateRequest {
    pub keypair: KeypairCreate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeypairCreate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// `ssh` or `x509` (2.2+).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    /// Another user's (admin, 2.10+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// A keypair as create, show and list return it (list entries carry only name, type,
/// fingerprint and public key; show adds the rest).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keypair {
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    /// 2.2+.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub key_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Only before 2.92, when Nova generated the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeypairBody {
    pub keypair: Keypair,
}

/// `GET /os-keypairs`: each entry wrapped in `{"keypair": ...}`; `keypairs_links` from 2.35.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeypairList {
    pub keypairs: Vec<KeypairBody>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keypairs_links: Option<Vec<Link>>,
}

/// `GET /os-availability-zone` (and `/detail`, which adds `hosts` and is admin-only by
/// Nova's default policy). Cinder answers the same shape without `hosts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityZoneList {
    #[serde(rename = "availabilityZoneInfo")]
    pub zones: Vec<AvailabilityZone>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityZone {
    #[serde(rename = "zoneName")]
    pub name: String,
    #[serde(rename = "zoneState")]
    pub state: ZoneState,
    /// Host → service binary → its state (`/detail` only; `null` in the summary and for a zone
    /// that is not available).
    #[serde(default)]
    pub hosts: Option<BTreeMap<String, BTreeMap<String, ZoneService>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneState {
    pub available: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneService {
    pub available: bool,
    pub active: bool,
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// `POST /os-server-groups` body: `policies` (one item) before 2.64, `policy` and `rules` from
/// 2.64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerGroupCreateRequest {
    pub server_group: ServerGroupCreate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerGroupCreate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<BTreeMap<String, serde_json::Value>>,
}

/// A server group as create, show and list return it. `members` lists only servers that are
/// not deleted. `policies` + `metadata` (always `{}`) before 2.64, `policy` + `rules` from 2.64;
/// `project_id` and `user_id` from 2.13.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerGroup {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl ServerGroup {
    /// The policy whatever the microversion (`policy`, else the one `policies` item).
    pub fn the_policy(&self) -> Option<&str> {
        self.policy.as_deref().or_else(|| self.policies.as_ref()?.first().map(String::as_str))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerGroupBody {
    pub server_group: ServerGroup,
}

/// `GET /os-server-groups` (`limit` / `offset`, no links).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerGroupList {
    pub server_groups: Vec<ServerGroup>,
}

/// The OpenSSH public key types Nova imports (what `cryptography` loads).
pub const SSH_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ssh-dss",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// An OpenSSH public key line (`<type> <base64 blob> [comment]`), checked for shape: a known
/// type, a blob that is valid base64 and starts with the same type (the wire format's
/// length-prefixed string). Returns the type and the decoded blob (Nova's fingerprint is the
/// MD5 of it).
pub fn parse_openssh_public_key(line: &str) -> Result<(String, Vec<u8>), String> {
    use base64::Engine as _;
    let mut parts = line.trim().split_ascii_whitespace();
    let (Some(kind), Some(b64)) = (parts.next(), parts.next()) else {
        return Err("not an OpenSSH public key (expected \"<type> <base64> [comment]\")".into());
    };
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(format!("unsupported key type {kind:?} (expected one of {})", SSH_KEY_TYPES.join(", ")));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| format!("the key is not valid base64 ({e})"))?;
    let inner = blob
        .get(..4)
        .map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize)
        .and_then(|n| blob.get(4..4 + n));
    if inner != Some(kind.as_bytes()) {
        return Err(format!("the key's data does not start with its type {kind:?}"));
    }
    if blob.len() < 4 + kind.len() + 4 + 16 {
        return Err("the key's data is too short".into());
    }
    Ok((kind.to_string(), blob))
}

/// Nova's fingerprint of an SSH key: MD5 of the key blob, as colon-separated hex.
pub fn ssh_fingerprint(blob: &[u8]) -> String {
    use md5::Digest as _;
    let d = md5::Md5::digest(blob);
    d.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// `GET /limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitsBody {
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default)]
    pub rate: Vec<serde_json::Value>,
    pub absolute: AbsoluteLimits,
}

/// Absolute limits and usage; `-1` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbsoluteLimits {
    pub max_total_instances: i64,
    pub max_total_cores: i64,
    #[serde(rename = "maxTotalRAMSize")]
    pub max_total_ram_size: i64,
    #[serde(default)]
    pub max_server_meta: i64,
    #[serde(default)]
    pub max_image_meta: i64,
    #[serde(default)]
    pub max_personality: i64,
    #[serde(default)]
    pub max_personality_size: i64,
    #[serde(default)]
    pub max_total_keypairs: i64,
    #[serde(default)]
    pub max_server_groups: i64,
    #[serde(default)]
    pub max_server_group_members: i64,
    #[serde(default)]
    pub total_instances_used: i64,
    #[serde(default)]
    pub total_cores_used: i64,
    #[serde(rename = "totalRAMUsed", default)]
    pub total_ram_used: i64,
    #[serde(default)]
    pub total_server_groups_used: i64,
}

/// `GET/PUT /os-quota-sets/{project_id}`: limits (`-1` unlimited). From 2.36 the network
/// quotas are gone; from 2.57 `injected_file*` are gone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaSetBody {
    pub quota_set: QuotaSet,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cores: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ram: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pairs: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_items: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_groups: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_group_members: Option<i64>,
    /// Other keys (`injected_files`, `floating_ips`, ... at older microversions; `force`).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `GET /os-quota-sets/{project_id}/detail`: per resource `{in_use, limit, reserved}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaSetDetailBody {
    pub quota_set: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuotaDetail {
    pub in_use: i64,
    pub limit: i64,
    #[serde(default)]
    pub reserved: i64,
}

/// Nova's (and Cinder's) error body: one key naming the error class (`badRequest`,
/// `forbidden`, `itemNotFound`, `conflictingRequest`, `overLimit`, `computeFault`, ...)
/// holding `{code, message}`. Cinder's `overLimit` also carries `retryAfter`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultBody {
    pub kind: String,
    pub detail: FaultDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultDetail {
    pub code: u16,
    pub message: String,
    #[serde(rename = "retryAfter", default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl FaultBody {
    /// The conventional key for a status: 400 `badRequest`, 403 `forbidden`, 404
    /// `itemNotFound`, 409 `conflictingRequest`, 413/429 `overLimit`, other `computeFault`.
    pub fn for_status(code: u16, message: impl Into<String>) -> FaultBody {
        let kind = match code {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "HTTPMethodNotAllowed",
            406 => "HTTPNotAcceptable",
            409 => "conflictingRequest",
            413 | 429 => "overLimit",
            501 => "notImplemented",
            503 => "serviceUnavailable",
            _ => "computeFault",
        };
        FaultBody {
            kind: kind.into(),
            detail: FaultDetail { code, message: message.into(), retry_after: None, details: None },
        }
    }
}

impl Serialize for FaultBody {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry(&self.kind, &self.detail)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for FaultBody {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, FaultDetail>::deserialize(d)?;
        let mut it = map.into_iter();
        match (it.next(), it.next()) {
            (Some((kind, detail)), None) => Ok(FaultBody { kind, detail }),
            _ => Err(serde::de::Error::custom("expected exactly one error key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_ref_server_create_request_and_response() {
        let req: ServerCreateRequest = serde_json::from_str(
            r#"{"server": {"name": "new-server-test", "imageRef": "70a599e0-31e7-49b7-b260-868f441e862b",
            "flavorRef": "1", "availability_zone": "us-west", "OS-DCF:diskConfig": "AUTO",
            "metadata": {"My Server Name": "Apache1"}, "security_groups": [{"name": "default"}],
            "user_data": "IyEvYmluL2Jhc2gKL2Jpbi9zdQplY2hvICJJIGFtIGluIHlvdSEiCg==",
            "networks": [{"port": "a0304c3a-4f08-4c43-88af-d796509c97d2"}], "tags": ["t1"], "key_name": "k"}}"#,
        )
        .unwrap();
        match req.server.networks.as_ref().unwrap() {
            Networks::List(l) => {
                assert_eq!(l[0].port.as_deref(), Some("a0304c3a-4f08-4c43-88af-d796509c97d2"))
            }
            other => panic!("{other:?}"),
        }
        let auto: ServerCreate =
            serde_json::from_str(r#"{"name": "a", "flavorRef": "1", "networks": "auto"}"#).unwrap();
        assert_eq!(auto.networks, Some(Networks::Keyword("auto".into())));
        let created: ServerCreated = serde_json::from_str(
            r#"{"server": {"OS-DCF:diskConfig": "AUTO", "adminPass": "6NpUwoz2QDRN",
            "id": "f5dc173b-6804-445a-a6d8-c705dad5b5eb", "links": [{"href": "http://openstack.example.com/v2.1/servers/f5dc173b-6804-445a-a6d8-c705dad5b5eb", "rel": "self"}],
            "security_groups": [{"name": "default"}]}}"#,
        )
        .unwrap();
        assert_eq!(created.server.id, "f5dc173b-6804-445a-a6d8-c705dad5b5eb");
    }

    #[test]
    fn parses_api_ref_server_show() {
        let body = r#"{"server": {"OS-DCF:diskConfig": "AUTO", "OS-EXT-AZ:availability_zone": "nova",
          "OS-EXT-STS:power_state": 1, "OS-EXT-STS:task_state": null, "OS-EXT-STS:vm_state": "error",
          "OS-SRV-USG:launched_at": "2017-02-14T19:23:59.895661", "OS-SRV-USG:terminated_at": null,
          "accessIPv4": "1.2.3.4", "accessIPv6": "80fe::",
          "addresses": {"private": [{"OS-EXT-IPS-MAC:mac_addr": "aa:bb:cc:dd:ee:ff", "OS-EXT-IPS:type": "fixed", "addr": "192.168.1.30", "version": 4}]},
          "config_drive": "", "created": "2017-02-14T19:23:58Z", "description": null,
          "fault": {"code": 500, "created": "2017-02-14T19:23:59Z", "message": "No valid host was found."},
          "flavor": {"disk": 1, "ephemeral": 0, "extra_specs": {}, "original_name": "m1.tiny", "ram": 512, "swap": 0, "vcpus": 1},
          "hostId": "2091634baaccdc4c5a1d57069c833e402921df696b7f970791b12ec6", "id": "9168b536-cd40-4630-b43f-b259807c6e87",
          "image": {"id": "70a599e0-31e7-49b7-b260-868f441e862b", "links": [{"href": "http://openstack.example.com/6f70656e737461636b20342065766572/images/70a599e0-31e7-49b7-b260-868f441e862b", "rel": "bookmark"}]},
          "key_name": null, "links": [], "locked": false, "metadata": {"My Server Name": "Apache1"}, "name": "new-server-test",
          "os-extended-volumes:volumes_attached": [{"delete_on_termination": false, "id": "volume_id1"}],
          "progress": 0, "security_groups": [{"name": "default"}], "status": "ERROR", "tags": [],
          "tenant_id": "6f70656e737461636b20342065766572", "trusted_image_certificates": null,
          "updated": "2017-02-14T19:24:00Z", "user_id": "fake"}}"#;
        let s: ServerBody = serde_json::from_str(body).unwrap();
        assert_eq!(s.server.status, "ERROR");
        assert_eq!(s.server.fault.as_ref().unwrap().message, "No valid host was found.");
        assert_eq!(s.server.addresses["private"][0].ip_type.as_deref(), Some("fixed"));
        assert_eq!(s.server.flavor.as_ref().unwrap().original_name.as_deref(), Some("m1.tiny"));
        assert_eq!(s.server.vm_state.as_deref(), Some("error"));
        let again = serde_json::to_value(&s).unwrap();
        assert_eq!(again["server"]["updated"], "2017-02-14T19:24:00Z");
        assert_eq!(again["server"]["OS-SRV-USG:launched_at"], "2017-02-14T19:23:59.895661");
        let v21: ServerBody = serde_json::from_str(
            r#"{"server": {"id": "x", "name": "n", "status": "BUILD", "created": "2017-02-14T19:23:58Z",
            "updated": "2017-02-14T19:23:58Z", "image": "", "flavor": {"id": "1", "links": []}}}"#,
        )
        .unwrap();
        assert_eq!(v21.server.image, Some(ServerImage::None(String::new())));
    }

    #[test]
    fn parses_api_ref_availability_zones_server_groups_and_hints() {
        let az: AvailabilityZoneList = serde_json::from_str(
            r#"{"availabilityZoneInfo": [{"zoneState": {"available": true}, "hosts": null, "zoneName": "nova"}]}"#,
        )
        .unwrap();
        assert_eq!((az.zones[0].name.as_str(), az.zones[0].state.available), ("nova", true));
        let detail: AvailabilityZoneList = serde_json::from_str(
            r#"{"availabilityZoneInfo": [{"zoneName": "internal", "zoneState": {"available": true},
            "hosts": {"fake_host-1": {"nova-conductor": {"available": true, "active": true,
            "updated_at": "2012-12-26T14:45:25.000000"}}}}, {"zoneName": "nova", "zoneState": {"available": true},
            "hosts": {"fake_host-1": {"nova-compute": {"available": true, "active": true, "updated_at": null}}}}]}"#,
        )
        .unwrap();
        assert!(detail.zones[1].hosts.as_ref().unwrap()["fake_host-1"]["nova-compute"].active);
        let old: ServerGroupBody = serde_json::from_str(
            r#"{"server_group": {"id": "616fb98f-46ca-475e-917e-2563e5a8cd19", "name": "test",
            "policies": ["anti-affinity"], "members": [], "metadata": {}}}"#,
        )
        .unwrap();
        assert_eq!(old.server_group.the_policy(), Some("anti-affinity"));
        let new: ServerGroupList = serde_json::from_str(
            r#"{"server_groups": [{"id": "616fb98f-46ca-475e-917e-2563e5a8cd19", "name": "test",
            "policy": "anti-affinity", "rules": {"max_server_per_host": 3}, "members": [],
            "project_id": "6f70656e737461636b20342065766572", "user_id": "fake"}]}"#,
        )
        .unwrap();
        assert_eq!(new.server_groups[0].the_policy(), Some("anti-affinity"));
        // The SDK's key for the hints is accepted as well as the api-ref's.
        let req: ServerCreateRequest = serde_json::from_str(
            r#"{"server": {"name": "a", "flavorRef": "1"}, "OS-SCH-HNT:scheduler_hints": {"group": "616fb98f-46ca-475e-917e-2563e5a8cd19"}}"#,
        )
        .unwrap();
        assert_eq!(req.scheduler_hints.unwrap()["group"], "616fb98f-46ca-475e-917e-2563e5a8cd19");
    }

    #[test]
    fn parses_flavor_attachments_limits_quota_and_errors() {
        let f: FlavorList = serde_json::from_str(
            r#"{"flavors": [{"OS-FLV-DISABLED:disabled": false, "disk": 1, "OS-FLV-EXT-DATA:ephemeral": 0,
            "os-flavor-access:is_public": true, "id": "1", "links": [], "name": "m1.tiny", "ram": 512, "swap": "",
            "vcpus": 1, "rxtx_factor": 1.0, "description": null, "extra_specs": {}}]}"#,
        )
        .unwrap();
        assert_eq!(f.flavors[0].swap, 0);
        let old: VolumeAttachmentBody = serde_json::from_str(
            r#"{"volumeAttachment": {"device": "/dev/sdb", "id": "a26887c6-c47b-4654-abb5-dfadf7d3f803",
            "serverId": "2390fb4d-1693-45d7-b309-e29c4af16538", "volumeId": "a26887c6-c47b-4654-abb5-dfadf7d3f803"}}"#,
        )
        .unwrap();
        assert_eq!(old.volume_attachment.id.as_deref(), Some("a26887c6-c47b-4654-abb5-dfadf7d3f803"));
        let new: VolumeAttachmentList = serde_json::from_str(
            r#"{"volumeAttachments": [{"attachment_id": "979ce4f8-033a-409d-85e6-6b5c0f6a6302",
            "delete_on_termination": false, "device": "/dev/sdc", "serverId": "7696780b-3f53-4688-ab25-019bfcbbd806",
            "tag": null, "volumeId": "227cc671-f30b-4488-96fd-7d0bf13648d8", "bdm_uuid": "c088db45-92b8-49e8-81e2-a1b77a144b3b"}]}"#,
        )
        .unwrap();
        assert_eq!(new.volume_attachments[0].id, None);
        assert!(new.volume_attachments[0].bdm_uuid.is_some());
        let l: LimitsBody = serde_json::from_str(
            r#"{"limits": {"absolute": {"maxImageMeta": 128, "maxPersonality": 5, "maxPersonalitySize": 10240,
            "maxServerMeta": 128, "maxTotalCores": 20, "maxTotalInstances": 10, "maxTotalKeypairs": 100,
            "maxTotalRAMSize": 51200, "maxServerGroups": 10, "maxServerGroupMembers": 10, "totalCoresUsed": 0,
            "totalInstancesUsed": 0, "totalRAMUsed": 0, "totalServerGroupsUsed": 0}, "rate": []}}"#,
        )
        .unwrap();
        assert_eq!(l.limits.absolute.max_total_ram_size, 51200);
        let q: QuotaSetBody = serde_json::from_str(
            r#"{"quota_set": {"cores": 20, "id": "fake_tenant", "instances": 10, "key_pairs": 100,
            "metadata_items": 128, "ram": 51200, "server_groups": 10, "server_group_members": 10}}"#,
        )
        .unwrap();
        assert_eq!(q.quota_set.instances, Some(10));
        let e: FaultBody = serde_json::from_str(
            r#"{"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, "forbidden");
        assert_eq!(e.detail.code, 403);
        assert_eq!(
            serde_json::to_value(FaultBody::for_status(404, "gone")).unwrap(),
            serde_json::json!({"itemNotFound": {"code": 404, "message": "gone"}})
        );
    }
}
