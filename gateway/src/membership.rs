//! Who is in the cluster, and in what state: targets joining, the prober that marks them down
//! and up again, the grace period after which a down target's copies are re-made elsewhere
//! (self-heal), maintenance, decommission and removal, each bucket's `copies`, and the end
//! ("settling") of every rebalance.
//!
//! Every change is one [`MetaOwner::update`]; the rebalance that follows a placement change is
//! started there. Liveness is seen from here only: the primary gateway probes every target
//! ([`proto::T_STATUS`], with a timeout) and reads its rebalance progress from the answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aisle_cluster::client::NodeClient;
use aisle_cluster::map::{AdminState, ClusterMeta, MAX_COPIES, TargetInfo};
use aisle_cluster::now_ms;
use aisle_cluster::proto::{self, RebalanceReport, TargetStatus};
use http::Method;
use serde::{Deserialize, Serialize};

use crate::config::HealthConfig;
use crate::meta::{MetaOwner, PersistError};

/// Walks started again in a row when one left records unplaced with every target up.
const MAX_REBALANCE_RETRIES: u32 = 3;

/// A membership change that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Another change is still being carried out.
    #[error("{0}")]
    Busy(String),
    /// The change would lose data or break a rule.
    #[error("{0}")]
    Refused(String),
    /// No such target or bucket.
    #[error("{0}")]
    NotFound(String),
    /// The metadata could not be persisted.
    #[error(transparent)]
    Persist(#[from] PersistError),
}

/// What an operator asks of a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetAction {
    /// Stop writing to it; its objects get copies elsewhere; it may be stopped.
    StartMaintenance,
    /// Back to active.
    StopMaintenance,
    /// Drain it, then take it out of the map.
    Decommission,
    /// Take it out of the map now (it is gone for good); copies are re-made from the others.
    Remove,
}

/// What `aisle cluster show` reports of a target beyond the map.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Observed {
    /// Last answer to a probe, Unix milliseconds.
    pub last_seen_ms: i64,
    /// Its last status.
    pub status: Option<TargetStatus>,
    /// Probes missed in a row.
    #[serde(default)]
    pub misses: u32,
}

/// The primary gateway's view of membership.
pub struct Membership {
    meta: Arc<MetaOwner>,
    client: NodeClient,
    cfg: HealthConfig,
    observed: Mutex<BTreeMap<String, Observed>>,
    /// The last probe round's change could not be persisted (logged once, not every round).
    persist_failing: std::sync::atomic::AtomicBool,
}

impl Membership {
    /// Watch the targets of `meta` with `cfg`.
    pub fn new(meta: Arc<MetaOwner>, client: NodeClient, cfg: HealthConfig) -> Arc<Self> {
        Arc::new(Membership {
            meta,
            client,
            cfg,
            observed: Mutex::default(),
            persist_failing: Default::default(),
        })
    }

    /// What the prober last saw of each target.
    pub fn observed(&self) -> BTreeMap<String, Observed> {
        self.observed.lock().expect("observed lock").clone()
    }

    /// A target registers: at its first start (it takes over its share: a rebalance starts
    /// since placement changed) and at every restart. A restarted target may have missed
    /// writes, and a crash may have kept it from making copies of writes it published, so it
    /// is marked catching up and a rebalance starts (as AIStore does for a rejoining node).
    pub async fn join(&self, target: TargetInfo) -> Result<Arc<ClusterMeta>, MembershipError> {
        self.meta
            .update(|m| {
                match m.targets.get_mut(&target.id) {
                    None => {
                        tracing::info!(id = %target.id, url = %target.url, "target joined");
                        m.targets.insert(target.id.clone(), target.clone());
                    }
                    Some(t) if !t.uuid.is_empty() && t.uuid != target.uuid => {
                        return Err(MembershipError::Refused(format!(
                            "target id {} belongs to another node (data directory {}, at {}); \
                             give this one its own id, or `aisle cluster rm {}` the other first",
                            target.id, t.uuid, t.url, target.id
                        )));
                    }
                    Some(t) => {
                        t.uuid = target.uuid.clone();
                        tracing::info!(id = %target.id, url = %target.url, "target re-joined");
                        t.url = target.url.clone();
                        t.local = target.local.clone();
                        came_back(m, &target.id);
                    }
                }
                Ok((true, ()))
            })
            .await?;
        if let Some(o) = self
            .observed
            .lock()
            .expect("observed lock")
            .get_mut(&target.id)
        {
            o.misses = 0;
        }
        Ok(self.meta.snapshot())
    }

    /// Probe every target forever.
    pub fn spawn_prober(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(me.cfg.probe_interval_ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                me.probe_all().await;
            }
        });
    }

    async fn probe_all(&self) {
        let meta = self.meta.snapshot();
        let timeout = Duration::from_millis(self.cfg.probe_timeout_ms);
        let probes = meta.targets.values().map(|t| {
            let url = format!("{}{}", t.url, proto::T_STATUS);
            let client = self.client.clone();
            let id = t.id.clone();
            async move {
                let call = client.json::<(), TargetStatus>(Method::GET, &url, None);
                let status = match tokio::time::timeout(timeout, call).await {
                    Ok(Ok(s)) if s.id == id => Some(s),
                    _ => None,
                };
                (id, status)
            }
        });
        let results = futures::future::join_all(probes).await;
        let now = now_ms();
        let mut down_now = Vec::new();
        let mut up_now = Vec::new();
        let mut behind = Vec::new();
        {
            let mut observed = self.observed.lock().expect("observed lock");
            observed.retain(|id, _| meta.targets.contains_key(id));
            for (id, status) in results {
                let t = &meta.targets[&id];
                let o = observed.entry(id.clone()).or_default();
                match status {
                    Some(s) => {
                        o.misses = 0;
                        if !t.is_alive() {
                            // The change that marks it up pushes the metadata to it.
                            up_now.push(id.clone());
                        } else if s.meta_version < meta.version {
                            behind.push(t.clone());
                        }
                        o.last_seen_ms = now;
                        o.status = Some(s);
                    }
                    None => {
                        o.misses += 1;
                        if o.misses >= self.cfg.down_after_misses && t.is_alive() {
                            down_now.push(id);
                        }
                    }
                }
            }
        }
        for t in behind {
            self.meta.push_one(&t).await;
        }
        let observed = self.observed();
        let grace_ms = (self.cfg.heal_after_secs * 1000) as i64;
        let result = self
            .meta
            .update(|m| {
                let mut changed = false;
                for id in &down_now {
                    if let Some(t) = m.targets.get_mut(id) {
                        tracing::warn!(target = %id, "target marked down");
                        t.health.down_since_ms = Some(now);
                        changed = true;
                    }
                }
                for id in &up_now {
                    tracing::info!(target = %id, "target answers again");
                    came_back(m, id);
                    changed = true;
                }
                for t in m.targets.values_mut() {
                    if let Some(since) = t.health.down_since_ms
                        && !t.health.out
                        && t.admin == AdminState::Active
                        && now - since > grace_ms
                    {
                        tracing::warn!(target = %t.id, "down past the grace period: its copies are re-made elsewhere");
                        t.health.out = true;
                        changed = true;
                    }
                }
                changed |= settle(m, &observed);
                Ok::<_, PersistError>((changed, ()))
            })
            .await;
        // A full or failing disk fails every round the same way: say so once, and once more
        // when it works again.
        use std::sync::atomic::Ordering;
        match result {
            Err(e) if !self.persist_failing.swap(true, Ordering::Relaxed) => {
                tracing::error!(error = %e, "membership change not persisted (retried every probe round)");
            }
            Err(e) => tracing::debug!(error = %e, "membership change still not persisted"),
            Ok(()) if self.persist_failing.swap(false, Ordering::Relaxed) => {
                tracing::info!("membership changes persisted again");
            }
            Ok(()) => {}
        }
        let after = self.meta.snapshot();
        if !meta.rebalance.settled
            && after.rebalance.settled
            && after.rebalance.generation == meta.rebalance.generation
        {
            tracing::info!(generation = after.rebalance.generation, "rebalance settled");
        }
    }

    /// Carry out an operator's action on a target.
    pub async fn act(&self, id: &str, action: TargetAction) -> Result<(), MembershipError> {
        self.meta
            .update(|m| {
                let Some(t) = m.targets.get(id) else {
                    return Err(MembershipError::NotFound(format!("no target {id:?} in the cluster")));
                };
                let busy = !m.rebalance.settled && m.rebalance.generation > 0;
                let need = m.buckets.values().map(|b| b.copies).max().unwrap_or(1) as usize;
                let members_without =
                    m.targets.values().filter(|x| x.is_member() && x.id != id).count();
                match action {
                    TargetAction::StopMaintenance if t.admin == AdminState::Active => {
                        return Ok((false, ()));
                    }
                    TargetAction::StopMaintenance => {}
                    _ if busy => {
                        return Err(MembershipError::Busy(format!(
                            "a rebalance (generation {}) is still running; retry once `aisle cluster show` says it settled",
                            m.rebalance.generation
                        )));
                    }
                    _ if t.is_member() && members_without < need => {
                        return Err(MembershipError::Refused(format!(
                            "a bucket keeps {need} copies and only {members_without} other targets would hold data"
                        )));
                    }
                    TargetAction::Remove => {
                        if t.is_alive() {
                            return Err(MembershipError::Refused(format!(
                                "target {id} is running: decommission it (its data moves first), or stop it before removing it"
                            )));
                        }
                        let single = m
                            .buckets
                            .iter()
                            .filter(|(_, b)| b.copies < 2)
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>();
                        if !single.is_empty() && t.admin == AdminState::Active {
                            return Err(MembershipError::Refused(format!(
                                "buckets {} keep one copy: objects whose only copy is on {id} would be lost; bring it back and decommission it instead",
                                single.join(", ")
                            )));
                        }
                    }
                    _ => {}
                }
                let t = m.targets.get_mut(id).expect("checked above");
                match action {
                    TargetAction::StartMaintenance => t.admin = AdminState::Maintenance,
                    TargetAction::StopMaintenance => t.admin = AdminState::Active,
                    TargetAction::Decommission => t.admin = AdminState::Decommissioning,
                    TargetAction::Remove => {
                        m.targets.remove(id);
                    }
                }
                tracing::info!(target = %id, ?action, "membership change");
                Ok((true, ()))
            })
            .await
    }

    /// Set a bucket's copies (1–3, at most one per member target); the rebalance that follows
    /// adds or removes copies.
    pub async fn set_copies(&self, bucket: &str, copies: u8) -> Result<(), MembershipError> {
        self.meta
            .update(|m| {
                check_copies(m, copies)?;
                let b = m
                    .buckets
                    .get_mut(bucket)
                    .ok_or_else(|| MembershipError::NotFound(format!("no bucket {bucket:?}")))?;
                if b.remote.is_some() && copies != 1 {
                    return Err(MembershipError::Refused(format!(
                        "{bucket} is a remote bucket: its remote keeps the durable copy and \
                         the targets one cached copy"
                    )));
                }
                let changed = b.copies != copies;
                b.copies = copies;
                Ok((changed, ()))
            })
            .await
    }

    /// Set the copies new buckets get.
    pub async fn set_default_copies(&self, copies: u8) -> Result<(), MembershipError> {
        self.meta
            .update(|m| {
                if !(1..=MAX_COPIES).contains(&copies) {
                    return Err(MembershipError::Refused(format!(
                        "copies must be 1 to {MAX_COPIES}, not {copies}"
                    )));
                }
                let changed = m.default_copies != copies;
                m.default_copies = copies;
                Ok((changed, ()))
            })
            .await
    }
}

/// `copies` is within 1–3 and the member targets can hold that many.
pub fn check_copies(m: &ClusterMeta, copies: u8) -> Result<(), MembershipError> {
    let members = m.targets.values().filter(|t| t.is_member()).count();
    if !(1..=MAX_COPIES).contains(&copies) {
        return Err(MembershipError::Refused(format!(
            "copies must be 1 to {MAX_COPIES}, not {copies}"
        )));
    }
    if copies as usize > members {
        return Err(MembershipError::Refused(format!(
            "copies={copies} needs {copies} targets; the cluster has {members}"
        )));
    }
    Ok(())
}

/// Mark a target alive again: it may hold stale copies until the rebalance it starts is done.
fn came_back(m: &mut ClusterMeta, id: &str) {
    if let Some(t) = m.targets.get_mut(id) {
        t.health.down_since_ms = None;
        t.health.out = false;
        t.health.catching_up = true;
    }
    m.start_rebalance();
}

/// When every live target has walked the current generation: the rebalance is settled,
/// returned targets are trusted again, and drained targets leave the map.
fn settle(m: &mut ClusterMeta, observed: &BTreeMap<String, Observed>) -> bool {
    if m.rebalance.settled || m.rebalance.generation == 0 {
        return false;
    }
    let generation = m.rebalance.generation;
    let report = |id: &str| -> Option<RebalanceReport> {
        observed
            .get(id)
            .and_then(|o| o.status.as_ref())
            .map(|s| s.rebalance.clone())
            .filter(|r| r.generation == generation && r.done)
    };
    if !m
        .targets
        .values()
        .filter(|t| t.is_alive())
        .all(|t| report(&t.id).is_some())
    {
        return false;
    }
    // Records a walk could not place while every target is up (a push that failed): walk
    // again, a few times, rather than settle with copies out of place.
    let failed: u64 = m
        .targets
        .values()
        .filter_map(|t| report(&t.id))
        .map(|r| r.failed)
        .sum();
    let all_up = m.targets.values().all(|t| t.is_alive());
    if failed > 0 && all_up && m.rebalance.retries < MAX_REBALANCE_RETRIES {
        tracing::warn!(
            generation,
            failed,
            "rebalance left records unplaced: walking again"
        );
        let retries = m.rebalance.retries + 1;
        m.start_rebalance();
        m.rebalance.retries = retries;
        return true;
    }
    m.rebalance.settled = true;
    for t in m.targets.values_mut() {
        t.health.catching_up = false;
    }
    let drained: Vec<String> = m
        .targets
        .values()
        .filter(|t| {
            t.admin == AdminState::Decommissioning
                && report(&t.id).is_some_and(|r| r.misplaced == 0 && r.failed == 0)
        })
        .map(|t| t.id.clone())
        .collect();
    for id in drained {
        tracing::info!(target = %id, "decommissioned: drained and removed from the map");
        m.targets.remove(&id);
    }
    true
}
