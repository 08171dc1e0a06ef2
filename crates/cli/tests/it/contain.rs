//! Containment from the command line: `index`, `ns create`, `ns migrate` and the config file's
//! namespaces at `serve` all refuse a directory that reaches the data directory or another
//! namespace's storage; and `df` shows the quota the server was started with.

use crate::common::{Server, dirs, tcr};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_way_of_defining_a_namespace_reaches_the_data_directory() {
    let d = dirs();
    let base = std::fs::canonicalize(d.tmp.path()).unwrap();
    let data = base.join("data");
    let src = tiercache_testkit::Source::start().await;
    let store = base.join("store");
    tcr(&data, &["ns", "create", "kept", "--source", &src.url(), "--storage", &format!("path:{}", store.display())])
        .ok();
    std::fs::create_dir_all(base.join("files")).unwrap();
    std::os::unix::fs::symlink(&data, base.join("link")).unwrap();
    let b = |p: &str| base.join(p).to_str().unwrap().to_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        // The reproduction: `index` of a parent of the data directory.
        (vec!["index".into(), b(""), "--ns".into(), "parent".into()], "contains the data directory"),
        (vec!["index".into(), "/".into(), "--ns".into(), "rootfs".into()], "the root directory /"),
        (vec!["index".into(), b("data"), "--ns".into(), "data".into()], "is the data directory"),
        (vec!["index".into(), b("data/blobs"), "--ns".into(), "inside".into()], "is inside the data directory"),
        (vec!["index".into(), b("link"), "--ns".into(), "link".into()], "is the data directory"),
        (vec!["index".into(), b("store"), "--ns".into(), "store".into()], "where namespace kept keeps its blobs"),
        (vec!["ns".into(), "create".into(), "rootfs".into(), "--source".into(), "file:///".into()], "root directory /"),
        (
            vec!["ns".into(), "create".into(), "data".into(), "--source".into(), format!("file://{}", b("data"))],
            "is the data directory",
        ),
    ];
    for (args, says) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = tcr(&data, &args).expect_code(1);
        assert!(out.stderr.contains(says), "{args:?}: expected {says:?} in {}", out.stderr);
    }
    let list = tcr(&data, &["ns", "list", "--json"]).ok().json();
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|n| n["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["kept"], "nothing else was defined");
    // A directory of the operator's is indexed (and recorded canonical); a storage directory may
    // then not be put around it.
    tcr(&data, &["index", &b("files"), "--ns", "files"]).ok();
    let out = tcr(&data, &["ns", "migrate", "kept", "--to", &format!("path:{}", b("files/blobs"))]).expect_code(1);
    assert!(out.stderr.contains("the source directory of namespace files"), "{}", out.stderr);
    // The config file's namespaces are checked when `serve` starts: it refuses to start.
    let config = base.join("config.toml");
    std::fs::write(&config, "[namespaces.rootfs]\nsource = \"file:///\"\n").unwrap();
    let out = tcr(&data, &["--config", config.to_str().unwrap(), "serve", "--listen", "127.0.0.1:0"]).expect_code(1);
    assert!(out.stderr.contains("the root directory /"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn df_shows_the_quota_the_server_was_started_with() {
    let d = dirs();
    // No server yet: the command's own settings (none).
    let out = tcr(&d.data, &["df"]).ok();
    assert!(out.stdout.contains("quota: none, from this command's settings"), "{}", out.stdout);
    let mut server = Server::start(&d.data, &["--disk-quota", "10MiB"]).await;
    let settings: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.data.join("settings.json")).unwrap()).unwrap();
    assert_eq!(settings["disk_quota_bytes"], 10 * 1024 * 1024, "{settings}");
    assert_eq!(settings["pid"], server.pid, "{settings}");
    let out = tcr(&d.data, &["df"]).ok();
    assert!(out.stdout.contains("10.0 MiB"), "{}", out.stdout);
    assert!(out.stdout.contains("quota: 10.0 MiB, from the server started at"), "{}", out.stdout);
    let json = tcr(&d.data, &["df", "--json"]).ok().json();
    assert_eq!(json["quota_bytes"], 10 * 1024 * 1024, "{json}");
    assert_eq!(json["quota_source"], "server", "{json}");
    // A flag given to `df` wins.
    let json = tcr(&d.data, &["df", "--json", "--disk-quota", "1GiB"]).ok().json();
    assert_eq!((json["quota_bytes"].as_u64(), json["quota_source"].as_str()), (Some(1 << 30), Some("flag")));
    let out = tcr(&d.data, &["df", "--disk-quota", "1GiB"]).ok();
    assert!(out.stdout.contains("quota: 1.0 GiB, from the --disk-quota flag"), "{}", out.stdout);
    // A server started again without a quota says so.
    server.stop();
    let _server = Server::start(&d.data, &[]).await;
    let json = tcr(&d.data, &["df", "--json"]).ok().json();
    assert_eq!((json["quota_bytes"].is_null(), json["quota_source"].as_str()), (true, Some("server")), "{json}");
}
