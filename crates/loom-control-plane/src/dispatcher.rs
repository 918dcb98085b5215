//! The dispatcher: while this instance holds the `dispatcher` lease, it claims ready beads of
//! every active project (within the concurrency limits) into the outbox, and sweeps expired
//! leases. It wakes on local changes and polls on an interval for changes made elsewhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chrono::Utc;
use loom_domain::{Bead, NewBead, ProjectId, ProjectStatus};
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
            repair_bus(&shared).await;
        }
    }
    shared.leader.store(false, Ordering::Relaxed);
}

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut view = View::default();
    let mut capped = false;
    loop {
        // A pass that found a project full looks again once the counts are re-read: a slot
        // freed elsewhere (a close by hand, a swept lease) wakes nobody.
        let wait = if capped { shared.config.sweep_interval.min(REFRESH) } else { shared.config.sweep_interval };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = shared.dispatch_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        if !shared.is_leader() {
            continue;
        }
        match dispatch_once(&shared, &mut view).await {
            Ok(pass) => capped = pass.capped,
            Err(e) => tracing::warn!(error = %e, "dispatch pass failed; retrying on the next wake"),
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

/// Repairs the consumers of the tasks and results streams that had delivered past their
/// stream's end (the server lost stored messages: nats-server 2.9 after a full disk). Lost tasks
/// leave their beads queued with no message, and a queued bead has no lease clock: they are
/// handed back to be dispatched again *before* the consumers are reset, so that a failed
/// hand-back is tried again on the next pass (which finds the consumers still ahead). Lost
/// results leave their beads running; their lease does the rest. Errors are only logged.
async fn repair_bus(shared: &Shared) {
    for kind in [loom_bus::StreamKind::Tasks, loom_bus::StreamKind::Results] {
        let ahead = match shared.bus.consumers_ahead(kind).await {
            Ok(ahead) if !ahead.is_empty() => ahead,
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, stream = kind.token(), "cannot check the stream's consumers");
                continue;
            }
        };
        if kind == loom_bus::StreamKind::Tasks {
            let reason = "the tasks stream lost its stored messages; dispatched again";
            let by = &shared.config.instance;
            match crate::hand_back_dispatches(&*shared.store, crate::Dispatches::Queued, by, reason).await {
                Ok(n) => {
                    tracing::warn!(
                        ?ahead,
                        handed_back = n,
                        "the tasks stream lost stored messages: queued dispatches handed back"
                    );
                    shared.changed();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the tasks stream lost stored messages; handing its queued dispatches back failed, retrying on the next pass");
                    continue;
                }
            }
        } else {
            tracing::warn!(?ahead, "results stored on the bus were lost; their beads wait for their leases");
        }
        for consumer in &ahead {
            if let Err(e) = shared.bus.reset_consumer(consumer).await {
                tracing::warn!(error = %e, consumer = %consumer.consumer, "cannot reset the consumer; retrying on the next pass");
            }
        }
    }
}

/// How many beads are in progress, per project, as the dispatcher counts them: read from the
/// store every `REFRESH`, plus the claims made since (finished beads are subtracted only at the
/// next read, so the limits err on the safe side), plus slots reserved by claims under way (a
/// dispatch pass, or an API create that may claim its bead at once). With
/// `follow_agent_capacity`, a project also gets no more than its live agents' slots
/// (`capacity.rs` keeps `agent_slots` from the registry): queued work waits as `open` beads.
/// `agent_roles` are the roles that live agents of a project are bound to (`--role`): a bead
/// whose role one of them serves goes to that role's queue, any other to the project's queue,
/// whose agents play the bead's persona themselves.
#[derive(Debug, Default)]
pub(crate) struct Slots {
    running: HashMap<ProjectId, u32>,
    reserved: HashMap<ProjectId, u32>,
    agent_slots: HashMap<ProjectId, u32>,
    agent_roles: HashMap<ProjectId, std::collections::HashSet<String>>,
    counted_at: Option<Instant>,
    /// Claims settled while a read of the store's counts is under way: that read may have been
    /// taken before they committed, so they are added to it (counted twice at worst, until the
    /// next read — the safe side). Without it a claim committed during the read was lost from the
    /// count and one slot too many could be handed out.
    claimed_during_read: Option<HashMap<ProjectId, u32>>,
    /// Bumped each time `running` is replaced by a read of the store's counts (`generation`).
    generation: u64,
}

impl Slots {
    /// Slots in use (claimed beads in progress), reserved (claims under way) and advertised by
    /// live agents, over all projects.
    pub(crate) fn totals(&self) -> (u32, u32, u32) {
        let total = |m: &HashMap<ProjectId, u32>| m.values().fold(0u32, |a, n| a.saturating_add(*n));
        (total(&self.running), total(&self.reserved), total(&self.agent_slots))
    }

    /// Reserves up to `want` slots of `project` within the per-project and global limits;
    /// returns how many it got. Each must be given back with `settle`.
    pub(crate) fn reserve(&mut self, project: &ProjectId, want: u32, config: &crate::Config) -> u32 {
        let of = |m: &HashMap<ProjectId, u32>| m.get(project).copied().unwrap_or(0);
        let total = |m: &HashMap<ProjectId, u32>| m.values().fold(0u32, |a, n| a.saturating_add(*n));
        let in_project = of(&self.running).saturating_add(of(&self.reserved));
        let in_all = total(&self.running).saturating_add(total(&self.reserved));
        let mut room = config
            .project_concurrency
            .saturating_sub(in_project)
            .min(config.global_concurrency.saturating_sub(in_all))
            .min(want);
        if config.follow_agent_capacity {
            room = room.min(of(&self.agent_slots).saturating_sub(in_project));
        }
        if room > 0 {
            *self.reserved.entry(project.clone()).or_default() += room;
        }
        room
    }

    /// Gives back `reserved` slots of which `claimed` now hold a claimed bead.
    pub(crate) fn settle(&mut self, project: &ProjectId, reserved: u32, claimed: u32) {
        if let Some(n) = self.reserved.get_mut(project) {
            *n = n.saturating_sub(reserved);
            if *n == 0 {
                self.reserved.remove(project);
            }
        }
        if claimed > 0 {
            *self.running.entry(project.clone()).or_default() += claimed;
            if let Some(during) = self.claimed_during_read.as_mut() {
                *during.entry(project.clone()).or_default() += claimed;
            }
        }
    }

    /// A read of the store's in-progress counts begins.
    fn begin_read(&mut self) {
        self.claimed_during_read = Some(HashMap::new());
    }

    /// The read begun with `begin_read` returned `running`: it replaces the counts, plus the
    /// claims settled while it was under way. Returns when.
    fn counted(&mut self, mut running: HashMap<ProjectId, u32>) -> Instant {
        for (project, n) in self.claimed_during_read.take().unwrap_or_default() {
            let count = running.entry(project).or_default();
            *count = count.saturating_add(n);
        }
        self.running = running;
        self.generation += 1;
        let now = Instant::now();
        self.counted_at = Some(now);
        now
    }

    /// Which read of the store's counts `running` comes from; taken before a result is applied,
    /// for `release`.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// `n` beads of `project` left `in_progress` (a result was applied): their slots are free
    /// now, before the next read of the counts. `since` is the `generation` taken before the
    /// result was written. If the counts were read again meanwhile, that read may already have
    /// seen the beads leave (taking them off again would hand out a slot too many), so nothing
    /// is taken off: at worst a slot stays counted as used until the next read, the safe side.
    pub(crate) fn release(&mut self, project: &ProjectId, n: u32, since: u64) {
        if since != self.generation {
            return;
        }
        if let Some(running) = self.running.get_mut(project) {
            *running = running.saturating_sub(n);
        }
    }

    /// The slots live agents advertise, per project (from the registry).
    pub(crate) fn set_agent_slots(&mut self, slots: HashMap<ProjectId, u32>) {
        self.agent_slots = slots;
    }

    /// The roles live agents are bound to, per project (from the registry).
    pub(crate) fn set_agent_roles(&mut self, roles: HashMap<ProjectId, std::collections::HashSet<String>>) {
        self.agent_roles = roles;
    }

    /// Whether a live agent of `project` is bound to `role`'s queue.
    pub(crate) fn role_served(&self, project: &ProjectId, role: &str) -> bool {
        self.agent_roles.get(project).is_some_and(|roles| roles.contains(role))
    }

    /// Whether the counts were read from the store lately enough to claim outside a dispatch pass.
    pub(crate) fn is_current(&self) -> bool {
        self.counted_at.is_some_and(|t| t.elapsed() < 4 * REFRESH)
    }
}

/// What a dispatch pass needs besides the claim itself: the active projects, re-read with the
/// in-progress counts (`Slots`) every `REFRESH` and after any project change, so that a pass on
/// the hot path is one claim transaction.
#[derive(Debug, Default)]
pub(crate) struct View {
    projects: Vec<ProjectId>,
    read_at: Option<Instant>,
}

const REFRESH: Duration = Duration::from_millis(250);

impl View {
    async fn refresh(&mut self, shared: &Shared) -> Result<(), Error> {
        let projects_changed = shared.projects_changed.swap(false, Ordering::Relaxed);
        if !projects_changed && self.read_at.is_some_and(|t| t.elapsed() < REFRESH) {
            return Ok(());
        }
        let projects = shared.store.list_projects().await?;
        shared.contexts.set(&projects);
        self.projects = projects.into_iter().filter(|p| p.status == ProjectStatus::Active).map(|p| p.id).collect();
        shared.slots().begin_read();
        let running: HashMap<ProjectId, u32> = shared
            .store
            .running_by_project()
            .await?
            .into_iter()
            .map(|(p, n)| (p, u32::try_from(n).unwrap_or(u32::MAX)))
            .collect();
        self.read_at = Some(shared.slots().counted(running));
        Ok(())
    }
}

/// What one dispatch pass did.
#[derive(Debug, Default)]
pub(crate) struct Pass {
    /// Beads claimed.
    pub(crate) claimed: usize,
    /// Some project had no free slot (it may have ready beads waiting).
    pub(crate) capped: bool,
}

/// One pass over every active project.
pub(crate) async fn dispatch_once(shared: &Shared, view: &mut View) -> Result<Pass, Error> {
    view.refresh(shared).await?;
    let mut pass = Pass::default();
    for project in &view.projects {
        loop {
            let max = shared.slots().reserve(project, shared.config.claim_batch, &shared.config);
            if max == 0 {
                pass.capped = true;
                break;
            }
            let request = ClaimRequest {
                project: project.clone(),
                max,
                now: Utc::now(),
                lease: shared.config.lease,
                claimer: shared.config.instance.clone(),
            };
            let started = std::time::Instant::now();
            let claims = shared.store.claim_ready(&request).await;
            let n = claims.as_ref().map_or(0, |c| c.len() as u32);
            shared.slots().settle(project, max, n);
            let claims = claims?;
            metrics::histogram!("loom_claim_duration_seconds").record(started.elapsed().as_secs_f64());
            metrics::counter!("loom_beads_dispatched_total").increment(u64::from(n));
            if n == 0 {
                break;
            }
            pass.claimed += n as usize;
            // The publisher sends them now; if it is gone (shutdown) the relay will.
            let _ = shared.claimed.send(claims).await;
            if n < max {
                break;
            }
        }
    }
    Ok(pass)
}

/// Creates a bead for the API. While this instance dispatches and the bead's project has room,
/// the create reserves a slot and claims with it (`creates`): in the create's own transaction,
/// so the publisher sends the task at once — one commit and one wake fewer between a create and
/// an agent holding the task. Otherwise the bead is created open and the dispatcher is woken.
pub(crate) async fn create(shared: &Shared, new: NewBead) -> Result<Bead, Error> {
    let plain = new.parent.is_none() && new.blocked_by.is_empty();
    let mut reservation = if plain && shared.is_leader() { Reservation::take(shared, &new.project_id) } else { None };
    let claim = reservation.as_ref().map(|_| ClaimRequest {
        project: new.project_id.clone(),
        max: 1,
        now: Utc::now(),
        lease: shared.config.lease,
        claimer: shared.config.instance.clone(),
    });
    let created = shared.creates.create(&shared.store, new, claim).await?;
    if let Some(r) = reservation.as_mut() {
        r.claimed = u32::from(created.slot_used);
    }
    drop(reservation);
    // Remembered before its task is published, so the task continues this request's trace.
    shared.traces.remember_current(created.bead.id.as_str());
    let claimed = created.claimed();
    if !created.claims.is_empty() {
        metrics::counter!("loom_beads_dispatched_total").increment(created.claims.len() as u64);
        // The publisher sends them now; if it is gone (shutdown) the relay will.
        let _ = shared.claimed.send(created.claims).await;
    }
    if claimed {
        shared.events_wake.send_replace(());
    } else {
        shared.changed();
    }
    Ok(created.bead)
}

/// One slot reserved for a create that may claim its bead; given back when dropped (also when
/// the request is abandoned half way).
struct Reservation<'a> {
    shared: &'a Shared,
    project: ProjectId,
    claimed: u32,
}

impl<'a> Reservation<'a> {
    fn take(shared: &'a Shared, project: &ProjectId) -> Option<Self> {
        let mut slots = shared.slots();
        (slots.is_current() && slots.reserve(project, 1, &shared.config) == 1).then(|| Reservation {
            shared,
            project: project.clone(),
            claimed: 0,
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.shared.slots().settle(&self.project, 1, self.claimed);
    }
}

/// How long a failed bus operation waits before it is retried.
pub(crate) const RETRY_DELAY: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> ProjectId {
        ProjectId::parse("p").unwrap()
    }

    fn three_slots() -> Slots {
        let mut slots = Slots::default();
        slots.set_agent_slots(HashMap::from([(project(), 3)]));
        slots.begin_read();
        slots.counted(HashMap::from([(project(), 3)]));
        slots
    }

    #[test]
    fn a_result_applied_before_a_read_frees_its_slot_once() {
        let config = crate::Config::default();
        let mut slots = three_slots();
        // A result is written; a read of the counts runs meanwhile and already sees the bead
        // leave; then the result's release arrives.
        let before = slots.generation();
        slots.begin_read();
        slots.counted(HashMap::from([(project(), 2)]));
        slots.release(&project(), 1, before);
        assert_eq!(slots.reserve(&project(), 5, &config), 1, "one slot is free, not two");
    }

    #[test]
    fn a_result_applied_between_reads_frees_its_slot_at_once() {
        let config = crate::Config::default();
        let mut slots = three_slots();
        let before = slots.generation();
        slots.release(&project(), 1, before);
        assert_eq!(slots.reserve(&project(), 5, &config), 1);
    }

    #[test]
    fn a_claim_settled_during_a_read_is_counted() {
        let config = crate::Config::default();
        let mut slots = Slots::default();
        slots.set_agent_slots(HashMap::from([(project(), 3)]));
        slots.begin_read();
        assert_eq!(slots.reserve(&project(), 1, &config), 1);
        slots.settle(&project(), 1, 1);
        // The read's snapshot was taken before that claim committed.
        slots.counted(HashMap::new());
        assert_eq!(slots.reserve(&project(), 5, &config), 2);
    }
}
