//! Test support for this crate and other `Store` implementations: a scratch PostgreSQL database
//! per test (see [`crate::scratch`]).

pub use crate::scratch::{ScratchDatabase as TestDatabase, default_admin_url as admin_url};
