//! `task.completed`, `task.failed` and `task.progress`: an agent reports on a dispatch.

use chrono::{DateTime, Utc};
use loom_domain::{AgentId, BeadId, ContextMap, DispatchId, ProjectId};
use serde::{Deserialize, Serialize};

use super::{Body, ids};

/// The `type` of a result message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResultKind {
    #[serde(rename = "task.completed")]
    Completed,
    #[serde(rename = "task.failed")]
    Failed,
    /// A heartbeat of a running task; extends the dispatch lease.
    #[serde(rename = "task.progress")]
    Progress,
}

/// `result.status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    Success,
    Failure,
    InProgress,
}

/// What an agent reports about one dispatch of a bead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultMessage {
    #[serde(rename = "type")]
    pub kind: ResultKind,
    #[serde(with = "ids::project")]
    pub project_id: ProjectId,
    #[serde(with = "ids::bead")]
    pub bead_id: BeadId,
    #[serde(with = "ids::agent")]
    pub agent_id: AgentId,
    pub result: ResultData,
    #[serde(default)]
    pub correlation_id: String,
    pub timestamp: DateTime<Utc>,
    pub metadata: ResultMetadata,
}

/// The outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultData {
    pub status: ResultStatus,
    #[serde(default)]
    pub output: String,
    #[serde(default)]
    pub error: String,
    /// Commit hashes the agent pushed.
    #[serde(default)]
    pub commits: Vec<String>,
    /// The branch the commits were pushed to (additive: older agents leave it out).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub branch: String,
    /// Paths or URLs of produced artifacts.
    #[serde(default)]
    pub artifacts: Vec<String>,
    /// Milliseconds the agent spent.
    #[serde(default)]
    pub duration: u64,
    #[serde(default)]
    pub context: ContextMap,
}

/// Which dispatch this result belongs to (the fencing token).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultMetadata {
    #[serde(with = "ids::dispatch")]
    pub dispatch_id: DispatchId,
    #[serde(default)]
    pub attempt: u32,
}

impl Body for ResultMessage {
    fn is_known_type(kind: &str) -> bool {
        matches!(kind, "task.completed" | "task.failed" | "task.progress")
    }
}
