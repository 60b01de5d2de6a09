//! A user's own picture (PNG or PGM/PNM) as a 28x28 MNIST-style input.
//!
//! MNIST digits are light strokes on a black background, fitted into a 20x20 box and
//! centred by their centre of mass in a 28x28 frame (LeCun et al. 1998). A picture that
//! is already 28x28 with a dark background is taken as it is; any other is brought into
//! that form: inverted if its background is light, cropped to its content, scaled to fit
//! 20x20 keeping its aspect ratio, and centred by mass.

use std::path::Path;

use image::imageops::{self, FilterType};
use image::{GrayImage, ImageReader};

use crate::DatasetError;

/// Side of an MNIST image.
pub const SIDE: usize = 28;
/// Side of the box MNIST fits each digit into.
const CONTENT_SIDE: u32 = 20;
/// Largest picture accepted, in pixels per side: bounds decoding memory.
pub const MAX_SIDE: u32 = 8192;
/// A pixel at least this far from the background counts as content.
const CONTENT_THRESHOLD: u8 = 32;

/// Reads `path` and returns its 784 pixels (row-major, 0 = background).
pub fn load_image(path: &Path) -> Result<Vec<u8>, DatasetError> {
    let fail = |reason: String| DatasetError::Image {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = ImageReader::open(path)
        .map_err(|source| DatasetError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let decoded = reader
        .decode()
        .map_err(|e| fail(format!("not a readable PNG/PGM image: {e}")))?;
    to_mnist_frame(&decoded.to_luma8()).map_err(fail)
}

/// Brings a grayscale picture into MNIST's form (see the module documentation).
pub fn to_mnist_frame(picture: &GrayImage) -> Result<Vec<u8>, String> {
    let (width, height) = picture.dimensions();
    if width == 0 || height == 0 {
        return Err("the image is empty (0 pixels)".into());
    }
    let light_background = border_mean(picture) > 127.0;
    let mut ink = picture.clone();
    if light_background {
        imageops::invert(&mut ink);
    }
    if (width, height) == (SIDE as u32, SIDE as u32) && !light_background {
        return Ok(ink.into_raw());
    }
    let (x0, y0, x1, y1) = content_box(&ink).ok_or_else(|| {
        "the image is blank: no stroke stands out from the background".to_string()
    })?;
    let crop = imageops::crop_imm(&ink, x0, y0, x1 - x0 + 1, y1 - y0 + 1).to_image();
    let scale = f64::from(CONTENT_SIDE) / f64::from(crop.width().max(crop.height()));
    let new_w = ((f64::from(crop.width()) * scale).round() as u32).clamp(1, CONTENT_SIDE);
    let new_h = ((f64::from(crop.height()) * scale).round() as u32).clamp(1, CONTENT_SIDE);
    let digit = imageops::resize(&crop, new_w, new_h, FilterType::Triangle);

    let (cx, cy) = centre_of_mass(&digit);
    let half = SIDE as f64 / 2.0;
    let max_x = (SIDE as u32 - new_w) as i64;
    let max_y = (SIDE as u32 - new_h) as i64;
    let left = ((half - cx).round() as i64).clamp(0, max_x);
    let top = ((half - cy).round() as i64).clamp(0, max_y);
    let mut frame = GrayImage::new(SIDE as u32, SIDE as u32);
    imageops::overlay(&mut frame, &digit, left, top);

    let peak = frame.pixels().map(|p| p.0[0]).max().unwrap_or(0);
    if peak == 0 {
        return Err("the image is blank after resizing to 28x28".into());
    }
    // Stretch contrast so the strongest stroke is white, as in MNIST.
    Ok(frame
        .into_raw()
        .into_iter()
        .map(|p| (u32::from(p) * 255 / u32::from(peak)) as u8)
        .collect())
}

fn border_mean(picture: &GrayImage) -> f64 {
    let (w, h) = picture.dimensions();
    let border: Vec<u8> = picture
        .enumerate_pixels()
        .filter(|(x, y, _)| *x == 0 || *y == 0 || *x == w - 1 || *y == h - 1)
        .map(|(_, _, p)| p.0[0])
        .collect();
    border.iter().map(|&p| f64::from(p)).sum::<f64>() / border.len() as f64
}

/// Inclusive bounding box `(x0, y0, x1, y1)` of the content pixels, if any.
fn content_box(ink: &GrayImage) -> Option<(u32, u32, u32, u32)> {
    ink.enumerate_pixels()
        .filter(|(_, _, p)| p.0[0] >= CONTENT_THRESHOLD)
        .fold(None, |acc, (x, y, _)| {
            Some(match acc {
                None => (x, y, x, y),
                Some((x0, y0, x1, y1)) => (x0.min(x), y0.min(y), x1.max(x), y1.max(y)),
            })
        })
}

/// Intensity-weighted centre `(x, y)` of a picture, in pixel units (centres at +0.5).
fn centre_of_mass(picture: &GrayImage) -> (f64, f64) {
    let (mut total, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (x, y, p) in picture.enumerate_pixels() {
        let m = f64::from(p.0[0]);
        total += m;
        sx += m * (f64::from(x) + 0.5);
        sy += m * (f64::from(y) + 0.5);
    }
    if total == 0.0 {
        let (w, h) = picture.dimensions();
        return (f64::from(w) / 2.0, f64::from(h) / 2.0);
    }
    (sx / total, sy / total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    /// A dark "1" on a light 60x90 page.
    fn drawn_one() -> GrayImage {
        GrayImage::from_fn(60, 90, |x, y| {
            if (25..35).contains(&x) && (10..80).contains(&y) {
                Luma([10])
            } else {
                Luma([240])
            }
        })
    }

    #[test]
    fn light_picture_is_inverted_fitted_and_centred() {
        let frame = to_mnist_frame(&drawn_one()).unwrap();
        assert_eq!(frame.len(), SIDE * SIDE);
        let ink: Vec<(usize, usize)> = (0..SIDE * SIDE)
            .filter(|&i| frame[i] > 128)
            .map(|i| (i % SIDE, i / SIDE))
            .collect();
        let rows: Vec<usize> = ink.iter().map(|p| p.1).collect();
        let cols: Vec<usize> = ink.iter().map(|p| p.0).collect();
        // 70 pixels tall scaled to 20, centred vertically: rows 4..24.
        assert_eq!(*rows.iter().min().unwrap(), 4);
        assert_eq!(*rows.iter().max().unwrap(), 23);
        let mid = (cols.iter().min().unwrap() + cols.iter().max().unwrap()) as f64 / 2.0;
        assert!((mid - 13.5).abs() <= 1.0, "centred column {mid}");
        assert_eq!(frame[0], 0, "background is black");
    }

    #[test]
    fn mnist_sized_dark_picture_is_kept_as_is() {
        let picture = GrayImage::from_fn(28, 28, |x, y| Luma([((x * 3 + y) % 7 * 20) as u8]));
        let mut dark = picture.clone();
        for (x, y, p) in dark.enumerate_pixels_mut() {
            if x == 0 || y == 0 || x == 27 || y == 27 {
                *p = Luma([0]);
            }
        }
        assert_eq!(to_mnist_frame(&dark).unwrap(), dark.into_raw());
    }

    #[test]
    fn blank_and_empty_pictures_are_refused() {
        let blank = GrayImage::from_pixel(40, 40, Luma([255]));
        assert!(to_mnist_frame(&blank).unwrap_err().contains("blank"));
        assert!(
            to_mnist_frame(&GrayImage::new(0, 0))
                .unwrap_err()
                .contains("empty")
        );
    }

    #[test]
    fn files_are_read_and_bad_files_named() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("one.png");
        drawn_one().save(&png).unwrap();
        assert_eq!(
            load_image(&png).unwrap(),
            to_mnist_frame(&drawn_one()).unwrap()
        );

        let pgm = dir.path().join("one.pgm");
        drawn_one().save(&pgm).unwrap();
        assert_eq!(
            load_image(&pgm).unwrap(),
            to_mnist_frame(&drawn_one()).unwrap()
        );

        let junk = dir.path().join("junk.png");
        std::fs::write(&junk, b"\x89PNG\r\n\x1a\nnot really").unwrap();
        let err = load_image(&junk).unwrap_err().to_string();
        assert!(
            err.contains("junk.png") && err.contains("not a readable"),
            "{err}"
        );

        let missing = dir.path().join("missing.png");
        let err = load_image(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.png"), "{err}");
    }
}
