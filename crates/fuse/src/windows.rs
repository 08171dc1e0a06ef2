//! Reads of large files in aligned windows, kept in memory for the reads that follow.
//!
//! The kernel reads a file in pieces of at most a few hundred KiB, several at once (readahead).
//! Each [`Cache::image_read`] of a compressed layer decompresses from the seek point before the
//! bytes asked for (up to a few MiB back), so reading a large file piece by piece would
//! decompress most of it many times over. Instead a file larger than [`WINDOWED_FROM_BYTES`] is
//! read in windows of [`WINDOW_BYTES`], each read once however many pieces (and concurrent
//! reads) fall in it, and the last windows read are kept, up to [`WINDOWS_BYTES`].
//!
//! Smaller files are passed through: the engine keeps them whole in memory after their first read.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tiercache_engine::{Cache, Error, Image, NodeId};

/// Files up to this size are read as the kernel asks (the engine keeps them whole).
const WINDOWED_FROM_BYTES: u64 = 1 << 20;
/// The size (and alignment) of a window.
const WINDOW_BYTES: u64 = 4 << 20;
/// The memory the kept windows may take.
const WINDOWS_BYTES: u64 = 64 << 20;

/// The windows of one mounted image, by inode number and window number.
pub(crate) struct Windows {
    kept: moka::future::Cache<(u64, u64), Bytes>,
}

impl Windows {
    pub(crate) fn new() -> Windows {
        let kept = moka::future::Cache::builder()
            .max_capacity(WINDOWS_BYTES)
            .weigher(|_, b: &Bytes| u32::try_from(b.len()).unwrap_or(u32::MAX))
            .build();
        Windows { kept }
    }

    /// Bytes `range` of the file `node` (inode `ino`, `size` bytes) of `image`, clamped to its
    /// size.
    pub(crate) async fn read(
        &self,
        cache: &Cache,
        image: &Arc<Image>,
        (node, ino, size): (NodeId, u64, u64),
        range: Range<u64>,
    ) -> Result<Bytes, Arc<Error>> {
        if size <= WINDOWED_FROM_BYTES {
            return cache.image_read(image, node, range).await.map_err(Arc::new);
        }
        let range = range.start.min(size)..range.end.min(size);
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        let mut at = range.start;
        while at < range.end {
            let number = at / WINDOW_BYTES;
            let start = number * WINDOW_BYTES;
            let window = self
                .kept
                .try_get_with((ino, number), cache.image_read(image, node, start..(start + WINDOW_BYTES).min(size)))
                .await?;
            let from = (at - start) as usize;
            let to = ((range.end - start) as usize).min(window.len());
            if from >= to {
                // The engine gave less than the file's size says: end the read here.
                break;
            }
            out.extend_from_slice(&window[from..to]);
            at = start + to as u64;
        }
        Ok(out.freeze())
    }
}
