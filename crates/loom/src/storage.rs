//! Opening the configured store: the database service over gRPC when its URL is set, else
//! PostgreSQL when a database URL is set, else the embedded SQLite file. Migrations run on open
//! (the database service runs its own), so a fresh machine needs no separate step.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use loom_db::{ClientConfig, ClientTls, GrpcStore};
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
    if let Some(url) = &config.database.service_url {
        return open_service(config, url).await;
    }
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

/// The database service over gRPC; checked with one call so a wrong address fails at start.
async fn open_service(config: &Config, url: &str) -> anyhow::Result<(Arc<dyn Store>, String)> {
    let db = &config.database;
    let tls = match (&db.service_ca, &db.service_cert, &db.service_key) {
        (Some(ca), cert, key) => {
            let identity = match (cert, key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                (None, None) => None,
                _ => anyhow::bail!("database.service_cert and database.service_key go together"),
            };
            Some(ClientTls::from_files(ca, identity)?)
        }
        (None, None, None) => None,
        (None, _, _) => anyhow::bail!("a client certificate for the database service needs database.service_ca too"),
    };
    anyhow::ensure!(
        tls.is_none() || url.starts_with("https://"),
        "database.service_ca is set but database.service_url {url} is not https://"
    );
    let token = db.token()?;
    let store = GrpcStore::connect(ClientConfig { tls, token, ..ClientConfig::new(url) })
        .with_context(|| format!("bad database service URL {url}"))?;
    store.last_event_seq().await.with_context(|| format!("cannot reach the database service at {url}"))?;
    Ok((Arc::new(store), format!("database service at {url}")))
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

#[cfg(test)]
mod tests {
    use super::*;
    use loom_domain::{NewProject, ProjectId};
    use tokio_util::sync::CancellationToken;

    /// With `database.service_url` set, Loom's store is the database service: what it writes
    /// lands in the service's PostgreSQL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_service_url_switches_the_store_to_the_database_service() {
        let db = loom_store::testing::TestDatabase::create().await;
        let pg: Arc<dyn Store> = Arc::new(db.store().await);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let server =
            tokio::spawn(loom_db::serve(loom_db::ServerConfig::default(), listener, pg.clone(), shutdown.clone()));
        let mut config = Config::default();
        config.database.service_url = Some(url.clone());
        let (store, what) = open(&config).await.unwrap();
        assert_eq!(what, format!("database service at {url}"));
        let id = ProjectId::parse("via-grpc").unwrap();
        store.create_project(NewProject::new(id.clone(), "/tmp/repo")).await.unwrap();
        assert_eq!(pg.get_project(&id).await.unwrap().id, id, "written through the service");
        shutdown.cancel();
        server.await.unwrap().unwrap();

        config.database.service_url = Some("http://127.0.0.1:1".into());
        let Err(err) = open(&config).await else { panic!("nothing listens on port 1") };
        assert!(format!("{err:#}").contains("cannot reach the database service at http://127.0.0.1:1"), "{err:#}");
        config.database.service_ca = Some("/nonexistent/ca.pem".into());
        let Err(err) = open(&config).await else { panic!("a CA needs https") };
        assert!(format!("{err:#}").contains("CA certificate") || format!("{err:#}").contains("https"), "{err:#}");
    }
}
