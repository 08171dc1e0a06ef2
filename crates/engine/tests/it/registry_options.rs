//! A registry namespace's credentials (`registry_user`, `registry_password`): accepted for
//! `oci://` and `oci+http://` sources only, both or neither, and the password never shown.

use tiercache_engine::{Cache, CacheConfig, Error, NamespaceOptions, Secret};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_credentials_go_with_registry_sources_and_never_show() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(CacheConfig::new(dir.path().join("data"))).await.unwrap();
    let creds = NamespaceOptions {
        registry_user: Some("puller".into()),
        registry_password: Some(Secret::new("pa55word")),
        ..Default::default()
    };
    let (ns, created) = cache.create_namespace("hub", Some("oci+http://127.0.0.1:5000"), &creds).await.unwrap();
    assert!(created);
    let shown = serde_json::to_string(&ns).unwrap();
    assert!(shown.contains("\"registry_user\":\"puller\"") && !shown.contains("pa55word"), "{shown}");
    assert!(shown.contains("\"registry_password\":\"***\""), "{shown}");
    let e = cache.create_namespace("web", Some("http://127.0.0.1:1/"), &creds).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)) && e.to_string().contains("oci:// and oci+http:// sources only"), "{e}");
    let half = NamespaceOptions { registry_password: Some(Secret::new("x")), ..Default::default() };
    let e = cache.create_namespace("half", Some("oci://registry.example"), &half).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)) && e.to_string().contains("go together"), "{e}");
    let e = cache.create_namespace("bad", Some("oci://u:p@registry.example"), &Default::default()).await.unwrap_err();
    assert!(matches!(e, Error::Invalid(_)) && !e.to_string().contains("u:p@"), "{e}");
}
