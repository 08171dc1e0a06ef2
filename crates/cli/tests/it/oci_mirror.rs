//! The registry mirror end to end: `tiercache serve` in front of a real registry (Debian's
//! docker-registry, behind the test harness's counting proxy), pulled through by skopeo. A pull
//! through the mirror is byte-identical to one from the registry; a second pull makes no upstream
//! blob GET; with the registry stopped, a tag pulled before still resolves and pulls; a push is
//! refused; hostile names are refused before any lookup.

use std::path::Path;
use std::process::Command;

use tiercache_testkit::registry::{Compression, ImageBuilder, ProxyAuth, RegistryAuth, RegistryProxy, RegistryServer};
use tiercache_testkit::servers::{self, S3Server};

use crate::common::*;

/// `skopeo copy docker://REGISTRY/NAME:TAG oci:DIR:TAG` over plain HTTP, every platform.
fn skopeo_pull(registry: &str, name: &str, tag: &str, dir: &Path) {
    let out = Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--all", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{registry}/{name}:{tag}"))
        .arg(format!("oci:{}:{tag}", dir.display()))
        .output()
        .expect("skopeo (apt-get install skopeo)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "skopeo copy from {registry} failed: {stderr}");
}

/// Every file of an OCI layout, by path, with its bytes.
fn layout_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut files = std::collections::BTreeMap::new();
    for (path, _) in tree(dir) {
        let full = dir.join(&path);
        if full.is_file() {
            files.insert(path.display().to_string(), std::fs::read(full).unwrap());
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_pulls_through_the_mirror_byte_identical_and_once() {
    let Some(mut registry) = servers::or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else {
        return;
    };
    let image = ImageBuilder::new(7)
        .tag("v1")
        .layers(&[(Compression::Gzip, 300_000), (Compression::Zstd, 200_000), (Compression::Gzip, 5_000)])
        .multi_platform()
        .build()
        .unwrap();
    let tags = ["v1", "v2", "v3", "v4", "v5"];
    for tag in tags {
        registry.push(&image, "team/app", tag).unwrap();
    }
    let proxy = RegistryProxy::start(&registry.url(), ProxyAuth::None).await;

    let d = dirs();
    tcr(&d.data, &["ns", "create", "hub", "--source", &format!("oci+http://{}", proxy.host())]).ok();
    // Tags revalidated on every read (a HEAD), so that the registry going away is seen.
    let server = Server::start(&d.data, &["--oci-tag-ttl", "0s"]).await;
    let mirror = server.base.trim_start_matches("http://").to_owned();

    let direct = d.tmp.path().join("direct");
    skopeo_pull(&registry.host(), "team/app", "v1", &direct);
    let first = d.tmp.path().join("first");
    skopeo_pull(&mirror, "team/app", "v1", &first);
    assert_eq!(layout_files(&first), layout_files(&direct), "the mirror's pull is the registry's, byte for byte");
    let after_first = proxy.counts();
    let n_blobs = image.layer_and_config_blobs().len() as u64;
    assert_eq!(after_first.blob_gets, n_blobs, "one upstream GET per blob: {after_first:?}");

    let second = d.tmp.path().join("second");
    skopeo_pull(&mirror, "team/app", "v1", &second);
    assert_eq!(layout_files(&second), layout_files(&direct));
    let after_second = proxy.counts();
    assert_eq!(after_second.blob_gets, after_first.blob_gets, "a second pull makes no upstream blob GET");
    assert_eq!(after_second.manifest_gets, after_first.manifest_gets, "nor a manifest GET");
    assert!(after_second.manifest_heads > after_first.manifest_heads, "the tag was revalidated by a HEAD");
    // What was served from where, and what was asked of the registry, is counted.
    let gets = server.metric("tiercache_oci_upstream_requests_total{kind=\"get\"}").await;
    assert_eq!(gets as u64, after_second.blob_gets + after_second.manifest_gets, "upstream GETs counted");
    let from_source = "oci.served.blob.source";
    wait_until("the mirror's counters are flushed", async || {
        let stats = tcr(&d.data, &["stats", "--json"]).ok().json();
        let front = &stats["front"];
        let served: i64 = front
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, _)| k.starts_with("oci.served.blob."))
            .map(|(_, v)| v.as_i64().unwrap_or(0))
            .sum();
        front[from_source].as_i64() == Some(n_blobs as i64)
            && served == 2 * n_blobs as i64
            && front["oci.upstream.get"].as_i64() == Some(gets as i64)
    })
    .await;
    let out = tcr(&d.data, &["stats"]).ok();
    assert!(out.stdout.contains("registry mirror: "), "{}", out.stdout);
    assert!(out.stdout.contains(&format!("upstream {} GET", gets as u64)), "{}", out.stdout);

    // `warm` into another data directory fetches every blob once; again, none.
    let d2 = dirs();
    tcr(&d2.data, &["ns", "create", "hub", "--source", &format!("oci+http://{}", proxy.host())]).ok();
    let warmed = tcr(&d2.data, &["warm", "team/app:v1", "--ns", "hub", "--json"]).ok().json();
    assert_eq!(warmed["blobs"], n_blobs, "{warmed}");
    assert_eq!(warmed["blobs_already_cached"], 0, "{warmed}");
    assert_eq!(warmed["manifests"], 1 + image.manifests().len() as u64, "the index and each platform's manifest");
    assert_eq!(proxy.counts().blob_gets, after_second.blob_gets + n_blobs);
    let again = tcr(&d2.data, &["warm", "team/app:v1", "--ns", "hub", "--json"]).ok().json();
    assert_eq!(again["blobs_already_cached"], n_blobs, "{again}");
    let one = tcr(&d2.data, &["warm", "team/app:v1", "--ns", "hub", "--platform", "linux/arm64", "--json"]).ok().json();
    assert_eq!(one["manifests"], 2, "the index and the one platform's manifest: {one}");
    assert_eq!(proxy.counts().blob_gets, after_second.blob_gets + n_blobs, "warming again fetches nothing");

    // Pushes are refused; hostile names never reach a lookup.
    let client = client();
    let push = client.post(server.url("/v2/team/app/blobs/uploads/")).send().await.unwrap();
    assert_eq!(push.status().as_u16(), 405);
    let body: serde_json::Value = serde_json::from_slice(&push.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
    for (path, code) in [
        ("/v2/Team/app/manifests/v1", "NAME_INVALID"),
        ("/v2/team/../app/manifests/v1", "NAME_INVALID"),
        ("/v2/team/app/blobs/sha512:00", "NAME_INVALID"),
        ("/v2/team/app/manifests/nope", "MANIFEST_UNKNOWN"),
    ] {
        let (status, body) = raw_get(&mirror, path);
        assert_eq!(status, 404, "{path}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["errors"][0]["code"], code, "{path}");
    }
    let base = client.get(server.url("/v2/")).send().await.unwrap();
    assert_eq!(base.status().as_u16(), 200);
    assert_eq!(base.headers()["docker-distribution-api-version"], "registry/2.0");

    // A tag list from a registry that pages it is cached whole, and paged again by the mirror
    // (`n`, `last`, `Link`), which skopeo follows.
    proxy.set_tag_page(Some(2));
    let lists_before = proxy.counts().tag_lists;
    let mut seen = Vec::new();
    let mut next = Some("/v2/team/app/tags/list?n=2".to_owned());
    while let Some(path) = next.take() {
        let res = client.get(server.url(&path)).send().await.unwrap();
        assert_eq!(res.status().as_u16(), 200, "{path}");
        next = res.headers().get("link").map(|l| {
            let l = l.to_str().unwrap();
            assert!(l.ends_with(">; rel=\"next\""), "{l}");
            l.trim_start_matches('<').split('>').next().unwrap().to_owned()
        });
        let page: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
        assert_eq!(page["name"], "team/app");
        let page: Vec<String> = serde_json::from_value(page["tags"].clone()).unwrap();
        assert!(page.len() <= 2, "{page:?}");
        seen.extend(page);
        assert!(seen.len() <= tags.len(), "the pages end: {seen:?}");
    }
    assert_eq!(seen, tags, "every tag once, in order");
    assert!(proxy.counts().tag_lists >= lists_before + 3, "the registry's pages of 2 were all read");
    let listed = Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{mirror}/team/app"))
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed["Tags"].as_array().map(Vec::len), Some(tags.len()), "{listed}");
    let none: serde_json::Value = serde_json::from_slice(
        &client.get(server.url("/v2/team/app/tags/list?n=0")).send().await.unwrap().bytes().await.unwrap(),
    )
    .unwrap();
    assert_eq!(none["tags"], serde_json::json!([]));
    let bad = client.get(server.url("/v2/team/app/tags/list?n=many")).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let body: serde_json::Value = serde_json::from_slice(&bad.bytes().await.unwrap()).unwrap();
    assert_eq!(body["errors"][0]["code"], "PAGINATION_NUMBER_INVALID");

    // The registry stopped: the tag pulled before still resolves, from the cache.
    registry.kill();
    let offline = d.tmp.path().join("offline");
    skopeo_pull(&mirror, "team/app", "v1", &offline);
    assert_eq!(layout_files(&offline), layout_files(&direct));
    assert!(server.metric("tiercache_stale_served_total").await >= 1.0, "served from the cache, counted");
}

/// GET `path` of the mirror with `reqwest`; the status and the body, or the error that cut it
/// (status 0 if no answer came: a connection the server cut after a failed body, say).
async fn mirror_get(client: &reqwest::Client, url: String) -> (u16, Result<Vec<u8>, String>) {
    let res = match client.get(url).send().await {
        Ok(res) => res,
        Err(e) => return (0, Err(e.to_string())),
    };
    let status = res.status().as_u16();
    (status, res.bytes().await.map(|b| b.to_vec()).map_err(|e| e.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_shared_layers_make_one_upstream_get_and_lying_bytes_are_never_served_whole() {
    let Some(registry) = servers::or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else {
        return;
    };
    let image = ImageBuilder::new(11)
        .tag("v1")
        .layers(&[(Compression::Gzip, 400_000), (Compression::Zstd, 100_000)])
        .build()
        .unwrap();
    // Two repositories holding the same layers: one blob each, whichever image asks.
    registry.push(&image, "team/a", "v1").unwrap();
    registry.push(&image, "team/b", "v1").unwrap();
    let proxy = RegistryProxy::start(&registry.url(), ProxyAuth::None).await;
    let d = dirs();
    tcr(&d.data, &["ns", "create", "hub", "--source", &format!("oci+http://{}", proxy.host())]).ok();
    tcr(&d.data, &["ns", "create", "other", "--source", &format!("oci+http://{}", proxy.host())]).ok();
    let server = Server::start(&d.data, &["--oci-default-ns", "hub"]).await;
    let client = client();

    // A HEAD of a tag (how containerd resolves one) says its digest, before anything is stored.
    let head = client.head(server.url("/v2/team/a/manifests/v1")).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(head.headers()["docker-content-digest"], image.top().digest.as_str());
    assert_eq!(head.headers()["content-type"], image.top().media_type.as_str());

    // 64 concurrent GETs of each blob, from two repositories and two namespaces.
    let blobs = image.layer_and_config_blobs();
    for (digest, blob) in &blobs {
        let gets = (0..64).map(|i| {
            let repo = if i % 2 == 0 { "team/a" } else { "team/b" };
            let ns = if i % 4 < 2 { "" } else { "?ns=" };
            let query = if ns.is_empty() { String::new() } else { format!("{ns}{}", proxy.host()) };
            mirror_get(&client, server.url(&format!("/v2/{repo}/blobs/{digest}{query}")))
        });
        let got = futures::future::join_all(gets).await;
        for (status, body) in got {
            assert_eq!(status, 200, "{digest}");
            assert!(body.unwrap() == blob.bytes, "{digest}: every reader gets the blob's bytes");
        }
        assert_eq!(proxy.blob_gets(digest), 1, "64 concurrent pulls of {digest} made one upstream GET");
    }
    // A registry whose stored bytes no longer match their digest: never stored, never whole.
    let liar = ImageBuilder::new(12).tag("v1").layers(&[(Compression::Gzip, 200_000)]).build().unwrap();
    registry.push(&liar, "team/liar", "v1").unwrap();
    let layer = liar.manifests()[0].layers[0].clone();
    let data = registry.blob_data_path(&layer.digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let url = server.url(&format!("/v2/team/liar/blobs/{}", layer.digest));
    for attempt in 0..2 {
        // A client of its own each time: the connection of a failed body is closed by the server.
        let (status, body) = mirror_get(&crate::common::client(), url.clone()).await;
        let whole = matches!(&body, Ok(b) if b.len() == layer.bytes.len());
        assert!(!(status == 200 && whole), "attempt {attempt}: a body that does not match its digest arrived whole");
    }
    assert_eq!(proxy.blob_gets(&layer.digest), 2, "nothing was stored: each read asked again");
    let hex = layer.digest.trim_start_matches("sha256:");
    assert!(!blob_files(&d.data).contains(hex), "the lying bytes are not a blob");
    let wrong = hex_of(&bytes);
    assert!(!blob_files(&d.data).contains(&wrong), "not even under their own digest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_pulls_an_image_the_first_pulled_without_an_upstream_blob_get() {
    let Some(registry) = servers::or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else {
        return;
    };
    let Some(store) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    let image = ImageBuilder::new(21)
        .tag("v1")
        .layers(&[(Compression::Gzip, 300_000), (Compression::Zstd, 150_000)])
        .multi_platform()
        .build()
        .unwrap();
    registry.push(&image, "team/app", "v1").unwrap();
    let proxy = RegistryProxy::start(&registry.url(), ProxyAuth::None).await;
    let shared = format!("s3://{}/oci?endpoint={}&region={}", S3Server::BUCKET, store.endpoint(), store.region());
    let env = [("AWS_ACCESS_KEY_ID", store.access_key()), ("AWS_SECRET_ACCESS_KEY", store.secret_key())];
    let node = async |d: &Dirs| {
        tcr(&d.data, &["ns", "create", "hub", "--source", &format!("oci+http://{}", proxy.host())]).ok();
        Server::start_with_env(&d.data, &["--shared", &shared], &env).await
    };
    let (da, db) = (dirs(), dirs());
    let a = node(&da).await;
    let pulled_a = da.tmp.path().join("a");
    skopeo_pull(a.base.trim_start_matches("http://"), "team/app", "v1", &pulled_a);
    let n_blobs = image.layer_and_config_blobs().len() as f64;
    // Node A's blobs (and manifests) are written back to the shared tier.
    a.wait_write_backs_settled(n_blobs).await;
    let after_a = proxy.counts();

    let b = node(&db).await;
    let pulled_b = db.tmp.path().join("b");
    skopeo_pull(b.base.trim_start_matches("http://"), "team/app", "v1", &pulled_b);
    assert_eq!(layout_files(&pulled_b), layout_files(&pulled_a), "node B pulled the same image");
    let after_b = proxy.counts();
    assert_eq!(after_b.blob_gets, after_a.blob_gets, "node B made no upstream blob GET: {after_b:?}");
}
