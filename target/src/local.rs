//! Same-host calls answered with file descriptors (the protocol is
//! [`aisle_cluster::local`]'s): reads get the open files of their span (a stored object, or a
//! cached transform output), puts and parts a staged file to fill. Reads are resolved exactly
//! as over HTTP ([`crate::server::answer_read`]), puts and parts published exactly as over HTTP
//! ([`crate::server::publish_put`], [`crate::server::publish_part`]). Only the bytes travel
//! differently.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use aisle_cluster::auth::constant_time_eq;
use aisle_cluster::local::{LocalReply, LocalRequest, MAX_FDS, recv_frame, send_frame};
use aisle_cluster::proto::{
    Commit, ErrorBody, ObjectAttrs, ObjectQuery, UploadQuery, WriteOptions,
};
use tokio::net::{UnixListener, UnixStream};

use crate::files::Span;
use crate::server::{ApiError, ReadAnswer, State, answer_read};
use crate::store::TempFile;

/// Accept gateways on `listener` until the process stops.
pub(crate) async fn serve(listener: UnixListener, state: Arc<State>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, state.clone()));
            }
            Err(e) => tracing::warn!(error = %e, "accept failed on the descriptor socket"),
        }
    }
}

/// A put or part waiting for its commit on this connection (dropped, it removes the staged
/// file).
struct Staged {
    what: StagedWhat,
    temp: TempFile,
}

enum StagedWhat {
    Object {
        query: ObjectQuery,
        attrs: Box<ObjectAttrs>,
        opts: WriteOptions,
    },
    Part {
        query: UploadQuery,
        upload_id: String,
        number: u32,
    },
}

/// One call after another until the peer hangs up or breaks the protocol.
async fn connection(stream: UnixStream, state: Arc<State>) {
    let mut staged: Option<Staged> = None;
    loop {
        let frame = match recv_frame(&stream).await {
            Ok(Some((frame, _))) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "descriptor connection ended");
                return;
            }
        };
        // `spans` keeps the read's files open until their descriptors are sent (and passes
        // the change table's file).
        let (reply, spans) = answer(&state, &frame, &mut staged).await;
        let fds: Vec<RawFd> = if reply.status == 100 {
            staged
                .iter()
                .filter_map(|s| s.temp.file())
                .map(|f| f.as_raw_fd())
                .collect()
        } else {
            spans.iter().map(|s| s.file.as_raw_fd()).collect()
        };
        if let Err(e) = send_frame(&stream, &reply.encode(), &fds).await {
            tracing::debug!(error = %e, "descriptor reply failed");
            return;
        }
    }
}

/// Answer one call; a put leaves its staged file in `staged` for the commit that follows.
async fn answer(
    state: &Arc<State>,
    frame: &[u8],
    staged: &mut Option<Staged>,
) -> (LocalReply, Vec<Span>) {
    let authorized = |secret: &str| constant_time_eq(secret.as_bytes(), state.secret.as_bytes());
    let (request, data) = match LocalRequest::decode(frame) {
        Ok((r, data)) => (Ok(r), data),
        Err(e) => (Err(e), &[][..]),
    };
    // The same operation names as over HTTP ([`crate::metrics::op_of`]).
    let (id, op) = match &request {
        Ok(LocalRequest::Read { trace, head, .. }) => {
            (trace.clone(), if *head { "head" } else { "get" })
        }
        Ok(LocalRequest::Put { trace, .. }) => (trace.clone(), "put"),
        Ok(LocalRequest::Part { trace, .. }) => (trace.clone(), "multipart"),
        Ok(LocalRequest::Commit(_)) => (None, "commit"),
        Ok(LocalRequest::Changes { .. }) | Err(_) => (None, "other"),
    };
    let started = std::time::Instant::now();
    let work = async {
        let (reply, spans) = dispatch(state, request, data, staged, authorized).await;
        state
            .metrics
            .request(op, reply.status.max(200), started.elapsed());
        if reply.status >= 500 {
            tracing::warn!(op, status = reply.status, "request failed");
        } else {
            tracing::debug!(op, status = reply.status, "request done");
        }
        (reply, spans)
    };
    match id {
        // Lines logged for it carry the id.
        Some(id) => aisle_cluster::trace::scope(id.into(), work).await,
        None => work.await,
    }
}

async fn dispatch(
    state: &Arc<State>,
    request: Result<LocalRequest, serde_json::Error>,
    data: &[u8],
    staged: &mut Option<Staged>,
    authorized: impl Fn(&str) -> bool,
) -> (LocalReply, Vec<Span>) {
    if !data.is_empty() && !matches!(request, Ok(LocalRequest::Put { whole: Some(_), .. })) {
        let bad = crate::server::bad("bytes after a request that takes none");
        return (error(bad), Vec::new());
    }
    match request {
        Ok(
            LocalRequest::Read { secret, .. }
            | LocalRequest::Put { secret, .. }
            | LocalRequest::Part { secret, .. }
            | LocalRequest::Changes { secret },
        ) if !authorized(&secret) => (error(ApiError::denied()), Vec::new()),
        // The change table's file goes with the reply as a read's files do (an empty span).
        Ok(LocalRequest::Changes { .. }) => match state.changes.share() {
            Ok(fd) => {
                let table = Span {
                    file: fd.into(),
                    from: 0,
                    to: 0,
                };
                let ok = LocalReply {
                    status: 200,
                    ..Default::default()
                };
                (ok, vec![table])
            }
            Err(e) => {
                let e = crate::store::StoreError::io("sharing the change table")(e);
                (error(e.into()), Vec::new())
            }
        },
        Ok(LocalRequest::Read {
            query,
            opts,
            head,
            inline,
            ..
        }) => read(state, &query, &opts, head, inline).await,
        Ok(LocalRequest::Put {
            query,
            attrs,
            opts,
            whole: Some(commit),
            ..
        }) => {
            let reply = match put_whole(state, query, attrs, opts, data, commit).await {
                Ok(body) => LocalReply {
                    status: 200,
                    body,
                    ..Default::default()
                },
                Err(e) => error(e),
            };
            (reply, Vec::new())
        }
        Ok(LocalRequest::Put {
            query, attrs, opts, ..
        }) => staged_reply(staged, stage_object(state, query, attrs, opts).await),
        Ok(LocalRequest::Part { query, .. }) => {
            staged_reply(staged, stage_part(state, query).await)
        }
        Ok(LocalRequest::Commit(commit)) => {
            let reply = match staged.take() {
                Some(s) => match commit_staged(state, s, commit).await {
                    Ok(body) => LocalReply {
                        status: 200,
                        body,
                        ..Default::default()
                    },
                    Err(e) => error(e),
                },
                None => error(crate::server::bad("commit without a staged put")),
            };
            (reply, Vec::new())
        }
        Err(e) => (
            error(crate::server::bad(format!("bad local request: {e}"))),
            Vec::new(),
        ),
    }
}

/// Answer a read as over HTTP ([`answer_read`]), with the files' descriptors for the body, or
/// the bytes themselves when the target read them anyway (a small object, checked whole) and
/// the caller takes them `inline`. Whatever would have to stream (a shard member, a
/// non-deterministic transform, a span over more than [`MAX_FDS`] files) is declined (status
/// 0) and goes over HTTP; so are bytes for a caller that does not take them inline.
async fn read(
    state: &Arc<State>,
    q: &ObjectQuery,
    opts: &aisle_cluster::proto::ReadOptions,
    head: bool,
    inline: bool,
) -> (LocalReply, Vec<Span>) {
    let reply_of = |head: &http::Response<()>| LocalReply {
        status: head.status().as_u16(),
        headers: header_pairs(head.headers()),
        ..Default::default()
    };
    match answer_read(state, q, opts, !head, false).await {
        Ok(ReadAnswer::Files { head, spans }) if spans.len() <= MAX_FDS => {
            let mut reply = reply_of(&head);
            reply.spans = spans.iter().map(|s| (s.from, s.to)).collect();
            (reply, spans)
        }
        Ok(ReadAnswer::Bytes { head, data }) if inline => {
            let mut reply = reply_of(&head);
            reply.inline = data.len() as u64;
            reply.data = data;
            // The answer comes from the index and the checked bytes alone, unless a remote is
            // behind the bucket (its copy is revalidated against the remote, and evicted).
            reply.stable = opts.etl.is_none()
                && opts.archive.is_none()
                && crate::cold::spec_of(state, &q.bucket).is_none();
            (reply, Vec::new())
        }
        Ok(ReadAnswer::Response(r)) if !r.status().is_success() => (answered(r).await, Vec::new()),
        Ok(_) => (LocalReply::default(), Vec::new()),
        Err(e) => (error(e), Vec::new()),
    }
}

fn header_pairs(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

/// A complete error response (a failed condition, say: a small JSON body) as a reply.
async fn answered(r: crate::server::Resp) -> LocalReply {
    let (parts, body) = r.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
        .unwrap_or_default();
    LocalReply {
        status: parts.status.as_u16(),
        headers: header_pairs(&parts.headers),
        body,
        ..Default::default()
    }
}

/// Stage a put: check its condition, create the staged file on the object's mountpath.
async fn stage_object(
    state: &State,
    query: ObjectQuery,
    attrs: ObjectAttrs,
    opts: WriteOptions,
) -> Result<Staged, ApiError> {
    crate::server::check_put(state, &query, &opts).await?;
    let mp = state.store.mountpath_for(&query.bucket, &query.key);
    let temp = state.store.create_temp(mp).await?;
    let what = StagedWhat::Object {
        query,
        attrs: Box::new(attrs),
        opts,
    };
    Ok(Staged { what, temp })
}

/// A put whose verified body came in its request: staged, written and published at once,
/// exactly as a staged put and its commit.
async fn put_whole(
    state: &Arc<State>,
    query: ObjectQuery,
    attrs: ObjectAttrs,
    opts: WriteOptions,
    data: &[u8],
    commit: Commit,
) -> Result<String, ApiError> {
    let mut s = stage_object(state, query, attrs, opts).await?;
    s.temp.write(bytes::Bytes::copy_from_slice(data)).await?;
    s.temp.finish().await?;
    commit_staged(state, s, commit).await
}

/// Stage a part: the upload must exist; the file goes on the object's mountpath.
async fn stage_part(state: &State, query: UploadQuery) -> Result<Staged, ApiError> {
    let (upload_id, number) = crate::server::check_part(state, &query).await?;
    let mp = state.store.mountpath_for(&query.bucket, &query.key);
    let temp = state.store.create_temp(mp).await?;
    let what = StagedWhat::Part {
        query,
        upload_id,
        number,
    };
    Ok(Staged { what, temp })
}

/// Keep a staged file for the commit that follows (status 100: the caller fills it; an
/// earlier uncommitted one is discarded), or answer the error.
fn staged_reply(
    staged: &mut Option<Staged>,
    result: Result<Staged, ApiError>,
) -> (LocalReply, Vec<Span>) {
    *staged = None;
    match result {
        Ok(s) => {
            *staged = Some(s);
            let go = LocalReply {
                status: 100,
                ..Default::default()
            };
            (go, Vec::new())
        }
        Err(e) => (error(e), Vec::new()),
    }
}

/// The gateway filled the staged file: check its size, fsync, publish; the answer's JSON.
async fn commit_staged(
    state: &Arc<State>,
    mut s: Staged,
    commit: Commit,
) -> Result<String, ApiError> {
    let written = s.temp.len_on_disk()?;
    if written != commit.size {
        return Err(ApiError::incomplete(format!(
            "commit says {} bytes, the staged file holds {written}",
            commit.size
        )));
    }
    s.temp.finish().await?;
    let json = |r: serde_json::Result<String>| r.expect("protocol types serialize");
    Ok(match s.what {
        StagedWhat::Object { query, attrs, opts } => {
            let meta =
                crate::server::publish_put(state, query, *attrs, opts, s.temp, commit).await?;
            json(serde_json::to_string(&meta))
        }
        StagedWhat::Part {
            query,
            upload_id,
            number,
        } => {
            let info = crate::server::publish_part(state, query, upload_id, number, s.temp, commit)
                .await?;
            json(serde_json::to_string(&info))
        }
    })
}

fn error(e: ApiError) -> LocalReply {
    LocalReply {
        status: e.status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: serde_json::to_string(&ErrorBody {
            delete_marker: e.marker.clone(),
            code: e.code.into(),
            message: e.message,
        })
        .expect("protocol types serialize"),
        ..Default::default()
    }
}
