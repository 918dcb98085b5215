//! `loom bench …`: measurements of Loom against raw baselines in the same run. Figures go to
//! stdout (a table, or one JSON object per line with `--json`); progress goes to stderr and only
//! to a terminal. Every bench creates its own scratch database or stream namespace and removes it.

mod agent;
mod api;
mod backlog;
pub mod bus;
mod connectors;
pub(crate) mod cpu;
mod db;
pub(crate) mod e2e;
mod faults;
mod reads;
mod store;

use std::time::Duration;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Store throughput (create, claim) and the ready query with 100 k beads, per backend.
    Store(store::StoreArgs),
    /// Bus publish+consume through loom-bus against raw async-nats.
    Bus(bus::BusArgs),
    /// No-op tasks through one agent at concurrency 1 and 8.
    Agent(agent::AgentBenchArgs),
    /// `GetBead` and `ClaimReady` latency through the gRPC database service vs. PostgreSQL alone.
    Db(db::DbArgs),
    /// Beads end to end through the control plane and no-op agents (PostgreSQL + NATS).
    E2e(e2e::E2eArgs),
    /// A backlog of slow tasks behind few agent slots with a short lease: all close, each once.
    Backlog(backlog::BacklogArgs),
    /// The fault suite: a cluster of its own under kills, restarts, timeouts and poison; checks
    /// that nothing is lost or done twice (invariants I1–I7 on the run's history).
    Faults(faults::FaultsArgs),
    /// Control plane RSS with 100 k beads after calling every read route once (PostgreSQL).
    Reads(reads::ReadsArgs),
    /// `HealthCheckAll` over 100 connectors, half slow: elapsed ÷ the per-check timeout.
    Connectors(connectors::ConnectorsArgs),
    /// The HTTP API under load (create, get, ready, SSE subscribers) next to the trivial
    /// `/healthz` handler of the same process; the control plane's RSS at the end.
    Api(api::ApiArgs),
}

/// Options every bench shares.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Print one JSON object per line on stdout and nothing else there.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(cmd: BenchCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Store(args) => store::run(args, config).await,
        BenchCommand::Bus(args) => bus::run(args, config).await,
        BenchCommand::Agent(args) => agent::run(args, config).await,
        BenchCommand::Db(args) => db::run(args, config).await,
        BenchCommand::E2e(args) => e2e::run(args, config).await,
        BenchCommand::Backlog(args) => backlog::run(args, config).await,
        BenchCommand::Faults(args) => faults::run(args, config).await,
        BenchCommand::Reads(args) => reads::run(args, config).await,
        BenchCommand::Connectors(args) => connectors::run(args, config).await,
        BenchCommand::Api(args) => api::run(args, config).await,
    }
}

/// The PostgreSQL server benches use: the configured one, else the local default.
pub fn database_url(config: &Config) -> String {
    config.database_url.clone().unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A provisioned bus in a fresh namespace `{prefix}{random}` on the configured NATS; the caller
/// destroys it.
pub async fn scratch_bus(config: &Config, prefix: &str) -> anyhow::Result<loom_bus::Bus> {
    let salt = chrono::Utc::now().timestamp_subsec_nanos() ^ std::process::id().rotate_left(16);
    let namespace = format!("{prefix}{salt:08x}");
    let bus_config = loom_bus::BusConfig { url: nats_url(config), namespace: Some(namespace), ..Default::default() };
    let bus = loom_bus::Bus::connect(bus_config).await.map_err(|e| anyhow::anyhow!("connecting to NATS: {e}"))?;
    bus.provision().await?;
    Ok(bus)
}

/// The NATS server benches use: the configured one, else the local default.
pub fn nats_url(config: &Config) -> String {
    config.nats_url.clone().unwrap_or_else(|| "nats://127.0.0.1:4222".into())
}

/// A fresh directory under the system's temporary directory; the caller removes it.
pub fn temp_dir() -> anyhow::Result<std::path::PathBuf> {
    let now = chrono::Utc::now().timestamp_micros();
    let dir = std::env::temp_dir().join(format!("loom-bench-{}-{now}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub fn progress(label: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>28} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The q-quantile (0..=1) of sorted durations, in milliseconds.
pub fn quantile_ms(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}
