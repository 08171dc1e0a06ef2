//! Plain (uncompressed) tar layers: indexing places a point every so many bytes (the
//! uncompressed offsets are the compressed ones), only so the layer is cut into segments whose
//! digests check ranged fetches; reading a range copies it. Recognising a tar by its first
//! header is all this knows of tar.

use std::io::Write;

use super::format::IndexBuilder;
use super::input::Input;
use super::{RangeRead, SeekError};
use crate::tar_index::header::{BLOCK, Header};
use crate::{DeriveError, Limits};

/// The size of a tar header block, the bytes [`is_tar_head`] looks at.
pub(super) const TAR_BLOCK_BYTES: usize = BLOCK;

/// Whether `head`, a layer's first bytes, starts a tar archive: a whole first block that is a
/// header with a valid checksum, or all zeros (an empty archive).
pub(super) fn is_tar_head(head: &[u8]) -> bool {
    let Ok(block) = <&[u8; BLOCK]>::try_from(head) else { return false };
    block.iter().all(|&b| b == 0) || Header(block).checksum_ok()
}

/// Indexes a plain layer of `len` bytes into `builder` (a point at every spacing, the builder
/// doubling it past its most points); returns the uncompressed size, `len`.
pub(super) fn index(len: u64, builder: &mut IndexBuilder, limits: &Limits) -> Result<u64, DeriveError> {
    let mut at = 0u64;
    while at < len {
        builder.offer_start(at, at)?;
        limits.check_time()?;
        at = at.saturating_add(builder.spacing_bytes());
    }
    Ok(len)
}

/// Copies bytes `start..end` of a plain layer of `len` bytes from `source` to `out`.
pub(super) fn read(
    source: &dyn super::RangeSource,
    len: u64,
    start: u64,
    end: u64,
    out: &mut dyn Write,
) -> Result<RangeRead, SeekError> {
    let mut input = Input::new(source, len, start, end, end);
    while input.position() < end {
        if input.available().is_empty() && !input.fill().map_err(read_error)? {
            return Err(SeekError::Corrupt(format!(
                "plain: the layer ends at byte {}, before {end}",
                input.position()
            )));
        }
        let n = usize::try_from(end - input.position()).unwrap_or(usize::MAX).min(input.available().len());
        out.write_all(&input.available()[..n])?;
        input.consume(n);
    }
    Ok(RangeRead { compressed_start: start, compressed_bytes_read: input.fetched_bytes(), decompressed_bytes: 0 })
}

/// A source that ends before the layer's size is a layer other than the indexed one.
fn read_error(e: std::io::Error) -> SeekError {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SeekError::Corrupt(format!("plain: {e}")),
        _ => SeekError::Io(e),
    }
}
