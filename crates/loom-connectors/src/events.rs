//! The `connector.health_changed` events, one per change however many replicas of the service
//! check the same connectors. Every replica checks and broadcasts (its `WatchHealth`) what it
//! sees, but only the holder of the store lease `connectors-health` appends events, and it
//! appends a change only against the connector's stored health state, which it then advances:
//! a change another writer recorded already (before a handover) is not recorded twice. That
//! state is the store position `connector-health:<id>`, `4 × seq + status` (`seq` of the event
//! that recorded it; status 0 unknown, 1 healthy, 2 unhealthy): positions only move forward, so
//! a writer that lost the lease mid-way cannot set an older state over a newer one. A replica that
//! takes the lease over records at once where its view differs from the stored state, so a change
//! the previous holder saw last but did not record (it died) is not lost either. The same
//! happens when the store comes back after an outage: the state then is recorded, not every
//! flap seen meanwhile.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use loom_domain::EventKind;
use loom_store::{NewEvent, Store};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Connectors;
use crate::model::{HealthChange, Status};

/// The store lease that makes one replica the writer of health events.
const LEASE: &str = "connectors-health";

/// The store position holding a connector's last recorded health.
pub(crate) fn state_key(id: &str) -> String {
    format!("connector-health:{id}")
}

fn code(status: Status) -> i64 {
    match status {
        Status::Unknown => 0,
        Status::Healthy => 1,
        Status::Unhealthy => 2,
    }
}

fn status_of(state: i64) -> Status {
    match state % 4 {
        1 => Status::Healthy,
        2 => Status::Unhealthy,
        _ => Status::Unknown,
    }
}

/// Appends the queued changes, in order, while this replica holds the lease (renewed every
/// third of its time to live); at shutdown, what is queued is still appended (a bounded number
/// of tries) and the lease is given up, so another replica takes over at once.
pub(crate) async fn write(
    connectors: Connectors,
    mut rx: mpsc::UnboundedReceiver<HealthChange>,
    shutdown: CancellationToken,
) {
    let store = connectors.store().clone();
    let ttl = connectors.lease_ttl();
    let holder = format!("connectors-{}", uuid::Uuid::now_v7());
    let mut leading = false;
    let mut renew = tokio::time::interval(ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let change = tokio::select! {
            change = rx.recv() => change,
            _ = renew.tick() => {
                leading = lead(&connectors, &holder, leading, None, &mut rx, &shutdown).await;
                continue;
            }
            () = shutdown.cancelled() => rx.try_recv().ok(),
        };
        let Some(change) = change else { break };
        let was_leading = leading;
        leading = lead(&connectors, &holder, leading, Some(&change), &mut rx, &shutdown).await;
        // On taking the lease, `lead` recorded this change already.
        if leading && was_leading {
            record(&store, &change, &shutdown).await;
        }
        // Otherwise the holder of the lease, checking the same connector, records it.
    }
    if leading {
        let _ = store.release_lease(LEASE, &holder).await;
    }
}

/// Takes or renews the lease; on taking it, records where this replica's view differs from
/// the stored state.
///
/// On taking it, the changes queued until then (`pending` first) are recorded in order before
/// the view: each is older than the view taken after it, so recording one after the view would
/// put an old state over a newer one. A change queued after the view is newer, or the view's
/// own (`record` skips it).
async fn lead(
    connectors: &Connectors,
    holder: &str,
    leading: bool,
    pending: Option<&HealthChange>,
    queued: &mut mpsc::UnboundedReceiver<HealthChange>,
    shutdown: &CancellationToken,
) -> bool {
    let store = connectors.store();
    match store.acquire_lease(LEASE, holder, Utc::now(), connectors.lease_ttl()).await {
        Ok(true) if !leading => {
            tracing::info!("this replica records the connectors' health changes");
            if let Some(change) = pending {
                record(store, change, shutdown).await;
            }
            while let Ok(change) = queued.try_recv() {
                record(store, &change, shutdown).await;
            }
            for health in connectors.health_snapshot() {
                record(store, &HealthChange { previous: Status::Unknown, health }, shutdown).await;
            }
            true
        }
        Ok(held) => {
            if leading && !held {
                tracing::info!("another replica records the connectors' health changes now");
            }
            held
        }
        Err(e) => {
            // Without the lease this replica cannot know it is the only writer: it writes nothing.
            tracing::warn!(error = %e, "health changes not recorded by this replica: cannot take their lease");
            false
        }
    }
}

/// Appends `change` unless the stored state is its status already (its `previous` is the stored
/// state), then stores the new state; waits out store outages.
async fn record(store: &Arc<dyn Store>, change: &HealthChange, shutdown: &CancellationToken) {
    let key = state_key(&change.health.connector_id);
    let mut tries = 0u32;
    loop {
        let outcome = async {
            let stored = status_of(store.position(&key).await?);
            if stored == change.health.status {
                return Ok(());
            }
            let change = HealthChange { previous: stored, health: change.health.clone() };
            let event = store.append_event(event_of(&change)).await?;
            store.save_position(&key, 4 * event.seq + code(change.health.status)).await
        };
        match outcome.await {
            Ok(()) => return,
            Err(e) => {
                tries += 1;
                if !e.is_transient() || (shutdown.is_cancelled() && tries >= 3) {
                    tracing::error!(connector = %change.health.connector_id, error = %e, "health change not recorded");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Forgets the stored state of a removed or disabled connector: its next check is a change.
pub(crate) async fn reset(store: &Arc<dyn Store>, id: &str) {
    // Past every state recorded so far (they are below the next event's), and `unknown`.
    let unknown = async { store.save_position(&state_key(id), 4 * (store.last_event_seq().await? + 1)).await };
    if let Err(e) = unknown.await {
        tracing::warn!(connector = %id, error = %e, "cannot reset the connector's recorded health");
    }
}

fn event_of(change: &HealthChange) -> NewEvent {
    let h = &change.health;
    let description = match h.status {
        Status::Healthy => format!("connector {} is healthy", h.connector_id),
        status => format!("connector {} is {}: {}", h.connector_id, status.as_str(), h.message),
    };
    NewEvent {
        kind: EventKind::ConnectorHealthChanged,
        source: "connectors".into(),
        project_id: None,
        entity_id: h.connector_id.clone(),
        action: "health_changed".into(),
        description,
        data: json!({
            "previous": change.previous.as_str(),
            "status": h.status.as_str(),
            "message": h.message,
            "latency_ms": h.latency.as_millis() as u64,
        }),
        correlation_id: None,
    }
}
