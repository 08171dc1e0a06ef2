//! `video-thumbnail`: frames of short videos that ffmpeg itself makes in the test (red for its
//! first second, blue for its second), the fallback to the first frame, and videos ffmpeg cannot
//! read. Without ffmpeg the tests skip, unless `TIERCACHE_REQUIRE_SERVERS=1` (as CI sets), where
//! they fail: `.ci/run` installs it.

use std::path::Path;
use std::process::Command;

use image::RgbImage;
use tiercache_derive::{DeriveError, recipe};

use crate::{limits, run, run_with};

/// Whether ffmpeg can run here; a skip (or, when required, a failure) otherwise.
fn has_ffmpeg() -> bool {
    if recipe("video-thumbnail").unwrap().available().is_ok() {
        return true;
    }
    if std::env::var("TIERCACHE_REQUIRE_SERVERS").as_deref() == Ok("1") {
        panic!("ffmpeg is required (TIERCACHE_REQUIRE_SERVERS=1) but not on PATH: apt-get install ffmpeg");
    }
    eprintln!("skipped: ffmpeg not on PATH (apt-get install ffmpeg)");
    false
}

/// A 2-second, 10 frames a second, 160 × 120 MP4: red for a second, then blue.
fn red_then_blue(dir: &Path) -> Vec<u8> {
    let path = dir.join("video.mp4");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "color=c=red:s=160x120:r=10:d=1"])
        .args(["-f", "lavfi", "-i", "color=c=blue:s=160x120:r=10:d=1"])
        .args(["-filter_complex", "[0:v][1:v]concat=n=2:v=1,format=yuv420p", "-c:v", "mpeg4", "-q:v", "2"])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg made no test video");
    std::fs::read(path).unwrap()
}

fn frame(input: &[u8], pairs: &[(&str, &str)]) -> RgbImage {
    let (produced, bytes) = run("video-thumbnail", input, pairs).unwrap();
    assert_eq!(produced.content_type, "image/jpeg");
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg).unwrap().to_rgb8()
}

#[track_caller]
fn assert_colour(image: &RgbImage, want: [u8; 3]) {
    let got = image.get_pixel(image.width() / 2, image.height() / 2).0;
    assert!(got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 48), "centre is {got:?}, expected about {want:?}");
}

#[test]
fn a_frame_at_the_time_asked_becomes_a_thumbnail() {
    if !has_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let video = red_then_blue(dir.path());
    let first = frame(&video, &[("size", "100"), ("at", "0")]);
    assert_eq!(first.dimensions(), (100, 75));
    assert_colour(&first, [255, 0, 0]);
    assert_colour(&frame(&video, &[("size", "100"), ("at", "1.5")]), [0, 0, 255]);
    // Past the end: the first frame.
    assert_colour(&frame(&video, &[("size", "100"), ("at", "60")]), [255, 0, 0]);
    assert_eq!(frame(&video, &[("size", "50"), ("fit", "cover")]).dimensions(), (50, 50));
    let (produced, bytes) = run("video-thumbnail", &video, &[("size", "64"), ("format", "webp")]).unwrap();
    assert_eq!(produced.content_type, "image/webp");
    assert_eq!(image::load_from_memory(&bytes).unwrap().to_rgb8().dimensions(), (64, 48));
}

#[test]
fn a_video_ffmpeg_cannot_read_is_an_error_and_ffmpeg_keeps_to_its_time() {
    if !has_ffmpeg() {
        return;
    }
    let text = run("video-thumbnail", b"this is a letter, not a film", &[("size", "100")]);
    assert!(matches!(&text, Err(DeriveError::Unsupported(m)) if !m.contains("/tmp")), "{text:?}");
    let dir = tempfile::tempdir().unwrap();
    let video = red_then_blue(dir.path());
    let cut = run("video-thumbnail", &video[..video.len() / 3], &[("size", "100")]);
    assert!(matches!(cut, Err(DeriveError::Corrupt(_) | DeriveError::Unsupported(_))), "{cut:?}");
    // Past its deadline, ffmpeg is stopped.
    let mut late = limits();
    late.deadline = std::time::Instant::now();
    let result = run_with("video-thumbnail", &video, &[("size", "100")], &late);
    assert!(matches!(result, Err(DeriveError::TimedOut)), "{result:?}");
    // A playlist that points elsewhere is not followed.
    let playlist = b"#EXTM3U\n#EXTINF:1,\nhttp://127.0.0.1:9/segment.ts\n";
    let result = run("video-thumbnail", playlist, &[("size", "100")]);
    assert!(matches!(result, Err(DeriveError::Unsupported(_))), "{result:?}");
}
