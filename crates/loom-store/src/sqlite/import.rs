//! Importing beads on SQLite: one `BEGIN IMMEDIATE` transaction per batch.

use std::collections::{BTreeMap, BTreeSet};

use loom_domain::{BeadId, ProjectId};
use sqlx::SqlitePool;
use sqlx::types::Json;

use super::beads::{existing_ids, write};
use super::records::insert_events_at_once;
use super::rows::{BEAD_COLS, bead_from_row, corrupt, micros};
use super::{SqliteStore, Tx, deps};
use crate::import::{self, Plan};
use crate::{Error, ImportAction, ImportBead, Result};

pub(super) async fn import(
    store: &SqliteStore,
    project: &ProjectId,
    batch: Vec<ImportBead>,
) -> Result<Vec<ImportAction>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.write().await?;
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM projects WHERE id = ?1")
        .bind(project.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if found.is_none() {
        return Err(Error::not_found("project", project));
    }
    let ids: Vec<&str> = batch.iter().map(|b| b.id.as_str()).collect();
    let rows = sqlx::query(&format!("SELECT {BEAD_COLS} FROM json_each(?1) j CROSS JOIN beads b ON b.id = j.value"))
        .bind(Json(&ids))
        .fetch_all(&mut *tx)
        .await?;
    let mut existing = BTreeMap::new();
    for row in &rows {
        let bead = bead_from_row(row)?.0;
        existing.insert(bead.id.to_string(), bead);
    }
    let known = existing_ids(&mut tx, import::outside_refs(&batch)).await?;
    let plan = import::plan(project, batch, &existing, &known)?;
    insert(&mut tx, &plan).await?;
    write_updates(&mut tx, plan.updates).await?;
    insert_events_at_once(&mut tx, &plan.events).await?;
    tx.commit().await?;
    Ok(plan.actions)
}

/// New rows, each with its parent unless that comes later in the batch (set afterwards), then
/// every edge in one statement.
async fn insert(tx: &mut Tx, plan: &Plan) -> Result<()> {
    if plan.inserts.is_empty() {
        return Ok(());
    }
    let n = plan.inserts.len() as i64;
    let floor = import::highest_seq(&plan.inserts.iter().map(|b| &b.id).collect::<Vec<_>>()).unwrap_or(0);
    let last: i64 = sqlx::query_scalar("UPDATE bead_seq SET value = max(value, ?2) + ?1 WHERE id = 1 RETURNING value")
        .bind(n)
        .bind(floor)
        .fetch_one(&mut **tx)
        .await?;
    let position: BTreeMap<&str, usize> = plan.inserts.iter().enumerate().map(|(i, b)| (b.id.as_str(), i)).collect();
    let mut later = Vec::new();
    for (i, (b, seq)) in plan.inserts.iter().zip(last - n + 1..).enumerate() {
        let parent = b.parent.as_ref().filter(|p| position.get(p.as_str()).is_none_or(|&at| at < i));
        if parent.is_none() && b.parent.is_some() {
            later.push(b);
        }
        sqlx::query(
            "INSERT INTO beads (id, seq, project_id, title, description, bead_type, priority, status, assignee, tags,
               context, parent, close_reason, created_at, updated_at, closed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        )
        .bind(b.id.as_str())
        .bind(seq)
        .bind(b.project_id.as_str())
        .bind(&b.title)
        .bind(&b.description)
        .bind(b.bead_type.as_str())
        .bind(i64::from(b.priority.get()))
        .bind(b.status.as_str())
        .bind(&b.assignee)
        .bind(Json(&b.tags))
        .bind(Json(&b.context))
        .bind(parent.map(BeadId::as_str))
        .bind(&b.close_reason)
        .bind(micros(b.created_at))
        .bind(micros(b.updated_at))
        .bind(b.closed_at.map(micros))
        .execute(&mut **tx)
        .await?;
    }
    for b in later {
        sqlx::query("UPDATE beads SET parent = ?2 WHERE id = ?1")
            .bind(b.id.as_str())
            .bind(b.parent.as_ref().map(BeadId::as_str))
            .execute(&mut **tx)
            .await?;
    }
    let edges: Vec<(&str, &str)> =
        plan.inserts.iter().flat_map(|b| b.blocked_by.iter().map(move |x| (b.id.as_str(), x.as_str()))).collect();
    if !edges.is_empty() {
        sqlx::query(
            "INSERT INTO bead_deps (bead_id, blocker_id)
             SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1)",
        )
        .bind(Json(&edges))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn insert_edge(tx: &mut Tx, bead: &BeadId, blocker: &BeadId) -> Result<()> {
    sqlx::query("INSERT INTO bead_deps (bead_id, blocker_id) VALUES (?1, ?2)")
        .bind(bead.as_str())
        .bind(blocker.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Writes changed beads back; an edge an update adds is checked for a cycle through the stored
/// graph (new edges of this batch included) before it is inserted.
async fn write_updates(tx: &mut Tx, updates: Vec<import::Update>) -> Result<()> {
    for mut u in updates {
        write(tx, &mut u.bead).await?;
        sqlx::query("UPDATE beads SET created_at = ?2 WHERE id = ?1")
            .bind(u.bead.id.as_str())
            .bind(micros(u.bead.created_at))
            .execute(&mut **tx)
            .await?;
        for x in &u.removed {
            sqlx::query("DELETE FROM bead_deps WHERE bead_id = ?1 AND blocker_id = ?2")
                .bind(u.bead.id.as_str())
                .bind(x.as_str())
                .execute(&mut **tx)
                .await?;
        }
        for x in &u.added {
            if let Some(path) = deps::cycle_path(tx, &u.bead.id, x).await? {
                return Err(
                    loom_domain::Error::Cycle { bead: u.bead.id.to_string(), blocker: x.to_string(), path }.into()
                );
            }
            insert_edge(tx, &u.bead.id, x).await?;
        }
    }
    Ok(())
}

pub(super) async fn bead_projects(pool: &SqlitePool, ids: &[BeadId]) -> Result<Vec<(BeadId, ProjectId)>> {
    let ids: BTreeSet<&str> = ids.iter().map(BeadId::as_str).collect();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT b.id, b.project_id FROM json_each(?1) j CROSS JOIN beads b ON b.id = j.value")
            .bind(Json(&ids))
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(b, p)| Ok((BeadId::parse(&b).map_err(corrupt)?, ProjectId::parse(&p).map_err(corrupt)?)))
        .collect()
}
