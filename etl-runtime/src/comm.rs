//! What the transformer-server communicators ([`crate::hpush`] for `hpush` and `hpull`,
//! [`crate::ws`]) share: their configuration, the supervised server process (start, `/health`,
//! restart with backoff), its status and log, and how a transformer's answer maps to an
//! [`EtlError`].
//!
//! The transformer is either an external URL, or a command this node starts and supervises:
//! it gets a free loopback port (`PORT` in its environment, and `{port}` in its arguments),
//! `AIS_TARGET_URL` (where it may read objects, see [`ServerConfig::node_url`]) and
//! `DIRECT_PUT=false`; it must answer `/health` within `init_timeout`; if it exits it is
//! restarted with exponential backoff.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

use crate::{Declared, EtlError};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;
pub(crate) type HttpClient = Client<HttpConnector, Body>;

/// Characters escaped in a path segment (object paths, `etl_fqn`).
const SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b'+')
    .add(b'&')
    .add(b'=');

/// `path` with each `/`-separated segment percent-encoded.
pub(crate) fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Where the transformer server is and how it is run.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// An external transformer's base URL (instead of `argv`).
    pub url: Option<String>,
    /// The command to start (instead of `url`).
    pub argv: Option<Vec<String>>,
    /// Extra environment for the command.
    pub env: Vec<(String, String)>,
    /// Working directory of the command.
    pub workdir: Option<std::path::PathBuf>,
    /// How long the transformer may take to answer `/health` after a start.
    pub init_timeout: Duration,
    /// `AIS_TARGET_URL` for the transformer: `GET <node_url>/<bucket>/<key>` answers the
    /// object's bytes (what `hpull` transformers read).
    pub node_url: String,
}

/// How objects are exchanged with a transformer server.
#[derive(Debug, Clone)]
pub struct CommConfig {
    /// Name, determinism, content type, version, deadline, concurrency.
    pub declared: Declared,
    /// The server.
    pub server: ServerConfig,
    /// Hand the transformer the object's local file path (`etl_fqn`) instead of its bytes,
    /// when the input is one whole stored object in one file ([`crate::Source::file`]).
    pub fqn: bool,
}

/// What a node reports of its transformer.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ServerStatus {
    /// Answering `/health`.
    pub ready: bool,
    /// Restarts so far.
    pub restarts: u32,
    /// Process id, when started by this node.
    pub pid: Option<u32>,
    /// Base URL in use.
    pub url: Option<String>,
    /// Why it last stopped or failed to start.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Shared {
    status: ServerStatus,
    log: VecDeque<String>,
}

/// A transformer server: started and restarted by this node, or external; health-checked.
/// Dropping it stops the process.
pub(crate) struct Server {
    name: String,
    shared: Arc<Mutex<Shared>>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Dropping the supervisor drops the child, which kills it.
        self.supervisor.abort();
    }
}

/// An HTTP/1 client for loopback transformer servers.
pub(crate) fn http_client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector)
}

impl Server {
    /// Start (or connect to) the server; readiness follows in the background.
    pub(crate) fn start(name: &str, cfg: ServerConfig) -> Result<Server, EtlError> {
        if cfg.url.is_none() && cfg.argv.as_ref().is_none_or(|a| a.is_empty()) {
            return Err(EtlError::BadPipeline(format!(
                "{name}: give a command or a URL"
            )));
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        let name = name.to_string();
        let supervisor = tokio::spawn(supervise(name.clone(), cfg, http_client(), shared.clone()));
        Ok(Server {
            name,
            shared,
            supervisor,
        })
    }

    /// Current status.
    pub(crate) fn status(&self) -> ServerStatus {
        self.shared.lock().expect("server lock").status.clone()
    }

    /// Recent lines of the process's stdout and stderr.
    pub(crate) fn logs(&self) -> Vec<String> {
        self.shared
            .lock()
            .expect("server lock")
            .log
            .iter()
            .cloned()
            .collect()
    }

    /// The base URL and the restart count (which server process it is), when the server is
    /// ready.
    pub(crate) fn ready(&self) -> Result<(String, u32), EtlError> {
        let s = self.shared.lock().expect("server lock");
        let status = &s.status;
        match (status.ready, &status.url) {
            (true, Some(base)) => Ok((base.clone(), status.restarts)),
            _ => Err(EtlError::NotReady {
                stage: self.name.clone(),
                message: status
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "starting".into()),
            }),
        }
    }
}

fn log_line(shared: &Mutex<Shared>, line: String) {
    let mut s = shared.lock().expect("server lock");
    if s.log.len() == 200 {
        s.log.pop_front();
    }
    s.log.push_back(line);
}

async fn healthy(client: &HttpClient, base: &str) -> bool {
    let Ok(req) = http::Request::get(format!("{base}/health"))
        .body(Empty::new().map_err(|e| match e {}).boxed_unsync())
    else {
        return false;
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), client.request(req)).await,
        Ok(Ok(r)) if r.status().is_success()
    )
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn supervise(
    name: String,
    cfg: ServerConfig,
    client: HttpClient,
    shared: Arc<Mutex<Shared>>,
) {
    let set = |f: &dyn Fn(&mut ServerStatus)| f(&mut shared.lock().expect("server lock").status);
    if let Some(url) = cfg.url.clone() {
        let url = url.trim_end_matches('/').to_string();
        set(&|s| s.url = Some(url.clone()));
        loop {
            let ok = healthy(&client, &url).await;
            set(&|s| s.ready = ok);
            tokio::time::sleep(Duration::from_secs(if ok { 5 } else { 1 })).await;
        }
    }
    let argv = cfg.argv.clone().unwrap_or_default();
    let mut failures: u32 = 0;
    loop {
        let started = Instant::now();
        let outcome: Result<String, String> = async {
            let port = free_port().map_err(|e| format!("no free port: {e}"))?;
            let args: Vec<String> = argv
                .iter()
                .map(|a| a.replace("{port}", &port.to_string()))
                .collect();
            let mut cmd = tokio::process::Command::new(&args[0]);
            if let Some(d) = &cfg.workdir {
                cmd.current_dir(d);
            }
            let mut child = cmd
                .args(&args[1..])
                .envs(cfg.env.iter().map(|(k, v)| (k, v)))
                .env("PORT", port.to_string())
                .env("AIS_TARGET_URL", &cfg.node_url)
                .env("DIRECT_PUT", "false")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", args[0]))?;
            for pipe in [
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            ]
            .into_iter()
            .flatten()
            {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let mut lines = BufReader::new(pipe).lines();
                    while let Ok(Some(l)) = lines.next_line().await {
                        log_line(&shared, l);
                    }
                });
            }
            let base = format!("http://127.0.0.1:{port}");
            set(&|s| {
                s.pid = child.id();
                s.url = Some(base.clone());
            });
            let deadline = Instant::now() + cfg.init_timeout;
            loop {
                if let Ok(Some(st)) = child.try_wait() {
                    return Err(format!("exited during start-up: {st}"));
                }
                if healthy(&client, &base).await {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "no answer on /health within {} s",
                        cfg.init_timeout.as_secs()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            set(&|s| s.ready = true);
            tracing::info!(etl = %name, %base, "transformer ready");
            let st = child.wait().await.map_err(|e| e.to_string())?;
            Ok(format!("exited: {st}"))
        }
        .await;
        let why = match outcome {
            Ok(m) | Err(m) => m,
        };
        tracing::warn!(etl = %name, reason = %why, "transformer stopped; restarting");
        set(&|s| {
            s.ready = false;
            s.restarts += 1;
            s.pid = None;
            s.last_error = Some(why.clone());
        });
        if started.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        failures += 1;
        let backoff =
            Duration::from_millis(250 * 2u64.pow(failures.min(6))).min(Duration::from_secs(15));
        tokio::time::sleep(backoff).await;
    }
}

/// The error for a transformer's non-success answer `status` with body `text`: `503` not
/// ready, other `4xx` a rejected input, anything else a failure.
pub(crate) fn answer_error(stage: &str, status: u16, text: &str) -> EtlError {
    let message = format!("HTTP {status}: {text}");
    match status {
        503 => EtlError::NotReady {
            stage: stage.to_string(),
            message,
        },
        400..=499 => EtlError::Rejected {
            stage: stage.to_string(),
            message,
        },
        _ => EtlError::Failed {
            stage: stage.to_string(),
            message,
        },
    }
}

/// The per-object deadline error.
pub(crate) fn timeout(stage: &str, limit: Duration) -> EtlError {
    EtlError::Timeout {
        stage: stage.to_string(),
        secs: limit.as_secs(),
    }
}
