//! What keeps agents within bounds and puts a person in the loop: token budgets and decisions.
//!
//! **Budgets.** A bead's context or its project's may set `token_budget` (tokens in all, over
//! every attempt: the bead's own, or the whole project's). A task of such a bead carries
//! `token_budget_remaining` (the smaller of what is left of each), computed from the recorded
//! attempts when the task is built; the LLM executor stops before a model call once its attempt
//! spent that much, and reports `llm_budget_spent`, which blocks the bead at once (no retry)
//! with its "token budget spent" error. Concurrent attempts of one project may overshoot the
//! project's budget by what they spend between two task builds.
//!
//! **Decisions.** An `escalate` action ends the attempt with `escalated` and the question in the
//! result's context. The result is applied as a failure that blocks the bead (so no dispatch
//! can take it meanwhile), then a `decision` bead is created in the bead's project
//! (`escalated_from` in its context), the bead is made to wait on it and reopened (a fresh retry
//! budget, no backoff), so it is not ready until a person answers
//! (`POST /beads/{decision}/answer`). Should that fail, the bead stays blocked with its
//! "escalated: …" error, for a person to see. The answer is appended to the waiting bead's
//! `escalation_answer` context entry (the LLM executor gives it to the model) and closes the
//! decision with the answer as its reason, which makes the bead ready again.

use loom_domain::{Bead, BeadId, BeadType, ContextMap, NewBead, ProjectId, Status, limits};
use loom_store::{BeadPatch, Store};

use crate::{Error, Shared};

/// Context key (bead or project): tokens all of its attempts may spend.
pub(crate) const TOKEN_BUDGET: &str = "token_budget";
/// Task context key: the tokens the attempt may spend.
pub(crate) const BUDGET_REMAINING: &str = "token_budget_remaining";
/// Result context key: the attempt stopped because it spent its budget.
pub(crate) const BUDGET_SPENT: &str = "llm_budget_spent";
/// Result context keys of an escalation: the flag and the question.
pub(crate) const ESCALATED: &str = "escalated";
pub(crate) const ESCALATION: &str = "escalation";
/// Context key of a decision bead: the bead that waits on it.
pub(crate) const ESCALATED_FROM: &str = "escalated_from";
/// Context key of an escalating bead: the answers it was given, for its next prompt.
pub(crate) const ANSWERS: &str = "escalation_answer";
/// Longest answer accepted.
pub(crate) const ANSWER_MAX: usize = 16 * 1024;

/// Checks a `token_budget` context entry: a whole number of tokens.
pub(crate) fn check_budget(context: &ContextMap, whose: &str) -> Result<(), Error> {
    match context.get(TOKEN_BUDGET) {
        Some(v) if v.trim().parse::<u64>().is_err() => Err(Error::BadRequest(format!(
            "{whose} context {TOKEN_BUDGET} must be a whole number of tokens, not {v:?}"
        ))),
        _ => Ok(()),
    }
}

fn budget(context: &ContextMap) -> Option<u64> {
    context.get(TOKEN_BUDGET).and_then(|v| v.trim().parse().ok())
}

/// What the next attempt of `bead` may spend: `None` when neither the bead nor its project sets
/// a budget.
pub(crate) async fn remaining(
    store: &dyn Store,
    bead: &BeadId,
    project: &ProjectId,
    context: &ContextMap,
    project_context: &ContextMap,
) -> Result<Option<u64>, loom_store::Error> {
    let (own, shared) = (budget(context), budget(project_context));
    if own.is_none() && shared.is_none() {
        return Ok(None);
    }
    let mut left = u64::MAX;
    if let Some(own) = own {
        let used: u64 = store.list_attempts(bead).await?.iter().map(|a| a.usage.total_tokens()).sum();
        left = left.min(own.saturating_sub(used));
    }
    if let Some(shared) = shared {
        let used = store
            .token_usage(Some(project))
            .await?
            .first()
            .map_or(0, |u| u.prompt_tokens.saturating_add(u.completion_tokens));
        left = left.min(shared.saturating_sub(used));
    }
    Ok(Some(left))
}

/// Puts `remaining` into a task's bead context when a budget applies.
pub(crate) async fn budget_task_context(
    store: &dyn Store,
    bead: &BeadId,
    project: &ProjectId,
    context: &mut ContextMap,
    project_context: &ContextMap,
) -> Result<(), loom_store::Error> {
    if let Some(left) = remaining(store, bead, project, context, project_context).await? {
        context.insert(BUDGET_REMAINING.into(), left.to_string());
    }
    Ok(())
}

/// After an escalating attempt was applied (`bead` as it is now): a decision bead the bead waits
/// on. Returns the decision.
pub(crate) async fn escalate(shared: &Shared, bead: &Bead, question: &str) -> Result<Bead, Error> {
    let question = question.trim();
    let question = if question.is_empty() { "the agent asked for a decision without a question" } else { question };
    let first = question.lines().next().unwrap_or_default();
    let mut title: String = format!("Decision for {}: {first}", bead.id);
    if title.len() > 200 {
        title = format!("{}…", &title[..title.floor_char_boundary(200)]);
    }
    let mut decision = NewBead::new(bead.project_id.clone(), title);
    decision.bead_type = BeadType::Decision;
    decision.priority = bead.priority;
    decision.description = format!(
        "The agent working on {} ({}) asks:\n\n{}\n\nAnswer with `loom decision answer ID --text …` (or POST \
         /api/v1/beads/ID/answer); the bead runs again with the answer.",
        bead.id,
        bead.title,
        loom_domain::truncate_reason(question)
    );
    decision.context.insert(ESCALATED_FROM.into(), bead.id.to_string());
    let created = shared
        .store
        .create_beads(vec![decision])
        .await?
        .pop()
        .ok_or_else(|| Error::Store(loom_store::Error::Internal("create_beads returned no bead".into())))?;
    shared.store.add_dependency(&bead.id, &created.id).await?;
    if bead.status == Status::Blocked {
        // Open again, but not ready while the decision is open.
        shared.store.reopen_bead(&bead.id, None).await?;
    }
    tracing::info!(bead = %bead.id, decision = %created.id, "escalated: a decision bead waits for an answer");
    shared.changed();
    Ok(created)
}

/// A person answers `decision`: the bead that escalated gets the answer in its context, and the
/// decision is closed with it (so the bead is ready again). Refuses a bead that is no decision
/// or is closed already, and an empty or oversized answer.
pub(crate) async fn answer(shared: &Shared, id: &BeadId, text: &str) -> Result<Bead, Error> {
    let text = text.trim();
    if text.is_empty() {
        return Err(Error::BadRequest("text: the answer must not be empty".into()));
    }
    if text.len() > ANSWER_MAX {
        return Err(Error::BadRequest(format!("text: {} bytes; an answer may have at most {ANSWER_MAX}", text.len())));
    }
    let decision = shared.store.get_bead(id).await?;
    if decision.bead_type != BeadType::Decision {
        return Err(Error::BadRequest(format!("bead {id} is a {}, not a decision", decision.bead_type.as_str())));
    }
    if decision.status == Status::Closed {
        return Err(Error::Store(loom_store::Error::Conflict(format!("decision {id} is answered already"))));
    }
    if let Some(waiting) = decision.context.get(ESCALATED_FROM).and_then(|b| BeadId::parse(b).ok()) {
        give_answer(&*shared.store, &waiting, &decision, text).await?;
    }
    let closed = shared.store.close_bead(id, text, None).await?;
    shared.changed();
    shared.relay_wake.notify_one();
    Ok(closed)
}

/// Appends the answer to the waiting bead's `escalation_answer` (keeping the newest within the
/// context value limit), retrying a concurrent change.
async fn give_answer(store: &dyn Store, waiting: &BeadId, decision: &Bead, text: &str) -> Result<(), Error> {
    let entry = format!("Decision {} ({}): {text}", decision.id, decision.title);
    for _ in 0..5 {
        let bead = match store.get_bead(waiting).await {
            Ok(b) => b,
            // The bead is gone: the decision is still closed with its answer.
            Err(loom_store::Error::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let mut context = bead.context.clone();
        let mut all = match context.get(ANSWERS) {
            Some(old) if !old.is_empty() => format!("{old}\n\n{entry}"),
            _ => entry.clone(),
        };
        let max = limits::CONTEXT_VALUE_MAX - 1024;
        if all.len() > max {
            let start = all.len() - max;
            let start = (start..all.len()).find(|i| all.is_char_boundary(*i)).unwrap_or(all.len());
            all = all[start..].to_owned();
        }
        context.insert(ANSWERS.into(), all);
        let patch = BeadPatch { context: Some(context), ..BeadPatch::default() };
        match store.update_bead(waiting, bead.version, patch).await {
            Ok(_) => return Ok(()),
            Err(loom_store::Error::VersionConflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Store(loom_store::Error::Conflict(format!("bead {waiting} kept changing; answer again"))))
}
