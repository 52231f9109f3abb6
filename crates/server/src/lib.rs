//! The Unbox HTTP service: the axum router, its handlers, extractors, auth and errors, and the
//! OpenAPI document generated from the same declarations. The `unboxd` binary (main.rs) adds
//! configuration, the database and the process around it.
//!
//! Where to look: a request to `/v1/devices` is handled in `routes/devices.rs`; its SQL is in
//! `crates/db/src/devices.rs`; its end-to-end tests are in `tests/e2e/`.

pub mod audit;
pub mod auth;
pub mod cache;
pub mod config;
pub mod device;
pub mod error;
pub mod extract;
pub mod imports;
pub mod membership;
pub mod openapi;
pub mod pagination;
pub mod presented_identity;
pub mod resolve;
pub mod routes;
pub mod runtime;
pub mod startup;
pub mod state;
pub mod telemetry;

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;
pub use crate::state::AppState;

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found("route")
        .with_code("RouteNotFound")
        .title("Not Found")
        .with("path", uri.path())
        .with("method", method.as_str())
}

fn panic_response(_: Box<dyn Any + Send + 'static>) -> Response {
    ApiError::internal(anyhow::anyhow!("a handler panicked")).into_response()
}

/// The whole HTTP application.
pub fn app(state: AppState) -> Router {
    let (admin, _) = routes::admin_router().split_for_parts();
    let (edge, _) = routes::edge_router().split_for_parts();
    let max_body = state.settings.max_json_body;
    // Reads of the admin API wait for the download batch, and its writes invalidate the device
    // cache; a device call needs neither, and skips that layer's cost.
    let admin = admin.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        device::consistency,
    ));
    admin
        .merge(edge)
        .route("/openapi.json", get(routes::ops::openapi_json))
        .route("/docs", get(routes::ops::docs))
        .fallback(unknown_route)
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{method} is not allowed on this path"),
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(telemetry::request_context))
        .with_state(state)
}
