//! `loom bench e2e`: N beads through create → dispatch → no-op agent → result → closed on
//! PostgreSQL + NATS, with the control plane in this process. Without `--rate` the beads are
//! created as fast as the store takes them (throughput); with `--rate R` one bead is created every
//! 1/R s (latency at an offered load). Dispatch latency is from the bead's commit (its `created_at`,
//! when it became ready) to the agent holding the task, both on this machine's clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use clap::Args;
use loom_bus::{
    AgentRecord, Bus, ConsumeOptions, ResultData, ResultKind, ResultMessage, ResultMetadata, ResultStatus, TraceContext,
};
use loom_domain::{AgentId, AgentStatus, EventKind, NewBead, NewProject, ProjectId, Status};
use loom_store::scratch::ScratchDatabase;
use loom_store::{DispatchStart, StartOutcome, Store};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{Common, cpu, progress, quantile_ms};
use crate::config::Config;

#[derive(Debug, Args)]
pub struct E2eArgs {
    /// Beads to drive through.
    #[arg(long, default_value_t = 20_000)]
    beads: usize,
    /// Offered load in beads per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// No-op agent instances (competing consumers).
    #[arg(long, default_value_t = 2)]
    agents: usize,
    /// Give up waiting for the last beads after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
    /// Then run the same workload again with the control plane and agents on the gRPC store,
    /// through a database service (`loom serve db`) in this process on its own scratch database;
    /// `vs_direct` is its beads/s ÷ the direct run's.
    #[arg(long)]
    via_db_service: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Serialize)]
struct Report {
    beads: usize,
    beads_per_s: f64,
    dispatch_p50_ms: f64,
    dispatch_p99_ms: f64,
    lost: usize,
    duplicated: usize,
    offered_rate: Option<f64>,
    /// The first beads, left out of the latency figures (connections, prepared statements and
    /// caches are cold while they pass).
    warmup_beads: usize,
    /// With `--rate`: latency from the moment the API's `201 Created` reached the client (after
    /// the create committed) to the agent holding the task; a lower bound of the dispatch path
    /// alone, where `dispatch_*` also counts the create's own statement and commit.
    after_api_ack_p50_ms: Option<f64>,
    after_api_ack_p99_ms: Option<f64>,
    /// Raw PostgreSQL on the same server in the same run: one-row insert + commit, one client.
    raw_pg_commit_p50_ms: f64,
    raw_pg_commit_p99_ms: f64,
    /// … and with 8 clients at once, transactions per second (the mean of a run before the beads
    /// and one after them).
    raw_pg_tx_per_s: f64,
    /// `beads_per_s ÷ raw_pg_tx_per_s`: the figure that holds from one machine to the next.
    raw_pg_ratio: f64,
    /// CPU time per bead of this process (the control plane and the no-op agents), plus the
    /// PostgreSQL backends and nats-server where they run on this machine.
    cpu_ms_per_bead: f64,
    cpu_ms_per_bead_by_process: Option<cpu::PerBead>,
    /// With `--via-db-service`: the same workload through the database service.
    #[serde(skip_serializing_if = "Option::is_none")]
    via_db_service: Option<Box<Report>>,
    /// With `--via-db-service`: its beads/s ÷ the direct run's (target ≥ 0.7).
    #[serde(skip_serializing_if = "Option::is_none")]
    vs_direct: Option<f64>,
    /// The direct workload run again in the same run, untraced and with traces exported to an
    /// OTLP receiver in this process, in ABBA order (untraced: the run above and one more;
    /// traced: two between them): traced ÷ untraced beads/s. `None` without the receiver.
    tracing_overhead_ratio: Option<f64>,
    /// Mean beads per second of the traced runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    traced_beads_per_s: Option<f64>,
    /// Spans the receiver got during the traced runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    traced_spans: Option<usize>,
}

/// The in-process OTLP receiver of the traced run, started by `main` before the subscriber.
static RECEIVER: std::sync::OnceLock<loom_telemetry::receiver::Receiver> = std::sync::OnceLock::new();

/// Starts the receiver; returns its endpoint for the exporter.
pub(crate) async fn start_receiver() -> std::io::Result<String> {
    let receiver = loom_telemetry::receiver::Receiver::start().await?;
    let endpoint = receiver.endpoint();
    let _ = RECEIVER.set(receiver);
    Ok(endpoint)
}

/// Raw PostgreSQL figures: what one commit costs on this server right now.
#[derive(Clone, Copy)]
struct RawPg {
    commit_p50_ms: f64,
    commit_p99_ms: f64,
    tx_per_s: f64,
}

/// One-row autocommit inserts into a scratch table: 1,000 one after another (latency), then 8
/// clients for 2 s (throughput).
async fn raw_pg(pool: &sqlx::PgPool) -> anyhow::Result<RawPg> {
    sqlx::query("CREATE TABLE raw_baseline (id BIGSERIAL PRIMARY KEY, at TIMESTAMPTZ NOT NULL)").execute(pool).await?;
    let insert = "INSERT INTO raw_baseline (at) VALUES (now())";
    let mut lat = Vec::with_capacity(1000);
    for _ in 0..1000 {
        let started = Instant::now();
        sqlx::query(insert).execute(pool).await?;
        lat.push(started.elapsed());
    }
    lat.sort();
    let until = Instant::now() + Duration::from_secs(2);
    let clients = (0..8).map(|_| async move {
        let mut n = 0u64;
        while Instant::now() < until {
            sqlx::query(insert).execute(pool).await?;
            n += 1;
        }
        anyhow::Ok(n)
    });
    let started = Instant::now();
    let done: u64 = futures::future::try_join_all(clients).await?.into_iter().sum();
    let tx_per_s = done as f64 / started.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE raw_baseline").execute(pool).await?;
    Ok(RawPg { commit_p50_ms: quantile_ms(&lat, 0.5), commit_p99_ms: quantile_ms(&lat, 0.99), tx_per_s })
}

/// When the agents received each bead's task, by bead id.
type Received = Arc<Mutex<HashMap<String, chrono::DateTime<Utc>>>>;

pub async fn run(args: E2eArgs, config: &Config) -> anyhow::Result<()> {
    let (mut report, raw, nats) = direct(&args, config).await?;
    if args.via_db_service {
        let via = via_db_service(&args, config, raw, nats).await.context("the run through the database service")?;
        report.vs_direct = Some(if report.beads_per_s > 0.0 { via.beads_per_s / report.beads_per_s } else { 0.0 });
        report.via_db_service = Some(Box::new(via));
    }
    if let Some(receiver) = RECEIVER.get() {
        let paired = tracing_overhead(&args, config, receiver, report.beads_per_s).await?;
        report.traced_beads_per_s = Some(paired.traced_beads_per_s);
        report.traced_spans = Some(paired.spans);
        report.tracing_overhead_ratio = paired.ratio;
    }
    print(&args, &report)
}

/// What the traced and untraced runs of [`tracing_overhead`] measured.
struct Paired {
    /// Mean beads/s of the traced runs.
    traced_beads_per_s: f64,
    /// Spans the receiver got during the traced runs.
    spans: usize,
    /// Traced ÷ untraced beads/s over the pairs (`None` when an untraced run made no progress).
    ratio: Option<f64>,
}

/// The direct workload in ABBA order — the first untraced run (`untraced`, measured already),
/// then traced, traced, untraced — so neither side always runs warmer (a later run finds
/// PostgreSQL's caches, NATS and the allocator warmed by the one before): the ratio is the
/// traced runs' total beads/s ÷ the untraced runs'.
async fn tracing_overhead(
    args: &E2eArgs,
    config: &Config,
    receiver: &loom_telemetry::receiver::Receiver,
    untraced: f64,
) -> anyhow::Result<Paired> {
    let before = receiver.count();
    let mut traced = Vec::new();
    loom_telemetry::set_exporting(true);
    for _ in 0..2 {
        match direct(args, config).await {
            Ok((run, _, _)) => traced.push(run.beads_per_s),
            Err(e) => {
                loom_telemetry::set_exporting(false);
                return Err(e.context("a traced run"));
            }
        }
    }
    loom_telemetry::flush();
    loom_telemetry::set_exporting(false);
    let spans = receiver.count() - before;
    let (last, _, _) = direct(args, config).await.context("the last untraced run")?;
    let untraced = untraced + last.beads_per_s;
    let traced_sum: f64 = traced.iter().sum();
    Ok(Paired {
        traced_beads_per_s: traced_sum / traced.len() as f64,
        spans,
        ratio: (untraced > 0.0).then(|| traced_sum / untraced),
    })
}

/// The direct run (the control plane on PostgreSQL) on a scratch database and bus of its own,
/// with the raw PostgreSQL baseline before and after it.
async fn direct(args: &E2eArgs, config: &Config) -> anyhow::Result<(Report, RawPg, Option<u32>)> {
    let scratch = ScratchDatabase::create_on(&super::database_url(config), "loom_bench").await?;
    let mut pg = crate::storage::pg_options(config);
    pg.max_connections = pg.max_connections.max(24);
    let pg_store = scratch.open(&pg).await?;
    let pool = pg_store.pool().clone();
    let raw = raw_pg(&pool).await.context("raw PostgreSQL baseline")?;
    let store: Arc<dyn Store> = Arc::new(pg_store);
    let bus = super::scratch_bus(config, "bench").await?;
    let nats = nats_port(&super::nats_url(config)).and_then(cpu::nats_server);
    let outcome = measured(args, store.clone(), &pool, bus.clone(), raw, nats).await;
    // The baseline again after the run: the figure is the mean of both, so a load that came or
    // went on this machine meanwhile moves the ratio less.
    let after = raw_pg(&pool).await.context("raw PostgreSQL baseline after the run");
    bus.destroy().await?;
    drop(pool);
    drop(scratch);
    let mut report = outcome?;
    let after = after?;
    report.raw_pg_tx_per_s = (report.raw_pg_tx_per_s + after.tx_per_s) / 2.0;
    report.raw_pg_ratio = report.beads_per_s / report.raw_pg_tx_per_s;
    Ok((report, raw, nats))
}

fn print(args: &E2eArgs, report: &Report) -> anyhow::Result<()> {
    if args.common.json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!(
            "e2e: {} beads, {:.0} beads/s; dispatch p50 {:.2} ms, p99 {:.2} ms (after {} warm-up beads); lost {}, duplicated {}",
            report.beads,
            report.beads_per_s,
            report.dispatch_p50_ms,
            report.dispatch_p99_ms,
            report.warmup_beads,
            report.lost,
            report.duplicated
        );
        println!(
            "raw PostgreSQL (same server, same run): one-row commit p50 {:.2} ms, p99 {:.2} ms; {:.0} tx/s with 8 clients",
            report.raw_pg_commit_p50_ms, report.raw_pg_commit_p99_ms, report.raw_pg_tx_per_s
        );
        println!("cpu: {:.3} ms per bead (this process, PostgreSQL backends, nats-server)", report.cpu_ms_per_bead);
        if let (Some(via), Some(ratio)) = (&report.via_db_service, report.vs_direct) {
            println!(
                "through the database service: {:.0} beads/s ({ratio:.2} × direct); dispatch p99 {:.2} ms; lost {}, duplicated {}; cpu {:.3} ms per bead",
                via.beads_per_s, via.dispatch_p99_ms, via.lost, via.duplicated, via.cpu_ms_per_bead
            );
        }
        if let (Some(ratio), Some(traced), Some(spans)) =
            (report.tracing_overhead_ratio, report.traced_beads_per_s, report.traced_spans)
        {
            println!(
                "traced (same run, ABBA, {spans} spans exported in process): {traced:.0} beads/s, ratio {ratio:.2}"
            );
        }
    }
    Ok(())
}

/// `drive`, with the CPU time the run cost: this process, the backends of `pool`'s database
/// (those open at the end; the pool grows during the run) and the local nats-server.
async fn measured(
    args: &E2eArgs,
    store: Arc<dyn Store>,
    pool: &sqlx::PgPool,
    bus: Bus,
    raw: RawPg,
    nats: Option<u32>,
) -> anyhow::Result<Report> {
    let mut watched = cpu::Watched { postgres: cpu::postgres_backends(pool).await, nats };
    let before = cpu::sample(&watched);
    let mut report = drive(args, store, bus, raw).await?;
    for pid in cpu::postgres_backends(pool).await {
        if !watched.postgres.contains(&pid) {
            watched.postgres.push(pid);
        }
    }
    let spent = cpu::per_bead(&before, &cpu::sample(&watched), &watched, report.beads);
    report.cpu_ms_per_bead = spent.total();
    report.cpu_ms_per_bead_by_process = Some(spent);
    Ok(report)
}

/// The same workload with the control plane and the agents on `GrpcStore`, through a database
/// service served in this process over loopback on a scratch database of its own.
async fn via_db_service(args: &E2eArgs, config: &Config, raw: RawPg, nats: Option<u32>) -> anyhow::Result<Report> {
    let scratch = ScratchDatabase::create_on(&super::database_url(config), "loom_bench").await?;
    let mut pg = crate::storage::pg_options(config);
    pg.max_connections = pg.max_connections.max(24);
    let pg_store = scratch.open(&pg).await?;
    let pool = pg_store.pool().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server =
        tokio::spawn(loom_db::serve(loom_db::ServerConfig::default(), listener, Arc::new(pg_store), shutdown.clone()));
    let grpc: Arc<dyn Store> = Arc::new(loom_db::GrpcStore::connect(loom_db::ClientConfig::new(url))?);
    let bus = super::scratch_bus(config, "bench").await?;
    let outcome = measured(args, grpc, &pool, bus.clone(), raw, nats).await;
    bus.destroy().await?;
    shutdown.cancel();
    server.await??;
    drop(pool);
    drop(scratch);
    outcome
}

/// The port of a `nats://host:port` URL on this machine (a remote server's CPU is not readable).
fn nats_port(url: &str) -> Option<u16> {
    let rest = url.split("://").nth(1).unwrap_or(url);
    let host_port = rest.rsplit('@').next()?.split(',').next()?;
    let (host, port) = host_port.rsplit_once(':')?;
    matches!(host, "127.0.0.1" | "localhost" | "[::1]").then(|| port.parse().ok())?
}

async fn drive(args: &E2eArgs, store: Arc<dyn Store>, bus: Bus, raw: RawPg) -> anyhow::Result<Report> {
    let project = ProjectId::parse("bench")?;
    store.create_project(NewProject::new(project.clone(), "/tmp/bench")).await?;
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let cp_config = loom_control_plane::Config {
        insecure_no_auth: true,
        claim_batch: 256,
        project_concurrency: 1_000_000,
        global_concurrency: 1_000_000,
        // The default sweep: beads the throughput run creates in the store directly wake the
        // dispatcher through the event relay (bead.created), as another instance's would.
        ..loom_control_plane::Config::default()
    };
    let api = format!("http://{}", listener.local_addr()?);
    let cp = tokio::spawn(loom_control_plane::run(cp_config, listener, store.clone(), bus.clone(), shutdown.clone()));
    let received: Received = Arc::new(Mutex::new(HashMap::with_capacity(args.beads)));
    let mut agents = Vec::new();
    for i in 0..args.agents {
        let agent =
            NoopAgent { i, bus: bus.clone(), store: store.clone(), project: project.clone(), got: received.clone() };
        agents.push(tokio::spawn(agent.run(shutdown.clone())));
    }
    let started = Utc::now();
    let acked = match args.rate {
        Some(rate) if rate > 0.0 => Some(create_at_rate(args.beads, rate, &api, &project).await?),
        _ => {
            create_beads(args, &*store, &project).await?;
            None
        }
    };
    let bar = progress("e2e: closed", args.beads as u64);
    let deadline = Instant::now() + Duration::from_secs(args.timeout_secs);
    let closed = loop {
        let counts = store.bead_counts(Some(&project)).await?;
        let closed = counts.iter().find(|(s, _)| *s == Status::Closed).map_or(0, |(_, n)| *n as usize);
        bar.set_position(closed as u64);
        if closed >= args.beads || Instant::now() > deadline {
            break closed;
        }
        // Counting is a scan of the bench's beads, so it is rare: the run is timed by the beads'
        // own `closed_at`, not by when this loop noticed.
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    bar.finish_and_clear();
    shutdown.cancel();
    for a in agents {
        let _ = a.await;
    }
    cp.await??;
    let duplicated = count_double_closes(&*store).await?;
    let received = std::mem::take(&mut *received.lock().expect("received lock"));
    let warmup = warmup_beads(args);
    let (mut lat, last_closed) = dispatch_latencies(&*store, &project, &received, warmup).await?;
    lat.sort();
    let elapsed = last_closed.map_or(Duration::ZERO, |at| (at - started).to_std().unwrap_or_default());
    let after_ack = acked.map(|acked| {
        let mut v: Vec<Duration> = acked
            .iter()
            .filter(|(i, _, _)| *i >= warmup)
            .filter_map(|(_, id, at)| received.get(id).map(|got| (*got - *at).to_std().unwrap_or_default()))
            .collect();
        v.sort();
        v
    });
    let beads_per_s = if elapsed.is_zero() { 0.0 } else { closed as f64 / elapsed.as_secs_f64() };
    Ok(Report {
        beads: args.beads,
        beads_per_s,
        dispatch_p50_ms: quantile_ms(&lat, 0.5),
        dispatch_p99_ms: quantile_ms(&lat, 0.99),
        lost: args.beads - closed.min(args.beads),
        duplicated,
        offered_rate: args.rate,
        warmup_beads: warmup,
        after_api_ack_p50_ms: after_ack.as_ref().map(|v| quantile_ms(v, 0.5)),
        after_api_ack_p99_ms: after_ack.as_ref().map(|v| quantile_ms(v, 0.99)),
        raw_pg_commit_p50_ms: raw.commit_p50_ms,
        raw_pg_commit_p99_ms: raw.commit_p99_ms,
        raw_pg_tx_per_s: raw.tx_per_s,
        raw_pg_ratio: beads_per_s / raw.tx_per_s,
        cpu_ms_per_bead: 0.0,
        cpu_ms_per_bead_by_process: None,
        via_db_service: None,
        vs_direct: None,
        tracing_overhead_ratio: None,
        traced_beads_per_s: None,
        traced_spans: None,
    })
}

/// When the client got each bead's `201 Created`: (order of creation, bead id, time).
type Acked = Vec<(usize, String, chrono::DateTime<Utc>)>;

/// Creates beads through the HTTP API, one every 1/rate s, each request on its own task so a slow
/// one does not lower the offered load.
async fn create_at_rate(beads: usize, rate: f64, api: &str, project: &ProjectId) -> anyhow::Result<Acked> {
    let client = loom_client::Client::new(api, None);
    let bar = progress("e2e: created", beads as u64);
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..beads {
        ticker.tick().await;
        let (client, bar) = (client.clone(), bar.clone());
        let req =
            loom_api::CreateBead { project_id: project.to_string(), title: format!("bench {i}"), ..Default::default() };
        requests.spawn(async move {
            let bead = client.create_bead(&req).await?;
            let at = Utc::now();
            bar.inc(1);
            anyhow::Ok((i, bead.id, at))
        });
    }
    let mut acked = Vec::with_capacity(beads);
    while let Some(r) = requests.join_next().await {
        acked.push(r??);
    }
    bar.finish_and_clear();
    Ok(acked)
}

async fn create_beads(args: &E2eArgs, store: &dyn Store, project: &ProjectId) -> anyhow::Result<()> {
    let bar = progress("e2e: created", args.beads as u64);
    let batch = 500;
    let mut made = 0;
    while made < args.beads {
        let n = batch.min(args.beads - made);
        let beads: Vec<NewBead> =
            (made..made + n).map(|i| NewBead::new(project.clone(), format!("bench {i}"))).collect();
        store.create_beads(beads).await?;
        made += n;
        bar.set_position(made as u64);
    }
    bar.finish_and_clear();
    Ok(())
}

/// Slots each no-op agent advertises (and tasks it works on at once).
const NOOP_SLOTS: u32 = 256;

/// A no-op agent that does what a real one does around its (empty) work: it advertises its
/// slots in the registry, reports each start to the store (the fence), publishes a success
/// result, then acks.
struct NoopAgent {
    i: usize,
    bus: Bus,
    store: Arc<dyn Store>,
    project: ProjectId,
    got: Received,
}

impl NoopAgent {
    async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let agent = AgentId::parse(&format!("bench-agent-{}", self.i))?;
        let record = AgentRecord {
            agent_id: agent.clone(),
            project_id: self.project.clone(),
            role: String::new(),
            instance: loom_bus::instance_id().to_owned(),
            status: AgentStatus::Idle,
            current_bead: None,
            capacity: NOOP_SLOTS,
            last_heartbeat: Utc::now(),
        };
        self.bus.register_agent(&record).await?;
        let options = ConsumeOptions { max_in_flight: NOOP_SLOTS as usize, prefetch: true };
        let mut sub = self.bus.consume_tasks(&self.project, None, options).await?;
        let mut heartbeat = tokio::time::interval(Duration::from_secs(10));
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = heartbeat.tick() => {
                    self.bus.heartbeat_agent(&AgentRecord { last_heartbeat: Utc::now(), ..record.clone() }).await?;
                    continue;
                }
                r = sub.next() => match r { Some(r) => r, None => break },
            };
            let now = Utc::now();
            self.got.lock().expect("received lock").entry(received.message.bead_id.to_string()).or_insert(now);
            let (bus, store, agent) = (self.bus.clone(), self.store.clone(), agent.clone());
            tokio::spawn(async move {
                let task = &received.message;
                let start = DispatchStart {
                    bead_id: task.bead_id.clone(),
                    dispatch_id: task.metadata.dispatch_id.clone(),
                    agent_id: agent.to_string(),
                    now: Utc::now(),
                    lease: Duration::from_secs(600),
                    max_attempts: 3,
                };
                if !matches!(store.start_dispatch(&start).await, Ok(StartOutcome::Started(_))) {
                    let _ = received.delivery.ack().await;
                    return;
                }
                let result = success(task, agent);
                if let Ok(msg) = bus.result(&result, &TraceContext::default())
                    && bus.publish(msg).await.is_ok()
                {
                    let _ = received.delivery.ack().await;
                }
            });
        }
        self.bus.deregister_agent(&agent).await?;
        Ok(())
    }
}

fn success(task: &loom_bus::TaskMessage, agent: AgentId) -> ResultMessage {
    ResultMessage {
        kind: ResultKind::Completed,
        project_id: task.project_id.clone(),
        bead_id: task.bead_id.clone(),
        agent_id: agent,
        result: ResultData {
            status: ResultStatus::Success,
            output: String::new(),
            error: String::new(),
            commits: Vec::new(),
            branch: String::new(),
            artifacts: Vec::new(),
            duration: 0,
            context: Default::default(),
        },
        correlation_id: task.correlation_id.clone(),
        timestamp: Utc::now(),
        metadata: ResultMetadata { dispatch_id: task.metadata.dispatch_id.clone(), attempt: task.metadata.attempt },
    }
}

/// Beads at the start of a run whose latency is not counted: a tenth, at most 500.
fn warmup_beads(args: &E2eArgs) -> usize {
    (args.beads / 10).min(500)
}

/// For every bead after the first `skip` (in creation order) the agents received: receipt minus
/// the bead's creation time (taken before its insert, so this includes the create's commit);
/// and when the last bead closed.
async fn dispatch_latencies(
    store: &dyn Store,
    project: &ProjectId,
    received: &HashMap<String, chrono::DateTime<Utc>>,
    mut skip: usize,
) -> anyhow::Result<(Vec<Duration>, Option<chrono::DateTime<Utc>>)> {
    let filter = loom_store::BeadFilter { project: Some(project.clone()), ..Default::default() };
    let mut page = loom_store::PageRequest::first(loom_store::PageRequest::MAX_LIMIT);
    let mut out = Vec::with_capacity(received.len());
    let mut last_closed = None;
    loop {
        let got = store.list_beads(&filter, &page).await?;
        for b in &got.beads {
            last_closed = last_closed.max(b.closed_at);
            if skip > 0 {
                skip -= 1;
                continue;
            }
            if let Some(at) = received.get(b.id.as_str()) {
                out.push((*at - b.created_at).to_std().unwrap_or_default());
            }
        }
        match got.next_cursor {
            Some(c) => page.after = Some(c),
            None => return Ok((out, last_closed)),
        }
    }
}

/// Beads with more than one `bead.closed` event (a bead closed twice).
async fn count_double_closes(store: &dyn Store) -> anyhow::Result<usize> {
    let mut closes: HashMap<String, usize> = HashMap::new();
    let mut after = 0;
    loop {
        let events = store.list_events(after, 1000).await?;
        let Some(last) = events.last() else { break };
        after = last.seq;
        for e in events.iter().filter(|e| e.kind == EventKind::BeadClosed) {
            *closes.entry(e.entity_id.clone()).or_default() += 1;
        }
    }
    Ok(closes.values().filter(|n| **n > 1).count())
}
