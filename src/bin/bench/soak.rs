//! `bench soak`: every order kind at a steady rate for a set time against the simulator with 3
//! worker processes, under faults: a random worker SIGKILLed every ~20 s (and restarted, as a
//! supervisor would), the database and the broker cut for a few seconds now and then through a
//! TCP proxy, 5 % Nova/Neutron/Cinder 503s and a few 429s. Then the faults stop, the queues
//! drain, and it prints: orders in, jobs by final state and error class, duplicates in the cloud
//! (must be 0), orphans the reconciler finds (must be 0), events missing or doubled (must be 0),
//! p50/p99 order-to-event, and peak RSS per worker.
//!
//! `SOAK_SECS` (default 600), `SOAK_RATE` orders/s (default 5).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::{FieldTable, ShortString};
use openstack_provisioner::amqp::submit::{confirmed, publish_with_key};
use openstack_provisioner::config::{OrphanPolicy, Settings};
use openstack_provisioner::engine::cloud::Cloud;
use openstack_provisioner::engine::openstack_cloud::OpenStackCloud;
use openstack_provisioner::engine::reconcile::{ReconcileConfig, Reconciler};
use openstack_provisioner::messages::Event;
use openstack_provisioner::openstack::config::CloudConfig;
use openstack_provisioner::openstack::session::{Session, SessionOptions};
use openstack_provisioner::sim::{DEMO_PROJECT_ID, FaultRule, Timings};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::e2e::{World, percentile};

/// A TCP proxy that can be cut (live connections dropped, new ones refused) and restored.
struct Proxy {
    addr: std::net::SocketAddr,
    down: Arc<Mutex<(bool, CancellationToken)>>,
}

impl Proxy {
    async fn start(upstream: &'static str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let down = Arc::new(Mutex::new((false, CancellationToken::new())));
        let state = down.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let generation = {
                    let s = state.lock().expect("proxy");
                    if s.0 {
                        continue;
                    }
                    s.1.clone()
                };
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else { return };
                    tokio::select! {
                        _ = generation.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Proxy { addr, down }
    }

    fn set_down(&self, down: bool) {
        let mut s = self.down.lock().expect("proxy");
        s.0 = down;
        if down {
            s.1.cancel();
            s.1 = CancellationToken::new();
        }
    }
}

/// Per job id: first event's arrival, its distinct event ids, its order id.
type Seen = HashMap<String, (Instant, HashSet<uuid::Uuid>, String)>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn spawn_worker(w: &World, db: &Proxy, mq: &Proxy, i: usize) -> tokio::process::Child {
    let db_url = format!("mysql://root@{}/{}", db.addr, w.db);
    let amqp_url = format!("amqp://guest:guest@{}/%2f", mq.addr);
    w.worker_command(&format!("soak-{i}"), &db_url, &amqp_url)
        .env("PROVISIONER_ENGINE_LEASE_SECS", "10")
        .env("PROVISIONER_ENGINE_MAX_CRASHES", "20")
        .env("PROVISIONER_ENGINE_BACKOFF_MAX_SECS", "5")
        .env("PROVISIONER_RECONCILE_INTERVAL_SECS", "0")
        .env("PROVISIONER_SHUTDOWN_GRACE_SECS", "5")
        .spawn()
        .expect("start provisioner (cargo build --bin provisioner)")
}

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

pub async fn run() {
    let secs = env_u64("SOAK_SECS", 600);
    let rate = env_u64("SOAK_RATE", 5).max(1);
    let w = match World::new(Timings::fast()).await {
        Ok(w) => w,
        Err(e) => return eprintln!("soak: FAILED: {e}"),
    };
    let (db, mq) = (Proxy::start("127.0.0.1:3306").await, Proxy::start("127.0.0.1:5672").await);
    let control = w.sim.control();
    for service in ["compute", "network", "volume"] {
        let _ = control.add_fault(FaultRule {
            service: Some(service.into()),
            status: Some(503),
            probability: Some(0.05),
            ..FaultRule::default()
        });
        let _ = control.add_fault(FaultRule {
            service: Some(service.into()),
            status: Some(429),
            retry_after: Some("1".into()),
            probability: Some(0.005),
            ..FaultRule::default()
        });
    }

    // Events, from the start: arrival instant and event ids per job.
    let events: Arc<Mutex<Seen>> = Arc::default();
    let consumer_ch = w.conn.create_channel().await.expect("channel");
    let mut consumer = consumer_ch
        .basic_consume(
            ShortString::from(w.events_queue.as_str()),
            ShortString::from("soak"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume events");
    let sink = events.clone();
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            if let Ok(e) = serde_json::from_slice::<Event>(&d.data) {
                let mut m = sink.lock().expect("events");
                let entry =
                    m.entry(e.job_id.to_string()).or_insert((Instant::now(), HashSet::new(), e.order_id));
                entry.1.insert(e.event_id);
            }
            let _ = d.ack(BasicAckOptions::default()).await;
        }
    });

    let mut workers: Vec<tokio::process::Child> = (0..3).map(|i| spawn_worker(&w, &db, &mq, i)).collect();
    let mut peak: Vec<f64> = vec![0.0; 3];
    let (mut kills, mut db_cuts, mut mq_cuts, mut restarts) = (0, 0, 0, 0);
    let mut sent: HashMap<String, Instant> = HashMap::new();
    let mut created: Vec<String> = Vec::new();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut next_kill = start + Duration::from_secs(15 + fastrand::u64(0..10));
    let mut next_db_cut = start + Duration::from_secs(45);
    let mut next_mq_cut = start + Duration::from_secs(75);
    let mut restore: Vec<(Instant, &Proxy)> = Vec::new();
    let mut i = 0usize;
    while Instant::now() < end {
        // One order per tick: creates (half with a volume), then actions on earlier creates.
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (key, body, id) = match (i % 10, created.len()) {
            (0..=5, _) | (_, 0..=10) => {
                let id = format!("soak-{i}");
                let mut o = serde_json::json!({"order_id": id, "project_id": DEMO_PROJECT_ID,
                    "server": {"name": format!("vm-{i}"), "flavor": "m1.tiny", "image": "cirros-0.6.2", "network": "private"}});
                if i.is_multiple_of(2) {
                    o["volume"] = serde_json::json!({"size_gb": 1});
                }
                created.push(id.clone());
                ("order.create".to_string(), o, id)
            }
            (k, n) => {
                let target = created.swap_remove(fastrand::usize(..n - 5));
                let action = ["suspend", "unsuspend", "resize", "terminate"][k % 4];
                let id = format!("soak-{i}-{action}");
                let mut o = serde_json::json!({"version": 1, "order_id": id, "action": action, "target_order_id": target});
                if action == "resize" {
                    o["flavor"] = "m1.small".into();
                }
                if action != "terminate" {
                    created.push(target);
                }
                (format!("order.{action}"), o, id)
            }
        };
        i += 1;
        // The bench's own connection is not cut; a publish that fails is simply not counted.
        if let Ok(c) = publish_with_key(&w.channel, &w.names, &key, body.to_string().as_bytes()).await
            && confirmed(c, "soak order").await.is_ok()
        {
            sent.insert(id, Instant::now());
        }

        let now = Instant::now();
        if now >= next_kill {
            let k = fastrand::usize(..workers.len());
            if let Some(pid) = workers[k].id() {
                peak[k] = peak[k].max(rss_mb(pid));
            }
            let _ = workers[k].kill().await;
            workers[k] = spawn_worker(&w, &db, &mq, k);
            kills += 1;
            next_kill = now + Duration::from_secs(15 + fastrand::u64(0..10));
        }
        if now >= next_db_cut {
            db.set_down(true);
            restore.push((now + Duration::from_secs(3), &db));
            db_cuts += 1;
            next_db_cut = now + Duration::from_secs(60 + fastrand::u64(0..30));
        }
        if now >= next_mq_cut {
            mq.set_down(true);
            restore.push((now + Duration::from_secs(3), &mq));
            mq_cuts += 1;
            next_mq_cut = now + Duration::from_secs(60 + fastrand::u64(0..30));
        }
        restore.retain(|(at, p)| {
            if now >= *at {
                p.set_down(false);
                false
            } else {
                true
            }
        });
        // The supervisor: a worker that exited (a task failed while the database was cut) is
        // started again.
        for (k, child) in workers.iter_mut().enumerate() {
            if let Some(pid) = child.id() {
                peak[k] = peak[k].max(rss_mb(pid));
            }
            if matches!(child.try_wait(), Ok(Some(_))) {
                *child = spawn_worker(&w, &db, &mq, k);
                restarts += 1;
            }
        }
    }
    for (_, p) in restore.drain(..) {
        p.set_down(false);
    }
    control.clear_faults();
    let published = Instant::now();

    // Drain: every job final (workers still restarted if they exit), within 10 minutes.
    let drained = tokio::time::timeout(Duration::from_secs(600), async {
        loop {
            let open: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE state NOT IN ('completed', 'failed', 'cancelled')",
            )
            .fetch_one(w.store.pool())
            .await
            .unwrap_or(1);
            let unsent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
                .fetch_one(w.store.pool())
                .await
                .unwrap_or(1);
            if open == 0 && unsent == 0 {
                return;
            }
            for (k, child) in workers.iter_mut().enumerate() {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    *child = spawn_worker(&w, &db, &mq, k);
                    restarts += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .is_ok();
    tokio::time::sleep(Duration::from_secs(2)).await; // the last confirmed events reach the consumer
    for (k, child) in workers.iter_mut().enumerate() {
        if let Some(pid) = child.id() {
            peak[k] = peak[k].max(rss_mb(pid));
        }
        let _ = child.kill().await;
    }

    // Figures.
    let rows: Vec<(String, String, Option<String>, String)> =
        sqlx::query_as("SELECT id, state, error_class, action FROM jobs")
            .fetch_all(w.store.pool())
            .await
            .unwrap_or_default();
    let mut by_class: HashMap<String, usize> = HashMap::new();
    for (_, state, class, action) in &rows {
        let class = class.as_ref().map(|c| format!(" ({c})")).unwrap_or_default();
        *by_class.entry(format!("{action} {state}{class}")).or_default() += 1;
    }
    let ev = events.lock().expect("events").clone();
    let finals: Vec<&(String, String, Option<String>, String)> =
        rows.iter().filter(|r| matches!(r.1.as_str(), "completed" | "failed" | "cancelled")).collect();
    let missing = finals.iter().filter(|r| !ev.contains_key(&r.0)).count();
    let doubled = ev.values().filter(|(_, ids, _)| ids.len() > 1).count();
    let mut latencies: Vec<f64> = ev
        .values()
        .filter_map(|(at, _, order)| sent.get(order).map(|s| at.duration_since(*s).as_secs_f64()))
        .collect();
    latencies.sort_by(f64::total_cmp);

    // Duplicates: more than one server, port or volume carrying one job's mark.
    let vars: HashMap<String, String> = [
        ("OS_AUTH_URL", w.sim.auth_url()),
        ("OS_USERNAME", "provisioner".into()),
        ("OS_PASSWORD", "provisioner".into()),
        ("OS_USER_DOMAIN_NAME", "Default".into()),
        ("OS_PROJECT_DOMAIN_NAME", "Default".into()),
        ("OS_PROJECT_NAME", "demo".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let cloud_cfg = CloudConfig::from_vars(&vars).ok().flatten().expect("cloud");
    let cloud: Arc<dyn Cloud> = Arc::new(OpenStackCloud::new(Arc::new(
        Session::new(cloud_cfg, SessionOptions::default()).expect("session"),
    )));
    let mut duplicates = 0;
    if let Ok(inv) = cloud.marked_resources(DEMO_PROJECT_ID).await {
        let mut count: HashMap<(String, &str), usize> = HashMap::new();
        let job = |tags: &[String]| tags.iter().find(|t| t.starts_with("job-")).cloned().unwrap_or_default();
        for s in &inv.servers {
            *count.entry((job(&s.tags), "server")).or_default() += 1;
        }
        for p in &inv.ports {
            *count.entry((job(&p.tags), "port")).or_default() += 1;
        }
        for v in &inv.volumes {
            let j = v.info.metadata.get("provisioner_job").cloned().unwrap_or_default();
            *count.entry((j, "volume")).or_default() += 1;
        }
        duplicates = count.values().filter(|n| **n > 1).count();
    }
    // Orphans: a reconciler pass with no grace, report only.
    let mut s = Settings::default();
    s.reconcile.grace_secs = 0;
    s.reconcile.orphans = OrphanPolicy::Report;
    let rec = Reconciler::new(
        w.store.clone(),
        cloud,
        ReconcileConfig::from_settings(&s, "soak".into()),
        Arc::new(tokio::sync::Notify::new()),
    );
    let orphans = match rec.run_once().await {
        Ok(r) => r.findings.iter().filter(|f| f.kind == "orphan").count().to_string(),
        Err(e) => format!("n/a ({e})"),
    };

    println!("soak: {secs} s at {rate} orders/s, 3 workers, simulator with fast timings");
    println!(
        "  faults: {kills} workers SIGKILLed, {db_cuts} database cuts and {mq_cuts} broker cuts of 3 s, 5 % 503 and 0.5 % 429 on Nova/Neutron/Cinder; {restarts} worker exits restarted"
    );
    println!("  orders in (confirmed): {}; jobs: {}", sent.len(), rows.len());
    let mut classes: Vec<_> = by_class.into_iter().collect();
    classes.sort();
    for (k, n) in classes {
        println!("    {k}: {n}");
    }
    println!(
        "  drained: {} ({:.0} s after the last order)",
        if drained { "yes" } else { "NO (timed out after 600 s)" },
        published.elapsed().as_secs_f64()
    );
    println!("  duplicates in the cloud: {duplicates} (must be 0)");
    println!("  orphans found by the reconciler: {orphans} (must be 0)");
    println!("  events missing: {missing}, doubled: {doubled} (must be 0, 0)");
    println!(
        "  order to event: p50 {:.2} s, p99 {:.2} s ({} events)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len()
    );
    println!(
        "  peak RSS per worker slot, MB: {}",
        peak.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(", ")
    );
    let _ = consumer_ch.close(200, "soak done".into()).await;
    w.close().await;
}
