//! W3C trace context through the worker: one trace from billing's order to the completion event,
//! across workers, crashes and retries.
//!
//! - **Intake**: an order's AMQP header `traceparent` (billing's span) becomes the parent of an
//!   `intake order` span; that span's context is stored with the job (`jobs.traceparent`). With
//!   traces off, billing's own `traceparent` is stored as it came (validated), so the event still
//!   carries billing's trace.
//! - **Engine**: every drive of a job (a claim: first run, retry, takeover after a crash) opens a
//!   `job` span whose parent is the stored context, not whatever ran before in this process, and
//!   each step runs in a `step <name>` span under it. A job stored without one (older rows, or
//!   traces enabled later) gets trace id = its job id, so its drives still share one trace.
//! - **OpenStack**: each request of a job is a client span (see `openstack::session`).
//! - **Event**: the completion event's `traceparent` is the span that ended the job (or the stored
//!   context when traces are off), so billing's consumer continues the same trace.
//!
//! When no exporter is installed ([`enabled`] is false), nothing here creates spans: intake and
//! the engine pay one atomic load per order or step.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

/// The target of the spans that exist for traces only (hidden from the log output).
pub const SPAN_TARGET: &str = "provisioner::span";

/// The W3C header, on orders (AMQP header) and events (body field and AMQP header).
pub const TRACEPARENT: &str = "traceparent";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint is configured and the layer is installed).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(super) fn set_enabled() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// What the exporting layer sees: our spans, and our warnings and errors (as span events).
pub(super) fn exported(meta: &tracing::Metadata<'_>) -> bool {
    let ours = meta.target().starts_with("openstack_provisioner") || meta.target() == SPAN_TARGET;
    ours && if meta.is_span() {
        *meta.level() <= tracing::Level::INFO
    } else {
        *meta.level() <= tracing::Level::WARN
    }
}

/// A traceparent parsed and checked (version 00, non-zero ids), or `None`.
pub fn parse(traceparent: &str) -> Option<SpanContext> {
    // The exact shape first (the propagator is lenient about the lengths of the hex fields).
    let parts: Vec<&str> = traceparent.trim().split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !(parts.len() == 4 && parts[0] == "00" && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2)) {
        return None;
    }
    let carrier: HashMap<String, String> =
        HashMap::from([(TRACEPARENT.to_string(), traceparent.trim().to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// The `traceparent` of a span context.
pub fn format(sc: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), sc.trace_flags().to_u8())
}

/// The trace id (32 hex digits) of a traceparent.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    parse(traceparent).map(|sc| sc.trace_id().to_string())
}

/// The valid `traceparent` header of an AMQP message, normalised; `None` if absent or malformed
/// (a malformed one is ignored, as W3C says: the order is still taken).
pub fn from_headers(headers: Option<&FieldTable>) -> Option<String> {
    let value = headers?.inner().get(TRACEPARENT)?;
    let text = match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        _ => return None,
    };
    parse(&text).map(|sc| format(&sc))
}

/// The traceparent of `span`, if it has a valid OpenTelemetry context.
pub fn traceparent_of(span: &Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| format(&sc))
}

/// The traceparent of the current span (the step that ends a job), if traces are on.
pub fn current() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&Span::current())
}

/// The parent of a job's spans: its stored context, else one derived from the job id (trace id
/// = job id), so that every drive of the job lands in the same trace.
pub fn job_parent(traceparent: Option<&str>, job_id: Uuid) -> Context {
    let sc = traceparent.and_then(parse).unwrap_or_else(|| {
        let bytes = job_id.as_bytes();
        let mut span = [0u8; 8];
        span.copy_from_slice(&bytes[8..]);
        span[0] |= 1; // never the invalid all-zero id
        SpanContext::new(
            TraceId::from_bytes(*bytes),
            SpanId::from_bytes(span),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        )
    });
    Context::new().with_remote_span_context(sc)
}

/// An order's intake span (only when traces are on), child of billing's `incoming` context, and
/// the traceparent to store with the job: the span's, or `incoming` as it came.
pub fn intake_span(
    queue: &str,
    job_id: Uuid,
    order_id: &str,
    incoming: Option<&str>,
) -> (Span, Option<String>) {
    if !enabled() {
        return (Span::none(), incoming.map(str::to_string));
    }
    let span = tracing::info_span!(target: SPAN_TARGET, "intake",
        otel.name = "intake order", otel.kind = "consumer",
        messaging.system = "rabbitmq", messaging.operation.type = "process",
        messaging.destination.name = queue, job_id = %job_id, order_id, outcome = tracing::field::Empty);
    let parent = incoming.and_then(parse).map(|sc| Context::new().with_remote_span_context(sc));
    let _ = span.set_parent(parent.unwrap_or_default());
    let stored = traceparent_of(&span).or_else(|| incoming.map(str::to_string));
    (span, stored)
}

/// Puts a job's drive span under the job's trace, and its trace id in the logs.
pub fn adopt(span: &Span, traceparent: Option<&str>, job_id: Uuid, worker: &str) {
    if enabled() {
        let _ = span.set_parent(job_parent(traceparent, job_id));
        span.set_attribute("provisioner.worker", worker.to_string());
        if let Some(sc) = Some(span.context().span().span_context().clone()).filter(SpanContext::is_valid) {
            span.record("trace_id", sc.trace_id().to_string());
        }
    } else if let Some(id) = traceparent.and_then(trace_id_of) {
        span.record("trace_id", id);
    }
}

/// The span of one step run (a `Span::none()` when traces are off).
pub fn step_span(kind: &str, step: &str, state: &str, attempt: u32) -> Span {
    if !enabled() {
        return Span::none();
    }
    tracing::info_span!(target: SPAN_TARGET, "step",
        otel.name = %format_args!("step {step}"), job.kind = kind, step, state, attempt,
        outcome = tracing::field::Empty)
}

/// Marks the current span (a step) as failed with `message`.
pub fn failed(message: &str) {
    if enabled() {
        Span::current().set_status(Status::error(message.to_string()));
    }
}

/// An OpenStack request's client span, when traces are on and the request belongs to a job.
pub fn client_span(service: &str, method: &str, template: &str, url: &str, global_request_id: &str) -> Span {
    if !enabled() || crate::openstack::request_id::in_job().is_none() {
        return Span::none();
    }
    let host = url.split("://").nth(1).and_then(|r| r.split(['/', '?']).next()).unwrap_or("");
    let (address, port) = match host.rsplit_once(':') {
        Some((a, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (a, p.parse::<i64>().ok()),
        _ => (host, None),
    };
    let span = tracing::info_span!(target: SPAN_TARGET, "openstack request",
        otel.name = %format_args!("{method} {template}"), otel.kind = "client",
        http.request.method = method, url.template = template, server.address = address,
        openstack.service = service, openstack.global_request_id = global_request_id,
        http.response.status_code = tracing::field::Empty, openstack.request_id = tracing::field::Empty);
    if let Some(p) = port {
        span.set_attribute("server.port", p);
    }
    span
}

/// Records an answer on a client span: status, the service's request id, error status on 5xx.
pub fn client_answer(span: &Span, status: u16, request_id: Option<&str>) {
    if span.is_none() {
        return;
    }
    span.record("http.response.status_code", i64::from(status));
    if let Some(id) = request_id {
        span.record("openstack.request_id", id);
    }
    if status >= 500 {
        span.set_status(Status::error(format!("HTTP {status}")));
    }
}

/// Records a request that got no answer.
pub fn client_failed(span: &Span, error: &str) {
    if span.is_none() {
        return;
    }
    span.set_attribute("error.type", "transport");
    span.set_status(Status::error(error.to_string()));
}

/// Records the outcome of a step or an order on its span.
pub fn outcome(span: &Span, outcome: &str) {
    if !span.is_none() {
        span.record("outcome", outcome);
    }
}

/// An attribute on a span, bypassing `tracing` (for values known only later).
pub fn attribute(span: &Span, kv: KeyValue) {
    if !span.is_none() {
        span.set_attribute(kv.key, kv.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::{LongString, ShortString};

    #[test]
    fn traceparents_are_checked_and_normalised() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse(tp).map(|sc| format(&sc)).as_deref(), Some(tp));
        assert_eq!(trace_id_of(tp).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "not a traceparent",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        let mut headers = FieldTable::default();
        headers.insert(ShortString::from(TRACEPARENT), AMQPValue::LongString(LongString::from(tp)));
        assert_eq!(from_headers(Some(&headers)).as_deref(), Some(tp));
        headers.insert(ShortString::from(TRACEPARENT), AMQPValue::LongString(LongString::from("junk")));
        assert_eq!(from_headers(Some(&headers)), None);
        assert_eq!(from_headers(None), None);
    }

    #[test]
    fn a_job_without_a_stored_context_gets_its_id_as_trace_id() {
        let job = Uuid::parse_str("7c9e6679-7425-40de-944b-e07fc1f90ae7").unwrap();
        let cx = job_parent(None, job);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(sc.trace_id().to_string(), "7c9e6679742540de944be07fc1f90ae7");
        let stored = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        let sc = job_parent(Some(stored), job).span().span_context().clone();
        assert_eq!(format(&sc), stored, "the stored context wins, with its sampling flag");
    }

    #[test]
    fn with_traces_off_intake_keeps_billings_context() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (span, stored) = intake_span("q", Uuid::new_v4(), "B-1", Some(tp));
        assert!(span.is_none());
        assert_eq!(stored.as_deref(), Some(tp));
    }
}
