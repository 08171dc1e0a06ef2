//! A source body whose bytes must hash to a digest its key names (a registry blob, a manifest by
//! digest: `KeyPolicy::digest`), checked before its last chunk is let through.
//!
//! Invariant: the last chunk of a body is released only once every byte has been hashed and the
//! digest matched; a body that does not match ends with an error in its place. Whoever consumes
//! it (the spool writing the temp file readers tail, a pass-through reader) therefore never has
//! the whole body unless it is the right one: a reader's stream ends with an error, never
//! complete with the wrong bytes, and nothing is stored.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use tiercache_core::{Digest, Hasher};
use tiercache_sources::SourceError;

/// `body`, checked against `expected` as it passes; `url` names it in the error.
pub(super) fn verified(
    body: BoxStream<'static, Result<Bytes, SourceError>>,
    expected: Digest,
    url: String,
) -> BoxStream<'static, Result<Bytes, SourceError>> {
    Box::pin(Verified { inner: body, hasher: Some(Hasher::new()), held: None, expected, url })
}

struct Verified {
    inner: BoxStream<'static, Result<Bytes, SourceError>>,
    /// `None` once the body has ended (or failed).
    hasher: Option<Hasher>,
    /// The chunk received last, hashed, not yet let through.
    held: Option<Bytes>,
    expected: Digest,
    url: String,
}

impl Stream for Verified {
    type Item = Result<Bytes, SourceError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            let Some(hasher) = this.hasher.as_mut() else { return Poll::Ready(this.held.take().map(Ok)) };
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    hasher.update(&chunk);
                    if let Some(previous) = this.held.replace(chunk) {
                        return Poll::Ready(Some(Ok(previous)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    this.hasher = None;
                    this.held = None;
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(None) => {
                    let actual = this.hasher.take().expect("checked above").finish();
                    if actual != this.expected {
                        this.held = None;
                        let reason = format!(
                            "the bytes hash to sha256:{actual}, not to the digest the key names ({})",
                            this.expected
                        );
                        return Poll::Ready(Some(Err(SourceError::Protocol { url: this.url.clone(), reason })));
                    }
                    // Matched: the held chunk goes out on this poll (or the body was empty).
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    async fn run(chunks: &[&[u8]], expected: Digest) -> (Vec<u8>, Option<SourceError>) {
        let items: Vec<Result<Bytes, SourceError>> = chunks.iter().map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        let mut s = verified(futures::stream::iter(items).boxed(), expected, "test".into());
        let mut out = Vec::new();
        while let Some(item) = s.next().await {
            match item {
                Ok(c) => out.extend_from_slice(&c),
                Err(e) => return (out, Some(e)),
            }
        }
        (out, None)
    }

    #[tokio::test]
    async fn a_matching_body_passes_whole() {
        let (out, err) = run(&[b"ab", b"cd", b"e"], Digest::of(b"abcde")).await;
        assert_eq!(out, b"abcde");
        assert!(err.is_none());
        let (out, err) = run(&[], Digest::of(b"")).await;
        assert!(out.is_empty() && err.is_none());
    }

    #[tokio::test]
    async fn a_body_that_does_not_match_never_arrives_whole() {
        let (out, err) = run(&[b"ab", b"cd", b"X"], Digest::of(b"abcde")).await;
        assert_eq!(out, b"abcd", "the last chunk is held back");
        assert!(matches!(err, Some(SourceError::Protocol { .. })), "{err:?}");
        let (out, err) = run(&[b"abcde"], Digest::of(b"other")).await;
        assert!(out.is_empty());
        assert!(err.is_some());
    }
}
