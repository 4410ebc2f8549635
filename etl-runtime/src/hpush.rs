//! `hpush`: AIStore's HTTP transformer contract.
//!
//! Per object: `PUT <transformer>/<bucket>/<key>?etl_args=<args>` with the object as the body;
//! `200` (or `202`) answers with the transformed bytes, `4xx` means the transformer rejects the
//! input (→ 422), `503` not ready (→ 503), any other `5xx` or a broken connection a failure
//! (→ 500); `GET /health` tells readiness. AIStore's Python `aistore[etl]` servers
//! (FastAPIServer, FlaskServer, HTTPMultiThreadedServer) speak exactly this.
//!
//! The transformer is either an external URL, or a command this node starts and supervises:
//! it gets a free loopback port (`PORT` in its environment, and `{port}` in its arguments),
//! `AIS_TARGET_URL` and `DIRECT_PUT=false`; it must answer `/health` within `init_timeout`; if it
//! exits it is restarted with exponential backoff; at most `concurrency` objects are in flight.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::{ByteStream, EtlError, StageArgs, Transformer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Header carrying the client request's id to the transformer (the cluster's request-id
/// header; see [`crate::StageArgs::request_id`]).
pub const REQUEST_ID_HEADER: &str = "x-aisle-request-id";

/// Characters escaped in a path segment.
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

/// Configuration of an `hpush` transformer.
#[derive(Debug, Clone)]
pub struct HpushConfig {
    /// Transform name.
    pub name: String,
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
    /// Per-object deadline.
    pub obj_timeout: Duration,
    /// Same input → same output.
    pub deterministic: bool,
    /// Output content type, if known.
    pub content_type: Option<String>,
    /// Most objects in flight on this node.
    pub concurrency: usize,
    /// This node's URL (`AIS_TARGET_URL` for the transformer).
    pub node_url: String,
    /// Changes with the spec (cache keys).
    pub version: String,
}

/// What a node reports of its transformer.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct HpushStatus {
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
    status: HpushStatus,
    log: VecDeque<String>,
}

/// An `hpush` transformer.
pub struct Hpush {
    cfg: HpushConfig,
    client: Client<HttpConnector, Body>,
    slots: Arc<Semaphore>,
    shared: Arc<Mutex<Shared>>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Drop for Hpush {
    fn drop(&mut self) {
        // Dropping the supervisor drops the child, which kills it.
        self.supervisor.abort();
    }
}

fn log_line(shared: &Mutex<Shared>, line: String) {
    let mut s = shared.lock().expect("hpush lock");
    if s.log.len() == 200 {
        s.log.pop_front();
    }
    s.log.push_back(line);
}

async fn healthy(client: &Client<HttpConnector, Body>, base: &str) -> bool {
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

impl Hpush {
    /// Start (or connect to) the transformer; readiness follows in the background.
    pub fn start(cfg: HpushConfig) -> Result<Hpush, EtlError> {
        if cfg.url.is_none() && cfg.argv.as_ref().is_none_or(|a| a.is_empty()) {
            return Err(EtlError::BadPipeline(format!(
                "{}: give a command or a URL",
                cfg.name
            )));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let supervisor = tokio::spawn(supervise(cfg.clone(), client.clone(), shared.clone()));
        Ok(Hpush {
            slots: Arc::new(Semaphore::new(cfg.concurrency.max(1))),
            cfg,
            client,
            shared,
            supervisor,
        })
    }

    /// Current status.
    pub fn status(&self) -> HpushStatus {
        self.shared.lock().expect("hpush lock").status.clone()
    }

    fn failed(&self, message: impl Into<String>) -> EtlError {
        EtlError::Failed {
            stage: self.cfg.name.clone(),
            message: message.into(),
        }
    }
}

async fn supervise(
    cfg: HpushConfig,
    client: Client<HttpConnector, Body>,
    shared: Arc<Mutex<Shared>>,
) {
    let set = |f: &dyn Fn(&mut HpushStatus)| f(&mut shared.lock().expect("hpush lock").status);
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
            tracing::info!(etl = %cfg.name, %base, "transformer ready");
            let st = child.wait().await.map_err(|e| e.to_string())?;
            Ok(format!("exited: {st}"))
        }
        .await;
        let why = match outcome {
            Ok(m) | Err(m) => m,
        };
        tracing::warn!(etl = %cfg.name, reason = %why, "transformer stopped; restarting");
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

#[async_trait::async_trait]
impl Transformer for Hpush {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn deterministic(&self) -> bool {
        self.cfg.deterministic
    }

    fn version(&self) -> String {
        self.cfg.version.clone()
    }

    fn content_type(&self, input: Option<&str>) -> Option<String> {
        self.cfg.content_type.clone().or(input.map(str::to_string))
    }

    fn logs(&self) -> Vec<String> {
        self.shared
            .lock()
            .expect("hpush lock")
            .log
            .iter()
            .cloned()
            .collect()
    }

    async fn run(
        &self,
        input: ByteStream,
        args: &StageArgs,
        path: &str,
    ) -> Result<ByteStream, EtlError> {
        let status = self.status();
        let (true, Some(base)) = (status.ready, status.url) else {
            return Err(EtlError::NotReady {
                stage: self.cfg.name.clone(),
                message: status.last_error.unwrap_or_else(|| "starting".into()),
            });
        };
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let deadline = Instant::now() + self.cfg.obj_timeout;
        let encoded: Vec<String> = path
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        let mut url = format!("{base}/{}", encoded.join("/"));
        if let Some(a) = &args.raw {
            url.push_str("?etl_args=");
            url.extend(form_urlencoded::byte_serialize(a.as_bytes()));
        }
        let frames = input.map(|r| r.map(Frame::data).map_err(|e| Box::new(e) as BoxError));
        let mut req =
            http::Request::put(&url).header(http::header::CONTENT_TYPE, "application/octet-stream");
        if let Some(id) = &args.request_id {
            req = req.header(REQUEST_ID_HEADER, id);
        }
        let req = req
            .body(StreamBody::new(frames).boxed_unsync())
            .map_err(|e| self.failed(e.to_string()))?;
        let timeout = || EtlError::Timeout {
            stage: self.cfg.name.clone(),
            secs: self.cfg.obj_timeout.as_secs(),
        };
        let resp = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Err(_) => return Err(timeout()),
            Ok(Err(e)) => {
                return Err(self.failed(format!("the transformer is unreachable or crashed: {e}")));
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        if status == 200 || status == 202 {
            let name = self.cfg.name.clone();
            let secs = self.cfg.obj_timeout.as_secs();
            let body = resp.into_body().into_data_stream();
            return Ok(Box::pin(futures::stream::unfold(
                (body, permit, false),
                move |(mut body, permit, done): (
                    http_body_util::BodyDataStream<Incoming>,
                    _,
                    bool,
                )| {
                    let name = name.clone();
                    async move {
                        if done {
                            return None;
                        }
                        match tokio::time::timeout_at(deadline, body.next()).await {
                            Err(_) => Some((
                                Err(EtlError::Timeout { stage: name, secs }),
                                (body, permit, true),
                            )),
                            Ok(None) => None,
                            Ok(Some(Ok(b))) => Some((Ok(b), (body, permit, false))),
                            Ok(Some(Err(e))) => Some((
                                Err(EtlError::Failed {
                                    stage: name,
                                    message: format!("the transformer broke off its answer: {e}"),
                                }),
                                (body, permit, true),
                            )),
                        }
                    }
                },
            )));
        }
        let text = match tokio::time::timeout_at(deadline, resp.into_body().collect()).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()[..])
                .chars()
                .take(2000)
                .collect(),
            _ => String::new(),
        };
        let message = format!("HTTP {status}: {text}");
        Err(match status {
            204 => self
                .failed("the transformer answered 204 (direct put), which inline reads do not use"),
            503 => EtlError::NotReady {
                stage: self.cfg.name.clone(),
                message,
            },
            400..=499 => EtlError::Rejected {
                stage: self.cfg.name.clone(),
                message,
            },
            _ => self.failed(message),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{collect, once};

    const SERVER: &str = r#"
import http.server, os, sys, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def do_PUT(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            data = b""
            while True:
                n = int(self.rfile.readline().strip(), 16)
                if n == 0:
                    self.rfile.readline(); break
                data += self.rfile.read(n); self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        if data == b"crash":
            os._exit(1)
        if data == b"bad":
            self.send_response(400); self.send_header("Content-Length", "4"); self.end_headers(); self.wfile.write(b"nope"); return
        out = data.upper() + urllib.parse.unquote(urllib.parse.urlparse(self.path).path).encode() + q.get("etl_args", [""])[0].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(out))); self.end_headers(); self.wfile.write(out)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

    fn cfg() -> HpushConfig {
        HpushConfig {
            name: "up".into(),
            url: None,
            argv: Some(vec!["python3".into(), "-c".into(), SERVER.into()]),
            env: vec![],
            workdir: None,
            init_timeout: Duration::from_secs(20),
            obj_timeout: Duration::from_secs(10),
            deterministic: true,
            content_type: None,
            concurrency: 4,
            node_url: "http://127.0.0.1:1".into(),
            version: "1".into(),
        }
    }

    async fn wait_ready(h: &Hpush) {
        for _ in 0..200 {
            if h.status().ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("not ready: {:?}", h.status());
    }

    #[tokio::test]
    async fn pushes_objects_and_restarts_a_crashed_server() {
        let h = Hpush::start(cfg()).unwrap();
        wait_ready(&h).await;
        let args = StageArgs::for_stage("up", Some("x y"));
        let out = collect(
            h.run(once(b"abc".to_vec()), &args, "b/dir/k 1")
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(out, b"ABC/b/dir/k 1x y");
        let e = collect(
            h.run(once(b"bad".to_vec()), &args, "b/k")
                .await
                .unwrap_err_or_stream(),
        )
        .await;
        assert_eq!(e.unwrap_err().status(), 422);
        let crash = h.run(once(b"crash".to_vec()), &args, "b/k").await;
        let err = match crash {
            Err(e) => e,
            Ok(s) => collect(s).await.unwrap_err(),
        };
        assert_eq!(err.status(), 500, "{err}");
        // The supervisor restarts it; the next object succeeds.
        tokio::time::sleep(Duration::from_millis(100)).await;
        wait_ready(&h).await;
        assert!(h.status().restarts >= 1);
        let out = collect(
            h.run(once(b"z".to_vec()), &StageArgs::default(), "b/k")
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(out, b"Z/b/k");
    }

    trait ErrOrStream {
        fn unwrap_err_or_stream(self) -> ByteStream;
    }
    impl ErrOrStream for Result<ByteStream, EtlError> {
        fn unwrap_err_or_stream(self) -> ByteStream {
            match self {
                Ok(s) => s,
                Err(e) => Box::pin(futures::stream::once(async move { Err(e) })),
            }
        }
    }
}
