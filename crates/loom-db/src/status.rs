//! The one mapping between `loom_store::Error` and gRPC statuses, both ways.
//!
//! | store error | gRPC code |
//! |---|---|
//! | `NotFound` | `NOT_FOUND` |
//! | `AlreadyExists` | `ALREADY_EXISTS` |
//! | `Domain(Invalid)` — a malformed value | `INVALID_ARGUMENT` |
//! | `Domain(IllegalTransition \| Cycle)`, `VersionConflict`, `MissingBlocker`, `Conflict` | `FAILED_PRECONDITION` |
//! | `Unavailable` | `UNAVAILABLE` |
//! | `Internal` | `INTERNAL` |
//!
//! `MissingBlocker` is `FAILED_PRECONDITION`, not `INVALID_ARGUMENT`: the request is well formed,
//! it names a bead that does not exist *now* (gRPC reserves `INVALID_ARGUMENT` for arguments that
//! are wrong whatever the state). The status message is the error's text, and the status details
//! (`grpc-status-details-bin`: a `google.rpc.Status` holding one `loom.db.v1.StoreError`) carry
//! its fields, so [`from_status`] rebuilds the same variant with the same fields and text.

use std::error::Error as _;

use loom_proto::{FromProto, IntoProto, rpc, v1};
use loom_store::Error;
use prost::Message;
use tonic::{Code, Status};

/// The `Any` type URL of the detail message.
const DETAIL_TYPE_URL: &str = "type.googleapis.com/loom.db.v1.StoreError";

/// The gRPC code of a store error.
pub fn code(err: &Error) -> Code {
    match err {
        Error::NotFound { .. } => Code::NotFound,
        Error::AlreadyExists { .. } => Code::AlreadyExists,
        Error::Domain(loom_domain::Error::Invalid { .. }) => Code::InvalidArgument,
        Error::Domain(loom_domain::Error::IllegalTransition { .. } | loom_domain::Error::Cycle { .. })
        | Error::VersionConflict { .. }
        | Error::MissingBlocker { .. }
        | Error::Conflict(_) => Code::FailedPrecondition,
        Error::Unavailable(_) => Code::Unavailable,
        Error::Internal(_) => Code::Internal,
    }
}

/// A store error as a gRPC status with its structured details.
pub fn to_status(err: &Error) -> Status {
    let code = code(err);
    let message = err.to_string();
    let detail: v1::StoreError = err.into_proto();
    let envelope = rpc::Status {
        code: code as i32,
        message: message.clone(),
        details: vec![prost_types::Any { type_url: DETAIL_TYPE_URL.into(), value: detail.encode_to_vec() }],
    };
    Status::with_details(code, message, envelope.encode_to_vec().into())
}

/// The store error a status stands for: exact when the service sent its details, else inferred
/// from the code (a status from the transport, a proxy or another server).
pub fn from_status(status: &Status) -> Error {
    if let Some(err) = detail(status) {
        return err;
    }
    let text = describe(status);
    match status.code() {
        Code::DeadlineExceeded => Error::Unavailable(format!("database service did not answer in time: {text}")),
        Code::Unavailable => Error::Unavailable(format!("database service unreachable: {text}")),
        _ if is_transient(status) => Error::Unavailable(format!("connection to the database service failed: {text}")),
        Code::NotFound => Error::NotFound { entity: "resource", id: text },
        Code::AlreadyExists => Error::AlreadyExists { entity: "resource", id: text },
        Code::InvalidArgument => loom_domain::Error::Invalid { field: "request", reason: text }.into(),
        Code::FailedPrecondition | Code::Aborted => Error::Conflict(text),
        Code::Unimplemented => Error::Internal(format!(
            "the database service does not know this call (is it older than the client?): {text}"
        )),
        Code::Unauthenticated | Code::PermissionDenied => {
            Error::Internal(format!("the database service refused the client ({:?}): {text}", status.code()))
        }
        other => Error::Internal(format!("database service error ({other:?}): {text}")),
    }
}

/// True when the status says the request never left this process: the connection could not be
/// made, so the server did nothing and any call, idempotent or not, may be retried.
pub(crate) fn never_sent(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// True for a failure of the service or the path to it (refused, reset, timed out), as opposed to
/// an answer of the service: these count against the circuit breaker and may be retried.
pub(crate) fn is_transient(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => true,
        // Connection-level failures without a gRPC status (reset mid-call, timeout in the stack;
        // tonic maps an HTTP/2 protocol error of the connection to `Internal`): made by this
        // process's transport, so they carry their cause as a source, which a status the service
        // sent never does.
        Code::Unknown | Code::Cancelled | Code::Internal => status.details().is_empty() && status.source().is_some(),
        _ => false,
    }
}

/// True when the service itself answered that the store is unavailable: the store's operation
/// failed and, as every failed store operation, changed nothing.
pub(crate) fn store_unavailable(status: &Status) -> bool {
    status.code() == Code::Unavailable && matches!(detail(status), Some(Error::Unavailable(_)))
}

fn detail(status: &Status) -> Option<Error> {
    if status.details().is_empty() {
        return None;
    }
    let envelope = rpc::Status::decode(status.details()).ok()?;
    let any = envelope.details.into_iter().find(|d| d.type_url == DETAIL_TYPE_URL)?;
    let detail = v1::StoreError::decode(any.value.as_slice()).ok()?;
    Error::from_proto(detail).ok()
}

/// The status message followed by its source chain (e.g. the refused connection).
fn describe(status: &Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = status.source();
    while let Some(err) = source {
        let part = err.to_string();
        if !text.contains(&part) {
            text = if text.is_empty() { part } else { format!("{text}: {part}") };
        }
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_round_trip() {
        let cases = [
            (Error::NotFound { entity: "bead", id: "t-1".into() }, Code::NotFound),
            (Error::VersionConflict { bead: "t-1".into(), expected: 1, actual: 2 }, Code::FailedPrecondition),
            (Error::MissingBlocker { bead: "t-1".into(), blocker: "t-2".into() }, Code::FailedPrecondition),
            (loom_domain::Error::Invalid { field: "bead id", reason: "bad".into() }.into(), Code::InvalidArgument),
            (Error::Unavailable("pool timed out".into()), Code::Unavailable),
        ];
        for (err, want) in cases {
            let status = to_status(&err);
            assert_eq!(status.code(), want, "{err}");
            assert_eq!(status.message(), err.to_string());
            let back = from_status(&status);
            assert_eq!(back.to_string(), err.to_string());
            assert_eq!(std::mem::discriminant(&back), std::mem::discriminant(&err));
        }
        assert!(store_unavailable(&to_status(&Error::Unavailable("x".into()))));
        assert!(!store_unavailable(&Status::unavailable("transport")));
    }

    #[test]
    fn bare_statuses_are_inferred_from_the_code() {
        assert!(matches!(from_status(&Status::unavailable("tcp connect error")), Error::Unavailable(_)));
        assert!(matches!(from_status(&Status::invalid_argument("bad")), Error::Domain(_)));
        assert!(matches!(from_status(&Status::unknown("?")), Error::Internal(_)));
    }

    /// Found by the fault suite: a connection broken by a proxy mid-call surfaced as `Internal`
    /// ("h2 protocol error"), which the result consumer took for a refusal and dead-lettered.
    #[test]
    fn a_transport_error_is_unavailable_whatever_its_code() {
        for mut status in [Status::internal("h2 protocol error: http2 error"), Status::unknown("reset")] {
            let cause = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection error received");
            status.set_source(std::sync::Arc::new(cause));
            assert!(is_transient(&status), "{status:?}");
            assert!(matches!(from_status(&status), Error::Unavailable(_)), "{status:?}");
        }
        // The same code sent by the service (no source) is its answer, not a transport failure.
        assert!(!is_transient(&Status::internal("bug")));
        assert!(matches!(from_status(&Status::internal("bug")), Error::Internal(_)));
    }
}
