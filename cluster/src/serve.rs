//! The accept loops every aisle node runs: HTTP/1 and HTTP/2 on one listener, one task per
//! connection, `TCP_NODELAY`, and a bound on the request head. [`serve`] takes TCP,
//! [`serve_unix`] a target's same-host socket ([`crate::local`]).

use std::convert::Infallible;
use std::future::Future;

use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

/// Serve `handler` on `listener` until the process stops. `max_head` bounds the request line and
/// headers (beyond it: 431), when given.
pub async fn serve<F, Fut, B>(listener: TcpListener, max_head: Option<usize>, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                connection(stream, max_head, handler.clone());
            }
            Err(e) => tracing::warn!(error = %e, "accept failed"),
        }
    }
}

/// [`serve`] on a Unix socket.
pub async fn serve_unix<F, Fut, B>(listener: UnixListener, max_head: Option<usize>, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        match listener.accept().await {
            Ok((stream, _)) => connection(stream, max_head, handler.clone()),
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
