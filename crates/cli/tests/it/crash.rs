//! The crash test: `kill -9` the server while fetches and uploads are in flight, restart it, and
//! check that the store is consistent and that nothing acknowledged was lost.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tiercache_testkit::{Behavior, Source, bytes};

use crate::common::*;

const ITERATIONS: u64 = 5;
const N_OBJECTS: usize = 20;
const N_UPLOADS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_then_restart_leaves_a_clean_consistent_store() {
    // Fixed seeds by default so data and kill points are reproducible (timing is not);
    // TIERCACHE_CRASH_SEED=<n> tries other ones.
    let base: u64 = std::env::var("TIERCACHE_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x7C0DE);
    for i in 0..ITERATIONS {
        let seed = base.wrapping_mul(31).wrapping_add(i);
        eprintln!("crash iteration {i}: seed {seed}");
        iteration(seed).await;
    }
}

struct Object {
    key: String,
    data: Arc<Vec<u8>>,
    hex: String,
}

fn sha_hex(b: &[u8]) -> String {
    hex_of(b)
}

async fn iteration(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let d = dirs();
    let src = Source::start().await;

    let objects: Vec<Object> = (0..N_OBJECTS)
        .map(|i| {
            let len = rng.random_range(256 * 1024..=4 * 1024 * 1024);
            let data = bytes(seed.wrapping_mul(1000).wrapping_add(i as u64), len);
            Object { key: format!("obj/{i:02}.bin"), hex: sha_hex(&data), data: Arc::new(data) }
        })
        .collect();
    for o in &objects {
        src.put(&o.key, o.data.as_ref().clone());
        src.set_behavior(&o.key, Behavior::Slow(Duration::from_millis(2)));
    }
    // Uploads: mostly new bytes, plus two concurrent uploads of the same bytes, and one upload of
    // bytes that are also being fetched as an entry.
    let mut uploads: Vec<(Arc<Vec<u8>>, String)> = (0..N_UPLOADS - 2)
        .map(|j| {
            let len = rng.random_range(1024 * 1024..=4 * 1024 * 1024);
            let data = bytes(seed.wrapping_mul(7919).wrapping_add(500 + j as u64), len);
            let hex = sha_hex(&data);
            (Arc::new(data), hex)
        })
        .collect();
    uploads.push(uploads[0].clone());
    let shared = objects.iter().find(|o| o.data.len() >= 1024 * 1024).unwrap_or(&objects[0]);
    uploads.push((Arc::clone(&shared.data), shared.hex.clone()));

    let mut server = Server::start(&d.data, &["--revalidate-after", "1h"]).await;
    tcr(&d.data, &["ns", "create", "crash", "--source", &src.url()]).ok();
    let dead_pid = server.pid;
    let http = client();
    // One upload acknowledged before the traffic starts, so that every iteration checks at least
    // one acknowledged upload, whatever the kill point.
    let early = Arc::new(bytes(seed.wrapping_mul(7919).wrapping_add(499), 1024 * 1024 + 7));
    let early_hex = sha_hex(&early);
    assert_eq!(http_put_blob(&http, &server.base, &early).await, 201);

    // Traffic: two readers per object and every upload, each starting after a little jitter.
    let mut gets = tokio::task::JoinSet::new();
    for o in &objects {
        for _ in 0..2 {
            let (http, url, data) = (http.clone(), server.url(&format!("/ns/crash/{}", o.key)), Arc::clone(&o.data));
            let jitter = Duration::from_millis(rng.random_range(0..100));
            gets.spawn(async move {
                tokio::time::sleep(jitter).await;
                let resp = http.get(&url).send().await.map_err(|e| e.to_string())?;
                let status = resp.status().as_u16();
                let body = resp.bytes().await.map_err(|e| e.to_string())?;
                // A complete 200 before the kill must have the right bytes.
                assert_eq!(status, 200, "GET {url} before the kill");
                assert!(body.as_ref() == data.as_slice(), "GET {url} before the kill returned wrong bytes");
                Ok::<_, String>(())
            });
        }
    }
    let mut puts = tokio::task::JoinSet::new();
    for (data, hex) in &uploads {
        let (http, url, data, hex) =
            (http.clone(), server.url(&format!("/blobs/sha256:{hex}")), Arc::clone(data), hex.clone());
        let jitter = Duration::from_millis(rng.random_range(0..300));
        let chunk_pause = rng.random_bool(0.5);
        puts.spawn(async move {
            tokio::time::sleep(jitter).await;
            // Stream the body in 64 KiB pieces so that uploads are really in flight.
            let pieces: Vec<Vec<u8>> = data.chunks(64 * 1024).map(<[u8]>::to_vec).collect();
            let stream = futures::stream::iter(pieces).then(move |p| async move {
                if chunk_pause {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Ok::<_, std::io::Error>(p)
            });
            let resp = http.put(&url).bearer_auth(WRITE_TOKEN).body(reqwest::Body::wrap_stream(stream)).send().await;
            (hex, resp.map(|r| r.status().as_u16()).map_err(|e| e.to_string()))
        });
    }

    let delay = Duration::from_millis(rng.random_range(50..=500));
    tokio::time::sleep(delay).await;
    server.kill();

    let mut get_ok = 0;
    while let Some(r) = gets.join_next().await {
        match r {
            Ok(Ok(())) => get_ok += 1,
            Ok(Err(_)) => {} // Cut off by the kill.
            Err(panic) => std::panic::resume_unwind(panic.into_panic()),
        }
    }
    let mut acked = std::collections::BTreeSet::from([early_hex.clone()]);
    uploads.push((Arc::clone(&early), early_hex));
    while let Some(r) = puts.join_next().await {
        let (hex, result) = r.expect("upload task");
        match result {
            Ok(201 | 200) => {
                acked.insert(hex);
            }
            Ok(other) => panic!("upload of sha256:{hex} answered {other} before the kill"),
            Err(_) => {} // Cut off by the kill.
        }
    }
    let left_by_dead: Vec<_> = temp_files(&d.data)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{dead_pid}-")))
        .collect();
    eprintln!(
        "  killed after {delay:?}: {get_ok}/{} reads and {}/{} uploads had completed; {} temp files left by the dead server",
        objects.len() * 2,
        acked.len(),
        uploads.len(),
        left_by_dead.len(),
    );

    // Restart on the same data directory, with the source now fast.
    for o in &objects {
        src.set_behavior(&o.key, Behavior::Normal);
    }
    let server = Server::start(&d.data, &["--revalidate-after", "1h"]).await;
    let stale: Vec<_> = temp_files(&d.data)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{dead_pid}-")))
        .collect();
    assert!(stale.is_empty(), "serve did not sweep the dead server's temp files: {stale:?}");

    // verify: clean, without repair.
    let v = tcr(&d.data, &["verify", "--json"]);
    let j = v.json();
    for list in ["corrupt", "missing", "untracked", "wrong_size", "strays", "stale_temp", "index_problems"] {
        assert_eq!(j[list].as_array().map(Vec::len), Some(0), "seed {seed}: verify found {list}: {j}\n{}", v.stderr);
    }
    assert_eq!(v.code, 0, "seed {seed}: verify exit code\n{}", v.stdout);

    // Every blob present has exactly the right bytes (independently of verify).
    let known: std::collections::BTreeSet<&str> =
        objects.iter().map(|o| o.hex.as_str()).chain(uploads.iter().map(|(_, h)| h.as_str())).collect();
    for hex in blob_files(&d.data) {
        assert!(known.contains(hex.as_str()), "seed {seed}: a blob no one fetched or uploaded: {hex}");
        let on_disk = std::fs::read(blob_path(&d.data, &hex)).unwrap();
        assert_eq!(sha_hex(&on_disk), hex, "seed {seed}: blob file {hex} does not hash to its name");
    }

    // Every acknowledged upload survived; every upload that is present has the right bytes.
    for (data, hex) in &uploads {
        let url = server.url(&format!("/blobs/sha256:{hex}"));
        let (status, body) = http_get(&http, &url).await;
        if acked.contains(hex) {
            assert_eq!(status, 200, "seed {seed}: upload sha256:{hex} was acknowledged before the kill but is gone");
        }
        match status {
            200 => assert_eq!(sha_hex(&body), *hex, "seed {seed}: blob sha256:{hex} has the wrong bytes"),
            404 => assert!(!acked.contains(hex)),
            other => panic!("seed {seed}: GET {url} answered {other}"),
        }
        assert_eq!(body.len() == data.len(), status == 200);
    }

    // Every entry reads back with the right bytes (from disk or fetched again).
    let mut reads = tokio::task::JoinSet::new();
    for o in &objects {
        let (http, url, hex) = (http.clone(), server.url(&format!("/ns/crash/{}", o.key)), o.hex.clone());
        reads.spawn(async move {
            let (status, body) = http_get(&http, &url).await;
            (url, status, body, hex)
        });
    }
    while let Some(r) = reads.join_next().await {
        let (url, status, body, want) = r.expect("read task");
        assert_eq!(status, 200, "seed {seed}: GET {url} after restart");
        assert_eq!(sha_hex(&body), want, "seed {seed}: GET {url} after restart returned wrong bytes");
    }
    stats_when_entries(&d.data, N_OBJECTS as u64).await;
    tcr(&d.data, &["verify"]).ok();
    drop(server);
}
