//! The one place an engine error becomes an HTTP status.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use tiercache_engine::Error;

/// An error on its way to a client: `{"error": kind, "message": why}` with the status its kind
/// calls for. Client mistakes get a 4xx; source failures 502 (504 for timeouts); local failures
/// 5xx with the cause logged.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError(e)
    }
}

impl ApiError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        use tiercache_engine::Error as E;
        match &self.0 {
            E::Key(_) | E::Digest(_) | E::Invalid(_) | E::DigestMismatch { .. } => StatusCode::BAD_REQUEST,
            E::Range(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            E::NoNamespace(_) | E::NoEntry { .. } | E::NoBlob(_) => StatusCode::NOT_FOUND,
            E::Conflict(_) => StatusCode::CONFLICT,
            E::ReadOnly(_) => StatusCode::METHOD_NOT_ALLOWED,
            E::Source(tiercache_engine::SourceError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            E::Source(tiercache_engine::SourceError::NotFound { .. }) => StatusCode::NOT_FOUND,
            E::Source(s) if s.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            E::Source(_) => StatusCode::BAD_GATEWAY,
            E::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self.0, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self.0, "request refused");
        }
        metrics::counter!("tiercache_http_errors_total", "kind" => self.0.kind()).increment(1);
        let body = serde_json::json!({ "error": self.0.kind(), "message": self.0.to_string() });
        (status, Json(body)).into_response()
    }
}
