//! Group commit of API creates. Concurrent `POST /beads` are written together, a batch at a
//! time — one transaction and one commit on PostgreSQL, one RPC through the database service —
//! and while a batch commits the next one fills. At low load a batch is one bead: nothing waits
//! for a window to close.
//!
//! A create that reserved a slot of its project (this instance dispatches and the project has
//! room, `dispatcher::create`) also claims: alone, with `create_claimed` (one statement: created
//! and, when nothing else in its project is ready, claimed); in a batch, with `create_and_claim`,
//! which claims as many of the project's best ready beads as the batch reserved slots, in the
//! batch's own transaction. Each claim goes back to a caller to hand to the publisher — a new
//! bead's to its own caller, after it remembered the bead's trace; an older bead's to the batch's
//! first caller that reserved a slot. A claim whose caller has gone is published by the relay.
//!
//! What a client is told still holds: each caller gets its bead (and its `201`) only after the
//! transaction that wrote it committed. `create_beads` is all or none, so a batch refused because
//! of one bead's values (a missing blocker, an id that exists) wrote nothing, and each bead is then
//! created alone, getting its own answer. A batch that failed for any other reason (the store
//! unreachable, an unknown outcome) is not retried: every caller gets the error, as a create of
//! its own would have, so no bead is written twice. Beads of one project in one batch get
//! consecutive `seq`s in the order their requests arrived, so creation order — the ready order
//! among equal priorities — is the order clients were answered in.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use loom_domain::{Bead, BeadId, NewBead, ProjectId};
use loom_store::{Claim, ClaimRequest, CreatedBead, Error, Store};
use tokio::sync::{mpsc, oneshot};

/// Most beads written by one call.
const BATCH: usize = 128;

/// The queue of API creates (started with the first).
#[derive(Debug, Default)]
pub(crate) struct Creates {
    queue: OnceLock<mpsc::Sender<Pending>>,
}

#[derive(Debug)]
struct Pending {
    bead: NewBead,
    /// The claim this create may make (it reserved a slot for it), `max` 1.
    claim: Option<ClaimRequest>,
    reply: oneshot::Sender<Result<Created, Error>>,
}

/// What a create came to.
#[derive(Debug)]
pub(crate) struct Created {
    /// The bead as stored when the caller is answered: `in_progress` if it was claimed.
    pub bead: Bead,
    /// Whether the slot this create reserved holds a claimed bead now: this one, or an older
    /// ready bead of its project that went first.
    pub slot_used: bool,
    /// Claims for the caller to hand to the publisher (this bead's, and older beads' claimed by
    /// its batch).
    pub claims: Vec<Claim>,
}

impl Created {
    fn open(bead: Bead) -> Created {
        Created { bead, slot_used: false, claims: Vec::new() }
    }

    /// Whether the bead itself was claimed.
    pub(crate) fn claimed(&self) -> bool {
        self.claims.iter().any(|c| c.bead.id == self.bead.id)
    }
}

impl Creates {
    /// Creates `bead`, together with any other creates under way; with `claim`, also claims
    /// (see the module doc).
    pub(crate) async fn create(
        &self,
        store: &Arc<dyn Store>,
        bead: NewBead,
        claim: Option<ClaimRequest>,
    ) -> Result<Created, Error> {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::channel(4 * BATCH);
            tokio::spawn(apply(store.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        if let Err(mpsc::error::SendError(pending)) = queue.send(Pending { bead, claim, reply }).await {
            return alone(store, pending.bead, pending.claim).await;
        }
        // The writer is gone only when its runtime shuts down; then nothing was written for us.
        answer.await.unwrap_or_else(|_| Err(Error::Unavailable("the control plane is shutting down".into())))
    }
}

/// One create on its own: `create_claimed` when it may claim, else `create_beads`.
async fn alone(store: &Arc<dyn Store>, bead: NewBead, claim: Option<ClaimRequest>) -> Result<Created, Error> {
    let Some(request) = claim else {
        let bead = store.create_beads(vec![bead]).await?.pop();
        return bead.map(Created::open).ok_or_else(|| Error::Internal("a create returned no bead".into()));
    };
    match store.create_claimed(bead, &request).await? {
        CreatedBead::Claimed(claim) => Ok(Created { bead: claim.bead.clone(), slot_used: true, claims: vec![claim] }),
        CreatedBead::Open(bead) => Ok(Created::open(bead)),
    }
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
        // A claim is of one project: a batch is written project by project, each in arrival order.
        let mut groups: Vec<(ProjectId, Vec<Pending>)> = Vec::new();
        for p in batch {
            match groups.iter_mut().find(|(project, _)| *project == p.bead.project_id) {
                Some((_, group)) => group.push(p),
                None => groups.push((p.bead.project_id.clone(), vec![p])),
            }
        }
        for (_, group) in groups {
            write(&store, group).await;
        }
    }
}

/// Writes one project's creates of a batch and answers each caller.
async fn write(store: &Arc<dyn Store>, mut group: Vec<Pending>) {
    if group.len() == 1 {
        let p = group.pop().expect("one pending create");
        let _ = p.reply.send(alone(store, p.bead, p.claim).await);
        return;
    }
    let beads: Vec<NewBead> = group.iter().map(|p| p.bead.clone()).collect();
    let reserved = group.iter().filter(|p| p.claim.is_some()).count() as u32;
    let written = match group.iter().find_map(|p| p.claim.clone()) {
        Some(request) => store.create_and_claim(beads, &ClaimRequest { max: reserved, ..request }).await,
        None => store.create_beads(beads).await.map(|created| (created, Vec::new())),
    };
    match written {
        Ok((created, claims)) if created.len() == group.len() => {
            let mut free = claims.len();
            let mut claimed: HashMap<BeadId, Claim> = claims.into_iter().map(|c| (c.bead.id.clone(), c)).collect();
            let mut answers: Vec<Created> = created
                .into_iter()
                .zip(&group)
                .map(|(bead, p)| {
                    let slot_used = p.claim.is_some() && free > 0;
                    free -= usize::from(slot_used);
                    match claimed.remove(&bead.id) {
                        Some(claim) => Created { bead: claim.bead.clone(), slot_used, claims: vec![claim] },
                        None => Created { bead, slot_used, claims: Vec::new() },
                    }
                })
                .collect();
            // Older beads the batch claimed go with the first caller that reserved a slot.
            if let Some(first) = group.iter().position(|p| p.claim.is_some()) {
                answers[first].claims.extend(claimed.into_values());
            }
            for (p, created) in group.into_iter().zip(answers) {
                let _ = p.reply.send(Ok(created));
            }
        }
        Ok((created, _)) => {
            let e = format!("a batch of {} creates returned {} beads", group.len(), created.len());
            for p in group {
                let _ = p.reply.send(Err(Error::Internal(e.clone())));
            }
        }
        // Refused for a bead's values: nothing was written; each on its own, for its answer.
        Err(e) if refused(&e) => {
            for p in group {
                let _ = p.reply.send(alone(store, p.bead, p.claim).await);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for p in group {
                let _ = p.reply.send(Err(copy(&e, &message)));
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
