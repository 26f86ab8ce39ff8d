//! The simulator's control plane: programmed faults, quotas, timings, per-endpoint call
//! counters, a summary of what exists, forced failures, and reset. Available in-process through
//! [`SimControl`] (tests, benches, the demo) and over HTTP under `/_sim/` (no auth), with the
//! same JSON shapes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::sim::faults::{BadRule, FaultRule, FaultStatus};
use crate::sim::http::json;
use crate::sim::seed::Quotas;
use crate::sim::state::{Timings, World};
use crate::sim::{Sim, compute};

/// Replaces id-like path segments (UUIDs, 32-hex ids, numbers) by `{id}`.
pub fn template_of(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            let hexish = seg.len() >= 32 && seg.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
            if hexish || (!seg.is_empty() && seg.chars().all(|c| c.is_ascii_digit())) { "{id}" } else { seg }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// One per-endpoint counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub service: String,
    pub method: String,
    /// The route template, e.g. `/compute/v2.1/servers/{id}`.
    pub path: String,
    pub status: u16,
    pub count: u64,
}

/// A change to a project's quotas: only the given fields change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QuotaPatch {
    pub instances: Option<i64>,
    pub cores: Option<i64>,
    pub ram: Option<i64>,
    pub ports: Option<i64>,
    pub volumes: Option<i64>,
    pub gigabytes: Option<i64>,
    pub networks: Option<i64>,
    pub floating_ips: Option<i64>,
}

/// What exists, per project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    pub projects: BTreeMap<String, ProjectResources>,
    /// Servers deleted but still remembered for `changes-since`.
    pub deleted_servers: usize,
    pub tokens: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectResources {
    pub name: String,
    /// Server count by status.
    pub servers: BTreeMap<String, usize>,
    /// Port count by status.
    pub ports: BTreeMap<String, usize>,
    /// Volume count by status.
    pub volumes: BTreeMap<String, usize>,
    /// Volumes attached (or attaching) to a server.
    pub attached_volumes: usize,
    pub quotas: Quotas,
    pub usage: crate::sim::state::Usage,
}

/// Keystone's contents: projects, users and direct role assignments (never a password).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IdentitySnapshot {
    pub projects: Vec<ProjectSummary>,
    pub users: Vec<UserSummary>,
    pub assignments: Vec<AssignmentSummary>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProjectSummary {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub description: String,
    pub enabled: bool,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserSummary {
    pub id: String,
    pub name: String,
    pub domain_id: String,
    pub enabled: bool,
    pub default_project_id: Option<String>,
    pub email: Option<String>,
    /// Whether the user can authenticate with a password (the password is not shown).
    pub has_password: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssignmentSummary {
    pub project_id: String,
    pub user_id: String,
    /// The role's name.
    pub role: String,
}

/// A control operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    BadRule(#[from] BadRule),
    #[error("no such {0}: {1}")]
    NotFound(&'static str, String),
    #[error("authentication failed for {0}")]
    Auth(String),
}

/// The in-process control API (cheap to clone).
#[derive(Clone)]
pub struct SimControl {
    pub(crate) sim: Arc<Sim>,
}

impl SimControl {
    /// Programs a fault; returns its id.
    pub fn add_fault(&self, rule: FaultRule) -> Result<u64, ControlError> {
        Ok(self.sim.faults.lock().unwrap_or_else(|e| e.into_inner()).add(rule)?)
    }

    pub fn faults(&self) -> Vec<FaultStatus> {
        self.sim.faults.lock().unwrap_or_else(|e| e.into_inner()).list()
    }

    pub fn remove_fault(&self, id: u64) -> bool {
        let mut f = self.sim.faults.lock().unwrap_or_else(|e| e.into_inner());
        let before = f.rules.len();
        f.rules.retain(|r| r.id != id);
        f.rules.len() != before
    }

    pub fn clear_faults(&self) {
        self.sim.faults.lock().unwrap_or_else(|e| e.into_inner()).rules.clear();
    }

    /// Changes a project's quotas (by id or name).
    pub fn set_quotas(&self, project: &str, patch: QuotaPatch) -> Result<Quotas, ControlError> {
        let mut w = self.sim.world();
        let id = project_id(&w, project).ok_or_else(|| ControlError::NotFound("project", project.into()))?;
        let p = w.projects.get_mut(&id).ok_or_else(|| ControlError::NotFound("project", project.into()))?;
        let q = &mut p.quotas;
        for (field, v) in [
            (&mut q.instances, patch.instances),
            (&mut q.cores, patch.cores),
            (&mut q.ram, patch.ram),
            (&mut q.ports, patch.ports),
            (&mut q.volumes, patch.volumes),
            (&mut q.gigabytes, patch.gigabytes),
            (&mut q.networks, patch.networks),
            (&mut q.floating_ips, patch.floating_ips),
        ] {
            if let Some(v) = v {
                *field = v;
            }
        }
        Ok(*q)
    }

    pub fn quotas(&self) -> BTreeMap<String, Quotas> {
        self.sim.world().projects.values().map(|p| (p.name.clone(), p.quotas)).collect()
    }

    pub fn timings(&self) -> Timings {
        self.sim.world().timings
    }

    /// New timings apply to what is created from now on (in every region, when called on the
    /// first region's control).
    pub fn set_timings(&self, t: Timings) {
        for s in self.sim.all_regions() {
            s.world().timings = t;
        }
    }

    /// The call counters, sorted by service, path, method, status.
    pub fn counters(&self) -> Vec<Counter> {
        let c = self.sim.counters.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Counter> = c
            .iter()
            .map(|((service, method, path, status), n)| Counter {
                service: service.to_string(),
                method: method.clone(),
                path: path.clone(),
                status: *status,
                count: *n,
            })
            .collect();
        v.sort_by(|a, b| {
            (&a.service, &a.path, &a.method, a.status).cmp(&(&b.service, &b.path, &b.method, b.status))
        });
        v
    }

    /// Calls matching a method and a path template (any status).
    pub fn count(&self, method: &str, path: &str) -> u64 {
        self.counters().iter().filter(|c| c.method == method && c.path == path).map(|c| c.count).sum()
    }

    /// Requests that carried `X-OpenStack-Request-Id: <id>` as their global request id.
    pub fn requests_with_global_id(&self, id: &str) -> u64 {
        self.sim.global_request_ids.lock().unwrap_or_else(|e| e.into_inner()).get(id).copied().unwrap_or(0)
    }

    /// Requests that carried a global request id, in all, and how many distinct ids.
    pub fn global_request_ids(&self) -> (u64, usize) {
        let ids = self.sim.global_request_ids.lock().unwrap_or_else(|e| e.into_inner());
        (ids.values().sum(), ids.len())
    }

    pub fn reset_counters(&self) {
        self.sim.counters.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub fn resources(&self) -> Resources {
        let now = Utc::now();
        let w = self.sim.world();
        let mut out = Resources { tokens: w.tokens.len(), ..Default::default() };
        for p in w.projects.values() {
            out.projects.insert(
                p.id.clone(),
                ProjectResources {
                    name: p.name.clone(),
                    quotas: p.quotas,
                    usage: w.usage_of(&p.id),
                    ..Default::default()
                },
            );
        }
        for s in w.servers.values() {
            if s.deleted.is_some() {
                out.deleted_servers += 1;
                continue;
            }
            let e = out.projects.entry(s.project_id.clone()).or_default();
            *e.servers.entry(s.view(now).status.to_string()).or_default() += 1;
        }
        for p in w.ports.values() {
            let st = w.port_status(p, now);
            let e = out.projects.entry(p.project_id.clone()).or_default();
            *e.ports.entry(st.to_string()).or_default() += 1;
        }
        for v in w.volumes.values() {
            let e = out.projects.entry(v.project_id.clone()).or_default();
            *e.volumes.entry(v.status(now).to_string()).or_default() += 1;
            if v.attach.is_some() {
                e.attached_volumes += 1;
            }
        }
        out
    }

    /// Keystone's projects, users and role assignments.
    pub fn identity(&self) -> IdentitySnapshot {
        let w = self.sim.world();
        IdentitySnapshot {
            projects: w
                .projects
                .values()
                .map(|p| ProjectSummary {
                    id: p.id.clone(),
                    name: p.name.clone(),
                    domain_id: p.domain_id.clone(),
                    description: p.description.clone(),
                    enabled: p.enabled,
                    tags: p.tags.clone(),
                })
                .collect(),
            users: w
                .users
                .values()
                .map(|u| UserSummary {
                    id: u.id.clone(),
                    name: u.name.clone(),
                    domain_id: u.domain_id.clone(),
                    enabled: u.enabled,
                    default_project_id: u.default_project_id.clone(),
                    email: u.email.clone(),
                    has_password: u.password.is_some(),
                })
                .collect(),
            assignments: w
                .assignments
                .iter()
                .map(|(p, u, r)| AssignmentSummary {
                    project_id: p.clone(),
                    user_id: u.clone(),
                    role: w.roles.iter().find(|x| &x.id == r).map(|x| x.name.clone()).unwrap_or_default(),
                })
                .collect(),
        }
    }

    /// Sends a server to `ERROR` now, with a fault message.
    pub fn fail_server(&self, id: &str, message: &str) -> Result<(), ControlError> {
        let now = Utc::now();
        let mut w = self.sim.world();
        let s = w.server_mut(id).ok_or_else(|| ControlError::NotFound("server", id.into()))?;
        s.fault = Some((500, message.to_string()));
        s.stuck = false;
        if s.boot_done > now {
            s.boot_done = now;
        }
        s.modified = now;
        Ok(())
    }

    /// Leaves a server in `BUILD` forever.
    pub fn stick_server(&self, id: &str) -> Result<(), ControlError> {
        let mut w = self.sim.world();
        let s = w.server_mut(id).ok_or_else(|| ControlError::NotFound("server", id.into()))?;
        s.stuck = true;
        Ok(())
    }

    /// Pins a volume's status (e.g. `attaching`, `error`); `None` releases it.
    pub fn stick_volume(&self, id: &str, status: Option<&str>) -> Result<(), ControlError> {
        let mut w = self.sim.world();
        let v = w.volumes.get_mut(id).ok_or_else(|| ControlError::NotFound("volume", id.into()))?;
        v.stuck = status.map(str::to_string);
        v.modified = Utc::now();
        Ok(())
    }

    /// Issues a token without HTTP (for benches): user and project by name.
    pub fn issue_token(&self, user: &str, password: &str, project: &str) -> Result<String, ControlError> {
        let mut w = self.sim.world();
        let uid = w
            .users
            .values()
            .find(|u| u.name == user && u.password.as_deref() == Some(password))
            .map(|u| u.id.clone())
            .ok_or_else(|| ControlError::Auth(user.into()))?;
        let pid = project_id(&w, project).ok_or_else(|| ControlError::NotFound("project", project.into()))?;
        crate::sim::identity::issue_token(&mut w, &uid, Some(&pid), vec!["password".into()])
            .map(|(t, _)| t)
            .map_err(|_| ControlError::Auth(user.into()))
    }

    /// Makes every issued token expired (the next call with one gets 401).
    pub fn expire_tokens(&self) {
        let past = Utc::now() - chrono::Duration::seconds(1);
        for t in self.sim.world().tokens.values_mut() {
            t.expires_at = past;
        }
    }

    /// Back to the seed: no servers, ports, volumes, tokens, faults or counters; timings kept.
    /// Back to the seed (every region, when called on the first region's control).
    pub fn reset(&self) {
        for s in self.sim.all_regions() {
            let mut w = s.world();
            let timings = w.timings;
            let seed = w.seed.clone();
            *w = World::new(seed, timings);
            drop(w);
            s.faults.lock().unwrap_or_else(|e| e.into_inner()).rules.clear();
            s.counters.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// Every Nova keypair: (user id, name, fingerprint).
    pub fn keypairs(&self) -> Vec<(String, String, String)> {
        let w = self.sim.world();
        w.keypairs.values().map(|k| (k.user_id.clone(), k.name.clone(), k.fingerprint.clone())).collect()
    }

    /// Renders a server as Nova would at the maximum microversion (for debugging and demos).
    pub fn server_json(&self, id: &str) -> Option<serde_json::Value> {
        let w = self.sim.world();
        let s = w.servers.get(id)?;
        serde_json::to_value(compute::server_view(&self.sim, &w, s, Utc::now(), crate::sim::http::NOVA_MAX))
            .ok()
    }
}

fn project_id(w: &World, project: &str) -> Option<String> {
    w.projects.values().find(|p| p.id == project || p.name == project).map(|p| p.id.clone())
}

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/_sim", get(summary))
        .route("/_sim/", get(summary))
        .route("/_sim/faults", get(list_faults).post(add_fault).delete(clear_faults))
        .route("/_sim/faults/{id}", delete(remove_fault))
        .route("/_sim/quotas", get(quotas))
        .route("/_sim/quotas/{project}", axum::routing::put(set_quotas).patch(set_quotas))
        .route("/_sim/timings", get(timings).put(set_timings))
        .route("/_sim/counters", get(counters).delete(reset_counters))
        .route("/_sim/resources", get(resources))
        .route("/_sim/identity", get(identity))
        .route("/_sim/reset", post(reset))
        .route("/_sim/servers/{id}/error", post(fail_server))
        .route("/_sim/servers/{id}/stuck", post(stick_server))
        .route("/_sim/volumes/{id}/stuck", post(stick_volume).delete(unstick_volume))
        .route("/_sim/tokens", post(issue_token))
        .route("/_sim/tokens/expire", post(expire_tokens))
}

fn ctl(sim: &Arc<Sim>) -> SimControl {
    SimControl { sim: sim.clone() }
}

fn err(status: StatusCode, e: impl std::fmt::Display) -> Response {
    json(status, &serde_json::json!({"error": e.to_string()}))
}

fn body<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, Box<Response>> {
    let parsed = if b.is_empty() { serde_json::from_str("{}") } else { serde_json::from_slice(b) };
    parsed.map_err(|e| Box::new(err(StatusCode::BAD_REQUEST, e)))
}

fn result<T: Serialize>(r: Result<T, ControlError>) -> Response {
    match r {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e @ ControlError::NotFound(..)) => err(StatusCode::NOT_FOUND, e),
        Err(e @ ControlError::Auth(_)) => err(StatusCode::UNAUTHORIZED, e),
        Err(e) => err(StatusCode::BAD_REQUEST, e),
    }
}

async fn summary(State(sim): State<Arc<Sim>>) -> Response {
    let c = ctl(&sim);
    json(
        StatusCode::OK,
        &serde_json::json!({"url": sim.base, "auth_url": sim.url("/identity"), "resources": c.resources(),
            "timings": c.timings(), "faults": c.faults()}),
    )
}

async fn list_faults(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::OK, &ctl(&sim).faults())
}

async fn add_fault(State(sim): State<Arc<Sim>>, b: Bytes) -> Response {
    match body::<FaultRule>(&b) {
        Ok(rule) => match ctl(&sim).add_fault(rule) {
            Ok(id) => json(StatusCode::CREATED, &serde_json::json!({"id": id})),
            Err(e) => err(StatusCode::BAD_REQUEST, e),
        },
        Err(r) => *r,
    }
}

async fn clear_faults(State(sim): State<Arc<Sim>>) -> Response {
    ctl(&sim).clear_faults();
    StatusCode::NO_CONTENT.into_response()
}

async fn remove_fault(State(sim): State<Arc<Sim>>, Path(id): Path<u64>) -> Response {
    if ctl(&sim).remove_fault(id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        err(StatusCode::NOT_FOUND, "no such fault")
    }
}

async fn quotas(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::OK, &ctl(&sim).quotas())
}

async fn set_quotas(State(sim): State<Arc<Sim>>, Path(project): Path<String>, b: Bytes) -> Response {
    match body::<QuotaPatch>(&b) {
        Ok(p) => result(ctl(&sim).set_quotas(&project, p)),
        Err(r) => *r,
    }
}

async fn timings(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::OK, &ctl(&sim).timings())
}

async fn set_timings(State(sim): State<Arc<Sim>>, b: Bytes) -> Response {
    // Fields not given keep their current value.
    let c = ctl(&sim);
    let mut current = serde_json::to_value(c.timings()).unwrap_or_default();
    let patch: serde_json::Value = match body(&b) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    if let (Some(cur), Some(p)) = (current.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            cur.insert(k.clone(), v.clone());
        }
    }
    match serde_json::from_value::<Timings>(current) {
        Ok(t) => {
            c.set_timings(t);
            json(StatusCode::OK, &t)
        }
        Err(e) => err(StatusCode::BAD_REQUEST, e),
    }
}

async fn counters(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::OK, &ctl(&sim).counters())
}

async fn reset_counters(State(sim): State<Arc<Sim>>) -> Response {
    ctl(&sim).reset_counters();
    StatusCode::NO_CONTENT.into_response()
}

async fn resources(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::OK, &ctl(&sim).resources())
}

async fn identity(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::OK, &ctl(&sim).identity())
}

async fn reset(State(sim): State<Arc<Sim>>) -> Response {
    ctl(&sim).reset();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FailBody {
    message: Option<String>,
}

async fn fail_server(State(sim): State<Arc<Sim>>, Path(id): Path<String>, b: Bytes) -> Response {
    match body::<FailBody>(&b) {
        Ok(f) => result(
            ctl(&sim)
                .fail_server(&id, f.message.as_deref().unwrap_or("No valid host was found. "))
                .map(|_| serde_json::json!({})),
        ),
        Err(r) => *r,
    }
}

async fn stick_server(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    result(ctl(&sim).stick_server(&id).map(|_| serde_json::json!({})))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StickBody {
    status: Option<String>,
}

async fn stick_volume(State(sim): State<Arc<Sim>>, Path(id): Path<String>, b: Bytes) -> Response {
    match body::<StickBody>(&b) {
        Ok(s) => result(
            ctl(&sim)
                .stick_volume(&id, Some(s.status.as_deref().unwrap_or("attaching")))
                .map(|_| serde_json::json!({})),
        ),
        Err(r) => *r,
    }
}

async fn unstick_volume(State(sim): State<Arc<Sim>>, Path(id): Path<String>) -> Response {
    result(ctl(&sim).stick_volume(&id, None).map(|_| serde_json::json!({})))
}

#[derive(Deserialize)]
struct TokenReq {
    user: String,
    password: String,
    project: String,
}

async fn issue_token(State(sim): State<Arc<Sim>>, b: Bytes) -> Response {
    match body::<TokenReq>(&b) {
        Ok(t) => result(
            ctl(&sim)
                .issue_token(&t.user, &t.password, &t.project)
                .map(|token| serde_json::json!({"token": token})),
        ),
        Err(r) => *r,
    }
}

async fn expire_tokens(State(sim): State<Arc<Sim>>) -> Response {
    ctl(&sim).expire_tokens();
    StatusCode::NO_CONTENT.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_replace_ids() {
        assert_eq!(
            template_of("/compute/v2.1/servers/9168b536-cd40-4630-b43f-b259807c6e87/tags"),
            "/compute/v2.1/servers/{id}/tags"
        );
        assert_eq!(
            template_of("/volume/v3/2a7dad41a028167a2c64e6bc150fb6cd/volumes"),
            "/volume/v3/{id}/volumes"
        );
        assert_eq!(template_of("/compute/v2.1/flavors/1"), "/compute/v2.1/flavors/{id}");
        assert_eq!(template_of("/compute/v2.1/flavors/m1.tiny"), "/compute/v2.1/flavors/m1.tiny");
    }
}
