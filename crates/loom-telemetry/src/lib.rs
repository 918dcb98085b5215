//! Logging, tracing and metrics setup shared by every Loom service: one call at start-up, before
//! any service runs, installs the global subscriber (and, when configured, the OpenTelemetry
//! exporter).
//!
//! Invariants: logs go to stderr (stdout belongs to command output such as `--json`); the log
//! filter comes from `RUST_LOG`, else the configured level; JSON lines for machines (each with
//! `trace_id`/`span_id` while traces are exported, and the `correlation_id`, `bead_id`,
//! `dispatch_id` of its spans), compact text for people. Traces are exported over OTLP/gRPC with
//! a batch processor only when an endpoint is set (`OTEL_EXPORTER_OTLP_ENDPOINT`); their filter
//! is independent of the log level (INFO spans of Loom's crates, never the exporter's own
//! transport, so exporting never feeds itself); [`Telemetry::shutdown`] flushes what is queued.
//! A process running several services ([`TraceExport::by_part`], `loom up`) exports each one's
//! spans under its own `service.name`, in the same traces.
//! While export is off nothing is propagated and the trace helpers cost a relaxed load. Trace
//! context crosses processes only through [`propagate`] (W3C `traceparent`/`tracestate`).
//! Metrics go through the `metrics` facade into one process-wide Prometheus recorder that
//! `/metrics` renders.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

mod logs;
mod otel;
pub mod propagate;

pub use otel::{PARTS, Part, TraceExport};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Compact human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber without trace export. Later calls are ignored, so tests may
/// call it freely.
pub fn init(format: LogFormat, default_level: &str) {
    let _ = init_with(format, default_level, &TraceExport::default());
}

/// What [`init_with`] installed; keep it for the life of the process and call
/// [`Telemetry::shutdown`] before exiting, so the last spans are exported.
#[derive(Debug, Default)]
#[must_use = "dropping it does not flush; call shutdown() before the process exits"]
pub struct Telemetry {
    provider: Option<otel::Providers>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is queued (waiting up to the exporter's timeout) and stops exporting.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            propagate::set_enabled(false);
            blocking(|| {
                if let Err(e) = provider.force_flush() {
                    tracing::warn!(error = %e, "flushing the last spans failed");
                }
                provider.shutdown();
            });
        }
    }

    /// Exports what is queued now, keeping the exporter.
    pub fn flush(&self) {
        if let Some(provider) = &self.provider {
            blocking(|| provider.force_flush().map_err(|e| tracing::warn!(error = %e, "flushing spans failed")).ok());
        }
    }
}

/// The provider [`init_with`] installed, for [`set_exporting`] and [`flush`].
static INSTALLED: std::sync::OnceLock<otel::Providers> = std::sync::OnceLock::new();

/// Stops (`false`) or resumes (`true`) tracing while keeping the exporter: while paused no span
/// reaches it and nothing is propagated — what a process without export does, so a benchmark
/// can measure both in one run. No-op when no exporter was installed.
pub fn set_exporting(on: bool) {
    if INSTALLED.get().is_some() {
        propagate::set_enabled(on);
    }
}

/// Exports the spans queued so far (no-op without an exporter).
pub fn flush() {
    if let Some(provider) = INSTALLED.get() {
        blocking(|| provider.force_flush().map_err(|e| tracing::warn!(error = %e, "flushing spans failed")).ok());
    }
}

/// Runs `f`, which blocks until the batch processor's thread has exported, off the async
/// scheduler when called on a multi-thread runtime worker: the export needs the runtime (the
/// channel's worker task), which a blocked worker thread would hold up.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Installs the global subscriber and, when `export` has an endpoint, the OTLP trace exporter
/// (call it inside a multi-thread tokio runtime then). A later call installs nothing (the first
/// subscriber stays) and returns an empty [`Telemetry`]; an exporter that cannot be built is an
/// error naming the endpoint.
pub fn init_with(format: LogFormat, default_level: &str, export: &TraceExport) -> Result<Telemetry, String> {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    type Boxed = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt: Boxed = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .fmt_fields(logs::TextFields)
            .compact()
            .with_target(false)
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(logs::JsonLines)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let provider = otel::providers(export)?;
    let mut layers = vec![fmt];
    if let Some(provider) = &provider {
        // Spans of Loom (and of whatever else is at INFO), never the exporter's own transport.
        let spans = Targets::new()
            .with_default(LevelFilter::INFO)
            .with_target("h2", LevelFilter::OFF)
            .with_target("hyper", LevelFilter::OFF)
            .with_target("hyper_util", LevelFilter::OFF)
            .with_target("tonic", LevelFilter::OFF)
            .with_target("tower", LevelFilter::OFF)
            .with_target("opentelemetry", LevelFilter::OFF)
            .with_target("opentelemetry_sdk", LevelFilter::OFF)
            .with_target("opentelemetry_otlp", LevelFilter::OFF);
        // While paused (`Telemetry::set_exporting(false)`) the layer sees nothing.
        let on = tracing_subscriber::filter::filter_fn(|_| propagate::enabled());
        layers.push(otel::layer(provider).with_filter(spans).with_filter(on).boxed());
    }
    if tracing_subscriber::registry().with(layers).try_init().is_err() {
        if let Some(provider) = provider {
            provider.shutdown();
        }
        return Ok(Telemetry::default());
    }
    if let Some(provider) = &provider {
        let _ = INSTALLED.set(provider.clone());
        propagate::set_enabled(true);
        let parts = export.parts.iter().map(|p| p.service).collect::<Vec<_>>().join(",");
        tracing::info!(endpoint = export.endpoint.as_deref().unwrap_or(""), service = %export.service_name, parts = %parts, "exporting traces over OTLP");
    }
    Ok(Telemetry { provider })
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
#[cfg(feature = "receiver")]
pub mod receiver;
pub mod scrape;
pub use probes::{Check, Readiness, serve_probes};
