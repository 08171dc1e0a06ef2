//! Sparse files' maps: which spans of a file hold data (the rest reads as zeros), in GNU tar's
//! formats — the old GNU header's map with its extension blocks (read by the caller from the
//! stream), and PAX formats 0.0 (`GNU.sparse.offset`/`numbytes` pairs), 0.1 (`GNU.sparse.map`)
//! and 1.0 (the map as decimal lines at the start of the entry's data, fed here block by block).
//!
//! A map only describes: nothing is allocated by the file's logical size, so a 10 GiB sparse
//! file in a tiny layer costs its segments, at most [`MAX_SEGMENTS`] of them.

use super::pax::{SparseKeys, decimal};
use crate::DeriveError;

/// The most segments one sparse file may have (16 bytes each, in memory and in the index).
pub(crate) const MAX_SEGMENTS: usize = 1 << 20;

/// Why a sparse map was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum MapError {
    /// It has more than [`MAX_SEGMENTS`] segments.
    TooMany,
    /// It is malformed, or does not fit its entry.
    Malformed(String),
}

impl MapError {
    /// The error of the entry whose header is at offset `at`.
    pub(crate) fn at(self, at: u64) -> DeriveError {
        match self {
            MapError::TooMany => DeriveError::TooLarge(format!(
                "a sparse map has more than {MAX_SEGMENTS} segments (tar header at offset {at})"
            )),
            MapError::Malformed(what) => super::corrupt(at, &what),
        }
    }
}

impl From<String> for MapError {
    fn from(what: String) -> MapError {
        MapError::Malformed(what)
    }
}

impl From<&str> for MapError {
    fn from(what: &str) -> MapError {
        MapError::Malformed(what.to_owned())
    }
}

/// Which PAX sparse format an entry's keys name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PaxSparse {
    /// 0.0 or 0.1: the map is in the keys.
    InKeys,
    /// 1.0: the map is at the start of the data.
    InData,
}

/// The PAX sparse format `keys` name, if any; `Err` for a version this does not read.
pub(crate) fn pax_format(keys: &SparseKeys) -> Result<Option<PaxSparse>, String> {
    match keys.version {
        (Some(1), Some(0)) => Ok(Some(PaxSparse::InData)),
        (Some(0), Some(0 | 1)) | (None, None) if keys.any() => Ok(Some(PaxSparse::InKeys)),
        (None, None) => Ok(None),
        (major, minor) => Err(format!(
            "PAX sparse format {}.{} is not supported (0.0, 0.1 and 1.0 are)",
            major.map_or("?".into(), |n| n.to_string()),
            minor.map_or("?".into(), |n| n.to_string())
        )),
    }
}

/// The map of a PAX 0.0 or 0.1 entry.
pub(crate) fn from_keys(keys: &SparseKeys) -> Result<Vec<(u64, u64)>, MapError> {
    if keys.pending_offset.is_some() {
        return Err("pax GNU.sparse.offset without its GNU.sparse.numbytes".into());
    }
    let segments = match &keys.map {
        Some(map) => parse_map_list(map)?,
        None => keys.pairs.clone(),
    };
    if let Some(n) = keys.n_blocks
        && n != segments.len() as u64
    {
        return Err(format!("GNU.sparse.numblocks says {n} segments, the map has {}", segments.len()).into());
    }
    Ok(segments)
}

/// `offset,length,offset,length,…` (0.1's `GNU.sparse.map`).
fn parse_map_list(map: &[u8]) -> Result<Vec<(u64, u64)>, MapError> {
    if map.is_empty() {
        return Ok(Vec::new());
    }
    let numbers = map
        .split(|&b| b == b',')
        .map(|n| decimal(n).map_err(|e| format!("GNU.sparse.map: {e}")))
        .collect::<Result<Vec<u64>, String>>()?;
    if numbers.len() % 2 != 0 {
        return Err("GNU.sparse.map has an odd count of numbers".into());
    }
    if numbers.len() / 2 > MAX_SEGMENTS {
        return Err(MapError::TooMany);
    }
    Ok(numbers.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

/// PAX 1.0's map, read from the data's first blocks: a count, then an offset and a length per
/// segment, each a decimal line; the blocks it takes are padded with anything.
#[derive(Debug, Default)]
pub(crate) struct DataMap {
    numbers: Vec<u64>,
    count: Option<u64>,
    digits: Vec<u8>,
}

impl DataMap {
    /// Feeds the next block; `Ok(true)` once the map is complete (the rest of the block is
    /// padding).
    pub(crate) fn feed(&mut self, block: &[u8]) -> Result<bool, MapError> {
        for &b in block {
            if b != b'\n' {
                if !b.is_ascii_digit() || self.digits.len() >= 19 {
                    return Err("the PAX 1.0 sparse map at the start of the data is malformed".into());
                }
                self.digits.push(b);
                continue;
            }
            let n = decimal(&self.digits).map_err(|e| format!("the PAX 1.0 sparse map: {e}"))?;
            self.digits.clear();
            match self.count {
                None if n > MAX_SEGMENTS as u64 => return Err(MapError::TooMany),
                None => {
                    self.count = Some(n);
                    self.numbers.reserve(2 * n as usize);
                }
                Some(_) => self.numbers.push(n),
            }
            if self.count.is_some_and(|c| self.numbers.len() as u64 == 2 * c) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The segments, once [`DataMap::feed`] said the map is complete.
    pub(crate) fn segments(self) -> Vec<(u64, u64)> {
        self.numbers.chunks_exact(2).map(|p| (p[0], p[1])).collect()
    }
}

/// Checks a map against the file's logical size and the bytes stored for it: segments in order,
/// not overlapping, inside the file, each but the last a whole number of blocks (tar readers
/// disagree about where data after a shorter one lies), their lengths adding up to `stored`.
pub(crate) fn check(segments: &[(u64, u64)], real_size: u64, stored: u64) -> Result<(), MapError> {
    if segments.len() > MAX_SEGMENTS {
        return Err(MapError::TooMany);
    }
    let last_data = segments.iter().rposition(|s| s.1 != 0).unwrap_or(0);
    let (mut end, mut total) = (0u64, 0u64);
    for (i, &(offset, len)) in segments.iter().enumerate() {
        if offset < end {
            return Err(
                format!("sparse segment {i} (at {offset}) overlaps the one before it or is out of order").into()
            );
        }
        end = offset
            .checked_add(len)
            .filter(|&e| e <= real_size)
            .ok_or_else(|| format!("sparse segment {i} ({offset}+{len}) ends past the file's size {real_size}"))?;
        if i < last_data && len % 512 != 0 {
            return Err(format!("sparse segment {i} is {len} bytes, not a whole number of 512-byte blocks").into());
        }
        total += len;
    }
    if total != stored {
        return Err(format!("the sparse map holds {total} bytes of data but the entry stores {stored}").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_read_and_checked() {
        let keys =
            SparseKeys { map: Some(b"0,512,8192,10,10485760,0".to_vec()), n_blocks: Some(3), ..Default::default() };
        assert_eq!(pax_format(&keys), Ok(Some(PaxSparse::InKeys)));
        let map = from_keys(&keys).unwrap();
        assert_eq!(map, vec![(0, 512), (8192, 10), (10 << 20, 0)]);
        assert!(check(&map, 10 << 20, 522).is_ok());
        assert!(check(&map, 10 << 20, 523).is_err());
        assert!(check(&map, 8000, 522).is_err());
        assert!(check(&[(0, 10), (8192, 10)], 1 << 20, 20).is_err(), "an unaligned segment before the last");
        assert!(check(&[(1024, 512), (0, 512)], 1 << 20, 1024).is_err());
        assert!(from_keys(&SparseKeys { map: Some(b"0,1,2".to_vec()), ..Default::default() }).is_err());
        assert!(
            from_keys(&SparseKeys { map: Some(b"0,512".to_vec()), n_blocks: Some(2), ..Default::default() }).is_err()
        );
        let v2 = SparseKeys { version: (Some(2), Some(0)), ..Default::default() };
        assert!(pax_format(&v2).is_err());
        assert_eq!(pax_format(&SparseKeys::default()), Ok(None));
    }

    #[test]
    fn the_map_in_the_data_is_read_across_blocks() {
        let text = b"2\n0\n512\n10737418240\n0\n";
        let mut map = DataMap::default();
        assert_eq!(map.feed(&text[..7]), Ok(false));
        assert_eq!(map.feed(&[&text[7..], &[0u8; 100][..]].concat()), Ok(true));
        assert_eq!(map.segments(), vec![(0, 512), (10 << 30, 0)]);
        assert!(DataMap::default().feed(b"1\nx\n").is_err());
        assert_eq!(
            DataMap::default().feed(b"99999999999\n"),
            Err(MapError::TooMany),
            "refused before anything is reserved"
        );
    }
}
