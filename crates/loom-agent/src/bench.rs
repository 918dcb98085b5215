//! `loom bench agent`: N no-op tasks through one agent at concurrency 1 and 8, on a scratch bus
//! namespace that is deleted afterwards. Overhead is the time a task spends in the agent
//! outside the executor (slot acquired → result published and acked, minus the executor).
//! The sandbox's cost is the p50 of a trivial command (`true`) in the bubblewrap sandbox minus
//! the p50 of the same command unsandboxed, measured in the same run, interleaved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use loom_bus::{
    Bus, BusConfig, ConsumeOptions, ResultKind, TaskData, TaskKind, TaskMessage, TaskMetadata, TraceContext,
};
use loom_domain::{BeadId, DispatchId, ProjectId};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::agent::{Stats, lock, run_with};
use crate::config::CommandLimits;
use crate::sandbox::{Isolation, run_command};
use crate::{AgentConfig, Error, ExecutorKind, SandboxConfig};

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Where to run; its namespace is replaced by a scratch one per round.
    pub bus: BusConfig,
    /// Use the embedded in-process bus instead of NATS.
    pub embedded: bool,
    /// Tasks per round.
    pub tasks: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { bus: BusConfig::default(), embedded: false, tasks: 2000 }
    }
}

/// The figures, with the field names `loom bench agent --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub tasks_per_s_c1: f64,
    pub tasks_per_s_c8: f64,
    /// p99 over both rounds.
    pub overhead_p99_ms: f64,
    /// p50 of `true` sandboxed − p50 of `true` unsandboxed; `None` when bubblewrap cannot run.
    pub sandbox_overhead_p50_ms: Option<f64>,
}

/// Trivial commands run each way for the sandbox figure.
const SANDBOX_SAMPLES: usize = 60;

/// Runs both rounds.
pub async fn run(opts: BenchOptions) -> Result<BenchReport, Error> {
    let stats = Arc::new(Stats::default());
    let c1 = round(&opts, 1, stats.clone()).await?;
    let c8 = round(&opts, 8, stats.clone()).await?;
    let mut overhead = lock(&stats.overhead).clone();
    overhead.sort();
    let p99 = overhead.get((overhead.len() * 99 / 100).min(overhead.len().saturating_sub(1))).copied();
    Ok(BenchReport {
        tasks_per_s_c1: c1,
        tasks_per_s_c8: c8,
        overhead_p99_ms: p99.unwrap_or_default().as_secs_f64() * 1000.0,
        sandbox_overhead_p50_ms: sandbox_overhead().await?,
    })
}

async fn sandbox_overhead() -> Result<Option<f64>, Error> {
    let config = SandboxConfig::default();
    if let Err(err) = crate::sandbox::probe(&config).await {
        tracing::warn!(%err, "no sandbox figure");
        return Ok(None);
    }
    let dir = std::env::temp_dir();
    let limits = CommandLimits { timeout: Duration::from_secs(30), output_cap: 4096 };
    let (sandboxed, plain) = (Isolation::new(&config), Isolation::none());
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..SANDBOX_SAMPLES {
        for (isolation, times) in [(&sandboxed, &mut with), (&plain, &mut without)] {
            let started = Instant::now();
            let out = run_command(isolation, &dir, "true", &limits, &[]).await?;
            if !out.success() {
                return Err(Error::Config(format!("`true` failed in the bench: {}", out.output)));
            }
            times.push(started.elapsed());
        }
    }
    let p50 = |times: &mut Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64() * 1000.0
    };
    Ok(Some(p50(&mut with) - p50(&mut without)))
}

async fn round(opts: &BenchOptions, concurrency: usize, stats: Arc<Stats>) -> Result<f64, Error> {
    let config = BusConfig { namespace: Some(format!("bench{:08x}", rand::random::<u32>())), ..opts.bus.clone() };
    let bus = if opts.embedded { Bus::embedded(config)? } else { Bus::connect(config).await? };
    bus.provision().await?;
    let outcome = measure(&bus, opts.tasks, concurrency, stats).await;
    let cleanup = bus.destroy().await;
    bus.shutdown();
    let rate = outcome?;
    cleanup?;
    Ok(rate)
}

async fn measure(bus: &Bus, tasks: usize, concurrency: usize, stats: Arc<Stats>) -> Result<f64, Error> {
    let project = ProjectId::parse("bench").expect("valid id");
    let mut config = AgentConfig::new(project.clone(), std::env::temp_dir().join("loom-bench"), "");
    config.concurrency = concurrency;
    config.default_executor = ExecutorKind::Noop;
    let shutdown = CancellationToken::new();
    let agent = tokio::spawn(run_with(config, bus.clone(), shutdown.clone(), Some(stats)));
    let mut results = bus.consume_results(ConsumeOptions { max_in_flight: 512, prefetch: true }).await?;
    while bus.list_agents().await?.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let msgs =
        (0..tasks).map(|i| bus.task(&noop_task(&project, i), &TraceContext::default())).collect::<Result<_, _>>()?;
    for sent in bus.publish_batch(msgs).await {
        sent?;
    }
    let mut done = 0;
    while done < tasks {
        let next = tokio::time::timeout(Duration::from_secs(60), results.next()).await;
        let Ok(Some(received)) = next else {
            shutdown.cancel();
            return Err(Error::Config(format!("bench stalled after {done} of {tasks} results")));
        };
        if received.message.kind == ResultKind::Completed {
            done += 1;
        }
        received.delivery.ack_nowait().await?;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    agent.await.map_err(|e| Error::Config(format!("agent task failed: {e}")))??;
    Ok(tasks as f64 / elapsed.as_secs_f64())
}

fn noop_task(project: &ProjectId, i: usize) -> TaskMessage {
    TaskMessage {
        kind: TaskKind::Assigned,
        project_id: project.clone(),
        bead_id: BeadId::parse(&format!("bench-{}", loom_domain::base36(i as u64))).expect("valid id"),
        assigned_to: String::new(),
        task_data: TaskData { title: format!("noop {i}"), ..TaskData::default() },
        correlation_id: format!("bench-{i}"),
        timestamp: Utc::now(),
        metadata: TaskMetadata {
            dispatch_id: DispatchId::parse(&format!("b{:08x}{i}", rand::random::<u32>())).expect("valid id"),
            attempt: 1,
            role: None,
            executor: "noop".into(),
        },
    }
}
