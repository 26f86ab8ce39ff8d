//! Pre-flight (issue 13): `provisioner order check FILE` and `POST /v1/preflight` name every kind
//! of problem an order has (missing image, ambiguous image name, unknown flavor, quota short by
//! one instance, short on gigabytes) with exit code 1, pass a fine order with 0, and create
//! nothing; with `PROVISIONER_PREFLIGHT=on` a create that cannot fit fails fast with
//! `quota_exceeded` before its first create call.

use std::time::Duration;

use openstack_provisioner::config::Toggle;
use openstack_provisioner::messages::{ErrorClass, EventType};
use openstack_provisioner::sim::control::QuotaPatch;
use openstack_provisioner::sim::{ACME_PROJECT_ID, SimConfig, SimHandle, Simulator};

use crate::engine::stack::{Stack, fast};
use crate::helpers::WAIT;

/// An order in the small-quota project (2 instances, 20 GB).
fn acme_order(id: &str, image: &str, flavor: &str, volume_gb: Option<u32>) -> serde_json::Value {
    let mut o = serde_json::json!({
        "order_id": id,
        "project_id": ACME_PROJECT_ID,
        "server": {"name": format!("vm-{id}"), "flavor": flavor, "image": image, "network": "private", "key_name": "ops-key"}
    });
    if let Some(gb) = volume_gb {
        o["volume"] = serde_json::json!({"size_gb": gb, "type": "ssd"});
    }
    o
}

fn os_env(sim: &SimHandle) -> Vec<(&'static str, String)> {
    vec![
        ("OS_AUTH_URL", sim.auth_url()),
        ("OS_USERNAME", "provisioner".into()),
        ("OS_PASSWORD", "provisioner".into()),
        ("OS_USER_DOMAIN_NAME", "Default".into()),
        ("OS_PROJECT_DOMAIN_NAME", "Default".into()),
        ("OS_PROJECT_NAME", "demo".into()),
    ]
}

/// `provisioner order check FILE --json`: (exit code, report).
async fn check(sim: &SimHandle, order: &serde_json::Value) -> (i32, serde_json::Value) {
    let file = tempfile_with(order.to_string());
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["order", "check", file.to_str().unwrap(), "--json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "error")
        .envs(os_env(sim))
        .output()
        .await
        .expect("run provisioner order check");
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), report)
}

fn tempfile_with(text: String) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("preflight-{}.json", uuid::Uuid::new_v4().simple()));
    std::fs::write(&path, text).expect("write the order");
    path
}

/// The failed checks of a report: (check, class).
fn failed(report: &serde_json::Value) -> Vec<(String, String)> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| (c["check"].as_str().unwrap().to_string(), c["class"].as_str().unwrap_or("-").to_string()))
        .collect()
}

fn detail<'a>(report: &'a serde_json::Value, check: &str) -> &'a str {
    report["checks"].as_array().unwrap().iter().find(|c| c["check"] == check).unwrap()["detail"]
        .as_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_names_each_problem_of_an_order_and_passes_a_fine_one() {
    let mut seed = openstack_provisioner::sim::Seed::builtin();
    let mut twin = seed.images[0].clone();
    twin.name = "twin".into();
    for id in ["0c0c0c0c-0000-4000-8000-000000000001", "0c0c0c0c-0000-4000-8000-000000000002"] {
        seed.images.push(openstack_provisioner::sim::seed::SeedImage { id: id.into(), ..twin.clone() });
    }
    let sim = Simulator::start(SimConfig { seed, ..SimConfig::for_tests() }).await.expect("simulator");
    let control = sim.control();

    // A fine order: every check passes, exit code 0, and nothing is created.
    let (code, report) = check(&sim, &acme_order("pf-ok", "cirros-0.6.2", "m1.tiny", Some(10))).await;
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], true);
    let checks: Vec<&str> =
        report["checks"].as_array().unwrap().iter().map(|c| c["check"].as_str().unwrap()).collect();
    for c in
        ["schema", "image", "flavor", "network", "volume_type", "keypair", "quota.instances", "quota.cores"]
    {
        assert!(checks.contains(&c), "{c} in {checks:?}");
    }
    for c in ["quota.ram", "quota.ports", "quota.volumes", "quota.gigabytes"] {
        assert!(checks.contains(&c), "{c} in {checks:?}");
    }
    assert_eq!(control.count("POST", "/compute/v2.1/servers"), 0);
    assert_eq!(control.count("POST", "/networking/v2.0/ports"), 0);
    assert_eq!(control.count("POST", "/volume/v3/{project_id}/volumes"), 0);

    // Each problem, named, with exit code 1.
    let (code, r) = check(&sim, &acme_order("pf-img", "no-such-image", "m1.tiny", None)).await;
    assert_eq!((code, failed(&r)), (1, vec![("image".into(), "not_found".into())]), "{r:#}");
    let (code, r) = check(&sim, &acme_order("pf-twin", "twin", "m1.tiny", None)).await;
    assert_eq!((code, failed(&r)), (1, vec![("image".into(), "invalid_order".into())]), "{r:#}");
    assert!(detail(&r, "image").contains("0c0c0c0c-0000-4000-8000-000000000001"), "{r:#}");
    let (code, r) = check(&sim, &acme_order("pf-flavor", "cirros-0.6.2", "m9.huge", None)).await;
    assert_eq!((code, failed(&r)), (1, vec![("flavor".into(), "not_found".into())]), "{r:#}");
    assert!(detail(&r, "quota.cores").contains("not checked"), "{r:#}");
    let (code, r) = check(&sim, &acme_order("pf-gb", "cirros-0.6.2", "m1.tiny", Some(21))).await;
    assert_eq!((code, failed(&r)), (1, vec![("quota.gigabytes".into(), "quota_exceeded".into())]), "{r:#}");
    assert!(detail(&r, "quota.gigabytes").contains("short by 1"), "{r:#}");
    let mut nokey = acme_order("pf-key", "cirros-0.6.2", "m1.tiny", None);
    nokey["server"]["key_name"] = "no-such-key".into();
    let (code, r) = check(&sim, &nokey).await;
    assert_eq!((code, failed(&r)), (1, vec![("keypair".into(), "not_found".into())]), "{r:#}");
    assert!(detail(&r, "keypair").contains("no-such-key"), "{r:#}");
    control.set_quotas(ACME_PROJECT_ID, QuotaPatch { instances: Some(0), ..QuotaPatch::default() }).unwrap();
    let (code, r) = check(&sim, &acme_order("pf-inst", "cirros-0.6.2", "m1.tiny", None)).await;
    assert_eq!((code, failed(&r)), (1, vec![("quota.instances".into(), "quota_exceeded".into())]), "{r:#}");
    assert!(detail(&r, "quota.instances").contains("short by 1"), "{r:#}");
    // A schema error is the only check then.
    let (code, r) =
        check(&sim, &serde_json::json!({"order_id": "pf-bad", "project_id": ACME_PROJECT_ID})).await;
    assert_eq!((code, failed(&r)), (1, vec![("schema".into(), "invalid_order".into())]), "{r:#}");
    // Still nothing created by any of it.
    assert_eq!(control.count("POST", "/compute/v2.1/servers"), 0);
    assert_eq!(control.count("POST", "/networking/v2.0/ports"), 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_on_fails_a_create_fast_and_post_preflight_answers() {
    let mut stack = Stack::new(fast()).await;
    stack.env.settings.preflight = Toggle::On;
    stack.env.settings.http.addr = "127.0.0.1:0".into();
    let app = stack.app().await;
    let http = app.http_addr().expect("http");
    let token = app.shutdown_token();
    let run = tokio::spawn(async move { app.run_until_stopped().await.expect("clean stop") });
    let control = stack.sim.control();
    control.set_quotas(ACME_PROJECT_ID, QuotaPatch { ram: Some(4096), ..QuotaPatch::default() }).unwrap();

    // POST /v1/preflight: 200 for a fine order, 422 with the reason for one that cannot fit.
    let client = reqwest::Client::new();
    let fine = acme_order("pf-http-ok", "cirros-0.6.2", "m1.tiny", Some(5));
    let resp = client.post(format!("http://{http}/v1/preflight")).json(&fine).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let big = acme_order("pf-http-big", "cirros-0.6.2", "m1.large", Some(5));
    let resp = client.post(format!("http://{http}/v1/preflight")).json(&big).send().await.unwrap();
    assert_eq!(resp.status(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(failed(&body), vec![("quota.ram".to_string(), "quota_exceeded".to_string())], "{body:#}");

    // With pre-flight on, the order that cannot fit fails with quota_exceeded, nothing created;
    // the fine one completes.
    control.reset_counters();
    stack.env.publish(big.to_string().as_bytes()).await;
    stack.wait_events(1, WAIT).await;
    let e = stack.events.values().next().unwrap().clone();
    assert_eq!(e.event_type, EventType::Failed, "{e:?}");
    let err = e.error.as_ref().unwrap();
    assert_eq!(err.class, ErrorClass::QuotaExceeded, "{e:?}");
    assert_eq!(err.step, "resolve");
    assert!(err.message.contains("quota.ram"), "{e:?}");
    assert_eq!(control.count("POST", "/networking/v2.0/ports"), 0);
    assert_eq!(control.count("POST", "/compute/v2.1/servers"), 0);
    stack.env.publish(fine.to_string().as_bytes()).await;
    stack.wait_events(2, Duration::from_secs(60)).await;
    let done = stack.events.values().find(|e| e.order_id == "pf-http-ok").unwrap();
    assert_eq!(done.event_type, EventType::Completed, "{done:?}");
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}
