//! Same-host shortcut for intra-cluster calls: a target also listens on a Unix socket, and a
//! node on the same host reaches it there instead of through loopback TCP.
//!
//! Loopback TCP runs the whole TCP/IP stack twice per message (send and receive softirq); a
//! Unix stream socket skips it. On `aisle up` (gateway and targets on one machine) every request
//! crosses this hop, so it is where small GETs spend much of their time.
//!
//! Nothing else changes: URLs stay `http://host:port`, and [`Connector`] picks the socket for
//! an authority that has a local route. A route is taken only when the target's
//! [`LocalSocket::host`] equals this host's [`host_id`]; if the socket cannot be connected the
//! call goes over TCP as before.
//!
//! Object bytes go one step further: a target also listens on a second socket where it passes
//! open file descriptors (`SCM_RIGHTS`) instead of bytes ([`LocalRequest`], [`LocalPool`]).
//! A plain GET or HEAD is answered with the status, the headers and the descriptors of the data
//! files, and the gateway reads them itself; a PutObject is answered with the descriptor of a
//! staged file, which the gateway fills with the verified body and then commits. Either way the
//! object's bytes cross no socket between the nodes, and the target keeps every decision: it
//! resolves the key, conditions, range and part, opens the files (so an overwrite cannot pull
//! them away mid-read), checks the staged size, fsyncs and publishes.
//!
//! A read the target answers from memory is the exception: a small object, which it reads
//! whole for its integrity check anyway, comes back in the reply, after the JSON, instead of
//! as a descriptor the gateway would read again and close.
//!
//! Not for: reaching targets on other machines (they have no route and use TCP).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, RwLock};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpStream, UnixStream};

use crate::client::BoxError;
use crate::files::Span;
use crate::map::TargetInfo;
use crate::proto::{Commit, ObjectAttrs, ObjectQuery, ReadOptions, UploadQuery, WriteOptions};

/// A target's Unix socket, advertised next to its URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalSocket {
    /// [`host_id`] of the machine the socket lives on.
    pub host: String,
    /// Path of the socket (HTTP, the whole intra-cluster API).
    pub path: PathBuf,
    /// Path of the descriptor-passing socket ([`LocalRequest`]), if served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fds: Option<PathBuf>,
}

/// This machine's identity for [`LocalSocket::host`]: its host name, the kernel's boot id and
/// the network namespace, so that two machines (or two containers with their own file systems
/// and host names) never take each other's sockets for their own, and nodes that are separate
/// hosts on the network (their own network namespaces) talk over the network.
pub fn host_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let netns = std::fs::read_link("/proc/self/ns/net")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!(
            "{}/{}/{netns}",
            read("/proc/sys/kernel/hostname"),
            read("/proc/sys/kernel/random/boot_id")
        )
    })
}

/// Routes from URL authorities (`host:port`) to Unix sockets on this host.
#[derive(Clone, Default)]
pub struct LocalRoutes(Arc<RwLock<HashMap<String, LocalSocket>>>);

impl LocalRoutes {
    /// Replace the routes by those of `targets` that live on this host.
    pub fn set<'a>(&self, targets: impl IntoIterator<Item = &'a TargetInfo>) {
        let routes = targets
            .into_iter()
            .filter_map(|t| {
                let local = t.local.as_ref().filter(|l| l.host == host_id())?;
                let authority = t.url.parse::<Uri>().ok()?.authority()?.to_string();
                Some((authority, local.clone()))
            })
            .collect();
        *self.0.write().expect("routes lock") = routes;
    }

    fn get(&self, uri: &Uri) -> Option<LocalSocket> {
        let authority = uri.authority()?.as_str();
        self.0.read().expect("routes lock").get(authority).cloned()
    }

    /// The descriptor-passing socket of the target at `url`, when it is on this host.
    pub fn fd_socket(&self, url: &str) -> Option<PathBuf> {
        self.get(&url.parse().ok()?)?.fds
    }
}

/// Connects over a Unix socket where [`LocalRoutes`] has one, else over TCP.
#[derive(Clone)]
pub struct Connector {
    tcp: HttpConnector,
    routes: LocalRoutes,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl Connector {
    /// A connector that consults `routes` on every new connection; `https://` URLs are
    /// reached over TLS with `tls` (none: they are refused).
    pub fn new(
        mut tcp: HttpConnector,
        routes: LocalRoutes,
        tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    ) -> Self {
        tcp.enforce_http(false);
        Self {
            tcp,
            routes,
            tls: tls.map(tokio_rustls::TlsConnector::from),
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let local = self.routes.get(&uri).map(|l| l.path);
        let mut tcp = self.tcp.clone();
        let tls = self.tls.clone();
        Box::pin(async move {
            if let Some(path) = local {
                match UnixStream::connect(&path).await {
                    Ok(s) => return Ok(Conn::Unix(TokioIo::new(s))),
                    Err(e) => tracing::debug!(
                        path = %path.display(), error = %e,
                        "local socket unreachable, using TCP"
                    ),
                }
            }
            if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
                let tls = tls.ok_or("an https:// peer, but this node has no TLS CA configured")?;
                let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
                let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
                let stream = tcp.call(uri).await?.into_inner();
                let stream = tls.connect(name, stream).await?;
                return Ok(Conn::Tls(Box::new(TokioIo::new(stream))));
            }
            Ok(Conn::Tcp(tcp.call(uri).await?))
        })
    }
}

/// A connection made by [`Connector`].
pub enum Conn {
    /// Over TCP.
    Tcp(TokioIo<TcpStream>),
    /// Over a Unix socket on this host.
    Unix(TokioIo<UnixStream>),
    /// Over TLS on TCP (boxed: a TLS session is large, and rarer than the others).
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        match self {
            Conn::Tcp(s) => s.connected(),
            Conn::Unix(_) | Conn::Tls(_) => Connected::new(),
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Conn::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
            Conn::Tls($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Unix(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }
}

/// Most descriptors one answer passes (a span over more files is served over HTTP).
pub const MAX_FDS: usize = 64;

/// Largest frame of the descriptor-passing protocol.
const MAX_FRAME: usize = 1 << 20;

/// A call on a target's descriptor socket. Every call carries the cluster secret.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum LocalRequest {
    /// A plain GET or HEAD: answered with status, headers and the descriptors of the span.
    Read {
        /// The cluster secret.
        secret: String,
        /// Which object (and part).
        query: ObjectQuery,
        /// Range and conditions (no transform, no shard selection).
        opts: ReadOptions,
        /// HEAD: no descriptors.
        head: bool,
        /// The caller takes a body the target holds in memory inline ([`LocalReply::data`]).
        #[serde(default)]
        inline: bool,
        /// The request id ([`crate::trace`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<String>,
    },
    /// A PutObject: answered (status 100) with the descriptor of a staged file, which the
    /// caller fills and then commits with [`LocalRequest::Commit`] on the same connection.
    /// Closing the connection before that discards the staged file. With `whole`, the body
    /// (at most [`PUT_WHOLE_MAX`] bytes, verified) follows the JSON in the same frame and the
    /// put is published at once: one exchange instead of two.
    Put {
        /// The cluster secret.
        secret: String,
        /// Which object.
        query: ObjectQuery,
        /// Its attributes.
        attrs: ObjectAttrs,
        /// Write conditions.
        opts: WriteOptions,
        /// The commit of a body sent in this frame.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        whole: Option<Commit>,
        /// The request id ([`crate::trace`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<String>,
    },
    /// An UploadPart: like [`LocalRequest::Put`], for part `query.part` of upload
    /// `query.upload_id`; the commit answers the [`crate::proto::PartInfo`].
    Part {
        /// The cluster secret.
        secret: String,
        /// Which upload and part.
        query: UploadQuery,
        /// The request id ([`crate::trace`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        trace: Option<String>,
    },
    /// The body of the staged put or part is complete and verified: publish it (status 200,
    /// the [`crate::proto::ObjectMeta`] or [`crate::proto::PartInfo`] as JSON body).
    Commit(Commit),
    /// The target's change table ([`crate::changes`]): answered (status 200) with its
    /// descriptor.
    Changes {
        /// The cluster secret.
        secret: String,
    },
}

/// A response extension of [`crate::client::NodeClient::read_local`]: the target marked its
/// answer [`LocalReply::stable`]; the whole body, which a cache may keep.
#[derive(Debug, Clone)]
pub struct Stable(pub bytes::Bytes);

/// Largest body a [`LocalRequest::Put`] carries in its own frame (`whole`).
pub const PUT_WHOLE_MAX: usize = 64 * 1024;

impl LocalRequest {
    /// The frame: the JSON, then `data` (a whole put's body).
    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        let mut msg = serde_json::to_vec(self).expect("protocol types serialize");
        msg.extend_from_slice(data);
        msg
    }

    /// A request and the bytes after its JSON ([`LocalRequest::encode`]).
    pub fn decode(frame: &[u8]) -> Result<(LocalRequest, &[u8]), serde_json::Error> {
        let mut it = serde_json::Deserializer::from_slice(frame).into_iter::<LocalRequest>();
        let req = it.next().unwrap_or_else(|| {
            // An empty frame: let serde say so.
            serde_json::from_slice::<LocalRequest>(frame)
        })?;
        Ok((req, &frame[it.byte_offset()..]))
    }
}

/// A target's answer: what an HTTP answer would say, with descriptors for the body.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LocalReply {
    /// HTTP status; 0 means "not served this way, ask over HTTP"; 100: fill the passed file.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Inline body (an error's JSON, or a commit's metadata).
    pub body: String,
    /// `[from, to)` of each passed descriptor, in order: the body is their concatenation.
    pub spans: Vec<(u64, u64)>,
    /// Bytes of the body sent inline: they follow the JSON in the same frame.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub inline: u64,
    /// The inline body ([`LocalReply::inline`] bytes).
    #[serde(skip)]
    pub data: bytes::Bytes,
    /// A read's answer that depends on the target's index alone (a plain read of a bucket
    /// with no remote behind it): it stays right while the target's change table
    /// ([`crate::changes`]) shows no change of its key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stable: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl LocalReply {
    /// The frame: the JSON, then the inline body.
    pub fn encode(&self) -> Vec<u8> {
        let mut msg = serde_json::to_vec(self).expect("protocol types serialize");
        msg.extend_from_slice(&self.data);
        msg
    }

    /// A reply from its frame ([`LocalReply::encode`]).
    pub fn decode(frame: Vec<u8>) -> io::Result<LocalReply> {
        let mut it = serde_json::Deserializer::from_slice(&frame).into_iter::<LocalReply>();
        let mut reply = match it.next() {
            Some(r) => r.map_err(io::Error::other)?,
            None => return Err(io::ErrorKind::UnexpectedEof.into()),
        };
        let end = it.byte_offset();
        if (frame.len() - end) as u64 != reply.inline {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "inline body length does not match the reply",
            ));
        }
        let mut frame = frame;
        reply.data = bytes::Bytes::from(frame.split_off(end));
        Ok(reply)
    }
}

/// Write one frame (length, then `msg`) with `fds` attached to its first byte.
pub async fn send_frame(s: &UnixStream, msg: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let len = (msg.len() as u32).to_le_bytes();
    let total = 4 + msg.len();
    let mut sent = 0usize;
    while sent < total {
        s.writable().await?;
        let r = s.try_io(tokio::io::Interest::WRITABLE, || {
            let (a, b) = if sent < 4 {
                (&len[sent..], msg)
            } else {
                (&[][..], &msg[sent - 4..])
            };
            let iov = [io::IoSlice::new(a), io::IoSlice::new(b)];
            let rights = [ControlMessage::ScmRights(fds)];
            let cmsgs: &[ControlMessage] = if sent == 0 && !fds.is_empty() {
                &rights
            } else {
                &[]
            };
            sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
                .map_err(io::Error::from)
        });
        match r {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Read one frame and the descriptors that came with it; `None` on a clean end of stream.
pub async fn recv_frame(s: &UnixStream) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut buf: Vec<u8> = Vec::new();
    let mut fds = Vec::new();
    loop {
        // Read into the frame's own buffer: up to the rest of the frame once its length is
        // known (never into the next one), 8 KiB before.
        let have = buf.len();
        let room = if have >= 4 {
            4 + u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize - have
        } else {
            8 * 1024
        };
        buf.resize(have + room, 0);
        s.readable().await?;
        let r = s.try_io(tokio::io::Interest::READABLE, || {
            let mut iov = [io::IoSliceMut::new(&mut buf[have..])];
            let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
            let msg = recvmsg::<()>(
                s.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .map_err(io::Error::from)?;
            let mut got = Vec::new();
            for c in msg.cmsgs().map_err(io::Error::from)? {
                if let ControlMessageOwned::ScmRights(v) = c {
                    got.extend(v);
                }
            }
            Ok((msg.bytes, got))
        });
        let (n, got) = match r {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                buf.truncate(have);
                continue;
            }
            Err(e) => return Err(e),
        };
        buf.truncate(have + n);
        // SAFETY: the kernel just installed these descriptors in this process for us; nothing
        // else owns them.
        fds.extend(
            got.into_iter()
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
        );
        if n == 0 {
            return if buf.is_empty() && fds.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        if buf.len() >= 4 {
            let want = 4 + u32::from_le_bytes(buf[..4].try_into().expect("4 bytes")) as usize;
            if want > MAX_FRAME || buf.len() > want {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "bad frame"));
            }
            if buf.len() == want {
                buf.drain(..4);
                return Ok(Some((buf, fds)));
            }
        }
    }
}

/// The gateway's side of descriptor passing: pooled connections per target socket.
#[derive(Clone, Default)]
pub struct LocalPool {
    idle: Arc<std::sync::Mutex<HashMap<PathBuf, Vec<UnixStream>>>>,
}

/// A put staged on a target (the connection it waits on): fill the file [`LocalPool::stage`]
/// gave, then [`LocalPool::commit`].
pub struct StagedPut {
    socket: PathBuf,
    stream: UnixStream,
}

impl LocalPool {
    async fn checkout(&self, socket: &Path) -> io::Result<UnixStream> {
        let pooled = self
            .idle
            .lock()
            .expect("pool lock")
            .get_mut(socket)
            .and_then(Vec::pop);
        match pooled {
            Some(s) => Ok(s),
            None => UnixStream::connect(socket).await,
        }
    }

    fn checkin(&self, socket: &Path, stream: UnixStream) {
        let mut idle = self.idle.lock().expect("pool lock");
        let v = idle.entry(socket.to_path_buf()).or_default();
        if v.len() < 256 {
            v.push(stream);
        }
    }

    /// One call and its answer; the connection goes back to the pool after a whole exchange.
    async fn call(
        &self,
        stream: UnixStream,
        req: &LocalRequest,
    ) -> io::Result<(LocalReply, Vec<OwnedFd>, UnixStream)> {
        self.call_with(stream, req, &[]).await
    }

    /// [`Self::call`] with `data` after the request's JSON.
    async fn call_with(
        &self,
        stream: UnixStream,
        req: &LocalRequest,
        data: &[u8],
    ) -> io::Result<(LocalReply, Vec<OwnedFd>, UnixStream)> {
        send_frame(&stream, &req.encode(data), &[]).await?;
        let (frame, fds) = recv_frame(&stream)
            .await?
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        let reply = LocalReply::decode(frame)?;
        Ok((reply, fds, stream))
    }

    /// Ask the target at `socket` for a plain read ([`LocalRequest::Read`]). `Ok(None)`: the
    /// target wants it over HTTP.
    pub async fn read(
        &self,
        socket: &Path,
        req: &LocalRequest,
    ) -> io::Result<Option<(LocalReply, Vec<Span>)>> {
        let stream = self.checkout(socket).await?;
        let (reply, fds, stream) = self.call(stream, req).await?;
        if fds.len() != reply.spans.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "descriptor count does not match the spans",
            ));
        }
        self.checkin(socket, stream);
        if reply.status == 0 {
            return Ok(None);
        }
        let spans = fds
            .into_iter()
            .zip(&reply.spans)
            .map(|(fd, &(from, to))| Span {
                file: std::fs::File::from(fd),
                from,
                to,
            })
            .collect();
        Ok(Some((reply, spans)))
    }

    /// Stage a put ([`LocalRequest::Put`]). `Err(reply)`: the target refused (an error status
    /// to pass on, or status 0: use HTTP).
    pub async fn stage(
        &self,
        socket: &Path,
        req: &LocalRequest,
    ) -> io::Result<Result<(StagedPut, std::fs::File), LocalReply>> {
        let stream = self.checkout(socket).await?;
        let (reply, mut fds, stream) = self.call(stream, req).await?;
        if reply.status != 100 {
            self.checkin(socket, stream);
            return Ok(Err(reply));
        }
        match (fds.pop(), fds.is_empty()) {
            (Some(fd), true) => {
                let staged = StagedPut {
                    socket: socket.to_path_buf(),
                    stream,
                };
                Ok(Ok((staged, std::fs::File::from(fd))))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a staged put comes with exactly one descriptor",
            )),
        }
    }

    /// A put with its whole body in the request ([`LocalRequest::Put`] with `whole`):
    /// published in one exchange. Status 0: the target wants it over HTTP.
    pub async fn put_whole(
        &self,
        socket: &Path,
        req: &LocalRequest,
        body: &[u8],
    ) -> io::Result<LocalReply> {
        let stream = self.checkout(socket).await?;
        let (reply, _, stream) = self.call_with(stream, req, body).await?;
        self.checkin(socket, stream);
        Ok(reply)
    }

    /// The change table of the target at `socket` ([`LocalRequest::Changes`]).
    pub async fn changes(
        &self,
        socket: &Path,
        secret: String,
    ) -> io::Result<crate::changes::ChangeView> {
        let stream = self.checkout(socket).await?;
        let (reply, mut fds, stream) = self.call(stream, &LocalRequest::Changes { secret }).await?;
        self.checkin(socket, stream);
        match (reply.status, fds.pop(), fds.is_empty()) {
            (200, Some(fd), true) => crate::changes::ChangeView::from_fd(fd),
            (status, ..) => Err(io::Error::other(format!(
                "the target did not pass its change table (status {status}: {})",
                reply.body
            ))),
        }
    }

    /// Publish a filled staged put ([`LocalRequest::Commit`]).
    pub async fn commit(&self, staged: StagedPut, commit: Commit) -> io::Result<LocalReply> {
        let StagedPut { socket, stream } = staged;
        let (reply, _, stream) = self.call(stream, &LocalRequest::Commit(commit)).await?;
        self.checkin(&socket, stream);
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[tokio::test]
    async fn frames_carry_descriptors_and_survive_any_size() {
        let (a, b) = UnixStream::pair().unwrap();
        let dir = std::env::temp_dir().join(format!("aisle-local-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = Vec::new();
        for i in 0..3u8 {
            let p = dir.join(format!("f{i}"));
            std::fs::File::create(&p)
                .unwrap()
                .write_all(&[i; 10])
                .unwrap();
            files.push(std::fs::File::open(&p).unwrap());
        }
        let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let big = vec![b'x'; 300_000]; // more than one read's worth
        let (sent, got) = tokio::join!(send_frame(&a, &big, &fds), recv_frame(&b));
        sent.unwrap();
        let (frame, passed) = got.unwrap().unwrap();
        assert_eq!(frame, big);
        assert_eq!(passed.len(), 3);
        for (i, fd) in passed.into_iter().enumerate() {
            let mut f = std::fs::File::from(fd);
            f.rewind().unwrap();
            let mut s = Vec::new();
            f.read_to_end(&mut s).unwrap();
            assert_eq!(s, vec![i as u8; 10]);
        }
        // A frame without descriptors, then a clean end of stream.
        send_frame(&a, b"{}", &[]).await.unwrap();
        let (frame, passed) = recv_frame(&b).await.unwrap().unwrap();
        assert_eq!((frame.as_slice(), passed.len()), (&b"{}"[..], 0));
        drop(a);
        assert!(recv_frame(&b).await.unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn routes_only_for_targets_on_this_host() {
        let routes = LocalRoutes::default();
        let here = TargetInfo {
            id: "t1".into(),
            url: "http://127.0.0.1:4000".into(),
            local: Some(LocalSocket {
                host: host_id().into(),
                path: "/x/target.sock".into(),
                fds: Some("/x/target-fd.sock".into()),
            }),
            ..TargetInfo::new("t1", "")
        };
        let elsewhere = TargetInfo {
            id: "t2".into(),
            url: "http://127.0.0.1:4001".into(),
            local: Some(LocalSocket {
                host: "another-host/boot".into(),
                path: "/y/target.sock".into(),
                fds: Some("/y/target-fd.sock".into()),
            }),
            ..TargetInfo::new("t2", "")
        };
        routes.set([&here, &elsewhere]);
        assert_eq!(
            routes.fd_socket("http://127.0.0.1:4000"),
            Some(PathBuf::from("/x/target-fd.sock"))
        );
        assert_eq!(routes.fd_socket("http://127.0.0.1:4001"), None);
    }

    #[test]
    fn a_whole_put_carries_its_body_after_the_json_and_other_requests_none() {
        let commit = Commit {
            size: 5,
            md5: "00".into(),
            checksums: Default::default(),
        };
        let req = LocalRequest::Put {
            secret: "s".into(),
            query: ObjectQuery::default(),
            attrs: ObjectAttrs::default(),
            opts: WriteOptions::default(),
            whole: Some(commit.clone()),
            trace: None,
        };
        let frame = req.encode(b"hello");
        let (back, data) = LocalRequest::decode(&frame).unwrap();
        assert_eq!(data, b"hello");
        assert!(matches!(back, LocalRequest::Put { whole: Some(c), .. } if c == commit));
        let frame = LocalRequest::Commit(commit).encode(&[]);
        let (back, data) = LocalRequest::decode(&frame).unwrap();
        assert!(data.is_empty());
        assert!(matches!(back, LocalRequest::Commit(_)));
        assert!(LocalRequest::decode(b"").is_err());
        assert!(LocalRequest::decode(b"{\"op\":\"nope\"}").is_err());
    }

    #[test]
    fn a_reply_carries_its_inline_body_after_the_json() {
        let reply = LocalReply {
            status: 200,
            headers: vec![("content-length".into(), "5".into())],
            inline: 5,
            data: bytes::Bytes::from_static(b"{\"x\"}"),
            ..Default::default()
        };
        let back = LocalReply::decode(reply.encode()).unwrap();
        assert_eq!((back.status, back.inline), (200, 5));
        assert_eq!(&back.data[..], b"{\"x\"}");
        // Without an inline body the frame is the JSON alone, as before.
        let plain = LocalReply {
            status: 404,
            body: "{}".into(),
            ..Default::default()
        };
        assert_eq!(plain.encode(), serde_json::to_vec(&plain).unwrap());
        assert!(LocalReply::decode(plain.encode()).unwrap().data.is_empty());
        // A length that does not match the bytes after the JSON is refused.
        let mut bad = reply.encode();
        bad.push(b'!');
        assert!(LocalReply::decode(bad).is_err());
    }
}
