use std::cell::Cell;
use std::io::{self, Read, Seek};
use std::rc::Rc;

use crate::{Format, ShardError};

/// One member of a shard.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Member {
    /// Its name (path inside the archive).
    pub name: String,
    /// Uncompressed size in bytes.
    pub size: u64,
    /// Where its data starts: in the file for tar and zip, in the decompressed stream for
    /// compressed tars.
    pub offset: u64,
}

impl Member {
    /// False for names that would escape a directory if extracted (absolute, `..`, NUL).
    pub fn safe(&self) -> bool {
        !self.name.starts_with('/')
            && !self.name.contains('\0')
            && !self.name.split(['/', '\\']).any(|c| c == "..")
    }
}

/// Keep walking or stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on to the next member.
    Continue,
    /// Stop the walk.
    Stop,
}

/// What a walk over a shard does with each member.
pub trait Visitor {
    /// Read this member's bytes?
    fn wants(&mut self, m: &Member) -> bool;
    /// The bytes of a wanted member.
    fn data(&mut self, m: &Member, r: &mut dyn Read) -> Result<Flow, ShardError>;
    /// A member that was not wanted.
    fn skipped(&mut self, _m: &Member) -> Flow {
        Flow::Continue
    }
}

/// Bounds that keep hostile archives cheap.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most decompressed bytes per compressed byte, once past `bomb_floor`.
    pub max_ratio: u64,
    /// Decompressed bytes always allowed, whatever the ratio.
    pub bomb_floor: u64,
    /// Most members in one shard.
    pub max_members: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_ratio: 200,
            bomb_floor: 64 * 1024 * 1024,
            max_members: 1_000_000,
        }
    }
}

#[derive(Debug)]
struct BombMarker(String);
impl std::fmt::Display for BombMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BombMarker {}

/// Counts bytes read from the compressed input.
struct Counting<R> {
    inner: R,
    n: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n.set(self.n.get() + k as u64);
        Ok(k)
    }
}

/// Fails once the decompressed output is out of proportion to the compressed input.
struct BombGuard<R> {
    inner: R,
    compressed: Rc<Cell<u64>>,
    produced: u64,
    limits: Limits,
}

impl<R: Read> Read for BombGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.produced += k as u64;
        let c = self.compressed.get().max(1);
        if self.produced > self.limits.bomb_floor && self.produced > self.limits.max_ratio * c {
            return Err(io::Error::other(BombMarker(format!(
                "{} bytes out of {} compressed (limit {}:1)",
                self.produced, c, self.limits.max_ratio
            ))));
        }
        Ok(k)
    }
}

/// Remembers whether reading the archive itself failed (as opposed to the visitor's output).
struct Checked<'a, R: ?Sized> {
    inner: &'a mut R,
    failed: Option<io::Error>,
}

impl<R: Read + ?Sized> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                let kind = e.kind();
                let msg = e.to_string();
                self.failed = Some(e);
                Err(io::Error::new(kind, msg))
            }
        }
    }
}

fn input_error(e: io::Error) -> ShardError {
    if let Some(b) = e.get_ref().and_then(|i| i.downcast_ref::<BombMarker>()) {
        return ShardError::Bomb(b.0.clone());
    }
    ShardError::Corrupt(e.to_string())
}

/// Hand one member to the visitor; archive read errors become `Corrupt` (or `Bomb`).
fn deliver(v: &mut dyn Visitor, m: &Member, r: &mut dyn Read) -> Result<Flow, ShardError> {
    if !v.wants(m) {
        return Ok(v.skipped(m));
    }
    let mut checked = Checked {
        inner: r,
        failed: None,
    };
    match v.data(m, &mut checked) {
        Ok(f) => Ok(f),
        Err(e) => match checked.failed.take() {
            Some(input) => Err(input_error(input)),
            None => Err(e),
        },
    }
}

fn walk_tar<R: Read>(
    entries: tar::Entries<'_, R>,
    total_len: Option<u64>,
    limits: &Limits,
    v: &mut dyn Visitor,
) -> Result<(), ShardError> {
    let mut count = 0usize;
    // End of the last member's padded data: what follows must be end-of-archive blocks.
    let mut end = 0u64;
    for entry in entries {
        let mut e = entry.map_err(input_error)?;
        let kind = e.header().entry_type();
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            continue;
        }
        count += 1;
        if count > limits.max_members {
            return Err(ShardError::Bomb(format!(
                "more than {} members",
                limits.max_members
            )));
        }
        let m = Member {
            name: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            size: e.size(),
            offset: e.raw_file_position(),
        };
        if let Some(len) = total_len
            && m.offset.checked_add(m.size).is_none_or(|end| end > len)
        {
            return Err(ShardError::Corrupt(format!(
                "member {:?} claims {} bytes past the end of the archive",
                m.name, m.size
            )));
        }
        end = m.offset + m.size + crate::padding(m.size) as u64;
        if deliver(v, &m, &mut e)? == Flow::Stop {
            return Ok(());
        }
    }
    // A tar cut inside a header reads as a clean end; the stray bytes give it away.
    if let Some(len) = total_len {
        let tail = len.saturating_sub(end);
        if tail > 0 && tail < 512 {
            return Err(ShardError::Corrupt(format!(
                "truncated: {tail} stray bytes after the last complete member"
            )));
        }
    }
    Ok(())
}

/// Walk the members of a shard in order. `total_len` is the shard's size.
pub fn visit<R: Read + Seek>(
    format: Format,
    r: R,
    total_len: u64,
    limits: &Limits,
    v: &mut dyn Visitor,
) -> Result<(), ShardError> {
    match format {
        Format::Tar => {
            let mut ar = tar::Archive::new(r);
            let entries = ar.entries_with_seek().map_err(input_error)?;
            walk_tar(entries, Some(total_len), limits, v)
        }
        Format::TarGz | Format::TarLz4 => {
            let n = Rc::new(Cell::new(0));
            let counting = Counting {
                inner: r,
                n: n.clone(),
            };
            let dec: Box<dyn Read> = match format {
                Format::TarGz => Box::new(flate2::read::MultiGzDecoder::new(counting)),
                _ => Box::new(lz4_flex::frame::FrameDecoder::new(counting)),
            };
            let guarded = BombGuard {
                inner: dec,
                compressed: n,
                produced: 0,
                limits: limits.clone(),
            };
            let mut ar = tar::Archive::new(guarded);
            let entries = ar.entries().map_err(input_error)?;
            walk_tar(entries, None, limits, v)
        }
        Format::Zip => {
            let mut z = zip::ZipArchive::new(r).map_err(|e| ShardError::Corrupt(e.to_string()))?;
            if z.len() > limits.max_members {
                return Err(ShardError::Bomb(format!(
                    "more than {} members",
                    limits.max_members
                )));
            }
            for i in 0..z.len() {
                let (m, compressed) = {
                    let f = z
                        .by_index_raw(i)
                        .map_err(|e| ShardError::Corrupt(e.to_string()))?;
                    if f.is_dir() {
                        continue;
                    }
                    (
                        Member {
                            name: f
                                .name()
                                .map_err(|e| ShardError::Corrupt(e.to_string()))?
                                .into_owned(),
                            size: f.size(),
                            offset: f.data_start().unwrap_or(0),
                        },
                        f.compressed_size(),
                    )
                };
                if m.size > limits.bomb_floor && m.size > limits.max_ratio * compressed.max(1) {
                    return Err(ShardError::Bomb(format!(
                        "member {:?}: {} bytes from {compressed} compressed",
                        m.name, m.size
                    )));
                }
                if !v.wants(&m) {
                    if v.skipped(&m) == Flow::Stop {
                        break;
                    }
                    continue;
                }
                let f = z
                    .by_index(i)
                    .map_err(|e| ShardError::Corrupt(e.to_string()))?;
                let mut limited = f.take(m.size);
                if deliver(v, &m, &mut limited)? == Flow::Stop {
                    break;
                }
            }
            Ok(())
        }
    }
}

struct Lister(Vec<Member>);

impl Visitor for Lister {
    fn wants(&mut self, m: &Member) -> bool {
        self.0.push(m.clone());
        false
    }
    fn data(&mut self, _m: &Member, _r: &mut dyn Read) -> Result<Flow, ShardError> {
        Ok(Flow::Continue)
    }
}

/// Every member, in order (no member data is read; a compressed tar is decompressed once).
pub fn list<R: Read + Seek>(
    format: Format,
    r: R,
    total_len: u64,
) -> Result<Vec<Member>, ShardError> {
    let mut l = Lister(Vec::new());
    visit(format, r, total_len, &Limits::default(), &mut l)?;
    Ok(l.0)
}
