//! bd ("beads", the git-native issue tracker for coding agents) JSONL in and out of a project:
//! `.beads/issues.jsonl`, one issue per line.
//!
//! The format followed is bd's own `Issue` and `Dependency` structs and their JSON tags in
//! `internal/types/types.go` of github.com/steveyegge/beads (the version at commit `46a0ec8a`):
//! statuses `open in_progress blocked deferred closed tombstone pinned hooked` (plus custom
//! ones), issue types `bug feature task epic chore message merge-request molecule gate agent role
//! convoy event` (plus `decision`), priority 0–4, and `dependencies: [{issue_id, depends_on_id,
//! type, created_at, created_by, metadata, thread_id}]` with any type name (`blocks`,
//! `parent-child`, `related`, `discovered-from`, `tracks`, `waits-for`, …).
//!
//! Mapping (see [`format`]): `blocks` edges are Loom dependencies, the first `parent-child` edge
//! (or a `parent` field) the Loom parent. A status or type Loom lacks maps to the nearest Loom one
//! (every status but `open`/`closed`/`tombstone` to `blocked`, so Loom never dispatches work bd
//! holds elsewhere; unknown types to `task`; P4 to P3), and the whole issue as bd wrote it — every
//! field, known or not, every edge with its metadata — is kept in the bead's context under
//! `bd.issue` (`notes`, `design`, `acceptance_criteria` under `bd.notes`, … so agents read them).
//! An export starts from what was kept and writes over it what Loom changed since, so an issue
//! Loom did not touch comes back byte-for-byte in meaning.

mod format;
mod import;
mod order;

pub use format::{bd_id, export_line, loom_priority, loom_status, loom_type, uncovered_blockers};
pub use import::{BATCH, MAX_LINE, import};
