//! The result consumer (applies agents' results, then acks) and the dead-letter listener
//! (blocks beads whose task exhausted its deliveries).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use loom_bus::{ConsumeOptions, Received, ResultKind, ResultMessage, ResultStatus};
use loom_store::{DispatchResult, Outcome, ResultOutcome};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::Shared;
use crate::dispatcher::RETRY_DELAY;

/// Results applied at once (each is one store transaction).
const PARALLEL: usize = 32;

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let sub = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = shared.bus.consume_results(ConsumeOptions { max_in_flight: PARALLEL * 4 }) => s,
        };
        let mut sub = match sub {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot bind the result consumer; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        let permits = Arc::new(Semaphore::new(PARALLEL));
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = sub.next() => r,
            };
            let Some(received) = received else { break };
            let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
            let shared = shared.clone();
            tokio::spawn(async move {
                apply(&shared, received).await;
                drop(permit);
            });
        }
        tracing::warn!("result subscription ended; binding again");
    }
}

async fn apply(shared: &Shared, received: Received<ResultMessage>) {
    let Received { message: msg, delivery } = received;
    let outcome = match msg.kind {
        ResultKind::Progress => {
            let until = Utc::now() + shared.config.lease;
            shared.store.extend_lease(&msg.metadata.dispatch_id, until).await.map(|_| None)
        }
        ResultKind::Completed | ResultKind::Failed => {
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
            let result = DispatchResult {
                bead_id: msg.bead_id.clone(),
                dispatch_id: msg.metadata.dispatch_id.clone(),
                agent_id: msg.agent_id.to_string(),
                outcome,
                now: Utc::now(),
                max_attempts: shared.config.max_attempts,
                retry_backoff: shared.config.retry_backoff,
            };
            shared.store.record_result(&result).await.map(Some)
        }
    };
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
