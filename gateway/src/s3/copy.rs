//! CopyObject: read the source from its owner, stream it through the upload verifier (which
//! computes the new ETag and checksum) to the destination's owner.

use aisle_cluster::proto::ObjectQuery;
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::attrs::{etag, timestamp};
use super::error::{check_key, from_client, s3_err};
use super::get::{conditions, read_version};
use super::upload::{Algo, Expect, ExpectedValue, MAX_PUT_SIZE, verified_body};

/// A copy source: bucket, key and the version named, if one is (access-point sources are not
/// supported).
pub(super) struct Source {
    pub bucket: String,
    pub key: String,
    pub version_id: Option<String>,
}

/// The copy source of a request, its version id checked.
pub(super) fn copy_source(src: &CopySource) -> S3Result<Source> {
    match src {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok(Source {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version_id: super::version::version_param(version_id.as_deref())?,
        }),
        _ => Err(s3_err(
            S3ErrorCode::NotImplemented,
            "access-point copy sources are not supported",
        )),
    }
}

/// Read a copy source (all of it, or `range`) under the copy-source conditions, which fail
/// with 412 whichever of them fails.
pub(super) async fn read_source(
    s3: &AisleS3,
    src: &Source,
    conds: aisle_cluster::proto::Conditions,
    range: Option<String>,
) -> S3Result<super::get::Read> {
    s3.check_bucket(&src.bucket)?;
    read_version(
        s3,
        &src.bucket,
        &src.key,
        src.version_id.clone(),
        None,
        aisle_cluster::proto::ReadOptions {
            conditions: conds,
            range,
            ..Default::default()
        },
        false,
    )
    .await
    .map_err(|e| {
        if *e.code() == S3ErrorCode::NotModified {
            s3_err(
                S3ErrorCode::PreconditionFailed,
                "a copy-source condition does not hold",
            )
        } else {
            e
        }
    })
}

pub(super) async fn copy_object(
    s3: &AisleS3,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let input = req.input;
    s3.check_bucket(&input.bucket)?;
    check_key(&input.key)?;
    let source = copy_source(&input.copy_source)?;
    let (src_bucket, src_key) = (source.bucket.clone(), source.key.clone());
    super::policy::check_object_acl(input.acl.as_ref().map(|a| a.as_str()))?;
    let replace = match input.metadata_directive.as_ref().map(|d| d.as_str()) {
        None | Some(MetadataDirective::COPY) => false,
        Some(MetadataDirective::REPLACE) => true,
        Some(other) => {
            return Err(s3_err(
                S3ErrorCode::InvalidArgument,
                format!("unknown metadata directive {other}"),
            ));
        }
    };
    if !replace && src_bucket == input.bucket && src_key == input.key && source.version_id.is_none()
    {
        return Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "this copy request is illegal because it is trying to copy an object to itself without \
             changing the object's metadata",
        ));
    }
    // Copy-source conditions fail with 412, whichever of them fails.
    let conds = conditions(
        input.copy_source_if_match.as_ref(),
        input.copy_source_if_none_match.as_ref(),
        input.copy_source_if_modified_since.as_ref(),
        input.copy_source_if_unmodified_since.as_ref(),
    );
    let src = read_source(s3, &source, conds, None).await?;
    let src_size = src.content_length.unwrap_or(src.meta.size as i64) as u64;
    if src_size > MAX_PUT_SIZE {
        return Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "the source is larger than 5 GiB: use UploadPartCopy",
        ));
    }
    let mut attrs = if replace {
        attrs_of!(input)?
    } else {
        src.meta.attrs.clone()
    };
    // Tags follow x-amz-tagging-directive, independently of the metadata directive.
    attrs.tags = match input.tagging_directive.as_ref().map(|d| d.as_str()) {
        None | Some(TaggingDirective::COPY) => src.meta.attrs.tags.clone(),
        Some(TaggingDirective::REPLACE) => {
            super::tagging::tags_of_header(input.tagging.as_deref())?
        }
        Some(other) => {
            return Err(s3_err(
                S3ErrorCode::InvalidArgument,
                format!("unknown tagging directive {other}"),
            ));
        }
    };
    super::tagging::check_taggable(s3, &input.bucket, &attrs.tags)?;
    // Keep (recompute) the source's full-object checksum algorithm, or the one asked for.
    let algo = match input.checksum_algorithm.as_ref() {
        Some(a) => Some(Algo::from_name(a.as_str()).ok_or_else(|| {
            s3_err(
                S3ErrorCode::InvalidRequest,
                format!("unsupported checksum algorithm {}", a.as_str()),
            )
        })?),
        None => Algo::ALL
            .into_iter()
            .find(|a| a.get(&src.meta.checksums).is_some_and(|v| !v.contains('-'))),
    };
    let expect = Expect {
        len: Some(src_size),
        max_len: MAX_PUT_SIZE,
        content_md5: None,
        checksum: algo.map(|a| (a, ExpectedValue::ComputeOnly)),
    };
    let blob = StreamingBlob::wrap(aisle_cluster::client::data_stream(src.body));
    let (body, failure) = verified_body(blob, expect);
    let plan = s3.targets.write_plan(&input.bucket, &input.key)?;
    let versioning = plan.opts.versioning;
    let q = ObjectQuery {
        bucket: input.bucket.clone(),
        key: input.key.clone(),
        ..Default::default()
    };
    let meta = s3
        .targets
        .put_object(&plan, &q, &attrs, body)
        .await
        .map_err(|e| failure.take().unwrap_or_else(|| from_client(e)))?;
    let c = &meta.checksums;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&meta.etag)),
            last_modified: Some(timestamp(meta.mtime_ms)),
            checksum_crc32: c.crc32.clone(),
            checksum_crc32c: c.crc32c.clone(),
            checksum_crc64nvme: c.crc64nvme.clone(),
            checksum_sha1: c.sha1.clone(),
            checksum_sha256: c.sha256.clone(),
            ..Default::default()
        }),
        version_id: super::version::shown(&meta, || versioning),
        copy_source_version_id: src.version_id.clone(),
        ..Default::default()
    }))
}
