//! `provisioner reconcile [--once] [--json]`: the reconciler from the command line.
//!
//! `--once` runs one pass now (taking the same lease as the workers, so it never runs beside
//! a worker's pass) and prints the pass and the open findings; drift events it writes go out
//! through the outbox, relayed by any running worker. Without `--once` it runs the periodic loop
//! until SIGINT/SIGTERM, for a dedicated reconciler process. The cloud comes from `OS_*` /
//! `clouds.yaml`, as for `provisioner run`.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::cli::{CliResult, ReconcileArgs};
use crate::config::Settings;
use crate::engine::cloud::Cloud;
use crate::engine::openstack_cloud::OpenStackCloud;
use crate::engine::reconcile::{PassReport, ReconcileConfig, Reconciler};
use crate::openstack::config::CloudConfig;
use crate::openstack::session::{Session, SessionOptions};
use crate::store::Store;

/// The cloud of `OS_*` / `clouds.yaml` (a reconciler needs a real one: no embedded simulator).
pub fn cloud_from_env(
    settings: &Settings,
) -> Result<Arc<dyn Cloud>, Box<dyn std::error::Error + Send + Sync>> {
    let config = CloudConfig::from_env()?.ok_or(
        "no cloud configured: set OS_CLOUD (with clouds.yaml) or OS_AUTH_URL and the other OS_* variables",
    )?;
    let session = Session::new(config, SessionOptions::from_settings(settings))?;
    Ok(Arc::new(OpenStackCloud::new(Arc::new(session))))
}

pub async fn reconcile_command(settings: &Settings, args: &ReconcileArgs) -> CliResult {
    let cloud = cloud_from_env(settings)?;
    let store = Store::connect(&settings.database).await?;
    let owner = format!("cli-{}", crate::startup::worker_id(settings));
    let reconciler = Reconciler::new(
        store.clone(),
        cloud,
        ReconcileConfig::from_settings(settings, owner),
        Arc::new(Notify::new()),
    );
    if !args.once {
        let token = CancellationToken::new();
        let stop = token.clone();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        });
        reconciler.run(token).await;
        store.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let result = reconciler.run_once().await;
    store.close().await;
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// A pass for people: what it did, then one line per open finding.
pub fn render(r: &PassReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} projects; {} new findings, {} orphans deleted, {} servers tagged, {} findings cleared; {} open",
        r.projects,
        r.new_findings,
        r.deleted,
        r.adopted,
        r.cleared,
        r.findings.len()
    );
    for e in &r.errors {
        let _ = writeln!(out, "error: project {}: {}", e.project_id, e.error);
    }
    if r.findings.is_empty() {
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<7} {:<7} {:<38} {:<16} {:<14} {:<30} EXPECTED → FOUND",
        "KIND", "TYPE", "RESOURCE", "REASON", "ACTION", "SERVICE / JOB"
    );
    for f in &r.findings {
        let owner = f.target_order_id.as_deref().or(f.job_id.as_deref()).unwrap_or("-");
        let diff = match (&f.expected, &f.found) {
            (Some(e), Some(g)) => format!("{e} → {g}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<7} {:<7} {:<38} {:<16} {:<14} {:<30} {}",
            f.kind, f.resource_type, f.resource_id, f.reason, f.action, owner, diff
        );
    }
    out
}
