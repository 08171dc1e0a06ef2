//! gzip layers: indexing (one pass over every member, a resume point at DEFLATE block
//! boundaries every so many uncompressed bytes, each with the 32 KiB of output before it, every
//! member's CRC-32 and length checked) and reading from a point (the zran approach of zlib's
//! `examples/zran.c`, over `miniz_oxide`'s block-boundary state instead of `inflatePrime` and
//! `inflateSetDictionary`, so no unsafe code).
//!
//! A point sits only where a DEFLATE block ends: a stream whose blocks are very long (a
//! stored-only encoder) gets points only as often as its blocks end.

use std::io::{self, Write};

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::inflate_flags::{TINFL_FLAG_HAS_MORE_INPUT, TINFL_FLAG_STOP_ON_BLOCK_BOUNDARY};
use miniz_oxide::inflate::core::{BlockBoundaryState, DecompressorOxide, decompress};

use super::format::{IndexBuilder, PointKind, SeekIndex};
use super::input::Input;
use super::{RangeRead, SeekError, WINDOW_BYTES, emit};
use crate::{DeriveError, Limits};

/// The output ring the decompressor writes into: a power of two (miniz_oxide's wrapping mode),
/// larger than a window.
const RING_BYTES: usize = 1 << 18;

const FTEXT_TO_FHCRC: u8 = 0x1f;
const FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;

/// Indexes the gzip layer read through `input` into `builder`; returns the uncompressed size.
pub(super) fn index(input: &mut Input<'_>, builder: &mut IndexBuilder, limits: &Limits) -> Result<u64, DeriveError> {
    let mut inflater = Box::<DecompressorOxide>::default();
    let mut ring = vec![0u8; RING_BYTES];
    let mut total = 0u64;
    loop {
        builder.offer_start(input.position(), total)?;
        skip_member_header(input).map_err(build_error)?;
        *inflater = DecompressorOxide::new();
        let (crc, member_bytes) = index_member(input, &mut inflater, &mut ring, &mut total, builder, limits)?;
        let trailer: [u8; 8] = input.take().map_err(build_error)?;
        let (want_crc, want_len) = (u32::from_le_bytes(trailer[..4].try_into().expect("4")), &trailer[4..]);
        if want_crc != crc || want_len != (member_bytes as u32).to_le_bytes() {
            return Err(DeriveError::Corrupt(format!(
                "gzip member ending at byte {}: its CRC-32 or length does not match its data",
                input.position()
            )));
        }
        limits.check_time()?;
        if input.is_at_end() || (input.available().is_empty() && !input.fill().map_err(build_error)?) {
            return Ok(total);
        }
    }
}

/// Inflates one member's DEFLATE data, stopping at each block boundary to offer a point;
/// returns the member's CRC-32 and length.
fn index_member(
    input: &mut Input<'_>,
    inflater: &mut DecompressorOxide,
    ring: &mut [u8],
    total: &mut u64,
    builder: &mut IndexBuilder,
    limits: &Limits,
) -> Result<(u32, u64), DeriveError> {
    let mut crc = crc32fast::Hasher::new();
    let mut at = 0usize;
    let mut member_bytes = 0u64;
    loop {
        if input.available().is_empty() && input.fill().map_err(build_error)? {
            limits.check_time()?;
        }
        let more = if input.is_fetched_to_end() { 0 } else { TINFL_FLAG_HAS_MORE_INPUT };
        let (status, used, n) =
            decompress(inflater, input.available(), ring, at, more | TINFL_FLAG_STOP_ON_BLOCK_BOUNDARY);
        input.consume(used);
        crc.update(&ring[at..at + n]);
        at = (at + n) & (RING_BYTES - 1);
        member_bytes += n as u64;
        *total += n as u64;
        match status {
            TINFLStatus::Done => return Ok((crc.finalize(), member_bytes)),
            TINFLStatus::BlockBoundary if builder.is_due(*total) => {
                let state = inflater.block_boundary_state().expect("at a block boundary");
                let bit = input.position() * 8 - u64::from(state.num_bits);
                let window = ring_tail(ring, at, member_bytes.min(WINDOW_BYTES as u64) as usize);
                builder.push_block(bit, *total, &window)?;
                limits.check_time()?;
            }
            TINFLStatus::BlockBoundary | TINFLStatus::HasMoreOutput => {}
            TINFLStatus::NeedsMoreInput if more != 0 => {
                input.fill().map_err(build_error)?;
            }
            TINFLStatus::NeedsMoreInput | TINFLStatus::FailedCannotMakeProgress => {
                return Err(DeriveError::Corrupt(format!(
                    "gzip: the layer is truncated (it ends inside a member, at byte {})",
                    input.position()
                )));
            }
            _ => {
                return Err(DeriveError::Corrupt(format!(
                    "gzip: invalid DEFLATE data near byte {} ({status:?})",
                    input.position()
                )));
            }
        }
    }
}

/// The last `n` bytes written to the ring before position `at`.
fn ring_tail(ring: &[u8], at: usize, n: usize) -> Vec<u8> {
    if n <= at {
        ring[at - n..at].to_vec()
    } else {
        let mut out = ring[ring.len() - (n - at)..].to_vec();
        out.extend_from_slice(&ring[..at]);
        out
    }
}

/// Consumes a gzip member header (RFC 1952 § 2.3), checking what can be checked.
fn skip_member_header(input: &mut Input<'_>) -> io::Result<()> {
    let at = input.position();
    let fixed: [u8; 10] = input.take()?;
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("byte {at}: {why}"));
    if fixed[..2] != [0x1f, 0x8b] {
        return Err(invalid("not the start of a gzip member (trailing data after the last member?)"));
    }
    if fixed[2] != 8 {
        return Err(invalid("gzip compression method is not DEFLATE"));
    }
    let flags = fixed[3];
    if flags & !FTEXT_TO_FHCRC != 0 {
        return Err(invalid("gzip header has reserved flags set"));
    }
    if flags & FEXTRA != 0 {
        let len: [u8; 2] = input.take()?;
        input.skip(u64::from(u16::from_le_bytes(len)))?;
    }
    if flags & FNAME != 0 {
        input.skip_past_zero()?;
    }
    if flags & FCOMMENT != 0 {
        input.skip_past_zero()?;
    }
    if flags & FHCRC != 0 {
        input.skip(2)?;
    }
    Ok(())
}

/// An input error met while indexing: a truncated layer or a bad header is the input's fault.
fn build_error(e: io::Error) -> DeriveError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => DeriveError::Corrupt(format!("gzip: {e}")),
        _ => DeriveError::Io(e),
    }
}

/// An input error met while reading a range: the layer does not decode as its index says.
fn read_error(e: io::Error) -> SeekError {
    match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData => SeekError::Corrupt(format!("gzip: {e}")),
        _ => SeekError::Io(e),
    }
}

/// Writes uncompressed bytes `start..end` to `out`, decompressing from point `k` through
/// `input` (positioned at the point's byte) and stopping as soon as `end` is produced.
pub(super) fn read(
    index: &SeekIndex,
    k: usize,
    input: &mut Input<'_>,
    start: u64,
    end: u64,
    out: &mut dyn Write,
) -> Result<RangeRead, SeekError> {
    let point = &index.points[k];
    let mut ring = vec![0u8; RING_BYTES];
    let mut inflater = Box::<DecompressorOxide>::default();
    let mut at = 0usize;
    match point.kind {
        PointKind::Start => skip_member_header(input).map_err(read_error)?,
        PointKind::Block => {
            let skip_bits = (point.compressed_bit % 8) as u8;
            let mut state = BlockBoundaryState::default();
            if skip_bits != 0 {
                let [byte] = input.take().map_err(read_error)?;
                state.num_bits = 8 - skip_bits;
                state.bit_buf = byte >> skip_bits;
            }
            *inflater = DecompressorOxide::from_block_boundary_state(&state);
            let window = index.window(k)?;
            ring[..window.len()].copy_from_slice(&window);
            at = window.len();
        }
    }
    let mut produced = point.uncompressed;
    loop {
        if input.available().is_empty() {
            input.fill().map_err(read_error)?;
        }
        let more = if input.is_fetched_to_end() { 0 } else { TINFL_FLAG_HAS_MORE_INPUT };
        let (status, used, n) = decompress(&mut inflater, input.available(), &mut ring, at, more);
        input.consume(used);
        emit(&ring[at..at + n], produced, start, end, out)?;
        at = (at + n) & (RING_BYTES - 1);
        produced += n as u64;
        if produced >= end {
            break;
        }
        match status {
            TINFLStatus::Done => {
                input.skip(8).map_err(read_error)?;
                if input.is_at_end() || (input.available().is_empty() && !input.fill().map_err(read_error)?) {
                    return Err(SeekError::Corrupt(format!(
                        "gzip: the layer ends at uncompressed byte {produced}, before the {end} its index promised"
                    )));
                }
                skip_member_header(input).map_err(read_error)?;
                *inflater = DecompressorOxide::new();
            }
            TINFLStatus::HasMoreOutput => {}
            TINFLStatus::NeedsMoreInput if more != 0 => {
                input.fill().map_err(read_error)?;
            }
            _ => {
                return Err(SeekError::Corrupt(format!(
                    "gzip: the layer does not decompress from its index's point {k} ({status:?} near byte {})",
                    input.position()
                )));
            }
        }
    }
    Ok(RangeRead {
        compressed_start: point.compressed_byte(),
        compressed_bytes_read: input.fetched_bytes(),
        decompressed_bytes: produced - point.uncompressed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_tail_wraps_around() {
        let ring: Vec<u8> = (0..16).collect();
        assert_eq!(ring_tail(&ring, 10, 4), [6, 7, 8, 9]);
        assert_eq!(ring_tail(&ring, 2, 4), [14, 15, 0, 1]);
        assert_eq!(ring_tail(&ring, 0, 3), [13, 14, 15]);
    }

    #[test]
    fn member_headers_with_every_optional_field_are_skipped() {
        let mut member = vec![0x1f, 0x8b, 8, FEXTRA | FNAME | FCOMMENT | FHCRC, 0, 0, 0, 0, 0, 255];
        member.extend_from_slice(&[3, 0, b'a', b'b', b'c']);
        member.extend_from_slice(b"name\0comment\0");
        member.extend_from_slice(&[0xaa, 0xbb, 0x42]);
        let mut input = Input::new(&member, member.len() as u64, 0, member.len() as u64, member.len() as u64);
        skip_member_header(&mut input).unwrap();
        assert_eq!(input.available(), [0x42]);
        let mut bad = member.clone();
        bad[3] |= 0x80;
        let mut input = Input::new(&bad, bad.len() as u64, 0, bad.len() as u64, bad.len() as u64);
        assert_eq!(skip_member_header(&mut input).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let mut input = Input::new(&member, 16, 0, 16, 16);
        assert_eq!(skip_member_header(&mut input).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
