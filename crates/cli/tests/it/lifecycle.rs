//! The lifecycle through the CLI: `prune`, `df`, `ns pin`, the disk quota (a burst larger than it)
//! and pass-through, the memory tier's settings (flag > environment > file), and bad sizes and durations refused at start.

use std::time::Duration;

use tiercache_testkit::{Source, bytes};

use crate::common::*;

/// Polls `series` until it is exported (the gauges are published once a second), then returns it.
async fn gauge(server: &Server, series: &str) -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = reqwest::get(server.url("/metrics")).await.unwrap().text().await.unwrap();
        if let Some(v) = text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok()) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{series} never exported:\n{}", server.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_tier_settings_take_flag_then_environment_then_file() {
    let d = dirs();
    let config = d.tmp.path().join("config.toml");
    std::fs::write(&config, "cache_ttl = 9\ncache_enabled = true\n").unwrap();
    let cfg = config.to_str().unwrap();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], f64, f64);
    let cases: [Case; 5] = [
        (&[], &[], 9.0, 1.0),
        (&[], &[("TIERCACHE_CACHE_TTL", "7")], 7.0, 1.0),
        (&["--cache-ttl", "5"], &[("TIERCACHE_CACHE_TTL", "7")], 5.0, 1.0),
        (&[], &[("TIERCACHE_CACHE_ENABLED", "false")], 9.0, 0.0),
        (&["--no-cache"], &[("TIERCACHE_CACHE_ENABLED", "true")], 9.0, 0.0),
    ];
    for (flags, env, ttl, enabled) in cases {
        let mut args = vec!["--config", cfg];
        args.extend_from_slice(flags);
        let server = Server::start_with_env(&d.data, &args, env).await;
        assert_eq!(gauge(&server, "tiercache_memory_ttl_seconds").await, ttl, "{flags:?} {env:?}");
        assert_eq!(gauge(&server, "tiercache_memory_enabled").await, enabled, "{flags:?} {env:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_tier_serves_hot_entries_and_no_cache_turns_it_off() {
    let d = dirs();
    let src = Source::start().await;
    src.put("hot", bytes(3, 4096));
    tcr(&d.data, &["ns", "create", "web", "--source", &src.url()]).ok();
    let http = client();
    for (flags, want_memory_hits) in [(&[][..], true), (&["--no-cache"][..], false)] {
        let mut args = vec!["--revalidate-after", "1h"];
        args.extend_from_slice(flags);
        let server = Server::start(&d.data, &args).await;
        let (status, _) = http_get(&http, &server.url("/ns/web/hot")).await;
        assert_eq!(status, 200);
        stats_when_entries(&d.data, 1).await; // Stored: the reads below are hits.
        // A disk-tier hit is promoted to the memory tier in the background: on a busy machine
        // the first reads after it may still come from disk, so read on (up to 200 times) until
        // one is a memory hit, or, with the memory tier off, all 200 were not.
        let mut hits = 0.0;
        for _ in 0..200 {
            let (status, body) = http_get(&http, &server.url("/ns/web/hot")).await;
            assert_eq!((status, body == bytes(3, 4096)), (200, true));
            hits = server.metric("tiercache_reads_total{tier=\"memory\",outcome=\"hit\"}").await;
            if hits > 0.0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(hits > 0.0, want_memory_hits, "{flags:?}: {hits} memory hits");
        // The memory tier's own counts (it also holds the entry's and namespace's rows).
        let tier_hits = server.metric("tiercache_memory_hits_total{cache=\"memory\"}").await;
        assert_eq!(tier_hits >= hits && tier_hits > 0.0, want_memory_hits, "{flags:?}: {tier_hits} tier hits");
    }
    assert_eq!(src.counts("hot").full, 1, "every read after the first is a hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_larger_than_the_quota_is_served_pass_through_and_stats_say_why() {
    let d = dirs();
    let src = Source::start().await;
    let big = bytes(4, 3 << 20);
    let small = bytes(5, 200_000);
    src.put("big", big.clone());
    src.put("small", small.clone());
    tcr(&d.data, &["ns", "create", "web", "--source", &src.url()]).ok();
    let server = Server::start(&d.data, &["--disk-quota", "1MiB", "--no-cache"]).await;
    let http = client();
    for _ in 0..2 {
        let (status, body) = http_get(&http, &server.url("/ns/web/big")).await;
        assert_eq!((status, body.len(), body == big), (200, big.len(), true));
    }
    assert_eq!(src.counts("big").full, 2, "not stored, so each read goes to the source");
    assert!(!blob_path(&d.data, &hex_of(&big)).exists(), "a blob over the quota was stored");
    server.wait_metric("tiercache_disk_pass_through_total", 2.0).await;
    // A blob that fits is stored as usual.
    let (status, body) = http_get(&http, &server.url("/ns/web/small")).await;
    assert_eq!((status, body == small), (200, true));
    stats_when_entries(&d.data, 1).await;
    assert!(blob_path(&d.data, &hex_of(&small)).is_file());
    assert!(temp_files(&d.data).is_empty(), "{:?}", temp_files(&d.data));
}

/// GET `url`: status, the `x-tiercache-tier` header and the body.
async fn get_with_tier(http: &reqwest::Client, url: &str) -> (u16, String, Vec<u8>) {
    let resp = http.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let tier = resp.headers().get("x-tiercache-tier").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let body = resp.bytes().await.unwrap_or_else(|e| panic!("GET {url} body: {e}")).to_vec();
    (status, tier, body)
}

/// Bytes of the blob files under `<data>/blobs/`.
fn blob_file_bytes(data: &std::path::Path) -> u64 {
    tree(&data.join("blobs"))
        .iter()
        .filter(|(p, _)| !p.as_os_str().to_string_lossy().ends_with('/'))
        .map(|(_, n)| n)
        .sum()
}

/// A burst of different entries, more than the quota holds, read one after another while every
/// blob stored is new (`protect_new` longer than the test): the cache admits each one, evicting
/// the oldest new blobs, and ends holding the entries read last. The entry just read is a disk hit
/// when read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_the_disk_quota_keeps_the_entries_read_last() {
    const MIB: usize = 1 << 20;
    const QUOTA: u64 = 20 * MIB as u64;
    let d = dirs();
    let src = Source::start().await;
    let keys: Vec<String> = (1..=60).map(|i| format!("e{i:02}")).collect();
    let data: Vec<Vec<u8>> = (0..60).map(|i| bytes(1000 + i, MIB)).collect();
    for (k, v) in keys.iter().zip(&data) {
        src.put(k, v.clone());
    }
    tcr(&d.data, &["ns", "create", "web", "--source", &src.url()]).ok();
    // However slow this machine is, every blob stays new through the whole burst.
    let config = d.tmp.path().join("config.toml");
    std::fs::write(&config, "protect_new = \"1h\"\n").unwrap();
    let server = Server::start(&d.data, &["--config", config.to_str().unwrap(), "--disk-quota", "20MiB"]).await;
    let http = client();
    let fetches =
        async |result: &str| server.metric(&format!("tiercache_source_fetches_total{{result=\"{result}\"}}")).await;
    for (i, (k, v)) in keys.iter().zip(&data).enumerate() {
        let (status, tier, body) = get_with_tier(&http, &server.url(&format!("/ns/web/{k}"))).await;
        assert_eq!((status, tier.as_str(), body == *v), (200, "source", true), "{k}");
        // A blob is stored just after its reader has the last byte; the next read waits for it,
        // so that the blobs enter the eviction order in the order they were read (on a busy
        // machine the next fetch could otherwise store its blob first).
        let n = (i + 1) as f64;
        wait_until("the blob just read is stored", async || fetches("ok").await + fetches("pass_through").await >= n)
            .await;
        let on_disk = blob_file_bytes(&d.data);
        assert!(on_disk <= QUOTA, "after {k}: {on_disk} bytes of blobs on disk, over the quota");
    }
    // Every fetch stored its blob: none was passed through.
    wait_until("every fetch has ended", async || fetches("ok").await + fetches("pass_through").await >= 60.0).await;
    assert_eq!(server.metric("tiercache_disk_pass_through_total").await, 0.0, "{}", server.log_text());
    assert_eq!(fetches("ok").await, 60.0);
    assert!(server.metric("tiercache_disk_evicted_new_blobs_total").await >= 40.0);

    // The entry just read is a disk hit, and so are the ones read before it.
    for k in keys[45..].iter().rev() {
        let (status, tier, _) = get_with_tier(&http, &server.url(&format!("/ns/web/{k}"))).await;
        assert_eq!((status, tier.as_str()), (200, "disk"), "{k}");
        assert_eq!(src.counts(k).full, 1, "{k} was fetched once");
    }
    // The first ones made room for them.
    for (k, v) in keys.iter().zip(&data).take(40) {
        assert!(!blob_path(&d.data, &hex_of(v)).exists(), "{k} is still on disk");
    }
    for (k, v) in keys.iter().zip(&data).skip(45) {
        assert!(blob_path(&d.data, &hex_of(v)).is_file(), "{k} is not on disk");
    }
    let df = tcr(&d.data, &["df", "--json"]).ok().json();
    let (n_blobs, blob_bytes) = (df["disk"]["n_blobs"].as_u64().unwrap(), df["disk"]["blob_bytes"].as_u64().unwrap());
    assert!((15..=20).contains(&n_blobs) && blob_bytes <= QUOTA, "{df}");
    let stats = tcr(&d.data, &["stats", "--json"]).ok().json();
    assert_eq!(stats["n_entries"].as_u64(), Some(n_blobs), "evicted entries left with their blobs: {stats}");
    server.wait_metric("tiercache_disk_quota_bytes", QUOTA as f64).await;
    assert!(server.metric("tiercache_disk_used_bytes").await <= QUOTA as f64);
}

#[test]
fn absurd_sizes_and_durations_are_refused_at_start() {
    let d = dirs();
    // A value the argument parser refuses is bad usage (2); one refused once parsed, like a zero
    // quota or a --cache-ttl (taken as text, to be ranked with the environment and the file), is
    // a failure (1), as for any other value checked after parsing.
    let cases: [(&[&str], i32); 9] = [
        (&["--disk-quota", "-5GiB"], 2),
        (&["--disk-quota", "10parsecs"], 2),
        (&["--disk-quota", "0"], 1),
        (&["--disk-quota", "99999999EiB"], 2),
        (&["--cache-ttl", "-1"], 1),
        (&["--cache-ttl", "soon"], 1),
        (&["--revalidate-after", "-3s"], 2),
        (&["--max-object-size", "10parsecs"], 2),
        (&["--max-object-size", "0"], 1),
    ];
    for (args, code) in cases {
        let mut full = vec!["serve", "--listen", "127.0.0.1:9"];
        full.extend_from_slice(args);
        let out = tcr(&d.data, &full);
        assert_eq!(out.code, code, "{args:?}: exit {} ({})", out.code, out.stderr);
        assert!(out.stderr.contains(args[1]) || out.stderr.contains("quota"), "{args:?}: unclear: {}", out.stderr);
    }
    let config = d.tmp.path().join("bad.toml");
    for (text, needle) in [
        ("disk_quota = \"-1GiB\"\n", "negative"),
        ("max_age = \"1000 years\"\n", "100 years"),
        ("disk_high_watermark = 0.5\ndisk_low_watermark = 0.9\n", "watermarks"),
        ("cache_ttl = -4\n", "cache_ttl"),
        ("max_object_size = \"2EiB\"\n", "larger than 1 EiB"),
    ] {
        std::fs::write(&config, text).unwrap();
        let out = tcr(&d.data, &["--config", config.to_str().unwrap(), "serve", "--listen", "127.0.0.1:9"]);
        assert_eq!(out.code, 1, "{text}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{text}: {}", out.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_dry_run_lists_and_prune_removes_orphans_and_stale_temp_files() {
    let d = dirs();
    let src = Source::start().await;
    let kept = bytes(6, 100_000);
    src.put("kept", kept.clone());
    tcr(&d.data, &["ns", "create", "web", "--source", &src.url()]).ok();
    tcr(&d.data, &["get", "web/kept", "-o", d.tmp.path().join("out").to_str().unwrap()]).ok();

    // A crash between publishing a blob and recording its entry leaves a blob nothing names, and
    // a killed writer leaves a temp file: both made by hand here, as the crash would.
    let orphan = bytes(7, 300_000);
    let path = blob_path(&d.data, &hex_of(&orphan));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &orphan).unwrap();
    tcr(&d.data, &["verify", "--repair"]).ok(); // Adopts the untracked file: an orphan now.
    // A temp file of a live process (this one) that nobody wrote for two hours: a stalled
    // writer. (A dead process's temp files are swept when the data directory is opened.)
    let temp = d.data.join(format!("tmp/{}-00000000deadbeef.part", std::process::id()));
    std::fs::write(&temp, vec![1u8; 5000]).unwrap();
    let touched = std::process::Command::new("touch").args(["-d", "2 hours ago"]).arg(&temp).status().unwrap();
    assert!(touched.success());

    let dry = tcr(&d.data, &["prune", "--grace", "0s", "--dry-run", "--json"]).ok().json();
    assert_eq!(dry["dry_run"], true);
    let kinds: Vec<&str> = dry["items"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"orphan") && kinds.contains(&"temp"), "{dry}");
    assert_eq!(dry["freed_bytes"], orphan.len() as u64 + 5000);
    assert!(path.exists() && temp.exists(), "a dry run removed something");

    let done = tcr(&d.data, &["prune", "--grace", "0s", "--json"]).ok().json();
    assert_eq!(done["freed_bytes"], orphan.len() as u64 + 5000, "{done}");
    assert!(!path.exists() && !temp.exists());
    assert!(blob_path(&d.data, &hex_of(&kept)).is_file(), "a referenced blob was pruned");
    let again = tcr(&d.data, &["prune", "--grace", "0s", "--json"]).ok().json();
    assert_eq!(again["items"].as_array().unwrap().len(), 0, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn df_counts_shared_blobs_once_and_attributes_them_and_pins_protect_from_age_pruning() {
    let d = dirs();
    let src = Source::start().await;
    let shared = bytes(8, 120_000);
    let only_a = bytes(9, 30_000);
    src.put("shared", shared.clone());
    src.put("only-a", only_a.clone());
    for ns in ["a", "b"] {
        tcr(&d.data, &["ns", "create", ns, "--source", &src.url()]).ok();
    }
    let out = d.tmp.path().join("out");
    for target in ["a/shared", "b/shared", "a/only-a"] {
        tcr(&d.data, &["get", target, "-o", out.to_str().unwrap()]).ok();
    }
    let df = tcr(&d.data, &["df", "--json"]).ok().json();
    let disk = &df["disk"];
    assert_eq!(disk["n_blobs"], 2);
    assert_eq!(disk["blob_bytes"], (shared.len() + only_a.len()) as u64, "shared blob counted once: {df}");
    let ns = |name: &str| disk["namespaces"].as_array().unwrap().iter().find(|n| n["name"] == name).unwrap().clone();
    let (a, b) = (ns("a"), ns("b"));
    assert_eq!(a["unique_bytes"], only_a.len() as u64);
    assert_eq!(a["shared_bytes"], shared.len() as u64);
    assert_eq!(b["unique_bytes"], 0);
    let attributed = a["attributed_bytes"].as_u64().unwrap() + b["attributed_bytes"].as_u64().unwrap();
    assert_eq!(attributed, (shared.len() + only_a.len()) as u64, "attributed shares sum to the referenced bytes");
    let verbose = tcr(&d.data, &["df", "-v"]).ok().stdout;
    assert!(verbose.contains("NAMESPACE") && verbose.contains("OWNER"), "{verbose}");

    // Pin namespace a; prune everything older than 0s: only b's entry goes, and its blob stays
    // (a still names it).
    tcr(&d.data, &["ns", "pin", "a"]).ok();
    let report = tcr(&d.data, &["prune", "--older-than", "0s", "--json"]).ok().json();
    let pruned: Vec<String> = report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| format!("{}/{}", i["namespace"].as_str().unwrap_or("-"), i["key"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(pruned, ["b/shared"], "{report}");
    assert!(blob_path(&d.data, &hex_of(&shared)).is_file());
    let df = tcr(&d.data, &["df", "--json"]).ok().json();
    assert_eq!(df["disk"]["pinned_bytes"], (shared.len() + only_a.len()) as u64, "{df}");
    tcr(&d.data, &["ns", "unpin", "a"]).ok();
    let report = tcr(&d.data, &["prune", "--older-than", "0s", "--json"]).ok().json();
    assert_eq!(report["n_entries"], 2, "{report}");
    assert_eq!(report["freed_bytes"], (shared.len() + only_a.len()) as u64, "{report}");
    assert!(blob_files(&d.data).is_empty());
}

/// A full file system: the data directory on a 4 MiB tmpfs. A blob that does not fit is served
/// pass-through, no temp file is left, and the server goes on serving. Needs root (mount).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_serves_pass_through_and_the_server_keeps_going() {
    let d = dirs();
    let mnt = d.tmp.path().join("small");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tiercache-test", mnt.to_str().unwrap()])
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        tiercache_testkit::servers::skip_or_fail(
            "a 4 MiB tmpfs for the data directory",
            "mount -t tmpfs failed (needs root)".into(),
        );
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let data = mnt.join("data");
    let src = Source::start().await;
    let big = bytes(10, 6 << 20);
    let small = bytes(11, 100_000);
    src.put("big", big.clone());
    src.put("small", small.clone());
    tcr(&data, &["ns", "create", "web", "--source", &src.url()]).ok();
    let server = Server::start(&data, &["--no-cache"]).await;
    let http = client();
    let (status, body) = http_get(&http, &server.url("/ns/web/big")).await;
    assert_eq!((status, body.len(), body == big), (200, big.len(), true));
    assert!(temp_files(&data).is_empty(), "{:?}", temp_files(&data));
    let (status, body) = http_get(&http, &server.url("/ns/web/small")).await;
    assert_eq!((status, body == small), (200, true), "the server stopped serving after a full disk");
    server.wait_metric("tiercache_disk_pass_through_total", 1.0).await;
}
