//! zstd layers: indexing (every frame decompressed once, to check it and to learn its
//! uncompressed size, which a frame header may leave out; a resume point at frame starts every so
//! many uncompressed bytes) and reading from a frame start.
//!
//! A zstd frame cannot be entered in the middle (its blocks share history and entropy tables), so
//! a layer of one large frame has one point (and its index asks for the full `decompress` output
//! instead, see [`super::PREFER_DECOMPRESS_BYTES`]).

use std::io::{self, Write};

use zstd::stream::raw::{Decoder, InBuffer, Operation, OutBuffer};

use super::format::{IndexBuilder, SeekIndex};
use super::input::Input;
use super::{RangeRead, SeekError, emit};
use crate::{DeriveError, Limits};

/// Output scratch per decompression call.
const OUT_CHUNK_BYTES: usize = 1 << 17;

/// Indexes the zstd layer read through `input` into `builder`; returns the uncompressed size.
pub(super) fn index(input: &mut Input<'_>, builder: &mut IndexBuilder, limits: &Limits) -> Result<u64, DeriveError> {
    let mut decoder = Decoder::new().map_err(DeriveError::Io)?;
    let mut scratch = vec![0u8; OUT_CHUNK_BYTES];
    let mut total = 0u64;
    // The start of the frame being decompressed (its byte, its uncompressed offset), and whether
    // it was offered as a point yet (only once it proves to hold data).
    let mut frame: Option<(u64, u64, bool)> = None;
    loop {
        if input.available().is_empty() && input.fill().map_err(build_error)? {
            limits.check_time()?;
        }
        if frame.is_none() {
            if input.is_at_end() {
                break;
            }
            frame = Some((input.position(), total, false));
        }
        let mut inb = InBuffer::around(input.available());
        let mut outb = OutBuffer::around(&mut scratch[..]);
        let hint = decoder
            .run(&mut inb, &mut outb)
            .map_err(|e| DeriveError::Corrupt(format!("zstd: {e} (near byte {})", input.position())))?;
        let (used, n) = (inb.pos(), outb.pos());
        input.consume(used);
        let (at, start, offered) = frame.as_mut().expect("set above");
        if n > 0 && !*offered {
            builder.offer_start(*at, *start)?;
            *offered = true;
        }
        total += n as u64;
        if hint == 0 {
            frame = None;
        } else if used == 0 && n == 0 && input.is_at_end() {
            return Err(DeriveError::Corrupt(format!(
                "zstd: the layer is truncated (its last frame is incomplete at byte {})",
                input.position()
            )));
        }
    }
    Ok(total)
}

fn build_error(e: io::Error) -> DeriveError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => DeriveError::Corrupt(format!("zstd: {e}")),
        _ => DeriveError::Io(e),
    }
}

/// Writes uncompressed bytes `start..end` to `out`, decompressing from point `k` (a frame start)
/// through `input` (positioned there) and stopping as soon as `end` is produced.
pub(super) fn read(
    index: &SeekIndex,
    k: usize,
    input: &mut Input<'_>,
    start: u64,
    end: u64,
    out: &mut dyn Write,
) -> Result<RangeRead, SeekError> {
    let point = &index.points[k];
    let mut decoder = Decoder::new()?;
    let mut scratch = vec![0u8; OUT_CHUNK_BYTES];
    let mut produced = point.uncompressed;
    while produced < end {
        if input.available().is_empty() {
            input.fill().map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => SeekError::Corrupt(format!("zstd: {e}")),
                _ => SeekError::Io(e),
            })?;
        }
        let mut inb = InBuffer::around(input.available());
        let mut outb = OutBuffer::around(&mut scratch[..]);
        let hint = decoder.run(&mut inb, &mut outb).map_err(|e| {
            SeekError::Corrupt(format!("zstd: the layer does not decompress from its index's point {k}: {e}"))
        })?;
        let (used, n) = (inb.pos(), outb.pos());
        input.consume(used);
        emit(&scratch[..n], produced, start, end, out)?;
        produced += n as u64;
        if used == 0 && n == 0 && input.is_at_end() && produced < end {
            let what = if hint == 0 { "ends" } else { "is truncated" };
            return Err(SeekError::Corrupt(format!(
                "zstd: the layer {what} at uncompressed byte {produced}, before the {end} its index promised"
            )));
        }
    }
    Ok(RangeRead {
        compressed_start: point.compressed_byte(),
        compressed_bytes_read: input.fetched_bytes(),
        decompressed_bytes: produced - point.uncompressed,
    })
}
