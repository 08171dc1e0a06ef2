//! The image tree over layers built here with the `tar` crate: whiteouts and opaque
//! directories applied to the layers below only, directories merged, hardlinks sharing an inode
//! (and left out when their target is missing), symlinks resolved inside the image and loops
//! refused, and what hostile layers do (paths outside the root, a file in the way of a directory).

use std::sync::Arc;

use tiercache_derive::image_tree::{ImageTree, ResolveError};
use tiercache_derive::tar_index::{EntryKind, TarIndex};

use crate::run;

/// One layer's entries: `(path, kind, data or link target)`.
type Spec<'a> = &'a [(&'a str, EntryKind, &'a [u8])];

/// A plain tar layer of `spec`, indexed.
fn layer(spec: Spec<'_>) -> Arc<TarIndex> {
    let (_, out) = run("tar-index", &tar_of(spec), &[]).unwrap();
    Arc::new(TarIndex::load(out).unwrap())
}

/// A plain tar layer of `spec`.
fn tar_of(spec: Spec<'_>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for &(path, kind, data) in spec {
        let mut h = tar::Header::new_gnu();
        h.set_mode(if kind == EntryKind::Dir { 0o750 } else { 0o640 });
        h.set_uid(7);
        h.set_gid(8);
        h.set_mtime(1_700_000_000);
        let entry_type = match kind {
            EntryKind::Dir => tar::EntryType::Directory,
            EntryKind::Symlink => tar::EntryType::Symlink,
            EntryKind::Hardlink => tar::EntryType::Link,
            EntryKind::Fifo => tar::EntryType::Fifo,
            _ => tar::EntryType::Regular,
        };
        h.set_entry_type(entry_type);
        // Raw names, so that hostile ones (`../x`, `/abs`) are written as given.
        let name = path.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        match kind {
            EntryKind::Symlink | EntryKind::Hardlink => {
                h.as_old_mut().linkname[..data.len()].copy_from_slice(data);
                h.set_size(0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
            _ => {
                h.set_size(if kind == EntryKind::File { data.len() as u64 } else { 0 });
                h.set_cksum();
                b.append(&h, if kind == EntryKind::File { data } else { &[][..] }).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

use EntryKind::{Dir, File, Hardlink, Symlink};

fn names(tree: &ImageTree, dir: &str) -> Vec<String> {
    let id = tree.get(dir.as_bytes()).unwrap_or_else(|| panic!("{dir} is there"));
    tree.children(id).unwrap().map(|(n, _)| String::from_utf8_lossy(n).into_owned()).collect()
}

/// The size of the file at `path` (the tests tell versions apart by it).
fn size_of(tree: &ImageTree, path: &str) -> u64 {
    tree.data(tree.get(path.as_bytes()).unwrap()).unwrap().entry.size()
}

#[test]
fn upper_layers_replace_delete_and_hide_what_is_below() {
    let bottom = layer(&[
        ("etc/", Dir, b""),
        ("etc/a", File, b"a1"),
        ("etc/gone", File, b"x"),
        ("etc/sub/", Dir, b""),
        ("etc/sub/deep", File, b"d"),
        ("var/cache/", Dir, b""),
        ("var/cache/old1", File, b"o"),
        ("var/cache/old2", File, b"o"),
        ("opt/tool", File, b"t"),
    ]);
    let top = layer(&[
        ("etc/a", File, b"a2-longer"),
        ("etc/.wh.gone", File, b""),
        ("etc/.wh.sub", File, b""),
        ("var/cache/new", File, b"n"),
        ("var/cache/.wh..wh..opq", File, b""),
        ("opt/tool/", Dir, b""),
        ("opt/tool/inside", File, b"i"),
        ("etc/.wh.never-there", File, b""),
        (".wh..wh.plnk/", Dir, b""),
    ]);
    let tree = ImageTree::build(vec![bottom, top]).unwrap();
    assert_eq!(names(&tree, "etc"), ["a"], "whiteouts delete a file and a directory with its contents");
    assert_eq!(size_of(&tree, "etc/a"), 9, "the upper layer's version");
    assert_eq!(tree.data(tree.get(b"etc/a").unwrap()).unwrap().layer, 1);
    assert_eq!(names(&tree, "var/cache"), ["new"], "an opaque directory hides the lower layers only");
    assert_eq!(names(&tree, "opt/tool"), ["inside"], "a directory replaces a file");
    assert!(tree.get(b"etc/sub/deep").is_none());
    assert_eq!(names(&tree, ""), ["etc", "opt", "var"], "aufs bookkeeping is no file of the image");
    // A directory over a directory takes its attributes and keeps its contents.
    let etc = tree.attrs(tree.get(b"etc").unwrap());
    assert_eq!((etc.kind, etc.perm, etc.uid), (Dir, 0o750, 7));
    // `opt` had no entry of its own: made, owned by root.
    let opt = tree.attrs(tree.get(b"opt").unwrap());
    assert_eq!((opt.kind, opt.perm, opt.uid, opt.nlink), (Dir, 0o755, 0, 3));
}

#[test]
fn a_whiteout_does_not_delete_what_its_own_layer_adds() {
    let bottom = layer(&[("d/x", File, b"old")]);
    let top = layer(&[
        ("d/x", Symlink, b"target"),
        ("d/.wh.x", File, b""),
        ("d/.wh..wh..opq", File, b""),
        ("d/y", File, b"y"),
    ]);
    let tree = ImageTree::build(vec![bottom, top]).unwrap();
    assert_eq!(names(&tree, "d"), ["x", "y"]);
    assert_eq!(tree.link_target(tree.get(b"d/x").unwrap()), Some(&b"target"[..]));
}

#[test]
fn hardlinks_share_an_inode_and_a_missing_target_is_left_out() {
    let bottom = layer(&[("bin/busybox", File, b"bb")]);
    let top = layer(&[
        ("bin/sh", Hardlink, b"bin/busybox"),
        ("bin/ls", Hardlink, b"./bin/busybox"),
        ("bin/broken", Hardlink, b"bin/nothing"),
        ("bin/to-dir", Hardlink, b"bin"),
    ]);
    let tree = ImageTree::build(vec![bottom, top]).unwrap();
    assert_eq!(names(&tree, "bin"), ["busybox", "ls", "sh"]);
    let [bb, sh, ls] = ["bin/busybox", "bin/sh", "bin/ls"].map(|p| tree.attrs(tree.get(p.as_bytes()).unwrap()));
    assert_eq!(bb.ino, sh.ino);
    assert_eq!(bb.ino, ls.ino);
    assert_eq!((bb.nlink, sh.nlink, sh.kind, sh.size), (3, 3, File, 2));
    assert_eq!(tree.data(tree.get(b"bin/sh").unwrap()).unwrap().layer, 0, "the bytes are the target's");
    let (warnings, n) = tree.warnings();
    assert_eq!(n, 2, "{warnings:?}");
    assert!(warnings[0].contains("bin/nothing"), "{warnings:?}");
}

#[test]
fn symlinks_resolve_inside_the_image_and_loops_are_refused() {
    let l = layer(&[
        ("usr/lib/libc.so", File, b"libc"),
        ("lib", Symlink, b"usr/lib"),
        ("abs", Symlink, b"/usr/lib/libc.so"),
        ("up", Symlink, b"../../../../usr/lib"),
        ("loop1", Symlink, b"loop2"),
        ("loop2", Symlink, b"loop1"),
        ("self", Symlink, b"./self"),
        ("dangling", Symlink, b"/nowhere"),
        ("usr/lib/parent", Symlink, b".."),
    ]);
    let tree = ImageTree::build(vec![l]).unwrap();
    let libc = tree.get(b"usr/lib/libc.so").unwrap();
    assert_eq!(tree.resolve(b"lib/libc.so", true), Ok(libc));
    assert_eq!(tree.resolve(b"/abs", true), Ok(libc), "an absolute target starts at the image root");
    assert_eq!(tree.resolve(b"up/libc.so", true), Ok(libc), "`..` stops at the image root");
    assert_eq!(tree.resolve(b"usr/lib/parent/lib/libc.so", true), Ok(libc));
    assert_eq!(tree.resolve(b"abs", false), Ok(tree.get(b"abs").unwrap()), "the last one is kept when asked");
    assert_eq!(tree.resolve(b"loop1", true), Err(ResolveError::Loop));
    assert_eq!(tree.resolve(b"self/x", true), Err(ResolveError::Loop));
    assert_eq!(tree.resolve(b"dangling", true), Err(ResolveError::NotFound));
    assert_eq!(tree.resolve(b"usr/lib/libc.so/x", true), Err(ResolveError::NotADirectory));
    assert_eq!(tree.attrs(tree.get(b"lib").unwrap()).size, 7, "a symlink's size is its target's length");
}

#[test]
fn hostile_paths_stay_inside_the_root_and_files_in_the_way_are_replaced() {
    let l = layer(&[
        ("../../etc/passwd", File, b"p"),
        ("/abs/path", File, b"a"),
        ("f", File, b"file"),
        ("f/under", File, b"u"),
    ]);
    let tree = ImageTree::build(vec![l]).unwrap();
    assert!(tree.get(b"etc/passwd").is_some());
    assert!(tree.get(b"abs/path").is_some());
    assert_eq!(tree.attrs(tree.get(b"f").unwrap()).kind, Dir);
    assert_eq!(names(&tree, "f"), ["under"]);
    assert_eq!(tree.warnings().1, 1);
}

#[test]
fn a_hundred_thousand_files_in_one_directory_merge_and_list() {
    let paths: Vec<String> = (0..100_000).map(|i| format!("d/f{i:06}")).collect();
    let spec: Vec<(&str, EntryKind, &[u8])> = paths.iter().map(|p| (p.as_str(), File, &b""[..])).collect();
    let tree = ImageTree::build(vec![layer(&spec)]).unwrap();
    let d = tree.get(b"d").unwrap();
    assert_eq!(tree.children(d).unwrap().len(), 100_000);
    assert!(tree.child(d, b"f099999").is_some());
}

#[test]
fn a_file_is_found_as_its_layer_streams_and_the_rest_is_not_read() {
    use std::io::Read;
    use tiercache_derive::tar_index::{Found, find_file};
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let tar = tar_of(&[
        ("etc/.wh.gone", File, b""),
        ("var/.wh..wh..opq", File, b""),
        ("big", File, &big),
        ("lib", Symlink, b"usr/lib"),
        ("file", File, b"x"),
        ("etc/wanted", File, b"the bytes wanted"),
        ("after", File, &big),
    ]);
    let gz = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut e, &tar).unwrap();
        e.finish().unwrap()
    };
    /// A reader counting what was taken from it.
    struct Counted(std::io::Cursor<Vec<u8>>, std::rc::Rc<std::cell::Cell<usize>>);
    impl Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.set(self.1.get() + n);
            Ok(n)
        }
    }
    let limits = crate::limits();
    for layer in [&tar, &gz] {
        let taken = std::rc::Rc::new(std::cell::Cell::new(0));
        let reader = Box::new(Counted(std::io::Cursor::new(layer.clone()), std::rc::Rc::clone(&taken)));
        let Found::File(f) = find_file(reader, b"/etc/./wanted", 1 << 20, &limits).unwrap() else { panic!() };
        assert_eq!(f.bytes, b"the bytes wanted");
        assert_eq!((f.mode, f.uid, f.gid, f.mtime), (0o640, 7, 8, (1_700_000_000, 0)));
        assert_eq!(&tar[f.data_offset as usize..][..16], b"the bytes wanted", "the offset tar-index records");
        assert!(taken.get() < layer.len() * 3 / 4, "the last file is not read: {} of {}", taken.get(), layer.len());
        let find =
            |path: &[u8], max| find_file(Box::new(std::io::Cursor::new(layer.clone())), path, max, &limits).unwrap();
        assert_eq!(find(b"etc/gone", 1 << 20), Found::Hidden);
        assert_eq!(find(b"var/x/y", 1 << 20), Found::Hidden);
        assert_eq!(find(b"lib/libc.so", 1 << 20), Found::Other, "through a symlink: the index answers");
        assert_eq!(find(b"file/below", 1 << 20), Found::Other);
        assert_eq!(find(b"big", 1 << 20), Found::Other, "larger than asked for");
        assert_eq!(find(b"nothing", 1 << 20), Found::Absent);
        assert!(matches!(find(b"big", 4 << 20), Found::File(f) if f.bytes == big));
    }
}
