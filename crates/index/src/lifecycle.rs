//! Queries of the lifecycle: what eviction may take, pins, what the pruner finds (orphans, entries
//! past their age or their namespace's limits, owners gone), and disk use per namespace (`df`).
//!
//! Every deletion here rechecks its conditions inside its transaction (another process may have
//! pinned an entry or referenced a blob since the candidates were listed), and returns the digests
//! whose files the caller must now unlink, after the commit.

use std::collections::{HashMap, HashSet};

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use tiercache_core::Digest;

use crate::blobs::{MANAGED_ENTRY, delete_orphan_blobs, release_blob_rows};
use crate::index::{Index, Result, digest_of};
use crate::namespaces::options_of;

/// An entry named for deletion by the pruner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EntryRef {
    /// Owning namespace id.
    #[serde(skip)]
    pub ns_id: i64,
    /// The key.
    pub key: String,
    /// The blob it names.
    pub digest: Digest,
    /// The blob's size.
    pub size_bytes: u64,
}

/// Disk use as `df` reports it, from the index alone.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DiskUsage {
    /// Present blobs in the disk tier, each counted once.
    pub n_blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Uploaded blobs (never evicted), and their bytes.
    pub n_uploads: u64,
    /// Bytes of uploaded blobs.
    pub upload_bytes: u64,
    /// Blobs nothing references and that are not uploads: what `prune --orphans` frees.
    pub n_orphans: u64,
    /// Bytes of orphans.
    pub orphan_bytes: u64,
    /// Bytes of blobs named by pinned entries.
    pub pinned_bytes: u64,
    /// Per namespace, by name.
    pub namespaces: Vec<NamespaceUsage>,
}

/// One namespace's share of the disk tier.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NamespaceUsage {
    /// Name.
    pub name: String,
    /// Owner label, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Entries (for a directory namespace: copies of its files in the disk tier).
    pub n_entries: u64,
    /// Sum of entry sizes (a blob named by two keys counts twice).
    pub entry_bytes: u64,
    /// Distinct blobs named, and their bytes (each counted once).
    pub n_blobs: u64,
    /// Bytes of distinct blobs named.
    pub blob_bytes: u64,
    /// Bytes of blobs only this namespace names: what deleting it frees.
    pub unique_bytes: u64,
    /// Bytes of blobs other namespaces name too.
    pub shared_bytes: u64,
    /// Unique bytes plus an equal share of each shared blob: these sum, over namespaces, to the
    /// referenced bytes of the disk tier.
    pub attributed_bytes: u64,
    /// Whether every entry is pinned.
    pub is_pinned: bool,
    /// Keys pinned one by one.
    pub n_pinned_keys: u64,
    /// The host directory holding this namespace's blobs; absent for a managed namespace (its
    /// blobs are in the shared disk tier). Its bytes are not part of the disk tier's totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
}

/// `(ns_id, digest)` for every blob of the disk tier a namespace references: its managed entries
/// (see [`MANAGED_ENTRY`]), and a directory namespace's copies in the disk tier.
const REFS: &str = "SELECT e.ns_id, e.digest FROM entries e
                        WHERE e.ns_id IN (SELECT id FROM namespaces WHERE storage IS NULL)
                    UNION SELECT ns_id, lower(hex(sha256)) FROM files WHERE is_copied = 1";

/// A present blob with no reference (managed entry or copied file).
const UNREFERENCED: &str = "NOT EXISTS (SELECT 1 FROM entries e WHERE e.digest = b.digest
                                    AND e.ns_id IN (SELECT id FROM namespaces WHERE storage IS NULL))
      AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = unhex(b.digest) AND f.is_copied = 1)";

/// Blob `b` is named by a managed entry of a namespace without a source: the only copy of its
/// bytes.
const ONLY_COPY: &str = "EXISTS (SELECT 1 FROM entries o JOIN namespaces n ON n.id = o.ns_id
                                 WHERE o.digest = b.digest AND n.source IS NULL AND n.storage IS NULL)";

/// An entry `e` that a pin covers.
const PINNED_ENTRY: &str = "EXISTS (SELECT 1 FROM pins p WHERE p.ns_id = e.ns_id AND (p.key = '' OR p.key = e.key))";

impl Index {
    /// Blobs eviction may take (present, not uploads), least recently read first, with the hits
    /// of the entries naming them; for rebuilding the eviction policy at start.
    pub fn evictable_blobs(&self) -> Result<Vec<(Digest, u64, u64)>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT b.digest, b.size, coalesce((SELECT sum(e.hits) FROM entries e WHERE e.digest = b.digest), 0)
                 FROM blobs b WHERE b.state = 1 AND b.is_upload = 0 AND NOT {ONLY_COPY}
                 ORDER BY b.last_access, b.digest"
            ))?;
            let rows = stmt
                .query_map([], |r| Ok((digest_of(r.get(0)?)?, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Bytes of present blobs (what the disk tier holds, by the index).
    pub fn present_bytes(&self) -> Result<u64> {
        self.read(|c| {
            Ok(c.query_row("SELECT coalesce(sum(size), 0) FROM blobs WHERE state = 1", [], |r| r.get::<_, i64>(0))?
                as u64)
        })
    }

    /// Digests of blobs named by pinned entries.
    pub fn pinned_digests(&self) -> Result<HashSet<Digest>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT DISTINCT e.digest FROM entries e WHERE {MANAGED_ENTRY} AND {PINNED_ENTRY}"
            ))?;
            let rows = stmt.query_map([], |r| digest_of(r.get(0)?))?.collect::<rusqlite::Result<HashSet<_>>>()?;
            Ok(rows)
        })
    }

    /// Evicts blobs: deletes every entry naming each one and its row, skipping (and keeping) any
    /// that is an upload, pinned, or gone. Returns the entries removed and the digests evicted,
    /// whose files the caller must now delete.
    pub fn evict_blobs(&self, digests: &[Digest]) -> Result<(u64, Vec<Digest>)> {
        self.write(|tx| {
            let mut n_entries = 0;
            let mut evicted = Vec::with_capacity(digests.len());
            for d in digests {
                let hex = d.hex();
                let is_evictable: bool = tx.query_row(
                    &format!(
                        "SELECT count(*) > 0 FROM blobs b WHERE b.digest = ?1 AND b.state = 1 AND b.is_upload = 0
                           AND NOT {ONLY_COPY}
                           AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.digest = b.digest AND {MANAGED_ENTRY}
                                             AND {PINNED_ENTRY})"
                    ),
                    [&hex],
                    |r| r.get(0),
                )?;
                if !is_evictable {
                    continue;
                }
                n_entries += tx
                    .execute(&format!("DELETE FROM entries AS e WHERE e.digest = ?1 AND {MANAGED_ENTRY}"), [&hex])?
                    as u64;
                tx.execute("UPDATE files SET is_copied = 0 WHERE sha256 = unhex(?1) AND is_copied = 1", [&hex])?;
                evicted.push(*d);
            }
            release_blob_rows(tx, &evicted)?;
            Ok((n_entries, evicted))
        })
    }

    // ---- pins ----

    /// Pins `key` of namespace `ns_id` (`""`: every entry of it). Returns whether it was new.
    pub fn put_pin(&self, ns_id: i64, key: &str) -> Result<bool> {
        self.write(|tx| {
            Ok(tx
                .execute("INSERT INTO pins (ns_id, key) VALUES (?1, ?2) ON CONFLICT DO NOTHING", params![ns_id, key])?
                > 0)
        })
    }

    /// Removes a pin. Returns whether there was one.
    pub fn delete_pin(&self, ns_id: i64, key: &str) -> Result<bool> {
        self.write(|tx| Ok(tx.execute("DELETE FROM pins WHERE ns_id = ?1 AND key = ?2", params![ns_id, key])? > 0))
    }

    /// The pins of namespace `ns_id`, in key order (`""` first: the whole namespace).
    pub fn pins(&self, ns_id: i64) -> Result<Vec<String>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT key FROM pins WHERE ns_id = ?1 ORDER BY key")?;
            let rows = stmt.query_map([ns_id], |r| r.get(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    // ---- pruner ----

    /// Orphans: present blobs that are not uploads, that nothing references, created before
    /// `cutoff_ms`; with their sizes.
    pub fn orphan_blobs(&self, cutoff_ms: i64) -> Result<Vec<(Digest, u64)>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT b.digest, b.size FROM blobs b WHERE b.state = 1 AND b.is_upload = 0 AND b.created_at < ?1
                   AND {UNREFERENCED} ORDER BY b.digest"
            ))?;
            let rows = stmt
                .query_map([cutoff_ms], |r| Ok((digest_of(r.get(0)?)?, r.get::<_, i64>(1)? as u64)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Deletes the rows of `digests` that are still orphans (see [`Index::orphan_blobs`]); returns
    /// those deleted.
    pub fn delete_orphans(&self, digests: &[Digest]) -> Result<Vec<Digest>> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "SELECT count(*) > 0 FROM blobs AS b
                 WHERE b.digest = ?1 AND b.state = 1 AND b.is_upload = 0 AND {UNREFERENCED}"
            ))?;
            let mut deleted = Vec::new();
            for d in digests {
                if stmt.query_row([d.hex()], |r| r.get::<_, bool>(0))? {
                    deleted.push(*d);
                }
            }
            drop(stmt);
            release_blob_rows(tx, &deleted)?;
            Ok(deleted)
        })
    }

    /// Unpinned entries not read since `cutoff_ms` (from `tiercache_core::units::cutoff_ms`, which
    /// saturates: no age selects an entry read after it), oldest first: of namespace `ns_id`, or of
    /// every namespace with a source (without one, an entry may be the only copy of its bytes).
    pub fn entries_not_read_since(&self, ns_id: Option<i64>, cutoff_ms: i64) -> Result<Vec<EntryRef>> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT e.ns_id, e.key, e.digest, e.size FROM entries e
                 WHERE e.last_access < ?1 AND NOT {PINNED_ENTRY}
                   AND (e.ns_id = ?2 OR (?2 IS NULL AND
                        EXISTS (SELECT 1 FROM namespaces n WHERE n.id = e.ns_id AND n.source IS NOT NULL)))
                 ORDER BY e.last_access, e.ns_id, e.key"
            ))?;
            let rows = stmt.query_map(params![cutoff_ms, ns_id], entry_ref)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// The unpinned entries of `ns_id` past its limits: counting from the most recently read,
    /// those beyond `max_entries` or after the running sum of sizes passes `quota_bytes`, where
    /// a blob named by several keys counts once (at its most recently read entry: what the
    /// namespace holds on disk). Pinned entries count towards the limits but are never named.
    pub fn entries_over_limits(
        &self,
        ns_id: i64,
        quota_bytes: Option<u64>,
        max_entries: Option<u64>,
    ) -> Result<Vec<EntryRef>> {
        // Beyond what SQLite's integers hold is no limit at all.
        let quota = quota_bytes.map_or(i64::MAX, |q| i64::try_from(q).unwrap_or(i64::MAX));
        let max_n = max_entries.map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT ns_id, key, digest, size FROM (
                     SELECT ns_id, key, digest, size, is_pinned,
                            sum(CASE WHEN nth_of_blob = 1 THEN size ELSE 0 END) OVER w AS running,
                            row_number() OVER w AS n
                     FROM (SELECT e.ns_id, e.key, e.digest, e.size, e.last_access, {PINNED_ENTRY} AS is_pinned,
                                  row_number() OVER (PARTITION BY e.digest ORDER BY e.last_access DESC, e.key DESC)
                                      AS nth_of_blob
                           FROM entries e WHERE e.ns_id = ?1)
                     WINDOW w AS (ORDER BY last_access DESC, key DESC ROWS UNBOUNDED PRECEDING))
                 WHERE NOT is_pinned AND (running > ?2 OR n > ?3)
                 ORDER BY n DESC"
            ))?;
            let rows =
                stmt.query_map(params![ns_id, quota, max_n], entry_ref)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Deletes the given entries (still unpinned ones only), then the rows of blobs nothing
    /// references any more (unless retained). Returns the entries removed and the digests whose
    /// files the caller must delete.
    pub fn delete_entries(&self, entries: &[EntryRef]) -> Result<(u64, Vec<Digest>)> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "DELETE FROM entries AS e WHERE e.ns_id = ?1 AND e.key = ?2 AND e.digest = ?3 AND NOT {PINNED_ENTRY}"
            ))?;
            let mut n = 0;
            for e in entries {
                n += stmt.execute(params![e.ns_id, e.key, e.digest.hex()])? as u64;
            }
            drop(stmt);
            Ok((n, delete_orphan_blobs(tx)?))
        })
    }

    /// How many managed entries (and copied files) reference each of `digests` in the disk tier.
    pub fn reference_counts(&self, digests: &[Digest]) -> Result<HashMap<Digest, u64>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT (SELECT count(*) FROM entries e WHERE e.digest = ?1 AND {MANAGED_ENTRY})
                      + (SELECT count(*) FROM files WHERE sha256 = unhex(?1) AND is_copied = 1)"
            ))?;
            let mut out = HashMap::with_capacity(digests.len());
            for d in digests {
                out.insert(*d, stmt.query_row([d.hex()], |r| r.get::<_, i64>(0))? as u64);
            }
            Ok(out)
        })
    }

    /// When the owner-liveness hook first said `ns_id`'s owner is gone (ms), if it did.
    pub fn owner_dead_since(&self, ns_id: i64) -> Result<Option<i64>> {
        self.read(|c| {
            Ok(c.query_row("SELECT owner_dead_since FROM namespaces WHERE id = ?1", [ns_id], |r| r.get(0))
                .optional()?
                .flatten())
        })
    }

    /// Records (or clears, with `None`) when `ns_id`'s owner was first seen gone; an earlier
    /// record is kept.
    pub fn set_owner_dead_since(&self, ns_id: i64, since_ms: Option<i64>) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE namespaces SET owner_dead_since = CASE WHEN ?2 IS NULL THEN NULL
                     ELSE coalesce(owner_dead_since, ?2) END WHERE id = ?1",
                params![ns_id, since_ms],
            )?;
            Ok(())
        })
    }

    // ---- df ----

    /// Disk use of the disk tier, overall and per namespace, from the index (no directory walk).
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        self.read(|c| {
            let mut u = DiskUsage::default();
            (u.n_blobs, u.blob_bytes, u.n_uploads, u.upload_bytes) = c.query_row(
                "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(is_upload), 0),
                        coalesce(sum(CASE WHEN is_upload = 1 THEN size ELSE 0 END), 0)
                 FROM blobs WHERE state = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)? as u64,
                        r.get::<_, i64>(1)? as u64,
                        r.get::<_, i64>(2)? as u64,
                        r.get::<_, i64>(3)? as u64,
                    ))
                },
            )?;
            (u.n_orphans, u.orphan_bytes) = c.query_row(
                &format!(
                    "SELECT count(*), coalesce(sum(size), 0) FROM blobs b
                     WHERE b.state = 1 AND b.is_upload = 0 AND {UNREFERENCED}"
                ),
                [],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )?;
            u.pinned_bytes = c.query_row(
                &format!(
                    "SELECT coalesce(sum(size), 0) FROM blobs WHERE state = 1 AND digest IN
                         (SELECT e.digest FROM entries e WHERE {MANAGED_ENTRY} AND {PINNED_ENTRY})"
                ),
                [],
                |r| r.get::<_, i64>(0),
            )? as u64;
            let mut stmt = c.prepare(&format!(
                // A shared blob's bytes are split in whole bytes: each of its n namespaces gets
                // size / n, and the first size % n of them (by id) one byte more, so the shares
                // sum to the blob's size exactly. A namespace stored in its own directory holds
                // each blob it names alone.
                "WITH refs AS ({REFS}),
                      shares AS (
                          SELECT r.ns_id, b.size, count(*) OVER (PARTITION BY r.digest) AS n_ns,
                                 row_number() OVER (PARTITION BY r.digest ORDER BY r.ns_id) AS nth
                          FROM refs r JOIN blobs b ON b.digest = r.digest AND b.state = 1),
                      per_ns AS (
                          SELECT ns_id, count(*) AS n_blobs, sum(size) AS bytes,
                                 sum(CASE WHEN n_ns = 1 THEN size ELSE 0 END) AS unique_bytes,
                                 sum(size / n_ns + (nth <= size % n_ns)) AS attributed
                          FROM shares GROUP BY ns_id),
                      elsewhere AS (
                          SELECT ns_id, count(*) AS n_blobs, sum(size) AS bytes
                          FROM (SELECT DISTINCT e.ns_id, e.digest, e.size FROM entries e
                                WHERE e.ns_id IN (SELECT id FROM namespaces WHERE storage IS NOT NULL))
                          GROUP BY ns_id),
                      ents AS (SELECT ns_id, count(*) AS n, sum(size) AS bytes FROM entries GROUP BY ns_id)
                 SELECT n.name, n.options, coalesce(ents.n, 0), coalesce(ents.bytes, 0),
                        coalesce(p.n_blobs, x.n_blobs, 0), coalesce(p.bytes, x.bytes, 0),
                        coalesce(p.unique_bytes, x.bytes, 0), coalesce(p.attributed, x.bytes, 0),
                        EXISTS (SELECT 1 FROM pins WHERE pins.ns_id = n.id AND pins.key = ''),
                        (SELECT count(*) FROM pins WHERE pins.ns_id = n.id AND pins.key != ''),
                        n.storage
                 FROM namespaces n LEFT JOIN per_ns p ON p.ns_id = n.id LEFT JOIN elsewhere x ON x.ns_id = n.id
                      LEFT JOIN ents ON ents.ns_id = n.id
                 ORDER BY n.name"
            ))?;
            u.namespaces = stmt
                .query_map([], |r| {
                    let owner = options_of(r, 1)?.owner;
                    let blob_bytes = r.get::<_, i64>(5)? as u64;
                    let unique_bytes = r.get::<_, i64>(6)? as u64;
                    Ok(NamespaceUsage {
                        name: r.get(0)?,
                        owner,
                        n_entries: r.get::<_, i64>(2)? as u64,
                        entry_bytes: r.get::<_, i64>(3)? as u64,
                        n_blobs: r.get::<_, i64>(4)? as u64,
                        blob_bytes,
                        unique_bytes,
                        shared_bytes: blob_bytes - unique_bytes,
                        attributed_bytes: r.get::<_, i64>(7)? as u64,
                        is_pinned: r.get(8)?,
                        n_pinned_keys: r.get::<_, i64>(9)? as u64,
                        storage: r.get(10)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(u)
        })
    }
}

fn entry_ref(r: &rusqlite::Row<'_>) -> rusqlite::Result<EntryRef> {
    Ok(EntryRef {
        ns_id: r.get(0)?,
        key: r.get(1)?,
        digest: digest_of(r.get(2)?)?,
        size_bytes: r.get::<_, i64>(3)? as u64,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tiercache_core::units::cutoff_ms;
    use tiercache_core::{NamespaceName, NamespaceOptions};

    use super::*;
    use crate::testing::{entry, fresh};

    /// However large an age, its cutoff selects nothing younger: the subtraction saturates
    /// instead of wrapping around to a cutoff after every entry.
    #[test]
    fn a_max_size_age_selects_nothing() {
        let (_d, ix) = fresh();
        let (name, src) = (NamespaceName::new("web").unwrap(), Some("http://127.0.0.1:1/"));
        let ns = ix.put_namespace(&name, src, &NamespaceOptions::default(), 1).unwrap().0;
        let now = 1_700_000_000_000;
        ix.commit_blob(&Digest::of(b"x"), 1, (false, false), None, Some(&entry(ns.id, "k")), now - 10_000).unwrap();
        assert_eq!(ix.entries_not_read_since(None, cutoff_ms(now, Duration::from_secs(1))).unwrap().len(), 1);
        let huge = Duration::from_secs(18_446_744_073_709_551);
        for age in [Duration::MAX, huge, Duration::from_millis(u64::MAX), Duration::from_secs(3_153_600_000)] {
            for only in [None, Some(ns.id)] {
                assert_eq!(ix.entries_not_read_since(only, cutoff_ms(now, age)).unwrap(), [], "{age:?}");
            }
        }
        // What a wrapping subtraction made of that age: a cutoff after now, older than everything.
        assert!(now.wrapping_sub(huge.as_millis() as i64) > now);
    }

    /// Limits past what SQLite holds are no limits, not negative ones.
    #[test]
    fn huge_limits_select_nothing() {
        let (_d, ix) = fresh();
        let ns = ix.put_namespace(&NamespaceName::new("up").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        ix.commit_blob(&Digest::of(b"x"), 10, (false, false), None, Some(&entry(ns.id, "k")), 5).unwrap();
        assert_eq!(ix.entries_over_limits(ns.id, Some(u64::MAX), Some(u64::MAX)).unwrap(), []);
        assert_eq!(ix.entries_over_limits(ns.id, Some(5), None).unwrap().len(), 1);
    }
}
