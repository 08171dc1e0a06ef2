//! Container runtimes pulling through the registry mirror: containerd (`ctr images pull
//! --hosts-dir` with a `hosts.toml` naming `tiercache serve` as mirror, which sends
//! `?ns=<registry>`) and podman (a `registries.conf` mirror entry, no `ns`), both in front of a
//! real registry (Debian's docker-registry).
//!
//! Two counting proxies stand in front of the one registry: `upstream`, the source of tiercache's
//! namespace and the registry containerd's image reference names, and `direct`, the registry
//! podman's reference names and a second namespace's source. A pull through the mirror shows as
//! one GET per blob at `upstream`, every request there from tiercache (by its `User-Agent`), and
//! none at `direct`; a second pull by a runtime with empty storage makes no upstream blob GET.

use std::collections::BTreeSet;

use tiercache_testkit::registry::{
    BuiltImage, BuiltManifest, Containerd, ImageBuilder, Podman, ProxyAuth, RegistryAuth, RegistryProxy,
    RegistryServer, containerd_hosts_dir,
};
use tiercache_testkit::servers;

use crate::common::*;

/// A registry holding a two-platform image `team/app:v1`, and the two proxies in front of it.
struct Upstream {
    _registry: RegistryServer,
    image: BuiltImage,
    /// Tiercache's source (`hub`), and the registry containerd's image reference names.
    upstream: RegistryProxy,
    /// The registry podman's image reference names, and the source of containerd's second
    /// namespace (`other`).
    direct: RegistryProxy,
}

impl Upstream {
    async fn start(seed: u64) -> Option<Upstream> {
        let registry = servers::or_skip("docker-registry", RegistryServer::start(RegistryAuth::None))?;
        let image = ImageBuilder::new(seed).tag("v1").multi_platform().build().unwrap();
        registry.push(&image, "team/app", "v1").unwrap();
        let upstream = RegistryProxy::start(&registry.url(), ProxyAuth::None).await;
        let direct = RegistryProxy::start(&registry.url(), ProxyAuth::None).await;
        Some(Upstream { _registry: registry, image, upstream, direct })
    }

    /// The image of this machine's platform, which runtimes pull from the index.
    fn amd64(&self) -> &BuiltManifest {
        self.image.manifests().iter().find(|m| m.platform == ("linux".into(), "amd64".into())).unwrap()
    }

    /// The digests of the amd64 image's config and layers: what `/v2/NAME/blobs/` serves it.
    fn amd64_blobs(&self) -> BTreeSet<String> {
        let m = self.amd64();
        std::iter::once(&m.config).chain(&m.layers).map(|b| b.digest.clone()).collect()
    }

    /// Each of `blobs` was fetched exactly once from `upstream`, every request there came from
    /// tiercache (by its `User-Agent`), and `direct` saw no manifest or blob request.
    fn assert_pulled_through_the_mirror_once(&self, blobs: &BTreeSet<String>) {
        for digest in blobs {
            assert_eq!(
                self.upstream.blob_gets(digest),
                1,
                "one upstream GET of {digest}: {:?}",
                self.upstream.counts()
            );
        }
        assert_eq!(self.upstream.counts().blob_gets, blobs.len() as u64, "no other blob: {:?}", self.upstream.counts());
        for r in self.upstream.requests() {
            let agent = r.headers.get("user-agent").map_or("", String::as_str);
            assert!(
                agent.starts_with("tiercache/"),
                "only tiercache asks the upstream: {} {} by {agent:?}",
                r.method,
                r.path
            );
        }
        let direct = self.direct.counts();
        assert_eq!(
            (direct.manifest_gets, direct.manifest_heads, direct.blob_gets, direct.blob_heads),
            (0, 0, 0, 0),
            "the runtime went to the registry, not the mirror: {:?}",
            self.direct.requests()
        );
    }
}

/// `tiercache serve` with `hub` sourced from `upstream` and `other` from `direct`: two registry
/// namespaces and no `--oci-default-ns`, so that only a request carrying `?ns=` finds one.
async fn serve_two_namespaces(d: &Dirs, up: &Upstream) -> Server {
    tcr(&d.data, &["ns", "create", "hub", "--source", &format!("oci+http://{}", up.upstream.host())]).ok();
    tcr(&d.data, &["ns", "create", "other", "--source", &format!("oci+http://{}", up.direct.host())]).ok();
    Server::start(&d.data, &[]).await
}

/// Starts a containerd of its own (blocking, off the runtime's threads).
async fn start_containerd() -> Option<Containerd> {
    let started = tokio::task::spawn_blocking(Containerd::start).await.unwrap();
    servers::or_skip("containerd (as root)", started)
}

/// Pulls `reference` with a fresh containerd through the hosts directory, and checks that the
/// image's tag resolved to `top` and that its content store holds exactly `content`.
async fn containerd_pull(reference: &str, hosts: &std::path::Path, top: &str, content: &BTreeSet<String>) {
    let Some(containerd) = start_containerd().await else { panic!("containerd started before") };
    let (reference, hosts) = (reference.to_owned(), hosts.to_owned());
    let (top, content) = (top.to_owned(), content.clone());
    tokio::task::spawn_blocking(move || {
        containerd.pull(&reference, &hosts).unwrap();
        assert_eq!(containerd.image_digest(&reference).unwrap().as_deref(), Some(top.as_str()));
        assert_eq!(containerd.content_digests().unwrap(), content, "the index, the amd64 manifest, config and layers");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_through_the_mirror_once() {
    // Fail (or skip) early, before any server starts, if containerd cannot run here.
    let Some(probe) = start_containerd().await else { return };
    drop(probe);
    let Some(up) = Upstream::start(11).await else { return };
    let d = dirs();
    let server = serve_two_namespaces(&d, &up).await;
    let mirror = server.base.trim_start_matches("http://").to_owned();
    let hosts = containerd_hosts_dir(d.tmp.path(), &up.upstream.host(), &up.upstream.url(), &[&mirror]).unwrap();
    let reference = format!("{}/team/app:v1", up.upstream.host());
    let blobs = up.amd64_blobs();
    let mut content = blobs.clone();
    content.extend([up.image.top().digest.clone(), up.amd64().manifest.digest.clone()]);

    containerd_pull(&reference, &hosts, &up.image.top().digest, &content).await;
    up.assert_pulled_through_the_mirror_once(&blobs);
    let after_first = up.upstream.counts();

    // Another containerd, with an empty content store: every blob comes from tiercache's cache.
    containerd_pull(&reference, &hosts, &up.image.top().digest, &content).await;
    up.assert_pulled_through_the_mirror_once(&blobs);
    assert_eq!(up.upstream.counts().manifest_gets, after_first.manifest_gets, "nor a manifest GET");
}

/// A podman of its own pulls `reference` and finds it under the digest `top`.
async fn podman_pull(registry: &str, mirror: &str, reference: &str, top: &str) {
    let (registry, mirror, reference, top) =
        (registry.to_owned(), mirror.to_owned(), reference.to_owned(), top.to_owned());
    tokio::task::spawn_blocking(move || {
        let podman = Podman::new(&registry, &mirror).unwrap();
        podman.pull(&reference).unwrap();
        assert_eq!(podman.image_digest(&reference).unwrap(), top);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_pulls_through_the_mirror_once() {
    let Some(up) = Upstream::start(12).await else { return };
    let d = dirs();
    // podman sends no `?ns=`: the only registry namespace answers.
    tcr(&d.data, &["ns", "create", "hub", "--source", &format!("oci+http://{}", up.upstream.host())]).ok();
    let server = Server::start(&d.data, &[]).await;
    let mirror = server.base.trim_start_matches("http://").to_owned();
    let registry = up.direct.host();
    let probe = tokio::task::spawn_blocking({
        let (registry, mirror) = (registry.clone(), mirror.clone());
        move || Podman::new(&registry, &mirror)
    });
    if servers::or_skip("podman", probe.await.unwrap()).is_none() {
        return;
    }
    let reference = format!("{registry}/team/app:v1");
    let blobs = up.amd64_blobs();

    podman_pull(&registry, &mirror, &reference, &up.image.top().digest).await;
    up.assert_pulled_through_the_mirror_once(&blobs);
    // Another podman, with empty storage: nothing new upstream.
    podman_pull(&registry, &mirror, &reference, &up.image.top().digest).await;
    up.assert_pulled_through_the_mirror_once(&blobs);
}
