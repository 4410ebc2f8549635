//! Remote buckets from the command line: `aisle bucket add NAME --remote …`, `aisle prefetch`,
//! `aisle evict`, `aisle ls --cached`.

use aisle_cluster::map::{Coherence, RemoteSpec};
use anyhow::{Context, bail};
use bytes::Bytes;

use super::{Connection, SourceArgs, admin_call, admin_get, submit_job};

/// Where a remote bucket's objects live and how to reach them.
#[derive(clap::Args)]
pub struct RemoteArgs {
    /// `s3://BUCKET[/PREFIX]` (any S3 store) or `file:///DIR` (a directory on every target's
    /// host).
    #[arg(long)]
    remote: String,
    /// The remote's S3 endpoint (default: AWS for the region).
    #[arg(long, env = "AISLE_REMOTE_ENDPOINT")]
    remote_endpoint: Option<String>,
    /// The remote's region.
    #[arg(long, env = "AISLE_REMOTE_REGION", default_value = "us-east-1")]
    remote_region: String,
    /// The remote's access key id (or a profile of a credentials file).
    #[arg(long, env = "AISLE_REMOTE_ACCESS_KEY_ID", hide_env_values = true)]
    remote_access_key: Option<String>,
    /// The remote's secret access key.
    #[arg(long, env = "AISLE_REMOTE_SECRET_ACCESS_KEY", hide_env_values = true)]
    remote_secret_key: Option<String>,
    /// Session token of temporary credentials for the remote.
    #[arg(long, env = "AISLE_REMOTE_SESSION_TOKEN", hide_env_values = true)]
    remote_session_token: Option<String>,
    /// Take the remote's keys from this profile of an AWS credentials file.
    #[arg(long)]
    remote_profile: Option<String>,
    /// The credentials file for `--remote-profile` (default `~/.aws/credentials`).
    #[arg(long)]
    remote_credentials_file: Option<std::path::PathBuf>,
    /// Send unsigned requests (a public bucket).
    #[arg(long)]
    anonymous: bool,
    /// Virtual-hosted-style requests (`BUCKET.endpoint`) instead of path-style.
    #[arg(long)]
    virtual_hosted: bool,
    /// How stale a cached object may be: `never` (immutable data), `validate` (ask the remote
    /// on every read) or `ttl=DURATION` (e.g. `ttl=10m`).
    #[arg(long, default_value = "never")]
    coherence: Coherence,
    /// How long a remote call may take before clients get 503 SlowDown (e.g. `10s`).
    #[arg(long, default_value = "10s", value_parser = parse_secs)]
    remote_timeout: u64,
}

fn parse_secs(s: &str) -> Result<u64, String> {
    aisle_cluster::map::parse_seconds(s)
}

impl RemoteArgs {
    /// The spec, with credentials from the flags, their environment variables, or a
    /// credentials file.
    fn into_spec(self) -> anyhow::Result<RemoteSpec> {
        let (mut access, mut secret, mut token) = (
            self.remote_access_key,
            self.remote_secret_key,
            self.remote_session_token,
        );
        if let Some(profile) = &self.remote_profile {
            let path = match self.remote_credentials_file {
                Some(p) => p,
                None => std::path::PathBuf::from(
                    std::env::var("HOME").context("no HOME for ~/.aws/credentials")?,
                )
                .join(".aws/credentials"),
            };
            let (a, s, t) = read_profile(&path, profile)?;
            access = Some(a);
            secret = Some(s);
            token = token.or(t);
        }
        let is_s3 = self.remote.starts_with("s3://");
        match (&access, &secret) {
            (Some(_), Some(_)) if self.anonymous => {
                bail!("--anonymous and remote credentials exclude each other")
            }
            (Some(_), Some(_)) => {}
            (None, None) if self.anonymous || !is_s3 => {}
            (None, None) => bail!(
                "no credentials for the remote: give --remote-access-key and \
                 --remote-secret-key (or AISLE_REMOTE_ACCESS_KEY_ID / \
                 AISLE_REMOTE_SECRET_ACCESS_KEY), --remote-profile, or --anonymous"
            ),
            _ => bail!("give both the remote's access key and its secret key"),
        }
        Ok(RemoteSpec {
            url: self.remote,
            endpoint: self.remote_endpoint,
            region: self.remote_region,
            access_key: access,
            secret_key: secret,
            session_token: token,
            virtual_hosted: self.virtual_hosted,
            coherence: self.coherence,
            timeout_secs: self.remote_timeout,
        })
    }
}

/// The keys of `[profile]` in an AWS credentials file.
fn read_profile(
    path: &std::path::Path,
    profile: &str,
) -> anyhow::Result<(String, String, Option<String>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut in_profile = false;
    let (mut a, mut s, mut t) = (None, None, None);
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = name.trim() == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = Some(v.trim().to_string());
            match k.trim() {
                "aws_access_key_id" => a = v,
                "aws_secret_access_key" => s = v,
                "aws_session_token" => t = v,
                _ => {}
            }
        }
    }
    match (a, s) {
        (Some(a), Some(s)) => Ok((a, s, t)),
        _ => bail!("no keys for profile {profile:?} in {}", path.display()),
    }
}

/// `aisle bucket add NAME --remote …`: bind (or re-bind) a remote bucket.
pub async fn add(conn: &Connection, bucket: &str, args: RemoteArgs) -> anyhow::Result<()> {
    let spec = args.into_spec()?;
    let body = serde_json::to_vec(&spec)?;
    let path = format!("{}{bucket}", aisle_gateway::remote::REMOTE_PREFIX);
    let answer = admin_call(conn, "PUT", &path, Bytes::from(body)).await?;
    let v: aisle_gateway::remote::BindView =
        serde_json::from_slice(&answer).context("parsing the answer")?;
    println!(
        "{} {} → {} (coherence {}, timeout {}s)",
        if v.created { "added" } else { "updated" },
        v.bucket,
        v.remote.url,
        v.remote.coherence,
        v.remote.timeout_secs
    );
    Ok(())
}

/// `aisle prefetch` / `aisle evict`.
#[derive(clap::Args)]
pub struct CacheJobArgs {
    #[command(flatten)]
    sources: SourceArgs,
    /// Start the job and return (default: follow it with a progress bar).
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    conn: Connection,
}

/// Run a prefetch or evict job.
pub async fn cache_job(kind: &str, args: CacheJobArgs) -> anyhow::Result<()> {
    let spec = serde_json::to_vec(&args.sources.into_sources()?)?;
    submit_job(
        &args.conn,
        &format!("/_aisle/v1/jobs/{kind}"),
        spec,
        !args.no_wait,
    )
    .await
}

/// `aisle ls BUCKET --cached`.
#[derive(clap::Args)]
pub struct LsArgs {
    /// A remote bucket.
    bucket: String,
    /// List what the targets cache (required: `aws s3 ls` lists the bucket itself).
    #[arg(long)]
    cached: bool,
    /// Only keys under this prefix.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Show one object's cache state on every target instead (JSON).
    #[arg(long, conflicts_with = "prefix")]
    key: Option<String>,
    #[command(flatten)]
    conn: Connection,
}

/// List the cached objects of a remote bucket, or show one object's state.
pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let base = format!("{}{}", aisle_gateway::remote::REMOTE_PREFIX, args.bucket);
    if let Some(key) = &args.key {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("key", key)
            .finish();
        let body = admin_get(&args.conn, &format!("{base}/object?{q}")).await?;
        println!("{}", String::from_utf8_lossy(&body));
        return Ok(());
    }
    if !args.cached {
        bail!("aisle ls lists what is cached (--cached); `aws s3 ls` lists the bucket");
    }
    let mut after: Option<String> = None;
    let (mut n, mut bytes) = (0u64, 0u64);
    loop {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("prefix", &args.prefix);
        if let Some(a) = &after {
            q.append_pair("after", a);
        }
        let body = admin_get(&args.conn, &format!("{base}/cached?{}", q.finish())).await?;
        let page: aisle_cluster::listing::ListPage =
            serde_json::from_slice(&body).context("parsing the answer")?;
        for item in &page.items {
            if let aisle_cluster::listing::ListItem::Object(o) = item {
                println!("{:>12}  {}", o.size, o.key);
                n += 1;
                bytes += o.size;
            }
        }
        if !page.truncated {
            break;
        }
        after = page.items.last().map(|i| i.name().to_string());
    }
    println!("{n} objects cached, {}", bytesize::ByteSize(bytes));
    Ok(())
}
