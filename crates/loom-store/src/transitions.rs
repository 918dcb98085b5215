//! What each bead change does to a bead, independent of the backend: backends load the row
//! (locked), apply one of these functions, write the row back and record the returned effects in
//! the same transaction. Hot set-based paths (claim) follow the same rules in SQL.

use chrono::{DateTime, Utc};
use loom_domain::{Bead, BeadId, BeadType, DispatchId, EventKind, NewBead, Status, truncate_reason};
use serde_json::json;

use crate::{
    Attempt, BeadPatch, ClaimRequest, Discovered, DispatchResult, Error, NewEvent, OutboxKind, Outcome, Result,
    ResultOutcome,
};

/// A cancellation the backend must put in the outbox: the running task of `dispatch_id` stops.
#[derive(Debug)]
pub(crate) struct Cancel {
    pub dispatch_id: loom_domain::DispatchId,
    pub attempt: u32,
    pub reason: String,
    /// The role the task was routed to, so the cancellation reaches the same consumer.
    pub role: Option<String>,
}

/// The side effects of one change: an event and maybe a cancellation.
#[derive(Debug)]
pub(crate) struct Effects {
    pub event: NewEvent,
    pub cancel: Option<Cancel>,
}

pub(crate) fn check_version(bead: &Bead, expected: Option<i64>) -> Result<()> {
    match expected {
        Some(v) if v != bead.version => {
            Err(Error::VersionConflict { bead: bead.id.to_string(), expected: v, actual: bead.version })
        }
        _ => Ok(()),
    }
}

/// Leaves `in_progress`: the dispatch is over, its lease gone; returns the cancellation if asked.
fn end_dispatch(bead: &mut Bead, cancel_reason: Option<&str>) -> Option<Cancel> {
    let dispatch = bead.dispatch_id.take();
    bead.lease_expires_at = None;
    bead.started_at = None;
    bead.started_by = None;
    match (dispatch, cancel_reason) {
        (Some(dispatch_id), Some(reason)) => {
            let role = bead.context.get("role").cloned();
            Some(Cancel { dispatch_id, attempt: bead.attempts, reason: reason.to_owned(), role })
        }
        _ => None,
    }
}

fn touch(bead: &mut Bead, now: DateTime<Utc>) {
    bead.updated_at = now;
    bead.version += 1;
}

fn status_event(bead: &Bead, from: Status, detail: serde_json::Value) -> NewEvent {
    let mut data = json!({ "from": from.as_str(), "to": bead.status.as_str() });
    if let (Some(d), serde_json::Value::Object(extra)) = (data.as_object_mut(), detail) {
        d.extend(extra);
    }
    let description = format!("bead {} {} -> {}", bead.id, from, bead.status);
    NewEvent::for_bead(bead, EventKind::BeadStatusChanged, description, data)
}

/// Closes by hand or on success.
pub(crate) fn close(bead: &mut Bead, reason: &str, now: DateTime<Utc>) -> Result<Effects> {
    let from = bead.status;
    from.check_transition(Status::Closed, &bead.id)?;
    let reason = truncate_reason(reason);
    let cancel = end_dispatch(bead, Some(&reason));
    bead.status = Status::Closed;
    bead.close_reason = Some(reason.clone());
    bead.closed_at = Some(now);
    bead.not_before = None;
    touch(bead, now);
    let description = format!("bead {} closed: {reason}", bead.id);
    let data = json!({ "from": from.as_str(), "reason": reason });
    Ok(Effects { event: NewEvent::for_bead(bead, EventKind::BeadClosed, description, data), cancel })
}

/// `closed | blocked → open` with a fresh retry budget.
pub(crate) fn reopen(bead: &mut Bead, now: DateTime<Utc>) -> Result<Effects> {
    let from = bead.status;
    if from == Status::InProgress {
        // Legal for the machine (lease lost, retry) but not by hand: that is what redispatch is for.
        return Err(loom_domain::Error::IllegalTransition {
            bead: bead.id.to_string(),
            from,
            to: Status::Open,
            hint: "a running bead is returned to open by its result or lease, not by reopen",
        }
        .into());
    }
    from.check_transition(Status::Open, &bead.id)?;
    bead.status = Status::Open;
    bead.close_reason = None;
    bead.closed_at = None;
    bead.not_before = None;
    bead.last_error = None;
    bead.attempts = 0;
    touch(bead, now);
    Ok(Effects { event: status_event(bead, from, json!({})), cancel: None })
}

/// `in_progress → open` by hand: the running task is cancelled and the bead is dispatched again
/// under a new `dispatch_id`, on the same retry budget.
pub(crate) fn redispatch(bead: &mut Bead, now: DateTime<Utc>) -> Effects {
    let from = bead.status;
    let cancel = end_dispatch(bead, Some("redispatched by hand"));
    bead.status = Status::Open;
    bead.not_before = None;
    touch(bead, now);
    Effects { event: status_event(bead, from, json!({ "reason": "redispatched by hand" })), cancel }
}

/// `in_progress → blocked` (escalation by hand, or a dead-lettered task).
pub(crate) fn block(bead: &mut Bead, reason: &str, cancel: bool, now: DateTime<Utc>) -> Result<Effects> {
    let from = bead.status;
    from.check_transition(Status::Blocked, &bead.id)?;
    let reason = truncate_reason(reason);
    let cancel = end_dispatch(bead, cancel.then_some(reason.as_str()));
    bead.status = Status::Blocked;
    bead.last_error = Some(reason.clone());
    touch(bead, now);
    Ok(Effects { event: status_event(bead, from, json!({ "reason": reason })), cancel })
}

/// Applies a partial update. Parent existence is the backend's to check.
pub(crate) fn apply_patch(bead: &mut Bead, patch: BeadPatch, now: DateTime<Utc>) -> Result<Effects> {
    patch.validate()?;
    if patch.parent.as_ref().is_some_and(|p| p.as_ref() == Some(&bead.id)) {
        return Err(
            loom_domain::Error::Invalid { field: "parent", reason: "a bead cannot be its own parent".into() }.into()
        );
    }
    let mut changed: Vec<&str> = Vec::new();
    macro_rules! set {
        ($field:ident, $name:literal) => {
            if let Some(v) = patch.$field {
                if bead.$field != v {
                    bead.$field = v;
                    changed.push($name);
                }
            }
        };
    }
    set!(title, "title");
    set!(description, "description");
    set!(bead_type, "type");
    set!(priority, "priority");
    set!(assignee, "assignee");
    set!(tags, "tags");
    set!(context, "context");
    set!(parent, "parent");
    match patch.status.filter(|s| *s != bead.status) {
        Some(Status::InProgress) => Err(loom_domain::Error::Invalid {
            field: "status",
            reason: "in_progress is set by claiming a bead, not by update".into(),
        }
        .into()),
        Some(Status::Closed) => close(bead, "closed by hand", now),
        Some(Status::Open) if bead.status == Status::InProgress => Ok(redispatch(bead, now)),
        Some(Status::Open) => reopen(bead, now),
        Some(Status::Blocked) => block(bead, "blocked by hand", true, now),
        None => {
            touch(bead, now);
            let description = format!("bead {} updated: {}", bead.id, changed.join(", "));
            let event = NewEvent::for_bead(bead, EventKind::BeadUpdated, description, json!({ "changed": changed }));
            Ok(Effects { event, cancel: None })
        }
    }
}

/// What applying a result does besides the bead row: its event, the attempt to keep and the
/// beads it discovered (created by the backend, whose ids it then sets on the attempt).
#[derive(Debug)]
pub(crate) struct Applied {
    pub outcome: ResultOutcome,
    pub event: NewEvent,
    pub attempt: Attempt,
    pub discovered: Vec<NewBead>,
}

/// Applies an agent's result if its dispatch is the current one; `None` means ignored.
pub(crate) fn record_result(bead: &mut Bead, r: &DispatchResult) -> Option<Applied> {
    if bead.status != Status::InProgress || bead.dispatch_id.as_ref() != Some(&r.dispatch_id) {
        return None;
    }
    let from = bead.status;
    let now = crate::micros(r.now);
    let started_at = bead.started_at;
    end_dispatch(bead, None);
    let report = r.report.clone().bounded();
    let (outcome, event, error) = match &r.outcome {
        Outcome::Success => {
            let effects = close(bead, "completed", now).expect("in_progress -> closed is legal");
            (ResultOutcome::Closed(bead.clone()), effects.event, None)
        }
        Outcome::Failure { error } => {
            let error = truncate_reason(error);
            bead.last_error = Some(error.clone());
            let spent = bead.attempts >= r.max_attempts;
            if spent {
                bead.status = Status::Blocked;
            } else {
                bead.status = Status::Open;
                bead.not_before = Some(crate::micros(now + r.retry_backoff));
            }
            touch(bead, now);
            let event =
                status_event(bead, from, json!({ "error": error, "attempt": bead.attempts, "agent": r.agent_id }));
            let outcome =
                if spent { ResultOutcome::Blocked(bead.clone()) } else { ResultOutcome::Retrying(bead.clone()) };
            (outcome, event, Some(error))
        }
    };
    // Only a success creates what it discovered: a failed attempt is retried, and its retry
    // would ask for the same follow-ups again.
    let discovered = if error.is_none() { discovered(bead, &report.discovered) } else { Vec::new() };
    let attempt = Attempt {
        bead_id: bead.id.clone(),
        dispatch_id: r.dispatch_id.clone(),
        attempt: bead.attempts,
        agent_id: r.agent_id.clone(),
        succeeded: error.is_none(),
        error,
        output: report.output,
        commits: report.commits,
        artifacts: report.artifacts,
        created_beads: Vec::new(),
        duration_ms: report.duration_ms,
        usage: report.usage,
        conversation: report.conversation,
        started_at,
        finished_at: now,
    };
    Some(Applied { outcome, event, attempt, discovered })
}

/// The beads `bead`'s agent discovered, as new beads of its project that say where they came
/// from (`discovered_from` in their context). Ones that do not validate are left out.
fn discovered(bead: &Bead, asked: &[Discovered]) -> Vec<NewBead> {
    asked
        .iter()
        .filter_map(|d| {
            let mut new = NewBead::new(bead.project_id.clone(), d.title.clone());
            new.description = d.description.clone();
            new.priority = d.priority;
            new.bead_type = d.bead_type;
            new.context.insert(crate::DISCOVERED_FROM.into(), bead.id.to_string());
            new.validate().ok().map(|()| new)
        })
        .collect()
}

/// `open → in_progress` for a claimer who does the work itself: a new dispatch id and lease,
/// the claimer as assignee. `open_blocker` is a blocker of the bead that is not closed, if any
/// (the backend looks it up in the same transaction).
pub(crate) fn claim(
    bead: &mut Bead,
    claimer: &str,
    lease: std::time::Duration,
    now: DateTime<Utc>,
    open_blocker: Option<&str>,
) -> Result<NewEvent> {
    if claimer.trim().is_empty() || claimer.len() > 128 {
        return Err(
            loom_domain::Error::Invalid { field: "claimer", reason: "must be 1 to 128 characters".into() }.into()
        );
    }
    if bead.status != Status::Open {
        return Err(Error::Conflict(format!("bead {} is {}: only an open bead can be claimed", bead.id, bead.status)));
    }
    if let Some(blocker) = open_blocker {
        return Err(Error::Conflict(format!(
            "bead {} waits on {blocker}, which is not closed: it cannot be claimed yet",
            bead.id
        )));
    }
    let now = crate::micros(now);
    let dispatch_id = DispatchId::parse(&format!("{}{}", crate::HAND_CLAIM_PREFIX, uuid::Uuid::now_v7()))
        .expect("a prefixed UUID is a valid dispatch id");
    bead.assignee = Some(claimer.to_owned());
    start_dispatch(bead, claimer, now, crate::micros(now + lease), dispatch_id.clone());
    // Whoever claims by hand works on it at once: it is running, not queued.
    bead.started_at = Some(now);
    bead.started_by = Some(claimer.to_owned());
    let data = json!({
        "dispatch_id": dispatch_id.as_str(),
        "attempt": bead.attempts,
        "lease_expires_at": bead.lease_expires_at.map(|t| t.to_rfc3339()),
        "claimed_by": claimer,
    });
    let description = format!("bead {} claimed by {claimer} (attempt {})", bead.id, bead.attempts);
    Ok(NewEvent::for_bead(bead, EventKind::BeadDispatched, description, data))
}

/// What an agent's start report does to the bead of its (current) dispatch.
#[derive(Debug)]
pub(crate) enum Start {
    /// First start: running from now, held by the agent.
    Fresh(NewEvent),
    /// The same agent reported the same start again: the lease is renewed, nothing else.
    Again,
    /// Another agent had started it: the dispatch is over, the bead open (or blocked).
    Superseded(NewEvent),
}

/// A queued dispatch becomes running (`started_at`, `started_by`, a fresh lease); a dispatch
/// another agent started is ended instead, since its first run may have done part of its work.
pub(crate) fn start(bead: &mut Bead, s: &crate::DispatchStart) -> Start {
    let now = crate::micros(s.now);
    match bead.started_by.clone() {
        None => {
            bead.started_at = Some(now);
            bead.started_by = Some(s.agent_id.clone());
            // From its start on, the bead is assigned to the agent running it (until then, to
            // whoever claimed it: the control plane instance, or the assignee set by hand).
            bead.assignee = Some(s.agent_id.clone());
            bead.lease_expires_at = Some(crate::micros(now + s.lease));
            touch(bead, now);
            let data = json!({ "dispatch_id": s.dispatch_id.as_str(), "attempt": bead.attempts, "agent": s.agent_id });
            let description = format!("bead {} started by {} (attempt {})", bead.id, s.agent_id, bead.attempts);
            Start::Fresh(NewEvent::for_bead(bead, EventKind::BeadStarted, description, data))
        }
        Some(agent) if agent == s.agent_id => {
            bead.lease_expires_at = Some(crate::micros(now + s.lease));
            Start::Again
        }
        Some(earlier) => {
            let from = bead.status;
            end_dispatch(bead, None);
            let spent = bead.attempts >= s.max_attempts;
            let reason = format!(
                "agent {earlier} stopped while running attempt {} (its task came back to {}); {}",
                bead.attempts,
                s.agent_id,
                if spent { "the retry budget is spent" } else { "dispatching it again" }
            );
            bead.status = if spent { Status::Blocked } else { Status::Open };
            bead.last_error = Some(truncate_reason(&reason));
            touch(bead, now);
            Start::Superseded(status_event(bead, from, json!({ "reason": reason })))
        }
    }
}

/// A graceful hand-back (the agent shuts down or drains): the bead is open again at once and
/// the attempt is given back, so restarts of agents never spend the retry budget. `None` when
/// another agent started the dispatch (that one decides).
pub(crate) fn hand_back(bead: &mut Bead, agent: &str, reason: &str, now: DateTime<Utc>) -> Option<Effects> {
    if bead.started_by.as_deref().is_some_and(|a| a != agent) {
        return None;
    }
    let from = bead.status;
    end_dispatch(bead, None);
    bead.status = Status::Open;
    bead.attempts = bead.attempts.saturating_sub(1);
    bead.not_before = None;
    touch(bead, crate::micros(now));
    let reason = truncate_reason(&format!("handed back by {agent}: {reason}"));
    Some(Effects { event: status_event(bead, from, json!({ "reason": reason, "agent": agent })), cancel: None })
}

/// Dependency edges from other projects' beads onto a project's beads, as a project's deletion
/// reads them: (dependent bead, its project, blocker). Binds the project, then `DEPENDENTS_SHOWN`;
/// `mark` is the backend's parameter sigil (`$` or `?`).
pub(crate) fn dependents_query(mark: char) -> String {
    format!(
        "SELECT d.bead_id, b.project_id, d.blocker_id FROM beads x
         JOIN bead_deps d ON d.blocker_id = x.id JOIN beads b ON b.id = d.bead_id
         WHERE x.project_id = {mark}1 AND b.project_id <> {mark}1 ORDER BY b.project_id, b.seq LIMIT {mark}2"
    )
}

/// At most this many of those edges are named.
pub(crate) const DEPENDENTS_SHOWN: i64 = 20;

/// Refuses to delete `project` while beads of other projects wait on its beads: deleting the
/// blockers would silently unblock them. `None` when there are no such edges.
pub(crate) fn refuse_delete(project: &loom_domain::ProjectId, edges: &[(String, String, String)]) -> Option<Error> {
    if edges.is_empty() {
        return None;
    }
    let projects: std::collections::BTreeSet<&str> = edges.iter().map(|(_, p, _)| p.as_str()).collect();
    let listed: Vec<String> =
        edges.iter().map(|(bead, p, blocker)| format!("{bead} (project {p}) waits on {blocker}")).collect();
    Some(Error::Conflict(format!(
        "project {project} cannot be deleted: beads of project{} {} depend on its beads: {}; remove those \
         dependencies first (`loom bead dep rm BEAD BLOCKER`)",
        if projects.len() == 1 { "" } else { "s" },
        projects.into_iter().collect::<Vec<_>>().join(", "),
        listed.join(", "),
    )))
}

/// A new dispatch id: a UUID v7, unique and time-ordered.
pub(crate) fn new_dispatch_id() -> DispatchId {
    DispatchId::parse(&uuid::Uuid::now_v7().to_string()).expect("a UUID is a valid dispatch id")
}

/// `open → in_progress` under `dispatch_id` with a lease until `lease_until`; the claimer
/// becomes the assignee when the bead has none.
pub(crate) fn start_dispatch(
    bead: &mut Bead,
    claimer: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    dispatch_id: DispatchId,
) {
    bead.status = Status::InProgress;
    bead.dispatch_id = Some(dispatch_id);
    bead.attempts += 1;
    bead.lease_expires_at = Some(lease_until);
    bead.assignee = bead.assignee.take().or_else(|| Some(claimer.to_owned()));
    bead.not_before = None;
    touch(bead, now);
}

/// Whether `Store::create_claimed` may claim `new` in its create's transaction, as far as the
/// bead itself tells (the backend checks its project): no parent, no blockers, not a decision.
/// Refuses a request for another project than the bead's.
pub(crate) fn claimable_at_create(new: &NewBead, req: &ClaimRequest) -> Result<bool> {
    new.validate()?;
    if new.project_id != req.project {
        return Err(loom_domain::Error::Invalid {
            field: "project_id",
            reason: format!("the bead is for {} but the claim is for {}", new.project_id, req.project),
        }
        .into());
    }
    Ok(req.max > 0 && new.parent.is_none() && new.blocked_by.is_empty() && new.bead_type != BeadType::Decision)
}

/// Returns an expired dispatch's bead to open, or blocks it when its budget is spent.
pub(crate) fn release_expired(bead: &mut Bead, max_attempts: u32, now: DateTime<Utc>) -> NewEvent {
    let now = crate::micros(now);
    let from = bead.status;
    end_dispatch(bead, None);
    let reason = if bead.attempts >= max_attempts {
        bead.status = Status::Blocked;
        format!("lease expired after {} attempts: the agent stopped reporting progress", bead.attempts)
    } else {
        bead.status = Status::Open;
        "lease expired: the agent stopped reporting progress".to_owned()
    };
    bead.last_error = Some(reason.clone());
    touch(bead, now);
    status_event(bead, from, json!({ "reason": reason }))
}

impl Cancel {
    /// The outbox row kind and payload for this cancellation.
    pub(crate) fn payload(&self) -> (OutboxKind, serde_json::Value) {
        (OutboxKind::TaskCancelled, json!({ "reason": self.reason, "role": self.role }))
    }
}

/// A new bead as created: open, attempt 0, version 1.
pub(crate) fn fresh(id: BeadId, b: NewBead, blocked_by: Vec<BeadId>, now: DateTime<Utc>) -> Bead {
    Bead {
        id,
        project_id: b.project_id,
        title: b.title,
        description: b.description,
        bead_type: b.bead_type,
        priority: b.priority,
        status: Status::Open,
        assignee: b.assignee,
        tags: b.tags,
        context: b.context,
        parent: b.parent,
        blocked_by,
        attempts: 0,
        last_error: None,
        close_reason: None,
        dispatch_id: None,
        lease_expires_at: None,
        started_at: None,
        started_by: None,
        not_before: None,
        created_at: now,
        updated_at: now,
        closed_at: None,
        version: 1,
    }
}

/// The `bead.created` event of `b`.
pub(crate) fn created_event(b: &Bead) -> NewEvent {
    let description = format!("bead {} created: {}", b.id, b.title);
    let data = json!({ "title": b.title, "priority": b.priority.get(), "type": b.bead_type.as_str() });
    NewEvent::for_bead(b, EventKind::BeadCreated, description, data)
}
