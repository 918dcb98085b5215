//! `/projects`: create, read, update, delete, pause and resume.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use loom_api::{ProjectDto, ProjectRequest};
use loom_domain::{NewProject, ProjectId, ProjectStatus};

use super::{ApiJson, parse_id};
use crate::{Error, Shared};

pub(crate) async fn list(State(s): State<Arc<Shared>>) -> Result<Json<Vec<ProjectDto>>, Error> {
    Ok(Json(s.store.list_projects().await?.iter().map(ProjectDto::from).collect()))
}

pub(crate) async fn create(
    State(s): State<Arc<Shared>>,
    ApiJson(req): ApiJson<ProjectRequest>,
) -> Result<(StatusCode, Json<ProjectDto>), Error> {
    let id = req.id.as_deref().ok_or_else(|| Error::BadRequest("`id` is required".into()))?;
    let id = parse_id(ProjectId::parse, id)?;
    let new = req.into_domain(id)?;
    crate::oversight::check_budget(&new.context, "the project's")?;
    let project = s.store.create_project(new).await?;
    s.contexts.put(&project);
    s.project_changed();
    Ok((StatusCode::CREATED, Json(ProjectDto::from(&project))))
}

pub(crate) async fn get(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<ProjectDto>, Error> {
    let id = parse_id(ProjectId::parse, &id)?;
    Ok(Json(ProjectDto::from(&s.store.get_project(&id).await?)))
}

pub(crate) async fn update(
    State(s): State<Arc<Shared>>,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ProjectRequest>,
) -> Result<Json<ProjectDto>, Error> {
    let id = parse_id(ProjectId::parse, &id)?;
    if req.id.as_deref().is_some_and(|given| given != id.as_str()) {
        return Err(Error::BadRequest("`id` in the body differs from the path; a project cannot be renamed".into()));
    }
    let current = s.store.get_project(&id).await?;
    let mut project = req.clone().into_domain(id)?;
    crate::oversight::check_budget(&project.context, "the project's")?;
    if req.bead_prefix.is_none() {
        project.bead_prefix = current.bead_prefix;
    }
    let project = s.store.update_project(project).await?;
    s.contexts.put(&project);
    s.project_changed();
    Ok(Json(ProjectDto::from(&project)))
}

pub(crate) async fn delete(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<StatusCode, Error> {
    let id = parse_id(ProjectId::parse, &id)?;
    s.store.delete_project(&id).await?;
    s.project_changed();
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn pause(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<ProjectDto>, Error> {
    set_status(&s, &id, ProjectStatus::Paused).await
}

pub(crate) async fn resume(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<ProjectDto>, Error> {
    set_status(&s, &id, ProjectStatus::Active).await
}

async fn set_status(s: &Shared, id: &str, status: ProjectStatus) -> Result<Json<ProjectDto>, Error> {
    let id = parse_id(ProjectId::parse, id)?;
    let p = s.store.get_project(&id).await?;
    let update = NewProject {
        id: p.id,
        name: p.name,
        git_repo: p.git_repo,
        branch: p.branch,
        bead_prefix: p.bead_prefix,
        context: p.context,
        git_strategy: p.git_strategy,
        status,
    };
    let project = s.store.update_project(update).await?;
    s.project_changed();
    Ok(Json(ProjectDto::from(&project)))
}
