//! Tags: S3's limits on a tag set; bucket tags (Put/Get/DeleteBucketTagging, kept with the bucket
//! in the cluster metadata) and object tags (`x-amz-tagging` on writes, kept in the object's
//! record; Put/Get/DeleteObjectTagging change them in place on every copy, bytes untouched).

use std::collections::BTreeMap;

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::bucket::{bucket_props, edit_bucket};
use super::error::{check_key, from_client, s3_err};
use crate::proxy::Retagged;

/// Most tags on a bucket, as S3.
pub const MAX_BUCKET_TAGS: usize = 50;
/// Most tags on an object, as S3.
pub const MAX_OBJECT_TAGS: usize = 10;
/// Longest tag key and value, in characters, as S3.
pub const MAX_TAG_KEY: usize = 128;
/// Longest tag value, in characters, as S3.
pub const MAX_TAG_VALUE: usize = 256;

/// A tag set checked against S3's rules (at most `max` tags, keys of 1–128 characters, values
/// of at most 256, no key twice), as a map. Every violation is `400 InvalidTag`.
pub(super) fn tag_map(set: TagSet, max: usize) -> S3Result<BTreeMap<String, String>> {
    let invalid = |m: String| s3_err(S3ErrorCode::InvalidTag, m);
    if set.len() > max {
        return Err(invalid(format!("at most {max} tags, got {}", set.len())));
    }
    let mut map = BTreeMap::new();
    for tag in set {
        let key = tag.key.unwrap_or_default();
        let value = tag.value.unwrap_or_default();
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_TAG_KEY {
            return Err(invalid(format!(
                "a tag key must be 1 to {MAX_TAG_KEY} characters, got {chars}"
            )));
        }
        if value.chars().count() > MAX_TAG_VALUE {
            return Err(invalid(format!(
                "the tag value of {key} is longer than {MAX_TAG_VALUE} characters"
            )));
        }
        if map.insert(key.clone(), value).is_some() {
            return Err(invalid(format!(
                "cannot provide multiple tags with the key {key}"
            )));
        }
    }
    Ok(map)
}

/// The tags of an `x-amz-tagging` header (`k1=v1&k2=v2`, URL-encoded), checked as object tags.
pub(super) fn tags_of_header(header: Option<&str>) -> S3Result<BTreeMap<String, String>> {
    let Some(h) = header.filter(|h| !h.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let set: TagSet = form_urlencoded::parse(h.as_bytes())
        .map(|(k, v)| Tag {
            key: Some(k.into_owned()),
            value: Some(v.into_owned()),
        })
        .collect();
    tag_map(set, MAX_OBJECT_TAGS)
}

/// Refuses tags on a write to a remote bucket: the remote keeps the object, and its tags would
/// live only in the cache.
pub(super) fn check_taggable(
    s3: &AisleS3,
    bucket: &str,
    tags: &BTreeMap<String, String>,
) -> S3Result<()> {
    if tags.is_empty() {
        return Ok(());
    }
    not_remote(s3, bucket)
}

fn not_remote(s3: &AisleS3, bucket: &str) -> S3Result<()> {
    match s3.targets.remote(bucket) {
        Some(_) => Err(s3_err(
            S3ErrorCode::NotImplemented,
            "object tags are not kept for remote buckets (their remote holds the object)",
        )),
        None => Ok(()),
    }
}

/// A stored tag map as S3's tag set.
pub(super) fn tag_set(map: &BTreeMap<String, String>) -> TagSet {
    map.iter()
        .map(|(k, v)| Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

pub(super) async fn put_bucket_tagging(
    s3: &AisleS3,
    req: S3Request<PutBucketTaggingInput>,
) -> S3Result<S3Response<PutBucketTaggingOutput>> {
    let input = req.input;
    let tags = tag_map(input.tagging.tag_set, MAX_BUCKET_TAGS)?;
    edit_bucket(s3, &input.bucket, |props| {
        let changed = props.tags != tags;
        props.tags = tags;
        Ok(changed)
    })
    .await?;
    Ok(S3Response::new(PutBucketTaggingOutput::default()))
}

pub(super) async fn get_bucket_tagging(
    s3: &AisleS3,
    req: S3Request<GetBucketTaggingInput>,
) -> S3Result<S3Response<GetBucketTaggingOutput>> {
    let props = bucket_props(s3, &req.input.bucket)?;
    if props.tags.is_empty() {
        return Err(s3_err(
            S3ErrorCode::NoSuchTagSet,
            "there is no tag set for this bucket",
        ));
    }
    Ok(S3Response::new(GetBucketTaggingOutput {
        tag_set: tag_set(&props.tags),
    }))
}

pub(super) async fn delete_bucket_tagging(
    s3: &AisleS3,
    req: S3Request<DeleteBucketTaggingInput>,
) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
    edit_bucket(s3, &req.input.bucket, |props| {
        let changed = !props.tags.is_empty();
        props.tags.clear();
        Ok(changed)
    })
    .await?;
    Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
}

/// The current version of an object (or `version_id`), read from any copy (alias buckets are
/// read-only: refused by `check_bucket`).
async fn current(
    s3: &AisleS3,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> S3Result<super::get::Read> {
    s3.check_bucket(bucket)?;
    not_remote(s3, bucket)?;
    let version = super::version::version_param(version_id)?;
    super::get::read_version(s3, bucket, key, version, None, Default::default(), true).await
}

/// Sets the tags of the object `key` as it is now (or of its version `version_id`), on every
/// copy; returns the version id tagged. A write that replaces the object meanwhile makes the
/// copies answer Stale: then the new object is tagged instead.
async fn retag(
    s3: &AisleS3,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    tags: BTreeMap<String, String>,
) -> S3Result<Option<String>> {
    const ATTEMPTS: usize = 3;
    for _ in 0..ATTEMPTS {
        let read = current(s3, bucket, key, version_id).await?;
        let plan = s3.targets.write_plan(bucket, key)?;
        match s3
            .targets
            .retag(&plan, bucket, key, read.meta.stamp(), &tags)
            .await
            .map_err(from_client)?
        {
            Retagged::Done => return Ok(read.version_id),
            // Read again: a newer object to tag, or NoSuchKey.
            Retagged::Stale | Retagged::Missing => continue,
        }
    }
    Err(s3_err(
        S3ErrorCode::SlowDown,
        "the object kept changing while its tags were set; try again",
    ))
}

pub(super) async fn put_object_tagging(
    s3: &AisleS3,
    req: S3Request<PutObjectTaggingInput>,
) -> S3Result<S3Response<PutObjectTaggingOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    let tags = tag_map(input.tagging.tag_set, MAX_OBJECT_TAGS)?;
    let version_id = retag(
        s3,
        &input.bucket,
        &input.key,
        input.version_id.as_deref(),
        tags,
    )
    .await?;
    Ok(S3Response::new(PutObjectTaggingOutput { version_id }))
}

pub(super) async fn get_object_tagging(
    s3: &AisleS3,
    req: S3Request<GetObjectTaggingInput>,
) -> S3Result<S3Response<GetObjectTaggingOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    let read = current(s3, &input.bucket, &input.key, input.version_id.as_deref()).await?;
    Ok(S3Response::new(GetObjectTaggingOutput {
        tag_set: tag_set(&read.meta.attrs.tags),
        version_id: read.version_id,
    }))
}

pub(super) async fn delete_object_tagging(
    s3: &AisleS3,
    req: S3Request<DeleteObjectTaggingInput>,
) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
    let input = req.input;
    check_key(&input.key)?;
    let version_id = retag(
        s3,
        &input.bucket,
        &input.key,
        input.version_id.as_deref(),
        BTreeMap::new(),
    )
    .await?;
    Ok(S3Response::new(DeleteObjectTaggingOutput { version_id }))
}
