//! Who may do what: users and their keys, bucket owners, canned ACLs and bucket policies (AWS
//! policy JSON), and the decision for one request.
//!
//! The decision follows AWS's order: an explicit `Deny` in the bucket policy wins; then the
//! bucket's owner, an `Allow` of the policy, or the bucket's canned ACL allows; anything else
//! is denied. The cluster's admin key is not a user: it is allowed everything before any of
//! this (the gateway checks it). This module knows nothing of HTTP or S3's wire format: the
//! gateway hands it names.
//!
//! ```
//! use aisle_cluster::access::{Decision, Policy, Request};
//! let policy: Policy = serde_json::from_str(r#"{
//!   "Version": "2012-10-17",
//!   "Statement": [
//!     {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
//!      "Resource": "arn:aws:s3:::photos/public/*"},
//!     {"Effect": "Deny", "Principal": {"AWS": ["bob"]}, "Action": "s3:*",
//!      "Resource": ["arn:aws:s3:::photos", "arn:aws:s3:::photos/*"]}
//!   ]}"#).unwrap();
//! let anon = Request { user: None, action: "s3:GetObject", bucket: "photos",
//!                      key: Some("public/a.jpg"), ..Default::default() };
//! assert_eq!(policy.evaluate(&anon), Decision::Allow);
//! let private = Request { key: Some("private/a.jpg"), ..anon.clone() };
//! assert_eq!(policy.evaluate(&private), Decision::NoMatch);
//! let bob = Request { user: Some("bob"), ..anon };
//! assert_eq!(policy.evaluate(&bob), Decision::Deny);
//! ```

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One user: a name and its access keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Access key id → secret key.
    pub keys: BTreeMap<String, String>,
}

/// A bucket's canned ACL (S3's `x-amz-acl` values for buckets).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CannedAcl {
    /// The owner only.
    #[default]
    Private,
    /// Anyone may read (list the bucket, get its objects).
    PublicRead,
    /// Anyone may read and write.
    PublicReadWrite,
    /// Every user with keys may read.
    AuthenticatedRead,
}

impl CannedAcl {
    /// Parses an `x-amz-acl` value.
    pub fn parse(s: &str) -> Option<CannedAcl> {
        match s {
            "private" => Some(CannedAcl::Private),
            "public-read" => Some(CannedAcl::PublicRead),
            "public-read-write" => Some(CannedAcl::PublicReadWrite),
            "authenticated-read" => Some(CannedAcl::AuthenticatedRead),
            _ => None,
        }
    }

    /// The `x-amz-acl` value.
    pub fn as_str(self) -> &'static str {
        match self {
            CannedAcl::Private => "private",
            CannedAcl::PublicRead => "public-read",
            CannedAcl::PublicReadWrite => "public-read-write",
            CannedAcl::AuthenticatedRead => "authenticated-read",
        }
    }

    /// Does it grant anything to others than the owner (AWS counts every user as public)?
    pub fn is_public(self) -> bool {
        self != CannedAcl::Private
    }

    /// Does the ACL let this request through?
    pub fn allows(self, r: &Request<'_>) -> bool {
        let read = is_read(r.action);
        let write = matches!(
            r.action,
            "s3:PutObject" | "s3:DeleteObject" | "s3:AbortMultipartUpload"
        );
        match self {
            CannedAcl::Private => false,
            CannedAcl::PublicRead => read,
            CannedAcl::PublicReadWrite => read || write,
            CannedAcl::AuthenticatedRead => read && r.user.is_some(),
        }
    }
}

fn is_read(action: &str) -> bool {
    matches!(
        action,
        "s3:GetObject" | "s3:ListBucket" | "s3:ListBucketVersions" | "s3:GetObjectTagging"
    )
}

/// A bucket's PublicAccessBlock: guards against making it public by mistake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicAccessBlock {
    /// Refuse setting a public ACL.
    #[serde(default)]
    pub block_public_acls: bool,
    /// Treat a public ACL as private.
    #[serde(default)]
    pub ignore_public_acls: bool,
    /// Refuse setting a public policy.
    #[serde(default)]
    pub block_public_policy: bool,
    /// While the policy is public, its Allows grant nothing (only the owner keeps access).
    #[serde(default)]
    pub restrict_public_buckets: bool,
}

/// One request, as the access decision sees it.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    /// The user who signed it (`None`: anonymous).
    pub user: Option<&'a str>,
    /// The S3 action (`s3:GetObject`, …).
    pub action: &'a str,
    /// The bucket.
    pub bucket: &'a str,
    /// The key, for object actions.
    pub key: Option<&'a str>,
    /// The client's address (`aws:SourceIp`).
    pub source_ip: Option<IpAddr>,
    /// Whether it came over TLS (`aws:SecureTransport`).
    pub secure: bool,
    /// The `Referer` header (`aws:Referer`).
    pub referer: Option<&'a str>,
    /// The listing prefix (`s3:prefix`).
    pub prefix: Option<&'a str>,
}

/// What a policy says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A statement denies it: nothing else can allow it.
    Deny,
    /// A statement allows it.
    Allow,
    /// No statement applies.
    NoMatch,
}

/// One or many strings (policy JSON allows both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Many.
    Many(Vec<String>),
}

impl OneOrMany {
    fn iter(&self) -> impl Iterator<Item = &str> {
        let v: Vec<&str> = match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        };
        v.into_iter()
    }
}

/// A statement's principal: `"*"` or `{"AWS": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Principal {
    /// `"*"`: anyone, signed or not.
    Any(String),
    /// `{"AWS": "name" | ["name", "arn:aws:iam::…:user/name", "*"]}`.
    Aws {
        /// The principals.
        #[serde(rename = "AWS")]
        aws: OneOrMany,
    },
}

/// One statement of a bucket policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Statement {
    /// Optional name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// `Allow` or `Deny`.
    pub effect: String,
    /// Whom it is about.
    pub principal: Principal,
    /// Actions (`s3:GetObject`, `s3:*`, `s3:Get*`).
    pub action: OneOrMany,
    /// Resources (`arn:aws:s3:::bucket`, `arn:aws:s3:::bucket/prefix/*`).
    pub resource: OneOrMany,
    /// Conditions: operator → key → values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub condition: BTreeMap<String, BTreeMap<String, OneOrMany>>,
}

/// A bucket policy (AWS policy JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Policy {
    /// `2012-10-17` (or `2008-10-17`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Optional id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The statements.
    pub statement: Vec<Statement>,
}

/// Why a policy is refused (S3 answers `400 MalformedPolicy`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not policy JSON.
    #[error("policies must be valid JSON: {0}")]
    Json(String),
    /// No statements.
    #[error("a policy needs at least one statement")]
    Empty,
    /// An effect other than Allow/Deny.
    #[error("invalid effect: {0}")]
    Effect(String),
    /// An action outside `s3:`.
    #[error("policy has invalid action: {0}")]
    Action(String),
    /// A resource outside this bucket.
    #[error("policy has invalid resource: {0} (resources must be in bucket {1})")]
    Resource(String, String),
    /// A condition operator or key not supported.
    #[error("unsupported condition {0}")]
    Condition(String),
}

/// Condition operators understood (with `…IfExists` variants of the string ones).
const OPERATORS: [&str; 8] = [
    "StringEquals",
    "StringNotEquals",
    "StringLike",
    "StringNotLike",
    "IpAddress",
    "NotIpAddress",
    "Bool",
    "Null",
];

/// Condition keys understood.
const KEYS: [&str; 5] = [
    "aws:SourceIp",
    "aws:SecureTransport",
    "aws:Referer",
    "s3:prefix",
    "aws:username",
];

impl Policy {
    /// Parses and checks a policy for `bucket`.
    pub fn parse(json: &str, bucket: &str) -> Result<Policy, PolicyError> {
        let p: Policy = serde_json::from_str(json).map_err(|e| PolicyError::Json(e.to_string()))?;
        if p.statement.is_empty() {
            return Err(PolicyError::Empty);
        }
        for s in &p.statement {
            if s.effect != "Allow" && s.effect != "Deny" {
                return Err(PolicyError::Effect(s.effect.clone()));
            }
            if let Some(a) = s.action.iter().find(|a| *a != "*" && !a.starts_with("s3:")) {
                return Err(PolicyError::Action(a.to_string()));
            }
            let arn = format!("arn:aws:s3:::{bucket}");
            if let Some(r) = s
                .resource
                .iter()
                .find(|r| *r != arn && !r.starts_with(&format!("{arn}/")))
            {
                return Err(PolicyError::Resource(r.to_string(), bucket.to_string()));
            }
            for (op, keys) in &s.condition {
                let base = op.strip_suffix("IfExists").unwrap_or(op);
                if !OPERATORS.contains(&base) {
                    return Err(PolicyError::Condition(op.clone()));
                }
                if let Some(k) = keys.keys().find(|k| !KEYS.contains(&k.as_str())) {
                    return Err(PolicyError::Condition(k.clone()));
                }
            }
        }
        Ok(p)
    }

    /// Does the policy allow anyone without keys to do something (GetBucketPolicyStatus)?
    pub fn is_public(&self) -> bool {
        self.statement.iter().any(|s| {
            s.effect == "Allow"
                && s.condition.is_empty()
                && match &s.principal {
                    Principal::Any(p) => p == "*",
                    Principal::Aws { aws } => aws.iter().any(|p| p == "*"),
                }
        })
    }

    /// What the policy says of `r`: any matching Deny wins over any matching Allow.
    pub fn evaluate(&self, r: &Request<'_>) -> Decision {
        let mut allowed = false;
        for s in self.statement.iter().filter(|s| s.applies(r)) {
            if s.effect == "Deny" {
                return Decision::Deny;
            }
            allowed = true;
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::NoMatch
        }
    }
}

impl Statement {
    fn applies(&self, r: &Request<'_>) -> bool {
        let principal = match &self.principal {
            Principal::Any(p) => p == "*",
            Principal::Aws { aws } => aws.iter().any(|p| {
                p == "*"
                    || r.user.is_some_and(|u| {
                        p == u || p.rsplit_once(":user/").is_some_and(|(_, name)| name == u)
                    })
            }),
        };
        let resource = match r.key {
            Some(k) => format!("arn:aws:s3:::{}/{k}", r.bucket),
            None => format!("arn:aws:s3:::{}", r.bucket),
        };
        principal
            && self.action.iter().any(|a| like(a, r.action))
            && self.resource.iter().any(|p| like(p, &resource))
            && self.condition.iter().all(|(op, keys)| {
                keys.iter()
                    .all(|(key, values)| condition(op, key, values, r))
            })
    }
}

/// One condition: `op` on the request's value of `key` against `values` (any may match).
fn condition(op: &str, key: &str, values: &OneOrMany, r: &Request<'_>) -> bool {
    let actual: Option<String> = match key {
        "aws:SourceIp" => r.source_ip.map(|ip| ip.to_string()),
        "aws:SecureTransport" => Some(r.secure.to_string()),
        "aws:Referer" => r.referer.map(str::to_string),
        "s3:prefix" => r.prefix.map(str::to_string),
        "aws:username" => r.user.map(str::to_string),
        _ => None,
    };
    let (base, if_exists) = match op.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (op, false),
    };
    if base == "Null" {
        // Null: "true" means the key must be absent.
        return values.iter().any(|v| (v == "true") == actual.is_none());
    }
    let Some(actual) = actual else {
        return if_exists;
    };
    let any = |f: &dyn Fn(&str) -> bool| values.iter().any(f);
    match base {
        "StringEquals" => any(&|v| v == actual),
        "StringNotEquals" => !any(&|v| v == actual),
        "StringLike" => any(&|v| like(v, &actual)),
        "StringNotLike" => !any(&|v| like(v, &actual)),
        "Bool" => any(&|v| v.eq_ignore_ascii_case(&actual)),
        "IpAddress" | "NotIpAddress" => {
            let ip: Option<IpAddr> = actual.parse().ok();
            let hit = ip.is_some_and(|ip| values.iter().any(|cidr| in_cidr(ip, cidr)));
            hit == (base == "IpAddress")
        }
        _ => false,
    }
}

/// `ip` in `cidr` (`10.0.0.0/8`, or one address).
fn in_cidr(ip: IpAddr, cidr: &str) -> bool {
    let (net, bits) = match cidr.split_once('/') {
        Some((n, b)) => (n, b.parse::<u32>().ok()),
        None => (cidr, None),
    };
    let Ok(net) = net.parse::<IpAddr>() else {
        return false;
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// AWS's `StringLike` matching: `*` any run, `?` one character.
pub fn like(pattern: &str, s: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_matches_as_aws() {
        assert!(like("s3:*", "s3:GetObject"));
        assert!(like("s3:Get*", "s3:GetObject"));
        assert!(!like("s3:Get*", "s3:PutObject"));
        assert!(like("arn:aws:s3:::b/a?c/*", "arn:aws:s3:::b/abc/x/y"));
        assert!(!like("arn:aws:s3:::b/*", "arn:aws:s3:::b"));
        assert!(like("*", ""));
    }

    #[test]
    fn cidr() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_cidr(ip("10.1.2.3"), "10.0.0.0/8"));
        assert!(!in_cidr(ip("11.1.2.3"), "10.0.0.0/8"));
        assert!(in_cidr(ip("127.0.0.1"), "127.0.0.1"));
        assert!(in_cidr(ip("::1"), "::1/128"));
        assert!(!in_cidr(ip("::1"), "10.0.0.0/8"));
    }

    #[test]
    fn conditions_and_validation() {
        let p = Policy::parse(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123:user/alice"},
                "Action":["s3:ListBucket"],"Resource":"arn:aws:s3:::b",
                "Condition":{"StringLike":{"s3:prefix":"home/alice/*"},
                             "IpAddress":{"aws:SourceIp":"127.0.0.0/8"}}}]}"#,
            "b",
        )
        .unwrap();
        let r = Request {
            user: Some("alice"),
            action: "s3:ListBucket",
            bucket: "b",
            prefix: Some("home/alice/x"),
            source_ip: Some("127.0.0.1".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(p.evaluate(&r), Decision::Allow);
        assert_eq!(
            p.evaluate(&Request {
                prefix: Some("home/bob/"),
                ..r.clone()
            }),
            Decision::NoMatch
        );
        assert_eq!(
            p.evaluate(&Request {
                source_ip: Some("10.0.0.1".parse().unwrap()),
                ..r.clone()
            }),
            Decision::NoMatch
        );
        assert!(!p.is_public());
        let bad = |j: &str| Policy::parse(j, "b").unwrap_err();
        assert!(matches!(bad("nope"), PolicyError::Json(_)));
        assert!(matches!(bad(r#"{"Statement":[]}"#), PolicyError::Empty));
        assert!(matches!(
            bad(
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::other/*"}]}"#
            ),
            PolicyError::Resource(..)
        ));
        assert!(matches!(
            bad(
                r#"{"Statement":[{"Effect":"Maybe","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b"}]}"#
            ),
            PolicyError::Effect(_)
        ));
        assert!(matches!(
            bad(
                r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b","Condition":{"DateGreaterThan":{"aws:CurrentTime":"2020"}}}]}"#
            ),
            PolicyError::Condition(_)
        ));
    }

    #[test]
    fn canned_acls() {
        let get = Request {
            action: "s3:GetObject",
            bucket: "b",
            ..Default::default()
        };
        let put = Request {
            action: "s3:PutObject",
            ..get.clone()
        };
        assert!(!CannedAcl::Private.allows(&get));
        assert!(CannedAcl::PublicRead.allows(&get) && !CannedAcl::PublicRead.allows(&put));
        assert!(CannedAcl::PublicReadWrite.allows(&put));
        assert!(!CannedAcl::AuthenticatedRead.allows(&get));
        assert!(CannedAcl::AuthenticatedRead.allows(&Request {
            user: Some("u"),
            ..get
        }));
    }
}
