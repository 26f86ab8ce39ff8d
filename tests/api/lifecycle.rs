//! The service lifecycle (issue 11): suspend, unsuspend, resize and terminate orders on the
//! services that create orders made, against the real MariaDB and RabbitMQ and the simulator.

use std::collections::HashMap;
use std::time::Duration;

use openstack_provisioner::messages::{ErrorClass, Event, EventType};
use openstack_provisioner::sim::{DEMO_PROJECT_ID, FaultRule, Timings};

use crate::engine::stack::{Stack, fast, order};
use crate::engine::{run_app, wait_ready};
use crate::helpers::{WAIT, header_text, wait_until};

/// An action order body.
pub fn action(order_id: &str, action: &str, target: &str) -> Vec<u8> {
    let mut o =
        serde_json::json!({"version": 1, "order_id": order_id, "action": action, "target_order_id": target});
    if action == "resize" {
        o["flavor"] = "m1.small".into();
    }
    o.to_string().into_bytes()
}

/// `service_status` rows: target → (state, server, port, volume, flavor, last action).
type ServiceView = (String, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);
type ServiceRow =
    (String, String, Option<String>, Option<String>, Option<String>, Option<String>, Option<String>);

pub async fn services(stack: &Stack) -> HashMap<String, ServiceView> {
    let rows: Vec<ServiceRow> = sqlx::query_as(
        "SELECT target_order_id, state, server_id, port_id, volume_id, flavor, last_action_order_id \
             FROM service_status",
    )
    .fetch_all(stack.env.store.pool())
    .await
    .expect("read service_status");
    rows.into_iter().map(|(t, s, a, b, c, d, e)| (t, (s, a, b, c, d, e))).collect()
}

/// Waits until every service in `targets` is in `state`.
pub async fn wait_services(stack: &Stack, targets: &[String], state: &str, timeout: Duration) {
    let mut last = HashMap::new();
    let ok = tokio::time::timeout(timeout, async {
        loop {
            last = services(stack).await;
            if targets.iter().all(|t| last.get(t).is_some_and(|s| s.0 == state)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if ok.is_err() {
        let off: Vec<_> =
            targets.iter().filter(|t| last.get(*t).is_none_or(|s| s.0 != state)).take(5).collect();
        let shown: Vec<_> = off.iter().map(|t| (t, last.get(*t))).collect();
        panic!("services not all {state} after {timeout:?}: {shown:?}");
    }
}

/// The events of one order.
fn events_of<'a>(stack: &'a Stack, order_id: &str) -> Vec<&'a Event> {
    stack.events.values().filter(|e| e.order_id == order_id).collect()
}

/// Waits until the demo project holds nothing (servers, ports, volumes).
async fn assert_demo_empty(stack: &Stack) {
    let control = stack.sim.control();
    let ok = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let p = control.resources().projects.get(DEMO_PROJECT_ID).cloned().unwrap_or_default();
            if p.servers.values().sum::<usize>() == 0
                && p.ports.values().sum::<usize>() == 0
                && p.volumes.values().sum::<usize>() == 0
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(ok.is_ok(), "the cloud is not empty: {:?}", control.resources().projects.get(DEMO_PROJECT_ID));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_terminate_deletes_volume_server_and_port_in_order_and_once() {
    let mut stack = Stack::new(fast()).await;
    let (token, run) = run_app(&stack).await;
    let creates: Vec<String> = (0..10).map(|i| format!("term-{i}")).collect();
    stack
        .env
        .publish_all(creates.iter().enumerate().map(|(i, id)| order(id, DEMO_PROJECT_ID, i % 2 == 0)))
        .await;
    stack.wait_events(10, Duration::from_secs(60)).await;
    wait_services(&stack, &creates, "active", WAIT).await;
    let before = services(&stack).await;
    for t in &creates {
        let s = &before[t];
        assert!(s.1.is_some() && s.2.is_some(), "{t}: {s:?}");
        assert_eq!(s.4.as_deref(), Some("m1.tiny"), "{t}: the flavor's Nova name");
        assert_eq!(s.5.as_deref(), Some(t.as_str()), "the create is the last action so far");
    }

    stack.sim.control().reset_counters();
    stack.env.publish_keyed(creates.iter().map(|t| action(&format!("{t}-T"), "terminate", t))).await;
    stack.wait_events(20, Duration::from_secs(60)).await;
    wait_services(&stack, &creates, "terminated", WAIT).await;
    assert_demo_empty(&stack).await;
    for (i, t) in creates.iter().enumerate() {
        let evs = events_of(&stack, &format!("{t}-T"));
        assert_eq!(evs.len(), 1, "{t}: one event: {evs:?}");
        let e = evs[0];
        assert_eq!(e.event_type, EventType::Completed, "{e:?}");
        assert_eq!(e.action.as_deref(), Some("terminate"));
        assert_eq!(e.target_order_id.as_deref(), Some(t.as_str()));
        let server = e.server.as_ref().expect("the deleted server");
        assert_eq!(Some(&server.id), before[t].1.as_ref());
        assert_eq!(server.status, "DELETED");
        assert_eq!(e.port_id, before[t].2);
        if i % 2 == 0 {
            let v = e.volume.as_ref().expect("the deleted volume");
            assert_eq!(Some(&v.id), before[t].3.as_ref());
            assert_eq!(v.kept, None, "deleted, not kept");
        }
    }
    let after = services(&stack).await;
    for t in &creates {
        assert_eq!(after[t].1, before[t].1, "service_status keeps what it had");
        assert_eq!(after[t].5.as_deref(), Some(format!("{t}-T").as_str()));
    }
    // The deletes, in the contract's order, each once per service.
    let control = stack.sim.control();
    assert_eq!(control.count("DELETE", "/compute/v2.1/servers/{id}"), 10);
    assert_eq!(control.count("DELETE", "/networking/v2.0/ports/{id}"), 10);
    let deletes: Vec<_> = control.counters().into_iter().filter(|c| c.method == "DELETE").collect();
    assert_eq!(control.count("DELETE", "/volume/v3/{project_id}/volumes/{id}"), 5, "{deletes:?}");
    assert_eq!(control.count("DELETE", "/compute/v2.1/servers/{id}/os-volume_attachments/{volume_id}"), 5);
    let job = stack.env.store.job_detail(&format!("{}-T", creates[0])).await.unwrap().unwrap();
    let steps: Vec<&str> = job.history.iter().filter_map(|h| h.from_step.as_deref()).collect();
    let order_of = |s: &str| steps.iter().position(|x| *x == s).unwrap_or_else(|| panic!("{s} in {steps:?}"));
    assert!(order_of("detach_volume") < order_of("delete_volume"));
    assert!(order_of("delete_volume") < order_of("delete_server"));
    assert!(order_of("wait_server_gone") < order_of("delete_port"));

    // Terminating a terminated service completes at once, with nothing called.
    control.reset_counters();
    stack.env.publish_keyed([action("term-0-T2", "terminate", "term-0")]).await;
    stack.wait_events(21, Duration::from_secs(30)).await;
    let e = events_of(&stack, "term-0-T2")[0];
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let calls: u64 = control.counters().iter().map(|c| c.count).sum();
    assert_eq!(calls, 0, "a terminate of a terminated service called the cloud: {:?}", control.counters());
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_terminate_right_after_create_leaves_nothing_in_the_cloud() {
    let timings = Timings { boot_mean_ms: 400, boot_jitter_ms: 100, ..fast() };
    let mut stack = Stack::new(timings).await;
    let (token, run) = run_app(&stack).await;
    // Back to back: most terminates commit while their create is queued or building.
    let mut bodies = Vec::new();
    for i in 0..20 {
        let id = format!("quick-{i}");
        bodies.push(order(&id, DEMO_PROJECT_ID, i % 2 == 0));
        bodies.push(action(&format!("{id}-T"), "terminate", &id));
    }
    stack.env.publish_keyed(bodies).await;
    stack.wait_events(40, Duration::from_secs(90)).await;
    let targets: Vec<String> = (0..20).map(|i| format!("quick-{i}")).collect();
    wait_services(&stack, &targets, "terminated", WAIT).await;
    assert_demo_empty(&stack).await;
    for t in &targets {
        let create = events_of(&stack, t);
        assert_eq!(create.len(), 1, "{create:?}");
        // The create either finished first, or was cancelled (and rolled back) by the terminate.
        assert!(matches!(create[0].event_type, EventType::Completed | EventType::Cancelled), "{create:?}");
        if create[0].event_type == EventType::Cancelled {
            let err = create[0].error.as_ref().unwrap();
            assert!(err.message.contains("superseded by terminate"), "{err:?}");
        }
        let term = events_of(&stack, &format!("{t}-T"));
        assert_eq!(term.len(), 1);
        assert_eq!(term[0].event_type, EventType::Completed, "{term:?}");
    }
    let cancelled = stack.of_type(EventType::Cancelled).len();
    assert!(cancelled > 0, "no create was still running when its terminate came");
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_bad_actions_are_dead_lettered_with_their_reason() {
    let mut stack = Stack::new(fast()).await;
    stack.env.settings.intake.target_grace_secs = 1;
    let (token, run) = run_app(&stack).await;
    stack.env.publish(&order("bad-1", DEMO_PROJECT_ID, false)).await;
    stack.wait_events(1, Duration::from_secs(30)).await;
    // An unknown target, a key that says another action, resize without a flavor, an unknown
    // field, and an unknown routing key.
    stack.env.publish_with("order.terminate", &action("bad-a", "terminate", "no-such-order")).await;
    stack.env.publish_with("order.suspend", &action("bad-b", "terminate", "bad-1")).await;
    stack
        .env
        .publish_with(
            "order.resize",
            br#"{"version":1,"order_id":"bad-c","action":"resize","target_order_id":"bad-1"}"#,
        )
        .await;
    stack
        .env
        .publish_with(
            "order.suspend",
            br#"{"version":1,"order_id":"bad-d","action":"suspend","target_order_id":"bad-1","force":true}"#,
        )
        .await;
    stack.env.publish_with("order.reboot", &action("bad-e", "suspend", "bad-1")).await;
    let dead = &stack.env.names.dead_queue;
    wait_until(WAIT, "five dead letters", || async { stack.env.queue_counts(dead).await.0 == 5 }).await;
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
    assert!(reasons["bad-a"].contains("no service was created by order \"no-such-order\""), "{reasons:?}");
    assert!(reasons["bad-b"].contains("routing key order.suspend says suspend"), "{reasons:?}");
    assert!(reasons["bad-c"].contains("flavor"), "{reasons:?}");
    assert!(reasons["bad-d"].contains("force"), "{reasons:?}");
    assert!(reasons["bad-e"].contains("order.reboot"), "{reasons:?}");
    assert_eq!(stack.env.count_jobs().await, 1, "no job for a bad action");
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_an_action_before_its_create_commits_waits_for_it() {
    // The terminate reaches intake before its create (another worker's batch, in production):
    // it is held back, unacked, and queued once the create commits.
    let mut stack = Stack::new(fast()).await;
    stack.env.settings.intake.target_grace_secs = 30;
    let (token, run) = run_app(&stack).await;
    stack.env.publish_keyed([action("early-T", "terminate", "early")]).await;
    // Delivered to intake (no longer ready in the queue) before its create is even published.
    let orders = &stack.env.names.orders_queue;
    wait_until(WAIT, "intake took the terminate", || async { stack.env.queue_counts(orders).await.0 == 0 })
        .await;
    stack.env.publish(&order("early", DEMO_PROJECT_ID, true)).await;
    stack.wait_events(2, Duration::from_secs(60)).await;
    wait_services(&stack, &["early".to_string()], "terminated", WAIT).await;
    assert_demo_empty(&stack).await;
    assert_eq!(events_of(&stack, "early-T")[0].event_type, EventType::Completed);
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_terminate_can_keep_the_volume_and_says_so() {
    let mut stack = Stack::new(fast()).await;
    stack.env.settings.lifecycle.delete_volumes = false;
    let (token, run) = run_app(&stack).await;
    stack.env.publish(&order("keep-1", DEMO_PROJECT_ID, true)).await;
    stack.wait_events(1, Duration::from_secs(30)).await;
    stack.env.publish_keyed([action("keep-1-T", "terminate", "keep-1")]).await;
    stack.wait_events(2, Duration::from_secs(30)).await;
    let e = events_of(&stack, "keep-1-T")[0].clone();
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let v = e.volume.expect("the kept volume");
    assert_eq!(v.kept, Some(true));
    let p = stack.sim.control().resources().projects.get(DEMO_PROJECT_ID).cloned().unwrap_or_default();
    assert_eq!(p.servers.values().sum::<usize>(), 0, "{p:?}");
    assert_eq!(p.ports.values().sum::<usize>(), 0, "{p:?}");
    assert_eq!(p.volumes.get("available").copied(), Some(1), "the volume is detached and kept: {p:?}");
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_terminate_of_a_server_deleted_by_hand_completes() {
    let mut stack = Stack::new(fast()).await;
    let (token, run) = run_app(&stack).await;
    stack.env.publish(&order("byhand-1", DEMO_PROJECT_ID, false)).await;
    stack.wait_events(1, Duration::from_secs(30)).await;
    let server = services(&stack).await["byhand-1"].1.clone().unwrap();
    // An operator deletes the server with the CLI; the port stays (Nova keeps ports it did not make).
    let client = reqwest::Client::new();
    let token_id = stack.sim.control().issue_token("provisioner", "provisioner", DEMO_PROJECT_ID).unwrap();
    let url = format!("{}/compute/v2.1/servers/{server}", stack.sim.url());
    let r = client.delete(&url).header("X-Auth-Token", token_id).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    wait_until(WAIT, "the server is gone", || async {
        let p = stack.sim.control().resources().projects.get(DEMO_PROJECT_ID).cloned().unwrap_or_default();
        p.servers.values().sum::<usize>() == 0
    })
    .await;
    stack.env.publish_keyed([action("byhand-1-T", "terminate", "byhand-1")]).await;
    stack.wait_events(2, Duration::from_secs(30)).await;
    assert_eq!(events_of(&stack, "byhand-1-T")[0].event_type, EventType::Completed);
    assert_demo_empty(&stack).await;
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_two_workers_serve_one_service_in_commit_order() {
    // The create and its terminate go to two different workers (round robin): the chain
    // holds across them.
    let mut stack = Stack::new(Timings { boot_mean_ms: 200, boot_jitter_ms: 50, ..fast() }).await;
    let w1 = stack.child("a");
    let w2 = stack.child("b");
    wait_ready(&w1).await;
    wait_ready(&w2).await;
    let mut bodies = Vec::new();
    for i in 0..30 {
        let id = format!("rr-{i}");
        bodies.push(order(&id, DEMO_PROJECT_ID, i % 3 == 0));
        bodies.push(action(&format!("{id}-T"), "terminate", &id));
    }
    stack.env.publish_keyed(bodies).await;
    stack.wait_events(60, Duration::from_secs(120)).await;
    let targets: Vec<String> = (0..30).map(|i| format!("rr-{i}")).collect();
    wait_services(&stack, &targets, "terminated", WAIT).await;
    assert_demo_empty(&stack).await;
    let dead = stack.env.queue_counts(&stack.env.names.dead_queue).await.0;
    assert_eq!(dead, 0, "an action was dead-lettered though its create came");
    for t in &targets {
        assert_eq!(events_of(&stack, &format!("{t}-T")).len(), 1);
    }
    drop((w1, w2));
    stack.cleanup().await;
}

/// A resize order to `flavor`.
fn resize(order_id: &str, target: &str, flavor: &str) -> Vec<u8> {
    serde_json::json!({"version": 1, "order_id": order_id, "action": "resize", "target_order_id": target,
        "flavor": flavor})
    .to_string()
    .into_bytes()
}

/// The one event of an order (panics if there is none or more than one).
fn the_event(stack: &Stack, order_id: &str) -> Event {
    let evs = events_of(stack, order_id);
    assert_eq!(evs.len(), 1, "{order_id}: exactly one event: {evs:?}");
    evs[0].clone()
}

/// Nova's view of a server in the demo project: (status, task_state, flavor name).
async fn nova(stack: &Stack, server: &str) -> (String, Option<String>, String) {
    let token = stack.sim.control().issue_token("provisioner", "provisioner", DEMO_PROJECT_ID).unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/compute/v2.1/servers/{server}", stack.sim.url()))
        .header("X-Auth-Token", token)
        .header("OpenStack-API-Version", "compute 2.84")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let v: serde_json::Value = r.json().await.unwrap();
    let s = &v["server"];
    (
        s["status"].as_str().unwrap_or_default().to_string(),
        s["OS-EXT-STS:task_state"].as_str().map(str::to_string),
        s["flavor"]["original_name"].as_str().unwrap_or_default().to_string(),
    )
}

/// POSTs a server action as an operator would with the CLI.
async fn by_hand(stack: &Stack, server: &str, body: serde_json::Value) -> reqwest::StatusCode {
    let token = stack.sim.control().issue_token("provisioner", "provisioner", DEMO_PROJECT_ID).unwrap();
    reqwest::Client::new()
        .post(format!("{}/compute/v2.1/servers/{server}/action", stack.sim.url()))
        .header("X-Auth-Token", token)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
}

/// POSTs to a server's action endpoint, summed over statuses.
fn action_posts(stack: &Stack) -> u64 {
    stack.sim.control().count("POST", "/compute/v2.1/servers/{id}/action")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_suspend_unsuspend_suspend_back_to_back_ends_suspended() {
    let mut stack = Stack::new(fast()).await;
    let (token, run) = run_app(&stack).await;
    let targets: Vec<String> = (0..5).map(|i| format!("sus-{i}")).collect();
    stack.env.publish_all(targets.iter().map(|t| order(t, DEMO_PROJECT_ID, false))).await;
    stack.wait_events(5, Duration::from_secs(60)).await;
    let mut bodies = Vec::new();
    for t in &targets {
        bodies.push(action(&format!("{t}-S1"), "suspend", t));
        bodies.push(action(&format!("{t}-U"), "unsuspend", t));
        bodies.push(action(&format!("{t}-S2"), "suspend", t));
    }
    stack.env.publish_keyed(bodies).await;
    stack.wait_events(20, Duration::from_secs(60)).await;
    wait_services(&stack, &targets, "suspended", WAIT).await;
    let svc = services(&stack).await;
    for t in &targets {
        let mut finished = Vec::new();
        for a in ["S1", "U", "S2"] {
            let e = the_event(&stack, &format!("{t}-{a}"));
            assert_eq!(e.event_type, EventType::Completed, "{e:?}");
            assert_eq!(e.target_order_id.as_deref(), Some(t.as_str()));
            finished.push(e.occurred_at);
        }
        assert!(finished.windows(2).all(|w| w[0] <= w[1]), "{t}: in commit order: {finished:?}");
        let server = svc[t].1.clone().unwrap();
        assert_eq!(nova(&stack, &server).await, ("SHUTOFF".into(), None, "m1.tiny".into()));
        assert_eq!(svc[t].5.as_deref(), Some(format!("{t}-S2").as_str()), "the last action");
    }
    // `jobs show` of a create lists the service's later actions, in order.
    let detail = stack.env.store.job_detail(&targets[0]).await.unwrap().unwrap();
    let actions: Vec<(&str, &str)> =
        detail.actions.iter().map(|a| (a.action.as_str(), a.order_id.as_str())).collect();
    assert_eq!(actions, vec![("suspend", "sus-0-S1"), ("unsuspend", "sus-0-U"), ("suspend", "sus-0-S2")]);
    // Suspending a suspended service completes at once with nothing called.
    stack.sim.control().reset_counters();
    stack.env.publish_keyed([action("sus-0-S3", "suspend", "sus-0")]).await;
    stack.wait_events(21, Duration::from_secs(30)).await;
    assert_eq!(the_event(&stack, "sus-0-S3").event_type, EventType::Completed);
    let calls: u64 = stack.sim.control().counters().iter().map(|c| c.count).sum();
    assert_eq!(calls, 0, "{:?}", stack.sim.control().counters());
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_resize_confirms_refuses_and_reports_novas_error() {
    let mut stack = Stack::new(fast()).await;
    let (token, run) = run_app(&stack).await;
    stack.env.publish(&order("rsz", DEMO_PROJECT_ID, false)).await;
    stack.wait_events(1, Duration::from_secs(30)).await;
    let server = services(&stack).await["rsz"].1.clone().unwrap();

    stack.env.publish_keyed([resize("rsz-R1", "rsz", "m1.small")]).await;
    stack.wait_events(2, Duration::from_secs(30)).await;
    let e = the_event(&stack, "rsz-R1");
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    assert_eq!(nova(&stack, &server).await, ("ACTIVE".into(), None, "m1.small".into()), "confirmed");
    wait_services(&stack, &["rsz".to_string()], "active", WAIT).await;
    assert_eq!(services(&stack).await["rsz"].4.as_deref(), Some("m1.small"));

    // To the flavor it has: completed at once, nothing called.
    stack.sim.control().reset_counters();
    stack.env.publish_keyed([resize("rsz-R2", "rsz", "m1.small")]).await;
    stack.wait_events(3, Duration::from_secs(30)).await;
    assert_eq!(the_event(&stack, "rsz-R2").event_type, EventType::Completed);
    assert_eq!(action_posts(&stack), 0, "{:?}", stack.sim.control().counters());

    // Suspended: refused as invalid_order.
    stack.env.publish_keyed([action("rsz-S", "suspend", "rsz"), resize("rsz-R3", "rsz", "m1.tiny")]).await;
    stack.wait_events(5, Duration::from_secs(30)).await;
    let e = the_event(&stack, "rsz-R3");
    assert_eq!(e.event_type, EventType::Failed, "{e:?}");
    assert_eq!(e.error.as_ref().unwrap().class, ErrorClass::InvalidOrder, "{e:?}");

    // Nova accepts the resize, then fails it: the job fails with Nova's fault, the server stays
    // on its old flavor.
    stack.env.publish_keyed([action("rsz-U", "unsuspend", "rsz")]).await;
    stack.wait_events(6, Duration::from_secs(30)).await;
    stack
        .sim
        .control()
        .add_fault(FaultRule {
            action: Some("resize".into()),
            server_error: Some("No valid host was found. There are not enough hosts available.".into()),
            times: Some(1),
            ..Default::default()
        })
        .unwrap();
    stack.env.publish_keyed([resize("rsz-R4", "rsz", "m1.tiny")]).await;
    stack.wait_events(7, Duration::from_secs(30)).await;
    let e = the_event(&stack, "rsz-R4");
    assert_eq!(e.event_type, EventType::Failed, "{e:?}");
    let err = e.error.as_ref().unwrap();
    assert_eq!(err.class, ErrorClass::CloudError, "{e:?}");
    assert!(err.message.contains("No valid host"), "{err:?}");
    assert_eq!(nova(&stack, &server).await, ("ACTIVE".into(), None, "m1.small".into()), "old flavor");
    let svc = services(&stack).await;
    assert_eq!((svc["rsz"].0.as_str(), svc["rsz"].4.as_deref()), ("active", Some("m1.small")));
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_actions_survive_nova_503s_409s_and_a_missing_server() {
    let mut stack = Stack::new(fast()).await;
    let (token, run) = run_app(&stack).await;
    let targets: Vec<String> = (0..12).map(|i| format!("flt-{i}")).collect();
    stack.env.publish_all(targets.iter().map(|t| order(t, DEMO_PROJECT_ID, false))).await;
    stack.wait_events(12, Duration::from_secs(60)).await;
    let svc = services(&stack).await;
    let server = |t: &str| svc[t].1.clone().unwrap();

    // A server an operator deleted: suspend fails not_found and says what is missing.
    let gone = server("flt-11");
    let ctl = stack.sim.control();
    let tok = ctl.issue_token("provisioner", "provisioner", DEMO_PROJECT_ID).unwrap();
    let url = format!("{}/compute/v2.1/servers/{gone}", stack.sim.url());
    reqwest::Client::new().delete(&url).header("X-Auth-Token", tok).send().await.unwrap();
    wait_until(WAIT, "the server is gone", || async {
        reqwest::Client::new()
            .get(&url)
            .header("X-Auth-Token", ctl.issue_token("provisioner", "provisioner", DEMO_PROJECT_ID).unwrap())
            .send()
            .await
            .unwrap()
            .status()
            == reqwest::StatusCode::NOT_FOUND
    })
    .await;
    stack.env.publish_keyed([action("flt-11-S", "suspend", "flt-11")]).await;
    stack.wait_events(13, Duration::from_secs(30)).await;
    let e = the_event(&stack, "flt-11-S");
    assert_eq!(e.event_type, EventType::Failed, "{e:?}");
    let err = e.error.as_ref().unwrap();
    assert_eq!(err.class, ErrorClass::NotFound, "{e:?}");
    assert!(err.message.contains(&gone) && err.message.contains("does not exist"), "{err:?}");

    // A 409 because the action is already under way: an operator stops the server while the
    // job's os-stop is on its way to Nova (held there by latency).
    ctl.add_fault(FaultRule {
        action: Some("os-stop".into()),
        latency_ms: Some(1500),
        times: Some(1),
        ..Default::default()
    })
    .unwrap();
    stack.env.publish_keyed([action("flt-10-S", "suspend", "flt-10")]).await;
    wait_until(WAIT, "the job's os-stop reached Nova", || async {
        ctl.faults().iter().any(|f| f.fired == 1)
    })
    .await;
    assert_eq!(by_hand(&stack, &server("flt-10"), serde_json::json!({"os-stop": null})).await, 202);
    stack.wait_events(14, Duration::from_secs(30)).await;
    assert_eq!(the_event(&stack, "flt-10-S").event_type, EventType::Completed);
    assert!(
        ctl.counters().iter().any(|c| c.path == "/compute/v2.1/servers/{id}/action" && c.status == 409),
        "Nova answered the job's os-stop with 409: {:?}",
        ctl.counters()
    );
    ctl.clear_faults();

    // 30 % 503s on every action: each action still ends once, none doubled, none stuck.
    ctl.add_fault(FaultRule {
        service: Some("compute".into()),
        path: Some("/action$".into()),
        status: Some(503),
        probability: Some(0.3),
        ..Default::default()
    })
    .unwrap();
    let ten = &targets[..10];
    stack.env.publish_keyed(ten.iter().map(|t| action(&format!("{t}-S1"), "suspend", t))).await;
    stack.env.publish_keyed(ten.iter().map(|t| action(&format!("{t}-U1"), "unsuspend", t))).await;
    stack.env.publish_keyed(ten.iter().map(|t| resize(&format!("{t}-R1"), t, "m1.small"))).await;
    // (A terminate cancels what is still queued before it: it goes once these are done.)
    stack.wait_events(14 + 30, Duration::from_secs(120)).await;
    stack.env.publish_keyed(targets.iter().map(|t| action(&format!("{t}-T"), "terminate", t))).await;
    stack.wait_events(14 + 30 + 12, Duration::from_secs(120)).await;
    wait_services(&stack, &targets, "terminated", WAIT).await;
    for t in ten {
        for a in ["S1", "U1", "R1", "T"] {
            let id = format!("{t}-{a}");
            let e = the_event(&stack, &id);
            assert_eq!(e.event_type, EventType::Completed, "{id}: {e:?}");
        }
    }
    assert_eq!(the_event(&stack, "flt-11-T").event_type, EventType::Completed);
    let fired = ctl.faults().iter().map(|f| f.fired).sum::<u64>();
    assert!(fired > 0, "no 503 was injected");
    assert_demo_empty(&stack).await;
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_two_hundred_services_through_their_whole_life_with_kills_and_two_workers() {
    let timings = Timings { boot_mean_ms: 150, boot_jitter_ms: 50, action_ms: 100, ..fast() };
    let mut stack = Stack::new(timings).await;
    let mut killed = stack.child("k0");
    let steady = stack.child("steady");
    wait_ready(&killed).await;
    wait_ready(&steady).await;
    let mut kills = 0;
    let n = 200;
    let targets: Vec<String> = (0..n).map(|i| format!("life-{i}")).collect();
    stack
        .env
        .publish_all(targets.iter().enumerate().map(|(i, t)| order(t, DEMO_PROJECT_ID, i % 2 == 0)))
        .await;
    stack.wait_events(n, Duration::from_secs(180)).await;
    wait_services(&stack, &targets, "active", WAIT).await;

    // 100 suspended, 50 of those unsuspended, 20 others resized; a worker killed twice meanwhile.
    let mut bodies = Vec::new();
    for t in &targets[..100] {
        bodies.push(action(&format!("{t}-S"), "suspend", t));
    }
    for t in &targets[..50] {
        bodies.push(action(&format!("{t}-U"), "unsuspend", t));
    }
    for t in &targets[100..120] {
        bodies.push(resize(&format!("{t}-R"), t, "m1.small"));
    }
    stack.env.publish_keyed(bodies).await;
    for _ in 0..2 {
        // A random moment is the point: kill wherever the worker happens to be.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..1200))).await;
        killed.kill().await;
        kills += 1;
        killed = stack.child(&format!("k{kills}"));
    }
    stack.wait_events(n + 170, Duration::from_secs(180)).await;
    wait_services(&stack, &targets[..50], "active", WAIT).await;
    wait_services(&stack, &targets[50..100], "suspended", WAIT).await;
    wait_services(&stack, &targets[100..120], "active", WAIT).await;
    let svc = services(&stack).await;
    for t in &targets[100..120] {
        assert_eq!(svc[t].4.as_deref(), Some("m1.small"), "{t} resized");
    }

    // All terminated, with a third kill.
    stack.env.publish_keyed(targets.iter().map(|t| action(&format!("{t}-T"), "terminate", t))).await;
    tokio::time::sleep(Duration::from_millis(fastrand::u64(200..1200))).await;
    killed.kill().await;
    killed = stack.child("k3");
    stack.wait_events(n + 170 + n, Duration::from_secs(180)).await;
    wait_services(&stack, &targets, "terminated", WAIT).await;
    assert_demo_empty(&stack).await;
    let mut per_order: HashMap<&str, usize> = HashMap::new();
    for e in stack.events.values() {
        *per_order.entry(e.order_id.as_str()).or_default() += 1;
        assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    }
    assert_eq!(per_order.len(), n + 170 + n, "an event for every order");
    assert!(per_order.values().all(|c| *c == 1), "an order with more than one event");
    killed.terminate(Duration::from_secs(30)).await;
    let mut steady = steady;
    steady.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}
