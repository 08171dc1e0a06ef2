//! tiercache's HTTP front door: axum routers over the engine, with no business logic.
//!
//! [`app_with`] builds the whole HTTP API as one service, [`App`] (testable without a socket:
//! entries straight to their handlers, the rest through an axum router), under the access rules of
//! an [`Access`] (`access.rs`: read, write and admin tokens; the admin endpoints at `/admin` are
//! in `admin.rs`; the registry mirror's pull API at `/v2/` in `oci.rs`); [`app`] is the same
//! under the default rules; [`serve`] runs it on a listener
//! within [`Limits`] (connections, header, keep-alive and body times: `listener.rs`).
//! HTTP semantics live here: conditional requests, ranges and the headers that describe a read
//! ([`respond`]); the status for every error is chosen in one place ([`ApiError`]).
#![warn(missing_docs)]

mod access;
mod admin;
mod derive;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod images;
mod listener;
mod listing;
mod metrics_endpoint;
mod oci;
mod request_log;
mod respond;
mod routes;
mod ui;

pub use access::{Access, MIN_TOKEN_LEN, Right, TokenError};
pub use error::{ApiError, AuthFailure};
pub use listener::{Handler, Limits, ServiceHandler, default_max_connections, raise_open_files_limit};
pub use metrics_endpoint::install_metrics;
pub use oci::MirrorConfig;
pub use routes::{App, app, app_with, app_with_mirror};
pub use ui::RecentWarnings;

use tiercache_engine::Cache;

/// Serves `cache` on `listener` under `access` and within `limits` until `shutdown` resolves, then
/// finishes open requests and flushes batched index writes. The admin endpoints are on if and only
/// if `access` has an admin token (see [`app_with`]); the registry mirror at `/v2/` picks
/// namespaces as `mirror` says.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cache: Cache,
    (access, mirror): (Access, MirrorConfig),
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = install_metrics();
    access.log();
    let app = app_with_mirror(cache.clone(), Some(metrics), access, mirror);
    listener::run(listener, app, limits, shutdown).await?;
    // Fetches keep running after their readers are answered; let them store what they fetched,
    // and stop the background loops (the pruner, the access flusher) after a last flush.
    if let Err(e) = cache.shutdown().await {
        tracing::warn!(error = %e, "cannot record access times at shutdown");
    }
    Ok(())
}

/// Serves any [`Handler`] (a tower service through [`ServiceHandler`], such as the S3 front
/// door) on `listener` within `limits` until `shutdown` resolves, with the same protections as
/// [`serve`]: the connection limit and its reserve, header-read, keep-alive and body timeouts,
/// graceful shutdown. It does not shut the cache down: [`serve`] does, for the main listener.
pub async fn serve_handler(
    listener: tokio::net::TcpListener,
    handler: impl Handler,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    install_metrics();
    listener::run(listener, handler, limits, shutdown).await
}
