//! Conversions between s3s DTO fields and the cluster's metadata records.

use aisle_cluster::proto::{Checksums, ObjectAttrs};
use s3s::dto::{self, ETag, Metadata, Timestamp, TimestampFormat};
use s3s::{S3ErrorCode, S3Result};

use super::error::s3_err;

/// Longest total of user metadata (names + values) S3 accepts, in bytes.
pub const MAX_USER_METADATA: usize = 2048;

/// Unix milliseconds → s3s timestamp.
pub fn timestamp(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

/// s3s timestamp → Unix seconds.
pub fn unix_secs(t: &Timestamp) -> i64 {
    time::OffsetDateTime::from(t.clone()).unix_timestamp()
}

/// Quoted strong ETag.
pub fn etag(v: &str) -> ETag {
    ETag::Strong(v.to_string())
}

/// An ETag condition as the cluster protocol carries it (one tag, or `*`).
pub fn etag_condition(c: &dto::ETagCondition) -> String {
    match c {
        dto::ETagCondition::Any => "*".into(),
        dto::ETagCondition::ETag(t) => t.value().to_string(),
    }
}

/// The headers a 304 Not Modified carries, as S3's do: the object's ETag and Last-Modified.
pub fn not_modified_headers(m: &aisle_cluster::proto::ObjectMeta) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&format!("\"{}\"", m.etag)) {
        h.insert(http::header::ETAG, v);
    }
    if let Some(v) =
        expires_string(&timestamp(m.mtime_ms)).and_then(|s| http::HeaderValue::from_str(&s).ok())
    {
        h.insert(http::header::LAST_MODIFIED, v);
    }
    h
}

/// What S3 says with an error about a delete marker: that it is one, and its version id.
pub fn delete_marker_headers(version_id: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert(
        "x-amz-delete-marker",
        http::HeaderValue::from_static("true"),
    );
    if let Ok(v) = http::HeaderValue::from_str(version_id) {
        h.insert("x-amz-version-id", v);
    }
    h
}

fn expires_string(t: &Timestamp) -> Option<String> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::HttpDate, &mut buf).ok()?;
    String::from_utf8(buf).ok()
}

/// Parse a stored Expires back.
pub fn parse_expires(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

/// Drop the `aws-chunked` token from a Content-Encoding: it describes the upload framing, not
/// the object.
pub fn strip_aws_chunked(enc: Option<String>) -> Option<String> {
    let enc = enc?;
    let chunked = |t: &str| t.trim().eq_ignore_ascii_case("aws-chunked");
    if !enc.split(',').any(chunked) {
        // Kept exactly as sent (`gzip, br` stays `gzip, br`), as S3 does.
        return (!enc.trim().is_empty()).then_some(enc);
    }
    let kept: Vec<&str> = enc
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    (!kept.is_empty()).then(|| kept.join(","))
}

/// The client-settable attributes of an upload, with S3's limits applied.
#[allow(clippy::too_many_arguments)]
pub fn object_attrs(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<&Timestamp>,
    metadata: Option<Metadata>,
    tagging: Option<&str>,
) -> S3Result<ObjectAttrs> {
    let user: std::collections::BTreeMap<String, String> = metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let total: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_USER_METADATA {
        return Err(s3_err(
            S3ErrorCode::MetadataTooLarge,
            format!("user metadata is {total} bytes; the limit is {MAX_USER_METADATA}"),
        ));
    }
    Ok(ObjectAttrs {
        content_type,
        content_encoding: strip_aws_chunked(content_encoding),
        content_disposition,
        content_language,
        cache_control,
        expires: expires.and_then(expires_string),
        user,
        tags: super::tagging::tags_of_header(tagging)?,
    })
}

/// User metadata for a response.
pub fn metadata(a: &ObjectAttrs) -> Option<Metadata> {
    (!a.user.is_empty()).then(|| a.user.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Checksums the client sent in headers.
pub fn header_checksums(
    crc32: &Option<String>,
    crc32c: &Option<String>,
    crc64nvme: &Option<String>,
    sha1: &Option<String>,
    sha256: &Option<String>,
) -> Checksums {
    Checksums {
        crc32: crc32.clone(),
        crc32c: crc32c.clone(),
        crc64nvme: crc64nvme.clone(),
        sha1: sha1.clone(),
        sha256: sha256.clone(),
        kind: None,
    }
}

/// `x-amz-checksum-type` for a response.
pub fn checksum_type(c: &Checksums) -> Option<dto::ChecksumType> {
    if c.is_empty() {
        return None;
    }
    c.kind.clone().map(dto::ChecksumType::from)
}

#[cfg(test)]
mod encoding_tests {
    use super::strip_aws_chunked;

    #[test]
    fn content_encoding_is_kept_as_sent_without_the_upload_framing() {
        let s = |v: &str| strip_aws_chunked(Some(v.into()));
        assert_eq!(s("gzip, br").as_deref(), Some("gzip, br"));
        assert_eq!(s("aws-chunked, gzip").as_deref(), Some("gzip"));
        assert_eq!(s("aws-chunked"), None);
        assert_eq!(s(" "), None);
    }
}
