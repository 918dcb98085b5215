//! The seam between the typed bus API and its two implementations: raw deliveries, acks and
//! consumer specs, the same for JetStream and the embedded bus.

use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use crate::Error;
use crate::config::StreamKind;

/// A durable pull consumer to bind to (created if missing, verified if present).
#[derive(Clone, Debug)]
pub(crate) struct ConsumerSpec {
    pub(crate) kind: StreamKind,
    pub(crate) durable: String,
    pub(crate) filter: String,
    /// Most deliveries this subscriber holds (buffered or being handled) at once.
    pub(crate) max_in_flight: usize,
    /// Stream pulls ahead (see `ConsumeOptions::prefetch`); otherwise pull exactly the free permits.
    pub(crate) prefetch: bool,
}

/// Where a subscriber's deliveries come from.
#[derive(Debug)]
pub(crate) enum Source {
    JetStream(Box<crate::jetstream::Puller>),
    Embedded(crate::embedded::Puller),
}

impl Source {
    /// The next delivery, or `None` once the subscription is cancelled.
    pub(crate) async fn next(&mut self) -> Option<RawDelivery> {
        match self {
            Source::JetStream(p) => p.next().await,
            Source::Embedded(p) => p.next().await,
        }
    }
}

/// One delivery before decoding.
#[derive(Debug)]
pub(crate) struct RawDelivery {
    pub(crate) subject: String,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
    pub(crate) stream_sequence: u64,
    pub(crate) deliveries: u32,
    pub(crate) acker: Acker,
    /// Released when the delivery is settled or dropped, letting the subscriber pull another.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// Settles a delivery on the backend it came from.
pub(crate) enum Acker {
    /// The client and the delivery's reply subject (`$JS.ACK.…`).
    JetStream(async_nats::Client, async_nats::Subject),
    Embedded(crate::embedded::Acker),
}

impl std::fmt::Debug for Acker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Acker::JetStream(_, reply) => write!(f, "Acker::JetStream({reply})"),
            Acker::Embedded(a) => a.fmt(f),
        }
    }
}

/// What a settlement says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Settle {
    Ack,
    Progress,
    Nak(Option<Duration>),
    Term,
}

impl Settle {
    fn name(self) -> &'static str {
        match self {
            Settle::Ack => "ack",
            Settle::Progress => "in-progress",
            Settle::Nak(_) => "nak",
            Settle::Term => "term",
        }
    }
}

impl Acker {
    /// Sends the settlement; with `confirm`, waits until the server has recorded it.
    pub(crate) async fn send(&self, settle: Settle, confirm: bool) -> Result<(), Error> {
        match self {
            Acker::JetStream(client, reply) => {
                use async_nats::jetstream::AckKind;
                let kind = match settle {
                    Settle::Ack => AckKind::Ack,
                    Settle::Progress => AckKind::Progress,
                    Settle::Nak(delay) => AckKind::Nak(delay),
                    Settle::Term => AckKind::Term,
                };
                let err = |reason: String| Error::Ack { action: settle.name(), reason };
                if confirm {
                    // A request, not async-nats' double_ack: that one takes a "no responders"
                    // reply (JetStream still recovering after a restart) for a confirmation.
                    let reply = client.request(reply.clone(), kind.into()).await.map_err(|e| err(e.to_string()))?;
                    match reply.status {
                        None => Ok(()),
                        Some(s) if s.is_success() => Ok(()),
                        Some(s) => Err(err(format!("server answered {s}"))),
                    }
                } else {
                    client.publish(reply.clone(), kind.into()).await.map_err(|e| err(e.to_string()))
                }
            }
            Acker::Embedded(acker) => acker.send(settle),
        }
    }
}
