//! The intake benchmark (issue 2): orders per second from a published order to a committed job,
//! for the real intake and two bare baselines measured in the same run on the same services.
//!
//! Each variant gets a fresh database and AMQP prefix, a quorum orders queue pre-filled with N
//! valid orders (published as billing does, confirmed), then a consumer is started and the clock
//! runs until N jobs are committed (the job count is polled every 5 ms):
//!
//! - (a) bare: consume → insert → commit → ack, one order per transaction, 8 in flight;
//! - (b) bare batched: the same, with batches (intake's batch size and linger) written by ONE
//!   multi-row idempotent insert and ONE commit, then one multiple ack;
//! - intake: the worker's own intake (`App::build`), with validation, dedupe and dead-lettering.
//!
//! The baselines use the store's batch insert too (a batch of one for (a)), so that the
//! difference between (b) and intake is exactly what intake adds. The best of two rounds is
//! kept for (b) and intake (the machine is shared). `BENCH_INTAKE_N` changes N (default 20,000).

use std::time::{Duration, Instant};

use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
    QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ConnectionProperties};
use openstack_provisioner::amqp::submit::{confirmed, publish_order};
use openstack_provisioner::amqp::{Names, topology};
use openstack_provisioner::config::{SecretUrl, Settings};
use openstack_provisioner::startup::App;
use openstack_provisioner::store::Store;
use openstack_provisioner::store::intake::NewJob;

/// The figures of one run, orders per second.
#[derive(Debug, Clone, Copy)]
pub struct IntakeFigures {
    pub orders: usize,
    pub bare_single: f64,
    pub bare_batched: f64,
    pub intake: f64,
}

impl IntakeFigures {
    /// Intake as a share of baseline (b).
    pub fn ratio(&self) -> f64 {
        self.intake / self.bare_batched
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    BareSingle,
    BareBatched,
    Intake,
}

/// `bench intake`: measures and prints the figures.
pub async fn run() {
    let n = std::env::var("BENCH_INTAKE_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    match measure(n).await {
        Ok(f) => print(&f, &base_settings("")),
        Err(e) => eprintln!("intake benchmark failed: {e}"),
    }
}

/// Prints the figures as a small table.
pub fn print(f: &IntakeFigures, s: &Settings) {
    println!(
        "intake: {} orders through a pre-filled quorum queue (batch {}, linger {} ms, prefetch {})",
        f.orders, s.intake.batch_size, s.intake.batch_linger_ms, s.intake.prefetch
    );
    println!("  (a) bare, 1 order per transaction, 8 in flight  {:>9.0} orders/s", f.bare_single);
    println!("  (b) bare, batched multi-row insert, 1 commit    {:>9.0} orders/s", f.bare_batched);
    println!(
        "  intake (validation, dedupe, dead-lettering)     {:>9.0} orders/s  = {:.0} % of (b), target >= 70 %",
        f.intake,
        100.0 * f.ratio()
    );
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs the three variants with `n` orders each; (b) and intake twice, keeping the best.
pub async fn measure(n: usize) -> BenchResult<IntakeFigures> {
    let bodies: Vec<Vec<u8>> = (0..n).map(order).collect();
    let bare_single = one(Variant::BareSingle, &bodies).await?;
    let mut bare_batched: f64 = 0.0;
    let mut intake: f64 = 0.0;
    for _ in 0..2 {
        bare_batched = bare_batched.max(one(Variant::BareBatched, &bodies).await?);
        intake = intake.max(one(Variant::Intake, &bodies).await?);
    }
    Ok(IntakeFigures { orders: n, bare_single, bare_batched, intake })
}

fn order(i: usize) -> Vec<u8> {
    serde_json::json!({
        "order_id": format!("BENCH-{i:08}"),
        "project_id": format!("project-{:02}", i % 50),
        "server": {
            "name": format!("vm-{i}"),
            "flavor": "m1.small",
            "image": "cirros-0.6.2",
            "network": "private",
            "key_name": "ops-key",
            "metadata": {"plan": "basic", "billing_ref": format!("R{i}")}
        },
        "volume": {"size_gb": 20, "type": "ssd"}
    })
    .to_string()
    .into_bytes()
}

fn base_settings(prefix: &str) -> Settings {
    let mut s = Settings::default();
    if let Ok(url) = std::env::var("PROVISIONER_DATABASE_URL") {
        s.database.url = SecretUrl::new(url);
    }
    if let Ok(url) = std::env::var("PROVISIONER_AMQP_URL") {
        s.amqp.url = SecretUrl::new(url);
    }
    let db = format!("prov_bench_{}", uuid::Uuid::new_v4().simple());
    let base = s.database.url.expose().rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or_default();
    s.database.url = SecretUrl::new(format!("{base}/{db}"));
    s.amqp.prefix = prefix.to_string();
    s.http.addr = String::new();
    s.engine.enabled = false;
    s.worker.id = Some(format!("bench-{prefix}"));
    s
}

/// One variant on a fresh database and prefix: fill, consume, time, clean up.
async fn one(variant: Variant, bodies: &[Vec<u8>]) -> BenchResult<f64> {
    let prefix = format!("b{:08x}.", fastrand::u32(..));
    let settings = base_settings(&prefix);
    let names = Names::new(&prefix);
    let store = Store::connect(&settings.database).await?;
    let conn = Connection::connect(settings.amqp.url.expose(), ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    topology::declare(&channel, &names, settings.amqp.queue_type).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    for chunk in bodies.chunks(2000) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for body in chunk {
            confirms.push(publish_order(&channel, &names, body).await?);
        }
        for c in confirms {
            confirmed(c, "bench order").await?;
        }
    }

    // Every variant starts the clock before it connects, and has its own broker connection
    // and database pool, like a worker process.
    let n = bodies.len() as i64;
    let started = Instant::now();
    let outcome = match variant {
        Variant::Intake => {
            let app = App::build(settings.clone()).await?;
            let waited = wait_for(&store, n, started).await;
            app.stop().await?;
            waited
        }
        Variant::BareSingle | Variant::BareBatched => {
            let consumer_conn =
                Connection::connect(settings.amqp.url.expose(), ConnectionProperties::default()).await?;
            let consumer_store = Store::connect(&settings.database).await?;
            let stop = tokio_util::sync::CancellationToken::new();
            let task = tokio::spawn(bare_consumer(
                variant,
                consumer_conn.create_channel().await?,
                names.clone(),
                consumer_store.clone(),
                settings.clone(),
                stop.clone(),
            ));
            let waited = wait_for(&store, n, started).await;
            stop.cancel();
            let _ = task.await;
            consumer_store.close().await;
            let _ = consumer_conn.close(200, "bench done".into()).await;
            waited
        }
    };
    let rate = outcome.map(|elapsed| n as f64 / elapsed.as_secs_f64());
    let elapsed = started.elapsed();
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS `{}`",
        openstack_provisioner::config::database_name(settings.database.url.expose()).unwrap_or_default()
    )))
    .execute(store.pool())
    .await;
    store.close().await;
    for q in names.queues() {
        let _ = channel.queue_delete(ShortString::from(q), QueueDeleteOptions::default()).await;
    }
    for e in names.exchanges() {
        let _ = channel.exchange_delete(ShortString::from(e), ExchangeDeleteOptions::default()).await;
    }
    let _ = conn.close(200, "bench done".into()).await;
    let rate = rate?;
    eprintln!(
        "  {:<8} {:>7} orders in {:>6.2} s = {:>8.0} /s",
        match variant {
            Variant::BareSingle => "(a)",
            Variant::BareBatched => "(b)",
            Variant::Intake => "intake",
        },
        n,
        elapsed.as_secs_f64(),
        rate
    );
    Ok(rate)
}

/// Waits until `n` jobs are committed; the time since `started`.
async fn wait_for(store: &Store, n: i64, started: Instant) -> BenchResult<Duration> {
    loop {
        if store.count_jobs().await? >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(600) {
            return Err("no progress for 10 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[derive(serde::Deserialize)]
struct Ids {
    order_id: String,
    project_id: String,
}

fn bare_job(body: &[u8]) -> Option<NewJob> {
    let ids: Ids = serde_json::from_slice(body).ok()?;
    Some(NewJob {
        id: uuid::Uuid::new_v4(),
        order_id: ids.order_id,
        project_id: ids.project_id,
        action: "create".into(),
        target_order_id: None,
        tenant_ref: None,
        order_body: String::from_utf8_lossy(body).into_owned(),
        order_digest: "0".repeat(64),
        traceparent: None,
    })
}

/// Baselines (a) and (b): no validation, no dedupe accounting, no dead-lettering.
async fn bare_consumer(
    variant: Variant,
    channel: Channel,
    names: Names,
    store: Store,
    settings: Settings,
    stop: tokio_util::sync::CancellationToken,
) -> BenchResult<()> {
    let prefetch = if variant == Variant::BareSingle { 8 } else { settings.intake.prefetch };
    channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
    let consumer = channel
        .basic_consume(
            ShortString::from(names.orders_queue.as_str()),
            ShortString::from("bench"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    match variant {
        Variant::BareSingle => {
            let work = consumer.take_until(stop.cancelled_owned()).for_each_concurrent(8, |delivery| {
                let store = store.clone();
                async move {
                    let Ok(delivery) = delivery else { return };
                    if let Some(job) = bare_job(&delivery.data) {
                        let mut one = [job];
                        if store.insert_jobs(&mut one).await.is_ok() {
                            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                        }
                    }
                }
            });
            work.await;
        }
        _ => {
            let batch_size = settings.intake.batch_size;
            let linger = Duration::from_millis(settings.intake.batch_linger_ms);
            let mut consumer = consumer.take_until(stop.cancelled_owned()).boxed();
            let mut batch = Vec::with_capacity(batch_size);
            loop {
                let first = consumer.next().await;
                let Some(Ok(first)) = first else { break };
                batch.push(first);
                while batch.len() < batch_size {
                    match consumer.next().now_or_never() {
                        Some(Some(Ok(d))) => batch.push(d),
                        _ => break,
                    }
                }
                let deadline = tokio::time::Instant::now() + linger;
                while batch.len() < batch_size {
                    match tokio::time::timeout_at(deadline, consumer.next()).await {
                        Ok(Some(Ok(d))) => batch.push(d),
                        _ => break,
                    }
                }
                let mut jobs: Vec<NewJob> = batch.iter().filter_map(|d| bare_job(&d.data)).collect();
                if store.insert_jobs(&mut jobs).await.is_ok()
                    && let Some(last) = batch.last()
                {
                    let _ = last.acker.ack(BasicAckOptions { multiple: true }).await;
                }
                batch.clear();
            }
        }
    }
    Ok(())
}
