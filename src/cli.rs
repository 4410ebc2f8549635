//! Admin commands (`aisle cluster ...`): they find the cluster the way S3 tools do
//! (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, or flags) and sign every
//! call with SigV4 (aws-sigv4).

use anyhow::{Context, bail};
use aws_sigv4::http_request::SignableBody;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

mod cluster;
mod remote;
mod user;
pub use cluster::{BucketCommand, ClusterCommand, bucket, cluster, decommission_and_wait};
pub use remote::{CacheJobArgs, LsArgs, cache_job, ls};
pub use user::{UserCommand, user};

/// Where the cluster is and how to sign for it.
#[derive(clap::Args)]
pub struct Connection {
    /// Gateway URL.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    endpoint: String,
    /// Access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true)]
    access_key: String,
    /// Secret access key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: String,
    /// Region to sign for.
    #[arg(long, env = "AWS_DEFAULT_REGION", default_value = "us-east-1")]
    region: String,
    /// CA certificates (PEM) an https:// endpoint is verified against (default: the system's).
    #[arg(long, env = "AWS_CA_BUNDLE")]
    ca_bundle: Option<std::path::PathBuf>,
}

/// GET an admin path, signed.
async fn admin_get(conn: &Connection, path: &str) -> anyhow::Result<Bytes> {
    admin_call(conn, "GET", path, Bytes::new()).await
}

/// Call an admin path with a body, signed; the answer in memory.
async fn admin_call(
    conn: &Connection,
    method: &str,
    path: &str,
    body: Bytes,
) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    admin_stream(conn, method, path, body, &mut out).await?;
    Ok(Bytes::from(out))
}

/// Call an admin path with a body, signed; the answer streamed into `out`.
async fn admin_stream(
    conn: &Connection,
    method: &str,
    path: &str,
    body: Bytes,
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<()> {
    let url = format!("{}{path}", conn.endpoint.trim_end_matches('/'));
    let mut req = http::Request::builder()
        .method(method)
        .uri(&url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))?;
    conn.signer().sign(&mut req, SignableBody::Bytes(&body))?;
    // https:// endpoints are verified against AWS_CA_BUNDLE when set (as the AWS tools do),
    // else the system's roots.
    let tls = aisle_cluster::tls::endpoint_client_config(conn.ca_bundle.as_deref())?;
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(https);
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.into_body().collect().await?.to_bytes();
        bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.with_context(|| format!("reading the answer of {url}"))?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)?;
        }
    }
    out.flush()?;
    Ok(())
}

impl Connection {
    /// A connection to `endpoint` with these keys (for callers that hold them, like `aisle up`).
    pub fn new(endpoint: &str, access_key: &str, secret_key: &str, region: &str) -> Self {
        Connection {
            endpoint: endpoint.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            region: region.into(),
            ca_bundle: None,
        }
    }

    /// The same, verifying an https:// endpoint against the CA in `ca` (PEM).
    pub fn with_ca(mut self, ca: Option<std::path::PathBuf>) -> Self {
        self.ca_bundle = ca;
        self
    }

    /// A SigV4 signer for these keys.
    pub fn signer(&self) -> crate::sign::Signer {
        crate::sign::Signer::new(&self.access_key, &self.secret_key, &self.region)
    }

    /// The endpoint without a trailing slash.
    pub fn endpoint(&self) -> &str {
        self.endpoint.trim_end_matches('/')
    }
}

/// `aisle etl ...`
#[derive(clap::Subcommand)]
pub enum EtlCommand {
    /// List the built-in transforms and the alias buckets.
    Ls {
        #[command(flatten)]
        conn: Connection,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Make ALIAS a read-only bucket that serves SOURCE through a pipeline.
    Bind {
        /// Name of the alias bucket.
        alias: String,
        /// Bucket to read from.
        #[arg(long)]
        source: String,
        /// Stages, comma-separated (e.g. `resize,jpeg`).
        #[arg(long)]
        pipeline: String,
        /// Argument string for every stage (e.g. `{"resize":{"w":224,"h":224}}`).
        #[arg(long)]
        args: Option<String>,
        /// Transform every source object up front, in the background (a job).
        #[arg(long)]
        materialize: bool,
        /// With --materialize: follow the job with a progress bar until it ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// Register a transform from a spec file (YAML or JSON: name, communicator, command or
    /// url, env, init_timeout, obj_timeout, deterministic, mode, concurrency).
    Init {
        /// The spec file.
        spec: std::path::PathBuf,
        #[command(flatten)]
        conn: Connection,
    },
    /// Show a registered transform and its state on every target.
    Show {
        /// Transform name.
        name: String,
        #[command(flatten)]
        conn: Connection,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Stop serving a registered transform (its processes are stopped).
    Stop {
        /// Transform name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Serve a stopped transform again.
    Start {
        /// Transform name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Remove a registered transform.
    Rm {
        /// Transform name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Recent log lines of a transform's processes, per target.
    Logs {
        /// Transform name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Recent objects a transform failed on, per target.
    Errors {
        /// Transform name.
        name: String,
        #[command(flatten)]
        conn: Connection,
    },
    /// Offline ETL: transform objects into another bucket, as a job.
    Run {
        /// Stages, comma-separated (e.g. `resize,jpeg`).
        pipeline: String,
        #[command(flatten)]
        sources: SourceArgs,
        /// Bucket for the outputs (same keys).
        #[arg(long)]
        output_bucket: String,
        /// Argument string for every stage.
        #[arg(long)]
        args: Option<String>,
        /// Transform and count, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Follow the job with a progress bar until it ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// Remove an alias bucket (the source is untouched).
    Unbind {
        /// Name of the alias bucket.
        alias: String,
        #[command(flatten)]
        conn: Connection,
    },
}

/// `METHOD /_aisle/v1/etl/spec/NAME{suffix}`, then say what was done.
async fn spec_call(
    conn: &Connection,
    method: &str,
    name: &str,
    suffix: &str,
    done: &str,
) -> anyhow::Result<()> {
    let path = format!("{}{name}{suffix}", aisle_gateway::admin::SPEC_PREFIX);
    admin_call(conn, method, &path, Bytes::new()).await?;
    println!("{done} {name}");
    Ok(())
}

async fn etl_show(conn: &Connection, name: &str) -> anyhow::Result<aisle_gateway::admin::EtlShow> {
    let body = admin_get(
        conn,
        &format!("{}{name}", aisle_gateway::admin::SPEC_PREFIX),
    )
    .await?;
    serde_json::from_slice(&body).context("parsing the answer")
}

/// `aisle archive ...`
#[derive(clap::Subcommand)]
pub enum ArchiveCommand {
    /// Build shards from many objects, server-side (a job).
    Build {
        #[command(flatten)]
        sources: SourceArgs,
        /// Bucket for the shards.
        #[arg(long)]
        output_bucket: String,
        /// Shard names: PREFIX000000.tar, PREFIX000001.tar, ...
        #[arg(long, default_value = "shard-")]
        output_prefix: String,
        /// Target shard size (e.g. 64MiB).
        #[arg(long, default_value = "64MiB")]
        shard_size: String,
        /// Follow the job with a progress bar until it ends.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        conn: Connection,
    },
    /// List the members of a shard: name, size, offset.
    Ls {
        /// `s3://bucket/key` of the shard.
        shard: String,
        #[command(flatten)]
        conn: Connection,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
}

/// `aisle job ...`
#[derive(clap::Subcommand)]
pub enum JobCommand {
    /// List jobs.
    Ls {
        #[command(flatten)]
        conn: Connection,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Show one job.
    Show {
        /// Job id.
        id: String,
        #[command(flatten)]
        conn: Connection,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
        /// Follow it with a progress bar until it ends.
        #[arg(long)]
        wait: bool,
    },
    /// Stop a job after the object in flight.
    Abort {
        /// Job id.
        id: String,
        #[command(flatten)]
        conn: Connection,
    },
}

fn print_job(v: &aisle_gateway::jobs::JobView) {
    println!(
        "{}  {}  {}  {}/{} objects  {} shards  {}  {} errors",
        v.id,
        v.kind,
        v.status,
        v.done,
        v.total,
        v.shards.len(),
        bytesize::ByteSize::b(v.bytes),
        v.errors.len()
    );
}

/// A job's state; with `wait_ms`, once it has ended or after that long, whichever comes first.
async fn job_view(
    conn: &Connection,
    id: &str,
    wait_ms: u64,
) -> anyhow::Result<aisle_gateway::jobs::JobView> {
    let body = admin_get(conn, &format!("/_aisle/v1/jobs/{id}?wait_ms={wait_ms}")).await?;
    serde_json::from_slice(&body).context("parsing the answer")
}

/// Follow a job with a progress bar until it ends.
async fn follow(conn: &Connection, id: &str) -> anyhow::Result<aisle_gateway::jobs::JobView> {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {pos}/{len} objects ({eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    loop {
        // The gateway answers as soon as the job ends, else after half a second: a refresh of
        // the bar, and no poll interval added to the job's time.
        let v = job_view(conn, id, 500).await?;
        bar.set_length(v.total);
        bar.set_position(v.done);
        if v.shards.is_empty() {
            bar.set_message(bytesize::ByteSize(v.bytes).to_string());
        } else {
            bar.set_message(format!("{} shards", v.shards.len()));
        }
        if v.status != "running" {
            bar.finish_and_clear();
            return Ok(v);
        }
    }
}

/// Which objects a job reads: every object under a prefix, the keys of a range template, or
/// the keys listed in a file.
#[derive(clap::Args)]
pub struct SourceArgs {
    /// Bucket of the source objects.
    #[arg(long)]
    source: String,
    /// Every object under this prefix.
    #[arg(long, conflicts_with_all = ["template", "list"])]
    prefix: Option<String>,
    /// The keys of a range template, e.g. `img-{0000..9999}.jpg`.
    #[arg(long, conflicts_with = "list")]
    template: Option<String>,
    /// A file with one key per line.
    #[arg(long)]
    list: Option<std::path::PathBuf>,
}

impl SourceArgs {
    /// The job's sources (reading the `--list` file).
    fn into_sources(self) -> anyhow::Result<aisle_gateway::jobs::Sources> {
        let list = match self.list {
            Some(p) => Some(
                std::fs::read_to_string(&p)
                    .with_context(|| format!("reading {}", p.display()))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            None => None,
        };
        Ok(aisle_gateway::jobs::Sources {
            source: self.source,
            prefix: self.prefix,
            list,
            template: self.template,
        })
    }
}

/// Start a job; with `wait`, follow it to its end (failing unless it is `done`).
async fn submit_job(
    conn: &Connection,
    path: &str,
    spec: Vec<u8>,
    wait: bool,
) -> anyhow::Result<()> {
    let body = admin_call(conn, "POST", path, Bytes::from(spec)).await?;
    let v: aisle_gateway::jobs::JobView =
        serde_json::from_slice(&body).context("parsing the answer")?;
    if !wait {
        println!("started job {} (aisle job show {} --wait)", v.id, v.id);
        return Ok(());
    }
    let v = follow(conn, &v.id).await?;
    print_job(&v);
    v.errors.iter().for_each(|e| println!("  error: {e}"));
    if v.status != "done" {
        bail!("job {} ended {}", v.id, v.status);
    }
    Ok(())
}

/// Run an `aisle job` command.
pub async fn job(cmd: JobCommand) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Ls { conn, json } => {
            let body = admin_get(&conn, "/_aisle/v1/jobs").await?;
            let jobs: Vec<aisle_gateway::jobs::JobView> =
                serde_json::from_slice(&body).context("parsing the answer")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                jobs.iter().for_each(print_job);
            }
            Ok(())
        }
        JobCommand::Show {
            id,
            conn,
            json,
            wait,
        } => {
            let v = if wait {
                follow(&conn, &id).await?
            } else {
                job_view(&conn, &id, 0).await?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_job(&v);
                v.errors.iter().for_each(|e| println!("  error: {e}"));
            }
            Ok(())
        }
        JobCommand::Abort { id, conn } => {
            admin_call(
                &conn,
                "POST",
                &format!("/_aisle/v1/jobs/{id}/abort"),
                Bytes::new(),
            )
            .await?;
            println!("aborting {id}");
            Ok(())
        }
    }
}

/// Run an `aisle archive` command.
pub async fn archive(cmd: ArchiveCommand) -> anyhow::Result<()> {
    match cmd {
        ArchiveCommand::Build {
            sources,
            output_bucket,
            output_prefix,
            shard_size,
            wait,
            conn,
        } => {
            let size: bytesize::ByteSize = shard_size
                .parse()
                .map_err(|e| anyhow::anyhow!("--shard-size {shard_size:?}: {e}"))?;
            let spec = aisle_gateway::jobs::ShardJobSpec {
                sources: sources.into_sources()?,
                output_bucket,
                output_prefix,
                shard_size: size.as_u64(),
            };
            submit_job(
                &conn,
                "/_aisle/v1/jobs/shard",
                serde_json::to_vec(&spec)?,
                wait,
            )
            .await
        }
        ArchiveCommand::Ls { shard, conn, json } => {
            let path = shard
                .strip_prefix("s3://")
                .context("give the shard as s3://bucket/key")?;
            let (bucket, key) = path
                .split_once('/')
                .context("give the shard as s3://bucket/key")?;
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("bucket", bucket)
                .append_pair("key", key)
                .finish();
            let body = admin_get(&conn, &format!("/_aisle/v1/archive?{q}")).await?;
            let members: Vec<aisle_shard::Member> =
                serde_json::from_slice(&body).context("parsing the answer")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&members)?);
                return Ok(());
            }
            for m in &members {
                println!("{:>12}  {:>12}  {}", m.size, m.offset, m.name);
            }
            println!("{} members", members.len());
            Ok(())
        }
    }
}

/// `aisle batch`: many objects and shard members as one tar.
#[derive(clap::Args)]
pub struct BatchArgs {
    /// JSON file: {"entries": [{"bucket","key","archpath"?}...], "missing": "fail"|"placeholder"}.
    #[arg(long)]
    spec: std::path::PathBuf,
    /// Output file (default: standard output).
    #[arg(long, short)]
    output: Option<std::path::PathBuf>,
    #[command(flatten)]
    conn: Connection,
}

/// Run `aisle batch`.
pub async fn batch(args: BatchArgs) -> anyhow::Result<()> {
    let raw =
        std::fs::read(&args.spec).with_context(|| format!("reading {}", args.spec.display()))?;
    let req: aisle_gateway::batch::BatchRequest =
        serde_json::from_slice(&raw).context("parsing the batch")?;
    let body = Bytes::from(serde_json::to_vec(&req)?);
    match &args.output {
        Some(p) => {
            let mut f = std::io::BufWriter::new(std::fs::File::create(p)?);
            admin_stream(&args.conn, "POST", "/_aisle/v1/batch", body, &mut f).await
        }
        None => {
            let mut out = std::io::stdout();
            admin_stream(&args.conn, "POST", "/_aisle/v1/batch", body, &mut out).await
        }
    }
}

/// Run an `aisle etl` command.
pub async fn etl(cmd: EtlCommand) -> anyhow::Result<()> {
    match cmd {
        EtlCommand::Ls { conn, json } => {
            let body = admin_get(&conn, "/_aisle/v1/etl").await?;
            let view: aisle_gateway::admin::EtlView =
                serde_json::from_slice(&body).context("parsing the answer")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(());
            }
            println!("built-in transforms: {}", view.builtins.join(", "));
            for r in &view.registered {
                println!(
                    "registered {} ({}{}){}",
                    r.name,
                    r.communicator,
                    if r.deterministic {
                        ", deterministic"
                    } else {
                        ""
                    },
                    if r.running { "" } else { " STOPPED" }
                );
            }
            if view.aliases.is_empty() {
                println!("no alias buckets");
            }
            for a in &view.aliases {
                println!(
                    "alias {} <- {} | {}{}",
                    a.name,
                    a.alias.source,
                    a.alias.pipeline.join(","),
                    a.alias
                        .args
                        .as_deref()
                        .map(|x| format!("  args {x}"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        EtlCommand::Bind {
            alias,
            source,
            pipeline,
            args,
            materialize,
            wait,
            conn,
        } => {
            let req = aisle_gateway::admin::BindRequest {
                source,
                pipeline,
                args,
                materialize,
            };
            let path = format!("{}{alias}", aisle_gateway::admin::ALIAS_PREFIX);
            let body =
                admin_call(&conn, "PUT", &path, Bytes::from(serde_json::to_vec(&req)?)).await?;
            println!("bound {alias}: read it like any bucket, e.g. aws s3 ls s3://{alias}/");
            let answer: serde_json::Value =
                serde_json::from_slice(&body).context("parsing the answer")?;
            if let Some(id) = answer["job"]["id"].as_str() {
                if wait {
                    let v = follow(&conn, id).await?;
                    print_job(&v);
                    v.errors.iter().for_each(|e| println!("  error: {e}"));
                } else {
                    println!("materializing in job {id} (aisle job show {id} --wait)");
                }
            }
            Ok(())
        }
        EtlCommand::Run {
            pipeline,
            sources,
            output_bucket,
            args,
            dry_run,
            wait,
            conn,
        } => {
            let spec = aisle_gateway::jobs::EtlJobSpec {
                sources: sources.into_sources()?,
                etl: aisle_cluster::proto::EtlSelection {
                    pipeline: pipeline.split(',').map(|s| s.trim().to_string()).collect(),
                    args,
                },
                output_bucket,
                dry_run,
            };
            submit_job(
                &conn,
                "/_aisle/v1/jobs/etl",
                serde_json::to_vec(&spec)?,
                wait,
            )
            .await
        }
        EtlCommand::Init { spec, conn } => {
            let raw = std::fs::read_to_string(&spec)
                .with_context(|| format!("reading {}", spec.display()))?;
            let mut parsed: aisle_cluster::map::EtlSpec = serde_norway::from_str(&raw)
                .with_context(|| format!("parsing {}", spec.display()))?;
            // A relative workdir is relative to the spec file, wherever `aisle` runs.
            if let Some(dir) = parsed
                .workdir
                .clone()
                .filter(|d| !std::path::Path::new(d).is_absolute())
            {
                let spec_dir = std::path::absolute(&spec)?
                    .parent()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_default();
                let joined = std::path::absolute(spec_dir.join(dir))?;
                parsed.workdir = Some(joined.display().to_string());
            }
            let path = format!("{}{}", aisle_gateway::admin::SPEC_PREFIX, parsed.name);
            admin_call(
                &conn,
                "PUT",
                &path,
                Bytes::from(serde_json::to_vec(&parsed)?),
            )
            .await?;
            println!(
                "registered {} ({}); every target now runs it",
                parsed.name, parsed.communicator
            );
            Ok(())
        }
        EtlCommand::Show { name, conn, json } => {
            let show = etl_show(&conn, &name).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&show)?);
                return Ok(());
            }
            println!("{}", serde_json::to_string_pretty(&show.spec)?);
            for (id, st) in &show.targets {
                match st {
                    Ok(s) => println!(
                        "  {id}: {}{}, restarts {}, {} recent errors{}",
                        if !s.installed {
                            "not installed"
                        } else if s.ready {
                            "ready"
                        } else {
                            "not ready"
                        },
                        s.pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
                        s.restarts,
                        s.errors.len(),
                        s.last_error
                            .as_deref()
                            .map(|e| format!("; last: {e}"))
                            .unwrap_or_default()
                    ),
                    Err(e) => println!("  {id}: unreachable: {e}"),
                }
            }
            Ok(())
        }
        EtlCommand::Stop { name, conn } => {
            spec_call(&conn, "POST", &name, "/stop", "stopped").await
        }
        EtlCommand::Start { name, conn } => {
            spec_call(&conn, "POST", &name, "/start", "started").await
        }
        EtlCommand::Rm { name, conn } => spec_call(&conn, "DELETE", &name, "", "removed").await,
        EtlCommand::Logs { name, conn } => {
            for (id, st) in etl_show(&conn, &name).await?.targets {
                println!("== {id}");
                match st {
                    Ok(s) => s.logs.iter().for_each(|l| println!("{l}")),
                    Err(e) => println!("unreachable: {e}"),
                }
            }
            Ok(())
        }
        EtlCommand::Errors { name, conn } => {
            for (id, st) in etl_show(&conn, &name).await?.targets {
                match st {
                    Ok(s) => {
                        for e in s.errors {
                            println!(
                                "{id}  {}  {}  {}  {}",
                                e.status, e.pipeline, e.path, e.message
                            );
                        }
                    }
                    Err(e) => println!("{id}  unreachable: {e}"),
                }
            }
            Ok(())
        }
        EtlCommand::Unbind { alias, conn } => {
            let path = format!("{}{alias}", aisle_gateway::admin::ALIAS_PREFIX);
            admin_call(&conn, "DELETE", &path, Bytes::new()).await?;
            println!("unbound {alias}");
            Ok(())
        }
    }
}
