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
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
                connection_lost();
                Error::Unavailable(e.to_string())
            }
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => Error::Unavailable(e.to_string()),
            sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")) => {
                connection_lost();
                Error::Unavailable(e.to_string())
            }
            _ => Error::Internal(e.to_string()),
        }
    }
}

/// When a database connection was last found broken (ms since `EPOCH`, 0 for never). The pools
/// ping a connection before handing it out for a while after that: when the server restarted or
/// ended its backends, every pooled connection is dead, and without the ping each would fail one
/// more request. Process-wide: a hint that only costs a ping, never a correctness matter.
static LOST_AT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn since_epoch_ms() -> u64 {
    u64::try_from(EPOCH.get_or_init(std::time::Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
}

fn connection_lost() {
    LOST_AT_MS.store(since_epoch_ms(), std::sync::atomic::Ordering::Relaxed);
}

/// Whether a connection was found broken within `window`.
pub(crate) fn connection_lost_within(window: std::time::Duration) -> bool {
    let at = LOST_AT_MS.load(std::sync::atomic::Ordering::Relaxed);
    at != 0 && since_epoch_ms().saturating_sub(at) <= u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
}

impl From<sqlx::migrate::MigrateError> for Error {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Error::Internal(format!("migration failed: {e}"))
    }
}
