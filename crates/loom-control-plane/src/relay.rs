//! The relays: the outbox relay publishes claimed tasks (and cancellations) and marks them sent
//! only after JetStream stored them; the event relay publishes the store's events on
//! `loom.events.{type}`. Both run only on the dispatcher leader; a re-publish after a crash is
//! deduplicated by `Nats-Msg-Id`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use loom_bus::{Bus, EventBody, EventMessage, Outgoing, TaskData, TaskKind, TaskMessage, TaskMetadata, TraceContext};
use loom_domain::{BeadId, ContextMap, DispatchId, EventKind, ProjectId};
use loom_store::{Claim, OutboxKind, OutboxMessage, TaskSnapshot};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cursor::EventCursor;
use crate::dispatcher::RETRY_DELAY;
use crate::{Error, Shared};

const BATCH: u32 = 512;

pub(crate) async fn run_outbox(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = shared.relay_wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        if !shared.is_leader() {
            continue;
        }
        if let Err(e) = relay_outbox(&shared).await {
            tracing::warn!(error = %e, "outbox relay failed; retrying");
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }
}

/// How old a `task.assigned` row must be before the relay publishes it: younger ones are being
/// published by the dispatcher's publisher, which marks them sent.
const GRACE: Duration = Duration::from_secs(2);

/// Publishes the outbox until nothing is left for the relay; returns how many messages were
/// published. Cancellations go at once; tasks once they are older than `GRACE`.
pub(crate) async fn relay_outbox(shared: &Shared) -> Result<usize, Error> {
    let mut published = 0;
    loop {
        let rows = shared.store.take_outbox(BATCH).await?;
        let due = Utc::now() - GRACE;
        let taken = rows.len();
        if published == 0 {
            // Unsent outbox rows, young ones included.
            crate::backlog::observe(&*shared.store, taken, BATCH).await;
        }
        let rows: Vec<OutboxMessage> =
            rows.into_iter().filter(|r| r.kind != OutboxKind::TaskAssigned || r.created_at < due).collect();
        if rows.is_empty() {
            return Ok(published);
        }
        let mut sendable = Vec::with_capacity(rows.len());
        let mut ids = Vec::with_capacity(rows.len());
        let mut spans = Vec::new();
        for row in &rows {
            let project_context = shared.contexts.get(&*shared.store, &row.project_id).await?;
            let remaining = if row.kind == OutboxKind::TaskAssigned {
                let context: ContextMap = serde_json::from_value(row.payload["context"].clone()).unwrap_or_default();
                let store = &*shared.store;
                crate::oversight::remaining(store, &row.bead_id, &row.project_id, &context, &project_context).await?
            } else {
                None
            };
            let span = shared.traces.producer_span(row.bead_id.as_str(), row.dispatch_id.as_str(), row.attempt);
            let built = span.in_scope(|| task_message(shared, row, project_context, remaining));
            spans.push(span);
            match built {
                Ok(msg) => {
                    sendable.push(msg);
                    ids.push(row.id);
                }
                // A row the bus refuses can never be sent: its bead is blocked with the reason
                // (never left in progress, never retried at the head of the outbox forever).
                Err(e) => unpublishable(shared, row, &e).await?,
            }
        }
        // Built unsigned; one signature covers the batch. A bus without a signing key refused
        // every task above.
        shared.bus.sign_tasks(&mut sendable)?;
        let results = shared.bus.publish_batch(sendable).await;
        drop(spans);
        let sent: Vec<i64> = ids.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(id, _)| *id).collect();
        shared.store.mark_outbox_sent(&sent).await?;
        published += sent.len();
        metrics::counter!("loom_outbox_relayed_total").increment(sent.len() as u64);
        if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
            return Err(e.into());
        }
        if taken < BATCH as usize {
            return Ok(published);
        }
    }
}

/// Blocks the bead of an outbox row that cannot be built or published (the API validates what
/// could cause that, so this is a last resort), then forgets the row.
async fn unpublishable(shared: &Shared, row: &OutboxMessage, e: &Error) -> Result<(), Error> {
    let reason = format!("its task cannot be published: {e}");
    tracing::error!(bead = %row.bead_id, dispatch = %row.dispatch_id, %reason, "blocking the bead");
    if row.kind == OutboxKind::TaskAssigned && shared.store.block_dispatch(&row.dispatch_id, &reason).await?.is_some() {
        shared.changed();
    }
    shared.store.mark_outbox_sent(&[row.id]).await?;
    Ok(())
}

/// Published tasks' outbox rows are marked sent together, at most this long after the first of
/// them was published: one commit for many tasks, off the dispatch path. Until then (and if the
/// mark fails) the relay may publish them again after `GRACE`, which JetStream deduplicates.
const MARK_EVERY: Duration = Duration::from_millis(100);

/// The dispatcher's publisher: publishes the tasks of fresh claims in claim order, then marks
/// their outbox rows sent. What it cannot publish stays in the outbox for the relay.
pub(crate) async fn run_publisher(
    shared: Arc<Shared>,
    mut claims: mpsc::Receiver<Vec<Claim>>,
    shutdown: CancellationToken,
) {
    let mut unmarked: Vec<i64> = Vec::new();
    let mut mark_at = tokio::time::Instant::now();
    loop {
        let mut batch = tokio::select! {
            _ = shutdown.cancelled() => break,
            c = claims.recv() => match c { Some(c) => c, None => break },
            _ = tokio::time::sleep_until(mark_at), if !unmarked.is_empty() => {
                mark_sent(&shared, std::mem::take(&mut unmarked)).await;
                continue;
            }
        };
        while let Ok(more) = claims.try_recv() {
            batch.extend(more);
        }
        let mut msgs = Vec::with_capacity(batch.len());
        let mut built = Vec::with_capacity(batch.len());
        let mut spans = Vec::new();
        for claim in &batch {
            // A producer span per task, in its bead's trace; its context goes out in the headers.
            let span = shared.traces.producer_span(claim.bead.id.as_str(), claim.dispatch_id.as_str(), claim.attempt);
            let built_task = match shared.contexts.get(&*shared.store, &claim.bead.project_id).await {
                Ok(project_context) => {
                    let mut snapshot = TaskSnapshot::of(&claim.bead);
                    match budgeted(&shared, &claim.bead.id, &claim.bead.project_id, &mut snapshot, &project_context)
                        .await
                    {
                        Ok(()) => span.in_scope(|| claimed_task(&shared, claim, snapshot, project_context)),
                        Err(e) => Err(e.into()),
                    }
                }
                Err(e) => Err(e.into()),
            };
            spans.push(span);
            match built_task {
                Ok(msg) => {
                    msgs.push(msg);
                    built.push(claim);
                }
                Err(e) => {
                    tracing::error!(error = %e, dispatch = %claim.dispatch_id, "cannot build a task; the relay will retry")
                }
            }
        }
        // Built unsigned; one signature covers the batch (a bus without a signing key refused
        // every task above).
        if let Err(e) = shared.bus.sign_tasks(&mut msgs) {
            tracing::error!(error = %e, "cannot sign claimed tasks; the relay will retry");
            continue;
        }
        let results = shared.bus.publish_batch(msgs).await;
        drop(spans);
        let published: Vec<&Claim> = built.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(c, _)| *c).collect();
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            tracing::warn!(error = %e, failed = built.len() - published.len(), "publishing claimed tasks failed; the relay will retry");
        }
        // Dispatch latency of first attempts: from the bead's creation to JetStream holding its task.
        let now = Utc::now();
        for claim in published.iter().filter(|c| c.attempt == 1) {
            let waited = (now - claim.bead.created_at).to_std().unwrap_or_default();
            metrics::histogram!("loom_dispatch_latency_seconds").record(waited.as_secs_f64());
        }
        let sent: Vec<i64> = published.iter().map(|c| c.outbox_id).collect();
        metrics::counter!("loom_tasks_published_total").increment(sent.len() as u64);
        if unmarked.is_empty() {
            mark_at = tokio::time::Instant::now() + MARK_EVERY;
        }
        unmarked.extend(sent);
    }
    if !unmarked.is_empty() {
        mark_sent(&shared, unmarked).await;
    }
}

/// Marks published rows sent, in the background; a failure only means the relay sends them again.
async fn mark_sent(shared: &Arc<Shared>, ids: Vec<i64>) {
    let store = shared.store.clone();
    let marking = tokio::spawn(async move {
        if let Err(e) = store.mark_outbox_sent(&ids).await {
            tracing::warn!(error = %e, "cannot mark published tasks sent; the relay will publish them again");
        }
    });
    if shared.shutdown.is_cancelled() {
        let _ = marking.await;
    }
}

/// Adds what is left of the bead's and its project's token budgets to the task (when they set
/// one); see `oversight`.
async fn budgeted(
    shared: &Shared,
    bead: &BeadId,
    project: &ProjectId,
    snapshot: &mut TaskSnapshot,
    project_context: &ContextMap,
) -> Result<(), loom_store::Error> {
    crate::oversight::budget_task_context(&*shared.store, bead, project, &mut snapshot.context, project_context).await
}

fn claimed_task(
    shared: &Shared,
    claim: &Claim,
    snapshot: TaskSnapshot,
    project_context: ContextMap,
) -> Result<Outgoing, Error> {
    let row = Assignment {
        project_id: &claim.bead.project_id,
        bead_id: &claim.bead.id,
        dispatch_id: &claim.dispatch_id,
        attempt: claim.attempt,
    };
    let mut task = assigned(&row, snapshot, project_context);
    route(shared, &mut task);
    Ok(shared.bus.unsigned_task(&task, &crate::traces::trace_context(loom_telemetry::propagate::current()))?)
}

/// Sends a task with a role to that role's queue only while a live agent is bound to the role
/// (`loom serve agent --role`); otherwise to the project's queue, whose agents play the bead's
/// persona from its context. So a bead with a role nobody is bound to still runs (it never waits
/// on a queue no agent reads), and a dedicated pool gets its role's work when it exists.
fn route(shared: &Shared, task: &mut TaskMessage) {
    if let Some(role) = &task.metadata.role
        && !shared.slots().role_served(&task.project_id, role)
    {
        task.metadata.role = None;
    }
}

/// Refuses a bead whose task could not be published (a role that is no subject token, a body
/// over the stream's message limit): the task is built here exactly as the publisher will
/// build it, so a bead the API accepts is one its agents can be sent.
pub(crate) fn check_publishable(
    bus: &Bus,
    project: &ProjectId,
    snapshot: TaskSnapshot,
    project_context: ContextMap,
) -> Result<(), Error> {
    let probe = Assignment {
        project_id: project,
        bead_id: &BeadId::parse("probe-zzzzzzzzzzzz").map_err(Error::Domain)?,
        dispatch_id: &DispatchId::parse("00000000-0000-0000-0000-000000000000").map_err(Error::Domain)?,
        attempt: u32::MAX,
    };
    bus.unsigned_task(&assigned(&probe, snapshot, project_context), &TraceContext::default())?;
    Ok(())
}

/// Where a task goes and which dispatch it is.
struct Assignment<'a> {
    project_id: &'a ProjectId,
    bead_id: &'a BeadId,
    dispatch_id: &'a DispatchId,
    attempt: u32,
}

fn assigned(a: &Assignment<'_>, snap: TaskSnapshot, project_context: ContextMap) -> TaskMessage {
    let role = snap.context.get("role").cloned();
    let executor = snap.context.get("executor").cloned().unwrap_or_default();
    TaskMessage {
        kind: TaskKind::Assigned,
        project_id: a.project_id.clone(),
        bead_id: a.bead_id.clone(),
        assigned_to: snap.assignee.unwrap_or_default(),
        task_data: TaskData {
            title: snap.title,
            description: snap.description,
            priority: snap.priority,
            bead_type: snap.bead_type,
            context: snap.context,
            work_dir: String::new(),
            project_context,
        },
        correlation_id: a.dispatch_id.to_string(),
        timestamp: Utc::now(),
        metadata: TaskMetadata { dispatch_id: a.dispatch_id.clone(), attempt: a.attempt, role, executor },
    }
}

fn task_message(
    shared: &Shared,
    row: &OutboxMessage,
    project_context: ContextMap,
    remaining: Option<u64>,
) -> Result<Outgoing, Error> {
    let a = Assignment {
        project_id: &row.project_id,
        bead_id: &row.bead_id,
        dispatch_id: &row.dispatch_id,
        attempt: row.attempt,
    };
    let msg = match row.kind {
        OutboxKind::TaskAssigned => {
            let mut snap: TaskSnapshot = serde_json::from_value(row.payload.clone())
                .map_err(|e| Error::Io(format!("corrupt outbox payload: {e}")))?;
            if let Some(left) = remaining {
                snap.context.insert(crate::oversight::BUDGET_REMAINING.into(), left.to_string());
            }
            let mut task = assigned(&a, snap, project_context);
            route(shared, &mut task);
            task
        }
        OutboxKind::TaskCancelled => {
            let role = row.payload.get("role").and_then(|r| r.as_str()).map(str::to_owned);
            let mut task = TaskMessage {
                kind: TaskKind::Cancelled,
                project_id: row.project_id.clone(),
                bead_id: row.bead_id.clone(),
                assigned_to: String::new(),
                task_data: TaskData::default(),
                correlation_id: row.dispatch_id.to_string(),
                timestamp: Utc::now(),
                metadata: TaskMetadata {
                    dispatch_id: row.dispatch_id.clone(),
                    attempt: row.attempt,
                    role,
                    executor: String::new(),
                },
            };
            route(shared, &mut task);
            task
        }
    };
    Ok(shared.bus.unsigned_task(&msg, &crate::traces::trace_context(loom_telemetry::propagate::current()))?)
}

pub(crate) async fn run_events(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut cursor: Option<EventCursor> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            // Often, so events go out in small batches rather than bursts that delay tasks.
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if !shared.is_leader() {
            cursor = None;
            continue;
        }
        // Drain the backlog before sleeping again.
        loop {
            match relay_events(&shared, &mut cursor).await {
                Ok(n) if n > 0 && !shutdown.is_cancelled() => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "event relay failed; retrying");
                    break;
                }
            }
        }
    }
}

/// Events published per pass.
const EVENT_BATCH: u32 = 500;

/// The store position of the event relay: every event at or below it is on the bus.
pub(crate) const EVENT_POSITION: &str = "event-relay";

/// Where a new leader's event relay starts: the saved position, so the bus sees every event
/// the store has across restarts and leader changes (a repeat is deduplicated by event id). The
/// migration that added positions saved the head of the events then, so an upgrade does not
/// replay history and a fresh store relays its first events too.
async fn resume_position(shared: &Shared) -> Result<i64, Error> {
    Ok(shared.store.position(EVENT_POSITION).await?)
}

/// Publishes the events not published yet; returns how many.
async fn relay_events(shared: &Shared, cursor: &mut Option<EventCursor>) -> Result<usize, Error> {
    let cursor = match cursor {
        Some(c) => c,
        None => cursor.insert(EventCursor::after(resume_position(shared).await?)),
    };
    let events = cursor.pending(&*shared.store, EVENT_BATCH).await?;
    let mut msgs = Vec::with_capacity(events.len());
    // An event about a bead continues the bead's trace; any other, this pass's.
    let pass = if loom_telemetry::propagate::enabled() && !events.is_empty() {
        tracing::info_span!(
            "events.publish",
            otel.name = "publish loom.events",
            otel.kind = "producer",
            count = events.len()
        )
    } else {
        tracing::Span::none()
    };
    let pass_trace = loom_telemetry::propagate::carrier_of(&pass);
    for e in &events {
        let msg = EventMessage {
            kind: e.kind,
            source: e.source.clone(),
            project_id: e.project_id.clone(),
            entity_id: e.entity_id.clone(),
            event: EventBody {
                action: e.action.clone(),
                category: e.kind.category().to_owned(),
                description: e.description.clone(),
                data: e.data.clone(),
            },
            correlation_id: e.correlation_id.clone().unwrap_or_default(),
            timestamp: e.created_at,
        };
        let trace = shared.traces.get(&e.entity_id).unwrap_or_else(|| pass_trace.clone());
        msgs.push(shared.bus.event(&msg, &e.id, &crate::traces::trace_context(trace))?);
    }
    for r in shared.bus.publish_batch(msgs).await {
        r?;
    }
    let before = cursor.resume_token();
    cursor.handled(&events);
    if cursor.resume_token() > before {
        shared.store.save_position(EVENT_POSITION, cursor.resume_token()).await?;
    }
    // A change made through another instance (its API wakes only its own, idle, dispatcher)
    // reaches this dispatcher within one relay pass instead of at its next sweep.
    if events.iter().any(|e| e.kind.category() == "project") {
        shared.projects_changed.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if events.iter().any(|e| may_ready_beads(e.kind)) {
        shared.dispatch_wake.notify_one();
    }
    Ok(events.len())
}

/// Whether an event of this kind may have made a bead ready or freed a concurrency slot.
fn may_ready_beads(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::ProjectCreated
            | EventKind::ProjectUpdated
            | EventKind::BeadCreated
            | EventKind::BeadUpdated
            | EventKind::BeadStatusChanged
            | EventKind::BeadClosed
            | EventKind::BeadDependencyRemoved
    )
}
