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
