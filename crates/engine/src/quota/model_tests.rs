//! A model-based property test of the disk quota: random sequences of reservations, writes, reads,
//! holds, deletions, pins, clock steps, background eviction and reopenings, run against a real
//! [`Index`] and [`DiskTier`] in a temporary directory, and compared after every step with a plain
//! model (`BTreeMap`s of what is stored, named, pinned, held and new).
//!
//! It checks what `quota.rs` promises: `used + reserved ≤ quota`; uploads, blobs named by pinned
//! entries and blobs being read are never evicted; a blob stored within `protect_new` (new) is
//! evicted only by a reservation, only when no other unprotected blob remains, the least recently
//! stored new blob first, and only as many as the reservation needs (never by background
//! eviction); a reservation fails only when the unprotected blobs, new ones included, cannot make
//! the room; the bytes accounted are those of the blobs on disk, nothing stays reserved once every
//! reservation is gone, every blob the model holds is on disk, and every file on disk is one the
//! model holds.
//!
//! It does not check the order in which blobs that are not new are evicted (the policy's own tests
//! do), other processes sharing the data directory, or the engine's read and write paths around
//! the quota.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use tiercache_core::{Digest, Key, NamespaceName, NamespaceOptions};
use tiercache_index::{Index, NewEntry, Validators};
use tiercache_tiers::DiskTier;
use tokio::time::Instant;

use super::{DiskQuota, Hold, NoRoom, Reservation};
use crate::config::DiskLimits;

const QUOTA: u64 = 1000;
/// `protect_new`, in the cases that protect new blobs; the others have none, so that more blobs
/// may be evicted.
const PROTECT_NEW: Duration = Duration::from_secs(10);
/// The blobs a case may store, by index: blob `i` is `SIZES[i]` bytes of value `i + 1`, so each
/// has its own digest, and storing one twice is storing the same digest again.
const SIZES: [u64; 12] = [0, 1, 40, 90, 130, 200, 260, 333, 410, 500, 640, 800];
/// The entry keys of the one namespace; single characters after a common letter, so that a
/// cleanup by prefix removes exactly one key.
const KEYS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];
/// What may be pinned: one key, or (`""`) the whole namespace.
const PIN_KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", ""];

#[derive(Debug, Clone)]
enum Op {
    /// Reserve this many bytes and keep the reservation open.
    Reserve(u64),
    /// Write blob `blob` and commit it under entry `key` (an upload if `is_upload`), with the open
    /// reservation `slot` (grown if it is too small) or, without one, a reservation of its own.
    Write { blob: usize, key: usize, is_upload: bool, slot: Option<usize> },
    /// Drop open reservation `slot` without writing anything.
    Drop(usize),
    /// A hit on blob `blob`, if it is stored.
    Read(usize),
    /// Start reading blob `blob` (stored or not) and keep reading.
    Hold(usize),
    /// Stop read `hold`.
    Release(usize),
    /// Delete the entry `KEYS[key]` and the blobs left unreferenced (`cleanup` by prefix).
    Delete(usize),
    /// Pin `PIN_KEYS[key]`.
    Pin(usize),
    /// Unpin `PIN_KEYS[key]`.
    Unpin(usize),
    /// Let this many seconds pass.
    Advance(u64),
    /// A background eviction pass (above the high watermark, down to the low one).
    EvictToWatermark,
    /// Restart: reservations and reads end, the index and the quota are opened again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![4 => 0..=QUOTA / 4, 2 => QUOTA / 4..=QUOTA, 1 => QUOTA + 1..=QUOTA * 13 / 10].prop_map(Op::Reserve),
        8 => (0..SIZES.len(), 0..KEYS.len(), prop::bool::weighted(0.15), prop::option::of(0..4usize))
            .prop_map(|(blob, key, is_upload, slot)| Op::Write { blob, key, is_upload, slot }),
        2 => (0..4usize).prop_map(Op::Drop),
        2 => (0..SIZES.len()).prop_map(Op::Read),
        2 => (0..SIZES.len()).prop_map(Op::Hold),
        2 => (0..4usize).prop_map(Op::Release),
        2 => (0..KEYS.len()).prop_map(Op::Delete),
        2 => (0..PIN_KEYS.len()).prop_map(Op::Pin),
        2 => (0..PIN_KEYS.len()).prop_map(Op::Unpin),
        3 => (1..=20u64).prop_map(Op::Advance),
        1 => Just(Op::EvictToWatermark),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn quota_matches_model(
        protects_new in any::<bool>(),
        ops in prop::collection::vec(op(), 10..=40),
    ) {
        run(if protects_new { PROTECT_NEW } else { Duration::ZERO }, &ops)?;
    }
}

/// A case `quota_matches_model` found, reduced by hand: a blob named by an entry pinned after the
/// quota last read its pins is picked for eviction, which the index refuses. The quota then holds
/// it as pinned and out of its policy; once it is unpinned (and the pins read again) it must be
/// back in the policy, or this process would never evict it again until the next `resync` (a
/// pruner pass) or restart, and a reservation that evicting it would make room for would fail.
#[test]
fn an_unpinned_blob_may_be_evicted_again() {
    let ops = [
        Op::Pin(2),
        Op::Write { blob: 10, key: 2, is_upload: false, slot: None },
        Op::Reserve(360),
        Op::Reserve(1),
        Op::Unpin(2),
        Op::Reserve(1),
    ];
    run(Duration::ZERO, &ops).unwrap();
}

/// A case `quota_matches_model` found: blob 0 (empty) is stored under key 0 in place of an
/// upload, then left unreferenced when key 0 names blob 8 instead, and is no longer new. A
/// reservation then needs room that only the new blob 8 can make: evicting the empty orphan
/// instead would free nothing, so keeping it is right, and blob 8 yields.
#[test]
fn a_new_blob_yields_when_the_only_older_blob_is_empty() {
    let ops = [
        Op::Write { blob: 5, key: 0, is_upload: true, slot: None },
        Op::Write { blob: 0, key: 0, is_upload: false, slot: None },
        Op::Advance(10),
        Op::Write { blob: 8, key: 0, is_upload: false, slot: None },
        Op::Reserve(391),
    ];
    run(PROTECT_NEW, &ops).unwrap();
}

/// New blobs above the high watermark: background eviction leaves them, a write that needs their
/// room takes the oldest of them (not one being read), and only as many as it needs.
#[test]
fn new_blobs_yield_only_to_a_write_and_oldest_first() {
    let ops = [
        Op::Write { blob: 7, key: 0, is_upload: false, slot: None },
        Op::Write { blob: 5, key: 1, is_upload: false, slot: None },
        Op::Write { blob: 8, key: 2, is_upload: false, slot: None },
        Op::Write { blob: 2, key: 3, is_upload: false, slot: None },
        Op::EvictToWatermark,
        Op::Hold(7),
        Op::Write { blob: 3, key: 4, is_upload: false, slot: None },
        Op::Advance(10),
        Op::Write { blob: 4, key: 1, is_upload: false, slot: None },
        Op::Write { blob: 6, key: 0, is_upload: false, slot: None },
    ];
    run(PROTECT_NEW, &ops).unwrap();
}

/// Runs `ops` on a fresh data directory, checking the model after each, then ends every
/// reservation and read and checks that nothing leaked, before and after a reopen.
fn run(protect_new: Duration, ops: &[Op]) -> Result<(), TestCaseError> {
    // The quota reads tokio's clock; paused, it moves only when a step advances it.
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let mut world = World::new(protect_new);
        for (i, op) in ops.iter().enumerate() {
            world.step(op).await.map_err(|e| TestCaseError::fail(format!("step {i} ({op:?}): {e}")))?;
        }
        world.reservations.clear();
        world.model.reserved = 0;
        world.holds.clear();
        world.check().map_err(|e| TestCaseError::fail(format!("after the last step: {e}")))?;
        world.step(&Op::Reopen).await.map_err(|e| TestCaseError::fail(format!("at the final reopen: {e}")))
    })
}

/// What the quota should account for, kept by hand.
#[derive(Debug, Default)]
struct Model {
    /// Blobs on disk, by index, and whether each is an upload (uploads are retained too).
    blobs: BTreeMap<usize, bool>,
    /// Entries, by key index: the blob each names.
    entries: BTreeMap<usize, usize>,
    /// Pins, by index into [`PIN_KEYS`].
    pins: BTreeSet<usize>,
    /// When each blob was last stored since the quota was opened, and that store's number (the
    /// order of stores made at one instant of the paused clock).
    stored_at: BTreeMap<usize, (Instant, u64)>,
    /// Stores since the test began.
    n_stores: u64,
    /// Blobs the quota may hold as pinned: every blob pinned since its pins were last read from
    /// the index. The quota's set is refreshed only then (and when the index refuses to evict a
    /// blob), so it may still hold a blob whose entry has moved on to another blob.
    maybe_pinned: BTreeSet<usize>,
    /// Bytes of all open reservations.
    reserved: u64,
    /// Bytes evicted since the quota was opened.
    evicted_bytes: u64,
}

impl Model {
    fn used(&self) -> u64 {
        self.blobs.keys().map(|&b| SIZES[b]).sum()
    }

    /// The quota read its pins from the index.
    fn reload_pins(&mut self) {
        self.maybe_pinned = self.pinned();
    }

    /// Blobs named by a pinned entry now.
    fn pinned(&self) -> BTreeSet<usize> {
        let whole = self.pins.contains(&(PIN_KEYS.len() - 1));
        self.entries.iter().filter(|(k, _)| whole || self.pins.contains(k)).map(|(_, &b)| b).collect()
    }
}

/// What a step starts from: the blobs eviction must not take, and the new blobs with their store
/// numbers.
struct Before {
    protected: BTreeMap<usize, &'static str>,
    new: BTreeMap<usize, u64>,
}

/// The real quota over a real index and disk tier, with the model beside it.
struct World {
    dir: tempfile::TempDir,
    disk: DiskTier,
    index: Arc<Index>,
    ns_id: i64,
    quota: Arc<DiskQuota>,
    /// What the quota's eviction hook reported, not yet compared with the model.
    evicted: Arc<Mutex<Vec<Digest>>>,
    /// Open reservations, each with the bytes the model says it holds.
    reservations: Vec<(u64, Reservation)>,
    /// Reads under way, by blob.
    holds: Vec<(usize, Hold)>,
    digests: Vec<Digest>,
    /// The index's clock, in ms: one step per operation.
    now_ms: i64,
    protect_new: Duration,
    model: Model,
}

impl World {
    fn new(protect_new: Duration) -> World {
        let dir = tempfile::tempdir().unwrap();
        let disk = DiskTier::open(dir.path()).unwrap();
        let (index, _) = Index::open(&dir.path().join("index.db")).unwrap();
        let index = Arc::new(index);
        let name = NamespaceName::new("model").unwrap();
        // A namespace with a source: its blobs are not the only copies, so they may be evicted.
        let (ns, _) = index.put_namespace(&name, Some("http://127.0.0.1:9/"), &NamespaceOptions::default(), 0).unwrap();
        let evicted = Arc::new(Mutex::new(Vec::new()));
        let quota = open_quota(&dir, &disk, &index, &evicted, protect_new);
        let digests = (0..SIZES.len()).map(|b| Digest::of(&blob_bytes(b))).collect();
        World {
            dir,
            disk,
            index,
            ns_id: ns.id,
            quota,
            evicted,
            reservations: Vec::new(),
            holds: Vec::new(),
            digests,
            now_ms: 1,
            protect_new,
            model: Model::default(),
        }
    }

    fn blob_of(&self, digest: &Digest) -> usize {
        self.digests.iter().position(|d| d == digest).expect("a digest of the blob table")
    }

    /// Blobs eviction must not take now, each with why. New blobs are not among them: they are
    /// evicted last ([`World::new_blobs`]).
    fn protected(&self) -> BTreeMap<usize, &'static str> {
        let mut protected = BTreeMap::new();
        for (&b, _) in self.model.blobs.iter().filter(|(_, is_upload)| **is_upload) {
            protected.insert(b, "an upload");
        }
        for b in self.model.pinned() {
            protected.insert(b, "pinned");
        }
        for (b, _) in &self.holds {
            protected.insert(*b, "being read");
        }
        protected
    }

    /// The blobs stored within `protect_new`, each with its store's number.
    fn new_blobs(&self) -> BTreeMap<usize, u64> {
        let now = Instant::now();
        let is_new = |at: Instant| now.duration_since(at) < self.protect_new;
        self.model.stored_at.iter().filter(|(_, (at, _))| is_new(*at)).map(|(&b, &(_, n))| (b, n)).collect()
    }

    /// The bytes a reservation of `n` more bytes misses now (0 if it fits).
    fn missing(&self, n: u64) -> u64 {
        (self.model.used() + self.model.reserved + n).saturating_sub(QUOTA)
    }

    async fn step(&mut self, op: &Op) -> Result<(), String> {
        self.now_ms += 1;
        let pinned = self.model.pinned();
        self.model.maybe_pinned.extend(pinned);
        let protected = self.protected();
        let before = Before { protected, new: self.new_blobs() };
        let mut missing = None;
        match *op {
            Op::Reserve(n) => {
                missing = Some(self.missing(n));
                match self.quota.reserve(n) {
                    Ok(r) => {
                        self.model.reserved += n;
                        self.reservations.push((n, r));
                    }
                    Err(no) => self.no_room_is_justified(n, &before.protected, &no)?,
                }
            }
            Op::Write { blob, key, is_upload, slot } => {
                self.write(blob, key, is_upload, slot, &before, &mut missing)?
            }
            Op::Drop(slot) => {
                if !self.reservations.is_empty() {
                    let (n, _) = self.reservations.remove(slot % self.reservations.len());
                    self.model.reserved -= n;
                }
            }
            Op::Read(blob) => {
                let digest = self.digests[blob];
                let is_stored = self.disk.open_blob(&digest).unwrap().is_some();
                if is_stored != self.model.blobs.contains_key(&blob) {
                    return Err(format!("blob {blob} is stored: {is_stored}; the model says otherwise"));
                }
                if is_stored {
                    self.quota.touched([digest]);
                }
            }
            Op::Hold(blob) => self.holds.push((blob, Hold::new(&self.quota, Some(self.digests[blob]), None))),
            Op::Release(hold) => {
                if !self.holds.is_empty() {
                    self.holds.remove(hold % self.holds.len());
                }
            }
            Op::Delete(key) => self.delete(key)?,
            Op::Pin(key) => {
                self.index.put_pin(self.ns_id, PIN_KEYS[key]).unwrap();
                self.quota.reload_pins().unwrap();
                self.model.pins.insert(key);
                self.model.reload_pins();
            }
            Op::Unpin(key) => {
                self.index.delete_pin(self.ns_id, PIN_KEYS[key]).unwrap();
                self.quota.reload_pins().unwrap();
                self.model.pins.remove(&key);
                self.model.reload_pins();
            }
            Op::Advance(secs) => tokio::time::advance(Duration::from_secs(secs)).await,
            Op::EvictToWatermark => self.quota.evict_to_watermark(),
            Op::Reopen => self.reopen()?,
        }
        self.take_evictions(&before, missing)?;
        self.check()
    }

    /// Writes blob `blob` and commits it as the engine's put protocol does (reserve, temp file,
    /// pending row, rename, blob row with its entry, reservation to used). `missing` is set to
    /// what its reservation lacked while evictions it made are not yet compared with the model.
    fn write(
        &mut self,
        blob: usize,
        key: usize,
        is_upload: bool,
        slot: Option<usize>,
        before: &Before,
        missing: &mut Option<u64>,
    ) -> Result<(), String> {
        let (size, digest) = (SIZES[blob], self.digests[blob]);
        let protected = &before.protected;
        let held = match slot {
            Some(s) if !self.reservations.is_empty() => Some(self.reservations.remove(s % self.reservations.len())),
            _ => None,
        };
        *missing = Some(self.missing(match &held {
            Some((reserved, _)) => size.saturating_sub(*reserved),
            None => size,
        }));
        let (mut reserved, mut reservation) = match held {
            Some(held) => held,
            None => match self.quota.reserve(size) {
                Ok(r) => {
                    self.model.reserved += size;
                    (size, r)
                }
                Err(no) => return self.no_room_is_justified(size, protected, &no),
            },
        };
        if size > reserved {
            match reservation.grow_to(size) {
                Ok(()) => {
                    self.model.reserved += size - reserved;
                    reserved = size;
                }
                Err(no) => {
                    self.no_room_is_justified(size - reserved, protected, &no)?;
                    // Served pass-through: the reservation goes unused.
                    drop(reservation);
                    self.model.reserved -= reserved;
                    return Ok(());
                }
            }
        }
        if reservation.bytes() != reserved {
            return Err(format!("the reservation holds {} bytes, the model {reserved}", reservation.bytes()));
        }
        // Eviction for this write happened above; the blob it writes may have been a victim.
        self.take_evictions(before, *missing)?;
        *missing = None;

        let mut temp = self.disk.create_temp().unwrap();
        temp.write(Bytes::from(blob_bytes(blob))).unwrap();
        let finished = temp.finish().unwrap();
        assert_eq!((finished.digest, finished.size_bytes), (digest, size));
        self.index.mark_pending(&digest, size, self.now_ms).unwrap();
        let was_there = finished.publish().unwrap();
        if was_there != self.model.blobs.contains_key(&blob) {
            return Err(format!("publishing blob {blob} found it there: {was_there}; the model says otherwise"));
        }
        let entry = NewEntry {
            ns_id: self.ns_id,
            key: KEYS[key].to_owned(),
            content_type: None,
            content_encoding: None,
            validators: Validators::default(),
            ..NewEntry::default()
        };
        self.index.commit_blob(&digest, size, (is_upload, is_upload), None, Some(&entry), self.now_ms).unwrap();
        reservation.stored(digest, size, was_there, !is_upload);
        self.model.reserved -= reserved;
        *self.model.blobs.entry(blob).or_default() |= is_upload;
        self.model.entries.insert(key, blob);
        self.model.n_stores += 1;
        self.model.stored_at.insert(blob, (Instant::now(), self.model.n_stores));
        Ok(())
    }

    /// Deletes entry `key` and the blobs no entry names any more, as `Cache::cleanup` does.
    fn delete(&mut self, key: usize) -> Result<(), String> {
        let (n, orphans) = self.index.cleanup(Some(self.ns_id), Some(KEYS[key])).unwrap();
        let had_entry = self.model.entries.remove(&key).is_some();
        if n != u64::from(had_entry) {
            return Err(format!("cleanup of {} removed {n} entries", KEYS[key]));
        }
        let named: BTreeSet<usize> = self.model.entries.values().copied().collect();
        let expect: BTreeSet<usize> = self
            .model
            .blobs
            .iter()
            .filter(|(b, is_upload)| !**is_upload && !named.contains(b))
            .map(|(&b, _)| b)
            .collect();
        let got: BTreeSet<usize> = orphans.iter().map(|d| self.blob_of(d)).collect();
        if got != expect {
            return Err(format!("cleanup released blobs {got:?}, the model expected {expect:?}"));
        }
        let mut deleted = Vec::new();
        for d in orphans {
            let len = std::fs::metadata(self.disk.blob_path(&d)).map(|m| m.len()).unwrap_or(0);
            if self.disk.delete(&d).unwrap() {
                deleted.push((d, len));
            }
        }
        self.quota.deleted(&deleted);
        for b in got {
            self.model.blobs.remove(&b);
            self.model.maybe_pinned.remove(&b);
        }
        Ok(())
    }

    /// A restart: every reservation and read ends, then the index and the quota are opened again
    /// and rebuilt from the index. Blobs stored before it are no longer new: the protection is
    /// for the request that stored them, gone with the process.
    fn reopen(&mut self) -> Result<(), String> {
        self.reservations.clear();
        self.model.reserved = 0;
        self.holds.clear();
        let (index, _) = Index::open(&self.dir.path().join("index.db")).unwrap();
        self.index = Arc::new(index);
        self.disk = DiskTier::open(self.dir.path()).unwrap();
        self.evicted = Arc::new(Mutex::new(Vec::new()));
        self.quota = open_quota(&self.dir, &self.disk, &self.index, &self.evicted, self.protect_new);
        self.model.stored_at.clear();
        self.model.reload_pins();
        self.model.evicted_bytes = 0;
        Ok(())
    }

    /// A reservation of `n` more bytes failed: only right if `n` is more than the quota, or if
    /// the blobs that may be evicted cannot free what is missing.
    fn no_room_is_justified(
        &self,
        n: u64,
        protected: &BTreeMap<usize, &'static str>,
        no: &NoRoom,
    ) -> Result<(), String> {
        if n > QUOTA {
            let evicted = self.evicted.lock().unwrap().len();
            return if evicted == 0 {
                Ok(())
            } else {
                Err(format!("a reservation larger than the quota evicted {evicted} blobs first"))
            };
        }
        let total = self.model.used() + self.model.reserved + n;
        let missing = total.saturating_sub(QUOTA);
        // The quota may count more blobs as pinned than are pinned now, never fewer.
        let evictable: u64 = self
            .model
            .blobs
            .keys()
            .filter(|b| !protected.contains_key(b) && !self.model.maybe_pinned.contains(b))
            .map(|&b| SIZES[b])
            .sum();
        if missing == 0 || evictable >= missing {
            return Err(format!(
                "a reservation of {n} bytes failed ({}) although {evictable} bytes may be evicted and {missing} are \
                 missing (used {}, reserved {}, quota {QUOTA})",
                no.reason,
                self.model.used(),
                self.model.reserved
            ));
        }
        Ok(())
    }

    /// Compares the blobs the quota evicted since the last call with the model: each was stored
    /// and not protected; they leave the model with their entries. `missing` is what the
    /// reservation made since the last call lacked, if one was made (`None`: no reservation, so
    /// no new blob may go).
    ///
    /// New blobs (per `before`) among them must have been the last resort: taken by a
    /// reservation, once no unprotected blob that is not new and holds bytes remains (an empty
    /// one could not make room instead), the least recently stored first, and no more than the
    /// reservation needed (without the last new one, what was evicted would not have made the
    /// room).
    fn take_evictions(&mut self, before: &Before, missing: Option<u64>) -> Result<(), String> {
        let evicted: Vec<Digest> = std::mem::take(&mut *self.evicted.lock().unwrap());
        let mut evicted_new: Vec<(u64, usize)> = Vec::new();
        let mut freed = 0;
        for d in evicted {
            let b = self.blob_of(&d);
            if !self.model.blobs.contains_key(&b) {
                return Err(format!("blob {b} was evicted but was not stored"));
            }
            if let Some(why) = before.protected.get(&b) {
                return Err(format!("blob {b} was evicted although {why}"));
            }
            if let Some(&n) = before.new.get(&b) {
                evicted_new.push((n, b));
            }
            freed += SIZES[b];
            self.model.blobs.remove(&b);
            self.model.entries.retain(|_, named| *named != b);
            self.model.stored_at.remove(&b);
            self.model.evicted_bytes += SIZES[b];
        }
        let Some(&(newest_n, newest)) = evicted_new.iter().max() else { return Ok(()) };
        let Some(missing) = missing else {
            return Err(format!("new blobs {evicted_new:?} were evicted without a reservation needing them"));
        };
        // What eviction may still take, as the quota sees it (it may count more blobs as
        // pinned than are pinned now, never fewer).
        let evictable: Vec<usize> = self
            .model
            .blobs
            .keys()
            .copied()
            .filter(|b| !before.protected.contains_key(b) && !self.model.maybe_pinned.contains(b))
            .collect();
        // An empty blob kept is no blob kept: evicting it instead would have freed nothing.
        if let Some(old) = evictable.iter().find(|b| !before.new.contains_key(b) && SIZES[**b] > 0) {
            return Err(format!("new blobs {evicted_new:?} were evicted while blob {old}, not new, was kept"));
        }
        if let Some(older) = evictable.iter().find(|b| before.new.get(*b).is_some_and(|&n| n < newest_n)) {
            return Err(format!("new blob {newest} was evicted while {older}, stored before it, was kept"));
        }
        if freed - SIZES[newest] >= missing {
            return Err(format!(
                "new blob {newest} was evicted although the {} bytes evicted without it made the {missing} missing",
                freed - SIZES[newest]
            ));
        }
        Ok(())
    }

    /// The properties that hold after every step.
    fn check(&self) -> Result<(), String> {
        let stats = self.quota.stats();
        let used = self.model.used();
        if stats.used_bytes + stats.reserved_bytes > QUOTA {
            return Err(format!("used {} + reserved {} is over the quota", stats.used_bytes, stats.reserved_bytes));
        }
        let open: u64 = self.reservations.iter().map(|(n, _)| n).sum();
        if (stats.reserved_bytes, open) != (self.model.reserved, self.model.reserved) {
            return Err(format!(
                "{} bytes reserved, the open reservations hold {open}, the model {}",
                stats.reserved_bytes, self.model.reserved
            ));
        }
        if let Some((n, r)) = self.reservations.iter().find(|(n, r)| r.bytes() != *n) {
            return Err(format!("a reservation holds {} bytes, the model {n}", r.bytes()));
        }
        if stats.used_bytes != used {
            return Err(format!("{} bytes used, the model holds {used}", stats.used_bytes));
        }
        if stats.evicted_bytes != self.model.evicted_bytes {
            return Err(format!("{} bytes evicted, the model {}", stats.evicted_bytes, self.model.evicted_bytes));
        }
        let on_disk: BTreeMap<usize, u64> = self
            .disk
            .list()
            .unwrap()
            .into_iter()
            .map(|f| f.map(|(d, size)| (self.blob_of(&d), size)))
            .collect::<Result<_, _>>()
            .map_err(|path| format!("an unknown file on disk: {}", path.display()))?;
        let expect: BTreeMap<usize, u64> = self.model.blobs.keys().map(|&b| (b, SIZES[b])).collect();
        if on_disk != expect {
            return Err(format!("on disk {on_disk:?}, the model holds {expect:?}"));
        }
        let temp = self.disk.list_temp().unwrap();
        if !temp.is_empty() {
            return Err(format!("temp files left: {temp:?}"));
        }
        let indexed = self.index.present_bytes().unwrap();
        if indexed != used {
            return Err(format!("the index holds {indexed} bytes present, the model {used}"));
        }
        for (k, key) in KEYS.iter().enumerate() {
            let entry = self.index.get_entry(self.ns_id, &Key::new(key).unwrap()).unwrap();
            let got = entry.map(|e| self.blob_of(&e.digest));
            if got != self.model.entries.get(&k).copied() {
                return Err(format!("entry {key} names blob {got:?} in the index, the model says otherwise"));
            }
        }
        Ok(())
    }
}

fn open_quota(
    dir: &tempfile::TempDir,
    disk: &DiskTier,
    index: &Arc<Index>,
    evicted: &Arc<Mutex<Vec<Digest>>>,
    protect_new: Duration,
) -> Arc<DiskQuota> {
    let limits = DiskLimits { quota_bytes: Some(QUOTA), high_watermark: 0.95, low_watermark: 0.90, protect_new };
    let quota = DiskQuota::open(limits, Arc::clone(index), disk.clone(), dir.path().to_owned()).unwrap();
    let evicted = Arc::clone(evicted);
    quota.set_on_evict(Box::new(move |ds| evicted.lock().unwrap().extend_from_slice(ds)));
    Arc::new(quota)
}

fn blob_bytes(blob: usize) -> Vec<u8> {
    vec![blob as u8 + 1; SIZES[blob] as usize]
}
