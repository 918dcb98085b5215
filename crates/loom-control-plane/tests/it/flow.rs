//! Beads flow through the control plane and a test agent on real PostgreSQL and NATS.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::{Behaviour, Cluster, ControlPlane, TestAgent, fast_config, result_for};

fn succeed(_: &str) -> Behaviour {
    Behaviour::Succeed
}

const WAIT: Duration = Duration::from_secs(20);

fn closed(v: &serde_json::Value) -> bool {
    v["status"] == "closed"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_chain_runs_in_order() {
    let c = Cluster::start(fast_config()).await;
    c.project("chain").await;
    let agent = TestAgent::start(&c.bus, "chain", succeed).await;
    let a = c.bead("chain", "first", 2, &[]).await;
    let b = c.bead("chain", "second", 0, &[&a]).await;
    let d = c.bead("chain", "third", 0, &[&b]).await;
    let last = c.wait_bead(&d, WAIT, closed).await;
    assert_eq!(last["status"], "closed", "{last}");
    assert_eq!(last["close_reason"], "completed");
    assert_eq!(agent.ran(), ["first", "second", "third"], "blockers run before their dependants");
    agent.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_are_respected() {
    let c = Cluster::start(fast_config()).await;
    c.project("prio").await;
    c.post("/api/v1/projects/prio/pause", json!({})).await;
    let mut ids = Vec::new();
    for (title, p) in [("p3", 3), ("p1", 1), ("p0", 0), ("p2", 2), ("p0-later", 0)] {
        ids.push(c.bead("prio", title, p, &[]).await);
    }
    let agent = TestAgent::start(&c.bus, "prio", succeed).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(agent.ran().is_empty(), "a paused project dispatches nothing");
    c.post("/api/v1/projects/prio/resume", json!({})).await;
    for id in &ids {
        assert!(closed(&c.wait_bead(id, WAIT, closed).await));
    }
    assert_eq!(agent.ran(), ["p0", "p0-later", "p1", "p2", "p3"], "priority first, then age");
    agent.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_bead_is_retried_then_blocked_with_its_reason() {
    let c = Cluster::start(fast_config()).await;
    c.project("flaky").await;
    let agent = TestAgent::start(&c.bus, "flaky", |_| Behaviour::Fail).await;
    let id = c.bead("flaky", "always fails", 1, &[]).await;
    let v = c.wait_bead(&id, WAIT, |v| v["status"] == "blocked").await;
    assert_eq!(v["status"], "blocked", "{v}");
    assert_eq!(v["attempts"], 3);
    assert_eq!(v["last_error"], "always fails failed on purpose");
    assert_eq!(agent.ran().len(), 3, "three attempts, then no more");
    agent.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agents_bead_is_redispatched_after_its_lease() {
    let mut config = fast_config();
    config.lease = Duration::from_secs(2);
    let c = Cluster::start(config).await;
    c.project("lease").await;
    let dead = TestAgent::start(&c.bus, "lease", |_| Behaviour::Vanish).await;
    let id = c.bead("lease", "job", 1, &[]).await;
    let taken = c.wait_bead(&id, WAIT, |v| v["status"] == "in_progress").await;
    let first_dispatch = taken["dispatch_id"].clone();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(dead.ran(), ["job"]);
    dead.stop().await;
    let live = TestAgent::start(&c.bus, "lease", succeed).await;
    let v = c.wait_bead(&id, WAIT, closed).await;
    assert_eq!(v["status"], "closed", "{v}");
    assert_eq!(v["attempts"], 2, "redispatched once, under a new dispatch id");
    assert_ne!(v["dispatch_id"], first_dispatch);
    let events = c.get("/api/v1/events?limit=1000").await;
    let closes = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "bead.closed" && e["entity_id"] == id.as_str())
        .count();
    assert_eq!(closes, 1, "closed exactly once");
    live.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_result_changes_nothing() {
    let c = Cluster::start(fast_config()).await;
    c.project("dup").await;
    let _slots = c.advertise("dup", 1).await;
    let project = loom_domain::ProjectId::parse("dup").unwrap();
    let mut tasks = c
        .bus
        .consume_tasks(&project, None, loom_bus::ConsumeOptions { max_in_flight: 1, prefetch: false })
        .await
        .unwrap();
    let id = c.bead("dup", "once", 1, &[]).await;
    let task = tokio::time::timeout(WAIT, tasks.next()).await.unwrap().unwrap();
    let agent = loom_domain::AgentId::parse("agent-x").unwrap();
    let result = result_for(&task.message, &agent, true);
    c.bus.publish(c.bus.result(&result, &Default::default()).unwrap()).await.unwrap();
    task.delivery.ack().await.unwrap();
    let first = c.wait_bead(&id, WAIT, closed).await;
    // The same result again, under another message id so the bus does not deduplicate it.
    let original = c.bus.result(&result, &Default::default()).unwrap();
    let again = loom_bus::Outgoing::raw(
        original.subject(),
        format!("{}:replay", original.msg_id()),
        serde_json::to_vec(&result).unwrap(),
    );
    c.bus.publish(again).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = c.get(&format!("/api/v1/beads/{id}")).await;
    assert_eq!(after["version"], first["version"], "a repeated result changes nothing");
    assert_eq!(after["updated_at"], first["updated_at"]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_control_plane_takes_over_dispatch() {
    let mut c = Cluster::start(fast_config()).await;
    c.project("ha").await;
    let agent = TestAgent::start(&c.bus, "ha", succeed).await;
    let id = c.bead("ha", "before", 1, &[]).await;
    assert!(closed(&c.wait_bead(&id, WAIT, closed).await));
    let mut second = ControlPlane::start(fast_config(), c.store.clone(), c.bus.clone()).await;
    c.cp.stop().await;
    let url = std::mem::replace(&mut c.cp.url, second.url.clone());
    let id = c.bead("ha", "after", 1, &[]).await;
    let v = c.wait_bead(&id, Duration::from_secs(15), closed).await;
    assert_eq!(v["status"], "closed", "the second control plane dispatched it: {v}");
    assert_ne!(url, second.url);
    second.stop().await;
    agent.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bead_created_through_another_instance_is_dispatched_at_once() {
    // Sweeps so rare that only a wake can explain a prompt dispatch.
    let mut config = fast_config();
    config.sweep_interval = Duration::from_secs(60);
    let mut c = Cluster::start(config.clone()).await;
    c.project("two").await;
    let agent = TestAgent::start(&c.bus, "two", succeed).await;
    let first = c.bead("two", "through the leader", 1, &[]).await;
    assert!(closed(&c.wait_bead(&first, WAIT, closed).await), "the first instance dispatches");
    config.instance = format!("{}-other", config.instance);
    let mut other = ControlPlane::start(config, c.store.clone(), c.bus.clone()).await;
    let leader_url = std::mem::replace(&mut c.cp.url, other.url.clone());
    let id = c.bead("two", "through the other", 1, &[]).await;
    let v = c.wait_bead(&id, Duration::from_secs(5), closed).await;
    assert_eq!(v["status"], "closed", "dispatched well before the next sweep: {v}");
    c.cp.url = leader_url;
    other.stop().await;
    agent.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_claimed_but_never_published_is_relayed_from_the_outbox() {
    let mut c = Cluster::start(fast_config()).await;
    c.project("orphan").await;
    c.cp.stop().await;
    // What a control plane leaves behind when it dies between its claim and its publish.
    let project = loom_domain::ProjectId::parse("orphan").unwrap();
    let bead = loom_domain::NewBead::new(project.clone(), "claimed by a process that died");
    let id = c.store.create_beads(vec![bead]).await.unwrap().remove(0).id;
    let request = loom_store::ClaimRequest {
        project,
        max: 1,
        now: chrono::Utc::now(),
        lease: Duration::from_secs(60),
        claimer: "a-dead-control-plane".into(),
    };
    let claim = c.store.claim_ready(&request).await.unwrap().remove(0);
    assert_eq!(claim.bead.id, id);
    let agent = TestAgent::start(&c.bus, "orphan", succeed).await;
    c.cp = ControlPlane::start(fast_config(), c.store.clone(), c.bus.clone()).await;
    let v = c.wait_bead(id.as_str(), WAIT, closed).await;
    assert_eq!(v["status"], "closed", "the relay published the orphaned task: {v}");
    assert_eq!(v["attempts"], 1, "under the original dispatch, not a redispatch after the lease");
    assert_eq!(agent.ran(), ["claimed by a process that died"]);
    agent.stop().await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let c = Cluster::start(fast_config()).await;
    c.project("bad").await;
    let cases = [
        (json!({ "project_id": "bad", "title": "x", "priority": 9 }), StatusCode::BAD_REQUEST, "priority"),
        (json!({ "project_id": "Bad!", "title": "x" }), StatusCode::BAD_REQUEST, "project id"),
        (json!({ "project_id": "bad", "title": "" }), StatusCode::BAD_REQUEST, "title"),
        (json!({ "project_id": "bad", "title": "x", "prio": 1 }), StatusCode::BAD_REQUEST, "unknown field"),
        (
            json!({ "project_id": "bad", "title": "x", "blocked_by": ["bad-zzz"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "no such bead",
        ),
        (json!({ "project_id": "nope", "title": "x" }), StatusCode::NOT_FOUND, "project nope not found"),
        (
            json!({ "project_id": "bad", "title": "x", "description": "d".repeat(300 * 1024) }),
            StatusCode::BAD_REQUEST,
            "256 KiB",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, v) = c.call(Method::POST, "/api/v1/beads", Some(body)).await;
        assert_eq!(got, status, "{v}");
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{needle:?} not in {message:?}");
    }
    let (got, v) = c
        .call(
            Method::POST,
            "/api/v1/beads",
            Some(json!({ "project_id": "bad", "title": "x", "description": "d".repeat(600 * 1024) })),
        )
        .await;
    assert_eq!(got, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let a = c.bead("bad", "a", 1, &[]).await;
    let b = c.bead("bad", "b", 1, &[&a]).await;
    let (got, v) =
        c.call(Method::POST, &format!("/api/v1/beads/{a}/dependencies"), Some(json!({ "blocker": b }))).await;
    assert_eq!((got, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("cycle")), "{v}");
    let (got, v) =
        c.call(Method::PATCH, &format!("/api/v1/beads/{a}"), Some(json!({ "version": 99, "title": "t" }))).await;
    assert_eq!((got, v["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("version_conflict")), "{v}");
    let (got, _) = c.call(Method::GET, "/api/v1/beads/not an id", None).await;
    assert_eq!(got, StatusCode::BAD_REQUEST);
    let page = c.get("/api/v1/beads?project_id=bad").await;
    assert_eq!(page["beads"].as_array().unwrap().len(), 2, "refused requests created nothing");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_claims_a_bead_and_closes_it() {
    let c = Cluster::start(fast_config()).await;
    c.project("hand").await;
    // Paused, so the dispatcher leaves the bead for the person.
    c.post("/api/v1/projects/hand/pause", json!({})).await;
    let id = c.bead("hand", "fix it myself", 1, &[]).await;
    let later = c.bead("hand", "after", 1, &[&id]).await;
    let path = format!("/api/v1/beads/{id}/claim");
    for (body, needle) in [
        (json!({ "agent_id": "ana", "lease_secs": 0 }), "lease_secs"),
        (json!({ "agent_id": "" }), "claimer"),
        (json!({ "lease_secs": 60 }), "agent_id"),
    ] {
        let (got, v) = c.call(Method::POST, &path, Some(body)).await;
        assert_eq!(got, StatusCode::BAD_REQUEST, "{v}");
        assert!(v["error"]["message"].as_str().unwrap_or_default().contains(needle), "{needle:?}: {v}");
    }
    let (got, v) =
        c.call(Method::POST, &format!("/api/v1/beads/{later}/claim"), Some(json!({ "agent_id": "ana" }))).await;
    assert_eq!(got, StatusCode::CONFLICT, "a bead waiting on an open blocker cannot be claimed: {v}");
    let claimed = c.post(&path, json!({ "agent_id": "ana", "lease_secs": 120 })).await;
    assert_eq!(
        (claimed["status"].as_str(), claimed["assignee"].as_str()),
        (Some("in_progress"), Some("ana")),
        "{claimed}"
    );
    let (got, v) = c.call(Method::POST, &path, Some(json!({ "assignee": "bo" }))).await;
    assert_eq!(got, StatusCode::CONFLICT, "claimed twice: {v}");
    // Renewing the lease: only under the claim's dispatch id.
    let lease = format!("/api/v1/beads/{id}/lease");
    let dispatch = claimed["dispatch_id"].as_str().unwrap();
    let renewed = c.post(&lease, json!({ "dispatch_id": dispatch, "lease_secs": 3600 })).await;
    let until = |v: &serde_json::Value| {
        v["lease_expires_at"].as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap()
    };
    assert!(until(&renewed) > until(&claimed) + chrono::Duration::seconds(3000), "{claimed} then {renewed}");
    let other = "0190a2c4-0000-7000-8000-000000000000";
    let (got, v) = c.call(Method::POST, &lease, Some(json!({ "dispatch_id": other }))).await;
    assert_eq!(got, StatusCode::CONFLICT, "another dispatch's lease: {v}");
    let (got, v) = c.call(Method::POST, &lease, Some(json!({ "dispatch_id": dispatch, "lease_secs": 0 }))).await;
    assert_eq!(got, StatusCode::BAD_REQUEST, "{v}");
    let closed = c.post(&format!("/api/v1/beads/{id}/close"), json!({ "reason": "fixed by ana" })).await;
    assert_eq!((closed["status"].as_str(), closed["close_reason"].as_str()), (Some("closed"), Some("fixed by ana")));
    let (got, v) = c.call(Method::POST, &lease, Some(json!({ "dispatch_id": dispatch }))).await;
    assert_eq!(got, StatusCode::CONFLICT, "a closed bead's lease: {v}");
    let ready = c.get("/api/v1/ready?project_id=hand").await;
    assert_eq!(ready[0]["id"].as_str(), Some(later.as_str()), "its dependant is ready now: {ready}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_metrics_and_the_event_stream() {
    use futures::StreamExt;
    let c = Cluster::start(fast_config()).await;
    for probe in ["/healthz", "/readyz", "/health", "/health/live", "/health/ready"] {
        let (status, _) = c.call_as(None, Method::GET, probe, None).await;
        assert_eq!(status, StatusCode::OK, "{probe} needs no key");
    }
    c.project("sse").await;
    let _slots = c.advertise("sse", 1).await;
    let client = loom_client::Client::new(&c.cp.url, Some(c.key.clone()));
    let mut stream = Box::pin(client.follow_events(None).await.unwrap());
    let id = c.bead("sse", "watched", 1, &[]).await;
    let event = loop {
        let event = tokio::time::timeout(WAIT, stream.next()).await.unwrap().unwrap().unwrap();
        // The advertised agent's `agent.online` may come first, and the audit records of the
        // writes above are appended behind their responses.
        if event.kind != "agent.online" && event.kind != "audit.api_write" {
            break event;
        }
    };
    assert_eq!((event.kind.as_str(), event.entity_id.as_str()), ("bead.created", id.as_str()));
    // Resuming after that event's seq yields what came next, not the event again.
    let mut resumed = Box::pin(client.follow_events(Some(event.seq)).await.unwrap());
    let next = tokio::time::timeout(WAIT, resumed.next()).await.unwrap().unwrap().unwrap();
    assert!(next.seq > event.seq, "{next:?}");
    // The bead was dispatched (nobody runs it): its dispatch latency is recorded.
    let deadline = tokio::time::Instant::now() + WAIT;
    let text = loop {
        let (status, text) = c.call_as(None, Method::GET, "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        let text = text.as_str().unwrap().to_owned();
        if text.contains("loom_dispatch_latency_seconds_bucket") || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.contains("loom_dispatch_latency_seconds_bucket"), "{text}");
    assert!(text.contains("loom_http_requests_total"), "{text}");
    assert!(
        text.contains("loom_beads{status=\"in_progress\"}") || text.contains("loom_beads{status=\"open\"}"),
        "{text}"
    );
    // Open event streams must not hold up a graceful shutdown.
    tokio::time::timeout(Duration::from_secs(10), c.stop()).await.expect("shutdown with open SSE streams");
    drop((stream, resumed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limits_hold_per_project_and_over_all() {
    let mut config = fast_config();
    config.project_concurrency = 2;
    config.global_concurrency = 3;
    let c = Cluster::start(config).await;
    c.project("lim-a").await;
    c.project("lim-b").await;
    // Agents with room for more than the limits, which never answer: whatever is dispatched
    // stays in progress.
    let _slots = (c.advertise("lim-a", 10).await, c.advertise("lim-b", 10).await);
    let mut a = Vec::new();
    for i in 0..4 {
        a.push(c.bead("lim-a", &format!("a{i}"), 1, &[]).await);
        c.bead("lim-b", &format!("b{i}"), 1, &[]).await;
    }
    let running = |project: &'static str| {
        let c = &c;
        async move {
            let page = c.get(&format!("/api/v1/beads?project_id={project}&status=in_progress")).await;
            page["beads"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        }
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (in_a, in_b) = (running("lim-a").await, running("lim-b").await);
    assert!(in_a.len() <= 2 && in_b.len() <= 2, "per-project limit: {in_a:?} {in_b:?}");
    assert_eq!(in_a.len() + in_b.len(), 3, "the global limit is reached, not passed: {in_a:?} {in_b:?}");
    // Finishing one frees a slot, which the dispatcher fills.
    let done = in_a.first().or(in_b.first()).unwrap().clone();
    c.post(&format!("/api/v1/beads/{done}/close"), json!({ "reason": "done by hand" })).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (in_a, in_b) = (running("lim-a").await, running("lim-b").await);
        assert!(in_a.len() <= 2 && in_b.len() <= 2 && in_a.len() + in_b.len() <= 3, "{in_a:?} {in_b:?}");
        if in_a.len() + in_b.len() == 3 && !in_a.contains(&done) && !in_b.contains(&done) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the freed slot was not filled: {in_a:?} {in_b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_nobody_announced_still_blocks_its_bead() {
    let c = Cluster::start(fast_config()).await;
    c.project("poison").await;
    let _slots = c.advertise("poison", 1).await;
    let project = loom_domain::ProjectId::parse("poison").unwrap();
    let mut tasks = c
        .bus
        .consume_tasks(&project, None, loom_bus::ConsumeOptions { max_in_flight: 1, prefetch: false })
        .await
        .unwrap();
    let id = c.bead("poison", "cannot run", 1, &[]).await;
    let task = tokio::time::timeout(WAIT, tasks.next()).await.unwrap().unwrap();
    // Moved to the DLQ without the max-deliveries advisory the control plane listens to (as
    // when it was down at that moment): the DLQ itself is read, from a saved position.
    task.delivery.term_to_dlq("poison for the test").await.unwrap();
    let v = c.wait_bead(&id, WAIT, |v| v["status"] == "blocked").await;
    assert_eq!(v["status"], "blocked", "{v}");
    assert!(v["last_error"].as_str().unwrap().contains("poison for the test"), "{v}");
    c.stop().await;
}

/// An agent that comes and goes is mirrored to the store (`GET /agents` reads it there) and
/// leaves an `agent.online` and then an `agent.offline` event, in the store and on the API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_coming_and_going_are_recorded_with_events() {
    let c = Cluster::start(fast_config()).await;
    c.project("fleet").await;
    let id = loom_domain::AgentId::parse("fleet-agent-1").unwrap();
    let record = loom_bus::AgentRecord {
        agent_id: id.clone(),
        project_id: loom_domain::ProjectId::parse("fleet").unwrap(),
        role: String::new(),
        instance: "test".into(),
        status: loom_domain::AgentStatus::Idle,
        current_bead: None,
        capacity: 3,
        last_heartbeat: chrono::Utc::now(),
    };
    c.bus.register_agent(&record).await.unwrap();
    let kinds = |events: &[loom_domain::Event]| -> Vec<&'static str> {
        events.iter().filter(|e| e.entity_id == id.as_str()).map(|e| e.kind.as_str()).collect()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let agents = c.store.list_agents(None).await.unwrap();
        let mirrored =
            agents.iter().any(|a| a.id == id && a.status == loom_domain::AgentStatus::Idle && a.capacity == 3);
        let events = c.store.list_events(0, 1000).await.unwrap();
        if mirrored && kinds(&events) == ["agent.online"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "agent not mirrored online: {agents:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = c.get("/api/v1/agents").await;
    assert!(listed.to_string().contains("fleet-agent-1"), "{listed}");

    c.bus.deregister_agent(&id).await.unwrap();
    loop {
        let agents = c.store.list_agents(None).await.unwrap();
        let offline = agents.iter().any(|a| a.id == id && a.status == loom_domain::AgentStatus::Offline);
        let events = c.store.list_events(0, 1000).await.unwrap();
        if offline && kinds(&events) == ["agent.online", "agent.offline"] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "agent not recorded offline: {:?}", kinds(&events));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = c.get("/api/v1/events?project_id=fleet").await;
    let text = events.to_string();
    assert!(text.contains("agent.online") && text.contains("agent.offline"), "{text}");
    c.stop().await;
}

/// An agent that does not trust the control plane's key (a misconfigured agent, or a forged task)
/// never runs the task: it is dead-lettered with the signature's reason, and the bead is blocked
/// with it, so the operator sees why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_the_agent_cannot_verify_blocks_its_bead_with_the_reason() {
    let c = Cluster::start(fast_config()).await;
    c.project("keys").await;
    let mut other = c.bus.config().clone();
    other.task_verify_key = Some(loom_bus::SigningKey::generate().verify_key());
    let agent_bus = loom_bus::Bus::connect(other).await.unwrap();
    let agent = TestAgent::start(&agent_bus, "keys", succeed).await;
    let id = c.bead("keys", "needs a trusted task", 1, &[]).await;
    let v = c.wait_bead(&id, WAIT, |v| v["status"] == "blocked").await;
    assert_eq!(v["status"], "blocked", "{v}");
    let error = v["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("task signature by unknown key"), "{v}");
    assert!(agent.ran().is_empty(), "the agent ran {:?}", agent.ran());
    agent.stop().await;
    c.stop().await;
}

/// Waits until the control plane has recorded an `agent.online` event for an agent bound to
/// `role` (it records it after updating its view of the registry).
async fn wait_role_online(c: &Cluster, role: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let events = c.store.list_events(0, 1000).await.unwrap();
        if events.iter().any(|e| e.kind == loom_domain::EventKind::AgentOnline && e.data["role"] == role) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "no agent.online for role {role}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bead_with_a_role_runs_on_the_roles_agents_or_else_on_the_projects() {
    let c = Cluster::start(fast_config()).await;
    c.project("roles").await;
    let general = TestAgent::start(&c.bus, "roles", succeed).await;
    let with_role = |title: &str| json!({ "project_id": "roles", "title": title, "context": { "role": "qa" } });
    // Nobody is bound to `qa`: the project's agents take the bead (playing its persona) rather
    // than leaving it on a queue no agent reads.
    let first = c.post("/api/v1/beads", with_role("qa, nobody bound")).await["id"].as_str().unwrap().to_owned();
    let v = c.wait_bead(&first, WAIT, closed).await;
    assert!(closed(&v), "a bead whose role no agent is bound to still runs: {v}");
    assert_eq!(general.ran(), ["qa, nobody bound"]);
    // With an agent bound to `qa`, the role's beads go to it; the others stay with the project's.
    let qa = TestAgent::start_bound(&c.bus, "roles", Some("qa"), succeed).await;
    wait_role_online(&c, "qa").await;
    let second = c.post("/api/v1/beads", with_role("qa, bound")).await["id"].as_str().unwrap().to_owned();
    let plain = c.bead("roles", "no role", 1, &[]).await;
    assert!(closed(&c.wait_bead(&second, WAIT, closed).await));
    assert!(closed(&c.wait_bead(&plain, WAIT, closed).await));
    assert_eq!(qa.ran(), ["qa, bound"], "the bound agent runs its role's bead");
    assert_eq!(general.ran(), ["qa, nobody bound", "no role"]);
    qa.stop().await;
    general.stop().await;
    c.stop().await;
}

/// A burst of creates with no free slot is written in shared transactions (group commit): every
/// client is answered for its own bead, a bad bead in the burst is refused alone, and the store
/// holds exactly the beads that were answered `201`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_creates_is_committed_together_and_each_client_gets_its_own_answer() {
    let c = Cluster::start(fast_config()).await;
    c.project("burst").await;
    let requests = (0..300).map(|i| {
        let mut body = json!({ "project_id": "burst", "title": format!("burst {i}") });
        if i % 50 == 7 {
            body["blocked_by"] = json!(["bd-nosuchbead0"]);
        }
        let c = &c;
        async move { (i, c.call(Method::POST, "/api/v1/beads", Some(body)).await) }
    });
    let answers = futures::future::join_all(requests).await;
    let mut created = std::collections::BTreeSet::new();
    for (i, (status, v)) in &answers {
        if i % 50 == 7 {
            assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "bead {i} waits on a bead that does not exist: {v}");
            assert!(v.to_string().contains("bd-nosuchbead0"), "{v}");
        } else {
            assert_eq!(*status, StatusCode::CREATED, "bead {i}: {v}");
            assert_eq!(v["title"], format!("burst {i}"), "each client gets its own bead");
            assert!(created.insert(v["id"].as_str().unwrap().to_owned()), "an id answered twice: {v}");
        }
    }
    assert_eq!(created.len(), 294);
    let filter =
        loom_store::BeadFilter { project: Some(loom_domain::ProjectId::parse("burst").unwrap()), ..Default::default() };
    let stored = c.store.list_beads(&filter, &loom_store::PageRequest::first(1000)).await.unwrap();
    let stored: std::collections::BTreeSet<String> = stored.beads.iter().map(|b| b.id.to_string()).collect();
    assert_eq!(stored, created, "the store holds exactly the beads whose creation was acknowledged");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_creates_with_free_slots_runs_each_bead_once_and_never_past_the_slots() {
    let c = Cluster::start(fast_config()).await;
    c.project("slots").await;
    let mut agents = Vec::new();
    for _ in 0..3 {
        agents.push(TestAgent::start(&c.bus, "slots", succeed).await);
    }
    // The creates of a burst are written (and claimed, while the project has free slots) in
    // batches that share a transaction.
    let requests = (0..120).map(|i| {
        let c = &c;
        async move {
            c.call(Method::POST, "/api/v1/beads", Some(json!({ "project_id": "slots", "title": format!("b{i}") })))
                .await
        }
    });
    let answers = futures::future::join_all(requests).await;
    for (status, v) in &answers {
        assert_eq!(*status, StatusCode::CREATED, "{v}");
        assert!(["open", "in_progress"].contains(&v["status"].as_str().unwrap()), "{v}");
    }
    let count = |status: &'static str| {
        let c = &c;
        async move {
            let page = c.get(&format!("/api/v1/beads?project_id=slots&status={status}&limit=500")).await;
            page["beads"].as_array().unwrap().len()
        }
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while count("closed").await < 120 {
        let running = count("in_progress").await;
        assert!(running <= 3, "{running} beads in progress for 3 agent slots");
        assert!(tokio::time::Instant::now() < deadline, "only {} of 120 closed", count("closed").await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ran: Vec<String> = Vec::new();
    for agent in agents {
        ran.extend(agent.ran());
        agent.stop().await;
    }
    ran.sort();
    let mut expected: Vec<String> = (0..120).map(|i| format!("b{i}")).collect();
    expected.sort();
    assert_eq!(ran, expected, "every bead ran exactly once");
    c.stop().await;
}
