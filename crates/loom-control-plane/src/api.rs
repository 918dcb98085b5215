//! The HTTP router: `/healthz`, `/readyz`, and the authenticated `/api/v1` API.

mod attempts;
mod beads;
pub(crate) mod connectors;
pub(crate) use connectors::LastConnectors;
pub(crate) mod events;
pub(crate) mod openapi;
mod projects;
mod system;
mod transfer;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Router, middleware};
use serde::de::DeserializeOwned;

use crate::{Error, Shared, auth};

/// Largest request body: a bead description may be 256 KiB, plus room for the JSON around it.
const BODY_LIMIT: usize = 512 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/health", get(system::readiness))
        .route("/status", get(system::status))
        .route("/projects", get(projects::list).post(projects::create))
        .route("/projects/{id}", get(projects::get).put(projects::update).delete(projects::delete))
        .route("/projects/{id}/pause", post(projects::pause))
        .route("/projects/{id}/resume", post(projects::resume))
        // A bd tracker is streamed in line by line, whatever its size (lines are bounded).
        .route("/projects/{id}/import", post(transfer::import).layer(DefaultBodyLimit::disable()))
        .route("/projects/{id}/export", get(transfer::export))
        .route("/beads", get(beads::list).post(beads::create))
        .route("/beads/{id}", get(attempts::bead).patch(beads::update).delete(beads::delete))
        .route("/beads/{id}/attempts", get(attempts::list))
        .route("/beads/{id}/conversation", get(attempts::conversation))
        .route("/beads/{id}/answer", post(beads::answer))
        .route("/usage", get(attempts::usage))
        .route("/beads/{id}/claim", post(beads::claim))
        .route("/beads/{id}/lease", post(beads::renew_lease))
        .route("/beads/{id}/start", post(beads::start))
        .route("/beads/{id}/hand-back", post(beads::hand_back))
        .route("/beads/{id}/close", post(beads::close))
        .route("/beads/{id}/reopen", post(beads::reopen))
        .route("/beads/{id}/redispatch", post(beads::redispatch))
        .route("/beads/{id}/dependencies", post(beads::add_dependency).delete(beads::remove_dependency))
        .route("/ready", get(beads::ready))
        .route("/work-graph", get(beads::work_graph))
        .route("/agents", get(system::agents))
        .route("/events", get(events::list))
        .route("/events/stream", get(events::stream))
        .route("/keys", get(system::list_keys).post(system::create_key))
        .route("/keys/{id}", axum::routing::delete(system::revoke_key))
        .route("/connectors", get(connectors::list).post(connectors::create))
        .route("/connectors/{id}", get(connectors::get).put(connectors::update).delete(connectors::remove))
        .route("/connectors/{id}/check", post(connectors::check))
        .layer(middleware::from_fn_with_state(shared.clone(), auth::authorize));
    // The web UI at `/` and `/ui/`; it sends its writes through `api`, in-process.
    let web = crate::web::router(shared.clone(), api.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(system::readiness))
        // The earlier implementation's probe paths, which its manifests and monitors use.
        .route("/health", get(system::readiness))
        .route("/health/live", get(|| async { "ok" }))
        .route("/health/ready", get(system::readiness))
        .route("/metrics", get(system::metrics))
        .route("/api/v1/openapi.json", get(|| async { axum::Json(openapi::document()) }))
        .nest("/api/v1", api)
        .merge(web)
        .layer(middleware::from_fn(record_request))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared)
}

/// RED metrics per route: `loom_http_requests_total{method,route,status}` and
/// `loom_http_request_duration_seconds{method,route}`.
async fn record_request(request: Request, next: middleware::Next) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    // A server span per request, continuing the caller's trace (`traceparent`), named by the
    // route template (never a raw id).
    let span = if loom_telemetry::propagate::enabled() {
        let name = format!("{method} {route}");
        let span = tracing::info_span!(
            "http.request",
            otel.name = name.as_str(),
            otel.kind = "server",
            http.request.method = method.as_str(),
            http.route = route.as_str(),
            http.response.status_code = tracing::field::Empty,
        );
        loom_telemetry::propagate::set_parent_from_headers(&span, request.headers());
        span
    } else {
        tracing::Span::none()
    };
    let response = tracing::Instrument::instrument(next.run(request), span.clone()).await;
    span.record("http.response.status_code", response.status().as_u16());
    let status = response.status().as_u16().to_string();
    metrics::counter!("loom_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("loom_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// `Json` whose rejections use the API's error body.
pub(crate) struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::BytesRejection(e)) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(Error::TooLarge(format!("the limit is {BODY_LIMIT} bytes")))
            }
            Err(e) => Err(Error::BadRequest(e.body_text())),
        }
    }
}

/// `Query` whose rejections use the API's error body.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| Error::BadRequest(e.body_text()))
    }
}

/// Parses a path id with the domain's rules.
pub(crate) fn parse_id<T>(parse: fn(&str) -> Result<T, loom_domain::Error>, raw: &str) -> Result<T, Error> {
    parse(raw).map_err(Error::Domain)
}
