//! Image references and manifests: `NAME:TAG` / `NAME@DIGEST`, an image index's manifest for a
//! platform, and an image manifest's layers. Only the few fields a file read needs are looked at.

use tiercache_core::Digest;
use tiercache_sources::{OciKey, Reference};

use crate::Error;

/// The largest manifest read (a manifest is a few KiB; more is not one).
pub(crate) const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// The most layers an image may have (registries and runtimes allow about 128).
pub(crate) const MAX_LAYERS: usize = 256;

/// An image in a registry namespace: `NAME[:TAG]` or `NAME@DIGEST`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// The repository (`library/alpine`).
    pub name: String,
    /// The tag or digest.
    pub reference: Reference,
}

impl ImageRef {
    /// Parses `NAME[:TAG]` or `NAME@DIGEST` (a missing tag is `latest`); the name, tag and digest
    /// are checked as the Distribution API's grammar says.
    pub fn parse(image: &str) -> Result<ImageRef, Error> {
        let (name, reference) = match image.split_once('@') {
            Some((name, digest)) => (name, digest),
            None => {
                // A colon after the last '/' separates the tag (one before it is a port).
                let last = image.rsplit('/').next().unwrap_or(image);
                match last.rsplit_once(':') {
                    Some((_, tag)) => (&image[..image.len() - tag.len() - 1], tag),
                    None => (image, "latest"),
                }
            }
        };
        match OciKey::parse(&format!("{name}/manifests/{reference}")) {
            Ok(OciKey::Manifest { name, reference }) => Ok(ImageRef { name, reference }),
            Ok(_) => Err(Error::Invalid(format!("{image:?} is not an image reference"))),
            Err(why) => Err(Error::Invalid(format!("{:?} is not an image reference: {why}", shown(image)))),
        }
    }

    /// The entry key of its manifest (`NAME/manifests/REFERENCE`).
    pub(crate) fn manifest_key(&self) -> String {
        format!("{}/manifests/{}", self.name, self.reference)
    }

    /// The entry key of blob `digest` of its repository.
    pub(crate) fn blob_key(&self, digest: &Digest) -> String {
        format!("{}/blobs/{digest}", self.name)
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}:{t}", self.name),
            Reference::Digest(d) => write!(f, "{}@{d}", self.name),
        }
    }
}

/// At most 200 characters of `s`, for messages.
fn shown(s: &str) -> String {
    s.chars().take(200).collect()
}

/// A layer as a manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LayerRef {
    pub(crate) digest: Digest,
    pub(crate) size: u64,
    pub(crate) media_type: String,
}

/// What a manifest's bytes are.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// An image index (or a Docker manifest list): the manifest for each platform.
    Index(Vec<(Digest, String)>),
    /// An image manifest: its layers, bottom first.
    Image(Vec<LayerRef>),
}

/// Parses a manifest's bytes.
pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<Parsed, Error> {
    let bad = |why: String| Error::BadImage { what: format!("{what}: {why}") };
    let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON ({e})")))?;
    if let Some(list) = json.get("manifests") {
        let items = list.as_array().ok_or_else(|| bad("`manifests` is not a list".into()))?;
        let mut out = Vec::new();
        for m in items {
            let digest = digest_of(m).map_err(&bad)?;
            let platform = m.get("platform").map(platform_of).unwrap_or_default();
            out.push((digest, platform));
        }
        return Ok(Parsed::Index(out));
    }
    let Some(layers) = json.get("layers") else {
        return Err(bad("neither an image index nor an image manifest (no `manifests`, no `layers`)".into()));
    };
    let items = layers.as_array().ok_or_else(|| bad("`layers` is not a list".into()))?;
    if items.len() > MAX_LAYERS {
        return Err(bad(format!("{} layers, more than the {MAX_LAYERS} read", items.len())));
    }
    let mut out = Vec::new();
    for l in items {
        let digest = digest_of(l).map_err(&bad)?;
        let size = l.get("size").and_then(|s| s.as_u64()).unwrap_or(0);
        let media_type = l.get("mediaType").and_then(|t| t.as_str()).unwrap_or("").to_owned();
        out.push(LayerRef { digest, size, media_type });
    }
    Ok(Parsed::Image(out))
}

/// A descriptor's digest (sha256 only).
fn digest_of(d: &serde_json::Value) -> Result<Digest, String> {
    let s = d.get("digest").and_then(|s| s.as_str()).ok_or("a descriptor without a digest")?;
    s.parse::<Digest>().map_err(|e| format!("descriptor digest {:?}: {e}", shown(s)))
}

/// `os/architecture[/variant]` of a descriptor's platform.
fn platform_of(p: &serde_json::Value) -> String {
    let field = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let base = format!("{}/{}", field("os"), field("architecture"));
    match field("variant") {
        "" => base,
        v => format!("{base}/{v}"),
    }
}

/// This machine's platform, as image indexes name it.
pub(crate) fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    format!("linux/{arch}")
}

/// The manifest of `index` for `platform` (else this machine's; an index of one manifest gives
/// it whatever its platform).
pub(crate) fn choose(index: &[(Digest, String)], platform: Option<&str>, what: &str) -> Result<Digest, Error> {
    let wanted = platform.map_or_else(host_platform, str::to_owned);
    let matches = |p: &str| p == wanted || (platform.is_none() && p.split('/').take(2).eq(wanted.split('/')));
    if let Some((d, _)) = index.iter().find(|(_, p)| matches(p)) {
        return Ok(*d);
    }
    if platform.is_none()
        && let [(d, _)] = index
    {
        return Ok(*d);
    }
    let listed: Vec<&str> = index.iter().map(|(_, p)| p.as_str()).collect();
    Err(Error::BadImage {
        what: format!("{what} has no manifest for platform {wanted} (it has: {})", listed.join(", ")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_name_and_tag_or_digest_and_bad_ones_are_refused() {
        let r = ImageRef::parse("library/alpine").unwrap();
        assert_eq!(r.to_string(), "library/alpine:latest");
        let r = ImageRef::parse("team/app:v1.2").unwrap();
        assert_eq!((r.name.as_str(), r.manifest_key().as_str()), ("team/app", "team/app/manifests/v1.2"));
        let digest = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("app@{digest}")).unwrap();
        assert_eq!(r.to_string(), format!("app@{digest}"));
        for bad in ["", "../etc:x", "App:v1", "a:-x", "a@md5:00", "a//b:c", "a:b:c"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_index_gives_the_platform_asked_for_or_this_machines() {
        let d = |c: char| Digest::from_hex(&c.to_string().repeat(64)).unwrap();
        let index = vec![(d('a'), "linux/arm64/v8".to_owned()), (d('b'), host_platform())];
        assert_eq!(choose(&index, None, "x").unwrap(), d('b'));
        assert_eq!(choose(&index, Some("linux/arm64/v8"), "x").unwrap(), d('a'));
        let err = choose(&index, Some("windows/amd64"), "x").unwrap_err().to_string();
        assert!(err.contains("windows/amd64") && err.contains("linux/arm64/v8"), "{err}");
        assert_eq!(choose(&index[..1], None, "x").unwrap(), d('a'), "the only manifest");
    }
}
