//! The sizes of a thumbnail: from the source's dimensions and the request's box to the output's
//! dimensions, the part of the source it shows, and how far a JPEG may be shrunk while it is
//! decoded. Pure arithmetic on `u32`s; it knows nothing of pixels.

/// How the source fills the `size` × `size` box.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fit {
    /// The whole source, inside the box, aspect ratio kept, never larger than the source.
    Contain,
    /// The box filled exactly: the source scaled to cover it, the overflow cropped from both
    /// sides (centred).
    Cover,
}

/// A source region in source pixels (the part a `cover` thumbnail shows).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Region {
    pub(crate) left: f64,
    pub(crate) top: f64,
    pub(crate) width: f64,
    pub(crate) height: f64,
}

/// The output's dimensions for a source of `width` × `height` (in the orientation it is stored,
/// so that the caller resizes first and rotates the small result after): `contain` keeps the
/// aspect ratio inside the box and never enlarges; `cover` is always `size` × `size`. Both sides
/// are at least 1.
pub(crate) fn output_dims(width: u32, height: u32, size: u32, fit: Fit) -> (u32, u32) {
    match fit {
        Fit::Cover => (size, size),
        Fit::Contain => {
            let scale = contain_scale(width, height, size);
            (scaled(width, scale), scaled(height, scale))
        }
    }
}

/// The factor the source is scaled by (at most 1 for `contain`; above 1 for a `cover` of a
/// source smaller than the box). Symmetric in width and height, so a rotation does not change it.
pub(crate) fn scale_factor(width: u32, height: u32, size: u32, fit: Fit) -> f64 {
    match fit {
        Fit::Contain => contain_scale(width, height, size),
        Fit::Cover => f64::from(size) / f64::from(width.min(height).max(1)),
    }
}

fn contain_scale(width: u32, height: u32, size: u32) -> f64 {
    let longest = width.max(height).max(1);
    (f64::from(size) / f64::from(longest)).min(1.0)
}

fn scaled(side: u32, scale: f64) -> u32 {
    // At most `size` (≤ 4096) or the side itself: the cast cannot overflow.
    ((f64::from(side) * scale).round() as u32).clamp(1, side.max(1))
}

/// The part of a `width` × `height` image that a thumbnail shows: all of it for `contain`, the
/// centred square for `cover`.
pub(crate) fn source_region(width: u32, height: u32, fit: Fit) -> Region {
    let (w, h) = (f64::from(width), f64::from(height));
    match fit {
        Fit::Contain => Region { left: 0.0, top: 0.0, width: w, height: h },
        Fit::Cover => {
            let side = w.min(h);
            Region { left: (w - side) / 2.0, top: (h - side) / 2.0, width: side, height: side }
        }
    }
}

/// The numerator `n` of the `n/8` scale at which a JPEG is decoded for a thumbnail scaled by
/// `scale`: the smallest that leaves the resizer at least a factor of two (DCT scaling is a block
/// average, so a last proper resampling step keeps the thumbnail sharp without aliasing; vips and
/// Pillow keep the same margin). 8 (no scaling) when the thumbnail is near or above half size.
pub(crate) fn jpeg_scale_numerator(scale: f64) -> u8 {
    let n = (scale * 2.0 * 8.0).ceil();
    if n.is_nan() || n >= 8.0 { 8 } else { n.max(1.0) as u8 }
}

/// The dimensions libjpeg decodes a `width` × `height` JPEG to at `numerator/8`: each side
/// rounded up.
pub(crate) fn jpeg_scaled_dims(width: u32, height: u32, numerator: u8) -> (u32, u32) {
    let side = |s: u32| (u64::from(s) * u64::from(numerator)).div_ceil(8) as u32;
    (side(width), side(height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contain_keeps_the_aspect_ratio_and_never_enlarges() {
        assert_eq!(output_dims(4000, 3000, 300, Fit::Contain), (300, 225));
        assert_eq!(output_dims(3000, 4000, 300, Fit::Contain), (225, 300));
        assert_eq!(output_dims(200, 100, 300, Fit::Contain), (200, 100));
        assert_eq!(output_dims(30000, 1, 300, Fit::Contain), (300, 1));
        assert_eq!(output_dims(1, 1, 1, Fit::Contain), (1, 1));
    }

    #[test]
    fn cover_is_the_box_cropped_from_the_centre() {
        assert_eq!(output_dims(4000, 3000, 300, Fit::Cover), (300, 300));
        assert_eq!(output_dims(10, 20, 300, Fit::Cover), (300, 300));
        let r = source_region(4000, 3000, Fit::Cover);
        assert_eq!(r, Region { left: 500.0, top: 0.0, width: 3000.0, height: 3000.0 });
        assert!((scale_factor(4000, 3000, 300, Fit::Cover) - 0.1).abs() < 1e-9);
    }

    #[test]
    fn jpeg_scaling_leaves_a_factor_of_two() {
        // 4000 × 3000 to 300 px: 0.075 → 2/8 (1000 × 750, at least twice 300 × 225).
        assert_eq!(jpeg_scale_numerator(0.075), 2);
        assert_eq!(jpeg_scaled_dims(4000, 3000, 2), (1000, 750));
        assert_eq!(jpeg_scale_numerator(0.01), 1);
        assert_eq!(jpeg_scale_numerator(0.3), 5);
        assert_eq!(jpeg_scale_numerator(0.5), 8);
        assert_eq!(jpeg_scale_numerator(3.0), 8);
        assert_eq!(jpeg_scaled_dims(4001, 3001, 1), (501, 376));
    }
}
