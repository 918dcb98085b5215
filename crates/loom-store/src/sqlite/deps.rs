//! Dependency edges on SQLite: add (refusing cycles and missing blockers) and remove.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use loom_domain::{Bead, BeadId, EventKind};
use serde_json::json;

use super::beads::{existing_ids, load, write};
use super::records::insert_events;
use super::rows::now;
use super::{SqliteStore, Tx};
use crate::{Error, NewEvent, Result};

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
/// One query loads every edge reachable from `blocker` (linear in that subgraph, where a path
/// enumeration in SQL could blow up on diamonds); a breadth-first search then finds the shortest
/// path back to `bead`.
async fn cycle_path(tx: &mut Tx, bead: &BeadId, blocker: &BeadId) -> Result<Option<String>> {
    if bead == blocker {
        return Ok(Some(format!("{bead} -> {bead}")));
    }
    let edges: Vec<(String, String)> = sqlx::query_as(
        "WITH RECURSIVE reach(id) AS (
             SELECT ?1
           UNION
             SELECT d.blocker_id FROM bead_deps d JOIN reach r ON d.bead_id = r.id
         )
         SELECT d.bead_id, d.blocker_id FROM bead_deps d JOIN reach r ON d.bead_id = r.id",
    )
    .bind(blocker.as_str())
    .fetch_all(&mut **tx)
    .await?;
    Ok(shortest_path(&edges, blocker.as_str(), bead.as_str()).map(|p| format!("{bead} -> {}", p.join(" -> "))))
}

/// A shortest path `from → … → to` over `(bead, blocker)` edges.
fn shortest_path<'a>(edges: &'a [(String, String)], from: &'a str, to: &str) -> Option<Vec<&'a str>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges {
        next.entry(a.as_str()).or_default().push(b.as_str());
    }
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        if node == to {
            let mut path = vec![node];
            while let Some(p) = parent.get(path[path.len() - 1]) {
                path.push(*p);
            }
            path.reverse();
            return Some(path);
        }
        for &n in next.get(node).into_iter().flatten() {
            if n != from && !parent.contains_key(n) {
                parent.insert(n, node);
                queue.push_back(n);
            }
        }
    }
    None
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

#[cfg(test)]
mod tests {
    use super::shortest_path;

    fn edges(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn finds_the_shortest_path_through_diamonds() {
        let e = edges(&[("c", "b"), ("b", "a"), ("c", "x"), ("x", "y"), ("y", "a"), ("c", "d")]);
        assert_eq!(shortest_path(&e, "c", "a"), Some(vec!["c", "b", "a"]));
        assert_eq!(shortest_path(&e, "c", "zz"), None);
        assert_eq!(shortest_path(&e, "a", "c"), None, "edges are directed");
    }
}
