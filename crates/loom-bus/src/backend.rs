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
#[derive(Debug)]
pub(crate) enum Acker {
    JetStream(async_nats::jetstream::message::Acker),
    Embedded(crate::embedded::Acker),
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
            Acker::JetStream(acker) => {
                use async_nats::jetstream::AckKind;
                let kind = match settle {
                    Settle::Ack => AckKind::Ack,
                    Settle::Progress => AckKind::Progress,
                    Settle::Nak(delay) => AckKind::Nak(delay),
                    Settle::Term => AckKind::Term,
                };
                let result = if confirm { acker.double_ack_with(kind).await } else { acker.ack_with(kind).await };
                result.map_err(|e| Error::Ack { action: settle.name(), reason: e.to_string() })
            }
            Acker::Embedded(acker) => acker.send(settle),
        }
    }
}
