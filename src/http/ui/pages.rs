//! The console's pages as `maud` markup: every `(value)` is HTML-escaped by maud, and nothing
//! here uses `PreEscaped` on data. Charts are inline SVG (attributes only: the CSP forbids inline
//! styles).

use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::{JobsQuery, Viewer};
use crate::store::console::{AuditEntry, Dashboard, JobEvent};
use crate::store::services::{SERVICE_STATES, ServiceDetail, ServiceStatus};
use crate::store::status::{ACTIONS, ACTIVE_STATES, JobDetail, JobStatus, STATES};

/// Error classes offered by the filter (the engine's, see `messages::ErrorClass`).
const CLASSES: &[&str] = &[
    "quota_exceeded",
    "cloud_error",
    "timeout",
    "auth",
    "not_found",
    "invalid_order",
    "internal",
    "cancelled",
];

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string()
}

fn short_time(t: DateTime<Utc>) -> String {
    t.format("%m-%d %H:%M:%S").to_string()
}

fn ms(v: i64) -> String {
    crate::ops::jobs::human_ms(v)
}

fn state_badge(state: &str) -> Markup {
    html! { span class=(format!("state state-{state}")) { (state) } }
}

/// `/ui/jobs?…` with the non-empty pairs, URL-encoded.
fn jobs_url(pairs: &[(&str, &str)]) -> String {
    let q: Vec<(&str, &str)> = pairs.iter().copied().filter(|(_, v)| !v.is_empty()).collect();
    match serde_urlencoded::to_string(q) {
        Ok(s) if !s.is_empty() => format!("/ui/jobs?{s}"),
        _ => "/ui/jobs".into(),
    }
}

fn job_url(job_id: &str) -> String {
    format!("/ui/jobs/{}", urlencode_path(job_id))
}

fn service_url(target: &str) -> String {
    format!("/ui/services/{}", urlencode_path(target))
}

fn urlencode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn layout(viewer: &Viewer, here: &str, title: &str, refresh: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · provisioner console" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/console.js" defer {}
            }
            body data-refresh=[refresh] {
                header {
                    span.brand { "provisioner" }
                    nav {
                        @for (href, name) in [("/ui", "Dashboard"), ("/ui/jobs", "Jobs"), ("/ui/services", "Services"), ("/ui/findings", "Findings"), ("/ui/audit", "Audit log")] {
                            a href=(href) class=[(here == name).then_some("here")] { (name) }
                        }
                    }
                    form.search method="get" action="/ui/jobs" {
                        input type="search" name="q" placeholder="order id, job id, server id" aria-label="Search";
                        button type="submit" { "Search" }
                    }
                    div.who {
                        span #viewer { (viewer.name) " (" (viewer.role.as_str()) ")" }
                        @if viewer.session {
                            @if let Some(csrf) = &viewer.csrf {
                                form method="post" action="/ui/logout" {
                                    input type="hidden" name="csrf" value=(csrf);
                                    button.plain type="submit" { "Log out" }
                                }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A bar chart of `values` (one bar each), `w`×`h` pixels, each bar titled by `label(i, v)`.
fn bars(values: &[u64], w: u32, h: u32, class: &str, label: impl Fn(usize, u64) -> String) -> Markup {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    let n = values.len().max(1) as f64;
    let bw = f64::from(w) / n;
    let plot = f64::from(h) - 12.0;
    html! {
        svg.chart width=(w) height=(h) viewBox=(format!("0 0 {w} {h}")) role="img" {
            @for (i, v) in values.iter().enumerate() {
                @let bh = if *v == 0 { 0.0 } else { (*v as f64 / max as f64 * plot).max(1.0) };
                rect class=(format!("bar {class}")) x=(format!("{:.1}", i as f64 * bw + 0.5)) y=(format!("{:.1}", plot - bh))
                    width=(format!("{:.1}", (bw - 1.0).max(0.5))) height=(format!("{:.1}", bh)) {
                    title { (label(i, *v)) }
                }
            }
            text x="0" y=(h - 1) { "-60 min" }
            text x=(w) y=(h - 1) text-anchor="end" { "now · max " (max) }
        }
    }
}

/// Horizontal bars for a few named counts.
fn hbars(items: &[(String, u64)], class: &str, link: impl Fn(&str) -> String) -> Markup {
    let max = items.iter().map(|(_, n)| *n).max().unwrap_or(0).max(1);
    html! {
        table {
            @for (name, n) in items {
                tr {
                    td { a href=(link(name)) { (name) } }
                    td.num { (n) }
                    td {
                        svg.chart width="160" height="12" viewBox="0 0 160 12" {
                            rect class=(format!("bar {class}")) x="0" y="1" height="10"
                                width=(format!("{:.1}", (*n as f64 / max as f64 * 160.0).max(if *n > 0 { 1.0 } else { 0.0 }))) {}
                        }
                    }
                }
            }
        }
    }
}

pub fn dashboard(
    viewer: &Viewer,
    d: &Dashboard,
    dead: &Result<u64, String>,
    open_findings: &[(String, u64)],
) -> Markup {
    let day = |s: &str| d.finished_day.iter().find(|(k, _)| k == s).map(|(_, n)| *n).unwrap_or(0);
    let hour = |s: &str| d.finished_hour.iter().find(|(k, _)| k == s).map(|(_, n)| *n).unwrap_or(0);
    let body = html! {
        h1 { "Dashboard" }
        p.muted { "As of " (time(d.now)) "; refreshes every 10 s." }
        div.grid {
            div.card #active {
                h2 { "Jobs being worked on" }
                (hbars(&d.active, "", |s| jobs_url(&[("state", s)])))
            }
            div.card #finished {
                h2 { "Jobs finished" }
                table {
                    tr { th { "state" } th.num { "last hour" } th.num { "last day" } }
                    @for s in ["completed", "failed", "cancelled"] {
                        tr {
                            td { a href=(jobs_url(&[("state", s), ("since", "1d")])) { (state_badge(s)) } }
                            td.num { (hour(s)) }
                            td.num { (day(s)) }
                        }
                    }
                }
            }
            div.card #failures {
                h2 { "Failures by error class" }
                @if d.failures.is_empty() {
                    p.muted { "No job failed in the last day." }
                } @else {
                    table {
                        tr { th { "class" } th.num { "last hour" } th.num { "last day" } th {} }
                        @for (class, h, n) in &d.failures {
                            tr {
                                td { a href=(jobs_url(&[("state", "failed"), ("class", class), ("since", "1d")])) { (class) } }
                                td.num { (h) }
                                td.num { (n) }
                                td {
                                    @if viewer.operator() {
                                        a href=(format!("/ui/replay-failed?{}", serde_urlencoded::to_string([("class", class.as_str()), ("since", "1d")]).unwrap_or_default())) { "replay all…" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            div.card #throughput {
                h2 { "Orders taken in per minute" }
                (bars(&d.orders_per_minute, 300, 70, "", |i, v| format!("{} min ago: {v} orders", 59 - i)))
                h2 { "Jobs finished per minute" }
                (bars(&d.finished_per_minute, 300, 70, "ok", |i, v| format!("{} min ago: {v} jobs", 59 - i)))
            }
            div.card #outbox {
                h2 { "Outbox backlog" }
                div.big { (d.outbox_backlog) }
                p.muted {
                    "events written and not yet confirmed by the broker"
                    @if let Some(t) = d.outbox_oldest { "; oldest from " (time(t)) }
                }
                h2 { "Dead letters" }
                @match dead {
                    Ok(n) => { div.big #dead-letters { (n) } p.muted { "messages in the dead-letter queue" } }
                    Err(e) => { p.muted #dead-letters { "unknown: " (e) } }
                }
            }
            div.card #open-findings {
                h2 { "Reconciler findings (open)" }
                (hbars(open_findings, "bad", |k| format!("/ui/findings?kind={k}")))
                p.muted { "what the cloud has that the database does not expect, or the other way round" }
            }
        }
        div.card #workers {
            h2 { "Workers seen" }
            @if d.workers.is_empty() {
                p.muted { "No worker holds a lease or wrote a transition in the last hour." }
            } @else {
                table {
                    tr { th { "worker (or operator)" } th.num { "leases held" } th.num { "transitions, last hour" } th { "last seen" } }
                    @for w in &d.workers {
                        tr {
                            td.mono { (w.name) }
                            td.num { (w.leases) }
                            td.num { (w.transitions_hour) }
                            td { @if let Some(t) = w.last_seen { (time(t)) } }
                        }
                    }
                }
            }
        }
    };
    layout(viewer, "Dashboard", "Dashboard", Some(10), body)
}

fn select(name: &str, label: &str, options: &[&str], chosen: &str) -> Markup {
    html! {
        label {
            (label)
            select name=(name) {
                option value="" { "any" }
                @for o in options {
                    option value=(o) selected[*o == chosen] { (o) }
                }
            }
        }
    }
}

fn jobs_table(jobs: &[JobStatus]) -> Markup {
    html! {
        table #jobs {
            tr {
                th { "created" } th { "order id" } th { "action" } th { "project" } th { "state" } th { "step" }
                th.num { "attempts" } th { "error" } th { "server" }
            }
            @for j in jobs {
                tr.job {
                    td { (short_time(j.created_at)) }
                    td { a.order href=(job_url(&j.job_id)) { (j.order_id) } }
                    td { (j.action) }
                    td.mono { (j.project_id) }
                    td { (state_badge(&j.state)) }
                    td { (j.step) }
                    td.num { (j.attempts) }
                    td {
                        @if let Some(c) = &j.error_class { b { (c) } }
                        @if let Some(m) = &j.error_message { " " span.muted { (truncate(m, 120)) } }
                    }
                    td.mono { @if let Some(s) = &j.server_id { (s) } }
                }
            }
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

pub fn jobs(viewer: &Viewer, q: &JobsQuery, jobs: &[JobStatus], next: Option<&str>) -> Markup {
    let searching = !q.q.trim().is_empty();
    let body = html! {
        h1 { @if searching { "Jobs matching " code { (q.q) } } @else { "Jobs" } }
        div.card {
            form.filters method="get" action="/ui/jobs" {
                (select("state", "state", STATES, &q.state))
                (select("action", "action", ACTIONS, &q.action))
                label { "project" input name="project" value=(q.project) size="14"; }
                label {
                    "error class"
                    input name="class" value=(q.class) list="classes" size="14";
                    datalist #classes { @for c in CLASSES { option value=(c) {} } }
                }
                label { "since" input name="since" value=(q.since) placeholder="1h, 2d, or RFC 3339" size="14"; }
                button type="submit" { "Filter" }
                a href="/ui/jobs" { "clear" }
            }
        }
        @if viewer.operator() && q.state == "failed" && !q.class.trim().is_empty() {
            p {
                a #replay-all href=(format!("/ui/replay-failed?{}", serde_urlencoded::to_string([("class", q.class.trim()), ("since", if q.since.trim().is_empty() { "1d" } else { q.since.trim() })]).unwrap_or_default())) {
                    "Replay all jobs failed with " (q.class.trim()) "…"
                }
            }
        }
        div.card {
            @if jobs.is_empty() {
                p.muted #no-jobs { "No job matches." }
            } @else {
                (jobs_table(jobs))
            }
            @if let Some(cursor) = next {
                div.pager {
                    a #next href=(jobs_url(&[("state", &q.state), ("action", &q.action), ("project", &q.project), ("class", &q.class), ("since", &q.since), ("cursor", cursor)])) { "Older jobs →" }
                }
            }
        }
    };
    layout(viewer, "Jobs", "Jobs", None, body)
}

/// The order as received, with anything secret replaced: keys that name a secret, sealed
/// values (`v1:<key id>:…`), and `user_data` (cloud-init often carries credentials).
pub fn redact_order(body: &str) -> String {
    fn secret_key(k: &str) -> bool {
        let k = k.to_ascii_lowercase();
        ["password", "passwd", "secret", "token", "credential", "private", "api_key", "apikey"]
            .iter()
            .any(|s| k.contains(s))
    }
    fn walk(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if secret_key(k) && !v.is_null() {
                        *v = Value::String("[redacted]".into());
                    } else if k == "user_data" {
                        let n = v.as_str().map(str::len).unwrap_or(0);
                        *v = Value::String(format!("[redacted: {n} bytes]"));
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::String(s) if s.starts_with("v1:") && s.matches(':').count() >= 2 => {
                *s = "[sealed]".into();
            }
            _ => {}
        }
    }
    match serde_json::from_str::<Value>(body) {
        Ok(mut v) => {
            walk(&mut v);
            serde_json::to_string_pretty(&v).unwrap_or_default()
        }
        // Intake stores only validated JSON; anything else is not shown at all.
        Err(_) => "[not JSON: not shown]".into(),
    }
}

pub fn job(
    viewer: &Viewer,
    d: &JobDetail,
    order: &str,
    events: &[JobEvent],
    audit: &[AuditEntry],
    notice: Option<&str>,
) -> Markup {
    let s = &d.status;
    let active = ACTIVE_STATES.contains(&s.state.as_str());
    let body = html! {
        @if let Some(n) = notice { div.notice #notice { (n) } }
        h1 { "Job " code #order-id { (s.order_id) } " " span #state { (state_badge(&s.state)) } }
        div.card {
            dl.facts {
                dt { "job id" } dd.mono #job-id { (s.job_id) }
                dt { "action" } dd { (s.action) }
                dt { "service" } dd { @if let Some(t) = &s.target_order_id { a href=(service_url(t)) { (t) } } }
                dt { "project" } dd.mono { (s.project_id) }
                dt { "step" } dd { (s.step) " (attempt " (d.step_attempts) "; " (s.attempts) " in all)" }
                dt { "created" } dd { (time(s.created_at)) }
                dt { "updated" } dd { (time(s.updated_at)) }
                dt { "finished" } dd { @if let Some(f) = s.finished_at { (time(f)) " (" (ms((f - s.created_at).num_milliseconds())) " after creation)" } @else { "—" } }
                @if active { dt { "next run" } dd { (time(d.next_run_at)) } }
                @if let Some(owner) = &d.lease_owner {
                    dt { "lease" } dd.mono { (owner) @if let Some(t) = d.lease_expires_at { " until " (time(t)) } }
                }
                @if d.cancel_requested && active { dt { "cancel" } dd { "requested; the engine is rolling back" } }
            }
            @if let Some(class) = &s.error_class {
                div.error #error {
                    b { (class) } @if let Some(step) = &d.error_step { " at " code { (step) } }
                    div.msg { (s.error_message.as_deref().unwrap_or("")) }
                }
            }
            @if viewer.operator() {
                @if let Some(csrf) = &viewer.csrf {
                    div.actions {
                        @if s.state == "failed" {
                            form #replay method="post" action=(format!("{}/replay", job_url(&s.job_id))) {
                                input type="hidden" name="csrf" value=(csrf);
                                input name="reason" placeholder="reason (optional)" size="24";
                                button #replay-button type="submit" { "Replay" }
                            }
                        }
                        @if (s.state == "queued" || s.state == "in_progress") && !d.cancel_requested {
                            form #cancel method="post" action=(format!("{}/cancel", job_url(&s.job_id))) data-confirm="Cancel this job? What it created is deleted." {
                                input type="hidden" name="csrf" value=(csrf);
                                input name="reason" placeholder="reason (optional)" size="24";
                                button.danger #cancel-button type="submit" { "Cancel" }
                            }
                        }
                    }
                }
            }
        }
        div.grid {
            div.card #resources {
                h2 { "Resources" }
                dl.facts {
                    dt { "server" } dd.mono #server-id { (s.server_id.as_deref().unwrap_or("—")) }
                    dt { "port" } dd.mono { (s.port_id.as_deref().unwrap_or("—")) }
                    dt { "volume" } dd.mono { (s.volume_id.as_deref().unwrap_or("—")) }
                }
            }
            div.card #order {
                h2 { "Order (secrets redacted)" }
                pre { (order) }
            }
        }
        div.card #history {
            h2 { "History" }
            ol.timeline {
                @for h in &d.history {
                    li class=(format!("to-{}", h.to_state)) {
                        div.when {
                            (time(h.at)) " · +" (ms(h.elapsed_ms))
                            @if let Some(dur) = h.duration_ms { " · " (h.from_step.as_deref().unwrap_or("")) " took " (ms(dur as i64)) }
                            @if let Some(a) = &h.actor { " · " span.mono { (a) } }
                        }
                        div {
                            @if let (Some(fs), Some(fst)) = (&h.from_state, &h.from_step) {
                                (fs) "/" (fst) " → "
                            }
                            b { (h.to_state) "/" (h.to_step) }
                            @if h.attempt > 0 { " (attempt " (h.attempt) ")" }
                        }
                        @if let Some(detail) = &h.detail { div.detail { (detail) } }
                    }
                }
            }
        }
        div.card #events {
            h2 { "Events published" }
            @if events.is_empty() {
                p.muted { "None yet: a job's event is written when it ends." }
            } @else {
                table {
                    tr { th { "routing key" } th { "written" } th { "confirmed by the broker" } th.num { "publish attempts" } th { "body" } }
                    @for e in events {
                        tr {
                            td.mono { (e.routing_key) }
                            td { (time(e.created_at)) }
                            td {
                                @if let Some(t) = e.sent_at { (time(t)) } @else { "not yet" }
                                @if let Some(err) = &e.last_error { div.muted { (err) } }
                            }
                            td.num { (e.publish_attempts) }
                            td { details { summary { (e.event_id) } pre { (pretty(&e.body)) } } }
                        }
                    }
                }
            }
        }
        @if !d.actions.is_empty() {
            div.card #actions {
                h2 { "Later orders on this service" }
                (jobs_table(&d.actions))
            }
        }
        @if !audit.is_empty() {
            div.card #audit {
                h2 { "Console audit" }
                (audit_table(audit))
            }
        }
    };
    layout(viewer, "Jobs", &s.order_id, active.then_some(3), body)
}

fn pretty(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| body.into())
}

fn audit_table(entries: &[AuditEntry]) -> Markup {
    html! {
        table {
            tr { th { "at" } th { "operator" } th { "action" } th { "target" } th { "outcome" } th { "detail" } th { "from" } }
            @for a in entries {
                tr {
                    td { (time(a.at)) }
                    td { (a.operator) " " span.muted { "(" (a.role) ")" } }
                    td { (a.action) }
                    td.mono { @if let Some(t) = &a.target { (t) } }
                    td { (a.outcome) }
                    td { @if let Some(d) = &a.detail { (d) } }
                    td.mono { @if let Some(r) = &a.remote { (r) } }
                }
            }
        }
    }
}

pub fn audit(viewer: &Viewer, entries: &[AuditEntry]) -> Markup {
    let body = html! {
        h1 { "Audit log" }
        p.muted { "What was done in this console, newest first (the last 200). The job's own history also names the operator." }
        div.card { @if entries.is_empty() { p.muted { "Nothing yet." } } @else { (audit_table(entries)) } }
    };
    layout(viewer, "Audit log", "Audit log", None, body)
}

pub fn findings(
    viewer: &Viewer,
    kind: &str,
    project: &str,
    all: bool,
    list: &[crate::store::reconcile::Finding],
) -> Markup {
    let body = html! {
        h1 { "Reconciler findings" }
        div.card {
            form.filters method="get" action="/ui/findings" {
                (select("kind", "kind", &["orphan", "drift"], kind))
                label { "project" input name="project" value=(project) size="14"; }
                label { "cleared too" input type="checkbox" name="all" value="true" checked[all]; }
                button type="submit" { "Filter" }
            }
        }
        div.card {
            @if list.is_empty() { p.muted #no-findings { "No finding matches." } } @else {
                table #findings {
                    tr {
                        th { "last seen" } th { "kind" } th { "resource" } th { "project" } th { "job / service" }
                        th { "reason" } th { "expected → found" } th { "action" } th { "first seen" }
                    }
                    @for f in list {
                        tr {
                            td { (short_time(f.last_seen_at)) @if !f.open { div.muted { "cleared" } } }
                            td { (f.kind) }
                            td.mono { (f.resource_type) " " (f.resource_id) }
                            td.mono { (f.project_id) }
                            td {
                                @if let Some(j) = &f.job_id { a.mono href=(job_url(j)) { (j) } br; }
                                @if let Some(t) = &f.target_order_id { a href=(service_url(t)) { (t) } }
                            }
                            td { (f.reason) }
                            td { (f.expected.as_deref().unwrap_or("—")) " → " (f.found.as_deref().unwrap_or("—")) }
                            td { (f.action) @if let Some(e) = &f.action_error { div.muted { (e) } } }
                            td { (short_time(f.first_seen_at)) }
                        }
                    }
                }
            }
        }
    };
    layout(viewer, "Findings", "Findings", None, body)
}

pub fn bulk_confirm(
    viewer: &Viewer,
    class: &str,
    since_text: &str,
    since: DateTime<Utc>,
    count: u64,
) -> Markup {
    let body = html! {
        h1 { "Replay failed jobs" }
        div.card {
            p #bulk-count {
                b { (count) } " job(s) failed with " code { (class) } " since " (time(since)) " (" (since_text) ")."
            }
            @if count > u64::from(crate::store::console::MAX_BULK) {
                div.warning { "Only the first " (crate::store::console::MAX_BULK) " (oldest failures first) are replayed in one go." }
            }
            p { a href=(jobs_url(&[("state", "failed"), ("class", class), ("since", &since.to_rfc3339())])) { "See them" } }
            @if count == 0 {
                p.muted { "Nothing to replay." }
            } @else if viewer.operator() {
                @if let Some(csrf) = &viewer.csrf {
                    form #bulk method="post" action="/ui/replay-failed" {
                        input type="hidden" name="csrf" value=(csrf);
                        input type="hidden" name="class" value=(class);
                        input type="hidden" name="since" value=(since.to_rfc3339());
                        input type="hidden" name="expected" value=(count);
                        div.actions {
                            input name="reason" placeholder="reason (optional)" size="30";
                            button #bulk-confirm type="submit" { "Replay these " (count) " jobs" }
                        }
                    }
                }
            } @else {
                p.muted { "Your role is read-only." }
            }
        }
    };
    layout(viewer, "Jobs", "Replay failed jobs", None, body)
}

pub fn bulk_changed(viewer: &Viewer, class: &str, since: DateTime<Utc>, expected: u64, count: u64) -> Markup {
    let body = html! {
        h1 { "Replay failed jobs" }
        div.warning #bulk-changed {
            "Nothing was replayed: " (expected) " job(s) were counted, " (count) " match now. "
            a href=(format!("/ui/replay-failed?{}", serde_urlencoded::to_string([("class", class), ("since", &since.to_rfc3339())]).unwrap_or_default())) { "Count again" }
        }
    };
    layout(viewer, "Jobs", "Replay failed jobs", None, body)
}

pub fn bulk_done(
    viewer: &Viewer,
    class: &str,
    since: DateTime<Utc>,
    replayed: u64,
    refused: u64,
    capped: bool,
) -> Markup {
    let body = html! {
        h1 { "Replay failed jobs" }
        div.notice #bulk-done {
            (replayed) " job(s) replayed"
            @if refused > 0 { "; " (refused) " were no longer failed" }
            "."
            @if capped { " More remain: count again to replay the next ones." }
        }
        p { a href=(jobs_url(&[("class", class), ("since", &since.to_rfc3339())])) { "See the jobs" } }
    };
    layout(viewer, "Jobs", "Replay failed jobs", None, body)
}

pub fn services(
    viewer: &Viewer,
    state: &str,
    project: &str,
    list: &[ServiceStatus],
    next: Option<&str>,
) -> Markup {
    let body = html! {
        h1 { "Services" }
        div.card {
            form.filters method="get" action="/ui/services" {
                (select("state", "state", SERVICE_STATES, state))
                label { "project" input name="project" value=(project) size="14"; }
                button type="submit" { "Filter" }
            }
        }
        div.card {
            @if list.is_empty() { p.muted { "No service matches." } } @else {
                table #services {
                    tr { th { "created" } th { "service (create order)" } th { "project" } th { "state" } th { "flavor" } th { "server" } th { "last action" } }
                    @for s in list {
                        tr {
                            td { (short_time(s.created_at)) }
                            td { a href=(service_url(&s.target_order_id)) { (s.target_order_id) } }
                            td.mono { (s.project_id) }
                            td { (state_badge(&s.state)) }
                            td { @if let Some(f) = &s.flavor { (f) } }
                            td.mono { @if let Some(v) = &s.server_id { (v) } }
                            td { @if let Some(a) = &s.last_action_order_id { (a) } }
                        }
                    }
                }
            }
            @if let Some(c) = next {
                div.pager {
                    a href=(format!("/ui/services?{}", serde_urlencoded::to_string([("state", state), ("project", project), ("cursor", c)]).unwrap_or_default())) { "Older services →" }
                }
            }
        }
    };
    layout(viewer, "Services", "Services", None, body)
}

pub fn service(viewer: &Viewer, d: &ServiceDetail) -> Markup {
    let s = &d.status;
    let body = html! {
        h1 { "Service " code { (s.target_order_id) } " " (state_badge(&s.state)) }
        div.card {
            dl.facts {
                dt { "project" } dd.mono { (s.project_id) }
                dt { "create job" } dd.mono { a href=(job_url(&s.create_job_id)) { (s.create_job_id) } }
                dt { "server" } dd.mono { (s.server_id.as_deref().unwrap_or("—")) }
                dt { "port" } dd.mono { (s.port_id.as_deref().unwrap_or("—")) }
                dt { "volume" } dd.mono { (s.volume_id.as_deref().unwrap_or("—")) }
                @if let Some(boot) = &s.boot_volume_id {
                    dt { "boot volume" } dd.mono { (boot) }
                }
                dt { "flavor" } dd { (s.flavor.as_deref().unwrap_or("—")) }
                dt { "created" } dd { (time(s.created_at)) }
                dt { "updated" } dd { (time(s.updated_at)) }
            }
        }
        div.card {
            h2 { "Its orders (create first)" }
            (jobs_table(&d.jobs))
        }
    };
    layout(viewer, "Services", &s.target_order_id, None, body)
}

pub fn login(csrf: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Log in · provisioner console" }
                link rel="stylesheet" href="/ui/assets/console.css";
            }
            body {
                div.card.login {
                    h1 { "provisioner console" }
                    @if let Some(e) = error { div.error #login-error { (e) } }
                    form #login method="post" action="/ui/login" {
                        input type="hidden" name="csrf" value=(csrf);
                        label { "Name" input #name name="name" autocomplete="username" required autofocus; }
                        label { "Password" input #password name="password" type="password" autocomplete="current-password" required; }
                        button #login-button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

pub fn error_page(status: axum::http::StatusCode, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (status.as_u16()) " · provisioner console" }
                link rel="stylesheet" href="/ui/assets/console.css";
            }
            body {
                main {
                    div.card {
                        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                        p #message { (message) }
                        p { a href="/ui" { "Back to the dashboard" } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_redacted() {
        let body = r#"{"order_id":"o1","user":{"password":"hunter2","name":"bob"},"server":{"user_data":"I2Nsb3Vk","metadata":{"api_token":"t","k":"v1:key1:abcd"}}}"#;
        let out = redact_order(body);
        assert!(!out.contains("hunter2") && !out.contains("I2Nsb3Vk") && !out.contains("abcd"), "{out}");
        assert!(
            out.contains("[redacted]") && out.contains("[redacted: 8 bytes]") && out.contains("[sealed]")
        );
        assert!(out.contains("bob") && out.contains("o1"));
        assert_eq!(redact_order("not json"), "[not JSON: not shown]");
    }

    #[test]
    fn markup_escapes_what_it_shows() {
        let m = html! { td { ("<script>alert(1)</script>") } a href=(job_url("a\"b<c>")) {} };
        let s = m.into_string();
        assert!(s.contains("&lt;script&gt;"), "{s}");
        assert!(!s.contains("<script>"), "{s}");
        assert!(s.contains("a%22b%3Cc%3E"), "{s}");
        assert_eq!(
            jobs_url(&[("state", "failed"), ("class", ""), ("q", "a&b")]),
            "/ui/jobs?state=failed&q=a%26b"
        );
    }
}
