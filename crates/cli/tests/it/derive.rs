//! Derivations over real HTTP with real workers: outputs made once per key however many ask,
//! served by key afterwards (across a restart too), bad requests and bad inputs refused with the
//! right status, failures remembered, and `--no-worker` never computing.

use std::io::Write;

use sha2::Digest as _;

use crate::common::*;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// 256 MiB of `byte`, gzipped, at `path`: a job that takes a while to write its output.
fn write_big_gzip(path: &std::path::Path, byte: u8) {
    let mut e = flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    let block = vec![byte; 1 << 20];
    for _ in 0..256 {
        e.write_all(&block).unwrap();
    }
    e.finish().unwrap();
}

async fn metric_of(server: &Server, outcome: &str, recipe: &str) -> f64 {
    server.metric(&format!("tiercache_derive_jobs_total{{outcome=\"{outcome}\",recipe=\"{recipe}\"}}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_made_once_per_key_served_by_key_and_bad_asks_refused() {
    let d = dirs();
    let files = d.tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let raw: Vec<u8> = (0..200_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
    std::fs::write(files.join("layer.gz"), gzip(&raw)).unwrap();
    let g = gzip(&raw);
    std::fs::write(files.join("broken.gz"), &g[..g.len() / 2]).unwrap();
    std::fs::write(files.join("notes.txt"), b"not compressed at all").unwrap();
    tcr(&d.data, &["index", files.to_str().unwrap(), "--ns", "files", "--json"]).ok();
    let mut server = Server::start(&d.data, &["--worker-threads", "2"]).await;
    let client = client();

    // A blob's checksum: made, then served by key; the ETag is the output's digest.
    let blob: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    assert_eq!(http_put_blob(&client, &server.base, &blob).await, 201);
    let url = server.url(&format!("/blobs/{}?derive=checksum&algo=sha512&wait=20s", digest(&blob)));
    let res = client.get(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let cache_control = res.headers()["cache-control"].to_str().unwrap().to_owned();
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let body = res.bytes().await.unwrap();
    assert_eq!(body.as_ref(), hex::encode(sha2::Sha512::digest(&blob)).as_bytes());
    assert_eq!(etag, format!("\"{}\"", digest(&body)));
    assert!(cache_control.contains("immutable"), "{cache_control}");
    let again = client.get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 304);
    assert_eq!(metric_of(&server, "done", "checksum").await, 1.0);

    // 64 concurrent asks for one new key: one job.
    let url = server.url(&format!("/blobs/{}?derive=checksum&algo=blake3&wait=20s", digest(&blob)));
    let asks = (0..64).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { http_get(&client, &url).await })
    });
    for answer in futures::future::join_all(asks).await {
        let (status, body) = answer.unwrap();
        assert_eq!(status, 200);
        assert_eq!(body, blake3::hash(&blob).to_hex().as_bytes());
    }
    assert_eq!(metric_of(&server, "done", "checksum").await, 2.0, "64 asks of one key made one job");

    // An entry of a directory namespace, decompressed in place.
    let (status, body) = http_get(&client, &server.url("/ns/files/layer.gz?derive=decompress&wait=20s")).await;
    assert_eq!(status, 200);
    assert_eq!(body, raw, "the raw bytes");

    // Bad asks: 400 before any work; an input the recipe does not take: 415; a damaged one: 422,
    // remembered (asked again, no new job).
    for (path, status) in [
        ("/ns/files/layer.gz?derive=nope", 400),
        ("/ns/files/layer.gz?derive=decompress&format=xz", 400),
        ("/ns/files/layer.gz?derive=decompress&bogus=1", 400),
        ("/ns/files/layer.gz?derive=checksum", 400),
        ("/ns/files/layer.gz?derive=checksum&algo=sha1&wait=forever", 400),
        ("/ns/files/missing.gz?derive=decompress", 404),
        ("/ns/files/notes.txt?derive=decompress&wait=20s", 415),
        ("/ns/files/broken.gz?derive=decompress&wait=20s", 422),
    ] {
        let (got, body) = http_get(&client, &server.url(path)).await;
        assert_eq!(got, status, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let failed = metric_of(&server, "failed", "decompress").await;
    let (got, body) = http_get(&client, &server.url("/ns/files/broken.gz?derive=decompress&wait=20s")).await;
    assert_eq!(got, 422);
    assert!(String::from_utf8_lossy(&body).contains("could not be read"), "{}", String::from_utf8_lossy(&body));
    assert_eq!(metric_of(&server, "failed", "decompress").await, failed, "the failure was remembered, not retried");

    // Without waiting: a placeholder answer (202 with Retry-After) unless the job was quicker.
    let url = server.url(&format!("/blobs/{}?derive=checksum&algo=crc32c", digest(&blob)));
    let res = client.get(&url).send().await.unwrap();
    match res.status().as_u16() {
        202 => assert!(res.headers().contains_key("retry-after")),
        200 => {}
        other => panic!("expected 202 or 200, got {other}"),
    }
    wait_until("the crc32c is made", async || http_get(&client, &url).await.0 == 200).await;

    // Restarted without workers: outputs made before are served, a new key is not made.
    server.stop();
    let server = Server::start(&d.data, &["--no-worker"]).await;
    let (status, body) = http_get(&client, &server.url("/ns/files/layer.gz?derive=decompress")).await;
    assert_eq!((status, body == raw), (200, true), "kept across the restart");
    let url = server.url(&format!("/blobs/{}?derive=checksum&algo=sha1&wait=2s", digest(&blob)));
    let (status, body) = http_get(&client, &url).await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(metric_of(&server, "done", "checksum").await, 0.0, "--no-worker computes nothing");
}

#[test]
fn derive_over_a_namespace_makes_each_output_once_and_counts_what_it_could_not() {
    let d = dirs();
    let files = d.tmp.path().join("layers");
    std::fs::create_dir_all(files.join("sub")).unwrap();
    for i in 0..5u8 {
        std::fs::write(files.join(format!("sub/l{i}.gz")), gzip(&vec![i; 10_000 + i as usize])).unwrap();
    }
    std::fs::write(files.join("sub/readme.txt"), b"plain").unwrap();
    std::fs::write(files.join("sub/cut.gz"), &gzip(&[7u8; 50_000])[..20]).unwrap();
    std::fs::write(files.join("top.gz"), gzip(b"outside the prefix")).unwrap();
    tcr(&d.data, &["index", files.to_str().unwrap(), "--ns", "layers"]).ok();

    let args = ["derive", "--ns", "layers", "--recipe", "decompress", "--prefix", "sub/", "--json"];
    let first = tc(&d.data).args(args).output().unwrap();
    assert_eq!(first.status.code(), Some(1), "a failed input makes the exit code 1");
    let s: serde_json::Value = serde_json::from_slice(&first.stdout).unwrap();
    assert_eq!((s["inputs"].as_u64(), s["made"].as_u64(), s["already"].as_u64()), (Some(7), Some(5), Some(0)), "{s}");
    assert_eq!((s["failed"].as_u64(), s["unsupported"].as_u64()), (Some(1), Some(1)), "{s}");
    assert!(s["failures"][0][0].as_str().unwrap().ends_with("cut.gz"), "{s}");

    let stats = tcr(&d.data, &["stats"]).ok();
    assert!(stats.stdout.contains("derivations decompress: 5 outputs"), "{}", stats.stdout);
    assert!(stats.stdout.contains("jobs 5 done, 2 failed"), "{}", stats.stdout);
    assert!(stats.stdout.contains("0 not referenced by any entry"), "outputs are referenced: {}", stats.stdout);
    let json = tcr(&d.data, &["stats", "--json"]).ok().json();
    assert_eq!(json["derivations"]["by_recipe"][0][1], 5, "{json}");

    let again: serde_json::Value = serde_json::from_slice(&tc(&d.data).args(args).output().unwrap().stdout).unwrap();
    assert_eq!((again["made"].as_u64(), again["already"].as_u64()), (Some(0), Some(5)), "{again}");

    let out = tcr(&d.data, &["derive", "--ns", "layers", "--recipe", "nope"]).expect_code(1);
    assert!(out.stderr.contains("no recipe named"), "{}", out.stderr);
    let out = tcr(&d.data, &["derive", "--ns", "layers", "--recipe", "decompress", "--param", "format"]).expect_code(1);
    assert!(out.stderr.contains("NAME=VALUE"), "{}", out.stderr);
}

/// Node A makes an output; node B, sharing A's shared tier but not its disk, serves it without a
/// job: found by key in the shared tier (`derived/…`), its blob filled into B's disk tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_serves_an_output_the_first_made_without_making_it() {
    use tiercache_testkit::servers::{self, RedisServer};
    let Some(redis) = servers::or_skip("Redis", RedisServer::start()) else { return };
    let shared = redis.url();
    let (da, db) = (dirs(), dirs());
    let a = Server::start(&da.data, &["--shared", &shared]).await;
    let http = client();
    let blob: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(http_put_blob(&http, &a.base, &blob).await, 201);
    let path = format!("/blobs/{}?derive=checksum&algo=sha1&wait=20s", digest(&blob));
    let (status, made) = http_get(&http, &a.url(&path)).await;
    assert_eq!(status, 200);
    assert_eq!(metric_of(&a, "done", "checksum").await, 1.0);
    // The input and output blobs written back, and the output's record.
    a.wait_metric("tiercache_shared_write_backs_total{result=\"done\"}", 2.0).await;
    a.wait_metric("tiercache_derive_records_written_total", 1.0).await;

    let b = Server::start(&db.data, &["--shared", &shared]).await;
    let (status, body) = http_get(&http, &b.url(&path)).await;
    assert_eq!((status, body == made), (200, true), "{}", String::from_utf8_lossy(&body));
    assert_eq!(metric_of(&b, "done", "checksum").await, 0.0, "node B made nothing");
    assert_eq!(metric_of(&b, "shared", "checksum").await, 1.0, "found in the shared tier");
    // Now B's own: served by key from its disk tier.
    let (status, body) = http_get(&http, &b.url(&path)).await;
    assert_eq!((status, body), (200, made));
    assert_eq!(metric_of(&b, "skipped", "checksum").await, 1.0);
}

/// A directory's file deleted while its job runs: the job reads the bytes it opened, the output
/// is stored under that input's digest (and found by it afterwards), and the entry itself is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_deleted_while_its_job_runs_gives_its_output_and_nothing_half_made() {
    let d = dirs();
    let files = d.tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let big = files.join("big.gz");
    write_big_gzip(&big, 0);
    let input = digest(&std::fs::read(&big).unwrap());
    tcr(&d.data, &["index", files.to_str().unwrap(), "--ns", "files"]).ok();
    let server = Server::start(&d.data, &["--worker-threads", "1"]).await;
    let client = client();
    let (status, _) = http_get(&client, &server.url("/ns/files/big.gz?derive=decompress")).await;
    assert!(status == 202 || status == 200, "{status}");
    std::fs::remove_file(&big).unwrap();
    let (status, _) = http_get(&client, &server.url("/ns/files/big.gz?derive=decompress")).await;
    assert_eq!(status, 404, "the entry is gone with its file");
    let url = server.url(&format!("/blobs/{input}?derive=decompress&wait=30s"));
    let res = client.head(&url).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-length"], (256u64 << 20).to_string().as_str());
    assert!(temp_files(&d.data).is_empty(), "no temp file left: {:?}", temp_files(&d.data));
}

/// A graceful stop (SIGTERM) with one job running and one queued: the running one finishes and its
/// output is kept; the queued one is dropped, never half made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_finishes_running_jobs_and_drops_queued_ones() {
    let d = dirs();
    let files = d.tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    write_big_gzip(&files.join("a.gz"), 0);
    write_big_gzip(&files.join("b.gz"), 1);
    tcr(&d.data, &["index", files.to_str().unwrap(), "--ns", "files"]).ok();
    let mut server = Server::start(&d.data, &["--worker-threads", "1"]).await;
    let client = client();
    for name in ["a.gz", "b.gz"] {
        let (status, _) = http_get(&client, &server.url(&format!("/ns/files/{name}?derive=decompress"))).await;
        assert_eq!(status, 202, "{name}: queued, not made yet");
    }
    server.wait_metric("tiercache_derive_running", 1.0).await;
    server.stop();
    assert!(temp_files(&d.data).is_empty(), "no temp file left: {:?}", temp_files(&d.data));

    let server = Server::start(&d.data, &["--no-worker"]).await;
    let a = server.url("/ns/files/a.gz?derive=decompress");
    let res = client.head(&a).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200, "the running job finished before the stop");
    assert_eq!(res.headers()["content-length"], (256u64 << 20).to_string().as_str());
    let (status, _) = http_get(&client, &server.url("/ns/files/b.gz?derive=decompress")).await;
    assert_eq!(status, 503, "the queued job was dropped: nothing made");
}

/// Real thumbnails over HTTP with a real worker: while the worker is busy, a placeholder of the
/// photo's aspect ratio (202); waited for, the thumbnail in the format `Accept` asks for; 100
/// concurrent asks of one new key make one job; a text file is 415, a size out of bounds 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_come_as_a_placeholder_then_the_output_and_one_job_per_key() {
    let d = dirs();
    let files = d.tmp.path().join("photos");
    std::fs::create_dir_all(&files).unwrap();
    let photo = image::RgbImage::from_fn(1200, 800, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    photo.save(files.join("photo.jpg")).unwrap();
    std::fs::write(files.join("notes.txt"), b"not a picture").unwrap();
    write_big_gzip(&files.join("busy.gz"), 0);
    tcr(&d.data, &["index", files.to_str().unwrap(), "--ns", "photos"]).ok();
    let server = Server::start(&d.data, &["--worker-threads", "1"]).await;
    let client = client();
    let decode = |bytes: &[u8]| image::load_from_memory(bytes).unwrap();

    // The one worker busy with a long job: the thumbnail waits in the queue.
    let (status, _) = http_get(&client, &server.url("/ns/photos/busy.gz?derive=decompress")).await;
    assert_eq!(status, 202);
    let url = server.url("/ns/photos/photo.jpg?derive=thumbnail&size=300");
    let res = client.get(&url).header("accept", "image/webp,image/*").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 202);
    assert_eq!(res.headers()["content-type"], "image/webp");
    assert!(res.headers().contains_key("retry-after"));
    let placeholder = decode(&res.bytes().await.unwrap());
    assert_eq!(placeholder.width() * 800, placeholder.height() * 1200, "the photo's aspect ratio");

    let res = client.get(format!("{url}&wait=60s")).header("accept", "image/webp,image/*").send().await.unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert_eq!(res.headers()["content-type"], "image/webp");
    let thumb = decode(&res.bytes().await.unwrap());
    assert_eq!((thumb.width(), thumb.height()), (300, 200));
    let res = client.get(format!("{url}&format=jpeg&wait=60s")).send().await.unwrap();
    assert_eq!((res.status().as_u16(), res.headers()["content-type"].to_str().unwrap()), (200, "image/jpeg"));
    let thumb = decode(&res.bytes().await.unwrap());
    assert_eq!((thumb.width(), thumb.height()), (300, 200));

    let made = metric_of(&server, "done", "thumbnail").await;
    let url = server.url("/ns/photos/photo.jpg?derive=thumbnail&size=120&fit=cover&format=jpeg&wait=60s");
    let asks = (0..100).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move { http_get(&client, &url).await })
    });
    let answers: Vec<(u16, Vec<u8>)> = futures::future::join_all(asks).await.into_iter().map(|a| a.unwrap()).collect();
    assert!(answers.iter().all(|(status, body)| *status == 200 && *body == answers[0].1));
    let cover = decode(&answers[0].1);
    assert_eq!((cover.width(), cover.height()), (120, 120));
    assert_eq!(metric_of(&server, "done", "thumbnail").await, made + 1.0, "100 asks, one job");

    for (path, status) in [
        ("/ns/photos/notes.txt?derive=thumbnail&size=300&wait=30s", 415),
        ("/ns/photos/photo.jpg?derive=thumbnail&size=0", 400),
        ("/ns/photos/photo.jpg?derive=thumbnail&size=100000", 400),
        ("/ns/photos/photo.jpg?derive=thumbnail&size=300&fit=stretch", 400),
    ] {
        let (got, body) = http_get(&client, &server.url(path)).await;
        assert_eq!(got, status, "{path}: {}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_with_retry_after() {
    let d = dirs();
    let files = d.tmp.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    write_big_gzip(&files.join("a.gz"), 0);
    std::fs::write(files.join("b.gz"), gzip(b"small")).unwrap();
    tcr(&d.data, &["index", files.to_str().unwrap(), "--ns", "files"]).ok();
    let server = Server::start(&d.data, &["--worker-threads", "1", "--derive-queue", "1"]).await;
    let client = client();
    let (status, _) = http_get(&client, &server.url("/ns/files/a.gz?derive=decompress")).await;
    assert_eq!(status, 202);
    let res = client.get(server.url("/ns/files/b.gz?derive=decompress")).send().await.unwrap();
    assert_eq!(res.status().as_u16(), 503);
    assert!(res.headers().contains_key("retry-after"));
    let (status, body) = http_get(&client, &server.url("/ns/files/b.gz?derive=decompress&wait=0")).await;
    assert_eq!(status, 503, "still full: {}", String::from_utf8_lossy(&body));
    // Once the running job ends, there is room again.
    let (status, _) = http_get(&client, &server.url("/ns/files/a.gz?derive=decompress&wait=60s")).await;
    assert_eq!(status, 200);
    let (status, body) = http_get(&client, &server.url("/ns/files/b.gz?derive=decompress&wait=30s")).await;
    assert_eq!((status, body.as_slice()), (200, b"small".as_slice()));
}
