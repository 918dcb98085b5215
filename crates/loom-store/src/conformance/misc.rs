//! Conformance cases: events, the outbox, agents and counts.

use chrono::Utc;
use loom_domain::{Agent, AgentId, AgentStatus, EventKind, Status};
use serde_json::json;

use super::{bead, claim_req, project};
use crate::{NewEvent, Store};

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
}

pub async fn outbox_take_and_mark_sent(store: &dyn Store) {
    let p = project(store, "out").await;
    for i in 0..5 {
        bead(store, &p, &format!("b{i}"), 1, &[]).await;
    }
    let claims = store.claim_ready(&claim_req(&p, 5)).await.unwrap();
    let first = store.take_outbox(3).await.unwrap();
    assert_eq!(
        first.iter().map(|m| &m.dispatch_id).collect::<Vec<_>>(),
        claims.iter().take(3).map(|c| &c.dispatch_id).collect::<Vec<_>>()
    );
    assert_eq!(store.take_outbox(3).await.unwrap(), first, "unsent rows are taken again (at-least-once)");
    store.mark_outbox_sent(&first.iter().map(|m| m.id).collect::<Vec<_>>()).await.unwrap();
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
}
