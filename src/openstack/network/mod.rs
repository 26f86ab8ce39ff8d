//! Neutron v2.0: the network an order names, the security groups it names, the port the server
//! is booted on, the floating IP mapped to it, and a project's quotas (tenant onboarding, in an
//! admin's scope).
//!
//! Built like the other services: [`NetworkApi`] holds the shared session, each call takes the
//! project scope (the order's project id) and returns the wire types of [`protocol`].
//!
//! Ports are created with their tags in the create request (the `tag-creation` extension);
//! on a Neutron without it (a 400 naming `tags`), or one that accepts the tags and drops them
//! (the answer has none), the port is tagged right after with `PUT /ports/{id}/tags`, so a
//! crash in between can leave an untagged port (found by name, or by the engine's own records).
//! Floating IPs are tagged the same way. Deleting is idempotent: a port or floating IP already
//! gone is success.

pub mod protocol;

use std::sync::Arc;

use reqwest::Method;

use self::protocol::{
    FloatingIp, FloatingIpBody, FloatingIpCreate, FloatingIpCreateRequest, FloatingIpList, FloatingIpUpdate,
    FloatingIpUpdateRequest, Link, Network, NetworkBody, NetworkList, Port, PortBody, PortCreate,
    PortCreateRequest, PortList, SecurityGroup, SecurityGroupBody, SecurityGroupList, Tags,
};
use super::error::{ErrorClass, OpenStackError, Service, exactly_one};
use super::image::looks_like_uuid;
use super::session::{Request, Session};

const SERVICE: Service = Service::Network;

/// What the client sets on a new port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewPort {
    pub network_id: String,
    pub name: String,
    pub tags: Vec<String>,
    /// Security group ids; `None` leaves Neutron to apply the project's `default` group.
    pub security_groups: Option<Vec<String>>,
}

/// What the client sets on a new floating IP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewFloatingIp {
    /// The external network it is allocated from.
    pub network_id: String,
    pub description: String,
    pub tags: Vec<String>,
}

/// Neutron calls in a project's scope.
#[derive(Debug, Clone)]
pub struct NetworkApi {
    session: Arc<Session>,
}

fn next_link(links: &Option<Vec<Link>>) -> Option<String> {
    links.as_ref()?.iter().find(|l| l.rel == "next").map(|l| l.href.clone())
}

impl NetworkApi {
    pub fn new(session: Arc<Session>) -> NetworkApi {
        NetworkApi { session }
    }

    /// `GET /v2.0/networks/{id}`.
    pub async fn get_network(&self, project: &str, id: &str) -> Result<Network, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/networks/{id}", format!("/networks/{id}"));
        Ok(self.session.json::<NetworkBody>(project, req).await?.network)
    }

    /// `GET /v2.0/networks?name=...` (all pages): the networks the project can see with this name
    /// (its own, shared and external ones).
    pub async fn list_networks_by_name(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Vec<Network>, OpenStackError> {
        let mut networks = Vec::new();
        let mut req = Request::new(SERVICE, Method::GET, "/networks", "/networks").query("name", name);
        loop {
            let page: NetworkList = self.session.json(project, req.clone()).await?;
            let next = next_link(&page.networks_links);
            networks.extend(page.networks);
            match next {
                Some(link) => req = req.query_from_link(&link),
                None => break,
            }
        }
        networks.retain(|n| n.name == name);
        Ok(networks)
    }

    /// The one network with this id, or else this exact name.
    pub async fn find_network(&self, project: &str, id_or_name: &str) -> Result<Network, OpenStackError> {
        if looks_like_uuid(id_or_name) {
            match self.get_network(project, id_or_name).await {
                Ok(network) => return Ok(network),
                Err(e) if e.class == ErrorClass::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let found = self.list_networks_by_name(project, id_or_name).await?;
        exactly_one(SERVICE, "/networks", "network", id_or_name, found, |n| &n.id)
    }

    /// `GET /v2.0/security-groups/{id}`.
    pub async fn get_security_group(&self, project: &str, id: &str) -> Result<SecurityGroup, OpenStackError> {
        let req =
            Request::new(SERVICE, Method::GET, "/security-groups/{id}", format!("/security-groups/{id}"));
        Ok(self.session.json::<SecurityGroupBody>(project, req).await?.security_group)
    }

    /// The one security group of `project` with this id, or else this exact name. Only the
    /// project's own groups count: an admin's token sees every project's, so the list is filtered
    /// by `project_id` (and checked again here).
    pub async fn find_security_group(
        &self,
        project: &str,
        id_or_name: &str,
    ) -> Result<SecurityGroup, OpenStackError> {
        if looks_like_uuid(id_or_name) {
            match self.get_security_group(project, id_or_name).await {
                Ok(g) if g.project_id == project || g.tenant_id == project => return Ok(g),
                Ok(_) => {}
                Err(e) if e.class == ErrorClass::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let mut found = Vec::new();
        let mut req = Request::new(SERVICE, Method::GET, "/security-groups", "/security-groups")
            .query("name", id_or_name)
            .query("project_id", project);
        loop {
            let page: SecurityGroupList = self.session.json(project, req.clone()).await?;
            let next = next_link(&page.security_groups_links);
            found.extend(page.security_groups);
            match next {
                Some(link) => req = req.query_from_link(&link),
                None => break,
            }
        }
        found.retain(|g| g.name == id_or_name && (g.project_id == project || g.tenant_id == project));
        exactly_one(SERVICE, "/security-groups", "security group", id_or_name, found, |g| &g.id)
    }

    /// `POST /v2.0/ports` with name and tags (see the module doc for Neutrons without
    /// `tag-creation`).
    pub async fn create_port(&self, project: &str, new: &NewPort) -> Result<Port, OpenStackError> {
        let body = |tags: Option<Vec<String>>| PortCreateRequest {
            port: PortCreate {
                network_id: new.network_id.clone(),
                name: Some(new.name.clone()),
                tags,
                security_groups: new.security_groups.clone(),
                ..Default::default()
            },
        };
        let tags = (!new.tags.is_empty()).then(|| new.tags.clone());
        let req = Request::new(SERVICE, Method::POST, "/ports", "/ports").json(&body(tags.clone()));
        match self.session.json::<PortBody>(project, req).await {
            Ok(created) => {
                let mut port = created.port;
                // Some Neutrons take `tags` on create and drop them (seen on a real 2025.x
                // deployment with `tag-creation` listed): check, and tag now if needed.
                if !new.tags.iter().all(|t| port.tags.contains(t)) {
                    tracing::info!("neutron dropped the tags given at create; tagging the port after create");
                    port.tags = self.set_port_tags(project, &port.id, &new.tags).await?;
                }
                Ok(port)
            }
            Err(e) if tags.is_some() && e.status == Some(400) && e.message.contains("tags") => {
                tracing::info!("neutron does not take tags at create; tagging the port after create");
                let req = Request::new(SERVICE, Method::POST, "/ports", "/ports").json(&body(None));
                let mut port = self.session.json::<PortBody>(project, req).await?.port;
                port.tags = self.set_port_tags(project, &port.id, &new.tags).await?;
                Ok(port)
            }
            Err(e) => Err(e),
        }
    }

    /// `PUT /v2.0/ports/{id}/tags`: replaces the port's tags.
    pub async fn set_port_tags(
        &self,
        project: &str,
        id: &str,
        tags: &[String],
    ) -> Result<Vec<String>, OpenStackError> {
        let req = Request::new(SERVICE, Method::PUT, "/ports/{id}/tags", format!("/ports/{id}/tags"))
            .json(&Tags { tags: tags.to_vec() });
        Ok(self.session.json::<Tags>(project, req).await?.tags)
    }

    /// `GET /v2.0/ports/{id}`.
    pub async fn get_port(&self, project: &str, id: &str) -> Result<Port, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/ports/{id}", format!("/ports/{id}"));
        Ok(self.session.json::<PortBody>(project, req).await?.port)
    }

    /// `GET /v2.0/ports?tags=a,b` (all pages): the ports carrying every one of `tags`.
    pub async fn list_ports_by_tags(
        &self,
        project: &str,
        tags: &[String],
    ) -> Result<Vec<Port>, OpenStackError> {
        let mut ports = Vec::new();
        let mut req = Request::new(SERVICE, Method::GET, "/ports", "/ports").query("tags", tags.join(","));
        loop {
            let page: PortList = self.session.json(project, req.clone()).await?;
            let next = next_link(&page.ports_links);
            ports.extend(page.ports);
            match next {
                Some(link) => req = req.query_from_link(&link),
                None => break,
            }
        }
        ports.retain(|p| tags.iter().all(|t| p.tags.contains(t)));
        Ok(ports)
    }

    /// `DELETE /v2.0/ports/{id}`; a port already gone is success.
    pub async fn delete_port(&self, project: &str, id: &str) -> Result<(), OpenStackError> {
        let req = Request::new(SERVICE, Method::DELETE, "/ports/{id}", format!("/ports/{id}"));
        match self.session.send(project, req).await {
            Ok(_) => Ok(()),
            Err(e) if e.class == ErrorClass::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `POST /v2.0/floatingips` with description and tags (tagged after create when Neutron
    /// refuses or drops them, as ports are).
    pub async fn create_floating_ip(
        &self,
        project: &str,
        new: &NewFloatingIp,
    ) -> Result<FloatingIp, OpenStackError> {
        let body = |tags: Option<Vec<String>>| FloatingIpCreateRequest {
            floatingip: FloatingIpCreate {
                floating_network_id: new.network_id.clone(),
                description: Some(new.description.clone()).filter(|d| !d.is_empty()),
                tags,
                ..Default::default()
            },
        };
        let tags = (!new.tags.is_empty()).then(|| new.tags.clone());
        let req =
            Request::new(SERVICE, Method::POST, "/floatingips", "/floatingips").json(&body(tags.clone()));
        match self.session.json::<FloatingIpBody>(project, req).await {
            Ok(created) => {
                let mut fip = created.floatingip;
                if !new.tags.iter().all(|t| fip.tags.contains(t)) {
                    tracing::info!(
                        "neutron dropped the tags given at create; tagging the floating IP after create"
                    );
                    fip.tags = self.set_floating_ip_tags(project, &fip.id, &new.tags).await?;
                }
                Ok(fip)
            }
            Err(e) if tags.is_some() && e.status == Some(400) && e.message.contains("tags") => {
                tracing::info!("neutron does not take tags at create; tagging the floating IP after create");
                let req =
                    Request::new(SERVICE, Method::POST, "/floatingips", "/floatingips").json(&body(None));
                let mut fip = self.session.json::<FloatingIpBody>(project, req).await?.floatingip;
                fip.tags = self.set_floating_ip_tags(project, &fip.id, &new.tags).await?;
                Ok(fip)
            }
            Err(e) => Err(e),
        }
    }

    /// `PUT /v2.0/floatingips/{id}/tags`: replaces the floating IP's tags.
    pub async fn set_floating_ip_tags(
        &self,
        project: &str,
        id: &str,
        tags: &[String],
    ) -> Result<Vec<String>, OpenStackError> {
        let req =
            Request::new(SERVICE, Method::PUT, "/floatingips/{id}/tags", format!("/floatingips/{id}/tags"))
                .json(&Tags { tags: tags.to_vec() });
        Ok(self.session.json::<Tags>(project, req).await?.tags)
    }

    /// `GET /v2.0/floatingips/{id}`.
    pub async fn get_floating_ip(&self, project: &str, id: &str) -> Result<FloatingIp, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/floatingips/{id}", format!("/floatingips/{id}"));
        Ok(self.session.json::<FloatingIpBody>(project, req).await?.floatingip)
    }

    /// `GET /v2.0/floatingips?tags=a,b` (all pages): the floating IPs carrying every one of `tags`.
    pub async fn list_floating_ips_by_tags(
        &self,
        project: &str,
        tags: &[String],
    ) -> Result<Vec<FloatingIp>, OpenStackError> {
        let mut found = Vec::new();
        let mut req =
            Request::new(SERVICE, Method::GET, "/floatingips", "/floatingips").query("tags", tags.join(","));
        loop {
            let page: FloatingIpList = self.session.json(project, req.clone()).await?;
            let next = next_link(&page.floatingips_links);
            found.extend(page.floatingips);
            match next {
                Some(link) => req = req.query_from_link(&link),
                None => break,
            }
        }
        found.retain(|f| tags.iter().all(|t| f.tags.contains(t)));
        Ok(found)
    }

    /// `PUT /v2.0/floatingips/{id}` with `port_id`: associates it with the port (`None`:
    /// disassociates).
    pub async fn set_floating_ip_port(
        &self,
        project: &str,
        id: &str,
        port_id: Option<&str>,
    ) -> Result<FloatingIp, OpenStackError> {
        let body = FloatingIpUpdateRequest {
            floatingip: FloatingIpUpdate { port_id: Some(port_id.map(str::to_string)), ..Default::default() },
        };
        let req =
            Request::new(SERVICE, Method::PUT, "/floatingips/{id}", format!("/floatingips/{id}")).json(&body);
        Ok(self.session.json::<FloatingIpBody>(project, req).await?.floatingip)
    }

    /// `DELETE /v2.0/floatingips/{id}`; one already gone is success.
    pub async fn delete_floating_ip(&self, project: &str, id: &str) -> Result<(), OpenStackError> {
        let req = Request::new(SERVICE, Method::DELETE, "/floatingips/{id}", format!("/floatingips/{id}"));
        match self.session.send(project, req).await {
            Ok(_) => Ok(()),
            Err(e) if e.class == ErrorClass::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `GET /v2.0/quotas/{target}` in `scope` (an admin's scope to read another project's).
    pub async fn get_quota(&self, scope: &str, target: &str) -> Result<protocol::Quota, OpenStackError> {
        let req = Request::new(SERVICE, Method::GET, "/quotas/{id}", format!("/quotas/{target}"));
        Ok(self.session.json::<protocol::QuotaBody>(scope, req).await?.quota)
    }

    /// `GET /v2.0/quotas/{project}/details.json` in the project's own scope: limit, used and
    /// reserved of every resource.
    pub async fn quota_details(
        &self,
        project: &str,
    ) -> Result<std::collections::BTreeMap<String, protocol::QuotaUsage>, OpenStackError> {
        let req = Request::new(
            SERVICE,
            Method::GET,
            "/quotas/{id}/details.json",
            format!("/quotas/{project}/details.json"),
        );
        Ok(self.session.json::<protocol::QuotaDetailsBody>(project, req).await?.quota)
    }

    /// `PUT /v2.0/quotas/{target}` (admin): port, network, floatingip as given.
    pub async fn update_quota(
        &self,
        scope: &str,
        target: &str,
        quota: &protocol::Quota,
    ) -> Result<protocol::Quota, OpenStackError> {
        let req = Request::new(SERVICE, Method::PUT, "/quotas/{id}", format!("/quotas/{target}"))
            .json(&protocol::QuotaBody { quota: quota.clone() });
        Ok(self.session.json::<protocol::QuotaBody>(scope, req).await?.quota)
    }

    /// `DELETE /v2.0/quotas/{target}` (admin): back to the defaults.
    pub async fn delete_quota(&self, scope: &str, target: &str) -> Result<(), OpenStackError> {
        let req = Request::new(SERVICE, Method::DELETE, "/quotas/{id}", format!("/quotas/{target}"));
        self.session.send(scope, req).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Neutron api-ref, `GET /v2.0/ports/{port_id}` (port-show-response).
    #[test]
    fn parses_the_api_ref_port() {
        let body = r#"{
    "port": {
        "admin_state_up": true,
        "allowed_address_pairs": [],
        "binding:host_id": "devstack",
        "binding:profile": {},
        "binding:vif_details": {
            "ovs_hybrid_plug": true,
            "port_filter": true
        },
        "binding:vif_type": "ovs",
        "binding:vnic_type": "normal",
        "created_at": "2016-03-08T20:19:41",
        "data_plane_status": null,
        "description": "",
        "device_id": "5e3898d7-11be-483e-9732-b2f5eccd2b2e",
        "device_owner": "network:router_interface",
        "dns_assignment": {
            "hostname": "myport",
            "ip_address": "10.0.0.1",
            "fqdn": "myport.my-domain.org"
        },
        "dns_domain": "my-domain.org.",
        "dns_name": "myport",
        "extra_dhcp_opts": [
            {
                "opt_value": "pxelinux.0",
                "ip_version": 4,
                "opt_name": "bootfile-name"
            }
        ],
        "fixed_ips": [
            {
                "ip_address": "10.0.0.1",
                "subnet_id": "a0304c3a-4f08-4c43-88af-d796509c97d2"
            }
        ],
        "id": "46d4bfb9-b26e-41f3-bd2e-e6dcc1ccedb2",
        "ip_allocation": "immediate",
        "mac_address": "fa:16:3e:23:fd:d7",
        "name": "",
        "network_id": "a87cc70a-3e15-4acf-8205-9b711a3531b7",
        "port_security_enabled": false,
        "project_id": "7e02058126cc4950b75f9970368ba177",
        "revision_number": 1,
        "security_groups": [],
        "status": "ACTIVE",
        "tags": ["tag1,tag2"],
        "tenant_id": "7e02058126cc4950b75f9970368ba177",
        "updated_at": "2016-03-08T20:19:41",
        "qos_network_policy_id": "174dd0c1-a4eb-49d4-a807-ae80246d82f4",
        "qos_policy_id": "29d5e02e-d5ab-4929-bee4-4a9fc12e22ae",
        "propagate_uplink_status": false,
        "mac_learning_enabled": false,
        "port_trusted_vif": false
    }
}"#;
        let port: PortBody = serde_json::from_str(body).unwrap();
        assert_eq!(port.port.id, "46d4bfb9-b26e-41f3-bd2e-e6dcc1ccedb2");
        assert_eq!(port.port.status, "ACTIVE");
        assert_eq!(port.port.fixed_ips[0].ip_address.as_deref(), Some("10.0.0.1"));
        assert_eq!(port.port.binding_vif_type.as_deref(), Some("ovs"));
        assert!(port.port.created_at.is_some());
    }

    #[test]
    fn the_create_request_sends_only_what_we_set() {
        let req = PortCreateRequest {
            port: PortCreate {
                network_id: "n1".into(),
                name: Some("order-1".into()),
                tags: Some(vec!["provisioner".into(), "order:1".into()]),
                ..Default::default()
            },
        };
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            serde_json::json!({"port": {"network_id": "n1", "name": "order-1", "tags": ["provisioner", "order:1"]}})
        );
    }
}
