//! Integration tests of the connectors service against small real HTTP servers started by each
//! test, real PostgreSQL (a scratch database per test) and the gRPC service on a free port.

mod grpc;
mod health;
mod secrets;
mod support;
mod webhooks;
