//! A bucket's CORS rules and S3's way of matching a browser request against them.
//!
//! The rules travel with the bucket in the cluster metadata ([`crate::map::BucketProps::cors`]);
//! the gateway answers preflight `OPTIONS` requests and adds `Access-Control-*` headers to
//! actual ones from [`CorsRule::matching`]. This module knows nothing of HTTP: it matches
//! strings.
//!
//! ```
//! use aisle_cluster::cors::CorsRule;
//! let rules = vec![CorsRule {
//!     allowed_origins: vec!["https://*.example.com".into()],
//!     allowed_methods: vec!["GET".into(), "PUT".into()],
//!     allowed_headers: vec!["x-amz-*".into(), "content-type".into()],
//!     ..Default::default()
//! }];
//! let hit = CorsRule::matching(&rules, "https://app.example.com", "PUT", &["Content-Type"]);
//! assert!(hit.is_some());
//! assert!(CorsRule::matching(&rules, "https://evil.test", "GET", &[]).is_none());
//! assert!(CorsRule::matching(&rules, "https://app.example.com", "DELETE", &[]).is_none());
//! ```

use serde::{Deserialize, Serialize};

/// Methods a CORS rule may allow, as S3.
pub const CORS_METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "HEAD"];
/// Most rules one bucket's configuration may hold, as S3.
pub const MAX_CORS_RULES: usize = 100;

/// One rule of a bucket's CORS configuration (S3's `CORSRule`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    /// The rule's optional name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Origins allowed, each with at most one `*` wildcard (`*` alone: any origin).
    pub allowed_origins: Vec<String>,
    /// Methods allowed: some of [`CORS_METHODS`].
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for, case-insensitive, each with at most one `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_headers: Vec<String>,
    /// Response headers the browser may show the page.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache the preflight's answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

/// Why a configuration is refused (S3 answers these with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorsError {
    /// No rules, or more than [`MAX_CORS_RULES`].
    #[error("a CORS configuration holds 1 to {MAX_CORS_RULES} rules, this one holds {0}")]
    RuleCount(usize),
    /// A rule names no origin or no method.
    #[error("every CORS rule needs at least one AllowedOrigin and one AllowedMethod")]
    Incomplete,
    /// A method outside [`CORS_METHODS`].
    #[error("found unsupported HTTP method in CORS config: {0}")]
    Method(String),
    /// An origin or header with more than one `*`.
    #[error("{0} can not have more than one wildcard")]
    Wildcards(String),
}

impl CorsRule {
    /// Checks a whole configuration as S3 does before storing it.
    pub fn validate(rules: &[CorsRule]) -> Result<(), CorsError> {
        if rules.is_empty() || rules.len() > MAX_CORS_RULES {
            return Err(CorsError::RuleCount(rules.len()));
        }
        for r in rules {
            if r.allowed_origins.is_empty() || r.allowed_methods.is_empty() {
                return Err(CorsError::Incomplete);
            }
            if let Some(m) = r
                .allowed_methods
                .iter()
                .find(|m| !CORS_METHODS.contains(&m.as_str()))
            {
                return Err(CorsError::Method(m.clone()));
            }
            if let Some(w) = r
                .allowed_origins
                .iter()
                .chain(&r.allowed_headers)
                .find(|p| p.matches('*').count() > 1)
            {
                return Err(CorsError::Wildcards(w.clone()));
            }
        }
        Ok(())
    }

    /// The first rule that allows `origin` to use `method` with `headers` (the headers a
    /// preflight asks for; none for an actual request), as S3 evaluates them: in order, the
    /// first match wins.
    pub fn matching<'a>(
        rules: &'a [CorsRule],
        origin: &str,
        method: &str,
        headers: &[&str],
    ) -> Option<&'a CorsRule> {
        rules.iter().find(|r| {
            r.allowed_origins.iter().any(|p| wildcard(p, origin))
                && r.allowed_methods.iter().any(|m| m == method)
                && headers.iter().all(|h| {
                    let h = h.to_ascii_lowercase();
                    r.allowed_headers
                        .iter()
                        .any(|p| wildcard(&p.to_ascii_lowercase(), &h))
                })
        })
    }

    /// Whether this rule allows any origin (`*`): the answer then says `*`, not the origin.
    pub fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }
}

/// `pattern` with at most one `*`, which matches any run of characters.
fn wildcard(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            s.len() >= head.len() + tail.len() && s.starts_with(head) && s.ends_with(tail)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("*", "https://a.test"));
        assert!(wildcard("https://*.test", "https://a.b.test"));
        assert!(!wildcard("https://*.test", "http://a.test"));
        assert!(!wildcard("ab*ba", "aba"), "head and tail may not overlap");
        assert!(wildcard("x-amz-*", "x-amz-date"));
    }

    #[test]
    fn validation() {
        let ok = CorsRule {
            allowed_origins: vec!["*".into()],
            allowed_methods: vec!["GET".into()],
            ..Default::default()
        };
        assert_eq!(CorsRule::validate(std::slice::from_ref(&ok)), Ok(()));
        assert_eq!(CorsRule::validate(&[]), Err(CorsError::RuleCount(0)));
        let bad_method = CorsRule {
            allowed_methods: vec!["PATCH".into()],
            ..ok.clone()
        };
        assert_eq!(
            CorsRule::validate(&[bad_method]),
            Err(CorsError::Method("PATCH".into()))
        );
        let two_stars = CorsRule {
            allowed_origins: vec!["https://*.*.test".into()],
            ..ok.clone()
        };
        assert!(matches!(
            CorsRule::validate(&[two_stars]),
            Err(CorsError::Wildcards(_))
        ));
        let no_origin = CorsRule {
            allowed_origins: vec![],
            ..ok
        };
        assert_eq!(CorsRule::validate(&[no_origin]), Err(CorsError::Incomplete));
    }

    #[test]
    fn first_matching_rule_wins_and_headers_must_all_be_allowed() {
        let rules = vec![
            CorsRule {
                id: Some("put".into()),
                allowed_origins: vec!["https://up.test".into()],
                allowed_methods: vec!["PUT".into()],
                allowed_headers: vec!["*".into()],
                ..Default::default()
            },
            CorsRule {
                id: Some("read".into()),
                allowed_origins: vec!["*".into()],
                allowed_methods: vec!["GET".into(), "HEAD".into()],
                ..Default::default()
            },
        ];
        let id = |o, m, h: &[&str]| CorsRule::matching(&rules, o, m, h).and_then(|r| r.id.clone());
        assert_eq!(
            id("https://up.test", "PUT", &["content-type", "x-amz-date"]),
            Some("put".into())
        );
        assert_eq!(id("https://up.test", "GET", &[]), Some("read".into()));
        assert_eq!(id("https://other.test", "PUT", &[]), None);
        // The read rule allows no request headers.
        assert_eq!(id("https://other.test", "GET", &["range"]), None);
    }
}
