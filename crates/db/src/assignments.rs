//! Profile assignments: include or exclude a profile for a group, a device or all devices.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct AssignmentRow {
    pub id: Uuid,
    pub profile_id: Uuid,
    pub target_kind: String,
    pub group_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub mode: String,
    pub created_at: DateTime<Utc>,
}

/// An assignment with what resolution needs of its profile.
#[derive(Debug, Clone)]
pub struct AssignmentWithProfile {
    pub id: Uuid,
    pub profile_id: Uuid,
    pub target_kind: String,
    pub group_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub mode: String,
    pub profile_name: String,
    pub profile_created_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewAssignment<'a> {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub profile_id: Uuid,
    pub target_kind: &'a str,
    pub group_id: Option<Uuid>,
    pub device_id: Option<Uuid>,
    pub mode: &'a str,
}

/// Inserts an assignment; `None` when the same one exists already.
pub async fn insert(
    conn: &mut PgConnection,
    new: &NewAssignment<'_>,
) -> Result<Option<AssignmentRow>, sqlx::Error> {
    sqlx::query_as!(
        AssignmentRow,
        "INSERT INTO profile_assignments (tenant_id, id, profile_id, target_kind, group_id, device_id, mode)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT DO NOTHING
         RETURNING id, profile_id, target_kind, group_id, device_id, mode, created_at",
        new.tenant_id,
        new.id,
        new.profile_id,
        new.target_kind,
        new.group_id,
        new.device_id,
        new.mode
    )
    .fetch_optional(conn)
    .await
}

pub async fn list_for_profile(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    profile_id: Uuid,
) -> Result<Vec<AssignmentRow>, sqlx::Error> {
    sqlx::query_as!(
        AssignmentRow,
        "SELECT id, profile_id, target_kind, group_id, device_id, mode, created_at
         FROM profile_assignments WHERE tenant_id = $1 AND profile_id = $2
         ORDER BY created_at, id",
        tenant_id,
        profile_id
    )
    .fetch_all(conn)
    .await
}

pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    profile_id: Uuid,
    id: Uuid,
) -> Result<Option<AssignmentRow>, sqlx::Error> {
    sqlx::query_as!(
        AssignmentRow,
        "DELETE FROM profile_assignments WHERE tenant_id = $1 AND profile_id = $2 AND id = $3
         RETURNING id, profile_id, target_kind, group_id, device_id, mode, created_at",
        tenant_id,
        profile_id,
        id
    )
    .fetch_optional(conn)
    .await
}

/// The assignments that can apply to this device: all-devices ones, its direct ones, and those
/// of the given groups.
pub async fn applicable(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    device_id: Uuid,
    group_ids: &[Uuid],
) -> Result<Vec<AssignmentWithProfile>, sqlx::Error> {
    sqlx::query_as!(
        AssignmentWithProfile,
        "SELECT a.id, a.profile_id, a.target_kind, a.group_id, a.device_id, a.mode,
                p.display_name AS profile_name, p.created_at AS profile_created_at, a.created_at
         FROM profile_assignments a
         JOIN profiles p ON p.tenant_id = a.tenant_id AND p.id = a.profile_id
         WHERE a.tenant_id = $1
           AND (a.target_kind = 'allDevices' OR a.device_id = $2 OR a.group_id = ANY($3))",
        tenant_id,
        device_id,
        group_ids
    )
    .fetch_all(conn)
    .await
}
