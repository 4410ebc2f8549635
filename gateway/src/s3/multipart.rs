//! Multipart uploads. Parts stream to the owning target, which keeps them as separate files;
//! Complete applies S3's rules here and then has the target publish the parts as the object in
//! one transaction — no data is copied.

use aisle_cluster::listing::common_prefix;
use aisle_cluster::proto::{
    Checksums, CompletePart, CompleteRequest, ObjectMeta, PartInfo, PartsQuery, UploadQuery,
    UploadsQuery,
};
use s3s::dto::*;
use s3s::{S3ErrorCode, S3Request, S3Response, S3Result};

use super::AisleS3;
use super::attrs::{checksum_type, etag, header_checksums, timestamp};
use super::error::{check_key, from_client, s3_err};
use super::put::{check_declared_len, empty_blob};
use super::upload::{Algo, Expect, MAX_PUT_SIZE, verified_body};

/// Smallest size of every part but the last, as S3.
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Highest part number, as S3.
pub const MAX_PARTS: u32 = 10_000;

fn upload_query(bucket: &str, key: &str, id: Option<&str>, part: Option<u32>) -> UploadQuery {
    UploadQuery {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: id.map(str::to_string),
        part,
    }
}

fn part_number(n: i32) -> S3Result<u32> {
    if (1..=MAX_PARTS as i32).contains(&n) {
        Ok(n as u32)
    } else {
        Err(s3_err(
            S3ErrorCode::InvalidArgument,
            format!("part number must be an integer between 1 and {MAX_PARTS}, inclusive"),
        ))
    }
}

pub(super) async fn create(
    s3: &AisleS3,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let input = req.input;
    s3.check_bucket(&input.bucket)?;
    check_key(&input.key)?;
    if input.sse_customer_algorithm.is_some()
        || input.server_side_encryption.is_some()
        || input.object_lock_mode.is_some()
    {
        return Err(s3_err(
            S3ErrorCode::NotImplemented,
            "server-side encryption and object lock are not supported",
        ));
    }
    super::policy::check_object_acl(input.acl.as_ref().map(|a| a.as_str()))?;
    let attrs = attrs_of!(input)?;
    super::tagging::check_taggable(s3, &input.bucket, &attrs.tags)?;
    let target = s3.targets.upload_owner(&input.bucket, &input.key)?;
    let id = s3
        .targets
        .create_upload(
            &target,
            &upload_query(&input.bucket, &input.key, None, None),
            &attrs,
        )
        .await
        .map_err(from_client)?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(id),
        checksum_algorithm: input.checksum_algorithm,
        checksum_type: input.checksum_type,
        ..Default::default()
    }))
}

pub(super) async fn upload_part(
    s3: &AisleS3,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let S3Request {
        input,
        headers,
        trailing_headers,
        ..
    } = req;
    s3.check_bucket(&input.bucket)?;
    check_key(&input.key)?;
    let number = part_number(input.part_number)?;
    let declared = check_declared_len(input.content_length, MAX_PUT_SIZE)?;
    let (expect, algo) = upload_expect!(input, headers, trailing_headers, declared);
    let blob = input.body.unwrap_or_else(empty_blob);
    let info = store_part(
        s3,
        &input.bucket,
        &input.key,
        &input.upload_id,
        number,
        blob,
        expect,
    )
    .await?;
    s3.stats.bytes_in.inc_by(info.size);
    let mut out = UploadPartOutput {
        e_tag: Some(etag(&info.etag)),
        ..Default::default()
    };
    echo_checksums!(out, info.checksums, algo);
    Ok(S3Response::new(out))
}

pub(super) async fn upload_part_copy(
    s3: &AisleS3,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let input = req.input;
    s3.check_bucket(&input.bucket)?;
    check_key(&input.key)?;
    let number = part_number(input.part_number)?;
    let source = super::copy::copy_source(&input.copy_source)?;
    // S3 takes only `bytes=first-last` here.
    let range = match &input.copy_source_range {
        None => None,
        Some(r) => {
            let spec = r.trim().strip_prefix("bytes=").unwrap_or("");
            let ok = spec.split_once('-').is_some_and(|(a, b)| {
                a.parse::<u64>().is_ok()
                    && b.parse::<u64>()
                        .is_ok_and(|b| b >= a.parse().unwrap_or(u64::MAX))
            });
            if !ok {
                return Err(s3_err(
                    S3ErrorCode::InvalidArgument,
                    "the x-amz-copy-source-range value must be of the form bytes=first-last",
                ));
            }
            Some(spec.to_string())
        }
    };
    let conds = super::get::conditions(
        input.copy_source_if_match.as_ref(),
        input.copy_source_if_none_match.as_ref(),
        input.copy_source_if_modified_since.as_ref(),
        input.copy_source_if_unmodified_since.as_ref(),
    );
    let src = super::copy::read_source(s3, &source, conds, range).await?;
    let len = src.content_length.unwrap_or(src.meta.size as i64) as u64;
    if len > MAX_PUT_SIZE {
        return Err(s3_err(
            S3ErrorCode::EntityTooLarge,
            "a part is at most 5 GiB",
        ));
    }
    let expect = Expect {
        len: Some(len),
        max_len: MAX_PUT_SIZE,
        content_md5: None,
        checksum: None,
    };
    let blob = StreamingBlob::wrap(aisle_cluster::client::data_stream(src.body));
    let info = store_part(
        s3,
        &input.bucket,
        &input.key,
        &input.upload_id,
        number,
        blob,
        expect,
    )
    .await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(etag(&info.etag)),
            last_modified: Some(timestamp(info.mtime_ms)),
            ..Default::default()
        }),
        copy_source_version_id: src.version_id.clone(),
        ..Default::default()
    }))
}

/// Stream `blob` through the upload verifier into part `number` on the owning target.
async fn store_part(
    s3: &AisleS3,
    bucket: &str,
    key: &str,
    upload_id: &str,
    number: u32,
    blob: StreamingBlob,
    expect: Expect,
) -> S3Result<PartInfo> {
    let target = s3.targets.upload_owner(bucket, key)?;
    let (body, failure) = verified_body(blob, expect);
    let q = upload_query(bucket, key, Some(upload_id), Some(number));
    s3.targets
        .put_part(&target, &q, body)
        .await
        .map_err(|e| failure.take().unwrap_or_else(|| from_client(e)))
}

/// All parts of an upload, in order.
async fn all_parts(s3: &AisleS3, bucket: &str, key: &str, id: &str) -> S3Result<Vec<PartInfo>> {
    let target = s3.targets.upload_owner(bucket, key)?;
    let q = PartsQuery {
        bucket: bucket.into(),
        key: key.into(),
        upload_id: id.into(),
        marker: 0,
        limit: MAX_PARTS as usize,
    };
    Ok(s3
        .targets
        .list_parts(&target, &q)
        .await
        .map_err(from_client)?
        .parts)
}

/// `md5(concat(part md5s))-N`, as S3 computes a multipart ETag.
fn multipart_etag(parts: &[&PartInfo]) -> String {
    aisle_cluster::etag::composite(
        parts
            .iter()
            .map(|p| hex::decode(&p.etag).unwrap_or_default()),
    )
}

/// The composite checksum S3 reports: checksum of the concatenated part checksums, `-N`. Only
/// when every part has one of the same algorithm (CRC64NVME is full-object only in S3: none).
fn composite_checksum(parts: &[&PartInfo]) -> Checksums {
    let mut out = Checksums::default();
    for algo in [Algo::Crc32, Algo::Crc32c, Algo::Sha1, Algo::Sha256] {
        let raw: Option<Vec<Vec<u8>>> = parts
            .iter()
            .map(|p| {
                use base64::Engine;
                algo.get(&p.checksums)
                    .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
            })
            .collect();
        if let Some(raw) = raw {
            algo.set(
                &mut out,
                format!("{}-{}", algo.digest(&raw.concat()), parts.len()),
            );
            out.kind = Some("COMPOSITE".into());
            break;
        }
    }
    out
}

pub(super) async fn complete(
    s3: &AisleS3,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    s3.check_bucket(&input.bucket)?;
    check_key(&input.key)?;
    let wanted = input
        .multipart_upload
        .and_then(|m| m.parts)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            s3_err(
                S3ErrorCode::MalformedXML,
                "the XML you provided was not well-formed or did not validate: it names no parts",
            )
        })?;
    let stored = match all_parts(s3, &input.bucket, &input.key, &input.upload_id).await {
        Ok(stored) => stored,
        Err(e) if *e.code() == S3ErrorCode::NoSuchUpload => {
            // Completed already? S3 answers a repeated complete with the same success.
            return match completed_by(s3, &input.bucket, &input.key, &input.upload_id).await {
                Some(meta) => Ok(S3Response::new(completed(
                    s3,
                    input.bucket,
                    input.key,
                    &meta,
                ))),
                None => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let mut chosen: Vec<&PartInfo> = Vec::with_capacity(wanted.len());
    let mut last = 0u32;
    for w in &wanted {
        let n = part_number(w.part_number.unwrap_or(0))?;
        if n <= last {
            return Err(s3_err(
                S3ErrorCode::InvalidPartOrder,
                "the list of parts was not in ascending order; parts must be ordered by part number",
            ));
        }
        last = n;
        let invalid = || {
            s3_err(
                S3ErrorCode::InvalidPart,
                format!("part {n} could not be found, or its ETag or checksum does not match"),
            )
        };
        let p = stored.iter().find(|p| p.number == n).ok_or_else(invalid)?;
        if let Some(e) = &w.e_tag
            && e.value().trim_matches('"') != p.etag
        {
            return Err(invalid());
        }
        let given = header_checksums(
            &w.checksum_crc32,
            &w.checksum_crc32c,
            &w.checksum_crc64nvme,
            &w.checksum_sha1,
            &w.checksum_sha256,
        );
        for a in Algo::ALL {
            if let Some(v) = a.get(&given)
                && a.get(&p.checksums) != Some(v)
            {
                return Err(invalid());
            }
        }
        chosen.push(p);
    }
    if let Some((_, init)) = chosen.split_last()
        && let Some(small) = init.iter().find(|p| p.size < MIN_PART_SIZE)
    {
        return Err(s3_err(
            S3ErrorCode::EntityTooSmall,
            format!(
                "part {} is {} bytes; every part but the last must be at least {MIN_PART_SIZE} bytes",
                small.number, small.size
            ),
        ));
    }
    // The upload lives on the first of the write set; the others get the object's copies.
    let plan = s3.targets.write_plan(&input.bucket, &input.key)?;
    let body = CompleteRequest {
        parts: chosen
            .iter()
            .map(|p| CompletePart {
                number: p.number,
                etag: p.etag.clone(),
            })
            .collect(),
        etag: multipart_etag(&chosen),
        checksums: composite_checksum(&chosen),
        write: plan.opts,
    };
    let q = upload_query(&input.bucket, &input.key, Some(&input.upload_id), None);
    let meta = s3
        .targets
        .complete(&plan.target, &q, &body)
        .await
        .map_err(from_client)?;
    Ok(S3Response::new(completed(
        s3,
        input.bucket,
        input.key,
        &meta,
    )))
}

/// The object upload `id` made, if it is still the current object of `key`.
async fn completed_by(s3: &AisleS3, bucket: &str, key: &str, id: &str) -> Option<ObjectMeta> {
    let head = super::get::read(s3, bucket, key, None, Default::default(), true)
        .await
        .ok()?;
    (head.meta.upload_id.as_deref() == Some(id)).then_some(head.meta)
}

fn completed(
    s3: &AisleS3,
    bucket: String,
    key: String,
    meta: &ObjectMeta,
) -> CompleteMultipartUploadOutput {
    let c = &meta.checksums;
    CompleteMultipartUploadOutput {
        version_id: super::version::shown(meta, || super::version::state(s3, &bucket)),
        location: Some(format!("/{bucket}/{key}")),
        bucket: Some(bucket),
        key: Some(key),
        e_tag: Some(etag(&meta.etag)),
        checksum_crc32: c.crc32.clone(),
        checksum_crc32c: c.crc32c.clone(),
        checksum_sha1: c.sha1.clone(),
        checksum_sha256: c.sha256.clone(),
        checksum_type: checksum_type(c),
        ..Default::default()
    }
}

pub(super) async fn abort(
    s3: &AisleS3,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    s3.check_bucket(&input.bucket)?;
    check_key(&input.key)?;
    let target = s3.targets.upload_owner(&input.bucket, &input.key)?;
    let q = upload_query(&input.bucket, &input.key, Some(&input.upload_id), None);
    s3.targets.abort(&target, &q).await.map_err(from_client)?;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

pub(super) async fn list_parts(
    s3: &AisleS3,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    s3.check_bucket(&input.bucket)?;
    check_key(&input.key)?;
    let max = input.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
    let marker = input.part_number_marker.unwrap_or(0).max(0) as u32;
    let target = s3.targets.upload_owner(&input.bucket, &input.key)?;
    let q = PartsQuery {
        bucket: input.bucket.clone(),
        key: input.key.clone(),
        upload_id: input.upload_id.clone(),
        marker,
        limit: max,
    };
    let page = s3
        .targets
        .list_parts(&target, &q)
        .await
        .map_err(from_client)?;
    let next = page.parts.last().map(|p| p.number as i32);
    let parts = page
        .parts
        .into_iter()
        .map(|p| Part {
            part_number: Some(p.number as i32),
            size: Some(p.size as i64),
            e_tag: Some(etag(&p.etag)),
            last_modified: Some(timestamp(p.mtime_ms)),
            checksum_crc32: p.checksums.crc32,
            checksum_crc32c: p.checksums.crc32c,
            checksum_crc64nvme: p.checksums.crc64nvme,
            checksum_sha1: p.checksums.sha1,
            checksum_sha256: p.checksums.sha256,
        })
        .collect();
    let owner = s3.owner();
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        max_parts: Some(max as i32),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: next,
        is_truncated: Some(page.truncated),
        parts: Some(parts),
        initiator: Some(Initiator {
            display_name: owner.display_name.clone(),
            id: owner.id.clone(),
        }),
        owner: Some(owner),
        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
        ..Default::default()
    }))
}

pub(super) async fn list_uploads(
    s3: &AisleS3,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    s3.check_bucket(&input.bucket)?;
    let enc = super::list::Encoder::new(input.encoding_type.as_ref())?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let max = input.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
    let q = UploadsQuery {
        bucket: input.bucket.clone(),
        prefix: prefix.clone(),
    };
    let targets = s3.targets.all();
    let lists =
        futures::future::try_join_all(targets.iter().map(|t| s3.targets.list_uploads(t, &q)))
            .await
            .map_err(from_client)?;
    let mut all: Vec<_> = lists.into_iter().flatten().collect();
    all.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
    let key_marker = input.key_marker.clone().unwrap_or_default();
    let id_marker = input.upload_id_marker.clone();
    let after_marker = |u: &aisle_cluster::proto::UploadInfo| {
        if key_marker.is_empty() {
            return true;
        }
        match &id_marker {
            Some(id) if u.key == key_marker => {
                // Uploads of the marker key after the marker upload.
                all_ids_after(&u.upload_id, id)
            }
            _ => u.key > key_marker,
        }
    };
    let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
    let mut uploads = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut truncated = false;
    let mut last: Option<(String, String)> = None;
    for u in all.iter().filter(|u| after_marker(u)) {
        if uploads.len() + prefixes.len() == max {
            truncated = true;
            break;
        }
        if let Some(cp) = common_prefix(&u.key, &prefix, delimiter.as_deref()) {
            if prefixes.last().map(String::as_str) != Some(cp) {
                prefixes.push(cp.to_string());
            }
            continue;
        }
        last = Some((u.key.clone(), u.upload_id.clone()));
        uploads.push(MultipartUpload {
            key: Some(enc.apply(&u.key)),
            upload_id: Some(u.upload_id.clone()),
            initiated: Some(timestamp(u.initiated_ms)),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            owner: Some(s3.owner()),
            ..Default::default()
        });
    }
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: enc.opt(input.prefix.as_ref()),
        delimiter: enc.opt(input.delimiter.as_ref()),
        key_marker: enc.opt(input.key_marker.as_ref()),
        upload_id_marker: input.upload_id_marker,
        max_uploads: Some(max as i32),
        is_truncated: Some(truncated),
        next_key_marker: truncated
            .then(|| last.as_ref().map(|l| enc.apply(&l.0)))
            .flatten(),
        next_upload_id_marker: truncated
            .then(|| last.as_ref().map(|l| l.1.clone()))
            .flatten(),
        uploads: Some(uploads),
        common_prefixes: Some(
            prefixes
                .into_iter()
                .map(|p| CommonPrefix {
                    prefix: Some(enc.apply(&p)),
                })
                .collect(),
        ),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

fn all_ids_after(id: &str, marker: &str) -> bool {
    id > marker
}
