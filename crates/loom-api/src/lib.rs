//! The JSON types of Loom's HTTP API (`/api/v1`), shared by the control plane (which converts
//! domain values into them) and its clients (the CLI, tests). Field names follow the earlier
//! implementation so its clients keep working; unknown request fields are refused, so a typo is
//! an error rather than silently ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use loom_domain::{
    ApiKey, Bead, BeadId, BeadPrefix, BeadType, ContextMap, Event, GitStrategy, NewBead, NewProject, Priority, Project,
    ProjectId, ProjectStatus, Status,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A project as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProjectDto {
    pub id: String,
    pub name: String,
    pub git_repo: String,
    pub branch: String,
    pub bead_prefix: String,
    pub context: ContextMap,
    pub git_strategy: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&Project> for ProjectDto {
    fn from(p: &Project) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name.clone(),
            git_repo: p.git_repo.clone(),
            branch: p.branch.clone(),
            bead_prefix: p.bead_prefix.to_string(),
            context: p.context.clone(),
            git_strategy: p.git_strategy.as_str().into(),
            status: p.status.as_str().into(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// `POST /projects` and `PUT /projects/{id}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectRequest {
    /// Required on create; on update it must match the path if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub git_repo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bead_prefix: Option<String>,
    #[serde(default)]
    pub context: ContextMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

impl ProjectRequest {
    /// Validates into a domain project with id `id`.
    pub fn into_domain(self, id: ProjectId) -> Result<NewProject, loom_domain::Error> {
        let mut p = NewProject::new(id, self.git_repo);
        if let Some(name) = self.name {
            p.name = name;
        }
        if let Some(branch) = self.branch {
            p.branch = branch;
        }
        if let Some(prefix) = self.bead_prefix {
            p.bead_prefix = BeadPrefix::parse(&prefix)?;
        }
        p.context = self.context;
        if let Some(s) = self.git_strategy {
            p.git_strategy = s.parse::<GitStrategy>()?;
        }
        if let Some(s) = self.status {
            p.status = s.parse::<ProjectStatus>()?;
        }
        p.validate()?;
        Ok(p)
    }
}

/// A bead as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BeadDto {
    pub id: String,
    pub project_id: String,
    pub title: String,
    pub description: String,
    #[serde(rename = "type")]
    pub bead_type: String,
    pub priority: u8,
    pub status: String,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
    pub context: ContextMap,
    pub parent: Option<String>,
    pub blocked_by: Vec<String>,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub close_reason: Option<String>,
    pub dispatch_id: Option<String>,
    /// While `in_progress`: `queued` (its task waits for a free agent slot; no lease clock runs)
    /// or `running` (an agent started it; its lease is kept alive by the agent's progress).
    #[serde(default)]
    pub dispatch_state: Option<String>,
    /// When an agent started the current dispatch.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// The agent running the current dispatch.
    #[serde(default)]
    pub started_by: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub not_before: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub version: i64,
    /// What the latest finished dispatch reported (only in `GET /beads/{id}`; the whole history
    /// is `GET /beads/{id}/attempts`). Absent before the first result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_result: Option<AttemptDto>,
}

/// One finished dispatch of a bead, as its agent reported it (`GET /beads/{id}/attempts`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AttemptDto {
    pub dispatch_id: String,
    /// The bead's attempt number (1 for the first dispatch).
    pub attempt: u32,
    pub agent_id: String,
    /// `success` or `failure`.
    pub status: String,
    pub error: Option<String>,
    /// The tail of what the work printed (at most 64 KiB).
    pub output: String,
    pub commits: Vec<CommitDto>,
    pub artifacts: Vec<String>,
    /// Beads the agent created with `create_bead` (on success).
    pub created_beads: Vec<String>,
    pub duration_ms: u64,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: DateTime<Utc>,
    /// Tokens the attempt's model calls used (0 for an attempt without them).
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    /// The model and provider that answered (empty without model calls).
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub provider: String,
    /// By the configured price table (`[llm.prices."model"]`); 0 when the model has no price.
    #[serde(default)]
    pub cost_usd: f64,
}

/// One attempt's conversation with the model (`GET /beads/{id}/conversation?attempt=N`): the
/// system prompt, each reply, each action and its result, bounded and with secrets redacted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConversationDto {
    pub bead_id: String,
    pub attempt: u32,
    pub dispatch_id: String,
    /// `{role, content, tool_calls?, tool_call_id?}` in order; a `note` says what was left out.
    pub messages: Vec<serde_json::Value>,
}

/// `POST /beads/{id}/answer`: a person's answer to a decision bead.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnswerDecision {
    pub text: String,
}

/// Tokens and cost of one project's attempts in all (`GET /usage`, `GET /status`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UsageDto {
    pub project_id: String,
    pub attempts: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    pub cost_usd: f64,
}

/// A commit an agent pushed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CommitDto {
    pub sha: String,
    pub branch: String,
}

impl From<&Bead> for BeadDto {
    fn from(b: &Bead) -> Self {
        Self {
            id: b.id.to_string(),
            project_id: b.project_id.to_string(),
            title: b.title.clone(),
            description: b.description.clone(),
            bead_type: b.bead_type.as_str().into(),
            priority: b.priority.get(),
            status: b.status.as_str().into(),
            assignee: b.assignee.clone(),
            tags: b.tags.clone(),
            context: b.context.clone(),
            parent: b.parent.as_ref().map(ToString::to_string),
            blocked_by: b.blocked_by.iter().map(ToString::to_string).collect(),
            attempts: b.attempts,
            last_error: b.last_error.clone(),
            close_reason: b.close_reason.clone(),
            dispatch_id: b.dispatch_id.as_ref().map(ToString::to_string),
            dispatch_state: b.dispatch_state().map(|s| s.as_str().to_owned()),
            started_at: b.started_at,
            started_by: b.started_by.clone(),
            lease_expires_at: b.lease_expires_at,
            not_before: b.not_before,
            created_at: b.created_at,
            updated_at: b.updated_at,
            closed_at: b.closed_at,
            version: b.version,
            latest_result: None,
        }
    }
}

/// `POST /beads`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBead {
    pub project_id: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub bead_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub context: ContextMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default)]
    pub blocked_by: Vec<String>,
}

impl CreateBead {
    /// Validates into a domain bead.
    pub fn into_domain(self) -> Result<NewBead, loom_domain::Error> {
        let mut b = NewBead::new(ProjectId::parse(&self.project_id)?, self.title);
        b.description = self.description;
        if let Some(t) = self.bead_type {
            b.bead_type = t.parse::<BeadType>()?;
        }
        if let Some(p) = self.priority {
            b.priority = Priority::try_from(p)?;
        }
        b.assignee = self.assignee;
        b.tags = self.tags;
        b.context = self.context;
        b.parent = self.parent.as_deref().map(BeadId::parse).transpose()?;
        b.blocked_by = self.blocked_by.iter().map(|s| BeadId::parse(s)).collect::<Result<_, _>>()?;
        b.validate()?;
        Ok(b)
    }
}

/// `PATCH /beads/{id}`: fields to change. `version`, when given, must be the bead's current one.
/// `assignee` and `parent` take `null` to clear them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateBead {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub bead_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `null` clears the assignee.
    #[serde(default, with = "double_option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub assignee: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<ContextMap>,
    /// `null` clears the parent.
    #[serde(default, with = "double_option", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub parent: Option<Option<String>>,
}

/// `null` → `Some(None)`, absent → `None`.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer, T: Serialize>(v: &Option<Option<T>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }
}

/// `POST /beads/{id}/claim`: an agent or a person takes an open, unblocked bead to work on it
/// themselves; no task is published. Close it when done; if the lease lapses first, the bead is
/// dispatched again.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBead {
    /// Who claims (becomes the assignee).
    #[serde(alias = "assignee")]
    pub agent_id: String,
    /// Lease in seconds (default: the control plane's lease, 600 s; at most one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
}

/// `POST /beads/{id}/lease`: a claimer who works on a bead itself renews its lease. Only the
/// current dispatch (as the claim returned it) can be renewed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewLease {
    /// The bead's `dispatch_id` from the claim.
    pub dispatch_id: String,
    /// The lease runs this many seconds from now (default: the control plane's lease, 600 s; at
    /// most one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
}

/// `POST /beads/{id}/start`: an agent starts running the dispatch it holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartDispatch {
    /// The task's `metadata.dispatch_id`.
    pub dispatch_id: String,
    /// The agent instance that runs it.
    pub agent_id: String,
}

/// The answer to `POST /beads/{id}/start`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StartedDispatch {
    /// `started` (run it), `stale` (not the current dispatch: do not run it) or `superseded`
    /// (another agent had started it and its task came back: it is not run twice; the bead is
    /// open for a new dispatch, or blocked when its retry budget is spent).
    pub outcome: String,
    /// The bead after the start (absent when stale).
    pub bead: Option<BeadDto>,
}

/// `POST /beads/{id}/hand-back`: an agent gives a dispatch back unfinished (shutdown, drain).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HandBack {
    pub dispatch_id: String,
    pub agent_id: String,
    #[serde(default)]
    pub reason: String,
}

/// The answer to `POST /beads/{id}/hand-back`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HandedBack {
    /// False when nothing changed (the dispatch was not current, or another agent runs it).
    pub handed_back: bool,
    pub bead: Option<BeadDto>,
}

/// The longest lease a claim by hand may ask for.
pub const MAX_CLAIM_LEASE_SECS: u64 = 86_400;

/// `POST /beads/{id}/close`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CloseBead {
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub version: Option<i64>,
}

/// `POST|DELETE /beads/{id}/dependencies`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependency {
    pub blocker: String,
}

/// A page of beads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BeadPageDto {
    pub beads: Vec<BeadDto>,
    pub next_cursor: Option<String>,
}

/// An event as the API and the SSE stream show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventDto {
    pub seq: i64,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub project_id: Option<String>,
    pub entity_id: String,
    pub action: String,
    pub category: String,
    pub description: String,
    pub data: serde_json::Value,
    pub correlation_id: Option<String>,
    pub timestamp: DateTime<Utc>,
}

impl From<&Event> for EventDto {
    fn from(e: &Event) -> Self {
        Self {
            seq: e.seq,
            id: e.id.clone(),
            kind: e.kind.as_str().into(),
            source: e.source.clone(),
            project_id: e.project_id.as_ref().map(ToString::to_string),
            entity_id: e.entity_id.clone(),
            action: e.action.clone(),
            category: e.kind.category().into(),
            description: e.description.clone(),
            data: e.data.clone(),
            correlation_id: e.correlation_id.clone(),
            timestamp: e.created_at,
        }
    }
}

/// An API key as listed (never its secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct KeyDto {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Only in the response that creates the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl From<&ApiKey> for KeyDto {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            role: k.role.as_str().into(),
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            secret: None,
        }
    }
}

/// `POST /keys`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    pub name: String,
    pub role: String,
}

/// Counts of beads by status.
pub fn status_counts(counts: &[(Status, u64)]) -> serde_json::Map<String, serde_json::Value> {
    counts.iter().map(|(s, n)| (s.as_str().to_owned(), (*n).into())).collect()
}

/// The error body of every failed request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable `code` for programs and a `message` for people.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_bead_validates_and_rejects_unknown_fields() {
        let ok: CreateBead =
            serde_json::from_str(r#"{"project_id":"p","title":"t","priority":1,"type":"bug"}"#).unwrap();
        let b = ok.into_domain().unwrap();
        assert_eq!((b.priority.get(), b.bead_type), (1, BeadType::Bug));
        let bad: CreateBead = serde_json::from_str(r#"{"project_id":"p","title":"t","priority":9}"#).unwrap();
        assert!(bad.into_domain().unwrap_err().to_string().contains("priority"));
        assert!(serde_json::from_str::<CreateBead>(r#"{"project_id":"p","title":"t","prio":1}"#).is_err());
    }

    #[test]
    fn update_distinguishes_null_from_absent() {
        let u: UpdateBead = serde_json::from_str(r#"{"assignee":null}"#).unwrap();
        assert_eq!((u.assignee, u.parent), (Some(None), None));
        let u: UpdateBead = serde_json::from_str(r#"{"assignee":"ana"}"#).unwrap();
        assert_eq!(u.assignee, Some(Some("ana".into())));
    }
}

/// How `POST /projects/{id}/import` treats an edge to an issue that is neither in the file nor
/// a bead of the project (`?dangling=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Dangling {
    /// Keep it: a `blocks` or `parent-child` target becomes an open `decision` bead (an external
    /// reference, never ready, never dispatched) that its dependants wait on until someone closes
    /// it; other edge types are kept with the issue. An export gives every such edge back.
    #[default]
    Keep,
    /// Leave the edge out (it is reported, and an export will not have it).
    Skip,
}

/// The query of `POST /projects/{id}/import`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// `bd` (the only format, the default).
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub dangling: Dangling,
}

/// The query of `GET /projects/{id}/export`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// `bd` (the only format, the default).
    #[serde(default)]
    pub format: Option<String>,
}

/// What `POST /projects/{id}/import` did. Line numbers start at 1.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImportSummary {
    /// Lines read (blank lines included).
    pub lines: u64,
    /// Issues that became new beads.
    pub created: u64,
    /// Issues whose bead existed and differed: it now holds the file's fields and edges.
    pub updated: u64,
    /// Issues whose bead existed exactly so (an import of the same file twice skips them all).
    pub skipped: u64,
    /// External-reference beads created for dangling `blocks` / `parent-child` edges kept.
    pub external: u64,
    /// Lines not imported (or only in part), with why.
    pub errors: Vec<LineError>,
    /// Edges to issues neither in the file nor in the project, one per edge.
    pub dangling: Vec<DanglingEdge>,
    /// Dependency cycles in the file (`blocks` and `parent-child` edges): their issues are not
    /// imported, and edges to them are treated as dangling.
    pub cycles: Vec<CycleReport>,
    /// Issues whose id is not a valid bead id here (`{prefix}-{base36}`), or names a bead of
    /// another project, and the bead id they got. Exports give the original id back.
    pub mapped: Vec<MappedId>,
}

/// A line of an import that went wrong.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LineError {
    pub line: u64,
    pub error: String,
}

/// An edge of line `line` to an issue that is neither in the file nor in the project.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DanglingEdge {
    pub line: u64,
    pub issue: String,
    pub depends_on: String,
    /// The bd dependency type (`blocks`, `parent-child`, `related`, …).
    #[serde(rename = "type")]
    pub kind: String,
    /// `kept` or `skipped`.
    pub action: String,
}

/// A dependency cycle of the file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CycleReport {
    /// The issues on the cycle, and their lines, in file order.
    pub issues: Vec<String>,
    pub lines: Vec<u64>,
}

/// An issue id the import had to change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MappedId {
    pub line: u64,
    pub from: String,
    pub to: String,
}

/// A connector as the API shows it: secrets by name, each value `****` (never the secret).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectorDto {
    pub id: String,
    /// `llm_provider`, `prometheus`, `grafana`, `jaeger`, `git_host`, `webhook` or `http`.
    pub kind: String,
    /// `enabled` or `disabled`.
    pub mode: String,
    pub url: String,
    pub description: String,
    pub settings: BTreeMap<String, String>,
    /// The secrets that are set, each shown as `****`.
    pub secrets: BTreeMap<String, String>,
    pub event_types: Vec<String>,
    pub check_interval_ms: u64,
    pub check_timeout_ms: u64,
    /// The `expected_version` of the next update.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub health: ConnectorHealthDto,
}

/// A connector's health as its last check found it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConnectorHealthDto {
    pub connector_id: String,
    /// `unknown`, `healthy` or `unhealthy`.
    pub status: String,
    pub message: String,
    pub checked_at: Option<DateTime<Utc>>,
    pub latency_ms: u64,
    /// An LLM provider's models.
    pub models: Vec<String>,
}

/// `POST /connectors`: a new connector; `secrets` are write-only.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorRequest {
    pub id: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    pub url: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_timeout_ms: Option<u64>,
}

/// `PUT /connectors/{id}`: the connector's new settings, applied only at `expected_version`.
/// Secrets named in `secrets` are set, those in `remove_secrets` deleted, the others kept.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConnector {
    pub expected_version: i64,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    pub url: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub remove_secrets: Vec<String>,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_timeout_ms: Option<u64>,
}
