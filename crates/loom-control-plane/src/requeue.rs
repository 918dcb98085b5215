//! Handing back dispatches whose task the bus no longer holds: at `loom up` on the embedded bus
//! (it starts empty) every dispatch to an agent, and after a JetStream stream lost stored
//! messages (see [`loom_bus::Bus::repair_consumers`]) the queued ones. They are open again at
//! once, attempts not counted, and are dispatched again under new ids. Claims by hand (a person
//! works on them, no task) stay.

use loom_domain::{Bead, Status};
use loom_store::{BeadFilter, PageRequest, Store};

/// Which dispatches [`hand_back_dispatches`] hands back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dispatches {
    /// Only those no agent has started. The hand-back is refused, in the bead's own
    /// transaction, for a dispatch an agent starts meanwhile: an agent that started one runs it.
    Queued,
    /// Queued and running ones (nothing on the bus survived, nor did any agent's delivery).
    All,
}

/// Hands back the `which` dispatches of every project, naming `by` and `reason` in the bead's
/// event; returns how many were handed back.
pub async fn hand_back_dispatches(
    store: &dyn Store,
    which: Dispatches,
    by: &str,
    reason: &str,
) -> Result<usize, loom_store::Error> {
    let filter = BeadFilter { status: Some(Status::InProgress), ..BeadFilter::default() };
    let mut found = Vec::new();
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    loop {
        let got = store.list_beads(&filter, &page).await?;
        found.extend(
            got.beads
                .into_iter()
                .filter(dispatched_to_an_agent)
                .filter(|b| which == Dispatches::All || b.started_by.is_none()),
        );
        match got.next_cursor {
            Some(c) => page.after = Some(c),
            None => break,
        }
    }
    let mut handed_back = 0;
    for bead in found {
        let Some(dispatch) = &bead.dispatch_id else { continue };
        // A queued hand-back names `by`, which no agent is: the store refuses it for a
        // dispatch started since it was listed.
        let agent = match which {
            Dispatches::Queued => by.to_owned(),
            Dispatches::All => bead.started_by.clone().unwrap_or_else(|| by.to_owned()),
        };
        if store.hand_back(dispatch, &agent, reason).await?.is_some() {
            handed_back += 1;
        }
    }
    Ok(handed_back)
}

/// A claim by hand has a dispatch id of its own kind; every other dispatch is a task for an agent.
fn dispatched_to_an_agent(bead: &Bead) -> bool {
    bead.dispatch_id.as_ref().is_some_and(|d| !loom_store::is_claim_by_hand(d))
}
