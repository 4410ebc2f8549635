//! The admin (native) API under `/_aisle/v1/`: SigV4-authenticated like S3 itself, served on the
//! S3 port through an `s3s` route. `_aisle` can never be a bucket (bucket names cannot start
//! with `_`), so the prefix never shadows user data.

use std::sync::Arc;

use aisle_cluster::proto::TargetStatus;
use http::{Method, StatusCode};
use s3s::route::S3Route;
use s3s::validation::{AwsNameValidation, NameValidation};
use s3s::{Body, S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};

use crate::meta::MetaOwner;
use crate::proxy::Targets;
use crate::s3::s3_error;

/// Prefix of every admin path.
pub const ADMIN_PREFIX: &str = "/_aisle/v1/";
/// The pseudo-bucket s3s sees for admin paths.
pub const ADMIN_BUCKET: &str = "_aisle";

/// AWS bucket-name rules, plus the admin pseudo-bucket so admin paths reach the route.
pub struct Names;

impl NameValidation for Names {
    fn validate_bucket_name(&self, name: &str) -> bool {
        name == ADMIN_BUCKET || AwsNameValidation::new().validate_bucket_name(name)
    }
}

/// One target as `aisle cluster show` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetView {
    /// Target id.
    pub id: String,
    /// Its intra-cluster URL.
    pub url: String,
    /// What it reported, if it answered.
    pub status: Option<TargetStatus>,
    /// Why it did not answer.
    pub error: Option<String>,
}

/// `GET /_aisle/v1/cluster`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterView {
    /// Metadata version.
    pub version: u64,
    /// Targets, by id.
    pub targets: Vec<TargetView>,
    /// Bucket names.
    pub buckets: Vec<String>,
}

/// The admin route.
pub struct AdminRoute {
    /// Cluster metadata.
    pub meta: Arc<MetaOwner>,
    /// Targets.
    pub targets: Targets,
}

fn json<T: Serialize>(v: &T) -> S3Response<Body> {
    let mut r = S3Response::new(Body::from(
        serde_json::to_vec_pretty(v).expect("serializable"),
    ));
    r.headers.insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().expect("valid"),
    );
    r.status = Some(StatusCode::OK);
    r
}

#[async_trait::async_trait]
impl S3Route for AdminRoute {
    fn is_match(
        &self,
        _m: &Method,
        uri: &http::Uri,
        _h: &http::HeaderMap,
        _x: &mut http::Extensions,
    ) -> bool {
        uri.path().starts_with(ADMIN_PREFIX)
    }

    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        match (&req.method, req.uri.path()) {
            (&Method::GET, "/_aisle/v1/cluster") => {
                let meta = self.meta.snapshot();
                let views = futures::future::join_all(meta.targets.values().map(|t| async move {
                    let (status, error) = match self.targets.status(t).await {
                        Ok(s) => (Some(s), None),
                        Err(e) => (None, Some(e.to_string())),
                    };
                    TargetView {
                        id: t.id.clone(),
                        url: t.url.clone(),
                        status,
                        error,
                    }
                }))
                .await;
                Ok(json(&ClusterView {
                    version: meta.version,
                    targets: views,
                    buckets: meta.buckets.keys().cloned().collect(),
                }))
            }
            (_, path) => Err(s3_error(
                s3s::S3ErrorCode::NotImplemented,
                format!("no admin API at {path}"),
            )),
        }
    }
}
