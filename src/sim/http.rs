//! The HTTP plumbing shared by the simulated services: which service a path belongs to, each
//! service's error body, token checks (401 the keystonemiddleware way), microversion
//! negotiation, and the layer that every API request passes (programmed faults, request ids,
//! version headers, per-endpoint call counters).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::openstack::compute::protocol::FaultBody;
use crate::openstack::identity::protocol::{ErrorBody as KeystoneError, ErrorDetail};
use crate::openstack::network::protocol::{ErrorBody as NeutronErrorBody, NeutronError};
use crate::sim::Sim;
use crate::sim::faults::Effect;
use crate::sim::state::TokenInfo;

/// The simulated services, by path prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Identity,
    Image,
    Network,
    Compute,
    Volume,
    Control,
}

impl Service {
    pub fn from_path(path: &str) -> Service {
        let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
        match first {
            "identity" => Service::Identity,
            "image" => Service::Image,
            "networking" => Service::Network,
            "compute" => Service::Compute,
            "volume" => Service::Volume,
            _ => Service::Control,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Service::Identity => "identity",
            Service::Image => "image",
            Service::Network => "network",
            Service::Compute => "compute",
            Service::Volume => "volume",
            Service::Control => "sim",
        }
    }
}

/// An API error, rendered as the service's own error body.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub service: Service,
    pub status: u16,
    /// Nova/Cinder body key, Neutron `type`, Keystone `title`; a default per status otherwise.
    pub kind: Option<String>,
    pub message: String,
    pub retry_after: Option<String>,
}

impl ApiError {
    pub fn new(service: Service, status: u16, message: impl Into<String>) -> ApiError {
        ApiError { service, status, kind: None, message: message.into(), retry_after: None }
    }

    pub fn kind(mut self, kind: impl Into<String>) -> ApiError {
        self.kind = Some(kind.into());
        self
    }

    pub fn retry_after(mut self, secs: impl Into<String>) -> ApiError {
        self.retry_after = Some(secs.into());
        self
    }

    pub fn not_found(service: Service, message: impl Into<String>) -> ApiError {
        ApiError::new(service, 404, message)
    }

    pub fn bad_request(service: Service, message: impl Into<String>) -> ApiError {
        ApiError::new(service, 400, message)
    }

    /// The 401 keystonemiddleware (and Keystone) answers for a missing, unknown or expired token.
    pub fn unauthorized(service: Service) -> ApiError {
        ApiError::new(service, 401, "The request you have made requires authentication.")
    }

    pub fn forbidden(service: Service, message: impl Into<String>) -> ApiError {
        ApiError::new(service, 403, message)
    }
}

fn reason(status: u16) -> &'static str {
    StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("Error")
}

fn neutron_type(status: u16) -> &'static str {
    match status {
        400 => "HTTPBadRequest",
        403 => "HTTPForbidden",
        404 => "HTTPNotFound",
        409 => "HTTPConflict",
        _ => "HTTPInternalServerError",
    }
}

fn default_message(status: u16) -> String {
    match status {
        500 => "Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ and attach the Nova API log if possible.".into(),
        503 => "Service Unavailable".into(),
        s => reason(s).to_string(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = if self.status == 401 {
            // keystonemiddleware's answer, the same from every service.
            let body = KeystoneError {
                error: ErrorDetail { code: 401, message: self.message.clone(), title: "Unauthorized".into() },
            };
            json(status, &body)
        } else {
            match self.service {
                Service::Identity | Service::Control => json(
                    status,
                    &KeystoneError {
                        error: ErrorDetail {
                            code: self.status,
                            message: self.message.clone(),
                            title: self.kind.clone().unwrap_or_else(|| reason(self.status).into()),
                        },
                    },
                ),
                Service::Image => {
                    // Glance answers errors as webob's small HTML page.
                    let title = format!("{} {}", self.status, reason(self.status));
                    let body = format!(
                        "<html>\n <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n  {}<br /><br />\n\n\n\n </body>\n</html>",
                        self.message
                    );
                    let mut r = (status, body).into_response();
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=UTF-8"));
                    r
                }
                Service::Network => json(
                    status,
                    &NeutronErrorBody {
                        error: NeutronError {
                            kind: self.kind.clone().unwrap_or_else(|| neutron_type(self.status).into()),
                            message: self.message.clone(),
                            detail: String::new(),
                        },
                    },
                ),
                Service::Compute | Service::Volume => {
                    let mut body = FaultBody::for_status(self.status, self.message.clone());
                    if let Some(k) = &self.kind {
                        body.kind = k.clone();
                    }
                    if self.service == Service::Volume && self.status == 413 {
                        body.detail.retry_after =
                            Some(self.retry_after.clone().unwrap_or_else(|| "0".into()));
                    }
                    json(status, &body)
                }
            }
        };
        if self.status == 401 {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Keystone uri=\"/identity\""));
        }
        if let Some(ra) = &self.retry_after
            && let Ok(v) = HeaderValue::from_str(ra)
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = (status, bytes).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

pub type ApiResult = Result<Response, ApiError>;

/// Parses a JSON request body into a wire type; a bad body is the service's 400.
pub fn parse_body<T: DeserializeOwned>(service: Service, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            service,
            format!("Invalid input for field/attribute: malformed request body: {e}"),
        )
    })
}

/// The query string as ordered pairs (keys may repeat, as in `?id=a&id=b`).
#[derive(Debug, Default, Clone)]
pub struct QueryPairs(pub Vec<(String, String)>);

impl QueryPairs {
    pub fn from_uri(uri: &axum::http::Uri) -> QueryPairs {
        QueryPairs(
            axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri).map(|q| q.0).unwrap_or_default(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    pub fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
    }

    /// `limit`, capped at `max`; `default` when absent. A non-number is a 400.
    pub fn limit(&self, service: Service, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .map(|n| n.min(max))
                .map_err(|_| ApiError::bad_request(service, format!("limit param must be an integer: {v}"))),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for QueryPairs {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(QueryPairs::from_uri(&parts.uri))
    }
}

/// A negotiated microversion (`2.52`, `3.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Microversion(pub u16, pub u16);

impl Microversion {
    pub fn at_least(self, major: u16, minor: u16) -> bool {
        self >= Microversion(major, minor)
    }

    fn parse(s: &str) -> Option<Microversion> {
        let (a, b) = s.trim().split_once('.')?;
        Some(Microversion(a.parse().ok()?, b.parse().ok()?))
    }
}

impl std::fmt::Display for Microversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

pub const NOVA_MIN: Microversion = Microversion(2, 1);
pub const NOVA_MAX: Microversion = Microversion(2, 101);
pub const CINDER_MIN: Microversion = Microversion(3, 0);
pub const CINDER_MAX: Microversion = Microversion(3, 71);

/// Reads the requested microversion of `service_type` (`compute`, `volume`) from
/// `OpenStack-API-Version` (or Nova's legacy header); `latest` means the maximum.
fn negotiate(
    headers: &HeaderMap,
    service_type: &str,
    legacy: Option<&str>,
    min: Microversion,
    max: Microversion,
) -> Result<Microversion, String> {
    let mut requested: Option<String> = None;
    for v in headers.get_all("openstack-api-version") {
        if let Ok(v) = v.to_str() {
            for part in v.split(',') {
                let mut it = part.split_whitespace();
                if it.next().is_some_and(|s| s.eq_ignore_ascii_case(service_type)) {
                    requested = it.next().map(str::to_string);
                }
            }
        }
    }
    if requested.is_none()
        && let Some(h) = legacy
        && let Some(v) = headers.get(h).and_then(|v| v.to_str().ok())
    {
        requested = Some(v.trim().to_string());
    }
    match requested {
        None => Ok(min),
        Some(v) if v.eq_ignore_ascii_case("latest") => Ok(max),
        Some(v) => match Microversion::parse(&v) {
            Some(mv) if mv >= min && mv <= max => Ok(mv),
            Some(_) => Err(format!(
                "Version {v} is not supported by the API. Minimum is {min} and maximum is {max}."
            )),
            None => Err(format!("Invalid API version request string {v}.")),
        },
    }
}

/// The request id the simulator answers with (`x-openstack-request-id`); instance actions
/// record it.
#[derive(Debug, Clone)]
pub struct LocalRequestId(pub String);

/// Marks left by fault rules for the handler (what the request creates ends in ERROR / stuck).
#[derive(Debug, Clone, Default)]
pub struct Injected {
    pub server_error: Option<String>,
    pub stuck: bool,
}

/// The layer on every API route: faults, microversions, request id, headers, counters.
pub async fn api_layer(State(sim): State<Arc<Sim>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let service = Service::from_path(&path);
    if service == Service::Control {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| crate::sim::control::template_of(&path));
    let request_id = format!("req-{}", uuid::Uuid::new_v4());
    // A caller's global request id is kept only in the form oslo.middleware accepts.
    if let Some(global) = req
        .headers()
        .get("x-openstack-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.strip_prefix("req-").is_some_and(|u| uuid::Uuid::parse_str(u).is_ok()))
    {
        tracing::debug!(global_request_id = global, local_request_id = %request_id, %path, "simulator request");
        let mut ids = sim.global_request_ids.lock().unwrap_or_else(|e| e.into_inner());
        if ids.len() >= 100_000 {
            ids.clear(); // a long-running simulator keeps a bounded record
        }
        *ids.entry(global.to_string()).or_insert(0) += 1;
    }

    // A server action names itself in the body: fault rules may match it.
    let mut action: Option<String> = None;
    if service == Service::Compute && method == Method::POST && path.ends_with("/action") {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap_or_default();
        action = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes)
            .ok()
            .and_then(|m| m.keys().next().cloned());
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(LocalRequestId(request_id.clone()));
    let effect: Option<Effect> = {
        let mut faults = sim.faults.lock().unwrap_or_else(|e| e.into_inner());
        faults.check_action(service.name(), method.as_str(), &path, action.as_deref())
    };
    let mut version: Option<Microversion> = None;
    let mut resp = 'resp: {
        if let Some(e) = &effect {
            if e.latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(e.latency_ms)).await;
            }
            if let Some(r) = &e.respond {
                let mut err = ApiError::new(
                    service,
                    r.status,
                    r.message.clone().unwrap_or_else(|| default_message(r.status)),
                );
                err.kind = r.kind.clone();
                err.retry_after = r.retry_after.clone();
                break 'resp err.into_response();
            }
            req.extensions_mut().insert(Injected { server_error: e.server_error.clone(), stuck: e.stuck });
        }
        let versioned = match service {
            Service::Compute if is_versioned(&path, "/compute/v2.1") => Some(negotiate(
                req.headers(),
                "compute",
                Some("x-openstack-nova-api-version"),
                NOVA_MIN,
                NOVA_MAX,
            )),
            Service::Volume if is_versioned(&path, "/volume/v3") => {
                Some(negotiate(req.headers(), "volume", None, CINDER_MIN, CINDER_MAX))
            }
            _ => None,
        };
        match versioned {
            Some(Ok(mv)) => {
                version = Some(mv);
                req.extensions_mut().insert(mv);
            }
            Some(Err(msg)) => break 'resp ApiError::new(service, 406, msg).into_response(),
            None => {}
        }
        let resp = next.run(req).await;
        if let Some(e) = effect.as_ref().filter(|e| e.answer_delay_ms > 0) {
            tokio::time::sleep(Duration::from_millis(e.answer_delay_ms)).await;
        }
        resp
    };

    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        h.insert("x-openstack-request-id", v.clone());
        if service == Service::Compute {
            h.insert("x-compute-request-id", v);
        }
    }
    if let Some(mv) = version {
        match service {
            Service::Compute => {
                if let Ok(v) = HeaderValue::from_str(&mv.to_string()) {
                    h.insert("x-openstack-nova-api-version", v);
                }
                if let Ok(v) = HeaderValue::from_str(&format!("compute {mv}")) {
                    h.insert("openstack-api-version", v);
                }
                h.insert(
                    header::VARY,
                    HeaderValue::from_static("OpenStack-API-Version, X-OpenStack-Nova-API-Version"),
                );
            }
            _ => {
                if let Ok(v) = HeaderValue::from_str(&format!("volume {mv}")) {
                    h.insert("openstack-api-version", v);
                }
                h.insert(header::VARY, HeaderValue::from_static("OpenStack-API-Version"));
            }
        }
    } else if service == Service::Identity {
        h.insert(header::VARY, HeaderValue::from_static("X-Auth-Token"));
    }
    if !h.contains_key(header::CONTENT_TYPE) && resp.status() != StatusCode::NO_CONTENT {
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    sim.count(service, &method, &template, resp.status().as_u16());
    resp
}

fn is_versioned(path: &str, root: &str) -> bool {
    path.strip_prefix(root).is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'))
}

/// The fallback for unknown paths: the service's 404, counted like any call.
pub async fn not_found(State(sim): State<Arc<Sim>>, method: Method, req: Request<Body>) -> Response {
    let path = req.uri().path().to_string();
    let service = Service::from_path(&path);
    tracing::debug!(%method, %path, "simulator: no such endpoint");
    let resp = ApiError::not_found(service, "The resource could not be found.").into_response();
    if service != Service::Control {
        sim.count(service, &method, &crate::sim::control::template_of(&path), 404);
    }
    resp
}

/// Checks the request's `X-Auth-Token`: unknown or expired is the 401 every service answers.
pub fn authenticate(sim: &Sim, headers: &HeaderMap, service: Service) -> Result<TokenInfo, ApiError> {
    let token = headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unauthorized(service))?;
    sim.token(token).ok_or_else(|| ApiError::unauthorized(service))
}

/// The project a token is scoped to, or 401/403.
pub fn scoped(tok: &TokenInfo, service: Service) -> Result<String, ApiError> {
    tok.project_id.clone().ok_or_else(|| ApiError::unauthorized(service))
}
