//! Tracing subscriber: human-readable lines by default, one JSON object per line with
//! `PROVISIONER_LOG_FORMAT=json`. `RUST_LOG` filters as usual. With an OTLP endpoint configured
//! (the standard `OTEL_*` variables, see [`TraceSettings`]), spans are also exported as
//! OpenTelemetry traces ([`trace`], [`otlp`]).
//!
//! Jobs run inside a span carrying `job_id` and `order_id` (and `trace_id` when the job has a
//! trace), so both log formats print them on every line of a job. The trace-only spans (intake,
//! step, OpenStack request; target [`trace::SPAN_TARGET`]) are hidden from the log output, so a
//! JSON line's `span` stays the job's. Secrets never reach a log line or a span: settings redact
//! themselves, and the OpenStack client never records tokens, passwords or user data.

use std::collections::HashMap;
use std::sync::OnceLock;

use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

pub mod otlp;
pub mod trace;

/// Default filter when `RUST_LOG` is unset: our crate at info, chatty libraries at warn.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=warn,amq_protocol=warn,hyper=warn,reqwest=warn";

/// Default filter of `provisioner demo`, whose own output is the show (its expected failures
/// would otherwise log warnings): errors only.
pub const DEMO_FILTER: &str = "error";

/// A bad `OTEL_*` setting, or an exporter that cannot be built: startup stops with it.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("{var}={value:?}: {why}")]
    Setting { var: &'static str, value: String, why: &'static str },
    #[error("cannot start the OTLP trace exporter: {0}")]
    Exporter(String),
}

/// Where traces go: the standard OpenTelemetry variables, read by [`TraceSettings::from_env`].
///
/// Traces are off unless `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is) or
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/traces` appended) is set, and off again with
/// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Only OTLP over HTTP with protobuf
/// is spoken (`OTEL_EXPORTER_OTLP_PROTOCOL` unset or `http/protobuf`; collectors listen on 4318).
/// The SDK and the exporter read the rest themselves: `OTEL_SERVICE_NAME` (default
/// `openstack-provisioner`), `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER` /
/// `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`: billing's sampling decision is
/// kept), `OTEL_BSP_*` (batching), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// The full URL spans are posted to (`http://collector:4318/v1/traces`).
    pub endpoint: String,
}

impl TraceSettings {
    /// From the process environment; `Ok(None)` when traces are off.
    pub fn from_env() -> Result<Option<TraceSettings>, TelemetryError> {
        let vars: HashMap<String, String> =
            std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")).collect();
        TraceSettings::from_vars(&vars)
    }

    /// From a map of variables (tests).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Option<TraceSettings>, TelemetryError> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match get("OTEL_TRACES_EXPORTER") {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(TelemetryError::Setting {
                    var: "OTEL_TRACES_EXPORTER",
                    value: other.into(),
                    why: "only otlp (or none) is supported",
                });
            }
        }
        for var in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
            if let Some(p) = get(var) {
                if p != "http/protobuf" {
                    return Err(TelemetryError::Setting {
                        var: if var.contains("TRACES") {
                            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
                        } else {
                            "OTEL_EXPORTER_OTLP_PROTOCOL"
                        },
                        value: p.into(),
                        why: "only http/protobuf is supported (the collector's OTLP/HTTP port, 4318)",
                    });
                }
                break;
            }
        }
        let (var, endpoint) =
            match (get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"), get("OTEL_EXPORTER_OTLP_ENDPOINT")) {
                (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.to_string()),
                (None, Some(base)) => {
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}/v1/traces", base.trim_end_matches('/')))
                }
                (None, None) => return Ok(None),
            };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(TelemetryError::Setting {
                var,
                value: endpoint,
                why: "must be an http:// or https:// URL",
            });
        }
        Ok(Some(TraceSettings { endpoint }))
    }
}

/// The tracer provider, kept to flush it at exit.
static PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// Installs the global subscriber (logs only); a second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    init_with_default(format, DEFAULT_FILTER)
}

/// Like [`init`], with another filter when `RUST_LOG` is unset.
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    // Without trace settings nothing can fail.
    let _ = install(format, default_filter, None);
}

/// Logs, and traces if `traces` says where to: what `provisioner run` installs. Must be called
/// inside the Tokio runtime (the exporter sends on it). A second call (tests) installs nothing
/// and says so with `Ok(false)`.
pub fn init_with_traces(format: LogFormat, traces: Option<&TraceSettings>) -> Result<bool, TelemetryError> {
    install(format, DEFAULT_FILTER, traces)
}

fn install(
    format: LogFormat,
    default_filter: &str,
    traces: Option<&TraceSettings>,
) -> Result<bool, TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // The trace-only spans are left out of the logs (see the module docs).
    let not_trace_only = filter_fn(|m| !(m.is_span() && m.target() == trace::SPAN_TARGET));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => {
            fmt.json().with_current_span(true).with_span_list(false).flatten_event(true).boxed()
        }
        LogFormat::Pretty => fmt.with_target(false).compact().boxed(),
    }
    .with_filter(FilterExt::and(filter, not_trace_only));
    let provider = traces.map(otlp::provider).transpose()?;
    let otel = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("openstack-provisioner"))
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_filter(filter_fn(trace::exported))
    });
    let installed = tracing_subscriber::registry().with(fmt).with(otel).try_init().is_ok();
    if let Some(p) = provider {
        if installed {
            trace::set_enabled();
            let _ = PROVIDER.set(p);
        } else {
            let _ = p.shutdown();
        }
    }
    Ok(installed)
}

/// Exports the spans still buffered (at exit): at most `OTEL_BSP_EXPORT_TIMEOUT`.
pub async fn shutdown() {
    if let Some(p) = PROVIDER.get().cloned() {
        // The batch processor's thread sends through the runtime: wait for it off the runtime.
        let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
    }
}

/// Exports what is buffered now, without stopping (tests, before they look at the collector).
pub async fn flush() {
    if let Some(p) = PROVIDER.get().cloned() {
        let _ = tokio::task::spawn_blocking(move || p.force_flush()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<TraceSettings>, TelemetryError> {
        TraceSettings::from_vars(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(settings(&[("OTEL_SERVICE_NAME", "x")]).unwrap(), None);
        let base = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318/")]).unwrap().unwrap();
        assert_eq!(base.endpoint, "http://otel:4318/v1/traces");
        let own = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://t.example/in"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(own.endpoint, "https://t.example/in");
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318")];
        assert_eq!(settings(&[on[0], ("OTEL_SDK_DISABLED", "true")]).unwrap(), None);
        assert_eq!(settings(&[on[0], ("OTEL_TRACES_EXPORTER", "none")]).unwrap(), None);
        assert!(settings(&[on[0], ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]).unwrap().is_some());
        let e = settings(&[on[0], ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(
            e.to_string().contains("OTEL_EXPORTER_OTLP_PROTOCOL") && e.to_string().contains("4318"),
            "{e}"
        );
        assert!(settings(&[on[0], ("OTEL_TRACES_EXPORTER", "zipkin")]).is_err());
        assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "otel:4318")]).is_err());
    }
}
