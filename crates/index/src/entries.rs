//! Entries (table `entries`): a key of a namespace naming a blob, with what its source said of it
//! (content type, validators) and when it was made and last confirmed.
//!
//! An entry is written only with, or after, the blob row it names (`blobs.rs` commits both in one
//! transaction, through `upsert_entry` here). Removing one entry leaves its blob row for the
//! pruner; `Index::cleanup` also deletes the rows of blobs no entry names any more and hands their
//! digests back, since only the caller can unlink their files. Reads are counted in `access.rs`,
//! and what the pruner may delete is chosen in `lifecycle.rs`, not here.

use rusqlite::{OptionalExtension, params};
pub use tiercache_core::Validators;
use tiercache_core::{Digest, Key};

use crate::blobs::delete_orphan_blobs;
use crate::index::{Index, Result, digest_of};

/// An entry, joined with its blob's MD5.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Owning namespace id.
    pub ns_id: i64,
    /// The key.
    pub key: String,
    /// The blob it names.
    pub digest: Digest,
    /// Blob size in bytes.
    pub size_bytes: u64,
    /// The entry's ETag value (unquoted): its own if it has one (a completed multipart upload's
    /// `<hex>-<parts>`), else its blob's MD5 (lowercase hex), once computed.
    pub md5: Option<String>,
    /// Content type reported by the source.
    pub content_type: Option<String>,
    /// The source's validators.
    pub validators: Validators,
    /// The `Content-Encoding` the source sent the blob's bytes with (`None`: identity).
    pub content_encoding: Option<String>,
    /// Creation time, ms.
    pub created_at: i64,
    /// Last successful check against the source, ms.
    pub validated_at: i64,
}

/// What the engine hands over when a fetched blob becomes an entry.
#[derive(Debug, Clone, Default)]
pub struct NewEntry {
    /// Owning namespace id.
    pub ns_id: i64,
    /// The key.
    pub key: String,
    /// Content type reported by the source.
    pub content_type: Option<String>,
    /// The source's validators.
    pub validators: Validators,
    /// The `Content-Encoding` the source sent the bytes with (`None`: identity).
    pub content_encoding: Option<String>,
    /// The sizes of the parts a multipart upload made it of, in order; `None` for one written
    /// whole.
    pub part_sizes: Option<Vec<u64>>,
    /// Written only if the key has no entry yet (S3's `If-None-Match: *`), which the transaction
    /// that would write it checks: two such writes of one key cannot both succeed.
    pub is_create_only: bool,
    /// The attributes a front door stores with the entry (opaque text: the S3 API's JSON of
    /// user metadata and headers), written in the transaction that writes the entry.
    pub attrs: Option<String>,
    /// The entry's own ETag value, instead of its blob's MD5 (a registry blob's: its digest).
    pub etag: Option<String>,
}

impl Index {
    /// The sizes of the parts a multipart upload made entry `(ns_id, key)` of, in order; `None`
    /// if it was written whole, or there is no such entry.
    pub fn entry_part_sizes(&self, ns_id: i64, key: &str) -> Result<Option<Vec<u64>>> {
        self.read(|c| {
            let text = c
                .prepare_cached("SELECT part_sizes FROM entries WHERE ns_id = ?1 AND key = ?2")?
                .query_row(params![ns_id, key], |r| r.get::<_, Option<String>>(0))
                .optional()?
                .flatten();
            // Written by `upsert_entry` only; text that does not parse is treated as absent.
            Ok(text.and_then(|t| t.split(',').map(|n| n.parse::<u64>().ok()).collect()))
        })
    }

    /// Sets the attributes an S3 client stored with entry `(ns_id, key)` (JSON, opaque here;
    /// `None` clears them). `false` if there is no such entry.
    pub fn set_entry_attrs(&self, ns_id: i64, key: &str, attrs: Option<&str>) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute("UPDATE entries SET attrs = ?3 WHERE ns_id = ?1 AND key = ?2", params![ns_id, key, attrs])?
                > 0)
        })
    }

    /// The attributes an S3 client stored with entry `(ns_id, key)`, if any.
    pub fn entry_attrs(&self, ns_id: i64, key: &str) -> Result<Option<String>> {
        self.read(|c| {
            let attrs = c
                .prepare_cached("SELECT attrs FROM entries WHERE ns_id = ?1 AND key = ?2")?
                .query_row(params![ns_id, key], |r| r.get::<_, Option<String>>(0))
                .optional()?;
            Ok(attrs.flatten())
        })
    }

    /// The entry `(ns_id, key)`, joined with its blob's MD5 (or its own ETag, if it has one).
    pub fn get_entry(&self, ns_id: i64, key: &Key) -> Result<Option<Entry>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT e.ns_id, e.key, e.digest, e.size, coalesce(e.etag, b.md5), e.content_type, e.source_etag,
                        e.source_last_modified, e.created_at, e.validated_at, e.content_encoding
                 FROM entries e JOIN blobs b ON b.digest = e.digest
                 WHERE e.ns_id = ?1 AND e.key = ?2",
            )?
            .query_row(params![ns_id, key.as_str()], |r| {
                Ok(Entry {
                    ns_id: r.get(0)?,
                    key: r.get(1)?,
                    digest: digest_of(r.get(2)?)?,
                    size_bytes: r.get::<_, i64>(3)? as u64,
                    md5: r.get(4)?,
                    content_type: r.get(5)?,
                    validators: Validators { etag: r.get(6)?, last_modified: r.get(7)? },
                    created_at: r.get(8)?,
                    validated_at: r.get(9)?,
                    content_encoding: r.get(10)?,
                })
            })
            .optional()
            .map_err(Into::into)
        })
    }

    /// Records that the source confirmed `(ns_id, key)` unchanged at `now_ms`.
    pub fn mark_validated(&self, ns_id: i64, key: &Key, now_ms: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE entries SET validated_at = ?3 WHERE ns_id = ?1 AND key = ?2",
                params![ns_id, key.as_str(), now_ms],
            )?;
            Ok(())
        })
    }

    /// Removes one entry (its blob row stays until cleanup finds it unreferenced).
    pub fn delete_entry(&self, ns_id: i64, key: &Key) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute("DELETE FROM entries WHERE ns_id = ?1 AND key = ?2", params![ns_id, key.as_str()])? > 0)
        })
    }

    /// Removes the entries of namespace `ns_id` (all, or those whose key starts with `prefix`,
    /// compared byte for byte: no wildcards), then the rows of blobs no entry references any more.
    /// Returns the number of entries removed and the digests whose files the caller must delete.
    pub fn cleanup(&self, ns_id: Option<i64>, prefix: Option<&str>) -> Result<(u64, Vec<Digest>)> {
        self.write(|tx| {
            let n = match (ns_id, prefix) {
                (None, _) => tx.execute("DELETE FROM entries", [])?,
                (Some(id), None) => tx.execute("DELETE FROM entries WHERE ns_id = ?1", [id])?,
                (Some(id), Some(p)) => tx.execute(
                    "DELETE FROM entries WHERE ns_id = ?1 AND substr(CAST(key AS BLOB), 1, length(CAST(?2 AS BLOB))) = CAST(?2 AS BLOB)",
                    params![id, p],
                )?,
            } as u64;
            let orphans = delete_orphan_blobs(tx)?;
            Ok((n, orphans))
        })
    }
}

/// Inserts or replaces an entry, if its namespace still exists. A replaced entry loses its own
/// ETag (`etag`): the new bytes are answered with their MD5. Returns `false` if and only if
/// `e.is_create_only` and the key has an entry: nothing is written.
pub(crate) fn upsert_entry(
    tx: &rusqlite::Transaction<'_>,
    e: &NewEntry,
    digest: &Digest,
    size_bytes: u64,
    now_ms: i64,
) -> Result<bool> {
    // Cached statements: an upload or a fetch runs these every time, and parsing them cost more
    // than running them.
    let ns_exists: bool =
        tx.prepare_cached("SELECT count(*) > 0 FROM namespaces WHERE id = ?1")?.query_row([e.ns_id], |r| r.get(0))?;
    if !ns_exists {
        return Ok(true);
    }
    if e.is_create_only {
        let exists: bool = tx
            .prepare_cached("SELECT count(*) > 0 FROM entries WHERE ns_id = ?1 AND key = ?2")?
            .query_row(params![e.ns_id, e.key], |r| r.get(0))?;
        if exists {
            return Ok(false);
        }
    }
    let part_sizes = e.part_sizes.as_ref().map(|p| p.iter().map(u64::to_string).collect::<Vec<_>>().join(","));
    tx.prepare_cached(
        "INSERT INTO entries (ns_id, key, digest, size, content_type, source_etag, source_last_modified,
                              created_at, last_access, validated_at, hits, content_encoding, part_sizes, attrs,
                              etag)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8, 0, ?9, ?10, ?11, ?12)
         ON CONFLICT (ns_id, key) DO UPDATE SET digest = excluded.digest, size = excluded.size,
             content_type = excluded.content_type, content_encoding = excluded.content_encoding,
             source_etag = excluded.source_etag,
             source_last_modified = excluded.source_last_modified, created_at = excluded.created_at,
             last_access = excluded.last_access, validated_at = excluded.validated_at, etag = excluded.etag,
             attrs = excluded.attrs,
             part_sizes = excluded.part_sizes",
    )?
    .execute(params![
        e.ns_id,
        e.key,
        digest.hex(),
        size_bytes as i64,
        e.content_type,
        e.validators.etag,
        e.validators.last_modified,
        now_ms,
        e.content_encoding,
        part_sizes,
        e.attrs,
        e.etag
    ])?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use tiercache_core::{NamespaceName, NamespaceOptions};

    use super::*;
    use crate::testing::{entry, fresh};

    #[test]
    fn prefix_cleanup_is_byte_exact() {
        let (_d, ix) = fresh();
        let a = ix.put_namespace(&NamespaceName::new("a").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        for (i, key) in ["dir%/x", "dir_/y", "dirX/z", "dir%/w", "Dir%/v"].iter().enumerate() {
            ix.commit_blob(&Digest::of(&[i as u8]), 1, (false, false), None, Some(&entry(a.id, key)), 1).unwrap();
        }
        let (n, orphans) = ix.cleanup(Some(a.id), Some("dir%/")).unwrap();
        assert_eq!((n, orphans.len()), (2, 2));
        assert_eq!(ix.stats(None).unwrap().n_entries, 3);
    }
}
