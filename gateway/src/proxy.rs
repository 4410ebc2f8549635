//! Typed calls from the gateway to targets: placement ([`aisle_cluster::copies`]) picks the
//! targets, this module talks to them.
//!
//! * Writes go to the first target of the write set with the others named as replicas; that
//!   target publishes and pushes the copies before it answers. Each write carries a fresh
//!   version stamp ([`Targets::stamp`]).
//! * Reads try the live targets in read order: on a miss (404) or an unreachable target the
//!   next one is asked ("get from neighbour"), until one has it or one holds a tombstone.
//! * No call waits on a target the prober has marked down: it is given up the moment the mark
//!   is made ([`Targets::guarded`]), and fails over or answers 503.

use std::sync::Arc;

use aisle_cluster::client::{self, ClientError, NodeClient, ReadBody, ReqBody, read_json};
use aisle_cluster::listing::ListPage;
use aisle_cluster::map::TargetInfo;
use aisle_cluster::proto::{
    self, COMMIT_TRAILER, CompleteRequest, ListQuery, META_HEADER, ObjectAttrs, ObjectMeta,
    ObjectQuery, PartInfo, PartsPage, PartsQuery, READ_HEADER, ReadOptions, TargetStatus,
    UploadInfo, UploadQuery, UploadsQuery, WRITE_HEADER, WriteOptions,
};
use http::{Method, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::meta::MetaOwner;

/// No target can serve the request.
#[derive(Debug, thiserror::Error)]
pub enum NoTargets {
    /// None has joined.
    #[error("no storage target has joined the cluster yet; retry shortly")]
    None,
    /// Fewer live targets than the bucket's copies.
    #[error(
        "the bucket keeps {copies} copies but only {live} of their targets are up; retry shortly"
    )]
    TooFewUp {
        /// Copies the bucket keeps.
        copies: usize,
        /// Live member targets.
        live: usize,
    },
    /// A listing cannot be complete.
    #[error(
        "targets {0} are down and the bucket keeps too few copies to list without them; retry shortly"
    )]
    ListingIncomplete(String),
}

/// Where a write goes: the target that publishes it, and what it is told.
pub struct WritePlan {
    /// The target that receives the bytes and publishes them.
    pub target: TargetInfo,
    /// The stamp and the other copies' targets (for a put, add the put's own conditions).
    pub opts: WriteOptions,
}

/// The gateway's handle on the targets.
#[derive(Clone)]
pub struct Targets {
    client: NodeClient,
    meta: Arc<MetaOwner>,
}

impl Targets {
    /// Calls targets with `client`, placing by `meta`.
    pub fn new(client: NodeClient, meta: Arc<MetaOwner>) -> Self {
        Self { client, meta }
    }

    /// A fresh write stamp: nanoseconds since the epoch, strictly increasing in this process
    /// (and across restarts, as long as the clock does not go back).
    pub fn stamp() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static LAST: AtomicU64 = AtomicU64::new(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut last = LAST.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(x) => last = x,
            }
        }
    }

    /// Where a write of `(bucket, key)` goes, with a fresh stamp.
    pub fn write_plan(&self, bucket: &str, key: &str) -> Result<WritePlan, NoTargets> {
        let meta = self.meta.snapshot();
        if meta.targets.is_empty() {
            return Err(NoTargets::None);
        }
        let copies = meta.copies(bucket);
        let set = meta.write_set(bucket, key, copies);
        if set.len() < copies {
            return Err(NoTargets::TooFewUp {
                copies,
                live: set.len(),
            });
        }
        Ok(WritePlan {
            target: set[0].clone(),
            opts: WriteOptions {
                if_absent: false,
                version: Self::stamp(),
                replicas: set[1..]
                    .iter()
                    .map(|t| proto::Peer {
                        id: t.id.clone(),
                        url: t.url.clone(),
                    })
                    .collect(),
            },
        })
    }

    /// The target that holds `(bucket, key)`'s pending multipart uploads: the first of its
    /// write set.
    pub fn upload_owner(&self, bucket: &str, key: &str) -> Result<TargetInfo, NoTargets> {
        let meta = self.meta.snapshot();
        let copies = meta.copies(bucket);
        meta.write_set(bucket, key, copies)
            .first()
            .map(|t| (*t).clone())
            .ok_or(NoTargets::None)
    }

    /// Every live target (listings, uploads, status).
    pub fn all(&self) -> Vec<TargetInfo> {
        self.meta
            .snapshot()
            .targets
            .values()
            .filter(|t| t.is_alive())
            .cloned()
            .collect()
    }

    /// The live targets whose pages together list `bucket` completely: every live target,
    /// as long as fewer targets are down than the bucket keeps copies (so every key has a
    /// live copy). Otherwise the listing cannot be complete and fails.
    pub fn listing_targets(&self, bucket: &str) -> Result<Vec<TargetInfo>, NoTargets> {
        let meta = self.meta.snapshot();
        let down: Vec<&str> = meta
            .targets
            .values()
            .filter(|t| !t.is_alive())
            .map(|t| t.id.as_str())
            .collect();
        if !down.is_empty() && down.len() >= meta.copies(bucket) {
            return Err(NoTargets::ListingIncomplete(down.join(", ")));
        }
        Ok(self.all())
    }

    /// Run a call to `target`, giving it up (as unreachable) the moment the prober marks that
    /// target down: nothing waits on a frozen node for longer than its detection.
    pub async fn guarded<T>(
        &self,
        target: &TargetInfo,
        call: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let mut watch = self.meta.watch();
        let id = target.id.clone();
        let down = async move {
            let _ = watch
                .wait_for(|m| m.targets.get(&id).is_none_or(|t| !t.is_alive()))
                .await;
        };
        tokio::select! {
            r = call => r,
            () = down => Err(ClientError::Down { url: target.url.clone() }),
        }
    }

    /// Read `(bucket, key)` from the first live target that has it, in read order; the answer
    /// is any status other than a miss (a 304/412 carries the metadata header), and the target
    /// that gave it. A miss everywhere (or a tombstone) is a 404 `NoSuchKey`.
    pub async fn read(
        &self,
        q: &ObjectQuery,
        opts: &ReadOptions,
        head: bool,
    ) -> Result<(Response<ReadBody>, TargetInfo), ClientError> {
        let meta = self.meta.snapshot();
        let order: Vec<TargetInfo> = meta
            .read_order(&q.bucket, &q.key)
            .into_iter()
            .cloned()
            .collect();
        // Settled, a key is on its first `copies` targets or nowhere; otherwise it may be
        // anywhere a move or an outage left it.
        let tries = if meta.settled() {
            meta.copies(&q.bucket).min(order.len())
        } else {
            order.len()
        };
        let mut last: Option<ClientError> = None;
        for t in order.iter().take(tries) {
            match self.guarded(t, self.read_object(t, q, opts, head)).await {
                Ok(resp) if resp.status() == http::StatusCode::NOT_FOUND => {
                    let err = client::status_error(t.url.clone(), resp).await;
                    match &err {
                        ClientError::Status { body, .. } if body.code == "NoSuchKeyDeleted" => {
                            return Err(not_found(t, "the key was deleted"));
                        }
                        ClientError::Status { body, .. } if body.code == "NoSuchKey" => {
                            last = Some(err);
                        }
                        _ => return Err(err),
                    }
                }
                Ok(resp) => return Ok((resp, t.clone())),
                Err(e @ (ClientError::Transport { .. } | ClientError::Down { .. })) => {
                    tracing::warn!(target = %t.id, error = %e, "read failed over to the next copy");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        // A miss while a holder is down (or out) is not a miss: it may have the only copy.
        let copies = meta.copies(&q.bucket);
        if let Some(down) = meta
            .ranked(&q.bucket, &q.key)
            .into_iter()
            .filter(|t| t.admin == aisle_cluster::map::AdminState::Active)
            .take(copies)
            .find(|t| !t.is_alive())
            && !matches!(last, Some(ClientError::Status { ref body, .. }) if body.code != "NoSuchKey")
        {
            return Err(ClientError::Down {
                url: down.url.clone(),
            });
        }
        Err(last.unwrap_or_else(|| match order.first() {
            Some(t) => not_found(t, "the specified key does not exist"),
            None => ClientError::Down {
                url: "(no live target)".into(),
            },
        }))
    }

    /// Delete `(bucket, key)` everywhere it may be: a tombstone on its write set (so a copy
    /// that comes back from an outage is deleted, not restored), a plain delete on every other
    /// live target (strays a move left). Fails if a write-set target fails.
    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), ClientError> {
        let plan = self
            .write_plan(bucket, key)
            .map_err(|e| ClientError::Down { url: e.to_string() })?;
        let meta = self.meta.snapshot();
        let copies = meta.copies(bucket);
        let holders: Vec<String> = meta
            .write_set(bucket, key, copies)
            .iter()
            .map(|t| t.id.clone())
            .collect();
        let calls = self.all().into_iter().map(|t| {
            let q = proto::DeleteQuery {
                bucket: bucket.into(),
                key: key.into(),
                version: plan.opts.version,
                tombstone: holders.contains(&t.id),
            };
            async move {
                let url = Self::url(&t, proto::T_OBJECT, &q);
                let req = client::request(Method::DELETE, &url)
                    .body(client::empty())
                    .expect("valid request parts");
                let r = self.guarded(&t, self.client.send_ok(req)).await;
                (q.tombstone, r)
            }
        });
        for (required, r) in futures::future::join_all(calls).await {
            if let Err(e) = r
                && required
            {
                return Err(e);
            }
        }
        Ok(())
    }

    fn url<Q: serde::Serialize>(t: &TargetInfo, path: &str, q: &Q) -> String {
        format!("{}{}", t.url, proto::path_and_query(path, q))
    }

    /// Stream an upload to `t` (see [`proto::COMMIT_TRAILER`]).
    async fn upload(
        &self,
        method: Method,
        url: String,
        meta: Option<&ObjectAttrs>,
        opts: Option<&WriteOptions>,
        body: ReqBody,
    ) -> Result<Response<Incoming>, ClientError> {
        let mut req = client::request(method, &url)
            .header(header::TRAILER, COMMIT_TRAILER)
            .header(header::CONTENT_TYPE, "application/octet-stream");
        if let Some(m) = meta {
            req = req.header(META_HEADER, proto::encode_header(m));
        }
        if let Some(o) = opts {
            req = req.header(WRITE_HEADER, proto::encode_header(o));
        }
        let req = req.body(body).expect("valid request parts");
        self.client.send_ok(req).await
    }

    /// PUT an object's bytes as `plan` says; answered once every copy is durable.
    pub async fn put_object(
        &self,
        plan: &WritePlan,
        q: &ObjectQuery,
        attrs: &ObjectAttrs,
        body: ReqBody,
    ) -> Result<ObjectMeta, ClientError> {
        let (t, opts) = (&plan.target, &plan.opts);
        self.guarded(t, async {
            let body = match self.client.put_local(&t.url, q, attrs, opts, body).await {
                Ok(done) => return done,
                Err(body) => body,
            };
            let url = Self::url(t, proto::T_OBJECT, q);
            let resp = self
                .upload(Method::PUT, url.clone(), Some(attrs), Some(opts), body)
                .await?;
            read_json(&url, resp).await
        })
        .await
    }

    /// GET or HEAD an object on `t`. Any status comes back as is: 304/412 carry the metadata
    /// header. A plain read of a target on this host goes through its descriptor socket (the
    /// gateway reads the files itself); everything else, and any failure of that path, over
    /// HTTP.
    async fn read_object(
        &self,
        t: &TargetInfo,
        q: &ObjectQuery,
        opts: &ReadOptions,
        head: bool,
    ) -> Result<Response<ReadBody>, ClientError> {
        if opts.archive.is_none()
            && let Some(resp) = self.client.read_local(&t.url, q, opts, head).await
        {
            return Ok(resp);
        }
        let url = Self::url(t, proto::T_OBJECT, q);
        let req = client::request(if head { Method::HEAD } else { Method::GET }, &url)
            .header(READ_HEADER, proto::encode_header(opts))
            .body(client::empty())
            .expect("valid request parts");
        let resp = self.client.send(req).await?;
        Ok(resp.map(|b| b.map_err(|e| Box::new(e) as client::BoxError).boxed()))
    }

    /// One listing page from `t`.
    pub async fn list(&self, t: &TargetInfo, q: &ListQuery) -> Result<ListPage, ClientError> {
        let url = Self::url(t, proto::T_LIST, q);
        self.guarded(t, self.client.json::<(), _>(Method::GET, &url, None))
            .await
    }

    /// Start a multipart upload on `t`.
    pub async fn create_upload(
        &self,
        t: &TargetInfo,
        q: &UploadQuery,
        attrs: &ObjectAttrs,
    ) -> Result<String, ClientError> {
        let url = Self::url(t, proto::T_MPU, q);
        let req = client::request(Method::POST, &url)
            .header(META_HEADER, proto::encode_header(attrs))
            .body(client::empty())
            .expect("valid request parts");
        let resp = self.client.send_ok(req).await?;
        let v: std::collections::HashMap<String, String> = read_json(&url, resp).await?;
        v.get("upload_id").cloned().ok_or(ClientError::Body {
            url,
            message: "no upload_id in the answer".into(),
        })
    }

    /// Stream one part.
    pub async fn put_part(
        &self,
        t: &TargetInfo,
        q: &UploadQuery,
        body: ReqBody,
    ) -> Result<PartInfo, ClientError> {
        let body = match self.client.put_part_local(&t.url, q, body).await {
            Ok(done) => return done,
            Err(body) => body,
        };
        let url = Self::url(t, proto::T_MPU_PART, q);
        let resp = self
            .upload(Method::PUT, url.clone(), None, None, body)
            .await?;
        read_json(&url, resp).await
    }

    /// Publish an upload.
    pub async fn complete(
        &self,
        t: &TargetInfo,
        q: &UploadQuery,
        req: &CompleteRequest,
    ) -> Result<ObjectMeta, ClientError> {
        let url = Self::url(t, proto::T_MPU_COMPLETE, q);
        self.guarded(t, self.client.json(Method::POST, &url, Some(req)))
            .await
    }

    /// Abort an upload.
    pub async fn abort(&self, t: &TargetInfo, q: &UploadQuery) -> Result<(), ClientError> {
        let url = Self::url(t, proto::T_MPU, q);
        self.client
            .json::<(), serde_json::Value>(Method::DELETE, &url, None)
            .await
            .map(drop)
    }

    /// A page of an upload's parts.
    pub async fn list_parts(
        &self,
        t: &TargetInfo,
        q: &PartsQuery,
    ) -> Result<PartsPage, ClientError> {
        let url = Self::url(t, proto::T_MPU_PARTS, q);
        self.client.json::<(), _>(Method::GET, &url, None).await
    }

    /// Pending uploads on `t`.
    pub async fn list_uploads(
        &self,
        t: &TargetInfo,
        q: &UploadsQuery,
    ) -> Result<Vec<UploadInfo>, ClientError> {
        let url = Self::url(t, proto::T_MPU_UPLOADS, q);
        self.guarded(t, self.client.json::<(), _>(Method::GET, &url, None))
            .await
    }

    /// Drop a bucket's pending uploads on `t`.
    pub async fn drop_bucket(&self, t: &TargetInfo, bucket: &str) -> Result<(), ClientError> {
        let url = Self::url(
            t,
            proto::T_BUCKET,
            &proto::BucketQuery {
                bucket: bucket.into(),
            },
        );
        self.client
            .json::<(), serde_json::Value>(Method::DELETE, &url, None)
            .await
            .map(drop)
    }

    /// A target's view of a registered transform.
    pub async fn etl_status(
        &self,
        t: &TargetInfo,
        name: &str,
    ) -> Result<proto::EtlNodeStatus, ClientError> {
        let url = Self::url(t, proto::T_ETL, &proto::EtlQuery { name: name.into() });
        self.client.json::<(), _>(Method::GET, &url, None).await
    }

    /// Append a member to a shard, as `plan` says.
    pub async fn append_member(
        &self,
        plan: &WritePlan,
        q: &proto::AppendQuery,
        body: ReqBody,
    ) -> Result<ObjectMeta, ClientError> {
        let url = Self::url(&plan.target, proto::T_ARCHIVE_APPEND, q);
        self.guarded(&plan.target, async {
            let resp = self
                .upload(Method::PUT, url.clone(), None, Some(&plan.opts), body)
                .await?;
            read_json(&url, resp).await
        })
        .await
    }

    /// The members of a shard, from the first live target that holds it.
    pub async fn archive_members(&self, q: &ObjectQuery) -> Result<serde_json::Value, ClientError> {
        let meta = self.meta.snapshot();
        let mut last = None;
        for t in meta.read_order(&q.bucket, &q.key) {
            let url = Self::url(t, proto::T_ARCHIVE, q);
            match self
                .guarded(t, self.client.json::<(), _>(Method::GET, &url, None))
                .await
            {
                Ok(v) => return Ok(v),
                Err(e @ ClientError::Status { .. }) if !matches!(&e, ClientError::Status { body, .. } if body.code == "NoSuchKey") =>
                {
                    return Err(e);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ClientError::Down {
            url: "(no live target)".into(),
        }))
    }

    /// A target's status, with per-mountpath object counts.
    pub async fn status(&self, t: &TargetInfo) -> Result<TargetStatus, ClientError> {
        let url = Self::url(t, proto::T_STATUS, &proto::StatusQuery { counts: true });
        self.client.json::<(), _>(Method::GET, &url, None).await
    }
}

fn not_found(t: &TargetInfo, message: &str) -> ClientError {
    ClientError::Status {
        url: t.url.clone(),
        status: http::StatusCode::NOT_FOUND,
        body: proto::ErrorBody {
            code: "NoSuchKey".into(),
            message: message.into(),
        },
    }
}

/// The Content-Length of a target's answer, when it has one (a streamed transform has none).
pub fn content_length<B>(resp: &Response<B>) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
