//! The gateway process: one port for S3 (through s3s) and for the intra-cluster API under
//! `/_aisle/cluster/` (a prefix that can never be a bucket: bucket names cannot start with `_`).

use std::sync::Arc;
use std::time::Instant;

use aisle_cluster::auth::is_authorized;
use aisle_cluster::client::NodeClient;
use aisle_cluster::map::TargetInfo;
use aisle_cluster::proto::{self, ErrorBody};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use s3s::host::{S3Host, VirtualHost};
use s3s::service::{S3Service, S3ServiceBuilder};
use sha2::Digest;
use tokio::net::TcpListener;

use crate::admin::{AdminRoute, Names};
use crate::config::GatewayConfig;
use crate::meta::MetaOwner;
use crate::proxy::Targets;
use crate::s3::{AisleS3, Stats};

/// Failure to start a gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] aisle_cluster::tls::TlsError),
    /// Binding or file setup failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Path-style by default; `bucket.<domain>` is virtual-hosted style for each configured domain.
/// Unlike s3s's `MultiDomain`, any other host name stays path-style instead of being taken
/// for a CNAME bucket.
struct Hosts(Vec<String>);

impl Hosts {
    /// `(domain, bucket)` when `host` is `bucket.<domain>` for a configured domain.
    fn bucket_of<'a>(&'a self, host: &'a str) -> Option<(&'a str, &'a str)> {
        let name = match host.rsplit_once(':') {
            Some((n, port)) if !n.ends_with(']') || port.chars().all(|c| c.is_ascii_digit()) => {
                if n.starts_with('[') || !n.contains(':') {
                    n
                } else {
                    host
                }
            }
            _ => host,
        };
        self.0.iter().find_map(|d| {
            let bucket = name.strip_suffix(d.as_str())?.strip_suffix('.')?;
            (!bucket.is_empty()).then_some((d.as_str(), bucket))
        })
    }
}

impl S3Host for Hosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_of(host) {
            Some((domain, bucket)) => VirtualHost::new(domain).with_bucket(bucket),
            None => VirtualHost::new(host),
        })
    }
}

struct Gateway {
    s3: S3Service,
    meta: Arc<MetaOwner>,
    membership: Arc<crate::membership::Membership>,
    secret: String,
    metrics: Arc<Stats>,
    metrics_token: Option<String>,
    /// Requests slower than this are logged and counted.
    slow: std::time::Duration,
    hosts: Hosts,
    sessions: Arc<crate::ui::Sessions>,
}

/// Run a gateway until the process is stopped.
pub async fn run(cfg: GatewayConfig) -> Result<(), GatewayError> {
    let io = |context: String| move |source| GatewayError::Io { context, source };
    std::fs::create_dir_all(&cfg.root).map_err(io(format!("creating {}", cfg.root.display())))?;
    let client_tls = match &cfg.tls {
        Some(t) => Some(aisle_cluster::tls::client_config(&t.ca)?),
        None => None,
    };
    let client = NodeClient::with_tls(&cfg.cluster_secret, client_tls);
    let meta = MetaOwner::load(&cfg.root, client.clone());
    let membership =
        crate::membership::Membership::new(meta.clone(), client.clone(), cfg.health.clone());
    if let Some(n) = cfg.default_copies
        && let Err(e) = membership.set_default_copies(n).await
    {
        tracing::error!(error = %e, "default copies not set");
    }
    membership.spawn_prober();
    if cfg.scrub.interval_secs > 0 {
        let (targets, scrub) = (
            Targets::new(client.clone(), meta.clone(), Default::default()),
            cfg.scrub.clone(),
        );
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(scrub.interval_secs)).await;
                let reports = targets.scrub_all(scrub.rate_mib).await;
                let corrupt: u64 = reports.iter().map(|r| r.corrupt).sum();
                let unrepairable: u64 = reports.iter().map(|r| r.unrepairable).sum();
                tracing::info!(corrupt, unrepairable, "periodic scrub done");
            }
        });
    }
    crate::lifecycle::spawn(
        Targets::new(client.clone(), meta.clone(), Default::default()),
        cfg.lifecycle.clone(),
    );
    let stats = Arc::new(Stats::default());
    let targets = Targets::new(client, meta.clone(), stats.clone())
        .keeping_small_objects(cfg.hot_cache_mib << 20);
    let token_key = sha2::Sha256::digest(format!("list-token\0{}", cfg.cluster_secret)).to_vec();
    let sessions = Arc::new(crate::ui::Sessions::new(
        &cfg.cluster_secret,
        &cfg.access_key,
        &cfg.secret_key,
    ));
    let admin = AdminRoute {
        sessions: sessions.clone(),
        meta: meta.clone(),
        targets: targets.clone(),
        stats: stats.clone(),
        jobs: crate::jobs::Jobs::new(targets.clone(), meta.clone()),
        membership: membership.clone(),
        lifecycle: cfg.lifecycle.clone(),
        admin_key: cfg.access_key.clone(),
    };
    let stats_for_metrics = stats.clone();
    let s3 = AisleS3::new(
        targets,
        meta.clone(),
        cfg.region.clone(),
        &cfg.access_key,
        token_key,
        stats,
    );
    let mut builder = S3ServiceBuilder::new(s3);
    builder.set_auth(crate::access::Keys::new(
        &cfg.access_key,
        &cfg.secret_key,
        meta.clone(),
    ));
    builder.set_access(crate::access::Access::new(
        &cfg.access_key,
        meta.clone(),
        cfg.tls.is_some(),
    ));
    builder.set_route(admin);
    builder.set_validation(Names);
    if !cfg.domains.is_empty() {
        builder.set_host(Hosts(cfg.domains.clone()));
    }
    let gw = Arc::new(Gateway {
        s3: builder.build(),
        meta,
        membership,
        secret: cfg.cluster_secret.clone(),
        metrics: stats_for_metrics,
        metrics_token: cfg.metrics_token.clone(),
        slow: std::time::Duration::from_millis(cfg.slow_request_ms),
        hosts: Hosts(cfg.domains.clone()),
        sessions,
    });
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(io(format!("binding {}", cfg.listen)))?;
    let local = listener
        .local_addr()
        .map_err(io("reading the bound address".into()))?;
    tracing::info!(addr = %local, "gateway listening");
    if let Some(path) = &cfg.ready_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, local.to_string())
            .map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io(format!("writing {}", path.display())))?;
    }
    // Request heads beyond MAX_HEADER_BYTES are refused (431).
    let serve = move |req| handle(gw.clone(), req);
    match &cfg.tls {
        Some(t) => {
            let tls = aisle_cluster::tls::server_config(&t.cert, &t.key)?;
            aisle_cluster::serve::serve_tls(listener, tls, Some(MAX_HEADER_BYTES), serve).await
        }
        None => aisle_cluster::serve::serve(listener, Some(MAX_HEADER_BYTES), serve).await,
    }
    Ok(())
}

async fn handle(gw: Arc<Gateway>, req: Request<Incoming>) -> Response<s3s::Body> {
    if req.uri().path() == aisle_cluster::metrics::METRICS_PATH {
        return metrics(&gw, &req);
    }
    if req.uri().path().starts_with(crate::ui::UI_PREFIX) {
        return crate::ui::serve(&gw.sessions, req).await;
    }
    let id: Arc<str> = Arc::from(request_id());
    let op = crate::metrics::s3_op(
        req.method(),
        req.uri().path(),
        req.uri().query(),
        is_vhost(&gw.hosts, &req),
        req.headers().contains_key("x-amz-copy-source"),
    );
    let header_id = id.clone();
    let carries_body = request_has_body(&req);
    let work = async move {
        let method = req.method().clone();
        let started = Instant::now();
        let mut resp = if req.uri().path().starts_with("/_aisle/cluster/") {
            cluster_api(&gw, req).await
        } else if method == Method::OPTIONS {
            let bucket = bucket_of_request(&gw.hosts, &req);
            crate::cors::preflight(&gw.meta.snapshot(), bucket.as_deref(), req.headers())
        } else if let Some(too_big) = xml_body_too_large(&req) {
            too_big
        } else if let Some(expiry) = presign_expiry_error(&req) {
            expiry
        } else {
            let mut req = req;
            let cors = crate::cors::Actual::of(req.headers(), req.method(), || {
                bucket_of_request(&gw.hosts, &req)
            });
            if !is_vhost(&gw.hosts, &req) {
                sigv2_bucket_resource(&mut req);
            }
            let mut resp = match gw.s3.call(req.map(s3s::Body::from)).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = ?e, "S3 service failed");
                    plain(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
                }
            };
            if let Some(cors) = cors {
                cors.decorate(&gw.meta.snapshot(), resp.headers_mut());
            }
            resp
        };
        let status = resp.status();
        let elapsed = started.elapsed();
        let slow = gw.metrics.request(op, status.as_u16(), elapsed, gw.slow);
        let ms = elapsed.as_millis() as u64;
        // Every line logged while the request runs carries its id (src/logs.rs).
        if status.is_server_error() {
            tracing::warn!(op, %method, %status, elapsed_ms = ms, "request failed");
        } else if slow {
            tracing::warn!(op, %method, %status, elapsed_ms = ms, "slow request");
        } else {
            tracing::debug!(op, %method, %status, elapsed_ms = ms, "request done");
        }
        if let Ok(v) = HeaderValue::from_str(&header_id) {
            resp.headers_mut().insert("x-amz-request-id", v);
        }
        crate::s3::error::stamp_request_id(&mut resp, &header_id);
        if carries_body && (status.is_client_error() || status.is_server_error()) {
            // An error answered before the body was read: the connection cannot carry another
            // request (hyper closes it), so the client must not reuse it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    };
    // Every call to a target made for this request carries its id, and every line logged.
    aisle_cluster::trace::scope(id, work).await
}

/// Whether a request carries a body (a Content-Length above 0, or a chunked one).
fn request_has_body<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

/// The bucket a request is addressed to: from the Host header (virtual-hosted style) or the
/// path's first segment.
fn bucket_of_request<B>(hosts: &Hosts, req: &Request<B>) -> Option<String> {
    let vhost = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| hosts.bucket_of(h));
    match vhost {
        Some((_, bucket)) => Some(bucket.to_string()),
        None => {
            let first = req.uri().path().trim_start_matches('/').split('/').next()?;
            (!first.is_empty()).then(|| first.to_string())
        }
    }
}

/// The bucket comes in the Host header (`bucket.<domain>`), as s3s is told by [`Hosts`].
fn is_vhost(hosts: &Hosts, req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| hosts.bucket_of(h).is_some())
}

/// `GET /_aisle/metrics` with the metrics bearer token.
fn metrics(gw: &Gateway, req: &Request<Incoming>) -> Response<s3s::Body> {
    let ok = gw
        .metrics_token
        .as_deref()
        .is_some_and(|t| aisle_cluster::metrics::bearer_ok(req.headers(), t));
    if !ok {
        return cluster_error(
            StatusCode::UNAUTHORIZED,
            "AccessDenied",
            "metrics need Authorization: Bearer <metrics token>".into(),
        );
    }
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, aisle_cluster::metrics::CONTENT_TYPE)
        .body(s3s::Body::from(gw.metrics.render()))
        .expect("valid response")
}

/// A new request id: 32 hex digits, a random per-process half and a counter (unique without a
/// system call per request, which a random UUID costs).
fn request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(rand::random);
    format!("{base:016x}{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Read buffer of a connection, which bounds the request line and headers. Also the most body
/// bytes hyper reads at once: 256 KiB measured ~14% faster 64 MiB PUTs than 64 KiB.
pub const MAX_HEADER_BYTES: usize = 256 * 1024;

/// Largest XML request body (DeleteObjects, CompleteMultipartUpload, bucket configuration).
pub const MAX_XML_BODY: u64 = 4 * 1024 * 1024;

/// Refuse an oversized XML body up front with S3's 400 MaxMessageLengthExceeded (s3s itself
/// would answer a 500 after reading 20 MiB). XML bodies come with POST, and with PUT on a bucket.
/// Signature V2 signs a bucket-level request's resource as `/bucket/`, with the slash, even when
/// the path sent is `/bucket` (botocore does so for every path-style bucket operation, and its
/// presigned URLs are V2 by default); S3 accepts it. s3s signs the path as sent, so such a
/// request is given the slash before s3s sees it: `/bucket/` names the same bucket.
fn sigv2_bucket_resource<B>(req: &mut Request<B>) {
    let v2 = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|a| a.as_bytes().starts_with(b"AWS "))
        || req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("AWSAccessKeyId=")));
    let path = req.uri().path();
    if !v2 || path.len() < 2 || path[1..].contains('/') {
        return;
    }
    let with_slash = match req.uri().query() {
        Some(q) => format!("{path}/?{q}"),
        None => format!("{path}/"),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = with_slash.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Longest validity S3 gives a SigV4 presigned URL: seven days.
const MAX_PRESIGN_EXPIRES: i64 = 604_800;

/// A SigV4 presigned URL whose `X-Amz-Expires` is not a whole number of seconds in 1..=604800:
/// S3's `403 AuthorizationQueryParametersError`, before anything is served (s3s would take a
/// longer one, or answer a negative one with a vague 400).
fn presign_expiry_error<B>(req: &Request<B>) -> Option<Response<s3s::Body>> {
    let query = req.uri().query()?;
    if !query.contains("X-Amz-Expires=") {
        return None;
    }
    let (_, raw) = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "X-Amz-Expires")?;
    let msg = match raw.parse::<i64>() {
        Ok(n) if n > MAX_PRESIGN_EXPIRES => {
            "X-Amz-Expires must be less than a week (in seconds) that is 604800"
        }
        Ok(n) if n < 0 => "X-Amz-Expires must be non-negative",
        Ok(_) => return None,
        Err(_) => "X-Amz-Expires should be a number",
    };
    Some(xml_error(
        StatusCode::FORBIDDEN,
        "AuthorizationQueryParametersError",
        msg,
    ))
}

fn xml_body_too_large(req: &Request<Incoming>) -> Option<Response<s3s::Body>> {
    let len: u64 = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())?;
    let bucket_level = req.uri().path().trim_matches('/').split('/').count() <= 1;
    let xml_op = req.method() == Method::POST && req.uri().path() != "/"
        || (req.method() == Method::PUT && bucket_level);
    if !xml_op || len <= MAX_XML_BODY || req.uri().path().starts_with("/_aisle/") {
        return None;
    }
    Some(xml_error(
        StatusCode::BAD_REQUEST,
        "MaxMessageLengthExceeded",
        &format!("Your request was too big: the limit for XML bodies is {MAX_XML_BODY} bytes."),
    ))
}

/// An S3 XML error answered before s3s sees the request (`code` and `message` are plain text
/// without markup; the request id is stamped on later, as on every error).
fn xml_error(status: StatusCode, code: &str, message: &str) -> Response<s3s::Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
         <Message>{message}</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/xml")
        .body(s3s::Body::from(body))
        .expect("valid response")
}

fn plain(status: StatusCode, msg: &str) -> Response<s3s::Body> {
    Response::builder()
        .status(status)
        .body(s3s::Body::from(msg.to_string()))
        .expect("valid response")
}

fn json<T: serde::Serialize>(status: StatusCode, v: &T) -> Response<s3s::Body> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(s3s::Body::from(
            serde_json::to_vec(v).expect("serializable"),
        ))
        .expect("valid response")
}

fn cluster_error(status: StatusCode, code: &str, msg: String) -> Response<s3s::Body> {
    json(
        status,
        &ErrorBody {
            delete_marker: None,
            code: code.into(),
            message: msg,
        },
    )
}

/// The intra-cluster API: authenticated by the cluster secret.
async fn cluster_api(gw: &Gateway, req: Request<Incoming>) -> Response<s3s::Body> {
    if !is_authorized(req.headers(), &gw.secret) {
        return cluster_error(
            StatusCode::FORBIDDEN,
            "AccessDenied",
            "the cluster secret is required".into(),
        );
    }
    match (req.method(), req.uri().path()) {
        (&Method::POST, proto::G_JOIN) => {
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return cluster_error(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string());
                }
            };
            let target: TargetInfo = match serde_json::from_slice::<TargetInfo>(&body) {
                Ok(t) => t,
                Err(e) => {
                    return cluster_error(StatusCode::BAD_REQUEST, "InvalidRequest", e.to_string());
                }
            };
            match gw.membership.join(target).await {
                Ok(meta) => json(StatusCode::OK, &*meta),
                Err(crate::membership::MembershipError::Refused(m)) => {
                    cluster_error(StatusCode::CONFLICT, "DuplicateTarget", m)
                }
                Err(e) => cluster_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    e.to_string(),
                ),
            }
        }
        (&Method::GET, "/_aisle/cluster/v1/meta") => json(StatusCode::OK, &*gw.meta.snapshot()),
        _ => cluster_error(
            StatusCode::NOT_FOUND,
            "NotImplemented",
            "no such cluster API".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sigv2_bucket_requests_get_the_slash_they_were_signed_with() {
        let shaped = |auth: Option<&str>, uri: &str| {
            let mut b = http::Request::builder().uri(uri);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            let mut req = b.body(()).unwrap();
            super::sigv2_bucket_resource(&mut req);
            req.uri().to_string()
        };
        assert_eq!(shaped(Some("AWS k:s"), "/b?list-type=2"), "/b/?list-type=2");
        assert_eq!(
            shaped(None, "/b?AWSAccessKeyId=k&Expires=1&Signature=s"),
            "/b/?AWSAccessKeyId=k&Expires=1&Signature=s"
        );
        // V4, object paths and the root are left alone.
        assert_eq!(shaped(Some("AWS4-HMAC-SHA256 Credential=k"), "/b"), "/b");
        assert_eq!(shaped(Some("AWS k:s"), "/b/key"), "/b/key");
        assert_eq!(shaped(Some("AWS k:s"), "/"), "/");
    }
}
