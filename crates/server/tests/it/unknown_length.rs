//! Ranges of a source body whose length the source does not say (chunked, no `Content-Length`):
//! answered with exactly the range, never the whole body.

use http::StatusCode;
use tiercache_engine::{Cache, CacheConfig};
use tiercache_testkit::{Behavior, Source, bytes};

use super::{Harness, wait_until};

/// A harness whose source may stall for as long as a test needs (the default harness's short
/// read timeout would end a stalled fetch).
async fn patient_harness() -> Harness {
    let src = Source::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(CacheConfig::new(dir.path().join("data"))).await.unwrap();
    cache.create_namespace("web", Some(&src.url()), &Default::default()).await.unwrap();
    let app = tiercache_server::app(cache.clone(), None);
    Harness { _dir: dir, cache, app, src }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_of_a_body_of_unknown_length_is_exactly_that_range() {
    let h = patient_harness().await;
    let data = bytes(7, 300_000);
    h.src.put("gen.bin", data.clone());
    h.src.set_chunked("gen.bin", true);
    // The source sends 200 000 bytes and then waits: the length is still unknown when the range
    // is answered.
    h.src.set_behavior("gen.bin", Behavior::StallAfter(200_000));
    let a = h.get("/ns/web/gen.bin", &[("range", "bytes=100-199")]).await;
    assert_eq!(a.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(a.header("content-range"), Some("bytes 100-199/*"));
    assert_eq!(a.header("content-length"), Some("100"));
    assert!(a.body == data[100..200], "exactly the range");
    h.src.release();

    // Once stored, the length is known.
    wait_until("the body is stored", async || {
        h.get("/ns/web/gen.bin", &[]).await.header("x-tiercache-tier") == Some("disk")
    })
    .await;
    let a = h.get("/ns/web/gen.bin", &[("range", "bytes=100-199")]).await;
    assert_eq!(a.header("content-range"), Some("bytes 100-199/300000"));
    assert!(a.body == data[100..200]);
    assert_eq!(h.src.counts("gen.bin").full, 1, "one fetch");
}

/// Data-driven: cold ranges of a chunked 1000-byte body, each of a fresh key, so the length is
/// learnt only as the fetch ends: a range past the end is 416, an open or suffix range gets the
/// known length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_ranges_of_a_chunked_body_are_resolved_against_its_real_length() {
    let h = patient_harness().await;
    let data = bytes(8, 1000);
    type Case = (&'static str, u16, Option<(usize, usize)>, Option<&'static str>);
    let cases: &[Case] = &[
        ("bytes=5000-5999", 416, None, Some("bytes */1000")),
        ("bytes=990-", 206, Some((990, 1000)), Some("bytes 990-999/1000")),
        ("bytes=-10", 206, Some((990, 1000)), Some("bytes 990-999/1000")),
        ("bytes=0-9", 206, Some((0, 10)), None),
        ("bytes=900-1500", 206, Some((900, 1000)), Some("bytes 900-999/1000")),
    ];
    for (i, (range, status, slice, content_range)) in cases.iter().enumerate() {
        let key = format!("c{i}.bin");
        h.src.put(&key, data.clone());
        h.src.set_chunked(&key, true);
        let a = h.get(&format!("/ns/web/{key}"), &[("range", range)]).await;
        assert_eq!(a.status.as_u16(), *status, "{range}");
        if let Some((s, e)) = slice {
            assert!(a.body == data[*s..*e], "{range}");
            assert_eq!(a.header("content-length"), Some((e - s).to_string().as_str()), "{range}");
        }
        if let Some(cr) = content_range {
            assert_eq!(a.header("content-range"), Some(*cr), "{range}");
        }
    }
}
