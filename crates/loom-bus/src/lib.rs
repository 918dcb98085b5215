//! Loom's message bus: the streams, subjects, consumers, headers and JSON bodies of DESIGN.md §3,
//! on NATS JetStream or on an embedded in-process twin with the same semantics. It is the only
//! crate that speaks NATS.
//!
//! Invariants:
//! - Every subject is built from validated ids ([`loom_domain::ProjectId`], [`Role`],
//!   [`loom_domain::EventKind`]), so none can contain a wildcard, a dot or whitespace.
//! - Every published message carries `Nats-Msg-Id` (`{dispatch_id}` for tasks,
//!   `{dispatch_id}:result` for results, the event id for events) and `Loom-Schema: 1`;
//!   republishing within the dedupe window stores nothing new.
//! - Provisioning creates what is missing and verifies what exists; it never deletes or changes
//!   an existing stream, consumer or bucket (a difference is [`Error::Mismatch`]).
//! - A delivery is settled only by its handler ([`Delivery`]): unsettled, it is redelivered
//!   after the ack wait; after `max_deliver` deliveries it is moved to `LOOM_DLQ` with the reason.
//!   A body that does not decode is moved to the DLQ at once: a subscriber never sees it and
//!   never crashes on it.
//! - A subscriber holds at most `max_in_flight` deliveries, so competing instances share work.
//! - At most `publish_window` (≤ 4,096) publish acks are awaited at once per batch, and at most
//!   4,096 per process, below the point where async-nats stalls.
//! - Every task [`Bus::task`] builds is signed with the configured [`SigningKey`], and a task
//!   subscriber hands over only tasks whose signature its [`VerifyKey`] accepts (both backends):
//!   an unsigned, forged or altered task is dead-lettered with a `task signature …` reason.
//! - The embedded bus keeps everything in memory: it does not survive a process restart.

mod backend;
pub mod bench;
mod bus;
mod config;
mod connection;
mod dead_letter;
mod delivery;
mod embedded;
mod envelope;
mod error;
mod health;
mod jetstream;
mod message;
mod registry;
mod signing;
mod subject;
mod subscription;

pub use bus::{Bus, ConsumeOptions, MAX_TASK_BYTES, ServerSummary};
pub use config::{BusConfig, Names, StreamKind};
pub use connection::{Credentials, Tls};
pub use dead_letter::DeadLetter;
pub use delivery::{Delivery, Received};
pub use envelope::{Headers, Outgoing, Receipt, SCHEMA_VERSION, TraceContext, header};
pub use error::Error;
pub use health::{ConsumerAhead, ConsumerLag, Health};
pub use message::{
    Body, EventBody, EventMessage, PROJECT_COMMANDS, ResultData, ResultKind, ResultMessage, ResultMetadata,
    ResultStatus, TaskData, TaskKind, TaskMessage, TaskMetadata,
};
pub use registry::{AgentChange, AgentRecord, AgentWatch, OfflineReason};
pub use signing::{SigningKey, VerifyKey};
pub use subject::{RESULTS_CONSUMER, Role, Subjects, agents_consumer};
pub use subscription::{DeadLetters, Subscription};

/// This process's instance id, `{hostname}-{pid}-{random}`: the random part differs on every
/// start, so a restarted process is never mistaken for the old one.
pub fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect::<String>())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>())
    })
}
