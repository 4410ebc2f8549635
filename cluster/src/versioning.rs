//! S3 object versioning as the cluster agrees on it: a bucket's state, and the version id of
//! a write.
//!
//! A version id is derived from the write's stamp ([`crate::proto::ObjectMeta::version`]),
//! which the gateway gives every write and which is unique and strictly increasing per key. So
//! every copy of a version has the same id without asking anyone, and the id orders versions
//! newest first. An object written while versioning was off or suspended is the `null`
//! version (`version_id: None`). Not here: where versions are stored (the target's index) or
//! how S3 spells them on the wire (the gateway).

use serde::{Deserialize, Serialize};

use crate::proto::ObjectMeta;

/// A bucket's versioning state, as S3 has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Versioning {
    /// Never enabled: every key has one version, `null`, replaced by each write.
    #[default]
    Off,
    /// Each write adds a version with its own id; a plain delete adds a delete marker.
    Enabled,
    /// Writes and plain deletes replace the `null` version; older versions are kept.
    Suspended,
}

impl Versioning {
    /// True for the default, so records leave it out.
    pub fn is_off(&self) -> bool {
        *self == Versioning::Off
    }

    /// The version id a write stamped `stamp` gets in this state (`None`: the `null` version).
    ///
    /// ```
    /// use aisle_cluster::versioning::{Versioning, version_id, stamp_of};
    /// let id = Versioning::Enabled.id_for(1_700_000_000_000_000_123).unwrap();
    /// assert_eq!(stamp_of(&id), Some(1_700_000_000_000_000_123));
    /// assert_eq!(Versioning::Suspended.id_for(5), None);
    /// assert_eq!(version_id(5).len(), 20);
    /// ```
    pub fn id_for(&self, stamp: u64) -> Option<String> {
        match self {
            Versioning::Enabled => Some(version_id(stamp)),
            Versioning::Off | Versioning::Suspended => None,
        }
    }
}

/// The id S3 gives the version written without versioning.
pub const NULL_VERSION: &str = "null";

/// The version id of a write stamped `stamp`: its decimal digits, zero-padded to 20, so ids
/// of one key sort like their stamps and never equal [`NULL_VERSION`].
pub fn version_id(stamp: u64) -> String {
    format!("{stamp:020}")
}

/// The stamp a version id was derived from; `None` when `id` is not one aisle made.
pub fn stamp_of(id: &str) -> Option<u64> {
    if id.len() != 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// How S3 spells the version id of a record: its id, or `null`.
pub fn id_or_null(version_id: Option<&str>) -> String {
    version_id.unwrap_or(NULL_VERSION).to_string()
}

/// How a client names a version: the `null` one, or one with an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    /// The `null` version.
    Null,
    /// The version of this stamp.
    Stamp(u64),
}

impl VersionRef {
    /// Parse a client's version id; `None` when aisle never made it (S3 answers 400).
    pub fn parse(id: &str) -> Option<VersionRef> {
        if id == NULL_VERSION {
            return Some(VersionRef::Null);
        }
        stamp_of(id).map(VersionRef::Stamp)
    }

    /// The version a record is: its id's, or the `null` one.
    pub fn of(meta: &ObjectMeta) -> VersionRef {
        match meta.version_id {
            Some(_) => VersionRef::Stamp(meta.stamp()),
            None => VersionRef::Null,
        }
    }

    /// Is the record `meta` this version?
    pub fn matches(&self, meta: &ObjectMeta) -> bool {
        match self {
            VersionRef::Null => meta.version_id.is_none(),
            VersionRef::Stamp(s) => meta.version_id.is_some() && *s == meta.stamp(),
        }
    }

    /// The version id S3 shows for it.
    pub fn id(&self) -> String {
        match self {
            VersionRef::Null => NULL_VERSION.into(),
            VersionRef::Stamp(s) => version_id(*s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_like_stamps_and_refuse_what_aisle_never_made() {
        assert!(version_id(9) < version_id(10));
        assert_eq!(VersionRef::parse("null"), Some(VersionRef::Null));
        assert_eq!(VersionRef::parse("abc"), None);
        assert_eq!(VersionRef::parse("1234"), None);
        let r = VersionRef::parse(&version_id(42)).unwrap();
        let mut meta = ObjectMeta {
            version: 42,
            version_id: Some(version_id(42)),
            ..Default::default()
        };
        assert!(r.matches(&meta) && VersionRef::of(&meta) == r);
        assert_eq!(VersionRef::parse(&r.id()), Some(r));
        meta.version_id = None;
        assert!(!r.matches(&meta));
        assert!(VersionRef::Null.matches(&meta) && VersionRef::of(&meta) == VersionRef::Null);
        assert_eq!(id_or_null(None), "null");
    }
}
