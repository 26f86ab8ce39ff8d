//! The sim benchmark: how fast the simulator answers, so that it is never the bottleneck of a
//! worker benchmark.
//!
//! 1. Simple API requests per second (flavor show, server show, alternating) from N concurrent
//!    clients with a pre-issued token, over keep-alive HTTP on loopback. The clients run on
//!    the same machine and share its CPU, so the figure is a lower bound.
//! 2. With 100,000 servers (created through the API), the latency (p50/p99) of list pages:
//!    the first page of `servers/detail?limit=100`, a page deep in the list by marker, and the
//!    engine poller's `servers/detail?tags=...&changes-since=...`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openstack_provisioner::sim::{QuotaPatch, SimConfig, SimHandle, Simulator, Timings};
use serde_json::{Value, json};

/// The figures one run produces.
#[derive(Debug, Clone, Default)]
pub struct SimFigures {
    pub clients: usize,
    pub requests_per_s: f64,
    pub servers: usize,
    pub create_per_s: f64,
    /// (name, p50 ms, p99 ms)
    pub list_latency: Vec<(String, f64, f64)>,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Runs the benchmark and prints its figures.
pub async fn run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clients = env_usize("BENCH_SIM_CLIENTS", 32);
    let servers = env_usize("BENCH_SIM_SERVERS", 100_000);
    match measure(clients, Duration::from_secs(5), servers).await {
        Ok(f) => print(&f),
        Err(e) => eprintln!("sim: benchmark failed: {e}"),
    }
}

pub fn print(f: &SimFigures) {
    println!(
        "sim: simple API requests: {:.0} req/s ({} concurrent clients, keep-alive, same host)",
        f.requests_per_s, f.clients
    );
    println!("sim: {} servers created through the API at {:.0} creates/s", f.servers, f.create_per_s);
    println!("sim: list latency with {} servers:", f.servers);
    for (name, p50, p99) in &f.list_latency {
        println!("sim:   {name:<52} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms");
    }
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub async fn measure(clients: usize, duration: Duration, servers: usize) -> BenchResult<SimFigures> {
    let timings = Timings { boot_mean_ms: 0, boot_jitter_ms: 0, ..Timings::default() };
    let sim = Simulator::start(SimConfig { timings, ..SimConfig::default() }).await?;
    let ctl = sim.control();
    ctl.set_quotas(
        "demo",
        QuotaPatch { instances: Some(-1), cores: Some(-1), ram: Some(-1), ..Default::default() },
    )?;
    let token = ctl.issue_token("provisioner", "provisioner", "demo")?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(clients * 2).build()?;
    let first = create(&http, &sim, &token, "first").await?;

    // 1. Request rate.
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (http, done, token) = (http.clone(), done.clone(), token.clone());
        let paths = [
            format!("{}/compute/v2.1/flavors/1", sim.url()),
            format!("{}/compute/v2.1/servers/{first}", sim.url()),
        ];
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            while Instant::now() < deadline {
                let r = http.get(&paths[n % 2]).header("X-Auth-Token", &token).send().await;
                if let Ok(r) = r
                    && r.status().is_success()
                    && r.bytes().await.is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                n += 1;
            }
        }));
    }
    let t0 = Instant::now();
    for t in tasks {
        t.await?;
    }
    let requests_per_s = done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64();

    // 2. Fill to `servers` through the API (a tenth of them tagged for the poller query).
    let t0 = Instant::now();
    let next = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (http, next, token) = (http.clone(), next.clone(), token.clone());
        let url = sim.url();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= servers {
                    break;
                }
                let tags = if i.is_multiple_of(10) { json!(["bench-poll"]) } else { json!(["bench"]) };
                let body = json!({"server": {"name": format!("bench-{i}"), "imageRef": "9f1c2a3b-4d5e-4f60-8a71-b2c3d4e5f601",
                    "flavorRef": "1", "networks": "none", "tags": tags}});
                let _ = http
                    .post(format!("{url}/compute/v2.1/servers"))
                    .header("X-Auth-Token", &token)
                    .header("OpenStack-API-Version", "compute 2.52")
                    .json(&body)
                    .send()
                    .await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let create_per_s = servers as f64 / t0.elapsed().as_secs_f64();
    let count = ctl.resources().projects.values().map(|p| p.usage.instances).sum::<i64>() as usize;

    let mid: Value = get(&http, &sim, &token, "/compute/v2.1/servers?limit=1000").await?;
    let marker = mid["servers"][999]["id"].as_str().unwrap_or_default().to_string();
    let since = (chrono::Utc::now() - chrono::Duration::seconds(30)).format("%Y-%m-%dT%H:%M:%SZ");
    let future = (chrono::Utc::now() + chrono::Duration::seconds(3600)).format("%Y-%m-%dT%H:%M:%SZ");
    let queries = [
        (
            "servers/detail?limit=100 (first page)".to_string(),
            "/compute/v2.1/servers/detail?limit=100".to_string(),
        ),
        (
            "servers/detail?limit=100&marker=<1000th>".to_string(),
            format!("/compute/v2.1/servers/detail?limit=100&marker={marker}"),
        ),
        ("servers?limit=1000 (ids only)".to_string(), "/compute/v2.1/servers?limit=1000".to_string()),
        (
            "servers/detail?tags=bench-poll&changes-since&limit=100".to_string(),
            format!("/compute/v2.1/servers/detail?tags=bench-poll&changes-since={since}&limit=100"),
        ),
        (
            "same, nothing changed since (scans all servers)".to_string(),
            format!("/compute/v2.1/servers/detail?tags=bench-poll&changes-since={future}&limit=100"),
        ),
    ];
    let mut list_latency = Vec::new();
    for (name, path) in queries {
        let mut samples = Vec::with_capacity(200);
        for _ in 0..200 {
            let t = Instant::now();
            get(&http, &sim, &token, &path).await?;
            samples.push(t.elapsed());
        }
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        list_latency.push((name, ms(samples[samples.len() / 2]), ms(samples[samples.len() * 99 / 100])));
    }
    sim.shutdown().await;
    Ok(SimFigures { clients, requests_per_s, servers: count, create_per_s, list_latency })
}

async fn create(http: &reqwest::Client, sim: &SimHandle, token: &str, name: &str) -> BenchResult<String> {
    let body = json!({"server": {"name": name, "imageRef": "9f1c2a3b-4d5e-4f60-8a71-b2c3d4e5f601", "flavorRef": "1", "networks": "none"}});
    let v: Value = http
        .post(format!("{}/compute/v2.1/servers", sim.url()))
        .header("X-Auth-Token", token)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    Ok(v["server"]["id"].as_str().unwrap_or_default().to_string())
}

async fn get(http: &reqwest::Client, sim: &SimHandle, token: &str, path: &str) -> BenchResult<Value> {
    let r = http
        .get(format!("{}{path}", sim.url()))
        .header("X-Auth-Token", token)
        .header("OpenStack-API-Version", "compute 2.52")
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(format!("GET {path}: {}", r.status()).into());
    }
    Ok(r.json().await?)
}
