//! `loom bench faults`: the fault suite. It starts a cluster of its own (nats-server,
//! PostgreSQL, the database service behind a fault proxy, two control planes, N agents — Loom as
//! separate processes of this binary), feeds it beads whose shell step appends `(bead,
//! dispatch)` to a log outside Loom, some always-failing beads and raw poison on the task
//! subject, and meanwhile kills and restarts NATS, agents and the dispatcher leader, makes
//! calls to the database service time out ambiguously and (where network namespaces can be
//! made) cuts agents and the leader off the network. Afterwards it rebuilds the history from
//! its own records, the effect log, the store and the DLQ and checks invariants I1–I7 on it
//! (`loom_faults::check`). The schedule is random from a seed, printed and replayable.

mod cluster;
mod schedule;
mod sources;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use loom_domain::{ProjectId, Status};
use loom_faults::check::{Report, check};
use loom_faults::history::{self, Entry, Record};
use loom_store::Store;
use serde::Serialize;

use self::cluster::{Cluster, PROJECT};
use self::schedule::{Fault, Plan};
use super::{Common, quantile_ms};
use crate::config::Config;

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// 1,000 beads; 3 NATS kills, agent kills, a leader kill, ambiguous DB timeouts, poison.
    Ci,
    /// 10,000 beads over 25 minutes and more of every fault (NATS link, full NATS disk, relay
    /// crash loops, partitions of agents and of the dispatcher leader too).
    Full,
}

#[derive(Debug, Args)]
pub struct FaultsArgs {
    #[arg(long, value_enum, default_value = "ci")]
    tier: Tier,
    /// Replays the schedule of an earlier run (its report names the seed).
    #[arg(long)]
    seed: Option<u64>,
    /// Beads instead of the tier's number.
    #[arg(long)]
    beads: Option<usize>,
    /// Agent processes.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Slots per agent.
    #[arg(long, default_value_t = 4)]
    slots: usize,
    /// Keep the run's directory (logs, effect log, history.jsonl) even when it passes.
    #[arg(long)]
    keep: bool,
    /// Only these fault kinds of the tier's schedule (at the times the seed gives them), e.g.
    /// `--only partition,leader_partition`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Spread the creates (and the faults) over this many seconds instead of the tier's window.
    #[arg(long, value_parser = clap::value_parser!(u64).range(20..))]
    window: Option<u64>,
    #[command(flatten)]
    common: Common,
}

/// I5's bound: every bead settles within this long after the last fault (AckWait 30 s plus a
/// lease of 30 s plus retries, with room for this 2-core machine).
const SETTLE_WITHIN: Duration = Duration::from_secs(150);

/// The run's own records (what it asked for and injected), timed from its start.
#[derive(Clone, Debug)]
pub struct Recorder {
    started: Instant,
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Recorder {
    fn new() -> Recorder {
        Recorder { started: Instant::now(), entries: Arc::default() }
    }

    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn push(&self, record: Record) {
        let entry = Entry { t_ms: self.now_ms(), record };
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    }

    fn take(&self) -> Vec<Entry> {
        std::mem::take(&mut *self.entries.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[derive(Debug, Serialize)]
struct FaultSummary {
    injected: usize,
    recovery_ms_p50: f64,
    recovery_ms_p99: f64,
}

#[derive(Debug, Serialize)]
struct Output {
    bench: &'static str,
    tier: Tier,
    seed: u64,
    nats_server: String,
    beads: usize,
    acked: usize,
    closed: usize,
    blocked: usize,
    lost: usize,
    duplicated: usize,
    extra_attempt_effects: usize,
    redispatches: usize,
    rescued: usize,
    dead_letters: usize,
    invariants_failed: Vec<&'static str>,
    invariants: Vec<Invariant>,
    faults: BTreeMap<String, FaultSummary>,
    /// Loom services that exited on their own (not by a fault) and were started again.
    unexpected_exits: Vec<String>,
    settled_after_last_fault_ms: u64,
    /// Faults of the issue this run could not inject here, each with the reason.
    skipped: Vec<String>,
    seconds: f64,
    dir: Option<String>,
}

#[derive(Debug, Serialize)]
struct Invariant {
    name: &'static str,
    pass: bool,
    offending: usize,
    /// The first offending ids (all of them are in the history's report).
    sample: Vec<String>,
}

pub async fn run(args: FaultsArgs, _config: &Config) -> anyhow::Result<()> {
    let seed = args.seed.unwrap_or_else(|| {
        Instant::now().elapsed().as_nanos() as u64
            ^ u64::from(std::process::id())
            ^ chrono::Utc::now().timestamp_micros() as u64
    });
    let mut plan = Plan::new(args.tier, seed, args.beads, args.window.map(Duration::from_secs));
    if !args.only.is_empty() {
        plan.keep_only(&args.only)?;
    }
    eprintln!("loom bench faults: tier {:?}, seed {seed} (replay with --seed {seed}), {} beads", args.tier, plan.beads);
    let dir = tempfile::Builder::new().prefix("loom-faults-").tempdir()?;
    let started = Instant::now();
    // Ctrl-C or SIGTERM ends the run by dropping it, which stops every server it started (by
    // pid) — never orphaned nats-servers, PostgreSQL clusters or Loom processes left behind.
    let interrupted = crate::compose::shutdown_on_signals();
    let outcome = tokio::select! {
        outcome = drive(&args, &plan, dir.path()) => outcome,
        _ = interrupted.cancelled() => Err(anyhow::anyhow!("interrupted: every server the run started was stopped")),
    };
    let (output, report) = match outcome {
        Ok(done) => done,
        Err(err) => {
            let kept = dir.keep();
            return Err(err.context(format!("the fault run failed; its directory is kept at {}", kept.display())));
        }
    };
    let failed = report.failed();
    let keep = args.keep || !failed.is_empty();
    let mut output = Output { seed, seconds: started.elapsed().as_secs_f64(), ..output };
    if keep {
        output.dir = Some(dir.keep().display().to_string());
    }
    print(&output, &report, args.common.json)?;
    anyhow::ensure!(
        failed.is_empty(),
        "invariants failed: {failed:?} (seed {seed}; history in {})",
        output.dir.as_deref().unwrap_or("?")
    );
    Ok(())
}

fn print(output: &Output, report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(output)?);
        return Ok(());
    }
    println!(
        "faults ({:?}, seed {}): {} beads, {} acked, {} closed, {} blocked; lost {}, duplicated {}; {:.0} s",
        output.tier,
        output.seed,
        output.beads,
        output.acked,
        output.closed,
        output.blocked,
        output.lost,
        output.duplicated,
        output.seconds
    );
    for v in &report.verdicts {
        let sample: Vec<&String> = v.offending.iter().take(5).collect();
        println!("  {} {:<4} {} {:?}", v.name, if v.pass { "PASS" } else { "FAIL" }, v.what, sample);
    }
    for why in &output.skipped {
        println!("  skipped {why}");
    }
    if !output.unexpected_exits.is_empty() {
        println!("  exited on their own and were started again: {:?}", output.unexpected_exits);
    }
    for (kind, f) in &output.faults {
        println!(
            "  {kind:<12} x{:<3} recovery p50 {:.0} ms, p99 {:.0} ms",
            f.injected, f.recovery_ms_p50, f.recovery_ms_p99
        );
    }
    Ok(())
}

async fn drive(args: &FaultsArgs, plan: &Plan, dir: &Path) -> anyhow::Result<(Output, Report)> {
    let effects = dir.join("effects.log");
    let mut cluster = Cluster::start(dir, &effects, args.agents, args.slots).await?;
    let epoch = chrono::Utc::now();
    let recorder = Recorder::new();
    let store = loom_store::PgStore::connect(&cluster.pg.url(), &loom_store::PgOptions::default()).await?;
    let bus_config = loom_bus::BusConfig { url: cluster.nats.url(), ..Default::default() };
    let bus = loom_bus::Bus::connect(bus_config).await.context("connecting to the run's NATS")?;
    cluster.start_agents().await?;
    let project = ProjectId::parse(PROJECT)?;
    let up = schedule::Up::new(cluster.cp_urls.len());
    let cp_urls = cluster.cp_urls.clone();
    let mut exits = Vec::new();
    let (created, last_fault) = tokio::join!(
        schedule::produce(plan, &cp_urls, &up, &effects, &recorder),
        schedule::inject(plan, &mut cluster, &up, &store, &bus, &recorder, &mut exits),
    );
    created?;
    let last_fault = last_fault?;
    let settled_at = schedule::settle(&store, &project, last_fault + SETTLE_WITHIN).await?;
    exits.extend(cluster.revive()?);
    poison_dead_lettered(plan, &bus).await?;
    let settled_after_last_fault_ms = settled_at.saturating_duration_since(last_fault).as_millis() as u64;
    // Let acks of the last results land before reading what the system left behind.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut entries = recorder.take();
    let t_end = recorder.now_ms();
    // The effect log's times are wall-clock ms; the recorder's are from its start.
    let epoch_ms = (chrono::Utc::now().timestamp_millis() as u64).saturating_sub(t_end);
    // The final states first, then the events, then the effect log: what made a bead closed (its
    // dispatch events, its effect, committed before its result) is then always in the sources
    // read after it, so a run cut off at the settle deadline with work still moving shows no
    // false gaps.
    entries.extend(sources::finals(&store, &project, t_end).await?);
    entries.extend(sources::events(&store, epoch).await?);
    let log = std::fs::read_to_string(&effects).unwrap_or_default();
    entries.extend(history::parse_effect_log(&log, epoch_ms));
    entries.extend(sources::dead_letters(&bus, t_end).await?);
    entries.sort_by_key(|e| e.t_ms);
    history::write_jsonl(&dir.join("history.jsonl"), &entries)?;
    cluster.stop().await;
    let report = check(&entries, SETTLE_WITHIN);
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    let mut output = summarize(plan, &cluster, &entries, &report, settled_after_last_fault_ms);
    output.unexpected_exits = exits;
    Ok((output, report))
}

/// Waits (up to the ack wait and a margin) until every injected poison message is in the DLQ:
/// one pulled by an agent that a fault then killed comes back only after its ack wait, which the
/// beads' settling does not wait for. A poison still missing after that is left for I6 to report.
async fn poison_dead_lettered(plan: &Plan, bus: &loom_bus::Bus) -> anyhow::Result<()> {
    let injected = plan.faults.iter().filter(|(_, f)| matches!(f, Fault::Poison { .. })).count();
    let deadline = Instant::now() + loom_bus::BusConfig::default().ack_wait + Duration::from_secs(15);
    loop {
        let dead = sources::dead_letters(bus, 0).await?;
        let poison = dead
            .iter()
            .filter(|e| matches!(&e.record, Record::DeadLettered { msg_id, .. } if msg_id.starts_with("poison-")))
            .count();
        if poison >= injected || Instant::now() > deadline {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn summarize(plan: &Plan, cluster: &Cluster, entries: &[Entry], report: &Report, settled_ms: u64) -> Output {
    let mut recoveries: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    let mut injected: BTreeMap<String, usize> = BTreeMap::new();
    let (mut dispatched, mut beads, mut rescued, mut dead) = (0, std::collections::BTreeSet::new(), 0, 0);
    for e in entries {
        match &e.record {
            Record::Fault { fault, .. } => *injected.entry(fault.clone()).or_default() += 1,
            Record::Recovered { fault, ms } => {
                recoveries.entry(fault.clone()).or_default().push(Duration::from_millis(*ms))
            }
            Record::Dispatched { bead, .. } => {
                dispatched += 1;
                beads.insert(bead.clone());
            }
            Record::Rescued { .. } => rescued += 1,
            Record::DeadLettered { .. } => dead += 1,
            _ => {}
        }
    }
    let faults = injected
        .into_iter()
        .map(|(kind, n)| {
            let mut r = recoveries.remove(&kind).unwrap_or_default();
            r.sort();
            let summary = FaultSummary {
                injected: n,
                recovery_ms_p50: quantile_ms(&r, 0.5),
                recovery_ms_p99: quantile_ms(&r, 0.99),
            };
            (kind, summary)
        })
        .collect();
    let invariants = report
        .verdicts
        .iter()
        .map(|v| Invariant {
            name: v.name,
            pass: v.pass,
            offending: v.offending.len(),
            sample: v.offending.iter().take(10).cloned().collect(),
        })
        .collect();
    Output {
        bench: "faults",
        tier: plan.tier,
        seed: plan.seed,
        nats_server: format!("nats-server {}", cluster.nats.version()),
        beads: plan.beads,
        acked: report.acked,
        closed: report.closed,
        blocked: report.blocked,
        lost: report.lost,
        duplicated: report.duplicated,
        extra_attempt_effects: report.extra_attempt_effects,
        redispatches: dispatched - beads.len(),
        rescued,
        dead_letters: dead,
        invariants_failed: report.failed(),
        invariants,
        faults,
        unexpected_exits: Vec::new(),
        settled_after_last_fault_ms: settled_ms,
        skipped: skipped(cluster),
        seconds: 0.0,
        dir: None,
    }
}

/// What the run left out, and why.
fn skipped(cluster: &Cluster) -> Vec<String> {
    let mut skipped = Vec::new();
    if let Err(why) = &cluster.netns {
        skipped.push(format!("partition, leader_partition: no network namespace could be made here ({why})"));
    }
    if let Err(why) = &cluster.nats_disk {
        skipped.push(format!("disk_full: NATS's store could not be put on a tmpfs ({why})"));
    }
    skipped
}

/// Counts of the project's beads by status.
pub async fn counts(store: &dyn Store, project: &ProjectId) -> anyhow::Result<BTreeMap<String, u64>> {
    let counts = store.bead_counts(Some(project)).await?;
    Ok(counts.into_iter().map(|(s, n): (Status, u64)| (s.as_str().to_owned(), n)).collect())
}
