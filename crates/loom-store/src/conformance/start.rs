//! Conformance cases: queued versus running dispatches, the start fence, hand-backs and saved
//! positions.

use std::time::Duration;

use chrono::Utc;
use loom_domain::{DispatchId, DispatchState, EventKind, Status};

use super::{bead, claim_req, project};
use crate::{Claim, DispatchResult, DispatchStart, ResultOutcome, StartOutcome, Store};

fn start_of(claim: &Claim, agent: &str, lease: Duration) -> DispatchStart {
    DispatchStart {
        bead_id: claim.bead.id.clone(),
        dispatch_id: claim.dispatch_id.clone(),
        agent_id: agent.into(),
        now: Utc::now(),
        lease,
        max_attempts: 3,
    }
}

/// Starts `claim` as `agent`, expecting the store to say run it.
pub(crate) async fn start(store: &dyn Store, claim: &Claim, agent: &str, lease: Duration) -> loom_domain::Bead {
    match store.start_dispatch(&start_of(claim, agent, lease)).await.unwrap() {
        StartOutcome::Started(b) => b,
        other => panic!("expected Started, got {other:?}"),
    }
}

fn success(claim: &Claim) -> DispatchResult {
    super::dispatch::result(claim, super::dispatch::ok())
}

pub async fn queued_is_not_running(store: &dyn Store) {
    let p = project(store, "queued").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let mut req = claim_req(&p, 1);
    req.lease = Duration::from_secs(1);
    let claim = store.claim_ready(&req).await.unwrap().remove(0);
    let queued = store.get_bead(&a.id).await.unwrap();
    assert_eq!(
        (queued.dispatch_state(), queued.started_at, queued.started_by.as_deref()),
        (Some(DispatchState::Queued), None, None)
    );
    let a_day_later = Utc::now() + chrono::Duration::days(1);
    assert!(store.release_expired_leases(a_day_later, 3, 10).await.unwrap().is_empty(), "queued work waits unswept");
    let running = start(store, &claim, "agent-1", Duration::from_secs(60)).await;
    assert_eq!(running.dispatch_state(), Some(DispatchState::Running));
    assert_eq!(running.started_by.as_deref(), Some("agent-1"));
    assert!(running.started_at.is_some());
    assert!(
        running.lease_expires_at.unwrap() > Utc::now() + chrono::Duration::seconds(50),
        "the lease starts at the start"
    );
    assert_eq!(store.get_bead(&a.id).await.unwrap(), running, "what start returns is what is stored");
    let released = store.release_expired_leases(a_day_later, 3, 10).await.unwrap();
    assert_eq!(released.len(), 1, "a running dispatch without progress is swept");
    assert_eq!(
        (released[0].status, released[0].started_at, released[0].started_by.as_deref()),
        (Status::Open, None, None)
    );
}

pub async fn start_is_fenced_and_idempotent(store: &dyn Store) {
    let p = project(store, "startfence").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let b = bead(store, &p, "b", 1, &[]).await;
    let claims = store.claim_ready(&claim_req(&p, 2)).await.unwrap();
    let (ca, cb) = (&claims[0], &claims[1]);
    assert_eq!((&ca.bead.id, &cb.bead.id), (&a.id, &b.id));
    let mut unknown = start_of(ca, "agent-1", Duration::from_secs(60));
    unknown.dispatch_id = DispatchId::parse("not-a-current-dispatch").unwrap();
    assert_eq!(store.start_dispatch(&unknown).await.unwrap(), StartOutcome::Stale);
    let mut other_bead = start_of(ca, "agent-1", Duration::from_secs(60));
    other_bead.bead_id = b.id.clone();
    assert_eq!(store.start_dispatch(&other_bead).await.unwrap(), StartOutcome::Stale, "a dispatch of another bead");
    let first = start(store, ca, "agent-1", Duration::from_secs(60)).await;
    let again = start(store, ca, "agent-1", Duration::from_secs(120)).await;
    assert_eq!(
        (again.started_at, again.version),
        (first.started_at, first.version),
        "a repeated start changes nothing else"
    );
    assert!(again.lease_expires_at > first.lease_expires_at, "a repeated start renews the lease");
    let events = store.list_events(0, 1000).await.unwrap();
    let starts = events.iter().filter(|e| e.kind == EventKind::BeadStarted && e.entity_id == a.id.as_str()).count();
    assert_eq!(starts, 1, "one bead.started event");
    assert!(matches!(store.record_result(&success(ca)).await.unwrap(), ResultOutcome::Closed(_)));
    assert_eq!(
        store.start_dispatch(&start_of(ca, "agent-1", Duration::from_secs(60))).await.unwrap(),
        StartOutcome::Stale
    );
}

pub async fn a_dispatch_started_elsewhere_is_superseded(store: &dyn Store) {
    let p = project(store, "supersede").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let mut req = claim_req(&p, 1);
    let mut claim = store.claim_ready(&req).await.unwrap().remove(0);
    for attempt in 1..=3 {
        start(store, &claim, "agent-dies", Duration::from_secs(60)).await;
        // The task came back to another agent (the first stopped without settling it).
        let StartOutcome::Superseded(bead) =
            store.start_dispatch(&start_of(&claim, "agent-next", Duration::from_secs(60))).await.unwrap()
        else {
            panic!("expected Superseded");
        };
        assert_eq!((bead.attempts, bead.dispatch_id.as_ref()), (attempt, None), "the attempt counts");
        assert!(bead.last_error.as_deref().unwrap().contains("agent-dies"), "{:?}", bead.last_error);
        assert_eq!(
            store.record_result(&success(&claim)).await.unwrap(),
            ResultOutcome::Ignored,
            "its first run is fenced off"
        );
        if attempt < 3 {
            assert_eq!(bead.status, Status::Open);
            req.now = Utc::now();
            claim = store.claim_ready(&req).await.unwrap().remove(0);
            assert_eq!(claim.attempt, attempt + 1);
        } else {
            assert_eq!(bead.status, Status::Blocked, "the retry budget is spent");
        }
    }
    assert_eq!(store.get_bead(&a.id).await.unwrap().status, Status::Blocked);
}

pub async fn hand_back_gives_the_attempt_back(store: &dyn Store) {
    let p = project(store, "handback").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let req = claim_req(&p, 1);
    for _ in 0..5 {
        let claim = store.claim_ready(&req).await.unwrap().remove(0);
        assert_eq!(claim.attempt, 1, "hand-backs never spend the budget");
        start(store, &claim, "agent-1", Duration::from_secs(60)).await;
        assert_eq!(
            store.hand_back(&claim.dispatch_id, "agent-2", "not mine").await.unwrap(),
            None,
            "only its runner hands it back"
        );
        let bead = store.hand_back(&claim.dispatch_id, "agent-1", "shutting down").await.unwrap().expect("handed back");
        assert_eq!((bead.status, bead.attempts, bead.dispatch_id.as_ref()), (Status::Open, 0, None));
        assert_eq!(
            store.hand_back(&claim.dispatch_id, "agent-1", "again").await.unwrap(),
            None,
            "a repeat changes nothing"
        );
        assert_eq!(store.record_result(&success(&claim)).await.unwrap(), ResultOutcome::Ignored);
    }
    // A queued dispatch (never started) is handed back the same way.
    let claim = store.claim_ready(&req).await.unwrap().remove(0);
    let bead = store.hand_back(&claim.dispatch_id, "agent-3", "draining").await.unwrap().expect("handed back");
    assert_eq!((bead.status, bead.attempts), (Status::Open, 0));
    let claim = store.claim_ready(&req).await.unwrap().remove(0);
    assert!(matches!(store.record_result(&success(&claim)).await.unwrap(), ResultOutcome::Closed(_)));
    assert_eq!(store.get_bead(&a.id).await.unwrap().attempts, 1);
}

pub async fn progress_marks_an_unreported_start(store: &dyn Store) {
    let p = project(store, "oldagent").await;
    bead(store, &p, "a", 1, &[]).await;
    let claim = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    // An agent that reports progress but no start (an older agent) is running all the same.
    assert!(store.extend_lease(&claim.dispatch_id, Utc::now() + chrono::Duration::minutes(1)).await.unwrap());
    let bead = store.get_bead(&claim.bead.id).await.unwrap();
    assert_eq!(bead.dispatch_state(), Some(DispatchState::Running));
    let released = store.release_expired_leases(Utc::now() + chrono::Duration::minutes(5), 3, 10).await.unwrap();
    assert_eq!(released.len(), 1, "and its lease is watched");
}

pub async fn positions_only_advance(store: &dyn Store) {
    assert_eq!(store.position("event-relay").await.unwrap(), 0);
    store.save_position("event-relay", 5).await.unwrap();
    store.save_position("event-relay", 3).await.unwrap();
    assert_eq!(store.position("event-relay").await.unwrap(), 5, "a lower position is ignored");
    store.save_position("event-relay", 9).await.unwrap();
    assert_eq!(store.position("event-relay").await.unwrap(), 9);
    assert_eq!(store.position("other").await.unwrap(), 0);
}

pub async fn concurrent_starts_each_get_their_answer(store: &dyn Store) {
    let p = project(store, "manystarts").await;
    for i in 0..40 {
        bead(store, &p, &format!("b{i}"), 1, &[]).await;
    }
    let claims = store.claim_ready(&claim_req(&p, 40)).await.unwrap();
    assert_eq!(claims.len(), 40);
    // Every claim started at once by its agent, and the first ten also by a rival at the same time.
    let mut reports: Vec<(usize, DispatchStart)> = claims
        .iter()
        .enumerate()
        .map(|(i, c)| (i, start_of(c, &format!("agent-{i}"), Duration::from_secs(60))))
        .collect();
    reports.extend(claims.iter().take(10).enumerate().map(|(i, c)| (i, start_of(c, "rival", Duration::from_secs(60)))));
    let answers = futures::future::join_all(reports.iter().map(|(_, s)| store.start_dispatch(s))).await;
    for (i, claim) in claims.iter().enumerate() {
        let bead = store.get_bead(&claim.bead.id).await.unwrap();
        let mine: Vec<_> = reports
            .iter()
            .zip(&answers)
            .filter(|((j, _), _)| *j == i)
            .map(|((_, s), a)| (s, a.as_ref().unwrap()))
            .collect();
        let started: Vec<_> = mine.iter().filter(|(_, a)| matches!(a, StartOutcome::Started(_))).collect();
        if i >= 10 {
            assert_eq!(started.len(), 1, "bead {i}: {mine:?}");
            assert_eq!(bead.started_by.as_deref(), Some(format!("agent-{i}").as_str()));
            continue;
        }
        // Two agents raced: exactly one ran it, or (the rival second) it was superseded.
        assert!(started.len() <= 1, "bead {i} started twice: {mine:?}");
        match bead.status {
            Status::InProgress => assert_eq!(started.len(), 1),
            Status::Open => assert!(mine.iter().any(|(_, a)| matches!(a, StartOutcome::Superseded(_)))),
            other => panic!("bead {i} is {other}"),
        }
    }
    let events = store.list_events(0, 1000).await.unwrap();
    let starts = events.iter().filter(|e| e.kind == EventKind::BeadStarted).count();
    assert!((40..=50).contains(&starts), "{starts} bead.started events");
}
