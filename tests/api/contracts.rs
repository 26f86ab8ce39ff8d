//! Tests: contracts with billing and operators, seen from outside the crate. The schema files
//! are valid JSON Schemas; every example order goes through the real intake to a job, and an
//! example of another message published as an order is dead-lettered; the broker topology has
//! the contract's names and types and its declaration is idempotent. (That every example
//! validates and round-trips through the Rust types is a unit test in `messages`.)

use lapin::options::QueueDeclareOptions;
use lapin::types::ShortString;
use openstack_provisioner::amqp::{Names, topology};
use openstack_provisioner::config::QueueType;
use openstack_provisioner::messages::Order;

use crate::helpers::{TestEnv, WAIT, wait_until};

fn schema_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas")
}

fn files(dir: &std::path::Path, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn contracts_schema_files_are_json_schemas() {
    let schemas = files(&schema_dir(), "");
    let names: Vec<&str> = schemas.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "admin-command.v1.json",
            "event.v1.json",
            "order-action.v1.json",
            "order.v1.json",
            "tenant-order.v1.json"
        ]
    );
    for (name, text) in schemas {
        let value: serde_json::Value =
            serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(value.get("$schema").is_some(), "{name} names its draft");
        jsonschema::validator_for(&value).unwrap_or_else(|e| panic!("{name} does not compile: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_example_orders_are_accepted_by_intake() {
    let env = TestEnv::new().await;
    let orders = files(&schema_dir().join("examples"), "order-");
    let others =
        [files(&schema_dir().join("examples"), "admin-"), files(&schema_dir().join("examples"), "event-")]
            .concat();
    assert!(!orders.is_empty() && !others.is_empty());
    let app = env.spawn_app().await;
    env.publish_all(orders.iter().chain(&others).map(|(_, body)| body)).await;
    wait_until(WAIT, "every example settled", || async {
        env.count_jobs().await == orders.len() as i64
            && env.queue_counts(&env.names.dead_queue).await.0 == others.len() as u32
    })
    .await;
    app.stop().await.expect("clean stop");
    for (name, body) in &orders {
        let order: Order = serde_json::from_slice(body).unwrap();
        let (state, stored): (String, String) =
            sqlx::query_as("SELECT state, order_body FROM jobs WHERE order_id = ? AND project_id = ?")
                .bind(&order.order_id)
                .bind(&order.project_id)
                .fetch_one(env.store.pool())
                .await
                .unwrap_or_else(|e| panic!("{name}: no job ({e})"));
        assert_eq!(state, "queued", "{name}");
        assert_eq!(stored.as_bytes(), &body[..], "{name}: the order is stored as received");
    }
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_topology_has_the_contract_names_and_is_idempotent() {
    let env = TestEnv::new().await;
    // TestEnv declared it once; a second and third declaration change nothing.
    topology::declare(&env.channel, &env.names, QueueType::Quorum).await.unwrap();
    topology::declare(&env.channel, &env.names, QueueType::Quorum).await.unwrap();
    let bare = Names::new("");
    for (ours, contract) in env.names.queues().iter().zip(bare.queues()) {
        assert_eq!(*ours, format!("{}{contract}", env.prefix));
    }
    assert_eq!(bare.queues(), ["provisioner.orders", "provisioner.dead", "provisioner.admin"]);
    assert_eq!(
        bare.exchanges(),
        ["billing.orders", "provisioner.dlx", "provisioning.events", "provisioner.admin"]
    );
    // The orders queue is a quorum queue: declaring it classic is refused by the broker.
    let ch = env.amqp.create_channel().await.unwrap();
    let err = ch
        .queue_declare(
            ShortString::from(env.names.orders_queue.as_str()),
            QueueDeclareOptions::durable(),
            topology::queue_arguments(QueueType::Classic, Some(&env.names.dlx)),
        )
        .await
        .expect_err("a classic declaration of the quorum queue");
    assert!(err.to_string().contains("PRECONDITION_FAILED"), "{err}");
    env.cleanup().await;
}

/// The README's configuration table lists every setting the worker reads, so it cannot fall
/// behind the code.
#[test]
fn contracts_readme_lists_every_environment_variable() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let missing: Vec<&str> = openstack_provisioner::config::ENV_VARS
        .iter()
        .map(|(var, _)| *var)
        .filter(|var| !readme.contains(&format!("`{var}`")))
        .collect();
    assert!(missing.is_empty(), "README.md does not document {missing:?}");
}

/// docs/operations.md's metrics table lists every metric the worker declares, so an operator's
/// dashboard can rely on it.
#[test]
fn contracts_operations_doc_lists_every_metric() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md");
    let missing: Vec<&str> = openstack_provisioner::metrics::DEFS
        .iter()
        .map(|d| d.name)
        .filter(|name| !doc.contains(&format!("| `{name}` |")))
        .collect();
    assert!(missing.is_empty(), "docs/operations.md does not document {missing:?}");
}
