//! The admin (native) API under `/_aisle/v1/`: SigV4-authenticated like S3 itself, served on the
//! S3 port through an `s3s` route. `_aisle` can never be a bucket (bucket names cannot start
//! with `_`), so the prefix never shadows user data.

use std::sync::Arc;

use aisle_cluster::map::EtlSpec;
use aisle_cluster::proto::{EtlNodeStatus, TargetStatus};
use http::{Method, StatusCode};
use s3s::route::S3Route;
use s3s::validation::{AwsNameValidation, NameValidation};
use s3s::{Body, S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};

use crate::meta::MetaOwner;
use crate::proxy::Targets;
use crate::s3::{Stats, s3_error};

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
    /// What an operator made of it.
    #[serde(default)]
    pub admin: aisle_cluster::map::AdminState,
    /// Liveness as the gateway sees it.
    #[serde(default)]
    pub health: aisle_cluster::map::Health,
    /// Last answer to a probe, Unix milliseconds.
    #[serde(default)]
    pub last_seen_ms: i64,
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
    /// Alias buckets: name → (source, pipeline).
    #[serde(default)]
    pub aliases: Vec<aisle_cluster::map::AliasView>,
    /// Object bytes this gateway sent to clients (GET bodies) since it started.
    #[serde(default)]
    pub gateway_bytes_out: u64,
    /// Object bytes this gateway received from clients (PUT/UploadPart bodies) since it started.
    #[serde(default)]
    pub gateway_bytes_in: u64,
    /// Copies each bucket keeps.
    #[serde(default)]
    pub bucket_copies: std::collections::BTreeMap<String, u8>,
    /// Copies new buckets get.
    #[serde(default)]
    pub default_copies: u8,
    /// S3 requests this gateway answered since it started.
    #[serde(default)]
    pub gateway_requests: u64,
    /// When the gateway started, Unix milliseconds.
    #[serde(default)]
    pub gateway_started_ms: i64,
    /// aisle's version.
    #[serde(default)]
    pub version_string: String,
    /// Remote buckets and their remotes (secrets redacted).
    #[serde(default)]
    pub remotes: std::collections::BTreeMap<String, aisle_cluster::map::RemoteSpec>,
    /// The current rebalance generation and whether it settled.
    #[serde(default)]
    pub rebalance: aisle_cluster::map::Rebalance,
}

/// Body of `PUT /_aisle/v1/bucket/<name>`: bucket properties to change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BucketPropsChange {
    /// Copies of every object (1–3).
    pub copies: u8,
}

/// `POST /_aisle/v1/cluster/target/<id>/<action>`: maintenance, decommission, removal.
pub const TARGET_PREFIX: &str = "/_aisle/v1/cluster/target/";
/// `PUT /_aisle/v1/bucket/<name>`: bucket properties ([`BucketPropsChange`]).
pub const BUCKET_PREFIX: &str = "/_aisle/v1/bucket/";

fn bad(msg: String) -> s3s::S3Error {
    s3_error(s3s::S3ErrorCode::InvalidArgument, msg)
}

fn membership_error(e: crate::membership::MembershipError) -> s3s::S3Error {
    use crate::membership::MembershipError as M;
    match e {
        M::Busy(m) => conflict(m),
        M::Refused(m) => bad(m),
        M::NotFound(m) => s3_error(s3s::S3ErrorCode::NoSuchKey, m),
        M::Persist(e) => s3_error(s3s::S3ErrorCode::InternalError, e.to_string()),
    }
}

use crate::remote::REMOTE_PREFIX;

/// Path prefix of alias buckets: `PUT|DELETE /_aisle/v1/etl/alias/<name>`.
pub const ALIAS_PREFIX: &str = "/_aisle/v1/etl/alias/";

/// Path prefix of registered transforms: `PUT|GET|DELETE /_aisle/v1/etl/spec/<name>`,
/// `POST …/<name>/stop|start`.
pub const SPEC_PREFIX: &str = "/_aisle/v1/etl/spec/";

/// `GET /_aisle/v1/etl/spec/<name>`: the spec and every target's view of it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtlShow {
    /// The registered spec.
    pub spec: EtlSpec,
    /// Per target: id and status (or why it could not be asked).
    pub targets: Vec<(String, Result<EtlNodeStatus, String>)>,
}

/// `GET /_aisle/v1/etl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EtlView {
    /// Built-in transforms, usable by name everywhere.
    pub builtins: Vec<String>,
    /// Registered transforms.
    #[serde(default)]
    pub registered: Vec<EtlSpec>,
    /// Alias buckets.
    pub aliases: Vec<aisle_cluster::map::AliasView>,
}

/// Body of `PUT /_aisle/v1/etl/alias/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BindRequest {
    /// Bucket the alias reads.
    pub source: String,
    /// `a,b,c`.
    pub pipeline: String,
    /// Argument string for every stage.
    #[serde(default)]
    pub args: Option<String>,
    /// Transform every source object into the targets' caches now, as a job.
    #[serde(default)]
    pub materialize: bool,
}

/// Query of `GET /_aisle/v1/jobs/<id>`: `?wait_ms=N` answers once the job has ended or after
/// N milliseconds (at most [`MAX_JOB_WAIT_MS`]), whichever comes first; without it, at once.
#[derive(Debug, Deserialize)]
struct JobQuery {
    wait_ms: Option<u64>,
}

/// The longest a job query waits for the job's end.
pub const MAX_JOB_WAIT_MS: u64 = 30_000;

/// The admin route.
pub struct AdminRoute {
    /// Cluster metadata.
    pub meta: Arc<MetaOwner>,
    /// Targets.
    pub targets: Targets,
    /// This gateway's counters.
    pub stats: Arc<Stats>,
    /// Running and finished jobs.
    pub jobs: Arc<crate::jobs::Jobs>,
    /// Membership changes.
    pub membership: Arc<crate::membership::Membership>,
    /// Dashboard sessions (an alternative to a SigV4 signature).
    pub sessions: Arc<crate::ui::Sessions>,
    /// How lifecycle rules run (the day length of an on-demand run).
    pub lifecycle: crate::lifecycle::LifecycleConfig,
    /// The admin's access key: the only one the admin API takes (users' keys are for S3).
    pub admin_key: String,
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

/// A small JSON request body (at most `limit` bytes), or a 400.
async fn json_body<T: serde::de::DeserializeOwned>(mut body: Body, limit: usize) -> S3Result<T> {
    let raw = body.store_all_limited(limit).await.map_err(|e| {
        s3_error(
            s3s::S3ErrorCode::InvalidRequest,
            format!("reading the body: {e}"),
        )
    })?;
    serde_json::from_slice(&raw).map_err(|e| {
        s3_error(
            s3s::S3ErrorCode::InvalidRequest,
            format!("bad JSON body: {e}"),
        )
    })
}

fn conflict(msg: String) -> s3s::S3Error {
    let mut e = s3_error(s3s::S3ErrorCode::Custom("Conflict".into()), msg);
    e.set_status_code(StatusCode::CONFLICT);
    e
}

fn no_such_etl(name: &str) -> s3s::S3Error {
    let mut e = s3_error(
        s3s::S3ErrorCode::Custom("NoSuchEtl".into()),
        format!("no transform named {name} is registered"),
    );
    e.set_status_code(StatusCode::NOT_FOUND);
    e
}

impl AdminRoute {
    async fn init(&self, name: String, spec: EtlSpec) -> S3Result<()> {
        if spec.name != name {
            return Err(bad(format!(
                "the spec names {:?}, the path {name:?}",
                spec.name
            )));
        }
        if !aisle_etl_runtime::valid_name(&name) {
            return Err(bad(format!(
                "{name:?} is not a valid transform name ([a-z0-9][a-z0-9-]{{1,31}})"
            )));
        }
        if aisle_etl_runtime::builtin::is_builtin(&name) {
            return Err(conflict(format!("{name} is a built-in transform")));
        }
        match spec.communicator.as_str() {
            "exec" if spec.command.is_empty() => return Err(bad("exec needs a command".into())),
            "exec"
                if !matches!(
                    spec.mode.as_deref(),
                    None | Some("oneshot") | Some("worker")
                ) =>
            {
                return Err(bad("mode is oneshot or worker".into()));
            }
            c @ ("hpush" | "hpull" | "ws") if spec.command.is_empty() == spec.url.is_none() => {
                return Err(bad(format!("{c} needs either a command to start or a url")));
            }
            "exec" | "hpush" | "hpull" | "ws" => {}
            other => {
                return Err(bad(format!(
                    "unknown communicator {other:?} (exec, hpush, hpull or ws)"
                )));
            }
        }
        match spec.argument.as_str() {
            "" => {}
            "fqn" if spec.communicator != "exec" => {}
            "fqn" => return Err(bad("argument fqn needs hpush, hpull or ws".into())),
            other => return Err(bad(format!("argument is \"\" or \"fqn\", not {other:?}"))),
        }
        self.meta
            .update(|m| {
                if let Some(old) = m.etls.get(&name) {
                    if *old == spec {
                        return Ok((false, ()));
                    }
                    return Err(conflict(format!(
                        "{name} is already registered; remove it first"
                    )));
                }
                m.etls.insert(name.clone(), spec.clone());
                Ok((true, ()))
            })
            .await
    }

    async fn show(&self, name: &str) -> S3Result<EtlShow> {
        let meta = self.meta.snapshot();
        let spec = meta
            .etls
            .get(name)
            .cloned()
            .ok_or_else(|| no_such_etl(name))?;
        let targets = futures::future::join_all(meta.targets.values().map(|t| async move {
            let r = self
                .targets
                .etl_status(t, name)
                .await
                .map_err(|e| e.to_string());
            (t.id.clone(), r)
        }))
        .await;
        Ok(EtlShow { spec, targets })
    }

    async fn bind(&self, name: String, spec: BindRequest) -> S3Result<()> {
        use s3s::S3ErrorCode as C;
        if !AwsNameValidation::new().validate_bucket_name(&name) || name.starts_with('_') {
            return Err(s3_error(
                C::InvalidBucketName,
                format!("{name:?} is not a valid bucket name"),
            ));
        }
        let pipeline = crate::s3::etl::parse_pipeline(&spec.pipeline)?;
        let meta = self.meta.snapshot();
        if let Some(unknown) = pipeline
            .iter()
            .find(|n| !aisle_etl_runtime::builtin::is_builtin(n) && !meta.etls.contains_key(*n))
        {
            let mut e = s3_error(
                C::Custom("InvalidEtl".into()),
                format!("unknown transform {unknown:?}"),
            );
            e.set_status_code(StatusCode::BAD_REQUEST);
            return Err(e);
        }
        // Built-ins check their arguments up front; registered ones get them per object.
        let builtins: Vec<String> = pipeline
            .iter()
            .filter(|n| aisle_etl_runtime::builtin::is_builtin(n))
            .cloned()
            .collect();
        if !builtins.is_empty() {
            aisle_etl_runtime::Registry::with_builtins()
                .resolve(&builtins, spec.args.as_deref())
                .map_err(|e| {
                    let mut err = s3_error(C::Custom(e.code().into()), e.to_string());
                    err.set_status_code(
                        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST),
                    );
                    err
                })?;
        }
        let created_ms = aisle_cluster::now_ms();
        self.meta
            .update(|m| {
                if !m.buckets.contains_key(&spec.source) {
                    return Err(s3_error(
                        C::NoSuchBucket,
                        format!("the source bucket {} does not exist", spec.source),
                    ));
                }
                if m.buckets.contains_key(&name) || m.aliases.contains_key(&name) {
                    return Err(s3_error(
                        C::BucketAlreadyExists,
                        format!("{name} already exists"),
                    ));
                }
                m.aliases.insert(
                    name.clone(),
                    aisle_cluster::map::AliasBucket {
                        source: spec.source.clone(),
                        pipeline,
                        args: spec.args.clone(),
                        created_ms,
                    },
                );
                Ok((true, ()))
            })
            .await
    }
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

    /// A SigV4 signature with the admin's keys, or a dashboard session ([`crate::ui`]).
    async fn check_access(&self, req: &mut S3Request<Body>) -> S3Result<()> {
        let admin = req
            .credentials
            .as_ref()
            .is_some_and(|c| c.access_key == self.admin_key);
        if admin || self.sessions.valid(&req.headers) {
            Ok(())
        } else {
            Err(s3s::s3_error!(AccessDenied, "Signature is required"))
        }
    }

    async fn call(&self, req: S3Request<Body>) -> S3Result<S3Response<Body>> {
        match (&req.method, req.uri.path()) {
            (&Method::GET, "/_aisle/v1/cluster") => {
                let meta = self.meta.snapshot();
                let observed = self.membership.observed();
                let views = futures::future::join_all(meta.targets.values().map(|t| async {
                    let ask = self.targets.status(t);
                    let (status, error) =
                        match tokio::time::timeout(std::time::Duration::from_secs(2), ask).await {
                            Ok(Ok(s)) => (Some(s), None),
                            Ok(Err(e)) => (None, Some(e.to_string())),
                            Err(_) => (None, Some("no answer within 2 s".into())),
                        };
                    TargetView {
                        id: t.id.clone(),
                        url: t.url.clone(),
                        status,
                        error,
                        admin: t.admin,
                        health: t.health.clone(),
                        last_seen_ms: observed.get(&t.id).map_or(0, |o| o.last_seen_ms),
                    }
                }))
                .await;
                Ok(json(&ClusterView {
                    version: meta.version,
                    targets: views,
                    buckets: meta.buckets.keys().cloned().collect(),
                    aliases: meta.alias_views(),
                    gateway_bytes_out: self.stats.bytes_out.get(),
                    gateway_bytes_in: self.stats.bytes_in.get(),
                    bucket_copies: meta
                        .buckets
                        .iter()
                        .map(|(n, b)| (n.clone(), b.copies))
                        .collect(),
                    default_copies: meta.default_copies.max(1),
                    gateway_requests: self.stats.requests_total.get(),
                    gateway_started_ms: self.stats.started_ms,
                    version_string: env!("CARGO_PKG_VERSION").to_string(),
                    remotes: meta
                        .buckets
                        .iter()
                        .filter_map(|(n, b)| Some((n.clone(), b.remote.as_ref()?.redacted())))
                        .collect(),
                    rebalance: meta.rebalance.clone(),
                }))
            }
            (m, path) if path.starts_with(crate::users::USERS_PREFIX) => {
                Ok(json(&crate::users::route(&self.meta, m, path).await?))
            }
            (&Method::POST, "/_aisle/v1/cluster/lifecycle") => Ok(json(
                &crate::lifecycle::run(&self.targets, &self.lifecycle).await,
            )),
            (&Method::POST, "/_aisle/v1/cluster/scrub") => {
                let q: aisle_cluster::proto::ScrubQuery =
                    serde_urlencoded::from_str(req.uri.query().unwrap_or(""))
                        .map_err(|e| bad(format!("bad query: {e}")))?;
                Ok(json(&self.targets.scrub_all(q.rate_mib).await))
            }
            (&Method::POST, path) if path.starts_with(TARGET_PREFIX) => {
                use crate::membership::TargetAction as A;
                let rest = &path[TARGET_PREFIX.len()..];
                let (id, action) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("expected /cluster/target/<id>/<action>".into()))?;
                let action = match action {
                    "maintenance-start" => A::StartMaintenance,
                    "maintenance-stop" => A::StopMaintenance,
                    "decommission" => A::Decommission,
                    "remove" => A::Remove,
                    other => return Err(bad(format!("unknown action {other:?}"))),
                };
                self.membership
                    .act(id, action)
                    .await
                    .map_err(membership_error)?;
                Ok(json(&serde_json::json!({"target": id, "action": action})))
            }
            (&Method::PUT, path) if path.starts_with(BUCKET_PREFIX) => {
                let name = &path[BUCKET_PREFIX.len()..];
                let change: BucketPropsChange = json_body(req.input, 64 * 1024).await?;
                self.membership
                    .set_copies(name, change.copies)
                    .await
                    .map_err(membership_error)?;
                Ok(json(
                    &serde_json::json!({"bucket": name, "copies": change.copies}),
                ))
            }
            (&Method::POST, "/_aisle/v1/jobs/shard") => {
                let spec: crate::jobs::ShardJobSpec =
                    json_body(req.input, 64 * 1024 * 1024).await?;
                let view = self
                    .jobs
                    .start_shard(spec)
                    .map_err(|e| s3_error(s3s::S3ErrorCode::InvalidArgument, e))?;
                Ok(json(&view))
            }
            (&Method::POST, "/_aisle/v1/jobs/etl") => {
                let spec: crate::jobs::EtlJobSpec = json_body(req.input, 64 * 1024 * 1024).await?;
                let known = self.meta.snapshot();
                if let Some(unknown) = spec.etl.pipeline.iter().find(|n| {
                    !aisle_etl_runtime::builtin::is_builtin(n) && !known.etls.contains_key(*n)
                }) {
                    let mut e = s3_error(
                        s3s::S3ErrorCode::Custom("InvalidEtl".into()),
                        format!("unknown transform {unknown:?}"),
                    );
                    e.set_status_code(StatusCode::BAD_REQUEST);
                    return Err(e);
                }
                let view = self
                    .jobs
                    .start_etl(spec)
                    .map_err(|e| s3_error(s3s::S3ErrorCode::InvalidArgument, e))?;
                Ok(json(&view))
            }
            (&Method::POST, "/_aisle/v1/jobs/prefetch" | "/_aisle/v1/jobs/evict") => {
                let spec: crate::jobs::Sources = json_body(req.input, 64 * 1024 * 1024).await?;
                let view = if req.uri.path().ends_with("prefetch") {
                    self.jobs.start_prefetch(spec)
                } else {
                    self.jobs.start_evict(spec)
                };
                Ok(json(&view.map_err(bad)?))
            }
            (&Method::PUT, path)
                if path.starts_with(REMOTE_PREFIX)
                    && !path[REMOTE_PREFIX.len()..].contains('/') =>
            {
                let name = &path[REMOTE_PREFIX.len()..];
                let spec: aisle_cluster::map::RemoteSpec = json_body(req.input, 64 * 1024).await?;
                use crate::remote::BindError as B;
                match crate::remote::bind(&self.meta, name, spec).await {
                    Ok(v) => Ok(json(&v)),
                    Err(B::Invalid(m)) => Err(bad(m)),
                    Err(B::Taken(m)) => Err(conflict(m)),
                    Err(B::Remote(e)) => Err(crate::s3::error::from_remote(e)),
                    Err(B::Persist(e)) => {
                        Err(s3_error(s3s::S3ErrorCode::InternalError, e.to_string()))
                    }
                }
            }
            (&Method::GET, path) if path.starts_with(REMOTE_PREFIX) => {
                let rest = &path[REMOTE_PREFIX.len()..];
                let (name, what) = rest
                    .split_once('/')
                    .ok_or_else(|| bad("expected …/remote-bucket/<name>/cached|object".into()))?;
                if self.targets.remote(name).is_none() {
                    return Err(bad(format!("{name} is not a remote bucket")));
                }
                let q: std::collections::HashMap<String, String> =
                    serde_urlencoded::from_str(req.uri.query().unwrap_or(""))
                        .map_err(|e| bad(format!("bad query: {e}")))?;
                match what {
                    "cached" => {
                        let lq = aisle_cluster::proto::ListQuery {
                            versions: false,
                            after_version: None,
                            bucket: name.to_string(),
                            prefix: q.get("prefix").cloned().unwrap_or_default(),
                            delimiter: q.get("delimiter").cloned(),
                            after: q.get("after").cloned(),
                            limit: q
                                .get("limit")
                                .and_then(|l| l.parse().ok())
                                .unwrap_or(1000usize)
                                .min(1000),
                        };
                        let page = crate::s3::list::cached_page(&self.targets, name, &lq).await?;
                        Ok(json(&page))
                    }
                    "object" => {
                        let key = q.get("key").ok_or_else(|| bad("give key".into()))?;
                        let v = crate::remote::object_view(&self.targets, name, key)
                            .await
                            .map_err(|e| s3_error(s3s::S3ErrorCode::InternalError, e))?;
                        Ok(json(&v))
                    }
                    other => Err(bad(format!("unknown view {other:?} (cached, object)"))),
                }
            }
            (&Method::GET, "/_aisle/v1/jobs") => Ok(json(&self.jobs.list())),
            (method, path) if path.starts_with("/_aisle/v1/jobs/") => {
                let rest = &path["/_aisle/v1/jobs/".len()..];
                let (id, action) = match rest.split_once('/') {
                    Some((i, a)) => (i, Some(a)),
                    None => (rest, None),
                };
                let missing = || {
                    let mut e = s3_error(
                        s3s::S3ErrorCode::Custom("NoSuchJob".into()),
                        format!("no job {id}"),
                    );
                    e.set_status_code(StatusCode::NOT_FOUND);
                    e
                };
                match (method.clone(), action) {
                    (Method::GET, None) => {
                        let q: JobQuery = serde_urlencoded::from_str(req.uri.query().unwrap_or(""))
                            .map_err(|e| bad(format!("bad query (wait_ms=<milliseconds>): {e}")))?;
                        let within = std::time::Duration::from_millis(
                            q.wait_ms.unwrap_or(0).min(MAX_JOB_WAIT_MS),
                        );
                        Ok(json(&self.jobs.wait(id, within).await.ok_or_else(missing)?))
                    }
                    (Method::POST, Some("abort")) => {
                        if !self.jobs.abort(id) {
                            return Err(missing());
                        }
                        Ok(json(&self.jobs.get(id).ok_or_else(missing)?))
                    }
                    _ => Err(s3_error(
                        s3s::S3ErrorCode::NotImplemented,
                        format!("no admin API at {path}"),
                    )),
                }
            }
            (&Method::POST, "/_aisle/v1/batch") => {
                let batch: crate::batch::BatchRequest =
                    json_body(req.input, 32 * 1024 * 1024).await?;
                let buckets = self.meta.snapshot().buckets.keys().cloned().collect();
                self.stats.batches.inc();
                self.stats.batch_entries.inc_by(batch.entries.len() as u64);
                let known = self.meta.snapshot();
                let is_known = move |n: &str| {
                    aisle_etl_runtime::builtin::is_builtin(n) || known.etls.contains_key(n)
                };
                crate::batch::get_batch(self.targets.clone(), buckets, is_known, batch).await
            }
            (&Method::GET, "/_aisle/v1/archive") => {
                let q: std::collections::HashMap<String, String> = req
                    .uri
                    .query()
                    .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                    .unwrap_or_default();
                let (Some(bucket), Some(key)) = (q.get("bucket"), q.get("key")) else {
                    return Err(s3_error(
                        s3s::S3ErrorCode::InvalidArgument,
                        "give bucket and key",
                    ));
                };
                let meta = self.meta.snapshot();
                if !meta.buckets.contains_key(bucket) {
                    return Err(s3_error(
                        s3s::S3ErrorCode::NoSuchBucket,
                        format!("no bucket {bucket}"),
                    ));
                }
                let members = self
                    .targets
                    .archive_members(&aisle_cluster::proto::ObjectQuery {
                        version_id: None,
                        bucket: bucket.clone(),
                        key: key.clone(),
                        part: None,
                    })
                    .await
                    .map_err(crate::s3::from_client)?;
                Ok(json(&members))
            }
            (&Method::GET, "/_aisle/v1/etl") => {
                let meta = self.meta.snapshot();
                Ok(json(&EtlView {
                    builtins: aisle_etl_runtime::Registry::with_builtins().names(),
                    registered: meta.etls.values().cloned().collect(),
                    aliases: meta.alias_views(),
                }))
            }
            (&Method::PUT, path) if path.starts_with(ALIAS_PREFIX) => {
                let name = path[ALIAS_PREFIX.len()..].to_string();
                let spec: BindRequest = json_body(req.input, 64 * 1024).await?;
                let materialize = spec.materialize;
                let selection = aisle_cluster::proto::EtlSelection {
                    pipeline: crate::s3::etl::parse_pipeline(&spec.pipeline)?,
                    args: spec.args.clone(),
                };
                let source = spec.source.clone();
                self.bind(name, spec).await?;
                let job = materialize.then(|| self.jobs.start_materialize(source, selection));
                Ok(json(&serde_json::json!({"bound": true, "job": job})))
            }
            (&Method::DELETE, path) if path.starts_with(ALIAS_PREFIX) => {
                let name = path[ALIAS_PREFIX.len()..].to_string();
                let removed = self
                    .meta
                    .update(|m| Ok::<_, s3s::S3Error>((m.aliases.remove(&name).is_some(), ())))
                    .await;
                removed?;
                Ok(json(&serde_json::json!({"unbound": name})))
            }
            (method, path) if path.starts_with(SPEC_PREFIX) => {
                let rest = path[SPEC_PREFIX.len()..].to_string();
                let (name, action) = match rest.split_once('/') {
                    Some((n, a)) => (n.to_string(), Some(a.to_string())),
                    None => (rest, None),
                };
                match (method.clone(), action.as_deref()) {
                    (Method::PUT, None) => {
                        let spec: EtlSpec = json_body(req.input, 256 * 1024).await?;
                        self.init(name, spec).await?;
                        Ok(json(&serde_json::json!({"initialized": true})))
                    }
                    (Method::GET, None) => Ok(json(&self.show(&name).await?)),
                    (Method::DELETE, None) => {
                        self.meta
                            .update(|m| {
                                if let Some((alias, _)) =
                                    m.aliases.iter().find(|(_, a)| a.pipeline.contains(&name))
                                {
                                    return Err(conflict(format!(
                                        "the alias bucket {alias} uses {name}; unbind it first"
                                    )));
                                }
                                if m.etls.remove(&name).is_none() {
                                    return Err(no_such_etl(&name));
                                }
                                Ok((true, ()))
                            })
                            .await?;
                        Ok(json(&serde_json::json!({"removed": name})))
                    }
                    (Method::POST, Some(a @ ("stop" | "start"))) => {
                        let running = a == "start";
                        self.meta
                            .update(|m| {
                                let spec =
                                    m.etls.get_mut(&name).ok_or_else(|| no_such_etl(&name))?;
                                let changed = spec.running != running;
                                spec.running = running;
                                Ok::<_, s3s::S3Error>((changed, ()))
                            })
                            .await?;
                        Ok(json(&serde_json::json!({"name": name, "running": running})))
                    }
                    _ => Err(s3_error(
                        s3s::S3ErrorCode::NotImplemented,
                        format!("no admin API at {path}"),
                    )),
                }
            }
            (_, path) => Err(s3_error(
                s3s::S3ErrorCode::NotImplemented,
                format!("no admin API at {path}"),
            )),
        }
    }
}
