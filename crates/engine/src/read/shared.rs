//! The shared tier on the read path (layer 3): a lookup after a disk miss, the first wanted span
//! read and verified before the headers go out (only the leaves it needs, so a small range costs a
//! small read; and a dead or corrupt shared tier is still a miss, not a broken response), and a
//! fill of the disk tier in the background, once per blob however many readers want it (single
//! flight by digest, like source fetches).
//!
//! The fill keeps its last verified chunks in memory ([`Recent`]): readers that keep up are
//! served from there as soon as a chunk verifies, while the disk write and the blob's SHA-256
//! (on the temp blob's own thread) follow behind; readers that fall behind read the temp file.
//!
//! Invariant: a shared-tier failure never reaches a reader as an error before the headers: it is a
//! miss and the read goes on to the source. A failure after the headers (a chunk further on fails
//! verification) ends the body with an error: no unverified byte is ever sent. The disk tier
//! publishes the blob only after its whole SHA-256 matches.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;

use tiercache_core::{Digest, RangeRequest, Resolved};
use tiercache_sources::SourceMeta;
use tiercache_tiers::shared::ChunkList;
use tokio::sync::watch;

use super::Reads;
use super::fetch::is_running;
use crate::body::Body;
use crate::meta::Tier;
use crate::quota::Reservation;
use crate::single_flight::Joined;
use crate::spool::{Phase, PhaseSender, Recent, SpoolError, Started, progress, spool};
use crate::store::Origin;
use crate::{Error, telemetry};

/// What the reader will do with a read, so a remote tier can verify the bytes it will need before
/// the read is answered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Intent {
    /// Headers only (HEAD).
    Headers,
    /// The whole body.
    #[default]
    Whole,
    /// One range of the body.
    Range(RangeRequest),
}

/// At most this many bytes of what a reader wants are read and verified before its headers; the
/// rest streams after them.
const PRIMED_BYTES: u64 = 64 * 1024;
/// Verified bytes a fill keeps in memory for the readers that keep up with it.
const RECENT_BYTES: u64 = 16 << 20;

impl Intent {
    /// The bytes `start..end` the reader wants of a blob of `size` bytes, if it wants the body.
    fn wanted(&self, size: u64) -> Option<(u64, u64)> {
        match self {
            Intent::Headers => None,
            Intent::Whole => Some((0, size)),
            Intent::Range(r) => match r.resolve(size) {
                Ok(Resolved::Partial(r)) => Some((r.start, r.end.saturating_add(1))),
                Ok(Resolved::Whole) => Some((0, size)),
                Err(_) => None, // The front door answers 416; no body.
            },
        }
    }
}

/// A disk-tier fill from the shared tier under way: its phases, and its verified chunks in memory.
#[derive(Debug, Clone)]
pub(super) struct Fill {
    rx: watch::Receiver<Phase>,
    recent: Option<Arc<Recent>>,
}

/// Where a fill publishes: its phases, and its verified chunks.
struct FillOut {
    tx: PhaseSender,
    recent: Arc<Recent>,
}

impl Fill {
    fn is_running(&self) -> bool {
        is_running(&self.rx.borrow())
    }
}

/// A shared-tier hit: the blob's size and a body over it.
pub(crate) struct SharedHit {
    pub(crate) size_bytes: u64,
    pub(crate) body: Body,
}

impl Reads {
    /// Looks `digest` up in the shared tier. On a hit, reads and verifies the first span `intent`
    /// wants (its first [`PRIMED_BYTES`], in whole leaves) and starts (or joins) the disk-tier fill. `retain` keeps the filled blob even when no
    /// entry references it (a read by digest).
    ///
    /// Returns `Ok(None)` on a miss, including every kind of shared-tier failure (counted and
    /// logged by the tier), and when no shared tier is configured.
    pub(crate) async fn read_shared(
        self: &Arc<Self>,
        digest: Digest,
        intent: &Intent,
        retain: bool,
    ) -> Result<Option<SharedHit>, Error> {
        let Some(tier) = self.stores.shared() else { return Ok(None) };
        let t0 = Instant::now();
        let miss = |why: &dyn std::fmt::Display| {
            metrics::counter!(telemetry::READS, "tier" => "shared", "outcome" => "miss").increment(1);
            tracing::debug!(%digest, tier = "shared", outcome = "miss", why = %why, "read blob");
        };
        let list = match tier.lookup(&digest).await {
            Ok(Some(list)) => list,
            Ok(None) => {
                miss(&"not there");
                return Ok(None);
            }
            Err(e) => {
                miss(&e);
                return Ok(None);
            }
        };
        let primed = match intent.wanted(list.size_bytes).filter(|&(start, end)| start < end) {
            Some((start, end)) => match tier.read_verified(&list, start, end.min(start + PRIMED_BYTES)).await {
                Ok(span) => Some(span),
                Err(e) => {
                    miss(&e);
                    return Ok(None);
                }
            },
            None => None,
        };
        // Room in the disk quota for the fill, unless one is under way already or the reader
        // wants the headers only (a HEAD copies nothing). Without room, the reader gets verified
        // chunks from the shared tier and nothing is stored.
        let reservation = if *intent == Intent::Headers || self.fill_under_way(&digest) {
            None
        } else {
            match self.stores.managed().reserve(list.size_bytes).await {
                Ok(r) => Some(r),
                Err(no_room) => {
                    tracing::info!(%digest, reason = %no_room.reason, "shared-tier hit not stored on disk");
                    self.stores.managed().quota.passed_through(&no_room.reason);
                    None
                }
            }
        };
        let Fill { rx, recent } = self.join_fill(digest, Arc::clone(&list), primed.clone(), retain, reservation);
        telemetry::served(Tier::Shared, "hit", t0, list.size_bytes, || digest.to_string());
        Ok(Some(SharedHit {
            size_bytes: list.size_bytes,
            body: Body::Shared { rx, recent, tier: Arc::clone(tier), list, primed },
        }))
    }

    /// Joins the disk-tier fill of `digest`, starting it if none is under way (with `primed`, a
    /// span already read and verified, so it is not read twice).
    /// With no fill under way and no `reservation`, returns a channel already passed through: the
    /// reader reads chunks from the shared tier.
    fn join_fill(
        self: &Arc<Self>,
        digest: Digest,
        list: Arc<ChunkList>,
        primed: Option<(u64, Bytes)>,
        retain: bool,
        reservation: Option<Reservation>,
    ) -> Fill {
        let Some(reservation) = reservation else {
            if let Some(fill) = self.fills.running(&digest, Fill::is_running) {
                return fill;
            }
            let meta = SourceMeta { size_bytes: Some(list.size_bytes), ..SourceMeta::default() };
            let rx = watch::channel(Phase::PassThrough { meta: Arc::new(meta), body: Default::default() }).1;
            return Fill { rx, recent: None };
        };
        let mut tx = None;
        let joined = self.fills.join(digest, Fill::is_running, || {
            let (sender, rx) = watch::channel(Phase::Waiting);
            tx = Some(sender);
            Fill { rx, recent: Some(Recent::new(RECENT_BYTES)) }
        });
        match joined {
            Joined::Running(fill) => fill,
            Joined::Started(fill) => {
                let out = FillOut {
                    tx: Arc::new(tx.expect("a started fill has its sender")),
                    recent: Arc::clone(fill.recent.as_ref().expect("a started fill keeps its chunks")),
                };
                let reads = Arc::clone(self);
                self.tasks.spawn(async move { reads.run_fill(digest, list, primed, retain, reservation, out).await });
                fill
            }
        }
    }

    fn fill_under_way(&self, digest: &Digest) -> bool {
        self.fills.is_running(digest, Fill::is_running)
    }

    async fn run_fill(
        self: &Arc<Self>,
        digest: Digest,
        list: Arc<ChunkList>,
        primed: Option<(u64, Bytes)>,
        retain: bool,
        reservation: Reservation,
        out: FillOut,
    ) {
        let result = match self.fetch_slots.take(super::fetch::SHARED_TIER).await {
            Ok(_slot) => self.fill_from_shared(digest, &list, primed, retain, reservation, &out).await,
            Err(e) => Err(e),
        };
        let tx = out.tx;
        self.fills.finish(&digest, |fill| fill.rx.same_channel(&tx.subscribe()));
        if let Err(e) = result {
            tracing::warn!(%digest, error = %e, "filling the disk tier from the shared tier failed; nothing stored");
            telemetry::error(&e);
            tx.send_replace(Phase::Failed(e));
        }
    }

    /// Copies blob `digest` from the shared tier into the disk tier: verified chunk by chunk on the
    /// way in (each verified chunk also goes to `recent`, for the readers), then as a whole before
    /// it is published (the put protocol of docs/design.md).
    async fn fill_from_shared(
        self: &Arc<Self>,
        digest: Digest,
        list: &Arc<ChunkList>,
        primed: Option<(u64, Bytes)>,
        retain: bool,
        reservation: Reservation,
        out: &FillOut,
    ) -> Result<(), Error> {
        let (tx, recent) = (&out.tx, Arc::clone(&out.recent));
        let tier = self.stores.shared().expect("fills start only with a shared tier");
        let meta = SourceMeta { size_bytes: Some(list.size_bytes), ..SourceMeta::default() };
        let temp = self.stores.managed().disk.create_temp().map_err(|e| Error::io("cannot create a temp file", e))?;
        let started = Arc::new(Started { meta, file: temp.reader(), recent: Some(Arc::clone(&recent)) });
        tx.send_replace(Phase::Streaming { started: Arc::clone(&started), written: 0 });
        let body = tier.read_range(Arc::clone(list), 0, list.size_bytes, primed).inspect(move |chunk| {
            if let Ok(chunk) = chunk {
                recent.push(chunk.clone());
            }
        });
        let finished = spool(temp, reservation, body, progress(tx)).await.map_err(|e| match e {
            SpoolError::Body(e) => Error::io("reading from the shared tier", std::io::Error::other(e)),
            SpoolError::Local(e) => e,
        })?;
        if finished.0.digest != digest {
            let why = format!("its chunks verified but the whole hashes to {}", finished.0.digest);
            let discarded = tier.discard(&digest, why).await;
            return Err(Error::io("filling from the shared tier", std::io::Error::other(discarded)));
        }
        let written = finished.0.size_bytes;
        self.stores.commit(self.stores.managed(), finished, retain, None, Origin::Shared).await?;
        tx.send_replace(Phase::Done { started, written, digest });
        Ok(())
    }
}
