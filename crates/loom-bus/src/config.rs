//! Bus configuration and the names (streams, subjects, bucket) derived from its namespace.

use std::time::Duration;

use crate::Error;
use crate::connection::{Credentials, Tls};
use crate::signing::{SigningKey, VerifyKey};

/// How the bus connects and how its consumers behave. `Default` gives DESIGN.md §3 exactly.
#[derive(Clone, Debug)]
pub struct BusConfig {
    /// NATS server URL(s), comma separated (JetStream backend only).
    pub url: String,
    /// Prefix for every stream, subject root and bucket, so several Loom installations (or
    /// parallel tests) share one server. `None` = the names of DESIGN.md (`LOOM_TASKS`,
    /// `loom.tasks.>`, `loom-agents`); `Some("t1")` = `T1_LOOM_TASKS`, `t1.loom.tasks.>`,
    /// `t1-loom-agents`.
    pub namespace: Option<String>,
    /// How long a delivery may go without an ack or in-progress ack before it is redelivered.
    pub ack_wait: Duration,
    /// Deliveries of one message before it is dead-lettered.
    pub max_deliver: u32,
    /// Delay before redelivery of a nak'd message: the n-th entry for the n-th delivery, the
    /// last entry after that. Used by [`crate::Delivery::nak_backoff`].
    pub backoff: Vec<Duration>,
    /// How often [`crate::Delivery::keep_alive`] sends in-progress acks.
    pub progress_interval: Duration,
    /// Most publishes awaiting their JetStream ack at once (kept well below async-nats' 5,000).
    pub publish_window: usize,
    /// Messages requested per pull; also the capacity of a subscription's buffer.
    pub pull_batch: usize,
    /// Dedupe window for tasks (republishing a `Nats-Msg-Id` within it is a no-op).
    pub duplicate_window: Duration,
    /// Time-to-live of an agent registration without a heartbeat.
    pub agent_ttl: Duration,
    /// Connection name reported to the server; the instance id is appended.
    pub client_name: String,
    /// How this service authenticates to NATS (JetStream backend only; redacted in `Debug`).
    pub credentials: Credentials,
    /// TLS to the NATS server (JetStream backend only).
    pub tls: Tls,
    /// The prefix of this connection's reply subjects (`_INBOX` by default). NATS permissions
    /// can then give each service its own replies only (`_INBOX.agent-p.>`), instead of every
    /// reply on the server — pulled tasks included.
    pub inbox_prefix: String,
    /// Signs every task this bus builds ([`crate::Bus::task`]); without one, building a task is
    /// refused. Default: this process's own key ([`SigningKey::process`]).
    pub task_signing_key: Option<SigningKey>,
    /// The key task subscribers accept signatures from: a task without a valid signature by it is
    /// dead-lettered, never handed to the subscriber. Without one, consuming tasks is refused.
    /// Default: the public half of this process's own key.
    pub task_verify_key: Option<VerifyKey>,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            url: "nats://127.0.0.1:4222".to_owned(),
            namespace: None,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            backoff: [1, 5, 30, 120].map(Duration::from_secs).to_vec(),
            progress_interval: Duration::from_secs(10),
            publish_window: 512,
            pull_batch: 256,
            duplicate_window: Duration::from_secs(120),
            agent_ttl: Duration::from_secs(30),
            client_name: "loom".to_owned(),
            credentials: Credentials::None,
            tls: Tls::default(),
            inbox_prefix: "_INBOX".to_owned(),
            task_signing_key: Some(SigningKey::process()),
            task_verify_key: Some(SigningKey::process().verify_key()),
        }
    }
}

impl BusConfig {
    /// The delay before the next delivery after a nak on delivery number `deliveries` (1-based).
    pub fn backoff_for(&self, deliveries: u32) -> Duration {
        let idx = (deliveries.max(1) as usize - 1).min(self.backoff.len().saturating_sub(1));
        self.backoff.get(idx).copied().unwrap_or_default()
    }

    pub(crate) fn validate(&self) -> Result<Names, Error> {
        if self.max_deliver == 0 {
            return Err(Error::invalid("max_deliver", "must be at least 1"));
        }
        if self.ack_wait < Duration::from_millis(100) {
            return Err(Error::invalid("ack_wait", "must be at least 100 ms"));
        }
        if self.publish_window == 0 || self.publish_window > 4096 {
            return Err(Error::invalid("publish_window", "must be 1..=4096 (async-nats stalls near 5,000)"));
        }
        if self.pull_batch == 0 {
            return Err(Error::invalid("pull_batch", "must be at least 1"));
        }
        let p = &self.inbox_prefix;
        if p.is_empty() || p.starts_with('.') || p.ends_with('.') || p.contains(['*', '>', ' ', '\t']) {
            return Err(Error::invalid("inbox_prefix", format!("{p:?} must be a subject without wildcards")));
        }
        Names::new(self.namespace.as_deref())
    }
}

/// One of Loom's four streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Tasks,
    Results,
    Events,
    Dlq,
}

impl StreamKind {
    /// Every stream, in provisioning order.
    pub const ALL: [StreamKind; 4] = [StreamKind::Tasks, StreamKind::Results, StreamKind::Events, StreamKind::Dlq];

    /// The lowercase token used in subjects: `tasks`, `results`, `events`, `dlq`.
    pub fn token(self) -> &'static str {
        match self {
            StreamKind::Tasks => "tasks",
            StreamKind::Results => "results",
            StreamKind::Events => "events",
            StreamKind::Dlq => "dlq",
        }
    }
}

/// Stream names, subject roots and the bucket name for one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    subject_root: String,
    stream_prefix: String,
    bucket: String,
    namespaced: bool,
}

impl Names {
    /// Validates the namespace (`^[a-z0-9][a-z0-9_-]{0,31}$`) and derives every name from it.
    pub fn new(namespace: Option<&str>) -> Result<Names, Error> {
        let Some(ns) = namespace else {
            return Ok(Names {
                subject_root: "loom".into(),
                stream_prefix: String::new(),
                bucket: "loom-agents".into(),
                namespaced: false,
            });
        };
        let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-';
        let bytes = ns.as_bytes();
        if bytes.is_empty() || bytes.len() > 32 || !ok(bytes[0]) || bytes[0] == b'_' || bytes[0] == b'-' {
            return Err(Error::invalid("namespace", format!("{ns:?} must match ^[a-z0-9][a-z0-9_-]{{0,31}}$")));
        }
        if !bytes.iter().all(|&b| ok(b)) {
            return Err(Error::invalid("namespace", format!("{ns:?} must match ^[a-z0-9][a-z0-9_-]{{0,31}}$")));
        }
        Ok(Names {
            subject_root: format!("{ns}.loom"),
            stream_prefix: format!("{}_", ns.to_ascii_uppercase()),
            bucket: format!("{ns}-loom-agents"),
            namespaced: true,
        })
    }

    /// Whether a namespace is set (only then may [`crate::Bus::destroy`] delete anything).
    pub fn is_namespaced(&self) -> bool {
        self.namespaced
    }

    /// `LOOM_TASKS`, `LOOM_RESULTS`, … with the namespace prefix.
    pub fn stream(&self, kind: StreamKind) -> String {
        let base = match kind {
            StreamKind::Tasks => "LOOM_TASKS",
            StreamKind::Results => "LOOM_RESULTS",
            StreamKind::Events => "LOOM_EVENTS",
            StreamKind::Dlq => "LOOM_DLQ",
        };
        format!("{}{base}", self.stream_prefix)
    }

    /// `LOOM_ADVISORIES` with the namespace prefix: the JetStream stream that keeps the
    /// max-deliveries advisories of the tasks and results streams until a control plane handles
    /// them.
    pub fn advisories_stream(&self) -> String {
        format!("{}LOOM_ADVISORIES", self.stream_prefix)
    }

    /// `loom.tasks`, `loom.results`, … (no trailing dot).
    pub fn root(&self, kind: StreamKind) -> String {
        format!("{}.{}", self.subject_root, kind.token())
    }

    /// The stream's subject wildcard, `loom.tasks.>`.
    pub fn wildcard(&self, kind: StreamKind) -> String {
        format!("{}.>", self.root(kind))
    }

    /// The agent registry bucket, `loom-agents`.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Which stream a subject belongs to, if any.
    pub fn kind_of(&self, subject: &str) -> Option<StreamKind> {
        StreamKind::ALL.into_iter().find(|k| subject.strip_prefix(&self.root(*k)).is_some_and(|r| r.starts_with('.')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_design_names() {
        let n = Names::new(None).unwrap();
        assert_eq!(n.stream(StreamKind::Tasks), "LOOM_TASKS");
        assert_eq!(n.stream(StreamKind::Dlq), "LOOM_DLQ");
        assert_eq!(n.wildcard(StreamKind::Events), "loom.events.>");
        assert_eq!(n.bucket(), "loom-agents");
        assert_eq!(n.kind_of("loom.results.p"), Some(StreamKind::Results));
        assert_eq!(n.kind_of("loom.resultsx.p"), None);
    }

    #[test]
    fn namespaced_names() {
        let n = Names::new(Some("t123")).unwrap();
        assert_eq!(n.stream(StreamKind::Tasks), "T123_LOOM_TASKS");
        assert_eq!(n.wildcard(StreamKind::Tasks), "t123.loom.tasks.>");
        assert_eq!(n.bucket(), "t123-loom-agents");
        for bad in ["", "T1", "a.b", "a b", "a*", "-a", &"a".repeat(33)] {
            assert!(Names::new(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn backoff_steps_then_sticks_to_the_last() {
        let c = BusConfig::default();
        assert_eq!(c.backoff_for(1), Duration::from_secs(1));
        assert_eq!(c.backoff_for(4), Duration::from_secs(120));
        assert_eq!(c.backoff_for(9), Duration::from_secs(120));
    }
}
