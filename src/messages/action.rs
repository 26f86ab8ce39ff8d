//! Order action v1 (`schemas/order-action.v1.json`): billing changes a service that an earlier
//! create order made: suspend, unsuspend, resize or terminate it.
//!
//! Published on `billing.orders` with routing key `order.<action>`; intake checks that the key
//! and the body agree ([`Action::routing_key`]), that the schema holds, and that the target
//! service exists, and dead-letters the action otherwise.

use serde::{Deserialize, Serialize};

/// What an action order asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Suspend,
    Unsuspend,
    Resize,
    Terminate,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Suspend, Action::Unsuspend, Action::Resize, Action::Terminate];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Suspend => "suspend",
            Action::Unsuspend => "unsuspend",
            Action::Resize => "resize",
            Action::Terminate => "terminate",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The routing key billing publishes this action with: `order.<action>`.
    pub fn routing_key(self) -> &'static str {
        match self {
            Action::Suspend => "order.suspend",
            Action::Unsuspend => "order.unsuspend",
            Action::Resize => "order.resize",
            Action::Terminate => "order.terminate",
        }
    }

    /// The action a routing key names, if it names one.
    pub fn from_routing_key(key: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.routing_key() == key)
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionOrder {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u8>,
    /// The idempotency key of this action.
    pub order_id: String,
    pub action: Action,
    /// The create order that made the service.
    pub target_order_id: String,
    /// Resize only: the new flavor, by name or id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flavor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ActionOrder {
    /// Checks of meaning that the schema cannot express.
    pub fn check_meaning(&self) -> Result<(), String> {
        for (field, value) in [("/order_id", &self.order_id), ("/target_order_id", &self.target_order_id)] {
            if value.chars().any(|c| !(' '..='~').contains(&c)) {
                return Err(format!("{field}: only printable ASCII characters are allowed"));
            }
        }
        if self.order_id == self.target_order_id {
            return Err("/order_id: an action needs its own order id, not the create order's".into());
        }
        Ok(())
    }
}
