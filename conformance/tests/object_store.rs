//! The `object_store` crate's AmazonS3 client (arrow/DataFusion/Polars use it) against a real
//! multi-process aisle cluster.

mod common;

use aisle_conformance::TestCluster;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

#[tokio::test(flavor = "multi_thread")]
async fn object_store_put_get_list_multipart() {
    let c = TestCluster::start(3).unwrap();
    // object_store works inside a bucket; make it with another S3 client.
    make_bucket(&c, "objstore").await;
    let store = AmazonS3Builder::new()
        .with_endpoint(c.endpoint())
        .with_allow_http(true)
        .with_bucket_name("objstore")
        .with_region("us-east-1")
        .with_access_key_id(&c.env["AWS_ACCESS_KEY_ID"])
        .with_secret_access_key(&c.env["AWS_SECRET_ACCESS_KEY"])
        .build()
        .unwrap();
    let p = Path::from("data/part-0.parquet");
    store
        .put(&p, PutPayload::from_static(b"not really parquet"))
        .await
        .unwrap();
    let got = store.get(&p).await.unwrap().bytes().await.unwrap();
    assert_eq!(&got[..], b"not really parquet");
    let range = store.get_range(&p, 4..10).await.unwrap();
    assert_eq!(&range[..], b"really");
    let head = store.head(&p).await.unwrap();
    assert_eq!(head.size, 18);

    // Multipart, 3 parts of 5 MiB + a tail.
    let big: Vec<u8> = (0..16 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let upload = store
        .put_multipart(&Path::from("data/big.bin"))
        .await
        .unwrap();
    let mut w = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
    w.write(&big);
    w.finish().await.unwrap();
    let got = store
        .get(&Path::from("data/big.bin"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got[..] == big[..]);

    let listed: Vec<_> = store
        .list(Some(&Path::from("data")))
        .try_collect()
        .await
        .unwrap();
    let mut names: Vec<_> = listed.iter().map(|m| m.location.to_string()).collect();
    names.sort();
    assert_eq!(names, ["data/big.bin", "data/part-0.parquet"]);
    let delim = store.list_with_delimiter(None).await.unwrap();
    assert_eq!(delim.common_prefixes, [Path::from("data")]);

    store
        .copy(&p, &Path::from("data/copy.parquet"))
        .await
        .unwrap();
    store.delete(&p).await.unwrap();
    assert!(store.head(&p).await.is_err());
    assert_eq!(
        store
            .head(&Path::from("data/copy.parquet"))
            .await
            .unwrap()
            .size,
        18
    );
}

async fn make_bucket(c: &TestCluster, name: &str) {
    let s3 = common::sdk_client(
        c,
        aws_sdk_s3::config::RequestChecksumCalculation::WhenSupported,
    );
    s3.create_bucket().bucket(name).send().await.unwrap();
}
