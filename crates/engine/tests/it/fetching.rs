//! The fetch path's bounds and consistency: fetch slots shared fairly between sources, and the
//! extra requests a read makes beside a fetch held to the fetch's own version.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use tiercache_engine::{ByteRange, Cache, CacheConfig, Error, Intent};
use tiercache_testkit::{Behavior, Source, bytes};

use super::{bounded, collect, setup, wait_until};

/// With a global limit of 4 fetches (so 1 per source), six cold reads of a source that never
/// answers take only that source's share: a cold read of another source is answered while they
/// all still wait, with one fetch; and each of the six ends with a timeout (its own fetch's, or
/// its wait for a slot's), never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_source_holds_only_its_share_of_the_fetch_slots() {
    hung_source_holds_only_its_share(Intent::Whole).await;
}

/// The same for cold HEADs, each answered by a HEAD to the source: they take fetch slots too, so
/// a client sending many of them cannot open more requests to a source than its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_heads_of_a_hung_source_hold_only_its_share_of_the_fetch_slots() {
    hung_source_holds_only_its_share(Intent::Headers).await;
}

/// Six cold reads with `intent` of a hung source, then a cold read of a healthy one.
async fn hung_source_holds_only_its_share(intent: Intent) {
    let hung = Source::start().await;
    let healthy = Source::start().await;
    let data = bytes(3, 50_000);
    healthy.put("b.bin", data.clone());
    let keys: Vec<String> = (0..6).map(|i| format!("k{i}")).collect();
    for k in &keys {
        hung.set_behavior(k, Behavior::Hang);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CacheConfig::new(dir.path().join("data"));
    cfg.max_concurrent_fetches = 4;
    cfg.http.connect_timeout = Duration::from_secs(1);
    cfg.http.read_timeout = Duration::from_secs(2);
    assert_eq!(cfg.fetches_per_source(), 1, "a quarter of the global limit");
    let cache = Cache::open(cfg).await.unwrap();
    cache.create_namespace("a", Some(&hung.url()), &Default::default()).await.unwrap();
    cache.create_namespace("b", Some(&healthy.url()), &Default::default()).await.unwrap();

    let finished = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = keys
        .iter()
        .map(|k| {
            let (cache, k, finished, intent) = (cache.clone(), k.clone(), Arc::clone(&finished), intent.clone());
            tokio::spawn(async move {
                let r = cache.read_entry_with("a", k.as_bytes(), intent).await.map(|_| ());
                finished.fetch_add(1, Ordering::SeqCst);
                r
            })
        })
        .collect();
    let seen_by_hung = || keys.iter().map(|k| hung.counts(k)).map(|c| c.full + c.head).sum::<u64>();
    wait_until("the hung source got a request", async || seen_by_hung() >= 1).await;

    let read = bounded(cache.read_entry("b", "b.bin")).await.unwrap();
    assert_eq!(bounded(collect(read, None)).await.unwrap(), data);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        0,
        "the other source's read was answered while the hung fetches still waited"
    );
    assert_eq!(seen_by_hung(), 1, "one fetch at a time reached the hung source");
    assert_eq!(healthy.counts("b.bin").full, 1);

    let mut kinds = Vec::new();
    for r in readers {
        let err = bounded(r).await.unwrap().expect_err("a read of a hung source fails");
        assert!(
            matches!(&err, Error::Source(e) if e.is_timeout()) || matches!(err, Error::SourceBusy { .. }),
            "{err:?}"
        );
        kinds.push(err.kind());
    }
    assert!(
        kinds.contains(&"source_timeout"),
        "the fetch that reached the source timed out waiting for headers: {kinds:?}"
    );
    assert!((seen_by_hung() as usize) < keys.len(), "readers queued for a slot gave up without reaching the source");
}

/// A cold range far ahead of a fetch under way is asked of the source with the fetch's ETag
/// (`If-Match`, `If-Range`). The object changed meanwhile, so the source refuses it, and the range
/// is answered from the fetch's own bytes: version 1's, never version 2's under version 1's ETag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_ahead_of_a_fetch_is_never_another_version() {
    let src = Source::start().await;
    let v1 = bytes(11, 12 << 20);
    src.put("big.bin", v1.clone());
    src.set_behavior("big.bin", Behavior::StallAfter(1 << 20));
    let (_d, cache) = setup(&src, |_| {}).await;

    let first = bounded(cache.read_entry("web", "big.bin")).await.unwrap();
    let etag1 = first.meta.etag.as_deref().map(str::to_owned).expect("the source sends an ETag");
    // Read the first MiB, so the fetch is known to be streaming, then change the object.
    let mut first_body = first.into_stream(None);
    let mut got = Vec::new();
    while got.len() < 1 << 20 {
        got.extend_from_slice(&bounded(first_body.next()).await.unwrap().unwrap());
    }
    let v2 = bytes(22, 12 << 20);
    src.put("big.bin", v2.clone());
    assert_ne!(src.etag("big.bin").as_deref(), Some(etag1.as_str()));

    let second = bounded(cache.read_entry("web", "big.bin")).await.unwrap();
    assert_eq!(second.meta.etag.as_deref(), Some(etag1.as_str()), "the reader joined the fetch of version 1");
    let r = ByteRange { start: 8 << 20, end: (8 << 20) + 99_999 };
    let ranged = tokio::spawn(collect(second, Some(r)));
    wait_until("the range was asked of the source", async || src.counts("big.bin").ranged == 1).await;
    src.release();

    let got_range = bounded(ranged).await.unwrap().unwrap();
    let want = &v1[r.start as usize..=r.end as usize];
    assert!(got_range == want, "the far range is version 1's bytes");
    while let Some(chunk) = bounded(first_body.next()).await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == v1, "the fetch itself is version 1");

    let requests = src.requests("big.bin");
    let asked = requests.iter().find(|h| h.contains_key("range")).expect("a ranged request");
    assert_eq!(asked.get("if-match"), Some(&etag1), "{asked:?}");
    assert_eq!(asked.get("if-range"), Some(&etag1), "{asked:?}");
}

/// A source that sends no validator cannot be asked for a range as the fetch's version: a cold
/// range far ahead of the fetch waits for it instead of asking the source, and gets the fetch's
/// bytes although the object changed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_validator_a_range_ahead_waits_for_the_fetch() {
    let src = Source::start().await;
    let v1 = bytes(31, 12 << 20);
    src.put("bare.bin", v1.clone());
    src.set_bare("bare.bin", true);
    src.set_behavior("bare.bin", Behavior::StallAfter(1 << 20));
    let (_d, cache) = setup(&src, |_| {}).await;

    let first = bounded(cache.read_entry("web", "bare.bin")).await.unwrap();
    assert_eq!(first.meta.etag, None);
    let mut first_body = first.into_stream(None);
    let mut got = Vec::new();
    while got.len() < 1 << 20 {
        got.extend_from_slice(&bounded(first_body.next()).await.unwrap().unwrap());
    }
    src.put("bare.bin", bytes(32, 12 << 20));

    let second = bounded(cache.read_entry("web", "bare.bin")).await.unwrap();
    let r = ByteRange { start: 8 << 20, end: (8 << 20) + 99_999 };
    // The stream decides where the range comes from when it is made: before the fetch goes on.
    let mut stream = second.into_stream(Some(r));
    let ranged = tokio::spawn(async move {
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok::<_, std::io::Error>(out)
    });
    src.release();
    let got_range = bounded(ranged).await.unwrap().unwrap();
    assert!(got_range == v1[r.start as usize..=r.end as usize], "the far range is the fetch's bytes");
    while let Some(chunk) = bounded(first_body.next()).await {
        got.extend_from_slice(&chunk.unwrap());
    }
    assert!(got == v1);
    assert_eq!(src.counts("bare.bin").ranged, 0, "no request of its own without a validator");
}

/// With no room in the disk quota a body passes through, and a reader that wants a range asks the
/// source for it itself: naming the version its headers describe, so that after a change its body
/// ends with an error, never with the new version's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_through_range_names_the_version_of_its_headers() {
    let src = Source::start().await;
    let v1 = bytes(41, 2 << 20);
    src.put("big.bin", v1.clone());
    let (_d, cache) = setup(&src, |c| c.disk.quota_bytes = Some(1 << 20)).await;
    let r = ByteRange { start: 1000, end: 1999 };

    let read = bounded(cache.read_entry("web", "big.bin")).await.unwrap();
    let etag1 = read.meta.etag.as_deref().map(str::to_owned).expect("the source sends an ETag");
    assert!(bounded(collect(read, Some(r))).await.unwrap() == v1[1000..2000], "unchanged: the range");

    let read = bounded(cache.read_entry("web", "big.bin")).await.unwrap();
    assert_eq!(read.meta.etag.as_deref(), Some(etag1.as_str()));
    src.put("big.bin", bytes(42, 2 << 20));
    let e = bounded(collect(read, Some(r))).await.expect_err("changed: an error, not the new bytes");
    assert!(e.to_string().contains("changed"), "{e}");

    let ranged: Vec<_> = src.requests("big.bin").into_iter().filter(|h| h.contains_key("range")).collect();
    assert_eq!(ranged.len(), 2);
    assert!(ranged.iter().all(|h| h.get("if-match") == Some(&etag1)), "{ranged:?}");
    assert_eq!(cache.quota_stats().n_pass_through, 2, "nothing was stored");
}
