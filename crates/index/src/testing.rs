//! Helpers the unit tests share: a fresh index in a temporary directory and a minimal new entry.
//! Compiled for tests only.

use crate::{Index, NewEntry, Validators};

/// A new, empty index in its own temporary directory (kept alive by the returned guard).
pub(crate) fn fresh() -> (tempfile::TempDir, Index) {
    let dir = tempfile::tempdir().unwrap();
    let (ix, opened) = Index::open(&dir.path().join("index.db")).unwrap();
    assert!(opened.created && opened.notes.is_empty());
    (dir, ix)
}

/// An entry `key` of namespace `ns_id` with no content type and no validators.
pub(crate) fn entry(ns_id: i64, key: &str) -> NewEntry {
    NewEntry { ns_id, key: key.into(), validators: Validators::default(), ..NewEntry::default() }
}
