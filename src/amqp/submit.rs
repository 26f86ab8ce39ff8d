//! Playing billing: publish order bodies exactly as billing does.
//!
//! Exchange `billing.orders` (with the configured prefix), routing key `order.create`,
//! `content_type: application/json`, persistent (`delivery_mode` 2), `mandatory` set, each
//! publish confirmed by the broker. The body is sent byte for byte, valid or not: this is how
//! operators and tests feed the worker, including with bad orders. The topology is declared
//! first, so that an order submitted before any worker ever ran is queued, not dropped.

use std::path::PathBuf;
use std::process::ExitCode;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};

use super::connection::connect_once;
use super::topology::{self, Names, ORDER_CREATE_KEY};
use super::{AmqpError, AmqpOp};
use crate::cli::CliResult;
use crate::config::Settings;

/// The properties billing sets on an order.
pub fn order_properties() -> BasicProperties {
    BasicProperties::default().with_content_type(ShortString::from("application/json")).with_delivery_mode(2)
}

/// Publishes one order body on a channel in confirm mode, without waiting for the confirm.
/// Await the returned future to get it ([`confirmed`] checks it).
pub async fn publish_order(
    channel: &Channel,
    names: &Names,
    body: &[u8],
) -> Result<lapin::PublisherConfirm, AmqpError> {
    channel
        .basic_publish(
            ShortString::from(names.orders_exchange.as_str()),
            ShortString::from(ORDER_CREATE_KEY),
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

/// `provisioner order submit FILE...`: reads every file first (a missing one fails the command
/// before anything is published), then publishes each and prints one line per file.
pub async fn submit_orders(settings: &Settings, files: &[PathBuf]) -> CliResult {
    let mut bodies = Vec::with_capacity(files.len());
    for path in files {
        let body = std::fs::read(path)
            .map_err(|source| AmqpError::File { path: path.display().to_string(), source })?;
        bodies.push(body);
    }
    let names = Names::new(&settings.amqp.prefix);
    let conn = connect_once(&settings.amqp.url, "provisioner order submit").await?;
    let channel = conn.create_channel().await.op("channel.open")?;
    topology::declare(&channel, &names, settings.amqp.queue_type).await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.op("confirm.select")?;
    for (path, body) in files.iter().zip(&bodies) {
        let what = path.display().to_string();
        confirmed(publish_order(&channel, &names, body).await?, &what).await?;
        println!(
            "{what}: published {} bytes to {} with key {ORDER_CREATE_KEY}",
            body.len(),
            names.orders_exchange
        );
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(ExitCode::SUCCESS)
}
