//! Attempts on PostgreSQL: what each applied result reported, kept in `bead_attempts` (keyed by
//! dispatch id) in the result's transaction.

use loom_domain::{BeadId, DispatchId};
use serde_json::json;
use sqlx::types::Json;
use sqlx::{PgPool, Row};

use super::Tx;
use crate::{Attempt, Commit, Error, Result};

/// Inserts the attempts of a batch of applied results, in one statement.
pub(super) async fn insert(tx: &mut Tx<'_>, attempts: &[Attempt]) -> Result<()> {
    if attempts.is_empty() {
        return Ok(());
    }
    let text = |f: fn(&Attempt) -> String| attempts.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO bead_attempts (dispatch_id, bead_id, attempt, agent_id, succeeded, error, output, commits,
           artifacts, created_beads, duration_ms, started_at, finished_at)
         SELECT a, b, c, d, e, f, g, h, i, j, k, l, m FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bool[], $6::text[], $7::text[],
           $8::jsonb[], $9::jsonb[], $10::jsonb[], $11::bigint[], $12::timestamptz[], $13::timestamptz[])
           WITH ORDINALITY AS t(a, b, c, d, e, f, g, h, i, j, k, l, m, n) ORDER BY n",
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
    .execute(&mut **tx)
    .await?;
    Ok(())
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
    let corrupt = |e: String| Error::Internal(format!("corrupt attempt row: {e}"));
    let Json(commits): Json<Vec<Commit>> = row.try_get("commits")?;
    let Json(artifacts): Json<Vec<String>> = row.try_get("artifacts")?;
    let Json(created): Json<Vec<String>> = row.try_get("created_beads")?;
    Ok(Attempt {
        bead_id: BeadId::parse(row.try_get("bead_id")?).map_err(|e| corrupt(e.to_string()))?,
        dispatch_id: DispatchId::parse(row.try_get("dispatch_id")?).map_err(|e| corrupt(e.to_string()))?,
        attempt: u32::try_from(row.try_get::<i64, _>("attempt")?).map_err(|e| corrupt(e.to_string()))?,
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
            .map_err(|e| corrupt(e.to_string()))?,
        duration_ms: u64::try_from(row.try_get::<i64, _>("duration_ms")?).unwrap_or_default(),
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}
