//! Order v1 (`schemas/order.v1.json`): what billing publishes on `billing.orders` to ask for a VM.
//!
//! `deny_unknown_fields` mirrors the schema's `additionalProperties: false`: a typo in billing
//! (say `falvor`) is a rejected order, never a VM built with a setting silently dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Decoded size limit of `server.user_data` (Nova's own limit is 64 KiB as well).
pub const MAX_USER_DATA_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    pub order_id: String,
    /// The customer's project; empty when the order names its tenant instead (`tenant_ref`):
    /// the job gets the tenant's project id once the tenant is active.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub project_id: String,
    /// The tenant (`order.tenant.create`) whose project the VM goes into, instead of `project_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_ref: Option<String>,
    pub server: OrderServer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<OrderVolume>,
    /// A region of the cloud's catalog: every resource of the order (and of the service's later
    /// actions) is made in it. Absent: the configured region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderServer {
    pub name: String,
    /// Flavor name or id.
    pub flavor: String,
    /// Image exact name or id.
    pub image: String,
    /// Network name or id.
    pub network: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    /// An OpenSSH public key, imported as the keypair `prov-<job id>` for the boot (instead of
    /// `key_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_public_key: Option<String>,
    /// Base64, passed to Nova as is. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Neutron security groups (names or ids, resolved in the order's project) applied to the
    /// server's port; empty (absent) means the project's `default` group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
    /// A floating IP from this external network, associated with the server's port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<OrderPublicIp>,
    /// The Nova availability zone to create the server in (absent: Nova's choice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// An existing Nova server group of the order's project (id or exact name), passed as the
    /// scheduler hint `group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_group: Option<String>,
    /// Boot from a Cinder volume made from the image (instead of the flavor's ephemeral disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_volume: Option<OrderBootVolume>,
}

/// `server.boot_volume`: the server boots from a volume Nova makes from the order's image
/// (block device mapping v2: `source_type: image`, `destination_type: volume`, boot index 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderBootVolume {
    pub size_gb: u32,
    /// Cinder volume type name or id; `None` means the cloud's default type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
    /// Whether Nova deletes the volume with the server (terminate); absent means `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_on_termination: Option<bool>,
}

impl OrderBootVolume {
    /// `delete_on_termination`, defaulted (`true`: a terminated service leaves nothing billed).
    pub fn deletes_with_server(&self) -> bool {
        self.delete_on_termination.unwrap_or(true)
    }
}

/// `server.public_ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderPublicIp {
    /// The external network (`router:external`) by name or id.
    pub network: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderVolume {
    pub size_gb: u32,
    /// Cinder volume type name or id; `None` means the cloud's default type.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub volume_type: Option<String>,
}

impl Order {
    /// Checks of meaning that a JSON Schema cannot express. Called after schema validation.
    pub fn check_meaning(&self) -> Result<(), String> {
        if let Some(user_data) = &self.server.user_data {
            use base64::Engine as _;
            let compact: String = user_data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(compact.as_bytes())
                .map_err(|e| format!("/server/user_data: not valid base64 ({e})"))?;
            if decoded.len() > MAX_USER_DATA_BYTES {
                return Err(format!(
                    "/server/user_data: {} bytes once decoded, more than the limit of {} bytes",
                    decoded.len(),
                    MAX_USER_DATA_BYTES
                ));
            }
        }
        if let Some(key) = &self.server.ssh_public_key {
            crate::openstack::compute::protocol::parse_openssh_public_key(key)
                .map_err(|e| format!("/server/ssh_public_key: {e}"))?;
            if self.server.key_name.is_some() {
                return Err("/server: ssh_public_key and key_name are mutually exclusive".into());
            }
        }
        if self.order_id.chars().any(|c| !(' '..='~').contains(&c)) {
            return Err("/order_id: only printable ASCII characters are allowed".into());
        }
        Ok(())
    }
}
