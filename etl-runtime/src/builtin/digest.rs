//! Digest transforms: the output is the hex digest of the input.

use std::sync::Arc;

use futures::StreamExt;
use md5::Digest;

use crate::{ByteStream, EtlError, StageArgs, Transformer, once};

enum Kind {
    Md5,
    Sha256,
    Xxh64,
}

struct DigestT(Kind);

pub(super) fn all() -> Vec<Arc<dyn Transformer>> {
    vec![
        Arc::new(DigestT(Kind::Md5)),
        Arc::new(DigestT(Kind::Sha256)),
        Arc::new(DigestT(Kind::Xxh64)),
    ]
}

#[async_trait::async_trait]
impl Transformer for DigestT {
    fn name(&self) -> &str {
        match self.0 {
            Kind::Md5 => "md5",
            Kind::Sha256 => "sha256",
            Kind::Xxh64 => "xxh64",
        }
    }

    fn content_type(&self, _input: Option<&str>) -> Option<String> {
        Some("text/plain".into())
    }

    fn check_args(&self, args: &StageArgs) -> Result<(), EtlError> {
        if let Kind::Xxh64 = self.0 {
            args.u64("xxh64", "seed")?;
        }
        Ok(())
    }

    async fn run(
        &self,
        mut input: ByteStream,
        args: &StageArgs,
        _path: &str,
    ) -> Result<ByteStream, EtlError> {
        let hex = match self.0 {
            Kind::Md5 => {
                let mut h = md5::Md5::new();
                while let Some(c) = input.next().await {
                    h.update(&c?);
                }
                hex::encode(h.finalize())
            }
            Kind::Sha256 => {
                let mut h = sha2::Sha256::new();
                while let Some(c) = input.next().await {
                    h.update(&c?);
                }
                hex::encode(h.finalize())
            }
            Kind::Xxh64 => {
                let seed = args.u64("xxh64", "seed")?.unwrap_or(0);
                let mut h = xxhash_rust::xxh64::Xxh64::new(seed);
                while let Some(c) = input.next().await {
                    h.update(&c?);
                }
                format!("{:016x}", h.digest())
            }
        };
        Ok(once(hex.into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use crate::{Registry, collect, once};

    async fn run(name: &str, args: Option<&str>, input: &[u8]) -> String {
        let p = Registry::with_builtins()
            .resolve(&[name.into()], args)
            .unwrap();
        String::from_utf8(
            collect(p.run(once(input.to_vec()), "b/k").await.unwrap())
                .await
                .unwrap(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn digests() {
        assert_eq!(
            run("md5", None, b"abc").await,
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(
            run("sha256", None, b"abc").await,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(run("xxh64", None, b"").await, "ef46db3751d8e999");
        assert_ne!(
            run("xxh64", Some(r#"{"seed":1}"#), b"").await,
            "ef46db3751d8e999"
        );
    }
}
