//! Property tests (proptest) for the key ↔ storage mapping and the listing merge: arbitrary
//! keys (hostile ones included) stored across several targets' stores round-trip exactly, never
//! leave their mountpath, and a paginated walk — each store scanning its index, pages merged,
//! resumed from the last item — returns exactly the naive S3 listing, every item once.

use std::collections::BTreeSet;

use aisle_cluster::listing::{ListItem, ListPage, common_prefix, merge_pages};
use aisle_cluster::proto::{Commit, ListQuery, ObjectAttrs, WriteOptions};
use aisle_target::store::Store;
use proptest::prelude::*;

fn key_strategy() -> impl Strategy<Value = String> {
    // Short keys from an alphabet rich in separators and multi-byte characters.
    proptest::collection::vec(
        prop_oneof![
            Just("a"),
            Just("b"),
            Just("/"),
            Just("-"),
            Just(".."),
            Just("é"),
            Just(" "),
            Just("z")
        ],
        1..8,
    )
    .prop_map(|parts| parts.concat())
}

fn naive(keys: &BTreeSet<String>, prefix: &str, delimiter: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in keys.iter().filter(|k| k.starts_with(prefix)) {
        let name = common_prefix(k, prefix, delimiter).unwrap_or(k).to_string();
        if out.last() != Some(&name) {
            out.push(name);
        }
    }
    out
}

async fn put(store: &Store, key: &str) {
    let mp = store.mountpath_for("b", key);
    let mut t = store.create_temp(mp).await.unwrap();
    t.write(key.as_bytes().to_vec()).await.unwrap();
    t.finish().await.unwrap();
    let commit = Commit {
        size: key.len() as u64,
        md5: "0".repeat(32),
        checksums: Default::default(),
    };
    store
        .publish_object(
            ("b", key),
            t,
            &commit,
            ObjectAttrs::default(),
            &WriteOptions {
                version: 1,
                ..Default::default()
            },
            None,
        )
        .unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn paginated_walks_match_the_naive_listing(
        keys in proptest::collection::btree_set(key_strategy(), 1..60),
        prefix in prop_oneof![Just(""), Just("a"), Just("a/"), Just("b-")],
        delimiter in prop_oneof![Just(None), Just(Some("/")), Just(Some("-")), Just(Some("é"))],
        max in 1usize..9,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let stores: Vec<_> = (0..3)
            .map(|i| {
                let root = dir.path().join(format!("t{i}"));
                std::fs::create_dir_all(&root).unwrap();
                Store::open(&root.join("index.redb"), &[root.join("mp0"), root.join("mp1")]).unwrap()
            })
            .collect();
        rt.block_on(async {
            for (i, k) in keys.iter().enumerate() {
                put(&stores[i % 3], k).await;
            }
        });
        // Every key reads back exactly, from a file inside its mountpath.
        for (i, k) in keys.iter().enumerate() {
            let rec = stores[i % 3].get("b", k).unwrap();
            let path = stores[i % 3].segment_path(&rec.segments[0]);
            prop_assert!(path.starts_with(dir.path()) && !path.to_string_lossy().contains(".."));
            prop_assert_eq!(std::fs::read(&path).unwrap(), k.as_bytes());
        }
        // The paginated, merged walk equals the naive listing.
        let mut walked = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..1000 {
            let q = ListQuery { versions: false, after_version: None,
                bucket: "b".into(),
                prefix: prefix.to_string(),
                delimiter: delimiter.map(str::to_string),
                after: after.clone(),
                limit: max,
            };
            let pages: Vec<ListPage> = stores.iter().map(|s| s.list(&q).unwrap()).collect();
            let page = merge_pages(pages, max);
            prop_assert!(page.items.len() <= max);
            walked.extend(page.items.iter().map(|i| i.name().to_string()));
            if !page.truncated {
                break;
            }
            after = page.items.last().map(ListItem::name).map(str::to_string);
        }
        prop_assert_eq!(walked, naive(&keys, prefix, delimiter));
    }
}
