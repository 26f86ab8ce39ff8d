//! RabbitMQ: connection and topology, the intake consumer, the admin consumer, and the
//! confirmed publisher that relays the outbox.
//!
//! Names are a contract with billing and operators (see README): exchange `billing.orders`
//! (topic) → queue `provisioner.orders` (bound `order.#`, quorum by default) dead-lettering to
//! `provisioner.dlx` → `provisioner.dead`; events on `provisioning.events`; admin commands on
//! `provisioner.admin`. The worker declares all of it idempotently at startup and after every
//! reconnect ([`topology`]); [`connection::Broker`] reconnects with backoff and hands out channels.

pub mod admin;
pub mod connection;
pub mod dead_letter;
pub mod intake;
pub mod publisher;
pub mod relay;
pub mod submit;
pub mod topology;

pub use connection::Broker;
pub use topology::Names;

/// A broker error, with what was being done. Connection and channel errors are transient: the
/// consumers reconnect and carry on; the CLI commands report them and exit.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The URL is shown redacted.
    #[error("cannot connect to RabbitMQ at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: lapin::Error,
    },
    #[error("cannot declare {name}: {source}")]
    Declare {
        name: String,
        #[source]
        source: lapin::Error,
    },
    #[error("AMQP {op}: {source}")]
    Channel {
        op: &'static str,
        #[source]
        source: lapin::Error,
    },
    /// The broker refused (nack) or could not route a confirmed publish.
    #[error("the broker did not accept {what}: {why}")]
    NotConfirmed { what: String, why: String },
    /// The consumer was cancelled by the broker (queue deleted, node down, ...).
    #[error("the broker cancelled the consumer on {queue}")]
    ConsumerCancelled { queue: String },
    #[error("cannot read {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The connection under a session was reported lost while the session waited on it.
    #[error("the broker connection was lost")]
    ConnectionLost,
    /// Shutdown was requested while waiting (for the broker, for the database).
    #[error("cancelled by shutdown")]
    Cancelled,
}

/// Adds the failing operation to a lapin error.
pub(crate) trait AmqpOp<T> {
    fn op(self, op: &'static str) -> Result<T, AmqpError>;
}

impl<T> AmqpOp<T> for Result<T, lapin::Error> {
    fn op(self, op: &'static str) -> Result<T, AmqpError> {
        self.map_err(|source| AmqpError::Channel { op, source })
    }
}
