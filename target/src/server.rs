//! The target's intra-cluster HTTP API (see [`aisle_cluster::proto`] for the contract).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use aisle_cluster::auth::is_authorized;
use aisle_cluster::client::{BoxError, NodeClient};
use aisle_cluster::local::LocalSocket;
use aisle_cluster::map::{ClusterMeta, TargetInfo};
use aisle_cluster::proto::{
    self, COMMIT_TRAILER, Commit, CompleteRequest, ErrorBody, ListQuery, META_HEADER, ObjectAttrs,
    ObjectQuery, PartsQuery, READ_HEADER, ReadOptions, TargetStatus, UploadQuery, UploadsQuery,
    WRITE_HEADER, WriteOptions,
};
use aisle_cluster::versioning::VersionRef;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpListener, UnixListener};

use crate::config::TargetConfig;
use crate::store::{Store, StoreError, StoredObject};

pub(crate) type RespBody = UnsyncBoxBody<Bytes, BoxError>;
pub(crate) type Resp = Response<RespBody>;

/// Failure to start or run a target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// Opening the store failed.
    #[error("opening the store: {0}")]
    Store(#[from] StoreError),
    /// The TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] aisle_cluster::tls::TlsError),
    /// Binding or serving failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

pub(crate) struct State {
    pub(crate) id: String,
    /// Calls to other targets (copies, rebalance).
    pub(crate) client: NodeClient,
    pub(crate) rebalance: crate::rebalance::Rebalancer,
    pub(crate) store: Arc<Store>,
    pub(crate) secret: String,
    pub(crate) meta: RwLock<Arc<ClusterMeta>>,
    /// The store's change table, shared with gateways on this host ([`crate::local`]).
    pub(crate) changes: Arc<aisle_cluster::changes::ChangeTable>,
    pub(crate) meta_path: std::path::PathBuf,
    pub(crate) etl: crate::etl::Etl,
    pub(crate) shards: crate::shards::Shards,
    pub(crate) cold: crate::cold::Cold,
    pub(crate) metrics: crate::metrics::TargetMetrics,
    /// Bearer token of `GET /_aisle/metrics` (none: metrics are not served).
    metrics_token: Option<String>,
}

/// Run a target until the process is stopped: open the store (with recovery), listen, join the
/// gateway, serve.
pub async fn run(cfg: TargetConfig) -> Result<(), TargetError> {
    std::fs::create_dir_all(&cfg.root).map_err(|source| TargetError::Io {
        context: format!("creating {}", cfg.root.display()),
        source,
    })?;
    let store = Store::open(&cfg.root.join("index.redb"), &cfg.mountpaths)?;
    let changes = Arc::new(
        aisle_cluster::changes::ChangeTable::open(&cfg.root.join("changes")).map_err(|source| {
            TargetError::Io {
                context: format!("opening {}", cfg.root.join("changes").display()),
                source,
            }
        })?,
    );
    store.report_changes(changes.clone());
    let meta_path = cfg.root.join("cluster-meta.json");
    let meta: ClusterMeta = std::fs::read(&meta_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| TargetError::Io {
            context: format!("binding {}", cfg.listen),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| TargetError::Io {
        context: "reading the bound address".into(),
        source,
    })?;
    let host = cfg
        .advertise_host
        .clone()
        .unwrap_or_else(|| local.ip().to_string());
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{}", local.port());
    let client_tls = match &cfg.tls {
        Some(t) => Some(aisle_cluster::tls::client_config(&t.ca)?),
        None => None,
    };
    let metrics = crate::metrics::TargetMetrics::new();
    started_ms();
    let state = Arc::new(State {
        id: cfg.id.clone(),
        client: NodeClient::with_tls(&cfg.cluster_secret, client_tls),
        rebalance: crate::rebalance::Rebalancer::default(),
        store,
        changes,
        secret: cfg.cluster_secret.clone(),
        meta: RwLock::new(Arc::new(meta)),
        meta_path,
        etl: crate::etl::Etl::new(
            &cfg.mountpaths[0].join("etl-cache"),
            cfg.etl_cache_bytes,
            url.clone(),
            metrics.etl_cache.clone(),
        )?,
        shards: Default::default(),
        cold: crate::cold::Cold::new(cfg.cache_max_bytes, cfg.cache_disk_full, &metrics),
        metrics,
        metrics_token: cfg.metrics_token.clone(),
    });
    {
        let meta = state.meta.read().expect("meta lock").clone();
        state.etl.reconcile(&meta.etls);
    }
    state.cold.load(&state)?;
    let local = bind_local_sockets(&cfg.root);
    tracing::info!(id = %cfg.id, %url, local = ?local.as_ref().map(|(_, _, s)| &s.path), "target listening");
    if !aisle_etl_runtime::builtin::jpeg_simd() {
        tracing::warn!(
            "libjpeg runs without SIMD (nasm was not on the PATH when aisle was built): built-in \
             image transforms are ~20% slower; `apt-get install nasm && cargo clean -p mozjpeg-sys` \
             before the next build adds it"
        );
    }
    tokio::spawn(join_loop(
        state.clone(),
        cfg.gateway_url.clone(),
        TargetInfo {
            local: local.as_ref().map(|(_, _, s)| s.clone()),
            uuid: node_uuid(&cfg.root)?,
            ..TargetInfo::new(cfg.id.clone(), url)
        },
    ));
    if let Some((unix, fds, _)) = local {
        let s = state.clone();
        tokio::spawn(aisle_cluster::serve::serve(unix, None, move |req| {
            handle(s.clone(), req)
        }));
        if let Some(fds) = fds {
            tokio::spawn(crate::local::serve(fds, state.clone()));
        }
    }
    match &cfg.tls {
        Some(t) => {
            let tls = aisle_cluster::tls::server_config(&t.cert, &t.key)?;
            aisle_cluster::serve::serve_tls(listener, tls, None, move |req| {
                handle(state.clone(), req)
            })
            .await
        }
        None => {
            aisle_cluster::serve::serve(listener, None, move |req| handle(state.clone(), req)).await
        }
    }
    Ok(())
}

/// Same-host sockets in `root` (see [`aisle_cluster::local`]): the HTTP API, and the
/// descriptor-passing socket for plain reads and puts. Stale sockets of an earlier run are replaced; if a
/// socket cannot be made (a path too long for a socket address, say) the target goes without.
type LocalListeners = (UnixListener, Option<UnixListener>, LocalSocket);
fn bind_local_sockets(root: &std::path::Path) -> Option<LocalListeners> {
    let bind = |name: &str| {
        let path = root.join(name);
        let _ = std::fs::remove_file(&path);
        UnixListener::bind(&path)
            .map(|l| (l, path.clone()))
            .inspect_err(|e| {
                tracing::warn!(path = %path.display(), error = %e, "no local socket");
            })
            .ok()
    };
    let (http, path) = bind("target.sock")?;
    let fds = bind("target-fd.sock");
    let socket = LocalSocket {
        host: aisle_cluster::local::host_id().to_string(),
        path,
        fds: fds.as_ref().map(|(_, p)| p.clone()),
    };
    Some((http, fds.map(|(l, _)| l), socket))
}

/// The identity of this data directory: made at the first start (`<root>/node-uuid`).
fn node_uuid(root: &std::path::Path) -> Result<String, TargetError> {
    let path = root.join("node-uuid");
    if let Ok(s) = std::fs::read_to_string(&path) {
        return Ok(s.trim().to_string());
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &id)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| TargetError::Io {
            context: format!("writing {}", path.display()),
            source,
        })?;
    Ok(id)
}

/// Register with the gateway until it answers; the answer is the current cluster metadata.
async fn join_loop(state: Arc<State>, gateway: String, me: TargetInfo) {
    let url = format!("{gateway}{}", proto::G_JOIN);
    let mut delay = Duration::from_millis(50);
    loop {
        match state
            .client
            .json::<_, ClusterMeta>(Method::POST, &url, Some(&me))
            .await
        {
            Ok(meta) => {
                tracing::info!(version = meta.version, "joined the cluster");
                install_meta(&state, meta);
                return;
            }
            Err(aisle_cluster::client::ClientError::Status { status, body, .. })
                if status == StatusCode::CONFLICT =>
            {
                // Another node holds this id: serving would corrupt placement. Stop here.
                tracing::error!(message = %body.message, "the gateway refused this target");
                eprintln!("aisle target: not joining: {}", body.message);
                std::process::exit(2);
            }
            Err(e) => {
                tracing::debug!(error = %e, "join failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

fn install_meta(state: &Arc<State>, meta: ClusterMeta) {
    let meta = Arc::new(meta);
    {
        let mut cur = state.meta.write().expect("meta lock");
        if meta.version < cur.version {
            return;
        }
        if let Err(e) = aisle_cluster::files::write_private(
            &state.meta_path,
            &serde_json::to_vec(&*meta).expect("meta serializes"),
        ) {
            tracing::warn!(error = %e, "could not persist cluster metadata");
        }
        state.etl.reconcile(&meta.etls);
        *cur = meta.clone();
    }
    crate::rebalance::on_meta(state, &meta);
}

pub(crate) fn full_body(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

pub(crate) fn json_resp<T: Serialize>(status: StatusCode, v: &T) -> Resp {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full_body(
            serde_json::to_vec(v).expect("protocol types serialize"),
        ))
        .expect("valid response")
}

/// A failed request: status, S3 error code for the gateway to pass on, and detail.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) status: u16,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// The error is about this delete marker (its version id).
    pub(crate) marker: Option<String>,
}

pub(crate) fn api_err(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status,
        code,
        message: message.into(),
        marker: None,
    }
}

impl ApiError {
    /// The error as the HTTP answer the gateway decodes.
    pub(crate) fn into_resp(self) -> Resp {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_resp(
            status,
            &ErrorBody {
                code: self.code.into(),
                message: self.message,
                delete_marker: self.marker,
            },
        )
    }

    /// The same error, about the delete marker `meta`.
    pub(crate) fn about_marker(mut self, meta: &proto::ObjectMeta) -> Self {
        self.marker = Some(aisle_cluster::versioning::id_or_null(
            meta.version_id.as_deref(),
        ));
        self
    }

    /// An upload that did not deliver what its commit says.
    pub(crate) fn incomplete(message: impl Into<String>) -> Self {
        api_err(400, "IncompleteBody", message)
    }

    /// A call without the cluster secret.
    pub(crate) fn denied() -> Self {
        api_err(
            403,
            "AccessDenied",
            "intra-cluster call without the cluster secret",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = e.s3_code();
        if status >= 500 {
            tracing::error!(error = %e, "store failure");
        }
        api_err(status, code, e.to_string())
    }
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    ApiError::from(e)
}

/// A version id from a request: `null` or one aisle made (anything else is 400).
pub(crate) fn version_ref(id: &str) -> Result<VersionRef, ApiError> {
    VersionRef::parse(id).ok_or_else(|| bad(format!("invalid version id specified: {id}")))
}

pub(crate) fn bad(msg: impl Into<String>) -> ApiError {
    api_err(400, "InvalidArgument", msg)
}

pub(crate) fn query<T: DeserializeOwned>(req: &Request<Incoming>) -> Result<T, ApiError> {
    serde_urlencoded::from_str(req.uri().query().unwrap_or(""))
        .map_err(|e| bad(format!("bad query: {e}")))
}

pub(crate) fn header_json<T: DeserializeOwned + Default>(
    h: &HeaderMap,
    name: &str,
) -> Result<T, ApiError> {
    match h.get(name) {
        None => Ok(T::default()),
        Some(v) => proto::decode_header(v.as_bytes()).map_err(|e| bad(format!("{name}: {e}"))),
    }
}

/// Run the blocking store call `f` on the calling worker thread, the runtime moving its other
/// tasks to another thread meanwhile (`block_in_place`), so that the request goes on where
/// the call returns: no hand-off to the blocking pool and back. For a call that blocks long
/// on the request's own path (a PUT's index commit and its flush), where the two thread
/// wake-ups of [`blocking`] are a visible part of a small PUT's latency. On a current-thread
/// runtime (in-process tests) it is [`blocking`].
pub(crate) async fn blocking_here<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread {
        tokio::task::block_in_place(f).map_err(store_error)
    } else {
        blocking(f).await
    }
}

/// Run the blocking store call `f` on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(store_error),
        Err(e) => Err(api_err(500, "InternalError", format!("task failed: {e}"))),
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Resp {
    if req.uri().path() == aisle_cluster::metrics::METRICS_PATH {
        return metrics(&state, &req).await;
    }
    if let Some(resp) = crate::etl::answer_source(&state, &req).await {
        return resp;
    }
    if !is_authorized(req.headers(), &state.secret) {
        let e = ApiError::denied();
        return e.into_resp();
    }
    let started = std::time::Instant::now();
    let op = crate::metrics::op_of(req.method(), req.uri().path());
    let id = aisle_cluster::trace::from_headers(req.headers());
    let work = async move {
        let resp = dispatch(state.clone(), req).await;
        let elapsed = started.elapsed();
        state.metrics.request(op, resp.status().as_u16(), elapsed);
        let ms = elapsed.as_millis() as u64;
        if resp.status().is_server_error() {
            tracing::warn!(op, status = %resp.status(), elapsed_ms = ms, "request failed");
        } else {
            tracing::debug!(op, status = %resp.status(), elapsed_ms = ms, "request done");
        }
        resp
    };
    match id {
        // Lines logged for it, and calls it makes (copies, other targets), carry the id.
        Some(id) => aisle_cluster::trace::scope(id, work).await,
        None => work.await,
    }
}

/// `GET /_aisle/metrics` with the metrics bearer token.
async fn metrics(state: &Arc<State>, req: &Request<Incoming>) -> Resp {
    let ok = state
        .metrics_token
        .as_deref()
        .is_some_and(|t| aisle_cluster::metrics::bearer_ok(req.headers(), t));
    if !ok {
        return api_err(
            401,
            "AccessDenied",
            "metrics need Authorization: Bearer <metrics token>",
        )
        .into_resp();
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, aisle_cluster::metrics::CONTENT_TYPE)
        .body(full_body(state.metrics.render(state).await))
        .expect("valid response")
}

async fn dispatch(state: Arc<State>, req: Request<Incoming>) -> Resp {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = match (method, path.as_str()) {
        (Method::PUT, proto::T_OBJECT) => put_object(&state, req).await,
        (Method::GET, proto::T_OBJECT) => get_object(&state, req, true).await,
        (Method::HEAD, proto::T_OBJECT) => get_object(&state, req, false).await,
        (Method::DELETE, proto::T_OBJECT) => delete_object(&state, req).await,
        (Method::PATCH, proto::T_OBJECT) => retag_object(&state, req).await,
        (Method::GET, proto::T_LIST) => list(&state, req).await,
        (Method::POST, proto::T_MPU) => create_upload(&state, req).await,
        (Method::DELETE, proto::T_MPU) => abort_upload(&state, req).await,
        (Method::PUT, proto::T_MPU_PART) => put_part(&state, req).await,
        (Method::POST, proto::T_MPU_COMPLETE) => complete(&state, req).await,
        (Method::GET, proto::T_MPU_PARTS) => list_parts(&state, req).await,
        (Method::GET, proto::T_MPU_UPLOADS) => list_uploads(&state, req).await,
        (Method::DELETE, proto::T_BUCKET) => drop_bucket(&state, req).await,
        (Method::PUT, proto::T_META) => put_meta(&state, req).await,
        (Method::PUT, proto::T_REPLICA) => crate::replica::receive(&state, req).await,
        (Method::POST, proto::T_REPLICA_CHECK) => crate::replica::answer_check(&state, req).await,
        (Method::POST, proto::T_REPLICA_SEND) => crate::replica::send(&state, req).await,
        (Method::POST, proto::T_SCRUB) => crate::scrub::answer(&state, req).await,
        (Method::POST, proto::T_LIFECYCLE) => crate::lifecycle::answer(&state, req).await,
        (Method::POST, proto::T_ETL_PUT) => crate::etl_put::answer(&state, req).await,
        (Method::POST, proto::T_SHARD_BUILD) => crate::shard_build::answer(&state, req).await,
        (Method::GET, proto::T_STATUS) => status(&state, req).await,
        (Method::GET, proto::T_ARCHIVE) => archive_list(&state, req).await,
        (Method::GET | Method::POST, proto::T_CACHE) => crate::cold::answer(&state, req).await,
        (Method::PUT, proto::T_ARCHIVE_APPEND) => crate::shards::append(&state, req).await,
        (Method::GET, proto::T_ETL) => {
            let q: proto::EtlQuery = match query(&req) {
                Ok(q) => q,
                Err(e) => return e.into_resp(),
            };
            Ok(json_resp(StatusCode::OK, &state.etl.status(&q.name)))
        }
        _ => Err(api_err(
            404,
            "NotImplemented",
            format!("no such target API: {path}"),
        )),
    };
    result.unwrap_or_else(|e| e.into_resp())
}

/// Stream a request body into a staged file; it counts only when the commit trailer arrives
/// and its size matches what was written.
pub(crate) async fn receive_body(
    state: &State,
    mp: u16,
    body: Incoming,
) -> Result<(crate::store::TempFile, Commit), ApiError> {
    receive_framed(state, mp, body, &[], |_| Vec::new(), &mut |_| {}).await
}

/// [`receive_body`] with bytes written before the body and after it (the suffix may depend on
/// the body's size, e.g. tar padding), each frame of the body shown to `observe` as it is
/// written; the commit's size counts the body only.
pub(crate) async fn receive_framed(
    state: &State,
    mp: u16,
    mut body: Incoming,
    prefix: &[u8],
    suffix: impl FnOnce(u64) -> Vec<u8>,
    observe: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(crate::store::TempFile, Commit), ApiError> {
    let mut temp = state.store.create_temp(mp).await.map_err(store_error)?;
    if !prefix.is_empty() {
        temp.write(Bytes::copy_from_slice(prefix))
            .await
            .map_err(store_error)?;
    }
    let mut written: u64 = 0;
    let mut commit: Option<Commit> = None;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| api_err(400, "IncompleteBody", format!("upload aborted: {e}")))?;
        match frame.into_data() {
            Ok(data) => {
                written += data.len() as u64;
                observe(&data);
                temp.write(data).await.map_err(store_error)?;
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers()
                    && let Some(v) = trailers.get(COMMIT_TRAILER)
                {
                    commit = Some(
                        proto::decode_header(v.as_bytes())
                            .map_err(|e| bad(format!("commit trailer: {e}")))?,
                    );
                }
            }
        }
    }
    let commit = commit.ok_or_else(|| ApiError::incomplete("upload ended without a commit"))?;
    if commit.size != written {
        return Err(ApiError::incomplete(format!(
            "commit says {} bytes, received {written}",
            commit.size
        )));
    }
    let tail = suffix(written);
    if !tail.is_empty() {
        temp.write(tail).await.map_err(store_error)?;
    }
    temp.finish().await.map_err(store_error)?;
    Ok((temp, commit))
}

/// Read a request's body to its end, keeping nothing, before answering without it. An answer
/// given while the sender is still sending closes the connection under it: the kernel resets a
/// socket closed with unread bytes, and the sender sees a broken connection instead of the
/// answer (a pushed copy's "I have it", a put's failed condition), and retries in vain. A body
/// that breaks off meanwhile ends the draining; the answer is the same.
pub(crate) async fn drain(mut body: Incoming) {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return;
        }
    }
}

async fn put_object(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: ObjectQuery = query(&req)?;
    let attrs: ObjectAttrs = header_json(req.headers(), META_HEADER)?;
    let opts: WriteOptions = header_json(req.headers(), WRITE_HEADER)?;
    if let Err(e) = check_put(state, &q, &opts).await {
        drain(req.into_body()).await;
        return Err(e);
    }
    let mp = state.store.mountpath_for(&q.bucket, &q.key);
    let (temp, commit) = receive_body(state, mp, req.into_body()).await?;
    let meta = publish_put(state, q, attrs, opts, temp, commit).await?;
    Ok(json_resp(StatusCode::OK, &meta))
}

/// Refuse a put up front when its condition already fails (the publish checks again).
pub(crate) async fn check_put(
    state: &State,
    q: &ObjectQuery,
    opts: &WriteOptions,
) -> Result<(), ApiError> {
    if opts.if_absent {
        let (s, b, k) = (state.store.clone(), q.bucket.clone(), q.key.clone());
        if blocking(move || Ok(s.get(&b, &k).is_ok())).await? {
            return Err(store_error(StoreError::PreconditionFailed));
        }
    }
    Ok(())
}

/// Publish a received, fsynced put, then make its other copies durable.
pub(crate) async fn publish_put(
    state: &Arc<State>,
    q: ObjectQuery,
    attrs: ObjectAttrs,
    opts: WriteOptions,
    temp: crate::store::TempFile,
    commit: Commit,
) -> Result<proto::ObjectMeta, ApiError> {
    // A remote bucket's object goes to the remote first (write-through).
    let remote = match crate::cold::spec_of(state, &q.bucket) {
        Some(spec) => Some(
            crate::cold::write_through(
                state,
                &spec,
                &q.bucket,
                &q.key,
                &attrs,
                vec![(temp.path().to_path_buf(), commit.size)],
                commit.size,
            )
            .await?,
        ),
        None => None,
    };
    let store = state.store.clone();
    let (b, k, o) = (q.bucket.clone(), q.key.clone(), opts.clone());
    let meta =
        blocking_here(move || store.publish_object((&b, &k), temp, &commit, attrs, &o, remote))
            .await?;
    crate::cold::written(state, &q.bucket, &q.key, &meta);
    crate::replica::make_copies(state, &q.bucket, &q.key, &opts).await?;
    Ok(meta)
}

/// Byte span `[start, end)` of the object (or of one of its parts) to send.
fn select_span(
    rec: &StoredObject,
    part: Option<u32>,
    opts: &ReadOptions,
) -> Result<(u64, u64, bool), ApiError> {
    let size = rec.meta.size;
    let (base, len) = match part {
        None => (0, size),
        Some(n) => {
            if rec.meta.parts.is_empty() {
                if n != 1 {
                    return Err(api_err(416, "InvalidPartNumber", "the object has one part"));
                }
                (0, size)
            } else {
                let i = (n as usize)
                    .checked_sub(1)
                    .filter(|i| *i < rec.meta.parts.len());
                let i = i.ok_or_else(|| {
                    api_err(
                        416,
                        "InvalidPartNumber",
                        format!("the object has {} parts", rec.meta.parts.len()),
                    )
                })?;
                (rec.meta.parts[..i].iter().sum(), rec.meta.parts[i])
            }
        }
    };
    let (start, end, partial) = range_of(opts, len, part.is_some())?;
    Ok((base + start, base + end, partial))
}

/// `[start, end)` of `len` bytes that `opts`' Range selects, and whether the answer is partial
/// (a range, or `partial` already).
pub(crate) fn range_of(
    opts: &ReadOptions,
    len: u64,
    partial: bool,
) -> Result<(u64, u64, bool), ApiError> {
    match &opts.range {
        None => Ok((0, len, partial)),
        Some(spec) => {
            let r = proto::resolve_range(spec, len).map_err(|_| {
                api_err(
                    416,
                    "InvalidRange",
                    "the requested range is not satisfiable",
                )
            })?;
            Ok((r.start, r.end, true))
        }
    }
}

async fn get_object(
    state: &Arc<State>,
    req: Request<Incoming>,
    with_body: bool,
) -> Result<Resp, ApiError> {
    let q: ObjectQuery = query(&req)?;
    let opts: ReadOptions = header_json(req.headers(), READ_HEADER)?;
    answer_read(state, &q, &opts, with_body, true)
        .await?
        .into_response()
}

/// A key this target does not hold: `NoSuchKey`, or `NoSuchKeyDeleted` when it holds a
/// tombstone (the gateway then looks no further: no other copy may bring it back).
pub(crate) fn missing(state: &State, q: &ObjectQuery) -> ApiError {
    match state.store.have(&q.bucket, &q.key) {
        Ok(h) if h.deleted => {
            let e = api_err(404, "NoSuchKeyDeleted", "the key was deleted");
            match state.store.latest_marker(&q.bucket, &q.key) {
                Ok(Some(m)) => e.about_marker(&m),
                _ => e,
            }
        }
        Ok(_) => StoreError::NoSuchKey.into(),
        Err(e) => e.into(),
    }
}

/// How a GET or HEAD is answered, whichever way it arrived (HTTP, or a same-host descriptor
/// call, [`crate::local`]).
pub(crate) enum ReadAnswer {
    /// `head` (status, metadata, length, range) with the concatenation of `spans` as the body
    /// (none for a HEAD): a stored object, a part or range of it, or a cached transform output.
    Files {
        head: Response<()>,
        spans: Vec<crate::files::Span>,
    },
    /// `head` with `data` as the body: a small object (or a range of it), read whole once for
    /// its integrity check ([`crate::scrub::read_checked`]).
    Bytes { head: Response<()>, data: Bytes },
    /// A complete response: a failed condition, a shard member, a streamed transform.
    Response(Resp),
    /// Not answered: it would have to stream and the caller (`may_stream: false`) cannot.
    Declined,
}

impl ReadAnswer {
    /// The HTTP response (for a read made with `may_stream`, which is never declined).
    pub(crate) fn into_response(self) -> Result<Resp, ApiError> {
        match self {
            ReadAnswer::Files { head, spans } => {
                let (parts, ()) = head.into_parts();
                Ok(Response::from_parts(parts, spans_body(spans)?))
            }
            ReadAnswer::Bytes { head, data } => {
                let (parts, ()) = head.into_parts();
                Ok(Response::from_parts(parts, full_body(data)))
            }
            ReadAnswer::Response(r) => Ok(r),
            ReadAnswer::Declined => unreachable!("a read that may stream is never declined"),
        }
    }
}

/// Resolve a read of `q`: record, transform or shard selection, conditions, part and range.
pub(crate) async fn answer_read(
    state: &Arc<State>,
    q: &ObjectQuery,
    opts: &ReadOptions,
    with_body: bool,
    may_stream: bool,
) -> Result<ReadAnswer, ApiError> {
    // A point read of the index is a few microseconds against the page cache: made here, on
    // the async worker, instead of paying two thread hand-offs to the blocking pool.
    let rec = match crate::cold::lookup(state, q, opts, with_body, may_stream).await? {
        crate::cold::Lookup::Local(rec) => rec,
        crate::cold::Lookup::Answer(a) => return Ok(a),
    };
    if let Some(sel) = &opts.etl {
        let started = std::time::Instant::now();
        let r = crate::etl::read_transformed(state, rec, q, sel, opts, with_body, may_stream).await;
        state.metrics.etl_read(&sel.pipeline, &r, started.elapsed());
        return r;
    }
    if let Some(sel) = &opts.archive {
        state.metrics.shard_reads.inc();
        if !may_stream {
            return Ok(ReadAnswer::Declined);
        }
        if opts.range.is_some() || q.part.is_some() {
            return Err(api_err(
                501,
                "NotImplemented",
                "Range and partNumber are not supported inside a shard",
            ));
        }
        let r = crate::shards::read(state, rec, q, sel, with_body).await?;
        return Ok(ReadAnswer::Response(r));
    }
    if let Some(r) = condition_failed(opts, &rec.meta) {
        return Ok(ReadAnswer::Response(r));
    }
    let (start, end, partial) = select_span(&rec, q.part, opts)?;
    let head = span_head(&rec.meta, start, end, rec.meta.size, partial)
        .body(())
        .expect("valid response");
    if with_body && rec.meta.size <= crate::scrub::CHECK_ON_READ_MAX {
        // A small object is checked whole before it is served: the checked bytes are the
        // answer, so its file is read once.
        let data = crate::scrub::read_checked(state, q, &rec)?;
        return Ok(ReadAnswer::Bytes {
            head,
            data: data.slice(start as usize..end as usize),
        });
    }
    let spans = if with_body && end > start {
        crate::files::spans(&state.store.segment_files(&rec.segments), start, end)?
    } else {
        Vec::new()
    };
    Ok(ReadAnswer::Files { head, spans })
}

/// The 304 or 412 answer (with the metadata header) when `opts`' conditions fail on `meta`.
pub(crate) fn condition_failed(opts: &ReadOptions, meta: &proto::ObjectMeta) -> Option<Resp> {
    let failed = opts
        .conditions
        .check(&meta.etag, meta.mtime_ms.div_euclid(1000))
        .err()?;
    let (status, code) = match failed {
        proto::ConditionFailed::NotModified => (304, "NotModified"),
        proto::ConditionFailed::Precondition => (412, "PreconditionFailed"),
    };
    let mut r = api_err(status, code, "condition not met").into_resp();
    r.headers_mut()
        .insert(META_HEADER, proto::encode_header(meta));
    Some(r)
}

/// Status and headers of `[start, end)` of `total` bytes described by `meta` (206 with a
/// Content-Range when `partial`).
pub(crate) fn span_head(
    meta: &proto::ObjectMeta,
    start: u64,
    end: u64,
    total: u64,
    partial: bool,
) -> http::response::Builder {
    let b = Response::builder()
        .status(if partial {
            StatusCode::PARTIAL_CONTENT
        } else {
            StatusCode::OK
        })
        .header(META_HEADER, proto::encode_header(meta))
        .header(header::CONTENT_LENGTH, end - start);
    if partial {
        b.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", start, end.saturating_sub(1), total),
        )
    } else {
        b
    }
}

/// The Content-Length of a response head.
pub(crate) fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// The body of open file spans: read at once when small, else streamed.
pub(crate) fn spans_body(spans: Vec<crate::files::Span>) -> Result<RespBody, ApiError> {
    use aisle_cluster::files::Body;
    match aisle_cluster::files::body(spans)
        .map_err(StoreError::io("reading a data file".to_string()))?
    {
        Body::Whole(bytes) => Ok(full_body(bytes)),
        Body::Stream(s) => Ok(stream_body(s)),
    }
}

/// A response body from a file stream.
pub(crate) fn stream_body(s: crate::files::FileStream) -> RespBody {
    let frames = s.map(|r| r.map(Frame::data).map_err(|e| Box::new(e) as BoxError));
    BodyExt::boxed_unsync(StreamBody::new(frames))
}

async fn archive_list(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: ObjectQuery = query(&req)?;
    let store = state.store.clone();
    let (b, k) = (q.bucket.clone(), q.key.clone());
    let rec = blocking(move || store.get(&b, &k)).await?;
    let (_, members) = crate::shards::members(state, &rec, &q.key).await?;
    Ok(json_resp(StatusCode::OK, &*members))
}

/// DELETE of an object: of one version for good (`version_id`), a delete marker (a plain
/// delete in a bucket with versioning), or the object (and a tombstone). Answers
/// [`proto::Deleted`].
async fn delete_object(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: proto::DeleteQuery = query(&req)?;
    let which = match q.version_id.as_deref() {
        Some(id) => Some(version_ref(id)?),
        None => None,
    };
    let store = state.store.clone();
    let (b, k) = (q.bucket.clone(), q.key.clone());
    let deleted = blocking(move || {
        Ok(match which {
            Some(which) => {
                let removed = store.delete_version(&q.bucket, &q.key, &which)?;
                proto::Deleted {
                    version_id: q.version_id,
                    delete_marker: removed.as_ref().is_some_and(|m| m.delete_marker),
                    found: removed.is_some(),
                }
            }
            None if !q.versioning.is_off() => {
                let marker = store.add_delete_marker(&q.bucket, &q.key, q.version, q.versioning)?;
                proto::Deleted {
                    version_id: marker.version_id,
                    delete_marker: true,
                    found: true,
                }
            }
            None => {
                store.delete(&q.bucket, &q.key, q.version, q.tombstone)?;
                proto::Deleted::default()
            }
        })
    })
    .await?;
    state.cold.forget(&b, &k);
    Ok(json_resp(StatusCode::OK, &deleted))
}

async fn retag_object(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: ObjectQuery = query(&req)?;
    let body: proto::RetagRequest = read_json_body(req).await?;
    let store = state.store.clone();
    let meta = blocking(move || store.retag(&q.bucket, &q.key, body.version, body.tags)).await?;
    Ok(json_resp(StatusCode::OK, &meta))
}

async fn list(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: ListQuery = query(&req)?;
    let store = state.store.clone();
    let page = blocking(move || store.list(&q)).await?;
    Ok(json_resp(StatusCode::OK, &page))
}

async fn create_upload(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: UploadQuery = query(&req)?;
    let attrs: ObjectAttrs = header_json(req.headers(), META_HEADER)?;
    let store = state.store.clone();
    let id = blocking(move || store.create_upload(&q.bucket, &q.key, attrs)).await?;
    Ok(json_resp(
        StatusCode::OK,
        &HashMap::from([("upload_id", id)]),
    ))
}

fn upload_id(q: &UploadQuery) -> Result<String, ApiError> {
    q.upload_id
        .clone()
        .ok_or_else(|| bad("upload_id is required"))
}

async fn abort_upload(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: UploadQuery = query(&req)?;
    let id = upload_id(&q)?;
    let store = state.store.clone();
    blocking(move || store.abort(&q.bucket, &q.key, &id)).await?;
    Ok(json_resp(StatusCode::OK, &serde_json::json!({})))
}

async fn put_part(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: UploadQuery = query(&req)?;
    let (id, number) = check_part(state, &q).await?;
    let mp = state.store.mountpath_for(&q.bucket, &q.key);
    let (temp, commit) = receive_body(state, mp, req.into_body()).await?;
    let info = publish_part(state, q, id, number, temp, commit).await?;
    Ok(json_resp(StatusCode::OK, &info))
}

/// The upload id and part number of an UploadPart, once the upload is known to exist.
pub(crate) async fn check_part(state: &State, q: &UploadQuery) -> Result<(String, u32), ApiError> {
    let id = upload_id(q)?;
    let number = q.part.ok_or_else(|| bad("part is required"))?;
    let (s, b, k, i) = (
        state.store.clone(),
        q.bucket.clone(),
        q.key.clone(),
        id.clone(),
    );
    blocking(move || s.upload(&b, &k, &i)).await?;
    Ok((id, number))
}

/// Publish a received, fsynced part.
pub(crate) async fn publish_part(
    state: &State,
    q: UploadQuery,
    id: String,
    number: u32,
    temp: crate::store::TempFile,
    commit: Commit,
) -> Result<proto::PartInfo, ApiError> {
    let store = state.store.clone();
    blocking(move || store.publish_part(&q.bucket, &q.key, &id, number, temp, &commit)).await
}

pub(crate) async fn read_json_body<T: DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    const MAX: usize = 4 * 1024 * 1024;
    let limited = http_body_util::Limited::new(req.into_body(), MAX);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| bad(format!("reading body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| bad(format!("bad JSON body: {e}")))
}

async fn complete(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: UploadQuery = query(&req)?;
    let id = upload_id(&q)?;
    let body: CompleteRequest = read_json_body(req).await?;
    let store = state.store.clone();
    let write = body.write.clone();
    let (b, k) = (q.bucket.clone(), q.key.clone());
    let meta = blocking(move || store.complete(&b, &k, &id, &body)).await?;
    let meta = match crate::cold::spec_of(state, &q.bucket) {
        Some(spec) => crate::cold::complete_through(state, &spec, &q.bucket, &q.key, meta).await?,
        None => meta,
    };
    crate::replica::make_copies(state, &q.bucket, &q.key, &write).await?;
    Ok(json_resp(StatusCode::OK, &meta))
}

async fn list_parts(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: PartsQuery = query(&req)?;
    let store = state.store.clone();
    let page =
        blocking(move || store.list_parts(&q.bucket, &q.key, &q.upload_id, q.marker, q.limit))
            .await?;
    Ok(json_resp(StatusCode::OK, &page))
}

async fn list_uploads(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: UploadsQuery = query(&req)?;
    let store = state.store.clone();
    let ups = blocking(move || store.list_uploads(&q.bucket, &q.prefix)).await?;
    Ok(json_resp(StatusCode::OK, &ups))
}

async fn drop_bucket(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: proto::BucketQuery = query(&req)?;
    let store = state.store.clone();
    blocking(move || store.drop_bucket_uploads(&q.bucket)).await?;
    Ok(json_resp(StatusCode::OK, &serde_json::json!({})))
}

async fn put_meta(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let meta: ClusterMeta = read_json_body(req).await?;
    install_meta(state, meta);
    Ok(json_resp(StatusCode::OK, &serde_json::json!({})))
}

async fn status(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: proto::StatusQuery = query(&req)?;
    let usage = if q.counts {
        let store = state.store.clone();
        blocking(move || store.usage()).await?
    } else {
        Default::default()
    };
    Ok(json_resp(
        StatusCode::OK,
        &TargetStatus {
            id: state.id.clone(),
            objects_per_mountpath: usage.objects_per_mountpath,
            buckets: usage.buckets,
            disks: state
                .store
                .mountpath_dirs()
                .iter()
                .map(|d| {
                    let (total, free) = aisle_cluster::metrics::disk_space(d).unwrap_or((0, 0));
                    proto::DiskSpace { total, free }
                })
                .collect(),
            started_ms: started_ms(),
            mountpaths: state
                .store
                .mountpath_dirs()
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            meta_version: state.meta.read().expect("meta lock").version,
            rebalance: state.rebalance.report(),
            remotes: state.cold.report(state),
        },
    ))
}

/// When this process started, Unix milliseconds.
fn started_ms() -> i64 {
    static STARTED: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *STARTED.get_or_init(aisle_cluster::now_ms)
}
