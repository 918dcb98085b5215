//! Importing beads on PostgreSQL: one transaction per batch, rows and edges set-based.

use std::collections::BTreeMap;

use loom_domain::{Bead, BeadId, ProjectId};
use serde_json::json;
use sqlx::PgPool;

use super::rows::{BEAD_COLS, bead_from_row};
use super::{Tx, beads, insert_events};
use crate::import::{self, Plan};
use crate::{Error, ImportAction, ImportBead, Result};

pub(super) async fn import(pool: &PgPool, project: &ProjectId, batch: Vec<ImportBead>) -> Result<Vec<ImportAction>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = super::begin(pool).await?;
    let result = import_in(&mut tx, project, batch).await;
    super::finish(tx, result).await
}

async fn import_in(tx: &mut Tx<'_>, project: &ProjectId, batch: Vec<ImportBead>) -> Result<Vec<ImportAction>> {
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM projects WHERE id = $1 FOR SHARE")
        .bind(project.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    if found.is_none() {
        return Err(Error::not_found("project", project));
    }
    let ids: Vec<String> = batch.iter().map(|b| b.id.to_string()).collect();
    let rows =
        sqlx::query(&format!("SELECT {BEAD_COLS} FROM beads b WHERE b.id = ANY($1) ORDER BY b.id FOR UPDATE OF b"))
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?;
    let mut existing = BTreeMap::new();
    for row in &rows {
        let bead = bead_from_row(row)?.0;
        existing.insert(bead.id.to_string(), bead);
    }
    let outside: Vec<String> = import::outside_refs(&batch).into_iter().collect();
    let known = beads::existing_ids(tx, &outside).await?;
    let plan = import::plan(project, batch, &existing, &known)?;
    insert(tx, &plan.inserts).await?;
    write_updates(tx, &plan).await?;
    insert_events(tx, &plan.events).await?;
    let created: Vec<&BeadId> = plan.inserts.iter().map(|b| &b.id).collect();
    if let Some(seq) = import::highest_seq(&created) {
        sqlx::query("SELECT setval('bead_seq', GREATEST($1, (SELECT last_value FROM bead_seq)))")
            .bind(seq)
            .execute(&mut **tx)
            .await?;
    }
    Ok(plan.actions)
}

/// New rows in one statement (a parent later in the batch is fine: the foreign key is checked at
/// the end of the statement), then their edges in another.
async fn insert(tx: &mut Tx<'_>, beads: &[Bead]) -> Result<()> {
    if beads.is_empty() {
        return Ok(());
    }
    let seqs: Vec<i64> = sqlx::query_scalar("SELECT nextval('bead_seq') FROM generate_series(1, $1)")
        .bind(beads.len() as i64)
        .fetch_all(&mut **tx)
        .await?;
    let text = |f: fn(&Bead) -> String| beads.iter().map(f).collect::<Vec<_>>();
    let opt = |f: fn(&Bead) -> Option<String>| beads.iter().map(f).collect::<Vec<_>>();
    let time = |f: fn(&Bead) -> Option<chrono::DateTime<chrono::Utc>>| beads.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO beads (id, seq, project_id, title, description, bead_type, priority, status, assignee, tags,
           context, parent, close_reason, created_at, updated_at, closed_at)
         SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                     $8::text[], $9::text[], $10::jsonb[], $11::jsonb[], $12::text[], $13::text[],
                     $14::timestamptz[], $15::timestamptz[], $16::timestamptz[])",
    )
    .bind(text(|b| b.id.to_string()))
    .bind(&seqs)
    .bind(text(|b| b.project_id.to_string()))
    .bind(text(|b| b.title.clone()))
    .bind(text(|b| b.description.clone()))
    .bind(text(|b| b.bead_type.as_str().to_owned()))
    .bind(beads.iter().map(|b| i64::from(b.priority.get())).collect::<Vec<_>>())
    .bind(text(|b| b.status.as_str().to_owned()))
    .bind(opt(|b| b.assignee.clone()))
    .bind(beads.iter().map(|b| json!(b.tags)).collect::<Vec<_>>())
    .bind(beads.iter().map(|b| json!(b.context)).collect::<Vec<_>>())
    .bind(opt(|b| b.parent.as_ref().map(BeadId::to_string)))
    .bind(opt(|b| b.close_reason.clone()))
    .bind(time(|b| Some(b.created_at)))
    .bind(time(|b| Some(b.updated_at)))
    .bind(time(|b| b.closed_at))
    .execute(&mut **tx)
    .await?;
    let edges = beads.iter().flat_map(|b| b.blocked_by.iter().map(move |x| (b.id.to_string(), x.to_string())));
    beads::insert_edges(tx, edges.unzip()).await
}

/// Writes changed beads back; an edge an update adds is checked for a cycle through the stored
/// graph (new edges of this batch included) before it is inserted.
async fn write_updates(tx: &mut Tx<'_>, plan: &Plan) -> Result<()> {
    if plan.updates.is_empty() {
        return Ok(());
    }
    let beads: Vec<Bead> = plan.updates.iter().map(|u| u.bead.clone()).collect();
    beads::write_many(tx, &beads).await?;
    sqlx::query(
        "UPDATE beads SET created_at = t.created_at FROM UNNEST($1::text[], $2::timestamptz[]) AS t(id, created_at)
         WHERE beads.id = t.id AND beads.created_at <> t.created_at",
    )
    .bind(beads.iter().map(|b| b.id.to_string()).collect::<Vec<_>>())
    .bind(beads.iter().map(|b| b.created_at).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    let (from, to): (Vec<String>, Vec<String>) =
        plan.updates.iter().flat_map(|u| u.removed.iter().map(|x| (u.bead.id.to_string(), x.to_string()))).unzip();
    if !from.is_empty() {
        sqlx::query(
            "DELETE FROM bead_deps d USING UNNEST($1::text[], $2::text[]) AS t(bead_id, blocker_id)
             WHERE d.bead_id = t.bead_id AND d.blocker_id = t.blocker_id",
        )
        .bind(from)
        .bind(to)
        .execute(&mut **tx)
        .await?;
    }
    for u in &plan.updates {
        for x in &u.added {
            if let Some(path) = beads::cycle_path(tx, &u.bead.id, x).await? {
                return Err(
                    loom_domain::Error::Cycle { bead: u.bead.id.to_string(), blocker: x.to_string(), path }.into()
                );
            }
            beads::insert_edges(tx, (vec![u.bead.id.to_string()], vec![x.to_string()])).await?;
        }
    }
    Ok(())
}

pub(super) async fn bead_projects(pool: &PgPool, ids: &[BeadId]) -> Result<Vec<(BeadId, ProjectId)>> {
    let ids: Vec<&str> = ids.iter().map(BeadId::as_str).collect();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT id, project_id FROM beads WHERE id = ANY($1)").bind(&ids).fetch_all(pool).await?;
    rows.into_iter()
        .map(|(b, p)| {
            let corrupt = |e: loom_domain::Error| Error::Internal(format!("stored id: {e}"));
            Ok((BeadId::parse(&b).map_err(corrupt)?, ProjectId::parse(&p).map_err(corrupt)?))
        })
        .collect()
}
