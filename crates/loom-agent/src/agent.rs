//! The agent's main loop: bind to the project's durable task consumer, register and heartbeat
//! in the agent registry, hand each task to its own tokio task (at most `concurrency` run at
//! once), route `task.cancelled` to the task it names, and shut down by handing back what
//! cannot finish within the grace period.
//!
//! A cancel travels on the same durable consumer as tasks, so with several instances it
//! reaches one of them: the one running the dispatch stops it; another only remembers the id
//! (so a later redelivery of that dispatch is acked without running). A cancelled task reports
//! `task.failed` with `context.cancelled = "true"`; the control plane ignores it as stale.

mod lag;
mod task;
pub(crate) use task::step;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use loom_bus::{AgentRecord, Bus, ConsumeOptions, Received, TaskKind, TaskMessage, TraceContext};
use loom_domain::{AgentId, AgentStatus, BeadId, DispatchId, ProjectId};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::executor::Executors;
use crate::journal::Journal;
use crate::{AgentConfig, Error, Fence};

/// Dispatch ids remembered (cancelled before they ran).
const REMEMBERED: usize = 1024;

/// Per-task timings, collected for `bench`.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Time in the agent outside the executor, per task.
    pub(crate) overhead: Mutex<Vec<Duration>>,
}

/// What every task of one agent shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: AgentConfig,
    pub(crate) bus: Bus,
    pub(crate) agent_id: AgentId,
    pub(crate) executors: Executors,
    /// One permit per task allowed to run at once.
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) running: Mutex<HashMap<DispatchId, (BeadId, CancellationToken)>>,
    pub(crate) cancelled: Mutex<VecDeque<DispatchId>>,
    /// Dispatches started here and results not yet settled, kept on disk across restarts.
    pub(crate) journal: Journal,
    /// Cancelled on shutdown: queued tasks are handed back, no new ones start.
    pub(crate) stopping: CancellationToken,
    /// Cancelled when the shutdown grace ends: running tasks are handed back.
    pub(crate) hand_back: CancellationToken,
    pub(crate) stats: Option<Arc<Stats>>,
    pub(crate) ready: Ready,
}

/// How long an agent that starts during an outage of its fence (the store or the API) waits for
/// it before giving up: an outage of a few seconds is waited out, a wrong address still fails.
const FENCE_STARTUP_WAIT: Duration = Duration::from_secs(120);

/// Asks the fence until it answers (backing off 0.5 s, 1 s, … 5 s), for at most
/// [`FENCE_STARTUP_WAIT`] or until shutdown.
async fn check_fence(fence: &dyn Fence, shutdown: &CancellationToken) -> Result<(), Error> {
    let deadline = tokio::time::Instant::now() + FENCE_STARTUP_WAIT;
    let mut delay = Duration::from_millis(500);
    loop {
        let err = match fence.check().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if tokio::time::Instant::now() + delay > deadline || shutdown.is_cancelled() {
            return Err(Error::Config(format!("the fence (which says whether a task may run) cannot be asked: {err}")));
        }
        tracing::warn!(error = %err, retry_in = ?delay, "the fence cannot be asked yet; waiting for it before starting");
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => {}
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Runs the agent until `shutdown` is cancelled (or the bus shuts down), then drains: running
/// tasks get `config.shutdown_grace` to finish, the rest are handed back (nak) for another
/// instance, and the agent deregisters.
pub async fn run(config: AgentConfig, bus: Bus, shutdown: CancellationToken) -> Result<(), Error> {
    run_with(config, bus, shutdown, None).await
}

pub(crate) async fn run_with(
    config: AgentConfig,
    bus: Bus,
    shutdown: CancellationToken,
    stats: Option<Arc<Stats>>,
) -> Result<(), Error> {
    config.validate()?;
    // The process's recorder, installed before the first metric (`loom up` renders it).
    let _ = loom_telemetry::prometheus();
    if !config.git_repo.is_empty() {
        // Without a repository no command can run (only `noop` tasks), so no sandbox is needed.
        crate::sandbox::probe(&config.sandbox).await?;
    }
    if let Some(fence) = &config.fence {
        check_fence(&**fence, &shutdown).await?;
    }
    let journal = Journal::open(&config.work_root.join(config.project.as_str()).join("journal"))?;
    let agent_id = match &config.agent_id {
        Some(id) => id.clone(),
        None => default_agent_id(&config)?,
    };
    // Exactly one delivery per slot, pulled only when the slot is free: a task never waits
    // here while another instance has room. With every slot busy a `task.cancelled` waits too;
    // a running task learns that it was superseded from the fence at each progress report.
    let config_readiness = config.readiness.clone();
    let options = ConsumeOptions { max_in_flight: config.concurrency, prefetch: false };
    let Some(mut sub) = bind(&bus, &config, options, &shutdown).await? else { return Ok(()) };
    let shared = Arc::new(Shared {
        executors: Executors::new(&config)?,
        slots: Arc::new(Semaphore::new(config.concurrency)),
        config,
        bus,
        agent_id,
        running: Mutex::default(),
        cancelled: Mutex::default(),
        journal,
        stopping: CancellationToken::new(),
        hand_back: CancellationToken::new(),
        stats,
        ready: Ready::new(config_readiness),
    });
    // A registration that fails (NATS restarting) is retried by the first heartbeats.
    match shared.bus.register_agent(&shared.record()).await {
        Ok(()) => shared.ready.bus.set(true),
        Err(err) if err.is_transient() => {
            tracing::warn!(agent = %shared.agent_id, %err, "cannot register yet; the heartbeat will");
        }
        Err(err) => return Err(err.into()),
    }
    let _slots = Slots::open(&shared.config.project, shared.config.concurrency);
    tracing::info!(agent = %shared.agent_id, consumer = sub.consumer(), "agent online");
    shared.republish_kept_results().await;
    let mut tasks = JoinSet::new();
    let mut heartbeat = tokio::time::interval(shared.config.heartbeat_interval);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = heartbeat.tick() => shared.heartbeat().await,
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => log_join(joined),
            received = sub.next() => match received {
                Some(received) => shared.clone().accept(received, &mut tasks).await,
                // The subscription ends only when the bus is shut down under it.
                None => {
                    tracing::warn!(agent = %shared.agent_id, "the task subscription ended; stopping");
                    break;
                }
            },
        }
    }
    drop(sub);
    shared.ready.bus.set(false);
    shared.drain(tasks).await;
    // The registry forgets an agent whose heartbeats stop within its TTL anyway.
    if let Err(err) = shared.bus.deregister_agent(&shared.agent_id).await {
        tracing::warn!(agent = %shared.agent_id, %err, "cannot deregister; the registry drops this agent after its TTL");
    }
    tracing::info!(agent = %shared.agent_id, "agent offline");
    Ok(())
}

/// Binds to the project's task consumer, waiting out a bus that cannot serve it yet (NATS
/// restarting, JetStream not ready after a restart) with backoff; a refusal that waiting
/// cannot cure fails at once. `None` when shutdown came first.
async fn bind(
    bus: &Bus,
    config: &AgentConfig,
    options: ConsumeOptions,
    shutdown: &CancellationToken,
) -> Result<Option<loom_bus::Subscription<TaskMessage>>, Error> {
    let mut delay = Duration::from_millis(200);
    loop {
        match bus.consume_tasks(&config.project, config.role.as_ref(), options).await {
            Ok(sub) => return Ok(Some(sub)),
            Err(err) if err.is_transient() => {
                tracing::warn!(project = %config.project, %err, retry_in = ?delay, "cannot bind to the task consumer yet; retrying");
            }
            Err(err) => return Err(err.into()),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => return Ok(None),
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

fn default_agent_id(config: &AgentConfig) -> Result<AgentId, Error> {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut id = format!("{}-{}-{}", config.project, loom_bus::instance_id(), N.fetch_add(1, Ordering::Relaxed));
    id.truncate(128);
    AgentId::parse(&id).map_err(|e| Error::Config(format!("cannot derive an agent id: {e}; set agent_id")))
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(err) = joined {
        tracing::error!(%err, "a task handler panicked; its delivery will be redelivered");
    }
}

impl Shared {
    async fn accept(self: Arc<Self>, received: Received<TaskMessage>, tasks: &mut JoinSet<()>) {
        match received.message.kind {
            TaskKind::Assigned => {
                tasks.spawn(task::handle(self, received));
            }
            TaskKind::Cancelled => {
                self.cancel(&received.message.metadata.dispatch_id);
                let outcome = match received.delivery.ack().await {
                    Ok(()) => "ok",
                    Err(err) => {
                        tracing::warn!(%err, "could not ack a task.cancelled; it will be redelivered");
                        "ack_failed"
                    }
                };
                self.bus_message("cancel", outcome);
            }
        }
    }

    /// Stops the running task of `dispatch`, or remembers it so the task never starts.
    fn cancel(&self, dispatch: &DispatchId) {
        if let Some((bead, token)) = lock(&self.running).get(dispatch) {
            tracing::info!(%bead, %dispatch, "task.cancelled: stopping the running task");
            token.cancel();
            return;
        }
        remember(&self.cancelled, dispatch.clone());
    }

    pub(crate) fn was_cancelled(&self, dispatch: &DispatchId) -> bool {
        lock(&self.cancelled).contains(dispatch)
    }

    /// Publishes the results a previous run of this agent finished but could not settle (NATS
    /// was down, or it stopped first). Deduplicated by the bus; a repeat is ignored by the store.
    async fn republish_kept_results(&self) {
        for result in self.journal.unsettled() {
            let sent = match self.bus.result(&result, &TraceContext::default()) {
                Ok(out) => self.bus.publish(out).await.map(drop),
                Err(err) => Err(err),
            };
            match sent {
                Ok(()) => tracing::info!(bead = %result.bead_id, "published a result kept from an earlier run"),
                Err(err) => tracing::warn!(bead = %result.bead_id, %err, "cannot publish a kept result yet"),
            }
        }
    }

    /// Lets running tasks finish within the grace period, then hands back the rest.
    async fn drain(&self, mut tasks: JoinSet<()>) {
        self.stopping.cancel();
        self.heartbeat().await;
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        let mut heartbeat = tokio::time::interval(self.config.heartbeat_interval);
        while !tasks.is_empty() {
            tokio::select! {
                Some(joined) = tasks.join_next() => log_join(joined),
                _ = heartbeat.tick() => self.heartbeat().await,
                _ = tokio::time::sleep_until(deadline), if !self.hand_back.is_cancelled() => {
                    tracing::info!(running = tasks.len(), "shutdown grace over; handing back running tasks");
                    self.hand_back.cancel();
                }
            }
        }
    }

    pub(crate) fn record(&self) -> AgentRecord {
        let running = lock(&self.running);
        let status = if self.stopping.is_cancelled() {
            AgentStatus::Draining
        } else if running.is_empty() {
            AgentStatus::Idle
        } else {
            AgentStatus::Busy
        };
        AgentRecord {
            agent_id: self.agent_id.clone(),
            project_id: self.config.project.clone(),
            role: self.config.role.as_ref().map(|r| r.to_string()).unwrap_or_default(),
            instance: loom_bus::instance_id().to_owned(),
            status,
            current_bead: running.values().next().map(|(bead, _)| bead.clone()),
            capacity: u32::try_from(self.config.concurrency).unwrap_or(u32::MAX),
            last_heartbeat: Utc::now(),
        }
    }

    pub(crate) async fn heartbeat(&self) {
        let beat = self.bus.heartbeat_agent(&self.record()).await;
        self.ready.bus.set(beat.is_ok() && !self.stopping.is_cancelled());
        if let Err(err) = beat {
            tracing::warn!(agent = %self.agent_id, %err, "heartbeat failed");
        }
        lag::report(&self.bus, &self.config.project, self.config.role.as_ref()).await;
    }

    /// Counts one bus message by handler (`task`, `cancel`) and what became of it.
    pub(crate) fn bus_message(&self, handler: &'static str, outcome: &'static str) {
        let project = self.config.project.to_string();
        metrics::counter!("loom_agent_bus_messages_total", "project" => project, "handler" => handler, "outcome" => outcome)
            .increment(1);
    }
}

/// The agent's readiness checks (no-ops without a [`loom_telemetry::Readiness`]).
#[derive(Debug)]
pub(crate) struct Ready {
    pub(crate) bus: loom_telemetry::Check,
    pub(crate) fence: loom_telemetry::Check,
}

impl Ready {
    fn new(readiness: Option<loom_telemetry::Readiness>) -> Self {
        let readiness = readiness.unwrap_or_default();
        Self { bus: readiness.check("bus", false), fence: readiness.check("fence", true) }
    }
}

/// `loom_agent_slots{project,state}`: this agent's slots added to the gauges while it runs
/// (several agents of a project in one process add up), moved from `free` to `busy` by each
/// running task ([`Slot`]).
#[derive(Debug)]
pub(crate) struct Slots {
    project: String,
    total: f64,
}

impl Slots {
    fn open(project: &ProjectId, concurrency: usize) -> Self {
        let slots = Self { project: project.to_string(), total: concurrency as f64 };
        metrics::gauge!("loom_agent_slots", "project" => slots.project.clone(), "state" => "free")
            .increment(slots.total);
        metrics::gauge!("loom_agent_slots", "project" => slots.project.clone(), "state" => "busy").increment(0.0);
        slots
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        metrics::gauge!("loom_agent_slots", "project" => self.project.clone(), "state" => "free").decrement(self.total);
    }
}

/// One busy slot, while a task holds it.
#[derive(Debug)]
pub(crate) struct Slot(String);

impl Slot {
    pub(crate) fn take(project: &ProjectId) -> Self {
        let project = project.to_string();
        metrics::gauge!("loom_agent_slots", "project" => project.clone(), "state" => "free").decrement(1.0);
        metrics::gauge!("loom_agent_slots", "project" => project.clone(), "state" => "busy").increment(1.0);
        Self(project)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("loom_agent_slots", "project" => self.0.clone(), "state" => "busy").decrement(1.0);
        metrics::gauge!("loom_agent_slots", "project" => self.0.clone(), "state" => "free").increment(1.0);
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn remember<T>(list: &Mutex<VecDeque<T>>, item: T) {
    let mut list = lock(list);
    if list.len() >= REMEMBERED {
        list.pop_front();
    }
    list.push_back(item);
}
