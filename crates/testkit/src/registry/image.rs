//! OCI image layouts built on disk for tests: deterministic layers (real tar archives, compressed
//! with gzip or zstd), a config and a manifest per platform, and an image index when there are
//! several platforms; written as `blobs/sha256/<hex>`, `index.json` and `oci-layout`, so that
//! `skopeo copy oci:DIR:TAG docker://…` pushes them.
//!
//! It builds bytes and files; pushing is `registry.rs`'s business. The JSON is written by hand
//! (a handful of fields), so that the test knows every byte the registry will hold.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use serde_json::json;

/// The media types of OCI images and their Docker equivalents.
pub mod media_types {
    /// An OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// An OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// An OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// A gzip-compressed OCI layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// A zstd-compressed OCI layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// An uncompressed OCI layer (a plain tar archive).
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    /// A Docker manifest list.
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    /// A Docker image manifest, schema 2.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
}

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`tar+gzip`).
    Gzip,
    /// zstd (`tar+zstd`).
    Zstd,
}

/// One blob of an image: its bytes, digest and media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageBlob {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl ImageBlob {
    /// A blob of `bytes` with its digest computed.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> ImageBlob {
        ImageBlob { digest: crate::sha256(&bytes), media_type: media_type.to_owned(), bytes }
    }

    /// Its descriptor (`mediaType`, `digest`, `size`).
    fn descriptor(&self) -> serde_json::Value {
        json!({ "mediaType": self.media_type, "digest": self.digest, "size": self.bytes.len() })
    }
}

/// One platform's image: its manifest, config and layers.
#[derive(Debug, Clone)]
pub struct BuiltManifest {
    /// `(os, architecture)`, e.g. `("linux", "amd64")`.
    pub platform: (String, String),
    /// The manifest.
    pub manifest: ImageBlob,
    /// The config.
    pub config: ImageBlob,
    /// The layers, in order.
    pub layers: Vec<ImageBlob>,
}

/// An image layout on disk (removed on drop).
#[derive(Debug)]
pub struct BuiltImage {
    dir: tempfile::TempDir,
    tag: String,
    top: ImageBlob,
    manifests: Vec<BuiltManifest>,
}

impl BuiltImage {
    /// The layout's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The tag `index.json` names it by.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// What the tag names: the index with several platforms, else the one manifest.
    pub fn top(&self) -> &ImageBlob {
        &self.top
    }

    /// Each platform's manifest, config and layers.
    pub fn manifests(&self) -> &[BuiltManifest] {
        &self.manifests
    }

    /// Every blob (index, manifests, configs, layers) by digest; a layer shared by platforms once.
    pub fn blobs(&self) -> BTreeMap<String, ImageBlob> {
        let mut all = BTreeMap::new();
        all.insert(self.top.digest.clone(), self.top.clone());
        for m in &self.manifests {
            for b in std::iter::once(&m.manifest).chain([&m.config]).chain(&m.layers) {
                all.insert(b.digest.clone(), b.clone());
            }
        }
        all
    }

    /// The layers and configs (what `/v2/NAME/blobs/…` serves), by digest.
    pub fn layer_and_config_blobs(&self) -> BTreeMap<String, ImageBlob> {
        let mut all = BTreeMap::new();
        for m in &self.manifests {
            for b in std::iter::once(&m.config).chain(&m.layers) {
                all.insert(b.digest.clone(), b.clone());
            }
        }
        all
    }
}

/// Builds a deterministic test image: the same seed and settings give the same bytes.
#[derive(Debug, Clone)]
pub struct ImageBuilder {
    seed: u64,
    tag: String,
    layers: Vec<(Compression, usize)>,
    platforms: Vec<(String, String)>,
}

impl ImageBuilder {
    /// Three layers (gzip 64 KiB, gzip 16 KiB, zstd 32 KiB of pseudo-random file data), one
    /// platform (`linux/amd64`), tag `latest`; `seed` varies every byte.
    pub fn new(seed: u64) -> ImageBuilder {
        ImageBuilder {
            seed,
            tag: "latest".into(),
            layers: vec![
                (Compression::Gzip, 64 * 1024),
                (Compression::Gzip, 16 * 1024),
                (Compression::Zstd, 32 * 1024),
            ],
            platforms: vec![("linux".into(), "amd64".into())],
        }
    }

    /// The tag in `index.json` (what `skopeo copy oci:DIR:TAG` names).
    pub fn tag(mut self, tag: &str) -> ImageBuilder {
        self.tag = tag.to_owned();
        self
    }

    /// These layers instead of the default ones: compression and file size each.
    pub fn layers(mut self, layers: &[(Compression, usize)]) -> ImageBuilder {
        self.layers = layers.to_vec();
        self
    }

    /// These platforms (`("linux", "arm64")`, …); more than one makes an image index. The first
    /// layer is the same on every platform, the others differ.
    pub fn platforms(mut self, platforms: &[(&str, &str)]) -> ImageBuilder {
        self.platforms = platforms.iter().map(|(o, a)| ((*o).to_owned(), (*a).to_owned())).collect();
        self
    }

    /// `linux/amd64` and `linux/arm64`.
    pub fn multi_platform(self) -> ImageBuilder {
        self.platforms(&[("linux", "amd64"), ("linux", "arm64")])
    }

    /// Writes the layout to a new temporary directory.
    pub fn build(&self) -> Result<BuiltImage, String> {
        assert!(!self.platforms.is_empty(), "an image has at least one platform");
        let dir = crate::servers::tempdir("oci-layout")?;
        let manifests: Vec<BuiltManifest> =
            self.platforms.iter().enumerate().map(|(i, p)| self.manifest(i as u64, p)).collect::<Result<_, _>>()?;
        let top = match manifests.as_slice() {
            [one] => one.manifest.clone(),
            several => {
                let list: Vec<_> = several
                    .iter()
                    .map(|m| {
                        let mut d = m.manifest.descriptor();
                        d["platform"] = json!({ "os": m.platform.0, "architecture": m.platform.1 });
                        d
                    })
                    .collect();
                let index = json!({ "schemaVersion": 2, "mediaType": media_types::OCI_INDEX, "manifests": list });
                ImageBlob::new(media_types::OCI_INDEX, to_bytes(&index))
            }
        };
        let image = BuiltImage { dir, tag: self.tag.clone(), top, manifests };
        write_layout(&image)?;
        Ok(image)
    }

    /// The manifest of platform number `i`.
    fn manifest(&self, i: u64, platform: &(String, String)) -> Result<BuiltManifest, String> {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (n, &(compression, size)) in self.layers.iter().enumerate() {
            // The first layer is shared by every platform; the others are the platform's own.
            let seed = self.seed.wrapping_mul(1000).wrapping_add(n as u64).wrapping_add(if n == 0 {
                0
            } else {
                100 * (i + 1)
            });
            let tar = tar_of(&[(format!("layer{n}/data.bin"), crate::bytes(seed, size))]);
            diff_ids.push(crate::sha256(&tar));
            let (media_type, compressed) = match compression {
                Compression::Gzip => (media_types::OCI_LAYER_GZIP, gzip(&tar)?),
                Compression::Zstd => {
                    (media_types::OCI_LAYER_ZSTD, zstd::encode_all(tar.as_slice(), 3).map_err(|e| e.to_string())?)
                }
            };
            layers.push(ImageBlob::new(media_type, compressed));
        }
        let env = [format!("TEST_SEED={}", self.seed)];
        Ok(assemble_manifest(platform, layers, &diff_ids, &env))
    }
}

/// The config (naming `diff_ids`, the sha256 of each layer's uncompressed tar, in order) and the
/// manifest of one platform's image made of `layers`.
pub(crate) fn assemble_manifest(
    platform: &(String, String),
    layers: Vec<ImageBlob>,
    diff_ids: &[String],
    env: &[String],
) -> BuiltManifest {
    let config = json!({
        "architecture": platform.1,
        "os": platform.0,
        "config": { "Env": env },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let config = ImageBlob::new(media_types::OCI_CONFIG, to_bytes(&config));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": media_types::OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": layers.iter().map(ImageBlob::descriptor).collect::<Vec<_>>(),
    });
    let manifest = ImageBlob::new(media_types::OCI_MANIFEST, to_bytes(&manifest));
    BuiltManifest { platform: platform.clone(), manifest, config, layers }
}

/// A one-platform (`linux/amd64`) image of `layers` (each with its diff id), written as a layout
/// tagged `tag` in a new temporary directory.
pub(crate) fn single_platform_image(tag: &str, layers: Vec<(ImageBlob, String)>) -> Result<BuiltImage, String> {
    let platform = ("linux".to_owned(), "amd64".to_owned());
    let (layers, diff_ids): (Vec<_>, Vec<_>) = layers.into_iter().unzip();
    let manifest = assemble_manifest(&platform, layers, &diff_ids, &[]);
    let image = BuiltImage {
        dir: crate::servers::tempdir("oci-layout")?,
        tag: tag.to_owned(),
        top: manifest.manifest.clone(),
        manifests: vec![manifest],
    };
    write_layout(&image)?;
    Ok(image)
}

fn to_bytes(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("JSON of plain values")
}

pub(crate) fn gzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).and_then(|_| enc.finish()).map_err(|e| format!("gzip: {e}"))
}

/// Writes `blobs/sha256/<hex>` for every blob, `index.json` naming the top blob by the tag, and
/// `oci-layout`.
fn write_layout(image: &BuiltImage) -> Result<(), String> {
    let blobs = image.dir().join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| format!("creating {}: {e}", blobs.display()))?;
    // By reference: a layer may be hundreds of MiB. A blob shared by platforms is written again.
    let all = image.manifests.iter().flat_map(|m| std::iter::once(&m.manifest).chain([&m.config]).chain(&m.layers));
    for blob in std::iter::once(&image.top).chain(all) {
        let path = blobs.join(blob.digest.trim_start_matches("sha256:"));
        std::fs::write(&path, &blob.bytes).map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    let mut top = image.top.descriptor();
    top["annotations"] = json!({ "org.opencontainers.image.ref.name": image.tag });
    let index = json!({ "schemaVersion": 2, "manifests": [top] });
    let write = |name: &str, bytes: Vec<u8>| {
        let path = image.dir().join(name);
        std::fs::write(&path, bytes).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write("index.json", to_bytes(&index))?;
    write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec())
}

/// A ustar archive of regular files (mode 0644, owner 0, time 0).
pub(crate) fn tar_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let members: Vec<RawMember> = files.iter().map(|(name, data)| RawMember::file(name.as_bytes(), data)).collect();
    raw_tar(&members)
}

/// One member of a tar archive written header by header, names taken as they are (no
/// normalisation: `../x` and `/x` stay so).
#[derive(Debug, Clone)]
pub(crate) struct RawMember {
    /// The member's name, shorter than 100 bytes.
    pub name: Vec<u8>,
    /// The ustar type flag: `b'0'` file, `b'1'` hardlink, `b'2'` symlink, `b'5'` directory.
    pub typeflag: u8,
    /// The link target of a hardlink or symlink, shorter than 100 bytes.
    pub link: Vec<u8>,
    /// The file's bytes (empty for anything but a file).
    pub data: Vec<u8>,
    /// The permission bits.
    pub mode: u32,
}

impl RawMember {
    /// A regular file, mode 0644.
    pub fn file(name: &[u8], data: &[u8]) -> RawMember {
        RawMember { name: name.to_vec(), typeflag: b'0', link: Vec::new(), data: data.to_vec(), mode: 0o644 }
    }

    /// A hardlink `name` to the member named `target`.
    pub fn hardlink(name: &[u8], target: &[u8]) -> RawMember {
        RawMember { name: name.to_vec(), typeflag: b'1', link: target.to_vec(), data: Vec::new(), mode: 0o644 }
    }

    /// A directory, mode 0755.
    pub fn dir(name: &[u8]) -> RawMember {
        RawMember { name: name.to_vec(), typeflag: b'5', link: Vec::new(), data: Vec::new(), mode: 0o755 }
    }
}

/// A ustar archive of `members` (owner 0, time 0), ended by two zero blocks.
pub(crate) fn raw_tar(members: &[RawMember]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        append_member(&mut out, m);
    }
    out.resize(out.len() + 1024, 0); // Two zero blocks end the archive.
    out
}

/// Appends `m`'s header and its data, padded to a whole block.
pub(crate) fn append_member(out: &mut Vec<u8>, m: &RawMember) {
    assert!(m.name.len() < 100 && m.link.len() < 100, "raw tar members have names shorter than 100 bytes");
    let mut h = [0u8; 512];
    h[..m.name.len()].copy_from_slice(&m.name);
    let octal = |h: &mut [u8; 512], at: usize, width: usize, v: u64| {
        let s = format!("{v:0w$o}\0", w = width - 1);
        h[at..at + width].copy_from_slice(s.as_bytes());
    };
    octal(&mut h, 100, 8, u64::from(m.mode));
    octal(&mut h, 108, 8, 0);
    octal(&mut h, 116, 8, 0);
    octal(&mut h, 124, 12, m.data.len() as u64);
    octal(&mut h, 136, 12, 0);
    h[156] = m.typeflag;
    h[157..157 + m.link.len()].copy_from_slice(&m.link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // The checksum is computed with its own field as spaces.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&m.data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_platform_layout_names_every_blob_once() {
        let image = ImageBuilder::new(7).multi_platform().tag("v1").build().unwrap();
        assert_eq!(image.top().media_type, media_types::OCI_INDEX);
        assert_eq!(image.manifests().len(), 2);
        let [a, b] = image.manifests() else { unreachable!() };
        assert_eq!(a.layers[0], b.layers[0], "the first layer is shared");
        assert_ne!(a.layers[1], b.layers[1]);
        assert_eq!(a.layers[2].media_type, media_types::OCI_LAYER_ZSTD);
        for (digest, blob) in image.blobs() {
            let path = image.dir().join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
            assert_eq!(std::fs::read(path).unwrap(), blob.bytes);
        }
        let index = std::fs::read_to_string(image.dir().join("index.json")).unwrap();
        assert!(index.contains(&image.top().digest) && index.contains("\"v1\""), "{index}");
        let again = ImageBuilder::new(7).multi_platform().tag("v1").build().unwrap();
        assert_eq!(again.top(), image.top(), "deterministic");
    }

    #[test]
    fn tar_headers_carry_a_valid_checksum() {
        let tar = tar_of(&[("a/b.txt".into(), b"hello".to_vec())]);
        assert_eq!(tar.len(), 512 + 512 + 1024);
        let mut h = tar[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(&tar[512..517], b"hello");
    }
}
