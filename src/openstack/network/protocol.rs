//! Neutron v2.0 wire types: networks, subnets, ports (with fixed IPs, binding and tags),
//! security groups with their rules, floating IPs, quotas and the `NeutronError` body.
//!
//! Shared by the client and the simulator. Request bodies skip absent fields, so a client
//! sends only what it sets, as Neutron expects.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::openstack::protocol_time;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    /// `ACTIVE`, `DOWN`, `BUILD`, `ERROR`.
    pub status: String,
    #[serde(default)]
    pub subnets: Vec<String>,
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    #[serde(default)]
    pub shared: bool,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(rename = "router:external", default)]
    pub router_external: bool,
    #[serde(default)]
    pub port_security_enabled: Option<bool>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub availability_zone_hints: Vec<String>,
    #[serde(default)]
    pub availability_zones: Vec<String>,
    #[serde(default)]
    pub ipv4_address_scope: Option<String>,
    #[serde(default)]
    pub ipv6_address_scope: Option<String>,
    #[serde(default)]
    pub is_default: Option<bool>,
    #[serde(rename = "provider:network_type", default, skip_serializing_if = "Option::is_none")]
    pub provider_network_type: Option<String>,
    #[serde(default)]
    pub revision_number: u64,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkBody {
    pub network: Network,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkList {
    pub networks: Vec<Network>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub networks_links: Option<Vec<Link>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    pub rel: String,
    pub href: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AllocationPool {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    pub id: String,
    pub name: String,
    pub network_id: String,
    pub cidr: String,
    pub ip_version: u8,
    #[serde(default)]
    pub gateway_ip: Option<String>,
    #[serde(default)]
    pub allocation_pools: Vec<AllocationPool>,
    #[serde(default)]
    pub enable_dhcp: bool,
    #[serde(default)]
    pub dns_nameservers: Vec<String>,
    #[serde(default)]
    pub host_routes: Vec<serde_json::Value>,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub ipv6_address_mode: Option<String>,
    #[serde(default)]
    pub ipv6_ra_mode: Option<String>,
    #[serde(default)]
    pub subnetpool_id: Option<String>,
    #[serde(default)]
    pub service_types: Vec<String>,
    #[serde(default)]
    pub revision_number: u64,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubnetBody {
    pub subnet: Subnet,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubnetList {
    pub subnets: Vec<Subnet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets_links: Option<Vec<Link>>,
}

/// One fixed IP of a port. In a create request either field may be given alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FixedIp {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub network_id: String,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub mac_address: String,
    #[serde(default = "yes")]
    pub admin_state_up: bool,
    /// `DOWN` until a server binds it, then `ACTIVE`.
    pub status: String,
    /// The server using the port, or `""`.
    #[serde(default)]
    pub device_id: String,
    /// `compute:<az>` when a server uses it, `""` otherwise.
    #[serde(default)]
    pub device_owner: String,
    #[serde(default)]
    pub fixed_ips: Vec<FixedIp>,
    #[serde(default)]
    pub security_groups: Vec<String>,
    #[serde(default)]
    pub allowed_address_pairs: Vec<serde_json::Value>,
    #[serde(default)]
    pub extra_dhcp_opts: Vec<serde_json::Value>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub port_security_enabled: Option<bool>,
    #[serde(rename = "binding:host_id", default)]
    pub binding_host_id: Option<String>,
    #[serde(rename = "binding:vif_type", default)]
    pub binding_vif_type: Option<String>,
    #[serde(rename = "binding:vnic_type", default)]
    pub binding_vnic_type: Option<String>,
    #[serde(rename = "binding:profile", default)]
    pub binding_profile: Option<serde_json::Value>,
    #[serde(rename = "binding:vif_details", default)]
    pub binding_vif_details: Option<serde_json::Value>,
    #[serde(default)]
    pub revision_number: u64,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortBody {
    pub port: Port,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortList {
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports_links: Option<Vec<Link>>,
}

/// `POST /v2.0/ports` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortCreateRequest {
    pub port: PortCreate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortCreate {
    pub network_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_ips: Option<Vec<FixedIp>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
    /// Accepted on create with the `tag-creation` extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security_enabled: Option<bool>,
    #[serde(rename = "binding:vnic_type", default, skip_serializing_if = "Option::is_none")]
    pub binding_vnic_type: Option<String>,
    #[serde(rename = "binding:host_id", default, skip_serializing_if = "Option::is_none")]
    pub binding_host_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
}

/// `PUT /v2.0/ports/{id}` body: only the fields to change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortUpdateRequest {
    pub port: PortUpdate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PortUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_state_up: Option<bool>,
    #[serde(rename = "binding:host_id", default, skip_serializing_if = "Option::is_none")]
    pub binding_host_id: Option<String>,
    /// Replaces the port's groups (ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups: Option<Vec<String>>,
}

/// `PUT /v2.0/{resources}/{id}/tags` body (replace all tags) and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tags {
    pub tags: Vec<String>,
}

/// A security group (`GET /v2.0/security-groups/{id}`), with its rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub security_group_rules: Vec<SecurityGroupRule>,
    #[serde(default = "yes")]
    pub stateful: bool,
    #[serde(default)]
    pub shared: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub revision_number: u64,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

/// One rule of a security group. `None` fields are JSON `null` (any protocol, any port, any
/// remote), as Neutron shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroupRule {
    pub id: String,
    pub security_group_id: String,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `IPv4` or `IPv6`.
    pub ethertype: String,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub port_range_min: Option<u16>,
    #[serde(default)]
    pub port_range_max: Option<u16>,
    #[serde(default)]
    pub remote_ip_prefix: Option<String>,
    #[serde(default)]
    pub remote_group_id: Option<String>,
    #[serde(default)]
    pub remote_address_group_id: Option<String>,
    #[serde(default)]
    pub normalized_cidr: Option<String>,
    /// `null` on the rules Neutron makes itself (a new group's egress rules, a default group's),
    /// as the real Neutron shows them.
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub belongs_to_default_sg: Option<bool>,
    #[serde(default)]
    pub revision_number: u64,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroupBody {
    pub security_group: SecurityGroup,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroupList {
    pub security_groups: Vec<SecurityGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_groups_links: Option<Vec<Link>>,
}

/// `POST /v2.0/security-groups` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroupCreateRequest {
    pub security_group: SecurityGroupCreate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecurityGroupCreate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stateful: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
}

/// A floating IP (`GET /v2.0/floatingips/{id}`): an address of an external network, mapped to
/// a port's fixed IP once associated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatingIp {
    pub id: String,
    pub floating_ip_address: String,
    pub floating_network_id: String,
    /// The port it is associated with, or `null`.
    #[serde(default)]
    pub port_id: Option<String>,
    #[serde(default)]
    pub fixed_ip_address: Option<String>,
    #[serde(default)]
    pub router_id: Option<String>,
    /// `ACTIVE` once associated, `DOWN` otherwise (`ERROR` when the backend failed).
    pub status: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tenant_id: String,
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub port_details: Option<serde_json::Value>,
    #[serde(default)]
    pub qos_policy_id: Option<String>,
    #[serde(default)]
    pub dns_domain: Option<String>,
    #[serde(default)]
    pub dns_name: Option<String>,
    #[serde(default)]
    pub revision_number: u64,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, with = "protocol_time::seconds_z::option")]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatingIpBody {
    pub floatingip: FloatingIp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatingIpList {
    pub floatingips: Vec<FloatingIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floatingips_links: Option<Vec<Link>>,
}

/// `POST /v2.0/floatingips` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatingIpCreateRequest {
    pub floatingip: FloatingIpCreate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FloatingIpCreate {
    pub floating_network_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating_ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Accepted on create with the `tag-creation` extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos_policy_id: Option<String>,
}

/// `PUT /v2.0/floatingips/{id}` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FloatingIpUpdateRequest {
    pub floatingip: FloatingIpUpdate,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FloatingIpUpdate {
    /// `Some(None)` is `"port_id": null` (disassociate); `None` leaves the association as it is.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub port_id: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// A field that is there (even as `null`) is `Some`: tells `"port_id": null` from no `port_id`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Neutron quota limits (`GET/PUT /v2.0/quotas/{project_id}`); `-1` means unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaBody {
    pub quota: Quota,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floatingip: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_rule: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnetpool: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rbac_policy: Option<i64>,
    /// Quotas of other resources (extensions), and request flags such as `check_limit`
    /// (which openstacksdk sends with an update).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `GET /v2.0/quotas/{project_id}/details.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuotaDetailsBody {
    pub quota: BTreeMap<String, QuotaUsage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QuotaUsage {
    pub limit: i64,
    pub used: i64,
    #[serde(default)]
    pub reserved: i64,
}

/// Neutron's error body: `{"NeutronError": {"type": "OverQuota", "message": "...", "detail": ""}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "NeutronError")]
    pub error: NeutronError,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeutronError {
    /// `OverQuota`, `PortNotFound`, `NetworkNotFound`, `IpAddressGenerationFailure`, ...
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
    #[serde(default)]
    pub detail: String,
}

/// `GET /networking/` (200 in Neutron): the API versions.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Real Neutron 29's default group (shared/real-openstack): its own rules have
    /// `"description": null`.
    #[test]
    fn parses_a_real_default_security_group_with_null_rule_descriptions() {
        let body = r#"{"security_groups": [{"id": "b3ca28e6-3da8-4e66-b25e-3a33651ce65a", "name": "default",
          "stateful": true, "tenant_id": "a0aac6793c904d27809784e9d351a5e5", "project_id": "a0aac6793c904d27809784e9d351a5e5",
          "description": "Default security group", "shared": false, "security_group_rules": [{"id": "fcb59817-1e31-4aeb-8280-80df2de17d5e",
          "project_id": "a0aac6793c904d27809784e9d351a5e5", "security_group_id": "b3ca28e6-3da8-4e66-b25e-3a33651ce65a",
          "ethertype": "IPv6", "direction": "egress", "protocol": null, "port_range_min": null, "port_range_max": null,
          "remote_ip_prefix": null, "remote_address_group_id": null, "normalized_cidr": null, "remote_group_id": null,
          "standard_attr_id": 34, "belongs_to_default_sg": null, "description": null, "tags": [],
          "created_at": "2026-12-07T07:55:45Z", "updated_at": "2026-12-07T07:55:45Z", "revision_number": 0,
          "tenant_id": "a0aac6793c904d27809784e9d351a5e5"}], "tags": [], "created_at": "2026-12-07T07:55:45Z",
          "updated_at": "2026-12-07T07:55:45Z", "revision_number": 1}]}"#;
        let list: SecurityGroupList = serde_json::from_str(body).unwrap();
        let rule = &list.security_groups[0].security_group_rules[0];
        assert_eq!((rule.direction.as_str(), rule.description.as_deref()), ("egress", None));
    }

    #[test]
    fn parses_api_ref_port_create_response() {
        let body = r#"{"port": {"admin_state_up": true, "allowed_address_pairs": [],
          "binding:host_id": "", "binding:profile": {}, "binding:vif_details": {}, "binding:vif_type": "unbound",
          "binding:vnic_type": "normal", "created_at": "2016-03-08T20:19:41Z", "data_plane_status": null,
          "description": "", "device_id": "", "device_owner": "", "dns_assignment": [], "extra_dhcp_opts": [],
          "fixed_ips": [{"ip_address": "10.0.0.2", "subnet_id": "a0304c3a-4f08-4c43-88af-d796509c97d2"}],
          "id": "ebe69f1e-bc26-4db5-bed0-c0afb4afe3db", "mac_address": "fa:16:3e:c9:cb:f0", "name": "private-port",
          "network_id": "a87cc70a-3e15-4acf-8205-9b711a3531b7", "port_security_enabled": true,
          "project_id": "d6700c0c9ffa4f1cb322cd4a1f3906fa", "revision_number": 1, "security_groups": ["f0ac4394-7e4a-4409-9701-ba8be283dbc3"],
          "status": "DOWN", "tags": ["tag1,tag2"], "tenant_id": "d6700c0c9ffa4f1cb322cd4a1f3906fa",
          "updated_at": "2016-03-08T20:19:41Z"}}"#;
        let p: PortBody = serde_json::from_str(body).unwrap();
        assert_eq!(p.port.status, "DOWN");
        assert_eq!(p.port.fixed_ips[0].ip_address.as_deref(), Some("10.0.0.2"));
        assert_eq!(p.port.binding_vif_type.as_deref(), Some("unbound"));
        let req = PortCreateRequest {
            port: PortCreate { network_id: "n1".into(), name: Some("p".into()), ..Default::default() },
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"port": {"network_id": "n1", "name": "p"}})
        );
    }

    #[test]
    fn parses_network_subnet_quota_and_error() {
        let n: NetworkList = serde_json::from_str(
            r#"{"networks": [{"admin_state_up": true, "id": "396f12f8-521e-4b91-8e21-2e003500433a",
            "name": "net3", "provider:network_type": "vlan", "router:external": false, "shared": true,
            "status": "ACTIVE", "subnets": [], "tenant_id": "20bd52ff3e1b40039c312395b04683cf",
            "project_id": "20bd52ff3e1b40039c312395b04683cf", "mtu": 1500, "tags": ["a"],
            "created_at": "2016-03-08T20:19:41Z", "updated_at": "2016-03-08T20:19:41Z", "revision_number": 1}]}"#,
        )
        .unwrap();
        assert!(n.networks[0].shared);
        let s: SubnetBody = serde_json::from_str(
            r#"{"subnet": {"name": "private-subnet", "enable_dhcp": true, "network_id": "db193ab3-96e3-4cb3-8fc5-05f4296d0324",
            "tenant_id": "26a7980765d0414dbc1fc1f88cdb7e6e", "dns_nameservers": [], "allocation_pools": [{"start": "10.0.0.2", "end": "10.0.0.254"}],
            "host_routes": [], "ip_version": 4, "gateway_ip": "10.0.0.1", "cidr": "10.0.0.0/24", "id": "08eae331-0402-425a-923c-34f7cfe39c1b"}}"#,
        )
        .unwrap();
        assert_eq!(s.subnet.allocation_pools[0].end, "10.0.0.254");
        let q: QuotaBody = serde_json::from_str(
            r#"{"quota": {"floatingip": 50, "network": 10, "port": 50, "rbac_policy": -1, "router": 10,
            "security_group": 10, "security_group_rule": 100, "subnet": 10, "subnetpool": -1, "trunk": -1}}"#,
        )
        .unwrap();
        assert_eq!(q.quota.port, Some(50));
        assert_eq!(q.quota.other["trunk"], -1);
        let d: QuotaDetailsBody =
            serde_json::from_str(r#"{"quota": {"port": {"used": 1, "limit": 50, "reserved": 0}}}"#).unwrap();
        assert_eq!(d.quota["port"].used, 1);
        let e: ErrorBody = serde_json::from_str(
            r#"{"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: ['port'].", "detail": ""}}"#,
        )
        .unwrap();
        assert_eq!(e.error.kind, "OverQuota");
    }
}
