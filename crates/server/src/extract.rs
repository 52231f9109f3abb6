//! Our own `Json`, `Path` and `Query` extractors: the same as axum's, except that their
//! rejections are problem documents like every other error.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::payload_too_large("the request body is larger than this endpoint accepts")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            _ => ApiError::bad_request("InvalidBody", rejection.body_text()),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::bad_request("InvalidPathParameter", rejection.body_text())
    }
}

#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::bad_request("InvalidQueryParameter", rejection.body_text())
    }
}

#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Form), rejection(ApiError))]
pub struct Form<T>(pub T);

impl From<axum::extract::rejection::FormRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::FormRejection) -> Self {
        match rejection.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                "send the body as `application/x-www-form-urlencoded`",
            ),
            _ => ApiError::bad_request("InvalidBody", rejection.body_text()),
        }
    }
}

/// The `If-Match` precondition of a write, when given: 412 unless it names `revision`.
pub fn check_if_match(headers: &axum::http::HeaderMap, revision: i64) -> Result<(), ApiError> {
    let Some(value) = headers.get(axum::http::header::IF_MATCH) else {
        return Ok(());
    };
    let current = etag(revision);
    let matched = value.to_str().ok().is_some_and(|v| {
        v.split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.trim_start_matches("W/") == current)
    });
    if matched {
        Ok(())
    } else {
        Err(ApiError::precondition_failed())
    }
}

/// The strong ETag of a resource at a revision.
pub fn etag(revision: i64) -> String {
    format!("\"{revision}\"")
}
