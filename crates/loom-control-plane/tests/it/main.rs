//! End-to-end tests of the control plane against real PostgreSQL and NATS: the HTTP API, a test
//! agent on the bus, dispatch, results, retries, leases, failover and authorisation.

mod auth;
mod bd;
mod flow;
mod projects;
mod reads;
mod support;
mod web;
