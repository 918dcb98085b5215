//! The run's schedule, random from its seed: when each bead is created (and which always fail),
//! which fault strikes when; and the two loops that carry it out, the producer and the injector,
//! each bounded in count and time.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use loom_domain::ProjectId;
use loom_faults::Mode;
use loom_faults::history::Record;
use loom_store::Store;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::cluster::{Cluster, LEASE, PROJECT, wait_port};
use super::{Recorder, Tier, counts};

/// One fault of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 of nats-server, started again after `down_ms`.
    NatsKill { down_ms: u64 },
    /// kill -9 of agent `agent` (modulo the number of agents), started again after a second.
    AgentKill { agent: usize },
    /// kill -9 of the control plane holding the dispatcher lease, started again after 2 s.
    LeaderKill,
    /// The proxy in front of the database service swallows everything for `ms`: calls time out
    /// without knowing whether they committed.
    DbTimeout { ms: u64 },
    /// The proxy resets every connection to the database service for `ms`.
    DbReset { ms: u64 },
    /// A malformed message published raw on the project's task subject.
    Poison { n: usize },
    /// PostgreSQL stopped with `pg_ctl stop -m immediate` (crash recovery on start) for `down_ms`.
    PgRestart { down_ms: u64 },
    /// kill -9 of the database service (between a commit and its reply, for calls in flight).
    DbKill,
    /// SIGSTOP of agent `agent` past the ack wait and the lease, then SIGCONT: a zombie that
    /// wakes up holding dispatches that were given to others meanwhile.
    AgentStop { agent: usize },
    /// Every agent, then every control plane, stopped gracefully (SIGTERM) and started again.
    RollingRestart,
    /// The proxy between the agents and nats-server black-holes (a partition: connections hang)
    /// or, with `reset`, resets every connection, for `ms`.
    NatsLink { ms: u64, reset: bool },
    /// NATS's store runs out of space for `ms` (a ballast file fills its tmpfs), then has room
    /// again; a server that disabled JetStream for it, or left a stream that failed a write
    /// unanswering (nats-server 2.9 does), is restarted, as an operator would.
    DiskFull { ms: u64 },
    /// The control plane holding the dispatcher lease (and with it the outbox relay and the
    /// publisher) killed `n` times in a row, each time a second after it came back.
    RelayCrashLoop { n: usize },
    /// Agent `agent`'s network namespace cut off from everything (NATS and the API at once) for
    /// `ms`, then healed: its connections hang as in a real partition, and resume.
    Partition { agent: usize, ms: u64 },
    /// The network namespace of the control plane holding the dispatcher lease cut off from
    /// everything (NATS, PostgreSQL or the database service, the agents, the run's API calls) for
    /// `ms`: its lease renewals fail, so it stands down, and the other one takes the lease.
    LeaderPartition { ms: u64 },
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::NatsKill { .. } => "nats_kill",
            Fault::AgentKill { .. } => "agent_kill",
            Fault::LeaderKill => "leader_kill",
            Fault::DbTimeout { .. } => "db_timeout",
            Fault::DbReset { .. } => "db_reset",
            Fault::Poison { .. } => "poison",
            Fault::PgRestart { .. } => "pg_restart",
            Fault::DbKill => "db_kill",
            Fault::AgentStop { .. } => "agent_stop",
            Fault::RollingRestart => "rolling_restart",
            Fault::NatsLink { .. } => "nats_link",
            Fault::DiskFull { .. } => "disk_full",
            Fault::RelayCrashLoop { .. } => "relay_crash_loop",
            Fault::Partition { .. } => "partition",
            Fault::LeaderPartition { .. } => "leader_partition",
        }
    }
}

/// What a run does, drawn from its seed.
#[derive(Debug)]
pub struct Plan {
    pub tier: Tier,
    pub seed: u64,
    pub beads: usize,
    /// Creates are spread over this window; faults strike inside it.
    pub window: Duration,
    pub always_fail: BTreeSet<usize>,
    pub faults: Vec<(Duration, Fault)>,
}

impl Plan {
    /// The tier's plan for `seed`, with `beads` and a `window` other than the tier's if given
    /// (faults are then drawn inside that window).
    pub fn new(tier: Tier, seed: u64, beads: Option<usize>, window: Option<Duration>) -> Plan {
        let mut rng = StdRng::seed_from_u64(seed);
        // (beads, window s, always failing, poison, NATS kills, agent kills, leader kills, DB timeouts, DB resets)
        let (n, tier_window, failing, poison, nats, agents, leaders, timeouts, resets) = match tier {
            Tier::Ci => (1_000, 60, 10, 5, 3, 3, 1, 2, 0),
            // 10,000 beads over 25 minutes: about 6.7 a second, under what 4 agents × 4 slots
            // of sandboxed git work sustain on a 2-core machine (7–9 a second), so I5 measures
            // recovery from the faults, not the draining of an overload.
            Tier::Full => (10_000, 1_500, 50, 20, 10, 8, 3, 6, 3),
        };
        // (PostgreSQL restarts, database service kills, zombie agents, rolling restarts)
        let (pg, db_kills, zombies, rolling) = match tier {
            Tier::Ci => (0, 0, 0, 0),
            Tier::Full => (3, 3, 2, 1),
        };
        // (NATS link faults, full NATS disks, relay crash loops, agent partitions, leader partitions)
        let (links, disks, crash_loops, partitions, leader_partitions) = match tier {
            Tier::Ci => (0, 0, 0, 0, 0),
            Tier::Full => (4, 2, 2, 4, 2),
        };
        let beads = beads.unwrap_or(n);
        let window = window.unwrap_or(Duration::from_secs(tier_window));
        let always_fail = (0..failing.min(beads)).map(|_| rng.random_range(0..beads)).collect();
        let mut faults = Vec::new();
        let mut add = |rng: &mut StdRng, count: usize, make: &dyn Fn(&mut StdRng, usize) -> Fault| {
            for i in 0..count {
                let at = Duration::from_millis(rng.random_range(5_000..window.as_millis() as u64 - 5_000));
                faults.push((at, make(rng, i)));
            }
        };
        add(&mut rng, nats, &|rng, _| Fault::NatsKill { down_ms: rng.random_range(500..3_000) });
        add(&mut rng, agents, &|rng, _| Fault::AgentKill { agent: rng.random_range(0..1_000) });
        add(&mut rng, leaders, &|_, _| Fault::LeaderKill);
        add(&mut rng, timeouts, &|rng, _| Fault::DbTimeout { ms: rng.random_range(6_000..9_000) });
        add(&mut rng, resets, &|rng, _| Fault::DbReset { ms: rng.random_range(1_000..4_000) });
        add(&mut rng, poison, &|_, n| Fault::Poison { n });
        add(&mut rng, pg, &|rng, _| Fault::PgRestart { down_ms: rng.random_range(1_000..4_000) });
        add(&mut rng, db_kills, &|_, _| Fault::DbKill);
        add(&mut rng, zombies, &|rng, _| Fault::AgentStop { agent: rng.random_range(0..1_000) });
        add(&mut rng, rolling, &|_, _| Fault::RollingRestart);
        add(&mut rng, links, &|rng, i| Fault::NatsLink { ms: rng.random_range(2_000..8_000), reset: i % 2 == 1 });
        add(&mut rng, disks, &|rng, _| Fault::DiskFull { ms: rng.random_range(2_000..6_000) });
        add(&mut rng, crash_loops, &|_, _| Fault::RelayCrashLoop { n: 3 });
        // Drawn last, so the faults above keep their times for a seed of an earlier run.
        add(&mut rng, partitions, &|rng, _| Fault::Partition {
            agent: rng.random_range(0..1_000),
            ms: rng.random_range(5_000..20_000),
        });
        // At least 14 s: the leader's lease lives 10 s from its last renewal (every 3.3 s) and
        // the other control plane tries every 3.3 s, so it has always taken over before the heal.
        add(&mut rng, leader_partitions, &|rng, _| Fault::LeaderPartition { ms: rng.random_range(14_000..20_000) });
        faults.sort_by_key(|(at, _)| *at);
        Plan { tier, seed, beads, window, always_fail, faults }
    }

    /// Keeps only the faults of `kinds` (each must be in the schedule), at the times they had.
    pub fn keep_only(&mut self, kinds: &[String]) -> anyhow::Result<()> {
        let scheduled: BTreeSet<&str> = self.faults.iter().map(|(_, f)| f.kind()).collect();
        for kind in kinds {
            anyhow::ensure!(
                scheduled.contains(kind.as_str()),
                "--only {kind}: the {:?} tier schedules no such fault (it has {scheduled:?})",
                self.tier
            );
        }
        self.faults.retain(|(_, f)| kinds.iter().any(|k| k == f.kind()));
        Ok(())
    }
}

/// Which control planes are up, so the producer sends creates to a live one.
#[derive(Clone, Debug)]
pub struct Up(Arc<Vec<AtomicBool>>);

impl Up {
    pub fn new(n: usize) -> Up {
        Up(Arc::new((0..n).map(|_| AtomicBool::new(true)).collect()))
    }

    fn set(&self, i: usize, up: bool) {
        self.0[i].store(up, Ordering::SeqCst);
    }

    /// `preferred` if it is up, else the first that is.
    fn pick(&self, preferred: usize) -> usize {
        let n = self.0.len();
        (0..n).map(|k| (preferred + k) % n).find(|&i| self.0[i].load(Ordering::SeqCst)).unwrap_or(preferred % n)
    }
}

/// The shell step of a bead: log the start of its effect, work, log the commit. The always-failing
/// ones log the start and fail.
fn command(effects: &Path, fails: bool) -> String {
    let log = effects.display();
    let line = |what: &str| format!("echo \"$(date +%s%3N) {what} $LOOM_BEAD_ID $LOOM_DISPATCH_ID\" >> {log}");
    if fails {
        format!("{}; exit 1", line("start"))
    } else {
        format!("{}; sleep 0.2; {}", line("start"), line("commit"))
    }
}

/// Creates the beads through the control planes' API, spread over the window, alternating
/// between the live control planes. A create that fails may have committed (the bead then exists
/// without an ack, which I2 allows and I1 does not require); it is sent once more under a new key.
pub async fn produce(plan: &Plan, cp_urls: &[String], up: &Up, effects: &Path, rec: &Recorder) -> anyhow::Result<()> {
    let clients: Vec<loom_client::Client> = cp_urls.iter().map(|u| loom_client::Client::new(u, None)).collect();
    let started = Instant::now();
    let mut failed = 0;
    for i in 0..plan.beads {
        let due = plan.window.mul_f64(i as f64 / plan.beads as f64);
        tokio::time::sleep_until((started + due).into()).await;
        let key = format!("fk-{i}");
        let fails = plan.always_fail.contains(&i);
        let mut bead = loom_api::CreateBead {
            project_id: PROJECT.into(),
            title: key.clone(),
            description: String::new(),
            bead_type: None,
            priority: None,
            assignee: None,
            tags: Vec::new(),
            context: Default::default(),
            parent: None,
            blocked_by: Vec::new(),
        };
        bead.context.insert("command".into(), command(effects, fails));
        // A failed create may have committed, so it is sent again as a new request (a new key),
        // once, to the other control plane.
        for (attempt, key) in [key.clone(), format!("{key}-again")].into_iter().enumerate() {
            bead.title = key.clone();
            if fails {
                rec.push(Record::ExpectFailure { key: key.clone() });
            }
            rec.push(Record::EnqueueRequested { key: key.clone() });
            match clients[up.pick(i + attempt)].create_bead(&bead).await {
                Ok(b) => {
                    rec.push(Record::EnqueueAcked { key, bead: b.id });
                    break;
                }
                Err(err) => {
                    failed += 1;
                    tracing::warn!(%key, %err, "a create failed");
                }
            }
        }
    }
    eprintln!("loom bench faults: {} beads asked for, {failed} creates failed", plan.beads);
    Ok(())
}

/// Carries out the faults at their times, each healed and its recovery measured before the next;
/// returns when the last one was injected.
pub async fn inject(
    plan: &Plan,
    cluster: &mut Cluster,
    up: &Up,
    store: &dyn Store,
    bus: &loom_bus::Bus,
    rec: &Recorder,
    exits: &mut Vec<String>,
) -> anyhow::Result<Instant> {
    let started = Instant::now();
    let mut last = Instant::now();
    let project = ProjectId::parse(PROJECT)?;
    for (at, fault) in &plan.faults {
        // Between faults, a supervisor's watch: a Loom process that exited on its own is started
        // again and reported (`unexpected_exits`), so one crash does not end the run unseen.
        loop {
            for name in cluster.revive()? {
                eprintln!(
                    "loom bench faults: {:>6.1} s {name} had exited on its own: started again",
                    started.elapsed().as_secs_f64()
                );
                exits.push(name);
            }
            let left = (started + *at).saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        }
        // A fault this machine cannot inject is listed under `skipped`, not recorded as injected
        // (nor waited on for a recovery).
        let unavailable = match fault {
            Fault::DiskFull { .. } => cluster.nats_disk.is_err(),
            Fault::Partition { .. } | Fault::LeaderPartition { .. } => cluster.netns.is_err(),
            _ => false,
        };
        if unavailable {
            continue;
        }
        last = Instant::now();
        let target = strike(*fault, cluster, up, bus, rec).await?;
        eprintln!("loom bench faults: {:>6.1} s {} {target}", started.elapsed().as_secs_f64(), fault.kind());
        if matches!(fault, Fault::Poison { .. }) {
            continue;
        }
        rec.push(Record::Fault { fault: fault.kind().into(), target });
        let ms = recovery(store, &project, last).await?;
        rec.push(Record::Recovered { fault: fault.kind().into(), ms });
    }
    Ok(last)
}

/// Injects one fault and heals it; returns what it hit.
async fn strike(
    fault: Fault,
    cluster: &mut Cluster,
    up: &Up,
    bus: &loom_bus::Bus,
    rec: &Recorder,
) -> anyhow::Result<String> {
    Ok(match fault {
        Fault::NatsKill { down_ms } => {
            cluster.nats.kill().await?;
            tokio::time::sleep(Duration::from_millis(down_ms)).await;
            cluster.nats.start_again().await?;
            format!("nats-server down {down_ms} ms")
        }
        Fault::AgentKill { agent } => {
            let i = agent % cluster.agents.len();
            cluster.agents[i].kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            cluster.agents[i].spawn()?;
            cluster.agents[i].name.clone()
        }
        Fault::LeaderKill => {
            let i = kill_leader(cluster, up, Duration::from_secs(2)).await?;
            cluster.control_planes[i].name.clone()
        }
        Fault::DbTimeout { ms } | Fault::DbReset { ms } => {
            let mode = if matches!(fault, Fault::DbTimeout { .. }) { Mode::BlackHole } else { Mode::Reset };
            cluster.proxy.set(mode);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            cluster.proxy.set(Mode::Pass);
            format!("database service link {mode:?} for {ms} ms")
        }
        Fault::PgRestart { down_ms } => {
            cluster.pg.stop_immediate().await?;
            tokio::time::sleep(Duration::from_millis(down_ms)).await;
            cluster.pg.start_again().await?;
            format!("PostgreSQL down {down_ms} ms")
        }
        Fault::DbKill => {
            cluster.db.kill();
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.db.spawn()?;
            wait_port(cluster.db_addr, &mut cluster.db).await?;
            "db".to_owned()
        }
        Fault::AgentStop { agent } => {
            let i = agent % cluster.agents.len();
            cluster.agents[i].signal("STOP").await;
            // Past the ack wait and the lease: its tasks go to others meanwhile.
            let frozen = LEASE.max(loom_bus::BusConfig::default().ack_wait) + Duration::from_secs(10);
            tokio::time::sleep(frozen).await;
            cluster.agents[i].signal("CONT").await;
            format!("{} stopped {} s", cluster.agents[i].name, frozen.as_secs())
        }
        Fault::RollingRestart => {
            for agent in &mut cluster.agents {
                agent.stop().await;
                agent.spawn()?;
            }
            for i in 0..cluster.control_planes.len() {
                up.set(i, false);
                cluster.control_planes[i].stop().await;
                cluster.control_planes[i].spawn()?;
                cluster.wait_control_plane(i).await?;
                up.set(i, true);
            }
            "every agent and control plane".to_owned()
        }
        Fault::NatsLink { ms, reset } => {
            let mode = if reset { Mode::Reset } else { Mode::BlackHole };
            cluster.nats_proxy.set(mode);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            cluster.nats_proxy.set(Mode::Pass);
            format!("agents' NATS link {mode:?} for {ms} ms")
        }
        Fault::DiskFull { ms } => {
            let ballast = cluster.nats.fill_store()?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            cluster.nats.free_store()?;
            let freed = cluster.nats.log_len();
            // Neither server version recovers by itself (measured): 2.9 leaves streams that
            // failed a write unanswering, 2.10+ answers but keeps failing every write to them.
            // Either is restarted, as an operator would once the disk has room.
            let back = jetstream_back(bus, Duration::from_secs(10)).await;
            tokio::time::sleep(Duration::from_secs(3)).await;
            let failing = cluster.nats.store_failures_since(freed);
            let restarted = if back && failing == 0 {
                String::new()
            } else {
                cluster.nats.kill().await?;
                cluster.nats.start_again().await?;
                if back {
                    format!("; {failing} writes failed after the disk had room again: nats-server restarted")
                } else {
                    "; JetStream or one of its streams had not come back by itself within 10 s: nats-server restarted"
                        .to_owned()
                }
            };
            format!("NATS store full ({} MiB ballast) for {ms} ms{restarted}", ballast >> 20)
        }
        Fault::RelayCrashLoop { n } => {
            for _ in 0..n {
                kill_leader(cluster, up, Duration::from_millis(300)).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            format!("the dispatcher leader killed {n} times, 1 s apart")
        }
        Fault::Partition { agent, ms } => {
            let i = agent % cluster.agents.len();
            let netns = cluster.agents[i].netns().context("the agents run in network namespaces")?;
            netns.partition().await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            netns.heal().await?;
            format!("{} cut off for {ms} ms", cluster.agents[i].name)
        }
        Fault::LeaderPartition { ms } => leader_partition(cluster, up, Duration::from_millis(ms)).await?,
        Fault::Poison { n } => {
            let msg_id = format!("poison-{n}");
            poison(bus, &msg_id, n).await?;
            rec.push(Record::PoisonInjected { msg_id: msg_id.clone() });
            msg_id
        }
    })
}

/// kill -9 of the control plane holding the dispatcher lease (the first one if none says so),
/// started again after `down`; returns its index once it listens again.
async fn kill_leader(cluster: &mut Cluster, up: &Up, down: Duration) -> anyhow::Result<usize> {
    let i = cluster.leader().unwrap_or(0);
    up.set(i, false);
    cluster.control_planes[i].kill();
    tokio::time::sleep(down).await;
    cluster.control_planes[i].spawn()?;
    cluster.wait_control_plane(i).await?;
    up.set(i, true);
    Ok(i)
}

/// Cuts the dispatcher leader's namespace off for `cut`, watching (from their logs) the other
/// control plane take the lease and the old leader stand down — during the cut, or within 30 s
/// of the heal; returns what it saw. The producer sends no creates to the cut one meanwhile.
async fn leader_partition(cluster: &mut Cluster, up: &Up, cut: Duration) -> anyhow::Result<String> {
    let i = cluster.leader().unwrap_or(0);
    let netns = cluster.control_planes[i].netns().context("the control planes run in network namespaces")?;
    let others: Vec<usize> = (0..cluster.control_planes.len()).filter(|&j| j != i).collect();
    let started = Instant::now();
    up.set(i, false);
    netns.partition().await?;
    let (mut taken, mut stood_down, mut healed) = (None, None, false);
    while started.elapsed() < cut + Duration::from_secs(30) && (taken.is_none() || stood_down.is_none()) {
        if !healed && started.elapsed() >= cut {
            netns.heal().await?;
            healed = true;
        }
        if taken.is_none() && others.iter().any(|&j| cluster.leads(j) == Some(true)) {
            taken = Some(started.elapsed());
        }
        if stood_down.is_none() && cluster.leads(i) != Some(true) {
            stood_down = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = cut.saturating_sub(started.elapsed());
    tokio::time::sleep(left).await;
    if !healed {
        netns.heal().await?;
    }
    up.set(i, true);
    let ms = |at: Duration| at.as_millis();
    let stood_down = stood_down.map_or("it still said leader 30 s after the heal".to_owned(), |at| {
        format!("it stood down after {} ms", ms(at))
    });
    let taken = taken.map_or("no other took the lease by 30 s after the heal".to_owned(), |at| {
        format!("the other took the lease after {} ms", ms(at))
    });
    Ok(format!("{} cut off for {} ms; {stood_down}; {taken}", cluster.control_planes[i].name, ms(cut)))
}

/// Whether JetStream answers again within `within` (the suite's own client, straight to NATS).
async fn jetstream_back(bus: &loom_bus::Bus, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if bus.health().await.jetstream {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Publishes malformed task `n` raw on the project's task subject, retrying while NATS is back.
async fn poison(bus: &loom_bus::Bus, msg_id: &str, n: usize) -> anyhow::Result<()> {
    let bodies: [&[u8]; 4] =
        [b"{\"type\":\"task.assigned\",\"bead_id\":", b"not json at all", b"[1,2,3]", b"{\"type\":\"task.unknown\"}"];
    let subject = bus.subjects().tasks(&ProjectId::parse(PROJECT)?, None);
    let mut tries = 0;
    loop {
        let msg = loom_bus::Outgoing::raw(subject.clone(), msg_id, bodies[n % bodies.len()].to_vec());
        match bus.publish(msg).await {
            Ok(_) => return Ok(()),
            Err(err) if tries < 20 => {
                tracing::warn!(%err, "publishing poison failed; retrying");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(err) => return Err(err.into()),
        }
    }
}

/// Milliseconds from `injected` until a bead closes after the fault was healed (or nothing is
/// left to close), at most two minutes.
async fn recovery(store: &dyn Store, project: &ProjectId, injected: Instant) -> anyhow::Result<u64> {
    let closed = |c: &std::collections::BTreeMap<String, u64>| c.get("closed").copied().unwrap_or(0);
    let pending = |c: &std::collections::BTreeMap<String, u64>| {
        c.get("open").copied().unwrap_or(0) + c.get("in_progress").copied().unwrap_or(0)
    };
    let before = counts(store, project).await.map(|c| closed(&c)).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if let Ok(c) = counts(store, project).await
            && (closed(&c) > before || pending(&c) == 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(injected.elapsed().as_millis() as u64)
}

/// Waits until no bead of the project is open or in progress, or `deadline`; returns when.
pub async fn settle(store: &dyn Store, project: &ProjectId, deadline: Instant) -> anyhow::Result<Instant> {
    loop {
        let c = counts(store, project).await?;
        let pending = c.get("open").copied().unwrap_or(0) + c.get("in_progress").copied().unwrap_or(0);
        if pending == 0 || Instant::now() >= deadline {
            if pending > 0 {
                eprintln!("loom bench faults: {pending} beads still pending at the settle deadline: {c:?}");
            }
            return Ok(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(plan: &Plan) -> std::collections::BTreeMap<&'static str, usize> {
        let mut kinds = std::collections::BTreeMap::new();
        for (_, fault) in &plan.faults {
            *kinds.entry(fault.kind()).or_default() += 1;
        }
        kinds
    }

    #[test]
    fn a_seed_replays_its_schedule() {
        let (a, b) = (Plan::new(Tier::Ci, 42, None, None), Plan::new(Tier::Ci, 42, None, None));
        assert_eq!((&a.faults, &a.always_fail), (&b.faults, &b.always_fail));
        assert_ne!(a.faults, Plan::new(Tier::Ci, 43, None, None).faults, "another seed, another schedule");
    }

    #[test]
    fn the_ci_tier_has_the_faults_the_issue_names_inside_its_window() {
        let plan = Plan::new(Tier::Ci, 7, None, None);
        assert_eq!(plan.beads, 1_000);
        let want = [("agent_kill", 3), ("db_timeout", 2), ("leader_kill", 1), ("nats_kill", 3), ("poison", 5)];
        assert_eq!(kinds(&plan), want.into_iter().collect());
        assert!(plan.faults.windows(2).all(|w| w[0].0 <= w[1].0), "sorted by time");
        assert!(plan.faults.iter().all(|(at, _)| *at >= Duration::from_secs(5) && *at < plan.window));
        assert!(!plan.always_fail.is_empty() && plan.always_fail.iter().all(|&i| i < plan.beads));
    }

    #[test]
    fn the_full_tier_kills_nats_at_least_ten_times_and_has_every_fault() {
        let plan = Plan::new(Tier::Full, 7, None, None);
        let kinds = kinds(&plan);
        assert!(kinds["nats_kill"] >= 10, "{kinds:?}");
        for kind in [
            "agent_kill",
            "leader_kill",
            "db_timeout",
            "db_reset",
            "pg_restart",
            "db_kill",
            "agent_stop",
            "rolling_restart",
            "nats_link",
            "disk_full",
            "relay_crash_loop",
            "partition",
            "leader_partition",
        ] {
            assert!(kinds.contains_key(kind), "{kind} missing from {kinds:?}");
        }
    }

    #[test]
    fn only_keeps_those_kinds_at_their_times_and_refuses_one_not_scheduled() {
        let all = Plan::new(Tier::Full, 11, None, None);
        let mut only = Plan::new(Tier::Full, 11, None, None);
        only.keep_only(&["partition".to_owned(), "leader_partition".to_owned()]).unwrap();
        let want: Vec<_> = all
            .faults
            .iter()
            .filter(|(_, f)| matches!(f, Fault::Partition { .. } | Fault::LeaderPartition { .. }))
            .cloned()
            .collect();
        assert_eq!((only.faults.len(), &only.faults), (6, &want));
        let err = Plan::new(Tier::Ci, 11, None, None).keep_only(&["partition".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("schedules no such fault"), "{err}");
    }

    #[test]
    fn a_shorter_window_holds_the_creates_and_the_faults() {
        let plan = Plan::new(Tier::Full, 11, Some(600), Some(Duration::from_secs(120)));
        assert_eq!((plan.beads, plan.window), (600, Duration::from_secs(120)));
        assert!(plan.faults.iter().all(|(at, _)| *at >= Duration::from_secs(5) && *at < plan.window));
    }

    #[test]
    fn the_effect_command_logs_start_and_commit_or_fails() {
        let ok = command(Path::new("/tmp/e.log"), false);
        assert!(ok.contains("start $LOOM_BEAD_ID $LOOM_DISPATCH_ID\" >> /tmp/e.log") && ok.contains("commit"), "{ok}");
        let bad = command(Path::new("/tmp/e.log"), true);
        assert!(bad.ends_with("exit 1") && !bad.contains("commit"), "{bad}");
    }
}
