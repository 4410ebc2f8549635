//! Admin commands (`aisle cluster ...`): they find the cluster the way S3 tools do
//! (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, or flags) and sign every
//! call with SigV4 (aws-sigv4).

use std::time::SystemTime;

use aisle_gateway::admin::ClusterView;
use anyhow::{Context, bail};
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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
}

/// `aisle cluster ...`
#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// Show targets, mountpaths and how many objects each holds.
    Show {
        #[command(flatten)]
        conn: Connection,
        /// Print JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
}

/// GET an admin path, signed.
async fn admin_get(conn: &Connection, path: &str) -> anyhow::Result<Bytes> {
    let url = format!("{}{path}", conn.endpoint.trim_end_matches('/'));
    let creds = aws_credential_types::Credentials::new(
        &conn.access_key,
        &conn.secret_key,
        None,
        None,
        "aisle",
    );
    let identity = creds.into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&conn.region)
        .name("s3")
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .context("building signing parameters")?
        .into();
    let signable = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .context("preparing the request for signing")?;
    let (instructions, _) = sign(signable, &params).context("signing")?.into_parts();
    let mut req = http::Request::builder()
        .method("GET")
        .uri(&url)
        .body(Full::new(Bytes::new()))?;
    instructions.apply_to_request_http1x(&mut req);
    let client = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!(
            "{url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(body)
}

/// Run an `aisle cluster` command.
pub async fn cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    match cmd {
        ClusterCommand::Show { conn, json } => {
            let body = admin_get(&conn, "/_aisle/v1/cluster").await?;
            let view: ClusterView = serde_json::from_slice(&body).context("parsing the answer")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(());
            }
            println!(
                "cluster map v{}: {} targets, {} buckets",
                view.version,
                view.targets.len(),
                view.buckets.len()
            );
            for t in &view.targets {
                match (&t.status, &t.error) {
                    (Some(s), _) => {
                        let total: u64 = s.objects_per_mountpath.iter().sum();
                        println!("  {}  {}  {} objects", t.id, t.url, total);
                        for (mp, n) in s.mountpaths.iter().zip(&s.objects_per_mountpath) {
                            println!("      {mp}  {n} objects");
                        }
                    }
                    (None, e) => println!(
                        "  {}  {}  DOWN: {}",
                        t.id,
                        t.url,
                        e.as_deref().unwrap_or("?")
                    ),
                }
            }
            Ok(())
        }
    }
}
