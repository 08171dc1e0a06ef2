//! Queries over the index. Every public method is one short transaction.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
pub use tiercache_core::Validators;
use tiercache_core::{Digest, Key, NamespaceName, NamespaceOptions};

use crate::schema;

/// How long a call waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle reader connections kept for reuse.
const MAX_IDLE_READERS: usize = 8;

/// An index failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// SQLite refused or failed.
    #[error("index database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The file was written by a newer tiercache.
    #[error("index schema version {found} is newer than this tiercache understands ({newest})")]
    TooNew {
        /// Version in the file.
        found: u32,
        /// Newest version known here.
        newest: u32,
    },
    /// A namespace exists with a different definition.
    #[error("namespace {name} already exists with source {existing:?}")]
    Conflict {
        /// The namespace.
        name: String,
        /// Its current source.
        existing: Option<String>,
    },
    /// A stored value does not parse (the file was edited by hand or damaged).
    #[error("index holds a malformed value: {0}")]
    Malformed(String),
}

type Result<T> = std::result::Result<T, IndexError>;

/// A namespace row.
#[derive(Debug, Clone, Serialize)]
pub struct Namespace {
    /// Row id; stable for the namespace's life.
    #[serde(skip)]
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The bound source's URL, if any.
    pub source: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Options beyond the source.
    #[serde(skip_serializing_if = "NamespaceOptions::is_default")]
    pub options: NamespaceOptions,
}

impl Namespace {
    /// The root directory, if the source is a directory (`file://` URL).
    pub fn dir_root(&self) -> Option<&str> {
        self.source.as_deref().and_then(|s| s.strip_prefix("file://"))
    }
}

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
    /// The blob's MD5 (lowercase hex), once computed.
    pub md5: Option<String>,
    /// Content type reported by the source.
    pub content_type: Option<String>,
    /// The source's validators.
    pub validators: Validators,
    /// Creation time, ms.
    pub created_at: i64,
    /// Last successful check against the source, ms.
    pub validated_at: i64,
}

/// What the engine hands over when a fetched blob becomes an entry.
#[derive(Debug, Clone)]
pub struct NewEntry {
    /// Owning namespace id.
    pub ns_id: i64,
    /// The key.
    pub key: String,
    /// Content type reported by the source.
    pub content_type: Option<String>,
    /// The source's validators.
    pub validators: Validators,
}

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

/// One batched access: an entry (or just a blob) was read at `at_ms`, `n_hits` times.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// `(namespace id, key)` of the entry read, if it was an entry.
    pub entry: Option<(i64, String)>,
    /// The blob read.
    pub digest: Digest,
    /// Time of the latest read, ms.
    pub at_ms: i64,
    /// Reads folded into this record.
    pub n_hits: u64,
}

/// Per-namespace totals.
#[derive(Debug, Clone, Serialize)]
pub struct NamespaceStats {
    /// Namespace name.
    pub name: String,
    /// Bound source, if any.
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
    /// Blobs no entry references (retained uploads included).
    pub n_unreferenced_blobs: u64,
    /// Per namespace, by name.
    pub namespaces: Vec<NamespaceStats>,
}

/// The SQLite index of one data directory.
pub struct Index {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("path", &self.path).finish_non_exhaustive()
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(())
}

pub(crate) fn digest_of(s: String) -> rusqlite::Result<Digest> {
    Digest::from_hex(&s)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

impl Index {
    /// Opens (creating if needed) the index at `path` and migrates it to the newest schema.
    ///
    /// A file that is not a usable SQLite database is moved aside (with its `-wal` and `-shm`, so
    /// that no stale log pairs with the new file) and a new one is created. A database whose
    /// schema this build cannot use (written by a newer tiercache, or with a different schema
    /// under the same version) is reset in place, in one transaction, which is safe while other
    /// processes hold it open. In both cases [`Opened::needs_rebuild`] is set and
    /// [`Opened::notes`] says what happened: the caller rebuilds the rows from the disk tier and
    /// the namespace definitions.
    pub fn open(path: &Path) -> Result<(Index, Opened)> {
        let mut opened = Opened { created: !path.exists(), needs_rebuild: false, notes: Vec::new() };
        let conn = match open_and_migrate(path, &mut opened) {
            Err(IndexError::Sqlite(e)) if !opened.created && is_not_a_database(&e) => {
                let aside = move_aside(path)?;
                let note = format!(
                    "{} was not a usable SQLite database ({e}); moved it aside to {} and started a new index",
                    path.display(),
                    aside.display()
                );
                tracing::warn!("{note}");
                opened = Opened { created: true, needs_rebuild: true, notes: vec![note] };
                open_and_migrate(path, &mut opened)?
            }
            other => other?,
        };
        Ok((Index { path: path.to_owned(), writer: Mutex::new(conn), readers: Mutex::new(Vec::new()) }, opened))
    }

    /// The hash of the schema this build creates, as recorded in the index.
    pub fn schema_hash(&self) -> String {
        schema::hash()
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
                )?;
                configure(&c)?;
                c
            }
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < MAX_IDLE_READERS {
            pool.push(conn);
        }
        out
    }

    // ---- namespaces ----

    /// Creates a namespace, or returns the existing one if it has the same source (updating its
    /// options if they differ).
    ///
    /// Returns the namespace and whether this call created it. Fails with
    /// [`IndexError::Conflict`] if it exists with a different source.
    pub fn put_namespace(
        &self,
        name: &NamespaceName,
        source: Option<&str>,
        options: &NamespaceOptions,
        now_ms: i64,
    ) -> Result<(Namespace, bool)> {
        let options_json = (!options.is_default()).then(|| serde_json::to_string(options).expect("options serialize"));
        self.write(|tx| {
            if let Some(existing) = namespace_by_name(tx, name.as_str())? {
                if existing.source.as_deref() != source {
                    return Err(IndexError::Conflict { name: existing.name, existing: existing.source });
                }
                if existing.options != *options {
                    tx.execute(
                        "UPDATE namespaces SET options = ?2, storage = ?3 WHERE id = ?1",
                        params![existing.id, options_json, options.storage],
                    )?;
                    return Ok((Namespace { options: options.clone(), ..existing }, false));
                }
                return Ok((existing, false));
            }
            tx.execute(
                "INSERT INTO namespaces (name, source, created_at, options, storage) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name.as_str(), source, now_ms, options_json, options.storage],
            )?;
            let ns = namespace_by_name(tx, name.as_str())?.expect("row just inserted");
            Ok((ns, true))
        })
    }

    /// The namespace called `name`, if any.
    pub fn get_namespace(&self, name: &str) -> Result<Option<Namespace>> {
        self.read(|c| namespace_by_name(c, name))
    }

    /// Every namespace, by name.
    pub fn list_namespaces(&self) -> Result<Vec<Namespace>> {
        self.read(|c| {
            let mut stmt = c.prepare("SELECT id, name, source, created_at, options FROM namespaces ORDER BY name")?;
            let rows = stmt.query_map([], namespace_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Deletes a namespace and its entries, and the rows of blobs that no entry references any more
    /// (unless retained). Returns `None` if there was no such namespace, else the number of entries
    /// removed and the digests whose files the caller must now delete.
    pub fn delete_namespace(&self, name: &str) -> Result<Option<(u64, Vec<Digest>)>> {
        self.write(|tx| {
            let Some(ns) = namespace_by_name(tx, name)? else { return Ok(None) };
            let n = tx.execute("DELETE FROM entries WHERE ns_id = ?1", [ns.id])? as u64;
            tx.execute("DELETE FROM namespaces WHERE id = ?1", [ns.id])?;
            let orphans = delete_orphan_blobs(tx)?;
            Ok(Some((n, orphans)))
        })
    }

    // ---- entries ----

    /// The entry `(ns_id, key)`, joined with its blob's MD5.
    pub fn get_entry(&self, ns_id: i64, key: &Key) -> Result<Option<Entry>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT e.ns_id, e.key, e.digest, e.size, b.md5, e.content_type, e.source_etag,
                        e.source_last_modified, e.created_at, e.validated_at
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

    // ---- blobs ----

    /// Records that a verified blob is about to be renamed into the disk tier (step 3 of the put
    /// protocol in docs/design.md). Leaves an existing row alone, unless it is absent from the
    /// disk tier: then it becomes pending.
    pub fn mark_pending(&self, digest: &Digest, size_bytes: u64, now_ms: i64) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO blobs (digest, size, state, created_at, last_access) VALUES (?1, ?2, 0, ?3, ?3)
                 ON CONFLICT (digest) DO UPDATE SET state = 0, created_at = excluded.created_at WHERE state = 2",
                params![digest.hex(), size_bytes as i64, now_ms],
            )?;
            Ok(())
        })
    }

    /// Commits a blob now in the disk tier as present, and optionally the entry that names it, in
    /// one transaction. `retain` keeps the blob even when no entry references it; `is_upload`
    /// marks a blob uploaded straight to tiercache (maybe the only copy): never evicted or pruned.
    ///
    /// An entry whose namespace was deleted meanwhile is not written: the blob is then an orphan,
    /// which the pruner removes.
    pub fn commit_blob(
        &self,
        digest: &Digest,
        size_bytes: u64,
        (retain, is_upload): (bool, bool),
        entry: Option<&NewEntry>,
        now_ms: i64,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO blobs (digest, size, state, is_retained, is_upload, created_at, last_access)
                 VALUES (?1, ?2, 1, ?3, ?4, ?5, ?5)
                 ON CONFLICT (digest) DO UPDATE SET state = 1, is_retained = max(is_retained, excluded.is_retained),
                     is_upload = max(is_upload, excluded.is_upload), last_access = excluded.last_access",
                params![digest.hex(), size_bytes as i64, retain, is_upload, now_ms],
            )?;
            if let Some(e) = entry {
                upsert_entry(tx, e, digest, size_bytes, now_ms)?;
            }
            Ok(())
        })
    }

    /// Commits `entry`, naming a blob just published in its namespace's own directory (not the
    /// disk tier): the blob row is added as absent from the disk tier if the index does not know
    /// the digest yet. Skipped, like [`Index::commit_blob`]'s entry, if the namespace is gone.
    pub fn commit_entry_elsewhere(
        &self,
        digest: &Digest,
        size_bytes: u64,
        entry: &NewEntry,
        now_ms: i64,
    ) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO blobs (digest, size, state, created_at, last_access) VALUES (?1, ?2, 2, ?3, ?3)
                 ON CONFLICT (digest) DO NOTHING",
                params![digest.hex(), size_bytes as i64, now_ms],
            )?;
            upsert_entry(tx, entry, digest, size_bytes, now_ms)
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

    /// Applies a batch of reads in one transaction: last-access times and hit counts.
    pub fn record_access(&self, batch: &[AccessRecord]) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.write(|tx| {
            let mut entry_stmt = tx.prepare_cached(
                "UPDATE entries SET last_access = max(last_access, ?3), hits = hits + ?4 WHERE ns_id = ?1 AND key = ?2",
            )?;
            let mut blob_stmt =
                tx.prepare_cached("UPDATE blobs SET last_access = max(last_access, ?2) WHERE digest = ?1")?;
            for rec in batch {
                if let Some((ns_id, key)) = &rec.entry {
                    entry_stmt.execute(params![ns_id, key, rec.at_ms, rec.n_hits as i64])?;
                }
                blob_stmt.execute(params![rec.digest.hex(), rec.at_ms])?;
            }
            Ok(())
        })
    }

    // ---- reports and maintenance ----

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
                   AND NOT EXISTS (SELECT 1 FROM files f WHERE f.sha256 = unhex(b.digest) AND f.is_copied = 1)",
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

    /// Size in bytes of the database file and its WAL.
    pub fn file_bytes(&self) -> u64 {
        let wal = self.path.with_extension("db-wal");
        [self.path.as_path(), wal.as_path()].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
    }

    /// Checkpoints the WAL into the main file and rebuilds the file compactly (`VACUUM`).
    pub fn vacuum(&self) -> Result<()> {
        let conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute_batch("VACUUM;")?;
        let _: (i64, i64, i64) =
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(())
    }

    /// Checks SQLite's own consistency (`PRAGMA integrity_check`, `foreign_key_check`); returns the
    /// problems found, empty if none.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        self.read(|c| {
            let mut problems: Vec<String> = c
                .prepare("PRAGMA integrity_check")?
                .query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?
                .into_iter()
                .filter(|s| s != "ok")
                .collect();
            let n_fk: i64 = c.query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| r.get(0))?;
            if n_fk > 0 {
                problems.push(format!("{n_fk} rows violate foreign keys"));
            }
            Ok(problems)
        })
    }
}

/// What opening the index found and did.
#[derive(Debug, Clone, Default)]
pub struct Opened {
    /// The file did not exist (or was moved aside) and was created.
    pub created: bool,
    /// The rows are gone (new file, or reset): rebuild them from the disk tier and definitions.
    pub needs_rebuild: bool,
    /// What happened, for the log and the command line (empty on an ordinary open).
    pub notes: Vec<String>,
}

fn is_not_a_database(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt))
}

/// Renames `path` and its `-wal` and `-shm` files to `<path>.corrupt-<ms>[-wal|-shm]`.
fn move_aside(path: &Path) -> Result<PathBuf> {
    let stamp = tiercache_core::now_ms();
    let aside = PathBuf::from(format!("{}.corrupt-{stamp}", path.display()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        match std::fs::rename(&from, &to) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(IndexError::Malformed(format!("cannot move {} aside: {e}", from.display())));
            }
            _ => {}
        }
    }
    Ok(aside)
}

fn open_and_migrate(path: &Path, opened: &mut Opened) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL lets readers in other processes (the CLI beside a server) proceed during writes.
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    configure(&conn)?;
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > schema::newest() {
        let why = format!(
            "index schema version {found} was written by a newer tiercache (this one knows {}); rebuilding the index",
            schema::newest()
        );
        reset_schema(&mut conn, opened, why)?;
    }
    let found = schema::migrate(&mut conn)?;
    let stored: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'schema_hash'", [], |r| r.get(0)).optional()?;
    if found == schema::newest() && stored.as_deref().is_some_and(|h| h != schema::hash()) {
        let why = format!(
            "index schema changed (hash {} in the file, {} in this build); rebuilding the index",
            stored.clone().unwrap_or_default(),
            schema::hash()
        );
        reset_schema(&mut conn, opened, why)?;
        schema::migrate(&mut conn)?;
    }
    if stored.as_deref() != Some(schema::hash().as_str()) {
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_hash', ?1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [schema::hash()],
        )?;
    }
    Ok(conn)
}

/// Drops every table in one transaction and leaves `user_version` at 0 for the migrations to run
/// again. Other processes see the new schema at their next statement (SQLite's schema cookie).
fn reset_schema(conn: &mut Connection, opened: &mut Opened, why: String) -> Result<()> {
    tracing::warn!("{why}");
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let tables: Vec<String> = tx
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    for t in tables {
        tx.execute_batch(&format!("DROP TABLE \"{}\";", t.replace('"', "\"\"")))?;
    }
    let has_sequence: bool =
        tx.query_row("SELECT count(*) > 0 FROM sqlite_master WHERE name = 'sqlite_sequence'", [], |r| r.get(0))?;
    if has_sequence {
        tx.execute("DELETE FROM sqlite_sequence", [])?;
    }
    tx.pragma_update(None, "user_version", 0)?;
    tx.commit()?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    opened.needs_rebuild = true;
    opened.notes.push(why);
    Ok(())
}

fn namespace_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Namespace> {
    let options = options_of(r, 4)?;
    Ok(Namespace { id: r.get(0)?, name: r.get(1)?, source: r.get(2)?, created_at: r.get(3)?, options })
}

/// Column `i` of `r`: namespace options as JSON, NULL for the defaults.
pub(crate) fn options_of(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<NamespaceOptions> {
    match r.get::<_, Option<String>>(i)? {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))),
        None => Ok(NamespaceOptions::default()),
    }
}

fn namespace_by_name(c: &Connection, name: &str) -> Result<Option<Namespace>> {
    c.prepare_cached("SELECT id, name, source, created_at, options FROM namespaces WHERE name = ?1")?
        .query_row([name], namespace_row)
        .optional()
        .map_err(Into::into)
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

/// Inserts or replaces an entry, if its namespace still exists.
fn upsert_entry(
    tx: &rusqlite::Transaction<'_>,
    e: &NewEntry,
    digest: &Digest,
    size_bytes: u64,
    now_ms: i64,
) -> Result<()> {
    let ns_exists: bool = tx.query_row("SELECT count(*) > 0 FROM namespaces WHERE id = ?1", [e.ns_id], |r| r.get(0))?;
    if !ns_exists {
        return Ok(());
    }
    tx.execute(
        "INSERT INTO entries (ns_id, key, digest, size, content_type, source_etag, source_last_modified,
                              created_at, last_access, validated_at, hits)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8, 0)
         ON CONFLICT (ns_id, key) DO UPDATE SET digest = excluded.digest, size = excluded.size,
             content_type = excluded.content_type, source_etag = excluded.source_etag,
             source_last_modified = excluded.source_last_modified, created_at = excluded.created_at,
             last_access = excluded.last_access, validated_at = excluded.validated_at",
        params![
            e.ns_id,
            e.key,
            digest.hex(),
            size_bytes as i64,
            e.content_type,
            e.validators.etag,
            e.validators.last_modified,
            now_ms
        ],
    )?;
    Ok(())
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

    fn fresh() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let (ix, opened) = Index::open(&dir.path().join("index.db")).unwrap();
        assert!(opened.created && opened.notes.is_empty());
        (dir, ix)
    }

    fn entry(ns_id: i64, key: &str) -> NewEntry {
        NewEntry { ns_id, key: key.into(), content_type: None, validators: Validators::default() }
    }

    #[test]
    fn reopen_keeps_schema_and_rows() {
        let (dir, ix) = fresh();
        let ns = NamespaceName::new("a").unwrap();
        ix.put_namespace(&ns, Some("http://x/"), &NamespaceOptions::default(), 1).unwrap();
        drop(ix);
        let (ix, opened) = Index::open(&dir.path().join("index.db")).unwrap();
        assert!(!opened.created && !opened.needs_rebuild);
        assert_eq!(ix.list_namespaces().unwrap().len(), 1);
    }

    #[test]
    fn a_changed_schema_resets_the_index_and_a_non_database_is_moved_aside() {
        let (dir, ix) = fresh();
        let path = dir.path().join("index.db");
        ix.put_namespace(&NamespaceName::new("a").unwrap(), None, &NamespaceOptions::default(), 1).unwrap();
        // A second handle stays open across the reset, as another process would.
        let (other, opened) = Index::open(&path).unwrap();
        assert!(!opened.needs_rebuild);
        ix.write(|tx| Ok(tx.execute("UPDATE meta SET value = 'other' WHERE key = 'schema_hash'", [])?)).unwrap();
        drop(ix);
        let (ix, opened) = Index::open(&path).unwrap();
        assert!(opened.needs_rebuild && opened.notes[0].contains("schema changed"), "{:?}", opened.notes);
        assert!(ix.list_namespaces().unwrap().is_empty());
        assert!(other.list_namespaces().unwrap().is_empty(), "the other handle sees the new schema");
        let (_, opened) = Index::open(&path).unwrap();
        assert!(!opened.needs_rebuild, "the reset happens once");
        drop((ix, other));

        std::fs::write(&path, b"this is not a database, just some text long enough to be a header").unwrap();
        std::fs::write(dir.path().join("index.db-wal"), b"stale").unwrap();
        let (ix, opened) = Index::open(&path).unwrap();
        assert!(opened.created && opened.needs_rebuild && opened.notes[0].contains("moved it aside"));
        assert!(ix.list_namespaces().unwrap().is_empty());
        let aside: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(aside.iter().any(|n| n.to_string_lossy().contains(".corrupt-")), "{aside:?}");
        let wal = std::fs::read(dir.path().join("index.db-wal")).unwrap_or_default();
        assert_ne!(wal, b"stale", "the old log must not pair with the new database");
    }

    #[test]
    fn namespace_create_is_idempotent_and_conflicts_on_other_source() {
        let (_d, ix) = fresh();
        let ns = NamespaceName::new("a").unwrap();
        assert!(ix.put_namespace(&ns, Some("http://x/"), &NamespaceOptions::default(), 1).unwrap().1);
        assert!(!ix.put_namespace(&ns, Some("http://x/"), &NamespaceOptions::default(), 2).unwrap().1);
        assert!(matches!(
            ix.put_namespace(&ns, Some("http://y/"), &NamespaceOptions::default(), 3),
            Err(IndexError::Conflict { .. })
        ));
    }

    #[test]
    fn shared_blob_survives_until_last_namespace_goes() {
        let (_d, ix) = fresh();
        let a = ix.put_namespace(&NamespaceName::new("a").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        let b = ix.put_namespace(&NamespaceName::new("b").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        let d = Digest::of(b"shared");
        ix.commit_blob(&d, 6, (false, false), Some(&entry(a.id, "k")), 1).unwrap();
        ix.commit_blob(&d, 6, (false, false), Some(&entry(b.id, "k2")), 1).unwrap();
        let (n, orphans) = ix.delete_namespace("a").unwrap().unwrap();
        assert_eq!((n, orphans.len()), (1, 0));
        let (n, orphans) = ix.delete_namespace("b").unwrap().unwrap();
        assert_eq!((n, orphans), (1, vec![d]));
        assert!(ix.delete_namespace("b").unwrap().is_none());
    }

    #[test]
    fn prefix_cleanup_is_byte_exact() {
        let (_d, ix) = fresh();
        let a = ix.put_namespace(&NamespaceName::new("a").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        for (i, key) in ["dir%/x", "dir_/y", "dirX/z", "dir%/w", "Dir%/v"].iter().enumerate() {
            ix.commit_blob(&Digest::of(&[i as u8]), 1, (false, false), Some(&entry(a.id, key)), 1).unwrap();
        }
        let (n, orphans) = ix.cleanup(Some(a.id), Some("dir%/")).unwrap();
        assert_eq!((n, orphans.len()), (2, 2));
        assert_eq!(ix.stats(None).unwrap().n_entries, 3);
    }

    #[test]
    fn retained_blobs_outlive_cleanup_and_pending_rows_are_listed() {
        let (_d, ix) = fresh();
        let d = Digest::of(b"upload");
        ix.commit_blob(&d, 6, (true, true), None, 1).unwrap();
        let p = Digest::of(b"pending");
        ix.mark_pending(&p, 7, 1).unwrap();
        assert_eq!(ix.pending_blobs().unwrap(), vec![p]);
        let (_, orphans) = ix.cleanup(None, None).unwrap();
        assert!(orphans.is_empty());
        assert_eq!(ix.stats(None).unwrap().n_blobs, 1);
    }

    #[test]
    fn access_batches_accumulate_hits() {
        let (_d, ix) = fresh();
        let a = ix.put_namespace(&NamespaceName::new("a").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        let d = Digest::of(b"x");
        ix.commit_blob(&d, 1, (false, false), Some(&entry(a.id, "k")), 1).unwrap();
        let rec = AccessRecord { entry: Some((a.id, "k".into())), digest: d, at_ms: 50, n_hits: 3 };
        ix.record_access(&[rec.clone(), rec]).unwrap();
        assert_eq!(ix.stats(Some("a")).unwrap().namespaces[0].hits, 6);
    }
}
