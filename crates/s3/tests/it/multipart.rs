//! Multipart uploads through the S3 front door: OpenDAL's writer (a real client's multipart
//! upload) makes one object with the multipart ETag; the protocol's errors, listing and abort by
//! hand-signed requests.

use md5::Digest as _;
use tiercache_testkit::{bytes, sha256};

use crate::harness;

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text.find(open).unwrap_or_else(|| panic!("no {open} in {text}")) + open.len();
    let end = text[start..].find(close).unwrap() + start;
    &text[start..end]
}

#[tokio::test]
async fn a_client_multipart_upload_is_one_object_with_the_multipart_etag() {
    let h = harness().await;
    let op = h.op("b");
    let data = bytes(9, 11 * 1024 * 1024 + 1);
    let mut w = op.writer_with("big.bin").chunk(5 * 1024 * 1024).await.unwrap();
    w.write(data.clone()).await.unwrap();
    w.close().await.unwrap();
    let got = op.read("big.bin").await.unwrap().to_vec();
    assert_eq!(sha256(&got), sha256(&data));
    let etag = op.stat("big.bin").await.unwrap().etag().map(str::to_owned).unwrap();
    assert!(etag.ends_with("-3\""), "three parts: {etag}");
    // The ETag of parts of 5 MiB, 5 MiB and the rest.
    let md5s: Vec<u8> = data.chunks(5 * 1024 * 1024).flat_map(|c| md5::Md5::digest(c).to_vec()).collect();
    assert_eq!(etag, format!("\"{}-3\"", hex::encode(md5::Md5::digest(&md5s))));
    let digest = h.cache.read_entry("b", "big.bin").await.unwrap().meta.digest.map(|d| d.to_string());
    assert_eq!(digest, Some(sha256(&data)), "the object's SHA-256 is computed");
}

#[tokio::test]
async fn bad_part_lists_are_s3_errors_and_an_aborted_upload_is_gone() {
    let h = harness().await;
    let a = h.send("POST", "/b/obj?uploads", &[("x-amz-meta-colour", "blue")], b"").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let id = between(&String::from_utf8_lossy(&a.body), "<UploadId>", "</UploadId>").to_owned();
    let small = vec![7u8; 1000];
    let mut etags = Vec::new();
    for n in 1..=2 {
        let a = h.send("PUT", &format!("/b/obj?partNumber={n}&uploadId={id}"), &[], &small).await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        etags.push(a.header("etag").unwrap().to_owned());
    }
    let list = h.send("GET", &format!("/b/obj?uploadId={id}"), &[], b"").await;
    assert_eq!(list.status, 200);
    assert_eq!(String::from_utf8_lossy(&list.body).matches("<Part>").count(), 2);
    let uploads = h.send("GET", "/b?uploads", &[], b"").await;
    assert!(String::from_utf8_lossy(&uploads.body).contains(&id));
    let complete = |order: [usize; 2]| {
        let parts: String = order
            .iter()
            .map(|&i| format!("<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>", i + 1, etags[i]))
            .collect();
        format!("<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>")
    };
    let path = format!("/b/obj?uploadId={id}");
    let a = h.send("POST", &path, &[], complete([1, 0]).as_bytes()).await;
    assert_eq!((a.status, a.code()), (400, "InvalidPartOrder".to_owned()));
    let a = h.send("POST", &path, &[], complete([0, 1]).as_bytes()).await;
    assert_eq!((a.status, a.code()), (400, "EntityTooSmall".to_owned()), "a first part of 1000 bytes");
    let wrong = complete([0, 1]).replace(&etags[1], "\"00000000000000000000000000000000\"");
    let a = h.send("POST", &path, &[], wrong.as_bytes()).await;
    assert_eq!((a.status, a.code()), (400, "InvalidPart".to_owned()));
    // An upload id is no capability for another key.
    let a = h.send("GET", &format!("/b/other?uploadId={id}"), &[], b"").await;
    assert_eq!((a.status, a.code()), (404, "NoSuchUpload".to_owned()));
    assert_eq!(h.send("DELETE", &path, &[], b"").await.status, 204);
    let a = h.send("GET", &path, &[], b"").await;
    assert_eq!((a.status, a.code()), (404, "NoSuchUpload".to_owned()));
    assert!(!h.holds("b", "obj").await, "nothing was stored");

    // A single small part is a whole object, and keeps the metadata given at creation.
    let a = h.send("POST", "/b/one?uploads", &[("x-amz-meta-colour", "blue")], b"").await;
    let id = between(&String::from_utf8_lossy(&a.body), "<UploadId>", "</UploadId>").to_owned();
    let a = h.send("PUT", &format!("/b/one?partNumber=1&uploadId={id}"), &[], &small).await;
    let etag = a.header("etag").unwrap().to_owned();
    let body = format!(
        "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{etag}</ETag></Part></CompleteMultipartUpload>"
    );
    let a = h.send("POST", &format!("/b/one?uploadId={id}"), &[], body.as_bytes()).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let head = h.send("HEAD", "/b/one", &[], b"").await;
    assert_eq!(head.header("x-amz-meta-colour"), Some("blue"));
    assert!(head.header("etag").is_some_and(|e| e.ends_with("-1\"")), "{:?}", head.header("etag"));
}

/// Starts an upload of `key` in bucket `b`; its id.
async fn create_upload(h: &crate::Harness, key: &str) -> String {
    let a = h.send("POST", &format!("/b/{key}?uploads"), &[], b"").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    between(&String::from_utf8_lossy(&a.body), "<UploadId>", "</UploadId>").to_owned()
}

/// The body of a CompleteMultipartUpload naming `etags` as parts 1, 2, ….
fn complete_body(etags: &[String]) -> String {
    let parts: String = etags
        .iter()
        .enumerate()
        .map(|(i, e)| format!("<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>", i + 1))
        .collect();
    format!("<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>")
}

/// S3's ETag of an object made of `parts`.
fn multipart_etag(parts: &[&[u8]]) -> String {
    let md5s: Vec<u8> = parts.iter().flat_map(|p| md5::Md5::digest(p).to_vec()).collect();
    format!("\"{}-{}\"", hex::encode(md5::Md5::digest(&md5s)), parts.len())
}

#[tokio::test]
async fn parts_copied_from_ranges_of_an_object_and_an_uploaded_part_complete_to_their_bytes() {
    let h = harness().await;
    const MIB: usize = 1024 * 1024;
    let src = bytes(21, 12 * MIB);
    // Another bucket (s3s parses x-amz-copy-source's bucket by S3's rules: 3 characters at least).
    h.cache.create_namespace("source", None, &Default::default()).await.unwrap();
    assert_eq!(h.send("PUT", "/source/src.bin", &[], &src).await.status, 200);
    let id = create_upload(&h, "dst.bin").await;
    let part = |n: u32| format!("/b/dst.bin?partNumber={n}&uploadId={id}");
    let copy = |range: &'static str| [("x-amz-copy-source", "/source/src.bin"), ("x-amz-copy-source-range", range)];

    // Part 1: the object's last 5 MiB; part 2: its first 6 MiB; part 3: uploaded.
    let mut etags = Vec::new();
    let a = h.send("PUT", &part(1), &copy("bytes=7340032-12582911"), b"").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    etags.push(between(&String::from_utf8_lossy(&a.body), "<ETag>", "</ETag>").replace("&quot;", "\""));
    let a = h.send("PUT", &part(2), &copy("bytes=0-6291455"), b"").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    etags.push(between(&String::from_utf8_lossy(&a.body), "<ETag>", "</ETag>").replace("&quot;", "\""));
    let tail = bytes(22, 1000);
    let a = h.send("PUT", &part(3), &[], &tail).await;
    assert_eq!(a.status, 200);
    etags.push(a.header("etag").unwrap().to_owned());
    let (p1, p2) = (&src[7 * MIB..], &src[..6 * MIB]);
    assert_eq!(etags[0], format!("\"{}\"", hex::encode(md5::Md5::digest(p1))), "a copied part's ETag is its MD5");
    assert_eq!(etags[1], format!("\"{}\"", hex::encode(md5::Md5::digest(p2))));

    // A whole object copied without a range, under a condition that holds.
    let src_etag = format!("\"{}\"", hex::encode(md5::Md5::digest(&src)));
    let whole = [("x-amz-copy-source", "/source/src.bin"), ("x-amz-copy-source-if-match", src_etag.as_str())];
    let a = h.send("PUT", &part(4), &whole, b"").await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let etag = between(&String::from_utf8_lossy(&a.body), "<ETag>", "</ETag>").replace("&quot;", "\"");
    assert_eq!(etag, src_etag, "the whole object's MD5");

    // Bad ranges, a missing source, a condition that does not hold: errors, nothing stored.
    let a = h.send("PUT", &part(5), &copy("bytes=9-3"), b"").await;
    assert_eq!((a.status, a.code()), (400, "InvalidArgument".to_owned()));
    let a = h.send("PUT", &part(5), &copy("0-3"), b"").await;
    assert_eq!((a.status, a.code()), (400, "InvalidArgument".to_owned()));
    let a = h.send("PUT", &part(5), &copy("bytes=0-12582912"), b"").await;
    assert_eq!((a.status, a.code()), (416, "InvalidRange".to_owned()), "one byte past the end");
    let a = h.send("PUT", &part(5), &[("x-amz-copy-source", "/source/nothing")], b"").await;
    assert_eq!((a.status, a.code()), (404, "NoSuchKey".to_owned()));
    let stale = [("x-amz-copy-source", "/source/src.bin"), ("x-amz-copy-source-if-none-match", src_etag.as_str())];
    let a = h.send("PUT", &part(5), &stale, b"").await;
    assert_eq!((a.status, a.code()), (412, "PreconditionFailed".to_owned()));
    let a = h.send("PUT", &part(5), &[("x-amz-copy-source", "/source/src.bin")], b"").await;
    assert_eq!(a.status, 200, "a copy into a part that had failed before");
    let list = h.send("GET", &format!("/b/dst.bin?uploadId={id}"), &[], b"").await;
    assert_eq!(String::from_utf8_lossy(&list.body).matches("<Part>").count(), 5);

    // Parts 1 to 3 make the object.
    let a = h.send("POST", &format!("/b/dst.bin?uploadId={id}"), &[], complete_body(&etags).as_bytes()).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let got = h.send("GET", "/b/dst.bin", &[], b"").await;
    let expect: Vec<u8> = [p1, p2, &tail[..]].concat();
    assert_eq!(sha256(&got.body), sha256(&expect));
    assert_eq!(got.header("etag").unwrap(), multipart_etag(&[p1, p2, &tail]));
}

/// Uploads `parts` to a new upload of `key` and completes it; the completion's answer.
async fn multipart_object(h: &crate::Harness, key: &str, parts: &[&[u8]], extra: &[(&str, &str)]) -> crate::Answer {
    let id = create_upload(h, key).await;
    let mut etags = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let a = h.send("PUT", &format!("/b/{key}?partNumber={}&uploadId={id}", i + 1), &[], p).await;
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        etags.push(a.header("etag").unwrap().to_owned());
    }
    h.send("POST", &format!("/b/{key}?uploadId={id}"), extra, complete_body(&etags).as_bytes()).await
}

#[tokio::test]
async fn part_numbers_read_the_parts_of_a_multipart_object_and_the_whole_of_another() {
    let h = harness().await;
    const MIB: usize = 1024 * 1024;
    let (p1, p2, p3) = (bytes(31, 5 * MIB), bytes(32, 5 * MIB + 7), bytes(33, 1000));
    let a = multipart_object(&h, "mp", &[&p1, &p2, &p3], &[]).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let total = p1.len() + p2.len() + p3.len();

    let a = h.send("GET", "/b/mp?partNumber=2", &[], b"").await;
    assert_eq!(a.status, 206);
    assert_eq!(a.header("x-amz-mp-parts-count"), Some("3"));
    let (first, last) = (p1.len(), p1.len() + p2.len() - 1);
    assert_eq!(a.header("content-range"), Some(format!("bytes {first}-{last}/{total}").as_str()));
    assert_eq!(sha256(&a.body), sha256(&p2));
    assert_eq!(a.header("etag").unwrap(), multipart_etag(&[&p1, &p2, &p3]), "the object's ETag");
    let a = h.send("GET", "/b/mp?partNumber=1", &[], b"").await;
    assert_eq!((a.status, sha256(&a.body)), (206, sha256(&p1)));
    let a = h.send("HEAD", "/b/mp?partNumber=3", &[], b"").await;
    assert_eq!(a.header("content-length"), Some("1000"));
    assert_eq!(a.header("x-amz-mp-parts-count"), Some("3"));
    let a = h.send("GET", "/b/mp?partNumber=4", &[], b"").await;
    assert_eq!((a.status, a.code()), (416, "InvalidPartNumber".to_owned()));
    let a = h.send("GET", "/b/mp?partNumber=0", &[], b"").await;
    assert_eq!((a.status, a.code()), (400, "InvalidArgument".to_owned()));
    let a = h.send("GET", "/b/mp?partNumber=1", &[("range", "bytes=0-1")], b"").await;
    assert_eq!((a.status, a.code()), (400, "InvalidArgument".to_owned()));

    // An object of one PutObject has one part: itself.
    let one = bytes(34, 3000);
    assert_eq!(h.send("PUT", "/b/one", &[], &one).await.status, 200);
    let a = h.send("GET", "/b/one?partNumber=1", &[], b"").await;
    assert_eq!((a.status, a.body.clone()), (200, one.clone()));
    assert_eq!(a.header("x-amz-mp-parts-count"), Some("1"));
    let a = h.send("HEAD", "/b/one?partNumber=2", &[], b"").await;
    assert_eq!(a.status, 416);
    let a = h.send("GET", "/b/one?partNumber=2", &[], b"").await;
    assert_eq!((a.status, a.code()), (416, "InvalidPartNumber".to_owned()));

    // A multipart object rewritten whole has one part.
    assert_eq!(h.send("PUT", "/b/mp", &[], &one).await.status, 200);
    let a = h.send("GET", "/b/mp?partNumber=2", &[], b"").await;
    assert_eq!((a.status, a.code()), (416, "InvalidPartNumber".to_owned()));
    let a = h.send("GET", "/b/mp?partNumber=1", &[], b"").await;
    assert_eq!((a.status, a.body), (200, one));
}

#[tokio::test]
async fn of_concurrent_puts_of_a_new_key_with_if_none_match_exactly_one_succeeds() {
    let h = harness().await;
    let bodies: Vec<Vec<u8>> = (0..16).map(|i| bytes(40 + i, 64 * 1024)).collect();
    let puts = bodies.iter().map(|b| h.send("PUT", "/b/race", &[("if-none-match", "*")], b));
    let answers = futures::future::join_all(puts).await;
    let won: Vec<usize> = answers.iter().enumerate().filter(|(_, a)| a.status == 200).map(|(i, _)| i).collect();
    assert_eq!(won.len(), 1, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    for a in answers.iter().filter(|a| a.status != 200) {
        assert_eq!((a.status, a.code()), (412, "PreconditionFailed".to_owned()));
    }
    let got = h.send("GET", "/b/race", &[], b"").await;
    assert_eq!(got.body, bodies[won[0]], "the object is the winner's");
    assert_eq!(got.header("etag"), answers[won[0]].header("etag"));

    // A Complete with If-None-Match: * of a key that exists: refused, the object left as it was.
    let part = bytes(60, 100);
    let a = multipart_object(&h, "race", &[&part], &[("if-none-match", "*")]).await;
    assert_eq!((a.status, a.code()), (412, "PreconditionFailed".to_owned()));
    assert_eq!(h.send("GET", "/b/race", &[], b"").await.body, bodies[won[0]]);
    let a = multipart_object(&h, "fresh", &[&part], &[("if-none-match", "*")]).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(h.send("GET", "/b/fresh", &[], b"").await.body, part);
}

/// Every text between `open` and `close` in `text`, in order.
fn all_between(text: &str, open: &str, close: &str) -> Vec<String> {
    text.split(open).skip(1).map(|rest| rest[..rest.find(close).unwrap()].to_owned()).collect()
}

#[tokio::test]
async fn upload_listings_group_by_a_delimiter_and_page_by_key_and_upload_id() {
    let h = harness().await;
    let mut ids = std::collections::BTreeMap::<String, Vec<String>>::new();
    for key in ["a/1", "a/2", "a/2", "b/x/y", "c", "d/e"] {
        ids.entry(key.to_owned()).or_default().push(create_upload(&h, key).await);
    }
    ids.values_mut().for_each(|v| v.sort());
    let list = |query: String| {
        let h = &h;
        async move {
            let a = h.send("GET", &format!("/b?uploads{query}"), &[], b"").await;
            assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
            String::from_utf8_lossy(&a.body).into_owned()
        }
    };
    let keys = |t: &str| all_between(t, "<Key>", "</Key>");
    let prefixes = |t: &str| all_between(t, "<CommonPrefixes><Prefix>", "</Prefix>");

    let t = list("&delimiter=%2F".into()).await;
    assert_eq!(keys(&t), ["c"]);
    assert_eq!(prefixes(&t), ["a/", "b/", "d/"]);
    assert!(t.contains("<IsTruncated>false</IsTruncated>"), "{t}");

    // Two at a time: prefixes and uploads count alike; a page may end on a prefix.
    let t = list("&delimiter=%2F&max-uploads=2".into()).await;
    assert_eq!((keys(&t), prefixes(&t)), (vec![], vec!["a/".to_owned(), "b/".to_owned()]));
    assert!(t.contains("<IsTruncated>true</IsTruncated>"), "{t}");
    assert_eq!(between(&t, "<NextKeyMarker>", "</NextKeyMarker>"), "b/");
    let t = list("&delimiter=%2F&max-uploads=2&key-marker=b%2F".into()).await;
    assert_eq!((keys(&t), prefixes(&t)), (vec!["c".to_owned()], vec!["d/".to_owned()]));
    assert!(t.contains("<IsTruncated>false</IsTruncated>"), "{t}");

    // Within a prefix, deeper levels group under it.
    let t = list("&delimiter=%2F&prefix=b%2F".into()).await;
    assert_eq!((keys(&t), prefixes(&t)), (vec![], vec!["b/x/".to_owned()]), "{t}");
    let t = list("&delimiter=%2F&prefix=a%2F".into()).await;
    assert_eq!(keys(&t), ["a/1", "a/2", "a/2"]);

    // Paging by key and upload id: the two uploads of a/2 fall on two pages.
    let t = list("&prefix=a%2F&max-uploads=2".into()).await;
    assert_eq!(keys(&t), ["a/1", "a/2"]);
    assert_eq!(between(&t, "<NextKeyMarker>", "</NextKeyMarker>"), "a/2");
    let next_id = between(&t, "<NextUploadIdMarker>", "</NextUploadIdMarker>").to_owned();
    assert_eq!(next_id, ids["a/2"][0]);
    let t = list(format!("&prefix=a%2F&max-uploads=2&key-marker=a%2F2&upload-id-marker={next_id}")).await;
    assert_eq!(keys(&t), ["a/2"]);
    assert_eq!(all_between(&t, "<UploadId>", "</UploadId>"), [ids["a/2"][1].clone()]);
    assert!(t.contains("<IsTruncated>false</IsTruncated>"), "{t}");
    // A key marker alone resumes after every upload of that key.
    let t = list("&key-marker=a%2F2".into()).await;
    assert_eq!(keys(&t), ["b/x/y", "c", "d/e"]);
}
