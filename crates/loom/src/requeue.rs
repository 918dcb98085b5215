//! `loom up` on the embedded bus: that bus lives in memory, so at start it holds no task, and
//! every bead left dispatched by the previous run (queued or running) would otherwise wait for a
//! lease that never starts or lapses late. They are handed back at once, attempts not counted,
//! and dispatched again under new ids. Claims by hand (a person works on them, no task) stay.

use loom_domain::{Bead, Status};
use loom_store::{BeadFilter, PageRequest, Store};

/// Hands back every dispatched bead of the store; returns how many.
pub async fn lost_dispatches(store: &dyn Store) -> anyhow::Result<usize> {
    let filter = BeadFilter { status: Some(Status::InProgress), ..BeadFilter::default() };
    let mut lost = Vec::new();
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    loop {
        let got = store.list_beads(&filter, &page).await?;
        lost.extend(got.beads.into_iter().filter(dispatched_to_an_agent));
        match got.next_cursor {
            Some(c) => page.after = Some(c),
            None => break,
        }
    }
    let mut requeued = 0;
    for bead in lost {
        let Some(dispatch) = &bead.dispatch_id else { continue };
        let agent = bead.started_by.clone().unwrap_or_default();
        let reason = "loom up restarted on the embedded bus, whose queue did not survive";
        if store.hand_back(dispatch, &agent, reason).await?.is_some() {
            requeued += 1;
        }
    }
    Ok(requeued)
}

/// A claim by hand has a dispatch id of its own kind; every other dispatch is a task for an agent.
fn dispatched_to_an_agent(bead: &Bead) -> bool {
    bead.dispatch_id.as_ref().is_some_and(|d| !loom_store::is_claim_by_hand(d))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use loom_domain::{NewBead, NewProject, ProjectId};
    use loom_store::{ClaimRequest, DispatchStart, SqliteStore, StartOutcome};

    use super::*;

    #[tokio::test]
    async fn queued_and_running_dispatches_are_handed_back_and_claims_by_hand_stay() {
        let store = SqliteStore::in_memory().await.unwrap();
        let p = ProjectId::parse("up").unwrap();
        store.create_project(NewProject::new(p.clone(), "/tmp/repo")).await.unwrap();
        let beads: Vec<_> = ["queued", "running", "by hand"].iter().map(|t| NewBead::new(p.clone(), *t)).collect();
        let beads = store.create_beads(beads).await.unwrap();
        let by_hand = store.claim_bead(&beads[2].id, "alice", Duration::from_secs(600)).await.unwrap();
        let request =
            ClaimRequest { project: p, max: 2, now: Utc::now(), lease: Duration::from_secs(600), claimer: "cp".into() };
        let claims = store.claim_ready(&request).await.unwrap();
        let start = DispatchStart {
            bead_id: claims[1].bead.id.clone(),
            dispatch_id: claims[1].dispatch_id.clone(),
            agent_id: "agent-1".into(),
            now: Utc::now(),
            lease: Duration::from_secs(600),
            max_attempts: 3,
        };
        assert!(matches!(store.start_dispatch(&start).await.unwrap(), StartOutcome::Started(_)));
        assert_eq!(lost_dispatches(&store).await.unwrap(), 2);
        for claim in &claims {
            let b = store.get_bead(&claim.bead.id).await.unwrap();
            assert_eq!((b.status, b.attempts, b.dispatch_id), (Status::Open, 0, None), "{}", b.title);
        }
        assert_eq!(store.get_bead(&by_hand.id).await.unwrap(), by_hand, "a claim by hand is left alone");
        assert_eq!(lost_dispatches(&store).await.unwrap(), 0, "nothing left to hand back");
    }
}
