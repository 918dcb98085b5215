//! The request and response types of the `Store` trait, beyond the domain entities.

use chrono::{DateTime, Utc};
use loom_domain::{
    Bead, BeadId, BeadType, ContextMap, DispatchId, Event, EventKind, Priority, ProjectId, Status, validate_context,
    validate_description, validate_tags, validate_title,
};
use serde::{Deserialize, Serialize};

/// Which beads `list_beads` returns; `None` matches anything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BeadFilter {
    pub project: Option<ProjectId>,
    pub status: Option<Status>,
    pub bead_type: Option<BeadType>,
    pub assignee: Option<String>,
    pub priority: Option<Priority>,
    pub tag: Option<String>,
}

/// Keyset paging: `after` is the `next_cursor` of the previous page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: u32,
}

impl PageRequest {
    /// Largest page a caller may ask for.
    pub const MAX_LIMIT: u32 = 1000;

    /// The first page of `limit` items.
    pub fn first(limit: u32) -> Self {
        Self { after: None, limit }
    }

    pub(crate) fn parse(&self) -> crate::Result<(i64, i64)> {
        let after = match &self.after {
            None => 0,
            Some(c) => c.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| loom_domain::Error::Invalid {
                field: "cursor",
                reason: format!("{c:?} is not a cursor this API returned"),
            })?,
        };
        if self.limit == 0 || self.limit > Self::MAX_LIMIT {
            return Err(loom_domain::Error::Invalid {
                field: "limit",
                reason: format!("{} is out of range: use 1-{}", self.limit, Self::MAX_LIMIT),
            }
            .into());
        }
        Ok((after, i64::from(self.limit)))
    }
}

/// One page of beads; `next_cursor` is `None` on the last page.
#[derive(Clone, Debug, PartialEq)]
pub struct BeadPage {
    pub beads: Vec<Bead>,
    pub next_cursor: Option<String>,
}

/// A partial update; `None` leaves a field as it is. A status change follows the status machine
/// (`in_progress` only by claim; `closed` cancels a running task as `close_bead` does).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BeadPatch {
    pub title: Option<String>,
    pub description: Option<String>,
    pub bead_type: Option<BeadType>,
    pub priority: Option<Priority>,
    pub status: Option<Status>,
    pub assignee: Option<Option<String>>,
    pub tags: Option<Vec<String>>,
    pub context: Option<ContextMap>,
    pub parent: Option<Option<BeadId>>,
}

impl BeadPatch {
    /// Checks the free-form fields against the domain limits.
    pub fn validate(&self) -> crate::Result<()> {
        if let Some(t) = &self.title {
            validate_title(t)?;
        }
        if let Some(d) = &self.description {
            validate_description(d)?;
        }
        if let Some(t) = &self.tags {
            validate_tags(t)?;
        }
        if let Some(c) = &self.context {
            validate_context(c)?;
        }
        Ok(())
    }
}

/// A request to claim ready beads of one project.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimRequest {
    pub project: ProjectId,
    pub max: u32,
    /// The lease runs until `now + lease`.
    pub now: DateTime<Utc>,
    pub lease: std::time::Duration,
    /// Who claims (recorded as the assignee when the bead has none).
    pub claimer: String,
}

/// A bead handed out: it is `in_progress` under `dispatch_id` until the lease expires.
#[derive(Clone, Debug, PartialEq)]
pub struct Claim {
    pub bead: Bead,
    pub dispatch_id: DispatchId,
    /// 1 for the first dispatch, 2 for the first retry, …
    pub attempt: u32,
    pub lease_expires_at: DateTime<Utc>,
    /// The claim's `task.assigned` outbox row: the claimer may publish the task itself and mark
    /// this row sent; otherwise the outbox relay publishes it.
    pub outbox_id: i64,
}

/// What `Store::create_claimed` did with the bead it created.
#[derive(Clone, Debug, PartialEq)]
pub enum CreatedBead {
    /// Claimed in the create's own transaction: it is `in_progress` with its outbox row.
    Claimed(Claim),
    /// Created `open`; the dispatcher claims it when its turn comes.
    Open(Bead),
}

impl CreatedBead {
    pub fn bead(&self) -> &Bead {
        match self {
            CreatedBead::Claimed(c) => &c.bead,
            CreatedBead::Open(b) => b,
        }
    }
}

/// What an agent reported for one dispatch.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchResult {
    pub bead_id: BeadId,
    pub dispatch_id: DispatchId,
    pub agent_id: String,
    pub outcome: Outcome,
    /// What the agent reported besides the outcome, kept as the dispatch's [`Attempt`].
    pub report: Report,
    pub now: DateTime<Utc>,
    /// Attempts allowed in all; a failure on the last one blocks the bead.
    pub max_attempts: u32,
    /// How long a failed bead waits before it is ready again.
    pub retry_backoff: std::time::Duration,
}

/// Success or failure of a dispatch.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Success,
    Failure { error: String },
}

/// What an agent reported with a result besides its outcome. The store bounds it (see
/// [`Report::bounded`]) before keeping it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// What the work printed; the store keeps its last [`Report::OUTPUT_MAX`] bytes.
    pub output: String,
    /// Commits the agent pushed.
    pub commits: Vec<Commit>,
    /// Paths or URLs of what the work produced.
    pub artifacts: Vec<String>,
    /// Milliseconds the agent spent on the task.
    pub duration_ms: u64,
    /// Follow-up beads the agent asked for (the LLM action `create_bead`), in the order asked.
    /// They are created in the bead's project when a success is applied, in the same
    /// transaction, so a repeated result (a no-op) creates none again.
    pub discovered: Vec<Discovered>,
    /// Tokens the attempt's model calls used, and their cost.
    pub usage: TokenUsage,
    /// The attempt's conversation with the model as a JSON array of messages (system prompt,
    /// replies, actions and their results), bounded and with secrets redacted by the agent;
    /// empty when there was none. The store keeps at most [`Report::CONVERSATION_MAX`] bytes.
    pub conversation: String,
}

/// Tokens one attempt's model calls used, the model and provider that answered, and what they
/// cost by the configured price table (0 when the model has no price).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub model: String,
    pub provider: String,
    pub cost_usd: f64,
}

impl TokenUsage {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// The tokens and cost of one project's attempts in all (`Store::token_usage`).
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectUsage {
    pub project_id: ProjectId,
    /// Attempts recorded (with or without model calls).
    pub attempts: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_usd: f64,
}

impl Report {
    /// Output kept per attempt: its tail.
    pub const OUTPUT_MAX: usize = 64 * 1024;
    /// Commits, artifacts and discovered beads kept per attempt.
    pub const ITEMS_MAX: usize = 100;
    /// Longest commit sha, branch or artifact kept.
    pub const ITEM_LEN_MAX: usize = 1024;
    /// Longest conversation kept (a longer one is dropped: cut JSON would not parse).
    pub const CONVERSATION_MAX: usize = 256 * 1024;

    /// The report within the store's limits: the output's tail, the first items, each item cut.
    pub fn bounded(mut self) -> Report {
        self.output = tail(&self.output, Self::OUTPUT_MAX).to_owned();
        self.commits.truncate(Self::ITEMS_MAX);
        for c in &mut self.commits {
            c.sha = head(&c.sha, Self::ITEM_LEN_MAX).to_owned();
            c.branch = head(&c.branch, Self::ITEM_LEN_MAX).to_owned();
        }
        self.artifacts.truncate(Self::ITEMS_MAX);
        for a in &mut self.artifacts {
            *a = head(a, Self::ITEM_LEN_MAX).to_owned();
        }
        self.discovered.truncate(Self::ITEMS_MAX);
        if self.conversation.len() > Self::CONVERSATION_MAX {
            self.conversation.clear();
        }
        self.usage.model = head(&self.usage.model, Self::ITEM_LEN_MAX).to_owned();
        self.usage.provider = head(&self.usage.provider, Self::ITEM_LEN_MAX).to_owned();
        if !self.usage.cost_usd.is_finite() || self.usage.cost_usd < 0.0 {
            self.usage.cost_usd = 0.0;
        }
        self
    }
}

/// The last `max` bytes of `s`, at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The first `max` bytes of `s`, at a character boundary.
fn head(s: &str, max: usize) -> &str {
    &s[..s.floor_char_boundary(max)]
}

/// A commit an agent pushed: its hash and the branch it landed on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub sha: String,
    pub branch: String,
}

/// How the dispatch id of a claim by hand (`Store::claim_bead`) begins: no task was published
/// for it, a person (or tool) works on it. Both that claimer and an agent that started a
/// dispatch are the bead's assignee and `started_by`, so only the id tells them apart.
pub const HAND_CLAIM_PREFIX: &str = "hand-";

/// Whether `dispatch` is a claim by hand (see [`HAND_CLAIM_PREFIX`]).
pub fn is_claim_by_hand(dispatch: &DispatchId) -> bool {
    dispatch.as_str().starts_with(HAND_CLAIM_PREFIX)
}

/// The context key of a bead created by an agent's `create_bead`: the id of the bead that
/// agent was working on.
pub const DISCOVERED_FROM: &str = "discovered_from";

/// A follow-up bead an agent asked for while working on another (it *discovered* it).
#[derive(Clone, Debug, PartialEq)]
pub struct Discovered {
    pub title: String,
    pub description: String,
    pub priority: Priority,
    pub bead_type: BeadType,
}

/// One finished dispatch of a bead as its agent reported it: kept for every applied result
/// (never for a stale or repeated one), listed oldest first by `Store::list_attempts`.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub bead_id: BeadId,
    pub dispatch_id: DispatchId,
    /// The bead's attempt number this dispatch was (1 for the first).
    pub attempt: u32,
    pub agent_id: String,
    pub succeeded: bool,
    /// Why it failed; `None` on success.
    pub error: Option<String>,
    /// The tail of the output.
    pub output: String,
    pub commits: Vec<Commit>,
    pub artifacts: Vec<String>,
    /// The beads created from this attempt's `discovered` ones, in order.
    pub created_beads: Vec<BeadId>,
    pub duration_ms: u64,
    /// Tokens and cost of the attempt's model calls.
    pub usage: TokenUsage,
    /// The conversation with the model (JSON array text; empty when there was none).
    pub conversation: String,
    /// When the agent reported its start (`None` if it never did).
    pub started_at: Option<DateTime<Utc>>,
    /// When the result was applied.
    pub finished_at: DateTime<Utc>,
}

/// An agent reports that it starts running a dispatch it holds.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchStart {
    pub bead_id: BeadId,
    pub dispatch_id: DispatchId,
    pub agent_id: String,
    pub now: DateTime<Utc>,
    /// The lease runs until `now + lease` and is extended by the agent's progress.
    pub lease: std::time::Duration,
    /// Attempts allowed in all: a superseded dispatch on its last attempt blocks the bead.
    pub max_attempts: u32,
}

/// What `Store::start_dispatch` did.
#[derive(Clone, Debug, PartialEq)]
pub enum StartOutcome {
    /// The agent may run it: the bead is running under this dispatch, held by this agent (also
    /// when the same agent reports the same start again).
    Started(Bead),
    /// The dispatch is not the bead's current one (or the bead is gone): do not run it.
    Stale,
    /// Another agent started this dispatch and its task came back (that agent stopped without
    /// settling it), so it may have run in part: it is never run a second time. The bead is open
    /// for a new dispatch (or blocked when its retry budget is spent); do not run it.
    Superseded(Bead),
}

/// What `record_result` did.
#[derive(Clone, Debug, PartialEq)]
pub enum ResultOutcome {
    /// The bead is closed; its dependants may now be ready.
    Closed(Bead),
    /// The bead is open again and will be retried after its backoff.
    Retrying(Bead),
    /// The retry budget is spent; the bead is blocked with the error.
    Blocked(Bead),
    /// The dispatch is not the bead's current one (stale, repeated, or the bead is gone):
    /// nothing changed.
    Ignored,
}

/// What `Store::list_event_page` reads: a page of the event log a reader that keeps no state
/// (`GET /events`) can continue from without skipping an event that commits late.
#[derive(Clone, Debug, PartialEq)]
pub struct EventQuery {
    /// Events with `seq > after` (the previous page's `next`).
    pub after: i64,
    /// At most this many (1–1000).
    pub limit: u32,
    /// Only this project's events, read through the project's index: a quiet project behind a
    /// busy one costs a read of its own events, not of the busy one's.
    pub project: Option<ProjectId>,
    /// On PostgreSQL an event's `seq` is drawn at insert, not at commit, so a gap in the seqs may
    /// still fill. A gap whose next event was created after this instant is waited for: the page
    /// (and its `next`) stops before it. Older gaps are rolled-back inserts.
    pub gaps_fill_until: DateTime<Utc>,
}

/// A page of events and where to continue.
#[derive(Clone, Debug, PartialEq)]
pub struct EventPage {
    /// Matching events, oldest first.
    pub events: Vec<Event>,
    /// The `after` of the next call: past every event read, and for a filtered read past the
    /// other projects' events up to the settled horizon, so paging never reads them again.
    pub next: i64,
}

impl EventPage {
    /// The page of `events` (read with `seq > after AND seq <= horizon`, `limit` at most), where
    /// every seq up to `horizon` is visible or never will be.
    pub(crate) fn settled(query: &EventQuery, horizon: i64, events: Vec<Event>) -> Self {
        let next = match events.last() {
            Some(last) if events.len() as u64 >= u64::from(query.limit) => last.seq,
            _ => horizon.max(query.after),
        };
        Self { events, next }
    }
}

/// An event to append; the store assigns `id`, `seq` and the time.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub kind: EventKind,
    pub source: String,
    pub project_id: Option<ProjectId>,
    pub entity_id: String,
    pub action: String,
    pub description: String,
    pub data: serde_json::Value,
    pub correlation_id: Option<String>,
}

/// What an outbox row asks the relay to publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutboxKind {
    #[serde(rename = "task.assigned")]
    TaskAssigned,
    #[serde(rename = "task.cancelled")]
    TaskCancelled,
}

impl OutboxKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutboxKind::TaskAssigned => "task.assigned",
            OutboxKind::TaskCancelled => "task.cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> crate::Result<Self> {
        match s {
            "task.assigned" => Ok(OutboxKind::TaskAssigned),
            "task.cancelled" => Ok(OutboxKind::TaskCancelled),
            other => Err(crate::Error::Internal(format!("unknown outbox kind {other:?}"))),
        }
    }
}

/// A message written in the same transaction as the state change it announces; the relay
/// publishes it with `Nats-Msg-Id = dispatch_id` (so a re-publish is deduplicated) and marks it sent.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboxMessage {
    pub id: i64,
    pub kind: OutboxKind,
    pub project_id: ProjectId,
    pub bead_id: BeadId,
    pub dispatch_id: DispatchId,
    pub attempt: u32,
    /// A snapshot of what the agent needs: [`TaskSnapshot`] for `task.assigned`,
    /// `{"reason": …}` for `task.cancelled`.
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// The bead fields a task carries, as stored in a `task.assigned` outbox row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSnapshot {
    pub title: String,
    pub description: String,
    pub priority: u8,
    #[serde(rename = "type")]
    pub bead_type: String,
    pub context: ContextMap,
    pub assignee: Option<String>,
}

impl TaskSnapshot {
    /// The snapshot of `bead` a claim writes to the outbox.
    pub fn of(bead: &Bead) -> Self {
        Self {
            title: bead.title.clone(),
            description: bead.description.clone(),
            priority: bead.priority.get(),
            bead_type: bead.bead_type.as_str().to_owned(),
            context: bead.context.clone(),
            assignee: bead.assignee.clone(),
        }
    }
}

impl NewEvent {
    /// The event for a change to project `p` (`project.created`, …).
    pub(crate) fn for_project(p: &loom_domain::Project, kind: EventKind) -> Self {
        let action = kind.as_str().split_once('.').map_or("", |(_, a)| a).to_owned();
        NewEvent {
            kind,
            source: "store".into(),
            project_id: Some(p.id.clone()),
            entity_id: p.id.to_string(),
            description: format!("project {} {action}", p.id),
            action,
            data: serde_json::json!({ "name": p.name, "status": p.status.as_str() }),
            correlation_id: None,
        }
    }

    /// The event for a change to `bead`.
    pub(crate) fn for_bead(bead: &Bead, kind: EventKind, description: String, data: serde_json::Value) -> Self {
        NewEvent {
            kind,
            source: "store".into(),
            project_id: Some(bead.project_id.clone()),
            entity_id: bead.id.to_string(),
            action: kind.as_str().split_once('.').map_or("", |(_, a)| a).to_owned(),
            description,
            data,
            correlation_id: None,
        }
    }
}

/// A bead as an import brings it in from another tracker: its id, status and times are the
/// source's, not drawn by the store. Blockers and the parent must exist in the store or come
/// earlier in the same batch (any order within the batch is fine).
#[derive(Clone, Debug, PartialEq)]
pub struct ImportBead {
    pub id: BeadId,
    pub title: String,
    pub description: String,
    pub bead_type: BeadType,
    pub priority: Priority,
    /// Anything but `in_progress`, which only a Loom dispatch (with a lease) may set.
    pub status: Status,
    pub assignee: Option<String>,
    pub tags: Vec<String>,
    pub context: ContextMap,
    pub parent: Option<BeadId>,
    pub blocked_by: Vec<BeadId>,
    pub close_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Kept only on a closed bead (set to `updated_at` when a closed bead has none).
    pub closed_at: Option<DateTime<Utc>>,
}

impl ImportBead {
    /// Checks the free-form fields against the domain limits, and the status.
    pub fn validate(&self) -> crate::Result<()> {
        validate_title(&self.title)?;
        validate_description(&self.description)?;
        validate_tags(&self.tags)?;
        validate_context(&self.context)?;
        if self.status == Status::InProgress {
            return Err(loom_domain::Error::Invalid {
                field: "status",
                reason: format!("bead {}: in_progress is set by a Loom dispatch, never by an import", self.id),
            }
            .into());
        }
        if self.parent.as_ref() == Some(&self.id) {
            return Err(loom_domain::Error::Invalid {
                field: "parent",
                reason: format!("bead {} cannot be its own parent", self.id),
            }
            .into());
        }
        Ok(())
    }
}

/// What `Store::import_beads` did with one bead, in the order they were given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportAction {
    /// There was no bead with this id: it was created.
    Created,
    /// The bead existed in the project and differed: it now holds the imported fields and edges.
    Updated,
    /// The bead existed with exactly these fields and edges: nothing changed.
    Unchanged,
    /// The bead was left as it is, for the reason given (it is running under a Loom dispatch).
    Refused(String),
}

/// A connector as the store keeps it (the connectors service owns what it means): its kind, its
/// settings (never a secret) and its secrets sealed by the service — the store never sees them
/// in clear. `version` starts at 1 and is bumped by every update.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorRecord {
    pub id: String,
    pub kind: String,
    pub config: serde_json::Value,
    pub sealed_secrets: Vec<u8>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What `create_connector` and `update_connector` write.
#[derive(Clone, Debug, PartialEq)]
pub struct NewConnector {
    pub id: String,
    pub kind: String,
    pub config: serde_json::Value,
    pub sealed_secrets: Vec<u8>,
}

impl NewConnector {
    /// Refuses what no connector may hold: an empty or over-long id or kind.
    pub fn validate(&self) -> Result<(), loom_domain::Error> {
        let bad = |field, reason: &str| Err(loom_domain::Error::Invalid { field, reason: reason.into() });
        if self.id.is_empty() || self.id.len() > 64 {
            return bad("connector id", "must be 1 to 64 characters");
        }
        if self.kind.is_empty() || self.kind.len() > 32 {
            return bad("connector kind", "must be 1 to 32 characters");
        }
        Ok(())
    }
}

/// The conflict of an update whose `expected_version` is stale.
pub(crate) fn connector_conflict(id: &str, expected: i64, actual: i64) -> crate::Error {
    crate::Error::Conflict(format!(
        "connector {id} was changed concurrently: expected version {expected}, it is at {actual}; re-read and retry"
    ))
}
