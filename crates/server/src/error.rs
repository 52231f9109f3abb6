//! The one error type of the HTTP edge. Every failure becomes an RFC 9457 problem document
//! (`application/problem+json`) with a stable `code`; a 5xx carries the request id and never
//! internal details, which go to the log under the same id.

use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use unbox_domain::api::{FieldError, Problem};

use crate::telemetry::current_request_id;

#[derive(Debug)]
pub struct ApiError(Box<Parts>);

#[derive(Debug)]
struct Parts {
    status: StatusCode,
    code: String,
    title: String,
    detail: Option<String>,
    errors: Vec<FieldError>,
    extensions: serde_json::Map<String, serde_json::Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The cause of a server error: logged, never sent.
    internal: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &str, detail: impl Into<String>) -> Self {
        Self(Box::new(Parts {
            status,
            code: code.to_owned(),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            detail: Some(detail.into()),
            errors: Vec::new(),
            extensions: serde_json::Map::new(),
            headers: Vec::new(),
            internal: None,
        }))
    }

    /// Replaces the stable code (for a more specific one than the constructor's).
    pub fn with_code(mut self, code: &str) -> Self {
        code.clone_into(&mut self.0.code);
        self
    }

    pub fn title(mut self, title: &str) -> Self {
        title.clone_into(&mut self.0.title);
        self
    }

    pub fn with(mut self, name: &str, value: impl serde::Serialize) -> Self {
        if let Ok(value) = serde_json::to_value(value) {
            self.0.extensions.insert(name.to_owned(), value);
        }
        self
    }

    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    pub fn code(&self) -> &str {
        &self.0.code
    }

    /// 404 for an unknown id — and for another tenant's, which must look the same.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{what} not found"),
        )
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 422 with the fields that are wrong.
    pub fn invalid_fields(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "ValidationFailed", detail);
        error.0.errors = errors;
        error
    }

    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::invalid_fields(vec![FieldError::new(field, message)])
    }

    pub fn unprocessable(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
    }

    pub fn conflict(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail).header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"unbox\""),
        )
    }

    pub fn forbidden(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }

    pub fn precondition_failed() -> Self {
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            "the resource changed since the ETag given in If-Match; read it again",
        )
    }

    pub fn payload_too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            detail,
        )
        .header(header::RETRY_AFTER, HeaderValue::from_static("1"))
    }

    /// A server error: the cause is logged with the request id, the client gets only the id.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        let mut error = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "the server failed to handle the request; quote the requestId when reporting it",
        );
        error.0.internal = Some(cause.into());
        error
    }
}

/// SQLSTATE classes that say the server is going away or cannot take the work now (a shutdown
/// or restart, a lost connection, too many connections): a `503`, as a pool timeout is, and
/// not a `500`.
fn unavailable_sqlstate(code: &str) -> bool {
    matches!(code.get(..2), Some("08" | "53" | "57"))
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match error {
            // Overload or a database outage: tell the client to retry, not that we broke.
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                let mut e = Self::unavailable("the database is unavailable; retry shortly");
                e.0.internal = Some(error.into());
                e
            }
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|code| unavailable_sqlstate(&code)) =>
            {
                let mut e = Self::unavailable("the database is unavailable; retry shortly");
                e.0.internal = Some(error.into());
                e
            }
            other => Self::internal(other),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(error: tokio::task::JoinError) -> Self {
        Self::internal(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        if self.0.status.is_server_error() {
            match &self.0.internal {
                Some(cause) => tracing::error!(
                    request_id = request_id.as_deref().unwrap_or("-"),
                    code = %self.0.code,
                    error = format!("{cause:#}"),
                    "request failed"
                ),
                None => tracing::warn!(
                    request_id = request_id.as_deref().unwrap_or("-"),
                    code = %self.0.code,
                    "request failed"
                ),
            }
        }
        let problem = Problem {
            type_uri: format!("urn:unbox:problem:{}", self.0.code),
            title: self.0.title,
            status: self.0.status.as_u16(),
            detail: self.0.detail,
            code: self.0.code,
            request_id: if self.0.status.is_server_error() {
                request_id
            } else {
                None
            },
            errors: self.0.errors,
            extensions: self.0.extensions,
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (
            self.0.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body,
        )
            .into_response();
        for (name, value) in self.0.headers {
            response.headers_mut().append(name, value);
        }
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::unavailable_sqlstate;

    #[test]
    fn a_database_going_away_is_unavailable_not_broken() {
        // admin_shutdown (pg_ctl stop -m fast), crash_shutdown, cannot_connect_now (starting
        // up), connection_failure, too_many_connections.
        for code in ["57P01", "57P02", "57P03", "08006", "53300"] {
            assert!(unavailable_sqlstate(code), "{code}");
        }
        // unique_violation, undefined_table, serialization_failure: not an outage.
        for code in ["23505", "42P01", "40001", ""] {
            assert!(!unavailable_sqlstate(code), "{code}");
        }
    }
}
