//! Glance v2 wire types: an image, the image list with its `next` link, version discovery.
//!
//! Shared by the client and the simulator. Glance puts custom image properties at the top
//! level of the image object; they are kept in `properties`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::openstack::protocol_time;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `queued`, `saving`, `active`, `killed`, `deleted`, `pending_delete`, `deactivated`,
    /// `uploading`, `importing`.
    pub status: String,
    #[serde(default)]
    pub visibility: Option<String>,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub os_hidden: bool,
    #[serde(default)]
    pub checksum: Option<String>,
    #[serde(default)]
    pub os_hash_algo: Option<String>,
    #[serde(default)]
    pub os_hash_value: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub virtual_size: Option<u64>,
    #[serde(default)]
    pub disk_format: Option<String>,
    #[serde(default)]
    pub container_format: Option<String>,
    #[serde(default)]
    pub min_disk: u64,
    #[serde(default)]
    pub min_ram: u64,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(with = "protocol_time::seconds_z")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "protocol_time::seconds_z")]
    pub updated_at: DateTime<Utc>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(rename = "self", default)]
    pub self_link: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
    /// Any other top-level key: the image's custom properties (`os_distro`, `hw_*`, ...).
    #[serde(flatten)]
    pub properties: BTreeMap<String, serde_json::Value>,
}

/// `GET /v2/images`: a page of images; `next` (a path with query, relative to the endpoint
/// root, e.g. `/v2/images?marker=...`) is present while more pages follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageList {
    pub images: Vec<Image>,
    #[serde(default)]
    pub first: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
}

/// `GET /image/` (300): the API versions Glance offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionList {
    pub versions: Vec<Version>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Version {
    pub id: String,
    pub status: String,
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub rel: String,
    pub href: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_api_ref_image_list() {
        let body = r#"{"images": [{"status": "active", "name": "cirros-0.3.2-x86_64-disk",
          "tags": [], "container_format": "bare", "created_at": "2014-11-07T17:07:06Z",
          "disk_format": "qcow2", "updated_at": "2014-11-07T17:19:09Z", "visibility": "public",
          "self": "/v2/images/1bea47ed-f6a9-463b-b423-14b9cca9ad27", "min_disk": 0, "protected": false,
          "id": "1bea47ed-f6a9-463b-b423-14b9cca9ad27", "file": "/v2/images/1bea47ed-f6a9-463b-b423-14b9cca9ad27/file",
          "checksum": "64d7c1cd2b6f60c92c14662941cb7913", "os_hash_algo": "sha512", "os_hash_value": "abc",
          "os_hidden": false, "owner": "5ef70662f8b34079a6eddb8da9d75fe8", "size": 13167616, "min_ram": 0,
          "schema": "/v2/schemas/image", "virtual_size": null, "hw_disk_bus": "scsi"}],
          "schema": "/v2/schemas/images", "first": "/v2/images",
          "next": "/v2/images?marker=1bea47ed-f6a9-463b-b423-14b9cca9ad27"}"#;
        let list: ImageList = serde_json::from_str(body).unwrap();
        assert_eq!(list.images[0].status, "active");
        assert_eq!(list.images[0].properties["hw_disk_bus"], "scsi");
        assert!(list.next.as_deref().unwrap().contains("marker="));
        let again = serde_json::to_value(&list.images[0]).unwrap();
        assert_eq!(again["created_at"], "2014-11-07T17:07:06Z");
        assert_eq!(again["hw_disk_bus"], "scsi");
    }
}
