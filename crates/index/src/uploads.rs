//! Multipart uploads (tables `uploads`, `upload_parts`): an upload under way names its namespace
//! and key, and each part stored so far names its file under `<data>/uploads/<id>/`, its size and
//! its MD5. Completing one commits the assembled blob, its entry (with the multipart ETag) and the
//! upload's removal in one transaction, so two completes of one upload cannot both succeed.
//!
//! This module stores strings and numbers: it does not know where the files are, how they are
//! written, or what a valid part list is (the engine's `uploads.rs` does).

use rusqlite::{OptionalExtension, params};
use tiercache_core::Digest;

use crate::NewEntry;
use crate::entries::upsert_entry;
use crate::index::{Index, Result};

/// An upload under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRow {
    /// Its id (32 lowercase hex digits).
    pub id: String,
    /// The namespace it writes into.
    pub ns_id: i64,
    /// The key it writes.
    pub key: String,
    /// The content type the entry gets.
    pub content_type: Option<String>,
    /// Whatever else the front door keeps with the upload (JSON), handed back at completion.
    pub meta: Option<String>,
    /// When it was created, ms.
    pub created_at: i64,
}

/// A part stored for an upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartRow {
    /// 1 to 10 000.
    pub part_number: u32,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// The MD5 of its bytes, lowercase hex (the part's ETag).
    pub md5: String,
    /// Its file's name in the upload's directory.
    pub file: String,
    /// When it was stored, ms.
    pub created_at: i64,
}

const UPLOAD_COLUMNS: &str = "id, ns_id, key, content_type, meta, created_at";
const PART_COLUMNS: &str = "part_number, size, md5, file, created_at";

fn upload_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<UploadRow> {
    Ok(UploadRow {
        id: r.get(0)?,
        ns_id: r.get(1)?,
        key: r.get(2)?,
        content_type: r.get(3)?,
        meta: r.get(4)?,
        created_at: r.get(5)?,
    })
}

fn part_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<PartRow> {
    Ok(PartRow {
        part_number: r.get(0)?,
        size_bytes: r.get::<_, i64>(1)? as u64,
        md5: r.get(2)?,
        file: r.get(3)?,
        created_at: r.get(4)?,
    })
}

impl Index {
    /// Records a new upload. `false` if its namespace no longer exists.
    pub fn put_upload(&self, u: &UploadRow) -> Result<bool> {
        self.write(|tx| {
            let ns_exists: bool =
                tx.query_row("SELECT count(*) > 0 FROM namespaces WHERE id = ?1", [u.ns_id], |r| r.get(0))?;
            if !ns_exists {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO uploads (id, ns_id, key, content_type, meta, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![u.id, u.ns_id, u.key, u.content_type, u.meta, u.created_at],
            )?;
            Ok(true)
        })
    }

    /// The upload `id`, if it is under way.
    pub fn get_upload(&self, id: &str) -> Result<Option<UploadRow>> {
        self.read(|c| {
            Ok(c.prepare_cached(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = ?1"))?
                .query_row([id], upload_of)
                .optional()?)
        })
    }

    /// The parts of upload `id` numbered above `after`, at most `limit`, in order.
    pub fn upload_parts(&self, id: &str, after: u32, limit: usize) -> Result<Vec<PartRow>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {PART_COLUMNS} FROM upload_parts WHERE upload_id = ?1 AND part_number > ?2
                 ORDER BY part_number LIMIT ?3"
            ))?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            Ok(stmt.query_map(params![id, after, limit], part_of)?.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Records part `p` of upload `id`, replacing a part of that number. Returns `None` if the
    /// upload is no longer under way (nothing written), else the part replaced, if any.
    pub fn put_part(&self, id: &str, p: &PartRow) -> Result<Option<Option<PartRow>>> {
        self.write(|tx| {
            let exists: bool = tx.query_row("SELECT count(*) > 0 FROM uploads WHERE id = ?1", [id], |r| r.get(0))?;
            if !exists {
                return Ok(None);
            }
            let old = tx
                .prepare_cached(&format!(
                    "SELECT {PART_COLUMNS} FROM upload_parts WHERE upload_id = ?1 AND part_number = ?2"
                ))?
                .query_row(params![id, p.part_number], part_of)
                .optional()?;
            tx.execute(
                "INSERT INTO upload_parts (upload_id, part_number, size, md5, file, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (upload_id, part_number) DO UPDATE SET size = excluded.size, md5 = excluded.md5,
                     file = excluded.file, created_at = excluded.created_at",
                params![id, p.part_number, p.size_bytes as i64, p.md5, p.file, p.created_at],
            )?;
            Ok(Some(old))
        })
    }

    /// Removes upload `id` with its part rows. Returns the parts it had, or `None` if it was not
    /// under way.
    pub fn delete_upload(&self, id: &str) -> Result<Option<Vec<PartRow>>> {
        self.write(|tx| {
            let parts = tx
                .prepare_cached(&format!("SELECT {PART_COLUMNS} FROM upload_parts WHERE upload_id = ?1"))?
                .query_map([id], part_of)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let n = tx.execute("DELETE FROM uploads WHERE id = ?1", [id])?;
            Ok((n > 0).then_some(parts))
        })
    }

    /// Completes upload `id` in one transaction: the blob `digest` (published in the disk tier,
    /// with a pending row) becomes present, `entry` names it with its own ETag `etag`, and the
    /// upload and its part rows are removed. Returns `false`, with only the blob row written, if
    /// the upload was no longer under way (another complete or an abort took it): the blob is then
    /// an orphan for the pruner. `in_disk_tier` says whether the blob is in the disk tier (else in
    /// its namespace's own directory: its row is added as absent if the index does not know it).
    /// A create-only `entry` (`NewEntry::is_create_only`) whose key has an entry is not written
    /// either: `false` as well, with the upload removed all the same.
    pub fn complete_upload(
        &self,
        id: &str,
        (digest, size_bytes, in_disk_tier): (&Digest, u64, bool),
        entry: &NewEntry,
        etag: &str,
        now_ms: i64,
    ) -> Result<bool> {
        self.write(|tx| {
            if in_disk_tier {
                tx.execute(
                    "INSERT INTO blobs (digest, size, state, created_at, last_access) VALUES (?1, ?2, 1, ?3, ?3)
                     ON CONFLICT (digest) DO UPDATE SET state = 1, last_access = excluded.last_access",
                    params![digest.hex(), size_bytes as i64, now_ms],
                )?;
            } else {
                tx.execute(
                    "INSERT INTO blobs (digest, size, state, created_at, last_access) VALUES (?1, ?2, 2, ?3, ?3)
                     ON CONFLICT (digest) DO NOTHING",
                    params![digest.hex(), size_bytes as i64, now_ms],
                )?;
            }
            if tx.execute("DELETE FROM uploads WHERE id = ?1", [id])? == 0 {
                return Ok(false);
            }
            if !upsert_entry(tx, entry, digest, size_bytes, now_ms)? {
                return Ok(false);
            }
            tx.execute(
                "UPDATE entries SET etag = ?3 WHERE ns_id = ?1 AND key = ?2",
                params![entry.ns_id, entry.key, etag],
            )?;
            Ok(true)
        })
    }

    /// Uploads under way in namespace `ns_id` whose key starts with `prefix` (byte for byte),
    /// after `(key, id)` in (key, id) order, at most `limit`.
    pub fn list_uploads(
        &self,
        ns_id: i64,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Vec<UploadRow>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {UPLOAD_COLUMNS} FROM uploads
                 WHERE ns_id = ?1 AND substr(CAST(key AS BLOB), 1, length(CAST(?2 AS BLOB))) = CAST(?2 AS BLOB)
                   AND (?3 IS NULL OR key > ?3 OR (key = ?3 AND id > ?4))
                 ORDER BY key, id LIMIT ?5"
            ))?;
            let (key, id) = after.unzip();
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            Ok(stmt.query_map(params![ns_id, prefix, key, id, limit], upload_of)?.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Uploads created before `cutoff_ms` (abandoned, for the pruner).
    pub fn uploads_created_before(&self, cutoff_ms: i64) -> Result<Vec<UploadRow>> {
        self.read(|c| {
            let mut stmt =
                c.prepare_cached(&format!("SELECT {UPLOAD_COLUMNS} FROM uploads WHERE created_at < ?1 ORDER BY id"))?;
            Ok(stmt.query_map([cutoff_ms], upload_of)?.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Bytes of every part stored for uploads under way (the disk quota counts them).
    pub fn upload_bytes(&self) -> Result<u64> {
        self.read(|c| {
            Ok(c.query_row("SELECT coalesce(sum(size), 0) FROM upload_parts", [], |r| r.get::<_, i64>(0))? as u64)
        })
    }

    /// Sets upload `id`'s creation time (tests of the pruner). `false` if there is no such upload.
    pub fn set_upload_created_at(&self, id: &str, created_at_ms: i64) -> Result<bool> {
        self.write(|tx| {
            Ok(tx.execute("UPDATE uploads SET created_at = ?2 WHERE id = ?1", params![id, created_at_ms])? > 0)
        })
    }
}

#[cfg(test)]
mod tests {
    use tiercache_core::{NamespaceName, NamespaceOptions};

    use super::*;
    use crate::testing::{entry, fresh};

    fn upload(id: &str, ns_id: i64, key: &str) -> UploadRow {
        UploadRow { id: id.into(), ns_id, key: key.into(), content_type: None, meta: None, created_at: 1 }
    }

    fn part(n: u32, size: u64) -> PartRow {
        PartRow { part_number: n, size_bytes: size, md5: format!("{n:032x}"), file: format!("{n}-x"), created_at: 1 }
    }

    #[test]
    fn a_completed_upload_is_gone_and_its_entry_answers_its_own_etag_until_rewritten() {
        let (_d, ix) = fresh();
        let ns = ix.put_namespace(&NamespaceName::new("b").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        assert!(ix.put_upload(&upload("u1", ns.id, "k")).unwrap());
        assert_eq!(ix.put_part("u1", &part(1, 5)).unwrap(), Some(None));
        assert_eq!(ix.put_part("u1", &part(1, 7)).unwrap(), Some(Some(part(1, 5))));
        assert_eq!(ix.upload_bytes().unwrap(), 7);
        let d = Digest::of(b"x");
        ix.mark_pending(&d, 7, 1).unwrap();
        assert!(ix.complete_upload("u1", (&d, 7, true), &entry(ns.id, "k"), "abc-1", 2).unwrap());
        assert!(!ix.complete_upload("u1", (&d, 7, true), &entry(ns.id, "k"), "abc-1", 2).unwrap());
        assert_eq!(ix.get_upload("u1").unwrap(), None);
        assert_eq!(ix.upload_bytes().unwrap(), 0);
        let k = tiercache_core::Key::new("k").unwrap();
        assert_eq!(ix.get_entry(ns.id, &k).unwrap().unwrap().md5.as_deref(), Some("abc-1"));
        ix.commit_blob(&d, 7, (false, false), None, Some(&entry(ns.id, "k")), 3).unwrap();
        assert_eq!(ix.get_entry(ns.id, &k).unwrap().unwrap().md5, None, "a rewrite clears the multipart ETag");
        assert_eq!(ix.put_part("u1", &part(2, 1)).unwrap(), None, "no part for an upload gone");
    }

    #[test]
    fn uploads_list_by_prefix_in_key_then_id_order() {
        let (_d, ix) = fresh();
        let ns = ix.put_namespace(&NamespaceName::new("b").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        for (id, key) in [("u2", "a/x"), ("u1", "a/x"), ("u3", "a/y"), ("u4", "b")] {
            assert!(ix.put_upload(&upload(id, ns.id, key)).unwrap());
        }
        let ids = |v: Vec<UploadRow>| v.into_iter().map(|u| u.id).collect::<Vec<_>>();
        assert_eq!(ids(ix.list_uploads(ns.id, "a/", None, 10).unwrap()), ["u1", "u2", "u3"]);
        assert_eq!(ids(ix.list_uploads(ns.id, "a/", Some(("a/x", "u1")), 1).unwrap()), ["u2"]);
        assert_eq!(ids(ix.list_uploads(ns.id, "", Some(("a/y", "u3")), 10).unwrap()), ["u4"]);
        assert!(ix.delete_upload("u4").unwrap().is_some());
        assert!(ix.delete_upload("u4").unwrap().is_none());
    }

    #[test]
    fn a_create_only_entry_is_refused_in_its_transaction_and_part_sizes_go_with_a_rewrite() {
        let (_d, ix) = fresh();
        let ns = ix.put_namespace(&NamespaceName::new("b").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        let new = |key: &str| NewEntry { is_create_only: true, ..entry(ns.id, key) };
        let (d1, d2) = (Digest::of(b"1"), Digest::of(b"2"));
        assert!(ix.commit_blob(&d1, 1, (false, false), None, Some(&new("k")), 1).unwrap());
        assert!(!ix.commit_blob(&d2, 1, (false, false), None, Some(&new("k")), 2).unwrap(), "the key has an entry");
        let k = tiercache_core::Key::new("k").unwrap();
        assert_eq!(ix.get_entry(ns.id, &k).unwrap().unwrap().digest, d1, "the first write stands");

        // A completed upload keeps its part sizes; a create-only one over an entry writes nothing.
        assert!(ix.put_upload(&upload("u1", ns.id, "m")).unwrap());
        let sized = NewEntry { part_sizes: Some(vec![5, 2]), ..entry(ns.id, "m") };
        assert!(ix.complete_upload("u1", (&d2, 7, true), &sized, "abc-2", 3).unwrap());
        assert_eq!(ix.entry_part_sizes(ns.id, "m").unwrap(), Some(vec![5, 2]));
        assert!(ix.put_upload(&upload("u2", ns.id, "m")).unwrap());
        let again = NewEntry { is_create_only: true, part_sizes: Some(vec![1]), ..entry(ns.id, "m") };
        assert!(!ix.complete_upload("u2", (&d1, 1, true), &again, "def-1", 4).unwrap());
        assert_eq!(ix.get_upload("u2").unwrap(), None, "the refused upload is gone all the same");
        assert_eq!(ix.entry_part_sizes(ns.id, "m").unwrap(), Some(vec![5, 2]));
        ix.commit_blob(&d1, 1, (false, false), None, Some(&entry(ns.id, "m")), 5).unwrap();
        assert_eq!(ix.entry_part_sizes(ns.id, "m").unwrap(), None, "a rewrite clears them");
    }
}
