//! A derivation's input: the blob or entry a request names, resolved to its digest and a file
//! holding its bytes, open for the job.
//!
//! An entry is read through the tiers like any read (fetched from its source if no tier has it,
//! and stored: a job reads a file, never a stream). A directory namespace's file is used in place,
//! hashed now if its read cache has no digest for it yet; its size and modification time are
//! checked again after the job, so an input that changed while its job ran gives no output.
//!
//! A recipe opens the input by path: `/proc/<pid>/fd/<fd>` of the open file, which names these
//! very bytes even if the file is renamed or deleted meanwhile, for a tool run as a child process
//! too.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use futures::StreamExt;
use tiercache_core::{Digest, Hasher};

use crate::Error;
use crate::blocking::blocking;
use crate::body::{Body, Read};
use crate::meta::Tier;
use crate::read::{Intent, Reads};
use crate::spool::Phase;
use crate::store::Stores;

/// What a derivation is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeriveInput {
    /// Entry `key` of namespace `namespace` (read through the tiers).
    Entry {
        /// The namespace.
        namespace: String,
        /// The key (a directory's file names need not be UTF-8).
        key: Vec<u8>,
    },
    /// A blob by digest.
    Blob(Digest),
}

/// An input resolved: its digest, and a file holding its bytes.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) digest: Digest,
    file: Arc<File>,
    pub(crate) size_bytes: u64,
    /// For a file used in place (a directory namespace's): its size and modification time when
    /// resolved.
    in_place: Option<(u64, Option<SystemTime>)>,
}

impl Resolved {
    /// A path naming the open file (see the module docs).
    pub(crate) fn path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", std::process::id(), self.file.as_raw_fd()))
    }

    /// The first `n` bytes (fewer if the input is shorter); `None` if they cannot be read.
    pub(crate) fn head(&self, n: u64) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n.min(self.size_bytes) as usize];
        self.file.read_exact_at(&mut buf, 0).ok()?;
        Some(buf)
    }

    /// An input of `digest` held by `file` (for tests of the queue).
    #[cfg(test)]
    pub(crate) fn for_test(digest: Digest, file: File) -> Resolved {
        Resolved { digest, file: Arc::new(file), size_bytes: 0, in_place: None }
    }

    /// Whether a file used in place is still as it was when resolved (a blob always is).
    pub(crate) fn is_unchanged(&self) -> bool {
        match self.in_place {
            None => true,
            Some(markers) => self.file.metadata().is_ok_and(|m| markers_of(&m) == markers),
        }
    }
}

fn markers_of(m: &std::fs::Metadata) -> (u64, Option<SystemTime>) {
    (m.len(), m.modified().ok())
}

/// Resolves `input` (see the module docs).
pub(crate) async fn resolve(reads: &Arc<Reads>, stores: &Stores, input: &DeriveInput) -> Result<Resolved, Error> {
    match input {
        DeriveInput::Blob(digest) => {
            if let Some(r) = open_blob(stores, digest)? {
                return Ok(r);
            }
            // The shared tier may hold it: filled into the disk tier, then opened.
            drain(reads.blob(digest, Intent::Whole).await?).await?;
            open_blob(stores, digest)?.ok_or(Error::NoBlob(*digest))
        }
        DeriveInput::Entry { namespace, key } => {
            let read = reads.entry(namespace, key, Intent::Whole).await?;
            if let Some(r) = from_found(stores, found(&read)).await? {
                return Ok(r);
            }
            // Being fetched (or from the memory or shared tier): stored once read to its end,
            // then read again from the disk tier.
            drain(read).await?;
            let again = reads.entry(namespace, key, Intent::Whole).await?;
            from_found(stores, found(&again)).await?.ok_or_else(|| Error::StorageFull {
                what: format!(
                    "entry {:?} of {namespace} could not be stored (no room in the disk quota), so it cannot be derived from",
                    String::from_utf8_lossy(key)
                ),
                cause: None,
            })
        }
    }
}

/// What a read says of its input before its body is read.
enum Found {
    /// A file holding the bytes: a directory namespace's, in place (`in_place`), or a blob's.
    File { file: Arc<File>, size_bytes: u64, digest: Option<Digest>, in_place: bool },
    /// Only the digest (the memory or shared tier serves it): its blob may be in the disk tier.
    Digest(Digest),
    /// Neither (being fetched).
    Nothing,
}

/// What `read` says of its input (no await: a read is not shared between threads).
fn found(read: &Read) -> Found {
    match (&read.body, read.meta.digest) {
        (Body::File { file, size_bytes }, digest) if read.meta.tier == Tier::Source => {
            Found::File { file: Arc::clone(file), size_bytes: *size_bytes, digest, in_place: true }
        }
        (Body::File { file, size_bytes }, Some(digest)) => {
            Found::File { file: Arc::clone(file), size_bytes: *size_bytes, digest: Some(digest), in_place: false }
        }
        (_, Some(digest)) => Found::Digest(digest),
        (_, None) => Found::Nothing,
    }
}

/// The input `found` names, as a file: a directory's file hashed now if its read cache had no
/// digest for it, a blob opened in the disk tier.
async fn from_found(stores: &Stores, found: Found) -> Result<Option<Resolved>, Error> {
    match found {
        Found::File { file, size_bytes, digest: Some(digest), in_place: true } => {
            // An fstat of an open file: cheaper inline than a hop to a blocking thread.
            let markers = markers_of(&file.metadata().map_err(|e| Error::io("reading a derivation's input", e))?);
            Ok(Some(Resolved { digest, file, size_bytes, in_place: Some(markers) }))
        }
        Found::File { file, size_bytes, digest, in_place: true } => {
            let f = Arc::clone(&file);
            let (digest, markers) = blocking(move || {
                let markers = markers_of(&f.metadata()?);
                let digest = match digest {
                    Some(d) => d,
                    None => hash_file(&f, size_bytes)?,
                };
                Ok((digest, markers))
            })
            .await?;
            Ok(Some(Resolved { digest, file, size_bytes, in_place: Some(markers) }))
        }
        Found::File { file, size_bytes, digest: Some(digest), .. } => {
            Ok(Some(Resolved { digest, file, size_bytes, in_place: None }))
        }
        Found::File { digest: None, .. } | Found::Nothing => Ok(None),
        Found::Digest(digest) => open_blob(stores, &digest),
    }
}

fn open_blob(stores: &Stores, digest: &Digest) -> Result<Option<Resolved>, Error> {
    let opened = stores.open_blob(stores.managed(), digest)?;
    Ok(opened.map(|(file, meta)| Resolved {
        digest: *digest,
        file: Arc::new(file),
        size_bytes: meta.len(),
        in_place: None,
    }))
}

/// The SHA-256 of the first `len` bytes of `file`.
fn hash_file(file: &File, len: u64) -> std::io::Result<Digest> {
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0;
    while pos < len {
        let n = file.read_at(&mut buf[..(len - pos).min(1 << 20) as usize], pos)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file shrank while it was hashed"));
        }
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hasher.finish())
}

/// Reads `read` to its end, and when it is a fetch or a fill, waits until that has stored the
/// blob (a reader's last byte comes before the fsync, rename and index commit); its error if it
/// fails.
pub(crate) async fn drain(read: Read) -> Result<(), Error> {
    let stored = match &read.body {
        Body::Flight { rx, .. } | Body::Shared { rx, .. } => Some(rx.clone()),
        _ => None,
    };
    let mut body = read.into_stream(None);
    while let Some(chunk) = body.next().await {
        chunk.map_err(|e| Error::io("reading a derivation's input", e))?;
    }
    if let Some(mut rx) = stored {
        let end = rx.wait_for(|p| !matches!(p, Phase::Waiting | Phase::Streaming { .. })).await.map(|p| p.clone());
        if let Ok(Phase::Failed(e)) = end {
            return Err(e);
        }
    }
    Ok(())
}
