use std::io::{Read, Write};

use crate::{Member, ShardError};

/// A tar stream being written: members with mode 0644 and mtime 0, so the same members always
/// give the same bytes.
pub struct TarOut<W: Write> {
    b: tar::Builder<W>,
}

impl<W: Write> TarOut<W> {
    /// Start writing to `w`.
    pub fn new(w: W) -> Self {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Deterministic);
        TarOut { b }
    }

    /// Append a member of `size` bytes read from `data`. Names that would escape a directory
    /// are refused.
    pub fn append(&mut self, name: &str, size: u64, data: &mut dyn Read) -> Result<(), ShardError> {
        let m = Member {
            name: name.to_string(),
            size,
            offset: 0,
        };
        if !m.safe() || name.is_empty() {
            return Err(ShardError::UnsafeName(name.to_string()));
        }
        let mut h = tar::Header::new_gnu();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        self.b.append_data(&mut h, name, data.take(size))?;
        Ok(())
    }

    /// Write the end-of-archive blocks and return the writer.
    pub fn finish(self) -> Result<W, ShardError> {
        Ok(self.b.into_inner()?)
    }
}
