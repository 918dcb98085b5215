//! The audit log of API writes: who (API key id, name and role), what (method, route, path),
//! when, and the outcome (status, duration).
//!
//! Every write request (any method but `GET`/`HEAD`) is logged as a structured `tracing` line with
//! target `audit` when its response is ready, refused ones included (a missing or unknown key is a
//! `warn`). Writes by an authenticated caller are also recorded as `audit.api_write` events, which
//! `GET /api/v1/events`, the SSE stream (event name `audit.api_write`) and the bus
//! (`loom.events.audit.api_write`) carry like any other. Unauthenticated attempts are logged only: anyone can send them, and they must not be able
//! to fill the event log.
//!
//! The events are written behind the response by one writer task that appends whatever has
//! queued up in one transaction ([`loom_store::Store::append_events`]), so a burst of writes costs
//! a few commits, not one each. The queue is bounded: when the store falls behind, requests wait
//! for room rather than drop a record; a batch the store refuses is retried with backoff until it
//! is written or the control plane stops. At shutdown the queue is drained (for a few seconds at
//! most); records still unwritten then are counted in the error log — the `audit` log lines,
//! written synchronously, still hold them.

use std::sync::Arc;
use std::time::Duration;

use loom_domain::{EventKind, Role};
use loom_store::{NewEvent, Store};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Records waiting for the writer; beyond this, API writes wait for room.
const QUEUE: usize = 8192;
/// Most records appended in one transaction.
const BATCH: usize = 512;
/// How long the writer keeps draining after shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Who made a request, as the API key check found it.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub key_id: String,
    pub key_name: String,
    pub role: Role,
}

impl Caller {
    /// The caller when authentication is off (`--insecure-no-auth`, loopback only).
    pub(crate) fn anonymous() -> Self {
        Self { key_id: String::new(), key_name: "anonymous (authentication off)".into(), role: Role::Admin }
    }
}

/// One finished write request.
pub(crate) struct Write<'a> {
    pub method: &'a str,
    /// The templated route (`/api/v1/beads/{id}/close`), or the path when nothing matched.
    pub route: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub elapsed: Duration,
}

/// The sending half of the audit queue.
#[derive(Clone, Debug)]
pub(crate) struct Audit {
    queue: mpsc::Sender<NewEvent>,
}

impl Audit {
    /// The queue and the writer that empties it into `store` (spawned by the caller).
    pub(crate) fn new(
        store: Arc<dyn Store>,
        wake: watch::Sender<()>,
        stop: CancellationToken,
    ) -> (Self, impl Future<Output = ()>) {
        let (queue, records) = mpsc::channel(QUEUE);
        (Self { queue }, write_events(store, records, wake, stop))
    }

    /// Logs a write and queues its event (authenticated callers only).
    pub(crate) async fn record(&self, caller: Option<&Caller>, write: &Write<'_>) {
        let millis = write.elapsed.as_secs_f64() * 1000.0;
        let Some(caller) = caller else {
            tracing::warn!(
                target: "audit",
                method = write.method,
                route = write.route,
                path = write.path,
                status = write.status,
                "API write refused before authentication"
            );
            return;
        };
        tracing::info!(
            target: "audit",
            key_id = %caller.key_id,
            key_name = %caller.key_name,
            role = %caller.role,
            method = write.method,
            route = write.route,
            path = write.path,
            status = write.status,
            duration_ms = millis,
            "API write"
        );
        let event = NewEvent {
            kind: EventKind::ApiWrite,
            source: "api".into(),
            project_id: None,
            entity_id: write.path.to_owned(),
            action: "api_write".into(),
            description: format!(
                "{} {} by key {:?} ({}) → {}",
                write.method, write.path, caller.key_name, caller.role, write.status
            ),
            data: serde_json::json!({
                "key_id": caller.key_id,
                "key_name": caller.key_name,
                "role": caller.role.as_str(),
                "method": write.method,
                "route": write.route,
                "path": write.path,
                "status": write.status,
                "duration_ms": millis,
            }),
            correlation_id: None,
        };
        if self.queue.send(event).await.is_err() {
            tracing::error!(target: "audit", path = write.path, "the audit writer has stopped; this write is in the log only");
        }
    }
}

/// Appends queued records in batches until `stop`, then drains what is left.
async fn write_events(
    store: Arc<dyn Store>,
    mut records: mpsc::Receiver<NewEvent>,
    wake: watch::Sender<()>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        tokio::select! {
            n = records.recv_many(&mut batch, BATCH) => if n == 0 { return },
            _ = stop.cancelled() => break,
        }
        append(&*store, &mut batch, &wake, &stop).await;
    }
    // Stopped (after the API has answered its last request): what is queued gets a few seconds.
    let drained = tokio::time::timeout(DRAIN, async {
        let never = CancellationToken::new();
        while !batch.is_empty() || !records.is_empty() {
            if batch.is_empty() {
                records.recv_many(&mut batch, BATCH).await;
            }
            append(&*store, &mut batch, &wake, &never).await;
        }
    })
    .await;
    if drained.is_err() {
        let left = batch.len() + records.len();
        tracing::error!(target: "audit", left, "the control plane stopped before these audit events were written");
    }
}

/// Appends `batch`, retrying with backoff until it is written (then empties it) or `stop` fires.
async fn append(store: &dyn Store, batch: &mut Vec<NewEvent>, wake: &watch::Sender<()>, stop: &CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        match store.append_events(batch.clone()).await {
            Ok(()) => {
                batch.clear();
                let _ = wake.send(());
                return;
            }
            Err(e) => {
                tracing::warn!(target: "audit", error = %e, records = batch.len(), "cannot write audit events yet; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
