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
}

fn default_region() -> String {
    "us-east-1".into()
}
