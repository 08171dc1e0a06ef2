//! `tiercache get`: reads an entry, a blob or a URL under some namespace's source through the
//! cache, whole or one byte range, to standard output or a file.
//!
//! It resolves what it was asked for and streams it; the read path itself is the engine's.

use std::io::Write;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use tiercache_engine::{Cache, Digest, RangeRequest, Read};

use crate::args::GetArgs;

/// What `get` was asked for.
enum Target {
    Blob(Digest),
    Entry(String, String),
}

async fn resolve_target(cache: &Cache, target: &str) -> Result<Target> {
    if target.starts_with("sha256:") || target.contains(':') && !target.contains('/') {
        return Ok(Target::Blob(target.parse::<Digest>()?));
    }
    if target.starts_with("http://") || target.starts_with("https://") {
        for ns in cache.namespaces().await? {
            let Some(base) = ns.source.as_deref() else { continue };
            let base = if base.ends_with('/') { base.to_owned() } else { format!("{base}/") };
            if let Some(rest) = target.strip_prefix(&base) {
                let key = percent_decode(rest)?;
                return Ok(Target::Entry(ns.name, key));
            }
        }
        bail!("no namespace's source covers {target}; create one with `tiercache ns create NAME --source BASE_URL`");
    }
    match target.split_once('/') {
        Some((ns, key)) => Ok(Target::Entry(ns.to_owned(), key.to_owned())),
        None => bail!("expected NAMESPACE/KEY, sha256:<hex> or a URL, got {target:?}"),
    }
}

fn percent_decode(s: &str) -> Result<String> {
    Ok(percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .context("URL path is not UTF-8 once decoded")?
        .into_owned())
}

fn parse_range(s: &str) -> Result<RangeRequest> {
    let (a, b) = s.split_once('-').context("--range takes START-END or START-")?;
    let start: u64 = a.trim().parse().context("--range START is not a number")?;
    let end =
        if b.trim().is_empty() { None } else { Some(b.trim().parse::<u64>().context("--range END is not a number")?) };
    Ok(RangeRequest::single(start, end)?)
}

/// Writes what `args.target` names, whole or the range asked for; a partial file is removed.
pub(crate) async fn get(cache: Cache, args: &GetArgs) -> Result<u8> {
    let range = args.range.as_deref().map(parse_range).transpose()?;
    let read: Read = match resolve_target(&cache, &args.target).await? {
        Target::Blob(d) => cache.read_blob(&d).await?,
        Target::Entry(ns, key) => cache.read_entry(&ns, &key).await?,
    };
    let byte_range = match (&range, read.meta.size_bytes) {
        (Some(r), Some(size)) => match r.resolve(size)? {
            tiercache_core::Resolved::Partial(r) => Some(r),
            tiercache_core::Resolved::Whole => None,
        },
        (Some(_), None) => bail!("the source did not say the size, so --range cannot be applied"),
        (None, _) => None,
    };
    let mut stream = read.into_stream(byte_range);
    let mut sink: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let result: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            sink.write_all(&chunk.context("read failed")?)?;
        }
        sink.flush()?;
        Ok(())
    }
    .await;
    drop(sink);
    if let (Err(_), Some(path)) = (&result, &args.output) {
        let _ = std::fs::remove_file(path); // Never leave a partial file that looks complete.
    }
    cache.settle().await?;
    result.map(|()| 0)
}
