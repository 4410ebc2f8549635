//! Put/Get/DeleteBucketLifecycleConfiguration: a bucket's lifecycle rules, kept with the bucket
//! in the cluster metadata, in S3's XML both ways. Running them is `crate::lifecycle`'s job.
//!
//! Transitions between storage classes are refused (aisle has one class).

use aisle_cluster::lifecycle::{LifecycleRule, RuleFilter};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::bucket::{bucket_props, edit_bucket};
use super::error::s3_err;
use super::tagging::{MAX_OBJECT_TAGS, tag_map, tag_set};

fn ms_of(t: Timestamp) -> i64 {
    (time::OffsetDateTime::from(t).unix_timestamp_nanos() / 1_000_000) as i64
}

fn timestamp_of(ms: i64) -> Timestamp {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .into()
}

/// Days as S3 sends them (any integer) to the rule's (0 and below fail validation).
fn days(d: Option<i32>) -> Option<u32> {
    d.map(|d| u32::try_from(d).unwrap_or(0))
}

fn size(n: Option<i64>) -> Option<u64> {
    n.map(|n| u64::try_from(n).unwrap_or(0))
}

fn rule_of(r: s3s::dto::LifecycleRule) -> S3Result<LifecycleRule> {
    if r.transitions.as_ref().is_some_and(|t| !t.is_empty())
        || r.noncurrent_version_transitions
            .as_ref()
            .is_some_and(|t| !t.is_empty())
    {
        return Err(s3_err(
            S3ErrorCode::NotImplemented,
            "lifecycle transitions are not supported: aisle has one storage class",
        ));
    }
    let mut filter = RuleFilter {
        prefix: r.prefix.clone().unwrap_or_default(),
        ..Default::default()
    };
    if let Some(f) = r.filter {
        let tags = |set: Option<TagSet>| tag_map(set.unwrap_or_default(), MAX_OBJECT_TAGS);
        match f.and {
            Some(and) => {
                filter.prefix = and.prefix.unwrap_or_default();
                filter.tags = tags(and.tags)?;
                filter.size_greater_than = size(and.object_size_greater_than);
                filter.size_less_than = size(and.object_size_less_than);
            }
            None => {
                if let Some(p) = f.prefix {
                    filter.prefix = p;
                }
                filter.tags = tags(f.tag.map(|t| vec![t]))?;
                filter.size_greater_than = size(f.object_size_greater_than);
                filter.size_less_than = size(f.object_size_less_than);
            }
        }
    }
    let exp = r.expiration.unwrap_or_default();
    Ok(LifecycleRule {
        id: r.id,
        enabled: match r.status.as_str() {
            ExpirationStatus::ENABLED => true,
            ExpirationStatus::DISABLED => false,
            other => {
                return Err(s3_err(
                    S3ErrorCode::MalformedXML,
                    format!("a rule's Status is Enabled or Disabled, not {other}"),
                ));
            }
        },
        filter,
        expiration_days: days(exp.days),
        expiration_date_ms: exp.date.map(ms_of),
        expired_object_delete_marker: exp.expired_object_delete_marker == Some(true),
        noncurrent_days: days(
            r.noncurrent_version_expiration
                .as_ref()
                .and_then(|n| n.noncurrent_days),
        ),
        newer_noncurrent: days(
            r.noncurrent_version_expiration
                .and_then(|n| n.newer_noncurrent_versions),
        ),
        abort_incomplete_days: days(
            r.abort_incomplete_multipart_upload
                .and_then(|a| a.days_after_initiation),
        ),
    })
}

fn dto_of(r: LifecycleRule) -> s3s::dto::LifecycleRule {
    let f = r.filter;
    // More than one condition needs S3's <And>.
    let conditions = usize::from(!f.prefix.is_empty())
        + f.tags.len()
        + usize::from(f.size_greater_than.is_some())
        + usize::from(f.size_less_than.is_some());
    let as_i64 = |n: Option<u64>| n.map(|n| n as i64);
    let filter = if conditions > 1 {
        LifecycleRuleFilter {
            and: Some(LifecycleRuleAndOperator {
                prefix: (!f.prefix.is_empty()).then_some(f.prefix),
                tags: (!f.tags.is_empty()).then(|| tag_set(&f.tags)),
                object_size_greater_than: as_i64(f.size_greater_than),
                object_size_less_than: as_i64(f.size_less_than),
            }),
            ..Default::default()
        }
    } else {
        LifecycleRuleFilter {
            prefix: Some(f.prefix),
            tag: tag_set(&f.tags).into_iter().next(),
            object_size_greater_than: as_i64(f.size_greater_than),
            object_size_less_than: as_i64(f.size_less_than),
            ..Default::default()
        }
    };
    let expiration = (r.expiration_days.is_some()
        || r.expiration_date_ms.is_some()
        || r.expired_object_delete_marker)
        .then(|| LifecycleExpiration {
            days: r.expiration_days.map(|d| d as i32),
            date: r.expiration_date_ms.map(timestamp_of),
            expired_object_delete_marker: r.expired_object_delete_marker.then_some(true),
        });
    s3s::dto::LifecycleRule {
        id: r.id,
        status: ExpirationStatus::from_static(if r.enabled {
            ExpirationStatus::ENABLED
        } else {
            ExpirationStatus::DISABLED
        }),
        filter: Some(filter),
        expiration,
        noncurrent_version_expiration: r.noncurrent_days.map(|d| NoncurrentVersionExpiration {
            noncurrent_days: Some(d as i32),
            newer_noncurrent_versions: r.newer_noncurrent.map(|n| n as i32),
        }),
        abort_incomplete_multipart_upload: r.abort_incomplete_days.map(|d| {
            AbortIncompleteMultipartUpload {
                days_after_initiation: Some(d as i32),
            }
        }),
        noncurrent_version_transitions: None,
        prefix: None,
        transitions: None,
    }
}

pub(super) async fn put_bucket_lifecycle_configuration(
    s3: &AisleS3,
    req: S3Request<PutBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
    let input = req.input;
    let config = input.lifecycle_configuration.ok_or_else(|| {
        s3_err(
            S3ErrorCode::MalformedXML,
            "the request carries no LifecycleConfiguration",
        )
    })?;
    let rules = config
        .rules
        .into_iter()
        .map(rule_of)
        .collect::<S3Result<Vec<_>>>()?;
    LifecycleRule::validate(&rules)
        .map_err(|e| s3_err(S3ErrorCode::InvalidArgument, e.to_string()))?;
    edit_bucket(s3, &input.bucket, |props| {
        if props.remote.is_some() {
            return Err(s3_err(
                S3ErrorCode::NotImplemented,
                "lifecycle rules are not run on remote buckets (they would delete on the remote)",
            ));
        }
        let changed = props.lifecycle != rules;
        props.lifecycle = rules;
        Ok(changed)
    })
    .await?;
    Ok(S3Response::new(
        PutBucketLifecycleConfigurationOutput::default(),
    ))
}

pub(super) async fn get_bucket_lifecycle_configuration(
    s3: &AisleS3,
    req: S3Request<GetBucketLifecycleConfigurationInput>,
) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
    let props = bucket_props(s3, &req.input.bucket)?;
    if props.lifecycle.is_empty() {
        return Err(s3_err(
            S3ErrorCode::NoSuchLifecycleConfiguration,
            "the lifecycle configuration does not exist",
        ));
    }
    Ok(S3Response::new(GetBucketLifecycleConfigurationOutput {
        rules: Some(props.lifecycle.into_iter().map(dto_of).collect()),
        ..Default::default()
    }))
}

pub(super) async fn delete_bucket_lifecycle(
    s3: &AisleS3,
    req: S3Request<DeleteBucketLifecycleInput>,
) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
    edit_bucket(s3, &req.input.bucket, |props| {
        let changed = !props.lifecycle.is_empty();
        props.lifecycle.clear();
        Ok(changed)
    })
    .await?;
    Ok(S3Response::new(DeleteBucketLifecycleOutput::default()))
}
