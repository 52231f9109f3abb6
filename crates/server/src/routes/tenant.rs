//! `/v1/tenant`: the caller's tenant and its branding.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use unbox_db::tenants::TenantRow;
use unbox_domain::api::{Branding, Tenant, TenantPatch};
use unbox_domain::profile::merge_patch;

use crate::audit;
use crate::auth::{Authorized, scope};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, check_if_match, etag};
use crate::state::AppState;

fn to_api(row: TenantRow) -> Tenant {
    Tenant {
        id: row.id,
        display_name: row.display_name,
        domain: row.domain,
        branding: serde_json::from_value(row.branding).unwrap_or_default(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

fn with_etag(row: TenantRow) -> impl IntoResponse {
    let tag = etag(row.revision);
    ([(axum::http::header::ETAG, tag)], Json(to_api(row)))
}

/// Checks a tenant's fields; shared with `unboxd admin bootstrap`.
pub fn validate(
    display_name: &str,
    domain: &str,
    branding: &Branding,
) -> Vec<unbox_domain::api::FieldError> {
    use unbox_domain::api::FieldError;
    let mut errors = Vec::new();
    if display_name.trim().is_empty() || display_name.chars().count() > 256 {
        errors.push(FieldError::new(
            "displayName",
            "must be 1 to 256 characters",
        ));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = domain.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !domain_ok {
        errors.push(FieldError::new(
            "domain",
            format!("`{domain}` is not a DNS domain name"),
        ));
    }
    if let Some(url) = &branding.logo_url
        && (!(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2048)
    {
        errors.push(FieldError::new(
            "branding.logoUrl",
            "must be an http(s) URL of at most 2,048 characters",
        ));
    }
    if branding
        .display_name
        .as_ref()
        .is_some_and(|n| n.chars().count() > 256)
    {
        errors.push(FieldError::new(
            "branding.displayName",
            "is longer than 256 characters",
        ));
    }
    if branding
        .sign_in_text
        .as_ref()
        .is_some_and(|t| t.chars().count() > 1000)
    {
        errors.push(FieldError::new(
            "branding.signInText",
            "is longer than 1,000 characters",
        ));
    }
    errors
}

/// The caller's tenant.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant", security(("bearer" = ["tenant.read"])),
    responses((status = 200, body = Tenant), (status = 401, body = unbox_domain::api::Problem),
              (status = 403, body = unbox_domain::api::Problem)))]
pub async fn get_tenant(
    State(state): State<AppState>,
    caller: Authorized<scope::TenantRead>,
) -> ApiResult<impl IntoResponse> {
    let mut conn = state.pool.acquire().await?;
    let row = unbox_db::tenants::get(&mut conn, caller.tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(with_etag(row))
}

/// Changes the tenant's name, domain or branding (a JSON merge patch; `If-Match` honoured).
#[utoipa::path(patch, path = "/v1/tenant", tag = "tenant", security(("bearer" = ["tenant.write"])),
    request_body = TenantPatch,
    responses((status = 200, body = Tenant), (status = 412, body = unbox_domain::api::Problem),
              (status = 422, body = unbox_domain::api::Problem)))]
pub async fn patch_tenant(
    State(state): State<AppState>,
    caller: Authorized<scope::TenantWrite>,
    headers: HeaderMap,
    Json(patch): Json<serde_json::Value>,
) -> ApiResult<impl IntoResponse> {
    let mut tx = state.pool.begin().await?;
    if !unbox_db::tenants::lock(&mut tx, caller.tenant_id).await? {
        return Err(ApiError::not_found("tenant"));
    }
    let before = unbox_db::tenants::get(&mut tx, caller.tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    check_if_match(&headers, before.revision)?;
    let before = to_api(before);
    let mut merged = serde_json::json!({
        "displayName": before.display_name, "domain": before.domain, "branding": before.branding,
    });
    merge_patch(&mut merged, &patch);
    let fields: TenantPatch = serde_json::from_value(merged)
        .map_err(|e| ApiError::bad_request("InvalidBody", e.to_string()))?;
    let display_name = fields.display_name.unwrap_or_default();
    let domain = fields.domain.unwrap_or_default();
    let branding = fields.branding.unwrap_or_default();
    let errors = validate(&display_name, &domain, &branding);
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    let branding_json = serde_json::to_value(&branding).map_err(ApiError::internal)?;
    let row = unbox_db::tenants::update(
        &mut tx,
        caller.tenant_id,
        &display_name,
        &domain,
        &branding_json,
    )
    .await?;
    let after = to_api(row.clone());
    audit::record(
        &mut tx,
        &caller,
        "tenant.update",
        "tenant",
        caller.tenant_id,
        audit::snapshot(&before),
        audit::snapshot(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(with_etag(row))
}
