//! Data directories that cannot be used: a clear error, exit code 1, and nothing created.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Every command that opens the data directory, with arguments that are otherwise valid.
fn commands(port: u16) -> Vec<Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        s(&["stats"]),
        s(&["ns", "list"]),
        s(&["ns", "create", "x"]),
        s(&["get", "x/y"]),
        s(&["cleanup", "--all", "--yes"]),
        s(&["vacuum"]),
        s(&["verify"]),
        s(&["serve", "--listen", &format!("127.0.0.1:{port}")]),
    ]
}

#[track_caller]
fn assert_refused(cmd: &mut Command, what: &str, data: &Path) -> Out {
    let out = run(cmd);
    assert_eq!(out.code, 1, "{what}: expected exit 1\nstdout: {}\nstderr: {}", out.stdout, out.stderr);
    assert!(out.stderr.contains("error:"), "{what}: {}", out.stderr);
    assert!(
        out.stderr.contains(&data.display().to_string()) || out.stderr.contains("data directory"),
        "{what}: the message should name the data directory: {}",
        out.stderr
    );
    out
}

#[test]
fn data_dir_that_is_a_regular_file_or_under_one_is_refused() {
    let d = dirs();
    let file = d.tmp.path().join("plain-file");
    std::fs::write(&file, b"precious").unwrap();
    let under = file.join("sub");
    for data in [&file, &under] {
        for args in commands(free_port()) {
            let out = assert_refused(tc(data).args(&args), &format!("{args:?} on {}", data.display()), data);
            assert!(out.stderr.contains("cannot"), "{}", out.stderr);
        }
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    let names: Vec<_> = std::fs::read_dir(d.tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(names, ["plain-file"], "nothing else was created");
}

#[test]
fn data_dir_with_an_unusable_index_is_refused() {
    let d = dirs();
    // index.db is a directory.
    std::fs::create_dir_all(d.data.join("index.db")).unwrap();
    for args in commands(free_port()) {
        assert_refused(tc(&d.data).args(&args), &format!("{args:?}"), &d.data);
    }
}

#[test]
fn a_garbage_index_is_moved_aside_and_rebuilt() {
    let d = dirs();
    std::fs::create_dir_all(&d.data).unwrap();
    std::fs::write(d.data.join("index.db"), vec![0x42u8; 8192]).unwrap();
    let out = tc(&d.data).args(["stats", "--json"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("not a usable SQLite database") && stderr.contains("moved it aside"), "{stderr}");
    let aside: Vec<_> = std::fs::read_dir(&d.data)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("index.db.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the damaged file is kept aside for inspection");
    assert_eq!(std::fs::read(aside[0].path()).unwrap(), vec![0x42u8; 8192], "its bytes are untouched");
    let again = tc(&d.data).args(["stats"]).output().unwrap();
    assert!(again.status.success() && again.stderr.is_empty(), "{}", String::from_utf8_lossy(&again.stderr));
}

/// Whether root's DAC override is in effect (a 0o555 directory is writable anyway).
pub(crate) fn writable_despite_mode(dir: &Path) -> bool {
    let probe = dir.join(".probe");
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// A command that runs the binary without the capabilities that let root ignore file modes, if
/// the tests run as root (through util-linux `setpriv`); `None` if that is not possible.
pub(crate) fn unprivileged(data: &Path, probe_dir: &Path) -> Option<Command> {
    if !writable_despite_mode(probe_dir) {
        return Some(tc(data)); // Not privileged: the mode is enforced already.
    }
    let setpriv = ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| Path::new(p).exists())?;
    let mut c = tc(data);
    let program = c.get_program().to_owned();
    let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
    let mut wrapped = Command::new(setpriv);
    wrapped.args(["--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]).arg(program).args(args);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => wrapped.env(k, v),
            None => wrapped.env_remove(k),
        };
    }
    wrapped.stdin(std::process::Stdio::null());
    c = wrapped;
    // Make sure the wrapper really takes the privilege away.
    let check = Command::new(setpriv)
        .args(["--bounding-set=-dac_override,-dac_read_search,-fowner", "--", "touch"])
        .arg(probe_dir.join(".probe"))
        .stderr(std::process::Stdio::null())
        .status()
        .ok()?;
    let _ = std::fs::remove_file(probe_dir.join(".probe"));
    if check.success() { None } else { Some(c) }
}

#[test]
fn read_only_data_dir_is_refused_and_left_alone() {
    let d = dirs();
    // An empty directory with mode 0o555.
    let ro = d.tmp.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
    let Some(_) = unprivileged(&ro, &ro) else {
        eprintln!("SKIPPED: running as root without setpriv; cannot make a directory read-only for the binary");
        return;
    };
    for args in commands(free_port()) {
        let out = assert_refused(unprivileged(&ro, &ro).unwrap().args(&args), &format!("{args:?} on 0o555"), &ro);
        assert!(out.stderr.contains("ermission denied"), "{}", out.stderr);
        assert!(std::fs::read_dir(&ro).unwrap().next().is_none(), "{args:?} created something in a read-only dir");
    }

    // A data directory that was in use, then made read-only throughout.
    tcr(&d.data, &["ns", "create", "kept"]).ok();
    let before = tree(&d.data);
    set_mode_recursive(&d.data, 0o555, 0o444);
    for args in commands(free_port()) {
        let out =
            assert_refused(unprivileged(&d.data, &d.data).unwrap().args(&args), &format!("{args:?} on r/o"), &d.data);
        assert!(out.stderr.contains("not writable") || out.stderr.contains("ermission denied"), "{}", out.stderr);
        assert_eq!(tree(&d.data), before, "{args:?} changed a read-only data directory");
    }
    set_mode_recursive(&d.data, 0o755, 0o644);
    // Writable again, it works as before.
    let list = tcr(&d.data, &["ns", "list", "--json"]).ok().json();
    assert_eq!(list[0]["name"], "kept");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn set_mode_recursive(path: &Path, dir_mode: u32, file_mode: u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        for e in std::fs::read_dir(path).unwrap().flatten() {
            set_mode_recursive(&e.path(), dir_mode, file_mode);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(dir_mode)).unwrap();
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(file_mode)).unwrap();
    }
}
