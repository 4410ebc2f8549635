//! Highest-random-weight (rendezvous) placement.
//!
//! Every node computes the same owner for `(bucket, key)` from the cluster map alone: for each
//! candidate, hash the object name with the candidate's seed and take the highest score. Adding or
//! removing a candidate moves only the objects that it wins or loses.
//!
//! ```
//! use aisle_cluster::placement::{hrw_index, object_name_hash};
//! let seeds = ["t1", "t2", "t3"];
//! let h = object_name_hash("bucket", "photos/cat.jpg");
//! let owner = hrw_index(h, seeds.iter().copied()).unwrap();
//! assert!(owner < 3);
//! // Stable: the same inputs always give the same owner.
//! assert_eq!(owner, hrw_index(h, seeds.iter().copied()).unwrap());
//! ```

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// Hash of an object's full name; the input to every placement decision.
pub fn object_name_hash(bucket: &str, key: &str) -> u64 {
    let mut buf = Vec::with_capacity(bucket.len() + 1 + key.len());
    buf.extend_from_slice(bucket.as_bytes());
    buf.push(0);
    buf.extend_from_slice(key.as_bytes());
    xxh3_64(&buf)
}

/// Score of one candidate for one object: the candidate with the highest score owns it.
fn score(name_hash: u64, candidate_seed: &str) -> u64 {
    xxh3_64_with_seed(&name_hash.to_le_bytes(), xxh3_64(candidate_seed.as_bytes()))
}

/// Index of the winning candidate among `seeds` (in iteration order), `None` if there are none.
pub fn hrw_index<'a>(name_hash: u64, seeds: impl IntoIterator<Item = &'a str>) -> Option<usize> {
    seeds
        .into_iter()
        .enumerate()
        .map(|(i, s)| (score(name_hash, s), i))
        .max()
        .map(|(_, i)| i)
}

/// Indices of `seeds` (in iteration order), best score first.
pub fn rank<'a>(name_hash: u64, seeds: impl IntoIterator<Item = &'a str>) -> Vec<usize> {
    let mut scored: Vec<(u64, usize)> = seeds
        .into_iter()
        .enumerate()
        .map(|(i, s)| (score(name_hash, s), i))
        .collect();
    scored.sort_unstable_by(|a, b| b.cmp(a));
    scored.into_iter().map(|(_, i)| i).collect()
}

/// Index of the mountpath that holds `(bucket, key)` inside a target with `count` mountpaths.
pub fn mountpath_index(bucket: &str, key: &str, count: usize) -> usize {
    let h = object_name_hash(bucket, key);
    let seeds: Vec<String> = (0..count).map(|i| format!("mp{i}")).collect();
    hrw_index(h, seeds.iter().map(String::as_str)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_over_all_candidates() {
        let seeds = ["t1", "t2", "t3"];
        let mut counts = [0usize; 3];
        for i in 0..3000 {
            let h = object_name_hash("b", &format!("key-{i}"));
            counts[hrw_index(h, seeds.iter().copied()).unwrap()] += 1;
        }
        for c in counts {
            assert!(c > 800, "uneven spread: {counts:?}");
        }
    }

    #[test]
    fn removing_a_candidate_moves_only_its_objects() {
        let all = ["t1", "t2", "t3"];
        let fewer = ["t1", "t3"];
        for i in 0..1000 {
            let h = object_name_hash("b", &format!("k{i}"));
            let before = all[hrw_index(h, all.iter().copied()).unwrap()];
            let after = fewer[hrw_index(h, fewer.iter().copied()).unwrap()];
            if before != "t2" {
                assert_eq!(before, after);
            }
        }
    }

    #[test]
    fn the_first_ranked_is_the_hrw_winner_and_ranks_survive_a_removal() {
        let all = ["t1", "t2", "t3", "t4"];
        for i in 0..500 {
            let h = object_name_hash("b", &format!("k{i}"));
            let r = rank(h, all.iter().copied());
            assert_eq!(r[0], hrw_index(h, all.iter().copied()).unwrap());
            // Dropping t4 keeps the relative order of the others.
            let without: Vec<&str> = r.iter().map(|&i| all[i]).filter(|s| *s != "t4").collect();
            let fewer = ["t1", "t2", "t3"];
            let r2: Vec<&str> = rank(h, fewer.iter().copied())
                .iter()
                .map(|&i| fewer[i])
                .collect();
            assert_eq!(without, r2);
        }
    }

    #[test]
    fn mountpaths_are_all_used() {
        let mut seen = [false; 2];
        for i in 0..100 {
            seen[mountpath_index("b", &format!("k{i}"), 2)] = true;
        }
        assert_eq!(seen, [true, true]);
    }
}
