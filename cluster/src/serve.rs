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

/// A listener the accept loop takes connections from: TCP (with `TCP_NODELAY`) or a Unix
/// socket.
pub trait Listener: Send + 'static {
    /// A connection.
    type Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection.
    fn next_conn(&self) -> impl Future<Output = std::io::Result<Self::Conn>> + Send;
}

impl Listener for TcpListener {
    type Conn = TcpStream;
    async fn next_conn(&self) -> std::io::Result<TcpStream> {
        let (stream, _) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
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
            Ok(stream) => connection(stream, max_head, handler.clone()),
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
}

/// Serve one accepted connection on its own task.
fn connection<S, F, Fut, B>(stream: S, max_head: Option<usize>, handler: F)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::spawn(async move {
        let svc = hyper::service::service_fn(move |req| {
            let handler = handler.clone();
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
    });
}
