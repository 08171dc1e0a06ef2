//! What packaging and operators rely on, through the real binary and the real tools: the shell
//! completion scripts (checked by bash, zsh and fish, and asked to complete), the man page
//! (rendered by `man` and groff), `config check` (each setting's source, refusals with exit 1),
//! `config example` (every key the file takes, read back), the systemd unit (`systemd-analyze`)
//! and the container build's files.
//!
//! The shells, `man`, groff and `systemd-analyze` are Debian's (`.ci/run` installs them); a test
//! whose tool is missing skips, or fails under `TIERCACHE_REQUIRE_SERVERS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use tiercache_testkit::servers::skip_or_fail;

use crate::common::*;

/// The repository's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `tool` runs here; if not, says so through [`skip_or_fail`].
fn have(tool: &str, package: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        skip_or_fail(tool, format!("not installed (apt-get install {package})"));
    }
    ok
}

/// Runs `program args…` with `stdin` closed and returns what it said, checking exit status 0.
#[track_caller]
fn sh_ok(program: &str, args: &[&str]) -> Out {
    let out = run(Command::new(program).args(args));
    assert_eq!(out.code, 0, "{program} {args:?}\nstdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    out
}

/// The commands `tiercache [GROUP] --help` lists, from clap's own help.
fn commands(data: &Path, group: &[&str]) -> Vec<String> {
    let mut args = group.to_vec();
    args.push("--help");
    let help = tcr(data, &args).ok().stdout;
    let listed = help.split_once("Commands:\n").expect("a list of commands").1;
    // A command's line is indented by two spaces; its wrapped description's lines by more.
    listed
        .lines()
        .take_while(|l| l.starts_with("  "))
        .filter(|l| !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn completions_of_each_shell_are_valid_scripts_that_complete_commands_and_flags() {
    let d = dirs();
    let names = commands(&d.data, &[]);
    assert!(names.len() > 15 && names.iter().any(|n| n == "config"), "{names:?}");
    for shell in ["bash", "zsh", "fish"] {
        let out = tcr(&d.data, &["completions", shell]).ok();
        assert!(out.stdout.len() > 1000, "{shell}: {} bytes", out.stdout.len());
        for name in &names {
            assert!(out.stdout.contains(name.as_str()), "{shell}: no {name}");
        }
        assert!(out.stdout.contains("disk-quota"), "{shell}: no --disk-quota");
        if !have(shell, shell) {
            continue;
        }
        let script = d.tmp.path().join(format!("tiercache.{shell}"));
        std::fs::write(&script, &out.stdout).unwrap();
        let script = script.to_str().unwrap();
        match shell {
            "bash" => {
                sh_ok("bash", &["-n", script]);
                // What bash's completion calls the function with, as it would on `tiercache con<TAB>`.
                let ask = format!(
                    "source {script}; COMP_WORDS=(tiercache con); COMP_CWORD=1; _tiercache tiercache con tiercache; \
                     echo \"${{COMPREPLY[*]}}\"; COMP_WORDS=(tiercache config ch); COMP_CWORD=2; \
                     _tiercache tiercache ch config; echo \"${{COMPREPLY[*]}}\""
                );
                assert_eq!(sh_ok("bash", &["-c", &ask]).stdout, "config\ncheck\n");
            }
            "zsh" => {
                sh_ok("zsh", &["-n", script]);
                let ask =
                    format!("autoload -U compinit; compinit -u -D; source {script}; print ${{+functions[_tiercache]}}");
                assert_eq!(sh_ok("zsh", &["-c", &ask]).stdout, "1\n", "the completion function is defined");
            }
            _ => {
                sh_ok("fish", &["--no-execute", script]);
                let ask = format!(
                    "source {script}; complete -C 'tiercache con'; complete -C 'tiercache config check --disk-q'"
                );
                let said = sh_ok("fish", &["-c", &ask]).stdout;
                let firsts: Vec<&str> = said.lines().filter_map(|l| l.split('\t').next()).collect();
                assert_eq!(firsts, ["config", "--disk-quota"], "{said}");
            }
        }
    }
    let out = tcr(&d.data, &["completions", "tcsh"]).expect_code(2);
    assert!(out.stderr.contains("bash"), "the shells it takes: {}", out.stderr);
    assert!(!d.data.exists(), "no data directory for printing a script");
}

#[test]
fn the_man_page_describes_every_command_and_the_exit_status() {
    let d = dirs();
    let page = tcr(&d.data, &["man"]).ok().stdout;
    assert!(page.contains("\n.TH TIERCACHE 1 "), "a section 1 page");
    for heading in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "\"EXIT STATUS\"", "ENVIRONMENT", "FILES"]
    {
        assert!(page.contains(&format!("\n.SH {heading}\n")), "no {heading} section");
    }
    let mut all = commands(&d.data, &[]);
    for group in ["ns", "config"] {
        all.extend(commands(&d.data, &[group]).into_iter().map(|c| format!("{group} {c}")));
    }
    for name in &all {
        assert!(page.contains(&format!("\n.SS \"tiercache {name}\"\n")), "no subsection for {name}");
    }
    // A variable read without a flag is there, and so is every option's.
    assert!(page.contains("TIERCACHE_ADMIN_TOKEN") && page.contains("TIERCACHE_DISK_QUOTA"));

    let file = d.tmp.path().join("tiercache.1");
    std::fs::write(&file, &page).unwrap();
    let file = file.to_str().unwrap();
    if have("groff", "groff-base") {
        // Every warning groff knows of, on: a malformed request or escape would show here.
        let out = sh_ok("groff", &["-man", "-Tutf8", "-ww", "-z", file]);
        assert_eq!(out.stderr, "", "groff warns");
    }
    if !have("man", "man-db") {
        return;
    }
    let mut cmd = Command::new("man");
    cmd.args(["-l", file]).env("MANWIDTH", "100").env_remove("MAN_KEEP_FORMATTING");
    let shown = run(&mut cmd);
    assert_eq!((shown.code, shown.stderr.as_str()), (0, ""), "man -l");
    let text = shown.stdout;
    for seen in ["EXIT STATUS", "tiercache config check", "tiercache ns create", "--disk-quota"] {
        assert!(text.contains(seen), "the rendered page lacks {seen}");
    }
    // The status codes, each with what it means.
    let status = text.split_once("EXIT STATUS").unwrap().1.split_once("ENVIRONMENT").unwrap().0;
    for (code, says) in
        [("0", "Success"), ("1", "The command failed"), ("2", "Bad usage"), ("3", "verify found damage")]
    {
        // Justified text: words one or more spaces apart.
        let line = status.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "));
        assert!(line.into_iter().any(|l| l.starts_with(&format!("{code} {says}"))), "exit status {code}:\n{status}");
    }
}

/// `config check --json`'s entry for `key`.
#[track_caller]
fn setting<'a>(report: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    let settings = report["settings"].as_array().expect("settings");
    settings.iter().find(|s| s["key"] == key).unwrap_or_else(|| panic!("no {key} in {report}"))
}

#[test]
fn config_check_says_where_each_setting_came_from_and_hides_secrets() {
    let d = dirs();
    let config = d.tmp.path().join("config.toml");
    let admin = "admin-secret-0001-abcdef";
    let writer = "writer-secret-0001-abcdef";
    std::fs::write(
        &config,
        format!(
            "listen = \"0.0.0.0:1\"\nrevalidate_after = \"5m\"\ndisk_quota = \"1GiB\"\nwatch = true\n\
             admin_token = \"{admin}\"\n[namespaces.web]\nsource = \"http://127.0.0.1:9/\"\n"
        ),
    )
    .unwrap();
    let check = |json: bool| {
        let mut cmd = tc(&d.data);
        cmd.args(["--config", config.to_str().unwrap(), "config", "check", "--listen", "127.0.0.1:9"]);
        cmd.args(["--no-worker", "--shared", "redis://user:pw@127.0.0.1:1/0"]);
        if json {
            cmd.arg("--json");
        }
        cmd.env("TIERCACHE_REVALIDATE_AFTER", "90s").env("TIERCACHE_WRITE_TOKEN", writer);
        run(&mut cmd).ok()
    };
    let out = check(true);
    let report = out.json();
    assert_eq!(report["is_valid"], true);
    assert_eq!(report["config_file"], config.to_str().unwrap());
    assert_eq!(report["data_dir"], d.data.to_str().unwrap());
    assert_eq!(report["namespaces"], serde_json::json!(["web"]));
    let want = |key: &str, source: &str, value: Option<&str>, from: Option<&str>| {
        let s = setting(&report, key);
        assert_eq!(s["source"], source, "{key}: {s}");
        assert_eq!(s["value"].as_str(), value, "{key}: {s}");
        assert_eq!(s["from"].as_str(), from, "{key}: {s}");
    };
    let file = Some(config.to_str().unwrap());
    // A flag beats the file; a variable beats the file; the file beats the default.
    want("listen", "flag", Some("127.0.0.1:9"), Some("--listen"));
    want("data_dir", "flag", Some(d.data.to_str().unwrap()), Some("--data-dir"));
    want("no_worker", "flag", Some("true"), Some("--no-worker"));
    want("revalidate_after", "env", Some("90s"), Some("TIERCACHE_REVALIDATE_AFTER"));
    want("disk_quota", "file", Some("1GiB"), file);
    want("watch", "file", Some("true"), file);
    want("max_connections", "default", Some("from the open-file limit, at most 10000"), None);
    want("keep_alive_timeout", "default", Some("75s"), None);
    want("allow_anonymous_writes", "default", Some("false"), None);
    // Secrets are said to be set, wherever they come from; credentials in a URL are hidden.
    want("admin_token", "file", Some("(set)"), file);
    want("write_token", "env", Some("(set)"), Some("TIERCACHE_WRITE_TOKEN"));
    want("read_token", "default", Some("reads are open"), None);
    want("shared", "flag", Some("redis://***:***@127.0.0.1:1/0"), Some("--shared"));
    let text = check(false).stdout;
    for said in [&out.stdout, &text] {
        assert!(!said.contains(admin) && !said.contains(writer) && !said.contains(":pw@"), "a secret shown:\n{said}");
    }
    let line = text.lines().find(|l| l.starts_with("revalidate_after ")).expect("a line per setting");
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        ["revalidate_after", "env", "TIERCACHE_REVALIDATE_AFTER", "90s"]
    );
    assert!(text.contains("valid: these are the settings serve would start with"), "{text}");
    assert!(!d.data.exists(), "config check opens no data directory");
}

#[test]
fn config_check_refuses_an_invalid_configuration_with_exit_1() {
    let d = dirs();
    let config = d.tmp.path().join("config.toml");
    for (text, says) in [
        ("disk_quot = \"1GiB\"\n", "unknown field `disk_quot`"),
        ("disk_quota = \"lots\"\n", "disk_quota"),
        ("write_token = \"short\"\n", "the write token has 5 characters"),
        ("disk_high_watermark = 0.5\ndisk_low_watermark = 0.9\n", "watermarks"),
        ("s3_listen = \"127.0.0.1:9000\"\n", "the S3 listener needs credentials"),
        ("[namespaces.\"Not A Name\"]\n", "invalid namespace name"),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = tcr(&d.data, &["--config", config.to_str().unwrap(), "config", "check"]).expect_code(1);
        assert!(
            out.stderr.contains("the configuration is invalid") && out.stderr.contains(says),
            "{text}: {}",
            out.stderr
        );
        assert_eq!(out.stdout, "", "{text}: nothing printed as if valid");
        // The same refusal as serve's, which then starts nothing.
        let served = tcr(&d.data, &["--config", config.to_str().unwrap(), "serve", "--listen", "127.0.0.1:0"]);
        assert_eq!(served.code, 1, "{text}: {}", served.stderr);
        assert!(served.stderr.contains(says), "{text}: serve says {}", served.stderr);
        let json = tcr(&d.data, &["--config", config.to_str().unwrap(), "config", "check", "--json"]).expect_code(1);
        let report = json.json();
        assert_eq!(report["is_valid"], false, "{text}");
        assert!(report["error"].as_str().unwrap().contains(says), "{text}: {report}");
    }
    // A flag is checked too.
    let out = tcr(&d.data, &["config", "check", "--max-connections", "0"]).expect_code(1);
    assert!(out.stderr.contains("max_connections must be at least 1"), "{}", out.stderr);
    let missing = d.tmp.path().join("missing.toml");
    let out = tcr(&d.data, &["--config", missing.to_str().unwrap(), "config", "check"]).expect_code(1);
    assert!(out.stderr.contains("cannot read config file"), "{}", out.stderr);
    assert!(!d.data.exists(), "nothing refused opened the data directory");
}

/// The keys the file takes, as the file's own error for an unknown key lists them.
fn keys_the_file_takes(d: &Dirs) -> Vec<String> {
    let config = d.tmp.path().join("unknown.toml");
    std::fs::write(&config, "no_such_key = 1\n").unwrap();
    let out = tcr(&d.data, &["--config", config.to_str().unwrap(), "config", "check"]).expect_code(1);
    let list = out.stderr.split_once("expected one of ").expect("the keys").1.lines().next().unwrap();
    list.split(", ").map(|k| k.trim_matches('`').to_owned()).collect()
}

#[test]
fn config_example_holds_every_key_and_reads_back_as_the_file() {
    let d = dirs();
    let example = tcr(&d.data, &["config", "example"]).ok().stdout;
    let keys = keys_the_file_takes(&d);
    assert!(keys.len() > 40 && keys.iter().any(|k| k == "namespaces"), "{keys:?}");

    // As printed, every line is a comment: the file sets nothing.
    let as_is = d.tmp.path().join("example.toml");
    std::fs::write(&as_is, &example).unwrap();
    let report = tcr(&d.data, &["--config", as_is.to_str().unwrap(), "config", "check", "--json"]).ok().json();
    let from_file: Vec<&serde_json::Value> = report["settings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["source"] != "default" && s["key"] != "data_dir")
        .collect();
    assert!(from_file.is_empty(), "{from_file:?}");

    // Uncommented, it sets every key, and serve would start with it.
    let on: String = example
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let uncommented = d.tmp.path().join("uncommented.toml");
    std::fs::write(&uncommented, &on).unwrap();
    let report = tcr(&d.data, &["--config", uncommented.to_str().unwrap(), "config", "check", "--json"]).ok().json();
    for key in keys.iter().filter(|k| *k != "namespaces") {
        let s = setting(&report, key);
        // The data directory is the command line's (the tests' --data-dir).
        let want = if key == "data_dir" { "flag" } else { "file" };
        assert_eq!(s["source"], want, "{key} from the uncommented example: {s}");
    }
    assert_eq!(report["namespaces"], serde_json::json!(["site"]));
    assert!(on.contains("\n[[s3.keys]]\n"), "the S3 keys' tables");
    assert!(!d.data.exists());
}

#[test]
fn the_systemd_unit_runs_serve_as_its_own_user_sandboxed() {
    let unit = std::fs::read_to_string(root().join("packaging/tiercache.service")).unwrap();
    let directives: Vec<(&str, &str)> =
        unit.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once('=')).collect();
    let value = |key: &str| directives.iter().filter(|(k, _)| *k == key).map(|(_, v)| *v).collect::<Vec<_>>();
    for (key, want) in [
        ("User", "tiercache"),
        ("Group", "tiercache"),
        ("ExecStart", "/usr/bin/tiercache serve"),
        ("EnvironmentFile", "-/etc/tiercache/env"),
        ("StateDirectory", "tiercache"),
        ("ReadWritePaths", "/var/lib/tiercache"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
    ] {
        assert_eq!(value(key), [want], "{key}");
    }
    assert!(value("Environment").contains(&"TIERCACHE_DATA_DIR=/var/lib/tiercache"), "the data directory");
    assert!(value("RestrictAddressFamilies").iter().any(|v| v.contains("AF_INET6")), "sockets");
    assert!(value("LimitNOFILE").iter().any(|v| v.parse::<u64>().is_ok_and(|n| n >= 4096)), "open files");

    if !have("systemd-analyze", "systemd") {
        return;
    }
    // Verified as installed, with this build as /usr/bin/tiercache (which verify wants to exist).
    let d = dirs();
    std::fs::create_dir_all(&d.data).unwrap();
    let copy = d.data.join("tiercache.service");
    std::fs::write(&copy, unit.replace("ExecStart=/usr/bin/tiercache ", &format!("ExecStart={} ", bin()))).unwrap();
    let out = sh_ok("systemd-analyze", &["verify", "--man=no", copy.to_str().unwrap()]);
    assert_eq!(out.stderr, "", "systemd-analyze warns");
    let out = sh_ok("systemd-analyze", &["security", "--offline=true", copy.to_str().unwrap()]);
    let level = out.stdout.lines().find_map(|l| l.split_once("Overall exposure level for tiercache.service: "));
    let level: f64 = level.and_then(|(_, v)| v.split_whitespace().next()?.parse().ok()).expect("an exposure level");
    assert!(level <= 2.0, "exposure {level} (0 safe, 10 unsafe):\n{}", out.stdout);
}

#[test]
fn the_container_build_builds_the_locked_binary_and_serves_on_its_exposed_port() {
    let dockerfile = std::fs::read_to_string(root().join("packaging/Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    let from: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("FROM ")).collect();
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    // The builder's Rust is at least the workspace's.
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let wanted = manifest.lines().find_map(|l| l.strip_prefix("rust-version = ")).unwrap().trim_matches('"');
    let builder = from[0].strip_prefix("rust:").unwrap().split('-').next().unwrap();
    let version = |v: &str| v.split('.').map(|n| n.parse::<u32>().unwrap()).collect::<Vec<_>>();
    assert!(version(builder) >= version(wanted), "rust:{builder} is older than {wanted}");
    assert!(from[1].starts_with("debian:"), "{from:?}");
    assert!(dockerfile.contains("cargo build --release --locked -p tiercache"));
    assert!(lines.iter().any(|l| l.starts_with("USER ") && !l.contains("root")), "a non-root user");
    assert!(lines.contains(&"VOLUME /var/lib/tiercache"));
    assert!(lines.contains(&"ENTRYPOINT [\"tiercache\"]"));
    // The port served, exposed and asked by the health check are one.
    assert!(lines.contains(&"CMD [\"serve\", \"--listen\", \"0.0.0.0:7070\"]"));
    assert!(lines.contains(&"EXPOSE 7070"));
    assert!(dockerfile.contains("/dev/tcp/127.0.0.1/7070"), "the health check's port");
    // The build context keeps what the build needs and leaves the build's output out.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let patterns: Vec<&str> = ignore.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    assert!(patterns.contains(&"target/"), "{patterns:?}");
    for needed in ["Cargo.toml", "Cargo.lock", "crates"] {
        assert!(root().join(needed).exists(), "{needed}");
        assert!(!patterns.iter().any(|p| p.trim_end_matches('/') == needed), "{needed} is left out of the build");
    }
}
