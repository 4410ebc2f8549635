//! A gateway's configuration (JSON file for `aisle gateway --config F`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything a gateway needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayConfig {
    /// S3 listen address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Directory for the cluster metadata this (primary) gateway owns.
    pub root: PathBuf,
    /// Shared cluster secret (intra-cluster calls).
    pub cluster_secret: String,
    /// Serve S3, the admin API and the intra-cluster endpoints over TLS with this certificate,
    /// and trust this CA for calls to targets (`https://` URLs). None: plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<aisle_cluster::tls::TlsFiles>,
    /// S3 access key id.
    pub access_key: String,
    /// S3 secret access key.
    pub secret_key: String,
    /// Region reported by GetBucketLocation and expected in signatures.
    #[serde(default = "default_region")]
    pub region: String,
    /// Base domains for virtual-hosted-style addressing (`bucket.<domain>`); empty = path style only.
    #[serde(default)]
    pub domains: Vec<String>,
    /// When set, the gateway writes its bound address here once it serves.
    #[serde(default)]
    pub ready_file: Option<PathBuf>,
    /// Copies a new bucket keeps unless its creator says otherwise (1–3, capped by the number
    /// of targets). Unset: keep what the cluster metadata says (1 for a new cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_copies: Option<u8>,
    /// Liveness: how often the gateway probes each target, and how many missed probes in a
    /// row mark it down.
    #[serde(default)]
    pub health: HealthConfig,
    /// Periodic scrub of every target.
    #[serde(default)]
    pub scrub: ScrubConfig,
    /// Lifecycle rules: how often they run, how long their day is.
    #[serde(default)]
    pub lifecycle: crate::lifecycle::LifecycleConfig,
    /// Bearer token of `GET /_aisle/metrics` (none: metrics are not served).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_token: Option<String>,
    /// Requests slower than this many milliseconds are logged (warn) and counted.
    #[serde(default = "default_slow_ms")]
    pub slow_request_ms: u64,
    /// MiB of small objects kept in the gateway while their targets report no change
    /// ([`crate::hot`]; only when every target is on this host). 0: none.
    #[serde(default = "default_hot_cache_mib")]
    pub hot_cache_mib: u64,
}

fn default_hot_cache_mib() -> u64 {
    64
}

fn default_slow_ms() -> u64 {
    2000
}

/// How often every target re-reads what it holds against the ETags (`aisle cluster scrub`
/// runs one on demand, at full speed).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubConfig {
    /// Seconds between the end of one scrub and the start of the next (0: never).
    #[serde(default)]
    pub interval_secs: u64,
    /// Read at most this many MiB/s per target (0: no limit).
    #[serde(default)]
    pub rate_mib: u64,
}

/// How targets are watched ([`crate::membership`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthConfig {
    /// Milliseconds between probes of one target.
    #[serde(default = "probe_ms")]
    pub probe_interval_ms: u64,
    /// Milliseconds a probe may take.
    #[serde(default = "probe_ms")]
    pub probe_timeout_ms: u64,
    /// Missed probes in a row that mark a target down.
    #[serde(default = "misses")]
    pub down_after_misses: u32,
    /// Seconds a target may stay down before its copies are re-made on the others
    /// (self-heal). A target in maintenance never goes out.
    #[serde(default = "grace")]
    pub heal_after_secs: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probe_interval_ms: probe_ms(),
            probe_timeout_ms: probe_ms(),
            down_after_misses: misses(),
            heal_after_secs: grace(),
        }
    }
}

fn probe_ms() -> u64 {
    1000
}
fn misses() -> u32 {
    2
}
fn grace() -> u64 {
    60
}

fn default_region() -> String {
    "us-east-1".into()
}
