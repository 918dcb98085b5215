//! `loom up` on the embedded bus: that bus lives in memory, so at start it holds no task, and
//! every bead left dispatched by the previous run (queued or running) would otherwise wait for a
//! lease that never starts or lapses late. They are handed back at once, attempts not counted,
//! and dispatched again under new ids. Claims by hand (a person works on them, no task) stay.

use loom_control_plane::{Dispatches, hand_back_dispatches};
use loom_store::Store;

/// Hands back every dispatched bead of the store; returns how many.
pub async fn lost_dispatches(store: &dyn Store) -> anyhow::Result<usize> {
    let reason = "loom up restarted on the embedded bus, whose queue did not survive";
    Ok(hand_back_dispatches(store, Dispatches::All, "loom up", reason).await?)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::Utc;
    use loom_control_plane::{Dispatches, hand_back_dispatches};
    use loom_domain::{NewBead, NewProject, ProjectId, Status};
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
        let claims = claim_two_and_start_the_second(&store, p).await;
        assert_eq!(lost_dispatches(&store).await.unwrap(), 2);
        for claim in &claims {
            let b = store.get_bead(&claim.bead.id).await.unwrap();
            assert_eq!((b.status, b.attempts, b.dispatch_id), (Status::Open, 0, None), "{}", b.title);
        }
        assert_eq!(store.get_bead(&by_hand.id).await.unwrap(), by_hand, "a claim by hand is left alone");
        assert_eq!(lost_dispatches(&store).await.unwrap(), 0, "nothing left to hand back");
    }

    #[tokio::test]
    async fn a_queued_hand_back_leaves_started_dispatches_to_their_agents() {
        let store = SqliteStore::in_memory().await.unwrap();
        let p = ProjectId::parse("lost").unwrap();
        store.create_project(NewProject::new(p.clone(), "/tmp/repo")).await.unwrap();
        let beads: Vec<_> = ["queued", "running"].iter().map(|t| NewBead::new(p.clone(), *t)).collect();
        store.create_beads(beads).await.unwrap();
        let claims = claim_two_and_start_the_second(&store, p).await;
        let handed = hand_back_dispatches(&store, Dispatches::Queued, "cp", "the tasks stream lost messages");
        assert_eq!(handed.await.unwrap(), 1);
        let queued = store.get_bead(&claims[0].bead.id).await.unwrap();
        assert_eq!((queued.status, queued.attempts, queued.dispatch_id), (Status::Open, 0, None));
        let running = store.get_bead(&claims[1].bead.id).await.unwrap();
        assert_eq!(running.status, Status::InProgress);
        assert_eq!(running.dispatch_id.as_ref(), Some(&claims[1].dispatch_id), "the agent that started it runs it");
        // The race the store closes: a dispatch listed as queued and started before its
        // hand-back is not handed back.
        assert!(store.hand_back(&claims[1].dispatch_id, "cp", "late").await.unwrap().is_none());
    }

    /// Claims the project's two best ready beads; an agent starts the second.
    async fn claim_two_and_start_the_second(store: &SqliteStore, p: ProjectId) -> Vec<loom_store::Claim> {
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
        claims
    }
}
