//! Remote buckets on the target: the cache in front of another store.
//!
//! * **Lookup** ([`lookup`]): every read resolves its record here. For a remote bucket, a
//!   cached copy is checked against the bucket's coherence mode (`never`, `ttl`, `validate`);
//!   a miss on the object's fetching target (the first live target in its read order) fetches
//!   it from the remote.
//! * **Fetch**: one per object at a time (concurrent cold reads join it). The fetch streams
//!   the remote's body into a staged file on the object's mountpath; readers follow the file
//!   as it grows, so the first reader does not wait for the whole object. Complete and
//!   fsynced, the file is published with the remote's ETag, version and time; a fetch that
//!   fails midway publishes nothing and aborts the readers' responses.
//! * **Write-through** ([`write_through`]): a client's PUT or multipart upload goes to the
//!   remote first; the local copy is published only once the remote acknowledged it.
//! * **Eviction**: on demand ([`answer`], `op=evict`), when the remote's object changed or
//!   went away, and by capacity: the least recently read cached objects of a mountpath are
//!   dropped when its cache exceeds its budget or its disk fills. Local buckets are never
//!   evicted.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use aisle_cluster::client::BoxError;
use aisle_cluster::map::{Coherence, RemoteSpec};
use aisle_cluster::proto::{
    self, CacheQuery, CacheState, Have, ObjectMeta, ObjectQuery, ReadOptions, RemoteReport,
    RemoteStamp,
};
use aisle_remote::{Remote, RemoteError, RemoteObject};
use bytes::Bytes;
use futures::StreamExt;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use md5::{Digest, Md5};

use crate::server::{
    ApiError, ReadAnswer, Resp, RespBody, State, api_err, blocking, condition_failed, full_body,
    json_resp, query, range_of, span_head,
};
use crate::store::{StoreError, StoredObject};

/// Bytes a follower reads from the growing file at once.
const FOLLOW_CHUNK: u64 = 256 * 1024;
/// Eviction for a budget stops at this share of it.
const EVICT_TO_BUDGET: f64 = 0.90;
/// Eviction for a full disk stops this many points (a share of the disk) below the mark.
const EVICT_MARGIN: f64 = 0.05;

/// The target's remote-bucket state.
pub(crate) struct Cold {
    remotes: aisle_remote::Remotes,
    fetches: Mutex<HashMap<(String, String), Arc<Fetch>>>,
    /// Cached objects of remote buckets: for LRU eviction and per-bucket figures.
    cached: Mutex<HashMap<(String, String), Entry>>,
    health: Mutex<BTreeMap<String, RemoteReport>>,
    /// Budget of cached bytes per mountpath (none: only the disk's fill).
    capacity: Option<u64>,
    /// Share of a mountpath's disk used above which cached objects make room (1.0: never).
    disk_full: f64,
    metrics: RemoteMetrics,
}

/// The target's remote-bucket metric families ([`crate::metrics::TargetMetrics`]).
type BucketCounter = prometheus_client::metrics::family::Family<
    crate::metrics::Bucket,
    prometheus_client::metrics::counter::Counter,
>;
struct RemoteMetrics {
    fetches: BucketCounter,
    bytes: BucketCounter,
    errors: BucketCounter,
    evictions: BucketCounter,
}

impl RemoteMetrics {
    fn inc(c: &BucketCounter, bucket: &str, n: u64) {
        c.get_or_create(&crate::metrics::Bucket {
            bucket: bucket.to_string(),
        })
        .inc_by(n);
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    mp: u16,
    size: u64,
    /// Last read (or fetch), Unix milliseconds.
    access_ms: i64,
    /// Last time the remote confirmed the copy.
    checked_ms: i64,
}

/// One fetch in progress; readers follow it.
struct Fetch {
    progress: tokio::sync::watch::Sender<Progress>,
}

#[derive(Clone, Default)]
struct Progress {
    /// What the remote said, and a read descriptor of the staged file.
    head: Option<Arc<Head>>,
    /// Bytes in the staged file.
    written: u64,
    /// The outcome, for every reader of it.
    done: Option<Result<(), ApiError>>,
}

struct Head {
    meta: ObjectMeta,
    file: Arc<std::fs::File>,
}

fn remote_err(e: RemoteError) -> ApiError {
    let (status, code) = e.s3_code();
    api_err(status, code, e.to_string())
}

/// What a read resolved to.
// Unboxed: `Local` is every plain GET's path, which should not pay an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Lookup {
    /// The local record (of a local bucket, or a fresh cached copy).
    Local(StoredObject),
    /// Answered already (a cold read streaming from its fetch, a declined read).
    Answer(ReadAnswer),
}

impl Cold {
    pub(crate) fn new(
        capacity: Option<u64>,
        disk_full: f64,
        m: &crate::metrics::TargetMetrics,
    ) -> Cold {
        Cold {
            remotes: Default::default(),
            fetches: Default::default(),
            cached: Default::default(),
            health: Default::default(),
            capacity,
            disk_full,
            metrics: RemoteMetrics {
                fetches: m.remote_fetches.clone(),
                bytes: m.remote_fetched_bytes.clone(),
                errors: m.remote_errors.clone(),
                evictions: m.remote_evictions.clone(),
            },
        }
    }

    /// Remember the cached objects of remote buckets the index holds (at start).
    pub(crate) fn load(&self, state: &State) -> Result<(), StoreError> {
        let remote_buckets: Vec<String> = {
            let meta = state.meta.read().expect("meta lock");
            meta.buckets
                .iter()
                .filter(|(_, b)| b.remote.is_some())
                .map(|(n, _)| n.clone())
                .collect()
        };
        if remote_buckets.is_empty() {
            return Ok(());
        }
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = state
                .store
                .walk(crate::store::Walked::Objects, after.as_deref(), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.raw.clone());
            for e in page {
                if !remote_buckets.contains(&e.bucket) {
                    continue;
                }
                if let Ok(rec) = state.store.get(&e.bucket, &e.key)
                    && rec.meta.remote.is_some()
                {
                    let mp = rec.segments.first().map(|s| s.mp).unwrap_or(0);
                    self.cached_meta(&e.bucket, &e.key, &rec.meta, mp);
                }
            }
        }
        Ok(())
    }

    fn remote(&self, bucket: &str, spec: &RemoteSpec) -> Result<Remote, ApiError> {
        self.remotes.get(bucket, spec).map_err(remote_err)
    }

    /// Note the outcome of a remote call for `aisle cluster show`.
    fn note<T>(&self, bucket: &str, r: &Result<T, RemoteError>) {
        let mut h = self.health.lock().expect("health lock");
        let rep = h.entry(bucket.to_string()).or_insert_with(|| RemoteReport {
            bucket: bucket.to_string(),
            ..Default::default()
        });
        match r {
            Ok(_) | Err(RemoteError::NotFound { .. }) | Err(RemoteError::BadKey { .. }) => {
                rep.unavailable = false;
                rep.failing_since_ms = None;
            }
            Err(e) => {
                RemoteMetrics::inc(&self.metrics.errors, bucket, 1);
                rep.unavailable = e.is_unavailable();
                rep.last_error = Some(e.to_string());
                rep.failing_since_ms
                    .get_or_insert_with(aisle_cluster::now_ms);
            }
        }
    }

    fn cached_meta(&self, bucket: &str, key: &str, meta: &ObjectMeta, mp: u16) {
        let now = aisle_cluster::now_ms();
        self.cached.lock().expect("cache lock").insert(
            (bucket.to_string(), key.to_string()),
            Entry {
                mp,
                size: meta.size,
                access_ms: now,
                checked_ms: meta.remote.as_ref().map(|r| r.checked_ms).unwrap_or(now),
            },
        );
    }

    /// The cached copy of `(bucket, key)` is gone (deleted, moved away, evicted).
    pub(crate) fn forget(&self, bucket: &str, key: &str) {
        self.cached
            .lock()
            .expect("cache lock")
            .remove(&(bucket.to_string(), key.to_string()));
    }

    /// Per-bucket figures for the target's status.
    pub(crate) fn report(&self, state: &State) -> Vec<RemoteReport> {
        let meta = state.meta.read().expect("meta lock").clone();
        let mut h = self.health.lock().expect("health lock");
        h.retain(|b, _| meta.buckets.get(b).is_some_and(|p| p.remote.is_some()));
        for (name, props) in &meta.buckets {
            if props.remote.is_some() {
                h.entry(name.clone()).or_insert_with(|| RemoteReport {
                    bucket: name.clone(),
                    ..Default::default()
                });
            }
        }
        let counted = |c: &BucketCounter, bucket: &str| {
            c.get_or_create(&crate::metrics::Bucket {
                bucket: bucket.to_string(),
            })
            .get()
        };
        for r in h.values_mut() {
            r.cached_objects = 0;
            r.cached_bytes = 0;
            r.fetches = counted(&self.metrics.fetches, &r.bucket);
            r.evictions = counted(&self.metrics.evictions, &r.bucket);
        }
        for ((b, _), e) in self.cached.lock().expect("cache lock").iter() {
            if let Some(r) = h.get_mut(b) {
                r.cached_objects += 1;
                r.cached_bytes += e.size;
            }
        }
        h.values().cloned().collect()
    }
}

/// The spec of `bucket` if it is a remote bucket.
pub(crate) fn spec_of(state: &State, bucket: &str) -> Option<RemoteSpec> {
    state
        .meta
        .read()
        .expect("meta lock")
        .buckets
        .get(bucket)
        .and_then(|b| b.remote.clone())
}

/// Resolve the record a read of `q` works on (see the module doc).
/// The version `id` of `q`'s key (versions exist in local buckets only). A delete marker is
/// not an object: 405, as S3 answers.
fn version(state: &State, q: &ObjectQuery, id: &str) -> Result<StoredObject, ApiError> {
    let which = crate::server::version_ref(id)?;
    let rec = state.store.get_version(&q.bucket, &q.key, &which)?;
    if rec.meta.delete_marker {
        return Err(crate::server::api_err(
            405,
            "MethodNotAllowed",
            "the specified method is not allowed against a delete marker",
        )
        .about_marker(&rec.meta));
    }
    Ok(rec)
}

pub(crate) async fn lookup(
    state: &Arc<State>,
    q: &ObjectQuery,
    opts: &ReadOptions,
    with_body: bool,
    may_stream: bool,
) -> Result<Lookup, ApiError> {
    // A remote bucket's objects are all the `null` version (its remote keeps any others).
    if let Some(id) = &q.version_id
        && (id != aisle_cluster::versioning::NULL_VERSION || spec_of(state, &q.bucket).is_none())
    {
        return version(state, q, id).map(Lookup::Local);
    }
    let local = state.store.get(&q.bucket, &q.key);
    let Some(spec) = spec_of(state, &q.bucket) else {
        return match local {
            Ok(rec) => Ok(Lookup::Local(rec)),
            Err(StoreError::NoSuchKey) => Err(crate::server::missing(state, q)),
            Err(e) => Err(e.into()),
        };
    };
    match local {
        Ok(rec) => {
            if fresh(state, &spec, q, &rec).await? {
                touch(state, &q.bucket, &q.key);
                return Ok(Lookup::Local(rec));
            }
        }
        Err(StoreError::NoSuchKey) => {}
        Err(e) => return Err(e.into()),
    }
    if !fetches_here(state, &q.bucket, &q.key) {
        return Err(StoreError::NoSuchKey.into());
    }
    if !may_stream {
        // The caller (a same-host descriptor read) cannot follow a fetch: it asks over HTTP.
        return Ok(Lookup::Answer(ReadAnswer::Declined));
    }
    let whole = opts.etl.is_some() || opts.archive.is_some() || q.part.is_some();
    let fetch = start(state, &spec, &q.bucket, &q.key)?;
    if whole {
        // Transforms, shard reads and parts work on the published object.
        wait_done(&fetch).await?;
        return match state.store.get(&q.bucket, &q.key) {
            Ok(rec) => Ok(Lookup::Local(rec)),
            Err(e) => Err(e.into()),
        };
    }
    let head = wait_head(&fetch).await?;
    if let Some(r) = condition_failed(opts, &head.meta) {
        return Ok(Lookup::Answer(ReadAnswer::Response(r)));
    }
    let size = head.meta.size;
    let (start, end, partial) = range_of(opts, size, false)?;
    let body = if with_body && end > start {
        follow(fetch, head.file.clone(), start, end)
    } else {
        full_body(Bytes::new())
    };
    let (parts, ()) = span_head(&head.meta, start, end, size, partial)
        .body(())
        .expect("valid response")
        .into_parts();
    Ok(Lookup::Answer(ReadAnswer::Response(
        http::Response::from_parts(parts, body),
    )))
}

/// This target fetches `(bucket, key)` on a miss: it is the first live target in the
/// object's read order (the others answer a miss, and the gateway asks on).
fn fetches_here(state: &State, bucket: &str, key: &str) -> bool {
    let meta = state.meta.read().expect("meta lock").clone();
    meta.read_order(bucket, key)
        .first()
        .is_some_and(|t| t.id == state.id)
}

fn touch(state: &State, bucket: &str, key: &str) {
    if let Some(e) = state
        .cold
        .cached
        .lock()
        .expect("cache lock")
        .get_mut(&(bucket.to_string(), key.to_string()))
    {
        e.access_ms = aisle_cluster::now_ms();
    }
}

/// Whether the cached `rec` may be served under the bucket's coherence mode; a copy the
/// remote changed or deleted is dropped first (and a deleted one is a miss).
async fn fresh(
    state: &Arc<State>,
    spec: &RemoteSpec,
    q: &ObjectQuery,
    rec: &StoredObject,
) -> Result<bool, ApiError> {
    let Some(stamp) = &rec.meta.remote else {
        return Ok(true);
    };
    if spec.coherence == Coherence::Never {
        return Ok(true);
    }
    let now = aisle_cluster::now_ms();
    let checked = state
        .cold
        .cached
        .lock()
        .expect("cache lock")
        .get(&(q.bucket.clone(), q.key.clone()))
        .map(|e| e.checked_ms)
        .unwrap_or(stamp.checked_ms);
    if let Coherence::Ttl(secs) = spec.coherence
        && now - checked < secs as i64 * 1000
    {
        return Ok(true);
    }
    let remote = state.cold.remote(&q.bucket, spec)?;
    let r = remote.head(&q.key).await;
    state.cold.note(&q.bucket, &r);
    match r {
        Ok(h) if same(&h, stamp) => {
            if let Some(e) = state
                .cold
                .cached
                .lock()
                .expect("cache lock")
                .get_mut(&(q.bucket.clone(), q.key.clone()))
            {
                e.checked_ms = now;
            }
            Ok(true)
        }
        Ok(_) => {
            tracing::info!(bucket = %q.bucket, key = %q.key, "the remote object changed: refetching");
            drop_copy(state, &q.bucket, &q.key, rec).await?;
            Ok(false)
        }
        Err(RemoteError::NotFound { .. }) => {
            drop_copy(state, &q.bucket, &q.key, rec).await?;
            Err(StoreError::NoSuchKey.into())
        }
        Err(e) if e.is_unavailable() && matches!(spec.coherence, Coherence::Ttl(_)) => {
            tracing::warn!(bucket = %q.bucket, key = %q.key, error = %e, "remote unavailable: serving the cached copy");
            Ok(true)
        }
        Err(e) => Err(remote_err(e)),
    }
}

fn same(h: &RemoteObject, stamp: &RemoteStamp) -> bool {
    h.etag == stamp.etag && (h.version.is_none() || h.version == stamp.version)
}

/// Remove the cached copy `rec` (if it is still that version).
async fn drop_copy(
    state: &Arc<State>,
    bucket: &str,
    key: &str,
    rec: &StoredObject,
) -> Result<bool, ApiError> {
    let have = Have {
        version: rec.meta.stamp(),
        deleted: false,
    };
    let (s, b, k) = (state.store.clone(), bucket.to_string(), key.to_string());
    let removed = blocking(move || s.remove_if(&b, &k, have)).await?;
    if removed {
        state.cold.forget(bucket, key);
        RemoteMetrics::inc(&state.cold.metrics.evictions, bucket, 1);
    }
    Ok(removed)
}

/// The fetch of `(bucket, key)`: the running one, or a new one.
fn start(
    state: &Arc<State>,
    spec: &RemoteSpec,
    bucket: &str,
    key: &str,
) -> Result<Arc<Fetch>, ApiError> {
    let remote = state.cold.remote(bucket, spec)?;
    let mut fetches = state.cold.fetches.lock().expect("fetch lock");
    let id = (bucket.to_string(), key.to_string());
    if let Some(f) = fetches.get(&id) {
        return Ok(f.clone());
    }
    let fetch = Arc::new(Fetch {
        progress: tokio::sync::watch::Sender::new(Progress::default()),
    });
    fetches.insert(id.clone(), fetch.clone());
    let (state, f) = (state.clone(), fetch.clone());
    tokio::spawn(async move {
        // Readers wait on this fetch: it ends for them even if the task panics.
        let mut ended = FetchEnded {
            state,
            id,
            fetch: f,
            result: None,
        };
        let e = &ended;
        let r = run_fetch(&e.state, &remote, &e.id.0, &e.id.1, &e.fetch).await;
        if let Err(e) = &r {
            let (bucket, key) = &ended.id;
            tracing::warn!(%bucket, %key, error = %e.message, "cold fetch failed");
        }
        ended.result = Some(r);
    });
    Ok(fetch)
}

/// Ends a fetch when its task does, however it does: the fetch leaves the table of running
/// fetches and its readers get the result — an error if the task panicked or was dropped, so a
/// reader never waits for a fetch nobody runs.
struct FetchEnded {
    state: Arc<State>,
    id: (String, String),
    fetch: Arc<Fetch>,
    result: Option<Result<(), ApiError>>,
}

impl Drop for FetchEnded {
    fn drop(&mut self) {
        let r = self.result.take().unwrap_or_else(|| {
            tracing::error!(bucket = %self.id.0, key = %self.id.1, "a cold fetch ended without a result");
            Err(api_err(500, "InternalError", "the fetch from the remote failed unexpectedly"))
        });
        if let Ok(mut fetches) = self.state.cold.fetches.lock() {
            fetches.remove(&self.id);
        }
        self.fetch.progress.send_modify(|p| p.done = Some(r));
    }
}

/// Fetch, stage, fsync and publish one object; readers follow `fetch`'s progress.
async fn run_fetch(
    state: &Arc<State>,
    remote: &Remote,
    bucket: &str,
    key: &str,
    fetch: &Fetch,
) -> Result<(), ApiError> {
    let r = remote.get(key).await;
    state.cold.note(bucket, &r);
    let (obj, mut body) = r.map_err(remote_err)?;
    let mp = state.store.mountpath_for(bucket, key);
    make_room(state, mp, obj.size).await;
    let mut temp = state.store.create_temp(mp).await?;
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| ApiError::from(StoreError::io(what)(e))
    };
    let writer = temp
        .file()
        .expect("a new staged file is open")
        .try_clone()
        .map_err(io("cloning a staged file"))?;
    let reader = std::fs::File::open(temp.path()).map_err(io("opening a staged file"))?;
    let now = aisle_cluster::now_ms();
    let mut meta = ObjectMeta {
        version_id: None,
        delete_marker: false,
        size: obj.size,
        etag: obj.etag.clone(),
        mtime_ms: obj.mtime_ms,
        attrs: obj.attrs.clone(),
        checksums: Default::default(),
        parts: Vec::new(),
        version: aisle_cluster::stamp(),
        remote: Some(RemoteStamp {
            etag: obj.etag.clone(),
            version: obj.version.clone(),
            md5: None,
            checked_ms: now,
        }),
        upload_id: None,
    };
    fetch.progress.send_modify(|p| {
        p.head = Some(Arc::new(Head {
            meta: meta.clone(),
            file: Arc::new(reader),
        }))
    });
    let mut md5 = Md5::new();
    let mut written = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(remote_err)?;
        if written + chunk.len() as u64 > obj.size {
            return Err(api_err(
                502,
                "InternalError",
                format!(
                    "{}: the remote sent more than the {} bytes it announced",
                    remote.label(),
                    obj.size
                ),
            ));
        }
        md5.update(&chunk);
        writer
            .write_all_at(&chunk, written)
            .map_err(io("writing a fetched object"))?;
        written += chunk.len() as u64;
        fetch.progress.send_modify(|p| p.written = written);
    }
    if written != obj.size {
        return Err(api_err(
            503,
            "SlowDown",
            format!(
                "{}: the body ended after {written} of {} bytes",
                remote.label(),
                obj.size
            ),
        ));
    }
    temp.finish().await?;
    let md5 = hex::encode(md5.finalize());
    if meta.etag.is_empty() {
        meta.etag = md5.clone();
    }
    if let Some(r) = meta.remote.as_mut() {
        r.md5 = Some(md5);
    }
    let (s, b, k, m) = (
        state.store.clone(),
        bucket.to_string(),
        key.to_string(),
        meta.clone(),
    );
    match blocking(move || s.publish_copy(&b, &k, temp, m, false)).await {
        Ok(_) => {}
        // A client's write got there first: it is newer than this fetch.
        Err(e) if e.code == "Stale" => return Ok(()),
        Err(e) => return Err(e),
    }
    state.cold.cached_meta(bucket, key, &meta, mp);
    RemoteMetrics::inc(&state.cold.metrics.fetches, bucket, 1);
    RemoteMetrics::inc(&state.cold.metrics.bytes, bucket, meta.size);
    Ok(())
}

async fn wait_head(fetch: &Fetch) -> Result<Arc<Head>, ApiError> {
    let mut rx = fetch.progress.subscribe();
    loop {
        {
            let p = rx.borrow_and_update();
            if let Some(h) = &p.head {
                return Ok(h.clone());
            }
            if let Some(Err(e)) = &p.done {
                return Err(e.clone());
            }
            if let Some(Ok(())) = &p.done {
                return Err(api_err(
                    500,
                    "InternalError",
                    "a fetch ended without an answer",
                ));
            }
        }
        if rx.changed().await.is_err() {
            return Err(api_err(500, "InternalError", "a fetch was dropped"));
        }
    }
}

async fn wait_done(fetch: &Fetch) -> Result<(), ApiError> {
    let mut rx = fetch.progress.subscribe();
    loop {
        if let Some(done) = rx.borrow_and_update().done.clone() {
            return done;
        }
        if rx.changed().await.is_err() {
            return Err(api_err(500, "InternalError", "a fetch was dropped"));
        }
    }
}

/// The bytes `[start, end)` of a fetch's staged file, as they arrive; an error if the fetch
/// fails first (the response is aborted, never cut short silently).
fn follow(fetch: Arc<Fetch>, file: Arc<std::fs::File>, start: u64, end: u64) -> RespBody {
    let rx = fetch.progress.subscribe();
    let s = futures::stream::unfold(
        (start, rx, fetch, false),
        move |(pos, mut rx, fetch, failed)| {
            let file = file.clone();
            async move {
                if pos >= end || failed {
                    return None;
                }
                let avail = loop {
                    let (written, done) = {
                        let p = rx.borrow_and_update();
                        (p.written, p.done.clone())
                    };
                    if written > pos {
                        break written;
                    }
                    match done {
                        Some(Err(f)) => {
                            let e: BoxError = f.message.clone().into();
                            return Some((Err(e), (pos, rx, fetch, true)));
                        }
                        Some(Ok(())) => break written,
                        None => {}
                    }
                    if rx.changed().await.is_err() {
                        let e: BoxError = "the fetch was dropped".into();
                        return Some((Err(e), (pos, rx, fetch, true)));
                    }
                };
                let n = (avail.min(end) - pos).min(FOLLOW_CHUNK) as usize;
                if n == 0 {
                    let e: BoxError = "the fetched object is shorter than announced".into();
                    return Some((Err(e), (pos, rx, fetch, true)));
                }
                let mut buf = vec![0u8; n];
                match file.read_exact_at(&mut buf, pos) {
                    Ok(()) => Some((Ok(Bytes::from(buf)), (pos + n as u64, rx, fetch, false))),
                    Err(e) => Some((Err(Box::new(e) as BoxError), (pos, rx, fetch, true))),
                }
            }
        },
    );
    BodyExt::boxed_unsync(StreamBody::new(s.map(|r| r.map(Frame::data))))
}

/// Write-through: put the staged upload `files` (`size` bytes) on the remote before anything
/// is published here; the stamp to publish with.
pub(crate) async fn write_through(
    state: &State,
    spec: &RemoteSpec,
    bucket: &str,
    key: &str,
    attrs: &proto::ObjectAttrs,
    files: Vec<(std::path::PathBuf, u64)>,
    size: u64,
) -> Result<RemoteStamp, ApiError> {
    let remote = state.cold.remote(bucket, spec)?;
    let body = crate::files::open_span(&files, 0, size).await?.boxed();
    let r = remote.put(key, size, attrs, body).await;
    state.cold.note(bucket, &r);
    let obj = r.map_err(remote_err)?;
    Ok(RemoteStamp {
        etag: obj.etag,
        version: obj.version,
        md5: None,
        checked_ms: aisle_cluster::now_ms(),
    })
}

/// Write-through of a completed multipart upload: the assembled object goes to the remote
/// before the client's complete is acknowledged; if the remote refuses it, the local object
/// is removed again and the client gets the remote's error.
pub(crate) async fn complete_through(
    state: &Arc<State>,
    spec: &RemoteSpec,
    bucket: &str,
    key: &str,
    meta: ObjectMeta,
) -> Result<ObjectMeta, ApiError> {
    let rec = state.store.get(bucket, key).map_err(ApiError::from)?;
    let files = state.store.segment_files(&rec.segments);
    match write_through(state, spec, bucket, key, &meta.attrs, files, meta.size).await {
        Ok(stamp) => {
            let (s, b, k, v) = (
                state.store.clone(),
                bucket.to_string(),
                key.to_string(),
                meta.stamp(),
            );
            let meta = blocking(move || s.restamp(&b, &k, v, stamp)).await?;
            written(state, bucket, key, &meta);
            Ok(meta)
        }
        Err(e) => {
            let _ = drop_copy(state, bucket, key, &rec).await;
            Err(e)
        }
    }
}

/// A client's write of a remote bucket's object was published here.
pub(crate) fn written(state: &State, bucket: &str, key: &str, meta: &ObjectMeta) {
    if meta.remote.is_some() {
        let mp = state.store.mountpath_for(bucket, key);
        state.cold.cached_meta(bucket, key, meta, mp);
    }
}

/// `GET|POST` [`proto::T_CACHE`]: an object's cache state; prefetch; evict.
pub(crate) async fn answer(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: CacheQuery = query(&req)?;
    let Some(spec) = spec_of(state, &q.bucket) else {
        return Err(api_err(
            400,
            "InvalidArgument",
            format!("{} is not a remote bucket", q.bucket),
        ));
    };
    let mut out = CacheState {
        target: state.id.clone(),
        ..Default::default()
    };
    let held = |state: &State| match state.store.get(&q.bucket, &q.key) {
        Ok(rec) => Ok(Some(rec)),
        Err(StoreError::NoSuchKey) => Ok(None),
        Err(e) => Err(ApiError::from(e)),
    };
    match q.op.as_deref() {
        None => {}
        Some("prefetch") => {
            let cached = match held(state)? {
                Some(rec) => {
                    let oq = ObjectQuery {
                        version_id: None,
                        bucket: q.bucket.clone(),
                        key: q.key.clone(),
                        part: None,
                    };
                    fresh(state, &spec, &oq, &rec).await?
                }
                None => false,
            };
            if !cached {
                let fetch = start(state, &spec, &q.bucket, &q.key)?;
                wait_done(&fetch).await?;
                out.fetched = true;
            }
        }
        Some("evict") => {
            if let Some(rec) = held(state)?
                && rec.meta.remote.is_some()
            {
                out.evicted = drop_copy(state, &q.bucket, &q.key, &rec).await?;
            }
        }
        Some(other) => {
            return Err(api_err(
                400,
                "InvalidArgument",
                format!("unknown cache operation {other:?} (prefetch, evict)"),
            ));
        }
    }
    if let Some(rec) = held(state)? {
        out.cached = true;
        out.size = Some(rec.meta.size);
        out.remote = rec.meta.remote.clone();
        out.last_access_ms = state
            .cold
            .cached
            .lock()
            .expect("cache lock")
            .get(&(q.bucket.clone(), q.key.clone()))
            .map(|e| e.access_ms);
    }
    Ok(json_resp(StatusCode::OK, &out))
}

/// Bytes of cached objects to evict before `incoming` bytes join `cached` ones on a mountpath:
/// beyond the `budget`, down to [`EVICT_TO_BUDGET`] of it; on a disk (`(total, free)`) more than
/// `disk_full` used, down to the margin below that share. 0: nothing to evict.
fn room_needed(
    cached: u64,
    incoming: u64,
    budget: Option<u64>,
    disk: Option<(u64, u64)>,
    disk_full: f64,
) -> u64 {
    let mut need = 0u64;
    if let Some(b) = budget
        && cached + incoming > b
    {
        let low = (b as f64 * EVICT_TO_BUDGET).round() as u64;
        need = need.max(cached + incoming - low);
    }
    if let Some((total, free)) = disk
        && disk_full < 1.0
    {
        let used = total.saturating_sub(free) + incoming;
        if used as f64 > total as f64 * disk_full {
            let low = (total as f64 * (disk_full - EVICT_MARGIN).max(0.0)).round() as u64;
            need = need.max(used.saturating_sub(low));
        }
    }
    need
}

/// Make room on mountpath `mp` for `incoming` bytes: evict the least recently read cached
/// objects while the mountpath's cache exceeds its budget or its disk is nearly full.
async fn make_room(state: &Arc<State>, mp: u16, incoming: u64) {
    let dir = state.store.mountpath_dirs()[mp as usize].clone();
    let (budget, disk_full) = (state.cold.capacity, state.cold.disk_full);
    // No statvfs per fetch when the disk rule is off.
    let disk = (disk_full < 1.0)
        .then(|| aisle_cluster::metrics::disk_space(&dir))
        .flatten();
    let victims: Vec<(String, String)> = {
        let cached = state.cold.cached.lock().expect("cache lock");
        let on_mp: u64 = cached.values().filter(|e| e.mp == mp).map(|e| e.size).sum();
        let mut need = room_needed(on_mp, incoming, budget, disk, disk_full);
        if need == 0 {
            return;
        }
        let mut lru: Vec<(&(String, String), &Entry)> =
            cached.iter().filter(|(_, e)| e.mp == mp).collect();
        lru.sort_by_key(|(_, e)| e.access_ms);
        let mut out = Vec::new();
        for (id, e) in lru {
            if need == 0 {
                break;
            }
            need = need.saturating_sub(e.size);
            out.push(id.clone());
        }
        out
    };
    for (bucket, key) in victims {
        if state
            .cold
            .fetches
            .lock()
            .expect("fetch lock")
            .contains_key(&(bucket.clone(), key.clone()))
        {
            continue;
        }
        let rec = match state.store.get(&bucket, &key) {
            Ok(rec) if rec.meta.remote.is_some() => rec,
            _ => {
                state.cold.forget(&bucket, &key);
                continue;
            }
        };
        match drop_copy(state, &bucket, &key, &rec).await {
            Ok(_) => tracing::debug!(%bucket, %key, "evicted to make room"),
            Err(e) => tracing::warn!(%bucket, %key, error = %e.message, "eviction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::room_needed;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn budget_evicts_down_below_it() {
        assert_eq!(room_needed(2 * MIB, MIB, Some(4 * MIB), None, 0.95), 0);
        // 4 MiB cached + 1 incoming against a 4 MiB budget: down to 3.6 MiB.
        let need = room_needed(4 * MIB, MIB, Some(4 * MIB), None, 0.95);
        assert_eq!(need, 5 * MIB - (4.0 * MIB as f64 * 0.90).round() as u64);
    }

    #[test]
    fn a_full_disk_evicts_unless_the_rule_is_off() {
        let disk = Some((100 * MIB, 3 * MIB)); // 97% used
        assert_eq!(
            room_needed(10 * MIB, MIB, None, disk, 0.95),
            98 * MIB - 90 * MIB
        );
        assert_eq!(
            room_needed(10 * MIB, MIB, None, disk, 1.0),
            0,
            "1.0 turns it off"
        );
        assert_eq!(
            room_needed(10 * MIB, MIB, None, Some((100 * MIB, 50 * MIB)), 0.95),
            0
        );
    }

    #[test]
    fn the_larger_need_wins() {
        let disk = Some((100 * MIB, 3 * MIB));
        let need = room_needed(50 * MIB, MIB, Some(100 * MIB), disk, 0.95);
        assert_eq!(need, 8 * MIB);
    }
}
