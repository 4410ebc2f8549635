//! Byte spans of open files, read without an intermediate buffer: a small span at once, a
//! larger one as a stream of chunks, each chunk one positioned read on the blocking pool; and
//! batches of upload frames appended to a file with one hand-off per batch.
//!
//! Shared by the target (which serves its data files) and the gateway (which reads a same-host
//! target's files through descriptors the target passed it, see [`crate::local`]). It holds no
//! policy about which files: callers open them.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;

/// A stream of file bytes.
pub type FileStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync>>;

/// Spans up to this size are read at once on the calling thread ([`read_now`]): for a small
/// object the hand-off to the blocking pool costs more than the read, which comes from the page
/// cache when the object is hot.
pub const SMALL_READ: u64 = 64 * 1024;

/// Bytes gathered (as the frames they arrived in, not copied) before one write to a file: an
/// upload arrives in many small frames, and each write is a hand-off to the blocking pool.
pub const WRITE_BATCH: usize = 1024 * 1024;

/// Bytes per read of a streamed span.
const CHUNK: u64 = 512 * 1024;

/// `[from, to)` of an open file.
#[derive(Debug)]
pub struct Span {
    /// The file (already open, so a concurrent overwrite that unlinks it cannot pull it away).
    pub file: File,
    /// First byte.
    pub from: u64,
    /// One past the last byte.
    pub to: u64,
}

impl Span {
    /// Its length.
    pub fn len(&self) -> u64 {
        self.to - self.from
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.to <= self.from
    }
}

/// Total bytes of `spans`.
pub fn total(spans: &[Span]) -> u64 {
    spans.iter().map(Span::len).sum()
}

/// Read all of `spans` into memory, synchronously. For spans of at most [`SMALL_READ`] bytes
/// (the caller checks); larger spans go through [`stream`].
pub fn read_now(spans: &[Span]) -> io::Result<Bytes> {
    let mut out = vec![0u8; total(spans) as usize];
    let mut at = 0usize;
    for s in spans {
        let n = s.len() as usize;
        s.file.read_exact_at(&mut out[at..at + n], s.from)?;
        at += n;
    }
    Ok(out.into())
}

/// Append `frames` to `file` (sequentially, at its offset), and fsync it when `sync`, on the
/// blocking pool: one hand-off for a whole batch of upload frames.
pub async fn write_frames(file: Arc<File>, frames: Vec<Bytes>, sync: bool) -> io::Result<()> {
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        for b in &frames {
            (&*file).write_all(b)?;
        }
        if sync { file.sync_all() } else { Ok(()) }
    })
    .await
    .map_err(io::Error::other)?
}

/// Stream `spans` one after the other. A file shorter than its span is an error (the stream
/// ends with it), never a short body.
pub fn stream(spans: Vec<Span>) -> FileStream {
    let state = (spans.into_iter(), None::<(Arc<File>, u64, u64)>);
    Box::pin(futures::stream::try_unfold(
        state,
        |(mut rest, mut cur)| async move {
            loop {
                match cur.take() {
                    Some((file, pos, to)) if pos < to => {
                        let n = CHUNK.min(to - pos);
                        let f = file.clone();
                        let chunk = tokio::task::spawn_blocking(move || {
                            let mut buf = vec![0u8; n as usize];
                            f.read_exact_at(&mut buf, pos).map(|()| Bytes::from(buf))
                        })
                        .await
                        .map_err(io::Error::other)??;
                        return Ok(Some((chunk, (rest, Some((file, pos + n, to))))));
                    }
                    _ => match rest.next() {
                        Some(s) => cur = Some((Arc::new(s.file), s.from, s.to)),
                        None => return Ok(None),
                    },
                }
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::TryStreamExt;
    use std::io::Write;

    async fn collect(s: FileStream) -> io::Result<Vec<u8>> {
        s.try_fold(Vec::new(), |mut v, b| async move {
            v.extend_from_slice(&b);
            Ok(v)
        })
        .await
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile_in_target();
        f.write_all(bytes).unwrap();
        f
    }

    fn tempfile_in_target() -> File {
        let dir = std::env::temp_dir().join(format!("aisle-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}", rand::random::<u64>()));
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[tokio::test]
    async fn spans_read_at_once_and_streamed_are_the_concatenation() {
        let a: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..700_000u32).map(|i| (i % 13) as u8).collect();
        let spans = || {
            vec![
                Span {
                    file: file_with(&a),
                    from: 5,
                    to: a.len() as u64,
                },
                Span {
                    file: file_with(&b),
                    from: 0,
                    to: 1000,
                },
            ]
        };
        let mut want = a[5..].to_vec();
        want.extend_from_slice(&b[..1000]);
        assert_eq!(total(&spans()), want.len() as u64);
        let streamed = collect(stream(spans())).await.unwrap();
        assert_eq!(streamed, want);
        let small = vec![Span {
            file: file_with(&b),
            from: 10,
            to: 20,
        }];
        assert_eq!(&read_now(&small).unwrap()[..], &b[10..20]);
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_span_is_an_error_not_a_short_body() {
        let s = vec![Span {
            file: file_with(&[7u8; 100]),
            from: 0,
            to: 2_000_000,
        }];
        assert!(collect(stream(s)).await.is_err());
        let s = vec![Span {
            file: file_with(&[7u8; 10]),
            from: 0,
            to: 20,
        }];
        assert!(read_now(&s).is_err());
    }
}
