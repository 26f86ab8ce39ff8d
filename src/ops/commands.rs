//! The commands that play billing and operators on the broker: `provisioner order submit`,
//! `provisioner replay|cancel`. They read files and arguments, call [`crate::amqp`] to publish,
//! and print one line per message; the broker side knows nothing of the command line.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::amqp::AmqpError;
use crate::amqp::Names;
use crate::amqp::admin::{command_name, describe, send_command};
use crate::amqp::submit::publish_confirmed;
use crate::cli::{AdminArgs, CliResult};
use crate::config::Settings;
use crate::messages::{Action, AdminCommand, AdminCommandKind, CREATE_KEY, Schemas};

/// The routing key billing would use for `body`: `order.<action>` for an action order (a body
/// with a known `"action"`), else `order.create`. A body that is not JSON goes as a create (and
/// is dead-lettered as such, which is the point of submitting it).
pub fn routing_key_for(body: &[u8]) -> String {
    let action = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("action").and_then(|a| a.as_str()).map(str::to_string));
    if let Some(t) = action.as_deref().and_then(crate::messages::TenantAction::parse) {
        return t.routing_key().to_string();
    }
    match action.as_deref().and_then(Action::parse) {
        Some(a) => a.routing_key().to_string(),
        None => CREATE_KEY.to_string(),
    }
}

/// `provisioner order submit FILE... [--routing-key K]`: reads every file first (a missing one
/// fails the command before anything is published), then publishes each, confirmed, and prints
/// one line per file.
pub async fn submit_orders(settings: &Settings, files: &[PathBuf], routing_key: Option<&str>) -> CliResult {
    let mut orders = Vec::with_capacity(files.len());
    for path in files {
        let body = std::fs::read(path)
            .map_err(|source| AmqpError::File { path: path.display().to_string(), source })?;
        let key = routing_key.map(str::to_string).unwrap_or_else(|| routing_key_for(&body));
        orders.push((key, body));
    }
    let exchange = Names::new(&settings.amqp.prefix).orders_exchange;
    publish_confirmed(settings, &orders, |i| {
        let (key, body) = &orders[i];
        println!("{}: published {} bytes to {exchange} with key {key}", files[i].display(), body.len());
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// `provisioner replay|cancel ID [--reason R]`: publishes the admin command as the AMQP URL's
/// user (see [`send_command`]).
pub async fn send_admin(settings: &Settings, kind: AdminCommandKind, args: &AdminArgs) -> CliResult {
    let command = AdminCommand::new(kind, &args.id, args.reason.clone());
    let body = serde_json::to_vec(&command)?;
    Schemas::new().parse_admin(&body).map_err(|e| format!("the command would be invalid: {e}"))?;
    let user = send_command(settings, &command).await?;
    println!(
        "sent {} for {} as {user} to {}; follow it with `provisioner jobs show {}`",
        command_name(kind),
        describe(&command),
        Names::new(&settings.amqp.prefix).admin_exchange,
        args.id
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::routing_key_for;

    #[test]
    fn submit_picks_the_routing_key_from_the_body() {
        assert_eq!(routing_key_for(br#"{"order_id":"a","project_id":"p","server":{}}"#), "order.create");
        assert_eq!(routing_key_for(br#"{"action":"terminate","order_id":"b"}"#), "order.terminate");
        assert_eq!(routing_key_for(br#"{"action":"explode"}"#), "order.create");
        assert_eq!(routing_key_for(b"not json"), "order.create");
    }
}
