//! `GET /ns/<namespace>/?prefix=P&delimiter=D&after=K&limit=N[&encoding=url]`: one page of a
//! namespace's keys, paged in SQL by the engine.
//!
//! Query values are form-decoded (`+` is a space, `%XX` a byte) into raw bytes. Keys go out as
//! JSON strings; a key that is not UTF-8 also carries `key_url`, its exact bytes percent-encoded,
//! and `encoding=url` percent-encodes every key, prefix and `next_after` (as S3 does).

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::Method;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode};
use serde_json::{Value, json};
use tiercache_engine::{Cache, Error, ListRequest};

use crate::ApiError;

/// Default page size.
const DEFAULT_LIMIT: usize = 1000;

/// Bytes left as they are when a key is percent-encoded (RFC 3986 unreserved, and `/`).
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

fn form_decode(v: &str) -> Vec<u8> {
    percent_decode(v.replace('+', " ").as_bytes()).collect()
}

fn encode(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, KEY_SET).to_string()
}

/// A key as JSON: the UTF-8 string (or the percent-encoded bytes under `encoding=url`).
fn key_value(bytes: &[u8], url_encoded: bool) -> Value {
    if url_encoded {
        return Value::String(encode(bytes));
    }
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

fn http_date(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    httpdate::fmt_http_date(t)
}

pub(crate) async fn list(cache: &Cache, namespace: &str, query: &str, method: &Method) -> Result<Response, ApiError> {
    let (req, url_encoded) = parse_query(query)?;
    let page = cache.list(namespace, req.clone()).await?;
    respond(namespace, &req, url_encoded, &page, method)
}

/// The listing's query string: the page asked for, and whether keys go out percent-encoded
/// (`encoding=url`). An unknown parameter or a limit that is not a number is a 400; the limit's
/// range is the engine's to check.
pub(crate) fn parse_query(query: &str) -> Result<(ListRequest, bool), ApiError> {
    let mut req = ListRequest { limit: DEFAULT_LIMIT, ..Default::default() };
    let mut url_encoded = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "prefix" => req.prefix = form_decode(v),
            "delimiter" => req.delimiter = Some(form_decode(v)).filter(|d| !d.is_empty()),
            "after" => req.after = Some(form_decode(v)),
            "limit" => {
                req.limit = String::from_utf8_lossy(&form_decode(v))
                    .parse()
                    .map_err(|_| ApiError::Engine(Error::Invalid(format!("limit {v:?} is not a number"))))?;
            }
            "encoding" if v == "url" => url_encoded = true,
            other => {
                return Err(ApiError::Engine(Error::Invalid(format!(
                    "unknown listing parameter {other:?} (expected prefix, delimiter, after, limit, encoding=url)"
                ))));
            }
        }
    }
    Ok((req, url_encoded))
}

/// The listing's answer: `page` of `namespace` as asked for by `req`.
fn respond(
    namespace: &str,
    req: &ListRequest,
    url_encoded: bool,
    page: &tiercache_engine::ListPage,
    method: &Method,
) -> Result<Response, ApiError> {
    let entries: Vec<Value> = page
        .items
        .iter()
        .map(|it| {
            let mut v = json!({
                "key": key_value(&it.key, url_encoded),
                "size": it.size_bytes,
                "etag": it.md5.as_ref().map(|m| format!("\"{m}\"")),
                "digest": it.digest.map(|d| d.to_string()),
                "last_modified": http_date(it.modified_ms),
            });
            if !url_encoded && std::str::from_utf8(&it.key).is_err() {
                v["key_url"] = Value::String(encode(&it.key));
            }
            v
        })
        .collect();
    let body = json!({
        "namespace": namespace,
        "prefix": key_value(&req.prefix, url_encoded),
        "delimiter": req.delimiter.as_deref().map(|d| key_value(d, url_encoded)),
        "limit": req.limit,
        "encoding": url_encoded.then_some("url"),
        "entries": entries,
        "common_prefixes": page.common_prefixes.iter().map(|p| key_value(p, url_encoded)).collect::<Vec<_>>(),
        "is_truncated": page.is_truncated,
        "next_after": page.is_truncated.then(|| page.last.as_deref().map(|l| key_value(l, url_encoded))).flatten(),
    });
    let mut resp = Json(body).into_response();
    if method == Method::HEAD {
        *resp.body_mut() = axum::body::Body::empty();
    }
    Ok(resp)
}
