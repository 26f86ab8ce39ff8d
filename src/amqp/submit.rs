//! Playing billing: publish order bodies exactly as billing does.
//!
//! Exchange `billing.orders` (with the configured prefix), routing key `order.create` (or the
//! action's `order.<action>`), `content_type: application/json`, persistent (`delivery_mode` 2),
//! `mandatory` set, each publish confirmed by the broker. The body is sent byte for byte, valid
//! or not: this is how operators (`provisioner order submit`, in [`crate::ops`]) and tests feed
//! the worker, including with bad orders.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};

use super::connection::connect_once;
use super::topology::{self, Names, ORDER_CREATE_KEY};
use super::{AmqpError, AmqpOp};
use crate::config::Settings;

/// The properties billing sets on an order.
pub fn order_properties() -> BasicProperties {
    BasicProperties::default().with_content_type(ShortString::from("application/json")).with_delivery_mode(2)
}

/// Publishes one create order body on a channel in confirm mode, without waiting for the
/// confirm. Await the returned future to get it ([`confirmed`] checks it).
pub async fn publish_order(
    channel: &Channel,
    names: &Names,
    body: &[u8],
) -> Result<lapin::PublisherConfirm, AmqpError> {
    publish_with_key(channel, names, ORDER_CREATE_KEY, body).await
}

/// Like [`publish_order`], with the routing key given (`order.suspend`, ...).
pub async fn publish_with_key(
    channel: &Channel,
    names: &Names,
    routing_key: &str,
    body: &[u8],
) -> Result<lapin::PublisherConfirm, AmqpError> {
    channel
        .basic_publish(
            ShortString::from(names.orders_exchange.as_str()),
            ShortString::from(routing_key),
            BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
            body,
            order_properties(),
        )
        .await
        .op("basic.publish order")
}

/// Checks a publisher confirm: acked and not returned as unroutable.
pub async fn confirmed(confirm: lapin::PublisherConfirm, what: &str) -> Result<(), AmqpError> {
    match confirm.await.op("publisher confirm")? {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(returned)) => Err(AmqpError::NotConfirmed {
            what: what.to_string(),
            why: format!("returned unroutable ({})", returned.reply_text),
        }),
        Confirmation::Nack(_) => {
            Err(AmqpError::NotConfirmed { what: what.to_string(), why: "nacked by the broker".into() })
        }
    }
}

/// Publishes each `(routing key, body)` as billing does, confirmed, in order, after declaring
/// the topology (so that an order published before any worker ever ran is queued, not dropped).
/// `on_each` is called after each confirm.
pub async fn publish_confirmed(
    settings: &Settings,
    orders: &[(String, Vec<u8>)],
    mut on_each: impl FnMut(usize),
) -> Result<(), AmqpError> {
    let names = Names::new(&settings.amqp.prefix);
    let conn = connect_once(&settings.amqp.url, "provisioner order submit").await?;
    let channel = conn.create_channel().await.op("channel.open")?;
    topology::declare(&channel, &names, settings.amqp.queue_type).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.op("confirm.select")?;
    for (i, (key, body)) in orders.iter().enumerate() {
        confirmed(publish_with_key(&channel, &names, key, body).await?, key).await?;
        on_each(i);
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}
