//! Tenant onboarding and closing (issue 12) against the real MariaDB and RabbitMQ and the
//! simulator's Keystone: exactly once across a SIGKILL and duplicates, passwords never at rest in
//! plain text, creates by `tenant_ref`, quotas enforced, and a close that leaves nothing behind.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use openstack_provisioner::config::Secret;
use openstack_provisioner::engine::cloud::tenant_tag;
use openstack_provisioner::messages::{AdminTarget, ErrorClass, Event, EventType};
use openstack_provisioner::openstack::config::CloudConfig;
use openstack_provisioner::secrets::SecretsKey;
use openstack_provisioner::sim::{FaultRule, Timings};
use openstack_provisioner::startup::App;

use crate::engine::stack::{Stack, fast};
use crate::engine::wait_ready;
use crate::helpers::{WAIT, header_text, wait_until};

/// The worker's Keystone scope for tenant orders: the service user's own project, where it
/// holds `admin`.
const SERVICE_PROJECT: (&str, &str) = ("OS_PROJECT_NAME", "service");

fn tenant_create(order_id: &str, tenant_ref: &str, password: Option<&str>, instances: i64) -> Vec<u8> {
    let mut o = serde_json::json!({
        "version": 1, "order_id": order_id, "action": "tenant_create", "tenant_ref": tenant_ref,
        "project": {"name": format!("p-{tenant_ref}"), "description": "test tenant"},
        "user": {"name": format!("u-{tenant_ref}"), "email": format!("{}@example.com", tenant_ref.replace(|c: char| !c.is_ascii_alphanumeric(), ""))},
        "roles": ["member"],
        "quotas": {"instances": instances, "cores": 16, "ram_mb": 16384, "volumes": 5, "gigabytes": 50,
                   "ports": 10, "networks": 2, "floating_ips": 1},
    });
    if let Some(p) = password {
        o["user"]["password"] = p.into();
    }
    o.to_string().into_bytes()
}

fn create_by_ref(order_id: &str, tenant_ref: &str, volume: bool) -> Vec<u8> {
    let mut o = serde_json::json!({
        "order_id": order_id, "tenant_ref": tenant_ref,
        "server": {"name": format!("vm-{order_id}"), "flavor": "m1.tiny", "image": "cirros-0.6.2", "network": "private"}
    });
    if volume {
        o["volume"] = serde_json::json!({"size_gb": 1});
    }
    o.to_string().into_bytes()
}

fn with_key(stack: &mut Stack) -> String {
    let key = SecretsKey::generate().expect("a key");
    stack.env.settings.secrets.key = Some(Secret::new(key.expose()));
    key.expose().to_string()
}

fn cloud(stack: &Stack) -> CloudConfig {
    let vars: HashMap<String, String> = stack
        .os_env()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(std::iter::once((SERVICE_PROJECT.0.to_string(), SERVICE_PROJECT.1.to_string())))
        .collect();
    CloudConfig::from_vars(&vars).expect("cloud config").expect("a cloud")
}

async fn run(stack: &Stack) -> (tokio_util::sync::CancellationToken, tokio::task::JoinHandle<()>) {
    let app =
        App::build_with_cloud(stack.env.settings.clone(), Some(cloud(stack))).await.expect("build the app");
    let token = app.shutdown_token();
    let handle =
        tokio::spawn(async move { app.run_until_stopped().await.expect("the worker stops cleanly") });
    (token, handle)
}

fn events_of<'a>(stack: &'a Stack, order_id: &str) -> Vec<&'a Event> {
    stack.events.values().filter(|e| e.order_id == order_id).collect()
}

/// Waits until the order has an event, and returns it.
async fn event_of(stack: &mut Stack, order_id: &str) -> Event {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        stack.collect().await;
        if let Some(e) = events_of(stack, order_id).first() {
            return (*e).clone();
        }
        let states = stack.env.store.count_jobs_by_state().await.unwrap_or_default();
        assert!(tokio::time::Instant::now() < deadline, "no event for {order_id}; jobs: {states:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every value in every table of the test database that contains `needle`, as `table.column`.
async fn tables_containing(stack: &Stack, needle: &str) -> Vec<String> {
    tables_containing_any(stack, &[needle]).await.into_iter().map(|(_, at)| at).collect()
}

/// For each needle found in some value of some table of the test database: (needle,
/// `table.column`). Each column is read once, whatever the number of needles (a query per
/// needle and column was the cost of this check).
async fn tables_containing_any(stack: &Stack, needles: &[&str]) -> Vec<(String, String)> {
    let pool = stack.env.store.pool();
    let columns: Vec<(String, String)> = sqlx::query_as(
        "SELECT CAST(c.TABLE_NAME AS CHAR), CAST(c.COLUMN_NAME AS CHAR) FROM information_schema.COLUMNS c \
         JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
         WHERE c.TABLE_SCHEMA = DATABASE() AND t.TABLE_TYPE = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .expect("list columns");
    assert!(columns.iter().any(|(t, _)| t == "jobs") && columns.iter().any(|(t, _)| t == "tenants"));
    let mut found = Vec::new();
    for (table, column) in columns {
        let sql = format!("SELECT CAST(`{column}` AS CHAR) FROM `{table}` WHERE `{column}` IS NOT NULL");
        let values: Vec<Option<String>> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.expect("read a column");
        for needle in needles {
            if values.iter().flatten().any(|v| v.contains(needle)) {
                found.push((needle.to_string(), format!("{table}.{column}")));
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_onboarded_exactly_once_across_a_sigkill_and_duplicates_and_no_password_rests_in_plain_text()
 {
    const N: usize = 100;
    let mut stack = Stack::new(fast()).await;
    let key = with_key(&mut stack);
    let extra = [(SERVICE_PROJECT.0, SERVICE_PROJECT.1.to_string()), ("PROVISIONER_SECRETS_KEY", key)];
    // The first worker takes 16 at a time, and Keystone holds its answers to user creates a
    // little (the user is made at once): the kill lands mid-way, with answers lost in flight.
    let rule = FaultRule {
        service: Some("identity".into()),
        method: Some("POST".into()),
        path: Some("/users$".into()),
        answer_delay_ms: Some(150),
        ..FaultRule::default()
    };
    let delay = stack.sim.control().add_fault(rule).expect("a fault rule");
    let mut first_env = extra.to_vec();
    first_env.push(("PROVISIONER_ENGINE_MAX_IN_FLIGHT", "16".into()));
    let mut first = stack.child_with("tenants-a", &first_env);
    wait_ready(&first).await;
    let passwords: Vec<String> = (0..N).map(|i| format!("Pw-{}-{i}-xyzzy", fastrand::u64(..))).collect();
    let bodies: Vec<Vec<u8>> = (0..N)
        .map(|i| tenant_create(&format!("T-{i}"), &format!("CUST/{i}, Acme"), Some(&passwords[i]), 3))
        .collect();
    // Each order twice, the duplicate later (a redelivery, billing's resend).
    stack.env.publish_keyed(bodies.iter()).await;
    wait_until(WAIT, "some tenants active", || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenant_status WHERE state = 'active'")
            .fetch_one(stack.env.store.pool())
            .await
            .unwrap();
        n >= 5
    })
    .await;
    first.kill().await;
    let active_at_kill: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tenant_status WHERE state = 'active'")
        .fetch_one(stack.env.store.pool())
        .await
        .unwrap();
    assert!(active_at_kill < N as i64, "the kill came after every tenant was onboarded");
    eprintln!("tenants active at the SIGKILL: {active_at_kill} of {N}");
    stack.sim.control().remove_fault(delay);
    stack.env.publish_keyed(bodies.iter()).await;
    let second = stack.child_with("tenants-b", &extra);
    stack.wait_events(N, Duration::from_secs(120)).await;

    // Exactly N projects, users, one role assignment each, quotas as ordered.
    let id = stack.sim.control().identity();
    let quotas = stack.sim.control().quotas();
    let rows: Vec<(String, Option<String>, Option<String>, String)> =
        sqlx::query_as("SELECT tenant_ref, project_id, user_id, state FROM tenant_status")
            .fetch_all(stack.env.store.pool())
            .await
            .unwrap();
    assert_eq!(rows.len(), N);
    for (i, (tenant_ref, project_id, user_id, state)) in rows.iter().enumerate() {
        assert_eq!(state, "active", "{tenant_ref}");
        let tag = tenant_tag(tenant_ref);
        let projects: Vec<_> = id.projects.iter().filter(|p| p.tags.contains(&tag)).collect();
        assert_eq!(projects.len(), 1, "{tenant_ref}: {projects:?}");
        assert_eq!(Some(&projects[0].id), project_id.as_ref());
        let users: Vec<_> = id.users.iter().filter(|u| u.name == format!("u-{tenant_ref}")).collect();
        assert_eq!(users.len(), 1, "{tenant_ref}");
        assert_eq!(Some(&users[0].id), user_id.as_ref());
        assert_eq!(users[0].default_project_id, *project_id);
        assert!(users[0].has_password, "{tenant_ref}");
        let roles: Vec<_> = id.assignments.iter().filter(|a| Some(&a.user_id) == user_id.as_ref()).collect();
        assert_eq!(roles.len(), 1, "{tenant_ref}: {roles:?}");
        assert_eq!((roles[0].role.as_str(), Some(&roles[0].project_id)), ("member", project_id.as_ref()));
        let q = &quotas[&format!("p-{tenant_ref}")];
        let q = serde_json::to_value(q).unwrap();
        assert_eq!(q["instances"], 3, "{tenant_ref}: {q}");
        assert_eq!(q["volumes"], 5, "{tenant_ref}: {q}");
        assert_eq!(q["ports"], 10, "{tenant_ref}: {q}");
        let _ = i;
    }
    let tagged = id.projects.iter().filter(|p| p.tags.iter().any(|t| t.starts_with("tenant:"))).count();
    assert_eq!(tagged, N, "no second project for any tenant");
    // The password works (it reached Keystone) ...
    let (_, project_id, _, _) = rows.iter().find(|r| r.0 == "CUST/0, Acme").unwrap();
    stack
        .sim
        .control()
        .issue_token("u-CUST/0, Acme", &passwords[0], project_id.as_ref().unwrap())
        .expect("the tenant's user logs in with the ordered password");

    // ... N completed events, one per tenant, with the tenant's ids and no password.
    let completed: Vec<&Event> = stack.of_type(EventType::Completed);
    let jobs: HashSet<_> = completed.iter().map(|e| e.job_id).collect();
    assert_eq!(
        jobs.len(),
        N,
        "{:?}",
        stack.events.values().map(|e| (&e.order_id, e.event_type)).collect::<Vec<_>>()
    );
    for e in &completed {
        let t = e.tenant.as_ref().unwrap_or_else(|| panic!("no tenant in {e:?}"));
        let row = rows.iter().find(|r| r.0 == t.tenant_ref).expect("a tenant of ours");
        assert_eq!(t.project_id, row.1);
        assert_eq!(t.user_id, row.2);
        assert_eq!(t.domain_id.as_deref(), Some("default"));
        assert_eq!(e.project_id, row.1.clone().unwrap());
        assert_eq!(e.action.as_deref(), Some("tenant_create"));
    }
    let resends: i64 = sqlx::query_scalar("SELECT CAST(SUM(resends) AS SIGNED) FROM jobs")
        .fetch_one(stack.env.store.pool())
        .await
        .unwrap();
    assert!(resends >= N as i64, "every duplicate was counted: {resends}");
    assert_eq!(stack.env.count_jobs().await, N as i64);

    // No plain-text password anywhere: every table, the events, both workers' logs.
    let mut second = second;
    second.terminate(Duration::from_secs(20)).await;
    let logs = format!("{}{}", first.log_text(), second.log_text());
    assert!(logs.contains("job completed"), "the logs are the workers' logs");
    let events = serde_json::to_string(&stack.events.values().collect::<Vec<_>>()).unwrap();
    let needles: Vec<&str> = passwords.iter().map(String::as_str).collect();
    let found = tables_containing_any(&stack, &needles).await;
    assert!(found.is_empty(), "passwords are stored in {found:?}");
    for p in &passwords {
        assert!(!logs.contains(p.as_str()), "a worker logged a password");
        assert!(!events.contains(p.as_str()), "an event carries a password");
    }
    // And no sealed one either, once the users exist.
    let sealed = tables_containing(&stack, "\"password\"").await;
    assert!(sealed.is_empty(), "a password (sealed) is still stored in {sealed:?}");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_order_without_a_secrets_key_is_dead_lettered_with_its_reason() {
    let stack = Stack::new(fast()).await;
    let (token, handle) = run(&stack).await;
    let password = "hunter2-not-stored";
    stack
        .env
        .publish_with("order.tenant.create", &tenant_create("T-nokey", "C-nokey", Some(password), 2))
        .await;
    stack.env.publish_with("order.tenant.create", &tenant_create("T-nopw", "C-nopw", None, 2)).await;
    // A key and a body that disagree, and an update of a tenant nobody onboarded.
    stack.env.publish_with("order.tenant.close", &tenant_create("T-key", "C-key", None, 2)).await;
    let dead = &stack.env.names.dead_queue;
    wait_until(WAIT, "two dead letters and one job", || async {
        stack.env.queue_counts(dead).await.0 == 2 && stack.env.count_jobs().await == 1
    })
    .await;
    let letters = stack.env.drain(dead).await;
    let reasons: HashMap<String, String> = letters
        .iter()
        .map(|(body, headers)| {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap();
            (
                v["order_id"].as_str().unwrap().to_string(),
                header_text(headers, "x-provisioner-error").unwrap(),
            )
        })
        .collect();
    assert!(reasons["T-nokey"].contains("PROVISIONER_SECRETS_KEY"), "{reasons:?}");
    assert!(!reasons["T-nokey"].contains(password), "{reasons:?}");
    assert!(reasons["T-key"].contains("routing key order.tenant.close says tenant_close"), "{reasons:?}");
    assert!(tables_containing(&stack, password).await.is_empty());
    token.cancel();
    handle.await.unwrap();
    stack.cleanup().await;
}

/// The project's resources in the simulator: (servers, ports, volumes).
fn resources(stack: &Stack, project: &str) -> (usize, usize, usize) {
    let r = stack.sim.control().resources();
    let p = r.projects.get(project).cloned().unwrap_or_default();
    (p.servers.values().sum(), p.ports.values().sum(), p.volumes.values().sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_by_tenant_ref_wait_for_the_tenant_its_quota_holds_and_a_close_leaves_nothing() {
    let mut stack = Stack::new(Timings::fast()).await;
    let _ = with_key(&mut stack);
    let (token, handle) = run(&stack).await;
    let tenant = "ACME-1";
    // The tenant and its three VMs at once: the creates wait until the tenant is active.
    stack
        .env
        .publish_with("order.tenant.create", &tenant_create("T-acme", tenant, Some("s3cret-acme"), 2))
        .await;
    let vms = ["vm-1", "vm-2", "vm-3"];
    for (i, vm) in vms.iter().enumerate() {
        stack.env.publish_with("order.create", &create_by_ref(vm, tenant, i != 1)).await;
    }
    let created = event_of(&mut stack, "T-acme").await;
    assert_eq!(created.event_type, EventType::Completed, "{created:?}");
    let project = created.tenant.as_ref().and_then(|t| t.project_id.clone()).expect("the tenant's project");
    stack.wait_events(4, WAIT).await;
    let mut outcomes: Vec<(String, EventType, Option<ErrorClass>)> = vms
        .iter()
        .map(|vm| {
            let e = events_of(&stack, vm);
            assert_eq!(e.len(), 1, "{vm}: {e:?}");
            assert_eq!(e[0].project_id, project, "{vm} runs in the tenant's project");
            (vm.to_string(), e[0].event_type, e[0].error.as_ref().map(|x| x.class))
        })
        .collect();
    outcomes.sort_by_key(|o| o.1 == EventType::Failed);
    assert_eq!(outcomes[0].1, EventType::Completed, "{outcomes:?}");
    assert_eq!(outcomes[1].1, EventType::Completed, "{outcomes:?}");
    assert_eq!(
        (outcomes[2].1, outcomes[2].2),
        (EventType::Failed, Some(ErrorClass::QuotaExceeded)),
        "{outcomes:?}"
    );
    let failed = outcomes[2].0.clone();
    // The one over quota was cleaned up.
    wait_until(WAIT, "two VMs in the project", || async { resources(&stack, &project).0 == 2 }).await;
    assert_eq!(resources(&stack, &project).1, 2, "the third VM's port was deleted");

    // A quota raised, and a replay: it completes.
    let update = serde_json::json!({"version": 1, "order_id": "T-acme-up", "action": "tenant_update",
        "tenant_ref": tenant, "quotas": {"instances": 3}});
    stack.env.publish_with("order.tenant.update", update.to_string().as_bytes()).await;
    let up = event_of(&mut stack, "T-acme-up").await;
    assert_eq!(up.event_type, EventType::Completed, "{up:?}");
    let q = serde_json::to_value(stack.sim.control().quotas()[&format!("p-{tenant}")]).unwrap();
    assert_eq!((q["instances"].clone(), q["volumes"].clone()), (3.into(), 5.into()), "{q}");
    let status = stack.env.store.tenant(tenant).await.unwrap().expect("tenant_status");
    assert_eq!(status.state, "active");
    assert_eq!(status.quotas.as_ref().unwrap()["instances"], 3);
    assert_eq!(status.quotas.as_ref().unwrap()["ram_mb"], 16384, "the other limits are kept");
    stack
        .env
        .store
        .admin_replay(&AdminTarget::Order(failed.clone()), "test", Some("quota raised"), WAIT)
        .await
        .expect("replay");
    wait_until(WAIT, "the replayed create completes", || async {
        stack.env.count_jobs_where(&format!("order_id = '{failed}' AND state = 'completed'")).await == 1
    })
    .await;
    wait_until(WAIT, "three VMs", || async { resources(&stack, &project).0 == 3 }).await;

    // The close: every service terminated, nothing tagged left, project and user disabled.
    let close = serde_json::json!({"version": 1, "order_id": "T-acme-close", "action": "tenant_close", "tenant_ref": tenant});
    stack.env.publish_with("order.tenant.close", close.to_string().as_bytes()).await;
    let closed = event_of(&mut stack, "T-acme-close").await;
    assert_eq!(closed.event_type, EventType::Completed, "{closed:?}");
    let removed = closed.tenant.as_ref().and_then(|t| t.removed.clone()).expect("what was removed");
    let mut services = removed.services.clone();
    services.sort();
    assert_eq!(services, vms, "{removed:?}");
    assert_eq!((removed.project.as_deref(), removed.user.as_deref()), (Some("disabled"), Some("disabled")));
    assert_eq!(resources(&stack, &project), (0, 0, 0), "nothing left in the project");
    let id = stack.sim.control().identity();
    let p = id.projects.iter().find(|p| p.id == project).expect("the project is kept");
    assert!(!p.enabled, "the project is disabled");
    let u = id.users.iter().find(|u| u.default_project_id.as_deref() == Some(project.as_str())).unwrap();
    assert!(!u.enabled, "the user is disabled");
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM service_status ORDER BY target_order_id")
        .fetch_all(stack.env.store.pool())
        .await
        .unwrap();
    assert_eq!(states, ["terminated"; 3]);
    assert_eq!(stack.env.store.tenant(tenant).await.unwrap().unwrap().state, "closed");
    // A create naming a closed tenant is cancelled, never provisioned.
    stack.env.publish_with("order.create", &create_by_ref("vm-late", tenant, false)).await;
    let late = event_of(&mut stack, "vm-late").await;
    assert_eq!(late.event_type, EventType::Cancelled, "{late:?}");
    assert_eq!(resources(&stack, &project), (0, 0, 0));
    token.cancel();
    handle.await.unwrap();
    stack.cleanup().await;
}

/// `provisioner <args>` against this stack's database and cloud: (exit code, stdout).
async fn provisioner(stack: &Stack, args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "error")
        .env("PROVISIONER_DATABASE_URL", stack.env.settings.database.url.expose())
        .envs(stack.os_env())
        .output()
        .await
        .expect("run provisioner");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.code().unwrap_or(-1), format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
}

/// The failed checks of a pre-flight report: (check, class or "-").
fn failed_checks(report: &serde_json::Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| (c["check"].as_str().unwrap().to_string(), c["class"].as_str().unwrap_or("-").to_string()))
        .collect()
}

fn check_detail(report: &serde_json::Value, check: &str) -> String {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check)
        .map_or_else(|| panic!("no {check} check in {report}"), |c| c["detail"].as_str().unwrap().to_string())
}

/// `provisioner order check` of a body: (exit code, report).
async fn order_check(stack: &Stack, body: &[u8]) -> (i32, serde_json::Value) {
    let path = std::env::temp_dir().join(format!("tenant-check-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, body).unwrap();
    let (code, out) = provisioner(stack, &["order", "check", path.to_str().unwrap(), "--json"]).await;
    let _ = std::fs::remove_file(&path);
    let start = out.find('{').unwrap_or_else(|| panic!("no report: {out}"));
    let report: serde_json::Value =
        serde_json::Deserializer::from_str(&out[start..]).into_iter().next().unwrap().expect("a JSON report");
    (code, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_a_cancelled_onboarding_fails_its_tenant_preflight_waits_for_active_and_operators_list_and_show_tenants()
 {
    use openstack_provisioner::store::admin::AdminOutcome;
    use openstack_provisioner::store::intake::NewJob;
    let mut stack = Stack::new(fast()).await;
    let key = with_key(&mut stack);
    let tenant = "CUST C/1, Acme";
    let vm = create_by_ref("vm-c", tenant, false);

    // Pre-flight of a create naming a tenant nobody onboarded: not found.
    let (code, r) = order_check(&stack, &create_by_ref("vm-x", "NOBODY", false)).await;
    assert_eq!((code, failed_checks(&r)), (1, vec![("tenant".into(), "not_found".into())]), "{r:#}");

    // A tenant create that no worker has taken up yet (queued, the tenant provisioning).
    let body = String::from_utf8(tenant_create("T-c1", tenant, None, 2)).unwrap();
    let mut jobs = vec![NewJob {
        id: uuid::Uuid::new_v4(),
        order_id: "T-c1".into(),
        project_id: String::new(),
        action: "tenant_create".into(),
        target_order_id: None,
        tenant_ref: Some(tenant.into()),
        order_digest: openstack_provisioner::amqp::intake::sha256_hex(body.as_bytes()),
        order_body: body,
        traceparent: None,
    }];
    stack.env.store.insert_jobs(&mut jobs).await.expect("intake");
    assert_eq!(stack.env.store.tenant(tenant).await.unwrap().unwrap().state, "provisioning");
    // Pre-flight says the tenant is not active yet, and checks nothing against an empty project.
    let (code, r) = order_check(&stack, &vm).await;
    assert_eq!((code, failed_checks(&r)), (1, vec![("tenant".into(), "-".into())]), "{r:#}");
    assert!(check_detail(&r, "tenant").contains("is not active yet (provisioning)"), "{r:#}");
    assert!(!r["checks"].as_array().unwrap().iter().any(|c| c["check"] == "image"), "{r:#}");

    // Cancelled while queued: the job ends at once, the tenant is failed (not provisioning).
    let out =
        stack.env.store.admin_cancel(&AdminTarget::Order("T-c1".into()), "ops-test", Some("withdrawn")).await;
    assert!(matches!(out, Ok(AdminOutcome::Cancelled { .. })), "{out:?}");
    assert_eq!(stack.env.store.tenant(tenant).await.unwrap().unwrap().state, "failed");
    let (code, r) = order_check(&stack, &vm).await;
    assert_eq!((code, failed_checks(&r)), (1, vec![("tenant".into(), "invalid_order".into())]), "{r:#}");
    assert!(check_detail(&r, "tenant").contains("is failed"), "{r:#}");

    // A new create order for the same tenant onboards it.
    stack.env.settings.http.addr = "127.0.0.1:0".into();
    let app =
        App::build_with_cloud(stack.env.settings.clone(), Some(cloud(&stack))).await.expect("build the app");
    let http = app.http_addr().expect("http listens");
    let token = app.shutdown_token();
    let handle =
        tokio::spawn(async move { app.run_until_stopped().await.expect("the worker stops cleanly") });
    let cancelled = event_of(&mut stack, "T-c1").await;
    assert_eq!(cancelled.event_type, EventType::Cancelled, "{cancelled:?}");
    let password = format!("Pw-{}-listed", fastrand::u64(..));
    stack.env.publish_with("order.tenant.create", &tenant_create("T-c2", tenant, Some(&password), 2)).await;
    let created = event_of(&mut stack, "T-c2").await;
    assert_eq!(created.event_type, EventType::Completed, "{created:?}");
    let project = created.tenant.as_ref().and_then(|t| t.project_id.clone()).expect("a project");
    let user = created.tenant.as_ref().and_then(|t| t.user_id.clone()).expect("a user");
    assert_eq!(stack.env.store.tenant(tenant).await.unwrap().unwrap().state, "active");

    // Active: pre-flight checks the order in the tenant's project (HTTP and CLI alike).
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("http://{http}/v1/preflight"))
        .body(vm.clone())
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let r: serde_json::Value = resp.json().await.unwrap();
    assert_eq!((r["ok"].clone(), r["project_id"].clone()), (true.into(), project.clone().into()), "{r:#}");
    assert!(check_detail(&r, "tenant").contains(&project), "{r:#}");
    let (code, r) = order_check(&stack, &vm).await;
    assert_eq!((code, r["ok"].clone()), (0, true.into()), "{r:#}");

    // GET /v1/tenants and /v1/tenants/{tenant_ref}: state, ids, quotas, last job; no secret.
    let list = client.get(format!("http://{http}/v1/tenants")).send().await.unwrap();
    assert_eq!(list.status(), 200);
    let list = list.text().await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    let tenants = v["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 1, "{v:#}");
    let t = &tenants[0];
    assert_eq!(
        (&t["tenant_ref"], &t["state"], &t["project_id"], &t["user_id"]),
        (&tenant.into(), &"active".into(), &project.clone().into(), &user.clone().into()),
        "{t:#}"
    );
    assert_eq!(
        (t["quotas"]["instances"].clone(), t["quotas"]["ports"].clone()),
        (2.into(), 10.into()),
        "{t:#}"
    );
    assert_eq!(
        (t["last_job"]["order_id"].clone(), t["last_job"]["state"].clone()),
        ("T-c2".into(), "completed".into()),
        "{t:#}"
    );
    let filtered: serde_json::Value = client
        .get(format!("http://{http}/v1/tenants?state=failed"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(filtered["tenants"].as_array().map(Vec::len), Some(0), "{filtered}");
    let bad = client.get(format!("http://{http}/v1/tenants?state=gone")).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let path = "CUST%20C%2F1%2C%20Acme";
    let show = client.get(format!("http://{http}/v1/tenants/{path}")).send().await.unwrap();
    assert_eq!(show.status(), 200);
    let show = show.text().await.unwrap();
    let d: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(d["tenant_ref"], tenant, "{d:#}");
    let jobs: Vec<(String, String)> = d["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["order_id"].as_str().unwrap().to_string(), j["state"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(jobs, [("T-c1".into(), "cancelled".into()), ("T-c2".into(), "completed".into())], "{d:#}");
    let missing = client.get(format!("http://{http}/v1/tenants/NOBODY")).send().await.unwrap();
    assert_eq!(missing.status(), 404);

    // The CLI: the same, as tables and JSON.
    let (code, table) = provisioner(&stack, &["tenants", "list"]).await;
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("TENANT") && table.contains(tenant) && table.contains(&project), "{table}");
    assert!(table.contains("T-c2 tenant_create completed") && table.contains("instances=2"), "{table}");
    let (code, shown) = provisioner(&stack, &["tenants", "show", tenant]).await;
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains(&format!("project    {project}")) && shown.contains(&user), "{shown}");
    assert!(shown.contains("T-c1") && shown.contains("cancelled"), "{shown}");
    let (code, json) = provisioner(&stack, &["tenants", "show", tenant, "--json"]).await;
    assert_eq!(code, 0, "{json}");
    let j: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!((j["state"].clone(), j["project_id"].clone()), ("active".into(), project.clone().into()));
    let (code, listed) = provisioner(&stack, &["tenants", "list", "--state", "closed", "--json"]).await;
    assert_eq!(
        (
            code,
            serde_json::from_str::<serde_json::Value>(&listed).unwrap()["tenants"].as_array().map(Vec::len)
        ),
        (0, Some(0)),
        "{listed}"
    );
    let (code, err) = provisioner(&stack, &["tenants", "show", "NOBODY"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no tenant \"NOBODY\""), "{err}");
    for text in [&list, &show, &table, &shown, &json] {
        assert!(!text.contains(&password), "a password is shown: {text}");
        assert!(!text.contains("password") && !text.contains("v1:"), "a secret is shown: {text}");
    }
    let _ = key;
    token.cancel();
    handle.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_a_close_with_delete_deletes_the_project_and_the_user_and_leaves_nothing_tagged() {
    let mut stack = Stack::new(Timings::fast()).await;
    let _ = with_key(&mut stack);
    let (token, handle) = run(&stack).await;
    let tenant = "ACME-DEL";
    stack
        .env
        .publish_with("order.tenant.create", &tenant_create("T-del", tenant, Some("s3cret-del"), 2))
        .await;
    stack.env.publish_with("order.create", &create_by_ref("vm-del", tenant, true)).await;
    let created = event_of(&mut stack, "T-del").await;
    assert_eq!(created.event_type, EventType::Completed, "{created:?}");
    let t = created.tenant.clone().expect("the tenant");
    let (project, user) = (t.project_id.clone().unwrap(), t.user_id.clone().unwrap());
    let vm = event_of(&mut stack, "vm-del").await;
    assert_eq!(vm.event_type, EventType::Completed, "{vm:?}");
    assert_eq!(resources(&stack, &project), (1, 1, 1));

    let close = serde_json::json!({"version": 1, "order_id": "T-del-close", "action": "tenant_close",
        "tenant_ref": tenant, "delete": true});
    stack.env.publish_with("order.tenant.close", close.to_string().as_bytes()).await;
    let closed = event_of(&mut stack, "T-del-close").await;
    assert_eq!(closed.event_type, EventType::Completed, "{closed:?}");
    let removed = closed.tenant.as_ref().and_then(|t| t.removed.clone()).expect("what was removed");
    assert_eq!(removed.services, ["vm-del"], "{removed:?}");
    assert_eq!((removed.project.as_deref(), removed.user.as_deref()), (Some("deleted"), Some("deleted")));

    // Deleted, not disabled: neither the project nor the user exists; no role assignment is left.
    let id = stack.sim.control().identity();
    assert!(!id.projects.iter().any(|p| p.id == project), "the project still exists");
    assert!(!id.projects.iter().any(|p| p.tags.contains(&tenant_tag(tenant))), "a project is still tagged");
    assert!(!id.users.iter().any(|u| u.id == user), "the user still exists");
    assert!(!id.users.iter().any(|u| u.name == format!("u-{tenant}")));
    assert!(!id.assignments.iter().any(|a| a.project_id == project), "{:?}", id.assignments);
    // Nothing the provisioner made is left anywhere in the cloud.
    assert_eq!(resources(&stack, &project), (0, 0, 0));
    assert_eq!(stack.env.store.tenant(tenant).await.unwrap().unwrap().state, "closed");
    let states: Vec<String> = sqlx::query_scalar("SELECT state FROM service_status")
        .fetch_all(stack.env.store.pool())
        .await
        .unwrap();
    assert_eq!(states, ["terminated"]);
    token.cancel();
    handle.await.unwrap();
    stack.cleanup().await;
}
