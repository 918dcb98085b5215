//! Loom's domain model: validated ids, projects, beads, agents, personas and events, the bead
//! status machine and the dependency graph.
//!
//! Invariants this crate guarantees to everyone above it:
//! - A value of an id type (`ProjectId`, `BeadId`, …) has been validated; holding one means it is
//!   safe to put in a NATS subject, a SQL parameter or a file name.
//! - `Status::check_transition` is the only definition of which status changes are legal.
//! - `graph::Graph` never accepts an edge that closes a cycle, and `graph::ready` is the one
//!   definition of the ready set (open, not a decision, every blocker closed; priority then age).
//!
//! It does no IO and depends on no runtime, database or bus crate; boundary crates own their wire
//! formats and convert to and from these types.

mod agent;
mod auth;
mod bead;
mod error;
mod event;
pub mod graph;
mod ids;
mod persona;
mod project;

pub use agent::{Agent, AgentStatus};
pub use auth::{ApiKey, Role, validate_key_name};
pub use bead::{
    Bead, BeadType, DispatchState, EXECUTORS, NewBead, Priority, Status, truncate_reason, validate_context,
    validate_description, validate_role, validate_tags, validate_title,
};
pub use error::Error;
pub use event::{Event, EventKind};
pub use ids::{AgentId, BeadId, BeadPrefix, DispatchId, ProjectId, base36};
pub use persona::{PERSONA_ACTIONS, Persona};
pub use project::{GitStrategy, NewProject, Project, ProjectStatus};

/// String map used for project and bead context (build/test commands, notes, …).
pub type ContextMap = std::collections::BTreeMap<String, String>;

/// Size limits enforced at every edge (API, bus, store).
pub mod limits {
    /// Longest bead or project title, in bytes.
    pub const TITLE_MAX: usize = 500;
    /// Largest bead description, in bytes (DESIGN: a bead body over 256 KiB is refused).
    pub const DESCRIPTION_MAX: usize = 256 * 1024;
    /// Most tags on one bead.
    pub const TAGS_MAX: usize = 64;
    /// Longest tag, in bytes.
    pub const TAG_MAX: usize = 64;
    /// Most entries in a context map.
    pub const CONTEXT_ENTRIES_MAX: usize = 128;
    /// Largest context map value, in bytes.
    pub const CONTEXT_VALUE_MAX: usize = 64 * 1024;
    /// Largest context map in all (keys and values), in bytes: with the largest description it
    /// still fits in one task message (1 MiB).
    pub const CONTEXT_TOTAL_MAX: usize = 256 * 1024;
    /// Longest free-text reason (close reason, last error), in bytes; longer ones are truncated.
    pub const REASON_MAX: usize = 16 * 1024;
}
