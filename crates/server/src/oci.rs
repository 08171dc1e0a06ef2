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
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use percent_encoding::percent_decode_str;
use tiercache_engine::{Cache, Error, SourceError};

use crate::ApiError;
use crate::access::Right;
use crate::respond::{intent, respond};
use crate::routes::AppState;

/// The manifest media types a mirror serves, in the order an upstream is asked for them.
pub(crate) const MANIFEST_TYPES: [&str; 4] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The largest manifest served (and stored): a manifest is a few KiB; more is not one.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;

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
    let (digest, stored_type) = (read.meta.digest, read.meta.content_type.as_deref().map(str::to_owned));
    if kind == Kind::Manifest {
        if read.meta.size_bytes.is_some_and(|n| n > MAX_MANIFEST_BYTES) {
            let why = format!("the manifest is larger than {MAX_MANIFEST_BYTES} bytes");
            return Ok(Refusal(StatusCode::NOT_FOUND, "MANIFEST_INVALID", why).into_response());
        }
        if let Some(t) = stored_type.as_deref()
            && MANIFEST_TYPES.contains(&t)
            && !accepts(&headers, t)
        {
            let why = format!("the manifest is {t}, which the request's Accept does not list");
            return Ok(Refusal(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", why).into_response());
        }
    }
    let mut res = respond(read, &method, &headers);
    let h = res.headers_mut();
    h.insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    if let Some(d) = digest
        && kind != Kind::Tags
    {
        let value = HeaderValue::from_str(&d.to_string()).expect("digests are ASCII");
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
        Error::Source(SourceError::Forbidden { .. }) => {
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
        .filter_map(|(name, source)| Some((name, registry_host(&source?)?.to_owned())))
        .collect();
    Ok(match registry {
        Some(host) => {
            let wanted = if host == "docker.io" { "registry-1.docker.io" } else { host };
            match registries.into_iter().find(|(_, h)| h.eq_ignore_ascii_case(wanted)) {
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

/// The `host[:port]` of a registry source URL (`oci://…`, `oci+http://…`); `None` for another.
pub(crate) fn registry_host(source: &str) -> Option<&str> {
    let rest = source.strip_prefix("oci://").or_else(|| source.strip_prefix("oci+http://"))?;
    let host = rest.split(['/', '?']).next().unwrap_or("");
    (!host.is_empty()).then_some(host)
}

/// Parameter `name` of query `query`, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

/// What path `path` asks for, or why it is not a path of the pull API.
fn parse(path: &str) -> Result<Asked<'_>, String> {
    let rest = path.strip_prefix("/v2").ok_or("not a /v2 path")?;
    if rest.is_empty() || rest == "/" {
        return Ok(Asked::Base);
    }
    let rest = rest.strip_prefix('/').ok_or("not a /v2 path")?;
    let (name, kind, reference) = if let Some(name) = rest.strip_suffix("/tags/list") {
        (name, Kind::Tags, "")
    } else if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        (name, Kind::Manifest, reference)
    } else if let Some((name, reference)) = rest.rsplit_once("/blobs/") {
        (name, Kind::Blob, reference)
    } else {
        return Err(format!("{path:?} is not a manifest, blob or tags path"));
    };
    check_name(name)?;
    match kind {
        Kind::Tags => {}
        Kind::Blob => check_digest(reference)?,
        Kind::Manifest if reference.contains(':') => check_digest(reference)?,
        Kind::Manifest => check_tag(reference)?,
    }
    Ok(Asked::Entry { kind, name, key: rest })
}

/// A repository name as the Distribution spec allows it: lowercase path components of letters
/// and digits, joined by `.`, `_`, `__` or dashes, at most 255 bytes.
fn check_name(name: &str) -> Result<(), String> {
    let bad = || {
        format!(
            "repository name {name:?} is invalid: lowercase letters, digits and '.', '_', '-' between them, components joined by '/'"
        )
    };
    if name.is_empty() || name.len() > 255 {
        return Err(bad());
    }
    for component in name.split('/') {
        let bytes = component.as_bytes();
        let is_alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let ok = !bytes.is_empty()
            && bytes.first().is_some_and(is_alnum)
            && bytes.last().is_some_and(is_alnum)
            && bytes.iter().all(|b| is_alnum(b) || matches!(b, b'.' | b'_' | b'-'))
            && !component.contains("..")
            && !component.contains("___")
            && !component.contains("._")
            && !component.contains("_.");
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

/// A tag: a letter, digit or `_`, then up to 127 of those, `.` and `-`.
fn check_tag(tag: &str) -> Result<(), String> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok { Ok(()) } else { Err(format!("tag {tag:?} is invalid")) }
}

/// A digest this mirror can verify: `sha256:` and 64 lowercase hex digits.
fn check_digest(digest: &str) -> Result<(), String> {
    let (algorithm, hex) = digest.split_once(':').ok_or_else(|| format!("digest {digest:?} has no algorithm"))?;
    if algorithm != "sha256" {
        return Err(format!("digest algorithm {algorithm:?} is not supported (only sha256)"));
    }
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(format!("digest {digest:?} is not sha256: and 64 lowercase hex digits"));
    }
    Ok(())
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
    fn accept_lists_decide_which_manifest_types_may_be_answered() {
        let mut h = HeaderMap::new();
        assert!(accepts(&h, MANIFEST_TYPES[0]), "no Accept: anything");
        h.insert(header::ACCEPT, HeaderValue::from_static("application/vnd.docker.distribution.manifest.v2+json"));
        assert!(!accepts(&h, MANIFEST_TYPES[0]));
        assert!(accepts(&h, MANIFEST_TYPES[3]));
        h.append(header::ACCEPT, HeaderValue::from_static("application/vnd.oci.image.index.v1+json; q=0.5"));
        assert!(accepts(&h, MANIFEST_TYPES[0]));
    }

    #[test]
    fn registry_hosts_come_from_registry_sources_only() {
        assert_eq!(registry_host("oci://registry-1.docker.io"), Some("registry-1.docker.io"));
        assert_eq!(registry_host("oci+http://127.0.0.1:5000/"), Some("127.0.0.1:5000"));
        assert_eq!(registry_host("https://example.com"), None);
    }
}
