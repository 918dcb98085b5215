//! The domain's one error type: every variant says what was wrong in the user's terms.

use crate::Status;

/// Why a value or an operation was refused by the domain rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A field's value is malformed (bad id, out-of-range priority, oversized text, …).
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The status machine forbids this change.
    #[error("bead {bead}: cannot go from {from} to {to}: {hint}")]
    IllegalTransition { bead: String, from: Status, to: Status, hint: &'static str },
    /// Adding this dependency would make beads wait on each other forever.
    #[error("dependency {bead} -> {blocker} would close a cycle: {path}")]
    Cycle { bead: String, blocker: String, path: String },
}

impl Error {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid { field, reason: reason.into() }
    }
}
