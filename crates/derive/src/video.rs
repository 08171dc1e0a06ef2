//! `video-thumbnail`: one frame of a video, taken by Debian's `ffmpeg` (found on `PATH`), then
//! resized and encoded by the `thumbnail` pipeline ([`crate::thumbnail`]).
//!
//! ffmpeg is bounded: it is killed when [`Limits::deadline`] passes, its output (one PNG frame,
//! already shrunk by ffmpeg to twice the box so a 4K frame never travels whole) is capped, its
//! error text is read only in part, and it runs single-threaded (the worker pool owns the
//! cores). It reads only the input file: the path is handed to `-i` behind `file:`, so it is
//! never taken for an option or another protocol; only the `file` protocol is allowed, and only
//! container formats that cannot refer to other files or URLs (no playlists).
//!
//! The input is not read into memory, so [`Limits::max_input_bytes`] does not apply: ffmpeg seeks
//! to the frame it needs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::thumbnail::{self, Spec};
use crate::{DeriveError, Limits, Params, Produced, Recipe, known_params};

/// The `video-thumbnail` recipe. Parameters: `size`, `fit` and `format` as for `thumbnail`, and
/// `at`: the time of the frame, in seconds from the start (default 1, at most 86400, up to three
/// decimals). A video shorter than `at` gives its first frame.
#[derive(Debug, Clone, Copy)]
pub struct VideoThumbnail;

/// The latest `at`, in seconds (a day).
const MAX_AT_SECONDS: u64 = 86_400;
/// The most bytes of ffmpeg's frame read, if [`Limits::max_alloc_bytes`] is larger (a 16-bit
/// RGBA PNG of 8192 × 8192 fits).
const MAX_FRAME_BYTES: u64 = 512 << 20;
/// The most bytes of ffmpeg's error text kept.
const MAX_STDERR_BYTES: u64 = 16 << 10;
/// How often a running ffmpeg is looked at.
const POLL: Duration = Duration::from_millis(5);
/// The demuxers ffmpeg may use: containers and raw streams that refer to no other file or URL.
const FORMATS: &str = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,mpeg,flv,ogg,asf,h264,hevc,mpegvideo,m4v";

impl Recipe for VideoThumbnail {
    fn name(&self) -> &'static str {
        "video-thumbnail"
    }

    fn version(&self) -> u32 {
        1
    }

    fn params(&self, raw: &[(String, String)], accept: Option<&str>) -> Result<Params, DeriveError> {
        let given = known_params(raw, &["size", "fit", "format", "at"])?;
        let spec = Spec::parse(&without_at(&given), accept)?;
        let at_ms = given.get("at").map_or(Ok(1000), |v| parse_at(v))?;
        let mut pairs = spec.pairs().to_vec();
        pairs.push(("at", format_at(at_ms)));
        Ok(Params::new(pairs))
    }

    fn available(&self) -> Result<(), String> {
        ffmpeg_path().map(drop).ok_or_else(|| "ffmpeg not found on PATH; apt-get install ffmpeg".to_owned())
    }

    fn run(
        &self,
        input: &Path,
        _input_len: u64,
        params: &Params,
        limits: &Limits,
        out: &mut dyn Write,
    ) -> Result<Produced, DeriveError> {
        let ffmpeg = ffmpeg_path()
            .ok_or_else(|| DeriveError::NotAvailable("ffmpeg not found on PATH; apt-get install ffmpeg".into()))?;
        let spec = Spec::from_canonical(params)?;
        let at_ms =
            parse_at(params.get("at").ok_or_else(|| DeriveError::BadParam("video-thumbnail: at missing".into()))?)?;
        let input = std::path::absolute(input)?;
        let mut frame = extract_frame(&ffmpeg, &input, at_ms, &spec, limits)?;
        if frame.is_empty() && at_ms > 0 {
            // Nothing at `at`: the video is shorter. Its first frame instead.
            frame = extract_frame(&ffmpeg, &input, 0, &spec, limits)?;
        }
        if frame.is_empty() {
            return Err(DeriveError::Corrupt("ffmpeg found no video frame to show".into()));
        }
        limits.check_time()?;
        let encoded = thumbnail::thumbnail_of(&frame, &spec, limits)?;
        thumbnail::write_output(&encoded, limits, out)?;
        Ok(Produced::written(spec.format.content_type()))
    }
}

fn without_at<'a>(given: &BTreeMap<&'a str, &'a str>) -> BTreeMap<&'a str, &'a str> {
    given.iter().filter(|(k, _)| **k != "at").map(|(k, v)| (*k, *v)).collect()
}

/// `at` in milliseconds: a decimal number of seconds (`90`, `1.5`, `0.040`), 0 to a day.
fn parse_at(value: &str) -> Result<u64, DeriveError> {
    let bad = || {
        let shown: String = value.chars().take(16).collect();
        DeriveError::BadParam(format!(
            "at={shown:?} is not a number of seconds from 0 to {MAX_AT_SECONDS} (at most three decimals)"
        ))
    };
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 6 || fraction.len() > 3 || !digits(whole) || !digits(fraction) {
        return Err(bad());
    }
    let seconds: u64 = whole.parse().map_err(|_| bad())?;
    let millis: u64 = format!("{fraction:0<3}").parse().map_err(|_| bad())?;
    let at_ms = seconds * 1000 + millis;
    if at_ms > MAX_AT_SECONDS * 1000 { Err(bad()) } else { Ok(at_ms) }
}

/// The canonical spelling of `at_ms`: seconds, without trailing zeros (`1`, `1.5`, `0.04`).
fn format_at(at_ms: u64) -> String {
    let (seconds, millis) = (at_ms / 1000, at_ms % 1000);
    if millis == 0 { seconds.to_string() } else { format!("{seconds}.{millis:03}").trim_end_matches('0').to_owned() }
}

/// The `ffmpeg` executable on `PATH`, if there is one.
fn ffmpeg_path() -> Option<PathBuf> {
    find_on(&std::env::var_os("PATH")?)
}

/// The `ffmpeg` executable in the directories of `path` (a `PATH` value).
fn find_on(path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path).map(|dir| dir.join("ffmpeg")).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// ffmpeg's frame at `at_ms` as PNG bytes, shrunk to fit twice the thumbnail's box (never
/// enlarged, non-square pixels made square); empty if the video has no frame at that time.
fn extract_frame(
    ffmpeg: &Path,
    input: &Path,
    at_ms: u64,
    spec: &Spec,
    limits: &Limits,
) -> Result<Vec<u8>, DeriveError> {
    let mut command = Command::new(ffmpeg);
    command.args(["-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "1", "-filter_threads", "1"]);
    command.args(["-protocol_whitelist", "file", "-format_whitelist", FORMATS]);
    if at_ms > 0 {
        command.arg("-ss").arg(format!("{}.{:03}", at_ms / 1000, at_ms % 1000));
    }
    let mut url = std::ffi::OsString::from("file:");
    url.push(input);
    command.arg("-i").arg(url);
    command.args(["-map", "0:v:0", "-frames:v", "1", "-an", "-sn", "-dn"]);
    command.arg("-vf").arg(shrink_filter(spec));
    command.args(["-f", "image2pipe", "-c:v", "png", "-compression_level", "1", "pipe:1"]);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = command.spawn()?;
    let finished = supervise(child, limits)?;
    if !finished.is_success {
        return Err(ffmpeg_error(&finished.stderr, input));
    }
    Ok(finished.stdout)
}

/// The filter that shrinks the frame so that the thumbnail's resizer still has a factor of two:
/// to fit `2 × size` (contain), or to cover it (cover), in square pixels.
fn shrink_filter(spec: &Spec) -> String {
    let bound = u64::from(spec.size) * 2;
    let side = match spec.fit {
        thumbnail::Fit::Contain => "max(iw*sar,ih)",
        thumbnail::Fit::Cover => "min(iw*sar,ih)",
    };
    let factor = format!("min(1,{bound}/{side})");
    format!("scale=w='max(1,trunc(iw*sar*{factor}))':h='max(1,trunc(ih*{factor}))',setsar=1")
}

/// What a finished ffmpeg left.
struct Finished {
    is_success: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// Waits for `child`, reading its output on two threads; kills it at the deadline
/// ([`DeriveError::TimedOut`]) or once its output passes [`MAX_FRAME_BYTES`] or
/// [`Limits::max_alloc_bytes`] ([`DeriveError::TooLarge`]).
fn supervise(mut child: Child, limits: &Limits) -> Result<Finished, DeriveError> {
    let max_frame_bytes = MAX_FRAME_BYTES.min(limits.max_alloc_bytes);
    let over = Arc::new(AtomicBool::new(false));
    let stdout = child.stdout.take().map(|pipe| {
        let over = Arc::clone(&over);
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let result = pipe.take(max_frame_bytes + 1).read_to_end(&mut bytes);
            if bytes.len() as u64 > max_frame_bytes {
                over.store(true, Ordering::Relaxed);
            }
            result.map(|_| bytes)
        })
    });
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut pipe).take(MAX_STDERR_BYTES).read_to_end(&mut kept);
            // The rest is drained, so that ffmpeg never blocks on a full pipe.
            let _ = std::io::copy(&mut pipe, &mut std::io::sink());
            kept
        })
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        let is_late = Instant::now() >= limits.deadline;
        if is_late || over.load(Ordering::Relaxed) {
            // Killing an exited child is harmless; the status is reaped right after.
            let _ = child.kill();
            let _ = child.wait();
            return Err(if is_late {
                DeriveError::TimedOut
            } else {
                DeriveError::TooLarge(format!("ffmpeg's frame is over {max_frame_bytes} bytes"))
            });
        }
        std::thread::sleep(POLL);
    };
    let stdout = match stdout.map(|t| t.join()) {
        Some(Ok(Ok(bytes))) => bytes,
        Some(Ok(Err(e))) => return Err(DeriveError::Io(e)),
        _ => Vec::new(),
    };
    if over.load(Ordering::Relaxed) {
        return Err(DeriveError::TooLarge(format!("ffmpeg's frame is over {max_frame_bytes} bytes")));
    }
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    Ok(Finished { is_success: status.success(), stdout, stderr })
}

/// The error for an ffmpeg that failed, from the first line of what it said (the input's path
/// replaced, so that no internal path reaches a client): not a video it reads is
/// [`DeriveError::Unsupported`], anything else [`DeriveError::Corrupt`].
fn ffmpeg_error(stderr: &[u8], input: &Path) -> DeriveError {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("ffmpeg failed and said nothing");
    let line = line
        .replace(&format!("file:{}", input.display()), "the input")
        .replace(&input.display().to_string(), "the input");
    let line: String = line.chars().take(300).collect();
    if line.contains("Invalid data found when processing input") || line.contains("matches no streams") {
        DeriveError::Unsupported(format!("not a video ffmpeg reads (ffmpeg: {line})"))
    } else {
        DeriveError::Corrupt(format!("ffmpeg: {line}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Result<String, DeriveError> {
        let raw: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        VideoThumbnail.params(&raw, None).map(|p| p.canonical())
    }

    #[test]
    fn parameters_are_canonical_and_bounded() {
        assert_eq!(params(&[("size", "300")]).unwrap(), "at=1&fit=contain&format=jpeg&size=300");
        assert_eq!(params(&[("size", "300"), ("at", "1.500")]).unwrap(), "at=1.5&fit=contain&format=jpeg&size=300");
        assert_eq!(params(&[("size", "300"), ("at", "0")]).unwrap(), "at=0&fit=contain&format=jpeg&size=300");
        assert_eq!(params(&[("size", "300"), ("at", "0.04")]).unwrap(), "at=0.04&fit=contain&format=jpeg&size=300");
        assert_eq!(params(&[("size", "300"), ("at", "86400")]).unwrap(), "at=86400&fit=contain&format=jpeg&size=300");
        for at in ["86400.001", "-1", "1e3", "1.2345", "", ".5", "nan", "1,5", "9999999"] {
            assert!(matches!(params(&[("size", "300"), ("at", at)]), Err(DeriveError::BadParam(_))), "{at}");
        }
        assert!(matches!(params(&[("size", "0")]), Err(DeriveError::BadParam(_))));
        assert!(matches!(params(&[("size", "10"), ("frame", "1")]), Err(DeriveError::BadParam(_))));
    }

    #[test]
    fn ffmpeg_is_looked_for_on_the_path_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find_on(dir.path().as_os_str()), None);
        std::fs::write(dir.path().join("ffmpeg"), "#!/bin/sh\n").unwrap();
        assert_eq!(find_on(dir.path().as_os_str()), None, "not executable");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path().join("ffmpeg"), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_on(dir.path().as_os_str()), Some(dir.path().join("ffmpeg")));
        assert_eq!(find_on(std::ffi::OsStr::new("")), None);
    }

    #[test]
    fn errors_hide_the_input_path() {
        let input = Path::new("/data/blobs/ab/cd");
        let e = ffmpeg_error(b"file:/data/blobs/ab/cd: Invalid data found when processing input\n", input);
        assert!(matches!(&e, DeriveError::Unsupported(m) if !m.contains("/data")), "{e}");
        let e = ffmpeg_error(b"[mov,mp4 @ 0x1] moov atom not found\nfile:/data/blobs/ab/cd: Invalid data\n", input);
        assert!(matches!(&e, DeriveError::Corrupt(m) if m.contains("moov")), "{e}");
    }
}
