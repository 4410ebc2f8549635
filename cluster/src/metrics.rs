//! What every node exports to Prometheus: the exposition endpoint's path and its bearer-token
//! check, the label sets the nodes share, the request-latency buckets, and the process metrics
//! (CPU, memory, open files) read from `/proc/self` at scrape time.
//!
//! Names follow Prometheus conventions: an `aisle_` prefix, base units in the name (`_seconds`,
//! `_bytes`), counters end in `_total` (added by `prometheus-client`), and labels take values
//! from small fixed sets (operation names, status classes, mountpath indexes, registered
//! transforms, remote buckets) — never a key.
//!
//! ```
//! use aisle_cluster::metrics::{NodeRegistry, encode};
//! let mut node = NodeRegistry::new("gateway");
//! let reg = node.registry();
//! let c = prometheus_client::metrics::counter::Counter::<u64>::default();
//! reg.register("aisle_example", "An example counter", c.clone());
//! c.inc();
//! let text = encode(&node);
//! assert!(text.contains("aisle_example_total 1"));
//! assert!(text.contains("aisle_process_resident_memory_bytes"));
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Path of the exposition on every node's port (`_aisle` can never be a bucket).
pub const METRICS_PATH: &str = "/_aisle/metrics";

/// `Content-Type` of the exposition (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// An operation and the class of its answer's status (`2xx` … `5xx`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpStatus {
    /// Operation name, from a fixed set.
    pub op: &'static str,
    /// `2xx`, `3xx`, `4xx` or `5xx`.
    pub status: &'static str,
}

/// An operation alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Op {
    /// Operation name, from a fixed set.
    pub op: &'static str,
}

/// The class of an HTTP status, as a label value.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A latency histogram: 0.25 ms to about 16 s in powers of two.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

/// Requests by operation and status class, and their latency: the one pair of families
/// every node keeps. The per-operation handles are resolved once and cached, so counting a
/// request costs two atomic adds and a histogram update, not a label-set hash per family.
pub struct OpMetrics {
    requests: prometheus_client::metrics::family::Family<OpStatus, Counter>,
    latency: prometheus_client::metrics::family::Family<Op, Histogram, fn() -> Histogram>,
    /// By the address of the operation's `&'static str`.
    handles: std::sync::RwLock<std::collections::HashMap<usize, std::sync::Arc<OpHandles>>>,
}

struct OpHandles {
    by_class: [Counter; 5],
    latency: Histogram,
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

impl OpMetrics {
    /// Register `<prefix>_requests_total{op,status}` and
    /// `<prefix>_request_duration_seconds{op}` with `what` in their help texts.
    pub fn register(registry: &mut Registry, prefix: &str, what: &str) -> OpMetrics {
        let m = OpMetrics {
            requests: Default::default(),
            latency: prometheus_client::metrics::family::Family::new_with_constructor(
                latency_histogram,
            ),
            handles: Default::default(),
        };
        registry.register(
            format!("{prefix}_requests"),
            format!("{what} answered, by operation and status class"),
            m.requests.clone(),
        );
        registry.register(
            format!("{prefix}_request_duration_seconds"),
            format!("Time to answer {what} (until the response head), by operation"),
            m.latency.clone(),
        );
        m
    }

    /// Count one answered request.
    pub fn observe(&self, op: &'static str, status: u16, elapsed: std::time::Duration) {
        let key = op.as_ptr() as usize;
        let cached = self
            .handles
            .read()
            .expect("metrics lock")
            .get(&key)
            .cloned();
        let h = match cached {
            Some(h) => h,
            None => {
                let h = std::sync::Arc::new(OpHandles {
                    by_class: CLASSES.map(|status| {
                        self.requests
                            .get_or_create(&OpStatus { op, status })
                            .clone()
                    }),
                    latency: self.latency.get_or_create(&Op { op }).clone(),
                });
                self.handles
                    .write()
                    .expect("metrics lock")
                    .insert(key, h.clone());
                h
            }
        };
        let class = (status / 100).clamp(1, 5) as usize - 1;
        h.by_class[class].inc();
        h.latency.observe(elapsed.as_secs_f64());
    }
}

/// Does `headers` carry `Authorization: Bearer <token>`? Compared in constant time.
pub fn bearer_ok(headers: &http::HeaderMap, token: &str) -> bool {
    let Some(v) = headers.get(http::header::AUTHORIZATION) else {
        return false;
    };
    let Some(given) = v.as_bytes().strip_prefix(b"Bearer ") else {
        return false;
    };
    !token.is_empty() && crate::auth::constant_time_eq(given, token.as_bytes())
}

/// A node's registry with the process metrics registered.
pub struct NodeRegistry {
    registry: Registry,
}

impl NodeRegistry {
    /// A registry for a node of `role` (`gateway` or `target`), with the process metrics and an
    /// `aisle_build_info` line.
    pub fn new(role: &'static str) -> NodeRegistry {
        let mut registry = Registry::default();
        registry.register(
            "aisle_build",
            "The node's role and version",
            Info::new(vec![
                ("role", role.to_string()),
                ("version", env!("CARGO_PKG_VERSION").to_string()),
            ]),
        );
        registry.register_collector(Box::new(ProcessCollector));
        NodeRegistry { registry }
    }

    /// Where the node registers its own metrics.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }
}

/// The process metrics, read from `/proc/self` at every scrape.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(p) = read_proc_self() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(p.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "aisle_process_cpu_seconds",
            "User and system CPU time the process used, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        for (name, help, v) in [
            (
                "aisle_process_resident_memory_bytes",
                "Resident set size of the process",
                p.rss_bytes as f64,
            ),
            (
                "aisle_process_virtual_memory_bytes",
                "Virtual memory size of the process",
                p.vsize_bytes as f64,
            ),
            (
                "aisle_process_open_fds",
                "Open file descriptors of the process",
                p.open_fds as f64,
            ),
            (
                "aisle_process_threads",
                "Threads of the process",
                p.threads as f64,
            ),
            (
                "aisle_process_start_time_seconds",
                "When the process started, Unix seconds",
                p.start_time_seconds,
            ),
        ] {
            let g = ConstGauge::new(v);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// The registry in Prometheus text format.
pub fn encode(node: &NodeRegistry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &node.registry)
        .expect("writing to a String cannot fail");
    out
}

/// What `/proc/self` says of this process.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcSelf {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size.
    pub rss_bytes: u64,
    /// Virtual memory size.
    pub vsize_bytes: u64,
    /// Open descriptors.
    pub open_fds: u64,
    /// Threads.
    pub threads: u64,
    /// Start time, Unix seconds.
    pub start_time_seconds: f64,
}

/// Read `/proc/self/stat` and count `/proc/self/fd` (Linux).
pub fn read_proc_self() -> Option<ProcSelf> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // Field numbers (1-based in proc(5)) minus 3: state is field 3.
    let (utime, stime, threads, starttime, vsize, rss_pages) =
        (num(11), num(12), num(17), num(19), num(20), num(21));
    let tick = clock_ticks();
    let page = page_size();
    let boot = boot_time().unwrap_or(0);
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Some(ProcSelf {
        cpu_seconds: (utime + stime) as f64 / tick,
        rss_bytes: rss_pages * page,
        vsize_bytes: vsize,
        open_fds,
        threads,
        start_time_seconds: boot as f64 + starttime as f64 / tick,
    })
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as u64 } else { 4096 }
}

fn boot_time() -> Option<u64> {
    static BOOT: AtomicU64 = AtomicU64::new(0);
    let b = BOOT.load(Ordering::Relaxed);
    if b != 0 {
        return Some(b);
    }
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let b = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    BOOT.store(b, Ordering::Relaxed);
    Some(b)
}

/// Total and available bytes of the file system holding `dir`.
pub fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    Some((s.f_blocks as u64 * frsize, s.f_bavail as u64 * frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_metrics_are_read() {
        let p = read_proc_self().expect("/proc/self");
        assert!(p.rss_bytes > 0 && p.threads >= 1 && p.open_fds >= 3);
        assert!(p.start_time_seconds > 1.0e9);
    }

    #[test]
    fn bearer_tokens_are_checked() {
        let mut h = http::HeaderMap::new();
        assert!(!bearer_ok(&h, "t0k"));
        h.insert(http::header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(!bearer_ok(&h, "t0k"));
        h.insert(http::header::AUTHORIZATION, "Bearer t0k".parse().unwrap());
        assert!(bearer_ok(&h, "t0k"));
        assert!(!bearer_ok(&h, ""));
    }
}
