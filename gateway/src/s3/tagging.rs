//! Tags: S3's limits on a tag set, and Put/Get/DeleteBucketTagging (bucket tags live with the
//! bucket in the cluster metadata).

use std::collections::BTreeMap;

use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::bucket::{bucket_props, edit_bucket};
use super::error::s3_err;

/// Most tags on a bucket, as S3.
pub const MAX_BUCKET_TAGS: usize = 50;
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
