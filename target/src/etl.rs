//! The transform hop's target side: read the source locally, run every stage here, send only
//! transformed bytes. Deterministic pipelines go through a bounded on-disk LRU cache keyed by
//! (source version, pipeline fingerprint), so HEAD, Range and repeat reads are exact and cheap;
//! non-deterministic ones stream (chunked) and refuse Range. A read marked `uncached` (offline
//! ETL's direct put, which stores the output as an object at once) streams a deterministic
//! pipeline's output too, without a cache entry.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aisle_cluster::map::EtlSpec;
use aisle_cluster::proto::{EtlErrorRecord, EtlNodeStatus};
use aisle_etl_runtime::exec::{Exec, ExecConfig, ExecMode};
use aisle_etl_runtime::hpush::{Hpush, Mode};
use aisle_etl_runtime::ws::Ws;
use aisle_etl_runtime::{CommConfig, Declared, ServerConfig, ServerStatus, Source};

use aisle_cluster::proto::{
    self, ETL_APPLIED_HEADER, EtlSelection, META_HEADER, ObjectMeta, ObjectQuery, ReadOptions,
};
use aisle_etl_runtime::{ByteStream, EtlError, Pipeline, Registry};
use bytes::Bytes;
use futures::StreamExt;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::Digest;
use tokio::io::AsyncWriteExt;

use crate::server::{ApiError, ReadAnswer, State, api_err, full_body};
use crate::store::{StoreError, StoredObject};

/// The target's ETL state: the registry of transforms (built-ins plus this node's instance of
/// every running registered transform), the output cache, and the per-object error ring.
pub(crate) struct Etl {
    pub(crate) registry: Registry,
    cache: Cache,
    /// Where this node's transformers read objects (`AIS_TARGET_URL`): the node's URL, then
    /// [`SOURCE_PATH`] and [`Etl::source_secret`].
    node_url: String,
    /// The secret in [`Etl::node_url`]'s path, known only to this node and its transformers.
    source_secret: String,
    installed: Mutex<HashMap<String, Installed>>,
    errors: Mutex<VecDeque<EtlErrorRecord>>,
}

enum Handle {
    Exec(Arc<Exec>),
    Hpush(Arc<Hpush>),
    Ws(Arc<Ws>),
}

impl Handle {
    fn transformer(&self) -> Arc<dyn aisle_etl_runtime::Transformer> {
        match self {
            Handle::Exec(e) => e.clone(),
            Handle::Hpush(h) => h.clone(),
            Handle::Ws(w) => w.clone(),
        }
    }

    /// The server's status (server communicators).
    fn server(&self) -> Option<ServerStatus> {
        match self {
            Handle::Exec(_) => None,
            Handle::Hpush(h) => Some(h.status()),
            Handle::Ws(w) => Some(w.status()),
        }
    }
}

/// Path prefix of the object reads this node's transformers make (`hpull`, and servers that
/// fetch instead of being pushed to): `GET <node>/_aisle/etl/source/<secret>/<bucket>/<key>`.
pub(crate) const SOURCE_PATH: &str = "/_aisle/etl/source/";

struct Installed {
    version: String,
    handle: Handle,
}

const ERROR_RING: usize = 256;
const DEFAULT_CONCURRENCY: u32 = 8;

impl Etl {
    pub(crate) fn new(
        cache_dir: &Path,
        budget: u64,
        node_url: String,
        events: CacheEvents,
    ) -> Result<Etl, StoreError> {
        let source_secret = uuid::Uuid::new_v4().simple().to_string();
        Ok(Etl {
            registry: Registry::with_builtins(),
            cache: Cache::open(cache_dir, budget, events)?,
            node_url: format!(
                "{}{SOURCE_PATH}{source_secret}",
                node_url.trim_end_matches('/')
            ),
            source_secret,
            installed: Mutex::new(HashMap::new()),
            errors: Mutex::new(VecDeque::new()),
        })
    }

    /// Make this node serve exactly the running transforms of `specs`.
    pub(crate) fn reconcile(&self, specs: &BTreeMap<String, EtlSpec>) {
        let mut installed = self.installed.lock().expect("etl lock");
        let stale: Vec<String> = installed
            .iter()
            .filter(|(name, i)| {
                specs
                    .get(*name)
                    .is_none_or(|s| !s.running || s.version() != i.version)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in stale {
            self.registry.unregister(&name);
            installed.remove(&name); // dropping an hpush handle stops its process
            tracing::info!(etl = %name, "transform removed from this node");
        }
        for spec in specs.values().filter(|s| s.running) {
            if installed.contains_key(&spec.name) {
                continue;
            }
            match self.instantiate(spec) {
                Ok(handle) => {
                    self.registry.register(handle.transformer());
                    installed.insert(
                        spec.name.clone(),
                        Installed {
                            version: spec.version(),
                            handle,
                        },
                    );
                    tracing::info!(etl = %spec.name, communicator = %spec.communicator, "transform installed");
                }
                Err(e) => {
                    tracing::warn!(etl = %spec.name, error = %e, "cannot install transform");
                    self.record(&spec.name, "", 500, &e.to_string());
                }
            }
        }
    }

    fn instantiate(&self, spec: &EtlSpec) -> Result<Handle, EtlError> {
        let declared = Declared {
            name: spec.name.clone(),
            deterministic: spec.deterministic,
            content_type: spec.content_type.clone(),
            version: spec.version(),
            obj_timeout: Duration::from_secs(spec.obj_timeout),
            concurrency: spec.concurrency.unwrap_or(DEFAULT_CONCURRENCY) as usize,
        };
        let env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let workdir = spec.workdir.as_ref().map(PathBuf::from);
        if spec.communicator == "exec" {
            return Ok(Handle::Exec(Arc::new(Exec::new(ExecConfig {
                declared,
                argv: spec.command.clone(),
                env,
                workdir,
                mode: match spec.mode.as_deref() {
                    Some("worker") => ExecMode::Worker,
                    _ => ExecMode::OneShot,
                },
            })?)));
        }
        let cfg = CommConfig {
            declared,
            server: ServerConfig {
                url: spec.url.clone(),
                argv: (!spec.command.is_empty()).then(|| spec.command.clone()),
                env,
                workdir,
                init_timeout: Duration::from_secs(spec.init_timeout),
                node_url: self.node_url.clone(),
            },
            fqn: spec.argument == "fqn",
        };
        match spec.communicator.as_str() {
            "hpush" => Ok(Handle::Hpush(Arc::new(Hpush::start(cfg, Mode::Push)?))),
            "hpull" => Ok(Handle::Hpush(Arc::new(Hpush::start(cfg, Mode::Pull)?))),
            "ws" => Ok(Handle::Ws(Arc::new(Ws::start(cfg)?))),
            other => Err(EtlError::BadPipeline(format!(
                "unknown communicator {other:?}"
            ))),
        }
    }

    /// Does `path` (after [`SOURCE_PATH`]) start with this node's source secret? Returns the
    /// rest, `<bucket>/<key>` still percent-encoded.
    pub(crate) fn source_request<'a>(&self, rest: &'a str) -> Option<&'a str> {
        let (secret, object) = rest.split_once('/')?;
        aisle_cluster::auth::constant_time_eq(secret.as_bytes(), self.source_secret.as_bytes())
            .then_some(object)
    }

    fn record(&self, pipeline: &str, path: &str, status: u16, message: &str) {
        let mut e = self.errors.lock().expect("etl lock");
        if e.len() == ERROR_RING {
            e.pop_front();
        }
        e.push_back(EtlErrorRecord {
            time_ms: crate::store::now_ms(),
            pipeline: pipeline.to_string(),
            path: path.to_string(),
            status,
            message: message.to_string(),
        });
    }

    /// This node's view of one registered transform.
    pub(crate) fn status(&self, name: &str) -> EtlNodeStatus {
        let installed = self.installed.lock().expect("etl lock");
        let mut st = EtlNodeStatus {
            name: name.to_string(),
            ..Default::default()
        };
        if let Some(i) = installed.get(name) {
            st.installed = true;
            st.logs = i.handle.transformer().logs();
            match i.handle.server() {
                None => st.ready = true,
                Some(s) => {
                    st.ready = s.ready;
                    st.restarts = s.restarts;
                    st.pid = s.pid;
                    st.last_error = s.last_error;
                }
            }
        }
        st.errors = self
            .errors
            .lock()
            .expect("etl lock")
            .iter()
            .filter(|r| r.pipeline.split(',').any(|p| p == name))
            .cloned()
            .collect();
        st
    }
}

impl From<EtlError> for ApiError {
    fn from(e: EtlError) -> Self {
        if e.status() >= 500 {
            tracing::warn!(error = %e, "transform failed");
        }
        api_err(e.status(), e.code(), e.to_string())
    }
}

struct Entry {
    size: u64,
    used: u64,
}

#[derive(Default)]
struct Index {
    entries: HashMap<String, Entry>,
    total: u64,
    clock: u64,
}

/// Bounded LRU of transformed outputs, one file per key (hex digests: never client text).
type CacheEvents = prometheus_client::metrics::family::Family<
    crate::metrics::CacheEvent,
    prometheus_client::metrics::counter::Counter,
>;

struct Cache {
    dir: PathBuf,
    budget: u64,
    /// Hits, misses and evictions, for the target's metrics.
    events: CacheEvents,
    index: Mutex<Index>,
    building: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Cache {
    fn open(dir: &Path, budget: u64, events: CacheEvents) -> Result<Cache, StoreError> {
        let tmp = dir.join("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .map_err(StoreError::io(format!("creating {}", tmp.display())))?;
        let mut index = Index::default();
        let mut found: Vec<(std::time::SystemTime, String, u64)> = Vec::new();
        for e in
            std::fs::read_dir(dir).map_err(StoreError::io(format!("reading {}", dir.display())))?
        {
            let e = e.map_err(StoreError::io("reading the ETL cache"))?;
            let md = e
                .metadata()
                .map_err(StoreError::io("reading the ETL cache"))?;
            if md.is_file() {
                let when = md.modified().unwrap_or(std::time::UNIX_EPOCH);
                found.push((when, e.file_name().to_string_lossy().into_owned(), md.len()));
            }
        }
        found.sort();
        for (_, name, size) in found {
            index.clock += 1;
            index.total += size;
            index.entries.insert(
                name,
                Entry {
                    size,
                    used: index.clock,
                },
            );
        }
        Ok(Cache {
            dir: dir.to_path_buf(),
            budget,
            events,
            index: Mutex::new(index),
            building: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    fn event(&self, event: &'static str) {
        self.events
            .get_or_create(&crate::metrics::CacheEvent { event })
            .inc();
    }

    fn lookup(&self, key: &str) -> Option<(PathBuf, u64)> {
        let mut idx = self.index.lock().expect("cache lock");
        idx.clock += 1;
        let clock = idx.clock;
        let e = idx.entries.get_mut(key)?;
        e.used = clock;
        Some((self.dir.join(key), e.size))
    }

    fn insert(&self, key: &str, size: u64) {
        let mut idx = self.index.lock().expect("cache lock");
        idx.clock += 1;
        let clock = idx.clock;
        if let Some(old) = idx
            .entries
            .insert(key.to_string(), Entry { size, used: clock })
        {
            idx.total -= old.size;
        }
        idx.total += size;
        // Evict least recently used entries (never the one just added). A reader that has the
        // file open keeps reading it: unlinking does not cut it.
        while idx.total > self.budget && idx.entries.len() > 1 {
            let victim = idx
                .entries
                .iter()
                .filter(|(k, _)| k.as_str() != key)
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone());
            let Some(v) = victim else { break };
            if let Some(e) = idx.entries.remove(&v) {
                idx.total -= e.size;
                self.event("eviction");
                let _ = std::fs::remove_file(self.dir.join(&v));
            }
        }
    }

    /// The cached output for `key`, building it from `source` through `pipeline` when missing.
    /// Concurrent requests for one key build it once.
    async fn get_or_build(
        &self,
        key: &str,
        pipeline: &Pipeline,
        path: &str,
        source: &Source,
        input: impl FnOnce() -> ByteStream,
    ) -> Result<(PathBuf, u64), ApiError> {
        if let Some(hit) = self.lookup(key) {
            self.event("hit");
            return Ok(hit);
        }
        let lock = {
            let mut b = self.building.lock().await;
            b.entry(key.to_string()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if let Some(hit) = self.lookup(key) {
            self.event("hit");
            return Ok(hit);
        }
        self.event("miss");
        let result = self.build(key, pipeline, path, source, input()).await;
        self.building.lock().await.remove(key);
        let size = result?;
        Ok((self.dir.join(key), size))
    }

    async fn build(
        &self,
        key: &str,
        pipeline: &Pipeline,
        path: &str,
        source: &Source,
        input: ByteStream,
    ) -> Result<u64, ApiError> {
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{key}.{}", uuid::Uuid::new_v4().simple()));
        let io = |ctx: &str| {
            let ctx = format!("{ctx} {}", tmp.display());
            move |e: std::io::Error| {
                ApiError::from(StoreError::Io {
                    context: ctx,
                    source: e,
                })
            }
        };
        let mut out = pipeline.run_from(input, source, path).await?;
        let mut f = tokio::fs::File::create(&tmp)
            .await
            .map_err(io("creating"))?;
        let mut size = 0u64;
        let written: Result<(), ApiError> = async {
            while let Some(chunk) = out.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                f.write_all(&chunk).await.map_err(io("writing"))?;
            }
            f.flush().await.map_err(io("flushing"))?;
            Ok(())
        }
        .await;
        drop(f);
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, self.dir.join(key))
            .await
            .map_err(io("publishing"))?;
        self.insert(key, size);
        Ok(size)
    }
}

/// The bytes a transform reads: the whole object, or one member of a shard (`archpath`).
async fn source_stream(
    state: &Arc<State>,
    rec: &StoredObject,
    q: &ObjectQuery,
    member: Option<&str>,
) -> Result<ByteStream, ApiError> {
    match member {
        None => {
            let files = state.store.segment_files(&rec.segments);
            let s = crate::files::open_span(&files, 0, rec.meta.size).await?;
            Ok(Box::pin(
                s.map(|r| r.map_err(|e| EtlError::Source(e.to_string()))),
            ))
        }
        Some(name) => {
            let sel = aisle_cluster::proto::ArchiveSelection::Path(name.to_string());
            let resp = crate::shards::read(state, rec.clone(), q, &sel, true).await?;
            let body = http_body_util::BodyDataStream::new(resp.into_body());
            Ok(Box::pin(
                body.map(|r| r.map_err(|e| EtlError::Source(e.to_string()))),
            ))
        }
    }
}

/// GET/HEAD of `rec` through the selected pipeline.
pub(crate) async fn read_transformed(
    state: &Arc<State>,
    rec: StoredObject,
    q: &ObjectQuery,
    sel: &EtlSelection,
    opts: &ReadOptions,
    with_body: bool,
    may_stream: bool,
) -> Result<ReadAnswer, ApiError> {
    // A shard member as the input (`archpath` with a transform), or the whole object.
    let member = match &opts.archive {
        None => None,
        Some(aisle_cluster::proto::ArchiveSelection::Path(name)) => Some(name.clone()),
        Some(_) => {
            return Err(api_err(
                400,
                "InvalidRequest",
                "a transform applies to one member (archpath), not to a selection of members",
            ));
        }
    };
    let member = member.as_deref();
    if q.part.is_some() {
        return Err(api_err(
            400,
            "InvalidRequest",
            "partNumber cannot be combined with a transform",
        ));
    }
    let pipeline = state
        .etl
        .registry
        .resolve(&sel.pipeline, sel.args.as_deref())?
        .for_request(aisle_cluster::trace::current().as_deref());
    if !may_stream && !pipeline.deterministic() {
        return Ok(ReadAnswer::Declined);
    }
    let fingerprint = pipeline.fingerprint();
    let key = hex::encode(sha2::Sha256::digest(format!(
        "{}\0{}\0{}\0{}",
        rec.meta.etag,
        rec.meta.mtime_ms,
        member.unwrap_or(""),
        fingerprint
    )));
    let mut attrs = rec.meta.attrs.clone();
    if let Some(name) = member {
        attrs = aisle_cluster::proto::ObjectAttrs {
            content_type: Some(
                mime_guess::from_path(name)
                    .first_or_octet_stream()
                    .to_string(),
            ),
            ..Default::default()
        };
    }
    attrs.content_type = pipeline.content_type(attrs.content_type.as_deref());
    attrs.content_encoding = None;
    let mut meta = ObjectMeta {
        version_id: None,
        delete_marker: false,
        size: 0,
        // Stable for (source version, pipeline, args); never the source's ETag; the `-etl`
        // suffix tells clients it is not an MD5 of the bytes.
        etag: format!("{}-etl", &key[..32]),
        mtime_ms: rec.meta.mtime_ms,
        attrs,
        checksums: Default::default(),
        parts: Vec::new(),
        version: rec.meta.version,
        remote: None,
        upload_id: None,
    };
    let applied = pipeline.applied();
    let object_path = match member {
        Some(name) => format!("{}/{}/{name}", q.bucket, q.key),
        None => format!("{}/{}", q.bucket, q.key),
    };
    if let Some(r) = crate::server::condition_failed(opts, &meta) {
        return Ok(ReadAnswer::Response(r));
    }
    // What the first stage may use besides the bytes: the stored object itself, and its one
    // data file when it has exactly one.
    let source = Source {
        stored: member.is_none(),
        file: match (member, rec.segments.as_slice()) {
            (None, [one]) => Some(state.store.segment_path(one)),
            _ => None,
        },
    };
    if pipeline.deterministic() && !opts.uncached {
        let built = state
            .etl
            .cache
            .get_or_build(&key, &pipeline, &object_path, &source, || {
                // Opened lazily, only when the cache misses.
                Box::pin(
                    futures::stream::once({
                        let state = state.clone();
                        let rec = rec.clone();
                        let (q, member) = (q.clone(), member.map(str::to_string));
                        async move { source_stream(&state, &rec, &q, member.as_deref()).await }
                    })
                    .flat_map(|r| match r {
                        Ok(s) => s,
                        Err(e) => Box::pin(futures::stream::once(async move {
                            Err(EtlError::Source(e.message))
                        })) as ByteStream,
                    }),
                )
            })
            .await;
        let (path, size) = built.inspect_err(|e| {
            if e.status >= 400 && e.code != "NoSuchKey" {
                state
                    .etl
                    .record(&applied, &object_path, e.status, &e.message);
            }
        })?;
        meta.size = size;
        let (start, end, partial) = crate::server::range_of(opts, size, false)?;
        let b = crate::server::span_head(&meta, start, end, size, partial)
            .header(ETL_APPLIED_HEADER, &applied);
        let spans = if with_body && end > start {
            crate::files::spans(&[(path, size)], start, end)?
        } else {
            Vec::new()
        };
        let head = b.body(()).expect("valid response");
        return Ok(ReadAnswer::Files { head, spans });
    }
    if opts.range.is_some() {
        return Err(api_err(
            501,
            "NotImplemented",
            "Range is not supported on a non-deterministic transform",
        ));
    }
    // Run the pipeline over the object's bytes (streamed transforms); a failure to start is
    // recorded with the transform's status.
    let start = || async {
        pipeline
            .run_from(
                source_stream(state, &rec, q, member).await?,
                &source,
                &object_path,
            )
            .await
            .inspect_err(|e| {
                state
                    .etl
                    .record(&applied, &object_path, e.status(), &e.to_string())
            })
            .map_err(ApiError::from)
    };
    if opts.sized && with_body {
        // The caller needs the size first (GetBatch's tar header): run to completion into a
        // staged file here, answer its span; the file goes when the answer is dropped.
        if !may_stream {
            return Ok(ReadAnswer::Declined);
        }
        let out = start().await?;
        let mp = state.store.mountpath_for(&q.bucket, &q.key);
        let mut temp = state.store.create_temp(mp).await?;
        let mut size = 0u64;
        let mut out = out;
        while let Some(chunk) = out.next().await {
            let chunk = chunk.map_err(|e| {
                state
                    .etl
                    .record(&applied, &object_path, e.status(), &e.to_string());
                ApiError::from(e)
            })?;
            size += chunk.len() as u64;
            temp.write(chunk).await?;
        }
        temp.finish_transient().await?;
        meta.size = size;
        let spans = crate::files::spans(&[(temp.path().to_path_buf(), size)], 0, size)?;
        // The spans hold the file open; dropping `temp` unlinks its name.
        drop(temp);
        let head = crate::server::span_head(&meta, 0, size, size, false)
            .header(ETL_APPLIED_HEADER, &applied)
            .body(())
            .expect("valid response");
        return Ok(ReadAnswer::Files { head, spans });
    }
    let b = Response::builder()
        .status(StatusCode::OK)
        .header(META_HEADER, proto::encode_header(&meta))
        .header(ETL_APPLIED_HEADER, &applied);
    if !with_body {
        return Ok(ReadAnswer::Response(
            b.body(full_body(Bytes::new())).expect("valid response"),
        ));
    }
    let out = start().await?;
    let recorder = state.clone();
    let out = out.inspect(move |r| match r {
        Ok(chunk) => {
            recorder
                .metrics
                .etl_bytes_out
                .get_or_create(&crate::metrics::Transform {
                    transform: applied.clone(),
                })
                .inc_by(chunk.len() as u64);
        }
        Err(e) => {
            recorder
                .metrics
                .etl_requests
                .get_or_create(&crate::metrics::EtlOutcome {
                    transform: applied.clone(),
                    outcome: "stream_error",
                })
                .inc();
            recorder
                .etl
                .record(&applied, &object_path, e.status(), &e.to_string());
        }
    });
    // A failure after the headers went out ends the chunked body with an error: the
    // connection is cut and the client sees a broken response, never a silently short one.
    let frames = out.map(|r| {
        r.map(Frame::data)
            .map_err(|e| Box::new(e) as aisle_cluster::client::BoxError)
    });
    Ok(ReadAnswer::Response(
        b.body(BodyExt::boxed_unsync(StreamBody::new(frames)))
            .expect("valid response"),
    ))
}

/// `GET <SOURCE_PATH><secret>/<bucket>/<key>`: a transformer of this node reads an object
/// (`hpull`, or any server that fetches from `AIS_TARGET_URL`). Only this node's copy is
/// read, whole, untransformed; the secret in the path stands for the cluster's credentials,
/// which transformers never get.
pub(crate) async fn answer_source(
    state: &Arc<State>,
    req: &http::Request<hyper::body::Incoming>,
) -> Option<crate::server::Resp> {
    let rest = req.uri().path().strip_prefix(SOURCE_PATH)?;
    let answer = async {
        let object = state
            .etl
            .source_request(rest)
            .ok_or_else(ApiError::denied)?;
        if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
            return Err(api_err(
                405,
                "MethodNotAllowed",
                "transformers only read objects",
            ));
        }
        // AIStore's SDK servers encode the whole `<bucket>/<key>` (slashes too); bucket names
        // have no slash, so the first one decoded ends the bucket.
        let object = percent_encoding::percent_decode_str(object)
            .decode_utf8()
            .map_err(|_| api_err(400, "InvalidRequest", "the path is not UTF-8"))?;
        let (bucket, key) = object
            .split_once('/')
            .ok_or_else(|| api_err(400, "InvalidRequest", "the path is <bucket>/<key>"))?;
        let q = ObjectQuery {
            version_id: None,
            bucket: bucket.to_string(),
            key: key.to_string(),
            part: None,
        };
        let with_body = req.method() == http::Method::GET;
        crate::server::answer_read(state, &q, &ReadOptions::default(), with_body, true)
            .await?
            .into_response()
    };
    Some(answer.await.unwrap_or_else(|e| e.into_resp()))
}
