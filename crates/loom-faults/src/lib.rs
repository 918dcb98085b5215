//! The fault suite's parts, used by `loom bench faults` and by tests: private `nats-server`
//! ([`NatsServer`]) and PostgreSQL ([`PgCluster`]) instances, each on its own free port with its
//! own temporary directory, stopped, killed and restarted at will; a TCP fault proxy ([`Proxy`]);
//! network namespaces that partition the processes inside ([`Netns`]); the history of a run
//! ([`history`]) and the checker of its invariants ([`check`]).
//!
//! Invariants:
//! - It only ever signals or stops processes it started itself, by their pid (a child it has not
//!   yet reaped, the postmaster of its own data directory, or what still runs in a network
//!   namespace it made, when that goes) — never by name, never in bulk.
//! - It never touches the shared servers on :4222 and :5432: every instance binds a port from
//!   [`free_port`] and keeps its state in a directory it created and removes when dropped.
//! - Dropping an instance stops it (SIGKILL for NATS, an immediate shutdown for PostgreSQL), so a
//!   failing test does not leak servers.
//! - Restarting keeps the port and the state directory, so clients reconnect to the same URL and
//!   find their data again.

pub mod check;
mod error;
pub mod history;
mod nats;
mod netns;
mod pg;
mod port;
mod process;
mod proxy;

pub use error::{Error, Result};
pub use nats::NatsServer;
pub use netns::Netns;
pub use pg::PgCluster;
pub use port::free_port;
pub use proxy::{Mode, Proxy};
