//! The registry source against a real registry (Debian's docker-registry) holding images that
//! skopeo pushed: manifests by tag and digest, blobs whole and ranged, revalidation by HEAD, basic
//! and Bearer authentication (through the test kit's token proxy); and against small misbehaving
//! servers for what a real registry does not do on demand (no challenge, a hanging token
//! endpoint, redirect loops, cross-host redirects, oversized manifests, 429).

use std::time::Duration;

use futures::StreamExt as _;
use tiercache_core::{ByteRange, Key, Validators};
use tiercache_sources::oci::media_types;
use tiercache_sources::{
    FetchRequest, Fetched, HttpSourceConfig, OciSource, RegistryCredentials, Source, SourceError, SourceMeta,
};
use tiercache_testkit::registry::{BuiltImage, ImageBuilder, ProxyAuth, RegistryAuth, RegistryProxy, RegistryServer};
use tiercache_testkit::servers::or_skip;
use tiercache_testkit::{Behavior, sha256};

fn key(k: &str) -> Key {
    Key::new(k).unwrap()
}

fn source_at(host: &str, credentials: Option<(&str, &str)>, config: &HttpSourceConfig) -> OciSource {
    let creds = credentials.map(|(u, p)| RegistryCredentials { user: u.into(), password: p.into() });
    OciSource::new(&format!("oci+http://{host}"), config, creds.as_ref()).unwrap()
}

fn source(host: &str, credentials: Option<(&str, &str)>) -> OciSource {
    source_at(host, credentials, &HttpSourceConfig::default())
}

/// A fetch's metadata, range and whole body (or the error the body ended with).
async fn read(f: Fetched) -> Result<(SourceMeta, Option<ByteRange>, Vec<u8>), SourceError> {
    let Fetched::Body(mut b) = f else { panic!("expected a body, got NotModified") };
    let mut out = Vec::new();
    while let Some(chunk) = b.stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok((b.meta, b.range, out))
}

async fn get(s: &OciSource, k: &str) -> Result<(SourceMeta, Option<ByteRange>, Vec<u8>), SourceError> {
    read(s.fetch(&key(k), &FetchRequest::default()).await?).await
}

fn start_registry(auth: RegistryAuth) -> Option<RegistryServer> {
    or_skip("docker-registry", RegistryServer::start(auth))
}

fn pushed(reg: &RegistryServer, seed: u64, name: &str, tag: &str) -> BuiltImage {
    let image = ImageBuilder::new(seed).multi_platform().tag(tag).build().unwrap();
    reg.push(&image, name, tag).unwrap();
    image
}

/// A manifest by tag is the index skopeo pushed, byte for byte, with its media type and digest;
/// each platform's manifest by digest too; every blob hashes to its digest; a range is the
/// blob's bytes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_and_blobs_are_the_bytes_pushed() {
    let Some(reg) = start_registry(RegistryAuth::None) else { return };
    let image = pushed(&reg, 11, "team/app", "v1");
    let s = source(&reg.host(), None);
    let (meta, range, body) = get(&s, "team/app/manifests/v1").await.unwrap();
    assert_eq!(body, image.top().bytes);
    assert_eq!(range, None);
    assert_eq!(meta.content_type.as_deref(), Some(media_types::OCI_INDEX));
    assert_eq!(meta.validators.etag.as_deref(), Some(image.top().digest.as_str()));
    assert_eq!(meta.size_bytes, Some(body.len() as u64));
    for m in image.manifests() {
        let (meta, _, body) = get(&s, &format!("team/app/manifests/{}", m.manifest.digest)).await.unwrap();
        assert_eq!(body, m.manifest.bytes);
        assert_eq!(meta.content_type.as_deref(), Some(media_types::OCI_MANIFEST));
        assert_eq!(meta.validators.etag.as_deref(), Some(m.manifest.digest.as_str()));
    }
    for blob in image.layer_and_config_blobs().values() {
        let (meta, _, body) = get(&s, &format!("team/app/blobs/{}", blob.digest)).await.unwrap();
        assert_eq!(sha256(&body), blob.digest);
        assert_eq!(meta.validators.etag.as_deref(), Some(blob.digest.as_str()));
    }
    let layer = &image.manifests()[0].layers[0];
    let r = ByteRange { start: 100, end: 1099 };
    let req = FetchRequest { range: Some(r), ..FetchRequest::default() };
    let (meta, range, body) =
        read(s.fetch(&key(&format!("team/app/blobs/{}", layer.digest)), &req).await.unwrap()).await.unwrap();
    assert_eq!(range, Some(r));
    assert_eq!(body, layer.bytes[100..1100]);
    assert_eq!(meta.size_bytes, Some(layer.bytes.len() as u64), "the whole blob's size");
    let head = s.head(&key("team/app/manifests/v1")).await.unwrap();
    assert_eq!(head.validators.etag.as_deref(), Some(image.top().digest.as_str()));
    assert_eq!(head.size_bytes, Some(image.top().bytes.len() as u64));
    let missing = get(&s, "team/app/manifests/v2").await.unwrap_err();
    assert!(matches!(missing, SourceError::NotFound { .. }), "{missing:?}");
    let (_, _, tags) = get(&s, "team/app/tags/list").await.unwrap();
    assert!(String::from_utf8_lossy(&tags).contains("\"v1\""));
}

/// A registry that answers tag lists in pages (`Link: <…>; rel="next"`) is read page by page
/// into one list, every tag once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_list_in_pages_is_read_whole() {
    let Some(reg) = start_registry(RegistryAuth::None) else { return };
    let image = ImageBuilder::new(31).tag("t0").build().unwrap();
    let tags: Vec<String> = (0..7).map(|i| format!("t{i}")).collect();
    for t in &tags {
        reg.push(&image, "paged/app", t).unwrap();
    }
    let proxy = RegistryProxy::start(&reg.url(), ProxyAuth::None).await;
    proxy.set_tag_page(Some(3));
    let s = source(&proxy.host(), None);
    let (_, _, body) = get(&s, "paged/app/tags/list").await.unwrap();
    let list: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(list["name"], "paged/app");
    let mut got: Vec<String> = serde_json::from_value(list["tags"].clone()).unwrap();
    got.sort();
    assert_eq!(got, tags);
    assert_eq!(proxy.counts().tag_lists, 3, "7 tags in pages of 3");
}

/// Revalidating a manifest by tag is one HEAD: the same digest is `NotModified` without a GET;
/// once the tag is pushed again with another image, the new index comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_is_revalidated_by_head_and_follows_a_new_push() {
    let Some(reg) = start_registry(RegistryAuth::None) else { return };
    let first = pushed(&reg, 21, "app", "stable");
    let proxy = RegistryProxy::start(&reg.url(), ProxyAuth::None).await;
    let s = source(&proxy.host(), None);
    let stored = Validators { etag: Some(first.top().digest.clone()), last_modified: None };
    let req = FetchRequest { validators: Some(stored), ..FetchRequest::default() };
    assert!(matches!(s.fetch(&key("app/manifests/stable"), &req).await.unwrap(), Fetched::NotModified));
    let c = proxy.counts();
    assert_eq!((c.manifest_heads, c.manifest_gets), (1, 0));
    let second = pushed(&reg, 22, "app", "stable");
    let (meta, _, body) = read(s.fetch(&key("app/manifests/stable"), &req).await.unwrap()).await.unwrap();
    assert_eq!(body, second.top().bytes);
    assert_eq!(meta.validators.etag.as_deref(), Some(second.top().digest.as_str()));
    let c = proxy.counts();
    assert_eq!((c.manifest_heads, c.manifest_gets), (2, 1));
}

/// A registry with htpasswd: without credentials the error says how to give them; with them the
/// manifest comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_htpasswd_registry_is_read_with_the_namespace_credentials() {
    let Some(reg) = start_registry(RegistryAuth::htpasswd("puller", "pa55")) else { return };
    let image = pushed(&reg, 31, "private/app", "v1");
    let e = get(&source(&reg.host(), None), "private/app/manifests/v1").await.unwrap_err();
    assert!(matches!(e, SourceError::Unauthorized { .. }) && e.to_string().contains("registry_user"), "{e}");
    let e = get(&source(&reg.host(), Some(("puller", "wrong"))), "private/app/manifests/v1").await.unwrap_err();
    assert!(matches!(e, SourceError::Unauthorized { .. }) && e.to_string().contains("refused"), "{e}");
    assert!(!format!("{e:?}").contains("wrong"), "no password in errors");
    let s = source(&reg.host(), Some(("puller", "pa55")));
    let (_, _, body) = get(&s, "private/app/manifests/v1").await.unwrap();
    assert_eq!(body, image.top().bytes);
    let layer = &image.manifests()[1].layers[2];
    let (_, _, body) = get(&s, &format!("private/app/blobs/{}", layer.digest)).await.unwrap();
    assert_eq!(body, layer.bytes);
}

/// Through a Bearer token proxy: one token (asked with the basic credentials) serves a manifest
/// and every blob; a token the registry stops accepting is fetched again, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bearer_token_is_fetched_once_reused_and_refetched_when_refused() {
    let Some(reg) = start_registry(RegistryAuth::None) else { return };
    let image = pushed(&reg, 41, "team/app", "v1");
    let auth = ProxyAuth::Bearer { credentials: Some(("tok".into(), "en".into())), expires_in: Some(300) };
    let proxy = RegistryProxy::start(&reg.url(), auth).await;
    let s = source(&proxy.host(), Some(("tok", "en")));
    let (_, _, body) = get(&s, "team/app/manifests/v1").await.unwrap();
    assert_eq!(body, image.top().bytes);
    let blobs = image.layer_and_config_blobs();
    for blob in blobs.values() {
        let (_, _, body) = get(&s, &format!("team/app/blobs/{}", blob.digest)).await.unwrap();
        assert_eq!(sha256(&body), blob.digest);
    }
    let c = proxy.counts();
    assert_eq!((c.tokens, c.unauthorized), (1, 1), "one challenge, one token");
    assert_eq!(c.blob_gets, blobs.len() as u64);
    let token_request = proxy.requests().into_iter().find(|r| r.path.starts_with("/token")).unwrap();
    assert!(token_request.path.contains("scope=repository%3Ateam%2Fapp%3Apull"), "{}", token_request.path);
    assert!(token_request.headers["authorization"].starts_with("Basic "));
    proxy.expire_tokens();
    let (_, _, body) = get(&s, "team/app/manifests/v1").await.unwrap();
    assert_eq!(body, image.top().bytes);
    let c = proxy.counts();
    assert_eq!((c.tokens, c.unauthorized), (2, 2), "the refused token was replaced once");
    // Another repository is another scope: another token.
    let e = get(&s, "other/manifests/v1").await.unwrap_err();
    assert!(matches!(e, SourceError::NotFound { .. }), "{e:?}");
    assert_eq!(proxy.counts().tokens, 3);
    // Wrong credentials: the token endpoint refuses, and the error says so.
    let wrong = source(&proxy.host(), Some(("tok", "nope")));
    let e = get(&wrong, "team/app/manifests/v1").await.unwrap_err();
    assert!(matches!(e, SourceError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("refused the namespace's registry credentials"), "{e}");
}

/// A token endpoint that never answers fails the fetch within the read timeout, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_token_endpoint_is_a_clear_bounded_error() {
    let Some(reg) = start_registry(RegistryAuth::None) else { return };
    pushed(&reg, 51, "app", "v1");
    let proxy = RegistryProxy::start(&reg.url(), ProxyAuth::Bearer { credentials: None, expires_in: None }).await;
    // A listener that accepts connections and never answers them.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    proxy.set_realm(&format!("http://{}/token", hang.local_addr().unwrap()));
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = hang.accept().await {
            held.push(conn);
        }
    });
    let config = HttpSourceConfig { read_timeout: Duration::from_millis(300), ..HttpSourceConfig::default() };
    let e = get(&source_at(&proxy.host(), None, &config), "app/manifests/v1").await.unwrap_err();
    assert!(matches!(e, SourceError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("token endpoint") && e.to_string().contains("timed out"), "{e}");
}

/// What a real registry does not do on demand: a 401 without a challenge, a 429, a manifest
/// over the limit, a redirect loop.
#[tokio::test]
async fn misbehaving_registries_are_clear_errors() {
    let reg = tiercache_testkit::Source::start().await;
    let host = reg.url().trim_start_matches("http://").trim_end_matches('/').to_owned();
    let s = source(&host, None);
    reg.set_behavior("v2/app/manifests/closed", Behavior::Status(401));
    let e = get(&s, "app/manifests/closed").await.unwrap_err();
    assert!(matches!(e, SourceError::Unauthorized { .. }) && e.to_string().contains("without a challenge"), "{e}");
    reg.set_behavior("v2/app/manifests/busy", Behavior::Status(429));
    let e = get(&s, "app/manifests/busy").await.unwrap_err();
    assert!(matches!(e, SourceError::Status { status: 429, .. }), "{e:?}");
    reg.put("v2/app/manifests/huge", vec![b' '; 4 * 1024 * 1024 + 1]);
    let e = get(&s, "app/manifests/huge").await.unwrap_err();
    assert!(matches!(e, SourceError::Protocol { .. }) && e.to_string().contains("limit"), "{e}");
    let digest = sha256(b"looping");
    let path = format!("v2/app/blobs/{digest}");
    reg.set_behavior(&path, Behavior::Redirect(307, format!("/{path}")));
    let e = get(&s, &format!("app/blobs/{digest}")).await.unwrap_err();
    assert!(matches!(e, SourceError::Redirect { .. }) && e.to_string().contains("more than 5 redirects"), "{e}");
    // Keys outside the grammar are refused before anything is sent.
    let before = reg.counts("v2/App/manifests/v1").full;
    for bad in ["App/manifests/v1", "a/.b/manifests/v1", &format!("app/blobs/sha512:{}", "0".repeat(128))] {
        let e = get(&s, bad).await.unwrap_err();
        assert!(matches!(e, SourceError::InvalidKey { .. }), "{bad}: {e:?}");
    }
    assert_eq!(reg.counts("v2/App/manifests/v1").full, before);
}

/// A redirect to blob storage on another host is followed without the registry's
/// `Authorization`, which the registry itself did get.
#[tokio::test]
async fn authorization_is_not_forwarded_to_another_host() {
    let (upstream, storage) = (tiercache_testkit::Source::start().await, tiercache_testkit::Source::start().await);
    let data = tiercache_testkit::bytes(61, 10_000);
    let digest = sha256(&data);
    storage.put("signed/blob", data.clone());
    // Another host name (and port) than the registry's.
    let storage_url = storage.url().replace("127.0.0.1", "localhost");
    upstream
        .set_behavior(&format!("v2/app/blobs/{digest}"), Behavior::Redirect(307, format!("{storage_url}signed/blob")));
    let proxy = RegistryProxy::start(
        upstream.url().trim_end_matches('/'),
        ProxyAuth::Bearer { credentials: None, expires_in: None },
    )
    .await;
    let s = source(&proxy.host(), None);
    let (_, _, body) = get(&s, &format!("app/blobs/{digest}")).await.unwrap();
    assert_eq!(body, data);
    let sent =
        proxy.requests().into_iter().filter(|r| r.path.contains("/blobs/") && r.status == 307).collect::<Vec<_>>();
    assert!(sent[0].headers["authorization"].starts_with("Bearer "), "the registry got the token");
    let seen = &storage.requests("signed/blob")[0];
    assert!(!seen.contains_key("authorization"), "Authorization followed a redirect to another host: {seen:?}");
}
