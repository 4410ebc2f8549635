//! The primary gateway's ownership of cluster metadata.
//!
//! Every change goes through [`MetaOwner::update`]: bump the version, persist durably (temp file,
//! fsync, rename), then push the whole record to every target. Readers take cheap snapshots.

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
        Arc::new(MetaOwner {
            path,
            current: RwLock::new(Arc::new(meta)),
            change: tokio::sync::Mutex::new(()),
            client,
        })
    }

    /// The current metadata.
    pub fn snapshot(&self) -> Arc<ClusterMeta> {
        self.current.read().expect("meta lock").clone()
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
            self.persist(&next)?;
            let next = Arc::new(next);
            self.client.routes().set(next.targets.values());
            *self.current.write().expect("meta lock") = next.clone();
            self.push(next).await;
        }
        Ok(out)
    }

    fn persist(&self, meta: &ClusterMeta) -> Result<(), PersistError> {
        let err = |source| PersistError {
            path: self.path.display().to_string(),
            source,
        };
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(err)?;
            f.write_all(&serde_json::to_vec_pretty(meta).expect("meta serializes"))
                .map_err(err)?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        Ok(())
    }

    /// Push `meta` to every target; a target that misses a push gets the next one (and the
    /// current record whenever it re-joins).
    async fn push(&self, meta: Arc<ClusterMeta>) {
        let calls = meta.targets.values().map(|t| {
            let url = format!("{}{}", t.url, proto::T_META);
            let client = self.client.clone();
            let meta = meta.clone();
            async move {
                if let Err(e) = client
                    .json::<_, serde_json::Value>(Method::PUT, &url, Some(&*meta))
                    .await
                {
                    tracing::warn!(error = %e, "cluster metadata push failed");
                }
            }
        });
        futures::future::join_all(calls).await;
    }

    /// A target joins (or re-joins with a new URL).
    pub async fn join(&self, target: TargetInfo) -> Result<Arc<ClusterMeta>, PersistError> {
        self.update(|m| {
            let changed = m.targets.get(&target.id) != Some(&target);
            if changed {
                tracing::info!(id = %target.id, url = %target.url, "target joined");
                m.targets.insert(target.id.clone(), target);
            }
            Ok::<_, PersistError>((changed, ()))
        })
        .await?;
        Ok(self.snapshot())
    }
}
