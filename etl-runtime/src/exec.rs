//! `exec`: a command run next to the data, fed the object on stdin, its stdout the output.
//!
//! Two modes:
//!
//! * **one-shot** — one process per object: the object on stdin, the output on stdout, exit
//!   status 0 for success, 65 (`EX_DATAERR`) for "this input cannot be transformed" (→ 422),
//!   anything else a failure (→ 500, with the tail of stderr). The argument string is in the
//!   environment as `AISLE_ETL_ARGS`, the object's `bucket/key` as `AISLE_OBJECT_PATH`.
//! * **worker** — long-lived processes, one object at a time each, for commands too slow to
//!   start per object. Framing on stdin: a JSON line `{"path": "...", "args": "..."}`, then the
//!   object as chunks (`u32` big-endian length + bytes) ended by a zero-length chunk. On stdout:
//!   the output as chunks the same way, ended by a zero-length chunk, then a JSON line
//!   `{"status": 200}` (or `{"status": 422, "message": "..."}`, or 500).
//!
//! Every object has a deadline (`obj_timeout`): past it the process is killed (→ 504).

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::{ByteStream, Declared, EtlError, StageArgs, Transformer};

/// Exit status of a one-shot command that rejects its input.
pub const EXIT_REJECTED: i32 = 65;
/// Largest chunk a worker may send.
pub const MAX_WORKER_CHUNK: u32 = 16 * 1024 * 1024;

/// How an `exec` transformer runs its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecMode {
    /// A process per object.
    OneShot,
    /// Long-lived processes speaking the framing above.
    Worker,
}

/// Configuration of an `exec` transformer.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Name, determinism, content type, version, deadline, concurrency.
    pub declared: Declared,
    /// Command and arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Working directory of the command.
    pub workdir: Option<std::path::PathBuf>,
    /// One-shot or worker.
    pub mode: ExecMode,
}

struct Worker {
    child: Child,
    /// With the feeder task while an object is being sent.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

/// An `exec` transformer.
pub struct Exec {
    cfg: ExecConfig,
    slots: Arc<Semaphore>,
    idle: Arc<Mutex<Vec<Worker>>>,
    log: Arc<Mutex<VecDeque<String>>>,
}

const LOG_LINES: usize = 200;

fn push_log(log: &Mutex<VecDeque<String>>, line: String) {
    let mut l = log.lock().expect("log lock");
    if l.len() == LOG_LINES {
        l.pop_front();
    }
    l.push_back(line);
}

impl Exec {
    /// A transformer running `cfg.argv`.
    pub fn new(cfg: ExecConfig) -> Result<Exec, EtlError> {
        if cfg.argv.is_empty() {
            return Err(EtlError::BadPipeline(format!(
                "{}: the command is empty",
                cfg.declared.name
            )));
        }
        Ok(Exec {
            slots: Arc::new(Semaphore::new(cfg.declared.concurrency.max(1))),
            cfg,
            idle: Arc::new(Mutex::new(Vec::new())),
            log: Arc::new(Mutex::new(VecDeque::new())),
        })
    }

    /// Recent stderr lines of the command.
    pub fn logs(&self) -> Vec<String> {
        self.log.lock().expect("log lock").iter().cloned().collect()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.cfg.argv[0]);
        cmd.args(&self.cfg.argv[1..])
            .envs(self.cfg.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(d) = &self.cfg.workdir {
            cmd.current_dir(d);
        }
        cmd
    }

    fn failed(&self, message: impl Into<String>) -> EtlError {
        EtlError::Failed {
            stage: self.cfg.declared.name.clone(),
            message: message.into(),
        }
    }

    /// Collect a child's stderr into the log ring; returns the tail for error messages.
    fn drain_stderr(&self, child: &mut Child) -> tokio::task::JoinHandle<String> {
        let stderr = child.stderr.take();
        let log = self.log.clone();
        tokio::spawn(async move {
            let mut tail = VecDeque::new();
            if let Some(e) = stderr {
                let mut lines = BufReader::new(e).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    push_log(&log, line.clone());
                    if tail.len() == 10 {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
            tail.into_iter().collect::<Vec<_>>().join("\n")
        })
    }

    async fn one_shot(
        &self,
        mut input: ByteStream,
        args: &StageArgs,
        path: &str,
    ) -> Result<ByteStream, EtlError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let deadline = Instant::now() + self.cfg.declared.obj_timeout;
        let mut child = self
            .command()
            .env("AISLE_ETL_ARGS", args.raw.as_deref().unwrap_or(""))
            .env("AISLE_OBJECT_PATH", path)
            .spawn()
            .map_err(|e| self.failed(format!("cannot start {}: {e}", self.cfg.argv[0])))?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = self.drain_stderr(&mut child);
        let feeder = tokio::spawn(async move {
            while let Some(chunk) = input.next().await {
                let chunk = chunk?;
                if stdin.write_all(&chunk).await.is_err() {
                    // The command stopped reading; its exit status tells the rest.
                    return Ok(());
                }
            }
            Ok::<(), EtlError>(())
        });
        let st = OneShot {
            name: self.cfg.declared.name.clone(),
            timeout: self.cfg.declared.obj_timeout,
            out: tokio_util::io::ReaderStream::with_capacity(stdout, 128 * 1024),
            child,
            feeder: Some(feeder),
            stderr: Some(stderr),
            deadline,
            _permit: permit,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(st, |mut st| async move {
            if st.done {
                return None;
            }
            let item = st.next().await;
            if !matches!(item, Some(Ok(_))) {
                st.done = true;
            }
            item.map(|i| (i, st))
        })))
    }

    async fn take_worker(&self) -> Result<Worker, EtlError> {
        if let Some(w) = self.idle.lock().expect("pool lock").pop() {
            return Ok(w);
        }
        let mut child = self
            .command()
            .spawn()
            .map_err(|e| self.failed(format!("cannot start {}: {e}", self.cfg.argv[0])))?;
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        drop(self.drain_stderr(&mut child));
        Ok(Worker {
            child,
            stdin: Some(stdin),
            stdout,
        })
    }

    async fn worker(
        &self,
        mut input: ByteStream,
        args: &StageArgs,
        path: &str,
    ) -> Result<ByteStream, EtlError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore is never closed");
        let deadline = Instant::now() + self.cfg.declared.obj_timeout;
        let mut w = self.take_worker().await?;
        let header = serde_json::json!({"path": path, "args": args.raw.as_deref().unwrap_or("")});
        let mut stdin = w.stdin.take().expect("an idle worker has its stdin");
        let name = self.cfg.declared.name.clone();
        // Feed the request on its own task; the worker may answer while it reads.
        let feeder = tokio::spawn(async move {
            let mut line = serde_json::to_vec(&header).expect("json");
            line.push(b'\n');
            let res: Result<(), EtlError> = async {
                let io = |e: std::io::Error| EtlError::Failed {
                    stage: "exec worker".into(),
                    message: format!("writing to the worker: {e}"),
                };
                stdin.write_all(&line).await.map_err(io)?;
                while let Some(chunk) = input.next().await {
                    let chunk = chunk?;
                    for piece in chunk.chunks(MAX_WORKER_CHUNK as usize) {
                        stdin
                            .write_all(&(piece.len() as u32).to_be_bytes())
                            .await
                            .map_err(io)?;
                        stdin.write_all(piece).await.map_err(io)?;
                    }
                }
                stdin.write_all(&0u32.to_be_bytes()).await.map_err(io)?;
                stdin.flush().await.map_err(io)?;
                Ok(())
            }
            .await;
            (stdin, res)
        });
        let st = WorkerRun {
            name,
            timeout: self.cfg.declared.obj_timeout,
            worker: Some(w),
            feeder: Some(feeder),
            deadline,
            pool: self.idle.clone(),
            _permit: permit,
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(st, |mut st| async move {
            if st.done {
                return None;
            }
            let item = st.next().await;
            if !matches!(item, Some(Ok(_))) {
                st.done = true;
            }
            item.map(|i| (i, st))
        })))
    }
}

struct OneShot {
    name: String,
    timeout: Duration,
    out: tokio_util::io::ReaderStream<ChildStdout>,
    child: Child,
    feeder: Option<tokio::task::JoinHandle<Result<(), EtlError>>>,
    stderr: Option<tokio::task::JoinHandle<String>>,
    deadline: Instant,
    _permit: OwnedSemaphorePermit,
    done: bool,
}

impl OneShot {
    fn timeout(&mut self) -> EtlError {
        let _ = self.child.start_kill();
        EtlError::Timeout {
            stage: self.name.clone(),
            secs: self.timeout.as_secs(),
        }
    }

    async fn next(&mut self) -> Option<Result<Bytes, EtlError>> {
        match tokio::time::timeout_at(self.deadline, self.out.next()).await {
            Err(_) => Some(Err(self.timeout())),
            Ok(Some(Ok(b))) => Some(Ok(b)),
            Ok(Some(Err(e))) => Some(Err(EtlError::Failed {
                stage: self.name.clone(),
                message: format!("reading its output: {e}"),
            })),
            Ok(None) => {
                let status = match tokio::time::timeout_at(self.deadline, self.child.wait()).await {
                    Err(_) => return Some(Err(self.timeout())),
                    Ok(Err(e)) => {
                        return Some(Err(EtlError::Failed {
                            stage: self.name.clone(),
                            message: e.to_string(),
                        }));
                    }
                    Ok(Ok(s)) => s,
                };
                if let Some(f) = self.feeder.take()
                    && let Ok(Err(e)) = f.await
                {
                    return Some(Err(e));
                }
                if status.success() {
                    return None;
                }
                let tail = match self.stderr.take() {
                    Some(t) => t.await.unwrap_or_default(),
                    None => String::new(),
                };
                let message = format!("{status}{}{tail}", if tail.is_empty() { "" } else { ": " });
                Some(Err(if status.code() == Some(EXIT_REJECTED) {
                    EtlError::Rejected {
                        stage: self.name.clone(),
                        message,
                    }
                } else {
                    EtlError::Failed {
                        stage: self.name.clone(),
                        message,
                    }
                }))
            }
        }
    }
}

struct WorkerRun {
    name: String,
    timeout: Duration,
    worker: Option<Worker>,
    feeder: Option<tokio::task::JoinHandle<(ChildStdin, Result<(), EtlError>)>>,
    deadline: Instant,
    pool: Arc<Mutex<Vec<Worker>>>,
    _permit: OwnedSemaphorePermit,
    done: bool,
}

#[derive(serde::Deserialize)]
struct WorkerStatus {
    status: u16,
    #[serde(default)]
    message: String,
}

impl WorkerRun {
    fn fail(&mut self, e: EtlError) -> Option<Result<Bytes, EtlError>> {
        // A worker in an unknown state is never reused.
        if let Some(mut w) = self.worker.take() {
            let _ = w.child.start_kill();
        }
        if let Some(f) = self.feeder.take() {
            f.abort();
        }
        Some(Err(e))
    }

    async fn next(&mut self) -> Option<Result<Bytes, EtlError>> {
        let name = self.name.clone();
        let deadline = self.deadline;
        let crashed = |m: String| EtlError::Failed {
            stage: name.clone(),
            message: m,
        };
        let w = self.worker.as_mut()?;
        let read = async {
            let len = w.stdout.read_u32().await?;
            if len == 0 {
                return Ok::<Option<Bytes>, std::io::Error>(None);
            }
            if len > MAX_WORKER_CHUNK {
                return Err(std::io::Error::other(format!(
                    "chunk of {len} bytes is over the limit"
                )));
            }
            let mut buf = BytesMut::zeroed(len as usize);
            w.stdout.read_exact(&mut buf).await?;
            Ok(Some(buf.freeze()))
        };
        match tokio::time::timeout_at(deadline, read).await {
            Err(_) => {
                let e = EtlError::Timeout {
                    stage: self.name.clone(),
                    secs: self.timeout.as_secs(),
                };
                self.fail(e)
            }
            Ok(Err(e)) => self.fail(crashed(format!(
                "the worker broke the framing or exited: {e}"
            ))),
            Ok(Ok(Some(b))) => Some(Ok(b)),
            Ok(Ok(None)) => {
                let mut line = String::new();
                let status = tokio::time::timeout_at(deadline, w.stdout.read_line(&mut line)).await;
                let parsed = match status {
                    Err(_) => {
                        let e = EtlError::Timeout {
                            stage: self.name.clone(),
                            secs: self.timeout.as_secs(),
                        };
                        return self.fail(e);
                    }
                    Ok(Err(e)) => {
                        return self.fail(crashed(format!("reading the status line: {e}")));
                    }
                    Ok(Ok(_)) => serde_json::from_str::<WorkerStatus>(line.trim()),
                };
                let st = match parsed {
                    Ok(s) => s,
                    Err(e) => return self.fail(crashed(format!("bad status line {line:?}: {e}"))),
                };
                // The request must have been fully written before the worker is reused.
                let stdin = match self.feeder.take() {
                    Some(f) => match tokio::time::timeout_at(deadline, f).await {
                        Ok(Ok((stdin, Ok(())))) => stdin,
                        Ok(Ok((_, Err(e)))) => return self.fail(e),
                        _ => return self.fail(crashed("the request could not be written".into())),
                    },
                    None => return self.fail(crashed("internal: no feeder".into())),
                };
                let mut w = self.worker.take().expect("worker present");
                w.stdin = Some(stdin);
                self.pool.lock().expect("pool lock").push(w);
                match st.status {
                    200 => None,
                    422 => Some(Err(EtlError::Rejected {
                        stage: self.name.clone(),
                        message: st.message,
                    })),
                    _ => Some(Err(EtlError::Failed {
                        stage: self.name.clone(),
                        message: st.message,
                    })),
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Transformer for Exec {
    fn name(&self) -> &str {
        &self.cfg.declared.name
    }

    fn declared(&self) -> Option<&Declared> {
        Some(&self.cfg.declared)
    }

    async fn run(
        &self,
        input: ByteStream,
        args: &StageArgs,
        path: &str,
    ) -> Result<ByteStream, EtlError> {
        match self.cfg.mode {
            ExecMode::OneShot => self.one_shot(input, args, path).await,
            ExecMode::Worker => self.worker(input, args, path).await,
        }
    }

    fn logs(&self) -> Vec<String> {
        Exec::logs(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{collect, once};

    fn cfg(argv: &[&str], mode: ExecMode, timeout_ms: u64) -> ExecConfig {
        ExecConfig {
            declared: Declared {
                name: "t".into(),
                deterministic: true,
                content_type: None,
                version: "1".into(),
                obj_timeout: Duration::from_millis(timeout_ms),
                concurrency: 2,
            },
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            workdir: None,
            mode,
        }
    }

    async fn run(e: &Exec, input: &[u8]) -> Result<Vec<u8>, EtlError> {
        collect(
            e.run(once(input.to_vec()), &StageArgs::default(), "b/k")
                .await?,
        )
        .await
    }

    #[tokio::test]
    async fn one_shot_transforms_and_reports_failures() {
        let upper = Exec::new(cfg(&["tr", "a-z", "A-Z"], ExecMode::OneShot, 5000)).unwrap();
        assert_eq!(run(&upper, b"hello").await.unwrap(), b"HELLO");
        let reject = Exec::new(cfg(
            &["sh", "-c", "cat >/dev/null; echo bad input >&2; exit 65"],
            ExecMode::OneShot,
            5000,
        ))
        .unwrap();
        let e = run(&reject, b"x").await.unwrap_err();
        assert_eq!(e.status(), 422, "{e}");
        assert!(e.to_string().contains("bad input"));
        let crash = Exec::new(cfg(
            &["sh", "-c", "head -c 2; exit 3"],
            ExecMode::OneShot,
            5000,
        ))
        .unwrap();
        assert_eq!(run(&crash, b"hello").await.unwrap_err().status(), 500);
        let hang = Exec::new(cfg(&["sleep", "10"], ExecMode::OneShot, 200)).unwrap();
        assert_eq!(run(&hang, b"x").await.unwrap_err().status(), 504);
    }

    #[tokio::test]
    async fn worker_framing_and_reuse() {
        let script = r#"
import sys, json, struct
inp, out = sys.stdin.buffer, sys.stdout.buffer
while True:
    line = inp.readline()
    if not line: break
    req = json.loads(line)
    data = b""
    while True:
        (n,) = struct.unpack(">I", inp.read(4))
        if n == 0: break
        data += inp.read(n)
    if data == b"reject":
        out.write(struct.pack(">I", 0)); out.write(b'{"status":422,"message":"nope"}\n')
    else:
        body = data.upper() + req["path"].encode()
        out.write(struct.pack(">I", len(body)) + body + struct.pack(">I", 0))
        out.write(b'{"status":200}\n')
    out.flush()
"#;
        let w = Exec::new(cfg(&["python3", "-c", script], ExecMode::Worker, 5000)).unwrap();
        for _ in 0..3 {
            assert_eq!(run(&w, b"abc").await.unwrap(), b"ABCb/k");
        }
        assert_eq!(
            w.idle.lock().unwrap().len(),
            1,
            "one worker served every object"
        );
        assert_eq!(run(&w, b"reject").await.unwrap_err().status(), 422);
        assert_eq!(run(&w, b"again").await.unwrap(), b"AGAINb/k");
    }
}
