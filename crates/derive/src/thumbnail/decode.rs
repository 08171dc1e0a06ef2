//! From input bytes to pixels: what the format is and how large the image claims to be (read
//! from the header, before anything is decoded or allocated), then the decode itself, in the
//! image's own pixel type (a 16-bit PNG stays 16-bit, a grey one grey: no full-size RGBA copy).
//!
//! JPEG goes to [`super::jpeg`] (scaled while decoded), a still WebP to [`super::webp_input`]
//! (libwebp); PNG, GIF (its first frame only), an animated WebP (its first frame), TIFF and BMP to
//! the `image` crate's decoders, bounded by [`Limits::max_alloc_bytes`]. Anything else, a known
//! image format this build does not read included, is [`DeriveError::Unsupported`].

use std::io::Cursor;

use image::codecs::{bmp::BmpDecoder, gif::GifDecoder, png::PngDecoder, tiff::TiffDecoder, webp::WebPDecoder};
use image::error::ImageError;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat};

use super::geometry::jpeg_scale_numerator;
use super::jpeg::{self, JpegInfo};
use super::webp_input;
use crate::{DeriveError, Limits};

/// The formats read, as named in messages.
pub(crate) const FORMATS: &str = "JPEG, PNG, GIF, WebP, TIFF, BMP";

/// An input's format and its dimensions as its header states them.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    pub(crate) format: InputFormat,
    pub(crate) width: u32,
    pub(crate) height: u32,
}

/// The input formats this recipe reads.
#[derive(Debug, Clone)]
pub(crate) enum InputFormat {
    /// With what its markers say (orientation, scans, whether it is whole).
    Jpeg(JpegInfo),
    /// Decoded by the `image` crate.
    Other(ImageFormat),
}

/// Pixels decoded, in the stored orientation, with the orientation to apply.
pub(crate) struct Decoded {
    pub(crate) pixels: Pixels,
    pub(crate) orientation: Orientation,
}

/// Decoded pixels, in the buffer their decoder filled.
pub(crate) enum Pixels {
    /// By `image`, or copied into its buffer types.
    Image(DynamicImage),
    /// By libwebp: RGB, or RGBA with alpha.
    Webp(webp::WebPImage),
}

impl Pixels {
    /// Width and height.
    pub(crate) fn dimensions(&self) -> (u32, u32) {
        match self {
            Pixels::Image(image) => (image.width(), image.height()),
            Pixels::Webp(image) => (image.width(), image.height()),
        }
    }
}

/// The format of `bytes` (by its magic bytes) and the dimensions its header gives: cheap, and
/// allocates nothing in proportion to the image. Not an image, or an image format not read here,
/// is [`DeriveError::Unsupported`]; a header that cannot be read is [`DeriveError::Corrupt`].
pub(crate) fn probe(bytes: &[u8]) -> Result<Probe, DeriveError> {
    if jpeg::is_jpeg(bytes) {
        let info = jpeg::read_info(bytes)?;
        return Ok(Probe { width: info.width, height: info.height, format: InputFormat::Jpeg(info) });
    }
    let format = image::guess_format(bytes)
        .map_err(|_| DeriveError::Unsupported(format!("not an image in a format read here ({FORMATS})")))?;
    if !matches!(format, ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP | ImageFormat::Tiff | ImageFormat::Bmp)
    {
        return Err(DeriveError::Unsupported(format!(
            "{} images are not read here (only {FORMATS})",
            format.extensions_str().first().unwrap_or(&"these")
        )));
    }
    let (width, height) = match imagesize::blob_size(bytes) {
        Ok(size) => {
            let side = |v: usize| u32::try_from(v).map_err(|_| DeriveError::TooLarge(format!("a side of {v} pixels")));
            (side(size.width)?, side(size.height)?)
        }
        // A header `imagesize` does not know (a rare TIFF layout, say): the decoder's own reading
        // of it, which allocates nothing for pixels either.
        Err(_) => image::ImageReader::with_format(Cursor::new(bytes), format)
            .into_dimensions()
            .map_err(|e| DeriveError::Corrupt(format!("the image's header could not be read: {e}")))?,
    };
    Ok(Probe { format: InputFormat::Other(format), width, height })
}

/// Decodes `bytes` as `probe` found them, for a thumbnail that scales the image by `scale`
/// (a JPEG is decoded smaller when that saves work). A JPEG cut short is [`DeriveError::Corrupt`]
/// rather than decoded with grey where its end is missing.
pub(crate) fn decode(bytes: &[u8], probe: &Probe, scale: f64, limits: &Limits) -> Result<Decoded, DeriveError> {
    match &probe.format {
        InputFormat::Jpeg(info) => {
            if !info.is_whole {
                return Err(DeriveError::Corrupt("the JPEG is truncated (it ends before its end marker)".into()));
            }
            let numerator = jpeg_scale_numerator(scale);
            let needed = jpeg::decode_bytes_needed(info, numerator);
            if needed > limits.max_alloc_bytes {
                return Err(DeriveError::TooLarge(format!(
                    "decoding this JPEG needs about {needed} bytes, over the limit of {}",
                    limits.max_alloc_bytes
                )));
            }
            let image = jpeg::decode(bytes, info, numerator, limits)?;
            Ok(Decoded { pixels: Pixels::Image(image), orientation: info.orientation })
        }
        InputFormat::Other(ImageFormat::WebP) if !webp_input::is_animated(bytes) => {
            let image = webp_input::decode(bytes, probe.width, probe.height, limits)?;
            Ok(Decoded { pixels: Pixels::Webp(image), orientation: webp_input::orientation(bytes) })
        }
        InputFormat::Other(format) => decode_other(bytes, *format, limits).map_err(from_image_error),
    }
}

/// [`DeriveError::TooLarge`] if `width` × `height` is over [`Limits::max_pixels`].
pub(crate) fn check_pixels(width: u32, height: u32, limits: &Limits) -> Result<(), DeriveError> {
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DeriveError::TooLarge(format!(
            "the image is {width} × {height} pixels, over the limit of {} pixels",
            limits.max_pixels
        )));
    }
    Ok(())
}

fn decode_other(bytes: &[u8], format: ImageFormat, limits: &Limits) -> Result<Decoded, ImageError> {
    let mut image_limits = image::Limits::default();
    image_limits.max_alloc = Some(limits.max_alloc_bytes);
    let reader = Cursor::new(bytes);
    let max_pixels = limits.max_pixels;
    match format {
        ImageFormat::Png => finish(PngDecoder::with_limits(reader, image_limits.clone())?, image_limits, max_pixels),
        // GIF: `read_image` decodes the first frame and stops; the other frames are never read.
        ImageFormat::Gif => finish(GifDecoder::new(reader)?, image_limits, max_pixels),
        ImageFormat::WebP => finish(WebPDecoder::new(reader)?, image_limits, max_pixels),
        ImageFormat::Tiff => finish(TiffDecoder::new(reader)?, image_limits, max_pixels),
        ImageFormat::Bmp => finish(BmpDecoder::new(reader)?, image_limits, max_pixels),
        other => Err(ImageError::Unsupported(image::error::ImageFormatHint::Exact(other).into())),
    }
}

fn finish(
    mut decoder: impl ImageDecoder,
    mut image_limits: image::Limits,
    max_pixels: u64,
) -> Result<Decoded, ImageError> {
    // The probe checked the header's dimensions; these are the decoder's reading of them.
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageError::Limits(image::error::LimitError::from_kind(
            image::error::LimitErrorKind::DimensionError,
        )));
    }
    image_limits.reserve(decoder.total_bytes())?;
    decoder.set_limits(image_limits)?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let image = DynamicImage::from_decoder(decoder)?;
    Ok(Decoded { pixels: Pixels::Image(image), orientation })
}

/// The recipe's error for the `image` crate's: over a limit, not supported, or (decoding from
/// memory, where every read error is about the bytes) corrupt.
fn from_image_error(e: ImageError) -> DeriveError {
    match e {
        ImageError::Limits(e) => DeriveError::TooLarge(format!("decoding the image: {e}")),
        ImageError::Unsupported(e) => DeriveError::Unsupported(e.to_string()),
        ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            DeriveError::Corrupt("the image is truncated".into())
        }
        e => DeriveError::Corrupt(e.to_string()),
    }
}
