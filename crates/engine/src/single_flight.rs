//! One mechanism for "at most one of these at a time per key, and latecomers share it" (layer 1):
//! source fetches by entry, shared-tier fills and MD5 computations by digest, hashing of a changed
//! file on a read, and copies into the disk tier.
//!
//! A [`SingleFlight`] maps a key to the handle of the work under way (a `watch` receiver of a
//! fetch's phases, a `OnceCell` of a computation's result, or `()` for work nobody waits on).
//! It does not run anything itself: the caller starts the work when [`SingleFlight::join`] says
//! it is first, and calls [`SingleFlight::finish`] when it ends. Only this process's work is seen
//! here; across processes, the fetch lock in the data directory does the same job.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Work under way, by key.
pub(crate) struct SingleFlight<K, T> {
    flights: Mutex<HashMap<K, T>>,
}

impl<K, T> Default for SingleFlight<K, T> {
    fn default() -> Self {
        SingleFlight { flights: Mutex::new(HashMap::new()) }
    }
}

/// What [`SingleFlight::join`] found.
pub(crate) enum Joined<T> {
    /// Work under way: share it.
    Running(T),
    /// None was: this caller started it with the handle it returned, and must start the work.
    Started(T),
}

impl<K: Hash + Eq, T: Clone> SingleFlight<K, T> {
    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<K, T>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins the work under way for `key` if `is_live` says it still can be joined; otherwise
    /// registers `start()`'s handle (replacing a finished one) and says the caller started it.
    pub(crate) fn join(&self, key: K, is_live: impl Fn(&T) -> bool, start: impl FnOnce() -> T) -> Joined<T> {
        let mut flights = self.flights();
        if let Some(running) = flights.get(&key).filter(|t| is_live(t)) {
            return Joined::Running(running.clone());
        }
        let started = start();
        flights.insert(key, started.clone());
        Joined::Started(started)
    }

    /// The work under way for `key`, if `is_live` says it can still be joined.
    pub(crate) fn running(&self, key: &K, is_live: impl Fn(&T) -> bool) -> Option<T> {
        self.flights().get(key).filter(|t| is_live(t)).cloned()
    }

    /// Whether work for `key` is under way and `is_live`.
    pub(crate) fn is_running(&self, key: &K, is_live: impl Fn(&T) -> bool) -> bool {
        self.running(key, is_live).is_some()
    }

    /// Forgets the work for `key` if `is_this` recognizes it as the caller's (a later flight may
    /// have replaced it already).
    pub(crate) fn finish(&self, key: &K, is_this: impl Fn(&T) -> bool) {
        let mut flights = self.flights();
        if flights.get(key).is_some_and(is_this) {
            flights.remove(key);
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, Arc<tokio::sync::OnceCell<V>>> {
    /// The value of `compute` for `key`, computed once however many callers ask at the same
    /// time; a failure is every waiting caller's, and the next caller tries again.
    pub(crate) async fn run<E, F>(&self, key: K, compute: impl FnOnce() -> F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        let cell = match self.join(key.clone(), |_| true, Default::default) {
            Joined::Running(cell) | Joined::Started(cell) => cell,
        };
        let value = cell.get_or_try_init(compute).await.cloned();
        self.finish(&key, |c| Arc::ptr_eq(c, &cell));
        value
    }
}

impl<K: Hash + Eq + Clone> SingleFlight<K, ()> {
    /// Claims `key` for work nobody waits on; `None` if it is claimed already. The work is done
    /// when the returned guard is dropped.
    pub(crate) fn claim(self: &Arc<Self>, key: K) -> Option<Claim<K>> {
        match self.join(key.clone(), |_| true, || ()) {
            Joined::Running(()) => None,
            Joined::Started(()) => Some(Claim { flights: Arc::clone(self), key }),
        }
    }
}

/// Work claimed through [`SingleFlight::claim`]; dropping it ends the claim.
pub(crate) struct Claim<K: Hash + Eq + Clone> {
    flights: Arc<SingleFlight<K, ()>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Drop for Claim<K> {
    fn drop(&mut self) {
        self.flights.finish(&self.key, |_| true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_flight_is_joined_and_a_finished_one_replaced() {
        let flights: SingleFlight<&str, u32> = SingleFlight::default();
        assert!(matches!(flights.join("k", |_| true, || 1), Joined::Started(1)));
        assert!(matches!(flights.join("k", |_| true, || 2), Joined::Running(1)));
        assert!(matches!(flights.join("k", |&t| t != 1, || 3), Joined::Started(3)));
        flights.finish(&"k", |&t| t == 1);
        assert!(flights.is_running(&"k", |_| true), "another flight's finish leaves this one");
        flights.finish(&"k", |&t| t == 3);
        assert!(!flights.is_running(&"k", |_| true));
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_computation() {
        let flights: SingleFlight<u8, Arc<tokio::sync::OnceCell<u32>>> = SingleFlight::default();
        let runs = std::sync::atomic::AtomicU32::new(0);
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let compute = || async {
            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut rx = gate_rx.clone();
            rx.wait_for(|open| *open).await.unwrap();
            Ok::<_, ()>(7)
        };
        let all = futures::future::join(futures::future::join_all((0..4).map(|_| flights.run(1, compute))), async {
            gate_tx.send(true).unwrap()
        });
        let (values, ()) = all.await;
        assert_eq!(values, vec![Ok(7); 4]);
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!flights.is_running(&1, |_| true), "forgotten once done");
    }

    #[test]
    fn a_claim_excludes_others_until_dropped() {
        let flights: Arc<SingleFlight<u8, ()>> = Arc::default();
        let claim = flights.claim(1).expect("first");
        assert!(flights.claim(1).is_none());
        drop(claim);
        assert!(flights.claim(1).is_some());
    }
}
