//! Plain reads for a gateway on the same host, answered with open file descriptors instead of
//! bytes (the protocol is [`aisle_cluster::local`]'s). The record, the conditions, the part and
//! the range are resolved exactly as for an HTTP read ([`crate::server::plain_read`]); only the
//! body travels differently.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use aisle_cluster::auth::constant_time_eq;
use aisle_cluster::local::{LocalReadReply, LocalReadRequest, MAX_FDS, recv_frame, send_frame};
use aisle_cluster::proto::ErrorBody;
use tokio::net::{UnixListener, UnixStream};

use crate::files::Span;
use crate::server::{ApiError, PlainRead, State, plain_read, segment_files};

/// Accept gateways on `listener` until the process stops.
pub(crate) async fn serve(listener: UnixListener, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, state.clone()));
            }
            Err(e) => tracing::warn!(error = %e, "accept failed on the local read socket"),
        }
    }
}

/// One request after another until the peer hangs up or breaks the protocol.
async fn connection(stream: UnixStream, state: Arc<State>) {
    loop {
        let frame = match recv_frame(&stream).await {
            Ok(Some((frame, _))) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "local read connection ended");
                return;
            }
        };
        let (reply, spans) = match serde_json::from_slice::<LocalReadRequest>(&frame) {
            Ok(req) if constant_time_eq(req.secret.as_bytes(), state.secret.as_bytes()) => {
                answer(&state, &req)
            }
            Ok(_) => (error(ApiError::denied()), Vec::new()),
            Err(e) => (
                error(crate::server::bad(format!("bad local read request: {e}"))),
                Vec::new(),
            ),
        };
        let msg = serde_json::to_vec(&reply).expect("protocol types serialize");
        let fds: Vec<_> = spans.iter().map(|s| s.file.as_raw_fd()).collect();
        if let Err(e) = send_frame(&stream, &msg, &fds).await {
            tracing::debug!(error = %e, "local read reply failed");
            return;
        }
    }
}

/// Resolve a plain read and open its files.
fn answer(state: &State, req: &LocalReadRequest) -> (LocalReadReply, Vec<Span>) {
    if req.opts.etl.is_some() || req.opts.archive.is_some() {
        return (LocalReadReply::default(), Vec::new()); // status 0: ask over HTTP
    }
    let q = &req.query;
    let resolved = state
        .store
        .get(&q.bucket, &q.key)
        .map_err(ApiError::from)
        .and_then(|rec| Ok((plain_read(&rec, q, &req.opts)?, rec)));
    match resolved {
        Err(e) => (error(e), Vec::new()),
        Ok((PlainRead::ConditionFailed { error: e, meta }, _)) => {
            let mut reply = error(e);
            reply.headers.push((
                aisle_cluster::proto::META_HEADER.into(),
                meta.to_str().unwrap_or_default().into(),
            ));
            (reply, Vec::new())
        }
        Ok((PlainRead::Span { head, start, end }, rec)) => {
            let spans = if req.head || end <= start {
                Vec::new()
            } else {
                let files = segment_files(&state.store, &rec.segments);
                match crate::files::spans(&files, start, end) {
                    Ok(s) if s.len() <= MAX_FDS => s,
                    Ok(_) => return (LocalReadReply::default(), Vec::new()),
                    Err(e) => return (error(e.into()), Vec::new()),
                }
            };
            let reply = LocalReadReply {
                status: head.status().as_u16(),
                headers: head
                    .headers()
                    .iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                    .collect(),
                body: String::new(),
                spans: spans.iter().map(|s| (s.from, s.to)).collect(),
            };
            (reply, spans)
        }
    }
}

fn error(e: ApiError) -> LocalReadReply {
    LocalReadReply {
        status: e.status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_string(&ErrorBody {
            code: e.code.into(),
            message: e.message,
        })
        .expect("protocol types serialize"),
        spans: Vec::new(),
    }
}
