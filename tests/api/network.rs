//! Tests: what an order asks of Neutron beyond its port (issue 15): `server.security_groups`
//! resolved in the order's project and applied to the port we create (visible in Neutron's port
//! and Nova's server as a real cloud shows them), pre-flight naming a group that does not
//! resolve; `server.public_ip`: a floating IP of the external network, tagged with the job,
//! associated with the port, shown by Nova among the server's addresses, reported in
//! `job.completed`, adopted (never doubled) after a SIGKILL at each of its steps, released on
//! rollback and on terminate, and a project out of floating IPs failing with `quota_exceeded`.

use std::sync::Arc;

use openstack_provisioner::engine::cloud::Cloud;
use openstack_provisioner::engine::openstack_cloud::OpenStackCloud;
use openstack_provisioner::engine::preflight::check_order;
use openstack_provisioner::messages::{ErrorClass, Event, EventType, Order};
use openstack_provisioner::openstack::session::{Session, SessionOptions};
use std::time::Duration;

use openstack_provisioner::sim::control::QuotaPatch;
use openstack_provisioner::sim::{DEMO_PROJECT_ID, FaultRule, SimHandle};
use reqwest::Method;
use serde_json::{Value, json};

use crate::engine::stack::{Stack, fast};
use crate::engine::{run_app, wait_ready};
use crate::helpers::{WAIT, counting, held_answer, wait_until};
use crate::lifecycle::{action, wait_services};

/// Calls the simulator's API with a token: (status, JSON body or `null`).
pub(crate) async fn api(
    sim: &SimHandle,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut req =
        reqwest::Client::new().request(method, format!("{}{path}", sim.url())).header("X-Auth-Token", token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("call the simulator");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A token of the service user in a project (by name).
pub(crate) fn token(sim: &SimHandle, project: &str) -> String {
    sim.control().issue_token("provisioner", "provisioner", project).expect("a token")
}

/// Creates a security group; its id.
pub(crate) async fn create_group(sim: &SimHandle, token: &str, name: &str) -> String {
    let (status, body) = api(
        sim,
        token,
        Method::POST,
        "/networking/v2.0/security-groups",
        Some(json!({"security_group": {"name": name, "description": format!("{name} servers")}})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["security_group"]["id"].as_str().unwrap().to_string()
}

/// A create order in `project` with these extra `server` fields.
pub(crate) fn order_with(order_id: &str, project: &str, server: Value) -> Value {
    let mut o = json!({
        "order_id": order_id,
        "project_id": project,
        "server": {"name": format!("vm-{order_id}"), "flavor": "m1.tiny", "image": "cirros-0.6.2", "network": "private"}
    });
    for (k, v) in server.as_object().unwrap() {
        o["server"][k] = v.clone();
    }
    o
}

pub(crate) fn event_of<'a>(stack: &'a Stack, order_id: &str) -> &'a Event {
    let found: Vec<&Event> = stack.events.values().filter(|e| e.order_id == order_id).collect();
    assert_eq!(found.len(), 1, "one event for {order_id}: {found:?}");
    found[0]
}

fn session(stack: &Stack) -> Arc<Session> {
    Arc::new(Session::new(stack.cloud(), SessionOptions::default()).expect("session"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_groups_by_name_or_id_are_on_the_port_and_a_name_that_does_not_resolve_fails_the_order() {
    let mut stack = Stack::new(fast()).await;
    let demo = token(&stack.sim, "demo");
    let web = create_group(&stack.sim, &demo, "web").await;
    let db = create_group(&stack.sim, &demo, "db").await;
    create_group(&stack.sim, &demo, "twin").await;
    create_group(&stack.sim, &demo, "twin").await;
    // A group of another project is not the order's to use, even by its exact name.
    create_group(&stack.sim, &token(&stack.sim, "acme"), "acme-only").await;
    // Neutron refuses a second `default`.
    let (status, body) = api(
        &stack.sim,
        &demo,
        Method::POST,
        "/networking/v2.0/security-groups",
        Some(json!({"security_group": {"name": "default"}})),
    )
    .await;
    assert_eq!(
        (status, body["NeutronError"]["type"].as_str()),
        (409, Some("SecurityGroupDefaultAlreadyExists"))
    );

    let orders = [
        order_with("sg-named", DEMO_PROJECT_ID, json!({"security_groups": ["web", db]})),
        order_with("sg-none", DEMO_PROJECT_ID, json!({})),
        order_with("sg-missing", DEMO_PROJECT_ID, json!({"security_groups": ["web", "nope"]})),
        order_with("sg-twin", DEMO_PROJECT_ID, json!({"security_groups": ["twin"]})),
        order_with("sg-foreign", DEMO_PROJECT_ID, json!({"security_groups": ["acme-only"]})),
    ];
    let (stop, run) = run_app(&stack).await;
    stack.env.publish_all(orders.iter().map(|o| o.to_string().into_bytes())).await;
    stack.wait_events(orders.len(), WAIT).await;

    // By name and by id, in the order given, on the port; Nova shows them by name.
    let e = event_of(&stack, "sg-named");
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let port = e.port_id.clone().unwrap();
    let (_, p) = api(&stack.sim, &demo, Method::GET, &format!("/networking/v2.0/ports/{port}"), None).await;
    assert_eq!(p["port"]["security_groups"], json!([web, db]), "{p}");
    let server = e.server.as_ref().unwrap().id.clone();
    let (_, s) = api(&stack.sim, &demo, Method::GET, &format!("/compute/v2.1/servers/{server}"), None).await;
    assert_eq!(s["server"]["security_groups"], json!([{"name": "web"}, {"name": "db"}]), "{s}");

    // None ordered: the project's default group, as Neutron made it (all egress, ingress from
    // the group's members).
    let e = event_of(&stack, "sg-none");
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let (_, groups) =
        api(&stack.sim, &demo, Method::GET, "/networking/v2.0/security-groups?name=default", None).await;
    let groups = groups["security_groups"].as_array().unwrap().clone();
    assert_eq!(groups.len(), 1, "{groups:?}");
    let default = groups[0]["id"].as_str().unwrap().to_string();
    assert_eq!(groups[0]["project_id"], DEMO_PROJECT_ID);
    let mut rules: Vec<(String, String, bool)> = groups[0]["security_group_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert!(
                r["protocol"].is_null() && r["port_range_min"].is_null() && r["remote_ip_prefix"].is_null()
            );
            (
                r["direction"].as_str().unwrap().to_string(),
                r["ethertype"].as_str().unwrap().to_string(),
                r["remote_group_id"] == default.as_str(),
            )
        })
        .collect();
    rules.sort();
    let want = |d: &str, e: &str, from_group: bool| (d.to_string(), e.to_string(), from_group);
    assert_eq!(
        rules,
        [
            want("egress", "IPv4", false),
            want("egress", "IPv6", false),
            want("ingress", "IPv4", true),
            want("ingress", "IPv6", true)
        ]
    );
    let port = e.port_id.clone().unwrap();
    let (_, p) = api(&stack.sim, &demo, Method::GET, &format!("/networking/v2.0/ports/{port}"), None).await;
    assert_eq!(p["port"]["security_groups"], json!([default]), "{p}");

    // A name that matches none (here, or only in another project) or several: failed for
    // good at resolve, naming it, with nothing created.
    for (order_id, class, name) in [
        ("sg-missing", ErrorClass::NotFound, "nope"),
        ("sg-foreign", ErrorClass::NotFound, "acme-only"),
        ("sg-twin", ErrorClass::CloudError, "twin"),
    ] {
        let e = event_of(&stack, order_id);
        assert_eq!(e.event_type, EventType::Failed, "{e:?}");
        let err = e.error.as_ref().unwrap();
        assert_eq!((err.class, err.step.as_str()), (class, "resolve"), "{e:?}");
        assert!(err.message.contains(&format!("\"{name}\"")), "{e:?}");
    }
    let r = stack.sim.control().resources();
    let ports: usize = r.projects[DEMO_PROJECT_ID].ports.values().sum();
    assert_eq!(ports, 2, "only the two completed orders made a port: {r:?}");

    // Pre-flight names the group that does not resolve (and passes the others).
    let cloud: Arc<dyn Cloud> = Arc::new(OpenStackCloud::new(session(&stack)));
    let missing: Order = serde_json::from_value(orders[2].clone()).unwrap();
    let report = check_order(cloud.as_ref(), &missing).await;
    let c = report.checks.iter().find(|c| c.check == "security_groups").expect("a security_groups check");
    assert!(!c.ok && c.class == Some(ErrorClass::NotFound) && c.detail.contains("\"nope\""), "{report:?}");
    let named: Order = serde_json::from_value(orders[0].clone()).unwrap();
    let report = check_order(cloud.as_ref(), &named).await;
    let c = report.checks.iter().find(|c| c.check == "security_groups").expect("a security_groups check");
    assert!(c.ok && c.detail.contains(&web) && c.detail.contains(&db), "{report:?}");

    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

/// The simulator's external network (seed).
const PUBLIC_NET_ID: &str = "e7f8a9b0-c1d2-4e3f-8a4b-5c6d7e8f9a01";

/// Every floating IP in the cloud (an admin's list).
async fn all_fips(sim: &SimHandle) -> Vec<Value> {
    let admin = sim.control().issue_token("admin", "admin", "admin").expect("an admin token");
    let (status, body) = api(sim, &admin, Method::GET, "/networking/v2.0/floatingips", None).await;
    assert_eq!(status, 200, "{body}");
    body["floatingips"].as_array().cloned().unwrap_or_default()
}

/// The floating IPs carrying a job's mark.
async fn fips_of(sim: &SimHandle, job_id: &uuid::Uuid) -> Vec<Value> {
    let mark = format!("job-{job_id}");
    all_fips(sim)
        .await
        .into_iter()
        .filter(|f| f["tags"].as_array().unwrap().iter().any(|t| t == mark.as_str()))
        .collect()
}

fn public_order(order_id: &str, network: &str) -> Value {
    order_with(order_id, DEMO_PROJECT_ID, json!({"public_ip": {"network": network}}))
}

fn demo_ports(stack: &Stack) -> usize {
    stack.sim.control().resources().projects[DEMO_PROJECT_ID].ports.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_is_tagged_associated_shown_by_nova_reported_and_released_on_terminate() {
    let mut stack = Stack::new(fast()).await;
    let demo = token(&stack.sim, "demo");
    let (stop, run) = run_app(&stack).await;
    let orders = [
        public_order("fip-name", "public"),
        public_order("fip-id", PUBLIC_NET_ID),
        public_order("fip-internal", "private"),
        public_order("fip-nowhere", "no-such-net"),
    ];
    stack.env.publish_all(orders.iter().map(|o| o.to_string().into_bytes())).await;
    stack.wait_events(orders.len(), WAIT).await;

    for order_id in ["fip-name", "fip-id"] {
        let e = event_of(&stack, order_id).clone();
        assert_eq!(e.event_type, EventType::Completed, "{e:?}");
        let server = e.server.as_ref().unwrap();
        let public = server.public_ip.clone().unwrap_or_else(|| panic!("no public_ip in {e:?}"));
        assert_eq!(public.network, "public");
        assert!(public.ip.starts_with("203.0.113."), "{public:?}");
        let port = e.port_id.clone().unwrap();
        // As `openstack floating ip show` sees it: ours, on our port, ACTIVE.
        let (status, f) =
            api(&stack.sim, &demo, Method::GET, &format!("/networking/v2.0/floatingips/{}", public.id), None)
                .await;
        assert_eq!(status, 200, "{f}");
        let f = &f["floatingip"];
        assert_eq!(f["floating_ip_address"], public.ip.as_str());
        assert_eq!(
            (f["port_id"].as_str(), f["status"].as_str()),
            (Some(port.as_str()), Some("ACTIVE")),
            "{f}"
        );
        assert_eq!(
            (f["floating_network_id"].as_str(), f["project_id"].as_str()),
            (Some(PUBLIC_NET_ID), Some(DEMO_PROJECT_ID))
        );
        let tags: Vec<&str> = f["tags"].as_array().unwrap().iter().filter_map(|t| t.as_str()).collect();
        assert!(tags.contains(&"provisioner") && tags.contains(&format!("job-{}", e.job_id).as_str()), "{f}");
        let (_, p) =
            api(&stack.sim, &demo, Method::GET, &format!("/networking/v2.0/ports/{port}"), None).await;
        assert_eq!(f["fixed_ip_address"], p["port"]["fixed_ips"][0]["ip_address"], "{f} {p}");
        // As `openstack server show` sees it: Nova's addresses carry it as `floating`, under
        // the port's network; the event's addresses too.
        let (_, s) =
            api(&stack.sim, &demo, Method::GET, &format!("/compute/v2.1/servers/{}", server.id), None).await;
        let private = s["server"]["addresses"]["private"].as_array().unwrap().clone();
        let kinds: Vec<(String, String)> = private
            .iter()
            .map(|a| {
                (a["addr"].as_str().unwrap().to_string(), a["OS-EXT-IPS:type"].as_str().unwrap().to_string())
            })
            .collect();
        assert!(kinds.contains(&(public.ip.clone(), "floating".to_string())), "{s}");
        assert!(kinds.iter().any(|(_, t)| t == "fixed"), "{s}");
        assert!(server.addresses.iter().any(|a| a.ip == public.ip), "{e:?}");
        assert_eq!(fips_of(&stack.sim, &e.job_id).await.len(), 1);
    }
    // Not an external network, or none of that name: failed at resolve, nothing allocated.
    let e = event_of(&stack, "fip-internal");
    let err = e.error.as_ref().unwrap();
    assert_eq!(
        (e.event_type, err.class, err.step.as_str()),
        (EventType::Failed, ErrorClass::CloudError, "resolve"),
        "{e:?}"
    );
    assert!(err.message.contains("not an external network"), "{e:?}");
    let e = event_of(&stack, "fip-nowhere");
    let err = e.error.as_ref().unwrap();
    assert_eq!((err.class, err.step.as_str()), (ErrorClass::NotFound, "resolve"), "{e:?}");
    assert_eq!(all_fips(&stack.sim).await.len(), 2);

    // Terminate releases it (before the port goes), and leaves no floating IP behind.
    stack
        .env
        .publish_keyed([
            action("fip-name-T", "terminate", "fip-name"),
            action("fip-id-T", "terminate", "fip-id"),
        ])
        .await;
    stack.wait_events(orders.len() + 2, WAIT).await;
    for order_id in ["fip-name-T", "fip-id-T"] {
        assert_eq!(event_of(&stack, order_id).event_type, EventType::Completed);
    }
    assert!(all_fips(&stack.sim).await.is_empty(), "{:?}", all_fips(&stack.sim).await);
    let steps: Vec<String> = sqlx::query_scalar(
        "SELECT h.to_step FROM job_history h JOIN jobs j ON j.id = h.job_id WHERE j.order_id = 'fip-name-T' ORDER BY h.id",
    )
    .fetch_all(stack.env.store.pool())
    .await
    .unwrap();
    let at = |s: &str| steps.iter().position(|x| x == s).unwrap_or_else(|| panic!("{s} not in {steps:?}"));
    assert!(at("release_public_ip") < at("delete_port"), "{steps:?}");
    assert_eq!(demo_ports(&stack), 0);
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_quota_exhausted_fails_with_quota_and_rollbacks_release_the_floating_ip() {
    let mut stack = Stack::new(fast()).await;
    let control = stack.sim.control();
    control
        .set_quotas(DEMO_PROJECT_ID, QuotaPatch { floating_ips: Some(1), ..QuotaPatch::default() })
        .unwrap();
    let (stop, run) = run_app(&stack).await;
    stack.env.publish(public_order("fip-first", "public").to_string().as_bytes()).await;
    stack.wait_events(1, WAIT).await;
    assert_eq!(event_of(&stack, "fip-first").event_type, EventType::Completed);

    // The quota is used up: Neutron's 409 OverQuota is classified as quota, not retried; the
    // rollback deletes the port made before it.
    stack.env.publish(public_order("fip-over", "public").to_string().as_bytes()).await;
    stack.wait_events(2, WAIT).await;
    let e = event_of(&stack, "fip-over");
    let err = e.error.as_ref().unwrap();
    assert_eq!(
        (e.event_type, err.class, err.step.as_str()),
        (EventType::Failed, ErrorClass::QuotaExceeded, "allocate_public_ip"),
        "{e:?}"
    );
    assert!(err.message.contains("Quota exceeded for resources: ['floatingip']"), "{e:?}");
    assert_eq!(control.count("POST", "/networking/v2.0/floatingips"), 2, "the quota error was retried");
    wait_until(WAIT, "the rollback deleted the port", || async { demo_ports(&stack) == 1 }).await;

    // A failure after the floating IP was allocated and associated: the rollback releases it.
    control
        .set_quotas(DEMO_PROJECT_ID, QuotaPatch { floating_ips: Some(10), ..QuotaPatch::default() })
        .unwrap();
    control
        .add_fault(FaultRule {
            service: Some("compute".into()),
            method: Some("POST".into()),
            path: Some("/servers$".into()),
            server_error: Some("No valid host was found.".into()),
            times: Some(1),
            ..Default::default()
        })
        .unwrap();
    stack.env.publish(public_order("fip-rollback", "public").to_string().as_bytes()).await;
    stack.wait_events(3, WAIT).await;
    let e = event_of(&stack, "fip-rollback").clone();
    assert_eq!(e.event_type, EventType::Failed, "{e:?}");
    assert!(e.error.as_ref().unwrap().message.contains("No valid host"), "{e:?}");
    wait_until(WAIT, "the rollback released the floating IP and deleted the port", || async {
        fips_of(&stack.sim, &e.job_id).await.is_empty() && demo_ports(&stack) == 1
    })
    .await;
    assert_eq!(all_fips(&stack.sim).await.len(), 1, "only the first order's");
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

/// Neutron carries out the request, then its answer is held: the worker is killed without
/// learning it, and its successor must adopt what was made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_allocated_or_associated_before_a_sigkill_is_adopted_never_doubled() {
    let mut stack = Stack::new(fast()).await;
    let control = stack.sim.control();
    let creates = control.add_fault(counting("network", "POST", "/floatingips$")).unwrap();
    let mut worker = stack.child("fip-k0");
    wait_ready(&worker).await;
    for (n, (order_id, method, path, made)) in [
        ("fip-kill-allocate", "POST", "/floatingips$", "neutron allocated the floating IP"),
        ("fip-kill-associate", "PUT", "/floatingips/[^/]+$", "neutron associated the floating IP"),
    ]
    .into_iter()
    .enumerate()
    {
        control.add_fault(held_answer("network", method, path)).unwrap();
        stack.env.publish(public_order(order_id, "public").to_string().as_bytes()).await;
        wait_until(WAIT, made, || async {
            let fips = all_fips(&stack.sim).await;
            fips.len() == n + 1 && (method == "POST" || fips.iter().all(|f| f["port_id"].is_string()))
        })
        .await;
        worker.kill().await;
        worker = stack.child(&format!("fip-k{}", n + 1));
        stack.wait_events(n + 1, Duration::from_secs(90)).await;
        let e = event_of(&stack, order_id).clone();
        assert_eq!(e.event_type, EventType::Completed, "{e:?}");
        let mine = fips_of(&stack.sim, &e.job_id).await;
        assert_eq!(mine.len(), 1, "{order_id}: exactly one floating IP: {mine:?}");
        assert_eq!(mine[0]["port_id"].as_str(), e.port_id.as_deref(), "{mine:?}");
        assert_eq!(
            e.server.as_ref().unwrap().public_ip.as_ref().map(|p| p.id.as_str()),
            mine[0]["id"].as_str()
        );
        let fired = control.faults().into_iter().find(|f| f.id == creates).map(|f| f.fired);
        assert_eq!(fired, Some(n as u64 + 1), "{order_id}: a second floating IP was asked for");
    }
    wait_services(
        &stack,
        &["fip-kill-allocate".to_string(), "fip-kill-associate".to_string()],
        "active",
        WAIT,
    )
    .await;
    worker.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ip_orphans_are_found_by_the_reconciler_and_a_held_one_is_never_touched() {
    use openstack_provisioner::config::OrphanPolicy;
    use openstack_provisioner::engine::cloud::FloatingIpSpec;
    use openstack_provisioner::engine::reconcile::{ReconcileConfig, Reconciler};

    let mut stack = Stack::new(fast()).await;
    let (stop, run) = run_app(&stack).await;
    stack.env.publish(public_order("fip-held", "public").to_string().as_bytes()).await;
    stack.wait_events(1, WAIT).await;
    let held = event_of(&stack, "fip-held").server.as_ref().unwrap().public_ip.clone().unwrap();
    wait_services(&stack, &["fip-held".to_string()], "active", WAIT).await;
    // Made by hand with our marks, for a job that never existed.
    let cloud: Arc<dyn Cloud> = Arc::new(OpenStackCloud::new(session(&stack)));
    let ghost = uuid::Uuid::new_v4();
    let spec = FloatingIpSpec {
        network_id: PUBLIC_NET_ID.into(),
        description: "orphan".into(),
        tags: vec![format!("job-{ghost}"), "provisioner".into()],
    };
    let orphan = cloud.create_floating_ip(DEMO_PROJECT_ID, &spec).await.expect("allocate").id;

    let mut settings = stack.env.settings.clone();
    settings.reconcile.grace_secs = 0;
    settings.reconcile.orphans = OrphanPolicy::Delete;
    let cfg = ReconcileConfig::from_settings(&settings, "test-reconciler".into());
    let reconciler =
        Reconciler::new(stack.env.store.clone(), cloud.clone(), cfg, Arc::new(tokio::sync::Notify::new()));
    let report = reconciler.run_once().await.expect("pass");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let found: Vec<(&str, &str, &str)> = report
        .findings
        .iter()
        .map(|f| (f.resource_type.as_str(), f.resource_id.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(found, [("floating_ip", orphan.as_str(), "job_missing")], "{:?}", report.findings);
    let left: Vec<String> =
        all_fips(&stack.sim).await.iter().map(|f| f["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, vec![held.id.clone()], "the orphan is released, the service's floating IP kept");
    let again = reconciler.run_once().await.expect("second pass");
    assert_eq!(again.new_findings, 0, "{:?}", again.findings);
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}
