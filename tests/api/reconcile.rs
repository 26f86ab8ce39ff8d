//! The reconciler (issue 13), against the real MariaDB and RabbitMQ and the simulator: orphans
//! made by hand with our marks are found (report) and deleted (delete), exactly once, while
//! unmarked resources and what services hold are never touched; a server deleted behind our back
//! and one in ERROR each give one `service.drift` event; a second pass adds nothing; findings
//! clear when what they found is gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openstack_provisioner::config::OrphanPolicy;
use openstack_provisioner::engine::cloud::{Cloud, PortSpec, ServerSpec, VolumeSpec};
use openstack_provisioner::engine::openstack_cloud::OpenStackCloud;
use openstack_provisioner::engine::reconcile::{PassReport, ReconcileConfig, Reconciler};
use openstack_provisioner::messages::{EventType, Schemas};
use openstack_provisioner::openstack::session::{Session, SessionOptions};
use openstack_provisioner::openstack::volume::{NewVolume, VolumeApi};
use openstack_provisioner::sim::DEMO_PROJECT_ID;
use tokio::sync::Notify;

use crate::engine::run_app;
use crate::engine::stack::{Stack, fast, order};
use crate::helpers::{WAIT, wait_until};
use crate::lifecycle::{action, wait_services};

const P: &str = DEMO_PROJECT_ID;

fn session(stack: &Stack) -> Arc<Session> {
    Arc::new(Session::new(stack.cloud(), SessionOptions::default()).expect("session"))
}

fn reconciler(stack: &Stack, cloud: Arc<dyn Cloud>, grace_secs: u64, orphans: OrphanPolicy) -> Reconciler {
    let mut s = stack.env.settings.clone();
    s.reconcile.grace_secs = grace_secs;
    s.reconcile.orphans = orphans;
    let cfg = ReconcileConfig::from_settings(&s, "test-reconciler".into());
    Reconciler::new(stack.env.store.clone(), cloud, cfg, Arc::new(Notify::new()))
}

/// (resource type, resource id, reason, action) of the open findings, sorted.
fn open(r: &PassReport) -> Vec<(String, String, String, String)> {
    let mut v: Vec<_> = r
        .findings
        .iter()
        .map(|f| (f.resource_type.clone(), f.resource_id.clone(), f.reason.clone(), f.action.clone()))
        .collect();
    v.sort();
    v
}

async fn listed(cloud: &dyn Cloud) -> (Vec<String>, Vec<String>, Vec<String>) {
    let inv = cloud.marked_resources(P).await.expect("list");
    (
        inv.servers.into_iter().map(|s| s.id).collect(),
        inv.ports.into_iter().map(|p| p.id).collect(),
        inv.volumes.into_iter().map(|v| v.info.id).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_orphans_are_reported_then_deleted_once_and_unmarked_resources_never_touched() {
    let mut stack = Stack::new(fast()).await;
    let (token, run) = run_app(&stack).await;
    // A real service, so that the project is one we provisioned into, and what it holds must
    // never be reported.
    stack.env.publish(&order("rec-owned", P, true)).await;
    stack.wait_events(1, WAIT).await;
    wait_services(&stack, &["rec-owned".to_string()], "active", WAIT).await;
    let service = stack.env.store.service_detail("rec-owned").await.unwrap().unwrap().status;

    let cloud: Arc<dyn Cloud> = Arc::new(OpenStackCloud::new(session(&stack)));
    let r = cloud.resolve(P, "cirros-0.6.2", "m1.tiny", "private").await.expect("resolve");
    // Made by hand, carrying our marks, for a job that never existed.
    let ghost = uuid::Uuid::new_v4().to_string();
    let marks = vec![format!("job-{ghost}"), "provisioner".to_string()];
    let port = |name: &str, tags: Vec<String>| PortSpec {
        network_id: r.network_id.clone(),
        name: name.into(),
        tags,
        security_groups: None,
    };
    let p1 = cloud.create_port(P, &port("orphan-p1", marks.clone())).await.unwrap();
    let p2 = cloud.create_port(P, &port("orphan-p2", marks.clone())).await.unwrap();
    let mut metadata = BTreeMap::new();
    metadata.insert("provisioner_job".to_string(), ghost.clone());
    let server =
        |name: &str, port_id: &str, tags: Vec<String>, metadata: BTreeMap<String, String>| ServerSpec {
            name: name.into(),
            image_id: r.image_id.clone(),
            flavor_id: r.flavor_id.clone(),
            port_id: port_id.into(),
            key_name: None,
            user_data: None,
            metadata,
            tags,
            availability_zone: None,
            server_group: None,
            boot_volume: None,
        };
    let s1 =
        cloud.create_server(P, &server("orphan-s1", &p1, marks.clone(), metadata.clone())).await.unwrap();
    let v1 = cloud
        .create_volume(P, &VolumeSpec { name: "orphan-v1".into(), size_gb: 1, volume_type: None, metadata })
        .await
        .unwrap();
    // Not ours: no mark at all.
    let p3 = cloud.create_port(P, &port("theirs-p3", vec![])).await.unwrap();
    let s2 = cloud.create_server(P, &server("theirs-s2", &p3, vec![], BTreeMap::new())).await.unwrap();
    let v2 = VolumeApi::new(session(&stack))
        .create_volume(
            P,
            &NewVolume { name: "theirs-v2".into(), size_gb: 1, volume_type: None, metadata: BTreeMap::new() },
        )
        .await
        .unwrap()
        .id;

    // Younger than the grace: nothing is an orphan yet.
    let report =
        reconciler(&stack, cloud.clone(), 3600, OrphanPolicy::Report).run_once().await.expect("pass");
    assert_eq!(report.projects, 1);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.new_findings, 0, "{:?}", report.findings);

    // Past the grace (0 s), reported: exactly the four marked ones, nothing held or unmarked.
    let report = reconciler(&stack, cloud.clone(), 0, OrphanPolicy::Report).run_once().await.expect("pass");
    let mut want = vec![
        ("port".to_string(), p1.clone(), "job_missing".to_string(), "reported".to_string()),
        ("port".to_string(), p2.clone(), "job_missing".to_string(), "reported".to_string()),
        ("server".to_string(), s1.clone(), "job_missing".to_string(), "reported".to_string()),
        ("volume".to_string(), v1.clone(), "job_missing".to_string(), "reported".to_string()),
    ];
    want.sort();
    assert_eq!(open(&report), want);
    assert_eq!(report.new_findings, 4);
    assert!(
        report.findings.iter().all(|f| f.kind == "orphan" && f.job_id.as_deref() == Some(ghost.as_str()))
    );
    for held in [&service.server_id, &service.port_id, &service.volume_id] {
        let held = held.as_ref().expect("the service holds it");
        assert!(!report.findings.iter().any(|f| &f.resource_id == held), "{held} is the service's");
    }
    // Report deletes nothing; a second pass adds nothing.
    let again = reconciler(&stack, cloud.clone(), 0, OrphanPolicy::Report).run_once().await.expect("pass");
    assert_eq!(again.new_findings, 0);
    assert_eq!(open(&again), want);
    let ids: Vec<u64> = report.findings.iter().map(|f| f.id).collect();
    assert_eq!(again.findings.iter().map(|f| f.id).collect::<Vec<_>>(), ids, "the same findings");
    let (servers, ports, volumes) = listed(cloud.as_ref()).await;
    assert!(servers.contains(&s1) && ports.contains(&p2) && volumes.contains(&v1));

    // The same from the command line, as an operator runs it (grace from the environment).
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["reconcile", "--once", "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "error")
        .env("PROVISIONER_DATABASE_URL", stack.env.settings.database.url.expose())
        .env("PROVISIONER_RECONCILE_GRACE_SECS", "0")
        .envs(stack.os_env())
        .output()
        .await
        .expect("run provisioner reconcile");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(json["new_findings"], 0, "{json}");
    let mut cli: Vec<String> = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["resource_id"].as_str().unwrap().to_string())
        .collect();
    cli.sort();
    let mut ours: Vec<String> = want.iter().map(|w| w.1.clone()).collect();
    ours.sort();
    assert_eq!(cli, ours);

    // Delete: each orphan once (the port of the orphan server too), nothing else.
    let control = stack.sim.control();
    control.reset_counters();
    let deleting = reconciler(&stack, cloud.clone(), 0, OrphanPolicy::Delete);
    let report = deleting.run_once().await.expect("pass");
    assert_eq!(report.deleted, 4, "{:?}", report.findings);
    assert!(report.findings.iter().all(|f| f.action == "deleted"), "{:?}", report.findings);
    wait_until(WAIT, "the orphans are gone", || async {
        let (servers, ports, volumes) = listed(cloud.as_ref()).await;
        !servers.contains(&s1) && !ports.contains(&p1) && !ports.contains(&p2) && !volumes.contains(&v1)
    })
    .await;
    let report = deleting.run_once().await.expect("pass");
    assert_eq!((report.new_findings, report.deleted), (0, 0));
    assert!(report.findings.is_empty(), "cleared once gone: {:?}", report.findings);
    assert!(report.cleared >= 4);
    assert_eq!(control.count("DELETE", "/compute/v2.1/servers/{id}"), 1);
    assert_eq!(control.count("DELETE", "/networking/v2.0/ports/{id}"), 2);
    assert_eq!(control.count("DELETE", "/volume/v3/{project_id}/volumes/{id}"), 1);

    // Untouched: the unmarked ones and the service's.
    let world = control.resources();
    let demo = world.projects.get(P).expect("demo project");
    assert_eq!(demo.servers.values().sum::<usize>(), 2, "{demo:?}");
    assert_eq!(demo.ports.values().sum::<usize>(), 2, "{demo:?}");
    assert_eq!(demo.volumes.values().sum::<usize>(), 2, "{demo:?}");
    assert!(
        control.server_json(&s2).is_some()
            && control.server_json(service.server_id.as_ref().unwrap()).is_some()
    );
    let _ = (p3, v2);
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_a_deleted_server_and_one_in_error_each_give_one_drift_event() {
    let mut stack = Stack::new(fast()).await;
    stack.env.settings.http.addr = "127.0.0.1:0".into();
    let app = stack.app().await;
    let http = app.http_addr().expect("http listens");
    let token = app.shutdown_token();
    let run = tokio::spawn(async move { app.run_until_stopped().await.expect("clean stop") });
    let targets: Vec<String> = (0..3).map(|i| format!("drift-{i}")).collect();
    stack.env.publish_all(targets.iter().enumerate().map(|(i, t)| order(t, P, i == 2))).await;
    stack.wait_events(3, WAIT).await;
    wait_services(&stack, &targets, "active", WAIT).await;

    let cloud: Arc<dyn Cloud> = Arc::new(OpenStackCloud::new(session(&stack)));
    let rec = reconciler(&stack, cloud.clone(), 900, OrphanPolicy::Report);
    let healthy = rec.run_once().await.expect("pass");
    assert!(healthy.findings.is_empty(), "a healthy cloud: {:?}", healthy.findings);

    let server_of = |t: &str| {
        let store = stack.env.store.clone();
        let t = t.to_string();
        async move { store.service_detail(&t).await.unwrap().unwrap().status.server_id.unwrap() }
    };
    let (gone, broken, fine) =
        (server_of(&targets[0]).await, server_of(&targets[1]).await, server_of(&targets[2]).await);
    cloud.delete_server(P, &gone).await.expect("delete behind the provisioner's back");
    stack.sim.control().fail_server(&broken, "host lost power").expect("set ERROR");
    wait_until(WAIT, "the deleted server is no longer listed", || async {
        !listed(cloud.as_ref()).await.0.contains(&gone)
    })
    .await;

    let report = rec.run_once().await.expect("pass");
    assert_eq!(report.new_findings, 2, "{:?}", report.findings);
    let mut found: Vec<_> = report
        .findings
        .iter()
        .map(|f| {
            (f.target_order_id.clone().unwrap(), f.reason.clone(), f.found.clone().unwrap(), f.action.clone())
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (targets[0].clone(), "server_missing".into(), "missing".into(), "event".into()),
            (targets[1].clone(), "server_error".into(), "ERROR".into(), "event".into()),
        ]
    );
    assert!(!report.findings.iter().any(|f| f.resource_id == fine));

    // One event per finding, on provisioning.events, valid against the schema.
    let schemas = Schemas::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while stack.events.values().filter(|e| e.event_type == EventType::Drift).count() < 2 {
        assert!(tokio::time::Instant::now() < deadline, "two drift events did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
        stack.collect().await;
    }
    let drift: Vec<_> = stack.events.values().filter(|e| e.event_type == EventType::Drift).cloned().collect();
    assert_eq!(drift.len(), 2, "{drift:?}");
    for e in &drift {
        schemas.check_event(&serde_json::to_value(e).unwrap()).unwrap_or_else(|err| panic!("{err}: {e:?}"));
        let d = e.drift.as_ref().expect("drift");
        let t = e.target_order_id.as_deref().unwrap();
        assert_eq!(e.order_id, t);
        let want = if t == targets[0] { ("server_missing", "missing") } else { ("server_error", "ERROR") };
        assert_eq!(
            (d.kind.as_str(), d.expected.as_str(), d.found.as_str()),
            (want.0, "ACTIVE", want.1),
            "{e:?}"
        );
    }

    // A second pass adds nothing: no finding, no event written.
    let again = rec.run_once().await.expect("pass");
    assert_eq!(again.new_findings, 0);
    assert_eq!(again.findings.len(), 2);
    let written: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE routing_key = 'service.drift'")
        .fetch_one(stack.env.store.pool())
        .await
        .unwrap();
    assert_eq!(written, 2);

    // GET /v1/findings lists them.
    let body: serde_json::Value =
        reqwest::get(format!("http://{http}/v1/findings?kind=drift")).await.unwrap().json().await.unwrap();
    assert_eq!(body["findings"].as_array().map(Vec::len), Some(2), "{body}");

    // Terminating the broken service clears its finding (the drift is gone with it).
    stack.env.publish_keyed([action("drift-1-T", "terminate", &targets[1])]).await;
    wait_services(&stack, &[targets[1].clone()], "terminated", WAIT).await;
    let after = rec.run_once().await.expect("pass");
    assert_eq!(after.new_findings, 0);
    assert_eq!(after.findings.len(), 1, "{:?}", after.findings);
    assert_eq!(after.findings[0].target_order_id.as_deref(), Some(targets[0].as_str()));
    assert!(after.cleared >= 1);
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_a_stopped_active_server_a_started_suspended_one_and_a_detached_or_deleted_volume_each_give_one_drift_event()
 {
    use openstack_provisioner::engine::cloud::ServerAction;
    use openstack_provisioner::engine::reconcile::suspended_status;
    let mut stack = Stack::new(fast()).await;
    let (token, run) = run_app(&stack).await;
    // off: stopped behind our back; on: started while suspended; detached, deleted: volumes.
    let targets: Vec<String> = ["drift-off", "drift-on", "drift-detached", "drift-deleted", "drift-fine"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    stack.env.publish_all(targets.iter().map(|t| order(t, P, t.contains("de")))).await;
    stack.wait_events(targets.len(), WAIT).await;
    wait_services(&stack, &targets, "active", WAIT).await;
    stack.env.publish_keyed([action("drift-on-S", "suspend", "drift-on")]).await;
    wait_services(&stack, &["drift-on".to_string()], "suspended", WAIT).await;

    let cloud: Arc<dyn Cloud> = Arc::new(OpenStackCloud::new(session(&stack)));
    let rec = reconciler(&stack, cloud.clone(), 900, OrphanPolicy::Report);
    let healthy = rec.run_once().await.expect("pass");
    assert!(healthy.findings.is_empty(), "a healthy cloud: {:?}", healthy.findings);

    let status = |t: &str| {
        let store = stack.env.store.clone();
        let t = t.to_string();
        async move { store.service_detail(&t).await.unwrap().unwrap().status }
    };
    let off = status("drift-off").await.server_id.unwrap();
    let on = status("drift-on").await.server_id.unwrap();
    let detached = status("drift-detached").await;
    let deleted = status("drift-deleted").await;
    let (detached_server, detached_volume) = (detached.server_id.unwrap(), detached.volume_id.unwrap());
    let (deleted_server, deleted_volume) = (deleted.server_id.unwrap(), deleted.volume_id.unwrap());
    // Behind the provisioner's back, as an operator with the CLI would.
    let mode = stack.env.settings.lifecycle.suspend_mode;
    let wake = match suspended_status(mode) {
        "SHUTOFF" => ServerAction::Start,
        "SUSPENDED" => ServerAction::Resume,
        "PAUSED" => ServerAction::Unpause,
        _ => ServerAction::Unshelve,
    };
    cloud.server_action(P, &off, ServerAction::Stop).await.expect("stop");
    cloud.server_action(P, &on, wake).await.expect("start while suspended");
    cloud.detach_volume(P, &detached_server, &detached_volume).await.expect("detach");
    cloud.detach_volume(P, &deleted_server, &deleted_volume).await.expect("detach");
    let settled = || async {
        let inv = cloud.marked_resources(P).await.expect("list");
        let server = |id: &str| {
            inv.servers.iter().find(|s| s.id == id).map(|s| (s.status.clone(), s.task_state.clone()))
        };
        let volume = |id: &str| inv.volumes.iter().find(|v| v.info.id == id).map(|v| v.info.status.clone());
        server(&off) == Some(("SHUTOFF".into(), None))
            && server(&on) == Some(("ACTIVE".into(), None))
            && volume(&detached_volume).as_deref() == Some("available")
            && volume(&deleted_volume).as_deref() == Some("available")
    };
    wait_until(WAIT, "the stop, the start and the detaches are done", settled).await;
    cloud.delete_volume(P, &deleted_volume).await.expect("delete the volume");
    wait_until(WAIT, "the volume is gone", || async {
        !listed(cloud.as_ref()).await.2.contains(&deleted_volume)
    })
    .await;

    let report = rec.run_once().await.expect("pass");
    let mut found: Vec<_> = report
        .findings
        .iter()
        .map(|f| {
            (
                f.target_order_id.clone().unwrap(),
                f.resource_type.clone(),
                f.reason.clone(),
                f.expected.clone().unwrap(),
                f.found.clone().unwrap(),
                f.action.clone(),
            )
        })
        .collect();
    found.sort();
    let row = |t: &str, r: &str, reason: &str, expected: &str, found: &str| {
        (
            t.to_string(),
            r.to_string(),
            reason.to_string(),
            expected.to_string(),
            found.to_string(),
            "event".to_string(),
        )
    };
    let suspended = suspended_status(mode);
    let mut want = vec![
        row("drift-off", "server", "server_state", "ACTIVE", "SHUTOFF"),
        row("drift-on", "server", "server_state", suspended, "ACTIVE"),
        row("drift-detached", "volume", "volume_detached", "in-use", "available"),
        row("drift-deleted", "volume", "volume_missing", "in-use", "missing"),
    ];
    want.sort();
    assert_eq!(found, want);
    assert_eq!(report.new_findings, 4);

    // One event each, valid against the schema, saying what was expected and found.
    let schemas = Schemas::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while stack.events.values().filter(|e| e.event_type == EventType::Drift).count() < 4 {
        assert!(tokio::time::Instant::now() < deadline, "four drift events did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
        stack.collect().await;
    }
    let mut events: Vec<(String, String, String, String)> = stack
        .events
        .values()
        .filter(|e| e.event_type == EventType::Drift)
        .map(|e| {
            schemas
                .check_event(&serde_json::to_value(e).unwrap())
                .unwrap_or_else(|err| panic!("{err}: {e:?}"));
            let d = e.drift.as_ref().expect("drift");
            (e.order_id.clone(), d.kind.clone(), d.expected.clone(), d.found.clone())
        })
        .collect();
    events.sort();
    let mut want_events: Vec<_> =
        want.iter().map(|w| (w.0.clone(), w.2.clone(), w.3.clone(), w.4.clone())).collect();
    want_events.sort();
    assert_eq!(events, want_events);

    // A second pass adds nothing: no finding, no event.
    let again = rec.run_once().await.expect("pass");
    assert_eq!(again.new_findings, 0, "{:?}", again.findings);
    assert_eq!(again.findings.len(), 4);
    let written: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE routing_key = 'service.drift'")
        .fetch_one(stack.env.store.pool())
        .await
        .unwrap();
    assert_eq!(written, 4);
    // Cleared when the drift is: the stopped server started again.
    cloud.server_action(P, &off, ServerAction::Start).await.expect("start");
    wait_until(WAIT, "the server is active again", || async {
        cloud
            .marked_resources(P)
            .await
            .expect("list")
            .servers
            .iter()
            .any(|s| s.id == off && s.status == "ACTIVE" && s.task_state.is_none())
    })
    .await;
    let after = rec.run_once().await.expect("pass");
    assert_eq!(after.new_findings, 0);
    assert!(
        !after.findings.iter().any(|f| f.target_order_id.as_deref() == Some("drift-off")),
        "{:?}",
        after.findings
    );
    assert_eq!(after.findings.len(), 3);
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_a_pass_that_loses_its_lease_mid_way_stops_and_the_next_pass_deletes_nothing_twice() {
    use openstack_provisioner::engine::reconcile::PassError;
    use openstack_provisioner::sim::FaultRule;
    use openstack_provisioner::store::reconcile::LeaseTake;
    let stack = Stack::new(fast()).await;
    let (token, run) = run_app(&stack).await;
    let mut stack = stack;
    stack.env.publish(&order("lease-owned", P, false)).await;
    stack.wait_events(1, WAIT).await;
    let cloud: Arc<dyn Cloud> = Arc::new(OpenStackCloud::new(session(&stack)));
    let r = cloud.resolve(P, "cirros-0.6.2", "m1.tiny", "private").await.expect("resolve");
    let ghost = uuid::Uuid::new_v4().to_string();
    let mut ports = Vec::new();
    for i in 0..3 {
        let spec = PortSpec {
            network_id: r.network_id.clone(),
            name: format!("orphan-{i}"),
            tags: vec![format!("job-{ghost}"), "provisioner".to_string()],
            security_groups: None,
        };
        ports.push(cloud.create_port(P, &spec).await.unwrap());
    }
    let control = stack.sim.control();
    control.reset_counters();
    // The first delete is carried out at once, its answer held: meanwhile another worker takes
    // the reconciler lease (this one stalled past its lease, as far as the database knows).
    let held = control
        .add_fault(FaultRule {
            service: Some("network".into()),
            method: Some("DELETE".into()),
            path: Some("/ports/".into()),
            answer_delay_ms: Some(1500),
            times: Some(1),
            ..FaultRule::default()
        })
        .unwrap();
    let first = reconciler(&stack, cloud.clone(), 0, OrphanPolicy::Delete);
    let pass = tokio::spawn(async move { first.run_once().await });
    let remaining_ids = || async {
        let listed = listed(cloud.as_ref()).await.1;
        ports.iter().filter(|p| listed.contains(p)).cloned().collect::<Vec<_>>()
    };
    let remaining = || async { remaining_ids().await.len() };
    wait_until(WAIT, "the first delete is carried out", || async { remaining().await == 2 }).await;
    sqlx::query("UPDATE reconcile_lease SET expires_at = NOW(6) - INTERVAL 1 SECOND")
        .execute(stack.env.store.pool())
        .await
        .unwrap();
    let intruder =
        stack.env.store.take_reconcile_lease("intruder", Duration::from_secs(60), None).await.unwrap();
    let LeaseTake::Taken(fence) = intruder else { panic!("the lease was not taken: {intruder:?}") };

    // The stalled pass stops at its next write: nothing more deleted, nothing recorded.
    let result = pass.await.unwrap();
    assert!(matches!(result, Err(PassError::LeaseLost(_))), "{result:?}");
    assert_eq!(control.count("DELETE", "/networking/v2.0/ports/{id}"), 1);
    assert_eq!(remaining().await, 2, "the pass went on after losing its lease");
    let findings: Vec<(String, String)> =
        sqlx::query_as("SELECT CAST(resource_id AS CHAR), CAST(action AS CHAR) FROM reconcile_findings")
            .fetch_all(stack.env.store.pool())
            .await
            .unwrap();
    // The one whose delete was in flight stays `deleting` (its `deleted` write was refused); the
    // pass recorded nothing after it.
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].1, "deleting", "{findings:?}");
    assert!(!remaining_ids().await.contains(&findings[0].0), "{findings:?}");
    // While the other worker holds the lease, a pass is refused.
    let busy = reconciler(&stack, cloud.clone(), 0, OrphanPolicy::Delete).run_once().await;
    assert!(matches!(busy, Err(PassError::Busy(ref o)) if o == "intruder"), "{busy:?}");

    // Its pass (here: the lease released, a new pass): the other two deleted, each once; the
    // first, gone, is not deleted again, and its finding clears.
    stack.env.store.release_reconcile_lease("intruder", fence).await.unwrap();
    control.remove_fault(held);
    let next = reconciler(&stack, cloud.clone(), 0, OrphanPolicy::Delete).run_once().await.expect("pass");
    assert_eq!(next.deleted, 2, "{:?}", next.findings);
    wait_until(WAIT, "the orphans are gone", || async { remaining().await == 0 }).await;
    assert_eq!(control.count("DELETE", "/networking/v2.0/ports/{id}"), 3, "one delete per orphan");
    let last = reconciler(&stack, cloud.clone(), 0, OrphanPolicy::Delete).run_once().await.expect("pass");
    assert_eq!((last.deleted, last.findings.len()), (0, 0), "{:?}", last.findings);
    assert_eq!(control.count("DELETE", "/networking/v2.0/ports/{id}"), 3);
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}
