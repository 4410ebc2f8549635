//! Bucket policies (Put/Get/DeleteBucketPolicy, GetBucketPolicyStatus) and canned ACLs
//! (Put/GetBucketAcl, GetObjectAcl), kept with the bucket in the cluster metadata. The
//! decision they feed is `crate::access`'s; only a bucket's owner (or the admin) changes them
//! unless its policy grants that too.

use aisle_cluster::access::{CannedAcl, Policy, PublicAccessBlock};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::bucket::{bucket_props, edit_bucket};
use super::error::s3_err;

/// The canned ACL of an `x-amz-acl` header (none: private).
pub(super) fn canned_acl(header: Option<&str>) -> S3Result<CannedAcl> {
    match header {
        None => Ok(CannedAcl::Private),
        Some(h) => CannedAcl::parse(h).ok_or_else(|| {
            s3_err(
                S3ErrorCode::InvalidArgument,
                format!(
                    "unsupported canned ACL {h}: private, public-read, public-read-write or \
                     authenticated-read"
                ),
            )
        }),
    }
}

/// An object write's `x-amz-acl`: objects take their bucket's ACL, so only the values that
/// change nothing are accepted; a public object ACL would be a promise not kept.
pub(super) fn check_object_acl(header: Option<&str>) -> S3Result<()> {
    match header {
        None | Some("private" | "bucket-owner-full-control" | "bucket-owner-read") => Ok(()),
        Some(other) => Err(s3_err(
            S3ErrorCode::NotImplemented,
            format!(
                "per-object ACLs are not supported ({other}): objects take their bucket's \
                 canned ACL (PutBucketAcl) or its policy"
            ),
        )),
    }
}

pub(super) async fn put_bucket_policy(
    s3: &AisleS3,
    req: S3Request<PutBucketPolicyInput>,
) -> S3Result<S3Response<PutBucketPolicyOutput>> {
    let input = req.input;
    let policy = Policy::parse(&input.policy, &input.bucket)
        .map_err(|e| s3_err(S3ErrorCode::MalformedPolicy, e.to_string()))?;
    edit_bucket(s3, &input.bucket, |props| {
        if policy.is_public()
            && props
                .public_access_block
                .is_some_and(|b| b.block_public_policy)
        {
            return Err(s3_err(
                S3ErrorCode::AccessDenied,
                "the bucket's PublicAccessBlock (BlockPublicPolicy) refuses a public policy",
            ));
        }
        let changed = props.policy.as_ref() != Some(&policy);
        props.policy = Some(policy);
        Ok(changed)
    })
    .await?;
    Ok(S3Response::new(PutBucketPolicyOutput::default()))
}

/// The bucket's policy, or S3's NoSuchBucketPolicy.
fn stored_policy(s3: &AisleS3, bucket: &str) -> S3Result<Policy> {
    bucket_props(s3, bucket)?.policy.ok_or_else(|| {
        s3_err(
            S3ErrorCode::NoSuchBucketPolicy,
            "the bucket policy does not exist",
        )
    })
}

pub(super) async fn get_bucket_policy(
    s3: &AisleS3,
    req: S3Request<GetBucketPolicyInput>,
) -> S3Result<S3Response<GetBucketPolicyOutput>> {
    let policy = stored_policy(s3, &req.input.bucket)?;
    Ok(S3Response::new(GetBucketPolicyOutput {
        policy: Some(serde_json::to_string(&policy).expect("policy serializes")),
    }))
}

pub(super) async fn delete_bucket_policy(
    s3: &AisleS3,
    req: S3Request<DeleteBucketPolicyInput>,
) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
    edit_bucket(s3, &req.input.bucket, |props| {
        Ok(props.policy.take().is_some())
    })
    .await?;
    Ok(S3Response::new(DeleteBucketPolicyOutput::default()))
}

pub(super) async fn get_bucket_policy_status(
    s3: &AisleS3,
    req: S3Request<GetBucketPolicyStatusInput>,
) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
    let policy = stored_policy(s3, &req.input.bucket)?;
    Ok(S3Response::new(GetBucketPolicyStatusOutput {
        policy_status: Some(PolicyStatus {
            is_public: Some(policy.is_public()),
        }),
    }))
}

pub(super) async fn put_bucket_acl(
    s3: &AisleS3,
    req: S3Request<PutBucketAclInput>,
) -> S3Result<S3Response<PutBucketAclOutput>> {
    let input = req.input;
    if input.access_control_policy.is_some()
        || input.grant_full_control.is_some()
        || input.grant_read.is_some()
        || input.grant_read_acp.is_some()
        || input.grant_write.is_some()
        || input.grant_write_acp.is_some()
    {
        return Err(s3_err(
            S3ErrorCode::NotImplemented,
            "only canned ACLs (x-amz-acl) are supported, not grants",
        ));
    }
    let acl = canned_acl(input.acl.as_ref().map(|a| a.as_str()))?;
    edit_bucket(s3, &input.bucket, |props| {
        if acl.is_public()
            && props
                .public_access_block
                .is_some_and(|b| b.block_public_acls)
        {
            return Err(s3_err(
                S3ErrorCode::AccessDenied,
                "the bucket's PublicAccessBlock (BlockPublicAcls) refuses a public ACL",
            ));
        }
        let changed = props.acl != acl;
        props.acl = acl;
        Ok(changed)
    })
    .await?;
    Ok(S3Response::new(PutBucketAclOutput::default()))
}

/// S3's grants for a canned ACL: the owner's FULL_CONTROL, then the group grants.
fn grants(s3: &AisleS3, owner: Option<&str>, acl: CannedAcl) -> (Owner, Grants) {
    let owner = match owner {
        Some(u) => Owner {
            display_name: Some(u.to_string()),
            id: Some(hex::encode(super::md5_bytes(u.as_bytes()))),
        },
        None => s3.owner(),
    };
    let group = |uri: &str, perm: &'static str| Grant {
        grantee: Some(Grantee {
            type_: Type::from_static(Type::GROUP),
            uri: Some(uri.to_string()),
            display_name: None,
            email_address: None,
            id: None,
        }),
        permission: Some(Permission::from_static(perm)),
    };
    let mut g = vec![Grant {
        grantee: Some(Grantee {
            type_: Type::from_static(Type::CANONICAL_USER),
            id: owner.id.clone(),
            display_name: owner.display_name.clone(),
            email_address: None,
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    }];
    const ALL: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
    const AUTH: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
    match acl {
        CannedAcl::Private => {}
        CannedAcl::PublicRead => g.push(group(ALL, Permission::READ)),
        CannedAcl::PublicReadWrite => {
            g.push(group(ALL, Permission::READ));
            g.push(group(ALL, Permission::WRITE));
        }
        CannedAcl::AuthenticatedRead => g.push(group(AUTH, Permission::READ)),
    }
    (owner, g)
}

pub(super) async fn get_bucket_acl(
    s3: &AisleS3,
    req: S3Request<GetBucketAclInput>,
) -> S3Result<S3Response<GetBucketAclOutput>> {
    let props = bucket_props(s3, &req.input.bucket)?;
    let (owner, grants) = grants(s3, props.owner.as_deref(), props.acl);
    Ok(S3Response::new(GetBucketAclOutput {
        owner: Some(owner),
        grants: Some(grants),
    }))
}

/// `NoSuchKey` (or the read's other error) unless `(bucket, key)` is there: a HEAD.
async fn object_exists(s3: &AisleS3, bucket: &str, key: &str) -> S3Result<()> {
    super::get::read(s3, bucket, key, None, Default::default(), true).await?;
    Ok(())
}

/// An object's ACL is its bucket's (objects carry no ACL of their own).
pub(super) async fn get_object_acl(
    s3: &AisleS3,
    req: S3Request<GetObjectAclInput>,
) -> S3Result<S3Response<GetObjectAclOutput>> {
    let input = req.input;
    let props = bucket_props(s3, &input.bucket)?;
    object_exists(s3, &input.bucket, &input.key).await?;
    let (owner, grants) = grants(s3, props.owner.as_deref(), props.acl);
    Ok(S3Response::new(GetObjectAclOutput {
        owner: Some(owner),
        grants: Some(grants),
        ..Default::default()
    }))
}

/// PutObjectAcl: objects take their bucket's ACL, so a canned ACL that changes nothing
/// ([`check_object_acl`]) is accepted for an existing object; grants or a public canned ACL are
/// `501` with the reason, never silently dropped.
pub(super) async fn put_object_acl(
    s3: &AisleS3,
    req: S3Request<PutObjectAclInput>,
) -> S3Result<S3Response<PutObjectAclOutput>> {
    let input = req.input;
    super::version::version_param(input.version_id.as_deref())?;
    bucket_props(s3, &input.bucket)?;
    let grants = input.access_control_policy.is_some()
        || input.grant_full_control.is_some()
        || input.grant_read.is_some()
        || input.grant_read_acp.is_some()
        || input.grant_write.is_some()
        || input.grant_write_acp.is_some();
    if grants {
        return Err(s3_err(
            S3ErrorCode::NotImplemented,
            "per-object grants are not supported: objects take their bucket's canned ACL \
             (PutBucketAcl) or its policy",
        ));
    }
    check_object_acl(Some(input.acl.as_ref().map_or("private", |a| a.as_str())))?;
    object_exists(s3, &input.bucket, &input.key).await?;
    Ok(S3Response::new(PutObjectAclOutput::default()))
}

pub(super) async fn put_public_access_block(
    s3: &AisleS3,
    req: S3Request<PutPublicAccessBlockInput>,
) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
    let c = req.input.public_access_block_configuration;
    let block = PublicAccessBlock {
        block_public_acls: c.block_public_acls == Some(true),
        ignore_public_acls: c.ignore_public_acls == Some(true),
        block_public_policy: c.block_public_policy == Some(true),
        restrict_public_buckets: c.restrict_public_buckets == Some(true),
    };
    edit_bucket(s3, &req.input.bucket, |props| {
        let changed = props.public_access_block != Some(block);
        props.public_access_block = Some(block);
        Ok(changed)
    })
    .await?;
    Ok(S3Response::new(PutPublicAccessBlockOutput::default()))
}

pub(super) async fn get_public_access_block(
    s3: &AisleS3,
    req: S3Request<GetPublicAccessBlockInput>,
) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
    let props = bucket_props(s3, &req.input.bucket)?;
    let Some(b) = props.public_access_block else {
        let mut e = s3_err(
            S3ErrorCode::Custom("NoSuchPublicAccessBlockConfiguration".into()),
            "the public access block configuration was not found",
        );
        e.set_status_code(http::StatusCode::NOT_FOUND);
        return Err(e);
    };
    Ok(S3Response::new(GetPublicAccessBlockOutput {
        public_access_block_configuration: Some(PublicAccessBlockConfiguration {
            block_public_acls: Some(b.block_public_acls),
            ignore_public_acls: Some(b.ignore_public_acls),
            block_public_policy: Some(b.block_public_policy),
            restrict_public_buckets: Some(b.restrict_public_buckets),
        }),
    }))
}

pub(super) async fn delete_public_access_block(
    s3: &AisleS3,
    req: S3Request<DeletePublicAccessBlockInput>,
) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
    edit_bucket(s3, &req.input.bucket, |props| {
        Ok(props.public_access_block.take().is_some())
    })
    .await?;
    Ok(S3Response::new(DeletePublicAccessBlockOutput::default()))
}
