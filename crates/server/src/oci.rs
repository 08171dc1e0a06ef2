//! The registry mirror front door: the pull half of the Distribution API (`GET`/`HEAD` of `/v2/`,
//! `/v2/<name>/manifests/<reference>`, `/v2/<name>/blobs/<digest>`, `/v2/<name>/tags/list`) over
//! the namespaces whose source is a registry, so that containerd, skopeo and podman pull through
//! the cache. Each request is one entry read: the key is the path after `/v2/`
//! (`<name>/manifests/<reference>`, …), in the namespace of the registry asked for.
//!
//! Which namespace: the `ns=<registry host>` query parameter containerd sends to a mirror, matched
//! against the host of each registry namespace's source; without it, the namespace named by
//! `--oci-default-ns`, or the only registry namespace when there is exactly one. Pushes are
//! refused (`405`, `UNSUPPORTED`); errors are the Distribution JSON codes.

use axum::Json;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use percent_encoding::percent_decode_str;
use tiercache_engine::{Cache, Error, SourceError, kept_counter};
use tiercache_sources::OciKey;
use tiercache_sources::oci::media_types::{self, MANIFESTS};
use tiercache_sources::oci::{self, MAX_MANIFEST_BYTES};

use crate::ApiError;
use crate::access::Right;
use crate::respond::{intent, respond};
use crate::routes::AppState;

/// How the mirror picks a namespace when a request does not name its registry.
#[derive(Debug, Clone, Default)]
pub struct MirrorConfig {
    /// The namespace requests without `?ns=` go to (`--oci-default-ns`).
    pub default_namespace: Option<String>,
}

/// What a `/v2/…` path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked<'a> {
    /// `/v2/`: the API version check.
    Base,
    /// A manifest, a blob, or a repository's tags: `key` is the entry's key.
    Entry { kind: Kind, name: &'a str, key: &'a str },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Manifest,
    Blob,
    Tags,
}

/// A Distribution API error: its status, code and message.
struct Refusal(StatusCode, &'static str, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let Refusal(status, code, message) = self;
        let body = serde_json::json!({ "errors": [{ "code": code, "message": message, "detail": null }] });
        let mut res = (status, Json(body)).into_response();
        res.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
        res
    }
}

/// `/v2` and everything under it.
pub(crate) async fn answer(st: AppState, req: Request) -> Result<Response, ApiError> {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut res = Refusal(StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED", "this mirror serves pulls only".into())
            .into_response();
        res.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(res);
    }
    let (Parts { method, uri, headers, .. }, _) = req.into_parts();
    let asked = match parse(uri.path()) {
        Ok(asked) => asked,
        Err(why) => return Ok(Refusal(StatusCode::NOT_FOUND, "NAME_INVALID", why).into_response()),
    };
    let Asked::Entry { kind, name, key } = asked else {
        st.access.check(&headers, Right::Read)?;
        let mut res = Json(serde_json::json!({})).into_response();
        res.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
        return Ok(res);
    };
    let registry = uri.query().and_then(|q| query_value(q, "ns"));
    let namespace = match choose_namespace(&st.cache, &st.mirror, registry.as_deref()).await? {
        Ok(ns) => ns,
        Err(why) => return Ok(Refusal(StatusCode::NOT_FOUND, "NAME_UNKNOWN", why).into_response()),
    };
    if st.access.reads_need_token()
        && let Err(refused) = st.access.check(&headers, Right::Read)
        && !st.cache.is_public(&namespace).await.unwrap_or(false)
    {
        return Err(refused);
    }
    let read = match st.cache.read_entry_with(&namespace, key.as_bytes(), intent(&method, &headers)).await {
        Ok(read) => read,
        Err(e) => return Ok(refusal(e, kind, name).into_response()),
    };
    let stored_type = read.meta.content_type.as_deref().map(str::to_owned);
    // The bytes' digest; for a HEAD answered by the registry's own (nothing stored), the digest
    // it said, which is the entry's validator.
    let digest = read.meta.digest.map(|d| d.to_string()).or_else(|| {
        let etag = read.meta.etag.as_deref()?.trim_start_matches("W/").trim_matches('"');
        etag.parse::<tiercache_engine::Digest>().ok().map(|d| d.to_string())
    });
    if kind == Kind::Manifest {
        if read.meta.size_bytes.is_some_and(|n| n > MAX_MANIFEST_BYTES) {
            let why = format!("the manifest is larger than {MAX_MANIFEST_BYTES} bytes");
            return Ok(Refusal(StatusCode::NOT_FOUND, "MANIFEST_INVALID", why).into_response());
        }
        if let Some(t) = stored_type.as_deref()
            && MANIFESTS.contains(&t)
            && !accepts(&headers, t)
        {
            let why = format!("the manifest is {t}, which the request's Accept does not list");
            return Ok(Refusal(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", why).into_response());
        }
        if !stored_type.as_deref().is_some_and(|t| MANIFESTS.contains(&t)) {
            // Bytes known by digest only (from the shared tier, say): their type is in them.
            count_served(kind, read.meta.tier.as_str(), read.meta.size_bytes.filter(|_| method == Method::GET));
            return Ok(sniffed_manifest(read, &method, &headers).await);
        }
    }
    if kind == Kind::Tags {
        let page = match uri.query().map(page_of).transpose() {
            Ok(page) => page.flatten(),
            Err(why) => return Ok(Refusal(StatusCode::BAD_REQUEST, "PAGINATION_NUMBER_INVALID", why).into_response()),
        };
        if let Some(page) = page {
            count_served(kind, read.meta.tier.as_str(), None);
            return Ok(paged_tags(read, &method, &page, name, registry.as_deref()).await);
        }
    }
    count_served(kind, read.meta.tier.as_str(), read.meta.size_bytes.filter(|_| method == Method::GET));
    let mut res = respond(read, &method, &headers);
    let h = res.headers_mut();
    h.insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    if let Some(d) = digest
        && kind != Kind::Tags
    {
        let value = HeaderValue::from_str(&d).expect("digests are ASCII");
        h.insert("docker-content-digest", value);
    }
    match kind {
        Kind::Blob => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        }
        Kind::Tags => {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Kind::Manifest => {}
    }
    Ok(res)
}

/// The most tags one page of a tag list holds, whatever `n` asks for (a client asking for more
/// gets this many and a `Link` to the rest).
const MAX_PAGE_TAGS: usize = 10_000;

/// A page of a tag list asked for with `n` and `last` (the Distribution API's pagination).
#[derive(Debug, PartialEq, Eq)]
struct Page {
    /// At most this many tags.
    n: usize,
    /// Only tags after this one (in lexical order).
    last: Option<String>,
}

/// The page `query` asks for: `None` without `n` or `last` (the whole list); an error for an `n`
/// that is not a number.
fn page_of(query: &str) -> Result<Option<Page>, String> {
    let n = query_value(query, "n");
    let last = query_value(query, "last").filter(|l| !l.is_empty());
    if n.is_none() && last.is_none() {
        return Ok(None);
    }
    let n = match n {
        None => MAX_PAGE_TAGS,
        Some(n) => {
            n.parse::<u64>().map_err(|_| format!("n={n:?} is not a number of tags"))?.min(MAX_PAGE_TAGS as u64) as usize
        }
    };
    Ok(Some(Page { n, last }))
}

/// A tag list read whole (at most [`MAX_MANIFEST_BYTES`], as the source reads it), answered as
/// `page`: the tags after `last` in lexical order, at most `n`, with a `Link` to the next page if
/// any are left.
async fn paged_tags(
    read: tiercache_engine::Read,
    method: &Method,
    page: &Page,
    name: &str,
    registry: Option<&str>,
) -> Response {
    let bytes = match read_whole(read).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal.into_response(),
    };
    #[derive(serde::Deserialize)]
    struct TagList {
        name: Option<String>,
        tags: Option<Vec<String>>,
    }
    let Ok(list) = serde_json::from_slice::<TagList>(&bytes) else {
        let why = "the upstream registry's tag list is not JSON of the Distribution API".to_owned();
        return Refusal(StatusCode::BAD_GATEWAY, "UNKNOWN", why).into_response();
    };
    let mut tags = list.tags.unwrap_or_default();
    tags.sort_unstable();
    tags.dedup();
    let from = page.last.as_ref().map_or(0, |last| tags.partition_point(|t| t <= last));
    let to = from.saturating_add(page.n).min(tags.len());
    let body = serde_json::json!({ "name": list.name.as_deref().unwrap_or(name), "tags": &tags[from..to] });
    let body = serde_json::to_vec(&body).expect("a tag list serializes");
    let len = body.len();
    let mut res = Response::new(if *method == Method::HEAD { axum::body::Body::empty() } else { body.into() });
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    if to < tags.len() && to > from {
        let encode = |v: &str| percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string();
        let mut next = format!("/v2/{name}/tags/list?n={}&last={}", page.n, encode(&tags[to - 1]));
        if let Some(r) = registry {
            next.push_str(&format!("&ns={}", encode(r)));
        }
        if let Ok(link) = HeaderValue::from_str(&format!("<{next}>; rel=\"next\"")) {
            h.insert(header::LINK, link);
        }
    }
    res
}

/// The body of `read`, at most [`MAX_MANIFEST_BYTES`] of it (a manifest, a tag list).
async fn read_whole(read: tiercache_engine::Read) -> Result<Vec<u8>, Refusal> {
    let mut bytes = Vec::new();
    let mut body = read.into_stream(None);
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(c) if (bytes.len() + c.len()) as u64 <= MAX_MANIFEST_BYTES => bytes.extend_from_slice(&c),
            Ok(_) => {
                let why = format!("the answer is larger than {MAX_MANIFEST_BYTES} bytes");
                return Err(Refusal(StatusCode::NOT_FOUND, "MANIFEST_INVALID", why));
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading a manifest or tag list failed");
                let why = "the stored answer could not be read".to_owned();
                return Err(Refusal(StatusCode::BAD_GATEWAY, "UNKNOWN", why));
            }
        }
    }
    Ok(bytes)
}

/// Answers a manifest read whose stored type is unknown: its bytes (at most
/// [`MAX_MANIFEST_BYTES`]) read whole, its type taken from its `mediaType`, else from its shape (an
/// index lists `manifests`, an image manifest `layers`).
async fn sniffed_manifest(read: tiercache_engine::Read, method: &Method, headers: &HeaderMap) -> Response {
    let digest = read.meta.digest;
    let bytes = match read_whole(read).await {
        Ok(bytes) => bytes,
        Err(refusal) => return refusal.into_response(),
    };
    let Some(media_type) = manifest_type(&bytes) else {
        let why = "the stored bytes are not a manifest of a known type".to_owned();
        return Refusal(StatusCode::NOT_FOUND, "MANIFEST_INVALID", why).into_response();
    };
    if !accepts(headers, media_type) {
        let why = format!("the manifest is {media_type}, which the request's Accept does not list");
        return Refusal(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", why).into_response();
    }
    let mut res = Response::new(if method == Method::HEAD { axum::body::Body::empty() } else { bytes.clone().into() });
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    h.insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    if let Some(d) = digest {
        h.insert("docker-content-digest", HeaderValue::from_str(&d.to_string()).expect("digests are ASCII"));
        h.insert(header::ETAG, HeaderValue::from_str(&format!("\"{d}\"")).expect("digests are ASCII"));
    }
    res
}

/// The media type of manifest `bytes`: its `mediaType` if it is one the mirror serves, else an
/// OCI index or image manifest by its shape; `None` for anything else.
fn manifest_type(bytes: &[u8]) -> Option<&'static str> {
    let json: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if let Some(t) = json.get("mediaType").and_then(|t| t.as_str()) {
        return MANIFESTS.iter().copied().find(|m| *m == t);
    }
    if json.get("manifests").is_some() {
        Some(media_types::OCI_INDEX)
    } else if json.get("layers").is_some() {
        Some(media_types::OCI_MANIFEST)
    } else {
        None
    }
}

/// One answer of `kind` from `tier` (`memory`, `disk`, `shared`, `source`) with `bytes` of body,
/// counted as a metric (`tiercache_oci_served_total{kind,tier}`, `tiercache_oci_bytes_total`) and
/// as the engine's kept counters `oci.served.<kind>.<tier>` and `oci.bytes_out` (`tiercache
/// stats`, summed over every process).
fn count_served(kind: Kind, tier: &'static str, bytes: Option<u64>) {
    let kind = match kind {
        Kind::Manifest => "manifest",
        Kind::Blob => "blob",
        Kind::Tags => "tags",
    };
    metrics::counter!("tiercache_oci_served_total", "kind" => kind, "tier" => tier).increment(1);
    kept_counter(&format!("oci.served.{kind}.{tier}")).increment(1);
    if let Some(n) = bytes {
        metrics::counter!("tiercache_oci_bytes_total").increment(n);
        kept_counter("oci.bytes_out").increment(n);
    }
}

/// Whether the request's `Accept` lets a manifest of media type `t` be answered: no `Accept`,
/// `*/*`, or `t` listed.
fn accepts(headers: &HeaderMap, t: &str) -> bool {
    let mut listed = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).peekable();
    if listed.peek().is_none() {
        return true;
    }
    listed.flat_map(|v| v.split(',')).map(|v| v.split(';').next().unwrap_or("").trim()).any(|v| v == t || v == "*/*")
}

/// The Distribution error a failed read of `name`'s `kind` answers.
fn refusal(e: Error, kind: Kind, name: &str) -> Refusal {
    let unknown = match kind {
        Kind::Manifest => "MANIFEST_UNKNOWN",
        Kind::Blob => "BLOB_UNKNOWN",
        Kind::Tags => "NAME_UNKNOWN",
    };
    match e {
        Error::NoEntry { .. } | Error::Source(SourceError::NotFound { .. }) => {
            Refusal(StatusCode::NOT_FOUND, unknown, format!("{name}: not found upstream"))
        }
        Error::Source(SourceError::InvalidKey { reason, .. }) => {
            Refusal(StatusCode::BAD_REQUEST, "NAME_INVALID", reason)
        }
        Error::Source(SourceError::Forbidden { .. } | SourceError::Unauthorized { .. }) => {
            Refusal(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", format!("{name}: the upstream registry refused access"))
        }
        Error::Source(SourceError::Status { status: 429, .. }) => {
            Refusal(StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "the upstream registry asks to slow down".into())
        }
        Error::Key(e) => Refusal(StatusCode::BAD_REQUEST, "NAME_INVALID", e.to_string()),
        e => {
            let is_timeout = matches!(&e, Error::Source(s) if s.is_timeout());
            let status = if is_timeout { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
            tracing::warn!(%name, error = %e, "mirror read failed");
            Refusal(status, "UNKNOWN", format!("{name}: the upstream registry could not be read"))
        }
    }
}

/// The namespace a request for registry `registry` (`?ns=`) goes to; `Ok(Err(why))` if none.
async fn choose_namespace(
    cache: &Cache,
    mirror: &MirrorConfig,
    registry: Option<&str>,
) -> Result<Result<String, String>, ApiError> {
    if registry.is_none()
        && let Some(ns) = &mirror.default_namespace
    {
        return Ok(Ok(ns.clone()));
    }
    let registries: Vec<(String, String)> = cache
        .namespace_sources()
        .await?
        .into_iter()
        .filter_map(|(name, source)| Some((name, oci::registry_host(&source?).ok()?)))
        .collect();
    Ok(match registry {
        Some(host) => {
            // The same canonical form as the sources' hosts (Docker Hub's names as one).
            let wanted = oci::registry_host(&format!("oci://{host}")).unwrap_or_else(|_| host.to_ascii_lowercase());
            match registries.into_iter().find(|(_, h)| *h == wanted) {
                Some((name, _)) => Ok(name),
                None => Err(format!("no namespace mirrors registry {host:?}")),
            }
        }
        None => match <[_; 1]>::try_from(registries) {
            Ok([(name, _)]) => Ok(name),
            Err(all) if all.is_empty() => Err("no namespace mirrors a registry".into()),
            Err(_) => Err("several namespaces mirror registries: name one with ?ns=<registry host>, \
                           or start the server with --oci-default-ns"
                .into()),
        },
    })
}

/// Parameter `name` of query `query`, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

/// What path `path` asks for, or why it is not a path of the pull API (the key's grammar is the
/// registry source's, [`OciKey::parse`]).
fn parse(path: &str) -> Result<Asked<'_>, String> {
    let rest = path.strip_prefix("/v2").ok_or("not a /v2 path")?;
    if rest.is_empty() || rest == "/" {
        return Ok(Asked::Base);
    }
    let key = rest.strip_prefix('/').ok_or("not a /v2 path")?;
    let kind = match OciKey::parse(key)? {
        OciKey::Manifest { .. } => Kind::Manifest,
        OciKey::Blob { .. } => Kind::Blob,
        OciKey::Tags { .. } => Kind::Tags,
    };
    let name = key.rsplitn(3, '/').nth(2).unwrap_or(key);
    Ok(Asked::Entry { kind, name, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_of_the_pull_api_parse_and_hostile_ones_do_not() {
        assert_eq!(parse("/v2/"), Ok(Asked::Base));
        assert_eq!(parse("/v2"), Ok(Asked::Base));
        let hex = "a".repeat(64);
        let blob = format!("/v2/library/alpine/blobs/sha256:{hex}");
        assert!(matches!(parse(&blob), Ok(Asked::Entry { kind: Kind::Blob, name: "library/alpine", .. })));
        assert!(matches!(parse("/v2/a/b/c/manifests/v1.2_x"), Ok(Asked::Entry { kind: Kind::Manifest, .. })));
        assert!(matches!(parse("/v2/x/tags/list"), Ok(Asked::Entry { kind: Kind::Tags, name: "x", .. })));
        for bad in [
            "/v2/../etc/manifests/latest",
            "/v2/Upper/manifests/latest",
            "/v2/a//b/manifests/latest",
            "/v2/a/manifests/-bad",
            "/v2/a/manifests/",
            "/v2/a/blobs/sha512:abcd",
            "/v2/a/blobs/sha256:ABC",
            "/v2/a/blobs/latest",
            "/v2/a/nothing/x",
            "/v2/a./manifests/latest",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_of_a_tag_list_are_read_from_n_and_last() {
        assert_eq!(page_of("ns=docker.io"), Ok(None));
        assert_eq!(page_of("n=2"), Ok(Some(Page { n: 2, last: None })));
        assert_eq!(page_of("n=0&last=v1"), Ok(Some(Page { n: 0, last: Some("v1".into()) })));
        assert_eq!(page_of("last=v%2B1"), Ok(Some(Page { n: MAX_PAGE_TAGS, last: Some("v+1".into()) })));
        assert_eq!(page_of("n=99999999999999999999"), Err("n=\"99999999999999999999\" is not a number of tags".into()));
        assert_eq!(page_of("n=18446744073709551615"), Ok(Some(Page { n: MAX_PAGE_TAGS, last: None })));
        assert!(page_of("n=-1").is_err());
        assert!(page_of("n=ten").is_err());
    }

    #[test]
    fn accept_lists_decide_which_manifest_types_may_be_answered() {
        let mut h = HeaderMap::new();
        assert!(accepts(&h, MANIFESTS[0]), "no Accept: anything");
        h.insert(header::ACCEPT, HeaderValue::from_static("application/vnd.docker.distribution.manifest.v2+json"));
        assert!(!accepts(&h, MANIFESTS[0]));
        assert!(accepts(&h, MANIFESTS[3]));
        h.append(header::ACCEPT, HeaderValue::from_static("application/vnd.oci.image.index.v1+json; q=0.5"));
        assert!(accepts(&h, MANIFESTS[0]));
    }
}
