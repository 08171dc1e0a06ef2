//! Helpers shared by the CLI integration tests: running the real binary, a `serve` child process
//! that is killed when dropped, and small file-system and hashing utilities.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest as _;

/// The write token every [`Server`] is started with (`TIERCACHE_WRITE_TOKEN`), unless a test
/// gives its own; the write helpers below send it.
pub(crate) const WRITE_TOKEN: &str = "cli-test-write-token-0123456789";

/// The `tiercache` binary under test.
pub(crate) fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tiercache")
}

/// A command for the binary, isolated from the caller's environment and config files, with
/// `--data-dir DATA` and standard input closed (so it is never a terminal).
pub(crate) fn tc(data: &Path) -> Command {
    let mut c = Command::new(bin());
    isolate(&mut c, data);
    c.arg("--data-dir").arg(data);
    c
}

fn isolate(c: &mut Command, data: &Path) {
    for var in [
        "TIERCACHE_DATA_DIR",
        "TIERCACHE_CONFIG",
        "TIERCACHE_LOG",
        "TIERCACHE_LISTEN",
        "TIERCACHE_MAX_CONNECTIONS",
        "TIERCACHE_HEADER_READ_TIMEOUT",
        "TIERCACHE_KEEP_ALIVE_TIMEOUT",
        "TIERCACHE_BODY_IDLE_TIMEOUT",
        "TIERCACHE_REVALIDATE_AFTER",
        "TIERCACHE_SOURCE_CONNECT_TIMEOUT",
        "TIERCACHE_SOURCE_READ_TIMEOUT",
        "TIERCACHE_MAX_CONCURRENT_FETCHES",
        "TIERCACHE_MAX_FETCHES_PER_SOURCE",
        "TIERCACHE_SOURCE_REDIRECTS",
        "TIERCACHE_ALLOW_SOURCE_ADDRESSES",
        "TIERCACHE_SHARED",
        "TIERCACHE_SHARED_TIMEOUT",
        "TIERCACHE_SHARED_IO_TIMEOUT",
        "TIERCACHE_SHARED_RETRIES",
        "TIERCACHE_ADMIN_TOKEN",
        "TIERCACHE_WRITE_TOKEN",
        "TIERCACHE_READ_TOKEN",
        "TIERCACHE_ALLOW_ANONYMOUS_WRITES",
        "TIERCACHE_S3_LISTEN",
        "TIERCACHE_S3_ACCESS_KEY",
        "TIERCACHE_S3_SECRET_KEY",
        "TIERCACHE_S3_ANONYMOUS_READ",
        "TIERCACHE_S3_DOMAIN",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "RUST_LOG",
        "XDG_DATA_HOME",
    ] {
        c.env_remove(var);
    }
    // No config file may leak in from the machine running the tests.
    let home = data.parent().unwrap_or(data).join("home-not-used");
    c.env("XDG_CONFIG_HOME", &home).env("HOME", &home).env("NO_COLOR", "1");
    c.stdin(Stdio::null());
}

/// What one run of the binary produced.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) raw_stdout: Vec<u8>,
}

impl Out {
    /// Asserts exit code `code`, showing everything the command said if not.
    #[track_caller]
    pub(crate) fn expect_code(self, code: i32) -> Out {
        assert_eq!(self.code, code, "unexpected exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    #[track_caller]
    pub(crate) fn ok(self) -> Out {
        self.expect_code(0)
    }

    /// stdout parsed as JSON.
    #[track_caller]
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }
}

/// Runs a command to completion (with a generous safety timeout, so a hang fails the test
/// instead of stalling it).
pub(crate) fn run(cmd: &mut Command) -> Out {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn tiercache");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output: Output = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(r) => r.expect("wait for tiercache"),
        Err(_) => {
            let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
            panic!("tiercache {cmd:?} did not finish within 60 s");
        }
    };
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        raw_stdout: output.stdout,
    }
}

/// `tiercache --data-dir DATA ARGS...`, run to completion.
pub(crate) fn tcr(data: &Path, args: &[&str]) -> Out {
    run(tc(data).args(args))
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A running `tiercache serve`. Killed (SIGKILL) and reaped when dropped.
pub(crate) struct Server {
    child: Option<Child>,
    pub(crate) base: String,
    pub(crate) log: PathBuf,
    pub(crate) pid: u32,
}

impl Server {
    /// Starts `serve` on DATA (plus `extra` flags) on a free port, with [`WRITE_TOKEN`], and waits
    /// until `/healthz` answers. Its standard error goes to a log file next to the data directory.
    pub(crate) async fn start(data: &Path, extra: &[&str]) -> Server {
        Server::start_with_env(data, extra, &[]).await
    }

    /// [`Server::start`] with extra environment variables (which may replace the write token).
    pub(crate) async fn start_with_env(data: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut last_log = String::new();
        for attempt in 0..3 {
            let port = free_port();
            let log = data
                .parent()
                .unwrap()
                .join(format!("serve-{}-{port}-{attempt}.log", data.file_name().unwrap().to_string_lossy()));
            let mut cmd = tc(data);
            cmd.arg("serve").arg("--listen").arg(format!("127.0.0.1:{port}")).args(extra);
            cmd.env("TIERCACHE_WRITE_TOKEN", WRITE_TOKEN).envs(env.iter().copied());
            cmd.stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
            let child = cmd.spawn().expect("spawn tiercache serve");
            let mut server =
                Server { pid: child.id(), child: Some(child), base: format!("http://127.0.0.1:{port}"), log };
            match server.wait_healthy().await {
                Ok(()) => return server,
                Err(e) => {
                    last_log = format!("{e}\n{}", server.log_text());
                    // Another process may have taken the port in the meantime: try another.
                    if !last_log.contains("cannot listen") {
                        break;
                    }
                }
            }
        }
        panic!("tiercache serve did not come up: {last_log}");
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("serve exited with {status}"));
            }
            if let Ok(resp) = client.get(format!("{}/healthz", self.base)).send().await
                && resp.status() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("serve did not answer /healthz within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The value of metric `series` (name and labels exactly as exported, e.g.
    /// `tiercache_shared_lookups_total{outcome="hit"}`), 0 if not exported yet.
    pub(crate) async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics")).await.unwrap().text().await.unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
            .next()
            .unwrap_or(0.0)
    }

    /// Waits (up to 60 s) until metric `series` reaches `at_least`.
    pub(crate) async fn wait_metric(&self, series: &str, at_least: f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.metric(series).await;
            if v >= at_least {
                return;
            }
            assert!(Instant::now() < deadline, "{series} stayed at {v}, expected {at_least}:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until at least `done` write-backs finished and none is still queued (every queued
    /// one done, skipped or failed).
    pub(crate) async fn wait_write_backs_settled(&self, done: f64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let series = |r: &str| format!("tiercache_shared_write_backs_total{{result=\"{r}\"}}");
        loop {
            let queued = self.metric(&series("queued")).await;
            let finished = self.metric(&series("done")).await;
            let settled = finished + self.metric(&series("skipped")).await + self.metric(&series("failed")).await;
            if finished >= done && settled >= queued {
                return;
            }
            assert!(Instant::now() < deadline, "write-backs: {queued} queued, {finished} done:\n{}", self.log_text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the server has logged so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `base` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGKILL, then reap (a zombie would still have a /proc entry, and its temp files would
    /// look alive).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (a graceful stop), then reap; SIGKILL if it does not stop within 20 s.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "serve exited with {status} after SIGTERM:\n{}", self.log_text());
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("serve did not stop within 20 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A temp directory with a data directory path inside it (not created).
pub(crate) struct Dirs {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) data: PathBuf,
}

pub(crate) fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    Dirs { tmp, data }
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex_of(bytes))
}

/// The bare hex of `bytes`' SHA-256.
///
/// Large inputs go through coreutils' `sha256sum` when it is there: this test binary is built
/// without optimisations, and the `sha2` crate then hashes at a few tens of MB/s, which would
/// dominate the crash test. Small inputs, and machines without `sha256sum`, use `sha2`.
pub(crate) fn hex_of(bytes: &[u8]) -> String {
    if bytes.len() >= 256 * 1024
        && let Some(hex) = sha256sum(bytes)
    {
        return hex;
    }
    hex::encode(sha2::Sha256::digest(bytes))
}

fn sha256sum(bytes: &[u8]) -> Option<String> {
    use std::io::Write;
    let mut child =
        Command::new("sha256sum").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().ok()?;
    let written = child.stdin.take()?.write_all(bytes);
    let out = child.wait_with_output().ok()?;
    written.ok()?;
    let hex = String::from_utf8(out.stdout).ok()?.split_whitespace().next()?.to_owned();
    (out.status.success() && hex.len() == 64).then_some(hex)
}

/// Where the disk tier keeps the blob with this bare hex digest.
pub(crate) fn blob_path(data: &Path, hex: &str) -> PathBuf {
    data.join("blobs").join("sha256").join(&hex[..2]).join(hex)
}

/// Every regular file under `root`, relative, with its size.
pub(crate) fn tree(root: &Path) -> BTreeMap<PathBuf, u64> {
    let mut out = BTreeMap::new();
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, u64>) {
        let Ok(rd) = std::fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                out.insert(p.strip_prefix(root).unwrap().join(""), 0);
                walk(root, &p, out);
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_owned(), e.metadata().map(|m| m.len()).unwrap_or(0));
            }
        }
    }
    walk(root, root, &mut out);
    out
}

/// The digests (bare hex) of the files under `<data>/blobs/`.
pub(crate) fn blob_files(data: &Path) -> std::collections::BTreeSet<String> {
    tree(&data.join("blobs"))
        .keys()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| n.len() == 64)
        .collect()
}

/// Files in `<data>/tmp/`.
pub(crate) fn temp_files(data: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data.join("tmp")).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default()
}

/// A small async HTTP client for the server.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// GET `url`: status and body.
pub(crate) async fn http_get(client: &reqwest::Client, url: &str) -> (u16, Vec<u8>) {
    let resp = client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_else(|e| panic!("GET {url} body: {e}")).to_vec();
    (status, body)
}

/// PUT `bytes` to `/blobs/<digest>` with [`WRITE_TOKEN`]: the status.
pub(crate) async fn http_put_blob(client: &reqwest::Client, base: &str, bytes: &[u8]) -> u16 {
    let url = format!("{base}/blobs/{}", digest(bytes));
    let put = client.put(&url).bearer_auth(WRITE_TOKEN).body(bytes.to_vec());
    put.send().await.unwrap_or_else(|e| panic!("PUT {url}: {e}")).status().as_u16()
}

/// A PUT of `url` with [`WRITE_TOKEN`].
pub(crate) fn http_put(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    client.put(url).bearer_auth(WRITE_TOKEN)
}

/// A DELETE of `url` with [`WRITE_TOKEN`].
pub(crate) fn http_delete(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    client.delete(url).bearer_auth(WRITE_TOKEN)
}

/// Waits until `cond` holds, checking every 10 ms; panics naming `what` if it still does not
/// after 30 s. The bound only guards against a hang: nothing is asserted about how long it took.
pub(crate) async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "waited 30 s, and still not: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `stats --json` once the index holds `n` entries. A reader of a cold entry gets its last byte a
/// moment before the fetch task commits the entry, so a check right after a read may be early.
pub(crate) async fn stats_when_entries(data: &Path, n: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = tcr(data, &["stats", "--json"]).ok().json();
        if s["n_entries"] == n {
            return s;
        }
        assert!(Instant::now() < deadline, "the index never reached {n} entries: {s}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `GET path` sent as written (an HTTP client would resolve a `..` segment first); the status and
/// body of the answer.
pub(crate) fn raw_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
