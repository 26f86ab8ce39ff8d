//! Process-wide metrics, served by `GET /metrics` in the Prometheus text format (0.0.4) or
//! OpenMetrics 1.0, whichever the scraper asks for.
//!
//! The registry and the exposition format are the `prometheus-client` crate's (typed metrics,
//! escaping, `# EOF`, counter `_total` suffixes). This module is a small façade over it so that a
//! call site stays one short line: `metrics::inc(metrics::STEP_RUNS, &[("kind", k), ...])`,
//! `metrics::observe(...)`, `metrics::set(...)`. Every metric is declared once in [`DEFS`] (name,
//! type, help, buckets); they are registered at the first use of any of them, so `/metrics` lists
//! each family from the start. A name missing from [`DEFS`] still works (it is registered on first
//! use, untyped help), but belongs in the table and in docs/operations.md.
//!
//! Cost: recording is a lookup in an immutable map, a read lock on the family (parking_lot,
//! uncontended between label sets already seen) and an atomic add; histograms lock their own
//! series only. Nothing takes a process-wide lock on the hot path; the registry's mutex is taken
//! by scrapes and by the first use of an undeclared name.
//!
//! Process metrics (`process_*`: CPU seconds, resident memory, open and maximum file
//! descriptors, threads, start time) are read from `/proc` at each scrape ([`process`]).
//!
//! One registry per process, like Prometheus' default registry: metrics are facts about the
//! process, and threading a handle through every call site would add noise, not safety.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{LazyLock, Mutex, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub mod process;

/// Resends whose body differs from the stored order (a billing bug worth a look).
pub const DIFFERING_RESENDS: &str = "provisioner_intake_differing_resends_total";
/// Orders taken off the queue, by outcome (`queued`, `duplicate`, `rejected`).
pub const INTAKE_ORDERS: &str = "provisioner_intake_orders_total";
/// Messages dead-lettered by this worker, by queue and reason kind.
pub const DEAD_LETTERED: &str = "provisioner_dead_lettered_total";
/// OpenStack API calls, by service, method, path template and status (or `error`).
pub const OPENSTACK_CALLS: &str = "provisioner_openstack_requests_total";
/// OpenStack API call durations, by service, method and status class (`2xx`, `4xx`, `5xx`,
/// `error`).
pub const OPENSTACK_DURATION: &str = "provisioner_openstack_request_duration_seconds";
/// Keystone authentications (token issues), by outcome.
pub const OPENSTACK_AUTHS: &str = "provisioner_openstack_authentications_total";
/// Step runs, by kind, step and outcome; and their duration.
pub const STEP_RUNS: &str = "provisioner_step_runs_total";
pub const STEP_DURATION: &str = "provisioner_step_duration_seconds";
/// Retries scheduled, by error class; and by step.
pub const RETRIES: &str = "provisioner_retries_total";
pub const ENGINE_RETRIES: &str = "provisioner_engine_retries_total";
/// Group commits of job transitions.
pub const ENGINE_COMMITS: &str = "provisioner_engine_commits_total";
/// Jobs that reached a final state, by state.
pub const JOBS_FINISHED: &str = "provisioner_jobs_finished_total";
/// Jobs that ended failed or cancelled, by kind and error class (the event's `error.class`).
pub const JOBS_FAILED: &str = "provisioner_jobs_failed_total";
/// From the order's intake (the job's creation) to its completion event being written, by kind
/// and final state.
pub const ORDER_TO_EVENT: &str = "provisioner_order_to_event_seconds";
/// Jobs by state, as last counted from the database (gauge).
pub const JOBS_BY_STATE: &str = "provisioner_jobs";
/// Events not yet confirmed by the broker (gauge), and events published.
pub const OUTBOX_BACKLOG: &str = "provisioner_outbox_backlog";
pub const EVENTS_PUBLISHED: &str = "provisioner_events_published_total";
/// Admin commands, by command and outcome.
pub const ADMIN_COMMANDS: &str = "provisioner_admin_commands_total";
/// Reconciler passes, by outcome; their duration; findings first seen, by kind, resource and
/// reason; orphan deletes, by resource and outcome; open findings (gauge); servers tagged.
pub const RECONCILE_PASSES: &str = "provisioner_reconcile_passes_total";
pub const RECONCILE_DURATION: &str = "provisioner_reconcile_pass_duration_seconds";
pub const RECONCILE_FINDINGS: &str = "provisioner_reconcile_findings_total";
pub const RECONCILE_DELETES: &str = "provisioner_reconcile_deletes_total";
pub const RECONCILE_OPEN: &str = "provisioner_reconcile_open_findings";
pub const RECONCILE_ADOPTED: &str = "provisioner_reconcile_adopted_total";
/// Pre-flight checks, by where they ran (`cli`, `http`, `intake`) and verdict.
pub const PREFLIGHT_CHECKS: &str = "provisioner_preflight_checks_total";
/// Always 1, with the version as a label.
pub const BUILD_INFO: &str = "provisioner_build_info";

/// Buckets of durations of one call or one step (seconds).
pub const FAST_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets of a whole job, order to event (seconds): a VM boots in tens of seconds.
pub const JOB_BUCKETS: &[f64] =
    &[0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0];

/// What a declared metric is.
#[derive(Debug, Clone, Copy)]
pub enum Type {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

/// One metric family: its exposed name (counters end in `_total`), type and help.
#[derive(Debug, Clone, Copy)]
pub struct Def {
    pub name: &'static str,
    pub kind: Type,
    pub help: &'static str,
}

const fn def(name: &'static str, kind: Type, help: &'static str) -> Def {
    Def { name, kind, help }
}

/// Every metric the crate records (docs/operations.md has the same table, with labels).
pub const DEFS: &[Def] = &[
    def(BUILD_INFO, Type::Gauge, "Build of this worker: always 1, the version as a label."),
    def(
        INTAKE_ORDERS,
        Type::Counter,
        "Orders taken off the queue, by outcome (queued, duplicate, rejected).",
    ),
    def(DIFFERING_RESENDS, Type::Counter, "Re-sent orders whose body differs from the stored one."),
    def(DEAD_LETTERED, Type::Counter, "Messages dead-lettered by this worker, by queue and reason kind."),
    def(OPENSTACK_CALLS, Type::Counter, "OpenStack API calls, by service, method, path and status."),
    def(
        OPENSTACK_DURATION,
        Type::Histogram(FAST_BUCKETS),
        "Duration of OpenStack API calls in seconds, by service, method and status class.",
    ),
    def(OPENSTACK_AUTHS, Type::Counter, "Keystone authentications, by outcome."),
    def(STEP_RUNS, Type::Counter, "Step runs, by kind, step and outcome."),
    def(STEP_DURATION, Type::Histogram(FAST_BUCKETS), "Duration of step runs in seconds, by kind and step."),
    def(RETRIES, Type::Counter, "Retries scheduled, by error class."),
    def(ENGINE_RETRIES, Type::Counter, "Retries the engine scheduled, by step."),
    def(ENGINE_COMMITS, Type::Counter, "Group commits of job transitions."),
    def(JOBS_FINISHED, Type::Counter, "Jobs that reached a final state in this worker, by state."),
    def(
        JOBS_FAILED,
        Type::Counter,
        "Jobs that ended failed or cancelled in this worker, by kind and error class.",
    ),
    def(
        ORDER_TO_EVENT,
        Type::Histogram(JOB_BUCKETS),
        "Seconds from an order's intake to its completion event, by kind and final state.",
    ),
    def(
        JOBS_BY_STATE,
        Type::Gauge,
        "Jobs in an active state (queued, in_progress, rolling_back), from the database.",
    ),
    def(OUTBOX_BACKLOG, Type::Gauge, "Completion events not yet confirmed by the broker, from the database."),
    def(EVENTS_PUBLISHED, Type::Counter, "Completion events published and confirmed."),
    def(ADMIN_COMMANDS, Type::Counter, "Admin commands, by command and outcome."),
    def(RECONCILE_PASSES, Type::Counter, "Reconciler passes run by this worker, by outcome."),
    def(RECONCILE_DURATION, Type::Histogram(JOB_BUCKETS), "Duration of reconciler passes in seconds."),
    def(
        RECONCILE_FINDINGS,
        Type::Counter,
        "Reconciler findings first seen by this worker, by kind (orphan, drift), resource and reason.",
    ),
    def(
        RECONCILE_DELETES,
        Type::Counter,
        "Orphans the reconciler deleted or failed to, by resource and outcome.",
    ),
    def(RECONCILE_OPEN, Type::Gauge, "Open reconciler findings by kind, from the database."),
    def(
        RECONCILE_ADOPTED,
        Type::Counter,
        "Servers found only by their metadata and tagged by the reconciler.",
    ),
    def(PREFLIGHT_CHECKS, Type::Counter, "Pre-flight checks of orders, by where they ran and verdict."),
];

/// A label set: names and values in the order the call site gives them.
type Labels = Vec<(&'static str, String)>;

/// Makes each series of a histogram family with the family's buckets.
#[derive(Clone)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// A registered family, and the label sets it has seen (to sum over them: tests, benchmarks).
struct Series<M, C = fn() -> M> {
    family: Family<Labels, M, C>,
    seen: RwLock<Vec<Labels>>,
}

impl<M: Clone, C: MetricConstructor<M>> Series<M, C> {
    /// Runs `f` on the series of `pairs`, creating it the first time.
    fn with(&self, pairs: &[(&'static str, &str)], f: impl FnOnce(&M)) {
        let labels = labels(pairs);
        if let Some(m) = self.family.get(&labels) {
            return f(&m);
        }
        let m = self.family.get_or_create_owned(&labels);
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if !seen.contains(&labels) {
            seen.push(labels);
        }
        drop(seen);
        f(&m)
    }
}

enum Metric {
    Counter(Series<Counter>),
    Gauge(Series<Gauge<f64, AtomicU64>>),
    Histogram(Series<Histogram, Buckets>),
}

struct Metrics {
    /// The declared families, fixed once built.
    known: HashMap<&'static str, Metric>,
    /// Families used without being declared, registered on first use.
    late: RwLock<HashMap<&'static str, &'static Metric>>,
    registry: Mutex<Registry>,
}

/// The name a family is registered under: counters without `_total` (the encoder adds it).
fn family_name(name: &str, kind: Type) -> &str {
    match kind {
        Type::Counter => name.strip_suffix("_total").unwrap_or(name),
        _ => name,
    }
}

fn build(registry: &mut Registry, d: &Def) -> Metric {
    let name = family_name(d.name, d.kind);
    match d.kind {
        Type::Counter => {
            let family = Family::<Labels, Counter>::default();
            registry.register(name, d.help, family.clone());
            Metric::Counter(Series { family, seen: RwLock::default() })
        }
        Type::Gauge => {
            let family = Family::<Labels, Gauge<f64, AtomicU64>>::default();
            registry.register(name, d.help, family.clone());
            Metric::Gauge(Series { family, seen: RwLock::default() })
        }
        Type::Histogram(buckets) => {
            let family = Family::new_with_constructor(Buckets(buckets));
            registry.register(name, d.help, family.clone());
            Metric::Histogram(Series { family, seen: RwLock::default() })
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let known = DEFS.iter().map(|d| (d.name, build(&mut registry, d))).collect();
    registry.register_collector(Box::new(process::ProcessCollector));
    let metrics = Metrics { known, late: RwLock::default(), registry: Mutex::new(registry) };
    if let Some(Metric::Gauge(g)) = metrics.known.get(BUILD_INFO) {
        g.with(&[("version", env!("CARGO_PKG_VERSION"))], |m| {
            m.set(1.0);
        });
    }
    metrics
});

/// The family of `name`; an undeclared one is registered now, as `kind`.
fn metric(name: &'static str, kind: Type) -> &'static Metric {
    let m = &*METRICS;
    if let Some(found) = m.known.get(name) {
        return found;
    }
    if let Some(found) = m.late.read().unwrap_or_else(|p| p.into_inner()).get(name) {
        return found;
    }
    let mut late = m.late.write().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = late.get(name) {
        return found;
    }
    let mut registry = m.registry.lock().unwrap_or_else(|p| p.into_inner());
    let built: &'static Metric = Box::leak(Box::new(build(&mut registry, &def(name, kind, "(undeclared)"))));
    late.insert(name, built);
    built
}

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

fn mismatch(name: &str, wanted: &str) {
    tracing::warn!(metric = name, wanted, "metric used as another type than declared; not recorded");
}

/// Adds `n` to a counter.
pub fn add(name: &'static str, pairs: &[(&'static str, &str)], n: u64) {
    match metric(name, Type::Counter) {
        Metric::Counter(s) => s.with(pairs, |c| {
            c.inc_by(n);
        }),
        _ => mismatch(name, "counter"),
    }
}

/// Adds one to a counter.
pub fn inc(name: &'static str, pairs: &[(&'static str, &str)]) {
    add(name, pairs, 1);
}

/// Sets a gauge.
pub fn set(name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
    match metric(name, Type::Gauge) {
        Metric::Gauge(s) => s.with(pairs, |g| {
            g.set(value);
        }),
        _ => mismatch(name, "gauge"),
    }
}

/// Records one observation (seconds) in a histogram.
pub fn observe(name: &'static str, pairs: &[(&'static str, &str)], seconds: f64) {
    match metric(name, Type::Histogram(FAST_BUCKETS)) {
        Metric::Histogram(s) => s.with(pairs, |h| h.observe(seconds)),
        _ => mismatch(name, "histogram"),
    }
}

/// The current value of a counter (tests and benchmarks read it).
pub fn counter(name: &'static str, pairs: &[(&'static str, &str)]) -> u64 {
    match metric(name, Type::Counter) {
        Metric::Counter(s) => s.family.get(&labels(pairs)).map(|c| c.get()).unwrap_or(0),
        _ => 0,
    }
}

/// The sum of a counter over all label sets whose labels include `pairs`.
pub fn counter_sum(name: &'static str, pairs: &[(&'static str, &str)]) -> u64 {
    let Metric::Counter(s) = metric(name, Type::Counter) else { return 0 };
    let want = labels(pairs);
    let seen = s.seen.read().unwrap_or_else(|p| p.into_inner());
    seen.iter()
        .filter(|l| want.iter().all(|w| l.contains(w)))
        .filter_map(|l| s.family.get(l).map(|c| c.get()))
        .sum()
}

/// The exposition formats `GET /metrics` serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`: what Prometheus, curl and most tools read.
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`: what Prometheus asks for first.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics if it names it, else Prometheus text.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// Everything, in `format`.
pub fn render_as(format: Format) -> String {
    let registry = METRICS.registry.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error would be a bug in a metric's labels.
    let result = match format {
        Format::Prometheus => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry),
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry),
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "cannot encode the metrics");
    }
    out
}

/// Everything in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    render_as(Format::Prometheus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histograms_in_both_formats() {
        inc("test_metric_total", &[("kind", "a\"b")]);
        add("test_metric_total", &[("kind", "a\"b")], 2);
        set("test_gauge", &[], 4.5);
        observe(STEP_DURATION, &[("kind", "k"), ("step", "x")], 0.3);
        let text = render();
        assert!(text.contains("# TYPE test_metric_total counter"), "{text}");
        assert!(text.contains("test_metric_total{kind=\"a\\\"b\"} 3"), "{text}");
        assert!(text.contains("test_gauge 4.5"), "{text}");
        assert!(
            text.contains("provisioner_step_duration_seconds_bucket{kind=\"k\",step=\"x\",le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("provisioner_step_duration_seconds_bucket{kind=\"k\",step=\"x\",le=\"0.25\"} 0"),
            "{text}"
        );
        assert!(text.contains("provisioner_build_info{version=\"0.1.0\"} 1"), "{text}");
        assert_eq!(counter("test_metric_total", &[("kind", "a\"b")]), 3);
        assert_eq!(counter_sum("test_metric_total", &[]), 3);
        let om = render_as(Format::OpenMetrics);
        assert!(om.contains("# TYPE test_metric counter"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
    }

    #[test]
    fn every_declared_name_is_unique_and_counters_end_in_total() {
        let mut names: Vec<&str> = DEFS.iter().map(|d| d.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DEFS.len());
        for d in DEFS {
            assert!(d.name.starts_with("provisioner_"), "{}", d.name);
            assert_eq!(matches!(d.kind, Type::Counter), d.name.ends_with("_total"), "{}", d.name);
        }
    }
}
