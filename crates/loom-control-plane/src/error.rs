//! The control plane's error, and the one place store and bus errors become HTTP responses:
//! `{"error": {"code", "message"}}` with the matching status.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Why a request or the control plane itself failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] loom_store::Error),
    #[error(transparent)]
    Bus(#[from] loom_bus::Error),
    #[error(transparent)]
    Domain(#[from] loom_domain::Error),
    /// The request is malformed (bad JSON, unknown field, bad query).
    #[error("{0}")]
    BadRequest(String),
    /// No or unknown API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The key's role may not do this.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("request body too large: {0}")]
    TooLarge(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("io: {0}")]
    Io(String),
    #[error(transparent)]
    Connectors(#[from] loom_connectors::Error),
}

impl Error {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        use loom_store::Error as S;
        match self {
            Error::Store(S::NotFound { .. }) | Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::Store(S::AlreadyExists { .. }) => (StatusCode::CONFLICT, "already_exists"),
            Error::Store(S::VersionConflict { .. }) => (StatusCode::CONFLICT, "version_conflict"),
            Error::Store(S::Conflict(_)) => (StatusCode::CONFLICT, "conflict"),
            Error::Store(S::MissingBlocker { .. }) => (StatusCode::UNPROCESSABLE_ENTITY, "missing_blocker"),
            Error::Store(S::Domain(e)) | Error::Domain(e) => domain_status(e),
            Error::Store(S::Unavailable(_)) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Store(S::Internal(_)) | Error::Io(_) | Error::Config(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
            Error::Bus(loom_bus::Error::Invalid { .. }) => (StatusCode::BAD_REQUEST, "invalid"),
            Error::Bus(_) => (StatusCode::SERVICE_UNAVAILABLE, "bus_unavailable"),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Error::Connectors(e) => connectors_status(e),
        }
    }
}

fn connectors_status(e: &loom_connectors::Error) -> (StatusCode, &'static str) {
    use loom_connectors::Error as C;
    match e {
        C::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid"),
        C::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
        C::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
        C::Conflict(_) => (StatusCode::CONFLICT, "version_conflict"),
        C::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "connectors_unavailable"),
        C::Sealed(_) | C::Config(_) | C::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    }
}

fn domain_status(e: &loom_domain::Error) -> (StatusCode, &'static str) {
    match e {
        loom_domain::Error::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid"),
        loom_domain::Error::IllegalTransition { .. } => (StatusCode::CONFLICT, "illegal_transition"),
        loom_domain::Error::Cycle { .. } => (StatusCode::CONFLICT, "cycle"),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response =
            (status, Json(json!({ "error": { "code": code, "message": self.to_string() } }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
