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
