//! Tracing subscriber: human-readable lines by default, one JSON object per line with
//! `PROVISIONER_LOG_FORMAT=json`. `RUST_LOG` filters as usual.
//!
//! Jobs run inside a span carrying `job_id` and `order_id`, so both formats print them on every
//! line of a job. Secrets never reach a log line: settings redact themselves, and the OpenStack
//! client never logs tokens, passwords or user data.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Default filter when `RUST_LOG` is unset: our crate at info, chatty libraries at warn.
pub const DEFAULT_FILTER: &str = "info,sqlx=warn,lapin=warn,amq_protocol=warn,hyper=warn,reqwest=warn";

/// Default filter of `provisioner demo`, whose own output is the show (its expected failures
/// would otherwise log warnings): errors only.
pub const DEMO_FILTER: &str = "error";

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    init_with_default(format, DEFAULT_FILTER)
}

/// Like [`init`], with another filter when `RUST_LOG` is unset.
pub fn init_with_default(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => {
            builder.json().with_current_span(true).with_span_list(false).flatten_event(true).try_init()
        }
        LogFormat::Pretty => builder.with_target(false).compact().try_init(),
    };
}
