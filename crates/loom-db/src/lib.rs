//! Loom's database service: `loom.db.v1.Database` over gRPC in front of any `loom_store::Store`
//! (PostgreSQL in production), and [`GrpcStore`], the `Store` implementation that calls it — so the
//! control plane and agents use the service or a local store by configuration alone.
//!
//! - [`serve`] runs the service on a bound listener with `grpc.health.v1`, reflection, optional
//!   TLS / mTLS (rustls), until a `CancellationToken` fires; in-flight calls finish first. TLS
//!   files are watched (polled every few seconds, and at once on SIGHUP) and reloaded in place.
//! - [`GrpcStore`] spreads calls over several HTTP/2 connections, puts a deadline on each, retries
//!   transient failures with exponential backoff and jitter only where a repeat is harmless, and
//!   fails fast behind a circuit breaker while the service is down.
//! - [`bench::run`] measures `GetBead` and `ClaimReady` latency through the service against the
//!   PostgreSQL store alone (`loom bench db`).
//!
//! Invariants:
//! - No SQL crosses the wire: one typed RPC per `Store` method (`loom-proto` holds the contract).
//! - Store errors map to gRPC statuses in one place ([`status`]), losslessly: the client returns
//!   the same `loom_store::Error` variant, fields and text that the store returned.
//! - A call that is not safe to repeat is retried only when its first try provably had no effect.
//! - [`serve`] refuses a listener outside loopback without TLS (unless explicitly waived for a
//!   service mesh) or without client authentication; with a [`Token`] every `loom.db.v1` call
//!   without it is `UNAUTHENTICATED` (health and reflection stay open).
//! - A TLS reload changes what new connections handshake with, never an established connection;
//!   a reload that fails keeps the material in use (logged, `loom_db_tls_reload_failures_total`).
//!
//! **PgBouncer.** Several service replicas may share PostgreSQL through PgBouncer in transaction
//! pooling mode: open the store with `loom_store::PgOptions { statement_cache: false, .. }`
//! (`[database] pgbouncer = true` in `loom.toml`), so no prepared statement outlives its
//! transaction. The service keeps no session state of its own (no advisory locks, `LISTEN` or
//! temporary tables), so any backend connection may serve any call.

mod auth;
pub mod bench;
mod client;
mod error;
mod server;
pub mod status;
pub mod transport;

pub use auth::Token;
pub use client::{BreakerConfig, ClientConfig, ClientTls, GrpcStore, RetryPolicy};
pub use error::Error;
pub use server::{DatabaseService, ServerConfig, ServerTls, serve};
