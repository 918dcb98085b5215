//! Integration tests of the database service against real PostgreSQL (a fresh database per test),
//! with the service in-process on port 0: the store conformance suite through `GrpcStore`,
//! restarts of the service and outages of PostgreSQL under it, TLS / mTLS (and reloading its
//! files) and bearer tokens.

mod auth;
mod bench;
mod conformance;
mod outage;
mod reload;
mod restart;
mod support;
mod tls;
mod wire;
