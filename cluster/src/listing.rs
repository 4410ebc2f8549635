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
    /// The name this item sorts by.
    pub fn name(&self) -> &str {
        match self {
            ListItem::Object(o) => &o.key,
            ListItem::Prefix(p) => p,
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
                name: item.name().to_string(),
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
                name: next.name().to_string(),
                page,
            });
            pending[page] = Some(next);
        }
        if out.last().is_some_and(|l| l.name() == name) {
            continue; // the same common prefix from another target
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
        })
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
