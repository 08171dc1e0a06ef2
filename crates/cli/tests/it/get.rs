//! `get`: entries, blobs, URLs, ranges, and failures that leave nothing behind.

use tiercache_testkit::{Behavior, Source, bytes};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_entries_blobs_urls_and_ranges() {
    let d = dirs();
    let src = Source::start().await;
    let one = bytes(60, 300_000);
    let two = bytes(61, 1000);
    let spaced = bytes(62, 777);
    src.put("dir/one.bin", one.clone());
    src.put("two", two.clone());
    src.put("dir/a b.txt", spaced.clone());
    tcr(&d.data, &["ns", "create", "files", "--source", &src.url()]).ok();

    // NAMESPACE/KEY to a file.
    let out = d.tmp.path().join("one.out");
    let o = tcr(&d.data, &["get", "files/dir/one.bin", "-o", out.to_str().unwrap()]).ok();
    assert!(o.stdout.is_empty(), "-o writes nothing to stdout");
    assert!(std::fs::read(&out).unwrap() == one);
    assert_eq!(src.counts("dir/one.bin").full, 1);

    // sha256:<hex> to standard output (the blob is now held).
    let o = tcr(&d.data, &["get", &digest(&one)]).ok();
    assert!(o.raw_stdout == one, "blob bytes on stdout");

    // A URL under the namespace's source, percent-encoded.
    let url = format!("{}two", src.url());
    let o = tcr(&d.data, &["get", &url, "--revalidate-after", "1h"]).ok();
    assert!(o.raw_stdout == two);
    assert_eq!(src.counts("two").full, 1);
    let o = tcr(&d.data, &["get", "files/two", "--revalidate-after", "1h"]).ok();
    assert!(o.raw_stdout == two);
    assert_eq!(src.counts("two").full, 1, "the URL and NAMESPACE/KEY name the same entry");
    let o = tcr(&d.data, &["get", &format!("{}dir/a%20b.txt", src.url())]).ok();
    assert!(o.raw_stdout == spaced);

    // Ranges, from the disk tier and from a cold read.
    let o = tcr(&d.data, &["get", "files/dir/one.bin", "--range", "10-19"]).ok();
    assert_eq!(o.raw_stdout, &one[10..20]);
    let o = tcr(&d.data, &["get", &digest(&one), "--range", "299990-"]).ok();
    assert_eq!(o.raw_stdout, &one[299_990..]);
    let cold = bytes(63, 50_000);
    src.put("cold", cold.clone());
    let o = tcr(&d.data, &["get", "files/cold", "--range", "10-19"]).ok();
    assert_eq!(o.raw_stdout, &cold[10..20]);
    let o = tcr(&d.data, &["get", "files/cold", "--range", "1000000-"]).expect_code(1);
    assert!(o.raw_stdout.is_empty());
    let o = tcr(&d.data, &["get", "files/cold", "--range", "x-y"]).expect_code(1);
    assert!(o.stderr.contains("--range"), "{}", o.stderr);

    // Malformed digests.
    let o = tcr(&d.data, &["get", "sha256:ABC"]).expect_code(1);
    assert!(o.stderr.contains("malformed digest"), "{}", o.stderr);
    let upper = format!("sha256:{}", hex_of(&one).to_uppercase());
    let o = tcr(&d.data, &["get", &upper]).expect_code(1);
    assert!(o.stderr.contains("malformed digest"), "{}", o.stderr);
    let o = tcr(&d.data, &["get", "md5:d41d8cd98f00b204e9800998ecf8427e"]).expect_code(1);
    assert!(o.stderr.contains("unsupported digest algorithm"), "{}", o.stderr);
    // Well formed but not held.
    let o = tcr(&d.data, &["get", &digest(b"never stored")]).expect_code(1);
    assert!(o.stderr.contains("not in the cache"), "{}", o.stderr);
    // Neither a digest, an entry nor a known URL.
    let o = tcr(&d.data, &["get", "justaword"]).expect_code(1);
    assert!(o.stderr.contains("expected NAMESPACE/KEY"), "{}", o.stderr);
    let o = tcr(&d.data, &["get", "http://127.0.0.1:9/elsewhere"]).expect_code(1);
    assert!(o.stderr.contains("no namespace's source covers"), "{}", o.stderr);
    let o = tcr(&d.data, &["get", "nosuch/key"]).expect_code(1);
    assert!(o.stderr.contains("no namespace named \"nosuch\""), "{}", o.stderr);
    let o = tcr(&d.data, &["get", "files/../etc/passwd"]).expect_code(1);
    assert!(o.stderr.contains("forbidden path segment"), "{}", o.stderr);
    tcr(&d.data, &["verify"]).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_failures_leave_no_output_file_and_store_nothing() {
    let d = dirs();
    let src = Source::start().await;
    tcr(&d.data, &["ns", "create", "f", "--source", &src.url()]).ok();
    let out = d.tmp.path().join("never.out");
    let out_s = out.to_str().unwrap();

    // The source answers 404.
    let o = tcr(&d.data, &["get", "f/missing", "-o", out_s]).expect_code(1);
    assert!(o.stderr.contains("404") || o.stderr.to_lowercase().contains("not found"), "{}", o.stderr);
    assert!(!out.exists(), "a failed get left {}", out.display());
    assert_eq!(src.counts("missing").full, 1);

    // The source fails with a 500.
    src.set_behavior("broken", Behavior::Status(500));
    tcr(&d.data, &["get", "f/broken", "-o", out_s]).expect_code(1);
    assert!(!out.exists());

    // The source closes the connection half-way through the body.
    let data = bytes(64, 200_000);
    src.put("cut", data.clone());
    src.set_behavior("cut", Behavior::CloseAfter(100_000));
    let o = tcr(&d.data, &["get", "f/cut", "-o", out_s]).expect_code(1);
    assert!(!out.exists(), "a partial body must not be left behind as if complete");
    assert!(!o.stderr.is_empty());
    // Same through standard output: a failure, never a silent short body.
    tcr(&d.data, &["get", "f/cut"]).expect_code(1);

    // Nothing was stored, and no temp file is left.
    let s = tcr(&d.data, &["stats", "--json"]).ok().json();
    assert_eq!((s["n_entries"].as_u64(), s["n_blobs"].as_u64()), (Some(0), Some(0)));
    assert!(temp_files(&d.data).is_empty(), "{:?}", temp_files(&d.data));
    tcr(&d.data, &["verify"]).ok();

    // Once the source behaves, the same get works.
    src.set_behavior("cut", Behavior::Normal);
    tcr(&d.data, &["get", "f/cut", "-o", out_s]).ok();
    assert!(std::fs::read(&out).unwrap() == data);
}
