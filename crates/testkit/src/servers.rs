//! Real servers for tests of the shared tier: an S3-compatible server (`s3s-fs`) and Redis
//! (`redis-server`), each started as a child process on a free port on 127.0.0.1 with its own
//! temporary directory, killed on drop.
//!
//! This module owns finding the two binaries, starting/killing/restarting them, waiting until their
//! port answers, and the skip-or-fail rule for tests when a binary is missing:
//!
//! ```no_run
//! use tiercache_testkit::servers::{self, S3Server};
//!
//! fn a_test() {
//!     let Some(s3) = servers::or_skip("s3s-fs", S3Server::start()) else { return };
//!     let _endpoint = s3.endpoint(); // http://127.0.0.1:PORT, bucket S3Server::BUCKET exists
//! }
//! ```
//!
//! A missing binary skips the test with a message on stderr, unless `TIERCACHE_REQUIRE_SERVERS=1`
//! (set by `.ci/run`), in which case the test panics with the error.
//!
//! Binaries are looked up in this order: the path in `TIERCACHE_S3_SERVER` / `TIERCACHE_REDIS_SERVER`,
//! then `PATH` (`s3s-fs` / `redis-server`), then [`TOOLS_BIN`] (for `s3s-fs`) or `/usr/bin` (Debian's
//! `redis-server`).
//!
//! Everything here is blocking (`std::process`, `std::net`): from a `#[tokio::test]`, call
//! `start`/`restart` directly (they block the runtime thread for at most [`READY_TIMEOUT`]) or
//! through `tokio::task::spawn_blocking`.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `.ci/run` installs `s3s-fs`: outside the clone, so repeated runs on one machine reuse it.
pub const TOOLS_BIN: &str = "/var/tmp/tiercache-tools/bin";

/// How long `start`/`restart` wait for the port to answer.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

const S3_INSTALL: &str = "cargo install s3s-fs --version 0.14.1 --features binary --locked --root /var/tmp/tiercache-tools \
                          (then put /var/tmp/tiercache-tools/bin on PATH, or set TIERCACHE_S3_SERVER to the binary)";
const REDIS_INSTALL: &str = "apt-get install -y redis-server (or set TIERCACHE_REDIS_SERVER to a redis-server binary)";

/// True when `TIERCACHE_REQUIRE_SERVERS=1`: a server that cannot start fails the test instead of
/// skipping it.
pub fn require_servers() -> bool {
    std::env::var("TIERCACHE_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// A server needed by a test could not start: panic when [`require_servers`], else say on stderr
/// that the test is skipped. The caller returns right after.
pub fn skip_or_fail(what: &str, err: String) {
    if require_servers() {
        panic!("{what} is required (TIERCACHE_REQUIRE_SERVERS=1) but could not start: {err}");
    }
    eprintln!("skipping: {what} unavailable: {err}");
}

/// `Some(server)`, or `None` after [`skip_or_fail`]:
/// `let Some(redis) = or_skip("redis-server", RedisServer::start()) else { return };`
pub fn or_skip<T>(what: &str, started: Result<T, String>) -> Option<T> {
    match started {
        Ok(server) => Some(server),
        Err(err) => {
            skip_or_fail(what, err);
            None
        }
    }
}

/// An `s3s-fs` process serving path-style S3 on `http://127.0.0.1:PORT`, with SigV4 auth using
/// fixed test credentials (any region in the signature is accepted; use [`S3Server::region`]).
///
/// Storage layout under [`S3Server::data_dir`] (s3s-fs 0.14.1):
/// - a bucket is a directory `<data_dir>/<bucket>`; creating the directory creates the bucket;
/// - object `key` in `bucket` is the plain file `<data_dir>/<bucket>/<key>`, `/` in the key making
///   subdirectories (see [`S3Server::object_path`]); overwriting that file changes what GET returns;
/// - beside it, in `<data_dir>` itself, `.bucket-<B>.object-<K>.internal.json` (the ETag, an MD5
///   computed at PUT) and `.bucket-<B>.object-<K>.metadata.json` (content type, user metadata),
///   where `<B>`/`<K>` are the bucket and key in unpadded URL-safe base64. GET and HEAD report
///   the stored ETag, so corrupting the object file on disk does not change the ETag (only
///   Content-Length and Last-Modified follow the file).
///
/// Quirks seen with 0.14.1: every request must carry `x-amz-content-sha256` (SDKs send it; bare
/// `curl --aws-sigv4` needs `-H 'x-amz-content-sha256: UNSIGNED-PAYLOAD'`); conditional GET
/// headers (`If-None-Match`, `If-Match`, `If-Modified-Since`) are ignored, always 200; PutObject
/// into a missing bucket creates it; DeleteObject leaves the two `.json` files behind.
#[derive(Debug)]
pub struct S3Server {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    data: PathBuf,
    child: Option<Child>,
}

impl S3Server {
    /// Access key the server accepts.
    pub const ACCESS_KEY: &'static str = "tiercache-test";
    /// Secret key the server accepts.
    pub const SECRET_KEY: &'static str = "tiercache-test-secret";
    /// Bucket that [`S3Server::start`] creates.
    pub const BUCKET: &'static str = "tiercache-test";

    /// Start `s3s-fs` on a free port with an empty data directory holding the bucket
    /// [`S3Server::BUCKET`]; returns once the port answers.
    pub fn start() -> Result<S3Server, String> {
        let binary = find_binary("TIERCACHE_S3_SERVER", "s3s-fs", &[Path::new(TOOLS_BIN)], S3_INSTALL)?;
        let dir = tempdir("s3s-fs")?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| format!("creating {}: {e}", data.display()))?;
        let mut server = S3Server { binary, port: 0, dir, data, child: None };
        server.create_bucket(Self::BUCKET)?;
        start_on_free_port(|port| {
            server.port = port;
            server.spawn()
        })?;
        Ok(server)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The access key to sign with.
    pub fn access_key(&self) -> &str {
        Self::ACCESS_KEY
    }

    /// The secret key to sign with.
    pub fn secret_key(&self) -> &str {
        Self::SECRET_KEY
    }

    /// The region to sign with (s3s-fs takes the region from the signature and accepts any).
    pub fn region(&self) -> &str {
        "us-east-1"
    }

    /// The server's root directory; see the type's documentation for the layout.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The file holding object `key` of `bucket`: `<data_dir>/<bucket>/<key>`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.data_dir().join(bucket).join(key)
    }

    /// Create bucket `name` (a directory under the data directory); fine if it exists.
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        if name.is_empty() || name.starts_with('.') || name.contains('/') {
            return Err(format!("bad bucket name {name:?}"));
        }
        let path = self.data_dir().join(name);
        std::fs::create_dir_all(&path).map_err(|e| format!("creating bucket dir {}: {e}", path.display()))
    }

    /// SIGKILL the server and wait for it: its port stops answering. No-op if not running.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Kill the server (if running) and start it again on the same port with the same data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        restart_same_port(|| self.spawn())
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--host")
            .arg("127.0.0.1")
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--access-key")
            .arg(Self::ACCESS_KEY)
            .arg("--secret-key")
            .arg(Self::SECRET_KEY)
            .arg(&self.data)
            .env("RUST_LOG", "info");
        self.child = Some(spawn_and_wait(command, self.port, &self.dir.path().join("s3s-fs.log"))?);
        Ok(())
    }
}

/// Where the RESP value starting at `at` ends, if `b` holds all of it.
fn resp_end(b: &[u8], at: usize) -> Option<usize> {
    let line_end = at + b.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&b[at + 1..line_end]).ok()?;
    let next = line_end + 2;
    match b[at] {
        b'+' | b'-' | b':' => Some(next),
        b'$' => match head.parse::<i64>().ok()? {
            n if n < 0 => Some(next),
            n => Some(next + n as usize + 2).filter(|&end| b.len() >= end),
        },
        b'*' => (0..head.parse::<i64>().ok()?.max(0)).try_fold(next, |pos, _| resp_end(b, pos)),
        _ => None,
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `redis-server` process on `127.0.0.1:PORT` without persistence (`--save '' --appendonly no`)
/// and without a password. A restart therefore comes back empty.
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl RedisServer {
    /// Start `redis-server` on a free port; returns once the port answers.
    pub fn start() -> Result<RedisServer, String> {
        let binary = find_binary("TIERCACHE_REDIS_SERVER", "redis-server", &[Path::new("/usr/bin")], REDIS_INSTALL)?;
        let dir = tempdir("redis")?;
        let mut server = RedisServer { binary, port: 0, dir, child: None };
        start_on_free_port(|port| {
            server.port = port;
            server.spawn()
        })?;
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Sends one command (as a RESP array of bulk strings) and returns the raw RESP reply.
    pub fn command(&self, args: &[&[u8]]) -> Result<Vec<u8>, String> {
        use std::io::Write as _;
        let mut conn = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| format!("redis: {e}"))?;
        conn.set_read_timeout(Some(READY_TIMEOUT)).map_err(|e| e.to_string())?;
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            request.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            request.extend_from_slice(a);
            request.extend_from_slice(b"\r\n");
        }
        conn.write_all(&request).map_err(|e| format!("redis: {e}"))?;
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        while resp_end(&reply, 0).is_none() {
            let n = conn.read(&mut buf).map_err(|e| format!("redis: {e}"))?;
            if n == 0 {
                return Err(format!("redis closed the connection after {:?}", String::from_utf8_lossy(&reply)));
            }
            reply.extend_from_slice(&buf[..n]);
        }
        Ok(reply)
    }

    /// SIGKILL the server and wait for it: its port stops answering. No-op if not running.
    pub fn kill(&mut self) {
        kill(&mut self.child);
    }

    /// Kill the server (if running) and start it again, empty, on the same port.
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        restart_same_port(|| self.spawn())
    }

    fn spawn(&mut self) -> Result<(), String> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg("no")
            .arg("--daemonize")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg("");
        self.child = Some(spawn_and_wait(command, self.port, &self.dir.path().join("redis.log"))?);
        Ok(())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Why a start attempt failed: only a port taken between picking it and the server binding it is
/// worth retrying.
fn port_taken(err: &str) -> bool {
    // Rust and Redis say "Address already in use"; Go programs (docker-registry) say it in
    // lower case.
    err.contains("Address already in use") || err.contains("address already in use") || err.contains("AddrInUse")
}

/// Pick a free port and `spawn` on it; a port grabbed by someone else in between is retried with
/// another one.
pub(crate) fn start_on_free_port(mut spawn: impl FnMut(u16) -> Result<(), String>) -> Result<(), String> {
    let mut attempts = 0;
    loop {
        let port = free_port()?;
        match spawn(port) {
            Err(err) if port_taken(&err) && attempts < 5 => attempts += 1,
            other => return other,
        }
    }
}

/// `spawn` again on the same port; if the port is briefly taken, retry until [`READY_TIMEOUT`].
pub(crate) fn restart_same_port(mut spawn: impl FnMut() -> Result<(), String>) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match spawn() {
            Err(err) if port_taken(&err) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Binary from `env_var`, else `name` on `PATH`, else `name` in one of `fallback_dirs`.
pub(crate) fn find_binary(
    env_var: &str,
    name: &str,
    fallback_dirs: &[&Path],
    install: &str,
) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{env_var}={} is not a file; install {name} with: {install}", path.display()))
        };
    }
    let path_dirs = std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).unwrap_or_default();
    path_dirs
        .iter()
        .map(PathBuf::as_path)
        .chain(fallback_dirs.iter().copied())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            let fallbacks: Vec<_> = fallback_dirs.iter().map(|d| d.display().to_string()).collect();
            format!(
                "{name} not found (looked at ${env_var}, PATH, {}); install it with: {install}",
                fallbacks.join(", ")
            )
        })
}

pub(crate) fn tempdir(what: &str) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix(&format!("tiercache-{what}-"))
        .tempdir()
        .map_err(|e| format!("creating a temp dir for {what}: {e}"))
}

/// A port that was free a moment ago (the OS picks it; the listener is dropped right away).
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("finding a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("finding a free port: {e}"))
}

/// Start `command` with stdout and stderr appended to `log`, and wait until 127.0.0.1:`port`
/// accepts a connection while the process is still running. On failure the process is killed and
/// the error carries the log's tail.
pub(crate) fn spawn_and_wait(mut command: Command, port: u16, log: &Path) -> Result<Child, String> {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("opening {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| format!("opening {}: {e}", log.display()))?;
    let log_start = out.metadata().map(|m| m.len()).unwrap_or(0);
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = command.spawn().map_err(|e| format!("starting {program}: {e}"))?;

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Err(format!(
                    "{program} exited ({status}) before 127.0.0.1:{port} answered; its output:\n{}",
                    log_tail(log, log_start)
                ));
            }
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("waiting for {program}: {e}"));
            }
        }
        // If the port was taken in the meantime, a foreign listener answers while our process is
        // about to exit with "Address already in use" (which the callers retry): so the process
        // must still be running a moment after the connect before it counts as ready.
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
            if let Ok(None) = child.try_wait() {
                return Ok(child);
            }
            continue;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{program} did not answer on 127.0.0.1:{port} within {READY_TIMEOUT:?}; its output:\n{}",
                log_tail(log, log_start)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// At most the last 4 KiB written to `log` since offset `from`.
fn log_tail(log: &Path, from: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = File::open(log)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(from.max(len.saturating_sub(4096))))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})", log.display()))
}

pub(crate) fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        // `Child::kill` is SIGKILL on Unix; `wait` reaps it, after which its port is closed.
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod port_tests {
    #[test]
    fn a_port_taken_is_recognised_in_each_server_s_words() {
        for err in [
            "Address already in use (os error 98)",
            "level=fatal msg=\"listen tcp 127.0.0.1:39423: bind: address already in use\"",
            "AddrInUse",
        ] {
            assert!(super::port_taken(err), "{err}");
        }
        assert!(!super::port_taken("permission denied"));
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    /// Send `request` to 127.0.0.1:`port` and read what comes back (until close or 1 s of quiet);
    /// `None` when the connection is refused.
    fn exchange(port: u16, request: &[u8]) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        stream.write_all(request).unwrap();
        let mut buf = [0; 256];
        let n = stream.read(&mut buf).unwrap_or(0);
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    fn redis_ping(port: u16) -> Option<String> {
        exchange(port, b"PING\r\n")
    }

    fn http_get(port: u16) -> Option<String> {
        exchange(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    }

    #[test]
    fn redis_starts_answers_dies_and_restarts() {
        let Some(mut redis) = or_skip("redis-server", RedisServer::start()) else { return };
        let port = redis.port();
        assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/0"));
        assert!(redis_ping(port).is_some_and(|r| r.starts_with("+PONG")));

        redis.kill();
        assert_eq!(redis_ping(port), None, "port still answers after kill");

        redis.restart().unwrap();
        assert_eq!(redis.port(), port);
        assert!(redis_ping(port).is_some_and(|r| r.starts_with("+PONG")));
    }

    #[test]
    fn s3_starts_answers_dies_and_restarts_with_its_data() {
        let Some(mut s3) = or_skip("s3s-fs", S3Server::start()) else { return };
        let port = s3.port();
        assert_eq!(s3.endpoint(), format!("http://127.0.0.1:{port}"));
        assert!(s3.data_dir().join(S3Server::BUCKET).is_dir());
        // Unsigned, so refused (403), but an HTTP answer all the same.
        let answer = http_get(port);
        assert!(answer.as_deref().is_some_and(|r| r.starts_with("HTTP/1.1 ")), "{answer:?}");

        s3.create_bucket("second").unwrap();
        let object = s3.object_path("second", "a/b.bin");
        assert_eq!(object, s3.data_dir().join("second/a/b.bin"));

        s3.kill();
        assert_eq!(http_get(port), None, "port still answers after kill");

        s3.restart().unwrap();
        assert_eq!(s3.port(), port);
        assert!(s3.data_dir().join("second").is_dir());
        let answer = http_get(port);
        assert!(answer.as_deref().is_some_and(|r| r.starts_with("HTTP/1.1 ")), "{answer:?}");
    }

    #[test]
    fn a_missing_binary_is_a_clear_error() {
        let err = find_binary("TIERCACHE_TEST_NO_SUCH_VAR", "no-such-server-binary", &[], S3_INSTALL).unwrap_err();
        assert!(err.contains("no-such-server-binary not found") && err.contains("cargo install s3s-fs"), "{err}");
    }
}
