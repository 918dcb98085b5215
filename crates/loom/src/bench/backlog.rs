//! `loom bench backlog`: N slow no-op tasks queued at once behind M agents × K slots, with a
//! lease shorter than a task, on PostgreSQL + NATS (scratch database and namespace). Real
//! agents (`loom-agent`, store-backed fence) and the control plane run in this process. A
//! correct run closes every bead with exactly one start each and blocks none; the figures are
//! the counts and the longest wait from a bead's dispatch to its start (queued time).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use loom_bus::Bus;
use loom_domain::{AgentId, EventKind, NewBead, NewProject, ProjectId, Status};
use loom_store::Store;
use loom_store::scratch::ScratchDatabase;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Common, progress};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct BacklogArgs {
    /// Beads queued at once.
    #[arg(long, default_value_t = 200)]
    beads: usize,
    /// Agent instances.
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Slots per agent.
    #[arg(long, default_value_t = 4)]
    slots: usize,
    /// How long each task works, in milliseconds.
    #[arg(long, default_value_t = 300)]
    task_ms: u64,
    /// The lease, in milliseconds (shorter than a task: progress must keep it alive).
    #[arg(long, default_value_t = 200)]
    lease_ms: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Serialize)]
struct Report {
    beads: usize,
    closed: usize,
    blocked: usize,
    /// `bead.started` events: one per bead when nothing ran twice or was redispatched.
    starts: usize,
    /// Longest time from a bead's dispatch to an agent starting it.
    max_queue_wait_ms: f64,
    agents: usize,
    slots: usize,
    seconds: f64,
}

pub async fn run(args: BacklogArgs, config: &Config) -> anyhow::Result<()> {
    anyhow::ensure!(args.beads > 0 && args.agents > 0 && args.slots > 0, "beads, agents and slots must be positive");
    let scratch = ScratchDatabase::create_on(&super::database_url(config), "loom_bench").await?;
    let store: Arc<dyn Store> = Arc::new(scratch.open(&crate::storage::pg_options(config)).await?);
    let bus = super::scratch_bus(config, "backlog").await?;
    let outcome = drive(&args, store.clone(), bus.clone()).await;
    bus.destroy().await?;
    drop(scratch);
    let report = outcome?;
    if args.common.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "backlog: {} beads, {} closed, {} blocked, {} starts; longest queued {:.0} ms ({} agents x {} slots, {:.1} s)",
            report.beads,
            report.closed,
            report.blocked,
            report.starts,
            report.max_queue_wait_ms,
            report.agents,
            report.slots,
            report.seconds
        );
    }
    anyhow::ensure!(
        report.closed == report.beads && report.starts == report.beads && report.blocked == 0,
        "the backlog did not run each bead exactly once"
    );
    Ok(())
}

async fn drive(args: &BacklogArgs, store: Arc<dyn Store>, bus: Bus) -> anyhow::Result<Report> {
    let project = ProjectId::parse("backlog")?;
    store.create_project(NewProject::new(project.clone(), "")).await?;
    let lease = Duration::from_millis(args.lease_ms);
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cp_config = loom_control_plane::Config {
        insecure_no_auth: true,
        lease,
        sweep_interval: Duration::from_millis(100),
        ..loom_control_plane::Config::default()
    };
    let cp = tokio::spawn(loom_control_plane::run(cp_config, listener, store.clone(), bus.clone(), shutdown.clone()));
    // The agents' journals; removed at the end.
    let work = std::env::temp_dir().join(format!("loom-bench-backlog-{}", std::process::id()));
    let mut agents = Vec::new();
    for i in 0..args.agents {
        let mut agent = loom_agent::AgentConfig::new(project.clone(), &work, "");
        agent.agent_id = Some(AgentId::parse(&format!("backlog-agent-{i}"))?);
        agent.concurrency = args.slots;
        agent.default_executor = loom_agent::ExecutorKind::Noop;
        agent.progress_interval = (lease / 3).max(Duration::from_millis(20));
        agent.fence = Some(Arc::new(crate::agents::StoreFence { store: store.clone(), lease, max_attempts: 3 }));
        agents.push(tokio::spawn(loom_agent::run(agent, bus.clone(), shutdown.clone())));
    }
    let mut beads = Vec::with_capacity(args.beads);
    for i in 0..args.beads {
        let mut bead = NewBead::new(project.clone(), format!("slow {i}"));
        bead.context.insert("noop_ms".into(), args.task_ms.to_string());
        beads.push(bead);
    }
    let started = Instant::now();
    for chunk in beads.chunks(500) {
        store.create_beads(chunk.to_vec()).await?;
    }
    let bar = progress("backlog: closed", args.beads as u64);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let counts = loop {
        let counts: HashMap<Status, u64> = store.bead_counts(Some(&project)).await?.into_iter().collect();
        let settled =
            counts.get(&Status::Closed).copied().unwrap_or(0) + counts.get(&Status::Blocked).copied().unwrap_or(0);
        bar.set_position(settled);
        if settled as usize >= args.beads || Instant::now() > deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seconds = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    shutdown.cancel();
    for a in agents {
        a.await??;
    }
    cp.await??;
    let _ = std::fs::remove_dir_all(&work);
    let (starts, max_queue_wait_ms) = starts_and_queue_wait(&*store).await?;
    Ok(Report {
        beads: args.beads,
        closed: counts.get(&Status::Closed).copied().unwrap_or(0) as usize,
        blocked: counts.get(&Status::Blocked).copied().unwrap_or(0) as usize,
        starts,
        max_queue_wait_ms,
        agents: args.agents,
        slots: args.slots,
        seconds,
    })
}

/// Counts `bead.started` events and the longest wait from each `bead.dispatched` to its start.
async fn starts_and_queue_wait(store: &dyn Store) -> anyhow::Result<(usize, f64)> {
    let mut dispatched: HashMap<String, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let (mut starts, mut longest, mut after) = (0, 0.0f64, 0);
    loop {
        let events = store.list_events(after, 1000).await?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        for e in events {
            match e.kind {
                EventKind::BeadDispatched => {
                    dispatched.insert(e.entity_id.clone(), e.created_at);
                }
                EventKind::BeadStarted => {
                    starts += 1;
                    if let Some(at) = dispatched.get(&e.entity_id) {
                        longest = longest.max((e.created_at - *at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
                    }
                }
                _ => {}
            }
        }
    }
    Ok((starts, longest))
}
