//! Events: the append-only record of every state change.

use chrono::{DateTime, Utc};

use crate::ProjectId;
use crate::bead::string_enum;

string_enum!(
    /// The event types Loom emits; the name is also the `loom.events.{type}` subject suffix.
    EventKind, "event type" {
        ProjectCreated => "project.created",
        ProjectUpdated => "project.updated",
        ProjectDeleted => "project.deleted",
        BeadCreated => "bead.created",
        BeadUpdated => "bead.updated",
        BeadStatusChanged => "bead.status_changed",
        BeadDispatched => "bead.dispatched",
        BeadStarted => "bead.started",
        BeadClosed => "bead.closed",
        BeadDependencyAdded => "bead.dependency_added",
        BeadDependencyRemoved => "bead.dependency_removed",
        AgentOnline => "agent.online",
        AgentOffline => "agent.offline",
        AgentCommand => "agent.command",
        AgentProgress => "agent.progress",
        ConnectorHealthChanged => "connector.health_changed",
        ApiWrite => "audit.api_write",
    }
);

impl EventKind {
    /// The category shown in UIs: the part before the dot.
    pub fn category(self) -> &'static str {
        self.as_str().split('.').next().unwrap_or("")
    }
}

/// One recorded event. `seq` is its position in the log, the cursor for `list since`.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub seq: i64,
    /// Globally unique; also the `Nats-Msg-Id` when published.
    pub id: String,
    pub kind: EventKind,
    pub source: String,
    pub project_id: Option<ProjectId>,
    pub entity_id: String,
    pub action: String,
    pub description: String,
    pub data: serde_json::Value,
    pub correlation_id: Option<String>,
    pub created_at: DateTime<Utc>,
}
