//! A container image's files as a read-only FUSE filesystem (`tiercache mount`).
//!
//! [`ImageFs`] answers the kernel from an opened [`Image`](tiercache_engine::Image): names,
//! attributes, directory listings, symlink targets and extended attributes come from its
//! [`ImageTree`](tiercache_engine::ImageTree) in memory; the bytes of a file come from
//! [`Cache::image_read`](tiercache_engine::Cache::image_read), which reads only the compressed
//! span of the layer holding them (disk tier, shared tier, else a ranged request to the
//! registry). Reads run as tasks on the cache's tokio runtime and answer the kernel when they
//! finish, so a slow read never holds up `ls` or `stat`.
//!
//! The image is immutable: attributes and names are given to the kernel with a long time to
//! live, and files are opened with `FOPEN_KEEP_CACHE`, so the page cache serves repeated reads.
//! Anything that would change the filesystem fails with `EROFS`.
//!
//! [`Mount`] mounts an [`ImageFs`] on a directory (through the `fusermount3` binary) and runs it
//! on a thread of its own until it is unmounted, by [`Mount::unmount`] or from outside
//! (`fusermount3 -u DIR`, `umount DIR`).
//!
//! This crate does not open images, resolve names or fetch bytes: the engine does.

#![warn(missing_docs)]

mod attrs;
mod fs;
mod mount;

pub use fs::ImageFs;
pub use mount::{Mount, MountOptions, Unmounted};
