//! GetBatch: many objects and shard members, in the order asked, as one tar stream
//! (`POST /_aisle/v1/batch`, SigV4-signed like every admin call). Each entry is read from its
//! owning target and streamed straight into the output; nothing is buffered beyond a chunk.
//!
//! An entry may name a transform (`etl`, `etl_args`): its owning target transforms the object
//! and only transformed bytes travel. A tar header needs the member's size before its bytes, so
//! entries are read with [`ReadOptions::sized`]: a deterministic pipeline's output comes from
//! the target's output cache with its size; any other pipeline runs to completion into a
//! staged file on the target (on disk, never in memory), which is then streamed and removed.

use aisle_cluster::proto::{ArchiveSelection, ObjectQuery, ReadOptions};
use aisle_shard::{END_OF_ARCHIVE, member_header, padding};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, StatusCode};
use s3s::{Body, S3ErrorCode, S3Response, S3Result};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::proxy::Targets;
use crate::s3::{from_client, s3_error};

/// Most entries in one batch.
pub const MAX_ENTRIES: usize = 100_000;

/// One thing to put in the batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchEntry {
    /// Bucket.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// A member of the object (a shard), instead of the whole object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archpath: Option<String>,
    /// Transform the object on its owning target before it is packed: stage names,
    /// comma-separated (as the `x-ais-etl` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etl: Option<String>,
    /// The arguments of `etl` (as `x-ais-etl-args`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etl_args: Option<String>,
}

impl BatchEntry {
    /// The transform this entry asks for.
    pub fn etl_selection(&self) -> Option<aisle_cluster::proto::EtlSelection> {
        let names: Vec<String> = self
            .etl
            .as_deref()?
            .split(',')
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        (!names.is_empty()).then(|| aisle_cluster::proto::EtlSelection {
            pipeline: names,
            args: self.etl_args.clone(),
        })
    }
}

impl BatchEntry {
    /// Its name in the output tar: the key, or `key/archpath` for a member.
    pub fn name(&self) -> String {
        match &self.archpath {
            Some(a) => format!("{}/{}", self.key, a),
            None => self.key.clone(),
        }
    }
}

/// What to do about an entry that cannot be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnMissing {
    /// Fail the request (before any byte when it is the first entry, else by cutting the stream).
    #[default]
    Fail,
    /// Put `__missing__/<name>` in its place, holding the error message.
    Placeholder,
}

/// Body of `POST /_aisle/v1/batch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchRequest {
    /// Entries, in output order.
    pub entries: Vec<BatchEntry>,
    /// Missing entries.
    #[serde(default)]
    pub missing: OnMissing,
}

type Chunk = Result<Bytes, std::io::Error>;

async fn send(tx: &mpsc::Sender<Chunk>, b: impl Into<Bytes>) -> bool {
    tx.send(Ok(b.into())).await.is_ok()
}

/// Entries read ahead of the one being streamed: their targets read (and transform) them
/// in parallel while earlier entries go out; each holds at most an open answer, no bytes.
pub const READ_AHEAD: usize = 8;

/// An entry's answer from its owning target, with its size; `Err(message)` when it cannot
/// be read.
async fn open_entry(
    targets: &Targets,
    e: &BatchEntry,
) -> Result<(http::Response<aisle_cluster::client::ReadBody>, u64), String> {
    let q = ObjectQuery {
        version_id: None,
        bucket: e.bucket.clone(),
        key: e.key.clone(),
        part: None,
    };
    let opts = ReadOptions {
        archive: e.archpath.clone().map(ArchiveSelection::Path),
        etl: e.etl_selection(),
        // Each member's tar header needs its size up front.
        sized: true,
        ..Default::default()
    };
    let (resp, owner) = targets
        .read(&q, &opts, false)
        .await
        .map_err(|x| x.to_string())?;
    if !resp.status().is_success() {
        let err = from_client(aisle_cluster::client::status_error(owner.url.clone(), resp).await);
        return Err(format!(
            "{}: {}",
            err.code().as_str(),
            err.message().unwrap_or("")
        ));
    }
    let size = crate::proxy::content_length(&resp).ok_or("the target gave no length")?;
    Ok((resp, size))
}

/// Stream an opened entry into the tar; false when the output is gone or was cut.
async fn write_entry(
    e: &BatchEntry,
    resp: http::Response<aisle_cluster::client::ReadBody>,
    size: u64,
    tx: &mpsc::Sender<Chunk>,
) -> bool {
    let header = match member_header(&e.name(), size) {
        Ok(h) => h,
        Err(x) => {
            let _ = tx.send(Err(std::io::Error::other(x.to_string()))).await;
            return false;
        }
    };
    if !send(tx, header).await {
        return false;
    }
    let mut body = http_body_util::BodyDataStream::new(resp.into_body());
    let mut sent = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(x) => {
                // Mid-member: the tar cannot be repaired; cut the stream.
                let _ = tx.send(Err(std::io::Error::other(x.to_string()))).await;
                return false;
            }
        };
        sent += chunk.len() as u64;
        if !send(tx, chunk).await {
            return false;
        }
    }
    if sent != size {
        let _ = tx
            .send(Err(std::io::Error::other(format!(
                "{}: short read",
                e.name()
            ))))
            .await;
        return false;
    }
    send(tx, vec![0u8; padding(size)]).await
}

async fn placeholder(e: &BatchEntry, why: &str, tx: &mpsc::Sender<Chunk>) -> bool {
    let name = format!("__missing__/{}", e.name());
    let msg = why.as_bytes().to_vec();
    match member_header(&name, msg.len() as u64) {
        Ok(h) => {
            send(tx, h).await
                && send(tx, msg.clone()).await
                && send(tx, vec![0u8; padding(msg.len() as u64)]).await
        }
        Err(_) => true,
    }
}

/// Validate a batch and start streaming it. `known_transform` says whether a stage name is a
/// built-in or a registered transform.
pub async fn get_batch(
    targets: Targets,
    buckets: Vec<String>,
    known_transform: impl Fn(&str) -> bool,
    req: BatchRequest,
) -> S3Result<S3Response<Body>> {
    if req.entries.is_empty() || req.entries.len() > MAX_ENTRIES {
        return Err(s3_error(
            S3ErrorCode::InvalidArgument,
            format!("a batch has 1..={MAX_ENTRIES} entries"),
        ));
    }
    if let Some(e) = req.entries.iter().find(|e| !buckets.contains(&e.bucket)) {
        return Err(s3_error(
            S3ErrorCode::NoSuchBucket,
            format!("no bucket {}", e.bucket),
        ));
    }
    if let Some(unknown) = req
        .entries
        .iter()
        .filter_map(BatchEntry::etl_selection)
        .flat_map(|s| s.pipeline)
        .find(|n| !known_transform(n))
    {
        let mut e = s3_error(
            S3ErrorCode::Custom("InvalidEtl".into()),
            format!("unknown transform {unknown:?}"),
        );
        e.set_status_code(StatusCode::BAD_REQUEST);
        return Err(e);
    }
    let (tx, mut rx) = mpsc::channel::<Chunk>(16);
    let missing = req.missing;
    tokio::spawn(async move {
        let opened = futures::stream::iter(req.entries)
            .map(|e| {
                let targets = targets.clone();
                async move {
                    let r = open_entry(&targets, &e).await;
                    (e, r)
                }
            })
            .buffered(READ_AHEAD);
        futures::pin_mut!(opened);
        while let Some((e, r)) = opened.next().await {
            let e = &e;
            match r {
                Ok((resp, size)) => {
                    if !write_entry(e, resp, size, &tx).await {
                        return;
                    }
                }
                Err(why) => match missing {
                    OnMissing::Placeholder => {
                        if !placeholder(e, &why, &tx).await {
                            return;
                        }
                    }
                    OnMissing::Fail => {
                        let _ = tx
                            .send(Err(std::io::Error::other(format!("{}: {why}", e.name()))))
                            .await;
                        return;
                    }
                },
            }
        }
        let _ = send(&tx, END_OF_ARCHIVE.to_vec()).await;
    });
    // A failure before the first byte is a clean error response.
    let first = match rx.recv().await {
        Some(Ok(b)) => b,
        Some(Err(e)) => {
            let mut err = s3_error(S3ErrorCode::NoSuchKey, e.to_string());
            err.set_status_code(StatusCode::NOT_FOUND);
            return Err(err);
        }
        None => Bytes::new(),
    };
    let rest = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let frames = futures::stream::once(async move { Ok(first) })
        .chain(rest)
        .map(|r: Chunk| r.map(hyper::body::Frame::data));
    let mut resp = S3Response::new(Body::http_body(http_body_util::StreamBody::new(frames)));
    resp.status = Some(StatusCode::OK);
    resp.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    Ok(resp)
}
