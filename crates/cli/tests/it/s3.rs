//! `serve --s3-listen`: refused without credentials, and with the environment's key pair a
//! second listener answering signed S3 requests, counted in `/metrics` and in `stats` (summed over
//! every process that served from the data directory).

use tiercache_testkit::sigv4::Signer;

use crate::common::{Server, dirs, free_port, run, tc, tcr};

const AK: &str = "cli-access-key";
const SK: &str = "cli-secret-key-0123456789";

#[test]
fn serve_s3_listen_without_credentials_refuses_to_start() {
    let d = dirs();
    let main = format!("127.0.0.1:{}", free_port());
    let s3 = format!("127.0.0.1:{}", free_port());
    let out = run(tc(&d.data).args(["serve", "--listen", &main, "--s3-listen", &s3]));
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("TIERCACHE_S3_ACCESS_KEY") && out.stderr.contains("--s3-anonymous-read"),
        "{}",
        out.stderr
    );
    // Half a key pair is refused too.
    let out =
        run(tc(&d.data).args(["serve", "--listen", &main, "--s3-listen", &s3]).env("TIERCACHE_S3_ACCESS_KEY", AK));
    assert_ne!(out.code, 0, "{}", out.stderr);
}

#[tokio::test]
async fn serve_s3_listen_with_env_credentials_answers_signed_requests() {
    let d = dirs();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = Server::start_with_env(
        &d.data,
        &["--s3-listen", &addr],
        &[("TIERCACHE_S3_ACCESS_KEY", AK), ("TIERCACHE_S3_SECRET_KEY", SK)],
    )
    .await;
    let signer = Signer { access_key: AK, secret_key: SK };
    let client = reqwest::Client::new();
    let send = async |method: &str, path: &str, body: &'static [u8]| {
        let hash = crate::common::hex_of(body);
        let mut req = client.request(method.parse().unwrap(), format!("http://{addr}{path}")).body(body);
        for (k, v) in signer.headers(method, &addr, path, &[], &hash) {
            req = req.header(k, v);
        }
        let res = req.send().await.unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    };
    let (status, text) = send("PUT", "/bkt", b"").await;
    assert_eq!(status, 200, "{text}\n{}", server.log_text());
    let (status, text) = send("PUT", "/bkt/hello.txt", b"hello").await;
    assert_eq!(status, 200, "{text}");
    let (status, text) = send("GET", "/", b"").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("<Name>bkt</Name>"), "{text}");
    let (status, text) = send("GET", "/bkt/hello.txt", b"").await;
    assert_eq!((status, text.as_str()), (200, "hello"));
    // Unsigned requests are refused.
    let res = client.get(format!("http://{addr}/bkt/hello.txt")).send().await.unwrap();
    assert_eq!(res.status(), 403);
    server.wait_metric("tiercache_s3_requests_total{op=\"ListBuckets\"}", 1.0).await;
    server.wait_metric("tiercache_s3_errors_total{code=\"AccessDenied\"}", 1.0).await;
    server.wait_metric("tiercache_s3_bytes_total{direction=\"in\"}", 5.0).await;
}

/// The server's peak resident memory (`VmHWM` in `/proc/<pid>/status`), in bytes.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/<pid>/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A PutObject of [`BIG_BYTES`] streams: the server's memory stays flat (its peak grows by less
/// than [`FLAT_BYTES`] over the whole upload and the download that follows), and the object read
/// back has every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_gib_body_streams_through_in_flat_memory() {
    use futures::StreamExt as _;
    use sha2::Digest as _;
    const BIG_BYTES: u64 = 5 << 30;
    const CHUNK_BYTES: usize = 1 << 20;
    const FLAT_BYTES: u64 = 128 << 20;
    let d = dirs();
    let addr = format!("127.0.0.1:{}", free_port());
    let server = Server::start_with_env(
        &d.data,
        &["--s3-listen", &addr],
        &[("TIERCACHE_S3_ACCESS_KEY", AK), ("TIERCACHE_S3_SECRET_KEY", SK)],
    )
    .await;
    let signer = Signer { access_key: AK, secret_key: SK };
    let client = reqwest::Client::new();
    let request = |method: &str, path: &str, extra: &[(&str, &str)]| {
        let mut req = client.request(method.parse().unwrap(), format!("http://{addr}{path}"));
        for (k, v) in signer.headers(method, &addr, path, extra, tiercache_testkit::sigv4::UNSIGNED_PAYLOAD) {
            req = req.header(k, v);
        }
        req
    };
    let res = request("PUT", "/big", &[]).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let before = peak_rss_bytes(server.pid);

    // Chunk i is a pattern of its own, hashed as it is sent.
    let sent = std::sync::Arc::new(std::sync::Mutex::new(sha2::Sha256::new()));
    let hasher = std::sync::Arc::clone(&sent);
    let body = futures::stream::iter(0..BIG_BYTES / CHUNK_BYTES as u64).map(move |i| {
        let chunk: Vec<u8> = (0..CHUNK_BYTES).map(|j| (i as usize * 31 + j * 7 + (j >> 12)) as u8).collect();
        hasher.lock().unwrap().update(&chunk);
        Ok::<_, std::io::Error>(bytes::Bytes::from(chunk))
    });
    let length = BIG_BYTES.to_string();
    let res = request("PUT", "/big/object", &[("content-length", &length)])
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}\n{}", res.text().await.unwrap(), server.log_text());
    let sent = std::sync::Arc::try_unwrap(sent).unwrap().into_inner().unwrap().finalize();

    let res = request("GET", "/big/object", &[]).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let (mut got, mut n) = (sha2::Sha256::new(), 0u64);
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        n += chunk.len() as u64;
        got.update(&chunk);
    }
    assert_eq!(n, BIG_BYTES);
    assert_eq!(got.finalize(), sent, "the object read back is the one sent");
    let after = peak_rss_bytes(server.pid);
    assert!(
        after < before + FLAT_BYTES,
        "peak memory grew from {} MiB to {} MiB over a {} MiB upload and download",
        before >> 20,
        after >> 20,
        BIG_BYTES >> 20
    );
}

/// Signed S3 requests to `addr`: `(status, body)`.
async fn send_signed(addr: &str, method: &str, path: &str, body: &'static [u8]) -> (u16, String) {
    let signer = Signer { access_key: AK, secret_key: SK };
    let hash = crate::common::hex_of(body);
    let mut req = reqwest::Client::new().request(method.parse().unwrap(), format!("http://{addr}{path}")).body(body);
    for (k, v) in signer.headers(method, addr, path, &[], &hash) {
        req = req.header(k, v);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// `stats` and `stats --json` show the S3 front door's requests per operation, errors per code
/// and bytes in and out, kept across restarts of the server.
#[tokio::test]
async fn stats_shows_the_s3_front_doors_counters() {
    let d = dirs();
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [("TIERCACHE_S3_ACCESS_KEY", AK), ("TIERCACHE_S3_SECRET_KEY", SK)];
    let mut server = Server::start_with_env(&d.data, &["--s3-listen", &addr], &env).await;
    assert_eq!(send_signed(&addr, "PUT", "/bkt", b"").await.0, 200, "{}", server.log_text());
    assert_eq!(send_signed(&addr, "PUT", "/bkt/hello.txt", b"hello").await.0, 200);
    assert_eq!(send_signed(&addr, "GET", "/bkt/hello.txt", b"").await, (200, "hello".to_owned()));
    assert_eq!(send_signed(&addr, "GET", "/bkt/missing", b"").await.0, 404);
    assert_eq!(send_signed(&addr, "GET", "/nobucket", b"").await.0, 404);
    server.stop();

    let json = tcr(&d.data, &["stats", "--json"]).ok().json();
    let front = &json["front"];
    let n = |name: &str| front[name].as_i64().unwrap_or_else(|| panic!("no {name} in {front}"));
    assert_eq!(n("s3.requests.CreateBucket"), 1);
    assert_eq!(n("s3.requests.PutObject"), 1);
    assert_eq!(n("s3.requests.GetObject"), 2);
    assert_eq!(n("s3.requests.ListObjects"), 1);
    assert_eq!(n("s3.errors.NoSuchKey"), 1);
    assert_eq!(n("s3.errors.NoSuchBucket"), 1);
    assert_eq!((n("s3.bytes_in"), n("s3.bytes_out")), (5, 5));

    // A second process adds to what the first counted.
    let mut server = Server::start_with_env(&d.data, &["--s3-listen", &addr], &env).await;
    assert_eq!(send_signed(&addr, "PUT", "/bkt/again.txt", b"again!").await.0, 200, "{}", server.log_text());
    server.stop();
    let out = tcr(&d.data, &["stats"]).ok();
    assert!(out.stdout.contains("S3 front door: 6 requests, 2 errors; 11 B in, 5 B out"), "{}", out.stdout);
    assert!(
        out.stdout.contains("S3 requests: CreateBucket 1, GetObject 2, ListObjects 1, PutObject 2"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("S3 errors: NoSuchBucket 1, NoSuchKey 1"), "{}", out.stdout);
}

/// The keys of an S3 listing answer, in order.
fn keys_of(xml: &str) -> Vec<String> {
    xml.split("<Key>").skip(1).map(|s| s[..s.find("</Key>").unwrap()].to_owned()).collect()
}

/// A directory namespace as a bucket: an object written through S3 is a file with its bytes; a
/// file written into the directory by hand is listed and served through S3 after `update`.
#[tokio::test]
async fn a_directory_bucket_round_trips_through_s3_after_update() {
    let d = dirs();
    let tree = d.tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("old")).unwrap();
    std::fs::write(tree.join("old/kept.txt"), b"kept").unwrap();
    tcr(&d.data, &["index", tree.to_str().unwrap(), "--ns", "media"]).ok();
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [("TIERCACHE_S3_ACCESS_KEY", AK), ("TIERCACHE_S3_SECRET_KEY", SK)];
    let server = Server::start_with_env(&d.data, &["--s3-listen", &addr], &env).await;

    let (status, text) = send_signed(&addr, "PUT", "/media/up/one.txt", b"written through s3").await;
    assert_eq!(status, 200, "{text}\n{}", server.log_text());
    assert_eq!(std::fs::read(tree.join("up/one.txt")).unwrap(), b"written through s3");
    assert_eq!(send_signed(&addr, "GET", "/media/up/one.txt", b"").await, (200, "written through s3".to_owned()));

    std::fs::create_dir_all(tree.join("hand")).unwrap();
    std::fs::write(tree.join("hand/two.txt"), b"written by hand").unwrap();
    tcr(&d.data, &["update", "--ns", "media"]).ok();
    let (status, text) = send_signed(&addr, "GET", "/media?list-type=2", b"").await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(keys_of(&text), ["hand/two.txt", "old/kept.txt", "up/one.txt"], "{text}");
    assert_eq!(send_signed(&addr, "GET", "/media/hand/two.txt", b"").await, (200, "written by hand".to_owned()));
}

/// With `serve --watch`, a file written into a directory bucket by hand is listed and served
/// through S3 without an `update`.
#[tokio::test]
async fn a_directory_bucket_follows_the_directory_while_watched() {
    let d = dirs();
    let tree = d.tmp.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("first.txt"), b"first").unwrap();
    tcr(&d.data, &["index", tree.to_str().unwrap(), "--ns", "media"]).ok();
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [("TIERCACHE_S3_ACCESS_KEY", AK), ("TIERCACHE_S3_SECRET_KEY", SK)];
    let server = Server::start_with_env(&d.data, &["--s3-listen", &addr, "--watch"], &env).await;

    std::fs::create_dir_all(tree.join("later")).unwrap();
    std::fs::write(tree.join("later/new.txt"), b"appeared").unwrap();
    let mut listed = Vec::new();
    for _ in 0..200 {
        let (status, text) = send_signed(&addr, "GET", "/media?list-type=2&prefix=later%2F", b"").await;
        assert_eq!(status, 200, "{text}");
        listed = keys_of(&text);
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(listed, ["later/new.txt"], "the watcher indexed the new file; log:\n{}", server.log_text());
    assert_eq!(send_signed(&addr, "GET", "/media/later/new.txt", b"").await, (200, "appeared".to_owned()));
}
