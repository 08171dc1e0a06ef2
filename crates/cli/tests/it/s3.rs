//! `serve --s3-listen`: refused without credentials, and with the environment's key pair a
//! second listener answering signed S3 requests, counted in `/metrics`.

use tiercache_testkit::sigv4::Signer;

use crate::common::{Server, dirs, free_port, run, tc};

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
