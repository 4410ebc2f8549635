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

/// The header block(s) that start a tar member of `size` bytes named `name` (a GNU long-name
/// entry first when the name needs one), for writers that stream the data themselves: send
/// these bytes, then `size` data bytes, then [`padding`]`(size)` zero bytes.
///
/// ```
/// let h = aisle_shard::member_header("a.txt", 5).unwrap();
/// assert_eq!(h.len(), 512);
/// let long = aisle_shard::member_header(&"x".repeat(300), 5).unwrap();
/// assert_eq!(long.len(), 512 * 3);
/// ```
pub fn member_header(name: &str, size: u64) -> Result<Vec<u8>, ShardError> {
    let m = Member {
        name: name.to_string(),
        size,
        offset: 0,
    };
    if !m.safe() || name.is_empty() {
        return Err(ShardError::UnsafeName(name.to_string()));
    }
    let mut b = tar::Builder::new(Vec::new());
    b.mode(tar::HeaderMode::Deterministic);
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    // Let the builder write whatever long-name entries the name needs, with an empty body...
    b.append_data(&mut h, name, std::io::empty())?;
    let mut out = b.into_inner()?;
    out.truncate(out.len() - END_OF_ARCHIVE.len());
    // ...then fix the size in the last header block and its checksum.
    let last = out.len() - 512;
    let mut hdr = tar::Header::new_old();
    hdr.as_mut_bytes().copy_from_slice(&out[last..]);
    hdr.set_size(size);
    hdr.set_cksum();
    out[last..].copy_from_slice(hdr.as_bytes());
    Ok(out)
}

/// Zero bytes that pad a member of `size` bytes to the 512-byte block size.
pub fn padding(size: u64) -> usize {
    ((512 - size % 512) % 512) as usize
}

/// The end-of-archive marker: two zero blocks.
pub const END_OF_ARCHIVE: [u8; 1024] = [0; 1024];
