//! Dispatch on SQLite: the ready query, claims under the write lock, results fenced by
//! `dispatch_id`, and the lease sweep.

use chrono::{DateTime, Utc};
use loom_domain::{Bead, DispatchId, EventKind, NewBead, ProjectId};
use serde_json::json;
use sqlx::SqlitePool;

use super::beads::{load, persist, write};
use super::records::{OutboxRow, insert_events, insert_outbox};
use super::rows::{BEAD_COLS, bead_from_row, micros, now, stored};
use super::{SqliteStore, Tx, locked};
use crate::transitions::{self, Effects};
use crate::{
    Claim, ClaimRequest, CreatedBead, DispatchResult, DispatchStart, NewEvent, OutboxKind, PageRequest, Result,
    ResultOutcome, StartOutcome, TaskSnapshot,
};

/// The ready rule in SQL; `?1` = project, `?2` = now (µs). The status and type terms repeat the
/// partial index `beads_ready` literally, so SQLite walks it in (priority, seq) order.
const READY: &str = "b.project_id = ?1 AND b.status = 'open' AND b.bead_type <> 'decision'
    AND (b.not_before IS NULL OR b.not_before <= ?2)
    AND NOT EXISTS (SELECT 1 FROM bead_deps d JOIN beads x ON x.id = d.blocker_id
                    WHERE d.bead_id = b.id AND x.status <> 'closed')";

fn ready_query() -> String {
    format!("SELECT {BEAD_COLS} FROM beads b WHERE {READY} ORDER BY b.priority, b.seq LIMIT ?3")
}

pub(super) async fn list_ready(
    pool: &SqlitePool,
    project: &ProjectId,
    limit: u32,
    now: DateTime<Utc>,
) -> Result<Vec<Bead>> {
    let (_, limit) = PageRequest::first(limit).parse()?;
    let rows = sqlx::query(&ready_query()).bind(project.as_str()).bind(micros(now)).bind(limit).fetch_all(pool).await?;
    rows.iter().map(|r| bead_from_row(r).map(|(b, _)| b)).collect()
}

pub(super) async fn claim(store: &SqliteStore, req: &ClaimRequest) -> Result<Vec<Claim>> {
    if req.max == 0 {
        return Ok(Vec::new());
    }
    let mut tx = store.write().await?;
    let claims = claim_in(&mut tx, req).await?;
    tx.commit().await?;
    Ok(claims)
}

/// Creates the bead and, when nothing else in its project is ready, claims it, under one write
/// lock (see `Store::create_claimed`).
pub(super) async fn create_claimed(store: &SqliteStore, new: NewBead, req: &ClaimRequest) -> Result<CreatedBead> {
    let claimable = transitions::claimable_at_create(&new, req)?;
    let mut tx = store.write().await?;
    let nothing_ready = claimable && {
        let ready = sqlx::query(&ready_query())
            .bind(req.project.as_str())
            .bind(micros(req.now))
            .bind(1_i64)
            .fetch_optional(&mut *tx)
            .await?;
        ready.is_none()
    };
    let bead = super::beads::create_in(&mut tx, vec![new]).await?.remove(0);
    let created = if nothing_ready {
        match claim_in(&mut tx, &ClaimRequest { max: 1, ..req.clone() }).await?.pop() {
            Some(claim) if claim.bead.id == bead.id => CreatedBead::Claimed(claim),
            Some(other) => {
                return Err(crate::Error::Internal(format!(
                    "claimed {} instead of the new {}",
                    other.bead.id, bead.id
                )));
            }
            // The project is paused.
            None => CreatedBead::Open(bead),
        }
    } else {
        CreatedBead::Open(bead)
    };
    tx.commit().await?;
    Ok(created)
}

/// Claims in an open write transaction: nothing when the project is not active.
async fn claim_in(tx: &mut Tx, req: &ClaimRequest) -> Result<Vec<Claim>> {
    let lease_until = stored(req.now + req.lease);
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM projects WHERE id = ?1")
        .bind(req.project.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    if status.as_deref() != Some(loom_domain::ProjectStatus::Active.as_str()) {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(&ready_query())
        .bind(req.project.as_str())
        .bind(micros(req.now))
        .bind(i64::from(req.max))
        .fetch_all(&mut **tx)
        .await?;
    let mut claims = Vec::with_capacity(rows.len());
    for row in &rows {
        let (mut bead, _) = bead_from_row(row)?;
        let dispatch_id = transitions::new_dispatch_id();
        transitions::start_dispatch(&mut bead, &req.claimer, req.now, lease_until, dispatch_id.clone());
        write(tx, &mut bead).await?;
        claims.push(Claim { dispatch_id, attempt: bead.attempts, lease_expires_at: lease_until, outbox_id: 0, bead });
    }
    if !claims.is_empty() {
        record_assignments(tx, &mut claims).await?;
    }
    Ok(claims)
}

/// The `task.assigned` outbox rows (their ids are set on the claims) and `bead.dispatched`
/// events of a claim.
async fn record_assignments(tx: &mut Tx, claims: &mut [Claim]) -> Result<()> {
    let rows: Vec<OutboxRow<'_>> = claims
        .iter()
        .map(|c| {
            Ok(OutboxRow {
                kind: OutboxKind::TaskAssigned,
                project_id: c.bead.project_id.as_str(),
                bead_id: c.bead.id.as_str(),
                dispatch_id: c.dispatch_id.as_str(),
                attempt: c.attempt,
                payload: serde_json::to_value(TaskSnapshot::of(&c.bead))
                    .map_err(|e| crate::Error::Internal(format!("task snapshot: {e}")))?,
            })
        })
        .collect::<Result<_>>()?;
    let ids = insert_outbox(tx, &rows).await?;
    for (claim, id) in claims.iter_mut().zip(ids) {
        claim.outbox_id = id;
    }
    let events: Vec<NewEvent> = claims
        .iter()
        .map(|c| {
            let data = json!({
                "dispatch_id": c.dispatch_id.as_str(),
                "attempt": c.attempt,
                "lease_expires_at": c.lease_expires_at.to_rfc3339(),
            });
            let description = format!("bead {} dispatched (attempt {})", c.bead.id, c.attempt);
            NewEvent::for_bead(&c.bead, EventKind::BeadDispatched, description, data)
        })
        .collect();
    insert_events(tx, &events).await
}

pub(super) async fn extend_lease(store: &SqliteStore, dispatch: &DispatchId, until: DateTime<Utc>) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE beads SET lease_expires_at = ?2, started_at = COALESCE(started_at, ?3)
         WHERE dispatch_id = ?1 AND status = 'in_progress'",
    )
    .bind(dispatch.as_str())
    .bind(micros(until))
    .bind(micros(now()))
    .execute(&store.writer)
    .await
    .map_err(locked)?
    .rows_affected();
    Ok(n == 1)
}

pub(super) async fn record_results(store: &SqliteStore, results: &[DispatchResult]) -> Result<Vec<ResultOutcome>> {
    if results.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = store.write().await?;
    let mut outcomes = Vec::with_capacity(results.len());
    for r in results {
        let mut bead = match load(&mut tx, &r.bead_id).await {
            Ok(b) => b,
            Err(crate::Error::NotFound { .. }) => {
                outcomes.push(ResultOutcome::Ignored);
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(applied) = transitions::record_result(&mut bead, r) else {
            outcomes.push(ResultOutcome::Ignored);
            continue;
        };
        persist(&mut tx, &mut bead, Effects { event: applied.event, cancel: None }).await?;
        let mut attempt = applied.attempt;
        attempt.created_beads =
            super::beads::create_in(&mut tx, applied.discovered).await?.into_iter().map(|b| b.id).collect();
        super::attempts::insert(&mut tx, &attempt).await?;
        // The outcome carries the bead as written (times at stored precision).
        outcomes.push(match applied.outcome {
            ResultOutcome::Closed(_) => ResultOutcome::Closed(bead),
            ResultOutcome::Retrying(_) => ResultOutcome::Retrying(bead),
            ResultOutcome::Blocked(_) => ResultOutcome::Blocked(bead),
            ResultOutcome::Ignored => ResultOutcome::Ignored,
        });
    }
    tx.commit().await?;
    Ok(outcomes)
}

pub(super) async fn release_expired(
    store: &SqliteStore,
    now: DateTime<Utc>,
    max_attempts: u32,
    limit: u32,
) -> Result<Vec<Bead>> {
    let mut tx = store.write().await?;
    let rows = sqlx::query(&format!(
        "SELECT {BEAD_COLS} FROM beads b
         WHERE b.status = 'in_progress' AND b.started_at IS NOT NULL AND b.lease_expires_at < ?1
         ORDER BY b.lease_expires_at, b.seq LIMIT ?2"
    ))
    .bind(micros(now))
    .bind(i64::from(limit))
    .fetch_all(&mut *tx)
    .await?;
    let mut released = Vec::with_capacity(rows.len());
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let (mut bead, _) = bead_from_row(row)?;
        events.push(transitions::release_expired(&mut bead, max_attempts, now));
        write(&mut tx, &mut bead).await?;
        released.push(bead);
    }
    insert_events(&mut tx, &events).await?;
    tx.commit().await?;
    Ok(released)
}

/// Loads the bead whose current dispatch is `dispatch`, if there is one (under the write lock).
async fn load_current(tx: &mut Tx, dispatch: &DispatchId) -> Result<Option<Bead>> {
    let row =
        sqlx::query(&format!("SELECT {BEAD_COLS} FROM beads b WHERE b.dispatch_id = ?1 AND b.status = 'in_progress'"))
            .bind(dispatch.as_str())
            .fetch_optional(&mut **tx)
            .await?;
    row.map(|r| bead_from_row(&r).map(|(b, _)| b)).transpose()
}

pub(super) async fn block(store: &SqliteStore, dispatch: &DispatchId, reason: &str) -> Result<Option<Bead>> {
    let mut tx = store.write().await?;
    let Some(mut bead) = load_current(&mut tx, dispatch).await? else { return Ok(None) };
    let effects = transitions::block(&mut bead, reason, false, now())?;
    persist(&mut tx, &mut bead, effects).await?;
    tx.commit().await?;
    Ok(Some(bead))
}

pub(super) async fn start(store: &SqliteStore, start: &DispatchStart) -> Result<StartOutcome> {
    let mut tx = store.write().await?;
    let Some(mut bead) = load_current(&mut tx, &start.dispatch_id).await? else { return Ok(StartOutcome::Stale) };
    if bead.id != start.bead_id {
        return Ok(StartOutcome::Stale);
    }
    let started = transitions::start(&mut bead, start);
    write(&mut tx, &mut bead).await?;
    let outcome = match started {
        transitions::Start::Fresh(e) => {
            insert_events(&mut tx, &[e]).await?;
            StartOutcome::Started(bead)
        }
        transitions::Start::Again => StartOutcome::Started(bead),
        transitions::Start::Superseded(e) => {
            insert_events(&mut tx, &[e]).await?;
            StartOutcome::Superseded(bead)
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

pub(super) async fn hand_back(
    store: &SqliteStore,
    dispatch: &DispatchId,
    agent: &str,
    reason: &str,
) -> Result<Option<Bead>> {
    let mut tx = store.write().await?;
    let Some(mut bead) = load_current(&mut tx, dispatch).await? else { return Ok(None) };
    let Some(effects) = transitions::hand_back(&mut bead, agent, reason, now()) else { return Ok(None) };
    persist(&mut tx, &mut bead, effects).await?;
    tx.commit().await?;
    Ok(Some(bead))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn plan(store: &SqliteStore, sql: &str) -> Vec<String> {
        let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}"))
            .bind("p")
            .bind(0_i64)
            .bind(10_i64)
            .fetch_all(&store.reader)
            .await
            .unwrap();
        rows.into_iter().map(|r| r.3).collect()
    }

    /// The ready query must stay fast with 100k beads: it walks `beads_ready` in order (no full
    /// scan, no sort) and checks blockers through indexes.
    #[tokio::test]
    async fn ready_query_walks_the_partial_index() {
        let store = SqliteStore::in_memory().await.unwrap();
        let steps = plan(&store, &ready_query()).await;
        assert!(steps.iter().any(|s| s.contains("USING INDEX beads_ready")), "{steps:#?}");
        assert!(!steps.iter().any(|s| s.starts_with("SCAN") || s.contains("TEMP B-TREE")), "{steps:#?}");
    }
}
