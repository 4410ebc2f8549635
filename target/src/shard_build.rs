//! Building a shard on its owner ([`proto::T_SHARD_BUILD`]): this target fetches each member
//! from a target holding it — one hop, holder to owner — and streams the tar (headers, data,
//! padding, end of archive) into a PUT of the shard on itself, with the stamp and copies the
//! gateway planned, so the shard is published and copied like any object. A member that cannot
//! be read before its first byte is skipped and reported; one that fails midway breaks the
//! shard, whose upload then ends without its commit (nothing is published).

use std::sync::Arc;

use aisle_cluster::client::{self, ClientError};
use aisle_cluster::proto::{self, ObjectAttrs, ObjectQuery, ShardBuildReport, ShardBuildRequest};
use aisle_shard::{END_OF_ARCHIVE, member_header, padding, wds_split};
use bytes::Bytes;
use futures::StreamExt;
use http::{Method, Request, header};
use hyper::body::Incoming;
use tokio::sync::mpsc;

use crate::server::{ApiError, Resp, State, api_err, json_resp, read_json_body};

type Chunk = Result<Bytes, std::io::Error>;

enum MemberError {
    /// Before any of its bytes were written: skip it, go on.
    Skip(String),
    /// Midway: the shard is broken.
    Fatal(String),
}

pub(crate) async fn answer(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let r: ShardBuildRequest = read_json_body(req).await?;
    let me = {
        let meta = state.meta.read().expect("meta lock");
        meta.targets
            .get(&state.id)
            .map(|t| t.url.clone())
            .ok_or_else(|| api_err(503, "ServiceUnavailable", "not in the cluster map yet"))?
    };
    let (tx, rx) = mpsc::channel::<Chunk>(16);
    let data = futures::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    });
    let attrs = ObjectAttrs {
        content_type: Some("application/x-tar".into()),
        ..Default::default()
    };
    let (client, output, write) = (state.client.clone(), r.output.clone(), r.write.clone());
    let put =
        tokio::spawn(async move { client.put_object(&me, &output, &attrs, &write, data).await });
    let mut report = ShardBuildReport::default();
    let mut size = 0u64;
    for (i, key) in r.keys.iter().enumerate() {
        // Close at a sample boundary once the shard is big enough.
        if size >= r.shard_size && (i == 0 || wds_split(key).0 != wds_split(&r.keys[i - 1]).0) {
            break;
        }
        report.consumed = i + 1;
        match member(state, &r.source_bucket, key, &tx).await {
            Ok((n, tar_bytes)) => {
                size += tar_bytes;
                report.packed += 1;
                report.bytes += n;
            }
            Err(MemberError::Skip(e)) => report.errors.push(format!("{key}: {e}")),
            Err(MemberError::Fatal(e)) => {
                let _ = tx.send(Err(std::io::Error::other(e.clone()))).await;
                drop(tx);
                let _ = put.await;
                return Err(api_err(502, "ShardBroken", format!("{key}: {e}")));
            }
        }
    }
    let _ = tx.send(Ok(Bytes::from_static(&END_OF_ARCHIVE))).await;
    drop(tx);
    match put.await {
        Ok(Ok(_)) => Ok(json_resp(http::StatusCode::OK, &report)),
        Ok(Err(e)) => Err(write_failed(e)),
        Err(e) => Err(api_err(
            500,
            "InternalError",
            format!("writing the shard: {e}"),
        )),
    }
}

fn write_failed(e: ClientError) -> ApiError {
    api_err(502, "ShardWriteFailed", format!("writing the shard: {e}"))
}

/// Stream `key` into the shard from the first target holding it.
async fn member(
    state: &Arc<State>,
    bucket: &str,
    key: &str,
    tx: &mpsc::Sender<Chunk>,
) -> Result<(u64, u64), MemberError> {
    use MemberError::{Fatal, Skip};
    let holders: Vec<String> = {
        let meta = state.meta.read().expect("meta lock");
        meta.read_order(bucket, key)
            .into_iter()
            .map(|t| t.url.clone())
            .collect()
    };
    let q = ObjectQuery {
        version_id: None,
        bucket: bucket.into(),
        key: key.into(),
        part: None,
    };
    let mut last = String::from("no live target holds it");
    let mut found = None;
    for holder in holders {
        let url = format!("{holder}{}", proto::path_and_query(proto::T_OBJECT, &q));
        let req = client::request(Method::GET, &url)
            .body(client::empty())
            .expect("valid request parts");
        match state.client.send_ok(req).await {
            Ok(resp) => {
                found = Some(resp);
                break;
            }
            // Deleted: no other copy may bring it back.
            Err(ClientError::Status { body, .. }) if body.code == "NoSuchKeyDeleted" => {
                return Err(Skip("the key was deleted".into()));
            }
            Err(e) => last = e.to_string(),
        }
    }
    let resp = found.ok_or(Skip(last))?;
    let size = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| Skip("no length".into()))?;
    let head = member_header(key, size).map_err(|e| Skip(e.to_string()))?;
    let tar_bytes = head.len() as u64 + size + padding(size) as u64;
    let gone = |_| Fatal("the shard's upload ended".into());
    tx.send(Ok(Bytes::from(head))).await.map_err(gone)?;
    let mut body = http_body_util::BodyDataStream::new(resp.into_body());
    let mut sent = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Fatal(e.to_string()))?;
        sent += chunk.len() as u64;
        tx.send(Ok(chunk)).await.map_err(gone)?;
    }
    if sent != size {
        return Err(Fatal("short read".into()));
    }
    tx.send(Ok(Bytes::from(vec![0u8; padding(size)])))
        .await
        .map_err(gone)?;
    Ok((size, tar_bytes))
}
