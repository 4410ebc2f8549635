//! The target's object store: data files on mountpaths, metadata in one ordered index.
//!
//! A write is staged under a fresh unique name in a mountpath's `obj/`, made durable, and only
//! then published by one index transaction that points the key at it. A large file is
//! fsynced (file and directory) before that commit; a small one (at most
//! [`layout::JOURNAL_MAX`]) has its bytes journaled in the commit itself, one flush for both,
//! and is fsynced in the background ([`journal`]). The previous file is deleted after the
//! commit. So an object is either the old version or the new one, never a mix; and
//! [`Store::open`] rewrites journaled files and removes whatever a crash left unpublished.
//!
//! A multipart object is published as the list of its part files ("segments"): completing an
//! upload moves part references into the object record and copies no data.

mod index;
mod journal;
mod layout;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aisle_cluster::listing::ListPage;
use aisle_cluster::proto::{
    Commit, CompleteRequest, Have, ListQuery, ObjectAttrs, ObjectMeta, PartInfo, PartsPage,
    UploadInfo, WriteOptions,
};
use aisle_cluster::versioning::VersionRef;
use serde::{Deserialize, Serialize};

use index::PutRule;
pub(crate) use index::{WalkEntry, Walked};
pub use layout::TempFile;

/// Where one piece of an object's bytes lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Mountpath index.
    pub mp: u16,
    /// Path relative to the mountpath.
    pub file: String,
    /// Bytes in the file.
    pub size: u64,
}

/// What a target holds, counted by [`Store::usage`].
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Objects per mountpath.
    pub objects_per_mountpath: Vec<u64>,
    /// Object bytes per mountpath.
    pub bytes_per_mountpath: Vec<u64>,
    /// Objects and bytes per bucket.
    pub buckets: std::collections::BTreeMap<String, aisle_cluster::proto::BucketUsage>,
}

/// An object's index record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StoredObject {
    /// What clients see.
    pub meta: ObjectMeta,
    /// The bytes, in order.
    pub segments: Vec<Segment>,
    /// CRC-32C of this copy's bytes, recorded when they were published and had been checked
    /// against the ETag then: a small object's check on every read compares this (a few
    /// hundred nanoseconds) instead of its MD5 again. Absent: the read checks the ETag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<u32>,
}

/// A pending multipart upload's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Attributes given at create.
    pub attrs: ObjectAttrs,
    /// Creation time, Unix milliseconds.
    pub initiated_ms: i64,
}

/// An uploaded part's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPart {
    /// What ListParts shows.
    pub info: PartInfo,
    /// Its bytes.
    pub segment: Segment,
}

/// Failures of the store, each with the S3 error code the client should see.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The index failed.
    #[error("metadata index: {0}")]
    Index(#[from] redb::Error),
    /// A stored record could not be decoded.
    #[error("corrupt index record: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// No such object.
    #[error("the specified key does not exist")]
    NoSuchKey,
    /// No such version of the key.
    #[error("the specified version does not exist")]
    NoSuchVersion,
    /// No such upload.
    #[error("the specified multipart upload does not exist")]
    NoSuchUpload,
    /// A part named in Complete is missing or has another ETag.
    #[error("part {0} was not uploaded or its ETag does not match")]
    InvalidPart(u32),
    /// `If-None-Match: *` and the key exists.
    #[error("the key already exists")]
    PreconditionFailed,
    /// The request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// A pushed copy is not newer than what this target holds.
    #[error("this target holds version {} (deleted: {}) already", .0.version, .0.deleted)]
    Stale(Have),
}

impl StoreError {
    /// HTTP status and S3 error code.
    pub fn s3_code(&self) -> (u16, &'static str) {
        match self {
            StoreError::Io { .. } | StoreError::Index(_) | StoreError::Corrupt(_) => {
                (500, "InternalError")
            }
            StoreError::NoSuchKey => (404, "NoSuchKey"),
            StoreError::NoSuchVersion => (404, "NoSuchVersion"),
            StoreError::NoSuchUpload => (404, "NoSuchUpload"),
            StoreError::InvalidPart(_) => (400, "InvalidPart"),
            StoreError::PreconditionFailed => (412, "PreconditionFailed"),
            StoreError::Invalid(_) => (400, "InvalidArgument"),
            StoreError::Stale(_) => (409, "Stale"),
        }
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> StoreError {
        let context = context.into();
        move |source| StoreError::Io { context, source }
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Index(e.into()) }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

pub use aisle_cluster::now_ms;

/// CRC-32C of `bytes`.
fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// The CRC-32C to record for the bytes `meta` is published with, if they are what its ETag
/// says (an MD5 ETag is checked; an opaque one by size). Bytes that do not match get none,
/// so their reads keep checking the ETag and find them corrupt.
fn checked_crc(meta: &ObjectMeta, bytes: &[u8]) -> Option<u32> {
    let (etag, parts) = meta.integrity();
    let mut check = aisle_cluster::etag::EtagCheck::new(etag, parts);
    check.update(bytes);
    (check.len() == meta.size && check.matches()).then(|| crc32c(bytes))
}

/// One target's store.
pub struct Store {
    mountpaths: Vec<layout::Mountpath>,
    index: Arc<index::Index>,
    settler: Arc<journal::Settler>,
}

impl Drop for Store {
    fn drop(&mut self) {
        self.settler.close();
    }
}

impl Store {
    /// Open (creating if needed) the store over `mountpaths`, with its index at `index_path`,
    /// and recover: staged files are removed and data files no record points at are deleted.
    pub fn open(index_path: &Path, mountpaths: &[PathBuf]) -> Result<Arc<Store>, StoreError> {
        if mountpaths.is_empty() {
            return Err(StoreError::Invalid(
                "a target needs at least one mountpath".into(),
            ));
        }
        let mps = mountpaths
            .iter()
            .enumerate()
            .map(|(i, p)| layout::Mountpath::open(p, i as u16))
            .collect::<Result<Vec<_>, _>>()?;
        let index = index::Index::open(index_path)?;
        let store = Store {
            mountpaths: mps,
            index: Arc::new(index),
            settler: Arc::default(),
        };
        store.recover()?;
        store
            .settler
            .start(Arc::downgrade(&store.index), store.mountpath_dirs());
        Ok(Arc::new(store))
    }

    /// Bump `table` after every commit that changes what a read answers, before the change
    /// is acknowledged ([`aisle_cluster::changes`]). Bumps it once now too: whatever this
    /// store's recovery or an unacknowledged last commit before a crash changed is news to
    /// a reader that kept answers of the process before.
    pub fn report_changes(&self, table: Arc<aisle_cluster::changes::ChangeTable>) {
        table.bump_all();
        self.index.report_changes(table);
    }

    fn recover(&self) -> Result<(), StoreError> {
        let rewritten = journal::replay(self)?;
        if rewritten > 0 {
            tracing::info!(files = rewritten, "recovery rewrote journaled small files");
        }
        let referenced = self.index.referenced_files()?;
        for (i, mp) in self.mountpaths.iter().enumerate() {
            let removed = mp.recover(|rel| referenced.contains(&(i as u16, rel.to_string())))?;
            if removed > 0 {
                tracing::info!(mountpath = %mp.root().display(), removed, "recovery removed unpublished files");
            }
        }
        Ok(())
    }

    /// Mountpath directories, in placement order.
    pub fn mountpath_dirs(&self) -> Vec<PathBuf> {
        self.mountpaths
            .iter()
            .map(|m| m.root().to_path_buf())
            .collect()
    }

    /// The mountpath that holds `(bucket, key)`.
    pub fn mountpath_for(&self, bucket: &str, key: &str) -> u16 {
        aisle_cluster::placement::mountpath_index(bucket, key, self.mountpaths.len()) as u16
    }

    /// Stage a new file on mountpath `mp`.
    pub async fn create_temp(&self, mp: u16) -> Result<TempFile, StoreError> {
        self.mountpaths[mp as usize].create_temp().await
    }

    /// Absolute path of a segment's file.
    pub fn segment_path(&self, seg: &Segment) -> PathBuf {
        self.mountpaths[seg.mp as usize].root().join(&seg.file)
    }

    /// The data files of `segments` with their sizes, in object order.
    pub fn segment_files(&self, segments: &[Segment]) -> Vec<(PathBuf, u64)> {
        segments
            .iter()
            .map(|s| (self.segment_path(s), s.size))
            .collect()
    }

    /// Keep a finished staged file as a durable segment. Blocking.
    fn install(&self, temp: TempFile, size: u64) -> Result<Segment, StoreError> {
        let mp = temp.mountpath();
        let file = self.mountpaths[mp as usize].install(temp, false)?;
        Ok(Segment { mp, file, size })
    }

    /// Keep a finished staged file as a segment, with the bytes the publishing commit must
    /// journal when the file's fsync is owed ([`journal`]). Blocking.
    fn install_journaled(
        &self,
        temp: TempFile,
        size: u64,
    ) -> Result<(Segment, Option<Vec<u8>>), StoreError> {
        let mp = temp.mountpath();
        let bytes = temp.owed_bytes()?;
        let file = self.mountpaths[mp as usize].install(temp, bytes.is_some())?;
        Ok((Segment { mp, file, size }, bytes))
    }

    /// Drop the files of segments a client's committed write or delete no longer references:
    /// unlinked by the settler's thread, off the request's path ([`journal`]).
    fn discard_segments(&self, segs: &[Segment]) {
        self.settler
            .discard(segs.iter().map(|s| self.segment_path(s)));
    }

    /// Unlink the files of `segs` now: where the space must be free when the call returns
    /// (an eviction under a full disk, a write that failed).
    fn unlink_now(&self, segs: &[Segment]) {
        journal::unlink(segs.iter().map(|s| self.segment_path(s)));
    }

    /// Publish a fully written, fsynced staged file as `(bucket, key)`, a client's write as
    /// `opts` say (stamp, version id, `If-None-Match`), with what the remote said of it for a
    /// remote bucket. Blocking.
    pub fn publish_object(
        &self,
        (bucket, key): (&str, &str),
        temp: TempFile,
        commit: &Commit,
        attrs: ObjectAttrs,
        opts: &WriteOptions,
        remote: Option<aisle_cluster::proto::RemoteStamp>,
    ) -> Result<ObjectMeta, StoreError> {
        let version = opts.version;
        let meta = ObjectMeta {
            version_id: opts.versioning.id_for(version),
            delete_marker: false,
            size: commit.size,
            etag: commit.md5.clone(),
            mtime_ms: now_ms(),
            attrs,
            checksums: commit.checksums.clone(),
            parts: Vec::new(),
            version,
            remote,
            upload_id: None,
        };
        let rule = if opts.if_absent {
            PutRule::IfAbsent
        } else {
            PutRule::Always
        };
        self.publish_file(bucket, key, temp, meta, rule)
    }

    /// Publish a copy pushed by another target (its metadata as the sender holds it) when it
    /// is newer than what is here — or, with `repair`, the same version replacing a corrupt
    /// copy; otherwise [`StoreError::Stale`]. Blocking.
    pub fn publish_copy(
        &self,
        bucket: &str,
        key: &str,
        temp: TempFile,
        meta: ObjectMeta,
        repair: bool,
    ) -> Result<ObjectMeta, StoreError> {
        let rule = if repair {
            PutRule::Repair
        } else {
            PutRule::IfNewer
        };
        self.publish_file(bucket, key, temp, meta, rule)
    }

    fn publish_file(
        &self,
        bucket: &str,
        key: &str,
        temp: TempFile,
        meta: ObjectMeta,
        rule: PutRule,
    ) -> Result<ObjectMeta, StoreError> {
        let (seg, journaled) = self.install_journaled(temp, meta.size)?;
        let crc32c = journaled.as_deref().and_then(|b| checked_crc(&meta, b));
        let rec = StoredObject {
            meta: meta.clone(),
            segments: vec![seg.clone()],
            crc32c,
        };
        let journal = journaled.as_deref().map(|b| (&seg, b));
        match self.index.put_object(bucket, key, &rec, rule, journal) {
            Ok(gone) => {
                if journaled.is_some() {
                    self.settler.owe(seg.mp, seg.file);
                }
                self.discard_segments(&gone);
                Ok(meta)
            }
            Err(e) => {
                self.unlink_now(&[seg]);
                Err(e)
            }
        }
    }

    /// Publish an appended shard: the kept prefix of the current version's segments plus one
    /// new segment, in one index transaction that first checks the current version is still
    /// `expected_etag` (`None`: the key must not exist). Files are shared with the previous
    /// version, so none is deleted except segments dropped whole. Blocking.
    pub fn publish_append(
        &self,
        bucket: &str,
        key: &str,
        expected_etag: Option<&str>,
        kept: Vec<Segment>,
        temp: TempFile,
        meta: ObjectMeta,
    ) -> Result<ObjectMeta, StoreError> {
        // The new file holds whatever the kept prefix does not.
        let new_len = meta.size - kept.iter().map(|s| s.size).sum::<u64>();
        let seg = self.install(temp, new_len)?;
        let mut segments = kept;
        segments.push(seg.clone());
        let rec = StoredObject {
            meta: meta.clone(),
            segments,
            ..Default::default()
        };
        match self.index.replace_if(bucket, key, expected_etag, &rec) {
            Ok(old) => {
                if let Some(old) = old {
                    let dropped: Vec<Segment> = old
                        .segments
                        .into_iter()
                        .filter(|s| {
                            !rec.segments
                                .iter()
                                .any(|k| k.file == s.file && k.mp == s.mp)
                        })
                        .collect();
                    self.discard_segments(&dropped);
                }
                Ok(meta)
            }
            Err(e) => {
                self.unlink_now(&[seg]);
                Err(e)
            }
        }
    }

    /// Record what the remote said of the object `(bucket, key)` at `version` (after a
    /// write-through of a multipart upload). Blocking.
    pub fn restamp(
        &self,
        bucket: &str,
        key: &str,
        version: u64,
        stamp: aisle_cluster::proto::RemoteStamp,
    ) -> Result<ObjectMeta, StoreError> {
        let mut rec = self.get(bucket, key)?;
        if rec.meta.stamp() != version {
            return Err(StoreError::Stale(self.have(bucket, key)?));
        }
        rec.meta.remote = Some(stamp);
        // The same version and the same files: nothing to remove afterwards.
        self.index
            .put_object(bucket, key, &rec, PutRule::Repair, None)?;
        Ok(rec.meta)
    }

    /// Replace the tags of `(bucket, key)` at `version` (the current version or a noncurrent
    /// one): same bytes, same version, so copies and rebalancing are not disturbed; another
    /// current version held is [`StoreError::Stale`]. Blocking.
    pub fn retag(
        &self,
        bucket: &str,
        key: &str,
        version: u64,
        tags: std::collections::BTreeMap<String, String>,
    ) -> Result<ObjectMeta, StoreError> {
        self.index.retag(bucket, key, version, tags)
    }

    /// The record of `(bucket, key)`.
    pub fn get(&self, bucket: &str, key: &str) -> Result<StoredObject, StoreError> {
        self.index
            .get_object(bucket, key)?
            .ok_or(StoreError::NoSuchKey)
    }

    /// Delete `(bucket, key)` unless the copy here is newer than `version`; with
    /// `tombstone`, remember the deletion. Deleting a missing key succeeds. Blocking.
    pub fn delete(
        &self,
        bucket: &str,
        key: &str,
        version: u64,
        tombstone: bool,
    ) -> Result<(), StoreError> {
        if let Some(old) = self
            .index
            .delete_versioned(bucket, key, version, tombstone)?
        {
            self.discard_segments(&old.segments);
        }
        Ok(())
    }

    /// A plain delete in a bucket with versioning: a delete marker stamped `version` becomes
    /// the newest version (`Enabled`: with its own id; `Suspended`: as the `null` version,
    /// replacing the one there was). Returns the marker. Blocking.
    pub fn add_delete_marker(
        &self,
        bucket: &str,
        key: &str,
        version: u64,
        versioning: aisle_cluster::versioning::Versioning,
    ) -> Result<ObjectMeta, StoreError> {
        let marker = ObjectMeta {
            mtime_ms: now_ms(),
            version,
            version_id: versioning.id_for(version),
            delete_marker: true,
            ..Default::default()
        };
        let gone = self.index.put_marker(bucket, key, &marker)?;
        self.discard_segments(&gone);
        Ok(marker)
    }

    /// Remove one version of `(bucket, key)` for good; the newest left becomes current.
    /// Returns the version removed, if it was here. Blocking.
    pub fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        which: &VersionRef,
    ) -> Result<Option<ObjectMeta>, StoreError> {
        let (removed, gone) = self.index.delete_version(bucket, key, which)?;
        self.discard_segments(&gone);
        Ok(removed)
    }

    /// The record of `(bucket, key)`: its current one, or the version `which` (which may be a
    /// delete marker).
    pub fn record(
        &self,
        bucket: &str,
        key: &str,
        which: Option<&VersionRef>,
    ) -> Result<StoredObject, StoreError> {
        match which {
            Some(which) => self.get_version(bucket, key, which),
            None => self.get(bucket, key),
        }
    }

    /// One version of `(bucket, key)` (it may be a delete marker).
    pub fn get_version(
        &self,
        bucket: &str,
        key: &str,
        which: &VersionRef,
    ) -> Result<StoredObject, StoreError> {
        self.index
            .get_version(bucket, key, which)?
            .ok_or(StoreError::NoSuchVersion)
    }

    /// Every version of `(bucket, key)`, newest first: the current one, then the noncurrent
    /// ones and delete markers.
    pub fn versions_of(&self, bucket: &str, key: &str) -> Result<Vec<StoredObject>, StoreError> {
        self.index.versions_of(bucket, key)
    }

    /// The delete marker that makes `(bucket, key)` read as deleted, if one does.
    pub fn latest_marker(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.index.latest_marker(bucket, key)
    }

    /// What this target holds of `(bucket, key)`.
    pub fn have(&self, bucket: &str, key: &str) -> Result<Have, StoreError> {
        self.index.have(bucket, key)
    }

    /// Remove the local object or tombstone if it is still exactly `have` (an eviction, a
    /// rebalance move); its files are unlinked before this returns. Blocking.
    pub fn remove_if(&self, bucket: &str, key: &str, have: Have) -> Result<bool, StoreError> {
        Ok(match self.index.remove_if(bucket, key, have)? {
            Some(old) => {
                self.unlink_now(&old.segments);
                true
            }
            None => have.deleted,
        })
    }

    /// Up to `limit` records of one kind after `after` (a [`WalkEntry::raw`]).
    pub(crate) fn walk(
        &self,
        kind: Walked,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<WalkEntry>, StoreError> {
        self.index.walk(kind, after, limit)
    }

    /// What this target holds of one version of `(bucket, key)` ([`Have::default`]: none).
    pub fn have_version(
        &self,
        bucket: &str,
        key: &str,
        which: &VersionRef,
    ) -> Result<Have, StoreError> {
        self.index.have_version(bucket, key, which)
    }

    /// Take in a version of `(bucket, key)` pushed by another target (its bytes staged in
    /// `temp`; none for a delete marker): as the current version if it is newer than all
    /// held, else as a noncurrent one; with `repair`, in place of a corrupt copy of the same
    /// version. [`StoreError::Stale`] when it is held already. Blocking.
    pub fn publish_version(
        &self,
        bucket: &str,
        key: &str,
        temp: Option<TempFile>,
        meta: ObjectMeta,
        repair: bool,
    ) -> Result<(), StoreError> {
        let segments = match temp {
            Some(t) => vec![self.install(t, meta.size)?],
            None => Vec::new(),
        };
        let rec = StoredObject {
            meta,
            segments: segments.clone(),
            ..Default::default()
        };
        match self.index.put_version(bucket, key, &rec, repair) {
            Ok(gone) => {
                self.discard_segments(&gone);
                Ok(())
            }
            Err(e) => {
                self.unlink_now(&segments);
                Err(e)
            }
        }
    }

    /// Remove the noncurrent version stamped `stamp` of `(bucket, key)`. Blocking.
    pub fn remove_version(&self, bucket: &str, key: &str, stamp: u64) -> Result<bool, StoreError> {
        Ok(match self.index.remove_version(bucket, key, stamp)? {
            Some(old) => {
                self.discard_segments(&old.segments);
                true
            }
            None => false,
        })
    }

    /// Objects and tombstones held.
    pub fn record_count(&self) -> Result<u64, StoreError> {
        self.index.record_count()
    }

    /// One page of a listing.
    pub fn list(&self, q: &ListQuery) -> Result<ListPage, StoreError> {
        self.index.list(q)
    }

    /// Objects per mountpath (for `aisle cluster show`).
    pub fn objects_per_mountpath(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.usage()?.objects_per_mountpath)
    }

    /// Objects and their bytes per mountpath (of an object's first segment) and per bucket.
    /// A full scan of the index. Blocking.
    pub fn usage(&self) -> Result<Usage, StoreError> {
        let mut u = Usage {
            objects_per_mountpath: vec![0; self.mountpaths.len()],
            bytes_per_mountpath: vec![0; self.mountpaths.len()],
            buckets: Default::default(),
        };
        let mut last: Option<(Vec<u8>, String)> = None;
        self.index.for_each_object(|bucket, o| {
            if let Some(s) = o.segments.first() {
                u.objects_per_mountpath[s.mp as usize] += 1;
                u.bytes_per_mountpath[s.mp as usize] += o.meta.size;
            }
            // Records come in key order: a bucket's records are contiguous.
            if last
                .as_ref()
                .is_none_or(|(raw, _)| raw.as_slice() != bucket)
            {
                last = Some((
                    bucket.to_vec(),
                    String::from_utf8_lossy(bucket).into_owned(),
                ));
            }
            let name = &last.as_ref().expect("set above").1;
            let b = u.buckets.entry(name.clone()).or_default();
            b.objects += 1;
            b.bytes += o.meta.size;
        })?;
        Ok(u)
    }

    /// Start a multipart upload; returns its id.
    pub fn create_upload(
        &self,
        bucket: &str,
        key: &str,
        attrs: ObjectAttrs,
    ) -> Result<String, StoreError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let rec = UploadRecord {
            bucket: bucket.into(),
            key: key.into(),
            attrs,
            initiated_ms: now_ms(),
        };
        self.index.put_upload(&id, &rec)?;
        Ok(id)
    }

    /// Check that an upload exists for `(bucket, key)`.
    pub fn upload(&self, bucket: &str, key: &str, id: &str) -> Result<UploadRecord, StoreError> {
        match self.index.get_upload(id)? {
            Some(r) if r.bucket == bucket && r.key == key => Ok(r),
            _ => Err(StoreError::NoSuchUpload),
        }
    }

    /// Publish a staged part. Blocking.
    pub fn publish_part(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        number: u32,
        temp: TempFile,
        commit: &Commit,
    ) -> Result<PartInfo, StoreError> {
        self.upload(bucket, key, id)?;
        let seg = self.install(temp, commit.size)?;
        let part = StoredPart {
            info: PartInfo {
                number,
                size: commit.size,
                etag: commit.md5.clone(),
                mtime_ms: now_ms(),
                checksums: commit.checksums.clone(),
            },
            segment: seg.clone(),
        };
        match self.index.put_part(id, &part) {
            Ok(old) => {
                if let Some(old) = old {
                    self.discard_segments(&[old.segment]);
                }
                Ok(part.info)
            }
            Err(e) => {
                self.unlink_now(&[seg]);
                Err(e)
            }
        }
    }

    /// Parts of an upload after `marker`, at most `limit`.
    pub fn list_parts(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        marker: u32,
        limit: usize,
    ) -> Result<PartsPage, StoreError> {
        self.upload(bucket, key, id)?;
        let mut parts = self.index.parts(id)?;
        parts.retain(|p| p.info.number > marker);
        let truncated = parts.len() > limit;
        parts.truncate(limit);
        Ok(PartsPage {
            parts: parts.into_iter().map(|p| p.info).collect(),
            truncated,
        })
    }

    /// Pending uploads of a bucket under a prefix, ordered by (key, initiation).
    pub fn list_uploads(&self, bucket: &str, prefix: &str) -> Result<Vec<UploadInfo>, StoreError> {
        let mut out: Vec<UploadInfo> = self
            .index
            .uploads()?
            .into_iter()
            .filter(|(_, r)| r.bucket == bucket && r.key.starts_with(prefix))
            .map(|(id, r)| UploadInfo {
                key: r.key,
                upload_id: id,
                initiated_ms: r.initiated_ms,
            })
            .collect();
        out.sort_by(|a, b| (&a.key, a.initiated_ms).cmp(&(&b.key, b.initiated_ms)));
        Ok(out)
    }

    /// Publish the named parts as the object; the rest of the upload's parts are deleted.
    /// Blocking.
    pub fn complete(
        &self,
        bucket: &str,
        key: &str,
        id: &str,
        req: &CompleteRequest,
    ) -> Result<ObjectMeta, StoreError> {
        let (meta, gone) = self.index.complete(bucket, key, id, req)?;
        self.discard_segments(&gone);
        Ok(meta)
    }

    /// Abort an upload and delete its parts. Blocking.
    pub fn abort(&self, bucket: &str, key: &str, id: &str) -> Result<(), StoreError> {
        self.upload(bucket, key, id)?;
        let parts = self.index.remove_upload(id)?;
        let segs: Vec<Segment> = parts.into_iter().map(|p| p.segment).collect();
        self.discard_segments(&segs);
        Ok(())
    }

    /// Drop every pending upload of a bucket (the bucket is being deleted). Blocking.
    pub fn drop_bucket_uploads(&self, bucket: &str) -> Result<(), StoreError> {
        for u in self.list_uploads(bucket, "")? {
            self.abort(bucket, &u.key, &u.upload_id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_staged_file_never_published_is_removed_at_the_next_open() {
        let dir = test_dir();
        let mps = vec![dir.join("mp0")];
        let staged_path;
        {
            let store = Store::open(&dir.join("index.redb"), &mps).unwrap();
            let mut t = store.create_temp(0).await.unwrap();
            t.write(vec![1u8; 1000]).await.unwrap();
            t.finish().await.unwrap();
            staged_path = t.path().to_path_buf();
            assert!(staged_path.exists());
            std::mem::forget(t); // a crash: no drop, no publish
        }
        let _store = Store::open(&dir.join("index.redb"), &mps).unwrap();
        assert!(
            !staged_path.exists(),
            "recovery removes what no record references"
        );
        remove_test_dir(&dir).await;
    }

    #[tokio::test]
    async fn a_small_write_whose_bytes_were_lost_before_their_fsync_comes_back_from_the_journal() {
        let dir = test_dir();
        let mps = vec![dir.join("mp0")];
        let small: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let (kept, gone);
        {
            let store = Store::open(&dir.join("index.redb"), &mps).unwrap();
            store.settler.close(); // the power goes before the background fsync
            for (key, version) in [("kept", 1), ("gone", 2)] {
                let t = staged(&store, &small).await;
                store
                    .publish_copy("b", key, t, meta(small.len() as u64, version), false)
                    .unwrap();
            }
            assert_eq!(store.index.journaled().unwrap().len(), 2);
            kept = store.segment_path(&store.get("b", "kept").unwrap().segments[0]);
            gone = store.segment_path(&store.get("b", "gone").unwrap().segments[0]);
        }
        // What a power loss may leave of unsynced files: an empty file, or no name at all.
        std::fs::write(&kept, b"").unwrap();
        std::fs::remove_file(&gone).unwrap();
        let store = Store::open(&dir.join("index.redb"), &mps).unwrap();
        for key in ["kept", "gone"] {
            let rec = store.get("b", key).unwrap();
            assert_eq!(
                std::fs::read(store.segment_path(&rec.segments[0])).unwrap(),
                small
            );
        }
        assert!(
            store.index.journaled().unwrap().is_empty(),
            "replayed rows go"
        );
        drop(store);
        remove_test_dir(&dir).await;
    }

    #[tokio::test]
    async fn a_small_write_records_its_crc_only_when_its_bytes_match_the_etag() {
        let dir = test_dir();
        let store = Store::open(&dir.join("index.redb"), &[dir.join("mp0")]).unwrap();
        let body = b"checked once, at publication";
        let mut m = meta(body.len() as u64, 1);
        m.etag = {
            use md5::Digest;
            hex::encode(md5::Md5::digest(body))
        };
        let t = staged(&store, body).await;
        store
            .publish_copy("b", "good", t, m.clone(), false)
            .unwrap();
        assert_eq!(store.get("b", "good").unwrap().crc32c, Some(crc32c(body)));
        let t = staged(&store, b"checked once, at publicatioN").await;
        store.publish_copy("b", "bad", t, m, false).unwrap();
        assert_eq!(
            store.get("b", "bad").unwrap().crc32c,
            None,
            "reads keep checking the ETag"
        );
        drop(store);
        remove_test_dir(&dir).await;
    }

    #[tokio::test]
    async fn journaled_files_are_fsynced_in_the_background_and_large_ones_never_journaled() {
        let dir = test_dir();
        let mps = vec![dir.join("mp0")];
        let store = Store::open(&dir.join("index.redb"), &mps).unwrap();
        let large = vec![7u8; layout::JOURNAL_MAX as usize + 1];
        let t = staged(&store, &large).await;
        store
            .publish_copy("b", "large", t, meta(large.len() as u64, 1), false)
            .unwrap();
        assert!(
            store.index.journaled().unwrap().is_empty(),
            "large files are fsynced first"
        );
        for i in 0..10u64 {
            let t = staged(&store, b"small").await;
            store
                .publish_copy("b", &format!("s{i}"), t, meta(5, 1), false)
                .unwrap();
        }
        for _ in 0..250 {
            if store.index.journaled().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(
            store.index.journaled().unwrap().is_empty(),
            "the settler synced them all"
        );
        assert_eq!(store.usage().unwrap().objects_per_mountpath, vec![11]);
        drop(store);
        remove_test_dir(&dir).await;
    }

    #[tokio::test]
    async fn ready_files_carry_writes_and_a_crash_leaves_none_behind() {
        let dir = test_dir();
        let mps = vec![dir.join("mp0")];
        let files = |dir: &Path| -> usize { walk_files(&dir.join("mp0").join("obj")) };
        let published;
        {
            let store = Store::open(&dir.join("index.redb"), &mps).unwrap();
            // The first write makes a batch of ready files in the background.
            let first = staged(&store, b"first").await;
            drop(first);
            for _ in 0..200 {
                if files(&dir) >= layout_ready_batch() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            assert!(
                files(&dir) >= layout_ready_batch(),
                "a batch of ready files was made"
            );
            // A write takes a ready file: published, it is an object like any other.
            let t = staged(&store, b"durable").await;
            published = t.path().to_path_buf();
            store.publish_copy("b", "k", t, meta(7, 5), false).unwrap();
            // A crash with a staged ready file and the rest of the batch unused.
            let crashed = staged(&store, b"lost").await;
            std::mem::forget(crashed);
        }
        let store = Store::open(&dir.join("index.redb"), &mps).unwrap();
        assert!(published.exists());
        assert_eq!(
            files(&dir),
            1,
            "recovery keeps the published file and removes every other"
        );
        let rec = store.get("b", "k").unwrap();
        assert_eq!(rec.meta.size, 7);
        remove_test_dir(&dir).await;
    }

    /// Remove a test's directory; a batch of ready files being made in the background may
    /// still add files for a moment.
    /// A fresh directory for one test's store.
    fn test_dir() -> PathBuf {
        std::env::temp_dir().join(format!("aisle-store-{}", uuid::Uuid::new_v4()))
    }

    async fn remove_test_dir(dir: &Path) {
        for _ in 0..100 {
            if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("cannot remove {}", dir.display());
    }

    fn walk_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .map(|e| {
                        if e.path().is_dir() {
                            walk_files(&e.path())
                        } else {
                            1
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }

    fn layout_ready_batch() -> usize {
        layout::READY_BATCH
    }

    async fn staged(store: &Store, bytes: &[u8]) -> TempFile {
        let mut t = store.create_temp(0).await.unwrap();
        t.write(bytes.to_vec()).await.unwrap();
        t.finish().await.unwrap();
        t
    }

    fn meta(size: u64, version: u64) -> ObjectMeta {
        ObjectMeta {
            version_id: None,
            delete_marker: false,
            size,
            etag: String::new(),
            mtime_ms: 0,
            attrs: Default::default(),
            checksums: Default::default(),
            parts: Vec::new(),
            version,
            remote: None,
            upload_id: None,
        }
    }

    #[tokio::test]
    async fn copies_are_ordered_by_version_and_tombstones_win_over_older_copies() {
        let dir = test_dir();
        let store = Store::open(&dir.join("index.redb"), &[dir.join("mp0")]).unwrap();
        let have = |k: &str| store.have("b", k).unwrap();
        assert_eq!(have("k"), Have::default(), "nothing held is version 0");

        // An object from before versions (0 on disk) is held as 1: not nothing.
        let t = staged(&store, b"old").await;
        store
            .publish_copy("b", "legacy", t, meta(3, 0), false)
            .unwrap();
        assert_eq!(have("legacy").version, 1);

        // A newer copy replaces an older one, never the other way round.
        let t = staged(&store, b"v5").await;
        store.publish_copy("b", "k", t, meta(2, 5), false).unwrap();
        let t = staged(&store, b"v4").await;
        assert!(matches!(
            store.publish_copy("b", "k", t, meta(2, 4), false),
            Err(StoreError::Stale(h)) if h.version == 5
        ));
        // A deletion older than the copy leaves it; a newer one leaves a tombstone that an
        // older copy cannot overwrite.
        store.delete("b", "k", 3, true).unwrap();
        assert_eq!(have("k").version, 5);
        store.delete("b", "k", 7, true).unwrap();
        assert_eq!(
            have("k"),
            Have {
                version: 7,
                deleted: true
            }
        );
        let t = staged(&store, b"v6").await;
        assert!(matches!(
            store.publish_copy("b", "k", t, meta(2, 6), true),
            Err(StoreError::Stale(_))
        ));
        // A repair replaces the same version, never a newer one.
        let t = staged(&store, b"v5").await;
        store.publish_copy("b", "k5", t, meta(2, 5), false).unwrap();
        let t = staged(&store, b"v5").await;
        store.publish_copy("b", "k5", t, meta(2, 5), true).unwrap();
        let t = staged(&store, b"v4").await;
        assert!(store.publish_copy("b", "k5", t, meta(2, 4), true).is_err());
        let t = staged(&store, b"v5").await;
        assert!(store.publish_copy("b", "k5", t, meta(2, 5), false).is_err());
        // Removal only of exactly the version confirmed.
        assert!(
            !store
                .remove_if(
                    "b",
                    "legacy",
                    Have {
                        version: 2,
                        deleted: false
                    }
                )
                .unwrap()
        );
        assert!(
            store
                .remove_if(
                    "b",
                    "legacy",
                    Have {
                        version: 1,
                        deleted: false
                    }
                )
                .unwrap()
        );
        assert_eq!(have("legacy"), Have::default());
        remove_test_dir(&dir).await;
    }

    fn versioned(size: u64, stamp: u64, id: bool) -> ObjectMeta {
        let mut m = meta(size, stamp);
        m.version_id = id.then(|| aisle_cluster::versioning::version_id(stamp));
        m
    }

    fn listed(
        store: &Store,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> Vec<(String, Option<String>, bool, bool)> {
        let q = ListQuery {
            bucket: "b".into(),
            limit,
            versions: true,
            after: after.map(|a| a.0.to_string()),
            after_version: after.map(|a| a.1.to_string()),
            ..Default::default()
        };
        store
            .list(&q)
            .unwrap()
            .items
            .into_iter()
            .map(|i| match i {
                aisle_cluster::listing::ListItem::Object(o) => {
                    let v = o.version.unwrap();
                    (o.key, v.id, v.latest, v.delete_marker)
                }
                aisle_cluster::listing::ListItem::Prefix(p) => (p, None, false, false),
            })
            .collect()
    }

    #[tokio::test]
    async fn versions_are_kept_listed_newest_first_and_survive_recovery() {
        use aisle_cluster::versioning::{VersionRef, Versioning, version_id};
        let dir = test_dir();
        let mps = vec![dir.join("mp0")];
        {
            let store = Store::open(&dir.join("index.redb"), &mps).unwrap();
            // A null version, then two with ids: the null one is kept as noncurrent.
            for (stamp, id) in [(10, false), (20, true), (30, true)] {
                let t = staged(&store, b"x").await;
                store
                    .publish_copy("b", "k", t, versioned(1, stamp, id), false)
                    .unwrap();
            }
            let v = |s| Some(version_id(s));
            assert_eq!(
                listed(&store, None, 10),
                [
                    ("k".into(), v(30), true, false),
                    ("k".into(), v(20), false, false),
                    ("k".into(), None, false, false)
                ]
            );
            // Resumed after a version: the rest of the key.
            assert_eq!(listed(&store, Some(("k", &version_id(30))), 10).len(), 2);
            assert_eq!(listed(&store, Some(("k", "null")), 10).len(), 0);
            // A marker makes the key read as deleted; each version still reads.
            store
                .add_delete_marker("b", "k", 40, Versioning::Enabled)
                .unwrap();
            assert!(matches!(store.get("b", "k"), Err(StoreError::NoSuchKey)));
            assert!(store.have("b", "k").unwrap().deleted);
            assert_eq!(store.latest_marker("b", "k").unwrap().unwrap().version, 40);
            assert_eq!(
                store
                    .get_version("b", "k", &VersionRef::Null)
                    .unwrap()
                    .meta
                    .version,
                10
            );
            // Removing the marker makes the newest version current again.
            let gone = store
                .delete_version("b", "k", &VersionRef::Stamp(40))
                .unwrap();
            assert!(gone.unwrap().delete_marker);
            assert_eq!(store.get("b", "k").unwrap().meta.version, 30);
            assert!(!store.have("b", "k").unwrap().deleted);
        }
        // Recovery keeps the files of noncurrent versions.
        let store = Store::open(&dir.join("index.redb"), &mps).unwrap();
        for which in [
            VersionRef::Null,
            VersionRef::Stamp(20),
            VersionRef::Stamp(30),
        ] {
            let rec = store.get_version("b", "k", &which).unwrap();
            assert!(store.segment_path(&rec.segments[0]).exists());
        }
        // A null write replaces the null version and keeps the others.
        let t = staged(&store, b"y").await;
        let old_null = store.get_version("b", "k", &VersionRef::Null).unwrap();
        store
            .publish_copy("b", "k", t, versioned(1, 60, false), false)
            .unwrap();
        let replaced = store.segment_path(&old_null.segments[0]);
        for _ in 0..250 {
            if !replaced.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!replaced.exists(), "the settler removed the replaced file");
        assert_eq!(listed(&store, None, 10).len(), 3);
        remove_test_dir(&dir).await;
    }
}
