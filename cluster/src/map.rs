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
    /// The same API on a Unix socket, for nodes on the same host ([`crate::local`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<crate::local::LocalSocket>,
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
    /// Registered transforms (beyond the built-ins) by name; every target runs each running one.
    #[serde(default)]
    pub etls: BTreeMap<String, EtlSpec>,
}

/// A registered transform, as `aisle etl init` takes it (YAML or JSON).
///
/// ```
/// use aisle_cluster::map::EtlSpec;
/// let spec: EtlSpec = serde_json::from_str(
///     r#"{"name":"upper","communicator":"exec","command":["tr","a-z","A-Z"],"obj_timeout":"30s"}"#,
/// ).unwrap();
/// assert_eq!(spec.obj_timeout, 30);
/// assert!(spec.running && !spec.deterministic);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtlSpec {
    /// `[a-z0-9][a-z0-9-]{1,31}`.
    pub name: String,
    /// `exec` or `hpush`.
    pub communicator: String,
    /// Command and arguments (`exec`; `hpush` when the target starts the transformer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// External transformer URL (`hpush` without a command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Extra environment for the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Directory the command runs in (`aisle etl init` makes a relative one absolute, relative
    /// to the spec file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Seconds a started transformer has to become healthy (accepts `"5m"`, `"45s"`).
    #[serde(default = "default_init_timeout", deserialize_with = "seconds")]
    pub init_timeout: u64,
    /// Seconds one object may take (accepts `"45s"`).
    #[serde(default = "default_obj_timeout", deserialize_with = "seconds")]
    pub obj_timeout: u64,
    /// Same input and arguments always give the same output (enables caching and Range).
    #[serde(default)]
    pub deterministic: bool,
    /// `exec` only: `oneshot` (default: a process per object) or `worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Most objects in flight per target (default 8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Content type of the output, if fixed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Stopped transforms are not served.
    #[serde(default = "yes")]
    pub running: bool,
}

fn yes() -> bool {
    true
}
fn default_init_timeout() -> u64 {
    300
}
fn default_obj_timeout() -> u64 {
    45
}

/// Seconds from a number or a string like `45s`, `5m`, `1h`.
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        N(u64),
        S(String),
    }
    match Raw::deserialize(d)? {
        Raw::N(n) => Ok(n),
        Raw::S(s) => {
            let s = s.trim();
            let (num, mult) = match s.chars().last() {
                Some('s') => (&s[..s.len() - 1], 1),
                Some('m') => (&s[..s.len() - 1], 60),
                Some('h') => (&s[..s.len() - 1], 3600),
                _ => (s, 1),
            };
            num.trim().parse::<u64>().map(|n| n * mult).map_err(|_| {
                serde::de::Error::custom(format!("not a duration: {s:?} (use e.g. 45s, 5m)"))
            })
        }
    }
}

impl EtlSpec {
    /// Identifies what the spec computes (not whether it runs): changes invalidate caches.
    pub fn version(&self) -> String {
        let mut s = self.clone();
        s.running = true;
        let json = serde_json::to_vec(&s).expect("spec serializes");
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&json))
    }
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
    ///     m.targets.insert(id.into(), TargetInfo { id: id.into(), url: format!("http://{id}"), local: None });
    /// }
    /// let owner = m.owner("b", "k").unwrap();
    /// assert!(owner.id == "t1" || owner.id == "t2");
    /// ```
    pub fn owner(&self, bucket: &str, key: &str) -> Option<&TargetInfo> {
        let h = object_name_hash(bucket, key);
        let i = hrw_index(h, self.targets.keys().map(String::as_str))?;
        self.targets.values().nth(i)
    }

    /// The alias buckets with their names, for listings.
    pub fn alias_views(&self) -> Vec<AliasView> {
        self.aliases
            .iter()
            .map(|(name, a)| AliasView {
                name: name.clone(),
                alias: a.clone(),
            })
            .collect()
    }
}
