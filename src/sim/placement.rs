//! Simulated Nova availability zones and server groups under `/compute/v2.1`, and where a new
//! server goes ([`World::place`]).
//!
//! Zones come from the seed (`availability_zones`: one compute host each, in scheduling order).
//! `GET /os-availability-zone` is everyone's summary (`hosts: null`); `/detail` adds each
//! host's services and the `internal` zone of the control services, and is admin-only, as
//! Nova's default policy has it (the CLI then falls back to the summary). A create naming a
//! zone that is not listed, or not available, is Nova's 400 "The requested availability zone
//! is not available".
//!
//! Server groups (`/os-server-groups`) belong to a project: list (the project's own, every
//! project's with `all_projects` for an admin; `limit` / `offset`), show and delete (another
//! project's group: Nova's policy 403), create (`policies: [one]` before 2.64, `policy` and
//! `rules` from 2.64, the `soft-*` policies from 2.15; answered 200 as Nova does; at most
//! [`SERVER_GROUP_QUOTA`] per project: 403 "Quota exceeded, too many server groups."). A
//! server created with the scheduler hint `group` becomes a member: like Nova's
//! `InstanceGroup.get_by_uuid`, the hint finds a group of any project; one that names no group
//! is Nova's 400 "Instance group X could not be found.", and a group with
//! [`SERVER_GROUP_MEMBER_QUOTA`] members a 403 "Quota exceeded, too many servers in group".
//! Members are listed only while their server is not deleted, as Nova filters deleted
//! instances out of a group's members: deleting a server takes it out of its group.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Router};
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::openstack::compute::protocol::{
    AvailabilityZone, AvailabilityZoneList, ServerGroup, ServerGroupBody, ServerGroupList, ZoneService,
    ZoneState,
};
use crate::sim::Sim;
use crate::sim::http::{
    ApiError, ApiResult, Microversion, NOVA_MIN, QueryPairs, Service, authenticate, json, scoped,
};
use crate::sim::state::{TokenInfo, World, new_id};

const S: Service = Service::Compute;

/// Nova's default `server_groups` quota (per project).
pub const SERVER_GROUP_QUOTA: usize = 10;
/// Nova's default `server_group_members` quota (per group).
pub const SERVER_GROUP_MEMBER_QUOTA: usize = 10;
/// The host of the control services (`nova-conductor`, `nova-scheduler`) in zone `internal`.
const CONTROLLER: &str = "sim-controller";
/// Nova's fault when the scheduler finds no host for a server.
pub const NO_VALID_HOST: &str = "No valid host was found. There are not enough hosts available.";

/// A Nova server group.
#[derive(Debug, Clone)]
pub struct ServerGroupRec {
    /// Creation order (lists are in it).
    pub seq: u64,
    pub id: String,
    pub name: String,
    pub project_id: String,
    pub user_id: String,
    /// `affinity`, `anti-affinity`, `soft-affinity`, `soft-anti-affinity`.
    pub policy: String,
    /// `max_server_per_host` (anti-affinity only, 2.64+).
    pub rules: BTreeMap<String, Value>,
    /// Every server created in the group, in order; shown only while not deleted.
    pub members: Vec<String>,
    pub created: DateTime<Utc>,
}

pub fn routes() -> Router<Arc<Sim>> {
    let v = "/compute/v2.1";
    Router::new()
        .route(&format!("{v}/os-availability-zone"), get(list_zones))
        .route(&format!("{v}/os-availability-zone/detail"), get(list_zones_detail))
        .route(&format!("{v}/os-server-groups"), get(list_groups).post(create_group))
        .route(&format!("{v}/os-server-groups/{{id}}"), get(show_group).delete(delete_group))
}

fn mv(ext: Option<Extension<Microversion>>) -> Microversion {
    ext.map(|e| e.0).unwrap_or(NOVA_MIN)
}

impl World {
    /// The compute host of a zone (the first seeded one for a zone the seed does not have).
    pub fn host_of_zone(&self, zone: &str) -> &str {
        let zones = &self.seed.availability_zones;
        zones.iter().find(|z| z.name == zone).or(zones.first()).map(|z| z.host.as_str()).unwrap_or("")
    }

    /// The members of a group whose servers are not deleted.
    pub fn live_members(&self, g: &ServerGroupRec) -> Vec<String> {
        g.members.iter().filter(|id| self.server(id).is_some()).cloned().collect()
    }

    /// The groups a server is a member of (Nova shows one, from 2.71).
    pub fn groups_of_server(&self, server_id: &str) -> Vec<String> {
        self.server_groups
            .values()
            .filter(|g| g.members.iter().any(|m| m == server_id))
            .map(|g| g.id.clone())
            .collect()
    }

    /// Nova's check of a create's `availability_zone`: listed and available.
    pub fn check_zone(&self, requested: Option<&str>) -> Result<(), ApiError> {
        let Some(zone) = requested else { return Ok(()) };
        if self.seed.availability_zones.iter().any(|z| z.name == zone && z.available) {
            Ok(())
        } else {
            Err(ApiError::bad_request(S, "The requested availability zone is not available"))
        }
    }

    /// The group a create's scheduler hints name (`group`: a UUID, or a list of them whose
    /// first counts), checked as Nova does: a UUID, an existing group, room for one more member.
    pub fn hinted_group(&self, hints: Option<&BTreeMap<String, Value>>) -> Result<Option<String>, ApiError> {
        let Some(hint) = hints.and_then(|h| h.get("group")) else { return Ok(None) };
        let id = match hint {
            Value::String(s) => s.clone(),
            Value::Array(a) => match a.first().and_then(Value::as_str) {
                Some(s) => s.to_string(),
                None => return Ok(None),
            },
            other => {
                return Err(ApiError::bad_request(
                    S,
                    format!(
                        "Invalid input for field/attribute group. Value: {other}. {other} is not valid under any of the given schemas"
                    ),
                ));
            }
        };
        if uuid::Uuid::parse_str(&id).is_err() {
            return Err(ApiError::bad_request(
                S,
                format!("Invalid input for field/attribute group. Value: {id}. '{id}' is not a 'uuid'"),
            ));
        }
        let g = self
            .server_groups
            .get(&id)
            .ok_or_else(|| ApiError::bad_request(S, format!("Instance group {id} could not be found.")))?;
        if self.live_members(g).len() >= SERVER_GROUP_MEMBER_QUOTA {
            return Err(ApiError::forbidden(S, "Quota exceeded, too many servers in group"));
        }
        Ok(Some(id))
    }

    /// Where the scheduler puts a new server: (zone, host), or `None` for "No valid host was
    /// found" (the server goes to ERROR). Candidates are the available zones (only the one
    /// asked for, if any), in seed order; an anti-affinity group keeps out of hosts holding
    /// `max_server_per_host` (default 1) of its members, an affinity group keeps to its
    /// members' host; the `soft-` policies only prefer.
    pub fn place(&self, requested: Option<&str>, group: Option<&str>) -> Option<(String, String)> {
        let candidates: Vec<(&str, &str)> = self
            .seed
            .availability_zones
            .iter()
            .filter(|z| z.available && requested.is_none_or(|r| r == z.name))
            .map(|z| (z.name.as_str(), z.host.as_str()))
            .collect();
        let mut chosen = candidates.clone();
        if let Some(g) = group.and_then(|g| self.server_groups.get(g)) {
            let hosts: Vec<&str> = self
                .live_members(g)
                .iter()
                .filter_map(|m| self.servers.get(m))
                .filter(|s| !s.availability_zone.is_empty())
                .map(|s| self.host_of_zone(&s.availability_zone))
                .collect();
            let max = g.rules.get("max_server_per_host").and_then(Value::as_u64).unwrap_or(1) as usize;
            let fits = |host: &str| match g.policy.trim_start_matches("soft-") {
                "anti-affinity" => hosts.iter().filter(|h| **h == host).count() < max,
                _ => hosts.is_empty() || hosts.contains(&host),
            };
            chosen.retain(|(_, h)| fits(h));
            if chosen.is_empty() && g.policy.starts_with("soft-") {
                chosen = candidates;
            }
        }
        chosen.first().map(|(z, h)| (z.to_string(), h.to_string()))
    }
}

fn zone_list(w: &World, detail: bool) -> AvailabilityZoneList {
    let updated = Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f").to_string();
    let service =
        |available: bool| ZoneService { available, active: true, updated_at: Some(updated.clone()) };
    let mut zones = Vec::new();
    if detail {
        let control = BTreeMap::from([
            ("nova-conductor".to_string(), service(true)),
            ("nova-scheduler".to_string(), service(true)),
        ]);
        zones.push(AvailabilityZone {
            name: "internal".into(),
            state: ZoneState { available: true },
            hosts: Some(BTreeMap::from([(CONTROLLER.to_string(), control)])),
        });
    }
    // Nova lists the available zones first, then those that are not.
    let (up, down): (Vec<_>, Vec<_>) = w.seed.availability_zones.iter().partition(|z| z.available);
    for z in up.into_iter().chain(down) {
        let hosts = (detail && z.available).then(|| {
            BTreeMap::from([(
                z.host.clone(),
                BTreeMap::from([("nova-compute".to_string(), service(z.available))]),
            )])
        });
        zones.push(AvailabilityZone {
            name: z.name.clone(),
            state: ZoneState { available: z.available },
            hosts,
        });
    }
    AvailabilityZoneList { zones }
}

async fn list_zones(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let w = sim.world();
    Ok(json(StatusCode::OK, &zone_list(&w, false)))
}

async fn list_zones_detail(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() {
        return Err(ApiError::forbidden(
            S,
            "Policy doesn't allow os_compute_api:os-availability-zone:detail to be performed.",
        ));
    }
    let w = sim.world();
    Ok(json(StatusCode::OK, &zone_list(&w, true)))
}

fn group_view(w: &World, g: &ServerGroupRec, mv: Microversion) -> ServerGroup {
    let v264 = mv.at_least(2, 64);
    ServerGroup {
        id: g.id.clone(),
        name: g.name.clone(),
        members: w.live_members(g),
        policies: (!v264).then(|| vec![g.policy.clone()]),
        metadata: (!v264).then(BTreeMap::new),
        policy: v264.then(|| g.policy.clone()),
        rules: v264.then(|| g.rules.clone()),
        project_id: mv.at_least(2, 13).then(|| g.project_id.clone()),
        user_id: mv.at_least(2, 13).then(|| g.user_id.clone()),
    }
}

fn group_not_found(id: &str) -> ApiError {
    ApiError::not_found(S, format!("Instance group {id} could not be found."))
}

/// The group, if the token may see it (its project's, or an admin's): else Nova's 404 / 403.
fn visible_group<'a>(
    w: &'a World,
    tok: &TokenInfo,
    id: &str,
    action: &str,
) -> Result<&'a ServerGroupRec, ApiError> {
    let g = w.server_groups.get(id).ok_or_else(|| group_not_found(id))?;
    if tok.is_admin() || tok.project_id.as_deref() == Some(g.project_id.as_str()) {
        Ok(g)
    } else {
        Err(ApiError::forbidden(
            S,
            format!("Policy doesn't allow os_compute_api:os-server-groups:{action} to be performed."),
        ))
    }
}

fn non_negative(q: &QueryPairs, key: &str) -> Result<Option<usize>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
            ApiError::bad_request(
                S,
                format!(
                    "Invalid input for query parameters {key}. Value: {v}. '{v}' does not match '^[0-9]*$'"
                ),
            )
        }),
    }
}

async fn list_groups(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    q: QueryPairs,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let project = scoped(&tok, S)?;
    let mv = mv(v);
    let limit = non_negative(&q, "limit")?.unwrap_or(1000).min(1000);
    let offset = non_negative(&q, "offset")?.unwrap_or(0);
    let all = tok.is_admin() && q.get("all_projects").is_some();
    let w = sim.world();
    let mut groups: Vec<&ServerGroupRec> =
        w.server_groups.values().filter(|g| all || g.project_id == project).collect();
    groups.sort_by_key(|g| g.seq);
    let page: Vec<ServerGroup> =
        groups.into_iter().skip(offset).take(limit).map(|g| group_view(&w, g, mv)).collect();
    Ok(json(StatusCode::OK, &ServerGroupList { server_groups: page }))
}

async fn show_group(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    v: Option<Extension<Microversion>>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let g = visible_group(&w, &tok, &id, "show")?;
    Ok(json(StatusCode::OK, &ServerGroupBody { server_group: group_view(&w, g, mv(v)) }))
}

async fn delete_group(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let mut w = sim.world();
    visible_group(&w, &tok, &id, "delete")?;
    w.server_groups.remove(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn invalid(field: &str, value: &Value, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(S, format!("Invalid input for field/attribute {field}. Value: {value}. {why}"))
}

/// The policy and rules of a create body, validated as Nova's schema for the microversion.
fn policy_of(
    g: &serde_json::Map<String, Value>,
    mv: Microversion,
) -> Result<(String, BTreeMap<String, Value>), ApiError> {
    let mut allowed = vec!["anti-affinity", "affinity"];
    if mv.at_least(2, 15) {
        allowed.extend(["soft-anti-affinity", "soft-affinity"]);
    }
    let known: &[&str] =
        if mv.at_least(2, 64) { &["name", "policy", "rules"] } else { &["name", "policies"] };
    if let Some(extra) = g.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(invalid(
            "server_group",
            &Value::Object(g.clone()),
            format!("Additional properties are not allowed ('{extra}' was unexpected)"),
        ));
    }
    let one_of = |p: &Value| match p.as_str() {
        Some(s) if allowed.contains(&s) => Ok(s.to_string()),
        _ => Err(invalid("policy", p, format!("{p} is not one of {allowed:?}"))),
    };
    if !mv.at_least(2, 64) {
        let policies = g.get("policies").ok_or_else(|| {
            invalid("server_group", &Value::Object(g.clone()), "'policies' is a required property")
        })?;
        return match policies.as_array().map(Vec::as_slice) {
            Some([p]) => Ok((one_of(p)?, BTreeMap::new())),
            _ => Err(invalid("policies", policies, "must hold exactly one policy")),
        };
    }
    let policy = g.get("policy").ok_or_else(|| {
        invalid("server_group", &Value::Object(g.clone()), "'policy' is a required property")
    })?;
    let policy = one_of(policy)?;
    let mut rules = BTreeMap::new();
    if let Some(r) = g.get("rules") {
        let obj = r.as_object().ok_or_else(|| invalid("rules", r, format!("{r} is not of type 'object'")))?;
        for (k, v) in obj {
            if k != "max_server_per_host" {
                return Err(invalid(
                    "rules",
                    r,
                    format!("Additional properties are not allowed ('{k}' was unexpected)"),
                ));
            }
            if v.as_u64().is_none_or(|n| n < 1) {
                return Err(invalid("max_server_per_host", v, "is not a positive integer"));
            }
            rules.insert(k.clone(), v.clone());
        }
    }
    if policy != "anti-affinity" && !rules.is_empty() {
        return Err(ApiError::bad_request(S, "Only anti-affinity policy supports rules."));
    }
    Ok((policy, rules))
}

async fn create_group(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    v: Option<Extension<Microversion>>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let project = scoped(&tok, S)?;
    let mv = mv(v);
    let raw: Value = crate::sim::http::parse_body(S, &body)?;
    let g = raw
        .get("server_group")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("server_group", &raw, "'server_group' is a required property"))?;
    let name = match g.get("name") {
        Some(Value::String(n)) if !n.is_empty() && n.len() <= 255 && n.trim() == n => n.clone(),
        Some(n) => {
            return Err(invalid(
                "name",
                n,
                "not a valid name (1-255 characters, no leading or trailing spaces)",
            ));
        }
        None => {
            return Err(invalid("server_group", &Value::Object(g.clone()), "'name' is a required property"));
        }
    };
    let (policy, rules) = policy_of(g, mv)?;
    let mut w = sim.world();
    if w.server_groups.values().filter(|g| g.project_id == project).count() >= SERVER_GROUP_QUOTA {
        return Err(ApiError::forbidden(S, "Quota exceeded, too many server groups."));
    }
    let rec = ServerGroupRec {
        seq: w.next_seq(),
        id: new_id(),
        name,
        project_id: project,
        user_id: tok.user_id.clone(),
        policy,
        rules,
        members: Vec::new(),
        created: Utc::now(),
    };
    let view = group_view(&w, &rec, mv);
    w.server_groups.insert(rec.id.clone(), rec);
    Ok(json(StatusCode::OK, &ServerGroupBody { server_group: view }))
}
