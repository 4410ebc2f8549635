//! `aisle up`: the embedded cluster — one gateway and N targets as supervised child processes
//! of this one, on loopback, with their data under one directory.
//!
//! Layout of the data directory:
//!
//! ```text
//! <data>/credentials.json      S3 keys and cluster secret, generated on first start (0600)
//! <data>/gateway/              gateway config + cluster metadata
//! <data>/t<i>/                 target i: config, metadata index, mountpaths mp0..mpM
//! <data>/logs/<node>.log       each child's log
//! <data>/run/<node>.pid        each child's pid (for operators and tests)
//! <data>/aisle.env             AWS_* variables, written once the cluster serves
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aisle_cluster::client::NodeClient;
use aisle_cluster::map::ClusterMeta;
use aisle_cluster::proto;
use aisle_gateway::GatewayConfig;
use aisle_target::TargetConfig;
use anyhow::{Context, bail};
use http::Method;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

/// Arguments of `aisle up`.
#[derive(clap::Args)]
pub struct UpArgs {
    /// Data directory (created if missing; reused on restart).
    #[arg(long, default_value = "aisle-data")]
    data: PathBuf,
    /// Gateway port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Number of storage targets.
    #[arg(long, default_value_t = 3)]
    targets: usize,
    /// Mountpaths per target.
    #[arg(long, default_value_t = 2)]
    mountpaths: usize,
    /// Base domain for virtual-hosted-style requests (`bucket.DOMAIN`); repeatable.
    #[arg(long)]
    domain: Vec<String>,
    /// Copies of every object new buckets keep, on distinct targets (1–3, at most --targets).
    #[arg(long, default_value_t = 2)]
    copies: u8,
    /// Seconds a target may be down before its copies are re-made on the others.
    #[arg(long, default_value_t = 60)]
    heal_after: u64,
    /// Seconds the targets have to join and answer at start (a node that exits meanwhile is
    /// restarted); past them `aisle up` fails and names the targets it still waits for.
    #[arg(long, default_value_t = 60)]
    start_timeout: u64,
    /// Seconds between periodic scrubs of every target (0: none; `aisle cluster scrub` runs
    /// one on demand).
    #[arg(long, default_value_t = 86_400)]
    scrub_every: u64,
    /// MiB/s each target reads at most during a periodic scrub.
    #[arg(long, default_value_t = 64)]
    scrub_rate_mib: u64,
    /// Most bytes of remote-bucket objects each mountpath caches (e.g. `50GiB`); the least
    /// recently read are evicted beyond it. Default: no budget, only a full disk evicts.
    #[arg(long)]
    cache_max: Option<bytesize::ByteSize>,
    /// Percent of a mountpath's disk used above which cached remote-bucket objects are evicted
    /// (least recently read first, to 5 points below); 100 turns the rule off.
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    cache_disk_full: u8,
    /// Requests slower than this many milliseconds are logged (warn) and counted.
    #[arg(long, default_value_t = 2000)]
    slow_ms: u64,
    /// MiB of small objects (up to 64 KiB) the gateway keeps in memory and serves without
    /// asking a target, while the targets' change tables show them unchanged; 0 turns it off.
    #[arg(long, default_value_t = 64)]
    keep_small_mib: u64,
    /// Seconds between runs of the buckets' lifecycle rules (0: only `aisle cluster
    /// lifecycle`).
    #[arg(long, default_value_t = 3600)]
    lifecycle_every: u64,
    /// Seconds in a lifecycle "day" (86400; shorter to try rules out).
    #[arg(long, default_value_t = 86_400)]
    lifecycle_day: u64,
    /// Serve every port (S3, admin, intra-cluster) over TLS with a certificate from a CA made
    /// under <data>/tls (kept across restarts); aisle.env then sets AWS_CA_BUNDLE to it.
    #[arg(long)]
    tls: bool,
}

#[derive(Serialize, Deserialize)]
struct Credentials {
    access_key: String,
    secret_key: String,
    cluster_secret: String,
    region: String,
    /// Bearer token of every node's `/_aisle/metrics` (added to older files on start).
    #[serde(default)]
    metrics_token: String,
}

fn load_or_create_credentials(data: &Path) -> anyhow::Result<Credentials> {
    let path = data.join("credentials.json");
    let gen_secret = aisle_cluster::auth::generate_secret;
    if let Ok(raw) = std::fs::read(&path) {
        let mut creds: Credentials =
            serde_json::from_slice(&raw).with_context(|| format!("parsing {}", path.display()))?;
        if creds.metrics_token.is_empty() {
            creds.metrics_token = gen_secret(20);
            write_private(&path, &serde_json::to_vec_pretty(&creds)?)?;
        }
        return Ok(creds);
    }
    let creds = Credentials {
        access_key: format!("AISLE{}", gen_secret(8).to_uppercase()),
        secret_key: gen_secret(20),
        cluster_secret: gen_secret(32),
        region: "us-east-1".into(),
        metrics_token: gen_secret(20),
    };
    write_private(&path, &serde_json::to_vec_pretty(&creds)?)?;
    Ok(creds)
}

/// Write a file readable by its owner only, atomically.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

struct Node {
    name: String,
    config: PathBuf,
    role: &'static str,
    child: Option<Child>,
    restarts: u32,
    last_start: Instant,
}

fn spawn(data: &Path, node: &mut Node) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the aisle binary")?;
    let log_path = data.join("logs").join(format!("{}.log", node.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg(node.role)
        .arg("--config")
        .arg(&node.config)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe; it makes the child exit if this
    // supervisor dies without a chance to stop it (e.g. kill -9).
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", node.name))?;
    if let Some(pid) = child.id() {
        std::fs::write(
            data.join("run").join(format!("{}.pid", node.name)),
            pid.to_string(),
        )?;
    }
    node.child = Some(child);
    node.last_start = Instant::now();
    Ok(())
}

/// The nodes of a cluster that is starting: the waits below keep them running (a node that
/// exits is restarted, as [`supervise`] does later) while they wait for them.
struct Starting<'a> {
    data: &'a Path,
    nodes: &'a mut [Node],
    backoff: &'a mut Backoff,
}

impl Starting<'_> {
    /// Wait for the gateway to write its address into `path`.
    async fn gateway_addr(&mut self, path: &Path, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(s) = std::fs::read_to_string(path) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let log = self.data.join("logs").join("gateway.log");
                bail!(
                    "the gateway did not start within {timeout:?}; the end of {}:\n{}",
                    log.display(),
                    log_tail(&log, 8)
                );
            }
            tend(self.data, self.nodes, self.backoff)?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Wait until every target in `ids` has joined with a URL where it answers.
    async fn targets(
        &mut self,
        client: &NodeClient,
        gateway: &str,
        ids: &[String],
        timeout: Duration,
    ) -> anyhow::Result<()> {
        // No single call may hold the wait past its deadline.
        const CALL: Duration = Duration::from_secs(5);
        let deadline = Instant::now() + timeout;
        let meta_url = format!("{gateway}/_aisle/cluster/v1/meta");
        loop {
            let mut waiting: Vec<&String> = ids.iter().collect();
            if let Ok(Ok(meta)) = tokio::time::timeout(
                CALL,
                client.json::<(), ClusterMeta>(Method::GET, &meta_url, None),
            )
            .await
            {
                let mut still = Vec::new();
                for id in waiting {
                    let answers = match meta.targets.get(id) {
                        Some(t) => {
                            let url = format!("{}{}", t.url, proto::T_STATUS);
                            let call =
                                client.json::<(), proto::TargetStatus>(Method::GET, &url, None);
                            matches!(tokio::time::timeout(CALL, call).await, Ok(Ok(_)))
                        }
                        None => false,
                    };
                    if !answers {
                        still.push(id);
                    }
                }
                waiting = still;
            }
            if waiting.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let tails: Vec<String> = waiting
                    .iter()
                    .map(|id| {
                        let log = self.data.join("logs").join(format!("{id}.log"));
                        format!("the end of {}:\n{}", log.display(), log_tail(&log, 8))
                    })
                    .collect();
                bail!(
                    "timed out after {timeout:?} waiting for {} to join and answer; {}",
                    waiting
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    tails.join("\n")
                );
            }
            tend(self.data, self.nodes, self.backoff)?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Run the embedded cluster until Ctrl-C / SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    if args.targets == 0 || args.mountpaths == 0 {
        bail!("--targets and --mountpaths must be at least 1");
    }
    let data = std::path::absolute(&args.data).context("resolving --data")?;
    for d in ["gateway", "logs", "run"] {
        std::fs::create_dir_all(data.join(d))
            .with_context(|| format!("creating {}", data.join(d).display()))?;
    }
    let creds = load_or_create_credentials(&data)?;
    let _ = std::fs::remove_file(data.join("aisle.env"));
    let ready_file = data.join("run").join("gateway.addr");
    let _ = std::fs::remove_file(&ready_file);

    let listen: SocketAddr = ([127, 0, 0, 1], args.port).into();
    // Fail early with a clear message when the port is taken.
    if args.port != 0 {
        std::net::TcpListener::bind(listen).with_context(|| {
            format!(
                "port {} is not free (choose one with --port, or --port 0)",
                args.port
            )
        })?;
    }
    let tls = if args.tls {
        Some(aisle_cluster::tls::self_signed(&data.join("tls"), &[])?)
    } else {
        None
    };
    let gw_cfg = GatewayConfig {
        listen,
        tls: tls.clone(),
        root: data.join("gateway"),
        cluster_secret: creds.cluster_secret.clone(),
        access_key: creds.access_key.clone(),
        secret_key: creds.secret_key.clone(),
        region: creds.region.clone(),
        domains: args.domain.clone(),
        ready_file: Some(ready_file.clone()),
        default_copies: Some(args.copies.clamp(1, args.targets.min(3) as u8)),
        health: aisle_gateway::config::HealthConfig {
            heal_after_secs: args.heal_after,
            ..Default::default()
        },
        scrub: aisle_gateway::config::ScrubConfig {
            interval_secs: args.scrub_every,
            rate_mib: args.scrub_rate_mib,
        },
        metrics_token: Some(creds.metrics_token.clone()),
        slow_request_ms: args.slow_ms,
        hot_cache_mib: args.keep_small_mib,
        lifecycle: aisle_gateway::lifecycle::LifecycleConfig {
            interval_secs: args.lifecycle_every,
            day_secs: args.lifecycle_day.max(1),
        },
    };
    let gw_cfg_path = data.join("gateway").join("config.json");
    write_private(&gw_cfg_path, &serde_json::to_vec_pretty(&gw_cfg)?)?;
    let mut nodes = vec![Node {
        name: "gateway".into(),
        config: gw_cfg_path,
        role: "gateway",
        child: None,
        restarts: 0,
        last_start: Instant::now(),
    }];
    spawn(&data, &mut nodes[0])?;
    let mut backoff = Backoff::new();
    let addr = Starting {
        data: &data,
        nodes: &mut nodes,
        backoff: &mut backoff,
    }
    .gateway_addr(&ready_file, Duration::from_secs(30))
    .await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = format!("{scheme}://{}", addr.trim());
    // A restarted gateway must come back on the same port (with `--port 0`, the one it was
    // given first): clients hold the endpoint and the targets join there.
    let gw_cfg = GatewayConfig {
        listen: addr
            .trim()
            .parse()
            .with_context(|| format!("gateway address {addr:?}"))?,
        ..gw_cfg
    };
    write_private(&nodes[0].config, &serde_json::to_vec_pretty(&gw_cfg)?)?;

    // Targets of an earlier, larger run are started too, then drained (shrinking the cluster
    // is a decommission): their objects move before they leave.
    let mut extra = Vec::new();
    while data
        .join(format!("t{}", args.targets + extra.len() + 1))
        .join("config.json")
        .exists()
    {
        extra.push(format!("t{}", args.targets + extra.len() + 1));
    }
    let mut ids = Vec::new();
    for i in 0..args.targets + extra.len() {
        let id = format!("t{}", i + 1);
        let root = data.join(&id);
        let cfg = TargetConfig {
            id: id.clone(),
            listen: ([127, 0, 0, 1], 0).into(),
            advertise_host: None,
            root: root.clone(),
            mountpaths: (0..args.mountpaths)
                .map(|m| root.join(format!("mp{m}")))
                .collect(),
            gateway_url: endpoint.clone(),
            cluster_secret: creds.cluster_secret.clone(),
            tls: tls.clone(),
            etl_cache_bytes: aisle_target::config::DEFAULT_ETL_CACHE_BYTES,
            cache_max_bytes: args.cache_max.map(|b| b.as_u64()),
            cache_disk_full: f64::from(args.cache_disk_full) / 100.0,
            metrics_token: Some(creds.metrics_token.clone()),
        };
        std::fs::create_dir_all(&root)?;
        let path = root.join("config.json");
        write_private(&path, &serde_json::to_vec_pretty(&cfg)?)?;
        let mut node = Node {
            name: id.clone(),
            config: path,
            role: "target",
            child: None,
            restarts: 0,
            last_start: Instant::now(),
        };
        spawn(&data, &mut node)?;
        nodes.push(node);
        ids.push(id);
    }
    let client_tls = match &tls {
        Some(t) => Some(aisle_cluster::tls::client_config(&t.ca)?),
        None => None,
    };
    let client = NodeClient::with_tls(&creds.cluster_secret, client_tls);
    Starting {
        data: &data,
        nodes: &mut nodes,
        backoff: &mut backoff,
    }
    .targets(
        &client,
        &endpoint,
        &ids,
        Duration::from_secs(args.start_timeout),
    )
    .await?;
    if !extra.is_empty() {
        // Shrinking the cluster is a decommission of each extra target, through the admin API.
        let conn = crate::cli::Connection::new(
            &endpoint,
            &creds.access_key,
            &creds.secret_key,
            &creds.region,
        )
        .with_ca(tls.as_ref().map(|t| t.ca.clone()));
        for id in &extra {
            eprintln!(
                "aisle: shrinking the cluster: decommissioning {id} (its objects move first)"
            );
            crate::cli::decommission_and_wait(&conn, id, 600).await?;
            eprintln!("aisle: {id} drained and removed from the cluster");
        }
        for node in nodes.iter_mut().filter(|n| extra.contains(&n.name)) {
            if let Some(c) = node.child.as_mut() {
                let _ = c.kill().await;
            }
        }
        nodes.retain(|n| !extra.contains(&n.name));
        for id in &extra {
            let dir = data.join(id);
            let _ = std::fs::rename(&dir, data.join(format!("{id}.decommissioned")));
        }
    }

    let scrape = write_scrape_files(&client, &endpoint, &data, &creds.metrics_token).await?;
    let mut env = format!(
        "export AWS_ENDPOINT_URL={endpoint}\nexport AWS_ACCESS_KEY_ID={}\nexport AWS_SECRET_ACCESS_KEY={}\nexport AWS_DEFAULT_REGION={}\n",
        creds.access_key, creds.secret_key, creds.region
    );
    if let Some(t) = &tls {
        env.push_str(&format!("export AWS_CA_BUNDLE={}\n", t.ca.display()));
    }
    write_private(&data.join("aisle.env"), env.as_bytes())?;
    println!(
        "aisle is up: 1 gateway, {} targets x {} mountpaths",
        args.targets, args.mountpaths
    );
    println!("  endpoint:   {endpoint}");
    println!("  access key: {}", creds.access_key);
    println!("  secret key: {}", creds.secret_key);
    println!("  region:     {}", creds.region);
    println!("  data:       {}", data.display());
    println!("  dashboard:  {endpoint}/_aisle/ui/ (sign in with the keys above)");
    println!(
        "  metrics:    {endpoint}{} and on each target ({} nodes in {}), with\n              Authorization: Bearer $(cat {})",
        aisle_cluster::metrics::METRICS_PATH,
        scrape.nodes,
        scrape.targets_file.display(),
        scrape.token_file.display(),
    );
    println!();
    println!("Try it:");
    println!(
        "  AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY={} aws --endpoint-url {endpoint} --region {} s3 ls",
        creds.access_key, creds.secret_key, creds.region
    );
    println!(
        "or, in any shell: source {}/aisle.env && aws s3 ls",
        data.display()
    );
    println!("Ctrl-C stops the cluster.");

    supervise(&data, &mut nodes, &mut backoff).await
}

/// Where Prometheus finds this cluster's nodes.
struct ScrapeFiles {
    nodes: usize,
    targets_file: PathBuf,
    token_file: PathBuf,
}

/// Write `<data>/metrics-token` (0600) and `<data>/prometheus-targets.json`: every node's
/// address in Prometheus' `file_sd_configs` format (docs/examples/prometheus.yml reads both).
async fn write_scrape_files(
    client: &NodeClient,
    endpoint: &str,
    data: &Path,
    token: &str,
) -> anyhow::Result<ScrapeFiles> {
    let meta: ClusterMeta = client
        .json::<(), ClusterMeta>(
            Method::GET,
            &format!("{endpoint}/_aisle/cluster/v1/meta"),
            None,
        )
        .await
        .context("reading the cluster map")?;
    let host = |url: &str| {
        url.trim_start_matches("http://")
            .trim_start_matches("https://")
            .trim_end_matches('/')
            .to_string()
    };
    let mut groups = vec![serde_json::json!({
        "targets": [host(endpoint)],
        "labels": {"role": "gateway", "node": "gateway"},
    })];
    for t in meta
        .targets
        .values()
        .filter(|t| t.health.down_since_ms.is_none())
    {
        groups.push(serde_json::json!({
            "targets": [host(&t.url)],
            "labels": {"role": "target", "node": t.id},
        }));
    }
    let token_file = data.join("metrics-token");
    write_private(&token_file, token.as_bytes())?;
    let targets_file = data.join("prometheus-targets.json");
    let tmp = targets_file.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&groups)?)?;
    std::fs::rename(&tmp, &targets_file)?;
    Ok(ScrapeFiles {
        nodes: groups.len(),
        targets_file,
        token_file,
    })
}

/// Restart children that exit, until Ctrl-C / SIGTERM; then stop them all.
async fn supervise(data: &Path, nodes: &mut [Node], backoff: &mut Backoff) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => tend(data, nodes, backoff)?,
        }
    }
    eprintln!("aisle: stopping");
    // Targets first, together, so nothing writes to a gateway that is gone; then the gateway.
    // Each gets SIGTERM, then SIGKILL if it has not exited 5 s later.
    let (gateway, targets) = nodes.split_at_mut(1);
    stop_nodes(targets).await;
    stop_nodes(gateway).await;
    for node in nodes.iter() {
        let _ = std::fs::remove_file(data.join("run").join(format!("{}.pid", node.name)));
    }
    let _ = std::fs::remove_file(data.join("aisle.env"));
    eprintln!("aisle: stopped");
    Ok(())
}

/// When each exited node may be started again.
type Backoff = HashMap<String, Instant>;

/// Restart the children that exited, each after its backoff (200 ms, doubling per restart
/// within 30 s of the last start, at most 6.4 s). Runs while the cluster starts as well as
/// after: a node that dies during start is restarted, not waited for in vain.
fn tend(data: &Path, nodes: &mut [Node], backoff: &mut Backoff) -> anyhow::Result<()> {
    for node in nodes.iter_mut() {
        let exited = match node.child.as_mut() {
            Some(c) => c.try_wait()?.map(|s| s.to_string()),
            None => Some("not running".into()),
        };
        let Some(status) = exited else { continue };
        let wait = Duration::from_millis(200 * 2u64.pow(node.restarts.min(5)));
        let due = *backoff
            .entry(node.name.clone())
            .or_insert_with(|| Instant::now() + wait);
        if Instant::now() < due {
            continue;
        }
        backoff.remove(&node.name);
        if node.last_start.elapsed() > Duration::from_secs(30) {
            node.restarts = 0;
        }
        node.restarts += 1;
        let log = data.join("logs").join(format!("{}.log", node.name));
        eprintln!(
            "aisle: {} exited ({status}); restarting. The end of {}:\n{}",
            node.name,
            log.display(),
            log_tail(&log, 3)
        );
        spawn(data, node)?;
    }
    Ok(())
}

/// The last `lines` lines of a node's log, indented, for a message. Only the log's last
/// 16 KiB are read: a long-running node's log can be large.
fn log_tail(path: &Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let mut raw = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
        let _ = f.read_to_end(&mut raw);
    }
    let text = String::from_utf8_lossy(&raw);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// SIGTERM to each of `nodes`, then SIGKILL to those that have not exited 5 s later.
async fn stop_nodes(nodes: &mut [Node]) {
    for child in nodes.iter().filter_map(|n| n.child.as_ref()) {
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for node in nodes.iter_mut() {
        let Some(child) = node.child.as_mut() else {
            continue;
        };
        if tokio::time::timeout_at(deadline, child.wait())
            .await
            .is_err()
        {
            eprintln!("aisle: {} did not stop within 5 s; killing it", node.name);
            let _ = child.kill().await;
        }
    }
}
