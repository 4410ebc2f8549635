//! Typed calls from the gateway to targets: placement picks the target, this module talks to it.

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
#[error("no storage target is registered")]
pub struct NoTargets;

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

    /// The target owning `(bucket, key)`.
    pub fn owner(&self, bucket: &str, key: &str) -> Result<TargetInfo, NoTargets> {
        self.meta
            .snapshot()
            .owner(bucket, key)
            .cloned()
            .ok_or(NoTargets)
    }

    /// Every target.
    pub fn all(&self) -> Vec<TargetInfo> {
        self.meta.snapshot().targets.values().cloned().collect()
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

    /// PUT an object's bytes.
    pub async fn put_object(
        &self,
        t: &TargetInfo,
        q: &ObjectQuery,
        attrs: &ObjectAttrs,
        opts: &WriteOptions,
        body: ReqBody,
    ) -> Result<ObjectMeta, ClientError> {
        let body = match self.client.put_local(&t.url, q, attrs, opts, body).await {
            Ok(done) => return done,
            Err(body) => body,
        };
        let url = Self::url(t, proto::T_OBJECT, q);
        let resp = self
            .upload(Method::PUT, url.clone(), Some(attrs), Some(opts), body)
            .await?;
        read_json(&url, resp).await
    }

    /// GET or HEAD an object. Any status comes back as is: 304/412 carry the metadata header.
    /// A plain read of a target on this host goes through its descriptor socket (the gateway
    /// reads the files itself); everything else, and any failure of that path, over HTTP.
    pub async fn read_object(
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

    /// DELETE an object (succeeds on a missing key).
    pub async fn delete_object(&self, t: &TargetInfo, q: &ObjectQuery) -> Result<(), ClientError> {
        let url = Self::url(t, proto::T_OBJECT, q);
        let req = client::request(Method::DELETE, &url)
            .body(client::empty())
            .expect("valid request parts");
        self.client.send_ok(req).await.map(drop)
    }

    /// One listing page from `t`.
    pub async fn list(&self, t: &TargetInfo, q: &ListQuery) -> Result<ListPage, ClientError> {
        let url = Self::url(t, proto::T_LIST, q);
        self.client.json::<(), _>(Method::GET, &url, None).await
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
        self.client.json(Method::POST, &url, Some(req)).await
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
        self.client.json::<(), _>(Method::GET, &url, None).await
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

    /// Append a member to a shard.
    pub async fn append_member(
        &self,
        t: &TargetInfo,
        q: &proto::AppendQuery,
        body: ReqBody,
    ) -> Result<ObjectMeta, ClientError> {
        let url = Self::url(t, proto::T_ARCHIVE_APPEND, q);
        let resp = self
            .upload(Method::PUT, url.clone(), None, None, body)
            .await?;
        read_json(&url, resp).await
    }

    /// The members of a shard.
    pub async fn archive_members(
        &self,
        t: &TargetInfo,
        q: &ObjectQuery,
    ) -> Result<serde_json::Value, ClientError> {
        let url = Self::url(t, proto::T_ARCHIVE, q);
        self.client.json::<(), _>(Method::GET, &url, None).await
    }

    /// A target's status, with per-mountpath object counts.
    pub async fn status(&self, t: &TargetInfo) -> Result<TargetStatus, ClientError> {
        let url = Self::url(t, proto::T_STATUS, &proto::StatusQuery { counts: true });
        self.client.json::<(), _>(Method::GET, &url, None).await
    }
}

/// The Content-Length of a target's answer, when it has one (a streamed transform has none).
pub fn content_length<B>(resp: &Response<B>) -> Option<u64> {
    resp.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
