//! Tests: intake (issue 2). Orders published as billing does, against the real MariaDB and
//! RabbitMQ, each test in its own database and name prefix: exactly one `queued` job per
//! distinct order, duplicates absorbed, invalid messages dead-lettered with a readable reason,
//! nothing left unacked; and the same through a SIGKILL of the worker, a database outage, a
//! broker outage and a graceful shutdown with a batch in hand.

use std::time::Duration;

use base64::Engine as _;
use openstack_provisioner::amqp::intake::{
    DIFFERING_RESENDS, ERROR_AT_HEADER, ERROR_HEADER, ERROR_KIND_HEADER,
};
use openstack_provisioner::metrics;

use crate::helpers::{TcpProxy, TestEnv, WAIT, header_text, valid_order, wait_until};

/// Invalid message number `i`, of one of the kinds an operator must be able to tell apart, and
/// the reason kind it must be dead-lettered with.
fn invalid_message(i: usize) -> (Vec<u8>, &'static str) {
    let good = || -> serde_json::Value { serde_json::from_slice(&valid_order(&format!("BAD-{i}"))).unwrap() };
    match i % 10 {
        0 => (vec![0xff, 0xfe, b'{', 0x80], "not_utf8"),
        1 => (format!("{{\"order_id\": \"BAD-{i}\", ").into_bytes(), "not_json"),
        2 => {
            let mut v = good();
            v["server"].as_object_mut().unwrap().remove("flavor");
            (v.to_string().into_bytes(), "schema")
        }
        3 => {
            let mut v = good();
            v["server"]["falvor"] = "m1.small".into();
            (v.to_string().into_bytes(), "schema")
        }
        4 => {
            let mut v = good();
            v["server"]["metadata"]["blob"] = "x".repeat(300 * 1024).into();
            (v.to_string().into_bytes(), "too_large")
        }
        5 => {
            let mut v = good();
            v["server"]["user_data"] = "abcde".into(); // the schema's alphabet, not valid base64
            (v.to_string().into_bytes(), "meaning")
        }
        6 => {
            let mut v = good();
            v["server"]["user_data"] =
                base64::engine::general_purpose::STANDARD.encode(vec![b'#'; 65 * 1024]).into();
            (v.to_string().into_bytes(), "schema")
        }
        7 => {
            let mut v = good();
            v["volume"]["size_gb"] = 0.into();
            (v.to_string().into_bytes(), "schema")
        }
        8 => (b"[]".to_vec(), "schema"),
        _ => (Vec::new(), "not_json"),
    }
}

/// With the worker stopped (no consumer, its channel closed), whatever it left unacked is back
/// in the queue as ready: so "no ready message and no consumer" means nothing was left unacked.
/// (The broker forgets a quorum queue's consumer a moment after the channel closed: wait for it.)
async fn assert_nothing_left(env: &TestEnv) {
    wait_until(Duration::from_secs(10), "the stopped worker's consumer is gone", || async {
        env.queue_counts(&env.names.orders_queue).await.1 == 0
    })
    .await;
    let (ready, _) = env.queue_counts(&env.names.orders_queue).await;
    assert_eq!(ready, 0, "orders back in the queue after the worker stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_queues_each_order_once_and_dead_letters_invalid_ones() {
    let env = TestEnv::new().await;
    let mut bodies: Vec<Vec<u8>> = (0..1000).map(|i| valid_order(&format!("B-{i:06}"))).collect();
    // 100 re-sent duplicates (same body), 50 invalid messages of ten kinds; shuffled, so that a
    // resend can fall in the same batch as its original.
    bodies.extend((0..100).map(|i| valid_order(&format!("B-{:06}", i * 7))));
    let invalid: Vec<_> = (0..50).map(invalid_message).collect();
    bodies.extend(invalid.iter().map(|(b, _)| b.clone()));
    fastrand::shuffle(&mut bodies);

    let app = env.spawn_app().await;
    env.publish_all(&bodies).await;
    wait_until(WAIT, "1,000 jobs and 50 dead letters", || async {
        env.count_jobs().await == 1000 && env.queue_counts(&env.names.dead_queue).await.0 == 50
    })
    .await;
    wait_until(WAIT, "every delivery settled", || async {
        metrics::counter_sum(metrics::INTAKE_ORDERS, &[]) == 1150
    })
    .await;
    app.stop().await.expect("clean stop");

    assert_eq!(env.count_jobs_where("state = 'queued' AND step = 'resolve' AND kind = 'create'").await, 1000);
    // A resend in the same batch as its original is deduped in memory, the others in the DB.
    assert!(env.count_jobs_where("resends > 0").await <= 100);
    assert_eq!(metrics::counter(metrics::INTAKE_ORDERS, &[("outcome", "queued")]), 1000);
    assert_eq!(metrics::counter(metrics::INTAKE_ORDERS, &[("outcome", "duplicate")]), 100);
    assert_eq!(metrics::counter(metrics::INTAKE_ORDERS, &[("outcome", "rejected")]), 50);
    assert_eq!(metrics::counter(DIFFERING_RESENDS, &[]), 0);
    assert_nothing_left(&env).await;

    let dead = env.drain(&env.names.dead_queue).await;
    assert_eq!(dead.len(), 50);
    let mut kinds: Vec<String> = Vec::new();
    for (body, headers) in &dead {
        let reason = header_text(headers, ERROR_HEADER).expect("reason header");
        assert!(reason.len() > 10 && !reason.contains('\u{fffd}'), "unreadable reason {reason:?}");
        let at = header_text(headers, ERROR_AT_HEADER).expect("time header");
        at.parse::<chrono::DateTime<chrono::Utc>>().expect("RFC 3339 time");
        let kind = header_text(headers, ERROR_KIND_HEADER).expect("kind header");
        let expected =
            invalid.iter().find(|(b, _)| b == body).map(|(_, k)| *k).expect("the original body, unchanged");
        assert_eq!(kind, expected, "{reason}");
        if kind == "schema" && String::from_utf8_lossy(body).contains("falvor") {
            assert!(reason.contains("falvor"), "the reason names the unknown field: {reason}");
        }
        assert!(!reason.contains("IyMj"), "user_data is never echoed: {reason}");
        kinds.push(kind);
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_counts_and_keeps_the_first_of_a_resend_that_differs() {
    let env = TestEnv::new().await;
    let app = env.spawn_app().await;
    let first = valid_order("B-DIFF-1");
    env.publish(&first).await;
    wait_until(WAIT, "the first order is queued", || async { env.count_jobs().await == 1 }).await;
    let mut changed: serde_json::Value = serde_json::from_slice(&first).unwrap();
    changed["server"]["flavor"] = "m1.large".into();
    let changed = changed.to_string().into_bytes();
    // A resend in a later batch; then two different bodies of one new order, most likely in
    // the same batch (either way the first one wins).
    env.publish_all([changed.clone(), valid_order("B-DIFF-2")]).await;
    let mut other: serde_json::Value = serde_json::from_slice(&valid_order("B-DIFF-3")).unwrap();
    let a = other.to_string().into_bytes();
    other["server"]["image"] = "ubuntu-24.04".into();
    env.publish_all([a.clone(), other.to_string().into_bytes()]).await;
    wait_until(WAIT, "all settled", || async { metrics::counter_sum(metrics::INTAKE_ORDERS, &[]) == 5 })
        .await;
    app.stop().await.expect("clean stop");

    assert_eq!(env.count_jobs().await, 3);
    assert_eq!(metrics::counter(metrics::INTAKE_ORDERS, &[("outcome", "duplicate")]), 2);
    assert_eq!(metrics::counter(DIFFERING_RESENDS, &[]), 2);
    let (body, digest): (String, String) =
        sqlx::query_as("SELECT order_body, order_digest FROM jobs WHERE order_id = 'B-DIFF-1'")
            .fetch_one(env.store.pool())
            .await
            .unwrap();
    assert_eq!(body.as_bytes(), &first[..], "the first body is kept");
    assert_eq!(digest, openstack_provisioner::amqp::intake::sha256_hex(&first));
    let body3: String = sqlx::query_scalar("SELECT order_body FROM jobs WHERE order_id = 'B-DIFF-3'")
        .fetch_one(env.store.pool())
        .await
        .unwrap();
    assert_eq!(body3.as_bytes(), &a[..], "within a batch, the first one wins");
    assert_nothing_left(&env).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_survives_sigkill_of_the_worker() {
    let mut env = TestEnv::new().await;
    // Small batches and prefetch: the worker is killed with work in hand.
    env.settings.intake.batch_size = 10;
    env.settings.intake.prefetch = 40;
    let bodies: Vec<Vec<u8>> = (0..1000).map(|i| valid_order(&format!("K-{i:06}"))).collect();
    let resends: Vec<Vec<u8>> = (0..100).map(|i| valid_order(&format!("K-{:06}", i * 9))).collect();
    let invalid: Vec<Vec<u8>> = (0..50).map(|i| invalid_message(i).0).collect();

    let mut worker = env.worker(&env.settings, "first");
    env.publish_all(bodies[..600].iter().chain(&resends[..50]).chain(&invalid[..25])).await;
    wait_until(WAIT, "the first worker has queued some jobs", || async { env.count_jobs().await >= 100 })
        .await;
    worker.kill().await;
    let at_kill = env.count_jobs().await;
    assert!(at_kill < 1000, "killed in the middle: {at_kill} jobs");

    env.publish_all(bodies[600..].iter().chain(&resends[50..]).chain(&invalid[25..])).await;
    let mut worker = env.worker(&env.settings, "second");
    wait_until(WAIT, "1,000 jobs and every invalid message dead-lettered after the restart", || async {
        env.count_jobs().await == 1000
            && env.queue_counts(&env.names.orders_queue).await.0 == 0
            && env.queue_counts(&env.names.dead_queue).await.0 >= 50
    })
    .await;
    let status = worker.terminate(Duration::from_secs(20)).await;
    assert!(status.success(), "the worker exits cleanly on SIGTERM: {status:?}\n{}", worker.log_text());
    assert!(worker.log_text().contains("ready"), "{}", worker.log_text());

    assert_eq!(env.count_jobs().await, 1000);
    assert_eq!(env.count_jobs_where("state = 'queued'").await, 1000);
    // A dead letter may have been published before the kill and its original redelivered after:
    // at least every invalid message is there, and nothing else.
    let dead = env.drain(&env.names.dead_queue).await;
    assert!(dead.len() >= 50, "{} dead letters", dead.len());
    assert!(dead.iter().all(|(b, h)| invalid.contains(b) && header_text(h, ERROR_HEADER).is_some()));
    assert_nothing_left(&env).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_survives_a_database_outage() {
    let mut env = TestEnv::new().await;
    env.settings.intake.batch_size = 50;
    let db = TcpProxy::start(crate::helpers::MYSQL_ADDR).await;
    let app = openstack_provisioner::startup::App::build(env.settings_via(Some(&db), None)).await.unwrap();

    let bodies: Vec<Vec<u8>> = (0..1000).map(|i| valid_order(&format!("D-{i:06}"))).collect();
    env.publish_all(&bodies[..400]).await;
    wait_until(WAIT, "some jobs", || async { env.count_jobs().await >= 100 }).await;
    db.cut();
    // The outage lasts while these are published and a little after.
    env.publish_all(bodies[400..].iter().chain(&bodies[..50])).await;
    let during = env.count_jobs().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(env.count_jobs().await, during, "nothing is committed while the database is cut off");
    db.restore();
    wait_until(WAIT, "1,000 jobs after the outage", || async { env.count_jobs().await == 1000 }).await;
    wait_until(WAIT, "the queue drained", || async {
        env.queue_counts(&env.names.orders_queue).await.0 == 0
    })
    .await;
    app.stop().await.expect("clean stop");

    assert_eq!(env.count_jobs().await, 1000);
    // A commit whose answer was lost in the cut is retried and then counts its orders as
    // duplicates: at least the 50 resends.
    assert!(metrics::counter(metrics::INTAKE_ORDERS, &[("outcome", "duplicate")]) >= 50);
    assert_eq!(env.queue_counts(&env.names.dead_queue).await.0, 0, "nothing dead-lettered");
    assert_nothing_left(&env).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_reconnects_after_losing_the_broker() {
    let env = TestEnv::new().await;
    let mq = TcpProxy::start(crate::helpers::AMQP_ADDR).await;
    let mut settings = env.settings_via(None, Some(&mq));
    settings.intake.batch_size = 20;
    settings.intake.prefetch = 100;
    let app = openstack_provisioner::startup::App::build(settings).await.unwrap();

    let bodies: Vec<Vec<u8>> = (0..1000).map(|i| valid_order(&format!("R-{i:06}"))).collect();
    env.publish_all(&bodies[..500]).await;
    wait_until(WAIT, "some jobs", || async { env.count_jobs().await >= 50 }).await;
    mq.cut();
    env.publish_all(&bodies[500..]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    mq.restore();
    wait_until(WAIT, "1,000 jobs after the broker came back", || async { env.count_jobs().await == 1000 })
        .await;
    wait_until(WAIT, "the queue drained", || async {
        env.queue_counts(&env.names.orders_queue).await.0 == 0
    })
    .await;
    app.stop().await.expect("clean stop");
    assert_eq!(env.count_jobs().await, 1000);
    assert_nothing_left(&env).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_graceful_shutdown_settles_the_batch_in_hand() {
    let mut env = TestEnv::new().await;
    // A batch that would wait a minute for more orders: only shutdown can settle it.
    env.settings.intake.batch_size = 1000;
    env.settings.intake.prefetch = 1000;
    env.settings.intake.batch_linger_ms = 60_000;
    let app = env.spawn_app().await;
    env.publish_all((0..300).map(|i| valid_order(&format!("G-{i:06}")))).await;
    wait_until(WAIT, "all 300 delivered to the worker", || async {
        env.queue_counts(&env.names.orders_queue).await.0 == 0
    })
    .await;
    assert_eq!(env.count_jobs().await, 0, "the batch is still in hand");
    app.stop().await.expect("clean stop");
    assert_eq!(env.count_jobs().await, 300, "the batch in hand was committed at shutdown");
    assert_nothing_left(&env).await;
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_order_submit_publishes_files_as_billing_does() {
    let env = TestEnv::new().await;
    let dir = std::env::temp_dir().join(format!("{}submit", env.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("a.json");
    let b = dir.join("b.json");
    std::fs::write(&a, valid_order("S-1")).unwrap();
    std::fs::write(&b, b"{not json").unwrap();
    let run = |files: Vec<std::path::PathBuf>| {
        let env_vars = crate::helpers::settings_env(&env.settings);
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_provisioner"))
                .args(["order", "submit"])
                .args(files)
                .envs(env_vars)
                .output()
                .await
                .unwrap()
        }
    };
    let missing = dir.join("missing.json");
    let out = run(vec![a.clone(), missing.clone()]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.json"), "{err}");
    assert_eq!(env.queue_counts(&env.names.orders_queue).await.0, 0, "nothing published");

    let out = run(vec![a.clone(), b.clone()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let app = env.spawn_app().await;
    wait_until(WAIT, "one job, one dead letter", || async {
        env.count_jobs().await == 1 && env.queue_counts(&env.names.dead_queue).await.0 == 1
    })
    .await;
    app.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_works_on_a_classic_queue_too() {
    let mut env = TestEnv::new().await;
    // TestEnv declared quorum queues under its prefix; a classic setup needs its own prefix.
    let names = openstack_provisioner::amqp::Names::new(&format!("{}c.", env.prefix));
    env.settings.amqp.prefix = names.prefix.clone();
    env.settings.amqp.queue_type = openstack_provisioner::config::QueueType::Classic;
    let app = env.spawn_app().await;
    let channel = env.amqp.create_channel().await.unwrap();
    channel.confirm_select(Default::default()).await.unwrap();
    for i in 0..50 {
        let body = valid_order(&format!("C-{i:03}"));
        let confirm =
            openstack_provisioner::amqp::submit::publish_order(&channel, &names, &body).await.unwrap();
        openstack_provisioner::amqp::submit::confirmed(confirm, "order").await.unwrap();
    }
    let confirm =
        openstack_provisioner::amqp::submit::publish_order(&channel, &names, b"nope").await.unwrap();
    openstack_provisioner::amqp::submit::confirmed(confirm, "order").await.unwrap();
    wait_until(WAIT, "50 jobs and one dead letter", || async {
        env.count_jobs().await == 50 && env.queue_counts(&names.dead_queue).await.0 == 1
    })
    .await;
    app.stop().await.expect("clean stop");
    for q in names.queues() {
        let _ = channel.queue_delete(q.into(), Default::default()).await;
    }
    for e in names.exchanges() {
        let _ = channel.exchange_delete(e.into(), Default::default()).await;
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_store_migrates_from_several_workers_at_once() {
    let env = TestEnv::new().await;
    // A fresh database, migrated by four workers starting together (MariaDB: our own lock).
    let mut settings = env.settings.database.clone();
    let db = format!("prov_t_{}", uuid::Uuid::new_v4().simple());
    settings.url = openstack_provisioner::config::SecretUrl::new(crate::helpers::mysql_url(
        crate::helpers::MYSQL_ADDR,
        &db,
    ));
    let connects = (0..4).map(|_| openstack_provisioner::store::Store::connect(&settings));
    let stores = futures_util::future::join_all(connects).await;
    for store in &stores {
        let store = store.as_ref().expect("every worker connects and migrates");
        assert_eq!(store.count_jobs().await.unwrap(), 0);
    }
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
        .fetch_one(stores[0].as_ref().unwrap().pool())
        .await
        .unwrap();
    assert!(applied >= 2, "{applied} migrations applied");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE `{db}`")))
        .execute(stores[0].as_ref().unwrap().pool())
        .await
        .unwrap();
    for store in stores.into_iter().flatten() {
        store.close().await;
    }
    env.cleanup().await;
}
