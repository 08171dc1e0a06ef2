//! The compressed bytes of a layer as the seek code consumes them: [`RangeSource`] (where they
//! come from: a local file, a byte slice, a span fetched ahead ([`Prefetched`]) or fetched and
//! checked against the index's segment digests ([`Verified`]), or the engine's ranged fetches
//! through the tiers) and [`Input`], a buffer that fetches them in as few, as well-sized ranges as it can and counts what
//! it fetched.
//!
//! `Input` never fetches past the layer's size, and a reader hands it an estimate of where its
//! range ends in the compressed stream, so a small read costs one fetch of about the bytes it
//! needs; what the estimate misses is fetched in growing steps.

use std::fs::File;
use std::io;
use std::ops::Range;

use super::{SeekError, SeekIndex};

/// Where a layer's compressed bytes are read from, by offset.
pub trait RangeSource {
    /// Reads up to `buf.len()` bytes of the layer starting at byte `offset` into `buf`, returning
    /// how many it read. A short read is allowed; `Ok(0)` for a non-empty `buf` means `offset` is
    /// at or past the end of the layer.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

impl RangeSource for File {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(self, buf, offset)
    }
}

impl RangeSource for [u8] {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else { return Ok(0) };
        let Some(rest) = self.get(start..) else { return Ok(0) };
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        Ok(n)
    }
}

impl RangeSource for Vec<u8> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.as_slice().read_at(offset, buf)
    }
}

impl<T: RangeSource + ?Sized> RangeSource for &T {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_at(offset, buf)
    }
}

/// A span of a layer's compressed bytes fetched ahead (say, [`crate::seek::SeekIndex::segment_span`]
/// in one request), read as the layer itself: a read outside the span is an error of kind
/// `InvalidInput`. Its bytes are taken as they are; [`Verified`] checks them first.
#[derive(Debug, Clone, Copy)]
pub struct Prefetched<'a> {
    /// The layer offset of the span's first byte.
    pub offset: u64,
    /// The span's bytes.
    pub bytes: &'a [u8],
}

impl RangeSource for Prefetched<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let end = self.offset.saturating_add(self.bytes.len() as u64);
        if offset < self.offset || (offset >= end && !buf.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("byte {offset} of the layer is outside the fetched span {}..{end}", self.offset),
            ));
        }
        self.bytes.read_at(offset - self.offset, buf)
    }
}

/// A span of whole segments of a layer's compressed bytes, checked against the seek index's
/// segment digests when made: a [`RangeSource`] that serves only bytes the index vouches for
/// (a read outside the span is an error of kind `InvalidInput`).
#[derive(Debug, Clone, Copy)]
pub struct Verified<'a> {
    // Invariant: `span.bytes` passed `SeekIndex::verify_span` for the index it was made with.
    span: Prefetched<'a>,
}

impl<'a> Verified<'a> {
    /// Checks `bytes`, the layer's compressed bytes from `offset` on, with
    /// [`SeekIndex::verify_span`] (so they must be a span of whole segments) and wraps them.
    pub fn new(index: &SeekIndex, offset: u64, bytes: &'a [u8]) -> Result<Verified<'a>, SeekError> {
        let len = bytes.len() as u64;
        let end = offset.checked_add(len).ok_or(SeekError::NotSegmentAligned { start: offset, end: u64::MAX, len })?;
        index.verify_span(offset..end, bytes)?;
        Ok(Verified { span: Prefetched { offset, bytes } })
    }

    /// The compressed bytes of the layer it holds.
    pub fn span(&self) -> Range<u64> {
        self.span.offset..self.span.offset + self.span.bytes.len() as u64
    }
}

impl RangeSource for Verified<'_> {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.span.read_at(offset, buf)
    }
}

/// The smallest fetch (a source is asked for at least this much, unless the layer ends sooner).
const MIN_FETCH_BYTES: usize = 16 << 10;
/// The largest fetch, and so (with the few bytes left over from the one before) the buffer's bound.
pub(crate) const MAX_FETCH_BYTES: usize = 2 << 20;
/// The first step once the estimate is used up; each further step doubles, up to the largest.
const FIRST_STEP_BYTES: usize = 64 << 10;

/// Buffered compressed input from a [`RangeSource`], starting at one offset of the layer.
pub(crate) struct Input<'a> {
    source: &'a dyn RangeSource,
    /// The layer's size: nothing at or past it is fetched.
    len: u64,
    buf: Vec<u8>,
    /// The bytes not yet consumed are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The offset of the next byte to fetch (that of `buf[end]`).
    next: u64,
    /// Fetch up to here in one go; past it, fetch in `step`s.
    want_end: u64,
    /// Steps stop here first (the caller knows it needs no more); past it, they go on to `len`.
    bound: u64,
    step: usize,
    fetched: u64,
}

impl<'a> Input<'a> {
    /// Input from `source` (a layer of `len` bytes) from byte `offset` on, fetching up to
    /// `want_end` at first (in fetches of at most [`MAX_FETCH_BYTES`]), then in growing steps
    /// that stop at `bound` before they go past it.
    pub(crate) fn new(source: &'a dyn RangeSource, len: u64, offset: u64, want_end: u64, bound: u64) -> Input<'a> {
        Input {
            source,
            len,
            buf: Vec::new(),
            start: 0,
            end: 0,
            next: offset.min(len),
            want_end,
            bound,
            step: FIRST_STEP_BYTES,
            fetched: 0,
        }
    }

    /// The bytes fetched and not yet consumed.
    pub(crate) fn available(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks the first `n` available bytes consumed.
    pub(crate) fn consume(&mut self, n: usize) {
        debug_assert!(n <= self.end - self.start);
        self.start += n;
    }

    /// The layer offset of the next byte to consume.
    pub(crate) fn position(&self) -> u64 {
        self.next - (self.end - self.start) as u64
    }

    /// Whether every byte up to the layer's end has been fetched (what is available is all
    /// there is).
    pub(crate) fn is_fetched_to_end(&self) -> bool {
        self.next >= self.len
    }

    /// Whether every byte of the layer has been consumed.
    pub(crate) fn is_at_end(&self) -> bool {
        self.is_fetched_to_end() && self.start == self.end
    }

    /// How many bytes were fetched from the source so far.
    pub(crate) fn fetched_bytes(&self) -> u64 {
        self.fetched
    }

    /// Fetches the next bytes, keeping those not yet consumed. Returns `Ok(false)` if the layer
    /// has no more. A source that ends before the layer's size is an error of kind
    /// `UnexpectedEof`.
    pub(crate) fn fill(&mut self) -> io::Result<bool> {
        if self.is_fetched_to_end() {
            return Ok(false);
        }
        let wanted = if self.want_end > self.next {
            usize::try_from(self.want_end - self.next).unwrap_or(usize::MAX)
        } else {
            let step = self.step;
            self.step = (self.step * 2).min(MAX_FETCH_BYTES);
            step
        };
        let end = if self.next < self.bound { self.bound.min(self.len) } else { self.len };
        let left = usize::try_from(end - self.next).unwrap_or(usize::MAX);
        let n = wanted.clamp(MIN_FETCH_BYTES, MAX_FETCH_BYTES).min(left);
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        self.buf.resize(self.end + n, 0);
        let mut got = 0;
        while got < n {
            match self.source.read_at(self.next + got as u64, &mut self.buf[self.end + got..self.end + n]) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the layer ends at byte {}, before its size of {} bytes",
                            self.next + got as u64,
                            self.len
                        ),
                    ));
                }
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.end += n;
        self.next += n as u64;
        self.fetched += n as u64;
        Ok(true)
    }

    /// Consumes the next `N` bytes; `UnexpectedEof` if the layer ends first.
    pub(crate) fn take<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        while self.end - self.start < N {
            if !self.fill()? {
                return Err(truncated(self.position()));
            }
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.start..self.start + N]);
        self.start += N;
        Ok(out)
    }

    /// Consumes the next `n` bytes; `UnexpectedEof` if the layer ends first.
    pub(crate) fn skip(&mut self, mut n: u64) -> io::Result<()> {
        loop {
            let k = (self.end - self.start).min(usize::try_from(n).unwrap_or(usize::MAX));
            self.start += k;
            n -= k as u64;
            if n == 0 {
                return Ok(());
            }
            if !self.fill()? {
                return Err(truncated(self.position()));
            }
        }
    }

    /// Consumes bytes up to and including the next zero byte; `UnexpectedEof` if the layer ends
    /// first.
    pub(crate) fn skip_past_zero(&mut self) -> io::Result<()> {
        loop {
            if let Some(i) = memchr::memchr(0, self.available()) {
                self.start += i + 1;
                return Ok(());
            }
            self.start = self.end;
            if !self.fill()? {
                return Err(truncated(self.position()));
            }
        }
    }
}

/// The error for a layer that ends at `at`, in the middle of something.
pub(crate) fn truncated(at: u64) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("the layer is truncated (it ends at byte {at})"))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A source that records the ranges asked of it.
    struct Recording {
        bytes: Vec<u8>,
        asked: RefCell<Vec<(u64, usize)>>,
    }

    impl RangeSource for Recording {
        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            self.asked.borrow_mut().push((offset, buf.len()));
            self.bytes.read_at(offset, buf)
        }
    }

    #[test]
    fn fetches_the_estimate_at_once_then_growing_steps_and_never_past_the_end() {
        let src = Recording { bytes: (0..=255u8).cycle().take(1 << 20).collect(), asked: RefCell::default() };
        let mut input = Input::new(&src, 1 << 20, 1000, 1000 + 100_000, 1 << 20);
        assert!(input.fill().unwrap());
        assert_eq!(input.available().len(), 100_000);
        assert_eq!(input.available()[0], (1000 % 256) as u8);
        input.consume(99_990);
        assert!(input.fill().unwrap());
        assert_eq!(input.available().len(), 10 + (64 << 10));
        assert_eq!(input.position(), 1000 + 99_990);
        input.skip((1 << 20) - input.position()).unwrap();
        assert!(input.is_at_end());
        assert!(!input.fill().unwrap());
        assert_eq!(input.fetched_bytes(), (1 << 20) - 1000);
        for (offset, len) in src.asked.borrow().iter() {
            assert!(offset + *len as u64 <= 1 << 20);
        }
    }

    #[test]
    fn a_source_shorter_than_the_layer_is_unexpected_eof() {
        let bytes = vec![1u8; 100];
        let mut input = Input::new(&bytes, 200, 0, 200, 200);
        assert_eq!(input.fill().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut input = Input::new(&bytes, 100, 90, 100, 100);
        assert_eq!(input.take::<4>().unwrap(), [1; 4]);
        assert_eq!(input.skip(7).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut input = Input::new(&bytes, 100, 0, 100, 100);
        assert_eq!(input.skip_past_zero().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
