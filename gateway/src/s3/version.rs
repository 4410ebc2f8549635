//! What aisle answers of S3 versioning today: a bucket never has versioning enabled, so each key
//! has one version, S3's `null` version. `versionId=null` names it wherever S3 takes a version
//! id; any other id is refused (400 InvalidArgument, as S3 answers for an id it cannot parse)
//! rather than ignored, so a client never gets the current object when it asked for another.
//! ListObjectVersions lives with the other listings (`list.rs`).

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::error::s3_err;

/// The id S3 gives the one version of an object in a bucket without versioning.
pub(super) const NULL_VERSION: &str = "null";

/// Accepts no version id or the `null` one.
pub(super) fn check_version_id(id: Option<&str>) -> S3Result<()> {
    match id {
        None | Some(NULL_VERSION) => Ok(()),
        Some(other) => Err(s3_err(
            S3ErrorCode::InvalidArgument,
            format!(
                "invalid version id specified: {other} (buckets keep one version per key, \
                 the version id `null`)"
            ),
        )),
    }
}

/// GetBucketVersioning: no status, as S3 answers for a bucket that never had versioning.
pub(super) async fn get_bucket_versioning(
    s3: &AisleS3,
    req: S3Request<GetBucketVersioningInput>,
) -> S3Result<S3Response<GetBucketVersioningOutput>> {
    s3.check_bucket(&req.input.bucket)?;
    Ok(S3Response::new(GetBucketVersioningOutput::default()))
}

/// PutBucketVersioning: refused with a message that says why (not the generic 501).
pub(super) async fn put_bucket_versioning(
    s3: &AisleS3,
    req: S3Request<PutBucketVersioningInput>,
) -> S3Result<S3Response<PutBucketVersioningOutput>> {
    s3.check_bucket(&req.input.bucket)?;
    Err(s3_err(
        S3ErrorCode::NotImplemented,
        "aisle does not keep object versions yet: buckets keep one version per key (docs/s3.md)",
    ))
}
