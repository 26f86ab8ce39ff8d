//! HTTP: the job status API, health and readiness, and Prometheus metrics.
//!
//! Routes (all GET but one):
//! - `/v1/jobs/{id}`: one job (by job id, or by order id) with its history; 404 if unknown.
//! - `/v1/jobs?order_id=&state=&action=&target_order_id=&project_id=&error_class=&since=&limit=&cursor=`: a
//!   page of jobs, newest first, with `next_cursor` for the next page.
//! - `/v1/services/{target_order_id}`: one service (what a create order made) with its jobs;
//!   `/v1/services?state=&project_id=&limit=&cursor=`: a page of services, newest first.
//! - `/v1/tenants/{tenant_ref}`: one tenant (state, Keystone ids, quotas, its newest tenant job)
//!   with every job that named it; `/v1/tenants?state=&limit=`: tenants, newest first. No
//!   secrets: passwords never leave the order they came in (sealed, then dropped).
//! - `/v1/findings?all=&kind=&project_id=&limit=`: the reconciler's findings, newest first (open
//!   ones; `all=true` adds the cleared ones).
//! - `POST /v1/preflight` with an order as the body: would it pass? (see
//!   [`crate::engine::preflight`]); 200 with `"ok": true`, or 422 with every check and its
//!   reason. Nothing is created.
//! - `/healthz`: the process answers. `/readyz`: the database answers and the broker is reachable
//!   (503 otherwise, saying which). `/metrics`: Prometheus text (see [`crate::metrics`]); the
//!   job-state gauges and the outbox backlog are counted from the database at each scrape.
//!
//! A listener bound beyond loopback must have a bearer token (settings refuse to start without
//! one); when a token is configured, `/v1/*` and `/metrics` require `Authorization: Bearer
//! <token>`, while `/healthz` and `/readyz` stay open for probes (they reveal nothing). The server
//! only reads: every write goes through the broker (orders, admin commands), except the
//! operator console's buttons under `/ui` (see [`ui`]: its own login, roles and CSRF tokens).

pub mod ui;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{Secret, Settings};
use crate::metrics;
use crate::store::Store;
use crate::store::services::{SERVICE_STATES, ServiceCursor, ServiceFilter};
use crate::store::status::{ACTIONS, Cursor, JobFilter, STATES};
use crate::store::tenants::TENANT_STATES;

/// Checks that the broker is reachable; `Err` says why not.
pub type BrokerProbe =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("PROVISIONER_HTTP_ADDR `{0}` is not an address like 127.0.0.1:8080")]
    BadAddr(String),
    #[error("PROVISIONER_HTTP_TOKEN is required when PROVISIONER_HTTP_ADDR ({0}) is not a loopback address")]
    TokenRequired(SocketAddr),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Serve(#[source] std::io::Error),
}

/// What the handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub store: Store,
    pub token: Option<Secret>,
    pub broker: BrokerProbe,
    /// The operator console's users and settings (see [`ui`]).
    pub console: ui::Console,
    /// The cloud the worker provisions into (pre-flight); `None` in a worker without an engine.
    pub cloud: Option<Arc<dyn crate::engine::cloud::Cloud>>,
}

impl HttpState {
    /// The state for a worker: its store, the configured token, and a TCP probe of the broker.
    pub fn new(settings: &Settings, store: Store) -> Self {
        HttpState {
            store,
            token: settings.http.token.clone(),
            broker: tcp_probe(settings.amqp.url.expose()),
            console: ui::Console::new(settings),
            cloud: None,
        }
    }
}

/// A probe that opens (and closes) a TCP connection to the broker of an `amqp://` URL.
pub fn tcp_probe(amqp_url: &str) -> BrokerProbe {
    let target = broker_address(amqp_url);
    Arc::new(move || {
        let target = target.clone();
        Box::pin(async move {
            let target = target.ok_or_else(|| "the AMQP URL names no host".to_string())?;
            match tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(&target)).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("broker {target}: {e}")),
                Err(_) => Err(format!("broker {target}: no answer within 2s")),
            }
        })
    })
}

/// `host:port` of an `amqp://user:pw@host:port/vhost` URL (port 5672, or 5671 for amqps).
pub fn broker_address(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
    if hostport.is_empty() {
        return None;
    }
    let default_port = if scheme == "amqps" { 5671 } else { 5672 };
    let has_port = match hostport.rfind(':') {
        Some(i) => !hostport[i..].contains(']'),
        None => false,
    };
    Some(if has_port { hostport.to_string() } else { format!("{hostport}:{default_port}") })
}

/// Checks the address and the token rule, and binds the listener.
pub async fn bind(addr: &str, token: Option<&Secret>) -> Result<tokio::net::TcpListener, HttpError> {
    let parsed: SocketAddr = addr.parse().map_err(|_| HttpError::BadAddr(addr.to_string()))?;
    if !parsed.ip().is_loopback() && token.is_none() {
        return Err(HttpError::TokenRequired(parsed));
    }
    tokio::net::TcpListener::bind(parsed).await.map_err(|source| HttpError::Bind { addr: parsed, source })
}

/// Serves until `shutdown` is cancelled, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: CancellationToken,
) -> Result<(), HttpError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, auth = state.token.is_some(), "HTTP status API listening");
    }
    // The peer address is for the console's audit log.
    axum::serve(listener, router(state).into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(HttpError::Serve)
}

/// The routes, with the token check on everything but the probes.
pub fn router(state: HttpState) -> Router {
    let protected = Router::new()
        .route("/v1/jobs", get(list_jobs))
        .route("/v1/jobs/{id}", get(show_job))
        .route("/v1/services", get(list_services))
        .route("/v1/services/{id}", get(show_service))
        .route("/v1/tenants", get(list_tenants))
        .route("/v1/tenants/{tenant_ref}", get(show_tenant))
        .route("/v1/findings", get(list_findings))
        .route("/v1/preflight", axum::routing::post(preflight))
        .route("/metrics", get(metrics_text))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(protected)
        .merge(ui::router())
        .with_state(state)
}

/// An API error: its status and a JSON body `{"error": "..."}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<crate::store::StoreError> for ApiError {
    // The one place where a store error becomes an HTTP status: the database is unavailable.
    fn from(e: crate::store::StoreError) -> Self {
        tracing::warn!(error = %e, "status API: database error");
        ApiError(StatusCode::SERVICE_UNAVAILABLE, "database unavailable".into())
    }
}

/// Compares without an early exit, so the time taken says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn require_token(
    State(state): State<HttpState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &state.token else { return next.run(request).await };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), token.expose().as_bytes()) => {
            next.run(request).await
        }
        _ => {
            let mut response =
                ApiError(StatusCode::UNAUTHORIZED, "a valid bearer token is required".into()).into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
            response
        }
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let db = state.store.ping().await.map_err(|e| e.to_string());
    let broker = (state.broker)().await;
    let ok = db.is_ok() && broker.is_ok();
    let body = serde_json::json!({
        "ready": ok,
        "database": db.err().unwrap_or_else(|| "ok".into()),
        "broker": broker.err().unwrap_or_else(|| "ok".into()),
    });
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body)).into_response()
}

async fn show_job(State(state): State<HttpState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.store.job_detail(&id).await? {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no job with job id or order id {id:?}"))),
    }
}

/// Query parameters of `GET /v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub order_id: Option<String>,
    pub state: Option<String>,
    pub action: Option<String>,
    pub target_order_id: Option<String>,
    pub project_id: Option<String>,
    pub error_class: Option<String>,
    /// RFC 3339.
    pub since: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

async fn list_jobs(
    State(state): State<HttpState>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    if let Some(s) = &p.state
        && !STATES.contains(&s.as_str())
    {
        return Err(bad(format!("state {s:?} is not one of {}", STATES.join(", "))));
    }
    if let Some(a) = &p.action
        && !ACTIONS.contains(&a.as_str())
    {
        return Err(bad(format!("action {a:?} is not one of {}", ACTIONS.join(", "))));
    }
    let since = match &p.since {
        Some(s) => Some(
            chrono::DateTime::parse_from_rfc3339(s)
                .map_err(|_| bad(format!("since {s:?} is not an RFC 3339 time")))?
                .with_timezone(&chrono::Utc),
        ),
        None => None,
    };
    let cursor = match &p.cursor {
        Some(c) => Some(Cursor::decode(c).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let filter = JobFilter {
        order_id: p.order_id,
        state: p.state,
        action: p.action,
        target_order_id: p.target_order_id,
        project_id: p.project_id,
        error_class: p.error_class,
        since,
        limit: p.limit.unwrap_or(50),
        cursor,
    };
    Ok(Json(state.store.list_jobs(&filter).await?).into_response())
}

async fn show_service(State(state): State<HttpState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match state.store.service_detail(&id).await? {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no service made by order {id:?}"))),
    }
}

/// Query parameters of `GET /v1/services`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceParams {
    pub state: Option<String>,
    pub project_id: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

async fn list_services(
    State(state): State<HttpState>,
    params: Result<Query<ServiceParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    if let Some(s) = &p.state
        && !SERVICE_STATES.contains(&s.as_str())
    {
        return Err(bad(format!("state {s:?} is not one of {}", SERVICE_STATES.join(", "))));
    }
    let cursor = match &p.cursor {
        Some(c) => Some(ServiceCursor::decode(c).map_err(|e| bad(e.to_string()))?),
        None => None,
    };
    let filter =
        ServiceFilter { state: p.state, project_id: p.project_id, limit: p.limit.unwrap_or(50), cursor };
    Ok(Json(state.store.list_services(&filter).await?).into_response())
}

async fn show_tenant(
    State(state): State<HttpState>,
    Path(tenant_ref): Path<String>,
) -> Result<Response, ApiError> {
    match state.store.tenant_detail(&tenant_ref).await? {
        Some(detail) => Ok(Json(detail).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("no tenant {tenant_ref:?}"))),
    }
}

/// Query parameters of `GET /v1/tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantParams {
    pub state: Option<String>,
    pub limit: Option<u32>,
}

async fn list_tenants(
    State(state): State<HttpState>,
    params: Result<Query<TenantParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if let Some(s) = &p.state
        && !TENANT_STATES.contains(&s.as_str())
    {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("state {s:?} is not one of {}", TENANT_STATES.join(", ")),
        ));
    }
    let tenants = state.store.list_tenants(p.state.as_deref(), p.limit.unwrap_or(50)).await?;
    Ok(Json(serde_json::json!({ "tenants": tenants })).into_response())
}

/// Query parameters of `GET /v1/findings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingParams {
    pub all: Option<bool>,
    pub kind: Option<String>,
    pub project_id: Option<String>,
    pub limit: Option<u32>,
}

async fn list_findings(
    State(state): State<HttpState>,
    params: Result<Query<FindingParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    if let Some(k) = &p.kind
        && k != "orphan"
        && k != "drift"
    {
        return Err(ApiError(StatusCode::BAD_REQUEST, format!("kind {k:?} is not one of orphan, drift")));
    }
    let filter = crate::store::reconcile::FindingFilter {
        all: p.all.unwrap_or(false),
        kind: p.kind,
        project_id: p.project_id,
        limit: p.limit.unwrap_or(100),
    };
    let findings = state.store.list_findings(&filter).await?;
    Ok(Json(serde_json::json!({ "findings": findings })).into_response())
}

/// The compiled schemas pre-flight checks against (compiled once).
static SCHEMAS: std::sync::LazyLock<crate::messages::Schemas> =
    std::sync::LazyLock::new(crate::messages::Schemas::new);

async fn preflight(State(state): State<HttpState>, body: axum::body::Bytes) -> Response {
    let report = crate::engine::preflight::check_body(
        &SCHEMAS,
        state.cloud.as_deref(),
        Some(&state.store),
        &body,
        "http",
    )
    .await;
    let status = if report.ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    (status, Json(report)).into_response()
}

async fn metrics_text(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    // The DB-derived gauges are refreshed at each scrape; if the database is down, the counters
    // are still worth serving, so that failure only shows as a stale gauge and a log line.
    match state.store.active_job_counts().await {
        Ok(counts) => {
            for (s, n) in counts {
                metrics::set(metrics::JOBS_BY_STATE, &[("state", &s)], n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count jobs"),
    }
    match state.store.outbox_backlog().await {
        Ok(n) => metrics::set(metrics::OUTBOX_BACKLOG, &[], n as f64),
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count the outbox backlog"),
    }
    // Prometheus asks for OpenMetrics first; curl and older tools get the 0.0.4 text format.
    let format = metrics::Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    ([(header::CONTENT_TYPE, format.content_type())], metrics::render_as(format)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_address_from_amqp_urls() {
        assert_eq!(
            broker_address("amqp://guest:guest@127.0.0.1:5672/%2f").as_deref(),
            Some("127.0.0.1:5672")
        );
        assert_eq!(broker_address("amqp://u:p@mq/prod").as_deref(), Some("mq:5672"));
        assert_eq!(broker_address("amqps://mq.example").as_deref(), Some("mq.example:5671"));
        assert_eq!(broker_address("amqp://[::1]:5673/").as_deref(), Some("[::1]:5673"));
        assert_eq!(broker_address("amqp:///"), None);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[tokio::test]
    async fn a_public_listener_without_a_token_is_refused() {
        let e = bind("0.0.0.0:0", None).await.unwrap_err();
        assert!(matches!(e, HttpError::TokenRequired(_)), "{e}");
        assert!(bind("127.0.0.1:0", None).await.is_ok());
        assert!(bind("0.0.0.0:0", Some(&Secret::new("t"))).await.is_ok());
    }
}
