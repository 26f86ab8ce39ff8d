//! Tests: operations. Job status from the store, over HTTP and from the CLI binary; `/metrics` as
//! Prometheus text; the bearer token; health and readiness.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use openstack_provisioner::config::{DatabaseSettings, Secret, SecretUrl};
use openstack_provisioner::http::{self, HttpState};
use openstack_provisioner::store::Store;
use openstack_provisioner::store::status::JobFilter;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A database of its own for one test, dropped by [`OpsDb::drop_db`].
struct OpsDb {
    url: String,
    name: String,
    store: Store,
}

impl OpsDb {
    async fn new() -> OpsDb {
        let name = format!("prov_t_{}", uuid::Uuid::new_v4().simple());
        let url = format!("mysql://root@127.0.0.1:3306/{name}");
        let settings = DatabaseSettings { url: SecretUrl::new(&url), ..DatabaseSettings::default() };
        let store = Store::connect(&settings).await.expect("connect to the test database");
        OpsDb { url, name, store }
    }

    async fn drop_db(self) {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{}`", self.name)))
            .execute(self.store.pool())
            .await;
        self.store.close().await;
    }

    /// A job row as intake and the engine would leave it (fixture only: the code under test
    /// reads it).
    async fn insert_job(
        &self,
        order_id: &str,
        project: &str,
        state: &str,
        created_at: DateTime<Utc>,
    ) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let finished = matches!(state, "completed" | "failed" | "cancelled")
            .then(|| created_at + chrono::Duration::seconds(9));
        let (error_class, error_step, error_message) = if state == "failed" {
            (Some("quota_exceeded"), Some("create_server"), Some("Quota exceeded for instances"))
        } else {
            (None, None, None)
        };
        let server = (state == "completed").then(|| format!("srv-{order_id}"));
        sqlx::query(
            "INSERT INTO jobs (id, order_id, project_id, order_body, order_digest, state, step, attempts, \
             next_run_at, server_id, error_class, error_step, error_message, created_at, finished_at) \
             VALUES (?, ?, ?, '{}', REPEAT('0', 64), ?, ?, 3, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&id)
        .bind(order_id)
        .bind(project)
        .bind(state)
        .bind(if state == "queued" { "resolve" } else { "done" })
        .bind(created_at)
        .bind(server)
        .bind(error_class)
        .bind(error_step)
        .bind(error_message)
        .bind(created_at)
        .bind(finished)
        .execute(self.store.pool())
        .await
        .expect("insert job fixture");
        id
    }

    async fn insert_history(
        &self,
        job_id: &str,
        at: DateTime<Utc>,
        from: (&str, &str),
        to: (&str, &str),
        detail: &str,
    ) {
        sqlx::query(
            "INSERT INTO job_history (job_id, at, from_state, to_state, from_step, to_step, attempt, duration_ms, \
             actor, detail) VALUES (?, ?, ?, ?, ?, ?, 1, 1200, 'worker-a', ?)",
        )
        .bind(job_id)
        .bind(at)
        .bind(from.0)
        .bind(to.0)
        .bind(from.1)
        .bind(to.1)
        .bind(detail)
        .execute(self.store.pool())
        .await
        .expect("insert history fixture");
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z").unwrap().with_timezone(&Utc)
}

/// Five jobs in two projects, one failed with history.
async fn fixture(db: &OpsDb) -> (String, String) {
    let mut failed = String::new();
    for i in 0..5 {
        let (project, state) = match i {
            0 => ("p-acme", "failed"),
            1 => ("p-acme", "completed"),
            2 => ("p-demo", "queued"),
            3 => ("p-demo", "completed"),
            _ => ("p-demo", "in_progress"),
        };
        let id =
            db.insert_job(&format!("B-ops-{i}"), project, state, t0() + chrono::Duration::seconds(i)).await;
        if i == 0 {
            failed = id;
        }
    }
    db.insert_history(
        &failed,
        t0() + chrono::Duration::seconds(1),
        ("queued", "resolve"),
        ("in_progress", "create_port"),
        "resolved",
    )
    .await;
    db.insert_history(
        &failed,
        t0() + chrono::Duration::seconds(3),
        ("in_progress", "create_server"),
        ("rolling_back", "delete_port"),
        "quota_exceeded: Quota exceeded for instances",
    )
    .await;
    (failed, "B-ops-0".into())
}

#[tokio::test]
async fn ops_status_lists_filter_and_paginate() {
    let db = OpsDb::new().await;
    let (failed, _) = fixture(&db).await;

    let all = db.store.list_jobs(&JobFilter { limit: 50, ..Default::default() }).await.unwrap();
    let orders: Vec<_> = all.jobs.iter().map(|j| j.order_id.as_str()).collect();
    assert_eq!(orders, ["B-ops-4", "B-ops-3", "B-ops-2", "B-ops-1", "B-ops-0"], "newest first");
    assert!(all.next_cursor.is_none());

    // Pages of two walk the whole list once, in order.
    let mut seen = Vec::new();
    let mut cursor = None;
    for _ in 0..5 {
        let page = db
            .store
            .list_jobs(&JobFilter { limit: 2, cursor: cursor.clone(), ..Default::default() })
            .await
            .unwrap();
        seen.extend(page.jobs.iter().map(|j| j.order_id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(openstack_provisioner::store::status::Cursor::decode(&c).unwrap()),
            None => break,
        }
    }
    assert_eq!(seen, orders);

    let acme = db
        .store
        .list_jobs(&JobFilter { project_id: Some("p-acme".into()), limit: 50, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(acme.jobs.len(), 2);
    let failed_jobs = db
        .store
        .list_jobs(&JobFilter { state: Some("failed".into()), limit: 50, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(failed_jobs.jobs.len(), 1);
    assert_eq!(failed_jobs.jobs[0].job_id, failed);
    assert_eq!(failed_jobs.jobs[0].error_class.as_deref(), Some("quota_exceeded"));
    let since = db
        .store
        .list_jobs(&JobFilter {
            since: Some(t0() + chrono::Duration::seconds(3)),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(since.jobs.len(), 2);
    let by_order = db
        .store
        .list_jobs(&JobFilter { order_id: Some("B-ops-3".into()), limit: 50, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(by_order.jobs.len(), 1);

    // One job, by job id and by order id; history led by its creation, with timings.
    let detail = db.store.job_detail(&failed).await.unwrap().unwrap();
    assert_eq!(db.store.job_detail("B-ops-0").await.unwrap().unwrap(), detail);
    assert_eq!(detail.history.len(), 3, "{:?}", detail.history);
    assert_eq!(detail.history[0].actor.as_deref(), Some("intake"));
    assert_eq!(detail.history[0].at, t0());
    assert_eq!(detail.history[2].elapsed_ms, 3000);
    assert_eq!(detail.history[2].duration_ms, Some(1200));
    assert_eq!(detail.error_step.as_deref(), Some("create_server"));
    assert!(db.store.job_detail("B-nope").await.unwrap().is_none());

    let counts = db.store.active_job_counts().await.unwrap();
    assert_eq!(counts, vec![("queued".into(), 1), ("in_progress".into(), 1), ("rolling_back".into(), 0)]);
    db.drop_db().await;
}

struct Server {
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), http::HttpError>>,
}

impl Server {
    async fn start(store: Store, token: Option<&str>, broker: http::BrokerProbe) -> Server {
        let listener = http::bind("127.0.0.1:0", None).await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = HttpState {
            store,
            token: token.map(Secret::new),
            broker,
            console: Default::default(),
            cloud: None,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(http::serve(listener, state, stop.clone()));
        Server { base, stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

#[tokio::test]
async fn ops_http_serves_jobs_health_and_pages() {
    let db = OpsDb::new().await;
    let (failed, order) = fixture(&db).await;
    let server =
        Server::start(db.store.clone(), None, http::tcp_probe("amqp://guest:guest@127.0.0.1:5672/%2f")).await;
    let c = client();
    let get = |path: &str| c.get(format!("{}{path}", server.base)).send();

    let r = get("/healthz").await.unwrap();
    assert_eq!(r.status(), 200);
    let r = get("/readyz").await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    let job: Value = get(&format!("/v1/jobs/{failed}")).await.unwrap().json().await.unwrap();
    assert_eq!(job["order_id"], order.as_str());
    assert_eq!(job["state"], "failed");
    assert_eq!(job["error_class"], "quota_exceeded");
    assert_eq!(job["history"].as_array().unwrap().len(), 3);
    let by_order: Value = get(&format!("/v1/jobs/{order}")).await.unwrap().json().await.unwrap();
    assert_eq!(by_order["job_id"], failed.as_str());
    let r = get("/v1/jobs/B-missing").await.unwrap();
    assert_eq!(r.status(), 404);

    let page: Value = get("/v1/jobs?limit=3").await.unwrap().json().await.unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 3);
    let cursor = page["next_cursor"].as_str().expect("a next page").to_string();
    let rest: Value = get(&format!("/v1/jobs?limit=3&cursor={cursor}")).await.unwrap().json().await.unwrap();
    let orders: Vec<_> =
        rest["jobs"].as_array().unwrap().iter().map(|j| j["order_id"].as_str().unwrap()).collect();
    assert_eq!(orders, ["B-ops-1", "B-ops-0"]);
    assert!(rest["next_cursor"].is_null());
    let filtered: Value =
        get("/v1/jobs?state=completed&project_id=p-demo").await.unwrap().json().await.unwrap();
    assert_eq!(filtered["jobs"].as_array().unwrap().len(), 1);
    let by_order: Value = get("/v1/jobs?order_id=B-ops-2").await.unwrap().json().await.unwrap();
    assert_eq!(by_order["jobs"][0]["state"], "queued");

    assert_eq!(get("/v1/jobs?state=bogus").await.unwrap().status(), 400);
    assert_eq!(get("/v1/jobs?cursor=xyz").await.unwrap().status(), 400);
    assert_eq!(get("/v1/jobs?limit=abc").await.unwrap().status(), 400);
    assert_eq!(get("/v1/jobs?colour=red").await.unwrap().status(), 400);
    server.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn ops_readyz_says_what_is_down() {
    let db = OpsDb::new().await;
    // A port nothing listens on: bind one, note it, close it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let server = Server::start(
        db.store.clone(),
        None,
        http::tcp_probe(&format!("amqp://guest:guest@127.0.0.1:{closed}/%2f")),
    )
    .await;
    let r = client().get(format!("{}/readyz", server.base)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["database"], "ok");
    assert!(body["broker"].as_str().unwrap().contains(&closed.to_string()), "{body}");
    server.stop().await;
    db.drop_db().await;
}

#[tokio::test]
async fn ops_bearer_token_is_enforced() {
    let db = OpsDb::new().await;
    fixture(&db).await;
    let server =
        Server::start(db.store.clone(), Some("s3cret-token"), http::tcp_probe("amqp://127.0.0.1:5672/"))
            .await;
    let c = client();
    for path in ["/v1/jobs", "/v1/jobs/B-ops-0", "/metrics"] {
        let url = format!("{}{path}", server.base);
        let r = c.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        assert_eq!(r.headers()["www-authenticate"], "Bearer");
        let r = c.get(&url).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
        let r = c.get(&url).bearer_auth("s3cret-token").send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} with the token");
    }
    // Probes stay open.
    assert_eq!(c.get(format!("{}/healthz", server.base)).send().await.unwrap().status(), 200);
    server.stop().await;
    db.drop_db().await;

    // A listener beyond loopback without a token does not start.
    let e = http::bind("0.0.0.0:0", None).await.unwrap_err();
    assert!(e.to_string().contains("PROVISIONER_HTTP_TOKEN"), "{e}");
}

use openmetrics_parser::{PrometheusValue, Sample};

/// The value of the sample of `family` whose labels include `labels`, from the Prometheus text
/// format as parsed by `openmetrics-parser` (`None` if there is no such sample).
fn prom_value(text: &str, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let exposition = openmetrics_parser::prometheus::parse_prometheus(text).ok()?;
    let family = exposition.families.get(family)?;
    let found = family.iter_samples().find(|s| has_labels(s, labels))?;
    Some(match &found.value {
        PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
        PrometheusValue::Counter(c) => c.value.as_f64(),
        PrometheusValue::Histogram(h) => h.count.unwrap_or(0) as f64,
        PrometheusValue::Summary(s) => s.count.unwrap_or(0) as f64,
    })
}

fn has_labels<V: openmetrics_parser::RenderableMetricValue + Clone>(
    s: &Sample<V>,
    labels: &[(&str, &str)],
) -> bool {
    let Ok(set) = s.get_labelset() else { return false };
    labels.iter().all(|(k, v)| set.get_label_value(k) == Some(*v))
}

/// The parser the tests below rely on is strict: what a scraper would refuse, it refuses.
#[test]
fn ops_metrics_parser_rejects_malformed_text() {
    use openmetrics_parser::openmetrics::parse_openmetrics;
    use openmetrics_parser::prometheus::parse_prometheus;
    assert!(parse_prometheus("# TYPE a counter\na 1\n").is_ok());
    assert!(parse_prometheus("# TYPE a counter\na{x=\"1} 1\n").is_err(), "unterminated label");
    assert!(parse_prometheus("# TYPE a counter\na one\n").is_err(), "non-numeric value");
    assert!(parse_prometheus("# TYPE a gauge\n# TYPE a gauge\na 1\n").is_err(), "family declared twice");
    assert!(parse_openmetrics("# TYPE a counter\na_total 1\n# EOF\n").is_ok());
    assert!(parse_openmetrics("# TYPE a counter\na_total 1\n").is_err(), "no # EOF");
    assert!(
        parse_openmetrics("# TYPE a histogram\na_bucket{le=\"1\"} 1\n# EOF\n").is_err(),
        "no +Inf bucket"
    );
}

#[tokio::test]
async fn ops_metrics_parse_as_prometheus_text_and_openmetrics() {
    use openstack_provisioner::metrics;
    let db = OpsDb::new().await;
    fixture(&db).await;
    // What the other parts of the worker record, with awkward label values.
    metrics::inc(
        metrics::OPENSTACK_CALLS,
        &[("service", "compute"), ("method", "POST"), ("path", "/servers"), ("status", "202")],
    );
    metrics::observe(
        metrics::OPENSTACK_DURATION,
        &[("service", "compute"), ("method", "POST"), ("status_class", "2xx")],
        0.07,
    );
    metrics::inc(metrics::RETRIES, &[("class", "transient")]);
    metrics::inc(
        metrics::DEAD_LETTERED,
        &[("queue", "provisioner.orders"), ("reason", "schema \"x\"\nline")],
    );
    metrics::observe(metrics::STEP_DURATION, &[("kind", "create"), ("step", "create_server")], 0.42);
    metrics::observe(metrics::ORDER_TO_EVENT, &[("kind", "create"), ("state", "completed")], 12.0);
    let server = Server::start(db.store.clone(), None, http::tcp_probe("amqp://127.0.0.1:5672/")).await;
    let url = format!("{}/metrics", server.base);

    // Prometheus text 0.0.4, what curl gets.
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    let parsed = openmetrics_parser::prometheus::parse_prometheus(&text);
    let exposition = parsed.unwrap_or_else(|e| panic!("{e:?}\n{text}"));
    let v = |family: &str, labels: &[(&str, &str)]| prom_value(&text, family, labels);
    assert_eq!(v("provisioner_jobs", &[("state", "queued")]), Some(1.0), "{text}");
    assert_eq!(v("provisioner_jobs", &[("state", "in_progress")]), Some(1.0), "{text}");
    assert_eq!(v("provisioner_outbox_backlog", &[]), Some(0.0), "{text}");
    assert_eq!(v("provisioner_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0), "{text}");
    assert!(v("provisioner_retries_total", &[("class", "transient")]).is_some_and(|n| n >= 1.0), "{text}");
    assert!(v("provisioner_dead_lettered_total", &[("reason", "schema \"x\"\nline")]).is_some(), "{text}");
    assert!(v("process_resident_memory_bytes", &[]).is_some_and(|n| n > 1e6), "{text}");
    assert!(v("process_open_fds", &[]).is_some_and(|n| n >= 3.0), "{text}");
    assert!(v("process_cpu_seconds_total", &[]).is_some_and(|n| n > 0.0), "{text}");
    // The histograms have buckets, cumulative and ending in +Inf = count.
    for (family, labels) in [
        ("provisioner_step_duration_seconds", vec![("step", "create_server")]),
        (
            "provisioner_openstack_request_duration_seconds",
            vec![("service", "compute"), ("status_class", "2xx")],
        ),
        ("provisioner_order_to_event_seconds", vec![("state", "completed")]),
    ] {
        let f = exposition.families.get(family).unwrap_or_else(|| panic!("{family} missing\n{text}"));
        let sample = f.iter_samples().find(|s| has_labels(s, &labels)).unwrap_or_else(|| panic!("{family}"));
        let PrometheusValue::Histogram(h) = &sample.value else { panic!("{family} is not a histogram") };
        assert!(h.buckets.len() >= 10, "{family}: {:?}", h.buckets);
        assert!(h.buckets.windows(2).all(|w| w[0].count.as_f64() <= w[1].count.as_f64()), "{family}");
        let last = h.buckets.last().unwrap();
        assert_eq!(last.upper_bound, f64::INFINITY, "{family}");
        assert_eq!(Some(last.count.as_f64() as u64), h.count, "{family}");
        assert!(h.count.unwrap_or(0) >= 1, "{family}");
    }
    assert!(text.contains("# HELP provisioner_retries_total"), "{text}");

    // OpenMetrics, what Prometheus asks for first.
    let r = client()
        .get(&url)
        .header("accept", "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let om = r.text().await.unwrap();
    let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&om);
    let exposition = parsed.unwrap_or_else(|e| panic!("{e:?}\n{om}"));
    let build = exposition.families.get("provisioner_build_info").expect("build info");
    let sample = build.iter_samples().next().expect("one build info sample");
    assert!(has_labels(sample, &[("version", env!("CARGO_PKG_VERSION"))]), "{om}");
    let steps = exposition.families.get("provisioner_step_duration_seconds").expect("step durations");
    assert!(
        steps.iter_samples().any(|s| matches!(&s.value,
            openmetrics_parser::OpenMetricsValue::Histogram(h) if h.buckets.len() >= 10)),
        "{om}"
    );
    let calls =
        exposition.families.get("provisioner_openstack_requests").expect("counter family without _total");
    assert!(calls.iter_samples().any(|s| matches!(&s.value,
        openmetrics_parser::OpenMetricsValue::Counter(c) if c.value.as_f64() >= 1.0)));
    server.stop().await;
    db.drop_db().await;
}

fn provisioner(db_url: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(args)
        .env("PROVISIONER_DATABASE_URL", db_url)
        .env("RUST_LOG", "error")
        .output()
        .expect("run provisioner")
}

#[tokio::test]
async fn ops_cli_jobs_show_and_list() {
    let db = OpsDb::new().await;
    let (failed, order) = fixture(&db).await;
    let url = db.url.clone();

    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        let order = order.clone();
        move || provisioner(&url, &["jobs", "show", &order, "--json"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let job: Value = serde_json::from_slice(&out.stdout).expect("jobs show --json prints JSON");
    assert_eq!(job["job_id"], failed.as_str());
    assert_eq!(job["error_step"], "create_server");
    assert_eq!(job["history"][0]["actor"], "intake");

    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        let failed = failed.clone();
        move || provisioner(&url, &["jobs", "show", &failed])
    })
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(text.contains("quota_exceeded at create_server: Quota exceeded for instances"), "{text}");
    assert!(text.contains("(new) -> queued/resolve"), "{text}");
    assert!(text.contains("in_progress/create_server -> rolling_back/delete_port"), "{text}");
    assert!(text.contains("+3.0s"), "{text}");

    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || provisioner(&url, &["jobs", "list", "--project", "p-demo", "--limit", "2", "--json"])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    assert!(page["next_cursor"].is_string());

    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || provisioner(&url, &["jobs", "list", "--state", "completed"])
    })
    .await
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("JOB "), "{text}");
    assert_eq!(text.lines().count(), 3, "header and two completed jobs: {text}");

    let out = tokio::task::spawn_blocking({
        let url = url.clone();
        move || provisioner(&url, &["jobs", "show", "B-nope"])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job with job id or order id \"B-nope\""));

    let out = tokio::task::spawn_blocking(move || provisioner(&url, &["jobs", "list", "--state", "done"]))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--state"));
    db.drop_db().await;
}

// ---------------------------------------------------------------------------------------------
// Admin commands, through the broker, against the worker's admin consumer.

use lapin::options::{BasicGetOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, ShortString};
use openstack_provisioner::amqp::Names;
use openstack_provisioner::amqp::admin::publish_admin;
use openstack_provisioner::config::Settings;
use openstack_provisioner::messages::{AdminCommand, AdminCommandKind};
use openstack_provisioner::startup::App;

/// A test database plus an AMQP prefix and a running worker (intake, relay, admin consumer).
struct AdminEnv {
    db: OpsDb,
    settings: Settings,
    names: Names,
    amqp: lapin::Connection,
    app: Option<App>,
}

impl AdminEnv {
    async fn new(allowed: &[&str]) -> AdminEnv {
        let db = OpsDb::new().await;
        let prefix = format!("t{:08x}.", fastrand::u32(..));
        let mut settings = Settings::default();
        settings.database.url = SecretUrl::new(&db.url);
        settings.amqp.prefix = prefix.clone();
        settings.http.addr = String::new();
        settings.engine.enabled = false;
        settings.shutdown.grace_secs = 10;
        settings.admin.allowed_users = allowed.iter().map(|s| s.to_string()).collect();
        settings.worker.id = Some(format!("ops-test-{}", &db.name[7..15]));
        let app = App::build(settings.clone()).await.expect("build the worker");
        let amqp = lapin::Connection::connect("amqp://guest:guest@127.0.0.1:5672/%2f", Default::default())
            .await
            .expect("connect to RabbitMQ");
        AdminEnv { db, names: Names::new(&prefix), settings, amqp, app: Some(app) }
    }

    /// Sends a command as `guest` (the connection's user).
    async fn send(&self, kind: AdminCommandKind, id: &str, reason: &str) {
        let cmd = AdminCommand::new(kind, id, Some(reason.to_string()));
        publish_admin(&self.amqp, &self.names, &cmd, "guest").await.expect("publish the command");
    }

    /// Publishes a raw body to the admin exchange with the given user_id (or none).
    async fn send_raw(&self, conn: &lapin::Connection, body: &[u8], user_id: Option<&str>) {
        use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
        let ch = conn.create_channel().await.unwrap();
        ch.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        let mut props = lapin::BasicProperties::default().with_content_type("application/json".into());
        if let Some(u) = user_id {
            props = props.with_user_id(u.into());
        }
        let confirm = ch
            .basic_publish(
                self.names.admin_exchange.as_str().into(),
                "admin.replay".into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                props,
            )
            .await
            .expect("publish");
        assert!(confirm.await.expect("confirm").is_ack());
        let _ = ch.close(200, "done".into()).await;
    }

    /// The dead-lettered messages so far: (kind header, error header, body).
    async fn dead(&self) -> Vec<(String, String, Vec<u8>)> {
        let ch = self.amqp.create_channel().await.unwrap();
        let mut out = Vec::new();
        while let Some(msg) = ch
            .basic_get(self.names.dead_queue.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let headers = msg.delivery.properties.headers().clone().unwrap_or_default();
            let get = |k: &str| match headers.inner().get(k) {
                Some(AMQPValue::LongString(s)) => s.to_string(),
                other => format!("{other:?}"),
            };
            out.push((
                get("x-provisioner-error-kind"),
                get("x-provisioner-error"),
                msg.delivery.data.clone(),
            ));
        }
        let _ = ch.close(200, "done".into()).await;
        out
    }

    async fn cleanup(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await.expect("the worker stops cleanly");
        }
        let ch = self.amqp.create_channel().await.unwrap();
        for q in self.names.queues() {
            let _ = ch.queue_delete(ShortString::from(q), QueueDeleteOptions::default()).await;
        }
        for x in self.names.exchanges() {
            let _ = ch.exchange_delete(ShortString::from(x), ExchangeDeleteOptions::default()).await;
        }
        let _ = self.amqp.close(200, "done".into()).await;
        self.db.drop_db().await;
    }
}

/// Polls `check` until it returns `Some`, at most `secs` seconds.
async fn wait_for<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn history_len(store: &Store, id: &str) -> usize {
    store.job_detail(id).await.unwrap().unwrap().history.len()
}

#[tokio::test]
async fn ops_admin_replay_and_cancel_record_who_and_why() {
    let env = AdminEnv::new(&["guest"]).await;
    let (failed, _) = fixture(&env.db).await;
    let store = env.db.store.clone();
    let id_of = |order: &'static str| {
        let store = store.clone();
        async move { store.job_detail(order).await.unwrap().unwrap().status.job_id }
    };
    sqlx::query("UPDATE jobs SET server_id = 'srv-x', port_id = 'port-x', step_attempts = 4 WHERE id = ?")
        .bind(&failed)
        .execute(store.pool())
        .await
        .unwrap();

    // Replay of a failed job: queued again from the start, the old error kept in its history.
    env.send(AdminCommandKind::Replay, &failed, "quota raised").await;
    let job = wait_for("the replay", 20, || async {
        let d = store.job_detail(&failed).await.unwrap().unwrap();
        (d.status.state == "queued").then_some(d)
    })
    .await;
    assert_eq!(job.status.step, "resolve");
    assert_eq!(job.step_attempts, 0);
    assert_eq!(
        (job.status.server_id.clone(), job.status.port_id.clone(), job.status.error_class.clone()),
        (None, None, None)
    );
    assert!(job.status.finished_at.is_none());
    let last = job.history.last().unwrap();
    assert_eq!(last.actor.as_deref(), Some("guest"));
    assert_eq!((last.from_state.as_deref(), last.to_state.as_str()), (Some("failed"), "queued"));
    let detail = last.detail.clone().unwrap();
    assert!(detail.contains("replay by guest: quota raised"), "{detail}");
    assert!(detail.contains("previous error: quota_exceeded at create_server"), "{detail}");

    // Replay of a job that is not failed: refused, and the refusal is in its history.
    let completed = id_of("B-ops-1").await;
    let before = history_len(&store, &completed).await;
    env.send(AdminCommandKind::Replay, "B-ops-1", "by mistake").await;
    wait_for("the refused replay", 20, || async {
        (history_len(&store, &completed).await > before).then_some(())
    })
    .await;
    let d = store.job_detail(&completed).await.unwrap().unwrap();
    assert_eq!(d.status.state, "completed");
    let detail = d.history.last().unwrap().detail.clone().unwrap();
    assert!(detail.contains("refused: the job is completed, not failed"), "{detail}");

    // Cancel of a queued job: cancelled at once, with its event in the outbox.
    let queued = id_of("B-ops-2").await;
    env.send(AdminCommandKind::Cancel, &queued, "customer withdrew").await;
    let d = wait_for("the cancel", 20, || async {
        let d = store.job_detail(&queued).await.unwrap().unwrap();
        (d.status.state == "cancelled").then_some(d)
    })
    .await;
    assert_eq!(d.status.error_class.as_deref(), Some("cancelled"));
    assert!(d.status.finished_at.is_some());
    let (key, body): (String, String) =
        sqlx::query_as("SELECT routing_key, body FROM outbox WHERE job_id = ?")
            .bind(&queued)
            .fetch_one(store.pool())
            .await
            .expect("one event in the outbox");
    assert_eq!(key, "job.cancelled");
    let event: Value = serde_json::from_str(&body).unwrap();
    openstack_provisioner::messages::Schemas::new().check_event(&event).expect("the event follows event.v1");
    assert_eq!(event["error"]["message"], "cancelled by guest: customer withdrew");

    // Cancel of a job in progress: requested; the engine rolls it back.
    let running = id_of("B-ops-4").await;
    env.send(AdminCommandKind::Cancel, "B-ops-4", "wrong flavor").await;
    let d = wait_for("the cancel request", 20, || async {
        let d = store.job_detail(&running).await.unwrap().unwrap();
        d.cancel_requested.then_some(d)
    })
    .await;
    assert_eq!(d.status.state, "in_progress");
    assert!(d.history.last().unwrap().detail.clone().unwrap().contains("cancel by guest: wrong flavor"));

    // Cancel of a finished job: refused, recorded.
    let done = id_of("B-ops-3").await;
    let before = history_len(&store, &done).await;
    env.send(AdminCommandKind::Cancel, &done, "too late").await;
    wait_for("the refused cancel", 20, || async {
        (history_len(&store, &done).await > before).then_some(())
    })
    .await;
    let d = store.job_detail(&done).await.unwrap().unwrap();
    assert_eq!(d.status.state, "completed");
    assert!(
        d.history.last().unwrap().detail.clone().unwrap().contains("refused: the job is already completed")
    );

    assert!(env.dead().await.is_empty(), "nothing was dead-lettered");
    env.cleanup().await;
}

/// A RabbitMQ user of its own for a test, deleted on drop.
struct RabbitUser(String);

impl RabbitUser {
    fn create(name: String, password: &str, write: &str) -> RabbitUser {
        let run = |args: &[&str]| {
            let out = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl");
            assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["-q", "add_user", &name, password]);
        let user = RabbitUser(name);
        run(&["-q", "set_permissions", "-p", "/", &user.0, "^$", write, "^$"]);
        user
    }
}

impl Drop for RabbitUser {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["-q", "delete_user", &self.0]).output();
    }
}

#[tokio::test]
async fn ops_admin_commands_outside_the_allow_list_change_nothing_and_are_dead_lettered() {
    let env = AdminEnv::new(&["guest"]).await;
    let (failed, _) = fixture(&env.db).await;
    let store = env.db.store.clone();
    let before = store.job_detail(&failed).await.unwrap().unwrap();

    // A real second broker user, allowed by RabbitMQ to publish to the admin exchange but not
    // in the worker's allow-list.
    let mallory_name = format!("{}-mallory", env.db.name);
    let write = format!("^{}$", regex::escape(&env.names.admin_exchange));
    let mallory = tokio::task::spawn_blocking(move || RabbitUser::create(mallory_name, "m-pass", &write))
        .await
        .unwrap();
    let url = format!("amqp://{}:m-pass@127.0.0.1:5672/%2f", mallory.0);
    let mconn = lapin::Connection::connect(&url, Default::default()).await.expect("mallory connects");
    let replay =
        serde_json::to_vec(&AdminCommand::new(AdminCommandKind::Replay, &failed, Some("let me".into())))
            .unwrap();
    env.send_raw(&mconn, &replay, Some(&mallory.0)).await;
    // No user_id at all, from an allowed connection user.
    env.send_raw(&env.amqp, &replay, None).await;
    // An allowed user, an invalid body.
    env.send_raw(&env.amqp, br#"{"command":"delete","job_id":"x"}"#, Some("guest")).await;
    // An allowed user, a job that does not exist.
    let ghost = serde_json::to_vec(&AdminCommand::new(AdminCommandKind::Cancel, "B-ghost", None)).unwrap();
    env.send_raw(&env.amqp, &ghost, Some("guest")).await;

    let mut dead = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while dead.len() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for four dead letters: {dead:?}");
        dead.extend(env.dead().await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kinds: Vec<&str> = dead.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(kinds, ["not_allowed", "no_user_id", "schema", "no_such_job"], "{dead:?}");
    assert!(dead[0].1.contains(&mallory.0), "the reason names the user: {}", dead[0].1);
    assert_eq!(dead[0].2, replay, "the dead letter carries the original body");
    assert!(dead[3].1.contains("B-ghost"), "{}", dead[3].1);

    // Nothing changed.
    let after = store.job_detail(&failed).await.unwrap().unwrap();
    assert_eq!(after, before);
    let _ = mconn.close(200, "done".into()).await;
    env.cleanup().await;
    tokio::task::spawn_blocking(move || drop(mallory)).await.unwrap();
}

#[tokio::test]
async fn ops_cli_replay_and_cancel_publish_commands() {
    let env = AdminEnv::new(&["guest"]).await;
    let (failed, _) = fixture(&env.db).await;
    let store = env.db.store.clone();
    let prefix = env.settings.amqp.prefix.clone();
    let run = |args: Vec<String>| {
        let prefix = prefix.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_provisioner"))
                .args(&args)
                .env("PROVISIONER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
                .env("PROVISIONER_AMQP_PREFIX", prefix)
                .env("RUST_LOG", "error")
                .output()
                .expect("run provisioner")
        })
    };
    let out =
        run(vec!["replay".into(), failed.clone(), "--reason".into(), "quota raised".into()]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sent replay for job id"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    wait_for("the replay", 20, || async {
        (store.job_detail(&failed).await.unwrap().unwrap().status.state == "queued").then_some(())
    })
    .await;
    let out = run(vec!["cancel".into(), "B-ops-2".into()]).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the cancel", 20, || async {
        (store.job_detail("B-ops-2").await.unwrap().unwrap().status.state == "cancelled").then_some(())
    })
    .await;
    let d = store.job_detail("B-ops-2").await.unwrap().unwrap();
    assert_eq!(d.history.last().unwrap().actor.as_deref(), Some("guest"));
    env.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// With the engine and the simulator: replay after a quota failure, cancel in flight, SIGTERM
// during a run, and the demo.

use crate::helpers::{TestEnv, settings_env, wait_until};
use openstack_provisioner::openstack::config::CloudConfig;
use openstack_provisioner::sim::{
    ACME_PROJECT_ID, DEMO_PROJECT_ID, QuotaPatch, SimConfig, SimHandle, Simulator, Timings,
};

fn sim_vars(sim: &SimHandle) -> Vec<(String, String)> {
    [
        ("OS_AUTH_URL", sim.auth_url()),
        ("OS_USERNAME", "provisioner".to_string()),
        ("OS_PASSWORD", "provisioner".to_string()),
        ("OS_PROJECT_NAME", "demo".to_string()),
        ("OS_USER_DOMAIN_NAME", "Default".to_string()),
        ("OS_PROJECT_DOMAIN_NAME", "Default".to_string()),
        ("OS_REGION_NAME", "RegionOne".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A worker in-process with the engine on, against `sim`, allowing `guest` admin commands.
async fn engine_app(env: &TestEnv, sim: &SimHandle) -> App {
    let mut settings = env.settings.clone();
    settings.engine.enabled = true;
    settings.engine.backoff_base_ms = 50;
    settings.engine.poll_interval_ms = 50;
    settings.admin.allowed_users = vec!["guest".into()];
    let vars: HashMap<String, String> = sim_vars(sim).into_iter().collect();
    let cloud = CloudConfig::from_vars(&vars).unwrap().expect("a cloud");
    App::build_with_cloud(settings, Some(cloud)).await.expect("build the worker")
}

fn order(order_id: &str, project: &str, volume_gb: Option<u32>) -> Vec<u8> {
    let mut body = serde_json::json!({
        "order_id": order_id,
        "project_id": project,
        "server": {"name": format!("vm-{order_id}"), "flavor": "m1.tiny", "image": "cirros-0.6.2", "network": "private"}
    });
    if let Some(gb) = volume_gb {
        body["volume"] = serde_json::json!({"size_gb": gb});
    }
    body.to_string().into_bytes()
}

async fn send_as_guest(env: &TestEnv, kind: AdminCommandKind, id: &str, reason: &str) {
    let cmd = AdminCommand::new(kind, id, Some(reason.to_string()));
    publish_admin(&env.amqp, &env.names, &cmd, "guest").await.expect("publish the command");
}

async fn state_of(store: &Store, id: &str) -> Option<openstack_provisioner::store::status::JobDetail> {
    store.job_detail(id).await.unwrap()
}

/// Live (not deleted) servers, ports and volumes of a project, and attached volumes.
fn live(sim: &SimHandle, project: &str) -> (usize, usize, usize, usize) {
    let r = sim.control().resources();
    let p = r.projects.get(project).cloned().unwrap_or_default();
    let n = |m: &std::collections::BTreeMap<String, usize>| m.values().sum::<usize>();
    (n(&p.servers), n(&p.ports), n(&p.volumes), p.attached_volumes)
}

#[tokio::test]
async fn ops_replay_of_a_quota_failed_job_completes_after_the_quota_is_raised() {
    let env = TestEnv::new().await;
    let sim = Simulator::start(SimConfig::for_tests()).await.unwrap();
    let app = engine_app(&env, &sim).await;
    let store = env.store.clone();

    // 50 GB is over acme's 20 GB: the job fails and rolls back what it created.
    env.publish(&order("B-quota-1", ACME_PROJECT_ID, Some(50))).await;
    wait_until(Duration::from_secs(30), "the job failed", || async {
        state_of(&store, "B-quota-1").await.is_some_and(|d| d.status.state == "failed")
    })
    .await;
    let failed = state_of(&store, "B-quota-1").await.unwrap();
    assert_eq!(failed.status.error_class.as_deref(), Some("quota_exceeded"));
    assert_eq!(live(&sim, ACME_PROJECT_ID), (0, 0, 0, 0), "the rollback left nothing");

    sim.control()
        .set_quotas(ACME_PROJECT_ID, QuotaPatch { gigabytes: Some(100), ..Default::default() })
        .unwrap();
    send_as_guest(&env, AdminCommandKind::Replay, "B-quota-1", "quota raised to 100 GB").await;
    wait_until(Duration::from_secs(30), "the replayed job completed", || async {
        state_of(&store, "B-quota-1").await.is_some_and(|d| d.status.state == "completed")
    })
    .await;
    let done = state_of(&store, "B-quota-1").await.unwrap();
    assert_eq!(done.status.job_id, failed.status.job_id, "the same job");
    assert!(done.status.server_id.is_some() && done.status.volume_id.is_some());
    assert_eq!(live(&sim, ACME_PROJECT_ID), (1, 1, 1, 1), "one server, port and attached volume");
    let details: Vec<String> = done.history.iter().filter_map(|h| h.detail.clone()).collect();
    assert!(details.iter().any(|d| d.contains("replay by guest: quota raised to 100 GB")), "{details:?}");
    // The failure and the completion were both told to billing.
    let kinds: Vec<String> =
        sqlx::query_scalar("SELECT routing_key FROM outbox WHERE job_id = ? ORDER BY id")
            .bind(&done.status.job_id)
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(kinds, ["job.failed", "job.completed"]);
    // The engine's transitions show in the process metrics served by /metrics.
    use openstack_provisioner::metrics;
    assert!(metrics::counter_sum(metrics::STEP_RUNS, &[("kind", "create"), ("step", "create_port")]) >= 2);
    assert!(metrics::counter_sum(metrics::JOBS_FINISHED, &[("state", "failed")]) >= 1);
    assert!(metrics::counter_sum(metrics::JOBS_FINISHED, &[("state", "completed")]) >= 1);
    let text = metrics::render();
    assert!(
        text.contains("provisioner_step_duration_seconds_bucket{kind=\"create\",step=\"create_port\""),
        "{text}"
    );
    app.stop().await.unwrap();
    sim.shutdown().await;
    env.cleanup().await;
}

#[tokio::test]
async fn ops_cancel_of_an_in_progress_job_leaves_nothing_in_the_cloud() {
    let env = TestEnv::new().await;
    // Slow boots: the job is waiting for its server when the cancel arrives.
    let sim = Simulator::start(SimConfig {
        timings: Timings { boot_mean_ms: 30_000, boot_jitter_ms: 0, ..Timings::fast() },
        ..SimConfig::for_tests()
    })
    .await
    .unwrap();
    let app = engine_app(&env, &sim).await;
    let store = env.store.clone();
    env.publish(&order("B-cancel-1", DEMO_PROJECT_ID, Some(1))).await;
    wait_until(Duration::from_secs(30), "the server was created", || async {
        state_of(&store, "B-cancel-1").await.is_some_and(|d| d.status.server_id.is_some())
    })
    .await;
    assert_eq!(live(&sim, DEMO_PROJECT_ID).0, 1, "a server is booting");

    send_as_guest(&env, AdminCommandKind::Cancel, "B-cancel-1", "customer withdrew").await;
    wait_until(Duration::from_secs(30), "the job is cancelled", || async {
        state_of(&store, "B-cancel-1").await.is_some_and(|d| d.status.state == "cancelled")
    })
    .await;
    let d = state_of(&store, "B-cancel-1").await.unwrap();
    assert_eq!(d.status.error_class.as_deref(), Some("cancelled"));
    assert_eq!(live(&sim, DEMO_PROJECT_ID), (0, 0, 0, 0), "nothing left behind");
    let kinds: Vec<String> = sqlx::query_scalar("SELECT routing_key FROM outbox WHERE job_id = ?")
        .bind(&d.status.job_id)
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(kinds, ["job.cancelled"]);
    assert!(d.history.iter().any(|h| h.actor.as_deref() == Some("guest")));
    app.stop().await.unwrap();
    sim.shutdown().await;
    env.cleanup().await;
}

/// `provisioner run` as a child process against the simulator.
fn spawn_worker(settings: &Settings, sim: &SimHandle, name: &str) -> tokio::process::Child {
    let log = std::env::temp_dir().join(format!("{}{name}.log", settings.amqp.prefix));
    let file = std::fs::File::create(&log).expect("worker log");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "warn,lapin=error")
        .envs(settings_env(settings))
        .envs(sim_vars(sim))
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start the worker")
}

// Acceptance 3 of the operations issue. It found a double drive in the engine (the poller took up a
// job that the same worker had meanwhile claimed by its recheck, and both drove it under the same
// fence: 12 of 500 jobs completed twice); fixed in `Store::claim_exact`.
#[tokio::test]
async fn ops_sigterm_during_500_jobs_exits_in_grace_and_a_restart_completes_each_once() {
    const JOBS: usize = 500;
    let env = TestEnv::new().await;
    let sim = Simulator::start(SimConfig::for_tests()).await.unwrap();
    let mut settings = env.settings.clone();
    settings.engine.enabled = true;
    settings.shutdown.grace_secs = 10;
    settings.worker.id = Some(format!("{}a", env.prefix));
    let store = env.store.clone();
    let count = |sql: &'static str| {
        let store = store.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(store.pool()).await.unwrap() }
    };

    // Billing's event queue, bound before anything runs (unroutable events wait in the outbox).
    let events_queue = env
        .channel
        .queue_declare(
            ShortString::from(""),
            lapin::options::QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    env.channel
        .queue_bind(
            events_queue.name().clone(),
            ShortString::from(env.names.events_exchange.as_str()),
            ShortString::from("job.#"),
            Default::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();

    let mut worker = spawn_worker(&settings, &sim, "a");
    let bodies: Vec<Vec<u8>> = (0..JOBS)
        .map(|i| order(&format!("B-term-{i:04}"), DEMO_PROJECT_ID, (i % 2 == 0).then_some(1)))
        .collect();
    env.publish_all(&bodies).await;
    wait_until(Duration::from_secs(60), "some jobs completed", || async {
        count("SELECT COUNT(*) FROM jobs WHERE state = 'completed'").await >= 25
    })
    .await;

    let pid = worker.id().expect("the worker runs").to_string();
    let signalled = Instant::now();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(settings.shutdown.grace_secs + 5), worker.wait())
        .await
        .expect("the worker exits within the grace period")
        .unwrap();
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status:?}");
    assert!(took <= Duration::from_secs(settings.shutdown.grace_secs + 2), "took {took:?}");
    let done_at_stop = count("SELECT COUNT(*) FROM jobs WHERE state = 'completed'").await;
    let leased =
        count("SELECT COUNT(*) FROM jobs WHERE lease_owner IS NOT NULL AND lease_expires_at > NOW(6)").await;
    eprintln!("SIGTERM: exited in {took:?}; {done_at_stop} of {JOBS} completed; {leased} leases still held");

    settings.worker.id = Some(format!("{}b", env.prefix));
    let mut worker = spawn_worker(&settings, &sim, "b");
    wait_until(Duration::from_secs(180), "every job completed", || async {
        count("SELECT COUNT(*) FROM jobs WHERE state = 'completed'").await == JOBS as i64
    })
    .await;
    wait_until(Duration::from_secs(30), "every event relayed", || async {
        count("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await == 0
    })
    .await;
    // Exactly once: one server and one port per job, one volume per job that ordered one, and
    // exactly one completion event per job.
    assert_eq!(count("SELECT COUNT(*) FROM jobs").await, JOBS as i64);
    let resources = live(&sim, DEMO_PROJECT_ID);
    let doubled: Vec<(String, i64)> = sqlx::query_as(
        "SELECT job_id, COUNT(*) FROM outbox WHERE routing_key = 'job.completed' GROUP BY job_id HAVING COUNT(*) > 1",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    if let Some((job, _)) = doubled.first() {
        let h = store.job_detail(job).await.unwrap().unwrap();
        for e in &h.history {
            eprintln!("  {:?}", e);
        }
        let rows: Vec<(String, String, chrono::DateTime<chrono::Utc>)> =
            sqlx::query_as("SELECT event_id, body, created_at FROM outbox WHERE job_id = ?")
                .bind(job)
                .fetch_all(store.pool())
                .await
                .unwrap();
        eprintln!("  outbox: {rows:?}");
    }
    assert!(
        doubled.is_empty() && resources == (JOBS, JOBS, JOBS / 2, JOBS / 2),
        "not exactly once: {} jobs have more than one completion event; the cloud holds \
         (servers, ports, volumes, attached) = {resources:?} for {JOBS} jobs, half with a volume",
        doubled.len()
    );
    assert_eq!(count("SELECT COUNT(*) FROM outbox WHERE routing_key = 'job.completed'").await, JOBS as i64);
    assert_eq!(count("SELECT COUNT(DISTINCT job_id) FROM outbox").await, JOBS as i64);
    // What billing received: a completion event for every job (a re-sent one keeps its id).
    let mut by_job: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    while let Some(msg) =
        env.channel.basic_get(events_queue.name().clone(), BasicGetOptions { no_ack: true }).await.unwrap()
    {
        let event: Value = serde_json::from_slice(&msg.delivery.data).unwrap();
        assert_eq!(event["type"], "job.completed");
        by_job
            .entry(event["job_id"].as_str().unwrap().to_string())
            .or_default()
            .insert(event["event_id"].as_str().unwrap().to_string());
    }
    assert_eq!(by_job.len(), JOBS, "an event for every job");
    assert!(by_job.values().all(|ids| ids.len() == 1), "one event id per job");
    let _ = Command::new("kill").args(["-TERM", &worker.id().unwrap().to_string()]).status();
    let _ = tokio::time::timeout(Duration::from_secs(20), worker.wait()).await;
    sim.shutdown().await;
    env.cleanup().await;
}

#[tokio::test]
async fn ops_demo_finishes_with_the_expected_outcomes() {
    let env = TestEnv::new().await;
    let place = openstack_provisioner::ops::demo::DemoPlace {
        database: env.db_name.clone(),
        prefix: env.prefix.clone(),
        timings: Timings::fast(),
    };
    let started = Instant::now();
    let result = openstack_provisioner::ops::demo::run_demo(
        env.settings.clone(),
        &openstack_provisioner::cli::DemoArgs { extra: 6 },
        place,
    )
    .await;
    assert!(result.is_ok(), "{:?}", result.err());
    assert!(started.elapsed() < Duration::from_secs(30), "the demo took {:?}", started.elapsed());
    // The demo's jobs are in its database, each in its expected final state.
    let store = Store::connect(&env.settings.database).await.unwrap();
    let page = store.list_jobs(&JobFilter { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(page.jobs.len(), 14);
    let outcome = |order: &str| {
        let j = page.jobs.iter().find(|j| j.order_id == order).unwrap();
        (j.state.clone(), j.error_class.clone())
    };
    assert_eq!(outcome("DEMO-0001"), ("completed".into(), None));
    assert_eq!(outcome("DEMO-0003"), ("failed".into(), Some("quota_exceeded".into())));
    assert_eq!(outcome("DEMO-0004"), ("failed".into(), Some("not_found".into())));
    assert_eq!(outcome("DEMO-0005"), ("completed".into(), None), "the suspend");
    assert_eq!(outcome("DEMO-0006"), ("completed".into(), None), "the terminate");
    assert_eq!(outcome("DEMO-T001"), ("completed".into(), None), "the tenant");
    assert_eq!(outcome("DEMO-T002"), ("completed".into(), None), "the tenant's server");
    let tenant: String = sqlx::query_scalar("SELECT state FROM tenant_status WHERE tenant_ref = 'CUST-0001'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(tenant, "active");
    let services: Vec<(String, String)> = sqlx::query_as(
        "SELECT target_order_id, state FROM service_status WHERE target_order_id IN ('DEMO-0001', 'DEMO-0002') \
         ORDER BY target_order_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let expected = [("DEMO-0001", "terminated"), ("DEMO-0002", "suspended")];
    assert_eq!(services, expected.map(|(a, b)| (a.to_string(), b.to_string())).to_vec());
    store.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn ops_demo_says_how_to_start_missing_services() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let run = |db: String, amqp: String| {
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_provisioner"))
                .arg("demo")
                .env("PROVISIONER_DATABASE_URL", db)
                .env("PROVISIONER_AMQP_URL", amqp)
                .output()
                .expect("run provisioner demo")
        })
    };
    let out =
        run(format!("mysql://root@127.0.0.1:{closed}/x"), "amqp://guest:guest@127.0.0.1:5672/%2f".into())
            .await
            .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("MariaDB/MySQL is not reachable at 127.0.0.1:{closed}")), "{err}");
    assert!(err.contains("Start MariaDB or MySQL"), "{err}");
    let out =
        run("mysql://root@127.0.0.1:3306/x".into(), format!("amqp://guest:guest@127.0.0.1:{closed}/%2f"))
            .await
            .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("RabbitMQ is not reachable at 127.0.0.1:{closed}")), "{err}");
    assert!(err.contains("Start RabbitMQ"), "{err}");
}

#[tokio::test]
async fn ops_a_second_signal_exits_at_once_and_a_restart_still_completes_each_once() {
    const JOBS: usize = 200;
    let env = TestEnv::new().await;
    let sim = Simulator::start(SimConfig::for_tests()).await.unwrap();
    let mut settings = env.settings.clone();
    settings.engine.enabled = true;
    settings.engine.lease_secs = 3;
    settings.shutdown.grace_secs = 30;
    settings.worker.id = Some(format!("{}a", env.prefix));
    let store = env.store.clone();
    let count = |sql: &'static str| {
        let store = store.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(store.pool()).await.unwrap() }
    };
    let mut worker = spawn_worker(&settings, &sim, "a");
    let bodies: Vec<Vec<u8>> =
        (0..JOBS).map(|i| order(&format!("B-twice-{i:04}"), DEMO_PROJECT_ID, None)).collect();
    env.publish_all(&bodies).await;
    wait_until(Duration::from_secs(60), "some jobs completed", || async {
        count("SELECT COUNT(*) FROM jobs WHERE state = 'completed'").await >= 10
    })
    .await;
    let pid = worker.id().expect("the worker runs").to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = Instant::now();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), worker.wait())
        .await
        .expect("the worker exits after the second signal")
        .unwrap();
    let took = second.elapsed();
    // Either the first signal's shutdown had already finished (0), or the second cut it short.
    assert!(matches!(status.code(), Some(130) | Some(0)), "exit status {status:?}");
    assert!(took < Duration::from_secs(3), "exited {took:?} after the second signal");
    eprintln!("second signal: exit {:?} after {took:?}", status.code());

    // Whatever the cut left (leases expire after 3 s), another worker finishes, exactly once.
    settings.worker.id = Some(format!("{}b", env.prefix));
    let mut worker = spawn_worker(&settings, &sim, "b");
    wait_until(Duration::from_secs(120), "every job completed", || async {
        count("SELECT COUNT(*) FROM jobs WHERE state = 'completed'").await == JOBS as i64
    })
    .await;
    assert_eq!(live(&sim, DEMO_PROJECT_ID), (JOBS, JOBS, 0, 0));
    assert_eq!(count("SELECT COUNT(*) FROM outbox WHERE routing_key = 'job.completed'").await, JOBS as i64);
    let _ = Command::new("kill").args(["-TERM", &worker.id().unwrap().to_string()]).status();
    let _ = tokio::time::timeout(Duration::from_secs(20), worker.wait()).await;
    sim.shutdown().await;
    env.cleanup().await;
}
