//! The chunk list: what a reader knows of a blob in the shared tier (its size, its chunks and how
//! each is checked), from either side object:
//! - `blobs/sha256/<hex>.tree` (and `.leaves`), written by this version: BLAKE3 chunk digests over
//!   small leaves, so a small range is verified alone (`tree.rs`);
//! - `blobs/sha256/<hex>.chunks`, written by older nodes and still read: the SHA-256 of each whole
//!   chunk, so a range is verified only with its whole chunk.
//!
//! The `.chunks` format (version 1), text, so an operator can read it:
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

use tiercache_core::Digest;

const MAGIC: &str = "tiercache-chunks 1";
/// Largest chunk size accepted from a side object (a corrupt size must not make a reader allocate
/// without bound).
const MAX_CHUNK_BYTES: u64 = 64 << 20;

/// A blob in the shared tier: its size, its fixed-size chunks (the unit of a whole read) and how
/// each chunk, and each smaller leaf if the side object has them, is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkList {
    /// The blob.
    pub digest: Digest,
    /// Its size.
    pub size_bytes: u64,
    /// Bytes per chunk (the last one may be shorter).
    pub chunk_bytes: u64,
    /// Invariant: one digest per chunk, `size_bytes.div_ceil(chunk_bytes)` of them.
    pub(crate) check: Check,
}

/// How a [`ChunkList`]'s chunks are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// `.chunks`: the SHA-256 of each chunk.
    Sha256(Vec<Digest>),
    /// `.tree`: the BLAKE3 of each chunk's leaf digests; the leaf digests are in `.leaves`.
    Tree { leaf_bytes: u64, chunks: Vec<super::tree::B3> },
}

/// What one chunk must hash to (chunk `i`).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect {
    /// Its SHA-256.
    Sha256 { i: usize, digest: Digest },
    /// The BLAKE3 of its leaves' BLAKE3 digests.
    Tree { i: usize, leaf_bytes: u64, chunk: super::tree::B3 },
}

impl ChunkList {
    /// How many chunks.
    pub fn n_chunks(&self) -> usize {
        match &self.check {
            Check::Sha256(c) => c.len(),
            Check::Tree { chunks, .. } => chunks.len(),
        }
    }

    /// The smallest span verified alone: a leaf of a tree, a whole chunk of a `.chunks` list.
    pub fn leaf_bytes(&self) -> u64 {
        match &self.check {
            Check::Sha256(_) => self.chunk_bytes,
            Check::Tree { leaf_bytes, .. } => *leaf_bytes,
        }
    }

    /// Whether it came from an older node's `.chunks` object.
    pub fn is_legacy(&self) -> bool {
        matches!(self.check, Check::Sha256(_))
    }

    /// What chunk `i` must hash to.
    pub(crate) fn expect(&self, i: usize) -> Expect {
        match &self.check {
            Check::Sha256(c) => Expect::Sha256 { i, digest: c[i] },
            Check::Tree { leaf_bytes, chunks } => Expect::Tree { i, leaf_bytes: *leaf_bytes, chunk: chunks[i] },
        }
    }

    /// The byte range `start..end` of chunk `i`.
    pub fn chunk_range(&self, i: usize) -> (u64, u64) {
        let start = i as u64 * self.chunk_bytes;
        (start, (start + self.chunk_bytes).min(self.size_bytes))
    }

    /// The chunk holding byte `pos`.
    pub fn chunk_of(&self, pos: u64) -> usize {
        (pos / self.chunk_bytes) as usize
    }

    /// The `.chunks` text of a list of SHA-256 chunk digests.
    #[cfg(test)]
    fn encode(&self) -> String {
        let Check::Sha256(chunks) = &self.check else { unreachable!("a .chunks list") };
        let mut s = format!("{MAGIC}\nblob {}\nsize {}\nchunk {}\n", self.digest, self.size_bytes, self.chunk_bytes);
        for c in chunks {
            s.push_str(&c.hex());
            s.push('\n');
        }
        let check = Digest::of(s.as_bytes());
        s.push_str(&format!("check {}\n", check.hex()));
        s
    }

    /// Parses a `.chunks` side object, which must describe `digest`.
    pub(crate) fn decode(digest: &Digest, bytes: &[u8]) -> Result<ChunkList, String> {
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
        Ok(ChunkList { digest: *digest, size_bytes, chunk_bytes, check: Check::Sha256(chunks) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_of(data: &[u8], chunk: u64) -> ChunkList {
        let chunks = data.chunks(chunk as usize).map(Digest::of).collect();
        ChunkList {
            digest: Digest::of(data),
            size_bytes: data.len() as u64,
            chunk_bytes: chunk,
            check: Check::Sha256(chunks),
        }
    }

    #[test]
    fn round_trips() {
        for len in [0usize, 1, 15, 16, 17, 100] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let list = list_of(&data, 16);
            assert_eq!(list.n_chunks(), len.div_ceil(16));
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
    }
}
