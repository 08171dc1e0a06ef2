//! The shared tier's behaviour suite, the same for every backend.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use tiercache_core::Digest;
use tiercache_testkit::servers::{self, RedisServer, S3Server};
use tiercache_tiers::shared::{BreakerState, Counter, PutOutcome, SharedConfig, SharedError, SharedTier, WriteBack};

const CHUNK: u64 = 64 * 1024;

fn config(url: &str) -> SharedConfig {
    let mut c = SharedConfig::new(url);
    c.chunk_bytes = CHUNK;
    c.limits.timeout = Duration::from_secs(5);
    c.limits.io_timeout = Duration::from_secs(5);
    c
}

fn blob_file(dir: &std::path::Path, seed: u64, len: usize) -> (Vec<u8>, Digest, std::path::PathBuf) {
    let data = tiercache_testkit::bytes(seed, len);
    let digest = Digest::of(&data);
    let path = dir.join(digest.hex());
    std::fs::write(&path, &data).unwrap();
    (data, digest, path)
}

async fn read_all(tier: &Arc<SharedTier>, digest: &Digest, start: u64, end: u64) -> Result<Vec<u8>, SharedError> {
    let list = tier.lookup(digest).await?.expect("blob is in the shared tier");
    let chunks: Vec<bytes::Bytes> = tier.read_range(list, start, end, None).try_collect().await?;
    Ok(chunks.concat())
}

/// The suite. `raw` is a plain operator on the same store, used to damage objects.
async fn suite(url: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let tier = Arc::new(SharedTier::open(&config(url)).unwrap());
    let raw = opendal::Operator::from_uri(url).unwrap();
    let len = 5 * CHUNK as usize + 123;
    let (data, digest, path) = blob_file(tmp.path(), 1, len);

    // Miss, then a write-back, then a second write-back that finds it there.
    assert!(tier.lookup(&digest).await.unwrap().is_none());
    assert_eq!(tier.put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    assert_eq!(tier.put_file(&digest, &path).await.unwrap(), PutOutcome::Existed);

    // Whole and ranged reads, across chunk boundaries and at the edges.
    let list = tier.lookup(&digest).await.unwrap().unwrap();
    assert_eq!((list.size_bytes, list.chunks.len()), (len as u64, 6));
    assert_eq!(read_all(&tier, &digest, 0, len as u64).await.unwrap(), data);
    for (s, e) in [(0, 1), (CHUNK - 1, CHUNK + 1), (len as u64 - 1, len as u64), (100, 3 * CHUNK + 7), (4096, 8192)] {
        assert_eq!(read_all(&tier, &digest, s, e).await.unwrap(), &data[s as usize..e as usize], "range {s}..{e}");
    }
    // An empty blob round-trips too.
    let (_, empty, empty_path) = blob_file(tmp.path(), 2, 0);
    assert_eq!(tier.put_file(&empty, &empty_path).await.unwrap(), PutOutcome::Stored);
    assert_eq!(read_all(&tier, &empty, 0, 0).await.unwrap(), b"");

    // A flipped byte in chunk 2: chunks 0 and 1 still verify, chunk 2 is refused, and the pair is
    // deleted so the next write-back repairs it.
    let key = SharedTier::blob_key(&digest);
    let mut bad = data.clone();
    bad[2 * CHUNK as usize + 5] ^= 0x40;
    raw.write(&key, bad).await.unwrap();
    let fresh = Arc::new(SharedTier::open(&config(url)).unwrap());
    assert_eq!(read_all(&fresh, &digest, 0, 2 * CHUNK).await.unwrap(), &data[..2 * CHUNK as usize]);
    let e = read_all(&fresh, &digest, 0, len as u64).await.unwrap_err();
    assert!(matches!(e, SharedError::Corrupt { .. }), "{e}");
    assert_eq!(fresh.stats().get(Counter::Corrupt), 1);
    assert!(fresh.lookup(&digest).await.unwrap().is_none(), "a corrupt blob is deleted");
    assert_eq!(fresh.put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    assert_eq!(read_all(&fresh, &digest, 0, len as u64).await.unwrap(), data);

    // A truncated blob object is refused too.
    raw.write(&key, data[..len - 10].to_vec()).await.unwrap();
    let fresh = Arc::new(SharedTier::open(&config(url)).unwrap());
    let got = read_all(&fresh, &digest, 0, len as u64).await;
    assert!(matches!(got, Err(SharedError::Corrupt { .. })), "{got:?}");

    // A damaged chunk list is refused at lookup and deleted.
    assert_eq!(fresh.put_file(&digest, &path).await.unwrap(), PutOutcome::Stored);
    let ckey = SharedTier::chunks_key(&digest);
    let mut text = raw.read(&ckey).await.unwrap().to_vec();
    let at = text.len() / 2;
    text[at] ^= 0x01;
    raw.write(&ckey, text).await.unwrap();
    let fresh = Arc::new(SharedTier::open(&config(url)).unwrap());
    assert!(matches!(fresh.lookup(&digest).await, Err(SharedError::Corrupt { .. })));
    assert!(fresh.lookup(&digest).await.unwrap().is_none());

    // A blob without its chunk list (a torn write-back) is invisible.
    raw.write(&key, data.clone()).await.unwrap();
    assert!(fresh.lookup(&digest).await.unwrap().is_none());

    // A local copy that no longer matches its digest is never uploaded.
    let (_, other, other_path) = blob_file(tmp.path(), 3, 1000);
    std::fs::write(&other_path, b"rotted").unwrap();
    assert!(matches!(fresh.put_file(&other, &other_path).await, Err(SharedError::Local(_))));
    assert!(fresh.lookup(&other).await.unwrap().is_none());
    assert!(!raw.exists(&SharedTier::blob_key(&other)).await.unwrap(), "the rotted upload was removed");
}

#[tokio::test]
async fn fs_backend() {
    let dir = tempfile::tempdir().unwrap();
    suite(&format!("fs://{}", dir.path().display())).await;
}

#[tokio::test]
async fn s3_backend() {
    let s3 = match S3Server::start() {
        Ok(s) => s,
        Err(e) => return servers::skip_or_fail("S3-compatible server", e),
    };
    s3.create_bucket("shared").unwrap();
    suite(&s3_url(&s3, "shared", "suite")).await;
}

#[tokio::test]
async fn redis_backend() {
    let redis = match RedisServer::start() {
        Ok(s) => s,
        Err(e) => return servers::skip_or_fail("Redis", e),
    };
    suite(&redis.url()).await;
}

/// The store's URL with the test credentials in its options (the CLI's tests pass them the usual
/// way, in `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`).
fn s3_url(s3: &S3Server, bucket: &str, prefix: &str) -> String {
    format!(
        "s3://{bucket}/{prefix}?endpoint={}&region={}&access_key_id={}&secret_access_key={}",
        s3.endpoint(),
        s3.region(),
        s3.access_key(),
        s3.secret_key()
    )
}

#[tokio::test(start_paused = true)]
async fn a_dead_store_is_a_miss_and_the_breaker_opens() {
    let mut c =
        config("s3://bucket/x?endpoint=http://127.0.0.1:1&region=us-east-1&access_key_id=a&secret_access_key=b");
    c.limits.retries = 0;
    c.breaker_failures = 3;
    c.breaker_cooldown = Duration::from_secs(30);
    let tier = SharedTier::open(&c).unwrap();
    let d = Digest::of(b"x");
    for _ in 0..3 {
        assert!(matches!(tier.lookup(&d).await, Err(SharedError::Unavailable(_))));
    }
    let s = tier.stats();
    let got = (s.breaker, s.get(Counter::BreakerTrips), s.get(Counter::Errors), s.get(Counter::Misses));
    assert_eq!(got, (BreakerState::Open, 1, 3, 3));
    let e = tier.lookup(&d).await.unwrap_err();
    assert!(e.to_string().contains("circuit breaker open"), "{e}");
    assert_eq!(tier.stats().get(Counter::Errors), 3, "refused calls do not reach the store");
    tokio::time::advance(Duration::from_secs(30)).await;
    assert!(tier.lookup(&d).await.is_err(), "the probe fails");
    assert_eq!(tier.stats().get(Counter::BreakerTrips), 2);
}

#[tokio::test]
async fn write_back_queue_is_bounded_and_drops_when_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    let tier = Arc::new(SharedTier::open(&config(&format!("fs://{}", store.path().display()))).unwrap());
    let wb = WriteBack::spawn(Arc::clone(&tier), 2, 1);
    let blobs: Vec<_> = (0..6).map(|i| blob_file(dir.path(), 10 + i, 1000)).collect();
    // No await between the calls: the worker cannot take anything off the queue meanwhile.
    let queued: Vec<bool> = blobs.iter().map(|(_, d, p)| wb.queue(*d, p.clone())).collect();
    assert_eq!(queued, [true, true, false, false, false, false]);
    assert!(!wb.queue(blobs[0].1, blobs[0].2.clone()), "a queued blob is not queued twice");
    for _ in 0..500 {
        if wb.n_pending() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let s = tier.stats();
    let got = (s.get(Counter::WriteBacksQueued), s.get(Counter::WriteBacksDone), s.get(Counter::WriteBacksDropped));
    assert_eq!(got, (2, 2, 4));
    assert!(tier.lookup(&blobs[1].1).await.unwrap().is_some());
    assert!(tier.lookup(&blobs[2].1).await.unwrap().is_none(), "a dropped write-back wrote nothing");
}

/// A store that accepts connections and never answers: every call times out, is a miss, and the
/// breaker opens after three, so later calls do not wait at all.
#[tokio::test]
async fn a_store_that_hangs_times_out_as_a_miss() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let mut c = config(&format!(
        "s3://bucket/x?endpoint=http://127.0.0.1:{port}&region=us-east-1&access_key_id=a&secret_access_key=b"
    ));
    c.limits.timeout = Duration::from_millis(200);
    c.limits.io_timeout = Duration::from_millis(200);
    c.limits.retries = 0;
    let tier = SharedTier::open(&c).unwrap();
    let d = Digest::of(b"x");
    for _ in 0..3 {
        let e = tier.lookup(&d).await.unwrap_err();
        assert!(matches!(e, SharedError::Unavailable(_)), "{e}");
    }
    assert_eq!(tier.stats().breaker, BreakerState::Open);
    let e = tier.lookup(&d).await.unwrap_err();
    assert!(e.to_string().contains("circuit breaker open"), "{e}");
    held.abort();
}
