//! Namespaces (table `namespaces`): creating one (or finding it already there), looking one up,
//! listing them, deleting one with its entries.
//!
//! A namespace's definition file is the durable record, written by the engine before these rows;
//! where a namespace keeps its blobs (`storage`) is one of its options here, and moving it is the
//! engine's work, not this module's.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use tiercache_core::{Digest, NamespaceName, NamespaceOptions};

use crate::blobs::delete_orphan_blobs;
use crate::index::{Index, IndexError, Result};

/// A namespace row.
#[derive(Debug, Clone, Serialize)]
pub struct Namespace {
    /// Row id; stable for the namespace's life.
    #[serde(skip)]
    pub id: i64,
    /// Its name.
    pub name: String,
    /// The bound source's URL, if any (serialized with its credentials redacted).
    #[serde(serialize_with = "serialize_redacted")]
    pub source: Option<String>,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
    /// Options beyond the source (serialized with an S3 secret key shown as `***`).
    #[serde(skip_serializing_if = "NamespaceOptions::is_default", serialize_with = "serialize_options_redacted")]
    pub options: NamespaceOptions,
}

/// Serializes a namespace's options with its S3 secret key and registry password, if any,
/// replaced by `***`: only the index row and the definition file keep them.
fn serialize_options_redacted<S: serde::Serializer>(
    options: &NamespaceOptions,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    if options.s3_secret_key.is_none() && options.registry_password.is_none() {
        return options.serialize(s);
    }
    let redacted = || tiercache_core::Secret::new(tiercache_core::REDACTED);
    NamespaceOptions {
        s3_secret_key: options.s3_secret_key.as_ref().map(|_| redacted()),
        registry_password: options.registry_password.as_ref().map(|_| redacted()),
        ..options.clone()
    }
    .serialize(s)
}

/// Serializes a source URL with its credentials replaced by `***`: every answer that shows a
/// namespace (the admin API, `--json` reports) shows its source this way; only the definition file
/// keeps the URL as written.
pub(crate) fn serialize_redacted<S: serde::Serializer>(
    source: &Option<String>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    source.as_deref().map(tiercache_core::redact_url).serialize(s)
}

impl Namespace {
    /// The root directory, if the source is a directory (`file://` URL).
    pub fn dir_root(&self) -> Option<&str> {
        self.source.as_deref().and_then(|s| s.strip_prefix("file://"))
    }
}

impl Index {
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
}

impl Index {
    /// Deletes namespace `name` only if it holds nothing: no entry and no file of a directory's
    /// read cache, checked in the same transaction as the deletion, so that nothing written
    /// before the check is lost with it.
    pub fn delete_namespace_if_empty(&self, name: &str) -> Result<EmptyDelete> {
        self.write(|tx| {
            let Some(ns) = namespace_by_name(tx, name)? else { return Ok(EmptyDelete::Missing) };
            let is_used: bool = tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM entries WHERE ns_id = ?1) OR EXISTS(SELECT 1 FROM files WHERE ns_id = ?1)",
                [ns.id],
                |r| r.get(0),
            )?;
            if is_used {
                return Ok(EmptyDelete::NotEmpty);
            }
            tx.execute("DELETE FROM namespaces WHERE id = ?1", [ns.id])?;
            Ok(EmptyDelete::Deleted)
        })
    }
}

/// What [`Index::delete_namespace_if_empty`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmptyDelete {
    /// There was no such namespace.
    Missing,
    /// It holds entries or files: nothing was deleted.
    NotEmpty,
    /// It was empty, and is deleted.
    Deleted,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{entry, fresh};

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
        ix.commit_blob(&d, 6, (false, false), None, Some(&entry(a.id, "k")), 1).unwrap();
        ix.commit_blob(&d, 6, (false, false), None, Some(&entry(b.id, "k2")), 1).unwrap();
        let (n, orphans) = ix.delete_namespace("a").unwrap().unwrap();
        assert_eq!((n, orphans.len()), (1, 0));
        let (n, orphans) = ix.delete_namespace("b").unwrap().unwrap();
        assert_eq!((n, orphans), (1, vec![d]));
        assert!(ix.delete_namespace("b").unwrap().is_none());
    }

    #[test]
    fn a_namespace_is_deleted_only_while_empty() {
        let (_d, ix) = fresh();
        let a = ix.put_namespace(&NamespaceName::new("a").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        let d = Digest::of(b"kept");
        ix.commit_blob(&d, 4, (false, false), None, Some(&entry(a.id, "k")), 1).unwrap();
        assert_eq!(ix.delete_namespace_if_empty("a").unwrap(), EmptyDelete::NotEmpty);
        assert!(ix.get_namespace("a").unwrap().is_some());
        assert!(ix.delete_entry(a.id, &tiercache_core::Key::new("k").unwrap()).unwrap());
        assert_eq!(ix.delete_namespace_if_empty("a").unwrap(), EmptyDelete::Deleted);
        assert!(ix.get_namespace("a").unwrap().is_none());
        assert_eq!(ix.delete_namespace_if_empty("a").unwrap(), EmptyDelete::Missing);
    }

    #[test]
    fn a_copied_entry_names_the_same_blob() {
        let (_d, ix) = fresh();
        let a = ix.put_namespace(&NamespaceName::new("a").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        let b = ix.put_namespace(&NamespaceName::new("b").unwrap(), None, &NamespaceOptions::default(), 1).unwrap().0;
        let d = Digest::of(b"bytes");
        ix.commit_blob(&d, 5, (false, false), None, Some(&entry(a.id, "src")), 1).unwrap();
        assert_eq!(ix.copy_entry(a.id, "src", &entry(b.id, "dst"), 2).unwrap(), Some((d, 5)));
        assert_eq!(ix.copy_entry(a.id, "missing", &entry(b.id, "dst2"), 2).unwrap(), None);
        // Both name it: deleting one namespace leaves the blob to the other.
        let (_, orphans) = ix.delete_namespace("a").unwrap().unwrap();
        assert!(orphans.is_empty());
    }
}
