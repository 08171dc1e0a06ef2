//! `tiercache serve`: records its effective settings (`<data>/settings.json`, `served.rs`), creates
//! the config file's namespaces, binds the listen address (and the S3 listener's, with
//! `--s3-listen`), starts the watcher (with `--watch`) and the background pruner, and runs the
//! HTTP server (and the S3 front door beside it, within the same limits) until a signal.
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
    // Before anything is written: an S3 listener nobody may use is refused at once.
    let s3 = match config::s3_settings(&settings)? {
        Some((addr, s3_settings)) => Some((addr, tiercache_s3::service(cache.clone(), &s3_settings)?)),
        None => None,
    };
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
    let s3 = match s3 {
        Some((addr, front)) => {
            let listener =
                tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr} (S3)"))?;
            tracing::info!(addr = %listener.local_addr()?, "S3 API serving");
            Some((listener, front))
        }
        None => None,
    };
    cache.spawn_pruner();
    // One signal stops both listeners: the S3 one waits for the main one's signal to be seen.
    let (stop, stopped) = tokio::sync::watch::channel(());
    let s3 = s3.map(|(listener, front)| {
        let mut stopped = stopped;
        let handler = tiercache_server::ServiceHandler(front);
        let limits = limits.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.changed().await;
            };
            tiercache_server::serve_handler(listener, handler, limits, shutdown).await
        })
    });
    let shutdown = async move {
        crate::shutdown_signal().await;
        drop(stop);
    };
    let mirror = tiercache_server::MirrorConfig { default_namespace: settings.oci_default_ns.clone() };
    let served = tiercache_server::serve(listener, cache, (access, mirror), limits, shutdown).await;
    if let Some(s3) = s3 {
        s3.await.context("the S3 listener failed")?.context("the S3 listener failed")?;
    }
    served?;
    Ok(0)
}
