//! tiercache's HTTP front door: axum routers over the engine, with no business logic.
//!
//! [`app`] builds the whole HTTP API as one service, [`App`] (testable without a socket: entries
//! straight to their handlers, the rest through an axum router), [`app_with_admin`] the same with
//! the token-protected admin endpoints at `/admin` (`admin.rs`); [`serve`] runs it on a listener
//! within [`Limits`] (connections, header, keep-alive and body times: `listener.rs`).
//! HTTP semantics live here: conditional requests, ranges and the headers that describe a read
//! ([`respond`]); the status for every error is chosen in one place ([`ApiError`]).
#![warn(missing_docs)]

mod admin;
mod error;
mod listener;
mod listing;
mod metrics_endpoint;
mod respond;
mod routes;

pub use error::{ApiError, AuthFailure};
pub use listener::{Limits, default_max_connections, raise_open_files_limit};
pub use metrics_endpoint::install_metrics;
pub use routes::{App, app, app_with_admin};

use tiercache_engine::Cache;

/// Serves `cache` on `listener` within `limits` until `shutdown` resolves, then finishes open
/// requests and flushes batched index writes. The admin endpoints are on if and only if
/// `admin_token` is given and not empty (see [`app_with_admin`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    cache: Cache,
    admin_token: Option<String>,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = install_metrics();
    let admin_token = admin_token.filter(|t| !t.is_empty());
    if admin_token.is_some() {
        tracing::info!("admin endpoints on at /admin (bearer token)");
    }
    let app = app_with_admin(cache.clone(), Some(metrics), admin_token);
    listener::run(listener, app, limits, shutdown).await?;
    // Fetches keep running after their readers are answered; let them store what they fetched,
    // and stop the background loops (the pruner, the access flusher) after a last flush.
    if let Err(e) = cache.shutdown().await {
        tracing::warn!(error = %e, "cannot record access times at shutdown");
    }
    Ok(())
}
