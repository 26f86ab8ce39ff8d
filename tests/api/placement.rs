//! Tests: where an order's server goes (issue 15): `server.availability_zone` (Nova's
//! `availability_zone`, shown as `OS-EXT-AZ:availability_zone`, reported in `job.completed`)
//! and `server.server_group` (an existing group of the order's project by id or name, sent as
//! the scheduler hint `group`, whose anti-affinity the simulator's scheduler honours). Each is
//! visible through the public API as Nova shows it; a zone that is not available and a group
//! that does not resolve fail the order `invalid_order` before a server is made (pre-flight
//! says so first); terminate and a rollback leave the group without the member; a server whose
//! create was in flight at a SIGKILL is adopted, never doubled, in its zone and group.

use std::sync::Arc;
use std::time::Duration;

use openstack_provisioner::config::Toggle;
use openstack_provisioner::engine::openstack_cloud::OpenStackCloud;
use openstack_provisioner::engine::preflight::check_order;
use openstack_provisioner::messages::{ErrorClass, EventType, Order};
use openstack_provisioner::openstack::session::{Session, SessionOptions};
use openstack_provisioner::sim::DEMO_PROJECT_ID;
use reqwest::Method;
use serde_json::{Value, json};

use crate::engine::stack::{Stack, fast};
use crate::engine::{run_app, wait_ready};
use crate::helpers::{WAIT, counting, held_answer, wait_until};
use crate::lifecycle::{action, wait_services};
use crate::network::{event_of, order_with};

/// Calls the simulator's Nova as the service user in the demo project at a microversion:
/// (status, JSON body or `null`).
async fn nova(stack: &Stack, method: Method, path: &str, body: Option<Value>, mv: &str) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = stack.sim.control().issue_token("provisioner", "provisioner", DEMO_PROJECT_ID).unwrap();
    let mut req = reqwest::Client::new()
        .request(method, format!("{}/compute/v2.1{path}", stack.sim.url()))
        .header("X-Auth-Token", token)
        .header("OpenStack-API-Version", format!("compute {mv}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("call the simulator");
    let status = resp.status().as_u16();
    (status, serde_json::from_str(&resp.text().await.unwrap_or_default()).unwrap_or(Value::Null))
}

/// Makes a server group in the demo project, the way before 2.64 (`policies`); its id.
async fn make_group(stack: &Stack, name: &str, policy: &str) -> String {
    let body = json!({"server_group": {"name": name, "policies": [policy]}});
    let (status, g) = nova(stack, Method::POST, "/os-server-groups", Some(body), "2.1").await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["server_group"]["policies"], json!([policy]), "{g}");
    g["server_group"]["id"].as_str().unwrap().to_string()
}

/// The group's members as Nova shows them (servers not deleted).
async fn members(stack: &Stack, group: &str) -> Vec<String> {
    let (status, g) = nova(stack, Method::GET, &format!("/os-server-groups/{group}"), None, "2.101").await;
    assert_eq!(status, 200, "{g}");
    assert_eq!(g["server_group"]["policy"], "anti-affinity", "2.64+ shows one policy: {g}");
    serde_json::from_value(g["server_group"]["members"].clone()).unwrap()
}

async fn server(stack: &Stack, id: &str) -> Value {
    let (status, s) = nova(stack, Method::GET, &format!("/servers/{id}"), None, "2.101").await;
    assert_eq!(status, 200, "{s}");
    s["server"].clone()
}

fn publish_body(o: &Value) -> Vec<u8> {
    o.to_string().into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_zone_and_group_are_shown_as_nova_shows_them_and_terminate_and_rollback_drop_the_member() {
    let mut stack = Stack::new(fast()).await;
    let group = make_group(&stack, "db", "anti-affinity").await;
    let (stop, run) = run_app(&stack).await;
    let orders = [
        order_with("pl-az2", DEMO_PROJECT_ID, json!({"availability_zone": "az2", "server_group": "db"})),
        order_with("pl-group-id", DEMO_PROJECT_ID, json!({"server_group": group})),
        order_with("pl-plain", DEMO_PROJECT_ID, json!({})),
    ];
    stack.env.publish_all(orders.iter().map(publish_body)).await;
    stack.wait_events(orders.len(), WAIT).await;
    let mut ids = Vec::new();
    for (order_id, zone) in [("pl-az2", "az2"), ("pl-group-id", "nova"), ("pl-plain", "nova")] {
        let e = event_of(&stack, order_id).clone();
        assert_eq!(e.event_type, EventType::Completed, "{e:?}");
        let reported = e.server.as_ref().unwrap();
        // The zone Nova placed it in, reported whether the order named one or not.
        assert_eq!(reported.availability_zone.as_deref(), Some(zone), "{order_id}: {e:?}");
        let s = server(&stack, &reported.id).await;
        // As `openstack server show` sees it.
        assert_eq!(s["OS-EXT-AZ:availability_zone"], zone, "{order_id}: {s}");
        ids.push((reported.id.clone(), s));
    }
    let (az2, by_id, plain) = (&ids[0], &ids[1], &ids[2]);
    assert_eq!(az2.1["pinned_availability_zone"], "az2", "2.96: the zone asked for");
    assert_eq!(by_id.1["pinned_availability_zone"], Value::Null, "none asked for");
    for (id, s) in [az2, by_id] {
        assert_eq!(s["server_groups"], json!([group]), "{id}: 2.71 names the group: {s}");
        assert_eq!(
            s["scheduler_hints"]["group"],
            json!([group]),
            "{id}: 2.100 shows the hint as Nova keeps it: {s}"
        );
    }
    assert_eq!(plain.1["server_groups"], json!([]), "{}", plain.1);
    // Anti-affinity: the member not pinned to az2 went to the other zone's host.
    assert_ne!(az2.1["hostId"], by_id.1["hostId"], "two members of an anti-affinity group share a host");
    let mut got = members(&stack, &group).await;
    got.sort();
    let mut want = vec![az2.0.clone(), by_id.0.clone()];
    want.sort();
    assert_eq!(got, want);
    // The detail list does not carry server_groups (Nova shows them in a server's show only).
    let (_, list) = nova(&stack, Method::GET, "/servers/detail", None, "2.101").await;
    assert!(list["servers"].as_array().unwrap().iter().all(|s| s.get("server_groups").is_none()), "{list}");

    // Terminate: nothing of the group is deleted, the server leaves its members.
    stack.env.publish_keyed([action("pl-az2-T", "terminate", "pl-az2")]).await;
    stack.wait_events(orders.len() + 1, WAIT).await;
    assert_eq!(event_of(&stack, "pl-az2-T").event_type, EventType::Completed);
    assert_eq!(members(&stack, &group).await, vec![by_id.0.clone()], "terminate left the member");

    // A create in the group that fails after its server was made (Cinder refuses the
    // volume): the rollback deletes the server, and the group loses the member.
    let mut rb = order_with("pl-rollback", DEMO_PROJECT_ID, json!({"server_group": "db"}));
    rb["volume"] = json!({"size_gb": 16000});
    stack.sim.control().set_quotas(DEMO_PROJECT_ID, quota_gigabytes(10)).unwrap();
    stack.env.publish(&publish_body(&rb)).await;
    stack.wait_events(orders.len() + 2, WAIT).await;
    let e = event_of(&stack, "pl-rollback").clone();
    assert_eq!(e.event_type, EventType::Failed, "{e:?}");
    assert_eq!(e.error.as_ref().unwrap().class, ErrorClass::QuotaExceeded, "{e:?}");
    // The server was made in the group (Nova's changes-since list still shows it, DELETED,
    // with its hint) and is no member any more.
    let (_, changed) =
        nova(&stack, Method::GET, "/servers/detail?changes-since=2000-01-01T00:00:00Z", None, "2.101").await;
    let made: Vec<&Value> = changed["servers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["metadata"]["provisioner_job"] == e.job_id.to_string().as_str())
        .collect();
    assert_eq!(made.len(), 1, "{changed}");
    assert_eq!(made[0]["status"], "DELETED");
    assert_eq!(made[0]["scheduler_hints"]["group"], json!([group]), "{}", made[0]);
    assert_eq!(members(&stack, &group).await, vec![by_id.0.clone()], "the rollback left the member");
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

fn quota_gigabytes(gb: i64) -> openstack_provisioner::sim::QuotaPatch {
    openstack_provisioner::sim::QuotaPatch { gigabytes: Some(gb), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_unknown_zone_or_group_fails_the_order_before_a_server_and_preflight_says_so() {
    let mut stack = Stack::new(fast()).await;
    let group = make_group(&stack, "web", "anti-affinity").await;
    make_group(&stack, "twin", "affinity").await;
    make_group(&stack, "twin", "affinity").await;
    // Pre-flight, as `provisioner order check` runs it.
    let session = Arc::new(Session::new(stack.cloud(), SessionOptions::default()).expect("session"));
    let cloud = OpenStackCloud::new(session);
    let check = |server: Value| {
        let o: Order = serde_json::from_value(order_with("pl-check", DEMO_PROJECT_ID, server)).unwrap();
        let cloud = &cloud;
        async move { check_order(cloud, &o).await }
    };
    let good = check(json!({"availability_zone": "az2", "server_group": "web"})).await;
    assert!(good.ok, "{good:?}");
    let detail = |r: &openstack_provisioner::engine::preflight::Report, name: &str| {
        r.checks.iter().find(|c| c.check == name).cloned().unwrap_or_else(|| panic!("no {name} check: {r:?}"))
    };
    assert!(detail(&good, "server_group").detail.contains(&group), "{good:?}");
    for (server, name, says) in [
        (json!({"availability_zone": "nowhere"}), "availability_zone", "available zones are nova, az2"),
        (json!({"server_group": "no-such-group"}), "server_group", "no server group \"no-such-group\""),
        (json!({"server_group": "twin"}), "server_group", "2 server groups are named \"twin\""),
    ] {
        let r = check(server.clone()).await;
        let c = detail(&r, name);
        assert!(!r.ok && !c.ok, "{server}: {r:?}");
        assert_eq!(c.class, Some(ErrorClass::InvalidOrder), "{server}: {c:?}");
        assert!(c.detail.contains(says), "{server}: {c:?}");
    }

    // Without pre-flight: Nova's own 400 for the zone, the resolve step for the groups.
    let (stop, run) = run_app(&stack).await;
    let orders = [
        (
            "pl-nowhere",
            json!({"availability_zone": "nowhere"}),
            "The requested availability zone is not available",
        ),
        ("pl-no-group", json!({"server_group": "no-such-group"}), "no server group \"no-such-group\""),
        ("pl-twin", json!({"server_group": "twin"}), "2 server groups are named \"twin\""),
    ];
    stack
        .env
        .publish_all(
            orders.iter().map(|(id, s, _)| publish_body(&order_with(id, DEMO_PROJECT_ID, s.clone()))),
        )
        .await;
    stack.wait_events(orders.len(), WAIT).await;
    for (order_id, _, says) in &orders {
        let e = event_of(&stack, order_id);
        assert_eq!(e.event_type, EventType::Failed, "{e:?}");
        let err = e.error.as_ref().unwrap();
        assert_eq!(err.class, ErrorClass::InvalidOrder, "{order_id}: {e:?}");
        assert!(err.message.contains(says), "{order_id}: {e:?}");
        assert!(e.server.is_none(), "{e:?}");
    }
    // Nova answered 400 to the one create that was sent; no server exists, the ports are gone.
    assert_eq!(stack.sim.control().count("POST", "/compute/v2.1/servers"), 1);
    let control = stack.sim.control();
    wait_until(WAIT, "the rollbacks deleted the ports", || async {
        let p = control.resources().projects.get(DEMO_PROJECT_ID).cloned().unwrap_or_default();
        p.servers.values().sum::<usize>() == 0 && p.ports.values().sum::<usize>() == 0
    })
    .await;
    stop.cancel();
    run.await.unwrap();

    // With PROVISIONER_PREFLIGHT=on the zone fails at resolve, before any create call.
    stack.env.settings.preflight = Toggle::On;
    let ports_before = control.count("POST", "/networking/v2.0/ports");
    let (stop, run) = run_app(&stack).await;
    stack
        .env
        .publish(&publish_body(&order_with(
            "pl-fast",
            DEMO_PROJECT_ID,
            json!({"availability_zone": "nowhere"}),
        )))
        .await;
    stack.wait_events(orders.len() + 1, WAIT).await;
    let e = event_of(&stack, "pl-fast");
    let err = e.error.as_ref().unwrap();
    assert_eq!((err.class, err.step.as_str()), (ErrorClass::InvalidOrder, "resolve"), "{e:?}");
    assert!(err.message.starts_with("pre-flight: availability_zone"), "{e:?}");
    assert_eq!(control.count("POST", "/networking/v2.0/ports"), ports_before, "a port was made");
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_server_created_before_a_sigkill_is_adopted_once_in_its_zone_and_group() {
    let mut stack = Stack::new(fast()).await;
    let group = make_group(&stack, "kill", "anti-affinity").await;
    let control = stack.sim.control();
    // Nova makes the server, then its answer is held: the worker dies without learning its id.
    control.add_fault(held_answer("compute", "POST", "/servers$")).unwrap();
    // A rule with no effect counts the create requests.
    let creates = control.add_fault(counting("compute", "POST", "/servers$")).unwrap();
    let mut first = stack.child("pl-k0");
    wait_ready(&first).await;
    let o =
        order_with("pl-kill", DEMO_PROJECT_ID, json!({"availability_zone": "az2", "server_group": "kill"}));
    stack.env.publish(&publish_body(&o)).await;
    let s = &stack;
    wait_until(Duration::from_secs(30), "nova made the server in the group", || async {
        members(s, &group).await.len() == 1
    })
    .await;
    first.kill().await;
    let mut second = stack.child("pl-k1");
    stack.wait_events(1, Duration::from_secs(90)).await;
    let e = event_of(&stack, "pl-kill").clone();
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let id = e.server.as_ref().unwrap().id.clone();
    assert_eq!(e.server.as_ref().unwrap().availability_zone.as_deref(), Some("az2"), "{e:?}");
    let fired = control.faults().into_iter().find(|f| f.id == creates).map(|f| f.fired);
    assert_eq!(fired, Some(1), "a second server was asked for");
    let (_, list) =
        nova(&stack, Method::GET, &format!("/servers/detail?tags=job-{}", e.job_id), None, "2.101").await;
    let mine: Vec<&str> =
        list["servers"].as_array().unwrap().iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(mine, vec![id.as_str()], "exactly one server of the job: {list}");
    assert_eq!(server(&stack, &id).await["OS-EXT-AZ:availability_zone"], "az2");
    assert_eq!(members(&stack, &group).await, vec![id.clone()], "one member");
    wait_services(&stack, &["pl-kill".to_string()], "active", WAIT).await;
    second.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}
