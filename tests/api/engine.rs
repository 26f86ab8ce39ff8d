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
        order_body: body,
        order_digest: "0".repeat(64),
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
