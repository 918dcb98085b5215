//! The small HTTP listener a service without an HTTP API of its own (the database service, an
//! agent) serves for its orchestrator and its scraper: `/metrics` (the process's Prometheus
//! text), `/healthz` (live: the process answers) and `/readyz` (ready: every named check of a
//! [`Readiness`] passes; 503 naming the failing ones otherwise), and the earlier
//! implementation's `/health`, `/health/live`, `/health/ready` answering like them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What `/readyz` reports: a set of named checks, each kept up to date by the part of the
/// service that knows (the store probe, the bus connection). Cloning shares the set.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    checks: Arc<Mutex<Vec<Named>>>,
}

/// A check and its name.
type Named = (&'static str, Arc<AtomicBool>);

/// One named readiness check; cloning shares it.
#[derive(Clone, Debug)]
pub struct Check(Arc<AtomicBool>);

impl Check {
    /// Records whether this check passes.
    pub fn set(&self, ok: bool) {
        self.0.store(ok, Ordering::Relaxed);
    }
}

impl Readiness {
    /// An empty set: ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the check `name`, passing (`ok`) or not at first.
    pub fn check(&self, name: &'static str, ok: bool) -> Check {
        let flag = Arc::new(AtomicBool::new(ok));
        self.checks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((name, flag.clone()));
        Check(flag)
    }

    /// The names of the checks that fail; empty when ready.
    pub fn failing(&self) -> Vec<&'static str> {
        let checks = self.checks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        checks.iter().filter(|(_, ok)| !ok.load(Ordering::Relaxed)).map(|(name, _)| *name).collect()
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` (and the earlier implementation's `/health`,
/// `/health/live`, `/health/ready`, which answer like `/readyz`, `/healthz`, `/readyz`) on
/// `listener` until `shutdown` is cancelled.
pub async fn serve_probes(
    listener: TcpListener,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Installed before the first scrape, so every metric recorded from now on shows.
    let _ = crate::prometheus();
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        // The earlier implementation's probe paths, which its manifests and monitors use.
        .route("/health", get(ready))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .with_state(readiness);
    tracing::info!(?addr, "metrics and probes listening (/metrics, /healthz, /readyz)");
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

async fn metrics() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::prometheus().render())
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, String) {
    let failing = readiness.failing();
    if failing.is_empty() {
        (StatusCode::OK, "ready\n".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", failing.join(", ")))
    }
}
