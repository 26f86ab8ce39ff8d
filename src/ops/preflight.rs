//! `provisioner order check FILE [--json]`: pre-flight from the command line (see
//! [`crate::engine::preflight`]). The cloud comes from `OS_*` / `clouds.yaml`; the database
//! (for an action order's service) from the settings. Exit code 0 only when every check passes.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use crate::cli::CliResult;
use crate::config::Settings;
use crate::engine::preflight::{Report, check_body};
use crate::messages::Schemas;
use crate::store::Store;

pub async fn check_command(settings: &Settings, file: &Path, json: bool) -> CliResult {
    let body = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let cloud = match super::reconcile::cloud_from_env(settings) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "pre-flight without a cloud");
            None
        }
    };
    // Only an action order (its service) or a create naming its tenant needs the database.
    let needs_store = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .is_some_and(|v| v.get("action").is_some() || v.get("tenant_ref").is_some());
    let store = if needs_store { Store::connect(&settings.database).await.ok() } else { None };
    let report = check_body(&Schemas::new(), cloud.as_deref(), store.as_ref(), &body, "cli").await;
    if let Some(s) = store {
        s.close().await;
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&file.display().to_string(), &report));
    }
    Ok(if report.ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One line per check, then the verdict.
pub fn render(name: &str, r: &Report) -> String {
    let mut out = String::new();
    for c in &r.checks {
        let mark = if c.ok { "ok  " } else { "FAIL" };
        let class = c.class.map(|k| format!(" [{k}]")).unwrap_or_default();
        let _ = writeln!(out, "{mark} {:<17} {}{class}", c.check, c.detail);
    }
    let order = r.order_id.as_deref().unwrap_or(name);
    let verdict = if r.ok { "would pass every check" } else { "would NOT pass" };
    let _ = writeln!(out, "order {order}: {verdict}");
    out
}
