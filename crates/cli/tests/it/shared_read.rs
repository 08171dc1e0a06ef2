//! Reading from the shared tier, as a user of a cluster would: node A takes an upload and writes
//! it back to a real store (S3-compatible, and Redis); a node that has never seen the blob reads
//! it whole and as small ranges (exact bytes, served by the shared tier), and its disk tier ends
//! holding the verified blob.
//!
//! The side objects' format and leaf-by-leaf verification are tested in the tiers crate's
//! behaviour suite (`crates/tiers/tests/it/shared.rs`); this file tests the binary.

use tiercache_testkit::bytes;
use tiercache_testkit::servers::{self, RedisServer, S3Server};

use crate::common::*;

const MIB: usize = 1 << 20;
const DONE: &str = "tiercache_shared_write_backs_total{result=\"done\"}";
const FILLED: &str = "tiercache_blobs_stored_total{origin=\"shared\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_and_ranged_reads_from_s3_fill_the_disk_tier_with_the_verified_blob() {
    let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    let url = format!("s3://{}/shared-read?endpoint={}&region={}", S3Server::BUCKET, s3.endpoint(), s3.region());
    let env = [("AWS_ACCESS_KEY_ID", s3.access_key()), ("AWS_SECRET_ACCESS_KEY", s3.secret_key())];
    scenario(&url, &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_and_ranged_reads_from_redis_fill_the_disk_tier_with_the_verified_blob() {
    let Some(redis) = servers::or_skip("Redis", RedisServer::start()) else { return };
    scenario(&redis.url(), &[]).await;
}

async fn scenario(url: &str, env: &[(&str, &str)]) {
    let start = async |d: &Dirs| Server::start_with_env(&d.data, &["--shared", url], env).await;
    let http = client();
    let (da, db, dc) = (dirs(), dirs(), dirs());
    let a = start(&da).await;
    let blob = bytes(500, 7 * MIB + 12_345);
    let hex = hex_of(&blob);
    assert_eq!(http_put_blob(&http, &a.base, &blob).await, 201);
    a.wait_metric(DONE, 1.0).await;
    let path = format!("/blobs/{}", digest(&blob));

    // B: small ranges first (each verified alone), then the whole blob.
    let b = start(&db).await;
    for at in [3 * MIB + 5000, 0, blob.len() - 4096, MIB - 100] {
        let resp = http.get(b.url(&path)).header("range", format!("bytes={at}-{}", at + 4095)).send().await.unwrap();
        let tier = resp.headers().get("x-tiercache-tier").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(resp.status(), 206);
        let got = resp.bytes().await.unwrap();
        assert!(got[..] == blob[at..at + 4096], "range at {at}");
        assert!(matches!(tier.as_deref(), Some("shared" | "disk")), "{tier:?}");
    }
    // C: the whole blob at once, from a node that has never seen it.
    let c = start(&dc).await;
    let resp = http.get(c.url(&path)).send().await.unwrap();
    assert_eq!((resp.status().as_u16(), resp.headers()["x-tiercache-tier"].to_str().unwrap()), (200, "shared"));
    let got = resp.bytes().await.unwrap();
    assert!(got[..] == blob[..], "the whole blob, exactly");

    // Both disk tiers end with the blob, whose SHA-256 is right; later reads are disk hits.
    for (n, d) in [(&b, &db), (&c, &dc)] {
        n.wait_metric(FILLED, 1.0).await;
        let on_disk = std::fs::read(blob_path(&d.data, &hex)).unwrap();
        assert_eq!(hex_of(&on_disk), hex, "the disk tier holds the verified blob");
        let resp = http.get(n.url(&path)).send().await.unwrap();
        assert_eq!(resp.headers()["x-tiercache-tier"].to_str().unwrap(), "disk");
        assert!(resp.bytes().await.unwrap()[..] == blob[..]);
        assert!(temp_files(&d.data).is_empty(), "no temp file is left");
    }
}
