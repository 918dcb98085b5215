//! The agent registry on both backends: register, list, watch online/offline, expiry by TTL.

use std::time::Duration;

use chrono::Utc;
use loom_bus::{AgentChange, AgentRecord, OfflineReason};
use loom_domain::{AgentId, AgentStatus, BeadId};

use crate::support::{Kind, TestBus, fast_config, project, within};

fn agent(id: &str) -> AgentRecord {
    AgentRecord {
        agent_id: AgentId::parse(id).unwrap(),
        project_id: project(),
        role: "engineer".into(),
        instance: loom_bus::instance_id().to_owned(),
        status: AgentStatus::Idle,
        current_bead: None,
        capacity: 1,
        last_heartbeat: Utc::now(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_registry() -> anyhow::Result<()> {
    registry(Kind::Embedded).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_registry() -> anyhow::Result<()> {
    registry(Kind::JetStream).await
}

async fn registry(kind: Kind) -> anyhow::Result<()> {
    let bus = TestBus::new(kind, fast_config()).await?; // agent TTL 2 s
    let (a, b) = (agent("a1"), agent("b2"));
    bus.register_agent(&a).await?;
    let mut watch = bus.watch_agents().await?;
    assert_eq!(within(5, watch.next()).await.flatten(), Some(AgentChange::Online(a.clone())));
    bus.register_agent(&b).await?;
    assert_eq!(within(5, watch.next()).await.flatten(), Some(AgentChange::Online(b.clone())));
    let ids: Vec<String> = bus.list_agents().await?.into_iter().map(|r| r.agent_id.to_string()).collect();
    assert_eq!(ids, ["a1", "b2"]);

    let busy =
        AgentRecord { status: AgentStatus::Busy, current_bead: Some(BeadId::parse("proj-1").unwrap()), ..a.clone() };
    bus.heartbeat_agent(&busy).await?;
    assert_eq!(within(5, watch.next()).await.flatten(), Some(AgentChange::Updated(busy.clone())));

    bus.deregister_agent(&b.agent_id).await?;
    assert_eq!(
        within(5, watch.next()).await.flatten(),
        Some(AgentChange::Offline { agent_id: b.agent_id.clone(), reason: OfflineReason::Removed })
    );
    // a1 stops heartbeating: offline once its TTL passes.
    assert_eq!(
        within(5, watch.next()).await.flatten(),
        Some(AgentChange::Offline { agent_id: a.agent_id.clone(), reason: OfflineReason::Expired })
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(bus.list_agents().await?.is_empty());
    Ok(())
}
