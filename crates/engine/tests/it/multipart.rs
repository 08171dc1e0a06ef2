//! Multipart uploads against real files: parts stored as they arrive, the part list checked at
//! completion, the object assembled and verified, abandoned uploads pruned, and what a failure or
//! a restart leaves behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use md5::Digest as _;
use tiercache_engine::{Cache, CacheConfig, Digest, Error, ListRequest, PruneOptions, UploadId, UploadMeta};

use super::{bounded, collect};

const MIB: usize = 1 << 20;

async fn open(data: &Path, tune: impl FnOnce(&mut CacheConfig)) -> Cache {
    let mut cfg = CacheConfig::new(data);
    tune(&mut cfg);
    Cache::open(cfg).await.unwrap()
}

/// A cache over a fresh data directory with a namespace `bucket` without a source.
async fn setup(tune: impl FnOnce(&mut CacheConfig)) -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir.path().join("data"), tune).await;
    cache.create_namespace("bucket", None, &Default::default()).await.unwrap();
    (dir, cache)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// `data` as a body of 64 KiB chunks.
fn body(data: &[u8]) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let chunks: Vec<Result<Bytes, std::io::Error>> =
        data.chunks(64 * 1024).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    futures::stream::iter(chunks)
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

fn upload_dir(cache: &Cache, id: &UploadId) -> PathBuf {
    cache.data_dir().join("uploads").join(id.as_str())
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|d| d.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

async fn put(cache: &Cache, id: &UploadId, n: u32, data: &[u8]) -> String {
    let part = cache.put_part(id, n, body(data), None).await.unwrap();
    assert_eq!((part.part_number, part.size_bytes, part.md5.as_str()), (n, data.len() as u64, md5_hex(data).as_str()));
    part.md5
}

#[tokio::test]
async fn three_parts_assemble_into_one_entry_with_the_multipart_etag() {
    let (_d, cache) = setup(|_| {}).await;
    let meta = UploadMeta { content_type: Some("video/mp4".into()), ..Default::default() };
    let id = cache.create_upload("bucket", "movies/a.mp4", meta).await.unwrap();
    let parts = [pattern(5 * MIB, 1), pattern(5 * MIB, 2), vec![7u8]];
    let mut list = Vec::new();
    // Uploaded out of order: the list decides the order.
    for (n, data) in [(3u32, &parts[2]), (1, &parts[0]), (2, &parts[1])] {
        list.push((n, format!("\"{}\"", put(&cache, &id, n, data).await)));
    }
    list.sort();
    let done = cache.complete_upload(&id, &list).await.unwrap();

    let whole = parts.concat();
    let mut raw = Vec::new();
    for p in &parts {
        raw.extend_from_slice(&md5::Md5::digest(p));
    }
    let etag = format!("{}-3", hex::encode(md5::Md5::digest(&raw)));
    assert_eq!(done.etag, etag);
    assert_eq!((done.digest, done.size_bytes), (Digest::of(&whole), whole.len() as u64));
    assert_eq!((done.namespace.as_str(), done.key.as_str()), ("bucket", "movies/a.mp4"));
    assert_eq!(done.meta.content_type.as_deref(), Some("video/mp4"));

    let read = cache.read_entry("bucket", "movies/a.mp4").await.unwrap();
    assert_eq!(read.meta.etag.as_deref(), Some(format!("\"{etag}\"").as_str()));
    assert_eq!(read.meta.content_type.as_deref(), Some("video/mp4"));
    assert_eq!(read.meta.digest, Some(Digest::of(&whole)));
    assert!(collect(read, None).await.unwrap() == whole, "the object is the parts in order");
    assert_eq!(cache.stats(None).await.unwrap().stats.n_entries, 1);
    let page = cache.list("bucket", ListRequest { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.items.iter().map(|i| i.md5.as_deref()).collect::<Vec<_>>(), [Some(etag.as_str())]);

    assert!(!upload_dir(&cache, &id).exists(), "the parts are removed after");
    assert!(matches!(cache.upload(&id).await, Err(Error::NoSuchUpload { .. })));
    assert!(cache.list_uploads("bucket", "", None, 100).await.unwrap().uploads.is_empty());
    cache.settle().await.unwrap();
    // A plain write of the key answers the new bytes' MD5 again.
    cache.put_entry("bucket", b"movies/a.mp4", body(b"plain")).await.unwrap();
    let read = cache.read_entry("bucket", "movies/a.mp4").await.unwrap();
    assert_eq!(read.meta.etag.as_deref(), Some(format!("\"{}\"", md5_hex(b"plain")).as_str()));
}

#[tokio::test]
async fn a_part_uploaded_again_replaces_the_first() {
    let (_d, cache) = setup(|_| {}).await;
    let id = cache.create_upload("bucket", "k", UploadMeta::default()).await.unwrap();
    let first = put(&cache, &id, 1, b"first version").await;
    let second = put(&cache, &id, 1, b"second").await;
    let page = cache.list_parts(&id, 0, 100).await.unwrap();
    assert_eq!(page.parts.len(), 1);
    assert_eq!((page.parts[0].md5.as_str(), page.parts[0].size_bytes), (second.as_str(), 6));
    assert_eq!(files_in(&upload_dir(&cache, &id)).len(), 1, "the first part's file is gone");
    let stale = cache.complete_upload(&id, &[(1, first)]).await;
    assert!(matches!(stale, Err(Error::InvalidPart { part_number: 1, .. })), "{stale:?}");
    cache.complete_upload(&id, &[(1, second)]).await.unwrap();
    let read = cache.read_entry("bucket", "k").await.unwrap();
    assert_eq!(collect(read, None).await.unwrap(), b"second");
}

#[tokio::test]
async fn bad_part_lists_are_refused_and_keep_the_upload() {
    let (_d, cache) = setup(|_| {}).await;
    let id = cache.create_upload("bucket", "k", UploadMeta::default()).await.unwrap();
    let big = pattern(5 * MIB, 3);
    let e1 = put(&cache, &id, 1, &big).await;
    let e2 = put(&cache, &id, 2, b"small").await;
    let e3 = put(&cache, &id, 3, b"tail").await;
    let cases: Vec<(&str, Vec<(u32, String)>)> = vec![
        ("out of order", vec![(2, e2.clone()), (1, e1.clone())]),
        ("repeated", vec![(1, e1.clone()), (1, e1.clone())]),
        ("missing", vec![(1, e1.clone()), (4, e3.clone())]),
        ("wrong etag", vec![(1, e2.clone())]),
        ("too small", vec![(1, e1.clone()), (2, e2.clone()), (3, e3.clone())]),
        ("empty", vec![]),
    ];
    for (what, list) in cases {
        let got = cache.complete_upload(&id, &list).await;
        let ok = match what {
            "out of order" | "repeated" => matches!(got, Err(Error::InvalidPartOrder { .. })),
            "missing" => matches!(got, Err(Error::InvalidPart { part_number: 4, .. })),
            "wrong etag" => matches!(got, Err(Error::InvalidPart { part_number: 1, .. })),
            "too small" => matches!(got, Err(Error::EntityTooSmall { part_number: 2, size_bytes: 5, .. })),
            _ => matches!(got, Err(Error::Invalid(_))),
        };
        assert!(ok, "{what}: {got:?}");
    }
    assert!(matches!(cache.read_entry("bucket", "k").await, Err(Error::NoEntry { .. })));
    assert_eq!(cache.list_parts(&id, 0, 100).await.unwrap().parts.len(), 3, "the upload is intact");
    // The last part may be small, and parts may be left out.
    let done = cache.complete_upload(&id, &[(1, e1), (3, e3)]).await.unwrap();
    assert_eq!(done.size_bytes, big.len() as u64 + 4);
    assert!(done.etag.ends_with("-2"));
    assert!(!upload_dir(&cache, &id).exists(), "the part left out is removed too");
    let bad = [(0u32, "x"), (10_001, "x")];
    let id = cache.create_upload("bucket", "k2", UploadMeta::default()).await.unwrap();
    for (n, _) in bad {
        assert!(matches!(cache.put_part(&id, n, body(b"x"), None).await, Err(Error::Invalid(_))));
    }
}

#[tokio::test]
async fn an_md5_mismatch_or_a_failed_body_stores_nothing_and_keeps_the_earlier_part() {
    let (_d, cache) = setup(|_| {}).await;
    let id = cache.create_upload("bucket", "k", UploadMeta::default()).await.unwrap();
    let good = put(&cache, &id, 1, b"good part").await;
    let wrong: [u8; 16] = md5::Md5::digest(b"something else").into();
    let got = cache.put_part(&id, 1, body(b"bad part"), Some(wrong)).await;
    assert!(matches!(&got, Err(Error::BadDigest { expected, .. }) if *expected == hex::encode(wrong)), "{got:?}");
    let right: [u8; 16] = md5::Md5::digest(b"checked").into();
    assert_eq!(cache.put_part(&id, 2, body(b"checked"), Some(right)).await.unwrap().md5, md5_hex(b"checked"));

    let failing = futures::stream::iter(vec![
        Ok(Bytes::from(pattern(3 * MIB, 9))),
        Err(std::io::Error::other("client went away")),
    ]);
    let got = cache.put_part(&id, 1, failing, None).await;
    assert!(matches!(got, Err(Error::UploadBody { .. })), "{got:?}");

    let page = cache.list_parts(&id, 0, 100).await.unwrap();
    assert_eq!(page.parts.iter().map(|p| p.md5.clone()).collect::<Vec<_>>(), [good, md5_hex(b"checked")]);
    let files = files_in(&upload_dir(&cache, &id));
    assert_eq!(files.len(), 2, "no temp file or partial part is left: {files:?}");
    assert!(files.iter().all(|f| !f.ends_with(".part")), "{files:?}");
    assert_eq!(cache.quota_stats().reserved_bytes, 0);
}

#[tokio::test]
async fn abort_frees_the_parts_and_their_quota() {
    let (_d, cache) = setup(|c| c.disk.quota_bytes = Some(64 << 20)).await;
    let id = cache.create_upload("bucket", "k", UploadMeta::default()).await.unwrap();
    put(&cache, &id, 1, &pattern(5 * MIB, 1)).await;
    put(&cache, &id, 2, &pattern(MIB, 2)).await;
    let q = cache.quota_stats();
    assert_eq!((q.used_bytes, q.reserved_bytes), (6 * MIB as u64, 0), "the parts count as used");
    // Replacing a part counts the new one instead of the old.
    put(&cache, &id, 2, &pattern(2 * MIB, 3)).await;
    assert_eq!(cache.quota_stats().used_bytes, 7 * MIB as u64);
    cache.abort_upload(&id).await.unwrap();
    let q = cache.quota_stats();
    assert_eq!((q.used_bytes, q.reserved_bytes), (0, 0));
    assert!(!upload_dir(&cache, &id).exists());
    assert!(matches!(cache.abort_upload(&id).await, Err(Error::NoSuchUpload { .. })));
    assert!(matches!(cache.put_part(&id, 1, body(b"late"), None).await, Err(Error::NoSuchUpload { .. })));
    assert!(matches!(cache.complete_upload(&id, &[(1, "x".into())]).await, Err(Error::NoSuchUpload { .. })));
    assert!(matches!(cache.list_parts(&id, 0, 10).await, Err(Error::NoSuchUpload { .. })));
    assert!(matches!(UploadId::parse("not-an-id"), Err(Error::NoSuchUpload { .. })));
}

#[tokio::test]
async fn the_quota_counts_a_completed_object_once() {
    let (_d, cache) = setup(|c| c.disk.quota_bytes = Some(64 << 20)).await;
    let id = cache.create_upload("bucket", "k", UploadMeta::default()).await.unwrap();
    let e1 = put(&cache, &id, 1, &pattern(5 * MIB, 1)).await;
    let e2 = put(&cache, &id, 2, &pattern(MIB, 2)).await;
    put(&cache, &id, 3, &pattern(MIB, 3)).await; // Left out of the object.
    cache.complete_upload(&id, &[(1, e1), (2, e2)]).await.unwrap();
    let q = cache.quota_stats();
    assert_eq!((q.used_bytes, q.reserved_bytes), (6 * MIB as u64, 0));
}

#[tokio::test]
async fn a_disk_quota_too_small_for_a_part_is_a_clear_error_and_leaves_nothing() {
    let (_d, cache) = setup(|c| c.disk.quota_bytes = Some(2 << 20)).await;
    let id = cache.create_upload("bucket", "k", UploadMeta::default()).await.unwrap();
    let got = cache.put_part(&id, 1, body(&pattern(5 * MIB, 1)), None).await;
    assert!(matches!(&got, Err(Error::StorageFull { what, .. }) if what.contains("quota")), "{got:?}");
    assert!(files_in(&upload_dir(&cache, &id)).is_empty());
    assert!(cache.list_parts(&id, 0, 10).await.unwrap().parts.is_empty());
    let q = cache.quota_stats();
    assert_eq!((q.used_bytes, q.reserved_bytes), (0, 0));
}

#[tokio::test]
async fn two_completes_at_once_one_wins_the_other_finds_no_upload() {
    let (_d, cache) = setup(|_| {}).await;
    let id = cache.create_upload("bucket", "k", UploadMeta::default()).await.unwrap();
    let e1 = put(&cache, &id, 1, &pattern(5 * MIB, 1)).await;
    let e2 = put(&cache, &id, 2, b"end").await;
    let list = vec![(1, e1), (2, e2)];
    let (a, b) = {
        let (c1, c2, i1, i2, l1, l2) = (cache.clone(), cache.clone(), id.clone(), id.clone(), list.clone(), list);
        let t1 = tokio::spawn(async move { c1.complete_upload(&i1, &l1).await });
        let t2 = tokio::spawn(async move { c2.complete_upload(&i2, &l2).await });
        bounded(async { (t1.await.unwrap(), t2.await.unwrap()) }).await
    };
    let n_ok = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(n_ok, 1, "{a:?} {b:?}");
    assert!([&a, &b].iter().any(|r| matches!(r, Err(Error::NoSuchUpload { .. }))), "{a:?} {b:?}");
    assert_eq!(cache.stats(None).await.unwrap().stats.n_entries, 1);
    assert!(!upload_dir(&cache, &id).exists());
}

#[tokio::test]
async fn an_upload_survives_reopening_the_cache_and_a_crash_leaves_only_what_the_sweep_removes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let quota = |c: &mut CacheConfig| c.disk.quota_bytes = Some(64 << 20);
    let cache = open(&data, quota).await;
    cache.create_namespace("bucket", None, &Default::default()).await.unwrap();
    let id = cache.create_upload("bucket", "k", UploadMeta::default()).await.unwrap();
    let first = pattern(5 * MIB, 1);
    let e1 = put(&cache, &id, 1, &first).await;
    cache.shutdown().await.unwrap();
    drop(cache);
    // What a writer killed mid-part leaves (4194305 is above Linux's largest pid), and a part
    // file renamed into place whose row was never written.
    let updir = data.join("uploads").join(id.as_str());
    std::fs::write(updir.join("4194305-0123456789abcdef.part"), b"half a part").unwrap();
    std::fs::write(updir.join("2-0123456789abcdef"), b"unrecorded").unwrap();
    // And an upload directory whose row was never written.
    let stray = data.join("uploads").join("0123456789abcdef0123456789abcdef");
    std::fs::create_dir(&stray).unwrap();

    let cache = open(&data, quota).await;
    assert_eq!(files_in(&updir).len(), 1, "only the recorded part is left");
    assert!(!stray.exists());
    assert_eq!(cache.quota_stats().used_bytes, first.len() as u64, "the part counts at open");
    let info = cache.upload(&id).await.unwrap();
    assert_eq!((info.namespace.as_str(), info.key.as_str()), ("bucket", "k"));
    let e2 = put(&cache, &id, 2, b"after the restart").await;
    cache.complete_upload(&id, &[(1, e1), (2, e2)]).await.unwrap();
    let read = cache.read_entry("bucket", "k").await.unwrap();
    assert!(collect(read, None).await.unwrap() == [&first[..], b"after the restart"].concat());
}

#[tokio::test]
async fn the_pruner_removes_an_old_upload_and_keeps_a_young_one() {
    let (_d, cache) = setup(|c| c.multipart_max_age = Duration::from_secs(7 * 24 * 3600)).await;
    let old = cache.create_upload("bucket", "old", UploadMeta::default()).await.unwrap();
    let young = cache.create_upload("bucket", "young", UploadMeta::default()).await.unwrap();
    put(&cache, &old, 1, b"abandoned").await;
    put(&cache, &young, 1, b"in progress").await;
    cache.backdate_upload(&old, Duration::from_secs(8 * 24 * 3600)).await.unwrap();

    let dry = cache.prune(&PruneOptions { uploads: true, dry_run: true, ..Default::default() }).await.unwrap();
    assert_eq!(dry.n_uploads, 1);
    assert!(cache.upload(&old).await.is_ok(), "a dry run removes nothing");
    let report = cache.prune(&PruneOptions { uploads: true, ..Default::default() }).await.unwrap();
    assert_eq!(report.n_uploads, 1);
    let item = report.items.iter().find(|i| i.kind == "upload").unwrap();
    assert_eq!((item.key.as_deref(), item.bytes), (Some("old"), 9));
    assert!(matches!(cache.upload(&old).await, Err(Error::NoSuchUpload { .. })));
    assert!(!upload_dir(&cache, &old).exists());
    assert_eq!(cache.list_parts(&young, 0, 10).await.unwrap().parts.len(), 1);
    let page = cache.list_uploads("bucket", "", None, 10).await.unwrap();
    assert_eq!(page.uploads.iter().map(|u| u.key.as_str()).collect::<Vec<_>>(), ["young"]);
}

#[tokio::test]
async fn uploads_list_by_prefix_page_by_page() {
    let (_d, cache) = setup(|_| {}).await;
    let mut ids = Vec::new();
    for key in ["a/1", "a/2", "a/2", "b/1"] {
        ids.push((key, cache.create_upload("bucket", key, UploadMeta::default()).await.unwrap()));
    }
    let mut seen = Vec::new();
    let mut after: Option<(String, UploadId)> = None;
    loop {
        let page = cache.list_uploads("bucket", "a/", after.as_ref().map(|(k, u)| (k.as_str(), u)), 2).await.unwrap();
        seen.extend(page.uploads.iter().map(|u| (u.key.clone(), u.upload_id.clone())));
        let last = page.uploads.last().map(|u| (u.key.clone(), u.upload_id.clone()));
        if !page.is_truncated {
            break;
        }
        after = last;
    }
    let mut expect: Vec<(String, UploadId)> =
        ids.iter().filter(|(k, _)| k.starts_with("a/")).map(|(k, u)| (k.to_string(), u.clone())).collect();
    expect.sort();
    assert_eq!(seen, expect);
}

#[tokio::test]
async fn a_namespace_mirroring_a_source_takes_no_upload() {
    let (_d, cache) = setup(|_| {}).await;
    cache.create_namespace("mirror", Some("http://127.0.0.1:9/"), &Default::default()).await.unwrap();
    let got = cache.create_upload("mirror", "k", UploadMeta::default()).await;
    assert!(matches!(got, Err(Error::ReadOnly { .. })), "{got:?}");
    assert!(matches!(cache.create_upload("nope", "k", UploadMeta::default()).await, Err(Error::NoNamespace(_))));
    assert!(matches!(cache.create_upload("bucket", "../k", UploadMeta::default()).await, Err(Error::Key(_))));
}

#[tokio::test]
async fn a_directory_namespace_gets_the_object_as_a_file() {
    let (d, cache) = setup(|_| {}).await;
    let root = d.path().join("files");
    std::fs::create_dir(&root).unwrap();
    let progress = std::sync::Arc::new(tiercache_engine::ScanProgress::default());
    bounded(cache.index_directory("d", &root, &Default::default(), true, progress)).await.unwrap();
    let id = cache.create_upload("d", "sub/big.bin", UploadMeta::default()).await.unwrap();
    let parts = [pattern(5 * MIB, 4), b"end".to_vec()];
    let e1 = put(&cache, &id, 1, &parts[0]).await;
    let e2 = put(&cache, &id, 2, &parts[1]).await;
    let done = cache.complete_upload(&id, &[(1, e1), (2, e2)]).await.unwrap();
    let whole = parts.concat();
    assert!(std::fs::read(root.join("sub/big.bin")).unwrap() == whole);
    assert_eq!((done.digest, done.etag.as_str()), (Digest::of(&whole), md5_hex(&whole).as_str()));
    assert!(!upload_dir(&cache, &id).exists());
    let read = cache.read_entry("d", "sub/big.bin").await.unwrap();
    assert!(collect(read, None).await.unwrap() == whole);
}
