//! The one place an error becomes an HTTP status: engine errors, and the access rules' own
//! refusals (no usable token, a token without the right, admin endpoints off or unknown).
//!
//! An answer tells a client what it may know: the kind of failure ("the source answered 503",
//! "not found"), never a source's URL or credentials, a directory root, an internal path or another
//! namespace's name. The full message goes to the log, and beside the answer (a [`Detail`]
//! extension, never sent) for the doors that show it to a client holding the admin token
//! ([`reveal`]).

use std::borrow::Cow;

use axum::Json;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tiercache_engine::{Error, SourceError};

use crate::access::Right;

/// The realm named in `WWW-Authenticate` challenges of the admin endpoints.
const ADMIN_REALM: &str = "tiercache-admin";

/// The realm named in `WWW-Authenticate` challenges of reads and writes.
const REALM: &str = "tiercache";

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
    /// A request without a usable token for the right it `needs` (401, with a `WWW-Authenticate`
    /// challenge).
    Unauthorized {
        /// What was wrong with the request's token.
        why: AuthFailure,
        /// The right the request needs.
        needs: Right,
    },
    /// A request whose token grants less than it `needs` (403).
    Forbidden {
        /// The right the token grants.
        has: Right,
        /// The right the request needs.
        needs: Right,
    },
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

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header of another scheme than `Bearer`, or with an empty token.
    NotBearer,
    /// A bearer token that is none of the server's tokens.
    Wrong,
}

/// The full body of an error answer whose body a client without the admin token sees only in
/// part; kept in the answer's extensions, which are never sent.
#[derive(Debug, Clone)]
struct Detail(bytes::Bytes);

/// Gives `res` its full error detail, if it is an error answer that was told in part: for a
/// client holding the admin token, and on the admin endpoints.
pub(crate) fn reveal(res: &mut Response) {
    if let Some(Detail(full)) = res.extensions_mut().remove::<Detail>() {
        res.headers_mut().remove(header::CONTENT_LENGTH);
        *res.body_mut() = Body::from(full);
    }
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
            ApiError::Unauthorized { .. } => return StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => return StatusCode::FORBIDDEN,
            ApiError::AdminOff | ApiError::NoAdminEndpoint => return StatusCode::NOT_FOUND,
            ApiError::Overloaded => return StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout => return StatusCode::REQUEST_TIMEOUT,
        };
        match e {
            E::Key(_) | E::Digest(_) | E::Invalid(_) | E::DigestMismatch { .. } | E::Containment { .. } => {
                StatusCode::BAD_REQUEST
            }
            E::NameTooLong { .. } => StatusCode::URI_TOO_LONG,
            E::Range(_) => StatusCode::RANGE_NOT_SATISFIABLE,
            E::NoNamespace(_) | E::NoEntry { .. } | E::NoBlob(_) | E::NoSuchUpload { .. } => StatusCode::NOT_FOUND,
            E::NoImageFile { .. } => StatusCode::NOT_FOUND,
            // The registry's image is what cannot be read: a bad upstream answer.
            E::BadImage { .. } => StatusCode::BAD_GATEWAY,
            E::InvalidPart { .. } | E::InvalidPartOrder { .. } | E::EntityTooSmall { .. } | E::BadDigest { .. } => {
                StatusCode::BAD_REQUEST
            }
            E::Conflict { .. } | E::NotEmpty { .. } => StatusCode::CONFLICT,
            E::Exists { .. } => StatusCode::PRECONDITION_FAILED,
            E::Busy { .. } | E::SourceBusy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            E::ReadOnly { .. } => StatusCode::METHOD_NOT_ALLOWED,
            E::Source(tiercache_engine::SourceError::Forbidden { .. }) => StatusCode::FORBIDDEN,
            E::Source(tiercache_engine::SourceError::NotFound { .. }) => StatusCode::NOT_FOUND,
            E::Source(s) if s.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
            E::Source(_) => StatusCode::BAD_GATEWAY,
            E::StorageFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
            E::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            E::Recipe { fault: tiercache_engine::RecipeFault::BadRequest, .. } => StatusCode::BAD_REQUEST,
            E::Recipe { fault: tiercache_engine::RecipeFault::Unsupported, .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            E::Recipe { fault: tiercache_engine::RecipeFault::NotAvailable, .. } => StatusCode::SERVICE_UNAVAILABLE,
            // The client's own body failed; the listener answers a body timeout 408 instead.
            E::UploadBody { .. } => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short machine-friendly kind: the body's `error` field and the metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::Engine(e) => e.kind(),
            ApiError::Unauthorized { why: AuthFailure::Missing, .. } => "missing_token",
            ApiError::Unauthorized { why: AuthFailure::NotBearer, .. } => "not_bearer_token",
            ApiError::Unauthorized { why: AuthFailure::Wrong, .. } => "wrong_token",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::AdminOff => "admin_off",
            ApiError::NoAdminEndpoint => "no_admin_endpoint",
            ApiError::Overloaded => "overloaded",
            ApiError::BodyTimeout => "body_timeout",
        }
    }

    /// The whole message, for the log and for clients holding the admin token.
    fn message(&self) -> String {
        match self {
            ApiError::Engine(e) => e.to_string(),
            ApiError::Unauthorized { why, needs } => unauthorized_message(*why, *needs),
            ApiError::Forbidden { has, needs } => {
                let (what, send) = match needs {
                    Right::Admin => ("use the admin endpoints", "the admin token"),
                    Right::Write => ("write", "a write or admin token"),
                    Right::Read => ("read", "a read, write or admin token"),
                };
                format!("a {} token cannot {what}: send {send}", has.as_str())
            }
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

    /// What any client may be told: the kind of failure, without a source's URL or credentials,
    /// a directory root, an internal path or another namespace's name. Messages about the
    /// client's own request (a bad key, range or digest, a name it asked for) are told whole.
    fn public_message(&self) -> Cow<'static, str> {
        use tiercache_engine::Error as E;
        let ApiError::Engine(e) = self else { return self.message().into() };
        match e {
            E::Key(_)
            | E::Digest(_)
            | E::Range(_)
            | E::Invalid(_)
            | E::DigestMismatch { .. }
            | E::NoNamespace(_)
            | E::NoEntry { .. }
            | E::NoBlob(_)
            | E::NoImageFile { .. }
            | E::BadImage { .. }
            | E::NoSuchUpload { .. }
            | E::InvalidPart { .. }
            | E::InvalidPartOrder { .. }
            | E::EntityTooSmall { .. }
            | E::BadDigest { .. } => e.to_string().into(),
            E::Conflict { .. } => "the request conflicts with what exists (a key that names a directory, or a \
                                   definition already in place)"
                .into(),
            E::Busy { .. } => "what was read kept changing while it was read; try again".into(),
            // Its message names no source: only the wait.
            E::SourceBusy { .. } => e.to_string().into(),
            // The client's own key, and the file system's limit; the client's own upload's size.
            E::NameTooLong { .. } | E::TooLarge { .. } | E::UploadBody { .. } => e.to_string().into(),
            // Its message names directories of this host.
            E::Containment { .. } => "the namespace's source would reach outside what a namespace may reach (the data \
                                      directory or another namespace's storage); the server's log says more"
                .into(),
            E::ReadOnly { namespace, .. } => {
                format!("namespace {namespace} mirrors a source; its entries are read-only").into()
            }
            E::Source(s) => match s {
                SourceError::NotFound { .. } => "not found at the source".into(),
                SourceError::Forbidden { .. } => "the source refused access".into(),
                SourceError::Status { status, .. } => format!("the source answered {status}").into(),
                SourceError::Timeout { after, .. } => format!("the source timed out after {after:?}").into(),
                SourceError::LengthMismatch { expected, got, .. } => {
                    format!("the source's body was {got} bytes, but its Content-Length said {expected}").into()
                }
                SourceError::Transport { .. } => "the transfer from the source failed".into(),
                SourceError::Protocol { .. } => "the source sent an invalid response".into(),
                SourceError::Changed { .. } => "the object changed at the source while it was read".into(),
                SourceError::Redirect { .. } => {
                    "the source redirected where its redirect policy does not follow".into()
                }
                SourceError::AddressRefused { .. } => "the source is at an address sources may not reach".into(),
                _ => "the source failed".into(),
            },
            E::StorageFull { .. } => "no space left to store this".into(),
            E::Io { .. } | E::Index(_) => "a local failure; the server's log says more".into(),
            // A kind this match does not know yet: its status's name, which says nothing more.
            _ => self.status().canonical_reason().unwrap_or("the request failed").into(),
        }
    }
}

/// What a request without a usable token is told: which token to send.
fn unauthorized_message(why: AuthFailure, needs: Right) -> String {
    let send = match needs {
        Right::Admin => "`Authorization: Bearer <admin_token>`",
        Right::Write => "`Authorization: Bearer <write_token>` (a write or admin token)",
        Right::Read => "`Authorization: Bearer <read_token>` (a read, write or admin token)",
    };
    let token = if needs == Right::Admin { "admin token" } else { "token" };
    match why {
        AuthFailure::Missing if needs == Right::Admin => format!("missing admin token: send {send}"),
        AuthFailure::Missing => {
            let what = if needs == Right::Write { "a write needs a token" } else { "reads need a token here" };
            format!("missing token: {what}; send {send}")
        }
        AuthFailure::NotBearer => format!("the Authorization header is not a bearer token: send {send}"),
        AuthFailure::Wrong => format!("wrong {token}: send {send}"),
    }
}

impl IntoResponse for ApiError {
    /// The answer any client may see ([`ApiError::public_message`]); the full message is logged,
    /// and kept beside the answer for [`reveal`].
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
        let public = self.public_message();
        let detail = (public != message)
            .then(|| Detail(serde_json::json!({ "error": kind, "message": message }).to_string().into()));
        let body = serde_json::json!({ "error": kind, "message": public });
        let mut resp = (status, Json(body)).into_response();
        if let Some(detail) = detail {
            resp.extensions_mut().insert(detail);
        }
        // A 503 says when to try again, and a 405 which methods are allowed (RFC 9110 §15.6.4,
        // §15.5.6).
        match &self {
            ApiError::Engine(Error::Busy { .. } | Error::SourceBusy { .. }) => {
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
        // RFC 6750 §3: a request with no credentials gets a bare challenge; a bad token, or one
        // without the right, says so.
        let challenge = match self {
            ApiError::Unauthorized { why, needs } => {
                Some((needs, (why == AuthFailure::Wrong).then_some("invalid_token")))
            }
            ApiError::Forbidden { needs, .. } => Some((needs, Some("insufficient_scope"))),
            _ => None,
        };
        if let Some((needs, error)) = challenge {
            let realm = if needs == Right::Admin { ADMIN_REALM } else { REALM };
            let challenge = match error {
                Some(error) => format!("Bearer realm=\"{realm}\", error=\"{error}\""),
                None => format!("Bearer realm=\"{realm}\""),
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

    /// The body of `resp`, and of it revealed.
    fn bodies(e: Error) -> (String, String) {
        let body = |resp: Response| {
            let bytes = futures::executor::block_on(axum::body::to_bytes(resp.into_body(), usize::MAX)).unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        let told = ApiError::Engine(e.clone()).into_response();
        let mut revealed = ApiError::Engine(e).into_response();
        reveal(&mut revealed);
        (body(told), body(revealed))
    }

    #[test]
    fn a_client_is_told_the_kind_of_failure_and_the_admin_the_detail() {
        let url = "http://user:secret@10.1.2.3:8080/root/k".to_owned();
        let after = std::time::Duration::from_secs(30);
        let cases: Vec<(Error, &str)> = vec![
            (SourceError::NotFound { url: url.clone() }.into(), "not found at the source"),
            (SourceError::Forbidden { url: url.clone() }.into(), "the source refused access"),
            (SourceError::Status { status: 503, url: url.clone() }.into(), "the source answered 503"),
            (SourceError::Timeout { url: url.clone(), after }.into(), "the source timed out after 30s"),
            (SourceError::LengthMismatch { url: url.clone(), expected: 10, got: 5 }.into(), "was 5 bytes"),
            (SourceError::Transport { url: url.clone(), reason: format!("connect {url}") }.into(), "transfer"),
            (SourceError::Protocol { url: url.clone(), reason: format!("bad {url}") }.into(), "invalid response"),
            (Error::ReadOnly { namespace: "web".into(), mirrors: url.clone() }, "namespace web mirrors a source"),
            (Error::io(format!("writing {url}"), std::io::Error::other("bad sector")), "local failure"),
            (Error::StorageFull { what: format!("under {url}"), cause: None }, "no space left"),
            (Error::conflict(format!("{url} is namespace other's")), "conflicts with what exists"),
            (Error::Busy { what: format!("blob file {url}") }, "kept changing"),
        ];
        for (e, says) in cases {
            let (told, revealed) = bodies(e);
            assert!(told.contains(says), "{told}");
            for secret in ["secret", "10.1.2.3", "/root", "other"] {
                assert!(!told.contains(secret), "{secret} in {told}");
            }
            // The detail (credentials, where shown at all, are redacted where the URL is made).
            assert!(revealed.contains("10.1.2.3:8080/root/k"), "{revealed}");
        }
        // A message about the client's own request is told whole, and there is nothing more.
        let (told, revealed) = bodies(Error::NoEntry { namespace: "web".into(), key: "a/b".into() });
        assert_eq!(told, revealed);
        assert!(told.contains(r#"no entry \"a/b\" in namespace \"web\""#), "{told}");
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
            (Error::TooLarge { declared_bytes: Some(2), max_bytes: 1 }, StatusCode::PAYLOAD_TOO_LARGE),
            (Error::TooLarge { declared_bytes: None, max_bytes: 1 }, StatusCode::PAYLOAD_TOO_LARGE),
            (Error::UploadBody { why: "connection reset".into() }, StatusCode::BAD_REQUEST),
            (Error::NoSuchUpload { upload_id: "0".into() }, StatusCode::NOT_FOUND),
            (Error::InvalidPart { part_number: 1, why: "was not uploaded".into() }, StatusCode::BAD_REQUEST),
            (Error::InvalidPartOrder { part_number: 1, after: 2 }, StatusCode::BAD_REQUEST),
            (Error::EntityTooSmall { part_number: 1, size_bytes: 1, min_bytes: 5 }, StatusCode::BAD_REQUEST),
            (Error::BadDigest { expected: "a".into(), actual: "b".into() }, StatusCode::BAD_REQUEST),
        ];
        for (e, want) in cases {
            let what = e.to_string();
            assert_eq!(answer(e).0, want, "{what}");
        }
    }
}
