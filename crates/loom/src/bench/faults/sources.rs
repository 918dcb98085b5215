//! Rebuilding the history of a run from what the system left behind: the store's event log
//! (dispatches, starts, applied results, rescues), the beads as they ended, and the DLQ.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use loom_domain::{EventKind, ProjectId, Status};
use loom_faults::history::{Applied, Entry, Record};
use loom_store::{BeadFilter, PageRequest, Store};

fn ms_since(epoch: DateTime<Utc>, at: DateTime<Utc>) -> u64 {
    (at - epoch).num_milliseconds().max(0) as u64
}

fn text(data: &serde_json::Value, key: &str) -> Option<String> {
    data.get(key).and_then(|v| v.as_str()).map(str::to_owned)
}

/// Every bead event of the store, in `seq` order (a bead's events are written under its row
/// lock, so their order is the order of its changes).
pub async fn events(store: &dyn Store, epoch: DateTime<Utc>) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut current: HashMap<String, String> = HashMap::new();
    let mut after = 0;
    loop {
        let page = store.list_events(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        for e in page {
            let bead = e.entity_id.clone();
            let t_ms = ms_since(epoch, e.created_at);
            let dispatch = || current.get(&bead).cloned().unwrap_or_default();
            let record = match e.kind {
                EventKind::BeadDispatched => {
                    let Some(d) = text(&e.data, "dispatch_id") else { continue };
                    current.insert(bead.clone(), d.clone());
                    Record::Dispatched { bead, dispatch: d }
                }
                EventKind::BeadStarted => {
                    let Some(d) = text(&e.data, "dispatch_id") else { continue };
                    Record::Delivered { bead, dispatch: d, agent: text(&e.data, "agent").unwrap_or_default() }
                }
                EventKind::BeadClosed if text(&e.data, "from").as_deref() == Some("in_progress") => {
                    Record::ResultAcked { dispatch: dispatch(), bead, applied: Applied::Closed }
                }
                EventKind::BeadStatusChanged if text(&e.data, "from").as_deref() == Some("in_progress") => {
                    let blocked = text(&e.data, "to").as_deref() == Some("blocked");
                    if e.data.get("error").is_some() || blocked {
                        let applied = if blocked { Applied::Blocked } else { Applied::Retrying };
                        Record::ResultAcked { dispatch: dispatch(), bead, applied }
                    } else {
                        let reason = text(&e.data, "reason").unwrap_or_default();
                        Record::Rescued { dispatch: dispatch(), bead, reason }
                    }
                }
                _ => continue,
            };
            entries.push(Entry { t_ms, record });
        }
    }
    Ok(entries)
}

/// The project's beads as they ended. A dispatched bead no agent started is `queued`.
pub async fn finals(store: &dyn Store, project: &ProjectId, t_ms: u64) -> anyhow::Result<Vec<Entry>> {
    let filter = BeadFilter { project: Some(project.clone()), ..BeadFilter::default() };
    let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
    let now = Utc::now();
    let mut entries = Vec::new();
    loop {
        let got = store.list_beads(&filter, &page).await?;
        for b in got.beads {
            let status = match (b.status, b.started_at) {
                (Status::InProgress, None) => "queued".to_owned(),
                (status, _) => status.as_str().to_owned(),
            };
            let live_lease = b.lease_expires_at.is_some_and(|until| until > now);
            let record =
                Record::Final { bead: b.id.to_string(), key: b.title, status, live_lease, queued_message: false };
            entries.push(Entry { t_ms, record });
        }
        match got.next_cursor {
            Some(cursor) => page.after = Some(cursor),
            None => break,
        }
    }
    Ok(entries)
}

/// Every message in the DLQ, by its original `Nats-Msg-Id` (`Loom-Dlq-Msg-Id`).
pub async fn dead_letters(bus: &loom_bus::Bus, t_ms: u64) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut from = 1;
    loop {
        let page = bus.read_dlq(from, 500).await?;
        let Some(last) = page.last() else { break };
        let next = last.dlq_sequence + 1;
        let done = next <= from;
        from = next;
        for dl in page {
            // The DLQ's own message id is `{stream}:{seq}`; the original is kept beside it.
            let headers = &dl.headers;
            let msg_id = headers
                .get(loom_bus::header::DLQ_MSG_ID)
                .or_else(|| headers.get(loom_bus::header::MSG_ID))
                .map_or_else(|| format!("{}#{}", dl.stream, dl.stream_sequence), str::to_owned);
            let record = Record::DeadLettered { msg_id, bead: dl.bead_id.map(|b| b.to_string()), reason: dl.reason };
            entries.push(Entry { t_ms, record });
        }
        if done {
            break;
        }
        if done {
            break;
        }
    }
    Ok(entries)
}
