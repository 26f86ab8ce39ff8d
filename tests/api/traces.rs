//! Tests: OpenTelemetry traces end to end, as an operator would see them in their collector.
//!
//! An in-process OTLP/HTTP receiver (an axum route decoding `ExportTraceServiceRequest`) takes
//! what real `provisioner run` processes export with `OTEL_EXPORTER_OTLP_ENDPOINT` set. Billing
//! publishes an order with a `traceparent` header; the first worker is SIGKILLed while the job
//! waits for its server, a second one finishes it. The trace must be one: billing's span → the
//! intake span → a job span per worker → the step spans → the OpenStack client spans, and the
//! completion event carries it on.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use lapin::BasicProperties;
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use openstack_provisioner::messages::Event;
use openstack_provisioner::sim::{DEMO_PROJECT_ID, Timings};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

use crate::engine::stack::{Stack, order};
use crate::engine::wait_ready;
use crate::helpers::{header_text, wait_until};

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attrs: HashMap<String, String>,
}

impl Got {
    fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).map(String::as_str)
    }
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValue::StringValue(s)) => s.clone(),
        Some(AnyValue::IntValue(i)) => i.to_string(),
        Some(AnyValue::BoolValue(b)) => b.to_string(),
        Some(AnyValue::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> impl axum::response::IntoResponse {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return (axum::http::StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut got = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(&kv.value))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                got.push(Got {
                    service: service.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    name: s.name.clone(),
                    kind: s.kind,
                    attrs: s.attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect(),
                });
            }
        }
    }
    (axum::http::StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The receiver: `http://127.0.0.1:<port>` (the exporter appends `/v1/traces`).
async fn otlp_receiver() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let app = axum::Router::new().route("/v1/traces", post(receive)).with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_one_order_is_one_trace_from_billing_to_the_event_across_a_worker_crash() {
    let (endpoint, spans) = otlp_receiver().await;
    // Slow boots: the job waits for its server long enough to kill the worker there.
    let stack = Stack::new(Timings { boot_mean_ms: 2500, boot_jitter_ms: 0, ..Timings::fast() }).await;
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        ("OTEL_SERVICE_NAME", "provisioner-under-test".to_string()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_string()),
    ];
    let mut first = stack.child_with("a", &otel);
    wait_ready(&first).await;

    // Billing publishes the order with its own span as the parent.
    let billing_trace = hex(uuid::Uuid::new_v4().as_bytes());
    let billing_span = &hex(uuid::Uuid::new_v4().as_bytes())[..16];
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from("traceparent"),
        AMQPValue::LongString(LongString::from(format!("00-{billing_trace}-{billing_span}-01"))),
    );
    let confirm = stack
        .env
        .channel
        .basic_publish(
            ShortString::from(stack.env.names.orders_exchange.as_str()),
            ShortString::from("order.create"),
            BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() },
            &order("B-trace-1", DEMO_PROJECT_ID, false),
            BasicProperties::default()
                .with_content_type(ShortString::from("application/json"))
                .with_delivery_mode(2)
                .with_headers(headers),
        )
        .await
        .unwrap();
    confirm.await.unwrap();

    // The first worker gets as far as waiting for the server, and its spans reach the collector.
    let store = stack.env.store.clone();
    wait_until(Duration::from_secs(30), "the job waits for its server", || async {
        stack.env.count_jobs_where("step = 'wait_server'").await == 1
    })
    .await;
    // Its drive ended when the job began to wait: its job span is exported within the batch
    // delay (spans still buffered at a SIGKILL are lost; that is not what this test is about).
    wait_until(Duration::from_secs(10), "the first worker's job span", || async {
        spans
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.name == "job" && s.attr("provisioner.worker").is_some_and(|w| w.starts_with("a-")))
    })
    .await;
    first.kill().await;
    let mut second = stack.child_with("b", &otel);
    wait_ready(&second).await;

    // The second worker finishes it; billing receives the event.
    let mut received: Vec<(Vec<u8>, FieldTable)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while received.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no event: {}", second.log_text());
        received = stack.env.drain(&stack.events_queue).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event: Event = serde_json::from_slice(&received[0].0).unwrap();
    let job_id = event.job_id.to_string();
    let traceparent = event.traceparent.clone().expect("the event carries a traceparent");
    assert_eq!(header_text(&received[0].1, "traceparent").as_deref(), Some(traceparent.as_str()));
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts[1], billing_trace, "the event is in billing's trace: {traceparent}");
    // SIGTERM flushes what the second worker still buffers.
    assert!(second.terminate(Duration::from_secs(30)).await.success());

    let all = spans.lock().unwrap().clone();
    let ours: Vec<&Got> = all.iter().filter(|s| s.trace_id == billing_trace).collect();
    assert!(ours.iter().all(|s| s.service == "provisioner-under-test"), "{ours:#?}");
    // Nothing of this job was exported in another trace.
    let strays: Vec<&Got> =
        all.iter().filter(|s| s.attr("job_id") == Some(&job_id) && s.trace_id != billing_trace).collect();
    assert!(strays.is_empty(), "spans of the job outside its trace: {strays:#?}");

    let intake: Vec<&&Got> = ours.iter().filter(|s| s.name == "intake order").collect();
    assert_eq!(intake.len(), 1, "{ours:#?}");
    assert_eq!(intake[0].parent, billing_span, "the intake span's parent is billing's span");
    assert_eq!(intake[0].kind, SpanKind::Consumer as i32);
    assert_eq!(intake[0].attr("outcome"), Some("queued"));

    // One job span per worker that drove it, each under the intake span (stored with the job).
    let drives: Vec<&&Got> = ours.iter().filter(|s| s.name == "job").collect();
    assert!(drives.len() >= 2, "{drives:#?}");
    assert!(drives.iter().all(|d| d.parent == intake[0].span_id), "{drives:#?}");
    let workers: HashSet<&str> = drives.iter().filter_map(|d| d.attr("provisioner.worker")).collect();
    assert!(
        workers.iter().any(|w| w.starts_with("a-")) && workers.iter().any(|w| w.starts_with("b-")),
        "{workers:?}"
    );
    let drive_ids: HashSet<&str> = drives.iter().map(|d| d.span_id.as_str()).collect();

    let steps: Vec<&&Got> = ours.iter().filter(|s| s.name.starts_with("step ")).collect();
    assert!(steps.iter().all(|s| drive_ids.contains(s.parent.as_str())), "{steps:#?}");
    let names: HashSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    for want in ["step resolve", "step create_port", "step create_server", "step wait_server"] {
        assert!(names.contains(want), "{want} missing: {names:?}");
    }
    let step_ids: HashSet<&str> = steps.iter().map(|s| s.span_id.as_str()).collect();
    assert!(step_ids.contains(parts[2]), "the event's parent span is the step that ended the job");

    // Every OpenStack request of the job is a client span under a step, with the job's global
    // request id and the service's own request id.
    let calls: Vec<&&Got> = ours.iter().filter(|s| s.kind == SpanKind::Client as i32).collect();
    assert!(calls.len() >= 3, "{calls:#?}");
    assert!(calls.iter().all(|c| step_ids.contains(c.parent.as_str())), "{calls:#?}");
    let global = format!("req-{job_id}");
    for c in &calls {
        assert!(c.attr("http.response.status_code").is_some(), "{c:#?}");
        assert!(c.attr("openstack.request_id").is_some_and(|r| r.starts_with("req-")), "{c:#?}");
        assert!(c.attr("url.template").is_some() && c.attr("openstack.service").is_some(), "{c:#?}");
        if c.attr("openstack.service") != Some("keystone") {
            assert_eq!(c.attr("openstack.global_request_id"), Some(global.as_str()), "{c:#?}");
        }
    }
    assert!(calls.iter().any(|c| c.name == "POST /servers"), "{calls:#?}");
    // The cloud saw the job's requests under that one id, from both workers.
    let seen = stack.sim.control().requests_with_global_id(&global);
    let job_calls = calls.iter().filter(|c| c.attr("openstack.global_request_id") == Some(&global)).count();
    assert!(seen as usize >= job_calls && job_calls >= 3, "sim saw {seen}, spans {job_calls}");
    // And the job's trace is stored with it.
    let stored: Option<String> = sqlx::query_scalar("SELECT traceparent FROM jobs WHERE id = ?")
        .bind(&job_id)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, Some(format!("00-{billing_trace}-{}-01", intake[0].span_id)));
    stack.cleanup().await;
}
