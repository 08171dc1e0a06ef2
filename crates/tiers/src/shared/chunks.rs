//! The chunk list: the side object `blobs/sha256/<hex>.chunks` that makes ranges of a shared blob
//! verifiable without reading the whole blob.
//!
//! Text, so an operator can read it:
//!
//! ```text
//! tiercache-chunks 1
//! blob sha256:<64 hex>
//! size <bytes>
//! chunk <bytes>
//! <64 hex>            one line per chunk, in order: SHA-256 of that chunk's bytes
//! check <64 hex>      SHA-256 of every byte above this line
//! ```
//!
//! Invariant: a parsed [`ChunkList`] names its blob, its chunk count matches its size, and its
//! `check` line matched, so a torn or bit-flipped side object is refused rather than trusted.

use tiercache_core::{Digest, Hasher};

const MAGIC: &str = "tiercache-chunks 1";
/// Largest chunk size accepted from a side object (a corrupt size must not make a reader allocate
/// without bound).
const MAX_CHUNK_BYTES: u64 = 64 << 20;

/// SHA-256 digests of a blob's fixed-size chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkList {
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size_bytes: u64,
    /// Bytes per chunk (the last one may be shorter).
    pub chunk_bytes: u64,
    /// One digest per chunk. Invariant: `chunks.len() == size_bytes.div_ceil(chunk_bytes)`.
    pub chunks: Vec<Digest>,
}

impl ChunkList {
    /// The byte range `start..end` of chunk `i`.
    pub fn chunk_range(&self, i: usize) -> (u64, u64) {
        let start = i as u64 * self.chunk_bytes;
        (start, (start + self.chunk_bytes).min(self.size_bytes))
    }

    /// The chunk holding byte `pos`.
    pub fn chunk_of(&self, pos: u64) -> usize {
        (pos / self.chunk_bytes) as usize
    }

    /// The side object's text.
    pub fn encode(&self) -> String {
        let mut s = format!("{MAGIC}\nblob {}\nsize {}\nchunk {}\n", self.digest, self.size_bytes, self.chunk_bytes);
        for c in &self.chunks {
            s.push_str(&c.hex());
            s.push('\n');
        }
        let check = Digest::of(s.as_bytes());
        s.push_str(&format!("check {}\n", check.hex()));
        s
    }

    /// Parses a side object, which must describe `digest`.
    pub fn decode(digest: &Digest, bytes: &[u8]) -> Result<ChunkList, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "chunk list is not UTF-8".to_owned())?;
        let body_end = text.rfind("check ").ok_or("chunk list has no check line")?;
        let (body, check) = text.split_at(body_end);
        let check = check.strip_prefix("check ").and_then(|c| c.strip_suffix('\n')).ok_or("bad check line")?;
        if Digest::of(body.as_bytes()).hex() != check {
            return Err("chunk list fails its check (torn or corrupted)".into());
        }
        let mut lines = body.lines();
        let mut field = |name: &str| {
            let line = lines.next().unwrap_or_default();
            line.strip_prefix(name).map(str::to_owned).ok_or_else(|| format!("chunk list: expected `{name}…`"))
        };
        if !field(MAGIC)?.is_empty() {
            return Err("chunk list: unknown format".into());
        }
        let blob: Digest = field("blob ")?.parse().map_err(|e| format!("chunk list: {e}"))?;
        if blob != *digest {
            return Err(format!("chunk list describes {blob}, not {digest}"));
        }
        let size_bytes: u64 = field("size ")?.parse().map_err(|_| "chunk list: bad size")?;
        let chunk_bytes: u64 = field("chunk ")?.parse().map_err(|_| "chunk list: bad chunk size")?;
        if chunk_bytes == 0 || chunk_bytes > MAX_CHUNK_BYTES {
            return Err(format!("chunk list: chunk size {chunk_bytes} out of range"));
        }
        let chunks =
            lines.map(Digest::from_hex).collect::<Result<Vec<_>, _>>().map_err(|e| format!("chunk list: {e}"))?;
        if chunks.len() as u64 != size_bytes.div_ceil(chunk_bytes) {
            return Err(format!("chunk list: {} chunks for {size_bytes} bytes", chunks.len()));
        }
        Ok(ChunkList { digest: *digest, size_bytes, chunk_bytes, chunks })
    }
}

/// Builds a chunk list while the blob's bytes go by, and checks the whole digest at the end.
pub(crate) struct ChunkHasher {
    chunk_bytes: u64,
    whole: Hasher,
    current: Hasher,
    in_current: u64,
    size_bytes: u64,
    chunks: Vec<Digest>,
}

impl ChunkHasher {
    pub(crate) fn new(chunk_bytes: u64) -> ChunkHasher {
        ChunkHasher {
            chunk_bytes,
            whole: Hasher::new(),
            current: Hasher::new(),
            in_current: 0,
            size_bytes: 0,
            chunks: Vec::new(),
        }
    }

    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        self.whole.update(bytes);
        self.size_bytes += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = ((self.chunk_bytes - self.in_current) as usize).min(bytes.len());
            self.current.update(&bytes[..take]);
            self.in_current += take as u64;
            bytes = &bytes[take..];
            if self.in_current == self.chunk_bytes {
                self.chunks.push(std::mem::replace(&mut self.current, Hasher::new()).finish());
                self.in_current = 0;
            }
        }
    }

    /// The list, if the bytes hash to `expected`; otherwise the digest they do hash to.
    pub(crate) fn finish(mut self, expected: &Digest) -> Result<ChunkList, Digest> {
        if self.in_current > 0 {
            self.chunks.push(self.current.finish());
        }
        let actual = self.whole.finish();
        if actual != *expected {
            return Err(actual);
        }
        Ok(ChunkList {
            digest: actual,
            size_bytes: self.size_bytes,
            chunk_bytes: self.chunk_bytes,
            chunks: self.chunks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_of(data: &[u8], chunk: u64) -> ChunkList {
        let mut h = ChunkHasher::new(chunk);
        for piece in data.chunks(7) {
            h.update(piece);
        }
        h.finish(&Digest::of(data)).unwrap()
    }

    #[test]
    fn round_trips_and_matches_chunk_digests() {
        for len in [0usize, 1, 15, 16, 17, 100] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let list = list_of(&data, 16);
            assert_eq!(list.chunks.len(), len.div_ceil(16));
            for (i, c) in list.chunks.iter().enumerate() {
                let (s, e) = list.chunk_range(i);
                assert_eq!(*c, Digest::of(&data[s as usize..e as usize]));
            }
            assert_eq!(ChunkList::decode(&Digest::of(&data), list.encode().as_bytes()).unwrap(), list);
        }
    }

    #[test]
    fn refuses_damage_and_mismatches() {
        let data = b"some bytes of a blob, long enough for three chunks".to_vec();
        let list = list_of(&data, 20);
        let text = list.encode();
        let digest = Digest::of(&data);
        // Any flipped byte, a torn tail, or the wrong blob is refused.
        for i in 0..text.len() {
            let mut bad = text.clone().into_bytes();
            bad[i] ^= 0x01;
            assert!(ChunkList::decode(&digest, &bad).is_err(), "flip at {i} accepted");
        }
        assert!(ChunkList::decode(&digest, &text.as_bytes()[..text.len() - 10]).is_err());
        assert!(ChunkList::decode(&Digest::of(b"other"), text.as_bytes()).is_err());
        // A well-formed list whose whole digest does not match the bytes is never built.
        let mut h = ChunkHasher::new(20);
        h.update(&data);
        assert!(h.finish(&Digest::of(b"other")).is_err());
    }
}
