//! The disk tier's eviction policy: which blobs go first when new bytes do not fit.
//!
//! [`EvictionPolicy`] owns the order of eviction and nothing else: it is a pure in-memory data
//! structure over keys and sizes. It knows nothing of files, of SQLite, or of enforcing a quota:
//! the engine asks it for victims when a reservation does not fit, deletes their files itself, and
//! tells it about every blob stored, read or removed for another reason.
//!
//! The policy is S3-FIFO (Yang et al., SOSP 2023): a small FIFO queue (about 10% of the capacity)
//! takes new blobs, so that blobs read once leave quickly; a blob read again while in it moves to
//! the main FIFO queue, where blobs carry a 2-bit read counter and get one more round per read
//! (CLOCK-like); a ghost FIFO remembers the keys recently evicted from the small queue, and a blob
//! stored again while remembered goes straight to the main queue. It was chosen by measurement:
//! on zipf workloads it beats LRU and moka (TinyLFU) in object and byte hit ratio, within about
//! 2 points of the best static choice (`examples/evict_zipf.rs`, run by `bench/evict.sh`).
//!
//! A disk tier always stores a blob it fetched, so there is no admission filter: a blob read once
//! is simply among the first to go, but never before every other blob (see
//! [`EvictionPolicy::victims`]).

use std::collections::HashMap;
use std::hash::Hash;

/// The most rounds a blob in the main queue earns by being read (a 2-bit counter).
const MAX_FREQ: u8 = 3;

/// Which list a node is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Queue {
    /// New blobs, until they are read again or evicted.
    Small,
    /// Blobs read at least once since they were stored (or remembered by the ghost queue).
    Main,
    /// Keys (and sizes) of blobs recently evicted from the small queue; no blob behind them.
    Ghost,
}

/// The end of a list.
const NIL: usize = usize::MAX;

#[derive(Debug)]
struct Node<K> {
    key: K,
    size_bytes: u64,
    /// Reads since the blob entered its queue or last went round the main queue, at most
    /// [`MAX_FREQ`].
    freq: u8,
    queue: Queue,
    /// Towards the head (newer).
    prev: usize,
    /// Towards the tail (older, examined first).
    next: usize,
}

/// A doubly linked FIFO threaded through the slab: new nodes at the head, eviction at the tail.
#[derive(Debug)]
struct List {
    head: usize,
    tail: usize,
    len: usize,
    // Invariant: the sum of `size_bytes` of the nodes on this list.
    bytes: u64,
}

impl List {
    const EMPTY: List = List { head: NIL, tail: NIL, len: 0, bytes: 0 };
}

/// The order in which the disk tier evicts blobs (S3-FIFO), over keys of type `K`.
///
/// Every operation is O(1) except [`victims`](Self::victims), which is O(1) amortized per blob
/// examined (its counter rounds are paid for by earlier reads) and examines each tracked blob a
/// bounded number of times per call. Memory: one node per tracked blob, plus one per key the
/// ghost queue remembers (at most 90% of the capacity's worth of evicted blobs).
#[derive(Debug)]
pub struct EvictionPolicy<K> {
    // Invariant: every key on a list is in `map`, pointing at its slot, and vice versa.
    map: HashMap<K, usize>,
    slots: Vec<Option<Node<K>>>,
    free: Vec<usize>,
    small: List,
    main: List,
    ghost: List,
    /// The blob most recently `put`, which is never the first victim (see `victims`).
    newest: Option<usize>,
    /// The small queue's share of the capacity; it gives up blobs first while it holds this many.
    small_target_bytes: u64,
    /// The ghost queue remembers at most this many bytes' worth of evicted blobs (the main
    /// queue's share of the capacity, as in the paper).
    ghost_target_bytes: u64,
}

impl<K: Hash + Eq + Clone> EvictionPolicy<K> {
    /// An empty policy for a tier of `capacity_bytes`.
    ///
    /// The capacity only sizes the internal queues (the small queue is 10% of it); the policy
    /// never evicts on its own, and tracks any number of bytes it is told about.
    pub fn new(capacity_bytes: u64) -> Self {
        let mut policy = EvictionPolicy {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            small: List::EMPTY,
            main: List::EMPTY,
            ghost: List::EMPTY,
            newest: None,
            small_target_bytes: 0,
            ghost_target_bytes: 0,
        };
        policy.set_capacity(capacity_bytes);
        policy
    }

    /// Resizes the internal queues for a tier of `capacity_bytes`; no blob is evicted.
    pub fn set_capacity(&mut self, capacity_bytes: u64) {
        self.small_target_bytes = capacity_bytes / 10;
        self.ghost_target_bytes = capacity_bytes - self.small_target_bytes;
        self.trim_ghost();
    }

    /// Records that the blob `key` of `size_bytes` was stored.
    ///
    /// If `key` is already tracked, this counts as a read and updates its size; a key the ghost
    /// queue remembers (a victim stored again soon, or one the caller failed to delete) goes to
    /// the main queue. The blob just put is never the first victim while
    /// any other unprotected blob is tracked.
    pub fn put(&mut self, key: K, size_bytes: u64) {
        let i = match self.map.get(&key) {
            Some(&i) if self.node(i).queue != Queue::Ghost => {
                let node = self.node_mut(i);
                let (queue, old) = (node.queue, node.size_bytes);
                node.size_bytes = size_bytes;
                node.freq = (node.freq + 1).min(MAX_FREQ);
                let list = self.list_mut(queue);
                list.bytes = list.bytes - old + size_bytes;
                i
            }
            Some(&i) => {
                // Remembered by the ghost queue: evicted from the small queue too early, so it
                // goes to the main queue this time.
                self.unlink(i);
                let node = self.node_mut(i);
                node.size_bytes = size_bytes;
                node.freq = 0;
                self.push_head(i, Queue::Main);
                i
            }
            None => self.insert(key, size_bytes, 0, Queue::Small),
        };
        self.newest = Some(i);
    }

    /// Records a read of `key`, if tracked. O(1): a lookup and a saturating increment.
    pub fn touch(&mut self, key: &K) {
        if let Some(&i) = self.map.get(key) {
            let node = self.node_mut(i);
            if node.queue != Queue::Ghost {
                node.freq = (node.freq + 1).min(MAX_FREQ);
            }
        }
    }

    /// Forgets `key`, removed for another reason than eviction (namespace delete, prune).
    pub fn delete(&mut self, key: &K) {
        if let Some(&i) = self.map.get(key) {
            self.remove(i);
        }
    }

    /// Chooses blobs to evict, oldest first, until their sizes sum to at least `need_bytes` or
    /// no evictable blob remains; returns them with their sizes, and forgets them.
    ///
    /// Blobs for which `is_protected` returns true are skipped and stay tracked, put back at the
    /// head of their queue so that the next scans do not meet them first. The scan is bounded:
    /// `is_protected` is called at most once per tracked blob, and each blob is examined at most
    /// 4 times (once per read its 2-bit counter holds, then once more), so a call where
    /// everything is protected returns an empty `Vec` after at most one pass per counter round.
    /// The blob most recently `put` is returned only when no other blob is evictable, and then
    /// last.
    ///
    /// The caller deletes the victims' files; if it cannot delete one, it calls
    /// [`put`](Self::put) again for it.
    pub fn victims(&mut self, need_bytes: u64, mut is_protected: impl FnMut(&K) -> bool) -> Vec<(K, u64)> {
        let mut victims = Vec::new();
        let mut freed_bytes = 0u64;
        // Blobs taken off their list for the length of this call, oldest first: the protected
        // ones, so that each is checked once, and the newest blob, so that the others go first.
        // Their bytes leave their queue's count meanwhile, so a small queue holding mostly
        // protected blobs lets the main queue give up blobs instead.
        let mut held = Vec::new();
        let mut newest_held = false;
        while freed_bytes < need_bytes {
            let queue = if self.small.len > 0 && (self.small.bytes >= self.small_target_bytes || self.main.len == 0) {
                Queue::Small
            } else if self.main.len > 0 {
                Queue::Main
            } else {
                break;
            };
            let i = self.list(queue).tail;
            let freq = self.node(i).freq;
            if freq > 0 {
                // Read since it came in (small) or since its last round (main): one more round
                // in the main queue.
                self.unlink(i);
                self.node_mut(i).freq = if queue == Queue::Small { 0 } else { freq - 1 };
                self.push_head(i, Queue::Main);
            } else if self.newest == Some(i) {
                self.unlink(i);
                newest_held = true;
            } else if is_protected(&self.node(i).key) {
                self.unlink(i);
                held.push(i);
            } else {
                freed_bytes += self.node(i).size_bytes;
                victims.push(self.evict(i));
            }
        }
        for i in held {
            self.push_head(i, self.node(i).queue);
        }
        if let Some(i) = self.newest.filter(|_| newest_held) {
            self.push_head(i, self.node(i).queue);
            if freed_bytes < need_bytes && !is_protected(&self.node(i).key) {
                victims.push(self.evict(i));
            }
        }
        victims
    }

    /// Takes the tracked blob `key` as a victim its caller chose (the engine's oldest new blob,
    /// once [`victims`](Self::victims) found nothing else to evict); returns it with its size and
    /// forgets it, as `victims` does: a blob from the small queue is remembered by the ghost
    /// queue. `None` if `key` is not tracked.
    pub fn take(&mut self, key: &K) -> Option<(K, u64)> {
        let &i = self.map.get(key)?;
        (self.node(i).queue != Queue::Ghost).then(|| self.evict(i))
    }

    /// Rebuilds the policy from the index at start: `blobs` are `(key, size_bytes, hits)` in
    /// ascending order of last access (least recently used first).
    ///
    /// Blobs read more than once go to the main queue, the others to the small queue, each queue
    /// in the given order (so the least recently used are evicted first). Meant for an empty
    /// policy; a key already tracked is moved.
    pub fn restore(&mut self, blobs: impl IntoIterator<Item = (K, u64, u64)>) {
        for (key, size_bytes, hits) in blobs {
            if let Some(&i) = self.map.get(&key) {
                self.remove(i);
            }
            let queue = if hits > 1 { Queue::Main } else { Queue::Small };
            self.insert(key, size_bytes, 0, queue);
        }
    }

    /// The number of blobs tracked.
    pub fn len(&self) -> usize {
        self.small.len + self.main.len
    }

    /// Whether no blob is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sum of the sizes of the blobs tracked.
    pub fn bytes(&self) -> u64 {
        self.small.bytes + self.main.bytes
    }

    /// The size of the blob `key`, if tracked (keys the ghost queue remembers are not).
    pub fn size_of(&self, key: &K) -> Option<u64> {
        self.map.get(key).map(|&i| self.node(i)).filter(|n| n.queue != Queue::Ghost).map(|n| n.size_bytes)
    }

    /// Whether the blob `key` is tracked (keys the ghost queue remembers are not).
    pub fn contains(&self, key: &K) -> bool {
        self.map.get(key).is_some_and(|&i| self.node(i).queue != Queue::Ghost)
    }

    /// Takes the tracked blob in slot `i` off its list and returns it as a victim; a blob from
    /// the small queue is remembered by the ghost queue.
    fn evict(&mut self, i: usize) -> (K, u64) {
        let node = self.node(i);
        let (victim, queue) = ((node.key.clone(), node.size_bytes), node.queue);
        if self.newest == Some(i) {
            self.newest = None;
        }
        if queue == Queue::Small {
            self.unlink(i);
            self.push_head(i, Queue::Ghost);
            self.trim_ghost();
        } else {
            self.remove(i);
        }
        victim
    }

    /// Forgets the ghost queue's oldest keys until it fits its target.
    fn trim_ghost(&mut self) {
        while self.ghost.bytes > self.ghost_target_bytes {
            self.remove(self.ghost.tail);
        }
    }

    /// A new node at the head of `queue`.
    fn insert(&mut self, key: K, size_bytes: u64, freq: u8, queue: Queue) -> usize {
        let node = Node { key: key.clone(), size_bytes, freq, queue, prev: NIL, next: NIL };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(node);
                i
            }
            None => {
                self.slots.push(Some(node));
                self.slots.len() - 1
            }
        };
        self.map.insert(key, i);
        self.push_head(i, queue);
        i
    }

    /// Unlinks slot `i` and frees it.
    fn remove(&mut self, i: usize) {
        self.unlink(i);
        if let Some(node) = self.slots[i].take() {
            self.map.remove(&node.key);
        }
        self.free.push(i);
        if self.newest == Some(i) {
            self.newest = None;
        }
    }

    /// Links the unlinked slot `i` at the head of `queue`.
    fn push_head(&mut self, i: usize, queue: Queue) {
        let list = self.list(queue);
        let (old_head, was_empty) = (list.head, list.len == 0);
        let node = self.node_mut(i);
        node.queue = queue;
        node.prev = NIL;
        node.next = old_head;
        let size_bytes = node.size_bytes;
        if was_empty {
            self.list_mut(queue).tail = i;
        } else {
            self.node_mut(old_head).prev = i;
        }
        let list = self.list_mut(queue);
        list.head = i;
        list.len += 1;
        list.bytes += size_bytes;
    }

    /// Takes slot `i` off its list; it keeps its `queue` field.
    fn unlink(&mut self, i: usize) {
        let node = self.node(i);
        let (queue, prev, next, size_bytes) = (node.queue, node.prev, node.next, node.size_bytes);
        if prev == NIL {
            self.list_mut(queue).head = next;
        } else {
            self.node_mut(prev).next = next;
        }
        if next == NIL {
            self.list_mut(queue).tail = prev;
        } else {
            self.node_mut(next).prev = prev;
        }
        let list = self.list_mut(queue);
        list.len -= 1;
        list.bytes -= size_bytes;
    }

    fn list(&self, queue: Queue) -> &List {
        match queue {
            Queue::Small => &self.small,
            Queue::Main => &self.main,
            Queue::Ghost => &self.ghost,
        }
    }

    fn list_mut(&mut self, queue: Queue) -> &mut List {
        match queue {
            Queue::Small => &mut self.small,
            Queue::Main => &mut self.main,
            Queue::Ghost => &mut self.ghost,
        }
    }

    fn node(&self, i: usize) -> &Node<K> {
        self.slots[i].as_ref().expect("a linked slot holds a node")
    }

    fn node_mut(&mut self, i: usize) -> &mut Node<K> {
        self.slots[i].as_mut().expect("a linked slot holds a node")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use rand::{Rng, SeedableRng, rngs::StdRng};

    use super::{EvictionPolicy, Queue};

    fn keys(victims: Vec<(u32, u64)>) -> Vec<u32> {
        victims.into_iter().map(|(key, _)| key).collect()
    }

    fn queue_of(policy: &EvictionPolicy<u32>, key: u32) -> Option<Queue> {
        policy.map.get(&key).map(|&i| policy.node(i).queue)
    }

    /// Drives the policy as the disk tier does on a miss: make room, then store.
    fn store(policy: &mut EvictionPolicy<u32>, capacity_bytes: u64, key: u32, size_bytes: u64) -> Vec<u32> {
        let mut evicted = Vec::new();
        if policy.bytes() + size_bytes > capacity_bytes {
            evicted = keys(policy.victims(policy.bytes() + size_bytes - capacity_bytes, |_| false));
        }
        policy.put(key, size_bytes);
        evicted
    }

    #[test]
    fn one_hit_blobs_leave_in_fifo_order() {
        let mut policy = EvictionPolicy::new(10);
        for key in 1..=5 {
            policy.put(key, 1);
        }
        assert_eq!(keys(policy.victims(2, |_| false)), [1, 2]);
        assert_eq!(policy.victims(0, |_| false), []);
        assert_eq!(policy.victims(3, |_| false), [(3, 1), (4, 1), (5, 1)]);
        assert!(policy.is_empty());
    }

    #[test]
    fn victims_stop_once_enough_bytes_are_freed() {
        let mut policy = EvictionPolicy::new(1000);
        for (key, size) in [(1, 100), (2, 50), (3, 300), (4, 10)] {
            policy.put(key, size);
        }
        assert_eq!(policy.victims(120, |_| false), [(1, 100), (2, 50)]);
        assert_eq!(policy.bytes(), 310);
    }

    #[test]
    fn blobs_read_again_outlive_one_hit_blobs() {
        let mut policy = EvictionPolicy::new(10);
        for key in 1..=6 {
            policy.put(key, 1);
        }
        policy.touch(&1);
        policy.touch(&3);
        assert_eq!(keys(policy.victims(3, |_| false)), [2, 4, 5]);
        assert_eq!(queue_of(&policy, 1), Some(Queue::Main));
        assert_eq!(queue_of(&policy, 3), Some(Queue::Main));
    }

    #[test]
    fn protected_blobs_are_never_returned() {
        let mut policy = EvictionPolicy::new(20);
        for key in 1..=20 {
            policy.put(key, 1);
        }
        policy.touch(&7);
        policy.touch(&8);
        let victims = keys(policy.victims(u64::MAX, |key| key % 2 == 0));
        assert_eq!(victims, [1, 3, 5, 9, 11, 13, 15, 17, 19, 7]);
        assert_eq!(policy.len(), 10);
        assert!((2..=20).step_by(2).all(|key| policy.contains(&key)));
        // Once no longer protected, they can go.
        assert_eq!(policy.victims(u64::MAX, |_| false).len(), 10);
    }

    #[test]
    fn everything_protected_returns_nothing() {
        let mut policy = EvictionPolicy::new(100);
        for key in 1..=1000 {
            policy.put(key, 3);
            if key % 3 == 0 {
                policy.touch(&key);
                policy.touch(&key);
                policy.touch(&key);
                policy.touch(&key);
            }
        }
        let mut n_checked = 0;
        let victims = policy.victims(u64::MAX, |_| {
            n_checked += 1;
            true
        });
        assert_eq!(victims, []);
        assert_eq!(n_checked, 1000, "each blob is checked once");
        assert_eq!((policy.len(), policy.bytes()), (1000, 3000));
        assert_eq!(policy.victims(u64::MAX, |_| false).len(), 1000);
    }

    #[test]
    fn newest_blob_is_not_the_first_victim() {
        // The small queue holds only the newest blob and is over its share: S3-FIFO alone would
        // evict the newest blob first.
        let mut policy = EvictionPolicy::new(100);
        policy.put(1, 1);
        policy.touch(&1);
        policy.put(2, 50);
        assert_eq!(keys(policy.victims(1, |_| false)), [1]);
        assert!(policy.contains(&2));
        // Evicted last when nothing else is evictable.
        policy.put(3, 1);
        policy.put(4, 1);
        assert_eq!(keys(policy.victims(u64::MAX, |_| false)), [2, 3, 4]);
        // Stored again from the ghost queue: newest in the main queue.
        policy.put(5, 1);
        policy.put(6, 1);
        policy.touch(&5);
        policy.touch(&6);
        policy.put(3, 1);
        assert_eq!(queue_of(&policy, 3), Some(Queue::Main));
        assert_eq!(keys(policy.victims(1, |_| false)), [5]);
    }

    #[test]
    fn newest_blob_is_not_the_first_victim_under_random_operations() {
        let mut rng = StdRng::seed_from_u64(7);
        let capacity_bytes = 1000;
        let mut policy = EvictionPolicy::new(capacity_bytes);
        let mut tracked = HashSet::new();
        let mut newest = None;
        for _ in 0..50_000 {
            let key = rng.random_range(0..200u32);
            let (need_bytes, protected) = match rng.random_range(0..10) {
                0 => {
                    policy.delete(&key);
                    tracked.remove(&key);
                    continue;
                }
                1..=4 => {
                    policy.touch(&(key % 30));
                    continue;
                }
                // Make room for a new blob, as the disk tier does, then store it.
                5..=8 => {
                    let size_bytes = rng.random_range(1..300);
                    let excess_bytes = (policy.bytes() + size_bytes).saturating_sub(capacity_bytes);
                    if !tracked.contains(&key) && excess_bytes > 0 {
                        check_victims(&mut policy, &mut tracked, newest, excess_bytes, 4);
                    }
                    policy.put(key, size_bytes);
                    tracked.insert(key);
                    newest = Some(key);
                    continue;
                }
                _ => (rng.random_range(1..1500), rng.random_range(0..4u32)),
            };
            check_victims(&mut policy, &mut tracked, newest, need_bytes, protected);
        }

        fn check_victims(
            policy: &mut EvictionPolicy<u32>,
            tracked: &mut HashSet<u32>,
            newest: Option<u32>,
            need_bytes: u64,
            protected: u32,
        ) {
            let is_protected = |k: &u32| k % 4 == protected && Some(*k) != newest;
            let victims = keys(policy.victims(need_bytes, is_protected));
            assert!(victims.iter().all(|k| !is_protected(k)));
            if newest.is_some_and(|n| victims.first() == Some(&n)) {
                assert!(tracked.iter().all(|k| Some(*k) == newest || is_protected(k)), "{newest:?} went first");
            }
            for k in victims {
                tracked.remove(&k);
            }
        }
    }

    #[test]
    fn sizes_add_up() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut policy = EvictionPolicy::new(10_000);
        let mut model: HashMap<u32, u64> = HashMap::new();
        for _ in 0..20_000 {
            let key = rng.random_range(0..300u32);
            match rng.random_range(0..10) {
                0..=1 => {
                    policy.delete(&key);
                    model.remove(&key);
                }
                2..=3 => policy.touch(&key),
                4..=7 => {
                    let size = rng.random_range(0..200);
                    policy.put(key, size);
                    model.insert(key, size);
                }
                _ => {
                    let need_bytes = rng.random_range(0..2_000);
                    let victims = policy.victims(need_bytes, |k| k % 7 == 0);
                    let freed_bytes: u64 = victims.iter().map(|&(_, size)| size).sum();
                    for (k, size) in &victims {
                        assert_eq!(model.remove(k), Some(*size));
                    }
                    // Enough was freed, or only protected blobs (and at most the newest) are left.
                    assert!(freed_bytes >= need_bytes || model.keys().all(|k| k % 7 == 0));
                }
            }
            assert_eq!(policy.len(), model.len());
            assert_eq!(policy.bytes(), model.values().sum::<u64>());
            assert!(model.keys().all(|k| policy.contains(k)));
        }
    }

    #[test]
    fn take_evicts_the_blob_its_caller_chose() {
        let mut policy = EvictionPolicy::new(100);
        for key in 1..=4 {
            policy.put(key, key as u64);
        }
        assert_eq!(policy.take(&3), Some((3, 3)));
        assert_eq!(policy.take(&3), None, "no longer tracked");
        assert_eq!(policy.take(&9), None);
        assert_eq!((policy.len(), policy.bytes()), (3, 7));
        // Taken from the small queue, it is remembered: stored again, it goes to the main queue.
        policy.put(3, 3);
        assert_eq!(queue_of(&policy, 3), Some(Queue::Main));
        // The newest blob taken is no longer held back by `victims`.
        assert_eq!(policy.take(&3), Some((3, 3)));
        assert_eq!(keys(policy.victims(u64::MAX, |_| false)), [1, 2, 4]);
    }

    #[test]
    fn put_again_counts_as_a_read_and_updates_the_size() {
        let mut policy = EvictionPolicy::new(10);
        policy.put(1, 5);
        policy.put(2, 5);
        policy.put(1, 7);
        assert_eq!((policy.len(), policy.bytes()), (2, 12));
        assert_eq!(policy.victims(1, |_| false), [(2, 5)]);
        policy.delete(&1);
        assert_eq!((policy.len(), policy.bytes()), (0, 0));
        assert!(!policy.contains(&1));
    }

    #[test]
    fn frequently_read_blobs_outlive_a_scan() {
        let capacity_bytes = 100;
        let mut policy = EvictionPolicy::new(capacity_bytes);
        for key in 0..30 {
            store(&mut policy, capacity_bytes, key, 1);
            policy.touch(&key);
            policy.touch(&key);
        }
        let mut evicted = Vec::new();
        for key in 1000..11_000 {
            evicted.extend(store(&mut policy, capacity_bytes, key, 1));
        }
        assert!((0..30).all(|key| policy.contains(&key)));
        assert!(evicted.iter().all(|&key| key >= 1000));
        assert_eq!(policy.bytes(), capacity_bytes);
    }

    #[test]
    fn restore_puts_blobs_read_more_than_once_in_the_main_queue() {
        let mut policy = EvictionPolicy::new(10);
        policy.restore([(1, 1, 1), (2, 1, 5), (3, 1, 0), (4, 1, 2)]);
        assert_eq!((policy.len(), policy.bytes()), (4, 4));
        assert_eq!(queue_of(&policy, 2), Some(Queue::Main));
        assert_eq!(queue_of(&policy, 4), Some(Queue::Main));
        assert_eq!(queue_of(&policy, 1), Some(Queue::Small));
        // The rarely read go first, then the others least recently used first.
        assert_eq!(keys(policy.victims(2, |_| false)), [1, 3]);
        assert_eq!(keys(policy.victims(2, |_| false)), [2, 4]);
    }

    #[test]
    fn set_capacity_shrinks_the_ghost_queue() {
        let mut policy = EvictionPolicy::new(100);
        for key in 0..50 {
            policy.put(key, 1);
        }
        assert_eq!(policy.victims(50, |_| false).len(), 50);
        assert_eq!(policy.ghost.len, 50);
        policy.set_capacity(20);
        assert_eq!(policy.ghost.len, 18);
        // A remembered key comes back to the main queue, a forgotten one to the small queue.
        policy.put(49, 1);
        policy.put(0, 1);
        assert_eq!(queue_of(&policy, 49), Some(Queue::Main));
        assert_eq!(queue_of(&policy, 0), Some(Queue::Small));
    }
}
