//! Tests: what an order asks of Neutron beyond its port (issue 15): `server.security_groups`
//! resolved in the order's project and applied to the port we create (visible in Neutron's port
//! and Nova's server as a real cloud shows them), pre-flight naming a group that does not
//! resolve.

use std::sync::Arc;

use openstack_provisioner::engine::cloud::Cloud;
use openstack_provisioner::engine::openstack_cloud::OpenStackCloud;
use openstack_provisioner::engine::preflight::check_order;
use openstack_provisioner::messages::{ErrorClass, Event, EventType, Order};
use openstack_provisioner::openstack::session::{Session, SessionOptions};
use openstack_provisioner::sim::{DEMO_PROJECT_ID, SimHandle};
use reqwest::Method;
use serde_json::{Value, json};

use crate::engine::run_app;
use crate::engine::stack::{Stack, fast};
use crate::helpers::WAIT;

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
