//! Dead-lettering with a reason: the one way the intake and admin consumers refuse a message.
//!
//! `basic.reject` would dead-letter a message but cannot say why, so a consumer publishes a copy
//! of the original (body and properties) to `provisioner.dlx` (→ `provisioner.dead`) with the
//! reason in headers, waits for the broker's confirm, and only then acks the original. An
//! operator reads the reason off the message itself.
//!
//! The copy is published by the worker's own AMQP user. RabbitMQ refuses a message whose
//! `user_id` names another user (and closes the channel), so a `user_id` set by billing or an
//! operator moves to the `x-provisioner-original-user-id` header instead of failing the copy,
//! which would otherwise be redelivered and refused again in a loop.

use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::{BasicProperties, Channel, PublisherConfirm};

use super::{AmqpError, AmqpOp};

/// Header of a dead-lettered copy: every reason, one human-readable line.
pub const ERROR_HEADER: &str = "x-provisioner-error";
/// Header of a dead-lettered copy: the kind of the first reason (`not_json`, `schema`, ...).
pub const ERROR_KIND_HEADER: &str = "x-provisioner-error-kind";
/// Header of a dead-lettered copy: when it was rejected, RFC 3339 UTC.
pub const ERROR_AT_HEADER: &str = "x-provisioner-error-at";
/// Header of a dead-lettered copy: the queue it was consumed from.
pub const SOURCE_QUEUE_HEADER: &str = "x-provisioner-source-queue";
/// Header of a dead-lettered copy: the original message's `user_id`, if it had one.
pub const ORIGINAL_USER_HEADER: &str = "x-provisioner-original-user-id";

/// Publishes the copy of `delivery` with its reason to exchange `dlx` on `channel` (in confirm
/// mode); the caller awaits the confirm, then acks the original.
pub async fn publish_copy(
    channel: &Channel,
    dlx: &str,
    source_queue: &str,
    delivery: &Delivery,
    reason: String,
    kind: &str,
) -> Result<PublisherConfirm, AmqpError> {
    let text = |s: String| AMQPValue::LongString(LongString::from(s));
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    headers.insert(ERROR_HEADER.into(), text(reason));
    headers.insert(ERROR_KIND_HEADER.into(), text(kind.to_string()));
    headers.insert(
        ERROR_AT_HEADER.into(),
        text(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
    );
    headers.insert(SOURCE_QUEUE_HEADER.into(), text(source_queue.to_string()));
    if let Some(user) = delivery.properties.user_id() {
        headers.insert(ORIGINAL_USER_HEADER.into(), text(user.to_string()));
    }
    let properties = without_user_id(&delivery.properties).with_headers(headers).with_delivery_mode(2);
    channel
        .basic_publish(
            ShortString::from(dlx),
            delivery.routing_key.clone(),
            BasicPublishOptions::default(),
            &delivery.data,
            properties,
        )
        .await
        .op("basic.publish dead letter")
}

/// The same properties without `user_id` (lapin has no setter that clears it).
fn without_user_id(p: &BasicProperties) -> BasicProperties {
    let mut out = BasicProperties::default();
    if let Some(v) = p.content_type() {
        out = out.with_content_type(v.clone());
    }
    if let Some(v) = p.content_encoding() {
        out = out.with_content_encoding(v.clone());
    }
    if let Some(v) = p.correlation_id() {
        out = out.with_correlation_id(v.clone());
    }
    if let Some(v) = p.reply_to() {
        out = out.with_reply_to(v.clone());
    }
    if let Some(v) = p.message_id() {
        out = out.with_message_id(v.clone());
    }
    if let Some(v) = p.timestamp() {
        out = out.with_timestamp(*v);
    }
    if let Some(v) = p.kind() {
        out = out.with_type(v.clone());
    }
    if let Some(v) = p.app_id() {
        out = out.with_app_id(v.clone());
    }
    out
}
