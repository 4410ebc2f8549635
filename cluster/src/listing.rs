//! The rules of an S3 listing, shared by the target that scans and the gateway that merges.
//!
//! A listing walks keys in byte order. With a delimiter, every key whose remainder after the
//! prefix contains the delimiter "rolls up" into one common prefix, reported once. A listing is
//! resumed from the last item it returned (a key or a common prefix): [`resume_start`] turns
//! that item into the first byte string the next page may return, skipping the whole group of a
//! rolled-up prefix, so a paginated walk never repeats an item and never loops — also while
//! writes go on.

use std::collections::BinaryHeap;

use serde::{Deserialize, Serialize};

/// One entry of a target's listing page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ListItem {
    /// An object.
    Object(ObjectEntry),
    /// A common prefix (ends with the delimiter).
    Prefix(String),
}

impl ListItem {
    /// The key or the common prefix.
    pub fn name(&self) -> &str {
        match self {
            ListItem::Object(o) => &o.key,
            ListItem::Prefix(p) => p,
        }
    }

    /// What this item sorts by: its name, and for a version of a key the key followed by a
    /// NUL and the inverted stamp, so a key's versions follow each other newest first and
    /// come before every longer key.
    pub fn sort_name(&self) -> std::borrow::Cow<'_, str> {
        match self {
            ListItem::Object(ObjectEntry {
                key,
                version: Some(v),
                ..
            }) => format!("{key}\0{:020}", u64::MAX - v.stamp).into(),
            other => other.name().into(),
        }
    }
}

/// What a listing reports of one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// The object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag without quotes.
    pub etag: String,
    /// Last modification, Unix milliseconds.
    pub mtime_ms: i64,
    /// In a listing of versions: which version of the key this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<VersionEntry>,
}

/// One version in a listing of versions ([`crate::proto::ListQuery::versions`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEntry {
    /// Version id (`None`: the `null` version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Its write stamp: orders the versions of a key, newest first.
    pub stamp: u64,
    /// The key's current version (or latest delete marker).
    pub latest: bool,
    /// A delete marker.
    #[serde(default)]
    pub delete_marker: bool,
}

/// One target's page: items in order, and whether more follow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage {
    /// Items in byte order of their names.
    pub items: Vec<ListItem>,
    /// True when the target holds more items after the last one.
    pub truncated: bool,
}

/// The common prefix that `key` rolls up into, if any.
///
/// ```
/// use aisle_cluster::listing::common_prefix;
/// assert_eq!(common_prefix("a/b/c", "a/", Some("/")), Some("a/b/"));
/// assert_eq!(common_prefix("a/b", "a/", Some("/")), None);
/// assert_eq!(common_prefix("x-1-y", "", Some("-")), Some("x-"));
/// ```
pub fn common_prefix<'k>(key: &'k str, prefix: &str, delimiter: Option<&str>) -> Option<&'k str> {
    let delimiter = delimiter.filter(|d| !d.is_empty())?;
    let rest = key.strip_prefix(prefix)?;
    let at = rest.find(delimiter)?;
    Some(&key[..prefix.len() + at + delimiter.len()])
}

/// Smallest byte string greater than every string that starts with `p`; `None` if there is none.
pub fn prefix_successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xff {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// Where the scan of the next page starts, given the last item returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Strictly after this name.
    After(Vec<u8>),
    /// At this byte string or after it (used to skip a whole rolled-up group).
    AtOrAfter(Vec<u8>),
    /// Nothing can follow.
    End,
}

/// Turn the last returned item into the start of the next scan.
///
/// ```
/// use aisle_cluster::listing::{resume_start, Start};
/// // After the common prefix "a/", skip every key under it.
/// assert_eq!(resume_start("a/", "", Some("/")), Start::AtOrAfter(b"a0".to_vec()));
/// assert_eq!(resume_start("a", "", Some("/")), Start::After(b"a".to_vec()));
/// ```
pub fn resume_start(last: &str, prefix: &str, delimiter: Option<&str>) -> Start {
    match common_prefix(last, prefix, delimiter) {
        Some(group) => match prefix_successor(group.as_bytes()) {
            Some(s) => Start::AtOrAfter(s),
            None => Start::End,
        },
        None => Start::After(last.as_bytes().to_vec()),
    }
}

struct Head {
    name: String,
    page: usize,
}

impl PartialEq for Head {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.page == o.page
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Head {
    // Reversed: BinaryHeap is a max-heap, we want the smallest name first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.name
            .as_bytes()
            .cmp(self.name.as_bytes())
            .then(o.page.cmp(&self.page))
    }
}

/// Merge the targets' pages into one page of at most `max` items, in byte order, with each
/// common prefix once. The result is truncated when any target has items left.
///
/// ```
/// use aisle_cluster::listing::{merge_pages, ListItem, ListPage};
/// let p = |n: &str| ListItem::Prefix(n.into());
/// let a = ListPage { items: vec![p("a/"), p("c/")], truncated: false };
/// let b = ListPage { items: vec![p("b/"), p("c/")], truncated: false };
/// let merged = merge_pages(vec![a, b], 10);
/// let names: Vec<_> = merged.items.iter().map(|i| i.name().to_string()).collect();
/// assert_eq!(names, ["a/", "b/", "c/"]);
/// assert!(!merged.truncated);
/// ```
pub fn merge_pages(pages: Vec<ListPage>, max: usize) -> ListPage {
    let any_truncated = pages.iter().any(|p| p.truncated);
    let mut iters: Vec<std::vec::IntoIter<ListItem>> =
        pages.into_iter().map(|p| p.items.into_iter()).collect();
    let mut pending: Vec<Option<ListItem>> = iters.iter_mut().map(|i| i.next()).collect();
    let mut heap = BinaryHeap::new();
    for (page, item) in pending.iter().enumerate() {
        if let Some(item) = item {
            heap.push(Head {
                name: item.sort_name().into_owned(),
                page,
            });
        }
    }
    let mut out: Vec<ListItem> = Vec::new();
    let mut leftover = false;
    while let Some(Head { name, page }) = heap.pop() {
        let item = pending[page].take().expect("heap entry has a pending item");
        if let Some(next) = iters[page].next() {
            heap.push(Head {
                name: next.sort_name().into_owned(),
                page,
            });
            pending[page] = Some(next);
        }
        if out.last().is_some_and(|l| l.sort_name() == name) {
            continue; // the same common prefix (or copy of a version) from another target
        }
        if out.len() == max {
            leftover = true;
            break;
        }
        out.push(item);
    }
    ListPage {
        items: out,
        truncated: leftover || any_truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(k: &str) -> ListItem {
        ListItem::Object(ObjectEntry {
            key: k.into(),
            size: 0,
            etag: String::new(),
            mtime_ms: 0,
            version: None,
        })
    }

    fn ver(k: &str, stamp: u64) -> ListItem {
        ListItem::Object(ObjectEntry {
            key: k.into(),
            size: 0,
            etag: String::new(),
            mtime_ms: 0,
            version: Some(VersionEntry {
                id: None,
                stamp,
                latest: false,
                delete_marker: false,
            }),
        })
    }

    #[test]
    fn versions_merge_by_key_then_newest_first_and_copies_count_once() {
        let page = |items| ListPage {
            items,
            truncated: false,
        };
        // Two targets holding copies of some versions.
        let a = page(vec![ver("a", 5), ver("a", 3), ver("b", 1)]);
        let b = page(vec![ver("a", 5), ver("a/x", 9), ver("b", 1)]);
        let merged = merge_pages(vec![a, b], 10);
        let got: Vec<(String, u64)> = merged
            .items
            .iter()
            .map(|i| match i {
                ListItem::Object(o) => (o.key.clone(), o.version.as_ref().unwrap().stamp),
                ListItem::Prefix(p) => (p.clone(), 0),
            })
            .collect();
        let want = [("a", 5), ("a", 3), ("a/x", 9), ("b", 1)];
        assert_eq!(
            got,
            want.map(|(k, s)| (k.to_string(), s)).to_vec(),
            "a key's versions precede longer keys"
        );
    }

    #[test]
    fn merge_respects_max_and_reports_truncation() {
        let a = ListPage {
            items: vec![obj("a"), obj("c"), obj("e")],
            truncated: false,
        };
        let b = ListPage {
            items: vec![obj("b"), obj("d")],
            truncated: false,
        };
        let m = merge_pages(vec![a, b], 4);
        let names: Vec<_> = m.items.iter().map(|i| i.name()).collect();
        assert_eq!(names, ["a", "b", "c", "d"]);
        assert!(m.truncated);
    }

    #[test]
    fn successor_carries_over_ff() {
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
    }

    #[test]
    fn byte_order_not_char_order() {
        // "é" (0xC3 0xA9) sorts after "z" in byte order, as S3 lists.
        let a = ListPage {
            items: vec![obj("z"), obj("é")],
            truncated: false,
        };
        let m = merge_pages(vec![a, ListPage::default()], 10);
        assert_eq!(m.items[1].name(), "é");
    }
}
