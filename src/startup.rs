//! Builds the running application from settings: the store, the broker connection, the cloud
//! client and the engine, wired together. `main` uses it, and so do the tests, so that what is
//! tested is what runs.

use std::process::ExitCode;

use crate::cli::{CliResult, DemoArgs};
use crate::config::Settings;

/// `provisioner run`.
pub async fn run_worker(_settings: Settings) -> CliResult {
    let _ = ExitCode::SUCCESS;
    Err("the worker is not implemented yet".into())
}

/// `provisioner demo`.
pub async fn demo(_settings: Settings, _args: &DemoArgs) -> CliResult {
    Err("the demo is not implemented yet".into())
}
