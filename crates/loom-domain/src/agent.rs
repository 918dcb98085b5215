//! Agents: running instances that execute a project's beads.

use chrono::{DateTime, Utc};

use crate::bead::string_enum;
use crate::{AgentId, BeadId, ProjectId};

string_enum!(
    /// What an agent instance is doing.
    AgentStatus, "agent status" { Idle => "idle", Busy => "busy", Draining => "draining", Offline => "offline" }
);

/// An agent instance as registered.
#[derive(Clone, Debug, PartialEq)]
pub struct Agent {
    pub id: AgentId,
    pub project_id: ProjectId,
    /// The persona it plays (engineer, reviewer, …).
    pub role: String,
    /// Host and process nonce, so a restarted process is never mistaken for the old one.
    pub instance: String,
    pub status: AgentStatus,
    pub current_bead: Option<BeadId>,
    pub capacity: u32,
    pub last_heartbeat: DateTime<Utc>,
}
