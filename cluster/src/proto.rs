//! The intra-cluster protocol: what the gateway asks of a target, and in which shape.
//!
//! Plain HTTP/1.1 over hyper. Request parameters travel as URL query strings built from the
//! typed structs below (`serde_urlencoded`), object metadata travels in the [`META_HEADER`] as
//! base64url(JSON), and errors come back as a non-2xx status with an [`ErrorBody`] JSON body
//! whose `code` is the S3 error code the gateway should answer with.
//!
//! Object bodies are streamed with chunked encoding. An upload ends with the
//! [`COMMIT_TRAILER`], sent by the gateway only after it has verified the body (length,
//! Content-MD5, `x-amz-checksum-*`): a target publishes an object or part only when that trailer
//! arrives, so a body cut short or found corrupt is never visible.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::HeaderValue;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Object API on a target: GET/HEAD/PUT/DELETE with [`ObjectQuery`].
pub const T_OBJECT: &str = "/_aisle/t/v1/object";
/// Listing on a target: GET with [`ListQuery`] → [`crate::listing::ListPage`].
pub const T_LIST: &str = "/_aisle/t/v1/list";
/// Multipart: POST create, DELETE abort, with [`UploadQuery`].
pub const T_MPU: &str = "/_aisle/t/v1/mpu";
/// Multipart: PUT one part, with [`UploadQuery`] (part set).
pub const T_MPU_PART: &str = "/_aisle/t/v1/mpu/part";
/// Multipart: POST complete, JSON [`CompleteRequest`] → JSON [`ObjectMeta`].
pub const T_MPU_COMPLETE: &str = "/_aisle/t/v1/mpu/complete";
/// Multipart: GET parts of one upload, [`PartsQuery`] → JSON [`PartsPage`].
pub const T_MPU_PARTS: &str = "/_aisle/t/v1/mpu/parts";
/// Multipart: GET uploads in a bucket, [`UploadsQuery`] → JSON `Vec<UploadInfo>`.
pub const T_MPU_UPLOADS: &str = "/_aisle/t/v1/mpu/uploads";
/// Bucket housekeeping on a target: DELETE drops a bucket's pending uploads.
pub const T_BUCKET: &str = "/_aisle/t/v1/bucket";
/// Cluster metadata push: PUT JSON [`crate::map::ClusterMeta`].
pub const T_META: &str = "/_aisle/t/v1/meta";
/// A registered transform's state on a target: GET with [`EtlQuery`] → JSON status.
pub const T_ETL: &str = "/_aisle/t/v1/etl";

/// Names a registered transform.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtlQuery {
    /// Transform name.
    pub name: String,
}

/// One failed object, kept in a bounded ring for `aisle etl errors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtlErrorRecord {
    /// When, Unix milliseconds.
    pub time_ms: i64,
    /// The pipeline that failed.
    pub pipeline: String,
    /// `bucket/key`.
    pub path: String,
    /// HTTP status given to the client.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

/// What a target reports of one registered transform.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EtlNodeStatus {
    /// Transform name.
    pub name: String,
    /// Installed and served on this node.
    pub installed: bool,
    /// Ready to take objects.
    pub ready: bool,
    /// Process restarts (hpush).
    pub restarts: u32,
    /// Process id (hpush started by this node).
    pub pid: Option<u32>,
    /// Why it last stopped or failed.
    pub last_error: Option<String>,
    /// Recent log lines of its process.
    pub logs: Vec<String>,
    /// Recent failed objects of pipelines that use it.
    pub errors: Vec<EtlErrorRecord>,
}

/// Liveness and placement facts of a target: GET → JSON [`TargetStatus`].
pub const T_STATUS: &str = "/_aisle/t/v1/status";

/// Gateway endpoint a target calls to join: POST JSON [`crate::map::TargetInfo`] → ClusterMeta.
pub const G_JOIN: &str = "/_aisle/cluster/v1/join";

/// Header carrying base64url(JSON) metadata: [`ObjectAttrs`] on PUT/create, [`ObjectMeta`] on
/// GET/HEAD responses.
pub const META_HEADER: &str = "x-aisle-meta";
/// Trailer that commits an upload: base64url(JSON [`Commit`]).
pub const COMMIT_TRAILER: &str = "x-aisle-commit";

/// Selects one object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ObjectQuery {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// For GET/HEAD of a multipart object: only this part (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
    /// This version (its id, or `null`) instead of the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// One page of a target's listing.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListQuery {
    /// Bucket name.
    pub bucket: String,
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: String,
    /// Roll keys up into common prefixes at this delimiter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    /// Resume after this item (a key or a common prefix), see [`crate::listing::resume_start`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many items.
    pub limit: usize,
    /// List every version of each key (ListObjectVersions), newest first, each an item.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub versions: bool,
    /// With `versions`: resume after this version (an id or `null`) of the key `after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_version: Option<String>,
}

/// Selects one multipart upload (and one part of it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadQuery {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Upload id (absent on create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// Part number, 1..=10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<u32>,
}

/// A page of one upload's parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartsQuery {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// Parts after this number.
    #[serde(default)]
    pub marker: u32,
    /// At most this many parts.
    pub limit: usize,
}

/// Pending uploads of a bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadsQuery {
    /// Bucket name.
    pub bucket: String,
    /// Only keys starting with this.
    #[serde(default)]
    pub prefix: String,
}

/// Selects a bucket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketQuery {
    /// Bucket name.
    pub bucket: String,
}

/// Stored checksums, base64 as S3 shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    /// CRC32 (base64 of 4 bytes, big-endian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<String>,
    /// CRC32C.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    /// CRC64NVME.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
    /// SHA-1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// SHA-256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// `FULL_OBJECT` or `COMPOSITE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl Checksums {
    /// True when no checksum is stored.
    pub fn is_empty(&self) -> bool {
        self.crc32.is_none()
            && self.crc32c.is_none()
            && self.crc64nvme.is_none()
            && self.sha1.is_none()
            && self.sha256.is_none()
    }
}

/// What a client sets on an object, stored as given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectAttrs {
    /// Content-Type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Content-Encoding (without `aws-chunked`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// Content-Disposition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    /// Content-Language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    /// Cache-Control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// Expires, as the HTTP date the client sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// `x-amz-meta-*` user metadata (names lower-case, without the prefix).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    /// Object tags (`x-amz-tagging`, PutObjectTagging).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

/// New tags for the object at one version: PATCH [`T_OBJECT`] with [`ObjectQuery`], JSON body
/// → JSON [`ObjectMeta`]. The bytes, ETag and version stay; a target holding another version
/// answers 409 Stale, one holding none 404.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetagRequest {
    /// The object's version ([`ObjectMeta::stamp`]) the tags are for.
    pub version: u64,
    /// The whole new tag set.
    pub tags: BTreeMap<String, String>,
}

/// Everything the cluster knows of a stored object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes: hex MD5, or `md5-of-md5s-N` for multipart objects.
    pub etag: String,
    /// Last modification, Unix milliseconds.
    pub mtime_ms: i64,
    /// Client-set attributes.
    #[serde(default)]
    pub attrs: ObjectAttrs,
    /// Verified checksums.
    #[serde(default)]
    pub checksums: Checksums,
    /// Part sizes of a multipart object, in order; empty for a single-part object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<u64>,
    /// Write stamp: orders every write of one key cluster-wide (the primary gateway's clock,
    /// nanoseconds, strictly increasing). Copies compare it ([`ObjectMeta::stamp`]); the newer
    /// one wins.
    #[serde(default)]
    pub version: u64,
    /// Set on a cached object of a remote bucket: what the remote said of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteStamp>,
    /// The multipart upload that made this object, if one did: a CompleteMultipartUpload
    /// repeated after success finds it here and succeeds again, as S3's does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_id: Option<String>,
    /// Its version id in a bucket with versioning (`None`: the `null` version), see
    /// [`crate::versioning`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// A delete marker: a version that says the key was deleted (no bytes).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_marker: bool,
}

/// What a cached object of a remote bucket remembers of the remote's object (coherence checks
/// compare it with the remote's answer to a HEAD).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStamp {
    /// The remote's ETag (without quotes).
    pub etag: String,
    /// The remote's version id, where it keeps versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Hex MD5 of the cached bytes, when the object's own ETag is the remote's and may not be
    /// an MD5 (it is what scrubs and copies check the bytes against).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md5: Option<String>,
    /// When the remote last confirmed this copy (fetch, write or check), Unix milliseconds.
    pub checked_ms: i64,
}

impl ObjectMeta {
    /// The ETag and part sizes the stored bytes can be checked against
    /// ([`crate::etag::EtagCheck`]): the MD5 of a cached remote object, else the ETag.
    pub fn integrity(&self) -> (&str, &[u64]) {
        match self.remote.as_ref().and_then(|r| r.md5.as_deref()) {
            Some(md5) => (md5, &[]),
            None => (&self.etag, &self.parts),
        }
    }

    /// The version copies compare: the write stamp, and for an object written before stamps
    /// existed 1 — older than any stamped write, and never 0, which [`Have`] keeps for
    /// "nothing held".
    pub fn stamp(&self) -> u64 {
        self.version.max(1)
    }
}

/// Sent by the gateway as the [`COMMIT_TRAILER`] once it verified an uploaded body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// Bytes in the body.
    pub size: u64,
    /// Hex MD5 of the body.
    pub md5: String,
    /// Verified checksums of the body.
    #[serde(default)]
    pub checksums: Checksums,
}

/// One part named in a CompleteMultipartUpload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletePart {
    /// Part number.
    pub number: u32,
    /// ETag the client holds for it (quotes removed).
    pub etag: String,
}

/// Body of a complete call. The gateway has already applied S3's rules (part order, sizes,
/// ETags) and computed the final ETag and checksums; the target checks that every named part is
/// still there with that ETag and publishes the object in one transaction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompleteRequest {
    /// The parts to assemble, in order.
    pub parts: Vec<CompletePart>,
    /// Final ETag (without quotes), `md5-of-md5s-N`.
    pub etag: String,
    /// Final checksums (composite ones end in `-N`).
    #[serde(default)]
    pub checksums: Checksums,
    /// Write stamp and copies, as for a put.
    #[serde(default)]
    pub write: WriteOptions,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// Part number.
    pub number: u32,
    /// Size in bytes.
    pub size: u64,
    /// Hex MD5.
    pub etag: String,
    /// Upload time, Unix milliseconds.
    pub mtime_ms: i64,
    /// Verified checksums.
    #[serde(default)]
    pub checksums: Checksums,
}

/// A page of parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartsPage {
    /// Parts in ascending order.
    pub parts: Vec<PartInfo>,
    /// More parts follow.
    pub truncated: bool,
}

/// One pending multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadInfo {
    /// Object key.
    pub key: String,
    /// Upload id.
    pub upload_id: String,
    /// Creation time, Unix milliseconds.
    pub initiated_ms: i64,
}

/// Asks [`T_STATUS`] for per-mountpath object counts (a scan of the target's whole index);
/// without it the answer is a cheap liveness check.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusQuery {
    /// Count objects per mountpath.
    #[serde(default)]
    pub counts: bool,
}

/// A target's answer to [`T_STATUS`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    /// Target id.
    pub id: String,
    /// Objects stored per mountpath, in mountpath order (empty unless counts were asked for).
    #[serde(default)]
    pub objects_per_mountpath: Vec<u64>,
    /// Mountpath directories.
    pub mountpaths: Vec<String>,
    /// Version of the cluster metadata the target holds.
    pub meta_version: u64,
    /// Its walk of the current (or last) rebalance generation.
    #[serde(default)]
    pub rebalance: RebalanceReport,
    /// Size and free bytes of each mountpath's file system, in mountpath order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSpace>,
    /// When the target process started, Unix milliseconds.
    #[serde(default)]
    pub started_ms: i64,
    /// Objects and bytes per bucket (with `counts`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub buckets: BTreeMap<String, BucketUsage>,
    /// What it sees of the stores behind remote buckets, and what it caches of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remotes: Vec<RemoteReport>,
}

/// A mountpath's file system (in a [`TargetStatus`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpace {
    /// Size in bytes.
    pub total: u64,
    /// Bytes available.
    pub free: u64,
}

/// What a target holds of one bucket (in its [`TargetStatus`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketUsage {
    /// Objects (each copy counts where it is held).
    pub objects: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A target's view of one remote bucket (in its [`TargetStatus`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteReport {
    /// The bucket.
    pub bucket: String,
    /// The last remote call failed because the remote was unreachable or slow.
    pub unavailable: bool,
    /// The last failure (no credentials in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Since when the remote fails, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<i64>,
    /// Objects fetched from the remote (cold reads and prefetches) since the target started.
    pub fetches: u64,
    /// Cached objects and their bytes on this target.
    pub cached_objects: u64,
    /// Bytes of the cached objects.
    pub cached_bytes: u64,
    /// Cached objects evicted (by `aisle evict`, a changed remote object, or capacity).
    pub evictions: u64,
}

/// Cache operations on one object of a remote bucket ([`T_CACHE`]): `GET` its state;
/// `POST` with `op=prefetch` (fetch unless cached) or `op=evict` (drop the cached copy).
pub const T_CACHE: &str = "/_aisle/t/v1/cache";

/// Query of [`T_CACHE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheQuery {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// `prefetch` or `evict` (POST only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
}

/// Answer of [`T_CACHE`]: the object's cache state on the target after the operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheState {
    /// Target id.
    pub target: String,
    /// A copy is cached here.
    pub cached: bool,
    /// The operation fetched it from the remote.
    #[serde(default)]
    pub fetched: bool,
    /// The operation dropped the cached copy.
    #[serde(default)]
    pub evicted: bool,
    /// Cached size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// What the remote said of the cached copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteStamp>,
    /// Last read of the cached copy since the target started, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_access_ms: Option<i64>,
}

/// Error answer of any intra-cluster call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// S3 error code to answer the client with (e.g. `NoSuchKey`).
    pub code: String,
    /// Human-readable detail.
    pub message: String,
    /// The answer is about a delete marker: its version id (`null` for the null one). S3
    /// says so in `x-amz-delete-marker` and `x-amz-version-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_marker: Option<String>,
}

/// A malformed protocol header.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// Not base64url.
    #[error("header is not base64url: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not the expected JSON.
    #[error("header is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Encode a value for a protocol header.
///
/// ```
/// use aisle_cluster::proto::{decode_header, encode_header, Checksums};
/// let c = Checksums { crc32: Some("AAAAAA==".into()), ..Default::default() };
/// let h = encode_header(&c);
/// let back: Checksums = decode_header(h.as_bytes()).unwrap();
/// assert_eq!(back, c);
/// ```
pub fn encode_header<T: Serialize>(value: &T) -> HeaderValue {
    let json = serde_json::to_vec(value).expect("protocol types always serialize");
    HeaderValue::from_str(&URL_SAFE_NO_PAD.encode(json)).expect("base64url is a valid header value")
}

/// Decode a value from a protocol header.
pub fn decode_header<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ProtoError> {
    let json = URL_SAFE_NO_PAD.decode(raw)?;
    Ok(serde_json::from_slice(&json)?)
}

/// Build `path?query` from a query struct.
pub fn path_and_query<Q: Serialize>(path: &str, query: &Q) -> String {
    let q = serde_urlencoded::to_string(query).expect("query structs always serialize");
    format!("{path}?{q}")
}

/// Conditions of a GET/HEAD, evaluated by the target against the stored object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Conditions {
    /// If-Match: ETags (quotes removed) or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
    /// If-None-Match: ETags (quotes removed) or `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_none_match: Option<String>,
    /// If-Modified-Since, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_modified_since: Option<i64>,
    /// If-Unmodified-Since, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_unmodified_since: Option<i64>,
}

/// How a conditional request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionFailed {
    /// 304: the client's copy is current.
    NotModified,
    /// 412: a precondition does not hold.
    Precondition,
}

fn etag_list_matches(list: &str, etag: &str) -> bool {
    list.split(',').map(|t| t.trim()).any(|t| {
        let t = t.strip_prefix("W/").unwrap_or(t).trim_matches('"');
        t == "*" || t == etag
    })
}

impl Conditions {
    /// Evaluate in the order RFC 9110 §13.2.2 and S3 use.
    ///
    /// ```
    /// use aisle_cluster::proto::{ConditionFailed, Conditions};
    /// let c = Conditions { if_none_match: Some("\"abc\"".into()), ..Default::default() };
    /// assert_eq!(c.check("abc", 0), Err(ConditionFailed::NotModified));
    /// assert_eq!(c.check("def", 0), Ok(()));
    /// ```
    pub fn check(&self, etag: &str, mtime_secs: i64) -> Result<(), ConditionFailed> {
        let mut if_match_passed = false;
        if let Some(m) = &self.if_match {
            if !etag_list_matches(m, etag) {
                return Err(ConditionFailed::Precondition);
            }
            if_match_passed = true;
        }
        if let Some(t) = self.if_unmodified_since
            && !if_match_passed
            && mtime_secs > t
        {
            return Err(ConditionFailed::Precondition);
        }
        if let Some(m) = &self.if_none_match {
            if etag_list_matches(m, etag) {
                return Err(ConditionFailed::NotModified);
            }
        } else if let Some(t) = self.if_modified_since
            && mtime_secs <= t
        {
            return Err(ConditionFailed::NotModified);
        }
        Ok(())
    }
}

/// A single byte range in the syntax of the HTTP Range header without `bytes=`:
/// `first-last`, `first-` or `-suffix`.
///
/// ```
/// use aisle_cluster::proto::resolve_range;
/// assert_eq!(resolve_range("0-9", 100), Ok(0..10));
/// assert_eq!(resolve_range("90-", 100), Ok(90..100));
/// assert_eq!(resolve_range("-10", 100), Ok(90..100));
/// assert_eq!(resolve_range("95-200", 100), Ok(95..100));
/// assert!(resolve_range("100-", 100).is_err());
/// ```
pub fn resolve_range(spec: &str, size: u64) -> Result<std::ops::Range<u64>, RangeNotSatisfiable> {
    let (a, b) = spec.split_once('-').ok_or(RangeNotSatisfiable)?;
    let num = |s: &str| s.trim().parse::<u64>().map_err(|_| RangeNotSatisfiable);
    if a.trim().is_empty() {
        let n = num(b)?;
        if n == 0 || size == 0 {
            return Err(RangeNotSatisfiable);
        }
        return Ok(size.saturating_sub(n)..size);
    }
    let first = num(a)?;
    if first >= size {
        return Err(RangeNotSatisfiable);
    }
    let end = if b.trim().is_empty() {
        size
    } else {
        let last = num(b)?;
        if last < first {
            return Err(RangeNotSatisfiable);
        }
        (last + 1).min(size)
    };
    Ok(first..end)
}

/// A range that does not overlap the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the range is not satisfiable")]
pub struct RangeNotSatisfiable;

/// Parameters of a GET/HEAD beyond the object's name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReadOptions {
    /// Byte range (see [`resolve_range`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
    /// Conditions.
    #[serde(flatten)]
    pub conditions: Conditions,
    /// Transform the object on the way out (SPEC §4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etl: Option<EtlSelection>,
    /// Read inside the object as a shard (SPEC §5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveSelection>,
    /// The answer must carry its size (Content-Length): a transform whose output size is not
    /// known before it runs is run to completion into a staged file on the target first
    /// (GetBatch needs each member's size for its tar header).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sized: bool,
    /// A deterministic transform's output is streamed to the caller without being kept in
    /// the target's ETL cache: the caller stores it itself (offline ETL's direct put), so a
    /// cached copy would only be written, read back once and evicted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub uncached: bool,
}

/// Which members of a shard to read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArchiveSelection {
    /// One member, by name: its bytes.
    Path(String),
    /// Every member matching `expr` under `mode` (regexp, prefix, suffix, substr, wdskey), as
    /// one tar stream in shard order.
    Regex {
        /// The expression.
        expr: String,
        /// How it matches.
        mode: Option<String>,
    },
}

/// Members of a shard: GET with [`ObjectQuery`] → JSON list of members.
pub const T_ARCHIVE: &str = "/_aisle/t/v1/archive";
/// Append a member to a shard: PUT with [`AppendQuery`], body streamed with the commit trailer.
pub const T_ARCHIVE_APPEND: &str = "/_aisle/t/v1/archive/append";

/// Names the shard and the member to append.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppendQuery {
    /// Bucket.
    pub bucket: String,
    /// Shard key.
    pub key: String,
    /// Name of the new member.
    pub archpath: String,
    /// Its size in bytes (the tar header precedes the data).
    pub size: u64,
}

/// A transform pipeline selected by a client.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtlSelection {
    /// Stage names, in order.
    pub pipeline: Vec<String>,
    /// The argument string passed to every stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<String>,
}

/// Response header naming the stages applied.
pub const ETL_APPLIED_HEADER: &str = "x-ais-etl-applied";

/// Parameters of a write (put, complete, append) beyond the object's name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WriteOptions {
    /// `If-None-Match: *`: fail with 412 if the key exists.
    #[serde(default)]
    pub if_absent: bool,
    /// The write's stamp ([`ObjectMeta::version`]).
    #[serde(default)]
    pub version: u64,
    /// The other targets that must hold a copy before the write is acknowledged: the target
    /// that publishes pushes it to each ([`T_REPLICA`]) and answers only then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Peer>,
    /// The bucket's versioning: decides the write's version id
    /// ([`crate::versioning::Versioning::id_for`]).
    #[serde(default, skip_serializing_if = "crate::versioning::Versioning::is_off")]
    pub versioning: crate::versioning::Versioning,
}

/// A target another node calls: its id (which finds its current address in the map, after a
/// restart on another port) and the address it had when the call was planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Target id.
    pub id: String,
    /// Base URL of its intra-cluster API.
    pub url: String,
}

/// A copy of an object pushed from one target to another: PUT with [`ObjectQuery`], the full
/// [`ObjectMeta`] (with its version) in [`META_HEADER`], the bytes streamed with the commit
/// trailer. The receiver verifies the bytes against the ETag and publishes them only when the
/// version is newer than whatever it holds (object or tombstone) → JSON [`Have`].
pub const T_REPLICA: &str = "/_aisle/t/v1/replica";
/// Which versions a target holds: POST JSON `Vec<`[`ObjectQuery`]`>` → JSON `Vec<`[`Have`]`>`.
pub const T_REPLICA_CHECK: &str = "/_aisle/t/v1/replica/check";
/// Ask a target to push its copy of an object to another (`POST` with [`SendQuery`] → JSON
/// [`Have`]): how a target that found its own copy corrupt gets a good one.
pub const T_REPLICA_SEND: &str = "/_aisle/t/v1/replica/send";
/// Verify every stored object against its ETag and repair corrupt copies from a good one:
/// POST → JSON [`ScrubReport`].
pub const T_SCRUB: &str = "/_aisle/t/v1/scrub";

/// Evaluate every bucket's lifecycle rules over what this target is the first owner of, and
/// abort the expired multipart uploads it holds: POST with [`LifecycleQuery`] → JSON
/// [`LifecycleReport`]. Expired objects are listed, not deleted: the gateway deletes them.
pub const T_LIFECYCLE: &str = "/_aisle/t/v1/lifecycle";

/// Query of [`T_LIFECYCLE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LifecycleQuery {
    /// The instant the rules are evaluated at, Unix milliseconds.
    pub now_ms: i64,
    /// The length of a lifecycle "day" in milliseconds (shorter in tests).
    pub day_ms: i64,
    /// Most expired objects one answer lists (the rest wait for the next run).
    pub limit: usize,
}

/// An object a lifecycle rule expired, at the version that was evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expired {
    /// Bucket name.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The version evaluated ([`ObjectMeta::stamp`]): a newer object is not expired by it.
    pub version: u64,
    /// A noncurrent version or delete marker to remove for good (its id, `null` for the null
    /// version); `None`: the current object (in a bucket with versioning its expiration adds
    /// a delete marker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// What one target's lifecycle evaluation found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleReport {
    /// Objects looked at (those this target is the first owner of, in buckets with rules).
    pub examined: u64,
    /// Objects due for expiration, for the gateway to delete.
    pub expired: Vec<Expired>,
    /// More were due than the answer may list.
    pub truncated: bool,
    /// Multipart uploads aborted here.
    pub aborted_uploads: u64,
    /// Errors met (the run goes on past each).
    pub errors: Vec<String>,
}

/// Offline ETL with direct put: POST JSON [`EtlPutRequest`] to the target holding the source
/// → JSON [`ObjectMeta`] of the output. That target transforms its copy and streams the output
/// straight to the output's owner (target to target): the bytes never cross the gateway.
pub const T_ETL_PUT: &str = "/_aisle/t/v1/etl/put";

/// One transform-and-write of [`T_ETL_PUT`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtlPutRequest {
    /// The object to transform (read on the called target).
    pub source: ObjectQuery,
    /// The pipeline.
    pub etl: EtlSelection,
    /// Where the output goes.
    pub output: ObjectQuery,
    /// Base URL of the output's owner (the first of its write plan).
    pub to: String,
    /// The output write's stamp and copies, as the gateway planned them.
    pub write: WriteOptions,
}

/// Build one shard on its owner: POST JSON [`ShardBuildRequest`] to the target that owns the
/// shard → JSON [`ShardBuildReport`]. The owner fetches each member from a target holding it
/// and writes the tar itself: no object crosses the gateway.
pub const T_SHARD_BUILD: &str = "/_aisle/t/v1/shard/build";

/// One shard of a shard-building job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardBuildRequest {
    /// The bucket the members come from.
    pub source_bucket: String,
    /// Candidate members, in order: packed until the shard reaches `shard_size` at a sample
    /// boundary (WebDataset: members of one sample stay together).
    pub keys: Vec<String>,
    /// Size at which the shard is closed (at the next sample boundary).
    pub shard_size: u64,
    /// The shard to write (this target owns it).
    pub output: ObjectQuery,
    /// The shard write's stamp and copies, as the gateway planned them.
    pub write: WriteOptions,
}

/// What building one shard did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShardBuildReport {
    /// Candidates consumed (packed or skipped): the next shard starts after them.
    pub consumed: usize,
    /// Members packed.
    pub packed: u64,
    /// Object bytes packed.
    pub bytes: u64,
    /// Members skipped, with why (missing, unreadable before any byte was written).
    pub errors: Vec<String>,
}

/// Query of [`T_SCRUB`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubQuery {
    /// Read at most this many MiB per second (0: as fast as the disks go).
    #[serde(default)]
    pub rate_mib: u64,
}

/// Query of a pushed copy ([`T_REPLICA`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaQuery {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// The receiver found its copy of this version corrupt: the same version replaces it.
    #[serde(default)]
    pub repair: bool,
    /// A noncurrent version (or delete marker) moved by a rebalance: the receiver keeps it
    /// among the key's versions ([`ObjectMeta::version_id`] names it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub noncurrent: bool,
}

/// Query of [`T_REPLICA_SEND`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendQuery {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// Base URL of the target to push to (it replaces a corrupt copy of the same version).
    pub to: String,
    /// Push this version (an id or `null`) of the key, not its current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// What a scrub of one target found and did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScrubReport {
    /// Target id.
    pub id: String,
    /// Objects verified.
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Copies whose bytes did not match their ETag (or size).
    pub corrupt: u64,
    /// Corrupt copies replaced by a good copy from another target.
    pub repaired: u64,
    /// Corrupt copies no other target could replace (the last copy is damaged).
    pub unrepairable: u64,
    /// What went wrong, per object (bounded).
    #[serde(default)]
    pub errors: Vec<String>,
}

/// What a target holds of one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Have {
    /// Version ([`ObjectMeta::stamp`]) of the object or tombstone held; 0: nothing.
    pub version: u64,
    /// The version held is a deletion.
    #[serde(default)]
    pub deleted: bool,
}

/// DELETE of an object on a target ([`T_OBJECT`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeleteQuery {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
    /// The deletion's stamp: a copy newer than this survives it.
    #[serde(default)]
    pub version: u64,
    /// Keep a tombstone (the target holds the key): a stale copy elsewhere that comes back
    /// (after an outage) is then deleted instead of restored.
    #[serde(default)]
    pub tombstone: bool,
    /// A plain delete in a bucket with versioning adds a delete marker stamped `version`
    /// (its id as [`crate::versioning::Versioning::id_for`] says) instead of removing data.
    #[serde(default, skip_serializing_if = "crate::versioning::Versioning::is_off")]
    pub versioning: crate::versioning::Versioning,
    /// Remove this version (an id or `null`) for good, whatever the bucket's state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
}

/// What a target's DELETE did (JSON answer of a DELETE of [`T_OBJECT`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    /// The version removed or added (`None`: the `null` one, or nothing versioned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// That version is a delete marker (one was added, or the one removed was one).
    #[serde(default)]
    pub delete_marker: bool,
    /// Something was there to delete.
    #[serde(default)]
    pub found: bool,
}

/// A target's progress through one rebalance generation (in its [`TargetStatus`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RebalanceReport {
    /// Target id.
    pub id: String,
    /// The generation walked.
    pub generation: u64,
    /// Records looked at.
    pub walked: u64,
    /// Records held here in all.
    pub total: u64,
    /// Copies pushed to other targets.
    pub pushed: u64,
    /// Local copies removed after their holders confirmed them.
    pub removed: u64,
    /// Records that could not be placed (a holder unreachable, a push failed).
    pub failed: u64,
    /// Objects still held here that belong elsewhere (a drained target is empty at 0).
    pub misplaced: u64,
    /// The walk finished.
    pub done: bool,
    /// Recent failures.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// Header carrying base64url(JSON [`ReadOptions`]) on GET/HEAD.
pub const READ_HEADER: &str = "x-aisle-read";
/// Header carrying base64url(JSON [`WriteOptions`]) on PUT.
pub const WRITE_HEADER: &str = "x-aisle-write";
