//! Simulated Neutron v2.0 under `/networking`: networks and subnets (read-only, from the seed),
//! ports (create with a fixed IP from the subnet, show, list with filters, update, delete,
//! tags), security groups (list, show, create, delete; each project's `default` group is made
//! on first need, with Neutron's rules, and applied to a port created without groups), floating
//! IPs of the external networks (allocate, associate to a port, tags, release), per-project port
//! and floating IP quotas answered with Neutron's 409 `OverQuota`, and the quota API. There are
//! no routers: every external network is taken as reachable from every subnet.
//!
//! A port is `DOWN` until a server that uses it is `ACTIVE`, then `ACTIVE` (derived on read).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use chrono::{DateTime, Utc};

use crate::openstack::network::protocol::*;
use crate::sim::Sim;
use crate::sim::http::{
    ApiError, ApiResult, Injected, QueryPairs, Service, authenticate, json, parse_body, scoped,
};
use crate::sim::state::{FloatingIpRec, NetworkRec, PortRec, SecurityGroupRec, SubnetRec, TokenInfo, World};

const S: Service = Service::Network;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/networking", get(versions))
        .route("/networking/", get(versions))
        .route("/networking/v2.0", get(resources))
        .route("/networking/v2.0/", get(resources))
        .route("/networking/v2.0/extensions", get(extensions))
        .route("/networking/v2.0/extensions/{alias}", get(extension))
        .route("/networking/v2.0/networks", get(list_networks))
        .route("/networking/v2.0/networks/{id}", get(show_network))
        .route("/networking/v2.0/subnets", get(list_subnets))
        .route("/networking/v2.0/subnets/{id}", get(show_subnet))
        .route("/networking/v2.0/ports", get(list_ports).post(create_port))
        .route("/networking/v2.0/ports/{id}", get(show_port).put(update_port).delete(delete_port))
        .route(
            "/networking/v2.0/ports/{id}/tags",
            get(get_tags::<PortTags>).put(replace_tags::<PortTags>).delete(clear_tags::<PortTags>),
        )
        .route(
            "/networking/v2.0/ports/{id}/tags/{tag}",
            put(add_tag::<PortTags>).delete(remove_tag::<PortTags>).get(check_tag::<PortTags>),
        )
        .route("/networking/v2.0/security-groups", get(list_security_groups).post(create_security_group))
        .route(
            "/networking/v2.0/security-groups/{id}",
            get(show_security_group).delete(delete_security_group),
        )
        .route("/networking/v2.0/floatingips", get(list_floating_ips).post(create_floating_ip))
        .route(
            "/networking/v2.0/floatingips/{id}",
            get(show_floating_ip).put(update_floating_ip).delete(delete_floating_ip),
        )
        .route(
            "/networking/v2.0/floatingips/{id}/tags",
            get(get_tags::<FloatingIpTags>)
                .put(replace_tags::<FloatingIpTags>)
                .delete(clear_tags::<FloatingIpTags>),
        )
        .route(
            "/networking/v2.0/floatingips/{id}/tags/{tag}",
            put(add_tag::<FloatingIpTags>)
                .delete(remove_tag::<FloatingIpTags>)
                .get(check_tag::<FloatingIpTags>),
        )
        .route("/networking/v2.0/quotas", get(list_quotas))
        .route("/networking/v2.0/quotas/{project_id}", get(show_quota).put(update_quota).delete(reset_quota))
        .route("/networking/v2.0/quotas/{project_id}/details.json", get(quota_details))
        .route("/networking/v2.0/quotas/{project_id}/details", get(quota_details))
        .route("/networking/v2.0/quotas/{project_id}/default", get(quota_default))
}

async fn versions(State(sim): State<Arc<Sim>>) -> Response {
    json(
        StatusCode::OK,
        &VersionList {
            versions: vec![Version {
                id: "v2.0".into(),
                status: "CURRENT".into(),
                links: vec![Link { rel: "self".into(), href: sim.url("/networking/v2.0/") }],
            }],
        },
    )
}

async fn resources(State(sim): State<Arc<Sim>>) -> Response {
    let rs: Vec<_> = [
        ("network", "networks"),
        ("subnet", "subnets"),
        ("port", "ports"),
        ("security_group", "security-groups"),
        ("floatingip", "floatingips"),
        ("quota", "quotas"),
    ]
    .iter()
    .map(|(name, coll)| {
        serde_json::json!({"name": name, "collection": coll,
                "links": [{"href": sim.url(&format!("/networking/v2.0/{coll}")), "rel": "self"}]})
    })
    .collect();
    json(StatusCode::OK, &serde_json::json!({"resources": rs}))
}

async fn extension(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(alias): Path<String>) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let found = extension_list().into_iter().find(|e| e["alias"] == alias.as_str());
    match found {
        Some(e) => Ok(json(StatusCode::OK, &serde_json::json!({"extension": e}))),
        None => Err(ApiError::not_found(S, format!("Extension with alias {alias} does not exist"))),
    }
}

async fn extensions(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    Ok(json(StatusCode::OK, &serde_json::json!({"extensions": extension_list()})))
}

fn extension_list() -> Vec<serde_json::Value> {
    [
        ("binding", "Port Binding"),
        ("quotas", "Quota management support"),
        ("quota_details", "Quota details management support"),
        ("standard-attr-tag", "Tag support for resources with standard attribute: port, network, subnet"),
        ("tag-creation", "Tag support for resources during creation"),
        ("port-security", "Port Security"),
        ("security-group", "security-group"),
        ("stateful-security-group", "Stateful security group"),
        ("router", "Neutron L3 Router"),
        ("external-net", "Neutron external network"),
        ("standard-attr-timestamp", "Resource timestamps"),
        ("standard-attr-revisions", "Resource revision numbers"),
        ("standard-attr-description", "standard-attr-description"),
    ]
    .iter()
    .map(|(alias, name)| {
        serde_json::json!({"alias": alias, "name": name, "description": name, "links": [], "updated": "2020-01-01T00:00:00-00:00"})
    })
    .collect()
}

fn network_view(w: &World, n: &NetworkRec) -> Network {
    Network {
        id: n.id.clone(),
        name: n.name.clone(),
        status: "ACTIVE".into(),
        subnets: n.subnets.clone(),
        admin_state_up: true,
        shared: n.shared,
        tenant_id: n.project_id.clone(),
        project_id: n.project_id.clone(),
        mtu: Some(1450),
        router_external: n.external,
        port_security_enabled: Some(true),
        description: String::new(),
        tags: vec![],
        availability_zone_hints: vec![],
        availability_zones: vec!["nova".into()],
        ipv4_address_scope: None,
        ipv6_address_scope: None,
        is_default: None,
        provider_network_type: None,
        revision_number: 1,
        created_at: Some(w.started),
        updated_at: Some(w.started),
    }
}

fn visible_network(tok: &TokenInfo, n: &NetworkRec) -> bool {
    n.shared || n.external || tok.is_admin() || tok.project_id.as_deref() == Some(&n.project_id)
}

fn matches(q: &QueryPairs, key: &str, value: &str) -> bool {
    let wanted = q.all(key);
    wanted.is_empty() || wanted.contains(&value)
}

async fn list_networks(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let networks = w
        .networks
        .values()
        .filter(|n| visible_network(&tok, n))
        .filter(|n| matches(&q, "name", &n.name) && matches(&q, "id", &n.id))
        .filter(|n| q.get("shared").is_none_or(|s| s.eq_ignore_ascii_case(&n.shared.to_string())))
        .filter(|n| q.get("router:external").is_none_or(|s| s.eq_ignore_ascii_case(&n.external.to_string())))
        .filter(|n| matches(&q, "project_id", &n.project_id) && matches(&q, "tenant_id", &n.project_id))
        .map(|n| network_view(&w, n))
        .collect();
    Ok(json(StatusCode::OK, &NetworkList { networks, networks_links: None }))
}

async fn show_network(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let n = w.networks.get(&id).filter(|n| visible_network(&tok, n)).ok_or_else(|| {
        ApiError::not_found(S, format!("Network {id} could not be found.")).kind("NetworkNotFound")
    })?;
    Ok(json(StatusCode::OK, &NetworkBody { network: network_view(&w, n) }))
}

fn subnet_view(w: &World, s: &SubnetRec) -> Subnet {
    Subnet {
        id: s.id.clone(),
        name: s.name.clone(),
        network_id: s.network_id.clone(),
        cidr: s.cidr.clone(),
        ip_version: 4,
        gateway_ip: s.gateway_ip.clone(),
        allocation_pools: vec![AllocationPool {
            start: std::net::Ipv4Addr::from(s.pool_start).to_string(),
            end: std::net::Ipv4Addr::from(s.pool_end).to_string(),
        }],
        enable_dhcp: true,
        dns_nameservers: vec![],
        host_routes: vec![],
        tenant_id: s.project_id.clone(),
        project_id: s.project_id.clone(),
        description: String::new(),
        tags: vec![],
        ipv6_address_mode: None,
        ipv6_ra_mode: None,
        subnetpool_id: None,
        service_types: vec![],
        revision_number: 0,
        created_at: Some(w.started),
        updated_at: Some(w.started),
    }
}

fn visible_subnet(w: &World, tok: &TokenInfo, s: &SubnetRec) -> bool {
    w.networks.get(&s.network_id).is_some_and(|n| visible_network(tok, n))
}

async fn list_subnets(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let subnets = w
        .subnets
        .values()
        .filter(|s| visible_subnet(&w, &tok, s))
        .filter(|s| {
            matches(&q, "name", &s.name)
                && matches(&q, "id", &s.id)
                && matches(&q, "network_id", &s.network_id)
        })
        .map(|s| subnet_view(&w, s))
        .collect();
    Ok(json(StatusCode::OK, &SubnetList { subnets, subnets_links: None }))
}

async fn show_subnet(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let s = w.subnets.get(&id).filter(|s| visible_subnet(&w, &tok, s)).ok_or_else(|| {
        ApiError::not_found(S, format!("Subnet {id} could not be found.")).kind("SubnetNotFound")
    })?;
    Ok(json(StatusCode::OK, &SubnetBody { subnet: subnet_view(&w, s) }))
}

pub(crate) fn port_view(w: &World, p: &PortRec, now: DateTime<Utc>) -> Port {
    let bound = !p.host.is_empty();
    Port {
        id: p.id.clone(),
        name: p.name.clone(),
        network_id: p.network_id.clone(),
        tenant_id: p.project_id.clone(),
        project_id: p.project_id.clone(),
        mac_address: p.mac.clone(),
        admin_state_up: p.admin_state_up,
        status: w.port_status(p, now).into(),
        device_id: p.device_id.clone(),
        device_owner: p.device_owner.clone(),
        fixed_ips: p
            .fixed_ips
            .iter()
            .map(|(s, ip)| FixedIp { subnet_id: Some(s.clone()), ip_address: Some(ip.clone()) })
            .collect(),
        security_groups: p.security_groups.clone(),
        allowed_address_pairs: vec![],
        extra_dhcp_opts: vec![],
        description: p.description.clone(),
        tags: p.tags.clone(),
        port_security_enabled: Some(true),
        binding_host_id: Some(p.host.clone()),
        binding_vif_type: Some(if bound { "ovs" } else { "unbound" }.into()),
        binding_vnic_type: Some("normal".into()),
        binding_profile: Some(serde_json::json!({})),
        binding_vif_details: Some(if bound {
            serde_json::json!({"port_filter": true, "connectivity": "l2"})
        } else {
            serde_json::json!({})
        }),
        revision_number: p.revision,
        created_at: Some(p.created),
        updated_at: Some(p.modified),
    }
}

fn visible_port(tok: &TokenInfo, p: &PortRec) -> bool {
    tok.is_admin() || tok.project_id.as_deref() == Some(&p.project_id)
}

fn port_not_found(id: &str) -> ApiError {
    ApiError::not_found(S, format!("Port {id} could not be found.")).kind("PortNotFound")
}

async fn list_ports(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let limit = match q.get("limit") {
        Some(_) => Some(q.limit(S, usize::MAX, usize::MAX)?),
        None => None,
    };
    let tags: Vec<String> = q.all("tags").iter().flat_map(|t| t.split(',')).map(str::to_string).collect();
    let tags_any: Vec<String> =
        q.all("tags-any").iter().flat_map(|t| t.split(',')).map(str::to_string).collect();
    let now = Utc::now();
    let w = sim.world();
    let start_seq = match q.get("marker") {
        Some(m) => w.ports.get(m).map(|p| p.seq + 1).ok_or_else(|| port_not_found(m))?,
        None => 0,
    };
    let mut ports = Vec::new();
    for id in w.port_order.range(start_seq..).map(|(_, id)| id) {
        let Some(p) = w.ports.get(id) else { continue };
        if !visible_port(&tok, p)
            || !matches(&q, "name", &p.name)
            || !matches(&q, "id", &p.id)
            || !matches(&q, "network_id", &p.network_id)
            || !matches(&q, "device_id", &p.device_id)
            || !matches(&q, "device_owner", &p.device_owner)
            || !matches(&q, "mac_address", &p.mac)
            || !matches(&q, "project_id", &p.project_id)
            || !matches(&q, "tenant_id", &p.project_id)
            || !tags.iter().all(|t| p.tags.contains(t))
            || !(tags_any.is_empty() || tags_any.iter().any(|t| p.tags.contains(t)))
        {
            continue;
        }
        if let Some(status) = q.get("status")
            && w.port_status(p, now) != status
        {
            continue;
        }
        ports.push(port_view(&w, p, now));
        if limit.is_some_and(|l| ports.len() >= l) {
            break;
        }
    }
    drop(w);
    let ports_links = match limit {
        Some(l) if ports.len() == l && l > 0 => {
            let last = ports.last().map(|p| p.id.clone()).unwrap_or_default();
            Some(vec![Link {
                rel: "next".into(),
                href: sim.url(&format!("/networking/v2.0/ports?limit={l}&marker={last}")),
            }])
        }
        _ => None,
    };
    Ok(json(StatusCode::OK, &PortList { ports, ports_links }))
}

async fn show_port(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let p = w.ports.get(&id).filter(|p| visible_port(&tok, p)).ok_or_else(|| port_not_found(&id))?;
    Ok(json(StatusCode::OK, &PortBody { port: port_view(&w, p, Utc::now()) }))
}

pub(crate) fn over_quota(resource: &str) -> ApiError {
    ApiError::new(S, 409, format!("Quota exceeded for resources: ['{resource}'].")).kind("OverQuota")
}

async fn create_port(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    injected: Option<axum::Extension<Injected>>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let project = scoped(&tok, S)?;
    let req: PortCreateRequest = parse_body(S, &body)?;
    let _ = injected;
    let now = Utc::now();
    let mut w = sim.world();
    let target_project = match req.port.project_id.clone().or(req.port.tenant_id.clone()) {
        Some(p) if tok.is_admin() => p,
        _ => project,
    };
    let net_visible = w.networks.get(&req.port.network_id).is_some_and(|n| visible_network(&tok, n));
    if !net_visible {
        return Err(ApiError::not_found(S, format!("Network {} could not be found.", req.port.network_id))
            .kind("NetworkNotFound"));
    }
    let limit = w.quotas_of(&target_project).ports;
    if limit >= 0 && w.usage_of(&target_project).ports + 1 > limit {
        return Err(over_quota("port"));
    }
    let groups = match &req.port.security_groups {
        Some(ids) => Some(port_security_groups(&w, &tok, ids)?),
        None => None,
    };
    let fixed = req
        .port
        .fixed_ips
        .as_ref()
        .and_then(|f| f.first())
        .map(|f| (f.subnet_id.clone(), f.ip_address.clone()));
    let id = w
        .create_port(
            &target_project,
            &req.port.network_id,
            req.port.name.clone().unwrap_or_default(),
            fixed,
            now,
        )
        .map_err(|(status, kind, msg)| ApiError::new(S, status, msg).kind(kind))?;
    if let Some(p) = w.ports.get_mut(&id) {
        p.description = req.port.description.clone().unwrap_or_default();
        p.tags = req.port.tags.clone().unwrap_or_default();
        p.device_id = req.port.device_id.clone().unwrap_or_default();
        p.device_owner = req.port.device_owner.clone().unwrap_or_default();
        p.admin_state_up = req.port.admin_state_up.unwrap_or(true);
        if let Some(groups) = groups {
            p.security_groups = groups;
        }
    }
    let view = port_view(&w, &w.ports[&id], now);
    Ok(json(StatusCode::CREATED, &PortBody { port: view }))
}

async fn update_port(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let req: PortUpdateRequest = parse_body(S, &body)?;
    let now = Utc::now();
    let mut w = sim.world();
    let groups = match &req.port.security_groups {
        Some(ids) => Some(port_security_groups(&w, &tok, ids)?),
        None => None,
    };
    let p = w.ports.get_mut(&id).filter(|p| visible_port(&tok, p)).ok_or_else(|| port_not_found(&id))?;
    let u = req.port;
    if let Some(g) = groups {
        p.security_groups = g;
    }
    if let Some(v) = u.name {
        p.name = v;
    }
    if let Some(v) = u.description {
        p.description = v;
    }
    if let Some(v) = u.device_id {
        p.device_id = v;
    }
    if let Some(v) = u.device_owner {
        p.device_owner = v;
    }
    if let Some(v) = u.admin_state_up {
        p.admin_state_up = v;
    }
    if let Some(v) = u.binding_host_id {
        p.host = v;
    }
    p.modified = now;
    p.revision += 1;
    let view = port_view(&w, &w.ports[&id], now);
    Ok(json(StatusCode::OK, &PortBody { port: view }))
}

async fn delete_port(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let mut w = sim.world();
    let device = w
        .ports
        .get(&id)
        .filter(|p| visible_port(&tok, p))
        .map(|p| p.device_id.clone())
        .ok_or_else(|| port_not_found(&id))?;
    w.delete_port(&id);
    if !device.is_empty()
        && let Some(s) = w.server_mut(&device)
    {
        s.ports.retain(|(p, _)| p != &id);
        s.modified = Utc::now();
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn with_port<T>(
    sim: &Sim,
    headers: &HeaderMap,
    id: &str,
    f: impl FnOnce(&mut PortRec) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let tok = authenticate(sim, headers, S)?;
    let mut w = sim.world();
    let p = w.ports.get_mut(id).filter(|p| visible_port(&tok, p)).ok_or_else(|| port_not_found(id))?;
    f(p)
}

fn touched(p: &mut PortRec) {
    p.modified = Utc::now();
    p.revision += 1;
}

/// The groups a port create or update names: ids (Neutron takes no names here), each a group
/// the caller's project may use.
fn port_security_groups(w: &World, tok: &TokenInfo, ids: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if !crate::openstack::image::looks_like_uuid(id) {
            return Err(ApiError::bad_request(
                S,
                format!("Invalid input for security_groups. Reason: '{id}' is not a valid UUID."),
            )
            .kind("InvalidInput"));
        }
        if !w.security_groups.get(id).is_some_and(|g| visible_group(tok, g)) {
            return Err(group_not_found(id));
        }
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    Ok(out)
}

fn visible_group(tok: &TokenInfo, g: &SecurityGroupRec) -> bool {
    tok.is_admin() || tok.project_id.as_deref() == Some(&g.project_id)
}

fn group_not_found(id: &str) -> ApiError {
    ApiError::not_found(S, format!("Security group {id} does not exist")).kind("SecurityGroupNotFound")
}

fn group_view(g: &SecurityGroupRec) -> SecurityGroup {
    let default = g.name == "default";
    SecurityGroup {
        id: g.id.clone(),
        name: g.name.clone(),
        description: g.description.clone(),
        tenant_id: g.project_id.clone(),
        project_id: g.project_id.clone(),
        security_group_rules: g
            .rules
            .iter()
            .map(|r| SecurityGroupRule {
                id: r.id.clone(),
                security_group_id: g.id.clone(),
                direction: r.direction.into(),
                ethertype: r.ethertype.into(),
                protocol: r.protocol.clone(),
                port_range_min: r.port_range_min,
                port_range_max: r.port_range_max,
                remote_ip_prefix: r.remote_ip_prefix.clone(),
                remote_group_id: r.remote_group_id.clone(),
                remote_address_group_id: None,
                normalized_cidr: r.remote_ip_prefix.clone(),
                // Every rule here is one Neutron made itself (a group's own egress and default
                // rules): Neutron shows no description for those, `null`.
                description: None,
                tenant_id: g.project_id.clone(),
                project_id: g.project_id.clone(),
                tags: vec![],
                belongs_to_default_sg: Some(default),
                revision_number: 0,
                created_at: Some(r.created),
                updated_at: Some(r.created),
            })
            .collect(),
        stateful: g.stateful,
        shared: false,
        tags: g.tags.clone(),
        revision_number: g.revision,
        created_at: Some(g.created),
        updated_at: Some(g.modified),
    }
}

async fn list_security_groups(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let now = Utc::now();
    let mut w = sim.world();
    // Neutron makes the caller's default group when it first lists them.
    if let Some(p) = tok.project_id.clone() {
        w.default_security_group(&p, now);
    }
    let mut groups: Vec<&SecurityGroupRec> = w
        .security_groups
        .values()
        .filter(|g| visible_group(&tok, g))
        .filter(|g| matches(&q, "name", &g.name) && matches(&q, "id", &g.id))
        .filter(|g| matches(&q, "project_id", &g.project_id) && matches(&q, "tenant_id", &g.project_id))
        .collect();
    groups.sort_by_key(|g| g.seq);
    let security_groups = groups.into_iter().map(group_view).collect();
    Ok(json(StatusCode::OK, &SecurityGroupList { security_groups, security_groups_links: None }))
}

async fn show_security_group(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let g =
        w.security_groups.get(&id).filter(|g| visible_group(&tok, g)).ok_or_else(|| group_not_found(&id))?;
    Ok(json(StatusCode::OK, &SecurityGroupBody { security_group: group_view(g) }))
}

async fn create_security_group(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let project = scoped(&tok, S)?;
    let req: SecurityGroupCreateRequest = parse_body(S, &body)?;
    let g = req.security_group;
    let target = match g.project_id.clone().or(g.tenant_id.clone()) {
        Some(p) if tok.is_admin() => p,
        _ => project,
    };
    if g.name.eq_ignore_ascii_case("default") {
        return Err(ApiError::new(S, 409, "Default security group already exists.")
            .kind("SecurityGroupDefaultAlreadyExists"));
    }
    let now = Utc::now();
    let mut w = sim.world();
    w.default_security_group(&target, now);
    let used = w.security_groups.values().filter(|x| x.project_id == target).count() as i64;
    if used + 1 > SECURITY_GROUP_QUOTA {
        return Err(over_quota("security_group"));
    }
    let id = w.create_security_group(&target, &g.name, g.description.as_deref().unwrap_or(""), now);
    if let (Some(stateful), Some(rec)) = (g.stateful, w.security_groups.get_mut(&id)) {
        rec.stateful = stateful;
    }
    Ok(json(StatusCode::CREATED, &SecurityGroupBody { security_group: group_view(&w.security_groups[&id]) }))
}

async fn delete_security_group(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let mut w = sim.world();
    let g =
        w.security_groups.get(&id).filter(|g| visible_group(&tok, g)).ok_or_else(|| group_not_found(&id))?;
    if g.name == "default" && !tok.is_admin() {
        return Err(ApiError::new(S, 409, "Insufficient rights for removing default security group.")
            .kind("SecurityGroupCannotRemoveDefault"));
    }
    if w.ports.values().any(|p| p.security_groups.contains(&id)) {
        return Err(ApiError::new(S, 409, format!("Security Group {id} in use.")).kind("SecurityGroupInUse"));
    }
    w.security_groups.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn fip_not_found(id: &str) -> ApiError {
    ApiError::not_found(S, format!("Floating IP {id} could not be found")).kind("FloatingIPNotFound")
}

fn visible_fip(tok: &TokenInfo, f: &FloatingIpRec) -> bool {
    tok.is_admin() || tok.project_id.as_deref() == Some(&f.project_id)
}

fn fip_view(w: &World, f: &FloatingIpRec) -> FloatingIp {
    FloatingIp {
        id: f.id.clone(),
        floating_ip_address: f.address.clone(),
        floating_network_id: f.network_id.clone(),
        port_id: f.port.as_ref().map(|(p, _)| p.clone()),
        fixed_ip_address: f.port.as_ref().map(|(_, ip)| ip.clone()),
        router_id: None,
        status: if f.port.is_some() { "ACTIVE" } else { "DOWN" }.into(),
        description: f.description.clone(),
        tenant_id: f.project_id.clone(),
        project_id: f.project_id.clone(),
        tags: f.tags.clone(),
        port_details: f.port.as_ref().and_then(|(p, _)| w.ports.get(p)).map(|p| {
            serde_json::json!({
                "name": p.name, "network_id": p.network_id, "mac_address": p.mac,
                "admin_state_up": p.admin_state_up, "status": w.port_status(p, Utc::now()),
                "device_id": p.device_id, "device_owner": p.device_owner,
            })
        }),
        qos_policy_id: None,
        dns_domain: Some(String::new()),
        dns_name: Some(String::new()),
        revision_number: f.revision,
        created_at: Some(f.created),
        updated_at: Some(f.modified),
    }
}

/// Where a floating IP of `tok`'s project may point: a port the caller may use, by one of its
/// fixed IPs (the first unless `fixed_ip` names one), not already behind another floating IP of
/// the same external network (Neutron's 409).
fn association(
    w: &World,
    tok: &TokenInfo,
    fip: Option<&FloatingIpRec>,
    network_id: &str,
    port_id: &str,
    fixed_ip: Option<&str>,
) -> Result<(String, String), ApiError> {
    let p = w.ports.get(port_id).filter(|p| visible_port(tok, p)).ok_or_else(|| port_not_found(port_id))?;
    let ip = match fixed_ip {
        Some(ip) => p.fixed_ips.iter().find(|(_, x)| x == ip).map(|(_, x)| x.clone()).ok_or_else(|| {
            ApiError::bad_request(S, format!("Port {port_id} does not have fixed ip {ip}")).kind("BadRequest")
        })?,
        None => p.fixed_ips.first().map(|(_, x)| x.clone()).ok_or_else(|| {
            ApiError::bad_request(
                S,
                format!("Bad floatingip request: Port {port_id} does not have any fixed IP addresses."),
            )
            .kind("BadRequest")
        })?,
    };
    if let Some(other) =
        w.floating_ip_of(port_id, &ip).filter(|o| Some(o.id.as_str()) != fip.map(|f| f.id.as_str()))
        && other.network_id == network_id
    {
        let (addr, id) = fip.map(|f| (f.address.clone(), f.id.clone())).unwrap_or_default();
        return Err(ApiError::new(
            S,
            409,
            format!(
                "Cannot associate floating IP {addr} ({id}) with port {port_id} using fixed IP {ip}, as that fixed IP already has a floating IP on external network {network_id}."
            ),
        )
        .kind("FloatingIPPortAlreadyAssociated"));
    }
    Ok((port_id.to_string(), ip))
}

async fn list_floating_ips(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let tags: Vec<String> = q.all("tags").iter().flat_map(|t| t.split(',')).map(str::to_string).collect();
    let tags_any: Vec<String> =
        q.all("tags-any").iter().flat_map(|t| t.split(',')).map(str::to_string).collect();
    let w = sim.world();
    let mut found: Vec<&FloatingIpRec> = w
        .floating_ips
        .values()
        .filter(|f| visible_fip(&tok, f))
        .filter(|f| {
            let port = f.port.as_ref().map(|(p, _)| p.as_str()).unwrap_or("");
            let fixed = f.port.as_ref().map(|(_, ip)| ip.as_str()).unwrap_or("");
            let status = if f.port.is_some() { "ACTIVE" } else { "DOWN" };
            matches(&q, "id", &f.id)
                && matches(&q, "floating_ip_address", &f.address)
                && matches(&q, "floating_network_id", &f.network_id)
                && matches(&q, "port_id", port)
                && matches(&q, "fixed_ip_address", fixed)
                && matches(&q, "status", status)
                && matches(&q, "description", &f.description)
                && matches(&q, "project_id", &f.project_id)
                && matches(&q, "tenant_id", &f.project_id)
                && tags.iter().all(|t| f.tags.contains(t))
                && (tags_any.is_empty() || tags_any.iter().any(|t| f.tags.contains(t)))
        })
        .collect();
    found.sort_by_key(|f| f.seq);
    let floatingips = found.into_iter().map(|f| fip_view(&w, f)).collect();
    Ok(json(StatusCode::OK, &FloatingIpList { floatingips, floatingips_links: None }))
}

async fn show_floating_ip(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let f = w.floating_ips.get(&id).filter(|f| visible_fip(&tok, f)).ok_or_else(|| fip_not_found(&id))?;
    Ok(json(StatusCode::OK, &FloatingIpBody { floatingip: fip_view(&w, f) }))
}

async fn create_floating_ip(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let project = scoped(&tok, S)?;
    let req: FloatingIpCreateRequest = parse_body(S, &body)?;
    let f = req.floatingip;
    let target = match f.project_id.clone().or(f.tenant_id.clone()) {
        Some(p) if tok.is_admin() => p,
        _ => project,
    };
    let now = Utc::now();
    let mut w = sim.world();
    if !w.networks.get(&f.floating_network_id).is_some_and(|n| visible_network(&tok, n)) {
        return Err(ApiError::not_found(S, format!("Network {} could not be found.", f.floating_network_id))
            .kind("NetworkNotFound"));
    }
    let limit = w.quotas_of(&target).floating_ips;
    if limit >= 0 && w.usage_of(&target).floating_ips + 1 > limit {
        return Err(over_quota("floatingip"));
    }
    let port = match &f.port_id {
        Some(p) => {
            Some(association(&w, &tok, None, &f.floating_network_id, p, f.fixed_ip_address.as_deref())?)
        }
        None => None,
    };
    let id = w
        .create_floating_ip(&target, &f.floating_network_id, f.floating_ip_address.as_deref(), now)
        .map_err(|(status, kind, msg)| ApiError::new(S, status, msg).kind(kind))?;
    if let Some(rec) = w.floating_ips.get_mut(&id) {
        rec.description = f.description.clone().unwrap_or_default();
        rec.tags = f.tags.clone().unwrap_or_default();
        rec.port = port;
    }
    let view = fip_view(&w, &w.floating_ips[&id]);
    Ok(json(StatusCode::CREATED, &FloatingIpBody { floatingip: view }))
}

async fn update_floating_ip(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let req: FloatingIpUpdateRequest = parse_body(S, &body)?;
    let u = req.floatingip;
    let mut w = sim.world();
    let f = w.floating_ips.get(&id).filter(|f| visible_fip(&tok, f)).ok_or_else(|| fip_not_found(&id))?;
    let port = match &u.port_id {
        Some(Some(p)) => {
            Some(Some(association(&w, &tok, Some(f), &f.network_id, p, u.fixed_ip_address.as_deref())?))
        }
        Some(None) => Some(None),
        None => None,
    };
    let now = Utc::now();
    if let Some(rec) = w.floating_ips.get_mut(&id) {
        if let Some(p) = port {
            rec.port = p;
        }
        if let Some(d) = u.description {
            rec.description = d;
        }
        rec.modified = now;
        rec.revision += 1;
    }
    let view = fip_view(&w, &w.floating_ips[&id]);
    Ok(json(StatusCode::OK, &FloatingIpBody { floatingip: view }))
}

async fn delete_floating_ip(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let mut w = sim.world();
    if !w.floating_ips.get(&id).is_some_and(|f| visible_fip(&tok, f)) {
        return Err(fip_not_found(&id));
    }
    w.delete_floating_ip(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn with_fip<T>(
    sim: &Sim,
    headers: &HeaderMap,
    id: &str,
    f: impl FnOnce(&mut FloatingIpRec) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let tok = authenticate(sim, headers, S)?;
    let mut w = sim.world();
    let rec = w.floating_ips.get_mut(id).filter(|r| visible_fip(&tok, r)).ok_or_else(|| fip_not_found(id))?;
    f(rec)
}

fn fip_touched(f: &mut FloatingIpRec) {
    f.modified = Utc::now();
    f.revision += 1;
}

/// A Neutron resource with a `tags` sub-resource (`/{id}/tags`, `/{id}/tags/{tag}`): one set of
/// tag handlers serves every kind.
trait Tagged: 'static {
    /// Runs `f` on the tags of resource `id` as the caller may see it; `f` answers whether it
    /// changed them (then the resource's revision and modification time move).
    fn with_tags<T>(
        sim: &Sim,
        headers: &HeaderMap,
        id: &str,
        f: impl FnOnce(&mut Vec<String>) -> Result<(T, bool), ApiError>,
    ) -> Result<T, ApiError>;
}

struct PortTags;
struct FloatingIpTags;

impl Tagged for PortTags {
    fn with_tags<T>(
        sim: &Sim,
        headers: &HeaderMap,
        id: &str,
        f: impl FnOnce(&mut Vec<String>) -> Result<(T, bool), ApiError>,
    ) -> Result<T, ApiError> {
        with_port(sim, headers, id, |p| {
            let (out, changed) = f(&mut p.tags)?;
            if changed {
                touched(p);
            }
            Ok(out)
        })
    }
}

impl Tagged for FloatingIpTags {
    fn with_tags<T>(
        sim: &Sim,
        headers: &HeaderMap,
        id: &str,
        f: impl FnOnce(&mut Vec<String>) -> Result<(T, bool), ApiError>,
    ) -> Result<T, ApiError> {
        with_fip(sim, headers, id, |r| {
            let (out, changed) = f(&mut r.tags)?;
            if changed {
                fip_touched(r);
            }
            Ok(out)
        })
    }
}

fn tag_not_found(tag: &str) -> ApiError {
    ApiError::not_found(S, format!("Tag {tag} could not be found.")).kind("TagNotFound")
}

async fn get_tags<R: Tagged>(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let tags = R::with_tags(&sim, &headers, &id, |t| Ok((t.clone(), false)))?;
    Ok(json(StatusCode::OK, &Tags { tags }))
}

async fn replace_tags<R: Tagged>(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let req: Tags = parse_body(S, &body)?;
    let tags = R::with_tags(&sim, &headers, &id, |t| {
        let mut new = req.tags.clone();
        new.sort();
        new.dedup();
        *t = new;
        Ok((t.clone(), true))
    })?;
    Ok(json(StatusCode::OK, &Tags { tags }))
}

async fn clear_tags<R: Tagged>(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    R::with_tags(&sim, &headers, &id, |t| {
        t.clear();
        Ok(((), true))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_tag<R: Tagged>(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult {
    R::with_tags(&sim, &headers, &id, |t| {
        let new = !t.contains(&tag);
        if new {
            t.push(tag.clone());
        }
        Ok(((), new))
    })?;
    Ok(StatusCode::CREATED.into_response())
}

async fn remove_tag<R: Tagged>(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult {
    R::with_tags(&sim, &headers, &id, |t| {
        let before = t.len();
        t.retain(|x| x != &tag);
        if t.len() == before {
            return Err(tag_not_found(&tag));
        }
        Ok(((), true))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn check_tag<R: Tagged>(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult {
    R::with_tags(&sim, &headers, &id, |t| {
        if t.contains(&tag) { Ok(((), false)) } else { Err(tag_not_found(&tag)) }
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Neutron's default `security_group` quota (not settable in the simulator).
const SECURITY_GROUP_QUOTA: i64 = 10;

fn quota_of(w: &World, project: &str) -> Quota {
    let q = w.quotas_of(project);
    Quota {
        network: Some(q.networks),
        subnet: Some(100),
        port: Some(q.ports),
        router: Some(10),
        floatingip: Some(q.floating_ips),
        security_group: Some(SECURITY_GROUP_QUOTA),
        security_group_rule: Some(100),
        subnetpool: Some(-1),
        rbac_policy: Some(10),
        other: BTreeMap::new(),
    }
}

fn quota_access(tok: &TokenInfo, project: &str) -> Result<(), ApiError> {
    if tok.is_admin() || tok.project_id.as_deref() == Some(project) {
        Ok(())
    } else {
        Err(ApiError::forbidden(S, "Non-admin is not authorized to access quotas for another tenant")
            .kind("HTTPForbidden"))
    }
}

async fn list_quotas(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() {
        return Err(
            ApiError::forbidden(S, "rule:get_quota is disallowed by policy").kind("PolicyNotAuthorized")
        );
    }
    let w = sim.world();
    let quotas: Vec<_> = w
        .projects
        .keys()
        .map(|p| {
            let mut v = serde_json::to_value(quota_of(&w, p)).unwrap_or_default();
            v["project_id"] = serde_json::json!(p);
            v["tenant_id"] = serde_json::json!(p);
            v
        })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"quotas": quotas})))
}

async fn show_quota(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    quota_access(&tok, &project)?;
    let w = sim.world();
    Ok(json(StatusCode::OK, &QuotaBody { quota: quota_of(&w, &project) }))
}

async fn quota_default(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    quota_access(&tok, &project)?;
    let w = sim.world();
    let mut q = quota_of(&w, &project);
    let d = crate::sim::seed::Quotas::default();
    q.port = Some(d.ports);
    q.network = Some(d.networks);
    q.floatingip = Some(d.floating_ips);
    Ok(json(StatusCode::OK, &QuotaBody { quota: q }))
}

async fn quota_details(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    quota_access(&tok, &project)?;
    let w = sim.world();
    let q = quota_of(&w, &project);
    let used = w.usage_of(&project).ports;
    let mut out = BTreeMap::new();
    for (k, v) in [
        ("network", q.network),
        ("subnet", q.subnet),
        ("port", q.port),
        ("router", q.router),
        ("floatingip", q.floatingip),
        ("security_group", q.security_group),
        ("security_group_rule", q.security_group_rule),
        ("subnetpool", q.subnetpool),
        ("rbac_policy", q.rbac_policy),
    ] {
        let u = match k {
            "port" => used,
            "floatingip" => w.usage_of(&project).floating_ips,
            "security_group" => w.security_groups.values().filter(|g| g.project_id == project).count() as i64,
            "security_group_rule" => w
                .security_groups
                .values()
                .filter(|g| g.project_id == project)
                .map(|g| g.rules.len() as i64)
                .sum(),
            _ => 0,
        };
        out.insert(k.to_string(), QuotaUsage { limit: v.unwrap_or(-1), used: u, reserved: 0 });
    }
    Ok(json(StatusCode::OK, &QuotaDetailsBody { quota: out }))
}

async fn update_quota(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() {
        return Err(
            ApiError::forbidden(S, "rule:update_quota is disallowed by policy").kind("PolicyNotAuthorized")
        );
    }
    let req: QuotaBody = parse_body(S, &body)?;
    let mut w = sim.world();
    let p = w
        .projects
        .get_mut(&project)
        .ok_or_else(|| ApiError::not_found(S, format!("Project {project} could not be found.")))?;
    if let Some(n) = req.quota.port {
        p.quotas.ports = n;
    }
    if let Some(n) = req.quota.network {
        p.quotas.networks = n;
    }
    if let Some(n) = req.quota.floatingip {
        p.quotas.floating_ips = n;
    }
    Ok(json(StatusCode::OK, &QuotaBody { quota: quota_of(&w, &project) }))
}

async fn reset_quota(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() {
        return Err(
            ApiError::forbidden(S, "rule:delete_quota is disallowed by policy").kind("PolicyNotAuthorized")
        );
    }
    let mut w = sim.world();
    if let Some(p) = w.projects.get_mut(&project) {
        let d = crate::sim::seed::Quotas::default();
        p.quotas.ports = d.ports;
        p.quotas.networks = d.networks;
        p.quotas.floating_ips = d.floating_ips;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}
