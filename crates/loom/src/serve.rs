//! `loom serve …`: run one service of a distributed deployment: `db` (the gRPC database service
//! in front of PostgreSQL, the only process that speaks SQL; outside loopback it needs TLS and
//! client authentication), `control-plane` (API, dispatcher,
//! result consumer) and `agent` (a project agent; run several for more throughput).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use loom_db::{ServerConfig, ServerTls};
use loom_store::{PgStore, redact_url};

use crate::compose::shutdown_on_signals;
use crate::config::Config;
use crate::storage::pg_options;

/// The services.
#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// The gRPC database service (`loom.db.v1`) in front of PostgreSQL.
    Db(DbArgs),
    /// The control plane: HTTP API, dispatcher, relays, result consumer.
    ControlPlane(ControlPlaneArgs),
    /// A project agent: runs the project's tasks from the bus.
    Agent(crate::agents::AgentArgs),
}

#[derive(Debug, Args)]
pub struct ControlPlaneArgs {
    /// Address to listen on [default: `http_addr` of the configuration, 127.0.0.1:8080].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Serve without API keys (only allowed on a loopback address; development only).
    #[arg(long)]
    insecure_no_auth: bool,
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// Address to listen on [default: `db_addr` of the configuration, 127.0.0.1:50051].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Server certificate (PEM): serve TLS. Needs --tls-key. The certificate, key and client CA
    /// files are reloaded when they change (checked every 5 s) or on SIGHUP; new connections use
    /// the new ones, and a set that does not load is logged and the old one kept.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key of the server certificate (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: mutual TLS. Needs --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address: only where a service mesh (Linkerd) encrypts
    /// the traffic. Clients must still authenticate (a token, `[database] service_token_file`).
    #[arg(long)]
    insecure_no_tls: bool,
    /// Where to serve `/metrics`, `/healthz` and `/readyz` (plain HTTP) [default:
    /// `[database] service_metrics_addr`, 127.0.0.1:9464].
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
}

pub async fn run(cmd: ServeCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        ServeCommand::Db(args) => db(args, config).await,
        ServeCommand::ControlPlane(args) => control_plane(args, config).await,
        ServeCommand::Agent(args) => crate::agents::serve(args, config).await,
    }
}

async fn control_plane(args: ControlPlaneArgs, config: &Config) -> anyhow::Result<()> {
    let mut config = config.clone();
    config.http_addr = args.listen.unwrap_or(config.http_addr);
    config.insecure_no_auth |= args.insecure_no_auth;
    let (store, what) = crate::storage::open(&config).await?;
    println!("loom: storage: {what}");
    let (bus, what) = crate::compose::bus(&config, crate::config::Service::ControlPlane).await?;
    println!("loom: bus: {what}");
    crate::compose::control_plane(&config, store, bus, shutdown_on_signals()).await
}

/// Opens and migrates PostgreSQL, then serves until Ctrl-C or SIGTERM. Behind a transaction-pooling
/// PgBouncer (`[database] pgbouncer = true`) it does not migrate — the migrator's session advisory
/// lock would be left on a pooled server connection — and refuses to start while a migration is
/// missing: `loom db migrate` against PostgreSQL itself applies them (the deployments' migration
/// Job).
async fn db(args: DbArgs, config: &Config) -> anyhow::Result<()> {
    let url = config.database_url.as_deref().context(
        "`loom serve db` serves PostgreSQL: set --database-url, LOOM_DATABASE_URL or database_url in loom.toml",
    )?;
    let store = PgStore::connect(url, &pg_options(config))
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {}", redact_url(url)))?;
    if config.database.pgbouncer {
        let pending = store.pending_migrations().await.context("reading the applied migrations")?;
        anyhow::ensure!(
            pending == 0,
            "{pending} PostgreSQL migration(s) not applied: with [database] pgbouncer = true `loom serve db` does not \
             migrate (the migrator's session lock does not survive transaction pooling); run `loom db migrate` with \
             a database URL that reaches PostgreSQL itself, then start it again"
        );
    } else {
        store.migrate().await.context("migrating PostgreSQL")?;
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(ServerTls::from_files(cert, key, args.tls_client_ca.as_deref())?),
        _ => None,
    };
    let addr = args.listen.unwrap_or(config.db_addr);
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    let probes_addr = args.metrics_addr.unwrap_or(config.database.service_metrics_addr);
    let probes = tokio::net::TcpListener::bind(probes_addr).await.with_context(|| {
        format!("cannot listen on {probes_addr} for /metrics (set --metrics-addr or [database] service_metrics_addr)")
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!("loom: database service at {scheme}://{} over PostgreSQL at {}", listener.local_addr()?, redact_url(url));
    println!("loom: metrics and probes at http://{}/metrics (/healthz, /readyz)", probes.local_addr()?);
    let shutdown = shutdown_on_signals();
    let token = config.database.token()?;
    let readiness = loom_telemetry::Readiness::new();
    let ready = Some(readiness.check("store", false));
    let probes = tokio::spawn(loom_telemetry::serve_probes(probes, readiness, shutdown.clone()));
    let server = ServerConfig { tls, token, insecure_no_tls: args.insecure_no_tls, ready, ..ServerConfig::default() };
    let served = loom_db::serve(server, listener, Arc::new(store), shutdown.clone()).await;
    shutdown.cancel();
    let _ = probes.await;
    served?;
    Ok(())
}
