//! The progress events devices report for their deployments. A repeated event (same
//! deployment, phase and status) is the same event: the first report is kept.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct EventRow {
    pub deployment_id: Uuid,
    pub phase: String,
    pub status: String,
    pub message: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// Records an event unless the same one was recorded before. Returns the new row, or None for
/// a repeat.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    deployment_id: Uuid,
    phase: &str,
    status: &str,
    message: Option<&str>,
) -> Result<Option<EventRow>, sqlx::Error> {
    sqlx::query_as!(
        EventRow,
        "INSERT INTO deployment_events (tenant_id, deployment_id, phase, status, message)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, deployment_id, phase, status) DO NOTHING
         RETURNING deployment_id, phase, status, message, received_at",
        tenant_id,
        deployment_id,
        phase,
        status,
        message
    )
    .fetch_optional(conn)
    .await
}

/// The recorded event with this phase and status, if any.
pub async fn find(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    deployment_id: Uuid,
    phase: &str,
    status: &str,
) -> Result<Option<EventRow>, sqlx::Error> {
    sqlx::query_as!(
        EventRow,
        "SELECT deployment_id, phase, status, message, received_at FROM deployment_events
         WHERE tenant_id = $1 AND deployment_id = $2 AND phase = $3 AND status = $4",
        tenant_id,
        deployment_id,
        phase,
        status
    )
    .fetch_optional(conn)
    .await
}

/// The events of these deployments, oldest first.
pub async fn of_deployments(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    deployment_ids: &[Uuid],
) -> Result<Vec<EventRow>, sqlx::Error> {
    sqlx::query_as!(
        EventRow,
        "SELECT deployment_id, phase, status, message, received_at FROM deployment_events
         WHERE tenant_id = $1 AND deployment_id = ANY($2)
         ORDER BY received_at, phase, status",
        tenant_id,
        deployment_ids
    )
    .fetch_all(conn)
    .await
}
