//! `tiercache serve`: records its effective settings (`<data>/settings.json`, `served.rs`), creates
//! the config file's namespaces, binds the listen address, starts the watcher (with `--watch`) and
//! the background pruner, and runs the HTTP server until a signal.
//!
//! It does not open the cache (`main.rs` does, with the engine settings) and holds no HTTP logic:
//! that is `tiercache_server`.

use anyhow::{Context, Result};
use tiercache_engine::{Cache, DiskLimits, NamespaceOptions};

use crate::args::ServeArgs;
use crate::config::{self, FileConfig};

/// Serves `cache` until Ctrl-C or SIGTERM.
pub(crate) async fn serve(cache: Cache, args: &ServeArgs, file: &FileConfig, disk: &DiskLimits) -> Result<u8> {
    let settings = config::serve_settings(&args.serve, file);
    let access = config::access(&settings)?;
    // Before the limits: the default connection limit is derived from the open-file limit.
    match tiercache_server::raise_open_files_limit() {
        Ok(n) => tracing::debug!(open_files = n, "open-file limit"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit; the connection limit follows the current one")
        }
    }
    let limits = config::server_limits(&settings)?;
    // What this server enforces, for `df` run beside it (`served.rs`).
    crate::served::write(cache.data_dir(), &crate::served::Served::now(disk))?;
    for (name, def) in &file.namespaces {
        let options = NamespaceOptions {
            copy_to_cache: def.copy_to_cache,
            ignore: def.ignore.clone(),
            is_public: def.public,
            ..Default::default()
        };
        cache
            .create_namespace(name, def.source.as_deref(), &options)
            .await
            .with_context(|| format!("cannot create namespace {name} from the config file"))?;
    }
    let addr = settings.listen.unwrap_or_else(|| config::DEFAULT_LISTEN.to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, data_dir = %cache.data_dir().display(), "tiercache serving");
    tracing::info!(
        max_connections = limits.max_connections,
        reserve = limits.reserve,
        header_read_timeout = ?limits.header_read_timeout,
        keep_alive_timeout = ?limits.keep_alive_timeout,
        body_idle_timeout = ?limits.body_idle_timeout,
        "connection limits"
    );
    if settings.watch {
        let watcher = cache.clone();
        tokio::spawn(async move {
            if let Err(e) = watcher.watch_directories(&[], std::future::pending()).await {
                tracing::warn!(error = %e, "not watching directories");
            }
        });
    }
    cache.spawn_pruner();
    tiercache_server::serve(listener, cache, access, limits, crate::shutdown_signal()).await?;
    Ok(0)
}
