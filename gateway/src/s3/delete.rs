//! DeleteObject and DeleteObjects.

use futures::StreamExt;
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::error::{check_key, from_client, from_remote, s3_err};

/// Most keys one DeleteObjects request may name, as S3.
pub const MAX_DELETE_KEYS: usize = 1000;

async fn delete_one(s3: &AisleS3, bucket: &str, key: &str, version: Option<&str>) -> S3Result<()> {
    check_key(key)?;
    super::version::check_version_id(version)?;
    let plan = s3.targets.write_plan(bucket, key)?;
    // A remote bucket's object goes on the remote first; then the cached copies.
    if let Some(remote) = s3.targets.remote(bucket) {
        remote
            .map_err(from_remote)?
            .delete(key)
            .await
            .map_err(from_remote)?;
    }
    s3.targets
        .delete(&plan, bucket, key)
        .await
        .map_err(from_client)
}

pub(super) async fn delete_object(
    s3: &AisleS3,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    s3.check_bucket(&input.bucket)?;
    delete_one(s3, &input.bucket, &input.key, input.version_id.as_deref()).await?;
    Ok(S3Response::new(DeleteObjectOutput::default()))
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
    let results: Vec<(String, S3Result<()>)> = futures::stream::iter(objects)
        .map(|o| async move {
            let r = delete_one(s3, bucket, &o.key, o.version_id.as_deref()).await;
            (o.key, r)
        })
        .buffered(16)
        .collect()
        .await;
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for (key, r) in results {
        match r {
            Ok(()) => {
                if !quiet {
                    deleted.push(DeletedObject {
                        key: Some(key),
                        ..Default::default()
                    });
                }
            }
            Err(e) => errors.push(Error {
                code: Some(e.code().as_str().to_string()),
                key: Some(key),
                message: e.message().map(str::to_string),
                version_id: None,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}
