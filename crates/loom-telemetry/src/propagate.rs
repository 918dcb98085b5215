//! W3C trace context (`traceparent`, `tracestate`) across process boundaries: read into a span's
//! parent on the way in, written from the current span on the way out — for HTTP, gRPC metadata
//! and NATS headers alike. Everything here is a no-op while trace export is off
//! ([`enabled`] false), so a process without a collector pays nothing.
//!
//! The tower layers are the reusable pieces for any tonic or hyper service:
//! [`TraceServerLayer`] (a server span per request, its parent read from the request headers)
//! and [`TraceClientLayer`] (a client span per call, its context written into the request).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

pub use tracing::instrument::Instrumented;

/// The W3C header names (lower case, as on the wire).
pub const TRACEPARENT: &str = "traceparent";
/// See [`TRACEPARENT`].
pub const TRACESTATE: &str = "tracestate";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (and so trace context is propagated).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// A `traceparent` and its `tracestate`, as carried in headers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Carrier {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// The trace context of `span` (empty while export is off or the span is disabled).
pub fn carrier_of(span: &tracing::Span) -> Carrier {
    let mut carrier = Carrier::default();
    if enabled() && !span.is_disabled() {
        TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    }
    carrier
}

/// The trace context of the current span.
pub fn current() -> Carrier {
    carrier_of(&tracing::Span::current())
}

fn remote(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<opentelemetry::Context> {
    let carrier = Carrier { traceparent: traceparent.map(str::to_owned), tracestate: tracestate.map(str::to_owned) };
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes the remote span named by `traceparent` the parent of `span` (call it before the span
/// is first entered). A missing or malformed `traceparent` leaves `span` a root. Returns whether
/// a parent was set.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) -> bool {
    if !enabled() || span.is_disabled() {
        return false;
    }
    match remote(traceparent, tracestate) {
        Some(cx) => span.set_parent(cx).is_ok(),
        None => false,
    }
}

/// Adds a link from `span` to the remote span named by `traceparent` (a redelivery to its
/// message's publisher, a batch to the messages it carries).
pub fn add_link(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if !enabled() || span.is_disabled() {
        return;
    }
    if let Some(cx) = remote(traceparent, tracestate) {
        span.add_link(cx.span().span_context().clone());
    }
}

/// Links `span` to `other` (both local).
pub fn link_spans(span: &tracing::Span, other: &tracing::Span) {
    if !enabled() || span.is_disabled() || other.is_disabled() {
        return;
    }
    let cx = other.context();
    span.add_link(cx.span().span_context().clone());
}

/// The trace id of `span` in hex (`None` while export is off).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Writes the current span's trace context into HTTP (or gRPC) headers.
pub fn inject_headers(headers: &mut http::HeaderMap) {
    inject_span_headers(&tracing::Span::current(), headers);
}

fn inject_span_headers(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let carrier = carrier_of(span);
    for (name, value) in [(TRACEPARENT, carrier.traceparent), (TRACESTATE, carrier.tracestate)] {
        if let Some(v) = value.and_then(|v| http::HeaderValue::from_str(&v).ok()) {
            headers.insert(name, v);
        }
    }
}

/// Makes the trace context of incoming HTTP (or gRPC) headers the parent of `span`.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &http::HeaderMap) -> bool {
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    set_parent(span, get(TRACEPARENT), get(TRACESTATE))
}

/// The context of a map of header names to values (lower-case names).
pub fn carrier_from_map(map: &HashMap<String, String>) -> Carrier {
    Carrier { traceparent: map.get(TRACEPARENT).cloned(), tracestate: map.get(TRACESTATE).cloned() }
}

/// A tower layer for servers (tonic or hyper): each request runs in a span `{service}/{method}`
/// (`otel.kind = server`) whose parent is the trace context of the request headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceServerLayer;

impl<S> tower::Layer<S> for TraceServerLayer {
    type Service = TraceServer<S>;
    fn layer(&self, inner: S) -> TraceServer<S> {
        TraceServer { inner }
    }
}

/// The service [`TraceServerLayer`] makes.
#[derive(Clone, Debug)]
pub struct TraceServer<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceServer<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // Health checks and reflection are not traced: a prober would make a trace a second.
        let span = if enabled() && !request.uri().path().starts_with("/grpc.") {
            let name = request.uri().path().trim_start_matches('/');
            let span = tracing::info_span!("rpc.server", otel.name = name, otel.kind = "server", rpc.system = "grpc");
            set_parent_from_headers(&span, request.headers());
            span
        } else {
            tracing::Span::none()
        };
        let future = span.in_scope(|| self.inner.call(request));
        future.instrument(span)
    }
}

/// A tower layer for clients (a tonic `Channel`, a hyper client): each call runs in a span
/// `{service}/{method}` (`otel.kind = client`), a child of the caller's current span, whose
/// context goes out in the request headers.
#[derive(Clone, Copy, Debug, Default)]
pub struct TraceClientLayer;

impl<S> tower::Layer<S> for TraceClientLayer {
    type Service = TraceClient<S>;
    fn layer(&self, inner: S) -> TraceClient<S> {
        TraceClient { inner }
    }
}

/// The service [`TraceClientLayer`] makes.
#[derive(Clone, Debug)]
pub struct TraceClient<S> {
    inner: S,
}

impl<S, B> tower::Service<http::Request<B>> for TraceClient<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let span = if enabled() {
            let name = request.uri().path().trim_start_matches('/');
            let span = tracing::info_span!("rpc.client", otel.name = name, otel.kind = "client", rpc.system = "grpc");
            inject_span_headers(&span, request.headers_mut());
            span
        } else {
            tracing::Span::none()
        };
        let future = span.in_scope(|| self.inner.call(request));
        future.instrument(span)
    }
}
