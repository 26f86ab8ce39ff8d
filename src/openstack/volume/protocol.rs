//! Cinder v3 wire types: volumes (status, attachments, metadata), the create request, volume
//! types, availability zones, quota sets and the error body (the same one-key envelope as
//! Nova's).
//!
//! Shared by the client and the simulator. Cinder writes times without a zone
//! (`2026-11-26T10:00:00.000000`, UTC).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::openstack::protocol_time;

pub use crate::openstack::compute::protocol::{FaultBody as ErrorBody, FaultDetail, Link};

/// The header that carries the volume microversion: `OpenStack-API-Version: volume 3.X`.
pub const MICROVERSION_HEADER: &str = "OpenStack-API-Version";

/// One attachment of a volume, as the volume shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeAttachment {
    pub id: String,
    #[serde(default)]
    pub attachment_id: String,
    pub volume_id: String,
    pub server_id: String,
    #[serde(default)]
    pub host_name: Option<String>,
    #[serde(default)]
    pub device: Option<String>,
    #[serde(default, with = "protocol_time::micros_naive::option")]
    pub attached_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Volume {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `creating`, `available`, `reserved`, `attaching`, `in-use`, `detaching`, `deleting`,
    /// `error`, `error_deleting`, ...
    pub status: String,
    pub size: u64,
    #[serde(default)]
    pub availability_zone: Option<String>,
    #[serde(with = "protocol_time::micros_naive")]
    pub created_at: DateTime<Utc>,
    #[serde(default, with = "protocol_time::micros_naive::option")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub attachments: Vec<VolumeAttachment>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub volume_type: Option<String>,
    /// From 3.63.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type_id: Option<String>,
    /// `"true"` or `"false"` (a string).
    #[serde(default)]
    pub bootable: String,
    /// What a volume made from an image carries of it (`image_id`, `image_name`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_image_metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub encrypted: bool,
    #[serde(default)]
    pub multiattach: bool,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(rename = "os-vol-tenant-attr:tenant_id", default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub snapshot_id: Option<String>,
    #[serde(default)]
    pub source_volid: Option<String>,
    #[serde(default)]
    pub replication_status: Option<String>,
    #[serde(default)]
    pub consistencygroup_id: Option<String>,
    #[serde(default)]
    pub migration_status: Option<String>,
    /// From 3.13.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// From 3.65.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumes_quota: Option<bool>,
    #[serde(default)]
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeBody {
    pub volume: Volume,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeList {
    pub volumes: Vec<Volume>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes_links: Option<Vec<Link>>,
    /// With `with_count=true` (3.45).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
}

/// `GET /volumes` (not detail): id, name, links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSummary {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSummaryList {
    pub volumes: Vec<VolumeSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes_links: Option<Vec<Link>>,
}

/// `POST /volumes` body (answered 202 with a [`VolumeBody`] in `creating`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeCreateRequest {
    pub volume: VolumeCreate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeCreate {
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    #[serde(rename = "imageRef", default, skip_serializing_if = "Option::is_none")]
    pub image_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_volid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiattach: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeType {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub is_public: bool,
    #[serde(rename = "os-volume-type-access:is_public", default = "yes")]
    pub access_is_public: bool,
    #[serde(default)]
    pub extra_specs: BTreeMap<String, String>,
    #[serde(default)]
    pub qos_specs_id: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeTypeList {
    pub volume_types: Vec<VolumeType>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeTypeBody {
    pub volume_type: VolumeType,
}

/// `GET/PUT /os-quota-sets/{project_id}`; `-1` means unlimited. Per-type keys
/// (`volumes_ssd`, `gigabytes_ssd`, ...) are in `other`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaSetBody {
    pub quota_set: QuotaSet,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotaSet {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gigabytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_gigabytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_volume_gigabytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<i64>,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `GET /os-quota-sets/{project_id}?usage=True`: per resource `{in_use, limit, reserved,
/// allocated}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaUsageBody {
    pub quota_set: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuotaUsage {
    pub in_use: i64,
    pub limit: i64,
    #[serde(default)]
    pub reserved: i64,
    #[serde(default)]
    pub allocated: i64,
}

/// `GET /os-availability-zone`: Cinder's own zones (its `storage_availability_zone`, not
/// Nova's), each `{zoneName, zoneState: {available}}`.
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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneState {
    pub available: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_ref_volume_show() {
        let body = r#"{"volume": {"attachments": [{"server_id": "f4fda93b-06e0-4743-8117-bc8bcecd651b",
          "attachment_id": "3b8b6631-1cf7-4fd7-9afb-c01e541a073c", "attached_at": "2016-04-25T12:07:19.000000",
          "host_name": null, "volume_id": "6edbc2f4-1507-44f8-ac0d-eed1d2608d38", "device": "/dev/vdb",
          "id": "6edbc2f4-1507-44f8-ac0d-eed1d2608d38"}],
          "availability_zone": "nova", "bootable": "false", "consistencygroup_id": null,
          "created_at": "2018-11-29T06:50:07.770785", "description": null, "encrypted": false,
          "id": "f7223234-1afc-4d19-bfa3-d19deb6235ef", "links": [{"href": "http://127.0.0.1:45839/v3/89afd400-b646-4bbc-b12b-c0a4d63e5bd3/volumes/f7223234-1afc-4d19-bfa3-d19deb6235ef", "rel": "self"}],
          "metadata": {"readonly": "false"}, "migration_status": null, "multiattach": false, "name": null,
          "os-vol-tenant-attr:tenant_id": "89afd400-b646-4bbc-b12b-c0a4d63e5bd3", "replication_status": null,
          "size": 10, "snapshot_id": null, "source_volid": null, "status": "in-use",
          "updated_at": null, "user_id": "c853ca26-e8ea-4797-8a52-ee124a013d0e", "volume_type": "__DEFAULT__",
          "group_id": null, "provider_id": null, "service_uuid": null, "shared_targets": true, "cluster_name": null,
          "volume_type_id": "5fed9d7c-401d-46e2-8e80-f30c70cb7e1d", "consumes_quota": true}}"#;
        let v: VolumeBody = serde_json::from_str(body).unwrap();
        assert_eq!(v.volume.status, "in-use");
        assert_eq!(v.volume.attachments[0].device.as_deref(), Some("/dev/vdb"));
        assert_eq!(v.volume.metadata["readonly"], "false");
        let again = serde_json::to_value(&v).unwrap();
        assert_eq!(again["volume"]["created_at"], "2018-11-29T06:50:07.770785");
    }

    #[test]
    fn parses_quota_and_over_limit() {
        let q: QuotaSetBody = serde_json::from_str(
            r#"{"quota_set": {"id": "p", "volumes": 10, "gigabytes": 1000, "snapshots": 10, "backups": 10,
            "backup_gigabytes": 1000, "per_volume_gigabytes": -1, "groups": 10, "volumes___DEFAULT__": -1}}"#,
        )
        .unwrap();
        assert_eq!(q.quota_set.volumes, Some(10));
        assert_eq!(q.quota_set.other["volumes___DEFAULT__"], -1);
        let e: ErrorBody = serde_json::from_str(
            r#"{"overLimit": {"code": 413, "message": "VolumeLimitExceeded: Maximum number of volumes allowed (2) exceeded for quota 'volumes'.", "retryAfter": "0"}}"#,
        )
        .unwrap();
        assert_eq!(e.kind, "overLimit");
        assert_eq!(e.detail.retry_after.as_deref(), Some("0"));
    }
}
