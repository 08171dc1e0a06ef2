//! The disk quota (layer 1): bytes reserved before a write begins, eviction when a reservation does not fit
//! (and in the background above the high watermark), and what protects a blob from eviction.
//!
//! Invariant: `used + reserved ≤ quota` whenever this process reserves; a writer holds a
//! [`Reservation`] covering every byte it has written to a temp file, so concurrent writers cannot
//! overshoot the quota together. A reservation that cannot fit even after eviction fails with
//! [`NoRoom`], and the caller serves the blob without storing it (pass-through).
//!
//! Never evicted: uploads (never in the policy at all), blobs named by pinned entries, blobs being
//! read (a [`Hold`]) and blobs being written (a reservation; they join the policy only once stored).
//! Blobs stored within `protect_new` are evicted last: a reservation takes them only when every
//! other evictable blob is gone and it still lacks room, the oldest new blob first and only as many
//! as it needs (never to reach the low watermark, never in the background). A cache admits what it
//! has just read: a burst of new blobs larger than the quota keeps the newest, instead of freezing
//! the quota full of the first ones and passing every later blob through. The policy itself never
//! picks the newest blob first.
//!
//! The order of eviction is [`EvictionPolicy`]'s; this module knows nothing of HTTP or sources.
//! Other processes' writes are seen at [`DiskQuota::resync`] (each pruner pass), when the bytes in
//! use are read again from the index.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tiercache_core::Digest;
use tiercache_index::{Index, IndexError};
use tiercache_tiers::{DiskTier, EvictionPolicy};
use tokio::time::Instant;

use crate::config::DiskLimits;
use crate::telemetry;

/// A reservation that cannot fit: the blob is served without being stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoRoom {
    /// Why, in a sentence (also in stats).
    pub(crate) reason: String,
}

/// What eviction and the quota did, for stats.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct QuotaStats {
    /// The quota, if any.
    pub quota_bytes: Option<u64>,
    /// Above this share of the quota a background pass evicts …
    pub high_watermark: f64,
    /// … down to this share.
    pub low_watermark: f64,
    /// Bytes of blobs held, as this process accounts them.
    pub used_bytes: u64,
    /// Bytes reserved by writes under way.
    pub reserved_bytes: u64,
    /// Blobs evicted by this process, and their bytes.
    pub n_evicted: u64,
    /// Bytes evicted by this process.
    pub evicted_bytes: u64,
    /// Entries removed with evicted blobs.
    pub n_evicted_entries: u64,
    /// Blobs evicted within `protect_new` of being stored, because a write found nothing else to
    /// evict (counted in `n_evicted` too): the quota is smaller than what is read within
    /// `protect_new`.
    pub n_evicted_new: u64,
    /// Blobs served without being stored because nothing could be evicted.
    pub n_pass_through: u64,
    /// Why the latest pass-through happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_pass_through: Option<String>,
}

/// Called with the digests just evicted.
pub(crate) type OnEvict = Box<dyn Fn(&[Digest]) + Send + Sync>;

/// The quota of one disk tier, with its eviction policy.
pub(crate) struct DiskQuota {
    limits: DiskLimits,
    index: Arc<Index>,
    disk: DiskTier,
    data_dir: std::path::PathBuf,
    state: Mutex<State>,
    /// Blobs and namespaces being read now.
    pub(crate) in_use: InUse,
    /// Called with the digests evicted, after their entries are gone (the memory tier drops
    /// its lookups).
    on_evict: Mutex<Option<OnEvict>>,
    n_evicted: AtomicU64,
    evicted_bytes: AtomicU64,
    n_evicted_entries: AtomicU64,
    n_evicted_new: AtomicU64,
    n_pass_through: AtomicU64,
    last_pass_through: Mutex<Option<String>>,
    /// When new blobs were last evicted and logged: the log line says so once a minute at most.
    new_evicted_logged_at: Mutex<Option<Instant>>,
}

struct State {
    used_bytes: u64,
    reserved_bytes: u64,
    policy: EvictionPolicy<Digest>,
    pinned: HashSet<Digest>,
    /// Blobs stored within `protect_new`, in the order they were stored.
    recent: Recent,
}

/// The blobs stored within `protect_new` ("new"), oldest first, with O(1) lookups.
#[derive(Default)]
struct Recent {
    /// Each new blob's latest store: when, and its number.
    stamps: HashMap<Digest, (Instant, u64)>,
    /// Stores in order, oldest first. An item whose number is not its blob's in `stamps` (the blob
    /// was stored again, evicted or deleted since) is stale and skipped; items leave from the
    /// front as they age past `protect_new`, so there are at most as many as stores within it.
    order: VecDeque<(u64, Instant, Digest)>,
    /// The number of the next store.
    next: u64,
}

impl Recent {
    /// `digest` was stored at `now`.
    fn put(&mut self, digest: Digest, now: Instant) {
        let n = self.next;
        self.next += 1;
        self.stamps.insert(digest, (now, n));
        self.order.push_back((n, now, digest));
        self.compact();
    }

    fn contains(&self, digest: &Digest) -> bool {
        self.stamps.contains_key(digest)
    }

    /// `digest` is no longer new (evicted or deleted).
    fn delete(&mut self, digest: &Digest) {
        self.stamps.remove(digest);
        self.compact();
    }

    /// Drops the stale items once they are most of `order`: they leave by age only from the
    /// front, so a burst that evicts new blobs behind an older one still new would otherwise leave
    /// a scan of `order` to step over every one of them. Amortized O(1) per store.
    fn compact(&mut self) {
        if self.order.len() > 2 * self.stamps.len() + 64 {
            let stamps = &self.stamps;
            self.order.retain(|(n, _, d)| stamps.get(d).is_some_and(|&(_, latest)| latest == *n));
        }
    }

    /// Forgets the stores made at or before `now - protect_new`.
    fn forget_older_than(&mut self, now: Instant, protect_new: std::time::Duration) {
        while let Some(&(n, at, digest)) = self.order.front() {
            if now.duration_since(at) < protect_new {
                break;
            }
            self.order.pop_front();
            if self.stamps.get(&digest).is_some_and(|&(_, latest)| latest == n) {
                self.stamps.remove(&digest);
            }
        }
    }

    /// The new blobs, the least recently stored first.
    fn oldest_first(&self) -> impl Iterator<Item = &Digest> {
        self.order
            .iter()
            .filter(|(n, _, d)| self.stamps.get(d).is_some_and(|&(_, latest)| latest == *n))
            .map(|(_, _, d)| d)
    }
}

impl DiskQuota {
    /// The quota over `disk`, its policy rebuilt from the index (only if there is a quota).
    pub(crate) fn open(
        limits: DiskLimits,
        index: Arc<Index>,
        disk: DiskTier,
        data_dir: std::path::PathBuf,
    ) -> Result<DiskQuota, IndexError> {
        let capacity = limits.quota_bytes.unwrap_or(u64::MAX);
        let mut policy = EvictionPolicy::new(capacity);
        let (used_bytes, pinned) = if limits.quota_bytes.is_some() {
            policy.restore(index.evictable_blobs()?);
            (index.present_bytes()? + index.upload_bytes()?, index.pinned_digests()?)
        } else {
            (0, HashSet::new())
        };
        Ok(DiskQuota {
            limits,
            index,
            disk,
            data_dir,
            state: Mutex::new(State { used_bytes, reserved_bytes: 0, policy, pinned, recent: Recent::default() }),
            in_use: InUse::default(),
            on_evict: Mutex::new(None),
            n_evicted: AtomicU64::new(0),
            evicted_bytes: AtomicU64::new(0),
            n_evicted_entries: AtomicU64::new(0),
            n_evicted_new: AtomicU64::new(0),
            n_pass_through: AtomicU64::new(0),
            last_pass_through: Mutex::new(None),
            new_evicted_logged_at: Mutex::new(None),
        })
    }

    pub(crate) fn set_on_evict(&self, f: OnEvict) {
        *self.on_evict.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `n` bytes for a write, evicting if they do not fit. Blocking (eviction writes the
    /// index and unlinks files): call it from a blocking thread.
    pub(crate) fn reserve(self: &Arc<Self>, n: u64) -> Result<Reservation, NoRoom> {
        self.make_room(n)?;
        Ok(Reservation { quota: Arc::clone(self), bytes: n, is_adopted: false })
    }

    /// A reservation of `n` bytes already counted as used (a multipart upload's parts, about to
    /// become one blob): they move from used to reserved, evicting nothing. Dropped unused, they
    /// count as used again (the parts are still there). [`NoRoom`] if the file system has less
    /// than `n` bytes free (the blob is a copy where extents cannot be shared). Blocking.
    pub(crate) fn adopt(self: &Arc<Self>, n: u64) -> Result<Reservation, NoRoom> {
        if let Ok(free) = self.disk.available_bytes()
            && free < n
        {
            return Err(NoRoom {
                reason: format!("the file system of the data directory has {free} bytes free, {n} needed"),
            });
        }
        let mut st = self.state();
        st.used_bytes = st.used_bytes.saturating_sub(n);
        st.reserved_bytes += n;
        Ok(Reservation { quota: Arc::clone(self), bytes: n, is_adopted: true })
    }

    /// Bytes kept on disk outside blobs (a multipart upload's parts) were removed.
    pub(crate) fn released(&self, n: u64) {
        let mut st = self.state();
        st.used_bytes = st.used_bytes.saturating_sub(n);
    }

    /// Adds `n` to the bytes reserved, evicting what must go first.
    fn make_room(&self, n: u64) -> Result<(), NoRoom> {
        // A full file system is no room either, whatever the quota says: better served
        // pass-through than failed halfway through the write.
        if let Ok(free) = self.disk.available_bytes()
            && free < n
        {
            return Err(NoRoom {
                reason: format!("the file system of the data directory has {free} bytes free, {n} needed"),
            });
        }
        let Some(quota) = self.limits.quota_bytes else {
            self.state().reserved_bytes += n;
            return Ok(());
        };
        if n > quota {
            return Err(NoRoom {
                reason: format!("a blob of {n} bytes is larger than the whole disk quota ({quota} bytes)"),
            });
        }
        let low = (quota as f64 * self.limits.low_watermark) as u64;
        // Each round evicts what the reservation needs; another writer may take the room first,
        // so a few rounds are allowed before giving up.
        for _ in 0..4 {
            let victims = {
                let mut st = self.state();
                let total = st.used_bytes + st.reserved_bytes + n;
                if total <= quota {
                    st.reserved_bytes += n;
                    return Ok(());
                }
                let hard = total - quota;
                let soft = total.saturating_sub(low).max(hard);
                // Not enough to evict: say so before touching the policy, so that a reservation
                // that fails leaves the order of eviction as it was.
                let (evictable, evictable_old) = self.evictable_bytes(&mut st);
                let victims = if evictable >= hard {
                    // With nothing but new blobs to evict, the policy's scan would only step over them.
                    let need = if evictable_old > 0 { soft } else { 0 };
                    self.pick_victims(&mut st, need, hard)
                } else {
                    Victims::default()
                };
                let got: u64 = victims.all.iter().map(|(_, s)| s).sum();
                if got < hard {
                    // Only if a blob became protected between the count and the pick.
                    for (d, s) in victims.all {
                        st.policy.put(d, s);
                    }
                    let reserved = st.reserved_bytes;
                    return Err(NoRoom {
                        reason: format!(
                            "the disk quota ({quota} bytes) is full of blobs that cannot be evicted now (pinned, \
                             uploaded or being read) and of writes under way ({reserved} bytes reserved): {n} bytes \
                             needed, {evictable} evictable"
                        ),
                    });
                }
                victims
            };
            let evicted = self.evict(victims.all);
            let n_new = evicted.iter().filter(|d| victims.new.contains(d)).count() as u64;
            if n_new > 0 {
                self.evicted_new(n_new);
            }
        }
        Err(NoRoom { reason: "the disk quota stayed full while other writes took the room freed".into() })
    }

    /// Drops the stamps of blobs stored longer ago than `protect_new`: they are no longer new.
    fn forget_old_recent(&self, st: &mut State) {
        st.recent.forget_older_than(Instant::now(), self.limits.protect_new);
    }

    /// Bytes of the blobs the policy tracks that a reservation may evict now: all but those
    /// pinned or being read (new blobs count: they yield to a write that needs their room); and
    /// of those, the bytes of blobs that are not new.
    fn evictable_bytes(&self, st: &mut State) -> (u64, u64) {
        self.forget_old_recent(st);
        let in_use: Vec<Digest> = self.in_use.blobs.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        let protected: HashSet<&Digest> = st.pinned.iter().chain(&in_use).collect();
        let protected_bytes: u64 = protected.iter().filter_map(|d| st.policy.size_of(d)).sum();
        let new_bytes: u64 =
            st.recent.stamps.keys().filter(|d| !protected.contains(d)).filter_map(|d| st.policy.size_of(d)).sum();
        let evictable = st.policy.bytes().saturating_sub(protected_bytes);
        (evictable, evictable.saturating_sub(new_bytes))
    }

    /// Takes victims out of the policy: first, in the policy's order, blobs neither pinned, being
    /// read nor new, worth `need` bytes; then, if those came to less than `must` bytes, new blobs
    /// neither pinned nor being read, the least recently stored first, until they come to `must`
    /// (or none is left). `must` is 0 for background eviction, which never takes a new blob.
    fn pick_victims(&self, st: &mut State, need: u64, must: u64) -> Victims {
        self.forget_old_recent(st);
        let State { policy, pinned, recent, .. } = st;
        let mut all =
            policy.victims(need, |d| pinned.contains(d) || recent.contains(d) || self.in_use.is_blob_in_use(d));
        let mut got: u64 = all.iter().map(|(_, s)| s).sum();
        let mut new = HashSet::new();
        if got < must {
            // Every other evictable blob is taken: protection of new blobs yields to the write,
            // oldest first, so that the quota keeps what was read last.
            for d in recent.oldest_first() {
                if got >= must {
                    break;
                }
                if pinned.contains(d) || self.in_use.is_blob_in_use(d) {
                    continue;
                }
                if let Some((d, size)) = policy.take(d) {
                    got += size;
                    new.insert(d);
                    all.push((d, size));
                }
            }
        }
        Victims { all, new }
    }

    /// New blobs were evicted: counted, and logged once a minute at most (a burst larger than the
    /// quota evicts some on every write).
    fn evicted_new(&self, n: u64) {
        let total = self.n_evicted_new.fetch_add(n, Ordering::Relaxed) + n;
        metrics::counter!(telemetry::EVICTED_NEW_BLOBS).increment(n);
        let now = Instant::now();
        let mut logged_at = self.new_evicted_logged_at.lock().unwrap_or_else(|p| p.into_inner());
        if logged_at.is_none_or(|at| now.duration_since(at) >= std::time::Duration::from_secs(60)) {
            *logged_at = Some(now);
            tracing::info!(
                n_blobs = n,
                n_evicted_new = total,
                protect_new = ?self.limits.protect_new,
                "evicted blobs stored within protect_new: nothing else could make room (the disk quota is smaller \
                 than what is read within protect_new)"
            );
        }
    }

    /// Evicts `victims` (already out of the policy): their entries and rows in one transaction,
    /// then their files. Victims the index refuses (pinned or made an upload meanwhile, perhaps
    /// by another process) go back, as pinned. Returns the blobs evicted.
    fn evict(&self, victims: Vec<(Digest, u64)>) -> Vec<Digest> {
        if victims.is_empty() {
            return Vec::new();
        }
        let digests: Vec<Digest> = victims.iter().map(|(d, _)| *d).collect();
        let (n_entries, evicted) = match self.index.evict_blobs(&digests) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot evict; blobs kept");
                let mut st = self.state();
                for (d, s) in victims {
                    st.policy.put(d, s);
                }
                return Vec::new();
            }
        };
        let evicted_set: HashSet<Digest> = evicted.iter().copied().collect();
        let mut freed = 0;
        for (d, size) in &victims {
            if !evicted_set.contains(d) {
                continue;
            }
            match self.disk.delete(d) {
                Ok(_) => freed += size,
                Err(e) => tracing::warn!(digest = %d, error = %e, "evicted blob's file could not be deleted"),
            }
        }
        {
            let mut st = self.state();
            st.used_bytes = st.used_bytes.saturating_sub(freed);
            for (d, _) in victims.iter().filter(|(d, _)| !evicted_set.contains(d)) {
                st.pinned.insert(*d);
            }
            for d in &evicted {
                st.recent.delete(d);
            }
        }
        self.n_evicted.fetch_add(evicted.len() as u64, Ordering::Relaxed);
        self.evicted_bytes.fetch_add(freed, Ordering::Relaxed);
        self.n_evicted_entries.fetch_add(n_entries, Ordering::Relaxed);
        metrics::counter!(telemetry::EVICTED_BLOBS).increment(evicted.len() as u64);
        metrics::counter!(telemetry::EVICTED_BYTES).increment(freed);
        tracing::debug!(n_blobs = evicted.len(), bytes = freed, n_entries, "evicted");
        if let Some(f) = &*self.on_evict.lock().unwrap_or_else(|p| p.into_inner()) {
            f(&evicted);
        }
        if n_entries > 0
            && let Err(e) = crate::generation::bump(&self.data_dir)
        {
            tracing::warn!(error = %e, "cannot record the eviction for other processes' memory tiers");
        }
        evicted
    }

    /// Background eviction: above the high watermark, evicts down to the low one (blocking).
    pub(crate) fn evict_to_watermark(&self) {
        let Some(quota) = self.limits.quota_bytes else { return };
        let high = (quota as f64 * self.limits.high_watermark) as u64;
        let low = (quota as f64 * self.limits.low_watermark) as u64;
        let victims = {
            let mut st = self.state();
            let total = st.used_bytes + st.reserved_bytes;
            if total <= high {
                return;
            }
            self.pick_victims(&mut st, total - low, 0)
        };
        self.evict(victims.all);
    }

    /// Evicts down to `max_bytes` whatever the quota (`prune --max-size`); with `dry_run`, only
    /// lists what would go. Blocking.
    pub(crate) fn evict_down_to(&self, max_bytes: u64, dry_run: bool) -> Result<Vec<(Digest, u64)>, IndexError> {
        let mut policy = EvictionPolicy::new(max_bytes);
        policy.restore(self.index.evictable_blobs()?);
        let pinned = self.index.pinned_digests()?;
        let used = self.index.present_bytes()?;
        if used <= max_bytes {
            return Ok(Vec::new());
        }
        let victims = policy.victims(used - max_bytes, |d| pinned.contains(d) || self.in_use.is_blob_in_use(d));
        if !dry_run {
            {
                let mut st = self.state();
                for (d, _) in &victims {
                    st.policy.delete(d);
                }
            }
            self.evict(victims.clone());
        }
        Ok(victims)
    }

    /// Records a blob just published: `reserved` bytes become `size` bytes used (unless the file
    /// was already there), and an evictable blob joins the policy as its newest member.
    pub(crate) fn stored(&self, digest: Digest, size: u64, was_there: bool, is_evictable: bool) {
        let mut st = self.state();
        if !was_there {
            st.used_bytes += size;
        }
        if self.limits.quota_bytes.is_some() {
            if !self.limits.protect_new.is_zero() {
                st.recent.put(digest, Instant::now());
            }
            if is_evictable {
                st.policy.put(digest, size);
            }
        }
    }

    /// Blobs read (hits), in batches from the access log.
    pub(crate) fn touched(&self, digests: impl IntoIterator<Item = Digest>) {
        if self.limits.quota_bytes.is_none() {
            return;
        }
        let mut st = self.state();
        for d in digests {
            st.policy.touch(&d);
        }
    }

    /// Blobs deleted for another reason (namespace deletion, cleanup, pruning, repair).
    pub(crate) fn deleted(&self, blobs: &[(Digest, u64)]) {
        let mut st = self.state();
        for (d, size) in blobs {
            st.used_bytes = st.used_bytes.saturating_sub(*size);
            st.policy.delete(d);
            st.pinned.remove(d);
            st.recent.delete(d);
        }
    }

    /// Reads the bytes in use and the pins again from the index (other processes write too), and
    /// adds blobs this process has not seen to the policy. Blocking.
    pub(crate) fn resync(&self) -> Result<(), IndexError> {
        if self.limits.quota_bytes.is_none() {
            return Ok(());
        }
        let used = self.index.present_bytes()? + self.index.upload_bytes()?;
        let pinned = self.index.pinned_digests()?;
        let evictable = self.index.evictable_blobs()?;
        let mut st = self.state();
        st.used_bytes = used;
        st.pinned = pinned;
        // Blobs another process deleted stay in the policy until picked; the index then refuses
        // to evict them and they leave it.
        for (d, size, _) in evictable {
            if !st.policy.contains(&d) {
                st.policy.put(d, size);
            }
        }
        Ok(())
    }

    /// Reads the pinned blobs again from the index, after a pin changed. Blocking.
    ///
    /// A blob the index refused to evict because it was pinned left the policy for the pinned
    /// set (`evict`); once unpinned it must come back to the policy, or this process would never
    /// evict it again and refuse reservations that evicting it would make room for.
    pub(crate) fn reload_pins(&self) -> Result<(), IndexError> {
        if self.limits.quota_bytes.is_none() {
            return Ok(());
        }
        let pinned = self.index.pinned_digests()?;
        let unpinned: HashSet<Digest> = {
            let mut st = self.state();
            let unpinned = st.pinned.difference(&pinned).copied().collect();
            st.pinned = pinned;
            unpinned
        };
        if unpinned.is_empty() {
            return Ok(());
        }
        // Only a pin removed can have left a blob out of the policy: read its size then.
        let evictable = self.index.evictable_blobs()?;
        let mut st = self.state();
        for (d, size, _) in evictable {
            if unpinned.contains(&d) && !st.policy.contains(&d) {
                st.policy.put(d, size);
            }
        }
        Ok(())
    }

    /// A write was served pass-through; `reason` says why.
    pub(crate) fn passed_through(&self, reason: &str) {
        self.n_pass_through.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(telemetry::PASS_THROUGH).increment(1);
        *self.last_pass_through.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
    }

    pub(crate) fn stats(&self) -> QuotaStats {
        let st = self.state();
        QuotaStats {
            quota_bytes: self.limits.quota_bytes,
            high_watermark: self.limits.high_watermark,
            low_watermark: self.limits.low_watermark,
            used_bytes: st.used_bytes,
            reserved_bytes: st.reserved_bytes,
            n_evicted: self.n_evicted.load(Ordering::Relaxed),
            evicted_bytes: self.evicted_bytes.load(Ordering::Relaxed),
            n_evicted_entries: self.n_evicted_entries.load(Ordering::Relaxed),
            n_evicted_new: self.n_evicted_new.load(Ordering::Relaxed),
            n_pass_through: self.n_pass_through.load(Ordering::Relaxed),
            last_pass_through: self.last_pass_through.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// What [`DiskQuota::pick_victims`] took out of the policy.
#[derive(Default)]
struct Victims {
    /// Every victim with its size, in the order taken.
    all: Vec<(Digest, u64)>,
    /// Those stored within `protect_new`.
    new: HashSet<Digest>,
}

/// Bytes reserved for one write. Dropping it releases what was not used.
pub(crate) struct Reservation {
    quota: Arc<DiskQuota>,
    bytes: u64,
    /// Made by [`DiskQuota::adopt`]: released unused, the bytes are used again.
    is_adopted: bool,
}

impl Reservation {
    /// Reserves up to `total` bytes in all (more room for a body of unknown length). Blocking.
    pub(crate) fn grow_to(&mut self, total: u64) -> Result<(), NoRoom> {
        if total > self.bytes {
            self.quota.make_room(total - self.bytes)?;
            self.bytes = total;
        }
        Ok(())
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The write was published as `digest` (`was_there`: the file already existed): the bytes
    /// move from reserved to used.
    pub(crate) fn stored(mut self, digest: Digest, size: u64, was_there: bool, is_evictable: bool) {
        let bytes = std::mem::take(&mut self.bytes);
        let quota = Arc::clone(&self.quota);
        // Add to used before releasing the reservation, so the room is never counted free twice.
        quota.stored(digest, size, was_there, is_evictable);
        quota.state().reserved_bytes -= bytes;
    }

    /// The bytes written were kept on disk outside the blobs (a multipart upload's part): they
    /// move from reserved to used, never evictable, until [`DiskQuota::released`].
    pub(crate) fn kept(mut self, size: u64) {
        let bytes = std::mem::take(&mut self.bytes);
        let mut st = self.quota.state();
        st.used_bytes += size;
        st.reserved_bytes -= bytes;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let mut st = self.quota.state();
            st.reserved_bytes -= self.bytes;
            if self.is_adopted {
                st.used_bytes += self.bytes;
            }
        }
    }
}

/// Reads under way, by blob and by namespace: eviction skips those blobs, and the pruner does not
/// delete a namespace being read.
#[derive(Debug, Default)]
pub(crate) struct InUse {
    blobs: Mutex<HashMap<Digest, u32>>,
    namespaces: Mutex<HashMap<i64, u32>>,
}

impl InUse {
    pub(crate) fn is_blob_in_use(&self, digest: &Digest) -> bool {
        self.blobs.lock().unwrap_or_else(|p| p.into_inner()).contains_key(digest)
    }

    pub(crate) fn is_namespace_in_use(&self, ns_id: i64) -> bool {
        self.namespaces.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&ns_id)
    }
}

/// Held by a [`crate::Read`] until its body is dropped: marks its blob and namespace in use.
pub(crate) struct Hold {
    quota: Arc<DiskQuota>,
    digest: Option<Digest>,
    ns_id: Option<i64>,
}

impl Hold {
    pub(crate) fn new(quota: &Arc<DiskQuota>, digest: Option<Digest>, ns_id: Option<i64>) -> Hold {
        if let Some(d) = digest {
            *quota.in_use.blobs.lock().unwrap_or_else(|p| p.into_inner()).entry(d).or_default() += 1;
        }
        if let Some(id) = ns_id {
            *quota.in_use.namespaces.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default() += 1;
        }
        Hold { quota: Arc::clone(quota), digest, ns_id }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        fn release<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, u32>>, k: K) {
            let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = map.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&k);
                }
            }
        }
        if let Some(d) = self.digest {
            release(&self.quota.in_use.blobs, d);
        }
        if let Some(id) = self.ns_id {
            release(&self.quota.in_use.namespaces, id);
        }
    }
}

#[cfg(test)]
mod model_tests;

#[cfg(test)]
mod tests {
    //! Named cases of what protects a blob, each on a real index and disk tier, with tokio's clock
    //! paused so that every blob stays new (within `protect_new`) until a test moves the clock.

    use std::time::Duration;

    use bytes::Bytes;
    use tiercache_core::{NamespaceName, NamespaceOptions};
    use tiercache_index::{NewEntry, Validators};

    use super::*;

    const QUOTA: u64 = 1000;
    /// Every blob here is this big: the quota holds ten.
    const SIZE: u64 = 100;

    struct Fixture {
        _dir: tempfile::TempDir,
        disk: DiskTier,
        index: Arc<Index>,
        ns_id: i64,
        quota: Arc<DiskQuota>,
    }

    /// A quota of [`QUOTA`] bytes over a fresh data directory with one namespace bound to a
    /// source, protecting new blobs for 10 s.
    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTier::open(dir.path()).unwrap();
        let index = Arc::new(Index::open(&dir.path().join("index.db")).unwrap().0);
        let name = NamespaceName::new("web").unwrap();
        let (ns, _) = index.put_namespace(&name, Some("http://127.0.0.1:9/"), &NamespaceOptions::default(), 0).unwrap();
        let limits = DiskLimits {
            quota_bytes: Some(QUOTA),
            high_watermark: 0.95,
            low_watermark: 0.90,
            protect_new: Duration::from_secs(10),
        };
        let quota = Arc::new(DiskQuota::open(limits, Arc::clone(&index), disk.clone(), dir.path().to_owned()).unwrap());
        Fixture { _dir: dir, disk, index, ns_id: ns.id, quota }
    }

    /// Blob `i`: [`SIZE`] bytes of its own.
    fn blob(i: u32) -> Vec<u8> {
        let mut data = vec![0; SIZE as usize];
        data[..4].copy_from_slice(&i.to_le_bytes());
        data
    }

    impl Fixture {
        /// Stores blob `i` under entry `k<i>` as a fetch does (an upload with `is_upload`):
        /// reserve, temp file, pending row, rename, row and entry, reservation to used. `Err` if
        /// the reservation found no room (the read would be passed through).
        fn store(&self, i: u32, is_upload: bool) -> Result<(), NoRoom> {
            let data = blob(i);
            let reservation = self.quota.reserve(SIZE)?;
            let mut temp = self.disk.create_temp().unwrap();
            temp.write(Bytes::from(data)).unwrap();
            let finished = temp.finish().unwrap();
            let digest = finished.digest;
            self.index.mark_pending(&digest, SIZE, 1).unwrap();
            let was_there = finished.publish().unwrap();
            let entry = NewEntry {
                ns_id: self.ns_id,
                key: format!("k{i}"),
                content_type: None,
                content_encoding: None,
                validators: Validators::default(),
                ..NewEntry::default()
            };
            self.index.commit_blob(&digest, SIZE, (is_upload, is_upload), None, Some(&entry), 1).unwrap();
            reservation.stored(digest, SIZE, was_there, !is_upload);
            Ok(())
        }

        fn fetch(&self, i: u32) {
            self.store(i, false).unwrap_or_else(|no| panic!("blob {i} was passed through: {}", no.reason));
            let q = self.quota.stats();
            assert!(q.used_bytes + q.reserved_bytes <= QUOTA, "{q:?}");
        }

        /// Which of blobs `from..=to` are on disk.
        fn kept(&self, blobs: std::ops::RangeInclusive<u32>) -> Vec<u32> {
            blobs.filter(|&i| self.disk.contains(&Digest::of(&blob(i)))).collect()
        }

        fn hold(&self, i: u32) -> Hold {
            Hold::new(&self.quota, Some(Digest::of(&blob(i))), None)
        }
    }

    #[test]
    fn recent_lists_new_blobs_oldest_first_and_stays_small() {
        let d = |i: u32| Digest::of(&blob(i));
        let now = Instant::now();
        let mut recent = Recent::default();
        for i in 0..3 {
            recent.put(d(i), now);
        }
        // Stored again: it is now the newest.
        recent.put(d(0), now);
        assert_eq!(recent.oldest_first().copied().collect::<Vec<_>>(), [d(1), d(2), d(0)]);
        // Blobs evicted behind one still new cannot leave by age first; they do not pile up.
        for i in 3..10_000 {
            recent.put(d(i), now);
            recent.delete(&d(i));
        }
        assert!(recent.order.len() <= 2 * 3 + 64 + 1, "{} items for 3 new blobs", recent.order.len());
        assert_eq!(recent.oldest_first().copied().collect::<Vec<_>>(), [d(1), d(2), d(0)]);
        recent.forget_older_than(now + std::time::Duration::from_secs(10), std::time::Duration::from_secs(10));
        assert_eq!((recent.oldest_first().count(), recent.order.len()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_new_blobs_larger_than_the_quota_keeps_the_newest() {
        let f = fixture();
        for i in 1..=30 {
            f.fetch(i);
            // The blob just stored stays: it is the newest.
            assert_eq!(f.kept(i..=i), [i]);
        }
        assert_eq!(f.kept(1..=30), (21..=30).collect::<Vec<_>>(), "the ten read last");
        let q = f.quota.stats();
        assert_eq!((q.n_pass_through, q.n_evicted, q.n_evicted_new, q.used_bytes), (0, 20, 20, QUOTA), "{q:?}");
        // Above the high watermark, but all new: background eviction takes none of them, only a
        // write that needs their room does.
        f.quota.evict_to_watermark();
        assert_eq!(f.quota.stats().n_evicted, 20);

        // Once they are no longer new, they go first, in the policy's order, and further down
        // (to the low watermark): the new blobs stay.
        tokio::time::advance(Duration::from_secs(10)).await;
        for i in 31..=35 {
            f.fetch(i);
        }
        assert_eq!(f.kept(31..=35), [31, 32, 33, 34, 35]);
        assert_eq!(f.kept(21..=30).len(), 4, "{:?}", f.kept(21..=30));
        assert_eq!(f.quota.stats().n_evicted_new, 20, "only blobs that were not new went");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_blob_being_read_is_never_evicted() {
        let f = fixture();
        for i in 1..=10 {
            f.fetch(i);
        }
        // The two oldest are being read: the next write takes the oldest blob not being read.
        let (hold1, hold2) = (f.hold(1), f.hold(2));
        f.fetch(11);
        assert_eq!(f.kept(1..=11), [1, 2, 4, 5, 6, 7, 8, 9, 10, 11]);

        // Everything on disk is being read: the next blob finds no room, and nothing goes.
        let holds: Vec<Hold> = [4, 5, 6, 7, 8, 9, 10, 11].into_iter().map(|i| f.hold(i)).collect();
        let no = f.store(12, false).unwrap_err();
        assert!(no.reason.contains("being read"), "{}", no.reason);
        assert_eq!(f.kept(1..=12), [1, 2, 4, 5, 6, 7, 8, 9, 10, 11]);

        // Once a read ends, its blob may go (the oldest of those no longer read).
        drop(holds);
        drop(hold2);
        f.fetch(12);
        assert_eq!(f.kept(1..=12), [1, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        drop(hold1);
        f.fetch(13);
        assert_eq!(f.kept(1..=13), [4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
    }

    #[tokio::test(start_paused = true)]
    async fn pinned_and_uploaded_blobs_are_never_evicted() {
        let f = fixture();
        f.store(1, true).unwrap();
        f.fetch(2);
        f.fetch(3);
        f.index.put_pin(f.ns_id, "k2").unwrap();
        f.quota.reload_pins().unwrap();
        for i in 4..=40 {
            f.fetch(i);
            if i == 20 {
                // No longer new: still never evicted.
                tokio::time::advance(Duration::from_secs(10)).await;
            }
        }
        assert_eq!(f.kept(1..=3), [1, 2], "the upload and the pinned blob stay, the other goes");
        assert_eq!(f.kept(4..=40), (33..=40).collect::<Vec<_>>());
        // With only the upload, the pinned blob and blobs being read on disk, there is no room.
        let holds: Vec<Hold> = (33..=40).map(|i| f.hold(i)).collect();
        let no = f.store(41, false).unwrap_err();
        assert!(no.reason.contains("pinned, uploaded or being read"), "{}", no.reason);
        assert_eq!(f.kept(1..=41).len(), 10);
        assert_eq!(f.quota.stats().n_pass_through, 0, "counted by the caller that passes through");
        drop(holds);
    }
}
