//! tiercache's HTTP front door: axum routers over the engine, with no business logic.
//!
//! [`app`] builds the whole router (testable without a socket); [`serve`] runs it on a listener.
//! HTTP semantics live here: conditional requests, ranges and the headers that describe a read
//! ([`respond`]); the status for every engine error is chosen in one place ([`error::ApiError`]).
#![warn(missing_docs)]

mod error;
mod listing;
mod metrics_endpoint;
mod respond;
mod routes;

pub use error::ApiError;
pub use metrics_endpoint::install_metrics;
pub use routes::app;

use tiercache_engine::Cache;

/// Serves `cache` on `listener` until `shutdown` resolves, then finishes open requests and
/// flushes batched index writes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cache: Cache,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = install_metrics();
    let router = app(cache.clone(), Some(metrics));
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
    // Fetches keep running after their readers are answered; let them store what they fetched.
    if let Err(e) = cache.settle().await {
        tracing::warn!(error = %e, "cannot record access times at shutdown");
    }
    Ok(())
}
