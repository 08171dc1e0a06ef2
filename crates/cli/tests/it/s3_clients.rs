//! Real S3 clients against tiercache's S3 front door (`serve --s3-listen`, issue 18): the aws
//! CLI, boto3 and rclone, each through its suite in `crates/cli/tests/clients/` (`aws_cli.sh`,
//! `boto3_suite.py`, `rclone.sh`), each suite in two parts, one without multipart uploads and one
//! with them.
//!
//! This file owns choosing the endpoint ([`endpoint`]: the one function to change to point every
//! suite at another server), checking that each client is installed (a missing one skips the
//! test with the reason on stderr, or fails it under `TIERCACHE_REQUIRE_SERVERS=1`, as the
//! testkit does for servers), and running the suites with a time limit. What a suite checks is
//! written in its script's header; here a test asserts only that the script exited 0, and shows
//! everything it said when not.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tiercache_testkit::servers;

use crate::common::{Dirs, dirs, free_port, tc};

/// How long one suite may run before it is killed and the test fails (the slowest, the aws CLI's
/// multipart part, takes seconds on an idle machine).
const SUITE_TIMEOUT: Duration = Duration::from_secs(600);

/// An S3 endpoint (path-style, region `us-east-1`), serving while this value lives.
struct Endpoint {
    /// `http://127.0.0.1:PORT`.
    url: String,
    access_key: String,
    secret_key: String,
    /// Steps the server is known to fail, by client, with the reason: the suite leaves them out
    /// (`--skip STEP`) and the test says so on stderr.
    known_gaps: &'static [(Client, &'static str, &'static str)],
    /// Keeps the server running.
    _server: Arc<dyn std::any::Any + Send + Sync>,
}

/// The access key pair of [`TiercacheS3`].
const ACCESS_KEY: &str = "clients-access-key";
const SECRET_KEY: &str = "clients-secret-key-0123456789";

/// `tiercache serve --s3-listen` on a data directory of its own, with [`ACCESS_KEY`] from the
/// environment; killed (and its directory removed) when dropped.
struct TiercacheS3 {
    child: std::process::Child,
    url: String,
    log: PathBuf,
    _dirs: Dirs,
}

impl Drop for TiercacheS3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TiercacheS3 {
    /// Starts it and waits until its S3 listener takes connections (ports taken meanwhile by
    /// another process are tried again, with new ones).
    fn start() -> TiercacheS3 {
        let mut last = String::new();
        for attempt in 0..3 {
            let dirs = dirs();
            let (main, s3) = (free_port(), free_port());
            let log = dirs.tmp.path().join(format!("serve-s3-{attempt}.log"));
            let child = tc(&dirs.data)
                .args(["serve", "--listen", &format!("127.0.0.1:{main}"), "--s3-listen", &format!("127.0.0.1:{s3}")])
                .env("TIERCACHE_S3_ACCESS_KEY", ACCESS_KEY)
                .env("TIERCACHE_S3_SECRET_KEY", SECRET_KEY)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn tiercache serve");
            let mut server = TiercacheS3 { child, url: format!("http://127.0.0.1:{s3}"), log, _dirs: dirs };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && server.child.try_wait().unwrap().is_none() {
                if std::net::TcpStream::connect(("127.0.0.1", s3)).is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last = std::fs::read_to_string(&server.log).unwrap_or_default();
            if !last.contains("cannot listen") {
                break;
            }
        }
        panic!("tiercache serve --s3-listen did not come up:\n{last}");
    }
}

/// The S3 endpoint every suite here runs against: tiercache's own S3 front door
/// ([`TiercacheS3`]), one process shared by the tests of this file that run at the same time
/// (started by the first, stopped when the last drops its [`Endpoint`]).
fn endpoint() -> Option<Endpoint> {
    static SHARED: Mutex<Weak<TiercacheS3>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let server = match shared.upgrade() {
        Some(server) => server,
        None => {
            let server = Arc::new(TiercacheS3::start());
            *shared = Arc::downgrade(&server);
            server
        }
    };
    Some(Endpoint {
        url: server.url.clone(),
        access_key: ACCESS_KEY.to_owned(),
        secret_key: SECRET_KEY.to_owned(),
        known_gaps: &[],
        _server: server,
    })
}

/// A real S3 client and its suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    AwsCli,
    Boto3,
    Rclone,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::AwsCli => "aws CLI",
            Client::Boto3 => "boto3",
            Client::Rclone => "rclone",
        }
    }

    /// The suite's script, run by `interpreter`.
    fn script(self) -> (&'static str, PathBuf) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
        match self {
            Client::AwsCli => ("bash", dir.join("aws_cli.sh")),
            Client::Boto3 => ("python3", dir.join("boto3_suite.py")),
            Client::Rclone => ("bash", dir.join("rclone.sh")),
        }
    }

    /// `Ok` when the client can run, else what is missing and how to install it.
    fn ready(self) -> Result<(), String> {
        let (program, args, install): (&str, &[&str], &str) = match self {
            Client::AwsCli => ("aws", &["--version"], "pip install awscli"),
            // botocore 1.36 made CRC32 checksums of uploads the default, which the suite tests.
            Client::Boto3 => (
                "python3",
                &[
                    "-c",
                    "import boto3, botocore; v = botocore.__version__; \
                     assert tuple(int(x) for x in v.split('.')[:2]) >= (1, 36), f'botocore {v} is older than 1.36'",
                ],
                "pip install 'boto3>=1.36'",
            ),
            Client::Rclone => ("rclone", &["version"], "apt-get install rclone"),
        };
        let fix = format!("install it with: {install} (.ci/run does)");
        match Command::new(program).args(args).stdin(Stdio::null()).output() {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => {
                // The last line says why (a Python traceback ends with its exception).
                let stderr = String::from_utf8_lossy(&out.stderr);
                let why = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim();
                Err(format!("`{program}` failed ({}): {why}; {fix}", out.status))
            }
            Err(e) => Err(format!("cannot run {program}: {e}; {fix}")),
        }
    }
}

/// What a finished suite said.
struct Outcome {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
}

/// Runs `client`'s suite on `bucket` of `ep` with `args` after the four positional ones, killing
/// it (its whole process group) after [`SUITE_TIMEOUT`].
fn run_suite(client: Client, ep: &Endpoint, bucket: &str, args: &[&str]) -> Outcome {
    use std::os::unix::process::CommandExt as _;

    let (interpreter, script) = client.script();
    let mut cmd = Command::new(interpreter);
    cmd.arg(&script).args([&ep.url, &ep.access_key, &ep.secret_key, bucket]).args(args);
    for (var, _) in std::env::vars_os() {
        let name = var.to_string_lossy();
        if name.starts_with("AWS_") || name.starts_with("RCLONE_") {
            cmd.env_remove(&var);
        }
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("starting {interpreter} {}: {e}", script.display()));
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + SUITE_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for a client suite") {
            break status.to_string();
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill").arg("-KILL").arg(format!("-{}", child.id())).status();
            let _ = child.wait();
            break format!("killed after {SUITE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let success = status == "exit status: 0";
    Outcome { success, status, stdout: stdout.join().unwrap(), stderr: stderr.join().unwrap() }
}

/// Runs one part (`basic` or `multipart`) of `client`'s suite against [`endpoint`] and asserts it
/// passed.
fn suite_part(client: Client, part: &str) {
    let Some(()) = servers::or_skip(client.name(), client.ready()) else { return };
    let Some(ep) = endpoint() else { return };
    let bucket = format!("{}-{part}", client.name().to_ascii_lowercase().replace(' ', "-"));
    let mut args = vec!["--part", part];
    for (_, step, why) in ep.known_gaps.iter().filter(|(c, _, _)| *c == client) {
        eprintln!("{} suite: step {step} left out against this server: {why}", client.name());
        args.extend(["--skip", *step]);
    }
    let out = run_suite(client, &ep, &bucket, &args);
    assert!(
        out.success,
        "the {} suite (part {part}) against {} failed ({})\nstdout:\n{}\nstderr:\n{}",
        client.name(),
        ep.url,
        out.status,
        out.stdout,
        out.stderr
    );
}

#[test]
fn aws_cli_without_multipart() {
    suite_part(Client::AwsCli, "basic");
}

#[test]
fn aws_cli_multipart() {
    suite_part(Client::AwsCli, "multipart");
}

#[test]
fn boto3_without_multipart() {
    suite_part(Client::Boto3, "basic");
}

#[test]
fn boto3_multipart() {
    suite_part(Client::Boto3, "multipart");
}

#[test]
fn rclone_without_multipart() {
    suite_part(Client::Rclone, "basic");
}

#[test]
fn rclone_multipart() {
    suite_part(Client::Rclone, "multipart");
}

/// A suite that meets a failure stops at once, exits non-zero, names the step and passes on what
/// the client said: here every client signs with a wrong secret, so each fails at its first
/// request with the server's `SignatureDoesNotMatch`.
#[test]
fn each_suite_fails_loudly_at_its_first_failing_step() {
    let Some(ep) = endpoint() else { return };
    let ep = Endpoint { secret_key: format!("{}-wrong", ep.secret_key), ..ep };
    for client in [Client::AwsCli, Client::Boto3, Client::Rclone] {
        let Some(()) = servers::or_skip(client.name(), client.ready()) else { continue };
        let out = run_suite(client, &ep, "wrong-secret", &["--part", "basic"]);
        assert!(!out.success, "the {} suite passed with a wrong secret:\n{}", client.name(), out.stdout);
        assert!(
            out.stderr.contains("FAILED at step") && out.stderr.contains("SignatureDoesNotMatch"),
            "the {} suite did not say where it failed:\nstdout:\n{}\nstderr:\n{}",
            client.name(),
            out.stdout,
            out.stderr
        );
    }
}
