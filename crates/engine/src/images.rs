//! Files inside container images (layer 4): an image of a registry namespace opened as a tree
//! of files, read lazily.
//!
//! Opening `NAME:TAG` (or `NAME@DIGEST`) reads its manifest through the read path (an index's
//! manifest for the platform asked for, else this machine's), then asks, for every layer, the
//! derivations `tar-index` (every entry and where its data is in the uncompressed stream) and
//! `layer-seek` (how to start decompressing near any offset, and a digest of each compressed
//! segment between its points), and `decompress` for a layer whose
//! seek index says a full decompression serves it better (one zstd frame). A derivation another
//! node made is found in the shared tier without fetching the layer (`derive.rs`); one nobody
//! made is made here, which fetches the layer whole once. The layers' indexes merge into an
//! [`ImageTree`] (`tiercache_derive::image_tree`: whiteouts, hardlinks, symlinks).
//!
//! Reading a file reads only the whole segments of its layer that hold the bytes asked for,
//! through the tiers without storing the layer (`read/span.rs`: disk, shared tier, else a
//! ranged request to the registry), checks each against its digest in the seek index (so a
//! registry's ranged answer is verified too), and decompresses from the point before them. Small files
//! are kept whole in memory once read (`files`), so a warm read costs a lookup.
//!
//! Opened images are remembered by manifest digest, so a tag's next read costs its manifest's
//! read (the memory tier, while fresh) and a lookup. A mount (`tiercache mount`) holds its
//! [`Image`] and needs neither the registry nor the shared tier for what is already on disk.

mod manifest;

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tiercache_core::Digest;
use tiercache_derive::image_tree::{ImageTree, NodeId};
use tiercache_derive::seek::{SeekError, SeekIndex};
use tiercache_derive::tar_index::{self, Found, FoundFile, TarIndex};

use crate::blocking::blocking_with;
use crate::derive::{Derivations, DeriveAsk, DeriveInput, Derived, Priority};
use crate::read::{Intent, Reads};
use crate::{Error, Read};

pub use manifest::ImageRef;
use manifest::{LayerRef, MAX_MANIFEST_BYTES, Parsed};

/// Files up to this size are read whole and kept in memory on their first read.
const SMALL_FILE_BYTES: u64 = 1 << 20;
/// The memory those small files may take.
const FILE_CACHE_BYTES: u64 = 128 << 20;
/// The memory decompressed windows of layers (the bytes between two seek points) may take: a
/// window is decompressed once, then read by every read inside it (a large file read in pieces,
/// through a mount, decompresses each window once).
const WINDOW_CACHE_BYTES: u64 = 256 << 20;
/// Windows up to this size are kept; reads between points further apart decompress their range
/// alone.
const MAX_WINDOW_BYTES: u64 = 16 << 20;
/// The memory opened images may hold (their layers' tar indexes and merged trees), at most.
const OPEN_IMAGES_BYTES: u64 = 1 << 30;
/// What one node of a merged tree costs in memory, about (its record and its name in its
/// directory's map).
const NODE_BYTES: u64 = 96;
/// How long a layer's derivations are waited for when opening an image (they fetch and read the
/// whole layer once).
const INDEX_WAIT: Duration = Duration::from_secs(600);
/// The most bytes of one derivation's output read into memory (a tar index of millions of
/// entries is a few hundred MiB).
const MAX_INDEX_BYTES: u64 = 2 << 30;

/// An image opened: its tree of files and how to read each layer.
#[derive(Debug)]
pub struct Image {
    namespace: String,
    image: ImageRef,
    manifest: Digest,
    layers: Vec<Layer>,
    tree: ImageTree,
    /// The memory it holds, about: its tar indexes and tree.
    weight_bytes: u64,
}

impl Image {
    /// The image as it was asked for.
    pub fn reference(&self) -> &ImageRef {
        &self.image
    }

    /// The namespace it was read from.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The digest of its (platform's) image manifest.
    pub fn manifest_digest(&self) -> Digest {
        self.manifest
    }

    /// Its files.
    pub fn tree(&self) -> &ImageTree {
        &self.tree
    }

    /// How many layers it has.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }

    /// The digest of layer `i` (bottom first).
    pub fn layer_digest(&self, i: usize) -> Option<Digest> {
        self.layers.get(i).map(|l| l.digest)
    }
}

/// A layer and how its uncompressed bytes are read.
#[derive(Debug)]
struct Layer {
    digest: Digest,
    access: Access,
    /// Its seek points' uncompressed offsets, ascending (the first is 0): window `i` is the
    /// uncompressed bytes from point `i` to the next.
    starts: Vec<u64>,
}

#[derive(Debug)]
enum Access {
    /// Through its seek index (a plain tar's too: its points and segment digests check the
    /// spans read).
    Seek(Arc<SeekIndex>),
    /// Through its `decompress` output, blob `0`.
    Decompressed(Digest),
}

/// What [`Images::first_read`] found.
#[derive(Debug)]
pub enum FirstRead {
    /// The image, opened: resolve the path in its tree.
    Image(Arc<Image>),
    /// The file, read from its layer's stream before the image was indexed.
    File(StreamedFile),
}

/// A regular file read from its layer's stream ([`FirstRead::File`]).
#[derive(Debug, Clone)]
pub struct StreamedFile {
    /// Its bytes and metadata.
    pub file: FoundFile,
    /// The digest of the layer holding it.
    pub layer: Digest,
    /// The digest of the image's platform manifest.
    pub manifest: Digest,
}

/// The images of one cache: opened ones, and small files read.
pub(crate) struct Images {
    reads: Arc<Reads>,
    derivations: Arc<Derivations>,
    opened: moka::future::Cache<(String, Digest), Arc<Image>>,
    files: moka::future::Cache<(Digest, u64), Bytes>,
    windows: moka::future::Cache<(Digest, u32), Bytes>,
}

impl Images {
    pub(crate) fn new(reads: Arc<Reads>, derivations: Arc<Derivations>) -> Images {
        let files = moka::future::Cache::builder()
            .max_capacity(FILE_CACHE_BYTES)
            .weigher(|_, b: &Bytes| u32::try_from(b.len()).unwrap_or(u32::MAX))
            .build();
        let opened = moka::future::Cache::builder()
            .max_capacity(OPEN_IMAGES_BYTES)
            .weigher(|_, i: &Arc<Image>| u32::try_from(i.weight_bytes).unwrap_or(u32::MAX))
            .time_to_idle(Duration::from_secs(3600))
            .build();
        let windows = moka::future::Cache::builder()
            .max_capacity(WINDOW_CACHE_BYTES)
            .weigher(|_, b: &Bytes| u32::try_from(b.len()).unwrap_or(u32::MAX))
            .build();
        Images { reads, derivations, opened, files, windows }
    }

    /// Opens `image` of registry namespace `namespace` (see the module docs); `platform`
    /// (`os/arch[/variant]`) chooses from an index.
    pub(crate) async fn open(&self, namespace: &str, image: &str, platform: Option<&str>) -> Result<Arc<Image>, Error> {
        let image = ImageRef::parse(image)?;
        let (digest, layers) = self.resolve(namespace, &image, platform).await?;
        self.open_resolved(namespace, &image, digest, &layers).await
    }

    /// The file at `path` of `image`, read as soon as it can be: from the image opened, or, while
    /// no node has indexed some of its layers yet, from the layers' streams as they arrive
    /// (top layer first; `tar_index::find_file`), stopping once the file is read. The image is
    /// opened (its layers indexed) meanwhile either way, in the background if the file came first.
    pub(crate) async fn first_read(
        self: &Arc<Self>,
        namespace: &str,
        image: &str,
        platform: Option<&str>,
        path: &[u8],
    ) -> Result<FirstRead, Error> {
        let image_ref = ImageRef::parse(image)?;
        let (digest, layers) = self.resolve(namespace, &image_ref, platform).await?;
        if let Some(opened) = self.opened.get(&(namespace.to_owned(), digest)).await {
            return Ok(FirstRead::Image(opened));
        }
        let this = Arc::clone(self);
        let (ns, img, refs) = (namespace.to_owned(), image_ref.clone(), layers.clone());
        let mut open = tokio::spawn(async move { this.open_resolved(&ns, &img, digest, &refs).await });
        let opened = |r: Result<Result<Arc<Image>, Error>, tokio::task::JoinError>| match r {
            Ok(r) => r.map(FirstRead::Image),
            Err(e) => Err(Error::task("opening an image", e)),
        };
        if !self.needs_indexing(namespace, &image_ref, &layers).await? {
            return opened(open.await);
        }
        let scan = self.scan(namespace, &image_ref, digest, &layers, path);
        tokio::select! {
            r = &mut open => return opened(r),
            found = scan => match found {
                Ok(Some(file)) => {
                    metrics::counter!(STREAMED_READS).increment(1);
                    return Ok(FirstRead::File(file));
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(namespace, image = %image_ref, error = %e, "reading a file from the layers' streams failed; waiting for the index"),
            },
        }
        opened(open.await)
    }

    /// Whether some layer's tar index is made nowhere yet.
    async fn needs_indexing(&self, namespace: &str, image: &ImageRef, layers: &[LayerRef]) -> Result<bool, Error> {
        for l in layers {
            let input =
                DeriveInput::Entry { namespace: namespace.to_owned(), key: image.blob_key(&l.digest).into_bytes() };
            if !self.derivations.is_made(&input, "tar-index").await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The file at `path` from the layers' streams, top layer first: `None` if a layer has
    /// something else there, hides it, or no layer has it (the index answers those).
    async fn scan(
        &self,
        namespace: &str,
        image: &ImageRef,
        manifest: Digest,
        layers: &[LayerRef],
        path: &[u8],
    ) -> Result<Option<StreamedFile>, Error> {
        for l in layers.iter().rev() {
            let read = self.reads.entry(namespace, image.blob_key(&l.digest).as_bytes(), Intent::Whole).await?;
            let stream = read.into_stream(None);
            let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
            let (wanted, limits) = (path.to_vec(), self.derivations.limits());
            let found = blocking_with(move || {
                tar_index::find_file(Box::new(reader), &wanted, SMALL_FILE_BYTES, &limits)
                    .map_err(|e| Error::BadImage { what: format!("reading the layer's stream: {e}") })
            })
            .await?;
            match found {
                Found::File(f) => {
                    let layer = l.digest;
                    return Ok(Some(StreamedFile { file: f, layer, manifest }));
                }
                Found::Absent => continue,
                Found::Hidden | Found::Other => return Ok(None),
            }
        }
        Ok(None)
    }

    /// `image`'s platform manifest: its digest and layers.
    async fn resolve(
        &self,
        namespace: &str,
        image: &ImageRef,
        platform: Option<&str>,
    ) -> Result<(Digest, Vec<LayerRef>), Error> {
        let (mut bytes, mut digest) = self.manifest(namespace, &image.manifest_key()).await?;
        let what = format!("image {image}");
        let layers = match manifest::parse(&bytes, &what)? {
            Parsed::Image(layers) => layers,
            Parsed::Index(list) => {
                let chosen = manifest::choose(&list, platform, &what)?;
                let key = format!("{}/manifests/{chosen}", image.name);
                (bytes, digest) = self.manifest(namespace, &key).await?;
                match manifest::parse(&bytes, &what)? {
                    Parsed::Image(layers) => layers,
                    Parsed::Index(_) => {
                        return Err(Error::BadImage { what: format!("{what}: an index names another index") });
                    }
                }
            }
        };
        Ok((digest, layers))
    }

    /// Opens the image whose platform manifest is `digest`, of `layers`, once however many ask.
    async fn open_resolved(
        &self,
        namespace: &str,
        image: &ImageRef,
        digest: Digest,
        layers: &[LayerRef],
    ) -> Result<Arc<Image>, Error> {
        let id = (namespace.to_owned(), digest);
        let open = self.opened.try_get_with(id, async {
            let t0 = Instant::now();
            let opened = self.build(namespace, image, digest, layers).await?;
            tracing::info!(namespace, %image, layers = layers.len(), nodes = opened.tree.n_nodes(),
                ms = t0.elapsed().as_millis() as u64, "image opened");
            Ok::<_, Error>(Arc::new(opened))
        });
        open.await.map_err(unshared)
    }

    /// A manifest's bytes (at most [`MAX_MANIFEST_BYTES`]) and digest.
    async fn manifest(&self, namespace: &str, key: &str) -> Result<(Bytes, Digest), Error> {
        let read = self.reads.entry(namespace, key.as_bytes(), Intent::Whole).await?;
        let digest = read.meta.digest;
        let bytes = read_whole(read, MAX_MANIFEST_BYTES as u64, key).await?;
        Ok((bytes.clone(), digest.unwrap_or_else(|| Digest::of(&bytes))))
    }

    /// Indexes every layer (at once) and merges them.
    async fn build(
        &self,
        namespace: &str,
        image: &ImageRef,
        manifest: Digest,
        refs: &[LayerRef],
    ) -> Result<Image, Error> {
        let indexed =
            futures::future::try_join_all(refs.iter().enumerate().map(|(i, l)| self.layer(namespace, image, i, l)))
                .await?;
        let (indexes, layers): (Vec<_>, Vec<_>) = indexed.into_iter().unzip();
        let index_bytes: u64 = indexes.iter().map(|i: &Arc<TarIndex>| i.byte_len() as u64).sum();
        let tree =
            blocking_with(move || ImageTree::build(indexes).map_err(|e| Error::BadImage { what: e.to_string() }))
                .await?;
        let (warnings, n) = tree.warnings();
        for w in warnings {
            tracing::warn!(namespace, %image, "{w}");
        }
        if n > warnings.len() {
            tracing::warn!(namespace, %image, "{} more warnings merging the image's layers", n - warnings.len());
        }
        let weight_bytes = index_bytes + tree.n_nodes() as u64 * NODE_BYTES;
        Ok(Image { namespace: namespace.to_owned(), image: image.clone(), manifest, layers, tree, weight_bytes })
    }

    /// Layer `i`'s tar index and access, from its derivations.
    async fn layer(
        &self,
        namespace: &str,
        image: &ImageRef,
        i: usize,
        l: &LayerRef,
    ) -> Result<(Arc<TarIndex>, Layer), Error> {
        let input = DeriveInput::Entry { namespace: namespace.to_owned(), key: image.blob_key(&l.digest).into_bytes() };
        let what = format!("layer {i} ({}) of image {image}", l.digest);
        let (tar, seek) =
            tokio::join!(self.output(&input, "tar-index", &what), self.output(&input, "layer-seek", &what));
        let tar = tar?;
        let index = blocking_with(move || {
            TarIndex::load(tar.to_vec())
                .map_err(|e| Error::BadImage { what: format!("a tar index that does not load: {e}") })
        })
        .await?;
        let seek = SeekIndex::load(&seek?)
            .map_err(|e| Error::BadImage { what: format!("{what}: a seek index that does not load: {e}") })?;
        let access = if seek.prefers_full_decompression() {
            let (output, _) = self.derived(&input, "decompress", &what).await?;
            Access::Decompressed(output)
        } else {
            Access::Seek(Arc::new(seek))
        };
        let starts = match &access {
            Access::Seek(seek) => seek.points().map(|(_, u)| u).collect(),
            Access::Decompressed(_) => Vec::new(),
        };
        Ok((Arc::new(index), Layer { digest: l.digest, access, starts }))
    }

    /// The bytes of derivation `recipe` of `input`.
    async fn output(&self, input: &DeriveInput, recipe: &str, what: &str) -> Result<Bytes, Error> {
        let (output, read) = self.derived(input, recipe, what).await?;
        read_whole(*read, MAX_INDEX_BYTES, &output.to_string()).await
    }

    /// Derivation `recipe` of `input`, waited for: its digest and a read of it.
    async fn derived(&self, input: &DeriveInput, recipe: &str, what: &str) -> Result<(Digest, Box<Read>), Error> {
        let ask = DeriveAsk {
            recipe: recipe.to_owned(),
            params: Vec::new(),
            accept: None,
            wait: INDEX_WAIT,
            priority: Priority::Waiting,
        };
        match self.derivations.derive(input, &ask).await? {
            Derived::Ready { read, output, .. } => Ok((output, read)),
            Derived::Failed { reason, .. } => Err(Error::BadImage { what: format!("{what} cannot be read: {reason}") }),
            Derived::Pending { .. } => Err(Error::Busy { what: format!("{what} ({recipe})") }),
            Derived::Busy { .. } => {
                Err(Error::Busy { what: format!("{what}: the derivation queue is full ({recipe})") })
            }
        }
    }

    /// Bytes `range` of the file at `node` (clamped to its size).
    pub(crate) async fn read(&self, image: &Image, node: NodeId, range: Range<u64>) -> Result<Bytes, Error> {
        let tree = image.tree();
        let Some(data) = tree.data(node) else {
            return Err(Error::Invalid("not a regular file: it has no bytes to read".into()));
        };
        let size = data.entry.size();
        let range = range.start.min(size)..range.end.min(size);
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        let layer = &image.layers[data.layer];
        if size <= SMALL_FILE_BYTES {
            let id = (layer.digest, data.entry.data_offset());
            let whole = self.files.try_get_with(id, self.file_bytes(image, node, 0..size)).await.map_err(unshared)?;
            return Ok(whole.slice(range.start as usize..range.end as usize));
        }
        self.file_bytes(image, node, range).await
    }

    /// Bytes `range` of file `node` from its layer: its data's place in the stream, or for a
    /// sparse file each data segment in the range, and zeros between them.
    async fn file_bytes(&self, image: &Image, node: NodeId, range: Range<u64>) -> Result<Bytes, Error> {
        let data = image.tree().data(node).expect("checked by the caller");
        let layer = &image.layers[data.layer];
        let Some(segments) = data.entry.sparse() else {
            let at = data.entry.data_offset();
            return self.uncompressed(image, layer, at + range.start..at + range.end).await;
        };
        let segments: Vec<_> = segments.collect();
        let mut out = BytesMut::zeroed((range.end - range.start) as usize);
        for s in segments {
            let (from, to) = (s.file_offset.max(range.start), (s.file_offset + s.len).min(range.end));
            if from >= to {
                continue;
            }
            let at = s.data_offset + (from - s.file_offset);
            let bytes = self.uncompressed(image, layer, at..at + (to - from)).await?;
            let put = (from - range.start) as usize;
            out[put..put + bytes.len()].copy_from_slice(&bytes);
        }
        Ok(out.freeze())
    }

    /// Bytes `range` of `layer`'s uncompressed stream.
    async fn uncompressed(&self, image: &Image, layer: &Layer, range: Range<u64>) -> Result<Bytes, Error> {
        match &layer.access {
            Access::Decompressed(output) => {
                let read = self.reads.blob(output, Intent::Whole).await?;
                let r = tiercache_core::ByteRange { start: range.start, end: range.end - 1 };
                let mut out = BytesMut::with_capacity(r.len() as usize);
                let mut body = read.into_stream(Some(r));
                while let Some(chunk) = body.next().await {
                    out.extend_from_slice(&chunk?);
                }
                Ok(out.freeze())
            }
            Access::Seek(seek) => {
                let (starts, size) = (&layer.starts, seek.uncompressed_size_bytes());
                let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
                let mut at = range.start;
                while at < range.end {
                    let i = starts.partition_point(|&s| s <= at).saturating_sub(1);
                    let window = starts[i]..starts.get(i + 1).copied().unwrap_or(size);
                    if window.end - window.start > MAX_WINDOW_BYTES {
                        // Points far apart (large zstd frames): the range alone, not the window.
                        let to = range.end.min(window.end);
                        out.extend_from_slice(&self.segments(image, layer, seek, at..to).await?);
                        at = to;
                        continue;
                    }
                    // Made once however many reads want it at once.
                    let made = self.segments(image, layer, seek, window.clone());
                    let bytes = self.windows.try_get_with((layer.digest, i as u32), made).await.map_err(unshared)?;
                    let to = range.end.min(window.end);
                    out.extend_from_slice(&bytes[(at - window.start) as usize..(to - window.start) as usize]);
                    at = to;
                }
                Ok(out.freeze())
            }
        }
    }

    /// Bytes `range` of `layer`'s uncompressed stream through its seek index: the whole segments
    /// holding them, each checked against its digest in the index (made from the verified whole
    /// layer) before a byte is decompressed.
    async fn segments(
        &self,
        image: &Image,
        layer: &Layer,
        seek: &Arc<SeekIndex>,
        range: Range<u64>,
    ) -> Result<Bytes, Error> {
        let digest = layer.digest;
        let bad = move |e: SeekError| Error::BadImage {
            what: format!("layer {digest} does not read as its seek index says: {e}"),
        };
        let span = seek.segment_span(range.clone()).map_err(bad)?;
        let fetched = self.span(image, layer, span.clone()).await?;
        let seek = Arc::clone(seek);
        blocking_with(move || {
            let (bytes, _) = seek.read_range_verified(span.start, &fetched, range).map_err(bad)?;
            Ok(Bytes::from(bytes))
        })
        .await
    }
}

impl Images {
    /// Bytes `range` of `layer` itself (compressed), through the tiers, counted by tier.
    async fn span(&self, image: &Image, layer: &Layer, range: Range<u64>) -> Result<Bytes, Error> {
        let key = image.image.blob_key(&layer.digest);
        let span = self.reads.span(&image.namespace, &key, layer.digest, range).await?;
        metrics::counter!(SPAN_BYTES, "tier" => span.tier.as_str()).increment(span.bytes.len() as u64);
        Ok(span.bytes)
    }
}

/// Files answered from their layer's stream before their image was indexed.
const STREAMED_READS: &str = "tiercache_image_streamed_reads_total";

/// Bytes of layers read for files inside images, by the tier they came from.
const SPAN_BYTES: &str = "tiercache_image_span_bytes_total";

/// The error of a computation many callers shared.
fn unshared(e: Arc<Error>) -> Error {
    (*e).clone()
}

/// `read`'s whole body, at most `max` bytes.
async fn read_whole(read: Read, max: u64, what: &str) -> Result<Bytes, Error> {
    if read.meta.size_bytes.is_some_and(|n| n > max) {
        return Err(Error::BadImage { what: format!("{what} is larger than {max} bytes") });
    }
    let mut out = BytesMut::new();
    let mut body = read.into_stream(None);
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk?);
        if out.len() as u64 > max {
            return Err(Error::BadImage { what: format!("{what} is larger than {max} bytes") });
        }
    }
    Ok(out.freeze())
}
