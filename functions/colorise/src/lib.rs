//! `colorise`: a grayscale photo comes in (PNG or JPEG, as the raw body or the first file of
//! a `multipart/form-data` upload); a colour PNG goes out.
//!
//! # The algorithm: a gradient map over luminance
//! This is the "gradient map" of image editors, not a learned colourisation: it does not
//! know what is sky or skin. Each pixel's luminance `Y` (Rec. 601 luma of the input, so a
//! colour photo is treated as its grayscale version) is first stretched so that the darkest
//! 1 % and the brightest 1 % of the picture reach the ends of the range (auto-contrast),
//! then replaced by the colour at position `Y` along a palette of colour stops, interpolated
//! linearly between stops. The stops of every palette rise in luma, so the picture keeps its
//! tonal structure: shadows stay dark and highlights light, and only the hue and saturation
//! come from the palette. Palettes (query `?palette=NAME`):
//! - `dusk` (default): navy shadows, teal lower mid-tones, warm brown and peach upper
//!   mid-tones, cream highlights — an old hand-tinted photograph look;
//! - `sepia`: dark brown to warm white, the look of a toned print;
//! - `viridis`: the perceptually uniform false-colour map of matplotlib (purple, blue, green,
//!   yellow), for reading intensities rather than for looks.

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};

/// Largest accepted picture, in pixels (a 24-megapixel photo), so a decompression bomb is
/// refused instead of exhausting memory.
pub const MAX_PIXELS: u64 = 24_000_000;

/// Why a picture could not be colourised.
#[derive(Debug, thiserror::Error)]
pub enum ColoriseError {
    #[error("the request body is empty: send a PNG or JPEG picture")]
    Empty,
    #[error("the multipart body has no file part: {0}")]
    Multipart(String),
    #[error("not a PNG or JPEG picture: {0}")]
    Decode(image::ImageError),
    #[error("the picture is {width}x{height}; at most {MAX_PIXELS} pixels are accepted")]
    TooLarge { width: u32, height: u32 },
    #[error("unknown palette {0:?}: use dusk, sepia or viridis")]
    UnknownPalette(String),
    #[error("encoding the PNG: {0}")]
    Encode(image::ImageError),
}

/// A colour stop: a position in 0..=1 along the luminance axis and its colour.
type Stop = (f32, [u8; 3]);

/// A named palette of colour stops whose luma rises with their position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    Dusk,
    Sepia,
    Viridis,
}

impl Palette {
    /// The palette named `name`.
    pub fn parse(name: &str) -> Result<Palette, ColoriseError> {
        match name {
            "dusk" => Ok(Palette::Dusk),
            "sepia" => Ok(Palette::Sepia),
            "viridis" => Ok(Palette::Viridis),
            other => Err(ColoriseError::UnknownPalette(other.to_owned())),
        }
    }

    fn stops(self) -> &'static [Stop] {
        match self {
            Palette::Dusk => &[
                (0.0, [10, 14, 34]),
                (0.28, [34, 82, 110]),
                (0.55, [158, 116, 88]),
                (0.8, [230, 184, 140]),
                (1.0, [255, 249, 232]),
            ],
            Palette::Sepia => &[
                (0.0, [22, 13, 6]),
                (0.5, [150, 108, 68]),
                (1.0, [255, 246, 226]),
            ],
            Palette::Viridis => &[
                (0.0, [68, 1, 84]),
                (0.25, [59, 82, 139]),
                (0.5, [33, 145, 140]),
                (0.75, [94, 201, 98]),
                (1.0, [253, 231, 37]),
            ],
        }
    }

    /// The colour at position `t` (clamped to 0..=1).
    pub fn at(self, t: f32) -> [u8; 3] {
        let t = t.clamp(0.0, 1.0);
        let stops = self.stops();
        for pair in stops.windows(2) {
            let ((t0, c0), (t1, c1)) = (pair[0], pair[1]);
            if t <= t1 {
                let f = if t1 > t0 { (t - t0) / (t1 - t0) } else { 0.0 };
                return std::array::from_fn(|i| {
                    (c0[i] as f32 + (c1[i] as f32 - c0[i] as f32) * f).round() as u8
                });
            }
        }
        stops[stops.len() - 1].1
    }
}

/// The picture in `body`: the body itself, or the first file of a multipart upload when
/// `content_type` is `multipart/form-data`.
pub fn picture_bytes(body: &[u8], content_type: Option<&str>) -> Result<Vec<u8>, ColoriseError> {
    let boundary = content_type.and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        if body.is_empty() {
            return Err(ColoriseError::Empty);
        }
        return Ok(body.to_vec());
    };
    let stream = futures::stream::once(futures::future::ready(Ok::<_, std::io::Error>(
        bytes::Bytes::copy_from_slice(body),
    )));
    let mut multipart = multer::Multipart::new(stream, boundary);
    futures::executor::block_on(async {
        let mut first = None;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|e| ColoriseError::Multipart(e.to_string()))?
        {
            let is_file = field.file_name().is_some();
            let data = field
                .bytes()
                .await
                .map_err(|e| ColoriseError::Multipart(e.to_string()))?;
            if is_file && !data.is_empty() {
                return Ok(data.to_vec());
            }
            if first.is_none() && !data.is_empty() {
                first = Some(data.to_vec());
            }
        }
        first.ok_or_else(|| ColoriseError::Multipart("no non-empty part".to_owned()))
    })
}

/// Gradient-maps `picture` (PNG or JPEG bytes) through `palette`; returns PNG bytes.
pub fn colorise(picture: &[u8], palette: Palette) -> Result<Vec<u8>, ColoriseError> {
    if picture.is_empty() {
        return Err(ColoriseError::Empty);
    }
    let reader = image::ImageReader::new(Cursor::new(picture))
        .with_guessed_format()
        .map_err(|e| ColoriseError::Decode(image::ImageError::IoError(e)))?;
    let (width, height) = reader.into_dimensions().map_err(ColoriseError::Decode)?;
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ColoriseError::TooLarge { width, height });
    }
    let gray = image::load_from_memory(picture)
        .map_err(ColoriseError::Decode)?
        .into_luma8();
    let out = gradient_map(&gray, palette);
    let mut png = Vec::new();
    DynamicImage::ImageRgb8(out)
        .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
        .map_err(ColoriseError::Encode)?;
    Ok(png)
}

/// The auto-contrast range: the luma values below which and above which 1 % of the pixels lie.
fn contrast_range(gray: &GrayImage) -> (u8, u8) {
    let mut histogram = [0u64; 256];
    for p in gray.pixels() {
        histogram[p.0[0] as usize] += 1;
    }
    let total: u64 = histogram.iter().sum();
    let cut = total / 100;
    let (mut low, mut seen) = (0usize, 0u64);
    while low < 255 && seen + histogram[low] <= cut {
        seen += histogram[low];
        low += 1;
    }
    let (mut high, mut seen) = (255usize, 0u64);
    while high > 0 && seen + histogram[high] <= cut {
        seen += histogram[high];
        high -= 1;
    }
    if high <= low {
        // A flat picture: no stretch.
        (0, 255)
    } else {
        (low as u8, high as u8)
    }
}

/// Each pixel's stretched luma looked up in `palette`.
pub fn gradient_map(gray: &GrayImage, palette: Palette) -> RgbImage {
    let (low, high) = contrast_range(gray);
    let span = f32::from(high - low);
    // One lookup table of 256 colours: each input level maps to one colour.
    let table: Vec<[u8; 3]> = (0..=255u8)
        .map(|y| palette.at((f32::from(y) - f32::from(low)) / span))
        .collect();
    RgbImage::from_fn(gray.width(), gray.height(), |x, y| {
        image::Rgb(table[gray.get_pixel(x, y).0[0] as usize])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_of(gray: &GrayImage) -> Vec<u8> {
        let mut out = Vec::new();
        DynamicImage::ImageLuma8(gray.clone())
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    /// A 64x8 horizontal ramp from black to white.
    fn ramp() -> GrayImage {
        GrayImage::from_fn(64, 8, |x, _| image::Luma([(x * 255 / 63) as u8]))
    }

    fn luma(c: [u8; 3]) -> f32 {
        0.299 * c[0] as f32 + 0.587 * c[1] as f32 + 0.114 * c[2] as f32
    }

    #[test]
    fn a_gray_ramp_becomes_the_palette_in_order() {
        let png = colorise(&png_of(&ramp()), Palette::Dusk).unwrap();
        let out = image::load_from_memory(&png).unwrap().into_rgb8();
        assert_eq!(out.dimensions(), (64, 8));
        assert_eq!(out.get_pixel(0, 0).0, [10, 14, 34], "black becomes navy");
        assert_eq!(
            out.get_pixel(63, 0).0,
            [255, 249, 232],
            "white becomes cream"
        );
        let mid = out.get_pixel(20, 4).0;
        assert!(mid[2] > mid[0], "lower mid-tones are cool: {mid:?}");
        let upper = out.get_pixel(48, 4).0;
        assert!(
            upper[0] > upper[2] + 40,
            "upper mid-tones are warm: {upper:?}"
        );
        // Tones keep their order: luma never falls along the ramp.
        let lumas: Vec<f32> = (0..64).map(|x| luma(out.get_pixel(x, 0).0)).collect();
        assert!(lumas.windows(2).all(|w| w[1] + 0.5 >= w[0]), "{lumas:?}");
    }

    #[test]
    fn palettes_rise_in_luma() {
        for palette in [Palette::Dusk, Palette::Sepia, Palette::Viridis] {
            let stops = palette.stops();
            assert!(
                stops.windows(2).all(|w| luma(w[1].1) > luma(w[0].1)),
                "{palette:?}"
            );
            assert_eq!(stops[0].0, 0.0);
            assert_eq!(stops[stops.len() - 1].0, 1.0);
        }
    }

    #[test]
    fn a_dim_picture_is_stretched_to_the_whole_palette() {
        let dim = GrayImage::from_fn(32, 32, |x, _| image::Luma([60 + (x as u8) * 2]));
        let out = gradient_map(&dim, Palette::Sepia);
        assert_eq!(out.get_pixel(0, 0).0, [22, 13, 6]);
        assert_eq!(out.get_pixel(31, 0).0, [255, 246, 226]);
    }

    #[test]
    fn a_flat_picture_is_not_stretched() {
        let flat = GrayImage::from_pixel(4, 4, image::Luma([0]));
        let out = gradient_map(&flat, Palette::Viridis);
        assert_eq!(out.get_pixel(2, 2).0, [68, 1, 84]);
    }

    #[test]
    fn jpeg_input_is_read() {
        let mut jpeg = Vec::new();
        DynamicImage::ImageLuma8(ramp())
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let png = colorise(&jpeg, Palette::Viridis).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let out = image::load_from_memory(&png).unwrap().into_rgb8();
        assert_eq!(out.dimensions(), (64, 8));
        let right = out.get_pixel(63, 4).0;
        assert!(
            right[0] > 200 && right[2] < 100,
            "bright is yellow: {right:?}"
        );
    }

    #[test]
    fn the_file_of_a_multipart_upload_is_taken() {
        let picture = png_of(&ramp());
        let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n".to_vec();
        body.extend_from_slice(&picture);
        body.extend_from_slice(b"\r\n--XyZ--\r\n");
        let got = picture_bytes(&body, Some("multipart/form-data; boundary=XyZ")).unwrap();
        assert_eq!(got, picture);
        assert_eq!(picture_bytes(b"raw", Some("image/png")).unwrap(), b"raw");
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        assert!(matches!(
            colorise(b"", Palette::Dusk),
            Err(ColoriseError::Empty)
        ));
        let err = colorise(b"this is not a picture", Palette::Dusk).unwrap_err();
        assert!(err.to_string().starts_with("not a PNG or JPEG"), "{err}");
        assert!(matches!(
            Palette::parse("rainbow"),
            Err(ColoriseError::UnknownPalette(_))
        ));
    }
}
