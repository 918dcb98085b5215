//! `loom up`: every service in one process on this machine — the store (PostgreSQL when
//! configured, else the embedded SQLite file), the bus (NATS when configured, else the embedded
//! bus), the connectors service in process (its key in `data_dir/connectors.key`, made on first
//! start), the control plane with its API, and one project agent per project (shell executor, the
//! project's repository). Ctrl-C shuts it all down cleanly.

use loom_domain::Status;

use crate::config::Config;
use crate::{compose, storage};

pub async fn run(config: &Config) -> anyhow::Result<()> {
    // Before anything starts: the agents cannot run a bead's command without their sandbox.
    let sandbox = config.agent_sandbox();
    loom_agent::sandbox::probe(&sandbox).await?;
    let (store, what) = storage::open(config).await?;
    let projects = store.list_projects().await?;
    let counts = store.bead_counts(None).await?;
    println!("loom: storage ready: {what}");
    println!("loom: {} project(s); beads {}", projects.len(), summary(&counts));
    let (bus, what) = compose::bus(config, crate::config::Service::Up).await?;
    println!("loom: bus ready: {what}");
    match sandbox.mode {
        loom_agent::SandboxMode::Bubblewrap => println!("loom: bead commands run in a bubblewrap sandbox"),
        loom_agent::SandboxMode::None => {
            println!("loom: WARNING: bead commands run unsandboxed (agent.sandbox = \"none\")")
        }
    }
    if bus.is_embedded() {
        let requeued = crate::requeue::lost_dispatches(&*store).await?;
        if requeued > 0 {
            println!(
                "loom: {requeued} bead(s) dispatched by the last run were queued again (the embedded bus starts empty)"
            );
        }
    }
    // Built in, overridden by `personas_dir`; a broken persona file stops `loom up` here.
    let personas = crate::personas::load(&config.personas_dir)?;
    let shutdown = compose::shutdown_on_signals();
    let (connectors, what) = crate::config::connectors::open(config, store.clone(), shutdown.clone()).await?;
    println!("loom: {what}");
    let agents = tokio::spawn(crate::agents::supervise(
        config.clone(),
        personas,
        store.clone(),
        bus.clone(),
        Some(connectors.clone()),
        shutdown.clone(),
    ));
    let served = compose::control_plane(config, store, bus, Some(connectors), shutdown.clone()).await;
    shutdown.cancel();
    let _ = agents.await;
    served
}

fn summary(counts: &[(Status, u64)]) -> String {
    counts.iter().map(|(s, n)| format!("{s}={n}")).collect::<Vec<_>>().join(" ")
}
