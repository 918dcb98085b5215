//! The crate's error, in the caller's terms; mapped to gRPC statuses once (`to_status`) and back
//! (`from_status`), so a remote caller gets the same error a local one would.

use tonic::{Code, Status};

/// Why a connectors operation failed. A failed write changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request value is not acceptable; names the field.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("connector {0} not found")]
    NotFound(String),
    #[error("connector {0} already exists")]
    AlreadyExists(String),
    /// The expected version is stale (someone else changed the connector first).
    #[error("{0}")]
    Conflict(String),
    /// The store, or the connectors service itself, cannot be reached; retrying may help.
    #[error("connectors unavailable: {0}")]
    Unavailable(String),
    /// Stored secrets that cannot be opened (unknown key, altered bytes).
    #[error("{0}")]
    Sealed(String),
    /// The service or client is misconfigured (keys, TLS, addresses).
    #[error("connectors configuration: {0}")]
    Config(String),
    #[error("connectors internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Error {
        Error::Invalid { field: field.to_owned(), reason: reason.into() }
    }

    /// True when a retry may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }

    /// The gRPC status of this error.
    pub fn to_status(&self) -> Status {
        let code = match self {
            Error::Invalid { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::Conflict(_) => Code::FailedPrecondition,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Sealed(_) | Error::Config(_) | Error::Internal(_) => Code::Internal,
        };
        Status::new(code, self.to_string())
    }

    /// The error a status stands for (the service's message is kept).
    pub fn from_status(status: &Status) -> Error {
        let m = status.message().to_owned();
        match status.code() {
            Code::InvalidArgument => match m.strip_prefix("invalid ").and_then(|r| r.split_once(": ")) {
                Some((field, reason)) => Error::Invalid { field: field.into(), reason: reason.into() },
                None => Error::Invalid { field: "request".into(), reason: m },
            },
            Code::NotFound => Error::NotFound(m.trim_start_matches("connector ").trim_end_matches(" not found").into()),
            Code::AlreadyExists => {
                Error::AlreadyExists(m.trim_start_matches("connector ").trim_end_matches(" already exists").into())
            }
            Code::FailedPrecondition => Error::Conflict(m),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                Error::Unavailable(format!("the connectors service: {m}"))
            }
            // A broken connection (tonic maps an HTTP/2 protocol error to `Internal` or
            // `Unknown`), made by this process's transport: it carries its cause as a source,
            // which a status the service sent never does.
            Code::Internal | Code::Unknown if std::error::Error::source(status).is_some() => {
                Error::Unavailable(format!("the connection to the connectors service failed: {m}"))
            }
            Code::Unauthenticated | Code::PermissionDenied => Error::Config(m),
            _ => Error::Internal(m),
        }
    }
}

impl From<loom_store::Error> for Error {
    fn from(e: loom_store::Error) -> Self {
        match e {
            loom_store::Error::NotFound { id, .. } => Error::NotFound(id),
            loom_store::Error::AlreadyExists { id, .. } => Error::AlreadyExists(id),
            loom_store::Error::Conflict(m) => Error::Conflict(m),
            loom_store::Error::Unavailable(m) => Error::Unavailable(m),
            loom_store::Error::Domain(loom_domain::Error::Invalid { field, reason }) => {
                Error::Invalid { field: field.to_owned(), reason }
            }
            other => Error::Internal(other.to_string()),
        }
    }
}
