//! Bad input the issue names, beyond those of the other files: a client going away in the middle
//! of a part, aws-chunked bodies whose chunk signatures are wrong or whose last chunk is cut, and
//! two Completes of one upload at once. Each leaves nothing stored and nothing lost.

use sha2::{Digest as _, Sha256};
use tiercache_testkit::sigv4::{Signer, hmac};
use tiercache_testkit::{bytes, sha256};

use crate::{AK, Harness, SK, harness};

const MIB: usize = 1024 * 1024;

fn between(text: &str, open: &str, close: &str) -> String {
    let start = text.find(open).unwrap_or_else(|| panic!("no {open} in {text}")) + open.len();
    text[start..start + text[start..].find(close).unwrap()].to_owned()
}

async fn create_upload(h: &Harness, key: &str) -> String {
    let a = h.send("POST", &format!("/b/{key}?uploads"), &[], b"").await;
    assert_eq!(a.status, 200);
    between(&String::from_utf8_lossy(&a.body), "<UploadId>", "</UploadId>")
}

fn complete_body(etags: &[String]) -> String {
    let parts: String = etags
        .iter()
        .enumerate()
        .map(|(i, e)| format!("<Part><PartNumber>{}</PartNumber><ETag>{e}</ETag></Part>", i + 1))
        .collect();
    format!("<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>")
}

/// The files ending in `.part` under `dir` (temp files), recursively.
fn temp_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            found.extend(temp_files(&path));
        } else if path.extension().is_some_and(|x| x == "part") {
            found.push(path);
        }
    }
    found
}

#[tokio::test]
async fn a_client_gone_mid_part_records_nothing_and_the_upload_completes_with_its_other_parts() {
    let h = harness().await;
    let id = create_upload(&h, "obj").await;
    let path = format!("/b/obj?partNumber=2&uploadId={id}");
    let declared = (8 * MIB).to_string();
    let (status, _) = h.raw("PUT", &path, &[("content-length", &declared)], &bytes(1, MIB)).await;
    assert_ne!(status, 200);
    // The server noticed once it answered or closed; its temp file goes with the failed write.
    let data = h.dir.path().join("data");
    for _ in 0..100 {
        if temp_files(&data).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(temp_files(&data), Vec::<std::path::PathBuf>::new(), "no temp file left");
    let list = h.send("GET", &format!("/b/obj?uploadId={id}"), &[], b"").await;
    assert_eq!(String::from_utf8_lossy(&list.body).matches("<Part>").count(), 0, "no part recorded");

    let (p1, p2) = (bytes(2, 5 * MIB), bytes(3, 100));
    let mut etags = Vec::new();
    for (n, p) in [(1, &p1), (2, &p2)] {
        let a = h.send("PUT", &format!("/b/obj?partNumber={n}&uploadId={id}"), &[], p).await;
        assert_eq!(a.status, 200);
        etags.push(a.header("etag").unwrap().to_owned());
    }
    let a = h.send("POST", &format!("/b/obj?uploadId={id}"), &[], complete_body(&etags).as_bytes()).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let got = h.send("GET", "/b/obj", &[], b"").await;
    assert_eq!(sha256(&got.body), sha256(&[p1, p2].concat()));
}

/// How to spoil an aws-chunked body.
#[derive(Clone, Copy, PartialEq)]
enum Spoil {
    Nothing,
    /// The second chunk's signature is another's.
    WrongSignature,
    /// The body stops inside its last data chunk.
    Truncated,
}

/// PUTs `data` to `path` as a signed aws-chunked body (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`) of
/// 64 KiB chunks, each signed as SigV4 says: the string to sign is
/// `AWS4-HMAC-SHA256-PAYLOAD \n date \n scope \n previous signature \n sha256("") \n sha256(chunk)`,
/// the first previous signature being the request's own.
async fn put_chunked(h: &Harness, path: &str, data: &[u8], spoil: Spoil) -> crate::Answer {
    let host = h.addr.to_string();
    let decoded = data.len().to_string();
    let extra = [("content-encoding", "aws-chunked"), ("x-amz-decoded-content-length", decoded.as_str())];
    let signer = Signer { access_key: AK, secret_key: SK };
    let headers = signer.headers("PUT", &host, path, &extra, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
    let get = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap();
    let amz_date = get("x-amz-date");
    let date = &amz_date[..8];
    let scope = format!("{date}/us-east-1/s3/aws4_request");
    let mut key = hmac(format!("AWS4{SK}").as_bytes(), date.as_bytes());
    for part in ["us-east-1", "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let mut previous = get("authorization").rsplit_once("Signature=").unwrap().1.to_owned();
    let empty = hex::encode(Sha256::digest(b""));
    let mut body = Vec::new();
    let chunks: Vec<&[u8]> = data.chunks(64 * 1024).chain(std::iter::once(&[][..])).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let to_sign = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{previous}\n{empty}\n{}",
            hex::encode(Sha256::digest(chunk))
        );
        let mut signature = hex::encode(hmac(&key, to_sign.as_bytes()));
        if spoil == Spoil::WrongSignature && i == 1 {
            signature = hex::encode(hmac(&key, b"another chunk"));
        }
        body.extend(format!("{:x};chunk-signature={signature}\r\n", chunk.len()).as_bytes());
        body.extend(*chunk);
        body.extend(b"\r\n");
        previous = signature;
    }
    if spoil == Spoil::Truncated {
        // Cut inside the last data chunk: its end, and the final empty chunk, never come.
        let last_data = chunks[chunks.len() - 2].len();
        let final_chunk = format!("0;chunk-signature={previous}\r\n\r\n").len();
        body.truncate(body.len() - final_chunk - 2 - last_data / 2);
    }
    let mut req = reqwest::Client::new().put(format!("http://{host}{path}")).body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    crate::Answer { status, headers, body: res.bytes().await.unwrap().to_vec() }
}

#[tokio::test]
async fn signed_aws_chunked_bodies_are_stored_only_when_every_chunk_checks_out() {
    let h = harness().await;
    let data = bytes(7, 200 * 1024 + 17);
    let a = put_chunked(&h, "/b/good", &data, Spoil::Nothing).await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    assert_eq!(h.send("GET", "/b/good", &[], b"").await.body, data);

    let a = put_chunked(&h, "/b/forged", &data, Spoil::WrongSignature).await;
    assert_eq!((a.status, a.code()), (403, "SignatureDoesNotMatch".to_owned()));
    assert!(!h.holds("b", "forged").await, "nothing stored");

    let a = put_chunked(&h, "/b/cut", &data, Spoil::Truncated).await;
    assert!((400..500).contains(&a.status), "{} {}", a.status, String::from_utf8_lossy(&a.body));
    assert!(!h.holds("b", "cut").await, "nothing stored");

    // A part sent so is checked the same way.
    let id = create_upload(&h, "mp").await;
    let a = put_chunked(&h, &format!("/b/mp?partNumber=1&uploadId={id}"), &data, Spoil::WrongSignature).await;
    assert_eq!((a.status, a.code()), (403, "SignatureDoesNotMatch".to_owned()));
    let list = h.send("GET", &format!("/b/mp?uploadId={id}"), &[], b"").await;
    assert_eq!(String::from_utf8_lossy(&list.body).matches("<Part>").count(), 0, "no part recorded");
}

#[tokio::test]
async fn two_completes_of_one_upload_at_once_make_one_whole_object() {
    let h = harness().await;
    for round in 0..4u64 {
        let key = format!("twice{round}");
        let id = create_upload(&h, &key).await;
        let (p1, p2) = (bytes(10 + round, 5 * MIB), bytes(20 + round, 3000));
        let mut etags = Vec::new();
        for (n, p) in [(1, &p1), (2, &p2)] {
            let a = h.send("PUT", &format!("/b/{key}?partNumber={n}&uploadId={id}"), &[], p).await;
            etags.push(a.header("etag").unwrap().to_owned());
        }
        let body = complete_body(&etags);
        let path = format!("/b/{key}?uploadId={id}");
        let (a, b) =
            tokio::join!(h.send("POST", &path, &[], body.as_bytes()), h.send("POST", &path, &[], body.as_bytes()));
        let etag_of = |x: &crate::Answer| between(&String::from_utf8_lossy(&x.body), "<ETag>", "</ETag>");
        let ok: Vec<&crate::Answer> = [&a, &b].into_iter().filter(|x| x.status == 200).collect();
        assert!(!ok.is_empty(), "one of them completes");
        for x in [&a, &b] {
            if x.status != 200 {
                assert_eq!((x.status, x.code()), (404, "NoSuchUpload".to_owned()));
            }
        }
        if ok.len() == 2 {
            assert_eq!(etag_of(ok[0]), etag_of(ok[1]), "the same answer");
        }
        let got = h.send("GET", &format!("/b/{key}"), &[], b"").await;
        assert_eq!(sha256(&got.body), sha256(&[p1, p2].concat()), "never a corrupt object");
        assert_eq!(h.send("GET", &path, &[], b"").await.status, 404, "the upload is gone");
    }
}
