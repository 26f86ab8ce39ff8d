//! The one error taxonomy of the cloud client, and the one function that decides it.
//!
//! Every failed call, whatever the service, becomes an [`OpenStackError`]: a class
//! ([`ErrorClass`]) that tells the engine what to do (retry soon, retry after a delay the cloud
//! asked for, give up with `quota_exceeded`, `not_found`, `auth`...), plus what an operator needs to
//! understand it: the service, method and path (never the query string), the HTTP status, the
//! request id, the fault name and the service's own message parsed from its error body format.
//!
//! [`classify`] is the only place where an HTTP status becomes a class. The rules, from each
//! service's api-ref and behaviour seen in deployments:
//! - connection error, timeout, 408, 500, 502, 503, 504: `Transient`;
//! - 429, and a 413 `overLimit` that is a rate limit (no quota wording): `RateLimited`, with
//!   `Retry-After` (seconds or an HTTP date, else the body's `retryAfter`) capped at
//!   [`MAX_RETRY_AFTER`];
//! - quota: Nova 403 "Quota exceeded", Neutron 409 `OverQuota`, Cinder 413 quota
//!   (`VolumeLimitExceeded`, "exceeds allowed gigabytes quota"), and any 403/409/413 whose
//!   message speaks of a quota: `Quota`, never retried even when `Retry-After: 0` is sent;
//! - a conflict that clears by itself (Nova `conflictingRequest` "while it is in task_state", a
//!   Cinder/Nova volume "status must be available" while it is still busy, other 409s): `Conflict`,
//!   retryable a bounded number of times;
//! - a Keystone 409 (a name that must be unique per domain is taken: "Conflict occurred
//!   attempting to store project/user"): `AlreadyExists`, never retried: the caller finds the
//!   existing one and decides whether to adopt it;
//! - 404: `NotFound`; 401 (after the session's one re-authentication) and 403 that is not quota
//!   (policy: the service user lacks a role in the project, or is not a Keystone admin): `Auth`.
//!   A policy refusal is `Auth` even when it names a quota API (Nova's "Policy doesn't allow
//!   os_compute_api:os-quota-sets:update", Cinder's "volume_extension:quotas:update", Neutron's
//!   "rule:update_quota is disallowed by policy");
//! - Nova's 400 for an availability zone that is not available or a server group hint that
//!   names no group: `Invalid` (the order asked for it: `invalid_order`, never retried);
//! - any other status: `Permanent`.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

/// The longest `Retry-After` we honour; longer asks are capped (the engine also caps).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The service a call went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Identity,
    Image,
    Network,
    Compute,
    Volume,
}

impl Service {
    /// The project's name, as operators know it, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Service::Identity => "keystone",
            Service::Image => "glance",
            Service::Network => "neutron",
            Service::Compute => "nova",
            Service::Volume => "cinder",
        }
    }

    /// Catalog service types, most preferred first.
    pub fn catalog_types(self) -> &'static [&'static str] {
        match self {
            Service::Identity => &["identity"],
            Service::Image => &["image"],
            Service::Network => &["network"],
            Service::Compute => &["compute"],
            Service::Volume => &["block-storage", "volumev3", "volume"],
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the engine should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Network trouble or a 5xx that usually passes: retry with backoff.
    Transient,
    /// The cloud asked us to slow down: retry after `retry_after` (capped), or backoff if absent.
    RateLimited { retry_after: Option<Duration> },
    /// The resource is busy (another task, a status in transition): retry a bounded number of times.
    Conflict,
    /// A quota of the project is exhausted: never retried.
    Quota,
    /// The resource (or the one named in the order) does not exist.
    NotFound,
    /// A name in the order matches more than one resource.
    Ambiguous,
    /// Keystone's 409: a project, user or domain with this name already exists in the domain.
    /// Not retried; the caller looks the existing one up and adopts it if it is its own.
    AlreadyExists,
    /// Authentication failed, or the service user may not do this in the project.
    Auth,
    /// The order names a region the token's catalog does not list (born in the session's
    /// endpoint lookup): the order is invalid, no retry makes the region appear.
    UnknownRegion,
    /// Nova's 400 for a placement the request asked for and the cloud does not offer: an
    /// availability zone that is not available ("The requested availability zone is not
    /// available"), a scheduler hint naming no server group ("Instance group X could not be
    /// found."). Not retried: the order's own choice (`invalid_order`).
    Invalid,
    /// Anything else: a bad request, an unexpected answer. Not retried.
    Permanent,
}

impl ErrorClass {
    /// Whether trying again later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorClass::Transient | ErrorClass::RateLimited { .. } | ErrorClass::Conflict)
    }

    /// Short snake_case name for logs and job history.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::RateLimited { .. } => "rate_limited",
            ErrorClass::Conflict => "conflict",
            ErrorClass::Quota => "quota",
            ErrorClass::NotFound => "not_found",
            ErrorClass::Ambiguous => "ambiguous",
            ErrorClass::AlreadyExists => "already_exists",
            ErrorClass::Auth => "auth",
            ErrorClass::UnknownRegion => "unknown_region",
            ErrorClass::Invalid => "invalid",
            ErrorClass::Permanent => "permanent",
        }
    }
}

impl std::fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrorClass::RateLimited { retry_after: Some(d) } => write!(f, "rate_limited (retry after {d:?})"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// A failed cloud call: class, where, and the service's own words. (The strings are boxed to
/// keep `Result<_, OpenStackError>` small.)
#[derive(Debug, Clone, thiserror::Error)]
#[error("{service} {method} {path}: {}{message} [{class}{}]",
    .status.map(|s| format!("{s} ")).unwrap_or_default(),
    .request_id.as_ref().map(|r| format!(", {r}")).unwrap_or_default())]
pub struct OpenStackError {
    pub class: ErrorClass,
    pub service: Service,
    pub method: Box<str>,
    /// The request path without its query string (which may carry names), e.g. `/servers`.
    pub path: Box<str>,
    /// The HTTP status, if the service answered.
    pub status: Option<u16>,
    /// `X-Openstack-Request-Id` / `X-Compute-Request-Id`, for the cloud operator's logs.
    pub request_id: Option<Box<str>>,
    /// The fault name of the body (`forbidden`, `overLimit`, Neutron's `OverQuota`...).
    pub fault: Option<Box<str>>,
    /// The service's own message (or ours, for errors that are not HTTP answers).
    pub message: String,
}

impl OpenStackError {
    /// An error that did not come from an HTTP answer (lookup results, transport, decoding).
    pub fn new(
        class: ErrorClass,
        service: Service,
        method: &str,
        path: &str,
        message: impl Into<String>,
    ) -> Self {
        OpenStackError {
            class,
            service,
            method: method.into(),
            path: strip_query(path).into(),
            status: None,
            request_id: None,
            fault: None,
            message: message.into(),
        }
    }

    /// The request never got an answer: connection refused or reset, timeout, TLS failure.
    pub fn transport(service: Service, method: &str, path: &str, err: &reqwest::Error) -> Self {
        let what = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "cannot connect"
        } else {
            "request failed"
        };
        // reqwest's Display includes the URL; the path is already ours, so keep only the cause.
        let mut cause = String::new();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            cause = s.to_string();
            source = s.source();
        }
        let message = if cause.is_empty() { what.to_string() } else { format!("{what}: {cause}") };
        OpenStackError::new(ErrorClass::Transient, service, method, path, message)
    }

    /// A 2xx answer whose body is not what the api-ref says.
    pub fn decode(service: Service, method: &str, path: &str, err: impl std::fmt::Display) -> Self {
        OpenStackError::new(ErrorClass::Permanent, service, method, path, format!("unexpected answer: {err}"))
    }

    /// An error answer: classified by [`classify`], with the service's message.
    pub fn from_response(
        service: Service,
        method: &str,
        path: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Self {
        let parsed = ErrorBody::parse(body);
        let class = classify(service, status, headers, &parsed);
        OpenStackError {
            class,
            service,
            method: method.into(),
            path: strip_query(path).into(),
            status: Some(status.as_u16()),
            request_id: request_id(headers),
            fault: parsed.fault.map(String::into_boxed_str),
            message: parsed.message,
        }
    }

    pub fn is_retryable(&self) -> bool {
        self.class.is_retryable()
    }

    /// The delay the cloud asked for, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.class {
            ErrorClass::RateLimited { retry_after } => retry_after,
            _ => None,
        }
    }

    /// The event class the engine reports when it gives up on this error
    /// (`messages::event::ErrorClass`): quota, not found, auth, a 400 the order caused, or a cloud
    /// error.
    pub fn event_class(&self) -> crate::messages::event::ErrorClass {
        use crate::messages::event::ErrorClass as E;
        match self.class {
            ErrorClass::Quota => E::QuotaExceeded,
            ErrorClass::NotFound => E::NotFound,
            ErrorClass::Ambiguous
            | ErrorClass::AlreadyExists
            | ErrorClass::UnknownRegion
            | ErrorClass::Invalid => E::InvalidOrder,
            ErrorClass::Auth => E::Auth,
            ErrorClass::Permanent if self.status == Some(400) => E::InvalidOrder,
            ErrorClass::Transient if self.status.is_none() && self.message.starts_with("timed out") => {
                E::Timeout
            }
            _ => E::CloudError,
        }
    }
}

/// The one resource a lookup by id or name must find: none is `NotFound`, more than one is
/// `Ambiguous` (the message lists the ids, so an operator can fix the order or the cloud).
pub fn exactly_one<T>(
    service: Service,
    path: &str,
    what: &str,
    wanted: &str,
    mut found: Vec<T>,
    id: impl Fn(&T) -> &str,
) -> Result<T, OpenStackError> {
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(OpenStackError::new(
            ErrorClass::NotFound,
            service,
            "GET",
            path,
            format!("no {what} with id or name {wanted:?}"),
        )),
        n => {
            let ids: Vec<&str> = found.iter().map(&id).collect();
            Err(OpenStackError::new(
                ErrorClass::Ambiguous,
                service,
                "GET",
                path,
                format!("{n} {what}s are named {wanted:?} ({}); use an id", ids.join(", ")),
            ))
        }
    }
}

fn strip_query(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

fn request_id(headers: &HeaderMap) -> Option<Box<str>> {
    ["x-openstack-request-id", "x-compute-request-id", "x-request-id"]
        .iter()
        .find_map(|h| headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(Box::from)
}

/// What an error body says, whatever the service's format:
/// - Nova and Cinder: `{"<faultName>": {"code": 403, "message": "...", "retryAfter"?: "0"}}`;
/// - Neutron: `{"NeutronError": {"type": "OverQuota", "message": "...", "detail": ""}}`;
/// - Keystone: `{"error": {"code": 401, "title": "Unauthorized", "message": "..."}}`;
/// - API-WG `{"errors": [{"title", "detail", "code"}]}`, or a plain `{"message": "..."}`;
/// - Glance and proxies: text or HTML (`404 Not Found\n\nThe resource could not be found.`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorBody {
    pub fault: Option<String>,
    pub message: String,
    /// Nova/Cinder `retryAfter` in the body, seconds.
    pub retry_after: Option<u64>,
}

impl ErrorBody {
    pub fn parse(body: &[u8]) -> ErrorBody {
        if let Ok(json) = serde_json::from_slice::<Value>(body)
            && let Some(mut parsed) = Self::from_json(&json)
        {
            // Glance puts webob's HTML line breaks into its JSON messages.
            parsed.message = ["<br />", "<br/>", "<br>"]
                .iter()
                .fold(parsed.message, |m, br| m.replace(br, " "))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            return parsed;
        }
        let text = String::from_utf8_lossy(body);
        ErrorBody { fault: None, message: plain_text(&text), retry_after: None }
    }

    fn from_json(json: &Value) -> Option<ErrorBody> {
        let obj = json.as_object()?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let retry = |v: Option<&Value>| {
            v.and_then(|r| r.as_u64().or_else(|| r.as_str().and_then(|s| s.trim().parse().ok())))
        };
        if let Some(errors) = obj.get("errors").and_then(Value::as_array) {
            let first = errors.first()?;
            let message = text(first.get("detail")).or_else(|| text(first.get("title")))?;
            return Some(ErrorBody { fault: text(first.get("code")), message, retry_after: None });
        }
        if let Some(neutron) = obj.get("NeutronError").and_then(Value::as_object) {
            let message = text(neutron.get("message")).unwrap_or_default();
            return Some(ErrorBody { fault: text(neutron.get("type")), message, retry_after: None });
        }
        if let Some(message) = text(obj.get("message")) {
            // Glance's JSON errors, some proxies; `title` may name the fault.
            return Some(ErrorBody { fault: text(obj.get("title")), message, retry_after: None });
        }
        // One key naming the fault, whose value carries the message (Nova, Cinder, Keystone).
        let (key, inner) = obj.iter().find(|(_, v)| v.get("message").is_some())?;
        let inner = inner.as_object()?;
        let fault = if key == "error" { text(inner.get("title")) } else { Some(key.clone()) };
        Some(ErrorBody {
            fault,
            message: text(inner.get("message")).unwrap_or_default(),
            retry_after: retry(inner.get("retryAfter")),
        })
    }

    /// A policy refusal (Nova "Policy doesn't allow ...", Neutron "... is disallowed by
    /// policy" or `InvalidScope` "... requires a scope of ['project']", Keystone "You are not
    /// authorized to perform the requested action").
    fn says_policy(&self) -> bool {
        let m = self.message.to_ascii_lowercase();
        m.contains("policy")
            || m.contains("not authorized")
            || m.contains("requires a scope")
            || matches!(self.fault.as_deref(), Some("PolicyNotAuthorized" | "InvalidScope"))
    }

    fn says_quota(&self) -> bool {
        let m = self.message.to_ascii_lowercase();
        m.contains("quota")
            || self.message.contains("VolumeLimitExceeded")
            || self.fault.as_deref() == Some("OverQuota")
    }
}

/// Collapses text or HTML to one line, tags removed, bounded in length.
fn plain_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(512));
    let mut in_tag = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if in_tag => {}
            c if c.is_whitespace() => out.push(' '),
            c => out.push(c),
        }
    }
    let collapsed = out.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(500) {
        Some((i, _)) => format!("{}...", &collapsed[..i]),
        None => collapsed,
    }
}

/// `Retry-After` as delta-seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Some(Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// THE classification: HTTP answer → [`ErrorClass`]. See the module documentation for the rules.
pub fn classify(service: Service, status: StatusCode, headers: &HeaderMap, body: &ErrorBody) -> ErrorClass {
    let code = status.as_u16();
    let quota = body.says_quota();
    match code {
        401 => ErrorClass::Auth,
        403 if body.says_policy() => ErrorClass::Auth,
        403 if quota => ErrorClass::Quota,
        403 => ErrorClass::Auth,
        404 => ErrorClass::NotFound,
        409 if quota => ErrorClass::Quota,
        409 if service == Service::Identity => ErrorClass::AlreadyExists,
        // Nova's `KeyPairExists`: "Key pair 'prov-...' already exists."
        409 if service == Service::Compute && body.message.contains("already exists") => {
            ErrorClass::AlreadyExists
        }
        409 if service == Service::Network && body.fault.as_deref() == Some("IpAddressGenerationFailure") => {
            ErrorClass::Permanent
        }
        409 => ErrorClass::Conflict,
        413 if quota => ErrorClass::Quota,
        413 | 429 => {
            let header = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now()));
            let retry_after =
                header.or(body.retry_after.map(Duration::from_secs)).map(|d| d.min(MAX_RETRY_AFTER));
            ErrorClass::RateLimited { retry_after }
        }
        400 if service == Service::Compute && unavailable_placement(&body.message) => ErrorClass::Invalid,
        400 if busy(&body.message) => ErrorClass::Conflict,
        408 | 500 | 502 | 503 | 504 => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

/// Nova's 400 for the zone or the server group a create asked for: `InvalidRequest` "The
/// requested availability zone is not available" (also on a resize or unshelve to such a
/// zone), `InstanceGroupNotFound` "Instance group <id> could not be found.".
fn unavailable_placement(message: &str) -> bool {
    message.contains("availability zone is not available")
        || (message.starts_with("Instance group ") && message.ends_with("could not be found."))
}

/// The class of a server's `fault` (a build that Nova aborted): `Quota` when a quota of the
/// volume Nova makes for a boot from volume was hit (Nova's `OverQuota` "Quota exceeded for
/// resources: volumes", or Cinder's own `VolumeLimitExceeded` / `VolumeSizeExceedsAvailableQuota`
/// "exceeds allowed gigabytes quota" passed through), else `Permanent` (a build that failed is
/// not retried by asking again for the same server).
pub fn classify_fault(message: &str) -> ErrorClass {
    let m = message.to_ascii_lowercase();
    if m.contains("quota exceeded")
        || m.contains("exceeded for quota")
        || m.contains("gigabytes quota")
        || message.contains("VolumeLimitExceeded")
        || message.contains("VolumeSizeExceedsAvailableQuota")
        || message.contains("OverQuota")
    {
        ErrorClass::Quota
    } else {
        ErrorClass::Permanent
    }
}

/// A 400 that names a state in transition: the same request succeeds once it has settled
/// (Cinder `Invalid volume: Volume status must be available`, Nova attaching a volume that is still
/// `creating`, an instance in a task state).
fn busy(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("status must be")
        || m.contains("task_state")
        || m.contains("task state")
        || m.contains("currently in '")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    fn class(service: Service, status: u16, retry_after: Option<&str>, body: &str) -> ErrorClass {
        let mut headers = HeaderMap::new();
        if let Some(r) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from_str(r).unwrap());
        }
        classify(service, StatusCode::from_u16(status).unwrap(), &headers, &ErrorBody::parse(body.as_bytes()))
    }

    // Error bodies below are the services' own, from the api-ref and the services' fault code.
    const NOVA_QUOTA: &str = r#"{"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"}}"#;
    const NOVA_CORES_QUOTA: &str = r#"{"forbidden": {"message": "Quota exceeded for cores: Requested 2, but already used 20 of 20 cores", "code": 403}}"#;
    const NOVA_POLICY: &str = r#"{"forbidden": {"code": 403, "message": "Policy doesn't allow os_compute_api:servers:create to be performed."}}"#;
    const NOVA_NOT_FOUND: &str = r#"{"itemNotFound": {"code": 404, "message": "Instance 9168b536-cd40-4630-b43f-b259807c6e87 could not be found."}}"#;
    const NOVA_BUSY: &str = r#"{"conflictingRequest": {"code": 409, "message": "Cannot 'attach_volume' instance 9168b536-cd40-4630-b43f-b259807c6e87 while it is in task_state spawning"}}"#;
    const NOVA_BAD: &str = r#"{"badRequest": {"code": 400, "message": "Invalid key_name provided."}}"#;
    const NOVA_RATE: &str =
        r#"{"overLimit": {"code": 413, "message": "This request was rate-limited.", "retryAfter": "7"}}"#;
    const NEUTRON_QUOTA: &str = r#"{"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: ['port'].", "detail": ""}}"#;
    const NEUTRON_NOT_FOUND: &str = r#"{"NeutronError": {"type": "PortNotFound", "message": "Port 5e3f1c2a-0b7e-4c54-8c4e-1d2e3f4a5b6c could not be found.", "detail": ""}}"#;
    const NEUTRON_NO_IP: &str = r#"{"NeutronError": {"type": "IpAddressGenerationFailure", "message": "No more IP addresses available on network 6e3e2a51-1dbb-4a85-9f9e-9c0b0d6e8e21.", "detail": ""}}"#;
    const CINDER_GIGABYTES: &str = r#"{"overLimit": {"code": 413, "message": "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested 10G, quota is 1000G and 995G has been consumed.", "retryAfter": "0"}}"#;
    const CINDER_VOLUMES: &str = r#"{"overLimit": {"code": 413, "message": "VolumeLimitExceeded: Maximum number of volumes allowed (10) exceeded for quota 'volumes'.", "retryAfter": "0"}}"#;
    const CINDER_BUSY: &str = r#"{"badRequest": {"code": 400, "message": "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots, awaiting a transfer, or be disassociated from snapshots after volume transfer."}}"#;
    const CINDER_NOT_FOUND: &str = r#"{"itemNotFound": {"code": 404, "message": "Volume 5aa119a8-d25b-45a7-8d1b-88e127885635 could not be found."}}"#;
    const KEYSTONE_401: &str = r#"{"error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}}"#;
    const GLANCE_404: &str = "<html>\n <head>\n  <title>404 Not Found</title>\n </head>\n <body>\n  <h1>404 Not Found</h1>\n  No image found with ID 8a7c\n\n </body>\n</html>";

    #[test]
    fn quota_of_all_three_services_is_quota_even_with_retry_after_zero() {
        assert_eq!(class(Service::Compute, 403, None, NOVA_QUOTA), ErrorClass::Quota);
        assert_eq!(class(Service::Compute, 403, None, NOVA_CORES_QUOTA), ErrorClass::Quota);
        assert_eq!(class(Service::Network, 409, None, NEUTRON_QUOTA), ErrorClass::Quota);
        assert_eq!(class(Service::Volume, 413, Some("0"), CINDER_GIGABYTES), ErrorClass::Quota);
        assert_eq!(class(Service::Volume, 413, Some("0"), CINDER_VOLUMES), ErrorClass::Quota);
        // Older Nova answered quota with 413 overLimit.
        let old_nova = r#"{"overLimit": {"code": 413, "message": "Quota exceeded for ram: Requested 2048, but already used 51200 of 51200 ram", "retryAfter": "0"}}"#;
        assert_eq!(class(Service::Compute, 413, Some("0"), old_nova), ErrorClass::Quota);
        assert!(!ErrorClass::Quota.is_retryable());
    }

    #[test]
    fn a_boot_volume_over_cinder_quota_is_a_quota_fault() {
        // Nova's compute manager: OverQuota(overs='volumes') in a BuildAbortException.
        let nova = "Build of instance 2f8a3c6e-1d4b-4e5f-9a7b-8c9d0e1f2a3b aborted: Quota exceeded for resources: volumes";
        assert_eq!(classify_fault(nova), ErrorClass::Quota);
        assert_eq!(
            classify_fault(
                "VolumeLimitExceeded: Maximum number of volumes allowed (2) exceeded for quota 'volumes'."
            ),
            ErrorClass::Quota
        );
        assert_eq!(
            classify_fault(
                "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested 30G, quota is 20G and 0G has been consumed."
            ),
            ErrorClass::Quota
        );
        assert_eq!(
            classify_fault("Build of instance x aborted: Failure prepping block device."),
            ErrorClass::Permanent
        );
    }

    #[test]
    fn rate_limits_carry_the_delay_capped() {
        assert_eq!(
            class(Service::Compute, 429, Some("3"), "{}"),
            ErrorClass::RateLimited { retry_after: Some(Duration::from_secs(3)) }
        );
        assert_eq!(
            class(Service::Compute, 413, None, NOVA_RATE),
            ErrorClass::RateLimited { retry_after: Some(Duration::from_secs(7)) }
        );
        assert_eq!(
            class(Service::Volume, 429, Some("86400"), ""),
            ErrorClass::RateLimited { retry_after: Some(MAX_RETRY_AFTER) }
        );
        assert_eq!(class(Service::Network, 429, None, ""), ErrorClass::RateLimited { retry_after: None });
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(30)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert!(ErrorClass::RateLimited { retry_after: None }.is_retryable());
    }

    #[test]
    fn the_rest_of_the_taxonomy() {
        assert_eq!(class(Service::Compute, 403, None, NOVA_POLICY), ErrorClass::Auth);
        assert_eq!(class(Service::Identity, 401, None, KEYSTONE_401), ErrorClass::Auth);
        assert_eq!(class(Service::Compute, 404, None, NOVA_NOT_FOUND), ErrorClass::NotFound);
        assert_eq!(class(Service::Network, 404, None, NEUTRON_NOT_FOUND), ErrorClass::NotFound);
        assert_eq!(class(Service::Volume, 404, None, CINDER_NOT_FOUND), ErrorClass::NotFound);
        assert_eq!(class(Service::Image, 404, None, GLANCE_404), ErrorClass::NotFound);
        assert_eq!(class(Service::Compute, 409, None, NOVA_BUSY), ErrorClass::Conflict);
        assert_eq!(class(Service::Volume, 400, None, CINDER_BUSY), ErrorClass::Conflict);
        assert_eq!(class(Service::Network, 409, None, NEUTRON_NO_IP), ErrorClass::Permanent);
        assert_eq!(class(Service::Compute, 400, None, NOVA_BAD), ErrorClass::Permanent);
        for s in [500, 502, 503, 504, 408] {
            assert_eq!(class(Service::Compute, s, None, "oops"), ErrorClass::Transient, "{s}");
        }
        assert_eq!(class(Service::Compute, 501, None, ""), ErrorClass::Permanent);
        assert_eq!(class(Service::Compute, 422, None, ""), ErrorClass::Permanent);
    }

    #[test]
    fn each_service_message_is_parsed() {
        let b = ErrorBody::parse(NOVA_QUOTA.as_bytes());
        assert_eq!(b.fault.as_deref(), Some("forbidden"));
        assert!(b.message.starts_with("Quota exceeded for instances"));
        let b = ErrorBody::parse(NEUTRON_QUOTA.as_bytes());
        assert_eq!(b.fault.as_deref(), Some("OverQuota"));
        assert_eq!(b.message, "Quota exceeded for resources: ['port'].");
        let b = ErrorBody::parse(CINDER_VOLUMES.as_bytes());
        assert_eq!((b.fault.as_deref(), b.retry_after), (Some("overLimit"), Some(0)));
        let b = ErrorBody::parse(KEYSTONE_401.as_bytes());
        assert_eq!(b.fault.as_deref(), Some("Unauthorized"));
        assert_eq!(b.message, "The request you have made requires authentication.");
        let b = ErrorBody::parse(GLANCE_404.as_bytes());
        assert_eq!(b.message, "404 Not Found 404 Not Found No image found with ID 8a7c");
        let b = ErrorBody::parse(br#"{"errors": [{"status": 409, "title": "Conflict", "detail": "busy", "code": "placement.concurrent_update"}]}"#);
        assert_eq!((b.fault.as_deref(), b.message.as_str()), (Some("placement.concurrent_update"), "busy"));
        let b = ErrorBody::parse(b"");
        assert_eq!(b.message, "");
    }

    /// Answers captured from a real deployment (keystone 30, glance 33, neutron 29, nova 34,
    /// cinder 29 on loopback), headers included: the classification must hold on them.
    #[test]
    fn real_answers_of_a_deployed_cloud() {
        let answer = |service, status: u16, headers: &[(&'static str, &'static str)], body: &str| {
            let mut map = HeaderMap::new();
            for (k, v) in headers {
                map.insert(*k, HeaderValue::from_static(v));
            }
            OpenStackError::from_response(
                service,
                "POST",
                "/x",
                StatusCode::from_u16(status).unwrap(),
                &map,
                body.as_bytes(),
            )
        };
        let e = answer(
            Service::Volume,
            413,
            &[("retry-after", "0"), ("x-openstack-request-id", "req-bede31b3-265d-4b19-8ee8-79421168aecd")],
            r#"{"overLimit": {"code": 413, "message": "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. Requested 1G, quota is 0G and 0G has been consumed.", "retryAfter": "0"}}"#,
        );
        assert_eq!((e.class, e.retry_after()), (ErrorClass::Quota, None));
        assert_eq!(e.request_id.as_deref(), Some("req-bede31b3-265d-4b19-8ee8-79421168aecd"));
        let e = answer(
            Service::Network,
            409,
            &[],
            r#"{"NeutronError": {"type": "OverQuota", "message": "Quota exceeded for resources: ['port'].", "detail": ""}}"#,
        );
        assert_eq!(e.class, ErrorClass::Quota);
        let e = answer(
            Service::Compute,
            403,
            &[("x-compute-request-id", "req-b472a7b2-5e50-49df-b647-b3bf3f06ebd7")],
            r#"{"forbidden": {"code": 403, "message": "Quota exceeded for instances: Requested 1, but already used 0 of 0 instances"}}"#,
        );
        assert_eq!(e.class, ErrorClass::Quota);
        assert_eq!(e.request_id.as_deref(), Some("req-b472a7b2-5e50-49df-b647-b3bf3f06ebd7"));
        let e = answer(
            Service::Compute,
            400,
            &[],
            r#"{"badRequest": {"code": 400, "message": "Flavor 1 could not be found."}}"#,
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(e.event_class(), crate::messages::event::ErrorClass::InvalidOrder);
        let e = answer(
            Service::Image,
            404,
            &[],
            "{\"message\": \"No image found with ID 00000000-0000-4000-8000-000000000000<br /><br />\\n\\n\\n\", \"code\": \"404 Not Found\", \"title\": \"Not Found\"}",
        );
        assert_eq!(e.class, ErrorClass::NotFound);
        assert_eq!(e.message, "No image found with ID 00000000-0000-4000-8000-000000000000");
        let e = answer(
            Service::Identity,
            401,
            &[],
            r#"{"error":{"code":401,"message":"The request you have made requires authentication.","title":"Unauthorized"}}"#,
        );
        assert_eq!((e.class, e.fault.as_deref()), (ErrorClass::Auth, Some("Unauthorized")));
        // keystonemiddleware's answer on every service to a bad token (before the re-auth).
        let e = answer(
            Service::Compute,
            401,
            &[],
            r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#,
        );
        assert_eq!(e.class, ErrorClass::Auth);
    }

    /// Keystone 30's admin answers and the services' quota-update policy refusals, captured
    /// from the loopback deployment of shared/real-openstack (admin and non-admin tokens).
    #[test]
    fn real_keystone_admin_answers_and_quota_policy_refusals() {
        let answer = |service, status: u16, body: &str| {
            OpenStackError::from_response(
                service,
                "POST",
                "/x",
                StatusCode::from_u16(status).unwrap(),
                &HeaderMap::new(),
                body.as_bytes(),
            )
        };
        use crate::messages::event::ErrorClass as E;
        let e = answer(
            Service::Identity,
            403,
            r#"{"error":{"code":403,"message":"You are not authorized to perform the requested action: identity:create_project.","title":"Forbidden"}}"#,
        );
        assert_eq!((e.class, e.event_class()), (ErrorClass::Auth, E::Auth));
        assert!(!e.is_retryable());
        let e = answer(
            Service::Identity,
            409,
            r#"{"error":{"code":409,"message":"Conflict occurred attempting to store project - it is not permitted to have two projects with either the same name or same id in the same domain: name is ks-probe-1, project id 688be297712e495c8a09918cbb898700.","title":"Conflict"}}"#,
        );
        assert_eq!((e.class, e.fault.as_deref()), (ErrorClass::AlreadyExists, Some("Conflict")));
        assert!(!e.is_retryable());
        let e = answer(
            Service::Identity,
            409,
            r#"{"error":{"code":409,"message":"Conflict occurred attempting to store user - Duplicate entry found with name KS-Probe-User at domain ID default.","title":"Conflict"}}"#,
        );
        assert_eq!(e.class, ErrorClass::AlreadyExists);
        let e = answer(
            Service::Identity,
            404,
            r#"{"error":{"code":404,"message":"Could not find role: nonexistentrole.","title":"Not Found"}}"#,
        );
        assert_eq!(e.class, ErrorClass::NotFound);
        let e = answer(
            Service::Identity,
            400,
            r#"{"error":{"code":400,"message":"Invalid input for field/attribute 0. Value: a/b. 'a/b' does not match '^[^,/]*$'","title":"Bad Request"}}"#,
        );
        assert_eq!((e.class, e.event_class()), (ErrorClass::Permanent, E::InvalidOrder));
        // A non-admin setting quotas: policy, not an exhausted quota, whatever the wording.
        for (service, body) in [
            (
                Service::Compute,
                r#"{"forbidden": {"code": 403, "message": "Policy doesn't allow os_compute_api:os-quota-sets:update to be performed."}}"#,
            ),
            (
                Service::Network,
                r#"{"NeutronError": {"type": "PolicyNotAuthorized", "message": "rule:update_quota is disallowed by policy", "detail": ""}}"#,
            ),
            (
                Service::Volume,
                r#"{"forbidden": {"code": 403, "message": "Policy doesn't allow volume_extension:quotas:update to be performed."}}"#,
            ),
            // A domain-scoped token (a domain manager's).
            (
                Service::Network,
                r#"{"NeutronError": {"type": "InvalidScope", "message": "rule:update_quota requires a scope of ['project'], request was made with domain scope.", "detail": ""}}"#,
            ),
        ] {
            assert_eq!(answer(service, 403, body).class, ErrorClass::Auth, "{body}");
        }
        // Keystone refuses to delete an enabled domain with a 403 too: not retried.
        let e = answer(
            Service::Identity,
            403,
            r#"{"error":{"code":403,"message":"Cannot delete a domain that is enabled, please disable it first.","title":"Forbidden"}}"#,
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn lookups_need_exactly_one_match() {
        let one = exactly_one(Service::Image, "/images", "active image", "cirros", vec!["a"], |s| s).unwrap();
        assert_eq!(one, "a");
        let none =
            exactly_one(Service::Image, "/images", "active image", "cirros", Vec::<&str>::new(), |s| s);
        assert_eq!(none.unwrap_err().class, ErrorClass::NotFound);
        let two = exactly_one(Service::Network, "/networks", "network", "public", vec!["n1", "n2"], |s| s)
            .unwrap_err();
        assert_eq!(two.class, ErrorClass::Ambiguous);
        assert!(two.message.contains("n1, n2"), "{two}");
        assert_eq!(two.event_class(), crate::messages::event::ErrorClass::InvalidOrder);
    }

    #[test]
    fn the_error_says_where_and_what() {
        let mut headers = HeaderMap::new();
        headers.insert("x-openstack-request-id", HeaderValue::from_static("req-5c6b"));
        let e = OpenStackError::from_response(
            Service::Compute,
            "POST",
            "/servers?name=secret",
            StatusCode::FORBIDDEN,
            &headers,
            NOVA_QUOTA.as_bytes(),
        );
        assert_eq!(&*e.path, "/servers");
        assert_eq!(e.request_id.as_deref(), Some("req-5c6b"));
        assert_eq!(e.event_class(), crate::messages::event::ErrorClass::QuotaExceeded);
        let shown = e.to_string();
        assert_eq!(
            shown,
            "nova POST /servers: 403 Quota exceeded for instances: Requested 1, but already used 10 of 10 instances [quota, req-5c6b]"
        );
    }

    #[test]
    fn nova_refusing_the_zone_or_the_group_of_a_create_is_the_orders_fault() {
        let zone =
            r#"{"badRequest": {"code": 400, "message": "The requested availability zone is not available"}}"#;
        let group = r#"{"badRequest": {"code": 400, "message": "Instance group 4f5c9d3e-7a1b-4c2d-9e8f-0a1b2c3d4e5f could not be found."}}"#;
        for body in [zone, group] {
            assert_eq!(class(Service::Compute, 400, None, body), ErrorClass::Invalid, "{body}");
            let e = OpenStackError::from_response(
                Service::Compute,
                "POST",
                "/servers",
                StatusCode::BAD_REQUEST,
                &HeaderMap::new(),
                body.as_bytes(),
            );
            assert!(!e.is_retryable());
            assert_eq!(e.event_class(), crate::messages::event::ErrorClass::InvalidOrder);
        }
        // Other 400s stay as they were; a group that is not found by a GET is a 404.
        assert_eq!(class(Service::Compute, 400, None, NOVA_BAD), ErrorClass::Permanent);
        let gone = r#"{"itemNotFound": {"code": 404, "message": "Instance group 4f5c could not be found."}}"#;
        assert_eq!(class(Service::Compute, 404, None, gone), ErrorClass::NotFound);
    }
}
