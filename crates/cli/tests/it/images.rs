//! Files inside images over HTTP (`/images/<ns>/<name>:<tag>/files/<path>`), against real parts:
//! images of real tar layers (gzip, zstd in one frame and in many, plain tar; GNU and PAX;
//! whiteouts, opaque directories, hardlinks, symlinks, long and non-UTF-8 names) pushed by
//! skopeo to Debian's docker-registry, read through `tiercache serve`, and compared with the same
//! image unpacked by `umoci unpack`. Then a 200 MiB gzip layer: node B reads a file near its end
//! from the index node A made, fetching a small part of the layer from the registry.

use std::collections::BTreeMap;

use tiercache_testkit::registry::{
    FileFacts, FileImage, FileKind, ProxyAuth, RegistryAuth, RegistryProxy, RegistryServer, big_gzip_layer_image,
    sample, tree_facts, umoci_unpack,
};
use tiercache_testkit::servers;

use crate::common::*;

/// The image's tree as the HTTP API lists it: every path with the facts umoci's tree gives
/// (bytes hashed by a GET of each file), hardlink groups by inode number.
async fn tree_over_http(http: &reqwest::Client, base: &str) -> BTreeMap<Vec<u8>, FileFacts> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<Vec<u8>>> = BTreeMap::new();
    let mut todo: Vec<(Vec<u8>, String)> = vec![(Vec::new(), String::new())];
    while let Some((dir, dir_url)) = todo.pop() {
        let (status, body) = http_get(http, &format!("{base}/{dir_url}?list&limit=100000")).await;
        assert_eq!(status, 200, "{dir_url}: {}", String::from_utf8_lossy(&body));
        let listing: serde_json::Value = serde_json::from_slice(&body).unwrap();
        for e in listing["entries"].as_array().unwrap() {
            let name_url = e["name_url"].as_str().unwrap();
            let name: Vec<u8> = percent_encoding::percent_decode_str(name_url).collect();
            let path = if dir.is_empty() { name.clone() } else { [&dir[..], b"/", &name[..]].concat() };
            let url = if dir_url.is_empty() { name_url.to_owned() } else { format!("{dir_url}/{name_url}") };
            let kind = match e["kind"].as_str().unwrap() {
                "file" => FileKind::File,
                "dir" => FileKind::Dir,
                "symlink" => FileKind::Symlink,
                "char" => FileKind::CharDevice,
                "block" => FileKind::BlockDevice,
                "fifo" => FileKind::Fifo,
                other => panic!("kind {other}"),
            };
            let sha256 = if kind == FileKind::File {
                let (status, bytes) = http_get(http, &format!("{base}/{url}")).await;
                assert_eq!(status, 200, "{url}");
                assert_eq!(bytes.len() as u64, e["size"].as_u64().unwrap(), "{url}");
                Some(digest(&bytes))
            } else {
                None
            };
            if kind == FileKind::Dir {
                todo.push((path.clone(), url.clone()));
            }
            if kind == FileKind::File {
                inodes.entry(e["ino"].as_u64().unwrap()).or_default().push(path.clone());
            }
            let facts = FileFacts {
                kind,
                mode: u32::from_str_radix(e["mode"].as_str().unwrap(), 8).unwrap(),
                uid: e["uid"].as_u64().unwrap() as u32,
                gid: e["gid"].as_u64().unwrap() as u32,
                size_bytes: if kind == FileKind::Dir { 0 } else { e["size"].as_u64().unwrap() },
                mtime: e["mtime"].as_i64().unwrap(),
                link_target: e["link_target"].as_str().map(|t| t.as_bytes().to_vec()),
                device: e["rdev"].as_array().map(|d| (d[0].as_u64().unwrap() as u32, d[1].as_u64().unwrap() as u32)),
                xattrs: BTreeMap::new(),
                sha256,
                hardlink_group: None,
            };
            out.insert(path, facts);
        }
    }
    for paths in inodes.into_values().filter(|p| p.len() > 1) {
        let first = paths.iter().min().unwrap().clone();
        for p in paths {
            out.get_mut(&p).unwrap().hardlink_group = Some(first.clone());
        }
    }
    out
}

/// umoci's facts without what the HTTP listing does not carry (xattrs: the FUSE mount's
/// `getfattr` checks those).
fn comparable(mut facts: BTreeMap<Vec<u8>, FileFacts>) -> BTreeMap<Vec<u8>, FileFacts> {
    for f in facts.values_mut() {
        f.xattrs.clear();
        if f.kind == FileKind::Dir {
            f.size_bytes = 0;
        }
    }
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_file_over_http_is_what_umoci_unpacks() {
    let Some(registry) = servers::or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else {
        return;
    };
    if !tiercache_testkit::registry::is_root() {
        servers::skip_or_fail("images of real files", "building their layers needs root (owners, devices)".into());
        return;
    }
    let image = FileImage::sample().build().unwrap();
    registry.push(&image, "files/sample", "v1").unwrap();
    let unpacked = umoci_unpack(&image).unwrap();
    let expected = comparable(tree_facts(&unpacked.rootfs()).unwrap());

    let d = dirs();
    tcr(&d.data, &["ns", "create", "reg", "--source", &format!("oci+http://{}", registry.host())]).ok();
    // `warm` fetches the image and makes its layers' derivations: the server makes none.
    let warmed = tcr(&d.data, &["warm", "files/sample:v1", "--ns", "reg", "--json"]).ok().json();
    assert_eq!(warmed["layers_indexed"], 4, "{warmed}");
    let server = Server::start(&d.data, &[]).await;
    let http = client();
    let base = server.url("/images/reg/files/sample:v1/files");
    let got = tree_over_http(&http, &base).await;
    let jobs = server.metric("tiercache_derive_jobs_total{outcome=\"done\",recipe=\"tar-index\"}").await;
    assert_eq!(jobs, 0.0, "the layers were indexed by `warm`");
    let (want_paths, got_paths): (Vec<_>, Vec<_>) = (expected.keys().collect(), got.keys().collect());
    assert_eq!(got_paths, want_paths, "the same paths as umoci's tree");
    for (path, want) in &expected {
        assert_eq!(&got[path], want, "{}", String::from_utf8_lossy(path));
    }

    // One file, its ranges, validators and metadata.
    let url = format!("{base}/{}", sample::XATTR_FILE);
    let whole = http.get(&url).send().await.unwrap();
    assert_eq!(whole.status(), 200);
    let etag = whole.headers()["etag"].to_str().unwrap().to_owned();
    let mode = whole.headers()["x-tiercache-file-mode"].to_str().unwrap().to_owned();
    let bytes = whole.bytes().await.unwrap();
    let want = &expected[sample::XATTR_FILE.as_bytes()];
    assert_eq!((digest(&bytes), u32::from_str_radix(&mode, 8).unwrap()), (want.sha256.clone().unwrap(), want.mode));
    let part = http.get(&url).header("range", "bytes=1-3").send().await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"].to_str().unwrap(), format!("bytes 1-3/{}", bytes.len()));
    assert_eq!(part.bytes().await.unwrap(), bytes.slice(1..4));
    let again = http.get(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304, "the ETag is strong and stable");
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(
        (head.status().as_u16(), head.headers()["content-length"].to_str().unwrap()),
        (200, &*bytes.len().to_string())
    );
    let past = http.get(&url).header("range", format!("bytes={}-", bytes.len() + 10)).send().await.unwrap();
    assert_eq!(past.status(), 416);

    // Symlinks are followed inside the image; the link to the long name reads its file.
    let (status, via_link) = http_get(&http, &format!("{base}/{}", sample::GNU_LONG_LINK)).await;
    let target = &expected[sample::GNU_LONG_NAME_KEPT.as_bytes()];
    assert_eq!((status, Some(digest(&via_link))), (200, target.sha256.clone()));
    // Clumsy and hostile requests.
    for (path, status) in [
        ("/images/reg/files/sample:v1/files/no/such/file", 404),
        ("/images/reg/files/sample:v1/files/etc/hostname/below", 404),
        ("/images/reg/files/sample:v1/files/etc/hostname?list", 404),
        ("/images/reg/files/sample:nope/files/etc/hostname", 404),
        ("/images/nons/files/sample:v1/files/etc/hostname", 404),
        ("/images/reg/files/sample/files/etc/hostname", 400),
        ("/images/reg/Files/sample:v1/files/etc/hostname", 400),
        ("/images/reg/files/sample:v1/files/dev/null", 400),
        ("/images/reg/files/sample:v1/files/etc?list&limit=0", 400),
    ] {
        let (got, body) = http_get(&http, &server.url(path)).await;
        assert_eq!(got, status, "{path}: {}", String::from_utf8_lossy(&body));
    }
    let addr = server.base.trim_start_matches("http://").to_owned();
    let (status, body) = raw_get(&addr, "/images/reg/files/sample:v1/files/../../../etc/hostname");
    assert_eq!((status, body.as_str()), (200, "upper\n"), "`..` stops at the image root");
    let put = http_put(&http, &format!("{base}/etc/hostname")).body("x").send().await.unwrap();
    assert_eq!(put.status(), 405);
}

/// The cluster case: node A indexes a 200 MiB gzip layer (fetching it whole, once); node B,
/// sharing A's shared tier, reads files without fetching the layer from the registry (the
/// shared tier holds it), and, once the shared tier has lost the layer, reads a file near its
/// end fetching a small part of it from the registry by ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_reads_files_from_the_index_the_first_made() {
    let Some(registry) = servers::or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else {
        return;
    };
    let big = big_gzip_layer_image(200 << 20, 5).unwrap();
    registry.push(&big.image, "big/layer", "v1").unwrap();
    let proxy = RegistryProxy::start(&registry.url(), ProxyAuth::None).await;
    let shared_dir = tempfile::tempdir().unwrap();
    let shared = format!("fs://{}", shared_dir.path().display());
    let (da, db) = (dirs(), dirs());
    let source = format!("oci+http://{}", proxy.host());
    for d in [&da, &db] {
        tcr(&d.data, &["ns", "create", "reg", "--source", &source]).ok();
    }
    let http = client();
    let needle = format!("/images/reg/big/layer:v1/files/{}", big.needle_path);

    let a = Server::start(&da.data, &["--shared", &shared]).await;
    let first = http.get(a.url(&needle)).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(first.bytes().await.unwrap(), big.needle_bytes);
    assert_eq!(a.metric("tiercache_image_streamed_reads_total").await, 1.0, "read as the layer streamed in");
    // Once indexed, the same file from the index: the same bytes and ETag.
    a.wait_metric("tiercache_derive_records_written_total", 2.0).await;
    let again = http.get(a.url(&needle)).send().await.unwrap();
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(again.bytes().await.unwrap(), big.needle_bytes);
    assert_eq!(a.metric("tiercache_image_streamed_reads_total").await, 1.0);
    let layer = big.layer_digest();
    assert_eq!(proxy.blob_gets(layer), 1, "node A fetched the layer once, to read and index it");
    // The layer is visible in the shared tier once its `.tree` is written, after its bytes.
    let tree = shared_dir.path().join(format!("blobs/sha256/{}.tree", layer.trim_start_matches("sha256:")));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !tree.exists() {
        assert!(std::time::Instant::now() < deadline, "the layer never reached the shared tier:\n{}", a.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Node B: the indexes and the layer come from the shared tier; the registry sends no blob.
    let before = proxy.blob_bytes_total();
    let mut b = Server::start(&db.data, &["--shared", &shared]).await;
    let (status, body) = http_get(&http, &b.url(&needle)).await;
    assert_eq!((status, body == big.needle_bytes), (200, true));
    assert_eq!(proxy.blob_bytes_total(), before, "node B fetched no layer bytes from the registry");
    assert_eq!(b.metric("tiercache_derive_jobs_total{outcome=\"done\",recipe=\"tar-index\"}").await, 0.0);
    b.stop();

    // The shared tier loses the layer (its indexes stay): node C reads the file near the end of
    // the layer by ranged requests, a small part of the layer.
    for entry in std::fs::read_dir(shared_dir.path().join("blobs/sha256")).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with(layer.trim_start_matches("sha256:")) {
            std::fs::remove_file(p).unwrap();
        }
    }
    let dc = dirs();
    tcr(&dc.data, &["ns", "create", "reg", "--source", &source]).ok();
    let c = Server::start(&dc.data, &["--shared", &shared]).await;
    let before = proxy.blob_bytes(layer);
    let (status, body) = http_get(&http, &c.url(&needle)).await;
    assert_eq!((status, body == big.needle_bytes), (200, true));
    let fetched = proxy.blob_bytes(layer) - before;
    let size = big.layer_size_bytes();
    assert!(fetched > 0 && fetched * 20 < size, "fetched {fetched} bytes of a {size}-byte layer");
    assert!(proxy.blob_ranges(layer).iter().skip(1).all(|r| r.is_some()), "only ranged GETs after A's");
}

/// What hostile and clumsy layers give over HTTP: names escaping the root land inside it, a
/// hardlink to a missing file and whiteouts of missing files leave the rest readable, a layer
/// that is not an archive and a truncated one are 502 (and the good layer under them is not
/// served as if it were the image), a 10 GiB sparse file reads its data and holes by ranges,
/// 100 000 files in one directory list page by page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_are_read_inside_the_root_or_refused_clearly() {
    use tiercache_testkit::registry::{TarFormat, bad};
    let Some(registry) = servers::or_skip("docker-registry", RegistryServer::start(RegistryAuth::None)) else {
        return;
    };
    if !tiercache_testkit::registry::is_root() {
        servers::skip_or_fail("images of real files", "building their layers needs root (owners, devices)".into());
        return;
    }
    let images = [
        ("escaping", bad::escaping_names_image()),
        ("hardlink", bad::hardlink_to_missing_image()),
        ("whiteout", bad::whiteout_of_missing_image()),
        ("notar", bad::not_an_archive_image()),
        ("truncated", bad::truncated_gzip_image()),
        ("sparse-gnu", bad::sparse_file_image(TarFormat::Gnu)),
        ("sparse-pax", bad::sparse_file_image(TarFormat::Pax)),
        ("many", bad::many_files_image(100_000)),
    ];
    for (name, image) in &images {
        registry.push(image.as_ref().unwrap(), &format!("bad/{name}"), "v1").unwrap();
    }
    let d = dirs();
    tcr(&d.data, &["ns", "create", "reg", "--source", &format!("oci+http://{}", registry.host())]).ok();
    let server = Server::start(&d.data, &[]).await;
    let http = client();
    let get = async |image: &str, path: &str| {
        http_get(&http, &server.url(&format!("/images/reg/bad/{image}:v1/files/{path}"))).await
    };

    for image in ["escaping", "hardlink", "whiteout"] {
        assert_eq!(get(image, bad::BASE_FILE).await, (200, bad::BASE_BYTES.to_vec()), "{image}");
    }
    for path in ["etc/passwd", "abs/path", "escaped", "ok/file"] {
        assert_eq!(get("escaping", path).await.0, 200, "{path} is inside the image root");
    }
    assert_eq!(get("hardlink", "links/dangling").await.0, 404, "a hardlink to nothing is left out");
    assert_eq!(get("whiteout", "base/after.txt").await.0, 200);
    for image in ["notar", "truncated"] {
        let (status, body) = get(image, bad::BASE_FILE).await;
        assert_eq!(status, 502, "{image}: {}", String::from_utf8_lossy(&body));
    }

    for image in ["sparse-gnu", "sparse-pax"] {
        let url = server.url(&format!("/images/reg/bad/{image}:v1/files/{}", bad::SPARSE_FILE));
        let head = http.head(&url).send().await.unwrap();
        assert_eq!(head.headers()["content-length"].to_str().unwrap(), bad::SPARSE_SIZE_BYTES.to_string(), "{image}");
        for &(at, bytes) in bad::SPARSE_WRITES {
            let range = format!("bytes={}-{}", at.saturating_sub(4), at + bytes.len() as u64 - 1);
            let got = http.get(&url).header("range", range).send().await.unwrap();
            assert_eq!(got.status(), 206);
            let want: Vec<u8> = [&[0u8; 4][..(at.min(4) as usize)], bytes].concat();
            assert_eq!(got.bytes().await.unwrap(), want, "{image} at {at}");
        }
        let hole = http.get(&url).header("range", "bytes=1000000-1000999").send().await.unwrap();
        assert_eq!(hole.bytes().await.unwrap(), vec![0u8; 1000], "a hole reads as zeros");
    }

    let mut n = 0;
    let mut after = String::new();
    loop {
        let path = format!("/images/reg/bad/many:v1/files/{}?list&limit=30000&after={after}", bad::MANY_DIR);
        let (status, body) = http_get(&http, &server.url(&path)).await;
        assert_eq!(status, 200);
        let page: serde_json::Value = serde_json::from_slice(&body).unwrap();
        n += page["entries"].as_array().unwrap().len();
        match page["next_after"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(n, 100_000);
    let (path, bytes) = bad::many_file(99_999);
    assert_eq!(get("many", &path).await, (200, bytes));
}
