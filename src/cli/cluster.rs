//! `aisle cluster ...` and `aisle bucket ...`: membership, liveness, rebalance and copies.

use std::time::Duration;

use aisle_gateway::admin::{BucketPropsChange, ClusterView, TargetView};
use anyhow::{Context, bail};
use bytes::Bytes;

use super::{Connection, admin_call, admin_get};

/// `aisle cluster ...`
#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Show targets (state, liveness, objects per mountpath) and the rebalance.
    Show {
        #[command(flatten)]
        conn: Connection,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
        /// Refresh every `--interval` seconds, with the gateway's throughput since the last
        /// refresh, until Ctrl-C.
        #[arg(long, conflicts_with = "json")]
        watch: bool,
        /// Seconds between refreshes with `--watch`.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
    /// Put a target in maintenance (no new data; its objects get copies elsewhere, so it may
    /// be stopped) or take it out again.
    Maintenance {
        /// `start` or `stop`.
        #[arg(value_parser = ["start", "stop"])]
        action: String,
        /// Target id.
        target: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Drain a target: its objects move to their other holders, then it leaves the map (its
    /// data directory can be deleted then).
    Decommission {
        /// Target id.
        target: String,
        #[command(flatten)]
        conn: Connection,
        /// Follow the drain until the target has left.
        #[arg(long)]
        wait: bool,
    },
    /// Remove a target that is gone for good; copies are re-made from the others.
    Rm {
        /// Target id.
        target: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Verify every stored copy against its ETag on every target; repair corrupt copies from
    /// a good one. Prints what was found and fixed.
    Scrub {
        #[command(flatten)]
        conn: Connection,
        /// Read at most this many MiB/s per target (0: as fast as the disks go).
        #[arg(long, default_value_t = 0)]
        rate_mib: u64,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Run the buckets' lifecycle rules now: expire due objects, abort due multipart uploads.
    /// Prints what was done.
    Lifecycle {
        #[command(flatten)]
        conn: Connection,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Wait until the current rebalance has settled.
    Wait {
        #[command(flatten)]
        conn: Connection,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

/// `aisle bucket ...`
#[derive(clap::Subcommand)]
pub enum BucketCommand {
    /// Add a remote bucket: a cache in front of an S3 bucket (or a directory) — objects are
    /// fetched on first read, writes go through to the remote. Re-adding updates the spec.
    Add {
        /// Bucket name in aisle.
        bucket: String,
        #[command(flatten)]
        remote: super::remote::RemoteArgs,
        #[command(flatten)]
        conn: Connection,
    },
    /// Remove a bucket (S3 DeleteBucket). A remote bucket's cached objects are dropped and
    /// the remote is left as it is; a local bucket must be empty.
    Rm {
        /// Bucket name.
        bucket: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Set a bucket property: `copies=N` (1–3 copies of every object on distinct targets).
    Set {
        /// Bucket name.
        bucket: String,
        /// `copies=N`.
        property: String,
        #[command(flatten)]
        conn: Connection,
    },
}

async fn view(conn: &Connection) -> anyhow::Result<ClusterView> {
    let body = admin_get(conn, "/_aisle/v1/cluster").await?;
    serde_json::from_slice(&body).context("parsing the answer")
}

fn state(t: &TargetView) -> String {
    let mut s = format!("{:?}", t.admin).to_lowercase();
    if let Some(since) = t.health.down_since_ms {
        let secs = (aisle_cluster::now_ms() - since) / 1000;
        s.push_str(&format!(", DOWN for {secs}s"));
        if t.health.out {
            s.push_str(" (out: copies re-made elsewhere)");
        }
    } else {
        s.push_str(", up");
    }
    if t.health.catching_up {
        s.push_str(", catching up");
    }
    s
}

async fn target_action(conn: &Connection, target: &str, action: &str) -> anyhow::Result<()> {
    let path = format!("{}{target}/{action}", aisle_gateway::admin::TARGET_PREFIX);
    admin_call(conn, "POST", &path, Bytes::new()).await?;
    Ok(())
}

async fn wait_settled(
    conn: &Connection,
    timeout: u64,
    leaving: Option<&str>,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
    let bar = indicatif::ProgressBar::new_spinner();
    loop {
        let v = view(conn).await?;
        let gone = leaving.is_none_or(|id| v.targets.iter().all(|t| t.id != id));
        if v.rebalance.settled && gone {
            bar.finish_with_message(format!(
                "rebalance generation {} settled",
                v.rebalance.generation
            ));
            return Ok(());
        }
        let (mut walked, mut total) = (0, 0);
        for t in &v.targets {
            if let Some(s) = &t.status
                && s.rebalance.generation == v.rebalance.generation
            {
                walked += s.rebalance.walked;
                total += s.rebalance.total;
            }
        }
        bar.set_message(format!(
            "rebalance generation {}: {walked}/{total} records walked",
            v.rebalance.generation
        ));
        bar.tick();
        if std::time::Instant::now() > deadline {
            bail!("the rebalance did not settle within {timeout} s (see aisle cluster show)");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Decommission `target` and wait until it has drained and left the map, for at most
/// `timeout` seconds; while another change's rebalance still runs, the request is repeated.
pub async fn decommission_and_wait(
    conn: &Connection,
    target: &str,
    timeout: u64,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(timeout);
    while let Err(e) = target_action(conn, target, "decommission").await {
        if std::time::Instant::now() > deadline {
            return Err(e.context(format!("decommissioning {target}")));
        }
        tracing::debug!(error = %e, "decommission not taken yet");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_settled(conn, timeout, Some(target)).await
}

/// Run an `aisle cluster` command.
pub async fn cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Show {
            conn,
            json,
            watch,
            interval,
        } => {
            let first = view(&conn).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&first)?);
                return Ok(());
            }
            if !watch {
                print_view(&first);
                println!("dashboard: {}/_aisle/ui/", conn.endpoint());
                return Ok(());
            }
            let mut last = (std::time::Instant::now(), first);
            loop {
                tokio::time::sleep(Duration::from_secs(interval.max(1))).await;
                let now = view(&conn).await?;
                let secs = last.0.elapsed().as_secs_f64();
                let rate = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs) as u64;
                // Clear the screen, cursor home.
                print!("\x1b[2J\x1b[H");
                println!(
                    "{}  gateway: out {}/s, in {}/s  (every {interval}s, Ctrl-C to stop)",
                    time_now(),
                    bytesize::ByteSize(rate(last.1.gateway_bytes_out, now.gateway_bytes_out)),
                    bytesize::ByteSize(rate(last.1.gateway_bytes_in, now.gateway_bytes_in)),
                );
                print_view(&now);
                last = (std::time::Instant::now(), now);
            }
        }
        ClusterCommand::Maintenance {
            action,
            target,
            conn,
        } => {
            let a = if action == "start" {
                "maintenance-start"
            } else {
                "maintenance-stop"
            };
            target_action(&conn, &target, a).await?;
            println!("{target}: maintenance {action}ed; a rebalance follows");
            Ok(())
        }
        ClusterCommand::Decommission { target, conn, wait } => {
            target_action(&conn, &target, "decommission").await?;
            println!("{target}: decommissioning (its objects move, then it leaves the map)");
            if wait {
                wait_settled(&conn, 3600, Some(&target)).await?;
                println!("{target} left the cluster; its data directory can be deleted");
            }
            Ok(())
        }
        ClusterCommand::Rm { target, conn } => {
            target_action(&conn, &target, "remove").await?;
            println!("{target} removed; its objects' copies are re-made from the others");
            Ok(())
        }
        ClusterCommand::Wait { conn, timeout } => wait_settled(&conn, timeout, None).await,
        ClusterCommand::Lifecycle { conn, json } => {
            let body =
                admin_call(&conn, "POST", "/_aisle/v1/cluster/lifecycle", Bytes::new()).await?;
            let run: aisle_gateway::lifecycle::LifecycleRun =
                serde_json::from_slice(&body).context("parsing the answer")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
            } else {
                println!(
                    "{} objects examined, {} expired, {} changed since evaluated (kept), {} uploads aborted{}",
                    run.examined,
                    run.expired,
                    run.changed,
                    run.aborted_uploads,
                    if run.truncated {
                        "; more are due: run again"
                    } else {
                        ""
                    }
                );
                for e in &run.errors {
                    println!("  {e}");
                }
            }
            if !run.errors.is_empty() {
                bail!("{} errors", run.errors.len());
            }
            Ok(())
        }
        ClusterCommand::Scrub {
            conn,
            rate_mib,
            json,
        } => {
            let path = format!("/_aisle/v1/cluster/scrub?rate_mib={rate_mib}");
            let body = admin_call(&conn, "POST", &path, Bytes::new()).await?;
            let reports: Vec<aisle_cluster::proto::ScrubReport> =
                serde_json::from_slice(&body).context("parsing the answer")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&reports)?);
            } else {
                for r in &reports {
                    println!(
                        "  {}: {} objects ({} bytes) checked, {} corrupt, {} repaired, {} not repairable",
                        r.id, r.checked, r.bytes, r.corrupt, r.repaired, r.unrepairable
                    );
                    for e in &r.errors {
                        println!("      {e}");
                    }
                }
            }
            let unrepaired: u64 = reports.iter().map(|r| r.unrepairable).sum();
            if unrepaired > 0 {
                bail!("{unrepaired} corrupt copies could not be repaired");
            }
            Ok(())
        }
    }
}

/// Run an `aisle bucket` command.
pub async fn bucket(cmd: BucketCommand) -> anyhow::Result<()> {
    match cmd {
        BucketCommand::Add {
            bucket,
            remote,
            conn,
        } => super::remote::add(&conn, &bucket, remote).await,
        BucketCommand::Rm { bucket, conn } => {
            admin_call(&conn, "DELETE", &format!("/{bucket}"), Bytes::new()).await?;
            println!("removed {bucket}");
            Ok(())
        }
        BucketCommand::Set {
            bucket,
            property,
            conn,
        } => {
            let copies = match property.split_once('=') {
                Some(("copies", n)) => n
                    .parse::<u8>()
                    .with_context(|| format!("copies must be a number, not {n:?}"))?,
                _ => bail!("unknown property {property:?} (try copies=2)"),
            };
            let body = serde_json::to_vec(&BucketPropsChange { copies })?;
            let path = format!("{}{bucket}", aisle_gateway::admin::BUCKET_PREFIX);
            admin_call(&conn, "PUT", &path, Bytes::from(body)).await?;
            println!("{bucket}: copies={copies}; a rebalance adds or removes copies");
            Ok(())
        }
    }
}

/// The terminal view of the cluster: targets, mountpaths, rebalance, buckets.
fn print_view(view: &ClusterView) {
    println!(
        "cluster map v{}: {} targets, {} buckets; rebalance generation {} {}",
        view.version,
        view.targets.len(),
        view.buckets.len(),
        view.rebalance.generation,
        if view.rebalance.settled {
            "settled"
        } else {
            "running"
        },
    );
    for t in &view.targets {
        match (&t.status, &t.error) {
            (Some(s), _) => {
                let total: u64 = s.objects_per_mountpath.iter().sum();
                let r = &s.rebalance;
                println!(
                    "  {}  {}  [{}]  {} objects  rebalance g{}: {}/{} walked, {} pushed, {} removed, {} misplaced{}",
                    t.id,
                    t.url,
                    state(t),
                    total,
                    r.generation,
                    r.walked,
                    r.total,
                    r.pushed,
                    r.removed,
                    r.misplaced,
                    if r.done { ", done" } else { "" }
                );
                for (mp, n) in s.mountpaths.iter().zip(&s.objects_per_mountpath) {
                    println!("      {mp}  {n} objects");
                }
            }
            (None, e) => println!(
                "  {}  {}  [{}]  not answering: {}",
                t.id,
                t.url,
                state(t),
                e.as_deref().unwrap_or("?")
            ),
        }
    }
    for (b, c) in &view.bucket_copies {
        match view.remotes.get(b) {
            None => println!("  bucket {b}: {c} copies"),
            Some(r) => print_remote(view, b, r),
        }
    }
}

fn time_now() -> String {
    let secs = aisle_cluster::now_ms() / 1000;
    format!(
        "{:02}:{:02}:{:02} UTC",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// One remote bucket in `aisle cluster show`: its remote, what the targets cache of it, and
/// whether the remote answers.
fn print_remote(view: &ClusterView, bucket: &str, r: &aisle_cluster::map::RemoteSpec) {
    let reports: Vec<&aisle_cluster::proto::RemoteReport> = view
        .targets
        .iter()
        .filter_map(|t| t.status.as_ref())
        .flat_map(|s| s.remotes.iter())
        .filter(|x| x.bucket == bucket)
        .collect();
    let objects: u64 = reports.iter().map(|x| x.cached_objects).sum();
    let bytes: u64 = reports.iter().map(|x| x.cached_bytes).sum();
    let fetches: u64 = reports.iter().map(|x| x.fetches).sum();
    println!(
        "  bucket {bucket}: remote {}{} (coherence {}): {objects} objects cached ({}), {fetches} fetched",
        r.url,
        r.endpoint
            .as_deref()
            .map(|e| format!(" at {e}"))
            .unwrap_or_default(),
        r.coherence,
        bytesize::ByteSize(bytes),
    );
    let failing: Vec<_> = reports.iter().filter(|x| x.unavailable).collect();
    if let Some(x) = failing.first() {
        let secs = x
            .failing_since_ms
            .map(|t| (aisle_cluster::now_ms() - t) / 1000)
            .unwrap_or(0);
        println!(
            "      REMOTE UNAVAILABLE (last call of {} target(s) failed, for {secs}s): {}",
            failing.len(),
            x.last_error.as_deref().unwrap_or("?")
        );
    }
}
