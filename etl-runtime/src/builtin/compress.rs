//! Streaming compression and decompression (gzip, zstd).

use std::io;
use std::sync::Arc;

use async_compression::Level;
use async_compression::tokio::bufread::{GzipDecoder, GzipEncoder, ZstdDecoder, ZstdEncoder};
use futures::StreamExt;
use tokio::io::AsyncRead;
use tokio_util::io::{ReaderStream, StreamReader};

use crate::{ByteStream, EtlError, StageArgs, Transformer};

#[derive(Clone, Copy)]
enum Kind {
    Gzip,
    Gunzip,
    Zstd,
    Unzstd,
}

struct Codec(Kind);

pub(super) fn all() -> Vec<Arc<dyn Transformer>> {
    [Kind::Gzip, Kind::Gunzip, Kind::Zstd, Kind::Unzstd]
        .into_iter()
        .map(|k| Arc::new(Codec(k)) as Arc<dyn Transformer>)
        .collect()
}

impl Codec {
    fn decodes(&self) -> bool {
        matches!(self.0, Kind::Gunzip | Kind::Unzstd)
    }

    fn level(&self, args: &StageArgs) -> Result<Level, EtlError> {
        let max = match self.0 {
            Kind::Gzip => 9,
            _ => 22,
        };
        match args.u64(self.name(), "level")? {
            None => Ok(Level::Default),
            Some(l) if (1..=max).contains(&l) => Ok(Level::Precise(l as i32)),
            Some(l) => Err(EtlError::BadArgs {
                stage: self.name().into(),
                message: format!("level must be 1..={max}, got {l}"),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Transformer for Codec {
    fn name(&self) -> &str {
        match self.0 {
            Kind::Gzip => "gzip",
            Kind::Gunzip => "gunzip",
            Kind::Zstd => "zstd",
            Kind::Unzstd => "unzstd",
        }
    }

    fn content_type(&self, input: Option<&str>) -> Option<String> {
        match self.0 {
            Kind::Gzip => Some("application/gzip".into()),
            Kind::Zstd => Some("application/zstd".into()),
            _ => input
                .map(str::to_string)
                .or(Some("application/octet-stream".into())),
        }
    }

    fn check_args(&self, args: &StageArgs) -> Result<(), EtlError> {
        if !self.decodes() {
            self.level(args)?;
        }
        Ok(())
    }

    async fn run(
        &self,
        input: ByteStream,
        args: &StageArgs,
        _path: &str,
    ) -> Result<ByteStream, EtlError> {
        let reader = StreamReader::new(input.map(|r| r.map_err(io::Error::other)));
        let coded: Box<dyn AsyncRead + Send + Unpin> = match self.0 {
            Kind::Gzip => Box::new(GzipEncoder::with_quality(reader, self.level(args)?)),
            Kind::Zstd => Box::new(ZstdEncoder::with_quality(reader, self.level(args)?)),
            Kind::Gunzip => {
                let mut d = GzipDecoder::new(reader);
                d.multiple_members(true);
                Box::new(d)
            }
            Kind::Unzstd => Box::new(ZstdDecoder::new(reader)),
        };
        let stage = self.name().to_string();
        let decodes = self.decodes();
        Ok(Box::pin(
            ReaderStream::with_capacity(coded, 128 * 1024).map(move |r| {
                r.map_err(|e| {
                    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<EtlError>()) {
                        return inner.clone();
                    }
                    if decodes {
                        EtlError::Rejected {
                            stage: stage.clone(),
                            message: format!("corrupt input: {e}"),
                        }
                    } else {
                        EtlError::Failed {
                            stage: stage.clone(),
                            message: e.to_string(),
                        }
                    }
                })
            }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use crate::{Registry, collect, once};

    async fn run(
        names: &[&str],
        args: Option<&str>,
        input: &[u8],
    ) -> Result<Vec<u8>, crate::EtlError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let p = Registry::with_builtins().resolve(&names, args)?;
        collect(p.run(once(input.to_vec()), "b/k").await?).await
    }

    #[tokio::test]
    async fn gzip_is_standard_and_deterministic() {
        let data = b"hello hello hello hello".repeat(1000);
        let a = run(&["gzip"], None, &data).await.unwrap();
        let b = run(&["gzip"], None, &data).await.unwrap();
        assert_eq!(a, b);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&a[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        assert_eq!(run(&["gzip", "gunzip"], None, &data).await.unwrap(), data);
        assert_eq!(
            run(&["zstd", "unzstd"], Some(r#"{"level":3}"#), &data)
                .await
                .unwrap(),
            data
        );
    }

    #[tokio::test]
    async fn corrupt_input_is_rejected_and_bad_level_is_bad_args() {
        let e = run(&["gunzip"], None, b"this is not gzip")
            .await
            .unwrap_err();
        assert_eq!(e.status(), 422);
        let e = run(&["gzip"], Some(r#"{"level":99}"#), b"x")
            .await
            .unwrap_err();
        assert_eq!(e.status(), 400);
    }
}
