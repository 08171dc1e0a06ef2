//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) started as a child
//! process on a free port of 127.0.0.1 with its own storage directory, killed on drop, with or
//! without htpasswd basic authentication; and `skopeo copy` to push images into it.
//!
//! Beside it: `registry/image.rs` builds OCI image layouts on disk (layers in gzip and zstd, a
//! multi-platform index), `registry/files.rs` builds images of real files with GNU `tar` (and
//! bad layers, a big gzip layer, and the tree `umoci unpack` makes of an image), and
//! `registry/proxy.rs` puts an authenticating, counting reverse proxy
//! and a Bearer token server in front of a registry; `registry/runtimes.rs` starts containerd and
//! podman with private storage, to pull through a mirror.
//!
//! ```no_run
//! use tiercache_testkit::registry::{ImageBuilder, RegistryAuth, RegistryServer};
//! use tiercache_testkit::servers;
//!
//! fn a_test() {
//!     let Some(reg) = servers::or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else { return };
//!     let image = ImageBuilder::new(1).build().unwrap();
//!     reg.push(&image, "library/app", "v1").unwrap();
//! }
//! ```
//!
//! Quirk of docker-registry 2.8: a manifest stored with an OCI media type is answered 404
//! (`MANIFEST_UNKNOWN`) unless the request's `Accept` lists that type.
//!
//! Everything here is blocking (`std::process`); `start`, `restart` and `push` block for at most
//! [`READY_TIMEOUT`](crate::servers::READY_TIMEOUT) (a push for as long as skopeo takes).

mod files;
mod image;
mod proxy;
mod runtimes;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub use files::{
    BigLayerImage, BuiltLayer, DEFAULT_MTIME, FileFacts, FileImage, FileKind, LayerCompression, LayerSpec, TarFormat,
    Unpacked, bad, big_gzip_layer_image, image_of_layers, sample, tree_facts, umoci_unpack,
};
pub use image::{BuiltImage, BuiltManifest, Compression, ImageBlob, ImageBuilder, media_types};
pub use proxy::{ProxyAuth, RecordedRequest, RegistryCounts, RegistryProxy, RequestKind};
pub use runtimes::{Containerd, Podman, containerd_hosts_dir, is_root};

use crate::servers::{find_binary, kill, restart_same_port, spawn_and_wait, start_on_free_port, tempdir};

const REGISTRY_INSTALL: &str =
    "apt-get install -y docker-registry (or set TIERCACHE_REGISTRY_SERVER to a docker-registry binary)";
const SKOPEO_INSTALL: &str = "apt-get install -y skopeo (or set TIERCACHE_SKOPEO to a skopeo binary)";

/// How a [`RegistryServer`] authenticates its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// Anyone may pull and push.
    None,
    /// HTTP basic authentication against an htpasswd file holding this one user (bcrypt).
    Htpasswd {
        /// The user name.
        user: String,
        /// Its password.
        password: String,
    },
}

impl RegistryAuth {
    /// `Htpasswd` with `user` and `password`.
    pub fn htpasswd(user: &str, password: &str) -> RegistryAuth {
        RegistryAuth::Htpasswd { user: user.to_owned(), password: password.to_owned() }
    }
}

/// A `docker-registry serve CONFIG.yml` process on `http://127.0.0.1:PORT`, storing in a
/// temporary directory that outlives restarts (not drops).
#[derive(Debug)]
pub struct RegistryServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    auth: RegistryAuth,
    child: Option<Child>,
}

impl RegistryServer {
    /// Starts the registry on a free port with empty storage; returns once the port answers.
    pub fn start(auth: RegistryAuth) -> Result<RegistryServer, String> {
        let binary = find_binary(
            "TIERCACHE_REGISTRY_SERVER",
            "docker-registry",
            &[std::path::Path::new("/usr/bin")],
            REGISTRY_INSTALL,
        )?;
        let dir = tempdir("registry")?;
        if let RegistryAuth::Htpasswd { user, password } = &auth {
            let hash = bcrypt::hash(password, 5).map_err(|e| format!("hashing the test password: {e}"))?;
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, format!("{user}:{hash}\n"))
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        let mut server = RegistryServer { binary, port: 0, dir, auth, child: None };
        start_on_free_port(|port| {
            server.port = port;
            server.spawn()
        })?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`, as image references name the registry.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user and password it accepts, if it wants any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        match &self.auth {
            RegistryAuth::None => None,
            RegistryAuth::Htpasswd { user, password } => Some((user, password)),
        }
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`): a test that
    /// rewrites them makes it serve bytes that do not match their digest, as a corrupt or
    /// lying registry would.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.path().join("storage/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// SIGKILL the registry and wait for it: its port stops answering. No-op if not running.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Kill the registry (if running) and start it again on the same port with the same storage.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        restart_same_port(|| self.spawn())
    }

    /// Pushes `image` as `NAME:TAG` with `skopeo copy` (every platform of an index, digests
    /// preserved: the registry then holds exactly the image's bytes).
    pub fn push(&self, image: &BuiltImage, name: &str, tag: &str) -> Result<(), String> {
        let skopeo = find_binary("TIERCACHE_SKOPEO", "skopeo", &[std::path::Path::new("/usr/bin")], SKOPEO_INSTALL)?;
        let mut command = Command::new(skopeo);
        command.args(["--insecure-policy", "copy", "--all", "--preserve-digests", "--dest-tls-verify=false"]);
        if let Some((user, password)) = self.credentials() {
            command.arg("--dest-creds").arg(format!("{user}:{password}"));
        }
        command
            .arg(format!("oci:{}:{}", image.dir().display(), image.tag()))
            .arg(format!("docker://{}/{name}:{tag}", self.host()))
            .stdin(Stdio::null())
            .env("HOME", self.dir.path());
        let out = command.output().map_err(|e| format!("running skopeo: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "skopeo copy to {}/{name}:{tag} failed ({}): {}",
                self.host(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    fn spawn(&mut self) -> Result<(), String> {
        let config = self.dir.path().join("config.yml");
        std::fs::write(&config, self.config_yaml()).map_err(|e| format!("writing {}: {e}", config.display()))?;
        let mut command = Command::new(&self.binary);
        command.arg("serve").arg(&config);
        self.child = Some(spawn_and_wait(command, self.port, &self.dir.path().join("registry.log"))?);
        Ok(())
    }

    /// The registry's configuration: filesystem storage in the temp directory, deletes allowed,
    /// htpasswd if asked for, quiet logs.
    fn config_yaml(&self) -> String {
        let root = self.dir.path().join("storage");
        let auth = match &self.auth {
            RegistryAuth::None => String::new(),
            RegistryAuth::Htpasswd { .. } => format!(
                "auth:\n  htpasswd:\n    realm: tiercache-test\n    path: {}\n",
                self.dir.path().join("htpasswd").display()
            ),
        };
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  \
             delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{}\n{auth}",
            root.display(),
            self.port
        )
    }
}

impl Drop for RegistryServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::servers::or_skip;

    async fn get(url: &str, accept: &str, bearer: Option<&str>) -> (u16, HeaderMapLite, Vec<u8>) {
        let mut rb = reqwest::Client::new().get(url).header("accept", accept);
        if let Some(t) = bearer {
            rb = rb.bearer_auth(t);
        }
        let a = rb.send().await.unwrap();
        let status = a.status().as_u16();
        let headers = a.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned())).collect();
        (status, headers, a.bytes().await.unwrap().to_vec())
    }

    type HeaderMapLite = std::collections::HashMap<String, String>;

    /// A multi-platform image pushed by skopeo is in the registry byte for byte, served through the
    /// proxy (counted), and the registry keeps it across a restart.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_image_pushed_by_skopeo_is_served_as_built() {
        let Some(mut reg) = or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else { return };
        let image = ImageBuilder::new(3).multi_platform().tag("v1").build().unwrap();
        reg.push(&image, "team/app", "v1").unwrap();
        let proxy = RegistryProxy::start(&reg.url(), ProxyAuth::None).await;
        let url = format!("{}/v2/team/app/manifests/v1", proxy.url());
        let (status, _, _) = get(&url, media_types::DOCKER_MANIFEST, None).await;
        assert_eq!(status, 404, "docker-registry hides an OCI index from a client that does not accept it");
        let (status, headers, body) = get(&url, media_types::OCI_INDEX, None).await;
        assert_eq!(status, 200);
        assert_eq!(body, image.top().bytes);
        assert_eq!(headers["docker-content-digest"], image.top().digest);
        for blob in image.layer_and_config_blobs().values() {
            let (status, _, body) =
                get(&format!("{}/v2/team/app/blobs/{}", proxy.url(), blob.digest), "*/*", None).await;
            assert_eq!((status, crate::sha256(&body)), (200, blob.digest.clone()));
        }
        let c = proxy.counts();
        assert_eq!((c.manifest_gets, c.blob_gets), (2, image.layer_and_config_blobs().len() as u64));
        reg.restart().unwrap();
        let (status, _, body) = get(&url, media_types::OCI_INDEX, None).await;
        assert_eq!((status, body), (200, image.top().bytes.clone()));
    }

    /// The proxy counts the body bytes of blob GETs it forwards, ranged ones included, and
    /// records their Range headers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_proxy_counts_blob_bytes_and_records_ranges() {
        let Some(reg) = or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else { return };
        let image = ImageBuilder::new(6).build().unwrap();
        reg.push(&image, "app", "v1").unwrap();
        let proxy = RegistryProxy::start(&reg.url(), ProxyAuth::None).await;
        let layer = &image.manifests()[0].layers[0];
        let url = format!("{}/v2/app/blobs/{}", proxy.url(), layer.digest);
        let whole = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
        assert_eq!(whole.len(), layer.bytes.len());
        let part = reqwest::Client::new().get(&url).header("range", "bytes=10-109").send().await.unwrap();
        assert_eq!(part.status().as_u16(), 206);
        assert_eq!(part.bytes().await.unwrap().as_ref(), &layer.bytes[10..110]);
        let config = &image.manifests()[0].config;
        reqwest::get(format!("{}/v2/app/blobs/{}", proxy.url(), config.digest)).await.unwrap().bytes().await.unwrap();
        assert_eq!(proxy.blob_bytes(&layer.digest), layer.bytes.len() as u64 + 100);
        assert_eq!(proxy.blob_bytes_total(), (layer.bytes.len() + 100 + config.bytes.len()) as u64);
        assert_eq!(proxy.counts().blob_bytes, proxy.blob_bytes_total());
        assert_eq!(proxy.blob_ranges(&layer.digest), [None, Some("bytes=10-109".to_owned())]);
        proxy.reset();
        assert_eq!(proxy.blob_bytes_total(), 0);
    }

    /// With htpasswd, pushes and pulls need the user's password.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_htpasswd_registry_wants_its_password() {
        let auth = RegistryAuth::htpasswd("tester", "s3cret");
        let Some(reg) = or_skip("docker-registry", RegistryServer::start(auth)) else { return };
        let image = ImageBuilder::new(4).build().unwrap();
        reg.push(&image, "app", "v1").unwrap();
        let url = format!("{}/v2/app/manifests/v1", reg.url());
        assert_eq!(get(&url, media_types::OCI_MANIFEST, None).await.0, 401);
        let a = reqwest::Client::new()
            .get(&url)
            .header("accept", media_types::OCI_MANIFEST)
            .basic_auth("tester", Some("s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(a.status().as_u16(), 200);
        assert_eq!(a.bytes().await.unwrap().to_vec(), image.top().bytes);
    }

    /// Through a Bearer proxy: a 401 with a challenge, a token for the scope, then the manifest;
    /// expired tokens are refused again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_bearer_proxy_wants_a_token_for_the_scope() {
        let Some(reg) = or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else { return };
        let image = ImageBuilder::new(5).build().unwrap();
        reg.push(&image, "app", "v1").unwrap();
        let auth = ProxyAuth::Bearer { credentials: Some(("u".into(), "p".into())), expires_in: Some(300) };
        let proxy = RegistryProxy::start(&reg.url(), auth).await;
        let url = format!("{}/v2/app/manifests/v1", proxy.url());
        let (status, headers, _) = get(&url, media_types::OCI_MANIFEST, None).await;
        assert_eq!(status, 401);
        let realm = format!("{}/token", proxy.token_url());
        assert_eq!(
            headers["www-authenticate"],
            format!("Bearer realm=\"{realm}\",service=\"test\",scope=\"repository:app:pull\"")
        );
        let token_url = format!("{realm}?service=test&scope=repository%3Aapp%3Apull");
        assert_eq!(get(&token_url, "*/*", None).await.0, 401, "the token server checks credentials");
        let answer = reqwest::Client::new().get(&token_url).basic_auth("u", Some("p")).send().await.unwrap();
        let token: serde_json::Value = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
        let token = token["token"].as_str().unwrap().to_owned();
        let (status, _, body) = get(&url, media_types::OCI_MANIFEST, Some(&token)).await;
        assert_eq!((status, body), (200, image.top().bytes.clone()));
        let other = format!("{}/v2/other/manifests/v1", proxy.url());
        assert_eq!(get(&other, media_types::OCI_MANIFEST, Some(&token)).await.0, 401, "another scope");
        proxy.expire_tokens();
        assert_eq!(get(&url, media_types::OCI_MANIFEST, Some(&token)).await.0, 401);
        let c = proxy.counts();
        assert_eq!((c.manifest_gets, c.unauthorized, c.tokens), (1, 3, 2));
    }
}
