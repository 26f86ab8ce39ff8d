//! The lifecycle benchmark: terminate throughput and OpenStack calls per terminated VM.
//!
//! One worker process provisions `LIFECYCLE_SERVICES` (default 1,000) services, each a VM with
//! a 1 GB volume, into the in-process simulator at zero simulated latency; then the simulator's
//! counters are reset and one `order.terminate` per service is published at once. Measured:
//! terminations per second from the first publish to the last `job.completed`, and the
//! simulator's answered requests (Keystone included, the poller's shared lists included) per
//! terminated VM. Targets (issue 11): ≥ 200 terminations/s, ≤ 6 calls per VM with a volume.

use std::time::{Duration, Instant};

use openstack_provisioner::amqp::submit::{confirmed, publish_with_key};

use crate::e2e::{World, zero};

/// (terminations/s, calls per terminated VM, peak RSS MB).
pub type Figures = (f64, f64, f64);

pub async fn run() {
    let _ = measure().await;
}

pub async fn measure() -> Option<Figures> {
    let n = std::env::var("LIFECYCLE_SERVICES").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    println!("lifecycle: {n} services (VM + 1 GB volume), then {n} terminates at once");
    match terminate(n).await {
        Ok((rate, calls, rss)) => {
            println!(
                "  terminate: {rate:.1} terminations/s; {calls:.2} OpenStack calls per terminated VM; peak RSS {rss:.0} MB"
            );
            Some((rate, calls, rss))
        }
        Err(e) => {
            println!("  terminate: FAILED: {e}");
            None
        }
    }
}

async fn terminate(n: usize) -> Result<Figures, String> {
    let mut w = World::new(zero()).await?;
    w.start_worker(0, 256, 250)?;
    let _ = w.publish("svc", n, true).await;
    let created = w.events(n, Duration::from_secs(600)).await;
    let ok = created.values().filter(|(_, e)| e.error.is_none()).count();
    if ok < n {
        w.close().await;
        return Err(format!("only {ok} of {n} services were created"));
    }
    w.sim.control().reset_counters();
    let start = Instant::now();
    let mut confirms = Vec::with_capacity(n);
    for i in 0..n {
        let body = serde_json::json!({
            "version": 1, "order_id": format!("svc-{i}-T"), "action": "terminate", "target_order_id": format!("svc-{i}")
        })
        .to_string();
        if let Ok(c) = publish_with_key(&w.channel, &w.names, "order.terminate", body.as_bytes()).await {
            confirms.push(c);
        }
    }
    for c in confirms {
        let _ = confirmed(c, "bench terminate").await;
    }
    let got = w.events(n, Duration::from_secs(600)).await;
    let done: Vec<_> =
        got.values().filter(|(_, e)| e.error.is_none() && e.order_id.ends_with("-T")).collect();
    let elapsed = done.iter().map(|(t, _)| t.duration_since(start)).max().unwrap_or_default();
    let rate = done.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    let calls = w.api_calls() as f64 / done.len().max(1) as f64;
    let rss = w.peak_rss_mb();
    let left = w.sim.control().resources();
    w.close().await;
    if done.len() < n {
        return Err(format!("only {} of {n} terminates completed", done.len()));
    }
    let leftover: usize = left
        .projects
        .values()
        .map(|p| {
            p.servers.values().sum::<usize>()
                + p.ports.values().sum::<usize>()
                + p.volumes.values().sum::<usize>()
        })
        .sum();
    if leftover > 0 {
        return Err(format!("{leftover} resources left in the cloud after the terminates"));
    }
    Ok((rate, calls, rss))
}
