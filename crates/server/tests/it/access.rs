//! The access model over the whole API: who (no token, a read, write or admin token, a wrong one)
//! may do what (read, write, admin, `/metrics`, listings, public namespaces); what a failure tells
//! a client without the admin token; and user content served as inert data.

use http::{Method, StatusCode};
use tiercache_engine::NamespaceOptions;
use tiercache_server::{Access, Right};
use tiercache_testkit::{Behavior, bytes, sha256};

use super::{Answer, Harness, WRITE_AUTH, WRITE_TOKEN, harness_with};

const READ_TOKEN: &str = "test-read-token-0123456789";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Rules with a token of each right: reads need a token.
fn every_token() -> Access {
    Access::new()
        .with_token(Right::Read, READ_TOKEN)
        .and_then(|a| a.with_token(Right::Write, WRITE_TOKEN))
        .and_then(|a| a.with_token(Right::Admin, ADMIN_TOKEN))
        .unwrap()
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A namespace without a source (writable), public or not.
async fn writable(h: &Harness, name: &str, is_public: bool) {
    let options = NamespaceOptions { is_public, ..Default::default() };
    h.cache.create_namespace(name, None, &options).await.unwrap();
}

/// What a cell of the rights table expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// A success (2xx).
    Ok,
    /// 401 with a challenge.
    NoToken,
    /// 403.
    NoRight,
}

fn outcome(a: &Answer) -> Result<Expect, String> {
    let text = || format!("{} {:?} {}", a.status, a.headers, String::from_utf8_lossy(&a.body));
    match a.status.as_u16() {
        200..=299 => Ok(Expect::Ok),
        401 => {
            let challenge =
                a.header("www-authenticate").ok_or_else(|| format!("401 without a challenge: {}", text()))?;
            if !challenge.starts_with("Bearer realm=") {
                return Err(format!("not a bearer challenge: {}", text()));
            }
            Ok(Expect::NoToken)
        }
        403 => Ok(Expect::NoRight),
        _ => Err(text()),
    }
}

/// Every cell of the rights table, with reads needing a token: each client against each kind of
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rights_table() {
    use Expect::{NoRight, NoToken, Ok};
    let h = harness_with(every_token()).await;
    writable(&h, "up", false).await;
    writable(&h, "pub", true).await;
    h.src.put("k", bytes(30, 100));
    let admin_auth = bearer(ADMIN_TOKEN);
    let admin = [("authorization", admin_auth.as_str())];
    for ns in ["up", "pub"] {
        let a = h.send(Method::PUT, &format!("/ns/{ns}/k"), &admin, b"hello".to_vec()).await;
        assert_eq!(a.status, StatusCode::OK, "{}", String::from_utf8_lossy(&a.body));
    }
    let blob = bytes(31, 1000);
    let blob_uri = format!("/blobs/{}", sha256(&blob));
    assert!(h.send(Method::PUT, &blob_uri, &admin, blob.clone()).await.status.is_success());

    // The requests: (what, method, uri, body).
    let requests: Vec<(&str, Method, String, Vec<u8>)> = vec![
        ("read an entry", Method::GET, "/ns/up/k".into(), vec![]),
        ("HEAD an entry", Method::HEAD, "/ns/up/k".into(), vec![]),
        ("read through a source", Method::GET, "/ns/web/k".into(), vec![]),
        ("list a namespace", Method::GET, "/ns/up/".into(), vec![]),
        ("read a blob", Method::GET, blob_uri.clone(), vec![]),
        ("read /metrics", Method::GET, "/metrics".into(), vec![]),
        ("read a public entry", Method::GET, "/ns/pub/k".into(), vec![]),
        ("list a public namespace", Method::GET, "/ns/pub/".into(), vec![]),
        ("write an entry", Method::PUT, "/ns/up/new".into(), b"new".to_vec()),
        ("delete an entry", Method::DELETE, "/ns/up/gone".into(), vec![]),
        ("write a public entry", Method::PUT, "/ns/pub/new".into(), b"new".to_vec()),
        ("upload a blob", Method::PUT, format!("/blobs/{}", sha256(b"up")), b"up".to_vec()),
        ("use the admin API", Method::GET, "/admin/df".into(), vec![]),
        ("check health", Method::GET, "/healthz".into(), vec![]),
    ];
    // Per client, the expected outcome of each request above, in order.
    #[rustfmt::skip]
    let table: Vec<(&str, Option<String>, [Expect; 14])> = vec![
        ("anonymous", None,
            [NoToken, NoToken, NoToken, NoToken, NoToken, NoToken, Ok, Ok, NoToken, NoToken, NoToken, NoToken, NoToken, Ok]),
        ("read", Some(bearer(READ_TOKEN)),
            [Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, NoRight, NoRight, NoRight, NoRight, NoRight, Ok]),
        ("write", Some(bearer(WRITE_TOKEN)),
            [Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, NoRight, Ok]),
        ("admin", Some(bearer(ADMIN_TOKEN)),
            [Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok, Ok]),
        ("wrong", Some(bearer("not-one-of-the-tokens-0123")),
            [NoToken, NoToken, NoToken, NoToken, NoToken, NoToken, Ok, Ok, NoToken, NoToken, NoToken, NoToken, NoToken, Ok]),
    ];
    for (who, auth, expected) in &table {
        for ((what, method, uri, body), want) in requests.iter().zip(expected) {
            if *what == "delete an entry" {
                // Something to delete, whoever may.
                let a = h.send(Method::PUT, "/ns/up/gone", &admin, b"x".to_vec()).await;
                assert_eq!(a.status, StatusCode::OK);
            }
            let headers: Vec<(&str, &str)> = auth.iter().map(|v| ("authorization", v.as_str())).collect();
            let a = h.send(method.clone(), uri, &headers, body.clone()).await;
            let got = outcome(&a).unwrap_or_else(|e| panic!("{who} may {what}? {e}"));
            assert_eq!(got, *want, "{who} may {what} ({method} {uri}): {}", String::from_utf8_lossy(&a.body));
            if got == NoToken && *who == "anonymous" {
                // The answer says which token to send.
                let body = String::from_utf8_lossy(&a.body);
                let token = match (method.clone(), uri.starts_with("/admin")) {
                    (_, true) => "<admin_token>",
                    (Method::GET | Method::HEAD, _) => "<read_token>",
                    _ => "<write_token>",
                };
                assert!(method == Method::HEAD || body.contains(token), "{what}: {body}");
            }
            if got == NoRight {
                assert!(a.header("www-authenticate").is_some_and(|c| c.contains("insufficient_scope")), "{what}");
            }
        }
    }
    // The refused writes changed nothing: `new` was written by the write and admin tokens only.
    let a = h.get("/ns/up/new", &[("authorization", &bearer(READ_TOKEN))]).await;
    assert_eq!((a.status, a.body.as_slice()), (StatusCode::OK, &b"new"[..]));
}

/// With no read token, reads (and `/metrics`) are open and tokens are not even looked at; writes
/// need a write token unless anonymous writes are allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_open_without_a_read_token_and_anonymous_writes_only_when_allowed() {
    for anonymous_writes in [false, true] {
        let access =
            Access::new().with_token(Right::Write, WRITE_TOKEN).unwrap().allow_anonymous_writes(anonymous_writes);
        let h = harness_with(access).await;
        writable(&h, "up", false).await;
        let a = h.send(Method::PUT, "/ns/up/k", &[WRITE_AUTH], b"v".to_vec()).await;
        assert_eq!(a.status, StatusCode::OK);
        for uri in ["/ns/up/k", "/ns/up/", "/metrics", "/healthz"] {
            assert_eq!(h.get(uri, &[]).await.status, StatusCode::OK, "{uri}");
            // Whatever token: a read is not asked for one.
            assert_eq!(h.get(uri, &[("authorization", "Bearer nonsense")]).await.status, StatusCode::OK, "{uri}");
        }
        let put = h.send(Method::PUT, "/ns/up/anon", &[], b"a".to_vec()).await;
        let upload = h.send(Method::PUT, &format!("/blobs/{}", sha256(b"b")), &[], b"b".to_vec()).await;
        let delete = h.send(Method::DELETE, "/ns/up/k", &[], vec![]).await;
        for (what, a) in [("put", &put), ("upload", &upload), ("delete", &delete)] {
            if anonymous_writes {
                assert!(a.status.is_success(), "{what}: {}", a.status);
            } else {
                assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}");
                assert_eq!(a.header("www-authenticate"), Some("Bearer realm=\"tiercache\""), "{what}");
                let body = String::from_utf8_lossy(&a.body);
                assert!(body.contains("missing token") && body.contains("Bearer <write_token>"), "{what}: {body}");
            }
        }
    }
    // The default rules (`app`): reads open, every write refused.
    let h = harness_with(Access::new()).await.with_default_app();
    writable(&h, "up", false).await;
    assert_eq!(h.send(Method::PUT, "/ns/up/k", &[WRITE_AUTH], b"v".to_vec()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(h.get("/ns/up/", &[]).await.status, StatusCode::OK);
}

/// A namespace marked public is read by anyone, its listing too, but a namespace that does not
/// exist is no different from a private one to a client without a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_namespaces_are_read_without_a_token() {
    let h = harness_with(every_token()).await;
    writable(&h, "pub", true).await;
    let admin_auth = bearer(ADMIN_TOKEN);
    let admin = [("authorization", admin_auth.as_str())];
    assert_eq!(h.send(Method::PUT, "/ns/pub/a/b.txt", &admin, b"public".to_vec()).await.status, StatusCode::OK);
    let a = h.get("/ns/pub/a/b.txt", &[]).await;
    assert_eq!((a.status, a.body.as_slice()), (StatusCode::OK, &b"public"[..]));
    let list = h.get("/ns/pub/?prefix=a/", &[]).await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&list.body).contains("a/b.txt"));
    let missing = h.get("/ns/pub/nothing", &[]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "a public namespace's missing key is a plain 404");
    for uri in ["/ns/nope/k", "/ns/nope/", "/ns/web/k"] {
        let a = h.get(uri, &[]).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(!String::from_utf8_lossy(&a.body).contains("nope"), "{uri}: names nothing");
    }
    // `public` is shown by the admin API, and set by its namespace body.
    let show = h.send(Method::GET, "/admin/namespaces/pub", &admin, vec![]).await;
    assert!(String::from_utf8_lossy(&show.body).contains("\"public\":true"), "{}", String::from_utf8_lossy(&show.body));
    let def = br#"{"public": true}"#.to_vec();
    assert_eq!(h.send(Method::PUT, "/admin/namespaces/open2", &admin, def).await.status, StatusCode::CREATED);
    assert_eq!(h.get("/ns/open2/", &[]).await.status, StatusCode::OK);
    let def = br#"{"public": false}"#.to_vec();
    assert_eq!(h.send(Method::PUT, "/admin/namespaces/open2", &admin, def).await.status, StatusCode::OK);
    assert_eq!(h.get("/ns/open2/", &[]).await.status, StatusCode::UNAUTHORIZED, "no longer public");
}

/// Everything a response says, headers and body, as text.
fn all_text(a: &Answer) -> String {
    format!("{:?}\n{}", a.headers, String::from_utf8_lossy(&a.body))
}

/// Failures of a source with credentials in its URL, and of a directory namespace: a client
/// without the admin token learns the kind of failure, not the URL, its credentials, the root or
/// the data directory; the admin token holder gets the detail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_tell_clients_only_what_they_may_know() {
    let access = Access::new()
        .with_token(Right::Write, WRITE_TOKEN)
        .and_then(|a| a.with_token(Right::Admin, ADMIN_TOKEN))
        .unwrap();
    let h = harness_with(access).await;
    let authority = h.src.url().trim_start_matches("http://").trim_end_matches('/').to_owned();
    let with_creds = format!("http://user:secret@{authority}/");
    h.cache.create_namespace("creds", Some(&with_creds), &Default::default()).await.unwrap();
    h.src.set_behavior("e503", Behavior::Status(503));
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("file.txt"), b"a file").unwrap();
    let root_path = root.path().canonicalize().unwrap().to_string_lossy().into_owned();
    let dir_source = format!("file://{root_path}");
    h.cache.create_namespace("files", Some(&dir_source), &Default::default()).await.unwrap();
    let data_dir = h.cache.data_dir().to_string_lossy().into_owned();

    let admin_auth = bearer(ADMIN_TOKEN);
    let cases: [(Method, &str, u16, &str, &str); 4] = [
        (Method::GET, "/ns/creds/missing", 404, "not found at the source", authority.as_str()),
        (Method::GET, "/ns/creds/e503", 502, "the source answered 503", authority.as_str()),
        (Method::GET, "/ns/files/missing.txt", 404, "not found at the source", root_path.as_str()),
        (Method::PUT, "/ns/files/file.txt/below", 409, "conflicts with what exists", "file.txt/below"),
    ];
    for (method, uri, status, says, detail) in cases {
        let a = h.send(method.clone(), uri, &[WRITE_AUTH], b"x".to_vec()).await;
        let text = all_text(&a);
        assert_eq!(a.status.as_u16(), status, "{uri}: {text}");
        assert!(text.contains(says), "{uri}: says what kind of failure: {text}");
        for secret in ["secret", "user:", authority.as_str(), root_path.as_str(), data_dir.as_str()] {
            assert!(!text.contains(secret), "{uri}: {secret:?} told to a client without the admin token: {text}");
        }
        // The admin token holder is told the detail.
        let a = h.send(method.clone(), uri, &[("authorization", &admin_auth)], b"x".to_vec()).await;
        let text = all_text(&a);
        assert_eq!(a.status.as_u16(), status, "{uri}: {text}");
        assert!(text.contains(detail), "{uri}: the admin is told {detail:?}: {text}");
    }
}

/// An uploaded page and image come back as inert data on every kind of answer about their bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_content_is_served_as_inert_data() {
    let h = super::harness().await;
    writable(&h, "up", false).await;
    let page = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#.to_vec();
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("page.html"), &page).unwrap();
    let dir_source = format!("file://{}", root.path().canonicalize().unwrap().display());
    h.cache.create_namespace("files", Some(&dir_source), &Default::default()).await.unwrap();
    let mut uris = vec!["/ns/files/page.html".to_owned()];
    for (key, body) in [("page.html", &page), ("image.svg", &svg)] {
        let a = h.send(Method::PUT, &format!("/ns/up/{key}"), &[WRITE_AUTH], body.clone()).await;
        assert_eq!(a.status, StatusCode::OK);
        uris.push(format!("/ns/up/{key}"));
        uris.push(h.put_blob(body).await);
    }
    for uri in &uris {
        let etag = h.get(uri, &[]).await.header("etag").unwrap().to_owned();
        // Twice: the second answers of a small entry come from the memory tier's kept headers.
        for _ in 0..2 {
            for (method, headers, status) in [
                (Method::GET, vec![], 200),
                (Method::HEAD, vec![], 200),
                (Method::GET, vec![("range", "bytes=0-9")], 206),
                (Method::GET, vec![("if-none-match", etag.as_str())], 304),
                (Method::GET, vec![("if-match", "\"other\"")], 412),
                (Method::GET, vec![("range", "bytes=9999-")], 416),
            ] {
                let a = h.send(method.clone(), uri, &headers, vec![]).await;
                assert_eq!(a.status.as_u16(), status, "{method} {uri} {headers:?}");
                assert_eq!(a.header("x-content-type-options"), Some("nosniff"), "{method} {uri} {status}");
                assert_eq!(a.header("content-security-policy"), Some("sandbox"), "{method} {uri} {status}");
            }
        }
    }
}
