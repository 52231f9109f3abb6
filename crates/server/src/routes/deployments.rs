//! Deployments as admins see them: a device's timeline (its deployments with their events) and
//! the report across devices. Statuses are computed on read: an open deployment past its
//! timeout shows as `failed` (`failureReason: timeout`) before the sweep has written it.

use std::collections::HashMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use unbox_db::deployments::{DeploymentView, ReportFilter};
use unbox_db::device_events::EventRow;
use unbox_domain::api::Page;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::{Authorized, scope};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, Path, Query};
use crate::pagination::{PageParams, page};
use crate::state::AppState;

/// An event a device reported.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentEvent {
    /// `profileApplied`, `deviceSetup`, `accountSetup` or `completed`.
    pub phase: String,
    /// `inProgress`, `succeeded` or `failed`.
    pub status: String,
    pub message: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// A deployment: opened by a profile download (its id is the document's `ZtdCorrelationId`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    pub id: Uuid,
    pub device_id: Uuid,
    pub serial_number: String,
    pub profile_id: Option<Uuid>,
    pub profile_name: Option<String>,
    /// `inProgress`, `succeeded` or `failed`.
    pub status: String,
    /// When failed: `event` (the device reported a failure), `timeout` (no event for longer
    /// than the timeout) or `superseded` (the device started a new deployment).
    pub failure_reason: Option<String>,
    /// The phase of the latest event.
    pub last_phase: Option<String>,
    pub opened_at: DateTime<Utc>,
    pub last_download_at: DateTime<Utc>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When it fails unless an event comes first.
    pub timeout_at: DateTime<Utc>,
    /// Its events, oldest first (in the device's timeline).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<DeploymentEvent>>,
}

fn to_api(row: DeploymentView, events: Option<Vec<DeploymentEvent>>) -> Deployment {
    Deployment {
        id: row.id,
        device_id: row.device_id,
        serial_number: row.serial_number,
        profile_id: row.profile_id,
        profile_name: row.profile_name,
        status: row.status,
        failure_reason: row.failure_reason,
        last_phase: row.last_phase,
        opened_at: row.opened_at,
        last_download_at: row.last_download_at,
        last_event_at: row.last_event_at,
        finished_at: row.finished_at,
        timeout_at: row.timeout_at,
        events,
    }
}

fn event(row: EventRow) -> DeploymentEvent {
    DeploymentEvent {
        phase: row.phase,
        status: row.status,
        message: row.message,
        received_at: row.received_at,
    }
}

/// A device's deployments with their events, newest first.
#[utoipa::path(get, path = "/v1/devices/{id}/deployments", tag = "deployments",
    security(("bearer" = ["deployments.read"])),
    params(("id" = Uuid, Path, description = "The device id"), PageParams),
    responses((status = 200, body = Page<Deployment>), (status = 404, body = unbox_domain::api::Problem)))]
pub async fn device_timeline(
    State(state): State<AppState>,
    caller: Authorized<scope::DeploymentsRead>,
    Path(id): Path<Uuid>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<Page<Deployment>>> {
    let mut conn = state.pool.acquire().await?;
    if unbox_db::devices::existing_ids(&mut conn, caller.tenant_id, &[id])
        .await?
        .is_empty()
    {
        return Err(ApiError::not_found("device"));
    }
    let limit = params.limit();
    let rows = unbox_db::deployments::of_device(
        &mut conn,
        caller.tenant_id,
        id,
        params.after()?,
        limit + 1,
    )
    .await?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut events: HashMap<Uuid, Vec<DeploymentEvent>> = HashMap::new();
    for row in unbox_db::device_events::of_deployments(&mut conn, caller.tenant_id, &ids).await? {
        events
            .entry(row.deployment_id)
            .or_default()
            .push(event(row));
    }
    Ok(Json(page(
        rows,
        limit,
        |r| r.id,
        |r| {
            let mine = events.remove(&r.id).unwrap_or_default();
            to_api(r, Some(mine))
        },
    )))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentReportParams {
    /// `inProgress`, `succeeded` or `failed` (timeouts count as failed).
    pub status: Option<String>,
    /// Deployments opened at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Deployments opened before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// The device's serial number (case-insensitive).
    pub serial_number: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// How many deployments match the filters, by status.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSummary {
    pub total: i64,
    pub in_progress: i64,
    pub succeeded: i64,
    pub failed: i64,
}

/// A page of the report, with the counts of everything that matches.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentReport {
    pub items: Vec<Deployment>,
    pub next_cursor: Option<String>,
    pub summary: DeploymentSummary,
}

/// Deployments across the tenant's devices, newest first, with counts by status.
#[utoipa::path(get, path = "/v1/deployments", tag = "deployments",
    security(("bearer" = ["deployments.read"])),
    params(DeploymentReportParams),
    responses((status = 200, body = DeploymentReport), (status = 400, body = unbox_domain::api::Problem)))]
pub async fn report(
    State(state): State<AppState>,
    caller: Authorized<scope::DeploymentsRead>,
    Query(params): Query<DeploymentReportParams>,
) -> ApiResult<Json<DeploymentReport>> {
    if let Some(status) = params.status.as_deref()
        && !matches!(status, "inProgress" | "succeeded" | "failed")
    {
        return Err(ApiError::bad_request(
            "InvalidQueryParameter",
            format!("status `{status}` is not `inProgress`, `succeeded` or `failed`"),
        ));
    }
    let filter = ReportFilter {
        status: params.status.clone(),
        since: params.since,
        until: params.until,
        serial_number: params.serial_number.clone().filter(|s| !s.is_empty()),
    };
    let paging = PageParams {
        limit: params.limit,
        cursor: params.cursor.clone(),
    };
    let limit = paging.limit();
    let mut conn = state.pool.acquire().await?;
    let rows = unbox_db::deployments::report(
        &mut conn,
        caller.tenant_id,
        &filter,
        paging.after()?,
        limit + 1,
    )
    .await?;
    let mut summary = DeploymentSummary::default();
    for (status, count) in
        unbox_db::deployments::summary(&mut conn, caller.tenant_id, &filter).await?
    {
        summary.total += count;
        match status.as_str() {
            "inProgress" => summary.in_progress = count,
            "succeeded" => summary.succeeded = count,
            _ => summary.failed += count,
        }
    }
    let page = page(rows, limit, |r| r.id, |r| to_api(r, None));
    Ok(Json(DeploymentReport {
        items: page.items,
        next_cursor: page.next_cursor,
        summary,
    }))
}
