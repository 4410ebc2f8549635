//! The small-write journal: how a small object is made durable with one synchronous flush.
//!
//! A data file of at most [`JOURNAL_MAX`](super::layout::JOURNAL_MAX) bytes is not fsynced
//! before it is published. The index commit that publishes it also writes its bytes into the
//! index's `journal` table, so that one commit (one flush) makes both the record and the data
//! durable before the write is acknowledged. The file's own fsync follows in the background
//! ([`Settler`]): batches of files are synced, then their journal rows are dropped in one
//! commit. At start, before anything is served or swept, [`replay`] rewrites and fsyncs every
//! file the journal still names, so a power loss that took a file's unsynced bytes loses
//! nothing acknowledged. A row whose object was since deleted rewrites a file no record
//! references; the recovery sweep that follows removes it again.
//!
//! The same background thread also unlinks the data files a commit left unreferenced (an
//! overwritten object's, a deleted version's): an unlink on ext4 costs about as much as half an
//! fsync, and nothing needs it before the write is acknowledged. A file whose unlink is still
//! pending when the process stops is unreferenced, so the recovery sweep at the next start
//! removes it.
//!
//! What it is not: a log of records (the index is its own log), nor used for large files,
//! parts or appends, which are fsynced before their commit as before.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use super::index::Index;
use super::{Store, StoreError};

/// How long the settler waits after the first owed file, to sync a batch rather than each
/// file as it comes.
const SETTLE_DELAY: Duration = Duration::from_millis(20);

/// Files whose fsync is owed and files to unlink, and the thread that deals with both. The
/// thread holds the index only while it settles a batch, and [`Settler::close`] waits for
/// that: once a store is dropped, its index is closed (a test or a restart can open it again
/// at once).
#[derive(Default)]
pub(super) struct Settler {
    pending: Mutex<Pending>,
    wake: Condvar,
    busy: Mutex<()>,
    closed: AtomicBool,
}

/// What the settler's thread has left to do.
#[derive(Default)]
struct Pending {
    /// Journaled files whose fsync is owed: (mountpath, file).
    owed: Vec<(u16, String)>,
    /// Files no record references any more, to unlink.
    doomed: Vec<PathBuf>,
}

impl Settler {
    /// Owe the fsync of `file` on mountpath `mp` (its bytes are journaled).
    pub(super) fn owe(&self, mp: u16, file: String) {
        self.pending
            .lock()
            .expect("settler lock")
            .owed
            .push((mp, file));
        self.wake.notify_one();
    }

    /// Unlink `files` in the background: a committed index no longer references them.
    pub(super) fn discard(&self, files: impl IntoIterator<Item = PathBuf>) {
        self.pending
            .lock()
            .expect("settler lock")
            .doomed
            .extend(files);
        self.wake.notify_one();
    }

    /// Start the background thread over `index` and the mountpaths at `roots`.
    pub(super) fn start(self: &Arc<Self>, index: Weak<Index>, roots: Vec<PathBuf>) {
        let this = self.clone();
        let spawned = std::thread::Builder::new()
            .name("aisle-settle".into())
            .spawn(move || this.run(&index, &roots));
        if let Err(e) = spawned {
            // Nothing is lost: the journal keeps the bytes, and the next start rewrites them.
            tracing::error!(error = %e, "cannot start the journal settler; small files stay journaled until restart");
        }
    }

    /// Stop the thread, waiting for a batch it is settling, and unlink the files still
    /// doomed. Owed files stay journaled.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_all();
        let _busy = self.busy.lock().expect("settler lock");
        let doomed = std::mem::take(&mut self.pending.lock().expect("settler lock").doomed);
        unlink(doomed);
    }

    fn run(&self, index: &Weak<Index>, roots: &[PathBuf]) {
        loop {
            let owes = {
                let mut p = self.pending.lock().expect("settler lock");
                while p.owed.is_empty()
                    && p.doomed.is_empty()
                    && !self.closed.load(Ordering::Acquire)
                {
                    p = self
                        .wake
                        .wait_timeout(p, Duration::from_secs(1))
                        .expect("settler lock")
                        .0;
                }
                !p.owed.is_empty()
            };
            // Owed fsyncs wait to be batched; unlinks alone do not.
            if owes {
                std::thread::sleep(SETTLE_DELAY);
            }
            let _busy = self.busy.lock().expect("settler lock");
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            let Pending { owed, doomed } =
                std::mem::take(&mut *self.pending.lock().expect("settler lock"));
            unlink(doomed);
            if owed.is_empty() {
                continue;
            }
            let Some(index) = index.upgrade() else { return };
            if let Err(e) = settle(&index, roots, &owed) {
                // The rows stay: the next start rewrites these files from them.
                tracing::error!(error = %e, files = owed.len(), "cannot settle journaled files; they stay journaled");
            }
        }
    }
}

/// Unlink files no record references; one already gone is fine, and one that cannot be
/// removed is left to the recovery sweep at the next start.
pub(super) fn unlink(files: impl IntoIterator<Item = PathBuf>) {
    for path in files {
        if let Err(e) = std::fs::remove_file(&path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not remove an unreferenced data file; recovery will");
        }
    }
}

/// Make `batch` durable with one `syncfs` per mountpath it touches (one journal commit of the
/// filesystem for the whole batch, where a fsync per file could cost one each), then drop
/// their rows. A file gone meanwhile (its object was replaced or deleted) needs nothing.
fn settle(index: &Index, roots: &[PathBuf], batch: &[(u16, String)]) -> Result<(), StoreError> {
    let mps: std::collections::BTreeSet<u16> = batch.iter().map(|(mp, _)| *mp).collect();
    for mp in mps {
        let root = &roots[mp as usize];
        std::fs::File::open(root)
            .and_then(|d| {
                use std::os::fd::AsRawFd;
                // SAFETY: a plain system call on a descriptor `d` keeps open for its duration.
                match unsafe { libc::syncfs(d.as_raw_fd()) } {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            })
            .map_err(StoreError::io(format!(
                "syncing the filesystem of {}",
                root.display()
            )))?;
    }
    index.forget_journaled(batch)
}

/// Rewrite every journaled file from its bytes and make it durable, then empty the journal.
/// Runs at start, before the recovery sweep. Returns how many files were rewritten.
pub(super) fn replay(store: &Store) -> Result<usize, StoreError> {
    let rows = store.index.journaled()?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut dirs = std::collections::BTreeSet::new();
    for (mp, file, bytes) in &rows {
        let Some(root) = store.mountpaths.get(*mp as usize).map(|m| m.root()) else {
            return Err(StoreError::Invalid(format!(
                "the journal names mountpath {mp}, which this target does not have"
            )));
        };
        let path = root.join(file);
        let dir = path.parent().expect("obj/<xx> has a parent").to_path_buf();
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, bytes))
            .and_then(|()| std::fs::File::open(&path)?.sync_all())
            .map_err(StoreError::io(format!("rewriting {}", path.display())))?;
        // The `obj/<xx>` directory may be new too.
        dirs.insert(dir.parent().expect("obj has a parent").to_path_buf());
        dirs.insert(dir);
    }
    for dir in dirs {
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(StoreError::io(format!(
                "syncing directory {}",
                dir.display()
            )))?;
    }
    let files: Vec<(u16, String)> = rows.into_iter().map(|(mp, f, _)| (mp, f)).collect();
    store.index.forget_journaled(&files)?;
    Ok(files.len())
}
