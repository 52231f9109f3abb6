//! Deployment profiles. The settings are stored as one JSON document
//! (`unbox_domain::profile::ProfileSettings`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct ProfileRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub settings: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub revision: i64,
}

pub async fn count(conn: &mut PgConnection, tenant_id: Uuid) -> Result<i64, sqlx::Error> {
    let n = sqlx::query_scalar!(
        "SELECT count(*) FROM profiles WHERE tenant_id = $1",
        tenant_id
    )
    .fetch_one(conn)
    .await?;
    Ok(n.unwrap_or(0))
}

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    display_name: &str,
    settings: &serde_json::Value,
) -> Result<ProfileRow, sqlx::Error> {
    sqlx::query_as!(
        ProfileRow,
        "INSERT INTO profiles (tenant_id, id, display_name, settings) VALUES ($1, $2, $3, $4)
         RETURNING tenant_id, id, settings, created_at, updated_at, revision",
        tenant_id,
        id,
        display_name,
        settings
    )
    .fetch_one(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<ProfileRow>, sqlx::Error> {
    sqlx::query_as!(
        ProfileRow,
        "SELECT tenant_id, id, settings, created_at, updated_at, revision
         FROM profiles WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        id
    )
    .fetch_optional(conn)
    .await
}

pub async fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ProfileRow>, sqlx::Error> {
    sqlx::query_as!(
        ProfileRow,
        "SELECT tenant_id, id, settings, created_at, updated_at, revision FROM profiles
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3",
        tenant_id,
        after,
        limit
    )
    .fetch_all(conn)
    .await
}

pub async fn update(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    display_name: &str,
    settings: &serde_json::Value,
) -> Result<ProfileRow, sqlx::Error> {
    sqlx::query_as!(
        ProfileRow,
        "UPDATE profiles SET display_name = $3, settings = $4, updated_at = now(), revision = revision + 1
         WHERE tenant_id = $1 AND id = $2
         RETURNING tenant_id, id, settings, created_at, updated_at, revision",
        tenant_id,
        id,
        display_name,
        settings
    )
    .fetch_one(conn)
    .await
}

/// Deletes a profile with its assignments (ON DELETE CASCADE).
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM profiles WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Locks the profile's row for the rest of the transaction and returns its revision.
pub async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT revision FROM profiles WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tenant_id,
        id
    )
    .fetch_optional(conn)
    .await
}
