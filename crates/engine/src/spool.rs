//! Spooling a body into a temp file of a store (layer 1), and the [`Phase`]s a writer publishes
//! while it does, so that readers can tail the file as it fills.
//!
//! A fetch (or a fill from the shared tier) is a `watch` channel of [`Phase`]s. The writing task
//! is the only sender; every reader holds a receiver and tails the temp file through its own
//! `read_at` calls while the task writes, so readers get bytes as they arrive and none of them
//! needs the whole blob first. Which fetch a reader joins is `single_flight.rs`'s business and
//! the read path's (`read/fetch.rs`), not this module's.
//!
//! A writer may also keep the last bytes it received in memory ([`Recent`]), so that readers
//! that keep up take them from there, before they reach the file and without reading them back.
//!
//! Invariant: bytes below `written` in [`Phase::Streaming`] are final; a reader never reads past
//! them. A flight that fails publishes [`Phase::Failed`], and its temp file is deleted; readers
//! that already streamed part of the body end with an error rather than a short body.
//!
//! Invariant: [`Recent`] holds only bytes its writer would write to the file (for a fill from the
//! shared tier: verified ones), at most its limit, oldest dropped first.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tiercache_core::Digest;
use tiercache_sources::{SourceError, SourceMeta};
use tiercache_tiers::{FinishedBlob, TempBlob};
use tokio::sync::watch;

use crate::Error;
use crate::quota::Reservation;

/// A body of unknown length reserves disk quota in steps of this many bytes as it arrives.
pub(crate) const RESERVE_STEP_BYTES: u64 = 1 << 20;

/// Where a flight is.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// Waiting for a fetch permit or for the source's headers.
    Waiting,
    /// Bytes are arriving; `written` of them are in the temp file.
    Streaming { started: Arc<Started>, written: u64 },
    /// Every byte is in, verified and published under `digest`.
    Done { started: Arc<Started>, written: u64, digest: Digest },
    /// The source confirmed the cached copy (conditional request answered 304).
    NotModified,
    /// The disk quota had no room: nothing is stored. The first reader takes the body the
    /// flight got; later ones ask the source themselves.
    PassThrough { meta: Arc<SourceMeta>, body: HandOff },
    /// A body of unknown length outgrew the room the quota could make: nothing is stored. The
    /// first `written` bytes stay readable in the (deleted) temp file; the first reader to need
    /// more takes the rest of the source's body, which starts at byte `written`, and later ones
    /// ask the source themselves.
    Overflow { started: Arc<Started>, written: u64, rest: HandOff },
    /// The fetch failed; nothing was stored. Every reader gets this same error.
    Failed(Error),
}

/// A source body handed to the first reader that takes it.
#[derive(Clone, Default)]
pub(crate) struct HandOff(Arc<std::sync::Mutex<Option<BodyStream>>>);

/// A source's body stream.
pub(crate) type BodyStream = futures::stream::BoxStream<'static, Result<Bytes, SourceError>>;

impl HandOff {
    pub(crate) fn new(body: BodyStream) -> HandOff {
        HandOff(Arc::new(std::sync::Mutex::new(Some(body))))
    }

    /// The body, to the first caller only.
    pub(crate) fn take(&self) -> Option<BodyStream> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl std::fmt::Debug for HandOff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandOff")
    }
}

/// What a reader needs once the source has answered.
#[derive(Debug)]
pub(crate) struct Started {
    /// What the source said about the object.
    pub(crate) meta: SourceMeta,
    /// The temp file (later the published blob): readers `read_at` below `written`.
    pub(crate) file: Arc<File>,
    /// The last bytes the writer received, for readers that keep up: taken from memory, they
    /// need not be read back from the file (nor wait for it).
    pub(crate) recent: Option<Arc<Recent>>,
}

/// Why spooling a stream into a temp file stopped.
#[derive(Debug)]
pub(crate) enum SpoolError<E> {
    /// The incoming stream failed.
    Body(E),
    /// Writing locally failed.
    Local(Error),
}

/// Streams `body` into `temp` on a blocking thread (writing, and SHA-256 beside it, off the async workers),
/// calling `progress(written)` after each chunk is in the file. Returns the fsynced, hashed file and
/// its reservation of disk quota, grown (in [`RESERVE_STEP_BYTES`] steps) to cover every byte
/// before it is written: a body that outgrows the room the quota can make fails as storage full.
pub(crate) async fn spool<E: Send + 'static>(
    temp: TempBlob,
    reservation: Reservation,
    body: impl Stream<Item = Result<Bytes, E>> + Send,
    progress: impl Fn(u64) + Send + 'static,
) -> Result<(FinishedBlob, Reservation), SpoolError<E>> {
    match spool_or_overflow(temp, reservation, Box::pin(body), u64::MAX, progress).await? {
        Spooled::Stored(finished, reservation) => Ok((finished, reservation)),
        Spooled::Overflow { reason, .. } => Err(SpoolError::Local(Error::StorageFull { what: reason, cause: None })),
    }
}

/// How [`spool_or_overflow`] ended.
pub(crate) enum Spooled<S> {
    /// Every byte is in the file.
    Stored(FinishedBlob, Reservation),
    /// The quota could not make room for more: `written` bytes are in the file (deleted now, but
    /// readable through the handles readers hold), and the rest of the body is `rest` followed by
    /// `body`, untouched.
    Overflow { reason: String, written: u64, rest: Vec<Bytes>, body: S },
}

/// What the writer thread ends with.
enum WriterEnd {
    Io(std::io::Error),
    Full { reason: String, written: u64, rest: Vec<Bytes> },
}

/// [`spool`], except that a body outgrowing the room the quota can make, or `max_bytes` (the
/// maximum object size), is handed back, with the bytes not yet written, instead of failing: the
/// caller may pass the rest through.
pub(crate) async fn spool_or_overflow<E: Send + 'static, S: Stream<Item = Result<Bytes, E>> + Send + Unpin>(
    temp: TempBlob,
    reservation: Reservation,
    mut body: S,
    max_bytes: u64,
    progress: impl Fn(u64) + Send + 'static,
) -> Result<Spooled<S>, SpoolError<E>> {
    let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::channel::<Bytes>(32);
    let writer = tokio::task::spawn_blocking(move || -> Result<(FinishedBlob, Reservation), WriterEnd> {
        let (mut temp, mut reservation) = (temp, reservation);
        while let Some(chunk) = chunk_rx.blocking_recv() {
            let need = temp.written().saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
            let refused = if need > max_bytes {
                Some(format!("the body is larger than the maximum object size ({max_bytes} bytes)"))
            } else if need > reservation.bytes() {
                reservation.grow_to(need.next_multiple_of(RESERVE_STEP_BYTES).min(max_bytes)).err().map(|no| no.reason)
            } else {
                None
            };
            if let Some(reason) = refused {
                // Everything received and not written, in order: this chunk, then those queued.
                chunk_rx.close();
                let mut rest = vec![chunk];
                while let Some(c) = chunk_rx.blocking_recv() {
                    rest.push(c);
                }
                return Err(WriterEnd::Full { reason, written: temp.written(), rest });
            }
            temp.write(chunk).map_err(WriterEnd::Io)?;
            progress(temp.written());
        }
        temp.finish().map(|f| (f, reservation)).map_err(WriterEnd::Io)
    });
    let mut body_error = None;
    let mut unsent = None;
    while let Some(item) = body.next().await {
        match item {
            Ok(chunk) => {
                if let Err(e) = chunk_tx.send(chunk).await {
                    unsent = Some(e.0); // The writer stopped; its reason is reported below.
                    break;
                }
            }
            Err(e) => {
                body_error = Some(e);
                break;
            }
        }
    }
    drop(chunk_tx);
    let written = writer.await.map_err(|e| SpoolError::Local(Error::task("spooling a body", e)))?;
    if let Some(e) = body_error {
        return Err(SpoolError::Body(e)); // Dropping `written` deletes the temp file.
    }
    match written {
        Ok((finished, reservation)) => Ok(Spooled::Stored(finished, reservation)),
        Err(WriterEnd::Io(e)) => Err(SpoolError::Local(Error::io("cannot write a temp file", e))),
        Err(WriterEnd::Full { reason, written, mut rest }) => {
            rest.extend(unsent);
            Ok(Spooled::Overflow { reason, written, rest, body })
        }
    }
}

/// The sending half of a flight.
pub(crate) type PhaseSender = Arc<watch::Sender<Phase>>;

/// A [`spool`] progress callback that publishes `written` in the flight's streaming phase.
pub(crate) fn progress(tx: &PhaseSender) -> impl Fn(u64) + Send + 'static {
    let tx = Arc::clone(tx);
    move |written| {
        tx.send_modify(|p| {
            if let Phase::Streaming { written: w, .. } = p {
                *w = written;
            }
        })
    }
}

/// The last bytes a writer received, in memory: at most `limit_bytes` of them (whole chunks,
/// oldest dropped first), and how far the writer has got.
#[derive(Debug)]
pub(crate) struct Recent {
    /// `(offset, chunk)`, in order and contiguous, with the bytes they hold.
    chunks: Mutex<(VecDeque<(u64, Bytes)>, u64)>,
    limit_bytes: u64,
    /// The end of the last chunk received.
    end: watch::Sender<u64>,
}

impl Recent {
    pub(crate) fn new(limit_bytes: u64) -> Arc<Recent> {
        Arc::new(Recent { chunks: Mutex::new((VecDeque::new(), 0)), limit_bytes, end: watch::Sender::new(0) })
    }

    /// Adds the next `chunk` (it starts where the last one ended), dropping the oldest ones past
    /// the limit, and wakes the readers.
    pub(crate) fn push(&self, chunk: Bytes) {
        let len = chunk.len() as u64;
        {
            let mut guard = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
            let (chunks, held) = &mut *guard;
            let at = *self.end.borrow();
            chunks.push_back((at, chunk));
            *held += len;
            while *held > self.limit_bytes
                && let Some((_, old)) = chunks.pop_front()
            {
                *held -= old.len() as u64;
            }
        }
        self.end.send_modify(|end| *end += len);
    }

    /// At most `max` bytes from offset `pos`, if they are held.
    pub(crate) fn get(&self, pos: u64, max: u64) -> Option<Bytes> {
        let guard = self.chunks.lock().unwrap_or_else(|p| p.into_inner());
        let (at, chunk) = guard.0.iter().find(|(at, c)| *at <= pos && pos < at + c.len() as u64)?;
        let from = (pos - at) as usize;
        let to = chunk.len().min(from.saturating_add(usize::try_from(max).unwrap_or(usize::MAX)));
        Some(chunk.slice(from..to))
    }

    /// Bytes received so far; a receiver that changes as more arrive.
    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_keeps_the_last_chunks_up_to_its_limit() {
        let recent = Recent::new(10);
        let rx = recent.watch();
        for (i, len) in [4usize, 4, 4].into_iter().enumerate() {
            recent.push(Bytes::from(vec![i as u8; len]));
        }
        assert_eq!(*rx.borrow(), 12);
        assert_eq!(recent.get(0, 100), None, "the oldest chunk was dropped");
        assert_eq!(recent.get(5, 100).unwrap(), Bytes::from(vec![1u8; 3]));
        assert_eq!(recent.get(8, 2).unwrap(), Bytes::from(vec![2u8; 2]));
        assert_eq!(recent.get(12, 1), None, "not yet received");
    }
}
