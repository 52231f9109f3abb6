//! API clients of a tenant (OAuth client credentials).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct ClientRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub display_name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// What the token endpoint needs to check a secret.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub scopes: Vec<String>,
    pub secret_hash: String,
}

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    display_name: &str,
    scopes: &[String],
    secret_hash: &str,
) -> Result<ClientRow, sqlx::Error> {
    sqlx::query_as!(
        ClientRow,
        "INSERT INTO api_clients (tenant_id, id, display_name, scopes, secret_hash)
         VALUES ($1, $2, $3, $4, $5)
         RETURNING tenant_id, id, display_name, scopes, created_at",
        tenant_id,
        id,
        display_name,
        scopes,
        secret_hash
    )
    .fetch_one(conn)
    .await
}

pub async fn credentials(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<ClientCredentials>, sqlx::Error> {
    sqlx::query_as!(
        ClientCredentials,
        "SELECT tenant_id, id, scopes, secret_hash FROM api_clients WHERE id = $1",
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
) -> Result<Vec<ClientRow>, sqlx::Error> {
    sqlx::query_as!(
        ClientRow,
        "SELECT tenant_id, id, display_name, scopes, created_at FROM api_clients
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3",
        tenant_id,
        after,
        limit
    )
    .fetch_all(conn)
    .await
}

pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<ClientRow>, sqlx::Error> {
    sqlx::query_as!(
        ClientRow,
        "DELETE FROM api_clients WHERE tenant_id = $1 AND id = $2
         RETURNING tenant_id, id, display_name, scopes, created_at",
        tenant_id,
        id
    )
    .fetch_optional(conn)
    .await
}

/// Whether the client still exists (tokens of a deleted client stop working).
pub async fn exists(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let found = sqlx::query_scalar!(
        "SELECT EXISTS (SELECT 1 FROM api_clients WHERE tenant_id = $1 AND id = $2)",
        tenant_id,
        id
    )
    .fetch_one(conn)
    .await?;
    Ok(found.unwrap_or(false))
}
