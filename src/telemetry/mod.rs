//! Logging setup (one line per event, as text or JSON, filtered by RUST_LOG or a default level),
//! the server's Prometheus metrics, and the message trace log.

pub mod metrics;
pub mod trace;

use std::path::Path;

use tracing_subscriber::EnvFilter;

pub use metrics::Metrics;
pub use trace::{TraceEvent, TraceLog, TraceRecord};

/// What a running server reports through: its metrics and, when configured, its trace log.
#[derive(Default)]
pub struct Telemetry {
    pub metrics: Metrics,
    trace: Option<TraceLog>,
    server: String,
}

impl Telemetry {
    /// Metrics, and a trace log at `trace_path` when given.
    pub fn new(server: &str, trace_path: Option<&Path>) -> std::io::Result<Telemetry> {
        let trace = match trace_path {
            Some(p) => Some(TraceLog::open(p)?),
            None => None,
        };
        Ok(Telemetry {
            metrics: Metrics::new(),
            trace,
            server: server.to_string(),
        })
    }

    /// Appends a trace record for `queue_id` (nothing when tracing is off).
    pub fn trace(&self, queue_id: &str, event: TraceEvent) {
        if let Some(log) = &self.trace {
            log.record(&TraceRecord {
                time: chrono::Utc::now(),
                server: self.server.clone(),
                queue_id: queue_id.to_string(),
                event,
            });
        }
    }
}
/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber, writing to stderr. `RUST_LOG` overrides `default_level`.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color_on_stderr());
    let _ = match format {
        LogFormat::Text => builder.with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Colors only on a terminal, and never when NO_COLOR is set (https://no-color.org).
pub fn color_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
