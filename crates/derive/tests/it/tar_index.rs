//! `tar-index` on layers built here (with the `tar` crate's `Builder`, and by hand for what it
//! cannot write), plain, gzip and zstd: every field checked against what GNU tar
//! (`tar --list --verbose`) and the `tar` crate read from the same bytes, every file's data offset
//! checked by slicing the uncompressed stream there; sparse files written by GNU tar in each of
//! its formats; truncated, hostile and foreign inputs refused with the right error.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use tiercache_derive::DeriveError;
use tiercache_derive::tar_index::{CONTENT_TYPE, Compression, EntryKind, TarEntry, TarIndex, Whiteout};

use crate::{limits, run, run_with};

const COMPRESSIONS: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Zstd];

/// `tar` in `compression`.
fn compress(tar: &[u8], compression: Compression) -> Vec<u8> {
    match compression {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 1).unwrap(),
    }
}

/// The recipe's output for `layer`, loaded.
fn index(layer: &[u8]) -> Result<TarIndex, DeriveError> {
    let (produced, out) = run("tar-index", layer, &[])?;
    assert_eq!(produced.content_type, CONTENT_TYPE);
    Ok(TarIndex::load(out).expect("the recipe's output loads"))
}

/// A tar stream written block by block, for what the `tar` crate's `Builder` cannot write.
#[derive(Default)]
struct Tar(Vec<u8>);

impl Tar {
    /// Appends `header` (its checksum set here) and `data`, padded to a block.
    fn entry(&mut self, mut header: [u8; 512], data: &[u8]) -> &mut Tar {
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        self.0.extend(header);
        self.data(data)
    }

    /// Appends `data`, padded to a block.
    fn data(&mut self, data: &[u8]) -> &mut Tar {
        self.0.extend(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
        self
    }

    /// Appends a PAX header (`x` or `g`) holding `records`.
    fn pax(&mut self, typeflag: u8, records: &[(&str, &[u8])]) -> &mut Tar {
        let data = pax_records(records);
        self.entry(header(b"PaxHeaders/x", typeflag, data.len() as u64), &data)
    }

    /// Appends a GNU long name (`L`) or long link (`K`) entry for the next entry.
    fn gnu_long(&mut self, typeflag: u8, name: &[u8]) -> &mut Tar {
        let data = [name, b"\0"].concat();
        let mut h = header(b"././@LongLink", typeflag, data.len() as u64);
        gnu_magic(&mut h);
        self.entry(h, &data)
    }

    /// The stream with its end-of-archive blocks.
    fn finish(&mut self) -> Vec<u8> {
        let mut out = self.0.clone();
        out.resize(out.len() + 1024, 0);
        out
    }
}

/// A ustar header for `name` (at most 100 bytes) of type `typeflag` with `size` bytes of data;
/// mode 0644, uid and gid 0, mtime 1 700 000 000.
fn header(name: &[u8], typeflag: u8, size: u64) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = typeflag;
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h
}

/// `n` in octal filling `field`, NUL-terminated when it leaves room (GNU tar's way).
fn octal(field: &mut [u8], n: u64) {
    let mut text = format!("{n:0width$o}\0", width = field.len() - 1);
    if text.len() > field.len() {
        text.pop();
    }
    field.copy_from_slice(text.as_bytes());
}

fn gnu_magic(h: &mut [u8; 512]) {
    h[257..265].copy_from_slice(b"ustar  \0");
}

fn pax_records(records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let body = 1 + k.len() + 1 + v.len() + 1;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        out.extend(format!("{len} {k}=").as_bytes());
        out.extend(*v);
        out.push(b'\n');
    }
    out
}

/// A `tar` crate header of `kind` for `path`: mode, owner and time as given.
fn crate_header(kind: tar::EntryType, size: u64, mode: u32, uid: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(mtime);
    h
}

/// A layer with every kind of entry and every extension the index reads, and a few hostile
/// paths.
fn mixed_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    // A global header, as `git archive` writes one.
    b.get_mut().extend(Tar::default().pax(b'g', &[("comment", b"0123abcd")]).0.clone());
    let t = 1_700_000_000;
    b.append_data(&mut crate_header(tar::EntryType::Directory, 0, 0o755, 0, t), "etc/", &[][..]).unwrap();
    b.append_data(&mut crate_header(tar::EntryType::Regular, 4, 0o644, 1000, t), "etc/hostname", &b"box\n"[..])
        .unwrap();
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
    b.append_data(&mut crate_header(tar::EntryType::Regular, 5000, 0o4755, 0, t + 1), "usr/bin/su", &data[..]).unwrap();
    let mut h = crate_header(tar::EntryType::Symlink, 0, 0o777, 0, t);
    b.append_link(&mut h, "etc/localtime", "/usr/share/zoneinfo/UTC").unwrap();
    let mut h = crate_header(tar::EntryType::Link, 0, 0o644, 1000, t);
    b.append_link(&mut h, "etc/hostname.bak", "etc/hostname").unwrap();
    for (path, kind, major, minor) in [
        ("dev/null", tar::EntryType::Char, 1, 3),
        ("dev/sda", tar::EntryType::Block, 8, 0),
        ("run/fifo", tar::EntryType::Fifo, 0, 0),
    ] {
        let mut h = crate_header(kind, 0, 0o666, 0, t);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        b.append_data(&mut h, path, &[][..]).unwrap();
    }
    // GNU long names (`L`, `K`), written by the `tar` crate itself.
    let long = format!("deep/{}/file", "x".repeat(150));
    b.append_data(&mut crate_header(tar::EntryType::Regular, 3, 0o600, 0, t), &long, &b"abc"[..]).unwrap();
    let mut h = crate_header(tar::EntryType::Symlink, 0, 0o777, 0, t);
    b.append_link(&mut h, "deep/link", format!("../{}", "y".repeat(300))).unwrap();
    // A uid past octal's reach, in GNU base-256.
    b.append_data(&mut crate_header(tar::EntryType::Regular, 1, 0o644, 3_000_000_000, t), "big-uid", &b"u"[..])
        .unwrap();

    let mut raw = Tar::default();
    // PAX: a long path, xattrs both ways, a fractional mtime, a uid and a size.
    let pax_path = format!("pax/{}/file", "p".repeat(200));
    raw.pax(
        b'x',
        &[
            ("path", pax_path.as_bytes()),
            ("mtime", b"1700000000.123456789"),
            ("uid", b"3000000"),
            ("uname", b"builder"),
            ("SCHILY.xattr.user.a", b"1\0\xff"),
            ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02\x00\x20\x00\x00"),
            ("LIBARCHIVE.xattr.user.b%3Dc", b"aGk"),
        ],
    );
    raw.entry(header(b"pax/truncated", b'0', 6), b"pax!\n\n");
    // Whiteouts, `..` and absolute paths, a path that is not UTF-8, a ustar prefix.
    raw.entry(header(b"etc/.wh.motd", b'0', 0), b"");
    raw.entry(header(b"var/.wh..wh..opq", b'0', 0), b"");
    raw.entry(header(b"../../etc/passwd", b'0', 11), b"root:x:0:0\n");
    raw.entry(header(b"/abs/file", b'0', 2), b"ab");
    raw.entry(header(b"bin/\xff\xfe", b'0', 1), b"z");
    let mut h = header(b"file-under-prefix", b'0', 1);
    let prefix = "q".repeat(120);
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    raw.entry(h, b"q");
    // A hardlink with a GNU long name and a GNU long link target, written by hand.
    let (long_name, long_target) = (format!("hand/{}", "n".repeat(120)), format!("deep/{}/file", "x".repeat(150)));
    raw.gnu_long(b'L', long_name.as_bytes()).gnu_long(b'K', long_target.as_bytes());
    let mut h = header(&long_name.as_bytes()[..100], b'1', 0);
    gnu_magic(&mut h);
    raw.entry(h, b"");
    // An old (v7-style) directory: type `\0` and a trailing slash.
    let mut h = header(b"olddir/", 0, 0);
    h[257..265].fill(0);
    raw.entry(h, b"");
    b.get_mut().extend(&raw.0);
    b.into_inner().unwrap()
}

#[test]
fn every_kind_of_entry_is_read_as_gnu_tar_and_the_tar_crate_read_it() {
    let tar = mixed_tar();
    for compression in COMPRESSIONS {
        let index = index(&compress(&tar, compression)).unwrap();
        assert_eq!(index.compression(), compression);
        assert_eq!(index.tar_bytes(), tar.len() as u64);
        assert_eq!(index.end_offset(), tar.len() as u64 - 1024);
        check_against_gnu_tar(&tar, &index);
        check_against_tar_crate(&tar, &index);
    }
}

#[test]
fn gzip_members_zstd_frames_and_skippable_frames_make_one_stream() {
    let tar = mixed_tar();
    let cut = 512 * 7 + 100;
    let gzip = [compress(&tar[..cut], Compression::Gzip), compress(&tar[cut..], Compression::Gzip)].concat();
    let mut skippable = vec![0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, b'm', b'e', b't', b'a'];
    skippable.extend(compress(&tar[..cut], Compression::Zstd));
    skippable.extend(compress(&tar[cut..], Compression::Zstd));
    let whole = index(&tar).unwrap();
    for layer in [gzip, skippable] {
        let index = index(&layer).unwrap();
        assert_eq!(index.len(), whole.len());
        assert_eq!(index.tar_bytes(), tar.len() as u64);
        check_against_tar_crate(&tar, &index);
    }
    // A stream that stops at an entry's boundary, without its end-of-archive blocks, is read as
    // far as it goes (GNU tar and Go read it so too).
    let unended = index(&tar[..whole.end_offset() as usize]).unwrap();
    assert_eq!((unended.len(), unended.end_offset()), (whole.len(), whole.end_offset()));
}

#[test]
fn paths_extensions_and_whiteouts_come_out_as_written() {
    let index = index(&mixed_tar()).unwrap();
    let passwd = index.get("/etc/passwd").unwrap();
    assert_eq!(passwd.path(), b"../../etc/passwd");
    assert_eq!(passwd.normalized_path(), b"etc/passwd");
    assert_eq!(index.get("abs/file").unwrap().path(), b"/abs/file");
    assert_eq!(index.get(b"bin/\xff\xfe").unwrap().size(), 1);
    assert_eq!(index.get(format!("{}/file-under-prefix", "q".repeat(120))).unwrap().size(), 1);
    assert_eq!(index.get("olddir").unwrap().kind(), EntryKind::Dir);
    assert!(index.get("etc/nothing").is_none());

    let pax = index.get(format!("pax/{}/file", "p".repeat(200))).unwrap();
    assert_eq!(pax.mtime(), (1_700_000_000, 123_456_789));
    assert_eq!((pax.uid(), pax.uname()), (3_000_000, &b"builder"[..]));
    let xattrs: Vec<(&[u8], &[u8])> = pax.xattrs().collect();
    assert_eq!(
        xattrs,
        vec![
            (&b"security.capability"[..], &b"\x01\x00\x00\x02\x00\x20\x00\x00"[..]),
            (b"user.a", b"1\0\xff"),
            (b"user.b=c", b"hi"),
        ]
    );
    assert_eq!(index.get("big-uid").unwrap().uid(), 3_000_000_000);
    assert_eq!(index.get("dev/sda").unwrap().device(), Some((8, 0)));
    assert_eq!(index.get("etc/localtime").unwrap().link_target(), Some(&b"/usr/share/zoneinfo/UTC"[..]));
    assert_eq!(index.get("deep/link").unwrap().link_target().unwrap().len(), 303);
    assert_eq!(index.get("etc/hostname").unwrap().link_target(), None);

    let motd = index.get("etc/.wh.motd").unwrap();
    assert_eq!(motd.whiteout(), Some(Whiteout::Removes));
    assert_eq!(motd.whited_out_path().as_deref(), Some(&b"etc/motd"[..]));
    assert_eq!(index.get("var/.wh..wh..opq").unwrap().whiteout(), Some(Whiteout::Opaque));
    assert_eq!(index.get("etc/hostname").unwrap().whiteout(), None);

    let names = |dir: &str| -> Vec<String> {
        index.children(dir).map(|e| String::from_utf8_lossy(e.normalized_path()).into_owned()).collect()
    };
    assert_eq!(names("/etc"), ["etc/.wh.motd", "etc/hostname", "etc/hostname.bak", "etc/localtime", "etc/passwd"]);
    assert_eq!(names("dev/"), ["dev/null", "dev/sda"]);
    assert!(names("").contains(&"big-uid".to_owned()));
    assert!(names("").iter().all(|n| !n.contains('/')));
}

#[test]
fn a_path_given_twice_is_found_as_the_last_one() {
    let mut raw = Tar::default();
    raw.entry(header(b"a", b'0', 1), b"1").entry(header(b"./a", b'0', 2), b"22").entry(header(b"b", b'0', 0), b"");
    let index = index(&raw.finish()).unwrap();
    assert_eq!(index.get("a").unwrap().size(), 2);
    assert_eq!(index.get_all("/a").map(|e| e.number()).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(index.children("").map(|e| e.number()).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn a_hundred_thousand_files_in_one_directory() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = crate_header(tar::EntryType::Directory, 0, 0o755, 0, 1);
    b.append_data(&mut h, "many/", &[][..]).unwrap();
    for i in 0..100_000 {
        let mut h = crate_header(tar::EntryType::Regular, 0, 0o644, 0, 1);
        b.append_data(&mut h, format!("many/f{i:06}"), &[][..]).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let index = index(&compress(&tar, Compression::Gzip)).unwrap();
    assert_eq!(index.len(), 100_001);
    assert_eq!(index.children("many").count(), 100_000);
    assert_eq!(index.get("many/f054321").unwrap().header_offset(), 512 * (1 + 54_321));
    check_against_gnu_tar(&tar, &index);
}

#[test]
fn sparse_files_from_gnu_tar_have_their_maps() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sparse");
    let size: u64 = 64 << 20;
    let pieces: [(u64, Vec<u8>); 3] =
        [(0, vec![b'A'; 4096]), (1 << 20, (0..5000u32).map(|i| i as u8).collect()), (32 << 20, vec![b'C'; 100])];
    {
        let f = std::fs::File::create(&file).unwrap();
        f.set_len(size).unwrap();
        for (at, bytes) in &pieces {
            std::os::unix::fs::FileExt::write_all_at(&f, bytes, *at).unwrap();
        }
    }
    let content = std::fs::read(&file).unwrap();
    for format in [
        &["--format=gnu"][..],
        &["--format=posix", "--sparse-version=0.0"],
        &["--format=posix", "--sparse-version=0.1"],
        &["--format=posix", "--sparse-version=1.0"],
    ] {
        let out = Command::new("tar")
            .args(["--create", "--sparse", "--file=-", "--directory"])
            .arg(dir.path())
            .args(format)
            .arg("sparse")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let tar = out.stdout;
        assert!(tar.len() < 1 << 20, "{format:?}: GNU tar stored the holes");
        let index = index(&compress(&tar, Compression::Zstd)).unwrap();
        check_against_gnu_tar(&tar, &index);
        let e = index.get("sparse").unwrap_or_else(|| panic!("{format:?}: no entry named sparse"));
        assert_eq!((e.kind(), e.size()), (EntryKind::File, size), "{format:?}");
        let segments: Vec<_> = e.sparse().unwrap_or_else(|| panic!("{format:?}: no sparse map")).collect();
        let mut covered = vec![false; content.len()];
        for s in &segments {
            let (at, len) = (s.file_offset as usize, s.len as usize);
            assert_eq!(&tar[s.data_offset as usize..][..len], &content[at..at + len], "{format:?}: {s:?}");
            covered[at..at + len].fill(true);
        }
        assert!(content.iter().zip(&covered).all(|(&b, &c)| c || b == 0), "{format:?}: data outside the map");
        for (at, bytes) in &pieces {
            assert!(covered[*at as usize..*at as usize + bytes.len()].iter().all(|&c| c), "{format:?}");
        }
        assert_eq!(e.stored_bytes(), segments.iter().map(|s| s.len).sum::<u64>());
    }
}

#[test]
fn a_ten_gib_sparse_header_in_a_tiny_layer_costs_nothing() {
    let ten_gib: u64 = 10 << 30;
    // Old GNU: one 512-byte segment at the end of a 10 GiB file.
    let mut h = header(b"huge-gnu", b'S', 512);
    gnu_magic(&mut h);
    octal(&mut h[386..398], ten_gib - 512);
    octal(&mut h[398..410], 512);
    octal(&mut h[483..495], ten_gib);
    let mut raw = Tar::default();
    raw.entry(h, &[7u8; 512]);
    // PAX 1.0: the map at the start of the data.
    let map = format!("1\n{}\n512\n", ten_gib - 512);
    let mut data = map.into_bytes();
    data.resize(512, 0);
    data.extend([9u8; 512]);
    raw.pax(
        b'x',
        &[
            ("GNU.sparse.major", b"1"),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"huge-pax"),
            ("GNU.sparse.realsize", b"10737418240"),
        ],
    );
    raw.entry(header(b"./GNUSparseFile.1/huge-pax", b'0', 1024), &data);
    let tar = raw.finish();
    assert!(tar.len() < 8192);
    for compression in COMPRESSIONS {
        let index = index(&compress(&tar, compression)).unwrap();
        for (name, byte) in [("huge-gnu", 7u8), ("huge-pax", 9)] {
            let e = index.get(name).unwrap();
            assert_eq!(e.size(), ten_gib);
            let segments: Vec<_> = e.sparse().unwrap().collect();
            assert_eq!(segments.len(), 1);
            assert_eq!((segments[0].file_offset, segments[0].len), (ten_gib - 512, 512));
            assert_eq!(&tar[segments[0].data_offset as usize..][..512], &[byte; 512][..]);
        }
        check_against_gnu_tar(&tar, &index);
    }
}

#[test]
fn hostile_sparse_maps_are_refused() {
    // An extension block promised, none there.
    let mut h = header(b"s", b'S', 0);
    gnu_magic(&mut h);
    h[482] = 1;
    let mut raw = Tar::default();
    raw.entry(h, b"");
    let mut cut = raw.0.clone();
    cut.truncate(512);
    assert!(matches!(index(&cut), Err(DeriveError::Corrupt(_))));
    // A map whose data does not add up to what the entry stores.
    let mut h = header(b"s", b'S', 512);
    gnu_magic(&mut h);
    octal(&mut h[386..398], 0);
    octal(&mut h[398..410], 1024);
    octal(&mut h[483..495], 4096);
    assert!(matches!(index(&Tar::default().entry(h, &[0; 512]).finish()), Err(DeriveError::Corrupt(_))));
    // A PAX 1.0 map claiming more segments than allowed.
    let mut raw = Tar::default();
    raw.pax(b'x', &[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0"), ("GNU.sparse.realsize", b"1")]);
    raw.entry(header(b"s", b'0', 512), b"99999999\n");
    assert!(matches!(index(&raw.finish()), Err(DeriveError::TooLarge(_))));
    // A sparse version nobody wrote.
    let mut raw = Tar::default();
    raw.pax(b'x', &[("GNU.sparse.major", b"2"), ("GNU.sparse.minor", b"0")]);
    raw.entry(header(b"s", b'0', 0), b"");
    assert!(matches!(index(&raw.finish()), Err(DeriveError::Unsupported(_))));
}

#[test]
fn truncated_layers_are_corrupt() {
    let tar = mixed_tar();
    let full = index(&tar).unwrap();
    let su = full.get("usr/bin/su").unwrap();
    let cuts = [300, 512 + 100, (su.data_offset() + su.size() / 2) as usize, (su.header_offset() + 300) as usize];
    for cut in cuts {
        for compression in COMPRESSIONS {
            let layer = compress(&tar[..cut], compression);
            let result = index(&layer);
            assert!(matches!(result, Err(DeriveError::Corrupt(_))), "cut at {cut} ({compression:?}): {result:?}");
        }
    }
    for compression in [Compression::Gzip, Compression::Zstd] {
        let layer = compress(&tar, compression);
        for cut in [layer.len() / 2, layer.len() - 4] {
            let result = index(&layer[..cut]);
            assert!(matches!(result, Err(DeriveError::Corrupt(_))), "{compression:?} cut at {cut}: {result:?}");
        }
    }
    // Extended headers with no entry after them.
    let mut raw = Tar::default();
    raw.pax(b'x', &[("path", b"x")]);
    assert!(matches!(index(&raw.finish()), Err(DeriveError::Corrupt(_))));
    // A damaged header in the middle.
    let mut bad = tar.clone();
    bad[su.header_offset() as usize + 10] ^= 1;
    assert!(matches!(index(&bad), Err(DeriveError::Corrupt(_))));
}

#[test]
fn what_is_not_a_tar_layer_is_unsupported() {
    let mut state = 0x2545f4914f6cdd1du64;
    let random: Vec<u8> = (0..10_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let zip = [&b"PK\x03\x04\x14\x00\x00\x00\x08\x00"[..], &random[..1000]].concat();
    for (what, layer) in [
        ("random bytes", random.clone()),
        ("a zip", zip),
        ("gzip of text", compress(b"hello, this is not a tar archive at all", Compression::Gzip)),
        ("zstd of random bytes", compress(&random, Compression::Zstd)),
        ("empty", Vec::new()),
        ("empty gzip", compress(b"", Compression::Gzip)),
        ("short text", b"hello".to_vec()),
    ] {
        let result = index(&layer);
        assert!(matches!(result, Err(DeriveError::Unsupported(_))), "{what}: {result:?}");
    }
    for (what, bytes) in [("multi-volume", b'M'), ("old long names", b'N')] {
        let result = index(&Tar::default().entry(header(b"x", bytes, 0), b"").finish());
        assert!(matches!(result, Err(DeriveError::Unsupported(_))), "{what}: {result:?}");
    }
    // An empty tar (the empty layer images share) is a tar with no entries.
    let empty = index(&compress(&[0u8; 1024], Compression::Gzip)).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn limits_bound_a_hostile_layer() {
    // A PAX header claiming 2 MiB, a GNU long name claiming 100 KiB: refused from the size alone.
    let big_pax = Tar::default().entry(header(b"p", b'x', 2 << 20), b"").finish();
    assert!(matches!(index(&big_pax), Err(DeriveError::TooLarge(_))));
    let mut h = header(b"././@LongLink", b'L', 100 << 10);
    gnu_magic(&mut h);
    assert!(matches!(index(&Tar::default().entry(h, b"").finish()), Err(DeriveError::TooLarge(_))));
    let long_path = "a/".repeat(40 << 10);
    let mut raw = Tar::default();
    raw.pax(b'x', &[("path", long_path.as_bytes())]);
    raw.entry(header(b"x", b'0', 0), b"");
    assert!(matches!(index(&raw.finish()), Err(DeriveError::TooLarge(_))));
    // The index's own size, and the deadline.
    let tar = mixed_tar();
    let mut small = limits();
    small.max_output_bytes = 2000;
    assert!(matches!(run_with("tar-index", &tar, &[], &small), Err(DeriveError::TooLarge(_))));
    let mut late = limits();
    late.deadline = Instant::now();
    assert!(matches!(run_with("tar-index", &tar, &[], &late), Err(DeriveError::TimedOut)));
    assert!(matches!(run("tar-index", &tar, &[("format", "gzip")]), Err(DeriveError::BadParam(_))));
}

#[test]
fn a_damaged_index_is_refused_or_read_without_panicking() {
    let (_, bytes) = run("tar-index", &mixed_tar(), &[]).unwrap();
    assert!(TarIndex::load(&bytes[..]).is_ok());
    assert!(TarIndex::load(&bytes[..bytes.len() - 1]).is_err());
    assert!(TarIndex::load(&b"not an index"[..]).is_err());
    let mut version = bytes.clone();
    version[8] = 2;
    assert!(matches!(TarIndex::load(version), Err(tiercache_derive::tar_index::TarIndexError::Version { found: 2 })));
    let mut huge = bytes.clone();
    huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(TarIndex::load(huge).is_err());
    let mut state = 7u64;
    for _ in 0..2000 {
        let mut damaged = bytes.clone();
        for _ in 0..3 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let at = (state >> 33) as usize % damaged.len();
            damaged[at] ^= 1 << ((state >> 29) & 7);
        }
        if let Ok(index) = TarIndex::load(&damaged[..]) {
            for e in index.entries() {
                let _ = (e.path(), e.normalized_path(), e.link_target(), e.uname(), e.gname(), e.device());
                let _ = (e.xattrs().count(), e.sparse().map(Iterator::count), e.whited_out_path(), e.stored_bytes());
                let _ = index.get(e.path());
            }
            let _ = index.children("").count();
        }
    }
}

/// Every entry as the `tar` crate reads it (the same order, path, link, type, mode, owner,
/// time, size, device, xattrs, header and data positions), and each file's data, sliced from
/// the uncompressed stream at its offset, the bytes the `tar` crate reads for it.
fn check_against_tar_crate(tar: &[u8], index: &TarIndex) {
    let mut archive = tar::Archive::new(tar);
    let mut n = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let e = index.entry(n).unwrap();
        n += 1;
        let what = String::from_utf8_lossy(e.path()).into_owned();
        assert_eq!(e.path(), &*entry.path_bytes(), "{what}");
        assert_eq!(e.link_target().map(<[u8]>::to_vec), entry.link_name_bytes().map(|l| l.into_owned()), "{what}");
        let want = match kind {
            tar::EntryType::Link => EntryKind::Hardlink,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Char => EntryKind::Char,
            tar::EntryType::Block => EntryKind::Block,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Fifo => EntryKind::Fifo,
            _ if entry.header().as_bytes()[156] == 0 && entry.path_bytes().ends_with(b"/") => EntryKind::Dir,
            _ => EntryKind::File,
        };
        assert_eq!(e.kind(), want, "{what}");
        let h = entry.header().clone();
        assert_eq!(e.mode(), h.mode().unwrap(), "{what}");
        assert_eq!(u64::from(e.uid()), h.uid().unwrap(), "{what}");
        assert_eq!(u64::from(e.gid()), h.gid().unwrap(), "{what}");
        assert_eq!(e.size(), entry.size(), "{what}");
        assert_eq!(e.header_offset(), entry.raw_header_position(), "{what}");
        assert_eq!(e.data_offset(), entry.raw_file_position(), "{what}");
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            let device = (h.device_major().unwrap().unwrap(), h.device_minor().unwrap().unwrap());
            assert_eq!(e.device(), Some(device), "{what}");
        }
        let mut mtime = (h.mtime().unwrap() as i64, 0);
        let mut xattrs = Vec::new();
        if let Some(pax) = entry.pax_extensions().unwrap() {
            for record in pax {
                let record = record.unwrap();
                if record.key_bytes() == b"mtime" {
                    let text = record.value().unwrap();
                    let (s, f) = text.split_once('.').unwrap_or((text, ""));
                    mtime = (s.parse().unwrap(), format!("{f:0<9}")[..9].parse().unwrap());
                }
                if let Some(name) = record.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    xattrs.push((name.to_vec(), record.value_bytes().to_vec()));
                }
            }
        }
        assert_eq!(e.mtime(), mtime, "{what}");
        let ours: Vec<(Vec<u8>, Vec<u8>)> = e.xattrs().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
        assert!(xattrs.iter().all(|x| ours.contains(x)), "{what}");
        if e.kind() == EntryKind::File {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            let at = e.data_offset() as usize;
            assert_eq!(&tar[at..at + e.size() as usize], &bytes[..], "{what}");
        }
    }
    assert_eq!(n, index.len());
}

/// Every entry as GNU tar lists it: the same order, type and permissions, owner, size (or
/// device numbers), time to the nanosecond, path and link target.
fn check_against_gnu_tar(tar: &[u8], index: &TarIndex) {
    let mut child = Command::new("tar")
        .args(["--list", "--verbose", "--full-time", "--numeric-owner", "--quoting-style=literal", "--file=-"])
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("GNU tar runs");
    let mut stdin = child.stdin.take().unwrap();
    let input = tar.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "GNU tar: {}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&[u8]> = out.stdout.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), index.len(), "GNU tar lists {} entries", lines.len());
    for (line, e) in lines.iter().zip(index.entries()) {
        let (fields, name) = gnu_fields(line);
        let what = String::from_utf8_lossy(line).into_owned();
        assert_eq!(fields[0], mode_string(&e), "{what}");
        assert_eq!(fields[1], format!("{}/{}", e.uid(), e.gid()), "{what}");
        let size = match e.device() {
            Some((major, minor)) => format!("{major},{minor}"),
            None => e.size().to_string(),
        };
        assert_eq!(fields[2], size, "{what}");
        assert_eq!(format!("{} {}", fields[3], fields[4]), time_string(e.mtime()), "{what}");
        let named = match (e.kind(), e.link_target()) {
            (EntryKind::Symlink, Some(target)) => [e.path(), b" -> ", target].concat(),
            (EntryKind::Hardlink, Some(target)) => [e.path(), b" link to ", target].concat(),
            _ => e.path().to_vec(),
        };
        assert_eq!(name, &named[..], "{what}");
    }
}

/// A GNU tar listing line's five first fields, and what follows them (the name).
fn gnu_fields(line: &[u8]) -> (Vec<String>, &[u8]) {
    let mut fields = Vec::new();
    let mut rest = line;
    for _ in 0..5 {
        let start = rest.iter().position(|&b| b != b' ').unwrap();
        rest = &rest[start..];
        let end = rest.iter().position(|&b| b == b' ').unwrap();
        fields.push(String::from_utf8(rest[..end].to_vec()).unwrap());
        rest = &rest[end..];
    }
    let start = rest.iter().position(|&b| b != b' ').unwrap();
    (fields, &rest[start..])
}

/// The mode as `ls -l` (and GNU tar) shows it.
fn mode_string(e: &TarEntry<'_>) -> String {
    let kind = match e.kind() {
        EntryKind::File => '-',
        EntryKind::Hardlink => 'h',
        EntryKind::Symlink => 'l',
        EntryKind::Char => 'c',
        EntryKind::Block => 'b',
        EntryKind::Dir => 'd',
        EntryKind::Fifo => 'p',
    };
    let m = e.mode();
    let bit = |mask: u32, c: char| if m & mask != 0 { c } else { '-' };
    let special = |x: bool, set: bool, lower: char, upper: char| match (x, set) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(m & 0o100 != 0, m & 0o4000 != 0, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(m & 0o010 != 0, m & 0o2000 != 0, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(m & 0o001 != 0, m & 0o1000 != 0, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` in UTC, as GNU tar's `--full-time` shows it.
fn time_string((secs, nanos): (i64, u32)) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut text = format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    if nanos != 0 {
        text.push_str(format!(".{nanos:09}").trim_end_matches('0'));
    }
    text
}
