//! Resampling to the thumbnail's size with `fast_image_resize` (SIMD convolution, Lanczos-3), in
//! the decoded pixel type, premultiplying alpha so transparent edges do not darken; then the
//! EXIF orientation, applied to the small result rather than to the full image.

use fast_image_resize::images::ImageRef;
use fast_image_resize::{FilterType, IntoImageView, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::metadata::Orientation;
use image::{ColorType, DynamicImage};

use super::decode::Pixels;
use super::geometry::Region;
use crate::DeriveError;

/// `pixels`' `region` resampled to `width` × `height`, then turned by `orientation`.
pub(crate) fn resize(
    pixels: &Pixels,
    region: Region,
    width: u32,
    height: u32,
    orientation: Orientation,
) -> Result<DynamicImage, DeriveError> {
    let mut out = match pixels {
        Pixels::Image(image) => resample(image, image.color(), region, width, height)?,
        Pixels::Webp(image) => {
            let (pixel_type, color) =
                if image.is_alpha() { (PixelType::U8x4, ColorType::Rgba8) } else { (PixelType::U8x3, ColorType::Rgb8) };
            let view = ImageRef::new(image.width(), image.height(), image, pixel_type)
                .map_err(|e| DeriveError::Corrupt(format!("libwebp's pixels: {e}")))?;
            resample(&view, color, region, width, height)?
        }
    };
    out.apply_orientation(orientation);
    Ok(out)
}

fn resample(
    src: &impl IntoImageView,
    color: ColorType,
    region: Region,
    width: u32,
    height: u32,
) -> Result<DynamicImage, DeriveError> {
    let mut out = DynamicImage::new(width, height, color);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).crop(
        region.left,
        region.top,
        region.width,
        region.height,
    );
    Resizer::new()
        .resize(src, &mut out, &options)
        .map_err(|e| DeriveError::Unsupported(format!("resizing {color:?} pixels: {e}")))?;
    Ok(out)
}
