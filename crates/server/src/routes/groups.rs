//! `/v1/groups`: device groups and the members of static groups.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use unbox_db::groups::{GroupFields, GroupRow};
use unbox_domain::api::{
    FieldError, Group, GroupCreate, GroupMember, GroupPatch, MemberPage, MembersAdd,
    MembershipType, Page, ProcessingState, ProcessingStatus,
};
use unbox_domain::profile::merge_patch;
use uuid::Uuid;

use crate::audit;
use crate::auth::{Authorized, scope};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query, check_if_match, etag};
use crate::pagination::{PageParams, page};
use crate::state::AppState;

/// At most this many devices per `POST …/members`.
const MAX_MEMBERS_PER_REQUEST: usize = 10_000;

fn processing_status(row: &GroupRow) -> ProcessingStatus {
    let status = if row.membership_type == "dynamic" && row.processing_state == "paused" {
        "paused"
    } else if row.membership_revision < row.rule_revision {
        "evaluating"
    } else {
        "updateComplete"
    };
    ProcessingStatus {
        status: status.to_owned(),
        as_of: row.membership_as_of,
        member_count: row.member_count,
    }
}

fn to_api(row: GroupRow) -> Group {
    let membership_type = if row.membership_type == "dynamic" {
        MembershipType::Dynamic
    } else {
        MembershipType::Static
    };
    let processing_status = processing_status(&row);
    Group {
        id: row.id,
        display_name: row.display_name,
        description: row.description,
        membership_type,
        membership_rule: row.membership_rule,
        membership_rule_processing_state: if row.processing_state == "paused" {
            ProcessingState::Paused
        } else {
            ProcessingState::On
        },
        processing_status,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

/// The problem for a rule that does not compile, with its diagnostics.
pub fn invalid_rule(diagnostics: &[unbox_rules::Diagnostic]) -> ApiError {
    let first = diagnostics
        .iter()
        .find(|d| d.severity == unbox_rules::Severity::Error)
        .map_or_else(
            || "the membership rule is invalid".to_owned(),
            |d| d.message.clone(),
        );
    ApiError::unprocessable("InvalidMembershipRule", first).with("diagnostics", diagnostics)
}

/// Checks a group's fields.
fn validate(fields: &GroupFields) -> ApiResult<()> {
    let mut errors = Vec::new();
    if fields.display_name.trim().is_empty() || fields.display_name.chars().count() > 256 {
        errors.push(FieldError::new(
            "displayName",
            "must be 1 to 256 characters",
        ));
    }
    if fields
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 1500)
    {
        errors.push(FieldError::new(
            "description",
            "is longer than 1,500 characters",
        ));
    }
    match (fields.membership_type.as_str(), &fields.membership_rule) {
        ("static", Some(_)) => errors.push(FieldError::new(
            "membershipRule",
            "applies only to dynamic groups",
        )),
        ("dynamic", None) => errors.push(FieldError::new(
            "membershipRule",
            "a dynamic group needs a membership rule",
        )),
        ("dynamic", Some(rule)) => {
            let checked = unbox_rules::check(rule);
            if checked.rule.is_none() {
                return Err(invalid_rule(&checked.diagnostics));
            }
        }
        _ => {}
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_fields(errors))
    }
}

async fn load(conn: &mut sqlx::PgConnection, tenant_id: Uuid, id: Uuid) -> ApiResult<GroupRow> {
    unbox_db::groups::get(conn, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("group"))
}

/// Creates a group.
#[utoipa::path(post, path = "/v1/groups", tag = "groups", security(("bearer" = ["groups.write"])),
    request_body = GroupCreate,
    responses((status = 201, body = Group), (status = 422, body = unbox_domain::api::Problem)))]
pub async fn create_group(
    State(state): State<AppState>,
    caller: Authorized<scope::GroupsWrite>,
    Json(body): Json<GroupCreate>,
) -> ApiResult<impl IntoResponse> {
    let fields = GroupFields {
        display_name: body.display_name.trim().to_owned(),
        description: body.description.filter(|d| !d.is_empty()),
        membership_type: body.membership_type.as_str().to_owned(),
        membership_rule: body.membership_rule,
        processing_state: body.membership_rule_processing_state.as_str().to_owned(),
    };
    validate(&fields)?;
    let mut tx = state.pool.begin().await?;
    let row = unbox_db::groups::insert(&mut tx, caller.tenant_id, Uuid::now_v7(), &fields).await?;
    let revision = row.revision;
    let group = to_api(row);
    audit::record(
        &mut tx,
        &caller,
        "group.create",
        "group",
        group.id,
        None,
        audit::snapshot(&group),
    )
    .await?;
    crate::cache::commit_tenant_change(&state, tx, caller.tenant_id).await?;
    let location = format!("/v1/groups/{}", group.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location), (header::ETAG, etag(revision))],
        Json(group),
    ))
}

/// The tenant's groups.
#[utoipa::path(get, path = "/v1/groups", tag = "groups", security(("bearer" = ["groups.read"])),
    params(PageParams), responses((status = 200, body = Page<Group>)))]
pub async fn list_groups(
    State(state): State<AppState>,
    caller: Authorized<scope::GroupsRead>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<Group>>> {
    let limit = params.limit();
    let mut conn = state.pool.acquire().await?;
    let rows =
        unbox_db::groups::list(&mut conn, caller.tenant_id, params.after()?, limit + 1).await?;
    Ok(Json(page(rows, limit, |r| r.id, to_api)))
}

/// One group.
#[utoipa::path(get, path = "/v1/groups/{id}", tag = "groups", security(("bearer" = ["groups.read"])),
    params(("id" = Uuid, Path, description = "The group id")),
    responses((status = 200, body = Group), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn get_group(
    State(state): State<AppState>,
    caller: Authorized<scope::GroupsRead>,
    Path(id): Path<Uuid>,
) -> ApiResult<impl IntoResponse> {
    let mut conn = state.pool.acquire().await?;
    let row = load(&mut conn, caller.tenant_id, id).await?;
    Ok(([(header::ETAG, etag(row.revision))], Json(to_api(row))))
}

/// Edits a group (a JSON merge patch; `If-Match` honoured). The membership type is fixed.
#[utoipa::path(patch, path = "/v1/groups/{id}", tag = "groups", security(("bearer" = ["groups.write"])),
    params(("id" = Uuid, Path, description = "The group id")),
    request_body = GroupPatch,
    responses((status = 200, body = Group), (status = 404, body = unbox_domain::api::Problem),
              (status = 412, body = unbox_domain::api::Problem), (status = 422, body = unbox_domain::api::Problem)))]
pub async fn patch_group(
    State(state): State<AppState>,
    caller: Authorized<scope::GroupsWrite>,
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
    let revision = unbox_db::groups::lock(&mut tx, caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("group"))?;
    check_if_match(&headers, revision)?;
    let row = load(&mut tx, caller.tenant_id, id).await?;
    let membership_type = row.membership_type.clone();
    let before = to_api(row.clone());
    let mut merged = serde_json::json!({
        "displayName": row.display_name, "description": row.description,
        "membershipRule": row.membership_rule,
        "membershipRuleProcessingState": before.membership_rule_processing_state,
    });
    merge_patch(&mut merged, &patch);
    let fields: GroupPatch = serde_json::from_value(merged)
        .map_err(|e| ApiError::bad_request("InvalidBody", e.to_string()))?;
    let fields = GroupFields {
        display_name: fields.display_name.unwrap_or_default().trim().to_owned(),
        description: fields.description.filter(|d| !d.is_empty()),
        membership_type,
        membership_rule: fields.membership_rule,
        processing_state: fields
            .membership_rule_processing_state
            .unwrap_or_default()
            .as_str()
            .to_owned(),
    };
    validate(&fields)?;
    let row = unbox_db::groups::update(&mut tx, caller.tenant_id, id, &fields).await?;
    let revision = row.revision;
    let after = to_api(row);
    audit::record(
        &mut tx,
        &caller,
        "group.update",
        "group",
        id,
        audit::snapshot(&before),
        audit::snapshot(&after),
    )
    .await?;
    crate::cache::commit_tenant_change(&state, tx, caller.tenant_id).await?;
    Ok(([(header::ETAG, etag(revision))], Json(after)))
}

/// Deletes a group with its memberships and assignments.
#[utoipa::path(delete, path = "/v1/groups/{id}", tag = "groups", security(("bearer" = ["groups.write"])),
    params(("id" = Uuid, Path, description = "The group id")),
    responses((status = 204), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn delete_group(
    State(state): State<AppState>,
    caller: Authorized<scope::GroupsWrite>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let mut tx = state.pool.begin().await?;
    let revision = unbox_db::groups::lock(&mut tx, caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("group"))?;
    check_if_match(&headers, revision)?;
    let before = to_api(load(&mut tx, caller.tenant_id, id).await?);
    unbox_db::groups::delete(&mut tx, caller.tenant_id, id).await?;
    audit::record(
        &mut tx,
        &caller,
        "group.delete",
        "group",
        id,
        audit::snapshot(&before),
        None,
    )
    .await?;
    crate::cache::commit_tenant_change(&state, tx, caller.tenant_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The group's members, from its stored membership, with how fresh that is (for a dynamic
/// group the device call evaluates the rule itself; this list follows the background
/// recompute).
#[utoipa::path(get, path = "/v1/groups/{id}/members", tag = "groups", security(("bearer" = ["groups.read"])),
    params(("id" = Uuid, Path, description = "The group id"), PageParams),
    responses((status = 200, body = MemberPage), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn list_members(
    State(state): State<AppState>,
    caller: Authorized<scope::GroupsRead>,
    Path(id): Path<Uuid>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<MemberPage>> {
    let limit = params.limit();
    let mut conn = state.pool.acquire().await?;
    let group = load(&mut conn, caller.tenant_id, id).await?;
    let after = params.after()?;
    let rows = if group.membership_type == "dynamic" {
        unbox_db::groups::dynamic_members(&mut conn, caller.tenant_id, id, after, limit + 1).await?
    } else {
        unbox_db::groups::members(&mut conn, caller.tenant_id, id, after, limit + 1).await?
    };
    let page = page(
        rows,
        limit,
        |r| r.device_id,
        |r| GroupMember {
            device_id: r.device_id,
            serial_number: r.serial_number,
            display_name: r.display_name,
            added_at: r.added_at,
        },
    );
    Ok(Json(MemberPage {
        items: page.items,
        next_cursor: page.next_cursor,
        processing_status: processing_status(&group),
    }))
}

async fn static_group(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> ApiResult<GroupRow> {
    unbox_db::groups::lock(conn, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("group"))?;
    let row = load(conn, tenant_id, id).await?;
    if row.membership_type != "static" {
        return Err(ApiError::unprocessable(
            "DynamicGroupMembership",
            "members of a dynamic group follow its rule; they cannot be added or removed",
        ));
    }
    Ok(row)
}

/// Adds devices to a static group (all or nothing: an unknown id adds none).
#[utoipa::path(post, path = "/v1/groups/{id}/members", tag = "groups", security(("bearer" = ["groups.write"])),
    params(("id" = Uuid, Path, description = "The group id")),
    request_body = MembersAdd,
    responses((status = 200, description = "The ids newly added", body = MembersAdd),
              (status = 404, body = unbox_domain::api::Problem), (status = 422, body = unbox_domain::api::Problem)))]
pub async fn add_members(
    State(state): State<AppState>,
    caller: Authorized<scope::GroupsWrite>,
    Path(id): Path<Uuid>,
    Json(body): Json<MembersAdd>,
) -> ApiResult<Json<MembersAdd>> {
    if body.device_ids.is_empty() || body.device_ids.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(ApiError::invalid_field(
            "deviceIds",
            format!("give 1 to {MAX_MEMBERS_PER_REQUEST} device ids"),
        ));
    }
    let mut ids = body.device_ids.clone();
    ids.sort();
    ids.dedup();
    let mut tx = state.pool.begin().await?;
    static_group(&mut tx, caller.tenant_id, id).await?;
    let existing = unbox_db::devices::existing_ids(&mut tx, caller.tenant_id, &ids).await?;
    if existing.len() != ids.len() {
        let unknown: Vec<String> = ids
            .iter()
            .filter(|i| !existing.contains(i))
            .map(ToString::to_string)
            .collect();
        return Err(ApiError::invalid_field(
            "deviceIds",
            format!("no such devices: {}", unknown.join(", ")),
        ));
    }
    let added = unbox_db::groups::add_members(&mut tx, caller.tenant_id, id, &ids).await?;
    if !added.is_empty() {
        audit::record(
            &mut tx,
            &caller,
            "group.members.add",
            "group",
            id,
            None,
            Some(serde_json::json!({ "deviceIds": added })),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Json(MembersAdd { device_ids: added }))
}

/// Removes a device from a static group.
#[utoipa::path(delete, path = "/v1/groups/{id}/members/{device_id}", tag = "groups", security(("bearer" = ["groups.write"])),
    params(("id" = Uuid, Path, description = "The group id"), ("device_id" = Uuid, Path, description = "The device id")),
    responses((status = 204), (status = 404, body = unbox_domain::api::Problem), (status = 422, body = unbox_domain::api::Problem)))]
pub async fn remove_member(
    State(state): State<AppState>,
    caller: Authorized<scope::GroupsWrite>,
    Path((id, device_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    let mut tx = state.pool.begin().await?;
    static_group(&mut tx, caller.tenant_id, id).await?;
    if !unbox_db::groups::remove_member(&mut tx, caller.tenant_id, id, device_id).await? {
        return Err(ApiError::not_found("member"));
    }
    audit::record(
        &mut tx,
        &caller,
        "group.members.remove",
        "group",
        id,
        Some(serde_json::json!({ "deviceId": device_id })),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
