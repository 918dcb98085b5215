//! OpenTelemetry trace export: an OTLP/gRPC batch exporter (tonic), on only when an endpoint is
//! configured (`OTEL_EXPORTER_OTLP_ENDPOINT`), with the process's service name
//! (`OTEL_SERVICE_NAME` overrides the default each service passes).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// Where and as what the process exports its spans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceExport {
    /// The OTLP/gRPC collector (`http://host:4317`); `None`: no export, no trace context.
    pub endpoint: Option<String>,
    /// `service.name` of the spans (`loom-control-plane`, `loom-db`, `loom-agent`, …).
    pub service_name: String,
}

impl TraceExport {
    /// From the standard environment: `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_SERVICE_NAME`, else `default_service`.
    pub fn from_env(default_service: &str) -> TraceExport {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        TraceExport {
            endpoint: var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT")),
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned()),
        }
    }

    /// An explicit endpoint (tests, benchmarks).
    pub fn to(endpoint: impl Into<String>, service_name: impl Into<String>) -> TraceExport {
        TraceExport { endpoint: Some(endpoint.into()), service_name: service_name.into() }
    }
}

/// Builds the provider. Must run inside a tokio runtime (multi-thread: the batch processor's
/// thread hands its exports to the channel's worker task on the runtime).
pub(crate) fn provider(export: &TraceExport) -> Result<Option<SdkTracerProvider>, String> {
    let Some(endpoint) = &export.endpoint else { return Ok(None) };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| format!("the OTLP exporter for {endpoint} cannot be built: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(export.service_name.clone()).build();
    let provider = SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter).build();
    Ok(Some(provider))
}

/// The tracing layer that turns spans into OpenTelemetry spans of `provider`.
pub(crate) fn layer<S>(
    provider: &SdkTracerProvider,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("loom")).with_tracked_inactivity(false)
}
