//! The admin endpoints, nested at `/admin` and authenticated by a bearer token:
//!
//! ```text
//! GET    /admin/namespaces               every namespace with its totals
//! GET    /admin/namespaces/{name}        one namespace, its totals and pins (404 if missing)
//! PUT    /admin/namespaces/{name}        create (201) or re-define (200); another source: 409
//! DELETE /admin/namespaces/{name}        delete (200, idempotent; `existed` says which)
//! PUT    /admin/namespaces/{name}/pins   pin `{"key": K}`, or the whole namespace without a key
//! DELETE /admin/namespaces/{name}/pins   unpin, the same way
//! POST   /admin/namespaces/{name}/update re-read a directory namespace's changes (`force`: all)
//! POST   /admin/prune                    one pruner pass (`dry_run` lists without removing)
//! GET    /admin/df                       disk use, overall and per namespace
//! GET    /admin/stats                    index and tier statistics
//! ```
//!
//! Request bodies are optional JSON objects whose unknown fields are refused (so a typo is a 400,
//! not a silently ignored option). Without a configured token every `/admin` path answers 404; a
//! token of less than admin rights gets 403 (`access.rs`). Errors are answered in full here.
//!
//! This module only translates HTTP to [`Cache`] calls: what a namespace, a pin or a prune pass
//! means is the engine's business, and the status of each refusal is chosen in [`ApiError`].

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tiercache_core::units;
use tiercache_engine::{Cache, NamespaceName, NamespaceOptions, Place, PruneOptions};

use crate::ApiError;
use crate::access::{Access, Right};

/// Largest admin request body: these are small JSON objects.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The router nested at `/admin`: the endpoints behind the admin token when `access` has one,
/// otherwise one that answers 404 ("admin endpoints are off") to every path.
pub(crate) fn router(cache: Cache, access: Arc<Access>) -> Router {
    if !access.has_admin_token() {
        return Router::new().route("/", any(off)).fallback(off);
    }
    endpoints(cache)
        // Outermost, and over the fallback too: nothing below `/admin` answers without the token.
        .layer(axum::middleware::from_fn_with_state(access, authenticate))
}

/// The admin endpoints without authentication, for a door that authenticates its own way (the
/// dashboard's actions, `ui.rs`). Every failure is answered in full.
pub(crate) fn endpoints(cache: Cache) -> Router {
    Router::new()
        .route("/namespaces", get(list_namespaces))
        .route("/namespaces/{name}", get(show_namespace).put(create_namespace).delete(delete_namespace))
        .route("/namespaces/{name}/pins", put(pin).delete(unpin))
        .route("/namespaces/{name}/migrate", post(move_namespace))
        .route("/namespaces/{name}/update", post(update_namespace))
        .route("/prune", post(prune))
        .route("/df", get(df))
        .route("/stats", get(stats))
        .fallback(no_endpoint)
        .with_state(cache)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // The admin token holder is told every detail of a failure.
        .layer(axum::middleware::map_response(|mut res: Response| async move {
            crate::error::reveal(&mut res);
            res
        }))
}

async fn off() -> ApiError {
    ApiError::AdminOff
}

async fn no_endpoint() -> ApiError {
    ApiError::NoAdminEndpoint
}

/// Lets the request through if and only if it carries `Authorization: Bearer <admin token>`.
async fn authenticate(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    match access.check(req.headers(), Right::Admin) {
        Ok(()) => next.run(req).await,
        Err(refused) => {
            if req.headers().contains_key(header::AUTHORIZATION) {
                tracing::info!(path = req.uri().path(), status = refused.status().as_u16(), "admin request refused");
            }
            refused.into_response()
        }
    }
}

/// The `{name}` path segment (percent-decoded once by the extractor), validated as a namespace
/// name, so that a hostile name (`..`, `%2e%2e`, `a%2Fb`, too long) is a 400 before any lookup.
fn namespace_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::invalid(format!("bad namespace in the path: {}", e.body_text())))?;
    let name = NamespaceName::new(&raw).map_err(tiercache_engine::Error::from)?;
    Ok(name.as_str().to_owned())
}

/// An optional JSON object: an empty body (or only whitespace) means every field's default.
fn json_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.trim_ascii().is_empty() {
        return Ok(T::default());
    }
    let bad = |e: serde_json::Error| ApiError::invalid(format!("the request body is not the expected JSON: {e}"));
    // An object only: serde would also build a struct from an array of its fields, in order.
    match serde_json::from_slice::<serde_json::Value>(body).map_err(bad)? {
        v @ serde_json::Value::Object(_) => serde_json::from_value(v).map_err(bad),
        _ => Err(ApiError::invalid("the request body must be a JSON object")),
    }
}

async fn list_namespaces(State(cache): State<Cache>) -> Result<Response, ApiError> {
    Ok(Json(cache.namespaces().await?).into_response())
}

/// The namespace's totals, with `pins` (pinned keys; `""` stands for the whole namespace) and
/// `is_pinned` (whether the whole namespace is).
async fn show_namespace(
    State(cache): State<Cache>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = namespace_name(path)?;
    let Some(info) = cache.namespace(&name).await? else {
        return Err(tiercache_engine::Error::NoNamespace(name).into());
    };
    let pins = cache.pins(&name).await?;
    let mut body = serde_json::to_value(info)
        .map_err(|e| tiercache_engine::Error::io("cannot encode the namespace", std::io::Error::other(e)))?;
    body["is_pinned"] = json!(pins.iter().any(String::is_empty));
    body["pins"] = json!(pins);
    Ok(Json(body).into_response())
}

/// `PUT /admin/namespaces/{name}`: the namespace's whole definition (fields left out take their
/// defaults, so a PUT replaces the options). Each limit is a whole number (`max_age_seconds`,
/// `quota_bytes`) or, under its short name, text in the units of the flags (`"max_age": "7d"`,
/// `"quota": "10GiB"`); either way bounded by `tiercache_core::units`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Definition {
    source: Option<String>,
    owner: Option<String>,
    quota_bytes: Option<Value>,
    quota: Option<Value>,
    max_age_seconds: Option<Value>,
    max_age: Option<Value>,
    max_entries: Option<Value>,
    copy_to_cache: bool,
    ignore: Vec<String>,
    /// `managed` or `path:DIR`; left out: managed for a new namespace, unchanged for another.
    storage: Option<String>,
    /// Read without a token when reads otherwise need one.
    public: bool,
    /// For an S3 source: the access key pair it signs with instead of the AWS variables.
    s3_access_key: Option<String>,
    s3_secret_key: Option<tiercache_core::Secret>,
    /// For a registry source: the user and password it authenticates with.
    registry_user: Option<String>,
    registry_password: Option<tiercache_core::Secret>,
}

/// A namespace's definition as the admin API takes it: its source, options and storage place.
pub(crate) type Defined = (Option<String>, NamespaceOptions, Option<Place>);

impl Definition {
    fn options(self) -> Result<Defined, ApiError> {
        let storage = self.storage.as_deref().map(str::parse::<Place>).transpose()?;
        let max_age = duration_field(("max_age_seconds", self.max_age_seconds), ("max_age", self.max_age))?;
        let options = NamespaceOptions {
            copy_to_cache: self.copy_to_cache,
            ignore: self.ignore,
            owner: self.owner,
            quota_bytes: size_field(("quota_bytes", self.quota_bytes), ("quota", self.quota))?,
            max_age_ms: max_age.map(units::millis),
            max_entries: count_field("max_entries", self.max_entries)?,
            storage: None,
            is_public: self.public,
            s3_access_key: self.s3_access_key,
            s3_secret_key: self.s3_secret_key,
            registry_user: self.registry_user,
            registry_password: self.registry_password,
        };
        Ok((self.source, options, storage))
    }
}

/// The body of `PUT /admin/namespaces/{name}`, checked: every number within its bounds.
pub(crate) fn definition(body: &Bytes) -> Result<Defined, ApiError> {
    json_body::<Definition>(body)?.options()
}

/// A refused number: a 400 whose message names the field.
fn bad_number(e: units::UnitError) -> ApiError {
    ApiError::invalid(e.to_string())
}

/// Field `name` as a whole number from 0 to `u64::MAX`, if given; anything else is a 400 naming
/// the field (serde's own message would not).
fn whole_number(name: &str, v: Option<Value>) -> Result<Option<u64>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(ApiError::invalid(format!("{name} must be a whole number of 0 or more, not {other}"))),
    }
}

/// Field `name` as text, if given.
fn text(name: &str, v: Option<Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ApiError::invalid(format!("{name} must be text like \"7d\" or \"10GiB\", not {other}"))),
    }
}

/// A count (`max_entries`), bounded.
fn count_field(name: &str, v: Option<Value>) -> Result<Option<u64>, ApiError> {
    whole_number(name, v)?.map(|n| units::count(name, n)).transpose().map_err(bad_number)
}

/// A duration given in whole seconds (`seconds.0`, e.g. `older_than_seconds`) or as text
/// (`text.0`, e.g. `older_than: "7d"`), not both; bounded.
fn duration_field(
    seconds: (&str, Option<Value>),
    written: (&str, Option<Value>),
) -> Result<Option<Duration>, ApiError> {
    let (n, t) = (whole_number(seconds.0, seconds.1)?, text(written.0, written.1)?);
    match (n, t) {
        (Some(_), Some(_)) => Err(ApiError::invalid(format!("give {} or {}, not both", seconds.0, written.0))),
        (Some(n), None) => units::seconds(seconds.0, n).map(Some).map_err(bad_number),
        (None, Some(t)) => {
            units::parse_duration(&t).map(Some).map_err(|e| ApiError::invalid(format!("{}: {e}", written.0)))
        }
        (None, None) => Ok(None),
    }
}

/// A size given in bytes (`bytes.0`, e.g. `quota_bytes`) or as text (`text.0`, e.g.
/// `quota: "10GiB"`), not both; bounded.
fn size_field(bytes: (&str, Option<Value>), written: (&str, Option<Value>)) -> Result<Option<u64>, ApiError> {
    let (n, t) = (whole_number(bytes.0, bytes.1)?, text(written.0, written.1)?);
    match (n, t) {
        (Some(_), Some(_)) => Err(ApiError::invalid(format!("give {} or {}, not both", bytes.0, written.0))),
        (Some(n), None) => units::bytes(bytes.0, n).map(Some).map_err(bad_number),
        (None, Some(t)) => {
            units::parse_size(&t).map(Some).map_err(|e| ApiError::invalid(format!("{}: {e}", written.0)))
        }
        (None, None) => Ok(None),
    }
}

/// Creates the namespace (201, with `Location`) or, if it exists with the same source, re-defines
/// its options (200). Answers `{"created": bool, "namespace": {…}}`.
async fn create_namespace(
    State(cache): State<Cache>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = namespace_name(path)?;
    let (source, options, storage) = definition(&body)?;
    let (ns, created) = cache.create_namespace_in(&name, source.as_deref(), &options, storage.as_ref()).await?;
    let shown = source.as_deref().map_or("none".into(), tiercache_core::redact_url);
    tracing::info!(namespace = %name, created, source = %shown, "admin: namespace defined");
    let body = Json(json!({ "created": created, "namespace": ns }));
    if !created {
        return Ok((StatusCode::OK, body).into_response());
    }
    let location = HeaderValue::from_str(&format!("/admin/namespaces/{name}")).expect("namespace names are ASCII");
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], body).into_response())
}

/// Deletes the namespace with its entries and the blobs only it references. Idempotent: a missing
/// namespace answers 200 too, with `"existed": false`.
async fn delete_namespace(
    State(cache): State<Cache>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let name = namespace_name(path)?;
    let removed = cache.delete_namespace(&name).await?;
    tracing::info!(namespace = %name, existed = removed.is_some(), "admin: namespace deleted");
    Ok(Json(json!({ "name": name, "existed": removed.is_some(), "removed": removed })).into_response())
}

/// `POST /admin/namespaces/{name}/migrate`: `{"to": "managed" | "path:DIR"}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct MoveRequest {
    to: String,
}

/// The body of `POST /admin/namespaces/{name}/migrate`, checked: the place to move to.
pub(crate) fn move_target(body: &Bytes) -> Result<Place, ApiError> {
    Ok(json_body::<MoveRequest>(body)?.to.parse()?)
}

/// Moves the namespace's blobs to another storage place (reads go on meanwhile); answers what
/// was copied and freed.
async fn move_namespace(
    State(cache): State<Cache>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = namespace_name(path)?;
    let to = move_target(&body)?;
    let report = cache.move_namespace(&name, &to).await?;
    tracing::info!(namespace = %name, from = report.from, to = report.to, "admin: namespace moved");
    Ok(Json(report).into_response())
}

/// `POST /admin/namespaces/{name}/update`: `{"force": bool}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UpdateBody {
    force: bool,
}

/// Re-reads a directory namespace's changes (`force`: every file) and answers what the update did;
/// a namespace that is not a directory namespace is a 400.
async fn update_namespace(
    State(cache): State<Cache>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = namespace_name(path)?;
    let UpdateBody { force } = json_body(&body)?;
    let progress = Arc::new(tiercache_engine::ScanProgress::default());
    let report = cache.update_directory(&name, force, progress).await?;
    tracing::info!(namespace = %name, force, "admin: directory namespace updated");
    Ok(Json(report).into_response())
}

/// `PUT|DELETE /admin/namespaces/{name}/pins`: one key, or (without `key`) the whole namespace.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PinBody {
    key: Option<String>,
}

async fn pin(
    State(cache): State<Cache>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    change_pin(cache, path, body, true).await
}

async fn unpin(
    State(cache): State<Cache>,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
) -> Result<Response, ApiError> {
    change_pin(cache, path, body, false).await
}

/// Answers `{"changed": bool, "pins": [...]}`: whether the pin was new (or, unpinning, whether
/// there was one), and the namespace's pins afterwards (`""`: the whole namespace).
async fn change_pin(
    cache: Cache,
    path: Result<Path<String>, PathRejection>,
    body: Bytes,
    is_pin: bool,
) -> Result<Response, ApiError> {
    let name = namespace_name(path)?;
    let PinBody { key } = json_body(&body)?;
    let changed =
        if is_pin { cache.pin(&name, key.as_deref()).await? } else { cache.unpin(&name, key.as_deref()).await? };
    tracing::info!(namespace = %name, key = key.as_deref().unwrap_or("(all)"), is_pin, changed, "admin: pin changed");
    let pins = cache.pins(&name).await?;
    Ok(Json(json!({ "changed": changed, "pins": pins })).into_response())
}

/// `POST /admin/prune`. With none of `orphans`, `older_than_seconds` and `max_size_bytes` given,
/// the pass does everything the configuration asks for ([`PruneOptions::all`]); with any of them
/// given, only those (`"orphans": false` alone thus prunes nothing). `ns` narrows entries and
/// owners to one namespace. The age and size may also be text (`"older_than": "7d"`,
/// `"max_size": "50GiB"`); either way bounded by `tiercache_core::units`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct PruneBody {
    orphans: Option<bool>,
    older_than_seconds: Option<Value>,
    older_than: Option<Value>,
    max_size_bytes: Option<Value>,
    max_size: Option<Value>,
    ns: Option<String>,
    dry_run: bool,
}

impl PruneBody {
    fn options(self) -> Result<PruneOptions, ApiError> {
        let namespace = match self.ns {
            Some(ns) => Some(NamespaceName::new(&ns).map_err(tiercache_engine::Error::from)?.as_str().to_owned()),
            None => None,
        };
        let older_than =
            duration_field(("older_than_seconds", self.older_than_seconds), ("older_than", self.older_than))?;
        let max_size = size_field(("max_size_bytes", self.max_size_bytes), ("max_size", self.max_size))?;
        let only = self.orphans.is_some() || older_than.is_some() || max_size.is_some();
        let opts = if only {
            PruneOptions { orphans: self.orphans.unwrap_or(false), older_than, max_size, ..Default::default() }
        } else {
            PruneOptions::all()
        };
        Ok(PruneOptions { namespace, dry_run: self.dry_run, ..opts })
    }
}

/// The body of `POST /admin/prune`, checked: every number within its bounds.
pub(crate) fn prune_options(body: &Bytes) -> Result<PruneOptions, ApiError> {
    json_body::<PruneBody>(body)?.options()
}

async fn prune(State(cache): State<Cache>, body: Bytes) -> Result<Response, ApiError> {
    let opts = prune_options(&body)?;
    let report = cache.prune(&opts).await?;
    tracing::info!(
        dry_run = report.dry_run,
        n_entries = report.n_entries,
        n_blobs = report.n_blobs,
        freed_bytes = report.freed_bytes,
        "admin: prune pass"
    );
    Ok(Json(report).into_response())
}

async fn df(State(cache): State<Cache>) -> Result<Response, ApiError> {
    Ok(Json(cache.disk_usage().await?).into_response())
}

async fn stats(State(cache): State<Cache>) -> Result<Response, ApiError> {
    Ok(Json(cache.stats(None).await?).into_response())
}
