//! `aisle bench`: an S3 load generator, for aisle or any other S3 endpoint (or a plain HTTP
//! server with `--unsigned`). PUT, GET or a mix; fixed or ranged object sizes; a concurrency;
//! a duration or a count (both bounded); optionally an `x-ais-etl` pipeline on GETs. Prints
//! throughput and latency percentiles, or JSON for scripts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sigv4::http_request::SignableBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cli::Connection;

type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// Longest run allowed.
const MAX_DURATION: Duration = Duration::from_secs(600);

/// Arguments of `aisle bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    conn: Connection,
    /// Bucket to use (created if missing).
    #[arg(long, default_value = "aisle-bench")]
    bucket: String,
    /// Key prefix of the benchmark objects.
    #[arg(long, default_value = "bench/")]
    prefix: String,
    /// `get`, `put` or `mix`.
    #[arg(long, default_value = "get")]
    op: String,
    /// Share of PUTs in `mix`, percent.
    #[arg(long, default_value_t = 50)]
    put_percent: u32,
    /// Object size, or a range `MIN-MAX` (e.g. `4KiB-1MiB`).
    #[arg(long, default_value = "1MiB")]
    size: String,
    /// Distinct objects (keys).
    #[arg(long, default_value_t = 100)]
    objects: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Run this long (e.g. `10s`, at most 10 minutes).
    #[arg(long, default_value = "10s")]
    duration: String,
    /// Stop after this many requests instead.
    #[arg(long)]
    count: Option<u64>,
    /// Transform GETs with this pipeline (`x-ais-etl`).
    #[arg(long)]
    etl: Option<String>,
    /// Arguments for the pipeline (`x-ais-etl-args`).
    #[arg(long)]
    etl_args: Option<String>,
    /// Walk keys in order instead of at random.
    #[arg(long)]
    sequential: bool,
    /// Do not create the bucket and objects first (they exist, or the server is not S3).
    #[arg(long)]
    no_prepare: bool,
    /// Send unsigned requests (for plain HTTP servers such as nginx).
    #[arg(long)]
    unsigned: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Operation.
    pub op: String,
    /// Requests completed without error.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Object bytes moved.
    pub bytes: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Requests per second.
    pub ops_per_sec: f64,
    /// MiB per second.
    pub mib_per_sec: f64,
    /// Latency percentiles, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// First error seen, if any.
    pub first_error: Option<String>,
}

fn parse_size(s: &str) -> anyhow::Result<(u64, u64)> {
    let one = |x: &str| -> anyhow::Result<u64> {
        Ok(x.trim()
            .parse::<bytesize::ByteSize>()
            .map_err(|e| anyhow::anyhow!("size {x:?}: {e}"))?
            .as_u64())
    };
    match s.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                bail!("size range {s:?} is empty");
            }
            Ok((a, b))
        }
        None => {
            let n = one(s)?;
            Ok((n, n))
        }
    }
}

fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (n, mult) = match s.chars().last() {
        Some('s') => (&s[..s.len() - 1], 1),
        Some('m') => (&s[..s.len() - 1], 60),
        _ => (s, 1),
    };
    let secs: f64 = n
        .parse()
        .with_context(|| format!("duration {s:?} (use e.g. 10s, 1m)"))?;
    let d = Duration::from_secs_f64(secs * mult as f64);
    if d > MAX_DURATION {
        bail!("a run lasts at most {} s", MAX_DURATION.as_secs());
    }
    Ok(d)
}

struct Ctx {
    args: BenchArgs,
    client: Client<HttpConnector, Body>,
    signer: crate::sign::Signer,
    data: Bytes,
    sizes: (u64, u64),
}

impl Ctx {
    fn url(&self, key: &str) -> String {
        format!("{}/{}/{}", self.args.conn.endpoint(), self.args.bucket, key)
    }

    fn key(&self, i: usize) -> String {
        format!("{}{:08}", self.args.prefix, i)
    }

    /// Size of object `i` (stable, so GETs know what to expect).
    fn size_of(&self, i: usize) -> u64 {
        let (a, b) = self.sizes;
        if a == b {
            return a;
        }
        a + (xxhash(i as u64) % (b - a + 1))
    }

    async fn request(
        &self,
        method: http::Method,
        url: &str,
        body: Option<Bytes>,
        etl: bool,
    ) -> anyhow::Result<u64> {
        let mut b = http::Request::builder().method(method.clone()).uri(url);
        if etl {
            if let Some(p) = &self.args.etl {
                b = b.header("x-ais-etl", p);
            }
            if let Some(a) = &self.args.etl_args {
                b = b.header("x-ais-etl-args", a);
            }
        }
        let sent = body.as_ref().map(|b| b.len() as u64).unwrap_or(0);
        let body: Body = match body {
            Some(bytes) => Full::new(bytes).boxed_unsync(),
            None => Empty::new().boxed_unsync(),
        };
        let mut req = b.body(body)?;
        if !self.args.unsigned {
            self.signer.sign(&mut req, SignableBody::UnsignedPayload)?;
        }
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let mut received = 0u64;
        let mut body = resp.into_body();
        while let Some(f) = body.frame().await {
            if let Ok(d) = f?.into_data() {
                received += d.len() as u64;
            }
        }
        if !status.is_success() && status.as_u16() != 409 {
            bail!("{method} {url}: HTTP {status}");
        }
        Ok(sent
            + if method == http::Method::GET {
                received
            } else {
                0
            })
    }

    async fn put(&self, i: usize) -> anyhow::Result<u64> {
        let n = self.size_of(i) as usize;
        let off = (xxhash(i as u64 ^ 0x5eed) as usize) % (self.data.len() - n + 1);
        self.request(
            http::Method::PUT,
            &self.url(&self.key(i)),
            Some(self.data.slice(off..off + n)),
            false,
        )
        .await
    }

    async fn get(&self, i: usize) -> anyhow::Result<u64> {
        self.request(http::Method::GET, &self.url(&self.key(i)), None, true)
            .await
    }
}

fn xxhash(x: u64) -> u64 {
    // splitmix64: cheap, stable spreading of object indexes.
    let mut z = x.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

struct WorkerResult {
    hist: hdrhistogram::Histogram<u64>,
    ok: u64,
    errors: u64,
    bytes: u64,
    first_error: Option<String>,
}

/// Run `aisle bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if !["get", "put", "mix"].contains(&args.op.as_str()) {
        bail!("--op is get, put or mix");
    }
    if args.objects == 0 || args.concurrency == 0 {
        bail!("--objects and --concurrency must be at least 1");
    }
    let sizes = parse_size(&args.size)?;
    let duration = parse_duration(&args.duration)?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(args.concurrency * 2)
        .build(connector);
    let mut data = vec![0u8; (sizes.1 as usize).max(1) + 4096];
    rand::rngs::StdRng::seed_from_u64(7).fill(&mut data[..]);
    let ctx = Arc::new(Ctx {
        signer: args.conn.signer(),
        client,
        data: Bytes::from(data),
        sizes,
        args,
    });
    if !ctx.args.no_prepare {
        let url = format!("{}/{}", ctx.args.conn.endpoint(), ctx.args.bucket);
        ctx.request(http::Method::PUT, &url, None, false)
            .await
            .context("creating the bucket")?;
        if ctx.args.op != "put" {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let mut tasks = Vec::new();
            for _ in 0..ctx.args.concurrency.min(32) {
                let (ctx, next) = (ctx.clone(), next.clone());
                tasks.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= ctx.args.objects {
                            return Ok::<(), anyhow::Error>(());
                        }
                        ctx.put(i).await?;
                    }
                }));
            }
            for t in tasks {
                t.await?.context("writing the benchmark objects")?;
            }
        }
    }
    let started = Instant::now();
    let deadline = started + duration;
    let issued = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..ctx.args.concurrency {
        let (ctx, issued) = (ctx.clone(), issued.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64 + 1);
            let mut r = WorkerResult {
                hist: hdrhistogram::Histogram::new(3).expect("valid histogram"),
                ok: 0,
                errors: 0,
                bytes: 0,
                first_error: None,
            };
            loop {
                let n = issued.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if ctx.args.count.is_some_and(|c| n >= c) || Instant::now() >= deadline {
                    return r;
                }
                let i = if ctx.args.sequential {
                    n as usize % ctx.args.objects
                } else {
                    rng.random_range(0..ctx.args.objects)
                };
                let put = match ctx.args.op.as_str() {
                    "put" => true,
                    "get" => false,
                    _ => rng.random_range(0..100) < ctx.args.put_percent,
                };
                let t = Instant::now();
                let res = if put {
                    ctx.put(i).await
                } else {
                    ctx.get(i).await
                };
                let us = t.elapsed().as_micros() as u64;
                match res {
                    Ok(b) => {
                        r.ok += 1;
                        r.bytes += b;
                        let _ = r.hist.record(us.max(1));
                    }
                    Err(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        }));
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new(3).expect("valid histogram");
    let (mut ok, mut errors, mut bytes, mut first_error) = (0, 0, 0, None);
    for w in workers {
        let r = w.await?;
        hist.add(&r.hist).ok();
        ok += r.ok;
        errors += r.errors;
        bytes += r.bytes;
        first_error = first_error.or(r.first_error);
    }
    let secs = started.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let report = Report {
        op: ctx.args.op.clone(),
        ok,
        errors,
        bytes,
        seconds: secs,
        ops_per_sec: ok as f64 / secs,
        mib_per_sec: bytes as f64 / secs / (1024.0 * 1024.0),
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        max_ms: hist.max() as f64 / 1000.0,
        first_error,
    };
    if ctx.args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} {} x{}: {} ok, {} errors in {:.1} s — {:.0} ops/s, {:.1} MiB/s — latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            report.op,
            ctx.args.size,
            ctx.args.concurrency,
            report.ok,
            report.errors,
            report.seconds,
            report.ops_per_sec,
            report.mib_per_sec,
            report.p50_ms,
            report.p90_ms,
            report.p99_ms,
            report.max_ms
        );
        if let Some(e) = &report.first_error {
            println!("first error: {e}");
        }
    }
    Ok(())
}
