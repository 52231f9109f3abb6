//! `GET /v1/audit-log`: admin writes, newest first.

use axum::extract::State;
use unbox_domain::api::{AuditEntry, Page};

use crate::auth::{Authorized, scope};
use crate::error::ApiResult;
use crate::extract::{Json, Query};
use crate::pagination::{PageParams, page};
use crate::state::AppState;

/// The tenant's audit log, newest first.
#[utoipa::path(get, path = "/v1/audit-log", tag = "audit", security(("bearer" = ["audit.read"])),
    params(PageParams), responses((status = 200, body = Page<AuditEntry>)))]
pub async fn list_audit_log(
    State(state): State<AppState>,
    caller: Authorized<scope::AuditRead>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let limit = params.limit();
    let mut conn = state.pool.acquire().await?;
    let rows =
        unbox_db::audit::list(&mut conn, caller.tenant_id, params.after()?, limit + 1).await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.id,
        |r| AuditEntry {
            id: r.id,
            at: r.at,
            actor_kind: r.actor_kind,
            actor_id: r.actor_id,
            action: r.action,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            before: r.before,
            after: r.after,
            request_id: r.request_id,
        },
    )))
}
