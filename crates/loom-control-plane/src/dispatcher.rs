//! The dispatcher: while this instance holds the `dispatcher` lease, it claims ready beads of
//! every active project (within the concurrency limits) into the outbox, and sweeps expired
//! leases. It wakes on local changes and polls on an interval for changes made elsewhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use loom_domain::{ProjectId, ProjectStatus};
use loom_store::ClaimRequest;
use tokio_util::sync::CancellationToken;

use crate::{Error, Shared};

/// The store lease that elects the one dispatching instance.
pub(crate) const LEADER_LEASE: &str = "dispatcher";

/// Keeps (or stands for) the dispatcher lease and, while it is held, sweeps expired leases. Runs
/// beside the dispatch loop so that neither waits for the other.
pub(crate) async fn run_leadership(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut renew = tokio::time::interval(shared.config.leader_ttl / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = renew.tick() => {}
        }
        renew_leadership(&shared).await;
        if shared.is_leader() {
            sweep_leases(&shared).await;
        }
    }
    shared.leader.store(false, Ordering::Relaxed);
}

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut view = View::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = shared.dispatch_wake.notified() => {}
            _ = tokio::time::sleep(shared.config.sweep_interval) => {}
        }
        if shared.is_leader()
            && let Err(e) = dispatch_once(&shared, &mut view).await
        {
            tracing::warn!(error = %e, "dispatch pass failed; retrying on the next wake");
        }
    }
}

async fn renew_leadership(shared: &Shared) {
    let c = &shared.config;
    let held = match shared.store.acquire_lease(LEADER_LEASE, &c.instance, Utc::now(), c.leader_ttl).await {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(error = %e, "cannot renew the dispatcher lease; standing down");
            false
        }
    };
    if held != shared.leader.swap(held, Ordering::Relaxed) {
        tracing::info!(instance = %c.instance, leader = held, "dispatcher leadership changed");
        if held {
            shared.dispatch_wake.notify_one();
        }
    }
}

async fn sweep_leases(shared: &Shared) {
    match shared.store.release_expired_leases(Utc::now(), shared.config.max_attempts, 500).await {
        Ok(released) if !released.is_empty() => {
            tracing::warn!(count = released.len(), "released expired leases; their beads will be redispatched");
            shared.changed();
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
    }
}

/// What a dispatch pass needs besides the claim itself: the active projects and how many beads
/// each has in progress. Re-read from the store every `REFRESH` so that a pass on the hot path is
/// one claim transaction; between refreshes claims are added to `running` and finished beads are
/// not subtracted, so the concurrency limit errs on the safe side.
#[derive(Debug, Default)]
pub(crate) struct View {
    projects: Vec<ProjectId>,
    running: HashMap<ProjectId, u32>,
    read_at: Option<Instant>,
}

const REFRESH: Duration = Duration::from_millis(250);

impl View {
    async fn refresh(&mut self, shared: &Shared) -> Result<(), Error> {
        if self.read_at.is_some_and(|t| t.elapsed() < REFRESH) {
            return Ok(());
        }
        let projects = shared.store.list_projects().await?;
        self.projects = projects.into_iter().filter(|p| p.status == ProjectStatus::Active).map(|p| p.id).collect();
        self.running = shared
            .store
            .running_by_project()
            .await?
            .into_iter()
            .map(|(p, n)| (p, u32::try_from(n).unwrap_or(u32::MAX)))
            .collect();
        self.read_at = Some(Instant::now());
        Ok(())
    }
}

/// One pass over every active project; returns how many beads were claimed.
pub(crate) async fn dispatch_once(shared: &Shared, view: &mut View) -> Result<usize, Error> {
    view.refresh(shared).await?;
    let mut claimed = 0;
    for project in &view.projects {
        let running = view.running.get(project).copied().unwrap_or(0);
        let mut room = shared.config.project_concurrency.saturating_sub(running);
        while room > 0 {
            let request = ClaimRequest {
                project: project.clone(),
                max: room.min(shared.config.claim_batch),
                now: Utc::now(),
                lease: shared.config.lease,
                claimer: shared.config.instance.clone(),
            };
            let started = std::time::Instant::now();
            let claims = shared.store.claim_ready(&request).await?;
            let n = claims.len() as u32;
            metrics::histogram!("loom_claim_duration_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("loom_beads_dispatched_total").increment(u64::from(n));
            if n == 0 {
                break;
            }
            claimed += n as usize;
            room -= n;
            *view.running.entry(project.clone()).or_default() += n;
            // The publisher sends them now; if it is gone (shutdown) the relay will.
            let _ = shared.claimed.send(claims).await;
            if n < request.max {
                break;
            }
        }
    }
    Ok(claimed)
}

/// How long a failed bus operation waits before it is retried.
pub(crate) const RETRY_DELAY: Duration = Duration::from_millis(500);
