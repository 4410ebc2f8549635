//! Lifecycle runs: every target evaluates the rules over what it is the first owner of and
//! aborts its expired uploads (`T_LIFECYCLE`); the gateway then deletes each expired object
//! through the ordinary delete path (a fresh stamp, tombstones on every copy), but only while
//! the object is still the version that was evaluated — an object rewritten since is new and
//! is not expired by its predecessor's age. Runs periodically ([`spawn`]) and on demand
//! (`aisle cluster lifecycle`).

use aisle_cluster::proto::{self, LifecycleReport, ObjectQuery};
use serde::{Deserialize, Serialize};

use crate::proxy::Targets;

/// How often lifecycle rules run, and how long their "day" is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LifecycleConfig {
    /// Seconds between runs (0: only on demand).
    #[serde(default = "hour")]
    pub interval_secs: u64,
    /// Seconds in a lifecycle day: 86400, or less to test rules in seconds.
    #[serde(default = "day")]
    pub day_secs: u64,
}

fn hour() -> u64 {
    3600
}

fn day() -> u64 {
    86_400
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            interval_secs: hour(),
            day_secs: day(),
        }
    }
}

/// Most expired objects one target lists per run.
const PER_TARGET: usize = 10_000;
/// Deletes in flight at once.
const CONCURRENCY: usize = 16;

/// What one run did, cluster-wide.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRun {
    /// Objects examined by their first owners.
    pub examined: u64,
    /// Objects deleted because a rule expired them.
    pub expired: u64,
    /// Due objects left alone because they changed or went away since they were evaluated.
    pub changed: u64,
    /// Multipart uploads aborted.
    pub aborted_uploads: u64,
    /// Some target had more due objects than one run takes (the next run goes on).
    pub truncated: bool,
    /// Errors met, each with its target or object.
    pub errors: Vec<String>,
}

/// One run over the whole cluster.
pub async fn run(targets: &Targets, cfg: &LifecycleConfig) -> LifecycleRun {
    use futures::StreamExt;
    let q = proto::LifecycleQuery {
        now_ms: aisle_cluster::now_ms(),
        day_ms: (cfg.day_secs.max(1) * 1000) as i64,
        limit: PER_TARGET,
    };
    let reports: Vec<(String, Result<LifecycleReport, String>)> = targets.lifecycle_all(&q).await;
    let mut run = LifecycleRun::default();
    let mut due = Vec::new();
    for (id, r) in reports {
        match r {
            Ok(r) => {
                run.examined += r.examined;
                run.aborted_uploads += r.aborted_uploads;
                run.truncated |= r.truncated;
                run.errors
                    .extend(r.errors.into_iter().map(|e| format!("{id}: {e}")));
                due.extend(r.expired);
            }
            Err(e) => run.errors.push(format!("{id}: {e}")),
        }
    }
    let outcomes: Vec<Result<bool, String>> = futures::stream::iter(due)
        .map(|e| async move { expire(targets, &e).await })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for o in outcomes {
        match o {
            Ok(true) => run.expired += 1,
            Ok(false) => run.changed += 1,
            Err(e) => run.errors.push(e),
        }
    }
    if run.expired + run.aborted_uploads > 0 || !run.errors.is_empty() {
        tracing::info!(
            expired = run.expired,
            aborted_uploads = run.aborted_uploads,
            changed = run.changed,
            errors = run.errors.len(),
            "lifecycle run done"
        );
    }
    run
}

/// Deletes `e` if it is still the version evaluated: `Ok(false)` when it is not.
async fn expire(targets: &Targets, e: &proto::Expired) -> Result<bool, String> {
    let what = |err: &dyn std::fmt::Display| format!("{}/{}: {err}", e.bucket, e.key);
    if let Some(v) = &e.version_id {
        // A noncurrent version or a lone delete marker: removed by its id (no other write
        // can make it current again).
        let plan = targets
            .write_plan(&e.bucket, &e.key)
            .map_err(|err| what(&err))?;
        let d = targets
            .delete(&plan, &e.bucket, &e.key, Some(v))
            .await
            .map_err(|err| what(&err))?;
        tracing::info!(bucket = %e.bucket, key = %e.key, version = %v, "lifecycle: version expired");
        return Ok(d.found);
    }
    let q = ObjectQuery {
        bucket: e.bucket.clone(),
        key: e.key.clone(),
        ..Default::default()
    };
    match targets.current_meta(&q).await.map_err(|err| what(&err))? {
        Some(meta) if meta.stamp() == e.version => {}
        _ => return Ok(false),
    }
    let plan = targets
        .write_plan(&e.bucket, &e.key)
        .map_err(|err| what(&err))?;
    targets
        .delete(&plan, &e.bucket, &e.key, None)
        .await
        .map_err(|err| what(&err))?;
    tracing::info!(bucket = %e.bucket, key = %e.key, "lifecycle: object expired");
    Ok(true)
}

/// Runs lifecycle rules every `cfg.interval_secs` (none when 0).
pub fn spawn(targets: Targets, cfg: LifecycleConfig) {
    if cfg.interval_secs == 0 {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(cfg.interval_secs)).await;
            run(&targets, &cfg).await;
        }
    });
}
