//! The crate's one error type, in the terms of a test that launches servers.

/// Why a server could not be launched, stopped or restarted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program the launcher needs is not installed (or not where the environment says).
    #[error("{program} not found: {hint}")]
    MissingBinary { program: &'static str, hint: String },
    /// A file-system or process operation failed.
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    /// A helper command (initdb, chown, pg_ctl stop, …) exited with a failure.
    #[error("`{command}` failed ({status}): {output}")]
    Command { command: String, status: String, output: String },
    /// A server did not become ready; `log_tail` is the end of its log.
    #[error("{server} on port {port} did not start: {reason}\n--- last lines of its log ---\n{log_tail}")]
    Start { server: &'static str, port: u16, reason: String, log_tail: String },
    /// `start_again` was called while the server is still running.
    #[error("{server} on port {port} is already running")]
    AlreadyRunning { server: &'static str, port: u16 },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(action: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { action: action.into(), source }
    }
}
