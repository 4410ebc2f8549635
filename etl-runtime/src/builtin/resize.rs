//! The `resize` stage's geometry and its fast path.
//!
//! Shrinking a photo is the transform training loads ask for most (a 1600×1200 JPEG to 224×224),
//! so it avoids the two costs that dominate the plain decode-then-resize:
//!
//! - **Decoding at a reduced DCT scale.** A JPEG can be decoded straight to 1/2, 1/4 or 1/8 of its
//!   size (libjpeg's scaled inverse DCT, [`super::jpeg`]), skipping most of the inverse DCT and
//!   the full-size pixel buffer. [`decode_jpeg_for`] picks the smallest scale that still leaves
//!   at least one source pixel per output pixel on both axes, so the result is as sharp as a
//!   full decode.
//! - **A SIMD convolution resize** (fast_image_resize) with the antialiased bilinear filter,
//!   the same filter Pillow's `Image.resize(..., BILINEAR)` uses.
//!
//! Other formats, and JPEGs libjpeg does not turn into RGB (CMYK, YCCK), are
//! decoded whole by the `image` crate and then resized the same way.

use fast_image_resize::{FilterType, IntoImageView, ResizeAlg, ResizeOptions, Resizer};
use image::DynamicImage;

use super::image_ops::MAX_DIMENSION;
use super::jpeg;

/// How the requested box is filled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// Exactly `w`×`h`, the aspect ratio not kept.
    Exact,
    /// The largest size that fits in `w`×`h` with the aspect ratio kept.
    Fit,
    /// Exactly `w`×`h`: scaled to cover the box, the overflow cropped evenly from both sides.
    Fill,
}

impl Mode {
    pub(super) fn parse(s: &str) -> Option<Mode> {
        match s {
            "exact" => Some(Mode::Exact),
            "fit" => Some(Mode::Fit),
            "fill" => Some(Mode::Fill),
            _ => None,
        }
    }
}

/// A requested resize: at least one of `w` and `h` (checked by the stage's argument parser).
#[derive(Clone, Copy, Debug)]
pub(super) struct Resize {
    pub w: Option<u32>,
    pub h: Option<u32>,
    pub mode: Mode,
}

impl Resize {
    /// The box asked for, the missing side derived from the source's aspect ratio.
    fn target(&self, (sw, sh): (u32, u32)) -> (u32, u32) {
        let derive = |known: u32, num: u32, den: u32| {
            ((num as u64 * known as u64) / den.max(1) as u64).max(1) as u32
        };
        match (self.w, self.h) {
            (Some(w), Some(h)) => (w, h),
            (Some(w), None) => (w, derive(w, sh, sw)),
            (None, Some(h)) => (derive(h, sw, sh), h),
            (None, None) => (sw, sh),
        }
    }

    /// The output's size for a source of `src` pixels.
    pub(super) fn output(&self, src: (u32, u32)) -> (u32, u32) {
        let (w, h) = self.target(src);
        match self.mode {
            Mode::Exact | Mode::Fill => (w, h),
            Mode::Fit => {
                let ratio = (w as f64 / src.0.max(1) as f64).min(h as f64 / src.1.max(1) as f64);
                let side = |s: u32| ((s as f64 * ratio).round() as u32).clamp(1, MAX_DIMENSION);
                (side(src.0), side(src.1))
            }
        }
    }

    /// The smallest decoded size of the whole source that still gives the output at least one
    /// decoded pixel per output pixel on both axes (for `fill`, inside the part that is kept).
    fn needed(&self, src: (u32, u32)) -> (u32, u32) {
        let (ow, oh) = self.output(src);
        match self.mode {
            Mode::Exact | Mode::Fit => (ow, oh),
            Mode::Fill => {
                let ratio = (ow as f64 / src.0.max(1) as f64).max(oh as f64 / src.1.max(1) as f64);
                let side = |s: u32| (s as f64 * ratio).ceil() as u32;
                (side(src.0), side(src.1))
            }
        }
    }

    /// Resizes `img` to [`Resize::output`] of the *original* source size `src` (`img` may be a
    /// reduced-scale decode of it).
    pub(super) fn apply(
        &self,
        img: &DynamicImage,
        src: (u32, u32),
    ) -> Result<DynamicImage, String> {
        let (ow, oh) = self.output(src);
        // fast_image_resize handles 8- and 16-bit luma/RGB(A) and f32 RGB(A); anything else
        // is converted to RGBA8 first.
        let converted;
        let img = if img.pixel_type().is_some() {
            img
        } else {
            converted = DynamicImage::ImageRgba8(img.to_rgba8());
            &converted
        };
        let mut out = DynamicImage::new(ow, oh, img.color());
        let mut options =
            ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
        if self.mode == Mode::Fill {
            options = options.fit_into_destination(None);
        }
        Resizer::new()
            .resize(img, &mut out, &options)
            .map_err(|e| format!("resizing: {e}"))?;
        Ok(out)
    }
}

/// Decodes a JPEG at the smallest DCT scale that `resize` still needs, returning the image and
/// the source's full size. `Ok(None)` where libjpeg does not apply (a colour space it will not
/// turn into RGB, such as CMYK; a coding it lacks; larger than [`MAX_DIMENSION`]): the caller
/// then decodes with the `image` crate, which reports the error if there is one. A JPEG whose
/// data is damaged is an error: another, more lenient decoder would make a plausible image of it.
pub(super) fn decode_jpeg_for(
    data: &[u8],
    resize: &Resize,
) -> Result<Option<jpeg::Decoded>, String> {
    let decoded = jpeg::decode_scaled(data, |src| {
        if src.0 > MAX_DIMENSION || src.1 > MAX_DIMENSION {
            return None;
        }
        let (nw, nh) = resize.needed(src);
        // libjpeg's scaled size of a side: ceil(side × eighths / 8).
        let scaled = |side: u32, eighths: u32| (side * eighths).div_ceil(8);
        let eighths = [1, 2, 4, 8]
            .into_iter()
            .find(|&e| scaled(src.0, e) >= nw && scaled(src.1, e) >= nh)
            .unwrap_or(8);
        Some(eighths as u8)
    });
    match decoded {
        Ok(d) => Ok(d),
        Err(jpeg::JpegError::Unsupported(_)) => Ok(None),
        Err(jpeg::JpegError::Damaged(m)) => Err(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(w: Option<u32>, h: Option<u32>, mode: Mode) -> Resize {
        Resize { w, h, mode }
    }

    #[test]
    fn output_sizes() {
        assert_eq!(
            r(Some(64), Some(64), Mode::Exact).output((300, 200)),
            (64, 64)
        );
        assert_eq!(
            r(Some(64), Some(64), Mode::Fit).output((300, 200)),
            (64, 43)
        );
        assert_eq!(
            r(Some(64), Some(64), Mode::Fill).output((300, 200)),
            (64, 64)
        );
        assert_eq!(
            r(Some(100), None, Mode::Exact).output((300, 200)),
            (100, 66)
        );
        assert_eq!(r(None, Some(100), Mode::Fit).output((300, 200)), (150, 100));
    }

    #[test]
    fn needed_keeps_one_pixel_per_output_pixel() {
        // 1600×1200 to 224×224: exact needs 224×224 decoded, fill needs the kept 4:3 crop to be
        // 224 high, so 299×224.
        assert_eq!(
            r(Some(224), Some(224), Mode::Exact).needed((1600, 1200)),
            (224, 224)
        );
        assert_eq!(
            r(Some(224), Some(224), Mode::Fill).needed((1600, 1200)),
            (299, 224)
        );
    }

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
        });
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, image::ImageFormat::Jpeg).unwrap();
        buf.into_inner()
    }

    #[test]
    fn jpeg_decoded_at_the_smallest_sufficient_scale() {
        let data = jpeg(1600, 1200);
        // 224×224 needs the 1/4 scale (400×300); 1/8 (200×150) would be too small.
        let (img, src) = decode_jpeg_for(&data, &r(Some(224), Some(224), Mode::Exact))
            .unwrap()
            .unwrap();
        assert_eq!(src, (1600, 1200));
        assert_eq!((img.width(), img.height()), (400, 300));
        // Growing the image: no reduction.
        let (img, _) = decode_jpeg_for(&data, &r(Some(2000), None, Mode::Exact))
            .unwrap()
            .unwrap();
        assert_eq!((img.width(), img.height()), (1600, 1200));
        // The output matches a full decode resized the same way, to within JPEG noise.
        let resize = r(Some(224), Some(224), Mode::Fill);
        let (small, src) = decode_jpeg_for(&data, &resize).unwrap().unwrap();
        let fast = resize.apply(&small, src).unwrap().to_rgb8();
        let full = image::load_from_memory(&data).unwrap();
        let slow = resize.apply(&full, src).unwrap().to_rgb8();
        assert_eq!(fast.dimensions(), slow.dimensions());
        let diff: u64 = fast
            .as_raw()
            .iter()
            .zip(slow.as_raw())
            .map(|(a, b)| a.abs_diff(*b) as u64)
            .sum();
        let mean = diff as f64 / fast.as_raw().len() as f64;
        assert!(mean < 4.0, "mean absolute difference {mean}");
    }

    #[test]
    fn not_a_jpeg_is_left_to_the_general_decoder() {
        let resize = r(Some(5), None, Mode::Exact);
        assert_eq!(decode_jpeg_for(b"not a jpeg", &resize), Ok(None));
        // A damaged JPEG is not: it is an error.
        let data = jpeg(160, 120);
        assert!(decode_jpeg_for(&data[..data.len() / 2], &resize).is_err());
    }
}
