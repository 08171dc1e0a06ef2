//! The disk quota (layer 1): bytes reserved before a write begins, eviction when a reservation does not fit
//! (and in the background above the high watermark), and what protects a blob from eviction.
//!
//! Invariant: `used + reserved ≤ quota` whenever this process reserves; a writer holds a
//! [`Reservation`] covering every byte it has written to a temp file, so concurrent writers cannot
//! overshoot the quota together. A reservation that cannot fit even after eviction fails with
//! [`NoRoom`], and the caller serves the blob without storing it (pass-through).
//!
//! Protected from eviction: uploads (never in the policy at all), blobs named by pinned entries,
//! blobs being read, and blobs stored within `protect_new`. The policy itself never picks the
//! newest blob first.
//!
//! The order of eviction is [`EvictionPolicy`]'s; this module knows nothing of HTTP or sources.
//! Other processes' writes are seen at [`DiskQuota::resync`] (each pruner pass), when the bytes in
//! use are read again from the index.

use std::collections::{HashMap, HashSet};
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
    n_pass_through: AtomicU64,
    last_pass_through: Mutex<Option<String>>,
}

struct State {
    used_bytes: u64,
    reserved_bytes: u64,
    policy: EvictionPolicy<Digest>,
    pinned: HashSet<Digest>,
    /// When each recently stored blob was stored (pruned as they age past `protect_new`).
    recent: HashMap<Digest, Instant>,
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
            (index.present_bytes()?, index.pinned_digests()?)
        } else {
            (0, HashSet::new())
        };
        Ok(DiskQuota {
            limits,
            index,
            disk,
            data_dir,
            state: Mutex::new(State { used_bytes, reserved_bytes: 0, policy, pinned, recent: HashMap::new() }),
            in_use: InUse::default(),
            on_evict: Mutex::new(None),
            n_evicted: AtomicU64::new(0),
            evicted_bytes: AtomicU64::new(0),
            n_evicted_entries: AtomicU64::new(0),
            n_pass_through: AtomicU64::new(0),
            last_pass_through: Mutex::new(None),
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
        Ok(Reservation { quota: Arc::clone(self), bytes: n })
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
                let evictable = self.evictable_bytes(&mut st);
                let victims = if evictable >= hard { self.pick_victims(&mut st, soft) } else { Vec::new() };
                let got: u64 = victims.iter().map(|(_, s)| s).sum();
                if got < hard {
                    // Only if a blob became protected between the count and the pick.
                    for (d, s) in victims {
                        st.policy.put(d, s);
                    }
                    return Err(NoRoom {
                        reason: format!(
                            "the disk quota ({quota} bytes) is full of blobs that cannot be evicted now (pinned, \
                             uploaded, being read or just stored): {n} bytes needed, {evictable} evictable"
                        ),
                    });
                }
                victims
            };
            self.evict(victims);
        }
        Err(NoRoom { reason: "the disk quota stayed full while other writes took the room freed".into() })
    }

    /// Drops the stamps of blobs stored longer ago than `protect_new`: they are no longer new.
    fn forget_old_recent(&self, st: &mut State) {
        let now = Instant::now();
        let protect_new = self.limits.protect_new;
        st.recent.retain(|_, at| now.duration_since(*at) < protect_new);
    }

    /// Bytes of the blobs the policy tracks that are not protected now.
    fn evictable_bytes(&self, st: &mut State) -> u64 {
        self.forget_old_recent(st);
        let in_use: Vec<Digest> = self.in_use.blobs.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect();
        let protected: HashSet<&Digest> = st.pinned.iter().chain(st.recent.keys()).chain(&in_use).collect();
        let protected_bytes: u64 = protected.into_iter().filter_map(|d| st.policy.size_of(d)).sum();
        st.policy.bytes().saturating_sub(protected_bytes)
    }

    /// Takes victims worth `need` bytes out of the policy, skipping protected blobs.
    fn pick_victims(&self, st: &mut State, need: u64) -> Vec<(Digest, u64)> {
        self.forget_old_recent(st);
        let State { policy, pinned, recent, .. } = st;
        policy.victims(need, |d| pinned.contains(d) || recent.contains_key(d) || self.in_use.is_blob_in_use(d))
    }

    /// Evicts `victims` (already out of the policy): their entries and rows in one transaction,
    /// then their files. Victims the index refuses (pinned or made an upload meanwhile, perhaps
    /// by another process) go back, as pinned.
    fn evict(&self, victims: Vec<(Digest, u64)>) {
        if victims.is_empty() {
            return;
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
                return;
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
            self.pick_victims(&mut st, total - low)
        };
        self.evict(victims);
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
            st.recent.insert(digest, Instant::now());
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
        }
    }

    /// Reads the bytes in use and the pins again from the index (other processes write too), and
    /// adds blobs this process has not seen to the policy. Blocking.
    pub(crate) fn resync(&self) -> Result<(), IndexError> {
        if self.limits.quota_bytes.is_none() {
            return Ok(());
        }
        let used = self.index.present_bytes()?;
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
            used_bytes: st.used_bytes,
            reserved_bytes: st.reserved_bytes,
            n_evicted: self.n_evicted.load(Ordering::Relaxed),
            evicted_bytes: self.evicted_bytes.load(Ordering::Relaxed),
            n_evicted_entries: self.n_evicted_entries.load(Ordering::Relaxed),
            n_pass_through: self.n_pass_through.load(Ordering::Relaxed),
            last_pass_through: self.last_pass_through.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }
}

/// Bytes reserved for one write. Dropping it releases what was not used.
pub(crate) struct Reservation {
    quota: Arc<DiskQuota>,
    bytes: u64,
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
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.quota.state().reserved_bytes -= self.bytes;
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
