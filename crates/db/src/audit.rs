//! The audit log of admin writes: who, what, when, before and after.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// One entry to record, in the same transaction as the write it describes.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    pub tenant_id: Uuid,
    pub actor_kind: &'a str,
    pub actor_id: Option<String>,
    pub action: &'a str,
    pub resource_type: &'a str,
    pub resource_id: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct EntryRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub request_id: Option<String>,
}

pub async fn record(conn: &mut PgConnection, entry: NewEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO audit_log
           (tenant_id, actor_kind, actor_id, action, resource_type, resource_id, before, after, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        entry.tenant_id,
        entry.actor_kind,
        entry.actor_id,
        entry.action,
        entry.resource_type,
        entry.resource_id,
        entry.before,
        entry.after,
        entry.request_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Newest first; `before` is the cursor (entries with a smaller id).
pub async fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<EntryRow>, sqlx::Error> {
    sqlx::query_as!(
        EntryRow,
        "SELECT id, at, actor_kind, actor_id, action, resource_type, resource_id, before, after, request_id
         FROM audit_log
         WHERE tenant_id = $1 AND ($2::bigint IS NULL OR id < $2)
         ORDER BY id DESC LIMIT $3",
        tenant_id,
        before,
        limit
    )
    .fetch_all(conn)
    .await
}
