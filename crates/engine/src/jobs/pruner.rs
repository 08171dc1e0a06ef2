//! The pruner (layer 4): one pass removes what nothing needs any more, and a background task runs a pass
//! every `interval`.
//!
//! A pass, in order: namespaces whose owner the liveness hook has reported gone for longer than
//! the grace period (never one being read); entries not read for longer than the max age (really
//! by last access) and entries past their namespace's quota or max entries; orphan blobs (nothing
//! references them, not uploads) older than the orphan grace; temp files of dead or stalled
//! writers; idle lock files; multipart uploads older than `multipart_max_age` (abandoned: aborted
//! with their parts) and what no upload needs under `<data>/uploads/`; and, above the disk quota's high watermark, eviction. With `dry_run`
//! it lists what it would remove, and the bytes that would be freed, and changes nothing.
//!
//! It does not decide eviction order (`quota.rs`) and never touches uploads or pinned entries. It
//! asks whether an owner is alive through an [`OwnerCheck`] it is given, and knows nothing of how
//! that check asks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tiercache_core::units::cutoff_ms;
use tiercache_core::{Digest, now_ms};
use tiercache_index::EntryRef;

use super::Jobs;
use crate::blocking::blocking;
use crate::config::OwnerCheck;
use crate::{Error, telemetry};

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
    /// Multipart uploads older than the configured `multipart_max_age`, and the files under
    /// `<data>/uploads/` no upload needs.
    pub uploads: bool,
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
        PruneOptions {
            orphans: true,
            files: true,
            max_age: true,
            limits: true,
            owners: true,
            uploads: true,
            ..Default::default()
        }
    }
}

/// One thing pruned (or, in a dry run, to be pruned).
#[derive(Debug, Clone, Serialize)]
pub struct PrunedItem {
    /// `owner` (a namespace), `age` or `limit` (an entry), `orphan` or `evict` (a blob), `temp` or
    /// `lock` (a file), `upload` (a multipart upload abandoned: its namespace and key, its id as
    /// `path`, its parts' bytes).
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
    /// Multipart uploads aborted as abandoned.
    pub n_uploads: u64,
    /// Bytes freed on disk (blobs and temp files).
    pub freed_bytes: u64,
    /// Namespaces skipped because they were being read (owner gone; retried next pass).
    pub skipped_in_use: Vec<String>,
    /// Everything, in the order of the pass.
    pub items: Vec<PrunedItem>,
}

impl Jobs {
    /// Runs one pruner pass.
    pub(crate) async fn prune(&self, opts: &PruneOptions) -> Result<PruneReport, Error> {
        self.flush().await?; // Last-access times must be current before judging age.
        let cfg = self.config.pruner.clone();
        let mut report = PruneReport { dry_run: opts.dry_run, ..Default::default() };
        let namespaces = self.namespaces.list().await?;
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
                self.prune_owner(ns, &owner, hook, cfg.owner_grace, opts.dry_run, &mut report).await?;
            }
        }

        let mut doomed: Vec<(&'static str, EntryRef)> = Vec::new();
        let now = now_ms();
        let age = opts.older_than.or(if opts.max_age { cfg.max_age } else { None });
        if let Some(age) = age {
            let cutoff = cutoff_ms(now, age);
            doomed.extend(
                self.ix.run(move |ix| ix.entries_not_read_since(only, cutoff)).await?.into_iter().map(|e| ("age", e)),
            );
        }
        if opts.max_age || opts.limits {
            for ns in namespaces.iter().filter(|n| only.is_none_or(|id| id == n.id)) {
                let o = &ns.options;
                if opts.max_age
                    && opts.older_than.is_none()
                    && let Some(ms) = o.max_age_ms
                {
                    let (id, cutoff) = (ns.id, cutoff_ms(now, Duration::from_millis(ms)));
                    let found = self.ix.run(move |ix| ix.entries_not_read_since(Some(id), cutoff)).await?;
                    doomed.extend(found.into_iter().map(|e| ("age", e)));
                }
                if opts.limits && (o.quota_bytes.is_some() || o.max_entries.is_some()) {
                    let (id, q, m) = (ns.id, o.quota_bytes, o.max_entries);
                    let found = self.ix.run(move |ix| ix.entries_over_limits(id, q, m)).await?;
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
            let (blobs, temps) =
                self.stores.sweep_dir_store(ns, (grace, cfg.temp_grace), &unnamed, opts.dry_run).await?;
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
            let cutoff = cutoff_ms(now_ms(), grace);
            let orphans = self.ix.run(move |ix| ix.orphan_blobs(cutoff)).await?;
            let removed = if opts.dry_run || orphans.is_empty() {
                orphans
            } else {
                let digests: Vec<Digest> = orphans.iter().map(|(d, _)| *d).collect();
                let deleted: HashSet<Digest> =
                    self.ix.run(move |ix| ix.delete_orphans(&digests)).await?.into_iter().collect();
                let removed: Vec<(Digest, u64)> = orphans.into_iter().filter(|(d, _)| deleted.contains(d)).collect();
                self.stores.delete_blob_files(0, removed.iter().map(|(d, _)| *d).collect()).await?;
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
            let disk = self.stores.managed().disk.clone();
            let (temps, locks) =
                blocking(move || Ok((disk.prune_temp(grace, dry)?, disk.prune_locks(grace, dry)?))).await?;
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

        if opts.uploads {
            let removed = self.uploads.prune(self.config.multipart_max_age, opts.dry_run).await?;
            for (u, bytes) in removed {
                report.n_uploads += 1;
                report.freed_bytes += bytes;
                let id = Some(u.upload_id.to_string());
                report.items.push(item("upload", Some(u.namespace), Some(u.key), None, id, bytes));
            }
            for (p, bytes) in self.uploads.sweep(cfg.temp_grace, opts.dry_run).await? {
                report.n_files += 1;
                report.freed_bytes += bytes;
                report.items.push(item("temp", None, None, None, Some(p.display().to_string()), bytes));
            }
        }

        if let Some(max) = opts.max_size {
            let (quota, dry) = (Arc::clone(&self.stores.managed().quota), opts.dry_run);
            let victims = self.ix.run(move |_| quota.evict_down_to(max, dry)).await?;
            for (d, bytes) in victims {
                report.n_blobs += 1;
                report.freed_bytes += bytes;
                report.items.push(item("evict", None, None, Some(d), None, bytes));
            }
        }
        if !opts.dry_run {
            let quota = Arc::clone(&self.stores.managed().quota);
            self.ix
                .run(move |_| {
                    quota.resync()?;
                    quota.evict_to_watermark();
                    Ok(())
                })
                .await?;
            if !report.items.is_empty() {
                self.memory.bump_generation().await?;
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
        hook: &Arc<dyn OwnerCheck>,
        grace: Duration,
        dry_run: bool,
        report: &mut PruneReport,
    ) -> Result<(), Error> {
        let id = ns.id;
        let now = now_ms();
        let since = match hook.is_alive(owner).await {
            Some(true) => {
                if !dry_run {
                    self.ix.run(move |ix| ix.set_owner_dead_since(id, None)).await?;
                }
                return Ok(());
            }
            None => self.ix.run(move |ix| ix.owner_dead_since(id)).await?,
            Some(false) => {
                if !dry_run {
                    self.ix.run(move |ix| ix.set_owner_dead_since(id, Some(now))).await?;
                }
                Some(self.ix.run(move |ix| ix.owner_dead_since(id)).await?.unwrap_or(now))
            }
        };
        let Some(since) = since else { return Ok(()) };
        if since > cutoff_ms(now, grace) {
            tracing::info!(namespace = ns.name, owner, "owner gone; namespace kept until the grace period ends");
            return Ok(());
        }
        if self.stores.managed().quota.in_use.is_namespace_in_use(id) {
            report.skipped_in_use.push(ns.name.clone());
            return Ok(());
        }
        let bytes = if dry_run {
            // What deleting it would free: the blobs only it names.
            let usage = self.ix.run(|ix| ix.disk_usage()).await?;
            usage.namespaces.iter().find(|u| u.name == ns.name).map_or(0, |u| u.unique_bytes)
        } else {
            tracing::info!(namespace = ns.name, owner, "owner gone; deleting its namespace");
            let Some(removed) = self.namespaces.delete(&ns.name).await? else { return Ok(()) };
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
            let refs = self.ix.run(move |ix| ix.reference_counts(&digests)).await?;
            for (d, (n, size)) in &in_list {
                if refs.get(d).copied().unwrap_or(0) <= *n {
                    report.n_blobs += 1;
                    report.freed_bytes += size;
                }
            }
            report.n_entries += doomed.len() as u64;
        } else {
            let list: Vec<EntryRef> = doomed.iter().map(|(_, e)| e.clone()).collect();
            let (n, orphans) = self.ix.run(move |ix| ix.delete_entries(&list)).await?;
            let removed = self.stores.delete_blob_files(n, orphans).await?;
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
    /// start), until shutdown or until the cache is dropped.
    pub(crate) fn spawn_pruner(self: &Arc<Self>) {
        let every = self.config.pruner.interval;
        let first = tokio::time::Instant::now() + every;
        self.tasks.spawn_every(self, first, every, |jobs| async move {
            match jobs.prune(&PruneOptions::all()).await {
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
