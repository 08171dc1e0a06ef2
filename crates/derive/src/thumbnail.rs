//! `thumbnail`: a small WebP or JPEG of an image (JPEG, PNG, GIF's first frame, WebP, TIFF, BMP),
//! its EXIF orientation applied, and a placeholder of the same shape to show while it is made.
//!
//! The steps, each bounded by [`Limits`] and with the deadline checked between them:
//! 1. read the input whole, after checking its length ([`Limits::max_input_bytes`]);
//! 2. read its format and dimensions from the header ([`decode::probe`]) and refuse an image of
//!    more than [`Limits::max_pixels`] before anything is allocated for its pixels;
//! 3. decode in the image's own pixel type, a JPEG at the smallest DCT scale that leaves a factor
//!    of two for the resizer ([`decode::decode`], [`jpeg`], [`webp_input`]), allocations bounded
//!    by [`Limits::max_alloc_bytes`];
//! 4. resample to the output size and apply the orientation ([`resize::resize`]);
//! 5. encode ([`encode::encode`]) and write at most [`Limits::max_output_bytes`].
//!
//! It does not manage colour (ICC profiles are ignored: sRGB is assumed) and keeps no metadata.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use image::metadata::Orientation;
use image::{DynamicImage, Rgb, RgbImage};

use crate::{Capped, DeriveError, Limits, Params, Produced, Recipe, known_params};

mod decode;
mod encode;
mod geometry;
mod jpeg;
mod resize;
mod webp_input;

pub(crate) use encode::OutputFormat;
pub(crate) use geometry::Fit;

/// The `thumbnail` recipe. Parameters: `size` (required: the side of the square box the
/// thumbnail fits, 1 to 4096 pixels), `fit` = `contain` (default: the whole image inside the box,
/// never enlarged) | `cover` (the box filled exactly, centred crop), `format` = `webp` | `jpeg`
/// (default: WebP if the request's `Accept` lists `image/webp`, else JPEG).
#[derive(Debug, Clone, Copy)]
pub struct Thumbnail;

/// The largest `size` asked for.
pub(crate) const MAX_SIZE: u32 = 4096;

/// A thumbnail's parameters, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spec {
    /// The side of the box, 1 to [`MAX_SIZE`].
    pub(crate) size: u32,
    /// How the image fills the box.
    pub(crate) fit: Fit,
    /// The output's format.
    pub(crate) format: OutputFormat,
}

impl Spec {
    /// The names of the parameters a [`Spec`] is made of.
    pub(crate) const NAMES: [&str; 3] = ["size", "fit", "format"];

    /// Parses the parameters a request gave (already checked against the known names).
    pub(crate) fn parse(
        given: &std::collections::BTreeMap<&str, &str>,
        accept: Option<&str>,
    ) -> Result<Spec, DeriveError> {
        let size = given.get("size").ok_or_else(|| {
            DeriveError::BadParam(format!("size= is required (the thumbnail's longest side, 1 to {MAX_SIZE} pixels)"))
        })?;
        Ok(Spec {
            size: parse_size(size)?,
            fit: given.get("fit").map_or(Ok(Fit::Contain), |f| parse_fit(f))?,
            format: match given.get("format") {
                Some(f) => parse_format(f)?,
                None => format_for_accept(accept),
            },
        })
    }

    /// The canonical parameters (every one present, so that equal requests name one key).
    pub(crate) fn pairs(&self) -> [(&'static str, String); 3] {
        let fit = match self.fit {
            Fit::Contain => "contain",
            Fit::Cover => "cover",
        };
        let format = match self.format {
            OutputFormat::Webp => "webp",
            OutputFormat::Jpeg => "jpeg",
        };
        [("size", self.size.to_string()), ("fit", fit.to_owned()), ("format", format.to_owned())]
    }

    /// The spec in canonical `params` (as [`Thumbnail::params`] made them).
    pub(crate) fn from_canonical(params: &Params) -> Result<Spec, DeriveError> {
        let missing =
            |name: &str| DeriveError::BadParam(format!("thumbnail: {name} missing from canonical parameters"));
        Ok(Spec {
            size: parse_size(params.get("size").ok_or_else(|| missing("size"))?)?,
            fit: parse_fit(params.get("fit").ok_or_else(|| missing("fit"))?)?,
            format: parse_format(params.get("format").ok_or_else(|| missing("format"))?)?,
        })
    }
}

fn parse_size(value: &str) -> Result<u32, DeriveError> {
    let bad = || {
        let shown: String = value.chars().take(16).collect();
        DeriveError::BadParam(format!("size={shown:?} is not a whole number from 1 to {MAX_SIZE}"))
    };
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let size: u32 = value.parse().map_err(|_| bad())?;
    if (1..=MAX_SIZE).contains(&size) { Ok(size) } else { Err(bad()) }
}

fn parse_fit(value: &str) -> Result<Fit, DeriveError> {
    match value.to_ascii_lowercase().as_str() {
        "contain" => Ok(Fit::Contain),
        "cover" => Ok(Fit::Cover),
        _ => {
            let shown: String = value.chars().take(16).collect();
            Err(DeriveError::BadParam(format!("fit={shown:?} is not one of contain, cover")))
        }
    }
}

fn parse_format(value: &str) -> Result<OutputFormat, DeriveError> {
    match value.to_ascii_lowercase().as_str() {
        "webp" => Ok(OutputFormat::Webp),
        "jpeg" | "jpg" => Ok(OutputFormat::Jpeg),
        _ => {
            let shown: String = value.chars().take(16).collect();
            Err(DeriveError::BadParam(format!("format={shown:?} is not one of webp, jpeg")))
        }
    }
}

/// WebP if `accept` lists `image/webp` (with a non-zero quality), else JPEG, which every client
/// shows. A wildcard does not count: browsers that show WebP name it.
pub(crate) fn format_for_accept(accept: Option<&str>) -> OutputFormat {
    let lists_webp = accept.unwrap_or("").split(',').take(64).any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let is_webp = parts.next().is_some_and(|m| m.eq_ignore_ascii_case("image/webp"));
        let refused = parts.any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
            })
        });
        is_webp && !refused
    });
    if lists_webp { OutputFormat::Webp } else { OutputFormat::Jpeg }
}

impl Recipe for Thumbnail {
    fn name(&self) -> &'static str {
        "thumbnail"
    }

    fn version(&self) -> u32 {
        1
    }

    fn params(&self, raw: &[(String, String)], accept: Option<&str>) -> Result<Params, DeriveError> {
        let given = known_params(raw, &Spec::NAMES)?;
        let spec = Spec::parse(&given, accept)?;
        Ok(Params::new(spec.pairs()))
    }

    fn run(
        &self,
        input: &Path,
        input_len: u64,
        params: &Params,
        limits: &Limits,
        out: &mut dyn Write,
    ) -> Result<Produced, DeriveError> {
        let spec = Spec::from_canonical(params)?;
        let bytes = read_input(input, input_len, limits)?;
        let encoded = thumbnail_of(&bytes, &spec, limits)?;
        write_output(&encoded, limits, out)?;
        Ok(Produced::written(spec.format.content_type()))
    }

    fn placeholder(&self, head: &[u8], params: &Params) -> Option<Produced> {
        let spec = Spec::from_canonical(params).ok()?;
        let (width, height) = placeholder_dims(head, &spec);
        let grey = DynamicImage::ImageRgb8(RgbImage::from_pixel(width, height, Rgb([128, 128, 128])));
        let bytes = encode::encode(&grey, spec.format, encode::Effort::Placeholder).ok()?;
        Some(Produced { content_type: spec.format.content_type().to_owned(), bytes })
    }
}

/// The input file's bytes, refused before reading if `input_len` (or, should the file have
/// grown, what is read) is over [`Limits::max_input_bytes`].
pub(crate) fn read_input(input: &Path, input_len: u64, limits: &Limits) -> Result<Vec<u8>, DeriveError> {
    let over = |len: u64| {
        DeriveError::TooLarge(format!("the input is {len} bytes, over the limit of {} bytes", limits.max_input_bytes))
    };
    if input_len > limits.max_input_bytes {
        return Err(over(input_len));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(input_len).unwrap_or(0));
    File::open(input)?.take(limits.max_input_bytes.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limits.max_input_bytes {
        return Err(over(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Writes `encoded` to `out`, [`DeriveError::TooLarge`] past [`Limits::max_output_bytes`].
pub(crate) fn write_output(encoded: &[u8], limits: &Limits, out: &mut dyn Write) -> Result<(), DeriveError> {
    Capped::new(out, limits.max_output_bytes).put(encoded)
}

/// The thumbnail of the image in `bytes`, encoded: the whole pipeline, for this recipe and for
/// `video-thumbnail`'s frame.
pub(crate) fn thumbnail_of(bytes: &[u8], spec: &Spec, limits: &Limits) -> Result<Vec<u8>, DeriveError> {
    let probe = decode::probe(bytes)?;
    decode::check_pixels(probe.width, probe.height, limits)?;
    limits.check_time()?;
    let scale = geometry::scale_factor(probe.width, probe.height, spec.size, spec.fit);
    let decoded = decode::decode(bytes, &probe, scale, limits)?;
    limits.check_time()?;
    // The output's size from the header's dimensions, so that a JPEG decoded at a reduced scale
    // (rounded up to whole pixels) gives the same thumbnail size as a full decode.
    let (width, height) = geometry::output_dims(probe.width, probe.height, spec.size, spec.fit);
    let (decoded_width, decoded_height) = decoded.pixels.dimensions();
    let region = geometry::source_region(decoded_width, decoded_height, spec.fit);
    let small = resize::resize(&decoded.pixels, region, width, height, decoded.orientation)?;
    drop(decoded);
    limits.check_time()?;
    encode::encode(&small, spec.format, encode::Effort::Thumbnail)
}

/// The thumbnail's dimensions as far as `head` (the input's first bytes) tells them, else the
/// box's.
fn placeholder_dims(head: &[u8], spec: &Spec) -> (u32, u32) {
    let stored = if jpeg::is_jpeg(head) {
        jpeg::read_info(head).ok().map(|info| (info.width, info.height, info.orientation))
    } else {
        imagesize::blob_size(head).ok().and_then(|s| {
            Some((u32::try_from(s.width).ok()?, u32::try_from(s.height).ok()?, Orientation::NoTransforms))
        })
    };
    match stored {
        Some((w, h, orientation)) if w > 0 && h > 0 => {
            let (w, h) = geometry::output_dims(w, h, spec.size, spec.fit);
            if swaps_sides(orientation) { (h, w) } else { (w, h) }
        }
        _ => (spec.size, spec.size),
    }
}

/// Whether applying `orientation` exchanges width and height.
fn swaps_sides(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)], accept: Option<&str>) -> Result<String, DeriveError> {
        let raw: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Thumbnail.params(&raw, accept).map(|p| p.canonical())
    }

    #[test]
    fn parameters_are_canonical_and_bounded() {
        assert_eq!(params(&[("size", "300")], None).unwrap(), "fit=contain&format=jpeg&size=300");
        assert_eq!(
            params(&[("size", "0300"), ("fit", "COVER")], Some("image/avif,image/webp,*/*")).unwrap(),
            "fit=cover&format=webp&size=300"
        );
        assert_eq!(
            params(&[("size", "1"), ("format", "jpg")], Some("image/webp")).unwrap(),
            "fit=contain&format=jpeg&size=1"
        );
        assert_eq!(
            params(&[("size", "4096")], Some("image/webp;q=0, */*")).unwrap(),
            "fit=contain&format=jpeg&size=4096"
        );
        for bad in [
            vec![],
            vec![("size", "0")],
            vec![("size", "4097")],
            vec![("size", "100000")],
            vec![("size", "99999999999999999999")],
            vec![("size", "-1")],
            vec![("size", "+3")],
            vec![("size", " 3")],
            vec![("size", "3"), ("fit", "x")],
            vec![("size", "3"), ("format", "gif")],
            vec![("size", "3"), ("quality", "9")],
            vec![("size", "3"), ("size", "4")],
        ] {
            assert!(matches!(params(&bad, None), Err(DeriveError::BadParam(_))), "{bad:?}");
        }
    }

    #[test]
    fn accept_picks_webp_only_when_named() {
        assert_eq!(format_for_accept(None), OutputFormat::Jpeg);
        assert_eq!(format_for_accept(Some("*/*")), OutputFormat::Jpeg);
        assert_eq!(format_for_accept(Some("image/*")), OutputFormat::Jpeg);
        assert_eq!(format_for_accept(Some("text/html, IMAGE/WEBP;q=0.8")), OutputFormat::Webp);
        assert_eq!(format_for_accept(Some("image/webp; q=0.0")), OutputFormat::Jpeg);
    }
}
