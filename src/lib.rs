//! openstack-provisioner: billing orders in, running OpenStack VMs out, each exactly once.
//!
//! The data flow, one module per stage:
//!
//! ```text
//!  billing ──▶ RabbitMQ ──▶ amqp::intake ──▶ store (jobs, MySQL) ──▶ engine ──▶ openstack ──▶ cloud
//!  (order.v1)  billing.orders   validate        idempotent on         claims, steps,   Keystone, Glance,
//!                               (messages)      order_id, then ack    retries, undo    Neutron, Nova, Cinder
//!                                                      │
//!                 provisioning.events ◀── amqp::publisher ◀── store::outbox (event.v1, same tx as final state)
//! ```
//!
//! - [`config`]: settings from defaults, file and `PROVISIONER_*` env; [`telemetry`]: tracing.
//! - [`messages`]: the versioned wire types on the broker (order, event, admin command) and
//!   their JSON Schemas.
//! - [`amqp`]: connection and topology, the intake and admin consumers, the confirmed publisher.
//! - [`store`]: the only module with SQL: jobs, claims and leases, history, outbox, status.
//! - [`engine`]: the persisted state machine that drives a job through its steps.
//! - [`openstack`]: the cloud client (Keystone session, one module per service, one error taxonomy).
//! - [`ops`]: what operators use: job status for the CLI, admin commands, the demo.
//! - [`http`]: status API, health and metrics.
//! - [`secrets`]: secrets at rest (an order's password), sealed with AES-256-GCM.
//! - [`sim`]: the OpenStack simulator, sharing the client's wire types so they cannot drift.
//! - [`startup`]: builds the running application from settings; `main` and the tests use it.

pub mod amqp;
pub mod cli;
pub mod config;
pub mod engine;
pub mod http;
pub mod messages;
pub mod metrics;
pub mod openstack;
pub mod ops;
pub mod secrets;
pub mod sim;
pub mod startup;
pub mod store;
pub mod telemetry;
