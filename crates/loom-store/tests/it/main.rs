//! Integration tests of the stores against real databases: the shared conformance suite on
//! PostgreSQL (a fresh database per test) and on SQLite (a fresh file per test).

mod pg;
mod sqlite;
