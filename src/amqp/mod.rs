//! RabbitMQ: connection and topology, the intake consumer, the admin consumer, and the
//! confirmed publisher that relays the outbox.
//!
//! Names are a contract with billing and operators (see README): exchange `billing.orders`
//! (topic) → queue `provisioner.orders` (bound `order.#`, quorum by default) dead-lettering to
//! `provisioner.dlx` → `provisioner.dead`; events on `provisioning.events`; admin commands on
//! `provisioner.admin`. The worker declares all of it idempotently at startup and after every
//! reconnect.

use std::path::PathBuf;

use crate::cli::{AdminArgs, CliResult};
use crate::config::Settings;
use crate::messages::AdminCommandKind;

/// `provisioner order submit FILE...`: publishes each file as billing would.
pub async fn submit_orders(_settings: &Settings, _files: &[PathBuf]) -> CliResult {
    Err("`order submit` is not implemented yet".into())
}

/// `provisioner replay|cancel ID`: publishes an admin command.
pub async fn send_admin(_settings: &Settings, _kind: AdminCommandKind, _args: &AdminArgs) -> CliResult {
    Err("admin commands are not implemented yet".into())
}
