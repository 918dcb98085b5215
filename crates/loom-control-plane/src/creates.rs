//! Group commit of API creates. A bead created through `POST /beads` that is not claimed at once
//! (the project has no free slot, or the bead waits on others) is queued here; concurrent creates
//! are written together, a batch at a time, with one `create_beads` call — one transaction and one
//! commit on PostgreSQL, one RPC through the database service — and while a batch commits the
//! next one fills. At low load a batch is one bead: nothing waits for a window to close.
//!
//! What a client is told still holds: each caller gets its bead (and its `201`) only after the
//! transaction that wrote it committed. `create_beads` is all or none, so a batch refused because
//! of one bead's values (a missing blocker, an id that exists) wrote nothing, and each bead is then
//! created alone, getting its own answer. A batch that failed for any other reason (the store
//! unreachable, an unknown outcome) is not retried: every caller gets the error, as a create of
//! its own would have, so no bead is written twice. Beads of one batch get consecutive `seq`s in
//! the order their requests arrived, so creation order — the ready order among equal priorities —
//! is the order clients were answered in.

use std::sync::{Arc, OnceLock};

use loom_domain::{Bead, NewBead};
use loom_store::{Error, Store};
use tokio::sync::{mpsc, oneshot};

/// Most beads written by one call.
const BATCH: usize = 128;

/// The queue of plain creates (started with the first).
#[derive(Debug, Default)]
pub(crate) struct Creates {
    queue: OnceLock<mpsc::Sender<Pending>>,
}

#[derive(Debug)]
struct Pending {
    bead: NewBead,
    reply: oneshot::Sender<Result<Bead, Error>>,
}

impl Creates {
    /// Creates `bead`, together with any other creates under way.
    pub(crate) async fn create(&self, store: &Arc<dyn Store>, bead: NewBead) -> Result<Bead, Error> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * BATCH);
            tokio::spawn(apply(store.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(pending)) = queue.send(Pending { bead, reply }).await {
            return alone(store, pending.bead).await;
        }
        // The writer is gone only when its runtime shuts down; then nothing was written for us.
        answer.await.unwrap_or_else(|_| Err(Error::Unavailable("the control plane is shutting down".into())))
    }
}

async fn alone(store: &Arc<dyn Store>, bead: NewBead) -> Result<Bead, Error> {
    store.create_beads(vec![bead]).await?.pop().ok_or_else(|| Error::Internal("a create returned no bead".into()))
}

/// Writes queued creates in batches until every sender is gone.
async fn apply(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        metrics::histogram!("loom_create_batch_size").record(batch.len() as f64);
        if batch.len() == 1 {
            let p = batch.pop().expect("one pending create");
            let _ = p.reply.send(alone(&store, p.bead).await);
            continue;
        }
        let beads: Vec<NewBead> = batch.iter().map(|p| p.bead.clone()).collect();
        match store.create_beads(beads).await {
            Ok(created) if created.len() == batch.len() => {
                for (p, bead) in batch.into_iter().zip(created) {
                    let _ = p.reply.send(Ok(bead));
                }
            }
            Ok(created) => {
                let e = format!("a batch of {} creates returned {} beads", batch.len(), created.len());
                for p in batch {
                    let _ = p.reply.send(Err(Error::Internal(e.clone())));
                }
            }
            // Refused for a bead's values: nothing was written; each on its own, for its answer.
            Err(e) if refused(&e) => {
                for p in batch {
                    let _ = p.reply.send(alone(&store, p.bead).await);
                }
            }
            Err(e) => {
                let message = e.to_string();
                for p in batch {
                    let _ = p.reply.send(Err(copy(&e, &message)));
                }
            }
        }
    }
}

/// Whether the store refused the input (so certainly wrote nothing), rather than failing.
fn refused(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound { .. }
            | Error::AlreadyExists { .. }
            | Error::Domain(_)
            | Error::MissingBlocker { .. }
            | Error::Conflict(_)
            | Error::VersionConflict { .. }
    )
}

/// The same failure for another caller of the batch (the store's errors are not `Clone`).
fn copy(e: &Error, message: &str) -> Error {
    match e {
        Error::Unavailable(m) => Error::Unavailable(m.clone()),
        _ => Error::Internal(message.to_owned()),
    }
}
