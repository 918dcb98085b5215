//! API keys and named leases on PostgreSQL.

use std::time::Duration;

use chrono::{DateTime, Utc};
use loom_domain::{ApiKey, Role, validate_key_name};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use crate::{Error, Result};

fn key_from_row(row: &PgRow) -> Result<ApiKey> {
    Ok(ApiKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        role: row.try_get::<&str, _>("role")?.parse().map_err(|e| Error::Internal(format!("corrupt row: {e}")))?,
        created_at: row.try_get("created_at")?,
        revoked_at: row.try_get("revoked_at")?,
    })
}

pub(super) async fn create(pool: &PgPool, name: &str, role: Role, hash: &str) -> Result<ApiKey> {
    validate_key_name(name)?;
    let row = sqlx::query(
        "INSERT INTO api_keys (id, name, role, hash, created_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (hash) DO NOTHING RETURNING id, name, role, created_at, revoked_at",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(name)
    .bind(role.as_str())
    .bind(hash)
    .bind(crate::now())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::AlreadyExists { entity: "api key", id: "with this secret".into() })?;
    key_from_row(&row)
}

pub(super) async fn find(pool: &PgPool, hash: &str) -> Result<Option<ApiKey>> {
    let row = sqlx::query(
        "SELECT id, name, role, created_at, revoked_at FROM api_keys WHERE hash = $1 AND revoked_at IS NULL",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await?;
    row.as_ref().map(key_from_row).transpose()
}

pub(super) async fn list(pool: &PgPool) -> Result<Vec<ApiKey>> {
    let rows = sqlx::query("SELECT id, name, role, created_at, revoked_at FROM api_keys ORDER BY created_at, id")
        .fetch_all(pool)
        .await?;
    rows.iter().map(key_from_row).collect()
}

pub(super) async fn revoke(pool: &PgPool, id: &str) -> Result<()> {
    let n = sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
        .bind(id)
        .bind(crate::now())
        .execute(pool)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::not_found("api key", id));
    }
    Ok(())
}

pub(super) async fn acquire_lease(
    pool: &PgPool,
    name: &str,
    holder: &str,
    now: DateTime<Utc>,
    ttl: Duration,
) -> Result<bool> {
    let row = sqlx::query(
        "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
         WHERE leases.holder = excluded.holder OR leases.expires_at < $4
         RETURNING holder",
    )
    .bind(name)
    .bind(holder)
    .bind(crate::micros(now + ttl))
    .bind(crate::micros(now))
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

pub(super) async fn release_lease(pool: &PgPool, name: &str, holder: &str) -> Result<()> {
    sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2").bind(name).bind(holder).execute(pool).await?;
    Ok(())
}
