//! Transforms compiled into aisle, available on every cluster by name.
//!
//! | name | arguments (JSON) | output |
//! | --- | --- | --- |
//! | `identity` | — | the input |
//! | `md5`, `sha256` | — | hex digest |
//! | `xxh64` | `{"seed": n}` | hex digest |
//! | `gzip`, `zstd` | `{"level": n}` | compressed (gzip with mtime 0: deterministic) |
//! | `gunzip`, `unzstd` | — | decompressed |
//! | `resize` | `{"w","h","mode":"exact"\|"fit"\|"fill"}` | image, same format |
//! | `center-crop` | `{"w","h"}` | image, same format |
//! | `grayscale` | — | image, same format |
//! | `jpeg`, `png`, `webp` | `{"q"}` (jpeg only; webp is lossless) | re-encoded image |
//! | `wds-select` | `{"keep": [exts]}` or `{"drop": [exts]}` | the tar shard without the others |
//! | `wds-map` | `{"ext", "pipeline", "args"}` | the tar shard, matching members transformed |

mod compress;
mod digest;
mod image_ops;
mod jpeg;
pub use jpeg::simd as jpeg_simd;
mod resize;
mod wds;

use std::sync::Arc;

use crate::{ByteStream, StageArgs, Transformer};

/// Every built-in.
pub fn all() -> Vec<Arc<dyn Transformer>> {
    let mut v: Vec<Arc<dyn Transformer>> = vec![Arc::new(Identity)];
    v.extend(digest::all());
    v.extend(compress::all());
    v.extend(image_ops::all());
    v.extend(wds::all());
    v
}

/// Is `name` a built-in? (The name set is derived from [`all`] once.)
pub fn is_builtin(name: &str) -> bool {
    static NAMES: std::sync::LazyLock<std::collections::BTreeSet<String>> =
        std::sync::LazyLock::new(|| all().iter().map(|t| t.name().to_string()).collect());
    NAMES.contains(name)
}

/// Passes bytes through unchanged.
pub struct Identity;

#[async_trait::async_trait]
impl Transformer for Identity {
    fn name(&self) -> &str {
        "identity"
    }
    async fn run(
        &self,
        input: ByteStream,
        _args: &StageArgs,
        _path: &str,
    ) -> Result<ByteStream, crate::EtlError> {
        Ok(input)
    }
}
