//! Scratch PostgreSQL databases for tests and benchmarks: each is created fresh and dropped when
//! its handle is dropped (even when a test panics), so runs are isolated on one shared server.

use std::str::FromStr;

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::{Error, PgOptions, PgStore};

/// The server tests use: `LOOM_DATABASE_URL`, else the local default.
pub fn default_admin_url() -> String {
    std::env::var("LOOM_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A scratch database that exists for the lifetime of this value.
#[derive(Debug)]
pub struct ScratchDatabase {
    name: String,
    url: String,
    admin: String,
}

impl ScratchDatabase {
    /// Creates `loom_test_<random>` on the default server. Panics with a clear message when the
    /// server is unreachable: in CI a missing PostgreSQL is a failure, never a skip.
    pub async fn create() -> Self {
        let admin = default_admin_url();
        Self::create_on(&admin, "loom_test")
            .await
            .unwrap_or_else(|e| panic!("{e}; start PostgreSQL (scripts/test.sh does) or set LOOM_DATABASE_URL"))
    }

    /// Creates `{prefix}_<random>` on the server of `admin` (any database URL on it).
    pub async fn create_on(admin: &str, prefix: &str) -> crate::Result<Self> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let options =
            PgConnectOptions::from_str(admin).map_err(|e| Error::Unavailable(format!("bad database url: {e}")))?;
        let mut conn = options.connect().await.map_err(|e| {
            Error::Unavailable(format!("PostgreSQL is not reachable at {} ({e})", crate::redact_url(admin)))
        })?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
        let _ = conn.close().await;
        let url = options.database(&name).to_url_lossy().to_string();
        Ok(Self { name, url, admin: admin.to_owned() })
    }

    /// The URL of the scratch database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A migrated store on the scratch database (panics on failure: for tests).
    pub async fn store(&self) -> PgStore {
        self.open(&PgOptions { max_connections: 8, ..PgOptions::default() }).await.expect("open scratch database")
    }

    /// A migrated store on the scratch database.
    pub async fn open(&self, options: &PgOptions) -> crate::Result<PgStore> {
        let store = PgStore::connect(&self.url, options).await?;
        store.migrate().await?;
        Ok(store)
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop runs inside the test's runtime; use a thread with its own to finish the cleanup.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    // A dropped database needs no connections left: FORCE ends stragglers.
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await;
                }
            });
        });
        let _ = done.join();
    }
}
