//! Tests: acceptance 1 of the simulator with the real OpenStack CLI (python-openstackclient).
//!
//! The CLI lives in a virtualenv: `$OPENSTACK_CLI`, else `$CARGO_TARGET_DIR/openstack-venv`,
//! else `<repo>/target/openstack-venv` (where `.ci/run` creates it). Without it this test fails
//! and says how to install it: it must not pass silently where the CLI was meant to run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use openstack_provisioner::sim::{DEMO_PROJECT_ID, SimConfig, SimHandle, Simulator, Timings};
use serde_json::Value;

fn openstack_cli() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("OPENSTACK_CLI") {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(t) = std::env::var("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(t).join("openstack-venv/bin/openstack"));
    }
    candidates.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/openstack-venv/bin/openstack"));
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "python-openstackclient not found (looked at {candidates:?}). Install it with:\n  \
             python3 -m venv target/openstack-venv && target/openstack-venv/bin/pip install python-openstackclient\n\
             (or set OPENSTACK_CLI to an `openstack` executable)"
        )
    })
}

/// `server create` of a m1.tiny cirros server on `private` named `name`, with `extra` options.
fn server_create<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args =
        vec!["server", "create", "--flavor", "m1.tiny", "--image", "cirros-0.6.2", "--network", "private"];
    args.extend_from_slice(extra);
    args.push(name);
    args
}

struct Cli {
    bin: PathBuf,
    auth_url: String,
}

impl Cli {
    /// Runs `openstack <args>` as `user` (whose password is its name) in `project`; panics with
    /// its output if it fails.
    async fn run(&self, user: &str, project: &str, args: &[&str]) -> String {
        self.run_as(user, user, project, args).await
    }

    async fn run_as(&self, user: &str, password: &str, project: &str, args: &[&str]) -> String {
        let mut cmd = tokio::process::Command::new(&self.bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("OS_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(args)
            .env("OS_AUTH_URL", &self.auth_url)
            .env("OS_IDENTITY_API_VERSION", "3")
            .env("OS_USERNAME", user)
            .env("OS_PASSWORD", password)
            .env("OS_PROJECT_NAME", project)
            .env("OS_USER_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_DOMAIN_NAME", "Default")
            .env("OS_REGION_NAME", "RegionOne")
            .env("OS_INTERFACE", "public")
            .env("PYTHONWARNINGS", "ignore")
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("openstack {args:?} timed out"))
            .expect("run openstack");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "openstack {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs `openstack <args>` with only `env` (and the auth URL) as its `OS_*` settings.
    async fn run_env(&self, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
        let mut cmd = tokio::process::Command::new(&self.bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("OS_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(args)
            .env("OS_AUTH_URL", &self.auth_url)
            .env("OS_IDENTITY_API_VERSION", "3")
            .env("OS_INTERFACE", "public")
            .env("PYTHONWARNINGS", "ignore")
            .envs(env.iter().copied())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("openstack {args:?} timed out"))
            .expect("run openstack")
    }

    /// [`Cli::run_env`] that must succeed, its stdout as JSON.
    async fn json_env(&self, env: &[(&str, &str)], args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-f", "json"]);
        let out = self.run_env(env, &a).await;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "openstack {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("openstack {args:?}: not JSON ({e}): {stdout}"))
    }

    async fn json(&self, user: &str, project: &str, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-f", "json"]);
        let out = self.run(user, project, &a).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("openstack {args:?}: not JSON ({e}): {out}"))
    }

    async fn demo(&self, args: &[&str]) -> Value {
        self.json("provisioner", "demo", args).await
    }
}

/// Waits (through the API, cheaper than the CLI) until the resource at `path` satisfies `done`.
async fn api_reaches(sim: &SimHandle, token: &str, path: &str, what: &str, done: impl Fn(&Value) -> bool) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = http
            .get(format!("{}{path}", sim.url()))
            .header("X-Auth-Token", token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&v) {
            return;
        }
        assert!(Instant::now() < deadline, "{path} never reached {what}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a volume has `status`.
async fn volume_reaches(sim: &SimHandle, token: &str, id: &str, status: &str) {
    api_reaches(sim, token, &format!("/volume/v3/volumes/{id}"), status, |v| v["volume"]["status"] == status)
        .await
}

/// Waits until a server has `status` and no task.
async fn server_reaches(sim: &SimHandle, token: &str, id: &str, status: &str) {
    api_reaches(sim, token, &format!("/compute/v2.1/servers/{id}"), status, |v| {
        v["server"]["status"] == status && v["server"]["OS-EXT-STS:task_state"].is_null()
    })
    .await
}

#[tokio::test]
async fn sim_cli_python_openstackclient_runs_the_acceptance_sequence() {
    let bin = openstack_cli();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let timings = Timings {
        boot_mean_ms: 1000,
        boot_jitter_ms: 200,
        volume_create_ms: 500,
        attach_ms: 600,
        detach_ms: 300,
        action_ms: 300,
        delete_ms: 300,
        token_lifetime_s: 3600,
    };
    let sim = Simulator::start(SimConfig { timings, ..SimConfig::default() }).await.unwrap();
    let cli = Cli { bin, auth_url: sim.auth_url() };
    let token = sim.control().issue_token("provisioner", "provisioner", "demo").unwrap();

    let t = cli.demo(&["token", "issue"]).await;
    assert_eq!(t["project_id"], DEMO_PROJECT_ID);
    assert!(t["id"].as_str().is_some_and(|s| !s.is_empty()));
    let catalog = cli.demo(&["catalog", "list"]).await;
    let types: Vec<&str> = catalog.as_array().unwrap().iter().filter_map(|e| e["Type"].as_str()).collect();
    for kind in ["identity", "compute", "image", "network", "volumev3"] {
        assert!(types.contains(&kind), "{kind} in {types:?}");
    }
    let images = cli.demo(&["image", "list"]).await;
    assert!(
        images.as_array().unwrap().iter().any(|i| i["Name"] == "cirros-0.6.2" && i["Status"] == "active")
    );
    let flavors = cli.demo(&["flavor", "list"]).await;
    assert!(flavors.as_array().unwrap().iter().any(|f| f["Name"] == "m1.tiny"));
    let networks = cli.demo(&["network", "list"]).await;
    assert!(networks.as_array().unwrap().iter().any(|n| n["Name"] == "private"));

    let port = cli.demo(&["port", "create", "--network", "private", "p1"]).await;
    assert_eq!(port["status"], "DOWN");
    let port_id = port["id"].as_str().unwrap().to_string();
    let nic = format!("port-id={port_id}");
    let server = cli
        .demo(&[
            "server",
            "create",
            "--flavor",
            "m1.tiny",
            "--image",
            "cirros-0.6.2",
            "--nic",
            &nic,
            "--wait",
            "vm1",
        ])
        .await;
    assert_eq!(server["status"], "ACTIVE");
    let server_id = server["id"].as_str().unwrap().to_string();
    assert!(server["addresses"].to_string().contains("10.0."), "{}", server["addresses"]);
    let port = cli.demo(&["port", "show", "p1"]).await;
    assert_eq!(port["status"], "ACTIVE");

    // Security groups: the project's `default` (Neutron makes it on first need, and a port
    // created without groups gets it), one created, on a port of its own.
    let web = cli.demo(&["security", "group", "create", "--description", "web servers", "web"]).await;
    let web_id = web["id"].as_str().unwrap().to_string();
    let groups = cli.demo(&["security", "group", "list"]).await;
    let named = |name: &str| -> Vec<String> {
        groups
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["Name"] == name)
            .map(|g| g["ID"].as_str().unwrap().to_string())
            .collect()
    };
    let default_id = named("default");
    assert_eq!((default_id.len(), named("web")), (1, vec![web_id.clone()]), "{groups}");
    assert_eq!(port["security_group_ids"], serde_json::json!(default_id), "{port}");
    cli.demo(&["port", "create", "--network", "private", "--security-group", "web", "p2"]).await;
    let p2 = cli.demo(&["port", "show", "p2"]).await;
    assert_eq!(p2["security_group_ids"], serde_json::json!([web_id]), "{p2}");
    cli.run("provisioner", "demo", &["port", "delete", "p2"]).await;
    cli.run("provisioner", "demo", &["security", "group", "delete", "web"]).await;

    // A floating IP of the external network on vm1's port: Nova shows it among the addresses.
    let fip = cli.demo(&["floating", "ip", "create", "--port", "p1", "public"]).await;
    let address = fip["floating_ip_address"].as_str().unwrap().to_string();
    assert!(address.starts_with("203.0.113."), "{fip}");
    assert_eq!(
        (fip["port_id"].as_str(), fip["status"].as_str()),
        (Some(port_id.as_str()), Some("ACTIVE")),
        "{fip}"
    );
    let listed = cli.demo(&["floating", "ip", "list"]).await;
    let row =
        listed.as_array().unwrap().iter().find(|f| f["Floating IP Address"] == address.as_str()).cloned();
    let row = row.unwrap_or_else(|| panic!("{address} not in {listed}"));
    assert_eq!(row["Port"], port_id.as_str(), "{row}");
    let shown = cli.demo(&["server", "show", "vm1"]).await;
    assert!(shown["addresses"].to_string().contains(&address), "{}", shown["addresses"]);
    cli.run("provisioner", "demo", &["floating", "ip", "delete", &address]).await;
    let listed = cli.demo(&["floating", "ip", "list"]).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(0), "{listed}");

    let volume = cli.demo(&["volume", "create", "--size", "1", "v1"]).await;
    let volume_id = volume["id"].as_str().unwrap().to_string();
    volume_reaches(&sim, &token, &volume_id, "available").await;
    cli.run("provisioner", "demo", &["server", "add", "volume", "vm1", "v1"]).await;
    volume_reaches(&sim, &token, &volume_id, "in-use").await;
    let shown = cli.demo(&["volume", "show", "v1"]).await;
    assert_eq!(shown["status"], "in-use");
    cli.run("provisioner", "demo", &["server", "remove", "volume", "vm1", "v1"]).await;
    volume_reaches(&sim, &token, &volume_id, "available").await;
    // The lifecycle's actions, each there and back.
    for (there, status, back) in [
        ("stop", "SHUTOFF", "start"),
        ("suspend", "SUSPENDED", "resume"),
        ("pause", "PAUSED", "unpause"),
        ("shelve", "SHELVED_OFFLOADED", "unshelve"),
    ] {
        cli.run("provisioner", "demo", &["server", there, "vm1"]).await;
        server_reaches(&sim, &token, &server_id, status).await;
        cli.run("provisioner", "demo", &["server", back, "vm1"]).await;
        server_reaches(&sim, &token, &server_id, "ACTIVE").await;
    }
    cli.run("provisioner", "demo", &["server", "resize", "--flavor", "m1.small", "--wait", "vm1"]).await;
    server_reaches(&sim, &token, &server_id, "VERIFY_RESIZE").await;
    cli.run("provisioner", "demo", &["server", "resize", "confirm", "vm1"]).await;
    server_reaches(&sim, &token, &server_id, "ACTIVE").await;
    let shown = cli.demo(&["server", "show", "vm1"]).await;
    assert!(shown["flavor"].to_string().contains("m1.small"), "{}", shown["flavor"]);
    cli.run("provisioner", "demo", &["server", "delete", "--wait", "vm1"]).await;
    cli.run("provisioner", "demo", &["port", "delete", "p1"]).await;
    cli.run("provisioner", "demo", &["volume", "delete", "v1"]).await;
    let left = sim.control().resources();
    let demo = &left.projects[DEMO_PROJECT_ID];
    assert_eq!((demo.usage.instances, demo.usage.ports, demo.usage.volumes), (0, 0, 0));

    // Quotas through the services' own quota APIs.
    let quota = cli.demo(&["quota", "show"]).await;
    let text = quota.to_string();
    assert!(text.contains("10000"), "demo's quotas: {text}");
    cli.run(
        "admin",
        "admin",
        &["quota", "set", "--instances", "7", "--ports", "70", "--volumes", "9", "demo"],
    )
    .await;
    let q = &sim.control().quotas()["demo"];
    assert_eq!((q.instances, q.ports, q.volumes), (7, 70, 9));
    let shown = cli.json("admin", "admin", &["quota", "show", "demo"]).await.to_string();
    assert!(shown.contains('7') && shown.contains("70"), "{shown}");

    let errors: Vec<_> = sim.control().counters().into_iter().filter(|c| c.status >= 500).collect();
    assert!(errors.is_empty(), "server errors: {errors:?}");
    sim.shutdown().await;
}

/// Tenant onboarding and closing with the real CLI, as the service user (admin on its own
/// project `service`): project with tags, user with a password and default project, role,
/// quotas on the three services, a token as the new user, disable, delete.
#[tokio::test]
async fn sim_cli_python_openstackclient_onboards_and_closes_a_tenant() {
    let bin = openstack_cli();
    let sim = Simulator::start(SimConfig::for_tests()).await.unwrap();
    let cli = Cli { bin, auth_url: sim.auth_url() };
    let admin = |args: &'static [&'static str]| cli.run("provisioner", "service", args);

    let p = cli
        .json(
            "provisioner",
            "service",
            &[
                "project",
                "create",
                "--domain",
                "Default",
                "--tag",
                "tenant:CUST-9",
                "--tag",
                "provisioner",
                "--description",
                "Customer 9",
                "cust-9",
            ],
        )
        .await;
    let pid = p["id"].as_str().unwrap().to_string();
    let mut tags: Vec<&str> = p["tags"].as_array().unwrap().iter().filter_map(|t| t.as_str()).collect();
    tags.sort();
    assert_eq!(tags, ["provisioner", "tenant:CUST-9"], "{p}");
    assert_eq!(p["domain_id"], "default");
    let u = cli
        .json(
            "provisioner",
            "service",
            &[
                "user",
                "create",
                "--domain",
                "Default",
                "--project",
                "cust-9",
                "--password",
                "pw-Cust9!",
                "--email",
                "ops@cust9.example",
                "cust-9-admin",
            ],
        )
        .await;
    assert_eq!(
        (u["default_project_id"].as_str(), u["email"].as_str()),
        (Some(pid.as_str()), Some("ops@cust9.example"))
    );
    assert!(!u.to_string().contains("pw-Cust9!"), "{u}");
    admin(&["role", "add", "--project", "cust-9", "--user", "cust-9-admin", "member"]).await;
    admin(&[
        "quota",
        "set",
        "--instances",
        "2",
        "--cores",
        "4",
        "--ram",
        "2048",
        "--volumes",
        "1",
        "--gigabytes",
        "5",
        "--ports",
        "3",
        "cust-9",
    ])
    .await;
    let q = &sim.control().quotas()["cust-9"];
    assert_eq!((q.instances, q.cores, q.ram, q.volumes, q.gigabytes, q.ports), (2, 4, 2048, 1, 5, 3));

    // The new user's own login.
    let out = cli.run_as("cust-9-admin", "pw-Cust9!", "cust-9", &["token", "issue", "-f", "json"]).await;
    let t: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((t["project_id"].as_str(), t["user_id"].as_str()), (Some(pid.as_str()), u["id"].as_str()));

    admin(&["project", "set", "--disable", "cust-9"]).await;
    let ids = sim.control().identity();
    assert!(ids.projects.iter().any(|p| p.id == pid && !p.enabled), "disabled");
    admin(&["project", "delete", "cust-9"]).await;
    let ids = sim.control().identity();
    assert!(!ids.projects.iter().any(|p| p.id == pid), "deleted");
    assert!(!ids.assignments.iter().any(|a| a.project_id == pid), "its assignments went with it");
    let errors: Vec<_> = sim.control().counters().into_iter().filter(|c| c.status >= 500).collect();
    assert!(errors.is_empty(), "server errors: {errors:?}");
    sim.shutdown().await;
}

impl Cli {
    /// Runs `openstack <args>` as the service user in `demo`, expecting it to fail: its stderr.
    async fn demo_fails(&self, args: &[&str]) -> String {
        let mut cmd = tokio::process::Command::new(&self.bin);
        for (k, _) in std::env::vars() {
            if k.starts_with("OS_") {
                cmd.env_remove(k);
            }
        }
        cmd.args(args)
            .env("OS_AUTH_URL", &self.auth_url)
            .env("OS_IDENTITY_API_VERSION", "3")
            .env("OS_USERNAME", "provisioner")
            .env("OS_PASSWORD", "provisioner")
            .env("OS_PROJECT_NAME", "demo")
            .env("OS_USER_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_DOMAIN_NAME", "Default")
            .env("OS_REGION_NAME", "RegionOne")
            .env("PYTHONWARNINGS", "ignore")
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
            .await
            .unwrap_or_else(|_| panic!("openstack {args:?} timed out"))
            .expect("run openstack");
        assert!(
            !out.status.success(),
            "openstack {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

/// Issue 15 with the real CLI: keypairs imported from a public key file, used by a server and
/// deleted (an unknown key name refused as Nova does).
#[tokio::test]
async fn sim_cli_python_openstackclient_keypairs() {
    use base64::Engine as _;
    let bin = openstack_cli();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(SimConfig::for_tests()).await.unwrap();
    let cli = Cli { bin, auth_url: sim.auth_url() };

    let mut blob = Vec::new();
    blob.extend_from_slice(&11u32.to_be_bytes());
    blob.extend_from_slice(b"ssh-ed25519");
    blob.extend_from_slice(&32u32.to_be_bytes());
    blob.extend((0..32u8).map(|i| i.wrapping_mul(13)));
    let line = format!("ssh-ed25519 {} cli@test", base64::engine::general_purpose::STANDARD.encode(&blob));
    let dir = std::env::temp_dir().join(format!("cli-kp-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("id_ed25519.pub");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let fingerprint = {
        use md5::Digest as _;
        md5::Md5::digest(&blob).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
    };

    let kp = cli.demo(&["keypair", "create", "--public-key", file.to_str().unwrap(), "kp1"]).await;
    assert_eq!(kp["name"], "kp1", "{kp}");
    assert_eq!(kp["fingerprint"], fingerprint.as_str(), "{kp}");
    let list = cli.demo(&["keypair", "list"]).await;
    let names: Vec<&str> = list.as_array().unwrap().iter().filter_map(|k| k["Name"].as_str()).collect();
    assert!(names.contains(&"kp1") && names.contains(&"ops-key"), "{list}");
    let shown = cli.demo(&["keypair", "show", "kp1"]).await;
    assert_eq!(shown["fingerprint"], fingerprint.as_str(), "{shown}");
    let again = cli.demo_fails(&["keypair", "create", "--public-key", file.to_str().unwrap(), "kp1"]).await;
    assert!(again.contains("already exists"), "{again}");

    let server = cli.demo(&server_create("vm-kp", &["--key-name", "kp1", "--wait"])).await;
    assert_eq!(server["key_name"], "kp1", "{server}");
    let refused = cli.demo_fails(&server_create("vm-nokey", &["--key-name", "no-such-key"])).await;
    assert!(refused.contains("Invalid key_name provided."), "{refused}");
    cli.run("provisioner", "demo", &["server", "delete", "--wait", "vm-kp"]).await;
    cli.run("provisioner", "demo", &["keypair", "delete", "kp1"]).await;
    let list = cli.demo(&["keypair", "list"]).await;
    assert!(!list.to_string().contains("kp1"), "{list}");
    let _ = std::fs::remove_dir_all(&dir);
    let errors: Vec<_> = sim.control().counters().into_iter().filter(|c| c.status >= 500).collect();
    assert!(errors.is_empty(), "server errors: {errors:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn sim_cli_python_openstackclient_authenticates_with_application_credentials_and_tokens() {
    let bin = openstack_cli();
    let sim = Simulator::start(SimConfig::for_tests()).await.unwrap();
    let cli = Cli { bin, auth_url: sim.auth_url() };
    let created =
        cli.demo(&["application", "credential", "create", "prov-cli", "--description", "the CLI test"]).await;
    let (id, secret) =
        (created["ID"].as_str().unwrap().to_string(), created["Secret"].as_str().unwrap().to_string());
    assert_eq!(created["Project ID"], DEMO_PROJECT_ID, "{created}");
    let listed = cli.demo(&["application", "credential", "list"]).await;
    assert!(listed.as_array().unwrap().iter().any(|c| c["ID"] == id.as_str()), "{listed}");

    // By id, as an OS_* environment: the token is the credential's project's.
    let by_id = [
        ("OS_AUTH_TYPE", "v3applicationcredential"),
        ("OS_APPLICATION_CREDENTIAL_ID", id.as_str()),
        ("OS_APPLICATION_CREDENTIAL_SECRET", secret.as_str()),
        ("OS_REGION_NAME", "RegionOne"),
    ];
    let token = cli.json_env(&by_id, &["token", "issue"]).await;
    assert_eq!(token["project_id"], DEMO_PROJECT_ID, "{token}");
    let networks = cli.json_env(&by_id, &["network", "list"]).await;
    assert!(networks.as_array().unwrap().iter().any(|n| n["Name"] == "private"), "{networks}");
    // By name and user.
    let by_name = [
        ("OS_AUTH_TYPE", "v3applicationcredential"),
        ("OS_APPLICATION_CREDENTIAL_NAME", "prov-cli"),
        ("OS_APPLICATION_CREDENTIAL_SECRET", secret.as_str()),
        ("OS_USERNAME", "provisioner"),
        ("OS_USER_DOMAIN_NAME", "Default"),
        ("OS_REGION_NAME", "RegionOne"),
    ];
    let token = cli.json_env(&by_name, &["token", "issue"]).await;
    assert_eq!(token["project_id"], DEMO_PROJECT_ID, "{token}");
    // Keystone's answer to a scope next to an application credential.
    let mut scoped = by_id.to_vec();
    scoped.push(("OS_PROJECT_NAME", "demo"));
    scoped.push(("OS_PROJECT_DOMAIN_NAME", "Default"));
    let out = cli.run_env(&scoped, &["token", "issue"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("Application credentials cannot request a scope"),
        "{stderr}"
    );
    let wrong = [
        ("OS_AUTH_TYPE", "v3applicationcredential"),
        ("OS_APPLICATION_CREDENTIAL_ID", id.as_str()),
        ("OS_APPLICATION_CREDENTIAL_SECRET", "not-the-secret"),
    ];
    let out = cli.run_env(&wrong, &["token", "issue"]).await;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("401"));

    // v3token: a token exchanged for one scoped to another project of the same user.
    let unscoped = cli.json_env(&by_id, &["token", "issue"]).await;
    let app_token = unscoped["id"].as_str().unwrap().to_string();
    let password_token =
        cli.json("provisioner", "demo", &["token", "issue"]).await["id"].as_str().unwrap().to_string();
    let rescoped = [
        ("OS_AUTH_TYPE", "v3token"),
        ("OS_TOKEN", password_token.as_str()),
        ("OS_PROJECT_NAME", "acme"),
        ("OS_PROJECT_DOMAIN_NAME", "Default"),
        ("OS_REGION_NAME", "RegionOne"),
    ];
    let token = cli.json_env(&rescoped, &["token", "issue"]).await;
    assert_eq!(token["project_id"], openstack_provisioner::sim::ACME_PROJECT_ID, "{token}");
    // ...but not a token from an application credential: it stays in its project.
    let mut stuck = rescoped.to_vec();
    stuck[1] = ("OS_TOKEN", app_token.as_str());
    let out = cli.run_env(&stuck, &["token", "issue"]).await;
    assert!(!out.status.success(), "an application credential's token was rescoped");

    cli.run("provisioner", "demo", &["application", "credential", "delete", "prov-cli"]).await;
    let out = cli.run_env(&by_id, &["token", "issue"]).await;
    assert!(!out.status.success(), "a deleted application credential still authenticates");
    sim.shutdown().await;
}

/// Issue 15 with the real CLI: the simulator's second region. `region list` shows both; a
/// server made with `--os-region-name RegionTwo` is listed there and not in RegionOne; RegionTwo
/// has its own networks (same names, other ids).
#[tokio::test]
async fn sim_cli_python_openstackclient_regions() {
    let bin = openstack_cli();
    let sim = Simulator::start(SimConfig::for_tests()).await.unwrap();
    let cli = Cli { bin, auth_url: sim.auth_url() };
    // No OS_REGION_NAME: the SDK refuses a --os-region-name outside the one configured.
    let demo = [
        ("OS_USERNAME", "provisioner"),
        ("OS_PASSWORD", "provisioner"),
        ("OS_PROJECT_NAME", "demo"),
        ("OS_USER_DOMAIN_NAME", "Default"),
        ("OS_PROJECT_DOMAIN_NAME", "Default"),
    ];
    let in_region = |region: &'static str, args: &[&'static str]| -> Vec<&'static str> {
        let mut a = vec!["--os-region-name", region];
        a.extend_from_slice(args);
        a
    };

    let regions = cli.json_env(&demo, &["region", "list"]).await;
    let ids: Vec<&str> = regions.as_array().unwrap().iter().filter_map(|r| r["Region"].as_str()).collect();
    assert_eq!(ids, vec!["RegionOne", "RegionTwo"], "{regions}");

    let nets_one = cli.json_env(&demo, &in_region("RegionOne", &["network", "list"])).await;
    let nets_two = cli.json_env(&demo, &in_region("RegionTwo", &["network", "list"])).await;
    let id_of = |list: &Value, name: &str| -> String {
        list.as_array()
            .unwrap()
            .iter()
            .find(|n| n["Name"] == name)
            .map(|n| n["ID"].to_string())
            .unwrap_or_default()
    };
    assert!(!id_of(&nets_two, "private").is_empty(), "RegionTwo has a private network: {nets_two}");
    assert_ne!(
        id_of(&nets_one, "private"),
        id_of(&nets_two, "private"),
        "each region's Neutron has its own ids"
    );

    let create = server_create("vm-two", &["--wait"]);
    let server = cli.json_env(&demo, &in_region("RegionTwo", &create)).await;
    assert_eq!(server["status"], "ACTIVE", "{server}");
    let names = |list: &Value| -> Vec<String> {
        list.as_array().unwrap().iter().filter_map(|s| s["Name"].as_str().map(str::to_string)).collect()
    };
    let listed_two = cli.json_env(&demo, &in_region("RegionTwo", &["server", "list"])).await;
    assert_eq!(names(&listed_two), vec!["vm-two".to_string()], "{listed_two}");
    let listed_one = cli.json_env(&demo, &in_region("RegionOne", &["server", "list"])).await;
    assert!(names(&listed_one).is_empty(), "a RegionTwo server is not in RegionOne: {listed_one}");
    let deleted =
        cli.run_env(&demo, &in_region("RegionTwo", &["server", "delete", "--wait", "vm-two"])).await;
    assert!(deleted.status.success(), "{}", String::from_utf8_lossy(&deleted.stderr));
    let listed_two = cli.json_env(&demo, &in_region("RegionTwo", &["server", "list"])).await;
    assert!(names(&listed_two).is_empty(), "{listed_two}");
    for region in ["RegionOne", "RegionTwo"] {
        let errors: Vec<_> =
            sim.region(region).unwrap().counters().into_iter().filter(|c| c.status >= 500).collect();
        assert!(errors.is_empty(), "server errors in {region}: {errors:?}");
    }
    sim.shutdown().await;
}

/// Issue 15 with the real CLI: availability zones (the CLI asks Nova, Neutron and Cinder; the
/// simulator's Neutron has no `availability_zone` extension, so the CLI lists none of its own,
/// as against such a Neutron), a server group, and a server created in a zone and the group.
#[tokio::test]
async fn sim_cli_python_openstackclient_availability_zones_and_server_groups() {
    let bin = openstack_cli();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(SimConfig::for_tests()).await.unwrap();
    let cli = Cli { bin, auth_url: sim.auth_url() };
    let rows = |v: &Value, cols: &[&str]| -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|r| cols.iter().map(|c| r[*c].as_str().unwrap_or_default().to_string()).collect())
            .collect();
        out.sort();
        out
    };

    // A member's summary: Nova's /detail is admin-only, so the CLI falls back to the summary;
    // Cinder's zone `nova` too; nothing from Neutron.
    let zones = cli.demo(&["availability", "zone", "list"]).await;
    let want = [["az2", "available"], ["nova", "available"], ["nova", "available"]];
    assert_eq!(
        rows(&zones, &["Zone Name", "Zone Status"]),
        want.map(|r| r.map(String::from).to_vec()),
        "{zones}"
    );
    // An admin's long compute listing: hosts and services, the internal zone included.
    let long = cli.json("admin", "admin", &["availability", "zone", "list", "--compute", "--long"]).await;
    let hosts = rows(&long, &["Zone Name", "Host Name", "Service Name"]);
    let expect = [
        ["az2", "sim-compute-2", "nova-compute"],
        ["internal", "sim-controller", "nova-conductor"],
        ["internal", "sim-controller", "nova-scheduler"],
        ["nova", "sim-compute-1", "nova-compute"],
    ];
    assert_eq!(hosts, expect.map(|r| r.map(String::from).to_vec()), "{long}");
    assert!(
        long.as_array()
            .unwrap()
            .iter()
            .all(|r| r["Service Status"].as_str().unwrap().starts_with("enabled :-)"))
    );

    let group = cli.demo(&["server", "group", "create", "--policy", "anti-affinity", "grp1"]).await;
    let gid = group["id"].as_str().unwrap().to_string();
    assert_eq!(group["policy"], "anti-affinity", "{group}");
    let list = cli.demo(&["server", "group", "list"]).await;
    assert_eq!(
        rows(&list, &["ID", "Name", "Policy"]),
        vec![vec![gid.clone(), "grp1".into(), "anti-affinity".into()]]
    );
    let shown = cli.demo(&["server", "group", "show", "grp1"]).await;
    assert_eq!(shown["id"], gid.as_str(), "{shown}");

    let hint = format!("group={gid}");
    let server =
        cli.demo(&server_create("vm-az", &["--availability-zone", "az2", "--hint", &hint, "--wait"])).await;
    assert_eq!(server["status"], "ACTIVE", "{server}");
    let sid = server["id"].as_str().unwrap().to_string();
    let shown = cli.demo(&["server", "show", "vm-az"]).await;
    assert_eq!(shown["OS-EXT-AZ:availability_zone"], "az2", "{shown}");
    let group = cli.demo(&["server", "group", "show", "grp1"]).await;
    assert!(group["members"].to_string().contains(&sid), "{group}");
    // A zone that is not available: Nova's 400, through the CLI.
    let err = cli.demo_fails(&server_create("vm-nowhere", &["--availability-zone", "nowhere"])).await;
    assert!(err.contains("The requested availability zone is not available"), "{err}");

    cli.run("provisioner", "demo", &["server", "delete", "--wait", "vm-az"]).await;
    let group = cli.demo(&["server", "group", "show", "grp1"]).await;
    assert!(!group["members"].to_string().contains(&sid), "the deleted server is still a member: {group}");
    cli.run("provisioner", "demo", &["server", "group", "delete", "grp1"]).await;
    let list = cli.demo(&["server", "group", "list"]).await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let errors: Vec<_> = sim.control().counters().into_iter().filter(|c| c.status >= 500).collect();
    assert!(errors.is_empty(), "server errors: {errors:?}");
    sim.shutdown().await;
}

/// Issue 15 with the real CLI: `server create --boot-from-volume` (a volume Nova makes from the
/// image, the server's root disk), shown as a volume-backed server, the volume in-use on it, and
/// kept available by `server delete` (the CLI maps the volume without delete_on_termination,
/// which Nova takes as false).
#[tokio::test]
async fn sim_cli_python_openstackclient_boots_from_volume() {
    let bin = openstack_cli();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(SimConfig::for_tests()).await.unwrap();
    let cli = Cli { bin, auth_url: sim.auth_url() };
    let token = sim.control().issue_token("provisioner", "provisioner", "demo").unwrap();

    let server = cli.demo(&server_create("vm-bfv", &["--boot-from-volume", "1", "--wait"])).await;
    assert_eq!(server["status"], "ACTIVE", "{server}");
    let shown = cli.demo(&["server", "show", "vm-bfv"]).await;
    assert_eq!(shown["image"], "N/A (booted from volume)", "{shown}");
    let volumes = cli.demo(&["volume", "list", "--long"]).await;
    let rows = volumes.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{volumes}");
    let volume_id = rows[0]["ID"].as_str().unwrap().to_string();
    assert_eq!(
        (rows[0]["Status"].as_str(), rows[0]["Size"].as_u64()),
        (Some("in-use"), Some(1)),
        "{volumes}"
    );
    // Cinder answers "bootable": "true" (a string); newer CLIs print it as a boolean.
    assert!(rows[0]["Bootable"] == true || rows[0]["Bootable"] == "true", "{volumes}");
    assert!(rows[0]["Attached to"].to_string().contains("/dev/vda"), "{volumes}");
    assert!(shown["volumes_attached"].to_string().contains(&volume_id), "{shown}");
    let volume = cli.demo(&["volume", "show", &volume_id]).await;
    assert!(volume["volume_image_metadata"].to_string().contains("cirros-0.6.2"), "{volume}");

    cli.run("provisioner", "demo", &["server", "delete", "--wait", "vm-bfv"]).await;
    volume_reaches(&sim, &token, &volume_id, "available").await;
    let volumes = cli.demo(&["volume", "list"]).await;
    let rows = volumes.as_array().unwrap();
    assert_eq!(rows.len(), 1, "the boot volume outlives its server: {volumes}");
    assert_eq!(rows[0]["Status"], "available", "{volumes}");
    cli.run("provisioner", "demo", &["volume", "delete", &volume_id]).await;
    let left = sim.control().resources();
    let demo = &left.projects[DEMO_PROJECT_ID];
    assert_eq!((demo.usage.instances, demo.usage.volumes, demo.usage.gigabytes), (0, 0, 0));
    let errors: Vec<_> = sim.control().counters().into_iter().filter(|c| c.status >= 500).collect();
    assert!(errors.is_empty(), "server errors: {errors:?}");
    sim.shutdown().await;
}
