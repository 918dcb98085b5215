//! Logging and tracing setup shared by every Loom service: one call at start-up, before any
//! service runs, installs the global subscriber.
//!
//! Invariants: logs go to stderr (stdout belongs to command output such as `--json`); the filter
//! comes from `RUST_LOG`, else the configured level; JSON lines for machines, compact text for
//! people. Metrics go through the `metrics` facade into one process-wide Prometheus recorder that
//! `/metrics` renders. OpenTelemetry export is not wired yet (see ARCHITECTURE.md).

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Compact human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber. Later calls are ignored, so tests may call it freely.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.compact().with_target(false).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}

/// The process-wide Prometheus recorder, installed on first use; `render()` gives the text
/// exposition format for `/metrics`.
pub fn prometheus() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets(&[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (tests); then ours only renders its own.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

mod probes;
pub mod scrape;
pub use probes::{Check, Readiness, serve_probes};
