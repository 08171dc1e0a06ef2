//! `tiercache mount NAMESPACE/NAME:TAG DIR`: an image's files, mounted read-only on `DIR` until
//! SIGTERM or Ctrl-C (which unmount it), or until it is unmounted from outside
//! (`fusermount3 -u DIR`); either way the command exits 0. Once mounted it prints one line
//! saying so (JSON with `--json`).
//!
//! It opens the image through the engine (which indexes the layers no node has indexed yet) and
//! hands it to `tiercache-fuse`; it knows neither FUSE nor the image formats.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tiercache_engine::{Cache, Image};
use tiercache_fuse::{ImageFs, Mount, MountOptions, Unmounted};

use crate::args::MountArgs;

/// `tiercache mount`.
pub(crate) async fn mount(cache: Cache, args: &MountArgs) -> Result<u8> {
    let Some((namespace, image)) = args.namespace_and_image() else {
        bail!("{:?} names no namespace: write NAMESPACE/NAME:TAG", args.image);
    };
    if !args.dir.is_dir() {
        bail!("{} is not a directory: create it first (mkdir -p {})", args.dir.display(), args.dir.display());
    }
    eprintln!("opening {namespace}/{image} (indexing the layers no node has indexed yet: this reads each once)…");
    let opened = cache
        .image(namespace, image, args.platform.as_deref())
        .await
        .with_context(|| format!("cannot open image {image} of namespace {namespace}"))?;
    let mut mounted = start(cache.clone(), Arc::clone(&opened), args).await?;
    if args.json {
        // One line, flushed: a script reads it to know the mount is there.
        let mounted = serde_json::json!({
            "namespace": namespace,
            "image": image,
            "manifest_digest": opened.manifest_digest().to_string(),
            "dir": args.dir,
        });
        println!("{mounted}");
    } else {
        println!("mounted {namespace}/{image} ({}) at {}", opened.manifest_digest(), args.dir.display());
    }
    std::io::stdout().flush()?;

    let signalled = tokio::select! {
        ended = mounted.ended() => {
            ended.context("the FUSE session failed")?;
            false
        }
        () = crate::shutdown_signal() => true,
    };
    if signalled {
        stop(&mut mounted).await?;
    } else {
        eprintln!("{} was unmounted", args.dir.display());
    }
    cache.shutdown().await.context("cannot write the cache's last records")?;
    Ok(0)
}

/// Unmounts `mounted` and waits for its session to end; a busy mount is detached, and served
/// until its users let go or another signal comes.
async fn stop(mounted: &mut Mount) -> Result<()> {
    let dir = mounted.dir().display().to_string();
    if mounted.unmount()? == Unmounted::Detached {
        eprintln!(
            "{dir} is in use: detached it; serving the processes still using it until they let go (signal again to stop now)"
        );
        tokio::select! {
            ended = mounted.ended() => ended.context("the FUSE session failed")?,
            () = crate::shutdown_signal() => {
                eprintln!("stopped while processes still used the detached mount of {dir}");
                return Ok(());
            }
        }
    } else {
        mounted.ended().await.context("the FUSE session failed")?;
    }
    eprintln!("unmounted {dir}");
    Ok(())
}

/// Mounts `image` on the directory `args` names (on a blocking thread: mounting waits for the
/// kernel).
async fn start(cache: Cache, image: Arc<Image>, args: &MountArgs) -> Result<Mount> {
    let fs = ImageFs::new(cache, image, tokio::runtime::Handle::current());
    let dir = args.dir.clone();
    let options = MountOptions { allow_other: args.allow_other, subtype: "image".to_owned() };
    let mounted = tokio::task::spawn_blocking(move || Mount::start(fs, &dir, &options))
        .await
        .context("the mounting thread failed")?
        .context("install fuse3 (apt-get install fuse3) and run as root, or with /dev/fuse usable by you")?;
    Ok(mounted)
}
