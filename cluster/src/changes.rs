//! A target's change table: counters in a shared-memory file that a target bumps after every
//! commit to its index, so that a gateway on the same host can tell — without a call — that
//! nothing it read from the target has changed since.
//!
//! The table is a file in the target's root, mapped shared by the target (read-write) and by
//! the gateways on its host (read-only, through the descriptor the target passes,
//! [`crate::local::LocalRequest::Changes`]). It holds one counter for the whole store and
//! [`SLOTS`] counters for keys, picked by a stable hash of `(bucket, key)`. Every counter only
//! grows, and outlives the target process: a target that restarts maps the same file and goes
//! on counting, so a gateway's mapping stays valid across restarts.
//!
//! The rule that makes a reader's cache safe: a target bumps the counters a commit touches
//! after the commit and before it answers the write. So a reader that took
//! [`ChangeView::stamp`] before asking for `(bucket, key)` and sees the same stamp later knows
//! that no write of that key was acknowledged in between (another key sharing its slot only
//! costs a needless refresh).
//!
//! Not for: durability or ordering of writes (the counters are not flushed and mean nothing
//! after a reboot, when every reader has restarted too), or targets on other hosts.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapMut};

/// Key counters in a table.
pub const SLOTS: usize = 1 << 14;

const MAGIC: u64 = u64::from_le_bytes(*b"AISLECHG");
/// Words before the key counters: magic, slot count, the whole-store counter, padding.
const HEADER_WORDS: usize = 8;
const ALL: usize = 2;
const LEN: usize = (HEADER_WORDS + SLOTS) * 8;

/// The key counter that `(bucket, key)` maps to (a stable hash: xxh3, as placement).
pub fn slot(bucket: &str, key: &str) -> usize {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(bucket.as_bytes());
    h.update(&[0]);
    h.update(key.as_bytes());
    (h.digest() % SLOTS as u64) as usize
}

fn words(base: *const u8) -> &'static [AtomicU64] {
    // SAFETY: `base` is the start of a live, page-aligned mapping of LEN bytes that outlives
    // every use (the caller holds the mapping); AtomicU64 has the layout of u64, and every
    // access to the shared words goes through atomics.
    unsafe { std::slice::from_raw_parts(base.cast::<AtomicU64>(), HEADER_WORDS + SLOTS) }
}

/// The target's side: the table it bumps.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("aisle-doc-changes-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// use aisle_cluster::changes::{ChangeTable, ChangeView};
/// let table = ChangeTable::open(&dir.join("changes")).unwrap();
/// let view = ChangeView::from_fd(table.share().unwrap()).unwrap();
/// let before = view.stamp("photos", "cat.jpg");
/// table.bump_key("photos", "cat.jpg");
/// assert_ne!(view.stamp("photos", "cat.jpg"), before);
/// # std::fs::remove_dir_all(dir).unwrap();
/// ```
pub struct ChangeTable {
    file: File,
    map: MmapMut,
}

impl ChangeTable {
    /// Map the table at `path`, creating it if needed. A file that is not a table (wrong
    /// size or magic) is set up again with every counter above any value a reader could hold.
    pub fn open(path: &Path) -> io::Result<ChangeTable> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let fresh = file.metadata()?.len() != LEN as u64;
        if fresh {
            file.set_len(LEN as u64)?;
        }
        // SAFETY: the file is ours (the target's root); other mappings of it only read, and
        // every access to the words is atomic.
        let map = unsafe { MmapMut::map_mut(&file)? };
        let table = ChangeTable { file, map };
        let w = table.words();
        if w[0].load(Ordering::Acquire) != MAGIC || w[1].load(Ordering::Acquire) != SLOTS as u64 {
            // A file that is not ours, or a table of another shape: start every counter past
            // anything a reader may have seen (readers only compare stamps for equality, and
            // counters were bumped once per commit, far below this).
            let base = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(1);
            for c in &w[HEADER_WORDS..] {
                c.store(base, Ordering::Relaxed);
            }
            w[ALL].store(base, Ordering::Relaxed);
            w[1].store(SLOTS as u64, Ordering::Relaxed);
            w[0].store(MAGIC, Ordering::Release);
        }
        Ok(table)
    }

    fn words(&self) -> &[AtomicU64] {
        words(self.map.as_ptr())
    }

    /// After a commit that changed `(bucket, key)`.
    pub fn bump_key(&self, bucket: &str, key: &str) {
        self.bump_slot(slot(bucket, key));
    }

    /// After a commit that changed a key of [`slot`] `slot`.
    pub fn bump_slot(&self, slot: usize) {
        self.words()[HEADER_WORDS + slot % SLOTS].fetch_add(1, Ordering::Release);
    }

    /// After a commit that may have changed any key.
    pub fn bump_all(&self) {
        self.words()[ALL].fetch_add(1, Ordering::Release);
    }

    /// A descriptor of the table's file, for a reader ([`ChangeView::from_fd`]).
    pub fn share(&self) -> io::Result<OwnedFd> {
        Ok(self.file.try_clone()?.into())
    }
}

/// A reader's side: a read-only mapping of a target's table.
pub struct ChangeView {
    map: Mmap,
}

impl ChangeView {
    /// Map the table behind `fd` (from [`ChangeTable::share`], maybe in another process).
    pub fn from_fd(fd: OwnedFd) -> io::Result<ChangeView> {
        let file = File::from(fd);
        if file.metadata()?.len() != LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a change table (size)",
            ));
        }
        // SAFETY: read-only shared mapping; the writer changes words only atomically.
        let map = unsafe { Mmap::map(&file)? };
        let view = ChangeView { map };
        let w = words(view.map.as_ptr());
        if w[0].load(Ordering::Acquire) != MAGIC || w[1].load(Ordering::Acquire) != SLOTS as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a change table (header)",
            ));
        }
        Ok(view)
    }

    /// The counters that cover `(bucket, key)`, as one number that changes whenever either
    /// does (both only grow).
    pub fn stamp(&self, bucket: &str, key: &str) -> u64 {
        let w = words(self.map.as_ptr());
        w[ALL]
            .load(Ordering::Acquire)
            .wrapping_add(w[HEADER_WORDS + slot(bucket, key)].load(Ordering::Acquire))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("aisle-changes-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_reader_sees_every_bump_that_covers_its_key_and_a_reopened_table_counts_on() {
        let d = dir("bumps");
        let path = d.join("changes");
        let table = ChangeTable::open(&path).unwrap();
        let view = ChangeView::from_fd(table.share().unwrap()).unwrap();
        let a = view.stamp("b", "a");
        table.bump_key("b", "a");
        let a2 = view.stamp("b", "a");
        assert_ne!(a, a2);
        table.bump_all();
        assert_ne!(view.stamp("b", "a"), a2);
        // Another key in another slot does not move this one.
        let other = (0..1000)
            .map(|i| format!("k{i}"))
            .find(|k| slot("b", k) != slot("b", "a"))
            .unwrap();
        let before = view.stamp("b", "a");
        table.bump_key("b", &other);
        assert_eq!(view.stamp("b", "a"), before);
        // A restarted target maps the same file and goes on: the old view sees its bumps.
        drop(table);
        let again = ChangeTable::open(&path).unwrap();
        assert_eq!(view.stamp("b", "a"), before);
        again.bump_key("b", "a");
        assert_ne!(view.stamp("b", "a"), before);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_file_that_is_not_a_table_is_set_up_past_any_old_value_and_refused_by_readers() {
        let d = dir("junk");
        let path = d.join("changes");
        std::fs::write(&path, vec![7u8; LEN]).unwrap();
        let junk = OpenOptions::new().read(true).open(&path).unwrap();
        assert!(ChangeView::from_fd(junk.into()).is_err());
        let table = ChangeTable::open(&path).unwrap();
        let view = ChangeView::from_fd(table.share().unwrap()).unwrap();
        assert!(view.stamp("b", "k") > 1_000_000_000_000);
        std::fs::write(d.join("short"), b"x").unwrap();
        let short = File::open(d.join("short")).unwrap();
        assert!(ChangeView::from_fd(short.into()).is_err());
        std::fs::remove_dir_all(d).unwrap();
    }
}
