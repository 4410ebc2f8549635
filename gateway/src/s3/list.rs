//! ListObjectsV2 and ListObjects (V1): every target lists its own keys in order; the gateway
//! merges the pages ([`aisle_cluster::listing::merge_pages`]) and resumes from the last item it
//! returned, carried in a signed, opaque continuation token.

use aisle_cluster::listing::{ListItem, ListPage, merge_pages};
use aisle_cluster::proto::{EtlSelection, ListQuery};
use aisle_cluster::versioning::id_or_null;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};
use sha2::Sha256;

use super::AisleS3;
use super::attrs::{etag, timestamp};
use super::error::{from_client, from_remote, s3_err};

/// The most keys one page returns, as S3.
pub const MAX_KEYS: usize = 1000;

fn token_mac(key: &[u8], bucket: &str, prefix: &str, delimiter: &str, after: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in [bucket, prefix, delimiter, after] {
        mac.update(part.as_bytes());
        mac.update(&[0]);
    }
    mac.finalize().into_bytes()[..16].to_vec()
}

/// A continuation token: the resume point, bound to this listing's parameters by an HMAC.
fn seal_token(key: &[u8], bucket: &str, prefix: &str, delimiter: &str, after: &str) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(after),
        URL_SAFE_NO_PAD.encode(token_mac(key, bucket, prefix, delimiter, after))
    )
}

fn open_token(
    key: &[u8],
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    token: &str,
) -> S3Result<String> {
    let invalid = || {
        s3_err(
            S3ErrorCode::InvalidArgument,
            "the continuation token provided is incorrect",
        )
    };
    let (a, m) = token.split_once('.').ok_or_else(invalid)?;
    let after = String::from_utf8(URL_SAFE_NO_PAD.decode(a).map_err(|_| invalid())?)
        .map_err(|_| invalid())?;
    let mac = URL_SAFE_NO_PAD.decode(m).map_err(|_| invalid())?;
    let mut check = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in [bucket, prefix, delimiter, after.as_str()] {
        check.update(part.as_bytes());
        check.update(&[0]);
    }
    let full = check.finalize().into_bytes();
    if mac.len() != 16 || !aisle_cluster::auth::constant_time_eq(&full[..16], &mac) {
        return Err(invalid());
    }
    Ok(after)
}

fn max_keys(v: Option<i32>) -> S3Result<usize> {
    match v {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(s3_err(
            S3ErrorCode::InvalidArgument,
            "max-keys must not be negative",
        )),
        Some(n) => Ok((n as usize).min(MAX_KEYS)),
    }
}

/// One merged page across all targets.
async fn merged_page(
    s3: &AisleS3,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<String>,
    limit: usize,
) -> S3Result<ListPage> {
    let (source, etl) = s3.read_source(bucket, None)?;
    if limit == 0 {
        return Ok(ListPage::default());
    }
    let q = ListQuery {
        bucket: source.clone(),
        prefix: prefix.into(),
        delimiter: delimiter.filter(|d| !d.is_empty()).map(str::to_string),
        after,
        limit,
        ..Default::default()
    };
    let mut page = match s3.targets.remote(&source) {
        // A remote bucket lists what its remote holds (`aisle ls --cached`: what is cached).
        Some(remote) => remote
            .map_err(from_remote)?
            .list_page(&q)
            .await
            .map_err(from_remote)?,
        None => cached_page(&s3.targets, bucket, &q).await?,
    };
    if let Some(sel) = etl {
        transformed_sizes(s3, &source, &sel, &mut page.items).await;
    }
    Ok(page)
}

/// One page of what the targets hold of `q.bucket` (reached as `bucket`), merged.
pub(crate) async fn cached_page(
    targets: &crate::proxy::Targets,
    bucket: &str,
    q: &ListQuery,
) -> S3Result<ListPage> {
    let ts = targets.listing_targets(bucket)?;
    if ts.is_empty() {
        return Err(crate::proxy::NoTargets::None.into());
    }
    let pages = futures::future::try_join_all(ts.iter().map(|t| targets.list(t, q)))
        .await
        .map_err(from_client)?;
    Ok(merge_pages(pages, q.limit))
}

/// Through an alias bucket a listing reports what a GET returns: the transformed size and
/// ETag. Clients such as `aws s3 cp --recursive` split downloads by the listed size, so a
/// wrong size would corrupt files silently. Deterministic outputs are materialized into the
/// owning targets' caches (HEAD through the pipeline), a bounded number at a time; a
/// non-deterministic pipeline has no size before it runs, so its objects keep the source's.
async fn transformed_sizes(s3: &AisleS3, source: &str, sel: &EtlSelection, items: &mut [ListItem]) {
    const CONCURRENCY: usize = 8;
    let keys: Vec<(usize, String)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| match it {
            ListItem::Object(o) => Some((i, o.key.clone())),
            ListItem::Prefix(_) => None,
        })
        .collect();
    let heads = futures::stream::iter(keys)
        .map(|(i, key)| async move {
            let r = super::get::read(
                s3,
                source,
                &key,
                None,
                aisle_cluster::proto::ReadOptions {
                    etl: Some(sel.clone()),
                    ..Default::default()
                },
                true,
            )
            .await;
            (i, key, r)
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    for (i, key, r) in heads {
        match r {
            Ok(read) => {
                if let ListItem::Object(o) = &mut items[i] {
                    if let Some(len) = read.content_length {
                        o.size = len as u64;
                    }
                    o.etag = read.meta.etag;
                }
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "could not size a transformed object for a listing")
            }
        }
    }
}

/// What `encoding-type=url` leaves as is: letters, digits, `-._~` and `/`. Everything else is
/// percent-encoded as UTF-8 bytes: space is `%20` (never `+`, which decoders using plain
/// percent-decoding would keep), `+` is `%2B`, control characters are encoded.
const URL_KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, URL_KEEP).to_string()
}

/// Applies `encoding-type=url` to names in a listing's response (keys, prefixes, delimiter,
/// markers).
pub(super) struct Encoder(bool);

impl Encoder {
    pub(super) fn new(e: Option<&EncodingType>) -> S3Result<Self> {
        match e.map(|e| e.as_str()) {
            None => Ok(Encoder(false)),
            Some(EncodingType::URL) => Ok(Encoder(true)),
            Some(other) => Err(s3_err(
                S3ErrorCode::InvalidArgument,
                format!("invalid encoding type: {other}"),
            )),
        }
    }
    pub(super) fn apply(&self, s: &str) -> String {
        if self.0 { url_encode(s) } else { s.to_string() }
    }
    /// An optional request parameter echoed back: an empty one is no parameter (S3 does not
    /// echo `delimiter=` or `marker=`).
    pub(super) fn opt(&self, s: Option<&String>) -> Option<String> {
        s.filter(|s| !s.is_empty()).map(|s| self.apply(s))
    }
}

fn split(
    s3: &AisleS3,
    items: Vec<ListItem>,
    enc: &Encoder,
    with_owner: bool,
) -> (Vec<Object>, Vec<CommonPrefix>) {
    let mut contents = Vec::new();
    let mut prefixes = Vec::new();
    for item in items {
        match item {
            ListItem::Object(o) => contents.push(Object {
                key: Some(enc.apply(&o.key)),
                size: Some(o.size as i64),
                e_tag: Some(etag(&o.etag)),
                last_modified: Some(timestamp(o.mtime_ms)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                owner: with_owner.then(|| s3.owner()),
                ..Default::default()
            }),
            ListItem::Prefix(p) => prefixes.push(CommonPrefix {
                prefix: Some(enc.apply(&p)),
            }),
        }
    }
    (contents, prefixes)
}

pub(super) async fn list_objects_v2(
    s3: &AisleS3,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    let enc = Encoder::new(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let delimiter = input.delimiter.clone().unwrap_or_default();
    let limit = max_keys(input.max_keys)?;
    // An empty continuation token is no token (as S3 treats `continuation-token=`).
    let token = input.continuation_token.clone().filter(|t| !t.is_empty());
    let after = match (&token, &input.start_after) {
        (Some(t), _) => Some(open_token(
            &s3.token_key,
            &input.bucket,
            &prefix,
            &delimiter,
            t,
        )?),
        (None, Some(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    };
    let page = merged_page(s3, &input.bucket, &prefix, Some(&delimiter), after, limit).await?;
    let next = page
        .truncated
        .then(|| {
            page.items
                .last()
                .map(|i| seal_token(&s3.token_key, &input.bucket, &prefix, &delimiter, i.name()))
        })
        .flatten();
    let key_count = page.items.len() as i32;
    let (contents, prefixes) = split(s3, page.items, &enc, input.fetch_owner == Some(true));
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(enc.apply(&prefix)),
        delimiter: enc.opt(input.delimiter.as_ref()),
        max_keys: Some(limit as i32),
        key_count: Some(key_count),
        continuation_token: token,
        next_continuation_token: next,
        start_after: enc.opt(input.start_after.as_ref()),
        is_truncated: Some(page.truncated),
        contents: Some(contents),
        common_prefixes: Some(prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

/// A page of a marker-paginated listing (ListObjects V1, ListObjectVersions): its objects and
/// common prefixes as S3 DTOs, and the marker to resume after when it is truncated.
struct MarkerPage {
    contents: Vec<Object>,
    prefixes: Vec<CommonPrefix>,
    truncated: bool,
    next_marker: Option<String>,
}

async fn marker_page(
    s3: &AisleS3,
    bucket: &str,
    prefix: &str,
    delimiter: Option<&str>,
    after: Option<String>,
    limit: usize,
    enc: &Encoder,
) -> S3Result<MarkerPage> {
    let page = merged_page(s3, bucket, prefix, delimiter, after, limit).await?;
    let next_marker = page
        .truncated
        .then(|| page.items.last().map(|i| enc.apply(i.name())))
        .flatten();
    let truncated = page.truncated;
    let (contents, prefixes) = split(s3, page.items, enc, true);
    Ok(MarkerPage {
        contents,
        prefixes,
        truncated,
        next_marker,
    })
}

pub(super) async fn list_objects(
    s3: &AisleS3,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let input = req.input;
    let enc = Encoder::new(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let limit = max_keys(input.max_keys)?;
    let after = input.marker.clone().filter(|m| !m.is_empty());
    let page = marker_page(
        s3,
        &input.bucket,
        &prefix,
        input.delimiter.as_deref(),
        after,
        limit,
        &enc,
    )
    .await?;
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(enc.apply(&prefix)),
        marker: Some(enc.opt(input.marker.as_ref()).unwrap_or_default()),
        delimiter: enc.opt(input.delimiter.as_ref()),
        max_keys: Some(limit as i32),
        is_truncated: Some(page.truncated),
        next_marker: page.next_marker,
        contents: Some(page.contents),
        common_prefixes: Some(page.prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

/// ListObjectVersions: every version of each key, newest first, and the delete markers, in
/// pages of `max-keys` items (versions, markers and common prefixes together) resumed at
/// (`key-marker`, `version-id-marker`). An object written without versioning is its `null`
/// version, so an unversioned bucket lists each object once, as the latest `null` version —
/// what S3 answers; tools that clean up or sync call this on any bucket. A remote bucket (its
/// remote keeps its own versions) and an alias bucket list what they hold that way too.
pub(super) async fn list_object_versions(
    s3: &AisleS3,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    let enc = Encoder::new(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let limit = max_keys(input.max_keys)?;
    let key_marker = input.key_marker.clone().filter(|m| !m.is_empty());
    let id_marker = input.version_id_marker.clone().filter(|m| !m.is_empty());
    if key_marker.is_none() && id_marker.is_some() {
        return Err(s3_err(
            S3ErrorCode::InvalidArgument,
            "a version-id marker cannot be specified without a key marker",
        ));
    }
    super::version::version_param(id_marker.as_deref())?;
    let (source, etl) = s3.read_source(&input.bucket, None)?;
    let page = if etl.is_none() && s3.targets.remote(&source).is_none() && limit > 0 {
        let q = ListQuery {
            bucket: source.clone(),
            prefix: prefix.clone(),
            delimiter: input.delimiter.clone().filter(|d| !d.is_empty()),
            after: key_marker,
            limit,
            versions: true,
            after_version: id_marker,
        };
        cached_page(&s3.targets, &input.bucket, &q).await?
    } else {
        // Each key has one version here: resuming after (key, null) is resuming after the key.
        let delimiter = input.delimiter.as_deref();
        merged_page(s3, &input.bucket, &prefix, delimiter, key_marker, limit).await?
    };
    let (next_key_marker, next_version_id_marker) = match page.items.last() {
        Some(last) if page.truncated => match last {
            ListItem::Object(o) => (
                Some(enc.apply(&o.key)),
                Some(id_or_null(o.version.as_ref().and_then(|v| v.id.as_deref()))),
            ),
            ListItem::Prefix(p) => (Some(enc.apply(p)), None),
        },
        _ => (None, None),
    };
    let mut versions = Vec::new();
    let mut markers = Vec::new();
    let mut prefixes = Vec::new();
    for item in page.items {
        let o = match item {
            ListItem::Prefix(p) => {
                prefixes.push(CommonPrefix {
                    prefix: Some(enc.apply(&p)),
                });
                continue;
            }
            ListItem::Object(o) => o,
        };
        let v = o.version.as_ref();
        let version_id = Some(id_or_null(v.and_then(|v| v.id.as_deref())));
        let is_latest = Some(v.is_none_or(|v| v.latest));
        if v.is_some_and(|v| v.delete_marker) {
            markers.push(DeleteMarkerEntry {
                key: Some(enc.apply(&o.key)),
                version_id,
                is_latest,
                last_modified: Some(timestamp(o.mtime_ms)),
                owner: Some(s3.owner()),
            });
            continue;
        }
        versions.push(ObjectVersion {
            key: Some(enc.apply(&o.key)),
            version_id,
            is_latest,
            e_tag: Some(etag(&o.etag)),
            size: Some(o.size as i64),
            last_modified: Some(timestamp(o.mtime_ms)),
            owner: Some(s3.owner()),
            storage_class: Some(ObjectVersionStorageClass::from_static(
                ObjectVersionStorageClass::STANDARD,
            )),
            ..Default::default()
        });
    }
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: Some(enc.apply(&prefix)),
        delimiter: enc.opt(input.delimiter.as_ref()),
        key_marker: Some(enc.opt(input.key_marker.as_ref()).unwrap_or_default()),
        version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
        max_keys: Some(limit as i32),
        is_truncated: Some(page.truncated),
        next_key_marker,
        next_version_id_marker,
        versions: Some(versions),
        delete_markers: Some(markers),
        common_prefixes: Some(prefixes),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_forgery() {
        let k = b"key";
        let t = seal_token(k, "b", "p/", "/", "p/x");
        assert_eq!(open_token(k, "b", "p/", "/", &t).unwrap(), "p/x");
        // Bound to the listing's parameters.
        assert!(open_token(k, "b", "q/", "/", &t).is_err());
        // A changed resume point does not verify.
        let forged = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode("p/z"),
            t.split_once('.').unwrap().1
        );
        assert!(open_token(k, "b", "p/", "/", &forged).is_err());
        assert!(open_token(k, "b", "p/", "/", "garbage").is_err());
    }

    #[test]
    fn url_encoding_is_percent_encoding_with_slashes_kept() {
        assert_eq!(url_encode("a b+c/d~e-f_g.h"), "a%20b%2Bc/d~e-f_g.h");
        assert_eq!(url_encode("x\u{1}y\ttab"), "x%01y%09tab");
        assert_eq!(url_encode("é&=?"), "%C3%A9%26%3D%3F");
    }
}
