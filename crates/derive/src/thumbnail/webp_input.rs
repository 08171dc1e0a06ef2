//! WebP input: a still image is decoded by libwebp (the `webp` crate; 107 ms for a 12 MP photo
//! where `image`'s pure-Rust decoder takes 265 ms), straight into the buffer the resizer reads; an
//! animated one goes to `image` for its first frame. The EXIF orientation is read from the RIFF
//! container's `EXIF` chunk here, since libwebp does not look at it.

use image::metadata::Orientation;

use crate::{DeriveError, Limits};

/// Whether `bytes` (a WebP) is animated.
pub(crate) fn is_animated(bytes: &[u8]) -> bool {
    webp::BitstreamFeatures::new(bytes).is_some_and(|f| f.has_animation())
}

/// Decodes the still WebP `bytes` of `width` × `height` to RGB, or RGBA if it has alpha.
pub(crate) fn decode(bytes: &[u8], width: u32, height: u32, limits: &Limits) -> Result<webp::WebPImage, DeriveError> {
    // The output, 4 bytes a pixel at most, and about as much again for lossless decoding's own
    // buffers (an upper bound).
    let needed = u64::from(width) * u64::from(height) * 8;
    if needed > limits.max_alloc_bytes {
        return Err(DeriveError::TooLarge(format!(
            "decoding this WebP needs about {needed} bytes, over the limit of {}",
            limits.max_alloc_bytes
        )));
    }
    webp::Decoder::new(bytes).decode().ok_or_else(|| DeriveError::Corrupt("libwebp could not decode the WebP".into()))
}

/// The orientation in the `EXIF` chunk of the WebP `bytes` (no transforms without one).
pub(crate) fn orientation(bytes: &[u8]) -> Orientation {
    exif_chunk(bytes)
        .and_then(|exif| Orientation::from_exif_chunk(exif.strip_prefix(b"Exif\0\0").unwrap_or(exif)))
        .unwrap_or(Orientation::NoTransforms)
}

/// The payload of the first `EXIF` chunk of a RIFF WebP, walking at most 64 chunks.
fn exif_chunk(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.get(..4)? != b"RIFF" || bytes.get(8..12)? != b"WEBP" {
        return None;
    }
    let mut pos = 12usize;
    for _ in 0..64 {
        let header = bytes.get(pos..pos + 8)?;
        let len = usize::try_from(u32::from_le_bytes([header[4], header[5], header[6], header[7]])).ok()?;
        let payload = bytes.get(pos + 8..(pos + 8).checked_add(len)?)?;
        if &header[..4] == b"EXIF" {
            return Some(payload);
        }
        // Chunks are padded to an even length.
        pos = pos.checked_add(8 + len + (len & 1))?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn riff(chunks: &[(&[u8; 4], &[u8])]) -> Vec<u8> {
        let mut body = b"WEBP".to_vec();
        for (fourcc, payload) in chunks {
            body.extend(*fourcc);
            body.extend((payload.len() as u32).to_le_bytes());
            body.extend(*payload);
            if payload.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut out = b"RIFF".to_vec();
        out.extend((body.len() as u32).to_le_bytes());
        out.extend(body);
        out
    }

    #[test]
    fn the_exif_chunk_is_found_after_odd_chunks() {
        let exif = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0";
        let bytes = riff(&[(b"VP8X", &[0; 10]), (b"ICCP", b"odd"), (b"EXIF", exif)]);
        assert_eq!(orientation(&bytes), Orientation::Rotate90);
        assert_eq!(orientation(&riff(&[(b"VP8X", &[0; 10])])), Orientation::NoTransforms);
        assert_eq!(orientation(&bytes[..bytes.len() - 4]), Orientation::NoTransforms);
        assert_eq!(orientation(b"RIFF"), Orientation::NoTransforms);
    }
}
