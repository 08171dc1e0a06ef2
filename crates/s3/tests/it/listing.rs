//! Listings: prefixes, delimiters, pages with continuation tokens and start-after, v1 markers,
//! URL encoding, and versions of an unversioned bucket.

use crate::harness;

/// Every `<tag>` value in `text`, in order.
pub(crate) fn values(text: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let j = after.find(&close).unwrap();
        out.push(after[..j].to_owned());
        rest = &after[j..];
    }
    out
}

#[tokio::test]
async fn prefix_delimiter_and_pages() {
    let h = harness().await;
    let op = h.op("b");
    for k in ["a/1", "a/2", "a/sub/3", "b/4", "c"] {
        op.write(k, k.as_bytes().to_vec()).await.unwrap();
    }
    let a = h.send("GET", "/b?list-type=2&delimiter=%2F", &[], b"").await;
    let text = String::from_utf8_lossy(&a.body);
    assert_eq!(values(&text, "Key"), ["c"]);
    assert_eq!(values(&text, "Prefix").iter().filter(|p| !p.is_empty()).collect::<Vec<_>>(), ["a/", "b/"]);
    let a = h.send("GET", "/b?list-type=2&prefix=a%2F&delimiter=%2F", &[], b"").await;
    let text = String::from_utf8_lossy(&a.body);
    assert_eq!(values(&text, "Key"), ["a/1", "a/2"]);
    assert!(values(&text, "Prefix").contains(&"a/sub/".to_owned()), "{text}");

    // Pages of two, by continuation token.
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let q = match &token {
            Some(t) => format!("/b?list-type=2&max-keys=2&continuation-token={t}"),
            None => "/b?list-type=2&max-keys=2".to_owned(),
        };
        let a = h.send("GET", &q, &[], b"").await;
        let text = String::from_utf8_lossy(&a.body).into_owned();
        keys.extend(values(&text, "Key"));
        token = values(&text, "NextContinuationToken").into_iter().next();
        if token.is_none() {
            assert!(text.contains("<IsTruncated>false</IsTruncated>"), "{text}");
            break;
        }
    }
    assert_eq!(keys, ["a/1", "a/2", "a/sub/3", "b/4", "c"]);
    let a = h.send("GET", "/b?list-type=2&start-after=a%2Fsub%2F3", &[], b"").await;
    assert_eq!(values(&String::from_utf8_lossy(&a.body), "Key"), ["b/4", "c"]);

    // OpenDAL lists recursively through the same pages.
    let listed = op.list_with("a/").recursive(true).limit(1).await.unwrap();
    let mut paths: Vec<String> = listed.iter().map(|e| e.path().to_owned()).collect();
    paths.sort();
    assert_eq!(paths, ["a/1", "a/2", "a/sub/3"]);
}

#[tokio::test]
async fn v1_markers_url_encoding_and_versions() {
    let h = harness().await;
    let op = h.op("b");
    for k in ["x 1", "x+2", "y"] {
        op.write(k, b"v".to_vec()).await.unwrap();
    }
    let a = h.send("GET", "/b?max-keys=1", &[], b"").await;
    let text = String::from_utf8_lossy(&a.body).into_owned();
    assert_eq!(values(&text, "Key"), ["x 1"]);
    assert!(text.contains("<IsTruncated>true</IsTruncated>"), "{text}");
    let a = h.send("GET", "/b?marker=x%201", &[], b"").await;
    assert_eq!(values(&String::from_utf8_lossy(&a.body), "Key"), ["x+2", "y"]);
    let a = h.send("GET", "/b?list-type=2&encoding-type=url", &[], b"").await;
    assert_eq!(values(&String::from_utf8_lossy(&a.body), "Key"), ["x%201", "x%2B2", "y"]);
    let a = h.send("GET", "/b?versions", &[], b"").await;
    let text = String::from_utf8_lossy(&a.body).into_owned();
    assert_eq!(a.status, 200, "{text}");
    assert_eq!(values(&text, "Key"), ["x 1", "x+2", "y"]);
    assert_eq!(values(&text, "VersionId"), ["null", "null", "null"]);
}
