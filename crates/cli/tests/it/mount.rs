//! `tiercache mount` end to end: images built with real tar layers, pushed to the Debian
//! docker-registry, mounted by the real binary through FUSE (`fusermount3`), then read with the
//! usual tools (`ls -R`, `find`, `stat`, `cat`, `readlink`, `getfattr`, `touch`, `chroot`) and
//! compared with the same image unpacked by GNU tar, layer by layer. The mount ends on SIGTERM and
//! on `fusermount3 -u`, both with exit status 0, and serves what was cached with the registry gone;
//! a second node mounts what the first indexed into the shared tier and reads a file from a small
//! span of its layer.
//!
//! Needs root, `/dev/fuse`, `fusermount3` (Debian package fuse3) and `getfattr` (attr); the
//! chroot test needs a static busybox (`busybox-static`). Without them the tests skip (or fail in CI).

use std::io::{BufRead as _, BufReader};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tiercache_testkit::registry::{
    BuiltImage, Compression, FileImage, ImageBuilder, LayerSpec, ProxyAuth, RegistryAuth, RegistryProxy,
    RegistryServer, bad, big_gzip_layer_image, is_root, sample, tree_facts,
};
use tiercache_testkit::servers::{self, skip_or_fail};

use crate::common::*;

/// How long opening an image (indexing its layers) and mounting it may take.
const MOUNT_WAIT: Duration = Duration::from_secs(120);
/// How long the process may take to end after SIGTERM or an unmount.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// Whether FUSE mounts can be made here; if not, says so through [`skip_or_fail`].
fn fuse_usable() -> bool {
    let missing = if !is_root() {
        Some("mounting needs root".to_owned())
    } else if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse is missing (modprobe fuse)".to_owned())
    } else if Command::new("fusermount3").arg("-V").output().map_or(true, |o| !o.status.success()) {
        Some("fusermount3 is missing (apt-get install fuse3)".to_owned())
    } else {
        None
    };
    match missing {
        Some(why) => {
            skip_or_fail("FUSE", why);
            false
        }
        None => true,
    }
}

/// A `tiercache mount` process, unmounted and ended when dropped.
struct Mounted {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    /// What it printed once mounted.
    line: String,
}

impl Mounted {
    /// Runs `tiercache mount IMAGE DIR` and waits for its "mounted … at DIR" line.
    fn start(data: &Path, image: &str, dir: &Path) -> Mounted {
        Mounted::start_with(data, image, dir, &[])
    }

    /// [`Mounted::start`] with more arguments.
    fn start_with(data: &Path, image: &str, dir: &Path, args: &[&str]) -> Mounted {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.with_extension("log");
        let mut child = tc(data)
            .arg("mount")
            .arg(image)
            .arg(dir)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn tiercache mount");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            // Keep reading, so that the process never blocks on a full pipe.
            for _ in lines {}
        });
        let mut mounted = Mounted { child, dir: dir.to_owned(), log, line: String::new() };
        match rx.recv_timeout(MOUNT_WAIT) {
            Ok(Some(Ok(line))) if args.contains(&"--json") => {
                let said: serde_json::Value = serde_json::from_str(&line).expect("one line of JSON");
                let (namespace, name) = image.split_once('/').unwrap();
                assert_eq!(said["namespace"], namespace, "{line}");
                assert_eq!(said["image"], name, "{line}");
                assert!(said["manifest_digest"].as_str().unwrap().starts_with("sha256:"), "{line}");
                assert_eq!(said["dir"], dir.to_str().unwrap(), "{line}");
                mounted.line = line;
            }
            Ok(Some(Ok(line))) => {
                assert!(line.starts_with(&format!("mounted {image} (sha256:")), "{line}");
                assert!(line.ends_with(&format!(" at {}", dir.display())), "{line}");
                mounted.line = line;
            }
            other => panic!("tiercache mount did not mount ({other:?}); its log:\n{}", mounted.log_text()),
        }
        assert!(is_mounted(dir), "{} is not in the mount table", dir.display());
        mounted
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (a `kill` name such as `TERM`).
    fn signal(&self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status();
        assert!(status.unwrap().success(), "kill -{signal}");
    }

    /// Waits for the process to end.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + EXIT_WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "tiercache mount did not end; its log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.dir).status();
        }
    }
}

/// Whether `dir` is a mount point (in this process's mount table).
fn is_mounted(dir: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_str().unwrap();
    table.lines().any(|l| l.split(' ').nth(4) == Some(dir))
}

/// Runs `program args…`; its status, stdout and stderr.
fn sh(program: &str, args: &[&std::ffi::OsStr]) -> (bool, Vec<u8>, String) {
    let out =
        Command::new(program).args(args).stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `program args…`'s stdout, asserting it succeeded.
#[track_caller]
fn sh_ok(program: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let (ok, stdout, stderr) = sh(program, args);
    assert!(ok, "{program} {args:?} failed: {stderr}");
    stdout
}

/// A registry holding `image` as `team/app:TAG` and a data directory with namespace `hub` bound
/// to it; `None` if the registry cannot start (skipped).
fn registry_with(image: &BuiltImage) -> Option<(RegistryServer, Dirs)> {
    let registry = servers::or_skip("docker-registry", RegistryServer::start(RegistryAuth::None))?;
    registry.push(image, "team/app", image.tag()).unwrap();
    let d = dirs();
    tcr(&d.data, &["ns", "create", "hub", "--source", &format!("oci+http://{}", registry.host())]).ok();
    Some((registry, d))
}

#[test]
fn mount_serves_the_image_as_tar_unpacks_it_read_only_until_sigterm() {
    if !fuse_usable() {
        return;
    }
    let image = FileImage::sample().build().unwrap();
    let Some((_registry, d)) = registry_with(&image) else { return };
    let unpacked = unpack_layers(&image);
    let rootfs = unpacked.path().to_owned();
    let dir = d.tmp.path().join("mnt");
    let mut mounted = Mounted::start(&d.data, "hub/team/app:sample", &dir);

    // Every path with its kind, mode, owner, size, mtime, target, device, xattrs, bytes and
    // hardlinks, as GNU tar lays the image out layer by layer.
    let want = tree_facts(&rootfs).unwrap();
    let got = tree_facts(&dir).unwrap();
    for (path, facts) in &want {
        assert_eq!(got.get(path), Some(facts), "{}", String::from_utf8_lossy(path));
    }
    assert_eq!(
        got.len(),
        want.len(),
        "the same paths: {:?}",
        got.keys().map(|k| String::from_utf8_lossy(k)).collect::<Vec<_>>()
    );

    // The tools agree too.
    let find = |root: &Path| {
        let mut paths: Vec<Vec<u8>> =
            sh_ok("find", &[root.as_os_str(), "-printf".as_ref(), "%P %y %m %U:%G\\0".as_ref()])
                .split(|&b| b == 0)
                .map(<[u8]>::to_vec)
                .collect();
        paths.sort();
        paths
    };
    assert_eq!(find(&dir), find(&rootfs), "find lists the same paths and metadata");
    let ls = sh_ok("ls", &["-lRn".as_ref(), "--time-style=+%s".as_ref(), dir.as_os_str()]);
    let ls_rootfs = sh_ok("ls", &["-lRn".as_ref(), "--time-style=+%s".as_ref(), rootfs.as_os_str()]);
    let strip = |out: &[u8], root: &Path| -> String {
        // Directory sizes depend on the filesystem; the rest of each line must match.
        String::from_utf8_lossy(out)
            .replace(root.to_str().unwrap(), "ROOT")
            .lines()
            .filter(|l| !l.starts_with("total "))
            .map(|l| {
                let mut fields: Vec<&str> = l.split_whitespace().collect();
                if l.starts_with('d') && fields.len() > 4 {
                    fields.remove(4);
                }
                fields.join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&ls, &dir), strip(&ls_rootfs, &rootfs), "ls -lRn");
    let stat = |root: &Path, path: &str| {
        let format = "%F %a %u:%g %s %Y %h %t:%T";
        String::from_utf8(sh_ok("stat", &["-c".as_ref(), format.as_ref(), root.join(path).as_os_str()])).unwrap()
    };
    for path in ["usr/bin/tool", "usr/bin/tool-link", "etc/shadow", "dev/null", "run/fifo", "bin", "data/hardlink"] {
        assert_eq!(stat(&dir, path), stat(&rootfs, path), "stat {path}");
    }
    assert_eq!(stat(&dir, "usr/bin/tool"), format!("regular file 755 1000:1000 4096 {} 2 0:0\n", sample::OLD_MTIME));
    assert_eq!(sh_ok("cat", &[dir.join("etc/hostname").as_os_str()]), b"upper\n");
    assert_eq!(sh_ok("cat", &[dir.join("data/frames.bin").as_os_str()]), b"overwritten by the plain layer\n");
    assert_eq!(
        sh_ok("cat", &[dir.join(OsStrBytes(sample::INVALID_UTF8_NAME).path()).as_os_str()]),
        b"latin-1 bytes in the name\n"
    );
    assert_eq!(sh_ok("readlink", &[dir.join("etc/localtime").as_os_str()]), b"/usr/share/zoneinfo/UTC\n");
    assert_eq!(
        sh_ok("readlink", &[dir.join(sample::PAX_LONG_LINK).as_os_str()]),
        format!("{}\n", sample::PAX_LONG_TARGET).as_bytes()
    );
    let xattr = dir.join(sample::XATTR_FILE);
    let value =
        sh_ok("getfattr", &["--only-values".as_ref(), "-n".as_ref(), "user.comment".as_ref(), xattr.as_os_str()]);
    assert_eq!(value, b"hello");
    let listed =
        String::from_utf8(sh_ok("getfattr", &["-d".as_ref(), "-e".as_ref(), "hex".as_ref(), xattr.as_os_str()]))
            .unwrap();
    assert!(listed.contains("user.binary=0x00ff") && listed.contains("user.comment=0x68656c6c6f"), "{listed}");
    let (ok, _, stderr) = sh("getfattr", &["-n".as_ref(), "user.nothing".as_ref(), xattr.as_os_str()]);
    assert!(!ok && stderr.contains("No such attribute"), "{stderr}");
    let (ok, _, stderr) = sh("stat", &[dir.join("etc/nothing").as_os_str()]);
    assert!(!ok && stderr.contains("No such file or directory"), "{stderr}");
    let (ok, _, stderr) = sh("cat", &[dir.join("etc/hostname/x").as_os_str()]);
    assert!(!ok && stderr.contains("Not a directory"), "{stderr}");
    // A symlink loop is a symlink loop, not a hang.
    let (ok, _, stderr) = sh("cat", &[dir.join("loop/a").as_os_str()]);
    assert!(!ok && stderr.contains("Too many levels of symbolic links"), "{stderr}");

    // Read-only: nothing is created, written, removed or renamed.
    for (program, args) in [
        ("touch", vec![dir.join("x").into_os_string()]),
        ("touch", vec![dir.join("etc/hostname").into_os_string()]),
        ("mkdir", vec![dir.join("newdir").into_os_string()]),
        ("rm", vec![dir.join("etc/motd").into_os_string()]),
        ("mv", vec![dir.join("etc/motd").into_os_string(), dir.join("etc/motd2").into_os_string()]),
        ("sh", vec!["-c".into(), format!("echo x >> {}", dir.join("etc/motd").display()).into()]),
    ] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        let (ok, _, stderr) = sh(program, &args);
        assert!(!ok && stderr.contains("Read-only file system"), "{program} {args:?}: {stderr}");
    }
    let df = String::from_utf8(sh_ok("df", &["--output=fstype,source".as_ref(), dir.as_os_str()])).unwrap();
    assert!(df.lines().nth(1).is_some_and(|l| l.starts_with("fuse") && l.ends_with("tiercache")), "{df}");

    // SIGTERM unmounts and ends the process with status 0, leaving the directory empty.
    mounted.signal("TERM");
    let status = mounted.wait();
    assert!(status.success(), "{status}; log:\n{}", mounted.log_text());
    assert!(!is_mounted(&dir), "unmounted");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the mount point is empty again");
}

/// `image` unpacked by GNU tar, layer by layer, bottom first: each layer's whiteouts and opaque
/// markers delete from the layers below, then its entries are extracted (owners, modes, mtimes,
/// devices, xattrs as stored). umoci would do, but Debian's does not read zstd layers.
fn unpack_layers(image: &BuiltImage) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    for (i, layer) in image.manifests()[0].layers.iter().enumerate() {
        let file = work.path().join(format!("layer-{i}"));
        std::fs::write(&file, &layer.bytes).unwrap();
        let listing = sh_ok("tar", &["-tf".as_ref(), file.as_os_str()]);
        for name in listing.split(|&b| b == b'\n').filter(|n| !n.is_empty()) {
            let path = Path::new(std::ffi::OsStr::from_bytes(name));
            let Some(base) = path.file_name().map(|b| b.as_bytes()) else { continue };
            let parent = root.path().join(path.parent().unwrap_or(Path::new("")));
            if base == b".wh..wh..opq" {
                for entry in std::fs::read_dir(&parent).into_iter().flatten() {
                    remove_any(&entry.unwrap().path());
                }
            } else if let Some(hidden) = base.strip_prefix(b".wh.") {
                remove_any(&parent.join(std::ffi::OsStr::from_bytes(hidden)));
            }
        }
        sh_ok(
            "tar",
            &[
                "-xf".as_ref(),
                file.as_os_str(),
                "-C".as_ref(),
                root.path().as_os_str(),
                "--numeric-owner".as_ref(),
                "--same-owner".as_ref(),
                "--same-permissions".as_ref(),
                "--xattrs".as_ref(),
                "--xattrs-include=*".as_ref(),
                "--exclude=.wh.*".as_ref(),
            ],
        );
    }
    root
}

/// Removes a file, symlink or directory tree, if it is there.
fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).unwrap(),
        Ok(_) => std::fs::remove_file(path).unwrap(),
        Err(_) => {}
    }
}

/// The manifest digest a text "mounted NAME (DIGEST) at DIR" line names.
fn text_line_digest(line: &str) -> &str {
    line.split_once(" (").and_then(|(_, rest)| rest.split_once(") at ")).map(|(digest, _)| digest).unwrap()
}

/// A path from raw bytes.
struct OsStrBytes<'a>(&'a [u8]);

impl OsStrBytes<'_> {
    fn path(&self) -> &Path {
        Path::new(std::ffi::OsStr::from_bytes(self.0))
    }
}

#[test]
fn a_mount_ends_on_fusermount_u_and_serves_what_was_indexed_with_the_registry_gone() {
    if !fuse_usable() {
        return;
    }
    // Larger than the windows large files are read in (4 MiB), and not a multiple of them.
    let big = tiercache_testkit::bytes(21, (9 << 20) + 12_345);
    let image = FileImage::new("v1")
        .layer(LayerSpec::gzip().file("data/big.bin", &big, 0o644).file("etc/name", b"first layer\n", 0o644))
        .layer(LayerSpec::zstd().file("etc/name", b"second layer\n", 0o644).symlink("name", "etc/name"))
        .build()
        .unwrap();
    let Some((mut registry, d)) = registry_with(&image) else { return };
    let dir = d.tmp.path().join("mnt");

    let mut first = Mounted::start(&d.data, "hub/team/app:v1", &dir);
    let first_line = first.line.clone();
    assert_eq!(std::fs::read(dir.join("name")).unwrap(), b"second layer\n");
    assert_eq!(std::fs::read(dir.join("data/big.bin")).unwrap(), big);
    // Unmounted from outside: the process sees it and ends with status 0.
    sh_ok("fusermount3", &["-u".as_ref(), dir.as_os_str()]);
    let status = first.wait();
    assert!(status.success(), "{status}; log:\n{}", first.log_text());
    assert!(!is_mounted(&dir));
    drop(first);

    // The registry goes away: a new mount (a fresh page cache, a fresh process) opens the image
    // and reads its files from what the first one cached.
    registry.kill();
    let mut second = Mounted::start_with(&d.data, "hub/team/app:v1", &dir, &["--json"]);
    let first_digest = text_line_digest(&first_line);
    let said: serde_json::Value = serde_json::from_str(&second.line).unwrap();
    assert_eq!(said["manifest_digest"], first_digest, "the same image as the text line named");
    assert_eq!(std::fs::read(dir.join("etc/name")).unwrap(), b"second layer\n");
    let tail = sh_ok("tail", &["-c".as_ref(), "100000".as_ref(), dir.join("data/big.bin").as_os_str()]);
    assert_eq!(tail, big[big.len() - 100_000..]);
    assert_eq!(std::fs::read(dir.join("data/big.bin")).unwrap(), big);
    let file = std::fs::File::open(dir.join("data/big.bin")).unwrap();
    for at in [(4 << 20) - 50, (8 << 20) + 1, big.len() - 7] {
        let mut piece = vec![0; 100.min(big.len() - at)];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut piece, at as u64).unwrap();
        assert_eq!(piece, big[at..at + piece.len()], "at {at}");
    }
    drop(file);

    // Ctrl-C while a process works inside the mount: it is detached at once, served until that
    // process lets go, then the command ends with status 0.
    let mut user = Command::new("sleep").arg("600").current_dir(dir.join("etc")).spawn().unwrap();
    second.signal("INT");
    let deadline = Instant::now() + EXIT_WAIT;
    while !second.log_text().contains("is in use: detached it") {
        assert!(Instant::now() < deadline, "no detach; log:\n{}", second.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mounted(&dir), "detached from the directory");
    assert!(second.child.try_wait().unwrap().is_none(), "still serving the process inside it");
    user.kill().unwrap();
    user.wait().unwrap();
    let status = second.wait();
    assert!(status.success(), "{status}; log:\n{}", second.log_text());
    assert!(second.log_text().contains(&format!("unmounted {}", dir.display())), "{}", second.log_text());
}

/// A static busybox to put in an image, if this machine has one (`busybox-static`).
fn static_busybox() -> Option<Vec<u8>> {
    let bytes = std::fs::read("/bin/busybox").ok()?;
    // A dynamically linked one has an interpreter (the loader); it would not run in the image.
    (!has_interpreter(&bytes)?).then_some(bytes)
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header; `None` if it is not
/// one.
fn has_interpreter(elf: &[u8]) -> Option<bool> {
    const PT_INTERP: u32 = 3;
    if elf.get(..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let phoff = usize::try_from(u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?)).ok()?;
    let (size, count) = (usize::from(u16_at(0x36)?), usize::from(u16_at(0x38)?));
    (0..count).try_fold(false, |found, i| {
        let at = phoff.checked_add(i.checked_mul(size)?)?;
        Some(found || u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?) == PT_INTERP)
    })
}

#[test]
fn chroot_into_the_mount_runs_the_image_s_busybox() {
    if !fuse_usable() {
        return;
    }
    let Some(busybox) = static_busybox() else {
        skip_or_fail("busybox", "no static /bin/busybox (apt-get install busybox-static)".to_owned());
        return;
    };
    let image = FileImage::new("busybox")
        .layer(
            LayerSpec::gzip()
                .file("bin/busybox", &busybox, 0o755)
                .symlink("bin/sh", "busybox")
                .file("etc/os-release", b"NAME=tiny\n", 0o644)
                .file("entrypoint", b"#!/bin/sh\nread -r line < /etc/os-release\necho \"hello from $line\"\n", 0o755),
        )
        .build()
        .unwrap();
    let Some((_registry, d)) = registry_with(&image) else { return };
    let dir = d.tmp.path().join("root");
    let mut mounted = Mounted::start(&d.data, "hub/team/app:busybox", &dir);

    let ls = sh_ok("chroot", &[dir.as_os_str(), "/bin/busybox".as_ref(), "ls".as_ref(), "/".as_ref()]);
    let mut names: Vec<_> = String::from_utf8(ls).unwrap().split_whitespace().map(str::to_owned).collect();
    names.sort();
    assert_eq!(names, ["bin", "entrypoint", "etc"]);
    let out = sh_ok("chroot", &[dir.as_os_str(), "/entrypoint".as_ref()]);
    assert_eq!(out, b"hello from NAME=tiny\n");

    mounted.signal("TERM");
    assert!(mounted.wait().success(), "log:\n{}", mounted.log_text());
    assert!(!is_mounted(&dir));
}

#[test]
fn a_directory_of_100_000_files_lists_whole_and_in_order() {
    if !fuse_usable() {
        return;
    }
    const N: usize = 100_000;
    let image = bad::many_files_image(N).unwrap();
    let Some((_registry, d)) = registry_with(&image) else { return };
    let dir = d.tmp.path().join("mnt");
    let _mounted = Mounted::start(&d.data, "hub/team/app:many-files", &dir);
    let many = dir.join(bad::MANY_DIR);

    // `ls -f` lists in the filesystem's order, without sorting: every name once, in byte order.
    let listed = String::from_utf8(sh_ok("ls", &["-f".as_ref(), many.as_os_str()])).unwrap();
    let names: Vec<&str> = listed.lines().filter(|n| !n.starts_with('.')).collect();
    let want: Vec<String> = (0..N).map(|i| bad::many_file(i).0.rsplit('/').next().unwrap().to_owned()).collect();
    assert_eq!(names.len(), N);
    assert!(names.iter().zip(&want).all(|(a, b)| a == b), "every name once, in order");
    for i in [0, N / 2, N - 1] {
        let (path, bytes) = bad::many_file(i);
        assert_eq!(std::fs::read(dir.join(path)).unwrap(), bytes);
    }
    let found = sh_ok("find", &[many.as_os_str(), "-type".as_ref(), "f".as_ref()]);
    assert_eq!(found.iter().filter(|&&b| b == b'\n').count(), N);
}

/// The files under `root` named `hex` or `hex.*` (a blob and its side files, wherever the
/// store put them).
fn files_named(root: &Path, hex: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_named(&path, hex));
        } else if path.file_name().is_some_and(|n| n.to_str().is_some_and(|n| n.split('.').next() == Some(hex))) {
            found.push(path);
        }
    }
    found
}

#[test]
fn node_b_mounts_what_node_a_indexed_and_reads_a_file_from_a_small_span_of_its_layer() {
    if !fuse_usable() {
        return;
    }
    const LAYER_BYTES: u64 = 48 << 20;
    let big = big_gzip_layer_image(LAYER_BYTES, 11).unwrap();
    let Some(mut registry) = servers::or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else {
        return;
    };
    registry.push(&big.image, "team/app", big.image.tag()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(RegistryProxy::start(&registry.url(), ProxyAuth::None));
    let shared = tempfile::tempdir().unwrap();
    let shared_url = format!("fs://{}", shared.path().display());
    let image = format!("hub/team/app:{}", big.image.tag());
    let node = |name: &str| {
        let d = dirs();
        tcr(&d.data, &["ns", "create", "hub", "--source", &format!("oci+http://{}", proxy.host())]).ok();
        let dir = d.tmp.path().join(name);
        (d, dir)
    };

    // Node A indexes the layer (fetching it whole, once) and writes the indexes to the shared tier.
    let (a, a_dir) = node("a");
    let mut mounted = Mounted::start_with(&a.data, &image, &a_dir, &["--shared", &shared_url]);
    assert_eq!(std::fs::read(a_dir.join(&big.needle_path)).unwrap(), big.needle_bytes);
    mounted.signal("TERM");
    assert!(mounted.wait().success(), "log:\n{}", mounted.log_text());
    drop(mounted);
    // Only the indexes stay shared: node B must read the layer's bytes from the registry.
    let layer_hex = big.layer_digest().trim_start_matches("sha256:");
    let shared_layer = files_named(&shared.path().join("blobs"), layer_hex);
    assert!(!shared_layer.is_empty(), "node A wrote the layer back to the shared tier");
    for file in shared_layer {
        std::fs::remove_file(file).unwrap();
    }

    let before = proxy.counts();
    let (b, b_dir) = node("b");
    let mounted = Mounted::start_with(&b.data, &image, &b_dir, &["--shared", &shared_url]);
    assert_eq!(std::fs::read(b_dir.join(&big.needle_path)).unwrap(), big.needle_bytes);
    let fetched = proxy.counts().blob_bytes - before.blob_bytes;
    assert!(fetched > 0, "the span came from the registry");
    assert!(
        fetched < big.layer_size_bytes() / 4,
        "reading {} bytes at the end of a {}-byte layer fetched {fetched} bytes of it",
        big.needle_bytes.len(),
        big.layer_size_bytes()
    );

    // The registry gone, a file at the layer's start is in no tier: reading it fails with EIO
    // (the tree still answers), the log says why, and what was read stays readable.
    registry.kill();
    let first = b_dir.join("big/file-00000.bin");
    assert!(std::fs::metadata(&first).unwrap().len() > 0);
    let err = std::fs::read(&first).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(5), "EIO, not {err}; log:\n{}", mounted.log_text());
    assert!(mounted.log_text().contains("read failed"), "log:\n{}", mounted.log_text());
    assert_eq!(std::fs::read(b_dir.join(&big.needle_path)).unwrap(), big.needle_bytes);
}

#[test]
fn platform_chooses_the_manifest_of_a_multi_platform_image() {
    if !fuse_usable() {
        return;
    }
    let image = ImageBuilder::new(31)
        .tag("multi")
        .layers(&[(Compression::Gzip, 10_000), (Compression::Zstd, 20_000)])
        .multi_platform()
        .build()
        .unwrap();
    let Some((_registry, d)) = registry_with(&image) else { return };
    let mut seen = Vec::new();
    for (i, platform) in ["linux/amd64", "linux/arm64"].into_iter().enumerate() {
        let dir = d.tmp.path().join(format!("mnt-{i}"));
        let mounted = Mounted::start_with(&d.data, "hub/team/app:multi", &dir, &["--platform", platform]);
        let manifest = &image.manifests()[i];
        assert_eq!(format!("{}/{}", manifest.platform.0, manifest.platform.1), platform);
        assert!(mounted.line.contains(&format!("({})", manifest.manifest.digest)), "{platform}: {}", mounted.line);
        seen.push(std::fs::read(dir.join("layer1/data.bin")).unwrap());
    }
    assert_ne!(seen[0], seen[1], "each platform's own layer");
    let (ok, _, stderr) = {
        let out = tc(&d.data)
            .args(["mount", "hub/team/app:multi"])
            .arg(d.tmp.path().join("mnt-0"))
            .args(["--platform", "plan9/mips"])
            .output()
            .unwrap();
        (out.status.success(), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert!(!ok && stderr.contains("plan9/mips"), "{stderr}");
}
