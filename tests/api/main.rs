//! The integration tests: one binary, one module per capability, all against the real MariaDB
//! and RabbitMQ (each test in its own database and AMQP name prefix) and our OpenStack simulator.

mod boot_volume;
mod console;
mod contracts;
mod credentials;
mod deploy;
mod engine;
mod helpers;
mod intake;
mod lifecycle;
mod network;
mod nova;
mod openstack;
mod ops;
mod placement;
mod preflight;
mod reconcile;
mod regions;
mod sim;
mod sim_cli;
mod tenants;
mod traces;
