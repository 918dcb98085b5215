//! `GET /beads/{id}/attempts` and the latest result `GET /beads/{id}` shows: what each finished
//! dispatch of a bead reported; `GET /beads/{id}/conversation` (one attempt's messages) and
//! `GET /usage` (tokens and cost per project).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use loom_api::{AttemptDto, BeadDto, CommitDto, ConversationDto, UsageDto};
use loom_domain::{BeadId, ProjectId};
use loom_store::{Attempt, Store};

use super::{ApiQuery, parse_id};
use crate::{Error, Shared};

/// `GET /beads/{id}`: the bead with its latest result.
pub(crate) async fn bead(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let (bead, latest) = s.store.get_bead_view(&id).await?;
    let mut dto = BeadDto::from(&bead);
    dto.latest_result = latest.as_ref().map(dto_of);
    Ok(Json(dto))
}

/// `GET /beads/{id}/attempts`: every finished dispatch, oldest first.
pub(crate) async fn list(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<Vec<AttemptDto>>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    Ok(Json(s.store.list_attempts(&id).await?.iter().map(dto_of).collect()))
}

fn dto_of(a: &Attempt) -> AttemptDto {
    AttemptDto {
        dispatch_id: a.dispatch_id.to_string(),
        attempt: a.attempt,
        agent_id: a.agent_id.clone(),
        status: if a.succeeded { "success" } else { "failure" }.to_owned(),
        error: a.error.clone(),
        output: a.output.clone(),
        commits: a.commits.iter().map(|c| CommitDto { sha: c.sha.clone(), branch: c.branch.clone() }).collect(),
        artifacts: a.artifacts.clone(),
        created_beads: a.created_beads.iter().map(ToString::to_string).collect(),
        duration_ms: a.duration_ms,
        started_at: a.started_at,
        finished_at: a.finished_at,
        prompt_tokens: a.usage.prompt_tokens,
        completion_tokens: a.usage.completion_tokens,
        total_tokens: a.usage.total_tokens(),
        model: a.usage.model.clone(),
        provider: a.usage.provider.clone(),
        cost_usd: a.usage.cost_usd,
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConversationQuery {
    /// The attempt number (1 for the first); the latest when left out.
    attempt: Option<u32>,
}

/// `GET /beads/{id}/conversation?attempt=N`: what the agent and the model said in one attempt.
pub(crate) async fn conversation(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ConversationQuery>,
) -> Result<Json<ConversationDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let attempts = s.store.list_attempts(&id).await?;
    let found = match q.attempt {
        Some(0) => return Err(Error::BadRequest("attempt: attempts are numbered from 1".into())),
        // An attempt number may repeat when a bead was reopened: the latest with it.
        Some(n) => attempts.iter().rev().find(|a| a.attempt == n),
        None => attempts.last(),
    };
    let Some(a) = found else {
        let which = q.attempt.map_or_else(|| "no finished attempt".to_owned(), |n| format!("no attempt {n}"));
        return Err(Error::NotFound(format!("bead {id} has {which}")));
    };
    let messages = if a.conversation.is_empty() {
        Vec::new()
    } else {
        serde_json::from_str(&a.conversation)
            .map_err(|e| Error::Io(format!("the stored conversation of {} does not parse: {e}", a.dispatch_id)))?
    };
    Ok(Json(ConversationDto {
        bead_id: id.to_string(),
        attempt: a.attempt,
        dispatch_id: a.dispatch_id.to_string(),
        messages,
    }))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsageQuery {
    project_id: Option<String>,
}

/// `GET /usage?project_id=`: tokens and cost of the recorded attempts per project.
pub(crate) async fn usage(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<UsageQuery>,
) -> Result<Json<Vec<UsageDto>>, Error> {
    let project = q.project_id.as_deref().map(|p| parse_id(ProjectId::parse, p)).transpose()?;
    Ok(Json(usage_of(&*s.store, project.as_ref()).await?))
}

pub(crate) async fn usage_of(store: &dyn Store, project: Option<&ProjectId>) -> Result<Vec<UsageDto>, Error> {
    Ok(store
        .token_usage(project)
        .await?
        .into_iter()
        .map(|u| UsageDto {
            project_id: u.project_id.to_string(),
            attempts: u.attempts,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens.saturating_add(u.completion_tokens),
            cost_usd: u.cost_usd,
        })
        .collect())
}
