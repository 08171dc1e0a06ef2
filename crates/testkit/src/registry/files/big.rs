//! One large gzip layer with a small known file at its end, for the tests and benchmark that read
//! one file of a layer while fetching a small part of it.
//!
//! The tar is written here, streamed into `pigz -1` (or `gzip -1` without pigz) so that hundreds
//! of MiB take seconds. The file data are pseudo-random bytes below 128: LZ77 finds nothing, but
//! Huffman coding saves an eighth, so the compressor writes ordinary dynamic-Huffman DEFLATE blocks
//! (bytes of all 256 values would make it store them, which no real layer looks like).

use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Stdio};

use sha2::Digest as _;

use super::{BuiltLayer, image_of_layers};
use crate::registry::image::{BuiltImage, RawMember, append_member, media_types};
use crate::servers::find_binary;

/// Bytes of each filler file.
const FILE_BYTES: usize = 1 << 20;
/// The pool the filler files take their bytes from.
const POOL_BYTES: usize = 8 << 20;

/// An image of one big gzip layer and the small file written last in it.
#[derive(Debug)]
pub struct BigLayerImage {
    /// The image (one layer).
    pub image: BuiltImage,
    /// The small file's path in the image, the last member of the tar.
    pub needle_path: String,
    /// Its bytes.
    pub needle_bytes: Vec<u8>,
    /// The number of filler files before it.
    pub n_files: usize,
}

impl BigLayerImage {
    /// The layer's digest.
    pub fn layer_digest(&self) -> &str {
        &self.image.manifests()[0].layers[0].digest
    }

    /// The layer's compressed size.
    pub fn layer_size_bytes(&self) -> u64 {
        self.image.manifests()[0].layers[0].bytes.len() as u64
    }
}

/// An image (tag `big`) with one gzip layer of about `size_bytes` compressed bytes: 1 MiB files
/// `big/file-NNNNN.bin` of pseudo-random data (from `seed`), then `big/zz-needle.txt` (a few KiB,
/// also from `seed`) last.
pub fn big_gzip_layer_image(size_bytes: u64, seed: u64) -> Result<BigLayerImage, String> {
    assert!(size_bytes <= 16 << 30, "a test layer of at most 16 GiB");
    // Seven bits of entropy a byte: the compressed stream is about 7/8 of the tar.
    let tar_bytes = size_bytes.saturating_mul(8) / 7;
    let n_files = usize::try_from(tar_bytes.div_ceil(FILE_BYTES as u64)).expect("bounded above");
    let pool: Vec<u8> = crate::bytes(seed, POOL_BYTES).into_iter().map(|b| b & 0x7f).collect();
    let mut needle_bytes = format!("the needle of seed {seed}\n").into_bytes();
    needle_bytes.extend(crate::bytes(seed ^ 0x5eed, 4000).iter().map(|b| b'a' + b % 26));
    let needle_path = "big/zz-needle.txt".to_owned();
    let (gz, diff_id) = compress_streamed(|w| {
        let mut member = RawMember::dir(b"big/");
        let mut block = Vec::with_capacity(FILE_BYTES + 1024);
        append_member(&mut block, &member);
        w.write_all(&block)?;
        for i in 0..n_files {
            let at = (i.wrapping_mul(7919 * 4099)) % (POOL_BYTES - FILE_BYTES);
            member = RawMember::file(format!("big/file-{i:05}.bin").as_bytes(), &pool[at..at + FILE_BYTES]);
            block.clear();
            append_member(&mut block, &member);
            w.write_all(&block)?;
        }
        block.clear();
        append_member(&mut block, &RawMember::file(needle_path.as_bytes(), &needle_bytes));
        block.resize(block.len() + 1024, 0);
        w.write_all(&block)
    })?;
    let layer = BuiltLayer::raw(media_types::OCI_LAYER_GZIP, gz, diff_id, Vec::new());
    let image = image_of_layers("big", vec![layer])?;
    Ok(BigLayerImage { image, needle_path, needle_bytes, n_files })
}

/// Writes what `write` writes through `pigz -1` (else `gzip -1`); returns the compressed bytes and
/// `sha256:<hex>` of the uncompressed ones.
fn compress_streamed(
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send,
) -> Result<(Vec<u8>, String), String> {
    let dirs = [Path::new("/usr/bin"), Path::new("/bin")];
    let program = find_binary("TIERCACHE_PIGZ", "pigz", &dirs, "apt-get install -y pigz")
        .or_else(|_| find_binary("TIERCACHE_GZIP", "gzip", &dirs, "apt-get install -y gzip"))?;
    let mut child = Command::new(&program)
        .args(["-1", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("running {}: {e}", program.display()))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let (read, written) = std::thread::scope(|s| {
        let writer = s.spawn(move || {
            let mut hashing = Hashing { inner: stdin, hash: sha2::Sha256::new() };
            write(&mut hashing).map(|()| format!("sha256:{}", hex::encode(hashing.hash.finalize())))
        });
        let mut out = Vec::new();
        let read = stdout.read_to_end(&mut out).map(|_| out);
        (read, writer.join().expect("the tar writer thread"))
    });
    let status = child.wait().map_err(|e| format!("waiting for {}: {e}", program.display()))?;
    if !status.success() {
        return Err(format!("{} failed ({status})", program.display()));
    }
    let diff_id = written.map_err(|e| format!("writing the tar to {}: {e}", program.display()))?;
    Ok((read.map_err(|e| format!("reading from {}: {e}", program.display()))?, diff_id))
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: sha2::Sha256,
}

impl<W: std::io::Write> std::io::Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::files::filter;

    /// A small one: about the size asked, the needle last, and DEFLATE blocks with Huffman codes.
    #[test]
    fn the_needle_is_last_in_an_ordinary_gzip_stream() {
        let big = big_gzip_layer_image(8 << 20, 5).unwrap();
        let size = big.layer_size_bytes();
        assert!((7 << 20..9 << 20).contains(&size), "{size}");
        let layer = &big.image.manifests()[0].layers[0];
        assert_eq!(&layer.bytes[..4], &[0x1f, 0x8b, 8, 0], "gzip, deflate, no name");
        // After the 10-byte header: BFINAL in bit 0, BTYPE in bits 1-2 (2: dynamic Huffman).
        assert_eq!((layer.bytes[10] >> 1) & 3, 2, "a dynamic-Huffman block, not a stored one");
        let tar = filter("gzip", &["-d", "-c"], &layer.bytes).unwrap();
        let config: serde_json::Value = serde_json::from_slice(&big.image.manifests()[0].config.bytes).unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], crate::sha256(&tar));
        let data_at = tar.len() - 1024 - big.needle_bytes.len().div_ceil(512) * 512;
        let header = &tar[data_at - 512..data_at];
        assert_eq!(&header[..big.needle_path.len()], big.needle_path.as_bytes());
        assert_eq!(&tar[data_at..data_at + big.needle_bytes.len()], &big.needle_bytes[..]);
        assert_eq!(big.n_files, 10);
    }
}
