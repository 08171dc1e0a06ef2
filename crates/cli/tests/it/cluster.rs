//! A cluster: three real `tiercache serve` processes with their own data directories, sharing one
//! shared tier on a real store (an S3-compatible server, and Redis), in front of one real HTTP
//! source that counts requests. The same scenarios run on each store: blobs shared by digest
//! ([`scenario`]), and entries shared through their records ([`entries_scenario`]).

use tiercache_testkit::servers::{self, RedisServer, S3Server};
use tiercache_testkit::{Source, bytes};

use crate::common::*;

const MIB: usize = 1 << 20;
/// The shared tier's chunk size (the default).
const CHUNK: usize = MIB;

/// How a scenario reaches its store: the `--shared` URL, the environment for it, and ways to
/// damage an object and to kill the store.
trait Store {
    fn url(&self) -> String;
    fn env(&self) -> Vec<(&'static str, String)>;
    /// Flips one byte at `offset` of the shared tier's object for blob `hex`.
    fn corrupt(&self, hex: &str, offset: usize);
    fn kill(&mut self);
}

struct S3 {
    server: S3Server,
}

impl Store for S3 {
    fn url(&self) -> String {
        format!("s3://{}/cluster?endpoint={}&region={}", S3Server::BUCKET, self.server.endpoint(), self.server.region())
    }
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.server.access_key().to_owned()),
            ("AWS_SECRET_ACCESS_KEY", self.server.secret_key().to_owned()),
        ]
    }
    fn corrupt(&self, hex: &str, offset: usize) {
        let path = self.server.object_path(S3Server::BUCKET, &format!("cluster/blobs/sha256/{hex}"));
        let mut data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        data[offset] ^= 0x5a;
        std::fs::write(&path, data).unwrap();
    }
    fn kill(&mut self) {
        self.server.kill();
    }
}

struct Redis {
    server: RedisServer,
}

impl Store for Redis {
    fn url(&self) -> String {
        self.server.url()
    }
    fn env(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    fn corrupt(&self, hex: &str, offset: usize) {
        // The key of the blob object (not its `.chunks` side object), wherever OpenDAL roots it.
        let keys = self.server.command(&[b"KEYS", format!("*{hex}").as_bytes()]).unwrap();
        let keys = String::from_utf8_lossy(&keys).into_owned();
        let key = keys.lines().find(|l| l.ends_with(hex)).unwrap_or_else(|| panic!("no key for {hex}: {keys:?}"));
        let at = offset.to_string();
        let byte = self.server.command(&[b"GETRANGE", key.as_bytes(), at.as_bytes(), at.as_bytes()]).unwrap();
        // Reply: "$1\r\n<byte>\r\n".
        let flipped = [byte[4] ^ 0x5a];
        let r = self.server.command(&[b"SETRANGE", key.as_bytes(), at.as_bytes(), &flipped]).unwrap();
        assert!(r.starts_with(b":"), "SETRANGE answered {:?}", String::from_utf8_lossy(&r));
    }
    fn kill(&mut self) {
        self.server.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_on_s3() {
    let Some(server) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    scenario(S3 { server }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_on_redis() {
    let Some(server) = servers::or_skip("Redis", RedisServer::start()) else { return };
    scenario(Redis { server }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_shares_entries_on_s3() {
    let Some(server) = servers::or_skip("S3-compatible server (s3s-fs)", S3Server::start()) else { return };
    entries_scenario(S3 { server }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_shares_entries_on_redis() {
    let Some(server) = servers::or_skip("Redis", RedisServer::start()) else { return };
    entries_scenario(Redis { server }).await;
}

struct Node {
    server: Server,
    dirs: Dirs,
}

async fn node(store: &dyn Store, source: &Source) -> Node {
    node_with(store, source, "web", "1h").await
}

/// A node whose namespace `ns` is bound to `source`, revalidating entries older than `revalidate`.
async fn node_with(store: &dyn Store, source: &Source, ns: &str, revalidate: &str) -> Node {
    let d = dirs();
    tcr(&d.data, &["ns", "create", ns, "--source", &source.url()]).ok();
    let env = store.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let url = store.url();
    let server = Server::start_with_env(&d.data, &["--shared", &url, "--revalidate-after", revalidate], &env).await;
    Node { server, dirs: d }
}

struct Got {
    status: u16,
    tier: String,
    digest: String,
    body: Vec<u8>,
}

async fn get(client: &reqwest::Client, url: &str, range: Option<&str>) -> Got {
    let mut req = client.get(url);
    if let Some(r) = range {
        req = req.header("range", r);
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let (status, tier, digest) = (resp.status().as_u16(), header("x-tiercache-tier"), header("x-tiercache-digest"));
    let body = resp.bytes().await.unwrap_or_else(|e| panic!("GET {url} body: {e}")).to_vec();
    Got { status, tier, digest, body }
}

/// The source's requests for `path`, of any kind.
fn source_requests(source: &Source, path: &str) -> u64 {
    let c = source.counts(path);
    c.full + c.ranged + c.head
}

const DONE: &str = "tiercache_shared_write_backs_total{result=\"done\"}";
const FILLED: &str = "tiercache_blobs_stored_total{origin=\"shared\"}";
const CORRUPT: &str = "tiercache_shared_corrupt_total";

async fn scenario(mut store: impl Store) {
    let source = Source::start().await;
    let layer = bytes(400, 5 * CHUNK + 12_345);
    source.put("layer.bin", layer.clone());
    let (a, b, c) = (node(&store, &source).await, node(&store, &source).await, node(&store, &source).await);
    let http = client();

    // Node A, cold: one source fetch, then a write-back to the shared tier.
    let got = get(&http, &a.server.url("/ns/web/layer.bin"), None).await;
    assert_eq!((got.status, got.tier.as_str()), (200, "source"));
    assert!(got.body == layer);
    assert_eq!(source_requests(&source, "layer.bin"), 1);
    a.server.wait_metric(DONE, 1.0).await;
    let layer_digest = digest(&layer);
    let blob = format!("/blobs/{layer_digest}");

    // Nodes B and C read the same blob, a 4 KiB range and whole: served by the shared tier, and
    // the source still saw one request in all.
    let at = 2 * CHUNK + 1000;
    let range = format!("bytes={at}-{}", at + 4095);
    for n in [&b, &c] {
        let got = get(&http, &n.server.url(&blob), Some(&range)).await;
        assert_eq!((got.status, got.tier.as_str(), got.digest.as_str()), (206, "shared", layer_digest.as_str()));
        assert!(got.body == layer[at..at + 4096], "the 4 KiB range");
        let got = get(&http, &n.server.url(&blob), None).await;
        assert_eq!(got.status, 200);
        assert!(got.body == layer, "the whole blob");
    }
    assert_eq!(source_requests(&source, "layer.bin"), 1, "B and C never asked the source");

    // Their disk tiers fill in the background; then they serve it themselves.
    for n in [&b, &c] {
        n.server.wait_metric(FILLED, 1.0).await;
        let got = get(&http, &n.server.url(&blob), Some("bytes=0-4095")).await;
        assert_eq!((got.status, got.tier.as_str()), (206, "disk"));
        assert!(got.body == layer[..4096]);
    }
    // A's repeat is a disk hit.
    let got = get(&http, &a.server.url("/ns/web/layer.bin"), None).await;
    assert_eq!((got.status, got.tier.as_str()), (200, "disk"));
    assert_eq!(source_requests(&source, "layer.bin"), 1);

    // A corrupted object is detected and never served. Damage chunk 1 of a second blob.
    let second = bytes(401, 3 * CHUNK + 77);
    source.put("second.bin", second.clone());
    assert_eq!(get(&http, &a.server.url("/ns/web/second.bin"), None).await.status, 200);
    a.server.wait_metric(DONE, 2.0).await;
    let second_digest = digest(&second);
    store.corrupt(&second_digest["sha256:".len()..], CHUNK + 10);
    let wanted = format!("bytes={}-{}", CHUNK, CHUNK + 4095);
    let got = get(&http, &b.server.url(&format!("/blobs/{second_digest}")), Some(&wanted)).await;
    assert_eq!(got.status, 404, "a corrupt chunk is a miss; a blob read has no source to go on to");
    assert!(b.server.metric(CORRUPT).await >= 1.0);
    // The damaged pair was deleted: a whole read misses too, and the entry read goes to the source.
    assert_eq!(get(&http, &c.server.url(&format!("/blobs/{second_digest}")), None).await.status, 404);
    let got = get(&http, &b.server.url("/ns/web/second.bin"), None).await;
    assert_eq!((got.status, got.tier.as_str()), (200, "source"));
    assert!(got.body == second);

    // Damage further into a third blob: a whole read starts (chunk 0 verifies), then fails at the
    // damaged chunk. The client gets an error or a short body, never a wrong byte.
    let third = bytes(402, 3 * CHUNK + 5);
    source.put("third.bin", third.clone());
    assert_eq!(get(&http, &a.server.url("/ns/web/third.bin"), None).await.status, 200);
    a.server.wait_metric(DONE, 3.0).await;
    let third_digest = digest(&third);
    store.corrupt(&third_digest["sha256:".len()..], 2 * CHUNK + 3);
    let resp = http.get(c.server.url(&format!("/blobs/{third_digest}"))).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut received = Vec::new();
    let mut stream = resp;
    let mut failed = false;
    loop {
        match stream.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed || received.len() < third.len(), "the damaged body must not complete");
    assert!(third.starts_with(&received), "every byte received is right ({} of them)", received.len());

    // Kill the store: every node keeps serving, via its disk or the source, with no client error.
    store.kill();
    let other = bytes(403, 2 * MIB);
    source.put("other.bin", other.clone());
    for n in [&a, &b, &c] {
        let got = get(&http, &n.server.url("/ns/web/layer.bin"), None).await;
        assert_eq!(got.status, 200);
        assert!(got.body == layer);
        for _ in 0..2 {
            let got = get(&http, &n.server.url("/ns/web/other.bin"), None).await;
            assert_eq!(got.status, 200, "{}", n.server.log_text());
            assert!(got.body == other);
        }
    }
    let got = get(&http, &b.server.url(&blob), None).await;
    assert_eq!((got.status, got.tier.as_str()), (200, "disk"));
    // B and C never had layer.bin's entry, so they fetched it from the source now (once each);
    // other.bin was fetched once per node. The failures are counted, not hidden.
    assert_eq!(source_requests(&source, "other.bin"), 3);
    for n in [&b, &c] {
        n.server.wait_metric("tiercache_shared_write_backs_total{result=\"failed\"}", 1.0).await;
    }

    // `stats` shows the shared tier's counters, summed in the index.
    let data_b = b.dirs.data.clone();
    let mut b = b;
    b.server.stop();
    let o = tcr(&data_b, &["stats", "--json"]).ok();
    let shared = &o.json()["shared"];
    assert!(shared["hits"].as_i64().unwrap() >= 2, "{shared}");
    assert!(shared["corrupt"].as_i64().unwrap() >= 1, "{shared}");
    assert!(shared["write_backs_failed"].as_i64().unwrap() >= 1, "{shared}");
    let o = tcr(&data_b, &["stats"]).ok();
    assert!(o.stdout.contains("shared tier:"), "{}", o.stdout);
}

const RECORD_WRITES: &str = "tiercache_shared_record_writes_total";

/// Prints what the source saw for `path`, and returns it.
fn source_counts(source: &Source, path: &str, when: &str) -> tiercache_testkit::Counts {
    let c = source.counts(path);
    println!(
        "{when}: source requests for {path}: {} GET ({} answered 304), {} ranged GET, {} HEAD",
        c.full, c.not_modified, c.ranged, c.head
    );
    c
}

/// Entries shared through their records: A's cold read is the one source GET; B (the same
/// namespace) and C (a namespace named differently, over the same source URL) read the entry
/// whole, as a 4 KiB range and by HEAD without asking the source; past its freshness window B
/// revalidates with one conditional request (304); a changed source gives B the new bytes.
async fn entries_scenario(store: impl Store) {
    let source = Source::start().await;
    let layer = bytes(410, 3 * CHUNK + 4321);
    source.put("layer.tar", layer.clone());
    // B's window is short, so that the test can go past it; it is long enough for B's first reads,
    // which follow A's record at once.
    const WINDOW: &str = "4s";
    let a = node_with(&store, &source, "img", "1h").await;
    let b = node_with(&store, &source, "img", WINDOW).await;
    let c = node_with(&store, &source, "images", "1h").await;
    let http = client();

    // A, cold: one source GET; its record follows the blob's write-back.
    let got = get(&http, &a.server.url("/ns/img/layer.tar"), None).await;
    assert_eq!((got.status, got.tier.as_str()), (200, "source"));
    assert!(got.body == layer);
    a.server.wait_metric(RECORD_WRITES, 1.0).await;

    // B and C: whole, a 4 KiB range, and a HEAD, without a source request.
    let at = CHUNK + 100;
    let range = format!("bytes={at}-{}", at + 4095);
    let got = get(&http, &b.server.url("/ns/img/layer.tar"), None).await;
    assert_eq!((got.status, got.tier.as_str(), got.digest.as_str()), (200, "shared", digest(&layer).as_str()));
    assert!(got.body == layer, "B: the whole entry");
    let got = get(&http, &b.server.url("/ns/img/layer.tar"), Some(&range)).await;
    assert_eq!(got.status, 206);
    assert!(got.body == layer[at..at + 4096], "B: the 4 KiB range");
    let head = http.head(c.server.url("/ns/images/layer.tar")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"].to_str().unwrap(), layer.len().to_string());
    let got = get(&http, &c.server.url("/ns/images/layer.tar"), Some(&range)).await;
    assert_eq!((got.status, got.tier.as_str()), (206, "shared"));
    assert!(got.body == layer[at..at + 4096], "C: the 4 KiB range");
    let got = get(&http, &c.server.url("/ns/images/layer.tar"), None).await;
    assert_eq!(got.status, 200);
    assert!(got.body == layer, "C: the whole entry");
    let counts = source_counts(&source, "layer.tar", "after A, B and C read");
    assert_eq!((counts.full, counts.ranged, counts.head, counts.not_modified), (1, 0, 0, 0), "one source GET in all");
    assert!(b.server.metric("tiercache_shared_record_lookups_total{outcome=\"hit\"}").await >= 1.0);
    assert!(c.server.metric("tiercache_shared_record_lookups_total{outcome=\"hit\"}").await >= 1.0);

    // Past B's window: B asks the source once, conditionally, and gets a 304. Until then, B's
    // reads are served without asking.
    wait_until("B revalidated", async || {
        let got = get(&http, &b.server.url("/ns/img/layer.tar"), None).await;
        assert!(got.status == 200 && got.body == layer, "B serves the right bytes while waiting");
        source.counts("layer.tar").not_modified == 1
    })
    .await;
    let counts = source_counts(&source, "layer.tar", "after B's revalidation");
    assert_eq!((counts.full, counts.ranged, counts.head, counts.not_modified), (2, 0, 0, 1), "one conditional GET");

    // The source object changes: past the window, B's conditional request gets the new bytes,
    // and B never serves the old ones after that.
    let changed = bytes(411, 2 * CHUNK + 9);
    source.put("layer.tar", changed.clone());
    wait_until("B asked the source again", async || {
        let got = get(&http, &b.server.url("/ns/img/layer.tar"), None).await;
        assert_eq!(got.status, 200);
        let asked = source.counts("layer.tar").full == 3;
        if asked {
            assert_eq!(got.tier, "source");
            assert!(got.body == changed, "the revalidating read gets the new bytes");
        } else {
            assert!(got.body == layer, "within the window, the version last confirmed");
        }
        asked
    })
    .await;
    let got = get(&http, &b.server.url("/ns/img/layer.tar"), None).await;
    assert!(got.status == 200 && got.body == changed, "never the old bytes again");
    let counts = source_counts(&source, "layer.tar", "after the source changed");
    assert_eq!((counts.full, counts.not_modified), (3, 1));

    // `stats` shows the record lookups.
    let mut c = c;
    c.server.stop();
    let o = tcr(&c.dirs.data, &["stats"]).ok();
    assert!(o.stdout.contains("entry records: 1 hits, 0 stale, 0 misses, 0 errors"), "{}", o.stdout);
}
