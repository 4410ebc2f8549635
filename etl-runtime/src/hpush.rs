//! `hpush` and `hpull`: AIStore's HTTP transformer contracts.
//!
//! * `hpush` — per object, `PUT <transformer>/<bucket>/<key>?etl_args=<args>` with the object as
//!   the body;
//! * `hpull` — per object, `GET <transformer>/<bucket>/<key>?etl_args=<args>`; the transformer
//!   reads the object itself from `AIS_TARGET_URL/<bucket>/<key>`, so an `hpull` stage can only
//!   be the first one, over a whole stored object.
//!
//! With the file-path hand-off ([`CommConfig::fqn`]) both add `etl_fqn=<local path>` and send
//! no body: the transformer reads the file. `200` (or `202`) answers with the transformed bytes,
//! `4xx` means the transformer rejects the input (→ 422), `503` not ready (→ 503), any other
//! `5xx` or a broken connection a failure (→ 500). AIStore's Python `aistore[etl]` servers
//! (FastAPIServer, FlaskServer, HTTPMultiThreadedServer) speak exactly this. Supervision (start,
//! `/health`, restarts) is [`crate::comm`]'s; at most `concurrency` objects are in flight.

use std::sync::Arc;

use futures::StreamExt;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::comm::{
    BoxError, CommConfig, HttpClient, Server, ServerStatus, answer_error, encode_path, http_client,
    timeout,
};
use crate::{ByteStream, Declared, EtlError, Source, StageArgs, Transformer};

/// Header carrying the client request's id to the transformer (the cluster's request-id
/// header; see [`crate::StageArgs::request_id`]).
pub const REQUEST_ID_HEADER: &str = "x-aisle-request-id";

/// Which way the object reaches the transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `hpush`: the node sends it (or its path).
    Push,
    /// `hpull`: the transformer fetches it from the node (or opens its path).
    Pull,
}

/// An `hpush` or `hpull` transformer.
pub struct Hpush {
    cfg: CommConfig,
    mode: Mode,
    client: HttpClient,
    slots: Arc<Semaphore>,
    server: Server,
}

impl Hpush {
    /// Start (or connect to) the transformer; readiness follows in the background.
    pub fn start(cfg: CommConfig, mode: Mode) -> Result<Hpush, EtlError> {
        Ok(Hpush {
            server: Server::start(&cfg.declared.name, cfg.server.clone())?,
            slots: Arc::new(Semaphore::new(cfg.declared.concurrency.max(1))),
            client: http_client(),
            mode,
            cfg,
        })
    }

    /// Current status.
    pub fn status(&self) -> ServerStatus {
        self.server.status()
    }

    fn name(&self) -> &str {
        &self.cfg.declared.name
    }

    fn failed(&self, message: impl Into<String>) -> EtlError {
        EtlError::Failed {
            stage: self.name().to_string(),
            message: message.into(),
        }
    }
}

#[async_trait::async_trait]
impl Transformer for Hpush {
    fn name(&self) -> &str {
        &self.cfg.declared.name
    }

    fn declared(&self) -> Option<&Declared> {
        Some(&self.cfg.declared)
    }

    fn logs(&self) -> Vec<String> {
        self.server.logs()
    }

    fn needs_source(&self) -> bool {
        self.mode == Mode::Pull
    }

    async fn run(
        &self,
        input: ByteStream,
        args: &StageArgs,
        path: &str,
    ) -> Result<ByteStream, EtlError> {
        self.run_source(input, &Source::default(), args, path).await
    }

    async fn run_source(
        &self,
        input: ByteStream,
        source: &Source,
        args: &StageArgs,
        path: &str,
    ) -> Result<ByteStream, EtlError> {
        if self.mode == Mode::Pull && !source.stored {
            return Err(EtlError::BadPipeline(format!(
                "{} is an hpull transformer: it reads a whole stored object, not a shard member \
                 or another stage's output",
                self.name()
            )));
        }
        let (base, _) = self.server.ready()?;
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let deadline = Instant::now() + self.cfg.declared.obj_timeout;
        let mut url = format!("{base}/{}", encode_path(path));
        let fqn = source.file.as_ref().filter(|_| self.cfg.fqn);
        let query = {
            let mut q = form_urlencoded::Serializer::new(String::new());
            if let Some(a) = &args.raw {
                q.append_pair("etl_args", a);
            }
            if let Some(f) = fqn {
                q.append_pair("etl_fqn", &f.to_string_lossy());
            }
            q.finish()
        };
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query);
        }
        let mut req = match self.mode {
            Mode::Push => http::Request::put(&url)
                .header(http::header::CONTENT_TYPE, "application/octet-stream"),
            Mode::Pull => http::Request::get(&url),
        };
        if let Some(id) = &args.request_id {
            req = req.header(REQUEST_ID_HEADER, id);
        }
        let body = if self.mode == Mode::Push && fqn.is_none() {
            let frames = input.map(|r| r.map(Frame::data).map_err(|e| Box::new(e) as BoxError));
            StreamBody::new(frames).boxed_unsync()
        } else {
            // The transformer reads the file or pulls the object: the stream stays unread.
            drop(input);
            if self.mode == Mode::Push {
                req = req.header(http::header::CONTENT_LENGTH, "0");
            }
            Empty::new().map_err(|e| match e {}).boxed_unsync()
        };
        let req = req.body(body).map_err(|e| self.failed(e.to_string()))?;
        let limit = self.cfg.declared.obj_timeout;
        let resp = match tokio::time::timeout_at(deadline, self.client.request(req)).await {
            Err(_) => return Err(timeout(self.name(), limit)),
            Ok(Err(e)) => {
                return Err(self.failed(format!("the transformer is unreachable or crashed: {e}")));
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        if status == 200 || status == 202 {
            let name = self.name().to_string();
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
                            Err(_) => Some((Err(timeout(&name, limit)), (body, permit, true))),
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
        let text: String = match tokio::time::timeout_at(deadline, resp.into_body().collect()).await
        {
            Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()[..])
                .chars()
                .take(2000)
                .collect(),
            _ => String::new(),
        };
        if status == 204 {
            return Err(
                self.failed("the transformer answered 204 (direct put), which aisle does not use")
            );
        }
        Err(answer_error(self.name(), status, &text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{collect, once};
    use std::time::Duration;

    const SERVER: &str = r#"
import http.server, os, sys, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if self.path == "/health":
            self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok"); return
        self.do_PUT()
    def do_PUT(self):
        fqn = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query).get("etl_fqn")
        if fqn:
            data = open(fqn[0], "rb").read()
        elif self.headers.get("Transfer-Encoding") == "chunked":
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

    pub(crate) fn cfg(name: &str, script: &str) -> CommConfig {
        CommConfig {
            declared: Declared {
                name: name.into(),
                deterministic: true,
                content_type: None,
                version: "1".into(),
                obj_timeout: Duration::from_secs(10),
                concurrency: 4,
            },
            server: crate::ServerConfig {
                url: None,
                argv: Some(vec!["python3".into(), "-c".into(), script.into()]),
                env: vec![],
                workdir: None,
                init_timeout: Duration::from_secs(20),
                node_url: "http://127.0.0.1:1".into(),
            },
            fqn: false,
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

    /// The whole output of one object, or its error (at the start or mid-stream).
    async fn output(
        h: &Hpush,
        input: &[u8],
        source: &Source,
        args: &StageArgs,
        path: &str,
    ) -> Result<Vec<u8>, EtlError> {
        collect(
            h.run_source(once(input.to_vec()), source, args, path)
                .await?,
        )
        .await
    }

    #[tokio::test]
    async fn pushes_objects_and_restarts_a_crashed_server() {
        let h = Hpush::start(cfg("up", SERVER), Mode::Push).unwrap();
        wait_ready(&h).await;
        let args = StageArgs::for_stage("up", Some("x y"));
        let none = Source::default();
        let out = output(&h, b"abc", &none, &args, "b/dir/k 1").await.unwrap();
        assert_eq!(out, b"ABC/b/dir/k 1x y");
        let e = output(&h, b"bad", &none, &args, "b/k").await.unwrap_err();
        assert_eq!(e.status(), 422);
        let err = output(&h, b"crash", &none, &args, "b/k").await.unwrap_err();
        assert_eq!(err.status(), 500, "{err}");
        // The supervisor restarts it; the next object succeeds.
        tokio::time::sleep(Duration::from_millis(100)).await;
        wait_ready(&h).await;
        assert!(h.status().restarts >= 1);
        let out = output(&h, b"z", &none, &StageArgs::default(), "b/k")
            .await
            .unwrap();
        assert_eq!(out, b"Z/b/k");
    }

    #[tokio::test]
    async fn hands_over_the_file_path_and_pulls_only_stored_objects() {
        let dir = std::env::temp_dir().join(format!("aisle-fqn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("data 1");
        std::fs::write(&file, b"from the file").unwrap();
        let stored = Source {
            stored: true,
            file: Some(file.clone()),
        };
        let args = StageArgs::default();
        let mut c = cfg("up", SERVER);
        c.fqn = true;
        let push = Hpush::start(c.clone(), Mode::Push).unwrap();
        let pull = Hpush::start(c, Mode::Pull).unwrap();
        wait_ready(&push).await;
        wait_ready(&pull).await;
        // The stream is not read when the path is handed over.
        let unread: ByteStream = Box::pin(futures::stream::once(async {
            Err(EtlError::Source("the stream was read".into()))
        }));
        let out = collect(
            push.run_source(unread, &stored, &args, "b/k")
                .await
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(out, b"FROM THE FILE/b/k");
        let out = output(&pull, b"", &stored, &args, "b/k").await.unwrap();
        assert_eq!(out, b"FROM THE FILE/b/k");
        // Without a file, hpush sends the bytes.
        let out = output(&push, b"bytes", &Source::default(), &args, "b/k")
            .await
            .unwrap();
        assert_eq!(out, b"BYTES/b/k");
        // hpull cannot take another stage's output or a shard member.
        let e = pull
            .run_source(once(b"x".to_vec()), &Source::default(), &args, "b/k")
            .await
            .err()
            .expect("refused");
        assert_eq!(e.status(), 400, "{e}");
        assert!(pull.needs_source() && !push.needs_source());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
