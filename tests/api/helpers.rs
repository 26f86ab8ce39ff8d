//! The shared test harness: every test gets its own world on the shared MariaDB and RabbitMQ.
//!
//! [`TestEnv::new`] creates a database `prov_t_<uuid>` (created and migrated by the store, as
//! the worker does) and an AMQP name prefix `t<8 hex>.`, declares the topology under it, and
//! opens a raw lapin channel (confirm mode) to publish and inspect. `env.settings` points at
//! both (engine and HTTP off: switch them on for your test); [`TestEnv::spawn_app`] builds the
//! same [`App`] as `provisioner run`, and [`TestEnv::worker`] runs the real binary as a child
//! process. [`TcpProxy`] sits between the worker and MariaDB or RabbitMQ so that a test can cut
//! the connection and restore it. [`wait_until`] polls a condition under a timeout (no sleeps).
//! [`TestEnv::cleanup`] drops the database and deletes the test's queues and exchanges; if a
//! test panics before it, `Drop` does the same on a helper thread (quorum queues cannot be
//! auto-deleted, and the broker is shared).
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{
    BasicGetOptions, ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use openstack_provisioner::amqp::submit::{confirmed, publish_order, publish_with_key};
use openstack_provisioner::amqp::{Names, topology};
use openstack_provisioner::config::{SecretUrl, Settings};
use openstack_provisioner::startup::App;
use openstack_provisioner::store::Store;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const MYSQL_ADDR: &str = "127.0.0.1:3306";
pub const AMQP_ADDR: &str = "127.0.0.1:5672";

/// Longest wait of any condition in the intake tests.
pub const WAIT: Duration = Duration::from_secs(60);

/// The database URL of `db` on `addr` (the server or a proxy in front of it).
pub fn mysql_url(addr: &str, db: &str) -> String {
    format!("mysql://root@{addr}/{db}")
}

/// The broker URL through `addr`.
pub fn amqp_url(addr: &str) -> String {
    format!("amqp://guest:guest@{addr}/%2f")
}

/// One test's database, broker names and settings.
pub struct TestEnv {
    /// Settings for the app under test: this test's database and prefix; engine and HTTP off,
    /// short grace and pool timeouts. Change them before [`TestEnv::spawn_app`].
    pub settings: Settings,
    pub db_name: String,
    pub prefix: String,
    pub names: Names,
    /// A store on this test's database, directly (not through any proxy): for assertions.
    pub store: Store,
    /// A raw broker connection and a channel in confirm mode: to publish and inspect.
    pub amqp: Connection,
    pub channel: Channel,
    cleaned: bool,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        init_logs();
        let db_name = format!("prov_t_{}", uuid::Uuid::new_v4().simple());
        let prefix = format!("t{:08x}.", fastrand::u32(..));
        let mut settings = Settings::default();
        settings.database.url = SecretUrl::new(mysql_url(MYSQL_ADDR, &db_name));
        settings.database.acquire_timeout_secs = 2;
        settings.amqp.url = SecretUrl::new(amqp_url(AMQP_ADDR));
        settings.amqp.prefix = prefix.clone();
        settings.http.addr = String::new();
        settings.engine.enabled = false;
        settings.shutdown.grace_secs = 15;
        settings.worker.id = Some(format!("test-{}", &db_name[7..15]));
        // No periodic reconciler pass unless a test asks for one (its drift events would land
        // in other tests' event queues).
        settings.reconcile.interval_secs = 0;
        let store = Store::connect(&settings.database).await.expect("create and migrate the test database");
        let names = Names::new(&prefix);
        let amqp = Connection::connect(&amqp_url(AMQP_ADDR), ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = amqp.create_channel().await.expect("open a channel");
        topology::declare(&channel, &names, settings.amqp.queue_type).await.expect("declare the topology");
        channel.confirm_select(ConfirmSelectOptions::default()).await.expect("confirm mode");
        TestEnv { settings, db_name, prefix, names, store, amqp, channel, cleaned: false }
    }

    /// Builds the worker in-process, exactly as `provisioner run` does (no signal handling).
    pub async fn spawn_app(&self) -> App {
        App::build(self.settings.clone()).await.expect("build the app")
    }

    /// Publishes one body as billing would, and waits for its confirm.
    pub async fn publish(&self, body: &[u8]) {
        let confirm = publish_order(&self.channel, &self.names, body).await.expect("publish");
        confirmed(confirm, "test order").await.expect("confirmed");
    }

    /// Publishes bodies with the routing key billing would use for each (`order.create`, or
    /// `order.<action>` for an action order), in order, then waits for all their confirms.
    pub async fn publish_keyed<B: AsRef<[u8]>>(&self, bodies: impl IntoIterator<Item = B>) {
        let mut confirms = Vec::new();
        for body in bodies {
            let key = openstack_provisioner::ops::commands::routing_key_for(body.as_ref());
            confirms.push(
                publish_with_key(&self.channel, &self.names, &key, body.as_ref()).await.expect("publish"),
            );
        }
        for confirm in confirms {
            confirmed(confirm, "test order").await.expect("confirmed");
        }
    }

    /// Publishes one body with the routing key given, and waits for its confirm.
    pub async fn publish_with(&self, key: &str, body: &[u8]) {
        let confirm = publish_with_key(&self.channel, &self.names, key, body).await.expect("publish");
        confirmed(confirm, "test order").await.expect("confirmed");
    }

    /// Publishes many bodies as billing would, then waits for all their confirms.
    pub async fn publish_all<B: AsRef<[u8]>>(&self, bodies: impl IntoIterator<Item = B>) {
        let mut confirms = Vec::new();
        for body in bodies {
            confirms.push(publish_order(&self.channel, &self.names, body.as_ref()).await.expect("publish"));
        }
        for confirm in confirms {
            confirmed(confirm, "test order").await.expect("confirmed");
        }
    }

    /// Jobs in this test's database.
    pub async fn count_jobs(&self) -> i64 {
        self.store.count_jobs().await.expect("count jobs")
    }

    /// Rows of `SELECT COUNT(*) FROM jobs WHERE <condition>` (test-only SQL).
    pub async fn count_jobs_where(&self, condition: &str) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM jobs WHERE {condition}")))
            .fetch_one(self.store.pool())
            .await
            .expect("count jobs")
    }

    /// (ready messages, consumers) of a queue, by a passive declare.
    pub async fn queue_counts(&self, queue: &str) -> (u32, u32) {
        let q = self
            .channel
            .queue_declare(
                ShortString::from(queue),
                QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .expect("passive declare");
        (q.message_count(), q.consumer_count())
    }

    /// Takes every message of a queue (acked, so they are gone): body and headers.
    pub async fn drain(&self, queue: &str) -> Vec<(Vec<u8>, FieldTable)> {
        let mut out = Vec::new();
        while let Some(msg) = self
            .channel
            .basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let headers = msg.delivery.properties.headers().clone().unwrap_or_default();
            out.push((msg.delivery.data, headers));
        }
        out
    }

    /// A settings copy whose database and/or broker go through the given proxies.
    pub fn settings_via(&self, db: Option<&TcpProxy>, broker: Option<&TcpProxy>) -> Settings {
        let mut s = self.settings.clone();
        if let Some(p) = db {
            s.database.url = SecretUrl::new(mysql_url(&p.addr.to_string(), &self.db_name));
        }
        if let Some(p) = broker {
            s.amqp.url = SecretUrl::new(amqp_url(&p.addr.to_string()));
        }
        s
    }

    /// Runs the real `provisioner run` binary with `settings` (as environment variables).
    pub fn worker(&self, settings: &Settings, name: &str) -> ChildWorker {
        ChildWorker::start(settings, name)
    }

    /// Drops the database, deletes the queues and exchanges of this test, closes connections.
    pub async fn cleanup(mut self) {
        self.cleaned = true;
        cleanup(&self.db_name, &self.names).await;
        self.store.close().await;
        let _ = self.amqp.close(200, "test done".into()).await;
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let (db, names) = (self.db_name.clone(), self.names.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() {
                rt.block_on(cleanup(&db, &names));
            }
        })
        .join();
    }
}

async fn cleanup(db_name: &str, names: &Names) {
    let url = format!("mysql://root@{MYSQL_ADDR}/");
    if let Ok(pool) = sqlx::MySqlPool::connect(&url).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{db_name}`")))
            .execute(&pool)
            .await;
        pool.close().await;
    }
    if let Ok(conn) = Connection::connect(&amqp_url(AMQP_ADDR), ConnectionProperties::default()).await {
        if let Ok(ch) = conn.create_channel().await {
            for q in names.queues() {
                let _ = ch.queue_delete(ShortString::from(q), QueueDeleteOptions::default()).await;
            }
            for e in names.exchanges() {
                let _ = ch.exchange_delete(ShortString::from(e), ExchangeDeleteOptions::default()).await;
            }
        }
        let _ = conn.close(200, "cleanup".into()).await;
    }
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A header of a message as text (`x-provisioner-error`, ...).
pub fn header_text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// A valid order body with this order id.
pub fn valid_order(order_id: &str) -> Vec<u8> {
    serde_json::json!({
        "order_id": order_id,
        "project_id": "4f1c2e7a9b8d4c3e8f7a6b5c4d3e2f1a",
        "server": {
            "name": format!("vm-{order_id}"),
            "flavor": "m1.small",
            "image": "cirros-0.6.2",
            "network": "private",
            "metadata": {"plan": "basic"}
        },
        "volume": {"size_gb": 10}
    })
    .to_string()
    .into_bytes()
}

/// A TCP proxy to `upstream` that a test can cut (every live connection dropped, new ones
/// refused) and restore.
pub struct TcpProxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: CancellationToken,
}

struct ProxyState {
    down: bool,
    /// Cancelled by `cut`: ends every connection opened before it.
    generation: CancellationToken,
}

impl TcpProxy {
    pub async fn start(upstream: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(Mutex::new(ProxyState { down: false, generation: CancellationToken::new() }));
        let stop = CancellationToken::new();
        let (st, stop2, upstream) = (state.clone(), stop.clone(), upstream.to_string());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop2.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else { continue };
                let generation = {
                    let s = st.lock().expect("proxy state");
                    if s.down {
                        continue; // dropped: the client sees the connection closed
                    }
                    s.generation.clone()
                };
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = generation.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        TcpProxy { addr, state, stop }
    }

    /// Drops every live connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        let mut s = self.state.lock().expect("proxy state");
        s.down = true;
        s.generation.cancel();
        s.generation = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.state.lock().expect("proxy state").down = false;
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Ok(s) = self.state.lock() {
            s.generation.cancel();
        }
    }
}

/// The in-process worker's log, captured per test (nextest shows it when the test fails):
/// warnings and errors by default, `RUST_LOG` to see more.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,lapin=error"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// The real `provisioner run` binary as a child process; its log goes to a temp file.
pub struct ChildWorker {
    pub child: tokio::process::Child,
    pub log: PathBuf,
}

/// The settings a child worker needs, as `PROVISIONER_*` variables.
pub fn settings_env(s: &Settings) -> Vec<(&'static str, String)> {
    vec![
        ("PROVISIONER_DATABASE_URL", s.database.url.expose().to_string()),
        ("PROVISIONER_DATABASE_ACQUIRE_TIMEOUT_SECS", s.database.acquire_timeout_secs.to_string()),
        ("PROVISIONER_AMQP_URL", s.amqp.url.expose().to_string()),
        ("PROVISIONER_AMQP_PREFIX", s.amqp.prefix.clone()),
        ("PROVISIONER_AMQP_QUEUE_TYPE", s.amqp.queue_type.as_str().to_string()),
        ("PROVISIONER_HTTP_ADDR", s.http.addr.clone()),
        ("PROVISIONER_ENGINE_ENABLED", s.engine.enabled.to_string()),
        ("PROVISIONER_INTAKE_PREFETCH", s.intake.prefetch.to_string()),
        ("PROVISIONER_INTAKE_BATCH_SIZE", s.intake.batch_size.to_string()),
        ("PROVISIONER_INTAKE_BATCH_LINGER_MS", s.intake.batch_linger_ms.to_string()),
        ("PROVISIONER_SHUTDOWN_GRACE_SECS", s.shutdown.grace_secs.to_string()),
        ("PROVISIONER_INTAKE_TARGET_GRACE_SECS", s.intake.target_grace_secs.to_string()),
        ("PROVISIONER_LIFECYCLE_SUSPEND_MODE", s.lifecycle.suspend_mode.as_str().to_string()),
        ("PROVISIONER_LIFECYCLE_DELETE_VOLUMES", s.lifecycle.delete_volumes.to_string()),
        ("PROVISIONER_WORKER_ID", s.worker.id.clone().unwrap_or_default()),
        ("PROVISIONER_RECONCILE_INTERVAL_SECS", s.reconcile.interval_secs.to_string()),
    ]
}

impl ChildWorker {
    pub fn start(settings: &Settings, name: &str) -> ChildWorker {
        let log = std::env::temp_dir().join(format!("{}{name}.log", settings.amqp.prefix));
        let file = std::fs::File::create(&log).expect("create the worker log");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"));
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info,lapin=error")
            .envs(settings_env(settings))
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("start the provisioner binary");
        ChildWorker { child, log }
    }

    /// The worker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and reap it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGTERM, then waits for it to exit (up to `timeout`); its exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        }
        tokio::time::timeout(timeout, self.child.wait())
            .await
            .expect("the worker did not stop in time")
            .expect("wait for the worker")
    }
}

impl Drop for ChildWorker {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("worker log kept at {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A simulator fault rule with no effect: it counts the `method` requests to `service` whose
/// path matches `path` (a regex).
pub fn counting(service: &str, method: &str, path: &str) -> openstack_provisioner::sim::FaultRule {
    openstack_provisioner::sim::FaultRule {
        service: Some(service.into()),
        method: Some(method.into()),
        path: Some(path.into()),
        ..Default::default()
    }
}

/// A simulator fault rule that lets the next matching request be done and holds its answer for
/// a minute: the caller dies (a SIGKILL) without learning what was made.
pub fn held_answer(service: &str, method: &str, path: &str) -> openstack_provisioner::sim::FaultRule {
    openstack_provisioner::sim::FaultRule {
        answer_delay_ms: Some(60_000),
        times: Some(1),
        ..counting(service, method, path)
    }
}
