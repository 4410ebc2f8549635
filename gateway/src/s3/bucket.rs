//! Bucket operations: the bucket map lives in the cluster metadata the primary gateway owns.

use aisle_cluster::map::BucketProps;
use aisle_cluster::proto::ListQuery;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::error::{from_client, s3_err};
use crate::meta::PersistError;

impl From<PersistError> for S3Error {
    fn from(e: PersistError) -> Self {
        tracing::error!(error = %e, "cluster metadata not persisted");
        s3_err(
            S3ErrorCode::InternalError,
            "could not persist the bucket map",
        )
    }
}

pub(super) async fn list_buckets(
    s3: &AisleS3,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    use crate::access::Caller;
    let meta = s3.meta.snapshot();
    // The admin sees every bucket; a user the buckets they own (as S3 lists an account's).
    let who = s3.caller(&req);
    let mut buckets: Vec<Bucket> = meta
        .buckets
        .iter()
        .filter(|(_, p)| match &who {
            Caller::Admin => true,
            Caller::User(u) => p.owner.as_deref() == Some(u.as_str()),
            Caller::Anonymous => false,
        })
        .map(|(name, p)| (name, p.created_ms))
        .chain(
            meta.aliases
                .iter()
                .filter(|_| who == Caller::Admin)
                .map(|(name, a)| (name, a.created_ms)),
        )
        .map(|(name, created)| Bucket {
            name: Some(name.clone()),
            creation_date: Some(super::attrs::timestamp(created)),
            ..Default::default()
        })
        .collect();
    buckets.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        owner: Some(s3.owner()),
        ..Default::default()
    }))
}

pub(super) async fn create_bucket(
    s3: &AisleS3,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let owner = match s3.caller(&req) {
        crate::access::Caller::User(u) => Some(u),
        _ => None,
    };
    let acl = super::policy::canned_acl(req.input.acl.as_ref().map(|a| a.as_str()))?;
    let name = req.input.bucket;
    if name.starts_with('_') {
        return Err(s3_err(
            S3ErrorCode::InvalidBucketName,
            "bucket names must start with a lowercase letter or a digit",
        ));
    }
    let created_ms = aisle_cluster::now_ms();
    let us_east_1 = s3.region == "us-east-1";
    s3.meta
        .update(|m| {
            let holder = match (m.buckets.get(&name), m.aliases.contains_key(&name)) {
                (Some(b), _) => Some(b.owner.clone()),
                (None, true) => Some(None),
                (None, false) => None,
            };
            if let Some(holder) = holder {
                // Your own bucket again: in us-east-1 S3 answers 200 and changes nothing (its
                // legacy behaviour, which `aws s3 mb` scripts rely on); elsewhere
                // BucketAlreadyOwnedByYou. An alias is nobody's bucket to re-create.
                if holder == owner && us_east_1 && m.buckets.contains_key(&name) {
                    return Ok((false, ()));
                }
                // Someone else's bucket: the name is taken (S3's BucketAlreadyExists).
                return Err(if holder == owner {
                    s3_err(
                        S3ErrorCode::BucketAlreadyOwnedByYou,
                        format!("you already own the bucket {name}"),
                    )
                } else {
                    s3_err(
                        S3ErrorCode::BucketAlreadyExists,
                        format!("the bucket name {name} is taken: choose another"),
                    )
                });
            }
            m.buckets.insert(
                name.clone(),
                BucketProps {
                    owner,
                    acl,
                    ..BucketProps::new(created_ms, m.new_bucket_copies())
                },
            );
            Ok((true, ()))
        })
        .await?;
    Ok(S3Response::new(CreateBucketOutput {
        location: Some(format!("/{name}")),
    }))
}

/// Changes one bucket's properties (CORS, tags): `f` edits them and says whether anything
/// changed; a change is persisted and pushed like any metadata change.
pub(super) async fn edit_bucket(
    s3: &AisleS3,
    name: &str,
    f: impl FnOnce(&mut BucketProps) -> S3Result<bool>,
) -> S3Result<()> {
    s3.check_bucket(name)?;
    s3.meta
        .update(|m| match m.buckets.get_mut(name) {
            Some(props) => f(props).map(|changed| (changed, ())),
            None => Err(s3_err(
                S3ErrorCode::NoSuchBucket,
                format!("the bucket {name} does not exist"),
            )),
        })
        .await
}

/// One bucket's properties as they are now.
pub(super) fn bucket_props(s3: &AisleS3, name: &str) -> S3Result<BucketProps> {
    s3.check_bucket(name)?;
    s3.meta
        .snapshot()
        .buckets
        .get(name)
        .cloned()
        .ok_or_else(|| {
            s3_err(
                S3ErrorCode::NoSuchBucket,
                format!("the bucket {name} does not exist"),
            )
        })
}

pub(super) async fn head_bucket(
    s3: &AisleS3,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    s3.read_source(&req.input.bucket, None)?;
    Ok(S3Response::new(HeadBucketOutput {
        bucket_region: Some(s3.region.clone()),
        ..Default::default()
    }))
}

pub(super) async fn delete_bucket(
    s3: &AisleS3,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let name = req.input.bucket;
    s3.check_bucket(&name)?;
    if let Some((alias, _)) = s3
        .meta
        .snapshot()
        .aliases
        .iter()
        .find(|(_, a)| a.source == name)
    {
        let mut e = s3_err(
            S3ErrorCode::Custom("BucketHasAliases".into()),
            format!("the alias bucket {alias} reads from {name}; unbind it first"),
        );
        e.set_status_code(http::StatusCode::CONFLICT);
        return Err(e);
    }
    if s3.targets.remote(&name).is_some() {
        // Unbinding a remote bucket drops what is cached; the remote is never touched.
        evict_cached(s3, &name).await?;
        s3.meta
            .update(|m| Ok::<_, S3Error>((m.buckets.remove(&name).is_some(), ())))
            .await?;
        return Ok(S3Response::new(DeleteBucketOutput {}));
    }
    // Noncurrent versions and delete markers count: S3 deletes only a bucket with none.
    let q = ListQuery {
        bucket: name.clone(),
        limit: 1,
        versions: true,
        ..Default::default()
    };
    let targets = s3.targets.listing_targets(&name)?;
    let pages = futures::future::try_join_all(targets.iter().map(|t| s3.targets.list(t, &q)))
        .await
        .map_err(from_client)?;
    if pages.iter().any(|p| !p.items.is_empty()) {
        return Err(s3_err(
            S3ErrorCode::BucketNotEmpty,
            format!("the bucket {name} is not empty"),
        ));
    }
    futures::future::try_join_all(targets.iter().map(|t| s3.targets.drop_bucket(t, &name)))
        .await
        .map_err(from_client)?;
    s3.meta
        .update(|m| Ok::<_, S3Error>((m.buckets.remove(&name).is_some(), ())))
        .await?;
    Ok(S3Response::new(DeleteBucketOutput {}))
}

pub(super) async fn get_bucket_location(
    s3: &AisleS3,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    s3.check_bucket(&req.input.bucket)?;
    // S3 reports us-east-1 as an empty LocationConstraint.
    let loc = (s3.region != "us-east-1").then(|| BucketLocationConstraint::from(s3.region.clone()));
    Ok(S3Response::new(GetBucketLocationOutput {
        location_constraint: loc,
    }))
}

/// Drop every cached copy of the remote bucket `name` on every target.
async fn evict_cached(s3: &AisleS3, name: &str) -> S3Result<()> {
    let mut after = None;
    loop {
        let q = ListQuery {
            versions: false,
            after_version: None,
            bucket: name.to_string(),
            prefix: String::new(),
            delimiter: None,
            after: after.clone(),
            limit: 1000,
        };
        let page = super::list::cached_page(&s3.targets, name, &q).await?;
        let targets = s3.targets.listing_targets(name)?;
        for item in &page.items {
            s3.targets
                .evict(&targets, name, item.name())
                .await
                .map_err(from_client)?;
        }
        if !page.truncated {
            return Ok(());
        }
        after = page.items.last().map(|i| i.name().to_string());
    }
}
