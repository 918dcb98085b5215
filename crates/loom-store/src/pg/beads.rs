//! Bead CRUD and dependencies on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};

use loom_domain::{Bead, BeadId, BeadPrefix, EventKind, NewBead, Status};
use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgPool, QueryBuilder};

use super::rows::{BEAD_COLS, bead_from_row};
use super::{Tx, insert_events};
use crate::transitions::{self, Effects};
use crate::{BeadFilter, BeadPage, BeadPatch, Error, NewEvent, PageRequest, Result, cycles};

pub(super) async fn create(pool: &PgPool, new: Vec<NewBead>) -> Result<Vec<Bead>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    for b in &new {
        b.validate()?;
    }
    if new.iter().all(|b| b.parent.is_none() && b.blocked_by.is_empty()) {
        return create_plain(pool, new).await;
    }
    let mut tx = super::begin(pool).await?;
    let result = create_in(&mut tx, new).await;
    super::finish(tx, result).await
}

/// Which of `ids` are beads (of any project), read inside `tx`.
pub(super) async fn existing_ids(tx: &mut Tx<'_>, ids: &[String]) -> Result<BTreeSet<String>> {
    if ids.is_empty() {
        return Ok(BTreeSet::new());
    }
    let found: Vec<String> =
        sqlx::query_scalar("SELECT id FROM beads WHERE id = ANY($1)").bind(ids).fetch_all(&mut **tx).await?;
    Ok(found.into_iter().collect())
}

/// Creates validated beads inside `tx` (blockers and parents must exist), with their events.
pub(super) async fn create_in(tx: &mut Tx<'_>, new: Vec<NewBead>) -> Result<Vec<Bead>> {
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let prefixes = project_prefixes(tx, &new).await?;
    let referenced: Vec<String> = new
        .iter()
        .flat_map(|b| b.parent.iter().chain(&b.blocked_by))
        .map(|id| id.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let existing = existing_ids(tx, &referenced).await?;
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT nextval('bead_seq') FROM generate_series(1, $1)")
        .bind(new.len() as i64)
        .fetch_all(&mut **tx)
        .await?;
    let now = crate::now();
    let mut beads = Vec::with_capacity(new.len());
    for (b, seq) in new.into_iter().zip(&seqs) {
        let id = BeadId::new(&prefixes[b.project_id.as_str()], *seq as u64);
        if let Some(p) = b.parent.as_ref().filter(|p| !existing.contains(p.as_str())) {
            return Err(Error::not_found("parent bead", p));
        }
        let mut blocked_by: Vec<BeadId> = b.blocked_by.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect();
        blocked_by.sort();
        if let Some(missing) = blocked_by.iter().find(|x| !existing.contains(x.as_str())) {
            return Err(Error::MissingBlocker { bead: id.to_string(), blocker: missing.to_string() });
        }
        beads.push(transitions::fresh(id, b, blocked_by, now));
    }
    insert_rows(tx, &beads, &seqs).await?;
    let events: Vec<NewEvent> = beads.iter().map(transitions::created_event).collect();
    insert_events(tx, &events).await?;
    Ok(beads)
}

/// Beads without parent or blockers: one statement (one round trip, one commit) numbers them in
/// order, builds their ids (`loom_bead_id`, as `BeadId::new`), inserts them and their
/// `bead.created` events (as `transitions::created_event`; the conformance suite compares).
async fn create_plain(pool: &PgPool, new: Vec<NewBead>) -> Result<Vec<Bead>> {
    let now = crate::now();
    match insert_plain(pool, &new, now).await {
        Err(e) if names_missing_project(&e) => Err(missing_project(pool, &new).await),
        rows => fresh_beads(rows?, new, now),
    }
}

/// `create`'s writes inside `tx`, which goes on to do more (claim some of the beads): the same
/// validation, and plain beads in `create_plain`'s one statement.
pub(super) async fn create_within(pool: &PgPool, tx: &mut Tx<'_>, new: Vec<NewBead>) -> Result<Vec<Bead>> {
    for b in &new {
        b.validate()?;
    }
    if !new.iter().all(|b| b.parent.is_none() && b.blocked_by.is_empty()) {
        return create_in(tx, new).await;
    }
    let now = crate::now();
    match insert_plain(&mut **tx, &new, now).await {
        Err(e) if names_missing_project(&e) => Err(missing_project(pool, &new).await),
        rows => fresh_beads(rows?, new, now),
    }
}

/// Whether a bead insert failed because its project does not exist.
pub(super) fn names_missing_project(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.constraint()) == Some("beads_project_id_fkey")
}

/// `create_plain`'s statement, on any connection (a pool, or a transaction that goes on to
/// claim some of the beads); returns each bead's (order, id, seq).
async fn insert_plain<'e>(
    on: impl sqlx::PgExecutor<'e>,
    new: &[NewBead],
    now: DateTime<Utc>,
) -> std::result::Result<Vec<(i64, String, i64)>, sqlx::Error> {
    let text = |f: fn(&NewBead) -> String| new.iter().map(f).collect::<Vec<_>>();
    sqlx::query_as(
        "WITH input AS (
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                                $7::jsonb[], $8::jsonb[])
             WITH ORDINALITY AS t(project_id, title, description, bead_type, priority, assignee, tags, context, n)
         ), numbered AS (
           SELECT i.*, nextval('bead_seq') AS seq
           FROM (SELECT input.*, p.bead_prefix FROM input LEFT JOIN projects p ON p.id = input.project_id
                 ORDER BY input.n) i
         ), fresh AS (
           -- A missing project keeps a placeholder id; its row then fails the project foreign key.
           SELECT numbered.*, loom_bead_id(COALESCE(bead_prefix, 'missing'), seq) AS id FROM numbered
         ), inserted AS (
           INSERT INTO beads (id, seq, project_id, title, description, bead_type, priority, status, assignee, tags,
                              context, created_at, updated_at)
           SELECT id, seq, project_id, title, description, bead_type, priority, 'open', assignee, tags, context, $9, $9
           FROM fresh ORDER BY n
         ), created AS (
           INSERT INTO events (id, kind, source, project_id, entity_id, action, description, data, created_at)
           SELECT gen_random_uuid()::text, 'bead.created', 'store', project_id, id, 'created',
             format('bead %s created: %s', id, title),
             jsonb_build_object('title', title, 'priority', priority, 'type', bead_type), $9
           FROM fresh ORDER BY n
         )
         SELECT n, id, seq FROM fresh ORDER BY n",
    )
    .bind(text(|b| b.project_id.to_string()))
    .bind(text(|b| b.title.clone()))
    .bind(text(|b| b.description.clone()))
    .bind(text(|b| b.bead_type.as_str().to_owned()))
    .bind(new.iter().map(|b| i64::from(b.priority.get())).collect::<Vec<_>>())
    .bind(new.iter().map(|b| b.assignee.clone()).collect::<Vec<_>>())
    .bind(new.iter().map(|b| json!(b.tags)).collect::<Vec<_>>())
    .bind(new.iter().map(|b| json!(b.context)).collect::<Vec<_>>())
    .bind(now)
    .fetch_all(on)
    .await
}

/// The beads `insert_plain` wrote, from what it returned.
fn fresh_beads(rows: Vec<(i64, String, i64)>, new: Vec<NewBead>, now: DateTime<Utc>) -> Result<Vec<Bead>> {
    let mut beads = Vec::with_capacity(new.len());
    for ((n, id, _seq), b) in rows.into_iter().zip(new) {
        debug_assert_eq!(n as usize, beads.len() + 1);
        let id = BeadId::parse(&id).map_err(|e| Error::Internal(format!("generated bead id {id}: {e}")))?;
        beads.push(transitions::fresh(id, b, Vec::new(), now));
    }
    Ok(beads)
}

/// The error for a create that named a project that does not exist.
pub(super) async fn missing_project(pool: &PgPool, new: &[NewBead]) -> Error {
    let ids: Vec<String> = new.iter().map(|b| b.project_id.to_string()).collect();
    let existing: Result<Vec<String>> = sqlx::query_scalar("SELECT id FROM projects WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(pool)
        .await
        .map_err(Into::into);
    match existing {
        Ok(existing) => match ids.iter().find(|id| !existing.contains(id)) {
            Some(missing) => Error::not_found("project", missing),
            None => Error::Conflict("a project was deleted or created during the create; retry".into()),
        },
        Err(e) => e,
    }
}

async fn project_prefixes(tx: &mut Tx<'_>, new: &[NewBead]) -> Result<BTreeMap<String, BeadPrefix>> {
    let ids: Vec<String> = new.iter().map(|b| b.project_id.to_string()).collect::<BTreeSet<_>>().into_iter().collect();
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT id, bead_prefix FROM projects WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(&mut **tx)
        .await?;
    let map: BTreeMap<String, BeadPrefix> = rows
        .into_iter()
        .map(|(id, p)| Ok((id, BeadPrefix::parse(&p).map_err(|e| Error::Internal(e.to_string()))?)))
        .collect::<Result<_>>()?;
    match ids.iter().find(|id| !map.contains_key(*id)) {
        Some(missing) => Err(Error::not_found("project", missing)),
        None => Ok(map),
    }
}

async fn insert_rows(tx: &mut Tx<'_>, beads: &[Bead], seqs: &[i64]) -> Result<()> {
    let col = |f: fn(&Bead) -> String| beads.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&Bead) -> Option<String>| beads.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO beads (id, seq, project_id, title, description, bead_type, priority, status, assignee, tags,
           context, parent, created_at, updated_at)
         SELECT id, seq, project_id, title, description, bead_type, priority, 'open', assignee, tags, context, parent, $12, $12
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                     $8::text[], $9::jsonb[], $10::jsonb[], $11::text[])
           AS t(id, seq, project_id, title, description, bead_type, priority, assignee, tags, context, parent)",
    )
    .bind(col(|b| b.id.to_string()))
    .bind(seqs)
    .bind(col(|b| b.project_id.to_string()))
    .bind(col(|b| b.title.clone()))
    .bind(col(|b| b.description.clone()))
    .bind(col(|b| b.bead_type.as_str().to_owned()))
    .bind(beads.iter().map(|b| i64::from(b.priority.get())).collect::<Vec<_>>())
    .bind(opt(|b| b.assignee.clone()))
    .bind(beads.iter().map(|b| json!(b.tags)).collect::<Vec<_>>())
    .bind(beads.iter().map(|b| json!(b.context)).collect::<Vec<_>>())
    .bind(opt(|b| b.parent.as_ref().map(|p| p.to_string())))
    .bind(beads[0].created_at)
    .execute(&mut **tx)
    .await?;
    let edges = beads.iter().flat_map(|b| b.blocked_by.iter().map(|x| (b.id.to_string(), x.to_string())));
    insert_edges(tx, edges.unzip()).await
}

/// Inserts the dependency edges `(bead, blocker)`, given as two parallel columns.
pub(super) async fn insert_edges(tx: &mut Tx<'_>, (from, to): (Vec<String>, Vec<String>)) -> Result<()> {
    if !from.is_empty() {
        sqlx::query("INSERT INTO bead_deps (bead_id, blocker_id) SELECT * FROM UNNEST($1::text[], $2::text[])")
            .bind(from)
            .bind(to)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(super) async fn get(pool: &PgPool, id: &BeadId) -> Result<Bead> {
    let row = sqlx::query(&format!("SELECT {BEAD_COLS} FROM beads b WHERE b.id = $1"))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found("bead", id))?;
    Ok(bead_from_row(&row)?.0)
}

/// Loads a bead and locks its row until `tx` ends.
pub(super) async fn lock(tx: &mut Tx<'_>, id: &BeadId) -> Result<Bead> {
    let row = sqlx::query(&format!("SELECT {BEAD_COLS} FROM beads b WHERE b.id = $1 FOR UPDATE OF b"))
        .bind(id.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::not_found("bead", id))?;
    Ok(bead_from_row(&row)?.0)
}

pub(super) async fn list(pool: &PgPool, filter: &BeadFilter, page: &PageRequest) -> Result<BeadPage> {
    let (after, limit) = page.parse()?;
    let mut q = QueryBuilder::new(format!("SELECT {BEAD_COLS} FROM beads b WHERE b.seq > "));
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
        // `tags <> '[]'` is the predicate of the (partial) GIN index on tags.
        q.push(" AND b.tags <> '[]'::jsonb AND b.tags @> ").push_bind(Json(vec![t.clone()]));
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

/// Writes every mutable column of a locked bead back.
pub(super) async fn write(tx: &mut Tx<'_>, b: &Bead) -> Result<()> {
    write_many(tx, std::slice::from_ref(b)).await
}

/// Writes the mutable columns of `beads` back, in one statement.
pub(super) async fn write_many(tx: &mut Tx<'_>, beads: &[Bead]) -> Result<()> {
    if beads.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&Bead) -> String| beads.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&Bead) -> Option<String>| beads.iter().map(f).collect::<Vec<_>>();
    let int = |f: fn(&Bead) -> i64| beads.iter().map(f).collect::<Vec<_>>();
    let time = |f: fn(&Bead) -> Option<chrono::DateTime<chrono::Utc>>| beads.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "UPDATE beads SET title = t.title, description = t.description, bead_type = t.bead_type,
           priority = t.priority, status = t.status, assignee = t.assignee, tags = t.tags, context = t.context,
           parent = t.parent, attempts = t.attempts, last_error = t.last_error, close_reason = t.close_reason,
           dispatch_id = t.dispatch_id, lease_expires_at = t.lease_expires_at, not_before = t.not_before,
           updated_at = t.updated_at, closed_at = t.closed_at, version = t.version, started_at = t.started_at,
           started_by = t.started_by
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[],
                     $8::jsonb[], $9::jsonb[], $10::text[], $11::bigint[], $12::text[], $13::text[], $14::text[],
                     $15::timestamptz[], $16::timestamptz[], $17::timestamptz[], $18::timestamptz[], $19::bigint[],
                     $20::timestamptz[], $21::text[])
           AS t(id, title, description, bead_type, priority, status, assignee, tags, context, parent, attempts,
                last_error, close_reason, dispatch_id, lease_expires_at, not_before, updated_at, closed_at, version,
                started_at, started_by)
         WHERE beads.id = ANY($1) AND beads.id = t.id",
    )
    .bind(text(|b| b.id.to_string()))
    .bind(text(|b| b.title.clone()))
    .bind(text(|b| b.description.clone()))
    .bind(text(|b| b.bead_type.as_str().to_owned()))
    .bind(int(|b| i64::from(b.priority.get())))
    .bind(text(|b| b.status.as_str().to_owned()))
    .bind(opt(|b| b.assignee.clone()))
    .bind(beads.iter().map(|b| json!(b.tags)).collect::<Vec<_>>())
    .bind(beads.iter().map(|b| json!(b.context)).collect::<Vec<_>>())
    .bind(opt(|b| b.parent.as_ref().map(BeadId::to_string)))
    .bind(int(|b| i64::from(b.attempts)))
    .bind(opt(|b| b.last_error.clone()))
    .bind(opt(|b| b.close_reason.clone()))
    .bind(opt(|b| b.dispatch_id.as_ref().map(|d| d.to_string())))
    .bind(time(|b| b.lease_expires_at))
    .bind(time(|b| b.not_before))
    .bind(time(|b| Some(b.updated_at)))
    .bind(time(|b| b.closed_at))
    .bind(int(|b| b.version))
    .bind(time(|b| b.started_at))
    .bind(opt(|b| b.started_by.clone()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn persist(tx: &mut Tx<'_>, bead: &Bead, effects: Effects) -> Result<()> {
    write(tx, bead).await?;
    if let Some(cancel) = &effects.cancel {
        let (kind, payload) = cancel.payload();
        sqlx::query(
            "INSERT INTO outbox (kind, project_id, bead_id, dispatch_id, attempt, payload, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(kind.as_str())
        .bind(bead.project_id.as_str())
        .bind(bead.id.as_str())
        .bind(cancel.dispatch_id.as_str())
        .bind(i64::from(cancel.attempt))
        .bind(payload)
        .bind(bead.updated_at)
        .execute(&mut **tx)
        .await?;
    }
    insert_events(tx, std::slice::from_ref(&effects.event)).await
}

pub(super) async fn update(pool: &PgPool, id: &BeadId, expected: i64, patch: BeadPatch) -> Result<Bead> {
    let mut tx = super::begin(pool).await?;
    let result: Result<Bead> = async {
        let mut bead = lock(&mut tx, id).await?;
        transitions::check_version(&bead, Some(expected))?;
        if let Some(Some(parent)) = &patch.parent {
            let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM beads WHERE id = $1)")
                .bind(parent.as_str())
                .fetch_one(&mut *tx)
                .await?;
            if !exists {
                return Err(Error::not_found("parent bead", parent));
            }
        }
        let effects = transitions::apply_patch(&mut bead, patch, crate::now())?;
        persist(&mut tx, &bead, effects).await?;
        Ok(bead)
    }
    .await;
    super::finish(tx, result).await
}

pub(super) async fn claim(pool: &PgPool, id: &BeadId, claimer: &str, lease: std::time::Duration) -> Result<Bead> {
    let mut tx = super::begin(pool).await?;
    let result: Result<Bead> = async {
        let mut bead = lock(&mut tx, id).await?;
        let open_blocker: Option<String> = sqlx::query_scalar(
            "SELECT x.id FROM bead_deps d JOIN beads x ON x.id = d.blocker_id
             WHERE d.bead_id = $1 AND x.status <> 'closed' ORDER BY x.id LIMIT 1",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let event = transitions::claim(&mut bead, claimer, lease, crate::now(), open_blocker.as_deref())?;
        persist(&mut tx, &bead, Effects { event, cancel: None }).await?;
        Ok(bead)
    }
    .await;
    super::finish(tx, result).await
}

/// Close (with `reason`) or reopen by hand.
pub(super) async fn set_status(
    pool: &PgPool,
    id: &BeadId,
    to: Status,
    reason: Option<&str>,
    expected: Option<i64>,
) -> Result<Bead> {
    let mut tx = super::begin(pool).await?;
    let result: Result<Bead> = async {
        let mut bead = lock(&mut tx, id).await?;
        transitions::check_version(&bead, expected)?;
        let now = crate::now();
        let effects = match to {
            Status::Closed => transitions::close(&mut bead, reason.unwrap_or("closed by hand"), now)?,
            _ => transitions::reopen(&mut bead, now)?,
        };
        persist(&mut tx, &bead, effects).await?;
        Ok(bead)
    }
    .await;
    super::finish(tx, result).await
}

pub(super) async fn add_dependency(pool: &PgPool, id: &BeadId, blocker: &BeadId) -> Result<Bead> {
    let mut tx = super::begin(pool).await?;
    let result: Result<Bead> = async {
        let mut bead = lock(&mut tx, id).await?;
        // One edge change at a time per database: two concurrent edges could otherwise close a cycle
        // that neither sees.
        sqlx::query("SELECT pg_advisory_xact_lock(7365273)").execute(&mut *tx).await?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM beads WHERE id = $1)")
            .bind(blocker.as_str())
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            return Err(Error::MissingBlocker { bead: id.to_string(), blocker: blocker.to_string() });
        }
        if bead.blocked_by.contains(blocker) {
            return Ok(bead);
        }
        if let Some(path) = cycle_path(&mut tx, id, blocker).await? {
            return Err(loom_domain::Error::Cycle { bead: id.to_string(), blocker: blocker.to_string(), path }.into());
        }
        sqlx::query("INSERT INTO bead_deps (bead_id, blocker_id) VALUES ($1, $2)")
            .bind(id.as_str())
            .bind(blocker.as_str())
            .execute(&mut *tx)
            .await?;
        bead.blocked_by.push(blocker.clone());
        bead.blocked_by.sort();
        edge_changed(&mut tx, &mut bead, blocker, EventKind::BeadDependencyAdded).await?;
        Ok(bead)
    }
    .await;
    super::finish(tx, result).await
}

/// How long one dependency check may run. Edge changes are serialised by a database-wide
/// advisory lock, so a check must never hold it long; the walk is linear in the reachable
/// subgraph and takes milliseconds, this only bounds a pathological graph.
const DEPENDENCY_CHECK_TIMEOUT: &str = "2s";

/// The path `bead → blocker → … → bead` that the edge `bead → blocker` would close, if any.
///
/// First a reachability walk over visited nodes (`UNION`, so each bead is expanded once: linear
/// in the reachable subgraph, where enumerating paths is exponential on diamonds), which stops as
/// soon as it meets `bead`; only for a cycle are the reachable edges loaded to name the shortest
/// path. See [`crate::cycles`].
pub(super) async fn cycle_path(tx: &mut Tx<'_>, bead: &BeadId, blocker: &BeadId) -> Result<Option<String>> {
    if let Some(path) = cycles::self_loop(bead, blocker) {
        return Ok(Some(path));
    }
    // The planner cannot know the walk visits a handful of beads: it would hash-join every step
    // against the whole edge table (120 ms at depth 24 with 25 k edges). Index lookups per visited
    // bead keep the walk linear in what it reaches.
    // `set_config(…, true)` is `SET LOCAL`: until the transaction ends.
    sqlx::query(
        "SELECT set_config('statement_timeout', $1, true), set_config('enable_hashjoin', 'off', true),
                set_config('enable_mergejoin', 'off', true)",
    )
    .bind(DEPENDENCY_CHECK_TIMEOUT)
    .execute(&mut **tx)
    .await?;
    let closes: bool = sqlx::query_scalar(&format!("{REACH} SELECT EXISTS (SELECT 1 FROM reach WHERE id = $2)"))
        .bind(blocker.as_str())
        .bind(bead.as_str())
        .fetch_one(&mut **tx)
        .await
        .map_err(timed_out)?;
    if !closes {
        return Ok(None);
    }
    let edges: Vec<(String, String)> = sqlx::query_as(&format!(
        "{REACH} SELECT d.bead_id, d.blocker_id FROM bead_deps d JOIN reach r ON d.bead_id = r.id"
    ))
    .bind(blocker.as_str())
    .fetch_all(&mut **tx)
    .await
    .map_err(timed_out)?;
    Ok(cycles::cycle_path(&edges, bead, blocker))
}

/// Every bead reachable from `$1` along blocker edges, each once.
const REACH: &str = "WITH RECURSIVE reach(id) AS (
     SELECT $1::text
   UNION
     SELECT d.blocker_id FROM bead_deps d JOIN reach r ON d.bead_id = r.id
 )";

/// A dependency check cancelled by its statement timeout, in the caller's terms.
fn timed_out(e: sqlx::Error) -> Error {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("57014") => Error::Conflict(format!(
            "the dependency graph is too large to check within {DEPENDENCY_CHECK_TIMEOUT}; the edge was not added"
        )),
        _ => e.into(),
    }
}

pub(super) async fn remove_dependency(pool: &PgPool, id: &BeadId, blocker: &BeadId) -> Result<Bead> {
    let mut tx = super::begin(pool).await?;
    let result: Result<Bead> = async {
        let mut bead = lock(&mut tx, id).await?;
        let n = sqlx::query("DELETE FROM bead_deps WHERE bead_id = $1 AND blocker_id = $2")
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
        Ok(bead)
    }
    .await;
    super::finish(tx, result).await
}

async fn edge_changed(tx: &mut Tx<'_>, bead: &mut Bead, blocker: &BeadId, kind: EventKind) -> Result<()> {
    bead.version += 1;
    bead.updated_at = crate::now();
    write(tx, bead).await?;
    let verb = if kind == EventKind::BeadDependencyAdded { "now waits on" } else { "no longer waits on" };
    let event = NewEvent::for_bead(
        bead,
        kind,
        format!("bead {} {verb} {blocker}", bead.id),
        json!({ "blocker": blocker.as_str() }),
    );
    insert_events(tx, &[event]).await
}
