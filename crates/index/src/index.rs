//! The `Index` handle: opening the database file (creating it, migrating its schema, moving aside
//! or resetting a file this build cannot use), the one writer connection and the pool of readers,
//! the upkeep of the file itself (its size, `VACUUM`, SQLite's integrity check), and the error type
//! every query returns.
//!
//! It holds no queries of rows: those live in one module per subject (`namespaces.rs`,
//! `entries.rs`, `blobs.rs`, `access.rs`, `stats.rs`, `files.rs`, `lifecycle.rs`, `counters.rs`),
//! each an `impl Index` block that runs its statements through `Index::read` and `Index::write`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use tiercache_core::Digest;

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

/// What every query of the index returns.
pub(crate) type Result<T> = std::result::Result<T, IndexError>;

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

/// A digest column: 64 hex digits, or a conversion failure naming the text column.
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

    /// Runs `f` in one immediate transaction on the writer connection and commits it if `f`
    /// succeeds. Immediate, so that a write waits for another process's lock at its start (under
    /// the busy timeout) instead of failing when it first writes.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` on a read-only connection from the pool (opening one if none is idle), which
    /// proceeds while the writer writes (WAL).
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

    // The upkeep of the database file itself, not of its rows.

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

#[cfg(test)]
mod tests {
    use tiercache_core::{NamespaceName, NamespaceOptions};

    use super::*;
    use crate::testing::fresh;

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
}
