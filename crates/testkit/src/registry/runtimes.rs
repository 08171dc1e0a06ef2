//! Container runtimes that pull through a registry mirror, for tests: Debian's `containerd` (1.6)
//! started as root with a private root, state directory and socket, the CRI plugin disabled, and
//! driven by `ctr`; and `podman` with private storage and a private `registries.conf`.
//!
//! Each owns a temporary directory (removed on drop) and leaves the machine's own configuration
//! (`/etc/containerd`, `/var/lib/containers`, `/etc/containers/registries.conf`) alone. They pull;
//! they run no containers.
//!
//! ```no_run
//! use tiercache_testkit::registry::{Containerd, containerd_hosts_dir};
//! use tiercache_testkit::servers;
//!
//! fn a_test(registry: &str, mirror: &str) {
//!     let Some(containerd) = servers::or_skip("containerd", Containerd::start()) else { return };
//!     let hosts = containerd_hosts_dir(containerd.dir(), registry, &format!("http://{registry}"), &[mirror]).unwrap();
//!     containerd.pull(&format!("{registry}/team/app:v1"), &hosts).unwrap();
//! }
//! ```
//!
//! Everything here is blocking (`std::process`); `Containerd::start` waits for at most
//! [`READY_TIMEOUT`](crate::servers::READY_TIMEOUT), a pull for as long as the runtime takes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::servers::{READY_TIMEOUT, find_binary, kill, tempdir};

const CONTAINERD_INSTALL: &str =
    "apt-get install -y containerd (or set TIERCACHE_CONTAINERD and TIERCACHE_CTR to the binaries)";
const PODMAN_INSTALL: &str = "apt-get install -y podman (or set TIERCACHE_PODMAN to a podman binary)";

/// Whether this process runs as root (effective uid 0, read from `/proc/self/status`).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// A `containerd --config CONFIG` process of its own: root, state and socket in a temporary
/// directory, the CRI plugin disabled; killed on drop.
#[derive(Debug)]
pub struct Containerd {
    ctr: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd; returns once `ctr version` answers through its socket. Needs root
    /// (containerd refuses to start otherwise): an error says so.
    pub fn start() -> Result<Containerd, String> {
        if !is_root() {
            return Err("containerd needs root (its content store and snapshotters do); run the tests as root".into());
        }
        let usr_bin = [Path::new("/usr/bin")];
        let binary = find_binary("TIERCACHE_CONTAINERD", "containerd", &usr_bin, CONTAINERD_INSTALL)?;
        let ctr = find_binary("TIERCACHE_CTR", "ctr", &usr_bin, CONTAINERD_INSTALL)?;
        let dir = tempdir("containerd")?;
        let config = dir.path().join("config.toml");
        std::fs::write(&config, containerd_config(dir.path()))
            .map_err(|e| format!("writing {}: {e}", config.display()))?;
        let log_path = dir.path().join("containerd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|e| format!("opening {}: {e}", log_path.display()))?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting containerd: {e}"))?;
        let mut containerd = Containerd { ctr, dir, child: Some(child) };
        containerd.wait_ready(&log_path)?;
        Ok(containerd)
    }

    /// The temporary directory holding its config, root, state, socket and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its gRPC socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// `ctr --address SOCKET ARGS…`; its standard output, or an error with its standard error.
    pub fn ctr(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.ctr)
            .arg("--address")
            .arg(self.socket())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running ctr: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ctr {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `ctr images pull --plain-http --hosts-dir HOSTS --snapshotter native REFERENCE`: fetches the
    /// image for this machine's platform and unpacks it (which checks each layer's uncompressed
    /// digest against the config's `diff_ids`). The native snapshotter needs no overlay mounts.
    pub fn pull(&self, reference: &str, hosts_dir: &Path) -> Result<(), String> {
        let hosts = hosts_dir.to_str().ok_or("the hosts directory's path is not UTF-8")?;
        self.ctr(&["images", "pull", "--plain-http", "--hosts-dir", hosts, "--snapshotter", "native", reference])
            .map(drop)
    }

    /// The digest `ctr images ls` shows for `reference` (what its tag resolved to), if listed.
    pub fn image_digest(&self, reference: &str) -> Result<Option<String>, String> {
        let listing = self.ctr(&["images", "ls"])?;
        Ok(listing.lines().skip(1).find_map(|line| {
            let mut columns = line.split_whitespace();
            (columns.next() == Some(reference)).then(|| columns.nth(1).map(str::to_owned)).flatten()
        }))
    }

    /// The digests in its content store (`ctr content ls`).
    pub fn content_digests(&self) -> Result<BTreeSet<String>, String> {
        let listing = self.ctr(&["content", "ls"])?;
        Ok(listing.lines().skip(1).filter_map(|l| l.split_whitespace().next().map(str::to_owned)).collect())
    }

    /// SIGKILL containerd and wait for it. No-op if not running.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                return Err(format!("containerd exited ({status}) before answering; its log:\n{}", read_log(log)));
            }
            if self.socket().exists() && self.ctr(&["version"]).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "containerd did not answer on {} within {READY_TIMEOUT:?}; its log:\n{}",
                    self.socket().display(),
                    read_log(log)
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// containerd's config: everything under `dir`, no CRI (it wants a CNI setup and is not needed to
/// pull), no metrics or debug listeners.
fn containerd_config(dir: &Path) -> String {
    format!(
        "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\n\
         [grpc]\n  address = \"{socket}\"\n",
        root = dir.join("root").display(),
        state = dir.join("state").display(),
        socket = dir.join("containerd.sock").display(),
    )
}

/// At most the last 4 KiB of a log file.
fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()));
    let start = text.len().saturating_sub(4096);
    let start = (start..text.len()).find(|&i| text.is_char_boundary(i)).unwrap_or(text.len());
    text[start..].to_owned()
}

/// Writes `PARENT/hosts.d/REGISTRY/hosts.toml` for `ctr images pull --hosts-dir`: `server` is the
/// upstream containerd falls back to, and each of `mirrors` (`127.0.0.1:PORT`, plain HTTP) is tried
/// first, for pulls and tag resolution. Returns the `hosts.d` directory.
pub fn containerd_hosts_dir(parent: &Path, registry: &str, server: &str, mirrors: &[&str]) -> Result<PathBuf, String> {
    let hosts_dir = parent.join("hosts.d");
    let dir = hosts_dir.join(registry);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut toml = format!("server = \"{server}\"\n");
    for mirror in mirrors {
        toml.push_str(&format!("\n[host.\"http://{mirror}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"));
    }
    let path = dir.join("hosts.toml");
    std::fs::write(&path, toml).map_err(|e| format!("writing {}: {e}", path.display()))?;
    Ok(hosts_dir)
}

/// `podman` with private storage (`--root`, `--runroot`, the `vfs` driver) and a private
/// `registries.conf` naming one registry and its mirror, both plain HTTP.
#[derive(Debug)]
pub struct Podman {
    binary: PathBuf,
    dir: tempfile::TempDir,
}

impl Podman {
    /// Podman configured so that pulls from `registry` (`127.0.0.1:PORT`) go to `mirror` first.
    /// Checks that podman runs at all (`podman info`), so that an error here says why it cannot.
    pub fn new(registry: &str, mirror: &str) -> Result<Podman, String> {
        let binary = find_binary("TIERCACHE_PODMAN", "podman", &[Path::new("/usr/bin")], PODMAN_INSTALL)?;
        let dir = tempdir("podman")?;
        let conf = dir.path().join("registries.conf");
        std::fs::write(&conf, registries_conf(registry, mirror))
            .map_err(|e| format!("writing {}: {e}", conf.display()))?;
        let podman = Podman { binary, dir };
        podman.run(&["info"])?;
        Ok(podman)
    }

    /// `podman --root … --runroot … --tmpdir … --storage-driver vfs --events-backend none ARGS…` with the private
    /// `registries.conf`; its standard output, or an error with its standard error.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.path().join("tmp"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .args(args)
            .env("CONTAINERS_REGISTRIES_CONF", self.dir.path().join("registries.conf"))
            .env("HOME", self.dir.path())
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running podman: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "podman {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `podman pull REFERENCE` (this machine's platform).
    pub fn pull(&self, reference: &str) -> Result<(), String> {
        self.run(&["pull", "--quiet", reference]).map(drop)
    }

    /// The digest of the pulled `reference` (`podman image inspect --format {{.Digest}}`).
    pub fn image_digest(&self, reference: &str) -> Result<String, String> {
        Ok(self.run(&["image", "inspect", "--format", "{{.Digest}}", reference])?.trim().to_owned())
    }
}

/// A `registries.conf` (v2) with no search registries and `registry` mirrored by `mirror`, both
/// insecure (plain HTTP).
fn registries_conf(registry: &str, mirror: &str) -> String {
    format!(
        "unqualified-search-registries = []\n\n[[registry]]\nlocation = \"{registry}\"\ninsecure = true\n\n\
         [[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\n"
    )
}
