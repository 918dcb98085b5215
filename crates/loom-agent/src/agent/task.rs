//! One task from delivery to ack: wait for a slot, run the executor while keeping the delivery
//! alive (in-progress acks) and the bead's lease fresh (`task.progress`), publish the result,
//! and only then ack. A cancel stops the executor and reports a failure; the end of the
//! shutdown grace hands the task back (nak) without a result.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use loom_bus::{
    Delivery, Received, ResultData, ResultKind, ResultMessage, ResultMetadata, ResultStatus, TaskMessage, TraceContext,
};
use tokio_util::sync::CancellationToken;

use super::{Shared, lock, remember};
use crate::executor::Outcome;

const PUBLISH_ATTEMPTS: u32 = 5;

enum Ending {
    Finished(Outcome),
    Cancelled,
    HandedBack,
}

pub(super) async fn handle(shared: Arc<Shared>, received: Received<TaskMessage>) {
    let Received { message: task, delivery } = received;
    let dispatch = task.metadata.dispatch_id.clone();
    let _permit = tokio::select! {
        permit = delivery.keep_alive(shared.slots.clone().acquire_owned()) => match permit {
            Ok(p) => p,
            Err(_) => return hand_back(delivery, &task).await,
        },
        _ = shared.stopping.cancelled() => return hand_back(delivery, &task).await,
    };
    let started = Instant::now();
    let trace = delivery.headers().trace();
    if shared.was_cancelled(&dispatch) {
        tracing::info!(bead = %task.bead_id, %dispatch, "task was cancelled before it started");
        settle_ack(delivery).await;
        return;
    }
    let earlier = lock(&shared.published).iter().find(|r| r.metadata.dispatch_id == dispatch).cloned();
    if let Some(result) = earlier {
        // Published before but the ack was lost: publish again (deduplicated) and ack; never
        // redo the work.
        if publish(&shared, &result, &trace, &delivery).await && settle_ack(delivery).await {
            lock(&shared.published).retain(|r| r.metadata.dispatch_id != dispatch);
        }
        return;
    }
    if !crate::fence::still_current(shared.config.fence.as_deref(), &task.bead_id, &dispatch).await {
        // The bead was closed or dispatched again: this delivery is stale, so do not run it.
        tracing::info!(bead = %task.bead_id, %dispatch, "dispatch is no longer current; skipping the task");
        settle_ack(delivery).await;
        return;
    }
    let ending = run(&shared, &task, &delivery).await;
    let outcome = match ending {
        Ending::HandedBack => return hand_back(delivery, &task).await,
        Ending::Finished(outcome) => outcome,
        Ending::Cancelled => {
            let mut o = Outcome::failure("cancelled: the control plane sent task.cancelled for this dispatch");
            o.context.insert("cancelled".into(), "true".into());
            o
        }
    };
    let executor_time = outcome.executor_time;
    let result = result_message(&shared, &task, outcome, started);
    remember(&shared.published, result.clone());
    if publish(&shared, &result, &trace, &delivery).await && settle_ack(delivery).await {
        // Settled: a redelivery is no longer possible, so the copy is not needed.
        lock(&shared.published).retain(|r| r.metadata.dispatch_id != dispatch);
    }
    if let Some(stats) = &shared.stats {
        lock(&stats.overhead).push(started.elapsed().saturating_sub(executor_time));
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
            outcome = shared.executors.execute(task) => outcome,
            never = progress(shared, task) => match never {},
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

/// Publishes `task.progress` every `progress_interval` so the control plane extends the lease.
async fn progress(shared: &Shared, task: &TaskMessage) -> std::convert::Infallible {
    let every = shared.config.progress_interval;
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        ticks.tick().await;
        let data = ResultData {
            status: ResultStatus::InProgress,
            output: String::new(),
            error: String::new(),
            commits: Vec::new(),
            artifacts: Vec::new(),
            duration: started.elapsed().as_millis() as u64,
            context: Default::default(),
        };
        let msg = envelope(shared, task, ResultKind::Progress, data);
        let sent = match shared.bus.result(&msg, &TraceContext::default()) {
            Ok(out) => shared.bus.publish(out).await.map(drop),
            Err(err) => Err(err),
        };
        if let Err(err) = sent {
            tracing::warn!(bead = %task.bead_id, %err, "could not publish task.progress");
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

/// Publishes the final result until JetStream stores it, keeping the delivery alive meanwhile.
/// False if it could not (the task is then handed back, never acked without a result).
async fn publish(shared: &Shared, result: &ResultMessage, trace: &TraceContext, delivery: &Delivery) -> bool {
    let outgoing = match shared.bus.result(result, trace) {
        Ok(o) => o,
        Err(err) => {
            tracing::error!(bead = %result.bead_id, %err, "result cannot be encoded");
            return false;
        }
    };
    for attempt in 1..=PUBLISH_ATTEMPTS {
        match delivery.keep_alive(shared.bus.publish(outgoing.clone())).await {
            Ok(_) => return true,
            Err(err) => {
                tracing::warn!(bead = %result.bead_id, attempt, %err, "publishing the result failed");
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(attempt))).await;
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

async fn hand_back(delivery: Delivery, task: &TaskMessage) {
    tracing::info!(bead = %task.bead_id, dispatch = %task.metadata.dispatch_id, "handing the task back");
    if let Err(err) = delivery.nak(None).await {
        tracing::warn!(%err, "nak failed; the task will be redelivered after the ack wait");
    }
}
