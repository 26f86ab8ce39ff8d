//! `provisioner sim`: runs the simulator as a server and prints how to point a client at it.

use std::process::ExitCode;

use clap::Args;

use crate::cli::CliResult;

#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: String,
}

pub async fn run(_args: SimArgs) -> CliResult {
    let _ = ExitCode::SUCCESS;
    Err("the simulator is not implemented yet".into())
}
