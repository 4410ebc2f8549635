//! The cluster's metadata: which targets exist and which buckets exist.
//!
//! The primary gateway owns one [`ClusterMeta`], bumps its version on every change, persists it
//! and pushes the whole record to every target. Nodes that receive an older version than the one
//! they hold ignore it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::placement::{hrw_index, object_name_hash};

/// One storage target as the cluster knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Stable identity, kept across restarts; placement is computed from it.
    pub id: String,
    /// Base URL of the target's intra-cluster API, e.g. `http://127.0.0.1:40123`.
    pub url: String,
}

/// Properties of one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketProps {
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

/// Versioned cluster map + bucket map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMeta {
    /// Bumped on every change.
    pub version: u64,
    /// Targets by id.
    pub targets: BTreeMap<String, TargetInfo>,
    /// Buckets by name.
    pub buckets: BTreeMap<String, BucketProps>,
    /// Transforming alias buckets by name (read-only views of a source bucket).
    #[serde(default)]
    pub aliases: BTreeMap<String, AliasBucket>,
}

/// An alias with its name (for listings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasView {
    /// Alias bucket name.
    pub name: String,
    /// What it shows.
    #[serde(flatten)]
    pub alias: AliasBucket,
}

/// A read-only bucket whose GET/HEAD/List serve a source bucket transformed (SPEC §4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasBucket {
    /// The bucket whose objects it shows.
    pub source: String,
    /// Stage names, in order.
    pub pipeline: Vec<String>,
    /// Argument string for every stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
}

impl ClusterMeta {
    /// The target that owns `(bucket, key)`, by HRW over target ids.
    ///
    /// ```
    /// use aisle_cluster::map::{ClusterMeta, TargetInfo};
    /// let mut m = ClusterMeta::default();
    /// for id in ["t1", "t2"] {
    ///     m.targets.insert(id.into(), TargetInfo { id: id.into(), url: format!("http://{id}") });
    /// }
    /// let owner = m.owner("b", "k").unwrap();
    /// assert!(owner.id == "t1" || owner.id == "t2");
    /// ```
    pub fn owner(&self, bucket: &str, key: &str) -> Option<&TargetInfo> {
        let h = object_name_hash(bucket, key);
        let i = hrw_index(h, self.targets.keys().map(String::as_str))?;
        self.targets.values().nth(i)
    }
}
