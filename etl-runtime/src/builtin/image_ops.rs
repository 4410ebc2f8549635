//! Image transforms on the `image` crate. An image is decoded whole (bounded by
//! [`MAX_IMAGE_BYTES`] of input and the decoder's dimension limits), so these run on the
//! blocking pool. `resize` has its own fast path for shrinking JPEGs ([`super::resize`]).

use std::io::Cursor;
use std::sync::Arc;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use super::resize::{Mode, Resize, decode_jpeg_for};
use crate::{ByteStream, EtlError, StageArgs, Transformer, collect_limited, once};

/// Largest encoded image accepted.
pub const MAX_IMAGE_BYTES: usize = 64 * 1024 * 1024;
/// Largest width or height accepted (input and output).
pub const MAX_DIMENSION: u32 = 16_384;

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Resize,
    CenterCrop,
    Grayscale,
    Jpeg,
    Png,
    Webp,
}

struct ImageT(Op);

pub(super) fn all() -> Vec<Arc<dyn Transformer>> {
    [
        Op::Resize,
        Op::CenterCrop,
        Op::Grayscale,
        Op::Jpeg,
        Op::Png,
        Op::Webp,
    ]
    .into_iter()
    .map(|o| Arc::new(ImageT(o)) as Arc<dyn Transformer>)
    .collect()
}

/// Parsed arguments.
struct Params {
    w: Option<u32>,
    h: Option<u32>,
    mode: Mode,
    q: u8,
}

fn mime(f: ImageFormat) -> &'static str {
    f.to_mime_type()
}

impl ImageT {
    fn params(&self, args: &StageArgs) -> Result<Params, EtlError> {
        let stage = self.name();
        let dim = |f: &str| -> Result<Option<u32>, EtlError> {
            match args.u64(stage, f)? {
                None => Ok(None),
                Some(v) if (1..=MAX_DIMENSION as u64).contains(&v) => Ok(Some(v as u32)),
                Some(v) => Err(EtlError::BadArgs {
                    stage: stage.into(),
                    message: format!("{f} must be 1..={MAX_DIMENSION}, got {v}"),
                }),
            }
        };
        let (w, h) = (dim("w")?, dim("h")?);
        let mode = args.str(stage, "mode")?.unwrap_or_else(|| "exact".into());
        let mode = Mode::parse(&mode).ok_or_else(|| EtlError::BadArgs {
            stage: stage.into(),
            message: format!("mode must be exact, fit or fill, got {mode}"),
        })?;
        let q = match args.u64(stage, "q")? {
            None => 90,
            Some(q) if (1..=100).contains(&q) => q as u8,
            Some(q) => {
                return Err(EtlError::BadArgs {
                    stage: stage.into(),
                    message: format!("q must be 1..=100, got {q}"),
                });
            }
        };
        match self.0 {
            Op::Resize if w.is_none() && h.is_none() => {
                return Err(EtlError::BadArgs {
                    stage: stage.into(),
                    message: "give w, h or both, e.g. {\"resize\":{\"w\":224,\"h\":224}}".into(),
                });
            }
            Op::CenterCrop if w.is_none() || h.is_none() => {
                return Err(EtlError::BadArgs {
                    stage: stage.into(),
                    message: "give w and h".into(),
                });
            }
            _ => {}
        }
        Ok(Params { w, h, mode, q })
    }

    fn apply(&self, data: &[u8], p: &Params) -> Result<Vec<u8>, EtlError> {
        let stage = self.name();
        let reject = |m: String| EtlError::Rejected {
            stage: stage.into(),
            message: m,
        };
        let mut reader = ImageReader::new(Cursor::new(data))
            .with_guessed_format()
            .map_err(|e| reject(e.to_string()))?;
        let mut limits = Limits::default();
        limits.max_image_width = Some(MAX_DIMENSION);
        limits.max_image_height = Some(MAX_DIMENSION);
        reader.limits(limits);
        let input_format = reader
            .format()
            .ok_or_else(|| reject("not a recognised image format".into()))?;
        let resize = Resize {
            w: p.w,
            h: p.h,
            mode: p.mode,
        };
        let fast = match (self.0, input_format) {
            (Op::Resize, ImageFormat::Jpeg) => decode_jpeg_for(data, &resize)
                .map_err(|m| reject(format!("cannot decode the image: {m}")))?,
            _ => None,
        };
        let (img, src) = match fast {
            Some(decoded) => decoded,
            None => {
                let img = reader
                    .decode()
                    .map_err(|e| reject(format!("cannot decode the image: {e}")))?;
                let src = (img.width(), img.height());
                (img, src)
            }
        };
        let out: DynamicImage = match self.0 {
            Op::Resize => resize
                .apply(&img, src)
                .map_err(|message| EtlError::Failed {
                    stage: stage.into(),
                    message,
                })?,
            Op::CenterCrop => {
                let w = p.w.unwrap_or(img.width()).min(img.width());
                let h = p.h.unwrap_or(img.height()).min(img.height());
                img.crop_imm((img.width() - w) / 2, (img.height() - h) / 2, w, h)
            }
            Op::Grayscale => img.grayscale(),
            Op::Jpeg | Op::Png | Op::Webp => img,
        };
        let format = match self.0 {
            Op::Jpeg => ImageFormat::Jpeg,
            Op::Png => ImageFormat::Png,
            Op::Webp => ImageFormat::WebP,
            _ => input_format,
        };
        let failed = |e: &dyn std::fmt::Display| EtlError::Failed {
            stage: stage.into(),
            message: format!("encoding: {e}"),
        };
        let written = |img: &DynamicImage, format| {
            let mut buf = Cursor::new(Vec::new());
            img.write_to(&mut buf, format).map_err(|e| failed(&e))?;
            Ok(buf.into_inner())
        };
        match format {
            ImageFormat::Jpeg => {
                let q = if self.0 == Op::Jpeg { p.q } else { 90 };
                super::jpeg::encode(&out, q).map_err(|e| failed(&e))
            }
            ImageFormat::WebP => written(&DynamicImage::ImageRgba8(out.to_rgba8()), format),
            other => written(&out, other),
        }
    }
}

#[async_trait::async_trait]
impl Transformer for ImageT {
    fn name(&self) -> &str {
        match self.0 {
            Op::Resize => "resize",
            Op::CenterCrop => "center-crop",
            Op::Grayscale => "grayscale",
            Op::Jpeg => "jpeg",
            Op::Png => "png",
            Op::Webp => "webp",
        }
    }

    fn content_type(&self, input: Option<&str>) -> Option<String> {
        match self.0 {
            Op::Jpeg => Some(mime(ImageFormat::Jpeg).into()),
            Op::Png => Some(mime(ImageFormat::Png).into()),
            Op::Webp => Some(mime(ImageFormat::WebP).into()),
            _ => input.map(str::to_string),
        }
    }

    fn check_args(&self, args: &StageArgs) -> Result<(), EtlError> {
        self.params(args).map(drop)
    }

    async fn run(
        &self,
        input: ByteStream,
        args: &StageArgs,
        _path: &str,
    ) -> Result<ByteStream, EtlError> {
        let p = self.params(args)?;
        let data = collect_limited(input, MAX_IMAGE_BYTES, self.name()).await?;
        let op = ImageT(self.0);
        let out = tokio::task::spawn_blocking(move || op.apply(&data, &p))
            .await
            .map_err(|e| EtlError::Failed {
                stage: "image".into(),
                message: e.to_string(),
            })??;
        Ok(once(out))
    }
}

#[cfg(test)]
mod tests {
    use image::{ImageFormat, Rgb, RgbImage};

    use crate::{Registry, collect, once};

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 128]));
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, ImageFormat::Jpeg).unwrap();
        buf.into_inner()
    }

    async fn run(names: &[&str], args: &str, input: Vec<u8>) -> Result<Vec<u8>, crate::EtlError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let p = Registry::with_builtins().resolve(&names, Some(args))?;
        collect(p.run(once(input), "b/k").await?).await
    }

    #[tokio::test]
    async fn resize_modes() {
        let src = jpeg(300, 200);
        let out = run(&["resize"], r#"{"resize":{"w":64,"h":64}}"#, src.clone())
            .await
            .unwrap();
        let img = image::load_from_memory(&out).unwrap();
        assert_eq!((img.width(), img.height()), (64, 64));
        assert_eq!(image::guess_format(&out).unwrap(), ImageFormat::Jpeg);
        let fit = run(&["resize"], r#"{"w":64,"h":64,"mode":"fit"}"#, src.clone())
            .await
            .unwrap();
        let img = image::load_from_memory(&fit).unwrap();
        assert_eq!((img.width(), img.height()), (64, 43));
        let pipeline = run(
            &["resize", "center-crop", "png"],
            r#"{"resize":{"w":100},"center-crop":{"w":50,"h":20}}"#,
            src,
        )
        .await
        .unwrap();
        assert_eq!(image::guess_format(&pipeline).unwrap(), ImageFormat::Png);
        let img = image::load_from_memory(&pipeline).unwrap();
        assert_eq!((img.width(), img.height()), (50, 20));
    }

    #[tokio::test]
    async fn deterministic_and_formats() {
        let src = jpeg(120, 80);
        let a = run(&["grayscale", "webp"], "{}", src.clone())
            .await
            .unwrap();
        let b = run(&["grayscale", "webp"], "{}", src.clone())
            .await
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(image::guess_format(&a).unwrap(), ImageFormat::WebP);
        let q10 = run(&["jpeg"], r#"{"q":10}"#, src.clone()).await.unwrap();
        let q95 = run(&["jpeg"], r#"{"q":95}"#, src).await.unwrap();
        assert!(q10.len() < q95.len());
    }

    #[tokio::test]
    async fn errors() {
        assert_eq!(
            run(&["resize"], "{}", jpeg(10, 10))
                .await
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            run(&["resize"], r#"{"w":0}"#, jpeg(10, 10))
                .await
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            run(&["resize"], r#"{"w":5}"#, b"not an image".to_vec())
                .await
                .unwrap_err()
                .status(),
            422
        );
        // A JPEG cut short is refused, not resized into a half-grey picture.
        let photo = jpeg(300, 200);
        let err = run(
            &["resize"],
            r#"{"w":50}"#,
            photo[..photo.len() / 2].to_vec(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 422, "{err}");
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
