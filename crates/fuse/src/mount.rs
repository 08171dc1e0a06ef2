//! [`Mount`]: an [`ImageFs`] mounted on a directory, read-only, its FUSE session running on a
//! thread of its own until the mount goes away.
//!
//! Mounting is fuser's own (no libfuse, nor its headers): as root, the `mount` system call;
//! otherwise through the setuid `fusermount3` binary (Debian package fuse3). The mount is
//! `nodev,nosuid` (device files and setuid bits of the image are shown, never honoured). The
//! session ends
//! when the kernel says the mount is gone: after [`Mount::unmount`], or after
//! `fusermount3 -u DIR` or `umount DIR` from outside; [`Mount::ended`] waits for that.

use std::io;
use std::path::{Path, PathBuf};

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use tokio::sync::oneshot;

use crate::ImageFs;

/// How an image is mounted.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Let users other than the one mounting it (root, usually) read it (`allow_other`; the
    /// kernel still checks each file's permissions).
    pub allow_other: bool,
    /// The filesystem's name in `/proc/mounts` (the `tiercache#…` part is the subtype).
    pub subtype: String,
}

/// A mounted image (see the module docs). Dropping it unmounts it (detaching it if busy), so
/// that an error on the way out leaves no dead mount behind.
pub struct Mount {
    dir: PathBuf,
    unmounter: SessionUnmounter,
    ended: oneshot::Receiver<io::Result<()>>,
}

impl Mount {
    /// Mounts `fs` on directory `dir`, read-only, and starts answering the kernel. Blocks until
    /// the kernel has accepted the mount (call it from a blocking context).
    ///
    /// # Errors
    /// Mounting failed: `dir` is missing or not a directory, `/dev/fuse` or `fusermount3` is
    /// missing, or the caller may not mount (the message says which).
    pub fn start(fs: ImageFs, dir: &Path, options: &MountOptions) -> io::Result<Mount> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::RO,
            MountOption::FSName("tiercache".to_owned()),
            MountOption::Subtype(if options.subtype.is_empty() { "image".to_owned() } else { options.subtype.clone() }),
            MountOption::DefaultPermissions,
            MountOption::NoAtime,
        ];
        config.acl = if options.allow_other { SessionACL::All } else { SessionACL::Owner };
        let mut session = Session::new(fs, dir, &config)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot mount on {}: {e}", dir.display())))?;
        let unmounter = session.unmount_callable();
        let (done, ended) = oneshot::channel();
        std::thread::Builder::new().name("tiercache-fuse".to_owned()).spawn(move || {
            let _ = done.send(session.run());
        })?;
        Ok(Mount { dir: dir.to_owned(), unmounter, ended })
    }

    /// The directory it is mounted on.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Waits until the mount is gone (unmounted from outside, or by [`unmount`](Mount::unmount)).
    ///
    /// # Errors
    /// The FUSE session ended on an error of its device.
    pub async fn ended(&mut self) -> io::Result<()> {
        match (&mut self.ended).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::other("the FUSE session's thread ended without a result")),
        }
    }

    /// Unmounts it; [`ended`](Mount::ended) then returns once the session has ended. A busy
    /// mount (a process has a file of it open, or its working directory in it) is detached
    /// instead (`umount -l`): it disappears from the directory at once, and its session ends
    /// when the last of those processes lets go.
    ///
    /// # Errors
    /// Neither unmounting nor detaching worked (the message says why).
    pub fn unmount(&mut self) -> io::Result<Unmounted> {
        match self.unmounter.unmount() {
            Ok(()) => Ok(Unmounted::Whole),
            Err(e) => {
                tracing::debug!(dir = %self.dir.display(), error = %e, "unmount failed; detaching the mount instead");
                detach(&self.dir).map(|()| Unmounted::Detached)
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // A no-op once unmounted, by `unmount` or from outside.
        if let Err(e) = self.unmount() {
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot unmount");
        }
    }
}

/// What [`Mount::unmount`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmounted {
    /// The mount is gone, and its session ends at once.
    Whole,
    /// The mount was busy and is detached: gone from the directory, its session ends when the
    /// processes still using it let go.
    Detached,
}

/// A lazy unmount of `dir`: the `umount2` call as root, else `fusermount3 -u -z`.
fn detach(dir: &Path) -> io::Result<()> {
    match rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::PERM) => {
            let status = std::process::Command::new("fusermount3").arg("-u").arg("-z").arg(dir).status()?;
            if status.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!("fusermount3 -u -z {} failed ({status})", dir.display())))
            }
        }
        Err(e) => Err(io::Error::new(io::Error::from(e).kind(), format!("cannot unmount {}: {e}", dir.display()))),
    }
}
