//! What the device call reads to fill its per-instance cache: a device with its claims and
//! its open deployment.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A device as the device call needs it.
#[derive(Debug, Clone)]
pub struct ServedDevice {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub serial_number: String,
    pub display_name: Option<String>,
    pub assigned_name: Option<String>,
    pub assigned_name_profile_id: Option<Uuid>,
    pub device_public_key: Option<serde_json::Value>,
    pub os_type: String,
    pub enrollment_profile_name: Option<String>,
    pub tpm_ek_sha256: Option<String>,
    /// Its claimed keys as `kind:key`.
    pub claims: Vec<String>,
    pub open_id: Option<Uuid>,
    pub open_profile_id: Option<Uuid>,
    pub open_opened_at: Option<DateTime<Utc>>,
    pub open_last_download_at: Option<DateTime<Utc>>,
    pub open_timeout_at: Option<DateTime<Utc>>,
    pub open_timeout_minutes: Option<i32>,
}

pub async fn get(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<ServedDevice>, sqlx::Error> {
    sqlx::query_as!(
        ServedDevice,
        r#"SELECT d.tenant_id, d.id, d.serial_number, d.display_name, d.assigned_name,
                  d.assigned_name_profile_id, d.device_public_key, d.os_type,
                  d.enrollment_profile_name, d.tpm_ek_sha256,
                  array(SELECT c.kind || ':' || c.key FROM identity_claims c
                        WHERE c.tenant_id = d.tenant_id AND c.device_id = d.id) AS "claims!",
                  o.id AS "open_id?", o.profile_id AS "open_profile_id?",
                  o.opened_at AS "open_opened_at?", o.last_download_at AS "open_last_download_at?",
                  o.timeout_at AS "open_timeout_at?", o.timeout_minutes AS "open_timeout_minutes?"
           FROM devices d
           LEFT JOIN LATERAL (
               SELECT x.id, x.profile_id, x.opened_at, x.timeout_at, x.timeout_minutes,
                      greatest(x.last_download_at,
                               (SELECT c.last_download_at FROM device_contacts c
                                WHERE c.tenant_id = x.tenant_id AND c.device_id = x.device_id
                                  AND c.last_download_deployment_id = x.id)) AS last_download_at
               FROM deployments x
               WHERE x.tenant_id = d.tenant_id AND x.device_id = d.id AND x.status = 'inProgress'
               ORDER BY x.opened_at DESC LIMIT 1) o ON true
           WHERE d.tenant_id = $1 AND d.id = $2"#,
        tenant_id,
        id
    )
    .fetch_optional(conn)
    .await
}

/// Names the writing instance for the rest of the transaction: the cache triggers put it in
/// their notifications, so that the instance can skip its own.
pub async fn set_origin(conn: &mut PgConnection, origin: &str) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!("SELECT set_config('unbox.origin', $1, true)", origin)
        .fetch_one(conn)
        .await?;
    Ok(())
}
