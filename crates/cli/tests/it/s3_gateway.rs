//! tiercache as a caching S3 gateway: its S3 front door (`serve --s3-listen`) over a namespace
//! whose source is an S3 bucket, driven by the aws CLI. In front of s3s-fs: an object read twice
//! is fetched once, ranges are exact, the bucket is listed through it with objects never read,
//! and a changed object is served new after revalidation. s3s-fs ignores `If-None-Match`, so a
//! revalidation ending in 304 is shown with a second tiercache's own S3 front door as the bucket:
//! the body is not sent again.

use std::path::Path;
use std::process::Command;

use tiercache_testkit::bytes;
use tiercache_testkit::servers::{self, S3Server};

use crate::common::*;

const FETCHED: &str = "tiercache_source_fetches_total{result=\"ok\"}";
const NOT_MODIFIED: &str = "tiercache_source_fetches_total{result=\"not_modified\"}";
const BYTES_OUT: &str = "tiercache_s3_bytes_total{direction=\"out\"}";

/// The front doors' key pair (each tiercache's, and what the second one signs with).
const AK: &str = "gateway-access-key";
const SK: &str = "gateway-secret-key-0123456789";

/// Runs the aws CLI against `endpoint` with [`AK`]; its stdout, or a panic with what it said.
fn aws(tmp: &Path, endpoint: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("aws");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("AWS_")) {
        cmd.env_remove(k);
    }
    let out = cmd
        .args(["--endpoint-url", endpoint])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", AK)
        .env("AWS_SECRET_ACCESS_KEY", SK)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", tmp.join("aws-config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", tmp.join("aws-credentials"))
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .output()
        .expect("the aws CLI (pip install awscli)");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "aws {args:?} failed: {stderr}\n{stdout}");
    stdout.into_owned()
}

/// `aws s3api get-object` of `key` (with `range`, if given) into a file; its bytes.
fn get(tmp: &Path, endpoint: &str, bucket: &str, key: &str, range: Option<&str>) -> Vec<u8> {
    let file = tmp.join("got");
    let file_s = file.to_str().unwrap();
    let mut args = vec!["s3api", "get-object", "--bucket", bucket, "--key", key];
    if let Some(r) = range {
        args.extend(["--range", r]);
    }
    args.push(file_s);
    aws(tmp, endpoint, &args);
    std::fs::read(&file).unwrap()
}

/// Writes object `pre/<key>` of the test bucket (a file of the server's data directory).
fn put(s3: &S3Server, key: &str, data: &[u8]) {
    let path = s3.object_path(S3Server::BUCKET, &format!("pre/{key}"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// The environment of a gateway: its front door's key, and the source's.
fn env_of<'a>(source_ak: &'a str, source_sk: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("TIERCACHE_S3_ACCESS_KEY", AK),
        ("TIERCACHE_S3_SECRET_KEY", SK),
        ("AWS_ACCESS_KEY_ID", source_ak),
        ("AWS_SECRET_ACCESS_KEY", source_sk),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caching_gateway_in_front_of_s3s_fs() {
    let Some(s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    let (a, v1, v2) = (bytes(11, 3_000_000), bytes(12, 50_000), bytes(13, 70_000));
    put(&s3, "dir/a.bin", &a);
    put(&s3, "doc", &v1);
    for i in 0..30 {
        put(&s3, &format!("many/{i:02}"), b"never read");
    }
    let d = dirs();
    let url = format!("s3://{}/pre?endpoint={}&region={}", S3Server::BUCKET, s3.endpoint(), s3.region());
    tcr(&d.data, &["ns", "create", "gw", "--source", &url]).ok();
    let tmp = d.tmp.path();

    let addr = format!("127.0.0.1:{}", free_port());
    let ep = format!("http://{addr}");
    let env = env_of(s3.access_key(), s3.secret_key());
    let mut server = Server::start_with_env(&d.data, &["--s3-listen", &addr, "--revalidate-after", "1h"], &env).await;
    assert!(get(tmp, &ep, "gw", "dir/a.bin", None) == a);
    server.wait_metric(FETCHED, 1.0).await;
    assert!(get(tmp, &ep, "gw", "dir/a.bin", None) == a);
    assert!(get(tmp, &ep, "gw", "dir/a.bin", Some("bytes=2000000-2000999"))[..] == a[2_000_000..2_001_000]);
    assert_eq!(server.metric(FETCHED).await, 1.0, "one fetch from s3s-fs for three reads");
    // A range of an object not read yet.
    assert!(get(tmp, &ep, "gw", "doc", Some("bytes=100-199"))[..] == v1[100..200]);
    // The bucket is listed through the gateway, objects never read included.
    let listed = aws(tmp, &ep, &["s3", "ls", "--recursive", "s3://gw/"]);
    assert_eq!(listed.lines().filter(|l| l.contains("many/")).count(), 30, "{listed}");
    assert!(listed.contains("dir/a.bin") && listed.contains(" 3000000 "), "{listed}");
    server.stop();

    // Revalidated on every read: the changed object comes new.
    let mut server = Server::start_with_env(&d.data, &["--s3-listen", &addr, "--revalidate-after", "0s"], &env).await;
    assert!(get(tmp, &ep, "gw", "doc", None) == v1);
    put(&s3, "doc", &v2);
    assert!(get(tmp, &ep, "gw", "doc", None) == v2, "the changed object is served new");
    let head = aws(tmp, &ep, &["s3api", "head-object", "--bucket", "gw", "--key", "doc"]);
    assert!(head.contains("\"ContentLength\": 70000"), "{head}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revalidation_against_a_tiercache_bucket_ends_in_304() {
    // The remote bucket: a tiercache's own S3 front door.
    let origin_dirs = dirs();
    let origin_addr = format!("127.0.0.1:{}", free_port());
    let origin_ep = format!("http://{origin_addr}");
    let front_only = [("TIERCACHE_S3_ACCESS_KEY", AK), ("TIERCACHE_S3_SECRET_KEY", SK)];
    let origin = Server::start_with_env(&origin_dirs.data, &["--s3-listen", &origin_addr], &front_only).await;
    let tmp = origin_dirs.tmp.path();
    let (v1, v2) = (bytes(21, 200_000), bytes(22, 210_000));
    std::fs::write(tmp.join("v1"), &v1).unwrap();
    std::fs::write(tmp.join("v2"), &v2).unwrap();
    aws(tmp, &origin_ep, &["s3", "mb", "s3://origin"]);
    aws(tmp, &origin_ep, &["s3", "cp", tmp.join("v1").to_str().unwrap(), "s3://origin/k/obj"]);

    // The gateway, revalidating on every read.
    let d = dirs();
    let url = format!("s3://origin?endpoint={origin_ep}&region=us-east-1");
    tcr(&d.data, &["ns", "create", "gw", "--source", &url]).ok();
    let addr = format!("127.0.0.1:{}", free_port());
    let ep = format!("http://{addr}");
    let gateway =
        Server::start_with_env(&d.data, &["--s3-listen", &addr, "--revalidate-after", "0s"], &env_of(AK, SK)).await;
    assert!(get(tmp, &ep, "gw", "k/obj", None) == v1);
    gateway.wait_metric(FETCHED, 1.0).await;
    origin.wait_metric(BYTES_OUT, 200_000.0).await;
    assert!(get(tmp, &ep, "gw", "k/obj", None) == v1);
    assert!(get(tmp, &ep, "gw", "k/obj", None) == v1);
    gateway.wait_metric(NOT_MODIFIED, 2.0).await;
    assert_eq!(gateway.metric(FETCHED).await, 1.0);
    assert_eq!(origin.metric(BYTES_OUT).await, 200_000.0, "the body was not sent again");

    aws(tmp, &origin_ep, &["s3", "cp", tmp.join("v2").to_str().unwrap(), "s3://origin/k/obj"]);
    assert!(get(tmp, &ep, "gw", "k/obj", None) == v2, "the changed object is served new");
    assert_eq!(gateway.metric(FETCHED).await, 2.0);
    // Listed through both front doors.
    let listed = aws(tmp, &ep, &["s3", "ls", "--recursive", "s3://gw/"]);
    assert!(listed.contains(" 210000 k/obj"), "{listed}");
}
