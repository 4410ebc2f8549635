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
use aisle_cluster::map::{AdminState, ClusterMeta, TargetInfo};
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

/// Where a write goes: its write set (the first receives the bytes and publishes them, the
/// others are named as its replicas) and the options the first is told.
pub struct WritePlan {
    /// The target that receives the bytes and publishes them.
    pub target: TargetInfo,
    /// The stamp and the other copies' targets (for a put, add the put's own conditions).
    pub opts: WriteOptions,
}

/// What [`Targets::retag`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retagged {
    /// Every copy of that version has the new tags.
    Done,
    /// A copy holds another version: the object changed meanwhile.
    Stale,
    /// No target holds the object (deleted meanwhile).
    Missing,
}

/// The object's record that came with a read's answer (its metadata header), decoded once by
/// [`Targets::read`] and carried in the answer's extensions: the S3 handlers, jobs and the
/// kept small objects ([`crate::hot`]) all take it from there.
#[derive(Clone)]
pub struct Record(pub Arc<ObjectMeta>);

impl Record {
    /// Decode `resp`'s metadata header, if it has one, into its extensions.
    fn attach<B>(resp: &mut Response<B>) {
        let meta = resp
            .headers()
            .get(META_HEADER)
            .and_then(|v| proto::decode_header::<ObjectMeta>(v.as_bytes()).ok());
        if let Some(m) = meta {
            resp.extensions_mut().insert(Record(Arc::new(m)));
        }
    }

    /// The record of an answer of [`Targets::read`].
    pub fn of<B>(resp: &Response<B>) -> Option<&Arc<ObjectMeta>> {
        resp.extensions().get::<Record>().map(|r| &r.0)
    }

    /// Take the record out of an answer of [`Targets::read`] (copied only if it is also kept).
    pub fn take<B>(resp: &mut Response<B>) -> Option<ObjectMeta> {
        let r = resp.extensions_mut().remove::<Record>()?;
        Some(Arc::try_unwrap(r.0).unwrap_or_else(|m| (*m).clone()))
    }
}

/// The gateway's handle on the targets.
#[derive(Clone)]
pub struct Targets {
    client: NodeClient,
    meta: Arc<MetaOwner>,
    remotes: Arc<aisle_remote::Remotes>,
    metrics: Arc<crate::metrics::GatewayMetrics>,
    hot: Option<Arc<crate::hot::HotReads>>,
}

impl Targets {
    /// Calls targets with `client`, placing by `meta`, counting in `metrics`.
    pub fn new(
        client: NodeClient,
        meta: Arc<MetaOwner>,
        metrics: Arc<crate::metrics::GatewayMetrics>,
    ) -> Self {
        Self {
            client,
            meta,
            remotes: Default::default(),
            metrics,
            hot: None,
        }
    }

    /// Keep small objects read from targets on this host while they do not change
    /// ([`crate::hot`]), up to `max_bytes` (0: none).
    pub fn keeping_small_objects(mut self, max_bytes: u64) -> Self {
        self.hot = crate::hot::HotReads::new(self.client.clone(), max_bytes);
        self
    }

    /// The gateway's metrics.
    pub fn metrics(&self) -> &crate::metrics::GatewayMetrics {
        &self.metrics
    }

    /// The store behind `bucket`, if it is a remote bucket (listings, deletes and the admin
    /// checks go to it from the gateway; reads and writes go through the owning target).
    pub fn remote(
        &self,
        bucket: &str,
    ) -> Option<Result<aisle_remote::Remote, aisle_remote::RemoteError>> {
        let meta = self.meta.snapshot();
        let spec = meta.buckets.get(bucket)?.remote.as_ref()?;
        Some(self.remotes.get(bucket, spec))
    }

    /// Ask `t` for the cache state of `(bucket, key)`, or have it prefetch or evict it
    /// ([`proto::T_CACHE`]).
    pub async fn cache(
        &self,
        t: &TargetInfo,
        bucket: &str,
        key: &str,
        op: Option<&str>,
    ) -> Result<proto::CacheState, ClientError> {
        let q = proto::CacheQuery {
            bucket: bucket.into(),
            key: key.into(),
            op: op.map(str::to_string),
        };
        let url = Self::url(t, proto::T_CACHE, &q);
        let method = if op.is_some() {
            Method::POST
        } else {
            Method::GET
        };
        self.guarded(t, self.client.json::<(), _>(method, &url, None))
            .await
    }

    /// Drop the cached copy of `(bucket, key)` of a remote bucket on each of `targets` (its
    /// [`Self::listing_targets`]; the remote is not touched); the bytes freed.
    pub async fn evict(
        &self,
        targets: &[TargetInfo],
        bucket: &str,
        key: &str,
    ) -> Result<u64, ClientError> {
        let mut freed = 0;
        for t in targets {
            let st = self.cache(t, bucket, key, Some("evict")).await?;
            if st.evicted {
                freed += st.size.unwrap_or(0);
            }
        }
        Ok(freed)
    }

    /// The target that fetches `(bucket, key)` of a remote bucket on a miss: the first in
    /// its read order.
    pub fn fetcher(&self, bucket: &str, key: &str) -> Result<TargetInfo, NoTargets> {
        let meta = self.meta.snapshot();
        meta.read_order(bucket, key)
            .first()
            .map(|t| (*t).clone())
            .ok_or(NoTargets::None)
    }

    /// A fresh write stamp: nanoseconds since the epoch, strictly increasing in this process
    /// (and across restarts, as long as the clock does not go back).
    pub fn stamp() -> u64 {
        aisle_cluster::stamp()
    }

    /// The write set of `(bucket, key)`, refused when fewer of its targets are up than the
    /// bucket keeps copies.
    fn write_set(
        meta: &ClusterMeta,
        bucket: &str,
        key: &str,
    ) -> Result<Vec<TargetInfo>, NoTargets> {
        if meta.targets.is_empty() {
            return Err(NoTargets::None);
        }
        let copies = meta.copies(bucket);
        let set: Vec<TargetInfo> = meta
            .write_set(bucket, key, copies)
            .into_iter()
            .cloned()
            .collect();
        if set.len() < copies {
            return Err(NoTargets::TooFewUp {
                copies,
                live: set.len(),
            });
        }
        Ok(set)
    }

    /// Where a write of `(bucket, key)` goes, with a fresh stamp and the bucket's versioning.
    pub fn write_plan(&self, bucket: &str, key: &str) -> Result<WritePlan, NoTargets> {
        let meta = self.meta.snapshot();
        let mut set = Self::write_set(&meta, bucket, key)?;
        let versioning = meta
            .buckets
            .get(bucket)
            .map(|b| b.versioning)
            .unwrap_or_default();
        let replicas = set
            .drain(1..)
            .map(|t| proto::Peer {
                id: t.id,
                url: t.url,
            })
            .collect();
        Ok(WritePlan {
            target: set.remove(0),
            opts: WriteOptions {
                versioning,
                if_absent: false,
                version: Self::stamp(),
                replicas,
            },
        })
    }

    /// The target that holds `(bucket, key)`'s pending multipart uploads: the first of its
    /// write set.
    pub fn upload_owner(&self, bucket: &str, key: &str) -> Result<TargetInfo, NoTargets> {
        Ok(Self::write_set(&self.meta.snapshot(), bucket, key)?.remove(0))
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
        let started = std::time::Instant::now();
        let r = tokio::select! {
            r = call => r,
            () = down => Err(ClientError::Down { url: target.url.clone() }),
        };
        self.metrics
            .target_calls
            .observe(started.elapsed().as_secs_f64());
        r
    }

    /// Ask the live targets in read order for `(bucket, key)` until one answers other than a
    /// miss ("get from neighbour"): `call` on a target, with the answer and the target that
    /// gave it. A miss (404 `NoSuchKey`), an unreachable target or one marked down moves on to
    /// the next; a tombstone (`NoSuchKeyDeleted`) stops the search with `NoSuchKey`; any other
    /// error is the answer. A miss everywhere while a holder is down is 503, not 404: that
    /// holder may have the only copy.
    async fn ask_holders<T, Fut>(
        &self,
        bucket: &str,
        key: &str,
        call: impl Fn(TargetInfo) -> Fut,
    ) -> Result<(T, TargetInfo), ClientError>
    where
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let meta = self.meta.snapshot();
        let order = meta.read_order(bucket, key);
        let copies = meta.copies(bucket);
        // Settled, a key is on its first `copies` targets or nowhere; otherwise it may be
        // anywhere a move or an outage left it.
        let tries = if meta.settled() {
            copies.min(order.len())
        } else {
            order.len()
        };
        let mut last: Option<ClientError> = None;
        for &t in order.iter().take(tries) {
            match self.guarded(t, call(t.clone())).await {
                Ok(v) => return Ok((v, t.clone())),
                Err(ClientError::Status { body, .. }) if body.code == "NoSuchKeyDeleted" => {
                    return Err(not_found(t, "the key was deleted", body.delete_marker));
                }
                Err(e @ ClientError::Status { .. }) if is_miss(&e) => last = Some(e),
                // A copy that fails its check is not served; the next one is.
                Err(e @ ClientError::Status { .. }) if is_corrupt(&e) => {
                    tracing::error!(target = %t.id, error = %e, "corrupt copy: reading another");
                    last = Some(e);
                }
                Err(e @ (ClientError::Transport { .. } | ClientError::Down { .. })) => {
                    tracing::warn!(target = %t.id, error = %e, "failed over to the next copy");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let down_holder = meta
            .ranked(bucket, key)
            .into_iter()
            .filter(|t| t.admin == AdminState::Active)
            .take(copies)
            .find(|t| !t.is_alive());
        match (down_holder, last) {
            (Some(t), None) => Err(ClientError::Down { url: t.url.clone() }),
            (Some(t), Some(e)) if is_miss(&e) => Err(ClientError::Down { url: t.url.clone() }),
            (_, Some(e)) => Err(e),
            (None, None) => Err(ClientError::Down {
                url: "(no live target)".into(),
            }),
        }
    }

    /// Read `(bucket, key)` from the first live target that has it (see
    /// [`Self::ask_holders`]); the answer is any status other than a miss (a 304/412 carries
    /// the metadata header), with the target that gave it. A plain GET of a small object may
    /// be answered from what an earlier one kept ([`crate::hot`]). The answer carries the
    /// object's [`Record`].
    pub async fn read(
        &self,
        q: &ObjectQuery,
        opts: &ReadOptions,
        head: bool,
    ) -> Result<(Response<ReadBody>, TargetInfo), ClientError> {
        let Some(hot) = self
            .hot
            .as_ref()
            .filter(|_| crate::hot::HotReads::plain(q, opts, head))
        else {
            return self.read_from_targets(q, opts, head).await;
        };
        let meta = self.meta.snapshot();
        if let Some(kept) = hot.get(&meta, q) {
            self.metrics.hot_hits.inc();
            return Ok(kept);
        }
        self.metrics.hot_misses.inc();
        // Taken before the call: a change committed meanwhile leaves what is kept unused.
        let seen = hot.seen(&meta, q);
        let (resp, t) = self.read_from_targets(q, opts, head).await?;
        if let Some(seen) = seen {
            hot.keep(seen, q, &resp, &t);
        }
        Ok((resp, t))
    }

    async fn read_from_targets(
        &self,
        q: &ObjectQuery,
        opts: &ReadOptions,
        head: bool,
    ) -> Result<(Response<ReadBody>, TargetInfo), ClientError> {
        self.ask_holders(&q.bucket, &q.key, |t| async move {
            let mut resp = self.read_object(&t, q, opts, head).await?;
            // A miss or a failure (a corrupt copy among them) as an error the loop can judge.
            if resp.status() == http::StatusCode::NOT_FOUND || resp.status().is_server_error() {
                return Err(client::status_error(t.url.clone(), resp).await);
            }
            Record::attach(&mut resp);
            Ok(resp)
        })
        .await
    }

    /// Offline ETL with direct put: the first live holder of `source` transforms it and writes
    /// the output to `plan`'s target itself ([`proto::T_ETL_PUT`]); the bytes never come here.
    pub async fn etl_put(
        &self,
        source: &ObjectQuery,
        etl: &proto::EtlSelection,
        plan: &WritePlan,
        output: &ObjectQuery,
    ) -> Result<ObjectMeta, ClientError> {
        let body = proto::EtlPutRequest {
            source: source.clone(),
            etl: etl.clone(),
            output: output.clone(),
            to: plan.target.url.clone(),
            write: plan.opts.clone(),
        };
        let (meta, _) = self
            .ask_holders(&source.bucket, &source.key, |t| {
                let body = &body;
                async move {
                    let url = format!("{}{}", t.url, proto::T_ETL_PUT);
                    self.client
                        .json::<_, ObjectMeta>(Method::POST, &url, Some(body))
                        .await
                }
            })
            .await?;
        Ok(meta)
    }

    /// Build one shard on its owner, `plan`'s target ([`proto::T_SHARD_BUILD`]).
    pub async fn build_shard(
        &self,
        plan: &WritePlan,
        request: &proto::ShardBuildRequest,
    ) -> Result<proto::ShardBuildReport, ClientError> {
        let t = &plan.target;
        let url = format!("{}{}", t.url, proto::T_SHARD_BUILD);
        self.guarded(t, self.client.json(Method::POST, &url, Some(request)))
            .await
    }

    /// Delete `(bucket, key)` everywhere it may be, as `plan` says: a tombstone on its write
    /// set (so a copy that comes back from an outage is deleted, not restored), a plain delete
    /// on every other live target (strays a move left). Fails if a write-set target fails.
    ///
    /// With `version_id`, that version is removed for good, everywhere (a stray copy left by
    /// a move must not bring it back). In a bucket with versioning (`plan.opts.versioning`) a
    /// plain delete adds a delete marker stamped like a write, on the write set only, where
    /// the key's versions live. Answers what the first target of the write set did.
    pub async fn delete(
        &self,
        plan: &WritePlan,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> Result<proto::Deleted, ClientError> {
        // A remote bucket keeps no tombstones: its remote decides what exists.
        let remote = self
            .meta
            .snapshot()
            .buckets
            .get(bucket)
            .is_some_and(|b| b.remote.is_some());
        let in_write_set = |t: &TargetInfo| {
            t.id == plan.target.id || plan.opts.replicas.iter().any(|p| p.id == t.id)
        };
        let marker = version_id.is_none() && !plan.opts.versioning.is_off();
        let calls = self
            .all()
            .into_iter()
            .filter(|t| !marker || in_write_set(t))
            .map(|t| {
                let q = proto::DeleteQuery {
                    bucket: bucket.into(),
                    key: key.into(),
                    version: plan.opts.version,
                    tombstone: !remote && in_write_set(&t),
                    versioning: plan.opts.versioning,
                    version_id: version_id.map(str::to_string),
                };
                async move {
                    let url = Self::url(&t, proto::T_OBJECT, &q);
                    let req = client::request(Method::DELETE, &url)
                        .body(client::empty())
                        .expect("valid request parts");
                    let r = match self.guarded(&t, self.client.send_ok(req)).await {
                        Ok(resp) => read_json::<proto::Deleted>(&url, resp).await,
                        Err(e) => Err(e),
                    };
                    (t.id == plan.target.id, in_write_set(&t), r)
                }
            });
        let mut answer = proto::Deleted::default();
        for (first, required, r) in futures::future::join_all(calls).await {
            match r {
                Ok(d) if first => answer = d,
                Ok(_) => {}
                Err(e) if required => return Err(e),
                Err(_) => {}
            }
        }
        Ok(answer)
    }

    /// New tags for `(bucket, key)` at `version` on every target that holds it (copies may be
    /// anywhere during a rebalance, as for deletes). `Stale` when a target holds another
    /// version (a write came in between: the caller reads again); an error when a target that
    /// must hold a copy could not be reached.
    pub async fn retag(
        &self,
        plan: &WritePlan,
        bucket: &str,
        key: &str,
        version: u64,
        tags: &std::collections::BTreeMap<String, String>,
    ) -> Result<Retagged, ClientError> {
        let in_write_set = |t: &TargetInfo| {
            t.id == plan.target.id || plan.opts.replicas.iter().any(|p| p.id == t.id)
        };
        let body = serde_json::to_vec(&proto::RetagRequest {
            version,
            tags: tags.clone(),
        })
        .expect("tags serialize");
        let q = ObjectQuery {
            version_id: None,
            bucket: bucket.into(),
            key: key.into(),
            part: None,
        };
        let calls = self.all().into_iter().map(|t| {
            let url = Self::url(&t, proto::T_OBJECT, &q);
            let body = body.clone();
            async move {
                let req = client::request(Method::PATCH, &url)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(client::full(body))
                    .expect("valid request parts");
                let r = self.guarded(&t, self.client.send_ok(req)).await;
                (in_write_set(&t), r)
            }
        });
        let mut tagged = 0;
        for (required, r) in futures::future::join_all(calls).await {
            match r {
                Ok(_) => tagged += 1,
                Err(ClientError::Status { status, .. }) if status == http::StatusCode::CONFLICT => {
                    return Ok(Retagged::Stale);
                }
                Err(ClientError::Status { status, .. })
                    if status == http::StatusCode::NOT_FOUND => {}
                Err(e) if required => return Err(e),
                Err(_) => {}
            }
        }
        Ok(if tagged == 0 {
            Retagged::Missing
        } else {
            Retagged::Done
        })
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
        let ask = |t: TargetInfo| {
            let url = Self::url(&t, proto::T_ARCHIVE, q);
            async move { self.client.json::<(), _>(Method::GET, &url, None).await }
        };
        Ok(self.ask_holders(&q.bucket, &q.key, ask).await?.0)
    }

    /// Scrub every live target at once (each reading at most `rate_mib` MiB/s, 0: no limit):
    /// verify everything it holds, repair what is corrupt; a report per target.
    pub async fn scrub_all(&self, rate_mib: u64) -> Vec<proto::ScrubReport> {
        let q = proto::ScrubQuery { rate_mib };
        let calls = self.all().into_iter().map(|t| {
            let url = Self::url(&t, proto::T_SCRUB, &q);
            async move {
                self.guarded(&t, self.client.json::<(), _>(Method::POST, &url, None))
                    .await
                    .unwrap_or_else(|e| proto::ScrubReport {
                        id: t.id.clone(),
                        errors: vec![format!("scrub failed: {e}")],
                        ..Default::default()
                    })
            }
        });
        futures::future::join_all(calls).await
    }

    /// Every live target's lifecycle evaluation ([`proto::T_LIFECYCLE`]), by target id.
    pub async fn lifecycle_all(
        &self,
        q: &proto::LifecycleQuery,
    ) -> Vec<(String, Result<proto::LifecycleReport, String>)> {
        let calls = self.all().into_iter().map(|t| {
            let url = Self::url(&t, proto::T_LIFECYCLE, q);
            async move {
                let r = self
                    .guarded(&t, self.client.json::<(), _>(Method::POST, &url, None))
                    .await
                    .map_err(|e| e.to_string());
                (t.id.clone(), r)
            }
        });
        futures::future::join_all(calls).await
    }

    /// The metadata of the object as a plain HEAD finds it now (`None`: no such key).
    pub async fn current_meta(&self, q: &ObjectQuery) -> Result<Option<ObjectMeta>, ClientError> {
        let (mut resp, target) = match self.read(q, &ReadOptions::default(), true).await {
            Ok(r) => r,
            Err(e) if is_miss(&e) => return Ok(None),
            Err(e) => return Err(e),
        };
        if resp.status() == http::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(client::status_error(target.url.clone(), resp).await);
        }
        Ok(Record::take(&mut resp))
    }

    /// A target's status, with per-mountpath object counts.
    pub async fn status(&self, t: &TargetInfo) -> Result<TargetStatus, ClientError> {
        let url = Self::url(t, proto::T_STATUS, &proto::StatusQuery { counts: true });
        self.client.json::<(), _>(Method::GET, &url, None).await
    }
}

/// A target found its copy corrupt (it repairs it itself).
fn is_corrupt(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { body, .. } if body.code == "CorruptCopy")
}

/// A target answered that it does not hold the key.
fn is_miss(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { status, body, .. }
        if *status == http::StatusCode::NOT_FOUND
            && (body.code == "NoSuchKey" || body.code == "NoSuchVersion"))
}

/// A 404 NoSuchKey from `t` (about the delete marker `delete_marker`, if one hides the key).
fn not_found(t: &TargetInfo, message: &str, delete_marker: Option<String>) -> ClientError {
    ClientError::Status {
        url: t.url.clone(),
        status: http::StatusCode::NOT_FOUND,
        body: proto::ErrorBody {
            delete_marker,
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
