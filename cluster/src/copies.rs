//! Where an object's copies belong, where a write goes and where a read looks — all derived
//! from the cluster map alone, so every node computes the same answer.
//!
//! Every target is ranked for `(bucket, key)` by HRW score ([`ranked`]). From that one order:
//!
//! * **holders** — the first `copies` *members* (active, not out for good): where the object
//!   belongs. Rebalance moves copies there; a target down for less than the grace period stays
//!   a holder, so a short outage re-replicates nothing.
//! * **write set** — the first `copies` members that are alive: a PUT is acknowledged when each
//!   of them has the object durable. With a holder down, the next live member takes its copy;
//!   the rebalance after its return puts things back.
//! * **read order** — every live target in rank order, the trusted ones first (targets catching
//!   up after an outage, or in maintenance / being drained, last). A read tries them in turn on a
//!   miss ("get from neighbour"), so an object is found wherever a move or an outage left it.
//!
//! Adding or removing a target changes only the ranks it takes or leaves, so only the objects
//! it wins or loses move (see [`crate::placement`]).
//!
//! ```
//! use aisle_cluster::map::{ClusterMeta, TargetInfo};
//! let mut m = ClusterMeta::default();
//! for id in ["t1", "t2", "t3"] {
//!     m.targets.insert(id.into(), TargetInfo::new(id, format!("http://{id}")));
//! }
//! let holders = m.holders("b", "k", 2);
//! assert_eq!(holders.len(), 2);
//! assert_ne!(holders[0].id, holders[1].id);
//! // Everyone alive: the write set is the holders, and reads start at the first one.
//! assert_eq!(m.write_set("b", "k", 2), holders);
//! assert_eq!(m.read_order("b", "k")[0].id, holders[0].id);
//! ```

use crate::map::{AdminState, ClusterMeta, TargetInfo};
use crate::placement::{object_name_hash, rank};

impl ClusterMeta {
    /// Every target, best HRW score first.
    pub fn ranked(&self, bucket: &str, key: &str) -> Vec<&TargetInfo> {
        let h = object_name_hash(bucket, key);
        let targets: Vec<&TargetInfo> = self.targets.values().collect();
        rank(h, targets.iter().map(|t| t.id.as_str()))
            .into_iter()
            .map(|i| targets[i])
            .collect()
    }

    /// Copies `bucket` keeps (1 for an unknown bucket).
    pub fn copies(&self, bucket: &str) -> usize {
        self.buckets
            .get(bucket)
            .map(|b| b.copies.max(1) as usize)
            .unwrap_or(1)
    }

    /// Copies a new bucket gets by default: the cluster's default, at most one per target.
    pub fn new_bucket_copies(&self) -> u8 {
        let members = self.targets.values().filter(|t| t.is_member()).count();
        self.default_copies.max(1).min(members.max(1) as u8)
    }

    /// Where `(bucket, key)` belongs: its first `copies` member targets.
    pub fn holders(&self, bucket: &str, key: &str, copies: usize) -> Vec<&TargetInfo> {
        self.ranked(bucket, key)
            .into_iter()
            .filter(|t| t.is_member())
            .take(copies)
            .collect()
    }

    /// Where a write of `(bucket, key)` goes: its first `copies` live member targets (fewer
    /// when fewer are up; the caller refuses the write then).
    pub fn write_set(&self, bucket: &str, key: &str, copies: usize) -> Vec<&TargetInfo> {
        self.ranked(bucket, key)
            .into_iter()
            .filter(|t| t.is_member() && t.is_alive())
            .take(copies)
            .collect()
    }

    /// The live targets in the order a read of `(bucket, key)` asks them.
    pub fn read_order(&self, bucket: &str, key: &str) -> Vec<&TargetInfo> {
        let mut order: Vec<&TargetInfo> = self
            .ranked(bucket, key)
            .into_iter()
            .filter(|t| t.is_alive())
            .collect();
        // Stable: rank order within each class.
        order.sort_by_key(|t| !trusted(t));
        order
    }

    /// Everything sits where it belongs and every live target is trusted: a miss on the first
    /// `copies` readable targets is a miss everywhere.
    pub fn settled(&self) -> bool {
        self.rebalance.settled && self.targets.values().all(|t| t.is_alive() && trusted(t))
    }

    /// What placement depends on: the member targets, the admin state of the others, and each
    /// bucket's copies. The primary
    /// starts a rebalance whenever this changes (a target joins, leaves, goes out, enters or
    /// leaves maintenance; `copies` changes), and when a target returns from an outage.
    pub fn placement_key(&self) -> String {
        let mut k = String::new();
        for t in self.targets.values() {
            if t.is_member() {
                k.push_str(&format!("{};", t.id));
            } else if t.admin != AdminState::Active {
                // Maintenance keeps its copies, a drained target gives them up: moving from one
                // to the other is a new walk.
                k.push_str(&format!("{}:{:?};", t.id, t.admin));
            }
        }
        k.push('|');
        for (name, b) in &self.buckets {
            k.push_str(&format!("{name}:{};", b.copies));
        }
        k
    }

    /// Start a new rebalance generation (superseding a running one).
    pub fn start_rebalance(&mut self) {
        self.rebalance.generation += 1;
        self.rebalance.settled = false;
        self.rebalance.retries = 0;
    }
}

/// A target whose copies a read can take at face value.
fn trusted(t: &TargetInfo) -> bool {
    t.admin == AdminState::Active && !t.health.catching_up
}

#[cfg(test)]
mod tests {
    use crate::map::{AdminState, BucketProps, ClusterMeta, TargetInfo};

    fn meta(n: usize) -> ClusterMeta {
        let mut m = ClusterMeta::default();
        for i in 1..=n {
            let id = format!("t{i}");
            m.targets
                .insert(id.clone(), TargetInfo::new(&id, format!("http://{id}")));
        }
        m.buckets.insert("b".into(), BucketProps::new(0, 2));
        m
    }

    fn ids(v: Vec<&TargetInfo>) -> Vec<String> {
        v.into_iter().map(|t| t.id.clone()).collect()
    }

    #[test]
    fn a_down_holder_is_replaced_in_the_write_set_but_stays_a_holder() {
        let mut m = meta(4);
        for i in 0..200 {
            let key = format!("k{i}");
            let holders = ids(m.holders("b", &key, 2));
            let first = holders[0].clone();
            m.targets.get_mut(&first).unwrap().health.down_since_ms = Some(1);
            assert_eq!(ids(m.holders("b", &key, 2)), holders);
            let ws = ids(m.write_set("b", &key, 2));
            assert_eq!(ws.len(), 2);
            assert!(!ws.contains(&first));
            assert_eq!(ws[0], holders[1], "the second holder leads");
            assert!(!ids(m.read_order("b", &key)).contains(&first));
            m.targets.get_mut(&first).unwrap().health.down_since_ms = None;
        }
    }

    #[test]
    fn maintenance_and_catching_up_targets_are_read_last_and_never_written() {
        let mut m = meta(3);
        m.targets.get_mut("t1").unwrap().admin = AdminState::Maintenance;
        m.targets.get_mut("t2").unwrap().health.catching_up = true;
        for i in 0..100 {
            let key = format!("k{i}");
            let order = ids(m.read_order("b", &key));
            assert_eq!(order[0], "t3");
            assert_eq!(order.len(), 3);
            assert!(!ids(m.write_set("b", &key, 2)).contains(&"t1".to_string()));
        }
    }

    #[test]
    fn the_placement_key_ignores_what_does_not_move_data() {
        let mut m = meta(3);
        let k = m.placement_key();
        m.targets.get_mut("t1").unwrap().health.catching_up = true;
        m.targets.get_mut("t2").unwrap().health.down_since_ms = Some(9);
        m.version += 1;
        assert_eq!(m.placement_key(), k);
        m.targets.get_mut("t2").unwrap().health.out = true;
        assert_ne!(m.placement_key(), k);
        m.targets.get_mut("t2").unwrap().health.out = false;
        m.buckets.get_mut("b").unwrap().copies = 3;
        assert_ne!(m.placement_key(), k);
    }
}
