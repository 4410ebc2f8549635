//! The gateway's Prometheus metrics (`GET /_aisle/metrics` with the metrics bearer token): S3
//! requests by operation and status class with latency, object bytes in and out, the hop to
//! targets, GetBatch, jobs, slow requests.
//!
//! The operation label is S3's operation name, classified from the method, path and
//! sub-resource (a fixed set of about 40 names, plus `Admin`, `Cluster` and `Other`): never a
//! bucket or a key.

use std::time::Duration;

use aisle_cluster::metrics::{NodeRegistry, OpMetrics, latency_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// A job kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// `build-shards`, `etl`, `materialize`, `prefetch`, `evict`.
    pub kind: String,
}

/// The gateway's metrics.
pub struct GatewayMetrics {
    node: NodeRegistry,
    requests: OpMetrics,
    /// S3 requests answered (all operations), for the dashboard's request rate.
    pub requests_total: Counter,
    /// When the gateway started, Unix milliseconds.
    pub started_ms: i64,
    slow: Counter,
    /// Object bytes streamed from targets to clients.
    pub bytes_out: Counter,
    /// Object bytes streamed from clients to targets.
    pub bytes_in: Counter,
    /// Calls to targets, until their answer's head.
    pub target_calls: Histogram,
    /// Plain GETs answered from the small objects the gateway keeps ([`crate::hot`]).
    pub hot_hits: Counter,
    /// Plain GETs the gateway had to ask a target for, with small objects kept.
    pub hot_misses: Counter,
    /// GetBatch requests.
    pub batches: Counter,
    /// Entries of GetBatch requests.
    pub batch_entries: Counter,
    /// Jobs running, by kind.
    pub jobs_running: Family<Kind, Gauge>,
    /// Objects jobs finished (done or failed), by kind.
    pub job_objects: Family<Kind, Counter>,
    /// Per-object job errors, by kind.
    pub job_errors: Family<Kind, Counter>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayMetrics {
    /// The families, registered.
    pub fn new() -> GatewayMetrics {
        let mut node = NodeRegistry::new("gateway");
        let requests = OpMetrics::register(node.registry(), "aisle_s3", "S3 requests");
        let mut m = GatewayMetrics {
            node,
            requests,
            requests_total: Counter::default(),
            started_ms: aisle_cluster::now_ms(),
            slow: Counter::default(),
            bytes_out: Counter::default(),
            bytes_in: Counter::default(),
            target_calls: latency_histogram(),
            hot_hits: Counter::default(),
            hot_misses: Counter::default(),
            batches: Counter::default(),
            batch_entries: Counter::default(),
            jobs_running: Family::default(),
            job_objects: Family::default(),
            job_errors: Family::default(),
        };
        let r = m.node.registry();
        r.register(
            "aisle_s3_slow_requests",
            "S3 requests slower than the slow-request threshold (each is logged)",
            m.slow.clone(),
        );
        r.register(
            "aisle_s3_sent_bytes",
            "Object bytes sent to clients (GET bodies, transformed or not)",
            m.bytes_out.clone(),
        );
        r.register(
            "aisle_s3_received_bytes",
            "Object bytes received from clients (PUT and UploadPart bodies)",
            m.bytes_in.clone(),
        );
        r.register(
            "aisle_gateway_target_call_duration_seconds",
            "The intra-cluster hop: time from a call to a target until its answer's head",
            m.target_calls.clone(),
        );
        r.register(
            "aisle_gateway_kept_object_hits",
            "Plain GETs answered from the small objects the gateway keeps while their targets report no change",
            m.hot_hits.clone(),
        );
        r.register(
            "aisle_gateway_kept_object_misses",
            "Plain GETs the gateway asked a target for, with small objects kept",
            m.hot_misses.clone(),
        );
        r.register(
            "aisle_get_batch_requests",
            "GetBatch requests",
            m.batches.clone(),
        );
        r.register(
            "aisle_get_batch_entries",
            "Objects and shard members requested through GetBatch",
            m.batch_entries.clone(),
        );
        r.register(
            "aisle_jobs_running",
            "Jobs running, by kind",
            m.jobs_running.clone(),
        );
        r.register(
            "aisle_job_objects",
            "Objects jobs worked through, by kind",
            m.job_objects.clone(),
        );
        r.register(
            "aisle_job_errors",
            "Objects jobs failed on, by kind",
            m.job_errors.clone(),
        );
        m
    }

    /// Count one answered request; true if it was slower than `slow`.
    pub fn request(
        &self,
        op: &'static str,
        status: u16,
        elapsed: Duration,
        slow: Duration,
    ) -> bool {
        self.requests.observe(op, status, elapsed);
        self.requests_total.inc();
        let is_slow = elapsed >= slow;
        if is_slow {
            self.slow.inc();
        }
        is_slow
    }

    /// The exposition.
    pub fn render(&self) -> String {
        aisle_cluster::metrics::encode(&self.node)
    }
}

/// S3's name of the operation a request asks for (by method, path level and sub-resource),
/// for labels. `vhost` is true when the bucket came in the Host header.
///
/// ```
/// use aisle_gateway::metrics::s3_op;
/// use http::Method;
/// assert_eq!(s3_op(&Method::GET, "/b/k", None, false, false), "GetObject");
/// assert_eq!(s3_op(&Method::PUT, "/b/k", Some("partNumber=1&uploadId=x"), false, false), "UploadPart");
/// assert_eq!(s3_op(&Method::GET, "/b", Some("list-type=2"), false, false), "ListObjectsV2");
/// assert_eq!(s3_op(&Method::GET, "/k", None, true, false), "GetObject");
/// assert_eq!(s3_op(&Method::GET, "/", None, false, false), "ListBuckets");
/// assert_eq!(s3_op(&Method::PUT, "/b/k", None, false, true), "CopyObject");
/// ```
pub fn s3_op(
    method: &http::Method,
    path: &str,
    query: Option<&str>,
    vhost: bool,
    copy_source: bool,
) -> &'static str {
    use http::Method as M;
    if path.starts_with("/_aisle/cluster/") {
        return "Cluster";
    }
    if path.starts_with("/_aisle/") {
        return "Admin";
    }
    // The parameter names, split out once: a presigned URL's query is long, and a GET asks
    // for three names.
    let names: Vec<&str> = query
        .map(|q| {
            q.split('&')
                .map(|kv| kv.split_once('=').map_or(kv, |(k, _)| k))
                .collect()
        })
        .unwrap_or_default();
    let has = |name: &str| names.contains(&name);
    let segments = path.trim_start_matches('/');
    let level = match (vhost, segments.split_once('/')) {
        (false, None) if segments.is_empty() => 0,
        (false, None) => 1,
        (false, Some((_, ""))) => 1,
        (false, Some(_)) => 2,
        (true, _) if segments.is_empty() => 1,
        (true, _) => 2,
    };
    match (level, method) {
        (0, &M::GET) => "ListBuckets",
        (1, &M::GET) if has("location") => "GetBucketLocation",
        (1, &M::GET) if has("uploads") => "ListMultipartUploads",
        (1, &M::GET) if has("versions") => "ListObjectVersions",
        (1, &M::GET) if has("versioning") => "GetBucketVersioning",
        (1, &M::GET) if has("list-type") => "ListObjectsV2",
        (1, &M::GET)
            if query.is_some_and(|q| !q.is_empty())
                && !has("prefix")
                && !has("delimiter")
                && !has("marker")
                && !has("max-keys")
                && !has("encoding-type") =>
        {
            "GetBucketOther"
        }
        (1, &M::GET) => "ListObjects",
        (1, &M::HEAD) => "HeadBucket",
        (1, &M::PUT) if query.is_some_and(|q| !q.is_empty()) => "PutBucketOther",
        (1, &M::PUT) => "CreateBucket",
        (1, &M::DELETE) => "DeleteBucket",
        (1, &M::POST) if has("delete") => "DeleteObjects",
        (2, &M::GET) if has("uploadId") => "ListParts",
        (2, &M::GET) if has("tagging") || has("acl") => "GetObjectOther",
        (2, &M::GET) => "GetObject",
        (2, &M::HEAD) => "HeadObject",
        (2, &M::PUT) if has("uploadId") && copy_source => "UploadPartCopy",
        (2, &M::PUT) if has("uploadId") => "UploadPart",
        (2, &M::PUT) if copy_source => "CopyObject",
        (2, &M::PUT) if has("tagging") || has("acl") => "PutObjectOther",
        (2, &M::PUT) => "PutObject",
        (2, &M::DELETE) if has("uploadId") => "AbortMultipartUpload",
        (2, &M::DELETE) => "DeleteObject",
        (2, &M::POST) if has("uploads") => "CreateMultipartUpload",
        (2, &M::POST) if has("uploadId") => "CompleteMultipartUpload",
        (_, &M::OPTIONS) => "Options",
        _ => "Other",
    }
}
