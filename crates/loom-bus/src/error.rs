//! The crate's one error type, in the terms of a caller of the bus.

/// Why a bus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value that would end up in a subject, stream or bucket name is not safe there.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A message could not be encoded or decoded as JSON.
    #[error("message encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// The NATS server could not be reached or refused the connection.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect { url: String, reason: String },
    /// An existing stream, consumer or bucket has settings other than the ones Loom needs;
    /// provisioning refuses to change or delete it.
    #[error(
        "{kind} {name} exists with other settings ({differences}); \
         Loom will not change or delete it: fix or remove it by hand, or use another namespace"
    )]
    Mismatch { kind: &'static str, name: String, differences: String },
    /// A publish was not acknowledged by the bus.
    #[error("publish to {subject} failed: {reason}")]
    Publish { subject: String, reason: String },
    /// An acknowledgement (ack, nak, in-progress, term) could not be delivered.
    #[error("acknowledgement ({action}) failed: {reason}")]
    Ack { action: &'static str, reason: String },
    /// Any other failure of the bus backend (JetStream API error, timeout, …).
    #[error("{operation}: {reason}")]
    Backend { operation: &'static str, reason: String },
    /// The bus or subscription has been shut down.
    #[error("the bus is closed")]
    Closed,
}

impl Error {
    /// Whether waiting can cure it: the bus is unreachable or slow (restarting, a lost
    /// connection, a timeout) rather than refusing the request for what it is.
    /// A refused connection counts only when it is not about who is asking (credentials, TLS).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { reason, .. } => {
                let reason = reason.to_ascii_lowercase();
                !["authoriz", "authentic", "tls", "certificate", "credentials", "permission"]
                    .iter()
                    .any(|w| reason.contains(w))
            }
            Error::Publish { .. } | Error::Ack { .. } | Error::Backend { .. } => true,
            Error::Invalid { .. } | Error::Encode(_) | Error::Mismatch { .. } | Error::Closed => false,
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid { field, reason: reason.into() }
    }

    pub(crate) fn backend(operation: &'static str, reason: impl std::fmt::Display) -> Self {
        Error::Backend { operation, reason: reason.to_string() }
    }
}

impl From<loom_domain::Error> for Error {
    fn from(err: loom_domain::Error) -> Self {
        match err {
            loom_domain::Error::Invalid { field, reason } => Error::Invalid { field, reason },
            other => Error::Invalid { field: "value", reason: other.to_string() },
        }
    }
}
