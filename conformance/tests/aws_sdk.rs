//! aws-sdk-s3 (Rust) against a real multi-process aisle cluster.

mod common;

use aisle_conformance::TestCluster;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumMode, CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier,
};
use md5::Digest;

fn client(c: &TestCluster, checksums: RequestChecksumCalculation) -> Client {
    common::sdk_client(c, checksums)
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn put_get_head_range_and_conditionals() {
    let c = TestCluster::start(3).unwrap();
    let s3 = client(&c, RequestChecksumCalculation::WhenSupported);
    s3.create_bucket().bucket("sdk").send().await.unwrap();
    let body = data(100_000, 7);
    let put = s3
        .put_object()
        .bucket("sdk")
        .key("dir/obj")
        .content_type("text/plain")
        .metadata("color", "blue")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let etag = put.e_tag().unwrap().to_string();
    assert_eq!(
        etag,
        format!("\"{}\"", hex::encode(md5::Md5::digest(&body)))
    );
    assert!(
        put.checksum_crc32().is_some(),
        "the CRC32 the SDK sent is echoed"
    );

    let got = s3
        .get_object()
        .bucket("sdk")
        .key("dir/obj")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("text/plain"));
    assert_eq!(got.metadata().unwrap()["color"], "blue");
    assert!(got.checksum_crc32().is_some());
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        &body[..]
    );

    let ranged = s3
        .get_object()
        .bucket("sdk")
        .key("dir/obj")
        .range("bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.content_range(), Some("bytes 10-19/100000"));
    assert_eq!(
        ranged.body.collect().await.unwrap().into_bytes().as_ref(),
        &body[10..20]
    );

    let bad_range = s3
        .get_object()
        .bucket("sdk")
        .key("dir/obj")
        .range("bytes=200000-")
        .send()
        .await;
    let err = bad_range.unwrap_err().into_service_error();
    assert_eq!(err.meta().code(), Some("InvalidRange"));

    let not_modified = s3
        .get_object()
        .bucket("sdk")
        .key("dir/obj")
        .if_none_match(&etag)
        .send()
        .await;
    assert_eq!(
        not_modified
            .unwrap_err()
            .raw_response()
            .unwrap()
            .status()
            .as_u16(),
        304
    );
    let failed = s3
        .get_object()
        .bucket("sdk")
        .key("dir/obj")
        .if_match("\"nope\"")
        .send()
        .await;
    assert_eq!(
        failed
            .unwrap_err()
            .raw_response()
            .unwrap()
            .status()
            .as_u16(),
        412
    );

    let head = s3
        .head_object()
        .bucket("sdk")
        .key("dir/obj")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(100_000));
    let missing = s3
        .head_object()
        .bucket("sdk")
        .key("nope")
        .send()
        .await
        .unwrap_err();
    assert_eq!(missing.raw_response().unwrap().status().as_u16(), 404);

    // Conditional create.
    let again = s3
        .put_object()
        .bucket("sdk")
        .key("dir/obj")
        .if_none_match("*")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(
        again.unwrap_err().raw_response().unwrap().status().as_u16(),
        412
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streaming_uploads_with_trailers_and_without_checksums() {
    let c = TestCluster::start(2).unwrap();
    for (i, mode) in [
        RequestChecksumCalculation::WhenSupported,
        RequestChecksumCalculation::WhenRequired,
    ]
    .into_iter()
    .enumerate()
    {
        let s3 = client(&c, mode);
        let bucket = format!("stream{i}");
        s3.create_bucket().bucket(&bucket).send().await.unwrap();
        let path = c.data().join(format!("upload{i}.bin"));
        let body = data(3_000_000, i as u8);
        std::fs::write(&path, &body).unwrap();
        // A file body goes out as aws-chunked (with a CRC32 trailer when supported).
        s3.put_object()
            .bucket(&bucket)
            .key("f")
            .body(ByteStream::from_path(&path).await.unwrap())
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object()
            .bucket(&bucket)
            .key("f")
            .send()
            .await
            .unwrap();
        assert_eq!(
            got.body.collect().await.unwrap().into_bytes().as_ref(),
            &body[..]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_subset_and_part_reads() {
    let c = TestCluster::start(3).unwrap();
    let s3 = client(&c, RequestChecksumCalculation::WhenSupported);
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    let up = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("big")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let part_len = 5 * 1024 * 1024;
    let mut parts = Vec::new();
    let mut bodies = Vec::new();
    for n in 1..=3 {
        let b = data(part_len + n, n as u8);
        let r = s3
            .upload_part()
            .bucket("mpu")
            .key("big")
            .upload_id(id)
            .part_number(n as i32)
            .body(ByteStream::from(b.clone()))
            .send()
            .await
            .unwrap();
        assert!(
            r.checksum_crc32().is_some(),
            "UploadPart echoes the part checksum"
        );
        parts.push(
            CompletedPart::builder()
                .part_number(n as i32)
                .e_tag(r.e_tag().unwrap())
                .set_checksum_crc32(r.checksum_crc32().map(str::to_string))
                .build(),
        );
        bodies.push(b);
    }
    let listed = s3
        .list_parts()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.parts().len(), 3);
    // Out of order → InvalidPartOrder.
    let bad = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(parts[1].clone())
                .parts(parts[0].clone())
                .build(),
        )
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        bad.into_service_error().meta().code(),
        Some("InvalidPartOrder")
    );
    // Parts 1 and 3 only.
    let done = s3
        .complete_multipart_upload()
        .bucket("mpu")
        .key("big")
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .parts(parts[0].clone())
                .parts(parts[2].clone())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(done.e_tag().unwrap().ends_with("-2\""));
    let expected = [bodies[0].clone(), bodies[2].clone()].concat();
    let got = s3
        .get_object()
        .bucket("mpu")
        .key("big")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_length(), Some(expected.len() as i64));
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        &expected[..]
    );
    let p2 = s3
        .get_object()
        .bucket("mpu")
        .key("big")
        .part_number(2)
        .send()
        .await
        .unwrap();
    assert_eq!(p2.parts_count(), Some(2));
    assert_eq!(
        p2.body.collect().await.unwrap().into_bytes().as_ref(),
        &bodies[2][..]
    );
    let uploads = s3
        .list_multipart_uploads()
        .bucket("mpu")
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_copy_delete_and_presign() {
    let c = TestCluster::start(3).unwrap();
    let s3 = client(&c, RequestChecksumCalculation::WhenSupported);
    s3.create_bucket().bucket("lst").send().await.unwrap();
    let mut keys: Vec<String> = (0..120).map(|i| format!("p{}/k{:03}", i % 4, i)).collect();
    keys.push("top".into());
    for k in &keys {
        s3.put_object()
            .bucket("lst")
            .key(k)
            .body(ByteStream::from(k.clone().into_bytes()))
            .send()
            .await
            .unwrap();
    }
    keys.sort();
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket("lst")
            .max_keys(7)
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        seen.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        token = page.next_continuation_token().map(str::to_string);
        if !page.is_truncated().unwrap() {
            break;
        }
    }
    assert_eq!(seen, keys);
    let delim = s3
        .list_objects_v2()
        .bucket("lst")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let prefixes: Vec<_> = delim
        .common_prefixes()
        .iter()
        .map(|p| p.prefix().unwrap())
        .collect();
    assert_eq!(prefixes, ["p0/", "p1/", "p2/", "p3/"]);
    assert_eq!(delim.contents().len(), 1);

    s3.copy_object()
        .bucket("lst")
        .key("copied")
        .copy_source("lst/top")
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("lst")
        .key("copied")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"top"
    );

    let ids: Vec<ObjectIdentifier> = ["top", "copied", "never-existed"]
        .iter()
        .map(|k| ObjectIdentifier::builder().key(*k).build().unwrap())
        .collect();
    let del = s3
        .delete_objects()
        .bucket("lst")
        .delete(Delete::builder().set_objects(Some(ids)).build().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(del.deleted().len(), 3);

    let presigned = s3
        .get_object()
        .bucket("lst")
        .key("p0/k000")
        .presigned(PresigningConfig::expires_in(std::time::Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let url = presigned.uri().to_string();
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", &url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.ends_with("200"), "{text}");
    assert!(text.starts_with("p0/k000"));
}

#[tokio::test(flavor = "multi_thread")]
async fn versioning_with_markers_and_presigned_old_versions() {
    use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
    let c = TestCluster::start(3).unwrap();
    let s3 = client(&c, RequestChecksumCalculation::WhenSupported);
    s3.create_bucket().bucket("ver").send().await.unwrap();
    s3.put_bucket_versioning()
        .bucket("ver")
        .versioning_configuration(
            VersioningConfiguration::builder()
                .status(BucketVersioningStatus::Enabled)
                .build(),
        )
        .send()
        .await
        .unwrap();
    let got = s3
        .get_bucket_versioning()
        .bucket("ver")
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), Some(&BucketVersioningStatus::Enabled));
    let mut ids = Vec::new();
    for g in 0..3u8 {
        let put = s3
            .put_object()
            .bucket("ver")
            .key("k")
            .body(ByteStream::from(data(1000 + g as usize, g)))
            .send()
            .await
            .unwrap();
        ids.push(put.version_id().unwrap().to_string());
    }
    let del = s3
        .delete_object()
        .bucket("ver")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(del.delete_marker(), Some(true));
    let marker = del.version_id().unwrap().to_string();
    let err = s3
        .get_object()
        .bucket("ver")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 404);
    // An old version through a presigned URL, fetched with curl.
    let presigned = s3
        .get_object()
        .bucket("ver")
        .key("k")
        .version_id(&ids[0])
        .presigned(PresigningConfig::expires_in(std::time::Duration::from_secs(60)).unwrap())
        .await
        .unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "-", presigned.uri()])
        .output()
        .unwrap();
    assert_eq!(out.stdout, data(1000, 0));
    let versions = s3
        .list_object_versions()
        .bucket("ver")
        .send()
        .await
        .unwrap();
    let listed: Vec<&str> = versions
        .versions()
        .iter()
        .map(|v| v.version_id().unwrap())
        .collect();
    assert_eq!(listed, [ids[2].as_str(), ids[1].as_str(), ids[0].as_str()]);
    assert_eq!(versions.delete_markers().len(), 1);
    assert_eq!(
        versions.delete_markers()[0].version_id(),
        Some(marker.as_str())
    );
    assert_eq!(versions.delete_markers()[0].is_latest(), Some(true));
    // Removing the marker brings the newest version back.
    s3.delete_object()
        .bucket("ver")
        .key("k")
        .version_id(&marker)
        .send()
        .await
        .unwrap();
    let cur = s3.get_object().bucket("ver").key("k").send().await.unwrap();
    assert_eq!(cur.version_id(), Some(ids[2].as_str()));
    let body = cur.body.collect().await.unwrap().into_bytes();
    assert_eq!(body.as_ref(), data(1002, 2).as_slice());
}
