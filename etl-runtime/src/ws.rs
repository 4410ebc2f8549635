//! `ws`: AIStore's WebSocket transformer contract.
//!
//! The node keeps long-lived connections to `<transformer>/ws`, at most `concurrency` of them,
//! and reuses each for object after object. Per object, on one connection:
//!
//! 1. a binary message holding a JSON control record `{"path": "<bucket>/<key>",
//!    "etl_args": "<args>"}`, plus `"fqn": "<local path>"` with the file-path hand-off
//!    ([`CommConfig::fqn`]);
//! 2. without `fqn`, the object's bytes as one binary message, sent as it is read (a
//!    fragmented message: the node never holds the whole input);
//! 3. the transformer answers one binary message, the output, or one text message, an error.
//!
//! The answer is one WebSocket message, so the output is held whole in memory once
//! ([`MAX_MESSAGE`] bounds it); `hpush` streams instead. AIStore's Python `FastAPIServer` serves
//! `/ws` (its Flask and http.server variants do not). Supervision is [`crate::comm`]'s; a
//! connection that fails or times out mid-object is dropped, never reused, and connections
//! opened to a server before it restarted are not reused either.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::comm::{CommConfig, Server, ServerStatus, encode_path, timeout};
use crate::{ByteStream, Declared, EtlError, Source, StageArgs, Transformer};

/// Largest output one object may have over `ws` (one message, held in memory).
pub const MAX_MESSAGE: usize = 1 << 30;

type Conn = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A `ws` transformer.
pub struct Ws {
    cfg: CommConfig,
    server: Server,
    slots: Arc<Semaphore>,
    /// Open connections not in use, with the server generation (restart count) they were
    /// opened to.
    idle: Mutex<Vec<(u32, Conn)>>,
}

impl Ws {
    /// Start (or connect to) the transformer; readiness follows in the background.
    pub fn start(cfg: CommConfig) -> Result<Ws, EtlError> {
        Ok(Ws {
            server: Server::start(&cfg.declared.name, cfg.server.clone())?,
            slots: Arc::new(Semaphore::new(cfg.declared.concurrency.max(1))),
            idle: Mutex::new(Vec::new()),
            cfg,
        })
    }

    /// Current status.
    pub fn status(&self) -> ServerStatus {
        self.server.status()
    }

    fn failed(&self, message: impl Into<String>) -> EtlError {
        EtlError::Failed {
            stage: self.cfg.declared.name.clone(),
            message: message.into(),
        }
    }

    /// An idle connection to the current server, or a new one.
    async fn connection(&self, base: &str, generation: u32) -> Result<Conn, EtlError> {
        {
            let mut idle = self.idle.lock().expect("ws lock");
            idle.retain(|(g, _)| *g == generation);
            if let Some((_, c)) = idle.pop() {
                return Ok(c);
            }
        }
        let url = match base.strip_prefix("http://") {
            Some(rest) => format!("ws://{rest}/ws"),
            None => {
                return Err(self.failed(format!("ws needs an http:// transformer URL, not {base}")));
            }
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let (conn, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
            .await
            .map_err(|e| self.failed(format!("cannot open the WebSocket: {e}")))?;
        Ok(conn)
    }

    /// One object's exchange on `conn`: control record, bytes (unless `fqn`), answer.
    async fn exchange(
        &self,
        conn: &mut Conn,
        input: ByteStream,
        fqn: Option<&std::path::Path>,
        args: &StageArgs,
        path: &str,
    ) -> Result<Bytes, EtlError> {
        let broken = |e: tokio_tungstenite::tungstenite::Error| {
            self.failed(format!("the transformer's WebSocket broke: {e}"))
        };
        let mut ctrl = serde_json::json!({
            "path": path,
            "etl_args": args.raw.clone().unwrap_or_default(),
        });
        if let Some(f) = fqn {
            ctrl["fqn"] = encode_path(&f.to_string_lossy()).into();
        }
        conn.send(Message::Binary(ctrl.to_string().into()))
            .await
            .map_err(broken)?;
        if fqn.is_none() {
            // One binary message in fragments, each sent as it is read.
            let mut input = input;
            let mut opcode = OpCode::Data(Data::Binary);
            while let Some(chunk) = input.next().await {
                let chunk = chunk?;
                if chunk.is_empty() {
                    continue;
                }
                conn.feed(Message::Frame(Frame::message(chunk, opcode, false)))
                    .await
                    .map_err(broken)?;
                opcode = OpCode::Data(Data::Continue);
            }
            conn.send(Message::Frame(Frame::message(Bytes::new(), opcode, true)))
                .await
                .map_err(broken)?;
        }
        loop {
            match conn.next().await {
                Some(Ok(Message::Binary(b))) => return Ok(b),
                Some(Ok(Message::Text(t))) => {
                    let t: String = t.as_str().chars().take(2000).collect();
                    return Err(self.failed(format!("the transformer answered: {t}")));
                }
                Some(Ok(Message::Close(c))) => {
                    return Err(self.failed(format!(
                        "the transformer closed the WebSocket{}",
                        c.map(|c| format!(": {} {}", c.code, c.reason))
                            .unwrap_or_default()
                    )));
                }
                Some(Ok(_)) => continue, // ping, pong
                Some(Err(e)) => return Err(broken(e)),
                None => return Err(self.failed("the transformer closed the WebSocket")),
            }
        }
    }
}

#[async_trait::async_trait]
impl Transformer for Ws {
    fn name(&self) -> &str {
        &self.cfg.declared.name
    }

    fn declared(&self) -> Option<&Declared> {
        Some(&self.cfg.declared)
    }

    fn logs(&self) -> Vec<String> {
        self.server.logs()
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
        let (base, generation) = self.server.ready()?;
        let _permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let deadline = Instant::now() + self.cfg.declared.obj_timeout;
        let fqn = source.file.as_deref().filter(|_| self.cfg.fqn);
        let name = self.cfg.declared.name.as_str();
        let limit = self.cfg.declared.obj_timeout;
        let mut conn = tokio::time::timeout_at(deadline, self.connection(&base, generation))
            .await
            .map_err(|_| timeout(name, limit))??;
        let out =
            tokio::time::timeout_at(deadline, self.exchange(&mut conn, input, fqn, args, path))
                .await
                .map_err(|_| timeout(name, limit))??;
        // Only a connection whose exchange completed goes back (others are dropped: closed).
        let mut idle = self.idle.lock().expect("ws lock");
        if idle.len() < self.cfg.declared.concurrency {
            idle.push((generation, conn));
        }
        drop(idle);
        Ok(crate::once(out))
    }
}
