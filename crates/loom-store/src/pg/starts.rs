//! Group commit of start reports on PostgreSQL. Every task costs one start report, and as its
//! own transaction each would cost a WAL flush: under load, flushes, not work, would set the
//! pace. Concurrent reports are queued and applied together, a batch at a time, as one
//! statement and one commit; while a batch commits the next one fills (at low load a batch is
//! one report: one statement). A report the batch does not settle (a repeat, a dispatch another
//! agent started, a stale one) takes the locking path, `dispatch::start`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use loom_domain::Bead;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::dispatch;
use super::rows::{BEAD_COLS, bead_from_row};
use crate::{DispatchStart, Result, StartOutcome};

/// Most reports applied in one statement.
const BATCH: usize = 256;

/// The queue of start reports of one store (started with the first report).
#[derive(Clone, Debug, Default)]
pub(crate) struct Starts {
    queue: Arc<OnceLock<mpsc::Sender<Pending>>>,
}

#[derive(Debug)]
struct Pending {
    start: DispatchStart,
    reply: oneshot::Sender<Result<StartOutcome>>,
}

impl Starts {
    pub(crate) async fn start(&self, pool: &PgPool, start: &DispatchStart) -> Result<StartOutcome> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * BATCH);
            tokio::spawn(apply(pool.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        if queue.send(Pending { start: start.clone(), reply }).await.is_err() {
            return dispatch::start(pool, start).await;
        }
        match answer.await {
            Ok(outcome) => outcome,
            // The batcher is gone (its runtime is shutting down): apply this one alone.
            Err(_) => dispatch::start(pool, start).await,
        }
    }
}

/// Applies queued reports in batches until every sender is gone.
async fn apply(pool: PgPool, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let starts: Vec<DispatchStart> = batch.iter().map(|p| p.start.clone()).collect();
        match first_starts(&pool, &starts).await {
            Ok(mut started) => {
                for p in batch {
                    let key = (p.start.dispatch_id.to_string(), p.start.agent_id.clone());
                    let outcome = match started.remove(&key) {
                        Some(bead) if p.start.bead_id == bead.id => Ok(StartOutcome::Started(bead)),
                        _ => dispatch::start(&pool, &p.start).await,
                    };
                    let _ = p.reply.send(outcome);
                }
            }
            // Each report gets its own answer (and error) on its own.
            Err(_) => {
                for p in batch {
                    let _ = p.reply.send(dispatch::start(&pool, &p.start).await);
                }
            }
        }
    }
}

/// The first starts of a batch in one statement: each queued dispatch named by a report becomes
/// running under its reporter, with its `bead.started` event, as `transitions::start` does. Rows
/// are locked in id order (one report per bead; another report of the same bead takes the locking
/// path), so batches never deadlock with other batched writers. Each row is found from its report
/// by primary key (a lateral join), whatever the planner believes of a young table's size: no
/// plan compares every report with every row. Returns the beads started, by (dispatch, agent).
async fn first_starts(pool: &PgPool, starts: &[DispatchStart]) -> Result<HashMap<(String, String), Bead>> {
    let col = |f: fn(&DispatchStart) -> String| starts.iter().map(f).collect::<Vec<_>>();
    let at: Vec<_> = starts.iter().map(|s| crate::micros(s.now)).collect();
    let until: Vec<_> = starts.iter().map(|s| crate::micros(crate::micros(s.now) + s.lease)).collect();
    let rows = sqlx::query(&format!(
        "WITH req AS (
           SELECT DISTINCT ON (r.id) r.* FROM UNNEST($1::text[], $2::text[], $3::text[],
             $4::timestamptz[], $5::timestamptz[]) AS r(id, dispatch_id, agent, at, until)
           ORDER BY r.id
         ), locked AS (
           SELECT req.* FROM req CROSS JOIN LATERAL (
             SELECT b.id FROM beads b
             WHERE b.id = req.id AND b.dispatch_id = req.dispatch_id
               AND b.status = 'in_progress' AND b.started_by IS NULL
             FOR UPDATE OF b
           ) x
         ), s AS (
           UPDATE beads b SET started_at = l.at, started_by = l.agent, assignee = l.agent,
             lease_expires_at = l.until, updated_at = l.at, version = b.version + 1
           FROM locked l WHERE b.id = ANY($1) AND b.id = l.id
           RETURNING b.*
         ), ev AS (
           INSERT INTO events (id, kind, source, project_id, entity_id, action, description, data, created_at)
           SELECT gen_random_uuid()::text, 'bead.started', 'store', s.project_id, s.id, 'started',
             format('bead %s started by %s (attempt %s)', s.id, s.started_by, s.attempts),
             jsonb_build_object('dispatch_id', s.dispatch_id, 'attempt', s.attempts, 'agent', s.started_by),
             s.started_at
           FROM s ORDER BY s.id
         )
         SELECT {BEAD_COLS} FROM s b"
    ))
    .bind(col(|s| s.bead_id.to_string()))
    .bind(col(|s| s.dispatch_id.to_string()))
    .bind(col(|s| s.agent_id.clone()))
    .bind(at)
    .bind(until)
    .fetch_all(pool)
    .await?;
    let mut started = HashMap::with_capacity(rows.len());
    for row in &rows {
        let (bead, _) = bead_from_row(row)?;
        let key = (
            bead.dispatch_id.as_ref().map(ToString::to_string).unwrap_or_default(),
            bead.started_by.clone().unwrap_or_default(),
        );
        started.insert(key, bead);
    }
    Ok(started)
}
