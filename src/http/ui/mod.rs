//! The operator console: server-rendered HTML under `/ui` on the status API's listener.
//!
//! Pages: the dashboard (jobs by state, failures by class, throughput, outbox backlog, dead
//! letters, workers), the jobs list (filters, keyset paging, search by any id), a job (its order
//! with secrets redacted, its history as a timeline, resources, events, audit), the services,
//! the reconciler's findings, and the audit log. No build step: the markup is `maud` (which
//! escapes every value it is given: an order id or a Nova fault is attacker-controlled text), the
//! CSS and the one small script are embedded with `include_str!`, the charts are inline SVG drawn
//! here. A strict Content-Security-Policy forbids inline script and style.
//!
//! Who sees what (see [`auth`]): with users in `PROVISIONER_UI_USERS`, every page needs a login;
//! `read-only` users see, `operator`s also replay and cancel. Every POST carries the session's
//! CSRF token. Without users, the console is read-only and only on a loopback listener; on any
//! other listener it does not exist (404). The buttons call the same store code as the admin
//! topic ([`crate::store::admin`]), which records the operator in the job's history; the console
//! also writes its audit log (`ui_audit`).

pub mod auth;
mod pages;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::HttpState;
use crate::config::{Settings, UiRole, UiUser};
use crate::messages::AdminTarget;
use crate::store::admin::AdminOutcome;
use crate::store::console::{MAX_BULK, NewAudit};
use crate::store::services::{SERVICE_STATES, ServiceCursor, ServiceFilter};
use crate::store::status::{ACTIONS, Cursor, JobFilter, STATES};

/// Counts the messages in the dead-letter queue; `Err` says why it cannot.
pub type DeadLetterProbe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<u64, String>> + Send>> + Send + Sync>;

/// What the console needs besides the store.
#[derive(Clone, Default)]
pub struct Console {
    pub users: Arc<Vec<UiUser>>,
    /// The listener is on a loopback address (the console may then be open without users).
    pub loopback: bool,
    /// Time a replayed job gets to finish (`engine.job_deadline_secs`).
    pub job_deadline: Duration,
    pub dead_letters: Option<DeadLetterProbe>,
}

impl Console {
    pub fn new(settings: &Settings) -> Console {
        let loopback =
            settings.http.addr.parse::<SocketAddr>().map(|a| a.ip().is_loopback()).unwrap_or(false);
        Console {
            users: Arc::new(settings.ui.users.clone()),
            loopback,
            job_deadline: Duration::from_secs(settings.engine.job_deadline_secs),
            dead_letters: None,
        }
    }
}

/// The person looking at a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub name: String,
    pub role: UiRole,
    /// The session's CSRF token; `None` without users (nothing can be posted then).
    pub csrf: Option<String>,
    /// Logged in (offers the logout button).
    pub session: bool,
}

impl Viewer {
    pub fn operator(&self) -> bool {
        self.role == UiRole::Operator && self.csrf.is_some()
    }
}

/// The client as the worker saw it (and the proxy's `X-Forwarded-For`), for the audit log;
/// whether it came over TLS (a proxy's `X-Forwarded-Proto: https`), for the cookie's `Secure`.
struct Client {
    remote: Option<String>,
    tls: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string());
        let forwarded = parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
        let remote = match (peer, forwarded) {
            (Some(p), Some(f)) => Some(format!("{p} (for {f})")),
            (p, f) => p.or(f.map(String::from)),
        };
        let tls = parts
            .headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"));
        Ok(Client { remote, tls })
    }
}

/// Why a page is not shown.
pub enum Denied {
    /// No console here (no users and not on loopback).
    Absent,
    /// Log in first.
    Login,
    Db(crate::store::StoreError),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Absent => (StatusCode::NOT_FOUND, "not found\n").into_response(),
            Denied::Login => Redirect::to("/ui/login").into_response(),
            Denied::Db(e) => UiError::from(e).into_response(),
        }
    }
}

impl FromRequestParts<HttpState> for Viewer {
    type Rejection = Denied;
    async fn from_request_parts(parts: &mut Parts, state: &HttpState) -> Result<Self, Self::Rejection> {
        let console = &state.console;
        if console.users.is_empty() {
            return if console.loopback {
                Ok(Viewer { name: "loopback".into(), role: UiRole::ReadOnly, csrf: None, session: false })
            } else {
                Err(Denied::Absent)
            };
        }
        let token = parts
            .headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(|c| auth::cookie(c, auth::SESSION_COOKIE))
            .ok_or(Denied::Login)?;
        let session = state.store.ui_session(&auth::token_hash(token)).await.map_err(Denied::Db)?;
        let session = session.ok_or(Denied::Login)?;
        // The role is the settings' of now, not the login's.
        let user = console.users.iter().find(|u| u.name == session.operator).ok_or(Denied::Login)?;
        Ok(Viewer { name: user.name.clone(), role: user.role, csrf: Some(session.csrf), session: true })
    }
}

/// A page that could not be made.
#[derive(Debug)]
pub struct UiError(StatusCode, String);

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        html_response(self.0, pages::error_page(self.0, &self.1))
    }
}

impl From<crate::store::StoreError> for UiError {
    fn from(e: crate::store::StoreError) -> Self {
        tracing::warn!(error = %e, "console: database error");
        UiError(StatusCode::SERVICE_UNAVAILABLE, "The database is unavailable; try again shortly.".into())
    }
}

fn bad(msg: impl Into<String>) -> UiError {
    UiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Content-Security-Policy of every page: nothing inline, nothing from elsewhere, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html_response(status: StatusCode, body: maud::Markup) -> Response {
    let mut r = (status, axum::response::Html(body.into_string())).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn page(body: maud::Markup) -> Response {
    html_response(StatusCode::OK, body)
}

/// The console's routes (merged into the status API's router, outside its bearer-token check:
/// browsers authenticate with the session instead).
pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/ui", get(dashboard))
        .route("/ui/", get(dashboard))
        .route("/ui/jobs", get(jobs))
        .route("/ui/jobs/{id}", get(job))
        .route("/ui/jobs/{id}/replay", post(replay))
        .route("/ui/jobs/{id}/cancel", post(cancel))
        .route("/ui/replay-failed", get(bulk_confirm).post(bulk_replay))
        .route("/ui/services", get(services))
        .route("/ui/services/{id}", get(service))
        .route("/ui/findings", get(findings))
        .route("/ui/audit", get(audit))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/assets/console.css", get(css))
        .route("/ui/assets/console.js", get(js))
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/console.css"))
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("assets/console.js"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn dashboard(viewer: Viewer, State(state): State<HttpState>) -> Result<Response, UiError> {
    let d = state.store.dashboard().await?;
    let open_findings = state.store.open_finding_counts().await?;
    let dead = match &state.console.dead_letters {
        Some(probe) => probe().await,
        None => Err("this listener has no broker connection".to_string()),
    };
    Ok(page(pages::dashboard(&viewer, &d, &dead, &open_findings)))
}

/// Query parameters of the jobs list (every one optional; empty means unset).
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(default)]
pub struct JobsQuery {
    pub state: String,
    pub action: String,
    pub project: String,
    pub class: String,
    /// RFC 3339 or a duration back from now: `15m`, `2h`, `1d`.
    pub since: String,
    /// Search: a job id, order id, server id or service.
    pub q: String,
    pub cursor: String,
    pub limit: Option<u32>,
}

fn opt(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

/// `since` as RFC 3339 or `15m` / `2h` / `1d` back from now.
fn parse_since(s: &str) -> Result<DateTime<Utc>, UiError> {
    crate::ops::jobs::parse_since(s, Utc::now()).map_err(|e| bad(e.replace("--since", "since")))
}

async fn jobs(
    viewer: Viewer,
    State(state): State<HttpState>,
    q: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    if let Some(term) = opt(&q.q) {
        let found = state.store.search_jobs(&term).await?;
        return Ok(page(pages::jobs(&viewer, &q, &found, None)));
    }
    if let Some(s) = opt(&q.state)
        && !STATES.contains(&s.as_str())
    {
        return Err(bad(format!("state {s:?} is not one of {}", STATES.join(", "))));
    }
    if let Some(a) = opt(&q.action)
        && !ACTIONS.contains(&a.as_str())
    {
        return Err(bad(format!("action {a:?} is not one of {}", ACTIONS.join(", "))));
    }
    let since = opt(&q.since).map(|s| parse_since(&s)).transpose()?;
    let cursor = opt(&q.cursor).map(|c| Cursor::decode(&c).map_err(|e| bad(e.to_string()))).transpose()?;
    let filter = JobFilter {
        state: opt(&q.state),
        action: opt(&q.action),
        project_id: opt(&q.project),
        error_class: opt(&q.class),
        since,
        limit: q.limit.unwrap_or(50).clamp(1, 500),
        cursor,
        ..JobFilter::default()
    };
    let page_ = state.store.list_jobs(&filter).await?;
    Ok(page(pages::jobs(&viewer, &q, &page_.jobs, page_.next_cursor.as_deref())))
}

/// Which notice a job page shows after a button (a fixed set: never text from the query).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Notice {
    done: String,
}

async fn job(
    viewer: Viewer,
    State(state): State<HttpState>,
    Path(id): Path<String>,
    Query(notice): Query<Notice>,
) -> Result<Response, UiError> {
    let Some(detail) = state.store.job_detail(&id).await? else {
        return Err(UiError(StatusCode::NOT_FOUND, format!("No job has the job id or order id {id:?}.")));
    };
    let job_id = detail.status.job_id.clone();
    let order = state.store.job_order_body(&job_id).await?.unwrap_or_default();
    let events = state.store.job_events(&job_id).await?;
    let audit = state.store.audit_log(Some(&job_id), 50).await?;
    let notice = match notice.done.as_str() {
        "replayed" => Some("Replayed: the job is queued again from its first step."),
        "cancelled" => Some("Cancelled."),
        "cancel_requested" => {
            Some("Cancel requested: the engine rolls back what the job made, then ends it.")
        }
        "refused" => Some("Refused: the job's state does not allow it (the reason is in the history)."),
        _ => None,
    };
    Ok(page(pages::job(&viewer, &detail, &pages::redact_order(&order), &events, &audit, notice)))
}

/// A button's form.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ActionForm {
    csrf: String,
    reason: String,
}

/// Refuses a POST by a read-only user or without the session's CSRF token.
fn check_post(viewer: &Viewer, csrf: &str) -> Result<(), UiError> {
    let Some(expected) = &viewer.csrf else {
        return Err(UiError(StatusCode::FORBIDDEN, "This console is read-only.".into()));
    };
    if csrf.is_empty() || !auth::same(csrf, expected) {
        return Err(UiError(
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or wrong: reload the page.".into(),
        ));
    }
    if viewer.role != UiRole::Operator {
        return Err(UiError(StatusCode::FORBIDDEN, "Your role is read-only.".into()));
    }
    Ok(())
}

fn reason_of(form_reason: &str) -> String {
    let r = form_reason.trim();
    if r.is_empty() { "from the web console".into() } else { format!("{r} (web console)") }
}

async fn audit_action(
    state: &HttpState,
    viewer: &Viewer,
    client: &Client,
    action: &str,
    target: &str,
    outcome: &AdminOutcome,
) {
    let detail = match outcome {
        AdminOutcome::Refused { reason, .. } => Some(reason.as_str()),
        _ => None,
    };
    let entry = NewAudit {
        operator: &viewer.name,
        role: viewer.role.as_str(),
        action,
        target: Some(target),
        outcome: outcome.as_str(),
        detail,
        remote: client.remote.as_deref(),
    };
    if let Err(e) = state.store.audit(&entry).await {
        tracing::error!(error = %e, operator = %viewer.name, action, target, "console: cannot write the audit log");
    }
}

fn target_of(id: &str) -> AdminTarget {
    match uuid::Uuid::parse_str(id) {
        Ok(u) => AdminTarget::Job(u),
        Err(_) => AdminTarget::Order(id.to_string()),
    }
}

async fn replay(
    viewer: Viewer,
    client: Client,
    State(state): State<HttpState>,
    Path(id): Path<String>,
    form: axum::Form<ActionForm>,
) -> Result<Response, UiError> {
    check_post(&viewer, &form.csrf)?;
    let reason = reason_of(&form.reason);
    let outcome = state
        .store
        .admin_replay(&target_of(&id), &viewer.name, Some(&reason), state.console.job_deadline)
        .await?;
    tracing::info!(target: "provisioner::audit", operator = %viewer.name, job = %id, outcome = outcome.as_str(), "console replay");
    after_action(&state, &viewer, &client, "replay", &id, outcome).await
}

async fn cancel(
    viewer: Viewer,
    client: Client,
    State(state): State<HttpState>,
    Path(id): Path<String>,
    form: axum::Form<ActionForm>,
) -> Result<Response, UiError> {
    check_post(&viewer, &form.csrf)?;
    let reason = reason_of(&form.reason);
    let outcome = state.store.admin_cancel(&target_of(&id), &viewer.name, Some(&reason)).await?;
    tracing::info!(target: "provisioner::audit", operator = %viewer.name, job = %id, outcome = outcome.as_str(), "console cancel");
    after_action(&state, &viewer, &client, "cancel", &id, outcome).await
}

async fn after_action(
    state: &HttpState,
    viewer: &Viewer,
    client: &Client,
    action: &str,
    id: &str,
    outcome: AdminOutcome,
) -> Result<Response, UiError> {
    let job_id = match &outcome {
        AdminOutcome::Replayed { job_id }
        | AdminOutcome::Cancelled { job_id }
        | AdminOutcome::CancelRequested { job_id }
        | AdminOutcome::Refused { job_id, .. } => job_id.clone(),
        AdminOutcome::NotFound => {
            audit_action(state, viewer, client, action, id, &outcome).await;
            return Err(UiError(StatusCode::NOT_FOUND, format!("No job has the job id or order id {id:?}.")));
        }
    };
    audit_action(state, viewer, client, action, &job_id, &outcome).await;
    let to = format!("/ui/jobs/{}?done={}", job_id, outcome.as_str());
    Ok(Redirect::to(&to).into_response())
}

/// The selection of a bulk replay.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BulkQuery {
    class: String,
    since: String,
}

async fn bulk_confirm(
    viewer: Viewer,
    State(state): State<HttpState>,
    Query(q): Query<BulkQuery>,
) -> Result<Response, UiError> {
    let class = opt(&q.class).ok_or_else(|| bad("Choose an error class."))?;
    let since_text = opt(&q.since).unwrap_or_else(|| "1d".into());
    let since = parse_since(&since_text)?;
    let count = state.store.count_failed(&class, since).await?;
    Ok(page(pages::bulk_confirm(&viewer, &class, &since_text, since, count)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct BulkForm {
    csrf: String,
    class: String,
    /// The resolved time the confirm page showed (RFC 3339), so the selection does not move.
    since: String,
    /// What the confirm page counted: the replay goes ahead only if it still holds.
    expected: u64,
    reason: String,
}

async fn bulk_replay(
    viewer: Viewer,
    client: Client,
    State(state): State<HttpState>,
    form: axum::Form<BulkForm>,
) -> Result<Response, UiError> {
    check_post(&viewer, &form.csrf)?;
    let class = opt(&form.class).ok_or_else(|| bad("Choose an error class."))?;
    let since = DateTime::parse_from_rfc3339(form.since.trim())
        .map_err(|_| bad("since is not an RFC 3339 time"))?
        .with_timezone(&Utc);
    let count = state.store.count_failed(&class, since).await?;
    let target = format!("error_class={class} since={}", since.to_rfc3339());
    if count != form.expected {
        return Ok(page(pages::bulk_changed(&viewer, &class, since, form.expected, count)));
    }
    let reason = reason_of(&form.reason);
    let ids = state.store.failed_job_ids(&class, since, MAX_BULK).await?;
    let (mut replayed, mut refused) = (0u64, 0u64);
    for id in &ids {
        let target = target_of(id);
        match state
            .store
            .admin_replay(&target, &viewer.name, Some(&reason), state.console.job_deadline)
            .await?
        {
            AdminOutcome::Replayed { .. } => replayed += 1,
            _ => refused += 1,
        }
    }
    let detail = format!("{replayed} replayed, {refused} no longer failed (of {count} counted)");
    tracing::info!(target: "provisioner::audit", operator = %viewer.name, %class, %since, replayed, refused, "console bulk replay");
    let entry = NewAudit {
        operator: &viewer.name,
        role: viewer.role.as_str(),
        action: "replay_failed",
        target: Some(&target),
        outcome: "ok",
        detail: Some(&detail),
        remote: client.remote.as_deref(),
    };
    if let Err(e) = state.store.audit(&entry).await {
        tracing::error!(error = %e, "console: cannot write the audit log");
    }
    Ok(page(pages::bulk_done(
        &viewer,
        &class,
        since,
        replayed,
        refused,
        ids.len() as u64 == u64::from(MAX_BULK),
    )))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ServicesQuery {
    state: String,
    project: String,
    cursor: String,
}

async fn services(
    viewer: Viewer,
    State(state): State<HttpState>,
    q: Result<Query<ServicesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    if let Some(s) = opt(&q.state)
        && !SERVICE_STATES.contains(&s.as_str())
    {
        return Err(bad(format!("state {s:?} is not one of {}", SERVICE_STATES.join(", "))));
    }
    let cursor =
        opt(&q.cursor).map(|c| ServiceCursor::decode(&c).map_err(|e| bad(e.to_string()))).transpose()?;
    let filter = ServiceFilter { state: opt(&q.state), project_id: opt(&q.project), limit: 50, cursor };
    let list = state.store.list_services(&filter).await?;
    Ok(page(pages::services(&viewer, &q.state, &q.project, &list.services, list.next_cursor.as_deref())))
}

async fn service(
    viewer: Viewer,
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    match state.store.service_detail(&id).await? {
        Some(detail) => Ok(page(pages::service(&viewer, &detail))),
        None => Err(UiError(StatusCode::NOT_FOUND, format!("No service was made by order {id:?}."))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct FindingsQuery {
    kind: String,
    project: String,
    /// Cleared findings too.
    all: bool,
}

async fn findings(
    viewer: Viewer,
    State(state): State<HttpState>,
    q: Result<Query<FindingsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let Query(q) = q.map_err(|e| bad(e.body_text()))?;
    if let Some(k) = opt(&q.kind)
        && k != "orphan"
        && k != "drift"
    {
        return Err(bad(format!("kind {k:?} is not one of orphan, drift")));
    }
    let filter = crate::store::reconcile::FindingFilter {
        all: q.all,
        kind: opt(&q.kind),
        project_id: opt(&q.project),
        limit: 500,
    };
    let list = state.store.list_findings(&filter).await?;
    Ok(page(pages::findings(&viewer, &q.kind, &q.project, q.all, &list)))
}

async fn audit(viewer: Viewer, State(state): State<HttpState>) -> Result<Response, UiError> {
    let entries = state.store.audit_log(None, 200).await?;
    Ok(page(pages::audit(&viewer, &entries)))
}

async fn login_form(State(state): State<HttpState>, client: Client) -> Response {
    if state.console.users.is_empty() {
        return if state.console.loopback {
            Redirect::to("/ui").into_response()
        } else {
            Denied::Absent.into_response()
        };
    }
    login_page(&client, None, StatusCode::OK)
}

fn login_page(client: &Client, error: Option<&str>, status: StatusCode) -> Response {
    let token = auth::random_token();
    let mut r = html_response(status, pages::login(&token, error));
    let cookie = auth::set_cookie(auth::LOGIN_CSRF_COOKIE, &token, Some(600), client.tls);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

async fn login(
    State(state): State<HttpState>,
    client: Client,
    headers: HeaderMap,
    form: axum::Form<LoginForm>,
) -> Result<Response, UiError> {
    if state.console.users.is_empty() {
        return Ok(Denied::Absent.into_response());
    }
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| auth::cookie(c, auth::LOGIN_CSRF_COOKIE))
        .unwrap_or("");
    if form.csrf.is_empty() || !auth::same(&form.csrf, cookie) {
        return Ok(login_page(&client, Some("The form expired; please try again."), StatusCode::FORBIDDEN));
    }
    // Argon2 takes ~19 MiB and a few CPU-milliseconds per check, and anyone can post this form:
    // at most two checks run at once per worker; a login that cannot start one within 5 s is
    // told to retry.
    static CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
    let Ok(Ok(_permit)) = tokio::time::timeout(Duration::from_secs(5), CHECKS.acquire()).await else {
        return Err(UiError(StatusCode::SERVICE_UNAVAILABLE, "Too many logins at once; try again.".into()));
    };
    let users = state.console.users.clone();
    let (name, password) = (form.name.trim().to_string(), form.password.clone());
    let checked = {
        let name = name.clone();
        tokio::task::spawn_blocking(move || auth::authenticate(&users, &name, &password).map(|u| u.role))
            .await
            .map_err(|_| UiError(StatusCode::INTERNAL_SERVER_ERROR, "login check failed".into()))?
    };
    let Some(role) = checked else {
        let entry = NewAudit {
            operator: &name,
            role: "-",
            action: "login",
            target: None,
            outcome: "refused",
            detail: Some("wrong name or password"),
            remote: client.remote.as_deref(),
        };
        let _ = state.store.audit(&entry).await;
        tracing::warn!(target: "provisioner::audit", user = %name, remote = ?client.remote, "console login refused");
        return Ok(login_page(&client, Some("Wrong name or password."), StatusCode::UNAUTHORIZED));
    };
    let (token, csrf) = (auth::random_token(), auth::random_token());
    state.store.create_ui_session(&auth::token_hash(&token), &name, &csrf, auth::SESSION_TTL).await?;
    let entry = NewAudit {
        operator: &name,
        role: role.as_str(),
        action: "login",
        target: None,
        outcome: "ok",
        detail: None,
        remote: client.remote.as_deref(),
    };
    state.store.audit(&entry).await?;
    tracing::info!(target: "provisioner::audit", user = %name, remote = ?client.remote, "console login");
    let mut r = Redirect::to("/ui").into_response();
    let session =
        auth::set_cookie(auth::SESSION_COOKIE, &token, Some(auth::SESSION_TTL.as_secs()), client.tls);
    let clear = auth::set_cookie(auth::LOGIN_CSRF_COOKIE, "", Some(0), client.tls);
    for c in [session, clear] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    Ok(r)
}

async fn logout(
    viewer: Viewer,
    client: Client,
    State(state): State<HttpState>,
    headers: HeaderMap,
    form: axum::Form<ActionForm>,
) -> Result<Response, UiError> {
    let Some(expected) = &viewer.csrf else { return Ok(Redirect::to("/ui").into_response()) };
    if !auth::same(&form.csrf, expected) {
        return Err(UiError(
            StatusCode::FORBIDDEN,
            "The form's CSRF token is missing or wrong: reload the page.".into(),
        ));
    }
    if let Some(token) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| auth::cookie(c, auth::SESSION_COOKIE))
    {
        state.store.delete_ui_session(&auth::token_hash(token)).await?;
    }
    let entry = NewAudit {
        operator: &viewer.name,
        role: viewer.role.as_str(),
        action: "logout",
        target: None,
        outcome: "ok",
        detail: None,
        remote: client.remote.as_deref(),
    };
    let _ = state.store.audit(&entry).await;
    let mut r = Redirect::to("/ui/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&auth::set_cookie(auth::SESSION_COOKIE, "", Some(0), client.tls)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(r)
}
