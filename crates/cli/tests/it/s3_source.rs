//! S3 buckets as sources through the binary, in front of a real S3-compatible server (s3s-fs):
//! the bucket's own listing, one fetch per object however many clients ask at once, ranges, revalidation after
//! `--revalidate-after`, 404 for a missing object, 403 for wrong keys, a metadata endpoint refused;
//! keys from the AWS variables or from the namespace's options, never shown.

use tiercache_testkit::bytes;
use tiercache_testkit::servers::{self, S3Server};

use crate::common::*;

const FETCHED: &str = "tiercache_source_fetches_total{result=\"ok\"}";
const NOT_MODIFIED: &str = "tiercache_source_fetches_total{result=\"not_modified\"}";

fn url_of(s3: &S3Server) -> String {
    format!("s3://{}/pre?endpoint={}&region={}", S3Server::BUCKET, s3.endpoint(), s3.region())
}

/// Writes object `pre/<key>` of the test bucket (as a file of the server's data directory).
fn put(s3: &S3Server, key: &str, data: &[u8]) {
    let path = s3.object_path(S3Server::BUCKET, &format!("pre/{key}"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// The AWS variables with the server's keys.
fn aws_env(s3: &S3Server) -> [(&'static str, &str); 2] {
    [("AWS_ACCESS_KEY_ID", s3.access_key()), ("AWS_SECRET_ACCESS_KEY", s3.secret_key())]
}

/// Twenty clients at once get an object with one fetch from the bucket; a range of an object not
/// cached yet is exact; a missing object is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_is_read_through_once_per_object() {
    let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    let (a, b) = (bytes(1, 2_500_000), bytes(2, 4_000_000));
    put(&s3, "dir/a.bin", &a);
    put(&s3, "b.bin", &b);
    let d = dirs();
    let out = tcr(&d.data, &["ns", "create", "bucket", "--source", &url_of(&s3)]).ok();
    assert!(
        out.stdout.contains("created namespace bucket (source: s3://tiercache-test/pre?endpoint="),
        "{}",
        out.stdout
    );
    let server = Server::start_with_env(&d.data, &["--revalidate-after", "1h"], &aws_env(&s3)).await;
    let http = client();
    // The listing is the bucket's, before anything was read, one page at a time.
    let list = async |query: &str| {
        let (status, body) = http_get(&http, &server.url(&format!("/ns/bucket/?{query}"))).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let page = list("delimiter=/&limit=1").await;
    assert_eq!(
        (page["entries"][0]["key"].as_str(), page["entries"][0]["size"].as_u64()),
        (Some("b.bin"), Some(4_000_000))
    );
    assert_eq!((page["is_truncated"].as_bool(), page["next_after"].as_str()), (Some(true), Some("b.bin")), "{page}");
    let page = list("delimiter=/&limit=1&after=b.bin").await;
    assert_eq!(page["common_prefixes"], serde_json::json!(["dir/"]), "{page}");
    assert_eq!(page["is_truncated"].as_bool(), Some(false), "{page}");
    assert_eq!(list("prefix=dir/").await["entries"][0]["key"].as_str(), Some("dir/a.bin"));
    assert_eq!(server.metric(FETCHED).await, 0.0, "listing reads no object");
    let gets: Vec<_> = (0..20)
        .map(|_| {
            let (http, url) = (http.clone(), server.url("/ns/bucket/dir/a.bin"));
            tokio::spawn(async move { http_get(&http, &url).await })
        })
        .collect();
    for g in gets {
        let (status, body) = g.await.unwrap();
        assert!(status == 200 && body == a, "status {status}");
    }
    // The fetch is counted once stored, which may be after the clients have their bytes.
    server.wait_metric(FETCHED, 1.0).await;
    let (status, body) = http_get(&http, &server.url("/ns/bucket/dir/a.bin")).await;
    assert!(status == 200 && body == a);
    assert_eq!(server.metric(FETCHED).await, 1.0, "one fetch for twenty-one clients");

    let resp = http.get(server.url("/ns/bucket/b.bin")).header("range", "bytes=3000000-3000999").send().await.unwrap();
    assert_eq!(resp.status(), 206);
    assert!(resp.bytes().await.unwrap()[..] == b[3_000_000..3_001_000]);
    let (status, body) = http_get(&http, &server.url("/ns/bucket/nothing/here")).await;
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
}

/// With `--revalidate-after 0s`, an unchanged object is answered from the cache after the source
/// said it still matches, and a changed one comes with its new bytes and ETag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_object_is_revalidated() {
    let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    let (v1, v2) = (bytes(3, 100_000), bytes(4, 120_000));
    put(&s3, "doc", &v1);
    let d = dirs();
    tcr(&d.data, &["ns", "create", "bucket", "--source", &url_of(&s3)]).ok();
    let server = Server::start_with_env(&d.data, &["--revalidate-after", "0s"], &aws_env(&s3)).await;
    let http = client();
    let get = async || {
        let resp = http.get(server.url("/ns/bucket/doc")).send().await.unwrap();
        let etag = resp.headers().get("etag").map(|v| v.to_str().unwrap().to_owned());
        (resp.status().as_u16(), etag, resp.bytes().await.unwrap().to_vec())
    };
    let (status, etag1, body) = get().await;
    assert!(status == 200 && body == v1);
    server.wait_metric(FETCHED, 1.0).await;
    let (_, _, body) = get().await;
    assert_eq!(body, v1);
    server.wait_metric(NOT_MODIFIED, 1.0).await;
    assert_eq!(server.metric(FETCHED).await, 1.0, "the unchanged object was not stored again");

    put(&s3, "doc", &v2);
    let (status, etag2, body) = get().await;
    assert!(status == 200 && body == v2, "status {status}");
    assert!(etag2.is_some() && etag2 != etag1, "{etag1:?} {etag2:?}");
}

/// Keys given with the namespace sign its requests without the AWS variables and never show in
/// `ns show`, `ns list` or an answer; wrong ones are a 403 saying the source refused; a metadata
/// endpoint is refused by `ns create`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_the_namespace_options_and_refusals() {
    let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    put(&s3, "o", b"object bytes");
    let d = dirs();
    let url = url_of(&s3);
    let create = |name: &str, secret: &str| {
        let mut cmd = tc(&d.data);
        cmd.args(["ns", "create", name, "--source", &url, "--s3-access-key", s3.access_key()]);
        run(cmd.env("TIERCACHE_S3_SOURCE_SECRET_KEY", secret)).ok();
    };
    create("good", s3.secret_key());
    create("bad", "not-the-secret");
    for args in [&["ns", "show", "good"][..], &["ns", "show", "good", "--json"], &["ns", "list", "--json"]] {
        let out = tcr(&d.data, args).ok();
        assert!(!out.stdout.contains(s3.secret_key()), "{args:?}: {}", out.stdout);
    }
    let server = Server::start(&d.data, &[]).await;
    let http = client();
    let (status, body) = http_get(&http, &server.url("/ns/good/o")).await;
    assert_eq!((status, &body[..]), (200, &b"object bytes"[..]));
    let (status, body) = http_get(&http, &server.url("/ns/bad/o")).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("refused access") && !body.contains("not-the-secret"), "{body}");
    assert!(!server.log_text().contains("not-the-secret"));

    let meta = "s3://bucket/pre?endpoint=http://169.254.169.254";
    let out = tcr(&d.data, &["ns", "create", "meta", "--source", meta]).expect_code(1);
    assert!(out.stderr.contains("--allow-source-address"), "{}", out.stderr);
}
