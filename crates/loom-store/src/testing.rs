//! Test support: a fresh PostgreSQL database per test, dropped when the test ends (even when it
//! panics), so tests run in parallel against one server.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::PgStore;
use crate::pg::PgOptions;

/// The server tests use: `LOOM_DATABASE_URL`, else the local default.
pub fn admin_url() -> String {
    std::env::var("LOOM_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A scratch database that exists for the lifetime of this value.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
    admin: String,
}

impl TestDatabase {
    /// Creates `loom_test_<random>` on the admin server. Panics with a clear message when the
    /// server is unreachable: in CI a missing PostgreSQL is a failure, never a skip.
    pub async fn create() -> Self {
        Self::create_named("loom_test").await
    }

    /// Like `create`, with another name prefix (benchmarks use `loom_bench`).
    pub async fn create_named(prefix: &str) -> Self {
        let admin = admin_url();
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {admin} ({e}); start it (scripts/test.sh does) or set LOOM_DATABASE_URL"
            )
        });
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("create test database");
        let _ = conn.close().await;
        let url =
            PgConnectOptions::from_str(&admin).expect("admin url parses").database(&name).to_url_lossy().to_string();
        Self { name, url, admin }
    }

    /// The URL of the scratch database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A migrated store on the scratch database.
    pub async fn store(&self) -> PgStore {
        let store = PgStore::connect(&self.url, &PgOptions { max_connections: 8, ..PgOptions::default() })
            .await
            .expect("connect to test database");
        store.migrate().await.expect("migrate test database");
        store
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime; use a thread with its own to finish the cleanup.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        });
        let _ = done.join();
    }
}
