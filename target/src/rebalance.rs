//! The rebalance walk: after every placement change each target walks what it holds and puts
//! every object, tombstone and noncurrent version (or delete marker) of a bucket with
//! versioning where the cluster map says it belongs.
//!
//! For each record, in index order and in batches: compute its holders ([`ClusterMeta::holders`]),
//! ask each live holder what it has (one batched check per holder), push a copy to every holder
//! that has an older version or none, and — only when this target is not a holder and every
//! holder confirmed the same or a newer version — remove the local copy, if it is still the
//! version that was confirmed. So nothing leaves its old place before its new copies are
//! durable and verified, an overwrite during the move ends with the newest version everywhere,
//! and objects already in place are only read.
//!
//! One walk runs at a time; a newer generation supersedes it. Every (re-)join of a target
//! starts a new generation (`aisle_gateway::membership`), so a walk cut off by a restart
//! resumes, and copies that a crash kept a target from pushing after a write are made — with
//! the map as it is after the restart. Progress is reported in the target's status, which the
//! primary gateway polls.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aisle_cluster::map::{AdminState, ClusterMeta};
use aisle_cluster::proto::{Have, ObjectQuery, RebalanceReport};
use futures::StreamExt;

use crate::server::State;
use crate::store::{WalkEntry, Walked};

/// Records per batch (one check call per holder per batch).
const BATCH: usize = 256;
/// Copies pushed at once.
const PUSHES_IN_FLIGHT: usize = 8;

/// This target's rebalance: the running walk and its report.
#[derive(Default)]
pub(crate) struct Rebalancer {
    /// Generation of the walk running or last started.
    running: AtomicU64,
    report: Mutex<RebalanceReport>,
}

impl Rebalancer {
    /// The current walk's progress.
    pub(crate) fn report(&self) -> RebalanceReport {
        self.report.lock().expect("report lock").clone()
    }

    fn update(&self, f: impl FnOnce(&mut RebalanceReport)) {
        f(&mut self.report.lock().expect("report lock"));
    }
}

/// New cluster metadata arrived (or the target started): start the walk of its generation
/// unless this process walked it already.
pub(crate) fn on_meta(state: &Arc<State>, meta: &ClusterMeta) {
    let generation = meta.rebalance.generation;
    if generation == 0 || !meta.targets.contains_key(&state.id) {
        return;
    }
    if state.rebalance.running.load(Ordering::SeqCst) >= generation {
        return;
    }
    state.rebalance.running.store(generation, Ordering::SeqCst);
    let total = state.store.record_count().unwrap_or(0);
    state.rebalance.update(|r| {
        *r = RebalanceReport {
            id: state.id.clone(),
            generation,
            total,
            ..Default::default()
        }
    });
    let state = state.clone();
    tokio::spawn(async move {
        tracing::info!(generation, total, "rebalance: walk started");
        match walk(&state, generation).await {
            Walk::Done => {
                state.rebalance.update(|r| r.done = true);
                let report = state.rebalance.report();
                tracing::info!(
                    generation,
                    pushed = report.pushed,
                    removed = report.removed,
                    failed = report.failed,
                    misplaced = report.misplaced,
                    "rebalance: walk done"
                );
            }
            Walk::Superseded => tracing::info!(generation, "rebalance: superseded"),
        }
    });
}

enum Walk {
    Done,
    Superseded,
}

async fn walk(state: &Arc<State>, generation: u64) -> Walk {
    for kind in [Walked::Objects, Walked::Tombstones, Walked::Versions] {
        let mut after: Option<Vec<u8>> = None;
        loop {
            if state.rebalance.running.load(Ordering::SeqCst) != generation {
                return Walk::Superseded;
            }
            let store = state.store.clone();
            let from = after.clone();
            let batch =
                match tokio::task::spawn_blocking(move || store.walk(kind, from.as_deref(), BATCH))
                    .await
                {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "rebalance: reading the index failed");
                        state.rebalance.update(|r| note(r, format!("index: {e}")));
                        break;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "rebalance: task failed");
                        break;
                    }
                };
            let Some(last) = batch.last() else { break };
            after = Some(last.raw.clone());
            let meta = state.meta.read().expect("meta lock").clone();
            if meta.rebalance.generation != generation {
                return Walk::Superseded;
            }
            place_batch(state, &meta, batch).await;
        }
    }
    Walk::Done
}

fn note(r: &mut RebalanceReport, e: String) {
    if r.errors.len() >= 20 {
        r.errors.remove(0);
    }
    r.errors.push(e);
}

/// Put one batch of records where they belong.
async fn place_batch(state: &Arc<State>, meta: &ClusterMeta, batch: Vec<WalkEntry>) {
    let me = state.id.as_str();
    // Only an active member whose objects moved, or a target being drained, gives copies up.
    // One that is out (or was, in a map older than its return) or in maintenance keeps them:
    // it may be back, or be needed, any moment.
    let may_remove = meta.targets.get(me).is_some_and(|t| {
        t.admin == AdminState::Decommissioning || (t.admin == AdminState::Active && !t.health.out)
    });
    // The holders (id, url, alive) of each record, and per live holder the records to check.
    let mut holders: Vec<Vec<(String, String, bool)>> = Vec::with_capacity(batch.len());
    let mut per_peer: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut urls: BTreeMap<String, String> = BTreeMap::new();
    for (i, e) in batch.iter().enumerate() {
        let h: Vec<(String, String, bool)> = if meta.buckets.contains_key(&e.bucket) {
            meta.holders(&e.bucket, &e.key, meta.copies(&e.bucket))
                .into_iter()
                .map(|t| (t.id.clone(), t.url.clone(), t.is_alive()))
                .collect()
        } else {
            Vec::new() // a deleted bucket: leave its records alone
        };
        for (id, url, alive) in &h {
            if id != me && *alive {
                per_peer.entry(id.clone()).or_default().push(i);
                urls.insert(id.clone(), url.clone());
            }
        }
        holders.push(h);
    }
    // What each live holder has.
    let mut peer_have: BTreeMap<(String, usize), Have> = BTreeMap::new();
    for (id, idxs) in &per_peer {
        let keys: Vec<ObjectQuery> = idxs
            .iter()
            .map(|&i| ObjectQuery {
                version_id: batch[i].version.map(|v| v.id()),
                bucket: batch[i].bucket.clone(),
                key: batch[i].key.clone(),
                part: None,
            })
            .collect();
        match crate::replica::check(state, &urls[id], &keys).await {
            Ok(haves) if haves.len() == idxs.len() => {
                for (&i, h) in idxs.iter().zip(haves) {
                    peer_have.insert((id.clone(), i), h);
                }
            }
            Ok(_) => tracing::warn!(peer = %id, "rebalance: a check answered the wrong count"),
            Err(e) => {
                tracing::warn!(peer = %id, error = %e, "rebalance: check failed");
                state
                    .rebalance
                    .update(|r| note(r, format!("check on {id}: {e}")));
            }
        }
    }
    // Push what a holder lacks.
    let mut pushes = Vec::new();
    for (i, h) in holders.iter().enumerate() {
        for (id, _, alive) in h {
            if id == me || !alive {
                continue;
            }
            if let Some(have) = peer_have.get(&(id.clone(), i))
                && have.version < batch[i].have.version
            {
                pushes.push((i, id.clone()));
            }
        }
    }
    let results: Vec<(usize, String, Result<Have, String>)> =
        futures::stream::iter(pushes.into_iter().map(|(i, id)| {
            let url = urls[&id].clone();
            let e = &batch[i];
            async move {
                let r = crate::replica::push(state, &e.bucket, &e.key, e.version, &url, false)
                    .await
                    .map_err(|x| x.to_string());
                (i, id, r)
            }
        }))
        .buffer_unordered(PUSHES_IN_FLIGHT)
        .collect()
        .await;
    let mut pushed = 0;
    for (i, id, r) in results {
        match r {
            Ok(h) => {
                pushed += 1;
                peer_have.insert((id, i), h);
            }
            Err(e) => {
                peer_have.remove(&(id.clone(), i));
                state.rebalance.update(|r| {
                    note(
                        r,
                        format!("push {}/{} to {id}: {e}", batch[i].bucket, batch[i].key),
                    )
                });
            }
        }
    }
    // Remove local copies that belong elsewhere and are confirmed there — unless a newer
    // generation started meanwhile (its walk decides).
    let (mut removed, mut failed, mut misplaced) = (0, 0, 0);
    let current = state.meta.read().expect("meta lock").rebalance.generation;
    let may_remove = may_remove && current == meta.rebalance.generation;
    for (i, h) in holders.iter().enumerate() {
        let e = &batch[i];
        let all_confirmed = h.iter().all(|(id, _, alive)| {
            id == me
                || (*alive
                    && peer_have
                        .get(&(id.clone(), i))
                        .is_some_and(|p| p.version >= e.have.version))
        });
        if !all_confirmed {
            failed += 1;
        }
        let here = h.iter().any(|(id, _, _)| id == me);
        if here || h.is_empty() {
            continue;
        }
        if !all_confirmed || !may_remove {
            misplaced += 1;
            continue;
        }
        let store = state.store.clone();
        let (b, k, have, noncurrent) =
            (e.bucket.clone(), e.key.clone(), e.have, e.version.is_some());
        let removal = tokio::task::spawn_blocking(move || {
            if noncurrent {
                store.remove_version(&b, &k, have.version)
            } else {
                store.remove_if(&b, &k, have)
            }
        });
        match removal.await {
            Ok(Ok(true)) => {
                removed += 1;
                state.cold.forget(&e.bucket, &e.key);
            }
            Ok(Ok(false)) => {}
            Ok(Err(x)) => {
                misplaced += 1;
                state
                    .rebalance
                    .update(|r| note(r, format!("remove {}/{}: {x}", e.bucket, e.key)));
            }
            Err(_) => misplaced += 1,
        }
    }
    let walked = batch.len() as u64;
    state.rebalance.update(|r| {
        r.walked += walked;
        r.pushed += pushed;
        r.removed += removed;
        r.failed += failed;
        r.misplaced += misplaced;
    });
}
