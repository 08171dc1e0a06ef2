//! The dashboard at `/ui/`: one page and its assets, embedded in the binary (no CDN), a JSON
//! endpoint it polls (`/ui/api/status`) and the admin endpoints it acts through
//! (`/ui/api/admin/…`, the same handlers as `/admin/…`).
//!
//! ```text
//! GET  /ui/               the page (401 with the login form when not logged in)
//! POST /ui/login          form `token=…`: a session cookie, then back to /ui/
//! POST /ui/logout         ends the session
//! GET  /ui/app.js, app.css  the page's script and style (no data)
//! GET  /ui/api/status     history (?since=ms), disk, shared tier, derivations, namespaces, warnings
//! *    /ui/api/admin/…    the admin endpoints (admin.rs), for the page's actions
//! ```
//!
//! Who may look: only the admin token's holder (the `Authorization: Bearer` header, or a session
//! opened by posting it to the login form: never a token in a URL). Without an admin token the
//! dashboard is off (404), as `/admin` is: it shows every namespace, source and directory root,
//! which a reader must not see. The session cookie is `HttpOnly` and
//! `SameSite=Strict`, and the page's own requests carry an `X-Tiercache-UI` header that a page of
//! another origin cannot send without a CORS preflight this server never grants. Every answer
//! forbids framing and sniffing and limits scripts to this origin's.
//!
//! The history (`ui/history.rs`) is this process's, kept in memory for an hour; the warnings
//! (`ui/warnings.rs`) come from a `tracing` layer the binary installs.

mod history;
mod session;
mod warnings;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::{Value, json};
use tiercache_engine::Cache;

use crate::ApiError;
use crate::access::{Access, Right};
use history::History;
use session::Sessions;
pub use warnings::RecentWarnings;

const INDEX_HTML: &str = include_str!("../ui/index.html");
const LOGIN_HTML: &str = include_str!("../ui/login.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

/// The header the page's own requests carry (see the module's doc).
const UI_HEADER: HeaderName = HeaderName::from_static("x-tiercache-ui");

/// How long the figures read from the index (namespaces, disk use) are reused between polls.
const SLOW_FIGURES_TTL: Duration = Duration::from_secs(10);

/// Longest login form body.
const MAX_LOGIN_BYTES: usize = 4096;

/// What the dashboard's handlers share.
pub(crate) struct Ui {
    cache: Cache,
    access: Arc<Access>,
    history: Option<Arc<History>>,
    sessions: Sessions,
    /// The figures read from the index, and when.
    slow: tokio::sync::Mutex<Option<(Instant, Arc<Value>)>>,
    started: Instant,
    /// When a figure read from the index failed last, and why (shown, not fatal).
    slow_error: Mutex<Option<String>>,
}

type UiState = Arc<Ui>;

/// The dashboard's routes, at `/ui` and below. Samples the history from `metrics` when given
/// (without it the charts say the metrics are off).
pub(crate) fn router(cache: Cache, access: Arc<Access>, metrics: Option<PrometheusHandle>) -> Router {
    if !access.has_admin_token() {
        return Router::new()
            .route("/ui", any(off))
            .route("/ui/", any(off))
            .route("/ui/{*rest}", any(off))
            .layer(axum::middleware::map_response(protect));
    }
    let history =
        metrics.and_then(|m| tokio::runtime::Handle::try_current().ok().map(|_| History::spawn(cache.clone(), m)));
    let ui = Arc::new(Ui {
        cache: cache.clone(),
        access,
        history,
        sessions: Sessions::default(),
        slow: tokio::sync::Mutex::new(None),
        started: Instant::now(),
        slow_error: Mutex::new(None),
    });
    let actions =
        crate::admin::endpoints(cache).layer(axum::middleware::from_fn_with_state(ui.clone(), authorize_action));
    Router::new()
        .route("/ui", get(|| async { redirect("/ui/") }))
        .route("/ui/", get(page))
        // The form's body is read no further than a token could need.
        .route(
            "/ui/login",
            post(login).layer(DefaultBodyLimit::max(MAX_LOGIN_BYTES)).get(|| async { redirect("/ui/") }),
        )
        .route("/ui/logout", post(logout))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route("/ui/api/status", get(status))
        .with_state(ui)
        .nest("/ui/api/admin", actions)
        .layer(axum::middleware::map_response(protect))
}

impl Ui {
    /// Lets the request in (a live session, or the admin token in its header), or refuses it (401
    /// without a token or session, 403 with a lesser token).
    fn allowed(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.sessions.is_live(headers) {
            return Ok(());
        }
        self.access.check(headers, Right::Admin)
    }
}

/// Every dashboard path without an admin token.
async fn off() -> Response {
    let body = "<!doctype html><meta charset=\"utf-8\"><title>tiercache</title><p>The dashboard is off: \
                start <code>tiercache serve</code> with <code>TIERCACHE_ADMIN_TOKEN</code> set to open it.</p>";
    html(StatusCode::NOT_FOUND, body.to_owned())
}

/// Security headers on every dashboard answer, and no caching of anything but the assets.
async fn protect(mut res: Response) -> Response {
    let h = res.headers_mut();
    let csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
               connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
}

/// The login form, with `note` (already HTML-safe) above it.
fn login_page(status: StatusCode, note: &str) -> Response {
    html(status, LOGIN_HTML.replace("{{note}}", note))
}

async fn page(State(ui): State<UiState>, headers: HeaderMap) -> Response {
    match ui.allowed(&headers) {
        Ok(_) => html(StatusCode::OK, INDEX_HTML.to_owned()),
        Err(_) => login_page(StatusCode::UNAUTHORIZED, ""),
    }
}

/// The `token` field of a form body (`application/x-www-form-urlencoded`), decoded.
fn form_token(body: &[u8]) -> Option<String> {
    let raw = body.split(|b| *b == b'&').find_map(|pair| pair.strip_prefix(b"token="))?;
    let plus_as_space: Vec<u8> = raw.iter().map(|b| if *b == b'+' { b' ' } else { *b }).collect();
    percent_encoding::percent_decode(&plus_as_space).decode_utf8().ok().map(|t| t.into_owned())
}

/// Checks the posted token as an `Authorization: Bearer` header would be; opens a session.
async fn login(
    State(ui): State<UiState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let bad = |note| login_page(StatusCode::UNAUTHORIZED, note);
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    // A body over the limit is refused by its extractor, before it is read whole.
    let token = body.ok().filter(|b| is_form && b.len() <= MAX_LOGIN_BYTES).and_then(|b| form_token(&b));
    let Some(token) = token else {
        return bad("<p class=\"note\" role=\"alert\">Send the token from the form.</p>");
    };
    let mut as_header = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("Bearer {}", token.trim())) {
        as_header.insert(header::AUTHORIZATION, v);
    }
    if token.trim().is_empty() || ui.access.check(&as_header, Right::Admin).is_err() {
        tracing::info!("dashboard login refused");
        return bad("<p class=\"note\" role=\"alert\">That token does not open the dashboard.</p>");
    }
    let id = ui.sessions.start();
    let cookie = HeaderValue::from_str(&session::set_cookie(&id)).expect("hex ids are valid header values");
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, HeaderValue::from_static("/ui/"))])
        .into_response()
}

async fn logout(State(ui): State<UiState>, headers: HeaderMap) -> Response {
    ui.sessions.end(&headers);
    let cookie = HeaderValue::from_str(&session::clear_cookie()).expect("a valid header value");
    (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, HeaderValue::from_static("/ui/"))])
        .into_response()
}

/// Lets an action through only from a request that may act: the admin token in the header, or a
/// session with the page's own header (which another origin's page cannot send).
/// After an action that may change something, the next poll reads the index's figures afresh.
async fn authorize_action(State(ui): State<UiState>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    if let Err(refused) = ui.access.check(headers, Right::Admin) {
        if !ui.sessions.is_live(headers) {
            return refused.into_response();
        }
        if !headers.contains_key(UI_HEADER) {
            return ApiError::invalid("the dashboard's actions are sent by its page (X-Tiercache-UI)").into_response();
        }
    }
    let changes = req.method() != Method::GET;
    let res = next.run(req).await;
    if changes {
        refresh(&ui).await;
    }
    res
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StatusQuery {
    /// Only history intervals ending after this time (ms since the epoch).
    since: Option<i64>,
}

/// `GET /ui/api/status`: everything the page shows, in one answer.
async fn status(
    State(ui): State<UiState>,
    headers: HeaderMap,
    query: Result<Query<StatusQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    ui.allowed(&headers)?;
    let Query(q) = query.map_err(|e| ApiError::invalid(format!("bad query: {}", e.body_text())))?;
    let history = match &ui.history {
        Some(h) => json!(h.rates(q.since.unwrap_or(i64::MIN))),
        None => Value::Null,
    };
    let q = ui.cache.quota_stats();
    let derive = ui.cache.derive_stats().await.ok();
    let slow = slow_figures(&ui).await;
    let shared = ui.cache.shared_status();
    let body = json!({
        "now_ms": history::now_ms(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": ui.started.elapsed().as_secs(),
        "tiers": history::TIERS,
        "history": history,
        "sample_seconds": history::INTERVAL.as_secs(),
        "disk": {
            "quota_bytes": q.quota_bytes,
            "used_bytes": q.used_bytes,
            "reserved_bytes": q.reserved_bytes,
            "high_watermark": q.high_watermark,
            "low_watermark": q.low_watermark,
            "n_evicted": q.n_evicted,
            "evicted_bytes": q.evicted_bytes,
            "n_pass_through": q.n_pass_through,
            "usage": slow.get("usage"),
        },
        "shared": shared,
        "derivations": derive,
        "namespaces": slow.get("namespaces"),
        "index_error": *ui.slow_error.lock().unwrap_or_else(|p| p.into_inner()),
        "warnings": warnings::recent(),
    });
    Ok(Json(body).into_response())
}

/// The figures read from the index (disk use per namespace, namespaces' definitions and
/// totals), read at most once per [`SLOW_FIGURES_TTL`] however many pages poll.
async fn slow_figures(ui: &Ui) -> Arc<Value> {
    let mut slow = ui.slow.lock().await;
    if let Some((at, v)) = &*slow
        && at.elapsed() < SLOW_FIGURES_TTL
    {
        return Arc::clone(v);
    }
    let v = Arc::new(match read_slow_figures(&ui.cache).await {
        Ok(v) => {
            *ui.slow_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
            v
        }
        Err(e) => {
            tracing::warn!(error = %e, "dashboard: cannot read the index's figures");
            *ui.slow_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            json!({})
        }
    });
    *slow = Some((Instant::now(), Arc::clone(&v)));
    v
}

async fn read_slow_figures(cache: &Cache) -> Result<Value, tiercache_engine::Error> {
    let usage = cache.disk_usage().await?;
    let stats = cache.namespaces().await?;
    let defined = cache.namespace_list().await?;
    let namespaces: Vec<Value> = stats
        .iter()
        .map(|ns| {
            let def = defined.iter().find(|d| d.name == ns.name);
            let used = usage.namespaces.iter().find(|u| u.name == ns.name);
            let source = ns.source.as_deref().map(tiercache_core::redact_url);
            let dir = ns.directory.as_ref();
            json!({
                "name": ns.name,
                "kind": kind(ns.source.as_deref(), dir.is_some()),
                "source": source,
                "n_entries": ns.n_entries,
                "bytes": ns.bytes,
                "hits": ns.hits,
                "blob_bytes": used.map(|u| u.blob_bytes),
                "unique_bytes": used.map(|u| u.unique_bytes),
                "is_pinned": used.is_some_and(|u| u.is_pinned),
                "quota_bytes": def.and_then(|d| d.options.quota_bytes),
                "max_age_ms": def.and_then(|d| d.options.max_age_ms),
                "owner": ns.owner,
                "is_public": ns.is_public,
                "last_update_ms": dir.and_then(|d| d.last_update_ms),
                "last_update_kind": dir.and_then(|d| d.last_update_kind.clone()),
                "newest_ms": ns.newest_ms,
            })
        })
        .collect();
    let usage = json!({
        "n_blobs": usage.n_blobs,
        "blob_bytes": usage.blob_bytes,
        "pinned_bytes": usage.pinned_bytes,
        "upload_bytes": usage.upload_bytes,
        "orphan_bytes": usage.orphan_bytes,
    });
    Ok(json!({ "usage": usage, "namespaces": namespaces }))
}

/// A namespace's kind as the dashboard names it.
fn kind(source: Option<&str>, is_directory: bool) -> &'static str {
    let lower = source.unwrap_or("").to_ascii_lowercase();
    if is_directory {
        "directory"
    } else if source.is_none() {
        "store"
    } else if lower.starts_with("s3://") {
        "S3"
    } else if lower.starts_with("oci://") || lower.starts_with("oci+") {
        "OCI"
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        "HTTP"
    } else {
        "other"
    }
}

/// Forgets the figures read from the index, so the next poll shows an action's effect.
async fn refresh(ui: &Ui) {
    *ui.slow.lock().await = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_read_from_the_form() {
        assert_eq!(form_token(b"token=abc%2Bdef+g").as_deref(), Some("abc+def g"));
        assert_eq!(form_token(b"x=1&token=t").as_deref(), Some("t"));
        assert_eq!(form_token(b"tokens=t"), None);
        assert_eq!(form_token(b"token=%ff"), None);
    }

    #[test]
    fn kinds_follow_the_source() {
        assert_eq!(kind(None, false), "store");
        assert_eq!(kind(Some("/srv/photos"), true), "directory");
        assert_eq!(kind(Some("https://example.org/"), false), "HTTP");
        assert_eq!(kind(Some("s3://bucket/p"), false), "S3");
        assert_eq!(kind(Some("OCI://registry-1.docker.io"), false), "OCI");
    }
}
