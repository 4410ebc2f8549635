//! A target's configuration (JSON file for `aisle target --config F`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything a target needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetConfig {
    /// Stable identity in the cluster (placement depends on it: never reuse one for other data).
    pub id: String,
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Host name other nodes use to reach this target (default: the listen IP).
    #[serde(default)]
    pub advertise_host: Option<String>,
    /// Directory for the target's own files (metadata index, cluster metadata copy).
    pub root: PathBuf,
    /// Mountpath directories (each ideally its own disk).
    pub mountpaths: Vec<PathBuf>,
    /// Base URL of the primary gateway, e.g. `http://127.0.0.1:8080`.
    pub gateway_url: String,
    /// Shared cluster secret.
    pub cluster_secret: String,
    /// Serve the intra-cluster API over TLS with this certificate, and trust this CA for
    /// calls to other nodes (`https://` URLs). None: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<aisle_cluster::tls::TlsFiles>,
    /// Budget of the cache of transformed (deterministic ETL) outputs, in bytes.
    #[serde(default = "default_etl_cache_bytes")]
    pub etl_cache_bytes: u64,
    /// Budget of cached remote-bucket objects per mountpath, in bytes (none: the disk's
    /// fill alone triggers LRU eviction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_max_bytes: Option<u64>,
    /// Share of a mountpath's disk used (0..=1) above which cached remote-bucket objects are
    /// evicted, least recently read first, to 5 points below it; 1.0 turns the rule off.
    #[serde(default = "default_cache_disk_full")]
    pub cache_disk_full: f64,
    /// Bearer token of `GET /_aisle/metrics` on the target's port (none: not served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
}

/// Default budget of the ETL output cache: 2 GiB.
pub const DEFAULT_ETL_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Default share of a disk used above which cached objects make room: 95%.
pub const DEFAULT_CACHE_DISK_FULL: f64 = 0.95;

fn default_cache_disk_full() -> f64 {
    DEFAULT_CACHE_DISK_FULL
}

fn default_etl_cache_bytes() -> u64 {
    DEFAULT_ETL_CACHE_BYTES
}
