//! Who is calling and whether they may: the keys s3s verifies signatures with (the admin's and
//! every user's, [`Keys`]) and the check s3s runs before every S3 operation ([`Access`]),
//! which asks [`aisle_cluster::access`] for the decision. The admin key may do everything;
//! the admin API and the dashboard stay admin-only (`admin.rs`, `ui.rs`).

use std::sync::Arc;

use aisle_cluster::access::{Decision, Request};
use aisle_cluster::map::ClusterMeta;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3ErrorCode, S3Result};

use crate::meta::MetaOwner;
use crate::s3::s3_error;

/// The client's address, put into each request's extensions by the accept loop.
pub use aisle_cluster::serve::PeerAddr;

/// Secret keys by access key: the admin's, then the users' (from the cluster metadata).
pub struct Keys {
    admin_key: String,
    admin_secret: String,
    meta: Arc<MetaOwner>,
}

impl Keys {
    /// The admin's key pair and the users in `meta`.
    pub fn new(admin_key: &str, admin_secret: &str, meta: Arc<MetaOwner>) -> Self {
        Keys {
            admin_key: admin_key.into(),
            admin_secret: admin_secret.into(),
            meta,
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.admin_key {
            return Ok(SecretKey::from(self.admin_secret.clone()));
        }
        match self.meta.snapshot().user_of_key(access_key) {
            Some((_, secret)) => Ok(SecretKey::from(secret.to_string())),
            None => Err(s3_error(
                S3ErrorCode::InvalidAccessKeyId,
                "the access key id you provided does not exist in our records",
            )),
        }
    }
}

/// The check before every S3 operation.
pub struct Access {
    admin_key: String,
    meta: Arc<MetaOwner>,
    /// The gateway serves TLS (`aws:SecureTransport`).
    secure: bool,
}

impl Access {
    /// Checks against the users and buckets in `meta`; `admin_key` may do everything.
    pub fn new(admin_key: &str, meta: Arc<MetaOwner>, secure: bool) -> Self {
        Access {
            admin_key: admin_key.into(),
            meta,
            secure,
        }
    }
}

/// Who holds `access_key` (none: an unsigned request).
pub fn caller(meta: &ClusterMeta, admin_key: &str, access_key: Option<&str>) -> Caller {
    match access_key {
        None => Caller::Anonymous,
        Some(k) if k == admin_key => Caller::Admin,
        Some(k) => match meta.user_of_key(k) {
            Some((name, _)) => Caller::User(name.to_string()),
            None => Caller::Anonymous,
        },
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The cluster's admin key.
    Admin,
    /// A user.
    User(String),
    /// No signature.
    Anonymous,
}

/// The IAM action of an S3 operation (as AWS names them in policies).
pub fn action(op: &str) -> String {
    let a = match op {
        "GetObject" | "HeadObject" | "GetObjectAttributes" => "GetObject",
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "ListBucket",
        "ListObjectVersions" => "ListBucketVersions",
        "ListMultipartUploads" => "ListBucketMultipartUploads",
        "ListParts" => "ListMultipartUploadParts",
        "PutObject"
        | "PostObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => "PutObject",
        "DeleteObject" | "DeleteObjects" => "DeleteObject",
        "GetBucketLifecycleConfiguration" => "GetLifecycleConfiguration",
        "PutBucketLifecycleConfiguration" | "DeleteBucketLifecycle" => "PutLifecycleConfiguration",
        "GetBucketCors" => "GetBucketCORS",
        "PutBucketCors" | "DeleteBucketCors" => "PutBucketCORS",
        "DeleteBucketTagging" => "PutBucketTagging",
        // The rest have their operation's name (GetBucketPolicy, PutObjectTagging, …).
        other => other,
    };
    format!("s3:{a}")
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        // The admin's requests (most of them, on a training cluster) pay one compare.
        if cx
            .credentials()
            .is_some_and(|c| c.access_key == self.admin_key)
        {
            return Ok(());
        }
        let meta = self.meta.snapshot();
        let source_ip = cx.extensions_mut().get::<PeerAddr>().map(|p| p.0.ip());
        let who = caller(
            &meta,
            &self.admin_key,
            cx.credentials().map(|c| c.access_key.as_str()),
        );
        if who == Caller::Admin {
            return Ok(());
        }
        let user = match &who {
            Caller::User(u) => Some(u.as_str()),
            _ => None,
        };
        let op = cx.s3_op().name();
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => {
                // ListBuckets shows a user what they own; anonymous callers get nothing.
                return match who {
                    Caller::Anonymous => Err(denied()),
                    _ => Ok(()),
                };
            }
            S3Path::Bucket { bucket } => (bucket.to_string(), None),
            S3Path::Object { bucket, key } => (bucket.to_string(), Some(key.to_string())),
        };
        if op == "CreateBucket" {
            return match who {
                Caller::Anonymous => Err(denied()),
                _ => Ok(()),
            };
        }
        let query = cx.uri().query().unwrap_or("");
        let prefix: Option<String> = form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "prefix")
            .map(|(_, v)| v.into_owned());
        let referer = cx
            .headers()
            .get(http::header::REFERER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let action = action(op);
        // DeleteObjects names its keys in the body: checked as a delete of any key.
        let key = if op == "DeleteObjects" {
            Some("*".to_string())
        } else {
            key
        };
        let request = Request {
            user,
            action: &action,
            bucket: &bucket,
            key: key.as_deref(),
            source_ip,
            secure: self.secure,
            referer: referer.as_deref(),
            prefix: prefix.as_deref(),
        };
        allowed(&meta, &request)?;
        // A copy reads its source: the caller must be allowed that too.
        if matches!(op, "CopyObject" | "UploadPartCopy")
            && let Some(src) = cx
                .headers()
                .get("x-amz-copy-source")
                .and_then(|v| v.to_str().ok())
        {
            let src = percent_encoding::percent_decode_str(src.trim_start_matches('/'))
                .decode_utf8_lossy()
                .to_string();
            let src = src
                .split_once("?versionId=")
                .map_or(src.as_str(), |(s, _)| s);
            if let Some((b, k)) = src.split_once('/') {
                allowed(
                    &meta,
                    &Request {
                        action: "s3:GetObject",
                        bucket: b,
                        key: Some(k),
                        ..request.clone()
                    },
                )?;
            }
        }
        Ok(())
    }
}

fn denied() -> s3s::S3Error {
    s3_error(S3ErrorCode::AccessDenied, "Access Denied")
}

/// AWS's order: a Deny of the policy, then the owner, an Allow of the policy, the canned ACL.
/// A bucket that does not exist is left to the operation (NoSuchBucket) for signed callers.
fn allowed(meta: &ClusterMeta, r: &Request<'_>) -> S3Result<()> {
    // An alias bucket answers with its source's permissions (it is a view of it).
    let name = meta
        .aliases
        .get(r.bucket)
        .map(|a| a.source.as_str())
        .unwrap_or(r.bucket);
    let Some(props) = meta.buckets.get(name) else {
        return if r.user.is_some() {
            Ok(())
        } else {
            Err(denied())
        };
    };
    let verdict = props
        .policy
        .as_ref()
        .map_or(Decision::NoMatch, |p| p.evaluate(r));
    if verdict == Decision::Deny {
        return Err(denied());
    }
    let block = props.public_access_block.unwrap_or_default();
    // RestrictPublicBuckets: a public policy grants nothing; IgnorePublicAcls: nor an ACL.
    let policy_allows = verdict == Decision::Allow
        && !(block.restrict_public_buckets && props.policy.as_ref().is_some_and(|p| p.is_public()));
    let acl_allows = props.acl.allows(r) && !(block.ignore_public_acls && props.acl.is_public());
    let owner = r.user.is_some() && props.owner.as_deref() == r.user;
    if owner || policy_allows || acl_allows {
        Ok(())
    } else {
        Err(denied())
    }
}
