//! Byte spans of open files, read without an intermediate buffer: a small span at once, a
//! larger one as a stream of chunks, each chunk one positioned read — on the calling thread
//! when the page cache holds it, else on the blocking pool; and upload frames appended to a
//! file in batches ([`BatchWriter`]).
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

/// The body of a span: read at once when small, else a stream.
pub enum Body {
    /// At most [`SMALL_READ`] bytes, already read.
    Whole(Bytes),
    /// Larger: read chunk by chunk as it is sent.
    Stream(FileStream),
}

/// The body of `spans`: small ones read now (no hand-off to the blocking pool), larger ones
/// streamed.
pub fn body(spans: Vec<Span>) -> io::Result<Body> {
    if total(&spans) <= SMALL_READ {
        read_now(&spans).map(Body::Whole)
    } else {
        Ok(Body::Stream(stream(spans)))
    }
}

/// Appends upload frames to a file in batches of [`WRITE_BATCH`] on the blocking pool, with one
/// batch in flight: receiving (and hashing) the next batch overlaps writing this one. Each
/// written batch is handed to the kernel's writeback at once (`sync_file_range`), so the fsync
/// at the end has little left to flush.
pub struct BatchWriter {
    file: Arc<File>,
    pending: Vec<Bytes>,
    pending_len: usize,
    written: u64,
    inflight: Option<tokio::task::JoinHandle<io::Result<()>>>,
}

impl BatchWriter {
    /// Append to `file` from its current offset (the caller's only writer).
    pub fn new(file: Arc<File>) -> Self {
        Self {
            file,
            pending: Vec::new(),
            pending_len: 0,
            written: 0,
            inflight: None,
        }
    }

    /// The file written to.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Add a frame (kept as is, not copied).
    pub async fn push(&mut self, frame: Bytes) -> io::Result<()> {
        self.pending_len += frame.len();
        self.pending.push(frame);
        if self.pending_len >= WRITE_BATCH {
            self.write_batch().await?;
        }
        Ok(())
    }

    async fn wait_inflight(&mut self) -> io::Result<()> {
        match self.inflight.take() {
            Some(h) => h.await.map_err(io::Error::other)?,
            None => Ok(()),
        }
    }

    async fn write_batch(&mut self) -> io::Result<()> {
        self.wait_inflight().await?;
        let frames = std::mem::take(&mut self.pending);
        let (offset, len) = (self.written, self.pending_len as u64);
        self.written += len;
        self.pending_len = 0;
        let file = self.file.clone();
        self.inflight = Some(tokio::task::spawn_blocking(move || {
            use std::io::Write;
            for b in &frames {
                (&*file).write_all(b)?;
            }
            start_writeback(&file, offset, len);
            Ok(())
        }));
        Ok(())
    }

    /// Write the rest, wait for it, and fsync when `sync`. A small file (all of it pending, at
    /// most [`SMALL_READ`] bytes) is written now, on this thread: a hand-off to the blocking
    /// pool and back costs more than the write into the page cache, and its writeback is left
    /// to the fsync that follows.
    pub async fn finish(mut self, sync: bool) -> io::Result<()> {
        if self.written == 0 && self.inflight.is_none() && self.pending_len as u64 <= SMALL_READ {
            use std::io::Write;
            for b in std::mem::take(&mut self.pending) {
                (&*self.file).write_all(&b)?;
            }
            self.written = self.pending_len as u64;
            self.pending_len = 0;
        }
        if !self.pending.is_empty() {
            self.write_batch().await?;
        }
        self.wait_inflight().await?;
        if sync {
            let file = self.file.clone();
            tokio::task::spawn_blocking(move || file.sync_all())
                .await
                .map_err(io::Error::other)??;
        }
        Ok(())
    }
}

/// Ask the kernel to start writing `[offset, offset + len)` of `file` back to disk now, without
/// waiting (advisory: a failure only means the final fsync has more to do). `len` 0: to the end.
pub fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain system call on a descriptor `file` keeps open for its duration; it reads
    // no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
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
                        let n = CHUNK.min(to - pos) as usize;
                        let chunk = match read_cached(&file, pos, n)? {
                            Some(chunk) => chunk,
                            None => {
                                let f = file.clone();
                                tokio::task::spawn_blocking(move || read_chunk(&f, pos, n))
                                    .await
                                    .map_err(io::Error::other)??
                            }
                        };
                        let next = pos + chunk.len() as u64;
                        return Ok(Some((chunk, (rest, Some((file, next, to))))));
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

/// Up to `n` bytes at `pos` if the page cache holds them (at least the first page), read on
/// this thread without waiting for the disk (`preadv2` with `RWF_NOWAIT`): a hot chunk costs a
/// copy, not two hand-offs to the blocking pool and back. `None`: not cached (or the kernel
/// cannot tell), so the caller reads it on the blocking pool. The end of the file before `n`
/// bytes is an error: a span never outruns its file.
fn read_cached(file: &File, pos: u64, n: usize) -> io::Result<Option<Bytes>> {
    use std::os::fd::AsRawFd;
    let mut buf = Vec::<u8>::with_capacity(n);
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: n,
    };
    // SAFETY: the one iovec points at `n` bytes of `buf`'s capacity, which nothing else
    // touches during the call; `file` keeps the descriptor open for its duration.
    let got = unsafe {
        libc::preadv2(
            file.as_raw_fd(),
            &iov,
            1,
            pos as libc::off_t,
            libc::RWF_NOWAIT,
        )
    };
    match got {
        0 => Err(short_file()),
        g if g > 0 => {
            // SAFETY: the kernel wrote the first `g` (≤ n) bytes.
            unsafe { buf.set_len(g as usize) };
            Ok(Some(Bytes::from(buf)))
        }
        _ => {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // Not in the page cache, or a file system without RWF_NOWAIT, or interrupted.
                Some(libc::EAGAIN | libc::EOPNOTSUPP | libc::EINVAL | libc::EINTR) => Ok(None),
                _ => Err(e),
            }
        }
    }
}

/// `n` bytes at `pos`, waiting for the disk: for the blocking pool.
fn read_chunk(file: &File, pos: u64, n: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; n];
    file.read_exact_at(&mut buf, pos)
        .map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => short_file(),
            _ => e,
        })?;
    Ok(Bytes::from(buf))
}

fn short_file() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the file ends before its span: it was truncated under the reader",
    )
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
        assert!(read_chunk(&file_with(&[7u8; 10]), 0, 20).is_err());
    }

    #[tokio::test]
    async fn chunks_the_page_cache_lacks_are_read_on_the_blocking_pool() {
        use std::os::fd::AsRawFd;
        let a: Vec<u8> = (0..1_500_000u32).map(|i| (i % 241) as u8).collect();
        let file = file_with(&a);
        file.sync_all().unwrap();
        // Clean pages of an fsynced file: DONTNEED drops them from the page cache.
        // SAFETY: an advisory call on an open descriptor; it touches no memory of ours.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        assert!(
            read_cached(&file, 0, 4096).unwrap().is_none(),
            "evicted, so not read here"
        );
        let s = vec![Span {
            file: file.try_clone().unwrap(),
            from: 3,
            to: a.len() as u64,
        }];
        assert_eq!(collect(stream(s)).await.unwrap(), a[3..]);
        // Read once, the pages are cached: the next read happens on this thread.
        let hot = read_cached(&file, 1000, 9000).unwrap().expect("cached now");
        assert_eq!(&hot[..], &a[1000..10_000]);
    }
}

/// Replace `path` durably with `bytes`, readable by this user only (mode 0600): a temp file
/// beside it, fsync, rename, fsync of the directory. For records that hold secrets (the
/// cluster metadata, with remote buckets' credentials).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
