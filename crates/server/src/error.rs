//! The one place an error becomes an HTTP status: engine errors, and the admin endpoints' own
//! refusals (no token configured, a missing or wrong token, no such endpoint).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tiercache_engine::Error;

/// The realm named in `WWW-Authenticate` challenges of the admin endpoints.
const ADMIN_REALM: &str = "tiercache-admin";

/// Seconds a client is asked to wait before retrying after a 503 (a read that raced changes, or a
/// connection beyond the connection limit).
const RETRY_AFTER_SECONDS: &str = "1";

/// The methods a namespace mirroring a source answers (405 for a write to it).
const READ_ONLY_METHODS: &str = "GET,HEAD";

/// An error on its way to a client: `{"error": kind, "message": why}` with the status its kind
/// calls for. Client mistakes get a 4xx; source failures 502 (504 for timeouts); local failures
/// 5xx with the cause logged.
#[derive(Debug)]
#[non_exhaustive]
pub enum ApiError {
    /// The engine refused the request or failed.
    Engine(Error),
    /// An admin request without a valid bearer token (401, with a `WWW-Authenticate` challenge).
    Unauthorized(AuthFailure),
    /// An admin request while no admin token is configured: the endpoints are off (404).
    AdminOff,
    /// An authenticated admin request to a path no admin endpoint serves (404).
    NoAdminEndpoint,
    /// A request on a connection beyond the connection limit, other than `/healthz` and
    /// `/metrics` (503, with
    /// `Retry-After` and `Connection: close`; see `listener.rs`).
    Overloaded,
    /// A request body that sent nothing for the body idle timeout (408, `Connection: close`).
    BodyTimeout,
}

/// Why an admin request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header of another scheme than `Bearer`, or with an empty token.
    NotBearer,
    /// A bearer token that is not the admin token.
    Wrong,
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError::Engine(e)
    }
}

impl ApiError {
    /// A client's mistake in its request (400), saying what was wrong.
    pub(crate) fn invalid(why: impl Into<String>) -> ApiError {
        ApiError::Engine(Error::Invalid(why.into()))
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        use tiercache_engine::Error as E;
        let e = match self {
            ApiError::Engine(e) => e,
            ApiError::Unauthorized(_) => return StatusCode::UNAUTHORIZED,
            ApiError::AdminOff | ApiError::NoAdminEndpoint => return StatusCode::NOT_FOUND,
            ApiError::Overloaded => return StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout => return StatusCode::REQUEST_TIMEOUT,
        };
        match e {
            E::Key(_) | E::Digest(_) | E::Invalid(_) | E::DigestMismatch { .. } => StatusCode::BAD_REQUEST,
            E::Range(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            E::NoNamespace(_) | E::NoEntry { .. } | E::NoBlob(_) => StatusCode::NOT_FOUND,
            E::Conflict { .. } => StatusCode::CONFLICT,
            E::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            E::ReadOnly { .. } => StatusCode::METHOD_NOT_ALLOWED,
            E::Source(tiercache_engine::SourceError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            E::Source(tiercache_engine::SourceError::NotFound { .. }) => StatusCode::NOT_FOUND,
            E::Source(s) if s.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            E::Source(_) => StatusCode::BAD_GATEWAY,
            E::StorageFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short machine-friendly kind: the body's `error` field and the metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Engine(e) => e.kind(),
            ApiError::Unauthorized(AuthFailure::Missing) => "missing_token",
            ApiError::Unauthorized(AuthFailure::NotBearer) => "not_bearer_token",
            ApiError::Unauthorized(AuthFailure::Wrong) => "wrong_token",
            ApiError::AdminOff => "admin_off",
            ApiError::NoAdminEndpoint => "no_admin_endpoint",
            ApiError::Overloaded => "overloaded",
            ApiError::BodyTimeout => "body_timeout",
        }
    }

    fn message(&self) -> String {
        match self {
            ApiError::Engine(e) => e.to_string(),
            ApiError::Unauthorized(AuthFailure::Missing) => {
                "missing admin token: send `Authorization: Bearer <admin_token>`".into()
            }
            ApiError::Unauthorized(AuthFailure::NotBearer) => {
                "the Authorization header is not a bearer token: send `Authorization: Bearer <admin_token>`".into()
            }
            ApiError::Unauthorized(AuthFailure::Wrong) => "wrong admin token".into(),
            ApiError::AdminOff => {
                "admin endpoints are off: set `admin_token` (or TIERCACHE_ADMIN_TOKEN) to turn them on".into()
            }
            ApiError::NoAdminEndpoint => {
                "no admin endpoint here: see /admin/namespaces, /admin/prune, /admin/df and /admin/stats".into()
            }
            ApiError::Overloaded => "too many connections: try again later".into(),
            ApiError::BodyTimeout => "the request body stopped arriving: nothing was stored".into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, message) = (self.kind(), self.message());
        // Refusals at the connection limit are the limit working, and may come by the thousand.
        if status.is_server_error() && !matches!(self, ApiError::Overloaded) {
            tracing::warn!(status = status.as_u16(), error = %message, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %message, "request refused");
        }
        metrics::counter!("tiercache_http_errors_total", "kind" => kind).increment(1);
        let body = serde_json::json!({ "error": kind, "message": message });
        let mut resp = (status, Json(body)).into_response();
        // A 503 says when to try again, and a 405 which methods are allowed (RFC 9110 §15.6.4,
        // §15.5.6).
        match &self {
            ApiError::Engine(Error::Busy { .. }) => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
            }
            ApiError::Engine(Error::ReadOnly { .. }) => {
                resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(READ_ONLY_METHODS));
            }
            ApiError::Overloaded => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::BodyTimeout => {
                resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        if let ApiError::Unauthorized(why) = self {
            // RFC 6750 §3: a request with no credentials gets a bare challenge; a bad token says so.
            let challenge = match why {
                AuthFailure::Wrong => format!("Bearer realm=\"{ADMIN_REALM}\", error=\"invalid_token\""),
                AuthFailure::Missing | AuthFailure::NotBearer => format!("Bearer realm=\"{ADMIN_REALM}\""),
            };
            let challenge = HeaderValue::from_str(&challenge).expect("the challenge is ASCII");
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;

    use super::*;

    /// The status and the headers `e` is answered with.
    fn answer(e: Error) -> (StatusCode, HeaderMap) {
        let resp = ApiError::Engine(e).into_response();
        (resp.status(), resp.headers().clone())
    }

    #[test]
    fn a_busy_read_is_503_with_retry_after() {
        let (status, headers) = answer(Error::Busy { what: "entry web/k".into() });
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers.get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
    }

    #[test]
    fn the_limits_answers_close_the_connection() {
        let resp = ApiError::Overloaded.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()), Some(&b"1"[..]));
        assert_eq!(resp.headers().get(header::CONNECTION).map(|v| v.as_bytes()), Some(&b"close"[..]));
        let resp = ApiError::BodyTimeout.into_response();
        assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(resp.headers().get(header::CONNECTION).map(|v| v.as_bytes()), Some(&b"close"[..]));
    }

    #[test]
    fn a_write_to_a_read_only_namespace_is_405_with_allow() {
        let e = Error::ReadOnly { namespace: "web".into(), mirrors: "http://127.0.0.1:1/".into() };
        let (status, headers) = answer(e);
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers.get(header::ALLOW).map(|v| v.as_bytes()), Some(&b"GET,HEAD"[..]));
    }

    #[test]
    fn each_engine_error_keeps_its_status() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        let cases: Vec<(Error, StatusCode)> = vec![
            (Error::conflict("taken"), StatusCode::CONFLICT),
            (Error::io("writing", full), StatusCode::INSUFFICIENT_STORAGE),
            (Error::io("reading", std::io::Error::other("bad sector")), StatusCode::INTERNAL_SERVER_ERROR),
            (Error::NoNamespace("x".into()), StatusCode::NOT_FOUND),
            (Error::Invalid("bad".into()), StatusCode::BAD_REQUEST),
        ];
        for (e, want) in cases {
            let what = e.to_string();
            assert_eq!(answer(e).0, want, "{what}");
        }
    }
}
