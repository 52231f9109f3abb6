//! `/v1/partner-authorizations`: the partners (OEMs, resellers) a tenant allows to register
//! devices into it.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unbox_db::partners::AuthorizationRow;
use unbox_domain::api::Page;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit;
use crate::auth::{Authorized, scope};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::pagination::{PageParams, page};
use crate::state::AppState;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartnerAuthorizationCreate {
    /// The partner's id (from `unboxd admin partner create`).
    pub partner_id: Uuid,
}

/// A partner the tenant allows to register devices into it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartnerAuthorization {
    pub partner_id: Uuid,
    pub partner_name: String,
    pub authorized_at: DateTime<Utc>,
}

fn to_api(row: AuthorizationRow) -> PartnerAuthorization {
    PartnerAuthorization {
        partner_id: row.partner_id,
        partner_name: row.partner_name,
        authorized_at: row.created_at,
    }
}

/// Authorizes a partner to register devices into this tenant (201; 200 when it already was).
#[utoipa::path(post, path = "/v1/partner-authorizations", tag = "partners", security(("bearer" = ["tenant.write"])),
    request_body = PartnerAuthorizationCreate,
    responses((status = 201, body = PartnerAuthorization), (status = 200, description = "Already authorized", body = PartnerAuthorization),
              (status = 422, description = "No partner has this id", body = unbox_domain::api::Problem)))]
pub async fn authorize_partner(
    State(state): State<AppState>,
    caller: Authorized<scope::TenantWrite>,
    Json(body): Json<PartnerAuthorizationCreate>,
) -> ApiResult<impl IntoResponse> {
    let mut tx = state.pool.begin().await?;
    if unbox_db::partners::get(&mut tx, body.partner_id)
        .await?
        .is_none()
    {
        return Err(ApiError::invalid_field(
            "partnerId",
            "no partner has this id",
        ));
    }
    let location = format!("/v1/partner-authorizations/{}", body.partner_id);
    let Some(row) =
        unbox_db::partners::authorize(&mut tx, caller.tenant_id, body.partner_id).await?
    else {
        let existing =
            unbox_db::partners::authorization(&mut tx, caller.tenant_id, body.partner_id)
                .await?
                .ok_or_else(|| ApiError::conflict("ConcurrentRequest", "retry the request"))?;
        return Ok((
            StatusCode::OK,
            [(header::LOCATION, location)],
            Json(to_api(existing)),
        ));
    };
    let authorization = to_api(row);
    audit::record(
        &mut tx,
        &caller,
        "partner.authorize",
        "partnerAuthorization",
        authorization.partner_id,
        None,
        audit::snapshot(&authorization),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(authorization),
    ))
}

/// The partners this tenant authorized.
#[utoipa::path(get, path = "/v1/partner-authorizations", tag = "partners", security(("bearer" = ["tenant.read"])),
    params(PageParams), responses((status = 200, body = Page<PartnerAuthorization>)))]
pub async fn list_partner_authorizations(
    State(state): State<AppState>,
    caller: Authorized<scope::TenantRead>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<PartnerAuthorization>>> {
    let limit = params.limit();
    let mut conn = state.pool.acquire().await?;
    let rows = unbox_db::partners::list_authorizations(
        &mut conn,
        caller.tenant_id,
        params.after()?,
        limit + 1,
    )
    .await?;
    Ok(Json(page(rows, limit, |r| r.partner_id, to_api)))
}

/// Revokes a partner's authorization: its uploads are refused from now on, and its jobs
/// still running stop before their next chunk.
#[utoipa::path(delete, path = "/v1/partner-authorizations/{partnerId}", tag = "partners", security(("bearer" = ["tenant.write"])),
    params(("partnerId" = Uuid, Path, description = "The partner's id")),
    responses((status = 204), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn revoke_partner(
    State(state): State<AppState>,
    caller: Authorized<scope::TenantWrite>,
    Path(partner_id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    let mut tx = state.pool.begin().await?;
    let row = unbox_db::partners::revoke(&mut tx, caller.tenant_id, partner_id)
        .await?
        .ok_or_else(|| ApiError::not_found("partner authorization"))?;
    audit::record(
        &mut tx,
        &caller,
        "partner.revoke",
        "partnerAuthorization",
        partner_id,
        audit::snapshot(&to_api(row)),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
