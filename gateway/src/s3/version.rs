//! S3 versioning on the wire: Put/GetBucketVersioning, the version ids clients send
//! (`versionId`), and the ones aisle shows (`x-amz-version-id`). What a version id is and how
//! it is derived lives in [`aisle_cluster::versioning`]; the versions themselves live on the
//! targets. ListObjectVersions lives with the other listings (`list.rs`), DeleteObject with a
//! version id with the deletes (`delete.rs`).

use aisle_cluster::proto::ObjectMeta;
use aisle_cluster::versioning::{NULL_VERSION, VersionRef, Versioning};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::bucket::{bucket_props, edit_bucket};
use super::error::s3_err;

/// A client's `versionId`, checked: `null` or an id aisle made; anything else is 400
/// InvalidArgument, as S3 answers for an id it cannot parse.
pub(super) fn version_param(id: Option<&str>) -> S3Result<Option<String>> {
    match id {
        None => Ok(None),
        Some(id) if VersionRef::parse(id).is_some() => Ok(Some(id.to_string())),
        Some(other) => Err(s3_err(
            S3ErrorCode::InvalidArgument,
            format!("invalid version id specified: {other}"),
        )),
    }
}

/// The versioning state of `bucket` (Off for an unknown bucket: its operations fail anyway).
pub(super) fn state(s3: &AisleS3, bucket: &str) -> Versioning {
    s3.meta
        .snapshot()
        .buckets
        .get(bucket)
        .map(|b| b.versioning)
        .unwrap_or_default()
}

/// The `x-amz-version-id` to show for `meta`: its id; for the null version, none in a bucket
/// that never had versioning and `null` in one that has (`state` is asked only then).
pub(super) fn shown(meta: &ObjectMeta, state: impl FnOnce() -> Versioning) -> Option<String> {
    match &meta.version_id {
        Some(id) => Some(id.clone()),
        None => (!state().is_off()).then(|| NULL_VERSION.into()),
    }
}

/// GetBucketVersioning: no status for a bucket that never had versioning, as S3.
pub(super) async fn get_bucket_versioning(
    s3: &AisleS3,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    let props = bucket_props(s3, &req.input.bucket)?;
    let status = match props.versioning {
        Versioning::Off => None,
        Versioning::Enabled => Some(BucketVersioningStatus::ENABLED),
        Versioning::Suspended => Some(BucketVersioningStatus::SUSPENDED),
    };
    Ok(S3Response::new(GetBucketVersioningOutput {
        status: status.map(BucketVersioningStatus::from_static),
        ..Default::default()
    }))
}

/// PutBucketVersioning: Enabled or Suspended (a bucket that had versioning never goes back to
/// off, as S3). MFA delete and remote buckets (whose remote keeps its own versions) are
/// refused with the reason.
pub(super) async fn put_bucket_versioning(
    s3: &AisleS3,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    let input = req.input;
    let conf = input.versioning_configuration;
    if conf
        .mfa_delete
        .as_ref()
        .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
    {
        return Err(s3_err(
            S3ErrorCode::NotImplemented,
            "MFA delete is not supported: aisle has no MFA devices (docs/s3.md)",
        ));
    }
    let wanted = match conf.status.as_ref().map(|s| s.as_str()) {
        Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
        Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
        _ => {
            return Err(s3_err(
                S3ErrorCode::MalformedXML,
                "the versioning configuration needs a Status of Enabled or Suspended",
            ));
        }
    };
    edit_bucket(s3, &input.bucket, |props| {
        if props.remote.is_some() {
            return Err(s3_err(
                S3ErrorCode::InvalidBucketState,
                "a remote bucket caches its remote, which keeps its own versions: versioning \
                 cannot be enabled on it",
            ));
        }
        let changed = props.versioning != wanted;
        props.versioning = wanted;
        Ok(changed)
    })
    .await?;
    Ok(S3Response::new(PutBucketVersioningOutput::default()))
}
