//! Health as `/readyz` needs it: connected, JetStream reachable, consumer lag.

/// The bus's health at one moment.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Health {
    /// The client is connected to a server (always true for the embedded bus).
    pub connected: bool,
    /// Every stream of this bus answered (JetStream is enabled and none is stuck).
    pub jetstream: bool,
    /// The streams that did not answer (while connected).
    pub unanswered: Vec<String>,
    /// The consumers this bus bound to.
    pub consumers: Vec<ConsumerLag>,
}

/// How far one durable consumer is behind.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerLag {
    pub stream: String,
    pub consumer: String,
    /// Messages not yet delivered.
    pub num_pending: u64,
    /// Messages delivered and not yet acknowledged.
    pub num_ack_pending: u64,
}

impl Health {
    /// Connected and JetStream reachable.
    pub fn is_ready(&self) -> bool {
        self.connected && self.jetstream
    }

    /// Total lag (pending + ack pending) over all consumers.
    pub fn lag(&self) -> u64 {
        self.consumers.iter().map(|c| c.num_pending + c.num_ack_pending).sum()
    }
}

/// A durable consumer that had delivered past the end of its stream: the server lost messages
/// it had acknowledged (nats-server 2.9 restarts a stream that failed a write on a full disk
/// from sequence 0, and keeps its consumers' positions), so every message stored since, up to
/// `delivered`, would never be delivered. [`crate::Bus::reset_consumer`] deletes such a
/// consumer; its subscribers re-bind and create it again from the stream's start.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerAhead {
    pub stream: String,
    pub consumer: String,
    /// The last stream sequence the consumer had delivered.
    pub delivered: u64,
    /// The stream's last sequence when it was checked.
    pub stream_last: u64,
}
