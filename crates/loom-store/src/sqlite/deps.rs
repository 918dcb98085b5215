//! Dependency edges on SQLite: add (refusing cycles and missing blockers) and remove.

use std::collections::BTreeSet;

use loom_domain::{Bead, BeadId, EventKind};
use serde_json::json;

use super::beads::{existing_ids, load, write};
use super::records::insert_events;
use super::rows::now;
use super::{SqliteStore, Tx};
use crate::{Error, NewEvent, Result, cycles};

pub(super) async fn add(store: &SqliteStore, id: &BeadId, blocker: &BeadId) -> Result<Bead> {
    let mut tx = store.write().await?;
    let mut bead = load(&mut tx, id).await?;
    if existing_ids(&mut tx, BTreeSet::from([blocker.to_string()])).await?.is_empty() {
        return Err(Error::MissingBlocker { bead: id.to_string(), blocker: blocker.to_string() });
    }
    if bead.blocked_by.contains(blocker) {
        return Ok(bead);
    }
    if let Some(path) = cycle_path(&mut tx, id, blocker).await? {
        return Err(loom_domain::Error::Cycle { bead: id.to_string(), blocker: blocker.to_string(), path }.into());
    }
    sqlx::query("INSERT INTO bead_deps (bead_id, blocker_id) VALUES (?1, ?2)")
        .bind(id.as_str())
        .bind(blocker.as_str())
        .execute(&mut *tx)
        .await?;
    bead.blocked_by.push(blocker.clone());
    bead.blocked_by.sort();
    edge_changed(&mut tx, &mut bead, blocker, EventKind::BeadDependencyAdded).await?;
    tx.commit().await?;
    Ok(bead)
}

/// The cycle `bead → blocker → … → bead` that the edge `bead → blocker` would close, if any.
///
/// One query loads every edge reachable from `blocker` (a walk over visited nodes, linear in
/// that subgraph, where a path enumeration could blow up on diamonds); see [`crate::cycles`].
pub(super) async fn cycle_path(tx: &mut Tx, bead: &BeadId, blocker: &BeadId) -> Result<Option<String>> {
    if let Some(path) = cycles::self_loop(bead, blocker) {
        return Ok(Some(path));
    }
    let edges: Vec<(String, String)> = sqlx::query_as(
        "WITH RECURSIVE reach(id) AS (
             SELECT ?1
           UNION
             SELECT d.blocker_id FROM reach r CROSS JOIN bead_deps d ON d.bead_id = r.id
         )
         SELECT d.bead_id, d.blocker_id FROM reach r CROSS JOIN bead_deps d ON d.bead_id = r.id",
    )
    .bind(blocker.as_str())
    .fetch_all(&mut **tx)
    .await?;
    Ok(cycles::cycle_path(&edges, bead, blocker))
}

pub(super) async fn remove(store: &SqliteStore, id: &BeadId, blocker: &BeadId) -> Result<Bead> {
    let mut tx = store.write().await?;
    let mut bead = load(&mut tx, id).await?;
    let n = sqlx::query("DELETE FROM bead_deps WHERE bead_id = ?1 AND blocker_id = ?2")
        .bind(id.as_str())
        .bind(blocker.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::not_found("dependency", format!("{id} -> {blocker}")));
    }
    bead.blocked_by.retain(|b| b != blocker);
    edge_changed(&mut tx, &mut bead, blocker, EventKind::BeadDependencyRemoved).await?;
    tx.commit().await?;
    Ok(bead)
}

async fn edge_changed(tx: &mut Tx, bead: &mut Bead, blocker: &BeadId, kind: EventKind) -> Result<()> {
    bead.version += 1;
    bead.updated_at = now();
    write(tx, bead).await?;
    let verb = if kind == EventKind::BeadDependencyAdded { "now waits on" } else { "no longer waits on" };
    let description = format!("bead {} {verb} {blocker}", bead.id);
    let event = NewEvent::for_bead(bead, kind, description, json!({ "blocker": blocker.as_str() }));
    insert_events(tx, &[event]).await
}
