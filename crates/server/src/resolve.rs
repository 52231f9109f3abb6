//! A device's effective profile, computed on read from the groups it is in and the tenant's
//! assignments, so that it is right immediately after any write that changes it.

use sqlx::PgConnection;
use unbox_domain::api::{AssignmentMode, AssignmentTarget};
use unbox_domain::resolution::{
    self, AssignmentFact, GroupMembership, MembershipReason, Resolution,
};
use uuid::Uuid;

use crate::error::ApiError;

pub fn assignment_target(
    kind: &str,
    group_id: Option<Uuid>,
    device_id: Option<Uuid>,
) -> Option<AssignmentTarget> {
    match (kind, group_id, device_id) {
        ("group", Some(group_id), _) => Some(AssignmentTarget::Group { group_id }),
        ("device", _, Some(device_id)) => Some(AssignmentTarget::Device { device_id }),
        ("allDevices", _, _) => Some(AssignmentTarget::AllDevices),
        _ => None,
    }
}

pub fn assignment_mode(mode: &str) -> AssignmentMode {
    if mode == "exclude" {
        AssignmentMode::Exclude
    } else {
        AssignmentMode::Include
    }
}

/// Resolves one device of the tenant.
pub async fn device(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    device_id: Uuid,
) -> Result<Resolution, ApiError> {
    let groups = unbox_db::groups::static_groups_of_device(conn, tenant_id, device_id).await?;
    let memberships: Vec<GroupMembership> = groups
        .into_iter()
        .map(|g| GroupMembership {
            group_id: g.group_id,
            group_name: g.display_name,
            reason: MembershipReason::StaticMember,
        })
        .collect();
    let group_ids: Vec<Uuid> = memberships.iter().map(|m| m.group_id).collect();
    let rows = unbox_db::assignments::applicable(conn, tenant_id, device_id, &group_ids).await?;
    let facts: Vec<AssignmentFact> = rows
        .into_iter()
        .filter_map(|row| {
            Some(AssignmentFact {
                assignment_id: row.id,
                profile_id: row.profile_id,
                profile_name: row.profile_name,
                profile_created_at: row.profile_created_at,
                target: assignment_target(&row.target_kind, row.group_id, row.device_id)?,
                mode: assignment_mode(&row.mode),
                assigned_at: row.created_at,
            })
        })
        .collect();
    Ok(resolution::resolve(device_id, memberships, &facts))
}
