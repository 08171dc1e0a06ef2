//! The admin endpoints (`/admin/…`): off without a token, 401 without the right one, 403 for a
//! write token, and each endpoint's answers over a real cache and a real HTTP source.

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tiercache_testkit::bytes;

use super::{Answer, Harness, harness_with_admin, wait_until};
use tiercache_testkit::sha256;

const TOKEN: &str = "test-admin-token-0123456789";
const REALM: &str = "Bearer realm=\"tiercache-admin\"";

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl Harness {
    /// An admin request with the right token and `body` (raw, so that malformed JSON can be sent).
    async fn admin(&self, method: Method, path: &str, body: &str) -> Answer {
        let auth = format!("Bearer {TOKEN}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        self.send(method, path, &headers, body.as_bytes().to_vec()).await
    }

    /// An admin request that must succeed with `status`; its JSON body.
    async fn admin_ok(&self, method: Method, path: &str, body: &str, status: StatusCode) -> Value {
        let a = self.admin(method.clone(), path, body).await;
        assert_eq!(a.status, status, "{method} {path} {body}: {}", a.text());
        assert_eq!(a.header("content-type"), Some("application/json"), "{method} {path}");
        a.json()
    }

    /// Polls `/admin/namespaces/{name}` until it reports `n` entries (write-back is asynchronous).
    async fn wait_for_entries(&self, name: &str, n: u64) -> Value {
        let mut last = Value::Null;
        for _ in 0..300 {
            last = self.admin_ok(Method::GET, &format!("/admin/namespaces/{name}"), "", StatusCode::OK).await;
            if last["n_entries"] == json!(n) {
                return last;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("namespace {name} never reached {n} entries: {last}");
    }
}

/// Every admin path, with a method it serves.
fn endpoints() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/admin/namespaces"),
        (Method::GET, "/admin/namespaces/web"),
        (Method::PUT, "/admin/namespaces/new"),
        (Method::DELETE, "/admin/namespaces/web"),
        (Method::PUT, "/admin/namespaces/web/pins"),
        (Method::DELETE, "/admin/namespaces/web/pins"),
        (Method::POST, "/admin/namespaces/web/migrate"),
        (Method::POST, "/admin/prune"),
        (Method::GET, "/admin/df"),
        (Method::GET, "/admin/stats"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_is_off_without_a_token() {
    // `app` (the default rules), and rules with a write token but no admin token, leave the admin
    // endpoints off.
    for with_app in [true, false] {
        let h = harness_with_admin(None).await;
        let h = if with_app { h.with_default_app() } else { h };
        let mut paths = endpoints();
        paths.extend([(Method::GET, "/admin"), (Method::GET, "/admin/"), (Method::GET, "/admin/no/such/thing")]);
        for (method, path) in paths {
            // Even with a token in the request: there is none to compare it with.
            let a = h.admin(method.clone(), path, "").await;
            assert_eq!(a.status, StatusCode::NOT_FOUND, "{with_app} {method} {path}: {}", a.text());
            let body = a.json();
            assert_eq!(body["error"], "admin_off", "{method} {path}");
            assert!(body["message"].as_str().unwrap().contains("set `admin_token`"), "{body}");
        }
        // Nothing was changed: `web` is still served, `new` was not created.
        h.src.put("k", bytes(20, 10));
        assert_eq!(h.get("/ns/web/k", &[]).await.status, StatusCode::OK);
        assert_eq!(h.get("/ns/new/", &[]).await.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refuses_a_missing_or_wrong_token() {
    let h = harness_with_admin(Some(TOKEN)).await;
    let wrong = format!("Bearer {TOKEN}x");
    let prefix = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let basic = "Basic dGllcmNhY2hlOnRva2Vu".to_owned();
    type Case = (Option<String>, &'static str, &'static str);
    let cases: Vec<Case> = vec![
        (None, "missing_token", "missing admin token"),
        (Some(basic), "not_bearer_token", "not a bearer token"),
        (Some("Bearer ".into()), "not_bearer_token", "not a bearer token"),
        (Some(TOKEN.into()), "not_bearer_token", "not a bearer token"),
        (Some(wrong), "wrong_token", "wrong admin token"),
        (Some(prefix), "wrong_token", "wrong admin token"),
        (Some("Bearer other-token".into()), "wrong_token", "wrong admin token"),
    ];
    let mut paths = endpoints();
    // No hint of what exists without the token.
    paths.extend([(Method::GET, "/admin"), (Method::GET, "/admin/"), (Method::GET, "/admin/no/such/thing")]);
    for (auth, kind, says) in &cases {
        for (method, path) in &paths {
            let headers: Vec<(&str, &str)> = auth.iter().map(|v| ("authorization", v.as_str())).collect();
            let a = h.send(method.clone(), path, &headers, b"{}".to_vec()).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth:?} {method} {path}: {}", a.text());
            let challenge = a.header("www-authenticate").unwrap_or_else(|| panic!("{auth:?} {path}: no challenge"));
            assert!(challenge.starts_with(REALM), "{challenge}");
            assert_eq!(challenge.contains("invalid_token"), *kind == "wrong_token", "{challenge}");
            let body = a.json();
            assert_eq!(body["error"], *kind, "{auth:?} {path}");
            assert!(body["message"].as_str().unwrap().contains(says), "{auth:?} {path}: {body}");
        }
    }
    // The write token is refused too, with 403: it is a token, without the admin right.
    let write_auth = format!("Bearer {}", super::WRITE_TOKEN);
    for (method, path) in &paths {
        let a = h.send(method.clone(), path, &[("authorization", write_auth.as_str())], b"{}".to_vec()).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} {path}: {}", a.text());
        let challenge = a.header("www-authenticate").unwrap_or_default();
        assert!(challenge.starts_with(REALM) && challenge.contains("insufficient_scope"), "{challenge}");
        let body = a.json();
        assert_eq!(body["error"], "forbidden");
        assert!(body["message"].as_str().unwrap().contains("a write token cannot use the admin endpoints"), "{body}");
    }
    // None of those requests changed anything.
    let list = h.admin_ok(Method::GET, "/admin/namespaces", "", StatusCode::OK).await;
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web"]);
    // The scheme is case-insensitive; the rest of the API needs no token.
    let a = h.send(Method::GET, "/admin/df", &[("authorization", &format!("bearer {TOKEN}"))], Vec::new()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(h.get("/healthz", &[]).await.status, StatusCode::OK);
    // With the token, an unknown admin path is a plain 404.
    for path in ["/admin", "/admin/", "/admin/no/such/thing", "/admin/namespaces/web/pins/x"] {
        let a = h.admin(Method::GET, path, "").await;
        assert_eq!(
            (a.status, a.json()["error"].as_str()),
            (StatusCode::NOT_FOUND, Some("no_admin_endpoint")),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_create_show_pin_df_prune_delete() {
    let h = harness_with_admin(Some(TOKEN)).await;
    let source = h.src.url();
    let def = json!({ "source": source, "owner": "team-a", "quota_bytes": 1_000_000, "max_entries": 10 }).to_string();

    // Create (201, with Location), then the same again (200): idempotent.
    let a = h.admin(Method::PUT, "/admin/namespaces/ci", &def).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert_eq!(a.header("location"), Some("/admin/namespaces/ci"));
    let body = a.json();
    assert_eq!(body["created"], true);
    assert_eq!(body["namespace"]["name"], "ci");
    assert_eq!(body["namespace"]["source"], source.as_str());
    assert_eq!(body["namespace"]["options"]["owner"], "team-a");
    assert_eq!(body["namespace"]["options"]["quota_bytes"], 1_000_000);
    let again = h.admin_ok(Method::PUT, "/admin/namespaces/ci", &def, StatusCode::OK).await;
    assert_eq!(again["created"], false);
    assert_eq!(again["namespace"]["options"]["max_entries"], 10);

    // An S3 source's keys are taken, and its secret is never answered.
    let s3 = json!({ "source": "s3://bucket/pre?endpoint=http://127.0.0.1:9", "s3_access_key": "AKIA", "s3_secret_key": "s3cr3t" });
    let a = h.admin(Method::PUT, "/admin/namespaces/bucket", &s3.to_string()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text());
    assert!(!a.text().contains("s3cr3t"), "{}", a.text());
    assert_eq!(a.json()["namespace"]["options"]["s3_access_key"], "AKIA");
    let shown = h.admin_ok(Method::GET, "/admin/namespaces/bucket", "", StatusCode::OK).await;
    assert!(!shown.to_string().contains("s3cr3t"), "{shown}");
    let half = json!({ "source": "s3://bucket/pre", "s3_secret_key": "s3cr3t" }).to_string();
    let a = h.admin(Method::PUT, "/admin/namespaces/half", &half).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert!(!a.text().contains("s3cr3t"), "{}", a.text());
    assert_eq!(h.admin(Method::DELETE, "/admin/namespaces/bucket", "").await.status, StatusCode::OK);

    // Another source for the same name is a conflict, and changes nothing.
    let other = json!({ "source": "http://127.0.0.1:9/elsewhere" }).to_string();
    let a = h.admin(Method::PUT, "/admin/namespaces/ci", &other).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.text());
    assert_eq!(a.json()["error"], "conflict");
    assert!(a.json()["message"].as_str().unwrap().contains("already exists with source"));
    // A namespace without a source, no body at all.
    let bare = h.admin_ok(Method::PUT, "/admin/namespaces/bare", "", StatusCode::CREATED).await;
    assert_eq!(bare["namespace"]["source"], Value::Null);

    // List and show.
    let list = h.admin_ok(Method::GET, "/admin/namespaces", "", StatusCode::OK).await;
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bare", "ci", "web"]);
    let ci = h.admin_ok(Method::GET, "/admin/namespaces/ci", "", StatusCode::OK).await;
    assert_eq!((ci["name"].as_str(), ci["source"].as_str()), (Some("ci"), Some(source.as_str())));
    assert_eq!(
        (ci["n_entries"].as_u64(), ci["pins"].clone(), ci["is_pinned"].clone()),
        (Some(0), json!([]), json!(false))
    );
    let a = h.admin(Method::GET, "/admin/namespaces/nope", "").await;
    assert_eq!((a.status, a.json()["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));

    // Read two entries through the source, so that there is something to pin, count and prune.
    let (one, two) = (bytes(21, 3000), bytes(22, 5000));
    h.src.put("one", one.clone());
    h.src.put("two", two.clone());
    assert_eq!(h.get("/ns/ci/one", &[]).await.body, one);
    assert_eq!(h.get("/ns/ci/two", &[]).await.body, two);
    let ci = h.wait_for_entries("ci", 2).await;
    assert_eq!(ci["bytes"], 8000);

    // Pin a key, twice (the second changes nothing), then the whole namespace.
    let p = h.admin_ok(Method::PUT, "/admin/namespaces/ci/pins", r#"{"key": "one"}"#, StatusCode::OK).await;
    assert_eq!(p, json!({ "changed": true, "pins": ["one"] }));
    let p = h.admin_ok(Method::PUT, "/admin/namespaces/ci/pins", r#"{"key": "one"}"#, StatusCode::OK).await;
    assert_eq!(p, json!({ "changed": false, "pins": ["one"] }));
    let p = h.admin_ok(Method::PUT, "/admin/namespaces/ci/pins", "", StatusCode::OK).await;
    assert_eq!(p, json!({ "changed": true, "pins": ["", "one"] }));
    let ci = h.admin_ok(Method::GET, "/admin/namespaces/ci", "", StatusCode::OK).await;
    assert_eq!((ci["pins"].clone(), ci["is_pinned"].clone()), (json!(["", "one"]), json!(true)));
    let a = h.admin(Method::PUT, "/admin/namespaces/nope/pins", r#"{"key": "one"}"#).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());

    // df names every namespace, with the owner, the pins and the bytes of the pinned blobs.
    let df = h.admin_ok(Method::GET, "/admin/df", "", StatusCode::OK).await;
    let usage = df["namespaces"].as_array().unwrap().iter().find(|n| n["name"] == "ci").expect("ci in df").clone();
    assert_eq!(usage["owner"], "team-a");
    assert_eq!((usage["n_entries"].as_u64(), usage["entry_bytes"].as_u64()), (Some(2), Some(8000)));
    assert_eq!((usage["is_pinned"].clone(), usage["n_pinned_keys"].as_u64()), (json!(true), Some(1)));
    assert_eq!(df["pinned_bytes"], 8000);
    assert!(df["blob_bytes"].as_u64().unwrap() >= 8000, "{df}");
    let stats = h.admin_ok(Method::GET, "/admin/stats", "", StatusCode::OK).await;
    assert_eq!((stats["n_entries"].as_u64(), stats["entry_bytes"].as_u64()), (Some(2), Some(8000)), "{stats}");
    let ci = stats["namespaces"].as_array().unwrap().iter().find(|n| n["name"] == "ci").expect("ci in stats");
    assert_eq!(ci["n_entries"], 2, "{stats}");

    // Unpin the namespace; `one` stays pinned, so an age-based dry run lists `two` only, and
    // removes nothing.
    let p = h.admin_ok(Method::DELETE, "/admin/namespaces/ci/pins", "", StatusCode::OK).await;
    assert_eq!(p, json!({ "changed": true, "pins": ["one"] }));
    let p = h.admin_ok(Method::DELETE, "/admin/namespaces/ci/pins", "{}", StatusCode::OK).await;
    assert_eq!(p, json!({ "changed": false, "pins": ["one"] }));
    // Age pruning takes entries last read before now, in whole milliseconds: one read in this
    // very millisecond is not older than 0 s yet, so the dry run is asked again until it lists one.
    let dry = json!({ "older_than_seconds": 0, "ns": "ci", "dry_run": true }).to_string();
    let mut report = Value::Null;
    wait_until("an age-based dry run lists an entry", async || {
        report = h.admin_ok(Method::POST, "/admin/prune", &dry, StatusCode::OK).await;
        report["items"].as_array().is_none_or(|items| !items.is_empty())
    })
    .await;
    assert_eq!((report["dry_run"].clone(), report["n_entries"].as_u64()), (json!(true), Some(1)), "{report}");
    let items = report["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{report}");
    assert_eq!((items[0]["kind"].as_str(), items[0]["key"].as_str()), (Some("age"), Some("two")));
    assert_eq!((items[0]["namespace"].as_str(), items[0]["bytes"].as_u64()), (Some("ci"), Some(5000)));
    h.wait_for_entries("ci", 2).await;
    // A whole pass (no body), dry: it answers a report and still removes nothing.
    let report = h.admin_ok(Method::POST, "/admin/prune", r#"{"dry_run": true}"#, StatusCode::OK).await;
    assert_eq!(report["dry_run"], true);
    let a = h.admin(Method::POST, "/admin/prune", r#"{"ns": "nope", "dry_run": true}"#).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());

    // Delete (it existed), then again: still 200, and says it did not exist.
    let d = h.admin_ok(Method::DELETE, "/admin/namespaces/ci", "", StatusCode::OK).await;
    assert_eq!((d["name"].as_str(), d["existed"].clone()), (Some("ci"), json!(true)));
    assert_eq!(d["removed"]["n_entries"], 2, "{d}");
    let d = h.admin_ok(Method::DELETE, "/admin/namespaces/ci", "", StatusCode::OK).await;
    assert_eq!(d, json!({ "name": "ci", "existed": false, "removed": null }));
    assert_eq!(h.admin(Method::GET, "/admin/namespaces/ci", "").await.status, StatusCode::NOT_FOUND);
    assert_eq!(h.get("/ns/ci/one", &[]).await.status, StatusCode::NOT_FOUND);
    let df = h.admin_ok(Method::GET, "/admin/df", "", StatusCode::OK).await;
    assert!(df["namespaces"].as_array().unwrap().iter().all(|n| n["name"] != "ci"), "{df}");
}

/// Malformed bodies and hostile names: each a 400 saying what was wrong, and nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_requests_are_refused() {
    let h = harness_with_admin(Some(TOKEN)).await;
    let long = "n".repeat(64);
    let very_long = format!("/admin/namespaces/{}", "n".repeat(10_000));
    type Case = (Method, String, &'static str, &'static str);
    let case = |m: Method, path: &str, body: &'static str, says: &'static str| (m, path.to_owned(), body, says);
    let cases: Vec<Case> = vec![
        // Bodies.
        case(Method::PUT, "/admin/namespaces/ok", "{", "not the expected JSON"),
        case(Method::PUT, "/admin/namespaces/ok", "[]", "must be a JSON object"),
        case(Method::PUT, "/admin/namespaces/ok", r#"["http://x"]"#, "must be a JSON object"),
        case(Method::PUT, "/admin/namespaces/ok", "null", "must be a JSON object"),
        case(Method::POST, "/admin/prune", "true", "must be a JSON object"),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"sorce": "http://x"}"#, "unknown field `sorce`"),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"quota_bytes": -1}"#, "quota_bytes must be a whole number"),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"quota_bytes": 1.5}"#, "quota_bytes must be a whole number"),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"max_age_seconds": 18446744073709551615}"#, "max_age_seconds = "),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"max_age_seconds": 18446744073709551}"#, "longer than 100 years"),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"max_age_seconds": 18446744073709551616}"#, "max_age_seconds"),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"max_age": "200y"}"#, "max_age: \"200y\" is longer"),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"max_age": "7d", "max_age_seconds": 1}"#, "not both"),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"quota_bytes": 1152921504606846977}"#, "quota_bytes = "),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"quota": "10 parsecs"}"#, "quota: \"10 parsecs\": unknown unit"),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"max_entries": 9223372036854775808}"#, "max_entries = "),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"copy_to_cache": true}"#, "directory sources only"),
        case(Method::PUT, "/admin/namespaces/ok", r#"{"source": "gopher://x"}"#, "unsupported source"),
        case(Method::PUT, "/admin/namespaces/web/pins", r#"{"key": 1}"#, "not the expected JSON"),
        case(Method::PUT, "/admin/namespaces/web/pins", r#"{"key": "../etc"}"#, "forbidden path segment"),
        case(Method::DELETE, "/admin/namespaces/web/pins", r#"{"keys": ["a"]}"#, "unknown field `keys`"),
        case(Method::POST, "/admin/prune", r#"{"orphans": "yes"}"#, "not the expected JSON"),
        case(Method::POST, "/admin/prune", r#"{"dry_run": true, "max_sise": 1}"#, "unknown field `max_sise`"),
        case(Method::POST, "/admin/prune", r#"{"dry_run": true, "max_size": 1}"#, "max_size must be text"),
        case(Method::POST, "/admin/prune", r#"{"older_than_seconds": 18446744073709551}"#, "older_than_seconds = "),
        case(Method::POST, "/admin/prune", r#"{"older_than_seconds": -1}"#, "older_than_seconds must be"),
        case(Method::POST, "/admin/prune", r#"{"older_than": "soon"}"#, "older_than: \"soon\" is not a duration"),
        case(Method::POST, "/admin/prune", r#"{"max_size_bytes": 18446744073709551615}"#, "max_size_bytes = "),
        case(Method::POST, "/admin/prune", r#"{"ns": "../x", "dry_run": true}"#, "not allowed"),
        // Names.
        case(Method::GET, "/admin/namespaces/..", "", "not allowed"),
        case(Method::PUT, "/admin/namespaces/..", "", "not allowed"),
        case(Method::DELETE, "/admin/namespaces/%2e%2e", "", "not allowed"),
        case(Method::PUT, "/admin/namespaces/%2E%2E/pins", "", "not allowed"),
        case(Method::PUT, "/admin/namespaces/a%2Fb", "", "not allowed"),
        case(Method::PUT, "/admin/namespaces/Web", "", "not allowed"),
        case(Method::PUT, "/admin/namespaces/a%00b", "", "not allowed"),
        case(Method::PUT, "/admin/namespaces/%ff", "", "bad namespace in the path"),
        case(Method::PUT, &format!("/admin/namespaces/{long}"), "", "the limit is 63"),
        case(Method::DELETE, &very_long, "", "the limit is 63"),
    ];
    for (method, path, body, says) in cases {
        let a = h.admin(method.clone(), &path, body).await;
        let shown = &path[..path.len().min(60)];
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{method} {shown} {body}: {}", a.text());
        let message = a.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains(says), "{method} {shown} {body}: expected {says:?} in {message}");
    }
    // Nothing was created, deleted or pinned.
    let list = h.admin_ok(Method::GET, "/admin/namespaces", "", StatusCode::OK).await;
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["web"]);
    let web = h.admin_ok(Method::GET, "/admin/namespaces/web", "", StatusCode::OK).await;
    assert_eq!(web["pins"], json!([]));
    // A body larger than any admin request is refused before it is parsed.
    let huge = format!(r#"{{"source": "{}"}}"#, "x".repeat(100_000));
    let a = h.admin(Method::PUT, "/admin/namespaces/ok", &huge).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_moves_a_namespace_between_storage_places() {
    let h = harness_with_admin(Some(TOKEN)).await;
    let content = bytes(77, 120_000);
    h.src.put("a", content.clone());
    assert_eq!(h.send(Method::GET, "/ns/web/a", &[], Vec::new()).await.body, content);
    h.wait_for_entries("web", 1).await;
    let host = tempfile::tempdir().unwrap();
    let dir = host.path().join("web");
    let to = format!("path:{}", dir.display());

    let report = h
        .admin_ok(Method::POST, "/admin/namespaces/web/migrate", &json!({ "to": to }).to_string(), StatusCode::OK)
        .await;
    assert_eq!((report["n_copied"].as_u64(), report["to"].as_str()), (Some(1), Some(to.as_str())), "{report}");
    let hex = sha256(&content).trim_start_matches("sha256:").to_owned();
    assert!(dir.join("blobs/sha256").join(&hex[..2]).join(&hex).is_file());
    let shown = h.admin_ok(Method::GET, "/admin/namespaces/web", "", StatusCode::OK).await;
    assert_eq!(shown["storage"].as_str(), dir.to_str());
    assert_eq!(h.send(Method::GET, "/ns/web/a", &[], Vec::new()).await.body, content);
    assert_eq!(h.src.counts("a").full, 1, "served from the new place, not fetched again");

    // Re-defining the namespace as managed is a conflict: moving is migrate's job.
    let a = h
        .admin(
            Method::PUT,
            "/admin/namespaces/web",
            &json!({ "source": h.src.url(), "storage": "managed" }).to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.text());
    for body in [
        "",
        "{}",
        "{\"to\": 3}",
        "{\"to\": \"path:relative\"}",
        "{\"to\": \"disk\"}",
        "{\"too\": \"managed\"}",
        "not json",
    ] {
        let a = h.admin(Method::POST, "/admin/namespaces/web/migrate", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text());
    }
    let a = h.admin(Method::POST, "/admin/namespaces/nope/migrate", "{\"to\": \"managed\"}").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
    let report =
        h.admin_ok(Method::POST, "/admin/namespaces/web/migrate", "{\"to\": \"managed\"}", StatusCode::OK).await;
    assert_eq!(report["to"], "managed");
    assert!(!dir.exists());
}

/// The age overflow: an age past 100 years is a 400 naming the field, prunes nothing, and a
/// namespace cannot be defined with one; the largest accepted age selects nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_ages_are_refused_and_prune_nothing() {
    let h = harness_with_admin(Some(TOKEN)).await;
    for (key, seed) in [("one", 31), ("two", 32)] {
        h.src.put(key, bytes(seed, 2000));
        assert_eq!(h.get(&format!("/ns/web/{key}"), &[]).await.status, StatusCode::OK);
    }
    h.wait_for_entries("web", 2).await;

    for body in [
        r#"{"older_than_seconds":18446744073709551,"dry_run":true}"#,
        r#"{"older_than_seconds":18446744073709551}"#,
        r#"{"older_than_seconds":18446744073709551615}"#,
        r#"{"older_than":"584942417y"}"#,
    ] {
        let a = h.admin(Method::POST, "/admin/prune", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.text());
        let message = a.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(message.contains("older_than") && message.contains("longer than 100 years"), "{body}: {message}");
    }
    // The largest ages accepted, as a number and as text, select nothing read just now.
    for body in [
        r#"{"older_than_seconds":3153600000,"dry_run":true}"#,
        r#"{"older_than":"36500d","dry_run":true}"#,
        r#"{"older_than":"1h"}"#,
    ] {
        let report = h.admin_ok(Method::POST, "/admin/prune", body, StatusCode::OK).await;
        assert_eq!((report["n_entries"].as_u64(), report["items"].clone()), (Some(0), json!([])), "{body}");
    }
    h.wait_for_entries("web", 2).await;

    // A namespace with such a max age is refused, and not created.
    let def = json!({ "source": h.src.url(), "max_age_seconds": 18446744073709551u64 }).to_string();
    let a = h.admin(Method::PUT, "/admin/namespaces/aged", &def).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert!(a.json()["message"].as_str().unwrap().starts_with("max_age_seconds = 18446744073709551"), "{}", a.text());
    assert_eq!(h.admin(Method::GET, "/admin/namespaces/aged", "").await.status, StatusCode::NOT_FOUND);
    // The longest max age accepted, as text: stored in milliseconds, and a whole pass keeps
    // what was just read.
    let def = json!({ "source": h.src.url(), "max_age": "36500d", "quota": "1.5K" }).to_string();
    let created = h.admin_ok(Method::PUT, "/admin/namespaces/aged", &def, StatusCode::CREATED).await;
    let options = &created["namespace"]["options"];
    assert_eq!(
        (options["max_age_ms"].as_u64(), options["quota_bytes"].as_u64()),
        (Some(3_153_600_000_000), Some(1536))
    );
    h.src.put("three", bytes(33, 1000));
    assert_eq!(h.get("/ns/aged/three", &[]).await.status, StatusCode::OK);
    h.wait_for_entries("aged", 1).await;
    let report = h.admin_ok(Method::POST, "/admin/prune", "", StatusCode::OK).await;
    assert_eq!(report["n_entries"], 0, "{report}");
    h.wait_for_entries("aged", 1).await;
    h.wait_for_entries("web", 2).await;
}
