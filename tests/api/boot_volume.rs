//! Tests: `server.boot_volume` (issue 15): the server boots from a Cinder volume Nova makes from
//! the image (block device mapping v2), visible as a real cloud shows it (the server's image
//! `""`, the volume bootable, in-use on the server as `/dev/vda`, listed in the server's
//! `volumes_attached`), recorded on the service; one server and one boot volume after a SIGKILL
//! while the server create is in flight; removed by a rollback (whatever
//! `delete_on_termination` says), a Cinder quota hit while Nova builds it failing with
//! `quota_exceeded`; terminate deleting it with the server or keeping it detached; pre-flight
//! refusing a volume too small for its image and an unknown type.

use std::sync::Arc;
use std::time::Duration;

use openstack_provisioner::engine::cloud::Cloud;
use openstack_provisioner::engine::openstack_cloud::OpenStackCloud;
use openstack_provisioner::engine::preflight::check_order;
use openstack_provisioner::messages::{ErrorClass, EventType, Order};
use openstack_provisioner::openstack::session::{Session, SessionOptions};
use openstack_provisioner::sim::control::QuotaPatch;
use openstack_provisioner::sim::{DEMO_PROJECT_ID, SimHandle};
use reqwest::Method;
use serde_json::{Value, json};

use crate::engine::stack::{Stack, fast};
use crate::engine::{run_app, wait_ready};
use crate::helpers::{WAIT, counting, held_answer, wait_until};
use crate::lifecycle::{action, wait_services};
use crate::network::{api, event_of, order_with, token};

/// The seed's cirros image.
const CIRROS_ID: &str = "9f1c2a3b-4d5e-4f60-8a71-b2c3d4e5f601";

fn bfv_order(order_id: &str, boot_volume: Value) -> Value {
    order_with(order_id, DEMO_PROJECT_ID, json!({"boot_volume": boot_volume}))
}

/// Every volume of the demo project, as `openstack volume list --long` reads them.
async fn demo_volumes(sim: &SimHandle) -> Vec<Value> {
    let (status, body) = api(
        sim,
        &token(sim, "demo"),
        Method::GET,
        &format!("/volume/v3/{DEMO_PROJECT_ID}/volumes/detail"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["volumes"].as_array().cloned().unwrap_or_default()
}

/// `GET /servers/{id}` at microversion 2.79 (`volumes_attached` shows delete_on_termination
/// from 2.3), as `openstack server show` asks for it.
async fn nova_show(sim: &SimHandle, token: &str, id: &str) -> Value {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .get(format!("{}/compute/v2.1/servers/{id}", sim.url()))
        .header("X-Auth-Token", token)
        .header("OpenStack-API-Version", "compute 2.79")
        .send()
        .await
        .expect("call the simulator");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.expect("a server")
}

fn demo_usage(stack: &Stack) -> openstack_provisioner::sim::state::Usage {
    stack.sim.control().resources().projects[DEMO_PROJECT_ID].usage
}

async fn boot_volume_of_service(stack: &Stack, target: &str) -> Option<String> {
    sqlx::query_scalar("SELECT boot_volume_id FROM service_status WHERE target_order_id = ?")
        .bind(target)
        .fetch_one(stack.env.store.pool())
        .await
        .expect("service_status row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_volume_is_made_from_the_image_shown_as_openstack_shows_it_and_terminate_follows_delete_on_termination()
 {
    let mut stack = Stack::new(fast()).await;
    let demo = token(&stack.sim, "demo");
    let (stop, run) = run_app(&stack).await;
    let mut with_data = bfv_order("bfv-del", json!({"size_gb": 2, "type": "ssd"}));
    with_data["volume"] = json!({"size_gb": 1});
    let orders = [with_data, bfv_order("bfv-keep", json!({"size_gb": 1, "delete_on_termination": false}))];
    stack.env.publish_all(orders.iter().map(|o| o.to_string().into_bytes())).await;
    stack.wait_events(orders.len(), WAIT).await;

    let mut boots = Vec::new();
    for (order_id, size, vtype, dot) in [("bfv-del", 2, "ssd", true), ("bfv-keep", 1, "standard", false)] {
        let e = event_of(&stack, order_id).clone();
        assert_eq!(e.event_type, EventType::Completed, "{e:?}");
        let server = e.server.as_ref().unwrap();
        let boot =
            server.boot_volume.as_ref().unwrap_or_else(|| panic!("no boot_volume in {e:?}")).id.clone();
        // As `openstack server show` sees it: no image ("N/A (booted from volume)"), the volume
        // attached with the order's delete_on_termination.
        let s = nova_show(&stack.sim, &demo, &server.id).await;
        assert_eq!(s["server"]["image"], json!(""), "{s}");
        let attached = s["server"]["os-extended-volumes:volumes_attached"].as_array().unwrap().clone();
        assert_eq!(attached[0], json!({"id": boot, "delete_on_termination": dot}), "{s}");
        // As `openstack volume show` sees it: made from the image, bootable, in-use on the
        // server as its root disk.
        let (status, v) = api(
            &stack.sim,
            &demo,
            Method::GET,
            &format!("/volume/v3/{DEMO_PROJECT_ID}/volumes/{boot}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{v}");
        let v = &v["volume"];
        assert_eq!(
            (v["status"].as_str(), v["bootable"].as_str(), v["size"].as_u64(), v["volume_type"].as_str()),
            (Some("in-use"), Some("true"), Some(size), Some(vtype)),
            "{v}"
        );
        assert_eq!(v["volume_image_metadata"]["image_id"], CIRROS_ID, "{v}");
        assert_eq!(v["attachments"][0]["server_id"].as_str(), Some(server.id.as_str()), "{v}");
        assert_eq!(v["attachments"][0]["device"], "/dev/vda", "{v}");
        // Recorded on the service (the contract view).
        assert_eq!(boot_volume_of_service(&stack, order_id).await.as_deref(), Some(boot.as_str()));
        boots.push(boot);
    }
    // The data volume is its own, attached after the boot volume.
    let e = event_of(&stack, "bfv-del").clone();
    let data = e.volume.as_ref().expect("the data volume");
    assert_ne!(Some(&data.id), boots.first());
    assert_eq!(data.device.as_deref(), Some("/dev/vdb"), "{e:?}");
    assert_eq!(demo_volumes(&stack.sim).await.len(), 3);

    stack
        .env
        .publish_keyed([
            action("bfv-del-T", "terminate", "bfv-del"),
            action("bfv-keep-T", "terminate", "bfv-keep"),
        ])
        .await;
    stack.wait_events(orders.len() + 2, WAIT).await;
    wait_services(&stack, &["bfv-del".to_string(), "bfv-keep".to_string()], "terminated", WAIT).await;
    // delete_on_termination true: Nova deleted it with the server (and the data volume went).
    let e = event_of(&stack, "bfv-del-T").clone();
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let reported = e.server.as_ref().unwrap().boot_volume.as_ref().unwrap();
    assert_eq!((reported.id.as_str(), reported.kept), (boots[0].as_str(), None), "{e:?}");
    // delete_on_termination false: detached and kept, and the event says so.
    let e = event_of(&stack, "bfv-keep-T").clone();
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let reported = e.server.as_ref().unwrap().boot_volume.as_ref().unwrap();
    assert_eq!((reported.id.as_str(), reported.kept), (boots[1].as_str(), Some(true)), "{e:?}");
    let left = demo_volumes(&stack.sim).await;
    assert_eq!(left.len(), 1, "only the kept boot volume: {left:?}");
    assert_eq!(left[0]["id"].as_str(), Some(boots[1].as_str()));
    assert_eq!(left[0]["status"], "available", "{left:?}");
    assert_eq!(left[0]["attachments"], json!([]), "{left:?}");
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

/// Nova carries out the server create (and makes the boot volume), then its answer is held:
/// the worker is killed without learning it, and its successor must adopt the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_while_the_server_create_is_in_flight_leaves_one_server_and_one_boot_volume() {
    let mut stack = Stack::new(fast()).await;
    let control = stack.sim.control();
    let counting = control.add_fault(counting("compute", "POST", "/servers$")).unwrap();
    control.add_fault(held_answer("compute", "POST", "/servers$")).unwrap();
    let mut worker = stack.child("bfv-k0");
    wait_ready(&worker).await;
    stack.env.publish(bfv_order("bfv-kill", json!({"size_gb": 1})).to_string().as_bytes()).await;
    wait_until(WAIT, "nova made the server and its boot volume", || async {
        demo_usage(&stack).instances == 1 && demo_usage(&stack).volumes == 1
    })
    .await;
    worker.kill().await;
    let mut worker = stack.child("bfv-k1");
    stack.wait_events(1, Duration::from_secs(90)).await;
    let e = event_of(&stack, "bfv-kill").clone();
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let boot = e.server.as_ref().unwrap().boot_volume.clone().expect("the boot volume reported");
    let fired = control.faults().into_iter().find(|f| f.id == counting).map(|f| f.fired);
    assert_eq!(fired, Some(1), "a second server was asked for");
    let u = demo_usage(&stack);
    assert_eq!((u.instances, u.volumes), (1, 1), "exactly one server and one boot volume: {u:?}");
    let volumes = demo_volumes(&stack.sim).await;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0]["id"].as_str(), Some(boot.id.as_str()));
    wait_services(&stack, &["bfv-kill".to_string()], "active", WAIT).await;
    assert_eq!(boot_volume_of_service(&stack, "bfv-kill").await, Some(boot.id));
    worker.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}

/// A duplicate server carrying the job's mark, its boot volume kept by Nova
/// (`delete_on_termination: false`, as the order's own): the adopting worker deletes the
/// duplicate and, once Nova has let go of it, its boot volume; one server and one volume remain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_server_found_at_adoption_goes_with_the_boot_volume_nova_kept_for_it() {
    let mut stack = Stack::new(fast()).await;
    let control = stack.sim.control();
    let held = control.add_fault(held_answer("compute", "POST", "/servers$")).unwrap();
    let mut worker = stack.child("bfv-d0");
    wait_ready(&worker).await;
    let order = bfv_order("bfv-dup", json!({"size_gb": 1, "delete_on_termination": false}));
    stack.env.publish(order.to_string().as_bytes()).await;
    wait_until(WAIT, "nova made the server and its boot volume", || async {
        demo_usage(&stack).instances == 1 && demo_usage(&stack).volumes == 1
    })
    .await;
    worker.kill().await;
    assert!(control.remove_fault(held));

    // The duplicate: the job's mark (read from the server Nova made), a kept boot volume.
    let demo = token(&stack.sim, "demo");
    let (status, body) = api(&stack.sim, &demo, Method::GET, "/compute/v2.1/servers/detail", None).await;
    assert_eq!(status, 200, "{body}");
    let first = body["servers"][0].clone();
    let mark = nova_show(&stack.sim, &demo, first["id"].as_str().unwrap()).await["server"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .find(|t| t.starts_with("job-"))
        .expect("the job's mark on its server")
        .to_string();
    let dup = json!({"name": "bfv-dup", "flavorRef": "1", "imageRef": "", "networks": "auto",
        "tags": [mark, "provisioner"],
        "block_device_mapping_v2": [{"boot_index": 0, "uuid": CIRROS_ID, "source_type": "image",
            "destination_type": "volume", "volume_size": 1, "delete_on_termination": false}]});
    let (status, body) = nova_create(&stack.sim, &demo, "2.67", dup).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["server"]["id"].is_string(), "{body}");
    wait_until(WAIT, "the duplicate and its boot volume", || async {
        demo_usage(&stack).instances == 2 && demo_usage(&stack).volumes == 2
    })
    .await;

    let mut worker = stack.child("bfv-d1");
    stack.wait_events(1, Duration::from_secs(90)).await;
    let e = event_of(&stack, "bfv-dup").clone();
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let server = e.server.as_ref().unwrap();
    let boot = server.boot_volume.clone().expect("the boot volume reported");
    let u = demo_usage(&stack);
    assert_eq!((u.instances, u.volumes), (1, 1), "one server and one boot volume left: {u:?}");
    let volumes = demo_volumes(&stack.sim).await;
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    assert_eq!(volumes[0]["id"].as_str(), Some(boot.id.as_str()));
    let (status, body) = api(&stack.sim, &demo, Method::GET, "/compute/v2.1/servers/detail", None).await;
    assert_eq!(status, 200, "{body}");
    let left: Vec<&str> =
        body["servers"].as_array().unwrap().iter().filter_map(|s| s["id"].as_str()).collect();
    assert_eq!(left.len(), 1, "{body}");
    assert_eq!(left[0], server.id, "{body}");
    worker.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_removes_the_boot_volume_and_a_cinder_quota_hit_while_nova_builds_it_is_quota() {
    let mut stack = Stack::new(fast()).await;
    let control = stack.sim.control();
    // Room for the boot volume only: the data volume's create hits Cinder's quota after the
    // server booted from its volume, and the rollback removes both (the boot volume although
    // the order said to keep it on terminate: nothing was delivered).
    control.set_quotas(DEMO_PROJECT_ID, QuotaPatch { volumes: Some(1), ..QuotaPatch::default() }).unwrap();
    let (stop, run) = run_app(&stack).await;
    let mut o = bfv_order("bfv-rollback", json!({"size_gb": 1, "delete_on_termination": false}));
    o["volume"] = json!({"size_gb": 1});
    stack.env.publish(o.to_string().as_bytes()).await;
    stack.wait_events(1, WAIT).await;
    let e = event_of(&stack, "bfv-rollback").clone();
    let err = e.error.as_ref().unwrap();
    assert_eq!(
        (e.event_type, err.class, err.step.as_str()),
        (EventType::Failed, ErrorClass::QuotaExceeded, "create_volume"),
        "{e:?}"
    );
    wait_until(WAIT, "the rollback deleted the server and then its boot volume", || async {
        let u = demo_usage(&stack);
        u.instances == 0 && u.volumes == 0 && u.ports == 0
    })
    .await;
    assert!(demo_volumes(&stack.sim).await.is_empty());

    // Not enough gigabytes for the boot volume: Nova's build is aborted (the server in ERROR,
    // its fault naming the quota), classified as quota; the rollback deletes the server.
    control
        .set_quotas(
            DEMO_PROJECT_ID,
            QuotaPatch { volumes: Some(10), gigabytes: Some(1), ..QuotaPatch::default() },
        )
        .unwrap();
    stack.env.publish(bfv_order("bfv-over", json!({"size_gb": 2})).to_string().as_bytes()).await;
    stack.wait_events(2, WAIT).await;
    let e = event_of(&stack, "bfv-over").clone();
    let err = e.error.as_ref().unwrap();
    assert_eq!(
        (e.event_type, err.class, err.step.as_str()),
        (EventType::Failed, ErrorClass::QuotaExceeded, "wait_server"),
        "{e:?}"
    );
    assert!(err.message.contains("Quota exceeded for resources: volumes"), "Nova's fault: {e:?}");
    wait_until(WAIT, "the rollback deleted the server", || async {
        let u = demo_usage(&stack);
        u.instances == 0 && u.volumes == 0 && u.ports == 0
    })
    .await;
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_flight_refuses_a_boot_volume_too_small_for_its_image_an_unknown_type_and_no_room() {
    let stack = Stack::new(fast()).await;
    let session = Arc::new(Session::new(stack.cloud(), SessionOptions::default()).expect("session"));
    let cloud: Arc<dyn Cloud> = Arc::new(OpenStackCloud::new(session));
    let check = |order: Value| {
        let cloud = cloud.clone();
        async move {
            let order: Order = serde_json::from_value(order).unwrap();
            check_order(cloud.as_ref(), &order).await
        }
    };
    let verdict = |report: &openstack_provisioner::engine::preflight::Report, name: &str| {
        report
            .checks
            .iter()
            .find(|c| c.check == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name}: {report:?}"))
    };

    // ubuntu-24.04 has min_disk 3.
    let mut small = bfv_order("pf-small", json!({"size_gb": 2}));
    small["server"]["image"] = json!("ubuntu-24.04");
    let report = check(small).await;
    let c = verdict(&report, "boot_volume");
    assert!(
        !c.ok && c.class == Some(ErrorClass::InvalidOrder) && c.detail.contains("at least 3 GiB"),
        "{report:?}"
    );
    assert_eq!(
        report.blocking().map(|c| c.check.as_str()),
        Some("boot_volume"),
        "fails fast with pre-flight on"
    );

    let report = check(bfv_order("pf-type", json!({"size_gb": 1, "type": "gold"}))).await;
    let c = verdict(&report, "boot_volume_type");
    assert!(!c.ok && c.class == Some(ErrorClass::NotFound) && c.detail.contains("gold"), "{report:?}");

    // The boot volume counts in Cinder's quota with the data volume.
    stack
        .sim
        .control()
        .set_quotas(DEMO_PROJECT_ID, QuotaPatch { volumes: Some(1), ..QuotaPatch::default() })
        .unwrap();
    let mut both = bfv_order("pf-room", json!({"size_gb": 1, "type": "ssd"}));
    both["volume"] = json!({"size_gb": 1});
    let report = check(both).await;
    let c = verdict(&report, "quota.volumes");
    assert!(!c.ok && c.class == Some(ErrorClass::QuotaExceeded) && c.detail.contains("need 2"), "{report:?}");
    assert!(verdict(&report, "boot_volume").ok && verdict(&report, "boot_volume_type").ok, "{report:?}");
    assert!(verdict(&report, "quota.gigabytes").detail.contains("need 2"), "{report:?}");

    let report = check(bfv_order("pf-ok", json!({"size_gb": 1}))).await;
    assert!(report.ok, "{report:?}");
    stack.cleanup().await;
}

/// `POST /servers` at a microversion, as a client that asks for it: (status, body).
async fn nova_create(sim: &SimHandle, token: &str, microversion: &str, server: Value) -> (u16, Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let resp = reqwest::Client::new()
        .post(format!("{}/compute/v2.1/servers", sim.url()))
        .header("X-Auth-Token", token)
        .header("OpenStack-API-Version", format!("compute {microversion}"))
        .json(&json!({ "server": server }))
        .send()
        .await
        .expect("call the simulator");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_nova_refuses_and_fails_boot_volumes_as_nova_does() {
    let stack = Stack::new(fast()).await;
    let demo = token(&stack.sim, "demo");
    let bdm = |size: Value, extra: Value| {
        let mut b = json!({"boot_index": 0, "uuid": CIRROS_ID, "source_type": "image",
            "destination_type": "volume", "volume_size": size});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        json!({"name": "bfv", "flavorRef": "1", "imageRef": "", "networks": "auto",
            "block_device_mapping_v2": [b]})
    };
    // Refused at the API, nothing made.
    let (status, body) =
        nova_create(&stack.sim, &demo, "2.66", bdm(json!(1), json!({"volume_type": "ssd"}))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("'volume_type' was unexpected"), "{body}");
    let (status, body) =
        nova_create(&stack.sim, &demo, "2.67", bdm(json!(1), json!({"volume_type": "gold"}))).await;
    assert_eq!(
        (status, body["badRequest"]["message"].as_str()),
        (400, Some("Volume type gold could not be found."))
    );
    let mut ubuntu = bdm(json!(2), json!({}));
    ubuntu["block_device_mapping_v2"][0]["uuid"] = json!("1e2d3c4b-5a69-4788-97a6-b5c4d3e2f102");
    let (status, body) = nova_create(&stack.sim, &demo, "2.67", ubuntu).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("Volume is smaller than the minimum size specified in image metadata"),
        "{body}"
    );
    let (status, body) = nova_create(&stack.sim, &demo, "2.67", bdm(json!(null), json!({}))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(demo_usage(&stack).instances, 0);
    assert!(demo_volumes(&stack.sim).await.is_empty());

    // Strings as older clients send them; delete_on_termination honoured on delete.
    let (status, body) =
        nova_create(&stack.sim, &demo, "2.79", bdm(json!("1"), json!({"delete_on_termination": "true"})))
            .await;
    assert_eq!(status, 202, "{body}");
    let id = body["server"]["id"].as_str().unwrap().to_string();
    let s = nova_show(&stack.sim, &demo, &id).await;
    let attached = s["server"]["os-extended-volumes:volumes_attached"].clone();
    assert_eq!(attached[0]["delete_on_termination"], true, "{s}");
    let volume = attached[0]["id"].as_str().unwrap().to_string();
    let v = demo_volumes(&stack.sim).await;
    assert_eq!(
        (v.len(), v[0]["name"].as_str(), v[0]["bootable"].as_str()),
        (1, Some(""), Some("true")),
        "{v:?}"
    );
    let (status, _) =
        api(&stack.sim, &demo, Method::DELETE, &format!("/compute/v2.1/servers/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) =
        api(&stack.sim, &demo, Method::GET, &format!("/volume/v3/{DEMO_PROJECT_ID}/volumes/{volume}"), None)
            .await;
    assert_eq!(status, 404, "deleted with its server");
    assert_eq!(demo_usage(&stack).volumes, 0);
    stack.cleanup().await;
}
