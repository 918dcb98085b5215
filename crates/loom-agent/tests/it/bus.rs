//! The agent on the real NATS JetStream: result before ack, registry, progress, cancel,
//! hand-back on shutdown, and redelivery after an agent dies mid-task.

use std::time::{Duration, Instant};

use loom_agent::ExecutorKind;
use loom_bus::{ConsumeOptions, ResultKind};
use loom_domain::{AgentId, AgentStatus, ProjectId};

use crate::support::{
    Agent, Repo, cancel_of, final_result, nats, nats_cleanup, nats_unprovisioned, next_of, publish, results, task,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_run_reported_and_only_then_acked() {
    let repo = Repo::new();
    let bus = nats().await;
    let mut sub = results(&bus).await;
    let mut config = repo.config("demo");
    config.agent_id = Some(AgentId::parse("agent-one").unwrap());
    config.default_executor = ExecutorKind::Noop;
    config.concurrency = 2;
    let agent = Agent::start(config, &bus);
    let t = task("demo", "demo-1", "", &[]);
    publish(&bus, &t).await;
    let r = final_result(&mut sub).await;
    assert_eq!((r.kind, r.agent_id.as_str()), (ResultKind::Completed, "agent-one"));
    assert_eq!(r.result.output, "noop");
    let agents = bus.list_agents().await.unwrap();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!((agents[0].capacity, agents[0].project_id.as_str()), (2, "demo"));
    assert!(matches!(agents[0].status, AgentStatus::Idle | AgentStatus::Busy));
    agent.stop().await;
    assert!(bus.list_agents().await.unwrap().is_empty(), "deregistered on shutdown");
    // Acked: nothing is redelivered to the consumer after the ack wait.
    let project = ProjectId::parse("demo").unwrap();
    let mut tasks = bus.consume_tasks(&project, None, ConsumeOptions::default()).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(3), tasks.next()).await;
    assert!(again.is_err(), "the task was acked, yet redelivered: {again:?}");
    drop(tasks);
    nats_cleanup(bus).await;
}

/// An agent started while its stream cannot serve it (here: not provisioned yet, as after a
/// NATS restart before JetStream has recovered its streams) waits and binds once it can,
/// instead of exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_consumer_cannot_be_bound_yet_waits_for_it() {
    let repo = Repo::new();
    let bus = nats_unprovisioned().await;
    let mut config = repo.config("demo");
    config.agent_id = Some(AgentId::parse("agent-late").unwrap());
    config.default_executor = ExecutorKind::Noop;
    let agent = Agent::start(config, &bus);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!agent.handle.is_finished(), "the agent exited instead of waiting: {:?}", agent.handle.await);
    bus.provision().await.unwrap();
    let mut sub = results(&bus).await;
    let t = task("demo", "demo-1", "", &[]);
    publish(&bus, &t).await;
    let r = final_result(&mut sub).await;
    assert_eq!((r.kind, r.agent_id.as_str()), (ResultKind::Completed, "agent-late"));
    // Registered by a heartbeat once the bucket exists.
    let deadline = Instant::now() + Duration::from_secs(10);
    while bus.list_agents().await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the agent never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    agent.stop().await;
    nats_cleanup(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_flows_while_a_task_runs_and_a_cancel_stops_it() {
    let repo = Repo::new();
    let bus = nats().await;
    let mut sub = results(&bus).await;
    // A free slot pulls the cancellation at once (with every slot busy, the fence's answer at
    // the next progress report stops the task: see the test below).
    let mut config = repo.config("demo");
    config.concurrency = 2;
    let agent = Agent::start(config, &bus);
    let t = task("demo", "demo-2", "shell", &[("command", "sleep 30")]);
    publish(&bus, &t).await;
    let progress = next_of(&mut sub, &[ResultKind::Progress]).await;
    assert_eq!(progress.metadata.dispatch_id, t.metadata.dispatch_id);
    let cancelled_at = Instant::now();
    publish(&bus, &cancel_of(&t)).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(r.result.error.contains("cancelled"), "{r:?}");
    assert_eq!(r.result.context.get("cancelled").map(String::as_str), Some("true"));
    assert!(cancelled_at.elapsed() < Duration::from_secs(10), "{:?}", cancelled_at.elapsed());
    agent.stop().await;
    nats_cleanup(bus).await;
}

/// A fence whose one dispatch is current until `superseded` is set.
#[derive(Debug, Default)]
struct Switch {
    superseded: std::sync::atomic::AtomicBool,
    asked: std::sync::atomic::AtomicU32,
}

#[async_trait::async_trait]
impl loom_agent::Fence for Switch {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }

    async fn start(
        &self,
        _: &loom_domain::BeadId,
        _: &loom_domain::DispatchId,
        _: &AgentId,
    ) -> Result<loom_agent::StartAnswer, String> {
        Ok(loom_agent::StartAnswer::Run)
    }

    async fn is_current(&self, _: &loom_domain::BeadId, _: &loom_domain::DispatchId) -> Result<bool, String> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(!self.superseded.load(std::sync::atomic::Ordering::Relaxed))
    }

    async fn hand_back(
        &self,
        _: &loom_domain::BeadId,
        _: &loom_domain::DispatchId,
        _: &AgentId,
        _: &str,
    ) -> Result<bool, String> {
        Ok(false)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_agent_stops_a_task_the_fence_says_is_superseded() {
    let repo = Repo::new();
    let bus = nats().await;
    let mut sub = results(&bus).await;
    let fence = std::sync::Arc::new(Switch::default());
    let mut config = repo.config("demo");
    config.fence = Some(fence.clone());
    let agent = Agent::start(config, &bus);
    let t = task("demo", "demo-2", "shell", &[("command", "sleep 30")]);
    publish(&bus, &t).await;
    // The agent asks the fence after it published a progress report and before the next one: by
    // the second report, the first answer is in.
    next_of(&mut sub, &[ResultKind::Progress]).await;
    next_of(&mut sub, &[ResultKind::Progress]).await;
    let asked = fence.asked.load(std::sync::atomic::Ordering::Relaxed);
    assert!(asked >= 1, "the fence is asked at each progress report");
    // The bead was closed or dispatched again; its task.cancelled would wait for a free slot.
    fence.superseded.store(true, std::sync::atomic::Ordering::Relaxed);
    let stopping = Instant::now();
    let r = final_result(&mut sub).await;
    assert_eq!(r.kind, ResultKind::Failed);
    assert!(r.result.error.contains("cancelled"), "{r:?}");
    assert!(stopping.elapsed() < Duration::from_secs(10), "{:?}", stopping.elapsed());
    agent.stop().await;
    nats_cleanup(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_back_a_running_task_to_another_agent() {
    let repo = Repo::new();
    let bus = nats().await;
    let mut sub = results(&bus).await;
    let flag = repo.shared().join("flag");
    let mut first = repo.config("demo");
    first.agent_id = Some(AgentId::parse("agent-first").unwrap());
    first.shutdown_grace = Duration::from_millis(200);
    let a = Agent::start(first, &bus);
    let command = format!("test -f {f} || sleep 30; echo second > second.txt", f = flag.display());
    publish(&bus, &task("demo", "demo-3", "shell", &[("command", &command)])).await;
    next_of(&mut sub, &[ResultKind::Progress]).await;
    let stopping = Instant::now();
    a.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(5), "the grace period bounds shutdown");
    std::fs::write(&flag, "").unwrap();
    let mut second = repo.config("demo");
    second.agent_id = Some(AgentId::parse("agent-second").unwrap());
    second.work_root = repo.dir.path().join("work-second");
    let b = Agent::start(second, &bus);
    let r = final_result(&mut sub).await;
    assert_eq!((r.kind, r.agent_id.as_str()), (ResultKind::Completed, "agent-second"), "{r:?}");
    assert_eq!(repo.show("main", "second.txt").as_deref(), Some("second\n"));
    b.stop().await;
    nats_cleanup(bus).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_mid_task_leads_to_a_redelivery_another_completes_once() {
    let repo = Repo::new();
    let bus = nats().await;
    let mut sub = results(&bus).await;
    let mut first = repo.config("demo");
    first.agent_id = Some(AgentId::parse("agent-dies").unwrap());
    let a = Agent::start(first, &bus);
    let t = task("demo", "demo-4", "shell", &[("command", "sleep 2; echo done > done.txt")]);
    publish(&bus, &t).await;
    let progress = next_of(&mut sub, &[ResultKind::Progress]).await;
    assert_eq!(progress.agent_id.as_str(), "agent-dies");
    // A crash: the agent vanishes without settling its delivery or publishing a result.
    a.handle.abort();
    let _ = a.handle.await;
    let mut second = repo.config("demo");
    second.agent_id = Some(AgentId::parse("agent-lives").unwrap());
    second.work_root = repo.dir.path().join("work-second");
    let b = Agent::start(second, &bus);
    let r = final_result(&mut sub).await;
    assert_eq!((r.kind, r.agent_id.as_str()), (ResultKind::Completed, "agent-lives"), "{r:?}");
    assert_eq!(r.metadata.dispatch_id, t.metadata.dispatch_id);
    let extra = tokio::time::timeout(Duration::from_secs(3), final_result(&mut sub)).await;
    assert!(extra.is_err(), "exactly one final result: {extra:?}");
    let landed = repo.log("main").iter().filter(|s| s.starts_with("demo-4:")).count();
    assert_eq!(landed, 1, "the bead's work landed once");
    b.stop().await;
    nats_cleanup(bus).await;
}

/// A fence that says every dispatch but `current` is stale.
#[derive(Debug)]
struct OnlyCurrent(loom_domain::DispatchId);

#[async_trait::async_trait]
impl loom_agent::Fence for OnlyCurrent {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }

    async fn start(
        &self,
        _: &loom_domain::BeadId,
        d: &loom_domain::DispatchId,
        _: &AgentId,
    ) -> Result<loom_agent::StartAnswer, String> {
        Ok(if *d == self.0 { loom_agent::StartAnswer::Run } else { loom_agent::StartAnswer::Stale })
    }

    async fn is_current(&self, _: &loom_domain::BeadId, d: &loom_domain::DispatchId) -> Result<bool, String> {
        Ok(*d == self.0)
    }

    async fn hand_back(
        &self,
        _: &loom_domain::BeadId,
        _: &loom_domain::DispatchId,
        _: &AgentId,
        _: &str,
    ) -> Result<bool, String> {
        Err("this test fence takes nothing back".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_dispatch_is_skipped_and_acked_without_running() {
    let repo = Repo::new();
    let bus = nats().await;
    let mut sub = results(&bus).await;
    let marker = repo.shared().join("ran");
    let stale = task("demo", "demo-4", "shell", &[("command", &format!("touch {}", marker.display()))]);
    let current = task("demo", "demo-5", "", &[]);
    let mut config = repo.config("demo");
    config.default_executor = ExecutorKind::Noop;
    config.fence = Some(std::sync::Arc::new(OnlyCurrent(current.metadata.dispatch_id.clone())));
    // Two slots, and the stale task well ahead: it is settled before the agent stops. (With one
    // slot the current task could take it first, and the stale one, still waiting at the stop,
    // would rightly be handed back rather than acked.)
    config.concurrency = 2;
    let agent = Agent::start(config, &bus);
    publish(&bus, &stale).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&bus, &current).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.metadata.dispatch_id, current.metadata.dispatch_id, "only the current dispatch reports");
    assert!(!marker.exists(), "the stale task never ran");
    agent.stop().await;
    let project = ProjectId::parse("demo").unwrap();
    let mut tasks = bus.consume_tasks(&project, None, ConsumeOptions::default()).await.unwrap();
    let again = tokio::time::timeout(Duration::from_secs(3), tasks.next()).await;
    assert!(again.is_err(), "the stale task was acked, yet redelivered");
    drop(tasks);
    nats_cleanup(bus).await;
}
