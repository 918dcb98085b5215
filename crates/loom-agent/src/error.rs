//! The agent's one error type, phrased for the operator reading a log or a task's result.

use std::path::PathBuf;

/// What can go wrong while running the agent or one of its tasks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration cannot work (bad id, zero concurrency, …).
    #[error("invalid agent configuration: {0}")]
    Config(String),
    /// The bus refused or lost a publish, subscription or registration.
    #[error("bus: {0}")]
    Bus(#[from] loom_bus::Error),
    /// A git command failed; `detail` is its (capped) output.
    #[error("git {command} failed: {detail}")]
    Git { command: String, detail: String },
    /// The bead's work breaks a push check (a protected path, the diff size); nothing was pushed.
    #[error("push refused, nothing was pushed: {0}")]
    PushRefused(String),
    /// A file action named a path outside the worktree, inside `.git`, or otherwise unsafe.
    #[error("path {path:?} refused: {reason}")]
    PathRefused { path: String, reason: String },
    /// Reading or writing the workspace failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The LLM endpoint failed or answered something unusable.
    #[error("LLM endpoint: {0}")]
    Llm(String),
    /// A persona file is missing or invalid.
    #[error("persona {path}: {reason}")]
    Persona { path: PathBuf, reason: String },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io { context: context.into(), source }
    }

    pub(crate) fn refused(path: &str, reason: impl Into<String>) -> Error {
        Error::PathRefused { path: path.to_owned(), reason: reason.into() }
    }
}
