//! Delivery on ordinary bad days, end to end (control plane + real agents + PostgreSQL + NATS):
//! a backlog behind one slot, a task slower than its lease, PostgreSQL stopped, nats-server
//! restarted, agents restarted or killed, a control plane killed, and bad values. Each test
//! checks what a user would see (statuses, attempts, events) and the side-effect log of the
//! beads' commands: no bead lost, none blocked for a reason that is not true, none run twice
//! under one dispatch.

use std::time::{Duration, Instant};

use loom_domain::{BeadId, DispatchId, DispatchState, Status};
use serde_json::json;

use crate::system::{Own, System, fast_control_plane};

const LONG: Duration = Duration::from_secs(90);

/// Waits until `probe` holds (polling), or panics with `what` after `timeout`.
async fn until<F, Fut>(timeout: Duration, what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every bead closed on its first attempt, none ever blocked, each command run exactly once.
async fn each_closed_once(s: &System, beads: &[loom_domain::Bead], expected: usize) {
    assert_eq!(beads.len(), expected, "every bead is there");
    for b in beads {
        assert_eq!((b.status, b.attempts), (Status::Closed, 1), "{} {:?} {:?}", b.id, b.status, b.last_error);
    }
    assert!(s.blocked_events().await.is_empty(), "no bead was ever blocked");
    let runs = s.side_effects();
    for b in beads {
        assert_eq!(runs.get(b.id.as_str()).map(Vec::len), Some(1), "{} ran once: {runs:?}", b.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_behind_one_slot_waits_queued_and_runs_once_in_priority_order() {
    let mut config = fast_control_plane();
    config.lease = Duration::from_secs(1);
    let s = System::start(Own::default(), config).await;
    // Twenty tasks, each slower than the lease, behind one agent slot.
    let mut backlog = Vec::new();
    for i in 0..20 {
        backlog.push(s.bead(&format!("slow {i}"), 2, "sleep 1.3").await);
    }
    let agent = s.agent("backlog-agent", 1);
    until(Duration::from_secs(20), "the first task to start", || async { !s.side_effects().is_empty() }).await;
    let urgent = s.bead("urgent", 0, "true").await;
    let mut most_in_progress = 0;
    let deadline = Instant::now() + LONG;
    loop {
        let beads = s.beads().await;
        let in_progress = beads.iter().filter(|b| b.status == Status::InProgress).count();
        most_in_progress = most_in_progress.max(in_progress);
        if beads.iter().all(|b| b.status == Status::Closed) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert!(most_in_progress <= 1, "dispatch follows the one slot: {most_in_progress} in progress at once");
    let beads = s.beads().await;
    each_closed_once(&s, &beads, 21).await;
    let order = s.run_order();
    assert_eq!(order.get(1), Some(&urgent), "the P0 created behind the backlog ran next: {order:?}");
    assert_eq!(order[0], backlog[0]);
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_ten_seconds_blocks_nothing_and_reruns_nothing() {
    let mut s = System::start(Own { postgres: true, nats: false }, fast_control_plane()).await;
    for i in 0..4 {
        s.bead(&format!("job {i}"), 1, "sleep 4").await;
    }
    let agent = s.agent("pg-agent", 2);
    until(Duration::from_secs(20), "two tasks to start", || async { s.side_effects().len() == 2 }).await;
    // Results and progress arrive while the database is gone.
    s.pg.as_mut().unwrap().stop_immediate().await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    s.pg.as_mut().unwrap().start_again().await.unwrap();
    let beads = s.all_closed(LONG).await;
    each_closed_once(&s, &beads, 4).await;
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restarted_while_tasks_finish_reruns_nothing() {
    let mut s = System::start(Own { postgres: false, nats: true }, fast_control_plane()).await;
    for i in 0..4 {
        s.bead(&format!("job {i}"), 1, "sleep 2").await;
    }
    let agent = s.agent("nats-agent", 2);
    until(Duration::from_secs(20), "two tasks to start", || async { s.side_effects().len() == 2 }).await;
    // The running tasks finish while the server is down: their results wait in the agent.
    let nats = s.nats.as_mut().unwrap();
    nats.stop().await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    nats.start_again().await.unwrap();
    let beads = s.all_closed(LONG).await;
    each_closed_once(&s, &beads, 4).await;
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_stream_that_lost_its_messages_dispatches_its_queued_beads_again() {
    // Dispatch does not wait for agents here, so beads can be queued with none running.
    let config = loom_control_plane::Config { follow_agent_capacity: false, ..fast_control_plane() };
    let mut s = System::start(Own { postgres: false, nats: true }, config).await;
    let version = s.nats.as_ref().unwrap().version();
    // One bead through an agent: the agents' consumer has delivered past sequence 0.
    s.bead("first", 1, "true").await;
    let agent = s.agent("lossy-agent", 1);
    s.all_closed(LONG).await;
    agent.stop().await;
    // Four beads queued, nobody to run them: their tasks wait in LOOM_TASKS.
    for i in 0..4 {
        s.bead(&format!("queued {i}"), 1, "true").await;
    }
    until(Duration::from_secs(20), "four tasks queued on the bus", || async {
        s.bus.stream_messages(loom_bus::StreamKind::Tasks).await.ok() == Some(4)
    })
    .await;
    let tasks = s.bus.subjects().names().stream(loom_bus::StreamKind::Tasks);
    s.nats.as_mut().unwrap().lose_stream_messages(&tasks).await.unwrap();
    if !version.starts_with("v2.9.") {
        // 2.10+ resets a consumer past its stream's end by itself, so nothing shows the loss
        // (a known gap: the tasks of queued beads are not checked against the stream).
        eprintln!("skipped: nats-server {version} hides a stream's lost messages from its consumers");
        s.stop().await;
        return;
    }
    let agent = s.agent("lossy-agent", 1);
    let beads = s.all_closed(LONG).await;
    each_closed_once(&s, &beads, 5).await;
    let events = s.store.list_events(0, 1000).await.unwrap();
    let lost =
        |e: &&loom_domain::Event| e.data["reason"].as_str().is_some_and(|r| r.contains("lost its stored messages"));
    let handed_back = events.iter().filter(lost).count();
    assert_eq!(handed_back, 4, "the four queued beads were handed back, with the reason");
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_graceful_agent_restarts_during_one_long_task_spend_no_budget() {
    let s = System::start(Own::default(), fast_control_plane()).await;
    let id = s.bead("long", 1, "sleep 2").await;
    for restart in 1..=5 {
        let mut config = s.agent_config("restarting-agent", 1);
        config.shutdown_grace = Duration::from_millis(100);
        let agent = crate::support::Agent::start(config, &s.bus);
        until(Duration::from_secs(20), "the task to run", || async {
            s.side_effects().values().map(Vec::len).sum::<usize>() == restart
        })
        .await;
        agent.stop().await;
        let bead = s.store.get_bead(&BeadId::parse(&id).unwrap()).await.unwrap();
        // Handed back with the attempt given back (it may be dispatched again already, queued).
        assert!(bead.attempts <= 1, "restart {restart}: attempts {}", bead.attempts);
        assert_ne!(bead.dispatch_state(), Some(DispatchState::Running), "nobody runs it now");
    }
    let agent = s.agent("restarting-agent", 1);
    let beads = s.all_closed(LONG).await;
    assert_eq!((beads[0].status, beads[0].attempts), (Status::Closed, 1), "the retry budget (3) is unspent");
    let runs = s.side_effects();
    let dispatches = &runs[&id];
    assert_eq!(dispatches.len(), 6, "five hand-backs and the run that finished: {dispatches:?}");
    let distinct: std::collections::BTreeSet<_> = dispatches.iter().collect();
    assert_eq!(distinct.len(), 6, "each run under a dispatch of its own");
    assert!(s.blocked_events().await.is_empty());
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_task_is_superseded_and_its_late_result_ignored() {
    let s = System::start(Own::default(), fast_control_plane()).await;
    let id = s.bead("interrupted", 1, "sleep 4").await;
    let mut first = s.agent_config("dies", 1);
    first.work_root = s.repo.dir.path().join("work-dies");
    let dead = crate::support::Agent::start(first, &s.bus);
    until(Duration::from_secs(20), "the first run to start", || async { !s.side_effects().is_empty() }).await;
    let first_dispatch = s.side_effects()[&id][0].clone();
    dead.handle.abort();
    let _ = dead.handle.await;
    // Another host takes the redelivery: the dispatch the dead agent started is not run again.
    let mut second = s.agent_config("lives", 1);
    second.work_root = s.repo.dir.path().join("work-lives");
    let live = crate::support::Agent::start(second, &s.bus);
    let beads = s.all_closed(LONG).await;
    assert_eq!((beads[0].status, beads[0].attempts), (Status::Closed, 2), "{:?}", beads[0].last_error);
    let runs = &s.side_effects()[&id];
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[0], first_dispatch);
    assert_ne!(runs[1], first_dispatch, "the second run is a new dispatch");
    // The first run's result, arriving late, changes nothing.
    let bead = &beads[0];
    let late = loom_store::DispatchResult {
        bead_id: bead.id.clone(),
        dispatch_id: DispatchId::parse(&first_dispatch).unwrap(),
        agent_id: "dies".into(),
        outcome: loom_store::Outcome::Failure { error: "late".into() },
        report: loom_store::Report::default(),
        now: chrono::Utc::now(),
        max_attempts: 3,
        retry_backoff: Duration::ZERO,
    };
    assert_eq!(s.store.record_result(&late).await.unwrap(), loom_store::ResultOutcome::Ignored);
    let closes = s.store.list_events(0, 1000).await.unwrap();
    let closes = closes.iter().filter(|e| e.kind == loom_domain::EventKind::BeadClosed).count();
    assert_eq!(closes, 1, "closed exactly once");
    live.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_refused_and_an_unpublishable_task_blocks_its_bead() {
    let s = System::start(Own::default(), fast_control_plane()).await;
    let bad = [
        json!({ "role": "QA" }),
        json!({ "executor": "bash" }),
        json!({ "notes": "x".repeat(60 * 1024), "more": "y".repeat(60 * 1024), "again": "z".repeat(60 * 1024),
                "and": "w".repeat(60 * 1024), "last": "v".repeat(60 * 1024) }),
    ];
    for context in bad {
        let body = json!({ "project_id": "deliver", "title": "bad", "context": context });
        let (status, v) = s.call(reqwest::Method::POST, "/api/v1/beads", Some(body)).await;
        assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("context"), "the error names the field: {v}");
    }
    // A description that only grows past the message limit once escaped as JSON: the request
    // itself is over the API's body limit.
    let escaped = "\u{1}".repeat(200 * 1024);
    let body = json!({ "project_id": "deliver", "title": "huge", "description": escaped });
    let (status, v) = s.call(reqwest::Method::POST, "/api/v1/beads", Some(body)).await;
    assert_eq!(status, reqwest::StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(s.beads().await.is_empty(), "nothing was created");
    // The same bead written to the store directly (an older API, another writer) is claimed, then
    // blocked with the reason instead of staying in progress.
    let agent = s.agent("idle-agent", 1);
    let mut new = loom_domain::NewBead::new(s.project.clone(), "huge");
    new.description = escaped;
    let id = s.store.create_beads(vec![new]).await.unwrap().remove(0).id;
    until(LONG, "the bead to be blocked", || async {
        s.store.get_bead(&id).await.is_ok_and(|b| b.status == Status::Blocked)
    })
    .await;
    let bead = s.store.get_bead(&id).await.unwrap();
    assert!(bead.last_error.as_deref().unwrap().contains("cannot be published"), "{:?}", bead.last_error);
    // The relay blocks the bead first, then forgets the row (a crash in between publishes nothing
    // and blocks again): the outbox empties right after.
    until(LONG, "the outbox not to be stuck on it", || async {
        s.store.take_outbox(100).await.is_ok_and(|rows| rows.is_empty())
    })
    .await;
    agent.stop().await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_killed_mid_burst_still_relays_every_event() {
    let mut s = System::start(Own::default(), fast_control_plane()).await;
    let agent = s.agent("burst-agent", 4);
    // A burst from another writer (a second control plane's API, say) straight to the store, while
    // the dispatching control plane is killed and started again.
    let (store, project) = (s.store.clone(), s.project.clone());
    let burst = tokio::spawn(async move {
        for i in 0..30 {
            let mut bead = loom_domain::NewBead::new(project.clone(), format!("burst {i}"));
            bead.context.insert("executor".into(), "noop".into());
            store.create_beads(vec![bead]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.kill_control_plane().await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.restart_control_plane().await;
    burst.await.unwrap();
    let beads = s.all_closed(LONG).await;
    assert_eq!(beads.len(), 30);
    let open: Vec<_> = beads
        .iter()
        .filter(|b| b.status != Status::Closed)
        .map(|b| {
            (b.id.as_str(), b.status, b.dispatch_state(), b.started_by.as_deref(), b.attempts, b.last_error.as_deref())
        })
        .collect();
    assert!(open.is_empty(), "every bead closed: {open:?}");
    let mut events = Vec::new();
    loop {
        let page = s.store.list_events(events.last().map_or(0, |e: &loom_domain::Event| e.seq), 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        events.extend(page);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let relayed: std::collections::BTreeSet<String> =
            s.bus.read_event_ids(1, 100_000).await.unwrap().into_iter().map(|(_, id)| id).collect();
        let missing: Vec<_> = events.iter().filter(|e| !relayed.contains(&e.id)).map(|e| &e.description).collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "events the bus never got: {missing:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    agent.stop().await;
    s.stop().await;
}
