//! Conformance cases: the ready set, claims, results, leases and cancellation.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use loom_domain::graph::{self, Graph, Node};
use loom_domain::{Bead, BeadType, DispatchId, NewBead, ProjectStatus, Status};

use super::{bead, claim_req, ids, project};
use crate::{DispatchResult, Error, OutboxKind, Outcome, ResultOutcome, Store};

pub(super) fn result(claim: &crate::Claim, outcome: Outcome) -> DispatchResult {
    DispatchResult {
        bead_id: claim.bead.id.clone(),
        dispatch_id: claim.dispatch_id.clone(),
        agent_id: "agent-1".into(),
        outcome,
        report: crate::Report::default(),
        now: Utc::now(),
        max_attempts: 3,
        retry_backoff: Duration::ZERO,
    }
}

pub(super) fn ok() -> Outcome {
    Outcome::Success
}

pub async fn ready_order_and_rules(store: &dyn Store) {
    let p = project(store, "ready").await;
    let low_old = bead(store, &p, "low old", 3, &[]).await;
    let high = bead(store, &p, "high", 0, &[]).await;
    let low_new = bead(store, &p, "low new", 3, &[]).await;
    let waiting = bead(store, &p, "waits on high", 0, &[&high.id]).await;
    let mut decision = NewBead::new(p.clone(), "decide");
    decision.bead_type = BeadType::Decision;
    store.create_beads(vec![decision]).await.unwrap();
    let mid = bead(store, &p, "mid", 1, &[]).await;
    let ready = store.list_ready(&p, 10, Utc::now()).await.unwrap();
    assert_eq!(ids(&ready), ids(&[high.clone(), mid.clone(), low_old.clone(), low_new.clone()]));
    assert_eq!(store.list_ready(&p, 2, Utc::now()).await.unwrap().len(), 2, "limit");
    store.close_bead(&high.id, "done", None).await.unwrap();
    let ready = store.list_ready(&p, 10, Utc::now()).await.unwrap();
    assert_eq!(ready.first().map(|b| &b.id), Some(&waiting.id), "closing the blocker readies the dependant");
}

pub async fn ready_matches_domain_definition(store: &dyn Store) {
    let p = project(store, "brute").await;
    let mut state = 0x2545_f491_u64;
    let mut next = |n: u64| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut beads = Vec::new();
    let mut g = Graph::new();
    for i in 0..30 {
        let mut nb = NewBead::new(p.clone(), format!("b{i}"));
        nb.priority = loom_domain::Priority::try_from(next(4) as i64).unwrap();
        nb.bead_type = if next(6) == 0 { BeadType::Decision } else { BeadType::Task };
        let b = store.create_beads(vec![nb]).await.unwrap().remove(0);
        for _ in 0..next(3) {
            if beads.is_empty() {
                break;
            }
            let blocker: &loom_domain::Bead = &beads[next(beads.len() as u64) as usize];
            if g.add_edge(b.id.clone(), blocker.id.clone()).is_ok() {
                store.add_dependency(&b.id, &blocker.id).await.unwrap();
            }
        }
        beads.push(b);
    }
    for b in &beads {
        if next(3) == 0 {
            store.close_bead(&b.id, "random", None).await.unwrap();
        }
    }
    let mut nodes = Vec::new();
    for (seq, b) in beads.iter().enumerate() {
        let b = store.get_bead(&b.id).await.unwrap();
        nodes.push(Node {
            id: b.id.clone(),
            status: b.status,
            bead_type: b.bead_type,
            priority: b.priority,
            seq: seq as u64,
        });
    }
    let want: Vec<String> = graph::ready(&nodes, &g).iter().map(|id| id.to_string()).collect();
    assert_eq!(ids(&store.list_ready(&p, 100, Utc::now()).await.unwrap()), want);
}

pub async fn claim_assigns_lease_outbox_and_event(store: &dyn Store) {
    let p = project(store, "claim").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let mut nb = NewBead::new(p.clone(), "b");
    nb.priority = loom_domain::Priority::try_from(0).unwrap();
    nb.description = "with \"quotes\" and\na newline".into();
    nb.context.insert("role".into(), "coder".into());
    let b = store.create_beads(vec![nb]).await.unwrap().remove(0);
    bead(store, &p, "c", 2, &[&a.id]).await;
    let req = claim_req(&p, 5);
    let claims = store.claim_ready(&req).await.unwrap();
    assert_eq!(claims.iter().map(|c| c.bead.id.clone()).collect::<Vec<_>>(), vec![b.id.clone(), a.id.clone()]);
    for c in &claims {
        let got = store.get_bead(&c.bead.id).await.unwrap();
        assert_eq!(got.status, Status::InProgress);
        assert_eq!(got.dispatch_id.as_ref(), Some(&c.dispatch_id));
        assert_eq!((got.attempts, c.attempt, got.version), (1, 1, 2));
        assert_eq!(got.assignee.as_deref(), Some("test"));
        assert!(got.lease_expires_at.unwrap() > Utc::now() + chrono::Duration::seconds(50));
    }
    assert_ne!(claims[0].dispatch_id, claims[1].dispatch_id);
    let outbox = store.take_outbox(10).await.unwrap();
    assert_eq!(outbox.len(), 2);
    assert!(outbox.iter().all(|m| m.kind == OutboxKind::TaskAssigned));
    assert_eq!(outbox[0].dispatch_id, claims[0].dispatch_id);
    assert_eq!(outbox[0].payload["title"], "b");
    assert_eq!(outbox[0].payload["priority"], 0);
    for (row, c) in outbox.iter().zip(&claims) {
        let snapshot: crate::TaskSnapshot = serde_json::from_value(row.payload.clone()).unwrap();
        assert_eq!(snapshot, crate::TaskSnapshot::of(&c.bead), "the outbox carries the claimed bead");
        assert_eq!((row.id, row.bead_id.clone(), row.attempt), (c.outbox_id, c.bead.id.clone(), 1));
        assert_eq!(store.get_bead(&c.bead.id).await.unwrap(), c.bead, "a claim returns the bead as stored");
    }
    let events = store.list_events(0, 100).await.unwrap();
    let dispatched: Vec<_> = events.iter().filter(|e| e.kind == loom_domain::EventKind::BeadDispatched).collect();
    assert_eq!(dispatched.len(), 2);
    let first = dispatched.iter().find(|e| e.entity_id == b.id.as_str()).expect("b's dispatched event");
    assert_eq!(first.description, format!("bead {} dispatched (attempt 1)", b.id));
    assert_eq!((first.action.as_str(), first.source.as_str()), ("dispatched", "store"));
    assert_eq!(first.project_id.as_ref(), Some(&p));
    assert_eq!(first.data["dispatch_id"], claims[0].dispatch_id.as_str());
    assert_eq!(first.data["attempt"], 1);
    assert!(first.data["lease_expires_at"].as_str().is_some_and(|t| t.parse::<chrono::DateTime<Utc>>().is_ok()));
    assert!(store.claim_ready(&req).await.unwrap().is_empty(), "nothing else is ready");
}

pub async fn create_and_claim_takes_the_best_ready_beads(store: &dyn Store) {
    let p = project(store, "batch").await;
    let older = bead(store, &p, "older", 2, &[]).await;
    let new = |title: &str, priority: i64| {
        let mut b = NewBead::new(p.clone(), title);
        b.priority = loom_domain::Priority::try_from(priority).unwrap();
        b
    };
    let (created, claims) =
        store.create_and_claim(vec![new("a", 1), new("b", 3), new("c", 2)], &claim_req(&p, 2)).await.unwrap();
    assert_eq!(created.iter().map(|b| b.title.as_str()).collect::<Vec<_>>(), ["a", "b", "c"], "in request order");
    // The project's best two: the most urgent new bead, then the older of the two P2s.
    let claimed: Vec<Bead> = claims.iter().map(|c| c.bead.clone()).collect();
    assert_eq!(ids(&claimed), ids(&[created[0].clone(), older.clone()]));
    for c in &claims {
        assert_eq!(store.get_bead(&c.bead.id).await.unwrap(), c.bead, "a claim returns the bead as stored");
        assert_eq!((c.bead.status, c.attempt), (Status::InProgress, 1));
    }
    let outbox = store.take_outbox(10).await.unwrap();
    let sent: Vec<_> = outbox.iter().map(|o| (o.id, o.bead_id.clone())).collect();
    assert_eq!(sent, claims.iter().map(|c| (c.outbox_id, c.bead.id.clone())).collect::<Vec<_>>(), "one task each");
    for b in &created[1..] {
        assert_eq!(store.get_bead(&b.id).await.unwrap().status, Status::Open, "{} waits for a slot", b.title);
    }

    // A batch naming a project that does not exist writes nothing, claims nothing.
    let missing = loom_domain::ProjectId::parse("nowhere").unwrap();
    let err =
        store.create_and_claim(vec![new("d", 0), NewBead::new(missing, "lost")], &claim_req(&p, 2)).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    let open = store.list_ready(&p, 100, Utc::now()).await.unwrap();
    assert_eq!(ids(&open), ids(&[created[2].clone(), created[1].clone()]), "nothing written, nothing claimed");
}

pub async fn create_claimed_only_when_nothing_else_is_ready(store: &dyn Store) {
    use loom_domain::EventKind;
    let p = project(store, "fast").await;
    let mut nb = NewBead::new(p.clone(), "first");
    nb.priority = loom_domain::Priority::try_from(1).unwrap();
    nb.description = "with \"quotes\" and\na newline".into();
    nb.context.insert("role".into(), "coder".into());
    let crate::CreatedBead::Claimed(c) = store.create_claimed(nb, &claim_req(&p, 1)).await.unwrap() else {
        panic!("a ready bead in an idle project is claimed at create");
    };
    assert_eq!(store.get_bead(&c.bead.id).await.unwrap(), c.bead, "the claim returns the bead as stored");
    assert_eq!((c.bead.status, c.bead.attempts, c.attempt, c.bead.version), (Status::InProgress, 1, 1, 2));
    assert_eq!((c.bead.dispatch_id.as_ref(), c.bead.assignee.as_deref()), (Some(&c.dispatch_id), Some("test")));
    assert!(c.lease_expires_at > Utc::now() + chrono::Duration::seconds(50));
    assert_eq!(c.bead.lease_expires_at, Some(c.lease_expires_at));
    let outbox = store.take_outbox(10).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        (outbox[0].id, outbox[0].kind, &outbox[0].dispatch_id),
        (c.outbox_id, OutboxKind::TaskAssigned, &c.dispatch_id)
    );
    let snapshot: crate::TaskSnapshot = serde_json::from_value(outbox[0].payload.clone()).unwrap();
    assert_eq!(snapshot, crate::TaskSnapshot::of(&c.bead), "the outbox carries the claimed bead");
    let events: Vec<_> =
        store.list_events(0, 100).await.unwrap().into_iter().filter(|e| e.entity_id == c.bead.id.as_str()).collect();
    assert_eq!(
        events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::BeadCreated, EventKind::BeadDispatched]
    );
    assert_eq!(events[0].description, format!("bead {} created: first", c.bead.id));
    assert_eq!((events[0].data["title"].as_str(), events[0].data["priority"].as_i64()), (Some("first"), Some(1)));
    assert_eq!(events[1].description, format!("bead {} dispatched (attempt 1)", c.bead.id));
    assert_eq!(
        (events[1].data["dispatch_id"].as_str(), events[1].data["attempt"].as_i64()),
        (Some(c.dispatch_id.as_str()), Some(1))
    );
    assert!(events[1].data["lease_expires_at"].as_str().is_some_and(|t| t.parse::<chrono::DateTime<Utc>>().is_ok()));

    // Another bead is ready (waiting for room): the new one, though more urgent, waits its turn.
    let waiting = bead(store, &p, "waiting", 3, &[]).await;
    let mut urgent = NewBead::new(p.clone(), "urgent");
    urgent.priority = loom_domain::Priority::try_from(0).unwrap();
    let created = store.create_claimed(urgent, &claim_req(&p, 1)).await.unwrap();
    let crate::CreatedBead::Open(urgent) = created else { panic!("claimed past a ready bead: {created:?}") };
    assert_eq!(store.get_bead(&urgent.id).await.unwrap(), urgent);
    assert_eq!(urgent.status, Status::Open);
    let claims = store.claim_ready(&claim_req(&p, 10)).await.unwrap();
    assert_eq!(claims.iter().map(|c| c.bead.id.clone()).collect::<Vec<_>>(), vec![urgent.id.clone(), waiting.id]);

    // Not claimable by itself: a blocker, a decision, no room asked for, a paused project.
    let mut blocked = NewBead::new(p.clone(), "blocked");
    blocked.blocked_by = vec![urgent.id.clone()];
    let mut decision = NewBead::new(p.clone(), "decide");
    decision.bead_type = BeadType::Decision;
    for (nb, max) in [(blocked, 1), (decision, 1), (NewBead::new(p.clone(), "no room"), 0)] {
        let title = nb.title.clone();
        let created = store.create_claimed(nb, &claim_req(&p, max)).await.unwrap();
        assert!(matches!(&created, crate::CreatedBead::Open(b) if b.status == Status::Open), "{title}: {created:?}");
    }
    let paused = project(store, "fast-paused").await;
    let mut update = loom_domain::NewProject::new(paused.clone(), "/tmp/repo");
    update.status = ProjectStatus::Paused;
    store.update_project(update).await.unwrap();
    let created = store.create_claimed(NewBead::new(paused.clone(), "later"), &claim_req(&paused, 1)).await.unwrap();
    assert!(matches!(created, crate::CreatedBead::Open(_)), "a paused project's bead is not claimed");

    // Bad requests change nothing.
    let before = store.bead_counts(None).await.unwrap();
    let other = store.create_claimed(NewBead::new(p.clone(), "x"), &claim_req(&paused, 1)).await.unwrap_err();
    assert!(matches!(other, Error::Domain(_)), "a claim for another project: {other}");
    let ghost = loom_domain::ProjectId::parse("ghost").unwrap();
    let missing = store.create_claimed(NewBead::new(ghost.clone(), "x"), &claim_req(&ghost, 1)).await.unwrap_err();
    assert!(matches!(missing, Error::NotFound { .. }), "{missing}");
    assert_eq!(store.bead_counts(None).await.unwrap(), before);
    assert_eq!(store.take_outbox(10).await.unwrap().len(), 3, "only first, urgent and waiting were claimed");
}

pub async fn claim_by_hand(store: &dyn Store) {
    let p = project(store, "hand").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let blocker = bead(store, &p, "blocker", 1, &[]).await;
    let waits = bead(store, &p, "waits", 1, &[&blocker.id]).await;
    let lease = Duration::from_secs(60);
    let claimed = store.claim_bead(&a.id, "alice", lease).await.unwrap();
    assert_eq!((claimed.status, claimed.assignee.as_deref(), claimed.attempts), (Status::InProgress, Some("alice"), 1));
    assert!(claimed.dispatch_id.is_some());
    assert!(claimed.lease_expires_at.unwrap() > Utc::now() + chrono::Duration::seconds(50));
    assert_eq!(store.get_bead(&a.id).await.unwrap(), claimed, "claim returns the bead as stored");
    assert!(store.take_outbox(10).await.unwrap().is_empty(), "no task is published for a claim by hand");
    let event = store.list_events(0, 100).await.unwrap().into_iter().last().unwrap();
    assert_eq!(
        (event.kind, event.data["claimed_by"].as_str()),
        (loom_domain::EventKind::BeadDispatched, Some("alice"))
    );
    let again = store.claim_bead(&a.id, "bob", lease).await.unwrap_err();
    assert!(matches!(&again, Error::Conflict(m) if m.contains("in_progress")), "{again}");
    let blocked = store.claim_bead(&waits.id, "bob", lease).await.unwrap_err();
    assert!(matches!(&blocked, Error::Conflict(m) if m.contains(blocker.id.as_str())), "{blocked}");
    assert!(matches!(store.claim_bead(&blocker.id, " ", lease).await, Err(Error::Domain(_))), "a claimer is required");
    let ghost = loom_domain::BeadId::parse("hand-zzzz").unwrap();
    assert!(matches!(store.claim_bead(&ghost, "bob", lease).await, Err(Error::NotFound { .. })));
    let ready = store.claim_ready(&claim_req(&p, 10)).await.unwrap();
    assert_eq!(ready.iter().map(|c| c.bead.id.clone()).collect::<Vec<_>>(), vec![blocker.id], "a is taken");
    let closed = store.close_bead(&a.id, "done by alice", None).await.unwrap();
    assert_eq!(closed.status, Status::Closed);
    assert!(matches!(store.claim_bead(&a.id, "bob", lease).await, Err(Error::Conflict(_))));
}

pub async fn claim_skips_paused_projects(store: &dyn Store) {
    let p = project(store, "paused").await;
    bead(store, &p, "a", 1, &[]).await;
    let mut update = loom_domain::NewProject::new(p.clone(), "/tmp/repo");
    update.status = ProjectStatus::Paused;
    store.update_project(update.clone()).await.unwrap();
    assert!(store.claim_ready(&claim_req(&p, 5)).await.unwrap().is_empty());
    update.status = ProjectStatus::Active;
    store.update_project(update).await.unwrap();
    assert_eq!(store.claim_ready(&claim_req(&p, 5)).await.unwrap().len(), 1, "resume hands out queued work");
}

pub async fn concurrent_claims_never_overlap(store: &dyn Store) {
    let p = project(store, "race").await;
    let new: Vec<NewBead> = (0..60).map(|i| NewBead::new(p.clone(), format!("b{i}"))).collect();
    store.create_beads(new).await.unwrap();
    // Six claimers interleave on one task; each claim is its own transaction on its own connection.
    let claimers = (0..6).map(|_| async {
        let mut got = Vec::new();
        loop {
            let claims = store.claim_ready(&claim_req(&p, 4)).await.unwrap();
            if claims.is_empty() {
                break got;
            }
            got.extend(claims.into_iter().map(|c| c.bead.id));
            tokio::task::yield_now().await;
        }
    });
    let all: Vec<_> = futures::future::join_all(claimers).await.into_iter().flatten().collect();
    let unique: BTreeSet<_> = all.iter().collect();
    assert_eq!((all.len(), unique.len()), (60, 60), "every bead claimed exactly once");
}

pub async fn result_success_closes_and_unblocks(store: &dyn Store) {
    let p = project(store, "succ").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let b = bead(store, &p, "b", 1, &[&a.id]).await;
    let claim = store.claim_ready(&claim_req(&p, 5)).await.unwrap().remove(0);
    assert_eq!(claim.bead.id, a.id);
    match store.record_result(&result(&claim, ok())).await.unwrap() {
        ResultOutcome::Closed(bead) => {
            assert_eq!(
                (bead.status, bead.dispatch_id, bead.close_reason.as_deref()),
                (Status::Closed, None, Some("completed"))
            )
        }
        other => panic!("expected Closed, got {other:?}"),
    }
    let next = store.claim_ready(&claim_req(&p, 5)).await.unwrap();
    assert_eq!(next.iter().map(|c| c.bead.id.clone()).collect::<Vec<_>>(), vec![b.id], "dependant is ready now");
}

pub async fn result_repeated_or_stale_is_ignored(store: &dyn Store) {
    let p = project(store, "dup").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let claim = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    let first = store.record_result(&result(&claim, ok())).await.unwrap();
    let closed = store.get_bead(&a.id).await.unwrap();
    assert!(matches!(first, ResultOutcome::Closed(_)));
    assert_eq!(store.record_result(&result(&claim, ok())).await.unwrap(), ResultOutcome::Ignored);
    let failure = result(&claim, Outcome::Failure { error: "late failure".into() });
    assert_eq!(store.record_result(&failure).await.unwrap(), ResultOutcome::Ignored);
    let mut forged = result(&claim, ok());
    forged.dispatch_id = DispatchId::parse("not-the-current-one").unwrap();
    assert_eq!(store.record_result(&forged).await.unwrap(), ResultOutcome::Ignored);
    assert_eq!(store.get_bead(&a.id).await.unwrap(), closed, "repeated results change nothing");
    let closes = store
        .list_events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == loom_domain::EventKind::BeadClosed)
        .count();
    assert_eq!(closes, 1, "closed exactly once");
}

pub async fn results_batch_applies_in_order(store: &dyn Store) {
    let p = project(store, "batch").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let b = bead(store, &p, "b", 1, &[]).await;
    let c = bead(store, &p, "c", 1, &[]).await;
    let waits = bead(store, &p, "waits on a", 1, &[&a.id]).await;
    let claims = store.claim_ready(&claim_req(&p, 3)).await.unwrap();
    let by_id = |id: &loom_domain::BeadId| claims.iter().find(|c| &c.bead.id == id).unwrap();
    let (ca, cb, cc) = (by_id(&a.id), by_id(&b.id), by_id(&c.id));
    let mut stale = result(cc, ok());
    stale.dispatch_id = DispatchId::parse("stale-dispatch").unwrap();
    let mut gone = result(cc, ok());
    gone.bead_id = loom_domain::BeadId::parse("batch-999999").unwrap();
    let batch = vec![
        result(ca, ok()),
        result(cb, Outcome::Failure { error: "boom".into() }),
        result(ca, Outcome::Failure { error: "a repeat later in the batch".into() }),
        stale,
        gone,
    ];
    let outcomes = store.record_results(&batch).await.unwrap();
    let labels: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            ResultOutcome::Closed(_) => "closed",
            ResultOutcome::Retrying(_) => "retrying",
            ResultOutcome::Blocked(_) => "blocked",
            ResultOutcome::Ignored => "ignored",
        })
        .collect();
    assert_eq!(labels, ["closed", "retrying", "ignored", "ignored", "ignored"], "one outcome per result, in order");
    assert_eq!(store.get_bead(&a.id).await.unwrap().status, Status::Closed);
    let got_b = store.get_bead(&b.id).await.unwrap();
    assert_eq!((got_b.status, got_b.last_error.as_deref()), (Status::Open, Some("boom")));
    assert_eq!(store.get_bead(&c.id).await.unwrap().status, Status::InProgress, "a stale result changes nothing");
    let ready = store.list_ready(&p, 10, Utc::now()).await.unwrap();
    assert!(ready.iter().any(|x| x.id == waits.id), "closing a in a batch readies its dependant");
    let again = store.record_results(&batch[..2]).await.unwrap();
    assert_eq!(again, vec![ResultOutcome::Ignored, ResultOutcome::Ignored], "a repeated batch is a no-op");
    assert!(store.record_results(&[]).await.unwrap().is_empty());
    let closes = store
        .list_events(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == loom_domain::EventKind::BeadClosed && e.entity_id == a.id.as_str())
        .count();
    assert_eq!(closes, 1, "one close event for a");
}

pub async fn result_failure_retries_then_blocks(store: &dyn Store) {
    let p = project(store, "fail").await;
    let a = bead(store, &p, "flaky", 1, &[]).await;
    let first = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    assert_eq!(first.attempt, 1);
    let mut r = result(&first, Outcome::Failure { error: "boom 1".into() });
    r.retry_backoff = Duration::from_secs(3600);
    let ResultOutcome::Retrying(bead) = store.record_result(&r).await.unwrap() else { panic!("expected Retrying") };
    assert_eq!((bead.status, bead.last_error.as_deref()), (Status::Open, Some("boom 1")));
    assert!(store.list_ready(&p, 10, Utc::now()).await.unwrap().is_empty(), "backing off");
    let later = Utc::now() + chrono::Duration::hours(2);
    assert_eq!(store.list_ready(&p, 10, later).await.unwrap().len(), 1, "ready after the backoff");

    let mut req = claim_req(&p, 1);
    req.now = later;
    let second = store.claim_ready(&req).await.unwrap().remove(0);
    assert_eq!(second.attempt, 2);
    let r = result(&second, Outcome::Failure { error: "boom 2".into() });
    assert!(matches!(store.record_result(&r).await.unwrap(), ResultOutcome::Retrying(_)));

    req.now = later + chrono::Duration::seconds(1);
    let third = store.claim_ready(&req).await.unwrap().remove(0);
    assert_eq!(third.attempt, 3);
    let r = result(&third, Outcome::Failure { error: "boom 3".into() });
    let ResultOutcome::Blocked(bead) = store.record_result(&r).await.unwrap() else { panic!("expected Blocked") };
    assert_eq!((bead.status, bead.attempts, bead.last_error.as_deref()), (Status::Blocked, 3, Some("boom 3")));
    req.now = later + chrono::Duration::hours(1);
    assert!(store.claim_ready(&req).await.unwrap().is_empty(), "blocked beads are not dispatched");
    let unblocked = store.reopen_bead(&a.id, None).await.unwrap();
    assert_eq!((unblocked.status, unblocked.attempts), (Status::Open, 0), "unblocking restores the budget");
}

pub async fn expired_leases_are_redispatched_with_new_dispatch(store: &dyn Store) {
    let p = project(store, "lease").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let mut req = claim_req(&p, 1);
    req.lease = Duration::from_secs(1);
    let old = store.claim_ready(&req).await.unwrap().remove(0);
    let long_after = Utc::now() + chrono::Duration::hours(1);
    assert!(
        store.release_expired_leases(long_after, 3, 10).await.unwrap().is_empty(),
        "a queued dispatch (no agent started it) has no lease clock"
    );
    super::start::start(store, &old, "agent-1", Duration::from_secs(1)).await;
    assert!(store.release_expired_leases(Utc::now() - chrono::Duration::seconds(10), 3, 10).await.unwrap().is_empty());
    let later = Utc::now() + chrono::Duration::seconds(5);
    let released = store.release_expired_leases(later, 3, 10).await.unwrap();
    assert_eq!(ids(&released), vec![a.id.to_string()]);
    assert_eq!((released[0].status, released[0].dispatch_id.as_ref()), (Status::Open, None));
    assert!(released[0].last_error.as_deref().unwrap().contains("lease expired"));
    req.now = later;
    let new = store.claim_ready(&req).await.unwrap().remove(0);
    assert_ne!(new.dispatch_id, old.dispatch_id, "a redispatch gets a new fencing token");
    assert_eq!(new.attempt, 2);
    assert_eq!(
        store.record_result(&result(&old, ok())).await.unwrap(),
        ResultOutcome::Ignored,
        "old agent is fenced off"
    );
    assert!(matches!(store.record_result(&result(&new, ok())).await.unwrap(), ResultOutcome::Closed(_)));
}

pub async fn extend_lease_only_for_current_dispatch(store: &dyn Store) {
    let p = project(store, "extend").await;
    bead(store, &p, "a", 1, &[]).await;
    let claim = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    let until = Utc::now() + chrono::Duration::minutes(30);
    assert!(store.extend_lease(&claim.dispatch_id, until).await.unwrap());
    let got = store.get_bead(&claim.bead.id).await.unwrap();
    assert!((got.lease_expires_at.unwrap() - until).num_milliseconds().abs() < 5);
    assert!(store.release_expired_leases(Utc::now() + chrono::Duration::minutes(5), 3, 10).await.unwrap().is_empty());
    assert!(!store.extend_lease(&DispatchId::parse("stale").unwrap(), until).await.unwrap());
    store.record_result(&result(&claim, ok())).await.unwrap();
    assert!(!store.extend_lease(&claim.dispatch_id, until).await.unwrap(), "finished dispatches cannot be extended");
}

pub async fn close_running_bead_cancels_task(store: &dyn Store) {
    let p = project(store, "cancel").await;
    bead(store, &p, "a", 1, &[]).await;
    let claim = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    let sent: Vec<i64> = store.take_outbox(10).await.unwrap().iter().map(|m| m.id).collect();
    store.mark_outbox_sent(&sent).await.unwrap();
    let closed = store.close_bead(&claim.bead.id, "not needed", None).await.unwrap();
    assert_eq!((closed.status, closed.dispatch_id), (Status::Closed, None));
    let outbox = store.take_outbox(10).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!((outbox[0].kind, &outbox[0].dispatch_id), (OutboxKind::TaskCancelled, &claim.dispatch_id));
    assert_eq!(outbox[0].payload["reason"], "not needed");
    assert_eq!(store.record_result(&result(&claim, ok())).await.unwrap(), ResultOutcome::Ignored);
}

pub async fn block_dispatch_blocks_current_only(store: &dyn Store) {
    let p = project(store, "dlq").await;
    bead(store, &p, "a", 1, &[]).await;
    let claim = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    assert_eq!(store.block_dispatch(&DispatchId::parse("other").unwrap(), "dead letter").await.unwrap(), None);
    let blocked = store.block_dispatch(&claim.dispatch_id, "dead-lettered after 5 deliveries").await.unwrap().unwrap();
    assert_eq!(
        (blocked.status, blocked.last_error.as_deref()),
        (Status::Blocked, Some("dead-lettered after 5 deliveries"))
    );
    assert_eq!(store.block_dispatch(&claim.dispatch_id, "again").await.unwrap(), None, "idempotent");
}

pub async fn redispatch_by_hand_cancels_and_requeues(store: &dyn Store) {
    let p = project(store, "redo").await;
    let a = bead(store, &p, "a", 1, &[]).await;
    let first = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    let sent: Vec<i64> = store.take_outbox(10).await.unwrap().iter().map(|m| m.id).collect();
    store.mark_outbox_sent(&sent).await.unwrap();
    let current = store.get_bead(&a.id).await.unwrap();
    let patch = crate::BeadPatch { status: Some(Status::Open), ..crate::BeadPatch::default() };
    let reopened = store.update_bead(&a.id, current.version, patch).await.unwrap();
    assert_eq!((reopened.status, reopened.dispatch_id), (Status::Open, None));
    let outbox = store.take_outbox(10).await.unwrap();
    assert_eq!((outbox.len(), outbox[0].kind), (1, OutboxKind::TaskCancelled));
    let second = store.claim_ready(&claim_req(&p, 1)).await.unwrap().remove(0);
    assert_ne!(second.dispatch_id, first.dispatch_id);
    assert_eq!(store.record_result(&result(&first, ok())).await.unwrap(), ResultOutcome::Ignored);
}
