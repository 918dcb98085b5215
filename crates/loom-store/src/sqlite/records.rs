//! The event log, the outbox, agents and counts on SQLite.

use loom_domain::{Agent, BeadId, Event, ProjectId, Status};
use sqlx::SqlitePool;
use sqlx::types::Json;

use super::rows::{agent_from_row, event_from_row, micros, now, outbox_from_row};
use super::{SqliteStore, Tx, locked};
use crate::{EventPage, EventQuery, NewEvent, OutboxKind, OutboxMessage, PageRequest, Result};

macro_rules! insert_event {
    () => {
        "INSERT INTO events
         (id, kind, source, project_id, entity_id, action, description, data, correlation_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    };
}
const INSERT_EVENT: &str = insert_event!();
const APPEND_EVENT: &str = concat!(insert_event!(), " RETURNING *");

type Query<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

fn bind_event<'q>(query: Query<'q>, e: &'q NewEvent, created_at: i64) -> Query<'q> {
    query
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(e.kind.as_str())
        .bind(&e.source)
        .bind(e.project_id.as_ref().map(ProjectId::as_str))
        .bind(&e.entity_id)
        .bind(&e.action)
        .bind(&e.description)
        .bind(Json(&e.data))
        .bind(&e.correlation_id)
        .bind(created_at)
}

/// Appends events inside `tx`, in order.
pub(super) async fn insert_events(tx: &mut Tx, events: &[NewEvent]) -> Result<()> {
    let created_at = micros(now());
    for e in events {
        bind_event(sqlx::query(INSERT_EVENT), e, created_at).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Appends many events inside `tx`, in order, in one statement (an import's thousands).
pub(super) async fn insert_events_at_once(tx: &mut Tx, events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let created_at = micros(now());
    let rows: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!([
                uuid::Uuid::now_v7().to_string(),
                e.kind.as_str(),
                e.source,
                e.project_id.as_ref().map(ProjectId::as_str),
                e.entity_id,
                e.action,
                e.description,
                e.data.to_string(),
                e.correlation_id
            ])
        })
        .collect();
    sqlx::query(
        "INSERT INTO events
         (id, kind, source, project_id, entity_id, action, description, data, correlation_id, created_at)
         SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, value ->> 6,
                value ->> 7, value ->> 8, ?2
         FROM json_each(?1) ORDER BY key",
    )
    .bind(Json(&rows))
    .bind(created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// One outbox row to write in the same transaction as the change it announces.
#[derive(Debug)]
pub(super) struct OutboxRow<'a> {
    pub kind: OutboxKind,
    pub project_id: &'a str,
    pub bead_id: &'a str,
    pub dispatch_id: &'a str,
    pub attempt: u32,
    pub payload: serde_json::Value,
}

/// Appends outbox rows inside `tx`, in order.
/// Inserts outbox rows; returns their ids in order.
pub(super) async fn insert_outbox(tx: &mut Tx, rows: &[OutboxRow<'_>]) -> Result<Vec<i64>> {
    let created_at = micros(now());
    let mut ids = Vec::with_capacity(rows.len());
    for r in rows {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outbox (kind, project_id, bead_id, dispatch_id, attempt, payload, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id",
        )
        .bind(r.kind.as_str())
        .bind(r.project_id)
        .bind(r.bead_id)
        .bind(r.dispatch_id)
        .bind(i64::from(r.attempt))
        .bind(Json(&r.payload))
        .bind(created_at)
        .fetch_one(&mut **tx)
        .await?;
        ids.push(id);
    }
    Ok(ids)
}

pub(super) async fn append_event(store: &SqliteStore, event: NewEvent) -> Result<Event> {
    let row =
        bind_event(sqlx::query(APPEND_EVENT), &event, micros(now())).fetch_one(&store.writer).await.map_err(locked)?;
    event_from_row(&row)
}

pub(super) async fn list_events(pool: &SqlitePool, after: i64, limit: u32) -> Result<Vec<Event>> {
    let (_, limit) = PageRequest::first(limit).parse()?;
    let rows = sqlx::query("SELECT * FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")
        .bind(after)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    rows.iter().map(event_from_row).collect()
}

/// See `Store::list_event_page`. SQLite has one writer, so its seqs have no gaps that fill late;
/// the same rule is applied anyway, so both backends answer alike.
pub(super) async fn list_event_page(pool: &SqlitePool, q: &EventQuery) -> Result<EventPage> {
    let (_, limit) = PageRequest::first(q.limit).parse()?;
    let horizon: i64 = sqlx::query_scalar(
        "SELECT CASE WHEN gap.next IS NULL THEN max(?1, (SELECT COALESCE(max(seq), 0) FROM events))
                ELSE COALESCE((SELECT max(seq) FROM events WHERE seq > ?1 AND seq < gap.next), ?1) END
         FROM (SELECT min(y.seq) AS next FROM events y
               WHERE y.seq > ?1 + 1 AND y.created_at > ?2
                 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.seq = y.seq - 1)) gap",
    )
    .bind(q.after)
    .bind(micros(q.gaps_fill_until))
    .fetch_one(pool)
    .await?;
    let rows = sqlx::query(
        "SELECT * FROM events WHERE (?4 IS NULL OR project_id = ?4) AND seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
    )
    .bind(q.after)
    .bind(horizon)
    .bind(limit)
    .bind(q.project.as_ref().map(ProjectId::as_str))
    .fetch_all(pool)
    .await?;
    Ok(EventPage::settled(q, horizon, rows.iter().map(event_from_row).collect::<Result<_>>()?))
}

pub(super) async fn take_outbox(pool: &SqlitePool, limit: u32) -> Result<Vec<OutboxMessage>> {
    let rows = sqlx::query("SELECT * FROM outbox ORDER BY id LIMIT ?1").bind(i64::from(limit)).fetch_all(pool).await?;
    rows.iter().map(outbox_from_row).collect()
}

pub(super) async fn mark_outbox_sent(store: &SqliteStore, ids: &[i64]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM outbox WHERE id IN (SELECT value FROM json_each(?1))")
        .bind(Json(ids))
        .execute(&store.writer)
        .await
        .map_err(locked)?;
    Ok(())
}

pub(super) async fn upsert_agent(store: &SqliteStore, a: &Agent) -> Result<()> {
    sqlx::query(
        "INSERT INTO agents (id, project_id, role, instance, status, current_bead, capacity, last_heartbeat)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (id) DO UPDATE SET project_id = excluded.project_id, role = excluded.role,
           instance = excluded.instance, status = excluded.status, current_bead = excluded.current_bead,
           capacity = excluded.capacity, last_heartbeat = excluded.last_heartbeat",
    )
    .bind(a.id.as_str())
    .bind(a.project_id.as_str())
    .bind(&a.role)
    .bind(&a.instance)
    .bind(a.status.as_str())
    .bind(a.current_bead.as_ref().map(BeadId::as_str))
    .bind(i64::from(a.capacity))
    .bind(micros(a.last_heartbeat))
    .execute(&store.writer)
    .await
    .map_err(locked)?;
    Ok(())
}

pub(super) async fn list_agents(pool: &SqlitePool, project: Option<&ProjectId>) -> Result<Vec<Agent>> {
    let rows = match project {
        Some(p) => sqlx::query("SELECT * FROM agents WHERE project_id = ?1 ORDER BY id").bind(p.as_str()),
        None => sqlx::query("SELECT * FROM agents ORDER BY id"),
    }
    .fetch_all(pool)
    .await?;
    rows.iter().map(agent_from_row).collect()
}

pub(super) async fn running_by_project(pool: &SqlitePool) -> Result<Vec<(ProjectId, u64)>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT project_id, count(*) FROM beads WHERE status = 'in_progress' GROUP BY project_id ORDER BY project_id",
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(p, n)| {
            let id = ProjectId::parse(&p).map_err(|e| crate::Error::Internal(e.to_string()))?;
            Ok((id, u64::try_from(n).unwrap_or(0)))
        })
        .collect()
}

pub(super) async fn bead_counts(pool: &SqlitePool, project: Option<&ProjectId>) -> Result<Vec<(Status, u64)>> {
    let rows: Vec<(String, i64)> = match project {
        Some(p) => {
            sqlx::query_as("SELECT status, count(*) FROM beads WHERE project_id = ?1 GROUP BY status")
                .bind(p.as_str())
                .fetch_all(pool)
                .await?
        }
        None => sqlx::query_as("SELECT status, count(*) FROM beads GROUP BY status").fetch_all(pool).await?,
    };
    Ok(Status::ALL
        .iter()
        .map(|s| (*s, rows.iter().find(|(n, _)| n == s.as_str()).map_or(0, |(_, c)| u64::try_from(*c).unwrap_or(0))))
        .collect())
}

pub(super) async fn position(pool: &SqlitePool, name: &str) -> Result<i64> {
    let p: Option<i64> =
        sqlx::query_scalar("SELECT position FROM positions WHERE name = ?1").bind(name).fetch_optional(pool).await?;
    Ok(p.unwrap_or(0))
}

pub(super) async fn save_position(store: &SqliteStore, name: &str, position: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO positions (name, position, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
         WHERE positions.position < excluded.position",
    )
    .bind(name)
    .bind(position)
    .bind(micros(now()))
    .execute(&store.writer)
    .await
    .map_err(locked)?;
    Ok(())
}
