//! `/v1/devices`: the device registry.

use std::collections::{BTreeMap, HashMap};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use unbox_db::devices::{DeviceRow, EditableFields, ListFilter, NewDevice};
use unbox_domain::api::{AssignmentStatus, Device, DeviceCreate, DevicePatch, FieldError, Page};
use unbox_domain::profile::merge_patch;
use unbox_domain::resolution::Resolution;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::audit;
use crate::auth::{Authorized, TenantCaller, scope};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query, check_if_match, etag};
use crate::pagination::{PageParams, page};
use crate::presented_identity;
use crate::resolve;
use crate::state::AppState;

const MAX_TAG_CHARS: usize = 256;

/// The API's view of a device row, with its effective profile.
pub fn to_api(row: DeviceRow, profile: Option<(Uuid, chrono::DateTime<chrono::Utc>)>) -> Device {
    let extension_attributes: BTreeMap<String, String> =
        serde_json::from_value(row.extension_attributes).unwrap_or_default();
    Device {
        id: row.id,
        serial_number: row.serial_number,
        manufacturer: row.manufacturer,
        model: row.model,
        product_key: row.product_key,
        group_tag: row.group_tag,
        purchase_order_id: row.purchase_order_id,
        user_principal_name: row.user_principal_name,
        display_name: row.display_name,
        device_ownership: row.device_ownership,
        device_category: row.device_category,
        account_enabled: row.account_enabled,
        extension_attributes,
        system_labels: row.system_labels,
        device_os_type: row.os_type,
        device_os_version: row.os_version,
        enrollment_state: row.enrollment_state,
        enrollment_profile_name: row.enrollment_profile_name,
        assigned_device_name: row.assigned_name,
        last_contacted_at: row.last_contacted_at,
        deployment_profile_assignment_status: if profile.is_some() {
            AssignmentStatus::AssignedInSync
        } else {
            AssignmentStatus::NotAssigned
        },
        deployment_profile_id: profile.map(|(id, _)| id),
        deployment_profile_assigned_at: profile.map(|(_, at)| at),
        has_device_key: row.device_public_key.is_some(),
        created_at: row.created_at,
        updated_at: row.updated_at,
    }
}

fn winner_of(resolution: &Resolution) -> Option<(Uuid, chrono::DateTime<chrono::Utc>)> {
    resolution
        .winner
        .as_ref()
        .map(|w| (w.profile_id, w.assigned_at))
}

/// A single device with its assignment computed on read.
async fn read_device(
    state: &AppState,
    conn: &mut sqlx::PgConnection,
    row: DeviceRow,
) -> ApiResult<Device> {
    let resolution = resolve::device(state, conn, &row, resolve::Detail::Brief).await?;
    Ok(to_api(row, winner_of(&resolution)))
}

fn device_response(status: StatusCode, revision: i64, device: Device) -> impl IntoResponse {
    let location = format!("/v1/devices/{}", device.id);
    (
        status,
        [(header::ETAG, etag(revision)), (header::LOCATION, location)],
        Json(device),
    )
}

fn validate_device_public_key(key: &serde_json::Value) -> Result<(), String> {
    let field = |name: &str| key.get(name).and_then(serde_json::Value::as_str);
    let b64_len = |name: &str, bytes: usize| {
        field(name).is_some_and(|v| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(v)
                .is_ok_and(|d| d.len() == bytes)
        })
    };
    if key.get("d").is_some() {
        return Err("is a private key: register only the public key".into());
    }
    match (field("kty"), field("crv")) {
        (Some("OKP"), Some("Ed25519")) if b64_len("x", 32) => Ok(()),
        (Some("EC"), Some("P-256")) if b64_len("x", 32) && b64_len("y", 32) => Ok(()),
        _ => Err("must be a public JWK: {\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\"} or {\"kty\":\"EC\",\"crv\":\"P-256\",\"x\",\"y\"}".into()),
    }
}

fn check_text(errors: &mut Vec<FieldError>, field: &str, value: Option<&str>, max: usize) {
    if let Some(value) = value {
        if value.chars().count() > max {
            errors.push(FieldError::new(
                field,
                format!("is longer than {max} characters"),
            ));
        } else if value.chars().any(char::is_control) {
            errors.push(FieldError::new(field, "contains a control character"));
        }
    }
}

fn check_computer_name(errors: &mut Vec<FieldError>, value: Option<&str>) {
    if let Some(name) = value {
        let ok = !name.is_empty()
            && name.len() <= 15
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !name.chars().all(|c| c.is_ascii_digit());
        if !ok {
            errors.push(FieldError::new(
                "displayName",
                "must be a computer name: 1 to 15 letters, digits or hyphens, not only digits",
            ));
        }
    }
}

fn check_upn(errors: &mut Vec<FieldError>, value: Option<&str>) {
    check_text(errors, "userPrincipalName", value, MAX_TAG_CHARS);
    if let Some(upn) = value
        && !upn.is_empty()
        && !upn
            .split_once('@')
            .is_some_and(|(user, domain)| !user.is_empty() && domain.contains('.'))
    {
        errors.push(FieldError::new(
            "userPrincipalName",
            "must look like user@domain.tld",
        ));
    }
}

/// The field errors of a registration request (`POST /v1/devices`, and each row of an import).
pub(crate) fn field_errors(body: &DeviceCreate) -> Vec<FieldError> {
    let mut errors = Vec::new();
    check_text(
        &mut errors,
        "groupTag",
        body.group_tag.as_deref(),
        MAX_TAG_CHARS,
    );
    check_text(
        &mut errors,
        "purchaseOrderId",
        body.purchase_order_id.as_deref(),
        MAX_TAG_CHARS,
    );
    check_text(&mut errors, "productKey", body.product_key.as_deref(), 64);
    check_upn(&mut errors, body.user_principal_name.as_deref());
    check_computer_name(&mut errors, body.display_name.as_deref());
    if let Some(key) = &body.device_public_key
        && let Err(message) = validate_device_public_key(key)
    {
        errors.push(FieldError::new("devicePublicKey", message));
    }
    errors
}

/// Why an identity without a strong key cannot be registered (802).
pub(crate) fn no_strong_key(presented: &presented_identity::Presented) -> String {
    format!(
        "the identity has no strong key: the serial `{}` is a placeholder (or the manufacturer is missing) and there is no TPM digest",
        presented.identity.serial_number
    )
}

/// The device row a validated registration request makes.
pub(crate) fn new_device(
    tenant_id: Uuid,
    id: Uuid,
    presented: &presented_identity::Presented,
    body: &DeviceCreate,
) -> Result<NewDevice, serde_json::Error> {
    Ok(NewDevice {
        tenant_id,
        id,
        serial_number: presented.identity.serial_number.clone(),
        manufacturer: Some(presented.identity.manufacturer.clone()).filter(|s| !s.is_empty()),
        model: Some(presented.identity.model.clone()).filter(|s| !s.is_empty()),
        product_key: body.product_key.clone().filter(|s| !s.is_empty()),
        group_tag: body.group_tag.clone().filter(|s| !s.is_empty()),
        purchase_order_id: body.purchase_order_id.clone().filter(|s| !s.is_empty()),
        user_principal_name: body.user_principal_name.clone().filter(|s| !s.is_empty()),
        display_name: body.display_name.clone().filter(|s| !s.is_empty()),
        os_type: presented.os_type.to_owned(),
        os_version: presented.os_version.clone(),
        hardware_hash: presented.hash.as_ref().map(|h| h.normalized_base64()),
        identity: serde_json::to_value(&presented.identity)?,
        tpm_ek_sha256: presented.identity.tpm_ek_sha256.clone(),
        device_public_key: body.device_public_key.clone(),
    })
}

/// Registers one device by hardware hash or Linux identity.
#[utoipa::path(post, path = "/v1/devices", tag = "devices", security(("bearer" = ["devices.write"])),
    request_body = DeviceCreate,
    responses(
        (status = 201, description = "Registered", body = Device),
        (status = 409, description = "`ZtdDeviceAlreadyAssigned` (with `deviceId`) or `ZtdDeviceAssignedToOtherTenant`", body = unbox_domain::api::Problem),
        (status = 422, description = "`InvalidZtdHardwareHash` and other invalid input", body = unbox_domain::api::Problem)))]
pub async fn create_device(
    State(state): State<AppState>,
    caller: Authorized<scope::DevicesWrite>,
    Json(body): Json<DeviceCreate>,
) -> ApiResult<impl IntoResponse> {
    let presented =
        presented_identity::from_request(body.hardware_hash.as_deref(), body.identity.as_ref())?;
    let errors = field_errors(&body);
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    if !presented.keys.has_strong_key() {
        return Err(
            ApiError::unprocessable("InvalidZtdHardwareHash", no_strong_key(&presented))
                .with("errorCode", 802),
        );
    }
    let claims = presented.claims();
    let new = new_device(caller.tenant_id, Uuid::now_v7(), &presented, &body)
        .map_err(ApiError::internal)?;

    let mut tx = state.pool.begin().await?;
    let owners = unbox_db::devices::claim_owners(&mut tx, &claims).await?;
    if let Some(conflict) = claim_conflict(&caller, &owners) {
        return Err(conflict);
    }
    let row = unbox_db::devices::insert(&mut tx, &new).await?;
    let claimed = unbox_db::devices::claim(&mut tx, caller.tenant_id, row.id, &claims).await?;
    if claimed < claims.len() as u64 {
        // A concurrent registration claimed the identity first: report its owner.
        tx.rollback().await?;
        let mut conn = state.pool.acquire().await?;
        let owners = unbox_db::devices::claim_owners(&mut conn, &claims).await?;
        return Err(claim_conflict(&caller, &owners).unwrap_or_else(|| {
            ApiError::conflict(
                "ConcurrentRegistration",
                "the same machine was being registered concurrently; retry",
            )
        }));
    }
    let device = read_device(&state, &mut tx, row.clone()).await?;
    audit::record(
        &mut tx,
        &caller,
        "device.create",
        "device",
        device.id,
        None,
        audit::snapshot(&device),
    )
    .await?;
    tx.commit().await?;
    Ok(device_response(StatusCode::CREATED, row.revision, device))
}

/// Why a machine cannot be registered in a tenant: another registration holds its keys.
/// Shared by `POST /v1/devices` and imports, so both answer 806 and 808 alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClaimConflict {
    /// 806 `ZtdDeviceAlreadyAssigned`: registered in the same tenant, as this device.
    AlreadyAssigned(Uuid),
    /// 808 `ZtdDeviceAssignedToOtherTenant`: registered to another tenant (which is not named).
    OtherTenant,
}

impl ClaimConflict {
    /// The conflict the owners of a machine's keys make for `tenant_id`, if any: its own
    /// registration first, else another tenant's.
    pub(crate) fn of(
        tenant_id: Uuid,
        owners: &[unbox_db::devices::ClaimOwner],
    ) -> Option<ClaimConflict> {
        let owner = owners
            .iter()
            .find(|o| o.tenant_id == tenant_id)
            .or_else(|| owners.first())?;
        Some(if owner.tenant_id == tenant_id {
            ClaimConflict::AlreadyAssigned(owner.device_id)
        } else {
            ClaimConflict::OtherTenant
        })
    }

    pub(crate) fn code(self) -> u16 {
        match self {
            ClaimConflict::AlreadyAssigned(_) => 806,
            ClaimConflict::OtherTenant => 808,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            ClaimConflict::AlreadyAssigned(_) => "ZtdDeviceAlreadyAssigned",
            ClaimConflict::OtherTenant => "ZtdDeviceAssignedToOtherTenant",
        }
    }

    pub(crate) fn message(self) -> String {
        match self {
            ClaimConflict::AlreadyAssigned(device_id) => {
                format!("this machine is already registered in this tenant as device {device_id}")
            }
            // Nothing about the other tenant is revealed.
            ClaimConflict::OtherTenant => {
                "this machine is registered to another organisation, which must deregister it first"
                    .to_owned()
            }
        }
    }

    pub(crate) fn into_error(self) -> ApiError {
        let error = ApiError::conflict(self.name(), self.message()).with("errorCode", self.code());
        match self {
            ClaimConflict::AlreadyAssigned(device_id) => error.with("deviceId", device_id),
            ClaimConflict::OtherTenant => error,
        }
    }
}

/// The 409 for keys that another registration holds, if any does.
fn claim_conflict(
    caller: &TenantCaller,
    owners: &[unbox_db::devices::ClaimOwner],
) -> Option<ApiError> {
    ClaimConflict::of(caller.tenant_id, owners).map(ClaimConflict::into_error)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct DeviceListParams {
    /// Exact serial number (case-insensitive).
    pub serial_number: Option<String>,
    /// Exact group tag (case-insensitive).
    pub group_tag: Option<String>,
    /// Exact assigned user (case-insensitive).
    pub user_principal_name: Option<String>,
    /// `assignedInSync` or `notAssigned`.
    pub profile_status: Option<String>,
    /// Free text over serial, manufacturer, model, tag, user and names.
    pub q: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

impl DeviceListParams {
    pub fn filter(&self) -> ApiResult<ListFilter> {
        let has_profile = match self.profile_status.as_deref() {
            None => None,
            Some("assignedInSync") => Some(true),
            Some("notAssigned") => Some(false),
            Some(other) => {
                return Err(ApiError::bad_request(
                    "InvalidQueryParameter",
                    format!("profileStatus `{other}` is not `assignedInSync` or `notAssigned`"),
                ));
            }
        };
        let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
        Ok(ListFilter {
            serial_number: nonempty(&self.serial_number),
            group_tag: nonempty(&self.group_tag),
            user_principal_name: nonempty(&self.user_principal_name),
            has_profile,
            profile_id: None,
            q: nonempty(&self.q),
        })
    }

    pub fn page(&self) -> PageParams {
        PageParams {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

/// Lists one page of devices with their effective profiles.
pub async fn list_page(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    filter: &ListFilter,
    params: &PageParams,
) -> ApiResult<Page<Device>> {
    let limit = params.limit();
    let rows = unbox_db::devices::list(conn, tenant_id, filter, params.after()?, limit + 1).await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let effective: HashMap<Uuid, (Uuid, chrono::DateTime<chrono::Utc>)> =
        unbox_db::devices::effective_profiles(conn, tenant_id, &ids)
            .await?
            .into_iter()
            .filter_map(|e| Some((e.device_id, (e.profile_id?, e.assigned_at?))))
            .collect();
    Ok(page(
        rows,
        limit,
        |r| r.id,
        |r| {
            let profile = effective.get(&r.id).copied();
            to_api(r, profile)
        },
    ))
}

/// Lists devices, filtered, a page at a time. Hashes are never listed.
#[utoipa::path(get, path = "/v1/devices", tag = "devices", security(("bearer" = ["devices.read"])),
    params(DeviceListParams),
    responses((status = 200, body = Page<Device>), (status = 400, body = unbox_domain::api::Problem)))]
pub async fn list_devices(
    State(state): State<AppState>,
    caller: Authorized<scope::DevicesRead>,
    Query(params): Query<DeviceListParams>,
) -> ApiResult<impl IntoResponse> {
    let filter = params.filter()?;
    let mut conn = state.pool.acquire().await?;
    let page = list_page(&mut conn, caller.tenant_id, &filter, &params.page()).await?;
    Ok((
        freshness_headers(&mut conn, caller.tenant_id).await?,
        Json(page),
    ))
}

/// Lists over many devices follow the stored membership of dynamic groups: these headers say
/// how fresh it is (`Unbox-Membership-Status`: `updateComplete` or `evaluating`;
/// `Unbox-Membership-As-Of`: when the oldest live dynamic group was last complete).
pub async fn freshness_headers(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
) -> ApiResult<axum::http::HeaderMap> {
    let freshness = unbox_db::memberships::freshness(conn, tenant_id).await?;
    let mut headers = axum::http::HeaderMap::new();
    let status = if freshness.evaluating {
        "evaluating"
    } else {
        "updateComplete"
    };
    headers.insert(
        "unbox-membership-status",
        axum::http::HeaderValue::from_static(status),
    );
    if let Some(as_of) = freshness.as_of {
        let text = as_of.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        if let Ok(value) = axum::http::HeaderValue::from_str(&text) {
            headers.insert("unbox-membership-as-of", value);
        }
    }
    Ok(headers)
}

async fn load(conn: &mut sqlx::PgConnection, tenant_id: Uuid, id: Uuid) -> ApiResult<DeviceRow> {
    unbox_db::devices::get(conn, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))
}

/// One device, with its assignment computed now.
#[utoipa::path(get, path = "/v1/devices/{id}", tag = "devices", security(("bearer" = ["devices.read"])),
    params(("id" = Uuid, Path, description = "The device id (ZTDId)")),
    responses((status = 200, body = Device), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn get_device(
    State(state): State<AppState>,
    caller: Authorized<scope::DevicesRead>,
    Path(id): Path<Uuid>,
) -> ApiResult<impl IntoResponse> {
    let mut conn = state.pool.acquire().await?;
    let row = load(&mut conn, caller.tenant_id, id).await?;
    let revision = row.revision;
    let device = read_device(&state, &mut conn, row).await?;
    Ok(([(header::ETAG, etag(revision))], Json(device)))
}

/// Edits a device's admin fields (a JSON merge patch; `If-Match` honoured).
#[utoipa::path(patch, path = "/v1/devices/{id}", tag = "devices", security(("bearer" = ["devices.write"])),
    params(("id" = Uuid, Path, description = "The device id")),
    request_body = DevicePatch,
    responses((status = 200, body = Device), (status = 404, body = unbox_domain::api::Problem),
              (status = 412, body = unbox_domain::api::Problem), (status = 422, body = unbox_domain::api::Problem)))]
pub async fn patch_device(
    State(state): State<AppState>,
    caller: Authorized<scope::DevicesWrite>,
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
    let revision = unbox_db::devices::lock(&mut tx, caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    check_if_match(&headers, revision)?;
    let row = load(&mut tx, caller.tenant_id, id).await?;
    let before = read_device(&state, &mut tx, row.clone()).await?;
    let mut editable = serde_json::json!({
        "groupTag": row.group_tag, "purchaseOrderId": row.purchase_order_id,
        "userPrincipalName": row.user_principal_name, "displayName": row.display_name,
        "deviceOwnership": row.device_ownership, "deviceCategory": row.device_category,
        "accountEnabled": row.account_enabled, "extensionAttributes": row.extension_attributes,
        "systemLabels": row.system_labels,
    });
    merge_patch(&mut editable, &patch);
    let fields: DevicePatch = serde_json::from_value(editable)
        .map_err(|e| ApiError::bad_request("InvalidBody", e.to_string()))?;
    let mut errors = Vec::new();
    check_text(
        &mut errors,
        "groupTag",
        fields.group_tag.as_deref(),
        MAX_TAG_CHARS,
    );
    check_text(
        &mut errors,
        "purchaseOrderId",
        fields.purchase_order_id.as_deref(),
        MAX_TAG_CHARS,
    );
    check_text(
        &mut errors,
        "deviceCategory",
        fields.device_category.as_deref(),
        MAX_TAG_CHARS,
    );
    check_upn(&mut errors, fields.user_principal_name.as_deref());
    check_computer_name(&mut errors, fields.display_name.as_deref());
    let ownership = fields
        .device_ownership
        .clone()
        .unwrap_or_else(|| "Company".to_owned());
    if ownership != "Company" && ownership != "Personal" {
        errors.push(FieldError::new(
            "deviceOwnership",
            "must be `Company` or `Personal`",
        ));
    }
    let attributes = fields.extension_attributes.clone().unwrap_or_default();
    for (name, value) in &attributes {
        let valid_name = name
            .strip_prefix("extensionAttribute")
            .and_then(|n| n.parse::<u8>().ok())
            .is_some_and(|n| (1..=15).contains(&n));
        if !valid_name {
            errors.push(FieldError::new(
                format!("extensionAttributes.{name}"),
                "only extensionAttribute1 … extensionAttribute15 exist",
            ));
        }
        check_text(
            &mut errors,
            &format!("extensionAttributes.{name}"),
            Some(value),
            1024,
        );
    }
    let labels = fields.system_labels.clone().unwrap_or_default();
    if labels.len() > 50 {
        errors.push(FieldError::new("systemLabels", "holds at most 50 labels"));
    }
    for label in &labels {
        check_text(&mut errors, "systemLabels", Some(label), MAX_TAG_CHARS);
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid_fields(errors));
    }
    let blank_is_none = |v: Option<String>| v.filter(|s| !s.is_empty());
    let updated = unbox_db::devices::update(
        &mut tx,
        caller.tenant_id,
        id,
        &EditableFields {
            group_tag: blank_is_none(fields.group_tag),
            purchase_order_id: blank_is_none(fields.purchase_order_id),
            user_principal_name: blank_is_none(fields.user_principal_name),
            display_name: blank_is_none(fields.display_name),
            device_ownership: ownership,
            device_category: blank_is_none(fields.device_category),
            account_enabled: fields.account_enabled.unwrap_or(true),
            extension_attributes: serde_json::to_value(&attributes).map_err(ApiError::internal)?,
            system_labels: labels,
        },
    )
    .await?;
    let revision = updated.revision;
    let after = read_device(&state, &mut tx, updated).await?;
    audit::record(
        &mut tx,
        &caller,
        "device.update",
        "device",
        id,
        audit::snapshot(&before),
        audit::snapshot(&after),
    )
    .await?;
    tx.commit().await?;
    Ok(([(header::ETAG, etag(revision))], Json(after)))
}

/// Deregisters a device: its identity becomes free for any tenant.
#[utoipa::path(delete, path = "/v1/devices/{id}", tag = "devices", security(("bearer" = ["devices.write"])),
    params(("id" = Uuid, Path, description = "The device id")),
    responses((status = 204), (status = 404, body = unbox_domain::api::Problem), (status = 412, body = unbox_domain::api::Problem)))]
pub async fn delete_device(
    State(state): State<AppState>,
    caller: Authorized<scope::DevicesWrite>,
    Path(id): Path<Uuid>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let mut tx = state.pool.begin().await?;
    let revision = unbox_db::devices::lock(&mut tx, caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("device"))?;
    check_if_match(&headers, revision)?;
    let row = load(&mut tx, caller.tenant_id, id).await?;
    let before = read_device(&state, &mut tx, row).await?;
    unbox_db::devices::delete(&mut tx, caller.tenant_id, id).await?;
    audit::record(
        &mut tx,
        &caller,
        "device.delete",
        "device",
        id,
        audit::snapshot(&before),
        None,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Why the device gets the profile it gets: its groups, every candidate, the winner.
#[utoipa::path(get, path = "/v1/devices/{id}/assignment", tag = "devices", security(("bearer" = ["devices.read"])),
    params(("id" = Uuid, Path, description = "The device id")),
    responses((status = 200, body = Resolution), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn explain_assignment(
    State(state): State<AppState>,
    caller: Authorized<scope::DevicesRead>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Resolution>> {
    let mut conn = state.pool.acquire().await?;
    let row = load(&mut conn, caller.tenant_id, id).await?;
    Ok(Json(
        resolve::device(&state, &mut conn, &row, resolve::Detail::Explained).await?,
    ))
}
