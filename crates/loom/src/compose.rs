//! Composition: building the bus and running the control plane from the configuration, the same
//! way for `loom up` and `loom serve control-plane`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use loom_bus::Bus;
use loom_store::Store;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Service};

/// Connects the configured bus (NATS, or the embedded one) for `service`, with its `[bus]`
/// credentials, TLS and task keys, and provisions it; returns it with a description for the
/// operator.
pub async fn bus(config: &Config, service: Service) -> anyhow::Result<(Bus, String)> {
    let bus_config = config.bus.bus_config(config.nats_url.as_deref(), service, &config.data_dir)?;
    let keys = match (&bus_config.task_signing_key, &bus_config.task_verify_key) {
        (Some(s), _) => format!("tasks signed with key {}", s.id()),
        (None, Some(v)) => format!("tasks verified with key {}", v.id()),
        (None, None) => "unsigned tasks".into(),
    };
    match &config.nats_url {
        Some(url) => {
            let who = bus_config.credentials.describe();
            let bus = connect_waiting(bus_config, BUS_WAIT)
                .await
                .with_context(|| format!("cannot connect to NATS at {} as {who}", loom_store::redact_url(url)))?;
            Ok((bus, format!("NATS JetStream at {} as {who}; {keys}", loom_store::redact_url(url))))
        }
        None => {
            let bus = Bus::embedded(bus_config)?;
            bus.provision().await?;
            Ok((bus, format!("embedded in-process bus (its queues do not survive a restart); {keys}")))
        }
    }
}

/// How long a service starting while NATS is unreachable (restarting, not up yet) waits for it
/// before giving up: a service started beside a restarting NATS does not exit at once.
const BUS_WAIT: Duration = Duration::from_secs(120);

/// Connects and provisions, retrying with backoff for up to `wait` while the failure is one that
/// passes (the server unreachable or restarting); a refusal that will not (credentials, TLS, a
/// stream with other settings) fails at once.
async fn connect_waiting(config: loom_bus::BusConfig, wait: Duration) -> anyhow::Result<Bus> {
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = async {
            let bus = Bus::connect(config.clone()).await?;
            bus.provision().await?;
            Ok::<_, loom_bus::Error>(bus)
        };
        match attempt.await {
            Ok(bus) => return Ok(bus),
            Err(e) if passes(&e) && started.elapsed() + delay < wait => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "NATS is not reachable yet; waiting for it");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a bus error is one that waiting can cure (`Closed`: the connection dropped while
/// provisioning).
fn passes(e: &loom_bus::Error) -> bool {
    e.is_transient() || matches!(e, loom_bus::Error::Closed)
}

/// The control plane's settings from the configuration.
pub fn control_plane_config(config: &Config) -> loom_control_plane::Config {
    loom_control_plane::Config {
        insecure_no_auth: config.insecure_no_auth,
        lease: Duration::from_secs(config.dispatch.lease_secs),
        max_attempts: config.dispatch.max_attempts,
        retry_backoff: Duration::from_secs(config.dispatch.retry_backoff_secs),
        project_concurrency: config.dispatch.project_concurrency,
        global_concurrency: config.dispatch.global_concurrency,
        ..loom_control_plane::Config::default()
    }
}

/// Binds the API address, prints the first admin key if one was just made, and runs the control
/// plane until `shutdown`.
pub async fn control_plane(
    config: &Config,
    store: Arc<dyn Store>,
    bus: Bus,
    connectors: Option<Arc<dyn loom_connectors::Api>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.http_addr))?;
    if let Some(secret) = loom_control_plane::bootstrap_admin_key(&*store).await? {
        println!("loom: first start: created an admin API key (shown once, store it now):");
        println!("  export LOOM_API_KEY={secret}");
    }
    println!("loom: control plane at http://{}", listener.local_addr()?);
    let cp = loom_control_plane::Config { connectors, ..control_plane_config(config) };
    loom_control_plane::run(cp, listener, store, bus, shutdown).await?;
    Ok(())
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        }
        t.cancel();
        // Not `println!`: with stdout gone (a closed pipe) it would panic; shutting down must not.
        let _ = writeln!(std::io::stdout(), "loom: shutting down");
    });
    token
}
