//! The HTTP API as one service ([`App`]): entry and blob requests straight to their handlers, and
//! a router for `/healthz`, `/metrics`, and the admin endpoints nested at `/admin` ([`crate::admin`]).
//! Each door asks [`Access`] whether the request may pass; with reads open, a read costs one
//! branch for it.

use std::borrow::Cow;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use metrics_exporter_prometheus::PrometheusHandle;
use percent_encoding::percent_decode_str;
use tiercache_engine::{Cache, Digest, Error};
use tower::ServiceExt;

use crate::ApiError;
use crate::access::{Access, Right};
use crate::oci::MirrorConfig;
use crate::respond::respond;

/// What every request's handler shares (one reference count per request for all of it).
pub(crate) struct Shared {
    pub(crate) cache: Cache,
    metrics: Option<PrometheusHandle>,
    pub(crate) access: Arc<Access>,
    pub(crate) mirror: MirrorConfig,
}

pub(crate) type AppState = Arc<Shared>;

/// The whole HTTP API over `cache` under the default access rules ([`Access::new`]: reads open,
/// writes refused, admin endpoints off). `/metrics` renders `metrics` when given (404 otherwise).
pub fn app(cache: Cache, metrics: Option<PrometheusHandle>) -> App {
    app_with(cache, metrics, Access::new())
}

/// The whole HTTP API over `cache` under `access`: reads, writes and `/metrics` as its rules say,
/// and the admin endpoints at `/admin/…` when it has an admin token, each request authenticated by
/// `Authorization: Bearer <admin_token>`. Without one every `/admin` path answers 404, saying the
/// admin endpoints are off.
pub fn app_with(cache: Cache, metrics: Option<PrometheusHandle>, access: Access) -> App {
    app_with_mirror(cache, metrics, access, MirrorConfig::default())
}

/// [`app_with`], with the registry mirror at `/v2/` choosing namespaces as `mirror` says.
pub fn app_with_mirror(cache: Cache, metrics: Option<PrometheusHandle>, access: Access, mirror: MirrorConfig) -> App {
    let access = Arc::new(access);
    let admin = crate::admin::router(cache.clone(), Arc::clone(&access));
    let ui = crate::ui::router(cache.clone(), Arc::clone(&access), metrics.clone());
    let state = Arc::new(Shared { cache, metrics, access, mirror });
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(render_metrics))
        .with_state(state.clone())
        // A router nested at `/admin` serves `/admin` and `/admin/…` but not `/admin/` itself.
        .route_service("/admin/", admin.clone().into_service())
        .nest("/admin", admin)
        .merge(ui);
    App { state, router }
}

/// The whole HTTP API as one service (a `tower::Service`; serve it with
/// `axum::serve(listener, app.into_make_service())`): requests for entries
/// (`/ns/<namespace>/<key…>`), blobs (`/blobs/<digest>`) and the registry mirror (`/v2/…`) go
/// straight to their handlers, every other request through the router (`/healthz`, `/metrics`, `/admin`, and a 404 for the rest).
///
/// Entries and blobs are not routes of the router because a route with a path parameter costs
/// every request the parameter's extraction (a percent-decoded copy, in a map in the request's
/// extensions), and a small hot entry costs little more than that to answer; these handlers read
/// the path themselves.
#[derive(Clone)]
pub struct App {
    state: AppState,
    router: Router,
}

impl tower::Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let path = req.uri().path();
        if path.strip_prefix("/ns/").is_some_and(|rest| !rest.is_empty()) {
            Box::pin(door(self.state.clone(), req, entry_answer).map(Ok))
        } else if path.strip_prefix("/blobs/").is_some_and(|rest| !rest.is_empty() && !rest.contains('/')) {
            Box::pin(door(self.state.clone(), req, blob_answer).map(Ok))
        } else if path == "/v2" || path.starts_with("/v2/") {
            Box::pin(door(self.state.clone(), req, crate::oci::answer).map(Ok))
        } else if path.starts_with("/images/") {
            Box::pin(door(self.state.clone(), req, crate::images::answer).map(Ok))
        } else {
            Box::pin(self.router.clone().oneshot(req))
        }
    }
}

/// Answers `req` with `answer`, finished as the router finishes its answers: a `Content-Length`
/// when the body's length is known, and no body for a HEAD. A failure is told in full only to a
/// client holding the admin token (`error.rs`).
async fn door<F: Future<Output = Result<Response, ApiError>>>(
    st: AppState,
    req: Request,
    answer: fn(AppState, Request) -> F,
) -> Response {
    let is_head = req.method() == Method::HEAD;
    // One header lookup for a request without a token.
    let is_admin = st.access.is_admin(req.headers().get(header::AUTHORIZATION));
    let mut res = answer(st, req).await.into_response();
    if is_admin {
        crate::error::reveal(&mut res);
    }
    if !res.headers().contains_key(header::CONTENT_LENGTH)
        && let Some(n) = res.body().size_hint().exact()
    {
        res.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    if is_head {
        *res.body_mut() = Body::empty();
    }
    res
}

// Writes are boxed in the doors below: their futures would otherwise make every read's larger.

/// `/blobs/sha256:<hex>`: GET, HEAD, PUT, and 405 for other methods.
async fn blob_answer(st: AppState, req: Request) -> Result<Response, ApiError> {
    match *req.method() {
        Method::GET | Method::HEAD => {
            st.access.check(req.headers(), Right::Read)?;
            get_blob(st, req).await
        }
        Method::PUT => {
            st.access.check(req.headers(), Right::Write)?;
            Box::pin(put_blob(st, req)).await
        }
        _ => Ok(not_allowed("GET,HEAD,PUT")),
    }
}

/// `/ns/<namespace>/<key…>`: GET, HEAD, PUT, DELETE, and 405 for other methods.
async fn entry_answer(st: AppState, req: Request) -> Result<Response, ApiError> {
    match *req.method() {
        Method::GET | Method::HEAD => {
            if st.access.reads_need_token()
                && let Err(refused) = st.access.check(req.headers(), Right::Read)
            {
                let namespace = entry_from(req.uri())?.0.into_owned();
                Box::pin(unless_public(&st.cache, namespace, refused)).await?;
            }
            get_entry(st, req).await
        }
        Method::PUT => {
            st.access.check(req.headers(), Right::Write)?;
            Box::pin(put_entry(st, req)).await
        }
        Method::DELETE => {
            st.access.check(req.headers(), Right::Write)?;
            Box::pin(delete_entry(st, req)).await
        }
        _ => Ok(not_allowed("GET,HEAD,PUT,DELETE")),
    }
}

/// `refused`, unless `namespace` is public. A namespace that does not exist is not public: a
/// client without a token learns nothing of which names exist.
async fn unless_public(cache: &Cache, namespace: String, refused: ApiError) -> Result<(), ApiError> {
    if cache.is_public(&namespace).await.unwrap_or(false) { Ok(()) } else { Err(refused) }
}

fn not_allowed(allow: &'static str) -> Response {
    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, allow)]).into_response()
}

/// `/metrics`: read as entries are (a token when reads need one).
async fn render_metrics(State(st): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    st.access.check(&headers, Right::Read)?;
    Ok(match &st.metrics {
        Some(h) => {
            st.cache.publish_metrics();
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()).into_response()
        }
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    })
}

/// The path's last part after `prefix`, percent-decoded once into UTF-8.
fn decoded_after<'a>(uri: &'a Uri, prefix: &str) -> Result<&'a str, ApiError> {
    uri.path()
        .strip_prefix(prefix)
        .ok_or_else(|| ApiError::Engine(Error::Invalid(format!("expected a path under {prefix}"))))
}

/// `raw` percent-decoded once into UTF-8, borrowed when it has no escapes.
fn decode<'a>(raw: &'a str, what: &str) -> Result<Cow<'a, str>, ApiError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::Engine(Error::Invalid(format!("{what} is not valid UTF-8 once percent-decoded"))))
}

fn digest_from(uri: &Uri) -> Result<Digest, ApiError> {
    let raw = decoded_after(uri, "/blobs/")?;
    Ok(decode(raw, "digest")?.parse::<Digest>().map_err(Error::from)?)
}

// GET and HEAD take the request's parts whole: separate `Method`, `Uri` and `HeaderMap` extractors
// would copy each of them on every read.
async fn get_blob(st: AppState, req: Request) -> Result<Response, ApiError> {
    let (Parts { method, uri, headers, .. }, _) = req.into_parts();
    let digest = digest_from(&uri)?;
    if let Some(query) = uri.query().filter(|q| crate::derive::is_derive(q)) {
        let input = tiercache_engine::DeriveInput::Blob(digest);
        return Box::pin(crate::derive::answer(&st.cache, input, &method, &headers, query)).await;
    }
    let read = st.cache.read_blob_with(&digest, crate::respond::intent(&method, &headers)).await?;
    Ok(respond(read, &method, &headers))
}

/// Refuses an upload whose declared length (`Content-Length`, or the body's exact size) is larger
/// than the maximum object size, before its body is read.
fn check_declared_size(st: &AppState, headers: &http::HeaderMap, body: &Body) -> Result<(), ApiError> {
    let header = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    if let Some(n) = body.size_hint().exact().or(header) {
        st.cache.check_object_size(n)?;
    }
    Ok(())
}

async fn put_blob(st: AppState, req: Request) -> Result<Response, ApiError> {
    let (Parts { uri, headers, .. }, body) = req.into_parts();
    let digest = digest_from(&uri)?;
    check_declared_size(&st, &headers, &body)?;
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let created = st.cache.put_blob(&digest, stream).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let location = HeaderValue::from_str(&format!("/blobs/{digest}")).expect("digests are ASCII");
    let etag = HeaderValue::from_str(&format!("\"{digest}\"")).expect("digests are ASCII");
    Ok((status, [(header::LOCATION, location), (header::ETAG, etag)]).into_response())
}

/// `/ns/<namespace>/<key>`, split and percent-decoded once; the key as raw bytes (a directory's
/// file names need not be UTF-8). An empty key means the namespace itself (a listing).
fn entry_from(uri: &Uri) -> Result<(Cow<'_, str>, Cow<'_, [u8]>), ApiError> {
    entry_path(decoded_after(uri, "/ns/")?)
}

/// `<namespace>/<key>` (a path after `/ns/`), split at the first `/` and each part percent-decoded
/// once: the namespace into UTF-8, the key into raw bytes.
pub(crate) fn entry_path(rest: &str) -> Result<(Cow<'_, str>, Cow<'_, [u8]>), ApiError> {
    let (ns_raw, key_raw) = rest.split_once('/').unwrap_or((rest, ""));
    let namespace = decode(ns_raw, "namespace")?;
    Ok((namespace, percent_decode_str(key_raw).into()))
}

async fn get_entry(st: AppState, req: Request) -> Result<Response, ApiError> {
    let (Parts { method, uri, headers, .. }, _) = req.into_parts();
    let (namespace, key) = entry_from(&uri)?;
    if key.is_empty() {
        // Boxed: the listing's future would otherwise make every entry read's future larger.
        return Box::pin(crate::listing::list(&st.cache, &namespace, uri.query().unwrap_or(""), &method)).await;
    }
    if let Some(query) = uri.query().filter(|q| crate::derive::is_derive(q)) {
        let input = tiercache_engine::DeriveInput::Entry { namespace: namespace.into_owned(), key: key.into_owned() };
        return Box::pin(crate::derive::answer(&st.cache, input, &method, &headers, query)).await;
    }
    let read = st.cache.read_entry_with(&namespace, &key, crate::respond::intent(&method, &headers)).await?;
    Ok(respond(read, &method, &headers))
}

async fn put_entry(st: AppState, req: Request) -> Result<Response, ApiError> {
    let (Parts { uri, headers, .. }, body) = req.into_parts();
    let (namespace, key) = entry_from(&uri)?;
    if key.is_empty() {
        return Err(ApiError::Engine(Error::Invalid("expected /ns/<namespace>/<key>".into())));
    }
    check_declared_size(&st, &headers, &body)?;
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let stored = st.cache.put_entry(&namespace, &key, stream).await?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", stored.md5)).expect("hex is ASCII");
    let digest = HeaderValue::from_str(&stored.digest.to_string()).expect("digests are ASCII");
    let body =
        serde_json::json!({ "etag": stored.md5, "digest": stored.digest.to_string(), "size": stored.size_bytes });
    Ok((
        StatusCode::OK,
        [(header::ETAG, etag), (HeaderName::from_static("x-tiercache-digest"), digest)],
        axum::Json(body),
    )
        .into_response())
}

async fn delete_entry(st: AppState, req: Request) -> Result<Response, ApiError> {
    let (namespace, key) = entry_from(req.uri())?;
    if key.is_empty() {
        return Err(ApiError::Engine(Error::Invalid("expected /ns/<namespace>/<key>".into())));
    }
    if st.cache.delete_entry(&namespace, &key).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        let (namespace, key) = (namespace.into_owned(), String::from_utf8_lossy(&key).into_owned());
        Err(ApiError::Engine(Error::NoEntry { namespace, key }))
    }
}
