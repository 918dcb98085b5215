//! Typed subscriptions on a durable consumer, and the stream of dead-letter notices. Decoding
//! happens here, once for both backends: a body that is not valid JSON of the expected shape, or
//! has an unknown `type`, or a task whose signature does not verify, is moved to the DLQ and
//! settled on its stream; the subscriber never sees it and never crashes on it.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::backend::{ConsumerSpec, RawDelivery, Settle, Source};
use crate::bus::Backend;
use crate::config::StreamKind;
use crate::dead_letter::{self, DeadLetter, Origin};
use crate::delivery::{Acked, Delivery, Received};
use crate::message::{Body, decode};
use crate::signing::VerifyKey;
use crate::{Bus, Error};

/// A subscriber bound to a durable consumer; yields decoded messages with their delivery.
#[derive(Debug)]
pub struct Subscription<T> {
    source: Source,
    bus: Bus,
    kind: StreamKind,
    consumer: String,
    acked: Arc<Acked>,
    /// Tasks only: the key whose signature a message needs to reach the subscriber.
    verify: Option<VerifyKey>,
    _stop: DropGuard,
    _body: PhantomData<fn() -> T>,
}

impl<T: Body> Subscription<T> {
    pub(crate) async fn start(
        bus: Bus,
        spec: ConsumerSpec,
        verify: Option<VerifyKey>,
    ) -> Result<Subscription<T>, Error> {
        let permits = Arc::new(Semaphore::new(spec.max_in_flight));
        let cancel = bus.inner.shutdown.child_token();
        let source = match &bus.inner.backend {
            Backend::JetStream(js) => Source::JetStream(Box::new(
                js.subscribe(&bus.inner.config, spec.clone(), permits, cancel.clone()).await?,
            )),
            Backend::Embedded(e) => Source::Embedded(e.subscribe(spec.clone(), permits, cancel.clone())?),
        };
        Ok(Subscription {
            source,
            bus,
            kind: spec.kind,
            consumer: spec.durable,
            acked: Arc::new(Acked::default()),
            verify,
            _stop: cancel.drop_guard(),
            _body: PhantomData,
        })
    }

    /// The durable consumer this subscriber is bound to.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The next message, or `None` once the subscription or the bus is shut down. Waits while
    /// the subscriber already holds `max_in_flight` unsettled deliveries.
    pub async fn next(&mut self) -> Option<Received<T>> {
        loop {
            let raw = self.source.next().await?;
            if self.acked.contains(raw.stream_sequence) {
                tracing::debug!(seq = raw.stream_sequence, subject = %raw.subject, "redelivery of an acked message; settling it again");
                if let Err(err) = raw.acker.send(Settle::Ack, true).await {
                    tracing::warn!(%err, "re-ack of a redelivered message failed");
                }
                continue;
            }
            let checked = decode::<T>(&raw.payload).map_err(|e| e.reason()).and_then(|message| match &self.verify {
                Some(key) => key.verify(&raw.subject, &raw.payload, &raw.headers).map(|()| message),
                None => Ok(message),
            });
            match checked {
                Ok(message) => {
                    let delivery = Delivery::new(raw, self.bus.clone(), self.kind, self.acked.clone());
                    return Some(Received { message, delivery });
                }
                Err(reason) => dead_letter_raw(&self.bus, self.kind, raw, &reason).await,
            }
        }
    }
}

/// Moves a delivery to the DLQ with `reason`, then terminates it on its stream. If the DLQ
/// publish fails the delivery is nak'd with a delay instead, so nothing is lost.
pub(crate) async fn dead_letter_raw(bus: &Bus, kind: StreamKind, raw: RawDelivery, reason: &str) {
    match move_to_dlq(bus, kind, &raw, reason).await {
        Ok(()) => {
            if let Err(err) = raw.acker.send(Settle::Term, true).await {
                tracing::warn!(subject = %raw.subject, %err, "dead-lettered message could not be terminated");
            }
        }
        Err(err) => {
            tracing::error!(subject = %raw.subject, %err, reason, "cannot dead-letter message; will retry");
            raw.acker.send(Settle::Nak(Some(Duration::from_secs(5))), false).await.ok();
        }
    }
}

pub(crate) async fn move_to_dlq(bus: &Bus, kind: StreamKind, raw: &RawDelivery, reason: &str) -> Result<(), Error> {
    let stream = bus.subjects().names().stream(kind);
    let origin = Origin {
        kind,
        stream: &stream,
        subject: &raw.subject,
        stream_sequence: raw.stream_sequence,
        deliveries: raw.deliveries,
    };
    let msg = dead_letter::dlq_message(bus.subjects(), &origin, &raw.headers, raw.payload.clone(), reason);
    tracing::warn!(subject = %raw.subject, seq = raw.stream_sequence, reason, "dead-lettering message");
    bus.publish(msg).await.map(|_| ())
}

/// Notices of messages moved to the DLQ after exhausting their deliveries.
#[derive(Debug)]
pub struct DeadLetters {
    rx: mpsc::Receiver<DeadLetter>,
    _stop: DropGuard,
}

impl DeadLetters {
    pub(crate) fn new(rx: mpsc::Receiver<DeadLetter>, cancel: CancellationToken) -> DeadLetters {
        DeadLetters { rx, _stop: cancel.drop_guard() }
    }

    /// The next notice, or `None` once the bus is shut down.
    pub async fn next(&mut self) -> Option<DeadLetter> {
        self.rx.recv().await
    }
}
