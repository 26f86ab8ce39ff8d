//! What customers order of Nova beyond a plain VM (issue 15): an SSH public key imported as a
//! keypair, a boot volume, an availability zone and a server group. Each is created and visible
//! through the simulator's public API as Nova shows it, adopted after a SIGKILL at its step (no
//! second keypair, no second boot volume), and removed on rollback and on terminate.

use std::time::Duration;

use openstack_provisioner::messages::{Event, EventType};
use openstack_provisioner::sim::{DEMO_PROJECT_ID, FaultRule};

use crate::engine::stack::{Stack, fast};
use crate::engine::{run_app, wait_ready};
use crate::helpers::wait_until;
use crate::lifecycle::{action, wait_services};

/// An OpenSSH ed25519 public key line with key data derived from `seed` (the shape Nova
/// reads: `ssh-ed25519`, then the length-prefixed type and 32 bytes of key, base64).
pub fn ed25519_key(seed: u8, comment: &str) -> (String, Vec<u8>) {
    use base64::Engine as _;
    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend((0..32u8).map(|i| i.wrapping_mul(7).wrapping_add(seed)));
    (format!("ssh-ed25519 {} {comment}", base64::engine::general_purpose::STANDARD.encode(&blob)), blob)
}

/// Nova's fingerprint of a key blob: MD5, colon-separated hex (computed here independently).
fn md5_fingerprint(blob: &[u8]) -> String {
    use md5::Digest as _;
    md5::Md5::digest(blob).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A create order for the demo project with extra `server` fields.
pub fn order_with(order_id: &str, server: serde_json::Value) -> Vec<u8> {
    let mut o = serde_json::json!({
        "order_id": order_id,
        "project_id": DEMO_PROJECT_ID,
        "server": {"name": format!("vm-{order_id}"), "flavor": "m1.tiny", "image": "cirros-0.6.2", "network": "private"}
    });
    for (k, v) in server.as_object().cloned().unwrap_or_default() {
        o["server"][k] = v;
    }
    o.to_string().into_bytes()
}

/// GET on the simulator's Nova as the service user would with the CLI: (status, body).
pub async fn nova_get(stack: &Stack, path: &str) -> (u16, serde_json::Value) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = stack.sim.control().issue_token("provisioner", "provisioner", DEMO_PROJECT_ID).unwrap();
    let r = reqwest::Client::new()
        .get(format!("{}/compute/v2.1{path}", stack.sim.url()))
        .header("X-Auth-Token", token)
        .header("OpenStack-API-Version", "compute 2.101")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

fn the_event(stack: &Stack, order_id: &str) -> Event {
    let evs: Vec<&Event> = stack.events.values().filter(|e| e.order_id == order_id).collect();
    assert_eq!(evs.len(), 1, "{order_id}: exactly one event: {evs:?}");
    evs[0].clone()
}

/// The provisioner's keypairs in the simulator (name `prov-...`), whoever holds them.
fn prov_keypairs(stack: &Stack) -> Vec<(String, String, String)> {
    stack.sim.control().keypairs().into_iter().filter(|k| k.1.starts_with("prov-")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nova_ssh_public_key_is_imported_booted_with_and_deleted_on_terminate() {
    let mut stack = Stack::new(fast()).await;
    let (token, run) = run_app(&stack).await;
    let (key, blob) = ed25519_key(1, "alice@laptop");
    stack.env.publish(&order_with("kp-1", serde_json::json!({"ssh_public_key": key}))).await;
    stack.wait_events(1, Duration::from_secs(60)).await;
    let e = the_event(&stack, "kp-1");
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let name = format!("prov-{}", e.job_id);
    // As `openstack keypair show` and `openstack server show` see it.
    let (status, kp) = nova_get(&stack, &format!("/os-keypairs/{name}")).await;
    assert_eq!(status, 200, "{kp}");
    assert_eq!(kp["keypair"]["type"], "ssh");
    assert_eq!(kp["keypair"]["fingerprint"], md5_fingerprint(&blob).as_str());
    assert_eq!(kp["keypair"]["public_key"], key.as_str());
    let server = e.server.as_ref().unwrap().id.clone();
    let (_, s) = nova_get(&stack, &format!("/servers/{server}")).await;
    assert_eq!(s["server"]["key_name"], name.as_str(), "{s}");
    assert_eq!(prov_keypairs(&stack).len(), 1);

    stack.env.publish_keyed([action("kp-1-T", "terminate", "kp-1")]).await;
    stack.wait_events(2, Duration::from_secs(60)).await;
    assert_eq!(the_event(&stack, "kp-1-T").event_type, EventType::Completed);
    let (status, _) = nova_get(&stack, &format!("/os-keypairs/{name}")).await;
    assert_eq!(status, 404, "the keypair outlived its service");
    assert!(prov_keypairs(&stack).is_empty());
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nova_keypair_is_deleted_on_rollback_and_unknown_key_names_fail() {
    let mut stack = Stack::new(fast()).await;
    stack
        .sim
        .control()
        .add_fault(FaultRule {
            service: Some("compute".into()),
            method: Some("POST".into()),
            path: Some("/servers$".into()),
            server_error: Some("No valid host was found.".into()),
            ..Default::default()
        })
        .unwrap();
    let (token, run) = run_app(&stack).await;
    let (key, _) = ed25519_key(2, "bob");
    stack.env.publish(&order_with("kp-rb", serde_json::json!({"ssh_public_key": key}))).await;
    stack.env.publish(&order_with("kp-unknown", serde_json::json!({"key_name": "no-such-key"}))).await;
    stack.wait_events(2, Duration::from_secs(60)).await;
    let e = the_event(&stack, "kp-rb");
    assert_eq!(e.event_type, EventType::Failed, "{e:?}");
    assert!(e.error.as_ref().unwrap().message.contains("No valid host"), "{e:?}");
    wait_until(Duration::from_secs(30), "the rollback deleted the keypair", || async {
        prov_keypairs(&stack).is_empty()
    })
    .await;
    let (status, _) = nova_get(&stack, &format!("/os-keypairs/prov-{}", e.job_id)).await;
    assert_eq!(status, 404, "the rollback left the keypair");
    // Nova's own answer for a key_name the user does not hold.
    let e = the_event(&stack, "kp-unknown");
    assert_eq!(e.event_type, EventType::Failed, "{e:?}");
    assert!(e.error.as_ref().unwrap().message.contains("Invalid key_name provided."), "{e:?}");
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nova_keypair_imported_before_a_sigkill_is_adopted_not_imported_twice() {
    let mut stack = Stack::new(fast()).await;
    let control = stack.sim.control();
    // Nova imports the key, then its answer is held: the worker dies without learning it.
    control
        .add_fault(FaultRule {
            service: Some("compute".into()),
            method: Some("POST".into()),
            path: Some("/os-keypairs$".into()),
            answer_delay_ms: Some(60_000),
            times: Some(1),
            ..Default::default()
        })
        .unwrap();
    // A rule with no effect counts every import request (the counters count answers).
    let imports = FaultRule {
        service: Some("compute".into()),
        method: Some("POST".into()),
        path: Some("/os-keypairs$".into()),
        ..Default::default()
    };
    let counting = control.add_fault(imports).unwrap();
    let mut first = stack.child("kp-k0");
    wait_ready(&first).await;
    let (key, _) = ed25519_key(3, "carol");
    stack.env.publish(&order_with("kp-kill", serde_json::json!({"ssh_public_key": key}))).await;
    wait_until(Duration::from_secs(30), "nova imported the key", || async {
        !prov_keypairs(&stack).is_empty()
    })
    .await;
    first.kill().await;
    let mut second = stack.child("kp-k1");
    stack.wait_events(1, Duration::from_secs(90)).await;
    let e = the_event(&stack, "kp-kill");
    assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    let name = format!("prov-{}", e.job_id);
    assert_eq!(prov_keypairs(&stack).iter().map(|k| k.1.clone()).collect::<Vec<_>>(), vec![name.clone()]);
    let fired = control.faults().into_iter().find(|f| f.id == counting).map(|f| f.fired);
    assert_eq!(fired, Some(1), "imported twice");
    assert!(control.count("GET", "/compute/v2.1/os-keypairs/{name}") >= 1, "not looked up before importing");
    let (_, s) = nova_get(&stack, &format!("/servers/{}", e.server.as_ref().unwrap().id)).await;
    assert_eq!(s["server"]["key_name"], name.as_str());
    wait_services(&stack, &["kp-kill".to_string()], "active", Duration::from_secs(30)).await;
    second.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}
