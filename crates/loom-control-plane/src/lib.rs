//! The control plane: the HTTP/JSON + SSE API under `/api/v1`, and the loops that move beads —
//! the dispatcher (claims ready beads into the outbox), its publisher (publishes what was just
//! claimed), the outbox relay (publishes what the publisher could not, and cancellations), the
//! result consumer (applies agents' results in batches), the lease sweeper and the event relay.
//!
//! Invariants:
//! - Every route is authenticated by a bearer API key and authorised by role (viewer reads,
//!   operator changes, admin manages keys), unless started with `insecure_no_auth` on loopback.
//!   The web UI (`web`, at `/ui/`) authenticates by a session cookie holding such a key and sends
//!   every write through those routes.
//! - The store is the source of truth; the control plane holds no state a restart would lose.
//!   A claim and its task commit together (outbox); an outbox row is marked sent only after
//!   JetStream stored its message, with `Nats-Msg-Id = dispatch_id`, so when both the publisher
//!   and the relay publish a task, JetStream keeps one.
//! - A result is acked on the bus only after the store applied it (or found it stale), so a
//!   crash between the two leads to a redelivery, never a lost result.
//! - Only the holder of the `dispatcher` lease claims beads and relays; any instance serves the API.

mod api;
mod audit;
mod auth;
mod backlog;
pub mod bd;
mod capacity;
mod contexts;
mod counts;
mod creates;
mod cursor;
mod dispatcher;
mod error;
mod oversight;
mod relay;
mod requeue;
mod results;
mod traces;
mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use loom_bus::Bus;
use loom_store::Store;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use auth::{generate_key, hash_key};
pub use error::Error;
pub use requeue::{Dispatches, hand_back_dispatches};

/// How the control plane behaves.
#[derive(Clone, Debug)]
pub struct Config {
    /// Serve without authentication; refused unless the listener is on loopback.
    pub insecure_no_auth: bool,
    /// A dispatch with no progress for this long is swept and redispatched.
    pub lease: Duration,
    /// Attempts before a failing bead is blocked.
    pub max_attempts: u32,
    /// Wait before a failed bead is ready again.
    pub retry_backoff: Duration,
    /// Most beads of one project in progress at once.
    pub project_concurrency: u32,
    /// Most beads in progress at once over all projects.
    pub global_concurrency: u32,
    /// Most beads claimed per claim transaction.
    pub claim_batch: u32,
    /// How often the dispatcher looks for ready beads when nothing woke it.
    pub sweep_interval: Duration,
    /// Name of this instance (leader lease holder, claimer).
    pub instance: String,
    /// Time-to-live of the dispatcher lease; another instance takes over after it lapses.
    pub leader_ttl: Duration,
    /// Dispatch no more beads of a project than its live agents have slots (as advertised in
    /// the agent registry): a backlog stays `open` and in priority order until a slot is free.
    /// Off only for agents that do not register.
    pub follow_agent_capacity: bool,
    /// The connectors service behind `/api/v1/connectors` (in process or over gRPC); `None`:
    /// those routes answer 503.
    pub connectors: Option<Arc<dyn loom_connectors::Api>>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            insecure_no_auth: false,
            lease: Duration::from_secs(600),
            max_attempts: 3,
            retry_backoff: Duration::from_secs(5),
            project_concurrency: 256,
            global_concurrency: 1024,
            claim_batch: 64,
            sweep_interval: Duration::from_millis(500),
            instance: default_instance(),
            leader_ttl: Duration::from_secs(10),
            follow_agent_capacity: true,
            connectors: None,
        }
    }
}

/// A name unique to this control plane: the process's instance id plus a counter, so that two
/// control planes in one process (tests, embedding) stand for the dispatcher lease separately.
fn default_instance() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("control-plane-{}-{n}", loom_bus::instance_id())
}

/// What every part of the control plane shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Arc<dyn Store>,
    pub bus: Bus,
    pub config: Config,
    /// Something may be ready: a bead was created, closed or reopened.
    pub dispatch_wake: Notify,
    /// The outbox has rows the relay should publish (cancellations).
    pub relay_wake: Notify,
    /// Fresh claims, in claim order, for the publisher.
    pub claimed: tokio::sync::mpsc::Sender<Vec<loom_store::Claim>>,
    /// New events were recorded (SSE streams wait on it).
    pub events_wake: tokio::sync::watch::Sender<()>,
    /// Cancelled at shutdown: long-lived responses (SSE) end, so graceful shutdown completes.
    pub shutdown: CancellationToken,
    /// Whether this instance holds the dispatcher lease (it claims and relays only then).
    pub leader: std::sync::atomic::AtomicBool,
    /// A project was created, changed, paused, resumed or deleted: the dispatcher re-reads the
    /// project list before its next pass.
    pub projects_changed: std::sync::atomic::AtomicBool,
    /// In-progress counts against the concurrency limits.
    pub slots: std::sync::Mutex<dispatcher::Slots>,
    /// The projects' contexts, which their tasks carry.
    pub contexts: contexts::ProjectContexts,
    /// Bead counts by status for `/status` and `/metrics`, a few seconds old at most.
    pub counts: counts::CountsCache,
    /// The audit log of API writes.
    pub audit: audit::Audit,
    /// The connectors as last read, shown (marked stale) while the connectors service is down.
    pub connectors_seen: api::LastConnectors,
    /// API keys found lately, by hash (`auth::KEY_TTL`).
    pub keys: auth::KeyCache,
    /// Group commit of creates that are not claimed at once.
    pub creates: creates::Creates,
    /// The trace each bead's messages continue.
    pub traces: traces::BeadTraces,
}

impl Shared {
    pub(crate) fn is_leader(&self) -> bool {
        self.leader.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn slots(&self) -> std::sync::MutexGuard<'_, dispatcher::Slots> {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A project changed: the dispatcher re-reads the project list, then looks for work.
    pub(crate) fn project_changed(&self) {
        self.projects_changed.store(true, std::sync::atomic::Ordering::Relaxed);
        self.changed();
    }

    pub(crate) fn changed(&self) {
        self.dispatch_wake.notify_one();
        self.events_wake.send_replace(());
    }
}

/// Creates the first admin key when the store has none; returns the secret to show once.
pub async fn bootstrap_admin_key(store: &dyn Store) -> Result<Option<String>, Error> {
    if !store.list_api_keys().await?.is_empty() {
        return Ok(None);
    }
    let secret = generate_key();
    store.create_api_key("initial admin", loom_domain::Role::Admin, &hash_key(&secret)).await?;
    Ok(Some(secret))
}

/// Runs the control plane until `shutdown` is cancelled: the API on `listener` and the loops.
pub async fn run(
    config: Config,
    listener: TcpListener,
    store: Arc<dyn Store>,
    bus: Bus,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let addr: SocketAddr = listener.local_addr().map_err(|e| Error::Io(e.to_string()))?;
    if config.insecure_no_auth && !addr.ip().is_loopback() {
        return Err(Error::Config(format!("--insecure-no-auth is only allowed on a loopback address, not {addr}")));
    }
    // Install the metrics recorder before anything records.
    let _ = loom_telemetry::prometheus();
    let (claimed, claims) = tokio::sync::mpsc::channel(64);
    let events_wake = tokio::sync::watch::channel(()).0;
    let audit_stop = CancellationToken::new();
    let (audit, audit_writer) = audit::Audit::new(store.clone(), events_wake.clone(), audit_stop.clone());
    let shared = Arc::new(Shared {
        store,
        bus,
        config,
        dispatch_wake: Notify::new(),
        relay_wake: Notify::new(),
        claimed,
        events_wake,
        shutdown: shutdown.clone(),
        leader: std::sync::atomic::AtomicBool::new(false),
        projects_changed: std::sync::atomic::AtomicBool::new(false),
        slots: Default::default(),
        contexts: Default::default(),
        counts: Default::default(),
        audit,
        connectors_seen: Default::default(),
        keys: Default::default(),
        creates: Default::default(),
        traces: Default::default(),
    });
    let tasks = [
        tokio::spawn(dispatcher::run_leadership(shared.clone(), shutdown.clone())),
        tokio::spawn(dispatcher::run(shared.clone(), shutdown.clone())),
        tokio::spawn(relay::run_publisher(shared.clone(), claims, shutdown.clone())),
        tokio::spawn(relay::run_outbox(shared.clone(), shutdown.clone())),
        tokio::spawn(relay::run_events(shared.clone(), shutdown.clone())),
        tokio::spawn(results::run(shared.clone(), shutdown.clone())),
        tokio::spawn(results::run_dead_letters(shared.clone(), shutdown.clone())),
        tokio::spawn(capacity::run(shared.clone(), shutdown.clone())),
        tokio::spawn(audit_writer),
    ];
    tracing::info!(%addr, "control plane listening");
    let app = api::router(shared.clone());
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown.clone().cancelled_owned()).await;
    shutdown.cancel();
    // The API has answered its last request: the audit writer drains what they queued.
    audit_stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    let _ = shared.store.release_lease(dispatcher::LEADER_LEASE, &shared.config.instance).await;
    served.map_err(|e| Error::Io(e.to_string()))
}
