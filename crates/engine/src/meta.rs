//! The facts a front door answers headers with (layer 0): which tier serves a read, its size,
//! ETag, content type and dates ([`ReadMeta`]), as shared text ([`Text`]), and a [`Memo`] where a
//! front door keeps what it derives from them once. No I/O, no bodies (`body.rs` has those).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use tiercache_core::Digest;

/// The tier that served a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The local disk tier.
    Disk,
    /// The shared cluster tier.
    Shared,
    /// The memory tier.
    Memory,
    /// The source (a fetch, or a wait on one).
    Source,
}

impl Tier {
    /// Its name in logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Tier::Disk => "disk",
            Tier::Shared => "shared",
            Tier::Memory => "memory",
            Tier::Source => "source",
        }
    }
}

/// Header text: UTF-8 in shared bytes, so that handing one to every reader of a hot entry, and
/// on to the front door's header values, copies nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Text(Bytes);

impl Text {
    /// The shared bytes (UTF-8).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Copies of `texts` in one shared buffer: whoever clones several of them counts one
    /// reference for all, not one each (on a line other threads' clones also write).
    pub fn in_one_buffer<const N: usize>(texts: [Option<&str>; N]) -> [Option<Text>; N] {
        let mut buf = BytesMut::with_capacity(texts.iter().flatten().map(|t| t.len()).sum());
        let spans = texts.map(|t| {
            t.map(|t| {
                buf.extend_from_slice(t.as_bytes());
                buf.len() - t.len()..buf.len()
            })
        });
        let buf = buf.freeze();
        spans.map(|span| span.map(|span| Text(buf.slice(span))))
    }
}

impl std::ops::Deref for Text {
    type Target = str;

    fn deref(&self) -> &str {
        std::str::from_utf8(&self.0).expect("a Text is made from a str")
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl From<&'static str> for Text {
    fn from(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

/// What a front door derives once from the [`ReadMeta`] of an entry the memory tier holds (its
/// response headers, say) and reuses for every later read of that entry: the first reader fills
/// it, and it is dropped with the memory tier's value. It holds one value of any one type; a front
/// door that finds a value of another type there derives its own on each read.
#[derive(Clone, Default)]
pub struct Memo(Arc<std::sync::OnceLock<Box<dyn std::any::Any + Send + Sync>>>);

impl Memo {
    /// The value kept here, made by `init` if there is none yet; `None` if it is of another type.
    pub fn get_or_init<T: std::any::Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&T> {
        self.0.get_or_init(|| Box::new(init())).downcast_ref()
    }
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() { "Memo(set)" } else { "Memo(empty)" })
    }
}

/// What the front door needs to answer headers.
#[derive(Debug, Clone)]
pub struct ReadMeta {
    /// Which tier serves the body.
    pub tier: Tier,
    /// The whole object's size, if known (a source may not say).
    pub size_bytes: Option<u64>,
    /// ETag, quoted: the digest for blobs, the MD5 for entries (strong). A cold read carries the
    /// source's ETag; a read of an entry whose MD5 is not known yet carries the source's ETag as
    /// a weak one (`W/"…"`), or none.
    pub etag: Option<Text>,
    /// Content type.
    pub content_type: Option<Text>,
    /// `Last-Modified` as an HTTP date.
    pub last_modified: Option<Text>,
    /// The blob's digest, when already known.
    pub digest: Option<Digest>,
    /// The `Content-Encoding` the source sent the bytes with (they are served as sent, and the
    /// ETag is that of these bytes); `None` for identity.
    pub content_encoding: Option<Text>,
    /// Shared by every read of one entry held by the memory tier; `None` for other reads.
    pub memo: Option<Memo>,
}

impl ReadMeta {
    /// The same facts with their texts in one shared buffer ([`Text::in_one_buffer`]): each read
    /// of an entry the memory tier holds clones its facts.
    pub(crate) fn with_shared_texts(mut self) -> ReadMeta {
        let texts = [
            self.etag.as_deref(),
            self.content_type.as_deref(),
            self.last_modified.as_deref(),
            self.content_encoding.as_deref(),
        ];
        [self.etag, self.content_type, self.last_modified, self.content_encoding] = Text::in_one_buffer(texts);
        self
    }
}

/// `t` as an HTTP date (`Last-Modified`).
pub(crate) fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}
