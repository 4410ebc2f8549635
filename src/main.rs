//! `aisle`: one binary for every role of an aisle cluster.
//!
//! * `aisle up` — the embedded cluster: a gateway and N targets as supervised child processes;
//! * `aisle gateway --config F` / `aisle target --config F` — single nodes for real deployments;
//! * `aisle cluster show` — what the cluster looks like (for scripts: `--json`);
//! * `aisle etl ...` — transforms and alias buckets;
//! * `aisle archive ls|build`, `aisle batch`, `aisle job ...` — shards and jobs.
//!
//! This file only parses the command line and hands over to the library crates; `up` (the
//! supervisor) and `cli` (admin commands) live next to it.

mod bench;
mod cli;
mod logs;
mod sign;
mod up;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Every aisle process allocates through mimalloc: per-thread heaps without the arena locks
/// and cross-thread wake-ups glibc's malloc showed on the small-request path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "aisle",
    version,
    about = "An S3 storage cluster with transforms next to the data"
)]
struct Cli {
    /// Log lines as `text` or `json` (one object per line, with the request id of each line's
    /// request). `aisle up` passes it on to its nodes.
    #[arg(long, global = true, env = "AISLE_LOG_FORMAT", default_value = "text",
          value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the embedded cluster: 1 gateway + N targets on loopback, data under --data.
    Up(up::UpArgs),
    /// Run one gateway node from a JSON config file.
    Gateway {
        /// Path of the gateway's JSON config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Run one storage target from a JSON config file.
    Target {
        /// Path of the target's JSON config.
        #[arg(long)]
        config: PathBuf,
    },
    /// Inspect the cluster; maintenance, decommission and removal of targets.
    Cluster {
        #[command(subcommand)]
        command: cli::ClusterCommand,
    },
    /// Buckets: add a remote bucket, remove one, set properties (copies).
    /// Users and their access keys: who may use S3 besides the admin (docs/s3.md, "Users").
    User {
        #[command(subcommand)]
        command: cli::UserCommand,
    },
    Bucket {
        #[command(subcommand)]
        command: cli::BucketCommand,
    },
    /// Warm the cache of a remote bucket: each target fetches the objects it owns.
    Prefetch(cli::CacheJobArgs),
    /// Drop cached objects of a remote bucket (the remote is untouched).
    Evict(cli::CacheJobArgs),
    /// List what the cluster caches of a remote bucket.
    Ls(cli::LsArgs),
    /// Load-test an S3 endpoint (aisle or any other): throughput and latency.
    Bench(bench::BenchArgs),
    /// Jobs: list, follow, abort.
    Job {
        #[command(subcommand)]
        command: cli::JobCommand,
    },
    /// Many objects and shard members, in order, as one tar (GetBatch).
    Batch(cli::BatchArgs),
    /// Shards: list the members of an archive.
    Archive {
        #[command(subcommand)]
        command: cli::ArchiveCommand,
    },
    /// Transforms: list them, bind alias buckets.
    Etl {
        #[command(subcommand)]
        command: cli::EtlCommand,
    },
}

fn init_logging(format: &str) {
    logs::init(format);
    // Children (`aisle up` starts the nodes) log the same way.
    // SAFETY: called once at start, before any thread is spawned.
    unsafe { std::env::set_var("AISLE_LOG_FORMAT", format) };
}

fn read_config<T: serde::de::DeserializeOwned>(path: &PathBuf) -> anyhow::Result<T> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&raw).with_context(|| format!("parsing {}", path.display()))
}

/// Run a node until it fails or SIGINT/SIGTERM arrives.
async fn serve_until_signal<E: std::error::Error + Send + Sync + 'static>(
    node: impl std::future::Future<Output = Result<(), E>>,
) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = node => r.map_err(anyhow::Error::from),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    }
}

/// An error and its causes on one line. Library errors already name their source in their
/// message (`"{context}: {source}"`), so a cause whose text is already there is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("aisle: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("aisle: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Gateway { config } => {
            let cfg: aisle_gateway::GatewayConfig = read_config(&config)?;
            serve_until_signal(aisle_gateway::run(cfg)).await
        }
        Command::Target { config } => {
            let cfg: aisle_target::TargetConfig = read_config(&config)?;
            serve_until_signal(aisle_target::run(cfg)).await
        }
        Command::Cluster { command } => cli::cluster(command).await,
        Command::Bucket { command } => cli::bucket(command).await,
        Command::User { command } => cli::user(command).await,
        Command::Prefetch(args) => cli::cache_job("prefetch", args).await,
        Command::Evict(args) => cli::cache_job("evict", args).await,
        Command::Ls(args) => cli::ls(args).await,
        Command::Etl { command } => cli::etl(command).await,
        Command::Archive { command } => cli::archive(command).await,
        Command::Batch(args) => cli::batch(args).await,
        Command::Job { command } => cli::job(command).await,
        Command::Bench(args) => bench::run(args).await,
    }
}
