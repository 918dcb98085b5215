//! The embedded in-process bus (tokio only), for `loom up` without NATS. Same semantics as the
//! JetStream backend: work-queue streams, durable consumers shared by competing subscribers,
//! explicit ack, in-progress ack, nak with delay, redelivery after the ack wait, dead letter
//! after max deliveries, dedupe on `Nats-Msg-Id` within the window.
//!
//! Its state lives in this process's memory only: it does NOT survive a restart.

mod core;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::core::{Core, MAX_MSG, filters_overlap};
use crate::Error;
use crate::backend::{ConsumerSpec, RawDelivery, Settle};
use crate::config::{BusConfig, Names, StreamKind};
use crate::dead_letter::{self, DeadLetter, Origin};
use crate::envelope::{Outgoing, Receipt};
use crate::health::{ConsumerLag, Health};
use crate::registry::KvEvent;
use crate::subject::Subjects;

/// How often expired ack deadlines are looked for.
const REAP_EVERY: Duration = Duration::from_millis(50);

#[derive(Clone, Debug)]
pub(crate) struct Embedded {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    core: Mutex<Core>,
    /// Woken whenever a message becomes deliverable.
    ready: Notify,
    dead_letters: broadcast::Sender<DeadLetter>,
    kv_changes: broadcast::Sender<KvChange>,
    subjects: Subjects,
    ack_wait: Duration,
    max_deliver: u32,
    duplicate_window: Duration,
}

#[derive(Clone, Debug)]
enum KvChange {
    Put(Bytes, DateTime<Utc>),
    Removed(String),
}

/// Settles one embedded delivery.
#[derive(Debug)]
pub(crate) struct Acker {
    shared: Arc<Shared>,
    consumer: String,
    seq: u64,
    token: u64,
}

impl Embedded {
    pub(crate) fn new(config: &BusConfig, names: Names, shutdown: CancellationToken) -> Embedded {
        let shared = Arc::new(Shared {
            core: Mutex::new(Core::default()),
            ready: Notify::new(),
            dead_letters: broadcast::channel(1024).0,
            kv_changes: broadcast::channel(1024).0,
            subjects: Subjects::new(names),
            ack_wait: config.ack_wait,
            max_deliver: config.max_deliver,
            duplicate_window: config.duplicate_window,
        });
        tokio::spawn(reap(Arc::downgrade(&shared), shutdown));
        Embedded { shared }
    }

    pub(crate) fn publish(&self, msg: Outgoing) -> Result<Receipt, Error> {
        let publish_err = |reason: &str| Error::Publish { subject: msg.subject.clone(), reason: reason.to_owned() };
        let Some(kind) = self.shared.subjects.names().kind_of(&msg.subject) else {
            return Err(publish_err("no stream matches the subject"));
        };
        if msg.payload.len() > MAX_MSG {
            return Err(publish_err("message size exceeds maximum allowed"));
        }
        let now = Instant::now();
        let (seq, duplicate) = {
            let mut core = self.shared.lock();
            core.prune_by_age(now);
            core.store(kind, msg, self.shared.duplicate_window, now)
        };
        if !duplicate {
            self.shared.ready.notify_waiters();
        }
        Ok(Receipt { stream_sequence: seq, duplicate })
    }

    pub(crate) fn subscribe(
        &self,
        spec: ConsumerSpec,
        permits: Arc<Semaphore>,
        cancel: CancellationToken,
    ) -> Result<Puller, Error> {
        let key = format!("{}/{}", spec.kind.token(), spec.durable);
        {
            let mut core = self.shared.lock();
            match core.consumers.get(&key) {
                Some(c) if c.filter != spec.filter => {
                    return Err(Error::Mismatch {
                        kind: "consumer",
                        name: spec.durable.clone(),
                        differences: format!("filter_subject: have {:?}, want {:?}", c.filter, spec.filter),
                    });
                }
                Some(_) => {}
                None => {
                    let overlapping = core
                        .consumers
                        .iter()
                        .find(|(k, c)| c.kind == spec.kind && **k != key && filters_overlap(&c.filter, &spec.filter));
                    if let Some((other, _)) = overlapping {
                        return Err(Error::backend(
                            "create consumer",
                            format!("filter {} overlaps consumer {other} on a work-queue stream", spec.filter),
                        ));
                    }
                    core.add_consumer(key.clone(), spec.kind, spec.filter.clone(), Instant::now());
                }
            }
        }
        Ok(Puller { shared: self.shared.clone(), consumer: key, permits, cancel })
    }

    pub(crate) fn watch_dead_letters(&self, tx: mpsc::Sender<DeadLetter>, cancel: CancellationToken) {
        let mut rx = self.shared.dead_letters.subscribe();
        tokio::spawn(async move {
            loop {
                let notice = tokio::select! {
                    _ = cancel.cancelled() => return,
                    n = rx.recv() => n,
                };
                match notice {
                    Ok(n) => {
                        if tx.send(n).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => tracing::warn!(n, "dead-letter notices dropped"),
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
    }

    pub(crate) fn read_raw(
        &self,
        kind: StreamKind,
        from: u64,
        limit: usize,
    ) -> Vec<(u64, async_nats::HeaderMap, Bytes)> {
        let core = self.shared.lock();
        let Some(stream) = core.streams.get(&kind) else { return vec![] };
        stream.messages.range(from..).take(limit).map(|(seq, m)| (*seq, m.headers.clone(), m.payload.clone())).collect()
    }

    pub(crate) fn stream_messages(&self, kind: StreamKind) -> u64 {
        self.shared.lock().streams.get(&kind).map_or(0, |s| s.messages.len() as u64)
    }

    pub(crate) fn read_dlq(&self, subjects: &Subjects, from: u64, limit: usize) -> Vec<DeadLetter> {
        let core = self.shared.lock();
        let Some(stream) = core.streams.get(&StreamKind::Dlq) else { return vec![] };
        stream
            .messages
            .range(from..)
            .take(limit)
            .map(|(seq, m)| dead_letter::parse(subjects, *seq, m.headers.clone(), m.payload.clone()))
            .collect()
    }

    pub(crate) fn stream_name(&self, kind: StreamKind) -> String {
        self.shared.subjects.names().stream(kind)
    }

    pub(crate) fn health(&self) -> Health {
        let core = self.shared.lock();
        let mut consumers: Vec<ConsumerLag> = core
            .consumers
            .iter()
            .map(|(key, c)| ConsumerLag {
                stream: self.shared.subjects.names().stream(c.kind),
                consumer: key.split_once('/').map_or(key.as_str(), |(_, d)| d).to_owned(),
                num_pending: c.ready.len() as u64,
                num_ack_pending: c.in_flight.len() as u64,
            })
            .collect();
        consumers.sort_by(|a, b| (&a.stream, &a.consumer).cmp(&(&b.stream, &b.consumer)));
        Health { connected: true, jetstream: true, unanswered: Vec::new(), consumers }
    }

    pub(crate) fn kv_put(&self, key: &str, value: Bytes) -> Result<(), Error> {
        let now = Utc::now();
        self.shared.lock().kv.insert(key.to_owned(), (value.clone(), now));
        self.shared.kv_changes.send(KvChange::Put(value, now)).ok();
        Ok(())
    }

    pub(crate) fn kv_delete(&self, key: &str) -> Result<(), Error> {
        self.shared.lock().kv.remove(key);
        self.shared.kv_changes.send(KvChange::Removed(key.to_owned())).ok();
        Ok(())
    }

    pub(crate) fn kv_entries(&self) -> Vec<(Bytes, DateTime<Utc>)> {
        self.shared.lock().kv.values().cloned().collect()
    }

    pub(crate) fn kv_watch(&self, tx: mpsc::Sender<KvEvent>, cancel: CancellationToken) {
        let mut rx = self.shared.kv_changes.subscribe();
        let current = self.kv_entries();
        tokio::spawn(async move {
            for (value, created) in current {
                if tx.send(KvEvent::Put { value, created }).await.is_err() {
                    return;
                }
            }
            loop {
                let change = tokio::select! {
                    _ = cancel.cancelled() => return,
                    c = rx.recv() => c,
                };
                let event = match change {
                    Ok(KvChange::Put(value, created)) => KvEvent::Put { value, created },
                    Ok(KvChange::Removed(key)) => KvEvent::Removed { key },
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        });
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes the next due message of a consumer, or says when to look again.
    fn take(self: &Arc<Self>, consumer: &str, now: Instant) -> Result<RawDelivery, Option<Instant>> {
        let mut guard = self.lock();
        let core = &mut *guard;
        let Some(c) = core.consumers.get_mut(consumer) else { return Err(None) };
        loop {
            let Some(&(at, seq)) = c.ready.first() else { return Err(None) };
            if at > now {
                return Err(Some(at));
            }
            c.ready.pop_first();
            let Some(m) = core.streams.get_mut(&c.kind).and_then(|s| s.messages.get_mut(&seq)) else { continue };
            m.deliveries += 1;
            core.next_token += 1;
            let token = core.next_token;
            c.in_flight.insert(seq, core::Flight { deadline: now + self.ack_wait, token });
            return Ok(RawDelivery {
                subject: m.subject.clone(),
                headers: m.headers.clone(),
                payload: m.payload.clone(),
                stream_sequence: seq,
                deliveries: m.deliveries,
                acker: crate::backend::Acker::Embedded(Acker {
                    shared: self.clone(),
                    consumer: consumer.to_owned(),
                    seq,
                    token,
                }),
                permit: None,
            });
        }
    }

    /// A delivery is over without an ack (nak or ack wait expired): schedule the next one, or
    /// dead-letter the message when it has had all its deliveries.
    fn retry_or_dead_letter(&self, core: &mut Core, consumer: &str, seq: u64, at: Instant) -> Option<DeadLetter> {
        let c = core.consumers.get_mut(consumer)?;
        let kind = c.kind;
        let stream = core.streams.get_mut(&kind)?;
        let m = stream.messages.get(&seq)?;
        if m.deliveries < self.max_deliver {
            c.ready.insert((at, seq));
            return None;
        }
        let m = stream.messages.remove(&seq)?;
        let stream_name = self.subjects.names().stream(kind);
        let origin =
            Origin { kind, stream: &stream_name, subject: &m.subject, stream_sequence: seq, deliveries: m.deliveries };
        let reason = format!("max deliveries ({}) reached", self.max_deliver);
        let dlq = dead_letter::dlq_message(&self.subjects, &origin, &m.headers, m.payload, &reason);
        let headers = dlq.headers.clone();
        let payload = dlq.payload.clone();
        let (dlq_seq, _) = core.store(StreamKind::Dlq, dlq, self.duplicate_window, Instant::now());
        tracing::warn!(subject = %m.subject, seq, %reason, "dead-lettered message");
        Some(dead_letter::parse(&self.subjects, dlq_seq, headers, payload))
    }
}

impl Acker {
    pub(crate) fn send(&self, settle: Settle) -> Result<(), Error> {
        let now = Instant::now();
        let notice = {
            let mut guard = self.shared.lock();
            let core = &mut *guard;
            let Some(c) = core.consumers.get_mut(&self.consumer) else { return Ok(()) };
            // A stale handle (the message was redelivered to someone else) changes nothing.
            if c.in_flight.get(&self.seq).is_none_or(|f| f.token != self.token) {
                return Ok(());
            }
            match settle {
                Settle::Progress => {
                    if let Some(f) = c.in_flight.get_mut(&self.seq) {
                        f.deadline = now + self.shared.ack_wait;
                    }
                    return Ok(());
                }
                Settle::Ack | Settle::Term => {
                    c.in_flight.remove(&self.seq);
                    let kind = c.kind;
                    if let Some(s) = core.streams.get_mut(&kind) {
                        s.messages.remove(&self.seq);
                    }
                    return Ok(());
                }
                Settle::Nak(delay) => {
                    c.in_flight.remove(&self.seq);
                    let at = now + delay.unwrap_or_default();
                    self.shared.retry_or_dead_letter(core, &self.consumer, self.seq, at)
                }
            }
        };
        self.shared.ready.notify_waiters();
        if let Some(n) = notice {
            self.shared.dead_letters.send(n).ok();
        }
        Ok(())
    }
}

/// One subscriber: takes a permit, then waits for a due message of its consumer.
#[derive(Debug)]
pub(crate) struct Puller {
    shared: Arc<Shared>,
    consumer: String,
    permits: Arc<Semaphore>,
    cancel: CancellationToken,
}

impl Puller {
    /// The next delivery, or `None` once cancelled.
    pub(crate) async fn next(&mut self) -> Option<RawDelivery> {
        let permit: OwnedSemaphorePermit = tokio::select! {
            _ = self.cancel.cancelled() => return None,
            p = self.permits.clone().acquire_owned() => p.ok()?,
        };
        loop {
            let notified = self.shared.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake = match self.shared.take(&self.consumer, Instant::now()) {
                Ok(mut raw) => {
                    raw.permit = Some(permit);
                    return Some(raw);
                }
                Err(wake) => wake.unwrap_or_else(|| Instant::now() + Duration::from_secs(1)),
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }
}

/// Puts deliveries whose ack wait expired back in line (or in the DLQ).
async fn reap(shared: std::sync::Weak<Shared>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(REAP_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(shared) = shared.upgrade() else { return };
        let now = Instant::now();
        let (expired_any, notices) = {
            let mut guard = shared.lock();
            let core = &mut *guard;
            let mut expired = Vec::new();
            for (key, c) in core.consumers.iter_mut() {
                c.in_flight.retain(|seq, f| {
                    let keep = f.deadline > now;
                    if !keep {
                        expired.push((key.clone(), *seq));
                    }
                    keep
                });
            }
            let notices: Vec<DeadLetter> =
                expired.iter().filter_map(|(key, seq)| shared.retry_or_dead_letter(core, key, *seq, now)).collect();
            (!expired.is_empty(), notices)
        };
        if expired_any {
            shared.ready.notify_waiters();
        }
        for n in notices {
            shared.dead_letters.send(n).ok();
        }
    }
}
