//! Loom's source of truth: the [`Store`] trait and its implementations — PostgreSQL (production,
//! [`PgStore`]) and SQLite (the embedded default of `loom up`, [`SqliteStore`]) — with their
//! embedded, versioned migrations.
//!
//! Invariants every implementation keeps (the conformance suite in [`conformance`] checks them
//! against each backend):
//! - A failed operation changes nothing; every multi-row change is one transaction.
//! - Status changes follow `loom_domain::Status::check_transition`; a bead is `in_progress` only
//!   with a current `dispatch_id` and a lease.
//! - No dependency edge closes a cycle and none names a missing bead.
//! - A claim, its outbox row and its event commit together; a result is applied at most once, and
//!   only while its `dispatch_id` is the bead's current one (the fencing token). An applied
//!   result is kept as the dispatch's `Attempt`, and the beads it discovered are created, in the
//!   same transaction.
//! - Every bead change bumps `version` and appends an event in the same transaction.
//!
//! This is the only crate that speaks SQL.

mod cycles;
mod error;
mod import;
mod model;
mod pg;
pub mod scratch;
mod sqlite;
mod transitions;

#[cfg(feature = "testing")]
pub mod conformance;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{Error, Result};
pub use model::*;
pub use pg::{PgOptions, PgStore};
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use loom_domain::{Agent, ApiKey, Bead, BeadId, DispatchId, Event, NewBead, NewProject, Project, ProjectId, Role};

/// Everything Loom persists. Implemented by PostgreSQL, SQLite and (in `loom-db`) the gRPC client.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Creates a project; `AlreadyExists` if the id is taken.
    async fn create_project(&self, project: NewProject) -> Result<Project>;
    /// One project, or `NotFound`.
    async fn get_project(&self, id: &ProjectId) -> Result<Project>;
    /// All projects, ordered by id.
    async fn list_projects(&self) -> Result<Vec<Project>>;
    /// Replaces a project's fields (not its id or bead prefix).
    async fn update_project(&self, project: NewProject) -> Result<Project>;
    /// Deletes a project and its beads; `Conflict` while any bead is `in_progress`, and while a
    /// bead of another project waits on one of its beads (deleting the blocker would silently
    /// unblock it): the error names those beads.
    async fn delete_project(&self, id: &ProjectId) -> Result<()>;

    /// Creates beads (one transaction: all or none); blockers and parents must exist.
    async fn create_beads(&self, beads: Vec<NewBead>) -> Result<Vec<Bead>>;
    /// One bead with its `blocked_by` edges, or `NotFound`.
    async fn get_bead(&self, id: &BeadId) -> Result<Bead>;
    /// One bead and its latest finished attempt (what `GET /beads/{id}` shows), or `NotFound`.
    /// The attempt's `conversation` is left empty (`list_attempts` has it). A backend may answer
    /// in one round trip; by default this is `get_bead` then `list_attempts`.
    async fn get_bead_view(&self, id: &BeadId) -> Result<(Bead, Option<Attempt>)> {
        let bead = self.get_bead(id).await?;
        let mut latest = self.list_attempts(id).await?.pop();
        if let Some(a) = latest.as_mut() {
            a.conversation.clear();
        }
        Ok((bead, latest))
    }
    /// A page of beads matching `filter`, oldest first.
    async fn list_beads(&self, filter: &BeadFilter, page: &PageRequest) -> Result<BeadPage>;
    /// Applies `patch` if the bead is still at `expected_version`.
    async fn update_bead(&self, id: &BeadId, expected_version: i64, patch: BeadPatch) -> Result<Bead>;
    /// Closes by hand (`open | blocked | in_progress → closed`); a running task gets a
    /// `task.cancelled` outbox row.
    async fn close_bead(&self, id: &BeadId, reason: &str, expected_version: Option<i64>) -> Result<Bead>;
    /// `closed | blocked → open`, clearing the error and retry backoff.
    async fn reopen_bead(&self, id: &BeadId, expected_version: Option<i64>) -> Result<Bead>;
    /// `bead` waits on `blocker`. Refuses a cycle or a missing blocker. Idempotent.
    async fn add_dependency(&self, bead: &BeadId, blocker: &BeadId) -> Result<Bead>;
    /// Removes the edge; `NotFound` if there was none.
    async fn remove_dependency(&self, bead: &BeadId, blocker: &BeadId) -> Result<Bead>;
    /// Imports beads from another tracker into `project`, keeping their ids, statuses and times,
    /// in one transaction (all or none): a bead that does not exist is created, one of the
    /// project that differs is overwritten (fields and `blocked_by` edges), an identical one is
    /// left alone, so importing the same batch twice changes nothing. A bead running under a Loom
    /// dispatch is refused (left as it is). Errors: `Conflict` for an id of another project,
    /// `MissingBlocker` / `NotFound` for a blocker or parent neither stored nor in the batch, a
    /// cycle. The outcomes are in the order of `beads`. The id counter is moved past every
    /// imported `{prefix}-{base36}` id, so no later bead is given one of them.
    async fn import_beads(&self, project: &ProjectId, beads: Vec<ImportBead>) -> Result<Vec<ImportAction>>;
    /// The project of each of `ids` that names a stored bead (the others are left out), in no
    /// particular order.
    async fn bead_projects(&self, ids: &[BeadId]) -> Result<Vec<(BeadId, ProjectId)>>;
    /// Ready beads of a project (open, not a decision, every blocker closed, not backing off),
    /// by priority then age.
    async fn list_ready(&self, project: &ProjectId, limit: u32, now: DateTime<Utc>) -> Result<Vec<Bead>>;

    /// Claims up to `max` ready beads of an active project: each goes `in_progress` with a new
    /// `dispatch_id` and lease, and a `task.assigned` outbox row, all in one transaction.
    /// Concurrent claimers never get the same bead.
    async fn claim_ready(&self, request: &ClaimRequest) -> Result<Vec<Claim>>;
    /// Creates one bead and, in the same transaction, claims it as `claim_ready` would when it
    /// is dispatchable at once: it has no parent and no blockers, it is not a decision, its
    /// project (`request.project`, which must be the bead's) is active and has no other ready
    /// bead (so priority order holds). Otherwise it is created `open`, as by `create_beads`. The
    /// caller checks the concurrency limits and that it may dispatch (leader). One commit
    /// instead of two on the path from create to agent.
    async fn create_claimed(&self, bead: NewBead, request: &ClaimRequest) -> Result<CreatedBead>;
    /// Creates `beads` (as `create_beads`: all or none, in order) and claims up to
    /// `request.max` ready beads of `request.project` — the project's best in ready order, so an
    /// older ready bead goes before the new ones — for the API's creates that arrived together
    /// while their project had room. One transaction where the backend can (PostgreSQL);
    /// elsewhere the beads are created first and a claim that then fails only leaves them open
    /// for the dispatcher's next pass (it is logged, not returned: the creates did happen).
    async fn create_and_claim(&self, beads: Vec<NewBead>, request: &ClaimRequest) -> Result<(Vec<Bead>, Vec<Claim>)> {
        let beads = self.create_beads(beads).await?;
        match self.claim_ready(request).await {
            Ok(claims) => Ok((beads, claims)),
            Err(e) => {
                tracing::warn!(project = %request.project, error = %e, "created beads could not be claimed at once; the dispatcher will");
                Ok((beads, Vec::new()))
            }
        }
    }
    /// Claims one open bead for `claimer`, who does the work itself (no task is published): it
    /// goes `in_progress` under a new `dispatch_id` with a lease of `lease`, assigned to the
    /// claimer. Refused (conflict) unless the bead is open and every blocker is closed. The
    /// claimer closes it when done; if the lease lapses first, the bead is dispatched again.
    async fn claim_bead(&self, id: &BeadId, claimer: &str, lease: std::time::Duration) -> Result<Bead>;
    /// An agent starts a dispatch it holds: the bead goes from queued to running (`started_at`,
    /// `started_by`, a lease of `start.lease`) and a `bead.started` event is appended. Only a
    /// started dispatch has a lease clock. See [`StartOutcome`] for stale and superseded ones.
    async fn start_dispatch(&self, start: &DispatchStart) -> Result<StartOutcome>;
    /// An agent gives a current dispatch back without a result (shutdown, drain): the bead is
    /// open again at once, with the attempt not counted, so a graceful hand-back spends no retry
    /// budget; the next dispatch gets a new `dispatch_id`. `None` (nothing changed) unless the
    /// dispatch is current and not started by another agent.
    async fn hand_back(&self, dispatch: &DispatchId, agent_id: &str, reason: &str) -> Result<Option<Bead>>;
    /// Extends the lease of a current dispatch (agent progress); false if it is not current.
    /// Progress from an agent that did not report a start marks the dispatch started.
    async fn extend_lease(&self, dispatch: &DispatchId, until: DateTime<Utc>) -> Result<bool>;
    /// Applies an agent's result once, keyed by `dispatch_id`; stale or repeated results are no-ops.
    async fn record_result(&self, result: &DispatchResult) -> Result<ResultOutcome> {
        let mut outcomes = self.record_results(std::slice::from_ref(result)).await?;
        outcomes.pop().ok_or_else(|| Error::Internal("record_results returned no outcome".into()))
    }
    /// Applies a batch of results in one transaction, as `record_result` would one by one in
    /// order (a repeat later in the batch is a no-op); the outcomes are in the order of `results`.
    /// Either all are applied or, on error, none.
    async fn record_results(&self, results: &[DispatchResult]) -> Result<Vec<ResultOutcome>>;
    /// The finished dispatches of a bead as their agents reported them, oldest first; `NotFound`
    /// if there is no such bead.
    async fn list_attempts(&self, bead: &BeadId) -> Result<Vec<Attempt>>;
    /// Returns beads whose lease expired before `now` to `open` (or `blocked` when their retry
    /// budget is spent), so they are dispatched again with a new `dispatch_id`.
    async fn release_expired_leases(&self, now: DateTime<Utc>, max_attempts: u32, limit: u32) -> Result<Vec<Bead>>;
    /// Blocks an `in_progress` bead whose task was dead-lettered, if `dispatch_id` is current.
    async fn block_dispatch(&self, dispatch: &DispatchId, reason: &str) -> Result<Option<Bead>>;

    /// A named position (the event relay's last published `seq`), 0 when never saved.
    async fn position(&self, name: &str) -> Result<i64>;
    /// Saves a named position; a lower value than the saved one is ignored (positions only advance).
    async fn save_position(&self, name: &str, position: i64) -> Result<()>;

    /// Appends an event outside a bead change (agents, connectors).
    async fn append_event(&self, event: NewEvent) -> Result<Event>;
    /// Appends `events` in order: in one transaction where the backend has them (the audit log
    /// writes in bursts), one at a time otherwise.
    async fn append_events(&self, events: Vec<NewEvent>) -> Result<()> {
        for event in events {
            self.append_event(event).await?;
        }
        Ok(())
    }
    /// Events with `seq > after`, oldest first.
    async fn list_events(&self, after: i64, limit: u32) -> Result<Vec<Event>>;
    /// A page of events for a reader that keeps no state: optionally one project's (through its
    /// index), ending before a gap in the seqs that may still fill, with the cursor to continue
    /// from. See [`EventQuery`].
    async fn list_event_page(&self, query: &EventQuery) -> Result<EventPage>;
    /// The `seq` of the newest event (0 when there is none): where a live stream starts.
    async fn last_event_seq(&self) -> Result<i64>;

    /// The oldest unsent outbox rows.
    async fn take_outbox(&self, limit: u32) -> Result<Vec<OutboxMessage>>;
    /// Forgets rows the relay has published.
    async fn mark_outbox_sent(&self, ids: &[i64]) -> Result<()>;
    /// How many rows the outbox holds, exactly: every one is unsent (published rows are
    /// deleted), so this counts the backlog itself and costs time in its size, not the history's.
    async fn outbox_backlog(&self) -> Result<u64>;

    /// Records an agent's registration or heartbeat (the bus registry is live; this is history).
    async fn upsert_agent(&self, agent: &Agent) -> Result<()>;
    /// Agents known to the store, optionally of one project.
    async fn list_agents(&self, project: Option<&ProjectId>) -> Result<Vec<Agent>>;

    /// Counts of beads by status, for metrics and `loom status`.
    async fn bead_counts(&self, project: Option<&ProjectId>) -> Result<Vec<(loom_domain::Status, u64)>>;
    /// How many beads each project has `in_progress` (projects with none are left out). Reads
    /// only running beads, so it stays cheap however many beads are closed.
    async fn running_by_project(&self) -> Result<Vec<(ProjectId, u64)>>;

    /// Stores a new API key by the hash of its secret (the secret itself is never stored).
    async fn create_api_key(&self, name: &str, role: Role, hash: &str) -> Result<ApiKey>;
    /// The live (not revoked) key with this hash, if any.
    async fn find_api_key(&self, hash: &str) -> Result<Option<ApiKey>>;
    /// Every key, revoked ones included, oldest first.
    async fn list_api_keys(&self) -> Result<Vec<ApiKey>>;
    /// Revokes a key; `NotFound` if there is no such live key.
    async fn revoke_api_key(&self, id: &str) -> Result<()>;

    /// Takes or renews the named lease for `holder` until `now + ttl`. True when `holder` holds it
    /// afterwards: it was free, expired, or already `holder`'s. Used for leader election.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        ttl: std::time::Duration,
    ) -> Result<bool>;
    /// Gives the lease up if `holder` holds it, so another may take it at once.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    /// Every connector, ordered by id.
    async fn list_connectors(&self) -> Result<Vec<ConnectorRecord>>;
    /// One connector, or `NotFound`.
    async fn get_connector(&self, id: &str) -> Result<ConnectorRecord>;
    /// Stores a new connector at version 1; `AlreadyExists` if the id is taken.
    async fn create_connector(&self, connector: NewConnector) -> Result<ConnectorRecord>;
    /// Replaces a connector's kind, settings and sealed secrets if it is still at
    /// `expected_version`, bumping the version; `NotFound`, or `Conflict` naming both versions.
    async fn update_connector(&self, expected_version: i64, connector: NewConnector) -> Result<ConnectorRecord>;
    /// Deletes a connector; `NotFound` if there is none.
    async fn delete_connector(&self, id: &str) -> Result<()>;
    /// Tokens and cost of the recorded attempts in all, per project (only `project`'s when
    /// given), ordered by project; projects without attempts are left out.
    async fn token_usage(&self, project: Option<&ProjectId>) -> Result<Vec<ProjectUsage>>;
}

/// Truncates to whole microseconds, the precision both databases keep, so that what a store
/// returns equals what it later reads back.
pub(crate) fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    use chrono::SubsecRound;
    t.trunc_subsecs(6)
}

/// The current time at store precision.
pub(crate) fn now() -> DateTime<Utc> {
    micros(Utc::now())
}

/// A database URL with its password replaced by `****`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((userinfo, host)) if userinfo.contains(':') => {
                let user = userinfo.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:****@{host}")
            }
            _ => url.to_owned(),
        },
        None => url.to_owned(),
    }
}
