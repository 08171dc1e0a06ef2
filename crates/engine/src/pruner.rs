//! The pruner: one pass removes what nothing needs any more, and a background task runs a pass
//! every `interval`.
//!
//! A pass, in order: namespaces whose owner the liveness hook has reported gone for longer than
//! the grace period (never one being read); entries not read for longer than the max age (really
//! by last access) and entries past their namespace's quota or max entries; orphan blobs (nothing
//! references them, not uploads) older than the orphan grace; temp files of dead or stalled
//! writers; idle lock files; and, above the disk quota's high watermark, eviction. With `dry_run`
//! it lists what it would remove, and the bytes that would be freed, and changes nothing.
//!
//! It does not decide eviction order (`quota.rs`) and never touches uploads or pinned entries.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use tiercache_core::{Digest, now_ms};
use tiercache_index::EntryRef;

use crate::{Cache, Error, telemetry};

/// How the pruner behaves.
#[derive(Debug, Clone)]
pub struct PrunerConfig {
    /// How often the background pruner runs a pass (in `serve`).
    pub interval: Duration,
    /// Orphan blobs younger than this are kept (a blob adopted by a rebuild waits for its entry).
    pub orphan_grace: Duration,
    /// Temp files of a live writer not written for this long are removed.
    pub temp_grace: Duration,
    /// Entries not read for this long are removed (every namespace with a source; a namespace's
    /// own max age applies to it whether or not it has one). `None`: no limit.
    pub max_age: Option<Duration>,
    /// Asked whether each namespace's owner still exists.
    pub owner_hook: Option<std::sync::Arc<dyn OwnerCheck>>,
    /// A namespace whose owner is gone is deleted once the hook has said so for this long.
    pub owner_grace: Duration,
}

impl Default for PrunerConfig {
    fn default() -> PrunerConfig {
        PrunerConfig {
            interval: Duration::from_secs(300),
            orphan_grace: Duration::from_secs(3600),
            temp_grace: Duration::from_secs(3600),
            max_age: None,
            owner_hook: None,
            owner_grace: Duration::from_secs(600),
        }
    }
}

/// Asks whether a namespace's owner still exists. The engine knows no command lines or HTTP: the
/// front door that runs the pruner (the CLI) supplies the check.
pub trait OwnerCheck: Send + Sync + std::fmt::Debug {
    /// `Some(true)` alive, `Some(false)` gone, `None` unknown (the namespace is kept).
    fn is_alive<'a>(&'a self, owner: &'a str) -> futures::future::BoxFuture<'a, Option<bool>>;
}

/// What one pass prunes. [`PruneOptions::all`] is what the background pruner does.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Orphan blobs.
    pub orphans: bool,
    /// Temp files of dead or stalled writers, and idle lock files.
    pub files: bool,
    /// Entries not read for this long (overrides the configured max age for this pass).
    pub older_than: Option<Duration>,
    /// The configured max ages (global and per namespace).
    pub max_age: bool,
    /// Namespaces' quotas and max entries.
    pub limits: bool,
    /// Namespaces of owners gone.
    pub owners: bool,
    /// Evict (by the eviction policy) until the disk tier holds at most this many bytes.
    pub max_size: Option<u64>,
    /// Only this namespace (entries by age and limits; owners).
    pub namespace: Option<String>,
    /// Orphan grace for this pass, instead of the configured one.
    pub orphan_grace: Option<Duration>,
    /// List, do not remove.
    pub dry_run: bool,
}

impl PruneOptions {
    /// Everything the configuration asks for.
    pub fn all() -> PruneOptions {
        PruneOptions { orphans: true, files: true, max_age: true, limits: true, owners: true, ..Default::default() }
    }
}

/// One thing pruned (or, in a dry run, to be pruned).
#[derive(Debug, Clone, Serialize)]
pub struct PrunedItem {
    /// `owner` (a namespace), `age` or `limit` (an entry), `orphan` or `evict` (a blob), `temp` or
    /// `lock` (a file).
    pub kind: &'static str,
    /// The namespace, for entries and namespaces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The key, for entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The blob, for entries and blobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// The file, for temp and lock files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Its size (for an entry: its blob's size, freed only if nothing else references the blob).
    pub bytes: u64,
}

/// What a pass removed (or would remove).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Whether this was a dry run (nothing removed).
    pub dry_run: bool,
    /// Namespaces deleted (owners gone).
    pub n_namespaces: u64,
    /// Entries removed.
    pub n_entries: u64,
    /// Blob files removed.
    pub n_blobs: u64,
    /// Temp and lock files removed.
    pub n_files: u64,
    /// Bytes freed on disk (blobs and temp files).
    pub freed_bytes: u64,
    /// Namespaces skipped because they were being read (owner gone; retried next pass).
    pub skipped_in_use: Vec<String>,
    /// Everything, in the order of the pass.
    pub items: Vec<PrunedItem>,
}

impl Cache {
    /// Runs one pruner pass.
    pub async fn prune(&self, opts: &PruneOptions) -> Result<PruneReport, Error> {
        self.flush().await?; // Last-access times must be current before judging age.
        let cfg = self.inner.config.pruner.clone();
        let mut report = PruneReport { dry_run: opts.dry_run, ..Default::default() };
        let namespaces = self.ix(|ix| ix.list_namespaces()).await?;
        let only = match &opts.namespace {
            Some(name) => {
                Some(namespaces.iter().find(|n| &n.name == name).ok_or_else(|| Error::NoNamespace(name.clone()))?.id)
            }
            None => None,
        };
        let names: HashMap<i64, String> = namespaces.iter().map(|n| (n.id, n.name.clone())).collect();

        if opts.owners
            && let Some(hook) = &cfg.owner_hook
        {
            for ns in namespaces.iter().filter(|n| only.is_none_or(|id| id == n.id)) {
                let Some(owner) = ns.options.owner.clone() else { continue };
                self.prune_owner(ns, &owner, hook.as_ref(), cfg.owner_grace, opts.dry_run, &mut report).await?;
            }
        }

        let mut doomed: Vec<(&'static str, EntryRef)> = Vec::new();
        let now = now_ms();
        let age = opts.older_than.or(if opts.max_age { cfg.max_age } else { None });
        if let Some(age) = age {
            let cutoff = now - age.as_millis() as i64;
            doomed.extend(
                self.ix(move |ix| ix.entries_not_read_since(only, cutoff)).await?.into_iter().map(|e| ("age", e)),
            );
        }
        if opts.max_age || opts.limits {
            for ns in namespaces.iter().filter(|n| only.is_none_or(|id| id == n.id)) {
                let o = &ns.options;
                if opts.max_age
                    && opts.older_than.is_none()
                    && let Some(ms) = o.max_age_ms
                {
                    let (id, cutoff) = (ns.id, now - ms as i64);
                    let found = self.ix(move |ix| ix.entries_not_read_since(Some(id), cutoff)).await?;
                    doomed.extend(found.into_iter().map(|e| ("age", e)));
                }
                if opts.limits && (o.quota_bytes.is_some() || o.max_entries.is_some()) {
                    let (id, q, m) = (ns.id, o.quota_bytes, o.max_entries);
                    let found = self.ix(move |ix| ix.entries_over_limits(id, q, m)).await?;
                    doomed.extend(found.into_iter().map(|e| ("limit", e)));
                }
            }
        }
        let mut seen = HashSet::new();
        doomed.retain(|(_, e)| seen.insert((e.ns_id, e.key.clone())));
        let mut unnamed: HashMap<i64, HashSet<Digest>> = HashMap::new();
        for (_, e) in &doomed {
            unnamed.entry(e.ns_id).or_default().insert(e.digest);
        }
        if !doomed.is_empty() {
            self.prune_entries(doomed, &names, opts.dry_run, &mut report).await?;
        }

        // Namespaces kept in their own directories: the files their entries no longer name (at
        // once for the entries just pruned; else, as orphans, after the orphan grace), and temp
        // files there.
        for ns in namespaces.iter().filter(|n| n.options.storage.is_some() && only.is_none_or(|id| id == n.id)) {
            let unnamed = unnamed.remove(&ns.id).unwrap_or_default();
            if unnamed.is_empty() && !opts.orphans && !opts.files {
                continue;
            }
            let grace = if opts.orphans { opts.orphan_grace.unwrap_or(cfg.orphan_grace) } else { Duration::MAX };
            let (blobs, temps) = self.sweep_dir_store(ns, grace, &unnamed, opts.dry_run).await?;
            for (d, bytes) in blobs {
                report.n_blobs += 1;
                report.freed_bytes += bytes;
                report.items.push(item("orphan", Some(ns.name.clone()), None, Some(d), None, bytes));
            }
            for (p, bytes) in temps {
                report.n_files += 1;
                report.freed_bytes += bytes;
                report.items.push(item(
                    "temp",
                    Some(ns.name.clone()),
                    None,
                    None,
                    Some(p.display().to_string()),
                    bytes,
                ));
            }
        }

        if opts.orphans {
            let grace = opts.orphan_grace.unwrap_or(cfg.orphan_grace);
            let cutoff = now_ms() - grace.as_millis() as i64;
            let orphans = self.ix(move |ix| ix.orphan_blobs(cutoff)).await?;
            let removed = if opts.dry_run || orphans.is_empty() {
                orphans
            } else {
                let digests: Vec<Digest> = orphans.iter().map(|(d, _)| *d).collect();
                let deleted: HashSet<Digest> =
                    self.ix(move |ix| ix.delete_orphans(&digests)).await?.into_iter().collect();
                let removed: Vec<(Digest, u64)> = orphans.into_iter().filter(|(d, _)| deleted.contains(d)).collect();
                self.delete_blob_files(0, removed.iter().map(|(d, _)| *d).collect()).await?;
                removed
            };
            for (d, bytes) in removed {
                report.n_blobs += 1;
                report.freed_bytes += bytes;
                report.items.push(item("orphan", None, None, Some(d), None, bytes));
            }
        }

        if opts.files {
            let (grace, dry) = (cfg.temp_grace, opts.dry_run);
            let (temps, locks) =
                self.blocking(move |disk| Ok((disk.prune_temp(grace, dry)?, disk.prune_locks(grace, dry)?))).await?;
            for (p, bytes) in temps {
                report.n_files += 1;
                report.freed_bytes += bytes;
                report.items.push(item("temp", None, None, None, Some(p.display().to_string()), bytes));
            }
            for p in locks {
                report.n_files += 1;
                report.items.push(item("lock", None, None, None, Some(p.display().to_string()), 0));
            }
        }

        if let Some(max) = opts.max_size {
            let (quota, dry) = (std::sync::Arc::clone(&self.inner.quota), opts.dry_run);
            let victims = self.ix(move |_| quota.evict_down_to(max, dry)).await?;
            for (d, bytes) in victims {
                report.n_blobs += 1;
                report.freed_bytes += bytes;
                report.items.push(item("evict", None, None, Some(d), None, bytes));
            }
        }
        if !opts.dry_run {
            let quota = std::sync::Arc::clone(&self.inner.quota);
            self.ix(move |_| {
                quota.resync()?;
                quota.evict_to_watermark();
                Ok(())
            })
            .await?;
            if !report.items.is_empty() {
                self.bump_lookup_generation().await?;
            }
            for i in &report.items {
                metrics::counter!(telemetry::PRUNED, "kind" => i.kind).increment(1);
            }
        }
        Ok(report)
    }

    async fn prune_owner(
        &self,
        ns: &tiercache_index::Namespace,
        owner: &str,
        hook: &dyn OwnerCheck,
        grace: Duration,
        dry_run: bool,
        report: &mut PruneReport,
    ) -> Result<(), Error> {
        let id = ns.id;
        let now = now_ms();
        let since = match hook.is_alive(owner).await {
            Some(true) => {
                if !dry_run {
                    self.ix(move |ix| ix.set_owner_dead_since(id, None)).await?;
                }
                return Ok(());
            }
            None => self.ix(move |ix| ix.owner_dead_since(id)).await?,
            Some(false) => {
                if !dry_run {
                    self.ix(move |ix| ix.set_owner_dead_since(id, Some(now))).await?;
                }
                Some(self.ix(move |ix| ix.owner_dead_since(id)).await?.unwrap_or(now))
            }
        };
        let Some(since) = since else { return Ok(()) };
        if now - since < grace.as_millis() as i64 {
            tracing::info!(namespace = ns.name, owner, "owner gone; namespace kept until the grace period ends");
            return Ok(());
        }
        if self.inner.quota.in_use.is_namespace_in_use(id) {
            report.skipped_in_use.push(ns.name.clone());
            return Ok(());
        }
        let bytes = if dry_run {
            // What deleting it would free: the blobs only it names.
            let usage = self.ix(|ix| ix.disk_usage()).await?;
            usage.namespaces.iter().find(|u| u.name == ns.name).map_or(0, |u| u.unique_bytes)
        } else {
            tracing::info!(namespace = ns.name, owner, "owner gone; deleting its namespace");
            let Some(removed) = self.delete_namespace(&ns.name).await? else { return Ok(()) };
            report.n_entries += removed.n_entries;
            report.n_blobs += removed.n_blobs;
            removed.bytes
        };
        report.freed_bytes += bytes;
        report.n_namespaces += 1;
        report.items.push(item("owner", Some(ns.name.clone()), None, None, None, bytes));
        Ok(())
    }

    async fn prune_entries(
        &self,
        doomed: Vec<(&'static str, EntryRef)>,
        names: &HashMap<i64, String>,
        dry_run: bool,
        report: &mut PruneReport,
    ) -> Result<(), Error> {
        if dry_run {
            // Freed: the blobs every one of whose references is in the list.
            let mut in_list: HashMap<Digest, (u64, u64)> = HashMap::new();
            for (_, e) in &doomed {
                in_list.entry(e.digest).or_insert((0, e.size_bytes)).0 += 1;
            }
            let digests: Vec<Digest> = in_list.keys().copied().collect();
            let refs = self.ix(move |ix| ix.reference_counts(&digests)).await?;
            for (d, (n, size)) in &in_list {
                if refs.get(d).copied().unwrap_or(0) <= *n {
                    report.n_blobs += 1;
                    report.freed_bytes += size;
                }
            }
            report.n_entries += doomed.len() as u64;
        } else {
            let list: Vec<EntryRef> = doomed.iter().map(|(_, e)| e.clone()).collect();
            let (n, orphans) = self.ix(move |ix| ix.delete_entries(&list)).await?;
            let removed = self.delete_blob_files(n, orphans).await?;
            report.n_entries += removed.n_entries;
            report.n_blobs += removed.n_blobs;
            report.freed_bytes += removed.bytes;
        }
        for (kind, e) in doomed {
            let ns = names.get(&e.ns_id).cloned();
            report.items.push(item(kind, ns, Some(e.key), Some(e.digest), None, e.size_bytes));
        }
        Ok(())
    }

    /// Starts the background pruner: a pass every `interval` (the first one `interval` after
    /// start), until the cache is dropped.
    pub fn spawn_pruner(&self) {
        let weak = std::sync::Arc::downgrade(&self.inner);
        let every = self.inner.config.pruner.interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let cache = Cache { inner };
                match cache.prune(&PruneOptions::all()).await {
                    Ok(r) if !r.items.is_empty() => tracing::info!(
                        n_entries = r.n_entries,
                        n_blobs = r.n_blobs,
                        n_files = r.n_files,
                        n_namespaces = r.n_namespaces,
                        freed_bytes = r.freed_bytes,
                        "pruned"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "pruner pass failed; will retry"),
                }
            }
        });
    }
}

fn item(
    kind: &'static str,
    namespace: Option<String>,
    key: Option<String>,
    digest: Option<Digest>,
    path: Option<String>,
    bytes: u64,
) -> PrunedItem {
    PrunedItem { kind, namespace, key, digest, path, bytes }
}
