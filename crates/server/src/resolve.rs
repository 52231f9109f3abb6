//! A device's effective profile, computed on read: the groups it is in (static and paused
//! dynamic groups from stored membership; live dynamic groups by evaluating their compiled rules
//! against the device now) and the tenant's assignments. So every change shows on the very
//! next request, with no wait on a membership job.

use sqlx::PgConnection;
use unbox_db::devices::DeviceRow;
use unbox_domain::api::{AssignmentMode, AssignmentTarget};
use unbox_domain::resolution::{
    self, AssignmentFact, GroupMembership, MembershipReason, Resolution,
};
use unbox_domain::rule_device::RuleDevice;
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;

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

/// How much to say about rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Just the winner (the device call, device reads).
    Brief,
    /// With each rule's evaluation details (the explanation endpoint).
    Explained,
}

/// The groups the device is in, and why.
pub async fn memberships(
    state: &AppState,
    conn: &mut PgConnection,
    device: &DeviceRow,
    detail: Detail,
) -> Result<Vec<GroupMembership>, ApiError> {
    let stored =
        unbox_db::groups::stored_groups_of_device(conn, device.tenant_id, device.id).await?;
    let rules = state.rules.get(conn, device.tenant_id).await?;
    let mut memberships: Vec<GroupMembership> = stored
        .into_iter()
        .map(|g| GroupMembership {
            group_id: g.group_id,
            group_name: g.display_name,
            reason: if g.membership_type == "static" {
                MembershipReason::StaticMember
            } else {
                MembershipReason::PausedRuleMember
            },
        })
        .collect();
    if !rules.live.is_empty() {
        let facts = RuleDevice::new(device.rule_fields());
        for group in &rules.live {
            if group.rule.evaluate(&facts) {
                let details = match detail {
                    Detail::Brief => serde_json::Value::Null,
                    Detail::Explained => {
                        serde_json::to_value(group.rule.explain(&facts)).unwrap_or_default()
                    }
                };
                memberships.push(GroupMembership {
                    group_id: group.group_id,
                    group_name: group.name.clone(),
                    reason: MembershipReason::RuleMatched {
                        membership_rule: group.rule.source().to_owned(),
                        details,
                    },
                });
            }
        }
    }
    memberships.sort_by(|a, b| {
        a.group_name
            .cmp(&b.group_name)
            .then(a.group_id.cmp(&b.group_id))
    });
    Ok(memberships)
}

/// Resolves one device of the tenant.
pub async fn device(
    state: &AppState,
    conn: &mut PgConnection,
    device: &DeviceRow,
    detail: Detail,
) -> Result<Resolution, ApiError> {
    let memberships = memberships(state, conn, device, detail).await?;
    let group_ids: Vec<Uuid> = memberships.iter().map(|m| m.group_id).collect();
    let rows =
        unbox_db::assignments::applicable(conn, device.tenant_id, device.id, &group_ids).await?;
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
    Ok(resolution::resolve(device.id, memberships, &facts))
}
