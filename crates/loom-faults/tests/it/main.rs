//! Integration tests of loom-faults: real nats-server and PostgreSQL instances of the tests' own
//! (never the shared ones on :4222 and :5432), killed, stopped and started again; network
//! namespaces partitioned and healed.

mod nats;
mod netns;
mod pg;
mod proxy;
