//! The crate's error: why the service could not start or stop cleanly, or why a client could not
//! be built. Store operations through [`crate::GrpcStore`] fail with `loom_store::Error` instead,
//! exactly as a local store would.

/// Why the database service or its client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A TLS certificate, key or CA could not be read or used.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The configuration is inconsistent (bad endpoint URL, zero channels, …).
    #[error("invalid database service configuration: {0}")]
    Config(String),
    /// The gRPC server failed while serving.
    #[error("database service transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// `loom bench db` could not run.
    #[error("bench failed: {0}")]
    Bench(String),
    /// The store under the service (or a bench) failed.
    #[error(transparent)]
    Store(#[from] loom_store::Error),
}
