//! Connectors on SQLite: one row each, updated only at the caller's expected version.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqlitePool};

use super::rows::{corrupt, micros, now};
use super::{SqliteStore, locked};
use crate::model::connector_conflict;
use crate::{ConnectorRecord, Error, NewConnector, Result};

const COLS: &str = "id, kind, config, sealed_secrets, version, created_at, updated_at";

fn from_row(row: &SqliteRow) -> Result<ConnectorRecord> {
    let time = |us: i64| DateTime::<Utc>::from_timestamp_micros(us).ok_or_else(|| corrupt("timestamp out of range"));
    let config: String = row.try_get("config")?;
    Ok(ConnectorRecord {
        id: row.try_get("id")?,
        kind: row.try_get("kind")?,
        config: serde_json::from_str(&config).map_err(corrupt)?,
        sealed_secrets: row.try_get("sealed_secrets")?,
        version: row.try_get("version")?,
        created_at: time(row.try_get("created_at")?)?,
        updated_at: time(row.try_get("updated_at")?)?,
    })
}

pub(super) async fn list(pool: &SqlitePool) -> Result<Vec<ConnectorRecord>> {
    let rows = sqlx::query(&format!("SELECT {COLS} FROM connectors ORDER BY id")).fetch_all(pool).await?;
    rows.iter().map(from_row).collect()
}

pub(super) async fn get(pool: &SqlitePool, id: &str) -> Result<ConnectorRecord> {
    let row =
        sqlx::query(&format!("SELECT {COLS} FROM connectors WHERE id = ?1")).bind(id).fetch_optional(pool).await?;
    from_row(&row.ok_or_else(|| Error::not_found("connector", id))?)
}

pub(super) async fn create(store: &SqliteStore, c: NewConnector) -> Result<ConnectorRecord> {
    c.validate()?;
    let row = sqlx::query(&format!(
        "INSERT INTO connectors ({COLS}) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)
         ON CONFLICT (id) DO NOTHING RETURNING {COLS}"
    ))
    .bind(&c.id)
    .bind(&c.kind)
    .bind(c.config.to_string())
    .bind(&c.sealed_secrets)
    .bind(micros(now()))
    .fetch_optional(&store.writer)
    .await
    .map_err(locked)?
    .ok_or_else(|| Error::AlreadyExists { entity: "connector", id: c.id.clone() })?;
    from_row(&row)
}

pub(super) async fn update(store: &SqliteStore, expected_version: i64, c: NewConnector) -> Result<ConnectorRecord> {
    c.validate()?;
    let row = sqlx::query(&format!(
        "UPDATE connectors SET kind = ?3, config = ?4, sealed_secrets = ?5, version = version + 1, updated_at = ?6
         WHERE id = ?1 AND version = ?2 RETURNING {COLS}"
    ))
    .bind(&c.id)
    .bind(expected_version)
    .bind(&c.kind)
    .bind(c.config.to_string())
    .bind(&c.sealed_secrets)
    .bind(micros(now()))
    .fetch_optional(&store.writer)
    .await
    .map_err(locked)?;
    match row {
        Some(row) => from_row(&row),
        None => {
            let actual: Option<i64> = sqlx::query_scalar("SELECT version FROM connectors WHERE id = ?1")
                .bind(&c.id)
                .fetch_optional(&store.writer)
                .await
                .map_err(locked)?;
            match actual {
                None => Err(Error::not_found("connector", &c.id)),
                Some(actual) => Err(connector_conflict(&c.id, expected_version, actual)),
            }
        }
    }
}

pub(super) async fn delete(store: &SqliteStore, id: &str) -> Result<()> {
    let n = sqlx::query("DELETE FROM connectors WHERE id = ?1")
        .bind(id)
        .execute(&store.writer)
        .await
        .map_err(locked)?
        .rows_affected();
    if n == 0 {
        return Err(Error::not_found("connector", id));
    }
    Ok(())
}
