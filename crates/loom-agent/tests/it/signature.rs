//! Signed tasks, on both bus backends: an agent runs only tasks the control plane signed. An
//! unsigned task, one signed by another key (under its own or the trusted key's id) and a signed
//! task whose body was altered (signed alone or in a batch) are dead-lettered with a `task
//! signature …` reason, never reach the fence and never run; the genuine task behind them, signed
//! in one batch with an altered one, runs.

use std::sync::{Arc, Mutex};

use loom_agent::{ExecutorKind, StartAnswer};
use loom_bus::{Bus, Outgoing, SigningKey, TaskMessage, TraceContext, header};
use loom_domain::{AgentId, BeadId, DispatchId};

use crate::support::{Agent, Repo, WAIT, embedded, final_result, nats, nats_cleanup, results, task};

/// A fence that records which dispatches asked to start.
#[derive(Debug, Default)]
struct Recorder {
    started: Mutex<Vec<DispatchId>>,
}

#[async_trait::async_trait]
impl loom_agent::Fence for Recorder {
    async fn check(&self) -> Result<(), String> {
        Ok(())
    }

    async fn start(&self, _: &BeadId, dispatch: &DispatchId, _: &AgentId) -> Result<StartAnswer, String> {
        self.started.lock().unwrap().push(dispatch.clone());
        Ok(StartAnswer::Run)
    }

    async fn is_current(&self, _: &BeadId, _: &DispatchId) -> Result<bool, String> {
        Ok(true)
    }

    async fn hand_back(&self, _: &BeadId, _: &DispatchId, _: &AgentId, _: &str) -> Result<bool, String> {
        Ok(false)
    }
}

fn evil(bead: &str) -> TaskMessage {
    task("demo", bead, "shell", &[("command", "echo pwned > pwned.txt")])
}

async fn send(bus: &Bus, out: Outgoing) {
    bus.publish(out).await.unwrap();
}

async fn forged_tasks_are_refused(bus: &Bus) {
    let repo = Repo::new();
    let mut sub = results(bus).await;
    let fence = Arc::new(Recorder::default());
    let mut config = repo.config("demo");
    config.fence = Some(fence.clone());
    config.default_executor = ExecutorKind::Noop;
    let agent = Agent::start(config, bus);
    let trace = TraceContext::default();

    let unsigned = evil("demo-1");
    let out = bus.task(&unsigned, &trace).unwrap();
    send(bus, Outgoing::raw(out.subject(), out.msg_id(), out.payload().clone())).await;

    let other_key = evil("demo-2");
    let mut out = bus.task(&other_key, &trace).unwrap();
    SigningKey::generate().sign(&mut out);
    send(bus, out).await;

    let trusted_id = evil("demo-3");
    let mut out = bus.task(&trusted_id, &trace).unwrap();
    SigningKey::generate().sign(&mut out);
    let trusted = bus.config().task_verify_key.as_ref().unwrap().id().to_owned();
    send(bus, out.with_header(header::TASK_KEY, &trusted)).await;

    // A genuine no-op task whose body is swapped for a shell command, signature kept.
    let genuine = task("demo", "demo-4", "noop", &[]);
    let signed = bus.task(&genuine, &trace).unwrap();
    let mut altered = evil("demo-4");
    altered.metadata = genuine.metadata.clone();
    let mut out = Outgoing::raw(signed.subject(), signed.msg_id(), serde_json::to_vec(&altered).unwrap());
    for name in [header::TASK_KEY, header::TASK_SIGNATURE] {
        out = out.with_header(name, signed.headers().get(name).unwrap());
    }
    send(bus, out).await;

    // Two tasks signed as one batch, as the control plane publishes them: the first one's body
    // swapped (its signature and proof kept), the second genuine — it runs on the batch's
    // signature.
    let batched = task("demo", "demo-6", "noop", &[]);
    let good = task("demo", "demo-5", "noop", &[]);
    let mut batch = vec![bus.unsigned_task(&batched, &trace).unwrap(), bus.unsigned_task(&good, &trace).unwrap()];
    bus.sign_tasks(&mut batch).unwrap();
    let mut altered = evil("demo-6");
    altered.metadata = batched.metadata.clone();
    let mut out = Outgoing::raw(batch[0].subject(), batch[0].msg_id(), serde_json::to_vec(&altered).unwrap());
    for name in [header::TASK_KEY, header::TASK_SIGNATURE, header::TASK_PROOF] {
        out = out.with_header(name, batch[0].headers().get(name).unwrap());
    }
    send(bus, out).await;
    send(bus, batch.pop().unwrap()).await;
    let r = final_result(&mut sub).await;
    assert_eq!(r.metadata.dispatch_id, good.metadata.dispatch_id, "only the genuine task produced a result");

    let deadline = tokio::time::Instant::now() + WAIT;
    let letters = loop {
        let letters = bus.read_dlq(1, 100).await.unwrap();
        if letters.len() >= 5 || tokio::time::Instant::now() > deadline {
            break letters;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let got: Vec<(Option<DispatchId>, &str)> =
        letters.iter().map(|l| (l.dispatch_id.clone(), l.reason.as_str())).collect();
    let want = [
        (&unsigned, "task signature missing"),
        (&other_key, "task signature by unknown key"),
        (&trusted_id, "task signature does not match"),
        (&genuine, "task signature does not match"),
        (&batched, "task signature does not match"),
    ];
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((dispatch, reason), (task, prefix)) in got.iter().zip(want) {
        assert_eq!(dispatch.as_ref(), Some(&task.metadata.dispatch_id), "{got:?}");
        assert!(reason.starts_with(prefix), "{reason:?} should start with {prefix:?}");
    }
    assert_eq!(
        *fence.started.lock().unwrap(),
        std::slice::from_ref(&good.metadata.dispatch_id),
        "no refused task reached the fence"
    );
    let pwned = walk(&repo.work_root()).into_iter().filter(|p| p.ends_with("pwned.txt")).collect::<Vec<_>>();
    assert!(pwned.is_empty(), "a refused command ran: {pwned:?}");
    agent.stop().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tasks_are_dead_lettered_and_never_run_on_the_embedded_bus() {
    forged_tasks_are_refused(&embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tasks_are_dead_lettered_and_never_run_on_nats() {
    let bus = nats().await;
    forged_tasks_are_refused(&bus).await;
    nats_cleanup(bus).await;
}
