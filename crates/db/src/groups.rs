//! Device groups and the members of static groups.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct GroupRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub display_name: String,
    pub description: Option<String>,
    pub membership_type: String,
    pub membership_rule: Option<String>,
    pub processing_state: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub revision: i64,
    pub member_count: i64,
    pub rule_revision: i64,
    pub membership_revision: i64,
    pub membership_as_of: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct GroupFields {
    pub display_name: String,
    pub description: Option<String>,
    pub membership_type: String,
    pub membership_rule: Option<String>,
    pub processing_state: String,
}

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    fields: &GroupFields,
) -> Result<GroupRow, sqlx::Error> {
    sqlx::query_as!(
        GroupRow,
        r#"INSERT INTO groups (tenant_id, id, display_name, description, membership_type,
                membership_rule, processing_state, membership_revision, membership_as_of)
           VALUES ($1, $2, $3, $4, $5, $6, $7,
                   CASE WHEN $5 = 'static' THEN 1 ELSE 0 END,
                   CASE WHEN $5 = 'static' THEN now() END)
           RETURNING tenant_id, id, display_name, description, membership_type, membership_rule,
                processing_state, created_at, updated_at, revision, 0::bigint AS "member_count!",
                rule_revision, membership_revision, membership_as_of"#,
        tenant_id,
        id,
        fields.display_name,
        fields.description,
        fields.membership_type,
        fields.membership_rule,
        fields.processing_state
    )
    .fetch_one(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<GroupRow>, sqlx::Error> {
    sqlx::query_as!(
        GroupRow,
        r#"SELECT g.tenant_id, g.id, g.display_name, g.description, g.membership_type,
                g.membership_rule, g.processing_state, g.created_at, g.updated_at, g.revision,
                (CASE WHEN g.membership_type = 'static'
                      THEN (SELECT count(*) FROM group_members m
                            WHERE m.tenant_id = g.tenant_id AND m.group_id = g.id)
                      ELSE g.member_count END) AS "member_count!",
                g.rule_revision, g.membership_revision, g.membership_as_of
           FROM groups g WHERE g.tenant_id = $1 AND g.id = $2"#,
        tenant_id,
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
) -> Result<Vec<GroupRow>, sqlx::Error> {
    sqlx::query_as!(
        GroupRow,
        r#"SELECT g.tenant_id, g.id, g.display_name, g.description, g.membership_type,
                g.membership_rule, g.processing_state, g.created_at, g.updated_at, g.revision,
                (CASE WHEN g.membership_type = 'static'
                      THEN (SELECT count(*) FROM group_members m
                            WHERE m.tenant_id = g.tenant_id AND m.group_id = g.id)
                      ELSE g.member_count END) AS "member_count!",
                g.rule_revision, g.membership_revision, g.membership_as_of
           FROM groups g
           WHERE g.tenant_id = $1 AND ($2::uuid IS NULL OR g.id > $2)
           ORDER BY g.id LIMIT $3"#,
        tenant_id,
        after,
        limit
    )
    .fetch_all(conn)
    .await
}

pub async fn update(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    fields: &GroupFields,
) -> Result<GroupRow, sqlx::Error> {
    sqlx::query_as!(
        GroupRow,
        r#"WITH changed AS (
               SELECT (membership_type = 'dynamic'
                       AND (membership_rule IS DISTINCT FROM $6
                            OR (processing_state = 'paused' AND $7 = 'on'))) AS reevaluate
               FROM groups WHERE tenant_id = $1 AND id = $2
           )
           UPDATE groups g SET display_name = $3, description = $4, membership_type = $5,
                membership_rule = $6, processing_state = $7, updated_at = now(),
                revision = revision + 1,
                -- A new rule (or a rule resumed) needs its membership computed again.
                rule_revision = rule_revision + CASE WHEN changed.reevaluate THEN 1 ELSE 0 END,
                membership_cursor = CASE WHEN changed.reevaluate THEN NULL ELSE membership_cursor END,
                membership_started_at = CASE WHEN changed.reevaluate THEN NULL ELSE membership_started_at END,
                membership_lease_until = CASE WHEN changed.reevaluate THEN NULL ELSE membership_lease_until END
           FROM changed
           WHERE g.tenant_id = $1 AND g.id = $2
           RETURNING g.tenant_id, g.id, g.display_name, g.description, g.membership_type,
                g.membership_rule, g.processing_state, g.created_at, g.updated_at, g.revision,
                (CASE WHEN g.membership_type = 'static'
                      THEN (SELECT count(*) FROM group_members m
                            WHERE m.tenant_id = $1 AND m.group_id = $2)
                      ELSE g.member_count END) AS "member_count!",
                g.rule_revision, g.membership_revision, g.membership_as_of"#,
        tenant_id,
        id,
        fields.display_name,
        fields.description,
        fields.membership_type,
        fields.membership_rule,
        fields.processing_state
    )
    .fetch_one(conn)
    .await
}

/// Deletes a group with its members and assignments (ON DELETE CASCADE).
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM groups WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Adds members in one statement; ids already in the group are left as they are.
/// Returns the ids newly added.
pub async fn add_members(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    group_id: Uuid,
    device_ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO group_members (tenant_id, group_id, device_id)
         SELECT $1, $2, d FROM UNNEST($3::uuid[]) AS d
         ON CONFLICT DO NOTHING
         RETURNING device_id",
        tenant_id,
        group_id,
        device_ids
    )
    .fetch_all(conn)
    .await
}

pub async fn remove_member(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    group_id: Uuid,
    device_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM group_members WHERE tenant_id = $1 AND group_id = $2 AND device_id = $3",
        tenant_id,
        group_id,
        device_id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

#[derive(Debug, Clone)]
pub struct MemberRow {
    pub device_id: Uuid,
    pub serial_number: String,
    pub display_name: Option<String>,
    pub added_at: DateTime<Utc>,
}

pub async fn members(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    group_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as!(
        MemberRow,
        "SELECT m.device_id, d.serial_number, d.display_name, m.added_at
         FROM group_members m JOIN devices d ON d.tenant_id = m.tenant_id AND d.id = m.device_id
         WHERE m.tenant_id = $1 AND m.group_id = $2 AND ($3::uuid IS NULL OR m.device_id > $3)
         ORDER BY m.device_id LIMIT $4",
        tenant_id,
        group_id,
        after,
        limit
    )
    .fetch_all(conn)
    .await
}

/// A group a device is in by stored membership.
#[derive(Debug, Clone)]
pub struct DeviceGroup {
    pub group_id: Uuid,
    pub display_name: String,
    /// `static`, or `dynamic` for a paused dynamic group's stored membership.
    pub membership_type: String,
}

/// The groups whose stored membership holds the device and that are not evaluated live:
/// static groups, and paused dynamic groups (which keep their last stored membership).
pub async fn stored_groups_of_device(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    device_id: Uuid,
) -> Result<Vec<DeviceGroup>, sqlx::Error> {
    sqlx::query_as!(
        DeviceGroup,
        r#"SELECT g.id AS "group_id!", g.display_name AS "display_name!", g.membership_type AS "membership_type!"
           FROM group_members m JOIN groups g ON g.tenant_id = m.tenant_id AND g.id = m.group_id
           WHERE m.tenant_id = $1 AND m.device_id = $2
           UNION ALL
           SELECT g.id, g.display_name, g.membership_type
           FROM dynamic_group_members m JOIN groups g ON g.tenant_id = m.tenant_id AND g.id = m.group_id
           WHERE m.tenant_id = $1 AND m.device_id = $2 AND g.processing_state = 'paused'"#,
        tenant_id,
        device_id
    )
    .fetch_all(conn)
    .await
}

/// A dynamic group's rule, as the serving path and the worker compile it.
#[derive(Debug, Clone)]
pub struct DynamicRule {
    pub group_id: Uuid,
    pub display_name: String,
    pub membership_rule: String,
    pub processing_state: String,
    pub rule_revision: i64,
}

/// The tenant's dynamic groups and their rules.
pub async fn dynamic_rules(
    conn: &mut PgConnection,
    tenant_id: Uuid,
) -> Result<Vec<DynamicRule>, sqlx::Error> {
    sqlx::query_as!(
        DynamicRule,
        r#"SELECT id AS group_id, display_name, membership_rule AS "membership_rule!", processing_state, rule_revision
           FROM groups WHERE tenant_id = $1 AND membership_type = 'dynamic'
           ORDER BY id"#,
        tenant_id
    )
    .fetch_all(conn)
    .await
}

/// Members of a dynamic group, from its stored membership.
pub async fn dynamic_members(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    group_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as!(
        MemberRow,
        r#"SELECT m.device_id, d.serial_number, d.display_name, d.created_at AS added_at
           FROM dynamic_group_members m JOIN devices d ON d.tenant_id = m.tenant_id AND d.id = m.device_id
           WHERE m.tenant_id = $1 AND m.group_id = $2 AND ($3::uuid IS NULL OR m.device_id > $3)
           ORDER BY m.device_id LIMIT $4"#,
        tenant_id,
        group_id,
        after,
        limit
    )
    .fetch_all(conn)
    .await
}

/// Locks the group's row for the rest of the transaction and returns its revision.
pub async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT revision FROM groups WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tenant_id,
        id
    )
    .fetch_optional(conn)
    .await
}
