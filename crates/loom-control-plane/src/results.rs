//! The result consumer (applies agents' results, then acks) and the dead-letter listener
//! (blocks beads whose task exhausted its deliveries).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use loom_bus::{ConsumeOptions, Received, ResultKind, ResultMessage, ResultStatus};
use loom_store::{DispatchResult, Outcome, ResultOutcome};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::dispatcher::RETRY_DELAY;

/// Most results applied in one store transaction.
const BATCH: usize = 256;
/// Batches applied at once.
const PARALLEL: usize = 4;

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let sub = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = shared.bus.consume_results(ConsumeOptions { max_in_flight: BATCH * PARALLEL * 2 }) => s,
        };
        let sub = match sub {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot bind the result consumer; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        // A reader hands deliveries over a channel, so batches take what has arrived without
        // cancelling a subscription read half-way.
        let (tx, mut rx) = mpsc::channel(BATCH * PARALLEL);
        let reader = tokio::spawn(read(sub, tx, shutdown.clone()));
        let permits = Arc::new(Semaphore::new(PARALLEL));
        while let Some(first) = rx.recv().await {
            let mut batch = Vec::with_capacity(BATCH);
            batch.push(first);
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
            let shared = shared.clone();
            tokio::spawn(async move {
                apply_batch(&shared, batch).await;
                drop(permit);
            });
        }
        let _ = reader.await;
        if shutdown.is_cancelled() {
            return;
        }
        tracing::warn!("result subscription ended; binding again");
    }
}

async fn read(
    mut sub: loom_bus::Subscription<ResultMessage>,
    tx: mpsc::Sender<Received<ResultMessage>>,
    shutdown: CancellationToken,
) {
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sub.next() => r,
        };
        let Some(received) = received else { return };
        if tx.send(received).await.is_err() {
            return;
        }
    }
}

/// Applies progress reports one by one and the final results of `batch` in one transaction,
/// then settles every delivery. If the batch is refused as a whole, its results are applied one
/// by one so that only the bad one is dead-lettered.
async fn apply_batch(shared: &Shared, batch: Vec<Received<ResultMessage>>) {
    let (progress, finals): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| r.message.kind == ResultKind::Progress);
    for received in progress {
        let until = Utc::now() + shared.config.lease;
        let outcome = shared.store.extend_lease(&received.message.metadata.dispatch_id, until).await.map(|_| None);
        settle(shared, received, outcome).await;
    }
    if finals.is_empty() {
        return;
    }
    let results: Vec<DispatchResult> = finals.iter().map(|r| dispatch_result(shared, &r.message)).collect();
    let started = std::time::Instant::now();
    match shared.store.record_results(&results).await {
        Ok(outcomes) => {
            metrics::histogram!("loom_result_batch_seconds").record(started.elapsed().as_secs_f64());
            let settled = finals.into_iter().zip(outcomes).map(|(r, o)| settle(shared, r, Ok(Some(o))));
            futures::future::join_all(settled).await;
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, count = finals.len(), "store unavailable; the results will be redelivered");
            metrics::counter!("loom_results_total", "outcome" => "error").increment(finals.len() as u64);
            let naks = finals.into_iter().map(|r| r.delivery.nak(Some(Duration::from_secs(1))));
            futures::future::join_all(naks).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, count = finals.len(), "a result batch was refused; applying its results one by one");
            for (received, result) in finals.into_iter().zip(results) {
                let outcome = shared.store.record_result(&result).await.map(Some);
                settle(shared, received, outcome).await;
            }
        }
    }
}

fn dispatch_result(shared: &Shared, msg: &ResultMessage) -> DispatchResult {
    let success = msg.kind == ResultKind::Completed && msg.result.status == ResultStatus::Success;
    let outcome = if success {
        Outcome::Success { output: msg.result.output.clone() }
    } else {
        let error = if msg.result.error.is_empty() {
            "the agent reported a failure".to_owned()
        } else {
            msg.result.error.clone()
        };
        Outcome::Failure { error }
    };
    DispatchResult {
        bead_id: msg.bead_id.clone(),
        dispatch_id: msg.metadata.dispatch_id.clone(),
        agent_id: msg.agent_id.to_string(),
        outcome,
        now: Utc::now(),
        max_attempts: shared.config.max_attempts,
        retry_backoff: shared.config.retry_backoff,
    }
}

/// Acks an applied (or stale) result, naks one the store could not take now, and dead-letters
/// one the store refuses.
async fn settle(
    shared: &Shared,
    received: Received<ResultMessage>,
    outcome: Result<Option<ResultOutcome>, loom_store::Error>,
) {
    let Received { message: msg, delivery } = received;
    let label = match &outcome {
        Ok(Some(ResultOutcome::Closed(_))) => "closed",
        Ok(Some(ResultOutcome::Retrying(_))) => "retrying",
        Ok(Some(ResultOutcome::Blocked(_))) => "blocked",
        Ok(Some(ResultOutcome::Ignored)) => "ignored",
        Ok(None) => "progress",
        Err(_) => "error",
    };
    metrics::counter!("loom_results_total", "outcome" => label).increment(1);
    match outcome {
        Ok(applied) => {
            if let Some(o) = &applied {
                if *o == ResultOutcome::Ignored {
                    tracing::debug!(bead = %msg.bead_id, dispatch = %msg.metadata.dispatch_id, "stale or repeated result ignored");
                } else {
                    shared.changed();
                }
            }
            if let Err(e) = delivery.ack().await {
                tracing::warn!(error = %e, "ack of an applied result failed; its redelivery will be ignored");
            }
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "store unavailable; the result will be redelivered");
            let _ = delivery.nak(Some(Duration::from_secs(1))).await;
        }
        Err(e) => {
            tracing::error!(error = %e, bead = %msg.bead_id, "result refused by the store; dead-lettering it");
            let _ = delivery.term_to_dlq(&format!("result refused by the store: {e}")).await;
        }
    }
}

pub(crate) async fn run_dead_letters(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut letters = loop {
        match shared.bus.dead_letters().await {
            Ok(l) => break l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch dead letters; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_DELAY) => {}
                }
            }
        }
    };
    loop {
        let letter = tokio::select! {
            _ = shutdown.cancelled() => return,
            l = letters.next() => l,
        };
        let Some(letter) = letter else { return };
        let Some(dispatch) = &letter.dispatch_id else { continue };
        let reason = format!("task dead-lettered after {} deliveries: {}", letter.deliveries, letter.reason);
        match shared.store.block_dispatch(dispatch, &reason).await {
            Ok(Some(bead)) => {
                tracing::warn!(bead = %bead.id, %reason, "bead blocked");
                shared.changed();
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot block a dead-lettered bead"),
        }
    }
}
