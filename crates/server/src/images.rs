//! `/images/<namespace>/<name>:<tag>/files/<path>` (and `<name>@<digest>`): the files inside a
//! registry namespace's images, read lazily (`tiercache_engine::Image`).
//!
//! GET answers a file's bytes (ranges, `ETag`, `If-None-Match`, `If-Match`) or, for a
//! directory, its listing as JSON (also asked for by `?list`; `limit` and `after` page it);
//! HEAD answers the same headers, among them the file's metadata (`X-Tiercache-File-*`).
//! Symlinks are followed inside the image, never out of it (an absolute target starts at the
//! image root). `?platform=os/arch[/variant]` chooses from an image index.
//!
//! A file's ETag is strong and the same on every node: a hash of its layer's digest and its
//! place in the layer (tar records no digest of a file's bytes).

use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use percent_encoding::percent_decode_str;
use serde_json::json;
use sha2::Digest as _;
use std::sync::Arc;
use tiercache_core::{RangeRequest, Resolved};

use bytes::Bytes;
use tiercache_engine::{Error, FileKind, FirstRead, Image, ImageTree, NodeId, ResolveError};

use crate::access::Right;
use crate::error::ApiError;

use crate::routes::AppState;

/// The bytes of a file read per step of a streamed answer.
const STEP_BYTES: u64 = 4 << 20;
/// Directory entries listed per page, by default and at most.
const DEFAULT_LIST: usize = 1000;
const MAX_LIST: usize = 100_000;

const X_KIND: HeaderName = HeaderName::from_static("x-tiercache-file-kind");
const X_MODE: HeaderName = HeaderName::from_static("x-tiercache-file-mode");
const X_UID: HeaderName = HeaderName::from_static("x-tiercache-file-uid");
const X_GID: HeaderName = HeaderName::from_static("x-tiercache-file-gid");
const X_MANIFEST: HeaderName = HeaderName::from_static("x-tiercache-image-manifest");

/// What a request names.
#[derive(Debug, PartialEq, Eq)]
struct Asked {
    namespace: String,
    image: String,
    path: Vec<u8>,
}

/// Splits the path after `/images/`: the namespace, the image (up to the segment holding its
/// `:TAG` or `@DIGEST`), `files`, then the file's path (percent-decoded once, raw bytes).
fn parse(rest: &str) -> Result<Asked, String> {
    let (ns, after) = rest.split_once('/').ok_or("expected /images/<namespace>/<name>:<tag>/files/<path>")?;
    let namespace = percent_decode_str(ns).decode_utf8().map_err(|_| "the namespace is not UTF-8")?.into_owned();
    let mut image_end = None;
    let mut at = 0;
    for segment in after.split('/') {
        at += segment.len();
        if segment.contains(':') || segment.contains('@') {
            image_end = Some(at);
            break;
        }
        at += 1;
    }
    let end = image_end.ok_or("the image must be named with its tag or digest: <name>:<tag> or <name>@<digest>")?;
    let image = percent_decode_str(&after[..end]).decode_utf8().map_err(|_| "the image name is not UTF-8")?;
    let tail = &after[end..];
    let path = match tail.strip_prefix("/files") {
        Some("") => "",
        Some(p) if p.starts_with('/') => &p[1..],
        _ => return Err("expected /files/<path> after the image".into()),
    };
    Ok(Asked { namespace, image: image.into_owned(), path: percent_decode_str(path).collect() })
}

/// `/images/…`: GET and HEAD.
pub(crate) async fn answer(st: AppState, req: Request) -> Result<Response, ApiError> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut res = (StatusCode::METHOD_NOT_ALLOWED, "images are read-only: GET and HEAD only\n").into_response();
        res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(res);
    }
    let (Parts { method, uri, headers, .. }, _) = req.into_parts();
    let rest = uri.path().strip_prefix("/images/").unwrap_or_default();
    let asked = parse(rest).map_err(ApiError::invalid)?;
    if st.access.reads_need_token()
        && let Err(refused) = st.access.check(&headers, Right::Read)
        && !st.cache.is_public(&asked.namespace).await.unwrap_or(false)
    {
        return Err(refused);
    }
    let query = uri.query().unwrap_or("");
    let platform = query_value(query, "platform");
    let platform = platform.as_deref();
    let is_list = query_value(query, "list").is_some();
    // A file of an image no node has indexed yet is answered from its layer's stream as soon as
    // the stream passes it; anything else waits for the image's index.
    let image = match is_list {
        true => st.cache.image(&asked.namespace, &asked.image, platform).await?,
        false => match st.cache.image_first_read(&asked.namespace, &asked.image, platform, &asked.path).await? {
            FirstRead::Image(image) => image,
            FirstRead::File(streamed) => {
                let (f, immutable) = (&streamed.file, is_digest(&asked.image));
                let facts = FileFacts {
                    size: f.bytes.len() as u64,
                    perm: f.mode & 0o7777,
                    uid: f.uid,
                    gid: f.gid,
                    mtime: f.mtime.0,
                    etag: etag(&streamed.layer, f.data_offset, f.bytes.len() as u64),
                    manifest: streamed.manifest,
                    immutable,
                };
                let bytes = Bytes::from(streamed.file.bytes);
                return Ok(file(&st, facts, FileBody::Streamed(bytes), &method, &headers));
            }
        },
    };
    let tree = image.tree();
    let node = tree.resolve(&asked.path, true).map_err(|e| no_file(&asked, e))?;
    let attrs = tree.attrs(node);
    if attrs.kind == FileKind::Dir {
        return listing(&image, node, &asked, query);
    }
    if is_list {
        return Err(no_file(&asked, ResolveError::NotADirectory));
    }
    if attrs.kind != FileKind::File {
        let why = format!("{} is a {}, which has no bytes to read", shown(&asked.path), kind_name(attrs.kind));
        return Err(ApiError::invalid(why));
    }
    let data = tree.data(node).expect("a regular file");
    let layer = image.layer_digest(data.layer).expect("the file's layer");
    let facts = FileFacts {
        size: attrs.size,
        perm: attrs.perm,
        uid: attrs.uid,
        gid: attrs.gid,
        mtime: attrs.mtime.0,
        etag: etag(&layer, data.entry.data_offset(), data.entry.size()),
        manifest: image.manifest_digest(),
        immutable: is_digest(&asked.image),
    };
    Ok(file(&st, facts, FileBody::Image(image, node), &method, &headers))
}

/// What a file's answer says of it.
struct FileFacts {
    size: u64,
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    etag: String,
    manifest: tiercache_engine::Digest,
    /// Named by digest: it never changes.
    immutable: bool,
}

/// Where a file's bytes come from.
enum FileBody {
    /// The opened image, read in steps.
    Image(Arc<Image>, NodeId),
    /// Read whole already, from its layer's stream.
    Streamed(Bytes),
}

/// The answer for a regular file: preconditions, then the whole file or one range.
fn file(st: &AppState, facts: FileFacts, body: FileBody, method: &Method, req: &HeaderMap) -> Response {
    let etag = facts.etag.as_str();
    let mut h = metadata_headers(&facts.manifest, FileKind::File, facts.perm, facts.uid, facts.gid, facts.mtime);
    h.insert(header::ETAG, value(etag));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("sandbox"));
    if facts.immutable {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable"));
    }
    let matches = |v: &HeaderValue| {
        v.to_str().is_ok_and(|s| s.split(',').any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag))
    };
    if req.get(header::IF_MATCH).is_some_and(|v| !matches(v)) {
        return (StatusCode::PRECONDITION_FAILED, h, "precondition failed: If-Match does not match\n").into_response();
    }
    if req.get(header::IF_NONE_MATCH).is_some_and(matches) {
        return (StatusCode::NOT_MODIFIED, h).into_response();
    }
    let size = facts.size;
    let mut range = 0..size;
    let mut status = StatusCode::OK;
    let if_range_holds = req.get(header::IF_RANGE).is_none_or(|v| v.to_str().is_ok_and(|s| s == etag));
    if let (Some(v), true) = (req.get(header::RANGE), if_range_holds) {
        let parsed = v.to_str().map_err(|_| tiercache_core::RangeError::Malformed).and_then(RangeRequest::parse);
        match parsed.map(|r| r.map(|r| r.resolve(size))) {
            Ok(Some(Ok(Resolved::Partial(r)))) => {
                status = StatusCode::PARTIAL_CONTENT;
                h.insert(header::CONTENT_RANGE, value(&r.content_range(size)));
                range = r.start..r.end + 1;
            }
            Ok(Some(Ok(Resolved::Whole)) | None) => {}
            Ok(Some(Err(e))) | Err(e) => {
                h.remove(header::ETAG);
                h.insert(header::CONTENT_RANGE, value(&format!("bytes */{size}")));
                return (StatusCode::RANGE_NOT_SATISFIABLE, h, format!("{e}\n")).into_response();
            }
        }
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(range.end - range.start));
    if method == Method::HEAD {
        return (status, h).into_response();
    }
    let body = match body {
        FileBody::Streamed(bytes) => Body::from(bytes.slice(range.start as usize..range.end as usize)),
        FileBody::Image(image, node) => {
            let cache = st.cache.clone();
            let steps = (range.start..range.end)
                .step_by(STEP_BYTES as usize)
                .map(move |at| at..(at + STEP_BYTES).min(range.end));
            let stream =
                futures::stream::iter(steps)
                    .then(move |r| {
                        let (cache, image) = (cache.clone(), Arc::clone(&image));
                        async move {
                            cache.image_read(&image, node, r).await.map_err(|e| std::io::Error::other(e.to_string()))
                        }
                    })
                    .boxed();
            Body::from_stream(stream)
        }
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    *res.headers_mut() = h;
    res
}

/// Whether an image reference names its manifest by digest.
fn is_digest(image: &str) -> bool {
    image.contains('@')
}

/// A directory's listing as JSON, one page (`limit`, `after`).
fn listing(image: &Image, dir: NodeId, asked: &Asked, query: &str) -> Result<Response, ApiError> {
    let limit = match query_value(query, "limit") {
        None => DEFAULT_LIST,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIST).contains(n))
            .ok_or_else(|| ApiError::invalid(format!("limit must be 1 to {MAX_LIST}")))?,
    };
    let after = query_value(query, "after").map(|a| percent_decode_str(&a).collect::<Vec<u8>>());
    let tree: &ImageTree = image.tree();
    let children = tree.children(dir).expect("a directory");
    let mut entries = Vec::new();
    let mut next = None;
    for (name, node) in children.filter(|(name, _)| after.as_deref().is_none_or(|a| *name > a)) {
        if entries.len() == limit {
            next = entries.last().and_then(|e: &serde_json::Value| e.get("name_url").cloned());
            break;
        }
        let a = tree.attrs(node);
        let mut e = json!({
            "name": String::from_utf8_lossy(name),
            "name_url": percent_encoding::percent_encode(name, URL_SET).to_string(),
            "kind": kind_name(a.kind),
            "size": a.size,
            "mode": format!("{:04o}", a.perm),
            "uid": a.uid,
            "gid": a.gid,
            "mtime": a.mtime.0,
            "nlink": a.nlink,
            "ino": a.ino,
        });
        if let Some((major, minor)) = a.rdev {
            e["rdev"] = json!([major, minor]);
        }
        if let Some(target) = tree.link_target(node) {
            e["link_target"] = json!(String::from_utf8_lossy(target));
        }
        entries.push(e);
    }
    let body = json!({
        "image": asked.image,
        "manifest": image.manifest_digest().to_string(),
        "path": String::from_utf8_lossy(&asked.path),
        "entries": entries,
        "next_after": next,
    });
    let a = tree.attrs(dir);
    let mut h = metadata_headers(&image.manifest_digest(), a.kind, a.perm, a.uid, a.gid, a.mtime.0);
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok((StatusCode::OK, h, body.to_string()).into_response())
}

/// Bytes kept as they are in a listing's `name_url` (the rest percent-encoded).
const URL_SET: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// A file's metadata as headers.
fn metadata_headers(
    manifest: &tiercache_engine::Digest,
    kind: FileKind,
    perm: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(12);
    h.insert(X_KIND, HeaderValue::from_static(kind_name(kind)));
    h.insert(X_MODE, value(&format!("{perm:04o}")));
    h.insert(X_UID, HeaderValue::from(uid));
    h.insert(X_GID, HeaderValue::from(gid));
    h.insert(X_MANIFEST, value(&manifest.to_string()));
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(mtime).unwrap_or(0));
    h.insert(header::LAST_MODIFIED, value(&httpdate::fmt_http_date(t)));
    h
}

/// The strong ETag of a file: its layer's digest, its data's offset in the layer and its size,
/// hashed.
fn etag(layer: &tiercache_engine::Digest, data_offset: u64, size: u64) -> String {
    let mut h = sha2::Sha256::new();
    h.update(layer.as_bytes());
    h.update(data_offset.to_le_bytes());
    h.update(size.to_le_bytes());
    format!("\"{}\"", hex::encode(&h.finalize()[..16]))
}

fn kind_name(kind: FileKind) -> &'static str {
    match kind {
        FileKind::File | FileKind::Hardlink => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Char => "char",
        FileKind::Block => "block",
        FileKind::Fifo => "fifo",
    }
}

fn no_file(asked: &Asked, why: ResolveError) -> ApiError {
    let path = String::from_utf8_lossy(&asked.path).into_owned();
    if why == ResolveError::Loop {
        return ApiError::invalid(format!("{}: {why}", shown(&asked.path)));
    }
    ApiError::Engine(Error::NoImageFile { image: asked.image.clone(), path, why: why.to_string() })
}

fn shown(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

fn value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The value of `name` in a query string (`name` alone is an empty value), percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_namespace_image_and_file() {
        let a = parse("reg/library/alpine:3.20/files/etc/os-release").unwrap();
        assert_eq!(
            (a.namespace.as_str(), a.image.as_str(), &a.path[..]),
            ("reg", "library/alpine:3.20", &b"etc/os-release"[..])
        );
        let d = format!("sha256:{}", "a".repeat(64));
        let a = parse(&format!("reg/files/app@{d}/files/")).unwrap();
        assert_eq!((a.image, a.path), (format!("files/app@{d}"), Vec::new()), "a repository may be called files");
        let a = parse("reg/app:v1/files/bad%FFname").unwrap();
        assert_eq!(a.path, b"bad\xffname", "a path is bytes");
        assert_eq!(parse("reg/app:v1/files").unwrap().path, b"");
        for bad in ["reg", "reg/app/files/x", "reg/app:v1/nope/x", "reg/app:v1/filesx", "%FF/app:v1/files/x"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
