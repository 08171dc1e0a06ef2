//! The memory tier: expiry on tokio's (paused) clock, the byte bound, deletes, the disabled mode,
//! single flight, and exact counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tiercache_tiers::memory::weigh_bytes;
use tiercache_tiers::{MemoryConfig, MemoryStats, MemoryTier};
use tokio::time::advance;

const TTL: Duration = Duration::from_secs(300);

fn tier(max_bytes: u64) -> MemoryTier<u64, Bytes> {
    MemoryTier::new("test", &MemoryConfig { is_enabled: true, ttl: TTL, max_bytes }, weigh_bytes)
}

fn value(key: u64, len: usize) -> Bytes {
    Bytes::from(vec![key as u8; len])
}

/// The counters and sizes, after moka's pending work has run.
async fn stats(tier: &MemoryTier<u64, Bytes>) -> MemoryStats {
    tier.run_pending_tasks().await;
    tier.stats()
}

/// Asserts which of `keys` `tier` holds, `expect` saying hit (`true`) or miss for each.
async fn check(tier: &MemoryTier<u64, Bytes>, keys: &[u64], expect: &[bool]) {
    let mut got = Vec::new();
    for key in keys {
        got.push(tier.get(key).await.is_some());
    }
    assert_eq!(got, expect, "hits of keys {keys:?}");
}

#[tokio::test(start_paused = true)]
async fn value_expires_after_the_default_ttl() {
    let tier = tier(1 << 20);
    tier.put(1, value(1, 10)).await;
    assert_eq!(tier.get(&1).await, Some(value(1, 10)));
    advance(TTL - Duration::from_millis(1)).await;
    assert_eq!(tier.get(&1).await, Some(value(1, 10)), "alive just before its ttl");
    advance(Duration::from_millis(1)).await;
    assert_eq!(tier.get(&1).await, None, "expired at its ttl");

    // The expired value was removed: an eviction, and no entry left.
    let s = stats(&tier).await;
    assert_eq!((s.entries, s.bytes, s.evictions, s.hits, s.misses), (0, 0, 1, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn per_entry_ttl() {
    let tier = tier(1 << 20);
    tier.put_with_ttl(1, value(1, 1), Duration::from_secs(10)).await;
    tier.put_with_ttl(2, value(2, 1), Duration::from_secs(1000)).await; // cut to the default ttl
    tier.put_with_ttl(3, value(3, 1), Duration::ZERO).await; // the default ttl
    tier.put(4, value(4, 1)).await;

    advance(Duration::from_secs(10) - Duration::from_millis(1)).await;
    check(&tier, &[1, 2, 3, 4], &[true, true, true, true]).await;
    advance(Duration::from_millis(1)).await;
    check(&tier, &[1, 2, 3, 4], &[false, true, true, true]).await;
    advance(TTL - Duration::from_secs(10) - Duration::from_millis(1)).await;
    check(&tier, &[2, 3, 4], &[true, true, true]).await;
    advance(Duration::from_millis(1)).await;
    check(&tier, &[2, 3, 4], &[false, false, false]).await;

    // A put replaces the value and its deadline.
    tier.put_with_ttl(5, value(5, 1), Duration::from_secs(5)).await;
    advance(Duration::from_secs(4)).await;
    tier.put_with_ttl(5, value(5, 2), Duration::from_secs(5)).await;
    advance(Duration::from_secs(4)).await;
    assert_eq!(tier.get(&5).await, Some(value(5, 2)));
    advance(Duration::from_secs(1)).await;
    assert_eq!(tier.get(&5).await, None);
}

#[tokio::test(start_paused = true)]
async fn get_or_insert_with_keeps_the_value_for_its_ttl() {
    let tier = tier(1 << 20);
    let runs = AtomicUsize::new(0);
    let init = || async {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(value(7, 3))
    };
    let ttl = Duration::from_secs(20);
    assert_eq!(tier.get_or_insert_with(7, ttl, init).await.unwrap(), value(7, 3));
    advance(Duration::from_secs(19)).await;
    assert_eq!(tier.get_or_insert_with(7, ttl, init).await.unwrap(), value(7, 3));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "kept for its ttl");
    advance(Duration::from_secs(1)).await;
    assert_eq!(tier.get_or_insert_with(7, ttl, init).await.unwrap(), value(7, 3));
    assert_eq!(runs.load(Ordering::SeqCst), 2, "run again once expired");
    // The value was also put for the tier's `get`.
    assert_eq!(tier.get(&7).await, Some(value(7, 3)));

    let s = stats(&tier).await;
    assert_eq!((s.hits, s.misses, s.evictions), (2, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn size_bound_evicts() {
    let max_bytes = 16 * 1024;
    let tier = tier(max_bytes);
    let n = 100;
    for key in 0..n {
        tier.put(key, value(key, 1024)).await;
        tier.run_pending_tasks().await;
        assert!(tier.stats().bytes <= max_bytes, "over the bound after key {key}: {:?}", tier.stats());
    }
    let s = stats(&tier).await;
    assert!(s.bytes <= max_bytes && s.bytes > 0, "{s:?}");
    assert_eq!(s.bytes, s.entries * 1024, "{s:?}");
    assert!(s.entries < n && s.entries >= 8, "{s:?}");
    assert_eq!(s.evictions, n - s.entries, "every value not held was evicted: {s:?}");

    let mut held = 0;
    for key in 0..n {
        if let Some(v) = tier.get(&key).await {
            assert_eq!(v, value(key, 1024));
            held += 1;
        }
    }
    assert_eq!(held, s.entries);

    // One value heavier than the whole bound is not kept either.
    tier.put(1000, value(0, max_bytes as usize + 1)).await;
    let s2 = stats(&tier).await;
    assert!(s2.bytes <= max_bytes, "{s2:?}");
    assert_eq!(tier.get(&1000).await, None);
}

#[tokio::test(start_paused = true)]
async fn delete_invalidates() {
    let tier = tier(1 << 20);
    tier.put(1, value(1, 10)).await;
    tier.put(2, value(2, 10)).await;
    tier.delete(&1).await;
    tier.delete(&3).await; // absent: nothing happens
    check(&tier, &[1, 2], &[false, true]).await;
    let s = stats(&tier).await;
    assert_eq!((s.entries, s.bytes, s.evictions), (1, 10, 0), "a delete is not an eviction");
}

#[tokio::test(start_paused = true)]
async fn clear_removes_everything() {
    let tier = tier(1 << 20);
    for key in 0..10 {
        tier.put(key, value(key, 100)).await;
    }
    assert_eq!(stats(&tier).await.entries, 10);
    tier.clear();
    check(&tier, &[0, 5, 9], &[false, false, false]).await;
    let s = stats(&tier).await;
    assert_eq!((s.entries, s.bytes, s.evictions), (0, 0, 0));
    // The tier is still usable.
    tier.put(1, value(1, 1)).await;
    check(&tier, &[1], &[true]).await;
}

#[tokio::test(start_paused = true)]
async fn disabled_tier_keeps_nothing() {
    let config = MemoryConfig { is_enabled: false, ..MemoryConfig::default() };
    let tier: MemoryTier<u64, Bytes> = MemoryTier::new("off", &config, weigh_bytes);
    tier.put(1, value(1, 10)).await;
    tier.put_with_ttl(2, value(2, 10), Duration::from_secs(5)).await;
    check(&tier, &[1, 2], &[false, false]).await;

    let runs = AtomicUsize::new(0);
    for _ in 0..3 {
        let got = tier
            .get_or_insert_with(9, Duration::ZERO, || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>(value(9, 1))
            })
            .await;
        assert_eq!(got.unwrap(), value(9, 1));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3, "init runs on every call");
    tier.delete(&1).await;
    tier.clear();
    let expected = MemoryStats { is_enabled: false, max_bytes: 64 << 20, ttl: TTL, ..MemoryStats::default() };
    assert_eq!(stats(&tier).await, expected);
}

#[tokio::test(start_paused = true)]
async fn single_flight_runs_init_once() {
    let tier = tier(1 << 20);
    let runs = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (tier, runs) = (tier.clone(), Arc::clone(&runs));
        tasks.push(tokio::spawn(async move {
            tier.get_or_insert_with(42, Duration::ZERO, || async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // Every other caller arrives while this one works: on the paused clock this
                // sleep ends only once no task can go on, every caller waiting on this init.
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<_, std::io::Error>(value(42, 5))
            })
            .await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), value(42, 5));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "init ran once for 32 callers");
    let s = stats(&tier).await;
    assert_eq!((s.hits, s.misses, s.entries), (0, 32, 1), "every caller missed, one value kept");
    assert_eq!(tier.get(&42).await, Some(value(42, 5)));
}

#[tokio::test(start_paused = true)]
async fn failed_init_is_not_cached() {
    let tier = tier(1 << 20);
    let runs = Arc::new(AtomicUsize::new(0));
    let failing = |runs: Arc<AtomicUsize>| {
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            // On the paused clock this ends only once every other caller waits on this init.
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err::<Bytes, _>(std::io::Error::other("source down"))
        }
    };

    // Concurrent callers share the one failure.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (tier, init) = (tier.clone(), failing(Arc::clone(&runs)));
        tasks.push(tokio::spawn(async move { tier.get_or_insert_with(1, Duration::ZERO, init).await }));
    }
    let mut errors = Vec::new();
    for task in tasks {
        errors.push(task.await.unwrap().unwrap_err());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(errors.iter().all(|e| Arc::ptr_eq(e, &errors[0]) && e.to_string() == "source down"));
    assert_eq!(tier.get(&1).await, None, "the error was not kept");

    // The next call runs init again, and another failure is not kept either.
    let err = tier.get_or_insert_with(1, Duration::ZERO, failing(Arc::clone(&runs))).await.unwrap_err();
    assert_eq!(err.to_string(), "source down");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    let got = tier.get_or_insert_with(1, Duration::ZERO, || async { Ok::<_, std::io::Error>(value(1, 2)) }).await;
    assert_eq!(got.unwrap(), value(1, 2));
    assert_eq!(tier.get(&1).await, Some(value(1, 2)));
}

#[tokio::test(start_paused = true)]
async fn stats_count_hits_and_misses_exactly() {
    let tier = tier(1 << 20);
    check(&tier, &[1, 2], &[false, false]).await;
    tier.put(1, value(1, 100)).await;
    tier.put(2, value(2, 50)).await;
    check(&tier, &[1, 1, 2, 3, 1], &[true, true, true, false, true]).await;
    let got = tier.get_or_insert_with(2, Duration::ZERO, || async { Ok::<_, std::io::Error>(value(0, 1)) }).await;
    assert_eq!(got.unwrap(), value(2, 50), "a held value wins over init");
    let expected = MemoryStats {
        is_enabled: true,
        entries: 2,
        bytes: 150,
        max_bytes: 1 << 20,
        ttl: TTL,
        hits: 5,
        misses: 3,
        evictions: 0,
    };
    assert_eq!(stats(&tier).await, expected);
    // Clones share the entries and the counters.
    let clone = tier.clone();
    check(&clone, &[1], &[true]).await;
    assert_eq!(tier.stats().hits, 6);
}
