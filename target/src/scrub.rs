//! Verifying stored bytes: a scrub re-reads every object this target holds and checks it
//! against its ETag ([`aisle_cluster::etag::EtagCheck`]; objects whose ETag is not an MD5 —
//! appended shards — by size); a small object is also checked on every plain read
//! ([`read_checked`]; against the CRC-32C recorded at publication, itself checked against the
//! ETag then). A corrupt copy is replaced by a good one: another target that holds
//! the same version is asked to push it here ([`proto::T_REPLICA_SEND`]), and the copy is
//! checked again as it arrives. Until then reads go to the other copies. Noncurrent versions
//! of buckets with versioning are scrubbed and repaired the same way, version by version.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use aisle_cluster::etag::EtagCheck;
use aisle_cluster::proto::{self, Have, ScrubQuery, ScrubReport, SendQuery};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::server::{ApiError, Resp, State, json_resp, query};
use crate::store::{Store, StoreError, StoredObject, Walked};
use aisle_cluster::versioning::VersionRef;

/// Objects at most this large are checked against their ETag on every plain read (they are
/// read whole at once anyway); larger ones only by a scrub.
pub(crate) const CHECK_ON_READ_MAX: u64 = 64 * 1024;

/// Whether `rec`'s files hold the bytes its ETag (or size) says. Blocking.
pub(crate) fn intact(store: &Store, rec: &StoredObject) -> Result<bool, StoreError> {
    verify(store, rec, Check::etag(rec), |_| {})
}

/// What the bytes are checked against.
enum Check {
    /// The ETag (a scrub, or a record without a CRC).
    Etag(EtagCheck),
    /// The CRC-32C recorded at publication (checked against the ETag then).
    Crc(u32, crc_fast::Digest),
}

impl Check {
    fn etag(rec: &StoredObject) -> Check {
        let (etag, parts) = rec.meta.integrity();
        Check::Etag(EtagCheck::new(etag, parts))
    }

    /// The cheapest check `rec` allows.
    fn cheapest(rec: &StoredObject) -> Check {
        match rec.crc32c {
            Some(crc) => Check::Crc(
                crc,
                crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi),
            ),
            None => Check::etag(rec),
        }
    }

    fn update(&mut self, b: &[u8]) {
        match self {
            Check::Etag(c) => c.update(b),
            Check::Crc(_, d) => d.update(b),
        }
    }

    fn matches(self) -> bool {
        match self {
            Check::Etag(c) => c.matches(),
            Check::Crc(want, d) => d.finalize() as u32 == want,
        }
    }
}

/// Read `rec`'s files in order, each piece checked and shown to `also`: whether they hold
/// `rec.meta.size` bytes that pass `check` (`false` also when a file is missing or short).
/// Blocking.
fn verify(
    store: &Store,
    rec: &StoredObject,
    mut check: Check,
    mut also: impl FnMut(&[u8]),
) -> Result<bool, StoreError> {
    // No bigger than the object: a small object's read allocates a small buffer.
    let mut buf = vec![0u8; rec.meta.size.clamp(1, 256 * 1024) as usize];
    let mut seen = 0u64;
    for (path, size) in store.segment_files(&rec.segments) {
        let f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(StoreError::io(format!("opening {}", path.display()))(e)),
        };
        let mut at = 0u64;
        while at < size {
            let n = (buf.len() as u64).min(size - at) as usize;
            match f.read_exact_at(&mut buf[..n], at) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(StoreError::io(format!("reading {}", path.display()))(e)),
            }
            check.update(&buf[..n]);
            also(&buf[..n]);
            at += n as u64;
        }
        seen += size;
    }
    Ok(seen == rec.meta.size && check.matches())
}

/// A plain read of a small object (at most [`CHECK_ON_READ_MAX`] bytes): its bytes, read once
/// and checked (against its CRC-32C when the record has one, else its ETag); they are the
/// answer. A corrupt copy is not served (the
/// gateway reads another copy) and is repaired in the background.
pub(crate) fn read_checked(
    state: &Arc<State>,
    q: &proto::ObjectQuery,
    rec: &StoredObject,
) -> Result<bytes::Bytes, ApiError> {
    let (bucket, key) = (q.bucket.as_str(), q.key.as_str());
    let mut data = Vec::with_capacity(rec.meta.size as usize);
    if verify(&state.store, rec, Check::cheapest(rec), |b| {
        data.extend_from_slice(b)
    })? {
        return Ok(data.into());
    }
    tracing::error!(%bucket, %key, "corrupt copy: not served; repairing from another copy");
    let (state2, b, k, stamp, v) = (
        state.clone(),
        bucket.to_string(),
        key.to_string(),
        rec.meta.stamp(),
        // A read by version id repairs that version.
        q.version_id.as_ref().map(|_| VersionRef::of(&rec.meta)),
    );
    tokio::spawn(async move {
        if let Err(e) = repair(&state2, &b, &k, stamp, v).await {
            tracing::error!(bucket = %b, key = %k, error = %e, "corrupt copy not repaired");
        }
    });
    Err(crate::server::api_err(
        500,
        "CorruptCopy",
        format!("this target's copy of {bucket}/{key} is corrupt"),
    ))
}

/// Get a good copy of version `stamp` of `(bucket, key)` — its current one, or the version
/// `which` — from another target that holds it.
pub(crate) async fn repair(
    state: &Arc<State>,
    bucket: &str,
    key: &str,
    stamp: u64,
    which: Option<VersionRef>,
) -> Result<(), String> {
    let (me, peers) = {
        let meta = state.meta.read().expect("meta lock");
        let me = meta
            .targets
            .get(&state.id)
            .map(|t| t.url.clone())
            .ok_or("this target is not in the cluster map")?;
        let peers: Vec<(String, String)> = meta
            .read_order(bucket, key)
            .into_iter()
            .filter(|t| t.id != state.id)
            .map(|t| (t.id.clone(), t.url.clone()))
            .collect();
        (me, peers)
    };
    let q = SendQuery {
        bucket: bucket.into(),
        key: key.into(),
        to: me,
        version_id: which.map(|w| w.id()),
    };
    let mut why = Vec::new();
    for (id, url) in peers {
        let call = format!("{url}{}", proto::path_and_query(proto::T_REPLICA_SEND, &q));
        match state
            .client
            .json::<(), Have>(Method::POST, &call, None)
            .await
        {
            // The peer pushed its copy and this target now holds it (or something newer).
            Ok(h) if h.version >= stamp => {
                tracing::info!(%bucket, %key, from = %id, "corrupt copy repaired");
                return Ok(());
            }
            Ok(h) => why.push(format!("{id} holds only version {}", h.version)),
            Err(e) => why.push(format!("{id}: {e}")),
        }
    }
    Err(if why.is_empty() {
        "no other target holds a copy".into()
    } else {
        why.join("; ")
    })
}

/// Check every object this target holds, reading at most `rate_mib` MiB/s (0: no limit);
/// repair what is corrupt.
pub(crate) async fn scrub(state: &Arc<State>, rate_mib: u64) -> ScrubReport {
    let mut report = ScrubReport {
        id: state.id.clone(),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    for kind in [Walked::Objects, Walked::Versions] {
        scrub_walk(state, kind, rate_mib, started, &mut report).await;
    }
    tracing::info!(
        checked = report.checked,
        corrupt = report.corrupt,
        repaired = report.repaired,
        unrepairable = report.unrepairable,
        "scrub done"
    );
    report
}

/// Check the records of one kind: current objects, or noncurrent versions (delete markers
/// have no bytes and are skipped).
async fn scrub_walk(
    state: &Arc<State>,
    kind: Walked,
    rate_mib: u64,
    started: std::time::Instant,
    report: &mut ScrubReport,
) {
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (store, from) = (state.store.clone(), after.clone());
        let batch =
            match tokio::task::spawn_blocking(move || store.walk(kind, from.as_deref(), 256)).await
            {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    report.errors.push(format!("reading the index: {e}"));
                    break;
                }
                Err(e) => {
                    report.errors.push(format!("scrub task: {e}"));
                    break;
                }
            };
        let Some(last) = batch.last() else { break };
        after = Some(last.raw.clone());
        for e in batch {
            if e.version.is_some() && e.have.deleted {
                continue; // a delete marker
            }
            let store = state.store.clone();
            let (b, k, v) = (e.bucket.clone(), e.key.clone(), e.version);
            let checked = tokio::task::spawn_blocking(move || {
                let rec = store.record(&b, &k, v.as_ref())?;
                Ok::<_, StoreError>((intact(&store, &rec)?, rec.meta.size, rec.meta.stamp()))
            })
            .await;
            let (ok, size, stamp) = match checked {
                Ok(Ok(v)) => v,
                // Deleted meanwhile.
                Ok(Err(StoreError::NoSuchKey | StoreError::NoSuchVersion)) => continue,
                Ok(Err(x)) => {
                    note(report, format!("{}/{}: {x}", e.bucket, e.key));
                    continue;
                }
                Err(x) => {
                    note(report, format!("{}/{}: {x}", e.bucket, e.key));
                    continue;
                }
            };
            report.checked += 1;
            report.bytes += size;
            if rate_mib > 0 {
                // Keep the average rate at or under the limit.
                let due = std::time::Duration::from_secs_f64(
                    report.bytes as f64 / (rate_mib as f64 * 1024.0 * 1024.0),
                );
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
            if ok {
                continue;
            }
            report.corrupt += 1;
            match repair(state, &e.bucket, &e.key, stamp, e.version).await {
                Ok(()) => report.repaired += 1,
                Err(why) => {
                    report.unrepairable += 1;
                    note(
                        report,
                        format!("{}/{}: corrupt, not repaired: {why}", e.bucket, e.key),
                    );
                }
            }
        }
    }
}

fn note(r: &mut ScrubReport, e: String) {
    if r.errors.len() < 100 {
        r.errors.push(e);
    }
}

/// POST [`proto::T_SCRUB`].
pub(crate) async fn answer(state: &Arc<State>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let q: ScrubQuery = query(&req)?;
    Ok(json_resp(StatusCode::OK, &scrub(state, q.rate_mib).await))
}
