//! Remote buckets at the gateway: binding a bucket to a remote store (checked before it is
//! stored), and the admin views of what is cached.
//!
//! Reads and writes of a remote bucket's objects go through the owning target like any
//! object (`aisle-target`'s `cold` module fetches, validates and writes through); listings
//! and deletes ask the remote from here ([`crate::proxy::Targets::remote`]).

use aisle_cluster::map::{BucketProps, RemoteSpec};
use aisle_cluster::proto::CacheState;
use s3s::validation::{AwsNameValidation, NameValidation};
use serde::{Deserialize, Serialize};

use crate::meta::MetaOwner;
use crate::proxy::Targets;

/// `PUT /_aisle/v1/remote-bucket/<name>` binds, `GET …/<name>/cached` lists what is cached,
/// `GET …/<name>/object?key=K` shows one object's cache state.
pub const REMOTE_PREFIX: &str = "/_aisle/v1/remote-bucket/";

/// A failed binding.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Bad name or spec.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken by a local or alias bucket.
    #[error("{0}")]
    Taken(String),
    /// The remote refused or did not answer.
    #[error(transparent)]
    Remote(#[from] aisle_remote::RemoteError),
    /// The metadata could not be stored.
    #[error(transparent)]
    Persist(#[from] crate::meta::PersistError),
}

/// Answer of a binding: the bucket and its spec without secrets.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindView {
    /// Bucket name.
    pub bucket: String,
    /// The spec, redacted.
    pub remote: RemoteSpec,
    /// True when the bucket was created (false: its spec was updated).
    pub created: bool,
}

/// Bind `name` to the remote `spec` (or update the spec of a remote bucket): the remote must
/// answer a listing with these credentials first.
pub async fn bind(meta: &MetaOwner, name: &str, spec: RemoteSpec) -> Result<BindView, BindError> {
    if !AwsNameValidation::new().validate_bucket_name(name) || name.starts_with('_') {
        return Err(BindError::Invalid(format!(
            "{name:?} is not a valid bucket name"
        )));
    }
    let remote = aisle_remote::Remote::new(&spec)?;
    remote.check().await?;
    let created_ms = aisle_cluster::now_ms();
    let created = meta
        .update(|m| {
            if m.aliases.contains_key(name) {
                return Err(BindError::Taken(format!("{name} is an alias bucket")));
            }
            match m.buckets.get_mut(name) {
                Some(b) if b.remote.is_none() => Err(BindError::Taken(format!(
                    "{name} is a local bucket; remote buckets need a name of their own"
                ))),
                Some(b) => {
                    let changed = b.remote.as_ref() != Some(&spec);
                    b.remote = Some(spec.clone());
                    Ok((changed, false))
                }
                None => {
                    m.buckets.insert(
                        name.to_string(),
                        BucketProps {
                            remote: Some(spec.clone()),
                            ..BucketProps::new(created_ms, 1)
                        },
                    );
                    Ok((true, true))
                }
            }
        })
        .await?;
    tracing::info!(bucket = name, remote = %remote.label(), created, "remote bucket bound");
    Ok(BindView {
        bucket: name.to_string(),
        remote: spec.redacted(),
        created,
    })
}

/// `GET …/<name>/object?key=K`: every live target's cache state of one object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ObjectCacheView {
    /// The key.
    pub key: String,
    /// The target that fetches it on a miss.
    pub fetcher: String,
    /// Targets that hold a cached copy, with what they know of it.
    pub cached_on: Vec<CacheState>,
}

/// The cache state of `(bucket, key)` on every live target.
pub async fn object_view(
    targets: &Targets,
    bucket: &str,
    key: &str,
) -> Result<ObjectCacheView, String> {
    let fetcher = targets.fetcher(bucket, key).map_err(|e| e.to_string())?;
    let all = targets.listing_targets(bucket).map_err(|e| e.to_string())?;
    let states =
        futures::future::join_all(all.iter().map(|t| targets.cache(t, bucket, key, None))).await;
    let mut cached_on = Vec::new();
    for (t, s) in all.iter().zip(states) {
        match s {
            Ok(s) if s.cached => cached_on.push(s),
            Ok(_) => {}
            Err(e) => return Err(format!("{}: {e}", t.id)),
        }
    }
    Ok(ObjectCacheView {
        key: key.to_string(),
        fetcher: fetcher.id,
        cached_on,
    })
}
