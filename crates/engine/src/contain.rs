//! Containment (layer 0): which directories a namespace may reach. One check for a directory
//! namespace's root and one for a namespace's own storage directory, used by every way a
//! namespace is made or changed (`namespaces/define.rs`: `ns create`, `index`, the config file's
//! namespaces at `serve`, the admin API; `store/place.rs`: `--storage path:` and `ns migrate`),
//! and again when a cache opens, so that a definition written by an older version that breaks the
//! rule is refused rather than served.
//!
//! The rule, on canonical paths (symbolic links resolved):
//! - a directory root is an existing directory, never `/`, never the data directory, a parent of
//!   it or inside it, and never another namespace's storage directory, inside one or around one;
//! - a storage directory never overlaps the data directory, another storage directory or a
//!   directory root.
//!
//! Two directory roots may overlap (the same tree, or a folder and a sub-folder of it): both are
//! the operator's files, served in place, and every read compares the file's change markers with
//! its own namespace's read cache, so a write through one namespace is never served with a stale
//! ETag through the other. What must never be reachable through a root is tiercache's own state.
//!
//! It decides only: it creates, marks and opens nothing.

use std::path::{Path, PathBuf};

use tiercache_index::Namespace;

use crate::Error;

/// Whether canonical paths `a` and `b` overlap: one is the other, or contains it.
pub(crate) fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// How `dir` stands to `other`, both canonical and overlapping: `is`, `is inside`, `contains`.
fn relation(dir: &Path, other: &Path) -> &'static str {
    if dir == other {
        "is"
    } else if dir.starts_with(other) {
        "is inside"
    } else {
        "contains"
    }
}

/// The canonical data directory `data_dir`.
fn canonical_data_dir(data_dir: &Path) -> Result<PathBuf, Error> {
    std::fs::canonicalize(data_dir)
        .map_err(|e| Error::io(format!("cannot resolve the data directory {}", data_dir.display()), e))
}

/// Checks that `root` may be the directory source of namespace `name`, given the cache's
/// `data_dir` and its `namespaces` (namespace `name` itself is skipped among them). Returns the
/// root canonicalized. Blocking.
///
/// [`Error::Invalid`] if `root` is not absolute, does not exist or is not a directory;
/// [`Error::Containment`] if it is `/`, overlaps the data directory, or overlaps another
/// namespace's storage directory.
pub(crate) fn check_source_root(
    name: &str,
    root: &Path,
    data_dir: &Path,
    namespaces: &[Namespace],
) -> Result<PathBuf, Error> {
    if !root.is_absolute() {
        return Err(Error::Invalid(format!("directory source {} is not an absolute path", root.display())));
    }
    let canonical = std::fs::canonicalize(root)
        .map_err(|e| Error::Invalid(format!("cannot use directory {}: {e}", root.display())))?;
    if !canonical.is_dir() {
        return Err(Error::Invalid(format!("{} is not a directory", root.display())));
    }
    let shown = if canonical == root {
        canonical.display().to_string()
    } else {
        format!("{} (resolved: {})", root.display(), canonical.display())
    };
    if canonical == Path::new("/") {
        return Err(Error::Containment {
            what: "the root directory / cannot be a namespace's source: it holds every file of the host, \
                   tiercache's data directory included"
                .into(),
        });
    }
    let data = canonical_data_dir(data_dir)?;
    if overlaps(&canonical, &data) {
        return Err(Error::Containment {
            what: format!(
                "directory {shown} {} the data directory {}: a namespace's source never reaches tiercache's \
                 own files; give a directory outside it",
                relation(&canonical, &data),
                data.display()
            ),
        });
    }
    for ns in namespaces.iter().filter(|ns| ns.name != name) {
        if let Some(storage) = &ns.options.storage
            && overlaps(&canonical, Path::new(storage))
        {
            return Err(Error::Containment {
                what: format!(
                    "directory {shown} {} {storage}, where namespace {} keeps its blobs; give a directory \
                     outside it",
                    relation(&canonical, Path::new(storage)),
                    ns.name
                ),
            });
        }
    }
    Ok(canonical)
}

/// Checks that `dir`, canonical, may be the storage directory of namespace `name`, given the
/// cache's `data_dir` and its `namespaces`. Blocking.
///
/// [`Error::Containment`] if it overlaps the data directory or a directory source's root;
/// [`Error::Conflict`] if it overlaps another namespace's storage directory.
pub(crate) fn check_storage_dir(
    name: &str,
    dir: &Path,
    data_dir: &Path,
    namespaces: &[Namespace],
) -> Result<(), Error> {
    let data = canonical_data_dir(data_dir)?;
    if overlaps(dir, &data) {
        return Err(Error::Containment {
            what: format!(
                "storage directory {} {} the data directory {} (it overlaps the data directory); give a \
                 directory outside it",
                dir.display(),
                relation(dir, &data),
                data.display()
            ),
        });
    }
    for ns in namespaces {
        if let Some(other) = &ns.options.storage
            && ns.name != name
            && overlaps(dir, Path::new(other))
        {
            return Err(Error::conflict(format!(
                "storage directory {} overlaps {other}, namespace {}'s",
                dir.display(),
                ns.name
            )));
        }
        if let Some(root) = ns.dir_root()
            && std::fs::canonicalize(root).is_ok_and(|r| overlaps(dir, &r))
        {
            return Err(Error::Containment {
                what: format!(
                    "storage directory {} overlaps {root}, the source directory of namespace {}",
                    dir.display(),
                    ns.name
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_ns(name: &str, root: &Path) -> Namespace {
        Namespace {
            id: 1,
            name: name.into(),
            source: Some(format!("file://{}", root.display())),
            created_at: 0,
            options: Default::default(),
        }
    }

    fn stored_ns(name: &str, storage: &Path) -> Namespace {
        let mut ns = dir_ns(name, Path::new("/unused"));
        ns.source = None;
        ns.options.storage = Some(storage.to_str().unwrap().to_owned());
        ns
    }

    #[test]
    fn a_root_never_reaches_the_data_directory_or_a_storage_directory() {
        let t = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        let data = base.join("parent/data");
        let (store, files) = (base.join("store"), base.join("files"));
        for d in [&data.join("blobs"), &store.join("blobs"), &files] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::os::unix::fs::symlink(&data, base.join("link")).unwrap();
        let others = [stored_ns("kept", &store), dir_ns("files", &files)];
        let check = |root: &Path| check_source_root("new", root, &data, &others);
        let refused = [
            Path::new("/"),
            &data,
            &base.join("parent"),
            &base,
            &data.join("blobs"),
            &base.join("link"),
            &store,
            &store.join("blobs"),
        ];
        for root in refused {
            assert!(matches!(check(root), Err(Error::Containment { .. })), "{}: {:?}", root.display(), check(root));
        }
        assert!(matches!(check(Path::new("relative")), Err(Error::Invalid(_))));
        assert!(matches!(check(&base.join("missing")), Err(Error::Invalid(_))));
        // Another directory namespace's root, or one inside it, is allowed (see the module docs).
        assert_eq!(check(&files).unwrap(), files);
        std::fs::create_dir(files.join("sub")).unwrap();
        assert_eq!(check(&files.join("sub/.")).unwrap(), files.join("sub"));
        // A namespace's own storage is not "another's".
        assert!(check_source_root("kept", &base.join("files"), &data, &others).is_ok());
    }

    #[test]
    fn a_storage_directory_never_overlaps_the_data_directory_a_root_or_another_store() {
        let t = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(t.path()).unwrap();
        let (data, store, files) = (base.join("data"), base.join("store"), base.join("files"));
        for d in [&data, &store, &files] {
            std::fs::create_dir_all(d).unwrap();
        }
        let others = [stored_ns("kept", &store), dir_ns("files", &files)];
        let check = |dir: &Path| check_storage_dir("new", dir, &data, &others);
        assert!(matches!(check(&data.join("x")), Err(Error::Containment { .. })));
        assert!(matches!(check(&base), Err(Error::Containment { .. })));
        assert!(matches!(check(&files.join("x")), Err(Error::Containment { .. })));
        assert!(matches!(check(&store.join("x")), Err(Error::Conflict { .. })));
        assert!(check(&base.join("other")).is_ok());
        assert!(check_storage_dir("kept", &store, &data, &others).is_ok());
    }
}
