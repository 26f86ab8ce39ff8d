//! JSON Schema validation of raw message bodies, with reasons an operator can read.
//!
//! The schemas are compiled into the binary (`include_str!`) so that a deployed worker cannot
//! disagree with the schemas it was tested against. Validation runs before serde so that a
//! rejected message says *which* field is wrong (`/server/flavor: ...`), not just "invalid".

use std::sync::Arc;

use serde_json::Value;

use super::{Action, ActionOrder, AdminCommand, Order, TenantAction, TenantOrder};

pub const ORDER_V1: &str = include_str!("../../schemas/order.v1.json");
pub const ORDER_ACTION_V1: &str = include_str!("../../schemas/order-action.v1.json");
pub const EVENT_V1: &str = include_str!("../../schemas/event.v1.json");
pub const ADMIN_COMMAND_V1: &str = include_str!("../../schemas/admin-command.v1.json");
pub const TENANT_ORDER_V1: &str = include_str!("../../schemas/tenant-order.v1.json");

/// The routing key of a create order.
pub const CREATE_KEY: &str = "order.create";

/// What billing published, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    Create(Box<Order>),
    Action(ActionOrder),
    Tenant(Box<TenantOrder>),
}

impl Incoming {
    pub fn order_id(&self) -> &str {
        match self {
            Incoming::Create(o) => &o.order_id,
            Incoming::Action(a) => &a.order_id,
            Incoming::Tenant(t) => &t.order_id,
        }
    }
}

/// Largest message body accepted on any input queue; bigger ones are dead-lettered unread.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// At most this many schema violations are listed in a rejection reason.
const MAX_REASONS: usize = 8;

/// Why a message was refused. `Display` gives one line for logs and the `x-provisioner-error`
/// header of the dead-lettered copy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("body is {size} bytes, over the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not UTF-8: {0}")]
    NotUtf8(String),
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("schema {schema}: {}", .reasons.join("; "))]
    Schema { schema: &'static str, reasons: Vec<String> },
    #[error("{0}")]
    Meaning(String),
    /// The routing key names no kind of order, or another one than the body.
    #[error("{0}")]
    RoutingKey(String),
    /// An action whose target service does not exist.
    #[error("{0}")]
    UnknownTarget(String),
}

impl Rejection {
    /// A short machine-readable kind, used as a metric label and a header.
    pub fn kind(&self) -> &'static str {
        match self {
            Rejection::TooLarge { .. } => "too_large",
            Rejection::NotUtf8(_) => "not_utf8",
            Rejection::NotJson(_) => "not_json",
            Rejection::Schema { .. } => "schema",
            Rejection::Meaning(_) => "meaning",
            Rejection::RoutingKey(_) => "routing_key",
            Rejection::UnknownTarget(_) => "unknown_target",
        }
    }
}

/// The compiled schemas; cheap to clone and share across tasks.
#[derive(Clone)]
pub struct Schemas {
    inner: Arc<Compiled>,
}

struct Compiled {
    order: jsonschema::Validator,
    action: jsonschema::Validator,
    event: jsonschema::Validator,
    admin: jsonschema::Validator,
    tenant: jsonschema::Validator,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Schemas(order.v1, order-action.v1, tenant-order.v1, event.v1, admin-command.v1)")
    }
}

fn compile(name: &str, text: &str) -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("embedded schema {name} is not JSON: {e}"));
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap_or_else(|e| panic!("embedded schema {name} does not compile: {e}"))
}

impl Default for Schemas {
    fn default() -> Self {
        Self::new()
    }
}

impl Schemas {
    /// Compiles the embedded schemas. They are tested, so a failure here is a build defect.
    pub fn new() -> Self {
        Schemas {
            inner: Arc::new(Compiled {
                order: compile("order.v1.json", ORDER_V1),
                action: compile("order-action.v1.json", ORDER_ACTION_V1),
                event: compile("event.v1.json", EVENT_V1),
                admin: compile("admin-command.v1.json", ADMIN_COMMAND_V1),
                tenant: compile("tenant-order.v1.json", TENANT_ORDER_V1),
            }),
        }
    }

    /// Parses and validates an order body: size, UTF-8, JSON, schema, then meaning.
    pub fn parse_order(&self, body: &[u8]) -> Result<(Order, Value), Rejection> {
        let value = parse_json(body)?;
        check(&self.inner.order, "order.v1", &value)?;
        let order: Order = serde_json::from_value(value.clone())
            .map_err(|e| Rejection::Schema { schema: "order.v1", reasons: vec![e.to_string()] })?;
        order.check_meaning().map_err(Rejection::Meaning)?;
        Ok((order, value))
    }

    /// Parses and validates an action order body (suspend, unsuspend, resize, terminate).
    pub fn parse_action(&self, body: &[u8]) -> Result<ActionOrder, Rejection> {
        let value = parse_json(body)?;
        check(&self.inner.action, "order-action.v1", &value)?;
        let order: ActionOrder = serde_json::from_value(value)
            .map_err(|e| Rejection::Schema { schema: "order-action.v1", reasons: vec![e.to_string()] })?;
        order.check_meaning().map_err(Rejection::Meaning)?;
        Ok(order)
    }

    /// Parses and validates a tenant order body (`order.tenant.*`).
    pub fn parse_tenant(&self, body: &[u8]) -> Result<TenantOrder, Rejection> {
        let value = parse_json(body)?;
        // An error about the whole object (the `if`/`then` of each action) quotes it, password
        // and all: with a password in the body, no value is shown.
        let secret = value.pointer("/user/password").is_some();
        check_with(&self.inner.tenant, "tenant-order.v1", &value, secret)?;
        let order: TenantOrder = serde_json::from_value(value)
            .map_err(|e| Rejection::Schema { schema: "tenant-order.v1", reasons: vec![masked_serde(&e)] })?;
        order.check_meaning().map_err(Rejection::Meaning)?;
        Ok(order)
    }

    /// Parses what billing published on `billing.orders`, by its routing key: `order.create` is
    /// an order v1, `order.<action>` an action order whose `action` must be that one.
    pub fn parse_incoming(&self, routing_key: &str, body: &[u8]) -> Result<Incoming, Rejection> {
        if routing_key == CREATE_KEY {
            return self.parse_order(body).map(|(order, _)| Incoming::Create(Box::new(order)));
        }
        if let Some(action) = Action::from_routing_key(routing_key) {
            let order = self.parse_action(body)?;
            if order.action != action {
                return Err(Rejection::RoutingKey(format!(
                    "routing key {routing_key} says {action}, the body says /action = {}",
                    order.action
                )));
            }
            return Ok(Incoming::Action(order));
        }
        if let Some(action) = TenantAction::from_routing_key(routing_key) {
            let order = self.parse_tenant(body)?;
            if order.action != action {
                return Err(Rejection::RoutingKey(format!(
                    "routing key {routing_key} says {action}, the body says /action = {}",
                    order.action
                )));
            }
            return Ok(Incoming::Tenant(Box::new(order)));
        }
        Err(Rejection::RoutingKey(format!(
            "routing key {routing_key:?} is not an order this worker knows ({CREATE_KEY}, {}, {})",
            Action::ALL.map(Action::routing_key).join(", "),
            TenantAction::ALL.map(TenantAction::routing_key).join(", ")
        )))
    }

    /// Parses and validates an admin command body.
    pub fn parse_admin(&self, body: &[u8]) -> Result<AdminCommand, Rejection> {
        let value = parse_json(body)?;
        check(&self.inner.admin, "admin-command.v1", &value)?;
        serde_json::from_value(value)
            .map_err(|e| Rejection::Schema { schema: "admin-command.v1", reasons: vec![e.to_string()] })
    }

    /// Validates an event before it is written to the outbox: we never publish what we would
    /// reject ourselves.
    pub fn check_event(&self, value: &Value) -> Result<(), Rejection> {
        check(&self.inner.event, "event.v1", value)
    }
}

fn parse_json(body: &[u8]) -> Result<Value, Rejection> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Rejection::TooLarge { size: body.len(), limit: MAX_BODY_BYTES });
    }
    let text = std::str::from_utf8(body).map_err(|e| Rejection::NotUtf8(e.to_string()))?;
    serde_json::from_str(text).map_err(|e| Rejection::NotJson(e.to_string()))
}

fn check(validator: &jsonschema::Validator, schema: &'static str, value: &Value) -> Result<(), Rejection> {
    check_with(validator, schema, value, false)
}

/// [`check`], with every value masked when `mask_all`.
fn check_with(
    validator: &jsonschema::Validator,
    schema: &'static str,
    value: &Value,
    mask_all: bool,
) -> Result<(), Rejection> {
    if validator.is_valid(value) {
        return Ok(());
    }
    let reasons: Vec<String> = validator
        .iter_errors(value)
        .take(MAX_REASONS)
        .map(|e| {
            let path = e.instance_path().to_string();
            let path = if path.is_empty() { "/".to_string() } else { path };
            // user_data and a password are secrets: never echo their values.
            let secret = mask_all || path.contains("user_data") || path.contains("password");
            let text = if secret { e.masked().to_string() } else { e.to_string() };
            format!("{path}: {}", truncate(&text, 300))
        })
        .collect();
    Err(Rejection::Schema { schema, reasons })
}

/// A serde error without the value it quotes (a tenant order may carry a password).
fn masked_serde(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find('"') {
        Some(i) => format!("{}(value not shown)", &text[..i]),
        None => text,
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
