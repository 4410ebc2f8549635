//! The accept loop every aisle node runs: HTTP/1 and HTTP/2 on one listener, one task per
//! connection, `TCP_NODELAY`, and a bound on the request head, on TCP or on a target's
//! same-host Unix socket ([`crate::local`]).

use std::convert::Infallible;
use std::future::Future;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// The address a request's connection came from, in the request's extensions (TCP and TLS
/// connections; none on a Unix socket).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// A listener the accept loop takes connections from: TCP (with `TCP_NODELAY`) or a Unix
/// socket.
pub trait Listener: Send + 'static {
    /// A connection.
    type Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn next_conn(&self) -> impl Future<Output = std::io::Result<Self::Conn>> + Send;
    /// The address a connection came from, where there is one.
    fn peer(_conn: &Self::Conn) -> Option<PeerAddr> {
        None
    }
}

impl Listener for TcpListener {
    type Conn = TcpStream;
    async fn next_conn(&self) -> std::io::Result<TcpStream> {
        let (stream, _) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
    fn peer(conn: &TcpStream) -> Option<PeerAddr> {
        conn.peer_addr().ok().map(PeerAddr)
    }
}

impl Listener for UnixListener {
    type Conn = UnixStream;
    async fn next_conn(&self) -> std::io::Result<UnixStream> {
        Ok(self.accept().await?.0)
    }
}

/// Serve `handler` on `listener` until the process stops. `max_head` bounds the request line and
/// headers (beyond it: 431), when given.
pub async fn serve<L, F, Fut, B>(listener: L, max_head: Option<usize>, handler: F)
where
    L: Listener,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        match listener.next_conn().await {
            Ok(stream) => {
                let peer = L::peer(&stream);
                connection(stream, peer, max_head, handler.clone())
            }
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
}

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a plain-HTTP request to a TLS port is answered with, before the connection is closed.
const PLAINTEXT_REFUSED: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Connection: close\r\nContent-Length: 42\r\n\r\nThis port speaks HTTPS only: use https://\n";

/// [`serve`] over TLS: each connection's handshake runs on its own task (so a slow client never
/// holds the accept loop), bounded by a timeout. A client that sends plain HTTP instead of a
/// TLS ClientHello gets a `400` saying so and is disconnected: nothing is served in clear.
pub async fn serve_tls<F, Fut, B>(
    listener: TcpListener,
    tls: std::sync::Arc<rustls::ServerConfig>,
    max_head: Option<usize>,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let stream = match listener.next_conn().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let (acceptor, handler) = (acceptor.clone(), handler.clone());
        let peer = TcpListener::peer(&stream);
        tokio::spawn(async move {
            let handshake = async {
                // A TLS record starts with 0x16 (handshake); anything else is not TLS.
                let mut first = [0u8; 1];
                if stream.peek(&mut first).await? == 1 && first[0] != 0x16 {
                    use tokio::io::AsyncWriteExt;
                    let mut stream = stream;
                    stream.write_all(PLAINTEXT_REFUSED).await?;
                    stream.shutdown().await?;
                    return Ok(None);
                }
                acceptor.accept(stream).await.map(Some)
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(Some(tls))) => serve_connection(tls, peer, max_head, handler).await,
                Ok(Ok(None)) => tracing::debug!("plain HTTP on a TLS port refused"),
                Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        });
    }
}

/// Serve one accepted connection on its own task.
fn connection<S, F, Fut, B>(stream: S, peer: Option<PeerAddr>, max_head: Option<usize>, handler: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(serve_connection(stream, peer, max_head, handler));
}

/// Serve one connection until it ends.
async fn serve_connection<S, F, Fut, B>(
    stream: S,
    peer: Option<PeerAddr>,
    max_head: Option<usize>,
    handler: F,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let handler = handler.clone();
        if let Some(p) = peer {
            req.extensions_mut().insert(p);
        }
        async move { Ok::<_, Infallible>(handler(req).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Some(max) = max_head {
        builder.http1().max_buf_size(max);
        builder.http2().max_header_list_size(max as u32);
    }
    if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
