//! `loom up`: every service in one process on this machine.
//!
//! Today it brings up the storage layer (PostgreSQL when configured, else the embedded SQLite
//! file, migrated) and the message bus (NATS JetStream when configured, else the embedded bus),
//! reports what runs, and waits for Ctrl-C. The control plane and agents join as they land.

use anyhow::Context;
use loom_domain::Status;

use crate::config::Config;
use crate::storage;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let (store, what) = storage::open(config).await?;
    let projects = store.list_projects().await?;
    let counts = store.bead_counts(None).await?;
    println!("loom: storage ready: {what}");
    println!("loom: {} project(s); beads {}", projects.len(), summary(&counts));
    let bus = crate::bench::bus::connect(config).await?;
    println!("loom: bus ready: {bus}");
    println!("loom: the control plane and agents are not part of this build yet; press Ctrl-C to stop");
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    println!("loom: shutting down");
    Ok(())
}

fn summary(counts: &[(Status, u64)]) -> String {
    counts.iter().map(|(s, n)| format!("{s}={n}")).collect::<Vec<_>>().join(" ")
}
