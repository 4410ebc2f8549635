//! Shards: archives of many samples (WebDataset tar files, tgz, tar.lz4, zip) read in place.
//!
//! * [`Format`] — which kind of archive, by extension, else by magic bytes;
//! * [`visit`] — walk the members in shard order, reading only the ones wanted (a plain tar
//!   skips the others by seeking; compressed tars stream through a decompression-bomb guard;
//!   zip uses its central directory);
//! * [`Selector`] — AIStore's `archregx` + `archmode` (regexp, prefix, suffix, substr, wdskey);
//! * [`TarOut`] — write members into a tar stream (for multi-member reads and batches).
//!
//! This crate works on `std::io` readers and writers: it knows nothing of storage, HTTP or the
//! cluster. Callers run it on a blocking thread.
//!
//! ```
//! use aisle_shard::{Format, Selector, MatchMode, list};
//! let mut b = tar::Builder::new(Vec::new());
//! for (name, data) in [("s1.jpg", &b"jpeg"[..]), ("s1.cls", b"3"), ("s2.jpg", b"jpeg2")] {
//!     let mut h = tar::Header::new_gnu();
//!     h.set_size(data.len() as u64);
//!     h.set_mode(0o644);
//!     h.set_cksum();
//!     b.append_data(&mut h, name, data).unwrap();
//! }
//! let shard = b.into_inner().unwrap();
//! let members = list(Format::Tar, std::io::Cursor::new(&shard), shard.len() as u64).unwrap();
//! assert_eq!(members.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["s1.jpg", "s1.cls", "s2.jpg"]);
//! let sel = Selector::new("s1", MatchMode::Wdskey).unwrap();
//! assert_eq!(members.iter().filter(|m| sel.matches(&m.name)).count(), 2);
//! ```

mod error;
mod format;
mod select;
mod visit;
mod write;

pub use error::ShardError;
pub use format::Format;
pub use select::{MatchMode, Selector, wds_split};
pub use visit::{Flow, Limits, Member, Visitor, list, visit};
pub use write::{END_OF_ARCHIVE, TarOut, member_header, padding};

#[cfg(test)]
mod tests;
