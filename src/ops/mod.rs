//! What operators use every day, on top of the engine: job, service and tenant status for the
//! CLI (`provisioner jobs|services|tenants show|list`), and the one-command demo.
//!
//! Status is read from the database through [`crate::store::status`]; this module only turns it
//! into tables for people or JSON for scripts. Admin commands (replay, cancel) travel over the
//! broker: see [`crate::amqp::admin`] and [`crate::store::admin`].

pub mod commands;
pub mod demo;
pub mod jobs;
pub mod preflight;
pub mod reconcile;

pub use commands::{send_admin, submit_orders};
pub use jobs::{jobs_command, services_command, tenants_command};
