//! A confirmed publisher for completion events: every message is published persistent and
//! mandatory on a channel in confirm mode, and its outcome is known only from the broker's
//! answer (ack, nack, or returned as unroutable).
//!
//! The outbox relay ([`super::relay`]) uses it to publish a batch at once and await all the
//! confirms. The channel is opened lazily through the shared [`Broker`] (which reconnects with
//! backoff) and dropped on any channel error, so the next batch starts on a fresh one.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, ExchangeKind};

use super::{AmqpError, AmqpOp, Broker};

/// Longest wait for the broker's confirm of a batch.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// One message to publish.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    pub routing_key: &'a str,
    /// AMQP `message_id` (the event id, for consumers to dedupe).
    pub message_id: &'a str,
    pub body: &'a [u8],
    /// W3C `traceparent` header, for consumers instrumented with OpenTelemetry.
    pub traceparent: Option<&'a str>,
}

/// What the broker said about one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Acked and routed to at least one queue.
    Confirmed,
    /// Acked but returned: no queue is bound for its routing key.
    Unroutable(String),
    /// Nacked, or no answer (channel lost, timeout).
    Failed(String),
}

/// A publisher in confirm mode on one exchange.
#[derive(Debug)]
pub struct ConfirmedPublisher {
    broker: Broker,
    exchange: String,
    channel: Option<Channel>,
}

impl ConfirmedPublisher {
    pub fn new(broker: Broker, exchange: impl Into<String>) -> ConfirmedPublisher {
        ConfirmedPublisher { broker, exchange: exchange.into(), channel: None }
    }

    /// Opens (or reopens) the channel: confirm mode, and the exchange declared (idempotent,
    /// same arguments as the topology). Waits for the broker as long as it takes (until
    /// shutdown, which gives [`AmqpError::Cancelled`]).
    pub async fn ready(&mut self) -> Result<(), AmqpError> {
        if self.channel.as_ref().is_some_and(|c| c.status().connected()) {
            return Ok(());
        }
        self.channel = None;
        let channel = self.broker.channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.op("confirm.select")?;
        channel
            .exchange_declare(
                ShortString::from(self.exchange.as_str()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() },
                FieldTable::default(),
            )
            .await
            .map_err(|source| AmqpError::Declare { name: self.exchange.clone(), source })?;
        self.channel = Some(channel);
        Ok(())
    }

    /// Publishes every message, then awaits every confirm; one outcome per message, in order.
    /// Without an open channel every message fails at once.
    pub async fn publish_all(&mut self, messages: &[Outgoing<'_>]) -> Vec<Published> {
        // Never waits for a connection here: the caller may hold database locks; it calls
        // [`ConfirmedPublisher::ready`] first.
        let Some(channel) = self.channel.clone().filter(|c| c.status().connected()) else {
            self.channel = None;
            return messages.iter().map(|_| Published::Failed("no channel to the broker".into())).collect();
        };
        let mut confirms = Vec::with_capacity(messages.len());
        for m in messages {
            let mut properties = BasicProperties::default()
                .with_content_type(ShortString::from("application/json"))
                .with_delivery_mode(2)
                .with_message_id(ShortString::from(m.message_id))
                .with_type(ShortString::from(m.routing_key))
                .with_timestamp(chrono::Utc::now().timestamp().max(0) as u64);
            if let Some(tp) = m.traceparent {
                let mut headers = FieldTable::default();
                headers.insert(ShortString::from("traceparent"), AMQPValue::LongString(LongString::from(tp)));
                properties = properties.with_headers(headers);
            }
            let confirm = channel
                .basic_publish(
                    ShortString::from(self.exchange.as_str()),
                    ShortString::from(m.routing_key),
                    BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
                    m.body,
                    properties,
                )
                .await;
            confirms.push(confirm);
        }
        let mut out = Vec::with_capacity(messages.len());
        let mut lost = false;
        let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
        for confirm in confirms {
            let outcome = match confirm {
                Err(e) => {
                    lost = true;
                    Published::Failed(format!("publish: {e}"))
                }
                Ok(confirm) => match tokio::time::timeout_at(deadline, confirm).await {
                    Err(_) => {
                        lost = true;
                        Published::Failed("no confirm from the broker in time".into())
                    }
                    Ok(Err(e)) => {
                        lost = true;
                        Published::Failed(format!("confirm: {e}"))
                    }
                    Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Published::Confirmed,
                    Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                        Published::Unroutable(format!("returned by the broker: {}", returned.reply_text))
                    }
                    Ok(Ok(Confirmation::Nack(_))) => Published::Failed("nacked by the broker".into()),
                },
            };
            out.push(outcome);
        }
        if lost {
            // Start the next batch on a fresh channel.
            if let Some(c) = self.channel.take() {
                let _ = c.close(200, "publisher reset".into()).await;
            }
        }
        out
    }
}
