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
                membership_rule, processing_state)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           RETURNING tenant_id, id, display_name, description, membership_type, membership_rule,
                processing_state, created_at, updated_at, revision, 0::bigint AS "member_count!""#,
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
                (SELECT count(*) FROM group_members m
                 WHERE m.tenant_id = g.tenant_id AND m.group_id = g.id) AS "member_count!"
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
                (SELECT count(*) FROM group_members m
                 WHERE m.tenant_id = g.tenant_id AND m.group_id = g.id) AS "member_count!"
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
        r#"UPDATE groups SET display_name = $3, description = $4, membership_type = $5,
                membership_rule = $6, processing_state = $7, updated_at = now(),
                revision = revision + 1
           WHERE tenant_id = $1 AND id = $2
           RETURNING tenant_id, id, display_name, description, membership_type, membership_rule,
                processing_state, created_at, updated_at, revision,
                (SELECT count(*) FROM group_members m
                 WHERE m.tenant_id = $1 AND m.group_id = $2) AS "member_count!""#,
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

/// The static groups a device is in, with their names.
#[derive(Debug, Clone)]
pub struct DeviceGroup {
    pub group_id: Uuid,
    pub display_name: String,
}

pub async fn static_groups_of_device(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    device_id: Uuid,
) -> Result<Vec<DeviceGroup>, sqlx::Error> {
    sqlx::query_as!(
        DeviceGroup,
        "SELECT g.id AS group_id, g.display_name
         FROM group_members m JOIN groups g ON g.tenant_id = m.tenant_id AND g.id = m.group_id
         WHERE m.tenant_id = $1 AND m.device_id = $2
         ORDER BY g.display_name, g.id",
        tenant_id,
        device_id
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
