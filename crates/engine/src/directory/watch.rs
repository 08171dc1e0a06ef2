//! `watch` (layer 3): following a directory namespace's file events (inotify through the notify crate).
//!
//! Events are gathered for [`crate::CacheConfig::watch_debounce`] and coalesced per path; each
//! path is then looked at once: a file whose markers did not change is left alone (never
//! rehashed), a changed or new file is hashed, a directory is merged like an update of that
//! subtree, and a vanished path takes its rows (and those under it) away. A full reconcile runs at
//! start, whenever events may have been lost (queue overflow, watcher error, the inotify watch
//! limit), and every [`crate::CacheConfig::reconcile_interval`].

use std::collections::BTreeSet;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use notify::Watcher;
use tiercache_core::RelPath;
use tiercache_index::Namespace;
use tiercache_sources::DirSource;
use tiercache_sources::dir::Lookup;
use tiercache_sources::dir::walk::Ignore;

use super::Directories;
use super::scan::{self, Change, Changes, ScanProgress, ScanSpec, UpdateKind, UpdateReport, hash_one};
use crate::Error;

/// Paths queued between two passes, at most; beyond this the watcher reconciles in full.
const MAX_QUEUED_EVENTS: usize = 65_536;

enum Wake {
    Path(std::path::PathBuf),
    Rescan,
}

impl Directories {
    /// Follows the directory namespaces `names` (every directory namespace if empty), keeping
    /// their read caches current, until `shutdown` completes.
    pub(crate) async fn watch(
        self: &Arc<Self>,
        names: &[String],
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), Error> {
        let mut targets = Vec::new();
        if names.is_empty() {
            for ns in self.namespaces.directories().await? {
                match self.namespaces.dir_source(&ns) {
                    Ok(Some(src)) => targets.push((ns, src)),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(namespace = %ns.name, error = %e, "not watching"),
                }
            }
        } else {
            for n in names {
                let (ns, src) = self.namespaces.dir(n).await?;
                targets.push(((*ns).clone(), src));
            }
        }
        if targets.is_empty() {
            return Err(Error::Invalid(
                "no directory namespace to watch; create one with `tiercache index DIR --ns NAME`".into(),
            ));
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (ns, src) in targets {
            let dirs = Arc::clone(self);
            tasks.spawn(async move { dirs.watch_one(ns, src).await });
        }
        tokio::select! {
            () = shutdown => Ok(()),
            Some(r) = tasks.join_next() => match r {
                Ok(Err(e)) => Err(e),
                _ => Err(Error::io("watching", std::io::Error::other("a watcher stopped"))),
            },
        }
    }

    async fn watch_one(&self, ns: Namespace, src: Arc<DirSource>) -> Result<(), Error> {
        let ignore = Ignore::new(&ns.options.ignore).map_err(Error::Invalid)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Wake>(MAX_QUEUED_EVENTS);
        let lost = Arc::new(AtomicBool::new(false));
        let handler = {
            let (tx, lost) = (tx.clone(), Arc::clone(&lost));
            move |res: notify::Result<notify::Event>| {
                let ok = match res {
                    Ok(ev) if ev.need_rescan() => false,
                    Ok(ev) => ev.paths.into_iter().all(|p| tx.try_send(Wake::Path(p)).is_ok()),
                    Err(e) => {
                        tracing::warn!(error = %e, "file watcher error; reconciling in full");
                        false
                    }
                };
                if !ok {
                    lost.store(true, Ordering::Relaxed);
                    let _ = tx.try_send(Wake::Rescan);
                }
            }
        };
        // Keep the watcher alive for the whole loop; without one, the periodic reconcile remains.
        let _watcher = match notify::recommended_watcher(handler)
            .and_then(|mut w| w.watch(src.root(), notify::RecursiveMode::Recursive).map(|()| w))
        {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    namespace = %ns.name, error = %e,
                    every = ?self.settings.reconcile_interval,
                    "cannot watch the directory (the inotify watch limit?); falling back to periodic full reconciles"
                );
                None
            }
        };
        tracing::info!(namespace = %ns.name, root = %src.root().display(), "watching");
        self.reconcile(&ns).await;
        let mut every = tokio::time::interval(self.settings.reconcile_interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await; // The first tick is immediate; the reconcile above covered it.
        loop {
            let mut pending = BTreeSet::new();
            tokio::select! {
                wake = rx.recv() => {
                    let Some(first) = wake else { return Ok(()) };
                    self.gather(&src, first, &mut rx, &mut pending).await;
                }
                _ = every.tick() => lost.store(true, Ordering::Relaxed),
            }
            if lost.swap(false, Ordering::Relaxed) || pending.len() >= MAX_QUEUED_EVENTS {
                self.reconcile(&ns).await;
                continue;
            }
            if let Err(e) = self.apply_events(&ns, &src, &ignore, pending).await {
                tracing::warn!(namespace = %ns.name, error = %e, "cannot apply file events; reconciling in full");
                self.reconcile(&ns).await;
            }
        }
    }

    /// Collects events for the debounce window after `first`, coalesced per relative path.
    async fn gather(
        &self,
        src: &DirSource,
        first: Wake,
        rx: &mut tokio::sync::mpsc::Receiver<Wake>,
        pending: &mut BTreeSet<Vec<u8>>,
    ) {
        let deadline = tokio::time::Instant::now() + self.settings.watch_debounce;
        let mut next = Some(first);
        loop {
            match next.take() {
                Some(Wake::Path(p)) => match p.strip_prefix(src.root()) {
                    Ok(rel) => {
                        pending.insert(rel.as_os_str().as_bytes().to_vec());
                    }
                    Err(_) => tracing::debug!(path = %p.display(), "event outside the root ignored"),
                },
                Some(Wake::Rescan) | None => {}
            }
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(w)) => next = Some(w),
                Ok(None) | Err(_) => return,
            }
        }
    }

    /// A full reconcile; failures are logged (the directory may be gone for now) and retried at
    /// the next interval.
    async fn reconcile(&self, ns: &Namespace) {
        let progress = Arc::new(ScanProgress::default());
        if let Err(e) = self.update(&ns.name, UpdateKind::Reconcile, true, progress).await {
            tracing::warn!(namespace = %ns.name, error = %e, "full reconcile failed; will retry");
        }
    }

    /// Looks once at each path that had events.
    async fn apply_events(
        &self,
        ns: &Namespace,
        src: &Arc<DirSource>,
        ignore: &Ignore,
        pending: BTreeSet<Vec<u8>>,
    ) -> Result<(), Error> {
        if pending.contains(&Vec::new()) {
            self.reconcile(ns).await; // The root itself changed (moved, deleted, remounted).
            return Ok(());
        }
        let (index, src, ignore, id) = (Arc::clone(self.ix.index()), Arc::clone(src), ignore.clone(), ns.id);
        let threads = self.settings.hash_threads;
        crate::blocking::blocking_with(move || -> Result<(), Error> {
            let mut changes = Changes::default();
            let root = src.open_root()?;
            for path in pending {
                if ignore.covers(&path) {
                    continue;
                }
                let Ok(rel) = RelPath::new(path.clone()) else { continue };
                let mut under = path.clone();
                under.push(b'/');
                match src.lookup(&rel)? {
                    Lookup::File(markers) => {
                        let row = index.get_file(id, &path)?;
                        if row.as_ref().is_some_and(|r| r.markers == markers && r.sha256.is_some()) {
                            continue; // Unchanged markers: never rehashed.
                        }
                        match hash_one(&src, &root, &path, markers) {
                            Ok(Some(row)) => changes.push(Change::Put(row)),
                            Ok(None) => changes.push(Change::Delete(path)),
                            Err(why) => {
                                tracing::debug!(path = %rel, %why, "recording file without hashes");
                                changes.push(Change::Put(tiercache_index::FileRow {
                                    path,
                                    markers,
                                    md5: None,
                                    sha256: None,
                                    hashed_at_ns: None,
                                    is_copied: false,
                                }));
                            }
                        }
                        changes.push(Change::DeleteUnder(under));
                    }
                    Lookup::Dir => {
                        index.apply_files(id, &[], std::slice::from_ref(&path), &[])?;
                        let spec = ScanSpec { ns_id: id, start: path, force: false, hash: true, hash_threads: threads };
                        let mut report = UpdateReport::default();
                        scan::scan(Arc::clone(&index), &src, &ignore, &spec, Arc::default(), &mut report)?;
                    }
                    Lookup::Other | Lookup::Missing => {
                        changes.push(Change::Delete(path));
                        changes.push(Change::DeleteUnder(under));
                    }
                }
            }
            changes.apply(&index, id)?;
            Ok(())
        })
        .await
    }
}
