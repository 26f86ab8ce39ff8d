//! Simulated Nova v2.1 under `/compute`: version documents and microversion negotiation
//! (2.1 to 2.101), flavors, servers (create with ports or networks, show, list and detail with
//! Nova's filters and pagination, update, delete, tags, metadata; boot from a volume made from
//! an image, in the simulator's Cinder), volume attachments, limits
//! and quota sets. Quota exceeded is Nova's 403. Keypairs are in [`super::keypairs`].
//!
//! A server is `BUILD` until its boot time has passed, then `ACTIVE` (or `ERROR` with a `fault`
//! when a fault rule or the control API says so), derived on read. `updated` moves when the
//! status does, so `changes-since` sees transitions. Deleted servers remain visible to
//! `changes-since` queries as `DELETED`, as in Nova.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{DateTime, Utc};

use crate::openstack::compute::protocol::*;
use crate::openstack::protocol_time;
use crate::sim::Sim;
use crate::sim::http::{
    ApiError, ApiResult, Injected, LocalRequestId, Microversion, NOVA_MAX, NOVA_MIN, QueryPairs, Service,
    authenticate, json, parse_body, scoped,
};
use crate::sim::seed::SeedFlavor;
use crate::sim::state::{
    ActionRec, AttachRec, Life, Pending, ServerRec, TokenInfo, Vm, VolAttach, VolumeRec, World, after, new_id,
};

const S: Service = Service::Compute;

pub fn routes() -> Router<Arc<Sim>> {
    let v = "/compute/v2.1";
    Router::new()
        .route("/compute", get(versions))
        .route("/compute/", get(versions))
        .route(v, get(version))
        .route(&format!("{v}/"), get(version))
        .route(&format!("{v}/flavors"), get(list_flavors))
        .route(&format!("{v}/flavors/detail"), get(list_flavors_detail))
        .route(&format!("{v}/flavors/{{id}}"), get(show_flavor))
        .route(&format!("{v}/flavors/{{id}}/os-extra_specs"), get(flavor_extra_specs))
        .route(&format!("{v}/servers"), get(list_servers).post(create_server))
        .route(&format!("{v}/servers/detail"), get(list_servers_detail))
        .route(&format!("{v}/servers/{{id}}"), get(show_server).put(update_server).delete(delete_server))
        .route(&format!("{v}/servers/{{id}}/action"), axum::routing::post(server_action))
        .route(&format!("{v}/servers/{{id}}/os-instance-actions"), get(list_instance_actions))
        .route(&format!("{v}/servers/{{id}}/os-instance-actions/{{request_id}}"), get(show_instance_action))
        .route(&format!("{v}/servers/{{id}}/tags"), get(get_tags).put(replace_tags).delete(clear_tags))
        .route(&format!("{v}/servers/{{id}}/tags/{{tag}}"), get(check_tag).put(add_tag).delete(remove_tag))
        .route(
            &format!("{v}/servers/{{id}}/metadata"),
            get(get_metadata).post(merge_metadata).put(replace_metadata),
        )
        .route(
            &format!("{v}/servers/{{id}}/os-volume_attachments"),
            get(list_attachments).post(attach_volume),
        )
        .route(
            &format!("{v}/servers/{{id}}/os-volume_attachments/{{volume_id}}"),
            get(show_attachment).delete(detach_volume),
        )
        .route(&format!("{v}/limits"), get(limits))
        .route(
            &format!("{v}/os-quota-sets/{{project_id}}"),
            get(show_quota).put(update_quota).delete(reset_quota),
        )
        .route(&format!("{v}/os-quota-sets/{{project_id}}/detail"), get(show_quota_detail))
        .route(&format!("{v}/os-quota-sets/{{project_id}}/defaults"), get(show_quota_defaults))
}

fn v21(sim: &Sim) -> Version {
    Version {
        id: "v2.1".into(),
        status: "CURRENT".into(),
        version: NOVA_MAX.to_string(),
        min_version: NOVA_MIN.to_string(),
        updated: "2013-07-23T11:33:21Z".into(),
        links: vec![
            Link { rel: "self".into(), href: sim.url("/compute/v2.1/"), kind: None },
            Link {
                rel: "describedby".into(),
                href: "http://docs.openstack.org/".into(),
                kind: Some("text/html".into()),
            },
        ],
        media_types: vec![serde_json::json!({"base": "application/json",
            "type": "application/vnd.openstack.compute+json;version=2.1"})],
    }
}

async fn versions(State(sim): State<Arc<Sim>>) -> Response {
    let v2 = Version {
        id: "v2.0".into(),
        status: "SUPPORTED".into(),
        version: String::new(),
        min_version: String::new(),
        updated: "2011-01-21T11:33:21Z".into(),
        links: vec![Link { rel: "self".into(), href: sim.url("/compute/v2/"), kind: None }],
        media_types: vec![],
    };
    let mut cur = v21(&sim);
    cur.links.truncate(1);
    cur.media_types.clear();
    json(StatusCode::OK, &VersionList { versions: vec![v2, cur] })
}

async fn version(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::OK, &VersionBody { version: v21(&sim) })
}

fn mv(ext: Option<Extension<Microversion>>) -> Microversion {
    ext.map(|e| e.0).unwrap_or(NOVA_MIN)
}

fn links(sim: &Sim, kind: &str, id: &str) -> Vec<Link> {
    vec![
        Link { rel: "self".into(), href: sim.url(&format!("/compute/v2.1/{kind}/{id}")), kind: None },
        Link { rel: "bookmark".into(), href: sim.url(&format!("/compute/{kind}/{id}")), kind: None },
    ]
}

fn flavor_view(sim: &Sim, f: &SeedFlavor, mv: Microversion) -> Flavor {
    Flavor {
        id: f.id.clone(),
        name: f.name.clone(),
        ram: f.ram,
        vcpus: f.vcpus,
        disk: f.disk,
        ephemeral: 0,
        swap: 0,
        is_public: true,
        disabled: false,
        rxtx_factor: (!mv.at_least(2, 102)).then_some(1.0),
        description: mv.at_least(2, 55).then(String::new),
        extra_specs: mv.at_least(2, 61).then(BTreeMap::new),
        links: links(sim, "flavors", &f.id),
    }
}

fn flavor_json(sim: &Sim, f: &SeedFlavor, mv: Microversion) -> serde_json::Value {
    let mut v = serde_json::to_value(flavor_view(sim, f, mv)).unwrap_or_default();
    if !mv.at_least(2, 75) {
        // Before 2.75 Nova shows "no swap" as an empty string.
        v["swap"] = serde_json::json!("");
    }
    if mv.at_least(2, 55) {
        v["description"] = serde_json::Value::Null;
    }
    v
}

fn flavors_page(sim: &Sim, q: &QueryPairs, mv: Microversion, detail: bool) -> ApiResult {
    let limit = q.limit(S, 1000, 1000)?;
    let w = sim.world();
    let mut flavors: Vec<&SeedFlavor> = w
        .seed
        .flavors
        .iter()
        .filter(|f| q.get("minRam").and_then(|m| m.parse::<u64>().ok()).is_none_or(|m| f.ram >= m))
        .filter(|f| q.get("minDisk").and_then(|m| m.parse::<u64>().ok()).is_none_or(|m| f.disk >= m))
        .collect();
    flavors.sort_by(|a, b| a.id.cmp(&b.id));
    let start = match q.get("marker") {
        Some(m) => flavors
            .iter()
            .position(|f| f.id == m)
            .map(|p| p + 1)
            .ok_or_else(|| ApiError::bad_request(S, format!("marker [{m}] not found")))?,
        None => 0,
    };
    let page: Vec<serde_json::Value> = flavors
        .iter()
        .skip(start)
        .take(limit)
        .map(|f| {
            if detail {
                flavor_json(sim, f, mv)
            } else {
                let mut v =
                    serde_json::json!({"id": f.id, "name": f.name, "links": links(sim, "flavors", &f.id)});
                if mv.at_least(2, 55) {
                    v["description"] = serde_json::Value::Null;
                }
                v
            }
        })
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"flavors": page})))
}

async fn list_flavors(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    q: QueryPairs,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    flavors_page(&sim, &q, mv(v), false)
}

async fn list_flavors_detail(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    q: QueryPairs,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    flavors_page(&sim, &q, mv(v), true)
}

fn flavor_not_found(id: &str) -> ApiError {
    ApiError::not_found(S, format!("Flavor {id} could not be found."))
}

async fn show_flavor(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let f = w.seed.flavors.iter().find(|f| f.id == id).ok_or_else(|| flavor_not_found(&id))?;
    Ok(json(StatusCode::OK, &serde_json::json!({"flavor": flavor_json(&sim, f, mv(v))})))
}

async fn flavor_extra_specs(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let w = sim.world();
    w.seed.flavors.iter().find(|f| f.id == id).ok_or_else(|| flavor_not_found(&id))?;
    Ok(json(StatusCode::OK, &serde_json::json!({"extra_specs": {}})))
}

fn server_not_found(id: &str) -> ApiError {
    ApiError::not_found(S, format!("Instance {id} could not be found."))
}

fn visible(tok: &TokenInfo, s: &ServerRec) -> bool {
    tok.is_admin() || tok.project_id.as_deref() == Some(&s.project_id)
}

/// Nova's `hostId`: a hash of the project and the host, so a project sees which of its servers
/// share a host and nothing else.
fn host_id(project: &str, host: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha224::digest(format!("{project}{host}").as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Nova shows the security groups of a server's ports (by name, each once).
fn server_groups_of_ports(w: &World, s: &ServerRec) -> Vec<NamedRef> {
    let mut names: Vec<String> = Vec::new();
    for (port_id, _) in &s.ports {
        for g in w.ports.get(port_id).map(|p| p.security_groups.as_slice()).unwrap_or_default() {
            if let Some(name) = w.security_groups.get(g).map(|g| g.name.clone())
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
    }
    names.into_iter().map(|name| NamedRef { name }).collect()
}

pub(crate) fn server_view(
    sim: &Sim,
    w: &World,
    s: &ServerRec,
    now: DateTime<Utc>,
    mv: Microversion,
) -> Server {
    let v = s.view(now);
    let flavor_id = s.flavor_at(now);
    let flavor = w.seed.flavors.iter().find(|f| f.id == flavor_id);
    let mut addresses: BTreeMap<String, Vec<Address>> = BTreeMap::new();
    if v.status != "DELETED" {
        for (port_id, _) in &s.ports {
            let Some(p) = w.ports.get(port_id) else { continue };
            let net =
                w.networks.get(&p.network_id).map(|n| n.name.clone()).unwrap_or_else(|| p.network_id.clone());
            for (_, ip) in &p.fixed_ips {
                addresses.entry(net.clone()).or_default().push(Address {
                    addr: ip.clone(),
                    version: 4,
                    ip_type: Some("fixed".into()),
                    mac_addr: Some(p.mac.clone()),
                });
                // Nova lists a floating IP under the network of the port it maps to.
                if let Some(f) = w.floating_ip_of(port_id, ip) {
                    addresses.entry(net.clone()).or_default().push(Address {
                        addr: f.address.clone(),
                        version: 4,
                        ip_type: Some("floating".into()),
                        mac_addr: Some(p.mac.clone()),
                    });
                }
            }
        }
    }
    let flavor_body = if mv.at_least(2, 47) {
        ServerFlavor {
            original_name: flavor.map(|f| f.name.clone()),
            vcpus: flavor.map(|f| f.vcpus),
            ram: flavor.map(|f| f.ram),
            disk: flavor.map(|f| f.disk),
            ephemeral: Some(0),
            swap: Some(0),
            extra_specs: Some(BTreeMap::new()),
            ..Default::default()
        }
    } else {
        ServerFlavor {
            id: Some(flavor_id.to_string()),
            links: Some(links(sim, "flavors", flavor_id)[1..].to_vec()),
            ..Default::default()
        }
    };
    Server {
        id: s.id.clone(),
        name: s.name.clone(),
        status: v.status.into(),
        tenant_id: s.project_id.clone(),
        user_id: s.user_id.clone(),
        metadata: s.metadata.clone(),
        host_id: if v.status == "BUILD" || s.availability_zone.is_empty() {
            String::new()
        } else {
            host_id(&s.project_id, w.host_of_zone(&s.availability_zone))
        },
        image: Some(match &s.image_id {
            Some(id) => ServerImage::Ref {
                id: id.clone(),
                links: vec![Link {
                    rel: "bookmark".into(),
                    href: sim.url(&format!("/compute/images/{id}")),
                    kind: None,
                }],
            },
            None => ServerImage::None(String::new()),
        }),
        flavor: Some(flavor_body),
        created: s.created,
        updated: v.updated,
        addresses,
        access_ipv4: String::new(),
        access_ipv6: String::new(),
        links: links(sim, "servers", &s.id),
        disk_config: Some("MANUAL".into()),
        progress: Some(if v.status == "ACTIVE" { 100 } else { 0 }),
        // Nova sets a requested zone at create; an unrequested one once scheduled.
        availability_zone: Some(if v.status == "BUILD" {
            s.requested_az.clone().unwrap_or_default()
        } else {
            s.availability_zone.clone()
        }),
        config_drive: Some(String::new()),
        key_name: s.key_name.clone(),
        launched_at: v.launched_at,
        terminated_at: s.deleted,
        task_state: v.task_state.map(str::to_string),
        vm_state: Some(v.vm_state.into()),
        power_state: Some(v.power_state),
        volumes_attached: s
            .volumes
            .iter()
            .map(|a| AttachedVolume {
                id: a.volume_id.clone(),
                delete_on_termination: mv.at_least(2, 3).then_some(a.delete_on_termination),
            })
            .collect(),
        security_groups: Some(server_groups_of_ports(w, s)),
        fault: v.fault.map(|(code, message, created)| Fault { code, message, created, details: None }),
        tags: mv.at_least(2, 26).then(|| s.live_tags(now).to_vec()),
        description: if mv.at_least(2, 19) { Some(s.description.clone().unwrap_or_default()) } else { None },
        locked: mv.at_least(2, 9).then_some(false),
        locked_reason: None,
        // From 2.71 in a server's show (and update), not in the detail list: see `with_groups`.
        server_groups: None,
        trusted_image_certificates: None,
        pinned_availability_zone: mv.at_least(2, 96).then(|| s.requested_az.clone()).flatten(),
        scheduler_hints: mv
            .at_least(2, 100)
            .then(|| serde_json::to_value(s.scheduler_hints.clone().unwrap_or_default()).unwrap_or_default()),
    }
}

fn server_json(
    sim: &Sim,
    w: &World,
    s: &ServerRec,
    now: DateTime<Utc>,
    mv: Microversion,
) -> serde_json::Value {
    let mut v = serde_json::to_value(server_view(sim, w, s, now, mv)).unwrap_or_default();
    if mv.at_least(2, 19) && s.description.is_none() {
        v["description"] = serde_json::Value::Null;
    }
    if mv.at_least(2, 63) {
        v["trusted_image_certificates"] = serde_json::Value::Null;
    }
    if mv.at_least(2, 73) {
        v["locked_reason"] = serde_json::Value::Null;
    }
    if mv.at_least(2, 96) && s.requested_az.is_none() {
        v["pinned_availability_zone"] = serde_json::Value::Null;
    }
    v
}

/// A server's show (and update) from 2.71 names its server group (Nova's detail list does not).
fn with_groups(mut v: serde_json::Value, w: &World, s: &ServerRec, mv: Microversion) -> serde_json::Value {
    if mv.at_least(2, 71) {
        v["server_groups"] = serde_json::json!(w.groups_of_server(&s.id));
    }
    v
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn list_servers(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    q: QueryPairs,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    list(&sim, &headers, &q, mv(v), false)
}

async fn list_servers_detail(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    q: QueryPairs,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    list(&sim, &headers, &q, mv(v), true)
}

fn split_tags(q: &QueryPairs, key: &str) -> Vec<String> {
    q.all(key).iter().flat_map(|t| t.split(',')).filter(|t| !t.is_empty()).map(str::to_string).collect()
}

fn list(sim: &Sim, headers: &HeaderMap, q: &QueryPairs, mv: Microversion, detail: bool) -> ApiResult {
    let tok = authenticate(sim, headers, S)?;
    let project = scoped(&tok, S)?;
    let limit = q.limit(S, 1000, 1000)?;
    let name = match q.get("name") {
        Some(n) => Some(
            regex::RegexBuilder::new(n)
                .case_insensitive(true)
                .build()
                .map_err(|e| ApiError::bad_request(S, format!("Invalid regex for name: {e}")))?,
        ),
        None => None,
    };
    let since = match q.get("changes-since") {
        Some(t) => Some(protocol_time::parse(t).ok_or_else(|| {
            ApiError::bad_request(
                S,
                format!(
                    "Invalid input for query parameters changes-since. Value: {t}. '{t}' is not a 'date-time'"
                ),
            )
        })?),
        None => None,
    };
    let before = match q.get("changes-before") {
        Some(t) => Some(protocol_time::parse(t).ok_or_else(|| {
            ApiError::bad_request(S, format!("Invalid input for query parameters changes-before. Value: {t}. '{t}' is not a 'date-time'"))
        })?),
        None => None,
    };
    let status = q.get("status").map(|s| s.to_ascii_uppercase());
    let tags = split_tags(q, "tags");
    let tags_any = split_tags(q, "tags-any");
    let not_tags = split_tags(q, "not-tags");
    let not_tags_any = split_tags(q, "not-tags-any");
    let all_tenants = tok.is_admin() && (q.flag("all_tenants") || q.get("all_tenants") == Some(""));
    let project_filter = if tok.is_admin() { q.get("project_id").or(q.get("tenant_id")) } else { None };
    let (flavor, image) = (q.get("flavor"), q.get("image"));
    let now = Utc::now();
    let w = sim.world();
    let upper = match q.get("marker") {
        Some(m) => match w.servers.get(m) {
            Some(s) => s.seq,
            None => return Err(ApiError::bad_request(S, format!("marker [{m}] not found"))),
        },
        None => u64::MAX,
    };
    let mut out = Vec::new();
    for (_, id) in w.server_order.range(..upper).rev() {
        let Some(s) = w.servers.get(id) else { continue };
        let scope_ok = match project_filter {
            Some(p) => s.project_id == p,
            None => all_tenants || s.project_id == project,
        };
        if !scope_ok {
            continue;
        }
        if s.gone(now) && since.is_none() {
            continue;
        }
        // The stored filters first (cheap), then those on the derived state.
        let st = s.live_tags(now);
        if !tags.iter().all(|t| st.contains(t))
            || !(tags_any.is_empty() || tags_any.iter().any(|t| st.contains(t)))
            || (!not_tags.is_empty() && not_tags.iter().all(|t| st.contains(t)))
            || not_tags_any.iter().any(|t| st.contains(t))
            || flavor.is_some_and(|f| f != s.flavor_at(now))
            || image.is_some_and(|i| Some(i) != s.image_id.as_deref())
            || name.as_ref().is_some_and(|r| !r.is_match(&s.name))
        {
            continue;
        }
        let view = s.view(now);
        let updated_secs = view.updated.timestamp();
        if since.is_some_and(|t| updated_secs < t.timestamp())
            || before.is_some_and(|t| updated_secs > t.timestamp())
            || status.as_deref().is_some_and(|st| st != view.status)
        {
            continue;
        }
        out.push(if detail {
            server_json(sim, &w, s, now, mv)
        } else {
            serde_json::json!({"id": s.id, "name": s.name, "links": links(sim, "servers", &s.id)})
        });
        if out.len() >= limit {
            break;
        }
    }
    drop(w);
    let mut body = serde_json::json!({"servers": out});
    if out_len(&body) == limit && limit > 0 {
        let last = body["servers"][limit - 1]["id"].as_str().unwrap_or_default().to_string();
        let mut qs: Vec<String> =
            q.0.iter()
                .filter(|(k, _)| k != "marker" && k != "limit")
                .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
                .collect();
        qs.push(format!("limit={limit}"));
        qs.push(format!("marker={last}"));
        let path = if detail { "servers/detail" } else { "servers" };
        body["servers_links"] = serde_json::json!([{"rel": "next", "href": sim.url(&format!("/compute/v2.1/{path}?{}", qs.join("&")))}]);
    }
    Ok(json(StatusCode::OK, &body))
}

fn out_len(body: &serde_json::Value) -> usize {
    body["servers"].as_array().map(Vec::len).unwrap_or(0)
}

async fn show_server(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let now = Utc::now();
    let w = sim.world();
    let s = w.server(&id).filter(|s| visible(&tok, s)).ok_or_else(|| server_not_found(&id))?;
    let mv = mv(v);
    let body = serde_json::json!({"server": with_groups(server_json(&sim, &w, s, now, mv), &w, s, mv)});
    drop(w);
    Ok(json(StatusCode::OK, &body))
}

fn quota_exceeded(resources: &[(&str, i64, i64, i64)]) -> ApiError {
    let names: Vec<&str> = resources.iter().map(|r| r.0).collect();
    let req: Vec<String> = resources.iter().map(|r| r.1.to_string()).collect();
    let used: Vec<String> = resources.iter().map(|r| r.2.to_string()).collect();
    let lim: Vec<String> = resources.iter().map(|r| r.3.to_string()).collect();
    ApiError::forbidden(
        S,
        format!(
            "Quota exceeded for {}: Requested {}, but already used {} of {} {}",
            names.join(", "),
            req.join(", "),
            used.join(", "),
            lim.join(", "),
            names.join(", ")
        ),
    )
}

async fn create_server(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    v: Option<Extension<Microversion>>,
    injected: Option<Extension<Injected>>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let project = scoped(&tok, S)?;
    let mv = mv(v);
    let injected = injected.map(|e| e.0).unwrap_or_default();
    let raw: serde_json::Value = parse_body(S, &body)?;
    if raw["server"].get("tags").is_some() && !mv.at_least(2, 52) {
        return Err(ApiError::bad_request(
            S,
            "Invalid input for field/attribute server. Value: tags. Additional properties are not allowed ('tags' was unexpected)",
        ));
    }
    let req: ServerCreateRequest = parse_body(S, &body)?;
    let hints = req.scheduler_hints;
    let c = req.server;
    if c.name.trim().is_empty() {
        return Err(ApiError::bad_request(
            S,
            "Invalid input for field/attribute name. Value: . '' is too short",
        ));
    }
    if c.networks.is_none() && mv.at_least(2, 37) {
        return Err(ApiError::bad_request(
            S,
            "Invalid input for field/attribute server. Value: networks. 'networks' is a required property",
        ));
    }
    let now = Utc::now();
    let mut w = sim.world();
    let flavor_id = c.flavor_ref.rsplit('/').next().unwrap_or_default().to_string();
    let flavor = w
        .seed
        .flavors
        .iter()
        .find(|f| f.id == flavor_id)
        .cloned()
        .ok_or_else(|| ApiError::bad_request(S, format!("Flavor {flavor_id} could not be found.")))?;
    let image_id = match c.image_ref.as_deref().filter(|s| !s.is_empty()) {
        Some(r) => {
            let id = r.rsplit('/').next().unwrap_or_default().to_string();
            let img = w
                .seed
                .images
                .iter()
                .find(|i| i.id == id)
                .ok_or_else(|| ApiError::bad_request(S, format!("Image {id} could not be found.")))?;
            if img.status != "active" {
                return Err(ApiError::bad_request(S, format!("Image {id} is not active.")));
            }
            Some(id)
        }
        None if c.block_device_mapping_v2.is_some() => None,
        None => return Err(ApiError::bad_request(S, "Invalid imageRef provided.")),
    };
    // Boot from volume: a mapping at boot index 0 from an image to a volume, which Nova has
    // Cinder make (sized, typed) and attaches as the root disk. Other mappings are accepted and
    // not modelled (as before).
    let boot = boot_volume_request(&w, &c, mv)?;
    // Keypairs are the user's: Nova looks the name up among the caller's.
    if let Some(k) = &c.key_name
        && !w.has_keypair(&tok.user_id, k)
    {
        return Err(ApiError::bad_request(S, "Invalid key_name provided."));
    }
    // The zone asked for must be an available one; the hint `group` an existing group.
    w.check_zone(c.availability_zone.as_deref())?;
    let group = w.hinted_group(hints.as_ref())?;
    // Quota: instances, cores, ram (Nova counts servers in any state).
    let quota = w.quotas_of(&project);
    let used = w.usage_of(&project);
    let mut over = Vec::new();
    for (name, req, used, limit) in [
        ("instances", 1, used.instances, quota.instances),
        ("cores", flavor.vcpus as i64, used.cores, quota.cores),
        ("ram", flavor.ram as i64, used.ram, quota.ram),
    ] {
        if limit >= 0 && used + req > limit {
            over.push((name, req, used, limit));
        }
    }
    if !over.is_empty() {
        return Err(quota_exceeded(&over));
    }
    // NICs: validate every requested port before changing anything.
    let nics: Vec<NetworkRequest> = match &c.networks {
        Some(Networks::List(l)) => l.clone(),
        Some(Networks::Keyword(k)) if k == "none" => vec![],
        _ => {
            let shared =
                w.networks.values().find(|n| n.shared || n.project_id == project).map(|n| n.id.clone());
            match shared {
                Some(id) => vec![NetworkRequest { uuid: Some(id), ..Default::default() }],
                None => vec![],
            }
        }
    };
    for nic in &nics {
        if let Some(pid) = &nic.port {
            let p = w
                .ports
                .get(pid)
                .filter(|p| p.project_id == project || tok.is_admin())
                .ok_or_else(|| ApiError::bad_request(S, format!("Port id {pid} could not be found.")))?;
            if !p.device_id.is_empty() {
                return Err(ApiError::new(S, 409, format!("Port {pid} is still in use.")));
            }
        } else if let Some(nid) = &nic.uuid {
            if !w.networks.contains_key(nid) {
                return Err(ApiError::bad_request(S, format!("Network {nid} could not be found.")));
            }
        } else {
            return Err(ApiError::bad_request(
                S,
                "Bad networks format: network uuid is not in proper format",
            ));
        }
    }
    // Nova asks Neutron for the ports it will create, within the project's port quota.
    let new_ports = nics.iter().filter(|n| n.port.is_none()).count() as i64;
    let port_limit = w.quotas_of(&project).ports;
    if new_ports > 0 && port_limit >= 0 && w.usage_of(&project).ports + new_ports > port_limit {
        return Err(ApiError::forbidden(S, "Maximum number of ports exceeded"));
    }
    let id = new_id();
    let placed = w.place(c.availability_zone.as_deref(), group.as_deref());
    let host = placed.as_ref().map(|(_, h)| h.clone()).unwrap_or_default();
    let mut ports = Vec::new();
    for nic in &nics {
        match (&nic.port, &nic.uuid) {
            (Some(pid), _) => ports.push((pid.clone(), false)),
            (None, Some(nid)) => {
                let fixed = nic.fixed_ip.clone().map(|ip| (None, Some(ip)));
                match w.create_port(&project, nid, String::new(), fixed, now) {
                    Ok(pid) => ports.push((pid, true)),
                    Err((_, _, msg)) => {
                        for (p, created) in &ports {
                            if *created {
                                w.delete_port(p);
                            }
                        }
                        return Err(ApiError::bad_request(S, msg));
                    }
                }
            }
            _ => {}
        }
    }
    for (pid, _) in &ports {
        if let Some(p) = w.ports.get_mut(pid) {
            p.device_id = id.clone();
            p.device_owner = "compute:nova".into();
            p.host = host.clone();
            p.modified = now;
            p.revision += 1;
        }
    }
    // Nova's compute host asks Cinder for the boot volume: over Cinder's quota the build is
    // aborted (the server ends in ERROR with Nova's fault), else the volume is made from the
    // image and attached as /dev/vda, in-use by the time the server is up.
    let mut volumes = vec![];
    let mut build_fault = None;
    if let Some(b) = &boot {
        if let Some(why) = super::volume::over_volume_quota(&w, &project, b.size) {
            tracing::debug!(server_id = %id, %why, "boot volume over quota");
            build_fault =
                Some((500, format!("Build of instance {id} aborted: Quota exceeded for resources: volumes")));
        } else if b.too_small_for_image {
            build_fault =
                Some((500, format!("Build of instance {id} aborted: Block Device Mapping is Invalid.")));
        } else {
            let vid = new_id();
            let vseq = w.next_seq();
            let attachment_id = new_id();
            w.volumes.insert(
                vid.clone(),
                VolumeRec {
                    seq: vseq,
                    id: vid.clone(),
                    // Nova names the volumes it makes from an image "" (and describes them "").
                    name: Some(String::new()),
                    description: Some(String::new()),
                    project_id: project.clone(),
                    user_id: tok.user_id.clone(),
                    size: b.size,
                    volume_type: b.volume_type.clone(),
                    metadata: BTreeMap::new(),
                    availability_zone: c.availability_zone.clone().unwrap_or_else(|| "nova".into()),
                    created: now,
                    available_at: now,
                    create_fault: false,
                    stuck: None,
                    attach: Some(VolAttach {
                        server_id: id.clone(),
                        attachment_id: attachment_id.clone(),
                        device: "/dev/vda".into(),
                        started: now,
                        attaching_at: now,
                        in_use_at: now,
                    }),
                    detached_until: None,
                    modified: now,
                    image: Some((b.image_id.clone(), b.image_name.clone())),
                },
            );
            w.volume_order.insert(vseq, vid.clone());
            let u = w.usage_mut(&project);
            u.volumes += 1;
            u.gigabytes += b.size as i64;
            volumes.push(AttachRec {
                volume_id: vid,
                attachment_id,
                bdm_uuid: new_id(),
                device: "/dev/vda".into(),
                tag: None,
                delete_on_termination: b.delete_on_termination,
            });
        }
    }
    let boot_time = w.timings.boot_duration();
    let seq = w.next_seq();
    let rec = ServerRec {
        seq,
        id: id.clone(),
        name: c.name.clone(),
        project_id: project.clone(),
        user_id: tok.user_id.clone(),
        flavor_id: flavor.id.clone(),
        image_id,
        key_name: c.key_name.clone(),
        metadata: c.metadata.clone().unwrap_or_default(),
        tags: c.tags.clone().unwrap_or_default(),
        description: c.description.clone(),
        availability_zone: match &placed {
            Some((zone, _)) => zone.clone(),
            None => c.availability_zone.clone().unwrap_or_default(),
        },
        requested_az: c.availability_zone.clone(),
        // Nova's request spec keeps every hint as a list (`"group": ["<id>"]`), and shows it so.
        scheduler_hints: hints.clone().map(|h| {
            h.into_iter()
                .map(|(k, v)| (k, if v.is_array() { v } else { serde_json::Value::Array(vec![v]) }))
                .collect()
        }),
        ports,
        volumes,
        created: now,
        boot_done: after(now, boot_time),
        fault: injected
            .server_error
            .or_else(|| placed.is_none().then(|| crate::sim::placement::NO_VALID_HOST.to_string()))
            .map(|m| (500, m))
            .or(build_fault),
        stuck: injected.stuck,
        modified: now,
        deleted: None,
        life: Life::default(),
    };
    w.servers.insert(id.clone(), rec);
    w.server_order.insert(seq, id.clone());
    if let Some(g) = group.and_then(|g| w.server_groups.get_mut(&g)) {
        g.members.push(id.clone());
    }
    let u = w.usage_mut(&project);
    u.instances += 1;
    u.cores += flavor.vcpus as i64;
    u.ram += flavor.ram as i64;
    drop(w);
    let body = ServerCreated {
        server: CreatedServer {
            id: id.clone(),
            links: links(&sim, "servers", &id),
            disk_config: Some("MANUAL".into()),
            security_groups: Some(vec![NamedRef { name: "default".into() }]),
            admin_pass: Some(crate::sim::state::new_hex_id()[..12].to_string()),
        },
    };
    let mut resp = json(StatusCode::ACCEPTED, &body);
    if let Ok(v) = HeaderValue::from_str(&sim.url(&format!("/compute/v2.1/servers/{id}"))) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// A boot from a volume made from an image, as `POST /servers` asked for it.
struct BootVolume {
    image_id: String,
    image_name: String,
    size: u64,
    /// The Cinder type's name.
    volume_type: String,
    delete_on_termination: bool,
    /// The image is larger than the volume: Cinder refuses to make it on the host, so the build
    /// fails (Nova checks only `min_disk` at the API).
    too_small_for_image: bool,
}

/// Validates `block_device_mapping_v2` as Nova's API does for the one case the simulator
/// models (boot index 0, source `image`, destination `volume`): the image exists and is active,
/// a size is given and is at least the image's `min_disk`, the type (2.67+) exists.
fn boot_volume_request(
    w: &World,
    c: &ServerCreate,
    mv: Microversion,
) -> Result<Option<BootVolume>, ApiError> {
    const GIB: u64 = 1 << 30;
    let Some(list) = &c.block_device_mapping_v2 else { return Ok(None) };
    for raw in list {
        if raw.get("volume_type").is_some() && !mv.at_least(2, 67) {
            return Err(ApiError::bad_request(
                S,
                format!(
                    "Invalid input for field/attribute 0. Value: {raw}. Additional properties are not allowed ('volume_type' was unexpected)"
                ),
            ));
        }
        let bdm: BlockDeviceMapping = serde_json::from_value(raw.clone()).map_err(|e| {
            ApiError::bad_request(
                S,
                format!("Invalid input for field/attribute block_device_mapping_v2. {e}"),
            )
        })?;
        let from_image = bdm.source_type.as_deref() == Some("image")
            && bdm.destination_type.as_deref() == Some("volume")
            && bdm.boot_index == Some(0);
        if !from_image {
            continue;
        }
        let image_id = bdm.uuid.clone().unwrap_or_default();
        let img = w
            .seed
            .images
            .iter()
            .find(|i| i.id == image_id)
            .ok_or_else(|| ApiError::bad_request(S, format!("Image {image_id} could not be found.")))?;
        if img.status != "active" {
            return Err(ApiError::bad_request(S, format!("Image {image_id} is not active.")));
        }
        let size = match bdm.volume_size {
            Some(n) if n > 0 => n as u64,
            _ => {
                return Err(ApiError::bad_request(
                    S,
                    "Images with destination_type 'volume' need to have a non-zero size specified",
                ));
            }
        };
        if img.min_disk > size {
            return Err(ApiError::bad_request(
                S,
                format!(
                    "Volume is smaller than the minimum size specified in image metadata. Volume size is {} bytes, minimum size is {} bytes.",
                    size * GIB,
                    img.min_disk * GIB
                ),
            ));
        }
        let volume_type =
            super::volume::volume_type_name(w, bdm.volume_type.as_deref()).ok_or_else(|| {
                ApiError::bad_request(
                    S,
                    format!(
                        "Volume type {} could not be found.",
                        bdm.volume_type.as_deref().unwrap_or_default()
                    ),
                )
            })?;
        return Ok(Some(BootVolume {
            image_name: img.name.clone(),
            too_small_for_image: img.size.unwrap_or(0) > size * GIB,
            image_id,
            size,
            volume_type,
            // Nova's default for a mapping that does not say.
            delete_on_termination: bdm.delete_on_termination.unwrap_or(false),
        }));
    }
    Ok(None)
}

async fn update_server(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    v: Option<Extension<Microversion>>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let req: serde_json::Value = parse_body(S, &body)?;
    let now = Utc::now();
    let mut w = sim.world();
    let s = w.server_mut(&id).filter(|s| visible(&tok, s)).ok_or_else(|| server_not_found(&id))?;
    if let Some(n) = req["server"]["name"].as_str() {
        s.name = n.to_string();
    }
    if let Some(d) = req["server"]["description"].as_str() {
        s.description = Some(d.to_string());
    }
    s.modified = now;
    let s = w.server(&id).ok_or_else(|| server_not_found(&id))?;
    let mv = mv(v);
    let body = serde_json::json!({"server": with_groups(server_json(&sim, &w, s, now, mv), &w, s, mv)});
    Ok(json(StatusCode::OK, &body))
}

async fn delete_server(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let mut w = sim.world();
    if !w.server(&id).is_some_and(|s| visible(&tok, s)) {
        return Err(server_not_found(&id));
    }
    w.delete_server(&id, Utc::now());
    // Keep tombstones for a day of changes-since queries, not forever.
    if w.servers.len() > 1000 && w.seq.is_multiple_of(1000) {
        w.purge_tombstones(Utc::now() - chrono::Duration::days(1));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn with_server<T>(
    sim: &Sim,
    headers: &HeaderMap,
    id: &str,
    need: Option<Microversion>,
    mv: Microversion,
    f: impl FnOnce(&mut ServerRec) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let tok = authenticate(sim, headers, S)?;
    if let Some(need) = need
        && !mv.at_least(need.0, need.1)
    {
        return Err(ApiError::not_found(S, "The resource could not be found."));
    }
    let mut w = sim.world();
    let s = w.server_mut(id).filter(|s| visible(&tok, s)).ok_or_else(|| server_not_found(id))?;
    f(s)
}

const TAGS: Option<Microversion> = Some(Microversion(2, 26));

async fn get_tags(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tags = with_server(&sim, &headers, &id, TAGS, mv(v), |s| Ok(s.tags.clone()))?;
    Ok(json(StatusCode::OK, &serde_json::json!({"tags": tags})))
}

async fn replace_tags(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    v: Option<Extension<Microversion>>,
    body: Bytes,
) -> ApiResult {
    let req: serde_json::Value = parse_body(S, &body)?;
    let tags: Vec<String> = req["tags"]
        .as_array()
        .ok_or_else(|| ApiError::bad_request(S, "Invalid input for field/attribute tags."))?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    if tags.len() > 50 {
        return Err(ApiError::bad_request(S, "Invalid input for field/attribute tags. Too many tags"));
    }
    let tags = with_server(&sim, &headers, &id, TAGS, mv(v), |s| {
        s.tags = tags;
        s.modified = Utc::now();
        Ok(s.tags.clone())
    })?;
    Ok(json(StatusCode::OK, &serde_json::json!({"tags": tags})))
}

async fn clear_tags(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    with_server(&sim, &headers, &id, TAGS, mv(v), |s| {
        s.tags.clear();
        s.modified = Utc::now();
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn check_tag(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    with_server(&sim, &headers, &id, TAGS, mv(v), |s| {
        if s.tags.contains(&tag) {
            Ok(())
        } else {
            Err(ApiError::not_found(S, format!("Tag {tag} could not be found.")))
        }
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_tag(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let created = with_server(&sim, &headers, &id, TAGS, mv(v), |s| {
        if s.tags.contains(&tag) {
            return Ok(false);
        }
        s.tags.push(tag.clone());
        s.modified = Utc::now();
        Ok(true)
    })?;
    let mut r = (if created { StatusCode::CREATED } else { StatusCode::NO_CONTENT }).into_response();
    if let Ok(v) = HeaderValue::from_str(&sim.url(&format!("/compute/v2.1/servers/{id}/tags/{tag}"))) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

async fn remove_tag(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    with_server(&sim, &headers, &id, TAGS, mv(v), |s| {
        let before = s.tags.len();
        s.tags.retain(|t| t != &tag);
        if s.tags.len() == before {
            return Err(ApiError::not_found(S, format!("Tag {tag} could not be found.")));
        }
        s.modified = Utc::now();
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn get_metadata(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let md = with_server(&sim, &headers, &id, None, NOVA_MIN, |s| Ok(s.metadata.clone()))?;
    Ok(json(StatusCode::OK, &serde_json::json!({"metadata": md})))
}

fn metadata_body(body: &[u8]) -> Result<BTreeMap<String, String>, ApiError> {
    #[derive(serde::Deserialize)]
    struct Md {
        metadata: BTreeMap<String, String>,
    }
    Ok(parse_body::<Md>(S, body)?.metadata)
}

async fn merge_metadata(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let md = metadata_body(&body)?;
    let all = with_server(&sim, &headers, &id, None, NOVA_MIN, |s| {
        s.metadata.extend(md);
        s.modified = Utc::now();
        Ok(s.metadata.clone())
    })?;
    Ok(json(StatusCode::OK, &serde_json::json!({"metadata": all})))
}

async fn replace_metadata(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let md = metadata_body(&body)?;
    let all = with_server(&sim, &headers, &id, None, NOVA_MIN, |s| {
        s.metadata = md;
        s.modified = Utc::now();
        Ok(s.metadata.clone())
    })?;
    Ok(json(StatusCode::OK, &serde_json::json!({"metadata": all})))
}

fn attachment_view(server_id: &str, a: &AttachRec, mv: Microversion) -> VolumeAttachment {
    VolumeAttachment {
        id: (!mv.at_least(2, 89)).then(|| a.volume_id.clone()),
        device: Some(a.device.clone()),
        server_id: server_id.to_string(),
        volume_id: a.volume_id.clone(),
        tag: if mv.at_least(2, 70) { a.tag.clone().or(Some(String::new())) } else { None },
        delete_on_termination: mv.at_least(2, 79).then_some(a.delete_on_termination),
        attachment_id: mv.at_least(2, 89).then(|| a.attachment_id.clone()),
        bdm_uuid: mv.at_least(2, 89).then(|| a.bdm_uuid.clone()),
    }
}

fn attachment_json(server_id: &str, a: &AttachRec, mv: Microversion) -> serde_json::Value {
    let mut v = serde_json::to_value(attachment_view(server_id, a, mv)).unwrap_or_default();
    if mv.at_least(2, 70) && a.tag.is_none() {
        v["tag"] = serde_json::Value::Null;
    }
    v
}

async fn list_attachments(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let mv = mv(v);
    let list = with_server(&sim, &headers, &id, None, mv, |s| {
        Ok(s.volumes.iter().map(|a| attachment_json(&s.id, a, mv)).collect::<Vec<_>>())
    })?;
    Ok(json(StatusCode::OK, &serde_json::json!({"volumeAttachments": list})))
}

async fn show_attachment(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, vid)): Path<(String, String)>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let mv = mv(v);
    let a =
        with_server(&sim, &headers, &id, None, mv, |s| {
            s.volumes.iter().find(|a| a.volume_id == vid).map(|a| attachment_json(&s.id, a, mv)).ok_or_else(
                || ApiError::not_found(S, format!("Volume {vid} is not attached to instance {id}.")),
            )
        })?;
    Ok(json(StatusCode::OK, &serde_json::json!({"volumeAttachment": a})))
}

async fn attach_volume(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    v: Option<Extension<Microversion>>,
    injected: Option<Extension<Injected>>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let mv = mv(v);
    let req: VolumeAttachmentRequest = parse_body(S, &body)?;
    let r = req.volume_attachment;
    let stuck = injected.is_some_and(|e| e.stuck);
    let now = Utc::now();
    let mut w = sim.world();
    let s = w.server(&id).filter(|s| visible(&tok, s)).ok_or_else(|| server_not_found(&id))?;
    let state = s.view(now);
    if state.status != "ACTIVE" {
        return Err(ApiError::new(
            S,
            409,
            format!("Cannot 'attach_volume' instance {id} while it is in vm_state {}", state.vm_state),
        ));
    }
    let project = s.project_id.clone();
    let used: Vec<String> = s.volumes.iter().map(|a| a.device.clone()).collect();
    let vol = w
        .volumes
        .get(&r.volume_id)
        .filter(|v| v.project_id == project)
        .ok_or_else(|| ApiError::not_found(S, format!("Volume {} could not be found.", r.volume_id)))?;
    let vstatus = vol.status(now).to_string();
    if vstatus != "available" {
        return Err(ApiError::bad_request(
            S,
            format!(
                "Invalid volume: volume '{}' status must be 'available'. Currently in '{vstatus}'",
                r.volume_id
            ),
        ));
    }
    let device = r.device.clone().filter(|d| !d.is_empty() && !used.contains(d)).unwrap_or_else(|| {
        (b'b'..=b'z')
            .map(|c| format!("/dev/vd{}", c as char))
            .find(|d| !used.contains(d))
            .unwrap_or_else(|| "/dev/vdz".into())
    });
    let attach_ms = w.timings.attach_ms;
    let a = AttachRec {
        volume_id: r.volume_id.clone(),
        attachment_id: new_id(),
        bdm_uuid: new_id(),
        device: device.clone(),
        tag: r.tag.clone(),
        delete_on_termination: r.delete_on_termination.unwrap_or(false),
    };
    if let Some(v) = w.volumes.get_mut(&r.volume_id) {
        v.attach = Some(VolAttach {
            server_id: id.clone(),
            attachment_id: a.attachment_id.clone(),
            device,
            started: now,
            attaching_at: after(now, Duration::from_millis(attach_ms / 3)),
            in_use_at: after(now, Duration::from_millis(attach_ms)),
        });
        v.detached_until = None;
        v.modified = now;
        if stuck {
            v.stuck = Some("attaching".into());
        }
    }
    let body = serde_json::json!({"volumeAttachment": attachment_json(&id, &a, mv)});
    if let Some(s) = w.server_mut(&id) {
        s.volumes.push(a);
        s.modified = now;
    }
    drop(w);
    let status = if mv.at_least(2, 101) { StatusCode::ACCEPTED } else { StatusCode::OK };
    Ok(json(status, &body))
}

async fn detach_volume(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, vid)): Path<(String, String)>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let now = Utc::now();
    let mut w = sim.world();
    let detach_ms = w.timings.detach_ms;
    let s = w.server_mut(&id).filter(|s| visible(&tok, s)).ok_or_else(|| server_not_found(&id))?;
    let before = s.volumes.len();
    s.volumes.retain(|a| a.volume_id != vid);
    if s.volumes.len() == before {
        return Err(ApiError::not_found(S, format!("Volume {vid} is not attached to instance {id}.")));
    }
    s.modified = now;
    if let Some(v) = w.volumes.get_mut(&vid) {
        v.attach = None;
        v.detached_until = Some(after(now, Duration::from_millis(detach_ms)));
        v.modified = now;
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

fn quota_target(tok: &TokenInfo, project: &str, action: &str) -> Result<(), ApiError> {
    if tok.is_admin() || tok.project_id.as_deref() == Some(project) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            S,
            format!("Policy doesn't allow os_compute_api:os-quota-sets:{action} to be performed."),
        ))
    }
}

fn quota_pairs(w: &World, project: &str, mv: Microversion) -> Vec<(&'static str, i64, i64)> {
    let q = w.quotas_of(project);
    let u = w.usage_of(project);
    let mut v = vec![
        ("instances", q.instances, u.instances),
        ("cores", q.cores, u.cores),
        ("ram", q.ram, u.ram),
        ("key_pairs", 100, 0),
        ("metadata_items", 128, 0),
        ("server_groups", 10, w.server_groups.values().filter(|g| g.project_id == project).count() as i64),
        ("server_group_members", 10, 0),
    ];
    if !mv.at_least(2, 57) {
        v.extend([
            ("injected_files", 5, 0),
            ("injected_file_content_bytes", 10240, 0),
            ("injected_file_path_bytes", 255, 0),
        ]);
    }
    if !mv.at_least(2, 36) {
        v.extend([
            ("fixed_ips", -1, 0),
            ("floating_ips", q.floating_ips, 0),
            ("security_groups", 10, 0),
            ("security_group_rules", 20, 0),
        ]);
    }
    v
}

async fn show_quota(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    quota_target(&tok, &project, "show")?;
    let w = sim.world();
    let mut m = serde_json::Map::new();
    m.insert("id".into(), serde_json::json!(project));
    for (k, limit, _) in quota_pairs(&w, &project, mv(v)) {
        m.insert(k.into(), serde_json::json!(limit));
    }
    Ok(json(StatusCode::OK, &serde_json::json!({"quota_set": m})))
}

async fn show_quota_defaults(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let d = crate::sim::seed::Quotas::default();
    let w = sim.world();
    let mut m = serde_json::Map::new();
    m.insert("id".into(), serde_json::json!(project));
    for (k, limit, _) in quota_pairs(&w, "", mv(v)) {
        let limit = match k {
            "instances" => d.instances,
            "cores" => d.cores,
            "ram" => d.ram,
            _ => limit,
        };
        m.insert(k.into(), serde_json::json!(limit));
    }
    Ok(json(StatusCode::OK, &serde_json::json!({"quota_set": m})))
}

async fn show_quota_detail(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    quota_target(&tok, &project, "detail")?;
    let w = sim.world();
    let mut m = serde_json::Map::new();
    m.insert("id".into(), serde_json::json!(project));
    for (k, limit, used) in quota_pairs(&w, &project, mv(v)) {
        m.insert(
            k.into(),
            serde_json::to_value(QuotaDetail { in_use: used, limit, reserved: 0 }).unwrap_or_default(),
        );
    }
    Ok(json(StatusCode::OK, &serde_json::json!({"quota_set": m})))
}

async fn update_quota(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    v: Option<Extension<Microversion>>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() {
        return Err(ApiError::forbidden(
            S,
            "Policy doesn't allow os_compute_api:os-quota-sets:update to be performed.",
        ));
    }
    let req: QuotaSetBody = parse_body(S, &body)?;
    let mut w = sim.world();
    let p = w
        .projects
        .get_mut(&project)
        .ok_or_else(|| ApiError::bad_request(S, format!("Project ID {project} is not a valid project.")))?;
    if let Some(n) = req.quota_set.instances {
        p.quotas.instances = n;
    }
    if let Some(n) = req.quota_set.cores {
        p.quotas.cores = n;
    }
    if let Some(n) = req.quota_set.ram {
        p.quotas.ram = n;
    }
    let mut m = serde_json::Map::new();
    for (k, limit, _) in quota_pairs(&w, &project, mv(v)) {
        m.insert(k.into(), serde_json::json!(limit));
    }
    Ok(json(StatusCode::OK, &serde_json::json!({"quota_set": m})))
}

/// `DELETE os-quota-sets/{project}`: back to the defaults (202, as Nova answers).
async fn reset_quota(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() {
        return Err(ApiError::forbidden(
            S,
            "Policy doesn't allow os_compute_api:os-quota-sets:delete to be performed.",
        ));
    }
    let d = crate::sim::seed::Quotas::default();
    if let Some(p) = sim.world().projects.get_mut(&project) {
        p.quotas.instances = d.instances;
        p.quotas.cores = d.cores;
        p.quotas.ram = d.ram;
    }
    Ok(StatusCode::ACCEPTED.into_response())
}

async fn limits(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let mut project = scoped(&tok, S)?;
    if tok.is_admin()
        && let Some(t) = q.get("tenant_id")
    {
        project = t.to_string();
    }
    let w = sim.world();
    let qt = w.quotas_of(&project);
    let u = w.usage_of(&project);
    let body = LimitsBody {
        limits: Limits {
            rate: vec![],
            absolute: AbsoluteLimits {
                max_total_instances: qt.instances,
                max_total_cores: qt.cores,
                max_total_ram_size: qt.ram,
                max_server_meta: 128,
                max_image_meta: 128,
                max_personality: 5,
                max_personality_size: 10240,
                max_total_keypairs: 100,
                max_server_groups: 10,
                max_server_group_members: 10,
                total_instances_used: u.instances,
                total_cores_used: u.cores,
                total_ram_used: u.ram,
                total_server_groups_used: w.server_groups.values().filter(|g| g.project_id == project).count()
                    as i64,
            },
        },
    };
    Ok(json(StatusCode::OK, &body))
}

// ---- server actions ----

/// Nova's 409 for an action the server's state does not allow.
fn invalid_state(action: &str, id: &str, what: &str, state: &str) -> ApiError {
    ApiError::new(S, 409, format!("Cannot '{action}' instance {id} while it is in {what} {state}"))
}

/// What an action needs and does: the states it is allowed from, the task it shows, the state
/// it ends in. `None` for an unknown action.
fn action_rule(name: &str) -> Option<(&'static str, &'static [Vm], Option<&'static str>, Vm)> {
    use Vm::*;
    Some(match name {
        "os-stop" => ("stop", &[Active], Some("powering-off"), Stopped),
        "os-start" => ("start", &[Stopped], Some("powering-on"), Active),
        "suspend" => ("suspend", &[Active], Some("suspending"), Suspended),
        "resume" => ("resume", &[Suspended], Some("resuming"), Active),
        "pause" => ("pause", &[Active], Some("pausing"), Paused),
        "unpause" => ("unpause", &[Paused], Some("unpausing"), Active),
        // With Nova's default shelved_offload_time of 0, shelving offloads at once.
        "shelve" => ("shelve", &[Active, Stopped, Paused, Suspended], Some("shelving"), ShelvedOffloaded),
        "shelveOffload" => ("shelveOffload", &[], Some("shelving_offloading"), ShelvedOffloaded),
        "unshelve" => ("unshelve", &[ShelvedOffloaded], Some("unshelving"), Active),
        "resize" => ("resize", &[Active, Stopped], Some("resize_prep"), Resized),
        // The `to` of these two is the state before the resize, filled in below.
        "confirmResize" => ("confirmResize", &[Resized], None, Active),
        "revertResize" => ("revertResize", &[Resized], Some("resize_reverting"), Active),
        _ => return None,
    })
}

/// `POST /servers/{id}/action`: the lifecycle actions, with Nova's state checks (409), task
/// states while they run, quota on resize (403), and fault rules matched by action.
async fn server_action(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    injected: Option<Extension<Injected>>,
    rid: Option<Extension<LocalRequestId>>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let req: serde_json::Map<String, serde_json::Value> = parse_body(S, &body)?;
    let (name, arg) = match req.iter().next() {
        Some((k, v)) if req.len() == 1 => (k.clone(), v.clone()),
        _ => return Err(ApiError::bad_request(S, "Malformed request body")),
    };
    let Some((action, from, task, mut to)) = action_rule(&name) else {
        return Err(ApiError::bad_request(S, format!("There is no such action: {name}")));
    };
    let injected = injected.map(|e| e.0).unwrap_or_default();
    let request_id = rid.map(|r| r.0.0).unwrap_or_else(|| format!("req-{}", uuid::Uuid::new_v4()));
    let now = Utc::now();
    let mut w = sim.world();
    let action_ms = w.timings.action_ms;
    let s = w.server_mut(&id).filter(|s| visible(&tok, s)).ok_or_else(|| server_not_found(&id))?;
    s.settle(now);
    if s.stuck || now < s.boot_done {
        return Err(invalid_state(action, &id, "vm_state", "building"));
    }
    if s.fault.is_some() {
        return Err(invalid_state(action, &id, "vm_state", "error"));
    }
    if s.deleted.is_some() {
        return Err(invalid_state(action, &id, "task_state", "deleting"));
    }
    if let Some(p) = &s.life.pending {
        return Err(invalid_state(action, &id, "task_state", p.task.unwrap_or("migrating")));
    }
    let vm = s.life.vm;
    if !from.contains(&vm) {
        return Err(invalid_state(action, &id, "vm_state", vm.vm_state()));
    }
    let (project, current) = (s.project_id.clone(), s.flavor_id.clone());
    let resized_from = s.life.resized_from.clone();
    let mut flavor: Option<String> = None;
    match action {
        "resize" => {
            let want = arg["flavorRef"]
                .as_str()
                .map(str::to_string)
                .or_else(|| arg["flavorRef"].as_i64().map(|n| n.to_string()));
            let Some(want) = want else {
                return Err(ApiError::bad_request(
                    S,
                    "Invalid input for field/attribute resize. Value: {}. 'flavorRef' is a required property",
                ));
            };
            let want = want.rsplit('/').next().unwrap_or_default().to_string();
            let find = |fid: &str| w.seed.flavors.iter().find(|f| f.id == fid).cloned();
            let new = find(&want)
                .ok_or_else(|| ApiError::bad_request(S, format!("Flavor {want} could not be found.")))?;
            if new.id == current {
                return Err(ApiError::bad_request(S, "When resizing, instances must change flavor!"));
            }
            let old = find(&current);
            let (dc, dr) = match &old {
                Some(o) => (new.vcpus as i64 - o.vcpus as i64, new.ram as i64 - o.ram as i64),
                None => (new.vcpus as i64, new.ram as i64),
            };
            let (quota, used) = (w.quotas_of(&project), w.usage_of(&project));
            let over: Vec<_> = [("cores", dc, used.cores, quota.cores), ("ram", dr, used.ram, quota.ram)]
                .into_iter()
                .filter(|(_, req, used, limit)| *req > 0 && *limit >= 0 && used + req > *limit)
                .collect();
            if !over.is_empty() {
                return Err(quota_exceeded(&over));
            }
            if injected.server_error.is_none() {
                let u = w.usage_mut(&project);
                u.cores += dc;
                u.ram += dr;
            }
            flavor = Some(new.id);
        }
        "confirmResize" => to = resized_from.as_ref().map(|r| r.1).unwrap_or(Vm::Active),
        "revertResize" => {
            let (old_id, before) = resized_from.clone().unwrap_or((current.clone(), Vm::Active));
            to = before;
            let find = |fid: &str| w.seed.flavors.iter().find(|f| f.id == fid).cloned();
            if let (Some(new), Some(old)) = (find(&current), find(&old_id))
                && injected.server_error.is_none()
            {
                let u = w.usage_mut(&project);
                u.cores += old.vcpus as i64 - new.vcpus as i64;
                u.ram += old.ram as i64 - new.ram as i64;
            }
            flavor = Some(old_id);
        }
        _ => {}
    }
    let until = if injected.stuck {
        now + chrono::Duration::days(3650)
    } else {
        after(now, Duration::from_millis(action_ms))
    };
    let s = w.server_mut(&id).ok_or_else(|| server_not_found(&id))?;
    match action {
        "resize" if injected.server_error.is_none() => s.life.resized_from = Some((current, vm)),
        "confirmResize" | "revertResize" if injected.server_error.is_none() => s.life.resized_from = None,
        _ => {}
    }
    s.life.actions.push(ActionRec {
        action: action.to_string(),
        request_id,
        user_id: tok.user_id.clone(),
        start: now,
        finish: None,
        error: None,
    });
    s.life.pending = Some(Pending { action, task, until, to, flavor, error: injected.server_error });
    s.modified = now;
    drop(w);
    Ok(if action == "confirmResize" { StatusCode::NO_CONTENT } else { StatusCode::ACCEPTED }.into_response())
}

fn action_time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

fn instance_action_json(s: &ServerRec, a: &ActionRec, mv: Microversion) -> serde_json::Value {
    let mut v = serde_json::json!({
        "action": a.action,
        "instance_uuid": s.id,
        "message": a.error.as_ref().map(|_| "Error"),
        "project_id": s.project_id,
        "request_id": a.request_id,
        "start_time": action_time(&a.start),
        "user_id": a.user_id,
    });
    if mv.at_least(2, 58) {
        v["updated_at"] = serde_json::json!(action_time(&a.finish.unwrap_or(a.start)));
    }
    v
}

/// The server's instance actions as of `now` (an action that has finished is shown finished).
fn actions_at(s: &ServerRec, now: DateTime<Utc>) -> Vec<ActionRec> {
    let mut c = s.clone();
    c.settle(now);
    c.life.actions
}

/// `GET /servers/{id}/os-instance-actions`: newest first.
async fn list_instance_actions(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let now = Utc::now();
    let w = sim.world();
    let s = w.server(&id).filter(|s| visible(&tok, s)).ok_or_else(|| server_not_found(&id))?;
    let create = ActionRec {
        action: "create".into(),
        request_id: format!("req-{}", s.id),
        user_id: s.user_id.clone(),
        start: s.created,
        finish: Some(s.boot_done),
        error: s.fault.as_ref().map(|f| f.1.clone()),
    };
    let mv = mv(v);
    let mut actions = vec![instance_action_json(s, &create, mv)];
    actions.extend(actions_at(s, now).iter().map(|a| instance_action_json(s, a, mv)));
    actions.reverse();
    Ok(json(StatusCode::OK, &serde_json::json!({"instanceActions": actions})))
}

/// `GET /servers/{id}/os-instance-actions/{request_id}`: the action with its events; a failed
/// event carries the error in `details` (2.84+) and, for admins, `traceback`.
async fn show_instance_action(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, request_id)): Path<(String, String)>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let now = Utc::now();
    let w = sim.world();
    let s = w.server(&id).filter(|s| visible(&tok, s)).ok_or_else(|| server_not_found(&id))?;
    let mv = mv(v);
    let actions = actions_at(s, now);
    let a = actions.iter().find(|a| a.request_id == request_id).ok_or_else(|| {
        ApiError::not_found(S, format!("Action for request_id {request_id} on instance {id} not found"))
    })?;
    let mut out = instance_action_json(s, a, mv);
    let mut event = serde_json::json!({
        "event": format!("compute_{}_instance", a.action.to_ascii_lowercase()),
        "start_time": action_time(&a.start),
        "finish_time": a.finish.as_ref().map(action_time),
        "result": a.finish.map(|_| if a.error.is_some() { "Error" } else { "Success" }),
    });
    if tok.is_admin() {
        event["traceback"] = serde_json::json!(a.error);
    }
    if mv.at_least(2, 62) {
        let host = w.host_of_zone(&s.availability_zone);
        event["host"] = serde_json::json!(host);
        event["hostId"] = serde_json::json!(host_id(&s.project_id, host));
    }
    if mv.at_least(2, 84) {
        event["details"] = serde_json::json!(a.error);
    }
    out["events"] = serde_json::json!([event]);
    Ok(json(StatusCode::OK, &serde_json::json!({"instanceAction": out})))
}
