//! JPEG through libjpeg: the `mozjpeg` crate, whose C library (libjpeg-turbo's code) is built
//! from source by cargo with the C compiler every Rust toolchain links with — no system
//! library. Its SIMD code (inverse DCTs, upsampling, colour conversion) is assembled when
//! `nasm` is on the PATH at build time, else left out: the same results, ~20% slower for
//! `resize` ([`simd`] tells which build this is).
//!
//! What it is for: the two JPEG steps on the hot path of image transforms.
//!
//! - [`decode_scaled`]: decoding straight to 1/8 … 8/8 of the source's size (libjpeg's scaled
//!   inverse DCT), for `resize`. libjpeg's entropy decoder is what makes it fast: 3.5 ms for a
//!   1600×1200 photo at 1/4 on this project's benchmark host, against 4.8 ms for jpeg-decoder's
//!   scaled decode and 4.9 ms for a full zune-jpeg decode.
//! - [`encode`]: baseline JPEG with libjpeg-turbo's standard tables (`set_fastest_defaults`:
//!   no trellis, no progressive scans, no scan search, so it costs a fraction of a decode).
//!
//! What it is not for: formats other than JPEG, and JPEGs libjpeg will not convert to RGB
//! (CMYK, YCCK): those are left to the `image` crate by the caller.
//!
//! libjpeg reports errors by calling back; the callbacks here unwind (the C code is compiled
//! with unwind tables, mozjpeg-sys's `unwinding` feature) and every call is wrapped in
//! `catch_unwind`, so a broken file is an `Err`, never a crash. A *warning* (corrupt data that
//! libjpeg would paper over, e.g. a file cut short, decoded with grey filling the rest) is an
//! error here too: a transform never turns a damaged input into a plausible output.

use std::os::raw::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{DynamicImage, GrayImage, RgbImage};
use mozjpeg::{ColorSpace, Compress, Decompress};
use mozjpeg_sys::{jpeg_common_struct, jpeg_error_mgr, jpeg_std_error};

/// Whether this build's libjpeg has its SIMD code and this CPU runs it. libjpeg-turbo defines
/// `jsimd_can_*` in both builds: without SIMD (no nasm at build time) they all answer 0.
///
/// ```
/// // Either answer is a working build; the difference is speed.
/// let _with_simd: bool = aisle_etl_runtime::builtin::jpeg_simd();
/// ```
pub fn simd() -> bool {
    unsafe extern "C" {
        fn jsimd_can_idct_islow() -> c_int;
    }
    // SAFETY: a query without arguments; libjpeg probes the CPU into a thread-local of its own.
    unsafe { jsimd_can_idct_islow() != 0 }
}

/// libjpeg's error manager with both callbacks replaced: a fatal error and a warning each
/// unwind with their libjpeg message code. (Messages above warning level are trace output
/// and are dropped.)
fn error_mgr() -> jpeg_error_mgr {
    // SAFETY: `jpeg_std_error` initialises every field of the zeroed struct it is given, and
    // the two callbacks set after it have the signatures libjpeg calls them with.
    unsafe {
        let mut err: jpeg_error_mgr = std::mem::zeroed();
        jpeg_std_error(&mut err);
        err.error_exit = Some(fatal);
        err.emit_message = Some(message);
        err
    }
}

fn code(cinfo: &jpeg_common_struct) -> c_int {
    // SAFETY: libjpeg calls back with `err` pointing at the manager it was created with.
    unsafe { cinfo.err.as_ref().map_or(-1, |e| e.msg_code) }
}

/// Why libjpeg gave up on a file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum JpegError {
    /// A JPEG whose data is damaged (libjpeg warned: the file ends early, a marker is corrupt):
    /// an error for the client, not a case for another decoder.
    #[error("{0}")]
    Damaged(String),
    /// Not something libjpeg decodes (not a JPEG, a colour space it will not turn into RGB, a
    /// coding it lacks): another decoder may still take it.
    #[error("{0}")]
    Unsupported(String),
}

extern "C-unwind" fn fatal(cinfo: &mut jpeg_common_struct) {
    let e = JpegError::Unsupported(format!("libjpeg error {}", code(cinfo)));
    std::panic::resume_unwind(Box::new(e));
}

extern "C-unwind" fn message(cinfo: &mut jpeg_common_struct, level: c_int) {
    if level < 0 {
        let e = JpegError::Damaged(format!(
            "the JPEG data is damaged (libjpeg warning {}; e.g. the file ends early)",
            code(cinfo)
        ));
        std::panic::resume_unwind(Box::new(e));
    }
}

/// `f`'s result, or the error it unwound with.
fn guarded<T>(f: impl FnOnce() -> Result<T, JpegError>) -> Result<T, JpegError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(match payload.downcast::<JpegError>() {
            Ok(e) => *e,
            // A panic of the wrapper itself (a size it did not expect).
            Err(other) => JpegError::Unsupported(
                other
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| other.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "libjpeg failed".into()),
            ),
        }),
    }
}

fn unsupported(e: std::io::Error) -> JpegError {
    JpegError::Unsupported(e.to_string())
}

/// A decoded image and the size of the source it came from (it may be a reduced-scale decode).
pub(super) type Decoded = (DynamicImage, (u32, u32));

/// Reads `data`'s header once, asks `scale` for the decode scale in eighths (1..=8) given the
/// source's size, and decodes at that scale: RGB, or luma for a greyscale JPEG, with the
/// source's full size. `Ok(None)` when `scale` declines (a size the caller will not decode).
pub(super) fn decode_scaled(
    data: &[u8],
    scale: impl FnOnce((u32, u32)) -> Option<u8>,
) -> Result<Option<Decoded>, JpegError> {
    guarded(|| {
        let mut d = Decompress::builder()
            .with_err(error_mgr())
            .from_mem(data)
            .map_err(unsupported)?;
        let src = (d.width() as u32, d.height() as u32);
        let Some(eighths) = scale(src) else {
            return Ok(None);
        };
        d.scale(eighths);
        let grey = d.color_space() == ColorSpace::JCS_GRAYSCALE;
        let mut started = if grey { d.grayscale() } else { d.rgb() }.map_err(unsupported)?;
        let (w, h) = (started.width() as u32, started.height() as u32);
        let pixels = started.read_scanlines::<u8>().map_err(unsupported)?;
        started.finish().map_err(unsupported)?;
        let img = if grey {
            GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
        } else {
            RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
        };
        let img = img.ok_or_else(|| {
            JpegError::Unsupported("libjpeg returned fewer pixels than its size".into())
        })?;
        Ok(Some((img, src)))
    })
}

/// `img` as a baseline RGB JPEG of quality `q` (1..=100), 4:2:0.
pub(super) fn encode(img: &DynamicImage, q: u8) -> Result<Vec<u8>, JpegError> {
    // Converted only when it is not RGB8 already (a resize's output is).
    let converted;
    let rgb = match img.as_rgb8() {
        Some(rgb) => rgb,
        None => {
            converted = img.to_rgb8();
            &converted
        }
    };
    guarded(|| {
        let mut c = Compress::new_err(Box::new(error_mgr()), ColorSpace::JCS_RGB);
        c.set_fastest_defaults();
        c.set_size(rgb.width() as usize, rgb.height() as usize);
        c.set_quality(q as f32);
        let mut started = c
            .start_compress(Vec::with_capacity(rgb.len() / 8))
            .map_err(unsupported)?;
        started.write_scanlines(rgb.as_raw()).map_err(unsupported)?;
        started.finish().map_err(unsupported)
    })
}

#[cfg(test)]
mod tests {
    use image::{GenericImageView, Rgb, RgbImage};

    use super::*;

    fn photo(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| {
            Rgb([
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x ^ y) % 256) as u8,
            ])
        });
        encode(&DynamicImage::ImageRgb8(img), 90).unwrap()
    }

    #[test]
    fn decodes_at_a_reduced_scale_and_reencodes() {
        let data = photo(640, 480);
        let at = |eighths| decode_scaled(&data, |_| Some(eighths)).unwrap().unwrap();
        let (quarter, src) = at(2);
        assert_eq!((quarter.dimensions(), src), ((160, 120), (640, 480)));
        let (full, _) = at(8);
        assert_eq!(full.dimensions(), (640, 480));
        // The caller sees the size before anything is decoded, and may decline.
        let mut seen = None;
        let declined = decode_scaled(&data, |src| {
            seen = Some(src);
            None
        });
        assert_eq!((declined, seen), (Ok(None), Some((640, 480))));
        // The image crate's own decoder reads what this one wrote.
        let again = image::load_from_memory(&encode(&quarter, 80).unwrap()).unwrap();
        assert_eq!(again.dimensions(), (160, 120));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_grey_image_nor_a_crash() {
        let data = photo(640, 480);
        // Cut short: libjpeg would warn and fill the rest with grey.
        let full = |_| Some(8);
        assert!(matches!(
            decode_scaled(&data[..data.len() / 2], full),
            Err(JpegError::Damaged(_))
        ));
        // Not a JPEG at all, or only its first marker: a fatal error, unwound out of the C code.
        assert!(matches!(
            decode_scaled(b"not a jpeg at all", full),
            Err(JpegError::Unsupported(_))
        ));
        assert!(decode_scaled(b"\xff\xd8\xff", full).is_err());
        // The decoder is still usable afterwards.
        assert!(matches!(decode_scaled(&data, |_| Some(1)), Ok(Some(_))));
    }
}
