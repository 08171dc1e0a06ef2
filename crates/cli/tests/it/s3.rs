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
