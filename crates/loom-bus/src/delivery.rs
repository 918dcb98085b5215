//! A delivery handle: the one way to settle a message (ack, in-progress, nak, dead-letter).

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::backend::{RawDelivery, Settle};
use crate::config::StreamKind;
use crate::envelope::{Headers, header};
use crate::subscription::move_to_dlq;
use crate::{Bus, Error};

/// A decoded message and the handle to settle it.
#[derive(Debug)]
pub struct Received<T> {
    pub message: T,
    pub delivery: Delivery,
}

/// One delivery of a message. Settle it exactly once; dropping it unsettled means "I died":
/// the bus redelivers it after the ack wait.
#[derive(Debug)]
pub struct Delivery {
    raw: RawDelivery,
    bus: Bus,
    kind: StreamKind,
    acked: Arc<Acked>,
}

/// The stream sequences a subscription acknowledged recently. A server that loses acks it had
/// confirmed (nats-server 2.9 writes consumer state lazily, so a restart can roll it back)
/// redelivers those messages; the subscription recognises them here and settles them again
/// instead of handing them to its subscriber a second time.
#[derive(Debug, Default)]
pub(crate) struct Acked {
    seen: Mutex<(VecDeque<u64>, HashSet<u64>)>,
}

impl Acked {
    /// How many sequences are remembered (oldest forgotten first).
    const CAPACITY: usize = 65_536;

    fn insert(&self, seq: u64) {
        let mut guard = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let (order, set) = &mut *guard;
        if set.insert(seq) {
            order.push_back(seq);
            if order.len() > Self::CAPACITY
                && let Some(old) = order.pop_front()
            {
                set.remove(&old);
            }
        }
    }

    pub(crate) fn contains(&self, seq: u64) -> bool {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).1.contains(&seq)
    }
}

impl Delivery {
    pub(crate) fn new(raw: RawDelivery, bus: Bus, kind: StreamKind, acked: Arc<Acked>) -> Delivery {
        Delivery { raw, bus, kind, acked }
    }

    /// 1 for the first delivery, 2 for the first redelivery, …
    pub fn deliveries(&self) -> u32 {
        self.raw.deliveries
    }

    /// Whether a failure now exhausts the message's deliveries (it would go to the DLQ).
    pub fn is_last_delivery(&self) -> bool {
        self.raw.deliveries >= self.bus.config().max_deliver
    }

    /// The subject it was published on.
    pub fn subject(&self) -> &str {
        &self.raw.subject
    }

    /// Its sequence in its stream.
    pub fn stream_sequence(&self) -> u64 {
        self.raw.stream_sequence
    }

    /// Its headers (trace context, correlation id, …).
    pub fn headers(&self) -> Headers {
        Headers(self.raw.headers.clone())
    }

    /// Makes `span` a child of the span that published this message (its `traceparent` and
    /// `tracestate` headers); a redelivery's span is also linked to that span and marked, so
    /// every attempt is a span of the same trace. Nothing while trace export is off.
    pub fn follow(&self, span: &tracing::Span) {
        if !loom_telemetry::propagate::enabled() {
            return;
        }
        let tp = self.raw.headers.get_last(header::TRACEPARENT).map(|v| v.as_str());
        let ts = self.raw.headers.get_last(header::TRACESTATE).map(|v| v.as_str());
        loom_telemetry::propagate::set_parent(span, tp, ts);
        if self.raw.deliveries > 1 {
            loom_telemetry::propagate::add_link(span, tp, ts);
            span.record("messaging.delivery_count", self.raw.deliveries);
        }
    }

    /// Its `Nats-Msg-Id`.
    pub fn msg_id(&self) -> Option<&str> {
        self.raw.headers.get_last(header::MSG_ID).map(|v| v.as_str())
    }

    /// The raw body as received.
    pub fn payload(&self) -> &Bytes {
        &self.raw.payload
    }

    /// Done: the message is removed. Waits until the server has recorded the ack, so a
    /// returned `Ok` means it will not be redelivered.
    pub async fn ack(self) -> Result<(), Error> {
        self.raw.acker.send(Settle::Ack, true).await?;
        self.acked.insert(self.raw.stream_sequence);
        Ok(())
    }

    /// Done, without waiting for the server's confirmation (for high-throughput consumers that
    /// tolerate a rare redelivery).
    pub async fn ack_nowait(self) -> Result<(), Error> {
        self.raw.acker.send(Settle::Ack, false).await?;
        self.acked.insert(self.raw.stream_sequence);
        Ok(())
    }

    /// Still working: restarts the ack wait (`+WPI`).
    pub async fn in_progress(&self) -> Result<(), Error> {
        self.raw.acker.send(Settle::Progress, false).await
    }

    /// Not now: redeliver after `delay` (at once with `None`). Counts as a delivery.
    pub async fn nak(self, delay: Option<Duration>) -> Result<(), Error> {
        self.raw.acker.send(Settle::Nak(delay), false).await
    }

    /// Not now: redeliver after the configured backoff for this delivery number
    /// (1 s, 5 s, 30 s, 2 min by default).
    pub async fn nak_backoff(self) -> Result<(), Error> {
        let delay = self.bus.config().backoff_for(self.raw.deliveries);
        self.nak(Some(delay)).await
    }

    /// Never: copy the message to `loom.dlq.{stream}.{project}` with `reason`, then terminate
    /// it. If the copy fails the message stays unsettled (and will be redelivered).
    pub async fn term_to_dlq(self, reason: &str) -> Result<(), Error> {
        move_to_dlq(&self.bus, self.kind, &self.raw, reason).await?;
        self.raw.acker.send(Settle::Term, true).await
    }

    /// Runs `work`, sending an in-progress ack every `progress_interval` (10 s by default) until
    /// it finishes, so a long task is not redelivered while its handler is alive.
    pub async fn keep_alive<F: Future>(&self, work: F) -> F::Output {
        self.keep_alive_every(self.bus.progress_interval(), work).await
    }

    /// [`Delivery::keep_alive`] with an explicit interval.
    pub async fn keep_alive_every<F: Future>(&self, every: Duration, work: F) -> F::Output {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = ticks.tick() => {
                    if let Err(err) = self.in_progress().await {
                        tracing::warn!(subject = %self.raw.subject, %err, "in-progress ack failed");
                    }
                }
            }
        }
    }
}
