//! RED metrics per gRPC method, as a tower layer in front of every service of the server:
//! `loom_grpc_server_requests_total{service,method,code}` and
//! `loom_grpc_server_request_duration_seconds{service,method}`.
//!
//! Labels are bounded: `service` and `method` come from the request's `:path` only when it names
//! a method of a served proto (`loom.db.v1`, `loom.connectors.v1`, `grpc.health.v1`, reflection); any other path is
//! `unknown`. `code` is the canonical name of the gRPC status (`OK`, `NOT_FOUND`, …), read from
//! the response headers for a trailers-only response (how tonic answers most errors), otherwise
//! from the trailers at the end of the body; a body that ends without a status counts as `OK`,
//! one the client abandons (dropped before its end) as `CANCELLED`.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prost::Message;

/// The layer; add it with `Server::builder().layer(GrpcMetrics)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcMetrics;

impl<S> tower::Layer<S> for GrpcMetrics {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Metered<S> {
        Metered { inner }
    }
}

/// The service the layer makes.
#[derive(Clone, Debug)]
pub struct Metered<S> {
    inner: S,
}

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Metered<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (service, method) = labels(request.uri().path());
        let call = Call { service, method, started: Instant::now() };
        let response = self.inner.call(request);
        Box::pin(async move {
            match response.await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let pending = match status(&parts.headers) {
                        // Trailers-only: the status is already known; the body is empty.
                        Some(code) => {
                            call.record(code);
                            None
                        }
                        None => Some(call),
                    };
                    Ok(Response::from_parts(parts, MeteredBody { inner: body, call: pending }))
                }
                Err(e) => {
                    call.record("UNKNOWN");
                    Err(e)
                }
            }
        })
    }
}

/// One call, until its status is known.
#[derive(Debug)]
struct Call {
    service: &'static str,
    method: &'static str,
    started: Instant,
}

impl Call {
    fn record(self, code: &'static str) {
        let (service, method) = (self.service, self.method);
        metrics::counter!("loom_grpc_server_requests_total", "service" => service, "method" => method, "code" => code)
            .increment(1);
        metrics::histogram!("loom_grpc_server_request_duration_seconds", "service" => service, "method" => method)
            .record(self.started.elapsed().as_secs_f64());
    }
}

/// The response body, recording the call when its trailers or its end arrive.
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status) {
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish("UNKNOWN"),
            Poll::Ready(None) => self.finish("OK"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> MeteredBody<B> {
    fn finish(&mut self, code: &'static str) {
        if let Some(call) = self.call.take() {
            call.record(code);
        }
    }
}

impl<B> Drop for MeteredBody<B> {
    fn drop(&mut self) {
        self.finish("CANCELLED");
    }
}

/// The `grpc-status` of `headers` (or trailers), by canonical name.
fn status(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(code_name(value))
}

fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// `(service, method)` of a request path `/pkg.Service/Method`, or `("unknown", "unknown")` when
/// it names no method of a served proto.
fn labels(path: &str) -> (&'static str, &'static str) {
    let known = known_methods();
    let Some(rest) = path.strip_prefix('/') else { return ("unknown", "unknown") };
    let Some((service, method)) = rest.split_once('/') else { return ("unknown", "unknown") };
    match known.iter().find(|(s, m)| *s == service && *m == method) {
        Some((s, m)) => (s, m),
        None => ("unknown", "unknown"),
    }
}

/// Every method of the protos the server serves, from their descriptor sets (leaked once: they
/// are label values for the life of the process).
fn known_methods() -> &'static HashSet<(&'static str, &'static str)> {
    static KNOWN: OnceLock<HashSet<(&'static str, &'static str)>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let sets: [&[u8]; 4] = [
            loom_proto::FILE_DESCRIPTOR_SET,
            loom_proto::CONNECTORS_FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ];
        let mut known = HashSet::new();
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
            for file in set.file {
                let package = file.package.unwrap_or_default();
                for service in file.service {
                    let name = match package.as_str() {
                        "" => service.name().to_owned(),
                        p => format!("{p}.{}", service.name()),
                    };
                    let name: &'static str = Box::leak(name.into_boxed_str());
                    for method in service.method {
                        known.insert((name, &*Box::leak(method.name().to_owned().into_boxed_str())));
                    }
                }
            }
        }
        known
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_bounded_labels() {
        assert_eq!(labels("/loom.db.v1.Database/CreateProject"), ("loom.db.v1.Database", "CreateProject"));
        assert_eq!(labels("/grpc.health.v1.Health/Check"), ("grpc.health.v1.Health", "Check"));
        assert_eq!(labels("/loom.db.v1.Database/bd-1234"), ("unknown", "unknown"));
        assert_eq!(labels("/nope"), ("unknown", "unknown"));
        assert_eq!(code_name(5), "NOT_FOUND");
    }
}
