//! Resampling to the thumbnail's size with `fast_image_resize` (SIMD convolution, Lanczos-3), in
//! the decoded pixel type, premultiplying alpha so transparent edges do not darken; then the
//! EXIF orientation, applied to the small result rather than to the full image.

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::DynamicImage;
use image::metadata::Orientation;

use super::geometry::Region;
use crate::DeriveError;

/// `image`'s `region` resampled to `width` × `height`, then turned by `orientation`.
pub(crate) fn resize(
    image: &DynamicImage,
    region: Region,
    width: u32,
    height: u32,
    orientation: Orientation,
) -> Result<DynamicImage, DeriveError> {
    let mut out = DynamicImage::new(width, height, image.color());
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3)).crop(
        region.left,
        region.top,
        region.width,
        region.height,
    );
    Resizer::new()
        .resize(image, &mut out, &options)
        .map_err(|e| DeriveError::Unsupported(format!("resizing {:?} pixels: {e}", image.color())))?;
    out.apply_orientation(orientation);
    Ok(out)
}
