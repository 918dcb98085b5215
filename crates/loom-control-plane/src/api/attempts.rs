//! `GET /beads/{id}/attempts` and the latest result `GET /beads/{id}` shows: what each finished
//! dispatch of a bead reported.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use loom_api::{AttemptDto, BeadDto, CommitDto};
use loom_domain::BeadId;
use loom_store::Attempt;

use super::parse_id;
use crate::{Error, Shared};

/// `GET /beads/{id}`: the bead with its latest result.
pub(crate) async fn bead(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<BeadDto>, Error> {
    let id = parse_id(BeadId::parse, &id)?;
    let bead = s.store.get_bead(&id).await?;
    let mut dto = BeadDto::from(&bead);
    dto.latest_result = s.store.list_attempts(&id).await?.last().map(dto_of);
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
    }
}
