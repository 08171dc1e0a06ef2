//! tiercache's HTTP front door: axum routers over the engine, with no business logic.
//!
//! [`app`] builds the whole HTTP API as one service, [`App`] (testable without a socket: entries
//! straight to their handlers, the rest through an axum router), [`app_with_admin`] the same with
//! the token-protected admin endpoints at `/admin` (`admin.rs`); [`serve`] runs it on a listener.
//! HTTP semantics live here: conditional requests, ranges and the headers that describe a read
//! ([`respond`]); the status for every error is chosen in one place ([`ApiError`]).
#![warn(missing_docs)]

mod admin;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod listing;
mod metrics_endpoint;
mod respond;
mod routes;

pub use error::{ApiError, AuthFailure};
pub use metrics_endpoint::install_metrics;
pub use routes::{App, app, app_with_admin};

use tiercache_engine::Cache;

/// Serves `cache` on `listener` until `shutdown` resolves, then finishes open requests and
/// flushes batched index writes. The admin endpoints are on if and only if `admin_token` is given
/// and not empty (see [`app_with_admin`]).
pub async fn serve(
    listener: tokio::net::TcpListener,
    cache: Cache,
    admin_token: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = install_metrics();
    let admin_token = admin_token.filter(|t| !t.is_empty());
    if admin_token.is_some() {
        tracing::info!("admin endpoints on at /admin (bearer token)");
    }
    let app = app_with_admin(cache.clone(), Some(metrics), admin_token);
    axum::serve(listener, axum::ServiceExt::<axum::extract::Request>::into_make_service(app))
        .with_graceful_shutdown(shutdown)
        .await?;
    // Fetches keep running after their readers are answered; let them store what they fetched,
    // and stop the background loops (the pruner, the access flusher) after a last flush.
    if let Err(e) = cache.shutdown().await {
        tracing::warn!(error = %e, "cannot record access times at shutdown");
    }
    Ok(())
}
