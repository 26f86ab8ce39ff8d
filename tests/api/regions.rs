//! Tests: the order's `region` (issue 15). The simulator serves two regions under one Keystone
//! (`RegionOne` at the root paths, `RegionTwo` under `/RegionTwo/`, each with its own Nova,
//! Neutron, Cinder and Glance). An order naming `RegionTwo` makes its port, server and volume
//! there only, its suspend and terminate reach them there, and its event names the region; an
//! order without one goes to the configured region as before; an unknown region fails the order
//! as `invalid_order`, naming the regions there are, with nothing created anywhere; pre-flight
//! reads the order's region's quotas; a worker killed mid-create in `RegionTwo` is followed by
//! adoption there (no second server); the reconciler finds a RegionTwo service's resources where
//! they are (no false drift) and a RegionTwo orphan there; a tenant's quotas are set in both
//! regions and its close terminates its RegionTwo VM there. The in-process worker is configured
//! from a `clouds.yaml` whose `regions:` lists both; the killed one from `OS_*` (any region of the
//! catalog serves).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openstack_provisioner::engine::openstack_cloud::OpenStackCloud;
use openstack_provisioner::engine::preflight::check_order;
use openstack_provisioner::messages::{ErrorClass, EventType, Order};
use openstack_provisioner::openstack::config::CloudConfig;
use openstack_provisioner::openstack::session::{Session, SessionOptions};
use openstack_provisioner::sim::control::QuotaPatch;
use openstack_provisioner::sim::{DEMO_PROJECT_ID, SimHandle};
use openstack_provisioner::startup::App;
use reqwest::Method;
use serde_json::{Value, json};

use crate::engine::stack::{Stack, fast};
use crate::engine::wait_ready;
use crate::helpers::{WAIT, counting, held_answer, wait_until};
use crate::lifecycle::{action, wait_services};
use crate::network::{api, event_of, token};

const TWO: &str = "/RegionTwo";

/// A create order in the demo project, in `region` (`None`: none named), with a volume.
fn order_in(order_id: &str, region: Option<&str>) -> Value {
    let mut o = json!({
        "order_id": order_id,
        "project_id": DEMO_PROJECT_ID,
        "server": {"name": format!("vm-{order_id}"), "flavor": "m1.tiny", "image": "cirros-0.6.2", "network": "private"},
        "volume": {"size_gb": 1}
    });
    if let Some(r) = region {
        o["region"] = r.into();
    }
    o
}

/// The worker's cloud from a `clouds.yaml` listing both regions (the first is the default).
fn clouds_yaml(sim: &SimHandle) -> CloudConfig {
    let dir = std::env::temp_dir().join(format!("prov-regions-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("clouds.yaml");
    std::fs::write(
        &file,
        format!(
            "clouds:\n  prov:\n    auth:\n      auth_url: {}\n      username: provisioner\n      password: provisioner\n      \
             project_name: demo\n      user_domain_name: Default\n      project_domain_name: Default\n    \
             regions: [RegionOne, RegionTwo]\n",
            sim.auth_url()
        ),
    )
    .unwrap();
    let vars: HashMap<String, String> = [
        ("OS_CLOUD", "prov".to_string()),
        ("OS_CLIENT_CONFIG_FILE", file.display().to_string()),
        ("HOME", "/nonexistent".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let cloud = CloudConfig::from_vars(&vars).expect("cloud config").expect("a cloud");
    assert_eq!(cloud.region.as_deref(), Some("RegionOne"));
    assert_eq!(cloud.regions, vec!["RegionOne".to_string(), "RegionTwo".to_string()]);
    cloud
}

async fn run_in_process(stack: &Stack) -> (tokio_util::sync::CancellationToken, tokio::task::JoinHandle<()>) {
    let app = App::build_with_cloud(stack.env.settings.clone(), Some(clouds_yaml(&stack.sim)))
        .await
        .expect("build the app");
    let token = app.shutdown_token();
    let handle =
        tokio::spawn(async move { app.run_until_stopped().await.expect("the worker stops cleanly") });
    (token, handle)
}

/// The status of `GET <path>` with a demo token.
async fn status_of(sim: &SimHandle, path: &str) -> u16 {
    api(sim, &token(sim, "demo"), Method::GET, path, None).await.0
}

/// The servers, ports and volumes the demo project holds in a region (by the region's control).
fn held(sim: &SimHandle, region: &str) -> (usize, usize, usize) {
    let r = sim.region(region).expect("the region").resources();
    r.projects
        .get(DEMO_PROJECT_ID)
        .map(|p| (p.servers.values().sum(), p.ports.values().sum(), p.volumes.values().sum()))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_two_orders_are_made_suspended_and_terminated_there_and_others_stay_in_the_configured_region()
{
    let mut stack = Stack::new(fast()).await;
    let (stop, run) = run_in_process(&stack).await;
    stack.env.publish(order_in("r2", Some("RegionTwo")).to_string().as_bytes()).await;
    stack.env.publish(order_in("r1", None).to_string().as_bytes()).await;
    stack.env.publish(order_in("r1-named", Some("RegionOne")).to_string().as_bytes()).await;
    stack.wait_events(3, WAIT).await;

    let e = event_of(&stack, "r2").clone();
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    assert_eq!(e.region.as_deref(), Some("RegionTwo"), "the event names the region");
    let server = e.server.as_ref().unwrap().id.clone();
    let port = e.port_id.clone().unwrap();
    let volume = e.volume.as_ref().unwrap().id.clone();
    for (what, path) in [
        ("server", format!("/compute/v2.1/servers/{server}")),
        ("port", format!("/networking/v2.0/ports/{port}")),
        ("volume", format!("/volume/v3/volumes/{volume}")),
    ] {
        assert_eq!(status_of(&stack.sim, &format!("{TWO}{path}")).await, 200, "the {what} is in RegionTwo");
        assert_eq!(status_of(&stack.sim, &path).await, 404, "the {what} is not in RegionOne");
    }
    let demo = token(&stack.sim, "demo");
    let (_, v) =
        api(&stack.sim, &demo, Method::GET, &format!("{TWO}/volume/v3/volumes/{volume}"), None).await;
    assert_eq!(v["volume"]["attachments"][0]["server_id"].as_str(), Some(server.as_str()), "{v}");

    // No region: the configured one (the first of `regions:`), as before; naming it is the same.
    for id in ["r1", "r1-named"] {
        let e = event_of(&stack, id).clone();
        assert_eq!(e.event_type, EventType::Completed, "{e:?}");
        let server = e.server.as_ref().unwrap().id.clone();
        assert_eq!(status_of(&stack.sim, &format!("/compute/v2.1/servers/{server}")).await, 200);
        assert_eq!(status_of(&stack.sim, &format!("{TWO}/compute/v2.1/servers/{server}")).await, 404);
    }
    assert_eq!(event_of(&stack, "r1").region, None);
    assert_eq!((held(&stack.sim, "RegionOne"), held(&stack.sim, "RegionTwo")), ((2, 2, 2), (1, 1, 1)));
    let regions: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT target_order_id, region FROM service_status ORDER BY target_order_id")
            .fetch_all(stack.env.store.pool())
            .await
            .unwrap();
    assert_eq!(
        regions,
        vec![
            ("r1".to_string(), None),
            ("r1-named".to_string(), Some("RegionOne".to_string())),
            ("r2".to_string(), Some("RegionTwo".to_string())),
        ]
    );

    let detail = stack.env.store.service_detail("r2").await.unwrap().expect("the service");
    assert_eq!(detail.status.region.as_deref(), Some("RegionTwo"));
    let shown = openstack_provisioner::ops::jobs::render_service(&detail);
    assert!(shown.contains("region       RegionTwo"), "{shown}");

    // The service's actions go to the region it was made in.
    stack.env.publish_keyed([action("r2-suspend", "suspend", "r2")]).await;
    wait_services(&stack, &["r2".to_string()], "suspended", WAIT).await;
    let (_, s) =
        api(&stack.sim, &demo, Method::GET, &format!("{TWO}/compute/v2.1/servers/{server}"), None).await;
    assert_eq!(s["server"]["status"], "SHUTOFF", "{s}");
    stack.env.publish_keyed([action("r2-terminate", "terminate", "r2")]).await;
    wait_services(&stack, &["r2".to_string()], "terminated", WAIT).await;
    stack.wait_events(5, WAIT).await;
    let t = event_of(&stack, "r2-terminate").clone();
    assert_eq!((t.event_type, t.region.as_deref()), (EventType::Completed, Some("RegionTwo")), "{t:?}");
    wait_until(WAIT, "the RegionTwo server is gone", || async {
        status_of(&stack.sim, &format!("{TWO}/compute/v2.1/servers/{server}")).await == 404
    })
    .await;
    wait_until(WAIT, "terminate removed everything in RegionTwo", || async {
        held(&stack.sim, "RegionTwo") == (0, 0, 0)
    })
    .await;
    assert_eq!(held(&stack.sim, "RegionOne"), (2, 2, 2), "nothing in RegionOne was touched");
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_region_fails_the_order_as_invalid_naming_the_regions_with_nothing_created() {
    let mut stack = Stack::new(fast()).await;
    let (stop, run) = run_in_process(&stack).await;
    stack.env.publish(order_in("r9", Some("RegionNine")).to_string().as_bytes()).await;
    stack.wait_events(1, WAIT).await;
    let e = event_of(&stack, "r9");
    assert_eq!(e.event_type, EventType::Failed, "{e:?}");
    let error = e.error.as_ref().unwrap();
    assert_eq!(error.class, ErrorClass::InvalidOrder, "{error:?}");
    assert!(
        error.message.contains("\"RegionNine\"") && error.message.contains("RegionOne, RegionTwo"),
        "the message names the region and the known ones: {}",
        error.message
    );
    assert_eq!((held(&stack.sim, "RegionOne"), held(&stack.sim, "RegionTwo")), ((0, 0, 0), (0, 0, 0)));
    for region in ["RegionOne", "RegionTwo"] {
        let c = stack.sim.region(region).unwrap();
        // (Keystone's token POSTs aside: authenticating creates nothing in a region.)
        let posts: u64 = c
            .counters()
            .iter()
            .filter(|c| c.method == "POST" && c.service != "identity")
            .map(|c| c.count)
            .sum();
        assert_eq!(posts, 0, "nothing was asked to be created in {region}: {:?}", c.counters());
    }
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_of_a_region_two_order_reads_region_two_quotas() {
    let stack = Stack::new(fast()).await;
    let cloud = OpenStackCloud::new(Arc::new(
        Session::new(clouds_yaml(&stack.sim), SessionOptions::default()).expect("session"),
    ));
    // RegionTwo has no room for an instance; RegionOne has plenty.
    stack
        .sim
        .region("RegionTwo")
        .unwrap()
        .set_quotas("demo", QuotaPatch { instances: Some(0), ..Default::default() })
        .unwrap();
    let order = |region: Option<&str>| -> Order { serde_json::from_value(order_in("pf", region)).unwrap() };
    let check = |r: &openstack_provisioner::engine::preflight::Report, name: &str| {
        r.checks.iter().find(|c| c.check == name).cloned().unwrap_or_else(|| panic!("no {name} check: {r:?}"))
    };

    let two = check_order(&cloud, &order(Some("RegionTwo"))).await;
    assert!(!two.ok, "{two:?}");
    assert!(check(&two, "region").ok, "{two:?}");
    let q = check(&two, "quota.instances");
    assert_eq!((q.ok, q.class), (false, Some(ErrorClass::QuotaExceeded)), "{q:?}");
    assert!(q.detail.contains("0 of 0 in use"), "RegionTwo's limit: {q:?}");
    assert_eq!(two.blocking().map(|c| c.check.as_str()), Some("quota.instances"));

    let one = check_order(&cloud, &order(None)).await;
    assert!(one.ok, "RegionOne's quotas have room: {one:?}");
    assert!(one.checks.iter().all(|c| c.check != "region"), "{one:?}");

    let nine = check_order(&cloud, &order(Some("RegionNine"))).await;
    let r = check(&nine, "region");
    assert_eq!((r.ok, r.class), (false, Some(ErrorClass::InvalidOrder)), "{r:?}");
    assert!(r.detail.contains("RegionOne, RegionTwo"), "{r:?}");
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_during_a_region_two_create_is_followed_by_adoption_there() {
    let mut stack = Stack::new(fast()).await;
    let two = stack.sim.region("RegionTwo").unwrap();
    let counted = two.add_fault(counting("compute", "POST", "/servers$")).unwrap();
    // Nova makes the server, then its answer is held: the worker dies without learning it.
    two.add_fault(held_answer("compute", "POST", "/servers$")).unwrap();
    let mut worker = stack.child("r2-k0");
    wait_ready(&worker).await;
    stack.env.publish(order_in("r2-kill", Some("RegionTwo")).to_string().as_bytes()).await;
    wait_until(WAIT, "nova made the server in RegionTwo", || async { held(&stack.sim, "RegionTwo").0 == 1 })
        .await;
    worker.kill().await;
    let mut worker = stack.child("r2-k1");
    stack.wait_events(1, Duration::from_secs(90)).await;
    let e = event_of(&stack, "r2-kill").clone();
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let fired = two.faults().into_iter().find(|f| f.id == counted).map(|f| f.fired);
    assert_eq!(fired, Some(1), "a second server was asked for");
    assert_eq!(held(&stack.sim, "RegionTwo"), (1, 1, 1), "exactly one of everything in RegionTwo");
    assert_eq!(held(&stack.sim, "RegionOne"), (0, 0, 0), "nothing in RegionOne");
    let server = e.server.as_ref().unwrap().id.clone();
    assert_eq!(status_of(&stack.sim, &format!("{TWO}/compute/v2.1/servers/{server}")).await, 200);
    wait_services(&stack, &["r2-kill".to_string()], "active", WAIT).await;
    worker.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_lists_every_region_its_services_use() {
    use openstack_provisioner::config::OrphanPolicy;
    use openstack_provisioner::engine::cloud::Cloud;
    use openstack_provisioner::engine::reconcile::{ReconcileConfig, Reconciler};

    let mut stack = Stack::new(fast()).await;
    let (stop, run) = run_in_process(&stack).await;
    stack.env.publish(order_in("rec-two", Some("RegionTwo")).to_string().as_bytes()).await;
    stack.wait_events(1, WAIT).await;
    wait_services(&stack, &["rec-two".to_string()], "active", WAIT).await;
    // An orphan in RegionTwo: a volume with our marks for a job that never existed.
    let ghost = uuid::Uuid::new_v4().to_string();
    let (status, body) = api(
        &stack.sim,
        &token(&stack.sim, "demo"),
        Method::POST,
        &format!("{TWO}/volume/v3/{DEMO_PROJECT_ID}/volumes"),
        Some(json!({"volume": {"size": 1, "name": "orphan-two",
            "metadata": {"provisioner": "true", "provisioner_job": ghost}}})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let orphan = body["volume"]["id"].as_str().unwrap().to_string();
    wait_until(WAIT, "the orphan volume is available", || async {
        let (_, v) = api(
            &stack.sim,
            &token(&stack.sim, "demo"),
            Method::GET,
            &format!("{TWO}/volume/v3/volumes/{orphan}"),
            None,
        )
        .await;
        v["volume"]["status"] == "available"
    })
    .await;

    let cloud: Arc<dyn Cloud> = Arc::new(OpenStackCloud::new(Arc::new(
        Session::new(clouds_yaml(&stack.sim), SessionOptions::default()).expect("session"),
    )));
    let mut s = stack.env.settings.clone();
    s.reconcile.grace_secs = 0;
    s.reconcile.orphans = OrphanPolicy::Delete;
    let cfg = ReconcileConfig::from_settings(&s, "test-reconciler".into());
    let reconciler =
        Reconciler::new(stack.env.store.clone(), cloud, cfg, Arc::new(tokio::sync::Notify::new()));
    let report = reconciler.run_once().await.expect("pass");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // The RegionTwo service's server, port and volume are found where they are (no drift), and
    // the orphan is found and deleted there.
    let found: Vec<(&str, &str, &str, &str)> = report
        .findings
        .iter()
        .map(|f| (f.kind.as_str(), f.resource_type.as_str(), f.resource_id.as_str(), f.action.as_str()))
        .collect();
    assert_eq!(found, vec![("orphan", "volume", orphan.as_str(), "deleted")], "{:?}", report.findings);
    wait_until(WAIT, "the RegionTwo orphan is gone", || async {
        status_of(&stack.sim, &format!("{TWO}/volume/v3/volumes/{orphan}")).await == 404
    })
    .await;
    let again = reconciler.run_once().await.expect("pass");
    assert_eq!((again.new_findings, again.deleted), (0, 0), "{:?}", again.findings);
    assert_eq!(held(&stack.sim, "RegionTwo"), (1, 1, 1), "the service's resources are untouched");
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_quotas_are_set_in_every_region_and_a_close_terminates_its_region_two_vm() {
    let mut stack = Stack::new(fast()).await;
    // Tenant orders need the service user's admin scope.
    let mut vars: HashMap<String, String> =
        stack.os_env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    vars.insert("OS_PROJECT_NAME".into(), "service".into());
    let cloud = CloudConfig::from_vars(&vars).expect("cloud config").expect("a cloud");
    let app = App::build_with_cloud(stack.env.settings.clone(), Some(cloud)).await.expect("build the app");
    let stop = app.shutdown_token();
    let run = tokio::spawn(async move { app.run_until_stopped().await.expect("the worker stops cleanly") });

    let create = json!({"version": 1, "order_id": "T-reg", "action": "tenant_create", "tenant_ref": "C-reg",
        "project": {"name": "p-C-reg"}, "user": {"name": "u-C-reg"}, "roles": ["member"],
        "quotas": {"instances": 3, "volumes": 4, "ports": 7}});
    stack.env.publish_with("order.tenant.create", create.to_string().as_bytes()).await;
    stack.wait_events(1, WAIT).await;
    assert_eq!(event_of(&stack, "T-reg").event_type, EventType::Completed, "{:?}", event_of(&stack, "T-reg"));
    for region in ["RegionOne", "RegionTwo"] {
        let q = serde_json::to_value(stack.sim.region(region).unwrap().quotas()["p-C-reg"]).unwrap();
        assert_eq!(
            (q["instances"].clone(), q["volumes"].clone(), q["ports"].clone()),
            (3.into(), 4.into(), 7.into()),
            "{region}: {q}"
        );
    }

    let vm = json!({"order_id": "reg-vm", "tenant_ref": "C-reg", "region": "RegionTwo",
        "server": {"name": "vm-reg", "flavor": "m1.tiny", "image": "cirros-0.6.2", "network": "private"}});
    stack.env.publish(vm.to_string().as_bytes()).await;
    stack.wait_events(2, WAIT).await;
    let e = event_of(&stack, "reg-vm").clone();
    assert_eq!((e.event_type, e.region.as_deref()), (EventType::Completed, Some("RegionTwo")), "{e:?}");
    let project = e.project_id.clone();
    let in_two = |sim: &SimHandle| {
        sim.region("RegionTwo")
            .unwrap()
            .resources()
            .projects
            .get(&project)
            .map(|p| p.servers.values().sum::<usize>())
    };
    assert_eq!(in_two(&stack.sim), Some(1));

    let close =
        json!({"version": 1, "order_id": "T-reg-close", "action": "tenant_close", "tenant_ref": "C-reg"});
    stack.env.publish_with("order.tenant.close", close.to_string().as_bytes()).await;
    wait_until(WAIT, "the close completed", || async {
        stack.env.store.tenant("C-reg").await.ok().flatten().is_some_and(|t| t.state == "closed")
    })
    .await;
    wait_until(WAIT, "the RegionTwo VM is gone", || async { in_two(&stack.sim).unwrap_or(0) == 0 }).await;
    stack.wait_events(4, WAIT).await;
    let t = stack.events.values().find(|e| e.order_id.starts_with("close-")).cloned().expect("the terminate");
    assert_eq!((t.event_type, t.region.as_deref()), (EventType::Completed, Some("RegionTwo")), "{t:?}");
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}
