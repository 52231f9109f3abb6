//! Stored membership of dynamic groups: the background recompute of a group after its rule
//! changed, and the re-evaluation of devices whose properties changed. Both are set-based and
//! idempotent; a recompute keeps a cursor so that it resumes after a crash.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A device's rule-visible fields.
#[derive(Debug, Clone)]
pub struct RuleDeviceRow {
    pub id: Uuid,
    pub serial_number: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub group_tag: Option<String>,
    pub purchase_order_id: Option<String>,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub device_ownership: String,
    pub device_category: Option<String>,
    pub account_enabled: bool,
    pub extension_attributes: serde_json::Value,
    pub system_labels: Vec<String>,
    pub os_type: String,
    pub os_version: Option<String>,
    pub enrollment_profile_name: Option<String>,
}

/// The next devices of a tenant after `after`, in id order.
pub async fn device_batch(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<RuleDeviceRow>, sqlx::Error> {
    sqlx::query_as!(
        RuleDeviceRow,
        "SELECT id, serial_number, manufacturer, model, group_tag, purchase_order_id,
                user_principal_name, display_name, device_ownership, device_category,
                account_enabled, extension_attributes, system_labels, os_type, os_version,
                enrollment_profile_name
         FROM devices WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2)
         ORDER BY id LIMIT $3",
        tenant_id,
        after,
        limit
    )
    .fetch_all(conn)
    .await
}

/// These devices of a tenant (missing ones are skipped).
pub async fn devices_by_id(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<RuleDeviceRow>, sqlx::Error> {
    sqlx::query_as!(
        RuleDeviceRow,
        "SELECT id, serial_number, manufacturer, model, group_tag, purchase_order_id,
                user_principal_name, display_name, device_ownership, device_category,
                account_enabled, extension_attributes, system_labels, os_type, os_version,
                enrollment_profile_name
         FROM devices WHERE tenant_id = $1 AND id = ANY($2)",
        tenant_id,
        ids
    )
    .fetch_all(conn)
    .await
}

/// A group whose stored membership must be recomputed, claimed by this instance.
#[derive(Debug, Clone)]
pub struct RecomputeJob {
    pub tenant_id: Uuid,
    pub group_id: Uuid,
    pub membership_rule: String,
    pub rule_revision: i64,
    pub cursor: Option<Uuid>,
    pub started_at: DateTime<Utc>,
}

/// Claims the next group to recompute for `lease_seconds` (renewed by every batch); another
/// instance takes it over when the lease lapses, resuming from its cursor.
pub async fn claim_recompute(
    conn: &mut PgConnection,
    lease_seconds: f64,
) -> Result<Option<RecomputeJob>, sqlx::Error> {
    sqlx::query_as!(
        RecomputeJob,
        r#"UPDATE groups g
           SET membership_lease_until = now() + make_interval(secs => $1),
               membership_started_at = coalesce(g.membership_started_at, now())
           FROM (SELECT tenant_id, id FROM groups
                 WHERE membership_type = 'dynamic' AND processing_state = 'on'
                   AND membership_revision < rule_revision
                   AND (membership_lease_until IS NULL OR membership_lease_until < now())
                 ORDER BY updated_at
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED) next
           WHERE g.tenant_id = next.tenant_id AND g.id = next.id
           RETURNING g.tenant_id, g.id AS group_id, g.membership_rule AS "membership_rule!",
                     g.rule_revision, g.membership_cursor AS cursor,
                     g.membership_started_at AS "started_at!""#,
        lease_seconds
    )
    .fetch_optional(conn)
    .await
}

/// Locks the group's row against rule changes for the rest of the transaction and tells
/// whether its rule is still at `revision` (and on).
pub async fn rule_still_at(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    group_id: Uuid,
    revision: i64,
) -> Result<bool, sqlx::Error> {
    let current = sqlx::query_scalar!(
        "SELECT rule_revision FROM groups
         WHERE tenant_id = $1 AND id = $2 AND processing_state = 'on' FOR SHARE",
        tenant_id,
        group_id
    )
    .fetch_optional(conn)
    .await?;
    Ok(current == Some(revision))
}

/// Makes the stored membership of the devices in (`after`, `through`] exactly `members`,
/// and moves the recompute's cursor to `through`.
#[allow(clippy::too_many_arguments)]
pub async fn apply_range(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    group_id: Uuid,
    after: Option<Uuid>,
    through: Option<Uuid>,
    members: &[Uuid],
    lease_seconds: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM dynamic_group_members
         WHERE tenant_id = $1 AND group_id = $2
           AND ($3::uuid IS NULL OR device_id > $3) AND ($4::uuid IS NULL OR device_id <= $4)
           -- NOT IN over a subquery is a hashed anti-join; `<> ALL(array)` would be linear per row.
           AND device_id NOT IN (SELECT unnest($5::uuid[]))",
        tenant_id,
        group_id,
        after,
        through,
        members
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "INSERT INTO dynamic_group_members (tenant_id, group_id, device_id)
         SELECT $1, $2, d FROM UNNEST($3::uuid[]) AS d
         ON CONFLICT DO NOTHING",
        tenant_id,
        group_id,
        members
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE groups SET membership_cursor = $3, membership_lease_until = now() + make_interval(secs => $4)
         WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        group_id,
        through,
        lease_seconds
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a recompute complete: the stored membership follows `revision` as of its start.
pub async fn finish_recompute(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    group_id: Uuid,
    revision: i64,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "UPDATE groups SET membership_revision = $3, membership_cursor = NULL,
                membership_as_of = membership_started_at, membership_started_at = NULL,
                membership_lease_until = NULL,
                member_count = (SELECT count(*) FROM dynamic_group_members
                                WHERE tenant_id = $1 AND group_id = $2)
         WHERE tenant_id = $1 AND id = $2 AND rule_revision = $3",
        tenant_id,
        group_id,
        revision
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A device queued for re-evaluation.
#[derive(Debug, Clone)]
pub struct DirtyDevice {
    pub tenant_id: Uuid,
    pub device_id: Uuid,
}

/// Takes up to `limit` queued devices off the queue (for the rest of the transaction: a
/// rollback puts them back).
pub async fn take_dirty(
    conn: &mut PgConnection,
    limit: i64,
) -> Result<Vec<DirtyDevice>, sqlx::Error> {
    sqlx::query_as!(
        DirtyDevice,
        "DELETE FROM membership_dirty_devices q
         USING (SELECT tenant_id, device_id FROM membership_dirty_devices
                ORDER BY queued_at LIMIT $1 FOR UPDATE SKIP LOCKED) next
         WHERE q.tenant_id = next.tenant_id AND q.device_id = next.device_id
         RETURNING q.tenant_id, q.device_id",
        limit
    )
    .fetch_all(conn)
    .await
}

/// The tenant's live dynamic groups with their rules, locked against rule changes for the rest
/// of the transaction.
#[derive(Debug, Clone)]
pub struct LiveRule {
    pub group_id: Uuid,
    pub membership_rule: String,
}

pub async fn lock_live_rules(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<LiveRule>, sqlx::Error> {
    sqlx::query_as!(
        LiveRule,
        r#"SELECT id AS group_id, membership_rule AS "membership_rule!" FROM groups
           WHERE tenant_id = $1 AND membership_type = 'dynamic' AND processing_state = 'on'
           ORDER BY id FOR SHARE"#,
        tenant_id
    )
    .fetch_all(conn)
    .await
}

/// Makes the stored memberships of `devices` in the live groups `groups` exactly the pairs
/// given (`pair_groups[i]` holds `pair_devices[i]`), touching only what differs, and moves
/// those groups' member counts by the difference.
pub async fn replace_device_memberships(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    devices: &[Uuid],
    groups: &[Uuid],
    pair_groups: &[Uuid],
    pair_devices: &[Uuid],
) -> Result<(), sqlx::Error> {
    let removed = sqlx::query_scalar!(
        "DELETE FROM dynamic_group_members m
         WHERE m.tenant_id = $1 AND m.device_id = ANY($2) AND m.group_id = ANY($3)
           AND NOT EXISTS (SELECT 1 FROM UNNEST($4::uuid[], $5::uuid[]) AS keep (g, d)
                           WHERE keep.g = m.group_id AND keep.d = m.device_id)
         RETURNING m.group_id",
        tenant_id,
        devices,
        groups,
        pair_groups,
        pair_devices
    )
    .fetch_all(&mut *conn)
    .await?;
    let added = sqlx::query_scalar!(
        "INSERT INTO dynamic_group_members (tenant_id, group_id, device_id)
         SELECT $1, g, d FROM UNNEST($2::uuid[], $3::uuid[]) AS pairs (g, d)
         ON CONFLICT DO NOTHING
         RETURNING group_id",
        tenant_id,
        pair_groups,
        pair_devices
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut deltas: std::collections::BTreeMap<Uuid, i64> = std::collections::BTreeMap::new();
    for group in removed {
        *deltas.entry(group).or_default() -= 1;
    }
    for group in added {
        *deltas.entry(group).or_default() += 1;
    }
    deltas.retain(|_, delta| *delta != 0);
    if !deltas.is_empty() {
        let (ids, changes): (Vec<Uuid>, Vec<i64>) = deltas.into_iter().unzip();
        sqlx::query!(
            "UPDATE groups g SET member_count = greatest(0, g.member_count + c.delta)
             FROM UNNEST($2::uuid[], $3::bigint[]) AS c (id, delta)
             WHERE g.tenant_id = $1 AND g.id = c.id",
            tenant_id,
            &ids,
            &changes
        )
        .execute(conn)
        .await?;
    }
    Ok(())
}

/// How fresh the tenant's stored membership is, for lists over many devices.
#[derive(Debug, Clone)]
pub struct Freshness {
    /// The oldest complete time among live dynamic groups; `None` with no dynamic group.
    pub as_of: Option<DateTime<Utc>>,
    /// Whether any recompute or device re-evaluation is pending.
    pub evaluating: bool,
}

pub async fn freshness(conn: &mut PgConnection, tenant_id: Uuid) -> Result<Freshness, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT
             (SELECT min(coalesce(membership_as_of, '-infinity'::timestamptz)) FROM groups
              WHERE tenant_id = $1 AND membership_type = 'dynamic' AND processing_state = 'on') AS as_of,
             (EXISTS (SELECT 1 FROM groups
                      WHERE tenant_id = $1 AND membership_type = 'dynamic' AND processing_state = 'on'
                        AND membership_revision < rule_revision)
              OR EXISTS (SELECT 1 FROM membership_dirty_devices WHERE tenant_id = $1)) AS "evaluating!""#,
        tenant_id
    )
    .fetch_one(conn)
    .await?;
    Ok(Freshness {
        as_of: row.as_of,
        evaluating: row.evaluating,
    })
}

fn extension_attributes(value: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

/// The rule-visible fields of a row that has the device columns (both row types do).
macro_rules! rule_fields {
    ($row:expr) => {
        unbox_domain::rule_device::RuleDeviceFields {
            id: $row.id,
            display_name: $row.display_name.clone(),
            manufacturer: $row.manufacturer.clone(),
            model: $row.model.clone(),
            os_type: Some($row.os_type.clone()),
            os_version: $row.os_version.clone(),
            ownership: Some($row.device_ownership.clone()),
            category: $row.device_category.clone(),
            enrollment_profile_name: $row.enrollment_profile_name.clone(),
            serial_number: Some($row.serial_number.clone()),
            group_tag: $row.group_tag.clone(),
            purchase_order_id: $row.purchase_order_id.clone(),
            user_principal_name: $row.user_principal_name.clone(),
            extension_attributes: extension_attributes(&$row.extension_attributes),
            account_enabled: $row.account_enabled,
            system_labels: $row.system_labels.clone(),
        }
    };
}

impl RuleDeviceRow {
    pub fn rule_fields(&self) -> unbox_domain::rule_device::RuleDeviceFields {
        rule_fields!(self)
    }
}

impl crate::devices::DeviceRow {
    pub fn rule_fields(&self) -> unbox_domain::rule_device::RuleDeviceFields {
        rule_fields!(self)
    }
}
