//! Tests: operations. Job status from the store, over HTTP and from the CLI binary; `/metrics` as
//! Prometheus text; the bearer token; health and readiness.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

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
        let state = HttpState { store, token: token.map(Secret::new), broker };
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

/// Checks the Prometheus text exposition format: comments, families declared before their
/// samples, sample names belonging to their family, well-formed labels and numeric values.
/// Returns the samples as `name{labels}` → value.
pub fn parse_prometheus(text: &str) -> Result<HashMap<String, f64>, String> {
    let name_re = regex::Regex::new(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$").unwrap();
    let sample_re = regex::Regex::new(
        r#"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})? (\S+)( -?\d+)?$"#,
    )
    .unwrap();
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("TYPE"), Some(name), Some(kind)) => {
                    if !name_re.is_match(name) {
                        return Err(at("bad metric name"));
                    }
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(at("bad type"));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("family declared twice"));
                    }
                }
                (Some("HELP"), Some(name), _) if name_re.is_match(name) => {}
                _ => return Err(at("bad comment")),
            }
            continue;
        }
        let caps = sample_re.captures(line).ok_or_else(|| at("not a sample"))?;
        let name = &caps[1];
        let family = types
            .iter()
            .find(|(f, kind)| {
                name == f.as_str()
                    || (kind.as_str() == "histogram"
                        && [format!("{f}_bucket"), format!("{f}_sum"), format!("{f}_count")]
                            .iter()
                            .any(|s| s == name))
            })
            .ok_or_else(|| at("sample before its # TYPE"))?;
        if family.1 == "histogram"
            && name.ends_with("_bucket")
            && !caps.get(3).is_some_and(|l| l.as_str().contains("le=\""))
        {
            return Err(at("bucket without le"));
        }
        let value = match &caps[4] {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse::<f64>().map_err(|_| at("value is not a number"))?,
        };
        let key = format!("{name}{}", caps.get(2).map(|m| m.as_str()).unwrap_or(""));
        if samples.insert(key, value).is_some() {
            return Err(at("duplicate sample"));
        }
    }
    Ok(samples)
}

#[test]
fn ops_prometheus_checker_rejects_malformed_text() {
    assert!(parse_prometheus("# TYPE a counter\na 1\n").is_ok());
    assert!(parse_prometheus("a 1\n").is_err(), "sample without TYPE");
    assert!(parse_prometheus("# TYPE a counter\na{x=\"1} 1\n").is_err(), "unterminated label");
    assert!(parse_prometheus("# TYPE a counter\na one\n").is_err(), "non-numeric value");
    assert!(parse_prometheus("# TYPE a gauge\na_bucket{le=\"1\"} 1\n").is_err(), "bucket of a gauge");
}

#[tokio::test]
async fn ops_metrics_parse_as_prometheus_text() {
    use openstack_provisioner::metrics;
    let db = OpsDb::new().await;
    fixture(&db).await;
    // What the other parts of the worker record, with awkward label values.
    metrics::inc(
        metrics::OPENSTACK_CALLS,
        &[("service", "compute"), ("method", "POST"), ("path", "/servers"), ("status", "202")],
    );
    metrics::inc(metrics::RETRIES, &[("class", "transient")]);
    metrics::inc(
        metrics::DEAD_LETTERED,
        &[("queue", "provisioner.orders"), ("reason", "schema \"x\"\nline")],
    );
    metrics::observe(metrics::STEP_DURATION, &[("kind", "create"), ("step", "create_server")], 0.42);
    let server = Server::start(db.store.clone(), None, http::tcp_probe("amqp://127.0.0.1:5672/")).await;
    let r = client().get(format!("{}/metrics", server.base)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    let samples = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(samples.get("provisioner_jobs{state=\"queued\"}"), Some(&1.0), "{text}");
    assert_eq!(samples.get("provisioner_jobs{state=\"in_progress\"}"), Some(&1.0), "{text}");
    assert_eq!(samples.get("provisioner_outbox_backlog"), Some(&0.0), "{text}");
    assert!(samples.keys().any(|k| k.starts_with("provisioner_step_duration_seconds_bucket")), "{text}");
    assert!(text.contains("# HELP provisioner_retries_total"), "{text}");
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
