//! Projects on SQLite: create, read, update (never the bead prefix) and delete with their beads.

use loom_domain::{EventKind, NewProject, Project, ProjectId};
use sqlx::SqlitePool;
use sqlx::types::Json;

use super::records::insert_events;
use super::rows::{PROJECT_COLS, micros, now, project_from_row};
use super::{SqliteStore, Tx};
use crate::{Error, NewEvent, Result};

pub(super) async fn create(store: &SqliteStore, p: NewProject) -> Result<Project> {
    p.validate()?;
    let mut tx = store.write().await?;
    let now = micros(now());
    let row = sqlx::query(&format!(
        "INSERT INTO projects ({PROJECT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
         ON CONFLICT (id) DO NOTHING RETURNING {PROJECT_COLS}"
    ))
    .bind(p.id.as_str())
    .bind(&p.name)
    .bind(&p.git_repo)
    .bind(&p.branch)
    .bind(p.bead_prefix.as_str())
    .bind(Json(&p.context))
    .bind(p.git_strategy.as_str())
    .bind(p.status.as_str())
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| Error::AlreadyExists { entity: "project", id: p.id.to_string() })?;
    let project = project_from_row(&row)?;
    insert_events(&mut tx, &[NewEvent::for_project(&project, EventKind::ProjectCreated)]).await?;
    tx.commit().await?;
    Ok(project)
}

pub(super) async fn get(pool: &SqlitePool, id: &ProjectId) -> Result<Project> {
    let row = sqlx::query(&format!("SELECT {PROJECT_COLS} FROM projects WHERE id = ?1"))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found("project", id))?;
    project_from_row(&row)
}

pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<Project>> {
    let rows = sqlx::query(&format!("SELECT {PROJECT_COLS} FROM projects ORDER BY id")).fetch_all(pool).await?;
    rows.iter().map(project_from_row).collect()
}

/// Loads a project inside a write transaction, or `NotFound`.
async fn load(tx: &mut Tx, id: &ProjectId) -> Result<Project> {
    let row = sqlx::query(&format!("SELECT {PROJECT_COLS} FROM projects WHERE id = ?1"))
        .bind(id.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::not_found("project", id))?;
    project_from_row(&row)
}

pub(super) async fn update(store: &SqliteStore, p: NewProject) -> Result<Project> {
    p.validate()?;
    let mut tx = store.write().await?;
    let current = load(&mut tx, &p.id).await?;
    if current.bead_prefix != p.bead_prefix {
        return Err(Error::Conflict(format!(
            "project {}: the bead prefix is {:?} and cannot be changed (bead ids keep it)",
            p.id,
            current.bead_prefix.as_str()
        )));
    }
    let row = sqlx::query(&format!(
        "UPDATE projects SET name = ?2, git_repo = ?3, branch = ?4, context = ?5, git_strategy = ?6,
         status = ?7, updated_at = ?8 WHERE id = ?1 RETURNING {PROJECT_COLS}"
    ))
    .bind(p.id.as_str())
    .bind(&p.name)
    .bind(&p.git_repo)
    .bind(&p.branch)
    .bind(Json(&p.context))
    .bind(p.git_strategy.as_str())
    .bind(p.status.as_str())
    .bind(micros(now()))
    .fetch_one(&mut *tx)
    .await?;
    let project = project_from_row(&row)?;
    insert_events(&mut tx, &[NewEvent::for_project(&project, EventKind::ProjectUpdated)]).await?;
    tx.commit().await?;
    Ok(project)
}

pub(super) async fn delete(store: &SqliteStore, id: &ProjectId) -> Result<()> {
    let mut tx = store.write().await?;
    let project = load(&mut tx, id).await?;
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM beads WHERE project_id = ?1 AND status = 'in_progress'")
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
    if running > 0 {
        return Err(Error::Conflict(format!(
            "project {id} has {running} beads in progress; close or wait for them first"
        )));
    }
    let edges: Vec<(String, String, String)> = sqlx::query_as(&crate::transitions::dependents_query('?'))
        .bind(id.as_str())
        .bind(crate::transitions::DEPENDENTS_SHOWN)
        .fetch_all(&mut *tx)
        .await?;
    if let Some(refused) = crate::transitions::refuse_delete(id, &edges) {
        return Err(refused);
    }
    // The foreign keys cascade to the project's beads and their dependency edges.
    sqlx::query("DELETE FROM projects WHERE id = ?1").bind(id.as_str()).execute(&mut *tx).await?;
    insert_events(&mut tx, &[NewEvent::for_project(&project, EventKind::ProjectDeleted)]).await?;
    tx.commit().await?;
    Ok(())
}
