//! `thumbnail`: every input format and the shapes real photos come in (EXIF-rotated, progressive,
//! CMYK, 16-bit, animated), both fits, the placeholder, and bad input (bombs, truncations,
//! non-images, lying headers, parameters out of bounds).

use std::borrow::Cow;
use std::io::Cursor;
use std::time::{Duration, Instant};

use image::codecs::gif::GifEncoder;
use image::{DynamicImage, Frame, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use tiercache_derive::{DeriveError, Params, Produced, recipe};

use crate::{limits, run, run_with};

const RED: [u8; 3] = [220, 30, 30];
const BLUE: [u8; 3] = [30, 30, 220];

/// A `width` × `height` picture, red on its left half and blue on its right.
fn halves(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, _| Rgb(if x < width / 2 { RED } else { BLUE }))
}

fn encoded(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A JPEG of `pixels` (`width` × `height`, in `color_space`) by libjpeg-turbo: baseline, or
/// progressive.
fn jpeg(pixels: &[u8], width: u32, height: u32, color_space: mozjpeg::ColorSpace, is_progressive: bool) -> Vec<u8> {
    let mut compress = mozjpeg::Compress::new(color_space);
    compress.set_fastest_defaults();
    compress.set_quality(90.0);
    if is_progressive {
        compress.set_progressive_mode();
    }
    compress.set_size(width as usize, height as usize);
    let mut started = compress.start_compress(Vec::new()).unwrap();
    started.write_scanlines(pixels).unwrap();
    started.finish().unwrap()
}

fn halves_jpeg(width: u32, height: u32) -> Vec<u8> {
    jpeg(halves(width, height).as_raw(), width, height, mozjpeg::ColorSpace::JCS_RGB, false)
}

/// `jpeg` with an EXIF APP1 segment giving `orientation`, built by hand (little-endian TIFF
/// header, one IFD with one entry), right after the SOI marker.
fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut exif = b"Exif\0\0II\x2a\x00\x08\x00\x00\x00".to_vec();
    exif.extend(1u16.to_le_bytes()); // one entry
    exif.extend(0x0112u16.to_le_bytes()); // Orientation
    exif.extend(3u16.to_le_bytes()); // SHORT
    exif.extend(1u32.to_le_bytes()); // one value
    exif.extend(u32::from(orientation).to_le_bytes());
    exif.extend(0u32.to_le_bytes()); // no next IFD
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1]);
    out.extend(((exif.len() + 2) as u16).to_be_bytes());
    out.extend(exif);
    out.extend(&jpeg[2..]);
    out
}

/// The output, checked to be in the format its content type says, decoded.
fn decoded(produced: &Produced, bytes: &[u8]) -> DynamicImage {
    let format = match produced.content_type.as_str() {
        "image/webp" => ImageFormat::WebP,
        "image/jpeg" => ImageFormat::Jpeg,
        other => panic!("unexpected content type {other}"),
    };
    assert_eq!(image::guess_format(bytes).unwrap(), format);
    image::load_from_memory_with_format(bytes, format).unwrap()
}

fn thumbnail(input: &[u8], pairs: &[(&str, &str)]) -> RgbImage {
    let (produced, bytes) = run("thumbnail", input, pairs).unwrap();
    decoded(&produced, &bytes).to_rgb8()
}

#[track_caller]
fn assert_near(image: &RgbImage, x: u32, y: u32, want: [u8; 3]) {
    let got = image.get_pixel(x, y).0;
    let close = got.iter().zip(want).all(|(g, w)| g.abs_diff(w) <= 48);
    assert!(close, "pixel ({x}, {y}) is {got:?}, expected about {want:?}");
}

/// Checks a 100 × 75 thumbnail of [`halves`]: red on the left, blue on the right.
#[track_caller]
fn assert_halves(image: &RgbImage) {
    assert_eq!(image.dimensions(), (100, 75));
    assert_near(image, 20, 37, RED);
    assert_near(image, 80, 37, BLUE);
}

fn lossy_webp(rgb: &RgbImage) -> Vec<u8> {
    webp::Encoder::from_rgb(rgb.as_raw(), rgb.width(), rgb.height()).encode(90.0).to_vec()
}

/// `webp` (a simple lossy WebP: one `VP8 ` chunk) made extended, with an `EXIF` chunk giving
/// `orientation` (big-endian TIFF this time).
fn webp_with_orientation(webp: &[u8], width: u32, height: u32, orientation: u16) -> Vec<u8> {
    let mut exif = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    exif.extend(orientation.to_be_bytes());
    exif.extend([0, 0, 0, 0, 0, 0]);
    let mut vp8x = vec![0x08, 0, 0, 0]; // flags: EXIF present
    vp8x.extend(&(width - 1).to_le_bytes()[..3]);
    vp8x.extend(&(height - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    body.extend(b"VP8X");
    body.extend(10u32.to_le_bytes());
    body.extend(vp8x);
    body.extend(&webp[12..]); // the VP8 chunk, as it was
    body.extend(b"EXIF");
    body.extend((exif.len() as u32).to_le_bytes());
    body.extend(&exif);
    let mut out = b"RIFF".to_vec();
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

fn palette_png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette([RED, BLUE].concat());
    let mut writer = encoder.write_header().unwrap();
    let indices: Vec<u8> = (0..height).flat_map(|_| (0..width).map(move |x| u8::from(x >= width / 2))).collect();
    writer.write_image_data(&indices).unwrap();
    writer.finish().unwrap();
    out
}

#[test]
fn every_input_format_gives_a_thumbnail_of_the_right_size() {
    let rgb = DynamicImage::ImageRgb8(halves(400, 300));
    let png16 = encoded(&DynamicImage::ImageRgb16(rgb.to_rgb16()), ImageFormat::Png);
    assert_eq!(png16[24], 16, "the PNG is 16 bits a sample");
    let inputs = [
        ("jpeg", halves_jpeg(400, 300)),
        ("png", encoded(&rgb, ImageFormat::Png)),
        ("png rgba", encoded(&DynamicImage::ImageRgba8(rgb.to_rgba8()), ImageFormat::Png)),
        ("png 16-bit", png16),
        ("png 16-bit rgba", encoded(&DynamicImage::ImageRgba16(rgb.to_rgba16()), ImageFormat::Png)),
        ("png palette", palette_png(400, 300)),
        ("gif", encoded(&DynamicImage::ImageRgba8(rgb.to_rgba8()), ImageFormat::Gif)),
        ("webp lossless", encoded(&rgb, ImageFormat::WebP)),
        ("webp lossy", lossy_webp(&halves(400, 300))),
        ("tiff", encoded(&rgb, ImageFormat::Tiff)),
        ("bmp", encoded(&rgb, ImageFormat::Bmp)),
    ];
    for (name, input) in &inputs {
        for format in ["jpeg", "webp"] {
            let (produced, bytes) = run("thumbnail", input, &[("size", "100"), ("format", format)])
                .unwrap_or_else(|e| panic!("{name} to {format}: {e}"));
            assert_eq!(produced.content_type, format!("image/{format}"), "{name}");
            assert_halves(&decoded(&produced, &bytes).to_rgb8());
        }
    }
    let grey = DynamicImage::ImageLuma8(DynamicImage::ImageRgb8(halves(400, 300)).to_luma8());
    let out = thumbnail(&encoded(&grey, ImageFormat::Png), &[("size", "100")]);
    assert_eq!(out.dimensions(), (100, 75));
    let p = out.get_pixel(20, 37).0;
    assert!(p[0].abs_diff(p[1]) < 8 && p[1].abs_diff(p[2]) < 8, "grey stays grey: {p:?}");
}

#[test]
fn exif_orientation_turns_the_thumbnail() {
    let stored = halves_jpeg(400, 200);
    // 6: turned 90° clockwise to show, so the left (red) half comes out on top.
    let out = thumbnail(&with_orientation(&stored, 6), &[("size", "100")]);
    assert_eq!(out.dimensions(), (50, 100));
    assert_near(&out, 25, 15, RED);
    assert_near(&out, 25, 85, BLUE);
    // 8: turned 90° counter-clockwise, the left half at the bottom.
    let out = thumbnail(&with_orientation(&stored, 8), &[("size", "100")]);
    assert_eq!(out.dimensions(), (50, 100));
    assert_near(&out, 25, 15, BLUE);
    assert_near(&out, 25, 85, RED);
    // 3: upside down, the halves swap sides.
    let out = thumbnail(&with_orientation(&stored, 3), &[("size", "100")]);
    assert_eq!(out.dimensions(), (100, 50));
    assert_near(&out, 15, 25, BLUE);
    assert_near(&out, 85, 25, RED);
}

#[test]
fn a_pngs_exif_orientation_turns_the_thumbnail() {
    let rgb = halves(400, 200);
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, 400, 200);
    encoder.set_color(png::ColorType::Rgb);
    let mut writer = encoder.write_header().unwrap();
    writer
        .write_chunk(png::chunk::eXIf, b"II\x2a\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0")
        .unwrap();
    writer.write_image_data(rgb.as_raw()).unwrap();
    writer.finish().unwrap();
    let out = thumbnail(&png, &[("size", "100")]);
    assert_eq!(out.dimensions(), (50, 100));
    assert_near(&out, 25, 15, RED);
    assert_near(&out, 25, 85, BLUE);
}

#[test]
fn a_webps_exif_orientation_and_an_animated_webps_first_frame() {
    let stored = lossy_webp(&halves(400, 200));
    let out = thumbnail(&webp_with_orientation(&stored, 400, 200, 6), &[("size", "100")]);
    assert_eq!(out.dimensions(), (50, 100));
    assert_near(&out, 25, 15, RED);
    assert_near(&out, 25, 85, BLUE);

    let config = webp::WebPConfig::new().unwrap();
    let mut encoder = webp::AnimEncoder::new(40, 30, &config);
    let red = RgbImage::from_pixel(40, 30, Rgb(RED));
    let blue = RgbImage::from_pixel(40, 30, Rgb(BLUE));
    encoder.add_frame(webp::AnimFrame::from_rgb(red.as_raw(), 40, 30, 0));
    encoder.add_frame(webp::AnimFrame::from_rgb(blue.as_raw(), 40, 30, 100));
    let animated = encoder.encode().to_vec();
    let out = thumbnail(&animated, &[("size", "20")]);
    assert_eq!(out.dimensions(), (20, 15));
    assert_near(&out, 10, 7, RED);
}

#[test]
fn a_progressive_jpeg_and_a_large_one_scaled_while_decoded() {
    let progressive = jpeg(halves(400, 300).as_raw(), 400, 300, mozjpeg::ColorSpace::JCS_RGB, true);
    assert!(progressive.windows(2).any(|w| w == [0xFF, 0xC2]), "the JPEG is progressive");
    assert_halves(&thumbnail(&progressive, &[("size", "100")]));
    // 2400 × 1800 to 100 × 75 decodes at 1/8 (300 × 225): the size and colours are the same.
    assert_halves(&thumbnail(&halves_jpeg(2400, 1800), &[("size", "100")]));
}

#[test]
fn a_cmyk_jpeg_is_shown_in_rgb() {
    // Adobe's convention, which libjpeg follows by writing an APP14 "Adobe" segment for CMYK:
    // the samples are stored inverted (255 = no ink). Red is magenta and yellow ink, blue cyan
    // and magenta.
    let (w, h) = (400u32, 300u32);
    let cmyk: Vec<u8> = (0..h)
        .flat_map(|_| (0..w).flat_map(move |x| if x < w / 2 { [255, 0, 0, 255] } else { [0, 0, 255, 255] }))
        .collect();
    let input = jpeg(&cmyk, w, h, mozjpeg::ColorSpace::JCS_CMYK, false);
    assert!(input.windows(5).any(|win| win == b"Adobe"), "the JPEG has an Adobe segment");
    let out = thumbnail(&input, &[("size", "100")]);
    assert_eq!(out.dimensions(), (100, 75));
    assert_near(&out, 20, 37, [255, 0, 0]);
    assert_near(&out, 80, 37, [0, 0, 255]);
}

#[test]
fn an_animated_gif_gives_its_first_frame() {
    let mut input = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut input);
        for colour in [RED, BLUE] {
            let rgba = RgbaImage::from_pixel(40, 30, Rgba([colour[0], colour[1], colour[2], 255]));
            encoder.encode_frame(Frame::new(rgba)).unwrap();
        }
    }
    let out = thumbnail(&input, &[("size", "20")]);
    assert_eq!(out.dimensions(), (20, 15));
    assert_near(&out, 10, 7, RED);
}

/// A 16 × 16 GIF of `n_frames` frames: the first red, every other blue.
fn many_frames_gif(n_frames: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = gif::Encoder::new(&mut out, 16, 16, &[RED, BLUE].concat()).unwrap();
    let red = [0u8; 256];
    let blue = [1u8; 256];
    for i in 0..n_frames {
        let buffer = Cow::Borrowed(if i == 0 { &red[..] } else { &blue[..] });
        encoder.write_frame(&gif::Frame { width: 16, height: 16, buffer, ..gif::Frame::default() }).unwrap();
    }
    drop(encoder);
    out
}

#[test]
fn a_gif_of_ten_thousand_frames_gives_its_first_without_reading_the_others() {
    let input = many_frames_gif(10_000);
    assert_near(&thumbnail(&input, &[("size", "8")]), 4, 4, RED);
    // Cut in the middle of its frames: a decoder that went past the first would fail.
    let cut = &input[..input.len() / 2 + 7];
    let out = thumbnail(cut, &[("size", "8")]);
    assert_eq!(out.dimensions(), (8, 8));
    assert_near(&out, 4, 4, RED);
}

#[test]
fn cover_fills_the_box_exactly_and_contain_never_enlarges() {
    let landscape = halves_jpeg(400, 300);
    let out = thumbnail(&landscape, &[("size", "100"), ("fit", "cover")]);
    assert_eq!(out.dimensions(), (100, 100));
    assert_near(&out, 15, 50, RED);
    assert_near(&out, 85, 50, BLUE);
    let portrait = encoded(&DynamicImage::ImageRgb8(halves(300, 400)), ImageFormat::Png);
    assert_eq!(thumbnail(&portrait, &[("size", "100"), ("fit", "cover")]).dimensions(), (100, 100));
    assert_eq!(thumbnail(&portrait, &[("size", "100")]).dimensions(), (75, 100));
    let small = encoded(&DynamicImage::ImageRgb8(halves(40, 30)), ImageFormat::Png);
    assert_eq!(thumbnail(&small, &[("size", "100"), ("fit", "cover")]).dimensions(), (100, 100));
    assert_eq!(thumbnail(&small, &[("size", "100")]).dimensions(), (40, 30));
}

#[test]
fn transparency_is_kept_in_webp_and_put_on_white_in_jpeg() {
    let rgba =
        RgbaImage::from_fn(
            400,
            300,
            |x, _| if x < 200 { Rgba([RED[0], RED[1], RED[2], 255]) } else { Rgba([0, 0, 0, 0]) },
        );
    let input = encoded(&DynamicImage::ImageRgba8(rgba), ImageFormat::Png);
    let (produced, bytes) = run("thumbnail", &input, &[("size", "100"), ("format", "webp")]).unwrap();
    let webp = decoded(&produced, &bytes).to_rgba8();
    assert_eq!(webp.get_pixel(85, 37)[3], 0, "transparent stays transparent");
    assert_eq!(webp.get_pixel(15, 37)[3], 255);
    let out = thumbnail(&input, &[("size", "100"), ("format", "jpeg")]);
    assert_near(&out, 85, 37, [255, 255, 255]);
    assert_near(&out, 15, 37, RED);
}

#[test]
fn bad_parameters_are_refused() {
    let input = halves_jpeg(40, 30);
    for pairs in [
        vec![("size", "0")],
        vec![("size", "100000")],
        vec![("size", "100"), ("fit", "x")],
        vec![("size", "100"), ("format", "png")],
        vec![("size", "100"), ("colour", "red")],
        vec![("fit", "cover")],
    ] {
        assert!(matches!(run("thumbnail", &input, &pairs), Err(DeriveError::BadParam(_))), "{pairs:?}");
    }
}

/// A PNG that claims `width` × `height` and holds a few bytes of pixel data.
fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let encoder = png::Encoder::new(&mut out, width, height);
    let mut writer = encoder.write_header().unwrap();
    writer.write_chunk(png::chunk::IDAT, &[0x78, 0x9C, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]).unwrap();
    drop(writer);
    out
}

#[test]
fn an_image_bomb_is_refused_from_its_header() {
    let png = png_header_only(30_000, 30_000);
    assert!(png.len() < 120, "a tiny file: {} bytes", png.len());
    let mut jpeg = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 8];
    jpeg.extend(30_000u16.to_be_bytes());
    jpeg.extend(30_000u16.to_be_bytes());
    jpeg.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    let mut gif = Vec::new();
    let mut encoder = gif::Encoder::new(&mut gif, 30_000, 30_000, &[0, 0, 0, 255, 255, 255]).unwrap();
    encoder
        .write_frame(&gif::Frame { width: 1, height: 1, buffer: Cow::Borrowed(&[0]), ..gif::Frame::default() })
        .unwrap();
    drop(encoder);
    for (name, input) in [("png", &png), ("jpeg", &jpeg), ("gif", &gif)] {
        let result = run("thumbnail", input, &[("size", "100")]);
        assert!(matches!(result, Err(DeriveError::TooLarge(_))), "{name}: {result:?}");
    }
    // With the pixel limit lifted, the memory limit still holds: 10 000 × 10 000 RGB is 300 MB.
    let mut roomy = limits();
    roomy.max_pixels = u64::MAX;
    roomy.max_alloc_bytes = 64 << 20;
    let png = png_header_only(10_000, 10_000);
    let result = run_with("thumbnail", &png, &[("size", "100")], &roomy);
    assert!(matches!(result, Err(DeriveError::TooLarge(_))), "{result:?}");
    let progressive = jpeg_progressive_header(10_000, 10_000);
    let result = run_with("thumbnail", &progressive, &[("size", "100")], &roomy);
    assert!(matches!(result, Err(DeriveError::TooLarge(_))), "{result:?}");
}

/// The markers of a progressive 3-component JPEG of `width` × `height` with an empty scan.
fn jpeg_progressive_header(width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xC2, 0x00, 0x11, 8];
    out.extend(height.to_be_bytes());
    out.extend(width.to_be_bytes());
    out.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
    out.extend([0xFF, 0xDA, 0x00, 0x08, 1, 1, 0x00, 0, 0, 0, 0xFF, 0xD9]);
    out
}

#[test]
fn truncated_and_lying_inputs_are_corrupt() {
    let whole = halves_jpeg(400, 300);
    for cut in [whole.len() / 2, whole.len() - 2] {
        let result = run("thumbnail", &whole[..cut], &[("size", "100")]);
        assert!(matches!(result, Err(DeriveError::Corrupt(_))), "JPEG cut at {cut}: {result:?}");
    }
    let progressive = jpeg(halves(400, 300).as_raw(), 400, 300, mozjpeg::ColorSpace::JCS_RGB, true);
    let result = run("thumbnail", &progressive[..progressive.len() / 2], &[("size", "100")]);
    assert!(matches!(result, Err(DeriveError::Corrupt(_))), "progressive JPEG cut: {result:?}");

    let png = encoded(&DynamicImage::ImageRgb8(halves(400, 300)), ImageFormat::Png);
    let result = run("thumbnail", &png[..png.len() / 2], &[("size", "100")]);
    assert!(matches!(result, Err(DeriveError::Corrupt(_))), "PNG cut: {result:?}");
    let webp = lossy_webp(&halves(400, 300));
    let result = run("thumbnail", &webp[..webp.len() / 2], &[("size", "100")]);
    assert!(matches!(result, Err(DeriveError::Corrupt(_))), "WebP cut: {result:?}");
    let result = run("thumbnail", &lying_png(), &[("size", "100")]);
    assert!(matches!(result, Err(DeriveError::Corrupt(_))), "lying PNG: {result:?}");
}

/// A 10 × 10 PNG whose header (CRC fixed up) claims 1000 × 1000.
fn lying_png() -> Vec<u8> {
    let mut png = encoded(&DynamicImage::ImageRgb8(halves(10, 10)), ImageFormat::Png);
    // Signature (8), IHDR length (4), "IHDR" (4), then width and height.
    png[16..20].copy_from_slice(&1000u32.to_be_bytes());
    png[20..24].copy_from_slice(&1000u32.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    png
}

#[test]
fn what_is_not_an_image_is_unsupported() {
    let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let inputs: [(&str, &[u8]); 6] = [
        ("text", b"Dear diary, today I asked for a thumbnail of a letter."),
        ("random bytes", &noise),
        ("empty", b""),
        ("qoi", b"qoif\0\0\0\x10\0\0\0\x10\x03\x00"),
        ("arithmetic-coded jpeg", b"\xFF\xD8\xFF\xC9\x00\x0B\x08\x00\x10\x00\x10\x01\x01\x11\x00\xFF\xD9"),
        ("12-bit jpeg", b"\xFF\xD8\xFF\xC1\x00\x0B\x0C\x00\x10\x00\x10\x01\x01\x11\x00\xFF\xD9"),
    ];
    for (name, input) in inputs {
        let result = run("thumbnail", input, &[("size", "100")]);
        assert!(matches!(result, Err(DeriveError::Unsupported(_))), "{name}: {result:?}");
    }
}

#[test]
fn limits_on_input_output_and_time_hold() {
    let input = halves_jpeg(400, 300);
    let mut small = limits();
    small.max_input_bytes = input.len() as u64 - 1;
    assert!(matches!(run_with("thumbnail", &input, &[("size", "100")], &small), Err(DeriveError::TooLarge(_))));
    let mut small = limits();
    small.max_output_bytes = 100;
    assert!(matches!(run_with("thumbnail", &input, &[("size", "100")], &small), Err(DeriveError::TooLarge(_))));
    let mut late = limits();
    late.deadline = Instant::now() - Duration::from_millis(1);
    assert!(matches!(run_with("thumbnail", &input, &[("size", "100")], &late), Err(DeriveError::TimedOut)));
}

fn placeholder(head: &[u8], pairs: &[(&str, &str)]) -> (u32, u32) {
    let recipe = recipe("thumbnail").unwrap();
    let raw: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let params: Params = recipe.params(&raw, Some("image/webp,*/*")).unwrap();
    let produced = recipe.placeholder(head, &params).unwrap();
    assert_eq!(produced.content_type, "image/webp");
    let image = decoded(&produced, &produced.bytes).to_rgb8();
    assert_near(&image, 0, 0, [128, 128, 128]);
    image.dimensions()
}

#[test]
fn the_placeholder_has_the_thumbnails_shape() {
    let jpeg = halves_jpeg(400, 300);
    let head = &jpeg[..jpeg.len().min(64 << 10)];
    assert_eq!(placeholder(head, &[("size", "100")]), (100, 75));
    assert_eq!(placeholder(&with_orientation(&jpeg, 6)[..1000], &[("size", "100")]), (75, 100));
    assert_eq!(placeholder(head, &[("size", "100"), ("fit", "cover")]), (100, 100));
    let png = encoded(&DynamicImage::ImageRgb8(halves(30, 40)), ImageFormat::Png);
    assert_eq!(placeholder(&png[..40], &[("size", "100")]), (30, 40));
    assert_eq!(placeholder(b"not an image", &[("size", "64")]), (64, 64));
    assert_eq!(placeholder(b"", &[("size", "64")]), (64, 64));
}
