//! Copies of objects on other targets: pushing one (after a client's write, and in a
//! rebalance), receiving one, and telling a peer what this target holds.
//!
//! A copy travels with the metadata the sender holds, version included. The receiver stages
//! and fsyncs it, re-reads what it wrote to check it against the object's ETag (so a corrupt
//! source copy never spreads), and publishes it only if it is newer than the object or
//! tombstone it holds. Deletions travel as tombstones (a versioned DELETE).

use std::sync::Arc;

use aisle_cluster::client::{self, BoxError, ClientError, ReqBody, read_json};
use aisle_cluster::etag::EtagCheck;
use aisle_cluster::proto::{
    self, COMMIT_TRAILER, Commit, DeleteQuery, Have, META_HEADER, ObjectMeta, ObjectQuery, Peer,
    ReplicaQuery, SendQuery, WriteOptions,
};
use aisle_cluster::versioning::VersionRef;
use futures::StreamExt;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::server::{
    ApiError, Resp, State, api_err, blocking, drain, header_json, json_resp, query, receive_framed,
    store_error,
};
use crate::store::{StoreError, StoredObject};

/// Make the other copies a client's write names durable before it is acknowledged: push the
/// object just published to each of `opts.replicas`. A copy that cannot be made fails the
/// write (503) — the client retries — and is retried in the background ([`repair_later`]):
/// the object published here is the newest version and must not stay with fewer copies.
pub(crate) async fn make_copies(
    state: &Arc<State>,
    bucket: &str,
    key: &str,
    opts: &WriteOptions,
) -> Result<(), ApiError> {
    let pushes = opts
        .replicas
        .iter()
        .map(|peer| push(state, bucket, key, None, &peer.url, false));
    let mut failed = None;
    for (peer, r) in opts
        .replicas
        .iter()
        .zip(futures::future::join_all(pushes).await)
    {
        if let Err(e) = r {
            tracing::warn!(peer = %peer.id, %bucket, %key, error = %e, "a copy could not be made");
            repair_later(state, bucket, key, peer.clone());
            failed = Some(format!(
                "a copy of the object could not be made on {}: {e}; retry",
                peer.id
            ));
        }
    }
    match failed {
        None => Ok(()),
        Some(message) => Err(api_err(503, "SlowDown", message)),
    }
}

/// Keep pushing, in the background, a copy a write could not make: every 2 s for 10 minutes,
/// to the peer's address in the current map (a restarted target listens elsewhere), until it
/// holds this version or a newer one, or leaves the map. A restart of this target forgets
/// the queue; the rebalance its re-join starts ([`crate::rebalance`]) covers that.
fn repair_later(state: &Arc<State>, bucket: &str, key: &str, peer: Peer) {
    let state = state.clone();
    let (bucket, key) = (bucket.to_string(), key.to_string());
    tokio::spawn(async move {
        for _ in 0..300 {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let url = {
                let meta = state.meta.read().expect("meta lock");
                match meta.targets.get(&peer.id) {
                    Some(t) => t.url.clone(),
                    None => return, // gone from the cluster: placement no longer names it
                }
            };
            match push(&state, &bucket, &key, None, &url, false).await {
                Ok(_) => {
                    tracing::info!(peer = %peer.id, %bucket, %key, "copy made on retry");
                    return;
                }
                Err(PushError::Local(StoreError::NoSuchKey)) => return,
                Err(e) => tracing::debug!(peer = %peer.id, error = %e, "copy retry failed"),
            }
        }
        tracing::warn!(peer = %peer.id, %bucket, %key, "copy not made; the next rebalance will");
    });
}

/// Failure to push a copy.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PushError {
    /// The local record or its files.
    #[error("{0}")]
    Local(#[from] StoreError),
    /// The peer.
    #[error("{0}")]
    Peer(#[from] ClientError),
}

/// Push this target's copy of `(bucket, key)` to the target at `peer_url`: its current
/// object, tombstone or newest delete marker, or with `which` that noncurrent version (a
/// rebalance moving a key's history). Returns what the peer holds afterwards: this version,
/// or a newer one it had. With `repair`, the peer's copy of the same version is corrupt and
/// is replaced.
///
/// Tried up to three times (a push is idempotent: the peer keeps the newer version): a
/// concurrent overwrite can delete the files of the version just looked up, and a pooled
/// connection the peer closed (or a peer that restarted) fails once before a fresh one is made.
pub(crate) async fn push(
    state: &State,
    bucket: &str,
    key: &str,
    which: Option<VersionRef>,
    peer_url: &str,
    repair: bool,
) -> Result<Have, PushError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match push_once(state, bucket, key, which, peer_url, repair).await {
            Err(e) if attempt < 3 && e.is_transient() => {
                tracing::debug!(%bucket, %key, peer = %peer_url, error = %e, "push retried");
            }
            r => return r,
        }
    }
}

impl PushError {
    fn is_transient(&self) -> bool {
        match self {
            PushError::Local(StoreError::Io { source, .. }) => {
                source.kind() == std::io::ErrorKind::NotFound
            }
            PushError::Peer(ClientError::Transport { .. }) => true,
            _ => false,
        }
    }
}

async fn push_once(
    state: &State,
    bucket: &str,
    key: &str,
    which: Option<VersionRef>,
    peer_url: &str,
    repair: bool,
) -> Result<Have, PushError> {
    let store = &state.store;
    if let Some(which) = which {
        let rec = store.get_version(bucket, key, &which)?;
        return send_copy(state, bucket, key, rec, peer_url, repair, true).await;
    }
    let have = store.have(bucket, key)?;
    if !have.deleted {
        let rec = store.get(bucket, key)?;
        return send_copy(state, bucket, key, rec, peer_url, repair, false).await;
    }
    // Deleted by a delete marker (a bucket with versioning): the marker travels as the
    // version it is, so the peer keeps what it holds as noncurrent versions.
    if let Some(m) = store.latest_marker(bucket, key)?
        && m.stamp() == have.version
    {
        let rec = StoredObject {
            meta: m,
            ..Default::default()
        };
        return send_copy(state, bucket, key, rec, peer_url, repair, true).await;
    }
    let q = DeleteQuery {
        bucket: bucket.into(),
        key: key.into(),
        version: have.version,
        tombstone: true,
        versioning: Default::default(),
        version_id: None,
    };
    let url = format!("{peer_url}{}", proto::path_and_query(proto::T_OBJECT, &q));
    let req = client::request(Method::DELETE, &url)
        .body(client::empty())
        .expect("valid request parts");
    state.client.send_ok(req).await?;
    Ok(have)
}

/// Stream `rec`'s bytes with its metadata to the target at `peer_url` ([`proto::T_REPLICA`]).
async fn send_copy(
    state: &State,
    bucket: &str,
    key: &str,
    rec: StoredObject,
    peer_url: &str,
    repair: bool,
    noncurrent: bool,
) -> Result<Have, PushError> {
    let (store, client) = (&state.store, &state.client);
    let files = store.segment_files(&rec.segments);
    let stream = crate::files::open_span(&files, 0, rec.meta.size).await?;
    let commit = Commit {
        size: rec.meta.size,
        md5: String::new(),
        checksums: Default::default(),
    };
    let mut trailers = HeaderMap::new();
    trailers.insert(COMMIT_TRAILER, proto::encode_header(&commit));
    let frames = stream
        .map(|r| r.map(Frame::data).map_err(|e| Box::new(e) as BoxError))
        .chain(futures::stream::once(async move {
            Ok::<_, BoxError>(Frame::trailers(trailers))
        }));
    let body: ReqBody = BodyExt::boxed_unsync(StreamBody::new(frames));
    let q = ReplicaQuery {
        bucket: bucket.into(),
        key: key.into(),
        repair,
        noncurrent,
    };
    let url = format!("{peer_url}{}", proto::path_and_query(proto::T_REPLICA, &q));
    let req = client::request(Method::PUT, &url)
        .header(header::TRAILER, COMMIT_TRAILER)
        .header(META_HEADER, proto::encode_header(&rec.meta))
        .body(body)
        .expect("valid request parts");
    let resp = client.send_ok(req).await?;
    Ok(read_json(&url, resp).await?)
}

/// Ask the target at `peer_url` what it holds of each key.
pub(crate) async fn check(
    state: &State,
    peer_url: &str,
    keys: &[ObjectQuery],
) -> Result<Vec<Have>, ClientError> {
    let url = format!("{peer_url}{}", proto::T_REPLICA_CHECK);
    state.client.json(Method::POST, &url, Some(&keys)).await
}

/// PUT [`proto::T_REPLICA`]: receive a copy.
pub(crate) async fn receive(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: ReplicaQuery = query(&req)?;
    let meta: Option<ObjectMeta> = header_json(req.headers(), META_HEADER)?;
    let meta = meta.ok_or_else(|| api_err(400, "InvalidRequest", "a copy needs its metadata"))?;
    if q.noncurrent {
        return receive_version(state, q, meta, req).await;
    }
    let have = state.store.have(&q.bucket, &q.key).map_err(store_error)?;
    let same_object_repaired = q.repair && !have.deleted && have.version == meta.stamp();
    if have.version >= meta.stamp() && !same_object_repaired {
        // Nothing to do (a concurrent overwrite's newer copy came first, say).
        drain(req.into_body()).await;
        return Ok(json_resp(StatusCode::OK, &have));
    }
    let temp = receive_checked(state, &q, &meta, req.into_body()).await?;
    let store = state.store.clone();
    let version = meta.stamp();
    // A cached object of a remote bucket moving here joins this target's cache.
    let cached = meta
        .remote
        .is_some()
        .then(|| (q.bucket.clone(), q.key.clone(), meta.clone()));
    let have =
        blocking(
            move || match store.publish_copy(&q.bucket, &q.key, temp, meta, q.repair) {
                Ok(_) => Ok(Have {
                    version,
                    deleted: false,
                }),
                Err(StoreError::Stale(have)) => Ok(have),
                Err(e) => Err(e),
            },
        )
        .await?;
    if let Some((b, k, m)) = cached
        && have.version == version
        && !have.deleted
    {
        crate::cold::written(state, &b, &k, &m);
    }
    Ok(json_resp(StatusCode::OK, &have))
}

/// A pushed copy's bytes, staged and checked against its record's ETag as they arrive, so a
/// corrupt source copy never spreads: nothing is published unless they match.
async fn receive_checked(
    state: &State,
    q: &ReplicaQuery,
    meta: &ObjectMeta,
    body: Incoming,
) -> Result<crate::store::TempFile, ApiError> {
    let mut check = {
        let (etag, parts) = meta.integrity();
        EtagCheck::new(etag, parts)
    };
    let mp = state.store.mountpath_for(&q.bucket, &q.key);
    let (temp, commit) = receive_framed(state, mp, body, &[], |_| Vec::new(), &mut |d| {
        check.update(d)
    })
    .await?;
    if commit.size != meta.size || !check.matches() {
        return Err(api_err(
            400,
            "BadDigest",
            format!(
                "the copy of {}/{} ({} bytes) does not match its record ({} bytes, ETag {})",
                q.bucket, q.key, commit.size, meta.size, meta.etag
            ),
        ));
    }
    Ok(temp)
}

/// A noncurrent version (or delete marker) pushed by a rebalance: its bytes checked like any
/// copy, then taken in by [`crate::store::Store::publish_version`]. Answers what this target
/// holds of that version.
async fn receive_version(
    state: &Arc<State>,
    q: ReplicaQuery,
    meta: ObjectMeta,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let which = VersionRef::of(&meta);
    let held = state
        .store
        .have_version(&q.bucket, &q.key, &which)
        .map_err(store_error)?;
    let repairing = q.repair && held.version == meta.stamp();
    if held.version >= meta.stamp() && !repairing {
        drain(req.into_body()).await;
        return Ok(json_resp(StatusCode::OK, &held));
    }
    // A delete marker has no bytes.
    let temp = if meta.delete_marker {
        drain(req.into_body()).await;
        None
    } else {
        Some(receive_checked(state, &q, &meta, req.into_body()).await?)
    };
    let store = state.store.clone();
    let have = blocking(move || {
        match store.publish_version(&q.bucket, &q.key, temp, meta, repairing) {
            Ok(()) | Err(StoreError::Stale(_)) => {}
            Err(e) => return Err(e),
        }
        store.have_version(&q.bucket, &q.key, &which)
    })
    .await?;
    Ok(json_resp(StatusCode::OK, &have))
}

/// POST [`proto::T_REPLICA_SEND`]: push this target's copy to another that found its own
/// corrupt.
pub(crate) async fn send(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: SendQuery = query(&req)?;
    let which = match q.version_id.as_deref() {
        Some(id) => Some(crate::server::version_ref(id)?),
        None => None,
    };
    let have = push(state, &q.bucket, &q.key, which, &q.to, true)
        .await
        .map_err(|e| match e {
            PushError::Local(e) => store_error(e),
            PushError::Peer(e) => api_err(502, "InternalError", e.to_string()),
        })?;
    Ok(json_resp(StatusCode::OK, &have))
}

/// POST [`proto::T_REPLICA_CHECK`]: what this target holds of each key.
pub(crate) async fn answer_check(
    state: &Arc<State>,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let keys: Vec<ObjectQuery> = crate::server::read_json_body(req).await?;
    let store = state.store.clone();
    let haves = blocking(move || {
        keys.iter()
            .map(
                |q| match q.version_id.as_deref().and_then(VersionRef::parse) {
                    Some(which) => store.have_version(&q.bucket, &q.key, &which),
                    None => store.have(&q.bucket, &q.key),
                },
            )
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(json_resp(StatusCode::OK, &haves))
}
