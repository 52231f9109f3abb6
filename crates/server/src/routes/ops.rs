//! Operations: liveness, readiness, metrics, the JWKS, the OpenAPI document and its page.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};

use crate::error::{ApiError, ApiResult};
use crate::extract::Json;
use crate::state::AppState;

/// Liveness: 200 while the process runs.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process runs", body = serde_json::Value)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: 200 when the database answers and every migration is applied, else 503.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = serde_json::Value),
        (status = 503, description = "Not ready", body = unbox_domain::api::Problem)))]
pub async fn readyz(State(state): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    let mut conn = state
        .pool
        .acquire()
        .await
        .map_err(|_| ApiError::unavailable("the database does not answer"))?;
    let migrated = unbox_db::migrations_applied(&mut conn)
        .await
        .map_err(|_| ApiError::unavailable("the database does not answer"))?;
    if !migrated {
        return Err(ApiError::unavailable("database migrations are not applied"));
    }
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

/// Prometheus metrics: requests and latencies by route and status, and pool usage.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let size = f64::from(state.pool.size());
    let idle = f64::from(u32::try_from(state.pool.num_idle()).unwrap_or(u32::MAX));
    metrics::gauge!("db_pool_connections", "state" => "open").set(size);
    metrics::gauge!("db_pool_connections", "state" => "idle").set(idle);
    metrics::gauge!("db_pool_connections", "state" => "in_use").set(size - idle);
    metrics::gauge!("db_pool_max_connections")
        .set(f64::from(state.pool.options().get_max_connections()));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// The public keys that sign Unbox's tokens and profiles.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "A JSON Web Key Set", body = serde_json::Value)))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.tokens.jwks()),
    )
}

/// The OpenAPI document of this server.
pub async fn openapi_json() -> impl IntoResponse {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::document_json(),
    )
}

/// A page to read the API, self-contained (no CDN: Unbox is often run on closed networks).
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
