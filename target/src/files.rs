//! Which data files hold a byte span of a stored object, opened for reading. The reading itself
//! is [`aisle_cluster::files`], shared with the gateway.

use std::path::PathBuf;

pub use aisle_cluster::files::{FileStream, Span};

use crate::store::StoreError;

/// Open the files of `[start, end)` of the concatenation of `files` (path, size). Every file of
/// the span is opened before this returns, so a concurrent overwrite (which unlinks old files)
/// cannot pull a later piece away mid-read.
pub fn spans(files: &[(PathBuf, u64)], start: u64, end: u64) -> Result<Vec<Span>, StoreError> {
    let mut out = Vec::new();
    let mut offset = 0u64;
    for (path, size) in files {
        let (s0, s1) = (offset, offset + size);
        offset = s1;
        if s1 <= start || s0 >= end {
            continue;
        }
        let file = std::fs::File::open(path)
            .map_err(StoreError::io(format!("opening {}", path.display())))?;
        out.push(Span {
            file,
            from: start.max(s0) - s0,
            to: end.min(s1) - s0,
        });
    }
    Ok(out)
}

/// Stream `[start, end)` of the concatenation of `files` (see [`spans`]).
pub async fn open_span(
    files: &[(PathBuf, u64)],
    start: u64,
    end: u64,
) -> Result<FileStream, StoreError> {
    Ok(aisle_cluster::files::stream(spans(files, start, end)?))
}
