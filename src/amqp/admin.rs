//! Admin commands: the consumer of `provisioner.admin`, and `provisioner replay|cancel`, which
//! publishes them.
//!
//! An admin command (`schemas/admin-command.v1.json`) arrives on exchange `provisioner.admin`
//! with routing key `admin.replay` or `admin.cancel`. Who sent it is the AMQP `user_id`
//! property, which RabbitMQ checks against the publishing connection's user (a message claiming
//! someone else is refused by the broker); the consumer checks it against `admin.allowed_users`.
//!
//! Per delivery, one at a time: check the sender, then the body (schema, exactly one of job_id
//! and order_id), then apply it in one transaction ([`Store::admin_replay`],
//! [`Store::admin_cancel`]), which records the action, or its refusal, in the job's history with
//! the operator's name and reason. Then ack. What cannot be applied (no `user_id`, a user outside
//! the allow-list, an invalid body, no such job) changes nothing: it is logged as an audit record
//! (target `provisioner::audit`) and dead-lettered like intake's rejects: a copy goes to
//! `provisioner.dlx` with the `x-provisioner-error` header (its reason) and the kind and time
//! headers, confirmed, then the original is acked. The routing key of the copy is the
//! original's, so it lands in `provisioner.dead`.
//!
//! Database down: the delivery stays unacked and is retried with backoff; shutdown leaves it
//! unacked for the broker to redeliver. A redelivered command that was in fact applied is
//! refused the second time (a replayed job is no longer failed; a cancel is already requested)
//! and that refusal is recorded: no action happens twice.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::connection::{Broker, connect_once, consume_until_stopped};
use super::dead_letter;
use super::submit::confirmed;
use super::topology::{self, Names};
use super::{AmqpError, AmqpOp};
use crate::config::{QueueType, Settings};
use crate::messages::{AdminCommand, AdminCommandKind, AdminTarget, Rejection, Schemas};
use crate::metrics;
use crate::store::Store;
use crate::store::admin::AdminOutcome;

/// Log target of the audit records (every admin command, applied or not).
pub const AUDIT: &str = "provisioner::audit";

/// Admin commands the broker may hand over before the first is acked.
const PREFETCH: u16 = 16;

/// Largest pause between two attempts of a command while the database is away.
const DB_RETRY_MAX: Duration = Duration::from_secs(5);

/// Why an admin command was not applied.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("the message has no user_id property: the sender is unknown")]
    NoUserId,
    #[error("user {0:?} is not allowed to send admin commands (admin.allowed_users)")]
    NotAllowed(String),
    #[error("{0}")]
    Invalid(Rejection),
    #[error("no job with {0}")]
    NoSuchJob(String),
}

impl Refusal {
    /// The `x-provisioner-error-kind` header and the metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NoUserId => "no_user_id",
            Refusal::NotAllowed(_) => "not_allowed",
            Refusal::Invalid(r) => r.kind(),
            Refusal::NoSuchJob(_) => "no_such_job",
        }
    }
}

/// What the admin consumer needs. Built by `startup`; tests build it too.
#[derive(Debug, Clone)]
pub struct AdminConsumer {
    pub broker: Broker,
    pub store: Store,
    pub names: Names,
    pub queue_type: QueueType,
    pub allowed_users: Vec<String>,
    pub schemas: Schemas,
    /// Time a replayed job gets to finish (`engine.job_deadline_secs`).
    pub job_deadline: Duration,
    /// Consumer tag, shown by `rabbitmqctl list_consumers`.
    pub consumer_tag: String,
    /// Wakes the outbox relay when a cancel wrote its event.
    pub events: Arc<Notify>,
}

impl AdminConsumer {
    /// Consumes until `shutdown` fires, reconnecting after every broker failure.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AmqpError> {
        if self.allowed_users.is_empty() {
            tracing::warn!("admin.allowed_users is empty: every admin command will be refused");
        }
        consume_until_stopped("the admin consumer", &shutdown, || self.session(&shutdown)).await
    }

    /// One channel's life, until a clean shutdown or the loss of its connection.
    async fn session(&self, shutdown: &CancellationToken) -> Result<(), AmqpError> {
        self.broker.consumer_session(|channel, dead| self.consume(channel, dead, shutdown)).await
    }

    async fn consume(
        &self,
        channel: Channel,
        dead: Channel,
        shutdown: &CancellationToken,
    ) -> Result<(), AmqpError> {
        topology::declare(&channel, &self.names, self.queue_type).await?;
        channel.basic_qos(PREFETCH, BasicQosOptions::default()).await.op("basic.qos")?;
        let mut consumer = channel
            .basic_consume(
                ShortString::from(self.names.admin_queue.as_str()),
                ShortString::from(self.consumer_tag.as_str()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .op("basic.consume")?;
        tracing::info!(queue = %self.names.admin_queue, allowed_users = ?self.allowed_users, "admin consumer ready");
        let result = loop {
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ok(()),
                next = consumer.next() => next,
            };
            let delivery = match next {
                Some(Ok(delivery)) => delivery,
                Some(Err(source)) => break Err(AmqpError::Channel { op: "consume", source }),
                None => break Err(AmqpError::ConsumerCancelled { queue: self.names.admin_queue.clone() }),
            };
            if let Err(e) = self.handle(&dead, &delivery, shutdown).await {
                break Err(e);
            }
        };
        let _ = channel
            .basic_cancel(ShortString::from(self.consumer_tag.as_str()), BasicCancelOptions::default())
            .await;
        drop(consumer);
        let _ = channel.close(200, "shutdown".into()).await;
        let _ = dead.close(200, "shutdown".into()).await;
        result
    }

    /// Who sent it and what it asks, or why it cannot be applied.
    pub fn check(&self, delivery: &Delivery) -> Result<(String, AdminCommand), Refusal> {
        let user = delivery.properties.user_id().as_ref().map(|u| u.to_string()).ok_or(Refusal::NoUserId)?;
        if !self.allowed_users.contains(&user) {
            return Err(Refusal::NotAllowed(user));
        }
        let command = self.schemas.parse_admin(&delivery.data).map_err(Refusal::Invalid)?;
        Ok((user, command))
    }

    /// Applies or refuses one delivery, then acks it. `Err` only for a broker failure or
    /// shutdown (the delivery then stays unacked).
    async fn handle(
        &self,
        dead: &Channel,
        delivery: &Delivery,
        shutdown: &CancellationToken,
    ) -> Result<(), AmqpError> {
        let refusal = match self.check(delivery) {
            Err(refusal) => Some(refusal),
            Ok((user, command)) => {
                let outcome = self.apply_with_retry(&user, &command, shutdown).await?;
                let target = describe(&command);
                let kind = command_name(command.command);
                metrics::inc(metrics::ADMIN_COMMANDS, &[("command", kind), ("outcome", outcome.as_str())]);
                match &outcome {
                    AdminOutcome::NotFound => Some(Refusal::NoSuchJob(target)),
                    AdminOutcome::Refused { job_id, reason } => {
                        tracing::warn!(target: AUDIT, user = %user, command = kind, job_id = %job_id,
                            reason = command.reason.as_deref().unwrap_or(""), refused = %reason,
                            "admin command refused (recorded in the job's history)");
                        None
                    }
                    AdminOutcome::Replayed { job_id }
                    | AdminOutcome::Cancelled { job_id }
                    | AdminOutcome::CancelRequested { job_id } => {
                        tracing::info!(target: AUDIT, user = %user, command = kind, job_id = %job_id,
                            reason = command.reason.as_deref().unwrap_or(""), outcome = outcome.as_str(),
                            "admin command applied");
                        if matches!(outcome, AdminOutcome::Cancelled { .. }) {
                            self.events.notify_one();
                        }
                        None
                    }
                }
            }
        };
        if let Some(refusal) = refusal {
            let user = delivery.properties.user_id().as_ref().map(|u| u.to_string());
            tracing::warn!(target: AUDIT, user = user.as_deref().unwrap_or("(none)"), kind = refusal.kind(),
                reason = %refusal, routing_key = %delivery.routing_key, "admin command rejected and dead-lettered");
            if !matches!(refusal, Refusal::NoSuchJob(_)) {
                metrics::inc(metrics::ADMIN_COMMANDS, &[("command", "unknown"), ("outcome", refusal.kind())]);
            }
            let confirm = self.dead_letter(dead, delivery, &refusal).await?;
            confirmed(confirm, "dead-lettered admin command").await?;
            metrics::inc(
                metrics::DEAD_LETTERED,
                &[("queue", &self.names.admin_queue), ("reason", refusal.kind())],
            );
        }
        delivery.acker.ack(BasicAckOptions::default()).await.op("basic.ack")?;
        Ok(())
    }

    async fn apply_with_retry(
        &self,
        user: &str,
        command: &AdminCommand,
        shutdown: &CancellationToken,
    ) -> Result<AdminOutcome, AmqpError> {
        let Some(target) = command.target() else {
            // The schema requires exactly one of the two; this is only reached if it did not.
            return Ok(AdminOutcome::NotFound);
        };
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(DB_RETRY_MAX)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let reason = command.reason.as_deref();
            let result = match command.command {
                AdminCommandKind::Replay => {
                    self.store.admin_replay(&target, user, reason, self.job_deadline).await
                }
                AdminCommandKind::Cancel => self.store.admin_cancel(&target, user, reason).await,
            };
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(e) => {
                    let delay = delays.next().unwrap_or(DB_RETRY_MAX);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64,
                        "cannot apply an admin command; it stays unacked, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(AmqpError::Cancelled),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        dead: &Channel,
        delivery: &Delivery,
        refusal: &Refusal,
    ) -> Result<lapin::PublisherConfirm, AmqpError> {
        let (dlx, queue) = (&self.names.dlx, &self.names.admin_queue);
        dead_letter::publish_copy(dead, dlx, queue, delivery, refusal.to_string(), refusal.kind()).await
    }
}

pub fn command_name(kind: AdminCommandKind) -> &'static str {
    match kind {
        AdminCommandKind::Replay => "replay",
        AdminCommandKind::Cancel => "cancel",
    }
}

pub fn describe(command: &AdminCommand) -> String {
    match command.target() {
        Some(AdminTarget::Job(id)) => format!("job id {id}"),
        Some(AdminTarget::Order(order)) => format!("order id {order:?}"),
        None => "no target".into(),
    }
}

/// The user of an `amqp://user:password@host/vhost` URL, percent-decoded; `guest` when absent
/// (what the client then logs in as).
pub fn url_user(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else { return "guest".into() };
    let user = userinfo.split(':').next().unwrap_or("");
    if user.is_empty() { "guest".into() } else { percent_decode(user) }
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Connects as the AMQP URL's user and publishes `command` as that user (`user_id`),
/// confirmed and mandatory (an unroutable command, say before any worker declared the queue, is
/// an error rather than lost). The topology is not declared: operators may only publish to
/// `provisioner.admin`. Returns the user it was sent as.
pub async fn send_command(settings: &Settings, command: &AdminCommand) -> Result<String, AmqpError> {
    let names = Names::new(&settings.amqp.prefix);
    let user = url_user(settings.amqp.url.expose());
    let conn =
        connect_once(&settings.amqp.url, &format!("provisioner {}", command_name(command.command))).await?;
    let result = publish_admin(&conn, &names, command, &user).await;
    let _ = conn.close(200, "done".into()).await;
    result.map(|()| user)
}

/// Publishes one admin command as `user` and waits for the broker's confirm.
pub async fn publish_admin(
    conn: &lapin::Connection,
    names: &Names,
    command: &AdminCommand,
    user: &str,
) -> Result<(), AmqpError> {
    let channel = conn.create_channel().await.op("channel.open")?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.op("confirm.select")?;
    let body = serde_json::to_vec(command).map_err(|e| AmqpError::NotConfirmed {
        what: "admin command".into(),
        why: format!("cannot encode it: {e}"),
    })?;
    let properties = BasicProperties::default()
        .with_content_type(ShortString::from("application/json"))
        .with_delivery_mode(2)
        .with_user_id(ShortString::from(user));
    let confirm = channel
        .basic_publish(
            ShortString::from(names.admin_exchange.as_str()),
            ShortString::from(command.command.routing_key()),
            BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
            &body,
            properties,
        )
        .await
        .op("basic.publish admin command")?;
    let result = match confirm.await.op("publisher confirm")? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(AmqpError::NotConfirmed {
            what: "admin command".into(),
            why: format!("no queue is bound to {} ({})", names.admin_exchange, returned.reply_text),
        }),
        Confirmation::Nack(_) => {
            Err(AmqpError::NotConfirmed { what: "admin command".into(), why: "nacked by the broker".into() })
        }
    };
    let _ = channel.close(200, "done".into()).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sender_is_the_url_user() {
        assert_eq!(url_user("amqp://ops-alice:pw@mq:5672/prod"), "ops-alice");
        assert_eq!(url_user("amqp://ops%40corp:pw@mq/prod"), "ops@corp");
        assert_eq!(url_user("amqp://mq:5672/%2f"), "guest");
        assert_eq!(url_user("amqp://a:b@c@mq/v"), "a");
    }

    #[test]
    fn refusals_have_kinds() {
        assert_eq!(Refusal::NoUserId.kind(), "no_user_id");
        assert_eq!(Refusal::NotAllowed("x".into()).kind(), "not_allowed");
        assert!(Refusal::NotAllowed("mallory".into()).to_string().contains("mallory"));
    }
}
