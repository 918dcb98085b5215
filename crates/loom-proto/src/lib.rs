//! The `loom.db.v1` protobuf contract of the database service (and `loom.connectors.v1`, the
//! connectors service's, in [`connectors`]): the `.proto` files under `proto/`,
//! the prost messages and tonic client/server generated from them at build time (by protox, so no
//! `protoc` is needed), and the conversions between wire messages and Loom's domain and store
//! types.
//!
//! Invariants:
//! - Every conversion from a wire message into a domain or store type validates it: ids go
//!   through their `parse`, enums must be a known non-`UNSPECIFIED` value, priorities 0–3, required
//!   fields present. A failure is a `loom_domain::Error::Invalid` naming the field, which the
//!   service reports as `INVALID_ARGUMENT`.
//! - Conversions are lossless both ways: times keep their microseconds, JSON travels as text, and
//!   `BeadPatch`'s "leave / clear / set" is explicit on the wire.
//! - Nothing here does IO; the service and client live in `loom-db`.
//!
//! The store's request and response types (`BeadPatch`, `ClaimRequest`, …) are converted here
//! too, so this crate depends on `loom-store` (and through it, without using it, on sqlx).

mod convert;

pub use convert::{FromProto, IntoProto, required};

/// The generated `loom.db.v1` messages, `database_client` and `database_server`.
pub mod v1 {
    #![allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
    tonic::include_proto!("loom.db.v1");
}

/// The generated `loom.connectors.v1` messages, `connectors_client` and `connectors_server` (the
/// connectors service, served by `loom-connectors`).
pub mod connectors {
    #![allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
    tonic::include_proto!("loom.connectors.v1");
}

/// The encoded `FileDescriptorSet` of `loom.connectors.v1`, for the connectors service's reflection.
pub const CONNECTORS_FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("loom_connectors_v1_descriptor");

/// `google.rpc.Status`, the envelope of `grpc-status-details-bin`.
pub mod rpc {
    #![allow(missing_docs, missing_debug_implementations, clippy::all, clippy::pedantic)]
    tonic::include_proto!("google.rpc");
}

/// The encoded `FileDescriptorSet` of every file above (and its imports), for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("loom_db_v1_descriptor");

/// The full name of the service, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "loom.db.v1.Database";
