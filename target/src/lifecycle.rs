//! Lifecycle rules on a target: which of the objects (and, in buckets with versioning, the
//! noncurrent versions and delete markers) it is the first owner of are due for expiration,
//! and which of its pending multipart uploads are due for abort
//! ([`aisle_cluster::lifecycle`] decides). Uploads live on one target and are aborted here;
//! expired objects are only listed — the gateway deletes them, with a stamp and tombstones on
//! every copy like any other delete, and only if the object is still the version evaluated.

use std::sync::Arc;

use aisle_cluster::lifecycle::{Candidate, LifecycleRule};
use aisle_cluster::map::{BucketProps, ClusterMeta};
use aisle_cluster::proto::{Expired, LifecycleQuery, LifecycleReport, ListQuery, ObjectMeta};
use http::{Request, StatusCode};
use hyper::body::Incoming;

use crate::server::{ApiError, Resp, State, blocking, json_resp, query};
use crate::store::Walked;

/// Objects read from the index per step.
const PAGE: usize = 1000;

pub(crate) async fn answer(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: LifecycleQuery = query(&req)?;
    let state = state.clone();
    let report = blocking(move || Ok(evaluate(&state, &q))).await?;
    if report.aborted_uploads > 0 || !report.expired.is_empty() {
        tracing::info!(
            expired = report.expired.len(),
            aborted_uploads = report.aborted_uploads,
            "lifecycle evaluated"
        );
    }
    Ok(json_resp(StatusCode::OK, &report))
}

/// One evaluation of every bucket's rules. Blocking (index reads).
fn evaluate(state: &State, q: &LifecycleQuery) -> LifecycleReport {
    let meta = state.meta.read().expect("meta lock").clone();
    let mut report = LifecycleReport::default();
    // Remote buckets are left alone: expiring their objects would delete them on the remote.
    for (bucket, props) in meta
        .buckets
        .iter()
        .filter(|(_, p)| !p.lifecycle.is_empty() && p.remote.is_none())
    {
        abort_uploads(state, bucket, &props.lifecycle, q, &mut report);
        let mut after = None;
        loop {
            let page = match state.store.list(&ListQuery {
                versions: false,
                after_version: None,
                bucket: bucket.clone(),
                prefix: String::new(),
                delimiter: None,
                after: after.clone(),
                limit: PAGE,
            }) {
                Ok(p) => p,
                Err(e) => {
                    report.errors.push(format!("listing {bucket}: {e}"));
                    break;
                }
            };
            for item in &page.items {
                let aisle_cluster::listing::ListItem::Object(o) = item else {
                    continue;
                };
                // Only the first owner decides, so each object is examined once in the cluster.
                let first = meta.holders(bucket, &o.key, 1);
                if first.first().map(|t| t.id.as_str()) != Some(state.id.as_str()) {
                    continue;
                }
                let rec = match state.store.get(bucket, &o.key) {
                    Ok(r) => r,
                    Err(_) => continue, // deleted meanwhile
                };
                report.examined += 1;
                let c = Candidate {
                    key: &o.key,
                    size: rec.meta.size,
                    mtime_ms: rec.meta.mtime_ms,
                    tags: &rec.meta.attrs.tags,
                };
                if props
                    .lifecycle
                    .iter()
                    .any(|r| r.expires(&c, q.now_ms, q.day_ms))
                {
                    if report.expired.len() == q.limit {
                        report.truncated = true;
                        return report;
                    }
                    report.expired.push(Expired {
                        bucket: bucket.clone(),
                        key: o.key.clone(),
                        version: rec.meta.stamp(),
                        version_id: None,
                    });
                }
            }
            if !page.truncated {
                break;
            }
            after = page.items.last().map(|i| i.name().to_string());
        }
    }
    expire_versions(state, &meta, q, &mut report);
    report
}

/// The noncurrent-version rules: walk the noncurrent versions and delete markers this target
/// holds, key by key, and list those due — a noncurrent version `noncurrent_days` after a
/// newer one replaced it (beyond the `newer_noncurrent` newest), a delete marker that is the
/// only version of its key left.
fn expire_versions(
    state: &State,
    meta: &ClusterMeta,
    q: &LifecycleQuery,
    report: &mut LifecycleReport,
) {
    let wants = |p: &BucketProps| {
        p.remote.is_none()
            && p.lifecycle
                .iter()
                .any(|r| r.noncurrent_days.is_some() || r.expired_object_delete_marker)
    };
    if !meta.buckets.values().any(wants) {
        return;
    }
    let mut after: Option<Vec<u8>> = None;
    let mut last: Option<(String, String)> = None;
    loop {
        let page = match state.store.walk(Walked::Versions, after.as_deref(), PAGE) {
            Ok(p) => p,
            Err(e) => {
                report.errors.push(format!("walking versions: {e}"));
                return;
            }
        };
        let Some(end) = page.last() else { return };
        after = Some(end.raw.clone());
        for e in &page {
            let this = (e.bucket.clone(), e.key.clone());
            if last.as_ref() == Some(&this) {
                continue; // the key's versions were all looked at with its first one
            }
            last = Some(this);
            let Some(props) = meta.buckets.get(&e.bucket).filter(|p| wants(p)) else {
                continue;
            };
            let first = meta.holders(&e.bucket, &e.key, 1);
            if first.first().map(|t| t.id.as_str()) != Some(state.id.as_str()) {
                continue;
            }
            let versions = match state.store.versions_of(&e.bucket, &e.key) {
                Ok(v) => v,
                Err(x) => {
                    report
                        .errors
                        .push(format!("versions of {}/{}: {x}", e.bucket, e.key));
                    continue;
                }
            };
            for due in due_versions(&props.lifecycle, &e.key, &versions, q) {
                if report.expired.len() == q.limit {
                    report.truncated = true;
                    return;
                }
                report.expired.push(Expired {
                    bucket: e.bucket.clone(),
                    key: e.key.clone(),
                    version: due.stamp(),
                    version_id: Some(aisle_cluster::versioning::id_or_null(
                        due.version_id.as_deref(),
                    )),
                });
            }
        }
    }
}

/// Which of one key's versions (newest first, the current one included) the rules remove.
fn due_versions<'v>(
    rules: &[LifecycleRule],
    key: &str,
    versions: &'v [crate::store::StoredObject],
    q: &LifecycleQuery,
) -> Vec<&'v ObjectMeta> {
    let mut out = Vec::new();
    if let [only] = versions
        && only.meta.delete_marker
    {
        if rules.iter().any(|r| r.removes_marker(key)) {
            out.push(&only.meta);
        }
        return out;
    }
    // Every version but the newest is noncurrent since the next newer one was written.
    for (newer, pair) in versions.windows(2).enumerate() {
        let (successor, v) = (&pair[0].meta, &pair[1].meta);
        if v.delete_marker {
            continue;
        }
        let c = Candidate {
            key,
            size: v.size,
            mtime_ms: v.mtime_ms,
            tags: &v.attrs.tags,
        };
        if rules
            .iter()
            .any(|r| r.expires_noncurrent(&c, successor.mtime_ms, newer, q.now_ms, q.day_ms))
        {
            out.push(v);
        }
    }
    out
}

fn abort_uploads(
    state: &State,
    bucket: &str,
    rules: &[aisle_cluster::lifecycle::LifecycleRule],
    q: &LifecycleQuery,
    report: &mut LifecycleReport,
) {
    let uploads = match state.store.list_uploads(bucket, "") {
        Ok(u) => u,
        Err(e) => {
            report.errors.push(format!("uploads of {bucket}: {e}"));
            return;
        }
    };
    for u in uploads {
        if rules
            .iter()
            .any(|r| r.aborts(&u.key, u.initiated_ms, q.now_ms, q.day_ms))
        {
            match state.store.abort(bucket, &u.key, &u.upload_id) {
                Ok(()) => {
                    report.aborted_uploads += 1;
                    tracing::info!(%bucket, key = %u.key, upload = %u.upload_id, "lifecycle: upload aborted");
                }
                Err(e) => report.errors.push(format!(
                    "aborting upload {} of {bucket}/{}: {e}",
                    u.upload_id, u.key
                )),
            }
        }
    }
}
