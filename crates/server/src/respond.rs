//! Turning a [`Read`] into a response: conditional requests (RFC 9110 §13), ranges (§14) and the
//! headers that describe the body. Every answer about a read, whatever its status, says the bytes
//! are inert data (`X-Content-Type-Options: nosniff`, `Content-Security-Policy: sandbox`): an
//! uploaded page or image runs no script on the origin of the admin API.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use tiercache_core::{ByteRange, RangeRequest, Resolved};
use tiercache_engine::{Intent, Read, ReadMeta, Text};

/// What a request will want of the body, told to the engine before the read so that a remote tier
/// verifies those bytes first. A Range header that does not parse means the whole body (the answer
/// is then decided by [`respond`]).
pub(crate) fn intent(method: &Method, req: &HeaderMap) -> Intent {
    if method == Method::HEAD {
        return Intent::Headers;
    }
    let range =
        req.get(header::RANGE).and_then(|v| v.to_str().ok()).and_then(|v| RangeRequest::parse(v).ok().flatten());
    range.map_or(Intent::Whole, Intent::Range)
}

/// Answers `read` for a GET or HEAD with `req` headers.
pub(crate) fn respond(read: Read, method: &Method, req: &HeaderMap) -> Response {
    let (status, headers, range) = match decide(&read.meta, req) {
        Ok(decided) => decided,
        Err(answer) => return *answer,
    };
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        match read.read_small(range) {
            Some(Ok(bytes)) => Body::from(bytes),
            Some(Err(e)) => return crate::ApiError::Engine(tiercache_engine::Error::from(e)).into_response(),
            None => Body::from_stream(read.into_stream(range)),
        }
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The status, headers and range of the answer to a read described by `meta`, or the whole answer
/// when a precondition or the range decides it (a 304, 412 or 416, without the body).
fn decide(meta: &ReadMeta, req: &HeaderMap) -> Result<(StatusCode, HeaderMap, Option<ByteRange>), Box<Response>> {
    let mut headers = describe_once(meta);
    if let Some(status) = precondition(meta, req) {
        headers.remove(header::CONTENT_LENGTH);
        if status == StatusCode::NOT_MODIFIED {
            headers.remove(header::CONTENT_TYPE);
            return Err(Box::new((status, headers).into_response()));
        }
        let why = "precondition failed: If-Match does not match the current ETag";
        return Err(Box::new((status, headers, why).into_response()));
    }
    let mut range = None;
    let mut status = StatusCode::OK;
    if let (Some(value), true) = (req.get(header::RANGE), if_range_holds(meta, req)) {
        let parsed = value.to_str().map_err(|_| tiercache_core::RangeError::Malformed).and_then(RangeRequest::parse);
        match (parsed, meta.size_bytes) {
            (Err(e), size) => return Err(Box::new(unsatisfiable(headers, size, &e.to_string()))),
            (Ok(None), _) => {} // Unknown unit: serve it all.
            // Size unknown (a source that did not say): the engine has waited until the bytes of
            // an `a-b` range were in, so answer exactly it (RFC 9110 §14.4: `bytes a-b/*`). A
            // body found shorter meanwhile has a size by now; one that ends short later ends
            // with an error. An open or suffix range needs the end: the engine waited for it,
            // and without it the whole body is served.
            (Ok(Some(req)), None) => {
                if let Some((start, Some(end))) = req.single_start() {
                    let r = ByteRange { start, end };
                    status = StatusCode::PARTIAL_CONTENT;
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(r.len()));
                    headers.insert(header::CONTENT_RANGE, value_of(&format!("bytes {start}-{end}/*")));
                    range = Some(r);
                }
            }
            (Ok(Some(req)), Some(size)) => match req.resolve(size) {
                Ok(Resolved::Partial(r)) => {
                    status = StatusCode::PARTIAL_CONTENT;
                    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(r.len()));
                    headers.insert(header::CONTENT_RANGE, value_of(&r.content_range(size)));
                    range = Some(r);
                }
                Ok(Resolved::Whole) => {}
                Err(e) => return Err(Box::new(unsatisfiable(headers, Some(size), &e.to_string()))),
            },
        }
    }
    Ok((status, headers, range))
}

/// [`describe`], built once per entry held by the memory tier (kept in its memo) and copied for
/// each read of it. The copy has no room to spare (an insert into it reallocates), so the memo
/// holds all the headers of the common answer, a 200 with the whole body.
fn describe_once(meta: &ReadMeta) -> HeaderMap {
    match meta.memo.as_ref().and_then(|memo| memo.get_or_init(|| describe(meta))) {
        Some(headers) => headers.clone(),
        None => describe(meta),
    }
}

fn value_of(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

const OCTET_STREAM: HeaderValue = HeaderValue::from_static("application/octet-stream");
const NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
const SANDBOX: HeaderValue = HeaderValue::from_static("sandbox");
const X_TIERCACHE_DIGEST: HeaderName = HeaderName::from_static("x-tiercache-digest");
pub(crate) const X_TIERCACHE_TIER: HeaderName = HeaderName::from_static("x-tiercache-tier");

/// The headers of a 200 answer with the whole body (the length when known), most of which every
/// answer about this read carries (the 304, 206, 412 and 416 start from them), among them the two
/// that keep user content inert. The values that vary share one buffer ([`Text::in_one_buffer`]):
/// a copy of the headers (one per read of a held entry) then counts one reference for all of them.
fn describe(meta: &ReadMeta) -> HeaderMap {
    let digest = meta.digest.map(|d| d.prefixed_ascii());
    let digest = digest.as_ref().map(|d| std::str::from_utf8(d).expect("a digest is ASCII"));
    let length = meta.size_bytes.map(|n| n.to_string());
    // A `Content-Encoding` is the source's, kept with the bytes it describes: they are served as
    // the source sent them, never decoded or re-encoded here.
    let names = [
        header::ETAG,
        header::LAST_MODIFIED,
        header::CONTENT_TYPE,
        X_TIERCACHE_DIGEST,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
    ];
    let values = Text::in_one_buffer([
        meta.etag.as_deref(),
        meta.last_modified.as_deref(),
        meta.content_type.as_deref(),
        digest,
        length.as_deref(),
        meta.content_encoding.as_deref(),
    ]);
    let mut h = HeaderMap::with_capacity(12);
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, OCTET_STREAM);
    h.insert(header::X_CONTENT_TYPE_OPTIONS, NOSNIFF);
    h.insert(header::CONTENT_SECURITY_POLICY, SANDBOX);
    h.insert(X_TIERCACHE_TIER, HeaderValue::from_static(meta.tier.as_str()));
    // A place for the request id, which the listener sets on every answer: replacing a value
    // leaves the copy made for each read its size, where adding one would reallocate it.
    h.insert(crate::request_log::X_REQUEST_ID, HeaderValue::from_static("-"));
    for (name, value) in names.into_iter().zip(values) {
        // A value that is not a valid header value (from a source) is left out.
        if let Some(v) = value.and_then(|v| HeaderValue::from_maybe_shared(v.as_bytes().clone()).ok()) {
            h.insert(name, v);
        }
    }
    h
}

fn unsatisfiable(mut headers: HeaderMap, size: Option<u64>, why: &str) -> Response {
    headers.remove(header::ETAG);
    headers.remove(header::CONTENT_LENGTH);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Some(size) = size {
        headers.insert(header::CONTENT_RANGE, value_of(&format!("bytes */{size}")));
    }
    (StatusCode::RANGE_NOT_SATISFIABLE, headers, format!("{why}\n")).into_response()
}

/// Splits an `If-Match` / `If-None-Match` list into its entity tags (or `*`).
fn etag_list(v: &HeaderValue) -> Vec<String> {
    v.to_str().unwrap_or("").split(',').map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect()
}

fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}

/// `Some(304)` or `Some(412)` if a precondition decides the answer (RFC 9110 §13.2.2 order).
fn precondition(meta: &ReadMeta, req: &HeaderMap) -> Option<StatusCode> {
    let etag = meta.etag.as_deref();
    if let Some(v) = req.get(header::IF_MATCH) {
        let tags = etag_list(v);
        let strong = etag.filter(|e| !e.starts_with("W/"));
        let ok = tags.iter().any(|t| t == "*" || Some(t.as_str()) == strong);
        if !ok {
            return Some(StatusCode::PRECONDITION_FAILED);
        }
    }
    if let Some(v) = req.get(header::IF_NONE_MATCH) {
        let tags = etag_list(v);
        let matched = tags.iter().any(|t| t == "*" || etag.is_some_and(|e| weak_eq(t, e)));
        return matched.then_some(StatusCode::NOT_MODIFIED);
    }
    if let (Some(ims), Some(lm)) = (req.get(header::IF_MODIFIED_SINCE), meta.last_modified.as_deref()) {
        let since = ims.to_str().ok().and_then(|s| httpdate::parse_http_date(s).ok());
        let modified = httpdate::parse_http_date(lm).ok();
        if let (Some(since), Some(modified)) = (since, modified)
            && modified <= since
        {
            return Some(StatusCode::NOT_MODIFIED);
        }
    }
    None
}

/// Whether a `Range` header should be honoured under `If-Range` (absent, or matching strongly).
fn if_range_holds(meta: &ReadMeta, req: &HeaderMap) -> bool {
    let Some(v) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else { return true };
    if v.starts_with('"') || v.starts_with("W/") {
        return meta.etag.as_deref().is_some_and(|e| e == v && !e.starts_with("W/"));
    }
    match (
        httpdate::parse_http_date(v).ok(),
        meta.last_modified.as_deref().and_then(|lm| httpdate::parse_http_date(lm).ok()),
    ) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
