//! Opening the configured store: PostgreSQL when a database URL is set, else the embedded SQLite
//! file. Migrations run on open, so a fresh machine needs no separate step.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use loom_store::{PgOptions, PgStore, SqliteStore, Store, redact_url};

use crate::config::Config;

/// PostgreSQL pool options from the configuration.
pub fn pg_options(config: &Config) -> PgOptions {
    PgOptions {
        max_connections: config.database.max_connections,
        acquire_timeout: Duration::from_millis(config.database.acquire_timeout_ms),
        statement_cache: !config.database.pgbouncer,
    }
}

/// Opens and migrates the configured store; returns it with a one-line description.
pub async fn open(config: &Config) -> anyhow::Result<(Arc<dyn Store>, String)> {
    match &config.database_url {
        Some(url) => {
            let store = PgStore::connect(url, &pg_options(config))
                .await
                .with_context(|| format!("cannot connect to PostgreSQL at {}", redact_url(url)))?;
            store.migrate().await.context("migrating PostgreSQL")?;
            Ok((Arc::new(store), format!("PostgreSQL at {}", redact_url(url))))
        }
        None => {
            let path = config.sqlite_path();
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
            let store = SqliteStore::open(&path).await.with_context(|| format!("cannot open {}", path.display()))?;
            Ok((Arc::new(store), format!("embedded SQLite at {}", path.display())))
        }
    }
}

/// `loom db migrate`.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let (applied, what) = match &config.database_url {
        Some(url) => {
            let store = PgStore::connect(url, &pg_options(config))
                .await
                .with_context(|| format!("cannot connect to PostgreSQL at {}", redact_url(url)))?;
            (store.migrate().await?, format!("PostgreSQL at {}", redact_url(url)))
        }
        None => {
            std::fs::create_dir_all(&config.data_dir)?;
            let path = config.sqlite_path();
            let store = SqliteStore::open(&path).await?;
            (store.migrate().await?, format!("embedded SQLite at {}", path.display()))
        }
    };
    println!("{what}: {applied} migration(s) applied, schema up to date");
    Ok(())
}
