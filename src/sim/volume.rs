//! Simulated Cinder v3 under `/volume/v3` (with or without the project id in the path):
//! version documents and `OpenStack-API-Version` negotiation (3.0 to 3.71), volumes (create,
//! show, list with `name`, `status`, `metadata` filters and pagination, update, delete), volume
//! types, limits and quota sets. Quota exceeded is Cinder's 413 with `Retry-After: 0`.
//!
//! A volume is `creating` until its create time has passed, then `available`; attached through
//! Nova it goes `reserved` → `attaching` → `in-use`, and `detaching` → `available` on detach,
//! all derived on read.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{DateTime, Utc};

use crate::openstack::volume::protocol::*;
use crate::sim::Sim;
use crate::sim::http::{
    ApiError, ApiResult, CINDER_MAX, CINDER_MIN, Injected, Microversion, QueryPairs, Service, authenticate,
    json, parse_body, scoped,
};
use crate::sim::state::{TokenInfo, VolumeRec, World, after, new_id};

const S: Service = Service::Volume;

type P = Path<HashMap<String, String>>;

pub fn routes(prefix: &str) -> Router<Arc<Sim>> {
    let mut r = Router::new();
    if !prefix.contains('{') {
        r = r
            .route("/volume", get(versions))
            .route("/volume/", get(versions))
            .route(prefix, get(v3_versions))
            .route(&format!("{prefix}/"), get(v3_versions));
    }
    r.route(&format!("{prefix}/volumes"), get(list_volumes).post(create_volume))
        .route(&format!("{prefix}/volumes/detail"), get(list_volumes_detail))
        .route(&format!("{prefix}/volumes/{{id}}"), get(show_volume).put(update_volume).delete(delete_volume))
        .route(&format!("{prefix}/types"), get(list_types))
        .route(&format!("{prefix}/types/default"), get(default_type))
        .route(&format!("{prefix}/types/{{id}}"), get(show_type))
        .route(&format!("{prefix}/limits"), get(limits))
        .route(&format!("{prefix}/os-availability-zone"), get(availability_zones))
        .route(
            &format!("{prefix}/os-quota-sets/{{target}}"),
            get(show_quota).put(update_quota).delete(reset_quota),
        )
        .route(&format!("{prefix}/os-quota-sets/{{target}}/defaults"), get(quota_defaults))
}

/// Cinder's zones: the one its volumes are in (`nova`, Cinder's default
/// `storage_availability_zone`).
async fn availability_zones(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let zone = AvailabilityZone { name: "nova".into(), state: ZoneState { available: true } };
    Ok(json(StatusCode::OK, &AvailabilityZoneList { zones: vec![zone] }))
}

fn v3(sim: &Sim) -> serde_json::Value {
    serde_json::json!({
        "id": "v3.0", "status": "CURRENT", "version": CINDER_MAX.to_string(), "min_version": CINDER_MIN.to_string(),
        "updated": "2023-08-31T00:00:00Z",
        "links": [{"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
                  {"rel": "self", "href": sim.url("/volume/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}]
    })
}

async fn versions(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::MULTIPLE_CHOICES, &serde_json::json!({"versions": [v3(&sim)]}))
}

async fn v3_versions(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::OK, &serde_json::json!({"versions": [v3(&sim)]}))
}

fn mv(ext: Option<Extension<Microversion>>) -> Microversion {
    ext.map(|e| e.0).unwrap_or(CINDER_MIN)
}

fn id_of(p: &HashMap<String, String>, key: &str) -> String {
    p.get(key).cloned().unwrap_or_default()
}

fn visible(tok: &TokenInfo, v: &VolumeRec) -> bool {
    tok.is_admin() || tok.project_id.as_deref() == Some(&v.project_id)
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(S, format!("Volume {id} could not be found."))
}

fn type_id(w: &World, name: &str) -> Option<String> {
    w.seed.volume_types.iter().find(|t| t.name == name).map(|t| t.id.clone())
}

fn volume_view(sim: &Sim, w: &World, v: &VolumeRec, now: DateTime<Utc>, mv: Microversion) -> Volume {
    let status = v.status(now);
    let attachments = match (&v.attach, status) {
        (Some(a), "in-use") => vec![VolumeAttachment {
            id: v.id.clone(),
            attachment_id: a.attachment_id.clone(),
            volume_id: v.id.clone(),
            server_id: a.server_id.clone(),
            host_name: Some("sim-compute-1".into()),
            device: Some(a.device.clone()),
            attached_at: Some(a.in_use_at),
        }],
        _ => vec![],
    };
    Volume {
        id: v.id.clone(),
        name: v.name.clone(),
        status: status.to_string(),
        size: v.size,
        availability_zone: Some(v.availability_zone.clone()),
        created_at: v.created,
        updated_at: Some(v.updated(now)),
        attachments,
        metadata: v.metadata.clone(),
        volume_type: Some(v.volume_type.clone()),
        volume_type_id: mv.at_least(3, 63).then(|| type_id(w, &v.volume_type).unwrap_or_default()),
        bootable: if v.image.is_some() { "true" } else { "false" }.into(),
        volume_image_metadata: v.image.as_ref().map(|(id, name)| {
            BTreeMap::from([("image_id".to_string(), id.clone()), ("image_name".to_string(), name.clone())])
        }),
        encrypted: false,
        multiattach: false,
        description: v.description.clone(),
        user_id: Some(v.user_id.clone()),
        tenant_id: Some(v.project_id.clone()),
        snapshot_id: None,
        source_volid: None,
        replication_status: None,
        consistencygroup_id: None,
        migration_status: None,
        group_id: mv.at_least(3, 13).then(String::new).filter(|_| false),
        consumes_quota: mv.at_least(3, 65).then_some(true),
        links: vec![
            Link {
                rel: "self".into(),
                href: sim.url(&format!("/volume/v3/{}/volumes/{}", v.project_id, v.id)),
                kind: None,
            },
            Link {
                rel: "bookmark".into(),
                href: sim.url(&format!("/volume/{}/volumes/{}", v.project_id, v.id)),
                kind: None,
            },
        ],
    }
}

/// Cinder's `metadata` filter is a Python dict literal (`{'k': 'v'}`) or JSON.
fn parse_metadata_filter(s: &str) -> Result<BTreeMap<String, String>, ApiError> {
    let normalized = s.replace('\'', "\"");
    serde_json::from_str::<BTreeMap<String, String>>(&normalized)
        .map_err(|_| ApiError::bad_request(S, format!("Invalid filter metadata: {s}")))
}

async fn list_volumes(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    q: QueryPairs,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    list(&sim, &headers, &q, mv(v), false)
}

async fn list_volumes_detail(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    q: QueryPairs,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    list(&sim, &headers, &q, mv(v), true)
}

fn list(sim: &Sim, headers: &HeaderMap, q: &QueryPairs, mv: Microversion, detail: bool) -> ApiResult {
    let tok = authenticate(sim, headers, S)?;
    let project = scoped(&tok, S)?;
    let limit = q.limit(S, 1000, 1000)?;
    let metadata = match q.get("metadata") {
        Some(m) => Some(parse_metadata_filter(m)?),
        None => None,
    };
    let all_tenants = tok.is_admin() && q.flag("all_tenants");
    let now = Utc::now();
    let w = sim.world();
    let upper = match q.get("marker") {
        Some(m) => w
            .volumes
            .get(m)
            .map(|v| v.seq)
            .ok_or_else(|| ApiError::not_found(S, format!("Marker {m} could not be found.")))?,
        None => u64::MAX,
    };
    let mut out = Vec::new();
    for (_, id) in w.volume_order.range(..upper).rev() {
        let Some(v) = w.volumes.get(id) else { continue };
        if !(all_tenants || v.project_id == project)
            || q.get("name").is_some_and(|n| Some(n) != v.name.as_deref())
            || q.get("status").is_some_and(|s| s != v.status(now))
            || metadata.as_ref().is_some_and(|m| m.iter().any(|(k, val)| v.metadata.get(k) != Some(val)))
        {
            continue;
        }
        let view = volume_view(sim, &w, v, now, mv);
        out.push(if detail {
            serde_json::to_value(view).unwrap_or_default()
        } else {
            serde_json::json!({"id": view.id, "name": view.name, "links": view.links})
        });
        if out.len() >= limit {
            break;
        }
    }
    let count = (mv.at_least(3, 45) && q.flag("with_count"))
        .then(|| w.volumes.values().filter(|v| all_tenants || v.project_id == project).count());
    drop(w);
    let mut body = serde_json::json!({"volumes": out});
    if out.len() == limit && limit > 0 {
        let last = out.last().and_then(|v| v["id"].as_str()).unwrap_or_default().to_string();
        let path = if detail { "volumes/detail" } else { "volumes" };
        body["volumes_links"] = serde_json::json!([{"rel": "next",
            "href": sim.url(&format!("/volume/v3/{project}/{path}?limit={limit}&marker={last}"))}]);
    }
    if let Some(c) = count {
        body["count"] = serde_json::json!(c);
    }
    Ok(json(StatusCode::OK, &body))
}

async fn show_volume(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(p): P,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let id = id_of(&p, "id");
    let w = sim.world();
    let vol = w.volumes.get(&id).filter(|v| visible(&tok, v)).ok_or_else(|| not_found(&id))?;
    let body = VolumeBody { volume: volume_view(&sim, &w, vol, Utc::now(), mv(v)) };
    drop(w);
    Ok(json(StatusCode::OK, &body))
}

/// A volume type's name from its name or id; the default type when none is asked for. `None`:
/// no such type.
pub(crate) fn volume_type_name(w: &World, wanted: Option<&str>) -> Option<String> {
    match wanted {
        Some(t) => w.seed.volume_types.iter().find(|x| x.name == t || x.id == t).map(|x| x.name.clone()),
        None => Some(
            w.seed
                .volume_types
                .iter()
                .find(|x| x.is_default)
                .or(w.seed.volume_types.first())
                .map(|x| x.name.clone())
                .unwrap_or_else(|| "__DEFAULT__".into()),
        ),
    }
}

/// Cinder's message when one more volume of `size` GiB would exceed the project's quota (the
/// create API answers it as 413; Nova, making a boot volume, turns it into the server's fault).
pub(crate) fn over_volume_quota(w: &World, project: &str, size: u64) -> Option<String> {
    let q = w.quotas_of(project);
    let u = w.usage_of(project);
    if q.volumes >= 0 && u.volumes + 1 > q.volumes {
        return Some(format!(
            "VolumeLimitExceeded: Maximum number of volumes allowed ({}) exceeded for quota 'volumes'.",
            q.volumes
        ));
    }
    if q.gigabytes >= 0 && u.gigabytes + size as i64 > q.gigabytes {
        return Some(format!(
            "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested {}G, quota is {}G and {}G has been consumed.",
            size, q.gigabytes, u.gigabytes
        ));
    }
    None
}

fn over_limit(message: String) -> ApiError {
    ApiError::new(S, 413, message).kind("overLimit").retry_after("0")
}

async fn create_volume(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    v: Option<Extension<Microversion>>,
    injected: Option<Extension<Injected>>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let project = scoped(&tok, S)?;
    let req: VolumeCreateRequest = parse_body(S, &body)?;
    let c = req.volume;
    if c.size == 0 {
        return Err(ApiError::bad_request(
            S,
            "Invalid input received: 'size' must be an integer and greater than 0",
        ));
    }
    let injected = injected.map(|e| e.0).unwrap_or_default();
    let now = Utc::now();
    let mut w = sim.world();
    let vtype = volume_type_name(&w, c.volume_type.as_deref()).ok_or_else(|| {
        ApiError::not_found(
            S,
            format!(
                "Volume type with name {} could not be found.",
                c.volume_type.as_deref().unwrap_or_default()
            ),
        )
    })?;
    if let Some(msg) = over_volume_quota(&w, &project, c.size) {
        return Err(over_limit(msg));
    }
    let create_ms = w.timings.volume_create_ms;
    let seq = w.next_seq();
    let id = new_id();
    let rec = VolumeRec {
        seq,
        id: id.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        project_id: project.clone(),
        user_id: tok.user_id.clone(),
        size: c.size,
        volume_type: vtype,
        metadata: c.metadata.clone().unwrap_or_default(),
        availability_zone: c.availability_zone.clone().unwrap_or_else(|| "nova".into()),
        created: now,
        available_at: after(now, Duration::from_millis(create_ms)),
        create_fault: false,
        stuck: injected.stuck.then(|| "creating".to_string()),
        attach: None,
        detached_until: None,
        modified: now,
        image: None,
    };
    w.volumes.insert(id.clone(), rec);
    w.volume_order.insert(seq, id.clone());
    let u = w.usage_mut(&project);
    u.volumes += 1;
    u.gigabytes += c.size as i64;
    let body = VolumeBody { volume: volume_view(&sim, &w, &w.volumes[&id], now, mv(v)) };
    drop(w);
    Ok(json(StatusCode::ACCEPTED, &body))
}

async fn update_volume(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(p): P,
    v: Option<Extension<Microversion>>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let id = id_of(&p, "id");
    let req: serde_json::Value = parse_body(S, &body)?;
    let now = Utc::now();
    let mut w = sim.world();
    let vol = w.volumes.get_mut(&id).filter(|v| visible(&tok, v)).ok_or_else(|| not_found(&id))?;
    if let Some(n) = req["volume"]["name"].as_str() {
        vol.name = Some(n.to_string());
    }
    if let Some(d) = req["volume"]["description"].as_str() {
        vol.description = Some(d.to_string());
    }
    if let Some(m) = req["volume"]["metadata"].as_object() {
        vol.metadata = m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string()))).collect();
    }
    vol.modified = now;
    let body = VolumeBody { volume: volume_view(&sim, &w, &w.volumes[&id], now, mv(v)) };
    Ok(json(StatusCode::OK, &body))
}

async fn delete_volume(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(p): P) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let id = id_of(&p, "id");
    let mut w = sim.world();
    let vol = w.volumes.get(&id).filter(|v| visible(&tok, v)).ok_or_else(|| not_found(&id))?;
    let status = vol.status(Utc::now());
    if !matches!(status, "available" | "error" | "error_restoring" | "error_extending" | "error_managing") {
        return Err(ApiError::bad_request(
            S,
            "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer.",
        ));
    }
    w.delete_volume(&id);
    Ok(StatusCode::ACCEPTED.into_response())
}

fn type_json(t: &crate::sim::seed::SeedVolumeType) -> serde_json::Value {
    serde_json::to_value(VolumeType {
        id: t.id.clone(),
        name: t.name.clone(),
        description: None,
        is_public: true,
        access_is_public: true,
        extra_specs: BTreeMap::new(),
        qos_specs_id: None,
    })
    .unwrap_or_default()
}

async fn list_types(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let types: Vec<_> = w.seed.volume_types.iter().map(type_json).collect();
    Ok(json(StatusCode::OK, &serde_json::json!({"volume_types": types})))
}

async fn default_type(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let t = w
        .seed
        .volume_types
        .iter()
        .find(|t| t.is_default)
        .ok_or_else(|| ApiError::not_found(S, "Default volume type can not be found."))?;
    Ok(json(StatusCode::OK, &serde_json::json!({"volume_type": type_json(t)})))
}

async fn show_type(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(p): P) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let id = id_of(&p, "id");
    let w = sim.world();
    let t = w
        .seed
        .volume_types
        .iter()
        .find(|t| t.id == id || t.name == id)
        .ok_or_else(|| ApiError::not_found(S, format!("Volume type {id} could not be found.")))?;
    Ok(json(StatusCode::OK, &serde_json::json!({"volume_type": type_json(t)})))
}

async fn limits(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let project = scoped(&tok, S)?;
    let w = sim.world();
    let q = w.quotas_of(&project);
    let u = w.usage_of(&project);
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"limits": {"rate": [], "absolute": {
            "maxTotalVolumes": q.volumes, "maxTotalVolumeGigabytes": q.gigabytes,
            "maxTotalSnapshots": 10, "maxTotalBackups": 10, "maxTotalBackupGigabytes": 1000,
            "totalVolumesUsed": u.volumes, "totalGigabytesUsed": u.gigabytes,
            "totalSnapshotsUsed": 0, "totalBackupsUsed": 0, "totalBackupGigabytesUsed": 0}}}),
    ))
}

fn quota_target(tok: &TokenInfo, project: &str) -> Result<(), ApiError> {
    if tok.is_admin() || tok.project_id.as_deref() == Some(project) {
        Ok(())
    } else {
        Err(ApiError::forbidden(S, "Policy doesn't allow volume_extension:quotas:show to be performed."))
    }
}

fn quota_rows(w: &World, project: &str) -> Vec<(String, i64, i64)> {
    let q = w.quotas_of(project);
    let u = w.usage_of(project);
    let mut rows = vec![
        ("volumes".to_string(), q.volumes, u.volumes),
        ("gigabytes".to_string(), q.gigabytes, u.gigabytes),
        ("snapshots".to_string(), 10, 0),
        ("backups".to_string(), 10, 0),
        ("backup_gigabytes".to_string(), 1000, 0),
        ("per_volume_gigabytes".to_string(), -1, 0),
        ("groups".to_string(), 10, 0),
    ];
    for t in &w.seed.volume_types {
        rows.push((format!("volumes_{}", t.name), -1, 0));
        rows.push((format!("gigabytes_{}", t.name), -1, 0));
        rows.push((format!("snapshots_{}", t.name), -1, 0));
    }
    rows
}

async fn show_quota(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(p): P, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let target = id_of(&p, "target");
    quota_target(&tok, &target)?;
    let usage = q.flag("usage");
    let w = sim.world();
    let mut m = serde_json::Map::new();
    m.insert("id".into(), serde_json::json!(target));
    for (k, limit, used) in quota_rows(&w, &target) {
        let v = if usage {
            serde_json::to_value(QuotaUsage { in_use: used, limit, reserved: 0, allocated: 0 })
                .unwrap_or_default()
        } else {
            serde_json::json!(limit)
        };
        m.insert(k, v);
    }
    Ok(json(StatusCode::OK, &serde_json::json!({"quota_set": m})))
}

async fn quota_defaults(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(p): P) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let target = id_of(&p, "target");
    let d = crate::sim::seed::Quotas::default();
    let w = sim.world();
    let mut m = serde_json::Map::new();
    m.insert("id".into(), serde_json::json!(target));
    for (k, limit, _) in quota_rows(&w, "") {
        let limit = match k.as_str() {
            "volumes" => d.volumes,
            "gigabytes" => d.gigabytes,
            _ => limit,
        };
        m.insert(k, serde_json::json!(limit));
    }
    Ok(json(StatusCode::OK, &serde_json::json!({"quota_set": m})))
}

/// `DELETE os-quota-sets/{project}`: back to the defaults (200, no body, as Cinder answers).
async fn reset_quota(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(p): P) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() {
        return Err(ApiError::forbidden(
            S,
            "Policy doesn't allow volume_extension:quotas:delete to be performed.",
        ));
    }
    let target = id_of(&p, "target");
    let d = crate::sim::seed::Quotas::default();
    if let Some(proj) = sim.world().projects.get_mut(&target) {
        proj.quotas.volumes = d.volumes;
        proj.quotas.gigabytes = d.gigabytes;
    }
    Ok(StatusCode::OK.into_response())
}

async fn update_quota(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(p): P, body: Bytes) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() {
        return Err(ApiError::forbidden(
            S,
            "Policy doesn't allow volume_extension:quotas:update to be performed.",
        ));
    }
    let target = id_of(&p, "target");
    let req: QuotaSetBody = parse_body(S, &body)?;
    let mut w = sim.world();
    let proj = w.projects.get_mut(&target).ok_or_else(|| {
        ApiError::bad_request(S, format!("Invalid input received: Project {target} not found."))
    })?;
    if let Some(n) = req.quota_set.volumes {
        proj.quotas.volumes = n;
    }
    if let Some(n) = req.quota_set.gigabytes {
        proj.quotas.gigabytes = n;
    }
    let mut m = serde_json::Map::new();
    for (k, limit, _) in quota_rows(&w, &target) {
        m.insert(k, serde_json::json!(limit));
    }
    Ok(json(StatusCode::OK, &serde_json::json!({"quota_set": m})))
}
