//! Tests: the OpenStack client against the simulator over HTTP: authentication (single-flight,
//! early refresh, one re-authentication on 401), the error taxonomy on real answers (rate
//! limits, quotas of Nova, Neutron and Cinder, auth, transport), microversion degradation, a
//! round trip through every service call the engine uses, and the tenant calls (Keystone admin
//! API and quota sets) through the engine's `Tenants` seam, also against a real Keystone.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use openstack_provisioner::config::Secret;
use openstack_provisioner::engine::cloud::{
    Created, ErrorKind, ProjectSpec, TenantQuotas, Tenants, UserSpec, tenant_tag,
};
use openstack_provisioner::engine::openstack_cloud::OpenStackCloud;
use openstack_provisioner::openstack::compute::{NewServer, ServerQuery};
use openstack_provisioner::openstack::config::{
    CloudConfig, Credential, DomainRef, Interface, ProjectRef, UserRef,
};
use openstack_provisioner::openstack::microversion::{self, Microversion};
use openstack_provisioner::openstack::network::NewPort;
use openstack_provisioner::openstack::smoke::{self, SmokeSpec};
use openstack_provisioner::openstack::volume::{NewVolume, VolumeQuery};
use openstack_provisioner::openstack::{ErrorClass, OpenStack, SessionOptions};
use openstack_provisioner::sim::{
    ACME_PROJECT_ID, DEMO_PROJECT_ID, FaultRule, QuotaPatch, SERVICE_PROJECT_ID, SimConfig, SimHandle,
    Simulator,
};

const AUTH_PATH: &str = "/identity/v3/auth/tokens";
const WAIT: Duration = Duration::from_secs(20);

async fn start_sim() -> SimHandle {
    Simulator::start(SimConfig::for_tests()).await.expect("simulator starts")
}

fn cloud_for(sim: &SimHandle, password: &str) -> CloudConfig {
    CloudConfig {
        cloud_name: None,
        auth_url: format!("{}/v3", sim.auth_url()),
        credential: Credential::Password {
            user: UserRef::Name { name: "provisioner".into(), domain: DomainRef::Id("default".into()) },
            password: openstack_provisioner::config::Secret::new(password),
        },
        project_credentials: Default::default(),
        default_project: Some(ProjectRef::Name {
            name: "demo".into(),
            domain: DomainRef::Name("Default".into()),
        }),
        region: None,
        regions: Vec::new(),
        interface: Interface::Public,
        cacert: None,
    }
}

fn client_with(sim: &SimHandle, options: SessionOptions) -> OpenStack {
    OpenStack::new(cloud_for(sim, "provisioner"), options).expect("client builds")
}

fn client(sim: &SimHandle) -> OpenStack {
    client_with(sim, SessionOptions { request_timeout: Duration::from_secs(10), ..SessionOptions::default() })
}

fn auths(sim: &SimHandle) -> u64 {
    sim.control().count("POST", AUTH_PATH)
}

/// Polls `check` until it returns `Some`, at most [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn openstack_concurrent_calls_cause_one_authentication() {
    let sim = start_sim().await;
    let cloud = client(&sim);
    let calls = (0..200).map(|_| {
        let cloud = cloud.clone();
        tokio::spawn(async move { cloud.image().find_image(DEMO_PROJECT_ID, "cirros-0.6.2").await })
    });
    for call in futures_util::future::join_all(calls).await {
        let image = call.expect("task").expect("image found");
        assert_eq!(image.name.as_deref(), Some("cirros-0.6.2"));
    }
    assert_eq!(auths(&sim), 1, "200 concurrent calls, one authentication");
    assert_eq!(cloud.session().stats().authentications.load(Ordering::Relaxed), 1);
    // Another project is another scope: one more token, not one per call.
    for _ in 0..5 {
        cloud.compute().find_flavor(ACME_PROJECT_ID, "m1.tiny").await.expect("flavor");
    }
    assert_eq!(auths(&sim), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn openstack_a_token_near_expiry_is_refreshed_before_it_expires() {
    let sim = start_sim().await;
    let mut timings = sim.control().timings();
    timings.token_lifetime_s = 2;
    sim.control().set_timings(timings);
    let cloud = client(&sim);
    cloud.compute().find_flavor(DEMO_PROJECT_ID, "1").await.expect("first call");
    assert_eq!(auths(&sim), 1);
    cloud.compute().find_flavor(DEMO_PROJECT_ID, "1").await.expect("same token");
    assert_eq!(auths(&sim), 1, "a fresh token is reused");
    // A 2 s token is replaced in its last quarter (0.5 s), while Keystone still accepts it: so
    // the refresh is ours, not a reaction to a 401.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    cloud.compute().find_flavor(DEMO_PROJECT_ID, "1").await.expect("after refresh");
    assert_eq!(auths(&sim), 2, "the token was refreshed");
    assert_eq!(cloud.session().stats().reauthentications.load(Ordering::Relaxed), 0, "no 401 was needed");
    sim.shutdown().await;
}

#[tokio::test]
async fn openstack_a_401_causes_exactly_one_reauthentication() {
    let sim = start_sim().await;
    let cloud = client(&sim);
    cloud.network().find_network(DEMO_PROJECT_ID, "private").await.expect("first call");
    assert_eq!(auths(&sim), 1);

    // Keystone revoked it early: the call still succeeds, after one new token.
    sim.control().expire_tokens();
    cloud.network().find_network(DEMO_PROJECT_ID, "private").await.expect("after re-auth");
    assert_eq!(auths(&sim), 2);
    assert_eq!(cloud.session().stats().reauthentications.load(Ordering::Relaxed), 1);

    // A service that keeps answering 401: one re-authentication, then an auth error, no loop.
    sim.control()
        .add_fault(FaultRule {
            service: Some("compute".into()),
            path: Some("/flavors".into()),
            status: Some(401),
            ..FaultRule::default()
        })
        .expect("fault");
    let before = sim.control().count("GET", "/compute/v2.1/flavors/{id}");
    let err = cloud.compute().get_flavor(DEMO_PROJECT_ID, "1").await.expect_err("401 twice");
    assert_eq!(err.class, ErrorClass::Auth, "{err}");
    assert_eq!(err.status, Some(401));
    assert_eq!(auths(&sim), 3, "exactly one more authentication");
    assert_eq!(sim.control().count("GET", "/compute/v2.1/flavors/{id}") - before, 2, "sent twice, not more");
    assert_eq!(err.event_class(), openstack_provisioner::messages::event::ErrorClass::Auth);
    sim.shutdown().await;
}

#[tokio::test]
async fn openstack_rate_limits_carry_retry_after_and_are_not_retried_by_the_client() {
    let sim = start_sim().await;
    let cloud = client(&sim);
    let net = cloud.network();
    net.find_network(DEMO_PROJECT_ID, "private").await.expect("warm up");
    // 429 with Retry-After in seconds. The client does not sleep: the error carries the delay so
    // the engine can schedule the retry in the database.
    sim.control()
        .add_fault(FaultRule {
            service: Some("network".into()),
            method: Some("GET".into()),
            status: Some(429),
            retry_after: Some("7".into()),
            times: Some(1),
            ..FaultRule::default()
        })
        .expect("fault");
    let before = sim.control().count("GET", "/networking/v2.0/networks");
    let started = std::time::Instant::now();
    let err = net.find_network(DEMO_PROJECT_ID, "private").await.expect_err("429");
    assert!(started.elapsed() < Duration::from_secs(5), "the client did not wait");
    assert_eq!(err.class, ErrorClass::RateLimited { retry_after: Some(Duration::from_secs(7)) }, "{err}");
    assert!(err.is_retryable());
    assert_eq!(sim.control().count("GET", "/networking/v2.0/networks") - before, 1, "not retried");
    // Honouring it: the next attempt (after the delay the engine waits) succeeds.
    net.find_network(DEMO_PROJECT_ID, "private").await.expect("after the rate limit");

    // Retry-After as an HTTP date, capped at 60 s.
    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    sim.control()
        .add_fault(FaultRule {
            service: Some("compute".into()),
            status: Some(429),
            retry_after: Some(date),
            times: Some(1),
            ..FaultRule::default()
        })
        .expect("fault");
    let err = cloud.compute().get_flavor(DEMO_PROJECT_ID, "1").await.expect_err("429");
    assert_eq!(err.class, ErrorClass::RateLimited { retry_after: Some(Duration::from_secs(60)) }, "{err}");

    // A 413 overLimit without quota wording is a rate limit too.
    sim.control()
        .add_fault(FaultRule {
            service: Some("volume".into()),
            status: Some(413),
            message: Some("This request was rate-limited.".into()),
            kind: Some("overLimit".into()),
            retry_after: Some("2".into()),
            times: Some(1),
            ..FaultRule::default()
        })
        .expect("fault");
    let err = cloud
        .volume()
        .get_volume(DEMO_PROJECT_ID, "5aa119a8-d25b-45a7-8d1b-88e127885635")
        .await
        .expect_err("413");
    assert_eq!(err.class, ErrorClass::RateLimited { retry_after: Some(Duration::from_secs(2)) }, "{err}");
    sim.shutdown().await;
}

/// Real quota answers of the three services (the simulator enforces the project's quotas).
#[tokio::test]
async fn openstack_quota_errors_of_nova_neutron_and_cinder_are_quota() {
    let sim = start_sim().await;
    let cloud = client(&sim);
    let p = ACME_PROJECT_ID;
    sim.control()
        .set_quotas(
            p,
            QuotaPatch { ports: Some(0), instances: Some(0), gigabytes: Some(1), ..QuotaPatch::default() },
        )
        .expect("quotas");
    let network = cloud.network().find_network(p, "private").await.expect("network");

    let err = cloud
        .network()
        .create_port(
            p,
            &NewPort {
                network_id: network.id.clone(),
                name: "q".into(),
                tags: vec![],
                security_groups: None,
            },
        )
        .await
        .expect_err("neutron quota");
    assert_eq!(err.class, ErrorClass::Quota, "{err}");
    assert_eq!((err.status, err.fault.as_deref()), (Some(409), Some("OverQuota")));

    let err = cloud
        .volume()
        .create_volume(p, &NewVolume { name: "q".into(), size_gb: 5, ..NewVolume::default() })
        .await
        .expect_err("cinder quota");
    assert_eq!(err.class, ErrorClass::Quota, "{err}");
    assert_eq!(err.status, Some(413));
    assert_eq!(err.retry_after(), None, "a quota error carries no retry, even with Retry-After: 0");

    sim.control().set_quotas(p, QuotaPatch { ports: Some(10), ..QuotaPatch::default() }).expect("quotas");
    let port = cloud
        .network()
        .create_port(
            p,
            &NewPort {
                network_id: network.id.clone(),
                name: "q".into(),
                tags: vec![],
                security_groups: None,
            },
        )
        .await
        .expect("port");
    let err = cloud
        .compute()
        .create_server(
            p,
            &NewServer {
                name: "q".into(),
                flavor_id: "1".into(),
                image_id: "9f1c2a3b-4d5e-4f60-8a71-b2c3d4e5f601".into(),
                port_id: port.id.clone(),
                ..NewServer::default()
            },
        )
        .await
        .expect_err("nova quota");
    assert_eq!(err.class, ErrorClass::Quota, "{err}");
    assert_eq!(err.status, Some(403));
    assert!(err.message.contains("Quota exceeded"), "the service's own message: {err}");
    assert_eq!(err.event_class(), openstack_provisioner::messages::event::ErrorClass::QuotaExceeded);
    cloud.network().delete_port(p, &port.id).await.expect("cleanup");
    sim.shutdown().await;
}

#[tokio::test]
async fn openstack_auth_and_transport_failures_are_classified_and_not_looped() {
    let sim = start_sim().await;
    let wrong = OpenStack::new(cloud_for(&sim, "wrong"), SessionOptions::default()).expect("client");
    // Keystone takes its time, so that every caller is waiting while the one attempt fails.
    sim.control()
        .add_fault(FaultRule {
            service: Some("identity".into()),
            latency_ms: Some(300),
            ..FaultRule::default()
        })
        .expect("fault");
    let calls = (0..50).map(|_| {
        let wrong = wrong.clone();
        tokio::spawn(async move { wrong.image().find_image(DEMO_PROJECT_ID, "cirros-0.6.2").await })
    });
    for call in futures_util::future::join_all(calls).await {
        let err = call.expect("task").expect_err("bad password");
        assert_eq!(err.class, ErrorClass::Auth, "{err}");
        assert!(!err.to_string().contains("wrong"), "no password in the error: {err}");
    }
    assert_eq!(auths(&sim), 1, "a rejected password is tried once for all 50 waiting callers");
    // A later call tries again (the password may have been fixed), once.
    let err = wrong.image().find_image(DEMO_PROJECT_ID, "cirros-0.6.2").await.expect_err("bad password");
    assert_eq!(err.class, ErrorClass::Auth, "{err}");
    assert_eq!(auths(&sim), 2);

    // Nothing listens: transient (the engine retries), quickly thanks to the connect timeout.
    let addr = sim.addr();
    sim.shutdown().await;
    let dead = OpenStack::new(
        cloud_for_addr(addr),
        SessionOptions { connect_timeout: Duration::from_secs(1), ..SessionOptions::default() },
    )
    .expect("client");
    let err = dead.image().find_image(DEMO_PROJECT_ID, "cirros-0.6.2").await.expect_err("no server");
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert!(err.is_retryable());
}

fn cloud_for_addr(addr: std::net::SocketAddr) -> CloudConfig {
    CloudConfig {
        cloud_name: None,
        auth_url: format!("http://{addr}/identity/v3"),
        credential: Credential::Password {
            user: UserRef::Id("c5d3e2f1a0b94c8d7e6f5a4b3c2d1e0f".into()),
            password: openstack_provisioner::config::Secret::new("provisioner"),
        },
        project_credentials: Default::default(),
        default_project: None,
        region: None,
        regions: Vec::new(),
        interface: Interface::Public,
        cacert: None,
    }
}

#[tokio::test]
async fn openstack_lookups_find_exactly_one_active_match() {
    let sim = start_sim().await;
    let cloud = client(&sim);
    let p = DEMO_PROJECT_ID;
    let by_name = cloud.image().find_image(p, "cirros-0.6.2").await.expect("by name");
    let by_id = cloud.image().find_image(p, &by_name.id).await.expect("by id");
    assert_eq!(by_id.id, by_name.id);
    let err = cloud.image().find_image(p, "fedora-41-uploading").await.expect_err("queued");
    assert_eq!(err.class, ErrorClass::NotFound, "{err}");
    assert!(err.message.contains("queued"), "says why: {err}");
    let err = cloud.image().find_image(p, "no-such-image").await.expect_err("missing");
    assert_eq!(err.class, ErrorClass::NotFound);
    let err = cloud.image().find_image(p, "00000000-0000-4000-8000-000000000000").await.expect_err("no id");
    assert_eq!(err.class, ErrorClass::NotFound);

    assert_eq!(cloud.compute().find_flavor(p, "m1.small").await.expect("flavor by name").id, "2");
    assert_eq!(cloud.compute().find_flavor(p, "2").await.expect("flavor by id").name, "m1.small");
    assert_eq!(
        cloud.compute().find_flavor(p, "m9.huge").await.expect_err("flavor").class,
        ErrorClass::NotFound
    );
    let net = cloud.network().find_network(p, "private").await.expect("network by name");
    assert_eq!(cloud.network().find_network(p, &net.id).await.expect("network by id").name, "private");

    // The default project by name resolves to its id.
    assert_eq!(cloud.identity().default_project_id().await.expect("default project"), DEMO_PROJECT_ID);
    let info = cloud.identity().check_project(p).await.expect("check");
    assert_eq!(info.endpoints.len(), 4, "{info:?}");
    sim.shutdown().await;
}

/// Everything the engine does for one order, through the client: port, server, volume, attach,
/// the listings it uses to find what a crashed worker created, and the undo.
async fn round_trip(cloud: &OpenStack, sim: &SimHandle, order: &str) {
    let p = DEMO_PROJECT_ID;
    let tags = vec!["provisioner".to_string(), format!("order:{order}")];
    let image = cloud.image().find_image(p, "cirros-0.6.2").await.expect("image");
    let flavor = cloud.compute().find_flavor(p, "m1.tiny").await.expect("flavor");
    let network = cloud.network().find_network(p, "private").await.expect("network");
    let port = cloud
        .network()
        .create_port(
            p,
            &NewPort {
                network_id: network.id.clone(),
                name: format!("port-{order}"),
                tags: tags.clone(),
                security_groups: None,
            },
        )
        .await
        .expect("port");
    assert_eq!(port.tags.iter().filter(|t| tags.contains(t)).count(), 2, "{:?}", port.tags);
    let found = cloud.network().list_ports_by_tags(p, &tags).await.expect("ports by tags");
    assert_eq!(found.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), vec![port.id.as_str()]);

    let metadata = BTreeMap::from([("provisioner_order_id".to_string(), order.to_string())]);
    let created = cloud
        .compute()
        .create_server(
            p,
            &NewServer {
                name: format!("vm-{order}"),
                flavor_id: flavor.id.clone(),
                image_id: image.id.clone(),
                port_id: port.id.clone(),
                tags: tags.clone(),
                key_name: None,
                user_data: Some("I2Nsb3VkLWNvbmZpZwpydW5jbWQ6IFtbZWNobywgaGldXQo=".into()),
                metadata: metadata.clone(),
                availability_zone: None,
                server_group: None,
                boot_volume: None,
            },
        )
        .await
        .expect("server");
    let server = wait_for("server ACTIVE", || async {
        let s = cloud.compute().get_server(p, &created.id).await.expect("get server");
        (s.status == "ACTIVE").then_some(s)
    })
    .await;
    // Below 2.52 the tags arrive once the server has left BUILD; the engine makes sure.
    cloud.compute().ensure_server_tags(p, &server.id, &tags).await.expect("tags");
    let server = cloud.compute().get_server(p, &server.id).await.expect("get server");
    let listed = cloud
        .compute()
        .list_servers(p, &ServerQuery { tags: tags.clone(), limit: Some(1), ..ServerQuery::default() })
        .await
        .expect("servers by tags");
    assert_eq!(listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec![server.id.as_str()]);
    assert_eq!(server.metadata, metadata);
    assert!(server.tags.as_ref().is_some_and(|t| tags.iter().all(|w| t.contains(w))), "{:?}", server.tags);

    let volume = cloud
        .volume()
        .create_volume(
            p,
            &NewVolume {
                name: format!("data-{order}"),
                size_gb: 1,
                volume_type: None,
                metadata: metadata.clone(),
            },
        )
        .await
        .expect("volume");
    wait_for("volume available", || async {
        let v = cloud.volume().get_volume(p, &volume.id).await.expect("get volume");
        (v.status == "available").then_some(())
    })
    .await;
    let by_meta = cloud.volume().list_volumes_by_metadata(p, &metadata).await.expect("volumes by metadata");
    assert_eq!(by_meta.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(), vec![volume.id.as_str()]);
    cloud.compute().attach_volume(p, &server.id, &volume.id).await.expect("attach");
    wait_for("volume in-use", || async {
        let v = cloud.volume().get_volume(p, &volume.id).await.expect("get volume");
        (v.status == "in-use").then_some(())
    })
    .await;
    let attachments = cloud.compute().list_attachments(p, &server.id).await.expect("attachments");
    assert_eq!(
        attachments.iter().map(|a| a.volume_id.as_str()).collect::<Vec<_>>(),
        vec![volume.id.as_str()]
    );

    let in_use = VolumeQuery { metadata: metadata.clone(), status: Some("in-use".into()) };
    assert_eq!(cloud.volume().list_volumes(p, &in_use).await.expect("in-use volumes").len(), 1);

    // Undo, idempotently: detaching or deleting twice is fine.
    cloud.compute().detach_volume(p, &server.id, &volume.id).await.expect("detach");
    wait_for("volume detached", || async {
        let v = cloud.volume().get_volume(p, &volume.id).await.expect("get volume");
        (v.status == "available").then_some(())
    })
    .await;
    assert!(cloud.compute().list_attachments(p, &server.id).await.expect("attachments").is_empty());
    cloud.compute().detach_volume(p, &server.id, &volume.id).await.expect("detach again");
    assert_eq!(cloud.volume().list_volumes(p, &in_use).await.expect("in-use volumes").len(), 0);
    cloud.compute().delete_server(p, &server.id).await.expect("delete server");
    wait_for("server gone", || async {
        match cloud.compute().get_server(p, &server.id).await {
            Err(e) if e.class == ErrorClass::NotFound => Some(()),
            Ok(s) if s.status == "DELETED" => Some(()),
            _ => None,
        }
    })
    .await;
    cloud.compute().delete_server(p, &server.id).await.expect("delete again");
    wait_for("volume released", || async {
        let v = cloud.volume().get_volume(p, &volume.id).await.expect("get volume");
        (v.status == "available").then_some(())
    })
    .await;
    cloud.volume().delete_volume(p, &volume.id).await.expect("delete volume");
    cloud.network().delete_port(p, &port.id).await.expect("delete port");
    cloud.network().delete_port(p, &port.id).await.expect("delete port again");
    let _ = sim;
}

#[tokio::test]
async fn openstack_round_trip_of_every_call_the_engine_uses() {
    let sim = start_sim().await;
    let cloud = client(&sim);
    round_trip(&cloud, &sim, "o-rt-1").await;
    let v = cloud.compute().microversion(DEMO_PROJECT_ID).await.expect("microversion");
    assert_eq!(v, microversion::NOVA_WANTED, "the simulator offers what we want");
    assert_eq!(
        cloud.volume().microversion(DEMO_PROJECT_ID).await.expect("cinder"),
        microversion::CINDER_WANTED
    );
    sim.shutdown().await;
}

/// Below 2.52 the server is created untagged and tagged right after; the engine sees no
/// difference (listing by tags finds it).
#[tokio::test]
async fn openstack_an_older_nova_gets_its_tags_after_create() {
    let sim = start_sim().await;
    let cloud = client_with(
        &sim,
        SessionOptions { nova_wanted: Microversion::new(2, 40), ..SessionOptions::default() },
    );
    assert_eq!(cloud.compute().microversion(DEMO_PROJECT_ID).await.expect("mv"), Microversion::new(2, 40));
    round_trip(&cloud, &sim, "o-rt-old").await;
    assert!(sim.control().count("PUT", "/compute/v2.1/servers/{id}/tags") >= 1, "tagged after create");
    sim.shutdown().await;
}

fn smoke_spec(image: &str, flavor: &str, network: &str) -> SmokeSpec {
    SmokeSpec {
        image: image.into(),
        flavor: flavor.into(),
        network: network.into(),
        volume_gb: Some(1),
        wait: Duration::from_secs(120),
    }
}

#[tokio::test]
async fn openstack_smoke_check_runs_every_step_and_cleans_up() {
    let sim = start_sim().await;
    let cloud = client(&sim);
    let report = smoke::run(&cloud, None, &smoke_spec("cirros-0.6.2", "m1.tiny", "private"))
        .await
        .expect("smoke check");
    assert_eq!(report.project_id, DEMO_PROJECT_ID);
    assert_eq!(report.nova_microversion, Some(microversion::NOVA_WANTED));
    assert_eq!(report.steps.len(), 11, "{report}");
    let demo = sim.control().resources().projects.remove(DEMO_PROJECT_ID).expect("demo project");
    assert!(demo.servers.is_empty(), "servers left: {:?}", demo.servers);
    assert!(demo.ports.is_empty(), "ports left: {:?}", demo.ports);
    assert!(demo.volumes.is_empty(), "volumes left: {:?}", demo.volumes);

    // A failing step still cleans up what was created before it.
    sim.control()
        .add_fault(FaultRule {
            service: Some("volume".into()),
            method: Some("POST".into()),
            status: Some(503),
            ..FaultRule::default()
        })
        .expect("fault");
    let err = smoke::run(&cloud, None, &smoke_spec("cirros-0.6.2", "m1.tiny", "private"))
        .await
        .expect_err("volume create fails");
    assert_eq!(
        (err.service, err.class),
        (openstack_provisioner::openstack::Service::Volume, ErrorClass::Transient)
    );
    let demo = sim.control().resources().projects.remove(DEMO_PROJECT_ID).expect("demo project");
    assert!(demo.servers.is_empty() && demo.ports.is_empty(), "left behind: {demo:?}");
    sim.shutdown().await;
}

/// The same check against a real cloud: `OS_CLOUD` (or `OS_*`) plus `SMOKE_IMAGE`,
/// `SMOKE_FLAVOR`, `SMOKE_NETWORK`, e.g. with the loopback OpenStack of
/// `shared/real-openstack`: `OS_CLIENT_CONFIG_FILE=~/.cache/real-openstack/etc/clouds.yaml
/// OS_CLOUD=os-tenant SMOKE_IMAGE=cirros-0.6.2 SMOKE_FLAVOR=m1.tiny SMOKE_NETWORK=os-net
/// cargo nextest run --run-ignored only -E 'test(/openstack_smoke_against/)'`.
#[tokio::test]
#[ignore = "needs a real cloud (OS_CLOUD or OS_AUTH_URL) and SMOKE_IMAGE, SMOKE_FLAVOR, SMOKE_NETWORK"]
async fn openstack_smoke_against_a_real_cloud() {
    let cloud = CloudConfig::from_env().expect("cloud config").expect("a cloud is configured");
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let spec = smoke_spec(&var("SMOKE_IMAGE"), &var("SMOKE_FLAVOR"), &var("SMOKE_NETWORK"));
    // SMOKE_NOVA_MICROVERSION=2.40 behaves like an older Nova (tags after create).
    let nova_wanted = std::env::var("SMOKE_NOVA_MICROVERSION")
        .ok()
        .map(|v| Microversion::parse(&v).expect("SMOKE_NOVA_MICROVERSION is like 2.40"))
        .unwrap_or(microversion::NOVA_WANTED);
    let client =
        OpenStack::new(cloud, SessionOptions { nova_wanted, ..SessionOptions::default() }).expect("client");
    let report = smoke::run(&client, None, &spec).await.unwrap_or_else(|e| panic!("smoke check failed: {e}"));
    println!("{report}");
    assert!(report.nova_microversion.is_some_and(|v| v >= microversion::NOVA_BASE));
    assert_eq!(client.session().stats().reauthentications.load(Ordering::Relaxed), 0);
}

/// The service user scoped to its own project, where it holds `admin` (tenant calls need it).
fn admin_client(sim: &SimHandle) -> OpenStack {
    let mut cloud = cloud_for(sim, "provisioner");
    cloud.default_project = Some(ProjectRef::Id(SERVICE_PROJECT_ID.into()));
    OpenStack::new(cloud, SessionOptions::default()).expect("client builds")
}

/// Every tenant call the engine makes, once, with the retries it must survive (a create whose
/// answer was lost: Keystone's 409, adopted) and the undo. Run against the simulator and, in
/// the ignored test below, against a real Keystone; `domain` is a name (`Default`).
async fn tenant_round_trip(client: &OpenStack, domain: &str) {
    let tenants = OpenStackCloud::new(client.session().clone());
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    // A ref with the characters a Keystone tag may not hold.
    let tenant_ref = format!("CUST/{suffix},100% Acme");
    let tag = tenant_tag(&tenant_ref);
    assert!(tenants.find_project_by_tag(&tag).await.expect("list by tag").is_none());
    let spec = ProjectSpec {
        name: format!("it-tenant-{suffix}"),
        domain: domain.into(),
        description: "integration test tenant".into(),
        tags: vec![tag.clone(), "provisioner".into()],
    };
    let project = match tenants.create_project(&spec).await.expect("create project") {
        Created::New(p) => p,
        other => panic!("a new name is created: {other:?}"),
    };
    let mut sorted = spec.tags.clone();
    sorted.sort();
    assert_eq!((project.tags.clone(), project.enabled), (sorted, true));
    // The answer was lost and the step runs again: Keystone says 409 (names compare without
    // case), and the existing project is returned to adopt.
    let again = ProjectSpec { name: spec.name.to_uppercase(), ..spec.clone() };
    assert_eq!(
        tenants.create_project(&again).await.expect("409 adopted"),
        Created::Existing(project.clone())
    );
    assert_eq!(tenants.find_project_by_tag(&tag).await.unwrap(), Some(project.clone()));
    let other_case = tenant_tag(&tenant_ref.to_lowercase());
    assert!(tenants.find_project_by_tag(&other_case).await.unwrap().is_none(), "tags match exactly");
    assert_eq!(tenants.find_project_by_name(domain, &spec.name).await.unwrap(), Some(project.clone()));
    let domain_id = tenants.resolve_domain(domain).await.expect("domain");
    assert_eq!(project.domain_id, domain_id);

    let password = Secret::new(format!("S3cret-{suffix}"));
    let user_spec = UserSpec {
        name: format!("it-user-{suffix}"),
        domain: domain.into(),
        default_project_id: project.id.clone(),
        email: Some("ops@example.com".into()),
        password: Some(password.clone()),
    };
    let user = match tenants.create_user(&user_spec).await.expect("create user") {
        Created::New(u) => u,
        other => panic!("a new name is created: {other:?}"),
    };
    assert_eq!(user.default_project_id.as_deref(), Some(project.id.as_str()));
    assert_eq!(user.email.as_deref(), Some("ops@example.com"));
    assert_eq!(tenants.create_user(&user_spec).await.expect("409 adopted"), Created::Existing(user.clone()));
    assert_eq!(tenants.find_user(domain, &user_spec.name).await.unwrap(), Some(user.clone()));

    let member = tenants.find_role("member").await.expect("role");
    tenants.assign_role(&project.id, &user.id, &member).await.expect("assign");
    tenants.assign_role(&project.id, &user.id, &member).await.expect("assigning again is a no-op");
    assert_eq!(tenants.role_assignments(&project.id, &user.id).await.unwrap(), vec![member.clone()]);
    // The service user takes a role there too, so it can provision into the new project.
    let me = tenants.service_user_id().await.expect("service user");
    tenants.assign_role(&project.id, &me, &member).await.expect("assign the service user");
    client.identity().check_project(&project.id).await.expect("the service user has a token there");

    let quotas = TenantQuotas {
        instances: Some(2),
        cores: Some(4),
        ram_mb: Some(4096),
        volumes: Some(3),
        gigabytes: Some(30),
        ports: Some(5),
        networks: Some(2),
        floating_ips: Some(1),
    };
    tenants.set_quotas(&project.id, &quotas).await.expect("quotas");
    assert_eq!(tenants.get_quotas(&project.id).await.expect("read back"), quotas);
    let partial = TenantQuotas { instances: Some(3), ..TenantQuotas::default() };
    tenants.set_quotas(&project.id, &partial).await.expect("a partial update");
    let now = tenants.get_quotas(&project.id).await.unwrap();
    assert_eq!((now.instances, now.cores, now.ports), (Some(3), Some(4), Some(5)), "others kept");

    // The new user logs in with its password, to its project.
    let mut as_user = client.session().cloud().clone();
    as_user.credential = Credential::Password {
        user: UserRef::Name { name: user_spec.name.clone(), domain: DomainRef::Id(domain_id.clone()) },
        password,
    };
    as_user.default_project = Some(ProjectRef::Id(project.id.clone()));
    let user_client = OpenStack::new(as_user.clone(), SessionOptions::default()).expect("client");
    let info = user_client.identity().check_project(&project.id).await.expect("the user's token");
    assert_eq!(info.user_id, user.id);

    // Close: disabled (no new token for the user), then deleted; deleting again is fine.
    tenants.set_user_enabled(&user.id, false).await.expect("disable user");
    tenants.set_project_enabled(&project.id, false).await.expect("disable project");
    assert!(!tenants.get_project(&project.id).await.unwrap().expect("still there").enabled);
    assert!(!tenants.get_user(&user.id).await.unwrap().expect("still there").enabled);
    let refused = OpenStack::new(as_user, SessionOptions::default()).unwrap();
    let err = refused.identity().check_project(&project.id).await.expect_err("disabled");
    assert_eq!(err.class, ErrorClass::Auth, "{err}");
    tenants.clear_quotas(&project.id).await.expect("quotas back to defaults");
    tenants.delete_user(&user.id).await.expect("delete user");
    tenants.delete_user(&user.id).await.expect("gone is success");
    tenants.delete_project(&project.id).await.expect("delete project");
    tenants.delete_project(&project.id).await.expect("gone is success");
    assert!(tenants.get_project(&project.id).await.unwrap().is_none());
    assert!(tenants.get_user(&user.id).await.unwrap().is_none());
    assert!(tenants.find_project_by_tag(&tag).await.unwrap().is_none());
}

#[tokio::test]
async fn openstack_tenant_calls_round_trip_through_keystone_and_the_quota_apis() {
    let sim = start_sim().await;
    let client = admin_client(&sim);
    tenant_round_trip(&client, "Default").await;
    // Every admin call went in the service user's own project: one token, for `service`
    // (and one each for the new project, the new user and the refused login).
    let errors: Vec<_> = sim.control().counters().into_iter().filter(|c| c.status >= 500).collect();
    assert!(errors.is_empty(), "{errors:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn openstack_a_service_user_without_admin_gets_auth_errors_that_are_not_retried() {
    let sim = start_sim().await;
    // The default scope is `demo`, where the provisioner is only a member.
    let tenants = OpenStackCloud::new(client(&sim).session().clone());
    let spec = ProjectSpec {
        name: "nope".into(),
        domain: "default".into(),
        description: String::new(),
        tags: vec!["provisioner".into()],
    };
    let err = tenants.create_project(&spec).await.expect_err("not an admin");
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert!(err.message.contains("identity:create_project"), "Keystone's policy message: {err}");
    let err = tenants.find_project_by_tag("tenant:x").await.expect_err("not an admin");
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert!(err.message.contains("identity:list_projects"), "{err}");
    let err = tenants
        .set_quotas(ACME_PROJECT_ID, &TenantQuotas { instances: Some(5), ..TenantQuotas::default() })
        .await
        .expect_err("not an admin");
    assert_eq!(err.kind, ErrorKind::Auth, "a policy 403 on a quota API is auth, not quota: {err}");
    assert!(!openstack_provisioner::engine::retry::is_retryable(err.kind));
    assert_eq!(sim.control().quotas()["acme"].instances, 2, "unchanged");
    let posts = sim.control().count("POST", "/identity/v3/projects");
    assert_eq!(posts, 1, "sent once, not retried");
    assert!(sim.control().identity().projects.iter().all(|p| p.name != "nope"));
    sim.shutdown().await;
}

/// The tenant round trip against a real Keystone (and Nova, Neutron, Cinder for the quotas),
/// as a Keystone admin: `OS_CLOUD=os-admin` with shared/real-openstack's clouds.yaml. With
/// `NONADMIN_CLOUD=os-tenant` it also checks what a member-only service user gets.
#[tokio::test]
#[ignore = "needs a real cloud (OS_CLOUD or OS_AUTH_URL) where the user holds admin"]
async fn openstack_tenants_against_a_real_keystone() {
    let cloud = CloudConfig::from_env().expect("cloud config").expect("a cloud is configured");
    let client = OpenStack::new(cloud, SessionOptions::default()).expect("client");
    tenant_round_trip(&client, "Default").await;
    if let Ok(name) = std::env::var("NONADMIN_CLOUD") {
        let mut vars: std::collections::HashMap<String, String> = std::env::vars().collect();
        vars.insert("OS_CLOUD".into(), name);
        let cloud = CloudConfig::from_vars(&vars).expect("config").expect("cloud");
        let member = OpenStack::new(cloud, SessionOptions::default()).unwrap();
        let own = member.identity().default_project_id().await.expect("its own project");
        let tenants = OpenStackCloud::new(member.session().clone());
        let err = tenants.find_project_by_tag("tenant:x").await.expect_err("not an admin");
        assert_eq!(err.kind, ErrorKind::Auth, "{err}");
        let err = tenants
            .set_quotas(&own, &TenantQuotas { instances: Some(5), ..TenantQuotas::default() })
            .await
            .expect_err("not an admin");
        assert_eq!(err.kind, ErrorKind::Auth, "{err}");
        println!("a member-only service user: {err}");
    }
}
