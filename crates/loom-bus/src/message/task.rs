//! `task.assigned` and `task.cancelled`: the control plane tells a project's agents what to do.

use chrono::{DateTime, Utc};
use loom_domain::{BeadId, ContextMap, DispatchId, ProjectId};
use serde::{Deserialize, Serialize};

use super::{Body, ids};

/// The `type` of a task message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    #[serde(rename = "task.assigned")]
    Assigned,
    #[serde(rename = "task.cancelled")]
    Cancelled,
}

/// A task for an agent: run a bead (or stop running it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMessage {
    #[serde(rename = "type")]
    pub kind: TaskKind,
    #[serde(with = "ids::project")]
    pub project_id: ProjectId,
    #[serde(with = "ids::bead")]
    pub bead_id: BeadId,
    /// The agent or role the task is meant for; empty for "any agent of the project".
    #[serde(default)]
    pub assigned_to: String,
    /// What to do; empty for `task.cancelled`.
    #[serde(default)]
    pub task_data: TaskData,
    #[serde(default)]
    pub correlation_id: String,
    pub timestamp: DateTime<Utc>,
    pub metadata: TaskMetadata,
}

/// The bead as the agent needs it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskData {
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// 0 (P0, most urgent) to 3.
    #[serde(default)]
    pub priority: u8,
    /// The bead type (`task`, `bug`, …).
    #[serde(rename = "type", default)]
    pub bead_type: String,
    #[serde(default)]
    pub context: ContextMap,
    /// The project's workspace directory on the agent's host.
    #[serde(default)]
    pub work_dir: String,
    /// The project's context (its `build`, `test` and `lint` commands, notes), as it was when
    /// the task was published (additive: older control planes leave it out).
    #[serde(default, skip_serializing_if = "ContextMap::is_empty")]
    pub project_context: ContextMap,
}

/// The project commands a task carries, by context key and the variable a shell bead sees.
pub const PROJECT_COMMANDS: [(&str, &str); 3] = [("build", "LOOM_BUILD"), ("test", "LOOM_TEST"), ("lint", "LOOM_LINT")];

impl TaskData {
    /// A project command (`build`, `test`, `lint`): the bead's own context entry, else the
    /// project's; `None` when neither sets a non-blank one.
    pub fn project_command(&self, key: &str) -> Option<&str> {
        [&self.context, &self.project_context]
            .into_iter()
            .filter_map(|c| c.get(key))
            .map(|c| c.trim())
            .find(|c| !c.is_empty())
    }
}

/// Delivery bookkeeping: the fencing token and attempt number of this dispatch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskMetadata {
    #[serde(with = "ids::dispatch")]
    pub dispatch_id: DispatchId,
    #[serde(default)]
    pub attempt: u32,
    /// The role the task is routed to (`loom.tasks.{project}.{role}`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// `llm` or `shell`; empty = the agent's default.
    #[serde(default)]
    pub executor: String,
}

impl Body for TaskMessage {
    fn is_known_type(kind: &str) -> bool {
        matches!(kind, "task.assigned" | "task.cancelled")
    }
}
