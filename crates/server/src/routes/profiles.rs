//! `/v1/profiles`: deployment profiles, their assignments, their devices and offline files.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use unbox_db::profiles::ProfileRow;
use unbox_domain::api::{
    Assignment, AssignmentCreate, AssignmentMode, AssignmentTarget, Device, Page, Profile,
};
use unbox_domain::profile::{MAX_PROFILES_PER_TENANT, ProfileSettings, merge_patch};
use unbox_domain::profile_document::{TenantFacts, render_offline};
use uuid::Uuid;

use crate::audit;
use crate::auth::{Authorized, scope};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query, check_if_match, etag};
use crate::pagination::PageParams;
use crate::resolve::{assignment_mode, assignment_target};
use crate::routes::devices;
use crate::state::AppState;

pub fn settings_of(row: &ProfileRow) -> ApiResult<ProfileSettings> {
    serde_json::from_value(row.settings.clone()).map_err(ApiError::internal)
}

fn to_api(row: &ProfileRow) -> ApiResult<Profile> {
    Ok(Profile {
        id: row.id,
        settings: settings_of(row)?,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

fn validated(settings: ProfileSettings) -> ApiResult<ProfileSettings> {
    let errors = settings.validate();
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(ApiError::invalid_fields(errors))
    }
}

fn parse_settings(value: serde_json::Value) -> ApiResult<ProfileSettings> {
    serde_json::from_value(value).map_err(|e| ApiError::bad_request("InvalidBody", e.to_string()))
}

pub async fn load(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> ApiResult<ProfileRow> {
    unbox_db::profiles::get(conn, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("profile"))
}

/// Creates a profile (at most 350 per tenant, as in Autopilot).
#[utoipa::path(post, path = "/v1/profiles", tag = "profiles", security(("bearer" = ["profiles.write"])),
    request_body = ProfileSettings,
    responses((status = 201, body = Profile), (status = 422, body = unbox_domain::api::Problem)))]
pub async fn create_profile(
    State(state): State<AppState>,
    caller: Authorized<scope::ProfilesWrite>,
    Json(body): Json<serde_json::Value>,
) -> ApiResult<impl IntoResponse> {
    let settings = validated(parse_settings(body)?)?;
    let json = serde_json::to_value(&settings).map_err(ApiError::internal)?;
    let mut tx = state.pool.begin().await?;
    // The tenant's row lock makes the count and the insert one step under concurrency.
    unbox_db::tenants::lock(&mut tx, caller.tenant_id).await?;
    if unbox_db::profiles::count(&mut tx, caller.tenant_id).await? >= MAX_PROFILES_PER_TENANT {
        return Err(ApiError::unprocessable(
            "ProfileLimitReached",
            format!("a tenant holds at most {MAX_PROFILES_PER_TENANT} profiles; delete one first"),
        ));
    }
    let row = unbox_db::profiles::insert(
        &mut tx,
        caller.tenant_id,
        Uuid::now_v7(),
        &settings.display_name,
        &json,
    )
    .await?;
    let profile = to_api(&row)?;
    audit::record(
        &mut tx,
        &caller,
        "profile.create",
        "profile",
        row.id,
        None,
        audit::snapshot(&profile),
    )
    .await?;
    crate::cache::commit_tenant_change(&state, tx, caller.tenant_id).await?;
    let location = format!("/v1/profiles/{}", row.id);
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::ETAG, etag(row.revision)),
        ],
        Json(profile),
    ))
}

/// The tenant's profiles.
#[utoipa::path(get, path = "/v1/profiles", tag = "profiles", security(("bearer" = ["profiles.read"])),
    params(PageParams), responses((status = 200, body = Page<Profile>)))]
pub async fn list_profiles(
    State(state): State<AppState>,
    caller: Authorized<scope::ProfilesRead>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<Profile>>> {
    let limit = params.limit();
    let mut conn = state.pool.acquire().await?;
    let mut rows =
        unbox_db::profiles::list(&mut conn, caller.tenant_id, params.after()?, limit + 1).await?;
    let more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = more
        .then(|| rows.last().map(|r| crate::pagination::encode_cursor(&r.id)))
        .flatten();
    let items = rows.iter().map(to_api).collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(Page { items, next_cursor }))
}

/// One profile.
#[utoipa::path(get, path = "/v1/profiles/{id}", tag = "profiles", security(("bearer" = ["profiles.read"])),
    params(("id" = Uuid, Path, description = "The profile id")),
    responses((status = 200, body = Profile), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn get_profile(
    State(state): State<AppState>,
    caller: Authorized<scope::ProfilesRead>,
    Path(id): Path<Uuid>,
) -> ApiResult<impl IntoResponse> {
    let mut conn = state.pool.acquire().await?;
    let row = load(&mut conn, caller.tenant_id, id).await?;
    Ok(([(header::ETAG, etag(row.revision))], Json(to_api(&row)?)))
}

/// Edits a profile (a JSON merge patch of its settings; `If-Match` honoured). Devices get the
/// change at their next download.
#[utoipa::path(patch, path = "/v1/profiles/{id}", tag = "profiles", security(("bearer" = ["profiles.write"])),
    params(("id" = Uuid, Path, description = "The profile id")),
    request_body = ProfileSettings,
    responses((status = 200, body = Profile), (status = 404, body = unbox_domain::api::Problem),
              (status = 412, body = unbox_domain::api::Problem), (status = 422, body = unbox_domain::api::Problem)))]
pub async fn patch_profile(
    State(state): State<AppState>,
    caller: Authorized<scope::ProfilesWrite>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
    Json(patch): Json<serde_json::Value>,
) -> ApiResult<impl IntoResponse> {
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "InvalidBody",
            "the patch must be a JSON object",
        ));
    }
    let mut tx = state.pool.begin().await?;
    let revision = unbox_db::profiles::lock(&mut tx, caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("profile"))?;
    check_if_match(&headers, revision)?;
    let row = load(&mut tx, caller.tenant_id, id).await?;
    let before = to_api(&row)?;
    let mut merged = row.settings.clone();
    merge_patch(&mut merged, &patch);
    let settings = validated(parse_settings(merged)?)?;
    let json = serde_json::to_value(&settings).map_err(ApiError::internal)?;
    let row =
        unbox_db::profiles::update(&mut tx, caller.tenant_id, id, &settings.display_name, &json)
            .await?;
    let after = to_api(&row)?;
    audit::record(
        &mut tx,
        &caller,
        "profile.update",
        "profile",
        id,
        audit::snapshot(&before),
        audit::snapshot(&after),
    )
    .await?;
    crate::cache::commit_tenant_change(&state, tx, caller.tenant_id).await?;
    Ok(([(header::ETAG, etag(row.revision))], Json(after)))
}

/// Deletes a profile and its assignments.
#[utoipa::path(delete, path = "/v1/profiles/{id}", tag = "profiles", security(("bearer" = ["profiles.write"])),
    params(("id" = Uuid, Path, description = "The profile id")),
    responses((status = 204), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn delete_profile(
    State(state): State<AppState>,
    caller: Authorized<scope::ProfilesWrite>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let mut tx = state.pool.begin().await?;
    let revision = unbox_db::profiles::lock(&mut tx, caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("profile"))?;
    check_if_match(&headers, revision)?;
    let before = to_api(&load(&mut tx, caller.tenant_id, id).await?)?;
    unbox_db::profiles::delete(&mut tx, caller.tenant_id, id).await?;
    audit::record(
        &mut tx,
        &caller,
        "profile.delete",
        "profile",
        id,
        audit::snapshot(&before),
        None,
    )
    .await?;
    crate::cache::commit_tenant_change(&state, tx, caller.tenant_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn assignment_to_api(row: unbox_db::assignments::AssignmentRow) -> ApiResult<Assignment> {
    Ok(Assignment {
        id: row.id,
        profile_id: row.profile_id,
        target: assignment_target(&row.target_kind, row.group_id, row.device_id).ok_or_else(
            || ApiError::internal(anyhow::anyhow!("assignment {} has no valid target", row.id)),
        )?,
        mode: assignment_mode(&row.mode),
        created_at: row.created_at,
        warnings: Vec::new(),
    })
}

/// The profile's assignments.
#[utoipa::path(get, path = "/v1/profiles/{id}/assignments", tag = "profiles", security(("bearer" = ["profiles.read"])),
    params(("id" = Uuid, Path, description = "The profile id")),
    responses((status = 200, body = Page<Assignment>), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn list_assignments(
    State(state): State<AppState>,
    caller: Authorized<scope::ProfilesRead>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Page<Assignment>>> {
    let mut conn = state.pool.acquire().await?;
    load(&mut conn, caller.tenant_id, id).await?;
    let rows = unbox_db::assignments::list_for_profile(&mut conn, caller.tenant_id, id).await?;
    let items = rows
        .into_iter()
        .map(assignment_to_api)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

/// Assigns the profile to a group, a device or all devices, to include or exclude.
#[utoipa::path(post, path = "/v1/profiles/{id}/assignments", tag = "profiles", security(("bearer" = ["profiles.write"])),
    params(("id" = Uuid, Path, description = "The profile id")),
    request_body = AssignmentCreate,
    responses((status = 201, body = Assignment), (status = 404, body = unbox_domain::api::Problem),
              (status = 409, body = unbox_domain::api::Problem), (status = 422, body = unbox_domain::api::Problem)))]
pub async fn create_assignment(
    State(state): State<AppState>,
    caller: Authorized<scope::ProfilesWrite>,
    Path(id): Path<Uuid>,
    Json(body): Json<AssignmentCreate>,
) -> ApiResult<impl IntoResponse> {
    if body.target == AssignmentTarget::AllDevices && body.mode == AssignmentMode::Exclude {
        return Err(ApiError::unprocessable(
            "ExcludeAllDevicesNotAllowed",
            "excluding all devices means nothing: remove the profile's include assignments instead",
        ));
    }
    let mut tx = state.pool.begin().await?;
    unbox_db::profiles::lock(&mut tx, caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("profile"))?;
    let mut warnings = Vec::new();
    let (group_id, device_id) = match body.target {
        AssignmentTarget::Group { group_id } => {
            let group = unbox_db::groups::get(&mut tx, caller.tenant_id, group_id)
                .await?
                .ok_or_else(|| ApiError::invalid_field("target.groupId", "no such group"))?;
            let reads_profile_name = group
                .membership_rule
                .as_deref()
                .and_then(|rule| unbox_rules::check(rule).rule)
                .is_some_and(|rule| rule.reads(unbox_rules::Property::EnrollmentProfileName));
            if reads_profile_name {
                warnings.push(format!(
                    "the rule of group `{}` reads enrollmentProfileName, the profile a device last downloaded: \
                     targeting a profile at it can make a device alternate between profiles from boot to boot",
                    group.display_name
                ));
            }
            (Some(group_id), None)
        }
        AssignmentTarget::Device { device_id } => {
            if unbox_db::devices::get(&mut tx, caller.tenant_id, device_id)
                .await?
                .is_none()
            {
                return Err(ApiError::invalid_field("target.deviceId", "no such device"));
            }
            (None, Some(device_id))
        }
        AssignmentTarget::AllDevices => (None, None),
    };
    let new = unbox_db::assignments::NewAssignment {
        tenant_id: caller.tenant_id,
        id: Uuid::now_v7(),
        profile_id: id,
        target_kind: body.target.kind(),
        group_id,
        device_id,
        mode: body.mode.as_str(),
    };
    let row = unbox_db::assignments::insert(&mut tx, &new)
        .await?
        .ok_or_else(|| {
            ApiError::conflict(
                "AssignmentExists",
                "the profile already has this assignment",
            )
        })?;
    let mut assignment = assignment_to_api(row)?;
    assignment.warnings = warnings;
    audit::record(
        &mut tx,
        &caller,
        "assignment.create",
        "assignment",
        assignment.id,
        None,
        audit::snapshot(&assignment),
    )
    .await?;
    crate::cache::commit_tenant_change(&state, tx, caller.tenant_id).await?;
    let location = format!("/v1/profiles/{id}/assignments/{}", assignment.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(assignment),
    ))
}

/// Removes an assignment.
#[utoipa::path(delete, path = "/v1/profiles/{id}/assignments/{assignment_id}", tag = "profiles", security(("bearer" = ["profiles.write"])),
    params(("id" = Uuid, Path, description = "The profile id"), ("assignment_id" = Uuid, Path, description = "The assignment id")),
    responses((status = 204), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn delete_assignment(
    State(state): State<AppState>,
    caller: Authorized<scope::ProfilesWrite>,
    Path((id, assignment_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    let mut tx = state.pool.begin().await?;
    let row = unbox_db::assignments::delete(&mut tx, caller.tenant_id, id, assignment_id)
        .await?
        .ok_or_else(|| ApiError::not_found("assignment"))?;
    let before = assignment_to_api(row)?;
    audit::record(
        &mut tx,
        &caller,
        "assignment.delete",
        "assignment",
        assignment_id,
        audit::snapshot(&before),
        None,
    )
    .await?;
    crate::cache::commit_tenant_change(&state, tx, caller.tenant_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The devices whose effective profile this is.
#[utoipa::path(get, path = "/v1/profiles/{id}/devices", tag = "profiles", security(("bearer" = ["devices.read"])),
    params(("id" = Uuid, Path, description = "The profile id"), PageParams),
    responses((status = 200, body = Page<Device>), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn profile_devices(
    State(state): State<AppState>,
    caller: Authorized<scope::DevicesRead>,
    Path(id): Path<Uuid>,
    Query(params): Query<PageParams>,
) -> ApiResult<impl IntoResponse> {
    let mut conn = state.pool.acquire().await?;
    load(&mut conn, caller.tenant_id, id).await?;
    let filter = unbox_db::devices::ListFilter {
        profile_id: Some(id),
        ..Default::default()
    };
    let page = devices::list_page(&mut conn, caller.tenant_id, &filter, &params).await?;
    Ok((
        devices::freshness_headers(&mut conn, caller.tenant_id).await?,
        Json(page),
    ))
}

/// The offline `AutopilotConfigurationFile.json` for this profile (ASCII), for devices that
/// cannot reach Unbox at first boot.
#[utoipa::path(get, path = "/v1/profiles/{id}/offline-configuration", tag = "profiles", security(("bearer" = ["profiles.read"])),
    params(("id" = Uuid, Path, description = "The profile id")),
    responses((status = 200, description = "AutopilotConfigurationFile.json", body = serde_json::Value),
              (status = 404, body = unbox_domain::api::Problem)))]
pub async fn offline_configuration(
    State(state): State<AppState>,
    caller: Authorized<scope::ProfilesRead>,
    Path(id): Path<Uuid>,
) -> ApiResult<impl IntoResponse> {
    let mut conn = state.pool.acquire().await?;
    let row = load(&mut conn, caller.tenant_id, id).await?;
    let tenant = unbox_db::tenants::get(&mut conn, caller.tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let settings = settings_of(&row)?;
    let text = render_offline(
        id,
        &settings,
        TenantFacts {
            id: tenant.id,
            domain: &tenant.domain,
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"AutopilotConfigurationFile.json\"",
            ),
        ],
        text,
    ))
}
