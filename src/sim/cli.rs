//! `provisioner sim`: runs the simulator as a server, prints the `OS_*` variables and a
//! clouds.yaml that point a client at it, and stops on Ctrl-C / SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::cli::CliResult;
use crate::sim::{Seed, SimConfig, Simulator, Timings};

#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// The URL clients use to reach it (catalog URLs are built on it), when not the listen address.
    #[arg(long)]
    pub public_url: Option<String>,
    /// Seed file (YAML or JSON) replacing the built-in seed.
    #[arg(long, value_name = "FILE")]
    pub seed: Option<PathBuf>,
    /// Mean boot time of a server, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub boot_secs: f64,
    /// Boot time jitter (±), seconds.
    #[arg(long, default_value_t = 1.0)]
    pub boot_jitter_secs: f64,
    /// Volume `creating` → `available`, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub volume_secs: f64,
    /// Attach (`reserved` → `in-use`), seconds.
    #[arg(long, default_value_t = 1.0)]
    pub attach_secs: f64,
    /// A server action (stop, suspend, resize, ...) runs this long, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub action_secs: f64,
    /// A deleted server shows `deleting` this long, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub delete_secs: f64,
    /// Token lifetime, seconds.
    #[arg(long, default_value_t = 3600)]
    pub token_lifetime_secs: u64,
}

fn ms(secs: f64) -> u64 {
    (secs.max(0.0) * 1000.0).round() as u64
}

/// The `OS_*` variables and clouds.yaml for the built-in users.
pub fn client_config(auth_url: &str) -> String {
    format!(
        "# Point python-openstackclient (or the worker) at the simulator:\n\
         export OS_AUTH_URL={auth_url}\n\
         export OS_IDENTITY_API_VERSION=3\n\
         export OS_USERNAME=provisioner\n\
         export OS_PASSWORD=provisioner\n\
         export OS_PROJECT_NAME=demo\n\
         export OS_USER_DOMAIN_NAME=Default\n\
         export OS_PROJECT_DOMAIN_NAME=Default\n\
         export OS_REGION_NAME=RegionOne\n\
         export OS_INTERFACE=public\n\
         \n\
         # or, in ~/.config/openstack/clouds.yaml (then OS_CLOUD=sim-demo; a worker that onboards\n\
         # tenants uses sim-service, where provisioner holds admin):\n\
         clouds:\n\
         \x20 sim-demo:\n\
         \x20   auth: {{auth_url: {auth_url}, username: provisioner, password: provisioner, project_name: demo, user_domain_name: Default, project_domain_name: Default}}\n\
         \x20   region_name: RegionOne\n\
         \x20   interface: public\n\
         \x20   identity_api_version: 3\n\
         \x20 sim-acme:\n\
         \x20   auth: {{auth_url: {auth_url}, username: provisioner, password: provisioner, project_name: acme, user_domain_name: Default, project_domain_name: Default}}\n\
         \x20   region_name: RegionOne\n\
         \x20   identity_api_version: 3\n\
         \x20 sim-service:\n\
         \x20   auth: {{auth_url: {auth_url}, username: provisioner, password: provisioner, project_name: service, user_domain_name: Default, project_domain_name: Default}}\n\
         \x20   region_name: RegionOne\n\
         \x20   identity_api_version: 3\n\
         \x20 sim-admin:\n\
         \x20   auth: {{auth_url: {auth_url}, username: admin, password: admin, project_name: admin, user_domain_name: Default, project_domain_name: Default}}\n\
         \x20   region_name: RegionOne\n\
         \x20   identity_api_version: 3\n"
    )
}

pub async fn run(args: SimArgs) -> CliResult {
    crate::telemetry::init(crate::config::LogFormat::Pretty);
    let seed = match &args.seed {
        Some(p) => Seed::from_file(p)?,
        None => Seed::builtin(),
    };
    let timings = Timings {
        boot_mean_ms: ms(args.boot_secs),
        boot_jitter_ms: ms(args.boot_jitter_secs),
        volume_create_ms: ms(args.volume_secs),
        attach_ms: ms(args.attach_secs),
        detach_ms: ms(args.attach_secs / 2.0),
        action_ms: ms(args.action_secs),
        delete_ms: ms(args.delete_secs),
        token_lifetime_s: args.token_lifetime_secs,
    };
    let handle = Simulator::start(SimConfig {
        listen: args.listen,
        public_url: args.public_url.clone(),
        seed,
        timings,
    })
    .await?;
    println!("OpenStack simulator listening on {} (control: {}/_sim/)\n", handle.url(), handle.url());
    println!("{}", client_config(&handle.auth_url()));
    shutdown_signal().await;
    handle.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Waits for Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_config_names_every_os_variable_and_cloud() {
        let c = client_config("http://127.0.0.1:5000/identity");
        for needle in [
            "export OS_AUTH_URL=http://127.0.0.1:5000/identity",
            "OS_USERNAME=provisioner",
            "OS_PROJECT_NAME=demo",
            "OS_USER_DOMAIN_NAME=Default",
            "sim-demo:",
            "sim-acme:",
            "sim-service:",
            "sim-admin:",
        ] {
            assert!(c.contains(needle), "{needle}");
        }
    }
}
