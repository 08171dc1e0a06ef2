//! An entry's ETag is its blob's MD5, computed beside the fetch and never waited for: a read that
//! comes before the MD5 is known is served at once, with the source's ETag as a weak one (or none),
//! and is not kept in the memory tier; once the MD5 is in the index, every read carries it.

use tiercache_engine::{Cache, Digest, Intent};
use tiercache_testkit::{Source, bytes};

use super::{bounded, collect, hex_md5, setup, wait_until};

/// A read of `key` once its fetch is committed (tier `disk` or `memory`), its body collected:
/// the tier, the ETag and the bytes.
async fn stored_read(cache: &Cache, key: &str) -> (&'static str, Option<String>, Vec<u8>) {
    let mut got = None;
    wait_until("the fetch is committed", async || {
        let read = cache.read_entry("web", key).await.unwrap();
        let (tier, etag) = (read.meta.tier.as_str(), read.meta.etag.as_deref().map(str::to_owned));
        let body = bounded(collect(read, None)).await.unwrap();
        let is_stored = tier != "source";
        got = Some((tier, etag, body));
        is_stored
    })
    .await;
    got.unwrap()
}

/// The MD5 the index holds for the blob of `data`.
fn md5_in_index(cache: &Cache, data: &[u8]) -> Option<String> {
    let db = rusqlite::Connection::open(cache.data_dir().join("index.db")).unwrap();
    db.query_row("SELECT md5 FROM blobs WHERE digest = ?1", [Digest::of(data).hex()], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_right_after_a_cold_miss_does_not_wait_for_the_md5() {
    let src = Source::start().await;
    let data = bytes(61, 6 << 20);
    src.put("big.bin", data.clone());
    let (_d, cache) = setup(&src, |_| {}).await;
    let source_etag = src.etag("big.bin").unwrap();
    let weak = format!("W/{source_etag}");

    // No MD5 pass may read while this is held: a read that waited for one would hang here.
    let pause = cache.pause_md5().await;
    let cold = cache.read_entry("web", "big.bin").await.unwrap();
    assert_eq!(cold.meta.tier.as_str(), "source");
    assert_eq!(bounded(collect(cold, None)).await.unwrap(), data);

    let (tier, etag, body) = bounded(stored_read(&cache, "big.bin")).await;
    assert_eq!(tier, "disk");
    assert!(body == data, "the second read has the right bytes");
    assert_eq!(etag.as_deref(), Some(weak.as_str()), "before its MD5: the source's ETag, weak");
    let head = bounded(cache.read_entry_with("web", b"big.bin", Intent::Headers)).await.unwrap();
    assert_eq!((head.meta.tier.as_str(), head.meta.etag.as_deref()), ("disk", Some(weak.as_str())));
    assert_eq!(head.meta.size_bytes, Some(data.len() as u64));
    assert_eq!(md5_in_index(&cache, &data), None, "nothing computed it meanwhile");

    drop(pause);
    bounded(cache.settle()).await.unwrap();
    let md5 = hex_md5(&data);
    assert_eq!(md5_in_index(&cache, &data), Some(md5.clone()), "the MD5 ends in the index");
    for _ in 0..2 {
        let read = cache.read_entry("web", "big.bin").await.unwrap();
        assert_eq!(read.meta.etag.as_deref(), Some(format!("\"{md5}\"").as_str()), "later reads carry the MD5");
        assert_eq!(bounded(collect(read, None)).await.unwrap(), data);
    }
    assert_eq!(src.counts("big.bin").full, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_is_kept_in_the_memory_tier_only_with_its_md5() {
    let src = Source::start().await;
    let data = bytes(62, 20_000);
    src.put("small", data.clone());
    src.set_bare("small", true); // No source ETag: before its MD5, the entry has no ETag at all.
    let (_d, cache) = setup(&src, |_| {}).await;

    let pause = cache.pause_md5().await;
    bounded(collect(cache.read_entry("web", "small").await.unwrap(), None)).await.unwrap();
    for _ in 0..3 {
        let (tier, etag, body) = bounded(stored_read(&cache, "small")).await;
        assert_eq!((tier, etag), ("disk", None), "without its MD5 the entry stays out of the memory tier");
        assert_eq!(body, data);
    }
    drop(pause);
    bounded(cache.settle()).await.unwrap();
    let md5 = format!("\"{}\"", hex_md5(&data));
    let mut tiers = Vec::new();
    for _ in 0..3 {
        let read = cache.read_entry("web", "small").await.unwrap();
        assert_eq!(read.meta.etag.as_deref(), Some(md5.as_str()));
        tiers.push(read.meta.tier.as_str());
        assert_eq!(bounded(collect(read, None)).await.unwrap(), data);
    }
    assert_eq!(tiers, ["disk", "memory", "memory"], "kept once its MD5 is known");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_md5_computed_beside_a_fetch_is_the_blobs() {
    let src = Source::start().await;
    let (_d, cache) = setup(&src, |_| {}).await;
    // Several fetches at once: their passes take turns, and each records its own blob's MD5.
    let objects: Vec<(String, Vec<u8>)> =
        (0..4).map(|i| (format!("f{i}"), bytes(70 + i, (3 << 20) + i as usize))).collect();
    for (key, data) in &objects {
        src.put(key, data.clone());
    }
    let reads = futures::future::join_all(objects.iter().map(|(key, _)| {
        let cache = cache.clone();
        async move { bounded(collect(cache.read_entry("web", key).await.unwrap(), None)).await.unwrap() }
    }))
    .await;
    bounded(cache.settle()).await.unwrap();
    for ((key, data), body) in objects.iter().zip(reads) {
        assert!(body == *data, "{key}");
        assert_eq!(md5_in_index(&cache, data), Some(hex_md5(data)), "{key}");
        let read = cache.read_entry("web", key).await.unwrap();
        assert_eq!(read.meta.etag, Some(format!("\"{}\"", hex_md5(data)).into()), "{key}");
    }
}
