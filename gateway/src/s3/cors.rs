//! Put/Get/DeleteBucketCors: a bucket's CORS rules, kept with the bucket in the cluster
//! metadata. Answering browsers from them (preflight `OPTIONS`, `Access-Control-*` headers)
//! is `crate::cors`'s job, before and after s3s.

use aisle_cluster::cors::CorsRule;
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::bucket::{bucket_props, edit_bucket};
use super::error::s3_err;

pub(super) async fn put_bucket_cors(
    s3: &AisleS3,
    req: S3Request<PutBucketCorsInput>,
) -> S3Result<S3Response<PutBucketCorsOutput>> {
    let input = req.input;
    let rules: Vec<CorsRule> = input
        .cors_configuration
        .cors_rules
        .into_iter()
        .map(|r| CorsRule {
            id: r.id,
            allowed_origins: r.allowed_origins,
            allowed_methods: r.allowed_methods,
            allowed_headers: r.allowed_headers.unwrap_or_default(),
            expose_headers: r.expose_headers.unwrap_or_default(),
            max_age_seconds: r.max_age_seconds,
        })
        .collect();
    CorsRule::validate(&rules).map_err(|e| s3_err(S3ErrorCode::InvalidRequest, e.to_string()))?;
    edit_bucket(s3, &input.bucket, |props| {
        let changed = props.cors != rules;
        props.cors = rules;
        Ok(changed)
    })
    .await?;
    Ok(S3Response::new(PutBucketCorsOutput::default()))
}

pub(super) async fn get_bucket_cors(
    s3: &AisleS3,
    req: S3Request<GetBucketCorsInput>,
) -> S3Result<S3Response<GetBucketCorsOutput>> {
    let props = bucket_props(s3, &req.input.bucket)?;
    if props.cors.is_empty() {
        return Err(s3_err(
            S3ErrorCode::NoSuchCORSConfiguration,
            "the CORS configuration does not exist",
        ));
    }
    let some = |v: Vec<String>| (!v.is_empty()).then_some(v);
    let rules = props
        .cors
        .into_iter()
        .map(|r| CORSRule {
            id: r.id,
            allowed_origins: r.allowed_origins,
            allowed_methods: r.allowed_methods,
            allowed_headers: some(r.allowed_headers),
            expose_headers: some(r.expose_headers),
            max_age_seconds: r.max_age_seconds,
        })
        .collect();
    Ok(S3Response::new(GetBucketCorsOutput {
        cors_rules: Some(rules),
    }))
}

pub(super) async fn delete_bucket_cors(
    s3: &AisleS3,
    req: S3Request<DeleteBucketCorsInput>,
) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
    edit_bucket(s3, &req.input.bucket, |props| {
        let changed = !props.cors.is_empty();
        props.cors.clear();
        Ok(changed)
    })
    .await?;
    Ok(S3Response::new(DeleteBucketCorsOutput::default()))
}
