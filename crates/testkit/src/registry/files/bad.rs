//! Layers a cache of files inside images must refuse, or survive, without harm: names that climb
//! out of the image root, links to nothing, bytes that are no archive, a cut-off stream, a 10 GiB
//! sparse file, 100 000 files in one directory.
//!
//! Each `*_layer` function builds the layer alone; each `*_image` function puts it on top of
//! [`base_layer`] (one good file, [`BASE_FILE`]), so a test can check that the rest of the image
//! still reads. Where GNU `tar` would clean a name up, the headers are written here byte by byte.

use super::{BuiltLayer, LayerCompression, LayerSpec, TarFormat, filter, image_of_layers};
use crate::registry::image::{BuiltImage, RawMember, append_member, media_types, raw_tar};

/// The one file of [`base_layer`].
pub const BASE_FILE: &str = "base/ok.txt";
/// Its bytes.
pub const BASE_BYTES: &[u8] = b"the good layer under a bad one\n";

/// A good gzip layer holding [`BASE_FILE`].
pub fn base_layer() -> Result<BuiltLayer, String> {
    LayerSpec::gzip().file(BASE_FILE, BASE_BYTES, 0o644).build()
}

fn on_base(tag: &str, bad: BuiltLayer) -> Result<BuiltImage, String> {
    image_of_layers(tag, vec![base_layer()?, bad])
}

/// A gzip layer whose members are named `../../etc/passwd`, `/abs/path` and
/// `ok/../../../escaped`, beside a good `ok/file` (ustar headers written as they are).
pub fn escaping_names_layer() -> Result<BuiltLayer, String> {
    let tar = raw_tar(&[
        RawMember::dir(b"ok/"),
        RawMember::file(b"ok/file", b"inside\n"),
        RawMember::file(b"../../etc/passwd", b"root::0:0::/:/bin/sh\n"),
        RawMember::file(b"/abs/path", b"absolute\n"),
        RawMember::file(b"ok/../../../escaped", b"climbs out through a directory\n"),
    ]);
    BuiltLayer::compress(tar, LayerCompression::Gzip)
}

/// [`escaping_names_layer`] on [`base_layer`].
pub fn escaping_names_image() -> Result<BuiltImage, String> {
    on_base("escaping-names", escaping_names_layer()?)
}

/// A gzip layer with the file `links/present` and a hardlink `links/dangling` to
/// `links/missing`, which no layer holds.
pub fn hardlink_to_missing_layer() -> Result<BuiltLayer, String> {
    let tar = raw_tar(&[
        RawMember::dir(b"links/"),
        RawMember::file(b"links/present", b"here\n"),
        RawMember::hardlink(b"links/dangling", b"links/missing"),
    ]);
    BuiltLayer::compress(tar, LayerCompression::Gzip)
}

/// [`hardlink_to_missing_layer`] on [`base_layer`].
pub fn hardlink_to_missing_image() -> Result<BuiltImage, String> {
    on_base("hardlink-to-missing", hardlink_to_missing_layer()?)
}

/// A gzip layer (made by `tar`) with the whiteouts of `base/never-existed` and
/// `nowhere/at-all` (neither in any layer below) and a file `base/after.txt`.
pub fn whiteout_of_missing_layer() -> Result<BuiltLayer, String> {
    LayerSpec::gzip()
        .whiteout("base/never-existed")
        .whiteout("nowhere/at-all")
        .file("base/after.txt", b"beside a whiteout of nothing\n", 0o644)
        .build()
}

/// [`whiteout_of_missing_layer`] on [`base_layer`].
pub fn whiteout_of_missing_image() -> Result<BuiltImage, String> {
    on_base("whiteout-of-missing", whiteout_of_missing_layer()?)
}

/// 64 KiB of pseudo-random bytes (seeded by `seed`) labelled a gzip layer: neither gzip, zstd nor
/// tar. Its diff id is the digest of the bytes themselves.
pub fn not_an_archive_layer(seed: u64) -> BuiltLayer {
    let bytes = crate::bytes(seed, 64 * 1024);
    let diff_id = crate::sha256(&bytes);
    BuiltLayer::raw(media_types::OCI_LAYER_GZIP, bytes.clone(), diff_id, bytes)
}

/// [`not_an_archive_layer`] on [`base_layer`].
pub fn not_an_archive_image() -> Result<BuiltImage, String> {
    on_base("not-an-archive", not_an_archive_layer(21))
}

/// A real gzip layer (a tar of `cut/data.bin`, 256 KiB of pseudo-random bytes) cut after half
/// its compressed bytes; `tar` and `diff_id` are those of the whole archive.
pub fn truncated_gzip_layer() -> Result<BuiltLayer, String> {
    let whole = LayerSpec::gzip().file("cut/data.bin", crate::bytes(22, 256 * 1024), 0o644).build()?;
    let half = whole.blob.bytes[..whole.blob.bytes.len() / 2].to_vec();
    Ok(BuiltLayer::raw(media_types::OCI_LAYER_GZIP, half, whole.diff_id, whole.tar))
}

/// [`truncated_gzip_layer`] on [`base_layer`].
pub fn truncated_gzip_image() -> Result<BuiltImage, String> {
    on_base("truncated-gzip", truncated_gzip_layer()?)
}

/// The size of [`SPARSE_FILE`]: 10 GiB.
pub const SPARSE_SIZE_BYTES: u64 = 10 << 30;
/// The sparse file's path.
pub const SPARSE_FILE: &str = "sparse/ten-gib";
/// What it holds besides holes: bytes at offsets.
pub const SPARSE_WRITES: &[(u64, &[u8])] =
    &[(0, b"first bytes"), (5 << 30, b"in the middle"), (SPARSE_SIZE_BYTES - 8, b"the end!")];

/// A gzip layer made by `tar --sparse` in `format` holding [`SPARSE_FILE`]: 10 GiB, all holes but
/// [`SPARSE_WRITES`] (GNU format: a `S` member; PAX: `GNU.sparse.*` 1.0 headers). The archive
/// itself is small.
pub fn sparse_file_layer(format: TarFormat) -> Result<BuiltLayer, String> {
    let spec = LayerSpec::gzip().sparse_file(SPARSE_FILE, SPARSE_SIZE_BYTES, SPARSE_WRITES);
    match format {
        TarFormat::Gnu => spec.gnu(),
        TarFormat::Pax => spec.pax(),
    }
    .build()
}

/// [`sparse_file_layer`] on [`base_layer`].
pub fn sparse_file_image(format: TarFormat) -> Result<BuiltImage, String> {
    on_base("sparse-file", sparse_file_layer(format)?)
}

/// The directory of [`many_files_layer`].
pub const MANY_DIR: &str = "many";

/// The path and bytes of file `i` of [`many_files_layer`].
pub fn many_file(i: usize) -> (String, Vec<u8>) {
    (format!("{MANY_DIR}/f{i:06}"), format!("file {i}\n").into_bytes())
}

/// A gzip layer (ustar headers written here, `gzip -1`) of `n` files in one directory, each as
/// [`many_file`] says.
pub fn many_files_layer(n: usize) -> Result<BuiltLayer, String> {
    assert!(n <= 1_000_000, "names have six digits");
    let mut tar = Vec::with_capacity((n + 2) * 1024);
    append_member(&mut tar, &RawMember::dir(format!("{MANY_DIR}/").as_bytes()));
    for i in 0..n {
        let (name, bytes) = many_file(i);
        append_member(&mut tar, &RawMember::file(name.as_bytes(), &bytes));
    }
    tar.resize(tar.len() + 1024, 0);
    let gz = filter("gzip", &["-1", "-n", "-c"], &tar)?;
    let diff_id = crate::sha256(&tar);
    Ok(BuiltLayer::raw(media_types::OCI_LAYER_GZIP, gz, diff_id, tar))
}

/// [`many_files_layer`] on [`base_layer`].
pub fn many_files_image(n: usize) -> Result<BuiltImage, String> {
    on_base("many-files", many_files_layer(n)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::files::tests::as_root;
    use crate::registry::{tree_facts, umoci_unpack};
    use crate::servers::or_skip;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        filter("gzip", &["-d", "-c"], bytes).unwrap()
    }

    /// What umoci, the reference unpacker, makes of each bad layer: escaping names are kept
    /// inside the root, a whiteout of nothing is ignored, and the broken layers are refused.
    #[test]
    fn umoci_keeps_names_inside_the_root_and_refuses_broken_layers() {
        let Some(image) = as_root(escaping_names_image) else { return };
        let Some(unpacked) = or_skip("umoci", umoci_unpack(&image)) else { return };
        let facts = tree_facts(&unpacked.rootfs()).unwrap();
        for path in [&b"etc/passwd"[..], b"abs/path", b"escaped", b"ok/file", BASE_FILE.as_bytes()] {
            assert!(facts.contains_key(path), "{}", String::from_utf8_lossy(path));
        }
        let unpacked = umoci_unpack(&whiteout_of_missing_image().unwrap()).unwrap();
        let facts = tree_facts(&unpacked.rootfs()).unwrap();
        assert!(facts.contains_key(&b"base/after.txt"[..]) && facts.contains_key(BASE_FILE.as_bytes()));
        for (image, says) in [
            (hardlink_to_missing_image(), "links/dangling"),
            (not_an_archive_image(), "gzip"),
            (truncated_gzip_image(), "EOF"),
        ] {
            let err = umoci_unpack(&image.unwrap()).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn bad_layers_hold_what_they_say() {
        if as_root(|| Ok(())).is_none() {
            return;
        }
        let tar = gunzip(&escaping_names_layer().unwrap().blob.bytes);
        assert!(tar.starts_with(b"ok/") && tar.windows(16).any(|w| w == b"../../etc/passwd"));
        let layer = hardlink_to_missing_layer().unwrap();
        assert_eq!(gunzip(&layer.blob.bytes), layer.tar);
        let layer = whiteout_of_missing_layer().unwrap();
        assert!(layer.tar.windows(18).any(|w| w == b"nowhere/.wh.at-all"));
        let layer = not_an_archive_layer(1);
        assert_ne!(&layer.blob.bytes[..2], &[0x1f, 0x8b]);
        assert_eq!(layer.blob.media_type, media_types::OCI_LAYER_GZIP);
        let layer = truncated_gzip_layer().unwrap();
        assert!(filter("gzip", &["-d", "-c"], &layer.blob.bytes).is_err(), "gzip sees the cut");
    }

    #[test]
    fn a_ten_gib_sparse_file_makes_a_small_layer_in_both_formats() {
        let Some(gnu) = as_root(|| sparse_file_layer(TarFormat::Gnu)) else { return };
        assert!(gnu.tar.len() < 64 * 1024, "{}", gnu.tar.len());
        assert_eq!(gnu.tar[512 + 156], b'S', "after the directory, a GNU sparse member");
        let pax = sparse_file_layer(TarFormat::Pax).unwrap();
        assert!(pax.tar.len() < 64 * 1024, "{}", pax.tar.len());
        assert!(pax.tar.windows(10).any(|w| w == b"GNU.sparse"), "PAX sparse headers");
    }

    #[test]
    fn a_hundred_thousand_files_in_one_directory() {
        let n = 100_000;
        let layer = many_files_layer(n).unwrap();
        assert_eq!(layer.tar.len(), (1 + 2 * n) * 512 + 1024);
        assert_eq!(gunzip(&layer.blob.bytes), layer.tar);
        let (last, bytes) = many_file(n - 1);
        let at = layer.tar.len() - 1024 - 1024;
        assert_eq!(&layer.tar[at..at + last.len()], last.as_bytes());
        assert_eq!(&layer.tar[at + 512..at + 512 + bytes.len()], &bytes[..]);
    }
}
