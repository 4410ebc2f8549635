//! A bucket's lifecycle rules and what they decide about one object or one pending upload.
//!
//! The rules travel with the bucket in the cluster metadata
//! ([`crate::map::BucketProps::lifecycle`]). Each target evaluates them over the objects it is
//! the first owner of and the uploads it holds; expired objects are then deleted through the
//! gateway (which stamps the deletion like any other), pending uploads aborted where they live.
//! This module only decides: it knows nothing of stores or HTTP.
//!
//! A "day" is a parameter, so tests can run a day in seconds. As S3 does, a rule of `days: N`
//! makes an object due at the first day boundary (midnight UTC for real days) at least N days
//! after its last modification.
//!
//! ```
//! use aisle_cluster::lifecycle::{Candidate, LifecycleRule, RuleFilter};
//! let rule = LifecycleRule {
//!     filter: RuleFilter { prefix: "tmp/".into(), ..Default::default() },
//!     expiration_days: Some(1),
//!     ..LifecycleRule::enabled()
//! };
//! let day = 86_400_000;
//! let obj = Candidate { key: "tmp/a", size: 10, mtime_ms: 0, tags: &Default::default() };
//! assert!(!rule.expires(&obj, day - 1, day));
//! assert!(rule.expires(&obj, day, day));
//! let other = Candidate { key: "keep/a", ..obj };
//! assert!(!rule.expires(&other, 10 * day, day));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most rules one bucket's configuration may hold, as S3.
pub const MAX_LIFECYCLE_RULES: usize = 1000;
/// A real day, in milliseconds.
pub const DAY_MS: i64 = 86_400_000;

/// Which objects a rule applies to: all of the conditions given (S3's `Filter`, with `And`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleFilter {
    /// Key prefix ("" is every key).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Tags the object must carry, each with this value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Only objects larger than this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_greater_than: Option<u64>,
    /// Only objects smaller than this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_less_than: Option<u64>,
}

/// One lifecycle rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRule {
    /// The rule's name (unique in the configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `Status: Enabled`; a disabled rule is kept but does nothing.
    pub enabled: bool,
    /// Which objects.
    #[serde(default)]
    pub filter: RuleFilter,
    /// Expire objects this many days after their last modification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_days: Option<u32>,
    /// Expire objects from this instant on (Unix milliseconds; S3 requires midnight UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration_date_ms: Option<i64>,
    /// `ExpiredObjectDeleteMarker`: remove a delete marker that is the only version of its key
    /// left (in a bucket with versioning).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired_object_delete_marker: bool,
    /// `NoncurrentVersionExpiration` days: remove a noncurrent version this many days after a
    /// newer version replaced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noncurrent_days: Option<u32>,
    /// `NewerNoncurrentVersions`: with `noncurrent_days`, keep this many of the newest
    /// noncurrent versions of each key whatever their age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newer_noncurrent: Option<u32>,
    /// Abort multipart uploads this many days after they were started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_incomplete_days: Option<u32>,
}

/// What a rule is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The key.
    pub key: &'a str,
    /// Its size in bytes.
    pub size: u64,
    /// Last modification, Unix milliseconds.
    pub mtime_ms: i64,
    /// Its tags.
    pub tags: &'a BTreeMap<String, String>,
}

/// Why a configuration is refused (S3 answers these with 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleError {
    /// No rules, or more than [`MAX_LIFECYCLE_RULES`].
    #[error("a lifecycle configuration holds 1 to {MAX_LIFECYCLE_RULES} rules, this one holds {0}")]
    RuleCount(usize),
    /// Two rules with one id.
    #[error("rule ids must be unique: {0} is given twice")]
    DuplicateId(String),
    /// A rule that would do nothing.
    #[error("rule {0} specifies no action")]
    NoAction(String),
    /// Days of 0 or less.
    #[error("rule {0}: days must be a positive integer")]
    Days(String),
    /// Both days and a date.
    #[error("rule {0}: an expiration gives days or a date, not both")]
    DaysAndDate(String),
    /// A date that is not midnight UTC.
    #[error("rule {0}: the expiration date must be midnight UTC (ISO 8601)")]
    Date(String),
    /// A size range that holds nothing.
    #[error("rule {0}: ObjectSizeGreaterThan must be smaller than ObjectSizeLessThan")]
    SizeRange(String),
}

impl LifecycleRule {
    /// An enabled rule that does nothing yet (for building rules field by field).
    pub fn enabled() -> LifecycleRule {
        LifecycleRule {
            id: None,
            enabled: true,
            filter: RuleFilter::default(),
            expiration_days: None,
            expiration_date_ms: None,
            expired_object_delete_marker: false,
            noncurrent_days: None,
            newer_noncurrent: None,
            abort_incomplete_days: None,
        }
    }

    /// Checks a whole configuration as S3 does before storing it.
    pub fn validate(rules: &[LifecycleRule]) -> Result<(), LifecycleError> {
        if rules.is_empty() || rules.len() > MAX_LIFECYCLE_RULES {
            return Err(LifecycleError::RuleCount(rules.len()));
        }
        let mut ids = std::collections::BTreeSet::new();
        for r in rules {
            let name = r.id.clone().unwrap_or_else(|| "(unnamed)".into());
            if let Some(id) = &r.id
                && !ids.insert(id.as_str())
            {
                return Err(LifecycleError::DuplicateId(id.clone()));
            }
            if r.expiration_days.is_none()
                && r.expiration_date_ms.is_none()
                && !r.expired_object_delete_marker
                && r.noncurrent_days.is_none()
                && r.abort_incomplete_days.is_none()
            {
                return Err(LifecycleError::NoAction(name));
            }
            if [
                r.expiration_days,
                r.noncurrent_days,
                r.abort_incomplete_days,
            ]
            .contains(&Some(0))
            {
                return Err(LifecycleError::Days(name));
            }
            if r.expiration_days.is_some() && r.expiration_date_ms.is_some() {
                return Err(LifecycleError::DaysAndDate(name));
            }
            if r.expiration_date_ms
                .is_some_and(|d| d.rem_euclid(DAY_MS) != 0)
            {
                return Err(LifecycleError::Date(name));
            }
            if let (Some(gt), Some(lt)) = (r.filter.size_greater_than, r.filter.size_less_than)
                && gt >= lt
            {
                return Err(LifecycleError::SizeRange(name));
            }
        }
        Ok(())
    }

    /// Does the rule's filter take this object?
    pub fn applies_to(&self, c: &Candidate<'_>) -> bool {
        let f = &self.filter;
        self.enabled
            && c.key.starts_with(&f.prefix)
            && f.tags.iter().all(|(k, v)| c.tags.get(k) == Some(v))
            && f.size_greater_than.is_none_or(|gt| c.size > gt)
            && f.size_less_than.is_none_or(|lt| c.size < lt)
    }

    /// Is the object due for expiration at `now_ms`, with days of `day_ms`?
    pub fn expires(&self, c: &Candidate<'_>, now_ms: i64, day_ms: i64) -> bool {
        if !self.applies_to(c) {
            return false;
        }
        let by_days = self
            .expiration_days
            .is_some_and(|d| now_ms >= due(c.mtime_ms, d, day_ms));
        let by_date = self.expiration_date_ms.is_some_and(|d| now_ms >= d);
        by_days || by_date
    }

    /// Is a noncurrent version due for removal at `now_ms`? It became noncurrent at
    /// `noncurrent_since_ms` (when the next newer version was written) and `newer` noncurrent
    /// versions of its key are newer than it.
    ///
    /// ```
    /// use aisle_cluster::lifecycle::{Candidate, LifecycleRule};
    /// let rule = LifecycleRule { noncurrent_days: Some(2), newer_noncurrent: Some(1), ..LifecycleRule::enabled() };
    /// let v = Candidate { key: "k", size: 1, mtime_ms: 0, tags: &Default::default() };
    /// let day = 10;
    /// assert!(!rule.expires_noncurrent(&v, 0, 1, 19, day), "two days have not passed");
    /// assert!(rule.expires_noncurrent(&v, 0, 1, 20, day));
    /// assert!(!rule.expires_noncurrent(&v, 0, 0, 20, day), "the newest noncurrent one is kept");
    /// ```
    pub fn expires_noncurrent(
        &self,
        c: &Candidate<'_>,
        noncurrent_since_ms: i64,
        newer: usize,
        now_ms: i64,
        day_ms: i64,
    ) -> bool {
        self.applies_to(c)
            && self
                .noncurrent_days
                .is_some_and(|d| now_ms >= due(noncurrent_since_ms, d, day_ms))
            && self
                .newer_noncurrent
                .is_none_or(|keep| newer >= keep as usize)
    }

    /// Does the rule remove a delete marker of `key` that is the only version left? (Markers
    /// have no size or tags: only the prefix applies, as in S3.)
    pub fn removes_marker(&self, key: &str) -> bool {
        self.enabled && self.expired_object_delete_marker && key.starts_with(&self.filter.prefix)
    }

    /// Is a multipart upload of `key` started at `initiated_ms` due for abort at `now_ms`?
    /// (Only the prefix of the filter applies: an upload has no tags or size yet, as in S3.)
    pub fn aborts(&self, key: &str, initiated_ms: i64, now_ms: i64, day_ms: i64) -> bool {
        self.enabled
            && key.starts_with(&self.filter.prefix)
            && self
                .abort_incomplete_days
                .is_some_and(|d| now_ms >= due(initiated_ms, d, day_ms))
    }
}

/// The first day boundary at least `days` days after `from_ms`.
fn due(from_ms: i64, days: u32, day_ms: i64) -> i64 {
    let day_ms = day_ms.max(1);
    let at = from_ms.saturating_add((days as i64).saturating_mul(day_ms));
    at.div_euclid(day_ms)
        .saturating_add(i64::from(at.rem_euclid(day_ms) != 0))
        .saturating_mul(day_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand<'a>(
        key: &'a str,
        size: u64,
        mtime_ms: i64,
        tags: &'a BTreeMap<String, String>,
    ) -> Candidate<'a> {
        Candidate {
            key,
            size,
            mtime_ms,
            tags,
        }
    }

    #[test]
    fn due_rounds_up_to_the_next_day_boundary() {
        assert_eq!(due(0, 1, 10), 10);
        assert_eq!(due(1, 1, 10), 20, "S3 rounds up to the next midnight");
        assert_eq!(due(10, 2, 10), 30);
    }

    #[test]
    fn filters_combine_with_and() {
        let tags = BTreeMap::from([("temp".to_string(), "yes".to_string())]);
        let none = BTreeMap::new();
        let rule = LifecycleRule {
            filter: RuleFilter {
                prefix: "scratch/".into(),
                tags: tags.clone(),
                size_greater_than: Some(10),
                size_less_than: Some(1000),
            },
            expiration_days: Some(1),
            ..LifecycleRule::enabled()
        };
        assert!(rule.expires(&cand("scratch/a", 100, 0, &tags), 10, 10));
        assert!(
            !rule.expires(&cand("scratch/a", 100, 0, &none), 10, 10),
            "tag missing"
        );
        assert!(
            !rule.expires(&cand("scratch/a", 5, 0, &tags), 10, 10),
            "too small"
        );
        assert!(
            !rule.expires(&cand("scratch/a", 1000, 0, &tags), 10, 10),
            "too large"
        );
        assert!(
            !rule.expires(&cand("keep/a", 100, 0, &tags), 10, 10),
            "other prefix"
        );
        let disabled = LifecycleRule {
            enabled: false,
            ..rule
        };
        assert!(!disabled.expires(&cand("scratch/a", 100, 0, &tags), 10, 10));
    }

    #[test]
    fn dates_and_uploads() {
        let none = BTreeMap::new();
        let by_date = LifecycleRule {
            expiration_date_ms: Some(2 * DAY_MS),
            ..LifecycleRule::enabled()
        };
        assert!(!by_date.expires(&cand("k", 1, 0, &none), 2 * DAY_MS - 1, DAY_MS));
        assert!(by_date.expires(&cand("k", 1, 0, &none), 2 * DAY_MS, DAY_MS));
        let abort = LifecycleRule {
            abort_incomplete_days: Some(2),
            ..LifecycleRule::enabled()
        };
        assert!(!abort.aborts("k", 0, 19, 10));
        assert!(abort.aborts("k", 0, 20, 10));
        assert!(
            !abort.expires(&cand("k", 1, 0, &none), 1000, 10),
            "no expiration action"
        );
    }

    #[test]
    fn validation() {
        let ok = LifecycleRule {
            id: Some("a".into()),
            expiration_days: Some(3),
            ..LifecycleRule::enabled()
        };
        assert_eq!(LifecycleRule::validate(std::slice::from_ref(&ok)), Ok(()));
        assert_eq!(
            LifecycleRule::validate(&[ok.clone(), ok.clone()]),
            Err(LifecycleError::DuplicateId("a".into()))
        );
        let nothing = LifecycleRule {
            expiration_days: None,
            ..ok.clone()
        };
        assert!(matches!(
            LifecycleRule::validate(&[nothing]),
            Err(LifecycleError::NoAction(_))
        ));
        let zero = LifecycleRule {
            expiration_days: Some(0),
            ..ok.clone()
        };
        assert!(matches!(
            LifecycleRule::validate(&[zero]),
            Err(LifecycleError::Days(_))
        ));
        let not_midnight = LifecycleRule {
            expiration_days: None,
            expiration_date_ms: Some(DAY_MS + 1),
            ..ok
        };
        assert!(matches!(
            LifecycleRule::validate(&[not_midnight]),
            Err(LifecycleError::Date(_))
        ));
    }
}
