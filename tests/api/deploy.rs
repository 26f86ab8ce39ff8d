//! Tests: deploy/. What can be checked without a container engine: every YAML and JSON file
//! parses and says what the docs promise (health checks, replicas, grace periods, non-root); the
//! systemd unit passes `systemd-analyze verify`; the RabbitMQ definitions, loaded into a vhost of
//! their own on the local broker, grant each user exactly what it needs; the MySQL scripts, run
//! against the local MariaDB, give the worker its schema and the status reader the view only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn deploy_every_yaml_and_json_file_parses() {
    let mut all = Vec::new();
    files(&deploy_dir(), &mut all);
    let mut parsed = 0;
    for path in &all {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                let docs = yaml_docs(path);
                assert!(!docs.is_empty() && docs.iter().all(|d| d.is_object()), "{}", path.display());
                parsed += 1;
            }
            Some("json") => {
                read_json(path);
                parsed += 1;
            }
            _ => {}
        }
    }
    assert!(parsed >= 5, "expected compose, k8s and definitions files, parsed {parsed}");
}

/// The metric families an expression names (histogram series map to their family).
fn metrics_named(expr: &str) -> Vec<String> {
    let re = regex::Regex::new(r"\b(provisioner|process)_[a-z_]+").unwrap();
    re.find_iter(expr)
        .map(|m| {
            let n = m.as_str();
            ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| n.strip_suffix(s).filter(|f| f.ends_with("_seconds")))
                .unwrap_or(n)
                .to_string()
        })
        .collect()
}

fn exposed(name: &str) -> bool {
    const PROCESS: &[&str] = &[
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
        "process_start_time_seconds",
    ];
    openstack_provisioner::metrics::DEFS.iter().any(|d| d.name == name) || PROCESS.contains(&name)
}

/// The alert rules and the dashboard name only metrics the worker exposes, and the alerts the
/// docs promise are there (failures by class, outbox backlog, dead letters, stuck jobs).
#[test]
fn deploy_alerts_and_dashboard_use_only_exposed_metrics() {
    let rules = yaml_docs(&deploy_dir().join("prometheus/alerts.yaml"));
    let mut alerts = Vec::new();
    for group in rules[0]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["alert"].as_str().expect("an alert name");
            let expr = rule["expr"].as_str().expect("an expr");
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            assert!(rule["annotations"]["summary"].is_string(), "{name}: summary");
            for m in metrics_named(expr) {
                assert!(exposed(&m), "{name} uses {m}, which the worker does not expose");
            }
            alerts.push(name.to_string());
        }
    }
    for want in [
        "ProvisionerJobsFailing",
        "ProvisionerOutboxBacklog",
        "ProvisionerDeadLetters",
        "ProvisionerJobsStuck",
    ] {
        assert!(alerts.iter().any(|a| a == want), "{want} missing from {alerts:?}");
    }
    let dash = read_json(&deploy_dir().join("grafana/provisioner.json"));
    let panels = dash["panels"].as_array().expect("panels");
    let mut exprs = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        for t in p["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            for m in metrics_named(expr) {
                assert!(exposed(&m), "panel {} uses {m}, which the worker does not expose", p["title"]);
            }
            exprs += 1;
        }
    }
    assert!(exprs >= 15, "{exprs} queries");
}

#[test]
fn deploy_compose_has_health_checks_replicas_and_grace() {
    let compose = &yaml_docs(&deploy_dir().join("compose.yaml"))[0];
    let services = compose["services"].as_object().unwrap();
    for name in ["mysql", "rabbitmq", "sim", "worker"] {
        let svc = &services[name];
        assert!(svc["healthcheck"]["test"].is_array(), "{name} has a health check");
    }
    assert!(services["mysql"]["image"].as_str().unwrap().starts_with("mysql:8"));
    assert!(services["rabbitmq"]["image"].as_str().unwrap().contains("management"));
    let worker = &services["worker"];
    assert_eq!(worker["deploy"]["replicas"], 2);
    assert_eq!(worker["image"], "openstack-provisioner:local", "merge key expanded");
    let env = worker["environment"].as_object().unwrap();
    let grace: u64 = env["PROVISIONER_SHUTDOWN_GRACE_SECS"].as_str().unwrap().parse().unwrap();
    let stop: u64 = worker["stop_grace_period"].as_str().unwrap().trim_end_matches('s').parse().unwrap();
    assert!(stop > grace, "stop_grace_period {stop}s must exceed the shutdown grace {grace}s");
    // A worker bound beyond loopback refuses to start without a token.
    assert!(env.contains_key("PROVISIONER_HTTP_TOKEN"));
    // Every PROVISIONER_* variable it sets is a real setting.
    let unknown = openstack_provisioner::config::Settings::unknown_env_vars(env.keys().cloned());
    assert!(unknown.is_empty(), "unknown settings in compose: {unknown:?}");
    // Every command given to our image is one the binary accepts.
    use clap::Parser as _;
    for (name, svc) in services {
        if svc["image"] == "openstack-provisioner:local" {
            let mut argv = vec!["provisioner".to_string()];
            argv.extend(svc["command"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()));
            openstack_provisioner::cli::Cli::try_parse_from(&argv)
                .unwrap_or_else(|e| panic!("compose service {name}: {argv:?}: {e}"));
        }
    }
    // The worker's OS_* variables make a cloud configuration.
    let vars: std::collections::HashMap<String, String> =
        env.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect();
    let cloud = openstack_provisioner::openstack::config::CloudConfig::from_vars(&vars).unwrap();
    assert!(cloud.is_some_and(|c| c.auth_url == "http://sim:5000/identity/v3"));
    // The worker connects to the vhost and as the user that definitions.json declares.
    let defs = read_json(&deploy_dir().join("rabbitmq/definitions.json"));
    let amqp = env["PROVISIONER_AMQP_URL"].as_str().unwrap();
    assert!(amqp.ends_with(&format!("/{}", defs["vhosts"][0]["name"].as_str().unwrap())), "{amqp}");
    assert!(amqp.contains("provisioner-worker:"), "{amqp}");
}

#[test]
fn deploy_kubernetes_probes_and_termination_grace() {
    let dir = deploy_dir().join("k8s");
    let docs = yaml_docs(&dir.join("deployment.yaml"));
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("a Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let config = &yaml_docs(&dir.join("configmap.yaml"))[0];
    assert_eq!(config["kind"], "ConfigMap");
    let grace: u64 = config["data"]["PROVISIONER_SHUTDOWN_GRACE_SECS"].as_str().unwrap().parse().unwrap();
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(termination > grace, "terminationGracePeriodSeconds {termination} must exceed {grace}");
    let secret = &yaml_docs(&dir.join("secret.yaml"))[0];
    assert_eq!(secret["kind"], "Secret");
    assert!(secret["stringData"]["PROVISIONER_HTTP_TOKEN"].is_string(), "0.0.0.0 needs a token");
    let names = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let mut vars = names(&config["data"]);
    vars.extend(names(&secret["stringData"]));
    let unknown = openstack_provisioner::config::Settings::unknown_env_vars(vars);
    assert!(unknown.is_empty(), "unknown settings in k8s: {unknown:?}");
}

#[test]
fn deploy_dockerfile_is_multi_stage_and_non_root() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let froms = text.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(froms >= 2, "multi-stage");
    let user = text.lines().rev().find_map(|l| l.strip_prefix("USER ")).expect("a USER line");
    assert!(!user.starts_with("root") && !user.starts_with('0'), "runs as {user}");
    // The build needs no sqlx offline data: no compile-time checked query macros in the crate.
    let mut sources = Vec::new();
    files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut sources);
    for path in sources {
        let code = std::fs::read_to_string(&path).unwrap();
        for mac in ["sqlx::query!(", "sqlx::query_as!(", "sqlx::query_scalar!(", "query_file!("] {
            assert!(
                !code.contains(mac),
                "{} uses {mac}: the Dockerfile would need .sqlx offline data",
                path.display()
            );
        }
    }
}

#[test]
fn deploy_systemd_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("SKIPPED: systemd-analyze is not installed; the unit file was not verified");
        return;
    }
    // Verify the unit as shipped, but with the binary that exists here and an optional env file.
    let text = std::fs::read_to_string(deploy_dir().join("systemd/provisioner.service")).unwrap();
    let text = text
        .replace("/usr/local/bin/provisioner", env!("CARGO_BIN_EXE_provisioner"))
        .replace("EnvironmentFile=/", "EnvironmentFile=-/");
    let dir = std::env::temp_dir().join(format!("prov-unit-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("provisioner.service");
    std::fs::write(&unit, text).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "systemd-analyze verify failed: {stderr}");
    // Unknown or misspelt keys are only warnings to systemd: treat them as failures here.
    for bad in ["Unknown key", "Unknown section", "Failed to parse", "Invalid"] {
        assert!(!stderr.contains(bad), "systemd-analyze verify: {stderr}");
    }
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ definitions, loaded into a vhost of their own.

/// The development passwords of the shipped definitions (docs/deploy.md says to change them).
const WORKER_PASSWORD: &str = "change-me-worker";
const BILLING_PASSWORD: &str = "change-me-billing";
const OPERATOR_PASSWORD: &str = "change-me-operator";

/// A vhost and users created from definitions.json; deleted on drop, even if the test fails.
struct LoadedDefinitions {
    vhost: String,
    users: Vec<String>,
}

impl LoadedDefinitions {
    fn user(&self, name: &str) -> String {
        format!("{}-{name}", self.vhost)
    }
}

impl Drop for LoadedDefinitions {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["-q", "delete_vhost", &self.vhost]).output();
        for user in &self.users {
            let _ = Command::new("rabbitmqctl").args(["-q", "delete_user", user]).output();
        }
    }
}

/// Rewrites definitions.json for a test vhost (and test-specific user names), then imports it
/// with rabbitmqctl (the management API is not enabled on the shared broker, and
/// `import_definitions` cannot retarget a vhost by itself).
fn load_definitions() -> LoadedDefinitions {
    let vhost = format!("prov_t_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut defs = read_json(&deploy_dir().join("rabbitmq/definitions.json"));
    let shipped_vhost = defs["vhosts"][0]["name"].as_str().unwrap().to_string();
    let rename = |user: &str| format!("{vhost}-{user}");
    let mut users = Vec::new();
    for section in ["vhosts", "permissions", "exchanges", "queues", "bindings", "policies"] {
        for item in defs[section].as_array_mut().unwrap() {
            for key in ["name", "vhost"] {
                if (section == "vhosts" || key == "vhost") && item[key] == shipped_vhost.as_str() {
                    item[key] = vhost.clone().into();
                }
            }
            if section == "permissions" {
                let user = item["user"].as_str().unwrap().to_string();
                item["user"] = rename(&user).into();
            }
        }
    }
    for user in defs["users"].as_array_mut().unwrap() {
        let name = rename(user["name"].as_str().unwrap());
        users.push(name.clone());
        user["name"] = name.into();
    }
    let loaded = LoadedDefinitions { vhost: vhost.clone(), users };
    let file = std::env::temp_dir().join(format!("{vhost}-definitions.json"));
    std::fs::write(&file, serde_json::to_vec(&defs).unwrap()).unwrap();
    let out = Command::new("rabbitmqctl").arg("import_definitions").arg(&file).output().expect("rabbitmqctl");
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "rabbitmqctl import_definitions: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    loaded
}

async fn connect(loaded: &LoadedDefinitions, user: &str, password: &str) -> Connection {
    let url = format!("amqp://{}:{password}@127.0.0.1:5672/{}", loaded.user(user), loaded.vhost);
    tokio::time::timeout(Duration::from_secs(10), Connection::connect(&url, ConnectionProperties::default()))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"))
}

/// Publishes one message on a fresh confirm-mode channel; `Err` holds the broker's refusal.
async fn publish(conn: &Connection, exchange: &str, key: &str, props: BasicProperties) -> Result<(), String> {
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.confirm_select(ConfirmSelectOptions::default()).await.map_err(|e| e.to_string())?;
    let confirm = ch
        .basic_publish(
            ShortString::from(exchange),
            ShortString::from(key),
            BasicPublishOptions::default(),
            br#"{"probe":true}"#,
            props,
        )
        .await
        .map_err(|e| e.to_string())?;
    let result =
        tokio::time::timeout(Duration::from_secs(10), confirm).await.map_err(|_| "no confirm".to_string())?;
    match result {
        Ok(c) if c.is_ack() => Ok(()),
        Ok(c) => Err(format!("not acked: {c:?}")),
        Err(e) => Err(e.to_string()),
    }
}

async fn get_one(conn: &Connection, queue: &str) -> Result<Option<lapin::message::BasicGetMessage>, String> {
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.basic_get(ShortString::from(queue), BasicGetOptions { no_ack: true }).await.map_err(|e| e.to_string())
}

fn refused(result: Result<impl std::fmt::Debug, String>, what: &str) {
    match result {
        Err(e) => assert!(e.contains("ACCESS_REFUSED") || e.contains("access to"), "{what}: {e}"),
        Ok(v) => panic!("{what} was allowed: {v:?}"),
    }
}

#[tokio::test]
async fn deploy_rabbitmq_definitions_grant_least_privilege() {
    if Command::new("rabbitmqctl").arg("--help").output().is_err() {
        panic!("rabbitmqctl is needed to load the definitions into the local broker");
    }
    let loaded = tokio::task::spawn_blocking(load_definitions).await.unwrap();
    let worker = connect(&loaded, "provisioner-worker", WORKER_PASSWORD).await;
    let billing = connect(&loaded, "billing", BILLING_PASSWORD).await;
    let operator = connect(&loaded, "operator", OPERATOR_PASSWORD).await;

    // The worker declares its whole topology (the code it runs at startup) against the
    // pre-loaded definitions: same arguments (else PRECONDITION_FAILED) and enough permissions
    // (else ACCESS_REFUSED).
    let ch = worker.create_channel().await.unwrap();
    let names = openstack_provisioner::amqp::Names::new("");
    openstack_provisioner::amqp::topology::declare(
        &ch,
        &names,
        openstack_provisioner::config::QueueType::Quorum,
    )
    .await
    .unwrap_or_else(|e| panic!("the worker declares its topology: {e}"));

    let json =
        || BasicProperties::default().with_content_type("application/json".into()).with_delivery_mode(2);

    // Billing: publishes orders, and nothing else.
    publish(&billing, "billing.orders", "order.create", json()).await.expect("billing publishes an order");
    let order = get_one(&worker, "provisioner.orders").await.unwrap();
    assert!(order.is_some(), "the order reached provisioner.orders");
    refused(
        publish(&billing, "provisioner.admin", "admin.cancel", json()).await,
        "billing → provisioner.admin",
    );
    refused(publish(&billing, "provisioning.events", "job.completed", json()).await, "billing → events");
    refused(get_one(&billing, "provisioner.orders").await, "billing reads the order queue");
    let bch = billing.create_channel().await.unwrap();
    refused(
        bch.queue_declare("billing.mine".into(), QueueDeclareOptions::default(), FieldTable::default())
            .await
            .map_err(|e| e.to_string()),
        "billing declares a queue",
    );

    // Events reach billing's queue; billing may read it.
    publish(&worker, "provisioning.events", "job.completed", json())
        .await
        .expect("worker publishes an event");
    assert!(get_one(&billing, "billing.events").await.unwrap().is_some(), "billing reads billing.events");

    // Operators: admin commands only, under their own name.
    let as_operator = json().with_user_id(loaded.user("operator").into());
    publish(&operator, "provisioner.admin", "admin.replay", as_operator.clone())
        .await
        .expect("operator sends a command");
    let cmd =
        get_one(&worker, "provisioner.admin").await.unwrap().expect("the command reached provisioner.admin");
    assert_eq!(cmd.properties.user_id().as_ref().map(|u| u.to_string()), Some(loaded.user("operator")));
    refused(publish(&operator, "billing.orders", "order.create", json()).await, "operator → billing.orders");
    refused(get_one(&operator, "provisioner.admin").await, "operator reads the admin queue");
    // RabbitMQ itself refuses a user_id that is not the connection's user.
    let forged = json().with_user_id(loaded.user("provisioner-worker").into());
    let e = publish(&operator, "provisioner.admin", "admin.replay", forged).await.unwrap_err();
    assert!(e.contains("PRECONDITION_FAILED"), "{e}");

    // The worker: consumes and dead-letters, but never plays billing, nor reads the dead letters.
    refused(publish(&worker, "billing.orders", "order.create", json()).await, "worker → billing.orders");
    publish(&worker, "provisioner.dlx", "provisioner.orders", json())
        .await
        .expect("worker dead-letters a copy");
    refused(get_one(&worker, "provisioner.dead").await, "worker reads provisioner.dead");

    for c in [worker, billing, operator] {
        let _ = c.close(200, "done".into()).await;
    }
    tokio::task::spawn_blocking(move || drop(loaded)).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// MySQL scripts.

async fn root_conn() -> sqlx::MySqlConnection {
    use sqlx::Connection as _;
    sqlx::MySqlConnection::connect("mysql://root@127.0.0.1:3306/").await.expect("root connects")
}

/// Runs a deploy/mysql script with session variables set first, as the docs say.
async fn run_script(conn: &mut sqlx::MySqlConnection, vars: &[(&str, &str)], script: &str) {
    for (name, value) in vars {
        sqlx::query(sqlx::AssertSqlSafe(format!("SET @{name} = ?")))
            .bind(*value)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    let sql = std::fs::read_to_string(deploy_dir().join("mysql").join(script)).unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"));
}

#[tokio::test]
async fn deploy_mysql_scripts_grant_least_privilege() {
    use sqlx::Connection as _;
    let id = &uuid::Uuid::new_v4().simple().to_string()[..12];
    let db = format!("prov_t_{id}");
    let worker_user = format!("pw_{id}");
    let status_user = format!("ps_{id}");
    let mut root = root_conn().await;
    run_script(
        &mut root,
        &[
            ("db", db.as_str()),
            ("worker_user", &worker_user),
            ("worker_password", "w-pass"),
            ("worker_host", "%"),
        ],
        "01-worker.sql",
    )
    .await;

    // The worker's grants are enough to migrate its schema (that is how the worker starts).
    let settings = openstack_provisioner::config::DatabaseSettings {
        url: openstack_provisioner::config::SecretUrl::new(format!(
            "mysql://{worker_user}:w-pass@127.0.0.1:3306/{db}"
        )),
        ..Default::default()
    };
    let store = openstack_provisioner::store::Store::connect(&settings).await.expect("the worker migrates");
    let mut jobs = [openstack_provisioner::store::intake::NewJob {
        id: uuid::Uuid::new_v4(),
        order_id: "B-deploy-1".into(),
        project_id: "p".into(),
        action: "create".into(),
        target_order_id: None,
        tenant_ref: None,
        order_body: "{}".into(),
        order_digest: "0".repeat(64),
        traceparent: None,
    }];
    store.insert_jobs(&mut jobs).await.expect("the worker writes jobs and services");
    // ... and no more: nothing outside its database.
    let e = sqlx::query("SELECT COUNT(*) FROM mysql.user").execute(store.pool()).await.unwrap_err();
    assert!(e.to_string().contains("denied"), "{e}");
    store.close().await;

    run_script(
        &mut root,
        &[
            ("db", db.as_str()),
            ("status_user", &status_user),
            ("status_password", "s-pass"),
            ("status_host", "%"),
        ],
        "02-status-reader.sql",
    )
    .await;
    let mut reader =
        sqlx::MySqlConnection::connect(&format!("mysql://{status_user}:s-pass@127.0.0.1:3306/{db}"))
            .await
            .expect("the status reader connects");
    let (state,): (String,) = sqlx::query_as("SELECT state FROM job_status WHERE order_id = 'B-deploy-1'")
        .fetch_one(&mut reader)
        .await
        .expect("the status reader reads job_status");
    assert_eq!(state, "queued");
    let (service,): (String,) =
        sqlx::query_as("SELECT state FROM service_status WHERE target_order_id = 'B-deploy-1'")
            .fetch_one(&mut reader)
            .await
            .expect("the status reader reads service_status");
    assert_eq!(service, "provisioning");
    for sql in [
        "SELECT * FROM services",
        "UPDATE service_status SET state = 'terminated'",
        "SELECT order_body FROM jobs",
        "SELECT * FROM job_history",
        "SELECT * FROM outbox",
        "UPDATE jobs SET state = 'cancelled'",
        "DELETE FROM jobs",
        "INSERT INTO jobs (id) VALUES ('x')",
        "UPDATE job_status SET state = 'cancelled'",
    ] {
        let e = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut reader).await.unwrap_err();
        assert!(e.to_string().contains("denied"), "{sql}: {e}");
    }
    let _ = reader.close().await;

    for sql in [
        format!("DROP DATABASE IF EXISTS `{db}`"),
        format!("DROP USER IF EXISTS '{worker_user}'@'%'"),
        format!("DROP USER IF EXISTS '{status_user}'@'%'"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut root).await.unwrap();
    }
}
