//! Schema and add-only migrations, keyed by SQLite's `user_version`.
//!
//! Migration `i` (0-based) moves the database from `user_version = i` to `i + 1`. A migration is
//! never edited once released; a change is a new migration appended to [`MIGRATIONS`].

use rusqlite::Connection;

/// Every migration in order. `user_version` counts how many have been applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    r#"
-- AUTOINCREMENT: a deleted namespace's id is never reused, so nothing keyed by an old id (a fetch
-- still running, a lock file) can be mistaken for a namespace created later under the same name.
CREATE TABLE namespaces (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL UNIQUE,
    source        TEXT,
    created_at    INTEGER NOT NULL
);

-- Invariant: a row with state = 1 (present) names a file in the disk tier whose SHA-256 was
-- verified before it was renamed into place. state = 0 (pending) is written just before that
-- rename, so a crash between rename and commit is repaired at start-up without scanning the disk.
CREATE TABLE blobs (
    digest        TEXT PRIMARY KEY,
    size          INTEGER NOT NULL,
    md5           TEXT,
    state         INTEGER NOT NULL,
    is_retained   INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    last_access   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE entries (
    ns_id                 INTEGER NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    key                   TEXT NOT NULL,
    digest                TEXT NOT NULL REFERENCES blobs(digest),
    size                  INTEGER NOT NULL,
    content_type          TEXT,
    source_etag           TEXT,
    source_last_modified  TEXT,
    created_at            INTEGER NOT NULL,
    last_access           INTEGER NOT NULL,
    validated_at          INTEGER NOT NULL,
    hits                  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ns_id, key)
) WITHOUT ROWID;

CREATE INDEX entries_by_digest ON entries(digest);
CREATE INDEX blobs_by_state ON blobs(state) WHERE state = 0;
"#,
    r#"
-- Namespace options (JSON of tiercache_core::NamespaceOptions), NULL for the defaults.
ALTER TABLE namespaces ADD COLUMN options TEXT;

-- Facts about the index file itself (the schema hash it was built with).
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
) WITHOUT ROWID;

-- The read cache of a directory namespace: one row per regular file under its root. A replica of
-- the directory, never written except to follow it. Hashes are NULL until the file is read.
-- Invariant: md5 and sha256 are the hashes of the bytes the file held while its markers
-- (size, mtime_ns, ctime_ns, inode) were as recorded here.
CREATE TABLE files (
    ns_id         INTEGER NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    path          BLOB NOT NULL,
    size          INTEGER NOT NULL,
    mtime_ns      INTEGER NOT NULL,
    ctime_ns      INTEGER NOT NULL,
    inode         INTEGER NOT NULL,
    md5           BLOB,
    sha256        BLOB,
    hashed_at_ns  INTEGER,
    is_copied     INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (ns_id, path)
) WITHOUT ROWID;

-- Blobs copied into the disk tier from a directory (copy-to-cache) are referenced from here.
CREATE INDEX files_copied ON files(sha256) WHERE is_copied = 1;

-- What a directory namespace's read cache was built with; a difference at open resets it.
CREATE TABLE dir_state (
    ns_id             INTEGER PRIMARY KEY REFERENCES namespaces(id) ON DELETE CASCADE,
    schema_hash       TEXT NOT NULL,
    version           TEXT NOT NULL,
    config_hash       TEXT NOT NULL,
    last_update_ms    INTEGER,
    last_update_kind  TEXT
);
"#,
    r#"
-- Counters summed over every process that used this data directory (the shared tier's hits,
-- misses, write-backs, …), and a few latest values (the breaker's state). Written in batches with
-- the access times; read by `stats`.
CREATE TABLE counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
) WITHOUT ROWID;
"#,
    r#"
-- Uploaded blobs (PUT /blobs/…) may be the only copy anywhere: never evicted or pruned. Blobs
-- adopted from disk are retained too, but not uploads, so the pruner may take them once orphaned.
ALTER TABLE blobs ADD COLUMN is_upload INTEGER NOT NULL DEFAULT 0;
UPDATE blobs SET is_upload = is_retained;

-- Pins: the blobs of pinned entries are never evicted, and pinned entries never pruned by age or
-- quota. key = '' pins every entry of the namespace.
CREATE TABLE pins (
    ns_id  INTEGER NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    key    TEXT NOT NULL,
    PRIMARY KEY (ns_id, key)
) WITHOUT ROWID;

-- When the owner-liveness hook first said the namespace's owner is gone (ms); NULL while alive.
ALTER TABLE namespaces ADD COLUMN owner_dead_since INTEGER;

CREATE INDEX entries_by_last_access ON entries(last_access);
"#,
    r#"
-- Where a namespace's blobs are kept: NULL in the shared disk tier of the data directory
-- (managed); else a host directory (absolute path) holding this namespace's blobs alone. Mirrors
-- the "storage" option, so that queries can tell managed entries from the others.
-- A blob row with state = 2 names a digest known to the index (entries of a namespace stored in
-- its own directory name it) that the shared disk tier does not hold.
ALTER TABLE namespaces ADD COLUMN storage TEXT;
"#,
    r#"
-- The Content-Encoding a source sent an entry's bytes with (gzip, say), served back with them;
-- NULL for identity. The blob holds the bytes as sent, and the entry's ETag is their MD5.
ALTER TABLE entries ADD COLUMN content_encoding TEXT;
"#,
    r#"
-- Multipart uploads under way (S3's CreateMultipartUpload … Complete): one row per upload, one
-- per part stored. A part's bytes are the file <data>/uploads/<id>/<file>, renamed into place
-- before its row is written; a file no row names is swept (recovery, the pruner).
-- Invariant: a part row names a complete, fsynced file whose MD5 and size are recorded here.
CREATE TABLE uploads (
    id            TEXT PRIMARY KEY,
    ns_id         INTEGER NOT NULL REFERENCES namespaces(id) ON DELETE CASCADE,
    key           TEXT NOT NULL,
    content_type  TEXT,
    meta          TEXT,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX uploads_by_key ON uploads(ns_id, key, id);
CREATE INDEX uploads_by_age ON uploads(created_at);

CREATE TABLE upload_parts (
    upload_id    TEXT NOT NULL REFERENCES uploads(id) ON DELETE CASCADE,
    part_number  INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    md5          TEXT NOT NULL,
    file         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (upload_id, part_number)
) WITHOUT ROWID;

-- An entry's ETag when it is not its blob's MD5: a completed multipart upload's
-- hex(md5(part MD5s))-N. NULL for every other entry; any other write of the entry clears it.
ALTER TABLE entries ADD COLUMN etag TEXT;
"#,
    r#"
-- What an S3 client stored with an object besides its bytes and type (Cache-Control,
-- Content-Disposition, Content-Language, x-amz-meta-*), as a JSON object; NULL for none. Any
-- other write of the entry clears it.
ALTER TABLE entries ADD COLUMN attrs TEXT;
"#,
    r#"
-- The sizes of the parts a completed multipart upload made an entry of, in order, as decimal
-- numbers joined by commas (S3's GetObject ?partNumber=N answers one part); NULL for an entry
-- written whole. Any other write of the entry clears it.
-- Invariant: when set, the sizes sum to the entry's size and their count is the N of its etag.
ALTER TABLE entries ADD COLUMN part_sizes TEXT;
"#,
    r#"
-- Derivations: the blob a recipe made from an input blob, by key (recipe, its version, its
-- canonical parameters, the input's digest). The output is an ordinary blob, committed retained
-- (no entry names it) in the same transaction as its row, and evictable like any other.
-- Invariant: a row whose output blob is not present (evicted, lost) is a miss, never served; it
-- is replaced when the output is made again. A new recipe version is a new key: old rows are
-- never found again, and their blobs leave with eviction.
CREATE TABLE derivations (
    recipe        TEXT NOT NULL,
    version       INTEGER NOT NULL,
    params        TEXT NOT NULL,
    input         TEXT NOT NULL,
    output        TEXT NOT NULL,
    size          INTEGER NOT NULL,
    content_type  TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (recipe, version, params, input)
) WITHOUT ROWID;
CREATE INDEX derivations_by_output ON derivations(output);
"#,
];

/// Brings `conn` up to the newest schema. Returns the version found before migrating.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<u32> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let found: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tracing::info!(from = i, to = i + 1, "migrating index schema");
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as u32)?;
    }
    tx.commit()?;
    Ok(found)
}

/// The newest schema version this build knows.
pub(crate) fn newest() -> u32 {
    MIGRATIONS.len() as u32
}

/// A hash of the whole schema this build creates. Two builds with the same `user_version` but a
/// different schema (which released builds never have, but development builds may) differ here.
pub(crate) fn hash() -> String {
    let mut h = tiercache_core::Hasher::new();
    for m in MIGRATIONS {
        h.update(m.as_bytes());
    }
    h.finish().hex()[..16].to_owned()
}
