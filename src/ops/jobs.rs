//! `provisioner jobs show <job-id|order-id>`, `provisioner jobs list`, `provisioner services
//! show|list` and `provisioner tenants show|list`: job, service and tenant status as tables for
//! people, or as JSON (`--json`, the same shapes as the HTTP API) for scripts.

use std::fmt::Write as _;
use std::process::ExitCode;

use chrono::{DateTime, Utc};

use crate::cli::{CliResult, JobsCommand, ServicesCommand, TenantsCommand};
use crate::config::Settings;
use crate::store::Store;
use crate::store::services::{SERVICE_STATES, ServiceDetail, ServiceFilter, ServiceStatus};
use crate::store::status::{ACTIONS, HistoryEntry, JobDetail, JobFilter, JobStatus, STATES};
use crate::store::tenants::{TENANT_STATES, TenantDetail, TenantView};

/// `provisioner services show|list`.
pub async fn services_command(settings: &Settings, command: &ServicesCommand) -> CliResult {
    let store = Store::connect(&settings.database).await?;
    let result = run_services(&store, command).await;
    store.close().await;
    let out = result?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

async fn run_services(
    store: &Store,
    command: &ServicesCommand,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    match command {
        ServicesCommand::Show { target_order_id, json } => {
            let detail = store
                .service_detail(target_order_id)
                .await?
                .ok_or_else(|| format!("no service made by order {target_order_id:?}"))?;
            if *json {
                Ok(format!("{}\n", serde_json::to_string_pretty(&detail)?))
            } else {
                Ok(render_service(&detail))
            }
        }
        ServicesCommand::List { state, project, limit, json } => {
            if let Some(s) = state
                && !SERVICE_STATES.contains(&s.as_str())
            {
                return Err(format!("--state {s:?} is not one of {}", SERVICE_STATES.join(", ")).into());
            }
            let filter = ServiceFilter {
                state: state.clone(),
                project_id: project.clone(),
                limit: *limit,
                ..ServiceFilter::default()
            };
            let page = store.list_services(&filter).await?;
            if *json {
                Ok(format!("{}\n", serde_json::to_string_pretty(&page)?))
            } else {
                Ok(render_services(&page.services))
            }
        }
    }
}

/// A service for people: its state and resources, then its jobs.
pub fn render_service(d: &ServiceDetail) -> String {
    let s = &d.status;
    let mut out = String::new();
    let mut field = |k: &str, v: &str| {
        let _ = writeln!(out, "{k:<12} {v}");
    };
    field("service", &s.target_order_id);
    field("project", &s.project_id);
    if let Some(region) = &s.region {
        field("region", region);
    }
    field("state", &s.state);
    field("server", or_dash(&s.server_id));
    field("port", or_dash(&s.port_id));
    field("volume", or_dash(&s.volume_id));
    if let Some(boot) = &s.boot_volume_id {
        field("boot volume", boot);
    }
    field("flavor", or_dash(&s.flavor));
    field("last action", or_dash(&s.last_action_order_id));
    field("updated", &time(s.updated_at));
    out.push_str("\njobs\n");
    out.push_str(&render_list(&d.jobs));
    out
}

/// Services for people, one line each.
pub fn render_services(services: &[ServiceStatus]) -> String {
    if services.is_empty() {
        return "no services\n".into();
    }
    let rows: Vec<Vec<String>> = services
        .iter()
        .map(|s| {
            vec![
                s.target_order_id.clone(),
                s.project_id.clone(),
                s.state.clone(),
                or_dash(&s.server_id).to_string(),
                or_dash(&s.flavor).to_string(),
                or_dash(&s.last_action_order_id).to_string(),
                time(s.updated_at),
            ]
        })
        .collect();
    table(&["SERVICE", "PROJECT", "STATE", "SERVER", "FLAVOR", "LAST ACTION", "UPDATED"], &rows)
}

/// `provisioner tenants show|list`.
pub async fn tenants_command(settings: &Settings, command: &TenantsCommand) -> CliResult {
    let store = Store::connect(&settings.database).await?;
    let result = run_tenants(&store, command).await;
    store.close().await;
    let out = result?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

async fn run_tenants(
    store: &Store,
    command: &TenantsCommand,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    match command {
        TenantsCommand::Show { tenant_ref, json } => {
            let detail =
                store.tenant_detail(tenant_ref).await?.ok_or_else(|| format!("no tenant {tenant_ref:?}"))?;
            if *json {
                Ok(format!("{}\n", serde_json::to_string_pretty(&detail)?))
            } else {
                Ok(render_tenant(&detail))
            }
        }
        TenantsCommand::List { state, limit, json } => {
            if let Some(s) = state
                && !TENANT_STATES.contains(&s.as_str())
            {
                return Err(format!("--state {s:?} is not one of {}", TENANT_STATES.join(", ")).into());
            }
            let tenants = store.list_tenants(state.as_deref(), *limit).await?;
            if *json {
                Ok(format!("{}\n", serde_json::to_string_pretty(&serde_json::json!({ "tenants": tenants }))?))
            } else {
                Ok(render_tenants(&tenants))
            }
        }
    }
}

/// Quotas as `instances=2 cores=16 ...` (in the order billing names them).
fn quotas_text(q: &Option<serde_json::Value>) -> String {
    const ORDER: [&str; 8] =
        ["instances", "cores", "ram_mb", "volumes", "gigabytes", "ports", "networks", "floating_ips"];
    let Some(q) = q.as_ref().and_then(|q| q.as_object()) else { return "-".into() };
    let mut keys: Vec<&String> = q.keys().collect();
    keys.sort_by_key(|k| ORDER.iter().position(|o| o == k).unwrap_or(ORDER.len()));
    let parts: Vec<String> = keys.iter().map(|k| format!("{k}={}", q[k.as_str()])).collect();
    if parts.is_empty() { "-".into() } else { parts.join(" ") }
}

fn last_job_text(j: &Option<JobStatus>) -> String {
    match j {
        Some(j) => format!("{} {} {}", j.order_id, j.action, j.state),
        None => "-".into(),
    }
}

/// A tenant for people: its state, ids and quotas, then its jobs.
pub fn render_tenant(d: &TenantDetail) -> String {
    let s = &d.view.status;
    let mut out = String::new();
    let mut field = |k: &str, v: &str| {
        let _ = writeln!(out, "{k:<10} {v}");
    };
    field("tenant", &s.tenant_ref);
    field("state", &s.state);
    field("project", or_dash(&s.project_id));
    field("domain", or_dash(&s.domain_id));
    field("user", or_dash(&s.user_id));
    field("quotas", &quotas_text(&s.quotas));
    field("last job", &last_job_text(&d.view.last_job));
    field("created", &time(s.created_at));
    field("updated", &time(s.updated_at));
    out.push_str("\njobs\n");
    out.push_str(&render_list(&d.jobs));
    out
}

/// Tenants for people, one line each.
pub fn render_tenants(tenants: &[TenantView]) -> String {
    if tenants.is_empty() {
        return "no tenants\n".into();
    }
    let rows: Vec<Vec<String>> = tenants
        .iter()
        .map(|t| {
            let s = &t.status;
            vec![
                s.tenant_ref.clone(),
                s.state.clone(),
                or_dash(&s.project_id).to_string(),
                or_dash(&s.user_id).to_string(),
                last_job_text(&t.last_job),
                time(s.updated_at),
                quotas_text(&s.quotas),
            ]
        })
        .collect();
    table(&["TENANT", "STATE", "PROJECT", "USER", "LAST JOB", "UPDATED", "QUOTAS"], &rows)
}

/// `provisioner jobs show|list`.
pub async fn jobs_command(settings: &Settings, command: &JobsCommand) -> CliResult {
    let store = Store::connect(&settings.database).await?;
    let result = run(&store, command).await;
    store.close().await;
    let out = result?;
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

async fn run(
    store: &Store,
    command: &JobsCommand,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    match command {
        JobsCommand::Show { id, json } => {
            let detail = store
                .job_detail(id)
                .await?
                .ok_or_else(|| format!("no job with job id or order id {id:?}"))?;
            if *json {
                Ok(format!("{}\n", serde_json::to_string_pretty(&detail)?))
            } else {
                Ok(render_detail(&detail, Utc::now()))
            }
        }
        JobsCommand::List { state, action, project, since, limit, json } => {
            if let Some(s) = state
                && !STATES.contains(&s.as_str())
            {
                return Err(format!("--state {s:?} is not one of {}", STATES.join(", ")).into());
            }
            if let Some(a) = action
                && !ACTIONS.contains(&a.as_str())
            {
                return Err(format!("--action {a:?} is not one of {}", ACTIONS.join(", ")).into());
            }
            let since = since.as_deref().map(|s| parse_since(s, Utc::now())).transpose()?;
            let filter = JobFilter {
                state: state.clone(),
                action: action.clone(),
                project_id: project.clone(),
                since,
                limit: *limit,
                ..JobFilter::default()
            };
            let page = store.list_jobs(&filter).await?;
            if *json {
                Ok(format!("{}\n", serde_json::to_string_pretty(&page)?))
            } else {
                Ok(render_list(&page.jobs))
            }
        }
    }
}

/// `--since`: an RFC 3339 time, or a duration back from `now` such as `90s`, `15m`, `2h`, `1d`.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || format!("--since {text:?} is neither an RFC 3339 time nor a duration like 15m, 2h, 1d");
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    Ok(now - chrono::Duration::seconds(secs))
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}

/// A duration in ms, short: `850ms`, `12.4s`, `3m05s`, `2h10m`.
pub fn human_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms % 3_600_000) / 60_000)
    }
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// A job for people: its fields, then its history with timings.
pub fn render_detail(d: &JobDetail, now: DateTime<Utc>) -> String {
    let s = &d.status;
    let mut out = String::new();
    let mut field = |k: &str, v: &str| {
        let _ = writeln!(out, "{k:<10} {v}");
    };
    field("job", &s.job_id);
    field("order", &s.order_id);
    field("action", &s.action);
    if let Some(t) = s.target_order_id.as_ref().filter(|t| **t != s.order_id) {
        field("service", t);
    }
    field("project", &s.project_id);
    let mut state = format!(
        "{} (step {}, attempt {} of this step, {} in all)",
        s.state, s.step, d.step_attempts, s.attempts
    );
    if d.cancel_requested {
        state.push_str(", cancel requested");
    }
    field("state", &state);
    field("server", or_dash(&s.server_id));
    field("port", or_dash(&s.port_id));
    field("volume", or_dash(&s.volume_id));
    if let Some(class) = &s.error_class {
        let step = d.error_step.as_deref().map(|st| format!(" at {st}")).unwrap_or_default();
        field("error", &format!("{class}{step}: {}", or_dash(&s.error_message)));
    }
    field("created", &time(s.created_at));
    match s.finished_at {
        Some(f) => field(
            "finished",
            &format!("{} (took {})", time(f), human_ms((f - s.created_at).num_milliseconds())),
        ),
        None => {
            field("running", &human_ms((now - s.created_at).num_milliseconds()));
            if let Some(owner) = &d.lease_owner {
                let until = d.lease_expires_at.map(time).unwrap_or_default();
                field("lease", &format!("{owner} until {until}"));
            } else {
                field("next run", &time(d.next_run_at));
            }
        }
    }
    out.push_str("\nhistory\n");
    let rows: Vec<Vec<String>> = d.history.iter().map(history_row).collect();
    out.push_str(&table(&["AT", "+ELAPSED", "TRANSITION", "ATTEMPT", "TOOK", "ACTOR", "DETAIL"], &rows));
    if !d.actions.is_empty() {
        out.push_str("\nlater actions on this service\n");
        out.push_str(&render_list(&d.actions));
    }
    out
}

fn history_row(h: &HistoryEntry) -> Vec<String> {
    let from = match (&h.from_state, &h.from_step) {
        (Some(state), Some(step)) => format!("{state}/{step}"),
        (Some(state), None) => state.clone(),
        _ => "(new)".into(),
    };
    vec![
        time(h.at),
        format!("+{}", human_ms(h.elapsed_ms)),
        format!("{from} -> {}/{}", h.to_state, h.to_step),
        h.attempt.to_string(),
        h.duration_ms.map(|d| human_ms(d as i64)).unwrap_or_else(|| "-".into()),
        or_dash(&h.actor).to_string(),
        or_dash(&h.detail).to_string(),
    ]
}

/// Jobs for people, one line each.
pub fn render_list(jobs: &[JobStatus]) -> String {
    if jobs.is_empty() {
        return "no jobs\n".into();
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.job_id.clone(),
                j.order_id.clone(),
                j.action.clone(),
                j.project_id.clone(),
                j.state.clone(),
                j.step.clone(),
                j.attempts.to_string(),
                or_dash(&j.server_id).to_string(),
                j.error_class.clone().unwrap_or_else(|| "-".into()),
                time(j.created_at),
            ]
        })
        .collect();
    table(
        &["JOB", "ORDER", "ACTION", "PROJECT", "STATE", "STEP", "ATTEMPTS", "SERVER", "ERROR", "CREATED"],
        &rows,
    )
}

/// Left-aligned columns separated by two spaces; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            if i + 1 == widths.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_times_and_durations() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_since("15m", now).unwrap(), now - chrono::Duration::minutes(15));
        assert_eq!(parse_since("1d", now).unwrap(), now - chrono::Duration::days(1));
        assert_eq!(
            parse_since("2026-11-25T00:00:00+01:00", now).unwrap(),
            DateTime::parse_from_rfc3339("2026-11-24T23:00:00Z").unwrap().with_timezone(&Utc)
        );
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("5w", now).is_err());
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(12_400), "12.4s");
        assert_eq!(human_ms(185_000), "3m05s");
    }
}
