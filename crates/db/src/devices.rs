//! Registered devices and the global claims on their hardware identities.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A device as the API shows it (never with its hash).
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub serial_number: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub product_key: Option<String>,
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
    pub tpm_ek_sha256: Option<String>,
    pub device_public_key: Option<serde_json::Value>,
    pub enrollment_state: String,
    pub enrollment_profile_name: Option<String>,
    pub last_contacted_at: Option<DateTime<Utc>>,
    pub assigned_name: Option<String>,
    pub assigned_name_profile_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub revision: i64,
}

/// A device to register.
#[derive(Debug, Clone)]
pub struct NewDevice {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub serial_number: String,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub product_key: Option<String>,
    pub group_tag: Option<String>,
    pub purchase_order_id: Option<String>,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub os_type: String,
    pub os_version: Option<String>,
    pub hardware_hash: Option<String>,
    pub identity: serde_json::Value,
    pub tpm_ek_sha256: Option<String>,
    pub device_public_key: Option<serde_json::Value>,
}

/// The fields an admin edits.
#[derive(Debug, Clone)]
pub struct EditableFields {
    pub group_tag: Option<String>,
    pub purchase_order_id: Option<String>,
    pub user_principal_name: Option<String>,
    pub display_name: Option<String>,
    pub device_ownership: String,
    pub device_category: Option<String>,
    pub account_enabled: bool,
    pub extension_attributes: serde_json::Value,
    pub system_labels: Vec<String>,
}

/// A strong identity key, claimed globally by one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub kind: String,
    pub key: String,
}

/// The owner of a claimed key.
#[derive(Debug, Clone)]
pub struct ClaimOwner {
    pub kind: String,
    pub key: String,
    pub tenant_id: Uuid,
    pub device_id: Uuid,
    /// The owning registration's TPM digest: a registration holding one matches only
    /// requests that carry the same digest.
    pub tpm_ek_sha256: Option<String>,
}

pub async fn insert(conn: &mut PgConnection, device: &NewDevice) -> Result<DeviceRow, sqlx::Error> {
    sqlx::query_as!(
        DeviceRow,
        r#"INSERT INTO devices (tenant_id, id, serial_number, manufacturer, model, product_key,
                group_tag, purchase_order_id, user_principal_name, display_name, os_type, os_version,
                hardware_hash, identity, tpm_ek_sha256, device_public_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
           RETURNING tenant_id, id, serial_number, manufacturer, model, product_key, group_tag,
                purchase_order_id, user_principal_name, display_name, device_ownership,
                device_category, account_enabled, extension_attributes, system_labels, os_type,
                os_version, tpm_ek_sha256, device_public_key, enrollment_state,
                enrollment_profile_name, last_contacted_at, assigned_name,
                assigned_name_profile_id, created_at, updated_at, revision"#,
        device.tenant_id,
        device.id,
        device.serial_number,
        device.manufacturer,
        device.model,
        device.product_key,
        device.group_tag,
        device.purchase_order_id,
        device.user_principal_name,
        device.display_name,
        device.os_type,
        device.os_version,
        device.hardware_hash,
        device.identity,
        device.tpm_ek_sha256,
        device.device_public_key
    )
    .fetch_one(conn)
    .await
}

/// Claims keys for a device. Returns the number claimed: fewer than asked means another
/// device holds one of them (the caller rolls back and reports the owner).
pub async fn claim(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    device_id: Uuid,
    claims: &[Claim],
) -> Result<u64, sqlx::Error> {
    let kinds: Vec<String> = claims.iter().map(|c| c.kind.clone()).collect();
    let keys: Vec<String> = claims.iter().map(|c| c.key.clone()).collect();
    let done = sqlx::query!(
        "INSERT INTO identity_claims (kind, key, tenant_id, device_id)
         SELECT kind, key, $3, $4 FROM UNNEST($1::text[], $2::text[]) AS c (kind, key)
         ON CONFLICT (kind, key) DO NOTHING",
        &kinds,
        &keys,
        tenant_id,
        device_id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Who owns any of these keys, across all tenants.
pub async fn claim_owners(
    conn: &mut PgConnection,
    claims: &[Claim],
) -> Result<Vec<ClaimOwner>, sqlx::Error> {
    let kinds: Vec<String> = claims.iter().map(|c| c.kind.clone()).collect();
    let keys: Vec<String> = claims.iter().map(|c| c.key.clone()).collect();
    sqlx::query_as!(
        ClaimOwner,
        "SELECT c.kind, c.key, c.tenant_id, c.device_id, d.tpm_ek_sha256
         FROM UNNEST($1::text[], $2::text[]) AS wanted (kind, key)
         JOIN identity_claims c ON c.kind = wanted.kind AND c.key = wanted.key
         JOIN devices d ON d.tenant_id = c.tenant_id AND d.id = c.device_id",
        &kinds,
        &keys
    )
    .fetch_all(conn)
    .await
}

pub async fn get(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<DeviceRow>, sqlx::Error> {
    sqlx::query_as!(
        DeviceRow,
        r#"SELECT tenant_id, id, serial_number, manufacturer, model, product_key, group_tag,
                purchase_order_id, user_principal_name, display_name, device_ownership,
                device_category, account_enabled, extension_attributes, system_labels, os_type,
                os_version, tpm_ek_sha256, device_public_key, enrollment_state,
                enrollment_profile_name,
                greatest(last_contacted_at, (SELECT c.last_contacted_at FROM device_contacts c
                     WHERE c.tenant_id = devices.tenant_id AND c.device_id = devices.id)) AS last_contacted_at,
                assigned_name,
                assigned_name_profile_id, created_at, updated_at, revision
           FROM devices WHERE tenant_id = $1 AND id = $2"#,
        tenant_id,
        id
    )
    .fetch_optional(conn)
    .await
}

/// Which of these ids are devices of the tenant.
pub async fn existing_ids(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT id FROM devices WHERE tenant_id = $1 AND id = ANY($2)",
        tenant_id,
        ids
    )
    .fetch_all(conn)
    .await
}

/// Filters of `GET /v1/devices` (all optional, combined with AND).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub serial_number: Option<String>,
    pub group_tag: Option<String>,
    pub user_principal_name: Option<String>,
    /// `Some(true)`: devices that get a profile; `Some(false)`: those that get none.
    pub has_profile: Option<bool>,
    /// Devices whose effective profile is this one.
    pub profile_id: Option<Uuid>,
    /// Free text, matched against serial, manufacturer, model, tag, user and names.
    pub q: Option<String>,
}

pub async fn list(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    filter: &ListFilter,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<DeviceRow>, sqlx::Error> {
    let pattern = filter
        .q
        .as_deref()
        .map(|q| format!("%{}%", crate::like_escape(q)));
    sqlx::query_as!(
        DeviceRow,
        r#"SELECT tenant_id, id, serial_number, manufacturer, model, product_key, group_tag,
                purchase_order_id, user_principal_name, display_name, device_ownership,
                device_category, account_enabled, extension_attributes, system_labels, os_type,
                os_version, tpm_ek_sha256, device_public_key, enrollment_state,
                enrollment_profile_name,
                greatest(last_contacted_at, (SELECT c.last_contacted_at FROM device_contacts c
                     WHERE c.tenant_id = d.tenant_id AND c.device_id = d.id)) AS last_contacted_at,
                assigned_name,
                assigned_name_profile_id, created_at, updated_at, revision
           FROM devices d
           WHERE d.tenant_id = $1
             AND ($2::text IS NULL OR lower(d.serial_number) = lower($2))
             AND ($3::text IS NULL OR lower(d.group_tag) = lower($3))
             AND ($4::text IS NULL OR lower(d.user_principal_name) = lower($4))
             AND ($5::text IS NULL OR d.serial_number ILIKE $5 OR d.manufacturer ILIKE $5
                  OR d.model ILIKE $5 OR d.group_tag ILIKE $5 OR d.user_principal_name ILIKE $5
                  OR d.display_name ILIKE $5 OR d.assigned_name ILIKE $5
                  OR d.purchase_order_id ILIKE $5)
             AND ($6::bool IS NULL OR $6 = EXISTS (
                    SELECT 1 FROM effective_profiles e
                    WHERE e.tenant_id = d.tenant_id AND e.device_id = d.id AND e.profile_id IS NOT NULL))
             AND ($7::uuid IS NULL OR EXISTS (
                    SELECT 1 FROM effective_profiles e
                    WHERE e.tenant_id = d.tenant_id AND e.device_id = d.id AND e.profile_id = $7))
             AND ($8::uuid IS NULL OR d.id > $8)
           ORDER BY d.id
           LIMIT $9"#,
        tenant_id,
        filter.serial_number,
        filter.group_tag,
        filter.user_principal_name,
        pattern,
        filter.has_profile,
        filter.profile_id,
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
    fields: &EditableFields,
) -> Result<DeviceRow, sqlx::Error> {
    sqlx::query_as!(
        DeviceRow,
        r#"UPDATE devices SET group_tag = $3, purchase_order_id = $4, user_principal_name = $5,
                display_name = $6, device_ownership = $7, device_category = $8,
                account_enabled = $9, extension_attributes = $10, system_labels = $11,
                updated_at = now(), revision = revision + 1
           WHERE tenant_id = $1 AND id = $2
           RETURNING tenant_id, id, serial_number, manufacturer, model, product_key, group_tag,
                purchase_order_id, user_principal_name, display_name, device_ownership,
                device_category, account_enabled, extension_attributes, system_labels, os_type,
                os_version, tpm_ek_sha256, device_public_key, enrollment_state,
                enrollment_profile_name,
                greatest(last_contacted_at, (SELECT c.last_contacted_at FROM device_contacts c
                     WHERE c.tenant_id = devices.tenant_id AND c.device_id = devices.id)) AS last_contacted_at,
                assigned_name,
                assigned_name_profile_id, created_at, updated_at, revision"#,
        tenant_id,
        id,
        fields.group_tag,
        fields.purchase_order_id,
        fields.user_principal_name,
        fields.display_name,
        fields.device_ownership,
        fields.device_category,
        fields.account_enabled,
        fields.extension_attributes,
        &fields.system_labels
    )
    .fetch_one(conn)
    .await
}

/// Deregisters a device; its claims go with it (ON DELETE CASCADE), freeing the identity.
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM devices WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        id
    )
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives the device a computer name under a profile, unless the name is taken in the tenant:
/// returns the device's name under the profile, which is the one it already had when it had
/// one (given meanwhile by another instance), else `name`; None when `name` is taken (the
/// caller tries its next candidate).
pub async fn assign_name(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    name: &str,
    profile_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    // Committed without waiting for the WAL flush (the setting lasts to the end of the
    // statement's own transaction): a boot storm names every device on its first download, and
    // a flush each was the cold storm's limit. A name lost to a database crash in the next
    // fraction of a second is given again (or another one) on the device's next download, as
    // the download itself, still in the write batch, would be.
    let done = sqlx::query!(
        "WITH no_flush_wait AS (SELECT set_config('synchronous_commit', 'off', true))
         UPDATE devices SET assigned_name = $3, assigned_name_profile_id = $4
         WHERE tenant_id = $1 AND id = $2
           AND EXISTS (SELECT 1 FROM no_flush_wait)
           AND (assigned_name IS NULL OR assigned_name_profile_id IS DISTINCT FROM $4)
           AND NOT EXISTS (SELECT 1 FROM devices o
                           WHERE o.tenant_id = $1 AND o.id <> $2
                             AND (lower(o.assigned_name) = lower($3) OR lower(o.display_name) = lower($3)))",
        tenant_id,
        id,
        name,
        profile_id
    )
    .execute(&mut *conn)
    .await;
    match done {
        Ok(done) if done.rows_affected() == 1 => return Ok(Some(name.to_owned())),
        Ok(_) => {}
        Err(error) if crate::is_unique_violation(&error, Some("devices_assigned_name_unique")) => {}
        Err(error) => return Err(error),
    }
    sqlx::query_scalar!(
        "SELECT assigned_name FROM devices
         WHERE tenant_id = $1 AND id = $2 AND assigned_name_profile_id = $3",
        tenant_id,
        id,
        profile_id
    )
    .fetch_optional(conn)
    .await
    .map(Option::flatten)
}

/// Locks the device's row for the rest of the transaction and returns its revision.
pub async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT revision FROM devices WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tenant_id,
        id
    )
    .fetch_optional(conn)
    .await
}

/// The effective profile of each of these devices (static groups, direct and all-devices
/// assignments), for lists.
#[derive(Debug, Clone)]
pub struct EffectiveProfile {
    pub device_id: Uuid,
    pub profile_id: Option<Uuid>,
    pub assigned_at: Option<DateTime<Utc>>,
}

pub async fn effective_profiles(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<EffectiveProfile>, sqlx::Error> {
    sqlx::query_as!(
        EffectiveProfile,
        r#"SELECT device_id AS "device_id!", profile_id, assigned_at
           FROM effective_profiles WHERE tenant_id = $1 AND device_id = ANY($2)"#,
        tenant_id,
        ids
    )
    .fetch_all(conn)
    .await
}
