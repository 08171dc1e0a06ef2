//! The thumbnail's bytes: lossy WebP through libwebp (the `webp` crate; `image`'s own WebP
//! encoder is lossless only, 15 times larger for a photo), or baseline JPEG through libjpeg-turbo
//! (the `mozjpeg` crate, with its fastest profile and optimized Huffman tables). Both at quality
//! 80. Transparency is kept in WebP and put on white in JPEG, which has none.

use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, RgbImage, RgbaImage};

use crate::DeriveError;

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputFormat {
    /// `image/webp`, lossy.
    Webp,
    /// `image/jpeg`, baseline.
    Jpeg,
}

impl OutputFormat {
    /// The media type of the output.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Webp => "image/webp",
            OutputFormat::Jpeg => "image/jpeg",
        }
    }
}

/// Encoding quality, 0 to 100, for both formats.
const QUALITY: u8 = 80;

/// How hard the encoder works for a smaller file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effort {
    /// For a thumbnail, made once and served many times.
    Thumbnail,
    /// For a placeholder, made per request: as fast as the encoder goes (a flat grey image
    /// compresses to almost nothing anyway).
    Placeholder,
}

/// `image` encoded as `format`.
pub(crate) fn encode(image: &DynamicImage, format: OutputFormat, effort: Effort) -> Result<Vec<u8>, DeriveError> {
    let transparent =
        image.color().has_alpha().then(|| image.to_rgba8()).filter(|rgba| rgba.pixels().any(|p| p[3] < 255));
    match (format, transparent) {
        (OutputFormat::Webp, Some(rgba)) => webp(&webp::Encoder::from_rgba(&rgba, rgba.width(), rgba.height()), effort),
        (OutputFormat::Webp, None) => {
            let rgb = image.to_rgb8();
            webp(&webp::Encoder::from_rgb(&rgb, rgb.width(), rgb.height()), effort)
        }
        (OutputFormat::Jpeg, Some(rgba)) => jpeg(&on_white(&rgba)),
        (OutputFormat::Jpeg, None) => jpeg(&image.to_rgb8()),
    }
}

fn webp(encoder: &webp::Encoder<'_>, effort: Effort) -> Result<Vec<u8>, DeriveError> {
    let mut config =
        webp::WebPConfig::new().map_err(|()| encode_failed("libwebp refused its default configuration"))?;
    config.quality = f32::from(QUALITY);
    // libwebp's methods go from 0 (fastest) to 6 (smallest). 4, its default, takes 5 ms for a
    // 300 × 225 photo and makes it 6% smaller than 2 (2 ms) and 14% smaller than 0 (1 ms).
    config.method = match effort {
        Effort::Thumbnail => 4,
        Effort::Placeholder => 0,
    };
    let out = encoder.encode_advanced(&config).map_err(|e| encode_failed(&format!("WebP: {e:?}")))?;
    Ok(out.to_vec())
}

fn jpeg(rgb: &RgbImage) -> Result<Vec<u8>, DeriveError> {
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    let encoded = catch_unwind(AssertUnwindSafe(|| -> std::io::Result<Vec<u8>> {
        let mut compress = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        // The profile first: it resets every other setting.
        compress.set_fastest_defaults();
        compress.set_quality(f32::from(QUALITY));
        compress.set_optimize_coding(true);
        compress.set_size(width, height);
        let mut started = compress.start_compress(Vec::new())?;
        started.write_scanlines(rgb.as_raw())?;
        started.finish()
    }));
    match encoded {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => Err(encode_failed(&format!("JPEG: {e}"))),
        Err(_) => Err(encode_failed("JPEG: the encoder failed")),
    }
}

/// `rgba` composed over white.
fn on_white(rgba: &RgbaImage) -> RgbImage {
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y);
        let a = u16::from(p[3]);
        image::Rgb([0, 1, 2].map(|i| ((u16::from(p[i]) * a + 255 * (255 - a) + 127) / 255) as u8))
    })
}

/// An encoder failing on pixels it was handed is a fault here, not in the input.
fn encode_failed(what: &str) -> DeriveError {
    DeriveError::Io(std::io::Error::other(format!("encoding the thumbnail failed: {what}")))
}
