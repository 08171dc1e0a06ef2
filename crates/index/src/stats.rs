//! Totals for `stats`: entries, blobs and bytes over the whole index and per namespace (a directory
//! namespace counted by its read cache's files).
//!
//! Read-only, and from the index alone: it does not look at the disk tier, so its figures are what
//! the index records. Disk use per place (`df`) is in `lifecycle.rs`.

use serde::Serialize;

use crate::index::{Index, Result};
use crate::namespaces::options_of;

/// Per-namespace totals.
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceStats {
    /// Namespace name.
    pub name: String,
    /// Bound source, if any (serialized with its credentials redacted).
    #[serde(serialize_with = "crate::namespaces::serialize_redacted")]
    pub source: Option<String>,
    /// Number of entries.
    pub n_entries: u64,
    /// Sum of entry sizes (a blob shared by two entries counts twice).
    pub bytes: u64,
    /// Oldest entry's creation time, ms.
    pub oldest_ms: Option<i64>,
    /// Newest entry's creation time, ms.
    pub newest_ms: Option<i64>,
    /// Sum of hits.
    pub hits: u64,
    /// For a directory namespace, its read cache (then `n_entries` and `bytes` count its files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<crate::DirStats>,
    /// The host directory holding its blobs; absent if managed (in the shared disk tier).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Owner label, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Whether its entries and listings are read without a token (the `public` option).
    #[serde(rename = "public")]
    pub is_public: bool,
}

/// Whole-index totals.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Number of entries over all namespaces.
    pub n_entries: u64,
    /// Sum of entry sizes.
    pub entry_bytes: u64,
    /// Oldest entry creation time, ms.
    pub oldest_ms: Option<i64>,
    /// Newest entry creation time, ms.
    pub newest_ms: Option<i64>,
    /// Number of present blobs.
    pub n_blobs: u64,
    /// Bytes of present blobs (each counted once): what the disk tier holds.
    pub blob_bytes: u64,
    /// Blobs no entry or derivation references (retained uploads included).
    pub n_unreferenced_blobs: u64,
    /// Per namespace, by name.
    pub namespaces: Vec<NamespaceStats>,
}

impl Index {
    /// Totals for the whole index, and per namespace (all, or only `only_ns`).
    pub fn stats(&self, only_ns: Option<&str>) -> Result<Stats> {
        self.read(|c| {
            let (n_entries, entry_bytes, oldest_ms, newest_ms): (i64, i64, Option<i64>, Option<i64>) = c.query_row(
                "SELECT count(*), coalesce(sum(size), 0), min(created_at), max(created_at) FROM entries",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            let (n_blobs, blob_bytes): (i64, i64) =
                c.query_row("SELECT count(*), coalesce(sum(size), 0) FROM blobs WHERE state = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let n_unreferenced: i64 = c.query_row(
                "SELECT count(*) FROM blobs b WHERE state = 1 AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.digest = b.digest)
                   AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = unhex(b.digest) AND f.is_copied = 1)
                   AND NOT EXISTS (SELECT 1 FROM derivations d WHERE d.output = b.digest)",
                [],
                |r| r.get(0),
            )?;
            let mut stmt = c.prepare(
                "SELECT n.name, n.source, count(e.key), coalesce(sum(e.size), 0), min(e.created_at), max(e.created_at),
                        coalesce(sum(e.hits), 0), n.id, n.options
                 FROM namespaces n LEFT JOIN entries e ON e.ns_id = n.id
                 WHERE ?1 IS NULL OR n.name = ?1
                 GROUP BY n.id ORDER BY n.name",
            )?;
            let namespaces = stmt
                .query_map([only_ns], |r| {
                    let options = options_of(r, 8)?;
                    Ok(NamespaceStats {
                        name: r.get(0)?,
                        source: r.get(1)?,
                        n_entries: r.get::<_, i64>(2)? as u64,
                        bytes: r.get::<_, i64>(3)? as u64,
                        oldest_ms: r.get(4)?,
                        newest_ms: r.get(5)?,
                        hits: r.get::<_, i64>(6)? as u64,
                        directory: None,
                        storage: options.storage,
                        owner: options.owner,
                        is_public: options.is_public,
                    })
                    .map(|s| (r.get::<_, i64>(7), s))
                })?
                .map(|r| r.and_then(|(id, s)| Ok((id?, s))))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let namespaces = namespaces
                .into_iter()
                .map(|(id, mut ns)| {
                    if ns.source.as_deref().is_some_and(|s| s.starts_with("file://")) {
                        let d = crate::files::dir_stats_on(c, id)?;
                        ns.n_entries = d.n_files;
                        ns.bytes = d.bytes;
                        ns.oldest_ms = d.oldest_ms;
                        ns.newest_ms = d.newest_ms;
                        ns.directory = Some(d);
                    }
                    Ok(ns)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Stats {
                n_entries: n_entries as u64,
                entry_bytes: entry_bytes as u64,
                oldest_ms,
                newest_ms,
                n_blobs: n_blobs as u64,
                blob_bytes: blob_bytes as u64,
                n_unreferenced_blobs: n_unreferenced as u64,
                namespaces,
            })
        })
    }
}
