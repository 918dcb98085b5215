//! Integration tests of loom-bus against a real nats-server (`LOOM_NATS_URL`, default
//! `nats://127.0.0.1:4222`; a missing server is a failure, not a skip) and the embedded bus.

mod conformance;
mod golden;
mod jetstream_only;
mod permissions;
mod registry;
mod restart;
mod support;
