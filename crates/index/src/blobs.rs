//! Blob rows (table `blobs`): what the disk tier holds, by digest, and whether each file is known
//! to be in place (pending, present, or absent for a digest only namespaces stored in their own
//! directories hold).
//!
//! Rows follow the disk tier: `mark_pending` is the one row written before its file is renamed into
//! place (step 3 of the put protocol in docs/design.md), `commit_blob` the row (and entry) after.
//! The helpers at the bottom decide which rows go when entries go, and return the digests whose
//! files the caller must unlink; this module never touches a file itself. Which blobs eviction and
//! the pruner may take is `lifecycle.rs`'s business.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use tiercache_core::Digest;

use crate::entries::{NewEntry, upsert_entry};
use crate::index::{Index, Result, digest_of};

/// Whether a blob row's file is known to be in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobState {
    /// Written just before the rename into the disk tier; not yet confirmed.
    Pending,
    /// The file is in the disk tier, verified.
    Present,
    /// Not in the disk tier: a digest named only by entries of namespaces stored in their own
    /// directories (which hold the files).
    Absent,
}

/// A blob row.
#[derive(Debug, Clone)]
pub struct BlobRow {
    /// Its digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size_bytes: u64,
    /// MD5 (lowercase hex), once computed.
    pub md5: Option<String>,
    /// Pending, present or absent.
    pub state: BlobState,
    /// Kept even when no entry references it (uploaded straight to tiercache, or adopted from disk).
    pub is_retained: bool,
}

impl Index {
    /// Records that a verified blob is about to be renamed into the disk tier (step 3 of the put
    /// protocol in docs/design.md). Leaves an existing row alone, unless it is absent from the
    /// disk tier: then it becomes pending.
    pub fn mark_pending(&self, digest: &Digest, size_bytes: u64, now_ms: i64) -> Result<()> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO blobs (digest, size, state, created_at, last_access) VALUES (?1, ?2, 0, ?3, ?3)
                 ON CONFLICT (digest) DO UPDATE SET state = 0, created_at = excluded.created_at WHERE state = 2",
            )?
            .execute(params![digest.hex(), size_bytes as i64, now_ms])?;
            Ok(())
        })
    }

    /// Commits a blob now in the disk tier as present, with its MD5 (lowercase hex) if known, and
    /// optionally the entry that names it, in one transaction. `retain` keeps the blob even when
    /// no entry references it; `is_upload` marks a blob uploaded straight to tiercache (maybe the
    /// only copy): never evicted or pruned.
    ///
    /// An entry whose namespace was deleted meanwhile is not written: the blob is then an orphan,
    /// which the pruner removes. Returns `false` if and only if the entry was refused because its
    /// key has one and it is create-only (`NewEntry::is_create_only`): the blob is committed
    /// alone, an orphan likewise.
    pub fn commit_blob(
        &self,
        digest: &Digest,
        size_bytes: u64,
        (retain, is_upload): (bool, bool),
        md5: Option<&str>,
        entry: Option<&NewEntry>,
        now_ms: i64,
    ) -> Result<bool> {
        self.write(|tx| {
            tx.prepare_cached(
                "INSERT INTO blobs (digest, size, state, is_retained, is_upload, created_at, last_access, md5)
                 VALUES (?1, ?2, 1, ?3, ?4, ?5, ?5, ?6)
                 ON CONFLICT (digest) DO UPDATE SET state = 1, is_retained = max(is_retained, excluded.is_retained),
                     is_upload = max(is_upload, excluded.is_upload), last_access = excluded.last_access,
                     md5 = coalesce(md5, excluded.md5)",
            )?
            .execute(params![digest.hex(), size_bytes as i64, retain, is_upload, now_ms, md5])?;
            match entry {
                Some(e) => upsert_entry(tx, e, digest, size_bytes, now_ms),
                None => Ok(true),
            }
        })
    }

    /// Makes entry `dst` name the blob that entry `src_key` of namespace `src_ns_id` names, in one
    /// transaction, if that blob is present in the disk tier: no byte is copied (`dst` keeps its
    /// content type, else takes the source entry's; it takes the source's attributes). Returns the blob's digest and size; `None`
    /// if there is no such entry or its blob is not in the disk tier (the caller copies the
    /// bytes). Skipped, like [`Index::commit_blob`]'s entry, if `dst`'s namespace is gone.
    pub fn copy_entry(
        &self,
        src_ns_id: i64,
        src_key: &str,
        dst: &NewEntry,
        now_ms: i64,
    ) -> Result<Option<(Digest, u64)>> {
        self.write(|tx| {
            let found = tx
                .query_row(
                    "SELECT e.digest, e.size, e.content_type FROM entries e JOIN blobs b ON b.digest = e.digest
                     WHERE e.ns_id = ?1 AND e.key = ?2 AND b.state = 1",
                    params![src_ns_id, src_key],
                    |r| Ok((digest_of(r.get(0)?)?, r.get::<_, i64>(1)? as u64, r.get::<_, Option<String>>(2)?)),
                )
                .optional()?;
            let Some((digest, size_bytes, content_type)) = found else { return Ok(None) };
            let entry = NewEntry { content_type: dst.content_type.clone().or(content_type), ..dst.clone() };
            upsert_entry(tx, &entry, &digest, size_bytes, now_ms)?;
            tx.execute(
                "UPDATE entries SET attrs = (SELECT attrs FROM entries WHERE ns_id = ?1 AND key = ?2)
                 WHERE ns_id = ?3 AND key = ?4",
                params![src_ns_id, src_key, dst.ns_id, dst.key],
            )?;
            Ok(Some((digest, size_bytes)))
        })
    }

    /// Writes `entry` naming blob `digest` if the disk tier holds it (state 1), in one
    /// transaction: a key whose bytes are known by their digest (a registry blob) is then served
    /// without a fetch. The entry takes the content type of another entry naming the blob when it
    /// has none of its own. `false`, with nothing written, if the blob is not present.
    pub fn name_present_blob(&self, digest: &Digest, entry: &NewEntry, now_ms: i64) -> Result<bool> {
        self.write(|tx| {
            let size: Option<i64> = tx
                .prepare_cached("SELECT size FROM blobs WHERE digest = ?1 AND state = 1")?
                .query_row([digest.hex()], |r| r.get(0))
                .optional()?;
            let Some(size) = size else { return Ok(false) };
            let content_type = match &entry.content_type {
                Some(t) => Some(t.clone()),
                None => tx
                    .prepare_cached(
                        "SELECT content_type FROM entries WHERE digest = ?1 AND content_type IS NOT NULL LIMIT 1",
                    )?
                    .query_row([digest.hex()], |r| r.get::<_, String>(0))
                    .optional()?,
            };
            let entry = NewEntry { content_type, ..entry.clone() };
            upsert_entry(tx, &entry, digest, size as u64, now_ms)
        })
    }

    /// Commits `entry`, naming a blob just published in its namespace's own directory (not the
    /// disk tier): the blob row is added as absent from the disk tier if the index does not know
    /// the digest yet. Skipped, like [`Index::commit_blob`]'s entry, if the namespace is gone;
    /// `false` as [`Index::commit_blob`]'s.
    pub fn commit_entry_elsewhere(
        &self,
        digest: &Digest,
        size_bytes: u64,
        entry: &NewEntry,
        now_ms: i64,
    ) -> Result<bool> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO blobs (digest, size, state, created_at, last_access) VALUES (?1, ?2, 2, ?3, ?3)
                 ON CONFLICT (digest) DO NOTHING",
                params![digest.hex(), size_bytes as i64, now_ms],
            )?;
            upsert_entry(tx, entry, digest, size_bytes, now_ms)
        })
    }

    /// Adopts `entry` from the shared tier's record of it, unless the index has an entry for its
    /// key already: the entry names `digest` (a blob row absent from the disk tier is added, with
    /// `md5`, if the index does not know the digest), last validated at `validated_at`. The disk
    /// fill makes the row present later. Returns whether the entry was written (not if its
    /// namespace is gone, or the key has an entry now).
    pub fn adopt_entry(
        &self,
        (digest, size_bytes, md5): (&Digest, u64, &str),
        entry: &NewEntry,
        validated_at: i64,
        now_ms: i64,
    ) -> Result<bool> {
        self.write(|tx| {
            let exists: bool = tx.query_row(
                "SELECT count(*) > 0 FROM entries WHERE ns_id = ?1 AND key = ?2",
                params![entry.ns_id, entry.key],
                |r| r.get(0),
            )?;
            if exists {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO blobs (digest, size, state, md5, created_at, last_access) VALUES (?1, ?2, 2, ?3, ?4, ?4)
                 ON CONFLICT (digest) DO UPDATE SET md5 = excluded.md5 WHERE state = 2 AND md5 IS NULL",
                params![digest.hex(), size_bytes as i64, md5, now_ms],
            )?;
            upsert_entry(tx, entry, digest, size_bytes, now_ms)?;
            let n = tx.execute(
                "UPDATE entries SET validated_at = ?3 WHERE ns_id = ?1 AND key = ?2",
                params![entry.ns_id, entry.key, validated_at.min(now_ms)],
            )?;
            Ok(n > 0)
        })
    }

    /// The distinct blobs the entries of `ns_id` name, with their sizes, by digest.
    pub fn namespace_blobs(&self, ns_id: i64) -> Result<Vec<(Digest, u64)>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT DISTINCT digest, size FROM entries WHERE ns_id = ?1 ORDER BY digest")?;
            let rows = stmt.query_map([ns_id], |r| Ok((digest_of(r.get(0)?)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Blobs referenced by `ns_id`'s entries that have no MD5 yet, with their sizes.
    pub fn blobs_without_md5(&self, ns_id: i64) -> Result<Vec<(Digest, u64)>> {
        self.read(|c| {
            let mut stmt = c.prepare(
                "SELECT DISTINCT b.digest, b.size FROM entries e JOIN blobs b ON b.digest = e.digest
                 WHERE e.ns_id = ?1 AND b.md5 IS NULL AND b.state = 1",
            )?;
            let rows = stmt.query_map([ns_id], |r| Ok((digest_of(r.get(0)?)?, r.get::<_, i64>(1)? as u64)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Stores a blob's MD5 once computed.
    pub fn set_md5(&self, digest: &Digest, md5_hex: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute("UPDATE blobs SET md5 = ?2 WHERE digest = ?1", params![digest.hex(), md5_hex])?;
            Ok(())
        })
    }

    /// The blob row for `digest`, if any.
    pub fn get_blob(&self, digest: &Digest) -> Result<Option<BlobRow>> {
        self.read(|c| {
            c.prepare_cached("SELECT digest, size, md5, state, is_retained FROM blobs WHERE digest = ?1")?
                .query_row([digest.hex()], blob_row)
                .optional()
                .map_err(Into::into)
        })
    }

    /// Every blob row, pending ones included, in digest order.
    pub fn list_blobs(&self) -> Result<Vec<BlobRow>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT digest, size, md5, state, is_retained FROM blobs ORDER BY digest")?;
            let rows = stmt.query_map([], blob_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Digests of pending rows: the only rows start-up recovery needs to look at.
    pub fn pending_blobs(&self) -> Result<Vec<Digest>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT digest FROM blobs WHERE state = 0")?;
            let rows = stmt.query_map([], |r| digest_of(r.get(0)?))?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Removes blob rows and every entry naming them (their files are gone or corrupt; the entries
    /// will be fetched again from their sources). Returns the number of entries removed.
    pub fn forget_blobs(&self, digests: &[Digest]) -> Result<u64> {
        self.write(|tx| {
            let mut n = 0;
            for d in digests {
                n += tx
                    .execute(&format!("DELETE FROM entries AS e WHERE e.digest = ?1 AND {MANAGED_ENTRY}"), [d.hex()])?
                    as u64;
            }
            release_blob_rows(tx, digests)?;
            Ok(n)
        })
    }

    /// Adds present, retained rows for blobs found on disk with no row (index rebuild, or
    /// `verify --repair` adopting untracked files). Existing rows are left alone.
    pub fn adopt_blobs(&self, blobs: &[(Digest, u64)], now_ms: i64) -> Result<()> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO blobs (digest, size, state, is_retained, created_at, last_access) VALUES (?1, ?2, 1, 1, ?3, ?3)
                 ON CONFLICT (digest) DO UPDATE SET state = 1, size = excluded.size",
            )?;
            for (d, size) in blobs {
                stmt.execute(params![d.hex(), *size as i64, now_ms])?;
            }
            Ok(())
        })
    }
}

fn blob_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BlobRow> {
    Ok(BlobRow {
        digest: digest_of(r.get(0)?)?,
        size_bytes: r.get::<_, i64>(1)? as u64,
        md5: r.get(2)?,
        state: match r.get::<_, i64>(3)? {
            0 => BlobState::Pending,
            2 => BlobState::Absent,
            _ => BlobState::Present,
        },
        is_retained: r.get(4)?,
    })
}

/// Entry `e` belongs to a managed namespace (its blob is in the shared disk tier). Only managed
/// entries reference the disk tier's blobs; a namespace stored in its own directory names blobs
/// there.
pub(crate) const MANAGED_ENTRY: &str = "e.ns_id IN (SELECT id FROM namespaces WHERE storage IS NULL)";

/// Deletes present, unretained blob rows that no managed entry or copied file references, and the
/// rows of digests no entry names at all; returns the digests whose files the caller must delete
/// from the disk tier. A row still named by entries of namespaces stored elsewhere is kept, as
/// absent (state 2).
pub(crate) fn delete_orphan_blobs(tx: &rusqlite::Transaction<'_>) -> Result<Vec<Digest>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT digest FROM blobs WHERE state = 1 AND is_retained = 0
           AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.digest = blobs.digest AND {MANAGED_ENTRY})
           AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = unhex(blobs.digest) AND f.is_copied = 1)"
    ))?;
    let orphans = stmt.query_map([], |r| digest_of(r.get(0)?))?.collect::<rusqlite::Result<Vec<_>>>()?;
    drop(stmt);
    release_blob_rows(tx, &orphans)?;
    tx.execute(
        "DELETE FROM blobs WHERE state = 2 AND NOT EXISTS (SELECT 1 FROM entries e WHERE e.digest = blobs.digest)",
        [],
    )?;
    Ok(orphans)
}

/// The files of `digests` leave the disk tier: each row is deleted, or kept as absent (state 2)
/// while entries of namespaces stored elsewhere still name it.
pub(crate) fn release_blob_rows(tx: &rusqlite::Transaction<'_>, digests: &[Digest]) -> Result<()> {
    let mut absent = tx.prepare_cached(
        "UPDATE blobs SET state = 2, is_retained = 0, is_upload = 0
         WHERE digest = ?1 AND EXISTS (SELECT 1 FROM entries e WHERE e.digest = ?1)",
    )?;
    let mut delete = tx.prepare_cached("DELETE FROM blobs WHERE digest = ?1 AND state != 2")?;
    for d in digests {
        let hex = d.hex();
        absent.execute([&hex])?;
        delete.execute([&hex])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fresh;

    #[test]
    fn retained_blobs_outlive_cleanup_and_pending_rows_are_listed() {
        let (_d, ix) = fresh();
        let d = Digest::of(b"upload");
        ix.commit_blob(&d, 6, (true, true), None, None, 1).unwrap();
        let p = Digest::of(b"pending");
        ix.mark_pending(&p, 7, 1).unwrap();
        assert_eq!(ix.pending_blobs().unwrap(), vec![p]);
        let (_, orphans) = ix.cleanup(None, None).unwrap();
        assert!(orphans.is_empty());
        assert_eq!(ix.stats(None).unwrap().n_blobs, 1);
    }
}
