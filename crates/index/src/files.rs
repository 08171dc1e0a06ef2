//! The read cache of directory namespaces (table `files`) and what it was built with (`dir_state`).
//!
//! Rows here follow a directory; they are written only after the directory changed (or was found
//! changed), never instead of it. Paths are raw bytes (file names need not be UTF-8) compared byte
//! for byte, so `%`, `_` and `*` in a path are ordinary characters and case matters.

use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tiercache_core::{Digest, FileMarkers};

use crate::index::{Index, Result, digest_of};

/// One file of a directory namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    /// Path relative to the root, raw bytes.
    pub path: Vec<u8>,
    /// Change markers when it was last looked at.
    pub markers: FileMarkers,
    /// MD5 of its bytes, once hashed.
    pub md5: Option<[u8; 16]>,
    /// SHA-256 of its bytes, once hashed.
    pub sha256: Option<Digest>,
    /// When it was hashed (ns since the epoch); a file changed within a timestamp tick of this is
    /// hashed again at the next update, since its markers may not show the change.
    pub hashed_at_ns: Option<i64>,
    /// Whether its bytes are in the disk tier as blob `sha256` (copy-to-cache namespaces).
    pub is_copied: bool,
}

/// What a directory namespace's read cache was built with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirState {
    /// [`Index::schema_hash`] at the time.
    pub schema_hash: String,
    /// The tiercache version.
    pub version: String,
    /// Hash of the cache-relevant configuration (root, ignore globs).
    pub config_hash: String,
    /// When the last update finished, ms.
    pub last_update_ms: Option<i64>,
    /// What it was: `index`, `update`, `force`, `watch`, `reconcile`.
    pub last_update_kind: Option<String>,
}

/// Totals of a directory namespace's read cache.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DirStats {
    /// Files indexed.
    pub n_files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Files indexed without their hashes (`--no-hash`), still to hash.
    pub n_unhashed: u64,
    /// Bytes of those.
    pub unhashed_bytes: u64,
    /// Oldest modification time among the files, ms.
    pub oldest_ms: Option<i64>,
    /// Newest modification time among the files, ms.
    pub newest_ms: Option<i64>,
    /// When the last update finished, ms.
    pub last_update_ms: Option<i64>,
    /// What it was.
    pub last_update_kind: Option<String>,
}

/// How keys are stored in the table being listed.
#[derive(Debug, Clone, Copy)]
enum KeyType {
    /// `entries.key`: TEXT.
    Text,
    /// `files.path`: BLOB.
    Blob,
}

/// A key bound with the column's own type, so that comparisons stay byte-wise and use the index.
struct Bound<'a>(KeyType, &'a [u8]);

impl ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            KeyType::Text => ValueRef::Text(self.1),
            KeyType::Blob => ValueRef::Blob(self.1),
        }))
    }
}

/// One listed key.
#[derive(Debug, Clone)]
pub struct ListedItem {
    /// The key (entry key or file path), raw bytes.
    pub key: Vec<u8>,
    /// Size in bytes.
    pub size_bytes: u64,
    /// MD5, lowercase hex, when known (for a key listed from an S3 source: its ETag there).
    pub md5: Option<String>,
    /// The blob digest, when known.
    pub digest: Option<Digest>,
    /// Modification time (files) or creation time (entries), ms.
    pub modified_ms: i64,
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Keys, in byte order.
    pub items: Vec<ListedItem>,
    /// Common prefixes (when a delimiter was given), in byte order, interleaved with `items` in
    /// the listing's order: the page covers every key up to `last`.
    pub common_prefixes: Vec<Vec<u8>>,
    /// The last key or common prefix on the page: pass it as `after` for the next page.
    pub last: Option<Vec<u8>>,
    /// Whether more keys follow.
    pub is_truncated: bool,
}

/// What a listing asks for.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    /// Only keys starting with this (byte for byte).
    pub prefix: Vec<u8>,
    /// Roll keys that contain this after the prefix up into common prefixes.
    pub delimiter: Option<Vec<u8>>,
    /// Only keys after this one (or after this common prefix).
    pub after: Option<Vec<u8>>,
    /// At most this many keys and common prefixes.
    pub limit: usize,
}

/// The smallest byte string greater than every string starting with `p`, if there is one.
fn successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

fn file_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRow> {
    let md5: Option<Vec<u8>> = r.get(5)?;
    let sha: Option<Vec<u8>> = r.get(6)?;
    let bad = |i| rusqlite::Error::InvalidColumnType(i, "hash".into(), rusqlite::types::Type::Blob);
    Ok(FileRow {
        path: r.get(0)?,
        markers: FileMarkers {
            size_bytes: r.get::<_, i64>(1)? as u64,
            mtime_ns: r.get(2)?,
            ctime_ns: r.get(3)?,
            inode: r.get::<_, i64>(4)? as u64,
        },
        md5: md5.map(|v| <[u8; 16]>::try_from(v.as_slice()).map_err(|_| bad(5))).transpose()?,
        sha256: sha
            .map(|v| <[u8; 32]>::try_from(v.as_slice()).map(Digest::from_bytes).map_err(|_| bad(6)))
            .transpose()?,
        hashed_at_ns: r.get(7)?,
        is_copied: r.get(8)?,
    })
}

const FILE_COLUMNS: &str = "path, size, mtime_ns, ctime_ns, inode, md5, sha256, hashed_at_ns, is_copied";

impl Index {
    /// The row of `path` in directory namespace `ns_id`.
    pub fn get_file(&self, ns_id: i64, path: &[u8]) -> Result<Option<FileRow>> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {FILE_COLUMNS} FROM files WHERE ns_id = ?1 AND path = ?2"))?
                .query_row(params![ns_id, path], file_row)
                .optional()
                .map_err(Into::into)
        })
    }

    /// Calls `f` with every row of `ns_id` whose path starts with `prefix` (all rows for an empty
    /// prefix), in path order, from one read snapshot, until it returns `false`. Rows stream:
    /// memory stays flat however many files there are.
    pub fn scan_files(&self, ns_id: i64, prefix: &[u8], mut f: impl FnMut(FileRow) -> bool) -> Result<()> {
        self.read(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {FILE_COLUMNS} FROM files WHERE ns_id = ?1 AND path >= ?2 AND (?3 IS NULL OR path < ?3)
                 ORDER BY path"
            ))?;
            let mut rows = stmt.query(params![ns_id, prefix, successor(prefix)])?;
            while let Some(r) = rows.next()? {
                if !f(file_row(r)?) {
                    break;
                }
            }
            Ok(())
        })
    }

    /// Up to `limit` rows of `ns_id` without hashes, after `after`, in path order.
    pub fn unhashed_files(&self, ns_id: i64, after: &[u8], limit: usize) -> Result<Vec<FileRow>> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(&format!(
                "SELECT {FILE_COLUMNS} FROM files WHERE ns_id = ?1 AND path > ?2 AND sha256 IS NULL ORDER BY path LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![ns_id, after, limit as i64], file_row)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Applies a batch of changes to `ns_id`'s read cache in one transaction: rows to insert or
    /// replace, paths to delete, and path prefixes whose rows all go (a deleted directory). Each
    /// change is its own statement; no statement grows with the batch.
    pub fn apply_files(&self, ns_id: i64, put: &[FileRow], delete: &[Vec<u8>], delete_under: &[Vec<u8>]) -> Result<()> {
        if put.is_empty() && delete.is_empty() && delete_under.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut ins = tx.prepare_cached(
                "INSERT INTO files (ns_id, path, size, mtime_ns, ctime_ns, inode, md5, sha256, hashed_at_ns, is_copied)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (ns_id, path) DO UPDATE SET size = excluded.size, mtime_ns = excluded.mtime_ns,
                     ctime_ns = excluded.ctime_ns, inode = excluded.inode, md5 = excluded.md5,
                     sha256 = excluded.sha256, hashed_at_ns = excluded.hashed_at_ns, is_copied = excluded.is_copied",
            )?;
            for f in put {
                let m = &f.markers;
                ins.execute(params![
                    ns_id,
                    f.path,
                    m.size_bytes as i64,
                    m.mtime_ns,
                    m.ctime_ns,
                    m.inode as i64,
                    f.md5.as_ref().map(|h| &h[..]),
                    f.sha256.as_ref().map(|d| &d.as_bytes()[..]),
                    f.hashed_at_ns,
                    f.is_copied,
                ])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM files WHERE ns_id = ?1 AND path = ?2")?;
            for p in delete {
                del.execute(params![ns_id, p])?;
            }
            for prefix in delete_under {
                match successor(prefix) {
                    Some(end) => tx.execute(
                        "DELETE FROM files WHERE ns_id = ?1 AND path >= ?2 AND path < ?3",
                        params![ns_id, prefix, end],
                    )?,
                    None => tx.execute("DELETE FROM files WHERE ns_id = ?1 AND path >= ?2", params![ns_id, prefix])?,
                };
            }
            Ok(())
        })
    }

    /// Records that `path`'s bytes are now in the disk tier as a blob (copy-to-cache), if the row
    /// still names that digest.
    pub fn mark_file_copied(&self, ns_id: i64, path: &[u8], digest: &Digest) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE files SET is_copied = 1 WHERE ns_id = ?1 AND path = ?2 AND sha256 = ?3",
                params![ns_id, path, &digest.as_bytes()[..]],
            )?;
            Ok(n > 0)
        })
    }

    /// Empties `ns_id`'s read cache and records `state` as what the next build uses. Returns the
    /// digests of copied blobs no longer referenced, whose files the caller deletes.
    pub fn reset_files(&self, ns_id: i64, state: &DirState) -> Result<Vec<Digest>> {
        self.write(|tx| {
            tx.execute("DELETE FROM files WHERE ns_id = ?1", [ns_id])?;
            put_dir_state(tx, ns_id, state)?;
            crate::blobs::delete_orphan_blobs(tx)
        })
    }

    /// Records what `ns_id`'s read cache was built with, and when.
    pub fn put_dir_state(&self, ns_id: i64, state: &DirState) -> Result<()> {
        self.write(|tx| put_dir_state(tx, ns_id, state))
    }

    /// What `ns_id`'s read cache was built with, if it was ever built.
    pub fn get_dir_state(&self, ns_id: i64) -> Result<Option<DirState>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT schema_hash, version, config_hash, last_update_ms, last_update_kind FROM dir_state WHERE ns_id = ?1",
            )?
            .query_row([ns_id], |r| {
                Ok(DirState {
                    schema_hash: r.get(0)?,
                    version: r.get(1)?,
                    config_hash: r.get(2)?,
                    last_update_ms: r.get(3)?,
                    last_update_kind: r.get(4)?,
                })
            })
            .optional()
            .map_err(Into::into)
        })
    }

    /// Totals of `ns_id`'s read cache.
    pub fn dir_stats(&self, ns_id: i64) -> Result<DirStats> {
        self.read(|c| dir_stats_on(c, ns_id))
    }

    /// One page of directory namespace `ns_id`'s files (see [`ListRequest`]), paged in SQL: each
    /// step is an index seek, and a common prefix is skipped over in one seek however many keys
    /// it holds.
    pub fn list_files(&self, ns_id: i64, req: &ListRequest) -> Result<ListPage> {
        self.read(|c| {
            list(c, KeyType::Blob, ns_id, req, |r| {
                let row = file_row(r)?;
                Ok(ListedItem {
                    size_bytes: row.markers.size_bytes,
                    md5: row.md5.map(hex::encode),
                    digest: row.sha256,
                    modified_ms: row.markers.mtime_ns / 1_000_000,
                    key: row.path,
                })
            })
        })
    }

    /// One page of namespace `ns_id`'s entries, like [`Index::list_files`].
    pub fn list_entries(&self, ns_id: i64, req: &ListRequest) -> Result<ListPage> {
        self.read(|c| {
            list(c, KeyType::Text, ns_id, req, |r| {
                Ok(ListedItem {
                    key: match r.get_ref(0)? {
                        ValueRef::Text(t) => t.to_vec(),
                        other => other.as_blob()?.to_vec(),
                    },
                    size_bytes: r.get::<_, i64>(1)? as u64,
                    md5: r.get(2)?,
                    digest: Some(digest_of(r.get(3)?)?),
                    modified_ms: r.get(4)?,
                })
            })
        })
    }
}

pub(crate) fn dir_stats_on(c: &Connection, ns_id: i64) -> Result<DirStats> {
    let mut s = c.query_row(
        "SELECT count(*), coalesce(sum(size), 0), coalesce(sum(sha256 IS NULL), 0),
                coalesce(sum(CASE WHEN sha256 IS NULL THEN size ELSE 0 END), 0),
                min(mtime_ns) / 1000000, max(mtime_ns) / 1000000
         FROM files WHERE ns_id = ?1",
        [ns_id],
        |r| {
            Ok(DirStats {
                n_files: r.get::<_, i64>(0)? as u64,
                bytes: r.get::<_, i64>(1)? as u64,
                n_unhashed: r.get::<_, i64>(2)? as u64,
                unhashed_bytes: r.get::<_, i64>(3)? as u64,
                oldest_ms: r.get(4)?,
                newest_ms: r.get(5)?,
                ..DirStats::default()
            })
        },
    )?;
    let last: Option<(Option<i64>, Option<String>)> = c
        .prepare_cached("SELECT last_update_ms, last_update_kind FROM dir_state WHERE ns_id = ?1")?
        .query_row([ns_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((ms, kind)) = last {
        s.last_update_ms = ms;
        s.last_update_kind = kind;
    }
    Ok(s)
}

fn put_dir_state(tx: &rusqlite::Transaction<'_>, ns_id: i64, s: &DirState) -> Result<()> {
    tx.execute(
        "INSERT INTO dir_state (ns_id, schema_hash, version, config_hash, last_update_ms, last_update_kind)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (ns_id) DO UPDATE SET schema_hash = excluded.schema_hash, version = excluded.version,
             config_hash = excluded.config_hash, last_update_ms = excluded.last_update_ms,
             last_update_kind = excluded.last_update_kind",
        params![ns_id, s.schema_hash, s.version, s.config_hash, s.last_update_ms, s.last_update_kind],
    )?;
    Ok(())
}

/// The listing walk shared by files and entries. `item` reads a row whose first column is the key.
fn list(
    c: &Connection,
    kt: KeyType,
    ns_id: i64,
    req: &ListRequest,
    item: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<ListedItem>,
) -> Result<ListPage> {
    let sql = match kt {
        KeyType::Blob => format!(
            "SELECT {FILE_COLUMNS} FROM files WHERE ns_id = ?1 AND path >= ?2 AND (?3 IS NULL OR path < ?3)
             ORDER BY path LIMIT ?4"
        ),
        KeyType::Text => "SELECT e.key, e.size, coalesce(e.etag, b.md5), e.digest, e.created_at FROM entries e
             JOIN blobs b ON b.digest = e.digest
             WHERE e.ns_id = ?1 AND e.key >= ?2 AND (?3 IS NULL OR e.key < ?3) ORDER BY e.key LIMIT ?4"
            .to_owned(),
    };
    let mut stmt = c.prepare_cached(&sql)?;
    let prefix = req.prefix.as_slice();
    let end = successor(prefix);
    let delim = req.delimiter.as_deref().filter(|d| !d.is_empty());
    // `from` is the smallest key still to consider (inclusive).
    let mut from: Vec<u8> = match &req.after {
        // After a common prefix, skip every key under it.
        Some(a) if delim.is_some_and(|d| a.len() > prefix.len() && a.ends_with(d)) => match successor(a) {
            Some(s) => s,
            None => return Ok(ListPage::default()),
        },
        Some(a) if a.as_slice() >= prefix => {
            let mut s = a.clone();
            s.push(0); // The smallest key greater than `a`.
            s
        }
        _ => prefix.to_vec(),
    };
    let mut page = ListPage::default();
    let limit = req.limit.max(1);
    let mut n = 0;
    'seek: loop {
        let want = (limit - n + 1) as i64;
        let mut rows = stmt.query(params![ns_id, Bound(kt, &from), end.as_deref().map(|e| Bound(kt, e)), want])?;
        let mut n_rows = 0;
        while let Some(r) = rows.next()? {
            n_rows += 1;
            let it = item(r)?;
            if n == limit {
                page.is_truncated = true;
                break 'seek;
            }
            let rest = &it.key[prefix.len()..];
            if let Some(d) = delim
                && let Some(i) = rest.windows(d.len()).position(|w| w == d)
            {
                let cp = it.key[..prefix.len() + i + d.len()].to_vec();
                n += 1;
                page.last = Some(cp.clone());
                page.common_prefixes.push(cp.clone());
                match successor(&cp) {
                    Some(s) => from = s,
                    None => break 'seek,
                }
                continue 'seek;
            }
            n += 1;
            page.last = Some(it.key.clone());
            from = it.key.clone();
            from.push(0);
            page.items.push(it);
        }
        if n_rows < want {
            break; // The range is exhausted.
        }
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tiercache_core::{NamespaceName, NamespaceOptions};

    fn fresh() -> (tempfile::TempDir, Index, i64) {
        let dir = tempfile::tempdir().unwrap();
        let (ix, _) = Index::open(&dir.path().join("index.db")).unwrap();
        let ns = NamespaceName::new("d").unwrap();
        let id = ix.put_namespace(&ns, Some("file:///x"), &NamespaceOptions::default(), 1).unwrap().0.id;
        (dir, ix, id)
    }

    fn row(path: &[u8]) -> FileRow {
        FileRow {
            path: path.to_vec(),
            markers: FileMarkers { size_bytes: 3, mtime_ns: 5_000_000, ctime_ns: 6, inode: 7 },
            md5: Some([1; 16]),
            sha256: Some(Digest::of(path)),
            hashed_at_ns: Some(9),
            is_copied: false,
        }
    }

    fn keys(page: &ListPage) -> Vec<String> {
        page.items.iter().map(|i| String::from_utf8_lossy(&i.key).into_owned()).collect()
    }

    fn cps(page: &ListPage) -> Vec<String> {
        page.common_prefixes.iter().map(|i| String::from_utf8_lossy(i).into_owned()).collect()
    }

    #[test]
    fn files_round_trip_and_delete_under_a_prefix() {
        let (_d, ix, id) = fresh();
        let rows: Vec<_> = [&b"a/1"[..], b"a/2", b"a.txt", b"a0", b"\xff\xfe"].iter().map(|p| row(p)).collect();
        ix.apply_files(id, &rows, &[], &[]).unwrap();
        assert_eq!(ix.get_file(id, b"\xff\xfe").unwrap(), Some(rows[4].clone()));
        let mut seen = Vec::new();
        ix.scan_files(id, b"", |r| {
            seen.push(r.path);
            true
        })
        .unwrap();
        assert_eq!(
            seen,
            vec![b"a.txt".to_vec(), b"a/1".to_vec(), b"a/2".to_vec(), b"a0".to_vec(), b"\xff\xfe".to_vec()]
        );
        ix.apply_files(id, &[], &[b"a0".to_vec()], &[b"a/".to_vec()]).unwrap();
        assert_eq!(ix.dir_stats(id).unwrap().n_files, 2);
    }

    #[test]
    fn listing_pages_with_delimiter_and_literal_wildcards() {
        let (_d, ix, id) = fresh();
        let paths = ["a%/x", "a_/y", "aX/z", "a%b", "b/1", "b/2", "b/c/3", "c", "d/e/f"];
        let rows: Vec<_> = paths.iter().map(|p| row(p.as_bytes())).collect();
        ix.apply_files(id, &rows, &[], &[]).unwrap();
        let all = |prefix: &str, delim: Option<&str>, limit| {
            let mut out = (Vec::new(), Vec::new());
            let mut after = None;
            loop {
                let req = ListRequest {
                    prefix: prefix.into(),
                    delimiter: delim.map(Into::into),
                    after: after.clone(),
                    limit,
                };
                let page = ix.list_files(id, &req).unwrap();
                out.0.extend(keys(&page));
                out.1.extend(cps(&page));
                if !page.is_truncated {
                    return out;
                }
                after = page.last.clone();
            }
        };
        for limit in [1, 2, 3, 100] {
            assert_eq!(all("a%", None, limit).0, vec!["a%/x", "a%b"], "limit {limit}");
            let (k, p) = all("", Some("/"), limit);
            assert_eq!(k, vec!["a%b", "c"], "limit {limit}");
            assert_eq!(p, vec!["a%/", "aX/", "a_/", "b/", "d/"], "limit {limit}");
            let (k, p) = all("b/", Some("/"), limit);
            assert_eq!((k, p), (vec!["b/1".to_owned(), "b/2".to_owned()], vec!["b/c/".to_owned()]));
        }
        let page = ix.list_files(id, &ListRequest { prefix: b"B".to_vec(), limit: 10, ..Default::default() }).unwrap();
        assert!(page.items.is_empty() && !page.is_truncated);
    }

    #[test]
    fn reset_empties_the_read_cache_and_records_state() {
        let (_d, ix, id) = fresh();
        ix.apply_files(id, &[row(b"x")], &[], &[]).unwrap();
        let st = DirState {
            schema_hash: ix.schema_hash(),
            version: "1".into(),
            config_hash: "c".into(),
            last_update_ms: None,
            last_update_kind: None,
        };
        ix.reset_files(id, &st).unwrap();
        assert_eq!(ix.dir_stats(id).unwrap().n_files, 0);
        assert_eq!(ix.get_dir_state(id).unwrap(), Some(st));
    }
}
