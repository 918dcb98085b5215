//! The dispatcher: while this instance holds the `dispatcher` lease, it claims ready beads of
//! every active project (within the concurrency limits) into the outbox, and sweeps expired
//! leases. It wakes on local changes and polls on an interval for changes made elsewhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::Utc;
use loom_domain::{ProjectStatus, Status};
use loom_store::ClaimRequest;
use tokio_util::sync::CancellationToken;

use crate::{Error, Shared};

/// The store lease that elects the one dispatching instance.
pub(crate) const LEADER_LEASE: &str = "dispatcher";

/// Whether this process currently holds the dispatcher lease (read by the relays).
pub(crate) static LEADER: AtomicBool = AtomicBool::new(false);

pub(crate) fn is_leader() -> bool {
    LEADER.load(Ordering::Relaxed)
}

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let renew_every = shared.config.leader_ttl / 3;
    let mut renew = tokio::time::interval(renew_every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = renew.tick() => {
                renew_leadership(&shared).await;
                if is_leader() {
                    sweep_leases(&shared).await;
                }
            }
            _ = shared.dispatch_wake.notified() => {}
            _ = tokio::time::sleep(shared.config.sweep_interval) => {}
        }
        if is_leader()
            && let Err(e) = dispatch_once(&shared).await
        {
            tracing::warn!(error = %e, "dispatch pass failed; retrying on the next wake");
        }
    }
    LEADER.store(false, Ordering::Relaxed);
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
    if held != LEADER.swap(held, Ordering::Relaxed) {
        tracing::info!(instance = %c.instance, leader = held, "dispatcher leadership changed");
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

/// One pass over every active project; returns how many beads were claimed.
pub(crate) async fn dispatch_once(shared: &Shared) -> Result<usize, Error> {
    let mut claimed = 0;
    for project in shared.store.list_projects().await? {
        if project.status != ProjectStatus::Active {
            continue;
        }
        let running = shared
            .store
            .bead_counts(Some(&project.id))
            .await?
            .iter()
            .find(|(s, _)| *s == Status::InProgress)
            .map_or(0, |(_, n)| *n as u32);
        let mut room = shared.config.project_concurrency.saturating_sub(running);
        while room > 0 {
            let request = ClaimRequest {
                project: project.id.clone(),
                max: room.min(shared.config.claim_batch),
                now: Utc::now(),
                lease: shared.config.lease,
                claimer: shared.config.instance.clone(),
            };
            let started = std::time::Instant::now();
            let n = shared.store.claim_ready(&request).await?.len() as u32;
            metrics::histogram!("loom_claim_duration_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("loom_beads_dispatched_total").increment(u64::from(n));
            if n == 0 {
                break;
            }
            claimed += n as usize;
            room -= n;
            shared.relay_wake.notify_one();
            if n < request.max {
                break;
            }
        }
    }
    Ok(claimed)
}

/// How long a failed bus operation waits before it is retried.
pub(crate) const RETRY_DELAY: Duration = Duration::from_millis(500);
