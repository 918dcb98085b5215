//! One task from delivery to ack: wait for a slot, report the start to the fence (which says
//! whether to run it), run the executor while keeping the delivery alive (in-progress acks) and
//! the bead's lease fresh (`task.progress`), keep the result in the journal, publish it until
//! JetStream stores it, and only then ack. A cancel stops the executor and reports a failure;
//! the end of the shutdown grace hands the task back through the fence (budget unspent).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use loom_bus::{
    Delivery, Received, ResultData, ResultKind, ResultMessage, ResultMetadata, ResultStatus, TaskMessage, TraceContext,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{Shared, lock};
use crate::executor::Outcome;
use crate::fence::StartAnswer;

enum Ending {
    Finished(Outcome),
    Cancelled,
    HandedBack,
}

pub(super) async fn handle(shared: Arc<Shared>, received: Received<TaskMessage>) {
    let span = task_span(&received);
    let outcome = handle_one(&shared, received).instrument(span.clone()).await;
    span.record("outcome", outcome);
    shared.bus_message("task", outcome);
}

/// The consumer span of one delivery of a task: a child of the control plane's publish span
/// (the message's `traceparent`), so the bead's trace continues here; a redelivery is a new
/// span of the same trace, linked. `Span::none()` while trace export is off.
fn task_span(received: &Received<TaskMessage>) -> tracing::Span {
    if !loom_telemetry::propagate::enabled() {
        return tracing::Span::none();
    }
    let t = &received.message;
    let span = tracing::info_span!(
        "agent.task",
        otel.name = "process loom.tasks",
        otel.kind = "consumer",
        messaging.system = "nats",
        bead_id = %t.bead_id,
        dispatch_id = %t.metadata.dispatch_id,
        correlation_id = %t.correlation_id,
        attempt = t.metadata.attempt,
        outcome = tracing::field::Empty,
        messaging.delivery_count = tracing::field::Empty,
    );
    received.delivery.follow(&span);
    span
}

/// A child span of the current one for one step of a task (`git.checkout`, `git.push`, …);
/// `Span::none()` while trace export is off.
pub(crate) fn step(name: &'static str) -> tracing::Span {
    if loom_telemetry::propagate::enabled() {
        tracing::info_span!("agent.step", otel.name = name)
    } else {
        tracing::Span::none()
    }
}

/// Handles one `task.assigned`; returns what became of it, a label of
/// `loom_agent_bus_messages_total`: `ran`, `handed_back`, `skipped` (cancelled before it
/// started, or the fence says not to run it), `republished` (finished before), `duplicate` (a
/// redelivery of a task running here) or `not_rerun` (started before the agent stopped).
async fn handle_one(shared: &Arc<Shared>, received: Received<TaskMessage>) -> &'static str {
    let Received { message: task, delivery } = received;
    let dispatch = task.metadata.dispatch_id.clone();
    let _permit = tokio::select! {
        permit = delivery.keep_alive(shared.slots.clone().acquire_owned()) => match permit {
            Ok(p) => p,
            Err(_) => return handed_back(shared, delivery, &task, "the agent is stopping").await,
        },
        _ = shared.stopping.cancelled() => return handed_back(shared, delivery, &task, "the agent is stopping").await,
    };
    let _slot = super::Slot::take(&shared.config.project);
    let started = Instant::now();
    // Traced: the result continues this agent's span (the bus takes the current one); else the
    // task's own context is passed on as it came.
    let trace = if loom_telemetry::propagate::enabled() { TraceContext::default() } else { delivery.headers().trace() };
    if shared.was_cancelled(&dispatch) {
        tracing::info!(bead = %task.bead_id, %dispatch, "task was cancelled before it started");
        settle_ack(delivery).await;
        return "skipped";
    }
    if let Some(result) = shared.journal.result(&dispatch) {
        // Finished before, but the ack was lost (or the agent restarted): publish the kept
        // result again (deduplicated) and ack; never redo the work.
        tracing::info!(bead = %task.bead_id, %dispatch, "republishing the kept result of a finished dispatch");
        finish(shared, result, &trace, delivery).await;
        return "republished";
    }
    if lock(&shared.running).contains_key(&dispatch) {
        // A redelivery of the task running here: the running one settles the message.
        tracing::warn!(bead = %task.bead_id, %dispatch, "redelivery of a task that is running here; leaving it");
        return "duplicate";
    }
    if shared.journal.ran(&dispatch) {
        // Started here before and never finished (the agent stopped mid-task): it may have done
        // part of its work, so it is not run a second time. The failure retries the bead under
        // a new dispatch.
        let outcome = Outcome::failure("the agent stopped while running this dispatch; it is not run a second time");
        let result = result_message(shared, &task, outcome, started);
        finish(shared, result, &trace, delivery).await;
        return "not_rerun";
    }
    match start(shared, &task, &delivery).await {
        Some(StartAnswer::Run) => {
            // Queue wait: from the control plane building the task to this agent starting it.
            let waited = (Utc::now() - task.timestamp).to_std().unwrap_or_default();
            metrics::histogram!("loom_agent_queue_wait_seconds", "project" => shared.config.project.to_string())
                .record(waited.as_secs_f64());
        }
        Some(answer) => {
            tracing::info!(bead = %task.bead_id, %dispatch, ?answer, "dispatch is not to be run here; skipping it");
            settle_ack(delivery).await;
            return "skipped";
        }
        None => return handed_back(shared, delivery, &task, "the fence cannot be asked").await,
    }
    let outcome = match Box::pin(run(shared, &task, &delivery)).await {
        Ending::HandedBack => return handed_back(shared, delivery, &task, "shutdown grace over").await,
        Ending::Finished(o) if o.hand_back => return handed_back(shared, delivery, &task, &o.error).await,
        Ending::Finished(outcome) => outcome,
        Ending::Cancelled => {
            let mut o = Outcome::failure("cancelled: the control plane sent task.cancelled for this dispatch");
            o.context.insert("cancelled".into(), "true".into());
            o
        }
    };
    let executor_time = outcome.executor_time;
    let label = match (outcome.success, outcome.context.get("cancelled").map(String::as_str)) {
        (true, _) => "success",
        (false, Some("true")) => "cancelled",
        (false, _) => "failure",
    };
    let result = result_message(shared, &task, outcome, started);
    if let Err(err) = shared.journal.save_result(&result) {
        tracing::error!(bead = %task.bead_id, %err, "cannot keep the result in the journal; publishing it anyway");
    }
    finish(shared, result, &trace, delivery).await;
    if let Some(stats) = &shared.stats {
        lock(&stats.overhead).push(started.elapsed().saturating_sub(executor_time));
    }
    let project = shared.config.project.to_string();
    metrics::counter!("loom_agent_tasks_total", "project" => project.clone(), "outcome" => label).increment(1);
    metrics::histogram!("loom_agent_task_duration_seconds", "project" => project)
        .record(started.elapsed().as_secs_f64());
    "ran"
}

/// Hands the task back and says so.
async fn handed_back(shared: &Shared, delivery: Delivery, task: &TaskMessage, why: &str) -> &'static str {
    hand_back(shared, delivery, task, why).await;
    "handed_back"
}

/// Reports the start (journal first, then the fence); `None` when the fence cannot be asked.
async fn start(shared: &Shared, task: &TaskMessage, delivery: &Delivery) -> Option<StartAnswer> {
    let dispatch = &task.metadata.dispatch_id;
    let answer = match shared.config.fence.as_deref() {
        None => StartAnswer::Run,
        Some(fence) => {
            let asked = crate::fence::ask("to start a task", &task.bead_id, || {
                fence.start(&task.bead_id, dispatch, &shared.agent_id)
            });
            let answer = delivery.keep_alive(asked).await.ok();
            shared.ready.fence.set(answer.is_some());
            answer?
        }
    };
    if answer == StartAnswer::Run {
        match shared.journal.begin(dispatch) {
            Ok(true) => {}
            Ok(false) => return Some(StartAnswer::Superseded),
            Err(err) => {
                tracing::error!(bead = %task.bead_id, %err, "cannot write the agent journal");
                return None;
            }
        }
    }
    Some(answer)
}

/// Publishes the final result until JetStream stores it, then acks and forgets the kept copy.
async fn finish(shared: &Shared, result: ResultMessage, trace: &TraceContext, delivery: Delivery) {
    let dispatch = result.metadata.dispatch_id.clone();
    if publish(shared, &result, trace, &delivery).await && settle_ack(delivery).await {
        // Settled: a redelivery is no longer possible, so the copy is not needed.
        shared.journal.settled(&dispatch);
    }
}

/// Runs the executor until it finishes, the task is cancelled or the grace period ends.
async fn run(shared: &Shared, task: &TaskMessage, delivery: &Delivery) -> Ending {
    let dispatch = task.metadata.dispatch_id.clone();
    let cancel = CancellationToken::new();
    lock(&shared.running).insert(dispatch.clone(), (task.bead_id.clone(), cancel.clone()));
    tracing::info!(bead = %task.bead_id, %dispatch, attempt = task.metadata.attempt, "task started");
    let work = async {
        tokio::select! {
            outcome = shared.executors.execute(task, &shared.agent_id) => outcome,
            never = progress(shared, task, &cancel) => match never {},
        }
    };
    let ending = tokio::select! {
        outcome = delivery.keep_alive(work) => Ending::Finished(outcome),
        _ = cancel.cancelled() => Ending::Cancelled,
        _ = shared.hand_back.cancelled() => Ending::HandedBack,
    };
    lock(&shared.running).remove(&dispatch);
    ending
}

/// Publishes `task.progress` every `progress_interval` so the control plane extends the lease,
/// and asks the fence whether the dispatch is still current: one that was closed, redispatched
/// or superseded meanwhile is cancelled even when its `task.cancelled` waits behind busy slots.
async fn progress(shared: &Shared, task: &TaskMessage, cancel: &CancellationToken) -> std::convert::Infallible {
    let every = shared.config.progress_interval;
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut seen = 0;
    loop {
        ticks.tick().await;
        let mut context = loom_domain::ContextMap::new();
        if let Some(steps) = shared.executors.steps.newer(&task.metadata.dispatch_id, &mut seen) {
            // The LLM loop's latest steps, when they changed since the last report.
            context.insert("llm_steps".into(), steps);
        }
        let data = ResultData {
            status: ResultStatus::InProgress,
            output: String::new(),
            error: String::new(),
            commits: Vec::new(),
            branch: String::new(),
            artifacts: Vec::new(),
            duration: started.elapsed().as_millis() as u64,
            context,
        };
        let msg = envelope(shared, task, ResultKind::Progress, data);
        let sent = match shared.bus.result(&msg, &TraceContext::default()) {
            Ok(out) => shared.bus.publish(out).await.map(drop),
            Err(err) => Err(err),
        };
        if let Err(err) = sent {
            tracing::warn!(bead = %task.bead_id, %err, "could not publish task.progress");
        }
        if let Some(fence) = shared.config.fence.as_deref()
            && let Ok(false) = fence.is_current(&task.bead_id, &task.metadata.dispatch_id).await
        {
            tracing::info!(bead = %task.bead_id, "the dispatch is no longer current; stopping the task");
            cancel.cancel();
        }
    }
}

fn result_message(shared: &Shared, task: &TaskMessage, outcome: Outcome, started: Instant) -> ResultMessage {
    let kind = if outcome.success { ResultKind::Completed } else { ResultKind::Failed };
    let data = ResultData {
        status: if outcome.success { ResultStatus::Success } else { ResultStatus::Failure },
        output: outcome.output,
        error: outcome.error,
        commits: outcome.commits,
        branch: outcome.branch,
        artifacts: outcome.artifacts,
        duration: started.elapsed().as_millis() as u64,
        context: outcome.context,
    };
    tracing::info!(bead = %task.bead_id, dispatch = %task.metadata.dispatch_id, ?kind, ms = data.duration, "task finished");
    envelope(shared, task, kind, data)
}

fn envelope(shared: &Shared, task: &TaskMessage, kind: ResultKind, result: ResultData) -> ResultMessage {
    ResultMessage {
        kind,
        project_id: task.project_id.clone(),
        bead_id: task.bead_id.clone(),
        agent_id: shared.agent_id.clone(),
        result,
        correlation_id: task.correlation_id.clone(),
        timestamp: Utc::now(),
        metadata: ResultMetadata { dispatch_id: task.metadata.dispatch_id.clone(), attempt: task.metadata.attempt },
    }
}

/// Publishes the final result until JetStream stores it, keeping the delivery alive meanwhile:
/// an outage of NATS is waited out. False if it gave up (the agent stops; the result stays in
/// the journal and is published when the agent starts again).
async fn publish(shared: &Shared, result: &ResultMessage, trace: &TraceContext, delivery: &Delivery) -> bool {
    let span = if loom_telemetry::propagate::enabled() {
        tracing::info_span!("result.publish", otel.name = "publish loom.results", otel.kind = "producer")
    } else {
        tracing::Span::none()
    };
    publish_in(shared, result, trace, delivery).instrument(span).await
}

async fn publish_in(shared: &Shared, result: &ResultMessage, trace: &TraceContext, delivery: &Delivery) -> bool {
    let outgoing = match shared.bus.result(result, trace) {
        Ok(o) => o,
        Err(err) => {
            tracing::error!(bead = %result.bead_id, %err, "result cannot be encoded");
            return false;
        }
    };
    let mut delay = Duration::from_millis(200);
    for attempt in 1u32.. {
        let sent = tokio::select! {
            sent = delivery.keep_alive(shared.bus.publish(outgoing.clone())) => sent,
            _ = shared.hand_back.cancelled() => return false,
        };
        match sent {
            Ok(_) => return true,
            Err(err) => {
                tracing::warn!(bead = %result.bead_id, attempt, %err, "publishing the result failed; retrying");
                tokio::select! {
                    _ = delivery.keep_alive(tokio::time::sleep(delay)) => {}
                    _ = shared.hand_back.cancelled() => return false,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    false
}

/// Acks; false if the ack was not confirmed.
async fn settle_ack(delivery: Delivery) -> bool {
    match delivery.ack().await {
        Ok(()) => true,
        Err(err) => {
            // The result is published; a redelivery republishes it (deduplicated) and acks.
            tracing::warn!(%err, "ack failed after the result was published");
            false
        }
    }
}

/// Gives the task back: through the fence when there is one (the bead is dispatched again at
/// once under a new id, the attempt not counted, and this delivery is acked), else by a nak.
async fn hand_back(shared: &Shared, delivery: Delivery, task: &TaskMessage, reason: &str) {
    let dispatch = &task.metadata.dispatch_id;
    tracing::info!(bead = %task.bead_id, %dispatch, reason, "handing the task back");
    if let Some(fence) = shared.config.fence.as_deref() {
        match fence.hand_back(&task.bead_id, dispatch, &shared.agent_id, reason).await {
            Ok(_) => {
                // Handed back, or no longer ours to hand back: either way this delivery is done.
                settle_ack(delivery).await;
                return;
            }
            Err(err) => tracing::warn!(bead = %task.bead_id, %err, "the fence cannot take the task back; nak'ing it"),
        }
    }
    if let Err(err) = delivery.nak(None).await {
        tracing::warn!(%err, "nak failed; the task will be redelivered after the ack wait");
    }
}
