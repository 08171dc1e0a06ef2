//! A bucket whose namespace has an S3 source lists the remote bucket below the source's prefix
//! (a real s3s-fs), objects never read included: prefix, delimiter, pages by continuation token
//! and by v1 marker. A source that cannot be listed is `ServiceUnavailable`, not a short page.

use tiercache_engine::{NamespaceOptions, Secret};
use tiercache_testkit::servers::{self, S3Server};

use crate::harness;
use crate::listing::values;

/// Writes object `pre/<key>` of the test bucket (a file of the server's data directory).
fn put(s3: &S3Server, key: &str, data: &[u8]) {
    let path = s3.object_path(S3Server::BUCKET, &format!("pre/{key}"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// Every page of `query` (`list-type=2` or v1), by continuation token or marker: the keys, the
/// common prefixes and the number of pages.
async fn all_pages(h: &crate::Harness, query: &str, is_v2: bool) -> (Vec<String>, Vec<String>, usize) {
    let (mut keys, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut next: Option<String> = None;
    loop {
        let q = match (&next, is_v2) {
            (Some(t), true) => format!("{query}&continuation-token={t}"),
            (Some(m), false) => format!("{query}&marker={}", urlencoding(m)),
            (None, _) => query.to_owned(),
        };
        let a = h.send("GET", &q, &[], b"").await;
        let text = String::from_utf8_lossy(&a.body).into_owned();
        assert_eq!(a.status, 200, "{text}");
        pages += 1;
        keys.extend(values(&text, "Key"));
        let inner = text.split("<CommonPrefixes>").skip(1).map(|s| values(s, "Prefix").remove(0));
        prefixes.extend(inner);
        let tag = if is_v2 { "NextContinuationToken" } else { "NextMarker" };
        next = values(&text, tag).into_iter().next();
        if next.is_none() {
            assert!(text.contains("<IsTruncated>false</IsTruncated>"), "{text}");
            return (keys, prefixes, pages);
        }
        assert!(text.contains("<IsTruncated>true</IsTruncated>") && pages < 1000, "{text}");
    }
}

fn urlencoding(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_source_bucket_lists_the_remote_keys_in_pages() {
    let Some(mut s3) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    // 2 500 keys in five directories, two top-level keys, one deeper key; one key outside the
    // source's prefix.
    let mut expected = Vec::new();
    for i in 0..2500 {
        let k = format!("d{}/k{i:04}", i % 5);
        put(&s3, &k, format!("v{i}").as_bytes());
        expected.push(k);
    }
    for k in ["d2/sub/deep", "top-a", "top-b"] {
        put(&s3, k, b"x");
        expected.push(k.to_owned());
    }
    expected.sort();
    std::fs::write(s3.object_path(S3Server::BUCKET, "outside"), b"no").unwrap();

    let h = harness().await;
    let url = format!("s3://{}/pre?endpoint={}&region={}", S3Server::BUCKET, s3.endpoint(), s3.region());
    let options = NamespaceOptions {
        s3_access_key: Some(s3.access_key().into()),
        s3_secret_key: Some(Secret::new(s3.secret_key())),
        ..Default::default()
    };
    h.cache.create_namespace("remote", Some(&url), &options).await.unwrap();

    // The top level with a delimiter, two at a time: prefixes and keys interleaved in order.
    let (keys, prefixes, pages) = all_pages(&h, "/remote?list-type=2&delimiter=%2F&max-keys=2", true).await;
    assert_eq!(prefixes, ["d0/", "d1/", "d2/", "d3/", "d4/"]);
    assert_eq!(keys, ["top-a", "top-b"]);
    assert_eq!(pages, 4);

    // One directory in pages of 100: its 500 keys and its subdirectory, nothing read.
    let (keys, prefixes, pages) =
        all_pages(&h, "/remote?list-type=2&prefix=d2%2F&delimiter=%2F&max-keys=100", true).await;
    let in_d2: Vec<_> = expected.iter().filter(|k| k.starts_with("d2/k")).cloned().collect();
    assert_eq!((keys.len(), &keys), (500, &in_d2));
    assert_eq!((prefixes, pages), (vec!["d2/sub/".to_owned()], 6));

    // Everything, without a delimiter, in v2 pages of the default size and in v1 pages.
    let (keys, prefixes, pages) = all_pages(&h, "/remote?list-type=2", true).await;
    assert_eq!((keys.len(), prefixes.len(), pages), (2503, 0, 3));
    assert_eq!(keys, expected);
    let (keys, _, pages) = all_pages(&h, "/remote?max-keys=700", false).await;
    assert_eq!((keys == expected, pages), (true, 4));

    // Sizes come from the bucket (s3s-fs lists no ETags); no object was fetched to list it.
    let a = h.send("GET", "/remote?list-type=2&prefix=d0%2Fk0000", &[], b"").await;
    let text = String::from_utf8_lossy(&a.body).into_owned();
    assert_eq!(values(&text, "Size"), ["2"], "{text}");
    assert_eq!(h.cache.namespace("remote").await.unwrap().unwrap().n_entries, 0);

    // A source that does not answer: an error, not an empty or short page.
    s3.kill();
    let a = h.send("GET", "/remote?list-type=2", &[], b"").await;
    assert_eq!((a.status, a.code().as_str()), (503, "ServiceUnavailable"), "{}", String::from_utf8_lossy(&a.body));
}
