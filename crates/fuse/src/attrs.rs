//! What the kernel is told of a node: the image tree's [`FileAttrs`] as fuser's [`FileAttr`].
//!
//! It knows the FUSE encodings (file types, the 32-bit device number, 512-byte blocks); it does
//! not know where the attributes came from.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};
use tiercache_engine::{FileAttrs, FileKind};

/// The block size `stat` reports.
pub(crate) const BLOCK_BYTES: u32 = 4096;

/// `attrs` as FUSE attributes (atime, ctime and crtime are the mtime: the image has no others).
pub(crate) fn file_attr(attrs: &FileAttrs) -> FileAttr {
    let mtime = system_time(attrs.mtime);
    FileAttr {
        ino: INodeNo(attrs.ino),
        size: attrs.size,
        blocks: attrs.size.div_ceil(512),
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: file_type(&attrs.kind),
        // Invariant: the tree gives `mode & 0o7777`, which fits.
        perm: (attrs.perm & 0o7777) as u16,
        nlink: attrs.nlink,
        uid: attrs.uid,
        gid: attrs.gid,
        rdev: attrs.rdev.map_or(0, |(major, minor)| encode_dev(major, minor)),
        blksize: BLOCK_BYTES,
        flags: 0,
    }
}

/// The FUSE file type of a tree node's kind (a hardlink never reaches here: the tree gives the
/// kind of the file it names).
pub(crate) fn file_type(kind: &FileKind) -> FileType {
    match kind {
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Char => FileType::CharDevice,
        FileKind::Block => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        _ => FileType::RegularFile,
    }
}

/// Seconds and nanoseconds since the epoch (before it when negative) as a [`SystemTime`];
/// one out of range is the epoch.
fn system_time((secs, nanos): (i64, u32)) -> SystemTime {
    let nanos = Duration::from_nanos(u64::from(nanos.min(999_999_999)));
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    t.and_then(|t| t.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
}

/// A device number as the kernel's 32-bit `new_encode_dev` spells it (what `fuse_attr.rdev`
/// carries): 12 bits of major, 20 bits of minor.
fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_encode_as_the_kernel_decodes_them() {
        // /dev/null, /dev/sda1, and a minor above 255.
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(8, 1), 0x801);
        assert_eq!(encode_dev(259, 0x12345), 0x12310345);
    }

    #[test]
    fn times_before_the_epoch_and_out_of_range_are_kept_or_clamped() {
        assert_eq!(system_time((10, 5)), UNIX_EPOCH + Duration::new(10, 5));
        assert_eq!(system_time((-10, 0)), UNIX_EPOCH - Duration::from_secs(10));
        assert_eq!(system_time((0, u32::MAX)), UNIX_EPOCH + Duration::from_nanos(999_999_999));
    }
}
