//! GetObject and HeadObject: read through the owning target, which resolves ranges, parts and
//! conditions against the stored record; the body streams back untouched.

use aisle_cluster::client::status_error;
use aisle_cluster::client::{ReadBody, data_stream};
use aisle_cluster::proto::{Conditions, ETL_APPLIED_HEADER, ObjectMeta, ObjectQuery, ReadOptions};
use futures::StreamExt;
use http::{StatusCode, header};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::attrs::{
    checksum_type, etag, etag_condition, metadata, parse_expires, timestamp, unix_secs,
};
use super::error::{check_key, from_client, s3_err};

/// What the target answered for a read.
pub(super) struct Read {
    pub meta: ObjectMeta,
    pub content_length: Option<i64>,
    pub etl_applied: Option<String>,
    pub content_range: Option<String>,
    pub partial: bool,
    pub body: ReadBody,
    /// The `x-amz-version-id` to show ([`super::version::shown`]).
    pub version_id: Option<String>,
}

/// The conditions of a GET/HEAD, in the cluster's form.
pub(super) fn conditions(
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> Conditions {
    Conditions {
        if_match: if_match.map(etag_condition),
        if_none_match: if_none_match.map(etag_condition),
        if_modified_since: if_modified_since.map(unix_secs),
        if_unmodified_since: if_unmodified_since.map(unix_secs),
    }
}

/// The Range header in the cluster protocol's form.
pub(super) fn range_spec(range: Option<&Range>) -> Option<String> {
    range.map(|r| {
        r.to_header_string()
            .trim_start_matches("bytes=")
            .to_string()
    })
}

/// Read the current version of `(bucket, key)` ([`read_version`]).
pub(super) async fn read(
    s3: &AisleS3,
    bucket: &str,
    key: &str,
    part_number: Option<i32>,
    opts: ReadOptions,
    head: bool,
) -> S3Result<Read> {
    read_version(s3, bucket, key, None, part_number, opts, head).await
}

/// Read `(bucket, key)` — its current version, or `version_id` — from a target that holds
/// it: a range, a part, or all of it, maybe transformed.
pub(super) async fn read_version(
    s3: &AisleS3,
    bucket: &str,
    key: &str,
    version_id: Option<String>,
    part_number: Option<i32>,
    opts: ReadOptions,
    head: bool,
) -> S3Result<Read> {
    check_key(key)?;
    if opts.etl.is_some() && part_number.is_some() {
        return Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "partNumber cannot be combined with a transform",
        ));
    }
    if part_number.is_some() && opts.range.is_some() {
        return Err(s3_err(
            S3ErrorCode::InvalidRequest,
            "cannot specify both a Range header and a partNumber parameter",
        ));
    }
    let part = match part_number {
        None => None,
        Some(n) if (1..=10_000).contains(&n) => Some(n as u32),
        Some(n) => {
            return Err(s3_err(
                S3ErrorCode::InvalidArgument,
                format!("part number must be an integer between 1 and 10000, got {n}"),
            ));
        }
    };
    let q = ObjectQuery {
        bucket: bucket.into(),
        key: key.into(),
        part,
        version_id,
    };
    let (mut resp, target) = s3
        .targets
        .read(&q, &opts, head)
        .await
        .map_err(from_client)?;
    // The object's record: with the answer, and with a 304 (its ETag and Last-Modified).
    let meta = crate::proxy::Record::take(&mut resp);
    let h = resp.headers();
    let meta = match (resp.status(), meta) {
        (StatusCode::OK | StatusCode::PARTIAL_CONTENT, Some(m)) => m,
        (StatusCode::OK | StatusCode::PARTIAL_CONTENT, None) => {
            return Err(s3_err(
                S3ErrorCode::InternalError,
                "a target answered without object metadata",
            ));
        }
        (StatusCode::NOT_MODIFIED, m) => {
            let mut e = s3_err(S3ErrorCode::NotModified, "not modified");
            if let Some(m) = m {
                e.set_headers(super::attrs::not_modified_headers(&m));
            }
            return Err(e);
        }
        _ => return Err(from_client(status_error(target.url.clone(), resp).await)),
    };
    let etl_applied = h
        .get(ETL_APPLIED_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // A transform that streams has no length up front: the response is chunked.
    let content_length = crate::proxy::content_length(&resp).map(|n| n as i64);
    let content_range = h
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(Read {
        version_id: super::version::shown(&meta, || super::version::state(s3, bucket)),
        etl_applied,
        partial: resp.status() == StatusCode::PARTIAL_CONTENT,
        meta,
        content_length,
        content_range,
        body: resp.into_body(),
    })
}

/// Fill the fields GetObjectOutput and HeadObjectOutput share, with `response-*` overrides.
macro_rules! fill_output {
    ($out:ident, $read:expr, $input:expr, $part:expr) => {{
        let read = $read;
        let m = &read.meta;
        let a = &m.attrs;
        let input = $input;
        $out.content_length = read.content_length;
        $out.content_range = read.content_range.clone();
        $out.e_tag = Some(etag(&m.etag));
        $out.version_id = read.version_id.clone();
        $out.last_modified = Some(timestamp(m.mtime_ms));
        $out.accept_ranges = Some("bytes".into());
        $out.metadata = metadata(a);
        $out.content_type = Some(
            input
                .response_content_type
                .clone()
                .or_else(|| a.content_type.clone())
                .unwrap_or_else(|| "binary/octet-stream".into()),
        );
        $out.content_encoding = input
            .response_content_encoding
            .clone()
            .or_else(|| a.content_encoding.clone());
        $out.content_disposition = input
            .response_content_disposition
            .clone()
            .or_else(|| a.content_disposition.clone());
        $out.content_language = input
            .response_content_language
            .clone()
            .or_else(|| a.content_language.clone());
        $out.cache_control = input
            .response_cache_control
            .clone()
            .or_else(|| a.cache_control.clone());
        $out.expires = input
            .response_expires
            .clone()
            .or_else(|| a.expires.as_deref().and_then(parse_expires));
        if $part.is_some() && !m.parts.is_empty() {
            $out.parts_count = Some(m.parts.len() as i32);
        }
        let enabled = input
            .checksum_mode
            .as_ref()
            .is_some_and(|c| c.as_str() == ChecksumMode::ENABLED);
        if enabled && !read.partial && read.etl_applied.is_none() {
            let c = &m.checksums;
            $out.checksum_crc32 = c.crc32.clone();
            $out.checksum_crc32c = c.crc32c.clone();
            $out.checksum_crc64nvme = c.crc64nvme.clone();
            $out.checksum_sha1 = c.sha1.clone();
            $out.checksum_sha256 = c.sha256.clone();
            $out.checksum_type = checksum_type(c);
        }
    }};
}

fn applied_header(h: &mut http::HeaderMap, read: &Read) {
    if let Some(a) = read
        .etl_applied
        .as_deref()
        .and_then(|a| http::HeaderValue::from_str(a).ok())
    {
        h.insert(ETL_APPLIED_HEADER, a);
    }
}

/// The read a GET or HEAD asks for (their inputs share these field names): alias and
/// transform selection, shard selection, range, conditions.
macro_rules! read_request {
    ($s3:expr, $req:expr, $head:expr) => {{
        let query = super::query::Query::of(&$req.uri);
        let requested = super::etl::selection(&$req.headers, &query)?;
        let archive = super::archive::selection(&$req.headers, &query)?;
        let input = $req.input;
        let version = super::version::version_param(input.version_id.as_deref())?;
        let (bucket, etl) = $s3.read_source(&input.bucket, requested)?;
        if etl.is_some()
            && matches!(
                archive,
                Some(aisle_cluster::proto::ArchiveSelection::Regex { .. })
            )
        {
            return Err(s3_err(
                S3ErrorCode::InvalidRequest,
                "a transform applies to one shard member (archpath), not to a selection of \
                 members; transform whole shards with wds-map",
            ));
        }
        let opts = ReadOptions {
            range: range_spec(input.range.as_ref()),
            conditions: conditions(
                input.if_match.as_ref(),
                input.if_none_match.as_ref(),
                input.if_modified_since.as_ref(),
                input.if_unmodified_since.as_ref(),
            ),
            etl,
            archive,
            sized: false,
            uncached: false,
        };
        let read = read_version(
            $s3,
            &bucket,
            &input.key,
            version,
            input.part_number,
            opts,
            $head,
        )
        .await?;
        (input, read)
    }};
}

pub(super) async fn get_object(
    s3: &AisleS3,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let (input, read) = read_request!(s3, req, false);
    let mut out = GetObjectOutput::default();
    fill_output!(out, &read, &input, input.part_number);
    let tags = read.meta.attrs.tags.len();
    out.tag_count = (tags > 0).then_some(tags as i32);
    let mut headers = http::HeaderMap::new();
    applied_header(&mut headers, &read);
    let stats = s3.stats.clone();
    let counted = data_stream(read.body).inspect(move |c| {
        if let Ok(c) = c {
            stats.bytes_out.inc_by(c.len() as u64);
        }
    });
    out.body = Some(StreamingBlob::wrap(counted));
    let mut resp = S3Response::new(out);
    resp.headers = headers;
    if read.partial {
        resp.status = Some(StatusCode::PARTIAL_CONTENT);
    }
    Ok(resp)
}

pub(super) async fn head_object(
    s3: &AisleS3,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let (input, read) = read_request!(s3, req, true);
    let mut out = HeadObjectOutput::default();
    fill_output!(out, &read, &input, input.part_number);
    let mut resp = S3Response::new(out);
    applied_header(&mut resp.headers, &read);
    if read.partial {
        resp.status = Some(StatusCode::PARTIAL_CONTENT);
    }
    Ok(resp)
}

/// GetObjectAttributes: what a HEAD knows, in S3's XML — ETag, size, storage class, the
/// object's checksum and, for a multipart object, its parts (numbers and sizes, paged by
/// `max-parts` / `part-number-marker`). Attributes not asked for are left out.
pub(super) async fn get_object_attributes(
    s3: &AisleS3,
    req: S3Request<GetObjectAttributesInput>,
) -> S3Result<S3Response<GetObjectAttributesOutput>> {
    let input = req.input;
    let version = super::version::version_param(input.version_id.as_deref())?;
    let (bucket, _) = s3.read_source(&input.bucket, None)?;
    let read = read_version(
        s3,
        &bucket,
        &input.key,
        version,
        None,
        ReadOptions::default(),
        true,
    )
    .await?;
    let m = &read.meta;
    // The header may come as one comma-separated value (botocore sends it so).
    let wants = |a: &str| {
        input
            .object_attributes
            .iter()
            .flat_map(|x| x.as_str().split(','))
            .any(|x| x.trim() == a)
    };
    let mut out = GetObjectAttributesOutput {
        last_modified: Some(timestamp(m.mtime_ms)),
        version_id: read.version_id.clone(),
        ..Default::default()
    };
    if wants(ObjectAttributes::ETAG) {
        out.e_tag = Some(etag(&m.etag));
    }
    if wants(ObjectAttributes::OBJECT_SIZE) {
        out.object_size = Some(m.size as i64);
    }
    if wants(ObjectAttributes::STORAGE_CLASS) {
        out.storage_class = Some(StorageClass::from_static(StorageClass::STANDARD));
    }
    if wants(ObjectAttributes::CHECKSUM) {
        let c = &m.checksums;
        let checksum = Checksum {
            checksum_crc32: c.crc32.clone(),
            checksum_crc32c: c.crc32c.clone(),
            checksum_crc64nvme: c.crc64nvme.clone(),
            checksum_sha1: c.sha1.clone(),
            checksum_sha256: c.sha256.clone(),
            checksum_type: checksum_type(c),
        };
        if checksum.checksum_type.is_some() {
            out.checksum = Some(checksum);
        }
    }
    if wants(ObjectAttributes::OBJECT_PARTS) && !m.parts.is_empty() {
        let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = input.part_number_marker.unwrap_or(0).max(0) as usize;
        let page: Vec<ObjectPart> = m
            .parts
            .iter()
            .enumerate()
            .skip(after)
            .take(max)
            .map(|(i, size)| ObjectPart {
                part_number: Some(i as i32 + 1),
                size: Some(*size as i64),
                ..Default::default()
            })
            .collect();
        let last = page
            .last()
            .and_then(|p| p.part_number)
            .unwrap_or(after as i32);
        out.object_parts = Some(GetObjectAttributesParts {
            is_truncated: Some((last as usize) < m.parts.len()),
            max_parts: Some(max as i32),
            next_part_number_marker: Some(last),
            part_number_marker: Some(after as i32),
            parts: Some(page),
            total_parts_count: Some(m.parts.len() as i32),
        });
    }
    Ok(S3Response::new(out))
}
