//! PutObject: stream the verified body to the owning target.

use aisle_cluster::proto::ObjectQuery;
use bytes::Bytes;
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::error::{check_key, from_client, s3_err};
use super::upload::{MAX_PUT_SIZE, verified_body};

/// An empty body for requests that carry none.
pub(super) fn empty_blob() -> StreamingBlob {
    StreamingBlob::wrap(futures::stream::empty::<Result<Bytes, std::io::Error>>())
}

/// Refuse declared sizes over the limit before reading anything.
pub(super) fn check_declared_len(len: Option<i64>, max: u64) -> S3Result<Option<u64>> {
    match len {
        Some(n) if n < 0 => Err(s3_err(
            S3ErrorCode::InvalidArgument,
            "negative Content-Length",
        )),
        Some(n) if n as u64 > max => Err(s3_err(
            S3ErrorCode::EntityTooLarge,
            format!("the body is {n} bytes; the limit is {max}"),
        )),
        other => Ok(other.map(|n| n as u64)),
    }
}

pub(super) async fn put_object(
    s3: &AisleS3,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        uri,
        ..
    } = req;
    s3.check_bucket(&input.bucket)?;
    check_key(&input.key)?;
    let append = super::archive::append_request(&headers, &uri)?;
    if input.sse_customer_algorithm.is_some()
        || input.server_side_encryption.is_some()
        || input.ssekms_key_id.is_some()
        || input.object_lock_mode.is_some()
        || input.object_lock_legal_hold_status.is_some()
        || input.write_offset_bytes.is_some()
        || input.if_match.is_some()
    {
        return Err(s3_err(
            S3ErrorCode::NotImplemented,
            "server-side encryption, object lock, append offsets and If-Match writes are not supported",
        ));
    }
    let if_absent = match &input.if_none_match {
        None => false,
        Some(ETagCondition::Any) => true,
        Some(_) => {
            return Err(s3_err(
                S3ErrorCode::NotImplemented,
                "PutObject supports If-None-Match only with the value *",
            ));
        }
    };
    let declared = check_declared_len(input.content_length, MAX_PUT_SIZE)?;
    super::policy::check_object_acl(input.acl.as_ref().map(|a| a.as_str()))?;
    let attrs = attrs_of!(input)?;
    super::tagging::check_taggable(s3, &input.bucket, &attrs.tags)?;
    let (expect, algo) = upload_expect!(input, headers, trailing_headers, declared);
    let mut plan = s3.targets.write_plan(&input.bucket, &input.key)?;
    plan.opts.if_absent = if_absent;
    let (body, failure) = verified_body(input.body.unwrap_or_else(empty_blob), expect);
    if let Some(archpath) = append {
        if !plan.opts.versioning.is_off() {
            return Err(s3_err(
                S3ErrorCode::InvalidRequest,
                "appending to a shard rewrites it in place: not possible in a bucket with \
                 versioning (write the new shard as a new version instead)",
            ));
        }
        let size = declared.ok_or_else(|| {
            s3_err(
                S3ErrorCode::MissingContentLength,
                "appending a member needs its Content-Length",
            )
        })?;
        let q = aisle_cluster::proto::AppendQuery {
            bucket: input.bucket,
            key: input.key,
            archpath,
            size,
        };
        let meta = s3
            .targets
            .append_member(&plan, &q, body)
            .await
            .map_err(|e| failure.take().unwrap_or_else(|| from_client(e)))?;
        return Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(super::attrs::etag(&meta.etag)),
            ..Default::default()
        }));
    }
    let versioning = plan.opts.versioning;
    let q = ObjectQuery {
        bucket: input.bucket,
        key: input.key,
        ..Default::default()
    };
    let meta = s3
        .targets
        .put_object(&plan, &q, &attrs, body)
        .await
        .map_err(|e| failure.take().unwrap_or_else(|| from_client(e)))?;
    s3.stats.bytes_in.inc_by(meta.size);
    let mut out = PutObjectOutput {
        e_tag: Some(super::attrs::etag(&meta.etag)),
        version_id: super::version::shown(&meta, || versioning),
        checksum_type: algo.map(|_| ChecksumType::from_static(ChecksumType::FULL_OBJECT)),
        ..Default::default()
    };
    echo_checksums!(out, meta.checksums, algo);
    Ok(S3Response::new(out))
}
