//! The result consumer (applies agents' results, then acks) and the dead-letter listener
//! (blocks beads whose task exhausted its deliveries).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use loom_bus::{ConsumeOptions, Received, ResultKind, ResultMessage, ResultStatus};
use loom_domain::{BeadType, Priority};
use loom_store::{Commit, Discovered, DispatchResult, Outcome, Report, ResultOutcome, TokenUsage};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::dispatcher::RETRY_DELAY;
use crate::{Shared, oversight};

/// Most results applied in one store transaction.
const BATCH: usize = 256;
/// Batches applied at once.
const PARALLEL: usize = 4;

pub(crate) async fn run(shared: Arc<Shared>, shutdown: CancellationToken) {
    loop {
        let sub = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = shared.bus.consume_results(ConsumeOptions { max_in_flight: BATCH * PARALLEL * 2, prefetch: true }) => s,
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
/// by one so that only the bad one is dead-lettered. An unreachable store (or a transient
/// database error) is waited out: the deliveries are kept alive meanwhile, never nak'd, so an
/// outage spends no delivery and dead-letters nothing.
async fn apply_batch(shared: &Shared, batch: Vec<Received<ResultMessage>>) {
    let (progress, finals): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| r.message.kind == ResultKind::Progress);
    for received in progress {
        let started = std::time::Instant::now();
        let span = result_span(&received);
        let dispatch = received.message.metadata.dispatch_id.clone();
        let counted = shared.slots().generation();
        let outcome = until_stored(shared, std::slice::from_ref(&received), || {
            shared.store.extend_lease(&dispatch, Utc::now() + shared.config.lease)
        })
        .instrument(span.clone())
        .await;
        if let Ok(true) = outcome {
            record_steps(shared, &received.message).await;
        }
        settle(shared, received, outcome.map(|_| None), started, counted).instrument(span).await;
    }
    if finals.is_empty() {
        return;
    }
    // Before the write: which read of the slot counts a release may correct (`Slots::release`).
    let counted = shared.slots().generation();
    let results: Vec<DispatchResult> = finals.iter().map(|r| dispatch_result(shared, &r.message)).collect();
    let started = std::time::Instant::now();
    // A span per result, in its bead's trace; the batch's store call runs in the first one's
    // (the only one, usually), linked from the others.
    let spans: Vec<tracing::Span> = finals.iter().map(result_span).collect();
    for span in spans.iter().skip(1) {
        loom_telemetry::propagate::link_spans(span, &spans[0]);
    }
    let batch_span = spans.first().cloned().unwrap_or_else(tracing::Span::none);
    match until_stored(shared, &finals, || shared.store.record_results(&results)).instrument(batch_span).await {
        Ok(outcomes) => {
            metrics::histogram!("loom_result_batch_seconds").record(started.elapsed().as_secs_f64());
            let settled = finals
                .into_iter()
                .zip(outcomes)
                .zip(spans)
                .map(|((r, o), span)| settle(shared, r, Ok(Some(o)), started, counted).instrument(span));
            futures::future::join_all(settled).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, count = finals.len(), "a result batch was refused; applying its results one by one");
            for ((received, result), span) in finals.into_iter().zip(results).zip(spans) {
                let outcome =
                    until_stored(shared, std::slice::from_ref(&received), || shared.store.record_result(&result))
                        .instrument(span.clone())
                        .await;
                settle(shared, received, outcome.map(Some), started, counted).instrument(span).await;
            }
        }
    }
}

/// The consumer span of one result: a child of the agent's span that published it (its
/// `traceparent`); `Span::none()` while trace export is off.
fn result_span(received: &Received<ResultMessage>) -> tracing::Span {
    if !loom_telemetry::propagate::enabled() {
        return tracing::Span::none();
    }
    let m = &received.message;
    let span = tracing::info_span!(
        "result.apply",
        otel.name = "apply loom.results",
        otel.kind = "consumer",
        messaging.system = "nats",
        bead_id = %m.bead_id,
        dispatch_id = %m.metadata.dispatch_id,
        correlation_id = %m.correlation_id,
        kind = ?m.kind,
        outcome = tracing::field::Empty,
        messaging.delivery_count = tracing::field::Empty,
    );
    received.delivery.follow(&span);
    span
}

/// Runs `op` until the store answers with anything but a transient error, backing off up to
/// 5 s and sending in-progress acks for `held` meanwhile. Gives up (with the last transient
/// error, so the deliveries are redelivered) only at shutdown.
async fn until_stored<T, F, Fut>(
    shared: &Shared,
    held: &[Received<ResultMessage>],
    mut op: F,
) -> Result<T, loom_store::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, loom_store::Error>>,
{
    let mut delay = Duration::from_millis(100);
    let mut keep_alive = tokio::time::interval_at(tokio::time::Instant::now(), shared.bus.progress_interval());
    loop {
        match op().await {
            Err(e) if e.is_transient() && !shared.shutdown.is_cancelled() => {
                tracing::warn!(error = %e, count = held.len(), "store unavailable; retrying the results while keeping them");
                metrics::counter!("loom_results_waited_total").increment(held.len() as u64);
                let pause = tokio::time::sleep(delay);
                tokio::pin!(pause);
                loop {
                    tokio::select! {
                        _ = &mut pause => break,
                        _ = keep_alive.tick() => {
                            futures::future::join_all(held.iter().map(|r| r.delivery.in_progress())).await;
                        }
                        _ = shared.shutdown.cancelled() => break,
                    }
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            other => return other,
        }
    }
}

fn dispatch_result(shared: &Shared, msg: &ResultMessage) -> DispatchResult {
    let success = msg.kind == ResultKind::Completed && msg.result.status == ResultStatus::Success;
    let outcome = if success {
        Outcome::Success
    } else {
        let error = if msg.result.error.is_empty() {
            "the agent reported a failure".to_owned()
        } else {
            msg.result.error.clone()
        };
        Outcome::Failure { error }
    };
    // An attempt that spent its token budget is not retried: the bead is blocked at once. So is
    // an escalation, until its decision bead exists and the bead waits on it (`escalate`).
    let flag = |key: &str| msg.result.context.get(key).is_some_and(|v| v == "true");
    let budget_spent = !success && (flag(oversight::BUDGET_SPENT) || flag(oversight::ESCALATED));
    DispatchResult {
        bead_id: msg.bead_id.clone(),
        dispatch_id: msg.metadata.dispatch_id.clone(),
        agent_id: msg.agent_id.to_string(),
        outcome,
        report: report(&msg.result),
        now: Utc::now(),
        max_attempts: if budget_spent { 0 } else { shared.config.max_attempts },
        retry_backoff: shared.config.retry_backoff,
    }
}

/// What the result reports besides its outcome, as the store keeps it.
fn report(r: &loom_bus::ResultData) -> Report {
    Report {
        output: r.output.clone(),
        commits: r.commits.iter().map(|sha| Commit { sha: sha.clone(), branch: r.branch.clone() }).collect(),
        artifacts: r.artifacts.clone(),
        duration_ms: r.duration,
        discovered: r.context.get(CREATED_BEADS).map(|list| discovered(list)).unwrap_or_default(),
        usage: usage(&r.context),
        conversation: conversation(&r.context),
    }
}

/// The tokens, model, provider and cost the LLM executor reports (`llm_*` context entries);
/// zero for other executors.
fn usage(context: &loom_domain::ContextMap) -> TokenUsage {
    let number = |key: &str| context.get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let text = |key: &str| context.get(key).cloned().unwrap_or_default();
    let cost = context.get("llm_cost_usd").and_then(|v| v.parse::<f64>().ok()).filter(|c| c.is_finite() && *c >= 0.0);
    TokenUsage {
        prompt_tokens: number("llm_prompt_tokens"),
        completion_tokens: number("llm_completion_tokens"),
        model: text("llm_model"),
        provider: text("llm_provider"),
        cost_usd: cost.unwrap_or(0.0),
    }
}

/// The result context entry where the LLM executor keeps the attempt's conversation: a JSON
/// array of messages, already bounded and redacted. Anything else is not kept.
const CONVERSATION: &str = "llm_conversation";

fn conversation(context: &loom_domain::ContextMap) -> String {
    match context.get(CONVERSATION) {
        Some(text) if serde_json::from_str::<Vec<serde_json::Value>>(text).is_ok() => text.clone(),
        _ => String::new(),
    }
}

/// The result context entry where the LLM executor lists the beads its `create_bead` actions
/// asked for: a JSON array of `{"title", "description", "priority", "type"}`.
const CREATED_BEADS: &str = "created_beads";

/// The follow-up beads a result asks for; an entry that is no valid bead is left out (the rest
/// of the result still applies).
fn discovered(list: &str) -> Vec<Discovered> {
    #[derive(serde::Deserialize)]
    struct Asked {
        title: String,
        #[serde(default)]
        description: Option<String>,
        #[serde(default)]
        priority: Option<i64>,
        #[serde(rename = "type", default)]
        bead_type: Option<String>,
    }
    let asked: Vec<serde_json::Value> = serde_json::from_str(list).unwrap_or_default();
    asked
        .into_iter()
        .filter_map(|v| {
            let a: Asked = serde_json::from_value(v).ok()?;
            let priority = a.priority.map_or(Ok(Priority::DEFAULT), Priority::try_from).ok()?;
            let bead_type = a.bead_type.as_deref().map_or(Ok(BeadType::Task), str::parse).ok()?;
            Some(Discovered { title: a.title, description: a.description.unwrap_or_default(), priority, bead_type })
        })
        .collect()
}

/// Acks an applied (or stale) result, naks one the store could not take now, and dead-letters
/// one the store refuses. `counted` is the slot counts' generation taken before the write.
async fn settle(
    shared: &Shared,
    received: Received<ResultMessage>,
    outcome: Result<Option<ResultOutcome>, loom_store::Error>,
    started: std::time::Instant,
    counted: u64,
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
    let handler = if label == "progress" { "progress" } else { "results" };
    metrics::counter!("loom_bus_messages_total", "handler" => handler, "outcome" => label).increment(1);
    metrics::histogram!("loom_bus_handler_duration_seconds", "handler" => handler)
        .record(started.elapsed().as_secs_f64());
    tracing::Span::current().record("outcome", label);
    if let Ok(Some(ResultOutcome::Closed(_))) = &outcome {
        shared.traces.forget(msg.bead_id.as_str());
    }
    match outcome {
        Ok(applied) => {
            if let Some(o) = &applied {
                if *o != ResultOutcome::Ignored {
                    shared.slots().release(&msg.project_id, 1, counted);
                }
                if *o == ResultOutcome::Ignored {
                    tracing::debug!(bead = %msg.bead_id, dispatch = %msg.metadata.dispatch_id, "stale or repeated result ignored");
                } else {
                    shared.changed();
                    record_commands(shared, &msg).await;
                    escalate(shared, &msg, o).await;
                }
            }
            // Not waiting for the server's confirmation: an applied result is applied once, so
            // the redelivery a lost ack brings is ignored (a round trip per result saved).
            if let Err(e) = delivery.ack_nowait().await {
                tracing::warn!(error = %e, "ack of an applied result failed; its redelivery will be ignored");
            }
        }
        Err(e) if e.is_transient() => {
            // Only at shutdown: leave it unsettled, so it is redelivered (to the next leader).
            tracing::warn!(error = %e, "store unavailable at shutdown; the result will be redelivered");
            drop(delivery);
        }
        Err(e) => {
            tracing::error!(error = %e, bead = %msg.bead_id, "result refused by the store; dead-lettering it");
            let _ = delivery.term_to_dlq(&format!("result refused by the store: {e}")).await;
        }
    }
}

/// An applied escalation (`escalate` ended the attempt): the bead waits on a new decision bead.
/// A failure to create it is logged; the bead is then retried like any failed attempt.
async fn escalate(shared: &Shared, msg: &ResultMessage, outcome: &ResultOutcome) {
    let (ResultOutcome::Retrying(bead) | ResultOutcome::Blocked(bead)) = outcome else { return };
    let context = &msg.result.context;
    if context.get(oversight::ESCALATED).is_none_or(|v| v != "true") {
        return;
    }
    let question = context
        .get(oversight::ESCALATION)
        .cloned()
        .unwrap_or_else(|| msg.result.error.strip_prefix("escalated: ").unwrap_or(&msg.result.error).to_owned());
    if let Err(e) = oversight::escalate(shared, bead, &question).await {
        tracing::error!(bead = %bead.id, error = %e, "cannot create the decision bead of an escalation; the bead is retried");
    }
}

/// The result context entry where the agent lists the commands it ran for the task: a JSON
/// array of `{"kind", "command", "exit_code", "timed_out", "duration_ms", "started_at",
/// "sandbox"}` (see `loom-agent`'s `executor/runner.rs`).
const COMMANDS: &str = "commands";

/// Records an `agent.command` event per command an applied result lists: the audit of what
/// agents ran, visible through `GET /events`. Only for a result that applied (a repeated or
/// stale one adds none); best effort, like the agents' online/offline events — the agent's
/// `audit` log line is the other record.
async fn record_commands(shared: &Shared, msg: &ResultMessage) {
    let Some(list) = msg.result.context.get(COMMANDS) else { return };
    let commands: Vec<serde_json::Value> = serde_json::from_str(list).unwrap_or_default();
    for c in commands.into_iter().filter(serde_json::Value::is_object) {
        let exit = match (c["timed_out"].as_bool(), c["exit_code"].as_i64()) {
            (Some(true), _) => "killed at its timeout".to_owned(),
            (_, Some(code)) => format!("exit {code}"),
            _ => "killed by a signal".to_owned(),
        };
        let description = format!(
            "agent {} ran a {} command for bead {} ({exit}, {} ms)",
            msg.agent_id,
            c["kind"].as_str().unwrap_or("shell"),
            msg.bead_id,
            c["duration_ms"].as_u64().unwrap_or(0)
        );
        let mut data = c;
        data["agent"] = msg.agent_id.as_str().into();
        data["bead"] = msg.bead_id.as_str().into();
        data["dispatch"] = msg.metadata.dispatch_id.as_str().into();
        data["attempt"] = msg.metadata.attempt.into();
        let event = loom_store::NewEvent {
            kind: loom_domain::EventKind::AgentCommand,
            source: "agent".into(),
            project_id: Some(msg.project_id.clone()),
            entity_id: msg.bead_id.to_string(),
            action: "command".into(),
            description,
            data,
            correlation_id: Some(msg.correlation_id.clone()).filter(|c| !c.is_empty()),
        };
        if let Err(e) = shared.store.append_event(event).await {
            tracing::warn!(bead = %msg.bead_id, error = %e, "cannot record an agent.command event");
        }
    }
}

/// The progress context entry where the LLM executor puts its latest steps (when they changed):
/// `{"turn", "tokens", "steps": [{"step", "action", "ok", "detail"}]}`, redacted by the agent.
const STEPS: &str = "llm_steps";

/// An `agent.progress` event with the latest steps a current dispatch's progress carries, so
/// `loom events --follow` and the SSE stream show an agent at work; best effort.
async fn record_steps(shared: &Shared, msg: &ResultMessage) {
    let Some(steps) = msg.result.context.get(STEPS) else { return };
    let Ok(mut data) = serde_json::from_str::<serde_json::Value>(steps) else { return };
    if !data.is_object() {
        return;
    }
    let last = data["steps"].as_array().and_then(|s| s.last()).cloned().unwrap_or_default();
    let description = format!(
        "agent {} on bead {}: turn {}, {} tokens, last step {} {}",
        msg.agent_id,
        msg.bead_id,
        data["turn"].as_u64().unwrap_or(0),
        data["tokens"].as_u64().unwrap_or(0),
        last["action"].as_str().unwrap_or("-"),
        last["detail"].as_str().unwrap_or("")
    );
    data["agent"] = msg.agent_id.as_str().into();
    data["bead"] = msg.bead_id.as_str().into();
    data["dispatch"] = msg.metadata.dispatch_id.as_str().into();
    let event = loom_store::NewEvent {
        kind: loom_domain::EventKind::AgentProgress,
        source: "agent".into(),
        project_id: Some(msg.project_id.clone()),
        entity_id: msg.bead_id.to_string(),
        action: "progress".into(),
        description: loom_domain::truncate_reason(&description),
        data,
        correlation_id: Some(msg.correlation_id.clone()).filter(|c| !c.is_empty()),
    };
    match shared.store.append_event(event).await {
        Ok(_) => {
            shared.events_wake.send_replace(());
        }
        Err(e) => tracing::warn!(bead = %msg.bead_id, error = %e, "cannot record an agent.progress event"),
    }
}

/// The store position of the dead-letter reconciler: every DLQ entry at or below it was handled.
const DLQ_POSITION: &str = "dead-letters";

/// Blocks the beads of dead-lettered tasks. The DLQ stream is the record: on start, on each
/// notice that a message was moved there, and every `DLQ_POLL`, the leader reads it from the
/// saved position, so a letter whose bead could not be blocked at the time (the store was
/// down, the control plane stopped) is handled later — never forgotten.
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
        if shared.is_leader()
            && let Err(e) = reconcile_dead_letters(&shared).await
        {
            tracing::warn!(error = %e, "cannot read the dead letters yet; retrying");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            l = letters.next() => if l.is_none() { return },
            _ = tokio::time::sleep(DLQ_POLL) => {}
        }
    }
}

const DLQ_POLL: Duration = Duration::from_secs(5);

/// Handles the DLQ entries after the saved position; returns how many.
async fn reconcile_dead_letters(shared: &Shared) -> Result<usize, crate::Error> {
    let mut handled = 0;
    loop {
        let after = shared.store.position(DLQ_POSITION).await?;
        let letters = shared.bus.read_dlq(u64::try_from(after).unwrap_or(0) + 1, 256).await?;
        let Some(last) = letters.last().map(|l| l.dlq_sequence) else { return Ok(handled) };
        for letter in &letters {
            block_dead_letter(shared, letter).await?;
        }
        shared.store.save_position(DLQ_POSITION, i64::try_from(last).unwrap_or(i64::MAX)).await?;
        handled += letters.len();
    }
}

/// Blocks the bead of a dead-lettered task, if its dispatch is still current. Only tasks: a
/// result or progress message never blocks a bead (a result the store refuses is kept in the
/// DLQ for an operator; its bead's lease or redelivery decides what happens to the bead).
async fn block_dead_letter(shared: &Shared, letter: &loom_bus::DeadLetter) -> Result<(), crate::Error> {
    if letter.stream != shared.bus.subjects().names().stream(loom_bus::StreamKind::Tasks) {
        return Ok(());
    }
    let Some(dispatch) = &letter.dispatch_id else { return Ok(()) };
    let reason = format!("task dead-lettered after {} deliveries: {}", letter.deliveries, letter.reason);
    let started = std::time::Instant::now();
    let outcome = match shared.store.block_dispatch(dispatch, &reason).await? {
        Some(bead) => {
            tracing::warn!(bead = %bead.id, %reason, "bead blocked");
            shared.changed();
            "blocked"
        }
        None => "stale",
    };
    metrics::counter!("loom_bus_messages_total", "handler" => "dead_letters", "outcome" => outcome).increment(1);
    metrics::histogram!("loom_bus_handler_duration_seconds", "handler" => "dead_letters")
        .record(started.elapsed().as_secs_f64());
    Ok(())
}
