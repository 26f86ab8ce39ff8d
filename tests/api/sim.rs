//! Tests: the OpenStack simulator at the HTTP level, with reqwest, as a client sees it: auth and
//! 401s, each service's quota answer, programmed faults, microversion differences, the
//! asynchronous state changes, Nova's list filters and pagination, and the control API.

use std::time::{Duration, Instant};

use openstack_provisioner::openstack::compute::protocol::{FaultBody, ServerBody, ServerList};
use openstack_provisioner::openstack::identity::protocol::{ErrorBody, TokenResponse};
use openstack_provisioner::openstack::network::protocol::{ErrorBody as NeutronErrorBody, PortBody};
use openstack_provisioner::openstack::volume::protocol::VolumeBody;
use openstack_provisioner::sim::{
    ACME_PROJECT_ID, DEMO_PROJECT_ID, FaultRule, QuotaPatch, SimConfig, SimHandle, Simulator, Timings,
};
use reqwest::{Client, Method, Response, StatusCode};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

struct Env {
    sim: SimHandle,
    http: Client,
}

async fn start(timings: Timings) -> Env {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim =
        Simulator::start(SimConfig { timings, ..SimConfig::default() }).await.expect("simulator starts");
    Env { sim, http: Client::new() }
}

/// Slow enough to observe every transitional state, fast enough for a test.
fn observable() -> Timings {
    Timings {
        boot_mean_ms: 600,
        boot_jitter_ms: 0,
        volume_create_ms: 500,
        attach_ms: 900,
        detach_ms: 500,
        action_ms: 500,
        delete_ms: 500,
        token_lifetime_s: 3600,
    }
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.url())
    }

    async fn token(&self, user: &str, password: &str, project: &str) -> String {
        let r = self
            .http
            .post(self.url("/identity/v3/auth/tokens"))
            .json(&json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"name": "Default"}, "password": password}}},
                "scope": {"project": {"name": project, "domain": {"name": "Default"}}}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        r.headers()["x-subject-token"].to_str().unwrap().to_string()
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        mv: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.http.request(method, self.url(path)).header("X-Auth-Token", token);
        if let Some(mv) = mv {
            let service = if path.starts_with("/volume") { "volume" } else { "compute" };
            req = req.header("OpenStack-API-Version", format!("{service} {mv}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    async fn get(&self, path: &str, token: &str) -> Response {
        self.call(Method::GET, path, token, None, None).await
    }

    async fn port(&self, token: &str, name: &str) -> String {
        let r = self
            .call(
                Method::POST,
                "/networking/v2.0/ports",
                token,
                None,
                Some(json!({"port": {"network_id": network_id(), "name": name}})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        r.json::<PortBody>().await.unwrap().port.id
    }

    async fn server(&self, token: &str, name: &str, extra: Value) -> Response {
        let mut s = json!({"name": name, "imageRef": image_id(), "flavorRef": "1", "networks": "none"});
        if let (Some(m), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                m.insert(k.clone(), v.clone());
            }
        }
        self.call(Method::POST, "/compute/v2.1/servers", token, Some("2.52"), Some(json!({"server": s})))
            .await
    }

    async fn server_id(&self, token: &str, name: &str, extra: Value) -> String {
        let r = self.server(token, name, extra).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
        r.json::<Value>().await.unwrap()["server"]["id"].as_str().unwrap().to_string()
    }

    async fn server_status(&self, token: &str, id: &str) -> String {
        let r =
            self.call(Method::GET, &format!("/compute/v2.1/servers/{id}"), token, Some("2.52"), None).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<ServerBody>().await.unwrap().server.status
    }

    async fn volume(&self, token: &str, name: &str) -> Response {
        self.call(
            Method::POST,
            "/volume/v3/volumes",
            token,
            None,
            Some(json!({"volume": {"size": 1, "name": name}})),
        )
        .await
    }

    async fn volume_status(&self, token: &str, id: &str) -> String {
        let r = self.get(&format!("/volume/v3/volumes/{id}"), token).await;
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<VolumeBody>().await.unwrap().volume.status
    }
}

fn network_id() -> &'static str {
    "5e0c7f2a-8b3d-4c1e-9f6a-2d7b8c9e0f14"
}

fn image_id() -> &'static str {
    "9f1c2a3b-4d5e-4f60-8a71-b2c3d4e5f601"
}

/// Polls `f` until it returns `Some`, failing after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sim_keystone_issues_scoped_and_unscoped_tokens_with_the_catalog() {
    let env = start(Timings::fast()).await;
    let r = env
        .http
        .post(env.url("/identity/v3/auth/tokens"))
        .json(&json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "id": "c5d3e2f1a0b94c8d7e6f5a4b3c2d1e0f", "password": "provisioner"}}},
            "scope": {"project": {"id": DEMO_PROJECT_ID}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().contains_key("x-subject-token"));
    assert!(r.headers().contains_key("x-openstack-request-id"));
    let body: TokenResponse = r.json().await.unwrap();
    assert_eq!(body.token.project.as_ref().unwrap().name, "demo");
    assert!(body.token.roles.iter().any(|r| r.name == "member"));
    assert!(body.token.expires_at > body.token.issued_at);
    let catalog = body.token.catalog.unwrap();
    for kind in ["identity", "compute", "image", "network", "volumev3"] {
        let entry =
            catalog.iter().find(|e| e.service_type == kind).unwrap_or_else(|| panic!("{kind} in catalog"));
        let ifaces: Vec<&str> = entry.endpoints.iter().map(|e| e.interface.as_str()).collect();
        assert!(ifaces.contains(&"public") && ifaces.contains(&"internal"));
        // Both regions, each with its own URL (Keystone's is one: the same in both).
        let mut regions: Vec<&str> = entry.endpoints.iter().filter_map(|e| e.region_id.as_deref()).collect();
        regions.dedup();
        assert_eq!(regions, vec!["RegionOne", "RegionTwo"], "{kind}");
        let url_in =
            |r: &str| entry.endpoints.iter().find(|e| e.region_id.as_deref() == Some(r)).unwrap().url.clone();
        let two = url_in("RegionTwo");
        if kind == "identity" {
            assert_eq!(url_in("RegionOne"), two);
        } else {
            assert!(two.starts_with(&format!("{}/RegionTwo/", env.url(""))), "{two}");
        }
    }

    let unscoped = env
        .http
        .post(env.url("/identity/v3/auth/tokens"))
        .json(&json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "provisioner", "domain": {"id": "default"}, "password": "provisioner"}}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(unscoped.status(), StatusCode::CREATED);
    let tok = unscoped.headers()["x-subject-token"].to_str().unwrap().to_string();
    let body: TokenResponse = unscoped.json().await.unwrap();
    assert!(body.token.project.is_none() && body.token.catalog.is_none());
    let projects: Value = env.get("/identity/v3/auth/projects", &tok).await.json().await.unwrap();
    let mut names: Vec<&str> =
        projects["projects"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["acme", "demo", "service"]);

    let bad = env
        .http
        .post(env.url("/identity/v3/auth/tokens"))
        .json(&json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "provisioner", "domain": {"name": "Default"}, "password": "wrong"}}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(bad.json::<ErrorBody>().await.unwrap().error.title, "Unauthorized");

    // Validation of another token, and a project the user has no role on.
    let admin = env.token("admin", "admin", "admin").await;
    let v = env
        .http
        .get(env.url("/identity/v3/auth/tokens"))
        .header("X-Auth-Token", &admin)
        .header("X-Subject-Token", &tok)
        .send()
        .await
        .unwrap();
    assert_eq!(v.status(), StatusCode::OK);
    let denied = env
        .http
        .post(env.url("/identity/v3/auth/tokens"))
        .json(&json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "provisioner", "domain": {"name": "Default"}, "password": "provisioner"}}},
            "scope": {"project": {"id": openstack_provisioner::sim::ADMIN_PROJECT_ID}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sim_expired_or_unknown_token_gets_401_from_every_service() {
    let env = start(Timings { token_lifetime_s: 1, ..Timings::fast() }).await;
    let tok = env.token("provisioner", "provisioner", "demo").await;
    let paths = [
        "/compute/v2.1/servers/detail",
        "/networking/v2.0/ports",
        "/volume/v3/volumes/detail",
        "/image/v2/images",
        "/identity/v3/auth/projects",
    ];
    for p in paths {
        assert_eq!(env.get(p, &tok).await.status(), StatusCode::OK, "{p} with a fresh token");
    }
    // The configured lifetime: one second.
    eventually("token expiry", || async {
        (env.get("/compute/v2.1/servers/detail", &tok).await.status() == StatusCode::UNAUTHORIZED)
            .then_some(())
    })
    .await;
    for p in paths.iter().chain(["/compute/v2.1/flavors"].iter()) {
        for t in [tok.as_str(), "gAAAAABnot-a-token"] {
            let r = env.get(p, t).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{p}");
            assert!(r.headers().contains_key("www-authenticate"));
            let body: ErrorBody = r.json().await.unwrap();
            assert_eq!((body.error.code, body.error.title.as_str()), (401, "Unauthorized"));
        }
    }
    // expire_tokens() does the same at once.
    env.sim.control().set_timings(Timings::fast());
    let fresh = env.token("provisioner", "provisioner", "demo").await;
    env.sim.control().expire_tokens();
    assert_eq!(env.get("/networking/v2.0/ports", &fresh).await.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn sim_quota_exceeded_answers_as_each_service_does() {
    let env = start(Timings::fast()).await;
    let acme = env.token("provisioner", "provisioner", "acme").await;
    // Nova: acme has 2 instances; the third is 403 forbidden.
    env.server_id(&acme, "a1", json!({})).await;
    env.server_id(&acme, "a2", json!({})).await;
    let r = env.server(&acme, "a3", json!({})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: FaultBody = r.json().await.unwrap();
    assert_eq!(body.kind, "forbidden");
    assert!(body.detail.message.starts_with("Quota exceeded for instances"), "{}", body.detail.message);

    // Cinder: 2 volumes; the third is 413 overLimit with Retry-After: 0.
    for n in ["v1", "v2"] {
        assert_eq!(env.volume(&acme, n).await.status(), StatusCode::ACCEPTED);
    }
    let r = env.volume(&acme, "v3").await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.headers()["retry-after"], "0");
    let body: FaultBody = r.json().await.unwrap();
    assert_eq!(body.kind, "overLimit");
    assert_eq!(body.detail.retry_after.as_deref(), Some("0"));
    assert!(body.detail.message.contains("VolumeLimitExceeded"));

    // Neutron: the admin lowers acme's port quota to 1 through the quota API; the second port is 409 OverQuota.
    let admin = env.token("admin", "admin", "admin").await;
    let r = env
        .call(
            Method::PUT,
            &format!("/networking/v2.0/quotas/{ACME_PROJECT_ID}"),
            &admin,
            None,
            Some(json!({"quota": {"port": 1}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    env.port(&acme, "p1").await;
    let r = env
        .call(
            Method::POST,
            "/networking/v2.0/ports",
            &acme,
            None,
            Some(json!({"port": {"network_id": network_id()}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body: NeutronErrorBody = r.json().await.unwrap();
    assert_eq!(body.error.kind, "OverQuota");
    assert_eq!(body.error.message, "Quota exceeded for resources: ['port'].");
    let details: Value = env
        .get(&format!("/networking/v2.0/quotas/{ACME_PROJECT_ID}/details.json"), &acme)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(details["quota"]["port"], json!({"limit": 1, "used": 1, "reserved": 0}));
}

#[tokio::test]
async fn sim_quota_apis_read_and_set_through_nova_and_cinder() {
    let env = start(Timings::fast()).await;
    let demo = env.token("provisioner", "provisioner", "demo").await;
    let admin = env.token("admin", "admin", "admin").await;
    let path = format!("/compute/v2.1/os-quota-sets/{DEMO_PROJECT_ID}");
    let q: Value = env.get(&path, &demo).await.json().await.unwrap();
    assert_eq!(q["quota_set"]["instances"], 10000);
    let body = json!({"quota_set": {"instances": 3, "cores": 6}});
    let r = env.call(Method::PUT, &path, &demo, None, Some(body.clone())).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a member cannot set quotas");
    assert_eq!(env.call(Method::PUT, &path, &admin, None, Some(body)).await.status(), StatusCode::OK);
    env.server_id(&demo, "s", json!({})).await;
    let d: Value = env.get(&format!("{path}/detail"), &demo).await.json().await.unwrap();
    assert_eq!(d["quota_set"]["instances"], json!({"in_use": 1, "limit": 3, "reserved": 0}));
    let limits: Value = env.get("/compute/v2.1/limits", &demo).await.json().await.unwrap();
    assert_eq!(limits["limits"]["absolute"]["maxTotalInstances"], 3);
    assert_eq!(limits["limits"]["absolute"]["totalInstancesUsed"], 1);

    let vpath = format!("/volume/v3/{DEMO_PROJECT_ID}/os-quota-sets/{DEMO_PROJECT_ID}");
    let r = env.call(Method::PUT, &vpath, &admin, None, Some(json!({"quota_set": {"volumes": 1}}))).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(env.volume(&demo, "one").await.status(), StatusCode::ACCEPTED);
    let u: Value = env.get(&format!("{vpath}?usage=True"), &demo).await.json().await.unwrap();
    assert_eq!(u["quota_set"]["volumes"]["in_use"], 1);
    assert_eq!(u["quota_set"]["volumes"]["limit"], 1);
    assert_eq!(env.volume(&demo, "two").await.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The control API changes quotas too.
    env.sim.control().set_quotas("demo", QuotaPatch { volumes: Some(5), ..Default::default() }).unwrap();
    assert_eq!(env.volume(&demo, "two").await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn sim_faults_answer_real_error_bodies_latency_errors_and_stuck_resources() {
    let env = start(Timings::fast()).await;
    let ctl = env.sim.control();
    let demo = env.token("provisioner", "provisioner", "demo").await;
    ctl.add_fault(FaultRule {
        service: Some("compute".into()),
        method: Some("POST".into()),
        path: Some("/servers$".into()),
        status: Some(503),
        retry_after: Some("7".into()),
        times: Some(1),
        ..Default::default()
    })
    .unwrap();
    let r = env.server(&demo, "f1", json!({})).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "7");
    let body: FaultBody = r.json().await.unwrap();
    assert_eq!(body.detail.code, 503);
    assert_eq!(env.server(&demo, "f1", json!({})).await.status(), StatusCode::ACCEPTED, "fired once only");

    ctl.add_fault(FaultRule {
        service: Some("network".into()),
        method: Some("POST".into()),
        status: Some(500),
        times: Some(1),
        ..Default::default()
    })
    .unwrap();
    let r = env
        .call(
            Method::POST,
            "/networking/v2.0/ports",
            &demo,
            None,
            Some(json!({"port": {"network_id": network_id()}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(r.json::<NeutronErrorBody>().await.is_ok(), "Neutron's body");

    ctl.add_fault(FaultRule {
        service: Some("image".into()),
        latency_ms: Some(300),
        times: Some(1),
        ..Default::default()
    })
    .unwrap();
    let t0 = Instant::now();
    assert_eq!(env.get("/image/v2/images", &demo).await.status(), StatusCode::OK);
    assert!(t0.elapsed() >= Duration::from_millis(300));

    ctl.add_fault(FaultRule {
        service: Some("compute".into()),
        path: Some("/servers$".into()),
        method: Some("POST".into()),
        server_error: Some("No valid host was found. There are not enough hosts available.".into()),
        times: Some(1),
        ..Default::default()
    })
    .unwrap();
    let bad = env.server_id(&demo, "doomed", json!({})).await;
    let fault = eventually("server ERROR", || async {
        let r =
            env.call(Method::GET, &format!("/compute/v2.1/servers/{bad}"), &demo, Some("2.52"), None).await;
        let s = r.json::<ServerBody>().await.unwrap().server;
        (s.status == "ERROR").then_some(s.fault)
    })
    .await
    .expect("a fault");
    assert_eq!(fault.code, 500);
    assert!(fault.message.starts_with("No valid host"));

    ctl.add_fault(FaultRule {
        service: Some("volume".into()),
        method: Some("POST".into()),
        stuck: true,
        times: Some(1),
        ..Default::default()
    })
    .unwrap();
    let r = env.volume(&demo, "stuck").await;
    let vid = r.json::<VolumeBody>().await.unwrap().volume.id;
    tokio::time::sleep(Duration::from_millis(200)).await; // well past the 30 ms create time
    assert_eq!(env.volume_status(&demo, &vid).await, "creating");

    // A server sent to ERROR through the control API; a rule that never fires.
    let s = env.server_id(&demo, "later", json!({})).await;
    ctl.fail_server(&s, "Exceeded maximum number of retries.").unwrap();
    assert_eq!(env.server_status(&demo, &s).await, "ERROR");
    ctl.add_fault(FaultRule { status: Some(500), probability: Some(0.0), ..Default::default() }).unwrap();
    assert_eq!(env.get("/compute/v2.1/flavors", &demo).await.status(), StatusCode::OK);

    // Over HTTP: the same rules.
    let r = env
        .http
        .post(env.url("/_sim/faults"))
        .json(&json!({"service": "volume", "status": 413, "message": "slow down", "times": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = env.get("/volume/v3/volumes/detail", &demo).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.json::<FaultBody>().await.unwrap().detail.message, "slow down");
}

#[tokio::test]
async fn sim_microversions_change_tags_attachments_and_headers() {
    let env = start(Timings::fast()).await;
    let demo = env.token("provisioner", "provisioner", "demo").await;
    // Tags need 2.52.
    let body = json!({"server": {"name": "t", "imageRef": image_id(), "flavorRef": "1", "networks": "none", "tags": ["a"]}});
    let r = env.call(Method::POST, "/compute/v2.1/servers", &demo, Some("2.51"), Some(body.clone())).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<FaultBody>().await.unwrap().kind, "badRequest");
    let r = env.call(Method::POST, "/compute/v2.1/servers", &demo, Some("2.52"), Some(body)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(r.headers()["x-openstack-nova-api-version"], "2.52");
    assert_eq!(r.headers()["openstack-api-version"], "compute 2.52");
    assert!(r.headers()["vary"].to_str().unwrap().contains("OpenStack-API-Version"));
    assert!(r.headers()["location"].to_str().unwrap().contains("/compute/v2.1/servers/"));
    let id = r.json::<Value>().await.unwrap()["server"]["id"].as_str().unwrap().to_string();
    let old: Value = env
        .call(Method::GET, &format!("/compute/v2.1/servers/{id}"), &demo, Some("2.1"), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(old["server"].get("tags").is_none());
    assert!(old["server"]["flavor"]["id"].is_string());
    let new: Value = env
        .call(Method::GET, &format!("/compute/v2.1/servers/{id}"), &demo, Some("2.52"), None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(new["server"]["tags"], json!(["a"]));
    assert_eq!(new["server"]["flavor"]["original_name"], "m1.tiny");
    // Legacy header, latest and out of range.
    let r = env
        .http
        .get(env.url("/compute/v2.1/flavors"))
        .header("X-Auth-Token", &demo)
        .header("X-OpenStack-Nova-API-Version", "latest")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-openstack-nova-api-version"], "2.101");
    let r = env.call(Method::GET, "/compute/v2.1/flavors", &demo, Some("2.999"), None).await;
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    let doc: Value = env.http.get(env.url("/compute/v2.1/")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["version"]["version"], "2.101");

    // Attach: 200 with a body up to 2.100, 202 from 2.101.
    let id = env.server_id(&demo, "attach", json!({})).await;
    eventually("ACTIVE", || async { (env.server_status(&demo, &id).await == "ACTIVE").then_some(()) }).await;
    let r = env
        .call(
            Method::PUT,
            &format!("/compute/v2.1/servers/{id}/tags"),
            &demo,
            Some("2.26"),
            Some(json!({"tags": ["b"]})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let mut vols = Vec::new();
    for n in ["x", "y"] {
        let v = env.volume(&demo, n).await.json::<VolumeBody>().await.unwrap().volume.id;
        eventually("available", || async {
            (env.volume_status(&demo, &v).await == "available").then_some(())
        })
        .await;
        vols.push(v);
    }
    let path = format!("/compute/v2.1/servers/{id}/os-volume_attachments");
    let r = env
        .call(
            Method::POST,
            &path,
            &demo,
            Some("2.100"),
            Some(json!({"volumeAttachment": {"volumeId": vols[0]}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let a: Value = r.json().await.unwrap();
    assert_eq!(a["volumeAttachment"]["volumeId"], vols[0].as_str());
    assert_eq!(a["volumeAttachment"]["device"], "/dev/vdb");
    let r = env
        .call(
            Method::POST,
            &path,
            &demo,
            Some("2.101"),
            Some(json!({"volumeAttachment": {"volumeId": vols[1]}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let l88: Value = env.call(Method::GET, &path, &demo, Some("2.88"), None).await.json().await.unwrap();
    assert!(
        l88["volumeAttachments"][0]["id"].is_string()
            && l88["volumeAttachments"][0].get("attachment_id").is_none()
    );
    let l89: Value = env.call(Method::GET, &path, &demo, Some("2.89"), None).await.json().await.unwrap();
    assert!(
        l89["volumeAttachments"][0].get("id").is_none()
            && l89["volumeAttachments"][0]["attachment_id"].is_string()
    );
    assert!(l89["volumeAttachments"][0]["bdm_uuid"].is_string());

    // Cinder: OpenStack-API-Version echoed; volume_type_id from 3.63.
    let r =
        env.call(Method::GET, &format!("/volume/v3/volumes/{}", vols[0]), &demo, Some("3.63"), None).await;
    assert_eq!(r.headers()["openstack-api-version"], "volume 3.63");
    let v: Value = r.json().await.unwrap();
    assert!(v["volume"]["volume_type_id"].is_string());
    let v: Value = env
        .call(Method::GET, &format!("/volume/v3/volumes/{}", vols[0]), &demo, Some("3.0"), None)
        .await
        .json()
        .await
        .unwrap();
    assert!(v["volume"].get("volume_type_id").is_none());
    assert_eq!(
        env.call(Method::GET, "/volume/v3/volumes", &demo, Some("3.99"), None).await.status(),
        StatusCode::NOT_ACCEPTABLE
    );
}

#[tokio::test]
async fn sim_servers_ports_and_volumes_change_state_over_time() {
    let env = start(observable()).await;
    let demo = env.token("provisioner", "provisioner", "demo").await;
    let port = env.port(&demo, "p").await;
    let id = env.server_id(&demo, "vm", json!({"networks": [{"port": port}], "tags": ["order-1"]})).await;
    let r = env.call(Method::GET, &format!("/compute/v2.1/servers/{id}"), &demo, Some("2.52"), None).await;
    let s = r.json::<ServerBody>().await.unwrap().server;
    assert_eq!((s.status.as_str(), s.task_state.as_deref()), ("BUILD", Some("spawning")));
    let p: PortBody = env.get(&format!("/networking/v2.0/ports/{port}"), &demo).await.json().await.unwrap();
    assert_eq!((p.port.status.as_str(), p.port.device_id.as_str()), ("DOWN", id.as_str()));
    let active = eventually("ACTIVE", || async {
        let r =
            env.call(Method::GET, &format!("/compute/v2.1/servers/{id}"), &demo, Some("2.52"), None).await;
        let s = r.json::<ServerBody>().await.unwrap().server;
        (s.status == "ACTIVE").then_some(s)
    })
    .await;
    assert!(active.updated >= s.updated, "updated moves with the status");
    assert_eq!(active.addresses["private"][0].addr, p.port.fixed_ips[0].ip_address.clone().unwrap());
    let p: PortBody = env.get(&format!("/networking/v2.0/ports/{port}"), &demo).await.json().await.unwrap();
    assert_eq!(p.port.status, "ACTIVE");

    // Volume: creating -> available -> reserved/attaching -> in-use -> detaching -> available.
    let v = env.volume(&demo, "data").await.json::<VolumeBody>().await.unwrap().volume;
    assert_eq!(v.status, "creating");
    eventually("available", || async {
        (env.volume_status(&demo, &v.id).await == "available").then_some(())
    })
    .await;
    let path = format!("/compute/v2.1/servers/{id}/os-volume_attachments");
    let r = env
        .call(Method::POST, &path, &demo, Some("2.89"), Some(json!({"volumeAttachment": {"volumeId": v.id}})))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let first = env.volume_status(&demo, &v.id).await;
    assert!(first == "reserved" || first == "attaching", "{first}");
    let in_use = eventually("in-use", || async {
        let r = env.get(&format!("/volume/v3/volumes/{}", v.id), &demo).await;
        let vol = r.json::<VolumeBody>().await.unwrap().volume;
        (vol.status == "in-use").then_some(vol)
    })
    .await;
    assert_eq!(in_use.attachments[0].server_id, id);
    let r = env.call(Method::DELETE, &format!("{path}/{}", v.id), &demo, Some("2.89"), None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(env.volume_status(&demo, &v.id).await, "detaching");
    eventually("available again", || async {
        (env.volume_status(&demo, &v.id).await == "available").then_some(())
    })
    .await;

    // Delete: the port Nova did not create is unbound, not deleted; the one it created is gone.
    let auto = env.server_id(&demo, "auto", json!({"networks": [{"uuid": network_id()}]})).await;
    let r = env.get(&format!("/networking/v2.0/ports?device_id={auto}"), &demo).await;
    let nova_port = r.json::<Value>().await.unwrap()["ports"][0]["id"].as_str().unwrap().to_string();
    for s in [&id, &auto] {
        let r = env.call(Method::DELETE, &format!("/compute/v2.1/servers/{s}"), &demo, None, None).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        // Deleting takes a while (task state `deleting`), then the server is gone.
        eventually("deleted", || async {
            (env.get(&format!("/compute/v2.1/servers/{s}"), &demo).await.status() == StatusCode::NOT_FOUND)
                .then_some(())
        })
        .await;
    }
    let p: PortBody = env.get(&format!("/networking/v2.0/ports/{port}"), &demo).await.json().await.unwrap();
    assert_eq!((p.port.status.as_str(), p.port.device_id.as_str()), ("DOWN", ""));
    assert_eq!(
        env.get(&format!("/networking/v2.0/ports/{nova_port}"), &demo).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = env.call(Method::DELETE, &format!("/volume/v3/volumes/{}", v.id), &demo, None, None).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn sim_server_list_filters_by_tags_name_status_and_changes_since() {
    let env = start(Timings { boot_mean_ms: 1500, boot_jitter_ms: 0, ..Timings::fast() }).await;
    let demo = env.token("provisioner", "provisioner", "demo").await;
    let acme = env.token("provisioner", "provisioner", "acme").await;
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(1);
    let a = env.server_id(&demo, "web-1", json!({"tags": ["batch-7", "web"]})).await;
    let b = env.server_id(&demo, "db-1", json!({"tags": ["batch-7"]})).await;
    env.server_id(&demo, "web-2", json!({"tags": ["other"]})).await;
    env.server_id(&acme, "web-3", json!({"tags": ["batch-7"]})).await;
    let list = |q: String| {
        let env = &env;
        let demo = demo.clone();
        async move {
            let r = env
                .call(Method::GET, &format!("/compute/v2.1/servers/detail?{q}"), &demo, Some("2.52"), None)
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            let l: ServerList = r.json().await.unwrap();
            let mut ids: Vec<String> = l.servers.iter().map(|s| s.id.clone()).collect();
            ids.sort();
            (ids, l.servers)
        }
    };
    let mut both = vec![a.clone(), b.clone()];
    both.sort();
    assert_eq!(list("tags=batch-7".into()).await.0, both, "only this project's");
    assert_eq!(list("tags=batch-7,web".into()).await.0, vec![a.clone()]);
    assert_eq!(list("name=^web".into()).await.0.len(), 2);
    assert_eq!(list("name=DB".into()).await.0, vec![b.clone()], "a case-insensitive regex");
    assert_eq!(list("status=BUILD&tags=batch-7".into()).await.0.len(), 2);
    assert_eq!(list("status=ACTIVE".into()).await.0.len(), 0);
    let since =
        |t: chrono::DateTime<chrono::Utc>| format!("changes-since={}", t.format("%Y-%m-%dT%H:%M:%SZ"));
    assert_eq!(list(format!("tags=batch-7&{}", since(t0))).await.0, both);
    // After boot the servers' `updated` moves, so a poller asking "since I last looked" sees them.
    let (_, servers) = eventually("ACTIVE", || async {
        let (ids, s) = list("tags=batch-7&status=ACTIVE".into()).await;
        (ids.len() == 2).then_some(((), s))
    })
    .await;
    let built = servers.iter().map(|s| s.updated).max().unwrap();
    assert!(built > servers[0].created);
    assert_eq!(list(format!("tags=batch-7&{}", since(built))).await.0, both);
    assert!(list(format!("tags=batch-7&{}", since(built + chrono::Duration::seconds(2)))).await.0.is_empty());
    // A deleted server shows up as DELETED, but only to changes-since, and without its tags
    // (Nova drops them), so a tag filter no longer finds it.
    env.call(Method::DELETE, &format!("/compute/v2.1/servers/{b}"), &demo, None, None).await;
    let servers = eventually("DELETED", || async {
        let (_, servers) = list(since(t0)).await;
        servers.iter().any(|s| s.id == b && s.status == "DELETED").then_some(servers)
    })
    .await;
    assert_eq!(servers.iter().find(|s| s.id == b).unwrap().tags.as_deref(), Some(&[][..]));
    assert_eq!(list(format!("tags=batch-7&{}", since(t0))).await.0, vec![a.clone()]);
    assert_eq!(list("tags=batch-7".into()).await.0, vec![a.clone()]);
    let bad = env
        .call(Method::GET, "/compute/v2.1/servers/detail?changes-since=yesterday", &demo, None, None)
        .await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sim_lists_paginate_with_limit_marker_and_next_links() {
    let env = start(Timings::fast()).await;
    let demo = env.token("provisioner", "provisioner", "demo").await;
    let mut made = Vec::new();
    for i in 0..23 {
        made.push(env.server_id(&demo, &format!("s{i}"), json!({})).await);
    }
    let mut seen = Vec::new();
    let mut next = Some(env.url("/compute/v2.1/servers/detail?limit=10"));
    let mut pages = 0;
    while let Some(url) = next {
        let r = env.http.get(url).header("X-Auth-Token", &demo).send().await.unwrap();
        let page: ServerList = r.json().await.unwrap();
        pages += 1;
        seen.extend(page.servers.iter().map(|s| s.id.clone()));
        next = page.servers_links.and_then(|l| l.into_iter().find(|l| l.rel == "next")).map(|l| l.href);
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    made.reverse();
    assert_eq!(seen, made, "newest first, each once");
    let r = env.get("/compute/v2.1/servers?marker=nope", &demo).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let images: Value = env.get("/image/v2/images?limit=2", &demo).await.json().await.unwrap();
    assert_eq!(images["images"].as_array().unwrap().len(), 2);
    let next = images["next"].as_str().unwrap();
    let rest: Value = env.get(&format!("/image{next}"), &demo).await.json().await.unwrap();
    assert_eq!(rest["images"].as_array().unwrap().len(), 1);
    assert!(rest.get("next").is_none());

    for i in 0..3 {
        env.port(&demo, &format!("p{i}")).await;
        assert_eq!(env.volume(&demo, &format!("v{i}")).await.status(), StatusCode::ACCEPTED);
    }
    let ports: Value = env.get("/networking/v2.0/ports?limit=2", &demo).await.json().await.unwrap();
    assert_eq!(ports["ports"].as_array().unwrap().len(), 2);
    assert!(ports["ports_links"][0]["href"].as_str().unwrap().contains("marker="));
    let named: Value = env.get("/networking/v2.0/ports?name=p1", &demo).await.json().await.unwrap();
    assert_eq!(named["ports"].as_array().unwrap().len(), 1);
    let vols: Value = env.get("/volume/v3/volumes/detail?limit=2", &demo).await.json().await.unwrap();
    let last = vols["volumes"][1]["id"].as_str().unwrap();
    assert!(vols["volumes_links"][0]["href"].as_str().unwrap().ends_with(&format!("marker={last}")));
    let by_name: Value = env.get("/volume/v3/volumes/detail?name=v2", &demo).await.json().await.unwrap();
    assert_eq!(by_name["volumes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn sim_counters_resources_and_reset() {
    let env = start(Timings::fast()).await;
    let ctl = env.sim.control();
    let demo = env.token("provisioner", "provisioner", "demo").await;
    let id = env.server_id(&demo, "c", json!({})).await;
    env.get(&format!("/compute/v2.1/servers/{id}"), &demo).await;
    env.get(&format!("/compute/v2.1/servers/{id}"), &demo).await;
    env.get("/compute/v2.1/servers/00000000-0000-0000-0000-000000000000", &demo).await;
    assert_eq!(ctl.count("POST", "/compute/v2.1/servers"), 1);
    let shows: Vec<_> = ctl
        .counters()
        .into_iter()
        .filter(|c| c.method == "GET" && c.path == "/compute/v2.1/servers/{id}")
        .collect();
    assert_eq!(shows.iter().find(|c| c.status == 200).map(|c| c.count), Some(2));
    assert_eq!(shows.iter().find(|c| c.status == 404).map(|c| c.count), Some(1));
    let over_http: Value =
        env.http.get(env.url("/_sim/counters")).send().await.unwrap().json().await.unwrap();
    assert!(over_http.as_array().unwrap().iter().any(|c| c["path"] == "/identity/v3/auth/tokens"));

    let res = ctl.resources();
    assert_eq!(res.projects[DEMO_PROJECT_ID].usage.instances, 1);
    assert_eq!(res.projects[DEMO_PROJECT_ID].servers.values().sum::<usize>(), 1);
    let r = env.http.post(env.url("/_sim/reset")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(ctl.counters().is_empty());
    assert_eq!(ctl.resources().projects[DEMO_PROJECT_ID].usage.instances, 0);
    assert_eq!(
        env.get("/compute/v2.1/servers", &demo).await.status(),
        StatusCode::UNAUTHORIZED,
        "tokens are gone too"
    );
    env.sim.shutdown().await;
}

#[tokio::test]
async fn sim_command_prints_client_config_and_serves_a_seed_file() {
    use tokio::io::AsyncBufReadExt;
    let dir = std::env::temp_dir().join(format!("sim-seed-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let seed = dir.join("seed.yaml");
    std::fs::write(
        &seed,
        "projects:\n  - {id: 11111111111111111111111111111111, name: solo}\n\
         users:\n  - {id: 22222222222222222222222222222222, name: alice, password: wonderland, roles: {solo: [member]}}\n\
         domains:\n  - {id: default, name: Default}\n\
         flavors:\n  - {id: \"9\", name: x1.only, vcpus: 1, ram: 64, disk: 1}\n",
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
        .args(["sim", "--listen", "127.0.0.1:0", "--seed"])
        .arg(&seed)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let auth_url = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("export OS_AUTH_URL=") {
                return url.to_string();
            }
        }
        panic!("no OS_AUTH_URL printed");
    })
    .await
    .expect("the simulator prints its configuration");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = Client::new();
    let r = http
        .post(format!("{auth_url}/v3/auth/tokens"))
        .json(&json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
            "name": "alice", "domain": {"id": "default"}, "password": "wonderland"}}},
            "scope": {"project": {"name": "solo", "domain": {"id": "default"}}}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let token = r.headers()["x-subject-token"].to_str().unwrap().to_string();
    let base = auth_url.trim_end_matches("/identity");
    let flavors: Value = http
        .get(format!("{base}/compute/v2.1/flavors"))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(flavors["flavors"][0]["name"], "x1.only");
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Keystone's admin API as Keystone 30 answers it: creates, 409s and 400s worded as Keystone
/// words them, exact tag filters and case-blind names, role assignments (with implied roles),
/// policy 403s for a non-admin, and revocation when a project or user is disabled.
#[tokio::test]
async fn sim_keystone_admin_api_answers_as_keystone_does() {
    let env = start(Timings::fast()).await;
    // `provisioner` holds admin on its own project, `service`; in `demo` it is a member.
    let admin = env.token("provisioner", "provisioner", "service").await;
    let member = env.token("provisioner", "provisioner", "demo").await;
    let call = |m: Method, path: &str, tok: &str, body: Option<Value>| {
        let (m, path, tok) = (m.clone(), format!("/identity/v3{path}"), tok.to_string());
        let env = &env;
        async move { env.call(m, &path, &tok, None, body).await }
    };
    let expect = |r: Response, status: StatusCode| async move {
        assert_eq!(r.status(), status, "{:?}", r.url().path());
        r.json::<Value>().await.unwrap_or(Value::Null)
    };

    // Domains: by name (the CLI's `--domain Default` asks /domains/Default, then ?name=).
    let r = call(Method::GET, "/domains/Default", &admin, None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let d = expect(call(Method::GET, "/domains?name=default", &admin, None).await, StatusCode::OK).await;
    assert_eq!(d["domains"][0]["id"], "default", "names compare without case");
    let created = json!({"domain": {"name": "resellers", "description": "d"}});
    let dom = expect(call(Method::POST, "/domains", &admin, Some(created)).await, StatusCode::CREATED).await;
    let dom_id = dom["domain"]["id"].as_str().unwrap().to_string();
    let dup = expect(
        call(Method::POST, "/domains", &admin, Some(json!({"domain": {"name": "Resellers"}}))).await,
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(
        dup["error"]["message"],
        "Conflict occurred attempting to store project - it is not permitted to have two projects acting as domains with the same name: Resellers."
    );

    // Projects with tags.
    let body = json!({"project": {"name": "cust-1", "domain_id": dom_id, "description": "Customer 1",
        "tags": ["tenant:CUST-1", "provisioner"]}});
    let p = expect(call(Method::POST, "/projects", &admin, Some(body)).await, StatusCode::CREATED).await;
    let pid = p["project"]["id"].as_str().unwrap().to_string();
    assert_eq!(p["project"]["tags"], json!(["tenant:CUST-1", "provisioner"]), "echoed as given");
    assert_eq!(
        (p["project"]["enabled"].clone(), p["project"]["parent_id"].clone()),
        (json!(true), json!(dom_id))
    );
    let shown =
        expect(call(Method::GET, &format!("/projects/{pid}"), &admin, None).await, StatusCode::OK).await;
    assert_eq!(shown["project"]["tags"], json!(["provisioner", "tenant:CUST-1"]), "read back sorted");
    let dup = json!({"project": {"name": "CUST-1", "domain_id": dom_id}});
    let e = expect(call(Method::POST, "/projects", &admin, Some(dup)).await, StatusCode::CONFLICT).await;
    let m = e["error"]["message"].as_str().unwrap();
    assert!(
        m.starts_with("Conflict occurred attempting to store project - it is not permitted to have two projects with either the same name or same id in the same domain: name is CUST-1, project id "),
        "{m}"
    );
    assert_eq!(e["error"]["title"], "Conflict");
    let same_name_other_domain = json!({"project": {"name": "cust-1", "domain_id": "default"}});
    let other = expect(
        call(Method::POST, "/projects", &admin, Some(same_name_other_domain)).await,
        StatusCode::CREATED,
    )
    .await;
    let bad = json!({"project": {"name": "x", "tags": ["a/b"]}});
    let e = expect(call(Method::POST, "/projects", &admin, Some(bad)).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(
        e["error"]["message"],
        "Invalid input for field/attribute 0. Value: a/b. 'a/b' does not match '^[^,/]*$'"
    );
    let long = json!({"project": {"name": "x", "tags": ["y".repeat(256)]}});
    expect(call(Method::POST, "/projects", &admin, Some(long)).await, StatusCode::BAD_REQUEST).await;
    let nodomain = json!({"project": {"name": "x", "domain_id": "nonexistent"}});
    let e =
        expect(call(Method::POST, "/projects", &admin, Some(nodomain)).await, StatusCode::BAD_REQUEST).await;
    assert_eq!(e["error"]["message"], "Could not find domain: nonexistent.");
    let names = |v: &Value| -> Vec<String> {
        v["projects"].as_array().unwrap().iter().map(|p| p["id"].as_str().unwrap().to_string()).collect()
    };
    let found =
        expect(call(Method::GET, "/projects?tags=tenant:CUST-1", &admin, None).await, StatusCode::OK).await;
    assert_eq!(names(&found), vec![pid.as_str()]);
    let none =
        expect(call(Method::GET, "/projects?tags=tenant:cust-1", &admin, None).await, StatusCode::OK).await;
    assert!(names(&none).is_empty(), "tag filters are exact");
    let any =
        expect(call(Method::GET, "/projects?tags-any=nope,provisioner", &admin, None).await, StatusCode::OK)
            .await;
    assert_eq!(names(&any), vec![pid.as_str()]);
    let by_name = expect(
        call(Method::GET, &format!("/projects?name=CUST-1&domain_id={dom_id}"), &admin, None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(names(&by_name), vec![pid.as_str()], "names compare without case");
    // The tags sub-API.
    let r = call(Method::PUT, &format!("/projects/{pid}/tags/plan:gold"), &admin, None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = call(Method::HEAD, &format!("/projects/{pid}/tags/plan:gold"), &admin, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = call(Method::DELETE, &format!("/projects/{pid}/tags/plan:gold"), &admin, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = call(Method::HEAD, &format!("/projects/{pid}/tags/plan:gold"), &admin, None).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Users; the password is never shown.
    let body = json!({"user": {"name": "alice", "domain_id": dom_id, "default_project_id": pid,
        "email": "alice@example.com", "password": "S3cret-pw", "enabled": true}});
    let r = call(Method::POST, "/users", &admin, Some(body)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let text = r.text().await.unwrap();
    assert!(!text.contains("S3cret"), "{text}");
    let u: Value = serde_json::from_str(&text).unwrap();
    let uid = u["user"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        (u["user"]["email"].clone(), u["user"]["default_project_id"].clone()),
        (json!("alice@example.com"), json!(pid))
    );
    let dup = json!({"user": {"name": "Alice", "domain_id": dom_id}});
    let e = expect(call(Method::POST, "/users", &admin, Some(dup)).await, StatusCode::CONFLICT).await;
    assert_eq!(
        e["error"]["message"],
        format!(
            "Conflict occurred attempting to store user - Duplicate entry found with name Alice at domain ID {dom_id}."
        )
    );
    let listed = expect(
        call(Method::GET, &format!("/users?name=ALICE&domain_id={dom_id}"), &admin, None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["users"][0]["id"], json!(uid));

    // Roles and assignments.
    let roles = expect(call(Method::GET, "/roles?name=member", &admin, None).await, StatusCode::OK).await;
    let member_role = roles["roles"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        (roles["roles"].as_array().unwrap().len(), roles["roles"][0]["domain_id"].clone()),
        (1, Value::Null)
    );
    let grant = format!("/projects/{pid}/users/{uid}/roles/{member_role}");
    for _ in 0..2 {
        let r = call(Method::PUT, &grant, &admin, None).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "idempotent");
    }
    assert_eq!(call(Method::HEAD, &grant, &admin, None).await.status(), StatusCode::NO_CONTENT);
    let e = expect(
        call(Method::PUT, &format!("/projects/{pid}/users/{uid}/roles/nope"), &admin, None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(e["error"]["message"], "Could not find role: nope.");
    let list = expect(
        call(Method::GET, &format!("/role_assignments?scope.project.id={pid}&user.id={uid}"), &admin, None)
            .await,
        StatusCode::OK,
    )
    .await;
    let a = list["role_assignments"].as_array().unwrap();
    assert_eq!(a.len(), 1, "direct assignments only: {list}");
    assert_eq!(
        (a[0]["role"]["id"].clone(), a[0]["user"]["id"].clone(), a[0]["scope"]["project"]["id"].clone()),
        (json!(member_role), json!(uid), json!(pid))
    );
    let eff = expect(
        call(
            Method::GET,
            &format!("/role_assignments?scope.project.id={pid}&effective&include_names"),
            &admin,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let eff_names: Vec<&str> = eff["role_assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["role"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(eff_names, ["member", "reader"], "member implies reader");

    // The new user logs in: scoped to its project, or unscoped (then to its default project).
    let login = |scope: Option<Value>| {
        let mut auth = json!({"identity": {"methods": ["password"], "password": {"user": {
            "name": "alice", "domain": {"name": "resellers"}, "password": "S3cret-pw"}}}});
        if let Some(s) = scope {
            auth["scope"] = s;
        }
        env.http.post(env.url("/identity/v3/auth/tokens")).json(&json!({"auth": auth})).send()
    };
    let r = login(Some(json!({"project": {"id": pid}}))).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let alice = r.headers()["x-subject-token"].to_str().unwrap().to_string();
    let t: TokenResponse = r.json().await.unwrap();
    let names: Vec<&str> = t.token.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["member", "reader"]);
    let t: TokenResponse = login(None).await.unwrap().json().await.unwrap();
    assert_eq!(
        t.token.project.map(|p| p.id),
        Some(pid.clone()),
        "an unscoped login lands on the default project"
    );

    // A member (not admin) gets Keystone's policy 403.
    for (m, path, rule) in [
        (Method::POST, "/projects".to_string(), "identity:create_project"),
        (Method::GET, "/users".to_string(), "identity:list_users"),
        (Method::PUT, grant.clone(), "identity:create_grant"),
        (Method::GET, "/role_assignments".to_string(), "identity:list_role_assignments"),
        (Method::PATCH, format!("/projects/{pid}"), "identity:update_project"),
    ] {
        let body = (m == Method::POST || m == Method::PATCH).then(|| json!({"project": {"name": "z"}}));
        let e = expect(call(m, &path, &member, body).await, StatusCode::FORBIDDEN).await;
        assert_eq!(
            e["error"],
            json!({"code": 403, "title": "Forbidden", "message": format!("You are not authorized to perform the requested action: {rule}.")})
        );
    }

    // Disabling the project revokes alice's token and refuses new ones.
    let nova = env.get("/compute/v2.1/servers", &alice).await;
    assert_eq!(nova.status(), StatusCode::OK);
    let off = json!({"project": {"enabled": false}});
    let p = expect(call(Method::PATCH, &format!("/projects/{pid}"), &admin, Some(off)).await, StatusCode::OK)
        .await;
    assert_eq!(p["project"]["enabled"], false);
    assert_eq!(env.get("/compute/v2.1/servers", &alice).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        login(Some(json!({"project": {"id": pid}}))).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let off = json!({"user": {"enabled": false}});
    let u =
        expect(call(Method::PATCH, &format!("/users/{uid}"), &admin, Some(off)).await, StatusCode::OK).await;
    assert_eq!(u["user"]["enabled"], false);
    assert_eq!(login(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // Deletes: 204, then 404 with Keystone's words; the assignments go with them.
    assert_eq!(
        call(Method::DELETE, &format!("/users/{uid}"), &admin, None).await.status(),
        StatusCode::NO_CONTENT
    );
    let e = expect(call(Method::DELETE, &format!("/users/{uid}"), &admin, None).await, StatusCode::NOT_FOUND)
        .await;
    assert_eq!(e["error"]["message"], format!("Could not find user: {uid}."));
    assert_eq!(
        call(Method::DELETE, &format!("/projects/{pid}"), &admin, None).await.status(),
        StatusCode::NO_CONTENT
    );
    let e = expect(call(Method::GET, &format!("/projects/{pid}"), &admin, None).await, StatusCode::NOT_FOUND)
        .await;
    assert_eq!(e["error"]["message"], format!("Could not find project: {pid}."));
    let ids = env.sim.control().identity();
    assert!(ids.assignments.iter().all(|a| a.project_id != pid && a.user_id != uid));
    assert!(ids.projects.iter().any(|p| p.id == other["project"]["id"]));
    let r = call(Method::DELETE, &format!("/domains/{dom_id}"), &admin, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "an enabled domain is not deleted");
}

/// A project made through Keystone works like a seeded one: tokens scoped to it carry the
/// catalog, and its quotas, set through Nova, Neutron and Cinder, are enforced.
#[tokio::test]
async fn sim_a_new_project_works_like_a_seeded_one_with_its_quotas_enforced() {
    let env = start(Timings::fast()).await;
    let admin = env.token("provisioner", "provisioner", "service").await;
    let p: Value = env
        .call(
            Method::POST,
            "/identity/v3/projects",
            &admin,
            None,
            Some(json!({"project": {"name": "fresh"}})),
        )
        .await
        .json()
        .await
        .unwrap();
    let pid = p["project"]["id"].as_str().unwrap().to_string();
    let roles: Value = env.get("/identity/v3/roles?name=member", &admin).await.json().await.unwrap();
    let member = roles["roles"][0]["id"].as_str().unwrap();
    let me = "c5d3e2f1a0b94c8d7e6f5a4b3c2d1e0f";
    let r = env
        .call(
            Method::PUT,
            &format!("/identity/v3/projects/{pid}/users/{me}/roles/{member}"),
            &admin,
            None,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // Quotas through each service's own API, in the admin's scope.
    let set = |path: String, body: Value| {
        let (env, admin) = (&env, admin.clone());
        async move {
            let r = env.call(Method::PUT, &path, &admin, None, Some(body)).await;
            assert_eq!(r.status(), StatusCode::OK, "{path}");
        }
    };
    set(
        format!("/compute/v2.1/os-quota-sets/{pid}"),
        json!({"quota_set": {"instances": 2, "cores": 4, "ram": 4096}}),
    )
    .await;
    set(
        format!("/networking/v2.0/quotas/{pid}"),
        json!({"quota": {"port": 1, "network": 3, "floatingip": 2}}),
    )
    .await;
    set(
        format!("/volume/v3/{}/os-quota-sets/{pid}", openstack_provisioner::sim::SERVICE_PROJECT_ID),
        json!({"quota_set": {"volumes": 1, "gigabytes": 5}}),
    )
    .await;
    let q: Value = env.get(&format!("/networking/v2.0/quotas/{pid}"), &admin).await.json().await.unwrap();
    assert_eq!((q["quota"]["network"].clone(), q["quota"]["floatingip"].clone()), (json!(3), json!(2)));

    let tok = env.token("provisioner", "provisioner", "fresh").await;
    let t: Value = env
        .http
        .get(env.url("/identity/v3/auth/tokens"))
        .header("X-Auth-Token", &tok)
        .header("X-Subject-Token", &tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(t["token"]["catalog"].as_array().is_some_and(|c| c.len() >= 5), "a catalog: {t}");
    env.server_id(&tok, "a", json!({})).await;
    env.server_id(&tok, "b", json!({})).await;
    let third = env.server(&tok, "c", json!({})).await;
    assert_eq!(third.status(), StatusCode::FORBIDDEN);
    let f: FaultBody = third.json().await.unwrap();
    assert!(
        f.detail.message.starts_with("Quota exceeded for instances: Requested 1, but already used 2 of 2"),
        "{f:?}"
    );
    env.port(&tok, "p1").await;
    let r = env
        .call(
            Method::POST,
            "/networking/v2.0/ports",
            &tok,
            None,
            Some(json!({"port": {"network_id": network_id()}})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "port quota 1");
    let vol = |size: u32| {
        env.call(Method::POST, "/volume/v3/volumes", &tok, None, Some(json!({"volume": {"size": size}})))
    };
    assert_eq!(vol(1).await.status(), StatusCode::ACCEPTED);
    assert_eq!(vol(1).await.status(), StatusCode::PAYLOAD_TOO_LARGE, "volume quota 1");
    let usage = &env.sim.control().resources().projects[&pid];
    assert_eq!((usage.usage.instances, usage.usage.ports, usage.usage.volumes), (2, 1, 1));
}

/// GET a server at 2.84: (status, task_state, flavor name).
async fn server_state(env: &Env, token: &str, id: &str) -> (String, Option<String>, String) {
    let r = env.call(Method::GET, &format!("/compute/v2.1/servers/{id}"), token, Some("2.84"), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let s = r.json::<ServerBody>().await.unwrap().server;
    let flavor = s.flavor.and_then(|f| f.original_name).unwrap_or_default();
    (s.status, s.task_state, flavor)
}

async fn settled(env: &Env, token: &str, id: &str, status: &str) -> String {
    eventually(status, || async {
        let (st, task, flavor) = server_state(env, token, id).await;
        (st == status && task.is_none()).then_some(flavor)
    })
    .await
}

#[tokio::test]
async fn sim_server_actions_follow_novas_states_tasks_and_conflicts() {
    let env = start(Timings::fast()).await;
    let demo = env.token("provisioner", "provisioner", "demo").await;
    let id = env.server_id(&demo, "vm", json!({})).await;
    let small = settled(&env, &demo, &id, "ACTIVE").await;
    let act = |body: Value| {
        let (env, demo, id) = (&env, &demo, &id);
        async move {
            env.call(
                Method::POST,
                &format!("/compute/v2.1/servers/{id}/action"),
                demo,
                Some("2.84"),
                Some(body),
            )
            .await
        }
    };
    let r = act(json!({"os-start": null})).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let body = r.text().await.unwrap();
    assert!(body.contains("conflictingRequest") && body.contains("while it is in vm_state active"), "{body}");
    // Every pair of the lifecycle, there and back.
    for (there, status, back) in [
        ("os-stop", "SHUTOFF", "os-start"),
        ("suspend", "SUSPENDED", "resume"),
        ("pause", "PAUSED", "unpause"),
        ("shelve", "SHELVED_OFFLOADED", "unshelve"),
    ] {
        assert_eq!(act(json!({there: null})).await.status(), StatusCode::ACCEPTED, "{there}");
        settled(&env, &demo, &id, status).await;
        assert_eq!(act(json!({there: null})).await.status(), StatusCode::CONFLICT, "{there} twice");
        assert_eq!(act(json!({back: null})).await.status(), StatusCode::ACCEPTED, "{back}");
        settled(&env, &demo, &id, "ACTIVE").await;
    }
    assert_eq!(act(json!({"reboot-everything": null})).await.status(), StatusCode::BAD_REQUEST);

    // Resize: to the same flavor is refused; revert goes back to the old flavor, confirm keeps the new.
    assert_eq!(act(json!({"resize": {"flavorRef": "1"}})).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(act(json!({"resize": {"flavorRef": "2"}})).await.status(), StatusCode::ACCEPTED);
    let big = settled(&env, &demo, &id, "VERIFY_RESIZE").await;
    assert_ne!(big, small, "VERIFY_RESIZE shows the new flavor");
    assert_eq!(act(json!({"revertResize": null})).await.status(), StatusCode::ACCEPTED);
    assert_eq!(settled(&env, &demo, &id, "ACTIVE").await, small);
    assert_eq!(
        act(json!({"confirmResize": null})).await.status(),
        StatusCode::CONFLICT,
        "nothing to confirm"
    );
    assert_eq!(act(json!({"resize": {"flavorRef": "2"}})).await.status(), StatusCode::ACCEPTED);
    settled(&env, &demo, &id, "VERIFY_RESIZE").await;
    assert_eq!(act(json!({"confirmResize": null})).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(settled(&env, &demo, &id, "ACTIVE").await, big);

    // An action held in its task state: the server shows the task, and other actions get 409.
    env.sim
        .control()
        .add_fault(FaultRule {
            action: Some("os-stop".into()),
            stuck: true,
            times: Some(1),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(act(json!({"os-stop": null})).await.status(), StatusCode::ACCEPTED);
    let (status, task, _) = server_state(&env, &demo, &id).await;
    assert_eq!((status.as_str(), task.as_deref()), ("ACTIVE", Some("powering-off")));
    let r = act(json!({"suspend": null})).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("task_state powering-off"));

    // A resize Nova accepts and then fails: back to ACTIVE on the old flavor, the error recorded.
    let other = env.server_id(&demo, "vm2", json!({})).await;
    settled(&env, &demo, &other, "ACTIVE").await;
    env.sim
        .control()
        .add_fault(FaultRule {
            action: Some("resize".into()),
            server_error: Some("No valid host was found. There are not enough hosts available.".into()),
            times: Some(1),
            ..Default::default()
        })
        .unwrap();
    let path = format!("/compute/v2.1/servers/{other}/action");
    let r =
        env.call(Method::POST, &path, &demo, Some("2.84"), Some(json!({"resize": {"flavorRef": "2"}}))).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let actions_path = format!("/compute/v2.1/servers/{other}/os-instance-actions");
    let last = eventually("the resize recorded as failed", || async {
        let r = env.call(Method::GET, &actions_path, &demo, Some("2.84"), None).await;
        let v: Value = r.json().await.unwrap();
        let last = v["instanceActions"][0].clone();
        (last["action"] == "resize" && last["message"] == "Error").then_some(last)
    })
    .await;
    assert_eq!(settled(&env, &demo, &other, "ACTIVE").await, small, "still on the old flavor");
    let rid = last["request_id"].as_str().unwrap();
    let r = env.call(Method::GET, &format!("{actions_path}/{rid}"), &demo, Some("2.84"), None).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["instanceAction"]["events"][0]["result"], "Error");
    assert!(v["instanceAction"]["events"][0]["details"].as_str().unwrap().contains("No valid host"));

    // Deleting takes a while: the server shows `deleting`, a second DELETE is fine, then it is gone.
    let r = env.call(Method::DELETE, &format!("/compute/v2.1/servers/{other}"), &demo, None, None).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = env.call(Method::DELETE, &format!("/compute/v2.1/servers/{other}"), &demo, None, None).await;
    assert!(matches!(r.status(), StatusCode::NO_CONTENT | StatusCode::NOT_FOUND));
    eventually("gone", || async {
        (env.get(&format!("/compute/v2.1/servers/{other}"), &demo).await.status() == StatusCode::NOT_FOUND)
            .then_some(())
    })
    .await;
}
