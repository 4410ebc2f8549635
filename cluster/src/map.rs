//! The cluster's metadata: which targets exist and which buckets exist.
//!
//! The primary gateway owns one [`ClusterMeta`], bumps its version on every change, persists it
//! and pushes the whole record to every target. Nodes that receive an older version than the one
//! they hold ignore it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// Identity of its data directory, made at its first start: a second node joining with the
    /// same `id` but another data directory is refused.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uuid: String,
    /// What the operator made of it (active, maintenance, decommissioning).
    #[serde(default)]
    pub admin: AdminState,
    /// What the gateway last saw of it (up, down since when, out, catching up).
    #[serde(default)]
    pub health: Health,
}

impl TargetInfo {
    /// A newly registered active target, seen alive now.
    pub fn new(id: impl Into<String>, url: impl Into<String>) -> Self {
        TargetInfo {
            id: id.into(),
            url: url.into(),
            local: None,
            uuid: String::new(),
            admin: AdminState::Active,
            health: Health::default(),
        }
    }

    /// The target should hold copies: active, and not out for good. (A target down for less
    /// than the grace period still counts: its copies are not re-made elsewhere yet.)
    pub fn is_member(&self) -> bool {
        self.admin == AdminState::Active && !self.health.out
    }

    /// The target answers requests (as far as the gateway knows).
    pub fn is_alive(&self) -> bool {
        self.health.down_since_ms.is_none()
    }
}

/// What an operator made of a target (`aisle cluster maintenance|decommission`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Holds copies and takes writes.
    #[default]
    Active,
    /// Takes no new data; its objects get their copies elsewhere, its own stay (it may come
    /// back); going down does not start re-replication.
    Maintenance,
    /// Being drained: its objects move to their other holders, then it leaves the map.
    Decommissioning,
}

/// Liveness of a target as the primary gateway's prober sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Set while the target does not answer: since when, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down_since_ms: Option<i64>,
    /// Down longer than the grace period: it no longer counts as a holder, and its copies are
    /// re-made on the others (self-heal). Cleared when it answers again.
    #[serde(default)]
    pub out: bool,
    /// Came back after being down: it may hold stale copies, so reads prefer the others
    /// until the rebalance that follows its return has finished.
    #[serde(default)]
    pub catching_up: bool,
}

/// Properties of one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketProps {
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Copies of every object, on distinct targets (1–3). Always 1 for a remote bucket: the
    /// remote holds the durable copy, targets hold a cache.
    #[serde(default = "one")]
    pub copies: u8,
    /// Set for a remote bucket: a cache in front of another store ([`RemoteSpec`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteSpec>,
    /// CORS rules (PutBucketCors); none: browsers from other origins are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors: Vec<crate::cors::CorsRule>,
    /// Bucket tags (PutBucketTagging).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Lifecycle rules (PutBucketLifecycleConfiguration), run by the targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lifecycle: Vec<crate::lifecycle::LifecycleRule>,
    /// The user who created it (`None`: the cluster's admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its canned ACL.
    #[serde(default, skip_serializing_if = "is_private")]
    pub acl: crate::access::CannedAcl,
    /// Its bucket policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<crate::access::Policy>,
    /// Its PublicAccessBlock configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_access_block: Option<crate::access::PublicAccessBlock>,
    /// Object versioning (PutBucketVersioning); once enabled it can be suspended, never off.
    #[serde(default, skip_serializing_if = "crate::versioning::Versioning::is_off")]
    pub versioning: crate::versioning::Versioning,
}

fn is_private(acl: &crate::access::CannedAcl) -> bool {
    *acl == crate::access::CannedAcl::Private
}

impl BucketProps {
    /// A new local bucket with `copies` copies of every object and nothing else set.
    pub fn new(created_ms: i64, copies: u8) -> BucketProps {
        BucketProps {
            created_ms,
            copies,
            remote: None,
            cors: Vec::new(),
            tags: BTreeMap::new(),
            lifecycle: Vec::new(),
            owner: None,
            acl: Default::default(),
            policy: None,
            public_access_block: None,
            versioning: Default::default(),
        }
    }
}

/// The store behind a remote bucket, and how the cache in front of it behaves.
///
/// It travels with the cluster metadata (persisted with mode 0600, pushed to targets over the
/// secret-authenticated intra-cluster API); [`RemoteSpec::redacted`] is what admin views show.
///
/// ```
/// use aisle_cluster::map::{Coherence, RemoteSpec};
/// let spec: RemoteSpec = serde_json::from_str(
///     r#"{"url":"s3://photos/train","endpoint":"http://127.0.0.1:9000","region":"us-east-1",
///         "access_key":"AK","secret_key":"SK","coherence":"ttl=5m"}"#,
/// ).unwrap();
/// assert_eq!(spec.coherence, Coherence::Ttl(300));
/// assert_eq!(spec.redacted().secret_key.as_deref(), Some("********"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSpec {
    /// `s3://BUCKET[/PREFIX]` or `file:///DIR`.
    pub url: String,
    /// S3 endpoint (none: AWS for the region).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// S3 region.
    #[serde(default = "default_region")]
    pub region: String,
    /// Access key id (none: anonymous requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    /// Secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    /// Session token of temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_token: Option<String>,
    /// Virtual-hosted-style requests (`BUCKET.endpoint`) instead of path-style.
    #[serde(default)]
    pub virtual_hosted: bool,
    /// How stale a cached object may be.
    #[serde(default)]
    pub coherence: Coherence,
    /// Seconds a remote call may take before the client gets 503 SlowDown (until the first
    /// byte of an answer; then between two chunks of a body).
    #[serde(default = "default_remote_timeout")]
    pub timeout_secs: u64,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_remote_timeout() -> u64 {
    10
}

impl RemoteSpec {
    /// The spec with its secrets replaced by `********` (what admin views and logs show).
    pub fn redacted(&self) -> RemoteSpec {
        let hide = |s: &Option<String>| s.as_ref().map(|_| "********".to_string());
        RemoteSpec {
            secret_key: hide(&self.secret_key),
            session_token: hide(&self.session_token),
            ..self.clone()
        }
    }
}

impl std::fmt::Debug for RemoteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.redacted();
        f.debug_struct("RemoteSpec")
            .field("url", &r.url)
            .field("endpoint", &r.endpoint)
            .field("region", &r.region)
            .field("access_key", &r.access_key)
            .field("secret_key", &r.secret_key)
            .field("coherence", &r.coherence)
            .finish_non_exhaustive()
    }
}

/// How stale a read of a cached object of a remote bucket may be.
///
/// Written `never`, `validate` or `ttl=DURATION` (`ttl=90s`, `ttl=5m`, `ttl=1h`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Coherence {
    /// A cached object is served as it is until evicted (immutable data sets; the default).
    #[default]
    Never,
    /// Every read asks the remote (a HEAD) and refetches an object that changed.
    Validate,
    /// A cached object is served unchecked for this many seconds after it was last checked.
    Ttl(u64),
}

impl std::fmt::Display for Coherence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Coherence::Never => f.write_str("never"),
            Coherence::Validate => f.write_str("validate"),
            Coherence::Ttl(s) => write!(f, "ttl={s}s"),
        }
    }
}

impl std::str::FromStr for Coherence {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "never" => Ok(Coherence::Never),
            "validate" => Ok(Coherence::Validate),
            other => match other.strip_prefix("ttl=") {
                Some(d) => parse_seconds(d).map(Coherence::Ttl),
                None => Err(format!(
                    "not a coherence mode: {other:?} (never, validate or ttl=DURATION)"
                )),
            },
        }
    }
}

impl Serialize for Coherence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Coherence {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn one() -> u8 {
    1
}

/// Most copies a bucket may keep.
pub const MAX_COPIES: u8 = 3;

/// The rebalance that follows every placement change (see [`ClusterMeta::placement_key`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rebalance {
    /// Generation: bumped by every change of where objects belong. Targets walk their objects
    /// once per generation; a newer one supersedes a running walk.
    pub generation: u64,
    /// Every live target finished the walk of this generation.
    pub settled: bool,
    /// Generations started again in a row because a walk left records unplaced.
    #[serde(default)]
    pub retries: u32,
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
    /// Copies a new bucket keeps when its creator does not say (capped by the target count).
    #[serde(default = "one")]
    pub default_copies: u8,
    /// The current rebalance.
    #[serde(default)]
    pub rebalance: Rebalance,
    /// Users besides the admin, by name, with their keys (`aisle user …`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub users: BTreeMap<String, crate::access::User>,
}

impl ClusterMeta {
    /// The user that holds access key `access_key`, and the key's secret.
    pub fn user_of_key(&self, access_key: &str) -> Option<(&str, &str)> {
        self.users.iter().find_map(|(name, u)| {
            u.keys
                .get(access_key)
                .map(|secret| (name.as_str(), secret.as_str()))
        })
    }
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
    /// `exec`, `hpush`, `hpull` or `ws` (AIStore's `hpush://`, `hpull://`, `ws://` are
    /// accepted too).
    #[serde(deserialize_with = "communicator")]
    pub communicator: String,
    /// Command and arguments (`exec`; the server communicators when the target starts the
    /// transformer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// External transformer URL (a server communicator without a command).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// What the transformer is handed: the bytes (empty, the default) or `fqn`, the object's
    /// local file path when it is one whole file (AIStore's `argument`; server communicators).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub argument: String,
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

/// A communicator name, without AIStore's `://` suffix.
fn communicator<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    Ok(s.strip_suffix("://").unwrap_or(&s).to_string())
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
        Raw::S(s) => parse_seconds(&s).map_err(serde::de::Error::custom),
    }
}

/// Seconds from `45`, `45s`, `5m`, `1h` or `2d`.
pub fn parse_seconds(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        Some('h') => (&s[..s.len() - 1], 3600),
        Some('d') => (&s[..s.len() - 1], 86400),
        _ => (s, 1),
    };
    num.trim()
        .parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("not a duration: {s:?} (use e.g. 45s, 5m)"))
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
