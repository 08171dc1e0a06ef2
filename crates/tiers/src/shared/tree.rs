//! The leaf tree: the side objects `blobs/sha256/<hex>.tree` and `blobs/sha256/<hex>.leaves`
//! that let a small range of a shared blob be verified alone, reading only the leaf (16 KiB by
//! default) that holds it, and a whole read be verified chunk by chunk with BLAKE3 (about twice
//! as fast as SHA-256 here), so that the blob's own SHA-256 pass can stay off the reader's path.
//!
//! The blob is cut into chunks (1 MiB by default, the unit of a whole read) and each chunk into
//! leaves. A leaf's digest is the BLAKE3 of its bytes; a chunk's digest is the BLAKE3 of its
//! leaves' digests, concatenated (32 bytes each). So a whole chunk is verified from its bytes
//! alone, and a leaf from its bytes, its chunk's leaf digests (read from `.leaves`) and the
//! chunk's digest.
//!
//! `.tree` is text, so an operator can read it, and small (one line per chunk):
//!
//! ```text
//! tiercache-tree 1
//! blob sha256:<64 hex>
//! size <bytes>
//! hash blake3
//! leaf <bytes>
//! chunk <bytes>        a multiple of leaf
//! <64 hex>             one line per chunk, in order: BLAKE3 of its leaves' digests
//! check <64 hex>       SHA-256 of every byte above this line
//! ```
//!
//! `.leaves` is binary: every leaf's 32-byte BLAKE3 digest, in order, nothing else; chunk `i`'s
//! leaf digests start at byte `i × (chunk / leaf) × 32`.
//!
//! Invariant: a parsed tree names its blob, its chunk count matches its size, and its `check`
//! line matched. The tree is written last (after the blob and `.leaves`), so its presence means
//! the three objects are complete. This module does no I/O: `shared.rs` reads and writes.

use tiercache_core::{Digest, Hasher};

use super::chunks::{Check, ChunkList};

const MAGIC: &str = "tiercache-tree 1";
/// Bytes of one digest in `.leaves`.
pub(crate) const LEAF_DIGEST_BYTES: u64 = 32;
/// Largest chunk accepted from a side object (a corrupt size must not make a reader allocate
/// without bound).
const MAX_CHUNK_BYTES: u64 = 64 << 20;
/// Smallest leaf accepted from a side object.
const MIN_LEAF_BYTES: u64 = 1024;

/// A BLAKE3 digest.
pub(crate) type B3 = [u8; 32];

/// The `.tree` text of `list` (which must be a tree).
pub(crate) fn encode(list: &ChunkList) -> String {
    let Check::Tree { leaf_bytes, chunks } = &list.check else { unreachable!("encode is called on trees only") };
    let mut s = format!(
        "{MAGIC}\nblob {}\nsize {}\nhash blake3\nleaf {leaf_bytes}\nchunk {}\n",
        list.digest, list.size_bytes, list.chunk_bytes
    );
    for c in chunks {
        s.push_str(&hex::encode(c));
        s.push('\n');
    }
    let check = Digest::of(s.as_bytes());
    s.push_str(&format!("check {}\n", check.hex()));
    s
}

/// Parses a `.tree` object, which must describe `digest`.
pub(crate) fn decode(digest: &Digest, bytes: &[u8]) -> Result<ChunkList, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "tree is not UTF-8".to_owned())?;
    let body_end = text.rfind("check ").ok_or("tree has no check line")?;
    let (body, check) = text.split_at(body_end);
    let check = check.strip_prefix("check ").and_then(|c| c.strip_suffix('\n')).ok_or("tree: bad check line")?;
    if Digest::of(body.as_bytes()).hex() != check {
        return Err("tree fails its check (torn or corrupted)".into());
    }
    let mut lines = body.lines();
    let mut field = |name: &str| {
        let line = lines.next().unwrap_or_default();
        line.strip_prefix(name).map(str::to_owned).ok_or_else(|| format!("tree: expected `{name}…`"))
    };
    if !field(MAGIC)?.is_empty() {
        return Err("tree: unknown format".into());
    }
    let blob: Digest = field("blob ")?.parse().map_err(|e| format!("tree: {e}"))?;
    if blob != *digest {
        return Err(format!("tree describes {blob}, not {digest}"));
    }
    let size_bytes: u64 = field("size ")?.parse().map_err(|_| "tree: bad size")?;
    if field("hash ")? != "blake3" {
        return Err("tree: unknown hash".into());
    }
    let leaf_bytes: u64 = field("leaf ")?.parse().map_err(|_| "tree: bad leaf size")?;
    let chunk_bytes: u64 = field("chunk ")?.parse().map_err(|_| "tree: bad chunk size")?;
    if !(MIN_LEAF_BYTES..=MAX_CHUNK_BYTES).contains(&leaf_bytes)
        || !(leaf_bytes..=MAX_CHUNK_BYTES).contains(&chunk_bytes)
        || !chunk_bytes.is_multiple_of(leaf_bytes)
    {
        return Err(format!("tree: leaf {leaf_bytes} and chunk {chunk_bytes} out of range"));
    }
    let chunks = lines
        .map(|l| {
            let mut d = [0u8; 32];
            hex::decode_to_slice(l, &mut d).map(|()| d).map_err(|e| format!("tree: {e}"))
        })
        .collect::<Result<Vec<B3>, _>>()?;
    if chunks.len() as u64 != size_bytes.div_ceil(chunk_bytes) {
        return Err(format!("tree: {} chunks for {size_bytes} bytes", chunks.len()));
    }
    Ok(ChunkList { digest: *digest, size_bytes, chunk_bytes, check: Check::Tree { leaf_bytes, chunks } })
}

/// The BLAKE3 of each `leaf_bytes` piece of `bytes`, concatenated.
pub(crate) fn leaf_digests(bytes: &[u8], leaf_bytes: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len().div_ceil(leaf_bytes as usize) * 32);
    for leaf in bytes.chunks(leaf_bytes as usize) {
        out.extend_from_slice(blake3::hash(leaf).as_bytes());
    }
    out
}

/// The digest of a chunk whose leaves have `leaf_digests` (as [`leaf_digests`] gives them).
pub(crate) fn chunk_digest(leaf_digests: &[u8]) -> B3 {
    *blake3::hash(leaf_digests).as_bytes()
}

/// Builds the tree and `.leaves` while the blob's bytes go by, and checks the blob's SHA-256 at
/// the end.
pub(crate) struct TreeHasher {
    leaf_bytes: u64,
    chunk_bytes: u64,
    whole: Hasher,
    /// The leaf being hashed, and its bytes so far.
    leaf: blake3::Hasher,
    in_leaf: u64,
    /// The current chunk's leaf digests.
    chunk_leaves: Vec<u8>,
    in_chunk: u64,
    size_bytes: u64,
    /// Every leaf digest so far: the `.leaves` object.
    leaves: Vec<u8>,
    chunks: Vec<B3>,
}

impl TreeHasher {
    pub(crate) fn new(leaf_bytes: u64, chunk_bytes: u64) -> TreeHasher {
        TreeHasher {
            leaf_bytes,
            chunk_bytes,
            whole: Hasher::new(),
            leaf: blake3::Hasher::new(),
            in_leaf: 0,
            chunk_leaves: Vec::new(),
            in_chunk: 0,
            size_bytes: 0,
            leaves: Vec::new(),
            chunks: Vec::new(),
        }
    }

    pub(crate) fn update(&mut self, mut bytes: &[u8]) {
        self.whole.update(bytes);
        self.size_bytes += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = ((self.leaf_bytes - self.in_leaf) as usize).min(bytes.len());
            self.leaf.update(&bytes[..take]);
            self.in_leaf += take as u64;
            self.in_chunk += take as u64;
            bytes = &bytes[take..];
            if self.in_leaf == self.leaf_bytes {
                self.end_leaf();
            }
            if self.in_chunk == self.chunk_bytes {
                self.end_chunk();
            }
        }
    }

    fn end_leaf(&mut self) {
        let d = std::mem::replace(&mut self.leaf, blake3::Hasher::new()).finalize();
        self.chunk_leaves.extend_from_slice(d.as_bytes());
        self.leaves.extend_from_slice(d.as_bytes());
        self.in_leaf = 0;
    }

    fn end_chunk(&mut self) {
        self.chunks.push(chunk_digest(&self.chunk_leaves));
        self.chunk_leaves.clear();
        self.in_chunk = 0;
    }

    /// The tree and the `.leaves` bytes, if the bytes hash to `expected`; otherwise the digest
    /// they do hash to.
    pub(crate) fn finish(mut self, expected: &Digest) -> Result<(ChunkList, Vec<u8>), Digest> {
        if self.in_leaf > 0 {
            self.end_leaf();
        }
        if self.in_chunk > 0 {
            self.end_chunk();
        }
        let actual = self.whole.finish();
        if actual != *expected {
            return Err(actual);
        }
        let list = ChunkList {
            digest: actual,
            size_bytes: self.size_bytes,
            chunk_bytes: self.chunk_bytes,
            check: Check::Tree { leaf_bytes: self.leaf_bytes, chunks: self.chunks },
        };
        Ok((list, self.leaves))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_of(data: &[u8], leaf: u64, chunk: u64) -> (ChunkList, Vec<u8>) {
        let mut h = TreeHasher::new(leaf, chunk);
        for piece in data.chunks(7000) {
            h.update(piece);
        }
        h.finish(&Digest::of(data)).unwrap()
    }

    #[test]
    fn round_trips_and_matches_leaf_and_chunk_digests() {
        let (leaf, chunk) = (1024u64, 4096u64);
        for len in [0usize, 1, 1023, 1024, 1025, 4096, 4097, 10_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let (list, leaves) = tree_of(&data, leaf, chunk);
            assert_eq!(list.n_chunks(), len.div_ceil(chunk as usize));
            assert_eq!(leaves, leaf_digests(&data, leaf), "len {len}");
            let Check::Tree { chunks, .. } = &list.check else { panic!("a tree") };
            for (i, c) in chunks.iter().enumerate() {
                let (s, e) = list.chunk_range(i);
                assert_eq!(*c, chunk_digest(&leaf_digests(&data[s as usize..e as usize], leaf)));
            }
            assert_eq!(decode(&Digest::of(&data), encode(&list).as_bytes()).unwrap(), list);
        }
    }

    /// The format, byte for byte: a change here breaks every node that reads these objects.
    #[test]
    fn format_is_stable() {
        let data = vec![7u8; 3000];
        let (list, leaves) = tree_of(&data, 1024, 2048);
        let text = encode(&list);
        let leaf = |n: usize| blake3::hash(&vec![7u8; n]);
        let (full, last) = (leaf(1024), leaf(952));
        let c0 = blake3::hash(&[*full.as_bytes(), *full.as_bytes()].concat());
        let c1 = blake3::hash(last.as_bytes());
        let body = format!(
            "tiercache-tree 1\nblob {}\nsize 3000\nhash blake3\nleaf 1024\nchunk 2048\n{}\n{}\n",
            Digest::of(&data),
            c0.to_hex(),
            c1.to_hex()
        );
        assert_eq!(text, format!("{body}check {}\n", Digest::of(body.as_bytes()).hex()));
        assert_eq!(leaves, [*full.as_bytes(), *full.as_bytes(), *last.as_bytes()].concat());
    }

    #[test]
    fn refuses_damage_mismatches_and_bad_sizes() {
        let data: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let (list, _) = tree_of(&data, 1024, 2048);
        let text = encode(&list);
        let digest = Digest::of(&data);
        for i in 0..text.len() {
            let mut bad = text.clone().into_bytes();
            bad[i] ^= 0x01;
            assert!(decode(&digest, &bad).is_err(), "flip at {i} accepted");
        }
        assert!(decode(&digest, &text.as_bytes()[..text.len() - 10]).is_err());
        assert!(decode(&Digest::of(b"other"), text.as_bytes()).is_err());
        // Sizes that would make a reader allocate without bound, or leaves that do not divide
        // chunks, are refused even with a valid check line.
        for (leaf, chunk) in [(1024, 1 << 30), (1024, 3000), (16, 2048)] {
            let mut l = list.clone();
            l.chunk_bytes = chunk;
            if let Check::Tree { leaf_bytes, .. } = &mut l.check {
                *leaf_bytes = leaf;
            }
            assert!(decode(&digest, encode(&l).as_bytes()).is_err(), "leaf {leaf} chunk {chunk} accepted");
        }
        let mut h = TreeHasher::new(1024, 2048);
        h.update(&data);
        assert!(h.finish(&Digest::of(b"other")).is_err());
    }
}
