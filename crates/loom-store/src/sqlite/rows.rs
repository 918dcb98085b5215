//! Row ⇄ domain conversions for SQLite: timestamps are integer microseconds, JSON is text. A row
//! that does not parse is a corrupt row: `Internal`.

use chrono::{DateTime, SubsecRound, Utc};
use loom_domain::{
    Agent, AgentId, Bead, BeadId, BeadPrefix, ContextMap, DispatchId, Event, EventKind, Priority, Project, ProjectId,
};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;

use crate::{Error, OutboxKind, OutboxMessage, Result};

/// Every bead column, with `blocked_by` aggregated; the table must be aliased `b`.
pub(super) const BEAD_COLS: &str = "b.id, b.seq, b.project_id, b.title, b.description, b.bead_type, b.priority,
    b.status, b.assignee, b.tags, b.context, b.parent, b.attempts, b.last_error, b.close_reason, b.dispatch_id,
    b.lease_expires_at, b.not_before, b.created_at, b.updated_at, b.closed_at, b.version, b.started_at, b.started_by,
    (SELECT json_group_array(d.blocker_id) FROM bead_deps d WHERE d.bead_id = b.id) AS blocked_by";

pub(super) const PROJECT_COLS: &str =
    "id, name, git_repo, branch, bead_prefix, context, git_strategy, status, created_at, updated_at";

/// The stored form of a time: microseconds since the epoch.
pub(super) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A time as it will read back from the database (microsecond precision), so what an operation
/// returns equals what a later read returns.
pub(super) fn stored(t: DateTime<Utc>) -> DateTime<Utc> {
    t.trunc_subsecs(6)
}

/// Now, at stored precision.
pub(super) fn now() -> DateTime<Utc> {
    stored(Utc::now())
}

/// Rounds every time of a bead to stored precision (before writing it and handing it back).
pub(super) fn normalize(b: &mut Bead) {
    for t in [&mut b.lease_expires_at, &mut b.not_before, &mut b.closed_at, &mut b.started_at].into_iter().flatten() {
        *t = stored(*t);
    }
    b.created_at = stored(b.created_at);
    b.updated_at = stored(b.updated_at);
}

pub(super) fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("corrupt row: {e}"))
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(corrupt)
}

fn time(row: &SqliteRow, col: &str) -> Result<DateTime<Utc>> {
    let us: i64 = row.try_get(col)?;
    DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt(format!("{col} = {us} is out of range")))
}

fn opt_time(row: &SqliteRow, col: &str) -> Result<Option<DateTime<Utc>>> {
    match row.try_get::<Option<i64>, _>(col)? {
        None => Ok(None),
        Some(_) => time(row, col).map(Some),
    }
}

fn opt_bead_id(row: &SqliteRow, col: &str) -> Result<Option<BeadId>> {
    row.try_get::<Option<&str>, _>(col)?.map(BeadId::parse).transpose().map_err(corrupt)
}

fn count(row: &SqliteRow, col: &str) -> Result<u32> {
    let n: i64 = row.try_get(col)?;
    u32::try_from(n).map_err(|_| corrupt(format!("{col} = {n} is out of range")))
}

pub(super) fn project_from_row(row: &SqliteRow) -> Result<Project> {
    Ok(Project {
        id: ProjectId::parse(row.try_get("id")?).map_err(corrupt)?,
        name: row.try_get("name")?,
        git_repo: row.try_get("git_repo")?,
        branch: row.try_get("branch")?,
        bead_prefix: BeadPrefix::parse(row.try_get("bead_prefix")?).map_err(corrupt)?,
        context: row.try_get::<Json<ContextMap>, _>("context")?.0,
        git_strategy: parse(row.try_get("git_strategy")?)?,
        status: parse(row.try_get("status")?)?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

/// A bead and its `seq` (age order and paging cursor).
pub(super) fn bead_from_row(row: &SqliteRow) -> Result<(Bead, i64)> {
    let blocked_by: Vec<String> = row.try_get::<Json<Vec<String>>, _>("blocked_by")?.0;
    let mut blocked_by: Vec<BeadId> =
        blocked_by.iter().map(|s| BeadId::parse(s)).collect::<Result<_, _>>().map_err(corrupt)?;
    blocked_by.sort();
    let bead = Bead {
        id: BeadId::parse(row.try_get("id")?).map_err(corrupt)?,
        project_id: ProjectId::parse(row.try_get("project_id")?).map_err(corrupt)?,
        title: row.try_get("title")?,
        description: row.try_get("description")?,
        bead_type: parse(row.try_get("bead_type")?)?,
        priority: Priority::try_from(row.try_get::<i64, _>("priority")?).map_err(corrupt)?,
        status: parse(row.try_get("status")?)?,
        assignee: row.try_get("assignee")?,
        tags: row.try_get::<Json<Vec<String>>, _>("tags")?.0,
        context: row.try_get::<Json<ContextMap>, _>("context")?.0,
        parent: opt_bead_id(row, "parent")?,
        blocked_by,
        attempts: count(row, "attempts")?,
        last_error: row.try_get("last_error")?,
        close_reason: row.try_get("close_reason")?,
        dispatch_id: row
            .try_get::<Option<&str>, _>("dispatch_id")?
            .map(DispatchId::parse)
            .transpose()
            .map_err(corrupt)?,
        lease_expires_at: opt_time(row, "lease_expires_at")?,
        started_at: opt_time(row, "started_at")?,
        started_by: row.try_get("started_by")?,
        not_before: opt_time(row, "not_before")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
        closed_at: opt_time(row, "closed_at")?,
        version: row.try_get("version")?,
    };
    Ok((bead, row.try_get("seq")?))
}

pub(super) fn event_from_row(row: &SqliteRow) -> Result<Event> {
    Ok(Event {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        kind: parse::<EventKind>(row.try_get("kind")?)?,
        source: row.try_get("source")?,
        project_id: row.try_get::<Option<&str>, _>("project_id")?.map(ProjectId::parse).transpose().map_err(corrupt)?,
        entity_id: row.try_get("entity_id")?,
        action: row.try_get("action")?,
        description: row.try_get("description")?,
        data: row.try_get::<Json<serde_json::Value>, _>("data")?.0,
        correlation_id: row.try_get("correlation_id")?,
        created_at: time(row, "created_at")?,
    })
}

pub(super) fn outbox_from_row(row: &SqliteRow) -> Result<OutboxMessage> {
    Ok(OutboxMessage {
        id: row.try_get("id")?,
        kind: OutboxKind::parse(row.try_get("kind")?)?,
        project_id: ProjectId::parse(row.try_get("project_id")?).map_err(corrupt)?,
        bead_id: BeadId::parse(row.try_get("bead_id")?).map_err(corrupt)?,
        dispatch_id: DispatchId::parse(row.try_get("dispatch_id")?).map_err(corrupt)?,
        attempt: count(row, "attempt")?,
        payload: row.try_get::<Json<serde_json::Value>, _>("payload")?.0,
        created_at: time(row, "created_at")?,
    })
}

pub(super) fn agent_from_row(row: &SqliteRow) -> Result<Agent> {
    Ok(Agent {
        id: AgentId::parse(row.try_get("id")?).map_err(corrupt)?,
        project_id: ProjectId::parse(row.try_get("project_id")?).map_err(corrupt)?,
        role: row.try_get("role")?,
        instance: row.try_get("instance")?,
        status: parse(row.try_get("status")?)?,
        current_bead: opt_bead_id(row, "current_bead")?,
        capacity: count(row, "capacity")?,
        last_heartbeat: time(row, "last_heartbeat")?,
    })
}
