//! Small objects kept in the gateway while their targets say they have not changed.
//!
//! A plain GET of a small object on `aisle up` costs two processes: this gateway, and the
//! target it asks over the descriptor socket. When every target of the cluster lives on this
//! host, the gateway maps each target's change table ([`aisle_cluster::changes`]) and keeps the
//! answers of plain GETs that the target marked stable ([`aisle_cluster::local::Stable`]). A
//! later GET of the same key is answered from here, without a call, if
//!
//! * the cluster map has the same version (membership, liveness, bucket settings and
//!   placement all bump it), and
//! * the stamp of that key — the sum, over every target's table, of the whole-store counter
//!   and the key's counter — is the one taken *before* the answer was fetched.
//!
//! Targets bump their counters after every commit and before they acknowledge it, so no write
//! acknowledged after a fill can leave the fill in use: whichever targets took the write, all
//! are on this host and all are counted. A target that is down cannot commit, and one that
//! restarts maps the same table and bumps it at start.
//!
//! Everything else the gateway does for a GET (signature, policy, bucket checks, the S3
//! response) runs as for any other read; only the call to the target is skipped. Bounded by
//! [`crate::config::GatewayConfig::hot_cache_mib`] (0: off).
//!
//! Not for: targets on other hosts (when any is in the map, nothing is kept), ranges,
//! conditions, versions, parts, transforms, shard reads or remote buckets (those always go to
//! the target), or objects above the size a target checks whole on every read.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aisle_cluster::changes::ChangeView;
use aisle_cluster::client::{NodeClient, ReadBody};
use aisle_cluster::local::{Stable, host_id};
use aisle_cluster::map::{ClusterMeta, TargetInfo};
use aisle_cluster::proto::{ObjectMeta, ObjectQuery, ReadOptions};
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};

/// One kept answer.
#[derive(Clone)]
struct Entry {
    map_version: u64,
    stamp: u64,
    headers: HeaderMap,
    /// The answer's record ([`crate::proxy::Record`]), given again with every use.
    meta: Arc<ObjectMeta>,
    data: Bytes,
    target: TargetInfo,
}

#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<String, Arc<Entry>> for Weight {
    fn weight(&self, key: &String, e: &Arc<Entry>) -> u64 {
        // The bytes, the key and a rough allowance for the headers and the record.
        (e.data.len() + key.len() + 512) as u64
    }
}

/// A target's change table as mapped from its descriptor socket.
#[derive(Clone)]
struct Mapped {
    socket: std::path::PathBuf,
    view: Arc<ChangeView>,
}

/// A target's change table, or why there is none yet.
///
/// A table is mapped again after every change of the map (a target's re-join is one), so that
/// a target whose file was replaced is not read from the old one. Until the new mapping is
/// there, or while the target cannot be asked (it is down: it commits nothing), the previous
/// one serves: a target that restarts maps the same file.
enum Table {
    /// Mapped under map version `map_version`.
    Ready { map_version: u64, table: Mapped },
    /// Being mapped again; the previous mapping, if any.
    Fetching(Option<Mapped>),
    /// The last try failed at `at`; the previous mapping, if any.
    Failed { at: Instant, old: Option<Mapped> },
}

impl Table {
    fn mapped(&self) -> Option<&Mapped> {
        match self {
            Table::Ready { table, .. } => Some(table),
            Table::Fetching(old) | Table::Failed { old, .. } => old.as_ref(),
        }
    }
}

/// Answers of plain GETs of small objects, valid while the change tables say so.
pub struct HotReads {
    client: NodeClient,
    cache: quick_cache::sync::Cache<String, Arc<Entry>, Weight>,
    tables: RwLock<HashMap<String, Table>>,
}

/// What a plain GET may be answered with: taken before the call, kept with its answer.
pub struct Seen {
    map_version: u64,
    stamp: u64,
}

/// How long a target whose table could not be had is left alone before the next try.
const RETRY: Duration = Duration::from_secs(1);

/// How long mapping a target's table may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);

impl HotReads {
    /// A cache of at most `max_bytes` (`None` when 0: nothing is kept).
    pub fn new(client: NodeClient, max_bytes: u64) -> Option<Arc<HotReads>> {
        (max_bytes > 0).then(|| {
            Arc::new(HotReads {
                client,
                cache: quick_cache::sync::Cache::with_weighter(
                    (max_bytes / 4096).max(16) as usize,
                    max_bytes,
                    Weight,
                ),
                tables: RwLock::default(),
            })
        })
    }

    /// Whether a read may be kept or answered from here: a plain GET of the current version.
    pub fn plain(q: &ObjectQuery, opts: &ReadOptions, head: bool) -> bool {
        let c = &opts.conditions;
        !head
            && q.version_id.is_none()
            && q.part.is_none()
            && opts.range.is_none()
            && opts.etl.is_none()
            && opts.archive.is_none()
            && c.if_match.is_none()
            && c.if_none_match.is_none()
            && c.if_modified_since.is_none()
            && c.if_unmodified_since.is_none()
    }

    fn name(q: &ObjectQuery) -> String {
        let mut k = String::with_capacity(q.bucket.len() + 1 + q.key.len());
        k.push_str(&q.bucket);
        k.push('\0');
        k.push_str(&q.key);
        k
    }

    /// The stamp of `q`'s key under `meta`, to take before asking a target. `None`: nothing
    /// can be kept now (a target elsewhere, or one whose table is not mapped yet; its fetch
    /// is started).
    pub fn seen(self: &Arc<Self>, meta: &ClusterMeta, q: &ObjectQuery) -> Option<Seen> {
        let mut stamp = 0u64;
        let mut refetch = Vec::new();
        let mut complete = true;
        {
            let tables = self.tables.read().expect("tables lock");
            for t in meta.targets.values() {
                let socket = t
                    .local
                    .as_ref()
                    .filter(|l| l.host == host_id())?
                    .fds
                    .as_ref()?;
                let table = tables.get(&t.id);
                let mapped = table.and_then(Table::mapped);
                let due = match table {
                    Some(Table::Ready { map_version, .. }) => *map_version != meta.version,
                    Some(Table::Fetching(_)) => false,
                    Some(Table::Failed { at, .. }) => at.elapsed() >= RETRY,
                    None => true,
                };
                if due {
                    refetch.push((t.clone(), mapped.cloned()));
                }
                match mapped.filter(|m| &m.socket == socket) {
                    Some(m) => stamp = stamp.wrapping_add(m.view.stamp(&q.bucket, &q.key)),
                    None => complete = false,
                }
            }
        }
        if !refetch.is_empty() {
            self.fetch(meta.version, refetch);
        }
        complete.then_some(Seen {
            map_version: meta.version,
            stamp,
        })
    }

    /// Map the tables of `targets` (each with its previous mapping), in the background.
    fn fetch(self: &Arc<Self>, map_version: u64, targets: Vec<(TargetInfo, Option<Mapped>)>) {
        {
            let mut tables = self.tables.write().expect("tables lock");
            for (t, old) in &targets {
                tables.insert(t.id.clone(), Table::Fetching(old.clone()));
            }
        }
        let me = self.clone();
        tokio::spawn(async move {
            for (t, old) in targets {
                let socket = t
                    .local
                    .as_ref()
                    .and_then(|l| l.fds.clone())
                    .unwrap_or_default();
                let call = tokio::time::timeout(FETCH_TIMEOUT, me.client.changes_local(&t.url));
                let table = match call.await {
                    Ok(Some(Ok(view))) => Table::Ready {
                        map_version,
                        table: Mapped {
                            socket,
                            view: Arc::new(view),
                        },
                    },
                    other => {
                        if let Ok(Some(Err(e))) = other {
                            tracing::debug!(target = %t.id, error = %e, "change table not mapped");
                        }
                        Table::Failed {
                            at: Instant::now(),
                            old,
                        }
                    }
                };
                me.tables
                    .write()
                    .expect("tables lock")
                    .insert(t.id.clone(), table);
            }
        });
    }

    /// The kept answer to `q`, if it is still right under `meta`.
    pub fn get(
        self: &Arc<Self>,
        meta: &ClusterMeta,
        q: &ObjectQuery,
    ) -> Option<(Response<ReadBody>, TargetInfo)> {
        let name = Self::name(q);
        let e = self.cache.get(name.as_str())?;
        let now = self.seen(meta, q);
        if !now.is_some_and(|s| s.map_version == e.map_version && s.stamp == e.stamp) {
            self.cache.remove(name.as_str());
            return None;
        }
        let mut resp = Response::new(Full::new(e.data.clone()).map_err(|e| match e {}).boxed());
        *resp.headers_mut() = e.headers.clone();
        resp.extensions_mut()
            .insert(crate::proxy::Record(e.meta.clone()));
        Some((resp, e.target.clone()))
    }

    /// Keep `resp`, the answer to `q` from `target`, if the target marked it stable.
    pub fn keep(
        &self,
        seen: Seen,
        q: &ObjectQuery,
        resp: &Response<ReadBody>,
        target: &TargetInfo,
    ) {
        let Some(Stable(data)) = resp.extensions().get::<Stable>() else {
            return;
        };
        if resp.status() != StatusCode::OK {
            return;
        }
        let Some(meta) = crate::proxy::Record::of(resp) else {
            return;
        };
        let e = Entry {
            map_version: seen.map_version,
            stamp: seen.stamp,
            headers: resp.headers().clone(),
            meta: meta.clone(),
            data: data.clone(),
            target: target.clone(),
        };
        self.cache.insert(Self::name(q), Arc::new(e));
    }
}
