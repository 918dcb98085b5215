//! The store's error type: what went wrong, in the caller's terms. Mapped to HTTP status and
//! gRPC code once each, by the crates that serve those protocols.

/// Why a store operation failed. A failed operation changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The named entity does not exist.
    #[error("{entity} {id} not found")]
    NotFound { entity: &'static str, id: String },
    /// An entity with this id exists already.
    #[error("{entity} {id} already exists")]
    AlreadyExists { entity: &'static str, id: String },
    /// A domain rule refused the input (bad value, illegal transition, cycle).
    #[error(transparent)]
    Domain(#[from] loom_domain::Error),
    /// The caller's expected version is stale: someone else changed the bead first.
    #[error("bead {bead} was changed concurrently: expected version {expected}, it is at {actual}; re-read and retry")]
    VersionConflict { bead: String, expected: i64, actual: i64 },
    /// A dependency names a bead that does not exist.
    #[error("bead {bead} cannot wait on {blocker}: no such bead")]
    MissingBlocker { bead: String, blocker: String },
    /// The operation conflicts with the current state (e.g. deleting a project with running beads).
    #[error("{0}")]
    Conflict(String),
    /// The database cannot be reached (connection refused, pool timed out); retrying may help.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// Anything else from the database; a bug or a corrupt row.
    #[error("database error: {0}")]
    Internal(String),
}

/// Shorthand for store results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn not_found(entity: &'static str, id: impl std::fmt::Display) -> Self {
        Error::NotFound { entity, id: id.to_string() }
    }

    /// True for failures where a retry may succeed (the database was unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            // 08xxx: connection failures; 57Pxx: the server is shutting down or starting up.
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                Error::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) => {
                Error::Unavailable(e.to_string())
            }
            _ => Error::Internal(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Internal(format!("migration failed: {e}"))
    }
}
