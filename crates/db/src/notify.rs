//! PostgreSQL notifications, sent inside the writing transaction so that they are delivered
//! only when (and if) it commits.

use sqlx::PgConnection;
use uuid::Uuid;

/// Channel for "this tenant's groups, rules or assignments changed": instances drop their
/// cached view of the tenant.
pub const TENANT_CHANGED: &str = "unbox_invalidate";
/// Channel that wakes the membership workers.
pub const MEMBERSHIP_WORK: &str = "unbox_membership";

pub async fn tenant_changed(conn: &mut PgConnection, tenant_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "SELECT pg_notify('unbox_invalidate', $1)",
        tenant_id.to_string()
    )
    .execute(&mut *conn)
    .await?;
    // Kept for instances that miss the notification (see `cache_changes_since`).
    sqlx::query!(
        "INSERT INTO device_cache_changes (tenant_id) VALUES ($1)",
        tenant_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("SELECT pg_notify('unbox_membership', '')")
        .execute(conn)
        .await?;
    Ok(())
}

/// A point in the database's commit order: `pg_current_snapshot()` as text.
pub async fn snapshot(conn: &mut PgConnection) -> Result<String, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT pg_current_snapshot()::text AS "snapshot!""#)
        .fetch_one(conn)
        .await
}

/// A change the device cache is told of: anything of the tenant, or one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheChange {
    pub tenant_id: Uuid,
    pub device_id: Option<Uuid>,
}

/// The changes (migration 20261202000009) whose transactions were not yet committed in
/// `since`, a [`snapshot`]: what an instance that had heard everything up to `since` may have
/// missed.
/// Changes written by `origin` itself are left out, as its notifications are: it applied them
/// when it wrote them.
pub async fn cache_changes_since(
    conn: &mut PgConnection,
    since: &str,
    origin: &str,
) -> Result<Vec<CacheChange>, sqlx::Error> {
    sqlx::query_as!(
        CacheChange,
        "SELECT DISTINCT tenant_id, device_id FROM device_cache_changes
         WHERE xid >= pg_snapshot_xmin($1::text::pg_snapshot)
           AND NOT pg_visible_in_snapshot(xid, $1::text::pg_snapshot)
           AND origin IS DISTINCT FROM $2",
        since,
        origin
    )
    .fetch_all(conn)
    .await
}

/// Forgets changes older than `seconds`.
pub async fn prune_cache_changes(
    conn: &mut PgConnection,
    seconds: f64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "DELETE FROM device_cache_changes WHERE changed_at < now() - make_interval(secs => $1)",
        seconds
    )
    .execute(conn)
    .await?
    .rows_affected())
}
