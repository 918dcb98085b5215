//! Attempts on SQLite: what each applied result reported, kept in `bead_attempts` (keyed by
//! dispatch id) in the result's transaction.

use loom_domain::{BeadId, DispatchId, ProjectId};
use sqlx::types::Json;
use sqlx::{Row, SqlitePool};

use super::Tx;
use super::rows::{corrupt, micros};
use crate::{Attempt, Commit, Error, ProjectUsage, Result, TokenUsage};

pub(super) async fn insert(tx: &mut Tx, a: &Attempt) -> Result<()> {
    let created: Vec<&str> = a.created_beads.iter().map(BeadId::as_str).collect();
    sqlx::query(
        "INSERT INTO bead_attempts (dispatch_id, bead_id, attempt, agent_id, succeeded, error, output, commits,
           artifacts, created_beads, duration_ms, started_at, finished_at, prompt_tokens, completion_tokens, model,
           provider, cost_usd, conversation)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
    )
    .bind(a.dispatch_id.as_str())
    .bind(a.bead_id.as_str())
    .bind(i64::from(a.attempt))
    .bind(&a.agent_id)
    .bind(a.succeeded)
    .bind(&a.error)
    .bind(&a.output)
    .bind(Json(&a.commits))
    .bind(Json(&a.artifacts))
    .bind(Json(created))
    .bind(i64::try_from(a.duration_ms).unwrap_or(i64::MAX))
    .bind(a.started_at.map(micros))
    .bind(micros(a.finished_at))
    .bind(tokens(a.usage.prompt_tokens))
    .bind(tokens(a.usage.completion_tokens))
    .bind(&a.usage.model)
    .bind(&a.usage.provider)
    .bind(a.usage.cost_usd)
    .bind(&a.conversation)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A project, its attempts, prompt and completion tokens, cost.
type UsageRow = (String, i64, Option<i64>, Option<i64>, Option<f64>);

/// Per project: attempts, tokens and cost in all, ordered by project.
pub(super) async fn usage(pool: &SqlitePool, project: Option<&ProjectId>) -> Result<Vec<ProjectUsage>> {
    let rows: Vec<UsageRow> = sqlx::query_as(
        "SELECT b.project_id, count(*), sum(a.prompt_tokens), sum(a.completion_tokens), sum(a.cost_usd)
         FROM bead_attempts a JOIN beads b ON b.id = a.bead_id
         WHERE ?1 IS NULL OR b.project_id = ?1 GROUP BY b.project_id ORDER BY b.project_id",
    )
    .bind(project.map(ProjectId::as_str))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(p, n, prompt, completion, cost)| {
            Ok(ProjectUsage {
                project_id: ProjectId::parse(&p).map_err(corrupt)?,
                attempts: u64::try_from(n).unwrap_or_default(),
                prompt_tokens: u64::try_from(prompt.unwrap_or_default()).unwrap_or_default(),
                completion_tokens: u64::try_from(completion.unwrap_or_default()).unwrap_or_default(),
                cost_usd: cost.unwrap_or_default(),
            })
        })
        .collect()
}

pub(super) async fn list(pool: &SqlitePool, bead: &BeadId) -> Result<Vec<Attempt>> {
    let rows = sqlx::query("SELECT * FROM bead_attempts WHERE bead_id = ?1 ORDER BY seq")
        .bind(bead.as_str())
        .fetch_all(pool)
        .await?;
    if rows.is_empty() {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM beads WHERE id = ?1)")
            .bind(bead.as_str())
            .fetch_one(pool)
            .await?;
        if !exists {
            return Err(Error::not_found("bead", bead));
        }
    }
    rows.iter().map(from_row).collect()
}

fn from_row(row: &sqlx::sqlite::SqliteRow) -> Result<Attempt> {
    let time = |us: i64| chrono::DateTime::from_timestamp_micros(us).ok_or_else(|| corrupt(format!("time {us}")));
    let Json(commits): Json<Vec<Commit>> = row.try_get("commits")?;
    let Json(artifacts): Json<Vec<String>> = row.try_get("artifacts")?;
    let Json(created): Json<Vec<String>> = row.try_get("created_beads")?;
    Ok(Attempt {
        bead_id: BeadId::parse(row.try_get("bead_id")?).map_err(corrupt)?,
        dispatch_id: DispatchId::parse(row.try_get("dispatch_id")?).map_err(corrupt)?,
        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).map_err(corrupt)?,
        agent_id: row.try_get("agent_id")?,
        succeeded: row.try_get("succeeded")?,
        error: row.try_get("error")?,
        output: row.try_get("output")?,
        commits,
        artifacts,
        created_beads: created
            .iter()
            .map(|id| BeadId::parse(id))
            .collect::<std::result::Result<_, _>>()
            .map_err(corrupt)?,
        duration_ms: u64::try_from(row.try_get::<i64, _>("duration_ms")?).unwrap_or_default(),
        usage: TokenUsage {
            prompt_tokens: u64::try_from(row.try_get::<i64, _>("prompt_tokens")?).unwrap_or_default(),
            completion_tokens: u64::try_from(row.try_get::<i64, _>("completion_tokens")?).unwrap_or_default(),
            model: row.try_get("model")?,
            provider: row.try_get("provider")?,
            cost_usd: row.try_get("cost_usd")?,
        },
        conversation: row.try_get("conversation")?,
        started_at: row.try_get::<Option<i64>, _>("started_at")?.map(time).transpose()?,
        finished_at: time(row.try_get("finished_at")?)?,
    })
}
