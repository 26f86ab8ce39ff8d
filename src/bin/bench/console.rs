//! The console benchmark: the operator console's queries with 1,000,000 jobs in the database.
//!
//! Fills a database of its own with `CONSOLE_JOBS` (default 1,000,000) jobs spread over the last
//! 30 days (90 % completed, 6 % failed across four error classes, 1 % cancelled, the rest queued
//! or in progress and leased by 8 workers; 1,000 projects), with two history rows for each job
//! of the last day, then runs each list and dashboard query `CONSOLE_RUNS` (default 200) times
//! and prints p50 and p99. The database is dropped at the end unless `CONSOLE_KEEP=1`; a kept
//! one is measured again, without filling, with `CONSOLE_DB=<its name>`.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use openstack_provisioner::config::{DatabaseSettings, SecretUrl};
use openstack_provisioner::store::Store;
use openstack_provisioner::store::status::{Cursor, JobFilter};

pub async fn run() {
    if let Err(e) = measure().await {
        println!("  console: FAILED: {e}");
    }
}

const CLASSES: [&str; 4] = ["quota_exceeded", "cloud_error", "timeout", "auth"];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

pub async fn measure() -> Result<Vec<(String, f64, f64)>, String> {
    let n = env_or("CONSOLE_JOBS", 1_000_000);
    let runs = env_or("CONSOLE_RUNS", 200);
    // CONSOLE_DB names a database an earlier run kept (CONSOLE_KEEP=1): it is measured as it is.
    let reuse = std::env::var("CONSOLE_DB").ok();
    let name = reuse.clone().unwrap_or_else(|| format!("prov_bench_console_{:08x}", fastrand::u32(..)));
    let settings = DatabaseSettings {
        url: SecretUrl::new(format!("mysql://root@127.0.0.1:3306/{name}")),
        ..DatabaseSettings::default()
    };
    let store = Store::connect(&settings).await.map_err(|e| e.to_string())?;
    if reuse.is_none() {
        println!("console: filling {n} jobs into {name}");
        let t = Instant::now();
        fill(&store, n).await.map_err(|e| format!("fill: {e}"))?;
        println!("  filled in {:.0} s", t.elapsed().as_secs_f64());
    } else {
        let have: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(store.pool())
            .await
            .map_err(|e| e.to_string())?;
        println!("console: {have} jobs already in {name}");
    }
    sqlx::query("ANALYZE TABLE jobs, job_history, outbox")
        .execute(store.pool())
        .await
        .map_err(|e| e.to_string())?;

    let server: Option<String> = sqlx::query_scalar(
        "SELECT server_id FROM jobs WHERE server_id IS NOT NULL ORDER BY created_at DESC LIMIT 1 OFFSET 5000",
    )
    .fetch_optional(store.pool())
    .await
    .map_err(|e| e.to_string())?
    .flatten();
    let server = server.unwrap_or_default();
    let page10 = {
        let mut cursor = None;
        for _ in 0..10 {
            let p = store
                .list_jobs(&JobFilter { limit: 50, cursor: cursor.clone(), ..JobFilter::default() })
                .await
                .map_err(|e| e.to_string())?;
            cursor = p.next_cursor.map(|c| Cursor::decode(&c).expect("own cursor"));
        }
        cursor
    };
    let hour_ago = Utc::now() - chrono::Duration::hours(1);

    let lists: Vec<(&str, JobFilter)> = vec![
        ("list: newest 50", JobFilter { limit: 50, ..JobFilter::default() }),
        ("list: page 11 (cursor)", JobFilter { limit: 50, cursor: page10, ..JobFilter::default() }),
        ("list: state=failed", JobFilter { state: Some("failed".into()), limit: 50, ..JobFilter::default() }),
        (
            "list: failed, class=quota_exceeded",
            JobFilter {
                state: Some("failed".into()),
                error_class: Some("quota_exceeded".into()),
                limit: 50,
                ..JobFilter::default()
            },
        ),
        (
            "list: project=p-0042",
            JobFilter { project_id: Some("p-0042".into()), limit: 50, ..JobFilter::default() },
        ),
        (
            "list: action=resize",
            JobFilter { action: Some("resize".into()), limit: 50, ..JobFilter::default() },
        ),
        (
            "list: state=queued since 1h",
            JobFilter {
                state: Some("queued".into()),
                since: Some(hour_ago),
                limit: 50,
                ..JobFilter::default()
            },
        ),
    ];
    let mut out = Vec::new();
    for (label, filter) in &lists {
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            store.list_jobs(filter).await.map_err(|e| e.to_string())?;
            times.push(t.elapsed());
        }
        out.push(report(label, times));
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        store.search_jobs(&server).await.map_err(|e| e.to_string())?;
        times.push(t.elapsed());
    }
    out.push(report("search: by server id", times));
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        store.dashboard().await.map_err(|e| e.to_string())?;
        times.push(t.elapsed());
    }
    out.push(report("dashboard (all its queries)", times));
    let d = store.dashboard().await.map_err(|e| e.to_string())?;
    println!(
        "  dashboard sees: active {:?}; finished in the last day {:?}; {} workers",
        d.active,
        d.finished_day,
        d.workers.len()
    );
    if std::env::var("CONSOLE_KEEP").as_deref() != Ok("1") && reuse.is_none() {
        let _ =
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{name}`"))).execute(store.pool()).await;
    }
    store.close().await;
    Ok(out)
}

fn report(label: &str, mut times: Vec<Duration>) -> (String, f64, f64) {
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    let (p50, p99) = (at(0.50).as_secs_f64() * 1e3, at(0.99).as_secs_f64() * 1e3);
    println!("  {label:<40} p50 {p50:>7.2} ms   p99 {p99:>7.2} ms   ({} runs)", times.len());
    (label.to_string(), p50, p99)
}

/// Inserts `n` jobs in multi-row batches, oldest first, and the last day's history rows.
async fn fill(store: &Store, n: usize) -> Result<(), sqlx::Error> {
    let now = Utc::now();
    let span_micros: i64 = 30 * 86_400 * 1_000_000;
    const BATCH: usize = 2000;
    let mut history: Vec<(String, DateTime<Utc>, String)> = Vec::new();
    for start in (0..n).step_by(BATCH) {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO jobs (id, order_id, project_id, kind, action, target_order_id, order_body, order_digest, \
             state, step, attempts, next_run_at, lease_owner, lease_expires_at, server_id, port_id, error_class, \
             error_step, error_message, created_at, updated_at, finished_at) ",
        );
        let rows: Vec<usize> = (start..(start + BATCH).min(n)).collect();
        q.push_values(rows, |mut b, i| {
            let id = uuid::Uuid::new_v4().to_string();
            // Oldest first, evenly spread over 30 days, the newest a few seconds ago.
            let created = now - chrono::Duration::microseconds(span_micros - span_micros / n as i64 * i as i64);
            let r = fastrand::u32(..1000);
            let (state, step) = match r {
                0..900 => ("completed", "completed"),
                900..960 => ("failed", "failed"),
                960..970 => ("cancelled", "cancelled"),
                _ if now - created > chrono::Duration::hours(2) => ("completed", "completed"),
                970..985 => ("queued", "resolve"),
                _ => ("in_progress", "wait_server"),
            };
            let finished = matches!(state, "completed" | "failed" | "cancelled")
                .then(|| created + chrono::Duration::milliseconds(2000 + i64::from(fastrand::u32(..20_000))));
            let class = match state {
                "failed" => Some(CLASSES[fastrand::usize(..CLASSES.len())]),
                "cancelled" => Some("cancelled"),
                _ => None,
            };
            let leased = state == "in_progress";
            let order_id = format!("bench-{i:07}");
            let action = if r % 50 == 7 { "resize" } else { "create" };
            let server = (state == "completed").then(|| uuid::Uuid::new_v4().to_string());
            if now - created < chrono::Duration::days(1) {
                history.push((id.clone(), created + chrono::Duration::milliseconds(300), format!("worker-{}", r % 8)));
            }
            b.push_bind(id)
                .push_bind(order_id.clone())
                .push_bind(format!("p-{:04}", r % 1000))
                .push_bind(action)
                .push_bind(action)
                .push_bind(order_id)
                .push_bind(r#"{"order_id":"bench","project_id":"p","server":{"name":"vm","flavor":"m1.small","image":"cirros","network":"private"}}"#)
                .push_bind("0".repeat(64))
                .push_bind(state)
                .push_bind(step)
                .push_bind(1 + r % 3)
                .push_bind(created)
                .push_bind(leased.then(|| format!("worker-{}", r % 8)))
                .push_bind(leased.then(|| now + chrono::Duration::seconds(30)))
                .push_bind(server)
                .push_bind(None::<String>)
                .push_bind(class)
                .push_bind(class.map(|_| "create_server"))
                .push_bind(class.map(|c| format!("bench failure: {c}")))
                .push_bind(created)
                .push_bind(finished.unwrap_or(created))
                .push_bind(finished);
        });
        q.build().execute(store.pool()).await?;
        if start % 100_000 == 0 && start > 0 {
            println!("  {start} jobs");
        }
    }
    for chunk in history.chunks(2000) {
        let mut q = sqlx::QueryBuilder::<sqlx::MySql>::new(
            "INSERT INTO job_history (job_id, at, from_state, to_state, from_step, to_step, attempt, actor) ",
        );
        q.push_values(chunk, |mut b, (id, at, actor)| {
            b.push_bind(id)
                .push_bind(*at)
                .push_bind("queued")
                .push_bind("in_progress")
                .push_bind("resolve")
                .push_bind("create_port")
                .push_bind(1)
                .push_bind(actor);
        });
        q.build().execute(store.pool()).await?;
    }
    Ok(())
}
