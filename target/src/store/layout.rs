//! On-disk layout of one mountpath.
//!
//! ```text
//! <mountpath>/obj/<xx>/<uuid>     data files (xx = first two hex digits), staged in place
//! <mountpath>/tmp/                 staged writes of older versions; emptied at start
//! ```
//!
//! A data file is written, fsynced, its directory fsynced, and only then referenced by an index
//! commit — or, when it is small, journaled in that commit instead (`super::journal`); at start
//! every file no record references is removed (a crash mid-write leaves one).
//!
//! The directory fsync is mostly paid ahead: each mountpath keeps a few empty data files whose
//! names are already durable ([`Ready`], made 64 at a time in one directory and fsynced once).
//! A write takes one, fills and fsyncs it, and needs no directory fsync before the index commit
//! — one synchronous flush fewer per acknowledged PUT, with the same guarantee. When none is
//! ready a write creates its file and fsyncs the directory itself, as before.
//!
//! File names are fresh UUIDs, never derived from keys: no key, however hostile, can name a
//! path, and a new version never overwrites the file an older reader still has open.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::StoreError;

use aisle_cluster::files::BatchWriter;

pub(super) struct Mountpath {
    root: PathBuf,
    index: u16,
    ready: Arc<Ready>,
}

/// Empty data files whose directory entries are durable, for writes to take.
struct Ready {
    root: PathBuf,
    ids: Mutex<Vec<String>>,
    refilling: AtomicBool,
}

/// Files of at most this many bytes are made durable by the index commit that publishes them,
/// which journals their bytes (one synchronous flush per write instead of two); their own
/// fsync follows in the background ([`super::journal`]).
pub const JOURNAL_MAX: u64 = 128 * 1024;

/// Below this many ready files, a batch is made.
const READY_LOW: usize = 16;
/// Ready files made at once (in one directory, one fsync).
pub(super) const READY_BATCH: usize = 64;

impl Ready {
    fn take(&self) -> Option<String> {
        self.ids.lock().expect("ready lock").pop()
    }

    /// Make a batch in the background when few are left.
    fn refill(self: &Arc<Self>) {
        if self.ids.lock().expect("ready lock").len() >= READY_LOW
            || self.refilling.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = this.make_batch() {
                tracing::warn!(root = %this.root.display(), error = %e, "cannot make ready data files");
            }
            this.refilling.store(false, Ordering::Release);
        });
    }

    fn make_batch(&self) -> std::io::Result<()> {
        // One directory for the whole batch, so one fsync makes every name durable.
        let prefix = uuid::Uuid::new_v4().simple().to_string()[..2].to_string();
        let dir = self.root.join("obj").join(&prefix);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            std::fs::File::open(self.root.join("obj"))?.sync_all()?;
        }
        let mut made = Vec::with_capacity(READY_BATCH);
        for _ in 0..READY_BATCH {
            let id = format!(
                "{prefix}{}",
                &uuid::Uuid::new_v4().simple().to_string()[2..]
            );
            std::fs::File::create(self.root.join(Mountpath::rel_path(&id)))?;
            made.push(id);
        }
        std::fs::File::open(&dir)?.sync_all()?;
        self.ids.lock().expect("ready lock").extend(made);
        Ok(())
    }
}

/// A staged file being written; removed on drop unless installed.
pub struct TempFile {
    mp: u16,
    id: String,
    path: PathBuf,
    /// Open until [`TempFile::finish`].
    writer: Option<BatchWriter>,
    /// The staged file, kept open past [`TempFile::finish`] for the fsync or the read-back
    /// that publishing it owes.
    file: Arc<std::fs::File>,
    /// [`TempFile::finish`] left the fsync to publishing: the file's length, small enough for
    /// its bytes to be journaled in the index commit instead ([`JOURNAL_MAX`]).
    sync_owed: Option<u64>,
    installed: bool,
    /// Its name is already durable (a [`Ready`] file): installing needs no directory fsync.
    durable_name: bool,
}

impl TempFile {
    /// Where the staged file is (for blocking writers; call [`TempFile::finish`] after them).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The staged file (to pass its descriptor to a same-host writer; call
    /// [`TempFile::finish`] after it wrote).
    pub fn file(&self) -> Option<&std::fs::File> {
        self.writer.as_ref().map(BatchWriter::file)
    }

    /// Bytes in the staged file (what was written through any descriptor of it).
    pub fn len_on_disk(&self) -> Result<u64, StoreError> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(StoreError::io(format!("reading {}", self.path.display())))
    }

    /// Mountpath index the file is staged on.
    pub fn mountpath(&self) -> u16 {
        self.mp
    }

    /// Append bytes (gathered, then written in batches: [`BatchWriter`]).
    pub async fn write(&mut self, data: impl Into<Bytes>) -> Result<(), StoreError> {
        let writer = self
            .writer
            .as_mut()
            .expect("temp file is open until finished");
        match writer.push(data.into()).await {
            Ok(()) => Ok(()),
            Err(e) => Err(StoreError::io(format!("writing {}", self.path.display()))(
                e,
            )),
        }
    }

    /// Write the rest without an fsync: for a transient file that is read and removed, never
    /// published (a transform's output staged for its size).
    pub async fn finish_transient(&mut self) -> Result<(), StoreError> {
        match self.writer.take() {
            Some(w) => w
                .finish(false)
                .await
                .map_err(StoreError::io(format!("writing {}", self.path.display()))),
            None => Ok(()),
        }
    }

    /// Write the rest and make it durable, or leave that to publishing: a file of at most
    /// [`JOURNAL_MAX`] bytes is not fsynced here, and publishing it either journals its bytes
    /// in the index commit or fsyncs it first. After this the file is ready to be published.
    pub async fn finish(&mut self) -> Result<(), StoreError> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let path = self.path.display();
        w.finish(false)
            .await
            .map_err(StoreError::io(format!("writing {path}")))?;
        let len = self.len_on_disk()?;
        if len <= JOURNAL_MAX {
            self.sync_owed = Some(len);
            return Ok(());
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.sync_all())
            .await
            .map_err(std::io::Error::other)
            .flatten()
            .map_err(StoreError::io(format!("syncing {path}")))
    }

    /// Pay the fsync [`TempFile::finish`] left owed, if any. Blocking.
    pub(super) fn sync_now(&mut self) -> Result<(), StoreError> {
        if self.sync_owed.take().is_some() {
            self.file
                .sync_data()
                .map_err(StoreError::io(format!("syncing {}", self.path.display())))?;
        }
        Ok(())
    }

    /// The bytes of a file whose fsync is owed, for the index commit to journal in its place
    /// (`None`: the file is durable already). Blocking.
    pub(super) fn owed_bytes(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(len) = self.sync_owed else {
            return Ok(None);
        };
        use std::os::unix::fs::FileExt;
        let mut buf = vec![0; len as usize];
        self.file
            .read_exact_at(&mut buf, 0)
            .map_err(StoreError::io(format!("reading {}", self.path.display())))?;
        Ok(Some(buf))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.installed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(format!(
            "syncing directory {}",
            dir.display()
        )))
}

impl Mountpath {
    pub(super) fn open(root: &Path, index: u16) -> Result<Mountpath, StoreError> {
        for sub in ["tmp", "obj"] {
            let d = root.join(sub);
            std::fs::create_dir_all(&d)
                .map_err(StoreError::io(format!("creating {}", d.display())))?;
        }
        Ok(Mountpath {
            root: root.to_path_buf(),
            index,
            ready: Arc::new(Ready {
                root: root.to_path_buf(),
                ids: Mutex::new(Vec::new()),
                refilling: AtomicBool::new(false),
            }),
        })
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    pub(super) async fn create_temp(&self) -> Result<TempFile, StoreError> {
        let mp = self.index;
        let taken = self.ready.take();
        self.ready.refill();
        if let Some(id) = taken {
            let path = self.root.join(Self::rel_path(&id));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(StoreError::io(format!("opening {}", path.display())))?;
            let file = Arc::new(file);
            return Ok(TempFile {
                mp,
                id,
                path,
                writer: Some(BatchWriter::new(file.clone())),
                file,
                sync_owed: None,
                installed: false,
                durable_name: true,
            });
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        // Staged in place: a fresh name nothing refers to until the index commit, so
        // publishing needs no rename (and no second directory journal commit).
        let path = self.root.join(Self::rel_path(&id));
        let create = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
        };
        let file = create()
            .or_else(|_| {
                let dir = path.parent().expect("obj/<xx> has a parent");
                std::fs::create_dir_all(dir)?;
                create()
            })
            .map_err(StoreError::io(format!("creating {}", path.display())))?;
        let file = Arc::new(file);
        Ok(TempFile {
            mp,
            id,
            path,
            writer: Some(BatchWriter::new(file.clone())),
            file,
            sync_owed: None,
            installed: false,
            durable_name: false,
        })
    }

    /// Where a data file named `id` lives, relative to the mountpath.
    fn rel_path(id: &str) -> String {
        format!("obj/{}/{}", &id[..2], id)
    }

    /// Keep a finished staged file: make it and its directory entry durable, unless the index
    /// commit that publishes it journals its bytes (`journaled`: recovery rewrites the file
    /// from them, name and all); returns its path relative to the mountpath, for that record.
    /// Blocking.
    pub(super) fn install(
        &self,
        mut temp: TempFile,
        journaled: bool,
    ) -> Result<String, StoreError> {
        if journaled {
            temp.sync_owed = None;
        } else {
            temp.sync_now()?;
        }
        if !temp.durable_name && !journaled {
            sync_dir(temp.path.parent().expect("obj/<xx> has a parent"))?;
        }
        temp.installed = true;
        Ok(Self::rel_path(&temp.id))
    }

    /// Remove staged files and published files that `referenced` does not know.
    pub(super) fn recover(&self, referenced: impl Fn(&str) -> bool) -> Result<usize, StoreError> {
        let mut removed = 0;
        let tmp = self.root.join("tmp");
        for e in
            std::fs::read_dir(&tmp).map_err(StoreError::io(format!("reading {}", tmp.display())))?
        {
            let e = e.map_err(StoreError::io("reading tmp"))?;
            std::fs::remove_file(e.path())
                .map_err(StoreError::io(format!("removing {}", e.path().display())))?;
            removed += 1;
        }
        let obj = self.root.join("obj");
        for dir in
            std::fs::read_dir(&obj).map_err(StoreError::io(format!("reading {}", obj.display())))?
        {
            let dir = dir.map_err(StoreError::io("reading obj"))?;
            let name = dir.file_name().to_string_lossy().into_owned();
            for f in std::fs::read_dir(dir.path())
                .map_err(StoreError::io(format!("reading {}", dir.path().display())))?
            {
                let f = f.map_err(StoreError::io("reading obj subdirectory"))?;
                let rel = format!("obj/{name}/{}", f.file_name().to_string_lossy());
                if !referenced(&rel) {
                    std::fs::remove_file(f.path())
                        .map_err(StoreError::io(format!("removing {}", f.path().display())))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}
