//! The embedded bus's state: streams, durable consumers and the registry bucket, with the pure
//! operations on them. All of it sits behind one mutex; nothing here awaits.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::config::StreamKind;
use crate::envelope::Outgoing;

/// Largest body accepted, as `max_msg_size` on `LOOM_TASKS`.
pub(super) const MAX_MSG: usize = 1024 * 1024;
/// Most DLQ entries kept (oldest dropped first), besides the 30-day age limit.
const DLQ_MAX: usize = 100_000;
/// Most events kept for [`super::Embedded`] (they are not consumed durably).
const EVENTS_MAX: usize = 10_000;

#[derive(Debug)]
pub(super) struct Stored {
    pub(super) subject: String,
    pub(super) headers: HeaderMap,
    pub(super) payload: Bytes,
    pub(super) at: Instant,
    pub(super) deliveries: u32,
}

#[derive(Debug, Default)]
pub(super) struct Stream {
    pub(super) last_seq: u64,
    pub(super) messages: BTreeMap<u64, Stored>,
    dedupe: HashMap<String, u64>,
    dedupe_order: VecDeque<(Instant, String)>,
}

#[derive(Debug)]
pub(super) struct Flight {
    pub(super) deadline: Instant,
    pub(super) token: u64,
}

#[derive(Debug)]
pub(super) struct Consumer {
    pub(super) kind: StreamKind,
    pub(super) filter: String,
    /// (available at, stream sequence): the next delivery is the first one due.
    pub(super) ready: BTreeSet<(Instant, u64)>,
    pub(super) in_flight: HashMap<u64, Flight>,
}

#[derive(Debug, Default)]
pub(super) struct Core {
    pub(super) streams: HashMap<StreamKind, Stream>,
    /// Keyed by `{stream token}/{durable}`.
    pub(super) consumers: HashMap<String, Consumer>,
    pub(super) kv: HashMap<String, (Bytes, DateTime<Utc>)>,
    pub(super) next_token: u64,
}

/// NATS subject matching with `*` (one token) and `>` (the rest).
pub(super) fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for f in filter.split('.') {
        match (f, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (f, Some(s)) if f == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Whether two filters can match a common subject (both are literal or end in `>`).
pub(super) fn filters_overlap(a: &str, b: &str) -> bool {
    subject_matches(a, b) || subject_matches(b, a) || {
        let (pa, pb) = (a.trim_end_matches('>'), b.trim_end_matches('>'));
        (a.ends_with('>') && b.starts_with(pa)) || (b.ends_with('>') && a.starts_with(pb))
    }
}

impl Core {
    /// Stores a message; returns (sequence, duplicate).
    pub(super) fn store(&mut self, kind: StreamKind, msg: Outgoing, window: Duration, now: Instant) -> (u64, bool) {
        let stream = self.streams.entry(kind).or_default();
        while let Some((at, id)) = stream.dedupe_order.front() {
            if now.duration_since(*at) < window {
                break;
            }
            stream.dedupe.remove(id);
            stream.dedupe_order.pop_front();
        }
        if let Some(seq) = stream.dedupe.get(&msg.msg_id) {
            return (*seq, true);
        }
        stream.last_seq += 1;
        let seq = stream.last_seq;
        stream.dedupe.insert(msg.msg_id.clone(), seq);
        stream.dedupe_order.push_back((now, msg.msg_id));
        let stored =
            Stored { subject: msg.subject, headers: msg.headers, payload: msg.payload, at: now, deliveries: 0 };
        stream.messages.insert(seq, stored);
        let cap = match kind {
            StreamKind::Dlq => Some(DLQ_MAX),
            StreamKind::Events => Some(EVENTS_MAX),
            _ => None,
        };
        if let Some(cap) = cap {
            while stream.messages.len() > cap {
                stream.messages.pop_first();
            }
        }
        if matches!(kind, StreamKind::Tasks | StreamKind::Results) {
            self.route(kind, seq, now);
        }
        (seq, false)
    }

    /// Hands a work-queue message to the consumer whose filter matches it, if one exists yet.
    fn route(&mut self, kind: StreamKind, seq: u64, now: Instant) {
        let Some(stored) = self.streams.get(&kind).and_then(|s| s.messages.get(&seq)) else { return };
        if let Some(c) =
            self.consumers.values_mut().find(|c| c.kind == kind && subject_matches(&c.filter, &stored.subject))
        {
            c.ready.insert((now, seq));
        }
    }

    /// Creates a consumer and gives it every stored message it matches.
    pub(super) fn add_consumer(&mut self, key: String, kind: StreamKind, filter: String, now: Instant) {
        let mut consumer = Consumer { kind, filter, ready: BTreeSet::new(), in_flight: HashMap::new() };
        if let Some(stream) = self.streams.get(&kind) {
            for (seq, m) in &stream.messages {
                if subject_matches(&consumer.filter, &m.subject) {
                    consumer.ready.insert((now, *seq));
                }
            }
        }
        self.consumers.insert(key, consumer);
    }

    /// Removes an age-expired DLQ/event backlog (30 days for the DLQ, 7 for events).
    pub(super) fn prune_by_age(&mut self, now: Instant) {
        for (kind, max_age) in [(StreamKind::Dlq, 30), (StreamKind::Events, 7)] {
            let max_age = Duration::from_secs(max_age * 24 * 3600);
            if let Some(stream) = self.streams.get_mut(&kind) {
                while stream.messages.first_key_value().is_some_and(|(_, m)| now.duration_since(m.at) > max_age) {
                    stream.messages.pop_first();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_matching() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(subject_matches("a.*.c", "a.b.c"));
        assert!(filters_overlap("t.loom.results.>", "t.loom.results.p"));
        assert!(!filters_overlap("loom.tasks.p", "loom.tasks.p.r"));
        assert!(filters_overlap("loom.tasks.>", "loom.tasks.p.>"));
    }
}
