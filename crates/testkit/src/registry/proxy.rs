//! A reverse proxy in front of a registry that counts what it forwards by kind (manifest or blob,
//! GET or HEAD) and, on demand, asks for Bearer tokens from a token server of its own, the way
//! Docker Hub and most registries do (docker-registry's own token auth needs certificates; a proxy
//! is simpler and lets tests expire tokens and move the realm).
//!
//! Token flow ([`ProxyAuth::Bearer`]): a request without a valid `Authorization: Bearer` token is
//! answered `401` with `WWW-Authenticate: Bearer realm="http://127.0.0.1:P/token",service="test",
//! scope="repository:NAME:pull"`; `GET /token?service=…&scope=…` on the token server (another port:
//! another host, as `auth.docker.io` is for Docker Hub) answers `{"token": …, "access_token": …,
//! "expires_in": …}`, checking basic credentials if configured. A token is good for the scopes it
//! was issued for until [`RegistryProxy::expire_tokens`].
//!
//! It counts the body bytes of blob `GET`s it forwards to the client, per digest (as chunks pass,
//! so a client that hangs up early is counted only for what it was sent), and records each one's
//! `Range` header: a test can check that reading one file fetched a small part of its layer.
//!
//! It records requests and forwards them; it does not cache, and never follows a redirect (the
//! client sees it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use futures::TryStreamExt as _;

/// How the proxy authenticates its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyAuth {
    /// Not at all: requests (and their `Authorization`) are forwarded as they come.
    None,
    /// Bearer tokens from the proxy's token server.
    Bearer {
        /// The user and password the token server wants as basic authentication, if any.
        credentials: Option<(String, String)>,
        /// The `expires_in` the token server answers (left out if `None`).
        expires_in: Option<u64>,
    },
}

/// What a request asked for, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// `/v2/`.
    Base,
    /// `/v2/NAME/manifests/REF`.
    Manifest,
    /// `/v2/NAME/blobs/DIGEST`.
    Blob,
    /// `/v2/NAME/tags/list`.
    Tags,
    /// A token request to the token server.
    Token,
    /// Anything else.
    Other,
}

/// One request the proxy or its token server saw.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// The path and query.
    pub path: String,
    /// What it asked for.
    pub kind: RequestKind,
    /// Its headers, names in lowercase.
    pub headers: HashMap<String, String>,
    /// What it was answered.
    pub status: u16,
    /// The `Range` header of a blob `GET`, if it had one.
    pub range: Option<String>,
    /// Whether the proxy (or token server) answered it itself rather than the registry.
    pub is_answered_by_proxy: bool,
}

/// Requests forwarded to the registry (those answered 401 by the proxy not included), and token
/// requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RegistryCounts {
    /// `GET /v2/NAME/manifests/REF`.
    pub manifest_gets: u64,
    /// `HEAD /v2/NAME/manifests/REF`.
    pub manifest_heads: u64,
    /// `GET /v2/NAME/blobs/DIGEST`.
    pub blob_gets: u64,
    /// `HEAD /v2/NAME/blobs/DIGEST`.
    pub blob_heads: u64,
    /// `GET /v2/NAME/tags/list`.
    pub tag_lists: u64,
    /// Requests the proxy answered 401 itself.
    pub unauthorized: u64,
    /// Requests to the token server (granted or not).
    pub tokens: u64,
    /// Body bytes of blob `GET`s sent to clients, every digest together.
    pub blob_bytes: u64,
}

#[derive(Debug)]
struct ProxyState {
    upstream: String,
    auth: ProxyAuth,
    realm: String,
    /// Token → the scopes it grants. Emptied by `expire_tokens`.
    tokens: HashMap<String, Vec<String>>,
    n_issued: u64,
    requests: Vec<RecordedRequest>,
    /// Body bytes of blob `GET`s sent to clients, by digest. Emptied by `reset`.
    blob_bytes: HashMap<String, u64>,
    client: reqwest::Client,
    /// `n` added to tag list requests that do not name one: the registry then answers in pages.
    tag_page: Option<usize>,
}

/// A running proxy and token server. Both stop when dropped.
#[derive(Debug)]
pub struct RegistryProxy {
    addr: SocketAddr,
    token_addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RegistryProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl RegistryProxy {
    /// Starts the proxy for the registry at `upstream` (`http://127.0.0.1:PORT`) and its token
    /// server, each on a free port of 127.0.0.1.
    pub async fn start(upstream: &str, auth: ProxyAuth) -> RegistryProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let token_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let (addr, token_addr) = (listener.local_addr().unwrap(), token_listener.local_addr().unwrap());
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_gzip()
            .build()
            .expect("a plain HTTP client");
        let state = Arc::new(Mutex::new(ProxyState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            auth,
            realm: format!("http://{token_addr}/token"),
            tokens: HashMap::new(),
            n_issued: 0,
            requests: Vec::new(),
            blob_bytes: HashMap::new(),
            client,
            tag_page: None,
        }));
        let proxy = axum::Router::new().fallback(forward).with_state(Arc::clone(&state));
        let tokens = axum::Router::new().fallback(issue_token).with_state(Arc::clone(&state));
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(listener, proxy).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(token_listener, tokens).await;
            }),
        ];
        RegistryProxy { addr, token_addr, state, tasks }
    }

    /// Answers tag lists in pages of `n` (or the request's own `n`), after the request's `last`,
    /// with `Link` headers to the next page, as registries that paginate by default do (Debian's
    /// distribution 2.8 does not page at all).
    pub fn set_tag_page(&self, n: Option<usize>) {
        self.state().tag_page = n;
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT` of the token server.
    pub fn token_url(&self) -> String {
        format!("http://{}", self.token_addr)
    }

    /// Sends clients to `realm` for tokens from now on (a server that hangs, say).
    pub fn set_realm(&self, realm: &str) {
        self.state().realm = realm.to_owned();
    }

    /// Every token issued so far stops being accepted, as if it had expired.
    pub fn expire_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Counts of the requests seen so far.
    pub fn counts(&self) -> RegistryCounts {
        let st = self.state();
        let mut c = RegistryCounts { blob_bytes: st.blob_bytes.values().sum(), ..RegistryCounts::default() };
        for r in &st.requests {
            let slot = match (r.kind, r.method.as_str()) {
                (RequestKind::Token, _) => &mut c.tokens,
                _ if r.is_answered_by_proxy && r.status == 401 => &mut c.unauthorized,
                _ if r.is_answered_by_proxy => continue,
                (RequestKind::Manifest, "GET") => &mut c.manifest_gets,
                (RequestKind::Manifest, "HEAD") => &mut c.manifest_heads,
                (RequestKind::Blob, "GET") => &mut c.blob_gets,
                (RequestKind::Blob, "HEAD") => &mut c.blob_heads,
                (RequestKind::Tags, "GET") => &mut c.tag_lists,
                _ => continue,
            };
            *slot += 1;
        }
        c
    }

    /// `GET`s of blob `digest` forwarded to the registry.
    pub fn blob_gets(&self, digest: &str) -> u64 {
        let suffix = format!("/blobs/{digest}");
        let forwarded = |r: &&RecordedRequest| r.method == "GET" && !r.is_answered_by_proxy;
        self.state().requests.iter().filter(forwarded).filter(|r| r.path.ends_with(&suffix)).count() as u64
    }

    /// Body bytes of blob `digest` sent to clients so far, over all its `GET`s (whole or ranged).
    pub fn blob_bytes(&self, digest: &str) -> u64 {
        self.state().blob_bytes.get(digest).copied().unwrap_or(0)
    }

    /// Body bytes of every blob sent to clients so far.
    pub fn blob_bytes_total(&self) -> u64 {
        self.state().blob_bytes.values().sum()
    }

    /// The `Range` header of each `GET` of blob `digest` forwarded to the registry, in order
    /// (`None` for a `GET` of the whole blob).
    pub fn blob_ranges(&self, digest: &str) -> Vec<Option<String>> {
        let suffix = format!("/blobs/{digest}");
        let forwarded = |r: &&RecordedRequest| r.method == "GET" && !r.is_answered_by_proxy;
        let st = self.state();
        st.requests.iter().filter(forwarded).filter(|r| r.path.ends_with(&suffix)).map(|r| r.range.clone()).collect()
    }

    /// Every request seen so far (the token server's too), in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().requests.clone()
    }

    /// Forgets the requests seen so far (counts and blob bytes start again from zero).
    pub fn reset(&self) {
        let mut st = self.state();
        st.requests.clear();
        st.blob_bytes.clear();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ProxyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn lock(state: &Mutex<ProxyState>) -> std::sync::MutexGuard<'_, ProxyState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// The repository a path names and what it asks for.
fn classify(path: &str) -> (Option<String>, RequestKind) {
    let Some(rest) = path.split('?').next().and_then(|p| p.strip_prefix("/v2/")) else {
        return (None, RequestKind::Other);
    };
    if rest.is_empty() {
        return (None, RequestKind::Base);
    }
    for (marker, kind) in [("/manifests/", RequestKind::Manifest), ("/blobs/", RequestKind::Blob)] {
        if let Some(at) = rest.rfind(marker) {
            return (Some(rest[..at].to_owned()), kind);
        }
    }
    match rest.strip_suffix("/tags/list") {
        Some(name) => (Some(name.to_owned()), RequestKind::Tags),
        None => (None, RequestKind::Other),
    }
}

/// The digest a blob path names (`/v2/NAME/blobs/DIGEST?…` → `DIGEST`).
fn blob_digest(path: &str) -> Option<String> {
    let path = path.split('?').next()?;
    path.rfind("/blobs/").map(|at| path[at + "/blobs/".len()..].to_owned())
}

fn headers_of(h: &HeaderMap) -> HashMap<String, String> {
    h.iter().map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

/// What a request was and what it was answered; `by_proxy` if the registry never saw it.
struct Seen<'a> {
    method: &'a Method,
    path: &'a str,
    kind: RequestKind,
    headers: &'a HeaderMap,
}

fn record(state: &Mutex<ProxyState>, seen: &Seen<'_>, status: u16, is_answered_by_proxy: bool) {
    let Seen { method, path, kind, headers } = *seen;
    let range = (kind == RequestKind::Blob && *method == Method::GET)
        .then(|| headers.get(header::RANGE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .flatten();
    let r = RecordedRequest {
        method: method.to_string(),
        path: path.to_owned(),
        kind,
        headers: headers_of(headers),
        status,
        range,
        is_answered_by_proxy,
    };
    lock(state).requests.push(r);
}

/// Distribution's JSON error body.
fn error_body(code: &str, message: &str) -> String {
    serde_json::json!({ "errors": [{ "code": code, "message": message }] }).to_string()
}

/// Whether the request carries a token granting `name` (any token for `/v2/`).
fn is_granted(st: &ProxyState, headers: &HeaderMap, name: Option<&str>) -> bool {
    let token =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let Some(scopes) = token.and_then(|t| st.tokens.get(t.trim())) else { return false };
    name.is_none_or(|n| scopes.iter().any(|s| s == &format!("repository:{n}:pull")))
}

/// The proxy: a 401 with a challenge for a request without a good token, else the registry's
/// answer.
async fn forward(State(state): State<Arc<Mutex<ProxyState>>>, req: Request) -> Response {
    let (method, headers) = (req.method().clone(), req.headers().clone());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let (name, kind) = classify(&path);
    let seen = Seen { method: &method, path: &path, kind, headers: &headers };
    let (challenge, upstream, client, tag_page) = {
        let st = lock(&state);
        let challenge = match &st.auth {
            ProxyAuth::Bearer { .. } if !is_granted(&st, &headers, name.as_deref()) => {
                let scope = name.as_deref().map(|n| format!(",scope=\"repository:{n}:pull\"")).unwrap_or_default();
                Some(format!("Bearer realm=\"{}\",service=\"test\"{scope}", st.realm))
            }
            _ => None,
        };
        (challenge, st.upstream.clone(), st.client.clone(), st.tag_page)
    };
    // Paged by the proxy: the registry (distribution 2.8) ignores `n` and `last`.
    let page = tag_page.filter(|_| kind == RequestKind::Tags && method == Method::GET).map(|n| {
        let query = req.uri().query().unwrap_or("");
        let value = |name: &str| {
            query.split('&').find_map(|p| p.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| percent_decode(v)))
        };
        (value("n").and_then(|v| v.parse().ok()).unwrap_or(n), value("last"))
    });
    let sent = if page.is_some() { req.uri().path().to_owned() } else { path.clone() };
    if let Some(challenge) = challenge {
        record(&state, &seen, 401, true);
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, challenge)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(error_body("UNAUTHORIZED", "authentication required")))
            .expect("a valid response");
    }
    let is_bearer = matches!(lock(&state).auth, ProxyAuth::Bearer { .. });
    let mut rb = client.request(method.clone(), format!("{upstream}{sent}"));
    for (k, v) in &headers {
        let skip = k == header::HOST || k == header::CONNECTION || (is_bearer && k == header::AUTHORIZATION);
        if !skip {
            rb = rb.header(k, v);
        }
    }
    let answer = match rb.send().await {
        Ok(a) => a,
        Err(e) => {
            record(&state, &seen, 502, true);
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(format!("the registry behind the proxy failed: {e}")))
                .expect("a valid response");
        }
    };
    record(&state, &seen, answer.status().as_u16(), false);
    if let Some((n, last)) = page.filter(|_| answer.status().is_success()) {
        return tag_page_of(answer, req.uri().path(), n, last.as_deref()).await;
    }
    let mut out = Response::builder().status(answer.status().as_u16());
    for (k, v) in answer.headers() {
        if k != header::CONNECTION && k != header::TRANSFER_ENCODING {
            out = out.header(k.as_str(), v.as_bytes());
        }
    }
    let counted = (kind == RequestKind::Blob && method == Method::GET && answer.status().is_success())
        .then(|| blob_digest(&path))
        .flatten();
    let body = match (method, counted) {
        (Method::HEAD, _) => Body::empty(),
        (_, Some(digest)) => {
            let state = Arc::clone(&state);
            Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other).inspect_ok(move |chunk| {
                *lock(&state).blob_bytes.entry(digest.clone()).or_default() += chunk.len() as u64;
            }))
        }
        _ => Body::from_stream(answer.bytes_stream().map_err(std::io::Error::other)),
    };
    out.body(body).expect("a valid response")
}

/// Page `n` tags after `last` of the whole tag list `answer`, with a `Link` to the next page.
async fn tag_page_of(answer: reqwest::Response, path: &str, n: usize, last: Option<&str>) -> Response {
    let bytes = answer.bytes().await.expect("the registry's tag list");
    let list: serde_json::Value = serde_json::from_slice(&bytes).expect("the registry's tag list is JSON");
    let mut tags: Vec<String> = serde_json::from_value(list["tags"].clone()).unwrap_or_default();
    tags.sort();
    let from = last.map_or(0, |l| tags.partition_point(|t| t.as_str() <= l));
    let to = (from + n).min(tags.len());
    let body = serde_json::json!({ "name": list["name"], "tags": &tags[from..to] }).to_string();
    let mut out = Response::builder().header(header::CONTENT_TYPE, "application/json");
    if to < tags.len() {
        out = out.header(header::LINK, format!("<{path}?n={n}&last={}>; rel=\"next\"", tags[to - 1]));
    }
    out.body(Body::from(body)).expect("a valid response")
}

/// The token server: `GET /token?service=…&scope=…`, basic credentials checked if configured.
async fn issue_token(State(state): State<Arc<Mutex<ProxyState>>>, req: Request) -> Response {
    let (method, headers) = (req.method().clone(), req.headers().clone());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let query = req.uri().query().unwrap_or("");
    let scopes: Vec<String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "scope")
        .map(|(_, v)| percent_decode(v))
        .collect();
    let seen = Seen { method: &method, path: &path, kind: RequestKind::Token, headers: &headers };
    let mut st = lock(&state);
    let ProxyAuth::Bearer { credentials, expires_in } = st.auth.clone() else {
        drop(st);
        record(&state, &seen, 404, true);
        return plain(StatusCode::NOT_FOUND, "this proxy issues no tokens".into());
    };
    if let Some((user, password)) = &credentials {
        let want = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
            drop(st);
            record(&state, &seen, 401, true);
            return plain(StatusCode::UNAUTHORIZED, error_body("UNAUTHORIZED", "bad credentials"));
        }
    }
    st.n_issued += 1;
    let token = format!("test-token-{}", st.n_issued);
    st.tokens.insert(token.clone(), scopes);
    drop(st);
    record(&state, &seen, 200, true);
    let mut body = serde_json::json!({ "token": token, "access_token": token, "issued_at": "2026-01-01T00:00:00Z" });
    if let Some(e) = expires_in {
        body["expires_in"] = e.into();
    }
    plain(StatusCode::OK, body.to_string())
}

fn plain(status: StatusCode, body: String) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("a valid response")
}

/// A query value, form-decoded: `+` is a space, then percent-decoding.
fn percent_decode(s: &str) -> String {
    crate::percent_decode(&s.replace('+', " "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified_by_their_last_marker() {
        assert_eq!(classify("/v2/"), (None, RequestKind::Base));
        assert_eq!(classify("/v2/a/b/manifests/v1"), (Some("a/b".into()), RequestKind::Manifest));
        assert_eq!(classify("/v2/blobs/blobs/sha256:00"), (Some("blobs".into()), RequestKind::Blob));
        assert_eq!(classify("/v2/a/tags/list?n=10"), (Some("a".into()), RequestKind::Tags));
        assert_eq!(classify("/token"), (None, RequestKind::Other));
        assert_eq!(blob_digest("/v2/a/blobs/sha256:00?x=1").as_deref(), Some("sha256:00"));
    }

    #[test]
    fn scopes_are_percent_decoded() {
        assert_eq!(percent_decode("repository%3Aa%2Fb%3Apull"), "repository:a/b:pull");
    }
}
