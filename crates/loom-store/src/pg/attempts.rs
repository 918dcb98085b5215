//! Attempts on PostgreSQL: what each applied result reported, kept in `bead_attempts` (keyed by
//! dispatch id) in the result's transaction.

use std::borrow::Cow;

use loom_domain::{Bead, BeadId, DispatchId, ProjectId};
use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgPool, Row};

use super::Tx;
use super::rows::{BEAD_COLS, bead_from_row};
use crate::{Attempt, Commit, Error, ProjectUsage, Result, TokenUsage};

/// Inserts the attempts of a batch of applied results, in one statement.
pub(super) async fn insert(tx: &mut Tx<'_>, attempts: &[Attempt]) -> Result<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&Attempt) -> String| attempts.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO bead_attempts (dispatch_id, bead_id, attempt, agent_id, succeeded, error, output, commits,
           artifacts, created_beads, duration_ms, started_at, finished_at, prompt_tokens, completion_tokens, model,
           provider, cost_usd, conversation)
         SELECT a, b, c, d, e, f, g, h, i, j, k, l, m, o, p, q, r, s, u FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bool[], $6::text[], $7::text[],
           $8::jsonb[], $9::jsonb[], $10::jsonb[], $11::bigint[], $12::timestamptz[], $13::timestamptz[], $14::bigint[],
           $15::bigint[], $16::text[], $17::text[], $18::float8[], $19::text[])
           WITH ORDINALITY AS t(a, b, c, d, e, f, g, h, i, j, k, l, m, o, p, q, r, s, u, n) ORDER BY n",
    )
    .bind(text(|a| a.dispatch_id.to_string()))
    .bind(text(|a| a.bead_id.to_string()))
    .bind(attempts.iter().map(|a| i64::from(a.attempt)).collect::<Vec<_>>())
    .bind(text(|a| a.agent_id.clone()))
    .bind(attempts.iter().map(|a| a.succeeded).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.error.clone()).collect::<Vec<_>>())
    .bind(text(|a| a.output.clone()))
    .bind(attempts.iter().map(|a| json!(a.commits)).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| json!(a.artifacts)).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| json!(a.created_beads.iter().map(BeadId::as_str).collect::<Vec<_>>())).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| i64::try_from(a.duration_ms).unwrap_or(i64::MAX)).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.started_at).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| a.finished_at).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| tokens(a.usage.prompt_tokens)).collect::<Vec<_>>())
    .bind(attempts.iter().map(|a| tokens(a.usage.completion_tokens)).collect::<Vec<_>>())
    .bind(text(|a| a.usage.model.clone()))
    .bind(text(|a| a.usage.provider.clone()))
    .bind(attempts.iter().map(|a| a.usage.cost_usd).collect::<Vec<_>>())
    .bind(text(|a| a.conversation.clone()))
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
pub(super) async fn usage(pool: &PgPool, project: Option<&ProjectId>) -> Result<Vec<ProjectUsage>> {
    let rows: Vec<UsageRow> = sqlx::query_as(
        "SELECT b.project_id, count(*), sum(a.prompt_tokens)::bigint, sum(a.completion_tokens)::bigint, sum(a.cost_usd)
         FROM bead_attempts a JOIN beads b ON b.id = a.bead_id
         WHERE $1::text IS NULL OR b.project_id = $1 GROUP BY b.project_id ORDER BY b.project_id",
    )
    .bind(project.map(ProjectId::as_str))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(p, n, prompt, completion, cost)| {
            Ok(ProjectUsage {
                project_id: ProjectId::parse(&p).map_err(|e| Error::Internal(e.to_string()))?,
                attempts: u64::try_from(n).unwrap_or_default(),
                prompt_tokens: u64::try_from(prompt.unwrap_or_default()).unwrap_or_default(),
                completion_tokens: u64::try_from(completion.unwrap_or_default()).unwrap_or_default(),
                cost_usd: cost.unwrap_or_default(),
            })
        })
        .collect()
}

pub(super) async fn list(pool: &PgPool, bead: &BeadId) -> Result<Vec<Attempt>> {
    let rows = sqlx::query("SELECT * FROM bead_attempts WHERE bead_id = $1 ORDER BY seq")
        .bind(bead.as_str())
        .fetch_all(pool)
        .await?;
    if rows.is_empty() {
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM beads WHERE id = $1)")
            .bind(bead.as_str())
            .fetch_one(pool)
            .await?;
        if !exists {
            return Err(Error::not_found("bead", bead));
        }
    }
    rows.iter().map(from_row).collect()
}

fn from_row(row: &sqlx::postgres::PgRow) -> Result<Attempt> {
    let mut attempt = from_columns(row, "")?;
    attempt.conversation = row.try_get("conversation")?;
    Ok(attempt)
}

/// The attempt columns but `conversation`, each named `a_{column}`: what `from_columns(row, "a_")` reads.
const ATTEMPT_VIEW_COLS: &str = "a.dispatch_id AS a_dispatch_id, a.bead_id AS a_bead_id, a.attempt AS a_attempt,
    a.agent_id AS a_agent_id, a.succeeded AS a_succeeded, a.error AS a_error, a.output AS a_output,
    a.commits AS a_commits, a.artifacts AS a_artifacts, a.created_beads AS a_created_beads,
    a.duration_ms AS a_duration_ms, a.started_at AS a_started_at, a.finished_at AS a_finished_at,
    a.prompt_tokens AS a_prompt_tokens, a.completion_tokens AS a_completion_tokens, a.model AS a_model,
    a.provider AS a_provider, a.cost_usd AS a_cost_usd";

/// A bead and its latest attempt (its conversation left out) in one round trip.
pub(super) async fn bead_view(pool: &PgPool, id: &BeadId) -> Result<(Bead, Option<Attempt>)> {
    let row = sqlx::query(&format!(
        "SELECT {BEAD_COLS}, {ATTEMPT_VIEW_COLS} FROM beads b
         LEFT JOIN LATERAL (SELECT * FROM bead_attempts x WHERE x.bead_id = b.id ORDER BY x.seq DESC LIMIT 1) a ON true
         WHERE b.id = $1"
    ))
    .bind(id.as_str())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::not_found("bead", id))?;
    let (bead, _) = bead_from_row(&row)?;
    let latest = match row.try_get::<Option<&str>, _>("a_dispatch_id")? {
        Some(_) => Some(from_columns(&row, "a_")?),
        None => None,
    };
    Ok((bead, latest))
}

/// An attempt from columns named `{prefix}{column}`, its conversation empty.
fn from_columns(row: &sqlx::postgres::PgRow, prefix: &str) -> Result<Attempt> {
    // The list path reads unprefixed columns: borrow the name, allocate only for a prefix.
    let col = |name: &'static str| -> Cow<'static, str> {
        if prefix.is_empty() { Cow::Borrowed(name) } else { Cow::Owned(format!("{prefix}{name}")) }
    };
    let corrupt = |e: String| Error::Internal(format!("corrupt attempt row: {e}"));
    let Json(commits): Json<Vec<Commit>> = row.try_get(&*col("commits"))?;
    let Json(artifacts): Json<Vec<String>> = row.try_get(&*col("artifacts"))?;
    let Json(created): Json<Vec<String>> = row.try_get(&*col("created_beads"))?;
    Ok(Attempt {
        bead_id: BeadId::parse(row.try_get(&*col("bead_id"))?).map_err(|e| corrupt(e.to_string()))?,
        dispatch_id: DispatchId::parse(row.try_get(&*col("dispatch_id"))?).map_err(|e| corrupt(e.to_string()))?,
        attempt: u32::try_from(row.try_get::<i64, _>(&*col("attempt"))?).map_err(|e| corrupt(e.to_string()))?,
        agent_id: row.try_get(&*col("agent_id"))?,
        succeeded: row.try_get(&*col("succeeded"))?,
        error: row.try_get(&*col("error"))?,
        output: row.try_get(&*col("output"))?,
        commits,
        artifacts,
        created_beads: created
            .iter()
            .map(|id| BeadId::parse(id))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| corrupt(e.to_string()))?,
        duration_ms: u64::try_from(row.try_get::<i64, _>(&*col("duration_ms"))?).unwrap_or_default(),
        usage: TokenUsage {
            prompt_tokens: u64::try_from(row.try_get::<i64, _>(&*col("prompt_tokens"))?).unwrap_or_default(),
            completion_tokens: u64::try_from(row.try_get::<i64, _>(&*col("completion_tokens"))?).unwrap_or_default(),
            model: row.try_get(&*col("model"))?,
            provider: row.try_get(&*col("provider"))?,
            cost_usd: row.try_get(&*col("cost_usd"))?,
        },
        conversation: String::new(),
        started_at: row.try_get(&*col("started_at"))?,
        finished_at: row.try_get(&*col("finished_at"))?,
    })
}
