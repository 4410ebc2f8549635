//! The pooled HTTP client nodes use to call each other, carrying the cluster secret.

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use crate::local::{Connector, LocalPool, LocalReply, LocalRequest, LocalRoutes, PUT_WHOLE_MAX};
use crate::proto::{
    COMMIT_TRAILER, Commit, ObjectAttrs, ObjectMeta, ObjectQuery, PartInfo, ReadOptions,
    UploadQuery, WriteOptions,
};
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::CLUSTER_AUTH_HEADER;
use crate::proto::ErrorBody;

/// Boxed error of a streamed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request body of intra-cluster calls: empty, bytes, or a stream.
pub type ReqBody = UnsyncBoxBody<Bytes, BoxError>;
/// Body of an object read from a target: its HTTP answer, or the files it passed
/// ([`NodeClient::read_local`]).
pub type ReadBody = BoxBody<Bytes, BoxError>;

/// The data of a read body as a stream of bytes with `io::Error`s (the shape S3 bodies take).
pub fn data_stream(
    body: ReadBody,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static {
    http_body_util::BodyDataStream::new(body).map_err(std::io::Error::other)
}

/// An upload body for [`crate::proto::T_OBJECT`]: `data` as it comes, hashed on the way, then
/// the commit trailer with its size and MD5 (the new object's ETag). An error in `data` ends
/// the body without a trailer, so the receiving target publishes nothing.
fn committed_body(
    data: impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
) -> ReqBody {
    use futures::StreamExt;
    use md5::Digest;
    use std::sync::{Arc, Mutex};
    let hash = Arc::new(Mutex::new((md5::Md5::new(), 0u64)));
    let seen = hash.clone();
    let frames = data
        .map_ok(move |chunk| {
            let mut h = seen.lock().expect("hash lock");
            h.0.update(&chunk);
            h.1 += chunk.len() as u64;
            Frame::data(chunk)
        })
        .map_err(|e| Box::new(e) as BoxError)
        .chain(futures::stream::once(async move {
            let (md5, size) = std::mem::take(&mut *hash.lock().expect("hash lock"));
            let commit = Commit {
                size,
                md5: hex::encode(md5.finalize()),
                checksums: Default::default(),
            };
            let mut trailers = http::HeaderMap::new();
            trailers.insert(COMMIT_TRAILER, crate::proto::encode_header(&commit));
            Ok::<_, BoxError>(Frame::trailers(trailers))
        }));
    BodyExt::boxed_unsync(StreamBody::new(frames))
}

/// Failure of an intra-cluster call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The peer could not be reached or the exchange broke.
    #[error("calling {url}: {source}")]
    Transport {
        /// What was called.
        url: String,
        /// Why it failed.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The peer answered with an error.
    #[error("{url} answered {status}: {} ({})", body.code, body.message)]
    Status {
        /// What was called.
        url: String,
        /// HTTP status.
        status: StatusCode,
        /// Its error body.
        body: ErrorBody,
    },
    /// The peer is marked down (or went down while the call waited).
    #[error("{url} is down")]
    Down {
        /// What was called.
        url: String,
    },
    /// The answer body could not be read or parsed.
    #[error("reading the answer of {url}: {message}")]
    Body {
        /// What was called.
        url: String,
        /// Detail.
        message: String,
    },
}

/// Pooled client for calls between nodes.
#[derive(Clone)]
pub struct NodeClient {
    http: Client<Connector, ReqBody>,
    routes: LocalRoutes,
    local: LocalPool,
    secret: HeaderValue,
}

/// An empty request body.
pub fn empty() -> ReqBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// A request body from bytes.
pub fn full(b: impl Into<Bytes>) -> ReqBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

impl NodeClient {
    /// A client that authenticates with `secret` (plain HTTP peers only).
    pub fn new(secret: &str) -> Self {
        Self::with_tls(secret, None)
    }

    /// A client that authenticates with `secret` and reaches `https://` peers with `tls`
    /// ([`crate::tls::client_config`]: trusting the cluster's CA).
    pub fn with_tls(secret: &str, tls: Option<std::sync::Arc<rustls::ClientConfig>>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let routes = LocalRoutes::default();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(Connector::new(connector, routes.clone(), tls));
        Self {
            http,
            routes,
            local: LocalPool::default(),
            secret: HeaderValue::from_str(secret).expect("cluster secret is a valid header value"),
        }
    }

    /// Write a new object on the target at `base_url` from a node that computes it (a target
    /// writing a transform's output or a shard): `data` streamed with its MD5 commit, `write`
    /// the stamp and copies the gateway planned. Answered once the object and its copies are
    /// published.
    pub async fn put_object(
        &self,
        base_url: &str,
        q: &ObjectQuery,
        attrs: &ObjectAttrs,
        write: &crate::proto::WriteOptions,
        data: impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    ) -> Result<ObjectMeta, ClientError> {
        use crate::proto::{META_HEADER, T_OBJECT, WRITE_HEADER, encode_header, path_and_query};
        let url = format!("{base_url}{}", path_and_query(T_OBJECT, q));
        let req = request(Method::PUT, &url)
            .header(http::header::TRAILER, COMMIT_TRAILER)
            .header(http::header::CONTENT_TYPE, "application/octet-stream")
            .header(META_HEADER, encode_header(attrs))
            .header(WRITE_HEADER, encode_header(write))
            .body(committed_body(data))
            .expect("valid request parts");
        let resp = self.send_ok(req).await?;
        read_json(&url, resp).await
    }

    /// The same-host routes this client (and its clones) connect through; see [`crate::local`].
    pub fn routes(&self) -> &LocalRoutes {
        &self.routes
    }

    /// The descriptor socket of the target at `base_url` when it is on this host, and the
    /// secret every call on it carries.
    fn fd_socket(&self, base_url: &str) -> Option<(std::path::PathBuf, String)> {
        let socket = self.routes.fd_socket(base_url)?;
        Some((socket, self.secret.to_str().ok()?.to_string()))
    }

    /// The change table ([`crate::changes`]) of the target at `base_url`, when it is on this
    /// host. `None`: it is not.
    pub async fn changes_local(
        &self,
        base_url: &str,
    ) -> Option<std::io::Result<crate::changes::ChangeView>> {
        let (socket, secret) = self.fd_socket(base_url)?;
        Some(self.local.changes(&socket, secret).await)
    }

    /// A plain GET or HEAD of an object from the target at `base_url` through its descriptor
    /// socket, when it is on this host ([`crate::local`]). `None`: not possible here (no route,
    /// the target declined, or the exchange failed); the caller asks over HTTP instead.
    pub async fn read_local(
        &self,
        base_url: &str,
        query: &ObjectQuery,
        opts: &ReadOptions,
        head: bool,
    ) -> Option<Response<ReadBody>> {
        let (socket, secret) = self.fd_socket(base_url)?;
        let req = LocalRequest::Read {
            secret,
            query: query.clone(),
            opts: opts.clone(),
            head,
            inline: true,
            trace: crate::trace::current().map(|t| t.to_string()),
        };
        let (mut reply, spans) = match self.local.read(&socket, &req).await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(socket = %socket.display(), error = %e, "local read failed; using HTTP");
                return None;
            }
        };
        let mut b = Response::builder().status(reply.status);
        for (k, v) in &reply.headers {
            b = b.header(k, v);
        }
        let whole = |b: Bytes| Full::new(b).map_err(|e| match e {}).boxed();
        if reply.stable && reply.inline > 0 {
            b = b.extension(crate::local::Stable(reply.data.clone()));
        }
        let body = if reply.inline > 0 {
            whole(std::mem::take(&mut reply.data))
        } else if spans.is_empty() {
            whole(Bytes::from(reply.body))
        } else {
            match crate::files::body(spans) {
                Ok(crate::files::Body::Whole(bytes)) => whole(bytes),
                Ok(crate::files::Body::Stream(s)) => {
                    StreamBody::new(s.map_ok(Frame::data).map_err(|e| Box::new(e) as BoxError))
                        .boxed()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a passed descriptor failed; using HTTP");
                    return None;
                }
            }
        };
        b.body(body).ok()
    }

    /// A PutObject to the target at `base_url` through its descriptor socket, when it is on
    /// this host ([`crate::local`]): a body that ends within [`PUT_WHOLE_MAX`] bytes goes in
    /// the request itself, published in one exchange; a larger one is written into a file the
    /// target stages, and then committed. `body` is an upload body ending with the
    /// [`COMMIT_TRAILER`]. `Err(body)`: not possible here (the body, as far as it was read,
    /// is handed back whole); send it over HTTP.
    pub async fn put_local(
        &self,
        base_url: &str,
        query: &ObjectQuery,
        attrs: &ObjectAttrs,
        opts: &WriteOptions,
        body: ReqBody,
    ) -> Result<Result<ObjectMeta, ClientError>, ReqBody> {
        let Some((socket, secret)) = self.fd_socket(base_url) else {
            return Err(body);
        };
        let url = format!("{} (local write)", socket.display());
        let fail = |message: String| ClientError::Body {
            url: url.clone(),
            message,
        };
        let (head, rest) = match read_head(body, PUT_WHOLE_MAX).await {
            Ok(read) => read,
            Err(message) => return Ok(Err(fail(message))),
        };
        if rest.is_none() && head.commit.is_none() {
            return Ok(Err(fail("upload ended without a commit".into())));
        }
        let req = LocalRequest::Put {
            secret,
            query: query.clone(),
            attrs: attrs.clone(),
            opts: opts.clone(),
            whole: rest.is_none().then(|| head.commit.clone()).flatten(),
            trace: crate::trace::current().map(|t| t.to_string()),
        };
        let Some(rest) = rest else {
            return match self.local.put_whole(&socket, &req, &head.data()).await {
                Ok(reply) if reply.status == 200 => {
                    Ok(serde_json::from_str(&reply.body).map_err(|e| fail(e.to_string())))
                }
                Ok(reply) if reply.status != 0 => Ok(Err(reply_error(url, reply))),
                Ok(_) => Err(head.replay(None)),
                Err(e) => {
                    tracing::debug!(socket = %socket.display(), error = %e, "local put failed; using HTTP");
                    Err(head.replay(None))
                }
            };
        };
        self.stage_fill_commit(socket, req, head, rest).await
    }

    /// An UploadPart through a same-host target's descriptor socket; as [`Self::put_local`],
    /// always through a staged file.
    pub async fn put_part_local(
        &self,
        base_url: &str,
        query: &UploadQuery,
        body: ReqBody,
    ) -> Result<Result<PartInfo, ClientError>, ReqBody> {
        let Some((socket, secret)) = self.fd_socket(base_url) else {
            return Err(body);
        };
        let req = LocalRequest::Part {
            secret,
            query: query.clone(),
            trace: crate::trace::current().map(|t| t.to_string()),
        };
        self.stage_fill_commit(socket, req, Head::default(), body)
            .await
    }

    /// Stage on `socket` with `req`, fill the staged file with `head` and then `body`, commit,
    /// and parse the answer. `Err(body)`: staging was not possible; the body is handed back
    /// whole.
    async fn stage_fill_commit<T: DeserializeOwned>(
        &self,
        socket: std::path::PathBuf,
        req: LocalRequest,
        head: Head,
        body: ReqBody,
    ) -> Result<Result<T, ClientError>, ReqBody> {
        let url = format!("{} (staged write)", socket.display());
        let (staged, file) = match self.local.stage(&socket, &req).await {
            Ok(Ok(staged)) => staged,
            Ok(Err(reply)) if reply.status != 0 => return Ok(Err(reply_error(url, reply))),
            Ok(Err(_)) => return Err(head.replay(Some(body))),
            Err(e) => {
                tracing::debug!(socket = %socket.display(), error = %e, "local put failed; using HTTP");
                return Err(head.replay(Some(body)));
            }
        };
        Ok(self.fill_and_commit(url, staged, file, head, body).await)
    }

    async fn fill_and_commit<T: DeserializeOwned>(
        &self,
        url: String,
        staged: crate::local::StagedPut,
        file: std::fs::File,
        head: Head,
        mut body: ReqBody,
    ) -> Result<T, ClientError> {
        let fail = |message: String| ClientError::Body {
            url: url.clone(),
            message,
        };
        let mut out = crate::files::BatchWriter::new(std::sync::Arc::new(file));
        let mut commit = head.commit;
        for data in head.frames.into_iter().filter_map(|f| f.into_data().ok()) {
            out.push(data).await.map_err(|e| fail(e.to_string()))?;
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| fail(format!("upload aborted: {e}")))?;
            commit = commit.or_else(|| commit_in(&frame));
            if let Ok(data) = frame.into_data() {
                out.push(data).await.map_err(|e| fail(e.to_string()))?;
            }
        }
        out.finish(false).await.map_err(|e| fail(e.to_string()))?;
        let commit = commit.ok_or_else(|| fail("upload ended without a commit".into()))?;
        let reply = self
            .local
            .commit(staged, commit)
            .await
            .map_err(|e| fail(e.to_string()))?;
        if reply.status == 200 {
            serde_json::from_str(&reply.body).map_err(|e| fail(e.to_string()))
        } else {
            Err(reply_error(url, reply))
        }
    }

    /// Send a request (the cluster secret is added) and return the raw response.
    pub async fn send(&self, mut req: Request<ReqBody>) -> Result<Response<Incoming>, ClientError> {
        let url = req.uri().to_string();
        req.headers_mut()
            .insert(CLUSTER_AUTH_HEADER, self.secret.clone());
        if let Some(id) = crate::trace::current()
            && let Ok(v) = http::HeaderValue::from_str(&id)
        {
            req.headers_mut().insert(crate::trace::REQUEST_ID_HEADER, v);
        }
        self.http
            .request(req)
            .await
            .map_err(|source| ClientError::Transport { url, source })
    }

    /// Send and fail on any non-2xx status, turning its body into [`ClientError::Status`].
    pub async fn send_ok(&self, req: Request<ReqBody>) -> Result<Response<Incoming>, ClientError> {
        let url = req.uri().to_string();
        let resp = self.send(req).await?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(status_error(url, resp).await)
        }
    }

    /// Call with a JSON body (or none) and parse a JSON answer.
    pub async fn json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body = match body {
            Some(b) => full(serde_json::to_vec(b).expect("protocol types always serialize")),
            None => empty(),
        };
        let req = Request::builder()
            .method(method)
            .uri(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .expect("valid request parts");
        let resp = self.send_ok(req).await?;
        read_json(url, resp).await
    }
}

/// The first frames of an upload body, read before deciding how to send it.
#[derive(Default)]
struct Head {
    frames: Vec<Frame<Bytes>>,
    /// The [`COMMIT_TRAILER`], if the body ended within the frames read.
    commit: Option<Commit>,
}

impl Head {
    /// The data read, in one piece.
    fn data(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for f in &self.frames {
            if let Some(d) = f.data_ref() {
                out.extend_from_slice(d);
            }
        }
        out
    }

    /// The body as it was before any of it was read: these frames, then `rest`.
    fn replay(self, rest: Option<ReqBody>) -> ReqBody {
        let head = futures::stream::iter(self.frames.into_iter().map(Ok::<_, BoxError>));
        match rest {
            Some(rest) => StreamBody::new(futures::StreamExt::chain(
                head,
                http_body_util::BodyStream::new(rest),
            ))
            .boxed_unsync(),
            None => StreamBody::new(head).boxed_unsync(),
        }
    }
}

/// The commit a trailers frame carries, if any.
fn commit_in(frame: &Frame<Bytes>) -> Option<Commit> {
    let v = frame.trailers_ref()?.get(COMMIT_TRAILER)?;
    crate::proto::decode_header(v.as_bytes()).ok()
}

/// Read `body` until it ends or more than `max` bytes of it came: the frames read, and the
/// rest of the body if it did not end. `Err`: the upload failed (its verification, say).
async fn read_head(mut body: ReqBody, max: usize) -> Result<(Head, Option<ReqBody>), String> {
    let mut head = Head::default();
    let mut len = 0usize;
    while len <= max {
        let Some(frame) = body.frame().await else {
            return Ok((head, None));
        };
        let frame = frame.map_err(|e| format!("upload aborted: {e}"))?;
        match frame.data_ref() {
            Some(d) => len += d.len(),
            None => head.commit = head.commit.take().or_else(|| commit_in(&frame)),
        }
        head.frames.push(frame);
    }
    Ok((head, Some(body)))
}

/// A target's error answer on its descriptor socket as [`ClientError::Status`].
fn reply_error(url: String, reply: LocalReply) -> ClientError {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::from_str(&reply.body).unwrap_or_else(|_| ErrorBody {
        delete_marker: None,
        code: "InternalError".into(),
        message: reply.body.clone(),
    });
    ClientError::Status { url, status, body }
}

/// Read a whole (small, protocol) JSON answer.
pub async fn read_json<T: DeserializeOwned>(
    url: &str,
    resp: Response<Incoming>,
) -> Result<T, ClientError> {
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Body {
            url: url.to_string(),
            message: e.to_string(),
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Body {
        url: url.to_string(),
        message: e.to_string(),
    })
}

/// Turn a non-2xx answer into [`ClientError::Status`].
pub async fn status_error<B: hyper::body::Body>(url: String, resp: Response<B>) -> ClientError {
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
        delete_marker: None,
        code: if status.is_server_error() {
            "InternalError".into()
        } else {
            "InvalidRequest".into()
        },
        message: String::from_utf8_lossy(&bytes).into_owned(),
    });
    ClientError::Status { url, status, body }
}

/// Request builder with the method and URL set.
pub fn request(method: Method, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}
