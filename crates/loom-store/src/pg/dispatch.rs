//! Dispatch on PostgreSQL: the ready query, atomic claims with `FOR UPDATE SKIP LOCKED`, results
//! fenced by `dispatch_id`, and the lease sweep.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use loom_domain::{Bead, DispatchId, ProjectId};
use sqlx::{PgPool, Row};

use super::beads::{lock, persist, write, write_many};
use super::insert_events;
use super::rows::{BEAD_COLS, bead_from_row};
use crate::transitions;
use crate::{Claim, ClaimRequest, DispatchResult, PageRequest, Result, ResultOutcome};

/// The ready rule in SQL; `$1` = project, `$2` = now. Uses the partial index `beads_ready`.
const READY: &str = "b.project_id = $1 AND b.status = 'open' AND b.bead_type <> 'decision'
    AND (b.not_before IS NULL OR b.not_before <= $2)
    AND NOT EXISTS (SELECT 1 FROM bead_deps d JOIN beads x ON x.id = d.blocker_id
                    WHERE d.bead_id = b.id AND x.status <> 'closed')";

pub(super) async fn list_ready(
    pool: &PgPool,
    project: &ProjectId,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Vec<Bead>> {
    let (_, limit) = PageRequest::first(limit).parse()?;
    let rows =
        sqlx::query(&format!("SELECT {BEAD_COLS} FROM beads b WHERE {READY} ORDER BY b.priority, b.seq LIMIT $3"))
            .bind(project.as_str())
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?;
    rows.iter().map(|r| bead_from_row(r).map(|(b, _)| b)).collect()
}

/// One statement, so one round trip and one commit: pick ready beads (skipping rows other
/// claimers hold), move them to `in_progress`, and write their outbox rows and `bead.dispatched`
/// events. The payload and event built here are what `TaskSnapshot::of` and the other backends
/// build (the conformance suite compares them).
pub(super) async fn claim(pool: &PgPool, req: &ClaimRequest) -> Result<Vec<Claim>> {
    if req.max == 0 {
        return Ok(Vec::new());
    }
    let lease_until = crate::micros(req.now + req.lease);
    let rows = sqlx::query(&format!(
        "WITH picked AS (
           SELECT b.id FROM beads b
           WHERE {READY} AND EXISTS (SELECT 1 FROM projects p WHERE p.id = $1 AND p.status = 'active')
           ORDER BY b.priority, b.seq LIMIT $3 FOR UPDATE OF b SKIP LOCKED
         ), claimed AS (
           UPDATE beads b SET status = 'in_progress', dispatch_id = gen_random_uuid()::text,
             attempts = b.attempts + 1, lease_expires_at = $4, assignee = COALESCE(b.assignee, $5),
             not_before = NULL, updated_at = $2, version = b.version + 1
           FROM picked WHERE b.id = picked.id
           RETURNING {BEAD_COLS}
         ), outbox_rows AS (
           INSERT INTO outbox (kind, project_id, bead_id, dispatch_id, attempt, payload, created_at)
           SELECT 'task.assigned', c.project_id, c.id, c.dispatch_id, c.attempts,
             jsonb_build_object('title', c.title, 'description', c.description, 'priority', c.priority,
               'type', c.bead_type, 'context', c.context, 'assignee', c.assignee), $2
           FROM claimed c ORDER BY c.priority, c.seq
           RETURNING id, bead_id
         ), dispatched AS (
           INSERT INTO events (id, kind, source, project_id, entity_id, action, description, data, created_at)
           SELECT gen_random_uuid()::text, 'bead.dispatched', 'store', c.project_id, c.id, 'dispatched',
             format('bead %s dispatched (attempt %s)', c.id, c.attempts),
             jsonb_build_object('dispatch_id', c.dispatch_id, 'attempt', c.attempts, 'lease_expires_at', $6::text),
             $2
           FROM claimed c ORDER BY c.priority, c.seq
         )
         SELECT c.*, o.id AS outbox_id FROM claimed c JOIN outbox_rows o ON o.bead_id = c.id"
    ))
    .bind(req.project.as_str())
    .bind(crate::micros(req.now))
    .bind(i64::from(req.max))
    .bind(lease_until)
    .bind(&req.claimer)
    .bind(lease_until.to_rfc3339())
    .fetch_all(pool)
    .await?;
    let mut beads = rows
        .iter()
        .map(|row| Ok((bead_from_row(row)?, row.try_get::<i64, _>("outbox_id")?)))
        .collect::<Result<Vec<_>>>()?;
    beads.sort_by_key(|((b, seq), _)| (b.priority, *seq));
    Ok(beads
        .into_iter()
        .map(|((bead, _), outbox_id)| Claim {
            dispatch_id: bead.dispatch_id.clone().expect("claimed beads have a dispatch id"),
            attempt: bead.attempts,
            lease_expires_at: lease_until,
            outbox_id,
            bead,
        })
        .collect())
}

pub(super) async fn record_results(pool: &PgPool, results: &[DispatchResult]) -> Result<Vec<ResultOutcome>> {
    if results.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = results.iter().map(|r| r.bead_id.to_string()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut tx = pool.begin().await?;
    // Locked in id order, so two batches that share a bead cannot deadlock.
    let rows =
        sqlx::query(&format!("SELECT {BEAD_COLS} FROM beads b WHERE b.id = ANY($1) ORDER BY b.id FOR UPDATE OF b"))
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
    let mut beads: HashMap<String, Bead> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let (bead, _) = bead_from_row(row)?;
        beads.insert(bead.id.to_string(), bead);
    }
    let mut outcomes = Vec::with_capacity(results.len());
    let mut events = Vec::new();
    let mut changed = BTreeSet::new();
    for r in results {
        let applied = beads.get_mut(r.bead_id.as_str()).and_then(|bead| transitions::record_result(bead, r));
        match applied {
            Some((outcome, event)) => {
                changed.insert(r.bead_id.to_string());
                events.push(event);
                outcomes.push(outcome);
            }
            None => outcomes.push(ResultOutcome::Ignored),
        }
    }
    if !changed.is_empty() {
        let written: Vec<Bead> = changed.iter().filter_map(|id| beads.remove(id)).collect();
        write_many(&mut tx, &written).await?;
        insert_events(&mut tx, &events).await?;
        tx.commit().await?;
    }
    Ok(outcomes)
}

pub(super) async fn release_expired(
    pool: &PgPool,
    now: DateTime<Utc>,
    max_attempts: u32,
    limit: u32,
) -> Result<Vec<Bead>> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(&format!(
        "SELECT {BEAD_COLS} FROM beads b WHERE b.status = 'in_progress' AND b.lease_expires_at < $1
         ORDER BY b.lease_expires_at LIMIT $2 FOR UPDATE OF b SKIP LOCKED"
    ))
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    let mut released = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let (mut bead, _) = bead_from_row(row)?;
        events.push(transitions::release_expired(&mut bead, max_attempts, now));
        write(&mut tx, &bead).await?;
        released.push(bead);
    }
    insert_events(&mut tx, &events).await?;
    tx.commit().await?;
    Ok(released)
}

pub(super) async fn block(pool: &PgPool, dispatch: &DispatchId, reason: &str) -> Result<Option<Bead>> {
    let mut tx = pool.begin().await?;
    let id: Option<String> =
        sqlx::query_scalar("SELECT id FROM beads WHERE dispatch_id = $1 AND status = 'in_progress' FOR UPDATE")
            .bind(dispatch.as_str())
            .fetch_optional(&mut *tx)
            .await?;
    let Some(id) = id else { return Ok(None) };
    let id = loom_domain::BeadId::parse(&id).map_err(|e| crate::Error::Internal(e.to_string()))?;
    let mut bead = lock(&mut tx, &id).await?;
    let effects = transitions::block(&mut bead, reason, false, crate::now())?;
    persist(&mut tx, &bead, effects).await?;
    tx.commit().await?;
    Ok(Some(bead))
}
