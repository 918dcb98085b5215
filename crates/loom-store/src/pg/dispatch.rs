//! Dispatch on PostgreSQL: the ready query, atomic claims with `FOR UPDATE SKIP LOCKED`, results
//! fenced by `dispatch_id`, and the lease sweep.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use loom_domain::{Bead, DispatchId, EventKind, ProjectId};
use serde_json::json;
use sqlx::PgPool;

use super::beads::{lock, persist, write, write_many};
use super::rows::{BEAD_COLS, bead_from_row};
use super::{Tx, insert_events};
use crate::transitions;
use crate::{
    Claim, ClaimRequest, DispatchResult, NewEvent, OutboxKind, PageRequest, Result, ResultOutcome, TaskSnapshot,
};

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

pub(super) async fn claim(pool: &PgPool, req: &ClaimRequest) -> Result<Vec<Claim>> {
    if req.max == 0 {
        return Ok(Vec::new());
    }
    let lease_until = crate::micros(req.now + req.lease);
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(&format!(
        "WITH picked AS (
           SELECT b.id FROM beads b
           WHERE {READY} AND EXISTS (SELECT 1 FROM projects p WHERE p.id = $1 AND p.status = 'active')
           ORDER BY b.priority, b.seq LIMIT $3 FOR UPDATE OF b SKIP LOCKED
         )
         UPDATE beads b SET status = 'in_progress', dispatch_id = gen_random_uuid()::text, attempts = b.attempts + 1,
           lease_expires_at = $4, assignee = COALESCE(b.assignee, $5), not_before = NULL, updated_at = $2,
           version = b.version + 1
         FROM picked WHERE b.id = picked.id
         RETURNING {BEAD_COLS}"
    ))
    .bind(req.project.as_str())
    .bind(req.now)
    .bind(i64::from(req.max))
    .bind(lease_until)
    .bind(&req.claimer)
    .fetch_all(&mut *tx)
    .await?;
    let mut beads = rows.iter().map(bead_from_row).collect::<Result<Vec<_>>>()?;
    beads.sort_by_key(|(b, seq)| (b.priority, *seq));
    let claims: Vec<Claim> = beads
        .into_iter()
        .map(|(bead, _)| Claim {
            dispatch_id: bead.dispatch_id.clone().expect("claimed beads have a dispatch id"),
            attempt: bead.attempts,
            lease_expires_at: lease_until,
            bead,
        })
        .collect();
    if !claims.is_empty() {
        insert_assignments(&mut tx, &claims).await?;
    }
    tx.commit().await?;
    Ok(claims)
}

async fn insert_assignments(tx: &mut Tx<'_>, claims: &[Claim]) -> Result<()> {
    let now = crate::now();
    sqlx::query(
        "INSERT INTO outbox (kind, project_id, bead_id, dispatch_id, attempt, payload, created_at)
         SELECT $1, project_id, bead_id, dispatch_id, attempt, payload, $7
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bigint[], $6::jsonb[]) WITH ORDINALITY
           AS t(project_id, bead_id, dispatch_id, attempt, payload, n)
         ORDER BY n",
    )
    .bind(OutboxKind::TaskAssigned.as_str())
    .bind(claims.iter().map(|c| c.bead.project_id.to_string()).collect::<Vec<_>>())
    .bind(claims.iter().map(|c| c.bead.id.to_string()).collect::<Vec<_>>())
    .bind(claims.iter().map(|c| c.dispatch_id.to_string()).collect::<Vec<_>>())
    .bind(claims.iter().map(|c| i64::from(c.attempt)).collect::<Vec<_>>())
    .bind(claims.iter().map(|c| json!(TaskSnapshot::of(&c.bead))).collect::<Vec<_>>())
    .bind(now)
    .execute(&mut **tx)
    .await?;
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
