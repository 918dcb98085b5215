//! OpenTelemetry trace export: an OTLP/gRPC batch exporter (tonic), on only when an endpoint is
//! configured (`OTEL_EXPORTER_OTLP_ENDPOINT`), with the process's service name
//! (`OTEL_SERVICE_NAME` overrides the default each service passes).
//!
//! A process that runs several services (`loom up`) names each of them ([`TraceExport::by_part`]):
//! one tracer provider per part, each with its own `service.name`, behind one [`PartTracer`] that
//! the tracing layer uses, so parent chains and trace ids are those of a single provider. A span
//! belongs to the part whose crate made it (its tracing target); a span of a shared crate (the
//! gRPC client layer, the bus) to the part of its in-process parent; a gRPC server span without
//! one to the part that serves its package; anything else to the process's own name.

use opentelemetry::trace::{SpanBuilder, SpanId, SpanKind, TraceContextExt as _, TraceId, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};

/// Where and as what the process exports its spans.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TraceExport {
    /// The OTLP/gRPC collector (`http://host:4317`); `None`: no export, no trace context.
    pub endpoint: Option<String>,
    /// `service.name` of the spans (`loom-control-plane`, `loom-db`, `loom-agent`, …); under
    /// [`TraceExport::by_part`], of the spans of no part.
    pub service_name: String,
    /// The services this process runs side by side, each exported under its own name (empty:
    /// one service, every span under `service_name`).
    pub parts: Vec<Part>,
}

/// One service of a process that runs several: its spans are exported as `service`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    /// Its `service.name`.
    pub service: &'static str,
    /// The crate (first segment of a span's tracing target) whose spans are its own.
    pub krate: &'static str,
    /// The gRPC package prefix (`loom.db.`) of the server spans it serves, if it serves any.
    pub rpc_package: Option<&'static str>,
}

/// Loom's services, as `loom up` (and a test composing the whole system) runs them together.
pub const PARTS: [Part; 4] = [
    Part { service: "loom-control-plane", krate: "loom_control_plane", rpc_package: None },
    Part { service: "loom-db", krate: "loom_db", rpc_package: Some("loom.db.") },
    Part { service: "loom-agent", krate: "loom_agent", rpc_package: None },
    Part { service: "loom-connectors", krate: "loom_connectors", rpc_package: Some("loom.connectors.") },
];

/// A part's index travels in the low bits of its spans' ids (see [`PartIds`]): at most 7 parts.
const PART_BITS: u64 = 0b111;

impl TraceExport {
    /// From the standard environment: `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) and `OTEL_SERVICE_NAME`, else `default_service`.
    pub fn from_env(default_service: &str) -> TraceExport {
        let var = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        TraceExport {
            endpoint: var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT")),
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned()),
            parts: Vec::new(),
        }
    }

    /// An explicit endpoint (tests, benchmarks).
    pub fn to(endpoint: impl Into<String>, service_name: impl Into<String>) -> TraceExport {
        TraceExport { endpoint: Some(endpoint.into()), service_name: service_name.into(), parts: Vec::new() }
    }

    /// Names each of Loom's services ([`PARTS`]) run in this process by its own `service.name`.
    pub fn by_part(self) -> TraceExport {
        TraceExport { parts: PARTS.to_vec(), ..self }
    }
}

/// The tracer providers of the process: the process's own (index 0) and one per part.
#[derive(Clone, Debug)]
pub(crate) struct Providers {
    all: Vec<SdkTracerProvider>,
    parts: Vec<Part>,
}

impl Providers {
    /// Exports what every provider has queued.
    pub(crate) fn force_flush(&self) -> Result<(), String> {
        let failed: Vec<String> =
            self.all.iter().filter_map(|p| p.force_flush().err()).map(|e| e.to_string()).collect();
        if failed.is_empty() { Ok(()) } else { Err(failed.join("; ")) }
    }

    pub(crate) fn shutdown(&self) {
        for provider in &self.all {
            let _ = provider.shutdown();
        }
    }

    fn tracer(&self) -> PartTracer {
        PartTracer { tracers: self.all.iter().map(|p| p.tracer("loom")).collect(), parts: self.parts.clone() }
    }
}

impl From<SdkTracerProvider> for Providers {
    fn from(provider: SdkTracerProvider) -> Providers {
        Providers { all: vec![provider], parts: Vec::new() }
    }
}

/// Builds the providers. Must run inside a tokio runtime (multi-thread: the batch processor's
/// thread hands its exports to the channel's worker task on the runtime).
pub(crate) fn providers(export: &TraceExport) -> Result<Option<Providers>, String> {
    let Some(endpoint) = &export.endpoint else { return Ok(None) };
    assert!(export.parts.len() as u64 <= PART_BITS, "at most {PART_BITS} parts");
    let by_part = !export.parts.is_empty();
    let names = std::iter::once(export.service_name.as_str()).chain(export.parts.iter().map(|p| p.service));
    let mut all = Vec::new();
    for (index, name) in names.enumerate() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .with_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| format!("the OTLP exporter for {endpoint} cannot be built: {e}"))?;
        let resource = opentelemetry_sdk::Resource::builder().with_service_name(name.to_owned()).build();
        let builder = SdkTracerProvider::builder().with_resource(resource).with_batch_exporter(exporter);
        let builder = if by_part { builder.with_id_generator(PartIds(index as u64)) } else { builder };
        all.push(builder.build());
    }
    Ok(Some(Providers { all, parts: export.parts.clone() }))
}

/// The tracing layer that turns spans into OpenTelemetry spans of `providers`.
pub(crate) fn layer<S>(providers: &Providers) -> tracing_opentelemetry::OpenTelemetryLayer<S, PartTracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(providers.tracer()).with_tracked_inactivity(false)
}

/// Starts each span with the tracer of its part (one tracer when the process is one service).
/// The tracing layer records each span's target as its `target` attribute, which names the crate.
#[derive(Debug)]
pub(crate) struct PartTracer {
    tracers: Vec<SdkTracer>,
    parts: Vec<Part>,
}

impl PartTracer {
    /// The index of the provider `builder`'s span goes to.
    fn part_of(&self, builder: &SpanBuilder, parent: &opentelemetry::Context) -> usize {
        let target = builder.attributes.iter().flatten().find(|kv| kv.key.as_str() == "target");
        if let Some(target) = target.map(|kv| kv.value.as_str()) {
            let krate = target.split("::").next().unwrap_or_default();
            if let Some(i) = self.parts.iter().position(|p| p.krate == krate) {
                return i + 1;
            }
        }
        let local = parent.span().span_context().clone();
        if local.is_valid() && !local.is_remote() {
            let i = (u64::from_be_bytes(local.span_id().to_bytes()) & PART_BITS) as usize;
            return i.min(self.parts.len());
        }
        if builder.span_kind == Some(SpanKind::Server) {
            let served = |p: &Part| p.rpc_package.is_some_and(|package| builder.name.starts_with(package));
            if let Some(i) = self.parts.iter().position(served) {
                return i + 1;
            }
        }
        0
    }
}

impl opentelemetry::trace::Tracer for PartTracer {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, builder: SpanBuilder, parent_cx: &opentelemetry::Context) -> Self::Span {
        let i = if self.parts.is_empty() { 0 } else { self.part_of(&builder, parent_cx) };
        self.tracers[i].build_with_context(builder, parent_cx)
    }
}

/// Random ids whose span ids carry the part's index in their low three bits, so a child started
/// later (by any code, on any thread) finds its in-process parent's part in the parent's id
/// without a lookup table; 61 random bits remain, and an id is never zero.
#[derive(Debug)]
struct PartIds(u64);

impl IdGenerator for PartIds {
    fn new_trace_id(&self) -> TraceId {
        RandomIdGenerator::default().new_trace_id()
    }

    fn new_span_id(&self) -> SpanId {
        loop {
            let random = u64::from_be_bytes(RandomIdGenerator::default().new_span_id().to_bytes());
            let id = (random & !PART_BITS) | self.0;
            if id != 0 {
                return SpanId::from(id);
            }
        }
    }
}
