//! Simulated Keystone v3 under `/identity`: version discovery, password (and token) auth with
//! project or unscoped tokens, token validation and revocation, the service catalog, and
//! read-only projects, users and domains.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::get;
use chrono::Utc;

use crate::openstack::identity::protocol::*;
use crate::sim::Sim;
use crate::sim::http::{ApiError, ApiResult, QueryPairs, Service, authenticate, json, parse_body};
use crate::sim::state::{TokenInfo, World, new_hex_id};

const S: Service = Service::Identity;

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/identity", get(versions))
        .route("/identity/", get(versions))
        .route("/identity/v3", get(version))
        .route("/identity/v3/", get(version))
        .route("/identity/v3/auth/tokens", get(validate).head(validate).post(issue).delete(revoke))
        .route("/identity/v3/auth/catalog", get(auth_catalog))
        .route("/identity/v3/auth/projects", get(auth_projects))
        .route("/identity/v3/projects", get(list_projects))
        .route("/identity/v3/projects/{id}", get(show_project))
        .route("/identity/v3/users", get(list_users))
        .route("/identity/v3/users/{id}", get(show_user))
        .route("/identity/v3/users/{id}/projects", get(user_projects))
        .route("/identity/v3/domains", get(list_domains))
        .route("/identity/v3/domains/{id}", get(show_domain))
}

fn v3(sim: &Sim) -> Version {
    Version {
        id: "v3.14".into(),
        status: "stable".into(),
        updated: "2020-04-07T00:00:00Z".into(),
        links: vec![Link { rel: "self".into(), href: sim.url("/identity/v3/"), kind: None }],
        media_types: vec![MediaType {
            base: "application/json".into(),
            kind: "application/vnd.openstack.identity-v3+json".into(),
        }],
    }
}

async fn versions(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::MULTIPLE_CHOICES, &VersionList { versions: VersionValues { values: vec![v3(&sim)] } })
}

async fn version(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::OK, &VersionBody { version: v3(&sim) })
}

/// The catalog: every service, public and internal, region `RegionOne`.
pub(crate) fn catalog(sim: &Sim) -> Vec<CatalogEntry> {
    let services: [(&str, &str, &str, &str); 6] = [
        ("a1b2c3d4e5f60718293a4b5c6d7e8f90", "keystone", "identity", "/identity"),
        ("b2c3d4e5f60718293a4b5c6d7e8f90a1", "nova", "compute", "/compute/v2.1"),
        ("c3d4e5f60718293a4b5c6d7e8f90a1b2", "glance", "image", "/image"),
        ("d4e5f60718293a4b5c6d7e8f90a1b2c3", "neutron", "network", "/networking"),
        ("e5f60718293a4b5c6d7e8f90a1b2c3d4", "cinderv3", "volumev3", "/volume/v3"),
        ("f60718293a4b5c6d7e8f90a1b2c3d4e5", "cinder", "block-storage", "/volume/v3"),
    ];
    services
        .iter()
        .map(|(id, name, kind, path)| CatalogEntry {
            id: id.to_string(),
            name: name.to_string(),
            service_type: kind.to_string(),
            endpoints: ["public", "internal"]
                .iter()
                .map(|iface| Endpoint {
                    id: format!("{}{}", &id[..24], if *iface == "public" { "00000001" } else { "00000002" }),
                    interface: iface.to_string(),
                    region: Some("RegionOne".into()),
                    region_id: Some("RegionOne".into()),
                    url: sim.url(path),
                })
                .collect(),
        })
        .collect()
}

fn domain_name(w: &World, id: &str) -> String {
    w.seed.domains.iter().find(|d| d.id == id).map(|d| d.name.clone()).unwrap_or_else(|| id.to_string())
}

fn find_domain_id(w: &World, d: &DomainRef) -> Option<String> {
    w.seed
        .domains
        .iter()
        .find(|x| d.id.as_deref() == Some(&x.id) || (d.id.is_none() && d.name.as_deref() == Some(&x.name)))
        .map(|x| x.id.clone())
}

/// Issues a token in the world: used by the API and by the in-process control.
pub(crate) fn issue_token(
    w: &mut World,
    user_id: &str,
    project_id: Option<&str>,
    methods: Vec<String>,
) -> Result<(String, TokenInfo), ApiError> {
    let user = w.seed.users.iter().find(|u| u.id == user_id).ok_or_else(|| ApiError::unauthorized(S))?;
    let roles = match project_id {
        Some(pid) => {
            let name =
                w.projects.get(pid).map(|p| p.name.clone()).ok_or_else(|| ApiError::unauthorized(S))?;
            let roles = user.roles.get(&name).cloned().unwrap_or_default();
            if roles.is_empty() {
                return Err(ApiError::unauthorized(S)
                    .kind("Unauthorized")
                    .with_message(format!("User {} has no access to project {pid}", user.id)));
            }
            roles
        }
        None => Vec::new(),
    };
    let now = Utc::now();
    let info = TokenInfo {
        user_id: user.id.clone(),
        project_id: project_id.map(str::to_string),
        roles,
        issued_at: now,
        expires_at: now + chrono::Duration::seconds(w.timings.token_lifetime_s as i64),
        audit_id: new_hex_id()[..22].to_string(),
        methods,
    };
    let token = format!("gAAAAAB{}{}{}", new_hex_id(), new_hex_id(), new_hex_id());
    // Expired tokens are forgotten once they are a day old, so the map does not grow forever.
    if w.tokens.len() > 10_000 {
        let cutoff = now - chrono::Duration::days(1);
        w.tokens.retain(|_, t| t.expires_at > cutoff);
    }
    w.tokens.insert(token.clone(), info.clone());
    Ok((token, info))
}

impl ApiError {
    pub(crate) fn with_message(mut self, m: String) -> ApiError {
        self.message = m;
        self
    }
}

fn token_body(sim: &Sim, w: &World, t: &TokenInfo, with_catalog: bool) -> TokenResponse {
    let user = w.seed.users.iter().find(|u| u.id == t.user_id);
    let project = t.project_id.as_ref().and_then(|p| w.projects.get(p));
    TokenResponse {
        token: Token {
            methods: t.methods.clone(),
            user: TokenUser {
                id: t.user_id.clone(),
                name: user.map(|u| u.name.clone()).unwrap_or_default(),
                domain: Domain {
                    id: user.map(|u| u.domain_id.clone()).unwrap_or_default(),
                    name: user.map(|u| domain_name(w, &u.domain_id)).unwrap_or_default(),
                },
                password_expires_at: None,
            },
            audit_ids: vec![t.audit_id.clone()],
            expires_at: t.expires_at,
            issued_at: t.issued_at,
            project: project.map(|p| TokenProject {
                id: p.id.clone(),
                name: p.name.clone(),
                domain: Domain { id: p.domain_id.clone(), name: domain_name(w, &p.domain_id) },
            }),
            is_domain: project.map(|_| false),
            roles: t
                .roles
                .iter()
                .map(|r| Role {
                    id: w.seed.roles.iter().find(|x| &x.name == r).map(|x| x.id.clone()).unwrap_or_default(),
                    name: r.clone(),
                })
                .collect(),
            catalog: (with_catalog && project.is_some()).then(|| catalog(sim)),
        },
    }
}

async fn issue(State(sim): State<Arc<Sim>>, q: QueryPairs, body: Bytes) -> ApiResult {
    let req: AuthRequest = parse_body(S, &body)?;
    let mut w = sim.world();
    let methods = req.auth.identity.methods.clone();
    let user_id = if let Some(pw) = &req.auth.identity.password {
        let u = &pw.user;
        let found = w.seed.users.iter().find(|x| match (&u.id, &u.name, &u.domain) {
            (Some(id), _, _) => &x.id == id,
            (None, Some(name), Some(d)) => {
                &x.name == name && find_domain_id(&w, d).as_deref() == Some(&x.domain_id)
            }
            (None, Some(name), None) => &x.name == name && x.domain_id == "default",
            _ => false,
        });
        match found {
            Some(x) if x.password == u.password => x.id.clone(),
            _ => return Err(ApiError::unauthorized(S)),
        }
    } else if let Some(t) = &req.auth.identity.token {
        let info = w
            .tokens
            .get(&t.id)
            .filter(|i| i.expires_at > Utc::now())
            .ok_or_else(|| ApiError::unauthorized(S))?;
        info.user_id.clone()
    } else {
        return Err(ApiError::bad_request(S, "Expecting to find identity in auth."));
    };
    let project_id = match &req.auth.scope {
        None | Some(Scope::Unscoped(_)) => None,
        Some(Scope::Scoped(target)) => match &target.project {
            Some(p) => {
                let found = w.projects.values().find(|x| match (&p.id, &p.name, &p.domain) {
                    (Some(id), _, _) => &x.id == id,
                    (None, Some(name), Some(d)) => {
                        &x.name == name && find_domain_id(&w, d).as_deref() == Some(&x.domain_id)
                    }
                    _ => false,
                });
                Some(found.map(|x| x.id.clone()).ok_or_else(|| ApiError::unauthorized(S))?)
            }
            None => return Err(ApiError::new(S, 400, "Only project scope is supported by the simulator.")),
        },
    };
    let (token, info) = issue_token(&mut w, &user_id, project_id.as_deref(), methods)?;
    let body = token_body(&sim, &w, &info, !q.0.iter().any(|(k, _)| k == "nocatalog"));
    drop(w);
    let mut resp = json(StatusCode::CREATED, &body);
    if let Ok(v) = HeaderValue::from_str(&token) {
        resp.headers_mut().insert("x-subject-token", v);
    }
    Ok(resp)
}

async fn validate(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let subject = headers.get("x-subject-token").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let info = sim.token(&subject).ok_or_else(|| {
        ApiError::not_found(S, format!("Could not find token: {subject}.")).kind("Not Found")
    })?;
    let w = sim.world();
    let body = token_body(&sim, &w, &info, !q.0.iter().any(|(k, _)| k == "nocatalog"));
    drop(w);
    let mut resp = json(StatusCode::OK, &body);
    if let Ok(v) = HeaderValue::from_str(&subject) {
        resp.headers_mut().insert("x-subject-token", v);
    }
    Ok(resp)
}

async fn revoke(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let subject = headers.get("x-subject-token").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let removed = sim.world().tokens.remove(&subject);
    match removed {
        Some(_) => Ok(axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT)),
        None => Err(ApiError::not_found(S, format!("Could not find token: {subject}.")).kind("Not Found")),
    }
}

async fn auth_catalog(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"catalog": catalog(&sim), "links": {"self": sim.url("/identity/v3/auth/catalog")}}),
    ))
}

fn project_view(sim: &Sim, p: &crate::sim::state::ProjectRec) -> Project {
    Project {
        id: p.id.clone(),
        name: p.name.clone(),
        domain_id: p.domain_id.clone(),
        description: String::new(),
        enabled: true,
        is_domain: false,
        parent_id: Some(p.domain_id.clone()),
        tags: vec![],
        options: Default::default(),
        links: Links { self_: sim.url(&format!("/identity/v3/projects/{}", p.id)), ..Default::default() },
    }
}

fn user_project_ids(w: &World, user_id: &str) -> Vec<String> {
    let Some(u) = w.seed.users.iter().find(|u| u.id == user_id) else { return vec![] };
    w.projects
        .values()
        .filter(|p| u.roles.get(&p.name).is_some_and(|r| !r.is_empty()))
        .map(|p| p.id.clone())
        .collect()
}

fn project_list(sim: &Sim, w: &World, ids: &[String], name: Option<&str>, path: &str) -> Response {
    let projects = w
        .projects
        .values()
        .filter(|p| ids.contains(&p.id) && name.is_none_or(|n| n == p.name))
        .map(|p| project_view(sim, p))
        .collect();
    json(
        StatusCode::OK,
        &ProjectList { projects, links: Links { self_: sim.url(path), ..Default::default() } },
    )
}

fn policy_denied(action: &str) -> ApiError {
    ApiError::forbidden(S, format!("You are not authorized to perform the requested action: {action}."))
        .kind("Forbidden")
}

async fn auth_projects(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let ids = user_project_ids(&w, &tok.user_id);
    Ok(project_list(&sim, &w, &ids, None, "/identity/v3/auth/projects"))
}

async fn list_projects(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() {
        return Err(policy_denied("identity:list_projects"));
    }
    let w = sim.world();
    let ids: Vec<String> = w.projects.keys().cloned().collect();
    Ok(project_list(&sim, &w, &ids, q.get("name"), "/identity/v3/projects"))
}

async fn show_project(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let p = w.projects.get(&id);
    match p {
        Some(p) if tok.is_admin() || tok.project_id.as_deref() == Some(&p.id) => {
            Ok(json(StatusCode::OK, &ProjectBody { project: project_view(&sim, p) }))
        }
        Some(_) => Err(policy_denied("identity:get_project")),
        None if tok.is_admin() => {
            Err(ApiError::not_found(S, format!("Could not find project: {id}.")).kind("Not Found"))
        }
        None => Err(policy_denied("identity:get_project")),
    }
}

fn user_view(sim: &Sim, u: &crate::sim::seed::SeedUser) -> User {
    User {
        id: u.id.clone(),
        name: u.name.clone(),
        domain_id: u.domain_id.clone(),
        enabled: true,
        default_project_id: None,
        password_expires_at: None,
        options: Default::default(),
        links: Links { self_: sim.url(&format!("/identity/v3/users/{}", u.id)), ..Default::default() },
    }
}

async fn list_users(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() {
        return Err(policy_denied("identity:list_users"));
    }
    let w = sim.world();
    let users = w
        .seed
        .users
        .iter()
        .filter(|u| q.get("name").is_none_or(|n| n == u.name))
        .map(|u| user_view(&sim, u))
        .collect();
    Ok(json(
        StatusCode::OK,
        &UserList { users, links: Links { self_: sim.url("/identity/v3/users"), ..Default::default() } },
    ))
}

async fn show_user(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() && tok.user_id != id {
        return Err(policy_denied("identity:get_user"));
    }
    let w = sim.world();
    let u = w
        .seed
        .users
        .iter()
        .find(|u| u.id == id)
        .ok_or_else(|| ApiError::not_found(S, format!("Could not find user: {id}.")).kind("Not Found"))?;
    Ok(json(StatusCode::OK, &serde_json::json!({"user": user_view(&sim, u)})))
}

async fn user_projects(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() && tok.user_id != id {
        return Err(policy_denied("identity:list_user_projects"));
    }
    let w = sim.world();
    let ids = user_project_ids(&w, &id);
    Ok(project_list(&sim, &w, &ids, None, &format!("/identity/v3/users/{id}/projects")))
}

fn domain_json(sim: &Sim, d: &crate::sim::seed::SeedDomain) -> serde_json::Value {
    serde_json::json!({"id": d.id, "name": d.name, "description": "", "enabled": true, "tags": [], "options": {},
        "links": {"self": sim.url(&format!("/identity/v3/domains/{}", d.id))}})
}

async fn list_domains(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() {
        return Err(policy_denied("identity:list_domains"));
    }
    let w = sim.world();
    let domains: Vec<_> = w.seed.domains.iter().map(|d| domain_json(&sim, d)).collect();
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"domains": domains, "links": {"self": sim.url("/identity/v3/domains")}}),
    ))
}

async fn show_domain(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let d =
        w.seed.domains.iter().find(|d| d.id == id).ok_or_else(|| {
            ApiError::not_found(S, format!("Could not find domain: {id}.")).kind("Not Found")
        })?;
    Ok(json(StatusCode::OK, &serde_json::json!({"domain": domain_json(&sim, d)})))
}
