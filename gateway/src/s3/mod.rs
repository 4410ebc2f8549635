//! The S3 front end: one file per operation family, the `s3s::S3` impl below only dispatches.
//!
//! Every object operation follows the request's journey: check the bucket and key here, find
//! the owning target by HRW placement ([`crate::proxy::Targets::owner`]), stream to or from it.

#[macro_use]
mod macros;

pub mod archive;
mod attrs;
mod bucket;
mod copy;
mod cors;
mod delete;
pub(crate) mod error;
pub mod etl;
mod get;
mod lifecycle;
pub(crate) mod list;
mod multipart;
mod policy;
mod put;
pub mod query;
mod tagging;
pub(crate) mod upload;
mod version;

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3, S3ErrorCode, S3Request, S3Response, S3Result};

use aisle_cluster::proto::EtlSelection;

use crate::meta::MetaOwner;
use crate::proxy::Targets;

pub use error::{MAX_KEY_LEN, from_client, s3_err as s3_error};
pub use upload::MAX_PUT_SIZE;

/// The gateway's implementation of S3.
pub struct AisleS3 {
    stats: Arc<Stats>,
    targets: Targets,
    meta: Arc<MetaOwner>,
    region: String,
    owner_id: String,
    admin_key: String,
    token_key: Vec<u8>,
}

impl AisleS3 {
    /// An S3 service over the cluster. `token_key` signs listing continuation tokens.
    pub fn new(
        targets: Targets,
        meta: Arc<MetaOwner>,
        region: String,
        access_key: &str,
        token_key: Vec<u8>,
        stats: Arc<Stats>,
    ) -> Self {
        Self {
            stats,
            targets,
            meta,
            region,
            owner_id: hex::encode(md5_bytes(access_key.as_bytes())),
            admin_key: access_key.to_string(),
            token_key,
        }
    }

    /// The bucket must exist and take writes: NoSuchBucket, or 405 for an alias bucket.
    /// Who signed `req` (s3s has verified the signature already).
    fn caller<T>(&self, req: &S3Request<T>) -> crate::access::Caller {
        crate::access::caller(
            &self.meta.snapshot(),
            &self.admin_key,
            req.credentials.as_ref().map(|c| c.access_key.as_str()),
        )
    }

    fn check_bucket(&self, bucket: &str) -> S3Result<()> {
        let meta = self.meta.snapshot();
        if meta.buckets.contains_key(bucket) {
            Ok(())
        } else if meta.aliases.contains_key(bucket) {
            let mut e = error::s3_err(
                S3ErrorCode::MethodNotAllowed,
                format!("{bucket} is a read-only transforming alias bucket"),
            );
            e.set_status_code(http::StatusCode::METHOD_NOT_ALLOWED);
            Err(e)
        } else {
            Err(error::s3_err(
                S3ErrorCode::NoSuchBucket,
                format!("the bucket {bucket} does not exist"),
            ))
        }
    }

    /// Where a read goes: the bucket itself, or an alias's source with its pipeline. A
    /// transform the request names itself must agree with the alias's (else 400).
    fn read_source(
        &self,
        bucket: &str,
        requested: Option<EtlSelection>,
    ) -> S3Result<(String, Option<EtlSelection>)> {
        let meta = self.meta.snapshot();
        if let Some(alias) = meta.aliases.get(bucket) {
            let bound = EtlSelection {
                pipeline: alias.pipeline.clone(),
                args: alias.args.clone(),
            };
            if requested.as_ref().is_some_and(|r| *r != bound) {
                return Err(error::s3_err(
                    S3ErrorCode::InvalidRequest,
                    format!(
                        "{bucket} is an alias bucket with its own pipeline; do not name another"
                    ),
                ));
            }
            return Ok((alias.source.clone(), Some(bound)));
        }
        if meta.buckets.contains_key(bucket) {
            Ok((bucket.to_string(), requested))
        } else {
            Err(error::s3_err(
                S3ErrorCode::NoSuchBucket,
                format!("the bucket {bucket} does not exist"),
            ))
        }
    }

    fn owner(&self) -> Owner {
        Owner {
            display_name: Some("aisle".into()),
            id: Some(self.owner_id.clone()),
        }
    }
}

/// Counters of the gateway's data path: the gateway's metrics.
pub type Stats = crate::metrics::GatewayMetrics;

fn md5_bytes(b: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(b).into()
}

#[async_trait::async_trait]
impl S3 for AisleS3 {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        bucket::list_buckets(self, req).await
    }
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        bucket::create_bucket(self, req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        bucket::head_bucket(self, req).await
    }
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        bucket::delete_bucket(self, req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        bucket::get_bucket_location(self, req).await
    }
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        put::put_object(self, req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        get::get_object(self, req).await
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        get::head_object(self, req).await
    }
    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        get::get_object_attributes(self, req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        delete::delete_object(self, req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        delete::delete_objects(self, req).await
    }
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        copy::copy_object(self, req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        list::list_objects_v2(self, req).await
    }
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        list::list_objects(self, req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create(self, req).await
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(self, req).await
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        multipart::upload_part_copy(self, req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        multipart::complete(self, req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort(self, req).await
    }
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        multipart::list_parts(self, req).await
    }
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        list::list_object_versions(self, req).await
    }
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        version::get_bucket_versioning(self, req).await
    }
    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        version::put_bucket_versioning(self, req).await
    }
    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        cors::put_bucket_cors(self, req).await
    }
    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        cors::get_bucket_cors(self, req).await
    }
    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        cors::delete_bucket_cors(self, req).await
    }
    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        tagging::put_bucket_tagging(self, req).await
    }
    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        tagging::get_bucket_tagging(self, req).await
    }
    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        tagging::delete_bucket_tagging(self, req).await
    }
    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        tagging::put_object_tagging(self, req).await
    }
    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        tagging::get_object_tagging(self, req).await
    }
    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        tagging::delete_object_tagging(self, req).await
    }
    async fn put_bucket_lifecycle_configuration(
        &self,
        req: S3Request<PutBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketLifecycleConfigurationOutput>> {
        lifecycle::put_bucket_lifecycle_configuration(self, req).await
    }
    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        lifecycle::get_bucket_lifecycle_configuration(self, req).await
    }
    async fn delete_bucket_lifecycle(
        &self,
        req: S3Request<DeleteBucketLifecycleInput>,
    ) -> S3Result<S3Response<DeleteBucketLifecycleOutput>> {
        lifecycle::delete_bucket_lifecycle(self, req).await
    }
    async fn put_bucket_policy(
        &self,
        req: S3Request<PutBucketPolicyInput>,
    ) -> S3Result<S3Response<PutBucketPolicyOutput>> {
        policy::put_bucket_policy(self, req).await
    }
    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        policy::get_bucket_policy(self, req).await
    }
    async fn delete_bucket_policy(
        &self,
        req: S3Request<DeleteBucketPolicyInput>,
    ) -> S3Result<S3Response<DeleteBucketPolicyOutput>> {
        policy::delete_bucket_policy(self, req).await
    }
    async fn get_bucket_policy_status(
        &self,
        req: S3Request<GetBucketPolicyStatusInput>,
    ) -> S3Result<S3Response<GetBucketPolicyStatusOutput>> {
        policy::get_bucket_policy_status(self, req).await
    }
    async fn put_bucket_acl(
        &self,
        req: S3Request<PutBucketAclInput>,
    ) -> S3Result<S3Response<PutBucketAclOutput>> {
        policy::put_bucket_acl(self, req).await
    }
    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        policy::get_bucket_acl(self, req).await
    }
    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        policy::get_object_acl(self, req).await
    }
    async fn put_object_acl(
        &self,
        req: S3Request<PutObjectAclInput>,
    ) -> S3Result<S3Response<PutObjectAclOutput>> {
        policy::put_object_acl(self, req).await
    }
    async fn put_public_access_block(
        &self,
        req: S3Request<PutPublicAccessBlockInput>,
    ) -> S3Result<S3Response<PutPublicAccessBlockOutput>> {
        policy::put_public_access_block(self, req).await
    }
    async fn get_public_access_block(
        &self,
        req: S3Request<GetPublicAccessBlockInput>,
    ) -> S3Result<S3Response<GetPublicAccessBlockOutput>> {
        policy::get_public_access_block(self, req).await
    }
    async fn delete_public_access_block(
        &self,
        req: S3Request<DeletePublicAccessBlockInput>,
    ) -> S3Result<S3Response<DeletePublicAccessBlockOutput>> {
        policy::delete_public_access_block(self, req).await
    }
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_uploads(self, req).await
    }
}
