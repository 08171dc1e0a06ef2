//! Maintenance (layer 4): start-up recovery and index rebuild, `stats`, `cleanup`, `verify`,
//! `vacuum`.
//!
//! Invariant: the index is a replica: recovery reconciles its pending rows with the disk tier on
//! every open, and a missing or reset index is rebuilt from the disk tier and the namespace
//! definitions.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;
use tiercache_core::{Digest, NamespaceName, now_ms};
use tiercache_index::{BlobState, Stats};

use super::Jobs;
use crate::Error;
use crate::blocking::blocking;
use crate::namespaces::read_definitions;
use crate::store::CleanupReport;

/// `stats`: the index's totals plus the database file's size.
#[derive(Debug, Clone, Serialize)]
pub struct StatsReport {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Size of `index.db` and its WAL.
    pub index_bytes: u64,
    /// Totals.
    #[serde(flatten)]
    pub stats: Stats,
    /// The shared tier's counters, summed over every process that used this data directory
    /// (`hits`, `misses`, `read_bytes`, `write_backs_*`, `errors`, `corrupt`, `breaker_trips`,
    /// `breaker_open`); empty if none ever used one.
    pub shared: std::collections::BTreeMap<String, i64>,
    /// The front doors' kept counters ([`crate::kept_counter`]), summed the same way: for the S3
    /// front door `s3.requests.<Operation>`, `s3.errors.<Code>`, `s3.bytes_in`, `s3.bytes_out`;
    /// empty if none ever counted. Derivations count `derive.<outcome>.<recipe>` here too.
    pub front: std::collections::BTreeMap<String, i64>,
    /// Derivation outputs present in the disk tier, by recipe.
    pub derivations: tiercache_index::DerivationStats,
}

/// `vacuum`: database size before and after.
#[derive(Debug, Clone, Serialize)]
pub struct VacuumReport {
    /// Bytes before.
    pub before_bytes: u64,
    /// Bytes after.
    pub after_bytes: u64,
    /// Bytes saved.
    pub saved_bytes: u64,
}

/// `verify`: what rehashing every blob and reconciling index and disk found (and repaired).
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Blob files rehashed.
    pub n_checked: u64,
    /// Their bytes.
    pub bytes_checked: u64,
    /// Files whose bytes do not hash to their name.
    pub corrupt: Vec<Digest>,
    /// Index rows whose file is missing.
    pub missing: Vec<Digest>,
    /// Files with no index row.
    pub untracked: Vec<Digest>,
    /// Files whose size differs from their index row.
    pub wrong_size: Vec<Digest>,
    /// Files under `blobs/` whose name is not a digest in its right place.
    pub strays: Vec<PathBuf>,
    /// Temp files left by processes that no longer run.
    pub stale_temp: Vec<PathBuf>,
    /// SQLite's own integrity problems.
    pub index_problems: Vec<String>,
    /// Whether `--repair` fixed everything found.
    pub repaired: bool,
}

impl VerifyReport {
    /// Whether nothing at all was wrong.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty()
            && self.missing.is_empty()
            && self.untracked.is_empty()
            && self.wrong_size.is_empty()
            && self.strays.is_empty()
            && self.stale_temp.is_empty()
            && self.index_problems.is_empty()
    }
}

impl Jobs {
    /// Start-up work on every open (`Cache::open`): temp files of dead processes are removed and
    /// pending blob rows reconciled with the disk tier; a new or reset index is rebuilt.
    pub(crate) async fn recover(&self, index_created: bool) -> Result<(), Error> {
        let disk = self.stores.managed().disk.clone();
        let swept = blocking(move || disk.sweep_temp()).await?;
        if swept.n_removed > 0 {
            tracing::info!(
                files = swept.n_removed,
                bytes = swept.bytes,
                "removed temp files left by stopped processes"
            );
        }
        let pending = self.ix.run(|ix| ix.pending_blobs()).await?;
        if !pending.is_empty() {
            let disk = self.stores.managed().disk.clone();
            let (present, gone): (Vec<_>, Vec<_>) = pending.into_iter().partition(|d| disk.contains(d));
            let sized: Vec<(Digest, u64)> = present
                .iter()
                .filter_map(|d| std::fs::metadata(disk.blob_path(d)).ok().map(|m| (*d, m.len())))
                .collect();
            tracing::info!(adopted = sized.len(), dropped = gone.len(), "reconciled blobs pending at the last stop");
            let now = now_ms();
            self.ix.run(move |ix| ix.adopt_blobs(&sized, now)).await?;
            self.ix.run(move |ix| ix.forget_blobs(&gone)).await?;
        }
        if index_created {
            self.rebuild().await?;
        }
        Ok(())
    }

    /// Rebuilds a new, empty index from the namespace definitions and the disk tier.
    async fn rebuild(&self) -> Result<(), Error> {
        let data_dir = self.stores.data_dir().to_owned();
        let defs = blocking(move || Ok(read_definitions(&data_dir))).await?;
        let disk = self.stores.managed().disk.clone();
        let listed = blocking(move || disk.list()).await?;
        if defs.is_empty() && listed.is_empty() {
            return Ok(()); // A brand-new data directory.
        }
        tracing::warn!(
            namespaces = defs.len(),
            blobs = listed.len(),
            "index database was missing or reset: rebuilding it from the disk tier and namespace definitions"
        );
        for def in defs {
            let Ok(name) = NamespaceName::new(&def.name) else { continue };
            self.ix
                .run(move |ix| {
                    let (ns, _) = ix.put_namespace(&name, def.source.as_deref(), &def.options, now_ms())?;
                    for key in &def.pins {
                        ix.put_pin(ns.id, key)?;
                    }
                    Ok(())
                })
                .await?;
        }
        let blobs: Vec<(Digest, u64)> = listed.into_iter().filter_map(Result::ok).collect();
        let total = blobs.len();
        let t0 = Instant::now();
        for (i, batch) in blobs.chunks(1000).enumerate() {
            let batch = batch.to_vec();
            self.ix.run(move |ix| ix.adopt_blobs(&batch, now_ms())).await?;
            let done = (i * 1000 + 1000).min(total);
            tracing::info!(done, total, "rebuilding index: {}%", done * 100 / total.max(1));
        }
        tracing::warn!(
            blobs = total,
            elapsed_ms = t0.elapsed().as_millis() as u64,
            "index rebuilt; entries are re-resolved from their sources on first read"
        );
        Ok(())
    }

    /// Totals, overall and per namespace (or just `only_ns`).
    pub(crate) async fn stats(&self, only_ns: Option<&str>) -> Result<StatsReport, Error> {
        if let Some(ns) = only_ns {
            self.namespaces.fresh(ns).await?;
        }
        self.flush().await?;
        let only = only_ns.map(str::to_owned);
        let stats = self.ix.run(move |ix| ix.stats(only.as_deref())).await?;
        let shared = self.shared_counters().await?;
        let front = self.kept_counters().await?;
        let derivations = self.ix.run(|ix| ix.derivation_stats()).await?;
        Ok(StatsReport {
            data_dir: self.stores.data_dir().to_owned(),
            index_bytes: self.ix.index().file_bytes(),
            stats,
            shared,
            front,
            derivations,
        })
    }

    /// Removes the entries of namespace `ns` (those whose key starts with `prefix`, if given), or of
    /// every namespace if `ns` is `None`, then the blobs no namespace references any more.
    pub(crate) async fn cleanup(&self, ns: Option<&str>, prefix: Option<&str>) -> Result<CleanupReport, Error> {
        let namespace = match ns {
            Some(name) => Some(self.namespaces.fresh(name).await?),
            None => None,
        };
        let ns_id = namespace.as_ref().map(|n| n.id);
        // Namespaces stored in their own directories, with the blobs their entries name now.
        let stored_elsewhere = match namespace {
            Some(ns) => vec![ns],
            None => self.namespaces.list().await?,
        };
        let mut named_before = Vec::new();
        for ns in stored_elsewhere.into_iter().filter(|n| n.options.storage.is_some()) {
            let id = ns.id;
            let blobs: std::collections::HashSet<Digest> =
                self.ix.run(move |ix| ix.namespace_blobs(id)).await?.into_iter().map(|(d, _)| d).collect();
            named_before.push((ns, blobs));
        }
        let prefix = prefix.map(str::to_owned);
        let (n_entries, orphans) = self.ix.run(move |ix| ix.cleanup(ns_id, prefix.as_deref())).await?;
        let mut report = self.stores.delete_blob_files(n_entries, orphans).await?;
        let graces = (self.config.pruner.orphan_grace, self.config.pruner.temp_grace);
        for (ns, named) in &named_before {
            let (blobs, _) = self.stores.sweep_dir_store(ns, graces, named, false).await?;
            report.n_blobs += blobs.len() as u64;
            report.bytes += blobs.iter().map(|(_, n)| n).sum::<u64>();
        }
        Ok(report)
    }

    /// Disk use of the disk tier, overall and per namespace, from the index alone.
    pub(crate) async fn disk_usage(&self) -> Result<tiercache_index::DiskUsage, Error> {
        self.ix.run(|ix| ix.disk_usage()).await
    }

    /// Compacts the index file.
    pub(crate) async fn vacuum(&self) -> Result<VacuumReport, Error> {
        self.flush().await?;
        let before = self.ix.index().file_bytes();
        self.ix.run(|ix| ix.vacuum()).await?;
        let after = self.ix.index().file_bytes();
        Ok(VacuumReport { before_bytes: before, after_bytes: after, saved_bytes: before.saturating_sub(after) })
    }

    /// Rehashes every blob in the disk tier and reconciles it with the index. With `repair`:
    /// corrupt and wrongly sized files are deleted along with their rows and entries (they will be
    /// fetched again), rows of missing files are dropped, untracked files are adopted, stray files
    /// and dead processes' temp files are removed.
    ///
    /// `progress(bytes_done, bytes_total)` is called as hashing advances.
    pub(crate) async fn verify(
        &self,
        repair: bool,
        progress: impl Fn(u64, u64) + Send + Sync + 'static,
    ) -> Result<VerifyReport, Error> {
        self.flush().await?;
        let rows = self.ix.run(|ix| ix.list_blobs()).await?;
        let index_problems = self.ix.run(|ix| ix.integrity_check()).await?;
        let disk = self.stores.managed().disk.clone();
        let mut report = blocking(move || {
            let listed = disk.list()?;
            let stale_temp = disk.stale_temp()?;
            // An absent row names a blob kept in a namespace's own directory, not here.
            let rows: std::collections::HashMap<Digest, (u64, BlobState)> = rows
                .into_iter()
                .filter(|r| r.state != BlobState::Absent)
                .map(|r| (r.digest, (r.size_bytes, r.state)))
                .collect();
            let mut report = VerifyReport { stale_temp, index_problems, ..VerifyReport::default() };
            let mut files = Vec::new();
            for item in listed {
                match item {
                    Ok((d, len)) => files.push((d, len)),
                    Err(p) => report.strays.push(p),
                }
            }
            let on_disk: std::collections::HashSet<Digest> = files.iter().map(|(d, _)| *d).collect();
            report.missing = rows.keys().filter(|d| !on_disk.contains(d)).copied().collect();
            for (d, len) in &files {
                match rows.get(d) {
                    None => report.untracked.push(*d),
                    Some((size, _)) if size != len => report.wrong_size.push(*d),
                    _ => {}
                }
            }
            let total: u64 = files.iter().map(|(_, l)| l).sum();
            let (next, done) = (AtomicUsize::new(0), AtomicU64::new(0));
            let corrupt = std::sync::Mutex::new(Vec::new());
            let n_threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
            std::thread::scope(|s| {
                for _ in 0..n_threads {
                    s.spawn(|| {
                        while let Some((d, len)) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
                            if crate::fs::sha256_of_file(&disk.blob_path(d)).ok() != Some(*d) {
                                corrupt.lock().unwrap_or_else(|p| p.into_inner()).push(*d);
                            }
                            progress(done.fetch_add(*len, Ordering::Relaxed) + len, total);
                        }
                    });
                }
            });
            report.corrupt = corrupt.into_inner().unwrap_or_else(|p| p.into_inner());
            report.corrupt.sort();
            report.n_checked = files.len() as u64;
            report.bytes_checked = total;
            Ok(report)
        })
        .await?;
        if repair && !report.is_clean() {
            self.repair(&report).await?;
            report.repaired = report.index_problems.is_empty();
        }
        Ok(report)
    }

    async fn repair(&self, report: &VerifyReport) -> Result<(), Error> {
        let bad: Vec<Digest> = report.corrupt.iter().chain(&report.wrong_size).copied().collect();
        let mut forget = bad.clone();
        forget.extend(&report.missing);
        let n = self.ix.run(move |ix| ix.forget_blobs(&forget)).await?;
        tracing::warn!(entries = n, "dropped entries whose blobs were corrupt or missing; they will be fetched again");
        let (untracked, strays, temps) = (report.untracked.clone(), report.strays.clone(), report.stale_temp.clone());
        let disk = self.stores.managed().disk.clone();
        let adopted = blocking(move || {
            for d in &bad {
                disk.delete(d)?;
            }
            for p in strays.iter().chain(&temps) {
                if p.is_dir() { std::fs::remove_dir_all(p)? } else { std::fs::remove_file(p)? }
            }
            Ok(untracked
                .iter()
                .filter_map(|d| std::fs::metadata(disk.blob_path(d)).ok().map(|m| (*d, m.len())))
                .collect::<Vec<_>>())
        })
        .await?;
        self.ix.run(move |ix| ix.adopt_blobs(&adopted, now_ms())).await
    }
}
