//! Row ⇄ domain conversions for PostgreSQL. A row that does not parse is a corrupt row: `Internal`.

use loom_domain::{
    Agent, AgentId, Bead, BeadId, BeadPrefix, ContextMap, DispatchId, Event, EventKind, Priority, Project, ProjectId,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;

use crate::{Error, OutboxKind, OutboxMessage, Result};

/// Every bead column, with `blocked_by` aggregated; the table must be aliased `b`.
pub(crate) const BEAD_COLS: &str = "b.id, b.seq, b.project_id, b.title, b.description, b.bead_type, b.priority,
    b.status, b.assignee, b.tags, b.context, b.parent, b.attempts, b.last_error, b.close_reason, b.dispatch_id,
    b.lease_expires_at, b.not_before, b.created_at, b.updated_at, b.closed_at, b.version, b.started_at, b.started_by,
    COALESCE((SELECT jsonb_agg(d.blocker_id ORDER BY d.blocker_id) FROM bead_deps d WHERE d.bead_id = b.id), '[]'::jsonb)
      AS blocked_by";

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("corrupt row: {e}"))
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(corrupt)
}

pub(crate) fn project_from_row(row: &PgRow) -> Result<Project> {
    Ok(Project {
        id: ProjectId::parse(row.try_get("id")?).map_err(corrupt)?,
        name: row.try_get("name")?,
        git_repo: row.try_get("git_repo")?,
        branch: row.try_get("branch")?,
        bead_prefix: BeadPrefix::parse(row.try_get("bead_prefix")?).map_err(corrupt)?,
        context: row.try_get::<Json<ContextMap>, _>("context")?.0,
        git_strategy: parse(row.try_get("git_strategy")?)?,
        status: parse(row.try_get("status")?)?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

/// A bead and its `seq` (age order and paging cursor).
pub(crate) fn bead_from_row(row: &PgRow) -> Result<(Bead, i64)> {
    let opt_id = |col: &str| -> Result<Option<BeadId>> {
        row.try_get::<Option<&str>, _>(col)?.map(BeadId::parse).transpose().map_err(corrupt)
    };
    let blocked_by: Vec<String> = row.try_get::<Json<Vec<String>>, _>("blocked_by")?.0;
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
        parent: opt_id("parent")?,
        blocked_by: blocked_by.iter().map(|s| BeadId::parse(s)).collect::<Result<_, _>>().map_err(corrupt)?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        last_error: row.try_get("last_error")?,
        close_reason: row.try_get("close_reason")?,
        dispatch_id: row
            .try_get::<Option<&str>, _>("dispatch_id")?
            .map(DispatchId::parse)
            .transpose()
            .map_err(corrupt)?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        started_at: row.try_get("started_at")?,
        started_by: row.try_get("started_by")?,
        not_before: row.try_get("not_before")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        closed_at: row.try_get("closed_at")?,
        version: row.try_get("version")?,
    };
    Ok((bead, row.try_get("seq")?))
}

pub(crate) fn event_from_row(row: &PgRow) -> Result<Event> {
    Ok(Event {
        seq: row.try_get("seq")?,
        id: row.try_get("id")?,
        kind: parse::<EventKind>(row.try_get("kind")?)?,
        source: row.try_get("source")?,
        project_id: row.try_get::<Option<&str>, _>("project_id")?.map(ProjectId::parse).transpose().map_err(corrupt)?,
        entity_id: row.try_get("entity_id")?,
        action: row.try_get("action")?,
        description: row.try_get("description")?,
        data: row.try_get("data")?,
        correlation_id: row.try_get("correlation_id")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn outbox_from_row(row: &PgRow) -> Result<OutboxMessage> {
    Ok(OutboxMessage {
        id: row.try_get("id")?,
        kind: OutboxKind::parse(row.try_get("kind")?)?,
        project_id: ProjectId::parse(row.try_get("project_id")?).map_err(corrupt)?,
        bead_id: BeadId::parse(row.try_get("bead_id")?).map_err(corrupt)?,
        dispatch_id: DispatchId::parse(row.try_get("dispatch_id")?).map_err(corrupt)?,
        attempt: row.try_get::<i64, _>("attempt")? as u32,
        payload: row.try_get("payload")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(crate) fn agent_from_row(row: &PgRow) -> Result<Agent> {
    Ok(Agent {
        id: AgentId::parse(row.try_get("id")?).map_err(corrupt)?,
        project_id: ProjectId::parse(row.try_get("project_id")?).map_err(corrupt)?,
        role: row.try_get("role")?,
        instance: row.try_get("instance")?,
        status: parse(row.try_get("status")?)?,
        current_bead: row
            .try_get::<Option<&str>, _>("current_bead")?
            .map(BeadId::parse)
            .transpose()
            .map_err(corrupt)?,
        capacity: row.try_get::<i64, _>("capacity")? as u32,
        last_heartbeat: row.try_get("last_heartbeat")?,
    })
}
