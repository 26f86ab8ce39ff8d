//! `bench`: the benchmark suite (not tests: it prints figures, it asserts nothing).
//!
//! `cargo run --release --bin bench -- all` runs every scenario against the local MariaDB and
//! RabbitMQ and the in-process simulator, then prints one summary table; `intake`, `e2e`,
//! `lifecycle`, `sim` and `console` run one (`console` is not part of `all`: it fills 1,000,000 jobs). The end-to-end scenarios start `provisioner run` processes: build the release
//! binaries first (`cargo build --release`), which `cargo run --release --bin bench` does not do
//! for the other binary on its own.

mod console;
mod e2e;
mod intake;
mod lifecycle;
mod sim;
mod soak;

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "all".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        match which.as_str() {
            "intake" => intake::run().await,
            "e2e" => e2e::run().await,
            "lifecycle" => lifecycle::run().await,
            "sim" => sim::run().await,
            "console" => console::run().await,
            "soak" => soak::run().await,
            "all" => all().await,
            other => {
                eprintln!("unknown scenario {other:?}: intake | e2e | lifecycle | sim | console | soak | all")
            }
        }
    });
}

/// Every scenario, then one table of the headline figures with their targets.
async fn all() {
    let n = std::env::var("BENCH_INTAKE_N").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let intake = intake::measure(n).await.map_err(|e| eprintln!("intake: FAILED: {e}")).ok();
    if let Some(f) = &intake {
        intake::print(f, &openstack_provisioner::config::Settings::default());
    }
    let e2e = e2e::measure().await;
    let lifecycle = lifecycle::measure().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = sim::measure(32, std::time::Duration::from_secs(5), 100_000)
        .await
        .map_err(|e| eprintln!("sim: FAILED: {e}"))
        .ok();
    if let Some(f) = &sim {
        sim::print(f);
    }

    let na = || "n/a (failed or skipped)".to_string();
    let mut rows: Vec<(String, String, &str)> = Vec::new();
    match &intake {
        Some(f) => {
            rows.push(("intake, orders/s".into(), format!("{:.0}", f.intake), "≥ 70 % of (b)"));
            rows.push((
                "  (a) bare consume-insert-commit-ack, 8 in flight".into(),
                format!("{:.0}", f.bare_single),
                "",
            ));
            rows.push(("  (b) bare, batched".into(), format!("{:.0}", f.bare_batched), ""));
            rows.push(("  intake / (b)".into(), format!("{:.0} %", 100.0 * f.ratio()), "≥ 70 %"));
        }
        None => rows.push(("intake, orders/s".into(), na(), "")),
    }
    for (workers, rate, rss) in &e2e.throughput {
        let target = if *workers == 1 { "≥ 200" } else { "" };
        rows.push((
            format!("e2e zero latency, VM + volume, {workers} worker(s), jobs/s"),
            format!("{rate:.0}"),
            target,
        ));
        rows.push((format!("  peak RSS per worker ({workers} worker(s)), MB"), format!("{rss:.0}"), ""));
    }
    for (label, f) in [("1,000 at once", &e2e.burst), ("steady, ~1,000 in flight", &e2e.steady)] {
        match f {
            Some((p50, p99, calls, rss)) => {
                rows.push((
                    format!("realistic, {label}: overhead p50 / p99, ms"),
                    format!("{:.0} / {:.0}", p50 * 1e3, p99 * 1e3),
                    "p99 ≤ 1000",
                ));
                rows.push((format!("realistic, {label}: API calls per VM"), format!("{calls:.2}"), "≤ 6"));
                rows.push((format!("realistic, {label}: worker peak RSS, MB"), format!("{rss:.0}"), ""));
            }
            None => rows.push((format!("realistic, {label}"), na(), "")),
        }
    }
    match &e2e.in_flight {
        Some((jobs, rss)) => {
            rows.push((format!("{jobs} jobs in flight: worker peak RSS, MB"), format!("{rss:.0}"), "≤ 200"))
        }
        None => rows.push(("10,000 jobs in flight".into(), na(), "")),
    }
    match &lifecycle {
        Some((rate, calls, _)) => {
            rows.push((
                "terminate, 1,000 services with a volume, per s".into(),
                format!("{rate:.0}"),
                "≥ 200",
            ));
            rows.push(("  OpenStack calls per terminated VM".into(), format!("{calls:.2}"), "≤ 6"));
        }
        None => rows.push(("terminate".into(), na(), "")),
    }
    match &sim {
        Some(f) => {
            rows.push(("simulator, simple requests/s".into(), format!("{:.0}", f.requests_per_s), "≥ 5,000"))
        }
        None => rows.push(("simulator, simple requests/s".into(), na(), "")),
    }

    let w = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(10);
    println!();
    println!("summary ({} cores)", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("{:<w$}  {:>12}  target", "figure", "value");
    for (k, v, t) in rows {
        println!("{k:<w$}  {v:>12}  {t}");
    }
}
