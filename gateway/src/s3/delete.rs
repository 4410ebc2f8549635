//! DeleteObject and DeleteObjects: of the object, of one version of it (`versionId`), or —
//! a plain delete in a bucket with versioning — a new delete marker.

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::error::{check_key, from_client, from_remote, s3_err};

/// Most keys one DeleteObjects request may name, as S3.
pub const MAX_DELETE_KEYS: usize = 1000;

/// What one delete did, as S3 reports it.
#[derive(Default)]
struct Outcome {
    /// The version removed, or the delete marker added.
    version_id: Option<String>,
    /// A delete marker was added, or the version removed was one.
    delete_marker: bool,
}

async fn delete_one(
    s3: &AisleS3,
    bucket: &str,
    key: &str,
    version: Option<&str>,
) -> S3Result<Outcome> {
    check_key(key)?;
    let mut version = super::version::version_param(version)?;
    let plan = s3.targets.write_plan(bucket, key)?;
    if version.is_some() && s3.targets.remote(bucket).is_some() {
        // A remote bucket's objects are each its one `null` version.
        if version.as_deref() != Some(aisle_cluster::versioning::NULL_VERSION) {
            return Err(s3_err(
                S3ErrorCode::InvalidArgument,
                "a remote bucket keeps no versions: delete without a version id (or `null`)",
            ));
        }
        version = None;
    }
    // A remote bucket's object goes on the remote first; then the cached copies.
    if let Some(remote) = s3.targets.remote(bucket) {
        remote
            .map_err(from_remote)?
            .delete(key)
            .await
            .map_err(from_remote)?;
    }
    let versioning = plan.opts.versioning;
    let d = s3
        .targets
        .delete(&plan, bucket, key, version.as_deref())
        .await
        .map_err(from_client)?;
    let version_id = match (&version, d.delete_marker || d.found) {
        (Some(v), _) => Some(v.clone()),
        (None, true) if !versioning.is_off() => Some(aisle_cluster::versioning::id_or_null(
            d.version_id.as_deref(),
        )),
        _ => None,
    };
    Ok(Outcome {
        version_id,
        delete_marker: d.delete_marker,
    })
}

pub(super) async fn delete_object(
    s3: &AisleS3,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    s3.check_bucket(&input.bucket)?;
    let done = delete_one(s3, &input.bucket, &input.key, input.version_id.as_deref()).await?;
    Ok(S3Response::new(DeleteObjectOutput {
        version_id: done.version_id,
        delete_marker: done.delete_marker.then_some(true),
        ..Default::default()
    }))
}

pub(super) async fn delete_objects(
    s3: &AisleS3,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    s3.check_bucket(&input.bucket)?;
    let objects = input.delete.objects;
    if objects.len() > MAX_DELETE_KEYS {
        return Err(s3_err(
            S3ErrorCode::MalformedXML,
            format!("a DeleteObjects request names at most {MAX_DELETE_KEYS} keys"),
        ));
    }
    let quiet = input.delete.quiet == Some(true);
    let bucket = input.bucket.as_str();
    let results: Vec<(ObjectIdentifier, S3Result<Outcome>)> = futures::stream::iter(objects)
        .map(|o| async move {
            let r = delete_one(s3, bucket, &o.key, o.version_id.as_deref()).await;
            (o, r)
        })
        .buffered(16)
        .collect()
        .await;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (o, r) in results {
        match r {
            Ok(done) => {
                if !quiet {
                    // A version removed by its id; a marker added (or removed) as the marker.
                    deleted.push(DeletedObject {
                        key: Some(o.key),
                        version_id: o.version_id,
                        delete_marker: done.delete_marker.then_some(true),
                        delete_marker_version_id: if done.delete_marker {
                            done.version_id
                        } else {
                            None
                        },
                    });
                }
            }
            Err(e) => errors.push(Error {
                code: Some(e.code().as_str().to_string()),
                key: Some(o.key),
                message: e.message().map(str::to_string),
                version_id: o.version_id,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}
