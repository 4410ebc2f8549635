//! The target's Prometheus metrics (`GET /_aisle/metrics` with the metrics bearer token):
//! intra-cluster requests by operation, per-mountpath objects, bytes and disk space,
//! transforms, shard reads, and the remote buckets' cache.
//!
//! Label values come from fixed sets: operation names, mountpath indexes, transform names (the
//! built-ins and registered transforms a request named; unknown names are refused before they
//! count), remote bucket names (bounded by the buckets an operator added).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use aisle_cluster::metrics::{NodeRegistry, OpMetrics, latency_histogram};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// Scans of the index for per-mountpath figures are made at most this often.
const SCAN_EVERY: Duration = Duration::from_secs(30);

/// A mountpath, by index and directory.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Mountpath {
    mountpath: String,
}

/// A transform pipeline (stage names joined by `,`) and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EtlOutcome {
    pub(crate) transform: String,
    pub(crate) outcome: &'static str,
}

/// A transform pipeline.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Transform {
    pub(crate) transform: String,
}

/// A result of the transform output cache (`hit`, `miss`, `eviction`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CacheEvent {
    pub(crate) event: &'static str,
}

/// A remote bucket.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Bucket {
    pub(crate) bucket: String,
}

type TransformLatency = Family<Transform, Histogram, fn() -> Histogram>;

pub(crate) struct TargetMetrics {
    node: NodeRegistry,
    requests: OpMetrics,
    objects: Family<Mountpath, Gauge>,
    stored: Family<Mountpath, Gauge>,
    disk_total: Family<Mountpath, Gauge>,
    disk_free: Family<Mountpath, Gauge>,
    pub(crate) etl_requests: Family<EtlOutcome, Counter>,
    pub(crate) etl_latency: TransformLatency,
    pub(crate) etl_bytes_out: Family<Transform, Counter>,
    pub(crate) etl_cache: Family<CacheEvent, Counter>,
    pub(crate) shard_reads: Counter,
    pub(crate) etl_direct_puts: Counter,
    pub(crate) remote_fetches: Family<Bucket, Counter>,
    pub(crate) remote_fetched_bytes: Family<Bucket, Counter>,
    pub(crate) remote_errors: Family<Bucket, Counter>,
    pub(crate) remote_evictions: Family<Bucket, Counter>,
    remote_cached_bytes: Family<Bucket, Gauge>,
    last_scan: Mutex<Option<Instant>>,
}

impl TargetMetrics {
    pub(crate) fn new() -> TargetMetrics {
        let mut node = NodeRegistry::new("target");
        let requests = OpMetrics::register(
            node.registry(),
            "aisle_target",
            "intra-cluster requests (HTTP and same-host descriptor calls)",
        );
        let mut m = TargetMetrics {
            node,
            requests,
            objects: Family::default(),
            stored: Family::default(),
            disk_total: Family::default(),
            disk_free: Family::default(),
            etl_requests: Family::default(),
            etl_latency: Family::new_with_constructor(latency_histogram),
            etl_bytes_out: Family::default(),
            etl_cache: Family::default(),
            shard_reads: Counter::default(),
            etl_direct_puts: Counter::default(),
            remote_fetches: Family::default(),
            remote_fetched_bytes: Family::default(),
            remote_errors: Family::default(),
            remote_evictions: Family::default(),
            remote_cached_bytes: Family::default(),
            last_scan: Mutex::new(None),
        };
        let r = m.node.registry();
        r.register(
            "aisle_target_objects",
            "Objects stored, per mountpath (refreshed at most every 30 s)",
            m.objects.clone(),
        );
        r.register(
            "aisle_target_stored_bytes",
            "Object bytes stored, per mountpath (refreshed at most every 30 s)",
            m.stored.clone(),
        );
        r.register(
            "aisle_target_disk_total_bytes",
            "Size of the file system of each mountpath",
            m.disk_total.clone(),
        );
        r.register(
            "aisle_target_disk_free_bytes",
            "Bytes available on the file system of each mountpath",
            m.disk_free.clone(),
        );
        r.register(
            "aisle_etl_requests",
            "Transformed reads, by pipeline and outcome (ok, error)",
            m.etl_requests.clone(),
        );
        r.register(
            "aisle_etl_duration_seconds",
            "Time until a transformed read's response head, by pipeline",
            m.etl_latency.clone(),
        );
        r.register(
            "aisle_etl_output_bytes",
            "Bytes of transformed output sent, by pipeline",
            m.etl_bytes_out.clone(),
        );
        r.register(
            "aisle_etl_cache",
            "Output cache of deterministic transforms: hits, misses, evictions",
            m.etl_cache.clone(),
        );
        r.register(
            "aisle_shard_reads",
            "Reads inside shards (members and selections)",
            m.shard_reads.clone(),
        );
        r.register(
            "aisle_etl_direct_puts",
            "Offline ETL outputs this target transformed and wrote straight to their owner",
            m.etl_direct_puts.clone(),
        );
        r.register(
            "aisle_remote_fetches",
            "Objects fetched from a remote bucket's store (cold reads, prefetches)",
            m.remote_fetches.clone(),
        );
        r.register(
            "aisle_remote_fetched_bytes",
            "Bytes fetched from a remote bucket's store",
            m.remote_fetched_bytes.clone(),
        );
        r.register(
            "aisle_remote_errors",
            "Failed calls to a remote bucket's store (misses not counted)",
            m.remote_errors.clone(),
        );
        r.register(
            "aisle_remote_evictions",
            "Cached objects of a remote bucket dropped (evict, capacity, changed remote)",
            m.remote_evictions.clone(),
        );
        r.register(
            "aisle_remote_cached_bytes",
            "Bytes of a remote bucket's objects cached on this target",
            m.remote_cached_bytes.clone(),
        );
        m
    }

    /// Count one answered request.
    pub(crate) fn request(&self, op: &'static str, status: u16, elapsed: Duration) {
        self.requests.observe(op, status, elapsed);
    }

    /// Count one transformed read (a declined one is counted when it comes back over HTTP).
    pub(crate) fn etl_read(
        &self,
        pipeline: &[String],
        r: &Result<crate::server::ReadAnswer, crate::server::ApiError>,
        elapsed: Duration,
    ) {
        use crate::server::ReadAnswer as A;
        let (outcome, bytes) = match r {
            Ok(A::Declined) => return,
            Ok(A::Files { head, .. }) if head.status().is_success() => (
                "ok",
                crate::server::content_length(head.headers()).unwrap_or(0),
            ),
            // Streamed: its bytes are counted as they go.
            Ok(A::Response(resp)) if resp.status().is_success() => ("ok", 0),
            Ok(A::Response(resp)) if resp.status().is_redirection() => ("not_modified", 0),
            _ => ("error", 0),
        };
        let transform = pipeline.join(",");
        self.etl_requests
            .get_or_create(&EtlOutcome {
                transform: transform.clone(),
                outcome,
            })
            .inc();
        self.etl_latency
            .get_or_create(&Transform {
                transform: transform.clone(),
            })
            .observe(elapsed.as_secs_f64());
        if bytes > 0 {
            self.etl_bytes_out
                .get_or_create(&Transform { transform })
                .inc_by(bytes);
        }
    }

    /// The exposition, with scrape-time figures refreshed.
    pub(crate) async fn render(&self, state: &std::sync::Arc<crate::server::State>) -> String {
        let dirs = state.store.mountpath_dirs();
        for (i, d) in dirs.iter().enumerate() {
            if let Some((total, free)) = aisle_cluster::metrics::disk_space(d) {
                let l = mp_label(i, d);
                self.disk_total.get_or_create(&l).set(total as i64);
                self.disk_free.get_or_create(&l).set(free as i64);
            }
        }
        let due = {
            let mut last = self.last_scan.lock().expect("scan lock");
            let due = last.is_none_or(|t| t.elapsed() >= SCAN_EVERY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if due {
            let store = state.store.clone();
            if let Ok(Ok(u)) = tokio::task::spawn_blocking(move || store.usage()).await {
                for (i, d) in dirs.iter().enumerate() {
                    let l = mp_label(i, d);
                    self.objects
                        .get_or_create(&l)
                        .set(u.objects_per_mountpath[i] as i64);
                    self.stored
                        .get_or_create(&l)
                        .set(u.bytes_per_mountpath[i] as i64);
                }
            }
        }
        self.remote_cached_bytes.clear();
        for r in state.cold.report(state) {
            self.remote_cached_bytes
                .get_or_create(&Bucket { bucket: r.bucket })
                .set(r.cached_bytes as i64);
        }
        aisle_cluster::metrics::encode(&self.node)
    }
}

fn mp_label(i: usize, dir: &std::path::Path) -> Mountpath {
    Mountpath {
        mountpath: format!("{i}:{}", dir.display()),
    }
}

/// The operation name of an intra-cluster request, for labels.
pub(crate) fn op_of(method: &http::Method, path: &str) -> &'static str {
    use aisle_cluster::proto as p;
    use http::Method as M;
    match (method, path) {
        (&M::GET, p::T_OBJECT) => "get",
        (&M::HEAD, p::T_OBJECT) => "head",
        (&M::PUT, p::T_OBJECT) => "put",
        (&M::DELETE, p::T_OBJECT) => "delete",
        (&M::PATCH, p::T_OBJECT) => "retag",
        (_, p::T_LIFECYCLE) => "lifecycle",
        (_, p::T_ETL_PUT) => "etl_put",
        (_, p::T_SHARD_BUILD) => "shard_build",
        (_, p::T_LIST) => "list",
        (_, p::T_MPU) | (_, p::T_MPU_PART) | (_, p::T_MPU_COMPLETE) => "multipart",
        (_, p::T_MPU_PARTS) | (_, p::T_MPU_UPLOADS) => "multipart_list",
        (_, p::T_REPLICA) | (_, p::T_REPLICA_CHECK) | (_, p::T_REPLICA_SEND) => "replica",
        (_, p::T_ARCHIVE) | (_, p::T_ARCHIVE_APPEND) => "archive",
        (_, p::T_CACHE) => "cache",
        (_, p::T_SCRUB) => "scrub",
        (_, p::T_META) => "meta",
        (_, p::T_STATUS) => "status",
        (_, p::T_ETL) => "etl_status",
        (_, p::T_BUCKET) => "bucket",
        _ => "other",
    }
}
