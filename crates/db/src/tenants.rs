//! Tenants: the organisations that own devices, profiles and groups.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct TenantRow {
    pub id: Uuid,
    pub display_name: String,
    pub domain: String,
    pub branding: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub revision: i64,
}

pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    display_name: &str,
    domain: &str,
) -> Result<TenantRow, sqlx::Error> {
    sqlx::query_as!(
        TenantRow,
        "INSERT INTO tenants (id, display_name, domain) VALUES ($1, $2, $3)
         RETURNING id, display_name, domain, branding, created_at, updated_at, revision",
        id,
        display_name,
        domain
    )
    .fetch_one(conn)
    .await
}

pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as!(
        TenantRow,
        "SELECT id, display_name, domain, branding, created_at, updated_at, revision
         FROM tenants WHERE id = $1",
        id
    )
    .fetch_optional(conn)
    .await
}

/// Locks the tenant's row for the rest of the transaction: serialises per-tenant limits
/// (such as the number of profiles) without locking other tenants.
pub async fn lock(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    let row = sqlx::query_scalar!("SELECT id FROM tenants WHERE id = $1 FOR UPDATE", id)
        .fetch_optional(conn)
        .await?;
    Ok(row.is_some())
}

pub async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    display_name: &str,
    domain: &str,
    branding: &serde_json::Value,
) -> Result<TenantRow, sqlx::Error> {
    sqlx::query_as!(
        TenantRow,
        "UPDATE tenants SET display_name = $2, domain = $3, branding = $4,
                updated_at = now(), revision = revision + 1
         WHERE id = $1
         RETURNING id, display_name, domain, branding, created_at, updated_at, revision",
        id,
        display_name,
        domain,
        branding
    )
    .fetch_one(conn)
    .await
}
