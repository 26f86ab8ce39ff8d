//! Tests: the provisioning engine (claims, fenced saves, outbox relay, and the whole path from
//! order to completion event against the simulator).

use std::time::Duration;

use openstack_provisioner::config::{DatabaseSettings, SecretUrl};
use openstack_provisioner::store::intake::NewJob;
use openstack_provisioner::store::{History, JobSave, JobState, OutboxEvent, SaveError, Store};
use uuid::Uuid;

/// A store on a fresh database of its own, dropped by [`drop_db`].
async fn fresh_store() -> (Store, String) {
    let name = format!("prov_t_{}", Uuid::new_v4().simple());
    let settings = DatabaseSettings {
        url: SecretUrl::new(format!("mysql://root@127.0.0.1:3306/{name}")),
        ..DatabaseSettings::default()
    };
    (Store::connect(&settings).await.expect("store"), name)
}

async fn drop_db(store: Store, name: &str) {
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
        .execute(store.pool())
        .await;
    store.close().await;
}

async fn insert_job(store: &Store, order_id: &str) -> Uuid {
    let id = Uuid::new_v4();
    let body = format!(
        r#"{{"order_id":"{order_id}","project_id":"p1","server":{{"name":"vm","flavor":"m1.small","image":"cirros","network":"private"}}}}"#
    );
    let mut jobs = [NewJob {
        id,
        order_id: order_id.into(),
        project_id: "p1".into(),
        action: "create".into(),
        target_order_id: None,
        tenant_ref: None,
        order_body: body,
        order_digest: "0".repeat(64),
        traceparent: None,
    }];
    store.insert_jobs(&mut jobs).await.expect("insert job");
    id
}

fn save_for(id: Uuid, fence: u64, state: JobState, step: &str, event: Option<OutboxEvent>) -> JobSave {
    JobSave {
        id,
        fence,
        state,
        step: step.into(),
        step_attempts: 0,
        attempts: 1,
        run_after: Duration::ZERO,
        deadline_at: None,
        crashes: 0,
        intent: None,
        port_id: None,
        server_id: None,
        volume_id: None,
        data: None,
        error_class: None,
        error_step: None,
        error_message: None,
        release: state.is_final(),
        lease: Duration::from_secs(30),
        history: History {
            from_state: Some(JobState::Queued),
            actor: Some("test".into()),
            ..History::default()
        },
        event,
        service: None,
        tenant: None,
    }
}

#[tokio::test]
async fn a_worker_whose_lease_was_taken_over_cannot_write() {
    let (store, name) = fresh_store().await;
    let id = insert_job(&store, "lease-1").await;

    // Worker A claims the job with a 1 s lease, then stalls past it.
    let a = store.claim_due("worker-a", Duration::from_millis(1000), 10).await.unwrap();
    assert_eq!(a.len(), 1);
    let fence_a = a[0].fence;
    assert!(store.claim_due("worker-b", Duration::from_secs(30), 10).await.unwrap().is_empty(), "lease held");
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // Worker B takes it over: a new fence, and a crash counted (A never released it).
    let b = store.claim_due("worker-b", Duration::from_secs(30), 10).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].fence, fence_a + 1);
    assert_eq!(b[0].crashes, 1);

    // A's write is refused, and nothing of it lands (no history, no event).
    let event =
        OutboxEvent { event_id: Uuid::new_v4(), routing_key: "job.completed".into(), body: "{}".into() };
    let err = store
        .save_job(&save_for(id, fence_a, JobState::Completed, "completed", Some(event)))
        .await
        .unwrap_err();
    assert!(matches!(err, SaveError::LeaseLost), "{err}");
    assert!(store.history_of(id).await.unwrap().is_empty());
    let unsent: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(store.pool()).await.unwrap();
    assert_eq!(unsent, 0);

    // B's write lands, with its history row and its event, in one transaction.
    let event =
        OutboxEvent { event_id: Uuid::new_v4(), routing_key: "job.completed".into(), body: "{}".into() };
    store.save_job(&save_for(id, b[0].fence, JobState::Completed, "completed", Some(event))).await.unwrap();
    let job = store.job(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.lease_owner, None);
    assert_eq!(store.history_of(id).await.unwrap().len(), 1);
    let unsent: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox").fetch_one(store.pool()).await.unwrap();
    assert_eq!(unsent, 1);
    drop_db(store, &name).await;
}

#[tokio::test]
async fn group_commit_writes_many_saves_and_refuses_only_the_stale_ones() {
    let (store, name) = fresh_store().await;
    for i in 0..50 {
        insert_job(&store, &format!("group-{i}")).await;
    }
    let rows = store.claim_due("w", Duration::from_secs(30), 100).await.unwrap();
    assert_eq!(rows.len(), 50);
    // A second claim finds nothing: all are leased.
    assert!(store.claim_due("w2", Duration::from_secs(30), 100).await.unwrap().is_empty());
    let committer = openstack_provisioner::store::Committer::start(store.clone(), || {});
    let mut handles = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        // Every tenth save carries a stale fence.
        let fence = if i % 10 == 0 { row.fence - 1 } else { row.fence };
        let save = save_for(row.id, fence, JobState::InProgress, "create_port", None);
        let c = committer.clone();
        handles.push(tokio::spawn(async move { c.save(save).await }));
    }
    let mut lost = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(()) => {}
            Err(SaveError::LeaseLost) => lost += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(lost, 5);
    let moved: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE step = 'create_port'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(moved, 45);
    let history: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM job_history").fetch_one(store.pool()).await.unwrap();
    assert_eq!(history, 45);
    let commits = openstack_provisioner::metrics::counter("provisioner_engine_commits_total", &[]);
    assert!(commits < 50, "saves were not grouped: {commits} commits");
    drop_db(store, &name).await;
}

// ---- worker + simulator stacks ----

pub(crate) mod stack {
    use std::collections::{HashMap, HashSet};
    use std::time::Duration;

    use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{FieldTable, ShortString};
    use openstack_provisioner::messages::{Event, EventType};
    use openstack_provisioner::openstack::config::CloudConfig;
    use openstack_provisioner::sim::{DEMO_PROJECT_ID, SimConfig, SimHandle, Simulator, Timings};
    use openstack_provisioner::startup::App;

    use crate::helpers::{ChildWorker, TestEnv, settings_env};

    /// A test's world: database + broker names (TestEnv), the simulator, and a queue bound to
    /// the events exchange that collects every completion event.
    pub struct Stack {
        pub env: TestEnv,
        pub sim: SimHandle,
        pub events_queue: String,
        /// Every event received so far, by event id.
        pub events: HashMap<uuid::Uuid, Event>,
    }

    pub fn fast() -> Timings {
        Timings::fast()
    }

    impl Stack {
        pub async fn new(timings: Timings) -> Stack {
            let mut env = TestEnv::new().await;
            let sim =
                Simulator::start(SimConfig { timings, ..SimConfig::for_tests() }).await.expect("simulator");
            let s = &mut env.settings;
            s.engine.enabled = true;
            s.engine.poll_interval_ms = 50;
            s.engine.backoff_base_ms = 50;
            s.engine.backoff_max_secs = 2;
            s.engine.lease_secs = 5;
            s.engine.project_rate = 0.0;
            s.engine.cloud_rate = 0.0;
            s.engine.max_crashes = 10;
            let events_queue = format!("{}events", env.prefix);
            env.channel
                .queue_declare(
                    ShortString::from(events_queue.as_str()),
                    QueueDeclareOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("declare the events queue");
            env.channel
                .queue_bind(
                    ShortString::from(events_queue.as_str()),
                    ShortString::from(env.names.events_exchange.as_str()),
                    ShortString::from("#"),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("bind the events queue");
            Stack { env, sim, events_queue, events: HashMap::new() }
        }

        /// OS_* variables that point a worker at this test's simulator.
        pub fn os_env(&self) -> Vec<(&'static str, String)> {
            vec![
                ("OS_AUTH_URL", self.sim.auth_url()),
                ("OS_USERNAME", "provisioner".into()),
                ("OS_PASSWORD", "provisioner".into()),
                ("OS_USER_DOMAIN_NAME", "Default".into()),
                ("OS_PROJECT_DOMAIN_NAME", "Default".into()),
                ("OS_PROJECT_NAME", "demo".into()),
                ("OS_REGION_NAME", "RegionOne".into()),
            ]
        }

        pub fn cloud(&self) -> CloudConfig {
            let vars: HashMap<String, String> =
                self.os_env().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            CloudConfig::from_vars(&vars).expect("cloud config").expect("a cloud is configured")
        }

        /// The worker in this process, as `provisioner run` builds it.
        pub async fn app(&self) -> App {
            App::build_with_cloud(self.env.settings.clone(), Some(self.cloud())).await.expect("build the app")
        }

        /// The real binary, pointed at this stack.
        pub fn child(&self, name: &str) -> ChildWorker {
            self.child_with(name, &[])
        }

        /// [`Stack::child`] with more environment variables (`OTEL_*`, say).
        pub fn child_with(&self, name: &str, extra: &[(&str, String)]) -> ChildWorker {
            let settings = &self.env.settings;
            let log = std::env::temp_dir().join(format!("{}{name}.log", settings.amqp.prefix));
            let file = std::fs::File::create(&log).expect("create the worker log");
            let e = &settings.engine;
            let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"));
            cmd.arg("run")
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("RUST_LOG", "info,lapin=error")
                .envs(settings_env(settings))
                .env("PROVISIONER_WORKER_ID", format!("{name}-{}", fastrand::u32(..)))
                .env("PROVISIONER_ENGINE_POLL_INTERVAL_MS", e.poll_interval_ms.to_string())
                .env("PROVISIONER_ENGINE_BACKOFF_BASE_MS", e.backoff_base_ms.to_string())
                .env("PROVISIONER_ENGINE_BACKOFF_MAX_SECS", e.backoff_max_secs.to_string())
                .env("PROVISIONER_ENGINE_LEASE_SECS", e.lease_secs.to_string())
                .env("PROVISIONER_ENGINE_PROJECT_RATE", e.project_rate.to_string())
                .env("PROVISIONER_ENGINE_CLOUD_RATE", e.cloud_rate.to_string())
                .env("PROVISIONER_ENGINE_MAX_CRASHES", e.max_crashes.to_string())
                .env("PROVISIONER_ENGINE_MAX_IN_FLIGHT", e.max_in_flight.to_string())
                .env("PROVISIONER_ENGINE_CLAIM_BATCH", e.claim_batch.to_string())
                .envs(self.os_env())
                .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
                .stdout(std::process::Stdio::null())
                .stderr(file)
                .kill_on_drop(true);
            let child = cmd.spawn().expect("start the provisioner binary");
            ChildWorker { child, log }
        }

        /// Takes what arrived on the events queue into `self.events`.
        pub async fn collect(&mut self) {
            for (body, _) in self.env.drain(&self.events_queue).await {
                let event: Event = serde_json::from_slice(&body).expect("an event.v1 body");
                self.events.insert(event.event_id, event);
            }
        }

        /// Waits until `n` distinct jobs have an event.
        pub async fn wait_events(&mut self, n: usize, timeout: Duration) {
            let deadline = tokio::time::Instant::now() + timeout;
            loop {
                self.collect().await;
                let jobs: HashSet<uuid::Uuid> = self.events.values().map(|e| e.job_id).collect();
                if jobs.len() >= n {
                    return;
                }
                if tokio::time::Instant::now() > deadline {
                    let states = self.env.store.count_jobs_by_state().await.unwrap_or_default();
                    panic!(
                        "only {} of {n} jobs have an event after {timeout:?}; jobs by state: {states:?}",
                        jobs.len()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        pub fn of_type(&self, t: EventType) -> Vec<&Event> {
            self.events.values().filter(|e| e.event_type == t).collect()
        }

        pub async fn cleanup(self) {
            let _ = self
                .env
                .channel
                .queue_delete(ShortString::from(self.events_queue.as_str()), QueueDeleteOptions::default())
                .await;
            self.sim.shutdown().await;
            self.env.cleanup().await;
        }
    }

    /// An order for the simulator's demo project (`volume`: with a 1 GB volume).
    pub fn order(order_id: &str, project: &str, volume: bool) -> Vec<u8> {
        let mut o = serde_json::json!({
            "order_id": order_id,
            "project_id": project,
            "server": {"name": format!("vm-{order_id}"), "flavor": "m1.tiny", "image": "cirros-0.6.2", "network": "private"}
        });
        if volume {
            o["volume"] = serde_json::json!({"size_gb": 1});
        }
        o.to_string().into_bytes()
    }

    pub fn orders(prefix: &str, n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| order(&format!("{prefix}-{i}"), DEMO_PROJECT_ID, i.is_multiple_of(2))).collect()
    }

    /// Waits until the simulator holds exactly what `n` completed jobs (half with a volume)
    /// should have left in the demo project, and nothing else.
    pub async fn assert_exact_resources(stack: &Stack, n: usize) {
        let control = stack.sim.control();
        let mut last = String::new();
        let ok = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let r = control.resources();
                let p = r.projects.get(DEMO_PROJECT_ID).cloned().unwrap_or_default();
                let servers: usize = p.servers.values().sum();
                let active = p.servers.get("ACTIVE").copied().unwrap_or(0);
                let ports: usize = p.ports.values().sum();
                let volumes: usize = p.volumes.values().sum();
                let in_use = p.volumes.get("in-use").copied().unwrap_or(0);
                last = format!("{p:?}");
                if servers == n
                    && active == n
                    && ports == n
                    && volumes == n / 2
                    && in_use == n / 2
                    && p.attached_volumes == n / 2
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            ok.is_ok(),
            "the simulator does not hold exactly {n} servers/ports and {} attached volumes: {last}",
            n / 2
        );
    }
}

use openstack_provisioner::messages::EventType;
use openstack_provisioner::sim::{ACME_PROJECT_ID, DEMO_PROJECT_ID, FaultRule, Timings};
use stack::{Stack, assert_exact_resources, fast, order, orders};

/// Runs an in-process worker until the returned token is cancelled.
pub(crate) async fn run_app(
    stack: &Stack,
) -> (tokio_util::sync::CancellationToken, tokio::task::JoinHandle<()>) {
    let app = stack.app().await;
    let token = app.shutdown_token();
    let handle = tokio::spawn(async move {
        app.run_until_stopped().await.expect("the worker stops cleanly");
    });
    (token, handle)
}

/// Waits until a child worker logged that it is ready.
pub(crate) async fn wait_ready(w: &crate::helpers::ChildWorker) {
    let ready = tokio::time::timeout(Duration::from_secs(60), async {
        while !w.log_text().contains("ready") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "the worker did not get ready: {}", w.log_text());
}

fn check_completed(stack: &Stack, n: usize) {
    let completed = stack.of_type(EventType::Completed);
    let jobs: std::collections::HashSet<_> = completed.iter().map(|e| e.job_id).collect();
    assert_eq!(jobs.len(), n, "distinct completed jobs");
    // One event id per job: a repeated event keeps its id.
    let per_job: std::collections::HashSet<_> = stack.events.values().map(|e| e.job_id).collect();
    assert_eq!(per_job.len(), stack.events.len(), "a job has two different events");
    for e in completed {
        let server = e.server.as_ref().unwrap_or_else(|| panic!("no server in {e:?}"));
        assert!(!server.id.is_empty() && server.status == "ACTIVE", "{e:?}");
        assert!(server.addresses.iter().any(|a| a.version == 4 && !a.ip.is_empty()), "no IP: {e:?}");
        assert!(e.port_id.is_some(), "{e:?}");
        let i: usize = e.order_id.rsplit('-').next().unwrap().parse().unwrap();
        if i.is_multiple_of(2) {
            let v = e.volume.as_ref().unwrap_or_else(|| panic!("no volume in {e:?}"));
            assert!(!v.id.is_empty() && v.device.is_some(), "{e:?}");
        } else {
            assert!(e.volume.is_none(), "{e:?}");
        }
        assert!(e.error.is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_orders_become_two_hundred_vms_and_events() {
    let mut stack = Stack::new(fast()).await;
    let (token, run) = run_app(&stack).await;
    stack.env.publish_all(orders("acc1", 200)).await;
    stack.wait_events(200, Duration::from_secs(120)).await;
    check_completed(&stack, 200);
    assert_exact_resources(&stack, 200).await;
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_three_times_leaves_exactly_one_of_everything() {
    let timings =
        Timings { boot_mean_ms: 300, boot_jitter_ms: 100, volume_create_ms: 150, attach_ms: 150, ..fast() };
    let mut stack = Stack::new(timings).await;
    let mut worker = stack.child("w0");
    wait_ready(&worker).await;
    stack.env.publish_all(orders("kill", 200)).await;
    for i in 1..=3 {
        // A random moment is the point of this test: kill wherever the worker happens to be.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(300..1500))).await;
        worker.kill().await;
        worker = stack.child(&format!("w{i}"));
    }
    stack.wait_events(200, Duration::from_secs(240)).await;
    check_completed(&stack, 200);
    assert_exact_resources(&stack, 200).await;
    worker.terminate(Duration::from_secs(30)).await;
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_then_three_workers_share_the_jobs_without_double_work() {
    let timings =
        Timings { boot_mean_ms: 200, boot_jitter_ms: 50, volume_create_ms: 100, attach_ms: 100, ..fast() };
    let mut stack = Stack::new(timings).await;
    // Small slots, so that no worker can swallow the whole backlog in one claim.
    stack.env.settings.engine.max_in_flight = 8;
    stack.env.settings.engine.claim_batch = 4;
    let mut w1 = stack.child("a");
    let mut w2 = stack.child("b");
    for w in [&w1, &w2] {
        wait_ready(w).await;
    }
    stack.env.publish_all(orders("multi", 120)).await;
    stack.wait_events(20, Duration::from_secs(120)).await;
    let mut w3 = stack.child("c");
    wait_ready(&w3).await;
    stack.wait_events(120, Duration::from_secs(180)).await;
    check_completed(&stack, 120);
    assert_exact_resources(&stack, 120).await;
    let actors: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT actor) FROM job_history WHERE actor LIKE 'a-%' OR actor LIKE 'b-%' OR actor LIKE 'c-%'")
        .fetch_one(stack.env.store.pool())
        .await
        .unwrap();
    assert!(actors >= 2, "only {actors} worker(s) did any work");
    for w in [&mut w1, &mut w2, &mut w3] {
        w.terminate(Duration::from_secs(30)).await;
    }
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_until_every_job_completes() {
    let mut stack = Stack::new(fast()).await;
    let control = stack.sim.control();
    let nova_create = |f: FaultRule| FaultRule {
        service: Some("compute".into()),
        method: Some("POST".into()),
        path: Some("/servers$".into()),
        ..f
    };
    control
        .add_fault(nova_create(FaultRule {
            status: Some(503),
            probability: Some(0.3),
            ..FaultRule::default()
        }))
        .unwrap();
    // On another call than the 503s, so that one of them cannot shadow it.
    control
        .add_fault(FaultRule {
            service: Some("volume".into()),
            method: Some("POST".into()),
            path: Some("/volumes$".into()),
            status: Some(429),
            retry_after: Some("1".into()),
            times: Some(1),
            ..FaultRule::default()
        })
        .unwrap();
    control
        .add_fault(FaultRule {
            service: Some("network".into()),
            method: Some("POST".into()),
            path: Some("/ports$".into()),
            status: Some(409),
            times: Some(5),
            ..FaultRule::default()
        })
        .unwrap();
    let (token, run) = run_app(&stack).await;
    stack.env.publish_all(orders("faults", 40)).await;
    stack.wait_events(40, Duration::from_secs(120)).await;
    check_completed(&stack, 40);
    assert_exact_resources(&stack, 40).await;
    let retried: i64 = sqlx::query_scalar(
        "SELECT COUNT(DISTINCT job_id) FROM job_history WHERE detail LIKE '%failed%retry in%'",
    )
    .fetch_one(stack.env.store.pool())
    .await
    .unwrap();
    assert!(retried >= 5, "retries are not visible in the history ({retried} jobs)");
    let rate_limited: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM job_history WHERE detail LIKE '%RateLimited%'")
            .fetch_one(stack.env.store.pool())
            .await
            .unwrap();
    assert!(rate_limited >= 1, "the 429 is not in the history");
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_and_server_errors_fail_cleanly_and_say_why() {
    let mut stack = Stack::new(fast()).await;
    let control = stack.sim.control();
    let (token, run) = run_app(&stack).await;
    // acme may run 2 instances: of 4 orders, 2 complete and 2 fail on quota.
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| order(&format!("acme-{i}"), ACME_PROJECT_ID, false)).collect();
    stack.env.publish_all(bodies).await;
    stack.wait_events(4, Duration::from_secs(60)).await;
    let failed = stack.of_type(EventType::Failed);
    assert_eq!(failed.len(), 2, "{:?}", stack.events);
    for e in &failed {
        let err = e.error.as_ref().unwrap();
        assert_eq!(err.class.as_str(), "quota_exceeded", "{e:?}");
        assert_eq!(err.step, "create_server", "{e:?}");
        assert!(!err.message.is_empty());
        assert!(e.server.is_none() && e.port_id.is_none());
    }
    // What the failed jobs created (their ports) is deleted.
    let acme = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let p = control.resources().projects.get(ACME_PROJECT_ID).cloned().unwrap_or_default();
            if p.ports.values().sum::<usize>() == 2 && p.servers.values().sum::<usize>() == 2 {
                return p;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(acme.is_ok(), "acme: {:?}", control.resources().projects.get(ACME_PROJECT_ID));

    // A server sent to ERROR: cloud_error with Nova's fault message, and cleaned up.
    control
        .add_fault(FaultRule {
            service: Some("compute".into()),
            method: Some("POST".into()),
            path: Some("/servers$".into()),
            server_error: Some("No valid host was found. There are not enough hosts available.".into()),
            times: Some(1),
            ..FaultRule::default()
        })
        .unwrap();
    stack.env.publish(&order("doomed-1", DEMO_PROJECT_ID, true)).await;
    stack.wait_events(5, Duration::from_secs(60)).await;
    let doomed = stack.events.values().find(|e| e.order_id == "doomed-1").unwrap().clone();
    assert_eq!(doomed.event_type, EventType::Failed);
    let err = doomed.error.unwrap();
    assert_eq!(err.class.as_str(), "cloud_error");
    assert_eq!(err.step, "wait_server");
    assert!(err.message.contains("No valid host"), "{}", err.message);
    let demo = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let p = control.resources().projects.get(DEMO_PROJECT_ID).cloned().unwrap_or_default();
            if p.ports.values().sum::<usize>() == 0 && p.servers.values().sum::<usize>() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(demo.is_ok(), "demo: {:?}", control.resources().projects.get(DEMO_PROJECT_ID));
    let history = stack.env.store.history_of(doomed.job_id).await.unwrap();
    assert!(history.iter().any(|h| h.to_state == "rolling_back"), "{history:?}");
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expiring_during_the_run_cause_no_failure() {
    let timings = Timings { token_lifetime_s: 1, boot_mean_ms: 300, boot_jitter_ms: 100, ..fast() };
    let mut stack = Stack::new(timings).await;
    let (token, run) = run_app(&stack).await;
    for wave in 0..3 {
        let bodies: Vec<Vec<u8>> = (0..10)
            .map(|i: usize| order(&format!("tok-{}", wave * 10 + i), DEMO_PROJECT_ID, i.is_multiple_of(2)))
            .collect();
        stack.env.publish_all(bodies).await;
        stack.wait_events((wave + 1) * 10, Duration::from_secs(60)).await;
        // Past the token lifetime before the next wave, and tokens revoked outright once.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        if wave == 1 {
            stack.sim.control().expire_tokens();
        }
    }
    assert_eq!(stack.of_type(EventType::Completed).len(), 30, "{:?}", stack.events);
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_crashing_its_worker_is_failed_not_cycled() {
    let mut stack = Stack::new(fast()).await;
    stack.env.settings.engine.max_crashes = 3;
    stack.env.publish(&order("crashy-1", DEMO_PROJECT_ID, false)).await;
    // Intake only: the job is queued. Then four workers "die" holding it: claims whose lease
    // expires without a release.
    let intake_only = {
        let mut s = stack.env.settings.clone();
        s.engine.enabled = false;
        openstack_provisioner::startup::App::build(s).await.expect("intake app")
    };
    let store = stack.env.store.clone();
    let queued = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if store.count_jobs().await.unwrap() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(queued.is_ok(), "the order did not become a job");
    intake_only.stop().await.expect("stop the intake app");
    for _ in 0..4 {
        let claimed = store.claim_due("doomed-worker", Duration::from_millis(1), 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (token, run) = run_app(&stack).await;
    stack.wait_events(1, Duration::from_secs(30)).await;
    let e = stack.events.values().next().unwrap().clone();
    assert_eq!(e.event_type, EventType::Failed, "{e:?}");
    let err = e.error.unwrap();
    assert_eq!(err.class.as_str(), "internal");
    assert!(err.message.contains("without progress"), "{}", err.message);
    assert_eq!(store.job(e.job_id).await.unwrap().unwrap().state, JobState::Failed);
    token.cancel();
    run.await.unwrap();
    stack.cleanup().await;
}
