//! CORS for browsers, around s3s: preflight `OPTIONS` requests are answered here (they carry no
//! credentials, so s3s never sees them), and actual requests that carry an `Origin` get the
//! `Access-Control-*` headers of the bucket's first matching rule
//! ([`aisle_cluster::cors::CorsRule::matching`]) — on errors too, so a page can read a 404.
//!
//! An alias bucket answers with its source bucket's rules. Rules are set with PutBucketCors
//! (`crate::s3`'s `cors.rs`).

use aisle_cluster::cors::CorsRule;
use aisle_cluster::map::ClusterMeta;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

/// What an actual request needs for its answer's CORS headers, taken before s3s consumes it.
pub(crate) struct Actual {
    origin: String,
    method: String,
    bucket: String,
}

impl Actual {
    /// `Some` for a request with an `Origin` header addressed to a bucket (`bucket` is asked
    /// only then: requests without an Origin pay nothing).
    pub(crate) fn of(
        headers: &HeaderMap,
        method: &Method,
        bucket: impl FnOnce() -> Option<String>,
    ) -> Option<Actual> {
        let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
        Some(Actual {
            origin: origin.to_string(),
            method: method.as_str().to_string(),
            bucket: bucket()?,
        })
    }

    /// Adds the headers of the bucket's first rule that allows this origin and method.
    pub(crate) fn decorate(&self, meta: &ClusterMeta, headers: &mut HeaderMap) {
        let rules = rules_of(meta, &self.bucket);
        if rules.is_empty() {
            return;
        }
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(rule) = CorsRule::matching(rules, &self.origin, &self.method, &[]) {
            allow(headers, rule, &self.origin);
        }
    }
}

/// The CORS rules that apply to `bucket` (an alias bucket's are its source's).
fn rules_of<'a>(meta: &'a ClusterMeta, bucket: &str) -> &'a [CorsRule] {
    let name = meta
        .aliases
        .get(bucket)
        .map(|a| a.source.as_str())
        .unwrap_or(bucket);
    meta.buckets
        .get(name)
        .map(|b| b.cors.as_slice())
        .unwrap_or(&[])
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The headers every allowed request gets.
fn allow(headers: &mut HeaderMap, rule: &CorsRule, origin: &str) {
    if rule.any_origin() {
        set(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, "*");
    } else {
        set(headers, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        set(headers, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    set(
        headers,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        &rule.allowed_methods.join(", "),
    );
    if !rule.expose_headers.is_empty() {
        set(
            headers,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &rule.expose_headers.join(", "),
        );
    }
    if let Some(age) = rule.max_age_seconds {
        set(headers, header::ACCESS_CONTROL_MAX_AGE, &age.to_string());
    }
}

/// Answers a preflight `OPTIONS` request for `bucket` (`None`: the service root).
pub(crate) fn preflight(
    meta: &ClusterMeta,
    bucket: Option<&str>,
    headers: &HeaderMap,
) -> Response<s3s::Body> {
    let get = |h: header::HeaderName| headers.get(h).and_then(|v| v.to_str().ok());
    let Some(origin) = get(header::ORIGIN) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Insufficient information. Origin request header needed.",
        );
    };
    let Some(method) = get(header::ACCESS_CONTROL_REQUEST_METHOD) else {
        return error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Invalid Access-Control-Request-Method: none given",
        );
    };
    let Some(bucket) = bucket else {
        return forbidden(method);
    };
    if !meta.buckets.contains_key(bucket) && !meta.aliases.contains_key(bucket) {
        return error(
            StatusCode::NOT_FOUND,
            "NoSuchBucket",
            &format!("the bucket {bucket} does not exist"),
        );
    }
    let requested: Vec<&str> = get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let Some(rule) = CorsRule::matching(rules_of(meta, bucket), origin, method, &requested) else {
        return forbidden(method);
    };
    let mut resp = Response::new(s3s::Body::empty());
    let h = resp.headers_mut();
    allow(h, rule, origin);
    if !requested.is_empty() {
        set(
            h,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            &requested.join(", "),
        );
    }
    h.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
        ),
    );
    resp
}

fn forbidden(method: &str) -> Response<s3s::Body> {
    error(
        StatusCode::FORBIDDEN,
        "AccessForbidden",
        &format!(
            "CORSResponse: This CORS request is not allowed. The Origin, the method ({method}) or \
             the request headers are not allowed by the bucket's CORS rules."
        ),
    )
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<s3s::Body> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{}</Message></Error>",
        escape(message)
    );
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/xml")
        .body(s3s::Body::from(body))
        .expect("valid response")
}
