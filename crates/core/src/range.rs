//! HTTP `Range: bytes=…` requests: parsing, then resolving against a blob's size.
//!
//! Parsing and resolving are separate because a cold read learns the size only from the source's
//! response headers. What tiercache answers (RFC 9110 §14):
//! - one satisfiable range: `206` with that range;
//! - several ranges of which at least one is satisfiable: `200` with the whole body (a server may
//!   ignore `Range`; tiercache does not build `multipart/byteranges` responses);
//! - no satisfiable range, or a header that is malformed, reversed (`5-2`), overflows `u64` or
//!   lists more than [`MAX_RANGES`] ranges: `416` with a reason;
//! - a unit other than `bytes`: the header is ignored (`200`), as RFC 9110 requires.

/// Most ranges accepted in one header; more is refused as abusive.
pub const MAX_RANGES: usize = 64;

/// An inclusive byte range `start..=end` inside a blob.
///
/// Invariant: `start <= end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte offset.
    pub start: u64,
    /// Last byte offset, inclusive.
    pub end: u64,
}

impl ByteRange {
    /// The number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Always false: a range holds at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `Content-Range` value for this range of a blob of `size` bytes.
    pub fn content_range(&self, size: u64) -> String {
        format!("bytes {}-{}/{}", self.start, self.end, size)
    }
}

/// One `range-spec` as written by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spec {
    /// `a-b` or `a-` (end `None`).
    From { start: u64, end: Option<u64> },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// A parsed `Range: bytes=…` header, not yet resolved against a size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRequest {
    specs: Vec<Spec>,
}

/// Why a `Range` header cannot be served; every variant is answered with `416`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// Not `bytes=` followed by a comma-separated list of `a-b`, `a-` or `-n`.
    #[error("malformed Range header: expected bytes=START-END, bytes=START- or bytes=-SUFFIX")]
    Malformed,
    /// `a-b` with `b < a`.
    #[error("reversed byte range {start}-{end} in Range header")]
    Reversed {
        /// First position as given.
        start: u64,
        /// Last position as given.
        end: u64,
    },
    /// A number too large for 64 bits.
    #[error("byte position in Range header overflows 64 bits")]
    Overflow,
    /// More than [`MAX_RANGES`] ranges.
    #[error("Range header lists more than {MAX_RANGES} ranges")]
    TooMany,
    /// No listed range overlaps the blob.
    #[error("no requested range overlaps the {size} bytes available")]
    Unsatisfiable {
        /// The blob's size.
        size: u64,
    },
}

/// What to serve for a range request once the size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    /// Serve `206` with exactly this range.
    Partial(ByteRange),
    /// Serve `200` with the whole body (several ranges were asked for).
    Whole,
}

impl RangeRequest {
    /// Parses a `Range` header value.
    ///
    /// Returns `Ok(None)` if and only if the unit is not `bytes` (the header is then ignored).
    pub fn parse(header: &str) -> Result<Option<RangeRequest>, RangeError> {
        let header = header.trim();
        let Some((unit, set)) = header.split_once('=') else {
            return Err(RangeError::Malformed);
        };
        if !unit.trim().eq_ignore_ascii_case("bytes") {
            if unit.trim().is_empty() || !unit.trim().bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(RangeError::Malformed);
            }
            return Ok(None);
        }
        let mut specs = Vec::new();
        for part in set.split(',') {
            let part = part.trim_matches(|c| c == ' ' || c == '\t');
            if part.is_empty() {
                // RFC 9110 allows empty list elements; at least one real spec is still required.
                continue;
            }
            if specs.len() == MAX_RANGES {
                return Err(RangeError::TooMany);
            }
            let (first, last) = part.split_once('-').ok_or(RangeError::Malformed)?;
            let spec = match (first.is_empty(), last.is_empty()) {
                (true, true) => return Err(RangeError::Malformed),
                (true, false) => Spec::Suffix(number(last)?),
                (false, true) => Spec::From { start: number(first)?, end: None },
                (false, false) => {
                    let (start, end) = (number(first)?, number(last)?);
                    if end < start {
                        return Err(RangeError::Reversed { start, end });
                    }
                    Spec::From { start, end: Some(end) }
                }
            };
            specs.push(spec);
        }
        if specs.is_empty() {
            return Err(RangeError::Malformed);
        }
        Ok(Some(RangeRequest { specs }))
    }

    /// A request for one explicit range (`start..=end`), as the CLI's `--range` gives.
    pub fn single(start: u64, end: Option<u64>) -> Result<RangeRequest, RangeError> {
        if let Some(end) = end
            && end < start
        {
            return Err(RangeError::Reversed { start, end });
        }
        Ok(RangeRequest { specs: vec![Spec::From { start, end }] })
    }

    /// The single range asked for, if exactly one was, before knowing the size: its start and, for
    /// `a-b`, its end. Suffix ranges return `None` since their start depends on the size.
    pub fn single_start(&self) -> Option<(u64, Option<u64>)> {
        match self.specs.as_slice() {
            [Spec::From { start, end }] => Some((*start, *end)),
            _ => None,
        }
    }

    /// Resolves the request against a blob of `size` bytes.
    pub fn resolve(&self, size: u64) -> Result<Resolved, RangeError> {
        let satisfiable: Vec<ByteRange> = self
            .specs
            .iter()
            .filter_map(|spec| match *spec {
                Spec::From { start, end } if start < size => {
                    Some(ByteRange { start, end: end.unwrap_or(u64::MAX).min(size - 1) })
                }
                Spec::From { .. } => None,
                Spec::Suffix(0) => None,
                Spec::Suffix(n) if size > 0 => Some(ByteRange { start: size.saturating_sub(n), end: size - 1 }),
                Spec::Suffix(_) => None,
            })
            .collect();
        match (self.specs.len(), satisfiable.as_slice()) {
            (_, []) => Err(RangeError::Unsatisfiable { size }),
            (1, [one]) => Ok(Resolved::Partial(*one)),
            _ => Ok(Resolved::Whole),
        }
    }
}

fn number(s: &str) -> Result<u64, RangeError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RangeError::Malformed);
    }
    s.parse::<u64>().map_err(|_| RangeError::Overflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(header: &str, size: u64, expect: &str) {
        let got = match RangeRequest::parse(header) {
            Ok(None) => "ignored".to_owned(),
            Ok(Some(req)) => match req.resolve(size) {
                Ok(Resolved::Partial(r)) => format!("206 {}-{}", r.start, r.end),
                Ok(Resolved::Whole) => "200".to_owned(),
                Err(e) => format!("416 {e}"),
            },
            Err(e) => format!("416 {e}"),
        };
        assert_eq!(got, expect, "Range: {header:?} over {size} bytes");
    }

    #[test]
    fn table() {
        check("bytes=0-0", 10, "206 0-0");
        check("bytes=0-", 10, "206 0-9");
        check("bytes=2-5", 10, "206 2-5");
        check("bytes=5-100", 10, "206 5-9");
        check("bytes=-3", 10, "206 7-9");
        check("bytes=-30", 10, "206 0-9");
        check("BYTES = 1-2", 10, "206 1-2");
        check("bytes=9-", 10, "206 9-9");
        check("bytes=10-", 10, "416 no requested range overlaps the 10 bytes available");
        check("bytes=-0", 10, "416 no requested range overlaps the 10 bytes available");
        check("bytes=0-", 0, "416 no requested range overlaps the 0 bytes available");
        check("bytes=0-1,3-4", 10, "200");
        check("bytes=0-1, 30-40", 10, "200");
        check("bytes=30-40,50-", 10, "416 no requested range overlaps the 10 bytes available");
        check("items=0-1", 10, "ignored");
        check("bytes=5-2", 10, "416 reversed byte range 5-2 in Range header");
        check("bytes=99999999999999999999-", 10, "416 byte position in Range header overflows 64 bits");
        check("bytes=a-b", 10, &format!("416 {}", RangeError::Malformed));
        check("bytes=--1", 10, &format!("416 {}", RangeError::Malformed));
        check("bytes=-", 10, &format!("416 {}", RangeError::Malformed));
        check("bytes=", 10, &format!("416 {}", RangeError::Malformed));
        check("bytes=+1-2", 10, &format!("416 {}", RangeError::Malformed));
        check("bytes 0-1", 10, &format!("416 {}", RangeError::Malformed));
        check("=0-1", 10, &format!("416 {}", RangeError::Malformed));
        check(&format!("bytes={}", vec!["0-0"; 65].join(",")), 10, "416 Range header lists more than 64 ranges");
    }

    /// The model: which offsets a byte-range-spec selects, by brute force over the blob.
    fn model(start: Option<u64>, end: Option<u64>, size: u64) -> Option<(u64, u64)> {
        let picked: Vec<u64> = (0..size)
            .filter(|&i| match (start, end) {
                (Some(s), Some(e)) => i >= s && i <= e,
                (Some(s), None) => i >= s,
                (None, Some(n)) => i + n >= size,
                (None, None) => unreachable!(),
            })
            .collect();
        Some((*picked.first()?, *picked.last()?))
    }

    proptest! {
        #[test]
        fn single_spec_matches_model(
            start in proptest::option::of(0u64..80),
            end in proptest::option::of(0u64..80),
            size in 0u64..64,
        ) {
            prop_assume!(start.is_some() || end.is_some());
            let header = format!(
                "bytes={}-{}",
                start.map(|s| s.to_string()).unwrap_or_default(),
                end.map(|e| e.to_string()).unwrap_or_default()
            );
            let parsed = RangeRequest::parse(&header);
            if let (Some(s), Some(e)) = (start, end)
                && e < s {
                    prop_assert_eq!(parsed, Err(RangeError::Reversed { start: s, end: e }));
                    return Ok(());
                }
            let got = parsed.unwrap().unwrap().resolve(size);
            match model(start, end, size) {
                Some((s, e)) => {
                    prop_assert_eq!(got, Ok(Resolved::Partial(ByteRange { start: s, end: e })));
                }
                None => prop_assert_eq!(got, Err(RangeError::Unsatisfiable { size })),
            }
        }

        #[test]
        fn never_panics(header in "\\PC{0,40}", size in any::<u64>()) {
            if let Ok(Some(req)) = RangeRequest::parse(&header)
                && let Ok(Resolved::Partial(r)) = req.resolve(size) {
                    prop_assert!(r.start <= r.end && r.end < size);
                }
        }
    }
}
