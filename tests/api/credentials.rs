//! The service user's credentials end to end: orders complete with a `v3token` credential
//! (rescoped to each project), with application credentials (one per project in `clouds.yaml`
//! entries named `<cloud>/<project id>`, made through the simulator's Keystone API), and with
//! an admin password credential next to a per-project application credential. A project whose
//! only credential is bound elsewhere fails as `auth`, naming the entry that would fix it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use openstack_provisioner::messages::{ErrorClass, Event, EventType};
use openstack_provisioner::openstack::config::{CloudConfig, Credential};
use openstack_provisioner::sim::{ACME_PROJECT_ID, DEMO_PROJECT_ID, SERVICE_PROJECT_ID};
use openstack_provisioner::startup::App;

use crate::engine::stack::{Stack, fast, order};

const PROVISIONER_USER: &str = "c5d3e2f1a0b94c8d7e6f5a4b3c2d1e0f";

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// A token of `provisioner` (password), scoped to `project`.
async fn password_token(stack: &Stack, project: &str) -> String {
    let body = serde_json::json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": "provisioner", "domain": {"name": "Default"}, "password": "provisioner"}}},
        "scope": {"project": {"id": project}}}});
    let resp = http()
        .post(format!("{}/v3/auth/tokens", stack.sim.auth_url()))
        .json(&body)
        .send()
        .await
        .expect("keystone answers");
    assert_eq!(resp.status(), 201);
    resp.headers()["x-subject-token"].to_str().unwrap().to_string()
}

/// An application credential of `provisioner` in `project`: (id, secret).
async fn app_credential(stack: &Stack, project: &str, name: &str) -> (String, String) {
    let token = password_token(stack, project).await;
    let resp = http()
        .post(format!("{}/v3/users/{PROVISIONER_USER}/application_credentials", stack.sim.auth_url()))
        .header("x-auth-token", token)
        .json(&serde_json::json!({"application_credential": {"name": name, "description": "provisioner"}}))
        .send()
        .await
        .expect("keystone answers");
    assert_eq!(resp.status(), 201);
    let body: serde_json::Value = resp.json().await.unwrap();
    let c = &body["application_credential"];
    assert_eq!(c["project_id"], project, "bound to the token's project: {body}");
    (c["id"].as_str().unwrap().to_string(), c["secret"].as_str().unwrap().to_string())
}

fn temp_clouds_yaml(text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("prov-creds-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("clouds.yaml");
    std::fs::write(&file, text).unwrap();
    file
}

fn config(vars: &[(&str, String)]) -> CloudConfig {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain([("HOME".into(), "/nonexistent".into())])
        .collect();
    CloudConfig::from_vars(&vars).expect("cloud config").expect("a cloud")
}

async fn run_with(
    stack: &Stack,
    cloud: CloudConfig,
) -> (tokio_util::sync::CancellationToken, tokio::task::JoinHandle<()>) {
    let app = App::build_with_cloud(stack.env.settings.clone(), Some(cloud)).await.expect("build the app");
    let token = app.shutdown_token();
    let handle =
        tokio::spawn(async move { app.run_until_stopped().await.expect("the worker stops cleanly") });
    (token, handle)
}

fn event<'a>(stack: &'a Stack, order_id: &str) -> &'a Event {
    stack
        .events
        .values()
        .find(|e| e.order_id == order_id)
        .unwrap_or_else(|| panic!("no event for {order_id}"))
}

fn servers_in(stack: &Stack, project: &str) -> usize {
    stack.sim.control().resources().projects.get(project).map(|p| p.servers.values().sum()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_credential_is_rescoped_to_every_project() {
    let mut stack = Stack::new(fast()).await;
    let token = password_token(&stack, SERVICE_PROJECT_ID).await;
    let cloud = config(&[
        ("OS_AUTH_URL", stack.sim.auth_url()),
        ("OS_AUTH_TYPE", "v3token".into()),
        ("OS_TOKEN", token.clone()),
        ("OS_PROJECT_ID", SERVICE_PROJECT_ID.into()),
        ("OS_REGION_NAME", "RegionOne".into()),
    ]);
    assert!(matches!(cloud.credential, Credential::Token { .. }));
    assert!(!format!("{cloud:?}").contains(&token), "the token shows in the configuration's Debug");
    let (stop, run) = run_with(&stack, cloud).await;
    stack.env.publish(&order("tok-demo", DEMO_PROJECT_ID, true)).await;
    stack.env.publish(&order("tok-acme", ACME_PROJECT_ID, false)).await;
    stack.wait_events(2, Duration::from_secs(60)).await;
    for id in ["tok-demo", "tok-acme"] {
        let e = event(&stack, id);
        assert_eq!(e.event_type, EventType::Completed, "{e:?}");
    }
    assert_eq!((servers_in(&stack, DEMO_PROJECT_ID), servers_in(&stack, ACME_PROJECT_ID)), (1, 1));
    stop.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_credentials_one_per_project_from_clouds_yaml() {
    let mut stack = Stack::new(fast()).await;
    let (demo_id, demo_secret) = app_credential(&stack, DEMO_PROJECT_ID, "prov-demo").await;
    let (_, acme_secret) = app_credential(&stack, ACME_PROJECT_ID, "prov-acme").await;
    // The main entry: demo's credential by id; acme's by name and user, secret in secure.yaml.
    let file = temp_clouds_yaml(&format!(
        r#"
clouds:
  prov:
    auth_type: v3applicationcredential
    auth:
      auth_url: {url}
      application_credential_id: {demo_id}
      application_credential_secret: {demo_secret}
    region_name: RegionOne
  prov/{ACME_PROJECT_ID}:
    auth_type: v3applicationcredential
    auth:
      auth_url: {url}
      application_credential_name: prov-acme
      username: provisioner
      user_domain_name: Default
"#,
        url = stack.sim.auth_url()
    ));
    std::fs::write(
        file.with_file_name("secure.yaml"),
        format!("clouds:\n  prov/{ACME_PROJECT_ID}:\n    auth:\n      application_credential_secret: {acme_secret}\n"),
    )
    .unwrap();
    let cloud = config(&[("OS_CLOUD", "prov".into()), ("OS_CLIENT_CONFIG_FILE", file.display().to_string())]);
    assert!(matches!(cloud.credential, Credential::ApplicationCredential { .. }));
    assert!(cloud.project_credentials.contains_key(ACME_PROJECT_ID));
    let shown = format!("{cloud:?}");
    assert!(!shown.contains(&demo_secret) && !shown.contains(&acme_secret), "a secret in {shown}");

    let (stop, run) = run_with(&stack, cloud).await;
    stack.env.publish(&order("ac-demo", DEMO_PROJECT_ID, true)).await;
    stack.env.publish(&order("ac-acme", ACME_PROJECT_ID, false)).await;
    // The service project has no credential of its own, and demo's cannot be rescoped there.
    stack.env.publish(&order("ac-service", SERVICE_PROJECT_ID, false)).await;
    stack.wait_events(3, Duration::from_secs(60)).await;
    assert_eq!(event(&stack, "ac-demo").event_type, EventType::Completed, "{:?}", event(&stack, "ac-demo"));
    assert_eq!(event(&stack, "ac-acme").event_type, EventType::Completed, "{:?}", event(&stack, "ac-acme"));
    let failed = event(&stack, "ac-service");
    assert_eq!(failed.event_type, EventType::Failed);
    let error = failed.error.as_ref().expect("why");
    assert_eq!(error.class, ErrorClass::Auth, "{error:?}");
    assert!(
        error.message.contains(&format!("prov/{SERVICE_PROJECT_ID}"))
            && error.message.contains(DEMO_PROJECT_ID),
        "the message names the entry to add and the credential's project: {}",
        error.message
    );
    assert_eq!(servers_in(&stack, SERVICE_PROJECT_ID), 0);
    stop.cancel();
    run.await.unwrap();
    std::fs::remove_dir_all(file.parent().unwrap()).ok();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_password_serves_every_project_but_one_with_its_own_credential() {
    let mut stack = Stack::new(fast()).await;
    let (acme_id, acme_secret) = app_credential(&stack, ACME_PROJECT_ID, "prov-acme").await;
    let file = temp_clouds_yaml(&format!(
        r#"
clouds:
  prov:
    auth:
      auth_url: {url}
      username: provisioner
      password: provisioner
      user_domain_name: Default
      project_name: service
      project_domain_name: Default
    regions: [RegionOne]
  prov/{ACME_PROJECT_ID}:
    auth:
      application_credential_id: {acme_id}
      application_credential_secret: {acme_secret}
"#,
        url = stack.sim.auth_url()
    ));
    let cloud = config(&[("OS_CLOUD", "prov".into()), ("OS_CLIENT_CONFIG_FILE", file.display().to_string())]);
    assert!(matches!(cloud.credential, Credential::Password { .. }));
    let (stop, run) = run_with(&stack, cloud).await;
    stack.env.publish(&order("pw-demo", DEMO_PROJECT_ID, false)).await;
    stack.env.publish(&order("pw-acme", ACME_PROJECT_ID, false)).await;
    stack.wait_events(2, Duration::from_secs(60)).await;
    assert_eq!(event(&stack, "pw-demo").event_type, EventType::Completed);
    assert_eq!(event(&stack, "pw-acme").event_type, EventType::Completed);

    // acme is served by its own credential, not the password: once that credential is deleted
    // (Keystone revokes its tokens), acme's orders fail as `auth` while demo's still complete.
    let token = password_token(&stack, ACME_PROJECT_ID).await;
    let deleted = http()
        .delete(format!(
            "{}/v3/users/{PROVISIONER_USER}/application_credentials/{acme_id}",
            stack.sim.auth_url()
        ))
        .header("x-auth-token", token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    // Another flavor: not in the name cache, so the first call after the deletion is resolve's.
    let mut second: serde_json::Value =
        serde_json::from_slice(&order("pw-acme-2", ACME_PROJECT_ID, false)).unwrap();
    second["server"]["flavor"] = "m1.small".into();
    stack.env.publish(second.to_string().as_bytes()).await;
    stack.env.publish(&order("pw-demo-2", DEMO_PROJECT_ID, false)).await;
    stack.wait_events(4, Duration::from_secs(60)).await;
    assert_eq!(event(&stack, "pw-demo-2").event_type, EventType::Completed);
    let failed = event(&stack, "pw-acme-2");
    assert_eq!(failed.event_type, EventType::Failed, "{failed:?}");
    assert_eq!(failed.error.as_ref().map(|e| e.class), Some(ErrorClass::Auth), "{failed:?}");
    assert_eq!(failed.error.as_ref().map(|e| e.step.as_str()), Some("resolve"), "{failed:?}");
    assert_eq!(servers_in(&stack, ACME_PROJECT_ID), 1);
    stop.cancel();
    run.await.unwrap();
    std::fs::remove_dir_all(file.parent().unwrap()).ok();
    stack.cleanup().await;
}
