//! What operators use every day: job status for the CLI, admin commands, the demo.

use std::process::ExitCode;

use crate::cli::{CliResult, JobsCommand};
use crate::config::Settings;

/// `provisioner jobs show|list`.
pub async fn jobs_command(_settings: &Settings, _command: &JobsCommand) -> CliResult {
    let _ = ExitCode::SUCCESS;
    Err("`jobs` is not implemented yet".into())
}
