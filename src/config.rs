//! Settings: built-in defaults, then an optional TOML file (`--config FILE`), then `PROVISIONER_*`
//! environment variables on top; validated once at startup.
//!
//! Every setting has one environment variable, `PROVISIONER_<SECTION>_<KEY>` (for example
//! `intake.prefetch` is `PROVISIONER_INTAKE_PREFETCH`), listed in [`ENV_VARS`] and in the README.
//! A bad value fails startup with one message that names the variable or file key. Secrets
//! (URL passwords, the HTTP bearer token) are wrapped in [`Secret`] / [`SecretUrl`], whose
//! `Debug` and `Display` never show them. OpenStack credentials are not here: they come the
//! OpenStack way (`OS_*`, `OS_CLOUD` + `clouds.yaml`), see `openstack::config`. The key that
//! seals secrets at rest (`PROVISIONER_SECRETS_KEY`) is checked here and used by `secrets`.

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// A setting that was missing, malformed or out of range. The message names the setting.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

/// A secret string: shown as `***` by `Debug` and `Display`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself: call only where it is handed to a library, never to format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// A URL that may carry a password (`mysql://user:pw@host/db`). `Display`/`Debug` redact it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(s: impl Into<String>) -> Self {
        SecretUrl(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with any password replaced by `***`, for logs and error messages.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// The database name in a `mysql://.../NAME?...` URL.
pub fn database_name(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    let name = path.split(['?', '#']).next()?;
    (!name.is_empty()).then(|| name.to_string())
}

/// Replaces the password of `scheme://user:password@host...` with `***`; other text is kept.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else { return url.to_string() };
    let userinfo = &authority[..at];
    match userinfo.find(':') {
        Some(colon) => format!("{}://{}:***@{}", &url[..scheme_end], &userinfo[..colon], &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Pretty,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not one of json, pretty")),
        }
    }
}

/// RabbitMQ queue type of `provisioner.orders` (and the other queues the worker declares).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    #[default]
    Quorum,
    Classic,
}

impl QueueType {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueType::Quorum => "quorum",
            QueueType::Classic => "classic",
        }
    }
}

impl FromStr for QueueType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "quorum" => Ok(QueueType::Quorum),
            "classic" => Ok(QueueType::Classic),
            other => Err(format!("`{other}` is not one of quorum, classic")),
        }
    }
}

/// How `order.suspend` takes a VM out of service (and `order.unsuspend` brings it back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SuspendMode {
    /// Nova `os-stop` → `SHUTOFF` (`os-start` back): works on every hypervisor; the VM keeps its
    /// host and its resources are still counted.
    #[default]
    Stop,
    /// Nova `suspend` → `SUSPENDED` (`resume`): memory saved to disk, libvirt/KVM only.
    Suspend,
    /// Nova `shelve` → `SHELVED_OFFLOADED` (`unshelve`): frees the hypervisor; unshelving may
    /// take long and land on another host.
    Shelve,
    /// Nova `pause` → `PAUSED` (`unpause`): frozen in memory, still on the host.
    Pause,
}

impl SuspendMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SuspendMode::Stop => "stop",
            SuspendMode::Suspend => "suspend",
            SuspendMode::Shelve => "shelve",
            SuspendMode::Pause => "pause",
        }
    }
}

impl FromStr for SuspendMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "stop" => Ok(SuspendMode::Stop),
            "suspend" => Ok(SuspendMode::Suspend),
            "shelve" => Ok(SuspendMode::Shelve),
            "pause" => Ok(SuspendMode::Pause),
            other => Err(format!("`{other}` is not one of stop, suspend, shelve, pause")),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub http: HttpSettings,
    pub log: LogSettings,
    pub intake: IntakeSettings,
    pub engine: EngineSettings,
    pub lifecycle: LifecycleSettings,
    pub admin: AdminSettings,
    pub shutdown: ShutdownSettings,
    pub worker: WorkerSettings,
    pub openstack: OpenStackSettings,
    pub secrets: SecretsSettings,
    pub reconcile: ReconcileSettings,
    /// `on`: a create order that pre-flight already knows cannot succeed (quota, a name that
    /// resolves to nothing) fails fast, before the first create call.
    pub preflight: Toggle,
    pub ui: UiSettings,
}

/// The operator web console (`/ui`, see `http::ui`): who may log in.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct UiSettings {
    /// Without users the console is read-only on a loopback listener and absent elsewhere.
    pub users: Vec<UiUser>,
}

/// One console user: `name:role:argon2-hash` in `PROVISIONER_UI_USERS` (users separated by `;`
/// or whitespace; the PHC hash has `,` in it), or a `[[ui.users]]` table in the file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UiUser {
    pub name: String,
    pub role: UiRole,
    /// An Argon2 PHC string (`provisioner ui hash-password` prints one).
    pub password_hash: Secret,
}

/// What a console user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum UiRole {
    /// Sees every page, presses no button.
    #[serde(rename = "read-only")]
    ReadOnly,
    /// Also replays and cancels jobs.
    #[serde(rename = "operator")]
    Operator,
}

impl UiRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UiRole::ReadOnly => "read-only",
            UiRole::Operator => "operator",
        }
    }
}

impl FromStr for UiRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "read-only" | "readonly" => Ok(UiRole::ReadOnly),
            "operator" => Ok(UiRole::Operator),
            other => Err(format!("role `{other}` is not one of read-only, operator")),
        }
    }
}

/// Parses `PROVISIONER_UI_USERS`: `name:role:hash` entries separated by `;` or whitespace.
pub fn parse_ui_users(v: &str) -> Result<Vec<UiUser>, String> {
    let mut users = Vec::new();
    for entry in v.split(|c: char| c == ';' || c.is_whitespace()).filter(|e| !e.is_empty()) {
        let mut parts = entry.splitn(3, ':');
        let (Some(name), Some(role), Some(hash)) = (parts.next(), parts.next(), parts.next()) else {
            return Err("each user is name:role:argon2-hash".into());
        };
        users.push(UiUser { name: name.to_string(), role: role.parse()?, password_hash: Secret::new(hash) });
    }
    Ok(users)
}

/// `on` / `off` (also `true` / `false`, `1` / `0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toggle {
    #[default]
    Off,
    On,
}

impl Toggle {
    pub fn is_on(self) -> bool {
        self == Toggle::On
    }
}

impl FromStr for Toggle {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => Ok(Toggle::On),
            "off" | "false" | "0" | "no" | "" => Ok(Toggle::Off),
            other => Err(format!("`{other}` is not one of on, off")),
        }
    }
}

/// What the reconciler does with an orphan (a resource marked by the provisioner that no job
/// or service owns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OrphanPolicy {
    /// Record it (table, metric, log line) and leave it.
    #[default]
    Report,
    /// Record it and delete it (once).
    Delete,
}

impl OrphanPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OrphanPolicy::Report => "report",
            OrphanPolicy::Delete => "delete",
        }
    }
}

impl FromStr for OrphanPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "report" => Ok(OrphanPolicy::Report),
            "delete" => Ok(OrphanPolicy::Delete),
            other => Err(format!("`{other}` is not one of report, delete")),
        }
    }
}

/// The reconciler: one worker at a time compares the cloud with the database.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Seconds between passes (across all workers); 0 turns the reconciler off in the worker
    /// (`provisioner reconcile --once` still runs a pass).
    pub interval_secs: u64,
    /// A marked resource younger than this is never an orphan (its job may still record it).
    pub grace_secs: u64,
    pub orphans: OrphanPolicy,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings { interval_secs: 300, grace_secs: 900, orphans: OrphanPolicy::Report }
    }
}

/// Secrets at rest (passwords in tenant orders, until the user exists).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsSettings {
    /// 32 random bytes in base64 (`openssl rand -base64 32`, `provisioner secrets gen-key`).
    /// Without it, an order that carries a password is dead-lettered.
    pub key: Option<Secret>,
}

impl SecretsSettings {
    /// The configured key, if any (validated at load, so this only fails on a key set later).
    pub fn key(&self) -> Result<Option<crate::secrets::SecretsKey>, crate::secrets::SecretsError> {
        self.key.as_ref().map(|k| crate::secrets::SecretsKey::from_base64(k.expose())).transpose()
    }
}

/// How the worker talks to the cloud. Which cloud, and the credentials, come from `OS_*` /
/// `clouds.yaml` (see `openstack::config`), not from here.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenStackSettings {
    /// Longest time one OpenStack API request may take (connect, send, answer).
    pub request_timeout_secs: u64,
    /// Longest time to establish a connection to an OpenStack endpoint.
    pub connect_timeout_secs: u64,
}

impl Default for OpenStackSettings {
    fn default() -> Self {
        OpenStackSettings { request_timeout_secs: 30, connect_timeout_secs: 5 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `mysql://user:password@host:port/database`; the database is created if missing.
    pub url: SecretUrl,
    /// Connections in the pool.
    pub max_connections: u32,
    /// How long to wait for a connection from the pool before the operation fails (and is retried).
    pub acquire_timeout_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost` (`%2f` is the default vhost); `amqps://` for TLS.
    pub url: SecretUrl,
    /// Queue type of the queues the worker declares.
    pub queue_type: QueueType,
    /// Prefix for every exchange and queue name. Empty in production (the names are a contract
    /// with billing); tests set it to isolate themselves on a shared broker.
    pub prefix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSettings {
    /// Status API, health and metrics listener. Empty string disables it.
    pub addr: String,
    /// Bearer token required by the status API when `addr` is not a loopback address.
    pub token: Option<Secret>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IntakeSettings {
    /// Unacked deliveries the broker may hand the worker at once (AMQP prefetch / QoS).
    pub prefetch: u16,
    /// Orders committed in one transaction at most.
    pub batch_size: usize,
    /// How long a partial batch waits for more deliveries before it is committed.
    pub batch_linger_ms: u64,
    /// How long an action whose target service is unknown is held back before it is
    /// dead-lettered: its create may still be in another worker's uncommitted batch.
    pub target_grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSettings {
    /// Runs the provisioning engine in this process (intake-only workers set it to false).
    pub enabled: bool,
    /// Steps running at once in this worker.
    pub max_in_flight: usize,
    /// Jobs claimed per claim query.
    pub claim_batch: usize,
    /// Lease length; a worker renews its leases at a third of it.
    pub lease_secs: u64,
    /// How often the waits (server ACTIVE, volume available / in-use) are polled, per project.
    pub poll_interval_ms: u64,
    /// Attempts of one step before the job fails.
    pub step_max_attempts: u32,
    /// A job not finished this long after it was queued fails with `timeout`.
    pub job_deadline_secs: u64,
    /// Longest wait for a server to become ACTIVE, a volume to become available or in-use.
    pub wait_timeout_secs: u64,
    /// First retry delay; doubled each attempt, with full jitter.
    pub backoff_base_ms: u64,
    /// Largest retry delay, also the cap on a `Retry-After` the cloud asks for.
    pub backoff_max_secs: u64,
    /// Claims of the same step that ended without progress (the worker died) before the job fails.
    pub max_crashes: u32,
    /// OpenStack requests per second per project (0 = unlimited).
    pub project_rate: f64,
    /// OpenStack requests per second in all (0 = unlimited).
    pub cloud_rate: f64,
}

/// What the lifecycle orders (suspend, unsuspend, resize, terminate) do.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LifecycleSettings {
    /// How a suspend takes the VM out of service.
    pub suspend_mode: SuspendMode,
    /// Terminate deletes the service's volume; false detaches it and keeps it (the event says so).
    pub delete_volumes: bool,
}

impl Default for LifecycleSettings {
    fn default() -> Self {
        LifecycleSettings { suspend_mode: SuspendMode::Stop, delete_volumes: true }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AdminSettings {
    /// AMQP users allowed to send admin commands (checked against the message's `user_id`).
    pub allowed_users: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSettings {
    /// How long in-flight work may take to finish after SIGTERM.
    pub grace_secs: u64,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// This worker's name in leases and history; default `<hostname>-<pid>-<random>`.
    pub id: Option<String>,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: SecretUrl::new("mysql://root@127.0.0.1:3306/provisioner"),
            max_connections: 16,
            acquire_timeout_secs: 5,
        }
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        AmqpSettings {
            url: SecretUrl::new("amqp://guest:guest@127.0.0.1:5672/%2f"),
            queue_type: QueueType::Quorum,
            prefix: String::new(),
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings { addr: "127.0.0.1:8080".into(), token: None }
    }
}

impl Default for IntakeSettings {
    fn default() -> Self {
        IntakeSettings { prefetch: 1000, batch_size: 250, batch_linger_ms: 5, target_grace_secs: 10 }
    }
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            enabled: true,
            max_in_flight: 256,
            claim_batch: 64,
            lease_secs: 30,
            poll_interval_ms: 250,
            step_max_attempts: 8,
            job_deadline_secs: 3600,
            wait_timeout_secs: 900,
            backoff_base_ms: 500,
            backoff_max_secs: 60,
            max_crashes: 3,
            project_rate: 50.0,
            cloud_rate: 1000.0,
        }
    }
}

impl Default for ShutdownSettings {
    fn default() -> Self {
        ShutdownSettings { grace_secs: 30 }
    }
}

/// Every environment variable the worker reads, with the setting it sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("PROVISIONER_DATABASE_URL", "database.url"),
    ("PROVISIONER_DATABASE_MAX_CONNECTIONS", "database.max_connections"),
    ("PROVISIONER_DATABASE_ACQUIRE_TIMEOUT_SECS", "database.acquire_timeout_secs"),
    ("PROVISIONER_AMQP_URL", "amqp.url"),
    ("PROVISIONER_AMQP_QUEUE_TYPE", "amqp.queue_type"),
    ("PROVISIONER_AMQP_PREFIX", "amqp.prefix"),
    ("PROVISIONER_HTTP_ADDR", "http.addr"),
    ("PROVISIONER_HTTP_TOKEN", "http.token"),
    ("PROVISIONER_LOG_FORMAT", "log.format"),
    ("PROVISIONER_INTAKE_PREFETCH", "intake.prefetch"),
    ("PROVISIONER_INTAKE_BATCH_SIZE", "intake.batch_size"),
    ("PROVISIONER_INTAKE_BATCH_LINGER_MS", "intake.batch_linger_ms"),
    ("PROVISIONER_INTAKE_TARGET_GRACE_SECS", "intake.target_grace_secs"),
    ("PROVISIONER_ENGINE_ENABLED", "engine.enabled"),
    ("PROVISIONER_ENGINE_MAX_IN_FLIGHT", "engine.max_in_flight"),
    ("PROVISIONER_ENGINE_CLAIM_BATCH", "engine.claim_batch"),
    ("PROVISIONER_ENGINE_LEASE_SECS", "engine.lease_secs"),
    ("PROVISIONER_ENGINE_POLL_INTERVAL_MS", "engine.poll_interval_ms"),
    ("PROVISIONER_ENGINE_STEP_MAX_ATTEMPTS", "engine.step_max_attempts"),
    ("PROVISIONER_ENGINE_JOB_DEADLINE_SECS", "engine.job_deadline_secs"),
    ("PROVISIONER_ENGINE_WAIT_TIMEOUT_SECS", "engine.wait_timeout_secs"),
    ("PROVISIONER_ENGINE_BACKOFF_BASE_MS", "engine.backoff_base_ms"),
    ("PROVISIONER_ENGINE_BACKOFF_MAX_SECS", "engine.backoff_max_secs"),
    ("PROVISIONER_ENGINE_MAX_CRASHES", "engine.max_crashes"),
    ("PROVISIONER_ENGINE_PROJECT_RATE", "engine.project_rate"),
    ("PROVISIONER_ENGINE_CLOUD_RATE", "engine.cloud_rate"),
    ("PROVISIONER_LIFECYCLE_SUSPEND_MODE", "lifecycle.suspend_mode"),
    ("PROVISIONER_LIFECYCLE_DELETE_VOLUMES", "lifecycle.delete_volumes"),
    ("PROVISIONER_ADMIN_ALLOWED_USERS", "admin.allowed_users"),
    ("PROVISIONER_SHUTDOWN_GRACE_SECS", "shutdown.grace_secs"),
    ("PROVISIONER_WORKER_ID", "worker.id"),
    ("PROVISIONER_OPENSTACK_REQUEST_TIMEOUT_SECS", "openstack.request_timeout_secs"),
    ("PROVISIONER_OPENSTACK_CONNECT_TIMEOUT_SECS", "openstack.connect_timeout_secs"),
    ("PROVISIONER_SECRETS_KEY", "secrets.key"),
    ("PROVISIONER_RECONCILE_INTERVAL_SECS", "reconcile.interval_secs"),
    ("PROVISIONER_RECONCILE_GRACE_SECS", "reconcile.grace_secs"),
    ("PROVISIONER_RECONCILE_ORPHANS", "reconcile.orphans"),
    ("PROVISIONER_PREFLIGHT", "preflight"),
    ("PROVISIONER_UI_USERS", "ui.users"),
];

fn parse<T: FromStr>(var: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.trim().parse::<T>().map_err(|e| ConfigError(format!("{var}={value:?} is invalid: {e}")))
}

impl Settings {
    /// Defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_from(file, |name| std::env::var(name).ok())
    }

    /// Like [`Settings::load`] with an explicit environment (tests use it).
    pub fn load_from(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut settings = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
                toml::from_str::<Settings>(&text)
                    .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.to_string().trim())))?
            }
            None => Settings::default(),
        };
        settings.apply_env(&env)?;
        settings.validate()?;
        Ok(settings)
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for (var, _) in ENV_VARS {
            let Some(value) = env(var) else { continue };
            self.set(var, &value)?;
        }
        Ok(())
    }

    fn set(&mut self, var: &str, v: &str) -> Result<(), ConfigError> {
        match var {
            "PROVISIONER_DATABASE_URL" => self.database.url = SecretUrl::new(v.trim()),
            "PROVISIONER_DATABASE_MAX_CONNECTIONS" => self.database.max_connections = parse(var, v)?,
            "PROVISIONER_DATABASE_ACQUIRE_TIMEOUT_SECS" => {
                self.database.acquire_timeout_secs = parse(var, v)?
            }
            "PROVISIONER_AMQP_URL" => self.amqp.url = SecretUrl::new(v.trim()),
            "PROVISIONER_AMQP_QUEUE_TYPE" => self.amqp.queue_type = parse(var, v)?,
            "PROVISIONER_AMQP_PREFIX" => self.amqp.prefix = v.trim().to_string(),
            "PROVISIONER_HTTP_ADDR" => self.http.addr = v.trim().to_string(),
            "PROVISIONER_HTTP_TOKEN" => self.http.token = (!v.is_empty()).then(|| Secret::new(v.trim())),
            "PROVISIONER_LOG_FORMAT" => self.log.format = parse(var, v)?,
            "PROVISIONER_INTAKE_PREFETCH" => self.intake.prefetch = parse(var, v)?,
            "PROVISIONER_INTAKE_BATCH_SIZE" => self.intake.batch_size = parse(var, v)?,
            "PROVISIONER_INTAKE_BATCH_LINGER_MS" => self.intake.batch_linger_ms = parse(var, v)?,
            "PROVISIONER_INTAKE_TARGET_GRACE_SECS" => self.intake.target_grace_secs = parse(var, v)?,
            "PROVISIONER_LIFECYCLE_SUSPEND_MODE" => self.lifecycle.suspend_mode = parse(var, v)?,
            "PROVISIONER_LIFECYCLE_DELETE_VOLUMES" => self.lifecycle.delete_volumes = parse(var, v)?,
            "PROVISIONER_ENGINE_ENABLED" => self.engine.enabled = parse(var, v)?,
            "PROVISIONER_ENGINE_MAX_IN_FLIGHT" => self.engine.max_in_flight = parse(var, v)?,
            "PROVISIONER_ENGINE_CLAIM_BATCH" => self.engine.claim_batch = parse(var, v)?,
            "PROVISIONER_ENGINE_LEASE_SECS" => self.engine.lease_secs = parse(var, v)?,
            "PROVISIONER_ENGINE_POLL_INTERVAL_MS" => self.engine.poll_interval_ms = parse(var, v)?,
            "PROVISIONER_ENGINE_STEP_MAX_ATTEMPTS" => self.engine.step_max_attempts = parse(var, v)?,
            "PROVISIONER_ENGINE_JOB_DEADLINE_SECS" => self.engine.job_deadline_secs = parse(var, v)?,
            "PROVISIONER_ENGINE_WAIT_TIMEOUT_SECS" => self.engine.wait_timeout_secs = parse(var, v)?,
            "PROVISIONER_ENGINE_BACKOFF_BASE_MS" => self.engine.backoff_base_ms = parse(var, v)?,
            "PROVISIONER_ENGINE_BACKOFF_MAX_SECS" => self.engine.backoff_max_secs = parse(var, v)?,
            "PROVISIONER_ENGINE_MAX_CRASHES" => self.engine.max_crashes = parse(var, v)?,
            "PROVISIONER_ENGINE_PROJECT_RATE" => self.engine.project_rate = parse(var, v)?,
            "PROVISIONER_ENGINE_CLOUD_RATE" => self.engine.cloud_rate = parse(var, v)?,
            "PROVISIONER_ADMIN_ALLOWED_USERS" => {
                self.admin.allowed_users =
                    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
            }
            "PROVISIONER_SHUTDOWN_GRACE_SECS" => self.shutdown.grace_secs = parse(var, v)?,
            "PROVISIONER_WORKER_ID" => self.worker.id = (!v.trim().is_empty()).then(|| v.trim().to_string()),
            "PROVISIONER_OPENSTACK_REQUEST_TIMEOUT_SECS" => {
                self.openstack.request_timeout_secs = parse(var, v)?
            }
            "PROVISIONER_OPENSTACK_CONNECT_TIMEOUT_SECS" => {
                self.openstack.connect_timeout_secs = parse(var, v)?
            }
            "PROVISIONER_SECRETS_KEY" => {
                self.secrets.key = (!v.trim().is_empty()).then(|| Secret::new(v.trim()))
            }
            "PROVISIONER_RECONCILE_INTERVAL_SECS" => self.reconcile.interval_secs = parse(var, v)?,
            "PROVISIONER_RECONCILE_GRACE_SECS" => self.reconcile.grace_secs = parse(var, v)?,
            "PROVISIONER_RECONCILE_ORPHANS" => self.reconcile.orphans = parse(var, v)?,
            "PROVISIONER_PREFLIGHT" => self.preflight = parse(var, v)?,
            "PROVISIONER_UI_USERS" => {
                self.ui.users = parse_ui_users(v).map_err(|e| ConfigError(format!("{var}: {e}")))?
            }
            _ => unreachable!("{var} is listed in ENV_VARS but not handled"),
        }
        Ok(())
    }

    /// Checks values that parse but make no sense; the message names the setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |var: &str, msg: &str| Err(ConfigError(format!("{var}: {msg}")));
        let db = self.database.url.expose();
        if !db.starts_with("mysql://") && !db.starts_with("mariadb://") {
            return err(
                "PROVISIONER_DATABASE_URL",
                &format!("`{}` must start with mysql://", self.database.url.redacted()),
            );
        }
        if database_name(db).is_none() {
            return err(
                "PROVISIONER_DATABASE_URL",
                &format!("`{}` names no database (mysql://host/DATABASE)", self.database.url.redacted()),
            );
        }
        let amqp = self.amqp.url.expose();
        if !amqp.starts_with("amqp://") && !amqp.starts_with("amqps://") {
            return err(
                "PROVISIONER_AMQP_URL",
                &format!("`{}` must start with amqp:// or amqps://", self.amqp.url.redacted()),
            );
        }
        if !self.http.addr.is_empty() && self.http.addr.parse::<SocketAddr>().is_err() {
            return err(
                "PROVISIONER_HTTP_ADDR",
                &format!("`{}` is not an address like 127.0.0.1:8080", self.http.addr),
            );
        }
        if self.database.max_connections < 2 {
            return err("PROVISIONER_DATABASE_MAX_CONNECTIONS", "must be at least 2");
        }
        if self.intake.prefetch == 0 {
            return err("PROVISIONER_INTAKE_PREFETCH", "must be at least 1");
        }
        if self.intake.batch_size == 0 || self.intake.batch_size > 5000 {
            return err("PROVISIONER_INTAKE_BATCH_SIZE", "must be between 1 and 5000");
        }
        if self.engine.max_in_flight == 0 {
            return err("PROVISIONER_ENGINE_MAX_IN_FLIGHT", "must be at least 1");
        }
        if self.engine.claim_batch == 0 {
            return err("PROVISIONER_ENGINE_CLAIM_BATCH", "must be at least 1");
        }
        if self.engine.lease_secs < 3 {
            return err("PROVISIONER_ENGINE_LEASE_SECS", "must be at least 3 seconds");
        }
        if self.engine.poll_interval_ms == 0 {
            return err("PROVISIONER_ENGINE_POLL_INTERVAL_MS", "must be at least 1");
        }
        if self.engine.step_max_attempts == 0 {
            return err("PROVISIONER_ENGINE_STEP_MAX_ATTEMPTS", "must be at least 1");
        }
        if self.engine.max_crashes == 0 {
            return err("PROVISIONER_ENGINE_MAX_CRASHES", "must be at least 1");
        }
        if !(self.engine.project_rate >= 0.0 && self.engine.project_rate.is_finite()) {
            return err("PROVISIONER_ENGINE_PROJECT_RATE", "must be a non-negative number");
        }
        if !(self.engine.cloud_rate >= 0.0 && self.engine.cloud_rate.is_finite()) {
            return err("PROVISIONER_ENGINE_CLOUD_RATE", "must be a non-negative number");
        }
        if self.openstack.request_timeout_secs == 0 {
            return err("PROVISIONER_OPENSTACK_REQUEST_TIMEOUT_SECS", "must be at least 1");
        }
        if self.openstack.connect_timeout_secs == 0 {
            return err("PROVISIONER_OPENSTACK_CONNECT_TIMEOUT_SECS", "must be at least 1");
        }
        if let Err(e) = self.secrets.key() {
            // The message says what is wrong with the key, never the key.
            return err("PROVISIONER_SECRETS_KEY", &e.to_string());
        }
        for (i, u) in self.ui.users.iter().enumerate() {
            let bad = |m: String| err("PROVISIONER_UI_USERS", &m);
            if u.name.is_empty() || u.name.len() > 64 || u.name.chars().any(|c| c.is_control() || c == ':') {
                return bad(format!("user {}: a name is 1 to 64 characters, no `:`", i + 1));
            }
            if self.ui.users[..i].iter().any(|o| o.name == u.name) {
                return bad(format!("user `{}` is listed twice", u.name));
            }
            if let Err(e) = crate::http::ui::auth::check_hash(u.password_hash.expose()) {
                return bad(format!("user `{}`: {e}", u.name));
            }
        }
        if let Ok(addr) = self.http.addr.parse::<SocketAddr>()
            && !addr.ip().is_loopback()
            && self.http.token.is_none()
        {
            return err(
                "PROVISIONER_HTTP_TOKEN",
                &format!("required when PROVISIONER_HTTP_ADDR ({addr}) is not a loopback address"),
            );
        }
        Ok(())
    }

    /// Names of `PROVISIONER_*` variables in `vars` that no setting reads: likely typos.
    pub fn unknown_env_vars(vars: impl IntoIterator<Item = String>) -> Vec<String> {
        vars.into_iter()
            .filter(|v| v.starts_with("PROVISIONER_"))
            .filter(|v| !ENV_VARS.iter().any(|(known, _)| known == v))
            .collect()
    }

    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.engine.lease_secs)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown.grace_secs)
    }

    /// This worker's identity in leases and history.
    pub fn worker_id(&self) -> String {
        self.worker.id.clone().unwrap_or_else(default_worker_id)
    }
}

fn default_worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "worker".into());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load_from(None, |k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_documented_contract() {
        let s = load(&[]).unwrap();
        assert_eq!(s.database.url.expose(), "mysql://root@127.0.0.1:3306/provisioner");
        assert_eq!(s.amqp.url.expose(), "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(s.http.addr, "127.0.0.1:8080");
        assert_eq!(s.amqp.queue_type, QueueType::Quorum);
        assert_eq!(s.log.format, LogFormat::Pretty);
    }

    #[test]
    fn database_name_is_read_from_the_url() {
        assert_eq!(database_name("mysql://root@127.0.0.1:3306/provisioner").as_deref(), Some("provisioner"));
        assert_eq!(database_name("mysql://u:p@h/db?ssl-mode=required").as_deref(), Some("db"));
        assert_eq!(database_name("mysql://u:p@h/"), None);
        assert_eq!(database_name("mysql://u:p@h"), None);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let e = load(&[("PROVISIONER_INTAKE_PREFETCH", "lots")]).unwrap_err().to_string();
        assert!(e.contains("PROVISIONER_INTAKE_PREFETCH"), "{e}");
        let e = load(&[("PROVISIONER_LOG_FORMAT", "xml")]).unwrap_err().to_string();
        assert!(e.contains("PROVISIONER_LOG_FORMAT") && e.contains("json, pretty"), "{e}");
        let e = load(&[("PROVISIONER_DATABASE_URL", "postgres://u:hunter2@h/db")]).unwrap_err().to_string();
        assert!(e.contains("PROVISIONER_DATABASE_URL"), "{e}");
        assert!(!e.contains("hunter2"), "password leaked: {e}");
    }

    #[test]
    fn passwords_never_print() {
        let s = load(&[
            ("PROVISIONER_AMQP_URL", "amqp://worker:s3cret@mq:5672/prod"),
            ("PROVISIONER_DATABASE_URL", "mysql://prov:hunter2@db:3306/provisioner"),
            ("PROVISIONER_HTTP_TOKEN", "tok-123"),
        ])
        .unwrap();
        let shown = format!("{s:?} {} {}", s.amqp.url, s.database.url);
        assert!(
            !shown.contains("s3cret") && !shown.contains("hunter2") && !shown.contains("tok-123"),
            "{shown}"
        );
        assert!(shown.contains("amqp://worker:***@mq:5672/prod"), "{shown}");
    }

    #[test]
    fn the_secrets_key_is_checked_and_never_shown() {
        assert!(load(&[]).unwrap().secrets.key().unwrap().is_none());
        let key = crate::secrets::SecretsKey::generate().unwrap();
        let s = load(&[("PROVISIONER_SECRETS_KEY", key.expose())]).unwrap();
        assert!(s.secrets.key().unwrap().is_some());
        assert!(!format!("{s:?}").contains(key.expose()));
        let e = load(&[("PROVISIONER_SECRETS_KEY", "c2hvcnQ=")]).unwrap_err().to_string();
        assert!(e.contains("PROVISIONER_SECRETS_KEY") && e.contains("openssl rand -base64 32"), "{e}");
        assert!(!e.contains("c2hvcnQ="), "{e}");
    }

    #[test]
    fn redact_url_keeps_what_is_not_a_password() {
        assert_eq!(redact_url("mysql://root@127.0.0.1:3306/p"), "mysql://root@127.0.0.1:3306/p");
        assert_eq!(redact_url("amqp://a:b@h/%2f"), "amqp://a:***@h/%2f");
        assert_eq!(redact_url("amqp://a:b@c@h/v"), "amqp://a:***@h/v");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn a_public_listener_needs_a_token() {
        let e = load(&[("PROVISIONER_HTTP_ADDR", "0.0.0.0:8080")]).unwrap_err().to_string();
        assert!(e.contains("PROVISIONER_HTTP_TOKEN"), "{e}");
        load(&[("PROVISIONER_HTTP_ADDR", "0.0.0.0:8080"), ("PROVISIONER_HTTP_TOKEN", "t")]).unwrap();
    }

    #[test]
    fn file_then_env() {
        let dir = std::env::temp_dir().join(format!("prov-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.toml");
        std::fs::write(&path, "[intake]\nprefetch = 7\nbatch_size = 3\n[admin]\nallowed_users = [\"ops\"]\n")
            .unwrap();
        let s = Settings::load_from(Some(&path), |k| {
            (k == "PROVISIONER_INTAKE_BATCH_SIZE").then(|| "5".to_string())
        })
        .unwrap();
        assert_eq!(s.intake.prefetch, 7);
        assert_eq!(s.intake.batch_size, 5);
        assert_eq!(s.admin.allowed_users, vec!["ops".to_string()]);
        std::fs::write(&path, "[intake]\nprefetchh = 7\n").unwrap();
        let e = Settings::load_from(Some(&path), |_| None).unwrap_err().to_string();
        assert!(e.contains("prefetchh"), "{e}");
    }

    #[test]
    fn unknown_env_vars_are_reported() {
        let unknown = Settings::unknown_env_vars(vec![
            "PROVISIONER_INTAKE_PREFTCH".to_string(),
            "PROVISIONER_AMQP_URL".to_string(),
            "HOME".to_string(),
        ]);
        assert_eq!(unknown, vec!["PROVISIONER_INTAKE_PREFTCH".to_string()]);
    }
}
