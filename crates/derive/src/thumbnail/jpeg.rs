//! JPEG input: a walk over the file's markers (dimensions, EXIF orientation, Adobe CMYK, whether
//! the file is whole), then libjpeg-turbo (the `mozjpeg` crate) decoding straight to a reduced
//! size by DCT scaling: a 12 MP photo asked for a 300 px thumbnail is decoded to 1000 × 750, never
//! to its full 4000 × 3000.
//!
//! libjpeg reports a fatal error by unwinding out of the C code (the `mozjpeg` crate's design);
//! every call into it runs under `catch_unwind`, so a hostile file ends as an error, never as a
//! crash. It does not decode arithmetic-coded, lossless or hierarchical JPEGs (rare, and not built
//! into the library): those are [`DeriveError::Unsupported`].

use std::panic::{AssertUnwindSafe, catch_unwind};

use image::metadata::Orientation;
use image::{DynamicImage, GrayImage, RgbImage};
use mozjpeg::{Decompress, Format};

use super::geometry::jpeg_scaled_dims;
use crate::{DeriveError, Limits};

/// What the markers of a JPEG say, read without decoding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JpegInfo {
    pub(crate) width: u32,
    pub(crate) height: u32,
    /// Colour components (1 grey, 3 YCbCr or RGB, 4 CMYK or YCCK).
    pub(crate) components: u8,
    /// Whether decoding needs the whole image's coefficients in memory (a progressive JPEG, or a
    /// baseline one with several scans).
    pub(crate) is_multi_scan: bool,
    /// Whether an Adobe APP14 segment is present: CMYK samples are then stored inverted.
    pub(crate) has_adobe: bool,
    /// The EXIF orientation (no transforms without one).
    pub(crate) orientation: Orientation,
    /// Whether the end-of-image marker was reached: a file cut short (or a head of one) has not.
    pub(crate) is_whole: bool,
}

/// Whether `bytes` start like a JPEG (the SOI marker and the first marker's prefix).
pub(crate) fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Walks the markers of `bytes` (a whole file, or only its head for a placeholder) as far as
/// they go. `Ok` once a frame header (SOF) was seen; the caller checks [`JpegInfo::is_whole`].
/// A frame type libjpeg-turbo cannot decode is [`DeriveError::Unsupported`]; a malformed segment
/// or no frame header is [`DeriveError::Corrupt`].
pub(crate) fn read_info(bytes: &[u8]) -> Result<JpegInfo, DeriveError> {
    if !is_jpeg(bytes) {
        return Err(DeriveError::Unsupported("not a JPEG".into()));
    }
    let mut frame: Option<(u32, u32, u8, bool)> = None;
    let mut n_scans = 0u32;
    let mut has_adobe = false;
    let mut orientation = Orientation::NoTransforms;
    let mut is_whole = false;
    let mut pos = 2;
    while let Some(at) = next_marker(bytes, pos) {
        let marker = bytes[at];
        pos = at + 1;
        match marker {
            // Standalone markers: no length follows.
            0x01 | 0xD0..=0xD8 => continue,
            0xD9 => {
                is_whole = true;
                break;
            }
            _ => {}
        }
        let Some(len) = bytes.get(pos..pos + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else {
            break;
        };
        if len < 2 {
            return Err(DeriveError::Corrupt(format!("JPEG segment {marker:#04x} has a length of {len}")));
        }
        let Some(segment) = bytes.get(pos + 2..pos + len) else {
            break;
        };
        pos += len;
        match marker {
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if !matches!(marker, 0xC0..=0xC2) {
                    return Err(DeriveError::Unsupported(format!(
                        "a JPEG of frame type SOF{} (arithmetic-coded, lossless or hierarchical)",
                        marker - 0xC0
                    )));
                }
                frame = Some(read_frame(segment, marker == 0xC2)?);
            }
            0xDA => {
                n_scans += 1;
                // The entropy-coded data runs to the next marker that is not a restart marker.
                pos = skip_entropy_coded(bytes, pos);
            }
            0xE1 => {
                if let Some(exif) = segment.strip_prefix(b"Exif\0\0") {
                    orientation = Orientation::from_exif_chunk(exif).unwrap_or(Orientation::NoTransforms);
                }
            }
            0xEE => has_adobe |= segment.starts_with(b"Adobe"),
            _ => {}
        }
    }
    let (width, height, components, is_progressive) =
        frame.ok_or_else(|| DeriveError::Corrupt("no JPEG frame header (SOF) before the data ends".into()))?;
    Ok(JpegInfo {
        width,
        height,
        components,
        is_multi_scan: is_progressive || n_scans > 1,
        has_adobe,
        orientation,
        is_whole,
    })
}

/// The position of the next marker code (the byte after its `0xFF`s) at or after `pos`.
fn next_marker(bytes: &[u8], pos: usize) -> Option<usize> {
    let ff = pos + memchr::memchr(0xFF, bytes.get(pos..)?)?;
    let code = ff + bytes[ff..].iter().position(|&b| b != 0xFF)?;
    Some(code)
}

/// The position of the `0xFF` that ends the entropy-coded data starting at `pos` (`bytes.len()`
/// if the data runs to the end): the first `0xFF` followed by neither a stuffed `0x00`, nor a
/// restart marker, nor another `0xFF`.
fn skip_entropy_coded(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(i) = bytes.get(pos..).and_then(|rest| memchr::memchr(0xFF, rest)) {
        let ff = pos + i;
        match bytes.get(ff + 1) {
            Some(0x00 | 0xD0..=0xD7) => pos = ff + 2,
            Some(0xFF) => pos = ff + 1,
            Some(_) => return ff,
            None => break,
        }
    }
    bytes.len()
}

fn read_frame(segment: &[u8], is_progressive: bool) -> Result<(u32, u32, u8, bool), DeriveError> {
    let [precision, h0, h1, w0, w1, components, ..] = *segment else {
        return Err(DeriveError::Corrupt("JPEG frame header too short".into()));
    };
    if precision != 8 {
        return Err(DeriveError::Unsupported(format!("a JPEG of {precision} bits a sample (only 8 are read)")));
    }
    let (height, width) = (u16::from_be_bytes([h0, h1]), u16::from_be_bytes([w0, w1]));
    if width == 0 || height == 0 {
        // A height of 0 (defined later by a DNL marker) is legal but libjpeg refuses it too.
        return Err(DeriveError::Unsupported("a JPEG with a zero dimension in its frame header".into()));
    }
    Ok((u32::from(width), u32::from(height), components, is_progressive))
}

/// The bytes libjpeg-turbo will allocate to decode `info` at `numerator/8`: the output image, and
/// for a multi-scan JPEG the whole image's DCT coefficients (2 bytes a sample, an upper bound:
/// subsampled chroma needs less). Baseline single-scan decoding otherwise works in a few rows.
pub(crate) fn decode_bytes_needed(info: &JpegInfo, numerator: u8) -> u64 {
    let (w, h) = jpeg_scaled_dims(info.width, info.height, numerator);
    let channels = u64::from(info.components.max(3));
    let mut bytes = u64::from(w) * u64::from(h) * (channels + 3);
    if info.is_multi_scan {
        let padded = (u64::from(info.width) + 15) * (u64::from(info.height) + 15);
        bytes += padded * u64::from(info.components) * 2;
    }
    bytes
}

/// Decodes `bytes` (described by `info`) at `numerator/8` of its size to RGB or grey, checking
/// the deadline between bands of rows.
pub(crate) fn decode(
    bytes: &[u8],
    info: &JpegInfo,
    numerator: u8,
    limits: &Limits,
) -> Result<DynamicImage, DeriveError> {
    match catch_unwind(AssertUnwindSafe(|| decode_unguarded(bytes, info, numerator, limits))) {
        Ok(result) => result,
        Err(payload) => Err(DeriveError::Corrupt(panic_message(payload.as_ref()))),
    }
}

/// Rows read between two looks at the deadline.
const BAND_ROWS: usize = 64;

fn decode_unguarded(
    bytes: &[u8],
    info: &JpegInfo,
    numerator: u8,
    limits: &Limits,
) -> Result<DynamicImage, DeriveError> {
    let corrupt = |e: std::io::Error| DeriveError::Corrupt(format!("JPEG: {e}"));
    let mut decompress = Decompress::new_mem(bytes).map_err(corrupt)?;
    decompress.scale(numerator);
    let image = match decompress.image().map_err(corrupt)? {
        Format::RGB(mut started) => {
            let (w, h) = (started.width(), started.height());
            let mut buf = vec![0u8; w * h * 3];
            for band in buf.chunks_mut(w * 3 * BAND_ROWS) {
                limits.check_time()?;
                started.read_scanlines_into(band).map_err(corrupt)?;
            }
            started.finish().map_err(corrupt)?;
            DynamicImage::ImageRgb8(RgbImage::from_raw(w as u32, h as u32, buf).ok_or_else(size_mismatch)?)
        }
        Format::Gray(mut started) => {
            let (w, h) = (started.width(), started.height());
            let mut buf = vec![0u8; w * h];
            for band in buf.chunks_mut(w * BAND_ROWS) {
                limits.check_time()?;
                started.read_scanlines_into(band).map_err(corrupt)?;
            }
            started.finish().map_err(corrupt)?;
            DynamicImage::ImageLuma8(GrayImage::from_raw(w as u32, h as u32, buf).ok_or_else(size_mismatch)?)
        }
        Format::CMYK(mut started) => {
            let (w, h) = (started.width(), started.height());
            let mut rgb = Vec::with_capacity(w * h * 3);
            let mut band = vec![0u8; w * 4 * BAND_ROWS];
            let mut rows_left = h;
            while rows_left > 0 {
                limits.check_time()?;
                let rows = rows_left.min(BAND_ROWS);
                let band = &mut band[..w * 4 * rows];
                started.read_scanlines_into(band).map_err(corrupt)?;
                cmyk_to_rgb(band, info.has_adobe, &mut rgb);
                rows_left -= rows;
            }
            started.finish().map_err(corrupt)?;
            DynamicImage::ImageRgb8(RgbImage::from_raw(w as u32, h as u32, rgb).ok_or_else(size_mismatch)?)
        }
    };
    Ok(image)
}

fn size_mismatch() -> DeriveError {
    DeriveError::Corrupt("JPEG: the decoder returned fewer pixels than its dimensions".into())
}

/// Appends the RGB of CMYK `pixels` to `rgb`. Adobe's files (APP14 present: nearly every CMYK
/// JPEG there is) store the samples inverted. A naive conversion, with no colour profile: good
/// enough for a thumbnail.
fn cmyk_to_rgb(pixels: &[u8], is_inverted: bool, rgb: &mut Vec<u8>) {
    for p in pixels.chunks_exact(4) {
        let (c, m, y, k) =
            if is_inverted { (p[0], p[1], p[2], p[3]) } else { (255 - p[0], 255 - p[1], 255 - p[2], 255 - p[3]) };
        let k = u16::from(k);
        for v in [c, m, y] {
            rgb.push(((u16::from(v) * k + 127) / 255) as u8);
        }
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("the JPEG decoder failed");
    text.strip_prefix("libjpeg fatal error: ").unwrap_or(text).chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_converts_both_ways() {
        let mut rgb = Vec::new();
        // Inverted (Adobe): 255 means no ink.
        cmyk_to_rgb(&[255, 0, 255, 255], true, &mut rgb);
        assert_eq!(rgb, [255, 0, 255]);
        rgb.clear();
        cmyk_to_rgb(&[0, 255, 0, 0], false, &mut rgb);
        assert_eq!(rgb, [255, 0, 255]);
    }

    #[test]
    fn marker_walk_stops_at_a_cut() {
        assert!(matches!(read_info(b"\xFF\xD8\xFF\xE0\x00"), Err(DeriveError::Corrupt(_))));
        assert!(matches!(read_info(b"GIF89a"), Err(DeriveError::Unsupported(_))));
        // SOF0 of 30000 × 20000 and nothing after: read, but not whole.
        let mut head = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 8];
        head.extend(20000u16.to_be_bytes());
        head.extend(30000u16.to_be_bytes());
        head.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        let info = read_info(&head).unwrap();
        assert_eq!((info.width, info.height, info.components, info.is_whole), (30000, 20000, 3, false));
    }
}
