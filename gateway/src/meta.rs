//! The primary gateway's ownership of cluster metadata.
//!
//! Every change goes through [`MetaOwner::update`]: bump the version (and start a rebalance
//! when where objects belong changed), persist durably (temp file, fsync, rename), then push
//! the whole record to every target. Readers take cheap snapshots, or watch for changes.
//! Membership changes themselves (join, liveness, maintenance, decommission, removal) are in
//! [`crate::membership`].

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use aisle_cluster::client::NodeClient;
use aisle_cluster::map::{ClusterMeta, TargetInfo};
use aisle_cluster::proto;
use http::Method;

/// Failure to persist metadata.
#[derive(Debug, thiserror::Error)]
#[error("persisting cluster metadata to {path}: {source}")]
pub struct PersistError {
    path: String,
    #[source]
    source: std::io::Error,
}

/// Owner of the versioned [`ClusterMeta`].
pub struct MetaOwner {
    path: PathBuf,
    current: RwLock<Arc<ClusterMeta>>,
    changes: tokio::sync::watch::Sender<Arc<ClusterMeta>>,
    change: tokio::sync::Mutex<()>,
    client: NodeClient,
}

impl MetaOwner {
    /// Load the persisted metadata from `root` (or start empty).
    pub fn load(root: &std::path::Path, client: NodeClient) -> Arc<MetaOwner> {
        let path = root.join("cluster-meta.json");
        let meta: ClusterMeta = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        client.routes().set(meta.targets.values());
        let meta = Arc::new(meta);
        Arc::new(MetaOwner {
            path,
            changes: tokio::sync::watch::Sender::new(meta.clone()),
            current: RwLock::new(meta),
            change: tokio::sync::Mutex::new(()),
            client,
        })
    }

    /// The current metadata.
    pub fn snapshot(&self) -> Arc<ClusterMeta> {
        self.current.read().expect("meta lock").clone()
    }

    /// Every change from now on (see [`crate::proxy::Targets`]: a call to a target that the
    /// prober marks down is given up instead of waited for).
    pub fn watch(&self) -> tokio::sync::watch::Receiver<Arc<ClusterMeta>> {
        self.changes.subscribe()
    }

    /// Apply a change: `f` edits a copy and says whether anything changed (or fails). A change is
    /// persisted and pushed before this returns.
    pub async fn update<T, E: From<PersistError>>(
        &self,
        f: impl FnOnce(&mut ClusterMeta) -> Result<(bool, T), E>,
    ) -> Result<T, E> {
        let _guard = self.change.lock().await;
        let mut next = (*self.snapshot()).clone();
        let (changed, out) = f(&mut next)?;
        if changed {
            next.version += 1;
            if next.placement_key() != self.snapshot().placement_key() {
                next.start_rebalance();
                tracing::info!(
                    generation = next.rebalance.generation,
                    "placement changed: rebalance started"
                );
            }
            self.persist(&next)?;
            let next = Arc::new(next);
            self.client.routes().set(next.targets.values());
            *self.current.write().expect("meta lock") = next.clone();
            self.changes.send_replace(next.clone());
            self.push(next).await;
        }
        Ok(out)
    }

    fn persist(&self, meta: &ClusterMeta) -> Result<(), PersistError> {
        let err = |source| PersistError {
            path: self.path.display().to_string(),
            source,
        };
        aisle_cluster::files::write_private(
            &self.path,
            &serde_json::to_vec_pretty(meta).expect("meta serializes"),
        )
        .map_err(err)?;
        Ok(())
    }

    /// Push `meta` to every live target; one that misses a push gets the current record when
    /// the prober sees it behind, or when it re-joins.
    async fn push(&self, meta: Arc<ClusterMeta>) {
        let calls = meta.targets.values().filter(|t| t.is_alive()).map(|t| {
            let target = t.clone();
            let client = self.client.clone();
            let meta = meta.clone();
            async move { push_to(&client, &target, &meta).await }
        });
        futures::future::join_all(calls).await;
    }

    /// Push the current metadata to one target.
    pub async fn push_one(&self, target: &TargetInfo) {
        push_to(&self.client, target, &self.snapshot()).await;
    }
}

/// How long a metadata push may take before the target is left to catch up later.
const PUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

async fn push_to(client: &NodeClient, t: &TargetInfo, meta: &ClusterMeta) {
    let url = format!("{}{}", t.url, proto::T_META);
    let call = client.json::<_, serde_json::Value>(Method::PUT, &url, Some(meta));
    match tokio::time::timeout(PUSH_TIMEOUT, call).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!(target = %t.id, error = %e, "cluster metadata push failed"),
        Err(_) => tracing::warn!(target = %t.id, "cluster metadata push timed out"),
    }
}
