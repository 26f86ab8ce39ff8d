//! The Keystone v3 session: tokens per project scope, endpoints from the catalog, and the one
//! place where requests are sent, so every call to every service gets the same treatment.
//!
//! Each order is provisioned in the customer's project, where the service user has a role, so
//! the session keeps one token per project id, got with that project's credential (its own
//! `<cloud>/<project id>` entry, else the main one; see [`super::config::Credential`]): a
//! password or a token scoped to the project, or an application credential unscoped (it is bound
//! to its project; a token for another project is an `auth` error naming the entry to add).
//! Guarantees:
//! - **Cached and refreshed early**: a token is used until less than [`refresh_margin`] of its
//!   lifetime is left (2 minutes for real tokens, a quarter of the lifetime for short test
//!   tokens). Expiry is tracked on our monotonic clock from the token's own lifetime
//!   (`expires_at - issued_at`), so a skewed wall clock cannot make us use an expired token.
//! - **Single-flight**: one async mutex per project; a thousand concurrent requests for a project
//!   with no valid token cause one authentication, the others wait for it and share the result.
//! - **One re-authentication on 401**: the token is dropped (only if it is still the cached one,
//!   so concurrent 401s cause one re-authentication), a new one is fetched and the request is
//!   sent once more; a second 401 is an `auth` error, never a loop.
//! - **Admin calls** (Keystone projects, users, role assignments; quota updates) are sent in the
//!   configured default project's scope ([`Session::default_project_id`]): the service user's own
//!   project, where it holds `admin`; never in a customer's project.
//! - **Endpoints** come from the token's catalog by service type, interface and region, and
//!   version paths are normalised: Glance and Neutron are listed without a version (`/v2`,
//!   `/v2.0` are appended), Nova with or without `/v2.1`, Cinder with or without `/v3/{project}`.
//! - **Every request** goes through the rate limiter, carries a timeout, the negotiated
//!   microversion and a global request id (`X-OpenStack-Request-Id: req-<job id>`, see
//!   [`super::request_id`]), is a client span of the job's trace when traces are on, uses the
//!   pooled client, and fails as an [`OpenStackError`] classified in
//!   [`super::error::classify`]. Nothing secret is logged: not the token, not the password, not
//!   request bodies (which carry `user_data`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::config::{AppCredRef, CloudConfig, Credential, DomainRef, ProjectRef, UserRef};
use super::error::{ErrorClass, OpenStackError, Service};
use super::identity::protocol as keystone;
use super::microversion::{self, Microversion};
use super::ratelimit::RateLimiter;
use super::region;
use super::request_id;
use crate::config::Secret;
use crate::metrics;
use crate::telemetry::trace;
use tracing::Instrument;

/// How the session talks to the cloud; [`SessionOptions::from_settings`] fills it from settings.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Whole-request timeout (connect, send, answer).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests per second per project and in all (0 = unlimited).
    pub project_rate: f64,
    pub cloud_rate: f64,
    /// The Nova microversion to ask for (capped by the cloud). Lower it to behave like an old
    /// cloud; the default is [`microversion::NOVA_WANTED`].
    pub nova_wanted: Microversion,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            project_rate: 0.0,
            cloud_rate: 0.0,
            nova_wanted: microversion::NOVA_WANTED,
        }
    }
}

impl SessionOptions {
    pub fn from_settings(settings: &crate::config::Settings) -> SessionOptions {
        SessionOptions {
            request_timeout: Duration::from_secs(settings.openstack.request_timeout_secs),
            connect_timeout: Duration::from_secs(settings.openstack.connect_timeout_secs),
            project_rate: settings.engine.project_rate,
            cloud_rate: settings.engine.cloud_rate,
            nova_wanted: microversion::NOVA_WANTED,
        }
    }
}

/// A project-scoped token and what came with it.
pub struct Token {
    value: Secret,
    /// The project the token is scoped to.
    pub project_id: String,
    pub user_id: String,
    /// Base URL per (region, service), normalised (see [`normalise_endpoint`]); region `None`
    /// is the configured one (any region when none is configured).
    endpoints: HashMap<(Option<String>, Service), String>,
    /// The version document root per (region, service) (`http://h:8774/v2.1/`).
    version_roots: HashMap<(Option<String>, Service), String>,
    /// The regions the catalog lists endpoints in, sorted.
    regions: Vec<String>,
    /// When we consider it expired, on our clock, and how long it lived.
    expires: Instant,
    lifetime: Duration,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"***")
            .field("project_id", &self.project_id)
            .field("endpoints", &self.endpoints)
            .field("lifetime", &self.lifetime)
            .finish()
    }
}

impl Token {
    /// The normalised base URL of `service` in the configured region, if the catalog has one.
    pub fn endpoint(&self, service: Service) -> Option<&str> {
        self.endpoints.get(&(None, service)).map(String::as_str)
    }

    /// The regions the token's catalog lists endpoints in.
    pub fn regions(&self) -> &[String] {
        &self.regions
    }

    /// How long the token lives in all (`expires_at - issued_at`).
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Whether the token is still good to use.
    fn fresh(&self, now: Instant) -> bool {
        now + refresh_margin(self.lifetime) < self.expires
    }
}

/// How early a token is replaced: 2 minutes, or a quarter of its lifetime if that is shorter.
pub fn refresh_margin(lifetime: Duration) -> Duration {
    Duration::from_secs(120).min(lifetime / 4)
}

/// One project's token and the lock that makes its authentication single-flight.
#[derive(Default)]
struct ScopeSlot {
    current: RwLock<Option<Arc<Token>>>,
    /// Held while authenticating; guards `failed` too.
    refresh: tokio::sync::Mutex<Failure>,
}

/// The last failed authentication of a scope: callers that were already waiting when it failed
/// get the same error instead of each trying again (a thousand waiters, one attempt, also when
/// Keystone is down or the password is wrong).
#[derive(Default)]
struct Failure(Option<(Instant, OpenStackError)>);

impl ScopeSlot {
    fn get(&self) -> Option<Arc<Token>> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn set(&self, token: Option<Arc<Token>>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = token;
    }
}

/// Counters the tests and the smoke check read.
#[derive(Debug, Default)]
pub struct SessionStats {
    /// Successful and failed `POST /v3/auth/tokens`.
    pub authentications: AtomicU64,
    /// Re-authentications caused by a 401 on a service call.
    pub reauthentications: AtomicU64,
    /// Requests sent to services (not Keystone), retries after 401 included.
    pub requests: AtomicU64,
}

/// An answer with a 2xx status.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One request to a service. `path` is relative to the service's normalised endpoint
/// (`/servers/detail`); `template` names it in metrics (`/servers/{id}`).
#[derive(Debug, Clone)]
pub struct Request {
    pub service: Service,
    pub method: Method,
    pub path: String,
    pub template: &'static str,
    pub query: Vec<(String, String)>,
    pub body: Option<Bytes>,
}

impl Request {
    pub fn new(service: Service, method: Method, template: &'static str, path: impl Into<String>) -> Request {
        Request { service, method, path: path.into(), template, query: Vec::new(), body: None }
    }

    pub fn query(mut self, key: &str, value: impl Into<String>) -> Request {
        self.query.push((key.to_string(), value.into()));
        self
    }

    /// The query of a `next` link (`...?marker=x&limit=5`) for the same path: the link's pairs,
    /// then ours whose keys the link does not repeat (the path of the link is not used: it may
    /// name an internal host or omit the version prefix).
    pub fn query_from_link(mut self, link: &str) -> Request {
        let mut pairs = Vec::new();
        if let Some((_, q)) = link.split_once('?') {
            for pair in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                pairs.push((percent_decode(k), percent_decode(v)));
            }
        }
        for (k, v) in std::mem::take(&mut self.query) {
            if !pairs.iter().any(|(pk, _)| *pk == k) {
                pairs.push((k, v));
            }
        }
        self.query = pairs;
        self
    }

    /// A JSON body. Serialising our own types cannot fail in practice; if it did, the request is
    /// sent without a body and the service answers 400.
    pub fn json(mut self, body: &impl Serialize) -> Request {
        self.body = serde_json::to_vec(body).ok().map(Bytes::from);
        self
    }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push(hi * 16 + lo);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The session: shared by every service handle (`Arc`), cheap to use concurrently.
pub struct Session {
    cloud: CloudConfig,
    http: reqwest::Client,
    limiter: RateLimiter,
    options: SessionOptions,
    scopes: Mutex<HashMap<String, Arc<ScopeSlot>>>,
    /// The default project's id, once resolved (`OS_PROJECT_NAME` needs an authentication).
    default_project: OnceCell<String>,
    /// Negotiated per region (each region runs its own Nova and Cinder).
    nova_version: Mutex<HashMap<Option<String>, Arc<OnceCell<Microversion>>>>,
    cinder_version: Mutex<HashMap<Option<String>, Arc<OnceCell<Microversion>>>>,
    stats: SessionStats,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("cloud", &self.cloud).field("options", &self.options).finish()
    }
}

/// Whether a reqwest client can be built at all is a startup matter; the message says why not.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the OpenStack HTTP client: {0}")]
pub struct SessionBuildError(pub String);

impl Session {
    pub fn new(cloud: CloudConfig, options: SessionOptions) -> Result<Session, SessionBuildError> {
        // reqwest is built without a default rustls provider; ring is ours. Installing twice is
        // harmless (the second call reports the first), so ignore the result.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(options.request_timeout)
            .connect_timeout(options.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .user_agent(concat!("openstack-provisioner/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cloud.cacert {
            let pem = std::fs::read(path)
                .map_err(|e| SessionBuildError(format!("cannot read cacert {}: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| SessionBuildError(format!("cacert {}: {e}", path.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(|e| SessionBuildError(e.to_string()))?;
        Ok(Session {
            limiter: RateLimiter::new(options.project_rate, options.cloud_rate),
            cloud,
            http,
            options,
            scopes: Mutex::new(HashMap::new()),
            default_project: OnceCell::new(),
            nova_version: Mutex::new(HashMap::new()),
            cinder_version: Mutex::new(HashMap::new()),
            stats: SessionStats::default(),
        })
    }

    pub fn cloud(&self) -> &CloudConfig {
        &self.cloud
    }

    pub fn stats(&self) -> &SessionStats {
        &self.stats
    }

    fn slot(&self, project_id: &str) -> Arc<ScopeSlot> {
        let mut scopes = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        scopes.entry(project_id.to_string()).or_default().clone()
    }

    /// A valid token for `project_id`: the cached one if fresh, else one authentication shared
    /// by every caller waiting for this project.
    pub async fn token(&self, project_id: &str) -> Result<Arc<Token>, OpenStackError> {
        let slot = self.slot(project_id);
        if let Some(t) = slot.get().filter(|t| t.fresh(Instant::now())) {
            return Ok(t);
        }
        let arrived = Instant::now();
        let mut failure = slot.refresh.lock().await;
        // Someone else may have authenticated while we waited for the lock...
        if let Some(t) = slot.get().filter(|t| t.fresh(Instant::now())) {
            return Ok(t);
        }
        // ...or failed to, after we started waiting: share that answer.
        if let Some((at, err)) = &failure.0
            && *at >= arrived
        {
            return Err(err.clone());
        }
        match self.authenticate(Some(&ProjectRef::Id(project_id.to_string()))).await {
            Ok(token) => {
                let token = Arc::new(token);
                slot.set(Some(token.clone()));
                failure.0 = None;
                Ok(token)
            }
            Err(err) => {
                failure.0 = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    /// Drops `stale` from the cache if it is still the cached token (so that of many requests
    /// that got a 401 with the same token, only the first causes a re-authentication).
    fn invalidate(&self, project_id: &str, stale: &Token) {
        let slot = self.slot(project_id);
        let cached = slot.get();
        if cached.is_some_and(|c| c.value.expose() == stale.value.expose()) {
            slot.set(None);
        }
    }

    /// The project id of the configured default scope (`OS_PROJECT_ID`, or `OS_PROJECT_NAME`
    /// resolved by authenticating once).
    pub async fn default_project_id(&self) -> Result<String, OpenStackError> {
        self.default_project
            .get_or_try_init(|| async {
                match &self.cloud.default_project {
                    Some(ProjectRef::Id(id)) => Ok(id.clone()),
                    Some(by_name) => {
                        let token = Arc::new(self.authenticate(Some(by_name)).await?);
                        let id = token.project_id.clone();
                        self.slot(&id).set(Some(token));
                        Ok(id)
                    }
                    // An application credential's project is its own scope.
                    None if matches!(self.cloud.credential, Credential::ApplicationCredential { .. }) => {
                        let token = Arc::new(self.authenticate(None).await?);
                        let id = token.project_id.clone();
                        self.slot(&id).set(Some(token));
                        Ok(id)
                    }
                    None => Err(OpenStackError::new(
                        ErrorClass::Permanent,
                        Service::Identity,
                        "POST",
                        "/auth/tokens",
                        "no default project configured (OS_PROJECT_ID or OS_PROJECT_NAME)",
                    )),
                }
            })
            .await
            .cloned()
    }

    /// The credential that authenticates `project`: its own (`<cloud>/<project id>` entry) if
    /// it has one, else the main one.
    fn credential_for(&self, project: &ProjectRef) -> (&Credential, bool) {
        match project {
            ProjectRef::Id(id) => match self.cloud.project_credentials.get(id) {
                Some(c) => (c, true),
                None => (&self.cloud.credential, false),
            },
            ProjectRef::Name { .. } => (&self.cloud.credential, false),
        }
    }

    /// `POST /v3/auth/tokens` with the project's credential: password or token scoped to
    /// `project`; an application credential unscoped (it carries its project, and Keystone
    /// refuses a scope next to it), its token then checked to be for `project`. `None`: the
    /// credential's own scope (the default project of an application credential).
    async fn authenticate(&self, project: Option<&ProjectRef>) -> Result<Token, OpenStackError> {
        const PATH: &str = "/auth/tokens";
        let domain = |d: &DomainRef| match d {
            DomainRef::Id(id) => keystone::DomainRef { id: Some(id.clone()), name: None },
            DomainRef::Name(name) => keystone::DomainRef { id: None, name: Some(name.clone()) },
        };
        let (credential, own) = match project {
            Some(p) => self.credential_for(p),
            None => (&self.cloud.credential, false),
        };
        let scope = project.map(|project| match project {
            ProjectRef::Id(id) => keystone::ProjectRef { id: Some(id.clone()), name: None, domain: None },
            ProjectRef::Name { name, domain: d } => {
                keystone::ProjectRef { id: None, name: Some(name.clone()), domain: Some(domain(d)) }
            }
        });
        let body = match credential {
            Credential::Password { user, password } => {
                let user = match user {
                    UserRef::Id(id) => keystone::PasswordUser {
                        id: Some(id.clone()),
                        name: None,
                        domain: None,
                        password: password.expose().to_string(),
                    },
                    UserRef::Name { name, domain: d } => keystone::PasswordUser {
                        id: None,
                        name: Some(name.clone()),
                        domain: Some(domain(d)),
                        password: password.expose().to_string(),
                    },
                };
                keystone::AuthRequest::password(user, scope)
            }
            Credential::Token { token } => keystone::AuthRequest::token(token.expose().to_string(), scope),
            Credential::ApplicationCredential { credential, secret } => {
                let (id, name, user) = match credential {
                    AppCredRef::Id(id) => (Some(id.clone()), None, None),
                    AppCredRef::Name { name, user } => {
                        let user = match user {
                            UserRef::Id(id) => {
                                keystone::AppCredUser { id: Some(id.clone()), ..Default::default() }
                            }
                            UserRef::Name { name, domain: d } => keystone::AppCredUser {
                                id: None,
                                name: Some(name.clone()),
                                domain: Some(domain(d)),
                            },
                        };
                        (None, Some(name.clone()), Some(user))
                    }
                };
                keystone::AuthRequest::application_credential(keystone::ApplicationCredentialMethod {
                    id,
                    name,
                    user,
                    secret: secret.expose().to_string(),
                })
            }
        };
        let bound_to = match (credential, project) {
            (Credential::ApplicationCredential { .. }, Some(ProjectRef::Id(id))) => Some((id.clone(), own)),
            _ => None,
        };
        let url = format!("{}{PATH}", self.cloud.auth_url);
        self.stats.authentications.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        // A token serves every job of the project: its request has its own global id.
        let global_id = request_id::fresh();
        let span = trace::client_span(Service::Identity.name(), "POST", PATH, &url, &global_id);
        let sent = self
            .http
            .post(&url)
            .header(request_id::HEADER, &global_id)
            .json(&body)
            .send()
            .instrument(span.clone())
            .await;
        let outcome = |o: &str, class: &str| {
            metrics::inc(metrics::OPENSTACK_AUTHS, &[("outcome", o)]);
            metrics::observe(
                metrics::OPENSTACK_DURATION,
                &[("service", Service::Identity.name()), ("method", "POST"), ("status_class", class)],
                started.elapsed().as_secs_f64(),
            );
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                outcome("error", "error");
                let err = OpenStackError::transport(Service::Identity, "POST", PATH, &e);
                trace::client_failed(&span, &err.to_string());
                return Err(err);
            }
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        trace::client_answer(&span, status.as_u16(), answer_request_id(&headers));
        let bytes = match resp.bytes().instrument(span).await {
            Ok(b) => b,
            Err(e) => {
                outcome("error", "error");
                return Err(OpenStackError::transport(Service::Identity, "POST", PATH, &e));
            }
        };
        if !status.is_success() {
            outcome("rejected", status_class(status.as_str()));
            let err =
                OpenStackError::from_response(Service::Identity, "POST", PATH, status, &headers, &bytes);
            tracing::warn!(error = %err, "keystone authentication failed");
            return Err(err);
        }
        let value = headers
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(|v| Secret::new(v.to_string()))
            .ok_or_else(|| {
                OpenStackError::decode(Service::Identity, "POST", PATH, "no X-Subject-Token header")
            })?;
        let parsed: keystone::TokenResponse = serde_json::from_slice(&bytes)
            .map_err(|e| OpenStackError::decode(Service::Identity, "POST", PATH, e))?;
        let token = parsed.token;
        let project_id = token.project.as_ref().map(|p| p.id.clone()).ok_or_else(|| {
            OpenStackError::decode(Service::Identity, "POST", PATH, "the token is not project-scoped")
        })?;
        if let Some((wanted, own)) = bound_to
            && wanted != project_id
        {
            outcome("rejected", "4xx");
            let cloud = self.cloud.cloud_name.as_deref().unwrap_or("<OS_CLOUD>");
            let why = if own {
                format!(
                    "the application credential of clouds.yaml entry \"{cloud}/{wanted}\" is bound to project \
                     {project_id}, not {wanted}"
                )
            } else {
                format!(
                    "the application credential is bound to project {project_id} and cannot be scoped to \
                     project {wanted}: give that project its own credential (a clouds.yaml entry \
                     \"{cloud}/{wanted}\") or use a password or token credential"
                )
            };
            tracing::warn!(project_id = %wanted, "{why}");
            return Err(OpenStackError::new(ErrorClass::Auth, Service::Identity, "POST", PATH, why));
        }
        let catalog = token.catalog.unwrap_or_default();
        let lifetime = (token.expires_at - token.issued_at).to_std().unwrap_or(Duration::ZERO);
        let mut endpoints = HashMap::new();
        let mut version_roots = HashMap::new();
        let mut regions: Vec<String> = catalog
            .iter()
            .flat_map(|e| e.endpoints.iter())
            .filter_map(|ep| ep.region_id.clone().or_else(|| ep.region.clone()))
            .collect();
        regions.sort();
        regions.dedup();
        let keys = std::iter::once(None).chain(regions.iter().cloned().map(Some));
        for key in keys {
            let region = key.as_deref().or(self.cloud.region.as_deref());
            for service in
                [Service::Identity, Service::Image, Service::Network, Service::Compute, Service::Volume]
            {
                if let Some(url) = pick_endpoint(&catalog, service, self.cloud.interface.as_str(), region) {
                    let (base, root) = normalise_endpoint(service, &url, &project_id);
                    endpoints.insert((key.clone(), service), base);
                    version_roots.insert((key.clone(), service), root);
                }
            }
        }
        // Keystone's admin API (tenant onboarding) at the catalog's identity endpoint, or else
        // where we just authenticated.
        if let std::collections::hash_map::Entry::Vacant(slot) = endpoints.entry((None, Service::Identity)) {
            let (base, root) = normalise_endpoint(Service::Identity, &self.cloud.auth_url, &project_id);
            slot.insert(base);
            version_roots.insert((None, Service::Identity), root);
        }
        outcome("ok", "2xx");
        tracing::info!(
            project_id = %project_id,
            lifetime_secs = lifetime.as_secs(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "authenticated with keystone"
        );
        Ok(Token {
            value,
            project_id,
            user_id: token.user.id,
            endpoints,
            version_roots,
            regions,
            expires: started + lifetime,
            lifetime,
        })
    }

    /// The region requests for `service` go to now: the scope's ([`region::current`]) unless it
    /// is the configured one; `None` means the configured one. Keystone is one for all regions.
    fn region_key(&self, service: Service) -> Option<String> {
        if service == Service::Identity {
            return None;
        }
        region::current().filter(|r| self.cloud.region.as_deref() != Some(r.as_str()))
    }

    fn missing_endpoint(
        &self,
        token: &Token,
        region: Option<&str>,
        service: Service,
        method: &str,
        path: &str,
    ) -> OpenStackError {
        if let Some(r) = region
            && !token.regions.iter().any(|x| x == r)
        {
            return unknown_region(r, &token.regions, service, method, path);
        }
        OpenStackError::new(
            ErrorClass::Permanent,
            service,
            method,
            path,
            format!(
                "no {} endpoint in the catalog (types {:?}, interface {}, region {})",
                service.name(),
                service.catalog_types(),
                self.cloud.interface.as_str(),
                region.or(self.cloud.region.as_deref()).unwrap_or("any")
            ),
        )
    }

    fn endpoint<'t>(
        &self,
        token: &'t Token,
        service: Service,
        method: &str,
        path: &str,
    ) -> Result<&'t str, OpenStackError> {
        let key = self.region_key(service);
        token
            .endpoints
            .get(&(key.clone(), service))
            .map(String::as_str)
            .ok_or_else(|| self.missing_endpoint(token, key.as_deref(), service, method, path))
    }

    /// The regions the catalog of `project_id`'s token lists endpoints in (pre-flight checks an
    /// order's region against them).
    pub async fn regions(&self, project_id: &str) -> Result<Vec<String>, OpenStackError> {
        Ok(self.token(project_id).await?.regions.clone())
    }

    /// The microversion header for a service, negotiated once per session.
    async fn microversion_headers(
        &self,
        project_id: &str,
        service: Service,
    ) -> Result<HeaderMap, OpenStackError> {
        let mut headers = HeaderMap::new();
        match service {
            Service::Compute => {
                let v = self.nova_microversion(project_id).await?;
                if let Ok(h) = HeaderValue::from_str(&v.to_string()) {
                    headers.insert("x-openstack-nova-api-version", h);
                }
                if let Ok(h) = HeaderValue::from_str(&format!("compute {v}")) {
                    headers.insert("openstack-api-version", h);
                }
            }
            Service::Volume => {
                let v = self.cinder_microversion(project_id).await?;
                if let Ok(h) = HeaderValue::from_str(&format!("volume {v}")) {
                    headers.insert("openstack-api-version", h);
                }
            }
            _ => {}
        }
        Ok(headers)
    }

    /// The Nova microversion this session uses in the current region: `min(wanted, cloud max)`.
    pub async fn nova_microversion(&self, project_id: &str) -> Result<Microversion, OpenStackError> {
        let cell = version_cell(&self.nova_version, self.region_key(Service::Compute));
        cell.get_or_try_init(|| self.negotiate(project_id, Service::Compute)).await.copied()
    }

    /// The Cinder microversion this session uses in the current region.
    pub async fn cinder_microversion(&self, project_id: &str) -> Result<Microversion, OpenStackError> {
        let cell = version_cell(&self.cinder_version, self.region_key(Service::Volume));
        cell.get_or_try_init(|| self.negotiate(project_id, Service::Volume)).await.copied()
    }

    async fn negotiate(&self, project_id: &str, service: Service) -> Result<Microversion, OpenStackError> {
        let (prefix, wanted, base) = match service {
            Service::Compute => ("v2.1", self.options.nova_wanted, microversion::NOVA_BASE),
            _ => ("v3", microversion::CINDER_WANTED, microversion::CINDER_BASE),
        };
        let mut token = self.token(project_id).await?;
        let mut reauthenticated = false;
        let key = self.region_key(service);
        let (status, headers, body) = loop {
            let root = token
                .version_roots
                .get(&(key.clone(), service))
                .cloned()
                .ok_or_else(|| self.missing_endpoint(&token, key.as_deref(), service, "GET", "/"))?;
            let resp = self
                .http
                .get(&root)
                .header("x-auth-token", token.value.expose())
                .header(request_id::HEADER, request_id::current())
                .send()
                .await;
            let resp = resp.map_err(|e| OpenStackError::transport(service, "GET", "/", &e))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await.map_err(|e| OpenStackError::transport(service, "GET", "/", &e))?;
            if status == StatusCode::UNAUTHORIZED && !reauthenticated {
                reauthenticated = true;
                self.stats.reauthentications.fetch_add(1, Ordering::Relaxed);
                self.invalidate(project_id, &token);
                token = self.token(project_id).await?;
                continue;
            }
            break (status, headers, body);
        };
        // 300 Multiple Choices is how some deployments answer the root.
        if !(status.is_success() || status == StatusCode::MULTIPLE_CHOICES) {
            let err = OpenStackError::from_response(service, "GET", "/", status, &headers, &body);
            if err.class.is_retryable() || err.class == ErrorClass::Auth {
                return Err(err);
            }
            tracing::warn!(service = service.name(), error = %err, "no versions document; using the base microversion");
            return Ok(base);
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| OpenStackError::decode(service, "GET", "/", e))?;
        let chosen = microversion::range_from_document(&doc, prefix)
            .and_then(|range| microversion::negotiate(range, wanted, base))
            .unwrap_or(base);
        tracing::info!(service = service.name(), microversion = %chosen, "negotiated microversion");
        Ok(chosen)
    }

    /// Sends `req` in `project_id`'s scope: rate limit, token, microversion, one re-auth on 401,
    /// classification of any non-2xx answer.
    pub async fn send(&self, project_id: &str, req: Request) -> Result<Response, OpenStackError> {
        let method = req.method.as_str().to_string();
        let extra = self.microversion_headers(project_id, req.service).await?;
        self.limiter.acquire(project_id).await;
        let mut token = self.token(project_id).await?;
        let mut reauthenticated = false;
        // The job's global request id (the same on every worker and retry), or a fresh one.
        let global_id = request_id::current();
        loop {
            let base = self.endpoint(&token, req.service, &method, &req.path)?;
            let url = format!("{base}{}", req.path);
            let span = trace::client_span(req.service.name(), &method, req.template, &url, &global_id);
            let mut builder = self
                .http
                .request(req.method.clone(), &url)
                .header("x-auth-token", token.value.expose())
                .header(request_id::HEADER, &global_id)
                .header(reqwest::header::ACCEPT, "application/json")
                .headers(extra.clone());
            if !req.query.is_empty() {
                builder = builder.query(&req.query);
            }
            if let Some(body) = &req.body {
                builder =
                    builder.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let record = |status: &str| {
                metrics::inc(
                    metrics::OPENSTACK_CALLS,
                    &[
                        ("service", req.service.name()),
                        ("method", &method),
                        ("path", req.template),
                        ("status", status),
                    ],
                );
                metrics::observe(
                    metrics::OPENSTACK_DURATION,
                    &[
                        ("service", req.service.name()),
                        ("method", &method),
                        ("status_class", status_class(status)),
                    ],
                    started.elapsed().as_secs_f64(),
                );
            };
            let resp = match builder.send().instrument(span.clone()).await {
                Ok(r) => r,
                Err(e) => {
                    record("error");
                    let err = OpenStackError::transport(req.service, &method, &req.path, &e);
                    trace::client_failed(&span, &err.to_string());
                    tracing::warn!(error = %err, global_request_id = %global_id, "openstack request failed");
                    return Err(err);
                }
            };
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = match resp.bytes().instrument(span.clone()).await {
                Ok(b) => b,
                Err(e) => {
                    record("error");
                    let err = OpenStackError::transport(req.service, &method, &req.path, &e);
                    trace::client_failed(&span, &err.to_string());
                    return Err(err);
                }
            };
            record(status.as_str());
            let answer_id = answer_request_id(&headers);
            trace::client_answer(&span, status.as_u16(), answer_id);
            drop(span);
            tracing::debug!(
                service = req.service.name(),
                method = %method,
                path = req.template,
                status = status.as_u16(),
                request_id = answer_id.unwrap_or("-"),
                global_request_id = %global_id,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "openstack request"
            );
            if status == StatusCode::UNAUTHORIZED && !reauthenticated {
                // The token was revoked or expired early: one new token, one more try.
                reauthenticated = true;
                self.stats.reauthentications.fetch_add(1, Ordering::Relaxed);
                tracing::info!(service = req.service.name(), project_id, "401: re-authenticating once");
                self.invalidate(project_id, &token);
                token = self.token(project_id).await?;
                continue;
            }
            if !status.is_success() {
                let err =
                    OpenStackError::from_response(req.service, &method, &req.path, status, &headers, &body);
                tracing::debug!(error = %err, "openstack error answer");
                return Err(err);
            }
            return Ok(Response { status, headers, body });
        }
    }

    /// [`Session::send`], then the body parsed as `T`.
    pub async fn json<T: DeserializeOwned>(
        &self,
        project_id: &str,
        req: Request,
    ) -> Result<T, OpenStackError> {
        let (service, method, path) = (req.service, req.method.as_str().to_string(), req.path.clone());
        let resp = self.send(project_id, req).await?;
        serde_json::from_slice(&resp.body).map_err(|e| OpenStackError::decode(service, &method, &path, e))
    }
}

fn version_cell(
    map: &Mutex<HashMap<Option<String>, Arc<OnceCell<Microversion>>>>,
    key: Option<String>,
) -> Arc<OnceCell<Microversion>> {
    map.lock().unwrap_or_else(|p| p.into_inner()).entry(key).or_default().clone()
}

/// An order's region the catalog does not list: [`ErrorClass::UnknownRegion`] (no retry makes it
/// appear; the order is invalid), and named with the regions there are.
pub fn unknown_region(
    region: &str,
    known: &[String],
    service: Service,
    method: &str,
    path: &str,
) -> OpenStackError {
    OpenStackError::new(
        ErrorClass::UnknownRegion,
        service,
        method,
        path,
        format!(
            "unknown region {region:?}: the cloud's catalog lists {}",
            if known.is_empty() { "no regions".to_string() } else { known.join(", ") }
        ),
    )
}

/// The service's own (local) request id of an answer, for the logs and the span.
fn answer_request_id(headers: &HeaderMap) -> Option<&str> {
    ["x-openstack-request-id", "x-compute-request-id"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
}

/// The `status_class` label of a request duration: `2xx` ... `5xx`, or `error` (no answer).
fn status_class(status: &str) -> &'static str {
    match status.as_bytes().first() {
        Some(b'1') => "1xx",
        Some(b'2') => "2xx",
        Some(b'3') => "3xx",
        Some(b'4') => "4xx",
        Some(b'5') => "5xx",
        _ => "error",
    }
}

/// The URL of `service` in the catalog for `interface` and `region` (any region if none is
/// configured), trying the service's catalog types in order of preference.
pub fn pick_endpoint(
    catalog: &[keystone::CatalogEntry],
    service: Service,
    interface: &str,
    region: Option<&str>,
) -> Option<String> {
    for service_type in service.catalog_types() {
        for entry in catalog.iter().filter(|e| e.service_type == *service_type) {
            let found = entry.endpoints.iter().find(|ep| {
                ep.interface == interface
                    && region
                        .is_none_or(|r| ep.region.as_deref() == Some(r) || ep.region_id.as_deref() == Some(r))
            });
            if let Some(ep) = found {
                return Some(ep.url.clone());
            }
        }
    }
    None
}

fn is_version_segment(seg: &str) -> bool {
    let rest = seg.strip_prefix('v').unwrap_or("");
    !rest.is_empty() && rest.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The base URL requests are made against, and the versions document URL, from a catalog URL:
/// - Glance `http://h:9292` → `http://h:9292/v2`; Neutron `http://h:9696` → `.../v2.0`;
/// - Nova `http://h:8774/v2.1` (or `/v2.1/{project}`) kept, `http://h/compute` → `.../v2.1`;
/// - Cinder `http://h:8776/v3` → `.../v3/{project}` (works on every microversion), kept when the
///   project is already there.
///
/// `%(tenant_id)s` / `$(project_id)s` templates are filled in with the project id.
pub fn normalise_endpoint(service: Service, url: &str, project_id: &str) -> (String, String) {
    let mut url = url.trim().trim_end_matches('/').to_string();
    for template in ["%(tenant_id)s", "%(project_id)s", "$(tenant_id)s", "$(project_id)s"] {
        url = url.replace(template, project_id);
    }
    let default_version = match service {
        Service::Identity => "v3",
        Service::Image => "v2",
        Service::Network => "v2.0",
        Service::Compute => "v2.1",
        Service::Volume => "v3",
    };
    // Split scheme://authority from the path.
    let path_start = url.find("://").map(|i| i + 3).and_then(|i| url[i..].find('/').map(|j| i + j));
    let (origin, path) = match path_start {
        Some(i) => (url[..i].to_string(), url[i..].to_string()),
        None => (url.clone(), String::new()),
    };
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let version_at = segments.iter().position(|s| is_version_segment(s));
    let (prefix, version, after): (Vec<&str>, &str, Vec<&str>) = match version_at {
        Some(i) => (segments[..i].to_vec(), segments[i], segments[i + 1..].to_vec()),
        None => (segments.clone(), default_version, Vec::new()),
    };
    let mut root = origin.clone();
    for s in &prefix {
        root.push('/');
        root.push_str(s);
    }
    root.push('/');
    root.push_str(version);
    let mut base = root.clone();
    for s in &after {
        base.push('/');
        base.push_str(s);
    }
    if service == Service::Volume && after.is_empty() {
        base.push('/');
        base.push_str(project_id);
    }
    (base, format!("{root}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_normalised_per_service() {
        let p = "a6944d763bf64ee6a275f1263fae0352";
        let n = |s: Service, u: &str| normalise_endpoint(s, u, p);
        assert_eq!(
            n(Service::Image, "http://127.0.0.1:9292"),
            ("http://127.0.0.1:9292/v2".into(), "http://127.0.0.1:9292/v2/".into())
        );
        assert_eq!(n(Service::Image, "https://cloud.example/image/").0, "https://cloud.example/image/v2");
        assert_eq!(n(Service::Image, "https://cloud.example/image/v2").0, "https://cloud.example/image/v2");
        assert_eq!(n(Service::Network, "http://127.0.0.1:9696/").0, "http://127.0.0.1:9696/v2.0");
        assert_eq!(
            n(Service::Network, "https://cloud.example/networking").0,
            "https://cloud.example/networking/v2.0"
        );
        assert_eq!(
            n(Service::Compute, "http://127.0.0.1:8774/v2.1"),
            ("http://127.0.0.1:8774/v2.1".into(), "http://127.0.0.1:8774/v2.1/".into())
        );
        assert_eq!(
            n(Service::Compute, "http://127.0.0.1:8774/v2.1/%(tenant_id)s"),
            (format!("http://127.0.0.1:8774/v2.1/{p}"), "http://127.0.0.1:8774/v2.1/".into())
        );
        assert_eq!(
            n(Service::Compute, "https://cloud.example/compute").0,
            "https://cloud.example/compute/v2.1"
        );
        assert_eq!(
            n(Service::Volume, "http://127.0.0.1:8776/v3"),
            (format!("http://127.0.0.1:8776/v3/{p}"), "http://127.0.0.1:8776/v3/".into())
        );
        assert_eq!(
            n(Service::Volume, &format!("http://127.0.0.1:8776/v3/{p}")).0,
            format!("http://127.0.0.1:8776/v3/{p}")
        );
        assert_eq!(
            n(Service::Volume, "https://cloud.example/volume").0,
            format!("https://cloud.example/volume/v3/{p}")
        );
    }

    #[test]
    fn token_refresh_margin() {
        assert_eq!(refresh_margin(Duration::from_secs(24 * 3600)), Duration::from_secs(120));
        assert_eq!(refresh_margin(Duration::from_secs(4)), Duration::from_secs(1));
    }

    #[test]
    fn next_links_become_query_pairs() {
        let r = Request::new(Service::Compute, Method::GET, "/servers/detail", "/servers/detail")
            .query("tags", "a,b")
            .query_from_link("http://nova/v2.1/servers/detail?limit=2&marker=9b1a&tags=order%3Dx%2Cy");
        assert_eq!(
            r.query,
            vec![
                ("limit".to_string(), "2".to_string()),
                ("marker".to_string(), "9b1a".to_string()),
                ("tags".to_string(), "order=x,y".to_string())
            ]
        );
    }

    #[test]
    fn catalog_lookup_by_type_interface_and_region() {
        let body = r#"[
          {"id": "1", "type": "volumev3", "name": "cinderv3", "endpoints": [
            {"id": "a", "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": "http://one:8776/v3/p"},
            {"id": "b", "interface": "public", "region": "RegionTwo", "region_id": "RegionTwo", "url": "http://two:8776/v3/p"},
            {"id": "c", "interface": "internal", "region": "RegionTwo", "region_id": "RegionTwo", "url": "http://two-int:8776/v3/p"}]},
          {"id": "2", "type": "compute", "name": "nova", "endpoints": [
            {"id": "d", "interface": "public", "region": "RegionOne", "region_id": "RegionOne", "url": "http://one:8774/v2.1"}]}
        ]"#;
        let catalog: Vec<keystone::CatalogEntry> = serde_json::from_str(body).unwrap();
        assert_eq!(
            pick_endpoint(&catalog, Service::Volume, "public", Some("RegionTwo")).as_deref(),
            Some("http://two:8776/v3/p")
        );
        assert_eq!(
            pick_endpoint(&catalog, Service::Volume, "internal", Some("RegionTwo")).as_deref(),
            Some("http://two-int:8776/v3/p")
        );
        assert_eq!(
            pick_endpoint(&catalog, Service::Volume, "public", None).as_deref(),
            Some("http://one:8776/v3/p")
        );
        assert_eq!(pick_endpoint(&catalog, Service::Compute, "public", Some("RegionTwo")), None);
        assert_eq!(pick_endpoint(&catalog, Service::Image, "public", None), None);
    }
}
