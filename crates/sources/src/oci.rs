//! An OCI (Docker) registry as a source: `oci://HOST[:PORT]` (HTTPS) or `oci+http://HOST:PORT`
//! (plain HTTP), read through the Distribution pull API.
//!
//! Keys are [`OciKey`]s (`oci/key.rs`): `NAME/manifests/REFERENCE` → `GET /v2/NAME/manifests/REF`
//! with every manifest media type in `Accept` (an OCI-only registry answers only then);
//! `NAME/blobs/DIGEST` → `GET /v2/NAME/blobs/DIGEST`, ranged, redirects to blob storage followed;
//! `NAME/tags/list`. A manifest's validator is its digest (`Docker-Content-Digest`, checked against
//! its bytes); revalidating one is a `HEAD` (which Docker Hub does not count against its pull
//! limit) whose digest is compared. Manifests and tag lists are read whole, at most
//! [`MAX_MANIFEST_BYTES`]; blobs stream, with the HTTP source's length checks
//! (`http_source.rs` `body_of`). A blob's bytes are checked against its digest by the engine,
//! which [`Source::key_policy`] tells about it.
//!
//! Authentication (`oci/auth.rs`): a 401's challenge is answered once per request, with a Bearer
//! token from its realm (kept per repository until it expires) or with basic credentials (the
//! namespace's, else a docker `config.json`'s). Redirects are followed to any host (blob storage
//! signs its own URLs) at most 5 times, never to a refused address, and `Authorization` is never
//! sent to another host than the one that asked for it (reqwest drops it on a cross-host
//! redirect; the test `authorization_is_not_forwarded_to_another_host` holds it to that).
//!
//! The `oci-spec` crate is not used: this module needs four media type names, and the crate would
//! bring a regex engine and several derive macros into every crate above this one.

mod auth;
mod key;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{Method, StatusCode, header};
use tiercache_core::{ByteRange, Digest, Key, Validators};

use crate::http_source::{AddressPolicy, body_of, build_client, header_str, meta_of, transport_error};
use crate::{
    FetchRequest, Fetched, HttpSourceConfig, KeyPolicy, Redirects, Source, SourceBody, SourceError, SourceMeta,
};
pub use auth::RegistryCredentials;
use auth::{AuthCache, Challenge, MAX_TOKEN_ANSWER_BYTES, parse_challenges, parse_token_answer, token_lifetime};
pub use key::{MAX_NAME_BYTES, MAX_TAG_BYTES, OciKey, Reference};

/// Manifest media types.
pub mod media_types {
    /// An OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// A Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// A Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// All four, as a registry is asked for manifests.
    pub const MANIFESTS: [&str; 4] = [OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];
}

/// Largest manifest (or tag list) read: a larger one is an error and nothing is kept.
pub const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;

/// The most pages of a tag list read from a registry that answers in pages.
pub const MAX_TAG_PAGES: u32 = 1000;

/// One page of a tag list (`GET /v2/NAME/tags/list`).
#[derive(serde::Deserialize)]
struct TagPage {
    name: Option<String>,
    tags: Option<Vec<String>>,
}

/// The query of the next page of a tag list whose answer had `headers`: from a `Link: <…>;
/// rel="next"` header, its `last` (and `n`, if given), encoded again; the rest of its URL is
/// ignored, so the next request goes to the same registry and path. `None` on the last page.
fn next_page(headers: &reqwest::header::HeaderMap, url: &str) -> Result<Option<String>, SourceError> {
    let links = headers.get_all(header::LINK).iter().filter_map(|v| v.to_str().ok());
    let Some(target) = links.flat_map(|v| v.split(',')).find_map(|link| {
        let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
        params.split(';').any(|p| p.trim().trim_start_matches("rel=").trim_matches('"') == "next").then_some(target)
    }) else {
        return Ok(None);
    };
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let value = |name: &str| {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == name).then(|| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
        })
    };
    let last = value("last").filter(|l| !l.is_empty()).ok_or_else(|| {
        protocol(url, format!("the tag list's next page ({target}) does not say which tag it starts after"))
    })?;
    let encode = |v: &str| percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut next = format!("last={}", encode(&last));
    if let Some(n) = value("n").filter(|n| n.parse::<u32>().is_ok()) {
        next = format!("n={n}&{next}");
    }
    Ok(Some(next))
}

/// How long a manifest by tag (or a tag list) is served before it is revalidated, by default.
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(300);

/// Docker Hub's registry host: a one-component name there gets `library/` in front of it.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// A parsed registry source URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RegistryUrl {
    is_https: bool,
    /// `host[:port]`, lowercase, default port dropped; Docker Hub's aliases as [`DOCKER_HUB`].
    host: String,
}

impl RegistryUrl {
    fn parse(url: &str) -> Result<RegistryUrl, String> {
        let shown = tiercache_core::redact_url(url);
        let bad = |why: &str| format!("invalid registry source {shown:?}: {why}");
        let lower = url.to_ascii_lowercase();
        let (is_https, rest) = if lower.starts_with("oci://") {
            (true, &url["oci://".len()..])
        } else if lower.starts_with("oci+http://") {
            (false, &url["oci+http://".len()..])
        } else {
            return Err(bad("expected oci://HOST[:PORT] or oci+http://HOST:PORT"));
        };
        let scheme = if is_https { "https" } else { "http" };
        let parsed = reqwest::Url::parse(&format!("{scheme}://{rest}")).map_err(|e| bad(&e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "credentials do not go in the URL: give them as the namespace's registry_user and registry_password \
                 options (--registry-user, --registry-password)",
            ));
        }
        if parsed.path() != "/" || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(bad("a registry source is a host and port only, without a path, query or fragment"));
        }
        let Some(host) = parsed.host_str() else { return Err(bad("no host")) };
        let mut host = match parsed.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        if is_https && matches!(host.as_str(), "docker.io" | "index.docker.io") {
            host = DOCKER_HUB.to_owned();
        }
        Ok(RegistryUrl { is_https, host })
    }

    /// `https://host[:port]` or `http://host:port`: where requests go.
    fn base(&self) -> String {
        format!("{}://{}", if self.is_https { "https" } else { "http" }, self.host)
    }

    /// `oci://host[:port]/` or `oci+http://host:port/`.
    fn identity(&self) -> String {
        format!("{}://{}/", if self.is_https { "oci" } else { "oci+http" }, self.host)
    }
}

/// One request to a registry or its token endpoint, by `kind` (`get`, `head`, `token`):
/// `tiercache_oci_upstream_requests_total{kind}`, and the kept counter `oci.upstream.<kind>`
/// (`tiercache stats`).
fn count_upstream(kind: &'static str) {
    metrics::counter!("tiercache_oci_upstream_requests_total", "kind" => kind).increment(1);
    tiercache_core::kept_counter(&format!("oci.upstream.{kind}")).increment(1);
}

/// Whether `url` names a registry source (`oci://` or `oci+http://`).
pub fn is_registry_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("oci://") || lower.starts_with("oci+http://")
}

/// The registry host of the source `url`, as `?ns=` and image references name it: `host[:port]`
/// in lowercase, a default port dropped, Docker Hub (`docker.io`, `index.docker.io`) as
/// [`DOCKER_HUB`].
pub fn registry_host(url: &str) -> Result<String, String> {
    RegistryUrl::parse(url).map(|u| u.host)
}

/// The identity of the registry source `url` (see [`crate::identity`]): `oci://host[:port]/` or
/// `oci+http://host:port/`.
pub(crate) fn identity(url: &str) -> Result<String, String> {
    RegistryUrl::parse(url).map(|u| u.identity())
}

/// An OCI registry as a source.
pub struct OciSource {
    registry: RegistryUrl,
    /// `https://host[:port]`.
    base: String,
    credentials: Option<RegistryCredentials>,
    client: reqwest::Client,
    addresses: Arc<AddressPolicy>,
    read_timeout: Duration,
    tag_ttl: Duration,
    auth: AuthCache,
    /// Held while a token is fetched, so that requests refused together fetch one token.
    token_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for OciSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciSource").field("registry", &self.registry.identity()).finish_non_exhaustive()
    }
}

impl OciSource {
    /// A source for `url` (`oci://HOST[:PORT]` or `oci+http://HOST:PORT`), authenticating with
    /// `credentials` if given, else with a docker `config.json`'s for the host, if any. Manifests
    /// by tag stay fresh for `config.oci_tag_ttl`. Redirects go to any host unless
    /// `config.redirects` is [`Redirects::None`]. Refused: a malformed URL, one with credentials,
    /// and a host at a link-local or metadata address not in `config.allowed_addresses`. Does not
    /// contact the registry.
    pub fn new(
        url: &str,
        config: &HttpSourceConfig,
        credentials: Option<&RegistryCredentials>,
    ) -> Result<OciSource, String> {
        let registry = RegistryUrl::parse(url)?;
        let base = registry.base();
        let addresses = Arc::new(AddressPolicy::new(&config.allowed_addresses));
        let parsed = reqwest::Url::parse(&base).map_err(|e| e.to_string())?;
        addresses.check_url(&parsed).map_err(|e| {
            format!(
                "registry source {:?} refused: {e}; allow it with --allow-source-address if it is meant",
                registry.identity()
            )
        })?;
        let redirects = match config.redirects {
            Redirects::None => Redirects::None,
            _ => Redirects::Any,
        };
        let client = build_client(&HttpSourceConfig { redirects, ..config.clone() }, Arc::clone(&addresses))?;
        let credentials = credentials
            .cloned()
            .or_else(|| auth::docker_config_credentials(&registry.host, registry.host == DOCKER_HUB));
        Ok(OciSource {
            registry,
            base,
            credentials,
            client,
            addresses,
            read_timeout: config.read_timeout,
            tag_ttl: config.oci_tag_ttl,
            auth: AuthCache::default(),
            token_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The registry's host (`host[:port]`), as [`registry_host`] gives it.
    pub fn host(&self) -> &str {
        &self.registry.host
    }

    /// The repository path at the registry: Docker Hub's one-component names are `library/…`.
    fn upstream_name<'a>(&self, name: &'a str) -> std::borrow::Cow<'a, str> {
        if self.registry.host == DOCKER_HUB && !name.contains('/') {
            format!("library/{name}").into()
        } else {
            name.into()
        }
    }

    /// The path below `/v2/` of `key` at the registry.
    fn path_of(&self, key: &OciKey) -> String {
        let name = self.upstream_name(key.name());
        match key {
            OciKey::Manifest { reference, .. } => format!("{name}/manifests/{reference}"),
            OciKey::Blob { digest, .. } => format!("{name}/blobs/{digest}"),
            OciKey::Tags { .. } => format!("{name}/tags/list"),
        }
    }

    fn parse(&self, key: &Key) -> Result<OciKey, SourceError> {
        OciKey::parse(key.as_str()).map_err(|reason| SourceError::InvalidKey { key: key.as_str().to_owned(), reason })
    }

    /// Sends `method` for `key` (with `Accept` listing every manifest type for a manifest, and
    /// `range`), answering one 401 challenge: the answer after that, whatever its status but 401.
    async fn send(
        &self,
        key: &OciKey,
        method: Method,
        range: Option<ByteRange>,
        url: &str,
    ) -> Result<reqwest::Response, SourceError> {
        self.send_query(key, method, range, None, url).await
    }

    /// [`Self::send`], with `query` (already encoded) after the key's path.
    async fn send_query(
        &self,
        key: &OciKey,
        method: Method,
        range: Option<ByteRange>,
        query: Option<&str>,
        url: &str,
    ) -> Result<reqwest::Response, SourceError> {
        let mut target = format!("{}/v2/{}", self.base, self.path_of(key));
        if let Some(q) = query {
            target.push('?');
            target.push_str(q);
        }
        let accept = match key {
            OciKey::Manifest { .. } => Some(media_types::MANIFESTS.join(", ")),
            OciKey::Tags { .. } => Some("application/json".to_owned()),
            OciKey::Blob { .. } => None,
        };
        let build = |authorization: Option<&str>| {
            let mut rb = self.client.request(method.clone(), &target).header(header::ACCEPT_ENCODING, "identity");
            if let Some(a) = &accept {
                rb = rb.header(header::ACCEPT, a.as_str());
            }
            if let Some(r) = range {
                rb = rb.header(header::RANGE, format!("bytes={}-{}", r.start, r.end));
            }
            match authorization {
                Some(a) => rb.header(header::AUTHORIZATION, a),
                None => rb,
            }
        };
        let name = key.name();
        let kept = self.auth.get(name, Instant::now());
        let kind = if method == Method::HEAD { "head" } else { "get" };
        count_upstream(kind);
        let resp = self.send_one(build(kept.as_deref()), url).await?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        if let Some(k) = &kept {
            self.auth.drop_if(name, k);
        }
        let values = resp.headers().get_all(header::WWW_AUTHENTICATE);
        let challenge = parse_challenges(values.iter().filter_map(|v| v.to_str().ok()));
        let authorization = self.authorize(name, challenge, kept.as_deref(), url).await?;
        count_upstream(kind);
        let resp = self.send_one(build(Some(&authorization)), url).await?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            self.auth.drop_if(name, &authorization);
            let what = if authorization.starts_with("Basic ") { "credentials" } else { "token" };
            return Err(unauthorized(url, format!("the registry refused the {what} it asked for")));
        }
        Ok(resp)
    }

    async fn send_one(&self, rb: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response, SourceError> {
        rb.send().await.map_err(|e| transport_error(url, e, self.read_timeout))
    }

    /// The `Authorization` that answers `challenge` for repository `name` (kept for its next
    /// requests), unless it is `refused` (what was just sent and refused).
    async fn authorize(
        &self,
        name: &str,
        challenge: Option<Challenge>,
        refused: Option<&str>,
        url: &str,
    ) -> Result<String, SourceError> {
        match challenge {
            None => Err(unauthorized(
                url,
                "the registry answered 401 without a challenge tiercache can answer (no Bearer realm or Basic in \
                 WWW-Authenticate)"
                    .into(),
            )),
            Some(Challenge::Basic) => match &self.credentials {
                Some(c) => {
                    let h = c.basic_header();
                    self.auth.put(name, h.clone(), None);
                    Ok(h)
                }
                None => Err(unauthorized(
                    url,
                    "the registry wants a user and password: give the namespace registry_user and registry_password \
                     (tiercache ns create --registry-user … --registry-password …), or put them in a docker config.json"
                        .into(),
                )),
            },
            Some(Challenge::Bearer { realm, service, scope }) => {
                let _one_at_a_time = self.token_lock.lock().await;
                // A request refused at the same time may have fetched a token meanwhile.
                if let Some(h) = self.auth.get(name, Instant::now()).filter(|h| Some(h.as_str()) != refused) {
                    return Ok(h);
                }
                let (token, expires_in) = self.fetch_token(&realm, service.as_deref(), scope.as_deref(), url).await?;
                let h = format!("Bearer {token}");
                self.auth.put(name, h.clone(), Some(Instant::now() + token_lifetime(expires_in)));
                Ok(h)
            }
        }
    }

    /// A token from `realm` for `service` and `scope`, asked with the basic credentials if there
    /// are any. Any failure is [`SourceError::Unauthorized`] saying what happened.
    async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
        url: &str,
    ) -> Result<(String, Option<u64>), SourceError> {
        let shown = tiercache_core::redact_url(realm).into_owned();
        let fail = |why: String| unauthorized(url, format!("the token endpoint {shown} {why}"));
        let mut endpoint = reqwest::Url::parse(realm).map_err(|e| fail(format!("is not a URL: {e}")))?;
        match endpoint.scheme() {
            "https" => {}
            "http" if !self.registry.is_https => {}
            "http" => return Err(fail("is plain HTTP while the registry is HTTPS; refused".into())),
            _ => return Err(fail("is not an http(s) URL".into())),
        }
        self.addresses.check_url(&endpoint).map_err(|e| SourceError::AddressRefused {
            url: url.to_owned(),
            reason: format!("the token endpoint: {e}; allow it with --allow-source-address if it is meant"),
        })?;
        {
            let mut q = endpoint.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if let Some(s) = scope {
                q.append_pair("scope", s);
            }
        }
        count_upstream("token");
        let mut rb = self.client.get(endpoint);
        if let Some(c) = &self.credentials {
            rb = rb.header(header::AUTHORIZATION, c.basic_header());
        }
        let resp = rb.send().await.map_err(|e| match transport_error(&shown, e, self.read_timeout) {
            SourceError::Timeout { after, .. } => fail(format!("timed out after {after:?}")),
            SourceError::AddressRefused { reason, .. } => {
                SourceError::AddressRefused { url: url.to_owned(), reason: format!("the token endpoint: {reason}") }
            }
            other => fail(format!("failed: {other}")),
        })?;
        let status = resp.status();
        if !status.is_success() {
            let hint = match (status.as_u16(), &self.credentials) {
                (401 | 403, Some(_)) => "; it refused the namespace's registry credentials",
                (401 | 403, None) => "; give the namespace registry_user and registry_password if it needs them",
                _ => "",
            };
            return Err(fail(format!("answered {status}{hint}")));
        }
        let body = read_bounded(resp, MAX_TOKEN_ANSWER_BYTES as u64, &shown, self.read_timeout)
            .await
            .map_err(|e| fail(format!("sent no usable answer: {e}")))?;
        parse_token_answer(&body).map_err(fail)
    }

    fn shown_url(&self, key: &OciKey) -> String {
        format!("{}/v2/{}", self.base, self.path_of(key))
    }

    async fn fetch_manifest(&self, key: &OciKey, req: &FetchRequest) -> Result<Fetched, SourceError> {
        let url = self.shown_url(key);
        let stored = req.validators.as_ref().and_then(|v| v.etag.as_deref());
        if let Some(stored) = stored {
            let resp = self.send(key, Method::HEAD, None, &url).await?;
            check_status(resp.status(), &url)?;
            if header_str(resp.headers(), docker_content_digest()).as_deref() == Some(stored) {
                return Ok(Fetched::NotModified);
            }
        }
        let resp = self.send(key, Method::GET, None, &url).await?;
        check_status(resp.status(), &url)?;
        let content_type = header_str(resp.headers(), header::CONTENT_TYPE);
        let said = header_str(resp.headers(), docker_content_digest());
        let body = read_bounded(resp, MAX_MANIFEST_BYTES, &url, self.read_timeout).await?;
        let digest = Digest::of(&body).to_string();
        if let Some(want) = key.digest().map(|d| d.to_string()).filter(|d| *d != digest) {
            return Err(protocol(&url, format!("the manifest's bytes hash to {digest}, not to {want}")));
        }
        if let Some(said) = said.filter(|s| s.starts_with("sha256:") && *s != digest) {
            return Err(protocol(&url, format!("Docker-Content-Digest said {said}, but the bytes hash to {digest}")));
        }
        self.whole_body(body, digest, content_type, req, &url)
    }

    /// A repository's tag list: every page of it when the registry answers in pages (`Link: <…>;
    /// rel="next"`), joined into one list (at most [`MAX_MANIFEST_BYTES`] and [`MAX_TAG_PAGES`]
    /// pages in all), so the cache holds the whole list and the mirror pages it itself.
    async fn fetch_tags(&self, key: &OciKey, req: &FetchRequest) -> Result<Fetched, SourceError> {
        let url = self.shown_url(key);
        let (mut content_type, mut joined, mut query) = (None, None::<(Option<String>, Vec<String>)>, None);
        let (mut left, mut pages) = (MAX_MANIFEST_BYTES, 0);
        let body = loop {
            let resp = self.send_query(key, Method::GET, None, query.as_deref(), &url).await?;
            check_status(resp.status(), &url)?;
            content_type = content_type.or_else(|| header_str(resp.headers(), header::CONTENT_TYPE));
            let next = next_page(resp.headers(), &url)?;
            let body = read_bounded(resp, left, &url, self.read_timeout).await?;
            left -= body.len() as u64;
            if joined.is_none() && next.is_none() {
                break body; // One page: kept as the registry said it.
            }
            let page: TagPage = serde_json::from_slice(&body)
                .map_err(|e| protocol(&url, format!("a page of the tag list is not a tag list: {e}")))?;
            let (name, tags) = joined.get_or_insert_with(|| (page.name.clone(), Vec::new()));
            *name = name.take().or(page.name);
            tags.extend(page.tags.unwrap_or_default());
            pages += 1;
            match next {
                None => {
                    let (name, tags) = joined.take().expect("set above");
                    let joined = serde_json::json!({ "name": name, "tags": tags });
                    break serde_json::to_vec(&joined).expect("a tag list serializes");
                }
                Some(q) if query.as_deref() == Some(q.as_str()) => {
                    return Err(protocol(&url, "the tag list's next page is the page just read".into()));
                }
                Some(_) if pages >= MAX_TAG_PAGES => {
                    return Err(protocol(&url, format!("the tag list has more than {MAX_TAG_PAGES} pages")));
                }
                Some(q) => query = Some(q),
            }
        };
        let digest = Digest::of(&body).to_string();
        if req.validators.as_ref().and_then(|v| v.etag.as_deref()) == Some(digest.as_str()) {
            return Ok(Fetched::NotModified);
        }
        self.whole_body(body, digest, content_type, req, &url)
    }

    /// A body read whole (a manifest, a tag list) whose digest is `digest`, as the answer to
    /// `req`: `Changed` if it is another version than `req.if_version`, the range asked for.
    fn whole_body(
        &self,
        body: Vec<u8>,
        digest: String,
        content_type: Option<String>,
        req: &FetchRequest,
        url: &str,
    ) -> Result<Fetched, SourceError> {
        if req.if_version.as_ref().and_then(|v| v.etag.as_deref()).is_some_and(|e| e != digest) {
            return Err(SourceError::Changed { url: url.to_owned() });
        }
        let size = body.len() as u64;
        let meta = SourceMeta {
            size_bytes: Some(size),
            content_type,
            validators: Validators { etag: Some(digest), last_modified: None },
            content_encoding: None,
        };
        let (range, bytes) = match req.range {
            None => (None, Bytes::from(body)),
            Some(r) if r.start >= size => return Err(SourceError::Status { status: 416, url: url.to_owned() }),
            Some(r) => {
                let end = r.end.min(size - 1);
                let bytes = Bytes::from(body).slice(r.start as usize..=end as usize);
                (Some(ByteRange { start: r.start, end }), bytes)
            }
        };
        let stream = futures::stream::once(async move { Ok(bytes) }).boxed();
        Ok(Fetched::Body(SourceBody { meta, range, stream }))
    }

    async fn fetch_blob(&self, key: &OciKey, digest: Digest, req: &FetchRequest) -> Result<Fetched, SourceError> {
        let url = self.shown_url(key);
        let etag = digest.to_string();
        // A blob never changes: validators naming it still match, others never will.
        if req.validators.as_ref().and_then(|v| v.etag.as_deref()) == Some(etag.as_str()) {
            return Ok(Fetched::NotModified);
        }
        if req.if_version.as_ref().and_then(|v| v.etag.as_deref()).is_some_and(|e| e != etag) {
            return Err(SourceError::Changed { url });
        }
        let resp = self.send(key, Method::GET, req.range, &url).await?;
        check_status(resp.status(), &url)?;
        let said = header_str(resp.headers(), docker_content_digest());
        if let Some(said) = said.filter(|s| s.starts_with("sha256:") && *s != etag) {
            return Err(protocol(&url, format!("Docker-Content-Digest said {said} for blob {etag}")));
        }
        let mut meta = meta_of(resp.headers());
        meta.validators = Validators { etag: Some(etag), last_modified: None };
        body_of(resp, meta, req.range, url, self.read_timeout).map(Fetched::Body)
    }
}

/// `Docker-Content-Digest`.
fn docker_content_digest() -> header::HeaderName {
    header::HeaderName::from_static("docker-content-digest")
}

fn unauthorized(url: &str, reason: String) -> SourceError {
    SourceError::Unauthorized { url: url.to_owned(), reason }
}

fn protocol(url: &str, reason: String) -> SourceError {
    SourceError::Protocol { url: url.to_owned(), reason }
}

/// `Ok` for a success; else the error a registry's status stands for (429 kept as such, so a
/// mirror can pass `TOOMANYREQUESTS` on).
fn check_status(status: StatusCode, url: &str) -> Result<(), SourceError> {
    let url = url.to_owned();
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::NOT_FOUND | StatusCode::GONE => Err(SourceError::NotFound { url }),
        StatusCode::FORBIDDEN => Err(SourceError::Forbidden { url }),
        s => Err(SourceError::Status { status: s.as_u16(), url }),
    }
}

/// The whole body of `resp`, at most `max` bytes (a larger one, declared or sent, is an error).
async fn read_bounded(
    resp: reqwest::Response,
    max: u64,
    url: &str,
    read_timeout: Duration,
) -> Result<Vec<u8>, SourceError> {
    let too_large = |n: u64| protocol(url, format!("the answer is {n} bytes or more; the limit is {max}"));
    let declared = resp.content_length();
    if let Some(n) = declared.filter(|n| *n > max) {
        return Err(too_large(n));
    }
    let mut out = Vec::with_capacity(declared.unwrap_or(0) as usize);
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport_error(url, e, read_timeout))?;
        if out.len() as u64 + chunk.len() as u64 > max {
            return Err(too_large(out.len() as u64 + chunk.len() as u64));
        }
        out.extend_from_slice(&chunk);
    }
    if let Some(n) = declared.filter(|n| *n != out.len() as u64) {
        return Err(SourceError::LengthMismatch { url: url.to_owned(), expected: n, got: out.len() as u64 });
    }
    Ok(out)
}

#[async_trait::async_trait]
impl Source for OciSource {
    fn describe(&self) -> String {
        self.registry.identity()
    }

    async fn fetch(&self, key: &Key, req: &FetchRequest) -> Result<Fetched, SourceError> {
        let parsed = self.parse(key)?;
        match parsed {
            OciKey::Manifest { .. } => self.fetch_manifest(&parsed, req).await,
            OciKey::Blob { digest, .. } => self.fetch_blob(&parsed, digest, req).await,
            OciKey::Tags { .. } => self.fetch_tags(&parsed, req).await,
        }
    }

    async fn head(&self, key: &Key) -> Result<SourceMeta, SourceError> {
        let parsed = self.parse(key)?;
        if let OciKey::Tags { .. } = parsed {
            let Fetched::Body(b) = self.fetch_tags(&parsed, &FetchRequest::default()).await? else {
                unreachable!("a fetch without validators has a body")
            };
            return Ok(b.meta);
        }
        let url = self.shown_url(&parsed);
        let resp = self.send(&parsed, Method::HEAD, None, &url).await?;
        check_status(resp.status(), &url)?;
        let mut meta = meta_of(resp.headers());
        let said = header_str(resp.headers(), docker_content_digest());
        meta.validators = Validators { etag: parsed.digest().map(|d| d.to_string()).or(said), last_modified: None };
        Ok(meta)
    }

    fn key_policy(&self, key: &Key) -> KeyPolicy {
        match OciKey::parse(key.as_str()) {
            Ok(k) => match k.digest() {
                Some(digest) => {
                    KeyPolicy { digest: Some(digest), fresh_for: Some(Duration::MAX), stale_on_error: false }
                }
                None => KeyPolicy { digest: None, fresh_for: Some(self.tag_ttl), stale_on_error: true },
            },
            Err(_) => KeyPolicy::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_of_a_tag_list_is_read_from_its_link() {
        let next = |links: &[&str]| {
            let mut h = reqwest::header::HeaderMap::new();
            for l in links {
                h.append(header::LINK, l.parse().unwrap());
            }
            next_page(&h, "u")
        };
        assert_eq!(next(&[]).unwrap(), None);
        assert_eq!(next(&["</v2/a/tags/list?last=v2&n=2>; rel=\"next\""]).unwrap().as_deref(), Some("n=2&last=v2"));
        // Another host in the link is not followed: only its `last` is kept.
        let far = "<https://elsewhere.example/x?last=1.0%2Bb&n=x>; rel=\"next\"";
        assert_eq!(next(&[far]).unwrap().as_deref(), Some("last=1%2E0%2Bb"));
        let two = "</p?last=z>; rel=\"prev\", </q?last=b>; rel=next";
        assert_eq!(next(&[two]).unwrap().as_deref(), Some("last=b"));
        assert_eq!(next(&["</p?last=z>; rel=\"prev\""]).unwrap(), None);
        assert!(next(&["</v2/a/tags/list?n=2>; rel=\"next\""]).is_err(), "a next page without `last`");
    }

    #[test]
    fn registry_urls_parse_to_canonical_identities() {
        let id = |u: &str| identity(u);
        assert_eq!(id("oci://Registry.Example:443").unwrap(), "oci://registry.example/");
        assert_eq!(id("oci://registry.example:5000/").unwrap(), "oci://registry.example:5000/");
        assert_eq!(id("OCI+HTTP://127.0.0.1:5000").unwrap(), "oci+http://127.0.0.1:5000/");
        assert_eq!(id("oci+http://127.0.0.1:80").unwrap(), "oci+http://127.0.0.1/");
        assert_eq!(id("oci://docker.io").unwrap(), "oci://registry-1.docker.io/");
        assert_eq!(registry_host("oci://index.docker.io").unwrap(), DOCKER_HUB);
        for bad in ["oci://user:pw@host", "oci://host/path", "oci://host?x=1", "oci://", "http://host", "oci+https://h"]
        {
            let e = id(bad).unwrap_err();
            assert!(!e.contains("pw@"), "{e}");
        }
        assert!(id("oci://u:secret@host").unwrap_err().contains("registry_user"));
        assert!(is_registry_url("OCI://x") && is_registry_url("oci+http://x") && !is_registry_url("https://x"));
    }

    #[test]
    fn a_metadata_address_is_refused_as_a_registry() {
        let e = OciSource::new("oci+http://169.254.169.254:80", &HttpSourceConfig::default(), None).unwrap_err();
        assert!(e.contains("--allow-source-address"), "{e}");
    }

    #[test]
    fn docker_hub_names_get_library_in_front() {
        let hub = OciSource::new("oci://docker.io", &HttpSourceConfig::default(), None).unwrap();
        let other = OciSource::new("oci://ghcr.io", &HttpSourceConfig::default(), None).unwrap();
        let k = OciKey::parse("nginx/manifests/latest").unwrap();
        assert_eq!(hub.path_of(&k), "library/nginx/manifests/latest");
        assert_eq!(other.path_of(&k), "nginx/manifests/latest");
        assert_eq!(hub.path_of(&OciKey::parse("me/app/tags/list").unwrap()), "me/app/tags/list");
    }

    #[test]
    fn key_policies_follow_what_the_key_names() {
        let config = HttpSourceConfig { oci_tag_ttl: Duration::from_secs(7), ..HttpSourceConfig::default() };
        let s = OciSource::new("oci+http://127.0.0.1:5000", &config, None).unwrap();
        let hex = "ab".repeat(32);
        let digest: Digest = format!("sha256:{hex}").parse().unwrap();
        let policy = |k: &str| s.key_policy(&Key::new(k).unwrap());
        let immutable = KeyPolicy { digest: Some(digest), fresh_for: Some(Duration::MAX), stale_on_error: false };
        assert_eq!(policy(&format!("a/blobs/sha256:{hex}")), immutable);
        assert_eq!(policy(&format!("a/manifests/sha256:{hex}")), immutable);
        let moving = KeyPolicy { digest: None, fresh_for: Some(Duration::from_secs(7)), stale_on_error: true };
        assert_eq!(policy("a/manifests/v1"), moving);
        assert_eq!(policy("a/tags/list"), moving);
        assert_eq!(policy("not/a/registry/key"), KeyPolicy::default());
    }
}
