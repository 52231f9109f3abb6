//! Deployments: opened by a profile download, continued by another download within an hour.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct DeploymentRow {
    pub id: Uuid,
    pub device_id: Uuid,
    pub profile_id: Option<Uuid>,
    pub status: String,
    pub opened_at: DateTime<Utc>,
    pub timeout_at: DateTime<Utc>,
}

/// Continues the device's open deployment for this profile if it downloaded within the last
/// hour (an OOBE retry), or opens a new one. One statement, so concurrent downloads of the same
/// device cannot open two.
pub async fn open_or_continue(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    device_id: Uuid,
    new_id: Uuid,
    profile_id: Uuid,
    profile_name: &str,
    timeout_minutes: i32,
) -> Result<DeploymentRow, sqlx::Error> {
    let continued = sqlx::query_as!(
        DeploymentRow,
        "UPDATE deployments SET last_download_at = now()
         WHERE tenant_id = $1 AND id = (
             SELECT id FROM deployments
             WHERE tenant_id = $1 AND device_id = $2 AND profile_id = $3 AND status = 'inProgress'
               AND last_download_at > now() - interval '1 hour' AND timeout_at > now()
             ORDER BY opened_at DESC LIMIT 1 FOR UPDATE)
         RETURNING id, device_id, profile_id, status, opened_at, timeout_at",
        tenant_id,
        device_id,
        profile_id
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(row) = continued {
        return Ok(row);
    }
    sqlx::query_as!(
        DeploymentRow,
        "INSERT INTO deployments (tenant_id, id, device_id, profile_id, profile_name, timeout_at)
         VALUES ($1, $2, $3, $4, $5, now() + make_interval(mins => $6))
         RETURNING id, device_id, profile_id, status, opened_at, timeout_at",
        tenant_id,
        new_id,
        device_id,
        profile_id,
        profile_name,
        timeout_minutes
    )
    .fetch_one(conn)
    .await
}
