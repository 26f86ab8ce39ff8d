//! The exchanges and queues of the worker, their names and their idempotent declaration.
//!
//! ```text
//! billing.orders (topic) ──order.#──▶ provisioner.orders ──dead-letter──▶ provisioner.dlx (topic)
//! provisioner.admin (topic) ──admin.#──▶ provisioner.admin ──dead-letter──┘        │ #
//! provisioning.events (topic): completion events, routing key = event type        ▼
//!                                                                         provisioner.dead
//! ```
//!
//! The names are a contract with billing and operators; [`Names`] derives them from the
//! `amqp.prefix` setting, which is empty in production and unique per test on a shared broker.
//! [`declare`] is idempotent (same arguments every time) and runs at startup and after every
//! reconnect. Quorum queues carry a delivery limit: a message that makes the worker crash
//! before it settles it is dead-lettered by the broker after that many deliveries, instead of
//! looping forever.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use super::AmqpError;
use crate::config::QueueType;

/// Deliveries of one message before a quorum queue dead-letters it (poison-message guard).
pub const DELIVERY_LIMIT: i64 = 20;

/// Routing key billing uses for new orders, and the binding that catches every order key.
pub use crate::messages::CREATE_KEY as ORDER_CREATE_KEY;
pub const ORDERS_BINDING: &str = "order.#";
/// Binding of the admin queue.
pub const ADMIN_BINDING: &str = "admin.#";

/// Every exchange and queue name, with the configured prefix applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub prefix: String,
    /// `billing.orders` (topic, durable): billing publishes orders here.
    pub orders_exchange: String,
    /// `provisioner.orders`: the intake queue.
    pub orders_queue: String,
    /// `provisioner.dlx` (topic): dead-letter exchange of the input queues.
    pub dlx: String,
    /// `provisioner.dead`: every dead-lettered message, bound `#` on the DLX.
    pub dead_queue: String,
    /// `provisioning.events` (topic): completion events.
    pub events_exchange: String,
    /// `provisioner.admin` (topic) and the queue of the same name.
    pub admin_exchange: String,
    pub admin_queue: String,
}

impl Names {
    pub fn new(prefix: &str) -> Names {
        let n = |s: &str| format!("{prefix}{s}");
        Names {
            prefix: prefix.to_string(),
            orders_exchange: n("billing.orders"),
            orders_queue: n("provisioner.orders"),
            dlx: n("provisioner.dlx"),
            dead_queue: n("provisioner.dead"),
            events_exchange: n("provisioning.events"),
            admin_exchange: n("provisioner.admin"),
            admin_queue: n("provisioner.admin"),
        }
    }

    /// The queues, for cleanup and status.
    pub fn queues(&self) -> [&str; 3] {
        [&self.orders_queue, &self.dead_queue, &self.admin_queue]
    }

    /// The exchanges, for cleanup.
    pub fn exchanges(&self) -> [&str; 4] {
        [&self.orders_exchange, &self.dlx, &self.events_exchange, &self.admin_exchange]
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() }
}

/// Arguments of a durable queue of `queue_type`, dead-lettering to `dlx` if given.
pub fn queue_arguments(queue_type: QueueType, dlx: Option<&str>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString(LongString::from(queue_type.as_str())));
    if let Some(dlx) = dlx {
        args.insert("x-dead-letter-exchange".into(), AMQPValue::LongString(LongString::from(dlx)));
    }
    if queue_type == QueueType::Quorum && dlx.is_some() {
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(DELIVERY_LIMIT));
    }
    args
}

async fn exchange(channel: &Channel, name: &str) -> Result<(), AmqpError> {
    channel
        .exchange_declare(
            ShortString::from(name),
            ExchangeKind::Topic,
            durable_exchange(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| AmqpError::Declare { name: name.to_string(), source })
}

async fn queue(channel: &Channel, name: &str, args: FieldTable) -> Result<(), AmqpError> {
    channel
        .queue_declare(ShortString::from(name), QueueDeclareOptions::durable(), args)
        .await
        .map(|_| ())
        .map_err(|source| AmqpError::Declare { name: name.to_string(), source })
}

async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> Result<(), AmqpError> {
    channel
        .queue_bind(
            ShortString::from(queue),
            ShortString::from(exchange),
            ShortString::from(key),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|source| AmqpError::Declare { name: format!("{queue} ← {exchange} ({key})"), source })
}

/// Declares every exchange, queue and binding of the worker. Idempotent; a queue that already
/// exists with other arguments (say, classic where quorum is configured) fails with a message
/// naming it (RabbitMQ's PRECONDITION_FAILED), and closes the channel.
pub async fn declare(channel: &Channel, names: &Names, queue_type: QueueType) -> Result<(), AmqpError> {
    exchange(channel, &names.dlx).await?;
    queue(channel, &names.dead_queue, queue_arguments(queue_type, None)).await?;
    bind(channel, &names.dead_queue, &names.dlx, "#").await?;

    exchange(channel, &names.orders_exchange).await?;
    queue(channel, &names.orders_queue, queue_arguments(queue_type, Some(&names.dlx))).await?;
    bind(channel, &names.orders_queue, &names.orders_exchange, ORDERS_BINDING).await?;

    exchange(channel, &names.events_exchange).await?;

    exchange(channel, &names.admin_exchange).await?;
    queue(channel, &names.admin_queue, queue_arguments(queue_type, Some(&names.dlx))).await?;
    bind(channel, &names.admin_queue, &names.admin_exchange, ADMIN_BINDING).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let n = Names::new("");
        assert_eq!(n.orders_exchange, "billing.orders");
        assert_eq!(n.orders_queue, "provisioner.orders");
        assert_eq!(n.dlx, "provisioner.dlx");
        assert_eq!(n.dead_queue, "provisioner.dead");
        assert_eq!(n.events_exchange, "provisioning.events");
        assert_eq!(n.admin_exchange, "provisioner.admin");
        let t = Names::new("t1234abcd.");
        assert_eq!(t.orders_queue, "t1234abcd.provisioner.orders");
        assert!(t.queues().iter().chain(t.exchanges().iter()).all(|q| q.starts_with("t1234abcd.")));
    }

    #[test]
    fn quorum_input_queues_have_a_delivery_limit_and_a_dlx() {
        let args = queue_arguments(QueueType::Quorum, Some("provisioner.dlx"));
        assert!(args.contains_key("x-delivery-limit"));
        assert!(args.contains_key("x-dead-letter-exchange"));
        let classic = queue_arguments(QueueType::Classic, Some("provisioner.dlx"));
        assert!(!classic.contains_key("x-delivery-limit"));
        assert!(!queue_arguments(QueueType::Quorum, None).contains_key("x-dead-letter-exchange"));
    }
}
