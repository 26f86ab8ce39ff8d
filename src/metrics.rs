//! Process-wide metrics, rendered as Prometheus text by `GET /metrics`.
//!
//! A deliberately small registry: labelled counters, gauges and histograms kept in a map under a
//! mutex. Recording is a map lookup and an add, cheap next to the network calls and commits that
//! it counts. One registry per process, like Prometheus' default registry: metrics are facts
//! about the process, and threading a handle through every call site would add noise, not safety.
//!
//! Names used across the crate are constants here, so `/metrics` is documented in one place.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Orders taken off the queue, by outcome (`queued`, `duplicate`, `rejected`).
pub const INTAKE_ORDERS: &str = "provisioner_intake_orders_total";
/// Messages dead-lettered by this worker, by queue and reason kind.
pub const DEAD_LETTERED: &str = "provisioner_dead_lettered_total";
/// OpenStack API calls, by service, method, path template and status (or `error`).
pub const OPENSTACK_CALLS: &str = "provisioner_openstack_requests_total";
/// Keystone authentications (token issues), by outcome.
pub const OPENSTACK_AUTHS: &str = "provisioner_openstack_authentications_total";
/// Step runs, by kind, step and outcome; and their duration.
pub const STEP_RUNS: &str = "provisioner_step_runs_total";
pub const STEP_DURATION: &str = "provisioner_step_duration_seconds";
/// Retries scheduled, by error class.
pub const RETRIES: &str = "provisioner_retries_total";
/// Jobs that reached a final state, by state.
pub const JOBS_FINISHED: &str = "provisioner_jobs_finished_total";
/// Jobs by state, as last counted from the database (gauge).
pub const JOBS_BY_STATE: &str = "provisioner_jobs";
/// Events not yet confirmed by the broker (gauge), and events published.
pub const OUTBOX_BACKLOG: &str = "provisioner_outbox_backlog";
pub const EVENTS_PUBLISHED: &str = "provisioner_events_published_total";
/// Admin commands, by command and outcome.
pub const ADMIN_COMMANDS: &str = "provisioner_admin_commands_total";

const BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Registry {
    counters: BTreeMap<&'static str, BTreeMap<Labels, u64>>,
    gauges: BTreeMap<&'static str, BTreeMap<Labels, f64>>,
    histograms: BTreeMap<&'static str, BTreeMap<Labels, Histogram>>,
    help: BTreeMap<&'static str, &'static str>,
}

#[derive(Default, Clone)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

fn registry() -> &'static Mutex<Registry> {
    static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

/// Adds `n` to a counter.
pub fn add(name: &'static str, pairs: &[(&'static str, &str)], n: u64) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    *r.counters.entry(name).or_default().entry(labels(pairs)).or_default() += n;
}

/// Adds one to a counter.
pub fn inc(name: &'static str, pairs: &[(&'static str, &str)]) {
    add(name, pairs, 1);
}

/// Sets a gauge.
pub fn set(name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.gauges.entry(name).or_default().insert(labels(pairs), value);
}

/// Records one observation (seconds) in a histogram.
pub fn observe(name: &'static str, pairs: &[(&'static str, &str)], seconds: f64) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    let h = r.histograms.entry(name).or_default().entry(labels(pairs)).or_default();
    if h.buckets.is_empty() {
        h.buckets = vec![0; BUCKETS.len()];
    }
    for (i, le) in BUCKETS.iter().enumerate() {
        if seconds <= *le {
            h.buckets[i] += 1;
        }
    }
    h.sum += seconds;
    h.count += 1;
}

/// Sets the `# HELP` text of a metric.
pub fn describe(name: &'static str, help: &'static str) {
    registry().lock().unwrap_or_else(|p| p.into_inner()).help.insert(name, help);
}

/// The current value of a counter (tests and benchmarks read it).
pub fn counter(name: &'static str, pairs: &[(&'static str, &str)]) -> u64 {
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.counters.get(name).and_then(|m| m.get(&labels(pairs))).copied().unwrap_or(0)
}

/// The sum of a counter over all label sets whose labels include `pairs`.
pub fn counter_sum(name: &'static str, pairs: &[(&'static str, &str)]) -> u64 {
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    let want = labels(pairs);
    r.counters
        .get(name)
        .map(|m| m.iter().filter(|(l, _)| want.iter().all(|w| l.contains(w))).map(|(_, v)| v).sum())
        .unwrap_or(0)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn fmt_labels(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

/// Everything in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    let help = |out: &mut String, name: &str, kind: &str| {
        if let Some(h) = r.help.get(name) {
            let _ = writeln!(out, "# HELP {name} {h}");
        }
        let _ = writeln!(out, "# TYPE {name} {kind}");
    };
    for (name, series) in &r.counters {
        help(&mut out, name, "counter");
        for (l, v) in series {
            let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
        }
    }
    for (name, series) in &r.gauges {
        help(&mut out, name, "gauge");
        for (l, v) in series {
            let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
        }
    }
    for (name, series) in &r.histograms {
        help(&mut out, name, "histogram");
        for (l, h) in series {
            for (i, le) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    fmt_labels(l, Some(("le", le.to_string()))),
                    h.buckets[i]
                );
            }
            let _ = writeln!(out, "{name}_bucket{} {}", fmt_labels(l, Some(("le", "+Inf".into()))), h.count);
            let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(l, None), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", fmt_labels(l, None), h.count);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        inc("test_metric_total", &[("kind", "a\"b")]);
        add("test_metric_total", &[("kind", "a\"b")], 2);
        set("test_gauge", &[], 4.5);
        observe("test_seconds", &[("step", "x")], 0.3);
        let text = render();
        assert!(text.contains("# TYPE test_metric_total counter"), "{text}");
        assert!(text.contains("test_metric_total{kind=\"a\\\"b\"} 3"), "{text}");
        assert!(text.contains("test_gauge 4.5"), "{text}");
        assert!(text.contains("test_seconds_bucket{step=\"x\",le=\"0.5\"} 1"), "{text}");
        assert!(text.contains("test_seconds_bucket{step=\"x\",le=\"0.25\"} 0"), "{text}");
        assert!(text.contains("test_seconds_count{step=\"x\"} 1"), "{text}");
        assert_eq!(counter("test_metric_total", &[("kind", "a\"b")]), 3);
    }
}
