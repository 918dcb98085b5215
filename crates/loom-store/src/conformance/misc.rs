//! Conformance cases: events, the outbox, agents and counts.

use chrono::Utc;
use loom_domain::{Agent, AgentId, AgentStatus, EventKind, ProjectId, Status};
use serde_json::json;

use super::{bead, claim_req, project};
use crate::{EventQuery, NewEvent, Store};

pub async fn events_by_cursor(store: &dyn Store) {
    let p = project(store, "ev").await;
    let b = bead(store, &p, "a", 1, &[]).await;
    store.close_bead(&b.id, "done", None).await.unwrap();
    let appended = store
        .append_event(NewEvent {
            kind: EventKind::AgentOnline,
            source: "agent".into(),
            project_id: Some(p.clone()),
            entity_id: "agent-1".into(),
            action: "online".into(),
            description: "agent-1 is online".into(),
            data: json!({ "role": "engineer" }),
            correlation_id: Some("corr-1".into()),
        })
        .await
        .unwrap();
    let all = store.list_events(0, 100).await.unwrap();
    let kinds: Vec<EventKind> = all.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [EventKind::ProjectCreated, EventKind::BeadCreated, EventKind::BeadClosed, EventKind::AgentOnline]
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all[2].entity_id, b.id.as_str());
    assert_eq!(all[2].data["reason"], "done");
    assert_eq!(all.last().unwrap(), &appended);
    let after = store.list_events(all[1].seq, 100).await.unwrap();
    assert_eq!(after.len(), 2, "cursor resumes after the given seq");
    assert_eq!(store.list_events(all[1].seq, 1).await.unwrap().len(), 1);
    assert!(store.list_events(0, 0).await.is_err());
    assert_eq!(store.last_event_seq().await.unwrap(), appended.seq);
    // A batch is appended in its order, after everything before it.
    let audit = |path: &str| NewEvent {
        kind: EventKind::ApiWrite,
        source: "api".into(),
        project_id: None,
        entity_id: path.into(),
        action: "api_write".into(),
        description: format!("POST {path}"),
        data: json!({ "path": path }),
        correlation_id: None,
    };
    store.append_events(vec![audit("/a"), audit("/b"), audit("/c")]).await.unwrap();
    store.append_events(Vec::new()).await.unwrap();
    let batch = store.list_events(appended.seq, 100).await.unwrap();
    let paths: Vec<&str> = batch.iter().map(|e| e.entity_id.as_str()).collect();
    assert_eq!(paths, ["/a", "/b", "/c"]);
    assert!(batch.iter().all(|e| e.kind == EventKind::ApiWrite && e.project_id.is_none()));
}

/// A page of one project's events comes from the store's filter, not from filtering a page of
/// everyone's: a quiet project behind a busy one gets its events on the first call, and the
/// cursor moves past the busy project's so the next call does not read them again.
pub async fn event_pages_filter_by_project(store: &dyn Store) {
    let busy = project(store, "busy").await;
    let quiet = project(store, "quiet").await;
    let beads = (0..1500).map(|i| loom_domain::NewBead::new(busy.clone(), format!("b{i}"))).collect();
    store.create_beads(beads).await.unwrap();
    let mine = bead(store, &quiet, "mine", 1, &[]).await;
    let head = store.last_event_seq().await.unwrap();
    let query = |after: i64, limit: u32, project: Option<&ProjectId>| EventQuery {
        after,
        limit,
        project: project.cloned(),
        gaps_fill_until: Utc::now() - chrono::Duration::seconds(5),
    };

    let page = store.list_event_page(&query(0, 100, Some(&quiet))).await.unwrap();
    let kinds: Vec<EventKind> = page.events.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::ProjectCreated, EventKind::BeadCreated], "quiet's events, on the first page");
    assert!(page.events.iter().all(|e| e.project_id.as_ref() == Some(&quiet)));
    assert_eq!(page.events[1].entity_id, mine.id.as_str());
    assert_eq!(page.next, head, "a short page continues from the head, past busy's events");
    let again = store.list_event_page(&query(page.next, 100, Some(&quiet))).await.unwrap();
    assert_eq!((again.events.len(), again.next), (0, head), "nothing new; the cursor stays");

    let first = store.list_event_page(&query(0, 1, Some(&quiet))).await.unwrap();
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.next, first.events[0].seq, "a full page continues after its last event");
    let second = store.list_event_page(&query(first.next, 1, Some(&quiet))).await.unwrap();
    assert_eq!(second.events[0].entity_id, mine.id.as_str());

    let (mut after, mut seen, mut calls) = (0, 0, 0);
    loop {
        let page = store.list_event_page(&query(after, 1000, None)).await.unwrap();
        calls += 1;
        if page.events.is_empty() {
            break;
        }
        assert!(page.events.iter().all(|e| e.seq > after), "oldest first, after the cursor");
        seen += page.events.len();
        after = page.next;
    }
    assert_eq!((seen as i64, after, calls), (head, head, 3), "unfiltered pages cover the log once");
    let sub = store.list_event_page(&query(0, 100, Some(&ProjectId::parse("nobody").unwrap()))).await.unwrap();
    assert_eq!((sub.events.len(), sub.next), (0, head));
    assert!(store.list_event_page(&query(0, 0, None)).await.is_err(), "limit 0 is refused");
}

pub async fn outbox_take_and_mark_sent(store: &dyn Store) {
    let p = project(store, "out").await;
    for i in 0..5 {
        bead(store, &p, &format!("b{i}"), 1, &[]).await;
    }
    let claims = store.claim_ready(&claim_req(&p, 5)).await.unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap(), 5, "every unsent row is counted");
    let first = store.take_outbox(3).await.unwrap();
    assert_eq!(
        first.iter().map(|m| &m.dispatch_id).collect::<Vec<_>>(),
        claims.iter().take(3).map(|c| &c.dispatch_id).collect::<Vec<_>>()
    );
    assert_eq!(store.take_outbox(3).await.unwrap(), first, "unsent rows are taken again (at-least-once)");
    store.mark_outbox_sent(&first.iter().map(|m| m.id).collect::<Vec<_>>()).await.unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap(), 2, "sent rows are not");
    let rest = store.take_outbox(10).await.unwrap();
    assert_eq!(rest.len(), 2);
    store.mark_outbox_sent(&rest.iter().map(|m| m.id).collect::<Vec<_>>()).await.unwrap();
    assert!(store.take_outbox(10).await.unwrap().is_empty());
}

pub async fn agents_and_counts(store: &dyn Store) {
    let p = project(store, "ag").await;
    let mut agent = Agent {
        id: AgentId::parse("ag-engineer-1").unwrap(),
        project_id: p.clone(),
        role: "engineer".into(),
        instance: "host-123-abcd".into(),
        status: AgentStatus::Idle,
        current_bead: None,
        capacity: 2,
        last_heartbeat: Utc::now(),
    };
    store.upsert_agent(&agent).await.unwrap();
    agent.status = AgentStatus::Busy;
    store.upsert_agent(&agent).await.unwrap();
    let listed = store.list_agents(Some(&p)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, AgentStatus::Busy);
    assert!(store.list_agents(Some(&loom_domain::ProjectId::parse("none").unwrap())).await.unwrap().is_empty());
    bead(store, &p, "a", 1, &[]).await;
    let b = bead(store, &p, "b", 1, &[]).await;
    store.close_bead(&b.id, "x", None).await.unwrap();
    bead(store, &p, "c", 0, &[]).await;
    store.claim_ready(&claim_req(&p, 1)).await.unwrap();
    let counts = store.bead_counts(Some(&p)).await.unwrap();
    assert_eq!(counts, vec![(Status::Open, 1), (Status::InProgress, 1), (Status::Blocked, 0), (Status::Closed, 1)]);
    let other = project(store, "other").await;
    bead(store, &other, "d", 1, &[]).await;
    bead(store, &other, "e", 1, &[]).await;
    bead(store, &project(store, "idle").await, "f", 1, &[]).await;
    store.claim_ready(&claim_req(&other, 2)).await.unwrap();
    assert_eq!(
        store.running_by_project().await.unwrap(),
        vec![(p, 1), (other, 2)],
        "by project id; idle projects are left out"
    );
}

pub async fn api_keys_by_hash(store: &dyn Store) {
    use loom_domain::Role;
    let admin = store.create_api_key("first admin", Role::Admin, "hash-a").await.unwrap();
    let viewer = store.create_api_key("dashboard", Role::Viewer, "hash-v").await.unwrap();
    assert_eq!(store.find_api_key("hash-a").await.unwrap(), Some(admin.clone()));
    assert_eq!(store.find_api_key("nope").await.unwrap(), None);
    let dup = store.create_api_key("again", Role::Viewer, "hash-v").await.unwrap_err();
    assert!(matches!(dup, crate::Error::AlreadyExists { .. }), "{dup}");
    assert!(store.create_api_key(" ", Role::Viewer, "hash-x").await.is_err(), "blank names are refused");
    store.revoke_api_key(&viewer.id).await.unwrap();
    assert_eq!(store.find_api_key("hash-v").await.unwrap(), None, "revoked keys no longer authenticate");
    assert!(matches!(store.revoke_api_key(&viewer.id).await, Err(crate::Error::NotFound { .. })));
    let listed = store.list_api_keys().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|k| k.id == viewer.id && k.revoked_at.is_some()));
}

pub async fn leases_elect_one_holder(store: &dyn Store) {
    let ttl = std::time::Duration::from_secs(10);
    let t0 = Utc::now();
    assert!(store.acquire_lease("dispatcher", "cp-1", t0, ttl).await.unwrap());
    assert!(!store.acquire_lease("dispatcher", "cp-2", t0, ttl).await.unwrap(), "held by cp-1");
    assert!(
        store.acquire_lease("dispatcher", "cp-1", t0 + chrono::Duration::seconds(5), ttl).await.unwrap(),
        "renewal"
    );
    let after_first_ttl = t0 + chrono::Duration::seconds(12);
    assert!(!store.acquire_lease("dispatcher", "cp-2", after_first_ttl, ttl).await.unwrap(), "the renewal extended it");
    let expired = t0 + chrono::Duration::seconds(16);
    assert!(store.acquire_lease("dispatcher", "cp-2", expired, ttl).await.unwrap(), "an expired lease is taken over");
    assert!(!store.acquire_lease("dispatcher", "cp-1", expired, ttl).await.unwrap());
    store.release_lease("dispatcher", "cp-1").await.unwrap();
    assert!(!store.acquire_lease("dispatcher", "cp-1", expired, ttl).await.unwrap(), "only the holder can release");
    store.release_lease("dispatcher", "cp-2").await.unwrap();
    assert!(store.acquire_lease("dispatcher", "cp-1", expired, ttl).await.unwrap(), "released leases are free");
    assert!(store.acquire_lease("other", "cp-2", expired, ttl).await.unwrap(), "leases are independent by name");
}
