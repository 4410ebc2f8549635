//! WebDataset transforms: whole shards in, whole shards out, samples kept in order.
//!
//! * `wds-select {"keep": [exts]}` or `{"drop": [exts]}` — keep or drop members by extension;
//! * `wds-map {"ext": "jpg", "pipeline": "resize,jpeg", "args": {...}}` — run a nested
//!   pipeline of built-ins on every member whose extension matches; every other member's bytes
//!   pass unchanged; names and order are kept.
//!
//! A member's extension is what follows the first `.` of its file name (`0001.seg.png` →
//! `seg.png`); a requested extension matches it whole or its last part (`png`). The input is a
//! plain tar (put `gunzip` first for a tgz shard). Members are handled one at a time; a
//! `wds-map` member is held in memory while it is transformed (at most 64 MiB).

use std::io::{self, Read, Write};
use std::sync::Arc;

use aisle_shard::{Flow, Member, ShardError, TarOut, Visitor, wds_split};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::{
    ByteStream, EtlError, Pipeline, Registry, StageArgs, Transformer, collect_limited, once,
};

/// Largest member `wds-map` transforms.
pub const MAX_MEMBER_BYTES: usize = 64 * 1024 * 1024;

pub(super) fn all() -> Vec<Arc<dyn Transformer>> {
    vec![Arc::new(WdsSelect), Arc::new(WdsMap)]
}

fn ext_matches(name: &str, wanted: &[String]) -> bool {
    let ext = wds_split(name).1;
    let last = ext.rsplit('.').next().unwrap_or(ext);
    wanted.iter().any(|w| w == ext || w == last)
}

fn strings(stage: &str, v: &Value) -> Result<Vec<String>, EtlError> {
    let bad = || EtlError::BadArgs {
        stage: stage.into(),
        message: "give a list of extensions, e.g. [\"jpg\", \"cls\"]".into(),
    };
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
        .collect()
}

/// Sends written bytes to an async channel, from a blocking thread.
struct ChannelWriter(mpsc::Sender<Result<Bytes, EtlError>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Run a tar-to-tar visitor over `input` on the blocking pool; the output streams back.
fn tar_to_tar<V, F>(stage: &'static str, input: ByteStream, make: F) -> ByteStream
where
    V: Visitor + Send,
    F: FnOnce(
            TarOut<io::BufWriter<ChannelWriter>>,
        ) -> (V, Box<dyn FnOnce(V) -> Result<(), ShardError> + Send>)
        + Send
        + 'static,
{
    let (tx, rx) = mpsc::channel(8);
    let reader = StreamReader::new(input.map(|r| r.map_err(io::Error::other)));
    let errors = tx.clone();
    tokio::task::spawn_blocking(move || {
        let sync = SyncIoBridge::new(reader);
        let out = TarOut::new(io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx)));
        let (mut v, finish) = make(out);
        let walked = walk_stream(sync, &mut v).and_then(|()| finish(v));
        if let Err(e) = walked {
            let err = match e {
                ShardError::Io(io) if io.kind() == io::ErrorKind::BrokenPipe => return,
                ShardError::Io(io) => match io.get_ref().and_then(|i| i.downcast_ref::<EtlError>())
                {
                    Some(inner) => inner.clone(),
                    None => EtlError::Failed {
                        stage: stage.into(),
                        message: io.to_string(),
                    },
                },
                ShardError::Corrupt(_)
                | ShardError::UnknownFormat
                | ShardError::Bomb(_)
                | ShardError::UnsafeName(_) => EtlError::Rejected {
                    stage: stage.into(),
                    message: e.to_string(),
                },
                other => EtlError::Failed {
                    stage: stage.into(),
                    message: other.to_string(),
                },
            };
            let _ = errors.blocking_send(Err(err));
        }
    });
    Box::pin(futures::stream::poll_fn({
        let mut rx = rx;
        move |cx| rx.poll_recv(cx)
    }))
}

/// Walk a plain tar that arrives as a stream (no seeking).
fn walk_stream<R: Read>(r: R, v: &mut dyn Visitor) -> Result<(), ShardError> {
    let mut ar = tar::Archive::new(r);
    for entry in ar
        .entries()
        .map_err(|e| ShardError::Corrupt(e.to_string()))?
    {
        let mut e = entry.map_err(|e| ShardError::Corrupt(e.to_string()))?;
        let kind = e.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        let m = Member {
            name: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            size: e.size(),
            offset: e.raw_file_position(),
        };
        if v.wants(&m) {
            if v.data(&m, &mut e)? == Flow::Stop {
                break;
            }
        } else if v.skipped(&m) == Flow::Stop {
            break;
        }
    }
    Ok(())
}

/// `wds-select`.
pub struct WdsSelect;

struct Select<W: Write> {
    keep: Option<Vec<String>>,
    drop: Vec<String>,
    out: TarOut<W>,
}

impl<W: Write> Visitor for Select<W> {
    fn wants(&mut self, m: &Member) -> bool {
        let kept = self.keep.as_ref().is_none_or(|k| ext_matches(&m.name, k));
        kept && !ext_matches(&m.name, &self.drop)
    }
    fn data(&mut self, m: &Member, r: &mut dyn Read) -> Result<Flow, ShardError> {
        self.out.append(&m.name, m.size, r)?;
        Ok(Flow::Continue)
    }
}

impl WdsSelect {
    fn lists(&self, args: &StageArgs) -> Result<(Option<Vec<String>>, Vec<String>), EtlError> {
        let json = args.json.as_ref();
        let keep = json
            .and_then(|j| j.get("keep"))
            .map(|v| strings("wds-select", v))
            .transpose()?;
        let drop = json
            .and_then(|j| j.get("drop"))
            .map(|v| strings("wds-select", v))
            .transpose()?
            .unwrap_or_default();
        if keep.is_none() && drop.is_empty() {
            return Err(EtlError::BadArgs {
                stage: "wds-select".into(),
                message: "give {\"keep\": [exts]} or {\"drop\": [exts]}".into(),
            });
        }
        Ok((keep, drop))
    }
}

#[async_trait::async_trait]
impl Transformer for WdsSelect {
    fn name(&self) -> &str {
        "wds-select"
    }
    fn content_type(&self, _input: Option<&str>) -> Option<String> {
        Some("application/x-tar".into())
    }
    fn check_args(&self, args: &StageArgs) -> Result<(), EtlError> {
        self.lists(args).map(drop)
    }
    async fn run(
        &self,
        input: ByteStream,
        args: &StageArgs,
        _path: &str,
    ) -> Result<ByteStream, EtlError> {
        let (keep, drop) = self.lists(args)?;
        Ok(tar_to_tar("wds-select", input, move |out| {
            (
                Select { keep, drop, out },
                Box::new(|v: Select<_>| v.out.finish()?.flush().map_err(ShardError::Io)),
            )
        }))
    }
}

/// `wds-map`.
pub struct WdsMap;

struct Map<W: Write> {
    exts: Vec<String>,
    pipeline: Arc<Pipeline>,
    path: String,
    rt: tokio::runtime::Handle,
    out: TarOut<W>,
}

impl<W: Write> Visitor for Map<W> {
    fn wants(&mut self, _m: &Member) -> bool {
        true
    }
    fn data(&mut self, m: &Member, r: &mut dyn Read) -> Result<Flow, ShardError> {
        if !ext_matches(&m.name, &self.exts) {
            self.out.append(&m.name, m.size, r)?;
            return Ok(Flow::Continue);
        }
        if m.size as usize > MAX_MEMBER_BYTES {
            return Err(ShardError::Io(io::Error::other(EtlError::Rejected {
                stage: "wds-map".into(),
                message: format!(
                    "member {:?} is larger than {MAX_MEMBER_BYTES} bytes",
                    m.name
                ),
            })));
        }
        let mut data = Vec::with_capacity(m.size as usize);
        r.read_to_end(&mut data)?;
        let member_path = format!("{}/{}", self.path, m.name);
        let pipeline = self.pipeline.clone();
        let out = self
            .rt
            .block_on(async move {
                let s = pipeline.run(once(data), &member_path).await?;
                collect_limited(s, MAX_MEMBER_BYTES, "wds-map").await
            })
            .map_err(|e| ShardError::Io(io::Error::other(e)))?;
        self.out.append(&m.name, out.len() as u64, &mut &out[..])?;
        Ok(Flow::Continue)
    }
}

impl WdsMap {
    fn nested(&self, args: &StageArgs) -> Result<(Vec<String>, Pipeline), EtlError> {
        let bad = |m: &str| EtlError::BadArgs {
            stage: "wds-map".into(),
            message: m.into(),
        };
        let json = args.json.as_ref().ok_or_else(|| {
            bad("give {\"ext\": \"jpg\", \"pipeline\": \"resize\", \"args\": {...}}")
        })?;
        let exts = match json.get("ext") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(v @ Value::Array(_)) => strings("wds-map", v)?,
            _ => return Err(bad("ext must be an extension or a list of them")),
        };
        let names: Vec<String> = json
            .get("pipeline")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("pipeline must be a string such as \"resize,jpeg\""))?
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        if names.iter().any(|n| n.starts_with("wds-")) {
            return Err(bad("wds-map does not nest wds- transforms"));
        }
        let nested_args = json.get("args").map(|a| match a {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let pipeline = Registry::with_builtins().resolve(&names, nested_args.as_deref())?;
        Ok((exts, pipeline))
    }
}

#[async_trait::async_trait]
impl Transformer for WdsMap {
    fn name(&self) -> &str {
        "wds-map"
    }
    fn content_type(&self, _input: Option<&str>) -> Option<String> {
        Some("application/x-tar".into())
    }
    fn check_args(&self, args: &StageArgs) -> Result<(), EtlError> {
        self.nested(args).map(drop)
    }
    async fn run(
        &self,
        input: ByteStream,
        args: &StageArgs,
        path: &str,
    ) -> Result<ByteStream, EtlError> {
        let (exts, pipeline) = self.nested(args)?;
        let pipeline = Arc::new(pipeline);
        let rt = tokio::runtime::Handle::current();
        let path = path.to_string();
        Ok(tar_to_tar("wds-map", input, move |out| {
            (
                Map {
                    exts,
                    pipeline,
                    path,
                    rt,
                    out,
                },
                Box::new(|v: Map<_>| v.out.finish()?.flush().map_err(ShardError::Io)),
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use crate::{Registry, collect, once};

    fn shard() -> Vec<u8> {
        let mut out = aisle_shard::TarOut::new(Vec::new());
        for i in 0..5 {
            let img =
                image::RgbImage::from_fn(100, 80, |x, y| image::Rgb([x as u8, y as u8, i as u8]));
            let mut jpg = Cursor::new(Vec::new());
            img.write_to(&mut jpg, image::ImageFormat::Jpeg).unwrap();
            let jpg = jpg.into_inner();
            out.append(&format!("s{i}.jpg"), jpg.len() as u64, &mut &jpg[..])
                .unwrap();
            out.append(&format!("s{i}.cls"), 1, &mut &[b'0' + i as u8][..])
                .unwrap();
        }
        out.finish().unwrap()
    }

    async fn run(names: &[&str], args: &str, input: Vec<u8>) -> Result<Vec<u8>, crate::EtlError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let p = Registry::with_builtins().resolve(&names, Some(args))?;
        collect(p.run(once(input), "b/shard.tar").await?).await
    }

    fn members(tar: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut v).unwrap();
                (e.path().unwrap().display().to_string(), v)
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn wds_map_resizes_images_and_keeps_the_rest() {
        let src = shard();
        let out = run(
            &["wds-map"],
            r#"{"ext":"jpg","pipeline":"resize","args":{"resize":{"w":32,"h":32}}}"#,
            src.clone(),
        )
        .await
        .unwrap();
        let (a, b) = (members(&src), members(&out));
        assert_eq!(
            a.iter().map(|m| &m.0).collect::<Vec<_>>(),
            b.iter().map(|m| &m.0).collect::<Vec<_>>()
        );
        for (x, y) in a.iter().zip(&b) {
            if x.0.ends_with(".cls") {
                assert_eq!(x.1, y.1);
            } else {
                let img = image::load_from_memory(&y.1).unwrap();
                assert_eq!((img.width(), img.height()), (32, 32));
            }
        }
        // Deterministic.
        let again = run(
            &["wds-map"],
            r#"{"ext":"jpg","pipeline":"resize","args":{"resize":{"w":32,"h":32}}}"#,
            src,
        )
        .await
        .unwrap();
        assert_eq!(out, again);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn wds_select_and_errors() {
        let src = shard();
        let out = run(&["wds-select"], r#"{"keep":["cls"]}"#, src.clone())
            .await
            .unwrap();
        assert_eq!(members(&out).len(), 5);
        let out = run(&["wds-select"], r#"{"drop":["cls"]}"#, src.clone())
            .await
            .unwrap();
        assert!(members(&out).iter().all(|m| m.0.ends_with(".jpg")));
        assert_eq!(
            run(&["wds-select"], "{}", src.clone())
                .await
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            run(&["wds-map"], r#"{"ext":"jpg","pipeline":"nope"}"#, src)
                .await
                .unwrap_err()
                .status(),
            400
        );
        let e = run(
            &["wds-select"],
            r#"{"keep":["cls"]}"#,
            b"not a tar at all".repeat(100),
        )
        .await
        .unwrap_err();
        assert_eq!(e.status(), 422, "{e}");
    }
}
