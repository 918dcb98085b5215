//! Webhook deliveries: the store's event log is read from the saved position
//! `connectors-webhooks` (the head of the log the first time, so history is not replayed), and
//! each event goes to every enabled webhook connector subscribed to its type (`*` = all) as a
//! Standard Webhooks message `{type, timestamp, data}` whose id is the event's id. The position
//! advances after a page is delivered (or given up on), so a restart redelivers at most a page.
//! One replica delivers at a time: the one holding the store lease `connectors-deliveries`,
//! renewed every third of its time to live *while* a page is delivered too (a receiver failing
//! for longer than the lease is retried under it, so no other replica takes the page over and
//! delivers it again); a replica that loses the lease mid-page stops at once without moving the
//! position. Every attempt of a message carries the same `webhook-id` (the event's id), the
//! receiver's idempotency key.

use std::time::Duration;

use chrono::Utc;
use loom_domain::Event;
use loom_store::EventQuery;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Connectors;
use crate::model::{Kind, Mode, Spec};
use crate::webhook::{self, Delivery, Retry};

/// The store position of the deliveries.
pub const POSITION: &str = "connectors-webhooks";
const POLL: Duration = Duration::from_millis(250);

/// The store lease that makes one replica of the service the one that delivers.
const LEASE: &str = "connectors-deliveries";

pub(crate) async fn run(connectors: Connectors, shutdown: CancellationToken) {
    let holder = format!("connectors-{}", uuid::Uuid::now_v7());
    let mut after: Option<i64> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(POLL) => {}
        }
        match connectors.store().acquire_lease(LEASE, &holder, Utc::now(), connectors.lease_ttl()).await {
            Ok(true) => {}
            Ok(false) => {
                // Another replica delivers; read the position afresh when this one takes over.
                after = None;
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "webhook deliveries paused: cannot take their lease");
                after = None;
                continue;
            }
        }
        let stepped = tokio::select! {
            stepped = step(&connectors, &mut after) => stepped,
            why = keep_lease(&connectors, &holder) => {
                tracing::warn!(error = %why, "webhook deliveries stopped mid-page: the lease was lost (another replica takes over)");
                after = None;
                continue;
            }
        };
        if let Err(e) = stepped {
            tracing::warn!(error = %e, "webhook deliveries paused");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let _ = connectors.store().release_lease(LEASE, &holder).await;
}

/// Renews the lease every third of its time to live; returns (why) when it is lost.
async fn keep_lease(connectors: &Connectors, holder: &str) -> String {
    loop {
        tokio::time::sleep(connectors.lease_ttl() / 3).await;
        match connectors.store().acquire_lease(LEASE, holder, Utc::now(), connectors.lease_ttl()).await {
            Ok(true) => {}
            Ok(false) => return "another replica holds it".into(),
            Err(e) => return format!("cannot renew it: {e}"),
        }
    }
}

async fn step(connectors: &Connectors, after: &mut Option<i64>) -> Result<(), crate::Error> {
    let store = connectors.store();
    let from = match *after {
        Some(a) => a,
        None => {
            let saved = store.position(POSITION).await?;
            let start = if saved == 0 { store.last_event_seq().await? } else { saved };
            store.save_position(POSITION, start).await?;
            *after.insert(start)
        }
    };
    let query = EventQuery {
        after: from,
        limit: 256,
        project: None,
        gaps_fill_until: Utc::now() - chrono::Duration::seconds(5),
    };
    let page = store.list_event_page(&query).await?;
    if page.events.is_empty() {
        *after = Some(page.next.max(from));
        return Ok(());
    }
    let hooks: Vec<Spec> = connectors
        .specs()
        .await?
        .into_iter()
        .map(|(s, _)| s)
        .filter(|s| s.kind == Kind::Webhook && s.mode == Mode::Enabled && !s.event_types.is_empty())
        .collect();
    // Webhooks concurrently, each one's events in order: a slow or failing receiver holds up
    // only its own deliveries (and the position, until the page is done).
    let sends = hooks.iter().map(|hook| deliver_page(connectors, hook, &page.events));
    futures::future::join_all(sends).await;
    store.save_position(POSITION, page.next).await?;
    *after = Some(page.next);
    Ok(())
}

/// The events of a page `hook` subscribes to, in order; a `410 Gone` disables it and ends them.
async fn deliver_page(connectors: &Connectors, hook: &Spec, events: &[Event]) {
    for event in events.iter().filter(|e| subscribed(hook, e)) {
        let body = serde_json::to_vec(&message(event)).expect("an event serializes");
        match webhook::deliver(connectors.http(), hook, &event.id, &body, Retry::default()).await {
            Delivery::Delivered => {}
            Delivery::Gone => {
                if let Err(e) = connectors.disable(&hook.id, "the webhook answered 410 Gone").await {
                    tracing::warn!(connector = %hook.id, error = %e, "cannot disable the webhook");
                }
                return;
            }
            Delivery::Failed(why) => {
                tracing::warn!(connector = %hook.id, event = %event.id, error = %why, "webhook delivery given up")
            }
        }
    }
}

fn subscribed(hook: &Spec, event: &Event) -> bool {
    hook.event_types.iter().any(|t| t == "*" || t == event.kind.as_str())
}

/// The Standard Webhooks payload of an event.
fn message(event: &Event) -> serde_json::Value {
    json!({
        "type": event.kind.as_str(),
        "timestamp": event.created_at.to_rfc3339(),
        "data": {
            "id": event.id,
            "seq": event.seq,
            "source": event.source,
            "project_id": event.project_id.as_ref().map(|p| p.to_string()),
            "entity_id": event.entity_id,
            "action": event.action,
            "description": event.description,
            "data": event.data,
        },
    })
}
