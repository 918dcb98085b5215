//! Agent capacity: the slots that live agents advertise in the registry (`loom-agents`), summed
//! per project. The dispatcher claims no more beads for a project than its live agents can run
//! (`Slots::reserve`), so a backlog stays `open` — reorderable, and not aging on the bus —
//! until a slot is free. Also, on the leader, each change is mirrored to the store (agent
//! history) and recorded as an `agent.online` / `agent.offline` event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use loom_bus::{AgentChange, AgentRecord};
use loom_domain::{Agent, AgentId, AgentStatus, EventKind, ProjectId};
use loom_store::NewEvent;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::dispatcher::RETRY_DELAY;

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let watch = tokio::select! {
            _ = shutdown.cancelled() => return,
            w = shared.bus.watch_agents() => w,
        };
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the agent registry; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        let mut live: HashMap<AgentId, AgentRecord> = HashMap::new();
        loop {
            let change = tokio::select! {
                _ = shutdown.cancelled() => return,
                c = watch.next() => match c { Some(c) => c, None => break },
            };
            let offline = match &change {
                AgentChange::Online(r) | AgentChange::Updated(r) => {
                    live.insert(r.agent_id.clone(), r.clone());
                    None
                }
                AgentChange::Offline { agent_id, .. } => live.remove(agent_id),
            };
            {
                let mut slots = shared.slots();
                slots.set_agent_slots(per_project(&live));
                slots.set_agent_roles(roles_per_project(&live));
            }
            shared.dispatch_wake.notify_one();
            if shared.is_leader() {
                record(&shared, &change, offline).await;
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
        tracing::warn!("the agent registry watch ended; watching again");
    }
}

/// Slots per project: the capacity of every live agent that takes work (not draining).
fn per_project(live: &HashMap<AgentId, AgentRecord>) -> HashMap<ProjectId, u32> {
    let mut slots: HashMap<ProjectId, u32> = HashMap::new();
    for r in live.values().filter(|r| matches!(r.status, AgentStatus::Idle | AgentStatus::Busy)) {
        let n = slots.entry(r.project_id.clone()).or_default();
        *n = n.saturating_add(r.capacity);
    }
    slots
}

/// The roles that agents taking work are bound to, per project. Only a bound agent consumes its
/// role's queue, so a bead's task goes there only while one is live (`relay::assigned`).
fn roles_per_project(live: &HashMap<AgentId, AgentRecord>) -> HashMap<ProjectId, HashSet<String>> {
    let mut roles: HashMap<ProjectId, HashSet<String>> = HashMap::new();
    for r in live.values().filter(|r| !r.role.is_empty() && matches!(r.status, AgentStatus::Idle | AgentStatus::Busy)) {
        roles.entry(r.project_id.clone()).or_default().insert(r.role.clone());
    }
    roles
}

/// Mirrors a change to the store and records its event (best effort: the registry is live).
async fn record(shared: &Shared, change: &AgentChange, gone: Option<AgentRecord>) {
    let (record, kind) = match change {
        AgentChange::Online(r) => (r.clone(), Some(EventKind::AgentOnline)),
        AgentChange::Updated(r) => (r.clone(), None),
        AgentChange::Offline { .. } => match gone {
            Some(mut r) => {
                r.status = AgentStatus::Offline;
                r.current_bead = None;
                (r, Some(EventKind::AgentOffline))
            }
            None => return,
        },
    };
    let agent = Agent::from(record);
    if let Err(e) = shared.store.upsert_agent(&agent).await {
        tracing::warn!(agent = %agent.id, error = %e, "cannot record the agent in the store");
    }
    let Some(kind) = kind else { return };
    let action = if kind == EventKind::AgentOnline { "online" } else { "offline" };
    let event = NewEvent {
        kind,
        source: "control-plane".into(),
        project_id: Some(agent.project_id.clone()),
        entity_id: agent.id.to_string(),
        action: action.into(),
        description: format!("agent {} {action} (project {}, {} slots)", agent.id, agent.project_id, agent.capacity),
        data: serde_json::json!({ "role": agent.role, "instance": agent.instance, "capacity": agent.capacity }),
        correlation_id: None,
    };
    if let Err(e) = shared.store.append_event(event).await {
        tracing::warn!(agent = %agent.id, error = %e, "cannot record the agent event");
    }
}
