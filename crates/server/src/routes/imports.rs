//! `/v1/imports` and `/v1/partner/…/imports`: bulk registration jobs. The upload is streamed
//! to disk and checked (`imports::spool`); the background worker registers its rows
//! (`imports::worker`).

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use unbox_domain::api::Page;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::audit;
use crate::auth::{Authorized, Caller, Scope, TenantCaller, scope};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::imports::spool::{self, Limits};
use crate::imports::{
    Format, ImportBatch, ImportItem, ImportJob, MAX_ROWS, MAX_UPLOAD_BYTES, node_id, spool_dir,
};
use crate::pagination::{PageParams, page};
use crate::state::AppState;

/// The header that makes a `POST` of an import idempotent.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ImportParams {
    /// Report every row's outcome and register nothing.
    pub dry_run: Option<bool>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ItemParams {
    /// Only rows with this status: `complete` or `error`.
    pub status: Option<String>,
    /// Items per page: default 100, at most 1,000 (larger values are clamped).
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Who submits a job, and where its status will be.
struct Submitter {
    tenant_id: Uuid,
    partner_id: Option<Uuid>,
    /// The actor the audit log names.
    actor: TenantCaller,
    client_id: String,
    location: &'static str,
}

/// The upload's format from its `Content-Type`.
fn format_of(headers: &HeaderMap) -> ApiResult<Format> {
    let unsupported = || {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "send an Autopilot CSV file as `Content-Type: text/csv` (any encoding), or `application/json` with {\"devices\": [...]}",
        )
    };
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING)
        && !encoding
            .to_str()
            .is_ok_and(|e| e.trim().eq_ignore_ascii_case("identity"))
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "compressed uploads are not accepted; send the file as it is",
        ));
    }
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .ok_or_else(unsupported)?;
    match media.as_str() {
        // What tools send for .csv files: browsers on Windows say vnd.ms-excel.
        "text/csv"
        | "application/csv"
        | "text/x-csv"
        | "text/comma-separated-values"
        | "application/vnd.ms-excel"
        | "text/plain" => Ok(Format::Csv),
        "application/json" => Ok(Format::Json),
        m if m.starts_with("application/") && m.ends_with("+json") => Ok(Format::Json),
        _ => Err(unsupported()),
    }
}

/// The `Idempotency-Key`, when given: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().ok().map(str::trim).unwrap_or_default();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "InvalidIdempotencyKey",
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// Removes the spooled file unless the job that needs it was committed.
struct SpoolGuard(Option<std::path::PathBuf>);

impl Drop for SpoolGuard {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn accepted(job: ImportJob, location: &str, replayed: bool) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("{location}/{}", job.id))],
        Json(job),
    )
        .into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

async fn submit(
    state: &AppState,
    who: Submitter,
    params: ImportParams,
    headers: &HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let format = format_of(headers)?;
    let key = idempotency_key(headers)?;
    let dry_run = params.dry_run.unwrap_or(false);
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_UPLOAD_BYTES) {
        return Err(spool::SpoolError::TooLarge {
            max: MAX_UPLOAD_BYTES,
        }
        .into());
    }
    let data_dir = state.settings.data_dir.clone();
    let node = tokio::task::spawn_blocking(move || node_id(&data_dir))
        .await?
        .map_err(ApiError::internal)?;
    let dir = spool_dir(&state.settings.data_dir);
    let id = Uuid::now_v7();
    let partial = dir.join(format!("{id}.partial"));
    let spooled = spool::spool(
        body,
        format,
        dry_run,
        partial.clone(),
        Limits {
            max_bytes: MAX_UPLOAD_BYTES,
            max_rows: MAX_ROWS,
        },
    )
    .await?;
    let file_name = format!("{id}.{}", format.as_str());
    let path = dir.join(&file_name);
    tokio::fs::rename(&partial, &path)
        .await
        .map_err(ApiError::internal)?;
    let mut guard = SpoolGuard(Some(path));

    let new = unbox_db::imports::NewJob {
        tenant_id: who.tenant_id,
        id,
        partner_id: who.partner_id,
        actor_kind: who.actor.actor_kind.to_owned(),
        actor_id: Some(who.actor.actor_id.clone()),
        format: format.as_str().to_owned(),
        dry_run,
        idempotency_key: key.clone(),
        fingerprint: spooled.fingerprint.clone(),
        spool_file: file_name,
        spool_node: node,
        byte_size: i64::try_from(spooled.byte_size).unwrap_or(i64::MAX),
        encoding: spooled.encoding.map(str::to_owned),
        total: i64::try_from(spooled.rows).unwrap_or(i64::MAX),
        warnings: spooled.warnings.clone(),
        request_id: crate::telemetry::current_request_id(),
    };
    let mut tx = state.pool.begin().await?;
    let Some(row) = unbox_db::imports::insert(&mut tx, &new).await? else {
        // The key was used before: the same request gets the same job.
        tx.rollback().await?;
        let mut conn = state.pool.acquire().await?;
        let Some(key) = key else {
            return Err(ApiError::internal(anyhow::anyhow!(
                "an import without an idempotency key conflicted"
            )));
        };
        let existing =
            unbox_db::imports::by_idempotency_key(&mut conn, who.tenant_id, who.partner_id, &key)
                .await?
                .ok_or_else(|| ApiError::conflict("ConcurrentRequest", "retry the request"))?;
        if existing.fingerprint != spooled.fingerprint {
            return Err(ApiError::unprocessable(
                "IdempotencyKeyReused",
                "this Idempotency-Key was used with another body (or another format or dryRun); use a new key",
            )
            .with("importId", existing.id));
        }
        return Ok(accepted(existing.into(), who.location, true));
    };
    let job = ImportJob::from(row);
    let mut after = audit::snapshot(&job);
    if let Some(serde_json::Value::Object(map)) = after.as_mut() {
        map.insert("clientId".to_owned(), who.client_id.clone().into());
    }
    audit::record(
        &mut tx,
        &who.actor,
        "import.create",
        "import",
        id,
        None,
        after,
    )
    .await?;
    tx.commit().await?;
    guard.0 = None;
    Ok(accepted(job, who.location, false))
}

/// Uploads devices to register: an Autopilot CSV file or a JSON batch. The rows are
/// registered in the background; poll the job at `Location`.
#[utoipa::path(post, path = "/v1/imports", tag = "imports", security(("bearer" = ["imports.write"])),
    params(ImportParams, ("Idempotency-Key" = Option<String>, Header, description = "The same key with the same body gives the same job; with another body, 422")),
    request_body(description = "An Autopilot CSV file (UTF-16 or UTF-8 with or without BOM, or Windows-1252; up to 1 GiB and 250,000 rows), or a JSON batch",
        content((String = "text/csv"), (ImportBatch = "application/json"))),
    responses(
        (status = 202, description = "Accepted; `Location` is the job", body = ImportJob),
        (status = 400, description = "Malformed JSON batch, bad Idempotency-Key", body = unbox_domain::api::Problem),
        (status = 413, description = "`PayloadTooLarge`: over 1 GiB or 250,000 rows", body = unbox_domain::api::Problem),
        (status = 415, description = "Neither CSV nor JSON", body = unbox_domain::api::Problem),
        (status = 422, description = "`NotARegistrationCsv`, `IdempotencyKeyReused`", body = unbox_domain::api::Problem)))]
pub async fn create_import(
    State(state): State<AppState>,
    caller: Authorized<scope::ImportsWrite>,
    Query(params): Query<ImportParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let who = Submitter {
        tenant_id: caller.tenant_id,
        partner_id: None,
        client_id: caller.actor_id.clone(),
        actor: (*caller).clone(),
        location: "/v1/imports",
    };
    submit(&state, who, params, &headers, body).await
}

/// The tenant's import jobs, newest first (its partners' too).
#[utoipa::path(get, path = "/v1/imports", tag = "imports", security(("bearer" = ["imports.read"])),
    params(PageParams), responses((status = 200, body = Page<ImportJob>)))]
pub async fn list_imports(
    State(state): State<AppState>,
    caller: Authorized<scope::ImportsRead>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<ImportJob>>> {
    let limit = params.limit();
    let mut conn = state.pool.acquire().await?;
    let rows =
        unbox_db::imports::list(&mut conn, caller.tenant_id, params.after()?, limit + 1).await?;
    Ok(Json(page(rows, limit, |r| r.id, ImportJob::from)))
}

/// An import job's status and counts (a partner's job in this tenant too).
#[utoipa::path(get, path = "/v1/imports/{id}", tag = "imports", security(("bearer" = ["imports.read"])),
    params(("id" = Uuid, Path, description = "The import id")),
    responses((status = 200, body = ImportJob), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn get_import(
    State(state): State<AppState>,
    caller: Authorized<scope::ImportsRead>,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ImportJob>> {
    let mut conn = state.pool.acquire().await?;
    let row = unbox_db::imports::get(&mut conn, caller.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("import"))?;
    Ok(Json(row.into()))
}

async fn items_page(
    state: &AppState,
    tenant_id: Uuid,
    id: Uuid,
    params: ItemParams,
) -> ApiResult<Json<Page<ImportItem>>> {
    if let Some(status) = params.status.as_deref()
        && status != "complete"
        && status != "error"
    {
        return Err(ApiError::bad_request(
            "InvalidQueryParameter",
            format!("status `{status}` is not `complete` or `error`"),
        ));
    }
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = paging.limit();
    let mut conn = state.pool.acquire().await?;
    let rows = unbox_db::imports::items(
        &mut conn,
        tenant_id,
        id,
        params.status.as_deref(),
        paging.after()?,
        limit + 1,
    )
    .await?;
    Ok(Json(page(rows, limit, |r| r.line, ImportItem::from)))
}

/// The result of every row of an import, by row.
#[utoipa::path(get, path = "/v1/imports/{id}/items", tag = "imports", security(("bearer" = ["imports.read"])),
    params(("id" = Uuid, Path, description = "The import id"), ItemParams),
    responses((status = 200, body = Page<ImportItem>), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn list_items(
    State(state): State<AppState>,
    caller: Authorized<scope::ImportsRead>,
    Path(id): Path<Uuid>,
    Query(params): Query<ItemParams>,
) -> ApiResult<Json<Page<ImportItem>>> {
    {
        let mut conn = state.pool.acquire().await?;
        unbox_db::imports::get(&mut conn, caller.tenant_id, id)
            .await?
            .ok_or_else(|| ApiError::not_found("import"))?;
    }
    items_page(&state, caller.tenant_id, id, params).await
}

/// Uploads devices into a tenant that authorized the partner, as `POST /v1/imports`.
#[utoipa::path(post, path = "/v1/partner/tenants/{tenantId}/imports", tag = "partners", security(("bearer" = ["partner.devices.write"])),
    params(("tenantId" = Uuid, Path, description = "The tenant to register into"), ImportParams,
        ("Idempotency-Key" = Option<String>, Header, description = "The same key with the same body gives the same job; with another body, 422")),
    request_body(description = "An Autopilot CSV file or a JSON batch, as for `POST /v1/imports`",
        content((String = "text/csv"), (ImportBatch = "application/json"))),
    responses(
        (status = 202, description = "Accepted; `Location` is the job", body = ImportJob),
        (status = 403, description = "`PartnerNotAuthorized`: the tenant has not authorized this partner", body = unbox_domain::api::Problem),
        (status = 413, body = unbox_domain::api::Problem), (status = 415, body = unbox_domain::api::Problem),
        (status = 422, body = unbox_domain::api::Problem)))]
pub async fn create_partner_import(
    State(state): State<AppState>,
    caller: Caller,
    Path(tenant_id): Path<Uuid>,
    Query(params): Query<ImportParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let partner = caller.partner(Scope::PartnerDevicesWrite)?;
    let authorized = {
        let mut conn = state.pool.acquire().await?;
        unbox_db::partners::is_authorized(&mut conn, tenant_id, partner.partner_id, false).await?
    };
    if !authorized {
        // The same answer whether the tenant exists or not.
        return Err(ApiError::forbidden(
            "PartnerNotAuthorized",
            "this tenant has not authorized your organisation to register its devices",
        ));
    }
    let who = Submitter {
        tenant_id,
        partner_id: Some(partner.partner_id),
        actor: TenantCaller {
            tenant_id,
            actor_kind: "partner",
            actor_id: partner.partner_id.to_string(),
        },
        client_id: partner.client_id,
        location: "/v1/partner/imports",
    };
    submit(&state, who, params, &headers, body).await
}

async fn partner_job(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<ImportJob> {
    let partner = caller.partner(Scope::PartnerDevicesWrite)?;
    let mut conn = state.pool.acquire().await?;
    let row = unbox_db::imports::get_for_partner(&mut conn, partner.partner_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("import"))?;
    Ok(row.into())
}

/// The status of one of the partner's own imports.
#[utoipa::path(get, path = "/v1/partner/imports/{id}", tag = "partners", security(("bearer" = ["partner.devices.write"])),
    params(("id" = Uuid, Path, description = "The import id")),
    responses((status = 200, body = ImportJob), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn get_partner_import(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ImportJob>> {
    Ok(Json(partner_job(&state, &caller, id).await?))
}

/// The rows of one of the partner's own imports.
#[utoipa::path(get, path = "/v1/partner/imports/{id}/items", tag = "partners", security(("bearer" = ["partner.devices.write"])),
    params(("id" = Uuid, Path, description = "The import id"), ItemParams),
    responses((status = 200, body = Page<ImportItem>), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn list_partner_items(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(params): Query<ItemParams>,
) -> ApiResult<Json<Page<ImportItem>>> {
    let job = partner_job(&state, &caller, id).await?;
    items_page(&state, job.tenant_id, id, params).await
}
