//! Builds the running application from settings: the store, the broker connection, the
//! topology and the long-running tasks, wired together. `main` uses it, and so do the tests and
//! the benchmark, so that what is tested is what runs.
//!
//! [`App::build`] connects the store (creating and migrating the database), connects the broker
//! and declares the topology, then spawns the tasks, each with the one shutdown token. Each task
//! is named; [`App::run_until_stopped`] waits for the token (or for a task to fail, which stops
//! the others: a worker that cannot do part of its job exits and is restarted by its
//! supervisor), then gives the tasks `shutdown.grace_secs` to finish their work in hand and
//! aborts what is left. [`run_worker`] adds the signals: SIGINT/SIGTERM cancel the token, a
//! second signal exits at once.

use std::collections::HashMap;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::amqp::admin::AdminConsumer;
use crate::amqp::intake::Intake;
use crate::amqp::relay::Relay;
use crate::amqp::{AmqpError, Broker, Names, topology};
use crate::cli::{CliResult, DemoArgs};
use crate::config::Settings;
use crate::engine::cloud::{Cloud, Tenants};
use crate::engine::openstack_cloud::OpenStackCloud;
use crate::engine::{Engine, EngineConfig};
use crate::http::HttpState;
use crate::messages::Schemas;
use crate::openstack::config::CloudConfig;
use crate::openstack::session::{Session, SessionOptions};
use crate::sim::{SimConfig, SimHandle, Simulator};
use crate::store::{Store, StoreError};

/// What a task returns: its own error type, boxed at this boundary.
pub type TaskResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// How long startup waits for RabbitMQ before it gives up with a clear message.
const BROKER_STARTUP_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    #[error("RabbitMQ at {0} did not answer within {1} s")]
    BrokerTimeout(String, u64),
    #[error("cloud: {0}")]
    Cloud(String),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error("task {name} failed: {error}")]
    Task { name: &'static str, error: String },
}

/// The running worker: its shared handles and its named tasks.
pub struct App {
    settings: Settings,
    worker_id: String,
    store: Store,
    broker: Broker,
    names: Names,
    schemas: Schemas,
    shutdown: CancellationToken,
    /// Wakes the outbox relay when the engine committed events.
    events: Arc<Notify>,
    /// The embedded simulator, when no cloud is configured.
    simulator: Option<SimHandle>,
    tasks: JoinSet<TaskResult>,
    task_names: HashMap<tokio::task::Id, &'static str>,
    http_addr: Option<std::net::SocketAddr>,
    /// The cloud of the engine (pre-flight over HTTP uses it too).
    cloud: Option<Arc<dyn Cloud>>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("worker_id", &self.worker_id)
            .field("names", &self.names)
            .field("tasks", &self.task_names.values().collect::<Vec<_>>())
            .finish()
    }
}

/// This worker's name in leases, history and consumer tags: `worker.id`, or
/// `<hostname>-<pid>-<4 random hex>`.
pub fn worker_id(settings: &Settings) -> String {
    if let Some(id) = settings.worker.id.as_ref().filter(|id| !id.trim().is_empty()) {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}-{:04x}", std::process::id(), fastrand::u16(..))
}

/// Counts the messages waiting in `queue` (a passive declare on a fresh channel), for the
/// console's dead-letter count.
fn queue_depth(broker: Broker, queue: String) -> crate::http::ui::DeadLetterProbe {
    Arc::new(move || {
        let (broker, queue) = (broker.clone(), queue.clone());
        Box::pin(async move {
            let count = async {
                let channel = broker.channel().await.map_err(|e| e.to_string())?;
                let options = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
                let q = channel
                    .queue_declare(queue.as_str().into(), options, lapin::types::FieldTable::default())
                    .await
                    .map_err(|e| format!("queue {queue}: {e}"))?;
                let _ = channel.close(200, "done".into()).await;
                Ok(u64::from(q.message_count()))
            };
            tokio::time::timeout(Duration::from_secs(2), count)
                .await
                .unwrap_or_else(|_| Err("the broker did not answer within 2 s".to_string()))
        })
    })
}

impl App {
    /// Connects everything and starts the tasks. Fails with one clear message if the database
    /// or the broker cannot be reached or the topology cannot be declared.
    pub async fn build(settings: Settings) -> Result<App, StartupError> {
        let cloud = if settings.engine.enabled {
            CloudConfig::from_env().map_err(|e| StartupError::Cloud(e.to_string()))?
        } else {
            None
        };
        App::build_with_cloud(settings, cloud).await
    }

    /// Like [`App::build`], with the cloud given instead of read from `OS_*` / `clouds.yaml`
    /// (tests point it at their simulator). With the engine enabled and no cloud, the embedded
    /// simulator is started and the worker says so loudly.
    pub async fn build_with_cloud(
        settings: Settings,
        cloud: Option<CloudConfig>,
    ) -> Result<App, StartupError> {
        let shutdown = CancellationToken::new();
        let worker_id = worker_id(&settings);
        let store = Store::connect(&settings.database).await?;
        let broker =
            Broker::new(settings.amqp.url.clone(), format!("provisioner {worker_id}"), shutdown.clone());
        let names = Names::new(&settings.amqp.prefix);
        let channel = tokio::time::timeout(BROKER_STARTUP_WAIT, broker.channel()).await.map_err(|_| {
            StartupError::BrokerTimeout(broker.redacted_url(), BROKER_STARTUP_WAIT.as_secs())
        })??;
        topology::declare(&channel, &names, settings.amqp.queue_type).await?;
        drop(channel); // closed by lapin when dropped

        let mut app = App {
            schemas: Schemas::new(),
            settings,
            worker_id,
            store,
            broker,
            names,
            shutdown,
            events: Arc::new(Notify::new()),
            simulator: None,
            tasks: JoinSet::new(),
            task_names: HashMap::new(),
            http_addr: None,
            cloud: None,
        };

        // The tasks of the worker. Engine, outbox relay, admin consumer and HTTP are added here.
        let (intake, token) = (app.intake(), app.shutdown_token());
        app.spawn("intake", async move { intake.run(token).await.map_err(Into::into) });
        if app.settings.engine.enabled {
            let cloud = match cloud {
                Some(cloud) => cloud,
                None => app.embedded_simulator().await?,
            };
            app.start_engine(cloud)?;
        }
        let (relay, token) = (app.relay(), app.shutdown_token());
        app.spawn("event relay", async move { relay.run(token).await.map_err(Into::into) });
        let (admin, token) = (app.admin(), app.shutdown_token());
        app.spawn("admin", async move { admin.run(token).await.map_err(Into::into) });
        if !app.settings.http.addr.is_empty() {
            // Bound here, so that a busy port or a missing token fails startup with its message.
            let listener =
                crate::http::bind(&app.settings.http.addr, app.settings.http.token.as_ref()).await?;
            app.http_addr = listener.local_addr().ok();
            let (mut state, token) = (HttpState::new(&app.settings, app.store.clone()), app.shutdown_token());
            state.console.dead_letters = Some(queue_depth(app.broker.clone(), app.names.dead_queue.clone()));
            state.cloud = app.cloud.clone();
            app.spawn(
                "http",
                async move { crate::http::serve(listener, state, token).await.map_err(Into::into) },
            );
        }
        Ok(app)
    }

    /// The intake consumer of this app (its own clone of the handles).
    pub fn intake(&self) -> Intake {
        Intake {
            broker: self.broker.clone(),
            store: self.store.clone(),
            names: self.names.clone(),
            queue_type: self.settings.amqp.queue_type,
            settings: self.settings.intake.clone(),
            schemas: self.schemas.clone(),
            consumer_tag: format!("intake {}", self.worker_id),
            secrets: self.settings.secrets.key().ok().flatten().map(Arc::new),
        }
    }

    /// Starts the provisioning engine on `cloud` (one Keystone session for all projects).
    fn start_engine(&mut self, cloud: CloudConfig) -> Result<(), StartupError> {
        let session = Session::new(cloud, SessionOptions::from_settings(&self.settings))
            .map_err(|e| StartupError::Cloud(e.to_string()))?;
        let openstack = Arc::new(OpenStackCloud::new(Arc::new(session)));
        let (cloud, tenants): (Arc<dyn Cloud>, Arc<dyn Tenants>) = (openstack.clone(), openstack);
        self.cloud = Some(cloud.clone());
        let config = EngineConfig::from_settings(&self.settings, self.worker_id.clone());
        let engine = Engine::new(
            self.store.clone(),
            cloud.clone(),
            tenants,
            config,
            self.events.clone(),
            self.shutdown.clone(),
        );
        self.spawn("engine", async move {
            engine.run().await;
            Ok(())
        });
        // One worker at a time runs a pass (a lease in the database); every worker offers to.
        let reconciler = crate::engine::reconcile::Reconciler::new(
            self.store.clone(),
            cloud,
            crate::engine::reconcile::ReconcileConfig::from_settings(&self.settings, self.worker_id.clone()),
            self.events.clone(),
        );
        let token = self.shutdown_token();
        self.spawn("reconciler", async move {
            reconciler.run(token).await;
            Ok(())
        });
        Ok(())
    }

    /// No cloud configured: the embedded simulator, kept running for the life of the app.
    async fn embedded_simulator(&mut self) -> Result<CloudConfig, StartupError> {
        let sim =
            Simulator::start(SimConfig::default()).await.map_err(|e| StartupError::Cloud(e.to_string()))?;
        tracing::warn!(
            url = %sim.url(),
            "NO CLOUD CONFIGURED (neither OS_CLOUD nor OS_AUTH_URL): provisioning into the EMBEDDED SIMULATOR"
        );
        let vars: HashMap<String, String> = [
            ("OS_AUTH_URL", sim.auth_url()),
            ("OS_USERNAME", "provisioner".to_string()),
            ("OS_PASSWORD", "provisioner".to_string()),
            ("OS_USER_DOMAIN_NAME", "Default".to_string()),
            ("OS_PROJECT_DOMAIN_NAME", "Default".to_string()),
            // The service user's own project, where it holds admin (tenant orders need it).
            ("OS_PROJECT_NAME", "service".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let cloud = CloudConfig::from_vars(&vars)
            .map_err(|e| StartupError::Cloud(e.to_string()))?
            .ok_or_else(|| StartupError::Cloud("the embedded simulator gave no cloud".into()))?;
        self.simulator = Some(sim);
        Ok(cloud)
    }

    /// The embedded simulator this app provisions into, when no cloud was configured.
    pub fn simulator(&self) -> Option<&SimHandle> {
        self.simulator.as_ref()
    }

    /// The outbox relay of this app: publishes completion events with confirms. The engine
    /// wakes it through [`App::events_written`].
    pub fn relay(&self) -> Relay {
        Relay::new(self.store.clone(), self.broker.clone(), &self.names.events_exchange, self.events.clone())
    }

    /// Notified when a commit wrote completion events (wakes the relay).
    pub fn events_written(&self) -> Arc<Notify> {
        self.events.clone()
    }

    /// The admin consumer of this app (`provisioner.admin`: replay and cancel).
    pub fn admin(&self) -> AdminConsumer {
        AdminConsumer {
            broker: self.broker.clone(),
            store: self.store.clone(),
            names: self.names.clone(),
            queue_type: self.settings.amqp.queue_type,
            allowed_users: self.settings.admin.allowed_users.clone(),
            schemas: self.schemas.clone(),
            job_deadline: Duration::from_secs(self.settings.engine.job_deadline_secs),
            consumer_tag: format!("admin {}", self.worker_id),
            events: self.events.clone(),
        }
    }

    /// Where the HTTP status API listens, if it is on (`http.addr` may ask for port 0).
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http_addr
    }

    /// Starts a named task. It should return soon after the shutdown token fires, having
    /// finished (or handed back) its work in hand.
    pub fn spawn<F>(&mut self, name: &'static str, task: F)
    where
        F: Future<Output = TaskResult> + Send + 'static,
    {
        let handle = self.tasks.spawn(task);
        self.task_names.insert(handle.id(), name);
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn broker(&self) -> &Broker {
        &self.broker
    }
    pub fn names(&self) -> &Names {
        &self.names
    }
    pub fn schemas(&self) -> &Schemas {
        &self.schemas
    }
    /// Cancel it to stop the app (signals do, and tests).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Runs until the shutdown token fires or a task fails; then lets the tasks finish within
    /// the grace period, aborts the rest, and closes the connections.
    pub async fn run_until_stopped(mut self) -> Result<(), StartupError> {
        let mut failure = None;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                joined = self.tasks.join_next_with_id() => match joined {
                    None => break,
                    Some(joined) => {
                        if let Some(e) = self.finished(joined) {
                            failure.get_or_insert(e);
                            self.shutdown.cancel();
                            break;
                        }
                    }
                },
            }
        }
        let grace = Duration::from_secs(self.settings.shutdown.grace_secs);
        let deadline = tokio::time::Instant::now() + grace;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(joined)) => {
                    if let Some(e) = self.finished(joined) {
                        failure.get_or_insert(e);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    let left: Vec<_> = self.task_names.values().collect();
                    tracing::warn!(tasks = ?left, grace_secs = grace.as_secs(), "tasks did not stop within the grace period; aborted");
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        self.broker.close().await;
        if tokio::time::timeout(Duration::from_secs(5), self.store.close()).await.is_err() {
            tracing::warn!("database connections still busy after 5 s; leaving them");
        }
        tracing::info!("stopped");
        failure.map_or(Ok(()), Err)
    }

    /// Cancels the token and waits for the app to stop (tests use it).
    pub async fn stop(self) -> Result<(), StartupError> {
        self.shutdown.cancel();
        self.run_until_stopped().await
    }

    fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, TaskResult), tokio::task::JoinError>,
    ) -> Option<StartupError> {
        let cancelled = self.shutdown.is_cancelled();
        let (id, result) = match joined {
            // A task that gave up waiting because of shutdown stopped cleanly.
            Ok((id, Err(e))) if cancelled && matches!(e.downcast_ref(), Some(AmqpError::Cancelled)) => {
                (id, Ok(()))
            }
            Ok((id, result)) => (id, result.map_err(|e| e.to_string())),
            Err(e) => (e.id(), Err(format!("panicked or aborted: {e}"))),
        };
        let name = self.task_names.remove(&id).unwrap_or("task");
        match result {
            Ok(()) if self.shutdown.is_cancelled() => {
                tracing::debug!(task = name, "task stopped");
                None
            }
            Ok(()) => {
                tracing::error!(task = name, "task ended before shutdown");
                Some(StartupError::Task { name, error: "ended before shutdown".into() })
            }
            Err(error) => {
                tracing::error!(task = name, %error, "task failed");
                Some(StartupError::Task { name, error })
            }
        }
    }
}

/// `provisioner run`: builds the app, logs `ready`, runs until SIGINT/SIGTERM (a second signal
/// exits at once, without waiting for work in hand).
pub async fn run_worker(settings: Settings) -> CliResult {
    let app = App::build(settings).await?;
    let names = app.names();
    tracing::info!(
        worker_id = app.worker_id(),
        database = %app.settings().database.url,
        amqp = %app.broker().redacted_url(),
        orders_exchange = %names.orders_exchange,
        orders_queue = %names.orders_queue,
        dead_queue = %names.dead_queue,
        events_exchange = %names.events_exchange,
        admin_queue = %names.admin_queue,
        "ready"
    );
    let token = app.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; finishing work in hand (a second signal exits at once)");
        token.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal; exiting now");
        std::process::exit(130);
    });
    app.run_until_stopped().await?;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `provisioner demo`: see [`crate::ops::demo`].
pub async fn demo(settings: Settings, args: &DemoArgs) -> CliResult {
    crate::ops::demo::demo(settings, args).await
}
