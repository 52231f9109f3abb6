//! Recording admin writes in the audit log, inside the transaction of the write.

use serde::Serialize;
use sqlx::PgConnection;

use crate::auth::TenantCaller;
use crate::error::ApiError;
use crate::telemetry::current_request_id;

/// A resource's state as the audit log keeps it.
pub fn snapshot(value: &impl Serialize) -> Option<serde_json::Value> {
    serde_json::to_value(value).ok()
}

/// Records `action` on a resource with its state before and after.
pub async fn record(
    conn: &mut PgConnection,
    caller: &TenantCaller,
    action: &str,
    resource_type: &str,
    resource_id: impl ToString,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
) -> Result<(), ApiError> {
    unbox_db::audit::record(
        conn,
        unbox_db::audit::NewEntry {
            tenant_id: caller.tenant_id,
            actor_kind: caller.actor_kind,
            actor_id: Some(caller.actor_id.clone()),
            action,
            resource_type,
            resource_id: Some(resource_id.to_string()),
            before,
            after,
            request_id: current_request_id(),
        },
    )
    .await?;
    Ok(())
}
