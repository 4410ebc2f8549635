//! Shared vocabulary of an aisle cluster: who is in it, where an object lives, and how
//! nodes talk to each other.
//!
//! This crate is for the pieces that the gateway and the targets must agree on byte for byte:
//!
//! * [`map`] — the versioned cluster map (targets and their URLs) and bucket map that the
//!   primary gateway owns and pushes to every node;
//! * [`copies`] — which targets hold an object's copies, take its writes, and answer its reads;
//! * [`etag`] — S3's ETags of stored objects, and checking a byte stream against one;
//! * [`placement`] — highest-random-weight (rendezvous) placement of `(bucket, key)` over targets
//!   and over the mountpaths inside a target;
//! * [`proto`] — the intra-cluster HTTP protocol: paths, query structs, headers and the object
//!   metadata record that travels with every object;
//! * [`listing`] — the rules of an S3 listing (prefix, delimiter, resume point) shared by the
//!   target that scans its index and the gateway that merges the targets' pages;
//! * [`auth`] and [`client`] — the shared cluster secret and the pooled HTTP client that carries it;
//! * [`local`] — the same-host shortcut: a target's Unix socket, taken instead of loopback TCP;
//! * [`changes`] — a target's change counters in shared memory, which let a gateway on its host
//!   keep small objects it read until they change;
//! * [`files`] — byte spans of open files, read at once or streamed;
//! * [`serve`] — the accept loop every node runs (TCP or Unix socket);
//! * [`trace`] — the request id that follows a request from the gateway through every node;
//! * [`metrics`] — what every node exports to Prometheus (process metrics, shared label sets,
//!   the exposition path and its bearer token).
//!
//! It is not for S3 (no XML, no SigV4: that is the gateway's job) and holds no storage code
//! (that is the target's).

pub mod access;
pub mod auth;
pub mod changes;

/// A fresh write stamp: nanoseconds since the epoch, strictly increasing in this process (and
/// across restarts, as long as the clock does not go back). It orders every write of a key
/// ([`proto::ObjectMeta::stamp`]): the primary gateway's for clients' writes, a target's for
/// objects it fetched from a remote.
pub fn stamp() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(x) => last = x,
        }
    }
}

/// Current time, Unix milliseconds (the unit of every timestamp in cluster records).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
pub mod client;
pub mod copies;
pub mod cors;
pub mod etag;
pub mod files;
pub mod lifecycle;
pub mod listing;
pub mod local;
pub mod map;
pub mod metrics;
pub mod placement;
pub mod proto;
pub mod serve;
pub mod tls;
pub mod trace;
pub mod versioning;
