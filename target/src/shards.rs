//! Reading inside shards next to the data (SPEC §5): one member by name, many by selection as
//! one tar stream, and the member list. A plain tar is served by seeking: its member index is
//! built once per object version (a scan of headers that seeks over the data) and kept in a
//! bounded in-memory cache, so member 999 costs what member 0 costs. Compressed tars stream
//! through the decompression guard; zip uses its central directory.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use aisle_cluster::proto::{self, ArchiveSelection, META_HEADER, ObjectMeta, ObjectQuery};
use aisle_shard::{Flow, Format, Limits, MatchMode, Member, Selector, ShardError, TarOut, Visitor};
use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::Digest;
use tokio::sync::mpsc;

use crate::server::{ApiError, Resp, State, api_err, full_body, stream_body};
use crate::store::{Store, StoredObject};

const INDEX_CACHE: usize = 1024;
const CHUNK: usize = 256 * 1024;

/// Member indexes by (key, version), and their insertion order for eviction.
type IndexCache = (HashMap<String, Arc<Vec<Member>>>, VecDeque<String>);

/// The per-target cache of tar member indexes, and the append locks.
pub(crate) struct Shards {
    index: Mutex<IndexCache>,
    append_locks: [tokio::sync::Mutex<()>; APPEND_STRIPES],
}

impl Default for Shards {
    fn default() -> Self {
        Shards {
            index: Mutex::new(Default::default()),
            append_locks: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        }
    }
}

impl From<ShardError> for ApiError {
    fn from(e: ShardError) -> Self {
        api_err(e.status(), e.code(), e.to_string())
    }
}

/// The object's bytes as one `Read + Seek` over its segment files.
pub(crate) struct SegmentReader {
    files: Vec<(std::fs::File, u64)>,
    pos: u64,
    total: u64,
}

impl SegmentReader {
    pub(crate) fn open(store: &Store, rec: &StoredObject) -> io::Result<SegmentReader> {
        let files = rec
            .segments
            .iter()
            .map(|s| Ok((std::fs::File::open(store.segment_path(s))?, s.size)))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(SegmentReader {
            files,
            pos: 0,
            total: rec.meta.size,
        })
    }
}

impl Read for SegmentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut start = 0u64;
        for (f, size) in &mut self.files {
            if self.pos < start + *size {
                let within = self.pos - start;
                f.seek(SeekFrom::Start(within))?;
                let want = buf.len().min((*size - within) as usize);
                let n = f.read(&mut buf[..want])?;
                self.pos += n as u64;
                return Ok(n);
            }
            start += *size;
        }
        Ok(0)
    }
}

impl Seek for SegmentReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let next = match to {
            SeekFrom::Start(n) => n as i128,
            SeekFrom::End(d) => self.total as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if next < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start",
            ));
        }
        self.pos = next as u64;
        Ok(self.pos)
    }
}

/// Bytes written on a blocking thread, sent to an async body. Once `failed` is set, writes are
/// refused: a tar writer dropped after an error must not send its end-of-archive blocks.
struct ChannelWriter(
    mpsc::Sender<Result<Bytes, io::Error>>,
    Arc<std::sync::atomic::AtomicBool>,
);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.1.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::BrokenPipe, "the read failed"));
        }
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn format_of(state: &State, rec: &StoredObject, key: &str) -> Result<Format, ApiError> {
    if let Some(f) = Format::from_name(key) {
        return Ok(f);
    }
    let mut head = vec![0u8; 512];
    let mut r = SegmentReader::open(&state.store, rec)
        .map_err(|e| api_err(500, "InternalError", e.to_string()))?;
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(api_err(500, "InternalError", e.to_string())),
        }
    }
    Format::from_magic(&head[..n]).ok_or_else(|| ShardError::UnknownFormat.into())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| api_err(500, "InternalError", format!("task failed: {e}")))?
}

/// The members of a shard (cached for plain tars).
pub(crate) async fn members(
    state: &Arc<State>,
    rec: &StoredObject,
    key: &str,
) -> Result<(Format, Arc<Vec<Member>>), ApiError> {
    let (st, r2, k2) = (state.clone(), rec.clone(), key.to_string());
    let format = blocking(move || format_of(&st, &r2, &k2)).await?;
    Ok((format, members_of(state, rec, key, format).await?))
}

/// The members of a shard of a known format (cached for plain tars).
async fn members_of(
    state: &Arc<State>,
    rec: &StoredObject,
    key: &str,
    format: Format,
) -> Result<Arc<Vec<Member>>, ApiError> {
    let cache_key = format!("{}\0{}\0{}", key, rec.meta.etag, rec.meta.mtime_ms);
    if format == Format::Tar
        && let Some(hit) = state
            .shards
            .index
            .lock()
            .expect("shard lock")
            .0
            .get(&cache_key)
    {
        return Ok(hit.clone());
    }
    let (st, r2) = (state.clone(), rec.clone());
    let list = blocking(move || {
        let r = SegmentReader::open(&st.store, &r2)
            .map_err(|e| api_err(500, "InternalError", e.to_string()))?;
        Ok(aisle_shard::list(format, r, r2.meta.size)?)
    })
    .await?;
    let list = Arc::new(list);
    if format == Format::Tar {
        let mut c = state.shards.index.lock().expect("shard lock");
        if c.0.insert(cache_key.clone(), list.clone()).is_none() {
            c.1.push_back(cache_key);
        }
        while c.1.len() > INDEX_CACHE {
            if let Some(old) = c.1.pop_front() {
                c.0.remove(&old);
            }
        }
    }
    Ok(list)
}

fn member_meta(rec: &StoredObject, name: &str, size: u64, content_type: &str) -> ObjectMeta {
    let tag = hex::encode(sha2::Sha256::digest(format!("{}\0{}", rec.meta.etag, name)));
    ObjectMeta {
        version_id: None,
        delete_marker: false,
        size,
        etag: format!("{}-member", &tag[..32]),
        mtime_ms: rec.meta.mtime_ms,
        attrs: proto::ObjectAttrs {
            content_type: Some(content_type.to_string()),
            ..Default::default()
        },
        checksums: Default::default(),
        parts: Vec::new(),
        version: rec.meta.version,
        remote: None,
        upload_id: None,
    }
}

/// Finds one member by name and sends its bytes.
struct One {
    name: String,
    found: Option<tokio::sync::oneshot::Sender<u64>>,
    out: Option<mpsc::Sender<Result<Bytes, io::Error>>>,
}

impl Visitor for One {
    fn wants(&mut self, m: &Member) -> bool {
        m.name == self.name
    }
    fn data(&mut self, m: &Member, r: &mut dyn Read) -> Result<Flow, ShardError> {
        if let Some(f) = self.found.take() {
            let _ = f.send(m.size);
        }
        if let Some(tx) = self.out.take() {
            let mut w = io::BufWriter::with_capacity(CHUNK, ChannelWriter(tx, Default::default()));
            io::copy(r, &mut w)?;
            w.flush()?;
        }
        Ok(Flow::Stop)
    }
}

/// Writes every selected member into a tar stream.
struct Many<W: Write> {
    sel: Selector,
    out: TarOut<W>,
}

impl<W: Write> Visitor for Many<W> {
    fn wants(&mut self, m: &Member) -> bool {
        self.sel.matches(&m.name)
    }
    fn data(&mut self, m: &Member, r: &mut dyn Read) -> Result<Flow, ShardError> {
        self.out.append(&m.name, m.size, r)?;
        Ok(Flow::Continue)
    }
}

fn channel_body(
    rx: mpsc::Receiver<Result<Bytes, io::Error>>,
    first: Option<Bytes>,
) -> crate::server::RespBody {
    let rest = tokio_stream_from(rx);
    let frames = futures::stream::iter(first.map(Ok)).chain(rest).map(|r| {
        r.map(Frame::data)
            .map_err(|e| Box::new(e) as aisle_cluster::client::BoxError)
    });
    BodyExt::boxed_unsync(StreamBody::new(frames))
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, io::Error>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// GET/HEAD inside a shard.
pub(crate) async fn read(
    state: &Arc<State>,
    rec: StoredObject,
    q: &ObjectQuery,
    sel: &ArchiveSelection,
    with_body: bool,
) -> Result<Resp, ApiError> {
    match sel {
        ArchiveSelection::Path(name) => {
            let content_type = mime_guess::from_path(name)
                .first_or_octet_stream()
                .to_string();
            let (st, r2, k2) = (state.clone(), rec.clone(), q.key.clone());
            let format = blocking(move || format_of(&st, &r2, &k2)).await?;
            if format == Format::Tar {
                let list = members_of(state, &rec, &q.key, format).await?;
                let m = list
                    .iter()
                    .find(|m| &m.name == name)
                    .ok_or_else(|| ApiError::from(ShardError::NoSuchMember(name.clone())))?;
                let meta = member_meta(&rec, name, m.size, &content_type);
                let body = if with_body && m.size > 0 {
                    let files = state.store.segment_files(&rec.segments);
                    stream_body(crate::files::open_span(&files, m.offset, m.offset + m.size).await?)
                } else {
                    full_body(Bytes::new())
                };
                return Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header(META_HEADER, proto::encode_header(&meta))
                    .header(header::CONTENT_LENGTH, m.size)
                    .body(body)
                    .expect("valid response"));
            }
            let (found_tx, found_rx) = tokio::sync::oneshot::channel();
            let (tx, rx) = mpsc::channel(8);
            let (st, r2, name2) = (state.clone(), rec.clone(), name.clone());
            let task = tokio::task::spawn_blocking(move || -> Result<(), ShardError> {
                let r = SegmentReader::open(&st.store, &r2)?;
                let mut v = One {
                    name: name2.clone(),
                    found: Some(found_tx),
                    out: with_body.then_some(tx.clone()),
                };
                let res = aisle_shard::visit(format, r, r2.meta.size, &Limits::default(), &mut v);
                if let Err(e) = &res {
                    let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                }
                res
            });
            let size = match found_rx.await {
                Ok(size) => size,
                Err(_) => {
                    // The walk ended without the member: say why.
                    return Err(match task.await {
                        Ok(Err(e)) => e.into(),
                        Ok(Ok(())) => ShardError::NoSuchMember(name.clone()).into(),
                        Err(e) => api_err(500, "InternalError", e.to_string()),
                    });
                }
            };
            let meta = member_meta(&rec, name, size, &content_type);
            let body = if with_body {
                channel_body(rx, None)
            } else {
                full_body(Bytes::new())
            };
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(META_HEADER, proto::encode_header(&meta))
                .header(header::CONTENT_LENGTH, size)
                .body(body)
                .expect("valid response"))
        }
        ArchiveSelection::Regex { expr, mode } => {
            let selector = Selector::new(expr, MatchMode::parse(mode.as_deref())?)?;
            let (st, r2, k2) = (state.clone(), rec.clone(), q.key.clone());
            let format = blocking(move || format_of(&st, &r2, &k2)).await?;
            let mut meta = member_meta(
                &rec,
                &format!("regx:{expr}:{mode:?}"),
                0,
                "application/x-tar",
            );
            meta.size = 0;
            let head = Response::builder()
                .status(StatusCode::OK)
                .header(META_HEADER, proto::encode_header(&meta));
            if !with_body {
                return Ok(head.body(full_body(Bytes::new())).expect("valid response"));
            }
            let (tx, mut rx) = mpsc::channel(8);
            let st = state.clone();
            tokio::task::spawn_blocking(move || {
                let failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let w =
                    io::BufWriter::with_capacity(CHUNK, ChannelWriter(tx.clone(), failed.clone()));
                let mut v = Many {
                    sel: selector,
                    out: TarOut::new(w),
                };
                let walked = SegmentReader::open(&st.store, &rec)
                    .map_err(ShardError::from)
                    .and_then(|r| {
                        aisle_shard::visit(format, r, rec.meta.size, &Limits::default(), &mut v)
                    });
                let done = match walked {
                    Ok(()) => v
                        .out
                        .finish()
                        .and_then(|mut w| w.flush().map_err(ShardError::from)),
                    Err(e) => {
                        // Refuse the end-of-archive blocks the writer sends when dropped.
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        drop(v);
                        Err(e)
                    }
                };
                if let Err(e) = done {
                    failed.store(true, std::sync::atomic::Ordering::Relaxed);
                    let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
                }
            });
            // A failure before the first byte is a clean error response; later ones cut the body.
            let first = match rx.recv().await {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => return Err(api_err(400, "CorruptArchive", e.to_string())),
                None => None,
            };
            Ok(head.body(channel_body(rx, first)).expect("valid response"))
        }
    }
}

/// Appends to one shard at a time per key stripe; readers are never blocked (they keep the
/// version they opened).
const APPEND_STRIPES: usize = 64;

fn stripe(bucket: &str, key: &str) -> usize {
    (aisle_cluster::placement::object_name_hash(bucket, key) % APPEND_STRIPES as u64) as usize
}

/// `PUT ?archpath=NAME&append=true`: add a member to a tar shard without rewriting it. The new
/// version is the old one up to the end of its last member, plus a new file holding the member
/// (header, data, padding) and the end-of-archive blocks — published atomically; concurrent
/// readers see the old version or the new one, both valid tars. A missing shard is created.
pub(crate) async fn append(
    state: &Arc<State>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Resp, ApiError> {
    use crate::server::{blocking as store_blocking, json_resp, query, receive_framed};
    let q: proto::AppendQuery = query(&req)?;
    let opts: proto::WriteOptions = crate::server::header_json(req.headers(), proto::WRITE_HEADER)?;
    let header = aisle_shard::member_header(&q.archpath, q.size)?;
    let _guard = state.shards.append_locks[stripe(&q.bucket, &q.key)]
        .lock()
        .await;
    let store = state.store.clone();
    let (b, k) = (q.bucket.clone(), q.key.clone());
    let current = match store_blocking(move || store.get(&b, &k)).await {
        Ok(rec) => Some(rec),
        Err(e) if e.code == "NoSuchKey" => None,
        Err(e) => return Err(e),
    };
    // Where the current archive's members end: after the last member's padded data.
    let (end, kept) = match &current {
        None => (0, Vec::new()),
        Some(rec) => {
            let (format, list) = members(state, rec, &q.key).await?;
            if format != Format::Tar {
                drop(list);
                return rewrite_append(state, req, q, opts, rec.clone(), format).await;
            }
            if list.iter().any(|m| m.name == q.archpath) {
                return Err(api_err(
                    409,
                    "Conflict",
                    format!("the shard already has a member {:?}", q.archpath),
                ));
            }
            let end = list
                .last()
                .map(|m| m.offset + m.size + aisle_shard::padding(m.size) as u64)
                .unwrap_or(0);
            let mut kept = Vec::new();
            let mut at = 0u64;
            for seg in &rec.segments {
                if at >= end {
                    break;
                }
                let take = seg.size.min(end - at);
                kept.push(crate::store::Segment {
                    size: take,
                    ..seg.clone()
                });
                at += take;
            }
            (end, kept)
        }
    };
    let mp = state.store.mountpath_for(&q.bucket, &q.key);
    let size = q.size;
    let (temp, commit) = receive_framed(
        state,
        mp,
        req.into_body(),
        &header,
        move |n| {
            let mut tail = vec![0u8; aisle_shard::padding(n)];
            tail.extend_from_slice(&aisle_shard::END_OF_ARCHIVE);
            tail
        },
        &mut |_| {},
    )
    .await?;
    if commit.size != size {
        return Err(api_err(
            400,
            "IncompleteBody",
            format!("declared {size} bytes, received {}", commit.size),
        ));
    }
    let new_len = header.len() as u64
        + size
        + aisle_shard::padding(size) as u64
        + aisle_shard::END_OF_ARCHIVE.len() as u64;
    let old_etag = current.as_ref().map(|r| r.meta.etag.clone());
    let etag_seed = format!(
        "{}:{}:{}",
        old_etag.as_deref().unwrap_or(""),
        q.archpath,
        commit.md5
    );
    let tag = hex::encode(sha2::Sha256::digest(etag_seed));
    let meta = ObjectMeta {
        version_id: None,
        delete_marker: false,
        size: end + new_len,
        etag: format!("{}-{}", &tag[..32], kept_count(&current) + 1),
        mtime_ms: crate::store::now_ms(),
        attrs: current
            .as_ref()
            .map(|r| r.meta.attrs.clone())
            .unwrap_or_else(|| proto::ObjectAttrs {
                content_type: Some("application/x-tar".into()),
                ..Default::default()
            }),
        checksums: Default::default(),
        parts: Vec::new(),
        version: opts.version,
        remote: None,
        upload_id: None,
    };
    let store = state.store.clone();
    let (b, k) = (q.bucket.clone(), q.key.clone());
    let meta =
        store_blocking(move || store.publish_append(&b, &k, old_etag.as_deref(), kept, temp, meta))
            .await?;
    crate::replica::make_copies(state, &q.bucket, &q.key, &opts).await?;
    Ok(json_resp(StatusCode::OK, &meta))
}

fn kept_count(current: &Option<StoredObject>) -> usize {
    current.as_ref().map(|r| r.segments.len()).unwrap_or(0)
}

/// Hashes what passes through to a file.
struct Hashing<W: Write> {
    inner: W,
    md5: md5::Md5,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        md5::Digest::update(&mut self.md5, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Append to a compressed tar or a zip: these cannot grow in place, so the shard is rewritten
/// — every member copied (zip entries without recompression), the new one added — into a new
/// file published atomically in place of the old version (documented in docs/shards.md).
async fn rewrite_append(
    state: &Arc<State>,
    req: http::Request<hyper::body::Incoming>,
    q: proto::AppendQuery,
    opts: proto::WriteOptions,
    rec: StoredObject,
    format: Format,
) -> Result<Resp, ApiError> {
    use crate::server::{blocking as store_blocking, json_resp, receive_body};
    let mp = state.store.mountpath_for(&q.bucket, &q.key);
    let (member, commit) = receive_body(state, mp, req.into_body()).await?;
    if commit.size != q.size {
        return Err(api_err(
            400,
            "IncompleteBody",
            format!("declared {} bytes, received {}", q.size, commit.size),
        ));
    }
    let mut out = state.store.create_temp(mp).await?;
    let (st, r2, name) = (state.clone(), rec.clone(), q.archpath.clone());
    let out_path = out.path().to_path_buf();
    let member_path = member.path().to_path_buf();
    let (size, md5) = blocking(move || -> Result<(u64, String), ApiError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&out_path)
            .map_err(|e| api_err(500, "InternalError", e.to_string()))?;
        let mut w = Hashing {
            inner: io::BufWriter::new(file),
            md5: <md5::Md5 as md5::Digest>::new(),
            len: 0,
        };
        let mut src = SegmentReader::open(&st.store, &r2)
            .map_err(|e| api_err(500, "InternalError", e.to_string()))?;
        let mut new_member = std::fs::File::open(&member_path)
            .map_err(|e| api_err(500, "InternalError", e.to_string()))?;
        let total = r2.meta.size;
        match format {
            Format::Zip => {
                let mut old = zip::ZipArchive::new(&mut src)
                    .map_err(|e| ShardError::Corrupt(e.to_string()))?;
                let mut zw = zip::ZipWriter::new_stream(&mut w);
                for i in 0..old.len() {
                    let f = old
                        .by_index_raw(i)
                        .map_err(|e| ShardError::Corrupt(e.to_string()))?;
                    if f.name().map(|n| n == name).unwrap_or(false) {
                        return Err(api_err(
                            409,
                            "Conflict",
                            format!("the shard already has a member {name:?}"),
                        ));
                    }
                    zw.raw_copy_file(f)
                        .map_err(|e| ShardError::Corrupt(e.to_string()))?;
                }
                zw.start_file(name.as_str(), zip::write::SimpleFileOptions::default())
                    .map_err(|e| api_err(500, "InternalError", e.to_string()))?;
                io::copy(&mut new_member, &mut zw).map_err(ShardError::from)?;
                zw.finish()
                    .map_err(|e| api_err(500, "InternalError", e.to_string()))?;
            }
            Format::TarGz | Format::TarLz4 => {
                let enc: Box<dyn Write> = match format {
                    Format::TarGz => Box::new(flate2::write::GzEncoder::new(
                        &mut w,
                        flate2::Compression::default(),
                    )),
                    _ => Box::new(lz4_flex::frame::FrameEncoder::new(&mut w).auto_finish()),
                };
                struct Copy<W: Write> {
                    out: TarOut<W>,
                    name: String,
                    clash: bool,
                }
                impl<W: Write> Visitor for Copy<W> {
                    fn wants(&mut self, m: &Member) -> bool {
                        self.clash |= m.name == self.name;
                        true
                    }
                    fn data(&mut self, m: &Member, r: &mut dyn Read) -> Result<Flow, ShardError> {
                        self.out.append(&m.name, m.size, r)?;
                        Ok(Flow::Continue)
                    }
                }
                let mut v = Copy {
                    out: TarOut::new(enc),
                    name: name.clone(),
                    clash: false,
                };
                aisle_shard::visit(format, &mut src, total, &Limits::default(), &mut v)?;
                if v.clash {
                    return Err(api_err(
                        409,
                        "Conflict",
                        format!("the shard already has a member {name:?}"),
                    ));
                }
                v.out.append(&name, q.size, &mut new_member)?;
                let mut enc = v.out.finish()?;
                enc.flush().map_err(ShardError::from)?;
                drop(enc);
            }
            Format::Tar => unreachable!("plain tars are appended in place"),
        }
        w.flush().map_err(ShardError::from)?;
        let len = w.len;
        let md5 = hex::encode(<md5::Md5 as md5::Digest>::finalize(w.md5));
        w.inner
            .into_inner()
            .map_err(|e| api_err(500, "InternalError", e.to_string()))?
            .sync_all()
            .map_err(|e| api_err(500, "InternalError", e.to_string()))?;
        Ok((len, md5))
    })
    .await?;
    drop(member);
    out.finish().await?;
    let meta = ObjectMeta {
        version_id: None,
        delete_marker: false,
        size,
        etag: md5,
        mtime_ms: crate::store::now_ms(),
        attrs: rec.meta.attrs.clone(),
        checksums: Default::default(),
        parts: Vec::new(),
        version: opts.version,
        remote: None,
        upload_id: None,
    };
    let store = state.store.clone();
    let (b, k, old) = (q.bucket.clone(), q.key.clone(), rec.meta.etag.clone());
    let meta =
        store_blocking(move || store.publish_append(&b, &k, Some(&old), Vec::new(), out, meta))
            .await?;
    crate::replica::make_copies(state, &q.bucket, &q.key, &opts).await?;
    Ok(json_resp(StatusCode::OK, &meta))
}
