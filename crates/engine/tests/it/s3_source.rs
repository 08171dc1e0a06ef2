//! A namespace whose source is an S3 bucket (a real S3-compatible server, s3s-fs): read through
//! once per object however many readers ask, ranges, revalidation, and its failures; the keys it
//! signs with come from the namespace's options and never show.

use std::time::Duration;

use tiercache_engine::{ByteRange, Cache, CacheConfig, Error, NamespaceOptions, SourceError};
use tiercache_testkit::bytes;
use tiercache_testkit::servers::{self, S3Server};

use super::{bounded, collect, wait_until};

/// The source URL of prefix `pre` of the test bucket.
fn url_of(s3: &S3Server) -> String {
    format!("s3://{}/pre?endpoint={}&region={}", S3Server::BUCKET, s3.endpoint(), s3.region())
}

/// Options that sign with the server's keys (`secret` for its secret key).
fn keys(s3: &S3Server, secret: &str) -> NamespaceOptions {
    NamespaceOptions {
        s3_access_key: Some(s3.access_key().to_owned()),
        s3_secret_key: Some(tiercache_engine::Secret::new(secret)),
        ..Default::default()
    }
}

/// Writes object `pre/<key>` of the test bucket (as a file of the server's data directory).
fn put(s3: &S3Server, key: &str, data: &[u8]) {
    let path = s3.object_path(S3Server::BUCKET, &format!("pre/{key}"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

fn remove(s3: &S3Server, key: &str) {
    std::fs::remove_file(s3.object_path(S3Server::BUCKET, &format!("pre/{key}"))).unwrap();
}

/// A cache with namespace `s3` bound to the test bucket's prefix `pre`.
async fn setup(s3: &S3Server, revalidate_after: Duration) -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = CacheConfig::new(dir.path().join("data"));
    cfg.revalidate_after = revalidate_after;
    let cache = Cache::open(cfg).await.unwrap();
    cache.create_namespace("s3", Some(&url_of(s3)), &keys(s3, s3.secret_key())).await.unwrap();
    (dir, cache)
}

/// Waits until `key` of namespace `s3` is served by the disk or memory tier.
async fn wait_stored(cache: &Cache, key: &str) {
    wait_until(&format!("{key} stored"), async || {
        let r = cache.read_entry("s3", key).await.unwrap();
        let tier = r.meta.tier.as_str();
        collect(r, None).await.unwrap();
        matches!(tier, "disk" | "memory")
    })
    .await;
}

/// Sixteen readers at once of two cold objects get their bytes; once stored, the objects are
/// served with the remote ones gone (within the freshness window): no reader went to the bucket
/// after the fetch that stored them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_read_through_and_served_from_the_cache_after() {
    let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    let (a, b) = (bytes(1, 3_000_000), bytes(2, 70_000));
    put(&s3, "dir/a.bin", &a);
    put(&s3, "b.bin", &b);
    let (_d, cache) = setup(&s3, Duration::from_secs(3600)).await;
    let readers: Vec<_> = (0..16)
        .map(|i| {
            let cache = cache.clone();
            let (key, want) = if i % 2 == 0 { ("dir/a.bin", a.clone()) } else { ("b.bin", b.clone()) };
            tokio::spawn(async move {
                let got = collect(cache.read_entry("s3", key).await.unwrap(), None).await.unwrap();
                assert!(got == want, "{key}: wrong bytes");
            })
        })
        .collect();
    for r in readers {
        bounded(r).await.unwrap();
    }
    wait_stored(&cache, "dir/a.bin").await;
    wait_stored(&cache, "b.bin").await;
    remove(&s3, "dir/a.bin");
    remove(&s3, "b.bin");
    for (key, want) in [("dir/a.bin", &a), ("b.bin", &b)] {
        let read = cache.read_entry("s3", key).await.unwrap();
        assert_ne!(read.meta.tier.as_str(), "source");
        assert!(collect(read, None).await.unwrap() == *want, "{key}");
    }
}

/// A range of an object not cached yet comes from the bucket, exact; a range of a cached object
/// is served with the remote object gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_of_cold_and_cached_objects() {
    let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    let data = bytes(3, 6_000_000);
    put(&s3, "big.bin", &data);
    let (_d, cache) = setup(&s3, Duration::from_secs(3600)).await;
    let far = ByteRange { start: 5_000_000, end: 5_000_999 };
    let got = collect(cache.read_entry("s3", "big.bin").await.unwrap(), Some(far)).await.unwrap();
    assert!(got[..] == data[5_000_000..5_001_000]);
    wait_stored(&cache, "big.bin").await;
    remove(&s3, "big.bin");
    let near = ByteRange { start: 10, end: 20 };
    let got = collect(cache.read_entry("s3", "big.bin").await.unwrap(), Some(near)).await.unwrap();
    assert!(got[..] == data[10..21]);
}

/// Once stale, an unchanged object is revalidated and served from the cache (its entry kept); a
/// changed one is read again, with its new bytes and new ETag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_objects_are_revalidated() {
    let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    let (v1, v2) = (bytes(4, 50_000), bytes(5, 60_000));
    put(&s3, "doc", &v1);
    let (_d, cache) = setup(&s3, Duration::ZERO).await;
    let first = cache.read_entry("s3", "doc").await.unwrap();
    let etag1 = first.meta.etag.clone();
    assert_eq!(collect(first, None).await.unwrap(), v1);
    wait_stored(&cache, "doc").await;
    let again = cache.read_entry("s3", "doc").await.unwrap();
    assert!(matches!(again.meta.tier.as_str(), "disk" | "memory"), "revalidated, not fetched again");
    assert_eq!(collect(again, None).await.unwrap(), v1);

    put(&s3, "doc", &v2);
    let changed = cache.read_entry("s3", "doc").await.unwrap();
    assert_eq!(changed.meta.tier.as_str(), "source");
    let etag2 = changed.meta.etag.clone();
    assert_eq!(collect(changed, None).await.unwrap(), v2);
    assert!(etag2.is_some() && etag2 != etag1, "{etag1:?} {etag2:?}");
}

/// A missing object is not found; wrong keys are the source's refusal; a metadata endpoint is
/// refused when the namespace is defined; the secret is never in an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_objects_wrong_keys_and_refused_endpoints() {
    let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    put(&s3, "o", b"bytes");
    let (_d, cache) = setup(&s3, Duration::from_secs(3600)).await;
    let e = cache.read_entry("s3", "missing").await.unwrap_err();
    assert!(matches!(e, Error::Source(SourceError::NotFound { .. })), "{e:?}");

    cache.create_namespace("wrong", Some(&url_of(&s3)), &keys(&s3, "not-the-secret")).await.unwrap();
    let e = cache.read_entry("wrong", "o").await.unwrap_err();
    assert!(matches!(e, Error::Source(SourceError::Forbidden { .. })), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("not-the-secret"), "{e:?}");

    let meta = "s3://bucket/pre?endpoint=http://169.254.169.254";
    let e = cache.create_namespace("meta", Some(meta), &NamespaceOptions::default()).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)) && e.to_string().contains("--allow-source-address"), "{e}");
    let half = NamespaceOptions { s3_access_key: Some("AKIA".into()), ..Default::default() };
    let e = cache.create_namespace("half", Some(&url_of(&s3)), &half).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    let e = cache.create_namespace("http", Some("http://127.0.0.1:1/"), &keys(&s3, "x")).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)) && e.to_string().contains("s3:// sources only"), "{e}");
    assert!(cache.namespace("meta").await.unwrap().is_none());
}
