//! Admin command v1 (`schemas/admin-command.v1.json`): an operator asks to replay or cancel a job.
//!
//! Published on exchange `provisioner.admin` with routing key `admin.replay` or `admin.cancel`.
//! Who sent it is not in the body: it is the AMQP `user_id` property, which RabbitMQ verifies
//! against the publishing connection's user, checked by the admin consumer against an allow-list.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminCommand {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    pub command: AdminCommandKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminCommandKind {
    Replay,
    Cancel,
}

impl AdminCommandKind {
    pub fn routing_key(self) -> &'static str {
        match self {
            AdminCommandKind::Replay => "admin.replay",
            AdminCommandKind::Cancel => "admin.cancel",
        }
    }
}

/// Which job a command is about: the schema requires exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminTarget {
    Job(Uuid),
    Order(String),
}

impl AdminCommand {
    pub fn target(&self) -> Option<AdminTarget> {
        match (&self.job_id, &self.order_id) {
            (Some(id), None) => Some(AdminTarget::Job(*id)),
            (None, Some(order)) => Some(AdminTarget::Order(order.clone())),
            _ => None,
        }
    }

    /// Builds a command for a job given as a job id (a UUID) or else an order id.
    pub fn new(command: AdminCommandKind, id: &str, reason: Option<String>) -> Self {
        let (job_id, order_id) = match Uuid::parse_str(id) {
            Ok(uuid) => (Some(uuid), None),
            Err(_) => (None, Some(id.to_string())),
        };
        AdminCommand { version: Some(1), command, job_id, order_id, reason }
    }
}
