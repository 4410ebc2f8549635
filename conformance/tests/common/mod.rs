//! Shared by the Rust conformance tests: an aws-sdk-s3 client for a test cluster.

use aisle_conformance::TestCluster;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation};

/// A path-style aws-sdk-s3 client with the cluster's keys.
pub fn sdk_client(c: &TestCluster, checksums: RequestChecksumCalculation) -> Client {
    let creds = Credentials::new(
        &c.env["AWS_ACCESS_KEY_ID"],
        &c.env["AWS_SECRET_ACCESS_KEY"],
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(c.endpoint())
        .force_path_style(true)
        .region(Region::new("us-east-1"))
        .credentials_provider(creds)
        .request_checksum_calculation(checksums)
        .build();
    Client::from_conf(conf)
}
