//! The layer as an uncompressed byte stream: gzip (multi-member), zstd (multi-frame, skippable
//! frames included) or plain, told apart by the first bytes, read forward once with the position
//! counted in uncompressed bytes. A plain layer's data is skipped by seeking; a compressed one's
//! is decompressed into a fixed buffer and dropped, so memory never grows with the layer.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::Path;

use super::Compression;
use crate::{DeriveError, Limits};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How much is decompressed at a time (and dropped when skipped).
const BUFFER_BYTES: usize = 256 << 10;

/// How much is skipped between two looks at the deadline.
const SKIP_STEP_BYTES: u64 = 16 << 20;

/// A layer being read.
pub(crate) struct Stream {
    source: Source,
    compression: Compression,
    /// Invariant: the uncompressed bytes consumed so far.
    pos: u64,
}

enum Source {
    Plain { file: BufReader<File>, len: u64 },
    Decoded(BufReader<Box<dyn Read>>),
}

impl Stream {
    /// Opens the layer at `path`, its compression told by its first bytes (anything that is
    /// neither gzip nor zstd is read as a plain tar; the caller checks it is one).
    pub(crate) fn open(path: &Path) -> Result<Stream, DeriveError> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        let mut magic = [0u8; 4];
        let n = read_full(&mut file, &mut magic).map_err(DeriveError::Io)?;
        let compression = compression_of(&magic[..n]);
        file.rewind()?;
        let source = match compression {
            Compression::None => Source::Plain { file: BufReader::with_capacity(64 << 10, file), len },
            Compression::Gzip => {
                let decoder = flate2::bufread::MultiGzDecoder::new(BufReader::with_capacity(BUFFER_BYTES, file));
                Source::Decoded(BufReader::with_capacity(BUFFER_BYTES, Box::new(decoder)))
            }
            Compression::Zstd => {
                let decoder = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(BUFFER_BYTES, file))?;
                Source::Decoded(BufReader::with_capacity(BUFFER_BYTES, Box::new(decoder)))
            }
        };
        Ok(Stream { source, compression, pos: 0 })
    }

    /// A layer read from `reader` (forward only, as it arrives), its compression told by its
    /// first bytes; `tap` sees every uncompressed byte read from it, in order.
    pub(crate) fn from_reader(reader: Box<dyn Read>, tap: Tap) -> Result<Stream, DeriveError> {
        let mut reader = BufReader::with_capacity(BUFFER_BYTES, reader);
        let compression = compression_of(reader.fill_buf()?.get(..4).unwrap_or_default());
        let decoded: Box<dyn Read> = match compression {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(reader)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(reader)?),
        };
        let tapped = Tapped { inner: decoded, tap };
        Ok(Stream {
            source: Source::Decoded(BufReader::with_capacity(BUFFER_BYTES, Box::new(tapped))),
            compression,
            pos: 0,
        })
    }

    /// The layer's compression.
    pub(crate) fn compression(&self) -> Compression {
        self.compression
    }

    /// How many uncompressed bytes have been consumed.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Fills `buf` from the stream; fewer bytes only at its end.
    pub(crate) fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, DeriveError> {
        let n = match &mut self.source {
            Source::Plain { file, .. } => read_full(file, buf).map_err(DeriveError::Io)?,
            Source::Decoded(reader) => read_full(reader, buf).map_err(|e| decode_error(self.compression, e))?,
        };
        self.pos += n as u64;
        Ok(n)
    }

    /// Skips `n` bytes, looking at the deadline as it goes; how many it skipped (fewer only at
    /// the stream's end).
    pub(crate) fn skip(&mut self, n: u64, limits: &Limits) -> Result<u64, DeriveError> {
        let mut skipped = 0;
        while skipped < n {
            limits.check_time()?;
            let step = (n - skipped).min(SKIP_STEP_BYTES);
            let done = match &mut self.source {
                Source::Plain { file, len } => {
                    let step = step.min(len.saturating_sub(self.pos));
                    file.seek_relative(step as i64)?;
                    step
                }
                Source::Decoded(reader) => discard(reader, step).map_err(|e| decode_error(self.compression, e))?,
            };
            self.pos += done;
            skipped += done;
            if done < step || done == 0 {
                break;
            }
        }
        Ok(skipped)
    }

    /// Reads to the stream's end (decompressing a compressed layer to its last checksum); the
    /// stream's whole uncompressed length.
    pub(crate) fn finish(mut self, limits: &Limits) -> Result<u64, DeriveError> {
        if let Source::Plain { len, .. } = self.source {
            return Ok(len.max(self.pos));
        }
        self.skip(u64::MAX, limits)?;
        Ok(self.pos)
    }
}

/// What is shown every uncompressed byte read ([`Stream::from_reader`]).
pub(crate) type Tap = Box<dyn FnMut(&[u8])>;

/// A reader whose every byte read is shown to `tap` too.
struct Tapped {
    inner: Box<dyn Read>,
    tap: Tap,
}

impl Read for Tapped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.tap)(&buf[..n]);
        Ok(n)
    }
}

/// The compression the first bytes of a layer say.
fn compression_of(magic: &[u8]) -> Compression {
    if magic.starts_with(&GZIP_MAGIC) {
        Compression::Gzip
    } else if magic == ZSTD_MAGIC || is_zstd_skippable(magic) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A zstd skippable frame's magic (`0x184D2A50` to `0x184D2A5F`, little-endian).
fn is_zstd_skippable(magic: &[u8]) -> bool {
    magic.len() == 4 && magic[0] & 0xf0 == 0x50 && magic[1..] == [0x2a, 0x4d, 0x18]
}

fn decode_error(compression: Compression, e: std::io::Error) -> DeriveError {
    DeriveError::Corrupt(format!("{} stream: {e}", compression.name()))
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Drops up to `n` bytes of `reader`; how many (fewer only at its end).
fn discard(reader: &mut impl BufRead, n: u64) -> std::io::Result<u64> {
    let mut done = 0;
    while done < n {
        let available = match reader.fill_buf() {
            Ok(buf) => buf.len(),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available == 0 {
            break;
        }
        let take = available.min(usize::try_from(n - done).unwrap_or(usize::MAX));
        reader.consume(take);
        done += take as u64;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_is_told_by_the_first_bytes() {
        assert_eq!(compression_of(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(compression_of(&ZSTD_MAGIC), Compression::Zstd);
        assert_eq!(compression_of(&[0x5e, 0x2a, 0x4d, 0x18]), Compression::Zstd);
        assert_eq!(compression_of(b"PK\x03\x04"), Compression::None);
        assert_eq!(compression_of(b""), Compression::None);
    }
}
