//! The S3 front end: one file per operation family, the `s3s::S3` impl below only dispatches.
//!
//! Every object operation follows the request's journey: check the bucket and key here, find
//! the owning target by HRW placement ([`crate::proxy::Targets::owner`]), stream to or from it.

mod attrs;
mod bucket;
mod copy;
mod delete;
mod error;
mod get;
mod list;
mod multipart;
mod put;
mod upload;

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::meta::MetaOwner;
use crate::proxy::Targets;

pub use error::{MAX_KEY_LEN, s3_err as s3_error};
pub use upload::MAX_PUT_SIZE;

/// The gateway's implementation of S3.
pub struct AisleS3 {
    targets: Targets,
    meta: Arc<MetaOwner>,
    region: String,
    owner_id: String,
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
    ) -> Self {
        Self {
            targets,
            meta,
            region,
            owner_id: hex::encode(md5_bytes(access_key.as_bytes())),
            token_key,
        }
    }

    /// NoSuchBucket unless the bucket exists.
    fn check_bucket(&self, bucket: &str) -> S3Result<()> {
        if self.meta.snapshot().buckets.contains_key(bucket) {
            Ok(())
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
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        multipart::list_uploads(self, req).await
    }
}
