//! Simulated Keystone v3 under `/identity`: version discovery, password (and token) auth with
//! project or unscoped tokens, token validation and revocation, the service catalog, and the
//! admin API tenant onboarding uses: domains, projects (with tags and the tags sub-API), users,
//! roles, and role assignments on projects.
//!
//! It answers as Keystone 30 was seen to (docs/simulator.md lists the differences): only a token
//! carrying the `admin` role may manage identities (anyone else gets Keystone's 403 naming the
//! policy rule); names are unique per domain compared case-insensitively (409 with Keystone's
//! wording); tag filters are exact; roles imply roles as Keystone's bootstrap sets them up
//! (`admin` → `manager` → `member` → `reader`), so a token shows the implied ones too. Disabling
//! or deleting a project or a user, or removing a role assignment, revokes the tokens it
//! carried, as Keystone's revocation events do.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use chrono::Utc;

use crate::openstack::identity::protocol::*;
use crate::sim::Sim;
use crate::sim::http::{ApiError, ApiResult, QueryPairs, Service, authenticate, json, parse_body};
use crate::sim::seed::Quotas;
use crate::sim::state::{AppCredRec, DomainRec, ProjectRec, TokenInfo, UserRec, World, new_hex_id};

const S: Service = Service::Identity;

/// Keystone's bootstrap role implications: a role on the left brings the one on the right.
const IMPLIES: [(&str, &str); 3] = [("admin", "manager"), ("manager", "member"), ("member", "reader")];

/// The domain a project or user goes to when the request names none (`default_domain_id`).
const DEFAULT_DOMAIN: &str = "default";

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/identity", get(versions))
        .route("/identity/", get(versions))
        .route("/identity/v3", get(version))
        .route("/identity/v3/", get(version))
        .route("/identity/v3/auth/tokens", get(validate).head(validate).post(issue).delete(revoke))
        .route("/identity/v3/auth/catalog", get(auth_catalog))
        .route("/identity/v3/auth/projects", get(auth_projects))
        .route("/identity/v3/projects", get(list_projects).post(create_project))
        .route("/identity/v3/projects/{id}", get(show_project).patch(update_project).delete(delete_project))
        .route("/identity/v3/projects/{id}/tags", get(get_tags).put(replace_tags).delete(clear_tags))
        .route(
            "/identity/v3/projects/{id}/tags/{tag}",
            put(add_tag).get(check_tag).head(check_tag).delete(remove_tag),
        )
        .route("/identity/v3/projects/{id}/users/{user_id}/roles", get(list_grants))
        .route(
            "/identity/v3/projects/{id}/users/{user_id}/roles/{role_id}",
            put(create_grant).get(check_grant).head(check_grant).delete(revoke_grant),
        )
        .route("/identity/v3/role_assignments", get(list_role_assignments))
        .route("/identity/v3/roles", get(list_roles))
        .route("/identity/v3/roles/{id}", get(show_role))
        .route("/identity/v3/users", get(list_users).post(create_user))
        .route("/identity/v3/users/{id}", get(show_user).patch(update_user).delete(delete_user))
        .route("/identity/v3/users/{id}/projects", get(user_projects))
        .route("/identity/v3/users/{id}/application_credentials", get(list_app_creds).post(create_app_cred))
        .route(
            "/identity/v3/users/{id}/application_credentials/{cred_id}",
            get(show_app_cred).delete(delete_app_cred),
        )
        .route("/identity/v3/regions", get(list_regions))
        .route("/identity/v3/regions/{id}", get(show_region))
        .route("/identity/v3/domains", get(list_domains).post(create_domain))
        .route("/identity/v3/domains/{id}", get(show_domain).patch(update_domain).delete(delete_domain))
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

/// A region as Keystone shows it (`GET /v3/regions`).
fn region_view(sim: &Sim, id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "description": "",
        "parent_region_id": null,
        "links": {"self": sim.url(&format!("/identity/v3/regions/{id}"))},
    })
}

async fn list_regions(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    let regions: Vec<serde_json::Value> = sim.all_regions().map(|r| region_view(&sim, &r.region)).collect();
    let body = serde_json::json!({
        "regions": regions,
        "links": {"self": sim.url("/identity/v3/regions"), "previous": null, "next": null},
    });
    Ok(json(StatusCode::OK, &body))
}

async fn show_region(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    authenticate(&sim, &headers, S)?;
    if !sim.all_regions().any(|r| r.region == id) {
        return Err(not_found("region", &id));
    }
    Ok(json(StatusCode::OK, &serde_json::json!({"region": region_view(&sim, &id)})))
}

async fn versions(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::MULTIPLE_CHOICES, &VersionList { versions: VersionValues { values: vec![v3(&sim)] } })
}

async fn version(State(sim): State<Arc<Sim>>) -> Response {
    json(StatusCode::OK, &VersionBody { version: v3(&sim) })
}

/// The catalog: every service, public and internal, in each region (`RegionOne` at the root
/// paths, `RegionTwo` under `/RegionTwo/`); Keystone is one, listed in every region at its one
/// URL, as a multi-region cloud registers it.
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
            endpoints: sim
                .all_regions()
                .enumerate()
                .flat_map(|(n, region)| {
                    let url = if *kind == "identity" { sim.url(path) } else { region.url(path) };
                    ["public", "internal"].into_iter().enumerate().map(move |(i, iface)| Endpoint {
                        id: format!("{}{:08}", &id[..24], 2 * n + i + 1),
                        interface: iface.to_string(),
                        region: Some(region.region.clone()),
                        region_id: Some(region.region.clone()),
                        url: url.clone(),
                    })
                })
                .collect(),
        })
        .collect()
}

fn domain_name(w: &World, id: &str) -> String {
    w.domains.get(id).map(|d| d.name.clone()).unwrap_or_else(|| id.to_string())
}

fn find_domain_id(w: &World, d: &DomainRef) -> Option<String> {
    match (&d.id, &d.name) {
        (Some(id), _) => w.domains.get(id).map(|x| x.id.clone()),
        (None, Some(name)) => {
            w.domains.values().find(|x| x.name.eq_ignore_ascii_case(name)).map(|x| x.id.clone())
        }
        (None, None) => None,
    }
}

fn role_name(w: &World, id: &str) -> Option<String> {
    w.roles.iter().find(|r| r.id == id).map(|r| r.name.clone())
}

fn role_id(w: &World, name: &str) -> Option<String> {
    w.roles.iter().find(|r| r.name == name).map(|r| r.id.clone())
}

/// The role ids a user holds directly on a project.
fn direct_roles(w: &World, project: &str, user: &str) -> Vec<String> {
    w.assignments.iter().filter(|(p, u, _)| p == project && u == user).map(|(_, _, r)| r.clone()).collect()
}

/// Direct roles, then the ones they imply (Keystone lists both in a token), as
/// `(role id, implied by)` in a stable order.
fn effective_roles(w: &World, direct: &[String]) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = direct.iter().map(|r| (r.clone(), None)).collect();
    let mut i = 0;
    while i < out.len() {
        let (current, _) = out[i].clone();
        if let Some(name) = role_name(w, &current) {
            for (prior, implied) in IMPLIES {
                if prior == name
                    && let Some(id) = role_id(w, implied)
                    && !out.iter().any(|(r, _)| *r == id)
                {
                    out.push((id, Some(current.clone())));
                }
            }
        }
        i += 1;
    }
    out
}

/// Issues a token in the world: used by the API and by the in-process control.
pub(crate) fn issue_token(
    w: &mut World,
    user_id: &str,
    project_id: Option<&str>,
    methods: Vec<String>,
) -> Result<(String, TokenInfo), ApiError> {
    issue_token_for(w, user_id, project_id, methods, None)
}

/// [`issue_token`], for an application credential when `app_cred` names one: its project, and
/// of its roles those the user still holds there.
fn issue_token_for(
    w: &mut World,
    user_id: &str,
    project_id: Option<&str>,
    methods: Vec<String>,
    app_cred: Option<&AppCredRec>,
) -> Result<(String, TokenInfo), ApiError> {
    let user = w.users.get(user_id).filter(|u| u.enabled).ok_or_else(|| ApiError::unauthorized(S))?;
    let roles = match project_id {
        Some(pid) => {
            let project =
                w.projects.get(pid).filter(|p| p.enabled).ok_or_else(|| ApiError::unauthorized(S))?;
            let direct = direct_roles(w, &project.id, &user.id);
            if direct.is_empty() {
                return Err(ApiError::unauthorized(S)
                    .kind("Unauthorized")
                    .with_message(format!("User {} has no access to project {pid}", user.id)));
            }
            let held: Vec<String> =
                effective_roles(w, &direct).into_iter().filter_map(|(r, _)| role_name(w, &r)).collect();
            match app_cred {
                Some(c) => {
                    let kept: Vec<String> = c.roles.iter().filter(|r| held.contains(r)).cloned().collect();
                    if kept.is_empty() {
                        return Err(ApiError::unauthorized(S));
                    }
                    kept
                }
                None => held,
            }
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
        app_cred: app_cred.map(|c| (c.id.clone(), c.name.clone(), !c.unrestricted)),
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
    let user = w.users.get(&t.user_id);
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
                .map(|r| Role { id: role_id(w, r).unwrap_or_default(), name: r.clone() })
                .collect(),
            catalog: (with_catalog && project.is_some()).then(|| catalog(sim)),
            application_credential: t.app_cred.as_ref().map(|(id, name, restricted)| TokenAppCred {
                id: id.clone(),
                name: name.clone(),
                restricted: *restricted,
            }),
        },
    }
}

async fn issue(State(sim): State<Arc<Sim>>, q: QueryPairs, body: Bytes) -> ApiResult {
    let req: AuthRequest = parse_body(S, &body)?;
    let mut w = sim.world();
    let methods = req.auth.identity.methods.clone();
    // The project a token from an application credential is bound to (it cannot be rescoped).
    let mut bound: Option<Option<String>> = None;
    let user_id = if let Some(pw) = &req.auth.identity.password {
        let u = &pw.user;
        let found = w.users.values().find(|x| match (&u.id, &u.name, &u.domain) {
            (Some(id), _, _) => &x.id == id,
            (None, Some(name), Some(d)) => {
                x.name.eq_ignore_ascii_case(name) && find_domain_id(&w, d).as_deref() == Some(&x.domain_id)
            }
            (None, Some(name), None) => x.name.eq_ignore_ascii_case(name) && x.domain_id == DEFAULT_DOMAIN,
            _ => false,
        });
        match found {
            Some(x) if x.enabled && x.password.as_deref() == Some(u.password.as_str()) => x.id.clone(),
            _ => return Err(ApiError::unauthorized(S)),
        }
    } else if let Some(t) = &req.auth.identity.token {
        let info = w
            .tokens
            .get(&t.id)
            .filter(|i| i.expires_at > Utc::now())
            .ok_or_else(|| ApiError::unauthorized(S))?;
        if info.app_cred.is_some() {
            bound = Some(info.project_id.clone());
        }
        info.user_id.clone()
    } else if let Some(a) = &req.auth.identity.application_credential {
        if req.auth.scope.is_some() {
            return Err(ApiError::unauthorized(S)
                .with_message("Application credentials cannot request a scope.".into()));
        }
        let cred = find_app_cred(&w, a)?.clone();
        if cred.expires_at.is_some_and(|e| e <= Utc::now()) {
            return Err(ApiError::unauthorized(S));
        }
        let (token, info) = issue_token_for(
            &mut w,
            &cred.user_id,
            Some(&cred.project_id),
            vec!["application_credential".into()],
            Some(&cred),
        )?;
        let body = token_body(&sim, &w, &info, !q.0.iter().any(|(k, _)| k == "nocatalog"));
        drop(w);
        let mut resp = json(StatusCode::CREATED, &body);
        if let Ok(v) = HeaderValue::from_str(&token) {
            resp.headers_mut().insert("x-subject-token", v);
        }
        return Ok(resp);
    } else {
        return Err(ApiError::bad_request(S, "Expecting to find identity in auth."));
    };
    let project_id = match &req.auth.scope {
        // No scope: Keystone scopes to the user's default project if the user has a role there.
        None => w.users.get(&user_id).and_then(|u| u.default_project_id.clone()).filter(|p| {
            w.projects.get(p).is_some_and(|x| x.enabled) && !direct_roles(&w, p, &user_id).is_empty()
        }),
        Some(Scope::Unscoped(_)) => None,
        Some(Scope::Scoped(target)) => match &target.project {
            Some(p) => {
                let found = w.projects.values().find(|x| match (&p.id, &p.name, &p.domain) {
                    (Some(id), _, _) => &x.id == id,
                    (None, Some(name), Some(d)) => {
                        x.name.eq_ignore_ascii_case(name)
                            && find_domain_id(&w, d).as_deref() == Some(&x.domain_id)
                    }
                    _ => false,
                });
                Some(found.map(|x| x.id.clone()).ok_or_else(|| ApiError::unauthorized(S))?)
            }
            None => return Err(ApiError::new(S, 400, "Only project scope is supported by the simulator.")),
        },
    };
    if let Some(bound) = bound
        && bound != project_id
    {
        return Err(ApiError::forbidden(
            S,
            "You are not authorized to perform the requested action: rescope a token issued for an \
             application credential.",
        ));
    }
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
        Some(_) => Ok(StatusCode::NO_CONTENT.into_response()),
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

// ---- policy, errors, helpers ----

fn policy_denied(action: &str) -> ApiError {
    ApiError::forbidden(
        S,
        format!("You are not authorized to perform the requested action: identity:{action}."),
    )
    .kind("Forbidden")
}

/// Keystone's `admin_required`: the token carries the `admin` role.
fn admin(tok: &TokenInfo, action: &str) -> Result<(), ApiError> {
    if tok.is_admin() { Ok(()) } else { Err(policy_denied(action)) }
}

fn not_found(what: &str, id: &str) -> ApiError {
    ApiError::not_found(S, format!("Could not find {what}: {id}.")).kind("Not Found")
}

fn conflict(message: String) -> ApiError {
    ApiError::new(S, 409, message).kind("Conflict")
}

fn invalid(field: &str, value: &str, why: &str) -> ApiError {
    ApiError::bad_request(S, format!("Invalid input for field/attribute {field}. Value: {value}. {why}"))
        .kind("Bad Request")
}

/// Keystone's schema for names: non-empty, at most `max` characters.
fn check_name(name: &str, max: usize) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(invalid("name", name, &format!("'{name}' should be non-empty")));
    }
    if name.chars().count() > max {
        return Err(invalid("name", name, &format!("'{name}' is too long")));
    }
    Ok(())
}

/// Keystone's schema for project tags: 1 to 255 characters, no `/` or `,`, at most 80.
fn check_tags(tags: &[String]) -> Result<(), ApiError> {
    if tags.len() > 80 {
        return Err(invalid("tags", &format!("{tags:?}"), "Too many tags (at most 80)"));
    }
    for (i, t) in tags.iter().enumerate() {
        let field = i.to_string();
        if t.is_empty() {
            return Err(invalid(&field, t, "'' should be non-empty"));
        }
        if t.chars().count() > 255 {
            return Err(invalid(&field, t, &format!("'{t}' is too long")));
        }
        if t.contains([',', '/']) {
            return Err(invalid(&field, t, &format!("'{t}' does not match '^[^,/]*$'")));
        }
    }
    Ok(())
}

fn flag(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Some(true),
        "false" | "0" | "no" => Some(false),
        _ => None,
    }
}

fn collection_links(sim: &Sim, path: &str, q: &QueryPairs) -> Links {
    let query: Vec<String> = q.0.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let url = if query.is_empty() { sim.url(path) } else { format!("{}?{}", sim.url(path), query.join("&")) };
    Links { self_: url, ..Default::default() }
}

/// Revokes every token matching `pred` (Keystone's revocation events, in effect).
fn revoke_tokens(w: &mut World, pred: impl Fn(&TokenInfo) -> bool) {
    w.tokens.retain(|_, t| !pred(t));
}

// ---- projects ----

/// A project as shown by reads. Keystone echoes tags in the order given on create and update,
/// but reads them back sorted (without case, its database's order): [`project_echo`].
fn project_view(sim: &Sim, p: &ProjectRec) -> Project {
    let mut view = project_echo(sim, p);
    view.tags.sort_by_key(|t| t.to_lowercase());
    view
}

fn project_echo(sim: &Sim, p: &ProjectRec) -> Project {
    Project {
        id: p.id.clone(),
        name: p.name.clone(),
        domain_id: p.domain_id.clone(),
        description: p.description.clone(),
        enabled: p.enabled,
        is_domain: false,
        parent_id: Some(p.domain_id.clone()),
        tags: p.tags.clone(),
        options: Default::default(),
        links: Links { self_: sim.url(&format!("/identity/v3/projects/{}", p.id)), ..Default::default() },
    }
}

fn user_project_ids(w: &World, user_id: &str, enabled_only: bool) -> Vec<String> {
    w.projects
        .values()
        .filter(|p| !enabled_only || p.enabled)
        .filter(|p| !direct_roles(w, &p.id, user_id).is_empty())
        .map(|p| p.id.clone())
        .collect()
}

fn project_list(sim: &Sim, w: &World, ids: &[String], path: &str, q: &QueryPairs) -> Response {
    let list = |key: &str| -> Vec<String> {
        q.all(key).iter().flat_map(|v| v.split(',')).filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    let (all, any, not_all, not_any) =
        (list("tags"), list("tags-any"), list("not-tags"), list("not-tags-any"));
    let projects = w
        .projects
        .values()
        .filter(|p| ids.contains(&p.id))
        .filter(|p| q.get("name").is_none_or(|n| p.name.eq_ignore_ascii_case(n)))
        .filter(|p| q.get("domain_id").is_none_or(|d| p.domain_id == d))
        .filter(|p| q.get("parent_id").is_none_or(|d| p.domain_id == d))
        .filter(|p| q.get("enabled").and_then(flag).is_none_or(|e| p.enabled == e))
        .filter(|_| q.get("is_domain").and_then(flag) != Some(true))
        .filter(|p| all.iter().all(|t| p.tags.contains(t)))
        .filter(|p| any.is_empty() || any.iter().any(|t| p.tags.contains(t)))
        .filter(|p| not_all.is_empty() || !not_all.iter().all(|t| p.tags.contains(t)))
        .filter(|p| !not_any.iter().any(|t| p.tags.contains(t)))
        .map(|p| project_view(sim, p))
        .collect();
    json(StatusCode::OK, &ProjectList { projects, links: collection_links(sim, path, q) })
}

async fn auth_projects(State(sim): State<Arc<Sim>>, headers: HeaderMap) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let ids = user_project_ids(&w, &tok.user_id, true);
    Ok(project_list(&sim, &w, &ids, "/identity/v3/auth/projects", &QueryPairs::default()))
}

async fn list_projects(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "list_projects")?;
    let w = sim.world();
    let ids: Vec<String> = w.projects.keys().cloned().collect();
    Ok(project_list(&sim, &w, &ids, "/identity/v3/projects", &q))
}

async fn show_project(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let p = w.projects.get(&id);
    match p {
        Some(p) if tok.is_admin() || tok.project_id.as_deref() == Some(&p.id) => {
            Ok(json(StatusCode::OK, &ProjectBody { project: project_view(&sim, p) }))
        }
        Some(_) => Err(policy_denied("get_project")),
        None if tok.is_admin() => Err(not_found("project", &id)),
        None => Err(policy_denied("get_project")),
    }
}

fn name_taken_in_domain<'w>(
    mut names: impl Iterator<Item = (&'w str, &'w str, &'w str)>,
    domain: &str,
    name: &str,
    except: Option<&str>,
) -> bool {
    names.any(|(id, d, n)| d == domain && n.eq_ignore_ascii_case(name) && except != Some(id))
}

fn project_name_conflict(name: &str, id: &str) -> ApiError {
    conflict(format!(
        "Conflict occurred attempting to store project - it is not permitted to have two projects with either the same name or same id in the same domain: name is {name}, project id {id}."
    ))
}

async fn create_project(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "create_project")?;
    let req: ProjectCreateRequest = parse_body(S, &body)?;
    let c = req.project;
    check_name(&c.name, 64)?;
    let tags = c.tags.unwrap_or_default();
    check_tags(&tags)?;
    if c.is_domain == Some(true) {
        return Err(ApiError::bad_request(
            S,
            "Projects acting as domains are not supported by the simulator.",
        ));
    }
    let mut w = sim.world();
    let domain_id = c.domain_id.or_else(|| c.parent_id.clone()).unwrap_or_else(|| DEFAULT_DOMAIN.into());
    if !w.domains.contains_key(&domain_id) {
        return Err(
            ApiError::bad_request(S, format!("Could not find domain: {domain_id}.")).kind("Bad Request")
        );
    }
    if c.parent_id.as_deref().is_some_and(|p| p != domain_id) {
        return Err(ApiError::bad_request(S, "Project hierarchies are not supported by the simulator."));
    }
    let id = new_hex_id();
    let names = w.projects.values().map(|p| (p.id.as_str(), p.domain_id.as_str(), p.name.as_str()));
    if name_taken_in_domain(names, &domain_id, &c.name, None) {
        return Err(project_name_conflict(&c.name, &id));
    }
    let rec = ProjectRec {
        id: id.clone(),
        name: c.name,
        domain_id,
        description: c.description.unwrap_or_default(),
        enabled: c.enabled.unwrap_or(true),
        tags,
        quotas: Quotas::default(),
    };
    let view = project_echo(&sim, &rec);
    w.projects.insert(id, rec.clone());
    drop(w);
    sim.mirror_project(&rec);
    Ok(json(StatusCode::CREATED, &ProjectBody { project: view }))
}

async fn update_project(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "update_project")?;
    let req: ProjectUpdateRequest = parse_body(S, &body)?;
    let u = req.project;
    if let Some(n) = &u.name {
        check_name(n, 64)?;
    }
    if let Some(t) = &u.tags {
        check_tags(t)?;
    }
    let mut w = sim.world();
    let domain = w.projects.get(&id).map(|p| p.domain_id.clone()).ok_or_else(|| not_found("project", &id))?;
    if let Some(n) = &u.name {
        let names = w.projects.values().map(|p| (p.id.as_str(), p.domain_id.as_str(), p.name.as_str()));
        if name_taken_in_domain(names, &domain, n, Some(&id)) {
            return Err(project_name_conflict(n, &id));
        }
    }
    let p = w.projects.get_mut(&id).ok_or_else(|| not_found("project", &id))?;
    if let Some(n) = u.name {
        p.name = n;
    }
    if let Some(d) = u.description {
        p.description = d;
    }
    if let Some(t) = u.tags {
        p.tags = t;
    }
    let disabled = u.enabled == Some(false);
    if let Some(e) = u.enabled {
        p.enabled = e;
    }
    let view = project_echo(&sim, p);
    if disabled {
        revoke_tokens(&mut w, |t| t.project_id.as_deref() == Some(&id));
    }
    Ok(json(StatusCode::OK, &ProjectBody { project: view }))
}

async fn delete_project(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "delete_project")?;
    let mut w = sim.world();
    w.projects.remove(&id).ok_or_else(|| not_found("project", &id))?;
    w.assignments.retain(|(p, _, _)| *p != id);
    revoke_tokens(&mut w, |t| t.project_id.as_deref() == Some(&id));
    drop(w);
    sim.forget_project(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- project tags ----

fn tags_body(sim: &Sim, tags: &[String]) -> ProjectTags {
    // Keystone's links here point at the API root.
    ProjectTags {
        tags: tags.to_vec(),
        links: Some(Links { self_: sim.url("/identity/v3"), ..Default::default() }),
    }
}

async fn get_tags(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() && tok.project_id.as_deref() != Some(&id) {
        return Err(policy_denied("list_project_tags"));
    }
    let w = sim.world();
    let p = w.projects.get(&id).ok_or_else(|| not_found("project", &id))?;
    Ok(json(StatusCode::OK, &tags_body(&sim, &p.tags)))
}

async fn replace_tags(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "update_project_tags")?;
    let req: ProjectTags = parse_body(S, &body)?;
    check_tags(&req.tags)?;
    let mut w = sim.world();
    let p = w.projects.get_mut(&id).ok_or_else(|| not_found("project", &id))?;
    p.tags = req.tags;
    Ok(json(StatusCode::OK, &tags_body(&sim, &p.tags)))
}

async fn clear_tags(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "delete_project_tags")?;
    let mut w = sim.world();
    let p = w.projects.get_mut(&id).ok_or_else(|| not_found("project", &id))?;
    p.tags.clear();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_tag(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "create_project_tag")?;
    check_tags(std::slice::from_ref(&tag))?;
    let mut w = sim.world();
    let p = w.projects.get_mut(&id).ok_or_else(|| not_found("project", &id))?;
    if !p.tags.contains(&tag) {
        p.tags.push(tag);
    }
    check_tags(&p.tags)?;
    Ok(json(StatusCode::CREATED, &tags_body(&sim, &p.tags)))
}

async fn check_tag(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() && tok.project_id.as_deref() != Some(&id) {
        return Err(policy_denied("get_project_tag"));
    }
    let w = sim.world();
    let p = w.projects.get(&id).ok_or_else(|| not_found("project", &id))?;
    if p.tags.contains(&tag) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found("project tag", &tag))
    }
}

async fn remove_tag(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((id, tag)): Path<(String, String)>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "delete_project_tag")?;
    let mut w = sim.world();
    let p = w.projects.get_mut(&id).ok_or_else(|| not_found("project", &id))?;
    let before = p.tags.len();
    p.tags.retain(|t| *t != tag);
    if p.tags.len() == before {
        return Err(not_found("project tag", &tag));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---- roles and role assignments ----

fn role_view(sim: &Sim, id: &str, name: &str) -> RoleDetail {
    let mut options = serde_json::Map::new();
    options.insert("immutable".into(), serde_json::Value::Bool(true));
    RoleDetail {
        id: id.to_string(),
        name: name.to_string(),
        domain_id: None,
        description: None,
        options,
        links: Links { self_: sim.url(&format!("/identity/v3/roles/{id}")), ..Default::default() },
    }
}

async fn list_roles(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "list_roles")?;
    let w = sim.world();
    // Global roles only: a domain filter naming a real domain finds none.
    let domain_scoped = q.get("domain_id").is_some_and(|d| d != "None" && !d.is_empty());
    let roles = w
        .roles
        .iter()
        .filter(|_| !domain_scoped)
        .filter(|r| q.get("name").is_none_or(|n| r.name.eq_ignore_ascii_case(n)))
        .map(|r| role_view(&sim, &r.id, &r.name))
        .collect();
    Ok(json(StatusCode::OK, &RoleList { roles, links: collection_links(&sim, "/identity/v3/roles", &q) }))
}

async fn show_role(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "get_role")?;
    let w = sim.world();
    let r = w.roles.iter().find(|r| r.id == id).ok_or_else(|| not_found("role", &id))?;
    Ok(json(StatusCode::OK, &RoleBody { role: role_view(&sim, &r.id, &r.name) }))
}

/// The role, user and project of a grant path must exist (checked in Keystone's order).
fn grant_target(w: &World, project: &str, user: &str, role: &str) -> Result<(), ApiError> {
    if !w.roles.iter().any(|r| r.id == role) {
        return Err(not_found("role", role));
    }
    if !w.users.contains_key(user) {
        return Err(not_found("user", user));
    }
    if !w.projects.contains_key(project) {
        return Err(not_found("project", project));
    }
    Ok(())
}

fn assignment_not_found(project: &str, user: &str, role: &str) -> ApiError {
    not_found("role assignment", "x").with_message(format!(
        "Could not find role assignment with role: {role}, user or group: {user}, project, domain, or system: {project}."
    ))
}

async fn create_grant(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((project, user, role)): Path<(String, String, String)>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "create_grant")?;
    let mut w = sim.world();
    grant_target(&w, &project, &user, &role)?;
    w.assignments.insert((project, user, role));
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn check_grant(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((project, user, role)): Path<(String, String, String)>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "check_grant")?;
    let w = sim.world();
    grant_target(&w, &project, &user, &role)?;
    if w.assignments.contains(&(project.clone(), user.clone(), role.clone())) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(assignment_not_found(&project, &user, &role))
    }
}

async fn revoke_grant(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((project, user, role)): Path<(String, String, String)>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "revoke_grant")?;
    let mut w = sim.world();
    grant_target(&w, &project, &user, &role)?;
    if !w.assignments.remove(&(project.clone(), user.clone(), role.clone())) {
        return Err(assignment_not_found(&project, &user, &role));
    }
    revoke_tokens(&mut w, |t| t.user_id == user && t.project_id.as_deref() == Some(&project));
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn list_grants(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path((project, user)): Path<(String, String)>,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "list_grants")?;
    let w = sim.world();
    if !w.users.contains_key(&user) {
        return Err(not_found("user", &user));
    }
    if !w.projects.contains_key(&project) {
        return Err(not_found("project", &project));
    }
    let roles = direct_roles(&w, &project, &user)
        .iter()
        .filter_map(|r| role_name(&w, r).map(|n| role_view(&sim, r, &n)))
        .collect();
    let path = format!("/identity/v3/projects/{project}/users/{user}/roles");
    Ok(json(
        StatusCode::OK,
        &RoleList { roles, links: collection_links(&sim, &path, &QueryPairs::default()) },
    ))
}

async fn list_role_assignments(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "list_role_assignments")?;
    let w = sim.world();
    let names = q.flag("include_names") || q.get("include_names").is_some_and(|v| v.is_empty());
    let effective = q.get("effective").is_some();
    // No group, domain or system assignments exist in the simulator.
    let other_target =
        q.get("group.id").is_some() || q.get("scope.domain.id").is_some() || q.get("scope.system").is_some();
    let domain_ref = |id: &str| names.then(|| Domain { id: id.to_string(), name: domain_name(&w, id) });
    let mut out = Vec::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (p, u, _) in &w.assignments {
        if !pairs.contains(&(p.clone(), u.clone())) {
            pairs.push((p.clone(), u.clone()));
        }
    }
    for (p, u) in pairs.iter().filter(|_| !other_target) {
        if q.get("scope.project.id").is_some_and(|x| x != p) || q.get("user.id").is_some_and(|x| x != u) {
            continue;
        }
        let direct = direct_roles(&w, p, u);
        let roles = if effective {
            effective_roles(&w, &direct)
        } else {
            direct.into_iter().map(|r| (r, None)).collect()
        };
        for (r, prior) in roles {
            if q.get("role.id").is_some_and(|x| x != r) {
                continue;
            }
            let project = w.projects.get(p);
            let user = w.users.get(u);
            out.push(RoleAssignment {
                role: AssignmentRef {
                    id: r.clone(),
                    name: names.then(|| role_name(&w, &r)).flatten(),
                    domain: None,
                },
                user: Some(AssignmentRef {
                    id: u.clone(),
                    name: names.then(|| user.map(|x| x.name.clone())).flatten(),
                    domain: user.and_then(|x| domain_ref(&x.domain_id)),
                }),
                group: None,
                scope: AssignmentScope {
                    project: Some(AssignmentRef {
                        id: p.clone(),
                        name: names.then(|| project.map(|x| x.name.clone())).flatten(),
                        domain: project.and_then(|x| domain_ref(&x.domain_id)),
                    }),
                    ..Default::default()
                },
                links: AssignmentLinks {
                    assignment: sim.url(&format!(
                        "/identity/v3/projects/{p}/users/{u}/roles/{}",
                        prior.as_deref().unwrap_or(&r)
                    )),
                    prior_role: prior.map(|x| sim.url(&format!("/identity/v3/roles/{x}"))),
                },
            });
        }
    }
    Ok(json(
        StatusCode::OK,
        &RoleAssignmentList {
            role_assignments: out,
            links: collection_links(&sim, "/identity/v3/role_assignments", &q),
        },
    ))
}

// ---- users ----

fn user_view(sim: &Sim, u: &UserRec) -> User {
    User {
        id: u.id.clone(),
        name: u.name.clone(),
        domain_id: u.domain_id.clone(),
        enabled: u.enabled,
        default_project_id: u.default_project_id.clone(),
        email: u.email.clone(),
        description: u.description.clone(),
        password_expires_at: None,
        options: Default::default(),
        links: Links { self_: sim.url(&format!("/identity/v3/users/{}", u.id)), ..Default::default() },
    }
}

fn user_name_conflict(name: &str, domain: &str) -> ApiError {
    conflict(format!(
        "Conflict occurred attempting to store user - Duplicate entry found with name {name} at domain ID {domain}."
    ))
}

async fn create_user(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "create_user")?;
    let req: UserCreateRequest = parse_body(S, &body)?;
    let c = req.user;
    check_name(&c.name, 255)?;
    let mut w = sim.world();
    let domain_id = c.domain_id.unwrap_or_else(|| DEFAULT_DOMAIN.into());
    if !w.domains.contains_key(&domain_id) {
        return Err(
            ApiError::bad_request(S, format!("Could not find domain: {domain_id}.")).kind("Bad Request")
        );
    }
    let names = w.users.values().map(|u| (u.id.as_str(), u.domain_id.as_str(), u.name.as_str()));
    if name_taken_in_domain(names, &domain_id, &c.name, None) {
        return Err(user_name_conflict(&c.name, &domain_id));
    }
    let rec = UserRec {
        id: new_hex_id(),
        name: c.name,
        domain_id,
        password: c.password,
        enabled: c.enabled.unwrap_or(true),
        default_project_id: c.default_project_id,
        email: c.email,
        description: c.description,
    };
    let view = user_view(&sim, &rec);
    w.users.insert(rec.id.clone(), rec);
    Ok(json(StatusCode::CREATED, &UserBody { user: view }))
}

async fn list_users(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "list_users")?;
    let w = sim.world();
    let users = w
        .users
        .values()
        .filter(|u| q.get("name").is_none_or(|n| u.name.eq_ignore_ascii_case(n)))
        .filter(|u| q.get("domain_id").is_none_or(|d| u.domain_id == d))
        .filter(|u| q.get("enabled").and_then(flag).is_none_or(|e| u.enabled == e))
        .map(|u| user_view(&sim, u))
        .collect();
    Ok(json(StatusCode::OK, &UserList { users, links: collection_links(&sim, "/identity/v3/users", &q) }))
}

async fn show_user(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() && tok.user_id != id {
        return Err(policy_denied("get_user"));
    }
    let w = sim.world();
    let u = w.users.get(&id).ok_or_else(|| not_found("user", &id))?;
    Ok(json(StatusCode::OK, &UserBody { user: user_view(&sim, u) }))
}

async fn update_user(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "update_user")?;
    let req: UserUpdateRequest = parse_body(S, &body)?;
    let c = req.user;
    if let Some(n) = &c.name {
        check_name(n, 255)?;
    }
    let mut w = sim.world();
    let domain = w.users.get(&id).map(|u| u.domain_id.clone()).ok_or_else(|| not_found("user", &id))?;
    if let Some(n) = &c.name {
        let names = w.users.values().map(|u| (u.id.as_str(), u.domain_id.as_str(), u.name.as_str()));
        if name_taken_in_domain(names, &domain, n, Some(&id)) {
            return Err(user_name_conflict(n, &domain));
        }
    }
    let u = w.users.get_mut(&id).ok_or_else(|| not_found("user", &id))?;
    if let Some(n) = c.name {
        u.name = n;
    }
    if let Some(p) = c.password {
        u.password = Some(p);
    }
    if let Some(e) = c.email {
        u.email = Some(e);
    }
    if let Some(d) = c.description {
        u.description = Some(d);
    }
    if let Some(p) = c.default_project_id {
        u.default_project_id = Some(p);
    }
    let disabled = c.enabled == Some(false);
    if let Some(e) = c.enabled {
        u.enabled = e;
    }
    let view = user_view(&sim, u);
    if disabled {
        revoke_tokens(&mut w, |t| t.user_id == id);
    }
    Ok(json(StatusCode::OK, &UserBody { user: view }))
}

async fn delete_user(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "delete_user")?;
    let mut w = sim.world();
    w.users.remove(&id).ok_or_else(|| not_found("user", &id))?;
    w.assignments.retain(|(_, u, _)| *u != id);
    revoke_tokens(&mut w, |t| t.user_id == id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn user_projects(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    q: QueryPairs,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    if !tok.is_admin() && tok.user_id != id {
        return Err(policy_denied("list_user_projects"));
    }
    let w = sim.world();
    let ids = user_project_ids(&w, &id, false);
    Ok(project_list(&sim, &w, &ids, &format!("/identity/v3/users/{id}/projects"), &q))
}

// ---- domains ----

fn domain_view(sim: &Sim, d: &DomainRec) -> DomainDetail {
    DomainDetail {
        id: d.id.clone(),
        name: d.name.clone(),
        description: d.description.clone(),
        enabled: d.enabled,
        tags: vec![],
        options: Default::default(),
        links: Links { self_: sim.url(&format!("/identity/v3/domains/{}", d.id)), ..Default::default() },
    }
}

fn domain_name_conflict(name: &str) -> ApiError {
    conflict(format!(
        "Conflict occurred attempting to store project - it is not permitted to have two projects acting as domains with the same name: {name}."
    ))
}

async fn list_domains(State(sim): State<Arc<Sim>>, headers: HeaderMap, q: QueryPairs) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "list_domains")?;
    let w = sim.world();
    let domains = w
        .domains
        .values()
        .filter(|d| q.get("name").is_none_or(|n| d.name.eq_ignore_ascii_case(n)))
        .filter(|d| q.get("enabled").and_then(flag).is_none_or(|e| d.enabled == e))
        .map(|d| domain_view(&sim, d))
        .collect();
    Ok(json(
        StatusCode::OK,
        &DomainList { domains, links: collection_links(&sim, "/identity/v3/domains", &q) },
    ))
}

async fn show_domain(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    let w = sim.world();
    let own = tok.project_id.as_ref().and_then(|p| w.projects.get(p)).is_some_and(|p| p.domain_id == id);
    if !tok.is_admin() && !own {
        return Err(policy_denied("get_domain"));
    }
    let d = w.domains.get(&id).ok_or_else(|| not_found("domain", &id))?;
    Ok(json(StatusCode::OK, &DomainBody { domain: domain_view(&sim, d) }))
}

async fn create_domain(State(sim): State<Arc<Sim>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "create_domain")?;
    let req: DomainCreateRequest = parse_body(S, &body)?;
    let name = req.domain.name.unwrap_or_default();
    check_name(&name, 64)?;
    let mut w = sim.world();
    if w.domains.values().any(|d| d.name.eq_ignore_ascii_case(&name)) {
        return Err(domain_name_conflict(&name));
    }
    let rec = DomainRec {
        id: new_hex_id(),
        name,
        description: req.domain.description.unwrap_or_default(),
        enabled: req.domain.enabled.unwrap_or(true),
    };
    let view = domain_view(&sim, &rec);
    w.domains.insert(rec.id.clone(), rec);
    Ok(json(StatusCode::CREATED, &DomainBody { domain: view }))
}

async fn update_domain(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "update_domain")?;
    let req: DomainCreateRequest = parse_body(S, &body)?;
    let mut w = sim.world();
    if !w.domains.contains_key(&id) {
        return Err(not_found("domain", &id));
    }
    if let Some(n) = &req.domain.name {
        check_name(n, 64)?;
        if w.domains.values().any(|d| d.id != id && d.name.eq_ignore_ascii_case(n)) {
            return Err(domain_name_conflict(n));
        }
    }
    let d = w.domains.get_mut(&id).ok_or_else(|| not_found("domain", &id))?;
    if let Some(n) = req.domain.name {
        d.name = n;
    }
    if let Some(x) = req.domain.description {
        d.description = x;
    }
    if let Some(e) = req.domain.enabled {
        d.enabled = e;
    }
    Ok(json(StatusCode::OK, &DomainBody { domain: domain_view(&sim, d) }))
}

async fn delete_domain(State(sim): State<Arc<Sim>>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    let tok = authenticate(&sim, &headers, S)?;
    admin(&tok, "delete_domain")?;
    let mut w = sim.world();
    let d = w.domains.get(&id).ok_or_else(|| not_found("domain", &id))?;
    if d.enabled {
        return Err(ApiError::forbidden(
            S,
            "Cannot delete a domain that is enabled, please disable it first.",
        )
        .kind("Forbidden"));
    }
    // Keystone deletes what the domain holds.
    w.domains.remove(&id);
    let projects: Vec<String> =
        w.projects.values().filter(|p| p.domain_id == id).map(|p| p.id.clone()).collect();
    let users: Vec<String> = w.users.values().filter(|u| u.domain_id == id).map(|u| u.id.clone()).collect();
    w.projects.retain(|_, p| p.domain_id != id);
    w.users.retain(|_, u| u.domain_id != id);
    w.assignments.retain(|(p, u, _)| !projects.contains(p) && !users.contains(u));
    revoke_tokens(&mut w, |t| {
        users.contains(&t.user_id) || t.project_id.as_ref().is_some_and(|p| projects.contains(p))
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The credential an `application_credential` auth method names, if its secret matches (else
/// Keystone's 401, whatever was wrong).
fn find_app_cred<'w>(w: &'w World, a: &ApplicationCredentialMethod) -> Result<&'w AppCredRec, ApiError> {
    let found = match (&a.id, &a.name) {
        (Some(id), _) => w.app_creds.get(id),
        (None, Some(name)) => {
            let user_id = a.user.as_ref().and_then(|u| match (&u.id, &u.name, &u.domain) {
                (Some(id), _, _) => Some(id.clone()),
                (None, Some(n), d) => w
                    .users
                    .values()
                    .find(|x| {
                        x.name.eq_ignore_ascii_case(n)
                            && match d {
                                Some(d) => find_domain_id(w, d).as_deref() == Some(&x.domain_id),
                                None => x.domain_id == DEFAULT_DOMAIN,
                            }
                    })
                    .map(|x| x.id.clone()),
                _ => None,
            });
            let Some(user_id) = user_id else {
                return Err(ApiError::bad_request(
                    S,
                    "Could not determine the user of the application credential.",
                ));
            };
            w.app_creds.values().find(|c| c.user_id == user_id && c.name == *name)
        }
        (None, None) => {
            return Err(ApiError::bad_request(S, "Expecting to find id or name in application_credential."));
        }
    };
    found.filter(|c| c.secret == a.secret).ok_or_else(|| ApiError::unauthorized(S))
}

fn app_cred_view(w: &World, c: &AppCredRec, with_secret: bool) -> ApplicationCredential {
    ApplicationCredential {
        id: c.id.clone(),
        name: c.name.clone(),
        description: c.description.clone(),
        project_id: c.project_id.clone(),
        user_id: Some(c.user_id.clone()),
        roles: c
            .roles
            .iter()
            .map(|r| Role { id: role_id(w, r).unwrap_or_default(), name: r.clone() })
            .collect(),
        expires_at: c.expires_at.map(|e| e.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()),
        unrestricted: c.unrestricted,
        secret: with_secret.then(|| c.secret.clone()),
    }
}

/// Only the user itself manages its application credentials, with a project-scoped token; a
/// restricted application credential's token may not make more (Keystone's rule).
fn own_app_creds(sim: &Sim, headers: &HeaderMap, user_id: &str) -> Result<TokenInfo, ApiError> {
    let tok = authenticate(sim, headers, S)?;
    if tok.user_id != user_id {
        return Err(ApiError::forbidden(
            S,
            format!(
                "You are not authorized to perform the requested action: identity:application_credentials of user {user_id}."
            ),
        ));
    }
    Ok(tok)
}

async fn create_app_cred(
    State(sim): State<Arc<Sim>>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let tok = own_app_creds(&sim, &headers, &user_id)?;
    let req: NewApplicationCredentialBody = parse_body(S, &body)?;
    let new = req.application_credential;
    let project_id = tok
        .project_id
        .clone()
        .ok_or_else(|| ApiError::bad_request(S, "An application credential needs a project-scoped token."))?;
    if tok.app_cred.as_ref().is_some_and(|(_, _, restricted)| *restricted) {
        return Err(ApiError::forbidden(
            S,
            "You are not authorized to perform the requested action: Using method 'application_credential' \
             is not allowed for managing additional application credentials.",
        ));
    }
    let mut w = sim.world();
    if w.app_creds.values().any(|c| c.user_id == user_id && c.name == new.name) {
        return Err(ApiError::new(
            S,
            409,
            "Conflict occurred attempting to store application_credential - Duplicate entry found with name "
                .to_string()
                + &new.name
                + ".",
        )
        .kind("Conflict"));
    }
    // No roles, or an empty list (what the CLI sends without --role): every role of the token.
    let roles: Vec<String> = match new.roles.as_ref().filter(|r| !r.is_empty()) {
        Some(wanted) => {
            let mut out = Vec::new();
            for r in wanted {
                let name = match (&r.id, &r.name) {
                    (Some(id), _) => role_name(&w, id),
                    (None, Some(n)) => Some(n.clone()),
                    _ => None,
                };
                match name.filter(|n| tok.roles.contains(n)) {
                    Some(n) => out.push(n),
                    None => {
                        return Err(ApiError::forbidden(
                            S,
                            "You are not authorized to perform the requested action: a role the token does not carry.",
                        ));
                    }
                }
            }
            out
        }
        None => tok.roles.clone(),
    };
    let expires_at = match &new.expires_at {
        Some(e) => Some(
            chrono::NaiveDateTime::parse_from_str(e.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
                .map(|n| n.and_utc())
                .map_err(|_| {
                    ApiError::bad_request(S, format!("Invalid input for field 'expires_at': {e}"))
                })?,
        ),
        None => None,
    };
    let rec = AppCredRec {
        id: new_hex_id(),
        name: new.name.clone(),
        description: new.description.clone(),
        user_id: user_id.clone(),
        project_id,
        secret: new.secret.clone().unwrap_or_else(|| format!("{}{}", new_hex_id(), new_hex_id())),
        roles,
        expires_at,
        unrestricted: new.unrestricted,
    };
    let view = app_cred_view(&w, &rec, true);
    w.app_creds.insert(rec.id.clone(), rec);
    drop(w);
    Ok(json(StatusCode::CREATED, &ApplicationCredentialBody { application_credential: view }))
}

async fn list_app_creds(
    State(sim): State<Arc<Sim>>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    q: QueryPairs,
) -> ApiResult {
    own_app_creds(&sim, &headers, &user_id)?;
    let name = q.0.iter().find(|(k, _)| k == "name").map(|(_, v)| v.clone());
    let w = sim.world();
    let list: Vec<ApplicationCredential> = w
        .app_creds
        .values()
        .filter(|c| c.user_id == user_id && name.as_ref().is_none_or(|n| *n == c.name))
        .map(|c| app_cred_view(&w, c, false))
        .collect();
    Ok(json(StatusCode::OK, &serde_json::json!({ "application_credentials": list })))
}

async fn show_app_cred(
    State(sim): State<Arc<Sim>>,
    Path((user_id, cred_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    own_app_creds(&sim, &headers, &user_id)?;
    let w = sim.world();
    let c = w.app_creds.get(&cred_id).filter(|c| c.user_id == user_id).ok_or_else(|| {
        ApiError::not_found(S, format!("Could not find application credential: {cred_id}."))
    })?;
    Ok(json(
        StatusCode::OK,
        &ApplicationCredentialBody { application_credential: app_cred_view(&w, c, false) },
    ))
}

async fn delete_app_cred(
    State(sim): State<Arc<Sim>>,
    Path((user_id, cred_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    own_app_creds(&sim, &headers, &user_id)?;
    let mut w = sim.world();
    if w.app_creds.get(&cred_id).is_none_or(|c| c.user_id != user_id) {
        return Err(ApiError::not_found(S, format!("Could not find application credential: {cred_id}.")));
    }
    w.app_creds.remove(&cred_id);
    // Keystone revokes the tokens issued for it.
    w.tokens.retain(|_, t| t.app_cred.as_ref().is_none_or(|(id, _, _)| *id != cred_id));
    Ok(StatusCode::NO_CONTENT.into_response())
}
