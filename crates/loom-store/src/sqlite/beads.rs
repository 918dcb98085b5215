//! Bead CRUD on SQLite. Every change runs in one `BEGIN IMMEDIATE` transaction:
//! load, check, apply a `transitions` function, write back with the event (and outbox row).

use std::collections::{BTreeMap, BTreeSet};

use loom_domain::{Bead, BeadId, BeadPrefix, NewBead, Status};
use sqlx::types::Json;
use sqlx::{QueryBuilder, Sqlite, SqlitePool};

use super::records::{OutboxRow, insert_events, insert_outbox};
use super::rows::{BEAD_COLS, bead_from_row, corrupt, micros, normalize, now};
use super::{SqliteStore, Tx};
use crate::transitions::{self, Effects};
use crate::{BeadFilter, BeadPage, BeadPatch, Error, NewEvent, PageRequest, Result};

pub(super) async fn create(store: &SqliteStore, new: Vec<NewBead>) -> Result<Vec<Bead>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    for b in &new {
        b.validate()?;
    }
    let mut tx = store.write().await?;
    let beads = create_in(&mut tx, new).await?;
    tx.commit().await?;
    Ok(beads)
}

/// Creates (validated) beads in an open write transaction.
pub(super) async fn create_in(tx: &mut Tx, new: Vec<NewBead>) -> Result<Vec<Bead>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let prefixes = project_prefixes(tx, &new).await?;
    let referenced = new.iter().flat_map(|b| b.parent.iter().chain(&b.blocked_by)).map(BeadId::to_string);
    let existing: BTreeSet<String> = existing_ids(tx, referenced.collect()).await?;
    let seqs = allocate_seqs(tx, new.len()).await?;
    let now = now();
    let mut beads = Vec::with_capacity(new.len());
    for (b, seq) in new.into_iter().zip(&seqs) {
        let id = BeadId::new(&prefixes[b.project_id.as_str()], *seq as u64);
        if let Some(p) = b.parent.as_ref().filter(|p| !existing.contains(p.as_str())) {
            return Err(Error::not_found("parent bead", p));
        }
        let blocked_by: Vec<BeadId> = b.blocked_by.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        if let Some(missing) = blocked_by.iter().find(|x| !existing.contains(x.as_str())) {
            return Err(Error::MissingBlocker { bead: id.to_string(), blocker: missing.to_string() });
        }
        beads.push(transitions::fresh(id, b, blocked_by, now));
    }
    for (bead, seq) in beads.iter().zip(&seqs) {
        insert_row(tx, bead, *seq).await?;
    }
    let events: Vec<NewEvent> = beads.iter().map(transitions::created_event).collect();
    insert_events(tx, &events).await?;
    Ok(beads)
}

/// The bead prefix of every project named in `new`; `NotFound` for the first one missing.
async fn project_prefixes(tx: &mut Tx, new: &[NewBead]) -> Result<BTreeMap<String, BeadPrefix>> {
    let ids: BTreeSet<&str> = new.iter().map(|b| b.project_id.as_str()).collect();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, bead_prefix FROM projects WHERE id IN (SELECT value FROM json_each(?1))")
            .bind(Json(&ids))
            .fetch_all(&mut **tx)
            .await?;
    let map: BTreeMap<String, BeadPrefix> =
        rows.into_iter().map(|(id, p)| Ok((id, BeadPrefix::parse(&p).map_err(corrupt)?))).collect::<Result<_>>()?;
    match ids.iter().find(|id| !map.contains_key(**id)) {
        Some(missing) => Err(Error::not_found("project", missing)),
        None => Ok(map),
    }
}

/// Which of `ids` name existing beads.
pub(super) async fn existing_ids(tx: &mut Tx, ids: BTreeSet<String>) -> Result<BTreeSet<String>> {
    if ids.is_empty() {
        return Ok(BTreeSet::new());
    }
    // `CROSS JOIN` keeps the list outside: one key lookup per id, never a scan of every bead.
    let found: Vec<String> =
        sqlx::query_scalar("SELECT b.id FROM json_each(?1) j CROSS JOIN beads b ON b.id = j.value")
            .bind(Json(&ids))
            .fetch_all(&mut **tx)
            .await?;
    Ok(found.into_iter().collect())
}

/// Takes `n` consecutive values of the global bead counter.
async fn allocate_seqs(tx: &mut Tx, n: usize) -> Result<Vec<i64>> {
    let n = i64::try_from(n).map_err(|_| Error::Internal("too many beads in one batch".into()))?;
    let last: i64 = sqlx::query_scalar("UPDATE bead_seq SET value = value + ?1 WHERE id = 1 RETURNING value")
        .bind(n)
        .fetch_one(&mut **tx)
        .await?;
    Ok((last - n + 1..=last).collect())
}

async fn insert_row(tx: &mut Tx, b: &Bead, seq: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO beads (id, seq, project_id, title, description, bead_type, priority, status, assignee, tags,
           context, parent, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8, ?9, ?10, ?11, ?12, ?12)",
    )
    .bind(b.id.as_str())
    .bind(seq)
    .bind(b.project_id.as_str())
    .bind(&b.title)
    .bind(&b.description)
    .bind(b.bead_type.as_str())
    .bind(i64::from(b.priority.get()))
    .bind(&b.assignee)
    .bind(Json(&b.tags))
    .bind(Json(&b.context))
    .bind(b.parent.as_ref().map(BeadId::as_str))
    .bind(micros(b.created_at))
    .execute(&mut **tx)
    .await?;
    for blocker in &b.blocked_by {
        sqlx::query("INSERT INTO bead_deps (bead_id, blocker_id) VALUES (?1, ?2)")
            .bind(b.id.as_str())
            .bind(blocker.as_str())
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(super) async fn get(pool: &SqlitePool, id: &BeadId) -> Result<Bead> {
    let row = sqlx::query(&format!("SELECT {BEAD_COLS} FROM beads b WHERE b.id = ?1"))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found("bead", id))?;
    Ok(bead_from_row(&row)?.0)
}

/// Loads a bead inside a write transaction (which holds the write lock), or `NotFound`.
pub(super) async fn load(tx: &mut Tx, id: &BeadId) -> Result<Bead> {
    let row = sqlx::query(&format!("SELECT {BEAD_COLS} FROM beads b WHERE b.id = ?1"))
        .bind(id.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::not_found("bead", id))?;
    Ok(bead_from_row(&row)?.0)
}

pub(super) async fn list(pool: &SqlitePool, filter: &BeadFilter, page: &PageRequest) -> Result<BeadPage> {
    let (after, limit) = page.parse()?;
    let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {BEAD_COLS} FROM beads b WHERE b.seq > "));
    q.push_bind(after);
    if let Some(p) = &filter.project {
        q.push(" AND b.project_id = ").push_bind(p.to_string());
    }
    if let Some(s) = filter.status {
        q.push(" AND b.status = ").push_bind(s.as_str());
    }
    if let Some(t) = filter.bead_type {
        q.push(" AND b.bead_type = ").push_bind(t.as_str());
    }
    if let Some(a) = &filter.assignee {
        q.push(" AND b.assignee = ").push_bind(a.clone());
    }
    if let Some(p) = filter.priority {
        q.push(" AND b.priority = ").push_bind(i64::from(p.get()));
    }
    if let Some(t) = &filter.tag {
        q.push(" AND EXISTS (SELECT 1 FROM json_each(b.tags) t WHERE t.value = ").push_bind(t.clone()).push(")");
    }
    q.push(" ORDER BY b.seq LIMIT ").push_bind(limit + 1);
    let rows = q.build().fetch_all(pool).await?;
    let mut beads = Vec::with_capacity(rows.len());
    let mut last_seq = 0;
    for row in rows.iter().take(limit as usize) {
        let (bead, seq) = bead_from_row(row)?;
        beads.push(bead);
        last_seq = seq;
    }
    let next_cursor = (rows.len() as i64 > limit).then(|| last_seq.to_string());
    Ok(BeadPage { beads, next_cursor })
}

/// Writes every mutable column of a loaded bead back, after rounding its times to stored
/// precision so the caller holds exactly what a later read returns.
pub(super) async fn write(tx: &mut Tx, b: &mut Bead) -> Result<()> {
    normalize(b);
    sqlx::query(
        "UPDATE beads SET title = ?2, description = ?3, bead_type = ?4, priority = ?5, status = ?6, assignee = ?7,
           tags = ?8, context = ?9, parent = ?10, attempts = ?11, last_error = ?12, close_reason = ?13,
           dispatch_id = ?14, lease_expires_at = ?15, not_before = ?16, updated_at = ?17, closed_at = ?18,
           version = ?19, started_at = ?20, started_by = ?21
         WHERE id = ?1",
    )
    .bind(b.id.as_str())
    .bind(&b.title)
    .bind(&b.description)
    .bind(b.bead_type.as_str())
    .bind(i64::from(b.priority.get()))
    .bind(b.status.as_str())
    .bind(&b.assignee)
    .bind(Json(&b.tags))
    .bind(Json(&b.context))
    .bind(b.parent.as_ref().map(BeadId::as_str))
    .bind(i64::from(b.attempts))
    .bind(&b.last_error)
    .bind(&b.close_reason)
    .bind(b.dispatch_id.as_ref().map(|d| d.as_str()))
    .bind(b.lease_expires_at.map(micros))
    .bind(b.not_before.map(micros))
    .bind(micros(b.updated_at))
    .bind(b.closed_at.map(micros))
    .bind(b.version)
    .bind(b.started_at.map(micros))
    .bind(&b.started_by)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the bead and its effects (event, cancellation) in `tx`.
pub(super) async fn persist(tx: &mut Tx, bead: &mut Bead, effects: Effects) -> Result<()> {
    write(tx, bead).await?;
    if let Some(cancel) = &effects.cancel {
        let (kind, payload) = cancel.payload();
        let row = OutboxRow {
            kind,
            project_id: bead.project_id.as_str(),
            bead_id: bead.id.as_str(),
            dispatch_id: cancel.dispatch_id.as_str(),
            attempt: cancel.attempt,
            payload,
        };
        insert_outbox(tx, &[row]).await?;
    }
    insert_events(tx, std::slice::from_ref(&effects.event)).await
}

pub(super) async fn update(store: &SqliteStore, id: &BeadId, expected: i64, patch: BeadPatch) -> Result<Bead> {
    let mut tx = store.write().await?;
    let mut bead = load(&mut tx, id).await?;
    transitions::check_version(&bead, Some(expected))?;
    if let Some(Some(parent)) = &patch.parent
        && existing_ids(&mut tx, BTreeSet::from([parent.to_string()])).await?.is_empty()
    {
        return Err(Error::not_found("parent bead", parent));
    }
    let effects = transitions::apply_patch(&mut bead, patch, now())?;
    persist(&mut tx, &mut bead, effects).await?;
    tx.commit().await?;
    Ok(bead)
}

/// Claim by hand (see `transitions::claim`).
pub(super) async fn claim(store: &SqliteStore, id: &BeadId, claimer: &str, lease: std::time::Duration) -> Result<Bead> {
    let mut tx = store.write().await?;
    let mut bead = load(&mut tx, id).await?;
    let open_blocker: Option<String> = sqlx::query_scalar(
        "SELECT x.id FROM bead_deps d JOIN beads x ON x.id = d.blocker_id
         WHERE d.bead_id = ?1 AND x.status <> 'closed' ORDER BY x.id LIMIT 1",
    )
    .bind(id.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    let event = transitions::claim(&mut bead, claimer, lease, now(), open_blocker.as_deref())?;
    persist(&mut tx, &mut bead, Effects { event, cancel: None }).await?;
    tx.commit().await?;
    Ok(bead)
}

/// Close (with `reason`) or reopen by hand.
pub(super) async fn set_status(
    store: &SqliteStore,
    id: &BeadId,
    to: Status,
    reason: Option<&str>,
    expected: Option<i64>,
) -> Result<Bead> {
    let mut tx = store.write().await?;
    let mut bead = load(&mut tx, id).await?;
    transitions::check_version(&bead, expected)?;
    let now = now();
    let effects = match to {
        Status::Closed => transitions::close(&mut bead, reason.unwrap_or("closed by hand"), now)?,
        _ => transitions::reopen(&mut bead, now)?,
    };
    persist(&mut tx, &mut bead, effects).await?;
    tx.commit().await?;
    Ok(bead)
}
