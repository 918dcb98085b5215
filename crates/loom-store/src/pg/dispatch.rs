//! Dispatch on PostgreSQL: the ready query, atomic claims with `FOR UPDATE SKIP LOCKED`, results
//! fenced by `dispatch_id`, and the lease sweep.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use loom_domain::{Bead, BeadId, DispatchId, NewBead, ProjectId};
use serde_json::json;
use sqlx::{PgPool, Row};

use super::beads::{create_in, lock, persist, write, write_many};
use super::insert_events;
use super::rows::{BEAD_COLS, bead_from_row};
use crate::transitions;
use crate::{
    Claim, ClaimRequest, CreatedBead, DispatchResult, DispatchStart, PageRequest, Result, ResultOutcome, StartOutcome,
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

/// One statement, so one round trip and one commit: pick ready beads (skipping rows other
/// claimers hold), move them to `in_progress`, and write their outbox rows and `bead.dispatched`
/// events. The payload and event built here are what `TaskSnapshot::of` and the other backends
/// build (the conformance suite compares them). Each claimed row takes its outbox id from the
/// outbox's sequence before the insert, so no join pairs rows with ids afterwards (a young
/// table's statistics once made that join a nested loop, quadratic in the batch).
pub(super) async fn claim<'e>(on: impl sqlx::PgExecutor<'e>, req: &ClaimRequest) -> Result<Vec<Claim>> {
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
         ), numbered AS (
           SELECT c.*, nextval(pg_get_serial_sequence('outbox', 'id')) AS outbox_id
           FROM (SELECT * FROM claimed ORDER BY priority, seq) c
         ), outbox_rows AS (
           INSERT INTO outbox (id, kind, project_id, bead_id, dispatch_id, attempt, payload, created_at)
           SELECT c.outbox_id, 'task.assigned', c.project_id, c.id, c.dispatch_id, c.attempts,
             jsonb_build_object('title', c.title, 'description', c.description, 'priority', c.priority,
               'type', c.bead_type, 'context', c.context, 'assignee', c.assignee), $2
           FROM numbered c ORDER BY c.outbox_id
         ), dispatched AS (
           INSERT INTO events (id, kind, source, project_id, entity_id, action, description, data, created_at)
           SELECT gen_random_uuid()::text, 'bead.dispatched', 'store', c.project_id, c.id, 'dispatched',
             format('bead %s dispatched (attempt %s)', c.id, c.attempts),
             jsonb_build_object('dispatch_id', c.dispatch_id, 'attempt', c.attempts, 'lease_expires_at', $6::text),
             $2
           FROM claimed c ORDER BY c.priority, c.seq
         )
         SELECT * FROM numbered"
    ))
    .bind(req.project.as_str())
    .bind(crate::micros(req.now))
    .bind(i64::from(req.max))
    .bind(lease_until)
    .bind(&req.claimer)
    .bind(lease_until.to_rfc3339())
    .fetch_all(on)
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

/// Creates `new` and claims up to `req.max` ready beads of `req.project` (the project's best,
/// the new ones among them), in one transaction: one commit for the API's creates of a busy
/// moment (`Store::create_and_claim`). The beads are written as `create` writes them
/// (`beads::create_within`); the claim is `claim`'s statement, which sees the new rows.
pub(super) async fn create_and_claim(
    pool: &PgPool,
    new: Vec<NewBead>,
    req: &ClaimRequest,
) -> Result<(Vec<Bead>, Vec<Claim>)> {
    let mut tx = super::begin(pool).await?;
    let result = match super::beads::create_within(pool, &mut tx, new).await {
        Ok(beads) => claim(&mut *tx, req).await.map(|claims| (beads, claims)),
        Err(e) => Err(e),
    };
    super::finish(tx, result).await
}

/// A bead that is claimable on its own (see `transitions::claimable_at_create`) is created and,
/// when its project is active and has no other ready bead, claimed, in one statement: one round
/// trip and one commit. The rows and events are what `create_plain` and `claim` would write.
pub(super) async fn create_claimed(pool: &PgPool, new: NewBead, req: &ClaimRequest) -> Result<CreatedBead> {
    if !transitions::claimable_at_create(&new, req)? {
        let bead = super::beads::create(pool, vec![new]).await?.remove(0);
        return Ok(CreatedBead::Open(bead));
    }
    let created = crate::now();
    let claimed_at = crate::micros(req.now);
    let lease_until = crate::micros(claimed_at + req.lease);
    let dispatch_id = transitions::new_dispatch_id();
    let row: std::result::Result<(String, i64, bool, Option<i64>), sqlx::Error> = sqlx::query_as(&format!(
        "WITH gate AS (
           SELECT p.bead_prefix, p.status = 'active' AND NOT EXISTS (SELECT 1 FROM beads b WHERE {READY}) AS go
           FROM projects p WHERE p.id = $1
         ), fresh AS (
           -- A missing project keeps a placeholder id; its row then fails the project foreign key.
           SELECT nextval('bead_seq') AS seq, g.bead_prefix, COALESCE(g.go, false) AS go
           FROM (SELECT 1) one LEFT JOIN gate g ON true
         ), ided AS (
           SELECT f.seq, f.go, loom_bead_id(COALESCE(f.bead_prefix, 'missing'), f.seq) AS id FROM fresh f
         ), inserted AS (
           INSERT INTO beads (id, seq, project_id, title, description, bead_type, priority, status, assignee, tags,
                              context, dispatch_id, attempts, lease_expires_at, created_at, updated_at, version)
           SELECT id, seq, $1, $3::text, $4::text, $5::text, $6::bigint,
             CASE WHEN go THEN 'in_progress' ELSE 'open' END,
             CASE WHEN go THEN COALESCE($7::text, $8::text) ELSE $7::text END, $9::jsonb, $10::jsonb,
             CASE WHEN go THEN $11::text END, CASE WHEN go THEN 1 ELSE 0 END,
             CASE WHEN go THEN $12::timestamptz END, $13::timestamptz,
             CASE WHEN go THEN $2 ELSE $13::timestamptz END, CASE WHEN go THEN 2 ELSE 1 END
           FROM ided
         ), outbox_row AS (
           INSERT INTO outbox (kind, project_id, bead_id, dispatch_id, attempt, payload, created_at)
           SELECT 'task.assigned', $1, id, $11::text, 1,
             jsonb_build_object('title', $3::text, 'description', $4::text, 'priority', $6::bigint, 'type', $5::text,
               'context', $10::jsonb, 'assignee', COALESCE($7::text, $8::text)), $2
           FROM ided WHERE go
           RETURNING id
         ), logged AS (
           INSERT INTO events (id, kind, source, project_id, entity_id, action, description, data, created_at)
           SELECT gen_random_uuid()::text, e.kind, 'store', $1, i.id, e.action, e.description, e.data, e.at
           FROM ided i CROSS JOIN LATERAL (VALUES
             (1, 'bead.created', 'created', format('bead %s created: %s', i.id, $3::text),
              jsonb_build_object('title', $3::text, 'priority', $6::bigint, 'type', $5::text), $13::timestamptz),
             (2, 'bead.dispatched', 'dispatched', format('bead %s dispatched (attempt 1)', i.id),
              jsonb_build_object('dispatch_id', $11::text, 'attempt', 1, 'lease_expires_at', $14::text), $2)
           ) AS e(k, kind, action, description, data, at)
           WHERE e.k = 1 OR i.go
           ORDER BY e.k
         )
         SELECT id, seq, go, (SELECT id FROM outbox_row) FROM ided"
    ))
    .bind(new.project_id.as_str())
    .bind(claimed_at)
    .bind(&new.title)
    .bind(&new.description)
    .bind(new.bead_type.as_str())
    .bind(i64::from(new.priority.get()))
    .bind(&new.assignee)
    .bind(&req.claimer)
    .bind(json!(new.tags))
    .bind(json!(new.context))
    .bind(dispatch_id.as_str())
    .bind(lease_until)
    .bind(created)
    .bind(lease_until.to_rfc3339())
    .fetch_one(pool)
    .await;
    let (id, _seq, go, outbox_id) = match row {
        Ok(row) => row,
        Err(e) if super::beads::names_missing_project(&e) => {
            return Err(super::beads::missing_project(pool, std::slice::from_ref(&new)).await);
        }
        Err(e) => return Err(e.into()),
    };
    let id = BeadId::parse(&id).map_err(|e| crate::Error::Internal(format!("generated bead id {id}: {e}")))?;
    let mut bead = transitions::fresh(id, new, Vec::new(), created);
    match (go, outbox_id) {
        (true, Some(outbox_id)) => {
            transitions::start_dispatch(&mut bead, &req.claimer, claimed_at, lease_until, dispatch_id.clone());
            Ok(CreatedBead::Claimed(Claim { bead, dispatch_id, attempt: 1, lease_expires_at: lease_until, outbox_id }))
        }
        (false, None) => Ok(CreatedBead::Open(bead)),
        _ => Err(crate::Error::Internal(format!("bead {} claimed without its outbox row", bead.id))),
    }
}

pub(super) async fn record_results(pool: &PgPool, results: &[DispatchResult]) -> Result<Vec<ResultOutcome>> {
    if results.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = results.iter().map(|r| r.bead_id.to_string()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut tx = super::begin(pool).await?;
    let result: Result<Vec<ResultOutcome>> = async {
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
        let mut attempts = Vec::new();
        let mut discovered = Vec::new();
        let mut changed = BTreeSet::new();
        for r in results {
            match beads.get_mut(r.bead_id.as_str()).and_then(|bead| transitions::record_result(bead, r)) {
                Some(applied) => {
                    changed.insert(r.bead_id.to_string());
                    events.push(applied.event);
                    outcomes.push(applied.outcome);
                    attempts.push(applied.attempt);
                    discovered.push(applied.discovered);
                }
                None => outcomes.push(ResultOutcome::Ignored),
            }
        }
        if !changed.is_empty() {
            let written: Vec<Bead> = changed.iter().filter_map(|id| beads.remove(id)).collect();
            write_many(&mut tx, &written).await?;
            insert_events(&mut tx, &events).await?;
            let counts: Vec<usize> = discovered.iter().map(Vec::len).collect();
            let mut created = create_in(&mut tx, discovered.into_iter().flatten().collect()).await?.into_iter();
            for (attempt, n) in attempts.iter_mut().zip(counts) {
                attempt.created_beads = created.by_ref().take(n).map(|b| b.id).collect();
            }
            super::attempts::insert(&mut tx, &attempts).await?;
        }
        Ok(outcomes)
    }
    .await;
    super::finish(tx, result).await
}

pub(super) async fn release_expired(
    pool: &PgPool,
    now: DateTime<Utc>,
    max_attempts: u32,
    limit: u32,
) -> Result<Vec<Bead>> {
    let mut tx = super::begin(pool).await?;
    let result: Result<Vec<Bead>> = async {
        let rows = sqlx::query(&format!(
            "SELECT {BEAD_COLS} FROM beads b
             WHERE b.status = 'in_progress' AND b.started_at IS NOT NULL AND b.lease_expires_at < $1
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
        Ok(released)
    }
    .await;
    super::finish(tx, result).await
}

/// Locks the bead whose current dispatch is `dispatch`, if there is one.
async fn lock_current(tx: &mut super::Tx<'_>, dispatch: &DispatchId) -> Result<Option<Bead>> {
    let id: Option<String> =
        sqlx::query_scalar("SELECT id FROM beads WHERE dispatch_id = $1 AND status = 'in_progress' FOR UPDATE")
            .bind(dispatch.as_str())
            .fetch_optional(&mut **tx)
            .await?;
    let Some(id) = id else { return Ok(None) };
    let id = BeadId::parse(&id).map_err(|e| crate::Error::Internal(e.to_string()))?;
    Ok(Some(lock(tx, &id).await?))
}

pub(super) async fn block(pool: &PgPool, dispatch: &DispatchId, reason: &str) -> Result<Option<Bead>> {
    let mut tx = super::begin(pool).await?;
    let result: Result<Option<Bead>> = async {
        let Some(mut bead) = lock_current(&mut tx, dispatch).await? else { return Ok(None) };
        let effects = transitions::block(&mut bead, reason, false, crate::now())?;
        persist(&mut tx, &bead, effects).await?;
        Ok(Some(bead))
    }
    .await;
    super::finish(tx, result).await
}

/// A start report under the row lock, for every case (a first start, a repeat, another agent's
/// dispatch, a stale one). First starts normally arrive batched (`starts.rs`); this is the path
/// for what a batch did not settle.
pub(super) async fn start(pool: &PgPool, start: &DispatchStart) -> Result<StartOutcome> {
    let mut tx = super::begin(pool).await?;
    let result: Result<StartOutcome> = async {
        let Some(mut bead) = lock_current(&mut tx, &start.dispatch_id).await? else { return Ok(StartOutcome::Stale) };
        if bead.id != start.bead_id {
            return Ok(StartOutcome::Stale);
        }
        let (outcome, event) = match transitions::start(&mut bead, start) {
            transitions::Start::Fresh(e) => (StartOutcome::Started(bead.clone()), Some(e)),
            transitions::Start::Again => (StartOutcome::Started(bead.clone()), None),
            transitions::Start::Superseded(e) => (StartOutcome::Superseded(bead.clone()), Some(e)),
        };
        write(&mut tx, &bead).await?;
        insert_events(&mut tx, event.as_slice()).await?;
        Ok(outcome)
    }
    .await;
    super::finish(tx, result).await
}

pub(super) async fn hand_back(pool: &PgPool, dispatch: &DispatchId, agent: &str, reason: &str) -> Result<Option<Bead>> {
    let mut tx = super::begin(pool).await?;
    let result: Result<Option<Bead>> = async {
        let Some(mut bead) = lock_current(&mut tx, dispatch).await? else { return Ok(None) };
        let Some(effects) = transitions::hand_back(&mut bead, agent, reason, crate::now()) else { return Ok(None) };
        persist(&mut tx, &bead, effects).await?;
        Ok(Some(bead))
    }
    .await;
    super::finish(tx, result).await
}
