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
    sqlx::query!("SELECT pg_notify('unbox_membership', '')")
        .execute(conn)
        .await?;
    Ok(())
}
