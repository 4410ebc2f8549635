//! aisle's ETL runtime: turn a byte stream into another byte stream, next to the data.
//!
//! * [`Transformer`] — one stage: streaming in, streaming out, plus what the caller must know
//!   before running it (is it deterministic, which content type comes out, its version for
//!   caches);
//! * [`builtin`] — transforms compiled into aisle, available by name on every cluster without
//!   registration (identity, digests, compression, image operations);
//! * [`exec`], [`hpush`] (`hpush` and `hpull`) and [`ws`] — the communicators to transformers
//!   that run as their own processes, sharing supervision in `comm`;
//! * [`pipeline`] — resolving names into a [`Pipeline`] of up to 8 stages and running it;
//! * [`EtlError`] — every failure, with the HTTP status the client should see.
//!
//! This crate knows nothing of the cluster, of S3 or of storage: callers hand it a stream and get
//! a stream back.
//!
//! ```
//! # tokio_test_block(async {
//! use aisle_etl_runtime::{Registry, collect, once};
//! let registry = Registry::with_builtins();
//! let p = registry.resolve(&["gzip".into(), "gunzip".into(), "md5".into()], None).unwrap();
//! let out = collect(p.run(once(b"hello".to_vec()), "b/k").await.unwrap()).await.unwrap();
//! assert_eq!(out, b"5d41402abc4b2a76b9719d911017c592");
//! # });
//! # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
//! #     tokio::runtime::Runtime::new().unwrap().block_on(f)
//! # }
//! ```

pub mod builtin;
mod comm;
mod error;
pub mod exec;
pub mod hpush;
pub mod pipeline;
pub mod ws;

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

pub use comm::{CommConfig, ServerConfig, ServerStatus};
pub use error::EtlError;
pub use pipeline::{MAX_ARGS_LEN, MAX_STAGES, Pipeline, Registry, StageArgs, valid_name};

/// A stream of bytes flowing through a transform.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, EtlError>> + Send>>;

/// What a registered transform declares about itself, whatever communicator runs it
/// ([`exec`], [`hpush`], [`ws`]): the trait's descriptive methods read it
/// ([`Transformer::declared`]).
#[derive(Debug, Clone)]
pub struct Declared {
    /// Transform name.
    pub name: String,
    /// Same input and arguments → same output.
    pub deterministic: bool,
    /// Output content type, if fixed.
    pub content_type: Option<String>,
    /// Changes with the spec (cache keys).
    pub version: String,
    /// Per-object deadline.
    pub obj_timeout: std::time::Duration,
    /// Most objects in flight on this node.
    pub concurrency: usize,
}

/// What the first stage of a pipeline may know of its input besides the bytes.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// The input is the whole stored object named by the run's `path` (not a shard member,
    /// not an earlier stage's output), so a transformer may read it from the node itself
    /// (`hpull`).
    pub stored: bool,
    /// The one local file holding exactly the input's bytes, for transformers on this host
    /// that take a file path instead of the bytes (`etl_fqn`).
    pub file: Option<std::path::PathBuf>,
}

/// One transform stage.
#[async_trait::async_trait]
pub trait Transformer: Send + Sync {
    /// Its name, as clients write it in `x-ais-etl`.
    fn name(&self) -> &str;

    /// What a registered transform declared (none for built-ins); the defaults below read it.
    fn declared(&self) -> Option<&Declared> {
        None
    }

    /// Same input and arguments always give the same bytes (outputs may then be cached).
    fn deterministic(&self) -> bool {
        self.declared().is_none_or(|d| d.deterministic)
    }

    /// Changes whenever the output for the same input and arguments may change (cache keys).
    fn version(&self) -> String {
        match self.declared() {
            Some(d) => d.version.clone(),
            None => env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Content type of the output, given the input's.
    fn content_type(&self, input: Option<&str>) -> Option<String> {
        self.declared()
            .and_then(|d| d.content_type.clone())
            .or(input.map(str::to_string))
    }

    /// Reject bad arguments before any byte is read.
    fn check_args(&self, _args: &StageArgs) -> Result<(), EtlError> {
        Ok(())
    }

    /// Recent log lines of the transformer's process, if it has one.
    fn logs(&self) -> Vec<String> {
        Vec::new()
    }

    /// Reads its input from the node or a file rather than from the stream, so it can only be
    /// a pipeline's first stage ([`Transformer::run_source`]).
    fn needs_source(&self) -> bool {
        false
    }

    /// Transform `input`, the bytes of the object at `path` (`bucket/key`). Errors found while
    /// streaming come through the returned stream.
    async fn run(
        &self,
        input: ByteStream,
        args: &StageArgs,
        path: &str,
    ) -> Result<ByteStream, EtlError>;

    /// [`Transformer::run`] as a pipeline's first stage, told what `source` the input is; a
    /// transformer that can use a file path or read the object itself overrides this.
    async fn run_source(
        &self,
        input: ByteStream,
        _source: &Source,
        args: &StageArgs,
        path: &str,
    ) -> Result<ByteStream, EtlError> {
        self.run(input, args, path).await
    }
}

/// A stream of one chunk.
pub fn once(data: impl Into<Bytes>) -> ByteStream {
    let b: Bytes = data.into();
    Box::pin(futures::stream::once(async move { Ok(b) }))
}

/// Read a whole stream into memory (for tests and for transforms that need the whole input,
/// bounded by `limit`).
pub async fn collect_limited(
    mut s: ByteStream,
    limit: usize,
    stage: &str,
) -> Result<Vec<u8>, EtlError> {
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Err(EtlError::Rejected {
                stage: stage.to_string(),
                message: format!("input larger than this transform's limit of {limit} bytes"),
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Read a whole stream into memory.
pub async fn collect(s: ByteStream) -> Result<Vec<u8>, EtlError> {
    collect_limited(s, usize::MAX, "collect").await
}
