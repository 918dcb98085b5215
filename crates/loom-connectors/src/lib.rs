//! Loom's connectors service: the external systems Loom talks to — LLM providers
//! (OpenAI-compatible), prometheus, grafana, jaeger, git hosts, outgoing webhooks, plain HTTP
//! endpoints — as `loom.connectors.v1.Connectors` over gRPC ([`serve`]) or in process
//! ([`Connectors`]), and [`Client`], the gRPC client; both implement [`Api`].
//!
//! Invariants:
//! - Configuration lives in the store (`Store::*_connector`, so through the database service
//!   when one is configured), never in a side file; every change is versioned, and an update
//!   applies only at the caller's `expected_version`.
//! - Secrets are write-only: no response, log line or `Debug` output carries a value (they are
//!   named, with `****`), except `ResolveLlmEndpoint`, which gives an LLM provider's key to the
//!   agents that call it. At rest they are sealed with AES-256-GCM (`seal.rs`) bound to the
//!   connector id; [`Connectors::rotate_keys`] re-seals what a retired key sealed.
//! - Health: each enabled connector is checked on its jittered interval within its timeout
//!   (`schedule.rs`, `health.rs`), `HealthCheckAll` checks all concurrently; only a change of
//!   status is broadcast (`WatchHealth`) and appended as a `connector.health_changed` event,
//!   which the control plane's event relay publishes on `loom.events.connector.health_changed`;
//!   with several replicas on one store, one (the holder of a store lease) appends, against the
//!   stored health state, so each change is one event (`events.rs`).
//! - Webhooks are signed per Standard Webhooks 1.0 (`webhook.rs`) and receive the event types
//!   they subscribe to (`deliveries.rs`); a `410 Gone` disables the connector.
//! - This is the only crate that talks to connector endpoints.

pub mod bench;
mod client;
mod convert;
mod deliveries;
mod error;
mod events;
mod health;
pub mod model;
mod registry;
mod schedule;
pub mod seal;
mod server;
pub mod webhook;

pub use client::{Api, Client, ClientConfig};
pub use deliveries::POSITION as DELIVERY_POSITION;
pub use error::Error;
pub use model::{Connector, Health, HealthChange, Kind, LlmEndpoint, Mode, Spec, Status};
pub use registry::{Connectors, LEASE_TTL, redacted};
pub use seal::{Key, Keyring};
pub use server::{ServerConfig, serve};
