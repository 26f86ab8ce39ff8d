//! The end-to-end benchmark: orders published to `billing.orders`, worker processes
//! (`provisioner run`, the release binary next to this one) provisioning into the simulator
//! running in this process, completion events consumed from `provisioning.events`.
//!
//! Scenarios (each on its own database, AMQP prefix and simulator):
//! 1. throughput at zero simulated latency, VM + volume, with 1, 2 and 3 worker processes:
//!    jobs/s from the first publish to the last event;
//! 2. realistic timings (boot 8 s, volume 3 s, attach 0.5 s) with ~1,000 jobs at once: the
//!    order-to-event time above the simulated time (p50, p99), OpenStack API calls per VM from
//!    the simulator's counters, the worker's peak RSS;
//! 3. 10,000 jobs in flight at once (servers that never finish booting): the worker's peak RSS.
//!
//! `E2E_JOBS` (default 2000) sets the jobs of scenario 1, `E2E_REALISTIC` (default 1000) of
//! scenario 2, `E2E_INFLIGHT` (default 10000) of scenario 3; `E2E_SKIP` lists scenarios to skip
//! (e.g. `3`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use openstack_provisioner::amqp::submit::{confirmed, publish_order};
use openstack_provisioner::amqp::{Names, topology};
use openstack_provisioner::config::{DatabaseSettings, QueueType, SecretUrl};
use openstack_provisioner::messages::Event;
use openstack_provisioner::sim::{DEMO_PROJECT_ID, FaultRule, SimConfig, SimHandle, Simulator, Timings};
use openstack_provisioner::store::Store;

const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub(crate) fn zero() -> Timings {
    Timings {
        boot_mean_ms: 0,
        boot_jitter_ms: 0,
        volume_create_ms: 0,
        attach_ms: 0,
        detach_ms: 0,
        action_ms: 0,
        delete_ms: 0,
        token_lifetime_s: 3600,
    }
}

/// One scenario's world.
pub(crate) struct World {
    pub(crate) db: String,
    pub(crate) store: Store,
    pub(crate) names: Names,
    pub(crate) conn: Connection,
    pub(crate) channel: Channel,
    pub(crate) events_queue: String,
    pub(crate) sim: SimHandle,
    workers: Vec<tokio::process::Child>,
}

pub(crate) fn provisioner_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap_or_default();
    me.with_file_name("provisioner")
}

impl World {
    pub(crate) async fn new(timings: Timings) -> Result<World, String> {
        let db = format!("prov_bench_{}", uuid::Uuid::new_v4().simple());
        let settings = DatabaseSettings {
            url: SecretUrl::new(format!("mysql://root@127.0.0.1:3306/{db}")),
            ..DatabaseSettings::default()
        };
        let store = Store::connect(&settings).await.map_err(|e| e.to_string())?;
        let prefix = format!("bench{:08x}.", fastrand::u32(..));
        let names = Names::new(&prefix);
        let conn =
            Connection::connect(AMQP, ConnectionProperties::default()).await.map_err(|e| e.to_string())?;
        let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
        topology::declare(&channel, &names, QueueType::Classic).await.map_err(|e| e.to_string())?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
        let events_queue = format!("{prefix}events");
        channel
            .queue_declare(
                ShortString::from(events_queue.as_str()),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        channel
            .queue_bind(
                ShortString::from(events_queue.as_str()),
                ShortString::from(names.events_exchange.as_str()),
                ShortString::from("#"),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| e.to_string())?;
        let sim = Simulator::start(SimConfig { timings, ..SimConfig::default() })
            .await
            .map_err(|e| e.to_string())?;
        Ok(World { db, store, names, conn, channel, events_queue, sim, workers: Vec::new() })
    }

    /// `provisioner run` against this world's simulator, database `db_url` and broker `amqp_url`
    /// (a proxy's, to cut them), as worker `id`, with the limits a benchmark wants (no rate
    /// limits). Its log is dropped, unless `BENCH_WORKER_LOG` names a directory: then it goes to
    /// `<dir>/<id>.log` at the level `BENCH_RUST_LOG` (default `info`).
    pub(crate) fn worker_command(&self, id: &str, db_url: &str, amqp_url: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(provisioner_binary());
        cmd.arg("run")
            .env("PROVISIONER_DATABASE_URL", db_url)
            .env("PROVISIONER_AMQP_URL", amqp_url)
            .env("PROVISIONER_AMQP_PREFIX", &self.names.prefix)
            .env("PROVISIONER_AMQP_QUEUE_TYPE", "classic")
            .env("PROVISIONER_HTTP_ADDR", "")
            .env("PROVISIONER_WORKER_ID", id)
            .env("PROVISIONER_ENGINE_PROJECT_RATE", "0")
            .env("PROVISIONER_ENGINE_CLOUD_RATE", "0")
            .env("RUST_LOG", "warn,lapin=error")
            .env("OS_AUTH_URL", self.sim.auth_url())
            .env("OS_USERNAME", "provisioner")
            .env("OS_PASSWORD", "provisioner")
            .env("OS_USER_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_NAME", "demo")
            .env_remove("OS_CLOUD")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        if let Ok(dir) = std::env::var("BENCH_WORKER_LOG")
            && let Ok(file) = std::fs::File::create(std::path::Path::new(&dir).join(format!("{id}.log")))
        {
            cmd.env("RUST_LOG", std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info".into()))
                .stderr(file);
        }
        cmd
    }

    pub(crate) fn start_worker(
        &mut self,
        i: usize,
        max_in_flight: usize,
        poll_ms: u64,
    ) -> Result<(), String> {
        let db = format!("mysql://root@127.0.0.1:3306/{}", self.db);
        let child = self
            .worker_command(&format!("bench-{i}"), &db, AMQP)
            .env("PROVISIONER_ENGINE_MAX_IN_FLIGHT", max_in_flight.to_string())
            .env("PROVISIONER_ENGINE_POLL_INTERVAL_MS", poll_ms.to_string())
            .env("PROVISIONER_DATABASE_MAX_CONNECTIONS", "24")
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot start {}: {e} (build it: cargo build --release)",
                    provisioner_binary().display()
                )
            })?;
        self.workers.push(child);
        Ok(())
    }

    /// Publishes `n` orders (`volume`: each with a 1 GB volume); their publish instants by order id.
    pub(crate) async fn publish(&self, tag: &str, n: usize, volume: bool) -> HashMap<String, Instant> {
        self.publish_paced(tag, n, volume, None).await
    }

    /// Like [`World::publish`], at `rate` orders per second when given (steady arrivals).
    async fn publish_paced(
        &self,
        tag: &str,
        n: usize,
        volume: bool,
        rate: Option<f64>,
    ) -> HashMap<String, Instant> {
        let mut sent = HashMap::with_capacity(n);
        let mut confirms = Vec::with_capacity(n);
        let start = tokio::time::Instant::now();
        for i in 0..n {
            if let Some(rate) = rate {
                tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            }
            let order_id = format!("{tag}-{i}");
            let mut o = serde_json::json!({
                "order_id": order_id,
                "project_id": DEMO_PROJECT_ID,
                "server": {"name": format!("vm-{i}"), "flavor": "m1.tiny", "image": "cirros-0.6.2", "network": "private"}
            });
            if volume {
                o["volume"] = serde_json::json!({"size_gb": 1});
            }
            let body = o.to_string();
            sent.insert(order_id, Instant::now());
            if let Ok(c) = publish_order(&self.channel, &self.names, body.as_bytes()).await {
                confirms.push(c);
            }
        }
        for c in confirms {
            let _ = confirmed(c, "bench order").await;
        }
        sent
    }

    /// Consumes events until `n` jobs have one (or `timeout`); arrival instants by order id.
    pub(crate) async fn events(&self, n: usize, timeout: Duration) -> HashMap<String, (Instant, Event)> {
        let mut out = HashMap::with_capacity(n);
        let Ok(ch) = self.conn.create_channel().await else { return out };
        let Ok(mut consumer) = ch
            .basic_consume(
                ShortString::from(self.events_queue.as_str()),
                ShortString::from("bench"),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        else {
            return out;
        };
        let deadline = tokio::time::Instant::now() + timeout;
        while out.len() < n {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    if let Ok(e) = serde_json::from_slice::<Event>(&d.data) {
                        out.entry(e.order_id.clone()).or_insert((Instant::now(), e));
                    }
                    let _ = d.ack(BasicAckOptions::default()).await;
                }
                _ => break,
            }
        }
        let _ = ch.close(200, "done".into()).await;
        out
    }

    /// The largest peak RSS (VmHWM) of the workers, MB.
    pub(crate) fn peak_rss_mb(&self) -> f64 {
        self.workers
            .iter()
            .filter_map(|w| w.id())
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
            .filter_map(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
            .fold(0.0, f64::max)
            / 1024.0
    }

    /// API calls the simulator answered (Keystone included), in all.
    pub(crate) fn api_calls(&self) -> u64 {
        self.sim.control().counters().iter().map(|c| c.count).sum()
    }

    pub(crate) async fn close(mut self) {
        for w in &mut self.workers {
            let _ = w.kill().await;
        }
        let _ = self
            .channel
            .queue_delete(ShortString::from(self.events_queue.as_str()), QueueDeleteOptions::default())
            .await;
        for q in self.names.queues() {
            let _ = self.channel.queue_delete(ShortString::from(q), QueueDeleteOptions::default()).await;
        }
        for x in self.names.exchanges() {
            let _ = self.channel.exchange_delete(ShortString::from(x), Default::default()).await;
        }
        if std::env::var_os("E2E_KEEP").is_none() {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{}`", self.db)))
                .execute(self.store.pool())
                .await;
        } else {
            println!("  (kept database {})", self.db);
        }
        self.store.close().await;
        let _ = self.conn.close(200, "bench done".into()).await;
        self.sim.shutdown().await;
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Scenario 1: jobs/s at zero latency with `workers` worker processes.
async fn throughput(workers: usize, jobs: usize) -> Result<(f64, f64), String> {
    let mut w = World::new(zero()).await?;
    for i in 0..workers {
        w.start_worker(i, 256, 250)?;
    }
    // Warm up: the workers are ready (topology, Keystone token, resolve cache) before timing.
    let _ = w.publish("warm", 20, true).await;
    let warm = w.events(20, Duration::from_secs(60)).await;
    if warm.len() < 20 {
        w.close().await;
        return Err(format!("warm-up: only {} of 20 events", warm.len()));
    }
    let start = Instant::now();
    let _ = w.publish("t", jobs, true).await;
    let got = w.events(jobs, Duration::from_secs(600)).await;
    let elapsed = got.values().map(|(t, _)| t.duration_since(start)).max().unwrap_or_default();
    let completed = got.values().filter(|(_, e)| e.error.is_none()).count();
    let rate = completed as f64 / elapsed.as_secs_f64().max(1e-9);
    let rss = w.peak_rss_mb();
    w.close().await;
    if completed < jobs {
        return Err(format!("only {completed} of {jobs} completed"));
    }
    Ok((rate, rss))
}

/// Scenario 2: realistic timings (boot 8 s, volume 3 s, attach 0.5 s): the order-to-event time
/// above the simulated time (p50, p99), API calls per VM, the worker's peak RSS. `rate: None`
/// publishes all `jobs` at once (a burst); `Some(r)` publishes r orders/s, so that about
/// r × 11.5 s jobs are in flight at once (1,000 at 87/s) without a burst queueing at the door.
async fn realistic(jobs: usize, rate: Option<f64>) -> Result<(f64, f64, f64, f64), String> {
    let timings = Timings {
        boot_mean_ms: 8000,
        boot_jitter_ms: 0,
        volume_create_ms: 3000,
        attach_ms: 500,
        detach_ms: 500,
        action_ms: 1000,
        delete_ms: 1000,
        token_lifetime_s: 3600,
    };
    let simulated = Duration::from_millis(8000 + 3000 + 500).as_secs_f64();
    let mut w = World::new(timings).await?;
    w.start_worker(0, 256, 100)?;
    let _ = w.publish("warm", 1, true).await;
    let _ = w.events(1, Duration::from_secs(60)).await;
    w.sim.control().reset_counters();
    // Events are consumed while orders are still being published, so that each arrival time
    // is when the event came out, not when the bench got round to reading it.
    let (sent, got) =
        tokio::join!(w.publish_paced("r", jobs, true, rate), w.events(jobs, Duration::from_secs(600)));
    let mut overhead: Vec<f64> = got
        .iter()
        .filter(|(_, (_, e))| e.error.is_none())
        .filter_map(|(id, (t, _))| sent.get(id).map(|s| t.duration_since(*s).as_secs_f64() - simulated))
        .collect();
    overhead.sort_by(|a, b| a.total_cmp(b));
    let calls = w.api_calls() as f64 / overhead.len().max(1) as f64;
    let rss = w.peak_rss_mb();
    let done = overhead.len();
    let (p50, p99) = (percentile(&overhead, 0.5), percentile(&overhead, 0.99));
    w.close().await;
    if done < jobs {
        return Err(format!("only {done} of {jobs} completed"));
    }
    Ok((p50, p99, calls, rss))
}

/// Scenario 3: `jobs` in flight at once (servers stuck building); the worker's peak RSS.
async fn in_flight(jobs: usize) -> Result<(usize, f64), String> {
    let mut w = World::new(zero()).await?;
    w.sim
        .control()
        .add_fault(FaultRule {
            service: Some("compute".into()),
            method: Some("POST".into()),
            path: Some("/servers$".into()),
            stuck: true,
            ..FaultRule::default()
        })
        .map_err(|e| e.to_string())?;
    w.start_worker(0, 256, 250)?;
    let _ = w.publish("f", jobs, true).await;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut waiting = 0usize;
    while Instant::now() < deadline {
        waiting = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM jobs WHERE step = 'wait_server'")
            .fetch_one(w.store.pool())
            .await
            .unwrap_or(0) as usize;
        if waiting >= jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A few poll rounds with everything waiting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = w.peak_rss_mb();
    w.close().await;
    Ok((waiting, rss))
}

/// What `bench e2e` measured; `None` where a scenario was skipped or failed.
#[derive(Debug, Default, Clone)]
pub struct E2eFigures {
    /// (workers, jobs/s, peak RSS MB) at zero latency.
    pub throughput: Vec<(usize, f64, f64)>,
    /// (p50 s, p99 s, API calls per VM, peak RSS MB): 1,000 jobs published at once.
    pub burst: Option<(f64, f64, f64, f64)>,
    /// The same with steady arrivals keeping about 1,000 jobs in flight.
    pub steady: Option<(f64, f64, f64, f64)>,
    /// (jobs waiting, peak RSS MB) with 10,000 jobs in flight.
    pub in_flight: Option<(usize, f64)>,
}

pub async fn run() {
    let _ = measure().await;
}

/// Runs the scenarios (`E2E_SKIP` skips some), printing each figure as it comes.
pub async fn measure() -> E2eFigures {
    let mut figures = E2eFigures::default();
    let skip = std::env::var("E2E_SKIP").unwrap_or_default();
    let jobs = env_usize("E2E_JOBS", 2000);
    println!("e2e: orders → worker process(es) → simulator → events (VM + 1 GB volume each)");
    if !skip.contains('1') {
        for workers in 1..=3 {
            match throughput(workers, jobs).await {
                Ok((rate, rss)) => {
                    println!(
                        "  zero latency, {workers} worker(s), {jobs} jobs: {rate:>7.1} jobs/s end to end  (peak RSS {rss:.0} MB)"
                    );
                    figures.throughput.push((workers, rate, rss));
                }
                Err(e) => println!("  zero latency, {workers} worker(s): FAILED: {e}"),
            }
        }
    }
    if !skip.contains('2') {
        let n = env_usize("E2E_REALISTIC", 1000);
        match realistic(n, None).await {
            Ok((p50, p99, calls, rss)) => {
                println!(
                    "  realistic (boot 8 s, volume 3 s, attach 0.5 s), {n} jobs at once: overhead p50 {:.0} ms, p99 {:.0} ms; \
                     {calls:.2} API calls per VM; peak RSS {rss:.0} MB",
                    p50 * 1000.0,
                    p99 * 1000.0
                );
                figures.burst = Some((p50, p99, calls, rss));
            }
            Err(e) => println!("  realistic: FAILED: {e}"),
        }
        let n = env_usize("E2E_STEADY", 2000);
        let rate = 87.0;
        match realistic(n, Some(rate)).await {
            Ok((p50, p99, calls, rss)) => {
                println!(
                    "  realistic, steady {rate:.0} orders/s (~1,000 in flight), {n} jobs: overhead p50 {:.0} ms, p99 {:.0} ms; \
                     {calls:.2} API calls per VM; peak RSS {rss:.0} MB",
                    p50 * 1000.0,
                    p99 * 1000.0
                );
                figures.steady = Some((p50, p99, calls, rss));
            }
            Err(e) => println!("  realistic steady: FAILED: {e}"),
        }
    }
    if !skip.contains('3') {
        let n = env_usize("E2E_INFLIGHT", 10_000);
        match in_flight(n).await {
            Ok((waiting, rss)) => {
                println!("  {waiting} jobs in flight (waiting on boot): worker peak RSS {rss:.0} MB");
                figures.in_flight = Some((waiting, rss));
            }
            Err(e) => println!("  in flight: FAILED: {e}"),
        }
    }
    figures
}
