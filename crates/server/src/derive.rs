//! Derivations over HTTP: `GET /ns/<ns>/<key>?derive=<recipe>&<params…>` and
//! `GET /blobs/sha256:<hex>?derive=…`, with `&wait=<duration>` to wait for a job.
//!
//! The output made: 200 with its bytes (ETag = the output's digest; `Cache-Control: immutable` for
//! a blob's, whose input cannot change). Not made yet: 202 with a placeholder (the recipe's, else
//! an empty body) and `Retry-After`. The input failed (now, or recently: the negative cache): 422
//! with the reason, or 415 if it is not something the recipe takes. The queue is full: 503 with `Retry-After`. A bad request (unknown recipe or
//! parameter, a value out of bounds): 400; an input the recipe does not take: 415; a recipe that
//! cannot run here, or no workers (`--no-worker`) and no output yet: 503.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use percent_encoding::percent_decode_str;
use tiercache_engine::{Cache, DeriveAsk, DeriveInput, Derived, Priority, Text};

use crate::ApiError;
use crate::respond::respond;

/// The longest `wait=` honoured.
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// The most parameters a request may give a recipe, and the longest value.
const MAX_PARAMS: usize = 16;
const MAX_VALUE_BYTES: usize = 256;

/// Whether `query` asks for a derivation.
pub(crate) fn is_derive(query: &str) -> bool {
    query.split('&').any(|p| p == "derive" || p.starts_with("derive="))
}

/// Answers a derivation of `input` asked for by `query` (see the module docs).
pub(crate) async fn answer(
    cache: &Cache,
    input: DeriveInput,
    method: &Method,
    headers: &HeaderMap,
    query: &str,
) -> Result<Response, ApiError> {
    let ask = ask_of(query, headers)?;
    let is_blob = matches!(input, DeriveInput::Blob(_));
    Ok(match cache.derive(&input, &ask).await? {
        Derived::Ready { mut read, content_type, output, .. } => {
            read.meta.etag = Some(Text::from(format!("\"{output}\"")));
            read.meta.content_type = Some(Text::from(content_type));
            read.meta.last_modified = None;
            let mut res = respond(*read, method, headers);
            if is_blob {
                let immutable = HeaderValue::from_static("public, max-age=31536000, immutable");
                res.headers_mut().insert(header::CACHE_CONTROL, immutable);
            }
            res
        }
        Derived::Pending { placeholder, retry_after } => {
            let (body, content_type) = match placeholder {
                Some((bytes, content_type)) => (bytes, content_type),
                None => (bytes::Bytes::new(), "application/octet-stream".to_owned()),
            };
            let mut res = if *method == Method::HEAD { ().into_response() } else { body.into_response() };
            *res.status_mut() = StatusCode::ACCEPTED;
            let h = res.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            h.insert(header::RETRY_AFTER, seconds(retry_after));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        Derived::Failed { reason, is_unsupported: true, .. } => {
            refusal(StatusCode::UNSUPPORTED_MEDIA_TYPE, &reason, None)
        }
        Derived::Failed { reason, .. } => refusal(StatusCode::UNPROCESSABLE_ENTITY, &reason, None),
        Derived::Busy { retry_after } => {
            refusal(StatusCode::SERVICE_UNAVAILABLE, "the derivation queue is full; try again later", Some(retry_after))
        }
    })
}

/// The derivation `query` asks for: `derive=<recipe>`, `wait=<duration>`, the rest the recipe's
/// parameters; 400 for a query out of bounds.
fn ask_of(query: &str, headers: &HeaderMap) -> Result<DeriveAsk, ApiError> {
    let (mut recipe, mut wait, mut params) = (None, std::time::Duration::ZERO, Vec::new());
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode_str(k).decode_utf8_lossy().into_owned();
        let v = percent_decode_str(v).decode_utf8_lossy().into_owned();
        if v.len() > MAX_VALUE_BYTES || k.len() > MAX_VALUE_BYTES {
            return Err(ApiError::invalid(format!("a query parameter is longer than {MAX_VALUE_BYTES} bytes")));
        }
        match k.as_str() {
            "derive" if recipe.is_some() => return Err(ApiError::invalid("derive= is given twice")),
            "derive" => recipe = Some(v),
            "wait" => wait = wait_of(&v)?,
            _ if params.len() >= MAX_PARAMS => {
                return Err(ApiError::invalid(format!("more than {MAX_PARAMS} derivation parameters")));
            }
            _ => params.push((k, v)),
        }
    }
    let recipe = recipe.filter(|r| !r.is_empty()).ok_or_else(|| ApiError::invalid("derive= names no recipe"))?;
    let accept = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).collect::<Vec<_>>().join(", ");
    Ok(DeriveAsk { recipe, params, accept: Some(accept).filter(|a| !a.is_empty()), wait, priority: Priority::Waiting })
}

/// `wait=`: a duration (`5s`, `500ms`) or plain seconds, at most [`MAX_WAIT`].
fn wait_of(v: &str) -> Result<std::time::Duration, ApiError> {
    let d = match v.parse::<u64>() {
        Ok(secs) => std::time::Duration::from_secs(secs.min(MAX_WAIT.as_secs())),
        Err(_) => humantime::parse_duration(v)
            .map_err(|_| ApiError::invalid(format!("wait={v:?} is not a duration (e.g. 5s)")))?,
    };
    Ok(d.min(MAX_WAIT))
}

fn seconds(d: std::time::Duration) -> HeaderValue {
    HeaderValue::from(d.as_secs().max(1))
}

/// A JSON error answer with `reason`, and `Retry-After` if given.
fn refusal(status: StatusCode, reason: &str, retry_after: Option<std::time::Duration>) -> Response {
    let body = serde_json::json!({ "error": reason });
    let mut res = (status, axum::Json(body)).into_response();
    if let Some(d) = retry_after {
        res.headers_mut().insert(header::RETRY_AFTER, seconds(d));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_become_asks_and_bad_ones_are_refused() {
        let h = HeaderMap::new();
        let ask = ask_of("derive=thumbnail&size=300&wait=5s", &h).unwrap();
        assert_eq!(ask.recipe, "thumbnail");
        assert_eq!(ask.params, vec![("size".to_owned(), "300".to_owned())]);
        assert_eq!(ask.wait, std::time::Duration::from_secs(5));
        assert_eq!(ask_of("derive=x&wait=3600", &h).unwrap().wait, MAX_WAIT);
        assert!(ask_of("derive=", &h).is_err());
        assert!(ask_of("derive=a&derive=b", &h).is_err());
        assert!(ask_of("derive=a&wait=soon", &h).is_err());
        let many: String = (0..20).map(|i| format!("&p{i}=1")).collect();
        assert!(ask_of(&format!("derive=a{many}"), &h).is_err());
        assert!(ask_of(&format!("derive=a&x={}", "y".repeat(300)), &h).is_err());
        assert!(is_derive("a=1&derive=x") && !is_derive("derived=1"));
    }
}
