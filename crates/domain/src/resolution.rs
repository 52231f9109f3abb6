//! Which profile a device gets, and why (design.md, "Profile resolution"):
//! 1. every profile with an `exclude` assignment to a group the device is in, or to the device,
//!    is out — in every tier, all-devices included;
//! 2. tier 1: profiles assigned directly to the device; tier 2: to a group the device is in;
//!    tier 3: to all devices;
//! 3. the first non-empty tier decides; within it the oldest-created profile wins, ties by id.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::api::{AssignmentMode, AssignmentTarget};

/// One assignment of the tenant, with what resolution needs of its profile.
#[derive(Debug, Clone)]
pub struct AssignmentFact {
    pub assignment_id: Uuid,
    pub profile_id: Uuid,
    pub profile_name: String,
    pub profile_created_at: DateTime<Utc>,
    pub target: AssignmentTarget,
    pub mode: AssignmentMode,
    pub assigned_at: DateTime<Utc>,
}

/// Why a device is in a group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum MembershipReason {
    /// An admin added it.
    StaticMember,
    /// The group's rule is paused; the device is in the membership stored before the pause.
    PausedRuleMember,
    /// The group's rule is true for the device now; `details` is the rule's evaluation (in the
    /// shape of Graph's `evaluateDynamicMembership`) when an explanation was asked for.
    #[serde(rename_all = "camelCase")]
    RuleMatched {
        membership_rule: String,
        #[schema(value_type = Object)]
        details: serde_json::Value,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct GroupMembership {
    pub group_id: Uuid,
    pub group_name: String,
    pub reason: MembershipReason,
}

/// The tiers of resolution, first decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Tier {
    Device,
    Group,
    AllDevices,
}

impl Tier {
    fn describe(self) -> &'static str {
        match self {
            Self::Device => "assigned directly to the device",
            Self::Group => "assigned to a group the device is in",
            Self::AllDevices => "assigned to all devices",
        }
    }
}

/// An assignment that applies to the device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Via {
    pub assignment_id: Uuid,
    pub assigned_at: DateTime<Utc>,
    pub target: AssignmentTarget,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Won,
    Excluded,
    LowerTier,
    LostToOlder,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub profile_id: Uuid,
    pub profile_name: String,
    pub profile_created_at: DateTime<Utc>,
    /// The best tier that includes it; absent when only exclusions name it.
    pub tier: Option<Tier>,
    pub included_by: Vec<Via>,
    pub excluded_by: Vec<Via>,
    pub outcome: Outcome,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Winner {
    pub profile_id: Uuid,
    pub profile_name: String,
    pub tier: Tier,
    /// When the earliest assignment that gives it to the device was made.
    pub assigned_at: DateTime<Utc>,
}

/// `GET /v1/devices/{id}/assignment`: the groups, every candidate, the winner and the reason.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resolution {
    pub device_id: Uuid,
    pub groups: Vec<GroupMembership>,
    pub candidates: Vec<Candidate>,
    pub winner: Option<Winner>,
    pub reason: String,
}

impl Resolution {
    pub fn winning_profile(&self) -> Option<Uuid> {
        self.winner.as_ref().map(|w| w.profile_id)
    }
}

struct Gathered<'a> {
    fact: &'a AssignmentFact,
    included_by: Vec<(Tier, Via)>,
    excluded_by: Vec<Via>,
}

/// Resolves the device's profile from the groups it is in and the tenant's assignments.
pub fn resolve(
    device_id: Uuid,
    groups: Vec<GroupMembership>,
    assignments: &[AssignmentFact],
) -> Resolution {
    let group_names: BTreeMap<Uuid, &str> = groups
        .iter()
        .map(|g| (g.group_id, g.group_name.as_str()))
        .collect();
    let mut by_profile: BTreeMap<Uuid, Gathered<'_>> = BTreeMap::new();
    for fact in assignments {
        let (tier, group_name) = match fact.target {
            AssignmentTarget::Device { device_id: target } if target == device_id => {
                (Tier::Device, None)
            }
            AssignmentTarget::Group { group_id } => match group_names.get(&group_id) {
                Some(name) => (Tier::Group, Some((*name).to_owned())),
                None => continue,
            },
            AssignmentTarget::AllDevices => (Tier::AllDevices, None),
            AssignmentTarget::Device { .. } => continue,
        };
        let via = Via {
            assignment_id: fact.assignment_id,
            assigned_at: fact.assigned_at,
            target: fact.target,
            group_name,
        };
        let entry = by_profile
            .entry(fact.profile_id)
            .or_insert_with(|| Gathered {
                fact,
                included_by: Vec::new(),
                excluded_by: Vec::new(),
            });
        match fact.mode {
            AssignmentMode::Include => entry.included_by.push((tier, via)),
            AssignmentMode::Exclude => entry.excluded_by.push(via),
        }
    }

    let best_tier = |g: &Gathered<'_>| g.included_by.iter().map(|(tier, _)| *tier).min();
    let winning_tier = by_profile
        .values()
        .filter(|g| g.excluded_by.is_empty())
        .filter_map(best_tier)
        .min();
    let winner = winning_tier.and_then(|tier| {
        by_profile
            .values()
            .filter(|g| g.excluded_by.is_empty() && best_tier(g) == Some(tier))
            .min_by_key(|g| (g.fact.profile_created_at, g.fact.profile_id))
            .map(|g| Winner {
                profile_id: g.fact.profile_id,
                profile_name: g.fact.profile_name.clone(),
                tier,
                assigned_at: g
                    .included_by
                    .iter()
                    .filter(|(t, _)| *t == tier)
                    .map(|(_, via)| via.assigned_at)
                    .min()
                    .unwrap_or(g.fact.assigned_at),
            })
    });

    let mut candidates: Vec<Candidate> = by_profile
        .into_values()
        .map(|g| {
            let tier = best_tier(&g);
            let (outcome, reason) = if !g.excluded_by.is_empty() {
                (
                    Outcome::Excluded,
                    "excluded by an assignment that applies to the device".into(),
                )
            } else if winner
                .as_ref()
                .is_some_and(|w| w.profile_id == g.fact.profile_id)
            {
                let tier = tier.unwrap_or(Tier::AllDevices);
                (
                    Outcome::Won,
                    format!("{}; the oldest profile of its tier", tier.describe()),
                )
            } else if tier > winning_tier {
                (
                    Outcome::LowerTier,
                    "a higher tier has a profile for the device".into(),
                )
            } else {
                (
                    Outcome::LostToOlder,
                    "an older profile of the same tier wins".into(),
                )
            };
            Candidate {
                profile_id: g.fact.profile_id,
                profile_name: g.fact.profile_name.clone(),
                profile_created_at: g.fact.profile_created_at,
                tier,
                included_by: g.included_by.into_iter().map(|(_, via)| via).collect(),
                excluded_by: g.excluded_by,
                outcome,
                reason,
            }
        })
        .collect();
    candidates.sort_by_key(|c| {
        (
            c.outcome != Outcome::Won,
            c.tier.is_none(),
            c.tier,
            c.profile_created_at,
            c.profile_id,
        )
    });

    let reason = match &winner {
        Some(w) => format!(
            "`{}` is {}, and the oldest-created profile there",
            w.profile_name,
            w.tier.describe()
        ),
        None if candidates.is_empty() => {
            "no profile is assigned to the device, its groups or all devices".into()
        }
        None => "every profile that targets the device is excluded".into(),
    };
    Resolution {
        device_id,
        groups,
        candidates,
        winner,
        reason,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const DEVICE: Uuid = Uuid::from_u128(0xd);
    const OTHER_DEVICE: Uuid = Uuid::from_u128(0xe);
    const SALES: Uuid = Uuid::from_u128(0x5);
    const LAB: Uuid = Uuid::from_u128(0x6);

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn fact(
        profile: u128,
        created: i64,
        target: AssignmentTarget,
        mode: AssignmentMode,
    ) -> AssignmentFact {
        AssignmentFact {
            assignment_id: Uuid::new_v4(),
            profile_id: Uuid::from_u128(profile),
            profile_name: format!("P{profile}"),
            profile_created_at: at(created),
            target,
            mode,
            assigned_at: at(created + 1),
        }
    }

    fn member(group: Uuid) -> GroupMembership {
        GroupMembership {
            group_id: group,
            group_name: format!("G{group}"),
            reason: MembershipReason::StaticMember,
        }
    }

    use AssignmentMode::{Exclude, Include};
    fn group(id: Uuid) -> AssignmentTarget {
        AssignmentTarget::Group { group_id: id }
    }
    fn device(id: Uuid) -> AssignmentTarget {
        AssignmentTarget::Device { device_id: id }
    }
    const ALL: AssignmentTarget = AssignmentTarget::AllDevices;

    fn winner(groups: &[Uuid], facts: &[AssignmentFact]) -> Option<u128> {
        resolve(DEVICE, groups.iter().map(|g| member(*g)).collect(), facts)
            .winning_profile()
            .map(|id| id.as_u128())
    }

    #[test]
    fn nothing_assigned_means_no_profile() {
        let r = resolve(DEVICE, vec![], &[]);
        assert!(r.winner.is_none());
        assert!(r.reason.contains("no profile"));
    }

    #[test]
    fn oldest_profile_of_a_tier_wins_ties_by_id() {
        let facts = [
            fact(2, 10, group(SALES), Include),
            fact(1, 20, group(SALES), Include),
        ];
        assert_eq!(winner(&[SALES], &facts), Some(2));
        let tied = [
            fact(2, 10, group(SALES), Include),
            fact(1, 10, group(SALES), Include),
        ];
        assert_eq!(winner(&[SALES], &tied), Some(1));
    }

    #[test]
    fn tiers_decide_before_age() {
        let facts = [
            fact(1, 0, ALL, Include),
            fact(2, 10, group(SALES), Include),
            fact(3, 20, device(DEVICE), Include),
            fact(4, 0, device(OTHER_DEVICE), Include),
        ];
        assert_eq!(winner(&[SALES], &facts), Some(3));
        assert_eq!(winner(&[SALES], &facts[..2]), Some(2));
        assert_eq!(winner(&[], &facts[..2]), Some(1));
        assert_eq!(winner(&[LAB], &facts[1..2]), None);
    }

    #[test]
    fn exclusions_apply_to_every_tier() {
        let facts = [
            fact(1, 0, ALL, Include),
            fact(1, 0, group(LAB), Exclude),
            fact(2, 10, device(DEVICE), Include),
            fact(2, 10, device(DEVICE), Exclude),
            fact(3, 20, group(SALES), Include),
        ];
        assert_eq!(winner(&[SALES, LAB], &facts), Some(3));
        assert_eq!(winner(&[LAB], &facts), None);
        // Not in LAB: the all-devices default applies, but the direct tier is excluded.
        assert_eq!(winner(&[], &facts), Some(1));
    }

    #[test]
    fn the_explanation_names_every_candidate_and_outcome() {
        let facts = [
            fact(1, 0, ALL, Include),
            fact(2, 10, group(SALES), Include),
            fact(3, 5, group(SALES), Include),
            fact(4, 0, group(SALES), Exclude),
        ];
        let r = resolve(DEVICE, vec![member(SALES)], &facts);
        let outcomes: Vec<(u128, Outcome)> = r
            .candidates
            .iter()
            .map(|c| (c.profile_id.as_u128(), c.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [
                (3, Outcome::Won),
                (2, Outcome::LostToOlder),
                (1, Outcome::LowerTier),
                (4, Outcome::Excluded)
            ]
        );
        assert_eq!(r.winner.as_ref().unwrap().tier, Tier::Group);
        assert_eq!(
            r.candidates[0].included_by[0].group_name.as_deref(),
            Some(format!("G{SALES}").as_str())
        );
        assert!(r.reason.contains("P3"));
    }
}
