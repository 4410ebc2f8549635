//! Streaming byte spans out of data files.

use std::path::PathBuf;
use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::store::StoreError;

/// A stream of file bytes.
pub type FileStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

const CHUNK: usize = 256 * 1024;

/// Stream `[start, end)` of the concatenation of `files` (path, size). Every file of the span
/// is opened before this returns, so a concurrent overwrite (which unlinks old files) cannot
/// pull a later piece away mid-read.
pub async fn open_span(
    files: &[(PathBuf, u64)],
    start: u64,
    end: u64,
) -> Result<FileStream, StoreError> {
    let mut pieces = Vec::new();
    let mut offset = 0u64;
    for (path, size) in files {
        let (s0, s1) = (offset, offset + size);
        offset = s1;
        if s1 <= start || s0 >= end {
            continue;
        }
        let from = start.max(s0) - s0;
        let to = end.min(s1) - s0;
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(StoreError::io(format!("opening {}", path.display())))?;
        if from > 0 {
            f.seek(std::io::SeekFrom::Start(from))
                .await
                .map_err(StoreError::io(format!("seeking {}", path.display())))?;
        }
        pieces.push(tokio_util::io::ReaderStream::with_capacity(
            f.take(to - from),
            CHUNK,
        ));
    }
    Ok(Box::pin(futures::stream::iter(pieces).flatten()))
}
